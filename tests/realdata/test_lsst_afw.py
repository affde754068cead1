"""afw's own test fixtures (``realdata/lsst_afw/afw``, see the realdata README) read without the LSST stack.

Truths: the values the README lists for each fixture, and afw's definition of a ChebyshevBoundedField
(lsst-spec §2.3) evaluated here with numpy, independently of visitcal's C++ evaluation.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
from astropy.io import fits
from erfa import ErfaWarning

from visitcal.core.apcorr import ApCorrMap
from visitcal.core.chebyshev import ChebyshevBoundedField
from visitcal.core.photocalib import PhotoCalib
from visitcal.io import read_afw_components, read_afw_exposure_catalog, read_lsst_calexp
from visitcal.io.afw import COMPONENT_READERS, AfwDetector, AfwVisitInfo, FilterLabel, read_photo_calib, \
    read_visit_info
from visitcal.io.afw_archive import AfwArchive

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def afw_dir(realdata_dir):
    d = realdata_dir / "lsst_afw" / "afw"
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    return d


def afw_chebyshev(coefficients_flat, order_x, bbox_min, bbox_max, x, y):
    """afw's ChebyshevBoundedField, straight from its definition (lsst-spec §2.3): the flat coefficients are
    ``[order_y + 1, order_x + 1]`` row-major, ``x' = (2x - (xmin + xmax)) / W`` on the Box2D of the integer
    box (edges at +-0.5), and f = sum_ij a[j, i] T_i(x') T_j(y')."""
    a = np.asarray(coefficients_flat, dtype=float).reshape(-1, order_x + 1)
    xmin, xmax = bbox_min[0] - 0.5, bbox_max[0] + 0.5
    ymin, ymax = bbox_min[1] - 0.5, bbox_max[1] + 0.5
    xp = (2 * np.asarray(x) - (xmin + xmax)) / (xmax - xmin)
    yp = (2 * np.asarray(y) - (ymin + ymax)) / (ymax - ymin)
    total = np.zeros(np.shape(xp))
    for j in range(a.shape[0]):
        for i in range(a.shape[1]):
            total += a[j, i] * np.cos(i * np.arccos(np.clip(xp, -1, 1))) * np.cos(j * np.arccos(np.clip(yp, -1, 1)))
    return total


def test_exposure_version_2(afw_dir, caplog):
    path = afw_dir / "exposure-version-2.fits"
    with caplog.at_level(logging.WARNING, logger="visitcal.io.afw"):
        exp = read_lsst_calexp(path)
    # pixels: image = arange(100), variance 1, mask[5, 5] = 5 = bits 0 and 2 of the file (MP_BAD = 0,
    # MP_INTRP = 2), i.e. BAD | INTRP; not DETECTED (whose *bit number* happens to be 5)
    assert exp.shape == (10, 10) and exp.xy0 == (0, 0)
    np.testing.assert_array_equal(exp.image, np.arange(100, dtype=np.float32).reshape(10, 10))
    np.testing.assert_array_equal(exp.variance, 1.0)
    planes = [p for p in exp.mask.planes if exp.mask.test(p)[5, 5]]
    assert sorted(planes) == ["BAD", "INTRP"]
    others = exp.mask.array.copy()
    others[5, 5] = 0
    assert not others.any()
    # PhotoCalib: constant 1e6 nJy/count +- 2e4
    pc = exp.photo_calib
    assert isinstance(pc, PhotoCalib) and pc.is_constant
    assert pc.calibration_mean == 1e6 and pc.calibration_err == 2e4
    # VisitInfo from the header cards, filter from the archive's FilterLabel
    vi = exp.visit_info
    assert isinstance(vi, AfwVisitInfo)
    assert vi.id == 12345 and vi.exposure_time == 30.0 and vi.dark_time == 600.0
    assert vi.time.tai.isot == "2020-01-20T12:34:56.000"
    assert vi.date == "2020-01-20T12:34:19.000000"  # TAI - 37 s
    assert vi.boresight_ra_dec == (30.0, 40.0)
    # The file's cards: OBS-LONG = -12.345, OBS-LAT = 123.45 (the README lists them the other way round;
    # a latitude of 123.45 deg is not physical, but it is what afw wrote). observatory = (lon, lat, elev).
    assert vi.observatory == (-12.345, 123.45, 2000.0)
    assert (vi.band, vi.physical_filter) == ("N656", "ha")
    # Detector
    det = exp.detector
    assert isinstance(det, AfwDetector)
    assert (det.name, det.id, det.serial, det.physical_type) == ("detector 1", 1, "xkcd722", "CCD")
    assert (det.bbox.min_x, det.bbox.min_y, det.bbox.max_x, det.bbox.max_y) == (0, 0, 9, 9)
    assert det.pixel_size_mm == 0.02
    assert [a.name for a in det.amplifiers] == ["amp 1", "amp 2", "amp 3"]
    assert [a.gain for a in det.amplifiers] == [1712.34] * 3
    assert [a.read_noise for a in det.amplifiers] == [52.1237] * 3
    # The SkyWcs: read when a reader is registered, listed (logged) as unsupported otherwise; the header
    # WCS (CRVAL (30, 40), CRPIX 5 1-based = 4 0-based) is there either way
    if "SkyWcs" in COMPONENT_READERS:
        assert exp.wcs is not None
    else:
        assert "SkyWcs" in caplog.text
        ra, dec = exp.wcs.all_pix2world(4.0, 4.0, 0)
        assert (float(ra), float(dec)) == pytest.approx((30.0, 40.0), abs=1e-12)
    assert exp.ap_corr_map is None  # this file has none (its ExposureInfo has no ApCorrMap card)


def test_components_are_read_or_listed(afw_dir):
    path = afw_dir / "exposure-version-2.fits"
    with fits.open(path) as hdul:
        components, unsupported = read_afw_components(hdul, path)
        archive = AfwArchive(hdul, path)
        named = archive.components()
        assert named == {"SKYWCS": 1, "PHOTOCALIB": 2, "DETECTOR": 4, "FILTER": 9}
        classes = {comp: archive.name(i) for comp, i in named.items()}
    keys = {"SKYWCS": "wcs", "PHOTOCALIB": "photo_calib", "DETECTOR": "detector", "FILTER": "filter"}
    for comp, cls in classes.items():
        assert (keys[comp] in components) != (cls in unsupported), (comp, cls)
    assert set(unsupported) <= {"SkyWcs"}
    assert components["filter"] == FilterLabel(band="N656", physical="ha")


def test_photo_calib_version_1(afw_dir):
    # The README calls this PhotoCalib spatially varying, but the file says otherwise: its isConstant flag
    # is set and its field (id 2) is an order-0 ChebyshevBoundedField of value 123 on an empty box.
    path = afw_dir / "photoCalib-version1.fits"
    with fits.open(path) as hdul:
        archive = AfwArchive(hdul, path)
        assert archive.name(1) == "PhotoCalib" and archive.name(2) == "ChebyshevBoundedField"
        (field_rows,) = archive.catalogs(2)
        pc = read_photo_calib(archive, 1)
    assert pc.is_constant and pc.field is None
    assert pc.calibration_mean == 123.0 and pc.calibration_err == 45.0
    assert int(field_rows["order_x"][0]) == 0 and float(field_rows["coefficients"][0]) == 123.0
    assert pc.instflux_to_nanojansky(2.0) == 246.0


def test_visit_info_version_5(afw_dir):
    path = afw_dir / "visitInfo-version-5.fits"
    with fits.open(path) as hdul:
        vi = read_visit_info(AfwArchive(hdul, path), 1)
    assert vi.id == 987654 and vi.exposure_time == 10.01 and vi.dark_time == 11.02
    with warnings.catch_warnings():  # 2037 is past the leap-second table
        warnings.simplefilter("ignore", ErfaWarning)
        assert vi.time.tai.mjd == pytest.approx(65321.1, abs=1e-9)  # afw DateTime(65321.1, MJD, TAI)
    assert vi.boresight_ra_dec == pytest.approx((23.1, 73.2), abs=1e-12)
    assert vi.boresight_rot_angle == pytest.approx(73.2, abs=1e-12) and vi.rotation_type == "SKY"
    assert vi.airmass == 1.73
    assert vi.observatory == pytest.approx((11.1, 22.2, 0.333), abs=1e-12)
    assert vi.extra("ut1") == 12345.1 and vi.extra("era") == pytest.approx(45.1, abs=1e-12)
    assert vi.extra("boresight_az_alt") == pytest.approx((134.5, 33.3), abs=1e-12)
    assert vi.extra("weather") == (1.1, 2.2, 34.5)
    assert vi.extra("instrument") == "TestCameraOne" and vi.extra("focus_z") == 1.5
    assert (vi.extra("observation_type"), vi.extra("science_program"), vi.extra("observation_reason"),
            vi.extra("object")) == ("flat", "test program", "test reason", "test object")


def test_exposure_catalog_ap_corr_map(afw_dir):
    path = afw_dir / "version-1-ExposureCatalog.fits"
    table = read_afw_exposure_catalog(path)
    assert len(table) == 1 and table.meta["afw_unsupported"] == []
    assert table["wcs"][0] is None and table["psf"][0] is None  # archive id 0: absent
    apc = table["apCorrMap"][0]
    assert isinstance(apc, ApCorrMap) and list(apc) == ["a", "b", "c"]
    with fits.open(path) as hdul:
        archive = AfwArchive(hdul, path)
        stored = {}
        for row in archive.catalogs(1)[0]:
            (f,) = archive.catalogs(int(row["field"]))
            stored[str(row["name"]).strip()] = f[0]
    rng = np.random.default_rng(24)
    x, y = rng.uniform(-5.5, 5.5, 200), rng.uniform(-5.5, 5.5, 200)
    for name, field in apc.items():
        r = stored[name]
        assert isinstance(field, ChebyshevBoundedField) and (field.order_x, field.order_y) == (2, 2)
        truth = afw_chebyshev(r["coefficients"], int(r["order_x"]), r["bbox_min"], r["bbox_max"], x, y)
        np.testing.assert_allclose(field.evaluate(x, y), truth, rtol=0, atol=1e-12)
        assert not np.allclose(truth, truth[0])  # a field that varies, so the check has teeth


def test_read_lsst_calexp_passes_trust_pickle(afw_dir):
    seen = []

    def spy(archive, object_id, **options):
        seen.append(options)
        return "sky wcs"

    COMPONENT_READERS_backup = dict(COMPONENT_READERS)
    try:
        COMPONENT_READERS["SkyWcs"] = spy
        exp = read_lsst_calexp(afw_dir / "exposure-version-2.fits", trust_pickle=True)
    finally:
        COMPONENT_READERS.clear()
        COMPONENT_READERS.update(COMPONENT_READERS_backup)
    assert seen == [{"trust_pickle": True}] and exp.wcs == "sky wcs"


def test_afw_definition_of_the_transform_matches_ours():
    # the same check on a hand-made non-square field with an offset box, over and beyond the box
    from visitcal.core.geom import Box2I

    rng = np.random.default_rng(5)
    coeffs = rng.normal(size=(3, 4))
    field = ChebyshevBoundedField(Box2I(10, -3, 40, 17), coeffs)
    x, y = rng.uniform(9.5, 40.5, 100), rng.uniform(-3.5, 17.5, 100)
    np.testing.assert_allclose(field.evaluate(x, y), afw_chebyshev(coeffs.ravel(), 3, (10, -3), (40, 17), x, y),
                               rtol=0, atol=1e-12)
    assert math.isclose(float(field.evaluate(9.5, -3.5)),
                        float(np.sum(coeffs * np.outer([1, -1, 1], [1, -1, 1, -1]))), abs_tol=1e-12)


@pytest.mark.parametrize("name, expect", [("afw/HSC-0908120-056-small.fits", {"wcs": "TanWcs"}),
                                          ("meas_extensions_piff/exp.fits", {"psf": "PiffPsf", "wcs": "SkyWcs"})])
def test_other_exposures_components_read_or_listed(realdata_dir, name, expect):
    # the HSC cut-out names its TanWcs with the older WCS_ID card only; the Piff exposure has a PiffPsf
    path = realdata_dir / "lsst_afw" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with fits.open(path) as hdul:
        components, unsupported = read_afw_components(hdul, path)
    for key, cls in expect.items():
        assert (key in components) != (cls in unsupported), (key, cls)
    assert set(unsupported) <= set(expect.values())
    exp = read_lsst_calexp(path)
    assert exp.wcs is not None  # the archive's when its reader is registered, else the header's
    if name.startswith("afw/HSC"):
        assert exp.shape == (200, 200) and exp.xy0 == (100, 100)
    else:
        assert exp.shape == (301, 110)


def test_archive_pointers_not_in_metadata(afw_dir):
    md = read_lsst_calexp(afw_dir / "exposure-version-2.fits").metadata
    assert not [k for k in md if k.startswith("ARCHIVE_ID_") or k.endswith("_ID") or k == "AR_HDU"]
    assert (md["DETSER"], md["DARKTIME"], md["ROTTYPE"]) == ("xkcd722", 600.0, "UNKNOWN")
