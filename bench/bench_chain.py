"""The whole chain per detector at one core, step by step, against the I/O floor (issue 25).

Simulates (once, cached in ``bench/results/sim_repo_chain_<preset>_<V>x<D>_<density>_<snaps>snaps_<seed>``) the
issue's repository: ``lsst`` 4072 x 4000 detectors, 3 visits x 2 detectors, 60 000 stars/deg^2, 2 snaps; then
runs ``run_chain`` (as ``visitcal run --preset lsst``, the repository lock held) on a fresh hard-linked copy of
its inputs, in a child process pinned to one core, once per variant and round, variants alternating. A variant
is a ``PYTHONPATH`` (``--variant LABEL=PATH``, repeatable; by default this tree's ``python/``), so the code
before and after a change is timed in one run on one machine.

With ``--executor fork`` (the default) every unit runs in a fresh process forked from the child (one at a
time, on the pinned core), so the peak resident memory in its provenance (``ru_maxrss``) is the unit's own peak
as a worker process would see it (the forked process starts with the child's ~0.15 GB of imported modules, as a
pool worker does). Each unit then touches only fresh memory, whose pages the kernel zeroes on first use. With
``--executor inprocess`` the units run one after another in the child itself, as ``visitcal run`` does with one
job (and as a long-lived pool worker runs its units): memory a unit freed is reused by the next (the command
line keeps it, `visitcal.pipeline.runner.tune_allocator`), so only the first unit pays for fresh pages. Peaks
are then the process's, not the unit's, and are not reported.

After the chain, the same command again on the finished repository (every unit up to date): the cost of the
up-to-date checks. Per step: wall time (fork and the step's own bookkeeping included), the units' times from their provenance
(read / task / write where the step records them), per-detector figures (finalize and the visit summaries are
per visit: their time is divided by the visit's detectors), the bytes each unit read and wrote (its
provenance's inputs and outputs) and the **I/O floor**: those bytes at the raw page-cache read rate and raw
``tofile`` write rate of this machine, measured in the same child (200 MB, best of 3).

    PYTHONPATH=python python bench/bench_chain.py [--rounds 2] [--cpu 0]
        [--variant before=/path/to/old/python --variant after=python] [--json FILE] [--executor fork|inprocess]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
from bench_scale import fresh_copy  # a fresh hard-linked copy of a repository's inputs

STEPS = ("calibrate", "associate", "finalize", "visit_summary", "reprocess")


class ForkPerUnitExecutor(cf.Executor):
    """Runs each submitted call at once in a freshly forked process and returns a finished future: one unit
    at a time, each with its own peak memory (``ru_maxrss`` starts from the fork)."""

    def submit(self, fn, /, *args, **kwargs):
        fut = cf.Future()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the unit's process
            os.close(r)
            try:
                payload = pickle.dumps((True, fn(*args, **kwargs)))
            except BaseException as err:  # noqa: BLE001 - handed to the parent
                payload = pickle.dumps((False, repr(err)))
            with os.fdopen(w, "wb") as out:
                out.write(payload)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as inp:
            data = inp.read()
        os.waitpid(pid, 0)
        ok, value = pickle.loads(data) if data else (False, "unit process died")
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(RuntimeError(value))
        return fut


def simulated_repo(args) -> Path:
    """The cached simulated repository (simulated in a child process when absent)."""
    path = _common.RESULTS_DIR / (f"sim_repo_chain_{args.preset}_{args.visits}x{args.detectors}_"
                                  f"{args.star_density:g}_{args.snaps}snaps_{args.seed}")
    if not (path / "repo.json").is_file():
        code = ("import sys; from visitcal.sim import SimConfig, simulate; "
                f"simulate(SimConfig(preset={args.preset!r}, n_visits={args.visits}, n_detectors={args.detectors}, "
                f"n_snaps={args.snaps}, seed={args.seed}, star_density={args.star_density}), {str(path)!r}, "
                "overwrite=True)")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        print(f"simulated {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def io_rates(work: Path) -> dict:
    """Raw page-cache read and ``tofile`` write rates (bytes/s, best of 3) on a 200 MB float32 array."""
    import numpy as np

    data = np.random.default_rng(1).random(50_000_000, dtype=np.float32)
    path = work / "io_rate.bin"
    best_w = best_r = float("inf")
    for _ in range(3):
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        data.tofile(path)
        best_w = min(best_w, time.perf_counter() - t0)
        t0 = time.perf_counter()
        np.fromfile(path, dtype=np.float32)
        best_r = min(best_r, time.perf_counter() - t0)
    path.unlink()
    return {"read_Bps": data.nbytes / best_r, "write_Bps": data.nbytes / best_w}


def _bytes(root: Path, rel_paths) -> int:
    return sum((root / p).stat().st_size for p in rel_paths if (root / p).is_file())


def child(args) -> dict:
    """One measured chain run (in this process, pinned): per-step figures as a dict."""
    import logging

    import visitcal
    from visitcal.pipeline.calibrate_step import CalibrateStepConfig
    from visitcal.pipeline.chain import RunConfig, run_chain
    from visitcal.pipeline.lock import repository_lock

    logging.getLogger("visitcal").setLevel(logging.ERROR)
    _common.tune_allocator_as_the_cli()
    _common.pin_one_core(args.cpu)
    root = fresh_copy(Path(args.repo), Path(args.work))
    config = RunConfig(calibrate=CalibrateStepConfig.preset("sparse" if args.preset == "small" else "lsst"))
    t0 = time.perf_counter()
    executor = (lambda: ForkPerUnitExecutor()) if args.executor == "fork" else (lambda: None)
    with repository_lock(root):
        result = run_chain(root, config=config, executor=executor())
    total = time.perf_counter() - t0
    t0 = time.perf_counter()
    with repository_lock(root):  # every unit up to date: the cost of deciding so (hashing, or the digest cache)
        rerun = run_chain(root, config=config, executor=executor())
    rerun_s = time.perf_counter() - t0
    n_skipped = sum(s.skipped for sts in rerun.statuses.values() for s in sts)
    rates = io_rates(Path(args.work))  # after the chain: its 200 MB would otherwise be in every forked unit
    n_det = len(result.statuses["calibrate"])
    steps = {}
    for name in STEPS:
        statuses = [s for s in result.statuses[name] if not s.skipped]
        units = statuses
        if name == "finalize":  # one record per detector, each with its visit's timings: one unit per visit
            units = list({s.visit: s for s in reversed(statuses)}.values())
        timings: dict[str, float] = {}
        for s in units:
            for k, v in s.timings.items():
                if "." not in k and isinstance(v, (int, float)):
                    timings[k] = timings.get(k, 0.0) + float(v)
        if "visit_total" in timings:  # finalize: per-visit units
            timings["total"] = timings.pop("visit_total")
        bytes_in = sum(_bytes(root, s.inputs or {}) for s in units)
        bytes_out = sum(_bytes(root, s.outputs or {}) for s in units)
        peaks = [s.peak_rss_mb for s in units if s.peak_rss_mb] if args.executor == "fork" else []
        steps[name] = {
            "wall_s": result.seconds[name], "units": len(units), "failed": sum(not s.ok for s in statuses),
            "timings_sum_s": timings, "bytes_in": bytes_in, "bytes_out": bytes_out,
            "floor_s": bytes_in / rates["read_Bps"] + bytes_out / rates["write_Bps"],
            "peak_rss_mb_max": max(peaks, default=None), "peak_rss_mb_median": statistics.median(peaks) if peaks else None,
        }
    shutil.rmtree(root, ignore_errors=True)
    return {"visitcal": visitcal.__file__, "version": visitcal.__version__, "detectors": n_det, "total_s": total,
            "per_detector_s": total / n_det, "io_rates": rates, "steps": steps,
            "rerun_s": rerun_s, "rerun_per_detector_s": rerun_s / n_det, "rerun_skipped_units": n_skipped}


def table(runs: dict) -> str:
    """Markdown: per step, each variant's best wall time per detector, its unit timings and floor."""
    lines = ["| step | variant | wall s / detector | read | task | write | I/O floor s / det | peak MB (max) |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for name in [*STEPS, "total"]:
        for label, rs in runs.items():
            best = min(rs, key=lambda r: r["total_s"])
            n = best["detectors"]
            if name == "total":
                peaks = [s["peak_rss_mb_max"] for s in best["steps"].values() if s["peak_rss_mb_max"]]
                floor = sum(s["floor_s"] for s in best["steps"].values())
                lines.append(f"| **whole chain** | {label} | **{min(r['per_detector_s'] for r in rs):.2f}** | | | | "
                             f"{floor / n:.2f} | {f'{max(peaks):.0f}' if peaks else 'n/a'} |")
                if "rerun_per_detector_s" in best:
                    lines.append(f"| rerun, all up to date | {label} | "
                                 f"{min(r['rerun_per_detector_s'] for r in rs):.2f} | | | | | |")
                continue
            st = min((r["steps"][name] for r in rs), key=lambda s: s["wall_s"])
            t = st["timings_sum_s"]
            read = t.get("read")
            write = t.get("write")
            task = (t.get("total", 0.0) - (read or 0.0) - (write or 0.0)) if "total" in t else None

            def cell(v):
                return f"{v / n:.2f}" if v is not None else ""
            peak = st["peak_rss_mb_max"]
            lines.append(f"| {name} | {label} | {st['wall_s'] / n:.2f} | {cell(read)} | {cell(task)} | "
                         f"{cell(write)} | {st['floor_s'] / n:.2f} | {f'{peak:.0f}' if peak else 'n/a'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("small", "lsst"), default="lsst")
    parser.add_argument("--visits", type=int, default=3)
    parser.add_argument("--detectors", type=int, default=2)
    parser.add_argument("--star-density", type=float, default=60000.0)
    parser.add_argument("--snaps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--variant", action="append", default=None, help="LABEL=PYTHONPATH (repeatable)")
    parser.add_argument("--work", default=str(_common.RESULTS_DIR / "chain_runs"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--executor", choices=("fork", "inprocess"), default="fork",
                        help="fork: each unit in a fresh forked process (its own peak memory); inprocess: the units "
                             "one after another in one process, as `visitcal run` with one job")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.out).write_text(json.dumps(child(args)))
        return
    variants = dict(v.split("=", 1) for v in (args.variant or [f"this={_common.BENCH_DIR.parent / 'python'}"]))
    repo = simulated_repo(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list] = {label: [] for label in variants}
    for rnd in range(args.rounds):
        for label, path in variants.items():
            out = work / f"{label}_{rnd}.json"
            env = {**os.environ, "PYTHONPATH": f"{Path(path).resolve()}{os.pathsep}{_common.BENCH_DIR}"}
            cmd = [sys.executable, __file__, "--child", "--repo", str(repo), "--work", str(work / "repo"),
                   "--out", str(out), "--cpu", str(args.cpu), "--preset", args.preset, "--executor", args.executor]
            subprocess.run(cmd, env=env, check=True)
            run = json.loads(out.read_text())
            runs[label].append(run)
            print(f"round {rnd} {label}: {run['per_detector_s']:.2f} s per detector "
                  "(" + ", ".join(f"{k} {v['wall_s']:.1f}" for k, v in run["steps"].items()) + ")", flush=True)
    print(table(runs))
    payload = {"machine": _common.machine_info(), "repository": str(repo), "load_before": os.getloadavg(),
               "executor": args.executor, "variants": variants, "runs": runs}
    print("written", _common.write_json("bench_chain", payload, args.json))


if __name__ == "__main__":
    main()
