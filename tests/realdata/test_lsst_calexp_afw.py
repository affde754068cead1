"""read_lsst_calexp on files written by the LSST pipelines, with every component attached: the SkyWcs (exact
through AST, and its TAN-SIP approximation as the exposure's astropy WCS), the PhotoCalib, and LSST's PiffPsf
(only when the pickle is trusted)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from visitcal.io import read_lsst_calexp

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def afw_dir(realdata_dir):
    d = realdata_dir / "lsst_afw"
    if not d.is_dir():
        pytest.skip(f"no lsst_afw fixtures under {realdata_dir}")
    return d


def test_exposure_version_2_has_its_wcs_and_calibration(afw_dir):
    pytest.importorskip("starlink.Ast", reason="the afw SkyWcs needs starlink-pyast (pip install 'visitcal[lsst]')")
    exp = read_lsst_calexp(afw_dir / "afw" / "exposure-version-2.fits")
    # README: CRVAL (30, 40) deg at CRPIX (4, 4) in afw's 0-based pixels, 0.2"/px
    ra, dec = exp.sky_wcs.pixel_to_sky(np.array([4.0]), np.array([4.0]))
    assert ra[0] == pytest.approx(30.0, abs=1e-10) and dec[0] == pytest.approx(40.0, abs=1e-10)
    tra, tdec = exp.wcs.wcs_pix2world(np.array([4.0, 9.0]), np.array([4.0, 0.0]), 0)
    err = exp.metadata["AFW_SKYWCS_TANSIP_ERR"]
    assert 0 <= err < 1e-3
    ara, adec = exp.sky_wcs.pixel_to_sky(np.array([4.0, 9.0]), np.array([4.0, 0.0]))
    sep = np.hypot((tra - ara) * math.cos(math.radians(40.0)), tdec - adec) * 3600
    assert np.all(sep <= err * 1.5 + 1e-9)
    assert exp.photo_calib.calibration_mean == pytest.approx(1e6) and exp.photo_calib.calibration_err == 2e4
    assert exp.visit_info.band == "N656" and exp.visit_info.physical_filter == "ha"
    assert np.array_equal(exp.image, np.arange(100, dtype=np.float32).reshape(10, 10))


def test_piff_psf_is_loaded_only_when_trusted_and_matches_lsst(afw_dir):
    pytest.importorskip("piff", reason="LSST's PiffPsf needs piff (pip install 'visitcal[lsst]')")
    pytest.importorskip("starlink.Ast", reason="its SkyWcs needs starlink-pyast")
    import visitcal.psf  # noqa: F401 - registers the PiffPsf reader

    path = afw_dir / "meas_extensions_piff" / "exp.fits"
    untrusted = read_lsst_calexp(path)
    assert untrusted.psf is None and untrusted.sky_wcs is not None
    exp = read_lsst_calexp(path, trust_pickle=True)
    golden = fits.getdata(afw_dir / "meas_extensions_piff" / "psfIm_10_100.fits").astype(np.float64)
    ours = np.asarray(exp.psf.compute_image(10.0, 100.0), np.float64)
    assert ours.shape == golden.shape
    assert np.max(np.abs(ours - golden)) <= 1e-6 * golden.max()
