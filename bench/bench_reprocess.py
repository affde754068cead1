"""ReprocessVisitImageTask on one 4072 x 4000 simulated detector, one core, split by stage (issue 9).

Uses the rich repository of `bench_finalize_accuracy.py` (``bench/results/sim_repo_finalize``: lsst preset,
100000 stars/deg^2, one 60-s snap; calibrated and finalized there, run that script first), its visit summary,
the first visit's first detector. Each run reads the inputs afresh and reprocesses with the default
configuration; reported: the median seconds per stage over the runs after a warm-up, the total, the source
count and the process's peak RSS.

    PYTHONPATH=python python bench/bench_reprocess.py [--repeat 3] [--cpu 0]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads

REPO = _common.RESULTS_DIR / "sim_repo_finalize"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    _common.tune_allocator_as_the_cli()
    _common.print_header("ReprocessVisitImageTask, 4072 x 4000 simulated detector", cpu)
    import numpy as np
    from visitcal.io import read_catalog, read_exposure
    from visitcal.pipeline.repository import Repository
    from visitcal.detection.background import BackgroundList
    from visitcal.pipeline.visit_summary_step import run_visit_summary, visit_summary_path
    from visitcal.tasks.reprocess_visit_image import ReprocessVisitImageTask
    from visitcal.core.table import DetectorVisitIdGenerator
    from visitcal.tasks.update_visit_summary import calibrations_for, read_visit_summary

    if not (REPO / "refit_psf_models").is_dir():
        raise SystemExit(f"{REPO}: run bench/bench_finalize_accuracy.py first (it simulates, calibrates, finalizes)")
    repo = Repository(REPO)
    run_visit_summary(REPO)
    visit, det = repo.data_ids()[0]
    cal = calibrations_for(read_visit_summary(visit_summary_path(repo, visit)), det)
    stars = read_catalog(REPO / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet")
    calib = stars[np.asarray(stars["detector"]) == det]
    runs, totals, res = [], [], None
    for _ in range(args.repeat + 1):
        snaps = [read_exposure(p) for p in repo.post_isr_snaps()[(visit, det)]]
        bg = BackgroundList.read_fits(repo.dataset_path("preliminary_visit_image_background", visit, det, "fits"))
        t0 = time.perf_counter()
        res = ReprocessVisitImageTask().run(exposures=snaps, psf=cal.psf, background=bg, ap_corr=cal.ap_corr_map,
                                            photo_calib=cal.photo_calib, wcs=cal.wcs, calib_sources=calib,
                                            id_generator=DetectorVisitIdGenerator(visit, det))
        totals.append(time.perf_counter() - t0)
        runs.append(dict(res.timings))
    runs, totals = runs[1:], totals[1:]
    rows = [[s, statistics.median(r[s] for r in runs)] for s in runs[0]]
    rows.append(["total", statistics.median(totals)])
    print(_common.format_table(["stage", "seconds (median)"], rows))
    print(f"sources {len(res.sources)}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    _common.write_json("bench_reprocess", {"stages": {s: [r[s] for r in runs] for s in runs[0]}, "total": totals,
                                           "n_sources": len(res.sources)})


if __name__ == "__main__":
    main()
