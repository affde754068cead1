"""``visitcal run`` and ``visitcal status`` (issue 20): the whole chain in one command gives the same bytes
as the steps chained by hand, a rerun skips everything, a removed product is reported out of date and
redone alone, a second writer is refused by the repository lock, and a worker that dies on one detector
fails that detector only (``WorkerCrashed``) while the chain finishes the others.

The repository: 2 visits x 2 detectors of 1024 x 1024 px (about 60 s on two cores for the module)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import sys

import pytest

pytest.importorskip("galsim", reason="visitcal.sim needs GalSim (pip install 'visitcal[sim]')")

from visitcal.cli import main  # noqa: E402
from visitcal.pipeline import calibrate_step  # noqa: E402
from visitcal.pipeline.lock import repository_lock  # noqa: E402
from visitcal.pipeline.repository import Repository  # noqa: E402
from visitcal.sim import SimConfig, simulate  # noqa: E402

from .helpers import CHAIN_SIM, product_digests  # noqa: E402

CONFIG = SimConfig(**CHAIN_SIM)
STEPS = ("calibrate", "associate", "finalize", "visit_summary", "reprocess")




@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("run") / "sim"
    simulate(CONFIG, root)
    return root


@pytest.fixture(scope="module")
def processed(sim, tmp_path_factory):
    root = tmp_path_factory.mktemp("run") / "repo"
    shutil.copytree(sim, root)
    assert main(["run", str(root), "-j", "2", "--preset", "sparse"]) == 0
    return root


def test_run_equals_the_steps_by_hand(sim, processed, tmp_path):
    by_hand = tmp_path / "by_hand"
    shutil.copytree(sim, by_hand)
    for argv in (["calibrate", str(by_hand), "--preset", "sparse"], ["associate", str(by_hand)],
                 ["finalize", str(by_hand)], ["reprocess", str(by_hand)]):
        assert main(argv) == 0, argv
    ours, theirs = product_digests(processed), product_digests(by_hand)
    assert len(ours) > 30 and set(ours) == set(theirs)
    assert ours == theirs


def test_rerun_skips_and_status_is_clean(processed, capsys):
    before = {p: p.stat().st_mtime_ns for p in processed.rglob("*.fits")}
    capsys.readouterr()
    assert main(["run", str(processed), "-j", "2", "--preset", "sparse"]) == 0
    out = capsys.readouterr().out
    for step, n in zip(STEPS, (4, 1, 4, 2, 4)):
        assert re.search(rf"== {step}: {n} units, {n} done \(\d+ degraded, {n} skipped, up to date\), 0 failed", out)
    assert {p: p.stat().st_mtime_ns for p in processed.rglob("*.fits")} == before
    # compared with the configuration of the run (without --preset, status compares with the lsst preset's)
    assert main(["status", str(processed), "--json", "--preset", "sparse"]) == 0
    states = {s["step"]: s for s in json.loads(capsys.readouterr().out)}
    assert [states[s]["done"] for s in STEPS] == [4, 1, 4, 2, 4]
    assert all(states[s]["out_of_date"] == states[s]["failed"] == states[s]["missing"] == 0 for s in STEPS)
    assert main(["info", str(processed)]) == 0  # info on a processed repository shows where it stands too
    info = capsys.readouterr().out.splitlines()
    k = next(i for i, line in enumerate(info) if line.strip().startswith("status ("))
    assert info[k + 1].split() == ["step", "done", "out", "of", "date", "failed", "missing"]
    assert [line.split() for line in info[k + 2:k + 7]] == [[s, str(n), "0", "0", "0"]
                                                           for s, n in zip(STEPS, (4, 1, 4, 2, 4))]


def test_a_removed_product_is_out_of_date_and_redone_alone(processed, tmp_path, capsys):
    root = tmp_path / "repo"
    shutil.copytree(processed, root)
    repo = Repository(root)
    repo.dataset_path("visit_image", 1001, 1, "fits").unlink()
    capsys.readouterr()
    assert main(["status", str(root), "--json", "--preset", "sparse"]) == 0
    states = {s["step"]: s for s in json.loads(capsys.readouterr().out)}
    assert states["reprocess"]["units"]["out_of_date"] == ["1001/1"]
    assert states["reprocess"]["units"]["reasons"] == {"1001/1": "output missing: visit_image_001001_001.fits"}
    assert sum(states[s]["out_of_date"] for s in STEPS) == 1
    assert main(["run", str(root), "--preset", "sparse"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()
             if not line.startswith("==") and ("redone" in line or line.endswith(" done"))]
    assert len(lines) == 1 and lines[0].split()[:2] == ["1001", "1"] and "output" in lines[0]
    assert product_digests(root) == product_digests(processed)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_verbose_records_never_share_the_progress_line_and_quiet_prints_one_line(processed, tmp_path, capsys,
                                                                                  monkeypatch):
    root = tmp_path / "repo"
    shutil.copytree(processed, root)
    Repository(root).dataset_path("visit_image", 1000, 0, "fits").unlink()
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["run", str(root), "--preset", "sparse", "-v"]) == 0
    screen = [line.split("\r\033[K")[-1] for line in term.getvalue().split("\n")]
    records = [line for line in screen if line.startswith("INFO visitcal.")]
    assert records  # reprocess's info lines (cosmic rays, deblending, ...)
    assert not any("INFO" in line and "] " in line.split("INFO")[0] for line in screen)  # never after a bar
    bars = [line for line in screen if line.startswith("[")]
    assert "100%" in bars[-1] and "step 5/5 reprocess 4/4" in bars[-1] and "ETA 0:00" in bars[-1]
    assert [line.split("step ")[1][:3] for line in bars] == ["1/5", "2/5", "3/5", "4/5", "5/5"]  # one per step
    monkeypatch.setattr(sys, "stderr", term := _Terminal())
    capsys.readouterr()
    assert main(["run", str(root), "--preset", "sparse", "-q"]) == 0
    assert term.getvalue() == ""
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("chain finished with 0 failed unit(s)")
    assert product_digests(root) == product_digests(processed)


def test_a_second_writer_is_refused(processed, capsys):
    with repository_lock(processed):
        capsys.readouterr()
        assert main(["run", str(processed), "--preset", "sparse"]) == 1
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}" in err and ".visitcal.lock" in err
    assert not (processed / ".visitcal.lock").exists()


def crashing_calibrate(root, visit, detector, *args):
    """`calibrate_detector` whose worker dies (SIGKILL) on visit 1000 detector 1 (used in a forked worker)."""
    if (visit, detector) == (1000, 1):
        os.kill(os.getpid(), signal.SIGKILL)
    return calibrate_step._real_calibrate_detector(root, visit, detector, *args)


def test_a_crashed_worker_fails_one_detector_and_the_chain_goes_on(sim, tmp_path, monkeypatch, capsys):
    root = tmp_path / "repo"
    shutil.copytree(sim, root)
    # the pool's workers are forked from this process, so they see the patched module attribute
    monkeypatch.setattr(calibrate_step, "_real_calibrate_detector", calibrate_step.calibrate_detector, raising=False)
    monkeypatch.setattr(calibrate_step, "calibrate_detector", crashing_calibrate)
    assert main(["run", str(root), "-j", "2", "--preset", "sparse"]) == 3
    repo = Repository(root)
    crashed = repo.read_status("calibrate", 1000, 1)
    assert crashed.error_type == "WorkerCrashed" and "signal 9" in crashed.message
    for visit, detector in [(1000, 0), (1001, 0), (1001, 1)]:
        assert repo.read_status("calibrate", visit, detector).ok
        assert repo.read_status("reprocess", visit, detector).ok
    # reprocess records the missing upstream product as LSST does (UpstreamFailureNoWorkFound)
    assert repo.read_status("reprocess", 1000, 1).error_type == "UpstreamFailureNoWorkFound"
    capsys.readouterr()
    assert main(["status", str(root), "--json"]) == 0
    states = {s["step"]: s for s in json.loads(capsys.readouterr().out)}
    assert states["calibrate"]["failed_by_type"] == {"WorkerCrashed": 1}


def test_status_sees_a_changed_configuration(processed, tmp_path, capsys):
    """``visitcal status`` compares each unit's config hash with the one its step computes from the configuration
    a rerun would use (``--preset``/``--config`` as ``visitcal run``; the lsst preset without them): a changed
    calibrate configuration puts exactly calibrate's units out of date, "config changed"."""
    from visitcal.pipeline.calibrate_step import CalibrateStepConfig
    from visitcal.pipeline.chain import RunConfig
    from visitcal.pipeline.status import repository_status

    def out_of_date(states):
        return {st.step: st.reasons for st in states if st.reasons}

    sparse = CalibrateStepConfig.preset("sparse")
    assert out_of_date(repository_status(processed, config=RunConfig(calibrate=sparse))) == {}
    calibrate_units = {"1000/0", "1000/1", "1001/0", "1001/1"}
    changed = RunConfig(calibrate=sparse.model_copy(update={"calibrate": sparse.calibrate.model_copy(
        update={"astrometry": sparse.calibrate.astrometry.model_copy(update={"max_iter": 7})})}))
    assert out_of_date(repository_status(processed, config=changed)) == {
        "calibrate": {unit: "config changed" for unit in calibrate_units}}
    # the files only, without a configuration (the library's default)
    assert out_of_date(repository_status(processed)) == {}
    # visitcal status without --preset/--config compares with the defaults, the lsst preset: calibrate only
    capsys.readouterr()
    assert main(["status", str(processed)]) == 0
    out = capsys.readouterr().out
    assert "calibrate out of date: 1000/0 (config changed)" in out and "--preset lsst" in out
    assert [line.split()[:3] for line in out.splitlines()[1:6]] == [
        ["calibrate", "0", "4"], ["associate", "1", "0"], ["finalize", "4", "0"], ["visit_summary", "2", "0"],
        ["reprocess", "4", "0"]]
    # --config as visitcal run takes it: only the fields it changes, laid over --preset
    path = tmp_path / "finalize.json"
    path.write_text(json.dumps({"finalize": {"finalize": {"psf_determiner": {"name": "pca"}}}}))
    assert main(["status", str(processed), "--json", "--preset", "sparse", "--config", str(path)]) == 0
    states = {s["step"]: s for s in json.loads(capsys.readouterr().out)}
    assert {s: states[s]["out_of_date"] for s in STEPS} == {
        "calibrate": 0, "associate": 0, "finalize": 4, "visit_summary": 0, "reprocess": 0}
    assert set(states["finalize"]["units"]["reasons"].values()) == {"config changed"}
    path.write_text(json.dumps({"finalize": {"no_such_field": 1}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["status", str(processed), "--config", str(path)])
    assert exit_info.value.code == 2 and "no_such_field" in capsys.readouterr().err
