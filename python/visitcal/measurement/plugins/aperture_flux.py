"""base_CircularApertureFlux: fluxes in circular apertures with exact pixel overlap (as LSST
meas_base's plugin of that name, but see below).

Each pixel's weight ``w`` is the exact area of the pixel inside the circle (sep/SExtractor "exact",
photutils ``method="exact"``); LSST uses sinc apertures up to ``maxSincRadius`` and whole pixels
beyond, this module uses exact overlap at every radius (a departure from LSST).

* ``instFlux = sum w I``; ``instFluxErr = sqrt(sum w V)`` (sep's variance weighting for exact
  apertures).
* ``_flag_apertureTruncated``: some pixel with ``w > 0`` is off the image; the values are NaN (as
  LSST's naive aperture, which gives up when the aperture leaves the image) and ``_flag`` is set.
* ``_flag_sincCoeffsTruncated``: kept for column compatibility with LSST; never set.
* The mask is ignored (LSST's aperture sums ignore it); a NaN pixel inside the aperture makes the flux
  NaN and sets ``_flag`` (likewise a NaN variance for the error).

Conventions: positions are parent-frame, pixel centres at integers; arrays are ``(y, x)``.
Column names: ``base_CircularApertureFlux_<r>`` with ``"."`` replaced by ``"_"`` (``_4_5``, ``_12_0``).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ... import _core
from . import _phot_common as _c

__all__ = ["PLUGIN_NAME", "ApertureFluxConfig", "aperture_prefix", "circular_aperture_flux", "flag_names",
           "schema"]

PLUGIN_NAME = "base_CircularApertureFlux"


class ApertureFluxConfig(BaseModel):
    """Configuration of `circular_aperture_flux` (mirrors the C++ ``ApertureFluxControl``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    radii: tuple[Annotated[float, Field(gt=0, le=1000)], ...] = Field(
        (3.0, 4.5, 6.0, 9.0, 12.0, 17.0, 25.0, 35.0, 50.0, 70.0),
        description="Aperture radii in pixels (LSST's CircularApertureFlux defaults); at most 64 of them, each at "
        "most 1000 px (an aperture's area sizes the time).")
    max_sinc_radius: float = Field(
        12.0, le=1000, description="LSST's maxSincRadius (reprocess value); kept for reference, unused: every "
                          "radius uses exact pixel overlap here. At most 1000 px.")

    @field_validator("radii")
    @classmethod
    def _check_radii(cls, v):
        if len(v) == 0 or len(v) > 64:
            raise ValueError("radii must hold 1 to 64 values")
        if not all(np.isfinite(r) and r > 0 for r in v):
            raise ValueError("radii must be finite and > 0")
        return v


def aperture_prefix(radius: float) -> str:
    """``base_CircularApertureFlux_12_0`` for 12: ``str(float(radius))`` with ``.`` -> ``_`` (as LSST)."""
    return f"{PLUGIN_NAME}_{str(float(radius)).replace('.', '_')}"


def flag_names() -> list[str]:
    """Flag suffixes, bit i <-> entry i (the C++ registry ``kApertureFluxFlagNames``)."""
    return list(_core.aperture_flux_flag_names())


def schema(config: ApertureFluxConfig | None = None) -> list[str]:
    """The output column names, in order."""
    config = config or ApertureFluxConfig()
    cols = []
    for r in config.radii:
        p = aperture_prefix(r)
        cols += [f"{p}_instFlux", f"{p}_instFluxErr"] + [f"{p}_{n}" for n in flag_names()]
    return cols


def circular_aperture_flux(masked_image, x, y, config: ApertureFluxConfig | None = None) -> dict[str, np.ndarray]:
    """Exact-overlap circular aperture fluxes of many sources.

    Parameters
    ----------
    masked_image : MaskedImage or Exposure
        Background-subtracted image (counts), its mask and variance (counts^2).
    x, y : array_like, shape (n,)
        Parent-frame centroids in pixels (pixel centres at integers).
    config : ApertureFluxConfig, optional

    Returns
    -------
    dict
        Per radius ``r``: ``<prefix>_instFlux``, ``<prefix>_instFluxErr`` (float64, counts) and the flag
        columns (bool), ``<prefix> = aperture_prefix(r)``.

    Notes
    -----
    All radii of a source are measured in one C++ call that reads each row once (the GIL is released).
    """
    config = config or ApertureFluxConfig()
    image, mask, variance, x0, y0 = _c.planes(masked_image)
    x = _c.as_positions("x", x)
    y = _c.as_positions("y", y, len(x))
    out = _core.measure_circular_apertures(image, mask, variance, x0, y0, x, y, list(config.radii))
    names = flag_names()
    cols: dict[str, np.ndarray] = {}
    for k, r in enumerate(config.radii):
        p = aperture_prefix(r)
        cols[f"{p}_instFlux"] = out["instFlux"][:, k].copy()
        cols[f"{p}_instFluxErr"] = out["instFluxErr"][:, k].copy()
        cols.update(_c.flag_columns(p, names, out["flags"][:, k]))
    return cols
