"""The ``finalize`` step over a repository (issue 8): ``visitcal calibrate`` -> association (run by the
step when missing) -> FinalizeCharacterization per visit, against the simulator and against itself:
the reserve flag of every isolated star is the same in every visit and detector and equals the LSST
recipe's draw on the tract's star table; the visit task and the detector tasks + consolidation write the
same bytes, with one or two processes; a rerun skips finished visits; the CLI prints the per-detector
summary. (The tasks' accuracy against the truth and their failure semantics: tests/sim/test_finalize_sim.py.)
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from visitcal.cli import main
from visitcal.finalize_characterization import read_psf_ap_corr_cat
from visitcal.io import read_catalog
from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate
from visitcal.pipeline.finalize_step import run_finalize
from visitcal.pipeline.repository import Repository
from visitcal.reserve_isolated_stars import ReserveIsolatedStarsTask
from visitcal.sim import SimConfig, simulate

#: Three visits of two 1024 x 1024 detectors, a rich star field, one 60-s snap.
FIN = SimConfig(preset="small", n_visits=3, n_detectors=2, detector_width=1024, detector_height=1024, n_snaps=1,
                seed=5, star_density=60000.0, galaxy_density=20000.0, exposure_time=60.0)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("fin") / "repo"
    simulate(FIN, root)
    statuses = run_calibrate(root, config=CalibrateStepConfig.preset("sparse"))
    assert all(s.ok for s in statuses), [(s.visit, s.detector, s.message) for s in statuses]
    return root


def copy_repo(src, dest):
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("refit_*", "isolated_star*", "skymap.json"),
                    symlinks=True)
    shutil.rmtree(dest / "provenance" / "finalize", ignore_errors=True)
    shutil.rmtree(dest / "provenance" / "associate", ignore_errors=True)
    return dest


@pytest.fixture(scope="module")
def finalized(calibrated, tmp_path_factory):
    root = copy_repo(calibrated, tmp_path_factory.mktemp("fin_visit") / "repo")
    return root, run_finalize(root)


def test_reserve_flags_are_consistent_and_follow_the_lsst_recipe(finalized):
    root, statuses = finalized
    assert all(s.ok for s in statuses), [(s.visit, s.detector, s.error_type, s.message) for s in statuses]
    repo = Repository(root)
    band = FIN.band
    flags: dict[tuple[int, int], set] = {}
    seen: dict[tuple[int, int], int] = {}
    n_rows = 0
    for path in sorted((root / "isolated_star_association").glob("*.parquet")):
        tract = int(path.stem.rsplit("_", 1)[1])
        stars = read_catalog(path)
        sources = read_catalog(repo.tract_dataset_path("isolated_star", tract, "parquet"))
        use = np.flatnonzero(np.asarray(stars[f"nsource_{band}"]) > 0)
        drawn = ReserveIsolatedStarsTask().run(len(use), extra=f"{band}_{tract}")
        assert drawn.sum() == len(use) // 10  # floor(0.1 N) of the tract's stars in the band
        star_of_source = dict(zip(np.asarray(sources["sourceId"]).tolist(), np.asarray(sources["obj_index"]).tolist()))
        position = {int(s): k for k, s in enumerate(use)}
        for visit in sorted({v for v, _ in repo.data_ids()}):
            table = read_catalog(root / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet")
            for sid, reserved in zip(np.asarray(table["id"]).tolist(), np.asarray(table["calib_psf_reserved"])):
                if sid in star_of_source:
                    star = position[star_of_source[sid]]
                    flags.setdefault((tract, star), set()).add(bool(reserved))
                    seen[(tract, star)] = seen.get((tract, star), 0) + 1
                    assert bool(reserved) == bool(drawn[star])
                    n_rows += 1
    # Stars seen in two or more visits/detectors make the consistency meaningful; reserved ones among them too.
    multi = [k for k, n in seen.items() if n >= 2]
    assert n_rows > 200 and len(multi) > 50 and sum(True in flags[k] for k in multi) >= 3
    assert all(len(v) == 1 for v in flags.values())


def test_products_and_provenance(finalized):
    root, statuses = finalized
    repo = Repository(root)
    for visit in sorted({s.visit for s in statuses}):
        cat = read_psf_ap_corr_cat(root / "refit_psf_models" / f"refit_psf_models_{visit:06d}.fits")
        assert list(cat["detector"]) == sorted(cat["detector"])
        for row in cat:
            assert row["psf"] is not None and "base_PsfFlux_instFlux" in row["ap_corr_map"]
            assert "base_CompensatedTophatFlux_12_instFlux" in row["ap_corr_map"]  # carried from calibrate
    for s in statuses:
        stored = json.loads(repo.status_path("finalize", s.visit, s.detector).read_text())
        assert stored["status"] == "ok" and stored["summary"]["n_used"] > 10
        assert 1.0 < stored["summary"]["psf_sigma"] < 3.0


def test_per_detector_mode_and_jobs_give_the_same_bytes(calibrated, finalized, tmp_path):
    root, statuses = finalized
    other = copy_repo(calibrated, tmp_path / "repo")
    two = run_finalize(other, per_detector=True, jobs=2)
    assert [(s.visit, s.detector, s.status) for s in two] == [(s.visit, s.detector, s.status) for s in statuses]
    for visit in sorted({s.visit for s in statuses}):
        for name, ext in (("refit_psf_models", "fits"), ("refit_psf_star", "parquet")):
            a = (root / name / f"{name}_{visit:06d}.{ext}").read_bytes()
            b = (other / name / f"{name}_{visit:06d}.{ext}").read_bytes()
            assert a == b, (name, visit)


def test_rerun_skips_and_cli_summary(finalized, capsys):
    root, statuses = finalized
    path = root / "refit_psf_star" / f"refit_psf_star_{statuses[0].visit:06d}.parquet"
    before = path.stat().st_mtime_ns
    assert main(["finalize", str(root)]) == 0
    assert path.stat().st_mtime_ns == before  # skipped
    out = capsys.readouterr().out
    assert f"{len(statuses)} of {len(statuses)} detectors finalized" in out
    assert f"{statuses[0].visit:>7} {statuses[0].detector:>4} ok" in out


def test_visit_summary_joins_refit_models_and_calibrations(finalized):
    """issue 9, the visit summary: one row per detector (sorted) with the refit PSF and ap corr, the calibrate
    WCS and PhotoCalib, summary statistics with the refit PSF; lossless round trip; a row lacking a
    calibration is a typed upstream failure."""
    from visitcal.io import read_exposure
    from visitcal.pipeline.visit_summary_step import run_visit_summary
    from visitcal.update_visit_summary import (UpstreamFailureNoWorkFound, calibrations_for, read_visit_summary,
                                               write_visit_summary)
    from visitcal.wcs import pixel_to_sky

    root, statuses = finalized
    repo = Repository(root)
    paths = run_visit_summary(root)
    assert len(paths) == len({s.visit for s in statuses})
    for path in paths:
        vs = read_visit_summary(path)
        visit = int(vs["visit"][0])
        models = read_psf_ap_corr_cat(root / "refit_psf_models" / f"refit_psf_models_{visit:06d}.fits")
        assert list(vs["detector"]) == sorted(vs["detector"]) == list(models["detector"])
        for row, model in zip(vs, models):
            d = int(row["detector"])
            exp = read_exposure(repo.dataset_path("preliminary_visit_image", visit, d, "fits"))
            x, y = 500.3, 611.8
            assert np.array_equal(row["psf"].compute_image(x, y), model["psf"].compute_image(x, y))
            assert row["ap_corr_map"]["base_PsfFlux_instFlux"].evaluate(np.array([x]), np.array([y]))[0] == \
                model["ap_corr_map"]["base_PsfFlux_instFlux"].evaluate(np.array([x]), np.array([y]))[0]
            gx, gy = np.array([0.0, 1023.0, 400.5]), np.array([0.0, 1023.0, 77.25])
            np.testing.assert_allclose(pixel_to_sky(row["wcs"], gx, gy), pixel_to_sky(exp.wcs, gx, gy), rtol=0,
                                       atol=1e-12)
            assert row["photo_calib"].calibration_mean == exp.photo_calib.calibration_mean
            cx, cy = exp.bbox.center
            assert row["psfSigma"] == pytest.approx(model["psf"].compute_shape(cx, cy).determinant_radius, rel=1e-12)
            assert row["zeroPoint"] == pytest.approx(exp.summary_stats["zeroPoint"], abs=1e-12)
            assert row["nPsfStar"] > 10 and len(row["raCorners"]) == 4
            cal = calibrations_for(vs, d)
            assert cal.psf is row["psf"] and cal.wcs is row["wcs"]
        # a row without its PSF (a failed finalize fit): a typed failure naming it, after a round trip
        vs["psf"][0] = None
        write_visit_summary(vs, path.with_name(f"broken_{visit}.fits"))
        broken = read_visit_summary(path.with_name(f"broken_{visit}.fits"))
        with pytest.raises(UpstreamFailureNoWorkFound, match="no psf"):
            calibrations_for(broken, int(broken["detector"][0]))
        with pytest.raises(UpstreamFailureNoWorkFound, match="no row"):
            calibrations_for(broken, 99)
