"""Checks of integer arguments before they reach the C++ core (issue 22).

The bindings take C ``int``: a Python int beyond int32 would otherwise surface as pybind11's
"incompatible function arguments" dump, and a float or a bool would be truncated without a word.
"""

from __future__ import annotations

import numbers

__all__ = ["INT32_MAX", "INT32_MIN", "check_xy0", "checked_int", "checked_step"]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def checked_int(value, name: str, lo: int, hi: int = INT32_MAX) -> int:
    """``value`` as an ``int`` in ``[lo, hi]``, or a `TypeError` / `ValueError` naming ``name``.

    Integral numpy scalars are accepted; bools, floats (even integral ones) and strings are not.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v}")
    return v


def checked_step(value, name: str = "sample_step") -> int:
    """A sampling step (>= 1, any size) for the C++ core: a step past the image samples its first pixel
    alone, so a step beyond int32 is the same as int32's largest (the kernels also clamp it to the image)."""
    return min(checked_int(value, name, 1, 2**63 - 1), INT32_MAX)


def check_xy0(xy0, shape, name: str = "xy0") -> tuple[int, int]:
    """``(x0, y0)`` as ints, once every pixel of an image of ``shape`` (and one past) lies in int32.

    The C++ kernels take int origins and compute the last pixel x0 + nx - 1 in int: refused here, in
    our words, what pybind11 would refuse with a signature dump (or the kernels would wrap).
    """
    x0, y0 = (int(v) for v in xy0)
    ny, nx = shape
    if not (INT32_MIN <= x0 and x0 + nx <= INT32_MAX and INT32_MIN <= y0 and y0 + ny <= INT32_MAX):
        raise ValueError(f"{name} = ({x0}, {y0}) with shape ({ny}, {nx}) puts pixels outside the int32 range "
                         f"[{INT32_MIN}, {INT32_MAX - 1}]")
    return x0, y0
