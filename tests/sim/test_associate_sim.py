"""The associate step (``visitcal associate``) on a calibrated simulated repository, against the
simulator's truth (issue 8).

The repository (module fixture, ~25 s): 3 dithered visits x 2 detectors of 1024 x 1024 px, one snap, a rich
star field (60000 stars/deg^2 to r = 24.5), calibrated with the ``sparse`` preset; one band (r), so every
star's primary band is r.

Truths:

* every isolated star is a true star (the nearest truth object, within 0.1", is a star) and truly isolated:
  no other truth object within the 2" isolation radius brighter than 1.5 mag fainter than the star (fainter
  neighbours are neither detected nor deblended at this depth, so the association cannot see them);
* each star's ``nsource_r`` equals the number of (visit, detector) whose single_visit_star has a source
  passing the §3 selector within 1" of the star's *true* position (selector and matching recomputed here
  with numpy), and never exceeds the number of (visit, detector) where the truth puts the star on the
  detector;
* the source table's rows point back to single_visit_star rows (``sourceId`` == ``id`` at ``source_row``),
  with positions within 1" of their star;
* most bright isolated truth stars (18.5 < r < 21, S/N well inside 8..1000, 40 px from the edges in some
  visit, nothing within 3") are found.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from visitcal.cli import main
from visitcal.io import read_catalog
from visitcal.tasks.isolated_star_association import IsolatedStarAssociationConfig, star_columns
from visitcal.pipeline.associate_step import run_associate
from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate
from visitcal.pipeline.repository import Repository
from visitcal.sim import SimConfig, SimRepository, simulate
from visitcal.measurement.source_selector import ScienceSourceSelectorTask

SIM = SimConfig(preset="small", n_visits=3, n_detectors=2, detector_width=1024, detector_height=1024, n_snaps=1,
                seed=5, star_density=60000.0, galaxy_density=20000.0)
W = 1024


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("assoc") / "repo"
    simulate(SIM, root)
    statuses = run_calibrate(root, config=CalibrateStepConfig.preset("sparse"))
    assert all(s.ok for s in statuses)
    return root


@pytest.fixture(scope="module")
def associated(calibrated):
    statuses = run_associate(calibrated)
    return calibrated, statuses


def sep_arcsec(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = (np.radians(np.asarray(v, np.float64)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin(0.5 * (d2 - d1)) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(0.5 * (r2 - r1)) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600.0


def unique_truth(sim):
    o = sim.objects()
    _, first = np.unique(np.asarray(o["id"]), return_index=True)
    return o, o[np.sort(first)]


def test_outputs_provenance_and_skymap(associated):
    root, statuses = associated
    assert len(statuses) == 1 and statuses[0].ok
    st = statuses[0]
    sky = json.loads((root / "skymap.json").read_text())
    assert sky["n_tracts_per_side"] == 11 and st.tract == 60  # the default map's centre tract
    assert abs(sky["ra0"] - SIM.field_ra) < 0.05 and abs(sky["dec0"] - SIM.field_dec) < 0.05
    repo = Repository(root)
    stars = read_catalog(repo.tract_dataset_path("isolated_star_association", 60, "parquet"))
    srcs = read_catalog(repo.tract_dataset_path("isolated_star", 60, "parquet"))
    assert stars.colnames == star_columns(IsolatedStarAssociationConfig().band_order)
    assert st.summary["n_stars"] == len(stars) > 100 and st.summary["n_sources"] == len(srcs)
    assert st.summary["n_inputs"] == 6 and set(stars["primary_band"]) == {"r"}
    assert json.loads(repo.tract_status_path("associate", 60).read_text())["status"] == "ok"
    # ids: n_tracts = 121 -> (i + 1) * 1000 + 60
    np.testing.assert_array_equal(stars["isolated_star_id"], (np.arange(len(stars)) + 1) * 1000 + 60)


def test_stars_are_true_isolated_stars_with_the_right_counts(associated):
    root, _ = associated
    sim = SimRepository(root)
    repo = Repository(root)
    stars = read_catalog(repo.tract_dataset_path("isolated_star_association", 60, "parquet"))
    truth_all, truth = unique_truth(sim)
    tra, tdec, tmag = (np.asarray(truth[c], np.float64) for c in ("ra", "dec", "mag"))
    d = sep_arcsec(np.asarray(stars["ra"])[:, None], np.asarray(stars["dec"])[:, None], tra[None, :], tdec[None, :])
    nearest = np.argmin(d, axis=1)
    assert np.all(d[np.arange(len(stars)), nearest] < 0.1)
    assert np.all(truth["is_star"][nearest])
    for k, t in enumerate(nearest):
        others = (d[k] < 2.0) & (np.arange(len(truth)) != t)
        assert not np.any(tmag[others] < tmag[t] + 1.5), f"star {k} has a bright truth neighbour"

    # nsource_r against an independent count over the single_visit_star tables
    selector = ScienceSourceSelectorTask(IsolatedStarAssociationConfig().source_selector)
    expected = np.zeros(len(stars), int)
    for (visit, detector), path in repo.single_visit_star_paths().items():
        t = read_catalog(path)
        keep = selector.run(t)
        # a deblended child counts only without another detected (childless) source within 2" (brute force)
        ara, adec = np.degrees(np.asarray(t["coord_ra"])), np.degrees(np.asarray(t["coord_dec"]))
        leaf = np.flatnonzero(np.asarray(t["deblend_nChild"]) == 0)
        for i in np.flatnonzero(keep & (np.asarray(t["parent"]) != 0)):
            others = leaf[leaf != i]
            keep[i] = not np.any(sep_arcsec(ara[i], adec[i], ara[others], adec[others]) < 2.0)
        ra, dec = ara[keep], adec[keep]
        if ra.size:
            dd = sep_arcsec(tra[nearest][:, None], tdec[nearest][:, None], ra[None, :], dec[None, :])
            expected += np.any(dd < 1.0, axis=1)
    np.testing.assert_array_equal(stars["nsource_r"], expected)
    np.testing.assert_array_equal(stars["nsource"], expected)
    assert np.count_nonzero(expected > 1) > 50  # the association really joins visits
    on_chip = np.array([np.count_nonzero((truth_all["id"] == truth["id"][t]) & truth_all["inside"]) for t in nearest])
    assert np.all(stars["nsource"] <= on_chip)

    # completeness on bright, truly isolated stars well inside a detector
    lone = np.array([np.count_nonzero(sep_arcsec(tra[i], tdec[i], tra, tdec) < 3.0) == 1 for i in range(len(truth))])
    inner = (truth_all["x"] > 40) & (truth_all["x"] < W - 41) & (truth_all["y"] > 40) & (truth_all["y"] < W - 41)
    well_inside = np.isin(truth["id"], truth_all["id"][inner])
    cand = np.asarray(truth["is_star"]) & (tmag > 18.5) & (tmag < 21.0) & lone & well_inside
    found = np.isin(np.asarray(truth["id"])[cand], np.asarray(truth["id"])[nearest])
    assert cand.sum() > 30 and found.mean() > 0.85, (cand.sum(), found.mean())


def test_sources_point_back_to_single_visit_star_rows(associated):
    root, _ = associated
    repo = Repository(root)
    stars = read_catalog(repo.tract_dataset_path("isolated_star_association", 60, "parquet"))
    srcs = read_catalog(repo.tract_dataset_path("isolated_star", 60, "parquet"))
    paths = repo.single_visit_star_paths()
    tables = {k: read_catalog(p) for k, p in paths.items()}
    for (visit, detector), t in tables.items():
        sel = (srcs["visit"] == visit) & (srcs["detector"] == detector)
        rows = np.asarray(srcs["source_row"][sel])
        np.testing.assert_array_equal(srcs["sourceId"][sel], t["id"][rows])
        np.testing.assert_allclose(srcs["ra"][sel], np.degrees(t["coord_ra"][rows]), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(srcs["normCompTophatFlux_instFlux"][sel],
                                      t["base_NormalizedCompensatedTophatFlux_instFlux"][rows])
    obj = np.asarray(srcs["obj_index"])
    assert np.all(np.diff(obj) >= 0) and len(np.unique(srcs["sourceId"])) == len(srcs)
    np.testing.assert_array_equal(stars["source_cat_index"], np.searchsorted(obj, np.arange(len(stars))))
    assert np.all(sep_arcsec(srcs["ra"], srcs["dec"], stars["ra"][obj], stars["dec"][obj]) <= 1.0)


def test_rerun_skips_overwrite_redoes_and_cli(associated, tmp_path, capsys):
    root, statuses = associated
    repo = Repository(root)
    star_path = repo.tract_dataset_path("isolated_star_association", 60, "parquet")
    before = star_path.read_bytes()
    mtime = star_path.stat().st_mtime_ns
    again = run_associate(root)
    assert again[0].timings == statuses[0].timings and star_path.stat().st_mtime_ns == mtime
    assert main(["associate", str(root), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 tracts associated from 6 detectors" in out
    assert star_path.read_bytes() == before  # deterministic: the same bytes
    # a tract without sources gets empty tables; a tract outside the map is an error
    assert run_associate(root, tracts=[59])[0].summary["n_stars"] == 0
    assert len(read_catalog(repo.tract_dataset_path("isolated_star_association", 59, "parquet"))) == 0
    with pytest.raises(ValueError, match="tract 500"):
        run_associate(root, tracts=[500])
    # a repository that is not calibrated: exit 1 with a message
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["associate", str(empty)]) == 1
    assert "no calibrated single_visit_star" in capsys.readouterr().err


def test_declared_skymap_and_failed_calibration_are_respected(calibrated, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(calibrated, root, ignore=shutil.ignore_patterns("post_isr_image", "preliminary_visit_image*",
                                                                    "isolated_star*", "associate", "skymap.json"))
    # a declared sky map with small tracts: the field spreads over several
    (root / "skymap.json").write_text(json.dumps({"type": "simple", "ra0": 150.0, "dec0": -30.0,
                                                  "tract_size_deg": 0.05, "n_tracts_per_side": 21}))
    # one detector's calibration failed: its sources are not used
    status_path = Repository(root).status_path("calibrate", 1000, 0)
    doc = json.loads(status_path.read_text())
    doc["status"] = "failed"
    status_path.write_text(json.dumps(doc))
    statuses = run_associate(root)
    assert len(statuses) > 1 and all(s.ok for s in statuses)
    assert all([1000, 0] not in [i[:2] for i in s.summary["inputs"]] for s in statuses)
    repo = Repository(root)
    ids = np.concatenate([np.asarray(read_catalog(repo.tract_dataset_path("isolated_star_association", s.tract,
                                                                           "parquet"))["isolated_star_id"])
                          for s in statuses])
    assert len(np.unique(ids)) == len(ids)  # unique across tracts (n_tracts = 441 -> factor 1000)
    assert set(ids % 1000) == {s.tract for s in statuses if s.summary["n_stars"]}


def test_a_corrupted_table_fails_exactly_the_tracts_it_reaches(calibrated, tmp_path):
    """Issue 20, fault isolation: with small tracts, one single_visit_star overwritten with garbage fails
    the tracts its sources reach (placed by the sky extent calibrate recorded; each tract reads its own
    tables), naming the file; the other tracts are untouched and stay ok."""
    from visitcal.core.skymap import load_skymap
    from visitcal.pipeline.associate_step import tracts_of_boundary
    from visitcal.pipeline.repository import SKIPPED

    root = tmp_path / "repo"
    shutil.copytree(calibrated, root, ignore=shutil.ignore_patterns("post_isr_image", "preliminary_visit_image*",
                                                                    "isolated_star*", "associate", "skymap.json"))
    (root / "skymap.json").write_text(json.dumps({"type": "simple", "ra0": 150.0, "dec0": -30.0,
                                                  "tract_size_deg": 0.05, "n_tracts_per_side": 21}))
    good = {s.tract: s for s in run_associate(root)}
    assert len(good) > 3 and all(s.ok for s in good.values())
    repo = Repository(root)
    visit, detector = 1001, 1
    bad = repo.dataset_path("single_visit_star", visit, detector, "parquet")
    table = read_catalog(bad, columns=["coord_ra", "coord_dec"])
    skymap = load_skymap(root / "skymap.json")
    reached = set(skymap.find_tracts(np.degrees(table["coord_ra"]), np.degrees(table["coord_dec"])))
    boundary = repo.read_status("calibrate", visit, detector).summary["sky_boundary"]
    assert set(tracts_of_boundary(skymap, boundary)) == reached  # the recorded extent places it exactly
    assert 1 < len(reached) < len(good)
    bad.write_bytes(np.random.default_rng(1).bytes(bad.stat().st_size))
    again = {s.tract: s for s in run_associate(root)}
    assert set(again) == set(good)
    assert {t for t, s in again.items() if not s.ok} == reached
    for tract in reached:
        assert again[tract].error_type == "UnreadableInputError"
        assert str(bad) in again[tract].message and f"visit {visit} detector {detector}" in again[tract].message
    assert all(again[t].ok and again[t].action == SKIPPED for t in set(good) - reached)
