"""ext_windowedCentroid: SExtractor's windowed centroid (XWIN_IMAGE / YWIN_IMAGE, ``sep.winpos``).

Not an LSST plugin (meas_base has no windowed centroid); our own, for comparison with SExtractor catalogues.
Iteration (SExtractor's recipe, from its manual and sep's docs): with the window
``w = exp(-r^2 / (2 sigma^2))`` over the pixels within ``4 sigma`` (boundary pixels weighted by an
11 x 11 sub-pixel overlap), the position moves by ``2 sum(w I (p - c)) / sum(w I)``; it stops when
that weighted offset (before the factor 2) is below 1e-4 px, or after 16 iterations. The window
sigma is SExtractor's ``2 FLUX_RADIUS(0.5) / 2.35``, at least ``2 * 0.5 / 2.35`` px.

Conventions
-----------
* Parent-frame pixels, pixel centres at integers (SExtractor's catalogues are 1-based: subtract 1).
* Pixels in ``config.bad_mask_planes`` (and NO_DATA, non-finite, off-image) are left out and set
  ``flag_edge``; ``flag`` (failure) is set when the weighted flux is not positive (``flag_noFlux``)
  or the row's input is bad (``flag_badInput``); ``flag_maxIter`` alone is not a failure (SExtractor
  reports it).
* Bad inputs are per row, never an error: a non-finite start, a start whose nearest pixel is off the
  image, a non-finite, zero or negative ``sigma`` / ``flux_radius`` set that row's ``flag`` and
  ``flag_badInput`` with NaN ``x``, ``y`` and ``niter`` 0; the other rows are measured exactly as they
  would be without it (each source is independent).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ... import _core
from ...core.image import Exposure, MaskedImage, _to_int32
from .sdss_centroid import _planes, _vector

__all__ = ["PLUGIN_NAME", "WindowedCentroidConfig", "columns", "flag_names", "sigma_from_flux_radius",
           "windowed_centroid"]

PLUGIN_NAME = "ext_windowedCentroid"


class WindowedCentroidConfig(BaseModel):
    """Configuration; mirrors the C++ ``WindowedCentroidControl`` (SExtractor's WINPOS_* constants)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_iter: int = Field(16, ge=1, le=1000, description="Maximum number of iterations (WINPOS_NITERMAX). At most "
                                                         "1000.")
    step_min: float = Field(1e-4, gt=0, description="Stop when the weighted offset is below this, px "
                                                    "(WINPOS_STEPMIN).")
    n_sigma: float = Field(4.0, gt=0, le=100, description="Window radius in units of sigma (WINPOS_NSIG). At most "
                                                          "100: it sizes the window.")
    oversample: int = Field(11, ge=1, le=101, description="Sub-pixel grid per axis for pixels on the window's "
                                                  "boundary (WINPOS_OVERSAMP). At most 101: a boundary pixel costs "
                                                  "its square.")
    min_sigma: float = Field(2.0 * 0.5 / 2.35, ge=0, description="Smallest window sigma, px (a half-light "
                                                                 "radius of 0.5 px, as SExtractor).")
    bad_mask_planes: tuple[str, ...] = Field(("BAD", "SAT", "NO_DATA"), description=(
        "Pixels with these mask planes are left out of the sums (and set flag_edge)."))

    @field_validator("bad_mask_planes", mode="before")
    @classmethod
    def _tuple(cls, v):
        return (v,) if isinstance(v, str) else tuple(v)

    def to_core(self, mask=None) -> _core.WindowedCentroidControl:
        """The C++ ``WindowedCentroidControl`` for this config.

        Parameters
        ----------
        mask : `Mask`, optional
            The image's mask. When given, ``bad_mask_bits`` is the OR of ``bad_mask_planes``' bits in it;
            otherwise it keeps the C++ default (BAD, SAT and NO_DATA at visitcal's standard bits).

        Returns
        -------
        control : `visitcal._core.WindowedCentroidControl`
            A new control struct (iteration limits, window size in sigmas, oversampling, minimum sigma).

        Raises
        ------
        UnknownMaskPlaneError
            When a plane in ``bad_mask_planes`` is not defined in ``mask``.
        """
        ctrl = _core.WindowedCentroidControl()
        for name in ("max_iter", "step_min", "n_sigma", "oversample", "min_sigma"):
            setattr(ctrl, name, getattr(self, name))
        if mask is not None:
            ctrl.bad_mask_bits = int(_to_int32(mask.get_plane_bitmask(*self.bad_mask_planes)))
        return ctrl


def flag_names() -> list[str]:
    """Flag suffixes in bit order (bit 0, ``flag``, is the general failure flag)."""
    return list(_core.windowed_centroid_flag_names())


def columns() -> list[str]:
    """The output column names, in order."""
    return [f"{PLUGIN_NAME}_x", f"{PLUGIN_NAME}_y"] + [f"{PLUGIN_NAME}_{f}" for f in flag_names()]


def sigma_from_flux_radius(flux_radius) -> np.ndarray:
    """SExtractor's window sigma ``2 * FLUX_RADIUS(0.5) / 2.35`` (px)."""
    return 2.0 * np.asarray(flux_radius, dtype=np.float64) / 2.35


def windowed_centroid(image: Exposure | MaskedImage, x, y, sigma=None, *, flux_radius=None,
                      config: WindowedCentroidConfig | None = None) -> dict[str, np.ndarray]:
    """Windowed centroids of many sources.

    Parameters
    ----------
    image : Exposure or MaskedImage
        Background-subtracted pixels (the variance is not used).
    x, y : array_like, shape (n,)
        Starting positions (parent frame, px), e.g. isophotal barycentres or peaks.
    sigma : float or array_like, shape (n,), optional
        Window sigma (px, > 0). Give this or ``flux_radius``. A row whose value is not finite and
        positive is flagged (``flag``, ``flag_badInput``), not an error.
    flux_radius : float or array_like, shape (n,), optional
        Half-light radius (px); ``sigma = 2 flux_radius / 2.35`` (SExtractor). Bad rows as for ``sigma``.
    config : WindowedCentroidConfig, optional

    Returns
    -------
    dict of str to numpy.ndarray
        ``ext_windowedCentroid_x``, ``_y`` (float64, px; NaN for a bad input), ``_niter`` (int32) and one
        bool array per flag.

    Raises
    ------
    ValueError
        When both or neither of ``sigma`` and ``flux_radius`` are given, or an argument is not 1-D / a
        scalar, or its length differs from ``x``'s (whole-array errors; per-row values never raise).

    Notes
    -----
    Thread-safe; the GIL is released during the loop over sources.
    """
    config = config or WindowedCentroidConfig()
    if (sigma is None) == (flux_radius is None):
        raise ValueError("give exactly one of sigma and flux_radius")
    img, mask, var, (x0, y0) = _planes(image)
    xs = _vector(x, None, "x")
    n = xs.shape[0]
    ys = _vector(y, n, "y")
    sig = _vector(sigma if sigma is not None else sigma_from_flux_radius(flux_radius), n,
                  "sigma" if sigma is not None else "flux_radius")
    mi = image.masked_image if isinstance(image, Exposure) else image
    r = _core.windowed_centroid_batch(img, mask, var, int(x0), int(y0), xs, ys, sig, config.to_core(mi.mask))
    out = {f"{PLUGIN_NAME}_x": r["x"], f"{PLUGIN_NAME}_y": r["y"], f"{PLUGIN_NAME}_niter": r["n_iter"]}
    for bit, name in enumerate(flag_names()):
        out[f"{PLUGIN_NAME}_{name}"] = (r["flags"] & np.uint32(1 << bit)) != 0
    return out
