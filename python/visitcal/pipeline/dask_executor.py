"""Dask (``distributed``) as the steps' executor: a `distributed.Client` on a new `distributed.LocalCluster`
or on an existing scheduler (e.g. a SLURM cluster started with ``dask-jobqueue``), its
`concurrent.futures.Executor` handed to the steps' ``executor=`` and closed with the cluster at the end.

Needs the ``dask`` extra (``pip install 'visitcal[dask]'``); this module imports ``distributed`` only
when `dask_executor` is entered.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from .runner import _one_native_thread, tune_allocator

__all__ = ["DASK_MISSING", "dask_available", "dask_executor", "init_dask_worker"]

#: What a user without ``distributed`` is told to do.
DASK_MISSING = "Dask is not installed: pip install 'visitcal[dask]' (the distributed package)"


def dask_available() -> bool:
    """Whether ``distributed`` can be imported (without importing it)."""
    return importlib.util.find_spec("distributed") is not None


def init_dask_worker() -> dict:
    """Set up a Dask worker process for the steps' units: one BLAS/OpenMP thread, freed memory kept
    (`visitcal.pipeline.runner.tune_allocator`), as the process pool's workers do. Returns what was done.

    The parent-death signal of the forked pools is not set: a Dask worker belongs to its nanny and its
    scheduler, which end it. Run on every worker, also those that join later, by the plugin
    `dask_executor` registers. Dask's nanny already starts its workers with ``OMP_NUM_THREADS=1`` (and the
    MKL and OpenBLAS variables) in their environment (``distributed.nanny.pre-spawn-environ``); this also
    covers workers started otherwise and libraries already loaded.
    """
    return {"native_threads": _one_native_thread(), "allocator_tuned": tune_allocator()}


def _worker_plugin():
    """A `distributed.WorkerPlugin` calling `init_dask_worker` on each worker, now and when it joins."""
    import distributed

    class VisitcalWorkerSetup(distributed.WorkerPlugin):
        name = "visitcal-worker-setup"

        def setup(self, worker) -> None:
            init_dask_worker()

    return VisitcalWorkerSetup()


@contextlib.contextmanager
def dask_executor(*, scheduler: str | None = None, workers: int | None = None) -> Iterator:
    """A Dask ``concurrent.futures`` executor for the steps' ``executor=``, closed on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``, e.g. ``SLURMCluster(...).scheduler_address``);
        the cluster is the caller's and is left running, only the client is closed.
    workers : int, optional
        Without ``scheduler``: a `distributed.LocalCluster` of this many worker processes (default 1), each
        with one thread (``processes=True, threads_per_worker=1``), no dashboard; closed on exit.

    Yields
    ------
    executor : concurrent.futures.Executor
        ``client.get_executor()``. Each worker runs `init_dask_worker` first (a `distributed.WorkerPlugin`).

    Raises
    ------
    ImportError
        ``distributed`` is not installed (the message says how to install it).

    Notes
    -----
    A unit whose worker dies is retried by Dask on other workers (``distributed.scheduler.allowed-failures``,
    3 by default) and then reported by `visitcal.pipeline.runner.run_units` as crashed (``WorkerCrashed`` in
    the unit's provenance). Results are the same bytes as with the process pool: each unit is computed alone
    from its inputs and seeds.
    """
    if scheduler is not None and workers is not None:
        raise ValueError("give scheduler or workers, not both")
    try:
        import distributed
    except ImportError as err:
        raise ImportError(DASK_MISSING) from err
    cluster = None
    client = None
    try:
        if scheduler is None:
            cluster = distributed.LocalCluster(n_workers=workers or 1, processes=True, threads_per_worker=1,
                                               dashboard_address=None)
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(scheduler)
        client.register_plugin(_worker_plugin())
        yield client.get_executor()
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
