"""Snap combination (LSST ``SnapCombineTask``, lsst-spec §5.3 step 1), shared by calibration and reprocessing."""

from __future__ import annotations

import dataclasses
import math

from .image import Exposure, Mask, MaskedImage

__all__ = ["combine_snaps"]


def combine_snaps(snaps: list[Exposure]) -> Exposure:
    """Sum one or two snaps (lsst-spec §5.3 step 1): images and variances added, masks OR-ed, exposure times
    summed, read noises (``RDNOISE``) added in quadrature; the first snap's WCS, detector, visit info and
    metadata otherwise. One snap passes through unchanged
    (the same object: callers work on it in place).

    Raises
    ------
    ValueError
        No snap, more than two, or snaps of different shapes or origins.
    """
    if not 1 <= len(snaps) <= 2:
        raise ValueError(f"expected 1 or 2 snaps, got {len(snaps)}")
    first = snaps[0]
    if len(snaps) == 1:
        return first
    second = snaps[1]
    if second.shape != first.shape or tuple(second.xy0) != tuple(first.xy0):
        raise ValueError(f"snaps differ in shape or origin: {first.shape} at {first.xy0} vs "
                         f"{second.shape} at {second.xy0}")
    if dict(second.mask.planes.items()) != dict(first.mask.planes.items()):
        raise ValueError("snaps have different mask planes")
    mi = MaskedImage(first.image + second.image, Mask(first.mask.array | second.mask.array, first.mask.planes),
                     first.variance + second.variance, xy0=first.xy0)
    vi = first.visit_info
    if vi is not None:
        t2 = second.visit_info.exposure_time if second.visit_info is not None else math.nan
        vi = dataclasses.replace(vi, exposure_time=vi.exposure_time + t2)
    md = first.metadata.copy()
    # The sum has each snap's read noise once: sqrt(rn1^2 + rn2^2) (for magLim).
    rn1, rn2 = first.metadata.get("RDNOISE"), second.metadata.get("RDNOISE")
    if rn1 is not None and rn2 is not None:
        md["RDNOISE"] = (math.hypot(float(rn1), float(rn2)), "[e-] read noise of the summed snaps")
    return Exposure(mi, wcs=first.wcs, visit_info=vi, detector=first.detector, metadata=md)
