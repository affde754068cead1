"""Checks of integer arguments before they reach the C++ core (issue 22).

The bindings take C ``int``: a Python int beyond int32 would otherwise surface as pybind11's
"incompatible function arguments" dump, and a float or a bool would be truncated without a word.
"""

from __future__ import annotations

import numbers

__all__ = ["INT32_MAX", "checked_int"]

INT32_MAX = 2**31 - 1


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
