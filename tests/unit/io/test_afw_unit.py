"""The afw component readers on tiny afw-like files written here with astropy (no real data needed).

Each file follows afw's layout: IMAGE / MASK / VARIANCE HDUs marked by ``EXTTYPE`` (no ``EXTNAME``), an
``ARCHIVE_INDEX`` table and one ``ARCHIVE_DATA`` table per class, ``ARCHIVE_ID_<NAME>`` cards in the primary.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits

from visitcal.core.geom import Box2I
from visitcal.io import FitsReadError, read_afw_components, read_lsst_calexp
from visitcal.io.afw import COMPONENT_READERS, FilterLabel, read_chebyshev_bounded_field, read_photo_calib
from visitcal.io.afw_archive import AfwArchive, afw_string
from visitcal.io.lsst import find_afw_hdu

COEFFS = np.array([[2.0, 0.5, 0.1], [0.3, -0.2, 0.0]])  # (order_y + 1, order_x + 1) = (2, 3)


def _data_table(name, columns, flags=None):
    cols = list(columns)
    if flags is not None:
        names, values = zip(*flags)
        cols.insert(0, fits.Column(name="flags", format=f"{len(names)}X", array=np.array([values], dtype=bool)))
    hdu = fits.BinTableHDU.from_columns(cols)
    if flags is not None:
        for k, n in enumerate(names, start=1):
            hdu.header[f"TFLAG{k}"] = n
    hdu.header["EXTTYPE"] = "ARCHIVE_DATA"
    hdu.header["AR_NAME"] = name
    return hdu


def write_afw_file(path, *, index_rows=None, with_index=True, extname=False, primary_cards=None,
                   photo_calib_columns=None, psf_name="DoubleGaussianPsf", psf_columns=None):
    """A 6x8 afw-like exposure with a varying PhotoCalib (ids 1, 2), a FilterLabel (3) and a PSF (4): by default
    a class visitcal has no reader for (meas_algorithms' DoubleGaussianPsf), else ``psf_name`` with
    ``psf_columns``."""
    primary = fits.PrimaryHDU()
    cards = {"ARCHIVE_ID_PHOTOCALIB": 1, "ARCHIVE_ID_FILTER": 3, "ARCHIVE_ID_PSF": 4, "EXPTIME": 15.0}
    cards.update(primary_cards or {})
    for k, v in cards.items():
        primary.header["HIERARCH " + k if len(k) > 8 else k] = v
    planes = []
    for kind, data in (("IMAGE", np.arange(48, dtype=">f4").reshape(6, 8)), ("MASK", np.zeros((6, 8), ">i4")),
                       ("VARIANCE", np.full((6, 8), 2.0, ">f4"))):
        hdu = fits.ImageHDU(data, name=kind if extname else None)
        if not extname:
            hdu.header["EXTTYPE"] = kind
        if kind == "MASK":
            hdu.header["MP_BAD"] = 0
        planes.append(hdu)
    pc_cols = photo_calib_columns or [
        fits.Column(name="calibrationMean", format="D", array=[7.5]),
        fits.Column(name="calibrationErr", format="D", array=[0.25]),
        fits.Column(name="field", format="J", array=[2]),
        fits.Column(name="version", format="J", array=[1]),
    ]
    data = [
        _data_table("PhotoCalib", pc_cols, flags=[("isConstant", False)]),
        _data_table("ChebyshevBoundedField", [
            fits.Column(name="order_x", format="J", array=[2]),
            fits.Column(name="bbox_min", format="2J", array=[[0, 0]]),
            fits.Column(name="bbox_max", format="2J", array=[[7, 5]]),
            fits.Column(name="coefficients", format="6D", array=[COEFFS.ravel()]),
        ]),
        _data_table("FilterLabel", [fits.Column(name="band", format="8A", array=["r"]),
                                    fits.Column(name="physical", format="8A", array=["r_03"])],
                    flags=[("band_exists", True), ("physical_exists", True)]),
        _data_table(psf_name, psf_columns or [fits.Column(name="sigma", format="D", array=[1.5])]),
    ]
    rows = index_rows or [(1, 1, 0, 0, 1, "PhotoCalib"), (2, 2, 0, 0, 1, "ChebyshevBoundedField"),
                          (3, 3, 0, 0, 1, "FilterLabel"), (4, 4, 0, 0, 1, psf_name)]
    ids, cat, part, row0, nrows, names = zip(*rows)
    index = fits.BinTableHDU.from_columns([
        fits.Column(name="id", format="J", array=ids), fits.Column(name="cat.archive", format="J", array=cat),
        fits.Column(name="cat.persistable", format="J", array=part), fits.Column(name="row0", format="J", array=row0),
        fits.Column(name="nrows", format="J", array=nrows), fits.Column(name="name", format="64A", array=names),
        fits.Column(name="module", format="64A", array=["lsst.afw.image"] * len(ids))])
    index.header["EXTTYPE"] = "ARCHIVE_INDEX"
    hdus = [primary, *planes] + ([index] if with_index else []) + data
    fits.HDUList(hdus).writeto(path)
    return path


def test_components_read_and_unknown_class_listed(tmp_path, caplog):
    path = write_afw_file(tmp_path / "exp.fits")
    with fits.open(path) as hdul, caplog.at_level(logging.WARNING, logger="visitcal.io.afw"):
        comps, unsupported = read_afw_components(hdul, path)
    assert unsupported == ["DoubleGaussianPsf"] and "DoubleGaussianPsf" in caplog.text and "exp.fits" in caplog.text
    assert set(comps) == {"photo_calib", "filter"}
    assert comps["filter"] == FilterLabel("r", "r_03")
    pc = comps["photo_calib"]
    assert not pc.is_constant and pc.calibration_mean == 7.5 and pc.calibration_err == 0.25
    assert pc.field.bbox == Box2I(0, 0, 7, 5)
    # afw's definition by hand at the box's centre (x' = y' = 0: T0 = 1, T1 = 0, T2 = -1) and corner (-1, -1)
    assert float(pc.local_calibration(3.5, 2.5)) == pytest.approx(2.0 - 0.1, abs=1e-12)
    corner = sum(COEFFS[j, i] * (-1) ** (i + j) for j in range(2) for i in range(3))
    assert float(pc.local_calibration(-0.5, -0.5)) == pytest.approx(corner, abs=1e-12)


def test_calexp_found_by_exttype_and_by_position(tmp_path):
    exp = read_lsst_calexp(write_afw_file(tmp_path / "exp.fits"))
    np.testing.assert_array_equal(exp.image, np.arange(48, dtype=np.float32).reshape(6, 8))
    np.testing.assert_array_equal(exp.variance, 2.0)
    assert exp.photo_calib.calibration_mean == 7.5 and exp.psf is None
    assert (exp.visit_info.band, exp.visit_info.physical_filter, exp.visit_info.exposure_time) == ("r", "r_03", 15.0)
    # no EXTTYPE and no EXTNAME: HDUs 1, 2, 3
    with fits.open(tmp_path / "exp.fits") as hdul:
        for k in (1, 2, 3):
            del hdul[k].header["EXTTYPE"]
        assert [find_afw_hdu(hdul, n, "x") is hdul[k] for k, n in ((1, "IMAGE"), (2, "MASK"), (3, "VARIANCE"))] \
            == [True] * 3
        hdul.writeto(tmp_path / "bare.fits")
    assert read_lsst_calexp(tmp_path / "bare.fits").image[5, 7] == 47.0


def test_missing_archive_index(tmp_path):
    path = write_afw_file(tmp_path / "noindex.fits", with_index=False)
    with fits.open(path) as hdul, pytest.raises(FitsReadError, match=r"noindex.fits: no afw archive"):
        read_afw_components(hdul, path)
    with pytest.raises(FitsReadError, match=r"noindex.fits: no afw archive"):
        read_lsst_calexp(path)


def test_index_pointing_outside(tmp_path):
    rows = [(1, 1, 0, 0, 1, "PhotoCalib"), (2, 9, 0, 0, 1, "ChebyshevBoundedField"), (3, 3, 0, 0, 1, "FilterLabel"),
            (4, 4, 0, 0, 1, "DoubleGaussianPsf")]
    path = write_afw_file(tmp_path / "outside.fits", index_rows=rows)
    with pytest.raises(FitsReadError, match=r"outside.fits: archive object 2 \(ChebyshevBoundedField\) points at "
                                            r"data table 9"):
        read_lsst_calexp(path)
    rows[1] = (2, 2, 0, 3, 2, "ChebyshevBoundedField")  # rows 3..4 of a one-row table
    path = write_afw_file(tmp_path / "rows.fits", index_rows=rows)
    with pytest.raises(FitsReadError, match=r"rows.fits: archive object 2 \(ChebyshevBoundedField\): rows 3..4"):
        read_lsst_calexp(path)


def test_component_id_not_in_index(tmp_path):
    path = write_afw_file(tmp_path / "dangling.fits", primary_cards={"ARCHIVE_ID_DETECTOR": 17})
    with pytest.raises(FitsReadError, match=r"dangling.fits: archive id 17 is not in the ARCHIVE_INDEX"):
        read_lsst_calexp(path)


def test_malformed_object_names_file_and_object(tmp_path):
    cols = [fits.Column(name="calibrationErr", format="D", array=[0.25]),
            fits.Column(name="field", format="J", array=[2])]
    path = write_afw_file(tmp_path / "bad.fits", photo_calib_columns=cols)
    with pytest.raises(FitsReadError, match=r"bad.fits: archive object 1 \(PhotoCalib\): no column 'calibrationMean'"):
        read_lsst_calexp(path)
    with fits.open(path) as hdul:
        archive = AfwArchive(hdul, path)
        with pytest.raises(FitsReadError, match=r"archive object 3 \(FilterLabel\): expected a ChebyshevBoundedField"):
            read_chebyshev_bounded_field(archive, 3)
        with pytest.raises(FitsReadError, match=r"no archive object 99"):
            read_photo_calib(archive, 99)


def test_custom_registry_and_options(tmp_path):
    path = write_afw_file(tmp_path / "exp.fits")
    seen = []

    def gaussian(archive, object_id, **options):
        seen.append(options)
        return float(archive.catalogs(object_id)[0]["sigma"][0])

    with fits.open(path) as hdul:
        comps, unsupported = read_afw_components(hdul, path, readers={**COMPONENT_READERS,
                                                                               "DoubleGaussianPsf": gaussian},
                                                 trust_pickle=True)
    assert unsupported == [] and comps["psf"] == 1.5 and seen == [{"trust_pickle": True}]


def test_afw_string():
    # a variable-length char column comes back as single characters with blanks stripped to ""
    assert afw_string(np.char.array(["d", "e", "t", "", "1"])) == "det 1"
    assert afw_string(np.frombuffer(b"abc\x00", dtype=np.uint8)) == "abc"
    assert afw_string("r_03  ") == "r_03" and afw_string(b"ha") == "ha"


def test_legacy_id_cards():
    from visitcal.io.afw import afw_component_ids

    header = fits.Header()
    for key, value in (("WCS_ID", 3), ("PSF_ID", 0), ("HIERARCH ARCHIVE_ID_PHOTOCALIB", 2), ("EXPID", 7)):
        header[key] = value
    assert afw_component_ids(header) == {"PHOTOCALIB": 2, "SKYWCS": 3}
    header["HIERARCH ARCHIVE_ID_SKYWCS"] = 5  # the ARCHIVE_ID_ card wins
    assert afw_component_ids(header)["SKYWCS"] == 5


def test_exposure_catalog_rows_objects_and_unsupported(tmp_path, caplog):
    from visitcal.io import read_afw_exposure_catalog

    src = write_afw_file(tmp_path / "exp.fits")
    with fits.open(src) as hdul:
        archive_hdus = [h.copy() for h in hdul[4:]]
    main = fits.BinTableHDU.from_columns([
        fits.Column(name="id", format="K", array=[10, 11]),
        fits.Column(name="psf", format="J", array=[4, 0]),
        fits.Column(name="photoCalib", format="J", array=[1, 1])])
    main.header["TDOC2"] = "archive ID for Psf object"
    main.header["TDOC3"] = "archive ID for PhotoCalib object"
    fits.HDUList([fits.PrimaryHDU(), main, *archive_hdus]).writeto(tmp_path / "cat.fits")
    with caplog.at_level(logging.WARNING, logger="visitcal.io.afw"):
        table = read_afw_exposure_catalog(tmp_path / "cat.fits")
    assert list(table["id"]) == [10, 11] and table.meta["afw_unsupported"] == ["DoubleGaussianPsf"]
    assert "DoubleGaussianPsf" in caplog.text
    assert table["psf"][0] is None and table["psf"][1] is None
    assert [pc.calibration_mean for pc in table["photoCalib"]] == [7.5, 7.5]


def _gaussian_psf_columns(width, height, sigma):
    return [fits.Column(name="width", format="J", array=[width]),
            fits.Column(name="height", format="J", array=[height]), fits.Column(name="sigma", format="D", array=[sigma])]


def test_gaussian_psf_read_and_attached(tmp_path):
    """afw's GaussianPsf (one row: width, height, sigma in px) is read as our GaussianPsf once visitcal.psf is
    imported, and read_lsst_calexp attaches it: its kernel image is width x width, sums to 1, and its second
    moments about the centre are sigma^2 (sampled at pixel centres: exact to ~1e-9 for sigma 1.7 on 21 px)."""
    from visitcal.psf import GaussianPsf  # registers the reader

    assert COMPONENT_READERS["GaussianPsf"].__module__ == "visitcal.psf.afw_gaussian"
    sigma = 1.7
    path = write_afw_file(tmp_path / "g.fits", psf_name="GaussianPsf", psf_columns=_gaussian_psf_columns(21, 21, sigma))
    with fits.open(path) as hdul:
        comps, unsupported = read_afw_components(hdul, path)
    assert unsupported == [] and isinstance(comps["psf"], GaussianPsf)
    exp = read_lsst_calexp(path)
    psf = exp.psf
    assert isinstance(psf, GaussianPsf) and psf.sigma == sigma and psf.size == 21
    assert psf.average_position == (0.0, 0.0)
    kernel = psf.compute_kernel_image(3.0, 2.0)
    assert kernel.shape == (21, 21)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    y, x = np.mgrid[-10:11, -10:11]
    assert (kernel * x).sum() == pytest.approx(0.0, abs=1e-12) and (kernel * y).sum() == pytest.approx(0.0, abs=1e-12)
    for moment in ((kernel * x * x).sum(), (kernel * y * y).sum()):
        assert moment == pytest.approx(sigma**2, abs=1e-6)
    assert (kernel * x * y).sum() == pytest.approx(0.0, abs=1e-12)
    # the Gaussian itself at the pixel centres, normalised over the stamp (afw's definition)
    g = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    np.testing.assert_allclose(kernel, g / g.sum(), rtol=1e-12, atol=1e-15)


def test_gaussian_psf_non_square_and_bad_rows(tmp_path):
    """A width != height GaussianPsf is read on the larger square stamp; even dimensions, a bad sigma or a missing
    field are read errors naming the object."""
    import visitcal.psf  # noqa: F401 - registers the reader

    path = write_afw_file(tmp_path / "rect.fits", psf_name="GaussianPsf",
                          psf_columns=_gaussian_psf_columns(15, 19, 2.0))
    psf = read_lsst_calexp(path).psf
    assert psf.size == 19 and psf.compute_kernel_image(0.0, 0.0).shape == (19, 19)
    for name, columns, match in (
            ("even", _gaussian_psf_columns(20, 21, 1.5), r"dimensions 20 x 21 are not odd"),
            ("sigma", _gaussian_psf_columns(21, 21, 0.0), r"sigma 0.0 is not positive"),
            ("nosigma", _gaussian_psf_columns(21, 21, 1.5)[:2], r"expected one row with width, height and sigma")):
        path = write_afw_file(tmp_path / f"{name}.fits", psf_name="GaussianPsf", psf_columns=columns)
        with pytest.raises(FitsReadError, match=rf"{name}.fits: archive object 4 \(GaussianPsf\): {match}"):
            read_lsst_calexp(path)
