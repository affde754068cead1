"""Exposures carrying the real components (ApCorrMap, PhotoCalib, TAN-SIP WCS) round-trip through
FITS losslessly, and PhotoCalib calibrates a MaskedImage pixel by pixel."""

import numpy as np

from visitcal.core.apcorr import ApCorrMap
from visitcal.core.chebyshev import ChebyshevBoundedField
from visitcal.core.geom import Box2I
from visitcal.core.image import Exposure, MaskedImage, VisitInfo
from visitcal.io import read_exposure, write_exposure
from visitcal.io.fits import assert_exposures_equal
from visitcal.core.photocalib import PhotoCalib
from visitcal.core.wcs import make_tan_sip_wcs, pixel_to_sky


def make_exposure():
    rng = np.random.default_rng(3)
    shape, xy0 = (60, 80), (100, 200)
    box = Box2I.from_shape(shape, xy0)
    image = rng.normal(100, 5, shape).astype(np.float32)
    variance = np.full(shape, 25.0, np.float32)
    variance[5, 7] = np.inf
    image[9, 9] = np.nan
    exp = Exposure.from_arrays(image, variance=variance, xy0=xy0)
    exp.mask.set("SAT", where=image > 110)
    ap = ApCorrMap()
    ap["base_PsfFlux_instFlux"] = ChebyshevBoundedField(box, 1 + 1e-3 * rng.normal(size=(3, 3)))
    ap["base_PsfFlux_instFluxErr"] = ChebyshevBoundedField(box, [[0.003]])
    exp.ap_corr_map = ap
    exp.photo_calib = PhotoCalib.from_field(ChebyshevBoundedField(box, [[57.5, 0.2], [0.1, 0.0]]), 0.05)
    a = np.zeros((3, 3))
    a[2, 0] = 1e-6
    b = np.zeros((3, 3))
    b[0, 2] = -1e-6
    exp.wcs = make_tan_sip_wcs((140.0, 230.0), (35.0, -4.0), np.diag([-5.5e-5, 5.5e-5]), sip_a=a, sip_b=b)
    exp.visit_info = VisitInfo(id=12345, band="r", physical_filter="r_03", exposure_time=30.0,
                               date="2026-11-23T05:00:00", airmass=1.2)
    return exp


def test_exposure_with_real_components_round_trips(tmp_path):
    exp = make_exposure()
    path = tmp_path / "calexp.fits"
    write_exposure(exp, path)
    back = read_exposure(path)
    assert_exposures_equal(exp, back)
    assert back.ap_corr_map == exp.ap_corr_map
    assert back.photo_calib == exp.photo_calib
    x = np.array([100.0, 179.0, 140.5])
    y = np.array([200.0, 259.0, 230.2])
    np.testing.assert_array_equal(np.array(pixel_to_sky(back.wcs, x, y)), np.array(pixel_to_sky(exp.wcs, x, y)))


def test_calibrate_image_pixel_by_pixel():
    exp = make_exposure()
    pc = exp.photo_calib
    calibrated = pc.calibrate_image(exp.masked_image)
    assert isinstance(calibrated, MaskedImage) and calibrated.xy0 == exp.xy0
    # Reference: c evaluated point by point at each parent-frame pixel centre.
    yy, xx = np.mgrid[0:60, 0:80]
    c = pc.local_calibration(xx + 100.0, yy + 200.0)
    np.testing.assert_allclose(calibrated.image, exp.image * c, rtol=1e-6, equal_nan=True)
    finite = np.isfinite(exp.variance)
    np.testing.assert_allclose(calibrated.variance[finite], (exp.variance * c * c)[finite], rtol=1e-6)
    np.testing.assert_array_equal(calibrated.mask.array, exp.mask.array)
    back = pc.uncalibrate_image(calibrated)
    np.testing.assert_allclose(back.image, exp.image, rtol=1e-6, equal_nan=True)
    # The input is untouched.
    assert not np.shares_memory(calibrated.image, exp.image)


def test_calibrate_image_in_place_is_the_copy_to_the_bit():
    from visitcal.core.photocalib import PhotoCalib

    for pc in (make_exposure().photo_calib, PhotoCalib(3.7)):  # spatially varying, constant
        exp = make_exposure()
        copy = pc.calibrate_image(exp.masked_image)
        image = exp.image
        pc.calibrate_image_in_place(exp)
        assert exp.image is image  # the same plane, scaled
        np.testing.assert_array_equal(exp.image, copy.image)
        np.testing.assert_array_equal(exp.variance, copy.variance)
        np.testing.assert_array_equal(exp.mask.array, copy.mask.array)


def test_constant_calibration_of_an_exposure():
    exp = make_exposure()
    calibrated = PhotoCalib(2.0).calibrate_image(exp)
    np.testing.assert_array_equal(calibrated.image, exp.image * np.float32(2.0))
    assert np.isinf(calibrated.variance[5, 7])
