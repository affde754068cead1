"""Run per-detector units on an executor, in a deterministic order, with a progress callback."""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["run_units", "tune_allocator"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)


def tune_allocator() -> bool:
    """Keep freed memory in this process for reuse: glibc's ``mallopt`` with a 1 GiB mmap threshold and a
    2 GiB trim threshold. Returns whether it was applied.

    Each detector allocates and frees dozens of 16-Mpx planes. By default glibc serves every array above
    32 MiB with a fresh ``mmap`` and returns it on ``free``, so each new plane costs its page faults again:
    on the benchmark machine that was 0.3-0.6 s per 4k detector, moving from stage to stage (detection 0.74 s
    instead of 0.19 s; calibrate 2.9 -> 2.4 s, bench/README.md). Peak memory is unchanged; a worker keeps its
    peak until it exits. Called by the command line and by the step runner's worker processes, never on import
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
              progress: Callable[[int, int, str], None] | None = None) -> list:
    """Call ``fn(*unit)`` for every unit and return the results in the order of ``units``.

    ``fn`` must catch its own failures and return a status (the runner does not stop on one): it runs
    in another process with ``jobs > 1`` (a `ProcessPoolExecutor` unless ``executor`` is given, e.g. a
    Dask ``distributed.Client``'s executor), so it must be a picklable top-level function. Results do
    not depend on ``jobs``: each unit is computed alone from its inputs and seeds.
    """
    units = list(units)
    total = len(units)
    results: list = [None] * total
    if progress is not None:
        progress(0, total, "")
    if executor is None and jobs <= 1:
        for k, unit in enumerate(units):
            results[k] = fn(*unit)
            if progress is not None:
                progress(k + 1, total, _label(unit, results[k]))
        return results
    own = executor is None
    ex = executor if executor is not None else cf.ProcessPoolExecutor(max_workers=jobs, initializer=tune_allocator)
    try:
        futures = {ex.submit(fn, *unit): k for k, unit in enumerate(units)}
        done = 0
        for fut in cf.as_completed(futures):
            k = futures[fut]
            results[k] = fut.result()
            done += 1
            if progress is not None:
                progress(done, total, _label(units[k], results[k]))
    finally:
        if own:
            ex.shutdown()
    return results


def _label(unit, result) -> str:
    """``visit V detector D: status`` for a `UnitStatus` result, else the unit."""
    if hasattr(result, "visit") and hasattr(result, "detector"):
        return f"visit {result.visit} detector {result.detector}: {getattr(result, 'status', '')}"
    if isinstance(result, list) and result and all(hasattr(r, "visit") for r in result):
        n_ok = sum(getattr(r, "status", "") == "ok" for r in result)
        return f"visit {result[0].visit}: {n_ok} of {len(result)} detectors ok"
    if hasattr(result, "tract"):
        return f"tract {result.tract}: {getattr(result, 'status', '')}"
    return ""
