"""FinalizeCharacterizationDetectorTask on one 4072 x 4000 simulated, calibrated detector, one core, split by
stage (issue 8).

The detector is the first of ``bench/results/sim_repo_finalize``. `bench_finalize_accuracy.py` writes that
repository (lsst preset, 3 visits, one 60-s snap, 100000 stars/deg^2, SIP order 3; the figures in bench/README.md
are on it); when it is absent this script simulates a lighter one there instead (one visit, one 30-s snap, seed
11, 20000 stars/deg^2, the calibrate step's ``lsst`` preset; ~1 min). The isolated-star tables come from the
simulator's truth (tests/sim/helpers.py), in lsst-spec §3's format.

Each run reads the calexp and the source table afresh and runs the detector task with the default
configuration (pixelgrid PSF, order 2), or with ``--goal-config`` the one that meets issue 8's accuracy goals. Stages (`DetectorStatus.timings`): selection (the footprints
rebuilt from the DETECTED plane, the S/N selector, the isolated-star match), candidates (stamps of all
stars and of the fitted ones), PSF fit, measurement (base_SdssShape, GaussianFlux, PsfFlux, FPPosition with
noise replacement of every footprint), ap corr (measure, merge, apply); plus the whole ``run`` (which also
concatenates the isolated-star tables and builds the output schema). Median of the runs after a warm-up;
peak RSS of the process. Also reported: the refit PSF's size error against the truth at the reserved stars.

    python bench/bench_finalize.py [--repeat 3] [--cpu 0] [--goal-config]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads

REPO = _common.RESULTS_DIR / "sim_repo_finalize"
sys.path.insert(0, str(_common.BENCH_DIR.parent / "tests"))


def _repo():
    from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate
    from visitcal.sim import SimConfig, SimRepository, simulate

    if not (REPO / "single_visit_star").exists():
        REPO.parent.mkdir(exist_ok=True)
        simulate(SimConfig(preset="lsst", n_visits=1, n_detectors=1, n_snaps=1, seed=11, star_density=20000.0),
                 REPO, overwrite=True)
        status = run_calibrate(REPO, config=CalibrateStepConfig.preset("lsst"), jobs=1)
        if not all(s.ok for s in status):
            raise RuntimeError(f"calibration failed: {[s.message for s in status]}")
    return SimRepository(REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up (>= 1)")
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--goal-config", action="store_true", help="the configuration that meets issue 8's accuracy "
                        "goals (tests/sim/test_finalize_accuracy_slow.goal_config) instead of the defaults")
    args = parser.parse_args()
    args.repeat = max(args.repeat, 1)
    cpu = _common.pin_one_core(args.cpu)
    _common.tune_allocator_as_the_cli()
    _common.print_header("FinalizeCharacterizationDetectorTask, 4072 x 4000 simulated detector", cpu)

    import numpy as np

    from sim.helpers import isolated_star_tables
    from visitcal.tasks.finalize_characterization import FinalizeCharacterizationDetectorTask
    from visitcal.io import read_catalog, read_exposure

    repo = _repo()
    visit, det, _ = repo.data_ids[0]
    src_path = REPO / "single_visit_star" / f"{visit:06d}" / f"single_visit_star_{visit:06d}_{det:03d}.parquet"
    exp_path = REPO / "preliminary_visit_image" / f"{visit:06d}" / f"preliminary_visit_image_{visit:06d}_{det:03d}.fits"
    stars, sources, _ = isolated_star_tables(repo, {(visit, det): read_catalog(src_path)})
    config = None
    if args.goal_config:
        from sim.test_finalize_accuracy_slow import goal_config

        config = goal_config()
    print("configuration:", "issue 8's goal configuration" if args.goal_config else "defaults")
    stages = ("selection", "candidates", "psf", "measurement", "ap_corr")
    runs, totals, result = [], [], None
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.repeat + 1):
        src, exposure = read_catalog(src_path), read_exposure(exp_path)
        task = FinalizeCharacterizationDetectorTask(config)
        t0 = time.perf_counter()
        result = task.run(visit, repo.band, det, stars, sources, src, exposure)
        totals.append(time.perf_counter() - t0)
        runs.append(dict(result.detector_status[det].timings))
    runs, totals = runs[1:], totals[1:]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    st = result.detector_status[det]
    rows = [(s, f"{statistics.median(r[s] for r in runs):.4f}") for s in stages]
    rows.append(("other (iso concat, output schema, table assembly)",
                 f"{statistics.median(t - sum(r[s] for s in stages) for t, r in zip(totals, runs)):.4f}"))
    rows.append(("total run()", f"{statistics.median(totals):.4f}"))
    print(_common.format_table(["stage", "seconds (median)"], rows))
    print(f"stars: {st.n_selected} selected, {st.n_matched} isolated matches, {st.n_reserved} reserved, "
          f"{st.n_candidates} candidates, {st.n_used} used; peak RSS {peak_mb:.0f} MB "
          f"(before the runs {rss0 / 1024.0:.0f} MB)")

    psf = result.psf_ap_corr_cat["psf"][0]
    truth = repo.true_psf(visit, det, size=61)
    table = result.output_table
    sel = np.asarray(table["calib_psf_reserved"], bool)
    err = [psf.compute_shape(x, y).determinant_radius / truth.compute_shape(x, y).determinant_radius - 1
           for x, y in zip(table["base_SdssCentroid_x"][sel], table["base_SdssCentroid_y"][sel])]
    size_rms = float(np.sqrt(np.mean(np.square(err)))) if err else float("nan")
    print(f"PSF size error at the {len(err)} reserved stars: rms {size_rms:.2e}")
    _common.write_json("bench_finalize", {
        "stages_s": {s: statistics.median(r[s] for r in runs) for s in stages},
        "total_s": statistics.median(totals), "peak_rss_mb": peak_mb,
        "n_selected": st.n_selected, "n_matched": st.n_matched, "n_reserved": st.n_reserved,
        "n_candidates": st.n_candidates, "n_used": st.n_used, "reserved_size_rms": size_rms,
    })


if __name__ == "__main__":
    main()
