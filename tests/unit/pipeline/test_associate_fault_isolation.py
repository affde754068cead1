"""The associate step isolates a bad input (issue 20): each tract unit reads its own ``single_visit_star``
tables, the planning phase reads only their coordinate columns, and a table that cannot be read fails exactly
the tracts it reaches (placed by the sky extent calibrate recorded), naming the file, while the other tracts
finish; a table about which nothing is known fails every tract.

The repository is synthetic (no GalSim): a declared sky map of 0.1-degree tracts and two visits of three
square detectors laid out on its tangent plane, each a grid of bright point sources reaching the edges of its
square, so that the tracts a detector's sources reach and those its footprint reaches are the same:

======== =============================== ==================
detector footprint (xi, eta), deg         tracts
======== =============================== ==================
0        [-0.02, 0.02] x [-0.02, 0.02]   12
1        [0.03, 0.07] x [-0.02, 0.02]    12, 13
2        [0.13, 0.17] x [0.03, 0.07]     13, 14, 18, 19
======== =============================== ==================

(tract (i, j) has its outer region within 0.055 deg of ``(0.1 i, 0.1 j)``; id ``(j + 2) * 5 + (i + 2)``.)
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.table import Table

from visitcal.core.geom import Box2I
from visitcal.core.skymap import SimpleSkyMap, default_skymap, load_skymap, write_skymap
from visitcal.core.wcs import make_tan_sip_wcs, pixel_to_sky
from visitcal.io import read_catalog, write_catalog
from visitcal.pipeline import associate_step
from visitcal.pipeline.finalize_step import _isolated_star_paths
from visitcal.pipeline.associate_step import run_associate, summary_lines, tracts_of_boundary
from visitcal.pipeline.calibrate_step import sky_boundary
from visitcal.pipeline.repository import SKIPPED, Repository, UnitStatus

SKY = SimpleSkyMap(ra0=150.0, dec0=-30.0, tract_size_deg=0.1, tract_overlap_deg=0.005, n_tracts_per_side=5)
VISITS = (1, 2)
#: detector -> (xi0, xi1, eta0, eta1) on the sky map's tangent plane, deg
FOOTPRINTS = {0: (-0.02, 0.02, -0.02, 0.02), 1: (0.03, 0.07, -0.02, 0.02), 2: (0.13, 0.17, 0.03, 0.07)}
TRACTS = {0: {12}, 1: {12, 13}, 2: {13, 14, 18, 19}}
ALL_TRACTS = [12, 13, 14, 18, 19]


def single_visit_star(ra, dec, visit, detector) -> Table:
    """A single_visit_star of point sources passing the association's selector (afw names, radians)."""
    n = len(ra)
    t = Table()
    t["id"] = np.arange(n, dtype=np.int64) + (visit * 1000 + detector) * 10000 + 1
    t["parent"] = np.zeros(n, np.int64)
    t["deblend_nChild"] = np.zeros(n, np.int32)
    t["detect_isPrimary"] = np.ones(n, bool)
    t["coord_ra"] = np.radians(ra)
    t["coord_dec"] = np.radians(dec)
    t["base_SdssCentroid_x"] = np.linspace(10, 100, n)
    t["base_SdssCentroid_y"] = np.linspace(20, 200, n)
    t["base_SdssCentroid_xErr"] = np.full(n, 0.01, np.float32)
    t["base_SdssCentroid_yErr"] = np.full(n, 0.02, np.float32)
    t["base_SdssCentroid_flag"] = np.zeros(n, bool)
    for f in ("edge", "interpolatedCenter", "saturatedCenter", "crCenter", "bad", "interpolated", "saturated"):
        t[f"base_PixelFlags_flag_{f}"] = np.zeros(n, bool)
    t["base_NormalizedCompensatedTophatFlux_instFlux"] = np.full(n, 1000.0)
    t["base_NormalizedCompensatedTophatFlux_instFluxErr"] = np.full(n, 10.0)
    t["base_NormalizedCompensatedTophatFlux_flag"] = np.zeros(n, bool)
    t["base_ClassificationSizeExtendedness_value"] = np.zeros(n)
    for r in ("12_0", "17_0"):
        t[f"base_CircularApertureFlux_{r}_instFlux"] = np.full(n, 900.0)
        t[f"base_CircularApertureFlux_{r}_instFluxErr"] = np.full(n, 9.0)
        t[f"base_CircularApertureFlux_{r}_flag"] = np.zeros(n, bool)
    t["base_LocalBackground_instFlux"] = np.full(n, 0.5)
    t["base_LocalBackground_flag"] = np.zeros(n, bool)
    t["base_SdssShape_xx"] = np.full(n, 4.0)
    t["base_SdssShape_yy"] = np.full(n, 4.5)
    t["base_SdssShape_xy"] = np.full(n, 0.1)
    t["visit"] = np.full(n, visit, np.int64)
    t["detector"] = np.full(n, detector, np.int16)
    t["band"] = np.full(n, "r")
    t["physical_filter"] = np.full(n, "r_sim")
    t.meta["slots"] = {"Centroid": "base_SdssCentroid", "Shape": "base_SdssShape",
                       "CalibFlux": "base_NormalizedCompensatedTophatFlux"}
    return t


def footprint_boundary(detector) -> list[list[float]]:
    """The footprint's corners and edge midpoints, counter-clockwise, as calibrate records them."""
    x0, x1, y0, y1 = FOOTPRINTS[detector]
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    ra, dec = SKY.deproject([x0, xm, x1, x1, x1, xm, x0, x0], [y0, y0, y0, ym, y1, y1, y1, ym])
    return [[float(r), float(d)] for r, d in zip(ra, dec)]


def make_repo(root):
    """The synthetic calibrated repository (see the module docstring)."""
    root.mkdir()
    repo = Repository(root)
    write_skymap(SKY, root / "skymap.json")
    for visit in VISITS:
        for detector, (x0, x1, y0, y1) in FOOTPRINTS.items():
            xi, eta = np.meshgrid(np.linspace(x0, x1, 11), np.linspace(y0, y1, 11))
            ra, dec = SKY.deproject(xi.ravel(), eta.ravel() + 0.1 / 3600 * (visit - 1))  # 0.1" between visits
            path = repo.dataset_path("single_visit_star", visit, detector, "parquet")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_catalog(single_visit_star(ra, dec, visit, detector), path)
            repo.write_status(UnitStatus(step="calibrate", visit=visit, detector=detector, status="ok",
                                         config_hash="c0ffee", summary={"sky_boundary": footprint_boundary(detector)}))
    return repo


@pytest.fixture(scope="module")
def associated(tmp_path_factory):
    """The repository associated once: ``(root, {tract: status})``."""
    root = tmp_path_factory.mktemp("assoc") / "repo"
    make_repo(root)
    return root, {s.tract: s for s in run_associate(root)}


@pytest.fixture
def repo_copy(associated, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(associated[0], root)
    return Repository(root)


def corrupt(path) -> None:
    path.write_bytes(b"not a parquet file, garbage " * 40)


def test_every_tract_reads_the_tables_its_sources_reach(associated):
    root, statuses = associated
    assert sorted(statuses) == ALL_TRACTS and all(s.status == "ok" for s in statuses.values())
    for tract, status in statuses.items():
        expected = sorted((v, d) for v in VISITS for d, tracts in TRACTS.items() if tract in tracts)
        assert sorted((v, d) for v, d, _ in status.summary["inputs"]) == expected, tract
        assert status.summary["n_stars"] > 0
        assert "read" in status.timings  # read by the unit itself


def test_planning_reads_only_coordinates_and_each_unit_its_own_tables(associated, tmp_path, monkeypatch):
    root = tmp_path / "repo"
    shutil.copytree(associated[0], root)
    reads = []   # (unit's tract or None, file name, columns)
    current = {"tract": None}
    real_read, real_unit = associate_step.read_catalog, associate_step.associate_tract

    def recording_read(path, **kwargs):
        reads.append((current["tract"], str(path).rsplit("/", 1)[-1], kwargs.get("columns")))
        return real_read(path, **kwargs)

    def recording_unit(root, tract, *args):
        current["tract"] = tract
        try:
            return real_unit(root, tract, *args)
        finally:
            current["tract"] = None

    monkeypatch.setattr(associate_step, "read_catalog", recording_read)
    monkeypatch.setattr(associate_step, "associate_tract", recording_unit)
    statuses = run_associate(root, overwrite=True)
    assert all(s.status == "ok" for s in statuses)
    planning = [r for r in reads if r[0] is None]
    assert len(planning) == len(VISITS) * len(FOOTPRINTS)
    assert all(columns == ["coord_ra", "coord_dec"] for _, _, columns in planning)
    for tract in ALL_TRACTS:
        mine = sorted(name for t, name, columns in reads if t == tract and columns is None)
        assert mine == sorted(f"single_visit_star_{v:06d}_{d:03d}.parquet" for v in VISITS
                              for d, tracts in TRACTS.items() if tract in tracts), tract


@pytest.mark.parametrize("executor", [None, "threads"])
def test_an_unreadable_table_fails_exactly_the_tracts_it_reaches(associated, repo_copy, executor):
    root, good = associated
    bad = repo_copy.dataset_path("single_visit_star", 2, 2, "parquet")
    ra, dec = (np.degrees(np.asarray(read_catalog(bad)[c])) for c in ("coord_ra", "coord_dec"))
    reached = set(SKY.find_tracts(ra, dec))
    assert reached == TRACTS[2]
    corrupt(bad)
    if executor is None:
        statuses = {s.tract: s for s in run_associate(repo_copy.root)}
    else:
        with cf.ThreadPoolExecutor(2) as pool:
            statuses = {s.tract: s for s in run_associate(repo_copy.root, executor=pool)}
    assert sorted(statuses) == ALL_TRACTS
    failed = {t for t, s in statuses.items() if not s.ok}
    assert failed == reached
    for tract in failed:
        st = statuses[tract]
        assert st.status == "failed" and st.error_type == "UnreadableInputError"
        assert str(bad) in st.message and "visit 2 detector 2" in st.message and "cannot be read" in st.message
        assert "CatalogIOError" in st.message
        assert repo_copy.read_tract_status("associate", tract).error_type == "UnreadableInputError"
    for tract in set(ALL_TRACTS) - failed:  # untouched: up to date, its products as they were
        assert statuses[tract].status == "ok" and statuses[tract].action == SKIPPED
        assert statuses[tract].outputs == good[tract].outputs
    text = "\n".join(summary_lines(list(statuses.values())))
    assert "UnreadableInputError" in text and str(bad)[:50] in text
    # the failed tracts' files from the earlier run are stale: finalize leaves them out of what it reads
    assert sorted(_isolated_star_paths(repo_copy)) == sorted(set(ALL_TRACTS) - failed)
    assert all((repo_copy.root / "isolated_star" / f"isolated_star_{t}.parquet").is_file() for t in failed)


def test_a_table_without_a_recorded_extent_fails_every_tract(repo_copy):
    bad = repo_copy.dataset_path("single_visit_star", 1, 0, "parquet")
    path = repo_copy.status_path("calibrate", 1, 0)
    doc = json.loads(path.read_text())
    del doc["summary"]["sky_boundary"]  # a record written before calibrate kept the extent
    path.write_text(json.dumps(doc))
    corrupt(bad)
    statuses = run_associate(repo_copy.root)
    assert sorted(s.tract for s in statuses) == ALL_TRACTS  # tracts 14, 18 and 19: recorded before
    assert all(s.error_type == "UnreadableInputError" and str(bad) in s.message for s in statuses)
    # nothing associated before and no readable table: nothing to fail, a clear error naming the files
    for tract in ALL_TRACTS:
        repo_copy.tract_status_path("associate", tract).unlink()
    for visit in VISITS:
        for detector in FOOTPRINTS:
            corrupt(repo_copy.dataset_path("single_visit_star", visit, detector, "parquet"))
            path = repo_copy.status_path("calibrate", visit, detector)
            path.write_text(json.dumps({**json.loads(path.read_text()), "summary": {}}))
    with pytest.raises(ValueError, match="no tract to associate.*single_visit_star_000001_000.parquet"):
        run_associate(repo_copy.root)


def test_a_missing_column_fails_the_tract_naming_the_file(repo_copy):
    path = repo_copy.dataset_path("single_visit_star", 1, 0, "parquet")
    table = read_catalog(path)
    table.remove_column("detect_isPrimary")
    write_catalog(table, path, overwrite=True)
    statuses = {s.tract: s for s in run_associate(repo_copy.root)}
    assert statuses[12].error_type == "KeyError" and str(path) in statuses[12].message
    assert all(statuses[t].ok for t in ALL_TRACTS if t != 12)


def test_the_default_skymap_is_centred_from_the_coordinate_columns(repo_copy):
    (repo_copy.root / "skymap.json").unlink()  # and there is no refcat.parquet
    run_associate(repo_copy.root)
    coords = [read_catalog(p, columns=["coord_ra", "coord_dec"]) for p in repo_copy.single_visit_star_paths().values()]
    ra = np.degrees(np.concatenate([np.asarray(c["coord_ra"]) for c in coords]))
    dec = np.degrees(np.concatenate([np.asarray(c["coord_dec"]) for c in coords]))
    assert load_skymap(repo_copy.root / "skymap.json") == default_skymap(ra, dec)


def test_the_boundary_tracts_hold_every_source_tract():
    """A rotated, distorted 2k x 4k detector: the tracts its recorded boundary reaches hold the tracts of any
    position on it, and not many more."""
    sky = SimpleSkyMap(ra0=150.0, dec0=-30.0, tract_size_deg=0.05, tract_overlap_deg=1 / 60, n_tracts_per_side=21)
    theta, scale = np.radians(33.0), 0.2 / 3600
    cd = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    wcs = make_tan_sip_wcs([1000.0, 2000.0], [150.07, -29.96], cd,
                           sip_a=np.array([[0, 0, 2e-6], [0, 1e-6, 0], [3e-6, 0, 0]]),
                           sip_b=np.array([[0, 0, 1e-6], [0, 2e-6, 0], [-1e-6, 0, 0]]))
    exposure = SimpleNamespace(wcs=wcs, bbox=Box2I(0, 0, 2047, 4095))
    boundary = sky_boundary(exposure)
    assert len(boundary) == 8
    reached = set(tracts_of_boundary(sky, boundary))
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-0.5, 2047.5, 200000), rng.uniform(-0.5, 4095.5, 200000)
    x[:4], y[:4] = [-0.5, 2047.5, 2047.5, -0.5], [-0.5, -0.5, 4095.5, 4095.5]
    ra, dec = pixel_to_sky(wcs, x, y)
    sources = set(sky.find_tracts(ra, dec))
    assert sources <= reached and len(reached) <= len(sources) + 2
    assert sky_boundary(SimpleNamespace(wcs=None, bbox=exposure.bbox)) is None
    with pytest.raises(ValueError, match="sky boundary"):
        tracts_of_boundary(sky, [[150.0, np.nan]])


def test_a_sky_map_that_misses_all_the_data_is_an_error_naming_it_and_the_data(tmp_path, capsys):
    """Issue 22: a sky map of another field associated nothing and exited 0 with "0 of 0 tracts"."""
    from visitcal.cli import main

    root = tmp_path / "repo"
    make_repo(root)
    elsewhere = SimpleSkyMap(ra0=20.0, dec0=10.0, tract_size_deg=0.1, tract_overlap_deg=0.005, n_tracts_per_side=5)
    write_skymap(elsewhere, root / "skymap.json")
    with pytest.raises(ValueError) as info:
        run_associate(root)
    msg = str(info.value)
    assert msg.startswith(f"{root / 'skymap.json'}: the sky map misses all the data")
    assert "(ra, dec) = (20, 10)" in msg and "726 sources" in msg  # 2 visits x 3 detectors x 121 sources
    tables = [read_catalog(p) for p in Repository(root).single_visit_star_paths().values()]
    ra = np.degrees(np.concatenate([t["coord_ra"] for t in tables]))
    dec = np.degrees(np.concatenate([t["coord_dec"] for t in tables]))
    assert f"span ra {ra.min():.4f} to {ra.max():.4f}, dec {dec.min():.4f} to {dec.max():.4f} deg" in msg
    assert not (root / "provenance" / "associate").exists()  # nothing recorded as done
    # the command line: one line on stderr, exit code not 0, no traceback
    capsys.readouterr()
    code = main(["associate", str(root)])
    err = capsys.readouterr().err
    assert code != 0
    assert err.strip() == f"visitcal associate: error: {msg}" and "Traceback" not in err
    # the right sky map associates again
    write_skymap(SKY, root / "skymap.json")
    assert sorted(s.tract for s in run_associate(root)) == ALL_TRACTS
