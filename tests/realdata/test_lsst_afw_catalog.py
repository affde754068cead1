"""The afw SourceCatalog reader on a real HSC catalog written by the LSST Science Pipelines
(``lsst_afw/afw/sourceCatalog-hsc-v2.fits``, see the realdata README): columns, packed flags, aliases,
footprints. Truths: the file's own cards and raw tables, read independently here with astropy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from visitcal.io.afw_catalog import afw_column, read_afw_source_catalog
from visitcal.measurement.source_selector import resolve_column

pytestmark = pytest.mark.realdata

IDS = [1055054421295105, 1055054421295106, 1055054421295107, 1055054421295108, 1055054421295109]


@pytest.fixture(scope="module")
def path(realdata_dir):
    p = realdata_dir / "lsst_afw" / "afw" / "sourceCatalog-hsc-v2.fits"
    if not p.is_file():
        pytest.skip(f"{p} not found")
    return p


@pytest.fixture(scope="module")
def result(path):
    return read_afw_source_catalog(path)


@pytest.fixture(scope="module")
def raw(path):
    with fits.open(path) as hdul:
        return hdul[1].header.copy(), np.array(hdul[1].data), [np.array(h.data) for h in hdul[2:]]


def test_ordinary_columns_as_in_the_file(result, raw):
    table, _ = result
    header, data, _ = raw
    assert len(table) == 5
    assert list(table["id"]) == IDS
    assert table["id"].dtype == np.int64
    assert table["coord_ra"].unit == "rad"
    np.testing.assert_array_equal(table["coord_ra"], data["coord_ra"])
    np.testing.assert_array_equal(table["coord_dec"], data["coord_dec"])
    np.testing.assert_allclose(table["coord_ra"][0], 2.62323073, atol=1e-8)
    np.testing.assert_array_equal(table["base_SdssCentroid_x"], [49, 1516, 1769, 1099, 816])
    np.testing.assert_array_equal(table["base_SdssCentroid_y"], [7, 7, 7, 10, 18])
    assert list(table["parent"]) == [0] * 5
    assert list(table["footprint"]) == [1, 3, 5, 7, 9]
    # every ordinary column (114 of the 115: all but the bit array) is there, with the same values
    ordinary = [header[f"TTYPE{k}"] for k in range(1, 116) if k != header["FLAGCOL"]]
    assert len(ordinary) == 114
    for name in ordinary:
        np.testing.assert_array_equal(table[name], data[name], err_msg=name)
    assert "flags" not in table.colnames
    assert table["base_PsfFlux_flux"].description == header[f"TDOC{data.dtype.names.index('base_PsfFlux_flux') + 1}"]
    assert table.meta["base_CircularApertureFlux_radii"] == [3.0, 4.5, 6.0, 9.0, 12.0, 17.0, 25.0, 35.0, 50.0, 70.0]


def test_flags_named_by_tflag_cards(result, raw):
    table, _ = result
    header, _, _ = raw
    names = [header[f"TFLAG{k}"] for k in range(1, 115)]
    assert all(n in table.colnames and table[n].dtype == bool for n in names)
    assert len(table.colnames) == 114 + 114
    assert table["base_SdssCentroid_flag"].description == "General Failure Flag"
    # known values: every record lies within 18 px of the bottom edge (y = 7..18)
    assert table["base_SdssCentroid_flag"].tolist() == [True] * 5
    assert table["base_SdssCentroid_flag_edge"].tolist() == [True] * 5
    assert table["base_PsfFlux_flag_edge"].tolist() == [True] * 5
    assert table["base_PixelFlags_flag_edge"].tolist() == [True, True, True, True, False]
    assert table["ext_photometryKron_KronFlux_flag_edge"].tolist() == [True, True, True, True, False]
    assert table["base_SdssShape_flag"].tolist() == [True, False, True, False, False]
    assert table["ext_shapeHSM_HsmShapeRegauss_flag"].tolist() == [False, False, False, True, False]
    assert table["calib_psf_used"].tolist() == [False] * 5
    assert table["base_PixelFlags_flag_saturated"].tolist() == [False] * 5


def test_bit_order_consistent_with_nan_measurements(raw):
    """The bit order evidence: a NaN measurement must have its algorithm's ``_flag`` set. FITS order
    (MSB of the first byte = TFLAG1) satisfies it for all 42 NaNs; the bits reversed within each byte, or
    the names shifted by one bit, do not."""
    header, data, _ = raw
    nbits = 114
    names = [header[f"TFLAG{k}"] for k in range(1, nbits + 1)]
    row_bytes = data.view(np.uint8).reshape(len(data), -1)[:, :(nbits + 7) // 8]  # the flags column comes first
    assert header["TTYPE1"] == "flags" and header["TFORM1"].strip() == "114X"

    def contradictions(bits, shift=0):
        good = bad = 0
        for j, name in enumerate(names):
            if not name.endswith("_flag") or not 0 <= j + shift < nbits:
                continue
            prefix = name[:-len("_flag")]
            for col in data.dtype.names:
                if col.startswith(prefix + "_") and col[len(prefix) + 1:] in ("flux", "x", "y", "xx", "value"):
                    nan = ~np.isfinite(data[col])
                    good += int(np.sum(nan & bits[:, j + shift]))
                    bad += int(np.sum(nan & ~bits[:, j + shift]))
        return good, bad

    fits_order = np.unpackbits(row_bytes, axis=1, bitorder="big")[:, :nbits].astype(bool)
    reversed_in_bytes = np.unpackbits(row_bytes, axis=1, bitorder="little")[:, :nbits].astype(bool)
    assert contradictions(fits_order) == (42, 0)
    assert contradictions(reversed_in_bytes)[1] > 0
    assert contradictions(fits_order, shift=1)[1] > 0
    assert contradictions(fits_order, shift=-1)[1] > 0


def test_reader_bits_equal_fits_order(result, raw):
    """The reader's flag columns are exactly the FITS-order bits named by their TFLAGk cards."""
    table, _ = result
    header, data, _ = raw
    row_bytes = data.view(np.uint8).reshape(len(data), -1)[:, :15]
    bits = np.unpackbits(row_bytes, axis=1, bitorder="big")[:, :114].astype(bool)
    for k in range(1, 115):
        np.testing.assert_array_equal(table[header[f"TFLAG{k}"]], bits[:, k - 1], err_msg=f"TFLAG{k}")


def test_aliases_resolved(result):
    table, _ = result
    assert table.meta["slots"] == {
        "ApFlux": "base_CircularApertureFlux_12_0", "CalibFlux": "base_CircularApertureFlux_12_0",
        "Centroid": "base_SdssCentroid", "InstFlux": "base_GaussianFlux", "ModelFlux": "base_GaussianFlux",
        "PsfFlux": "base_PsfFlux", "PsfShape": "ext_shapeHSM_HsmPsfMoments",
        "Shape": "ext_shapeHSM_HsmSourceMoments"}
    assert resolve_column(table, "slot_Centroid_x") == "base_SdssCentroid_x"
    assert resolve_column(table, "slot_PsfFlux_flux") == "base_PsfFlux_flux"
    assert resolve_column(table, "slot_CalibFlux_fluxErr") == "base_CircularApertureFlux_12_0_fluxErr"
    assert resolve_column(table, "slot_Centroid_flag") == "base_SdssCentroid_flag"
    assert len(table.meta["aliases"]) == 13
    assert table.meta["aliases"]["base_GaussianFlux_flag_badShape"] == "ext_shapeHSM_HsmSourceMoments_flag"
    assert afw_column(table, "base_PsfFlux_flag_badCentroid") == "base_SdssCentroid_flag"
    assert afw_column(table, "slot_Shape_xx") == "ext_shapeHSM_HsmSourceMoments_xx"
    assert table[afw_column(table, "base_GaussianFlux_flag_badShape")].tolist() == [True] * 5
    with pytest.raises(KeyError, match="slot_Nothing_x"):
        afw_column(table, "slot_Nothing_x")


def test_footprints_areas_and_peaks(result, raw):
    table, footprints = result
    _, data, (index, fp_ids, spans, peaks) = raw
    assert sorted(footprints) == IDS
    assert table.meta["afw_unread_classes"] == []
    # independent: the archive index row of each record's Footprint -> its SpanSet id -> the span rows
    entries = {(int(r["id"]), int(r["cat.persistable"])): r for r in index}
    expected_area = {}
    for sid, fid in zip(data["id"], data["footprint"]):
        fp_row = entries[(int(fid), 0)]
        assert fp_row["name"].strip() == b"Footprint"
        spanset = int(fp_ids["id"][fp_row["row0"]])
        ss = entries[(spanset, 0)]
        assert ss["name"].strip() == b"SpanSet"
        rows = spans[ss["row0"]:ss["row0"] + ss["nrows"]]
        expected_area[int(sid)] = int(np.sum(rows["x1"] - rows["x0"] + 1))
    assert [expected_area[i] for i in IDS] == [175, 120, 333, 116, 269]
    # the file stores no area in its Footprint tables; base_FootprintArea_value is meas_base's count
    assert list(data["base_FootprintArea_value"]) == [175, 120, 333, 116, 269]
    for sid in IDS:
        fp = footprints[sid]
        assert fp.area == expected_area[sid]
        assert len(fp.peaks) == 1
        p = fp.peaks[0]
        assert bool(fp.contains(int(p["i_x"]), int(p["i_y"])))
    # the peaks are the file's
    first = footprints[IDS[0]].peaks[0]
    assert (first["id"], first["i_x"], first["i_y"]) == (156082, 49, 7)
    np.testing.assert_allclose(first["peak_value"], 35.932903, rtol=1e-6)
    np.testing.assert_array_equal([footprints[i].peaks[0]["i_x"] for i in IDS], peaks["i_x"])
    # the SdssCentroid fell back to the peak on every record (its flag is set): the same pixel
    np.testing.assert_array_equal([footprints[i].peaks[0]["i_x"] for i in IDS], table["base_SdssCentroid_x"])
    # first footprint's spans, straight from the SpanSet table
    np.testing.assert_array_equal(footprints[IDS[0]].spans[0], [2, 46, 51])
    np.testing.assert_array_equal(footprints[IDS[0]].spans[-1], [15, 46, 49])


def test_source_table_export_of_the_afw_catalog(result):
    """The DPDD-style export on the real catalog: positions in degrees, the slot centroid, renamed flags;
    this old file has no instFlux / LocalPhotoCalib columns, so no calibrated fluxes (listed as missing)."""
    from visitcal.io.afw_catalog import to_source_table
    table, _ = result
    s = to_source_table(table)
    assert s["sourceId"].tolist() == IDS
    np.testing.assert_allclose(s["ra"], np.degrees(table["coord_ra"]))
    np.testing.assert_allclose(s["ra"][0], 150.3000495, atol=1e-6)  # 2.62323073 rad
    np.testing.assert_array_equal(s["x"], table["base_SdssCentroid_x"])
    np.testing.assert_array_equal(s["ixx"], table["ext_shapeHSM_HsmSourceMoments_xx"].astype(np.float32))
    assert s["pixelFlags_edge"].tolist() == [True, True, True, True, False]
    assert s["centroid_flag"].tolist() == [True] * 5
    assert "psfFlux" in s.meta["missing"] and "calibFlux" in s.meta["missing"]


def test_round_trip_through_visitcal_products(result, tmp_path):
    """The result goes into visitcal's own products: the Parquet catalog keeps flags and slots, the
    footprint file keeps spans and peaks (peaks compared as bytes: the file's missing significance is NaN)."""
    from visitcal.io import read_catalog, read_footprints, write_catalog, write_footprints
    table, footprints = result
    write_catalog(table, tmp_path / "src.parquet")
    back = read_catalog(tmp_path / "src.parquet")
    assert back.meta["slots"] == table.meta["slots"]
    assert resolve_column(back, "slot_Centroid_flag") == "base_SdssCentroid_flag"
    assert back["base_PixelFlags_flag_edge"].tolist() == [True, True, True, True, False]
    write_footprints(tmp_path / "fp.fits", list(footprints.values()), list(footprints))
    ids, fps = read_footprints(tmp_path / "fp.fits")
    assert ids.tolist() == IDS
    for a, b in zip(fps, footprints.values()):
        np.testing.assert_array_equal(a.spans, b.spans)
        assert a.peaks.tobytes() == b.peaks.tobytes()
