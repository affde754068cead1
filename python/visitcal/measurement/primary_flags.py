"""Primary flags of a single-frame catalog (LSST's ``SetPrimaryFlagsTask`` with ``isSingleFrame=True`` and
the SDSS-style deblender of meas_deblender, no scarlet).

With ``parent`` the id of a row's parent (0 for a top-level detection), ``deblend_nChild`` its number of
deblended children and ``sky_source`` the sky-source flag:

- ``detect_fromBlend = parent != 0`` (a deblended child);
- ``detect_isIsolated = (parent == 0) & (deblend_nChild == 0)`` (a parent that was not split: a single
  peak, or a blend the deblender skipped);
- ``detect_isDeblendedSource = deblend_nChild == 0`` (a leaf of the blend tree);
- ``detect_isPrimary = ~sky_source & (deblend_nChild == 0)``: isolated parents plus every deblended
  child, never a blended parent, never a sky source. Each real object is thus counted once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PRIMARY_FLAG_COLUMNS", "set_primary_flags"]

#: The columns `set_primary_flags` writes, with their descriptions.
PRIMARY_FLAG_COLUMNS = {
    "detect_fromBlend": "This source is deblended from a parent with more than one child.",
    "detect_isIsolated": "This source is not a part of a blend.",
    "detect_isDeblendedSource": "This source has no children (it is an isolated source or a deblended child).",
    "detect_isPrimary": "True if the source has no children and is not a sky source.",
}


def _column(table, name: str, n: int | None) -> np.ndarray:
    try:
        col = table[name]
    except (KeyError, ValueError):
        raise ValueError(f"catalog has no column {name!r}, needed for the primary flags") from None
    a = np.asarray(col)
    if a.ndim != 1 or (n is not None and len(a) != n):
        raise ValueError(f"column {name!r} must be 1-D with one value per row, got shape {a.shape}")
    if np.ma.is_masked(col):
        raise ValueError(f"column {name!r} has masked (missing) values")
    return a


def set_primary_flags(table) -> None:
    """Add (or overwrite) the four ``detect_*`` columns of `PRIMARY_FLAG_COLUMNS` in place.

    Parameters
    ----------
    table : `astropy.table.Table` or a mutable mapping of column name -> 1-D array
        Needs integer ``parent`` and ``deblend_nChild``; ``sky_source`` (bool) is optional and counts as
        all False when absent (a catalog without sky sources).
    """
    parent = _column(table, "parent", None)
    n = len(parent)
    n_child = _column(table, "deblend_nChild", n)
    for name, a in (("parent", parent), ("deblend_nChild", n_child)):
        if a.dtype.kind not in "iu":
            raise ValueError(f"column {name!r} must hold integers, got dtype {a.dtype}")
    if np.any(n_child < 0):
        raise ValueError("column 'deblend_nChild' has negative values")
    try:
        table["sky_source"]
        has_sky = True
    except (KeyError, ValueError):
        has_sky = False
    sky = _column(table, "sky_source", n).astype(bool) if has_sky else np.zeros(n, dtype=bool)

    leaf = n_child == 0
    top = parent == 0
    flags = {
        "detect_fromBlend": ~top,
        "detect_isIsolated": top & leaf,
        "detect_isDeblendedSource": leaf.copy(),
        "detect_isPrimary": leaf & ~sky,
    }
    for name, values in flags.items():
        table[name] = values
        info = getattr(table[name], "info", None)
        if info is not None and hasattr(info, "description"):
            info.description = PRIMARY_FLAG_COLUMNS[name]
