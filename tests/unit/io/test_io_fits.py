"""visitcal's FITS layout (visitcal.io.fits), atomic writes and the LSST calexp reader."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from visitcal.core.geom import Box2I
from visitcal.core.image import Detector, Exposure, VisitInfo
from visitcal.core.atomic import atomic_write
from visitcal.io import FitsReadError, FitsWriteError, VisitcalIOError, read_exposure, read_lsst_calexp, \
    write_exposure
from visitcal.io.fits import assert_exposures_equal
from visitcal.core.persistence import PersistenceError, persistable


@persistable("TestOnlyComponent", 2)
class DummyComponent:
    """A persistable test component (coefficients + a scalar), registered under a test-only name."""

    def __init__(self, coeffs, scale=1.0, fail=False):
        self.coeffs, self.scale, self.fail = np.asarray(coeffs, float), float(scale), fail

    def to_table(self):
        if self.fail:
            raise RuntimeError("deliberate failure in to_table")
        table = Table({"coeffs": [self.coeffs]})
        table.meta["SCALE"] = self.scale
        return table

    @classmethod
    def from_table(cls, table):
        if not np.isfinite(table["coeffs"][0]).all():
            raise ValueError("coeffs must be finite")
        return cls(table["coeffs"][0], table.meta["SCALE"])

    def __eq__(self, other):
        return np.array_equal(self.coeffs, other.coeffs) and self.scale == other.scale


def tan_sip_wcs():
    h = fits.Header()
    h.update(CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP", CRVAL1=150.1, CRVAL2=2.2, CRPIX1=40.5, CRPIX2=-30.25,
             CD1_1=-5.5e-5, CD1_2=1.2e-6, CD2_1=-1.1e-6, CD2_2=5.5e-5, A_ORDER=3, B_ORDER=3, A_2_0=2.1e-6,
             A_1_1=-3.3e-7, A_0_2=4e-7, A_3_0=1e-9, B_2_0=-1.5e-6, B_0_2=2.2e-6, B_1_2=3e-10)
    return WCS(h)


def tpv_wcs():
    h = fits.Header()
    h.update(CTYPE1="RA---TPV", CTYPE2="DEC--TPV", CRVAL1=120.3, CRVAL2=5.15, CRPIX1=-381.2, CRPIX2=-9369.7,
             CD1_1=-2.8e-8, CD1_2=7.29e-5, CD2_1=-7.29e-5, CD2_2=1.1e-8)
    for i, v in enumerate([-0.0021, 1.0092, -0.0006, 0.0, -0.0069, 0.0016, -0.001, 0.00086]):
        h[f"PV1_{i}"] = v
    for i, v in enumerate([0.00028, 1.0063, -0.0004, 0.0, 0.00018, -0.0025, 0.00087, -0.0063]):
        h[f"PV2_{i}"] = v
    return WCS(h)


def make_exposure(wcs=None, **components):
    rng = np.random.default_rng(42)
    shape = (23, 31)
    exp = Exposure.from_arrays(rng.normal(100, 5, shape).astype(np.float32), xy0=(17, -8),
                               variance=rng.uniform(1, 2, shape).astype(np.float32), wcs=wcs, **components)
    exp.variance[0, 0], exp.variance[1, 1], exp.variance[2, 2] = np.nan, np.inf, -np.inf
    exp.image[3, 3] = np.nan
    exp.mask.add_plane("MYPLANE", "a test plane")
    exp.mask.set(["CR", "MYPLANE"], rng.uniform(size=shape) < 0.1)
    exp.mask.set("NO_DATA", rng.uniform(size=shape) < 0.1)
    return exp


def full_exposure(wcs):
    return make_exposure(
        wcs=wcs, psf=DummyComponent([1, 2, 3]), ap_corr_map=DummyComponent([4.0], 2.0),
        photo_calib=DummyComponent([5.0]), background=DummyComponent([6.0, 7.0]),
        summary_stats={"psf_sigma": 1.7, "n_stars": 12, "ok": True, "band": "r", "zero": float("nan")},
        visit_info=VisitInfo(id=695765, band="r", physical_filter="r DECam SDSS c0002 6415.0 1480.0",
                             exposure_time=45.0, date=Time("2017-11-13T06:04:02.537227", scale="utc"), airmass=1.87,
                             boresight_ra_dec=(120.3, 5.15), observatory=(-70.81489, -30.16606, 2215.0)),
        detector=Detector(id=37, name="N6", bbox=Box2I(0, 0, 2047, 4095), focal_plane_center=(1.5, 2.5),
                          pixel_size_mm=0.015),
        metadata={"GAINA": 3.71, "LONGKEYWORD_X": "hierarch", "COMMENT": "a comment"})


@pytest.mark.parametrize("make_wcs", [tan_sip_wcs, tpv_wcs, lambda: None], ids=["tan-sip", "tpv", "no-wcs"])
def test_roundtrip_is_lossless(tmp_path, make_wcs):
    exp = full_exposure(make_wcs())
    path = tmp_path / "exp.fits"
    write_exposure(exp, path)
    back = read_exposure(path)
    assert_exposures_equal(exp, back, wcs_tol_deg=1e-10)
    assert back.summary_stats["n_stars"] == 12 and np.isnan(back.summary_stats["zero"])
    assert back.mask.planes.description("MYPLANE") == "a test plane"


def test_file_layout_matches_calexp_conventions(tmp_path):
    exp = full_exposure(tpv_wcs())
    write_exposure(exp, tmp_path / "exp.fits")
    with fits.open(tmp_path / "exp.fits") as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE", "PSF", "APCORR", "PHOTOCALIB",
                                         "BACKGROUND", "SUMMARY"]
        img = hdul["IMAGE"].header
        assert (img["LTV1"], img["LTV2"], img["CRVAL1A"], img["CRVAL2A"], img["CTYPE1A"]) == (-17, 8, 17, -8, "LINEAR")
        assert img["CTYPE1"] == "RA---TPV" and "PV1_7" in img
        # The file's WCS is in the array frame: FITS viewers see the right sky at array pixels.
        assert np.allclose(WCS(img).all_pix2world(0, 0, 0), exp.wcs.all_pix2world(17, -8, 0), rtol=0, atol=1e-12)
        assert hdul["MASK"].header["MP_CR"] == 3 and hdul["MASK"].header["MP_MYPLANE"] == 12
        assert hdul["PSF"].header["VCKIND"] == "TestOnlyComponent" and hdul["PSF"].header["VCVERS"] == 2
        assert hdul[0].header["EXPID"] == 695765 and hdul[0].header["BORE-AIRMASS"] == 1.87
        assert hdul["IMAGE"].data.dtype.kind == "f" and hdul["MASK"].data.dtype.itemsize == 4


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bits=hnp.arrays(np.uint32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=9), elements=st.integers(0, 2**32 - 1)),
       x0=st.integers(-10**6, 10**6), y0=st.integers(-10**6, 10**6))
def test_any_float32_bit_pattern_roundtrips(tmp_path, bits, x0, y0):
    """Every float32 bit pattern (NaN payloads, inf, denormals) survives, as does any xy0."""
    exp = Exposure.from_arrays(bits.view(np.float32), variance=bits[::-1].copy().view(np.float32), xy0=(x0, y0))
    path = tmp_path / "bits.fits"
    write_exposure(exp, path, overwrite=True)
    assert_exposures_equal(exp, read_exposure(path))


def test_overwrite_and_failed_write_leave_files_alone(tmp_path):
    path = tmp_path / "exp.fits"
    write_exposure(make_exposure(), path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_exposure(make_exposure(), path)
    with pytest.raises(FitsWriteError, match=r"psf .*PSF.*deliberate failure"):
        write_exposure(make_exposure(psf=DummyComponent([1], fail=True)), path, overwrite=True)
    with pytest.raises(FitsWriteError, match="new.fits"):
        write_exposure(make_exposure(psf=DummyComponent([1], fail=True)), tmp_path / "new.fits")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["exp.fits"]
    write_exposure(make_exposure(), path, overwrite=True)


def test_atomic_write_failure_midway(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"new but half")
        raise RuntimeError("crash")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["data.bin"]
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    with pytest.raises(FileExistsError), atomic_write(path, overwrite=False) as f:
        f.write(b"x")
    assert os.listdir(tmp_path) == ["data.bin"]
    with atomic_write(tmp_path / "fresh.txt", "w") as f:
        f.write("text")
    assert (tmp_path / "fresh.txt").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_then_edit(tmp_path, edit):
    path = tmp_path / "exp.fits"
    write_exposure(full_exposure(tpv_wcs()), path)
    with fits.open(path) as hdul:
        hdus = fits.HDUList([h.copy() for h in hdul])
    for hdu in hdus:  # an edit by a foreign tool that does not maintain checksums
        for key in ("CHECKSUM", "DATASUM"):
            hdu.header.remove(key, ignore_missing=True)
    edit(hdus)
    hdus.writeto(path, overwrite=True)
    return path


def test_missing_hdu_is_named(tmp_path):
    def drop_mask(hdus):
        del hdus["MASK"]
        hdus[0].header["VCNEXT"] = len(hdus) - 1
    with pytest.raises(FitsReadError, match=r"exp.fits: no MASK HDU \(found: PRIMARY, IMAGE, VARIANCE"):
        read_exposure(write_then_edit(tmp_path, drop_mask))


def test_shape_mismatch_is_named(tmp_path):
    def shrink(hdus):
        hdus["VARIANCE"].data = hdus["VARIANCE"].data[:-1]
    with pytest.raises(FitsReadError, match=r"exp.fits: plane shapes differ: IMAGE \(23, 31\), MASK \(23, 31\), "
                                            r"VARIANCE \(22, 31\)"):
        read_exposure(write_then_edit(tmp_path, shrink))


def test_mask_without_plane_cards_in_our_file(tmp_path):
    def strip(hdus):
        for key in [k for k in hdus["MASK"].header if k.startswith("MP_")]:
            del hdus["MASK"].header[key]
    with pytest.raises(FitsReadError, match=r"exp.fits\[MASK\]: no MP_<NAME>"):
        read_exposure(write_then_edit(tmp_path, strip))


def test_mask_plane_bit_collision(tmp_path):
    def collide(hdus):
        hdus["MASK"].header["MP_MYPLANE"] = 3
    with pytest.raises(FitsReadError, match=r"\[MASK\]: planes .* both use bit 3"):
        read_exposure(write_then_edit(tmp_path, collide))


def test_unknown_plane_names_are_added(tmp_path):
    def rename(hdus):
        del hdus["MASK"].header["MP_MYPLANE"]
        hdus["MASK"].header["HIERARCH MP_OTHERPLANE"] = 12
    back = read_exposure(write_then_edit(tmp_path, rename))
    assert back.mask.planes["OTHERPLANE"] == 12 and "MYPLANE" not in back.mask.planes


@pytest.mark.parametrize("cut", [1, 2880, 5000, 2880 * 7, "half"])
def test_truncated_file_is_a_clear_error(tmp_path, cut):
    path = tmp_path / "exp.fits"
    write_exposure(full_exposure(tpv_wcs()), path)
    data = path.read_bytes()
    n = len(data) // 2 if cut == "half" else len(data) - cut
    path.write_bytes(data[:n])
    with pytest.raises(FitsReadError, match="exp.fits") as info:
        read_exposure(path)
    assert isinstance(info.value, OSError) and isinstance(info.value, VisitcalIOError)
    assert "truncated" in str(info.value)


def test_corrupted_pixels_fail_checksum(tmp_path):
    path = tmp_path / "exp.fits"
    write_exposure(make_exposure(), path)
    with fits.open(path) as hdul:
        offset = hdul.fileinfo(1)["datLoc"]
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FitsReadError, match="exp.fits.*verification failed"):
        read_exposure(path)


def test_component_errors_name_file_and_hdu(tmp_path):
    def nan_coeffs(hdus):
        hdus["PSF"].data["coeffs"][0, 0] = np.nan
    with pytest.raises(PersistenceError, match=r"exp.fits\[PSF\]: malformed TestOnlyComponent.*finite"):
        read_exposure(write_then_edit(tmp_path, nan_coeffs))


def test_errors_pickle_and_missing_file(tmp_path):
    err = FitsReadError("f.fits: bad", path="f.fits", hdu="MASK")
    clone = pickle.loads(pickle.dumps(err))
    assert (str(clone), clone.path, clone.hdu, type(clone)) == ("f.fits: bad", "f.fits", "MASK", FitsReadError)
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        read_exposure(tmp_path / "nope.fits")


# ------------------------------------------------------------------------------------------ LSST calexp

def write_afw_style_calexp(path, *, xy0=(100, 200), shape=(20, 30), wcs=None, mp_cards=None):
    """An afw-layout calexp written with plain astropy (not with visitcal's writer)."""
    rng = np.random.default_rng(1)
    x0, y0 = xy0
    primary = fits.PrimaryHDU()
    primary.header.update({"EXPID": 12345, "EXPTIME": 30.0, "DATE-AVG": "2024-01-02T03:04:05.000000000",
                           "TIMESYS": "TAI", "BORE-RA": 53.1, "BORE-DEC": -28.1,
                           "FILTER": "r_03"})
    primary.header["HIERARCH LSST BUTLER ID"] = "xyz"
    primary.header["HIERARCH BORE-AIRMASS"] = 1.3
    primary.header["HIERARCH BORE-ROTANG"] = 12.5
    image = fits.ImageHDU(rng.normal(size=shape).astype(">f4"), name="IMAGE")
    if wcs is not None:
        image.header.extend(wcs.to_header(relax=True).cards)  # array frame
    image.header.update({"LTV1": -x0, "LTV2": -y0, "CRVAL1A": x0, "CRVAL2A": y0, "CRPIX1A": 1.0, "CRPIX2A": 1.0,
                         "CTYPE1A": "LINEAR", "CTYPE2A": "LINEAR", "CUNIT1A": "PIXEL", "CUNIT2A": "PIXEL"})
    mp = mp_cards or {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5, "DETECTED_NEGATIVE": 6,
                      "SUSPECT": 7, "NO_DATA": 8, "CROSSTALK": 9, "STREAK": 10, "UNMASKEDNAN": 11}
    mask_data = np.zeros(shape, ">i4")
    mask_data[0, 0] = (1 << mp.get("CR", 3)) | (1 << mp.get("CROSSTALK", 0))
    mask_data[1, 2] = 1 << mp.get("STREAK", 0)
    mask = fits.ImageHDU(mask_data, name="MASK")
    for name, bit in mp.items():
        mask.header[f"HIERARCH MP_{name}"] = bit
    var = fits.ImageHDU(np.ones(shape, ">f4"), name="VARIANCE")
    archive = fits.BinTableHDU(Table({"id": [1]}), name="ARCHIVE_INDEX")
    fits.HDUList([primary, image, mask, var, archive]).writeto(path)


def test_lsst_calexp_reader(tmp_path):
    path = tmp_path / "calexp.fits"
    array_wcs = tan_sip_wcs()
    write_afw_style_calexp(path, wcs=array_wcs)
    exp = read_lsst_calexp(path)
    assert exp.xy0 == (100, 200) and exp.shape == (20, 30) and exp.image.dtype == np.float32
    ours = exp.mask.planes
    assert exp.mask.test("CR")[0, 0] and exp.mask.test("CROSSTALK")[0, 0] and exp.mask.test("STREAK")[1, 2]
    assert ours["STREAK"] == 9 and ours["CROSSTALK"] >= 12 and "UNMASKEDNAN" in ours
    assert exp.mask.array[0, 0] == (1 << 3) | (1 << ours["CROSSTALK"])
    # parent pixel (x0 + j, y0 + i) maps where the file's array-frame WCS maps (j, i)
    j, i = np.meshgrid(np.arange(0, 30, 7.0), np.arange(0, 20, 6.0))
    np.testing.assert_allclose(exp.wcs.all_pix2world(j + 100, i + 200, 0), array_wcs.all_pix2world(j, i, 0),
                               rtol=0, atol=1e-11)
    vi = exp.visit_info
    assert (vi.id, vi.exposure_time, vi.physical_filter, vi.airmass, vi.boresight_ra_dec, vi.boresight_rot_angle) == \
        (12345, 30.0, "r_03", 1.3, (53.1, -28.1), 12.5)
    assert vi.date == Time("2024-01-02T03:04:05", scale="tai").utc.isot + "000"
    assert exp.metadata["LSST BUTLER ID"] == "xyz" and "EXPTIME" not in exp.metadata


def test_lsst_calexp_errors(tmp_path):
    path = tmp_path / "calexp.fits"
    write_afw_style_calexp(path, mp_cards={"BAD": 0, "CR": 0})
    with pytest.raises(FitsReadError, match=r"calexp.fits\[MASK\]: planes BAD and CR both use bit 0"):
        read_lsst_calexp(path)
    path2 = tmp_path / "calexp2.fits"
    write_afw_style_calexp(path2, mp_cards={"BAD": 0})
    with pytest.raises(FitsReadError, match=r"mask bits 0x.* have no MP_ card"):
        read_lsst_calexp(path2)
    with fits.open(path2) as hdul:
        fits.HDUList([hdul[0].copy(), hdul["IMAGE"].copy()]).writeto(tmp_path / "calexp3.fits")
    with pytest.raises(FitsReadError, match=r"calexp3.fits: no MASK HDU"):
        read_lsst_calexp(tmp_path / "calexp3.fits")


def test_read_mask_reads_the_mask_alone(tmp_path):
    from visitcal.io import read_mask

    rng = np.random.default_rng(4)
    exp = Exposure.from_arrays(rng.normal(size=(30, 40)).astype(np.float32), None, np.ones((30, 40), np.float32),
                               xy0=(5, 7))
    exp.mask.add_plane("GHOST", "optical ghost")  # a non-standard plane, at bit 12
    exp.mask.array[...] = rng.integers(0, 2**13, (30, 40), dtype=np.int32)
    path = tmp_path / "e.fits"
    write_exposure(exp, path)
    m = read_mask(path)
    np.testing.assert_array_equal(m.array, exp.mask.array)
    assert m.planes["GHOST"] == exp.mask.planes["GHOST"] == 12 and m.planes.description("GHOST") == "optical ghost"
    assert m.planes["SPIKE"] == exp.mask.planes["SPIKE"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_mask(tmp_path / "missing.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3)), name="IMAGE")]).writeto(tmp_path / "nomask.fits")
    with pytest.raises(FitsReadError, match="no MASK HDU"):
        read_mask(tmp_path / "nomask.fits")
    # verified as read_exposure verifies it: one flipped byte of the MASK data is a corrupt file
    with fits.open(path) as hdul:
        offset = hdul.fileinfo(hdul.index_of("MASK"))["datLoc"]
    data = bytearray(path.read_bytes())
    data[offset + 7] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(FitsReadError, match=r"e.fits\[MASK\]: corrupt file: CHECKSUM and DATASUM"):
        read_mask(path)



def test_exposure_fits_reader_reads_each_part_as_read_exposure(tmp_path):
    """ExposureFitsReader (afw's ExposureFitsReader): each part equals read_exposure's, to the bit, and is
    read anew (not kept by the reader)."""
    from visitcal.io.fits import ExposureFitsReader

    exp = full_exposure(tpv_wcs())
    path = tmp_path / "exp.fits"
    write_exposure(exp, path)
    whole = read_exposure(path)
    with ExposureFitsReader(path) as reader:
        image, variance, mask = reader.read_image(), reader.read_variance(), reader.read_mask()
        assert reader.read_shape() == whole.shape == (23, 31) and reader.read_xy0() == (17, -8)
        assert reader.read_visit_info() == whole.visit_info
        assert dict(reader.read_metadata()) == dict(whole.metadata)
        again = reader.read_image()
    np.testing.assert_array_equal(image.view(np.uint32), whole.image.view(np.uint32))
    np.testing.assert_array_equal(variance.view(np.uint32), whole.variance.view(np.uint32))
    np.testing.assert_array_equal(mask.array, whole.mask.array)
    assert dict(mask.planes.items()) == dict(whole.mask.planes.items())
    assert again is not image and np.array_equal(again.view(np.uint32), image.view(np.uint32))
    assert image.dtype == np.float32 and image.flags.writeable and image.flags.c_contiguous
    with pytest.raises(ValueError, match="context manager"):
        ExposureFitsReader(path).read_image()


def test_exposure_fits_reader_verifies_what_it_reads(tmp_path):
    from visitcal.io.fits import ExposureFitsReader

    path = tmp_path / "exp.fits"
    write_exposure(make_exposure(), path)
    with fits.open(path) as hdul:
        offset = hdul.fileinfo(3)["datLoc"]  # VARIANCE
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with ExposureFitsReader(path) as reader:
        reader.read_image()  # intact
        with pytest.raises(FitsReadError, match=r"exp.fits\[VARIANCE\]: corrupt file: CHECKSUM and DATASUM"):
            reader.read_variance()
        out = np.zeros(reader.read_shape(), np.float32)
        with pytest.raises(FitsReadError, match=r"exp.fits\[VARIANCE\]: corrupt file: CHECKSUM and DATASUM"):
            reader.add_variance_into(out)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(FitsReadError, match="exp.fits.*truncated"):
        with ExposureFitsReader(path):
            pass
    with pytest.raises(FileNotFoundError):
        with ExposureFitsReader(tmp_path / "absent.fits"):
            pass


def test_exposure_fits_reader_adds_a_plane_as_it_reads_it(tmp_path):
    """add_image_into / add_variance_into: out + the plane to the bit (NaN and inf included), chunk by chunk with
    no array of the plane's size (tracemalloc); a float64 plane or a non-float32 target falls back to read + add."""
    import tracemalloc

    from visitcal.io.fits import ExposureFitsReader

    rng = np.random.default_rng(11)
    shape = (300, 500)
    exp = Exposure.from_arrays(rng.normal(100, 5, shape).astype(np.float32),
                               variance=rng.uniform(1, 2, shape).astype(np.float32))
    exp.image[5, 7], exp.variance[9, 9] = np.inf, np.nan
    path = tmp_path / "exp.fits"
    write_exposure(exp, path)
    base_i = rng.normal(0, 50, shape).astype(np.float32)
    base_v = rng.uniform(0, 3, shape).astype(np.float32)
    with ExposureFitsReader(path) as reader:
        out_i, out_v = base_i.copy(), base_v.copy()
        tracemalloc.start()
        reader.add_image_into(out_i)
        reader.add_variance_into(out_v)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out64 = base_i.astype(np.float64)
        reader.add_image_into(out64)  # not float32: read, then added
    np.testing.assert_array_equal(out_i.view(np.uint32), (base_i + exp.image).view(np.uint32))
    np.testing.assert_array_equal(out_v.view(np.uint32), (base_v + exp.variance).view(np.uint32))
    np.testing.assert_array_equal(out64, base_i.astype(np.float64) + exp.image)
    assert peak < 0.5 * base_i.nbytes  # a chunk (256 KiB), not the 600 kB plane
    with ExposureFitsReader(path) as reader:
        with pytest.raises(ValueError, match=r"shape \(300, 500\), the plane added into is \(300, 499\)"):
            reader.add_image_into(np.zeros((300, 499), np.float64))
