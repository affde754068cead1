"""base_SdssCentroid: the centroid of Lupton's SDSS photo pipeline, as LSST meas_base's plugin of
that name; a C++ kernel with a batch API.

Per source, starting at its footprint's peak pixel: a local stamp is smoothed with a Gaussian of the
PSF's sigma (the matched filter, so the smoothed image peaks at the maximum-likelihood position for a
Gaussian PSF), and the maximum of the smoothed image is located from its 3 x 3 centre (1-D Gaussian
interpolation through each row and column, then the crossing of the two ridges). A wide object is
re-measured on 2x, 4x ... (up to ``binmax``) binned stamps; near the image edge a 5 x 5 kernel of
sigma 0.5 is used instead (``flag_near_edge``). Errors follow the SDSS first-order formula on the
variance plane. See ``cpp/include/visitcal/measurement/sdss_centroid.hpp`` for the details.

Conventions
-----------
* Positions are parent-frame pixels with pixel centres at integers (``xy0`` added); arrays are (y, x).
* On failure the flags are set, ``_x``/``_y`` hold the peak position (as LSST) and the errors are NaN;
  positions are NaN only when the peak itself is not finite. Nothing raises for bad data.
* Accuracy: a noise-free sampled Gaussian (sigma >= 1.5 px) is recovered to ~1e-7 px (float32 image
  precision); with noise the scatter is within ~10% of the Cramer-Rao bound (tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ... import _core
from ...core.image import Exposure, MaskedImage

__all__ = ["PLUGIN_NAME", "SdssCentroidConfig", "columns", "flag_names", "sdss_centroid"]

PLUGIN_NAME = "base_SdssCentroid"


class SdssCentroidConfig(BaseModel):
    """Configuration; mirrors the C++ ``SdssCentroidControl`` (LSST SdssCentroidConfig in snake_case)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    binmax: int = Field(16, ge=1, le=256, description="Maximum binning factor along an axis for wide objects. At "
                                                      "most 256.")
    peak_min: float = Field(-1.0, description="A smoothed peak below this forces one more binning "
                                              "(image units; <= 0 disables).")
    wfac: float = Field(1.5, gt=0, description="An axis is binned again while the smoothed width^2 exceeds "
                                               "wfac^2 (1 + sigma^2) (binned px).")
    do_footprint_check: bool = Field(True, description="Reset to the peak (flag_resetToPeak) when the "
                                                       "centroid leaves the source's footprint.")
    max_dist_to_peak: float = Field(1.0, le=1000, description="Reset to the peak when the centroid is farther than "
                                                     "this from it (px); negative disables. At most 1000 px.")

    def to_core(self) -> _core.SdssCentroidControl:
        """The C++ ``SdssCentroidControl`` holding every field of this config (same names)."""
        ctrl = _core.SdssCentroidControl()
        for name in type(self).model_fields:
            setattr(ctrl, name, getattr(self, name))
        return ctrl


def flag_names() -> list[str]:
    """Flag suffixes in bit order (bit 0, ``flag``, is the general failure flag)."""
    return list(_core.sdss_centroid_flag_names())


def columns() -> list[str]:
    """The output column names, in order."""
    return [f"{PLUGIN_NAME}_{c}" for c in ("x", "y", "xErr", "yErr")] + [f"{PLUGIN_NAME}_{f}" for f in flag_names()]


def _planes(image) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    mi = image.masked_image if isinstance(image, Exposure) else image
    if not isinstance(mi, MaskedImage):
        raise TypeError(f"image must be an Exposure or MaskedImage, got {type(image).__name__}")
    return mi.image, mi.mask.array, mi.variance, mi.xy0


def _vector(values, n: int | None, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 0 and n is not None:
        return np.full(n, float(a))
    a = np.ascontiguousarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} entries, expected {n}")
    return a


def sdss_centroid(image: Exposure | MaskedImage, peak_x, peak_y, psf_sigma, *,
                  footprints: Sequence | None = None,
                  config: SdssCentroidConfig | None = None) -> dict[str, np.ndarray]:
    """SDSS centroids of many sources.

    Parameters
    ----------
    image : Exposure or MaskedImage
        Background-subtracted pixels with their mask and variance (image units).
    peak_x, peak_y : array_like, shape (n,)
        Each source's peak position (parent frame, px); the peak pixel is ``floor(v + 0.5)``.
    psf_sigma : float or array_like, shape (n,)
        Smoothing sigma (px, > 0): the PSF's determinant radius at each source. A row whose value is
        not finite and positive fails alone (``flag``; the position reported is its peak, errors NaN),
        it does not reject the batch.
    footprints : sequence of Footprint, optional
        Each source's footprint (``.spans`` parent-frame ``[y, x0, x1]``), for the footprint check
        (``config.do_footprint_check``); none: no check.
    config : SdssCentroidConfig, optional

    Returns
    -------
    dict of str to numpy.ndarray
        ``base_SdssCentroid_x``, ``_y``, ``_xErr``, ``_yErr`` (float64, px) and one bool array per flag.
        Thread-safe; the GIL is released during the loop.
    """
    config = config or SdssCentroidConfig()
    img, mask, var, (x0, y0) = _planes(image)
    px = _vector(peak_x, None, "peak_x")
    n = px.shape[0]
    py = _vector(peak_y, n, "peak_y")
    sig = _vector(psf_sigma, n, "psf_sigma")
    spans = offsets = None
    if footprints is not None:
        if len(footprints) != n:
            raise ValueError(f"footprints has {len(footprints)} entries, expected {n}")
        parts = [np.asarray(fp.spans, dtype=np.int32).reshape(-1, 3) for fp in footprints]
        offsets = np.zeros(n + 1, np.int64)
        offsets[1:] = np.cumsum([p.shape[0] for p in parts])
        spans = np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros((0, 3), np.int32))
    r = _core.sdss_centroid_batch(img, mask, var, int(x0), int(y0), px, py, sig, spans, offsets, config.to_core())
    out = {f"{PLUGIN_NAME}_x": r["x"], f"{PLUGIN_NAME}_y": r["y"],
           f"{PLUGIN_NAME}_xErr": r["x_err"], f"{PLUGIN_NAME}_yErr": r["y_err"]}
    for bit, name in enumerate(flag_names()):
        out[f"{PLUGIN_NAME}_{name}"] = (r["flags"] & np.uint32(1 << bit)) != 0
    return out
