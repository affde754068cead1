"""Unit tests of the finalize pieces that need no image: the reserve selection (bit-compatible with LSST's
recipe, recomputed independently here), the isolated-star concatenation (lsst-spec §4.4), the config
defaults (§4.2) and the lossless persistence of the per-visit PSF / ap-corr catalog. The tasks themselves
run on the simulator in tests/sim/test_finalize_sim.py."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
from astropy.table import Table
from hypothesis import given, settings
from hypothesis import strategies as st

from visitcal.core.apcorr import ApCorrMap
from visitcal.core.chebyshev import ChebyshevBoundedField
from visitcal.tasks.finalize_characterization import (
    ConsolidateFinalizeCharacterizationDetectorTask,
    FinalizeCharacterizationConfig,
    NoWorkFound,
    _make_psf_ap_corr_cat,
    concat_isolated_star_cats,
    read_psf_ap_corr_cat,
    write_psf_ap_corr_cat,
)
from visitcal.core.geom import Box2I
from visitcal.psf.pixel_grid import PixelGridPsf
from visitcal.psf.models import GaussianPsf
from visitcal.tasks.reserve_isolated_stars import ReserveIsolatedStarsConfig, ReserveIsolatedStarsTask, reserve_seed


def reference_reserve(nstar: int, band: str, tract: int, fraction: float = 0.1) -> np.ndarray:
    """LSST's recipe written out from lsst-spec §4.4 step 4, independently of the module: the seed from
    the hex digest, numpy's SeedSequence -> PCG64 generator built explicitly, its permutation of the
    boolean array (the same Fisher-Yates as Generator.shuffle)."""
    name = "reserved" + "_" + band + "_" + str(tract)
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
    seed = int(digest, 16) % (1 << 32)
    flags = np.array([k < int(nstar * fraction) for k in range(nstar)], dtype=bool)
    gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    return gen.permutation(flags)


def test_reserve_seed_is_the_low_32_bits_of_the_digest():
    # hex digest of b"reserved_r_9813", low 8 hex digits
    digest = hashlib.sha256(b"reserved_r_9813").hexdigest()
    assert reserve_seed("reserved_r_9813") == int(digest[-8:], 16)
    assert ReserveIsolatedStarsTask().name("r_9813") == "reserved_r_9813"
    # LSST always joins name and extra with "_": the empty extra gives "reserved_" (we used to drop the "_")
    assert ReserveIsolatedStarsTask().name() == "reserved_"
    assert ReserveIsolatedStarsTask().name("") == "reserved_"


def _lsst_recipe(name: str, nstar: int, fraction: float = 0.1) -> np.ndarray:
    """The spec's recipe (lsst-spec §4.4 step 4) with hashlib and numpy only: seed = low 32 bits of the SHA-256
    hex digest of the UTF-8 name; the first floor(f N) of N False flags set True; shuffled in place by
    ``numpy.random.default_rng(seed)``."""
    seed = int("0x" + hashlib.sha256(name.encode("UTF-8")).hexdigest(), 0) & 0xFFFFFFFF
    flags = np.zeros(nstar, dtype=bool)
    flags[: int(nstar * fraction)] = True
    np.random.default_rng(seed).shuffle(flags)
    return flags


@pytest.mark.parametrize("nstar", [10, 57, 400, 3001])
def test_reserve_with_empty_extra_is_seeded_by_reserved_underscore(nstar):
    """The empty ``extra`` seeds from "reserved_" (LSST joins them always), not from "reserved": our draw equals
    the recipe on "reserved_" and (for these N) differs from the old one on "reserved"."""
    got = ReserveIsolatedStarsTask().run(nstar)
    assert np.array_equal(got, _lsst_recipe("reserved_", nstar))
    assert got.sum() == nstar // 10
    assert not np.array_equal(got, _lsst_recipe("reserved", nstar))
    # a custom prefix: "<prefix>_"
    task = ReserveIsolatedStarsTask(ReserveIsolatedStarsConfig(reserve_name="psf_reserve", reserve_fraction=0.2))
    assert np.array_equal(task.run(nstar, extra=""), _lsst_recipe("psf_reserve_", nstar, 0.2))


def test_reserved_set_on_a_hand_built_isolated_star_table():
    """A hand-built tract of 60 isolated stars (rows in the table's order; 12 never seen in r) and the r-band
    sources of visit 5: the reserved stars are those the recipe on "reserved_r_9813" picks among the 48 stars
    with nsource_r > 0, in the table's row order, and every source carries its star's flag."""
    n = 60
    nsource_r = np.array([0 if i % 5 == 3 else 1 + i % 3 for i in range(n)], np.int32)
    stars = Table({"isolated_star_id": np.arange(100, 100 + n, dtype=np.int64),
                   "nsource_r": nsource_r, "nsource_g": np.ones(n, np.int32)})
    obj, visit, det = [], [], []
    for i in range(n):
        for k in range(int(nsource_r[i])):
            obj.append(i)
            visit.append(5 if k == 0 else 6)
            det.append(i % 2)
    src = Table({"sourceId": np.arange(len(obj), dtype=np.int64) + 7000, "obj_index": np.array(obj, np.int64),
                 "visit": np.array(visit, np.int64), "detector": np.array(det, np.int32)})
    out = concat_isolated_star_cats("r", {9813: stars}, {9813: src}, visit=5)
    use_band = [i for i in range(n) if nsource_r[i] > 0]
    assert len(use_band) == 48
    flags = _lsst_recipe("reserved_r_9813", len(use_band))
    assert flags.sum() == 4
    expected_reserved_stars = {use_band[j] for j in np.flatnonzero(flags)}
    # every star with an r source has one in visit 5 (its first): the output covers all 48 stars once
    assert len(out) == 48
    got_reserved_stars = {int(src["obj_index"][src["sourceId"] == sid][0])
                          for sid, r in zip(out["sourceId"], out["reserved"]) if r}
    assert got_reserved_stars == expected_reserved_stars
    for sid, j, r in zip(out["sourceId"], out["obj_index"], out["reserved"]):
        assert int(src["obj_index"][src["sourceId"] == sid][0]) == use_band[int(j)]
        assert bool(r) == bool(flags[int(j)])


@pytest.mark.parametrize("nstar,band,tract", [(0, "r", 9813), (1, "g", 1), (9, "i", 2), (10, "r", 9813),
                                              (1234, "z", 9814), (50001, "u", 0)])
def test_reserve_bit_for_bit(nstar, band, tract):
    got = ReserveIsolatedStarsTask().run(nstar, extra=f"{band}_{tract}")
    ref = reference_reserve(nstar, band, tract)
    assert got.dtype == bool and got.shape == (nstar,)
    assert np.array_equal(got, ref)
    assert got.sum() == nstar // 10


@settings(max_examples=60, deadline=None)
@given(nstar=st.integers(0, 5000), tract=st.integers(0, 20000), band=st.sampled_from("ugrizy"),
       fraction=st.sampled_from([0.0, 0.05, 0.1, 0.25, 1.0]))
def test_reserve_fraction_is_exact(nstar, tract, band, fraction):
    task = ReserveIsolatedStarsTask(ReserveIsolatedStarsConfig(reserve_fraction=fraction))
    flags = task.run(nstar, extra=f"{band}_{tract}")
    assert flags.sum() == int(nstar * fraction)
    assert np.array_equal(flags, reference_reserve(nstar, band, tract, fraction))
    # deterministic: the same name gives the same draw
    assert np.array_equal(flags, task.run(nstar, extra=f"{band}_{tract}"))


def _tract_tables(rng, n_stars, visits, detectors, band="r", other_band="g", tract_seed=0):
    """A star table (some stars only seen in other_band) and its source table, sorted by star."""
    nb = rng.integers(0, 3, n_stars)          # sources in band
    nb[rng.random(n_stars) < 0.2] = 0         # stars never seen in `band`
    ng = rng.integers(0, 2, n_stars)
    ng[nb + ng == 0] = 1
    rows = []
    for i in range(n_stars):
        for _ in range(nb[i]):
            rows.append((i, rng.choice(visits), rng.choice(detectors), band))
        for _ in range(ng[i]):
            rows.append((i, rng.choice(visits), rng.choice(detectors), other_band))
    src = Table(rows=rows, names=("obj_index", "visit", "detector", "band"))
    src["sourceId"] = np.arange(len(src), dtype=np.int64) + 1000 * (tract_seed + 1) * 1000
    stars = Table()
    stars["isolated_star_id"] = np.arange(n_stars, dtype=np.int64)
    stars["ra"] = rng.uniform(0, 1, n_stars)
    stars["dec"] = rng.uniform(0, 1, n_stars)
    stars["primary_band"] = np.full(n_stars, band)
    stars["nsource"] = (nb + ng).astype(np.int32)
    stars["source_cat_index"] = np.zeros(n_stars, np.int64)
    stars[f"nsource_{band}"] = nb.astype(np.int32)
    stars[f"nsource_{other_band}"] = ng.astype(np.int32)
    return stars, src


def test_concat_isolated_star_cats_reindexes_and_reserves():
    rng = np.random.default_rng(3)
    cats, srcs = {}, {}
    for k, tract in enumerate((9814, 9813)):   # unsorted on purpose
        cats[tract], srcs[tract] = _tract_tables(rng, 300 + 50 * k, [10, 11, 12], [0, 1, 2], tract_seed=k)
    reserve = ReserveIsolatedStarsTask()
    out = concat_isolated_star_cats("r", cats, srcs, visit=11, detector=1, reserve_selection=reserve)
    # independent expectation, tract by tract in sorted order
    expected_ids, expected_obj, expected_res = [], [], []
    offset = 0
    for tract in sorted(cats):
        stars, src = cats[tract], srcs[tract]
        use = np.flatnonzero(np.asarray(stars["nsource_r"]) > 0)
        pos = {int(i): j for j, i in enumerate(use)}
        res = reference_reserve(use.size, "r", tract)
        for row in src:
            if row["visit"] == 11 and row["detector"] == 1 and int(row["obj_index"]) in pos:
                j = pos[int(row["obj_index"])]
                expected_ids.append(int(row["sourceId"]))
                expected_obj.append(j + offset)
                expected_res.append(bool(res[j]))
        offset += use.size
    assert list(out["sourceId"]) == expected_ids
    assert list(out["obj_index"]) == expected_obj
    assert list(out["reserved"]) == expected_res
    assert set(out.colnames) >= {"sourceId", "obj_index", "visit", "detector", "tract", "reserved"}
    assert np.all(out["visit"] == 11) and np.all(out["detector"] == 1)


def test_concat_reserve_is_the_same_in_every_visit():
    rng = np.random.default_rng(4)
    stars, src = _tract_tables(rng, 500, [1, 2, 3, 4], [0, 1])
    flags = {}
    for visit in (1, 2, 3, 4):
        out = concat_isolated_star_cats("r", {7: stars}, {7: src}, visit=visit)
        for sid, flag in zip(out["sourceId"], out["reserved"]):
            star = int(src["obj_index"][np.flatnonzero(src["sourceId"] == sid)[0]])
            flags.setdefault(star, set()).add(bool(flag))
    assert all(len(v) == 1 for v in flags.values())
    n_band = int(np.sum(np.asarray(stars["nsource_r"]) > 0))
    reserved_stars = sum(v == {True} for v in flags.values())
    # every band star with a source in these visits keeps the flag of the tract-level draw
    assert reserved_stars <= n_band // 10


def test_concat_empty_and_errors():
    rng = np.random.default_rng(5)
    stars, src = _tract_tables(rng, 40, [1], [0])
    empty = concat_isolated_star_cats("r", {1: stars}, {1: src}, visit=99)
    assert len(empty) == 0 and "reserved" in empty.colnames
    assert len(concat_isolated_star_cats("y", {1: stars}, {1: src}, visit=1)) == 0  # no nsource_y column
    with pytest.raises(ValueError, match="tracts"):
        concat_isolated_star_cats("r", {1: stars}, {2: src}, visit=1)
    with pytest.raises(KeyError, match="detector"):
        concat_isolated_star_cats("r", {1: stars}, {1: src[["sourceId", "obj_index", "visit"]]}, visit=1, detector=0)


def test_config_defaults_follow_lsst():
    c = FinalizeCharacterizationConfig()
    assert c.id_column == "sourceId"
    assert c.reserve_selection.reserve_fraction == 0.1 and c.reserve_selection.reserve_name == "reserved"
    sel = c.source_selector
    assert sel.do_flags and sel.do_signal_to_noise and not sel.do_unresolved and not sel.do_isolated
    assert sel.signal_to_noise.flux_field == "base_GaussianFlux_instFlux"
    assert (sel.signal_to_noise.minimum, sel.signal_to_noise.maximum) == (50.0, 1000.0)
    assert "slot_Centroid_flag" in sel.flags.bad and "base_GaussianFlux_flag" in sel.flags.bad
    assert c.make_psf_candidates.stamp_size == 27 and c.make_psf_candidates.max_candidates == 300
    assert c.psf_determiner.name == "pixelgrid" and c.psf_determiner.pixelgrid.stamp_size == 25
    mac = c.measure_ap_corr.source_selector
    assert not mac.do_flags and not mac.do_unresolved and mac.do_signal_to_noise
    assert mac.signal_to_noise.flux_field == "base_PsfFlux_instFlux" and mac.signal_to_noise.minimum == 200.0
    assert mac.signal_to_noise.maximum is None
    assert c.measure_ap_corr.ref_flux_name == "slot_CalibFlux"
    assert c.measurement.slots.centroid is None and c.measurement.slots.calib_flux is None
    with pytest.raises(ValueError):
        FinalizeCharacterizationConfig(psf_determiner={"name": "piff"})
    with pytest.raises(ValueError):
        FinalizeCharacterizationConfig(no_such_field=1)
    assert pickle.loads(pickle.dumps(c)) == c


def _pixel_grid_psf(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-12:13, -12:13]
    base = np.exp(-(xx**2 + yy**2) / (2 * 2.0**2))
    coeffs = np.stack([base / base.sum()] + [rng.normal(0, 1e-4, base.shape) for _ in range(5)])
    return PixelGridPsf(coeffs, sampling_size=1.0, interpolant_order=11, spatial_order=2,
                        box=(0.0, 2047.0, 0.0, 2047.0), draw_size=25, average_position=(1010.3, 987.1))


def _ap_corr_map(seed=0):
    rng = np.random.default_rng(seed)
    box = Box2I(0, 0, 2047, 2047)
    return ApCorrMap({"base_PsfFlux_instFlux": ChebyshevBoundedField(box, 1 + rng.normal(0, 0.01, (3, 3))),
                      "base_PsfFlux_instFluxErr": ChebyshevBoundedField(box, np.array([[0.0031]]))})


def test_psf_ap_corr_cat_round_trip_is_lossless(tmp_path):
    psfs = [_pixel_grid_psf(0), None, GaussianPsf(1.7, average_position=(3.0, 4.0)), _pixel_grid_psf(1)]
    maps = [_ap_corr_map(0), None, None, _ap_corr_map(1)]
    cat = _make_psf_ap_corr_cat([0, 3, 7, 12], [1000] * 4, psfs, maps,
                                ["ok", "psf_too_few_stars", "ap_corr_failed", "ok"],
                                ["", "too few PSF stars", "unable to measure", ""])
    path = write_psf_ap_corr_cat(cat, tmp_path / "refit_psf_models.fits")
    back = read_psf_ap_corr_cat(path)
    assert list(back["detector"]) == [0, 3, 7, 12] and back["detector"].dtype == np.int32
    assert list(back["visit"]) == [1000] * 4 and back["visit"].dtype == np.int64
    assert list(back["status"]) == list(cat["status"]) and list(back["message"]) == list(cat["message"])
    rng = np.random.default_rng(9)
    for a, b in zip(cat, back):
        assert (a["psf"] is None) == (b["psf"] is None) and (a["ap_corr_map"] is None) == (b["ap_corr_map"] is None)
        if a["psf"] is not None:
            assert type(a["psf"]) is type(b["psf"])
            for x, y in rng.uniform(0, 2047, (5, 2)):
                assert np.array_equal(a["psf"].compute_image(x, y), b["psf"].compute_image(x, y))
                assert a["psf"].compute_shape(x, y) == b["psf"].compute_shape(x, y)
            assert a["psf"].average_position == b["psf"].average_position
        if a["ap_corr_map"] is not None:
            assert a["ap_corr_map"] == b["ap_corr_map"]
            x, y = rng.uniform(0, 2047, (2, 50))
            for key in a["ap_corr_map"]:
                assert np.array_equal(a["ap_corr_map"][key].evaluate(x, y), b["ap_corr_map"][key].evaluate(x, y))
    # same catalog -> same bytes
    path2 = write_psf_ap_corr_cat(back, tmp_path / "again.fits")
    assert path.read_bytes() == path2.read_bytes()


def test_consolidate_checks_its_inputs():
    task = ConsolidateFinalizeCharacterizationDetectorTask()
    with pytest.raises(NoWorkFound):
        task.run(psf_ap_corr_detector_dict={}, src_detector_table_dict={})
    cat = _make_psf_ap_corr_cat([1], [5], [None], [None], ["psf_fit_failed"], ["x"])
    with pytest.raises(ValueError, match="detectors"):
        task.run(psf_ap_corr_detector_dict={1: cat}, src_detector_table_dict={2: Table({"a": [1]})})
    with pytest.raises(ValueError, match="rows for it"):
        task.run(psf_ap_corr_detector_dict={2: cat}, src_detector_table_dict={2: Table({"a": [1]})})
    out = task.run(psf_ap_corr_detector_dict={1: cat}, src_detector_table_dict={1: Table({"a": [1, 2]})})
    assert list(out.psf_ap_corr_cat["detector"]) == [1] and len(out.output_table) == 2
