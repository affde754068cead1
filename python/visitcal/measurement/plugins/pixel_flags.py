"""base_PixelFlags: mask planes in a source's footprint and at its centre (LSST meas_base's plugin of that
name).

* Anywhere in the footprint (its on-image pixels): ``_flag_edge`` (EDGE), ``_flag_nodata`` (NO_DATA),
  ``_flag_interpolated`` (INTRP), ``_flag_saturated`` (SAT), ``_flag_cr`` (CR), ``_flag_bad`` (BAD),
  ``_flag_suspect`` (SUSPECT) and ``_flag_streak`` (STREAK, the extra plane reprocessing adds).
* In the 3 x 3 box around the centroid's pixel ``(floor(x + 0.5), floor(y + 0.5))``, clipped to the
  image: ``_flag_<name>Center`` when any of its pixels has the plane and ``_flag_<name>CenterAll`` when all
  do, for interpolated, saturated, cr, suspect, bad and streak.
* ``_flag_offimage``: the centroid's pixel is off the image; it also sets ``_flag_edge``.
* ``_flag``: the centroid is not finite (centre flags not evaluated; footprint flags still are).

The bits are the standard planes of `visitcal.core.image.MaskPlanes` (fixed in C++), so the mask must use the
standard layout for those planes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ... import _core
from ...core.footprint import Footprint
from . import _phot_common as _c

__all__ = ["PLUGIN_NAME", "flag_names", "pixel_flags", "schema"]

PLUGIN_NAME = "base_PixelFlags"


def flag_names() -> list[str]:
    """Flag suffixes, bit i <-> entry i (the C++ registry ``kPixelFlagsFlagNames``)."""
    return list(_core.pixel_flags_flag_names())


def schema() -> list[str]:
    """The output column names, in order."""
    return [f"{PLUGIN_NAME}_{n}" for n in flag_names()]


def _flat_spans(footprints) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(footprints, tuple) and len(footprints) == 2:
        spans = np.ascontiguousarray(footprints[0], dtype=np.int32).reshape(-1, 3)
        offsets = np.ascontiguousarray(footprints[1], dtype=np.int64)
        return spans, offsets
    if not isinstance(footprints, Sequence):
        footprints = list(footprints)
    arrays = []
    for k, fp in enumerate(footprints):
        if not isinstance(fp, Footprint):
            raise TypeError(f"footprints[{k}] must be a Footprint, got {type(fp).__name__}")
        arrays.append(fp.spans)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    spans = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros((0, 3), np.int32)
    return np.ascontiguousarray(spans), offsets


def pixel_flags(masked_image, x, y, footprints) -> dict[str, np.ndarray]:
    """Pixel flags of many sources.

    Parameters
    ----------
    masked_image : MaskedImage or Exposure
    x, y : array_like, shape (n,)
        Parent-frame centroids, pixels (pixel centres at integers).
    footprints : sequence of Footprint, or (spans, span_offsets)
        One footprint per source (parent frame), or flat arrays: ``spans`` (m, 3) int ``[y, x0, x1]``
        (inclusive) and ``span_offsets`` (n + 1) with source k owning
        ``spans[span_offsets[k]:span_offsets[k + 1]]``.

    Returns
    -------
    dict
        ``base_PixelFlags_<flag>`` bool columns.
    """
    image, mask, variance, x0, y0 = _c.planes(masked_image)
    x = _c.as_positions("x", x)
    y = _c.as_positions("y", y, len(x))
    spans, offsets = _flat_spans(footprints)
    if offsets.shape != (len(x) + 1,):
        raise ValueError(f"footprints: need one per source ({len(x)}), got {offsets.shape[0] - 1}")
    out = _core.measure_pixel_flags(image, mask, variance, x0, y0, x, y, spans, offsets)
    return _c.flag_columns(PLUGIN_NAME, flag_names(), out["flags"])
