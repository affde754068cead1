"""``kill -9`` of ``visitcal run`` (issue 20): a run killed inside calibrate, finalize or reprocess leaves no
worker behind (the parent-death signal), and a rerun finishes with exit 0, leaves no temporary file, partial
file or lock, skips the units that had finished before the kill and redoes the others, giving the same bytes
as a run that was never interrupted.

The repository: 2 visits x 2 detectors of 1024 x 1024 px, one snap (about 60 s on two cores for the module).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("galsim", reason="visitcal.sim needs GalSim (pip install 'visitcal[sim]')")

from visitcal.sim import SimConfig, simulate  # noqa: E402

from .helpers import CHAIN_SIM, product_digests  # noqa: E402

CONFIG = SimConfig(**CHAIN_SIM)


def _products_of(root):
    """Digests of every product, the inputs (post_isr_image, truth) included."""
    return product_digests(root, skip=("provenance/",))


N_DETECTORS = 2
SKIPPED = "skipped (up to date)"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")


def _env() -> dict:
    # the subprocesses import the same visitcal as this test (a source tree on PYTHONPATH or the installed one)
    import visitcal

    env = dict(os.environ)
    package_parent = str(Path(visitcal.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_parent, env.get("PYTHONPATH")] if p)
    return env


def _command(root) -> list[str]:
    return [sys.executable, "-m", "visitcal.cli", "run", str(root), "-j", "2", "--preset", "sparse"]


def _run(root) -> subprocess.CompletedProcess:
    return subprocess.run(_command(root), env=_env(), capture_output=True, text=True, timeout=600)




def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None if it is gone or a zombie (it has died)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, starttime field 22
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """``{pid: start time}`` of every live descendant of ``pid`` (from /proc/<pid>/task/*/children)."""
    out = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                start = _start_time(child)
                if start is not None and child not in out:
                    out[child] = start
                    todo.append(child)
    return out


def _ok_records(root: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every provenance record whose status is ok."""
    import json

    out = {}
    for path in sorted((root / "provenance").rglob("*.json")):
        data = path.read_bytes()
        try:
            if json.loads(data).get("status") == "ok":
                out[path.relative_to(root).as_posix()] = data
        except ValueError:
            pass
    return out


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill") / "sim"
    simulate(CONFIG, root)
    return root


@pytest.fixture(scope="module")
def uninterrupted(sim, tmp_path_factory):
    root = tmp_path_factory.mktemp("kill") / "uninterrupted"
    shutil.copytree(sim, root)
    proc = _run(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return _products_of(root)


@pytest.mark.parametrize("step", ["calibrate", "finalize", "reprocess"])
def test_kill_9_inside_a_step_then_rerun(step, sim, uninterrupted, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(sim, root)
    marker = root / "provenance" / step
    log = tmp_path / "killed.log"
    seen: dict[int, int] = {}
    with open(log, "w") as out:
        proc = subprocess.Popen(_command(root), env=_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (marker.is_dir() and any(marker.glob("*.json"))):  # the step's first unit has finished
            assert proc.poll() is None, f"the run ended before {step}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{step} not reached:\n{log.read_text()}"
            seen.update(_descendants(proc.pid))
            time.sleep(0.01)
        seen.update(_descendants(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()  # no-op when already dead
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # its workers were running the step: they die with it (parent-death signal)
    assert seen, "no worker process was seen"
    deadline = time.monotonic() + 5
    while (alive := {p for p, start in seen.items() if _start_time(p) == start}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"worker processes {sorted(alive)} survived the kill of {proc.pid}"

    finished = _ok_records(root)
    assert any(k.startswith(f"provenance/{step}/") for k in finished)
    rerun = _run(root)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    leftovers = [p.relative_to(root).as_posix() for p in root.rglob("*")
                 if ".tmp" in p.name or ".partial" in p.name or p.name.startswith(".visitcal.lock")]
    assert not leftovers, leftovers
    assert _products_of(root) == uninterrupted

    # the units finished before the kill were skipped (their records untouched); finalize's unit is the
    # visit, so a visit with only some of its detectors recorded is redone
    assert rerun.stdout.count(SKIPPED) >= 1, rerun.stdout
    by_visit: dict[str, int] = {}
    for rel in finished:
        if rel.startswith("provenance/finalize/"):
            by_visit[Path(rel).stem.split("_")[0]] = by_visit.get(Path(rel).stem.split("_")[0], 0) + 1
    expected_skipped = [rel for rel in finished if not rel.startswith("provenance/finalize/")
                        or by_visit[Path(rel).stem.split("_")[0]] == N_DETECTORS]
    assert expected_skipped
    rewritten = [rel for rel in expected_skipped if (root / rel).read_bytes() != finished[rel]]
    assert not rewritten, f"finished before the kill but redone: {rewritten}\n{rerun.stdout}"
    assert rerun.stdout.count(SKIPPED) >= len(expected_skipped)
