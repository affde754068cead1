# The tutorial's commands, run in this order from an empty directory (tests/sim/test_tutorial.py runs
# exactly these lines). About 60 s on two cores.

# 1. Simulate: 2 dithered visits x 2 detectors of 2048 x 2048 px, a rich star field, with the truth.
visitcal sim tutorial_repo --visits 2 --detectors 2 --star-density 30000 --overwrite
# 2. Calibrate every detector: initial PSF, aperture corrections, TAN-SIP astrometry, zero point.
visitcal calibrate tutorial_repo -j 2 --preset sparse
# 3. Associate isolated stars across the visits (per tract of the sky map).
visitcal associate tutorial_repo
# 4. Refit the PSF and aperture corrections per visit, with reserved stars.
visitcal finalize tutorial_repo -j 2
# 5. Reprocess: visit summaries, then the final nJy images and source catalogs.
visitcal reprocess tutorial_repo -j 2
# 6. Where the repository stands: per step, units done, out of date, failed, missing.
visitcal status tutorial_repo --preset sparse
# 7. The whole chain in one command: every unit is up to date (same config, same input digests), so skipped.
visitcal run tutorial_repo -j 2 --preset sparse
# 8. Look at the results: an HTML report of figures and graded metrics, with the simulator's truth.
visitcal qa tutorial_repo --truth
