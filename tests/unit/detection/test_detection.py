"""Detection (lsst-spec §5.4) against a numpy/scipy reference and analytic cases."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import ndimage
from visitcal.detection.detection import (
    SourceDetectionConfig,
    SourceDetectionTask,
    detect_footprints,
    detection_kernel_half_width,
    psf_sigma,
)
from visitcal.core.footprint import Footprint
from visitcal.core.geom import Box2I
from visitcal.core.image import Exposure, MaskedImage

EIGHT = np.ones((3, 3), dtype=bool)


def gaussian_kernel(sigma: float, h: int) -> np.ndarray:
    x = np.arange(-h, h + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def reference_detection(image, variance, sigma, value=5.0, polarity=1):
    """Independent spec of steps 3-5: scipy smoothing, threshold, scipy labels, numpy local maxima.

    Returns (labels restricted to the usable region, list of sets of peak (x, y) per label, border h).
    """
    h = detection_kernel_half_width(sigma)
    k = gaussian_kernel(sigma, h)
    k2 = np.outer(k, k)
    s = ndimage.correlate(image.astype(np.float64), k2, mode="constant")
    v = ndimage.correlate(variance.astype(np.float64), k2 * k2, mode="constant")
    usable = np.zeros(image.shape, dtype=bool)
    usable[h:image.shape[0] - h, h:image.shape[1] - h] = True
    a = polarity * s
    detected = usable & (a > value * np.sqrt(v))
    labels, n = ndimage.label(detected, structure=EIGHT)
    padded = np.pad(np.where(usable, a, 0.0), 1, constant_values=-np.inf)
    ny, nx = image.shape
    is_max = np.ones(image.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx == dy == 0:
                continue
            nb = padded[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
            before = dy < 0 or (dy == 0 and dx < 0)
            is_max &= (nb < a) if before else (nb <= a)
    peaks = [set() for _ in range(n)]
    for y, x in zip(*np.nonzero(is_max & detected)):
        peaks[labels[y, x] - 1].add((int(x), int(y)))
    for k, p in enumerate(peaks):
        if not p:  # an out-of-footprint neighbour beats every pixel: the footprint's maximum is its peak
            y, x = np.unravel_index(np.argmax(np.where(labels == k + 1, a, -np.inf)), a.shape)
            p.add((int(x), int(y)))
    return labels, peaks, h


def star_field(seed, shape=(120, 150), n_stars=25, sigma=1.8, noise=3.0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    img = rng.normal(0.0, noise, size=shape)
    for _ in range(n_stars):
        cx, cy = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        flux = 10 ** rng.uniform(1.5, 4.0)
        img += flux / (2 * np.pi * sigma ** 2) * np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / sigma ** 2)
    var = np.full(shape, noise ** 2) * rng.uniform(0.8, 1.2, size=shape)
    return img.astype(np.float32), var.astype(np.float32)


@pytest.mark.parametrize("polarity", ["positive", "negative"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_footprints_and_peaks_equal_reference(seed, polarity):
    sigma = 1.8
    img, var = star_field(seed, sigma=sigma)
    if polarity == "negative":
        img = -img
    mi = MaskedImage(img, variance=var, xy0=(7, -4))
    cfg = SourceDetectionConfig(threshold_polarity=polarity, return_original_footprints=True)
    pos, neg = detect_footprints(mi, sigma, cfg)
    found = pos if polarity == "positive" else neg
    assert (pos is None) == (polarity == "negative") and (neg is None) == (polarity == "positive")
    labels, ref_peaks, h = reference_detection(img, var, sigma, polarity=1 if polarity == "positive" else -1)
    bbox = Box2I.from_shape(img.shape, (7, -4))
    assert len(found) == labels.max() > 3
    for k, fp in enumerate(found):  # raster order of first pixel == scipy's label order
        assert np.array_equal(fp.to_array(bbox), labels == k + 1)
        got = {(int(p["i_x"]) - 7, int(p["i_y"]) + 4) for p in fp.peaks}
        assert got == ref_peaks[k]
        assert np.all(np.diff(np.abs(fp.peaks["peak_value"])) <= 0)
    plane = "DETECTED" if polarity == "positive" else "DETECTED_NEGATIVE"
    assert mi.mask.test(plane).any() and not mi.mask.test("DETECTED_NEGATIVE" if plane == "DETECTED" else "DETECTED").any()
    edge = mi.mask.test("EDGE")
    assert edge[:h].all() and edge[-h:].all() and edge[:, :h].all() and edge[:, -h:].all()
    assert not edge[h:-h, h:-h].any()


def test_isolated_gaussian_peak_and_significance_analytic():
    """A noise-free Gaussian of sigma s correlated with LSST's truncated (3.5 sigma), unit-sum Gaussian k
    peaks at F / (2 pi s^2) * (sum_i k_i exp(-i^2 / 2 s^2))^2 (separable); with constant variance V the
    smoothed variance is V (sum_i k_i^2)^2."""
    s, flux, var = 2.0, 5000.0, 4.0
    y, x = np.mgrid[0:81, 0:81]
    img = flux / (2 * np.pi * s * s) * np.exp(-0.5 * ((x - 40) ** 2 + (y - 40) ** 2) / s ** 2)
    exp = Exposure.from_arrays(img.astype(np.float32), variance=np.full(img.shape, var, np.float32))
    res = SourceDetectionTask().run(exp, sigma=s)
    assert res.num_pos == 1 and res.num_neg == 0 and res.sources["n_peaks"].tolist() == [1]
    peak = res.positive.peaks[0]
    assert (peak["i_x"], peak["i_y"]) == (40, 40)
    h = detection_kernel_half_width(s)
    k = gaussian_kernel(s, h)
    expected_value = flux / (2 * np.pi * s * s) * np.sum(k * np.exp(-0.5 * (np.arange(-h, h + 1) / s) ** 2)) ** 2
    assert expected_value == pytest.approx(flux / (4 * np.pi * s * s), rel=1e-3)  # ~ the untruncated F / (4 pi s^2)
    assert peak["peak_value"] == pytest.approx(expected_value, rel=1e-5)
    assert peak["significance"] == pytest.approx(expected_value / math.sqrt(var * (k ** 2).sum() ** 2), rel=1e-5)
    # Grown by int(2.4 s + 0.5) = 5 px: the footprint is the thresholded disc dilated by 5.
    radius = int(2.4 * s + 0.5)
    fp = res.footprints[0]
    labels, _, _ = reference_detection(img.astype(np.float32), np.full(img.shape, var, np.float32), s)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    grown = ndimage.binary_dilation(labels > 0, structure=xx ** 2 + yy ** 2 <= radius ** 2)
    assert np.array_equal(fp.to_array(Box2I.from_shape(img.shape)), grown)
    assert np.array_equal(exp.masked_image.mask.test("DETECTED"), grown)


def test_growth_merges_close_sources_and_threshold_types():
    s = 1.5
    y, x = np.mgrid[0:60, 0:90]
    img = sum(3000 / (2 * np.pi * s * s) * np.exp(-0.5 * ((x - cx) ** 2 + (y - 30) ** 2) / s ** 2) for cx in (30, 38, 70))
    var = np.ones(img.shape, np.float32)
    mi = MaskedImage(img.astype(np.float32), variance=var)
    merged, _ = detect_footprints(mi, s)
    assert len(merged) == 2 and merged.n_peaks.tolist() == [2, 1]
    apart, _ = detect_footprints(MaskedImage(img.astype(np.float32), variance=var), s,
                                 SourceDetectionConfig(combined_grow=False))
    assert len(apart) == 2  # the two close peaks already share one footprint before growing
    # "value": a raw threshold; "pixel_rms": value * sqrt(unsmoothed variance) -> same for unit variance.
    a, _ = detect_footprints(MaskedImage(img.astype(np.float32), variance=var), s,
                             SourceDetectionConfig(threshold_type="value", threshold_value=50.0))
    b, _ = detect_footprints(MaskedImage(img.astype(np.float32), variance=var), s,
                             SourceDetectionConfig(threshold_type="pixel_rms", threshold_value=50.0))
    assert a == b and len(a) == 2
    c, _ = detect_footprints(MaskedImage(img.astype(np.float32), variance=var), s,
                             SourceDetectionConfig(include_threshold_multiplier=1e6))
    assert len(c) == 0


def test_both_polarities_and_min_pixels():
    img, var = star_field(4)
    img[60:63, 70:73] -= 400.0  # a negative blob
    exp = Exposure.from_arrays(img, variance=var)
    res = SourceDetectionTask(SourceDetectionConfig(threshold_polarity="both")).run(exp, sigma=1.8)
    assert res.num_neg >= 1 and res.num_pos >= 3
    assert res.sources["is_negative"].sum() == res.num_neg
    neg_fp = res.footprints[res.num_pos]
    assert neg_fp.contains(71, 61) and neg_fp.peaks["peak_value"][0] < 0 < neg_fp.peaks["significance"][0]
    assert exp.masked_image.mask.test("DETECTED_NEGATIVE")[61, 71]
    assert res.sources["id"].tolist() == list(range(1, res.num_pos + res.num_neg + 1))
    small = SourceDetectionTask(SourceDetectionConfig(return_original_footprints=True)).run(
        Exposure.from_arrays(img, variance=var), sigma=1.8)
    big = SourceDetectionTask(SourceDetectionConfig(min_pixels=40, return_original_footprints=True)).run(
        Exposure.from_arrays(img, variance=var), sigma=1.8)
    kept = [fp for fp in small.footprints if fp.area >= 40]
    assert 0 < big.num_pos == len(kept) < small.num_pos
    assert all(np.array_equal(a.spans, b.spans) and np.array_equal(a.peaks[["i_x", "i_y", "peak_value"]],
                                                                     b.peaks[["i_x", "i_y", "peak_value"]])
               for a, b in zip(big.footprints, kept))


def test_masked_invalid_pixels_and_errors():
    img, var = star_field(5)
    mi = MaskedImage(img.copy(), variance=var.copy())
    mi.image[10, 10] = np.nan
    with pytest.raises(ValueError, match=r"1 pixels have a non-finite value.*x=10, y=10"):
        detect_footprints(mi, 1.8)
    mi.mask.set("NO_DATA", where=~np.isfinite(mi.image))
    mi.variance[50, 50] = 0.0
    with pytest.raises(ValueError, match="non-positive variance"):
        detect_footprints(mi, 1.8)
    mi.mask.array[50, 50] |= mi.mask.get_plane_bitmask("BAD")
    ok, _ = detect_footprints(mi, 1.8)  # masked invalid pixels are treated as empty sky
    ref, _ = detect_footprints(MaskedImage(np.where(np.isfinite(img), img, 0).astype(np.float32), variance=var), 1.8)
    assert len(ok) > 0 and abs(len(ok) - len(ref)) <= 1
    with pytest.raises(ValueError, match="empty image"):
        detect_footprints(MaskedImage(np.zeros((0, 0), np.float32)), 1.8)
    with pytest.raises(ValueError, match="larger than the image"):
        detect_footprints(MaskedImage(np.zeros((9, 9), np.float32), variance=np.ones((9, 9), np.float32)), 2.0)
    all_bad = MaskedImage(np.full((20, 20), np.nan, np.float32))
    all_bad.mask.set("NO_DATA")
    with pytest.raises(ValueError, match="every pixel is masked invalid"):
        detect_footprints(all_bad, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        detect_footprints(MaskedImage(img, variance=var), 0.0)
    with pytest.raises(ValueError, match="no PSF"):
        SourceDetectionTask().run(Exposure.from_arrays(img, variance=var))
    with pytest.raises(ValidationError):
        SourceDetectionConfig(threshold_type="stdevs")
    with pytest.raises(ValidationError, match="isotropic"):
        SourceDetectionConfig(isotropic_grow=False)


def test_stdev_threshold_uses_clipped_noise():
    rng = np.random.default_rng(9)
    img = rng.normal(0, 2.0, size=(200, 200)).astype(np.float32)
    img[100, 100] += 400.0
    mi = MaskedImage(img, variance=np.full(img.shape, 4.0, np.float32))
    cfg = SourceDetectionConfig(threshold_type="stdev", return_original_footprints=True)
    pos, _ = detect_footprints(mi, 1.5, cfg)
    h = detection_kernel_half_width(1.5)
    k = gaussian_kernel(1.5, h)
    smoothed_noise = 2.0 * math.sqrt((k ** 2).sum() ** 2)
    assert len(pos) == 1
    assert pos.peaks["significance"][0] == pytest.approx(pos.peaks["peak_value"][0] / smoothed_noise, rel=0.05)


def test_psf_sigma_and_kernel_width():
    class Shape:
        determinant_radius = 1.7

    class P:
        def compute_shape(self, x, y):
            return (4.0, 9.0, 0.0)

    class Q:
        average_position = (5.0, 6.0)

        def compute_shape(self, x, y):
            assert (x, y) == (5.0, 6.0)
            return Shape()

    assert psf_sigma(P(), Box2I(0, 0, 9, 9)) == pytest.approx(6.0 ** 0.5)
    assert psf_sigma(Q()) == 1.7
    # LSST: width = 2 * int((7 sigma + 0.5) / 2) + 1
    assert [2 * detection_kernel_half_width(s) + 1 for s in (1.0, 1.5, 2.0, 2.2)] == [7, 11, 15, 15]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(1.0, 2.5))
def test_property_detected_pixels_are_above_threshold(seed, sigma):
    img, var = star_field(seed, shape=(50, 60), n_stars=6, sigma=sigma)
    labels, peaks, _ = reference_detection(img, var, sigma)
    pos, _ = detect_footprints(MaskedImage(img, variance=var), sigma,
                               SourceDetectionConfig(return_original_footprints=True))
    assert len(pos) == labels.max()
    union = np.zeros(img.shape, bool)
    for fp in pos:
        union |= fp.to_array(Box2I.from_shape(img.shape))
    assert np.array_equal(union, labels > 0)
    assert sum(len(p) for p in peaks) == len(pos.peaks)


def test_result_pickles():
    img, var = star_field(6)
    res = SourceDetectionTask().run(Exposure.from_arrays(img, variance=var), sigma=1.8)
    back = pickle.loads(pickle.dumps(res))
    assert back.positive == res.positive and back.footprints == res.footprints
    assert isinstance(res.footprints[0], Footprint)


def _whole_plane_footprints(img, var, kernel, noise, value, pol, include, min_pixels):
    """The general path: the whole smoothed planes, then thresholding (what the band pass replaces)."""
    from visitcal import _core

    h = len(kernel) // 2
    s = _core.convolve_separable(img, kernel, kernel)
    nv = {"smoothed_variance": lambda: _core.convolve_separable(var, kernel * kernel, kernel * kernel),
          "variance": lambda: var, "constant": lambda: None}[noise]()
    return _core.find_footprints(s, nv, h, h, value, pol, include, min_pixels, 1.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), dtype=st.sampled_from([np.float32, np.float64]),
       noise=st.sampled_from(["smoothed_variance", "variance", "constant"]),
       band_rows=st.sampled_from([1, 2, 3, 5, 17, 64, 10_000]),
       ny=st.integers(15, 70), nx=st.integers(15, 60), sigma=st.floats(0.8, 2.2),
       include=st.sampled_from([1.0, 1.5]), min_pixels=st.sampled_from([1, 4]), plateau=st.booleans())
def test_band_pass_equals_whole_plane_detection_bit_for_bit(seed, dtype, noise, band_rows, ny, nx, sigma, include,
                                                            min_pixels, plateau):
    """find_footprints_smoothed (smoothing in bands of rows, both polarities in one pass) gives exactly
    the spans, peaks, values and significances of whole-plane smoothing plus find_footprints, for any
    band height (band edges fall on footprints, peaks and plateaus), dtype and noise model."""
    from visitcal import _core
    from visitcal.detection.convolve import gaussian_kernel_1d

    img, var = star_field(seed, shape=(ny, nx), n_stars=8, sigma=1.5)
    img = img - np.float32(0.5) * star_field(seed + 1, shape=(ny, nx), n_stars=4, sigma=1.5)[0]
    if plateau:  # flat tops: ties between neighbours, resolved in raster order
        img = np.minimum(img, np.float32(np.percentile(img, 97)))
    img, var = img.astype(dtype), var.astype(dtype)
    h = min(detection_kernel_half_width(sigma), (min(ny, nx) - 1) // 2)
    kernel = gaussian_kernel_1d(sigma, h)
    value = 3.0 if noise != "constant" else 20.0
    got = _core.find_footprints_smoothed(img, var, kernel, noise, value, [1, -1], include, min_pixels, 1.0,
                                         band_rows=band_rows)
    assert len(got) == 2
    for pol, result in zip((1, -1), got):
        want = _whole_plane_footprints(img, var, kernel, noise, value, pol, include, min_pixels)
        for a, b in zip(result, want):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_band_pass_finds_the_sources_and_rejects_bad_arguments():
    from visitcal import _core
    from visitcal.detection.convolve import gaussian_kernel_1d

    img, var = star_field(3, shape=(90, 80))
    k = gaussian_kernel_1d(1.8, 6)
    (pos,) = _core.find_footprints_smoothed(img, var, k, "smoothed_variance", 5.0, [1], 1.0, 1, 1.0, band_rows=7)
    assert len(pos[1]) - 1 > 5  # footprints found, as many as the whole-plane path
    assert np.array_equal(pos[0], _whole_plane_footprints(img, var, k, "smoothed_variance", 5.0, 1, 1.0, 1)[0])
    with pytest.raises(ValueError, match="noise must be"):
        _core.find_footprints_smoothed(img, var, k, "sky", 5.0, [1], 1.0, 1, 1.0)
    with pytest.raises(ValueError, match="band_rows"):
        _core.find_footprints_smoothed(img, var, k, "constant", 5.0, [1], 1.0, 1, 1.0, band_rows=0)
    with pytest.raises(ValueError, match="polarity"):
        _core.find_footprints_smoothed(img, var, k, "constant", 5.0, [2], 1.0, 1, 1.0)
    with pytest.raises(ValueError, match="odd"):
        _core.find_footprints_smoothed(img, var, k[:-1], "constant", 5.0, [1], 1.0, 1, 1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        _core.find_footprints_smoothed(img, var[:-1], k, "variance", 5.0, [1], 1.0, 1, 1.0)
    bad = img.copy()
    bad[40, 30] = np.nan
    with pytest.raises(ValueError, match=r"non-finite pixel.*\(y, x\) = \(40, 30\)"):
        _core.find_footprints_smoothed(bad, var, k, "smoothed_variance", 5.0, [1], 1.0, 1, 1.0, band_rows=8)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), ny=st.integers(1, 60), nx=st.integers(1, 60), density=st.floats(0.05, 0.7))
def test_mask_footprints_equal_thresholding_the_plane(seed, ny, nx, density):
    """find_mask_footprints (the regions of a mask plane, straight from its bits) has the spans and offsets of
    find_footprints on the plane as a 0/1 float image (what finalize did), and ignores the other bits."""
    from visitcal import _core

    rng = np.random.default_rng(seed)
    plane = rng.random((ny, nx)) < density
    mask = (plane.astype(np.int32) << 5) | (rng.integers(0, 2, (ny, nx), dtype=np.int32) << 3)
    got = _core.find_mask_footprints(mask, 1 << 5)
    want = _core.find_footprints(plane.astype(np.float32), None, 0, 0, 0.5, 1, 1.0, 1, 1.0)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert len(got[2]) == 0 and np.array_equal(got[5], np.zeros(len(want[1]), np.int64))
    assert len(got[1]) - 1 == ndimage.label(plane, structure=EIGHT)[1]
