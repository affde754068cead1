"""Some planes of a mask put back as they were when a block ends, keeping one byte per pixel instead of a copy of
the 4-byte mask (C++: ``cpp/src/core/mask_bits.cpp``; issue 25's memory budget: 16 MB instead of 65 MB on a 4k
detector)."""

from __future__ import annotations

import contextlib

from .. import _core
from .image import Mask

__all__ = ["planes_restored"]


@contextlib.contextmanager
def planes_restored(mask: Mask, planes):
    """Within the block, ``planes`` of ``mask`` may change; when it ends (normally or by an exception) their
    bits are put back as they were on entry, pixel for pixel. Every other bit of the mask must be left alone by
    the block: only ``planes`` are kept.

    Parameters
    ----------
    mask : `visitcal.core.image.Mask`
        Its array is restored in place (the same array object).
    planes : sequence of str
        Up to 8 plane names, all defined in ``mask.planes`` on entry.

    Raises
    ------
    KeyError
        A plane is not defined in the mask.
    ValueError
        More than 8 planes.
    """
    planes = tuple(planes)
    if len(planes) > 8:
        raise ValueError(f"planes_restored keeps at most 8 planes in one byte per pixel, got {len(planes)}")
    bits = int(mask.get_plane_bitmask(*planes))
    bits = bits - (1 << 32) if bits >= 1 << 31 else bits  # as the int32 the mask holds
    array = mask.array
    packed = _core.pack_mask_bits(array, bits)
    try:
        yield mask
    finally:
        _core.restore_mask_bits(array, bits, packed)
