"""base_LocalBackground: the background per pixel in an annulus around each source (LSST
meas_base's plugin of that name).

The annulus holds the pixels whose centres lie at a distance ``d`` from the centroid with
``annulus_inner * sigma < d <= annulus_outer * sigma`` (``sigma`` = the PSF's determinant radius at the
source), on the image, without ``bad_mask_planes`` bits or non-finite values. Statistics are afw's
MEANCLIP / STDEVCLIP: start at the median with half-width ``bg_rej * 0.7413 * IQR`` (numpy's linear
quantiles), then ``bg_iter`` passes each taking the mean and standard deviation (``ddof=1``) of the
values within ``|v - centre| <= half-width`` and re-centring (``centre = mean``,
``half-width = bg_rej * stdev``).

Columns ``base_LocalBackground_instFlux`` (the clipped mean, counts per pixel) and ``_instFluxErr``
(the clipped standard deviation); flags ``_flag``, ``_flag_noGoodPixels`` (no usable pixel),
``_flag_noPsf`` (``psf_sigma`` NaN or <= 0).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ... import _core
from . import _phot_common as _c

__all__ = ["PLUGIN_NAME", "LocalBackgroundConfig", "flag_names", "local_background", "schema"]

PLUGIN_NAME = "base_LocalBackground"


class LocalBackgroundConfig(BaseModel):
    """Configuration of `local_background` (mirrors the C++ ``LocalBackgroundControl``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    annulus_inner: float = Field(7.0, ge=0, le=1000, description="Inner radius of the annulus in units of the PSF "
                                 "sigma (at most 1000: the annulus's pixels are read per source).")
    annulus_outer: float = Field(15.0, gt=0, le=1000, description="Outer radius of the annulus in units of the PSF "
                                 "sigma (at most 1000: the annulus's pixels are read per source).")
    bad_mask_planes: tuple[str, ...] = Field(("BAD", "SAT", "NO_DATA"),
                                             description="Mask planes whose pixels are ignored.")
    bg_rej: float = Field(3.0, description="Clipping half-width in standard deviations.")
    bg_iter: int = Field(3, ge=0, le=100, description="Number of clipping passes (at most 100: each is a pass over "
                         "the annulus).")

    @model_validator(mode="after")
    def _check(self):
        if not (np.isfinite(self.annulus_inner) and self.annulus_inner >= 0):
            raise ValueError("annulus_inner must be finite and >= 0")
        if not (np.isfinite(self.annulus_outer) and self.annulus_outer > self.annulus_inner):
            raise ValueError("annulus_outer must be finite and > annulus_inner")
        if not self.bg_rej > 0:
            raise ValueError("bg_rej must be > 0")
        if self.bg_iter < 1:
            raise ValueError("bg_iter must be >= 1")
        return self

    def to_control(self, masked_image):
        """The C++ ``LocalBackgroundControl``: annulus radii (in PSF sigmas), clipping and the bad-pixel bits.

        Parameters
        ----------
        masked_image : `MaskedImage` or `Exposure`
            The image to be measured: plane names are resolved to bits in its own mask dictionary.

        Returns
        -------
        control : `visitcal._core.LocalBackgroundControl`
            A new control struct; the config is unchanged.

        Raises
        ------
        UnknownMaskPlaneError
            When a plane in ``bad_mask_planes`` is not defined in the image's mask.
        """
        c = _core.LocalBackgroundControl()
        c.annulus_inner, c.annulus_outer = self.annulus_inner, self.annulus_outer
        c.bad_mask = int(_c.plane_bits(masked_image, self.bad_mask_planes))
        c.bg_rej, c.bg_iter = self.bg_rej, self.bg_iter
        return c


def flag_names() -> list[str]:
    """Flag suffixes, bit i <-> entry i (the C++ registry ``kLocalBackgroundFlagNames``)."""
    return list(_core.local_background_flag_names())


def schema(config: LocalBackgroundConfig | None = None) -> list[str]:
    """The output column names, in order."""
    return [f"{PLUGIN_NAME}_instFlux", f"{PLUGIN_NAME}_instFluxErr"] + [f"{PLUGIN_NAME}_{n}" for n in flag_names()]


def local_background(masked_image, x, y, psf_sigma, config: LocalBackgroundConfig | None = None) -> dict[str, np.ndarray]:
    """Local background of many sources.

    Parameters
    ----------
    masked_image : MaskedImage or Exposure
    x, y : array_like, shape (n,)
        Parent-frame centroids, pixels (pixel centres at integers).
    psf_sigma : float or array_like, shape (n,)
        The PSF's determinant radius at each source, pixels (NaN: no PSF, flagged).
    config : LocalBackgroundConfig, optional

    Returns
    -------
    dict
        ``base_LocalBackground_instFlux``, ``_instFluxErr`` (float64, counts per pixel) and the flag columns.
    """
    config = config or LocalBackgroundConfig()
    image, mask, variance, x0, y0 = _c.planes(masked_image)
    x = _c.as_positions("x", x)
    y = _c.as_positions("y", y, len(x))
    s = _c.as_positions("psf_sigma", psf_sigma, len(x))
    out = _core.measure_local_background(image, mask, variance, x0, y0, x, y, s, config.to_control(masked_image))
    cols = {f"{PLUGIN_NAME}_instFlux": out["instFlux"], f"{PLUGIN_NAME}_instFluxErr": out["instFluxErr"]}
    cols.update(_c.flag_columns(PLUGIN_NAME, flag_names(), out["flags"]))
    return cols
