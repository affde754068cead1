"""ReprocessVisitImageTask's ``remove_initial_photo_calib`` on a simulated repository (issue 24): the post-ISR
snaps are in counts and the preliminary background in nJy (as calibrateImage with do_calibrate_pixels=True
writes it, here with the detector's true calibration as the initial PhotoCalib). LSST's order (calibrate the
snaps, subtract the nJy background, divide by the calibration mean) must give the plain path's image (counts
snaps, counts background) to float precision, and the same sources."""

from __future__ import annotations

import numpy as np

from visitcal.core.apcorr import ApCorrMap
from visitcal.core.photocalib import PhotoCalib
from visitcal.detection.background import BackgroundList, make_background
from visitcal.detection.snap_combine import combine_snaps
from visitcal.psf.models import GaussianPsf
from visitcal.tasks.reprocess_visit_image import ReprocessVisitImageConfig, ReprocessVisitImageTask


def test_remove_initial_photo_calib_on_a_sim_repository_matches_the_plain_path(sim_repo):
    visit, detector = sim_repo.visits[0], sim_repo.detectors[0]

    def snaps():
        return [sim_repo.post_isr_image(visit, detector, s) for s in (0, 1)]

    initial = sim_repo.true_photo_calib(visit, detector)
    c = initial.calibration_mean
    assert initial.is_constant and c > 0
    prelim = combine_snaps(snaps())            # the preliminary image, counts
    bg_counts = BackgroundList([make_background(prelim.masked_image)])
    prelim_njy = initial.calibrate_image(prelim.masked_image)
    bg_njy = BackgroundList([make_background(prelim_njy)])
    # the nJy background is the counts one times c (the fit is linear in the pixels)
    np.testing.assert_allclose(bg_njy.get_image(np.float64) / c, bg_counts.get_image(np.float64),
                               rtol=1e-5, atol=1e-3)
    wcs = snaps()[0].wcs
    kw = dict(psf=GaussianPsf(2.0), ap_corr=ApCorrMap(), photo_calib=PhotoCalib(c), wcs=wcs)
    cfg = ReprocessVisitImageConfig(do_calibrate_pixels=False)
    a = ReprocessVisitImageTask(cfg).run(exposures=snaps(), background=bg_counts, **kw)
    b = ReprocessVisitImageTask(cfg.model_copy(update={"remove_initial_photo_calib": True})).run(
        exposures=snaps(), background=bg_njy, initial_photo_calib=initial, **kw)
    ia, ib = a.exposure.image.astype(np.float64), b.exposure.image.astype(np.float64)
    # float32 rounding of image * c / c on pixels up to the saturation level, and of the nJy background fit
    scale = np.maximum(np.abs(ia), 100.0)
    assert np.max(np.abs(ib - ia) / scale) < 1e-5
    np.testing.assert_allclose(b.exposure.variance, a.exposure.variance, rtol=1e-5)
    assert abs(np.median(ib) - np.median(ia)) < 1e-3
    assert abs(np.median(ib)) < 5.0                # sky-subtracted: the median sits at the sky level 0
    assert len(b.sources) == len(a.sources) > 20
    np.testing.assert_allclose(b.sources["base_PsfFlux_instFlux"], a.sources["base_PsfFlux_instFlux"],
                               rtol=1e-4, atol=1e-3)
