"""Nested HEALPix pixel indices (`visitcal.calib.healpix_nest_pixel`, C++ ``calib/healpix.hpp``): exactly
hpgeom's ``angle_to_pixel(nside, ra, dec)`` (nest=True, lonlat=True, degrees=True) on random points and on
the boundaries a careless implementation gets wrong (poles, RA = 0/360 and its multiples, the polar-cap /
equatorial border z = +-2/3, pixel edges), over every nside; plus truths that need no hpgeom: the base
pixels' centres (Gorski et al. 2005, ApJ 622, 759, figure 4), the nesting of the scheme and the equal
areas of the pixels."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from visitcal.calib import healpix_nest_pixel
from visitcal.calib.healpix import HEALPIX_MAX_NSIDE

Z23 = math.degrees(math.asin(2.0 / 3.0))  # Dec of the polar-cap / equatorial border, deg


def _specials():
    """Declinations on or next to the borders (poles, z = +-2/3, equator), in degrees."""
    out = [90.0, -90.0, 0.0, -0.0, Z23, -Z23]
    for v in (90.0, -90.0, Z23, -Z23, 0.0):
        out += [np.nextafter(v, 100.0), np.nextafter(v, -100.0)]
    return [float(v) for v in out if -90.0 <= v <= 90.0]


DEC_SPECIAL = _specials()

dec_strategy = st.one_of(st.floats(-90.0, 90.0, allow_nan=False), st.sampled_from(DEC_SPECIAL),
                         st.floats(89.0, 90.0), st.floats(-90.0, -89.0), st.floats(Z23 - 1e-6, Z23 + 1e-6),
                         st.floats(-Z23 - 1e-6, -Z23 + 1e-6))


@st.composite
def points(draw):
    """(order, ra, dec): random positions mixed with RA on pixel-edge meridians (multiples of 90 / 2**k deg,
    360, 0, negative and > 360) and Dec on the borders."""
    order = draw(st.integers(0, 29))
    n = draw(st.integers(1, 60))
    ra = draw(hnp.arrays(np.float64, n, elements=st.floats(-720.0, 720.0, allow_nan=False)))
    dec = np.array([draw(dec_strategy) for _ in range(n)])
    k = draw(st.integers(0, 12))
    edge = draw(hnp.arrays(np.int64, n, elements=st.integers(-8 * 2**k, 8 * 2**k))) * (90.0 / 2**k)
    on_edge = draw(hnp.arrays(np.bool_, n))
    ra = np.where(on_edge, edge, ra)
    ra[draw(hnp.arrays(np.bool_, n))] = draw(st.sampled_from([0.0, 360.0, -0.0, 359.99999999999994, 720.0]))
    return order, ra, dec


@settings(max_examples=300, deadline=None)
@given(points())
def test_equals_hpgeom_exactly(case):
    hpgeom = pytest.importorskip("hpgeom", reason="hpgeom (a test-only dependency) is not installed")
    order, ra, dec = case
    nside = 2**order
    np.testing.assert_array_equal(healpix_nest_pixel(nside, ra, dec), hpgeom.angle_to_pixel(nside, ra, dec))


@pytest.mark.parametrize("order", [0, 1, 5, 10, 16, 29])
def test_equals_hpgeom_on_a_million_uniform_points(order):
    hpgeom = pytest.importorskip("hpgeom", reason="hpgeom (a test-only dependency) is not installed")
    rng = np.random.default_rng(order)
    ra = rng.uniform(0.0, 360.0, 200_000)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, 200_000)))
    np.testing.assert_array_equal(healpix_nest_pixel(2**order, ra, dec), hpgeom.angle_to_pixel(2**order, ra, dec))


def test_base_pixel_centres():
    """nside = 1: the twelve base pixels' centres (Gorski et al. 2005, fig. 4) are pixels 0..11; points just
    either side of RA = 0 on the equator lie in face 4 (centred on RA = 0)."""
    ra = [45.0, 135.0, 225.0, 315.0, 0.0, 90.0, 180.0, 270.0, 45.0, 135.0, 225.0, 315.0]
    dec = [Z23] * 4 + [0.0] * 4 + [-Z23] * 4
    assert healpix_nest_pixel(1, ra, dec).tolist() == list(range(12))
    assert healpix_nest_pixel(1, [0.5, 359.5], [-1.0, -1.0]).tolist() == [4, 4]


def test_nesting_equal_areas_and_range():
    """A pixel at 2 nside lies inside its parent at nside (index >> 2); uniform points fill the 12 nside^2
    pixels evenly (equal areas: a chi-square within 5 sigma); every index is in [0, 12 nside^2)."""
    rng = np.random.default_rng(5)
    ra = rng.uniform(-360.0, 720.0, 400_000)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, ra.size)))
    coarse = healpix_nest_pixel(16, ra, dec)
    fine = healpix_nest_pixel(32, ra, dec)
    np.testing.assert_array_equal(fine >> 2, coarse)
    counts = np.bincount(healpix_nest_pixel(8, ra, dec), minlength=768)
    assert counts.size == 768
    expected = ra.size / 768
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert abs(chi2 - 767) < 5 * math.sqrt(2 * 767), chi2
    top = healpix_nest_pixel(HEALPIX_MAX_NSIDE, ra, dec)
    assert top.min() >= 0 and top.max() < 12 * HEALPIX_MAX_NSIDE**2
    np.testing.assert_array_equal(top >> (2 * (29 - 5)), fine)


def test_shapes_non_finite_and_errors():
    pix = healpix_nest_pixel(32, np.array([[10.0, np.nan], [np.inf, 20.0]]), np.array([[0.0, 0.0], [0.0, np.nan]]))
    assert pix.shape == (2, 2) and pix.dtype == np.int64
    assert pix[0, 0] >= 0 and pix[0, 1] == -1 and pix[1, 0] == -1 and pix[1, 1] == -1
    assert healpix_nest_pixel(32, np.zeros(0), np.zeros(0)).shape == (0,)
    assert healpix_nest_pixel(np.int64(4), 10.0, 0.0).shape == ()
    for bad in (0, 3, 2**30, -2):
        with pytest.raises(ValueError, match="power of two from 1 to 2\\*\\*29"):
            healpix_nest_pixel(bad, [0.0], [0.0])
    for bad in (32.0, True, "32"):
        with pytest.raises(TypeError, match="nside must be an integer"):
            healpix_nest_pixel(bad, [0.0], [0.0])
    with pytest.raises(ValueError, match="one shape"):
        healpix_nest_pixel(32, [0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match=r"dec must be in \[-90, 90\] deg, got 90.5.* at index 1"):
        healpix_nest_pixel(32, [0.0, 1.0], [0.0, 90.5])


def test_kernel_checks_nside_itself():
    """The C++ kernel rejects a bad nside in our words even when called past the Python checks."""
    from visitcal import _core

    with pytest.raises(ValueError, match="nside must be a power of two from 1 to 2\\^29, got 48"):
        _core.healpix_nest_pixel(48, np.zeros(1), np.zeros(1))
