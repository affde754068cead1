"""A unit whose worker died twice with the same config and inputs is not run again (issue 20): its record
counts the crashes (`crashed_unit_status`), `Repository.unit_action` answers `SKIPPED_CRASHED`, and the
calibrate, finalize and reprocess steps return the recorded failure without running the unit, until its
inputs or config change or ``overwrite``.

The steps run on a fake repository (placeholder files) with the first thing each unit reads replaced by a
function that SIGKILLs its process: the runner's pool forks, so the workers run the patched module
attribute; nothing here needs GalSim.
"""

from __future__ import annotations

import os
import signal

import pytest

from visitcal.pipeline import calibrate_step, finalize_step, reprocess_step
from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate
from visitcal.pipeline.finalize_step import run_finalize
from visitcal.pipeline.repository import (SKIPPED, SKIPPED_CRASHED, Repository, UnitStatus, crashed_unit_status,
                                          unit_line)
from visitcal.pipeline.reprocess_step import run_reprocess
from visitcal.pipeline.visit_summary_step import visit_summary_path

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the runner's pool forks")

VISIT, DETECTORS = 1000, (0, 1)


def _die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def _fake_repo(root):
    """Placeholder post_isr_image snaps and refcat, calibrate records ok with their products, an (empty)
    association and a visit summary: enough for each step to reach its unit's first read."""
    root.mkdir()
    repo = Repository(root)
    (root / "refcat.parquet").write_bytes(b"refcat")
    (root / "isolated_star_association").mkdir()
    for d in DETECTORS:
        snap = root / "post_isr_image" / f"{VISIT:06d}" / f"post_isr_image_{VISIT:06d}_{d:03d}_000.fits"
        snap.parent.mkdir(parents=True, exist_ok=True)
        snap.write_bytes(b"snap %d" % d)
        for name, ext in (("single_visit_star", "parquet"), ("preliminary_visit_image", "fits"),
                          ("preliminary_visit_image_background", "fits")):
            path = repo.dataset_path(name, VISIT, d, ext)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{name} {d}".encode())
    vs = visit_summary_path(repo, VISIT)
    vs.parent.mkdir(parents=True, exist_ok=True)
    vs.write_bytes(b"visit summary")
    return repo


def _set_calibrate_ok(repo):
    for d in DETECTORS:  # finalize's inputs: the detectors whose calibrate record is ok
        repo.write_status(UnitStatus(step="calibrate", visit=VISIT, detector=d, status="ok"))


STEPS = {
    # step: (module attribute the unit reads first, run function)
    "calibrate": (calibrate_step, "read_summed_snaps", lambda root, **kw: run_calibrate(root, jobs=2, **kw)),
    # the visit unit, and the per-detector path (its first unit, on a worker, reads the band)
    "finalize": (finalize_step, "_band", lambda root, **kw: run_finalize(root, jobs=2, **kw)),
    "finalize-split": (finalize_step, "_band", lambda root, **kw: run_finalize(root, jobs=2, split=True, **kw)),
    "reprocess": (reprocess_step, "read_visit_summary",
                  lambda root, **kw: run_reprocess(root, jobs=2, visit_summaries=False, **kw)),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_unit_that_crashed_twice_is_not_retried_until_its_inputs_change(step, tmp_path, monkeypatch):
    module, attribute, run = STEPS[step]
    step = step.split("-")[0]
    repo = _fake_repo(tmp_path / "repo")
    _set_calibrate_ok(repo)
    monkeypatch.setattr(module, attribute, _die)

    def records():
        return [repo.read_status(step, VISIT, d) for d in DETECTORS]

    first = run(repo.root)
    assert [s.error_type for s in first] == ["WorkerCrashed"] * 2
    assert all("signal 9" in s.message for s in first)
    assert [s.crashes for s in records()] == [1, 1]
    assert all(s.config_hash and s.inputs for s in records())
    assert all(s.action == "done" for s in first)

    second = run(repo.root)  # redone: crashed once only
    assert [s.error_type for s in second] == ["WorkerCrashed"] * 2
    assert [s.crashes for s in records()] == [2, 2]

    paths = [repo.status_path(step, VISIT, d) for d in DETECTORS]
    before = [p.read_bytes() for p in paths]
    third = run(repo.root)  # not run: it would have died a third time
    assert [s.action for s in third] == [SKIPPED_CRASHED] * 2
    assert [s.error_type for s in third] == ["WorkerCrashed"] * 2 and not any(s.ok or s.skipped for s in third)
    assert [p.read_bytes() for p in paths] == before
    line = unit_line(third[0], "1000 0", "WorkerCrashed")
    assert line.endswith(SKIPPED_CRASHED) and SKIPPED not in line

    # overwrite runs it again (and it crashes again: a third crash with the same config and inputs)
    run(repo.root, overwrite=True)
    assert [s.crashes for s in records()] == [3, 3]

    # an input that changes makes it run again, and the count starts over
    snap = repo.post_isr_snaps()[(VISIT, 0)][0] if step != "finalize" else \
        repo.dataset_path("single_visit_star", VISIT, 0, "parquet")
    snap.write_bytes(b"changed")
    fourth = run(repo.root)
    assert fourth[0].action != SKIPPED_CRASHED  # it ran (and died: its crash record)
    assert records()[0].crashes == 1
    if step == "finalize":  # the visit is one unit: both detectors ran
        assert [s.crashes for s in records()] == [1, 1]
    else:  # the other detector's inputs did not change: still left alone
        assert records()[1].crashes == 3 and fourth[1].action == SKIPPED_CRASHED


def test_a_config_change_runs_it_again(tmp_path, monkeypatch):
    repo = _fake_repo(tmp_path / "repo")
    monkeypatch.setattr(calibrate_step, "read_summed_snaps", _die)
    for _ in range(2):
        run_calibrate(repo.root, jobs=2)
    assert [s.action for s in run_calibrate(repo.root, jobs=2)] == [SKIPPED_CRASHED] * 2
    statuses = run_calibrate(repo.root, jobs=2, config=CalibrateStepConfig.preset("sparse"))
    assert [s.error_type for s in statuses] == ["WorkerCrashed"] * 2
    assert [repo.read_status("calibrate", VISIT, d).crashes for d in DETECTORS] == [1, 1]


def test_unit_action_and_crash_count(tmp_path):
    repo = Repository(tmp_path)
    inputs = {"a.fits": "1" * 64}
    first, = crashed_unit_status("calibrate", tmp_path, VISIT, [0], "worker died (signal 9, SIGKILL)", "h", inputs)
    assert first.crashes == 1
    assert repo.unit_action(first, "h", inputs, []).startswith("redone (previous run failed: WorkerCrashed")
    second, = crashed_unit_status("calibrate", tmp_path, VISIT, [0], "worker died", "h", inputs)
    assert second.crashes == 2 and repo.read_status("calibrate", VISIT, 0).crashes == 2
    assert repo.unit_action(second, "h", inputs, []) == SKIPPED_CRASHED
    redone = "redone (previous run failed: WorkerCrashed)"
    assert repo.unit_action(second, "other", inputs, []) == redone
    assert repo.unit_action(second, "h", {"a.fits": "2" * 64}, []) == redone
    assert repo.unit_action(second, "h", {**inputs, "b.fits": "3" * 64}, []) == redone
    assert repo.unit_action(second, "h", inputs, [], overwrite=True) == "redone (overwrite)"
    # another config or other inputs: the count starts over
    assert crashed_unit_status("calibrate", tmp_path, VISIT, [0], "m", "h2", inputs)[0].crashes == 1
    # a crash without config hash and inputs (an older caller) is never skipped
    a, = crashed_unit_status("calibrate", tmp_path, VISIT, [1], "m")
    b, = crashed_unit_status("calibrate", tmp_path, VISIT, [1], "m")
    assert (a.crashes, b.crashes) == (1, 1) and repo.unit_action(b, "h", {}, []) != SKIPPED_CRASHED
    # a failure of another type is always redone
    failed = UnitStatus(step="calibrate", visit=VISIT, detector=0, status="failed", error_type="PsfError",
                        config_hash="h", inputs=inputs, crashes=5)
    assert repo.unit_action(failed, "h", inputs, []).startswith("redone (previous run failed: PsfError")
    # a record written before ``crashes`` existed reads as 0 crashes
    legacy = repo.status_path("calibrate", VISIT, 2)
    legacy.write_text('{"step": "calibrate", "visit": 1000, "detector": 2, "status": "failed", '
                      '"error_type": "WorkerCrashed"}')
    assert repo.read_status("calibrate", VISIT, 2).crashes == 0
