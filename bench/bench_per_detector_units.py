"""Wall time of finalize and of the visit summaries with ``jobs`` 1 and 2, before and after the per-detector
units (issue 25), on a calibrated and associated repository (e.g. 1 visit x 4 lsst-preset detectors).

Each measurement runs in a fresh process on a fresh copy of the repository (hard links of the inputs, the step's
products and provenance removed), pinned with ``taskset`` to ``--cpus`` (jobs=1: the first CPU; jobs=2: the
first two). Variants run round-robin (before/after, jobs 1/2) so that the machine's load drifts over all of
them alike; the best of ``--rounds`` is reported, with the load average. "Before" is another checkout's
``python`` folder (``--before``), whose ``run_visit_summary`` has no ``jobs``; finalize runs there with
``jobs`` (one unit per visit). Also reported: the CPU time of the calling process during each step (the serial
part when ``jobs`` > 1). The bytes of the products of every run are compared with the first "before" run's.

    PYTHONPATH=python python bench/bench_per_detector_units.py --repo REPO --before OLD/python [--rounds 3]
        [--cpus 0,1] [--jobs 1,2] [--split auto|on] [--work /tmp/bench_pdu]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import _common  # noqa: F401 - first: the BLAS/OpenMP thread counts before numpy loads

PRODUCTS = ("refit_psf_models", "refit_psf_star", "visit_summary")
CHILD = r"""
import json, logging, resource, sys, time
logging.getLogger("visitcal").setLevel(logging.ERROR)

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

from visitcal.pipeline.finalize_step import run_finalize
from visitcal.pipeline.visit_summary_step import run_visit_summary
root, jobs, new, split = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "after", sys.argv[4] == "on"
t0, c0 = time.perf_counter(), cpu()
fin = run_finalize(root, jobs=jobs, **({"split": True} if new and split else {}))
t1, c1 = time.perf_counter(), cpu()
vs = run_visit_summary(root, return_status=True, **({"jobs": jobs} if new else {}))
t2, c2 = time.perf_counter(), cpu()
print(json.dumps({"finalize": t1 - t0, "visit_summary": t2 - t1, "finalize_parent_cpu": c1 - c0,
                  "visit_summary_parent_cpu": c2 - c1, "finalize_ok": sum(s.ok for s in fin),
                  "visit_summary_status": [s.status for s in vs]}))
"""


def fresh_copy(repo: Path, dest: Path) -> None:
    """Hard links of ``repo`` without the products of finalize and of the visit summaries (a product is
    replaced, never written in place, so the links are safe)."""
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(["cp", "-al", str(repo), str(dest)], check=True)
    for name in PRODUCTS:
        shutil.rmtree(dest / name, ignore_errors=True)
    for step in ("finalize", "visit_summary"):
        shutil.rmtree(dest / "provenance" / step, ignore_errors=True)


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for name in PRODUCTS for p in sorted((root / name).glob("*"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--before", type=Path, required=True, help="the python folder of the code before")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1] / "python")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", default="0,1")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_per_detector_units"))
    parser.add_argument("--jobs", default="1,2", help="the jobs values to measure (comma-separated, each <= 2)")
    parser.add_argument("--split", choices=("auto", "on"), default="auto",
                        help="finalize after: the default rule (choose_split) or always the per-detector path")
    args = parser.parse_args()
    cpus = args.cpus.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    variants = [(code, int(jobs)) for jobs in args.jobs.split(",") for code in ("before", "after")]
    times: dict[str, list[dict]] = {f"{c} jobs={j}": [] for c, j in variants}
    reference = None
    same = True
    for rnd in range(args.rounds):
        for code, jobs in variants:
            root = args.work / "repo"
            fresh_copy(args.repo, root)
            python = args.before if code == "before" else args.after
            env = {**os.environ, "PYTHONPATH": str(python)}
            cmd = ["taskset", "-c", ",".join(cpus[:jobs]), sys.executable, "-c", CHILD, str(root), str(jobs), code,
                   args.split]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            times[f"{code} jobs={jobs}"].append(result)
            d = digests(root)
            if reference is None:
                reference = d
            same &= d == reference
            print(f"round {rnd} {code} jobs={jobs}: finalize {result['finalize']:.2f} s (this process's CPU "
                  f"{result['finalize_parent_cpu']:.2f} s), visit summaries {result['visit_summary']:.2f} s (CPU "
                  f"{result['visit_summary_parent_cpu']:.2f} s) {result['visit_summary_status']}, same bytes "
                  f"{d == reference}", flush=True)
    print(f"load average {os.getloadavg()}")
    print(f"{'variant':<16} {'finalize (s)':>12} {'parent CPU':>10} {'visit summaries (s)':>20} {'parent CPU':>10}"
          f"   best of {args.rounds}")
    for name, runs in times.items():
        best = {key: min(r[key] for r in runs)
                for key in ("finalize", "finalize_parent_cpu", "visit_summary", "visit_summary_parent_cpu")}
        print(f"{name:<16} {best['finalize']:>12.2f} {best['finalize_parent_cpu']:>10.2f} "
              f"{best['visit_summary']:>20.2f} {best['visit_summary_parent_cpu']:>10.2f}")
    print(f"every run wrote the same bytes: {same} ({len(reference or {})} products)")
    shutil.rmtree(args.work / "repo", ignore_errors=True)


if __name__ == "__main__":
    main()
