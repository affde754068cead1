"""CharacterizeImageTask and CalibrateTask on one 4072 x 4000 simulated detector, one core, split by stage
(issue 7).

The detector is an ``lsst``-preset post-ISR image (one visit, one 30-s snap, seed 4; sky, ~300 stars,
galaxies, cosmic rays, bad columns, saturation) written by `visitcal.sim` into
``bench/results/sim_repo_lsst`` once (~20 s) and reused. Each run reads the image afresh and characterises
it with the default (LSST-like) configuration: background, Gaussian guess, two PSF iterations (repair,
detection at 5 sigma with peaks above 50 sigma, deblend, measurement, objectSize selection, PSF
candidates, PCA determiner), final repair, re-measurement, normalised calibration flux, aperture
corrections. Reported: wall-clock seconds per stage (summed over the iterations; median of the runs),
the total, and the PCA PSF's size at the detector centre against the true PSF's.

Then `CalibrateTask` on the characterised exposure (the repository's reference catalog; SIP order 3 for the
simulated camera's cubic distortion): detection at 5 sigma, sky sources, deblending, full measurement,
normalised calibration flux, aperture corrections, astrometry (pattern match + TAN-SIP), the copy of the
calib_psf flags, the zero point, summary statistics; per stage and in total (median of the runs), with the
fitted WCS's rms against the true WCS over the detector and the zero point against the truth (of the 12-px
aperture flux, as tests/sim/test_calibrate_sim.py defines it).

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
    parser.add_argument("--skip-calibrate", action="store_true", help="characterisation only")
    args = parser.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    _common.tune_allocator_as_the_cli()
    _common.print_header("CharacterizeImageTask, 4072 x 4000 simulated detector", cpu)

    from visitcal.tasks.characterize_image import CharacterizeImageTask
    from visitcal.core.table import DetectorVisitIdGenerator

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
    cal_runs, cal_totals, cal = [], [], None
    if not args.skip_calibrate:
        cal_runs, cal_totals, cal = _calibrate(repo, visit, det, args.repeat)
    _common.write_json("bench_calibrate", {
        "calibrate_stages": {s: [r[s] for r in cal_runs] for s in (cal_runs[0] if cal_runs else {})},
        "calibrate_total": cal_totals, "calibrate_accuracy": cal,
        "stages": {s: [r[s] for r in runs] for s in stages}, "total": totals, "psf_size_model": model,
        "psf_size_truth": truth, "n_sources": len(result.source_cat), "iterations": [
            {k: v for k, v in it.items() if isinstance(v, (int, float))} for it in its]})


def _calibrate(repo, visit, det, repeat):
    import math

    import numpy as np
    from visitcal.calib.astrometry import AstrometryConfig
    from visitcal.tasks.calibrate import CalibrateConfig, CalibrateTask
    from visitcal.tasks.characterize_image import CharacterizeImageTask
    from visitcal.calib.fit_tan_sip_wcs import FitTanSipWcsConfig
    from visitcal.calib.ref_loader import ReferenceObjectLoader
    from visitcal.core.table import DetectorVisitIdGenerator
    from visitcal.core.wcs import pixel_to_sky

    config = CalibrateConfig(astrometry=AstrometryConfig(wcs_fitter=FitTanSipWcsConfig(order=3)))
    loader = ReferenceObjectLoader(repo.refcat())
    runs, totals, res = [], [], None
    for _ in range(repeat + 1):
        idg = DetectorVisitIdGenerator(visit, det)
        exposure = repo.post_isr_image(visit, det, 0)
        t0 = time.perf_counter()
        char = CharacterizeImageTask().run(exposure, id_generator=idg)
        t1 = time.perf_counter()
        res = CalibrateTask(config, ref_obj_loader=loader).run(char.exposure, char.background, char.source_cat, idg)
        t2 = time.perf_counter()
        timings = dict(res.output_summary_metrics["timings"])
        timings["(characterize)"] = t1 - t0
        runs.append(timings)
        totals.append(t2 - t0)
    runs, totals = runs[1:], totals[1:]
    print()
    print("CharacterizeImageTask + CalibrateTask, the same detector:")
    rows = [[s, statistics.median(r[s] for r in runs)] for s in runs[0]]
    rows.append(["total (characterize + calibrate)", statistics.median(totals)])
    print(_common.format_table(["stage", "seconds (median)"], rows))
    exp = res.output_exposure
    gx, gy = np.meshgrid(np.linspace(0, exp.width - 1, 21), np.linspace(0, exp.height - 1, 21))
    ra, dec = pixel_to_sky(exp.wcs, gx.ravel(), gy.ravel())
    tra, tdec = pixel_to_sky(repo.true_wcs(visit, det), gx.ravel(), gy.ravel())
    sep = np.hypot((ra - tra) * np.cos(np.radians(tdec)), dec - tdec) * 3.6e6
    cx, cy = exp.bbox.center
    k = np.asarray(repo.true_psf(visit, det).compute_kernel_image(cx, cy, 101), np.float64)
    yy, xx = np.mgrid[:101, :101] - 50
    ee = k[np.hypot(xx, yy) <= 12].sum() / k.sum()
    true_zp = 2.5 * math.log10(repo.true_photo_calib(visit, det).instflux_at_zero_magnitude) + 2.5 * math.log10(ee)
    zp = 2.5 * math.log10(exp.photo_calib.instflux_at_zero_magnitude)
    m = res.output_summary_metrics
    acc = {"wcs_rms_mas": float(np.sqrt(np.mean(sep**2))), "zp_minus_truth_mmag": 1000 * (zp - true_zp),
           "n_sources": len(res.output_cat), "astrom_n_matches": m.get("astrom_n_matches"),
           "photo_cal_n_good": m.get("photo_cal_n_good")}
    print(f"sources {acc['n_sources']}, astrometric matches {acc['astrom_n_matches']}, photometric stars "
          f"{acc['photo_cal_n_good']}; WCS rms vs truth {acc['wcs_rms_mas']:.2f} mas; zero point - truth "
          f"{acc['zp_minus_truth_mmag']:+.2f} mmag")
    return runs, totals, acc


if __name__ == "__main__":
    main()
