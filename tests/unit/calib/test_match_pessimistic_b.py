"""The pessimistic pattern matcher and match_nearest against synthetic catalogs with a known truth.

The scene: stars on a 2000 x 4000 px detector at 0.2"/px under a true TAN WCS; a *preliminary* WCS
that is the true one after a similarity about the detector centre (shift, rotation, scale error),
so sources at p have references projected to A^-1(p) exactly; 30% of the sources have no reference
and 30% of the references no source; source positions carry 0.1 px Gaussian noise and the reference
fluxes a 20% scatter (the brightness ranking differs between the lists).
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st

from visitcal import _core
from visitcal.calib.match_nearest import angular_separation_arcsec, match_nearest, match_nearest_sky
from visitcal.calib.match_pessimistic_b import MatchError, MatchPessimisticBConfig, MatchPessimisticBTask

NX, NY = 2000, 4000
SCALE = 0.2 / 3600.0


def tan_wcs(crpix, cd, crval=(150.0, 2.0)) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [crpix[0] + 1.0, crpix[1] + 1.0]  # FITS 1-based; our pixels are 0-based
    w.wcs.cd = np.asarray(cd)
    w.wcs.set()
    return w


def perturbed_wcs(true_cd, centre, shift, rot_deg, scale) -> WCS:
    """prelim(p) = true(c + s R (p - c) + t): CD' = CD s R and CRPIX' = c - (s R)^-1 t."""
    th = math.radians(rot_deg)
    m = scale * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    crpix = np.asarray(centre) - np.linalg.solve(m, np.asarray(shift, dtype=float))
    return tan_wcs(crpix, true_cd @ m)


def scene(seed=1, n_common=700, n_src_only=300, n_ref_only=300, shift=(40.0, -25.0), rot_deg=0.5, scale=1.001,
          noise=0.1, margin=300):
    rng = np.random.default_rng(seed)
    centre = np.array([(NX - 1) / 2, (NY - 1) / 2])
    true_cd = np.array([[-SCALE, 0.0], [0.0, SCALE]])
    true = tan_wcs(centre, true_cd)
    n = n_common + n_src_only + n_ref_only
    x = np.empty(n)
    y = np.empty(n)
    # Sources (common + source-only) on the detector; reference-only stars also around it.
    n_on = n_common + n_src_only
    x[:n_on] = rng.uniform(0, NX - 1, n_on)
    y[:n_on] = rng.uniform(0, NY - 1, n_on)
    x[n_on:] = rng.uniform(-margin, NX - 1 + margin, n_ref_only)
    y[n_on:] = rng.uniform(-margin, NY - 1 + margin, n_ref_only)
    flux = 10 ** rng.uniform(3, 6, n)
    ra, dec = true.all_pix2world(x, y, 0)
    src = np.r_[0:n_on]
    ref = np.r_[0:n_common, n_on:n]
    src_perm = rng.permutation(src)
    ref_perm = rng.permutation(ref)
    sxy = np.c_[x[src_perm], y[src_perm]] + rng.normal(0, noise, (src_perm.size, 2))
    sflux = flux[src_perm]
    rflux = flux[ref_perm] * rng.lognormal(0, 0.2, ref_perm.size)
    prelim = perturbed_wcs(true_cd, centre, shift, rot_deg, scale)
    truth = {int(k): int(np.flatnonzero(ref_perm == star)[0]) for k, star in enumerate(src_perm) if star < n_common}
    return dict(sxy=sxy, sflux=sflux, ra=ra[ref_perm], dec=dec[ref_perm], rflux=rflux, wcs=prelim, truth=truth,
                centre=centre, shift=np.asarray(shift), rot=rot_deg, scale=scale)


def score(result, truth):
    pairs = dict(zip(result.source_index.tolist(), result.ref_index.tolist()))
    correct = sum(1 for s, r in pairs.items() if truth.get(s) == r)
    wrong = len(pairs) - correct
    return correct / len(truth), wrong / max(len(pairs), 1)


@pytest.fixture(scope="module")
def default_scene():
    return scene()


def test_config_matches_control_defaults():
    cfg, ctrl = MatchPessimisticBConfig(), _core.MatcherControl()
    for name in ("num_bright_stars", "min_matched_pairs", "min_frac_matched_pairs", "matcher_iterations",
                 "max_offset_pix", "max_rotation_deg", "num_points_for_shape", "num_points_for_shape_attempt",
                 "min_match_dist_pixels", "num_pattern_consensus", "num_ref_require_consensus",
                 "match_distance_sigma", "max_scale_error"):
        assert getattr(cfg, name) == getattr(ctrl, name), name
    assert (cfg.num_bright_stars, cfg.min_matched_pairs, cfg.max_offset_pix, cfg.max_ref_objects) == (150, 30, 250, 8192)
    with pytest.raises(ValueError):
        MatchPessimisticBConfig(max_offset=3)  # extra="forbid"


def test_match_recovers_pairs_and_transform(default_scene):
    s = default_scene
    res = MatchPessimisticBTask().match_objects(s["sxy"], s["sflux"], s["ra"], s["dec"], s["rflux"], s["wcs"])
    frac_correct, frac_wrong = score(res, s["truth"])
    assert frac_correct >= 0.95
    assert frac_wrong <= 0.01
    # Sources at p have references at A^-1(p) in the preliminary frame: check T against A^-1 at the corners.
    th = math.radians(s["rot"])
    m = s["scale"] * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    for p in ([0, 0], [NX - 1, 0], [0, NY - 1], [NX - 1, NY - 1]):
        expect = s["centre"] + np.linalg.solve(m, np.asarray(p) - s["centre"] - s["shift"])
        got = np.array(res.transform(p[0], p[1]))
        assert np.hypot(*(got - expect)) < 0.05  # px; 700 pairs with 0.1 px noise
    assert res.rotation_deg == pytest.approx(-0.5, abs=1e-3)
    assert res.scale == pytest.approx(1 / 1.001, abs=2e-5)
    # Distances: 0.1 px noise per axis -> Rayleigh mean 0.125 px = 0.025".
    assert np.median(res.distance_pix) == pytest.approx(0.118, rel=0.2)
    np.testing.assert_allclose(res.distance_arcsec, res.distance_pix * 0.2, rtol=0.01, atol=1e-4)
    assert res.match_distance_pix == pytest.approx(1.0)  # the floor: mean + 2 sigma ~ 0.3 px
    assert res.n_consensus >= 1
    assert len(res) == res.source_index.size


def test_larger_catalogs_need_consensus_and_match():
    """1000 sources against 3000 references (the benchmark case): consensus of 3 patterns is required."""
    s = scene(seed=7, n_common=700, n_src_only=300, n_ref_only=2300, shift=(-60.0, 35.0), rot_deg=-0.8,
              scale=0.999)
    res = MatchPessimisticBTask().match_objects(s["sxy"], s["sflux"], s["ra"], s["dec"], s["rflux"], s["wcs"])
    assert res.n_references >= 1000 and res.n_consensus >= 3
    frac_correct, frac_wrong = score(res, s["truth"])
    assert frac_correct >= 0.95 and frac_wrong <= 0.01
    assert res.rotation_deg == pytest.approx(0.8, abs=2e-3)


def test_shift_near_the_limit():
    s = scene(seed=3, shift=(200.0, 120.0), rot_deg=0.9)
    res = MatchPessimisticBTask().match_objects(s["sxy"], s["sflux"], s["ra"], s["dec"], s["rflux"], s["wcs"])
    frac_correct, frac_wrong = score(res, s["truth"])
    assert frac_correct >= 0.95 and frac_wrong <= 0.01
    # T maps the centre to c - (sR)^-1 t; its length is |t| / s.
    assert math.hypot(*res.shift) == pytest.approx(math.hypot(200, 120) / 1.001, abs=0.1)


def test_wildly_wrong_wcs_is_a_typed_failure():
    s = scene(seed=2, shift=(0.0, 2000.0), rot_deg=0.0, scale=1.0)
    with pytest.raises(MatchError) as info:
        MatchPessimisticBTask().match_objects(s["sxy"], s["sflux"], s["ra"], s["dec"], s["rflux"], s["wcs"])
    err = info.value
    assert err.reason == "no_match"
    assert err.n_sources == 1000 and err.n_references > 0 and err.n_required == 30
    assert "no pattern match verified" in str(err)
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.reason, clone.n_sources, clone.n_references, str(clone)) == (err.reason, err.n_sources,
                                                                             err.n_references, str(err))


def test_empty_and_too_few_inputs(default_scene):
    s = default_scene
    task = MatchPessimisticBTask()
    with pytest.raises(MatchError) as info:
        task.match_objects(np.empty((0, 2)), [], s["ra"], s["dec"], s["rflux"], s["wcs"])
    assert info.value.reason == "too_few_sources" and info.value.n_sources == 0 and info.value.n_required == 6
    with pytest.raises(MatchError) as info:
        task.match_objects(s["sxy"][:5], s["sflux"][:5], s["ra"], s["dec"], s["rflux"], s["wcs"])
    assert info.value.reason == "too_few_sources" and info.value.n_sources == 5
    with pytest.raises(MatchError) as info:
        task.match_objects(s["sxy"], s["sflux"], [], [], [], s["wcs"])
    assert info.value.reason == "too_few_references" and info.value.n_references == 0
    with pytest.raises(MatchError) as info:  # NaN positions do not count
        xy = s["sxy"][:8].copy()
        xy[:4] = np.nan
        task.match_objects(xy, s["sflux"][:8], s["ra"], s["dec"], s["rflux"], s["wcs"])
    assert info.value.n_sources == 4
    with pytest.raises(ValueError, match="source_xy"):
        task.match_objects(s["sxy"][:, 0], s["sflux"], s["ra"], s["dec"], s["rflux"], s["wcs"])
    with pytest.raises(ValueError, match="source_flux"):
        task.match_objects(s["sxy"], s["sflux"][:3], s["ra"], s["dec"], s["rflux"], s["wcs"])
    with pytest.raises(TypeError, match="wcs"):
        task.match_objects(s["sxy"], s["sflux"], s["ra"], s["dec"], s["rflux"], None)


def test_small_catalogs_match_without_consensus():
    """40 sources, 40 references: the required pairs are min(30, 0.3 * 40) = 12."""
    s = scene(seed=11, n_common=30, n_src_only=10, n_ref_only=10)
    res = MatchPessimisticBTask().match_objects(s["sxy"], s["sflux"], s["ra"], s["dec"], s["rflux"], s["wcs"])
    frac_correct, frac_wrong = score(res, s["truth"])
    assert frac_correct >= 0.95 and frac_wrong == 0


def test_deterministic(default_scene):
    s = default_scene
    a = MatchPessimisticBTask().match_objects(s["sxy"], s["sflux"], s["ra"], s["dec"], s["rflux"], s["wcs"])
    b = MatchPessimisticBTask().match_objects(s["sxy"], s["sflux"], s["ra"], s["dec"], s["rflux"], s["wcs"])
    for name in ("source_index", "ref_index", "distance_pix", "distance_arcsec"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
    assert (a.shift, a.rotation_deg, a.scale) == (b.shift, b.rotation_deg, b.scale)
    clone = pickle.loads(pickle.dumps(a))
    assert clone.source_index.tobytes() == a.source_index.tobytes()


# --- match_nearest ------------------------------------------------------------------------------------

def brute_nearest(x1, y1, x2, y2, r, unique):
    """Readable reference: full distance matrix, closest (lowest index on ties) within r."""
    d = np.hypot(x1[:, None] - x2[None, :], y1[:, None] - y2[None, :])
    d = np.where(np.isfinite(d), d, np.inf)
    idx = np.full(x1.size, -1)
    dist = np.full(x1.size, np.nan)
    for i in range(x1.size):
        if x2.size and d[i].min() <= r:
            idx[i] = int(np.argmin(d[i]))  # first minimum: lowest index
            dist[i] = d[i, idx[i]]
    if unique:
        for j in set(idx[idx >= 0].tolist()):
            claim = np.flatnonzero(idx == j)
            keep = claim[np.argmin(dist[claim])]
            for i in claim:
                if i != keep:
                    idx[i], dist[i] = -1, np.nan
    return idx, dist


coords = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=0, max_size=40)


@settings(max_examples=150, deadline=None)
@given(coords, coords, st.sampled_from([0.0, 1.0, 2.5, 7.0, 100.0]), st.booleans())
def test_match_nearest_equals_brute_force(p1, p2, radius, unique):
    # Integer-lattice points scaled by 0.5: exact ties in distance are common, so tie-breaking is tested.
    a = np.array(p1, dtype=float).reshape(-1, 2) * 0.5
    b = np.array(p2, dtype=float).reshape(-1, 2) * 0.5
    m = match_nearest(a[:, 0], a[:, 1], b[:, 0], b[:, 1], radius, unique=unique)
    idx, dist = brute_nearest(a[:, 0], a[:, 1], b[:, 0], b[:, 1], radius, unique)
    np.testing.assert_array_equal(m.index, idx)
    np.testing.assert_array_equal(m.distance, dist)


def test_match_nearest_nan_and_errors():
    m = match_nearest([0.0, np.nan, 5.0], [0.0, 1.0, 5.0], [0.3, 0.0, np.nan], [0.4, 1.0, 0.0], 1.0)
    np.testing.assert_array_equal(m.index, [0, -1, -1])
    assert m.distance[0] == pytest.approx(0.5) and np.isnan(m.distance[1:]).all()
    first, second, d = m.pairs()
    assert first.tolist() == [0] and second.tolist() == [0] and len(m) == 1
    with pytest.raises(ValueError, match="radius"):
        match_nearest([0.0], [0.0], [0.0], [0.0], -1.0)
    with pytest.raises(ValueError, match="differ"):
        match_nearest([0.0, 1.0], [0.0], [0.0], [0.0], 1.0)
    empty = match_nearest([1.0], [1.0], [], [], 1.0)
    assert empty.index.tolist() == [-1]


def test_match_nearest_spread_out_lists():
    """Few points over a huge extent: the grid stays small and the answer equals brute force."""
    rng = np.random.default_rng(5)
    a = rng.uniform(-1e6, 1e6, (50, 2))
    b = np.r_[a[:30] + rng.normal(0, 0.2, (30, 2)), rng.uniform(-1e6, 1e6, (20, 2))]
    m = match_nearest(a[:, 0], a[:, 1], b[:, 0], b[:, 1], 1.5)
    idx, dist = brute_nearest(a[:, 0], a[:, 1], b[:, 0], b[:, 1], 1.5, False)
    np.testing.assert_array_equal(m.index, idx)
    np.testing.assert_allclose(m.distance, dist)
    assert (m.index[:30] == np.arange(30)).all()


def test_match_nearest_sky():
    rng = np.random.default_rng(9)
    ra2 = 359.9 + rng.uniform(0, 0.2, 300)  # across RA = 0
    ra2 %= 360.0
    dec2 = 60.0 + rng.uniform(0, 0.2, 300)
    off = rng.normal(0, 0.05, (300, 2)) / 3600.0
    ra1 = ra2 + off[:, 0] / np.cos(np.radians(dec2))
    dec1 = dec2 + off[:, 1]
    m = match_nearest_sky(ra1, dec1, ra2, dec2, 0.25)
    assert (m.index == np.arange(300)).all()
    np.testing.assert_allclose(m.distance, angular_separation_arcsec(ra1, dec1, ra2, dec2), rtol=1e-9)
    np.testing.assert_allclose(m.distance, np.hypot(off[:, 0], off[:, 1]) * 3600.0, rtol=1e-3)
    far = match_nearest_sky(ra1 + 1.0 / 3600.0, dec1, ra2, dec2, 0.25)
    assert len(far) < 30
