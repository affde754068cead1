"""Snap combination (LSST's ``SnapCombineTask`` in pipe_tasks), shared by calibration and reprocessing."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..core.image import Exposure, Mask, MaskedImage

__all__ = ["combine_snaps"]


def combine_snaps(snaps: list, bad_mask_planes: tuple[str, ...] = (), *, in_place: bool = False) -> Exposure:
    """Sum one or two snaps, following pipe_tasks' ``SnapCombineTask``.

    Masks are OR-ed, exposure times summed, read noises (``RDNOISE``) added in quadrature; the first
    snap's WCS, detector, visit info and metadata are kept otherwise. One snap passes through unchanged
    (the same object: callers work on it in place).

    With ``in_place`` the sum is written into the first snap's image, mask and variance arrays instead of
    new ones (the same values to the bit: float32 sums either way), so that summing two 4k snaps costs no
    third exposure (195 MB); the first snap's planes then hold the sum. The second snap may then also be
    a reader of its file (`visitcal.io.fits.ExposureFitsReader`, open): its mask is read alone and dropped
    once OR-ed, and its image and variance are added a chunk at a time as they are read, so the sum holds
    one exposure and at most the second snap's mask (260 MB for a 4k detector) instead of two exposures
    (390 MB). The pipeline steps do this.

    Each pixel of the sum is the mean of the snaps whose mask has none of ``bad_mask_planes`` there, times the
    number of snaps (LSST's weighted mean x 2), its variance the matching sum scaled by the same factor squared;
    where no snap is usable the pixel is 0, its variance infinite, and EDGE is set. With no bad planes
    (LSST's default) that is the plain sum of images and variances.

    Raises
    ------
    ValueError
        No snap, more than two, snaps of different shapes or origins or mask planes, an unknown plane name,
        or a second snap given as a reader without ``in_place``.
    """
    if not 1 <= len(snaps) <= 2:
        raise ValueError(f"expected 1 or 2 snaps, got {len(snaps)}")
    first = snaps[0]
    if len(snaps) == 1:
        return first
    second = _SecondSnap(snaps[1], in_place)
    if second.shape != first.shape or tuple(second.xy0) != tuple(first.xy0):
        raise ValueError(f"snaps differ in shape or origin: {first.shape} at {first.xy0} vs "
                         f"{second.shape} at {second.xy0}")
    second_mask = second.mask()
    if dict(second_mask.planes.items()) != dict(first.mask.planes.items()):
        raise ValueError("snaps have different mask planes")
    good = None
    if bad_mask_planes:  # before the masks are OR-ed (in place, the first snap's mask becomes the union)
        try:
            bad = first.mask.get_plane_bitmask(*bad_mask_planes)
        except KeyError as err:
            raise ValueError(f"bad_mask_planes: {err}") from err
        bad = np.int32(np.uint32(bad).astype(np.int32))
        good = [(m.array & bad) == 0 for m in (first.mask, second_mask)]
    if in_place:
        np.bitwise_or(first.mask.array, second_mask.array, out=first.mask.array)
        mask = Mask(first.mask.array, first.mask.planes)
    else:
        mask = Mask(first.mask.array | second_mask.array, first.mask.planes)
    del second_mask  # read from a file, its plane is freed here
    if good is None:
        if in_place:
            second.add_image_into(first.image)
            second.add_variance_into(first.variance)
            mi = MaskedImage(first.image, mask, first.variance, xy0=first.xy0)
        else:
            mi = MaskedImage(first.image + second.image(), mask, first.variance + second.variance(), xy0=first.xy0)
    else:
        n_good = good[0].astype(np.float32) + good[1]
        scale = np.divide(np.float32(2.0), n_good, out=np.zeros_like(n_good), where=n_good > 0)
        image = (np.where(good[0], first.image, 0) + np.where(good[1], second.image(), 0)) * scale
        variance = (np.where(good[0], first.variance, 0) + np.where(good[1], second.variance(), 0)) * (scale * scale)
        none = n_good == 0
        variance[none] = np.inf
        mask.set("EDGE", none)
        if in_place:
            first.image[...] = image
            first.variance[...] = variance
            image, variance = first.image, first.variance
        mi = MaskedImage(image.astype(np.float32, copy=False), mask, variance.astype(np.float32, copy=False),
                         xy0=first.xy0)
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


class _SecondSnap:
    """The second snap's parts, from an `Exposure` or (in place only) from an open reader of its file whose
    ``read_*`` methods return each plane anew and whose ``add_*_into`` add a plane as it is read
    (``visitcal.io.fits.ExposureFitsReader``; duck-typed, since detection sits below io): nothing is held."""

    def __init__(self, snap, in_place: bool):
        if isinstance(snap, Exposure):
            self.shape, self.xy0 = snap.shape, tuple(snap.xy0)
            self.visit_info, self.metadata = snap.visit_info, snap.metadata
            self.mask, self.image, self.variance = (lambda: snap.mask), (lambda: snap.image), (lambda: snap.variance)
            self.add_image_into = lambda out: np.add(out, snap.image, out=out)
            self.add_variance_into = lambda out: np.add(out, snap.variance, out=out)
            return
        if not hasattr(snap, "add_image_into"):
            raise ValueError(f"a snap must be an Exposure or an exposure file reader, got {type(snap).__name__}")
        if not in_place:
            raise ValueError("a snap given as a file reader is summed in place only (in_place=True)")
        self.shape, self.xy0 = tuple(snap.read_shape()), tuple(snap.read_xy0())
        self.visit_info, self.metadata = snap.read_visit_info(), snap.read_metadata()
        self.mask, self.image, self.variance = snap.read_mask, snap.read_image, snap.read_variance
        self.add_image_into, self.add_variance_into = snap.add_image_into, snap.add_variance_into  # as read
