"""Run per-detector units on an executor, in a deterministic order, with a progress callback."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Sequence

__all__ = ["run_units"]


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
    ex = executor if executor is not None else cf.ProcessPoolExecutor(max_workers=jobs)
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
