"""WCS helpers: TAN-SIP construction, vectorised round trips, local CD matrix, header round trip."""

import numpy as np
import pytest

from visitcal.core.wcs import (
    local_cd_matrix,
    make_tan_sip_wcs,
    pixel_scale_arcsec,
    pixel_to_sky,
    read_wcs,
    shift_wcs,
    sky_to_pixel,
    wcs_to_header,
)

SCALE = 0.2 / 3600.0  # 0.2 arcsec per pixel
ROT = np.radians(17.0)
CD = SCALE * np.array([[-np.cos(ROT), np.sin(ROT)], [np.sin(ROT), np.cos(ROT)]])


def sip_wcs():
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[2, 0], a[1, 1], a[0, 2], a[3, 0] = 2e-6, -1e-6, 3e-6, 1e-9
    b[2, 0], b[0, 2], b[1, 2] = -1.5e-6, 2.5e-6, 2e-10
    return make_tan_sip_wcs((2035.5, 1999.5), (150.1, -30.2), CD, sip_a=a, sip_b=b)


def grid():
    x, y = np.meshgrid(np.linspace(-0.5, 4071.5, 13), np.linspace(-0.5, 3999.5, 11))
    return x.ravel(), y.ravel()


def test_tan_round_trip_and_reference_point():
    wcs = make_tan_sip_wcs((100.0, 200.0), (10.0, 45.0), CD)
    ra, dec = pixel_to_sky(wcs, 100.0, 200.0)
    assert (float(ra), float(dec)) == pytest.approx((10.0, 45.0), abs=1e-12)
    np.testing.assert_allclose(local_cd_matrix(wcs, 100.0, 200.0), CD, rtol=0, atol=1e-14)
    assert pixel_scale_arcsec(wcs, 100.0, 200.0) == pytest.approx(0.2, rel=1e-9)


def test_sip_round_trip_to_1e6_pixel():
    wcs = sip_wcs()
    x, y = grid()
    ra, dec = pixel_to_sky(wcs, x, y)
    x2, y2 = sky_to_pixel(wcs, ra, dec)
    assert np.max(np.hypot(x2 - x, y2 - y)) < 1e-6
    # The distortion is real: several arcsec at the corners relative to plain TAN.
    tan = make_tan_sip_wcs((2035.5, 1999.5), (150.1, -30.2), CD)
    ra_t, dec_t = pixel_to_sky(tan, x, y)
    assert np.max(np.hypot((ra - ra_t) * np.cos(np.radians(dec)), dec - dec_t)) * 3600 > 1.0


def test_header_round_trip_keeps_sip():
    wcs = sip_wcs()
    back = read_wcs(wcs_to_header(wcs))
    x, y = grid()
    np.testing.assert_array_equal(np.array(pixel_to_sky(back, x, y)), np.array(pixel_to_sky(wcs, x, y)))


def test_local_cd_matches_finite_difference_of_sky():
    wcs = sip_wcs()
    cd = local_cd_matrix(wcs, np.array([10.0, 4000.0]), np.array([3900.0, 20.0]))
    assert cd.shape == (2, 2, 2)
    # Independent check: small-angle offsets of a 1-pixel step in x agree with the CD column.
    ra0, dec0 = pixel_to_sky(wcs, 10.0, 3900.0)
    ra1, dec1 = pixel_to_sky(wcs, 11.0, 3900.0)
    dxi = (ra1 - ra0) * np.cos(np.radians(dec0))
    assert dxi == pytest.approx(cd[0, 0, 0], rel=1e-4)
    assert (dec1 - dec0) == pytest.approx(cd[0, 1, 0], rel=1e-4)


def test_shift_wcs():
    wcs = sip_wcs()
    shifted = shift_wcs(wcs, 30.0, -12.0)
    x, y = grid()
    np.testing.assert_allclose(np.array(pixel_to_sky(shifted, x + 30.0, y - 12.0)),
                               np.array(pixel_to_sky(wcs, x, y)), rtol=0, atol=1e-11)


def test_header_without_wcs_gives_none():
    from astropy.io import fits
    assert read_wcs(fits.Header({"NAXIS": 2})) is None
