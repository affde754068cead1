"""visitcal: single-visit PSF, aperture-correction and calibration processing of survey images.

An independent implementation of the Rubin Observatory (LSST) single-visit stages with a C++17/Eigen
core. Conventions used throughout: pixel centres sit at integer coordinates; images are numpy arrays
indexed (y, x) with an ``xy0`` origin in the parent frame; fluxes are in instrumental counts (ADU or
electrons) until a `PhotoCalib` turns them into nJy.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("visitcal")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]
