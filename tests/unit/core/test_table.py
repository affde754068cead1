"""Source-id packing (lsst-spec §2.7) and slot resolution."""

import numpy as np
import pytest
from astropy.table import Table
from hypothesis import given
from hypothesis import strategies as st

from visitcal.core.table import DetectorVisitIdGenerator, set_slot, slot_column, unpack_source_ids


@given(visit=st.integers(0, 2**30 - 1), detector=st.integers(0, 255), release=st.integers(0, 63),
       counter=st.integers(1, 2**19 - 1))
def test_pack_unpack_round_trip(visit, detector, release, counter):
    gen = DetectorVisitIdGenerator(visit, detector, release_id=release)
    sid = gen.source_ids(1, start=counter)[0]
    assert 0 <= sid < 2**63
    assert [int(v[0]) for v in unpack_source_ids([sid])] == [visit, detector, release, counter]
    # The layout of the spec: catalog_id * n_counters + counter, catalog_id = packed + n_data_ids * release.
    assert sid == ((visit * 256 + detector) + 2**30 * 256 * release) * 2**19 + counter


def test_ids_of_neighbouring_catalogs_never_collide():
    ids = np.concatenate([
        DetectorVisitIdGenerator(v, d).source_ids(1000) for v in (10, 11) for d in (0, 1, 255)
    ])
    assert len(np.unique(ids)) == ids.size


def test_custom_sizes():
    gen = DetectorVisitIdGenerator(2025061800123 % 10**9, 188, max_visit=10**9, n_detectors=205)
    v, d, r, c = gen.unpack(gen.source_ids(3))
    assert set(v) == {2025061800123 % 10**9} and set(d) == {188} and list(c) == [1, 2, 3]


@pytest.mark.parametrize("kwargs,match", [
    (dict(visit=-1, detector=0), "visit=-1"),
    (dict(visit=0, detector=256), "detector=256"),
    (dict(visit=0, detector=0, release_id=64), "release_id=64"),
    (dict(visit=0, detector=0, max_visit=2**50, n_detectors=2**10), "no bits"),
])
def test_bad_ids(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DetectorVisitIdGenerator(**kwargs)


def test_counter_overflow():
    gen = DetectorVisitIdGenerator(1, 1)
    with pytest.raises(ValueError, match="too many sources"):
        gen.source_ids(2**19 + 1)


def test_slots():
    t = Table({"base_SdssCentroid_x": [1.0], "slot_Shape_xx": [2.0]})
    set_slot(t, "Centroid", "base_SdssCentroid")
    assert slot_column(t, "Centroid", "x") == "base_SdssCentroid_x"
    assert slot_column(t, "Shape", "xx") == "slot_Shape_xx"
    with pytest.raises(KeyError, match="slot_PsfFlux_instFlux"):
        slot_column(t, "PsfFlux", "instFlux")
