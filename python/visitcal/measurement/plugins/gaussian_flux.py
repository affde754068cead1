"""base_GaussianFlux: the flux in an elliptical Gaussian weight matched to the shape (LSST meas_base's
plugin of that name).

With ``Q = (xx, yy, xy)`` the shape moments and ``r`` the pixel centre minus the centroid,
``w = exp(-r^T Q^-1 r / 2)``, ``instFlux = 2 sum w I`` and ``instFluxErr = 2 sqrt(V_c pi sqrt(det Q))``
(``V_c`` the variance of the centroid's pixel). For a Gaussian source of flux F and moments Q,
``sum w I = F / 2``. The sum covers the box ``|dx|, |dy| <= box_sigma * sqrt(max(xx, yy))`` (capped at
``max_radius``), clipped to the image, sampling pixel centres.
Flags: ``_flag`` (any failure: NaN pixel with weight, centroid pixel off the image, empty box) and
``_flag_badShape`` (Q not finite or not positive-definite).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ... import _core
from . import _phot_common as _c

__all__ = ["PLUGIN_NAME", "GaussianFluxConfig", "flag_names", "gaussian_flux", "schema"]

PLUGIN_NAME = "base_GaussianFlux"


class GaussianFluxConfig(BaseModel):
    """Configuration of `gaussian_flux` (mirrors the C++ ``GaussianFluxControl``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box_sigma: float = Field(4.0, le=100, description="Half-size of the summed box in sqrt(max(xx, yy)) "
                                                      "(SdssShape's). At most 100: it sizes the summed box.")
    max_radius: float = Field(1000.0, le=1000, description="Cap on the box half-size, pixels. At most 1000 px: the "
                                                           "box's area sizes the time.")

    @model_validator(mode="after")
    def _check(self):
        for k in ("box_sigma", "max_radius"):
            v = getattr(self, k)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{k} must be finite and > 0")
        return self

    def to_control(self):
        """The C++ ``GaussianFluxControl`` with this ``box_sigma`` and ``max_radius``."""
        c = _core.GaussianFluxControl()
        c.box_sigma, c.max_radius = self.box_sigma, self.max_radius
        return c


def flag_names() -> list[str]:
    """Flag suffixes, bit i <-> entry i (the C++ registry ``kGaussianFluxFlagNames``)."""
    return list(_core.gaussian_flux_flag_names())


def schema(config: GaussianFluxConfig | None = None) -> list[str]:
    """The output column names, in order."""
    return [f"{PLUGIN_NAME}_instFlux", f"{PLUGIN_NAME}_instFluxErr"] + [f"{PLUGIN_NAME}_{n}" for n in flag_names()]


def gaussian_flux(masked_image, x, y, xx, yy, xy, config: GaussianFluxConfig | None = None) -> dict[str, np.ndarray]:
    """Gaussian-weighted fluxes of many sources.

    Parameters
    ----------
    masked_image : MaskedImage or Exposure
    x, y : array_like, shape (n,)
        Parent-frame centroids, pixels (pixel centres at integers).
    xx, yy, xy : array_like, shape (n,)
        Shape second moments, pixels^2.
    config : GaussianFluxConfig, optional

    Returns
    -------
    dict
        ``base_GaussianFlux_instFlux``, ``_instFluxErr`` (float64, counts) and the flag columns.
    """
    config = config or GaussianFluxConfig()
    image, mask, variance, x0, y0 = _c.planes(masked_image)
    x = _c.as_positions("x", x)
    n = len(x)
    y, xx, yy, xy = (_c.as_positions(k, v, n) for k, v in (("y", y), ("xx", xx), ("yy", yy), ("xy", xy)))
    out = _core.measure_gaussian_flux(image, mask, variance, x0, y0, x, y, xx, yy, xy, config.to_control())
    cols = {f"{PLUGIN_NAME}_instFlux": out["instFlux"], f"{PLUGIN_NAME}_instFluxErr": out["instFluxErr"]}
    cols.update(_c.flag_columns(PLUGIN_NAME, flag_names(), out["flags"]))
    return cols
