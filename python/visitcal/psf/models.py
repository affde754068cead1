"""PSF models: one interface for analytic, fixed-image and fitted PSFs, modelled on afw's
``lsst.afw.detection.Psf``.

Every PSF answers, at a parent-frame pixel position ``(x, y)`` (pixel centres at integers, as in afw):

``compute_image(x, y)``
    a unit-sum (size, size) float64 array indexed (y, x), the light centred at (x, y), on the stamp
    `compute_image_bbox` whose middle pixel holds (x, y) (afw ``computeImage``);
``compute_kernel_image(x, y)``
    the same PSF centred on the stamp's middle pixel (afw ``computeKernelImage``);
``compute_shape(x, y)``
    adaptive second moments `Moments` ``(xx, yy, xy)`` in pixel^2;
``compute_aperture_flux(radius, x, y)``
    the fraction of the light within ``radius`` pixels;
``average_position``
    a representative ``(x, y)``, where summaries (detection's smoothing sigma, say) are evaluated;

and round-trips losslessly through FITS (the ``PSF`` HDU of an exposure, `visitcal.core.persistence`).

The C++ measurement code reaches every model through `Psf.core`: models implemented in C++
(`GaussianPsf`, `FixedImagePsf`, the fitted models) hand over their C++ object; a model written in
Python (the simulator's GalSim ``TruePsf``) is wrapped so that C++ calls come back to its methods,
holding the GIL while they run.
"""

from __future__ import annotations

import abc
import math
from typing import NamedTuple

import numpy as np
from astropy.table import Table

from .. import _core
from ..core.geom import Box2I
from ..core.persistence import persistable

__all__ = ["FixedImagePsf", "GaussianPsf", "Moments", "Psf"]


class Moments(NamedTuple):
    """Second moments in pixel^2 (afw's Quadrupole): ``xx = <dx^2>``, ``yy = <dy^2>``, ``xy = <dx dy>``."""

    xx: float
    yy: float
    xy: float

    @property
    def determinant_radius(self) -> float:
        """``(xx yy - xy^2)^(1/4)``, px: the sigma of a round Gaussian."""
        det = self.xx * self.yy - self.xy * self.xy
        return math.sqrt(math.sqrt(det)) if det > 0 else math.nan

    @property
    def trace_radius(self) -> float:
        """``sqrt((xx + yy) / 2)``, px."""
        return math.sqrt(0.5 * (self.xx + self.yy))


# Largest |x|, |y| of a PSF position: the stamp's int32 box (pixel +- half a stamp, stamps < 2**20 px)
# must fit, and the C++ converts the position to an int pixel index.
_MAX_POSITION = float(2**31 - 2**20)


def _position(x, y) -> tuple[float, float]:
    x, y = float(x), float(y)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"PSF position must be finite, got ({x}, {y})")
    if abs(x) > _MAX_POSITION or abs(y) > _MAX_POSITION:
        raise ValueError(f"PSF position ({x}, {y}) is beyond +-{_MAX_POSITION:.0f} px (its stamp's int32 box)")
    return x, y


class Psf(abc.ABC):
    """The PSF interface. Subclasses implement at least `compute_kernel_image`, `compute_image`
    (with `compute_image_bbox`) and `average_position`; `compute_shape` and
    `compute_aperture_flux` default to measuring the kernel image (adaptive moments; an exact
    pixel/circle-overlap aperture sum) in C++.

    Implementations must be safe to call from several threads at once.
    """

    @abc.abstractmethod
    def compute_image(self, x: float, y: float) -> np.ndarray:
        """Unit-sum PSF image of position (x, y) centred at (x, y), on `compute_image_bbox`."""

    @abc.abstractmethod
    def compute_kernel_image(self, x: float, y: float) -> np.ndarray:
        """Unit-sum PSF image of position (x, y) centred on the stamp's middle pixel."""

    @property
    @abc.abstractmethod
    def average_position(self) -> tuple[float, float]:
        """A representative position (x, y), px."""

    def compute_image_bbox(self, x: float, y: float) -> Box2I:
        """The stamp of `compute_image`: the kernel's size, centred on the pixel holding (x, y)."""
        n = self.compute_kernel_image(x, y).shape[0]
        ix, iy = math.floor(float(x) + 0.5), math.floor(float(y) + 0.5)
        h = n // 2
        return Box2I(ix - h, iy - h, ix - h + n - 1, iy - h + n - 1)

    def compute_shape(self, x: float, y: float) -> Moments:
        """Adaptive second moments (pixel^2) of the PSF at (x, y)."""
        return Moments(*_core.Psf.compute_shape(self.core, *_position(x, y)))

    def compute_aperture_flux(self, radius: float, x: float, y: float) -> float:
        """Fraction of the PSF's light within ``radius`` px of its centre at (x, y)."""
        if not radius > 0:
            raise ValueError(f"radius must be positive, got {radius}")
        return float(_core.Psf.compute_aperture_flux(self.core, float(radius), *_position(x, y)))

    @property
    def core(self) -> _core.Psf:
        """The C++ object the measurement code calls (an adapter for models written in Python)."""
        core = self.__dict__.get("_python_core")
        if core is None:
            # The C++ default (measuring the kernel image) serves a model that does not override
            # compute_shape; the adapter forwards it only when the model has its own.
            own_shape = type(self).compute_shape is not Psf.compute_shape
            core = (_PythonPsfAdapterWithShape if own_shape else _PythonPsfAdapter)(self)
            self.__dict__["_python_core"] = core
        return core

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_python_core", None)
        return state


class _PythonPsfAdapter(_core.Psf):
    """Forwards the C++ interface to a Python `Psf` (the C++ side takes the GIL to call it)."""

    def __init__(self, psf: Psf):
        super().__init__()
        self._psf = psf

    def compute_image(self, x, y):
        image = np.ascontiguousarray(self._psf.compute_image(x, y), dtype=np.float64)
        box = self._psf.compute_image_bbox(x, y)
        return image, box.min_x, box.min_y

    def compute_kernel_image(self, x, y):
        image = np.ascontiguousarray(self._psf.compute_kernel_image(x, y), dtype=np.float64)
        return image, -(image.shape[1] // 2), -(image.shape[0] // 2)

    def average_position(self):
        x, y = self._psf.average_position
        return float(x), float(y)


class _PythonPsfAdapterWithShape(_PythonPsfAdapter):
    def compute_shape(self, x, y):
        return tuple(float(v) for v in self._psf.compute_shape(x, y))


class _CorePsf(Psf):
    """A model implemented in C++: every method goes straight to the C++ object."""

    _core_obj: _core.Psf

    @property
    def core(self) -> _core.Psf:
        return self._core_obj

    def compute_image(self, x: float, y: float) -> np.ndarray:
        return self._core_obj.compute_image(*_position(x, y))[0]

    def compute_image_bbox(self, x: float, y: float) -> Box2I:
        image, x0, y0 = self._core_obj.compute_image(*_position(x, y))
        return Box2I(x0, y0, x0 + image.shape[1] - 1, y0 + image.shape[0] - 1)

    def compute_kernel_image(self, x: float, y: float) -> np.ndarray:
        return self._core_obj.compute_kernel_image(*_position(x, y))[0]

    @property
    def average_position(self) -> tuple[float, float]:
        return tuple(self._core_obj.average_position())

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        a, b = self.to_table(), other.to_table()
        return all(np.array_equal(a[c], b[c]) for c in a.colnames) and a.colnames == b.colnames

    __hash__ = None


def _check_average_position(average_position) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in average_position)
    except (TypeError, ValueError):
        raise ValueError(f"average_position must be a pair (x, y), got {average_position!r}") from None
    return _position(x, y)


@persistable("GaussianPsf", 1)
class GaussianPsf(_CorePsf):
    """A circular Gaussian PSF, the same everywhere (afw's ``GaussianPsf``).

    Parameters
    ----------
    sigma : float
        Standard deviation, px.
    size : int, optional
        Odd side of the stamps; default ``2 * ceil(5 sigma) + 1`` (light beyond 5 sigma: < 4e-6).
    average_position : (float, float)
        The position reported by `average_position`, px.

    Notes
    -----
    Images sample the Gaussian at pixel centres, normalised to unit sum over the stamp, so an image
    of flux F is ``F * compute_image(x, y)``. `compute_shape` is the analytic ``(sigma^2, sigma^2, 0)``.
    """

    def __init__(self, sigma: float, *, size: int | None = None, average_position=(0.0, 0.0)):
        sigma = float(sigma)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be positive and finite, got {sigma}")
        size = 2 * math.ceil(5.0 * sigma) + 1 if size is None else int(size)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"size must be odd and positive, got {size}")
        self._core_obj = _core.GaussianPsf(size, sigma, _check_average_position(average_position))

    @property
    def sigma(self) -> float:
        """Standard deviation of the Gaussian, px."""
        return self._core_obj.sigma

    @property
    def size(self) -> int:
        """Side of the (odd, square) image stamps, px."""
        return self._core_obj.size

    def compute_shape(self, x: float, y: float) -> Moments:
        s2 = self.sigma**2
        return Moments(s2, s2, 0.0)

    def to_table(self) -> Table:
        """The model as a one-row table: ``sigma`` (px, float64), ``size`` (int32), ``average_x`` and
        ``average_y`` (px). The round trip through `from_table` is lossless."""
        x, y = self.average_position
        return Table({"sigma": [self.sigma], "size": np.array([self.size], dtype=np.int32),
                      "average_x": [x], "average_y": [y]})

    @classmethod
    def from_table(cls, table: Table) -> GaussianPsf:
        """Rebuild the model from the first row of a `to_table` table.

        Raises
        ------
        KeyError
            A column is missing.
        ValueError
            ``sigma`` is not positive and finite, or ``size`` is not odd and positive.
        """
        row = table[0]
        return cls(float(row["sigma"]), size=int(row["size"]),
                   average_position=(float(row["average_x"]), float(row["average_y"])))

    def __reduce__(self):
        return (_gaussian_psf, (self.sigma, self.size, self.average_position))

    def __repr__(self) -> str:
        return f"GaussianPsf(sigma={self.sigma!r}, size={self.size}, average_position={self.average_position})"


def _gaussian_psf(sigma, size, average_position):
    return GaussianPsf(sigma, size=size, average_position=average_position)


@persistable("FixedImagePsf", 1)
class FixedImagePsf(_CorePsf):
    """One kernel image, the same at every position (meas_algorithms' ``KernelPsf(FixedKernel)``).

    Parameters
    ----------
    kernel : (n, n) array
        The PSF centred on its middle pixel; n odd. Normalised to unit sum on construction.
    average_position : (float, float)
        The position reported by `average_position`, px.

    Notes
    -----
    `compute_image` moves the kernel to the sub-pixel position with a Lanczos-5 interpolant and
    renormalises it (afw's ``offsetImage``). The windowed sinc is not exact: for a Gaussian of
    sigma 2 px shifted by 0.3 px the light centroid lands 0.01 px short, and pixels differ by up to
    2.2e-3 of the peak (Lanczos-11: 0.005 px). `compute_shape` measures the kernel's adaptive moments.
    """

    def __init__(self, kernel, *, average_position=(0.0, 0.0)):
        k = np.asarray(kernel, dtype=np.float64)
        if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
            raise ValueError(f"kernel must be a square 2-D array of odd size, got shape {k.shape}")
        if not np.all(np.isfinite(k)):
            raise ValueError("kernel has non-finite pixels")
        if not k.sum() > 0:
            raise ValueError(f"kernel must have a positive sum, got {k.sum()}")
        # The kernel is kept as given, so persistence and pickling reproduce the same bytes (a
        # second normalisation of an already normalised kernel would move the last bits).
        self._kernel = k.copy()
        self._kernel.flags.writeable = False
        self._core_obj = _core.FixedImagePsf(np.ascontiguousarray(k), _check_average_position(average_position))

    @property
    def kernel(self) -> np.ndarray:
        """The kernel image as given (read-only); the PSF's images are it normalised to unit sum."""
        return self._kernel

    def to_table(self) -> Table:
        """The model as a one-row table: ``kernel`` (the ``(n, n)`` float64 kernel as given, before
        normalisation), ``average_x`` and ``average_y`` (px). The round trip through `from_table` is
        lossless (the same kernel bytes)."""
        x, y = self.average_position
        return Table({"kernel": self.kernel[None], "average_x": [x], "average_y": [y]})

    @classmethod
    def from_table(cls, table: Table) -> FixedImagePsf:
        """Rebuild the model from the first row of a `to_table` table.

        Raises
        ------
        KeyError
            A column is missing.
        ValueError
            The kernel is not square with an odd side, has non-finite pixels or a non-positive sum.
        """
        row = table[0]
        return cls(np.asarray(row["kernel"], dtype=np.float64),
                   average_position=(float(row["average_x"]), float(row["average_y"])))

    def __reduce__(self):
        return (_fixed_image_psf, (self.kernel, self.average_position))

    def __repr__(self) -> str:
        n = self._core_obj.size
        return f"FixedImagePsf({n}x{n} kernel, average_position={self.average_position})"


def _fixed_image_psf(kernel, average_position):
    return FixedImagePsf(kernel, average_position=average_position)
