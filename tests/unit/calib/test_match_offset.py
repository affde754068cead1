"""The offset search, the astrometric matcher's fallback (`MatchOffsetTask`, C++ ``offset_histogram``; issue 21).

The C++ histogram against a brute-force numpy reference; the matcher on a sparse scene (38 sources, 71
references of which only half are detected, as issue 21's failing detectors; the pattern matcher's own
failure on such a detector is in tests/sim/test_astrometry_sim.py),
with a preliminary WCS off by a shift, a rotation and a scale error of visitcal.sim's sizes: every true pair
found, none false; random lists give a typed ``no_match``.
"""

from __future__ import annotations

import numpy as np
import pytest
from visitcal import _core
from visitcal.calib.match_offset import MatchOffsetConfig, MatchOffsetTask
from visitcal.calib.match_pessimistic_b import MatchError
from visitcal.core.wcs import make_tan_sip_wcs

SCALE = 0.2 / 3600.0
N = 2048


def brute_histogram(xs, ys, xr, yr, max_offset, bin):
    half = int(np.ceil(max_offset / bin))
    n = 2 * half + 1
    counts = np.zeros((n, n), np.int64)
    dx = xr[None, :] - xs[:, None]
    dy = yr[None, :] - ys[:, None]
    ok = dx**2 + dy**2 <= max_offset**2
    ix = np.floor(dx[ok] / bin + 0.5).astype(int) + half
    iy = np.floor(dy[ok] / bin + 0.5).astype(int) + half
    np.add.at(counts, (iy, ix), 1)
    return counts, int(ok.sum())


def test_offset_histogram_matches_the_brute_force_reference():
    rng = np.random.default_rng(3)
    xs, ys = rng.uniform(0, 500, 300), rng.uniform(0, 500, 300)
    xr, yr = rng.uniform(-20, 520, 400), rng.uniform(-20, 520, 400)
    xs[5] = np.nan  # left out
    for max_offset, bin in ((30.0, 2.5), (12.0, 1.0), (7.3, 3.1)):
        counts, n = _core.offset_histogram(xs, ys, xr, yr, max_offset, bin)
        ref, n_ref = brute_histogram(xs[np.isfinite(xs)], ys[np.isfinite(xs)], xr, yr, max_offset, bin)
        np.testing.assert_array_equal(counts, ref)
        assert n == n_ref == counts.sum()
    with pytest.raises(ValueError):
        _core.offset_histogram(xs, ys, xr, yr, -1.0, 1.0)
    with pytest.raises(ValueError):
        _core.offset_histogram(xs, ys, xr, yr, 10.0, 0.0)
    with pytest.raises(TypeError):  # no silent conversion of float32 arrays
        _core.offset_histogram(xs.astype(np.float32), ys, xr, yr, 10.0, 1.0)


def scene(seed=2, n_src=38, n_ref=71):
    """True WCS, preliminary WCS (1.2" shift, 1.5e-3 rad rotation, 1e-3 scale error) and unpaired lists:
    ``n_ref`` references over the detector, the first ``n_src`` of them detected (centroid noise 0.03 px),
    plus 6 detections that are not in the catalog (galaxies, artefacts)."""
    rng = np.random.default_rng(seed)
    cd = SCALE * np.diag([-1.0, 1.0])
    truth = make_tan_sip_wcs((N / 2, N / 2), (30.0, -20.0), cd)
    e = 1.5e-3
    rot = np.array([[np.cos(e), -np.sin(e)], [np.sin(e), np.cos(e)]])
    prelim = make_tan_sip_wcs((N / 2, N / 2), (30.0 + 1.0 / 3600, -20.0 + 0.7 / 3600), 1.001 * rot @ cd)
    x, y = rng.uniform(0, N - 1, n_ref), rng.uniform(0, N - 1, n_ref)
    ra, dec = truth.all_pix2world(x, y, 0)
    sx = np.concatenate([x[:n_src] + rng.normal(0, 0.03, n_src), rng.uniform(0, N - 1, 6)])
    sy = np.concatenate([y[:n_src] + rng.normal(0, 0.03, n_src), rng.uniform(0, N - 1, 6)])
    perm = rng.permutation(sx.size)
    return truth, prelim, np.column_stack([sx[perm], sy[perm]]), perm, ra, dec


def test_offset_search_matches_a_sparse_field():
    truth, prelim, xy, perm, ra, dec = scene()
    flux = np.ones(len(xy))
    m = MatchOffsetTask().match_objects(xy, flux, ra, dec, np.ones(ra.size), prelim)
    true_ref = np.where(perm < 38, perm, -1)  # source k is reference perm[k] when perm[k] < 38
    assert np.all(true_ref[m.source_index] == m.ref_index)  # no false pair
    assert len(m) == 38  # every true pair
    assert m.n_peak >= 20 and m.chance < 0.5
    assert np.all(m.distance_pix < 0.2)
    # the offset found is the preliminary WCS's error at the centre: ~(1.0 cos(dec), 0.7)" -> px
    assert abs(np.hypot(*m.offset_pix) - np.hypot(np.cos(np.radians(20)) * 1.0, 0.7) / 0.2) < 1.5


def test_random_lists_give_a_typed_no_match():
    rng = np.random.default_rng(9)
    _, prelim, _, _, _, _ = scene()
    xy = rng.uniform(0, N - 1, (40, 2))
    ra, dec = prelim.all_pix2world(rng.uniform(0, N - 1, 70), rng.uniform(0, N - 1, 70), 0)
    with pytest.raises(MatchError) as exc:
        MatchOffsetTask().match_objects(xy, np.ones(40), ra, dec, np.ones(70), prelim)
    assert exc.value.reason == "no_match" and "offset search" in str(exc.value)
    with pytest.raises(MatchError) as exc:
        MatchOffsetTask().match_objects(xy[:3], np.ones(3), ra, dec, np.ones(70), prelim)
    assert exc.value.reason == "too_few_sources"
    with pytest.raises(ValueError, match="source_xy"):
        MatchOffsetTask().match_objects(xy[:, 0], np.ones(40), ra, dec, np.ones(70), prelim)


def test_shift_beyond_max_offset_is_not_found():
    truth, prelim, xy, perm, ra, dec = scene()
    far = prelim.deepcopy()
    far.wcs.crval = [far.wcs.crval[0] + 15.0 / 3600 / np.cos(np.radians(20)), far.wcs.crval[1]]  # 15" off
    far.wcs.set()
    with pytest.raises(MatchError):
        MatchOffsetTask(MatchOffsetConfig(max_offset_arcsec=10.0)).match_objects(
            xy, np.ones(len(xy)), ra, dec, np.ones(ra.size), far)
    m = MatchOffsetTask(MatchOffsetConfig(max_offset_arcsec=20.0)).match_objects(
        xy, np.ones(len(xy)), ra, dec, np.ones(ra.size), far)
    assert len(m) == 38


def test_a_dozen_detections_suffice_and_config_is_strict():
    """12 of 71 references detected (plus 6 strangers): all 12 pairs; the configuration forbids extras."""
    truth, prelim, xy, perm, ra, dec = scene(n_src=12, n_ref=71)
    m = MatchOffsetTask().match_objects(xy, np.ones(len(xy)), ra, dec, np.ones(ra.size), prelim)
    assert len(m) == 12 and np.all(np.where(perm < 12, perm, -1)[m.source_index] == m.ref_index)
    with pytest.raises(ValueError):
        MatchOffsetConfig(bogus=1)
    with pytest.raises(ValueError):
        MatchOffsetConfig(min_matches=2)
