"""`run_units` survives workers that die: the crashed unit fails alone, its neighbours keep their results,
and the workers die with their parent."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import visitcal
from visitcal.pipeline.runner import WorkerCrashed, run_units

#: The folder holding the visitcal this test imports (installed, or a source tree on PYTHONPATH), for subprocesses.
PYTHON_DIR = Path(visitcal.__file__).resolve().parents[1]


def square_or_die(k: int, victim: int, how: str) -> int:
    """``k * k``, except for unit ``victim``, whose process dies by ``how``."""
    if k == victim:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "segfault":
            faulthandler.disable()  # pytest's traceback dump would only add noise to the log
            ctypes.string_at(0)
        elif how == "exit":
            os._exit(3)
    return k * k


def raise_on_three(k: int) -> int:
    if k == 3:
        raise ValueError("unit 3 is bad")
    return k


def test_a_killed_worker_fails_only_its_unit():
    units = [(k, 4, "kill") for k in range(6)]
    seen = []
    results = run_units(square_or_die, units, jobs=2, progress=lambda done, total, label: seen.append(done))
    crash = results[4]
    assert isinstance(crash, WorkerCrashed)
    assert crash.unit == (4, 4, "kill") and crash.signal == signal.SIGKILL
    assert "worker died (signal 9, SIGKILL)" in str(crash)
    assert results[:4] + results[5:] == [0, 1, 4, 9, 25]
    assert seen == list(range(7))  # 0 at the start, then once per unit
    copy = pickle.loads(pickle.dumps(crash))
    assert (copy.unit, copy.signal, str(copy)) == (crash.unit, crash.signal, str(crash))


def test_a_segfault_uses_the_crashed_callback():
    units = [(k, 1, "segfault") for k in range(6)]
    results = run_units(square_or_die, units, jobs=2, crashed=lambda unit, message: ("failed", unit[0], message))
    assert results[1] == ("failed", 1, "worker died (signal 11, SIGSEGV)")
    assert [r for k, r in enumerate(results) if k != 1] == [0, 4, 9, 16, 25]


def test_an_exit_without_result_reports_the_exit_code():
    results = run_units(square_or_die, [(k, 0, "exit") for k in range(3)], jobs=2)
    assert isinstance(results[0], WorkerCrashed) and results[0].signal is None
    assert "worker died (exit code 3)" in str(results[0])
    assert results[1:] == [1, 4]


def test_exceptions_still_propagate_and_serial_path_is_unchanged():
    with pytest.raises(ValueError, match="unit 3 is bad"):
        run_units(raise_on_three, [(k,) for k in range(5)], jobs=2)
    with pytest.raises(ValueError, match="unit 3 is bad"):
        run_units(raise_on_three, [(k,) for k in range(5)], jobs=1)
    assert run_units(square_or_die, [(k, -1, "kill") for k in range(4)], jobs=1) == [0, 1, 4, 9]
    assert run_units(square_or_die, [(k, -1, "kill") for k in range(5)], jobs=3) == [0, 1, 4, 9, 16]


def test_workers_die_with_a_killed_parent(tmp_path):
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(PYTHON_DIR)!r})
        from visitcal.pipeline.runner import run_units

        def nap(k):
            with open({str(pids)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(60)

        if __name__ == "__main__":
            run_units(nap, [(k,) for k in range(4)], jobs=2)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(_read_pids(pids)) < 2:
            time.sleep(0.05)
        workers = _read_pids(pids)
        assert len(workers) == 2
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, maybe not at once)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def thread_settings(k: int) -> tuple:
    return k, os.environ.get("OMP_NUM_THREADS"), os.environ.get("OPENBLAS_NUM_THREADS")


def test_workers_use_one_native_thread():
    assert run_units(thread_settings, [(0,), (1,)], jobs=2) == [(0, "1", "1"), (1, "1", "1")]


def test_a_broken_caller_executor_is_replaced():
    import concurrent.futures as cf

    with cf.ProcessPoolExecutor(2) as executor:
        results = run_units(square_or_die, [(k, 2, "kill") for k in range(5)], executor=executor, jobs=2)
    assert isinstance(results[2], WorkerCrashed) and results[2].signal == signal.SIGKILL
    assert [r for k, r in enumerate(results) if k != 2] == [0, 1, 9, 16]


def test_worker_count_visit_chunks_and_digest_files(tmp_path):
    """Issue 25's helpers of the per-detector paths: how many units run at once (jobs, a process pool's workers),
    the groups of visits handed out together (closed at ``target`` units), and the inputs' SHA-256 computed on
    two workers equal hashlib's of the bytes (a missing file: ``"missing"``)."""
    import concurrent.futures as cf
    import hashlib

    from visitcal.pipeline.runner import digest_files, visit_chunks, worker_count

    assert worker_count(1) == 1 and worker_count(3) == 3 and worker_count(0) == 1
    with cf.ThreadPoolExecutor(max_workers=5) as pool:
        assert worker_count(1, pool) == 5
    assert worker_count(4, object()) == 1  # an executor it cannot ask
    assert visit_chunks({10: 3, 11: 3, 12: 3, 13: 1}, 4) == [[10, 11], [12, 13]]
    assert visit_chunks({10: 189, 11: 189}, 8) == [[10], [11]]
    assert visit_chunks({10: 2}, 8) == [[10]] and visit_chunks({}, 8) == []
    files = []
    for k in range(5):
        path = tmp_path / f"f{k}.bin"
        path.write_bytes(os.urandom(1000 + k))
        files.append(path)
    expected = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    expected[tmp_path / "absent"] = "missing"
    for jobs in (1, 2):
        assert digest_files([*files, files[0], tmp_path / "absent"], jobs=jobs) == expected
