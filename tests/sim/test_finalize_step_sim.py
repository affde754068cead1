"""The ``finalize`` step over a repository (issue 8): ``visitcal calibrate`` -> association (run by the
step when missing) -> FinalizeCharacterization per visit, against the simulator and against itself:
the reserve flag of every isolated star is the same in every visit and detector and equals the LSST
recipe's draw on the tract's star table; the visit task and the detector tasks + consolidation write the
same bytes, with one or two processes; a rerun skips finished visits; the CLI prints the per-detector
summary; the per-detector units of finalize and of the visit summaries (issue 25) write the bytes of the visit
units, and a worker that dies on one detector fails that detector alone. (The tasks' accuracy against the truth and
their failure semantics: tests/sim/test_finalize_sim.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from visitcal.cli import main
from visitcal.tasks.finalize_characterization import read_psf_ap_corr_cat
from visitcal.io import read_catalog, read_exposure
from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate
from visitcal.pipeline.finalize_step import run_finalize
from visitcal.pipeline.repository import SKIPPED, Repository
from visitcal.tasks.reserve_isolated_stars import ReserveIsolatedStarsTask
from visitcal.sim import SimConfig, simulate

from .helpers import check_lsst_rows_and_reserve

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


def test_star_rows_and_reserved_stars_are_lsst_s(finalized):
    """Issue 24: the isolated-star rows equal LSST's recipe written out independently (tests/sim/helpers.py:
    re-selected sources, hpgeom's nside-32 pixels, scipy friends-of-friends, LSST's reserve draw), and every
    reserve flag finalize wrote is LSST's. This field lies inside one nside-32 pixel; the order across pixels:
    tests/sim/test_lsst_star_order_sim.py and the synthetic test in tests/unit/tasks."""
    pytest.importorskip("hpgeom", reason="hpgeom (a test-only dependency) gives the reference HEALPix pixels")
    root, _ = finalized
    counts = check_lsst_rows_and_reserve(root, FIN.band)
    assert len(counts["pixels"]) == 1
    assert counts["checked"] > 200 and counts["reserved_seen"] >= 10, counts


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
        # ok, or degraded only by an aperture-correction order step-down: since issue 21's PCA refinement in
        # calibrate, detector 1002/0's finalize GaussianFlux correction is left with 6 stars of S/N > 200 (order 1)
        assert stored["status"] in ("ok", "degraded") and stored["summary"]["n_used"] > 10, (s.visit, s.detector)
        if stored["status"] == "degraded":
            assert stored["summary"]["psf_spatial_order"] == 2 and "degraded_reason" not in stored["summary"]
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
    assert f"{statuses[0].visit:>7} {statuses[0].detector:>4} skipped (up to date)" in out  # not replayed


def test_visit_summary_joins_refit_models_and_calibrations(finalized):
    """issue 9, the visit summary: one row per detector (sorted) with the refit PSF and ap corr, the calibrate
    WCS and PhotoCalib, summary statistics with the refit PSF; lossless round trip; a row lacking a
    calibration is a typed upstream failure."""
    from visitcal.io import read_exposure
    from visitcal.pipeline.visit_summary_step import run_visit_summary
    from visitcal.tasks.update_visit_summary import (UpstreamFailureNoWorkFound, calibrations_for, read_visit_summary,
                                               write_visit_summary)
    from visitcal.core.wcs import pixel_to_sky

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
            # LSST's columns: id (the detector), band and physical_filter, and the PSF stars' residual statistics
            # of finalize's star table, recomputed here with numpy (LSST's definition: used stars, 50 < S/N < 1000)
            assert row["id"] == d and row["band"] == exp.visit_info.band
            assert row["physical_filter"] == exp.visit_info.physical_filter
            stars = read_catalog(root / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet")
            stars = stars[np.asarray(stars["detector"]) == d]
            xx, yy, pxx, pyy = (np.asarray(stars[c], float) for c in (
                "base_SdssShape_xx", "base_SdssShape_yy", "base_SdssShape_psf_xx", "base_SdssShape_psf_yy"))
            snr = np.asarray(stars["base_PsfFlux_instFlux"], float) / np.asarray(stars["base_PsfFlux_instFluxErr"],
                                                                                 float)
            sel = (np.asarray(stars["calib_psf_used"], bool) & (snr > 50) & (snr < 1000)
                   & ~np.asarray(stars["base_SdssShape_flag"], bool) & ~np.asarray(stars["base_PsfFlux_flag"], bool))
            de1 = ((xx - yy) / (xx + yy) - (pxx - pyy) / (pxx + pyy))[sel]
            assert row["psfStarDeltaE1Median"] == pytest.approx(np.median(de1), rel=1e-12, abs=1e-15)
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


def test_reprocess_visit_image_on_the_ci_repository(finalized):
    """issue 9, ReprocessVisitImageTask on the small finalized repository (the goals themselves are asserted on a
    rich one by test_reprocess_accuracy_slow.py): calibrated PsfFlux of
    isolated unsaturated true stars against their true nJy fluxes, positions against the truth, the reserved
    flags carried over by the 0.2" cross-match, the nJy image against the counts image."""
    from visitcal.io import read_exposure
    from visitcal.calib.match_nearest import match_nearest
    from visitcal.detection.background import BackgroundList
    from visitcal.pipeline.visit_summary_step import run_visit_summary
    from visitcal.tasks.reprocess_visit_image import ReprocessVisitImageConfig, ReprocessVisitImageTask
    from visitcal.sim import SimRepository
    from visitcal.core.table import DetectorVisitIdGenerator
    from visitcal.tasks.update_visit_summary import calibrations_for, read_visit_summary

    root, statuses = finalized
    repo, sim = Repository(root), SimRepository(root)
    v = sim.visits[0]
    vs = read_visit_summary([p for p in run_visit_summary(root) if f"{v:06d}" in p.name][0])
    stars = read_catalog(root / "refit_psf_star" / f"refit_psf_star_{v:06d}.parquet")
    for d in sim.detectors:
        cal = calibrations_for(vs, d)
        kw = dict(psf=cal.psf, ap_corr=cal.ap_corr_map, photo_calib=cal.photo_calib, wcs=cal.wcs,
                  background=BackgroundList.read_fits(repo.dataset_path("preliminary_visit_image_background", v, d, "fits")),
                  calib_sources=stars[stars["detector"] == d], id_generator=DetectorVisitIdGenerator(v, d))
        snaps = [read_exposure(p) for p in repo.post_isr_snaps()[(v, d)]]
        r = ReprocessVisitImageTask().run(exposures=snaps, **kw)
        s = r.sources
        obj = sim.objects(v, d)
        obj = obj[obj["is_star"] & ~obj["saturated"]]
        x, y = np.asarray(s["base_SdssCentroid_x"]), np.asarray(s["base_SdssCentroid_y"])
        i1, i2, _ = match_nearest(np.asarray(obj["x"], float), np.asarray(obj["y"], float), x, y, 1.0).pairs()
        f, fe = np.asarray(s["base_PsfFlux_flux"])[i2], np.asarray(s["base_PsfFlux_fluxErr"])[i2]
        good = ((f / fe > 50) & np.asarray(s["detect_isPrimary"])[i2] & (np.asarray(s["deblend_nChild"])[i2] == 0)
                & (np.asarray(s["parent"])[i2] == 0))
        true_flux = np.asarray(obj["flux_nJy"])[i1][good]
        dm = 1000 * np.median(-2.5 * np.log10(f[good] / true_flux))
        pull = (f[good] - true_flux) / fe[good]
        # The issue asks 2 mmag; this repository's zero point and ap corr come from a few dozen to ~100 stars
        # each and carry 1-3 mmag (a 2048^2 repository gave -0.2 and -3.9 mmag); pull widths above 1 hold the
        # calibrations' errors, which fluxErr does not.
        width = 1.4826 * np.median(np.abs(pull - np.median(pull)))  # robust: a few blends and CR-hit stars
        # The bound is the typical width plus 2.5 standard errors of a 1.4826-MAD width from n stars (1.166 w / sqrt n,
        # the MAD's 37% efficiency): over this configuration with seeds 5-9 (30 detectors x 2 objectSize selector
        # cuts, the old and LSST's current; issue 24) the median width was 1.35, so the bound is 1.97 for 40 stars.
        # A fixed 1.5 was exceeded by 6 (old cuts) and 7 (LSST's) of the 18 detectors that passed the star-count
        # and zero-point checks: at 40 stars it is only 0.6 standard error above the typical width. Seed 8's
        # detector with a 34-mmag zero point gave 3.0: such a calibration failure still fails here.
        bound = 1.35 * (1 + 2.5 * 1.166 / np.sqrt(good.sum()))
        assert good.sum() > 30 and abs(dm) < 5.0 and 0.8 < width < bound, (d, good.sum(), dm, width, bound)
        ra = np.degrees(np.asarray(s["coord_ra"]))[i2][good]
        dec = np.degrees(np.asarray(s["coord_dec"]))[i2][good]
        tra, tdec = np.asarray(obj["ra"])[i1][good], np.asarray(obj["dec"])[i1][good]
        sep = np.hypot((ra - tra) * np.cos(np.radians(tdec)), dec - tdec) * 3.6e6
        # mas, S/N > 50. The issue asks 10 mas; on these 1024^2 detectors the SIP-3 fit has ~60 matches and
        # leaves ~5-14 mas (a 2048^2 repository gave 6-8 mas): the WCS, not the centroids, dominates.
        assert np.sqrt(np.mean(sep**2)) < 20.0
        reserved = np.asarray(kw["calib_sources"]["calib_psf_reserved"]).sum()
        assert reserved > 0 and np.asarray(s["calib_psf_reserved"]).sum() >= 0.99 * reserved
        assert r.exposure.metadata["BUNIT"] == "nJy" and r.exposure.photo_calib.calibration_mean == 1.0
        # summary statistics against values computed here from the truth
        st = r.exposure.summary_stats
        cx, cy = r.exposure.bbox.center
        assert st["psfSigma"] == pytest.approx(sim.true_psf(v, d).compute_shape(cx, cy).determinant_radius, rel=0.01)
        true_sky = sum(sim.true_background(v, d, k).mean() for k in range(len(snaps)))  # ADU, snaps summed
        assert st["skyBg"] == pytest.approx(true_sky, rel=0.01)
        true_zp = 2.5 * np.log10(sim.true_photo_calib(v, d).instflux_at_zero_magnitude)
        assert abs(st["zeroPoint"] - true_zp) < 0.03  # the 12-px aperture's zero point: -18 to -24 mmag off total
        # magLim (SMTN-002) from the truth: true PSF's effective area, true sky, true zero point, the snaps'
        # gain and read noise (added in quadrature) from their headers
        heads = [read_exposure(p).metadata for p in repo.post_isr_snaps()[(v, d)]]
        k = sim.true_psf(v, d).compute_kernel_image(cx, cy)
        neff, gain = k.sum() ** 2 / np.sum(k**2), float(heads[0]["GAIN"])
        rn = np.sqrt(sum(float(h["RDNOISE"]) ** 2 for h in heads)) / gain
        c = 12.5 / gain + np.sqrt(625 / (4 * gain**2) + 25 * (true_sky / gain + rn**2) * neff)
        assert abs(st["magLim"] - (true_zp - 2.5 * np.log10(c))) < 0.035
        fid_sigma = 1.56 if sim.band == "r" else None
        if fid_sigma is not None:
            true_sigma = sim.true_psf(v, d).compute_shape(cx, cy).determinant_radius
            assert st["effTimePsfSigmaScale"] == pytest.approx((fid_sigma / true_sigma) ** 2, rel=0.02)
            assert st["effTimeSkyBgScale"] == pytest.approx(19.94 / (true_sky / st["expTime"]), rel=0.01)
            assert np.isfinite(st["effTime"]) and st["effTime"] > 0
        assert abs(st["psfStarDeltaE1Median"]) < 5e-3 and abs(st["psfStarDeltaE2Median"]) < 5e-3
        assert st["psfStarScaledDeltaSizeScatter"] < 0.03
        # the nJy image times the inverse calibration is the counts image
        counts = ReprocessVisitImageTask(ReprocessVisitImageConfig(do_calibrate_pixels=False)).run(
            exposures=[read_exposure(p) for p in repo.post_isr_snaps()[(v, d)]], **kw)
        back = cal.photo_calib.uncalibrate_image(r.exposure.masked_image)
        np.testing.assert_allclose(back.image, counts.exposure.image, rtol=1e-6, atol=1e-3)


def test_reprocess_step_products_failures_and_rerun(calibrated, finalized, tmp_path, capsys):
    """``visitcal reprocess``: products per detector; a detector whose visit-summary row lacks its PSF is an
    UpstreamFailureNoWorkFound, the others unaffected; finished detectors skipped on a rerun."""
    from visitcal.io import read_exposure
    from visitcal.io.footprints import read_footprints
    from visitcal.pipeline.reprocess_step import run_reprocess
    from visitcal.tasks.finalize_characterization import write_psf_ap_corr_cat

    src_root, statuses = finalized
    root = tmp_path / "repo"
    shutil.copytree(src_root, root, symlinks=True)  # this test breaks a visit summary: its own copy
    repo = Repository(root)
    v = statuses[0].visit
    # finalize gave one detector no PSF: its visit summary row has none (the summary, whose input changed, is
    # redone by run_reprocess; a hand-edited summary would be too, as an output that no longer matches)
    models_path = root / "refit_psf_models" / f"refit_psf_models_{v:06d}.fits"
    models = read_psf_ap_corr_cat(models_path)
    broken_det = int(models["detector"][0])
    models["psf"][0] = None
    write_psf_ap_corr_cat(models, models_path, overwrite=True)
    out = run_reprocess(root, visits=[v])
    by_det = {s.detector: s for s in out}
    assert by_det[broken_det].error_type == "UpstreamFailureNoWorkFound" and "no psf" in by_det[broken_det].message
    good = [s for s in out if s.detector != broken_det]
    assert good and all(s.ok for s in good)
    for s in good:
        exp = read_exposure(repo.dataset_path("visit_image", v, s.detector, "fits"))
        assert exp.metadata["BUNIT"] == "nJy"
        src = read_catalog(repo.dataset_path("source", v, s.detector, "parquet"))
        assert {"base_PsfFlux_flux", "base_PsfFlux_fluxErr", "base_PsfFlux_mag", "visit", "detector"} <= set(src.colnames)
        ids, fps = read_footprints(repo.dataset_path("source_footprints", v, s.detector, "fits"))
        assert list(ids) == list(src["id"])
        assert repo.dataset_path("visit_image_background", v, s.detector, "fits").is_file()
    assert not repo.dataset_path("visit_image", v, broken_det, "fits").exists()
    path = repo.dataset_path("source", v, good[0].detector, "parquet")
    before = path.stat().st_mtime_ns
    assert main(["reprocess", str(root), "--visits", str(v)]) == 3  # the broken detector still fails
    assert path.stat().st_mtime_ns == before
    assert "UpstreamFailureNoWorkFound" in capsys.readouterr().out
    # bad inputs of another visit, each recorded on its detector with the error naming what is wrong:
    # three snaps on one detector, a background fitted on another box on the other
    from visitcal.detection.background import BackgroundConfig, BackgroundList, make_background

    v2 = next(vv for vv, _ in repo.data_ids() if vv != v)
    d_snaps, d_bg = sorted(d for vv, d in repo.data_ids() if vv == v2)[:2]
    snap0 = repo.post_isr_snaps()[(v2, d_snaps)][0]
    for k in (1, 2):
        shutil.copy(snap0, snap0.with_name(snap0.name.replace("_0.fits", f"_{k}.fits")))
    from visitcal.core.geom import Box2I

    crop = read_exposure(repo.post_isr_snaps()[(v2, d_bg)][0]).masked_image[Box2I(0, 0, 599, 511)]
    BackgroundList([make_background(crop, BackgroundConfig(bin_size=128))]).write_fits(
        repo.dataset_path("preliminary_visit_image_background", v2, d_bg, "fits"), overwrite=True)
    out2 = {s.detector: s for s in run_reprocess(root, visits=[v2])}
    assert out2[d_snaps].error_type == "ValueError" and "1 or 2 snaps, got 3" in out2[d_snaps].message
    assert out2[d_bg].error_type == "ValueError" and "background: layer 0 was fitted on" in out2[d_bg].message
    assert all(by_det[s.detector].ok for s in good)  # visit v's finished detectors untouched


def test_two_snaps_match_one_snap_of_double_exposure(finalized, tmp_path):
    """The same scene simulated as two 30-s snaps: reprocessed with the one-snap repository's calibrations, its
    stars' fluxes agree with the one 60-s snap's within their noise, and the exposure time is the sum."""
    from visitcal.io import read_exposure
    from visitcal.calib.match_nearest import match_nearest
    from visitcal.detection.background import BackgroundList
    from visitcal.pipeline.visit_summary_step import run_visit_summary, visit_summary_path
    from visitcal.tasks.reprocess_visit_image import ReprocessVisitImageTask
    from visitcal.sim import SimRepository
    from visitcal.core.table import DetectorVisitIdGenerator
    from visitcal.tasks.update_visit_summary import calibrations_for, read_visit_summary

    root, statuses = finalized
    two_root = tmp_path / "two"
    simulate(FIN.model_copy(update={"n_snaps": 2}), two_root)
    repo, two = Repository(root), Repository(two_root)
    sim = SimRepository(root)
    v, d = statuses[0].visit, statuses[0].detector
    run_visit_summary(root)
    cal = calibrations_for(read_visit_summary(visit_summary_path(repo, v)), d)
    bg = BackgroundList.read_fits(repo.dataset_path("preliminary_visit_image_background", v, d, "fits"))

    def reprocess(r):
        snaps = [read_exposure(p) for p in r.post_isr_snaps()[(v, d)]]
        return len(snaps), ReprocessVisitImageTask().run(
            exposures=snaps, psf=cal.psf, background=bg, ap_corr=cal.ap_corr_map, photo_calib=cal.photo_calib,
            wcs=cal.wcs, id_generator=DetectorVisitIdGenerator(v, d))

    (n1, a), (n2, b) = reprocess(repo), reprocess(two)
    assert (n1, n2) == (1, 2)
    assert b.exposure.visit_info.exposure_time == pytest.approx(a.exposure.visit_info.exposure_time)
    obj = sim.objects(v, d)
    obj = obj[obj["is_star"] & ~obj["saturated"]]
    fluxes = []
    for r in (a, b):
        s = r.sources
        x, y = np.asarray(s["base_SdssCentroid_x"]), np.asarray(s["base_SdssCentroid_y"])
        m = match_nearest(np.asarray(obj["x"], float), np.asarray(obj["y"], float), x, y, 1.0)
        ok = m.index >= 0
        f = np.full(len(obj), np.nan)
        e = np.full(len(obj), np.nan)
        keep = ok.copy()
        keep[ok] &= (np.asarray(s["deblend_nChild"])[m.index[ok]] == 0) & (np.asarray(s["parent"])[m.index[ok]] == 0)
        f[keep] = np.asarray(s["base_PsfFlux_flux"])[m.index[keep]]
        e[keep] = np.asarray(s["base_PsfFlux_fluxErr"])[m.index[keep]]
        fluxes.append((f, e))
    (fa, ea), (fb, eb) = fluxes
    both = np.isfinite(fa) & np.isfinite(fb) & (fa / ea > 20)
    pull = (fb - fa)[both] / np.hypot(ea, eb)[both]
    width = 1.4826 * np.median(np.abs(pull - np.median(pull)))
    assert both.sum() > 30
    assert abs(np.median(pull)) < 3 * width / np.sqrt(both.sum()) + 0.1  # no offset beyond noise
    assert 0.6 < width < 1.4  # differences consistent with the two images' independent noise


# --------------------------------------------------------------------------------------------------------
# Issue 25: per-detector units in the workers (finalize's per-detector path, the visit summaries' rows)
# --------------------------------------------------------------------------------------------------------

def _records(root, step):
    """Every provenance record of ``step``, without what depends on the run (timings, peak memory)."""
    out = {}
    for path in sorted((root / "provenance" / step).glob("*.json")):
        record = json.loads(path.read_text())
        record.pop("peak_rss_mb")
        record["timings"] = sorted(record["timings"])  # the names, not the seconds
        out[path.name] = record
    return out


def _bytes(root, names):
    return {p.relative_to(root).as_posix(): p.read_bytes() for name in names for p in sorted((root / name).glob("*"))}


def test_finalize_per_detector_units_give_the_bytes_of_the_visit_unit(calibrated, finalized, tmp_path):
    """One visit and two workers, each detector a unit, the visit-level part in this process; then the other visits
    on that path too. Products and provenance (timings and peak memory aside) equal the visit units' of
    ``finalized``, whose visits ran one per unit. The default rule (`choose_split`) takes that path with fewer
    visits than workers and at least one detector per worker."""
    from visitcal.pipeline.finalize_step import choose_split

    assert choose_split(1, 189, 2) and choose_split(3, 600, 8) and choose_split(1, 2, 2)
    assert not choose_split(1, 1, 2)  # one unit either way
    assert not choose_split(2, 378, 2) and not choose_split(1, 189, 1) and not choose_split(0, 0, 4)
    root, statuses = finalized
    other = copy_repo(calibrated, tmp_path / "repo")
    visits = sorted({s.visit for s in statuses})
    labels = []
    first = run_finalize(other, visits=visits[:1], jobs=2, split=True,
                         progress=lambda done, total, label: labels.append(label))
    assert {f"visit {visits[0]} detector {d}: ok" for d in (0, 1)} <= set(labels), labels  # per detector
    rest = run_finalize(other, jobs=2, split=True)
    assert [s.action for s in rest[:2]] == [SKIPPED] * 2
    assert [(s.visit, s.detector, s.status, s.message, s.summary) for s in first + rest[2:]] == \
        [(s.visit, s.detector, s.status, s.message, s.summary) for s in statuses]
    assert _bytes(other, ["refit_psf_models", "refit_psf_star"]) == _bytes(root, ["refit_psf_models", "refit_psf_star"])
    assert _records(other, "finalize") == _records(root, "finalize")


def test_visit_summary_per_detector_units_give_the_bytes_of_the_visit_in_one_process(finalized, tmp_path):
    """The visit summaries with their detectors' rows computed in this process (jobs=1) or on two workers equal
    the summaries of `summarize_visit` (the whole visit in one process, `UpdateVisitSummaryTask.run`), FITS bytes
    and provenance."""
    from visitcal.pipeline.visit_summary_step import run_visit_summary, summarize_visit

    root, statuses = finalized
    copies = {}
    for mode in ("whole", 1, 2):
        dest = tmp_path / f"repo_{mode}"
        shutil.copytree(root, dest, ignore=shutil.ignore_patterns("visit_summary", "visit_image*", "source*"),
                        symlinks=True)
        if mode == "whole":
            got = [summarize_visit(dest, v, False) for v in sorted({s.visit for s in statuses})]
        else:
            got = run_visit_summary(dest, jobs=mode, return_status=True)
        # ok, or degraded by a detector's fallback calibration (visit 1002's, test_products_and_provenance)
        assert all(s.ok and s.summary["n_detectors"] == 2 for s in got) and sum(s.status == "ok" for s in got) >= 2
        copies[mode] = (_bytes(dest, ["visit_summary"]), _records(dest, "visit_summary"))
    assert len(copies["whole"][0]) == 3
    assert copies[1] == copies["whole"] and copies[2] == copies["whole"]
    # an up-to-date visit is skipped before any image is read
    again = run_visit_summary(tmp_path / "repo_2", jobs=2, return_status=True)
    assert [s.action for s in again] == [SKIPPED] * 3


def _dies_on_detector_1(path):
    """`read_exposure`, except that the process dies (SIGKILL) on a detector-1 ``preliminary_visit_image``."""
    if Path(path).name.startswith("preliminary_visit_image_") and Path(path).stem.endswith("_001"):
        os.kill(os.getpid(), signal.SIGKILL)
    return read_exposure(path)


@pytest.mark.slow
def test_a_detector_whose_worker_dies_fails_alone(calibrated, tmp_path, monkeypatch):
    """On the per-detector paths a worker that dies on one detector fails that detector only: finalize records it
    ``WorkerCrashed`` (its crash counted) and finalizes the visit from the other; the visit summary is written
    without its row, degraded, the detector listed with the reason (the workers are forked from this process, so
    they see the patched reader)."""
    from visitcal.pipeline import finalize_step, visit_summary_step
    from visitcal.pipeline.visit_summary_step import run_visit_summary, visit_summary_path

    other = copy_repo(calibrated, tmp_path / "repo")
    visit = sorted({v for v, _ in Repository(other).data_ids()})[0]
    monkeypatch.setattr(finalize_step, "read_exposure", _dies_on_detector_1)
    by = {s.detector: s for s in run_finalize(other, visits=[visit], jobs=2, split=True)}
    assert by[1].error_type == "WorkerCrashed" and "signal 9" in by[1].message and by[1].crashes == 1
    assert by[0].ok and by[0].summary["n_used"] > 10
    models = read_psf_ap_corr_cat(other / "refit_psf_models" / f"refit_psf_models_{visit:06d}.fits")
    assert list(models["detector"]) == [0]
    monkeypatch.setattr(finalize_step, "read_exposure", read_exposure)
    again = run_finalize(other, visits=[visit], jobs=2, split=True)
    assert [s.status for s in again] == ["ok", "ok"] and again[1].action.startswith("redone (previous run failed")

    monkeypatch.setattr(visit_summary_step, "read_exposure", _dies_on_detector_1)
    vs, = run_visit_summary(other, visits=[visit], jobs=2, return_status=True)
    assert vs.status == "degraded" and vs.summary["n_detectors"] == 1
    assert list(vs.summary["failed_detectors"]) == ["1"]
    assert vs.summary["failed_detectors"]["1"].startswith("WorkerCrashed: worker died (signal 9")
    assert "detector 1: no row: WorkerCrashed" in vs.message
    with fits.open(visit_summary_path(Repository(other), visit)) as hdul:
        assert hdul["INDEX"].header["VCSTATUS"] == "degraded" and hdul["INDEX"].header["VCMISSDT"] == "1"
        assert list(hdul["INDEX"].data["detector"]) == [0]
