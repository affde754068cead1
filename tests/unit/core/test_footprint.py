"""Footprints: span algebra against numpy/scipy pixel masks, heavy footprints, persistence."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from visitcal import _core
from visitcal.core.footprint import (
    PEAK_DTYPE,
    Footprint,
    FootprintSet,
    HeavyFootprint,
    footprints_from_hdus,
    footprints_to_hdus,
)
from visitcal.core.geom import Box2I
from visitcal.core.image import MaskedImage
from visitcal.io import FitsReadError, read_footprints, write_footprints

EIGHT = np.ones((3, 3), dtype=bool)


def disc(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def mask_of(fp: Footprint, bbox: Box2I) -> np.ndarray:
    """Independent rendering of a footprint: numpy slices per span."""
    out = np.zeros(bbox.shape, dtype=bool)
    for y, x0, x1 in fp.spans:
        if bbox.min_y <= y <= bbox.max_y:
            a, b = max(x0, bbox.min_x), min(x1, bbox.max_x)
            if a <= b:
                out[y - bbox.min_y, a - bbox.min_x:b - bbox.min_x + 1] = True
    return out


masks = arrays(bool, st.tuples(st.integers(1, 14), st.integers(1, 14)))


def test_spans_are_normalized_and_measured():
    fp = Footprint([[2, 4, 6], [0, 0, 2], [0, 3, 3], [0, 5, 7], [2, 1, 2], [2, 5, 9]])
    # (0, 0..2) and (0, 3..3) touch: merged; (2, 1..2) and (2, 4..6) do not; (2, 4..6) and (2, 5..9) overlap.
    assert fp.spans.tolist() == [[0, 0, 3], [0, 5, 7], [2, 1, 2], [2, 4, 9]]
    assert fp.area == 4 + 3 + 2 + 6
    assert fp.bbox == Box2I(0, 0, 9, 2)
    assert fp.contains(3, 0) and not fp.contains(4, 0) and not fp.contains(0, 1)
    assert fp.contains(np.array([9, 10, 3]), np.array([2, 2, 2])).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="x1 < x0"):
        Footprint([[0, 3, 2]])
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        Footprint([[0, 1]])


@settings(max_examples=40, deadline=None)
@given(masks, st.integers(-5, 5), st.integers(-5, 5))
def test_from_mask_round_trip(mask, x0, y0):
    fp = Footprint.from_mask(mask, xy0=(x0, y0))
    bbox = Box2I.from_shape(mask.shape, (x0, y0))
    assert np.array_equal(mask_of(fp, bbox), mask)
    assert np.array_equal(fp.to_array(bbox), mask)
    assert fp.area == mask.sum()
    y, x = fp.indices()
    assert np.array_equal(np.sort(y * 100 + x), np.sort((np.nonzero(mask)[0] + y0) * 100 + np.nonzero(mask)[1] + x0))


@settings(max_examples=40, deadline=None)
@given(masks, st.integers(0, 5))
def test_dilation_equals_scipy_disc_dilation(mask, radius):
    fp = Footprint.from_mask(mask)
    pad = radius + 1
    big = np.pad(mask, pad)
    expected = ndimage.binary_dilation(big, structure=disc(radius)) if radius else big
    bbox = Box2I.from_shape(big.shape, (-pad, -pad))
    assert np.array_equal(mask_of(fp.dilated(radius), bbox), expected)


@settings(max_examples=40, deadline=None)
@given(masks)
def test_components_equal_scipy_8_connected_labels(mask):
    spans = Footprint.from_mask(mask).spans
    labels, n = _core.label_span_components(spans)
    ref, n_ref = ndimage.label(mask, structure=EIGHT)
    assert n == n_ref
    # Same partition: every span's pixels carry one scipy label, and labels map one to one.
    pairs = {(int(lab), int(ref[y, x0])) for (y, x0, _), lab in zip(spans, labels)}
    assert len(pairs) == n == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def _set_from_masks(masks_list, bbox):
    fps = []
    for i, m in enumerate(masks_list):
        fp = Footprint.from_mask(m, xy0=bbox.xy0)
        y, x = fp.indices()
        peaks = np.zeros(1, PEAK_DTYPE)
        peaks["id"] = i + 1
        peaks["i_x"], peaks["i_y"] = x[0], y[0]
        peaks["f_x"], peaks["f_y"] = x[0], y[0]
        peaks["peak_value"] = 10.0 + i
        fps.append(Footprint(fp.spans, peaks))
    return FootprintSet.from_footprints(fps, bbox)


def test_combined_grow_merges_touching_footprints_like_scipy():
    rng = np.random.default_rng(3)
    bbox = Box2I(5, -3, 5 + 79, -3 + 59)
    labels, n = ndimage.label(rng.random(bbox.shape) > 0.985, structure=EIGHT)
    parts = [labels == k for k in range(1, n + 1)]
    fs = _set_from_masks(parts, bbox)
    grown = fs.grown(3, combined=True)
    union = ndimage.binary_dilation(labels > 0, structure=disc(3))
    _ref, n_ref = ndimage.label(union, structure=EIGHT)
    assert len(grown) == n_ref
    total = np.zeros(bbox.shape, dtype=int)
    for fp in grown:
        total += mask_of(fp, bbox)
    assert np.array_equal(total, union.astype(int))  # disjoint, covering exactly the dilated union
    assert sorted(grown.peaks["id"].tolist()) == list(range(1, n + 1))  # every peak kept once, with its id
    for fp in grown:  # each peak sits in the footprint that absorbed it, sorted by value
        assert all(fp.contains(int(p["i_x"]), int(p["i_y"])) for p in fp.peaks)
        assert np.all(np.diff(fp.peaks["peak_value"]) <= 0)
    separate = fs.grown(3, combined=False)
    assert len(separate) == n
    assert all(np.array_equal(mask_of(g, bbox), ndimage.binary_dilation(p, structure=disc(3)))
               for g, p in zip(separate, parts))


def test_set_mask_and_bits():
    bbox = Box2I(10, 20, 29, 34)
    mi = MaskedImage(np.zeros(bbox.shape, np.float32), xy0=bbox.xy0)
    fs = _set_from_masks([np.eye(15, 20, dtype=bool)], bbox)
    fs.set_mask(mi.mask, "DETECTED")
    assert np.array_equal(mi.mask.test("DETECTED"), np.eye(15, 20, dtype=bool))
    with pytest.raises(ValueError, match="outside the image"):
        _core.set_mask_over_spans(mi.mask.array, np.array([[0, 0, 3]], np.int32), 1, 10, 20)


def test_heavy_footprint_gathers_and_reinserts():
    dtype = np.float32  # MaskedImage planes are float32
    rng = np.random.default_rng(1)
    xy0 = (100, 200)
    mi = MaskedImage(rng.normal(size=(30, 40)).astype(dtype), variance=rng.random((30, 40)).astype(np.float32) + 1,
                     xy0=xy0)
    mi.mask.array[:] = rng.integers(0, 8, size=(30, 40))
    fp = Footprint.from_mask(rng.random((30, 40)) > 0.6, xy0=xy0)
    heavy = fp.make_heavy(mi)
    y, x = fp.indices()
    assert np.array_equal(heavy.image, mi.image[y - xy0[1], x - xy0[0]])
    assert np.array_equal(heavy.mask, mi.mask.array[y - xy0[1], x - xy0[0]])
    assert np.array_equal(heavy.variance, mi.variance[y - xy0[1], x - xy0[0]])
    assert heavy.image.dtype == dtype
    blank = MaskedImage(np.zeros((30, 40), dtype), xy0=xy0)
    heavy.insert(blank, mask=True, variance=True)
    inside = fp.to_array(Box2I.from_shape((30, 40), xy0))
    assert np.array_equal(blank.image[inside], mi.image[inside]) and np.all(blank.image[~inside] == 0)
    assert np.array_equal(blank.mask.array[inside], mi.mask.array[inside])
    with pytest.raises(ValueError, match="one value per pixel"):
        HeavyFootprint(fp, np.zeros(3))
    with pytest.raises(ValueError, match="outside the image"):
        Footprint([[0, 0, 5]]).make_heavy(mi)


def _example_footprints():
    rng = np.random.default_rng(5)
    mi = MaskedImage(rng.normal(size=(20, 20)).astype(np.float32), xy0=(3, 4))
    mi.mask.array[5, 5] = mi.mask.get_plane_bitmask("CR")
    plain = _set_from_masks([rng.random((20, 20)) > 0.7], Box2I.from_shape((20, 20), (3, 4)))[0]
    heavy = Footprint.from_mask(rng.random((20, 20)) > 0.5, xy0=(3, 4)).make_heavy(mi)
    return [plain, heavy, Footprint(np.zeros((0, 3), np.int32))]


def test_persistence_round_trip(tmp_path):
    fps = _example_footprints()
    ids = np.array([11, 12, 13])
    path = write_footprints(tmp_path / "fp.fits", fps, ids)
    read_ids, back = read_footprints(path)
    assert read_ids.tolist() == ids.tolist()
    assert [type(f) for f in back] == [Footprint, HeavyFootprint, Footprint]
    assert back == fps
    assert dict(back[1].planes)["CR"] == 3
    again = write_footprints(tmp_path / "fp2.fits", back, read_ids)
    assert again.read_bytes() == path.read_bytes()  # deterministic bytes
    with pytest.raises(FileExistsError):
        write_footprints(path, fps, ids)


def test_persistence_errors(tmp_path):
    fps = _example_footprints()
    hdus = {h.name: h for h in footprints_to_hdus(fps)}
    del hdus["PEAKS"]
    with pytest.raises(ValueError, match="missing HDU 'PEAKS'"):
        footprints_from_hdus(hdus, where="x.fits")
    hdus = {h.name: h for h in footprints_to_hdus(fps)}
    hdus["FOOTPRINTS"].header["FPVER"] = 99
    with pytest.raises(ValueError, match="FPVER"):
        footprints_from_hdus(hdus)
    with pytest.raises(ValueError, match="one entry per footprint"):
        footprints_to_hdus(fps, ids=[1])
    with pytest.raises(FitsReadError, match="no such file"):
        read_footprints(tmp_path / "missing.fits")


def test_pickle_copy_repr():
    for fp in _example_footprints():
        back = pickle.loads(pickle.dumps(fp))
        assert back == fp and type(back) is type(fp)
        assert "area=" in repr(fp)
    bbox = Box2I(0, 0, 19, 19)
    fs = _set_from_masks([np.eye(20, dtype=bool), np.fliplr(np.eye(20, dtype=bool))], bbox)
    assert pickle.loads(pickle.dumps(fs)) == fs
    assert "2 footprints" in repr(fs)
    assert fs.areas.tolist() == [20, 20] and fs.n_peaks.tolist() == [1, 1]
    with pytest.raises(IndexError):
        fs[2]
