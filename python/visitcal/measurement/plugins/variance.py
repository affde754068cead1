"""base_Variance: the median variance around each source (LSST meas_base's plugin of that name).

The pixels whose centres ``r`` (relative to the centroid) satisfy ``r^T (scale^2 Q)^-1 r <= 1``, with
``Q = (xx, yy, xy)`` the shape moments and ``scale = 5``, on the image, without ``mask_planes`` bits
(DETECTED, DETECTED_NEGATIVE, BAD, SAT) or a non-finite variance; ``base_Variance_value`` is the median
of their variance (numpy's median: the mean of the two middle values for an even count).
Flags: ``_flag`` (any failure: non-finite centroid, shape not finite or not positive-definite) and
``_flag_emptyFootprint`` (no pixel left).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ... import _core
from . import _phot_common as _c

__all__ = ["PLUGIN_NAME", "VarianceConfig", "flag_names", "schema", "variance"]

PLUGIN_NAME = "base_Variance"


class VarianceConfig(BaseModel):
    """Configuration of `variance` (mirrors the C++ ``VarianceControl``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(5.0, le=100, description="Scale factor of the shape ellipse's axes. At most 100: the "
                                                  "ellipse's area sizes the time.")
    mask_planes: tuple[str, ...] = Field(("DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT"),
                                         description="Mask planes whose pixels are excluded.")

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, v):
        if not (np.isfinite(v) and v > 0):
            raise ValueError("scale must be finite and > 0")
        return v

    def to_control(self, masked_image):
        """The C++ ``VarianceControl``: the ellipse ``scale`` and the bits of ``mask_planes`` left out.

        Parameters
        ----------
        masked_image : `MaskedImage` or `Exposure`
            The image to be measured: plane names are resolved to bits in its own mask dictionary.

        Returns
        -------
        control : `visitcal._core.VarianceControl`
            A new control struct; the config is unchanged.

        Raises
        ------
        UnknownMaskPlaneError
            When a plane in ``mask_planes`` is not defined in the image's mask.
        """
        c = _core.VarianceControl()
        c.scale = self.scale
        c.mask = int(_c.plane_bits(masked_image, self.mask_planes))
        return c


def flag_names() -> list[str]:
    """Flag suffixes, bit i <-> entry i (the C++ registry ``kVarianceFlagNames``)."""
    return list(_core.variance_flag_names())


def schema(config: VarianceConfig | None = None) -> list[str]:
    """The output column names, in order."""
    return [f"{PLUGIN_NAME}_value"] + [f"{PLUGIN_NAME}_{n}" for n in flag_names()]


def variance(masked_image, x, y, xx, yy, xy, config: VarianceConfig | None = None) -> dict[str, np.ndarray]:
    """Median variance inside the scaled shape ellipse of many sources.

    Parameters
    ----------
    masked_image : MaskedImage or Exposure
    x, y : array_like, shape (n,)
        Parent-frame centroids, pixels (pixel centres at integers).
    xx, yy, xy : array_like, shape (n,)
        Shape second moments, pixels^2.
    config : VarianceConfig, optional

    Returns
    -------
    dict
        ``base_Variance_value`` (float64, counts^2) and the flag columns.
    """
    config = config or VarianceConfig()
    image, mask, var, x0, y0 = _c.planes(masked_image)
    x = _c.as_positions("x", x)
    n = len(x)
    y, xx, yy, xy = (_c.as_positions(k, v, n) for k, v in (("y", y), ("xx", xx), ("yy", yy), ("xy", xy)))
    out = _core.measure_variance(image, mask, var, x0, y0, x, y, xx, yy, xy, config.to_control(masked_image))
    cols = {f"{PLUGIN_NAME}_value": out["value"]}
    cols.update(_c.flag_columns(PLUGIN_NAME, flag_names(), out["flags"]))
    return cols
