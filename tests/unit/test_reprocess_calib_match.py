"""ReprocessVisitImageTask's calib-source cross-match: 0.2 arcsec on the sky (lsst-spec §7's unit slip
would make it 0.2 degrees, or 0.2 radians): a neighbour 0.3" away must not match, one 0.1" away must."""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from visitcal.reprocess_visit_image import ReprocessVisitImageTask


def test_calib_match_radius_is_arcsec_on_the_sky():
    ra0, dec0 = 1.0, np.radians(-60.0)  # high declination: an RA offset is scaled by cos(dec) on the sky
    arcsec = np.radians(1 / 3600)
    calib = Table({"coord_ra": [ra0], "coord_dec": [dec0], "calib_psf_candidate": [True],
                   "calib_psf_used": [True], "calib_psf_reserved": [False]})
    # offsets on the sky: 0.1" in RA, 0.3" in RA, 0.19" in Dec, 0.25" in Dec, 0.15" in RA (0.3 deg of RA
    # coordinate would be wrong by cos(dec) = 0.5: 0.15" of sky is 0.3" of RA coordinate here)
    d_ra = np.array([0.1, 0.3, 0.0, 0.0, 0.15]) * arcsec / np.cos(dec0)
    d_dec = np.array([0.0, 0.0, 0.19, 0.25, 0.0]) * arcsec
    src = Table({"coord_ra": ra0 + d_ra, "coord_dec": dec0 + d_dec})
    ReprocessVisitImageTask()._match_calib_sources(src, calib)
    assert list(src["calib_psf_used"]) == [True, False, True, False, True]
    assert list(src["calib_psf_candidate"]) == [True, False, True, False, True]
    assert not src["calib_psf_reserved"].any()


def test_no_calib_sources_gives_false_flags():
    src = Table({"coord_ra": [1.0], "coord_dec": [0.5]})
    ReprocessVisitImageTask()._match_calib_sources(src, None)
    assert not src["calib_psf_used"][0] and not src["calib_psf_reserved"][0]
