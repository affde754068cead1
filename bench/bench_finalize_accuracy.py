"""Accuracy of the finalize step on a rich full-size simulated repository (issue 8's goals), one-off.

`visitcal.sim` lsst preset, 3 visits x 1 detector of 4072 x 4000, one 60-s snap, 100000 stars/deg^2, written
once into ``bench/results/sim_repo_finalize`` (~3.5 min) and calibrated there (SIP order 3). Then, for each
PSF-determiner configuration, `run_finalize` with ``overwrite`` and the errors at the reserved stars against the
true PSF (size = determinant radius, relative; e1, e2 distortions) and of the base_PsfFlux ap-corr field against
the ratio 12-px aperture flux / PsfFlux that the same measurement code gives on a noise-free image of the true
PSF (`tests/sim/test_finalize_sim._true_ap_corr`), on a 5 x 5 grid of each detector.

    PYTHONPATH=python python bench/bench_finalize_accuracy.py
"""

from __future__ import annotations

import sys
import time

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np

REPO = _common.RESULTS_DIR / "sim_repo_finalize"
sys.path.insert(0, str(_common.BENCH_DIR.parent))  # tests.sim: the repository and the truth comparison
# (label, PSF spatial order, candidate cap, fit_center, max_snr, ap-corr Chebyshev order, ap-corr fit_weighted,
#  [varying_radius])
CONFIGS = [("LSST defaults (order 2, 300-candidate cap)", 2, 300, True, 200.0, 2, False),
           ("LSSTCam r (order 4, no centre fit)", 4, 300, False, 200.0, 2, False),
           ("order 2, cap 1000", 2, 1000, True, 200.0, 2, False),
           ("order 4, cap 1000", 4, 1000, True, 200.0, 2, False),
           ("order 4, cap 1000, max_snr 1000", 4, 1000, True, 1000.0, 2, False),
           ("order 4, cap 1000, ap corr order 4", 4, 1000, True, 200.0, 4, False),
           ("order 4, cap 1000, max_snr 1000, ap corr order 4", 4, 1000, True, 1000.0, 4, False),
           ("LSST defaults, ap corr weighted", 2, 300, True, 200.0, 2, True),
           ("LSST defaults, ap corr order 4 weighted", 2, 300, True, 200.0, 4, True),
           ("order 4, cap 1000, max_snr 1000, ap corr order 4 weighted", 4, 1000, True, 1000.0, 4, True),
           ("LSST defaults, varying_radius 6", 2, 300, True, 200.0, 2, False, 6.0),
           ("order 4, cap 1000, max_snr 1000, varying_radius 6", 4, 1000, True, 1000.0, 2, False, 6.0),
           ("order 4, cap 1000, varying_radius 6", 4, 1000, True, 200.0, 2, False, 6.0)]
if len(sys.argv) > 1:  # a subset by index, e.g. 0,3
    CONFIGS = [CONFIGS[int(i)] for i in sys.argv[1].split(",")]


def _repo():
    """Simulate (once) and calibrate the repository of tests/sim/test_finalize_accuracy_slow.py."""
    from tests.sim.test_finalize_accuracy_slow import RICH, RICH_CALIBRATE
    from visitcal.pipeline.calibrate_step import run_calibrate
    from visitcal.sim import simulate

    if not (REPO / "repo.json").exists():
        REPO.parent.mkdir(exist_ok=True)
        simulate(RICH, REPO, overwrite=True)
    statuses = run_calibrate(REPO, config=RICH_CALIBRATE)
    assert all(s.ok for s in statuses), statuses


def main() -> None:
    from tests.sim.test_finalize_accuracy_slow import errors_against_truth
    from visitcal.tasks.finalize_characterization import FinalizeCharacterizationConfig
    from visitcal.pipeline.finalize_step import FinalizeStepConfig, run_finalize

    _common.print_header("finalize accuracy on a rich 3-visit 4072 x 4000 repository", None)
    _repo()
    rows = []
    for label, order, cap, fit_center, max_snr, ap_order, weighted, *rest in CONFIGS:
        varying_radius = rest[0] if rest else 0.0
        base = FinalizeCharacterizationConfig()
        pd = base.psf_determiner
        pd = pd.model_copy(update={"pixelgrid": pd.pixelgrid.model_copy(update={
            "spatial_order": order, "fit_center": fit_center, "max_snr": max_snr,
            "varying_radius": varying_radius})})
        mac = base.measure_ap_corr
        mac = mac.model_copy(update={"fit_weighted": weighted, "fit_config": mac.fit_config.model_copy(
            update={"order_x": ap_order, "order_y": ap_order})})
        fc = base.model_copy(update={"psf_determiner": pd, "measure_ap_corr": mac, "make_psf_candidates":
                                     base.make_psf_candidates.model_copy(update={"max_candidates": cap})})
        t0 = time.perf_counter()
        run_finalize(REPO, config=FinalizeStepConfig(finalize=fc), overwrite=True)
        elapsed = time.perf_counter() - t0
        err, dm = errors_against_truth(REPO)  # dm in mmag
        rows.append([label, len(err), float(np.sqrt(np.mean(err[:, 0] ** 2))), float(err[:, 0].mean()),
                     float(err[:, 1].mean()), float(err[:, 2].mean()), float(np.sqrt(np.mean(dm**2))), elapsed])
    print(_common.format_table(["config", "reserved", "size err rms", "size err mean", "mean e1 err", "mean e2 err",
                                "ap corr rms (mmag)", "finalize s (3 visits)"], rows, floatfmt=".3g"))


if __name__ == "__main__":
    main()
