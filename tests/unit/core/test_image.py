"""Mask planes, MaskedImage, VisitInfo, Detector and Exposure (visitcal.core.image)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from astropy.time import Time
from astropy.wcs import WCS
from hypothesis import given
from hypothesis import strategies as st

from visitcal import _core
from visitcal.core.geom import Box2I
from visitcal.core.image import (Detector, Exposure, Mask, MaskedImage, MaskPlanes, UnknownMaskPlaneError,
                            VisitInfo)


def roundtrip(obj):
    return pickle.loads(pickle.dumps(obj)), copy.deepcopy(obj)


def test_standard_planes_come_from_core_registry():
    planes = MaskPlanes()
    assert dict(planes) == {name: bit for name, bit, _ in _core.mask_planes()}
    assert planes.description("CR") == dict((n, d) for n, _, d in _core.mask_planes())["CR"]


def test_mask_planes_copy_is_equal_and_independent():
    planes = MaskPlanes()
    planes.add_plane("MY_PLANE", "a user plane")
    other = planes.copy()
    assert other == planes and dict(other) == dict(planes)
    assert other.description("MY_PLANE") == "a user plane"
    other.add_plane("ONLY_IN_COPY")
    assert "ONLY_IN_COPY" not in dict(planes) and "ONLY_IN_COPY" in dict(other)


def test_get_plane_bitmask_and_unknown_plane_message():
    planes = MaskPlanes()
    assert planes.get_plane_bitmask("BAD", "SAT", "NO_DATA") == 1 | 2 | 256
    with pytest.raises(UnknownMaskPlaneError, match="'NOPE'.*known planes: BAD, SAT") as info:
        planes.get_plane_bitmask("BAD", "NOPE")
    assert isinstance(info.value, KeyError)


def test_add_plane_up_to_32_bits_then_error():
    mask = Mask(shape=(3, 4))
    n_std = len(mask.planes)
    for i in range(32 - n_std):
        assert mask.add_plane(f"EXTRA{i}") == n_std + i
    assert mask.add_plane("EXTRA0") == n_std  # idempotent
    with pytest.raises(ValueError, match="all 32 bits"):
        mask.add_plane("ONE_TOO_MANY")
    mask.set("EXTRA19")  # bit 31: the int32 sign bit
    assert mask.test("EXTRA19").all() and (mask.array < 0).all()
    mask.clear("EXTRA19")
    assert (mask.array == 0).all()


def test_plane_name_and_collision_checks():
    planes = MaskPlanes()
    with pytest.raises(ValueError, match="must match"):
        planes.add_plane("lower")
    with pytest.raises(ValueError, match="already used by 'CR'"):
        planes.add("NEW", 3)


def test_set_clear_test_with_selection():
    mask = Mask(shape=(4, 5))
    where = np.zeros((4, 5), bool)
    where[1, 2] = True
    mask.set(["CR", "SAT"], where)
    assert mask.test("CR").sum() == 1 and mask.test(["BAD", "SAT"])[1, 2]
    mask.clear("CR", where)
    assert not mask.test("CR").any() and mask.test("SAT")[1, 2]
    mask.clear()
    assert not mask.array.any()


@given(st.lists(st.sampled_from([n for n, _, _ in _core.mask_planes()]), min_size=1, max_size=5))
def test_bitmask_is_or_of_bits(names):
    planes = MaskPlanes()
    expected = 0
    for name in names:
        expected |= 1 << planes[name]
    assert planes.get_plane_bitmask(*names) == expected


def test_masked_image_shapes_dtypes_and_errors():
    mi = MaskedImage(np.ones((3, 4), np.float64), variance=np.ones((3, 4), np.float16), xy0=(10, 20))
    assert mi.image.dtype == mi.variance.dtype == np.float32 and mi.mask.array.dtype == np.int32
    assert (mi.width, mi.height, mi.bbox) == (4, 3, Box2I(10, 20, 13, 22))
    with pytest.raises(ValueError, match="variance shape .*differs"):
        MaskedImage(np.ones((3, 4)), variance=np.ones((4, 3)))
    with pytest.raises(ValueError, match="mask shape"):
        MaskedImage(np.ones((3, 4)), mask=np.zeros((3, 5), np.int32))
    with pytest.raises(ValueError, match="2-D"):
        MaskedImage(np.ones((3, 4, 2)))
    with pytest.raises(TypeError, match="real numbers"):
        MaskedImage(np.ones((3, 4), complex))
    with pytest.raises(TypeError, match="xy0"):
        MaskedImage(np.ones((3, 4)), xy0=(0.5, 0))


def test_float32_input_is_not_copied():
    image = np.zeros((3, 4), np.float32)
    assert MaskedImage(image).image is image


def test_subimage_is_a_view_in_parent_frame():
    mi = MaskedImage(np.arange(20, dtype=np.float32).reshape(4, 5), xy0=(100, 200))
    sub = mi[Box2I(101, 201, 103, 202)]
    assert sub.xy0 == (101, 201) and sub.shape == (2, 3)
    assert sub.image[0, 0] == mi.image[1, 1]
    sub.image[0, 0] = -1
    sub.mask.set("BAD")
    assert mi.image[1, 1] == -1 and mi.mask.test("BAD").sum() == 6
    assert sub.mask.planes is mi.mask.planes
    with pytest.raises(ValueError, match="not inside"):
        mi.subimage(Box2I(0, 0, 3, 3))


def test_visit_info_date_and_dict_roundtrip():
    vi = VisitInfo(id=5, band="r", physical_filter="r DECam", exposure_time=30.0, date=Time(60000.25, format="mjd"),
                   airmass=1.2, boresight_ra_dec=(10.0, -5.0), observatory=(-70.8, -30.2, 2200.0))
    assert vi.date == "2023-02-25T06:00:00.000000" and vi.mjd == 60000.25
    assert VisitInfo.from_dict(vi.to_dict()) == vi
    assert VisitInfo.from_header(vi.to_header()) == vi
    assert VisitInfo(date="2023-02-25T06:00:00") == VisitInfo(date=Time("2023-02-25T06:00:00", scale="utc"))
    assert "BORE-ROTANG" not in vi.to_header()  # NaN is omitted
    assert all(x == y for x, y in zip(roundtrip(vi), (vi, vi)))


def test_detector_header_and_dict_roundtrip():
    det = Detector(id=33, name="N2", bbox=Box2I(0, 0, 2047, 4095), focal_plane_center=(9.9, -125.7),
                   rotation=0.5, pixel_size_mm=0.015)
    assert Detector.from_header(det.to_header()) == det
    assert Detector.from_dict(det.to_dict()) == det
    assert all(len(k) <= 8 for k in det.to_header())
    assert pickle.loads(pickle.dumps(det)) == det


def make_exposure():
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval, wcs.wcs.crpix, wcs.wcs.cdelt = [10, 20], [5, 5], [-1e-4, 1e-4]
    return Exposure.from_arrays(np.ones((6, 7)), xy0=(3, 4), wcs=wcs, visit_info=VisitInfo(id=1),
                                summary_stats={"psf_sigma": 2.0}, metadata={"GAINA": 3.9})


def test_exposure_properties_repr_and_subimage():
    exp = make_exposure()
    assert (exp.width, exp.height, exp.xy0, exp.bbox) == (7, 6, (3, 4), Box2I(3, 4, 9, 9))
    assert exp.image is exp.masked_image.image and exp.metadata["GAINA"] == 3.9
    assert repr(exp) == "Exposure(shape=(6, 7), xy0=(3, 4), components=[wcs, visit_info, summary_stats])"
    sub = exp[Box2I(4, 5, 5, 6)]
    assert sub.wcs is exp.wcs and sub.xy0 == (4, 5)
    with pytest.raises(TypeError, match="MaskedImage"):
        Exposure(np.ones((2, 2)))


def test_exposure_pickles_and_copies():
    from visitcal.io.fits import assert_exposures_equal

    exp = make_exposure()
    for other in (*roundtrip(exp), exp.copy()):
        assert_exposures_equal(exp, other)
        assert other.image is not exp.image
    for obj in (exp.masked_image, exp.mask, exp.mask.planes):
        for clone in roundtrip(obj):
            assert repr(clone) == repr(obj)
