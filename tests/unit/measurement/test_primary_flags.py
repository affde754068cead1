"""Primary flags (lsst-spec §5.8) on hand-built catalogs whose answer is known row by row."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from visitcal.measurement.primary_flags import PRIMARY_FLAG_COLUMNS, set_primary_flags


def catalog() -> Table:
    """Rows, with what each is:
    1 isolated parent (one peak)          -> primary
    2 blended parent with children 3, 4   -> not primary
    3, 4 deblended children of 2          -> primary
    5 parent the deblender skipped        -> primary (nChild = 0: nothing else represents it)
    6 sky source                          -> never primary
    7 blended parent with one child 8     -> not primary
    8 its child                           -> primary
    """
    t = Table()
    t["id"] = np.arange(1, 9, dtype=np.int64)
    t["parent"] = np.array([0, 0, 2, 2, 0, 0, 0, 7], dtype=np.int64)
    t["deblend_nChild"] = np.array([0, 2, 0, 0, 0, 0, 1, 0], dtype=np.int32)
    t["sky_source"] = np.array([0, 0, 0, 0, 0, 1, 0, 0], dtype=bool)
    t["deblend_skipped"] = np.array([0, 0, 0, 0, 1, 0, 0, 0], dtype=bool)
    return t


def test_flags_row_by_row():
    t = catalog()
    set_primary_flags(t)
    assert t["detect_isPrimary"].tolist() == [True, False, True, True, True, False, False, True]
    assert t["detect_fromBlend"].tolist() == [False, False, True, True, False, False, False, True]
    assert t["detect_isIsolated"].tolist() == [True, False, False, False, True, True, False, False]
    assert t["detect_isDeblendedSource"].tolist() == [True, False, True, True, True, True, False, True]
    for name, desc in PRIMARY_FLAG_COLUMNS.items():
        assert t[name].dtype == bool and t[name].description == desc


def test_each_primary_is_exactly_one_isolated_parent_or_deblended_child():
    rng = np.random.default_rng(1)
    # a random catalog: parents with 0..3 children, some sky sources (always isolated parents)
    parent, n_child, sky = [], [], []
    next_id = 1
    ids = []
    for _ in range(300):
        k = int(rng.integers(0, 4)) if rng.random() < 0.6 else 0
        is_sky = k == 0 and rng.random() < 0.1
        pid = next_id
        ids.append(pid), parent.append(0), n_child.append(k), sky.append(is_sky)
        next_id += 1
        for _ in range(k):
            ids.append(next_id), parent.append(pid), n_child.append(0), sky.append(False)
            next_id += 1
    t = Table({"id": ids, "parent": parent, "deblend_nChild": n_child, "sky_source": sky})
    set_primary_flags(t)
    p = np.asarray(t["detect_isPrimary"])
    isolated = np.asarray(t["detect_isIsolated"])
    child = np.asarray(t["detect_fromBlend"])
    assert np.all(p == ((isolated ^ child) & ~np.asarray(sky)))
    assert not np.any(p & np.asarray(sky))
    assert not np.any(p & (np.asarray(n_child) > 0))
    # every non-sky top-level object is represented exactly once among the primaries
    top = np.asarray(parent) == 0
    family = np.where(top, t["id"], t["parent"])
    counts = {int(f): 0 for f in np.asarray(family)[top & ~np.asarray(sky)]}
    for f in np.asarray(family)[p]:
        counts[int(f)] += 1
    nc = dict(zip(np.asarray(t["id"])[top], np.asarray(n_child)[top]))
    assert all(c == max(nc[f], 1) for f, c in counts.items())


def test_dict_of_arrays_without_sky_column_and_errors():
    d = {"parent": np.array([0, 0, 2]), "deblend_nChild": np.array([0, 1, 0])}
    set_primary_flags(d)
    assert d["detect_isPrimary"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="deblend_nChild"):
        set_primary_flags({"parent": np.array([0])})
    with pytest.raises(ValueError, match="one value per row"):
        set_primary_flags({"parent": np.array([0, 0]), "deblend_nChild": np.array([0])})
    with pytest.raises(ValueError, match="integers"):
        set_primary_flags({"parent": np.array([0.0]), "deblend_nChild": np.array([0])})
    t = catalog()
    set_primary_flags(t)
    set_primary_flags(t)  # idempotent: overwrites
    assert t["detect_isPrimary"].tolist().count(True) == 5
