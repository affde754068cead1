"""``visitcal qa`` on the README's repository: 2 visits x 4 detectors of 2048 x 2048 px (issue 23's goal: under
60 s), with and without ``--truth``, on one pinned core.

The repository is rendered and processed once (``visitcal sim`` with its defaults, then ``visitcal run -j 2``)
into ``bench/results/qa/repo`` and reused. Each case runs the command line in a fresh process (start-up
included), ``--repeat`` times; the best and median wall times, and the per-section seconds of the last run
(``make_report`` in-process, same settings), are printed and written to ``bench/results/qa.json``.

There is no peer: no other tool writes this report. Run from the repository root:
``python bench/bench_qa.py [--repeat 3] [--resimulate]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads

REPO = _common.RESULTS_DIR / "qa" / "repo"


def prepare(resimulate: bool) -> Path:
    if REPO.exists() and not resimulate and (REPO / "visit_summary").is_dir():
        return REPO
    if REPO.exists():
        shutil.rmtree(REPO)
    REPO.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "visitcal.cli", "sim", str(REPO), "-q"], check=True, env=env)
    subprocess.run([sys.executable, "-m", "visitcal.cli", "run", str(REPO), "-j", "2", "-q"], check=True, env=env)
    return REPO


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--resimulate", action="store_true")
    args = parser.parse_args(argv)
    repo = prepare(args.resimulate)
    _common.pin_one_core()
    out = _common.RESULTS_DIR / "qa" / "report"
    rows, payload = [], {"machine": _common.machine_info(), "repo": str(repo), "cases": {}}
    for case, extra in (("qa", []), ("qa --truth", ["--truth"])):
        times, peaks = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "visitcal.cli", "qa", str(repo), "--out", str(out), "-q", *extra],
                           check=True)
            times.append(time.perf_counter() - t0)
            # the largest child so far: each case's commands are alike, so the running maximum is theirs
            peaks.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        from visitcal.qa.report import make_report

        report = make_report(repo, out=out, truth=bool(extra))
        sections: dict[str, float] = {}
        for r in report.visits:
            for name, sec in r.section_seconds.items():
                sections[name] = sections.get(name, 0.0) + sec
        payload["cases"][case] = {"seconds": times, "best": min(times), "median": statistics.median(times),
                                  "peak_rss_mb": max(peaks),
                                  "section_seconds": sections,
                                  "n_figures": sum(len(list((r.page.parent / "figures").glob("*.png")))
                                                   for r in report.visits),
                                  "n_metrics": sum(r.n_metrics for r in report.visits)}
        rows.append((case, min(times), statistics.median(times), max(peaks),
                     ", ".join(f"{k} {v:.2f}" for k, v in sections.items())))
    print(_common.format_table(["command (2 visits x 4 detectors, 1 core)", "best s", "median s", "peak RSS MB",
                                "section seconds (in-process)"], rows, floatfmt=".2f"))
    _common.write_json("qa", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
