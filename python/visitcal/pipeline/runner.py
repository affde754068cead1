"""Run per-detector units on an executor, in a deterministic order, with a progress callback.

A worker process that dies (segmentation fault, ``kill -9``, the kernel's OOM killer) fails the unit
it was running and nothing else: see `run_units`.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["StepProgress", "WorkerCrashed", "digest_files", "run_units", "tune_allocator", "visit_chunks",
           "worker_count"]

_PR_SET_PDEATHSIG = 1  # prctl option number (linux/prctl.h)
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                     "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
# OpenBLAS's setter under the names of its builds: plain, 64-bit integers, and the scipy-openblas wheels
# that numpy and scipy bundle (numpy.libs/libscipy_openblas64_-*.so, scipy.libs/libscipy_openblas-*.so)
_OPENBLAS_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
                     "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")


class WorkerCrashed(RuntimeError):
    """A unit's worker process died while running it (a signal such as SIGSEGV or SIGKILL, or an exit
    without a result). What `run_units` returns for such a unit when no ``crashed`` callback is given.

    Attributes
    ----------
    unit : tuple
        The unit's arguments.
    signal : int or None
        The signal that ended the worker, None when it exited with a code or the cause is unknown.
    """

    def __init__(self, message: str, unit: tuple = (), signal: int | None = None):
        super().__init__(message)
        self.unit = tuple(unit)
        self.signal = signal

    def __reduce__(self):
        return type(self), (str(self), self.unit, self.signal)

    def __repr__(self) -> str:
        return f"WorkerCrashed({str(self)!r}, unit={self.unit!r}, signal={self.signal!r})"

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)


def tune_allocator() -> bool:
    """Keep freed memory in this process for reuse: glibc's ``mallopt`` with a 1 GiB mmap threshold and a
    2 GiB trim threshold. Returns whether it was applied.

    Each detector allocates and frees dozens of 16-Mpx planes. By default glibc serves every array above
    32 MiB with a fresh ``mmap`` and returns it on ``free``, so each new plane costs its page faults again:
    on the benchmark machine that was 0.3-0.6 s per 4k detector, moving from stage to stage (detection 0.74 s
    instead of 0.19 s; calibrate 2.9 -> 2.4 s, bench/README.md). Peak memory stays about the same, but not to
    the byte: freed planes are reused only where they fit, so the order of large frees and allocations moves a
    unit's peak by up to ~80 MB either way (measured on reprocessing, with and without this); a worker keeps
    its peak until it exits. Called by the command line and by the step runner's worker processes, never on import
    (a library does not reconfigure its host's allocator). No effect off glibc, or with
    ``VISITCAL_NO_MALLOPT=1`` in the environment.
    """
    if os.environ.get("VISITCAL_NO_MALLOPT") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to do
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


def run_units(fn: Callable, units: Sequence[tuple], *, jobs: int = 1, executor: cf.Executor | None = None,
              progress: Callable[[int, int, str], None] | None = None,
              crashed: Callable[[tuple, str], object] | None = None) -> list:
    """Call ``fn(*unit)`` for every unit and return the results in the order of ``units``.

    ``fn`` must catch its own failures and return a status (the runner does not stop on one; an exception
    it lets through propagates): it runs in another process with ``jobs > 1`` (a `ProcessPoolExecutor`
    unless ``executor`` is given, e.g. a Dask ``distributed.Client``'s executor), so it must be a picklable
    top-level function. Results do not depend on ``jobs``: each unit is computed alone from its inputs and
    seeds.

    Parameters
    ----------
    crashed : callable, optional
        ``crashed(unit, message)`` gives the result of a unit whose worker process died while running it,
        e.g. a failed status; ``message`` reads ``"worker died (signal 9, SIGKILL)"``. Without it the result
        is a `WorkerCrashed` instance.

    Notes
    -----
    With the runner's own pool (``jobs > 1`` and no ``executor``) at most ``jobs`` units are in flight.
    When a worker dies the pool is broken and every in-flight unit is a suspect: each suspect is run again
    alone, in a fresh single-worker process, so that only a unit that also dies alone is reported crashed
    (with the signal that killed it) and its neighbours get their real results; the other units go on in a
    fresh pool. A crash therefore costs up to ``jobs`` units run one after another. A unit that dies only
    under load (the OOM killer choosing it among several large workers) succeeds alone and is not failed.
    With an ``executor`` that breaks (a `concurrent.futures.BrokenExecutor`) its unfinished units go the
    same way through the runner's own pools; a Dask ``KilledWorker`` is reported crashed as it is (Dask has
    already retried it on other workers).

    Worker processes are forked (Linux), die with the process that called this function even on
    ``kill -9`` (the parent-death signal), use one BLAS/OpenMP thread each and keep freed memory
    (`tune_allocator`); see ``_init_worker``. ``run_units`` must be called from a thread that lives until
    it returns (it blocks, so any caller does): the parent-death signal follows the forking thread.
    """
    units = [tuple(unit) for unit in units]
    total = len(units)
    results: list = [None] * total
    done = 0

    def report(k: int, result) -> None:
        nonlocal done
        results[k] = result
        done += 1
        if progress is not None:
            progress(done, total, _label(units[k], result))

    if progress is not None:
        progress(0, total, "")
    if executor is None and jobs <= 1:
        for k, unit in enumerate(units):
            report(k, fn(*unit))
        return results
    if executor is None:
        _run_own_pools(fn, units, range(total), max(jobs, 1), report, crashed)
        return results
    suspects = []
    futures = {executor.submit(fn, *unit): k for k, unit in enumerate(units)}
    for fut in cf.as_completed(futures):
        k = futures[fut]
        try:
            result = fut.result()
        except cf.BrokenExecutor:  # the caller's process pool lost a worker: redo on our own pools
            suspects.append(k)
            continue
        except Exception as exc:
            if type(exc).__name__ != "KilledWorker":  # distributed's, named to avoid importing it
                raise
            result = _crash_result(units[k], f"worker died (signal unknown; Dask: {exc})", None, crashed)
        report(k, result)
    if suspects:
        _run_own_pools(fn, units, sorted(suspects), max(jobs, 1), report, crashed)
    return results


def digest_files(paths, *, jobs: int = 1, executor: cf.Executor | None = None, cache=None) -> dict:
    """``{Path: file_digest}`` of ``paths`` (`visitcal.pipeline.repository.file_digest`, SHA-256), one unit per
    file on ``jobs`` processes or ``executor`` (in this process with ``jobs`` 1 and no executor): the up-to-date
    checks that a step makes in the calling process before it hands out per-detector units read every input
    once (a few tenths of a second for a 200 MB lsst-size image), which the workers share this way. A file whose
    worker dies gets the digest ``"unreadable (<why>)"`` (never a file's: its unit is redone). ``cache``: the
    repository's `visitcal.pipeline.digest_cache.DigestCache` (a file hashed before in its present state is not
    read again)."""
    from .repository import file_digest

    paths = sorted(set(Path(p) for p in paths))
    known = {p: d for p in paths if (d := cache.lookup(p)) is not None} if cache is not None else {}
    todo = [p for p in paths if p not in known]  # only the files the cache cannot answer go to the workers
    if executor is None and jobs <= 1:
        known.update((p, file_digest(p, cache)) for p in todo)
    elif todo:
        out = run_units(file_digest, [(p, cache) for p in todo], jobs=jobs, executor=executor,
                        crashed=lambda unit, message: f"unreadable ({message})")
        known.update(zip(todo, out))
    return {p: known[p] for p in paths}


class StepProgress:
    """A step's ``progress(done, total, label)`` callback (or None) fed one finished item at a time: `report`
    counts an item and passes its label on; `forward` is the `run_units` callback that reports each of its units.
    ``total`` may be corrected while the step runs (items that turn out not to be needed). Created, it reports
    ``progress(0, total, "")``."""

    def __init__(self, progress: Callable[[int, int, str], None] | None, total: int):
        self.progress, self.total, self.done = progress, total, 0
        if progress is not None:
            progress(0, total, "")

    def report(self, label: str) -> None:
        """One more item done."""
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, label)

    def forward(self, n_units: int) -> Callable[[int, int, str], None] | None:
        """A `run_units` progress callback reporting each of its ``n_units`` units as it ends (None without
        units)."""
        def each(done: int, _total: int, label: str) -> None:
            if done:
                self.report(label)
        return each if n_units else None


def worker_count(jobs: int = 1, executor: cf.Executor | None = None) -> int:
    """How many units `run_units` runs at once: ``jobs`` without an executor; a process pool's ``max_workers``;
    a Dask executor's worker threads (``client.nthreads()``, at this moment); 1 for an executor it cannot ask."""
    if executor is None:
        return max(int(jobs), 1)
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int):
        return max(n, 1)
    client = getattr(executor, "_client", None)  # distributed's ClientExecutor
    try:
        return max(sum(client.nthreads().values()), 1)
    except Exception:  # noqa: BLE001 - not a Dask executor, or its scheduler does not answer
        return 1


def visit_chunks(sizes: dict, target: int) -> list[list]:
    """Consecutive groups of the visits of ``sizes`` (``{visit: number of detector units}``, in order), each
    closed once it holds at least ``target`` units (the last may hold fewer): the steps that hand out per-detector
    units and assemble per visit in the calling process go a group at a time, so that process holds the rows
    of a group, not of the night, while every worker has units (``target`` a few times the workers)."""
    chunks, current, n = [], [], 0
    for visit, size in sizes.items():
        current.append(visit)
        n += size
        if n >= target:
            chunks.append(current)
            current, n = [], 0
    if current:
        chunks.append(current)
    return chunks


def _run_own_pools(fn, units, order, jobs, report, crashed) -> None:
    """Run ``units[k]`` for ``k`` in ``order`` on process pools of ``jobs`` workers, at most ``jobs`` in
    flight, replacing a pool broken by a dead worker (its in-flight units isolated, see `run_units`)."""
    context = _fork_context()
    todo = collections.deque(order)
    while todo:
        suspects = []
        pool = cf.ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context,
                                      initializer=_init_worker, initargs=(os.getpid(),))
        try:
            in_flight: dict[cf.Future, int] = {}
            while todo or in_flight:
                while todo and len(in_flight) < jobs and not suspects:
                    k = todo.popleft()
                    try:
                        in_flight[pool.submit(fn, *units[k])] = k
                    except cf.BrokenExecutor:  # merely queued: resubmitted to the next pool
                        todo.appendleft(k)
                        break
                if not in_flight:
                    break
                finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                broken = False
                for fut in sorted(finished, key=in_flight.__getitem__):
                    k = in_flight.pop(fut)
                    try:
                        report(k, fut.result())
                    except cf.BrokenExecutor:
                        suspects.append(k)
                        broken = True
                if broken:  # every other in-flight future is failed by the executor at once
                    for fut in cf.as_completed(list(in_flight)):
                        k = in_flight.pop(fut)
                        try:
                            report(k, fut.result())
                        except cf.BrokenExecutor:
                            suspects.append(k)
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for k in sorted(suspects):
            report(k, _run_alone(fn, units[k], context, crashed))


def _run_alone(fn, unit: tuple, context, crashed):
    """``fn(*unit)`` in a fresh worker process: its result, its exception re-raised, or, if the process
    died first, the crash result with the signal read from its exit status."""
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_alone_worker, args=(send, fn, unit, os.getpid()), name="visitcal-isolated")
    process.start()
    send.close()
    try:
        try:
            outcome = receive.recv()
        except EOFError:  # the worker died before sending anything
            outcome = None
        finally:
            receive.close()
        process.join()
    finally:
        if process.is_alive():  # interrupted (KeyboardInterrupt) while waiting
            process.kill()
            process.join()
    if outcome is None:
        code = process.exitcode
        if code is not None and code < 0:
            number = -code
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = "unknown signal"
            return _crash_result(unit, f"worker died (signal {number}, {name})", number, crashed)
        detail = f"exit code {code}" if code is not None else "signal unknown"
        return _crash_result(unit, f"worker died ({detail})", None, crashed)
    kind, value = outcome
    if kind == "raised":
        raise value
    return value


def _alone_worker(send, fn, unit, parent_pid) -> None:
    _init_worker(parent_pid)
    try:
        outcome = ("ok", fn(*unit))
    except BaseException as exc:  # handed to the parent, which raises it as a pool would
        outcome = ("raised", exc)
    try:
        send.send(outcome)
    except Exception as exc:  # an unpicklable result or exception
        send.send(("raised", RuntimeError(f"the result of unit {unit!r} could not be sent back: {exc!r}")))
    send.close()


def _crash_result(unit: tuple, message: str, number: int | None, crashed):
    if crashed is not None:
        return crashed(unit, message)
    return WorkerCrashed(f"unit {unit!r}: {message}", unit, number)


def _fork_context():
    """``fork`` where it exists (Linux; macOS is excluded, where fork is unsafe): a worker shares the
    parent's imported modules and starts in milliseconds, and it is the parent-death signal's parent.
    Elsewhere the platform's default (spawn)."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _init_worker(parent_pid: int | None = None) -> None:
    """Initializer of every worker process: die with the parent, one native thread, keep freed memory."""
    _die_with_parent(parent_pid)
    _one_native_thread()
    tune_allocator()


def _die_with_parent(parent_pid: int | None) -> bool:
    """Ask Linux to send this process SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so a
    ``kill -9`` of the command leaves no worker writing into the repository. Returns whether it is set.

    If the parent died between the fork and this call, the process was already reparented: it kills itself
    at once (``getppid`` differs from ``parent_pid``). Strictly, the signal follows the parent *thread* that
    forked this process; the pools are made by the thread running `run_units`. No effect off Linux.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def _one_native_thread() -> list[str]:
    """Limit BLAS and OpenMP to one thread in this worker (``jobs`` workers of N BLAS threads each would
    oversubscribe the cores). Returns what was limited.

    The ``*_NUM_THREADS`` variables are read when a library is loaded, and a forked worker inherits numpy
    and scipy already loaded from its parent, so the variables (set here for libraries loaded later and for
    the worker's own children) are not enough: the loaded libraries are limited at run time, through
    ``threadpoolctl`` if it is installed, else by calling OpenBLAS's and OpenMP's setters found in
    ``/proc/self/maps`` (Linux; elsewhere only threadpoolctl does it).
    """
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    try:
        import threadpoolctl
    except ImportError:
        pass
    else:
        threadpoolctl.threadpool_limits(1)
        return ["threadpoolctl"]
    limited = []
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split(None, 5)[-1].strip() for line in maps if ".so" in line})
    except OSError:
        return limited
    for path in paths:
        base = os.path.basename(path)
        if "openblas" in base:
            setters = _OPENBLAS_SETTERS
        elif "gomp" in base or "libomp" in base or "iomp" in base:
            setters = ("omp_set_num_threads",)
        else:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for setter in setters:
            function = getattr(lib, setter, None)
            if function is not None:
                function.argtypes, function.restype = [ctypes.c_int], None
                function(1)
                limited.append(f"{base}:{setter}")
                break
    return limited


def _label(unit, result) -> str:
    """``visit V detector D: status``, ending in ``(skipped)`` for a unit skipped as up to date (what
    `visitcal.pipeline.console.ChainProgress` leaves out of its rate)."""
    label = _status_label(result)
    items = result if isinstance(result, list) else [result]
    if label and items and all(getattr(r, "skipped", False) is True for r in items):
        label += " (skipped)"
    return label


def _status_label(result) -> str:
    if isinstance(result, WorkerCrashed):
        return str(result)
    if getattr(result, "tract", None) is not None:
        return f"tract {result.tract}: {getattr(result, 'status', '')}"
    if hasattr(result, "visit") and getattr(result, "detector", None) is None:
        return f"visit {result.visit}: {getattr(result, 'status', '')}"
    if hasattr(result, "visit") and hasattr(result, "detector"):
        return f"visit {result.visit} detector {result.detector}: {getattr(result, 'status', '')}"
    if isinstance(result, list) and result and all(hasattr(r, "visit") for r in result):
        n_ok = sum(getattr(r, "status", "") == "ok" for r in result)
        return f"visit {result[0].visit}: {n_ok} of {len(result)} detectors ok"
    if hasattr(result, "tract"):
        return f"tract {result.tract}: {getattr(result, 'status', '')}"
    return ""
