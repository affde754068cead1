"""The afw SourceCatalog reader on hand-built files (astropy-written, afw's layout): the bit order of the
packed flags, missing TFLAG cards, bad aliases, footprints (plain, old-style, heavy) and unknown classes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits

from visitcal.core.footprint import HeavyFootprint
from visitcal.io import FitsReadError
from visitcal.io.afw_catalog import afw_column, read_afw_source_catalog
from visitcal.measurement.source_selector import resolve_column

FLAG_NAMES = [f"alg{k}_flag" for k in range(1, 11)]  # 10 bits: two bytes, the second partly used


def _catalog_hdu(bits, *, footprint=None, names=FLAG_NAMES, aliases=("slot_Centroid:alg_Centroid",
                                                                        "alg3_flag_badCentroid:alg1_flag")):
    n = len(bits)
    cols = [fits.Column("flags", f"{len(names)}X", array=np.asarray(bits, dtype=bool)),
            fits.Column("id", "K", array=np.arange(1, n + 1, dtype=np.int64)),
            fits.Column("coord_ra", "D", unit="rad", array=np.linspace(0.1, 0.2, n)),
            fits.Column("alg_Centroid_x", "D", unit="pixel", array=np.arange(n) + 0.5)]
    if footprint is not None:
        cols.append(fits.Column("footprint", "J", array=np.asarray(footprint, dtype=np.int32)))
    hdu = fits.BinTableHDU.from_columns(cols)
    hdu.header["FLAGCOL"] = 1
    for k, name in enumerate(names, start=1):
        if name is not None:
            hdu.header[f"TFLAG{k}"] = name
            hdu.header[f"TFDOC{k}"] = f"doc of {name}"
    for alias in aliases:
        hdu.header.append(("ALIAS", alias))
    hdu.header["AFW_TYPE"] = "SOURCE"
    return hdu


def _write(tmp_path, hdus, name="cat.fits"):
    path = tmp_path / name
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(path)
    return path


def test_flag_bit_order_is_fits_order(tmp_path):
    bits = np.zeros((3, 10), dtype=bool)
    bits[0, 0] = True    # TFLAG1: the most significant bit of the first byte
    bits[1, 9] = True    # TFLAG10: the second bit of the second byte
    bits[2, [1, 7, 8]] = True
    path = _write(tmp_path, [_catalog_hdu(bits)])
    with fits.open(path) as hdul:  # the bytes on disk, independently of how astropy unpacks them
        raw = np.frombuffer(hdul[1].data.tobytes(), dtype=np.uint8).reshape(3, -1)[:, :2]
    assert raw.tolist() == [[0x80, 0x00], [0x00, 0x40], [0x41, 0x80]]
    table, footprints = read_afw_source_catalog(path)
    assert footprints == {}
    assert "flags" not in table.colnames
    assert table.colnames[:3] == ["id", "coord_ra", "alg_Centroid_x"]
    assert table.colnames[3:] == FLAG_NAMES
    for k, name in enumerate(FLAG_NAMES):
        assert table[name].dtype == bool
        np.testing.assert_array_equal(table[name], bits[:, k], err_msg=name)
    assert table["alg2_flag"].description == "doc of alg2_flag"
    assert table["coord_ra"].unit == "rad"
    assert table["id"].dtype == np.int64 and table["id"].dtype.byteorder in "=|"


def test_empty_catalog(tmp_path):
    path = _write(tmp_path, [_catalog_hdu(np.zeros((0, 10), bool))])
    table, footprints = read_afw_source_catalog(path)
    assert len(table) == 0 and footprints == {}
    assert table.colnames[3:] == FLAG_NAMES and table["alg1_flag"].dtype == bool


def test_aliases_become_slots_and_aliases(tmp_path):
    path = _write(tmp_path, [_catalog_hdu(np.zeros((2, 10), bool))])
    table, _ = read_afw_source_catalog(path)
    assert table.meta["slots"] == {"Centroid": "alg_Centroid"}
    assert table.meta["aliases"] == {"alg3_flag_badCentroid": "alg1_flag"}
    assert resolve_column(table, "slot_Centroid_x") == "alg_Centroid_x"
    assert afw_column(table, "alg3_flag_badCentroid") == "alg1_flag"
    assert afw_column(table, "slot_Centroid_x") == "alg_Centroid_x"


def test_missing_tflag_card_is_an_error(tmp_path):
    names = list(FLAG_NAMES)
    names[4] = None
    path = _write(tmp_path, [_catalog_hdu(np.zeros((2, 10), bool), names=names)])
    with pytest.raises(FitsReadError, match=r"cat\.fits\[1\].*without a name: no card TFLAG5") as info:
        read_afw_source_catalog(path)
    assert info.value.hdu == 1 and info.value.path == str(path)


def test_tflag_beyond_the_bits_is_an_error(tmp_path):
    hdu = _catalog_hdu(np.zeros((2, 10), bool))
    hdu.header["TFLAG11"] = "extra_flag"
    path = _write(tmp_path, [hdu])
    with pytest.raises(FitsReadError, match="TFLAG11.*beyond the 10 bits"):
        read_afw_source_catalog(path)


@pytest.mark.parametrize("alias", ["slot_Centroid", "slot_Centroid:", ":base_SdssCentroid", "a:b:c"])
def test_bad_alias_is_an_error(tmp_path, alias):
    path = _write(tmp_path, [_catalog_hdu(np.zeros((1, 10), bool), aliases=(alias,))])
    with pytest.raises(FitsReadError, match="malformed ALIAS card"):
        read_afw_source_catalog(path)


def test_dangling_alias_is_kept_and_fails_on_use(tmp_path):
    path = _write(tmp_path, [_catalog_hdu(np.zeros((1, 10), bool), aliases=("slot_Shape:nothing_here",))])
    table, _ = read_afw_source_catalog(path)
    assert table.meta["slots"] == {"Shape": "nothing_here"}
    with pytest.raises(KeyError, match="slot_Shape_xx"):
        resolve_column(table, "slot_Shape_xx")
    with pytest.raises(KeyError, match="slot_Shape_xx"):
        afw_column(table, "slot_Shape_xx")


# --- footprints ----------------------------------------------------------------------------------------

def _table(name, columns):
    hdu = fits.BinTableHDU.from_columns(columns)
    hdu.header["EXTTYPE"] = "ARCHIVE_DATA"
    hdu.header["AR_NAME"] = name
    return hdu


def _archive(entries, data_hdus):
    """entries: (id, cat.archive, cat.persistable, row0, nrows, name)."""
    e = list(zip(*entries))
    index = fits.BinTableHDU.from_columns([
        fits.Column("id", "J", array=np.array(e[0])), fits.Column("cat.archive", "J", array=np.array(e[1])),
        fits.Column("cat.persistable", "J", array=np.array(e[2])), fits.Column("row0", "J", array=np.array(e[3])),
        fits.Column("nrows", "J", array=np.array(e[4])), fits.Column("name", "64A", array=np.array(e[5])),
        fits.Column("module", "64A", array=np.array(["lsst.afw.detection"] * len(entries)))])
    index.header["EXTTYPE"] = "ARCHIVE_INDEX"
    return [index, *data_hdus]


def _footprint_file(tmp_path, *, footprint=(1, 4, 0), extra=()):
    """Three records: a HeavyFootprintF (id 1, spans in SpanSet 2, written out of order), a pre-SpanSet
    Footprint with its spans inline (id 4), and none; plus ``extra`` archive entries."""
    ids = _table("Footprint", [fits.Column("id", "J", array=np.array([2], np.int32))])                 # 1
    spans = _table("SpanSet", [fits.Column(c, "J", array=np.array(v, np.int32)) for c, v in
                               (("y", [5, 4]), ("x0", [3, 1]), ("x1", [4, 2]))])                       # 2
    peaks = _table("Footprint", [fits.Column("id", "K", array=np.array([7, 8])),
                                 fits.Column("f_x", "E", array=np.array([3.2, 1.0])),
                                 fits.Column("f_y", "E", array=np.array([5.1, 4.0])),
                                 fits.Column("i_x", "J", array=np.array([3, 1])),
                                 fits.Column("i_y", "J", array=np.array([5, 4])),
                                 fits.Column("peakValue", "E", array=np.array([9.5, 2.5]))])           # 3
    pixels = _table("HeavyFootprintF", [fits.Column("image", "4E", array=np.array([[10, 11, 20, 21]], np.float32)),
                                        fits.Column("mask", "4J", array=np.array([[1, 0, 4, 0]], np.int32)),
                                        fits.Column("variance", "4E", array=np.array([[1, 2, 3, 4]], np.float32))])  # 4
    old_spans = _table("Footprint", [fits.Column(c, "J", array=np.array(v, np.int32)) for c, v in
                                     (("y", [0, 1]), ("x0", [0, 0]), ("x1", [2, 0]))])                 # 5
    entries = [(1, 1, 0, 0, 1, "HeavyFootprintF"), (1, 3, 1, 0, 2, "HeavyFootprintF"),
               (1, 4, 2, 0, 1, "HeavyFootprintF"), (2, 2, 0, 0, 2, "SpanSet"),
               (4, 5, 0, 0, 2, "Footprint"), (4, 3, 1, 1, 1, "Footprint"), *extra]
    data = [ids, spans, peaks, pixels, old_spans]
    if extra:
        data.append(_table("DoubleGaussianPsf", [fits.Column("sigma", "D", array=np.array([1.5]))]))
    cat = _catalog_hdu(np.zeros((3, 10), bool), footprint=footprint)
    return _write(tmp_path, [cat, *_archive(entries, data)], "fp.fits")


def test_heavy_and_plain_footprints(tmp_path):
    table, footprints = read_afw_source_catalog(_footprint_file(tmp_path))
    assert sorted(footprints) == [1, 2]  # record 3 has footprint 0: none
    heavy = footprints[1]
    assert isinstance(heavy, HeavyFootprint)
    np.testing.assert_array_equal(heavy.spans, [[4, 1, 2], [5, 3, 4]])
    assert heavy.area == 4
    # afw wrote the values in its span order (y = 5 first); ours follow the normalized spans
    np.testing.assert_array_equal(heavy.image, [20, 21, 10, 11])
    np.testing.assert_array_equal(heavy.mask, [4, 0, 1, 0])
    np.testing.assert_array_equal(heavy.variance, [3, 4, 1, 2])
    assert heavy.peaks["id"].tolist() == [7, 8]
    np.testing.assert_allclose(heavy.peaks["peak_value"], [9.5, 2.5])
    assert np.all(np.isnan(heavy.peaks["significance"]))
    assert all(heavy.contains(int(p["i_x"]), int(p["i_y"])) for p in heavy.peaks)
    plain = footprints[2]
    assert type(plain).__name__ == "Footprint"
    np.testing.assert_array_equal(plain.spans, [[0, 0, 2], [1, 0, 0]])
    assert plain.area == 4 and plain.peaks["id"].tolist() == [8]
    assert table.meta["afw_unread_classes"] == []


def test_unknown_archive_class_listed_and_logged(tmp_path, caplog):
    path = _footprint_file(tmp_path, extra=[(9, 6, 0, 0, 1, "DoubleGaussianPsf")])
    with caplog.at_level(logging.WARNING, logger="visitcal.io.afw_catalog"):
        table, footprints = read_afw_source_catalog(path)
    assert table.meta["afw_unread_classes"] == ["DoubleGaussianPsf"]
    assert any("DoubleGaussianPsf" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert sorted(footprints) == [1, 2]


def test_record_footprint_of_unknown_class_is_listed(tmp_path, caplog):
    path = _footprint_file(tmp_path, footprint=(1, 9, 0), extra=[(9, 6, 0, 0, 1, "DoubleGaussianPsf")])
    with caplog.at_level(logging.WARNING, logger="visitcal.io.afw_catalog"):
        table, footprints = read_afw_source_catalog(path)
    assert sorted(footprints) == [1]
    assert table.meta["afw_unread_classes"] == ["DoubleGaussianPsf"]


def test_footprint_id_missing_from_archive(tmp_path):
    path = _footprint_file(tmp_path, footprint=(1, 4, 77))
    with pytest.raises(FitsReadError, match=r"record 2 \(id 3\).*'footprint' = 77"):
        read_afw_source_catalog(path)


def test_not_a_catalog(tmp_path):
    path = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2)))]).writeto(path)
    with pytest.raises(FitsReadError, match="HDU 1 is not an afw catalog"):
        read_afw_source_catalog(path)


# --- the DPDD-style export -----------------------------------------------------------------------------

def _visitcal_like_source():
    from astropy.table import Table
    t = Table()
    t["id"] = np.array([11, 12, 13], dtype=np.int64)
    t["parent"] = np.array([0, 0, 11], dtype=np.int64)
    t["coord_ra"] = np.array([0.0, np.pi / 2, np.pi])
    t["coord_dec"] = np.array([-np.pi / 4, 0.0, np.pi / 6])
    t["base_SdssCentroid_x"] = [1.5, 2.5, 3.5]
    t["base_SdssCentroid_y"] = [4.0, 5.0, 6.0]
    t["base_SdssCentroid_xErr"] = [0.1, 0.2, 0.3]
    t["base_SdssCentroid_yErr"] = [0.1, 0.2, 0.3]
    t["base_PsfFlux_instFlux"] = [100.0, 200.0, np.nan]
    t["base_PsfFlux_instFluxErr"] = [10.0, 20.0, np.nan]
    t["base_CircularApertureFlux_12_0_instFlux"] = [110.0, 210.0, 310.0]
    t["base_CircularApertureFlux_12_0_instFluxErr"] = [11.0, 21.0, 31.0]
    t["base_CircularApertureFlux_12_0_flag"] = [False, False, True]
    t["base_LocalPhotoCalib"] = [2.0, 3.0, 4.0]
    t["base_SdssShape_xx"] = [4.0, 5.0, 6.0]
    t["base_SdssShape_yy"] = [4.5, 5.5, 6.5]
    t["base_SdssShape_xy"] = [0.1, 0.2, 0.3]
    t["base_PixelFlags_flag_edge"] = [True, False, False]
    t["base_PsfFlux_flag"] = [False, False, True]
    t["base_SdssCentroid_flag"] = [False, True, False]
    t["base_ClassificationExtendedness_value"] = [0.0, 1.0, np.nan]
    t["base_ClassificationExtendedness_flag"] = [False, False, True]
    t["calib_psf_used"] = [True, False, False]
    t.meta["slots"] = {"Centroid": "base_SdssCentroid", "PsfFlux": "base_PsfFlux",
                       "CalibFlux": "base_CircularApertureFlux_12_0", "Shape": "base_SdssShape"}
    return t


def test_to_source_table_names_and_values():
    from visitcal.io.afw_catalog import to_source_table
    s = to_source_table(_visitcal_like_source())
    assert s["sourceId"].tolist() == [11, 12, 13] and s["parentSourceId"].tolist() == [0, 0, 11]
    np.testing.assert_allclose(s["ra"], [0.0, 90.0, 180.0])
    np.testing.assert_allclose(s["dec"], [-45.0, 0.0, 30.0])
    np.testing.assert_allclose(s["coord_ra"], s["ra"])
    assert str(s["ra"].unit) == "deg"
    np.testing.assert_array_equal(s["x"], [1.5, 2.5, 3.5])
    assert s["xErr"].dtype == np.float32
    np.testing.assert_allclose(s["psfFlux"], [200.0, 600.0, np.nan])       # instFlux * localPhotoCalib
    np.testing.assert_allclose(s["psfFluxErr"], [20.0, 60.0, np.nan])
    assert s["psfFlux"].dtype == np.float32 and str(s["psfFlux"].unit) == "nJy"
    np.testing.assert_allclose(s["calibFlux"], [220.0, 630.0, 1240.0])
    np.testing.assert_allclose(s["ap12Flux"], s["calibFlux"])
    assert s["ap12Flux_flag"].tolist() == [False, False, True]
    np.testing.assert_allclose(s["ixx"], [4.0, 5.0, 6.0])
    assert s["pixelFlags_edge"].tolist() == [True, False, False]
    assert s["psfFlux_flag"].tolist() == [False, False, True]
    assert s["centroid_flag"].tolist() == [False, True, False]
    assert s["extendedness_flag"].tolist() == [False, False, True]
    assert s["calib_psf_used"].tolist() == [True, False, False]
    np.testing.assert_array_equal(s["extendedness"], np.array([0.0, 1.0, np.nan], np.float32))
    assert "localPhotoCalib" in s.colnames
    assert "gaussianFlux" in s.meta["missing"] and "ixxPSF" in s.meta["missing"]


def test_to_source_table_on_a_visitcal_source_product():
    from pathlib import Path

    from visitcal.io import read_catalog
    from visitcal.io.afw_catalog import to_source_table
    files = sorted(Path("/tmp/qa_small/source").glob("*/source_*.parquet"))
    if not files:
        pytest.skip("no visitcal source product under /tmp/qa_small/source (made by `visitcal qa` runs)")
    t = read_catalog(files[0])
    s = to_source_table(t)
    assert len(s) == len(t) and s.meta["missing"] == []
    # visitcal's own calibrated columns are instFlux * base_LocalPhotoCalib in nJy: the same numbers
    np.testing.assert_allclose(s["psfFlux"], t["base_PsfFlux_flux"].astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(s["psfFluxErr"], t["base_PsfFlux_fluxErr"].astype(np.float32), rtol=1e-6)
    calib = t.meta["slots"]["CalibFlux"]
    np.testing.assert_allclose(s["calibFlux"], t[f"{calib}_flux"].astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(s["ra"], np.degrees(t["coord_ra"]))
    np.testing.assert_array_equal(s["x"], t[t.meta["slots"]["Centroid"] + "_x"])
    np.testing.assert_array_equal(s["pixelFlags_edge"], t["base_PixelFlags_flag_edge"])
    np.testing.assert_array_equal(s["visit"], t["visit"])
