"""afw's persisted WCSs (SkyWcs through AST, the old TanWcs) and LSST's PiffPsf, read from files the LSST
Science Pipelines wrote (shared/realdata/lsst_afw, see its README)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from astropy.io import fits

from visitcal.io import FitsReadError
from visitcal.io.afw_archive import AfwArchive
from visitcal.io.fits import read_xy0, wcs_from_header

pytestmark = pytest.mark.realdata


def _archive(realdata_dir, name):
    path = realdata_dir / "lsst_afw" / name
    hdul = fits.open(path)
    return AfwArchive(hdul, path), hdul


@pytest.fixture
def ast():
    return pytest.importorskip("starlink.Ast", reason="reading an afw SkyWcs needs starlink-pyast")


def _sep_arcsec(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = (np.radians(np.asarray(v, float)) for v in (ra1, dec1, ra2, dec2))
    c = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    s = np.hypot(np.cos(d2) * np.sin(r1 - r2), np.cos(d1) * np.sin(d2) - np.sin(d1) * np.cos(d2) * np.cos(r1 - r2))
    return np.degrees(np.arctan2(s, c)) * 3600


# ---- SkyWcs ---------------------------------------------------------------------------------------------------

def test_exposure_version_2_skywcs_known_values(realdata_dir, ast):
    """README: CRVAL (30°, 40°) at CRPIX (4, 4) (afw's 0-based pixels), 0.2"/px, orientation 45°."""
    from visitcal.io.afw_wcs import AstSkyWcs, read_sky_wcs

    archive, hdul = _archive(realdata_dir, "afw/exposure-version-2.fits")
    with hdul:
        wcs = read_sky_wcs(archive, archive.components()["SKYWCS"])
    assert isinstance(wcs, AstSkyWcs) and wcs.system == "ICRS"
    ra, dec = wcs.pixel_to_sky(4.0, 4.0)  # 0-based: afw's PIXELS frame is not AST's 1-based GRID
    assert ra == pytest.approx(30.0, abs=1e-12) and dec == pytest.approx(40.0, abs=1e-12)
    x, y = wcs.sky_to_pixel(30.0, 40.0)
    assert x == pytest.approx(4.0, abs=1e-9) and y == pytest.approx(4.0, abs=1e-9)
    assert wcs.pixel_scale_arcsec(4.0, 4.0) == pytest.approx(0.2, abs=1e-6)
    # orientation = position angle of pixel +y, north through east (afw makeCdMatrix's): 45°
    assert wcs.orientation_deg(4.0, 4.0) == pytest.approx(45.0, abs=1e-9)
    # independently: one pixel along +y moves 0.2" at PA 45° (north-east), one along +x at PA -45° (north-west)
    for (dx, dy), pa in (((0, 1), 45.0), ((1, 0), -45.0)):
        r1, d1 = wcs.pixel_to_sky(4.0 + dx, 4.0 + dy)
        east = (r1 - 30.0) * math.cos(math.radians(40.0)) * 3600
        north = (d1 - 40.0) * 3600
        assert math.hypot(east, north) == pytest.approx(0.2, rel=1e-5)
        assert math.degrees(math.atan2(east, north)) == pytest.approx(pa, abs=1e-3)
    # pickles through its AST text
    again = pickle.loads(pickle.dumps(wcs))
    assert again.pixel_to_sky(7.0, -3.0) == wcs.pixel_to_sky(7.0, -3.0)


def test_jointcal_skywcs_tan_sip_and_round_trip(realdata_dir, ast):
    from visitcal.io.afw_wcs import read_sky_wcs

    archive, hdul = _archive(realdata_dir, "afw/jointcal_wcs-0030600-088.fits")
    with hdul:
        wcs = read_sky_wcs(archive, 1)
    assert wcs.frameset.Nframe == 4  # PIXELS -> FOCAL -> IWC -> SKY: jointcal's distortion
    bbox = (-0.5, 2047.5, -0.5, 4175.5)  # an HSC CCD, 2048 x 4176
    approx, max_err = wcs.to_tan_sip(bbox, order=4)
    assert approx.sip is not None and 0 < max_err < 1e-3  # measured 3.0e-4"
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 2047, 500), rng.uniform(0, 4175, 500)
    ra, dec = wcs.pixel_to_sky(x, y)
    ra_a, dec_a = approx.all_pix2world(x, y, 0)
    assert _sep_arcsec(ra, dec, ra_a, dec_a).max() <= 1.2 * max_err
    # the scale is HSC's (0.168"/px nominal; jointcal's includes the optical distortion at this CCD)
    assert 0.15 < wcs.pixel_scale_arcsec(1024, 2088) < 0.18
    # sky -> pixel -> sky
    xb, yb = wcs.sky_to_pixel(ra, dec)
    assert np.abs(xb - x).max() < 1e-6 and np.abs(yb - y).max() < 1e-6
    ra_b, dec_b = wcs.pixel_to_sky(xb, yb)
    assert _sep_arcsec(ra, dec, ra_b, dec_b).max() < 1e-6 * 0.17


def test_piff_exposure_skywcs_reads(realdata_dir, ast):
    from visitcal.io.afw_wcs import read_sky_wcs

    archive, hdul = _archive(realdata_dir, "meas_extensions_piff/exp.fits")
    with hdul:
        wcs = read_sky_wcs(archive, archive.components()["SKYWCS"])
    ra, dec = wcs.pixel_to_sky(0.0, 0.0)
    assert np.isfinite(ra) and np.isfinite(dec)
    assert wcs.sky_to_pixel(ra, dec) == pytest.approx((0.0, 0.0), abs=1e-8)


def test_read_sky_wcs_wrong_class_is_a_clear_error(realdata_dir, ast):
    from visitcal.io.afw_wcs import read_sky_wcs

    archive, hdul = _archive(realdata_dir, "afw/exposure-version-2.fits")
    with hdul, pytest.raises(FitsReadError, match="PhotoCalib, not a SkyWcs"):
        read_sky_wcs(archive, 2)
    with hdul, pytest.raises(FitsReadError, match="no archive object 99"):
        read_sky_wcs(archive, 99)


def test_bad_skywcs_text_and_missing_pyast_are_clear_errors(ast, monkeypatch):
    from visitcal.io.afw_wcs import AstSkyWcs, import_ast

    with pytest.raises(FitsReadError, match="AST cannot read the SkyWcs text"):
        AstSkyWcs.from_string("1 SkyWcs 0  Begin FrameSet\n Nframe = 3\n")
    with pytest.raises(FitsReadError, match="holds UnitMap, not a FrameSet"):
        AstSkyWcs.from_string("1 SkyWcs 0 Begin UnitMap\n Nin = 2\n End UnitMap\n")
    with pytest.raises(FitsReadError, match="no 'Begin'"):
        AstSkyWcs.from_string("1 SkyWcs 0 nothing")
    monkeypatch.setitem(__import__("sys").modules, "starlink.Ast", None)
    with pytest.raises(ImportError, match="pip install starlink-pyast"):
        import_ast()


# ---- TanWcs ---------------------------------------------------------------------------------------------------

def test_hsc_tanwcs_matches_the_header_wcs(realdata_dir):
    """The archive's old TanWcs (parent frame) against the same file's FITS header TAN-SIP (array frame,
    shifted by xy0 = (100, 100) from CRVAL1A/LTV), and one point by hand from CRVAL/CRPIX/CD."""
    from visitcal.io.afw_wcs import read_tan_wcs

    archive, hdul = _archive(realdata_dir, "afw/HSC-0908120-056-small.fits")
    with hdul:
        wcs = read_tan_wcs(archive, int(hdul[0].header["WCS_ID"]))
        header = hdul[1].header
        xy0 = read_xy0(header, "IMAGE")
        header_wcs = wcs_from_header(header, xy0, "IMAGE")
    assert xy0 == (100, 100)
    assert wcs.wcs.ctype[0] == "RA---TAN-SIP" and wcs.sip.a_order == 3 and wcs.sip.ap_order == 4
    x, y = np.meshgrid(np.linspace(100, 299, 9), np.linspace(100, 299, 9))
    ra, dec = wcs.all_pix2world(x, y, 0)
    ra_h, dec_h = header_wcs.all_pix2world(x, y, 0)
    assert _sep_arcsec(ra, dec, ra_h, dec_h).max() < 1e-9
    np.testing.assert_allclose(wcs.sip.ap, header_wcs.sip.ap, rtol=0, atol=1e-20)
    # by hand: at CRPIX (0-based parent = header CRPIX - 1 + xy0) the SIP terms vanish: CRVAL
    cx, cy = header["CRPIX1"] - 1 + 100, header["CRPIX2"] - 1 + 100
    assert wcs.all_pix2world(cx, cy, 0) == pytest.approx([header["CRVAL1"], header["CRVAL2"]], abs=1e-12)
    # and one pixel along x moves by (CD1_1, CD2_1) (deg) up to the SIP's A_2_0/B_2_0 and the projection
    r1, d1 = wcs.all_pix2world(cx + 1, cy, 0)
    dra = (r1 - header["CRVAL1"]) * math.cos(math.radians(header["CRVAL2"]))
    assert dra == pytest.approx(header["CD1_1"] + header["CD1_2"] * header["B_2_0"] + header["CD1_1"]
                                * header["A_2_0"], abs=1e-11)
    assert d1 - header["CRVAL2"] == pytest.approx(header["CD2_1"] * (1 + header["A_2_0"])
                                                  + header["CD2_2"] * header["B_2_0"], abs=1e-11)


# ---- PiffPsf --------------------------------------------------------------------------------------------------

_GOLDEN = {"0_0": (0.0, 0.0), "10_100": (10.0, 100.0), "-200_30": (-200.0, 30.0), "nan": None}


@pytest.fixture(scope="module")
def piff_psf(realdata_dir):
    pytest.importorskip("piff", reason="reading an LSST PiffPsf needs piff (pip install piff)")
    from visitcal.psf.afw_piff import read_piff_psf

    path = realdata_dir / "lsst_afw" / "meas_extensions_piff" / "exp.fits"
    with fits.open(path) as hdul:
        archive = AfwArchive(hdul, path)
        return read_piff_psf(archive, archive.components()["PSF"], trust_pickle=True)


def test_read_piff_psf_refuses_an_untrusted_pickle(realdata_dir):
    from visitcal.psf.afw_piff import read_piff_psf

    archive, hdul = _archive(realdata_dir, "meas_extensions_piff/exp.fits")
    with hdul:
        with pytest.raises(PermissionError, match="pickle runs code.*trust_pickle=True only for files you trust"):
            read_piff_psf(archive, 1)
        with pytest.raises(FitsReadError, match="SkyWcs, not a PiffPsf"):
            read_piff_psf(archive, 2, trust_pickle=True)


def test_read_piff_psf_without_piff_says_what_to_install(realdata_dir, monkeypatch):
    from visitcal.psf.afw_piff import read_piff_psf

    monkeypatch.setitem(__import__("sys").modules, "piff", None)
    archive, hdul = _archive(realdata_dir, "meas_extensions_piff/exp.fits")
    with hdul, pytest.raises(ImportError, match="pip install piff"):
        read_piff_psf(archive, 1, trust_pickle=True)


@pytest.mark.parametrize("name", sorted(_GOLDEN))
def test_piff_psf_reproduces_lsst_compute_image(realdata_dir, piff_psf, name):
    """LSST's PiffPsf.computeImage outputs (25 x 25, the stamp origin in CRVAL1A/CRVAL2A; NaN = the average
    position) reproduced to 1e-6 of the peak (measured: < 4e-16)."""
    with fits.open(realdata_dir / "lsst_afw" / "meas_extensions_piff" / f"psfIm_{name}.fits") as hdul:
        golden = hdul[0].data.astype(np.float64)
        header = hdul[0].header
    x, y = _GOLDEN[name] or piff_psf.average_position
    image = piff_psf.compute_image(x, y)
    assert image.shape == golden.shape == (25, 25)
    assert np.abs(image - golden).max() < 1e-6 * golden.max()
    box = piff_psf.compute_image_bbox(x, y)
    origin = (header["CRVAL1A"] - header["CRPIX1A"] + 1, header["CRVAL2A"] - header["CRPIX2A"] + 1)
    assert (box.min_x, box.min_y) == origin
    assert image.sum() == pytest.approx(1.0, abs=1e-12)


def test_piff_psf_average_position_and_normalisation_are_what_lsst_used(realdata_dir, piff_psf):
    """The NaN image is at the mean star position, normalised to unit sum: a position 0.1 px off, or piff's
    own (un-normalised) draw, would miss the golden image by far more than 1e-6 of the peak."""
    with fits.open(realdata_dir / "lsst_afw" / "meas_extensions_piff" / "psfIm_nan.fits") as hdul:
        golden = hdul[0].data.astype(np.float64)
    ax, ay = piff_psf.average_position
    assert (ax, ay) == pytest.approx((46.6987, 107.4840), abs=1e-4)
    assert np.abs(piff_psf.compute_image(ax + 0.1, ay) - golden).max() > 1e-3 * golden.max()
    raw = piff_psf.piff_psf.draw(ax, ay, stamp_size=25).array
    assert abs(raw.sum() - 1) > 1e-5 and np.abs(raw - golden).max() > 1e-5 * golden.max()


def test_piff_psf_interface(piff_psf):
    from visitcal.psf.models import Psf

    assert isinstance(piff_psf, Psf)
    x, y = 10.3, 100.7
    image, kernel = piff_psf.compute_image(x, y), piff_psf.compute_kernel_image(x, y)
    assert image.sum() == pytest.approx(1.0, abs=1e-12) and kernel.sum() == pytest.approx(1.0, abs=1e-12)
    box = piff_psf.compute_image_bbox(x, y)
    assert (box.min_x, box.min_y, box.max_x, box.max_y) == (-2, 89, 22, 113)
    yy, xx = np.mgrid[:25, :25]
    # the light centroid follows the position (image) or sits on the middle pixel (kernel), up to the finite
    # stamp's different cut through the wings (measured 0.004 px)
    assert (image * xx).sum() + box.min_x - x == pytest.approx((kernel * xx).sum() - 12, abs=0.01)
    assert (image * yy).sum() + box.min_y - y == pytest.approx((kernel * yy).sum() - 12, abs=0.01)
    # at a pixel centre the two are the same image
    np.testing.assert_allclose(piff_psf.compute_kernel_image(10, 100), piff_psf.compute_image(10, 100),
                               rtol=0, atol=1e-15)
    shape = piff_psf.compute_shape(x, y)
    assert 1.5 < shape.determinant_radius < 2.0  # measured 1.65 px (0.33")
    assert 0.5 < piff_psf.compute_aperture_flux(3.0, x, y) < 0.9
    again = pickle.loads(pickle.dumps(piff_psf))
    np.testing.assert_array_equal(again.compute_image(x, y), image)
