"""FITS CHECKSUM/DATASUM in the byte-swap pass (visitcal.core.fits_checksum): the C++ sums against astropy's
and an independent pure-Python sum, byte-identical files against astropy's add_checksum + writeto, and the
verified reader on intact, corrupted and truncated HDUs."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from visitcal import _core
from visitcal.core.atomic import atomic_write_fits
from visitcal.core.fits_checksum import (BLOCK, CHECKSUM_COMMENT, checksum_bytes, datasum, encode_checksum,
                                         is_plain_image, read_image_hdu, write_array, write_hdulist)
from visitcal.io import read_exposure, write_exposure
from visitcal.io.fits import exposure_to_hdulist

DTYPES = ["<f4", ">f4", "<f8", ">f8", "<i4", ">i4", "<i2", ">i2", "u1", "<i8", ">i8"]


def reference_sum(data: bytes, initial: int = 0) -> int:
    """The standard's definition, independently: big-endian 32-bit words (zero-padded), summed as integers, then
    the end-around carry folded back until the sum fits 32 bits."""
    data = bytes(data) + bytes(-len(data) % 4)
    s = initial + sum(int.from_bytes(data[i:i + 4], "big") for i in range(0, len(data), 4))
    while s >> 32:
        s = (s & 0xFFFFFFFF) + (s >> 32)
    return s


def astropy_cards(hdu) -> tuple[str, str]:
    """CHECKSUM and DATASUM as astropy computes them (public route: add_checksum, then the cards)."""
    hdu.add_checksum(when=CHECKSUM_COMMENT)
    return hdu.header["CHECKSUM"], hdu.header["DATASUM"]


def old_write(hdulist, f) -> None:
    """What atomic_write_fits wrote before the kernel: astropy's add_checksum on every HDU, then writeto."""
    for hdu in hdulist:
        if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)) and any("A" in str(fmt) for fmt in hdu.columns.formats):
            hdu.writeto(io.BytesIO())
        hdu.add_checksum(when=CHECKSUM_COMMENT)
    hdulist.writeto(f, checksum=False)


arrays = st.sampled_from(DTYPES).flatmap(lambda dt: hnp.arrays(
    np.dtype(dt), hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=37),
    elements=hnp.from_dtype(np.dtype(dt).newbyteorder("="), allow_nan=True, allow_infinity=True)
    if np.dtype(dt).kind != "f" else st.floats(width=8 * np.dtype(dt).itemsize, allow_nan=True)))


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=0, max_size=3000), initial=st.integers(0, 0xFFFFFFFF))
def test_checksum_of_bytes_is_the_standards_sum(data, initial):
    assert checksum_bytes(data, initial) == reference_sum(data, initial)


def test_checksum_edge_values():
    assert checksum_bytes(b"") == 0 and checksum_bytes(bytes(13)) == 0
    assert checksum_bytes(b"\xff" * 8) == 0xFFFFFFFF  # -0 + -0: the end-around carry keeps -0
    assert checksum_bytes(b"\x80\x00\x00\x00" * 2) == 1  # 2^32 folds to 1
    assert checksum_bytes(b"\x01\x02\x03") == 0x01020300  # a partial word is zero-padded on the right
    # the encoding of the appendix J example: the ASCII sum of "0000000000000000" is 0x30303030 * 4
    assert encode_checksum(0) == "0000000000000000"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=arrays)
def test_image_checksums_equal_astropys(array):
    """DATASUM and CHECKSUM of an image HDU of every pixel type and byte order, 1-D to 3-D, odd sizes whose data
    are not a multiple of 4 bytes: ours (datasum, then the header sum) equal astropy's add_checksum."""
    ours_datasum = datasum(array)
    assert ours_datasum == reference_sum(array.astype(array.dtype.newbyteorder(">")).tobytes())
    hdu = fits.ImageHDU(array.copy(), name="IMAGE")
    checksum, datasum_card = astropy_cards(hdu)
    assert str(ours_datasum) == datasum_card
    hdu.header["CHECKSUM"] = "0" * 16
    header_sum = checksum_bytes(hdu.header.tostring().encode("ascii"), ours_datasum)
    assert encode_checksum(~header_sum) == checksum


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=arrays, strings=st.lists(st.text(alphabet="ab c", max_size=6), min_size=1, max_size=5))
def test_written_bytes_equal_astropys_add_checksum_and_writeto(array, strings):
    """write_hdulist gives the bytes of add_checksum + writeto for a primary header, an image and a table with a
    blank-padded string column, and every HDU then verifies with astropy."""
    def hdus():
        table = fits.table_to_hdu(Table({"name": strings, "x": np.arange(len(strings), dtype=np.float64)}))
        table.name = "TAB"
        primary = fits.PrimaryHDU()
        primary.header["OBSERVER"] = ("someone", "a card")
        return fits.HDUList([primary, fits.ImageHDU(array.copy(), name="IMAGE"), table])

    old, new = io.BytesIO(), io.BytesIO()
    old_write(hdus(), old)
    write_hdulist(hdus(), new)
    assert hashlib.sha256(new.getvalue()).hexdigest() == hashlib.sha256(old.getvalue()).hexdigest()
    with fits.open(io.BytesIO(new.getvalue()), checksum=True) as hdul:
        assert [(h.verify_checksum(), h.verify_datasum()) for h in hdul] == [(1, 1)] * 3


def test_primary_with_data_and_every_plain_dtype_byte_identical(tmp_path):
    rng = np.random.default_rng(3)
    planes = [rng.normal(size=(5, 7)).astype(dt) if dt[-2] == "f" else rng.integers(0, 100, (5, 7)).astype(dt)
              for dt in DTYPES]

    def hdus():
        return fits.HDUList([fits.PrimaryHDU(planes[0].copy())] + [fits.ImageHDU(p.copy()) for p in planes[1:]])

    old, new = io.BytesIO(), io.BytesIO()
    old_write(hdus(), old)
    write_hdulist(hdus(), new)
    assert new.getvalue() == old.getvalue()
    assert all(is_plain_image(h) for h in hdus())
    # a scaled image (uint16 -> BZERO) is not plain: astropy writes it, still byte-identical
    def scaled():
        return fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.arange(12, dtype=np.uint16).reshape(3, 4))])

    assert not is_plain_image(scaled()[1])
    old, new = io.BytesIO(), io.BytesIO()
    old_write(scaled(), old)
    write_hdulist(scaled(), new)
    assert new.getvalue() == old.getvalue()


def test_write_array_pads_and_leaves_the_array_alone():
    a = np.arange(7, dtype="<f4")
    before = a.tobytes()
    out = io.BytesIO()
    s = write_array(out, a)
    assert len(out.getvalue()) == BLOCK and out.getvalue()[:28] == a.astype(">f4").tobytes()
    assert out.getvalue()[28:] == bytes(BLOCK - 28) and a.tobytes() == before
    assert s == reference_sum(a.astype(">f4").tobytes())


def test_non_contiguous_arrays_are_copied_not_rejected():
    a = np.arange(60, dtype=np.float32).reshape(6, 10)[:, ::3]
    assert datasum(a) == reference_sum(np.ascontiguousarray(a).astype(">f4").tobytes())


def test_kernel_errors_are_in_our_words():
    a = np.arange(10, dtype=np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.fits_encode_big_endian(a[::2], 0, 5, None, 0)
    with pytest.raises(ValueError, match="integers or floats of 1, 2, 4 or 8 bytes"):
        _core.fits_encode_big_endian(np.zeros(4, np.complex64), 0, 4, None, 0)
    with pytest.raises(ValueError, match="start on a 4-byte word"):
        _core.fits_encode_big_endian(np.zeros(8, np.int16), 1, 2, None, 0)
    with pytest.raises(ValueError, match="outside an array of 10"):
        _core.fits_encode_big_endian(a, 4, 7, None, 0)
    with pytest.raises(ValueError, match="holds 8 bytes, the run needs 40"):
        _core.fits_encode_big_endian(a, 0, 10, bytearray(8), 0)
    a.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _core.fits_decode_big_endian_inplace(a, 0, 10, 0)


def _image_file(tmp_path, array):
    path = tmp_path / "img.fits"
    atomic_write_fits(fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(array, name="IMAGE")]), path, overwrite=True)
    with fits.open(path) as hdul:
        info, header = hdul.fileinfo(1), hdul[1].header.copy()
    return path, info, header


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=arrays)
def test_reader_returns_native_pixels_and_verifies(tmp_path, array):
    path, info, header = _image_file(tmp_path, array)
    with open(path, "rb") as raw:
        data, sums = read_image_hdu(raw, header, info["hdrLoc"], info["datLoc"], info["datSpan"])
    assert data.dtype.byteorder in "=|" and data.shape == array.shape
    assert data.tobytes() == array.astype(array.dtype.newbyteorder("=")).tobytes()
    assert sums.ok and sums.datasum_ok and sums.checksum_ok and sums.data_sum == datasum(array)


@pytest.mark.parametrize("where", ["header", "data", "padding"])
def test_reader_detects_one_flipped_byte(tmp_path, where):
    path, info, header = _image_file(tmp_path, np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7))
    offset = {"header": info["hdrLoc"] + 85, "data": info["datLoc"] + 17,
              "padding": info["datLoc"] + info["datSpan"] - 1}[where]
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))
    with open(path, "rb") as f:
        _, sums = read_image_hdu(f, header, info["hdrLoc"], info["datLoc"], info["datSpan"])
    assert not sums.ok and sums.checksum_ok is False
    assert sums.datasum_ok is (where == "header")  # DATASUM covers the data unit (padding included) only


def test_reader_reports_truncation(tmp_path):
    path, info, header = _image_file(tmp_path, np.ones((40, 40), np.float32))
    path.write_bytes(path.read_bytes()[:info["datLoc"] + 1000])
    with open(path, "rb") as f, pytest.raises(EOFError, match="needs 6400 bytes, the file ends after 1000"):
        read_image_hdu(f, header, info["hdrLoc"], info["datLoc"], info["datSpan"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ny=st.integers(1, 40), nx=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_exposure_files_byte_identical_to_the_astropy_writer(tmp_path, ny, nx, seed):
    """write_exposure (kernel) and the former writer (astropy add_checksum + writeto) give the same file for
    random exposures with a WCS, mask planes and a summary table."""
    from astropy.wcs import WCS

    from visitcal.core.image import Exposure

    rng = np.random.default_rng(seed)
    h = fits.Header()
    h.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=rng.uniform(0, 360), CRVAL2=rng.uniform(-80, 80),
             CRPIX1=nx / 2, CRPIX2=ny / 2, CD1_1=-5.5e-5, CD1_2=0.0, CD2_1=0.0, CD2_2=5.5e-5)
    exp = Exposure.from_arrays(rng.normal(0, 1e3, (ny, nx)).astype(np.float32), xy0=tuple(rng.integers(-50, 50, 2)),
                               variance=rng.uniform(0, 9, (ny, nx)).astype(np.float32), wcs=WCS(h),
                               summary_stats={"band": "ri"[seed % 2], "psfSigma": float(rng.uniform(1, 3))})
    exp.mask.set("CR", rng.uniform(size=(ny, nx)) < 0.3)
    new = tmp_path / "new.fits"
    write_exposure(exp, new, overwrite=True)
    old = io.BytesIO()
    old_write(exposure_to_hdulist(exp), old)
    assert hashlib.sha256(new.read_bytes()).hexdigest() == hashlib.sha256(old.getvalue()).hexdigest()
    back = read_exposure(new)
    assert np.array_equal(back.image.view(np.uint32), exp.image.view(np.uint32))
    assert np.array_equal(back.mask.array, exp.mask.array) and np.array_equal(back.variance, exp.variance)


@pytest.mark.parametrize("hdu", ["PRIMARY", "IMAGE", "MASK", "VARIANCE", "SUMMARY"])
def test_read_exposure_names_the_corrupt_hdu(tmp_path, hdu):
    """One flipped bit anywhere (a header comment of the data-less primary, the pixels of each plane, a table's
    rows) is a FitsReadError naming the file and the HDU: image HDUs are verified by the kernel, tables by
    astropy."""
    from visitcal.core.image import Exposure
    from visitcal.io import FitsReadError

    exp = Exposure.from_arrays(np.linspace(0, 1, 35 * 41, dtype=np.float32).reshape(35, 41),
                               summary_stats={"band": "r", "psfSigma": 1.7})
    exp.mask.set("CR", exp.image > 0.5)
    path = tmp_path / "exp.fits"
    write_exposure(exp, path)
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        info = hdul[names.index(hdu)].fileinfo()
    raw = bytearray(path.read_bytes())
    offset = raw.index(b"file layout") if hdu == "PRIMARY" else info["datLoc"] + 7
    raw[offset] ^= 0x20  # a letter's case in a comment, or one bit of a pixel / a row
    path.write_bytes(bytes(raw))
    with pytest.raises(FitsReadError, match=rf"exp.fits\[{hdu}\]: corrupt file: .*verification failed") as info:
        read_exposure(path)
    assert info.value.hdu == hdu
