"""Catalog round trips through Parquet and FITS tables; errors name the file and the column."""

import numpy as np
import pytest
from astropy.table import Table

from visitcal.io import CatalogIOError, read_catalog, write_catalog
from visitcal.core.table import DetectorVisitIdGenerator


def source_table(n=50):
    rng = np.random.default_rng(7)
    t = Table()
    t["id"] = DetectorVisitIdGenerator(2024, 17).source_ids(n)
    t["parent"] = np.zeros(n, dtype=np.int64)
    t["coord_ra"] = rng.uniform(0, 360, n)
    t["coord_ra"].unit = "deg"
    t["base_PsfFlux_instFlux"] = rng.normal(1e4, 1e3, n).astype(np.float32)
    t["base_PsfFlux_instFlux"][3] = np.nan
    t["base_PsfFlux_instFlux"].unit = "ct"
    t["base_PsfFlux_instFlux"].description = "PSF flux"
    t["base_PsfFlux_flag"] = rng.random(n) < 0.1
    t["deblend_nChild"] = rng.integers(0, 5, n).astype(np.int32)
    t["mask_bits"] = rng.integers(0, 255, n).astype(np.uint8)
    t["band"] = np.array(["r"] * (n - 1) + ["i"])
    t["shape"] = rng.normal(size=(n, 3))
    t.meta["slots"] = {"Centroid": "base_SdssCentroid", "PsfFlux": "base_PsfFlux"}
    t.meta["visit"] = 2024
    return t


def assert_tables_equal(a, b):
    assert a.colnames == b.colnames
    for name in a.colnames:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype or (x.dtype.kind in "US" and y.dtype.kind in "US"), name
        assert x.shape == y.shape, name
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y)  # NaNs compare equal here
        else:
            assert np.all(x == y), name
        assert a[name].unit == b[name].unit, name
        assert a[name].description == b[name].description, name


def test_parquet_round_trip_is_lossless(tmp_path):
    t = source_table()
    path = write_catalog(t, tmp_path / "source.parquet")
    back = read_catalog(path)
    assert_tables_equal(t, back)
    assert back.meta == t.meta
    assert back["id"].dtype == np.int64 and back["mask_bits"].dtype == np.uint8


def test_parquet_reads_a_subset_of_columns(tmp_path):
    path = write_catalog(source_table(), tmp_path / "source.parquet")
    back = read_catalog(path, columns=["id", "shape"])
    assert back.colnames == ["id", "shape"] and back["shape"].shape == (50, 3)
    with pytest.raises(CatalogIOError, match=r"source.parquet: no column\(s\) 'nope'"):
        read_catalog(path, columns=["id", "nope"])


def test_empty_table_round_trips(tmp_path):
    t = source_table()[:0]
    back = read_catalog(write_catalog(t, tmp_path / "empty.parquet"))
    assert len(back) == 0 and back.colnames == t.colnames


def test_masked_values_survive(tmp_path):
    t = Table({"a": np.ma.MaskedArray([1.0, 2.0, 3.0], mask=[False, True, False])})
    back = read_catalog(write_catalog(t, tmp_path / "m.parquet"))
    assert list(back["a"].mask) == [False, True, False] and back["a"][2] == 3.0


def test_fits_round_trip(tmp_path):
    t = source_table()
    del t.meta["slots"]  # a nested dict cannot live in a FITS header
    back = read_catalog(write_catalog(t, tmp_path / "source.fits"))
    assert_tables_equal(t, back)
    assert back.meta["VISIT"] == 2024


def test_fits_refuses_meta_it_cannot_hold_and_writes_nothing(tmp_path):
    with pytest.raises(CatalogIOError, match="source.fits: cannot store in FITS"):
        write_catalog(source_table(), tmp_path / "source.fits")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_and_atomicity(tmp_path):
    path = tmp_path / "source.parquet"
    write_catalog(source_table(10), path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_catalog(source_table(20), path)
    bad = source_table(5)
    bad["obj"] = np.array([object(), object(), object(), object(), object()], dtype=object)
    with pytest.raises(CatalogIOError, match="column 'obj'"):
        write_catalog(bad, path, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.parquet"]


def test_truncated_and_missing_files_are_named(tmp_path):
    path = write_catalog(source_table(), tmp_path / "source.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogIOError, match="source.parquet: cannot read the Parquet file"):
        read_catalog(path)
    with pytest.raises(CatalogIOError, match="absent.parquet: no such file"):
        read_catalog(tmp_path / "absent.parquet")
    with pytest.raises(ValueError, match="cannot tell the catalog format"):
        read_catalog(tmp_path / "source.txt")
