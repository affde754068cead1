"""CharacterizeImageTask on one 4072 x 4000 simulated detector, one core, split by stage (issue 7).

The detector is an ``lsst``-preset post-ISR image (one visit, one 30-s snap, seed 4; sky, ~300 stars,
galaxies, cosmic rays, bad columns, saturation) written by `visitcal.sim` into
``bench/results/sim_repo_lsst`` once (~20 s) and reused. Each run reads the image afresh and characterises
it with the default (LSST-like) configuration: background, Gaussian guess, two PSF iterations (repair,
detection at 5 sigma with peaks above 50 sigma, deblend, measurement, objectSize selection, PSF
candidates, PCA determiner), final repair, re-measurement, normalised calibration flux, aperture
corrections. Reported: wall-clock seconds per stage (summed over the iterations; median of the runs),
the total, and the PCA PSF's size at the detector centre against the true PSF's.

    python bench/bench_calibrate.py [--repeat 3] [--cpu 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads

REPO = _common.RESULTS_DIR / "sim_repo_lsst"


def _repo():
    from visitcal.sim import SimConfig, SimRepository, simulate

    if not (REPO / "repo.json").exists():
        REPO.parent.mkdir(exist_ok=True)
        simulate(SimConfig(preset="lsst", n_visits=1, n_detectors=1, n_snaps=1, seed=4), REPO, overwrite=True)
    return SimRepository(REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("CharacterizeImageTask, 4072 x 4000 simulated detector", cpu)

    from visitcal.characterize_image import CharacterizeImageTask
    from visitcal.table import DetectorVisitIdGenerator

    repo = _repo()
    visit, det, _ = repo.data_ids[0]
    runs, totals, result = [], [], None
    for _ in range(args.repeat + 1):  # the first run warms up
        exposure = repo.post_isr_image(visit, det, 0)
        t0 = time.perf_counter()
        result = CharacterizeImageTask().run(exposure, id_generator=DetectorVisitIdGenerator(visit, det))
        totals.append(time.perf_counter() - t0)
        runs.append(dict(result.metadata["timings"]))
    runs, totals = runs[1:], totals[1:]
    stages = list(runs[0])
    rows = [[s, statistics.median(r[s] for r in runs)] for s in stages]
    rows.append(["total", statistics.median(totals)])
    print(_common.format_table(["stage", "seconds (median)"], rows))
    bb = result.exposure.bbox
    cx, cy = 0.5 * (bb.min_x + bb.max_x), 0.5 * (bb.min_y + bb.max_y)
    model = result.exposure.psf.compute_shape(cx, cy).determinant_radius
    truth = repo.true_psf(visit, det).compute_shape(cx, cy).determinant_radius
    its = result.metadata["iterations"]
    print(f"sources {len(result.source_cat)}, PSF stars selected/candidates/used (last iteration) "
          f"{its[-1]['n_selected']}/{its[-1]['n_candidates']}/{its[-1]['n_used']}, "
          f"PCA components {its[-1]['n_components']}")
    print(f"PSF size at the centre: model {model:.4f} px, truth {truth:.4f} px, ratio - 1 = {model / truth - 1:+.4f}")
    apc = result.exposure.ap_corr_map
    print("ap-corr means:", {k: round(apc[k].mean(), 4) for k in apc})
    _common.write_json("bench_calibrate", {
        "stages": {s: [r[s] for r in runs] for s in stages}, "total": totals, "psf_size_model": model,
        "psf_size_truth": truth, "n_sources": len(result.source_cat), "iterations": [
            {k: v for k, v in it.items() if isinstance(v, (int, float))} for it in its]})


if __name__ == "__main__":
    main()
