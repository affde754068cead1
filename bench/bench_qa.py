"""``visitcal qa`` on the README's repository: 2 visits x 4 detectors of 2048 x 2048 px (issue 23's goal: under
60 s), with and without ``--truth``, on one pinned core.

The repository is rendered and processed once (``visitcal sim`` with its defaults, then ``visitcal run -j 2``)
into ``bench/results/qa/repo`` and reused. Each case runs the command line in a fresh process (start-up
included), ``--repeat`` times; the best and median wall times, and the per-section seconds of the last run
(``make_report`` in-process, same settings), are printed and written to ``bench/results/qa.json``.

No other tool writes this report; its one kernel with a peer, the rho statistics (five shear-shear correlations
of PSF stars), is timed beside TreeCorr (``GGCorrelation``, exact binning ``bin_slop=0`` as our backend uses it, and
its default ``bin_slop=1``) on random stars over a 3.5-degree field, one thread each (``--rho N ...``; skipped
without TreeCorr). Run from the repository root:
``python bench/bench_qa.py [--repeat 3] [--resimulate] [--rho 1000 5000 20000]``.
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


def bench_rho(sizes, repeat: int) -> list[tuple]:
    import numpy as np

    from visitcal.qa.rho import rho_statistics, tangent_plane

    try:
        import treecorr
    except ImportError:
        treecorr = None
    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        ra, dec = rng.uniform(-1.75, 1.75, n), rng.uniform(-1.75, 1.75, n)
        e1s, e2s, e1m, e2m = (rng.normal(0, 0.02, n) for _ in range(4))
        ts, tm = rng.normal(8.0, 0.1, n), rng.normal(8.0, 0.1, n)
        args = (ra % 360.0, dec, e1s, e2s, ts, e1m, e2m, tm)
        kw = dict(min_sep_arcmin=0.5, max_sep_arcmin=60.0, nbins=8)
        # above 5000 stars a call takes tens of seconds: one timed call, no warm-up
        rep, warm = (repeat, 1) if n <= 5000 else (1, 0)
        ours = _common.time_it(lambda: rho_statistics(*args, **kw), repeat=rep, warmup=warm)
        row = [n, ours.best]
        if treecorr is not None:
            exact = _common.time_it(lambda: rho_statistics(*args, backend="treecorr", **kw), repeat=rep, warmup=warm)
            x, y = tangent_plane(ra % 360.0, dec)

            def default_slop():  # the same five correlations at TreeCorr's default binning (bin_slop=1)
                cat = treecorr.Catalog(x=x, y=y, g1=e1s - e1m, g2=e2s - e2m)
                cat2 = treecorr.Catalog(x=x, y=y, g1=e1m, g2=e2m)
                for other in (None, cat2, cat, cat2, cat):
                    gg = treecorr.GGCorrelation(min_sep=0.5, max_sep=60.0, nbins=8, num_threads=1)
                    gg.process(cat, other, num_threads=1) if other is not None else gg.process(cat, num_threads=1)

            slop = _common.time_it(default_slop, repeat=rep, warmup=warm)
            row += [exact.best, slop.best]
        else:
            row += [float("nan"), float("nan")]
        rows.append(tuple(row))
    print(_common.format_table(["stars", "visitcal (exact) s", "TreeCorr bin_slop=0 s", "TreeCorr bin_slop=1 s"],
                               rows, floatfmt=".3g"))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--resimulate", action="store_true")
    parser.add_argument("--rho", type=int, nargs="*", default=[1000, 5000, 20000],
                        help="star counts of the rho-statistics comparison (none: skip it)")
    parser.add_argument("--no-report", action="store_true", help="only the rho comparison")
    args = parser.parse_args(argv)
    _common.pin_one_core()
    payload = {"machine": _common.machine_info(), "cases": {}}
    if args.rho:
        payload["rho"] = bench_rho(args.rho, args.repeat)
    if args.no_report:
        _common.write_json("qa", payload)
        return 0
    repo = prepare(args.resimulate)
    payload["repo"] = str(repo)
    out = _common.RESULTS_DIR / "qa" / "report"
    rows = []
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
