"""Sparse fields degrade visibly, not fail (issue 21), through the chain on a simulated repository: a detector
whose zero point comes from fewer stars than ``min_n_stars`` is calibrated ``degraded`` and takes the visit's
median zero point in the visit summary; a detector whose own aperture correction cannot be measured takes the
visit-level one in finalize; each fallback is recorded in provenance, in the catalogs' metadata
(``single_visit_star``, ``refit_psf_star``, ``source``) and in the visit summary (row status and message, the
INDEX header), and reprocessing runs on the degraded detectors.

The repository: 2 visits x 2 detectors of 1024 x 1024 px, one 60-s snap, a rich star field (enough PSF stars for
finalize's order-2 PSF on every detector; the fallbacks of the PSF itself are another branch's), the first visit
checked. Its detectors have a few dozen photometric stars each, so the sparsity is set by the configuration, from
the data: ``min_n_stars`` is the larger detector's count of good photometric stars (the other
has fewer), and finalize's aperture-correction S/N limit (with no fainter fallback) lies between the brightest and
the second-brightest star of one detector (one star left above it; the visit's pool has more). The accuracy of the fallbacks against the
truth (the visit-level ap corr, the visit zero point) is also checked in tests/sim/test_finalize_sim.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from visitcal.io import read_catalog, read_exposure
from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate
from visitcal.pipeline.finalize_step import FinalizeStepConfig, run_finalize
from visitcal.pipeline.repository import Repository
from visitcal.pipeline.reprocess_step import run_reprocess
from visitcal.pipeline.visit_summary_step import run_visit_summary, visit_summary_path
from visitcal.qa.truth import encircled_energy
from visitcal.sim import SimConfig, SimRepository, simulate
from visitcal.tasks.finalize_characterization import FinalizeCharacterizationConfig
from visitcal.tasks.update_visit_summary import read_visit_summary

from .helpers import clone

SPARSE = SimConfig(preset="small", n_visits=2, n_detectors=2, detector_width=1024, detector_height=1024, n_snaps=1,
                   seed=21, star_density=60000.0, galaxy_density=20000.0, exposure_time=60.0)


@pytest.fixture(scope="module")
def sim_repo(tmp_path_factory) -> SimRepository:
    out = tmp_path_factory.mktemp("sparse_sim") / "repo"
    simulate(SPARSE, out)
    return SimRepository(out)


@pytest.fixture(scope="module")
def chain(sim_repo, tmp_path_factory):
    """Calibrate, finalize, summarize and reprocess one visit with the sparse settings (see the docstring)."""
    root = clone(sim_repo, tmp_path_factory.mktemp("sparse") / "repo")
    repo = Repository(root)
    visit = repo.data_ids()[0][0]
    base = CalibrateStepConfig.preset("sparse")
    first = run_calibrate(root, config=base)  # both visits: the isolated stars need them
    n_good = {s.detector: s.summary["photo_cal_n_good"] for s in first if s.visit == visit}
    assert len(set(n_good.values())) > 1, n_good
    threshold = max(n_good.values())
    cal_cfg = base.model_copy(update={"calibrate": base.calibrate.model_copy(update={
        "photo_cal": base.calibrate.photo_cal.model_copy(update={"min_n_stars": threshold})})})
    calibrated = {s.detector: s for s in run_calibrate(root, config=cal_cfg) if s.visit == visit}

    plain = run_finalize(root, visits=[visit])
    assert all(s.ok for s in plain), [(s.detector, s.error_type, s.message) for s in plain]
    stars = read_catalog(root / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet")
    snr = np.asarray(stars["base_PsfFlux_instFlux"]) / np.asarray(stars["base_PsfFlux_instFluxErr"])
    det = np.asarray(stars["detector"])
    # one star left above the limit: halfway (geometrically) between the detector's brightest and second-brightest
    # star; a limit at the second's S/N itself left the strict "S/N > limit" to the last bit of the selector's own
    # S/N (it let that star in once the PSF was drawn to the kernel's reach)
    top2 = {int(d): np.sort(snr[(det == d) & np.isfinite(snr)])[-2:] for d in np.unique(det)}
    second = {d: float(v[0]) for d, v in top2.items()}
    sparse_det = min(second, key=second.get)
    limit = float(np.sqrt(top2[sparse_det][0] * top2[sparse_det][1]))
    fin = FinalizeCharacterizationConfig()
    mac = fin.measure_ap_corr
    mac = mac.model_copy(update={"fallback_min_snr": None, "source_selector": mac.source_selector.model_copy(
        update={"signal_to_noise": mac.source_selector.signal_to_noise.model_copy(update={"minimum": limit})})})
    fin_cfg = FinalizeStepConfig(finalize=fin.model_copy(update={"measure_ap_corr": mac}))
    finalized = {s.detector: s for s in run_finalize(root, visits=[visit], config=fin_cfg)}
    summary = run_visit_summary(root, visits=[visit], return_status=True)[0]
    reprocessed = {s.detector: s for s in run_reprocess(root, visits=[visit], visit_summaries=False)}
    zp_det = min(n_good, key=n_good.get)
    return dict(root=root, repo=repo, visit=visit, n_good=n_good, threshold=threshold, zp_det=zp_det,
                calibrated=calibrated, sparse_det=sparse_det, finalized=finalized, summary=summary,
                reprocessed=reprocessed)


def test_calibrate_degrades_a_zero_point_from_too_few_stars(chain):
    repo, visit, zp_det = chain["repo"], chain["visit"], chain["zp_det"]
    st = chain["calibrated"][zp_det]
    n = chain["n_good"][zp_det]
    why = f"photometric calibration: zero point from {n} good star(s)"
    assert st.status == "degraded" and st.ok and why in st.message
    assert any(why in r for r in st.summary["degraded_reasons"])
    cat = read_catalog(repo.dataset_path("single_visit_star", visit, zp_det, "parquet"))
    assert cat.meta["DEGRADED"] is True and why in cat.meta["DEGRADED_REASON"]
    md = read_exposure(repo.dataset_path("preliminary_visit_image", visit, zp_det, "fits")).metadata
    assert md["MAGZERO_NOBJ"] == n and md["MAGZERO_MIN_NOBJ"] == chain["threshold"] and md["MAGZERO_RMS"] > 0
    other = next(d for d in chain["n_good"] if d != zp_det)
    assert "photometric" not in (chain["calibrated"][other].message or "")
    other_cat = read_catalog(repo.dataset_path("single_visit_star", visit, other, "parquet"))
    assert other_cat.meta["DEGRADED"] is (chain["calibrated"][other].status == "degraded")


def test_finalize_gives_the_visit_level_ap_corr(chain):
    d = chain["sparse_det"]
    st = chain["finalized"][d]
    assert st.status == "degraded" and st.summary["finalize_status"] == "degraded", st.message
    assert "visit-level ap corr (" in st.message and "own fit: unable to measure" in st.message
    stars = read_catalog(chain["root"] / "refit_psf_star" / f"refit_psf_star_{chain['visit']:06d}.parquet")
    assert stars.meta["DEGRADED"] is True and f"detector {d}: visit-level ap corr" in stars.meta["DEGRADED_REASON"]
    rows = stars[np.asarray(stars["detector"]) == d]
    assert not np.any(rows["base_PsfFlux_flag_apCorr"]) and np.all(np.isfinite(rows["base_PsfFlux_apCorr"]))


def test_visit_summary_records_the_fallbacks_and_is_accurate(chain, sim_repo):
    root, visit, zp_det, sparse_det = chain["root"], chain["visit"], chain["zp_det"], chain["sparse_det"]
    summary = chain["summary"]
    assert summary.status == "degraded" and summary.ok
    degraded = summary.summary["degraded_detectors"]
    assert str(zp_det) in degraded and str(sparse_det) in degraded and not summary.summary["missing_detectors"]
    path = visit_summary_path(Repository(root), visit)
    table = read_visit_summary(path)
    rows = {int(r["detector"]): r for r in table}
    zp_row = rows[zp_det]
    assert str(zp_row["status"]) == "degraded" and "zero point: the visit's " in str(zp_row["message"])
    assert "visit-level ap corr" in str(rows[sparse_det]["message"])
    with fits.open(path) as hdul:
        assert hdul["INDEX"].header["VCSTATUS"] == "degraded"
        assert set(hdul["INDEX"].header["VCDEGDT"].split(",")) == set(degraded)
    # the visit zero point against the truth (12-px aperture flux: the true calibration times the
    # encircled energy); the detectors' throughputs differ by 0.01 mag rms, which a visit value cannot know
    cx, cy = rows[zp_det]["psf"].average_position
    true_zp = (2.5 * math.log10(sim_repo.true_photo_calib(visit, zp_det).instflux_at_zero_magnitude)
               + 2.5 * math.log10(encircled_energy(sim_repo.true_psf(visit, zp_det), cx, cy)))
    zp = zp_row["photo_calib"].zero_point
    print(f"\nvisit-median zero point of detector {zp_det}: {1000 * (zp - true_zp):+.1f} mmag from the truth")
    assert abs(zp - true_zp) < 0.03


def test_reprocess_runs_on_the_degraded_detectors(chain):
    repo, visit = chain["repo"], chain["visit"]
    for d, st in chain["reprocessed"].items():
        assert st.ok, (d, st.error_type, st.message)
        src = read_catalog(repo.dataset_path("source", visit, d, "parquet"))
        degraded = str(d) in chain["summary"].summary["degraded_detectors"]
        assert (st.status == "degraded") is degraded and src.meta["DEGRADED"] is degraded
        if degraded:
            assert st.message.startswith("visit summary: ") and src.meta["DEGRADED_REASON"] == st.message


def test_the_visit_zero_point_gives_the_same_bytes_on_the_workers(chain, tmp_path):
    """Issue 25: the summary whose detector takes the visit's zero point (its statistics computed by a second round
    of per-detector units, after the visit zero point) comes out the same, FITS bytes and provenance, on two
    workers, in this process (the chain's, jobs=1) and with the whole visit in one process (`summarize_visit`,
    `UpdateVisitSummaryTask.run`)."""
    import json
    import shutil

    from visitcal.pipeline.visit_summary_step import summarize_visit

    root, visit, zp_det = chain["root"], chain["visit"], chain["zp_det"]
    original = visit_summary_path(chain["repo"], visit).read_bytes()
    record = json.loads(chain["repo"].visit_status_path("visit_summary", visit).read_text())
    for mode in ("whole", 2):
        dest = tmp_path / f"repo_{mode}"
        shutil.copytree(root, dest, symlinks=True,
                        ignore=shutil.ignore_patterns("visit_summary", "visit_image*", "source*", "reprocess"))
        if mode == "whole":
            status = summarize_visit(dest, visit, False)
        else:
            status, = run_visit_summary(dest, visits=[visit], jobs=mode, return_status=True)
        assert str(zp_det) in status.summary["degraded_detectors"]
        assert "zero point: the visit's" in status.summary["degraded_detectors"][str(zp_det)]
        assert visit_summary_path(Repository(dest), visit).read_bytes() == original
        again = json.loads(Repository(dest).visit_status_path("visit_summary", visit).read_text())
        assert {k: v for k, v in again.items() if k not in ("timings", "peak_rss_mb")} == \
            {k: v for k, v in record.items() if k not in ("timings", "peak_rss_mb")}
