"""Provenance that knows its inputs (issue 20): every unit records the SHA-256 of the files it read and wrote,
and a rerun redoes exactly the units whose configuration or inputs changed.

One small repository (three visits of two 1024 x 1024 detectors, one snap) is processed once through
calibrate -> associate -> finalize -> visit summaries -> reprocess; each scenario reruns the chain on its own
copy: untouched (everything skipped, no product's bytes or mtime changed), one post_isr_image with one pixel
changed (the redone units are exactly those the dependency rules name, from the files that really changed),
and one truncated preliminary_visit_image (exactly that detector fails downstream). ~40 s on two cores.
"""

from __future__ import annotations

import hashlib
import shutil

import pytest
from visitcal.cli import main
from visitcal.io import read_exposure
from visitcal.io.fits import write_exposure
from visitcal.pipeline.associate_step import run_associate
from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate
from visitcal.pipeline.finalize_step import run_finalize
from visitcal.pipeline.repository import SKIPPED, Repository
from visitcal.pipeline.reprocess_step import run_reprocess
from visitcal.pipeline.visit_summary_step import run_visit_summary
from visitcal.sim import SimConfig, simulate

SIM = SimConfig(preset="small", n_visits=3, n_detectors=2, detector_width=1024, detector_height=1024, n_snaps=1,
                seed=5, star_density=60000.0, galaxy_density=20000.0, exposure_time=60.0)
CALIBRATE = CalibrateStepConfig.preset("sparse")
STEPS = ("calibrate", "associate", "finalize", "visit_summary", "reprocess")


def run_chain(root, steps=STEPS) -> dict[str, list]:
    """Each step's unit statuses (visit summaries as statuses)."""
    runs = {"calibrate": lambda: run_calibrate(root, config=CALIBRATE, jobs=2),
            "associate": lambda: run_associate(root),
            "finalize": lambda: run_finalize(root, jobs=2),
            "visit_summary": lambda: run_visit_summary(root, return_status=True),
            "reprocess": lambda: run_reprocess(root, jobs=2, visit_summaries=False)}
    return {step: runs[step]() for step in steps}


def unit_id(status):
    return status.tract if status.tract is not None else (
        status.visit if status.detector is None else (status.visit, status.detector))


def redone(statuses) -> set:
    return {unit_id(s) for s in statuses if s.action != SKIPPED}


def products(root) -> dict[str, tuple[str, int]]:
    """``{relpath: (sha256, mtime_ns)}`` of every file but the provenance and the digest cache (``.visitcal/``)."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and "provenance" not in p.parts
            and ".visitcal" not in p.parts}


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov") / "repo"
    simulate(SIM, root)
    first = run_chain(root)
    for step, statuses in first.items():
        assert statuses and all(s.ok and s.action == "done" for s in statuses), (step, statuses)
    return root


@pytest.fixture
def repo_copy(processed, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(processed, root, symlinks=True)  # copy2: mtimes preserved
    return root


def test_provenance_records_input_and_output_digests(processed):
    repo = Repository(processed)
    st = repo.read_status("reprocess", 1000, 0)
    background = "preliminary_visit_image_background/001000/preliminary_visit_image_background_001000_000.fits"
    assert set(st.inputs) >= {"visit_summary/visit_summary_001000.fits",
                              "post_isr_image/001000/post_isr_image_001000_000_0.fits", background}
    for rel, digest in {**st.inputs, **st.outputs}.items():
        assert hashlib.sha256((processed / rel).read_bytes()).hexdigest() == digest, rel
    vs = repo.read_visit_status("visit_summary", 1001)
    assert vs.ok and "refit_psf_models/refit_psf_models_001001.fits" in vs.inputs
    assert any(k.startswith("isolated_star/") for k in repo.read_status("finalize", 1002, 1).inputs)


def test_untouched_rerun_skips_everything_and_changes_nothing(repo_copy, capsys):
    before = products(repo_copy)
    again = run_chain(repo_copy)
    for step, statuses in again.items():
        assert statuses and all(s.action == SKIPPED and s.ok for s in statuses), (step, [s.action for s in statuses])
    assert products(repo_copy) == before
    # the command line prints skipped units as such, not their old table
    assert main(["reprocess", str(repo_copy)]) == 0
    out = capsys.readouterr().out
    assert out.count(SKIPPED) == 3 + 6 and " done" not in out and "6 of 6 detectors reprocessed" in out
    assert products(repo_copy) == before


def test_one_changed_post_isr_image_redoes_exactly_its_dependents(repo_copy):
    repo = Repository(repo_copy)
    visit, det = 1000, 0
    snap = repo.post_isr_snaps()[(visit, det)][0]
    exp = read_exposure(snap)
    exp.image[512, 512] += 2000.0  # one pixel
    write_exposure(exp, snap, overwrite=True)
    before = products(repo_copy)
    again = run_chain(repo_copy)
    after = products(repo_copy)
    changed = {rel for rel in after if before.get(rel, ("",))[0] != after[rel][0]}
    # an unchanged product kept its bytes and its mtime
    assert all(after[rel] == before[rel] for rel in after if rel not in changed)

    def touched(dataset, v=None, d=None):
        stem = dataset + "_" + ("" if v is None else f"{v:06d}") + ("" if d is None else f"_{d:03d}")
        return any(rel.split("/")[-1].startswith(stem) for rel in changed if rel.startswith(dataset + "/"))

    ids = repo.data_ids()
    visits = sorted({v for v, _ in ids})
    tracts = {s.tract for s in again["associate"]}
    expected = {
        "calibrate": {(visit, det)},
        # a tract reads the single_visit_star tables of every calibrated detector whose sources reach it
        "associate": tracts if touched("single_visit_star", visit, det) else set(),
        # a visit reads its detectors' tables and calexps and every tract's isolated-star tables
        "finalize": {(v, d) for v, d in ids if touched("isolated_star") or touched("isolated_star_association")
                     or touched("single_visit_star", v)
                     or touched("preliminary_visit_image", v)},
        # a visit summary reads refit_psf_models, refit_psf_star and its detectors' calexps and backgrounds
        "visit_summary": {v for v in visits if touched("refit_psf_models", v) or touched("refit_psf_star", v)
                          or touched("preliminary_visit_image", v)},
        # a detector reads its snaps, its background and calexp (mask planes), its visit's summary and star table
        "reprocess": {(v, d) for v, d in ids if (v, d) == (visit, det) or touched("visit_summary", v)
                      or touched("refit_psf_star", v) or touched("preliminary_visit_image", v, d)},
    }
    assert touched("preliminary_visit_image", visit, det)  # the change reached calibrate's products
    for step in STEPS:
        assert redone(again[step]) == expected[step], step
        assert all(s.ok for s in again[step]), step
    cal = {unit_id(s): s for s in again["calibrate"]}
    assert cal[(visit, det)].action == "redone (input changed: post_isr_image_001000_000_0.fits)"
    for step in STEPS[1:]:
        assert all(s.action.startswith("redone (input changed: ") for s in again[step] if s.action != SKIPPED)
    # a second rerun: all up to date
    assert all(s.action == SKIPPED for sts in run_chain(repo_copy).values() for s in sts)


def test_truncated_calexp_fails_exactly_that_detector(repo_copy):
    repo = Repository(repo_copy)
    visit, det = 1001, 1
    calexp = repo.dataset_path("preliminary_visit_image", visit, det, "fits")
    data = calexp.read_bytes()
    calexp.write_bytes(data[: len(data) // 2])
    again = run_chain(repo_copy, steps=STEPS[2:])
    for step in ("finalize", "reprocess"):
        bad = [s for s in again[step] if (s.visit, s.detector) == (visit, det)]
        assert len(bad) == 1 and not bad[0].ok and bad[0].error_type, step
        assert all(s.ok for s in again[step] if (s.visit, s.detector) != (visit, det)), step
    fin = {unit_id(s): s for s in again["finalize"]}
    assert str(calexp) in fin[(visit, det)].message and "cannot be read" in fin[(visit, det)].message
    assert fin[(visit, 1 - det)].ok and fin[(visit, 1 - det)].action.startswith("redone (input changed: ")
    assert redone(again["finalize"]) == {(visit, 0), (visit, 1)}  # the other visits read nothing that changed
    summaries = {s.visit: s for s in again["visit_summary"]}
    assert set(summaries[visit].summary["failed_detectors"]) == {str(det)}
    # a summary that lost a calibrated detector is degraded (done, not failed), naming it
    assert summaries[visit].status == "degraded" and summaries[visit].ok
    assert set(summaries[visit].summary["missing_detectors"]) == {str(det)}
    assert f"detector {det}: no row" in summaries[visit].message and str(calexp) in summaries[visit].message
    assert summaries[visit].summary["n_detectors"] == 1
    # the other visits: complete (ok, or degraded by a detector's own aperture-correction order step-down)
    assert all(s.ok and s.summary["failed_detectors"] == {} and not s.summary.get("missing_detectors")
               for v, s in summaries.items() if v != visit)
    # calibrate sees its product altered and redoes it; then the detector comes back everywhere
    cal = {unit_id(s): s for s in run_calibrate(repo_copy, config=CALIBRATE, jobs=2)}
    assert cal[(visit, det)].action == "redone (output changed: preliminary_visit_image_001001_001.fits)"
    assert all(s.action == SKIPPED for k, s in cal.items() if k != (visit, det))
    final = run_chain(repo_copy, steps=STEPS[1:])
    assert all(s.ok for sts in final.values() for s in sts)


def test_a_detector_that_lost_its_finalize_calibration_degrades_its_visit_summary(repo_copy, capsys):
    """Issue 20, "no wrong product ever marked ok": a detector calibrated ok whose finalize failed (its
    refit_psf_models row without a PSF or ap-corr map) leaves its visit summary ``degraded``, naming it in the
    provenance, the FITS header and the summary lines; the other visits stay ok; the summary counts as done:
    reprocess runs the visit's other detector and records the lost one as an upstream failure."""
    from astropy.io import fits

    from visitcal.pipeline.status import repository_status
    from visitcal.pipeline.visit_summary_step import summary_lines, visit_summary_path
    from visitcal.tasks.finalize_characterization import read_psf_ap_corr_cat, write_psf_ap_corr_cat

    repo = Repository(repo_copy)
    visit, det = 1002, 0
    models_path = repo_copy / "refit_psf_models" / f"refit_psf_models_{visit:06d}.fits"
    models = read_psf_ap_corr_cat(models_path)
    row = list(models["detector"]).index(det)
    models["psf"][row], models["ap_corr_map"][row] = None, None
    for name in ("status", "message"):
        models[name] = models[name].astype("U64")
    models["status"][row], models["message"][row] = "failed", "too few PSF stars"
    write_psf_ap_corr_cat(models, models_path, overwrite=True)
    statuses = {s.visit: s for s in run_visit_summary(repo_copy, return_status=True)}
    vs = statuses[visit]
    assert vs.status == "degraded" and vs.ok and vs.degraded and vs.error_type is None
    assert vs.action.startswith("redone (input changed: refit_psf_models_001002.fits")
    assert list(vs.summary["missing_detectors"]) == [str(det)] and vs.summary["failed_detectors"] == {}
    assert f"detector {det}: no psf, ap_corr_map" in vs.message and "too few PSF stars" in vs.message
    assert repo.read_visit_status("visit_summary", visit).status == "degraded"
    assert all(s.status == "ok" and s.action == SKIPPED for v, s in statuses.items() if v != visit)
    with fits.open(visit_summary_path(repo, visit)) as hdul:
        header = hdul["INDEX"].header
        assert header["VCSTATUS"] == "degraded" and header["VCMISSDT"] == str(det)
        assert f"detector {det}: no psf" in header["VCREASON"]
    with fits.open(visit_summary_path(repo, 1001)) as hdul:
        assert "VCSTATUS" not in hdul["INDEX"].header  # a complete summary: no such keyword
    lines = summary_lines(list(statuses.values()))
    assert any(line.split()[:4] == [str(visit), "degraded", "2", str(det)] for line in lines)
    assert any(f"detector {det}: no psf" in line for line in lines)
    # status: done (up to date), listed as degraded with its reason
    states = {st.step: st for st in repository_status(repo_copy)}
    assert str(visit) in states["visit_summary"].done and list(states["visit_summary"].degraded) == [str(visit)]
    assert main(["status", str(repo_copy), "--preset", "sparse"]) == 0
    assert f"visit_summary degraded: {visit}: visit {visit}: 1 calibrated detector(s)" in capsys.readouterr().out
    # a rerun skips it (still degraded); reprocess runs the visit's other detector from it
    again = {s.visit: s for s in run_visit_summary(repo_copy, return_status=True)}
    assert again[visit].action == SKIPPED and again[visit].degraded
    rep = {s.detector: s for s in run_reprocess(repo_copy, visits=[visit], visit_summaries=False)}
    assert rep[det].error_type == "UpstreamFailureNoWorkFound" and "no psf" in rep[det].message
    assert rep[1 - det].status == "ok"
