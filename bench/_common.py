"""Shared helpers for the benchmark scripts in ``bench/``.

Import this module **before numpy** (``import _common`` first in every script): it sets the
BLAS/OpenMP thread counts to 1 at import time, because OpenBLAS, MKL and OpenMP read them once
when numpy loads. :func:`pin_one_core` then pins the process to one CPU, so every figure in
``bench/README.md`` is a single-core figure, peers included.

Results go to ``bench/results/<name>.json`` (git-ignored; the README carries the figures).
"""

from __future__ import annotations

import os

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
for _var in _THREAD_VARS:
    os.environ[_var] = "1"

import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

if "numpy" in sys.modules:  # pragma: no cover - a usage error, said loudly
    print("bench/_common.py: numpy was imported before _common; thread env vars may not apply", file=sys.stderr)


def pin_one_core(cpu: int = 0) -> int | None:
    """Pin this process to one CPU (``cpu``; -1 leaves the affinity alone). Returns the CPU or None."""
    if cpu < 0 or not hasattr(os, "sched_setaffinity"):
        return None
    os.sched_setaffinity(0, {cpu})
    return cpu


@dataclass
class Timing:
    """Wall-clock seconds of repeated calls (after ``warmup`` untimed ones)."""

    times: list[float] = field(default_factory=list)
    warmup: int = 1

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {"best_s": self.best, "median_s": self.median, "times_s": self.times, "warmup": self.warmup}


def time_it(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> Timing:
    """Time ``fn()`` ``repeat`` times with ``time.perf_counter`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(times, warmup)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _first_line(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=10).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """CPU, cores, affinity, compiler, Python, numpy and its BLAS, and the visitcal build timed."""
    import numpy as np

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cxx": _first_line(["c++", "--version"]),
        "thread_env": {v: os.environ.get(v) for v in _THREAD_VARS},
    }
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - older numpy: no dict mode
        info["numpy_blas"] = "unknown"
    try:
        from visitcal import _core

        core = Path(_core.__file__)
        info["visitcal_core"] = str(core)
        info["visitcal_core_mtime"] = datetime.datetime.fromtimestamp(core.stat().st_mtime).isoformat(timespec="seconds")
    except ImportError:
        info["visitcal_core"] = None
    return info


def write_json(name: str, payload: dict[str, Any], path: str | Path | None = None) -> Path:
    """Write ``payload`` plus the date and :func:`machine_info` to ``path`` or ``bench/results/<name>.json``."""
    out = Path(path) if path else RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        **payload,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".3g") -> str:
    """A plain-text (also Markdown-compatible) table; floats formatted with ``floatfmt``."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[k]) for r in body)) if body else len(h) for k, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in body)])


_ALLOCATOR = "default"


def tune_allocator_as_the_cli() -> None:
    """What ``visitcal`` commands and their workers do at start (`visitcal.pipeline.runner.tune_allocator`):
    the pipeline benchmarks measure the library as the command line runs it. ``VISITCAL_NO_MALLOPT=1`` gives
    glibc's defaults."""
    global _ALLOCATOR
    from visitcal.pipeline.runner import tune_allocator

    _ALLOCATOR = "mallopt (as the CLI)" if tune_allocator() else "default"


def print_header(title: str, cpu: int | None) -> None:
    import numpy as np

    print(title)
    print(f"cpu: {_cpu_model()}; pinned to cpu {cpu if cpu is not None else '(none)'}; numpy {np.__version__}; "
          f"python {platform.python_version()}; BLAS/OpenMP threads = {os.environ['OPENBLAS_NUM_THREADS']}; "
          f"allocator: {_ALLOCATOR}")
