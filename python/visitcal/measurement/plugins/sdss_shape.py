"""base_SdssShape: adaptive elliptical Gaussian moments (LSST meas_base's plugin of that name), a
C++ kernel with a batch API.

The weight ``exp(-1/2 r^T W^-1 r)`` starts at ``W = (1.5, 0, 1.5)`` px^2 at the given centre; each
iteration re-centres and sets ``W <- (M^-1 - W^-1)^-1`` from the weighted moments ``M``, until the
ellipticity changes by < ``tol1`` and the size by < ``tol2``. At convergence ``W`` is the object's
covariance, exactly so for a Gaussian object (Bernstein & Jarvis 2002). See
``cpp/include/visitcal/measurement/sdss_shape.hpp`` for the details and failure handling.

Conventions
-----------
* Parent-frame pixels, pixel centres at integers; moments in px^2 as ``(xx, yy, xy)``
  (``xx = <dx^2>``), fluxes in image units.
* ``_instFlux`` is the flux of the best-fit elliptical Gaussian (twice the weighted sum at
  convergence); errors are the inverse Fisher matrix of ``(flux, xx, yy, xy)`` in uniform noise.
* Failures set flags and never raise: ``flag_unweighted`` reports unweighted moments about the input
  centre, ``flag_unweightedBad`` NaN, ``flag_maxIter`` the last estimate.
* The PSF columns ``_psf_xx/_yy/_xy`` are filled by the measurement driver with `psf_moments` of the
  PSF image (``flag_psf`` when that fails); `sdss_shape` leaves ``flag_psf`` False.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ... import _core
from ...core.image import Exposure, MaskedImage
from . import _phot_common as _c
from .sdss_centroid import _planes, _vector

__all__ = ["PLUGIN_NAME", "SdssShapeConfig", "columns", "flag_names", "psf_moments", "sdss_shape"]

PLUGIN_NAME = "base_SdssShape"

_VALUES = (("x", "x"), ("y", "y"), ("xx", "xx"), ("yy", "yy"), ("xy", "xy"), ("xxErr", "xx_err"),
           ("yyErr", "yy_err"), ("xyErr", "xy_err"), ("instFlux", "inst_flux"), ("instFluxErr", "inst_flux_err"),
           ("instFlux_xx_Cov", "inst_flux_xx_cov"), ("instFlux_yy_Cov", "inst_flux_yy_cov"),
           ("instFlux_xy_Cov", "inst_flux_xy_cov"))


class SdssShapeConfig(BaseModel):
    """Configuration; mirrors the C++ ``SdssShapeControl`` (LSST SdssShapeConfig in snake_case)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_iter: int = Field(100, ge=1, le=1000, description="Maximum number of adaptive iterations. At most 1000.")
    tol1: float = Field(1e-5, gt=0, description="Convergence tolerance on the ellipticity e1, e2.")
    tol2: float = Field(1e-4, gt=0, description="Convergence tolerance on the size (fractional change of "
                                                "the trace xx + yy).")
    max_shift: float = Field(0.0, le=1000, description="Largest centre shift from the input (px) before flag_shift; "
                                              "<= 0 means 2 px. At most 1000 px.")
    do_measure_psf: bool = Field(True, description="Also measure the PSF's moments (_psf_xx ...; done by "
                                                   "the measurement driver).")

    def to_core(self) -> _core.SdssShapeControl:
        """The C++ ``SdssShapeControl`` holding every field of this config (same names)."""
        ctrl = _core.SdssShapeControl()
        for name in type(self).model_fields:
            setattr(ctrl, name, getattr(self, name))
        return ctrl


def flag_names() -> list[str]:
    """Flag suffixes in bit order (bit 0, ``flag``, is the general failure flag)."""
    return list(_core.sdss_shape_flag_names())


def columns() -> list[str]:
    """The output column names of `sdss_shape`, in order (the driver adds ``_psf_xx/_yy/_xy``)."""
    return [f"{PLUGIN_NAME}_{c}" for c, _ in _VALUES] + [f"{PLUGIN_NAME}_{f}" for f in flag_names()]


def sdss_shape(image: Exposure | MaskedImage, x, y, *, config: SdssShapeConfig | None = None) -> dict[str, np.ndarray]:
    """Adaptive moments of many sources.

    Parameters
    ----------
    image : Exposure or MaskedImage
        Background-subtracted pixels with mask and variance. Pixels that are non-finite or NO_DATA are
        left out.
    x, y : array_like, shape (n,)
        Starting centres (parent frame, px), e.g. ``slot_Centroid``.
    config : SdssShapeConfig, optional

    Returns
    -------
    dict of str to numpy.ndarray
        ``base_SdssShape_x, _y, _xx, _yy, _xy, _xxErr, _yyErr, _xyErr, _instFlux, _instFluxErr,
        _instFlux_xx_Cov, _instFlux_yy_Cov, _instFlux_xy_Cov`` (float64) and one bool array per flag.
    """
    config = config or SdssShapeConfig()
    img, mask, var, (x0, y0) = _planes(image)
    xs = _vector(x, None, "x")
    ys = _vector(y, xs.shape[0], "y")
    r = _core.sdss_shape_batch(img, mask, var, int(x0), int(y0), xs, ys, config.to_core())
    out = {f"{PLUGIN_NAME}_{col}": r[key] for col, key in _VALUES}
    for bit, name in enumerate(flag_names()):
        out[f"{PLUGIN_NAME}_{name}"] = (r["flags"] & np.uint32(1 << bit)) != 0
    return out


def psf_moments(image, *, xy0: tuple[int, int] | None = None, x: float | None = None, y: float | None = None,
                config: SdssShapeConfig | None = None) -> dict[str, float | int | bool]:
    """Adaptive moments of a PSF image (no variance, so no errors).

    Parameters
    ----------
    image : array_like, 2-D
        The PSF image (y, x), e.g. a kernel image; converted to float64.
    xy0 : (int, int), optional
        Parent position of ``image[0, 0]``; default ``(-(nx // 2), -(ny // 2))``, the kernel-image
        convention (centre at 0).
    x, y : float, optional
        Starting centre in that frame; default the middle pixel.
    config : SdssShapeConfig, optional

    Returns
    -------
    dict
        ``xx, yy, xy`` (px^2), ``x, y``, ``inst_flux``, ``n_iter``, ``flags`` (int) and ``flag`` (bool).
    """
    config = config or SdssShapeConfig()
    a = np.ascontiguousarray(image, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {a.shape}")
    ny, nx = a.shape
    if xy0 is None:
        xy0 = (-(nx // 2), -(ny // 2))
    x0, y0 = _c.check_xy0(xy0, a.shape)
    xc = x0 + nx // 2 if x is None else float(x)
    yc = y0 + ny // 2 if y is None else float(y)
    r = _core.adaptive_moments(a, x0, y0, float(xc), float(yc), config.to_core())
    out = {k: r[k] for k in ("xx", "yy", "xy", "x", "y", "inst_flux", "n_iter", "flags")}
    out["flag"] = bool(r["flags"] & 1)
    return out
