"""Shared plumbing of the photometry plugin modules (visitcal.measurement.plugins.aperture_flux etc.).

Not public: turns a `MaskedImage` / `Exposure` into the zero-copy planes the C++ batch entries take,
checks per-source arrays, and expands the C++ flag words into LSST's boolean flag columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...core.arguments import INT32_MAX, INT32_MIN, check_xy0
from ...core.image import Exposure, MaskedImage, _to_int32


def planes(masked_image) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``(image float32, mask int32, variance float32, x0, y0)`` of a MaskedImage or Exposure."""
    if isinstance(masked_image, Exposure):
        masked_image = masked_image.masked_image
    if not isinstance(masked_image, MaskedImage):
        raise TypeError(f"masked_image must be a MaskedImage or Exposure, got {type(masked_image).__name__}")
    x0, y0 = check_xy0(masked_image.xy0, masked_image.image.shape, "masked_image: xy0")
    return masked_image.image, masked_image.mask.array, masked_image.variance, x0, y0




def as_int32_offsets(name: str, values, n: int) -> np.ndarray:
    """A contiguous int32 copy of integer offsets (shape ``(n,)``); ValueError naming the argument otherwise.

    Checked before the conversion: ``astype(np.int32)`` would silently wrap an int64 offset near 2**31,
    and a wrapped stamp origin once sent the PSF-flux loop gigabytes past the image.
    """
    a = np.asarray(values)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got {a.dtype}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < INT32_MIN or hi > INT32_MAX:
            bad = lo if lo < INT32_MIN else hi
            raise ValueError(f"{name} must lie in the int32 range [{INT32_MIN}, {INT32_MAX}], got {bad}")
    return np.ascontiguousarray(a, dtype=np.int32)


def mask_of(masked_image):
    """The `Mask` of a MaskedImage or Exposure."""
    return masked_image.mask


def as_positions(name: str, values, n: int | None = None) -> np.ndarray:
    """A 1-D float64 array (of length ``n`` when given); ValueError naming the argument otherwise."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 0 and n is not None:
        a = np.full(n, float(a))
    a = np.ascontiguousarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} must have the length of x ({n}), got {a.shape[0]}")
    return a


def plane_bits(masked_image, names: Sequence[str]) -> np.int32:
    """OR of the named planes' bits in the image's own mask dictionary, as int32."""
    return _to_int32(mask_of(masked_image).planes.get_plane_bitmask(*names)) if names else np.int32(0)


def flag_columns(prefix: str, names: Sequence[str], flags: np.ndarray) -> dict[str, np.ndarray]:
    """``{prefix + "_" + name: bool array}`` for bit i <-> names[i] of the uint32 words ``flags``."""
    return {f"{prefix}_{name}": (flags & np.uint32(1 << i)) != 0 for i, name in enumerate(names)}
