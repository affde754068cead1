"""base_CompensatedTophatFlux: aperture flux minus an annulus background (LSST meas_base's
plugin of that name).

For each aperture radius ``a`` (pixels), with exact-overlap aperture fluxes (`visitcal.measurement.plugins.aperture_flux`)
``A0`` at ``a``, ``A1`` at ``a * inner_scale`` and ``A2`` at ``a * outer_scale``, and
``s = 1 / (outer_scale**2 - inner_scale**2)``:

* ``instFlux = A0 - s (A2 - A1)``;
* ``instFluxErr = sqrt(var(A0) + s**2 (var(A2) - var(A1)))`` (the spec's formula as written;
  ``var(A) = sum w V``);
* ``_flag_bounds`` (with ``_flag``, NaN values): the ``(2 ceil(outer_scale a) + 1)**2`` box centred on the
  centroid's pixel is not entirely on the image;
* ``_mask_bits``: OR of the mask over that box (its on-image part), int32;
* a NaN pixel or variance in an aperture gives NaN and ``_flag``.

Not aperture-corrected (LSST normalises it through NormalizedCalibrationFlux). Positions are
parent-frame, pixel centres at integers.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ... import _core
from . import _phot_common as _c

__all__ = ["PLUGIN_NAME", "CompensatedTophatConfig", "compensated_tophat_flux", "flag_names", "schema"]

PLUGIN_NAME = "base_CompensatedTophatFlux"


class CompensatedTophatConfig(BaseModel):
    """Configuration of `compensated_tophat_flux` (mirrors the C++ ``CompensatedTophatControl``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    apertures: tuple[Annotated[int, Field(le=1000)], ...] = Field(
        (12,), description="Aperture radii a in pixels (LSST default [12]), each at most 1000 px (the annulus' "
        "area sizes the time).")
    inner_scale: float = Field(1.0, le=10, description="Inner radius of the background annulus in units of a. At "
                                                       "most 10.")
    outer_scale: float = Field(1.7, le=10, description="Outer radius of the background annulus in units of a. At "
                                                       "most 10: the annulus' area sizes the time.")

    @model_validator(mode="after")
    def _check(self):
        if not self.apertures or any(a <= 0 for a in self.apertures):
            raise ValueError("apertures must be a non-empty list of positive integers")
        if not (np.isfinite(self.inner_scale) and self.inner_scale > 0):
            raise ValueError("inner_scale must be finite and > 0")
        if not (np.isfinite(self.outer_scale) and self.outer_scale > self.inner_scale):
            raise ValueError("outer_scale must be finite and > inner_scale")
        return self

    def to_control(self):
        """The C++ ``CompensatedTophatControl`` with these apertures (pixels) and annulus scales."""
        c = _core.CompensatedTophatControl()
        c.apertures = list(self.apertures)
        c.inner_scale, c.outer_scale = self.inner_scale, self.outer_scale
        return c


def flag_names() -> list[str]:
    """Flag suffixes, bit i <-> entry i (the C++ registry ``kCompensatedTophatFlagNames``)."""
    return list(_core.compensated_tophat_flag_names())


def schema(config: CompensatedTophatConfig | None = None) -> list[str]:
    """The output column names, in order."""
    config = config or CompensatedTophatConfig()
    cols = []
    for a in config.apertures:
        p = f"{PLUGIN_NAME}_{a}"
        cols += [f"{p}_instFlux", f"{p}_instFluxErr", f"{p}_mask_bits"] + [f"{p}_{n}" for n in flag_names()]
    return cols


def compensated_tophat_flux(masked_image, x, y, config: CompensatedTophatConfig | None = None) -> dict[str, np.ndarray]:
    """Compensated top-hat fluxes of many sources.

    Parameters
    ----------
    masked_image : MaskedImage or Exposure
    x, y : array_like, shape (n,)
        Parent-frame centroids, pixels (pixel centres at integers).
    config : CompensatedTophatConfig, optional

    Returns
    -------
    dict
        Per aperture ``a``: ``base_CompensatedTophatFlux_<a>_instFlux``, ``..._instFluxErr`` (float64,
        counts), ``..._mask_bits`` (int32) and the flag columns (bool).
    """
    config = config or CompensatedTophatConfig()
    for a in config.apertures:  # the C++ takes int: refused by name, not by a pybind11 signature dump
        if not 0 < a <= _c.INT32_MAX:
            raise ValueError(f"apertures: {a} px is outside [1, {_c.INT32_MAX}]")
    image, mask, variance, x0, y0 = _c.planes(masked_image)
    x = _c.as_positions("x", x)
    y = _c.as_positions("y", y, len(x))
    ctrl = config.to_control()
    names = flag_names()
    cols: dict[str, np.ndarray] = {}
    for a in config.apertures:
        out = _core.measure_compensated_tophat(image, mask, variance, x0, y0, x, y, int(a), ctrl)
        p = f"{PLUGIN_NAME}_{a}"
        cols[f"{p}_instFlux"] = out["instFlux"]
        cols[f"{p}_instFluxErr"] = out["instFluxErr"]
        cols[f"{p}_mask_bits"] = out["mask_bits"]
        cols.update(_c.flag_columns(p, names, out["flags"]))
    return cols
