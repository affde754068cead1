"""Dask as the executor (issue 20): ``visitcal run --executor dask`` gives the same bytes as ``-j 1`` and
``-j 2``, an untouched rerun on Dask skips every unit, the Dask workers are set up like the pool's (one
native thread, the allocator tuned), and a unit whose Dask worker dies is recorded ``WorkerCrashed`` with no
product written while the other units finish.

The repository: 2 visits x 2 detectors of 1024 x 1024 px, as tests/sim/test_run_sim.py (about 60 s on two
cores for the module, most of it the three full runs)."""

from __future__ import annotations

import os
import re
import shutil
import signal

import pytest

pytest.importorskip("galsim", reason="visitcal.sim needs GalSim (pip install 'visitcal[sim]')")
pytest.importorskip("distributed", reason="Dask executor needs distributed (pip install 'visitcal[dask]')")

import dask  # noqa: E402

from visitcal.cli import main  # noqa: E402
from visitcal.pipeline import calibrate_step  # noqa: E402
from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate  # noqa: E402
from visitcal.pipeline.dask_executor import dask_executor, init_dask_worker  # noqa: E402
from visitcal.pipeline.repository import Repository  # noqa: E402
from visitcal.sim import SimConfig, simulate  # noqa: E402

from .helpers import CHAIN_SIM, product_digests  # noqa: E402

CONFIG = SimConfig(**CHAIN_SIM)
STEPS = ("calibrate", "associate", "finalize", "visit_summary", "reprocess")
_REAL_CALIBRATE_DETECTOR = calibrate_step.calibrate_detector




@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask") / "sim"
    simulate(CONFIG, root)
    return root


def _run(sim, root, *options):
    shutil.copytree(sim, root)
    assert main(["run", str(root), "--preset", "sparse", *options]) == 0, options
    return root


def test_dask_gives_the_bytes_of_the_process_pool_and_a_rerun_skips(sim, tmp_path, capsys):
    serial = product_digests(_run(sim, tmp_path / "j1", "-j", "1"))
    pooled = product_digests(_run(sim, tmp_path / "j2", "-j", "2"))
    on_dask = _run(sim, tmp_path / "dask", "--executor", "dask", "--dask-workers", "2")
    assert len(serial) > 30 and serial == pooled == product_digests(on_dask)
    before = {p: p.stat().st_mtime_ns for p in on_dask.rglob("*")
              if p.is_file() and "provenance" not in p.parts and ".visitcal" not in p.parts}
    capsys.readouterr()
    assert main(["run", str(on_dask), "--preset", "sparse", "--executor", "dask", "--dask-workers", "2"]) == 0
    out = capsys.readouterr().out
    for step, n in zip(STEPS, (4, 1, 4, 2, 4)):
        assert re.search(rf"== {step}: {n} units, {n} done \(\d+ degraded, {n} skipped, up to date\), 0 failed", out)
    assert {p: p.stat().st_mtime_ns for p in on_dask.rglob("*")  # the digest cache (.visitcal/) is no product
            if p.is_file() and "provenance" not in p.parts and ".visitcal" not in p.parts} == before


def _worker_environment():
    return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "BLIS_NUM_THREADS")}


def test_dask_workers_are_set_up_like_the_pool_workers():
    with dask_executor(workers=1) as executor:
        # BLIS_NUM_THREADS is set by init_dask_worker only (Dask's nanny sets OMP_NUM_THREADS too)
        assert executor.submit(_worker_environment).result() == {"OMP_NUM_THREADS": "1", "BLIS_NUM_THREADS": "1"}
        assert executor.submit(init_dask_worker).result()["allocator_tuned"] in (True, False)


def crashing_calibrate(root, visit, detector, *args):
    """`calibrate_detector` whose Dask worker dies (SIGKILL) on visit 1000 detector 1; imported by reference on
    the workers, where the module is not patched."""
    if (visit, detector) == (1000, 1):
        os.kill(os.getpid(), signal.SIGKILL)
    return _REAL_CALIBRATE_DETECTOR(root, visit, detector, *args)


def test_a_dead_dask_worker_fails_its_unit(sim, tmp_path, monkeypatch):
    root = tmp_path / "repo"
    shutil.copytree(sim, root)
    monkeypatch.setattr(calibrate_step, "calibrate_detector", crashing_calibrate)
    # The killer alone, without Dask's retries on other workers (3 by default): Dask also counts the tasks
    # already assigned to a dying worker as suspects, which its retries save (not tested here, Dask's job).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with dask_executor(workers=1) as executor:
            config = CalibrateStepConfig.preset("sparse")
            [status] = run_calibrate(root, visits=[1000], detectors=[1], config=config, executor=executor)
            # the worker is restarted by its nanny: the next units run
            [other] = run_calibrate(root, visits=[1000], detectors=[0], config=config, executor=executor)
    assert status.error_type == "WorkerCrashed" and "Dask" in status.message and other.ok
    repo = Repository(root)
    assert repo.read_status("calibrate", 1000, 1).error_type == "WorkerCrashed"
    assert not repo.dataset_path("preliminary_visit_image", 1000, 1, "fits").exists()
    # no temporary left behind (the lock and the digest cache's folder are no temporaries)
    assert not [p for p in root.rglob(".*") if p.name not in (".visitcal.lock", ".visitcal")]
