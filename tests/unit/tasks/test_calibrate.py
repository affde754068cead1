"""CalibrateTask's copy of the characterization flags (lsst-spec §6.1 step 9) on hand-made catalogs."""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from visitcal.tasks.calibrate import CalibrateConfig, CalibrateTask


def test_each_characterization_source_flags_its_nearest_target_within_3_px():
    task = CalibrateTask(CalibrateConfig(do_astrometry=False, do_photo_cal=False))
    cat = Table({"base_SdssCentroid_x": [10.0, 12.5, 50.0, 50.5, 80.0, 200.0],
                 "base_SdssCentroid_y": [10.0, 10.0, 50.0, 50.0, 80.0, 200.0],
                 "deblend_nChild": [0, 0, 2, 0, 0, 0],       # row 2 is a deblended parent: not a target
                 "sky_source": [False, False, False, False, True, False]})  # row 4: a sky source
    cat.meta["slots"] = {"Centroid": "base_SdssCentroid"}
    ic = Table({"base_SdssCentroid_x": [10.4, 50.1, 80.0, 203.5, np.nan],
                "base_SdssCentroid_y": [10.0, 50.0, 80.0, 200.0, 5.0],
                "calib_psf_candidate": [True, True, True, True, True],
                "calib_psf_used": [True, False, True, True, True],
                "calib_psf_reserved": [False, True, False, False, False]})
    ic.meta["slots"] = {"Centroid": "base_SdssCentroid"}
    task._copy_ic_source_fields(cat, ic)
    # ic 0 -> row 0 (0.4 px; row 1 is 2.1 px away), ic 1 -> row 3 (the parent at 0.1 px is not a target),
    # ic 2 -> nothing (only a sky source there), ic 3 -> nothing (3.5 px), ic 4 -> nothing (NaN)
    assert list(cat["calib_detected"]) == [True, False, False, True, False, False]
    assert list(cat["calib_psf_candidate"]) == [True, False, False, True, False, False]
    assert list(cat["calib_psf_used"]) == [True, False, False, False, False, False]
    assert list(cat["calib_psf_reserved"]) == [False, False, False, True, False, False]


def test_no_characterization_catalog_gives_false_flags():
    task = CalibrateTask(CalibrateConfig(do_astrometry=False, do_photo_cal=False))
    cat = Table({"base_SdssCentroid_x": [1.0], "base_SdssCentroid_y": [2.0]})
    task._copy_ic_source_fields(cat, None)
    assert not cat["calib_psf_used"][0] and not cat["calib_detected"][0]
