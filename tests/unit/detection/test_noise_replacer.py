"""Noise replacement (lsst-spec §2.9): the C++ NoiseReplacer against a numpy reference of the same
noise stream, exact restoration of the image, and the clipped statistics against numpy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from visitcal import _core
from visitcal.core.footprint import Footprint, FootprintSet, HeavyFootprint
from visitcal.core.image import MaskedImage
from visitcal.detection.noise_replacer import (
    NoiseReplacer,
    NoiseReplacerConfig,
    noise_seed,
    noise_statistics,
)

# ---------------------------------------------------------------------------------------------------
# numpy references


def reference_normals(seed: int, n: int) -> np.ndarray:
    """The documented stream: std::mt19937(seed) (numpy's legacy RandomState seeding is the same
    init_genrand), 53-bit uniforms from two draws, Marsaglia polar pairs (v1 first)."""
    out = np.zeros(0)
    m = 4 * n + 64
    while len(out) < n:
        raw = np.random.RandomState(seed).randint(0, 2**32, size=m, dtype=np.uint32).astype(np.float64)
        a, b = np.floor(raw[0::2] / 32), np.floor(raw[1::2] / 64)
        v = 2 * ((a * 67108864.0 + b) / 9007199254740992.0) - 1
        v1, v2 = v[0::2], v[1::2]
        s = v1 * v1 + v2 * v2
        ok = (s < 1) & (s > 0)
        f = np.sqrt(-2 * np.log(s[ok]) / s[ok])
        out = np.stack([v1[ok] * f, v2[ok] * f], 1).ravel()
        m *= 2
    return out[:n]


def reference_clipped(values: np.ndarray, n_sigma: float = 3.0, n_iter: int = 3) -> tuple[float, float]:
    """afw MEANCLIP / STDEVCLIP as numpy: median and 0.7413 IQR, then n_iter clipped passes (the
    unbiased sigma is NaN for one pixel, and an empty window stops the passes)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    center, hw = q50, n_sigma * 0.7413011092528009 * (q75 - q25)
    std, passes = np.nan, 0
    for _ in range(n_iter):
        keep = v[(v >= center - hw) & (v <= center + hw)]
        if keep.size == 0:
            break
        center = keep.mean()
        std = keep.std(ddof=1) if keep.size > 1 else np.nan
        hw = n_sigma * std if np.isfinite(std) else 0.0
        passes += 1
    if passes == 0:
        std = 0.7413011092528009 * (q75 - q25)
    return center, std


def reference_replace(image: np.ndarray, footprints, mean: float, sigma: float, seed: int, xy0=(0, 0)) -> np.ndarray:
    """The noisy image: noise in footprint, span, x order; a pixel keeps its first footprint's value."""
    out = image.copy()
    n = sum(fp.area for fp in footprints)
    z = reference_normals(seed, n)
    done = np.zeros(image.shape, dtype=bool)
    p = 0
    for fp in footprints:
        y, x = fp.indices()
        y, x = y - xy0[1], x - xy0[0]
        vals = (mean + sigma * z[p:p + len(y)]).astype(np.float32)
        p += len(y)
        new = ~done[y, x]
        out[y[new], x[new]] = vals[new]
        done[y, x] = True
    return out


# ---------------------------------------------------------------------------------------------------
# fixtures


def blob_image(seed=3, shape=(160, 200), n_src=12, sky=100.0, noise=5.0):
    """A sky with Gaussian blobs, their circular footprints (disjoint), and a mask/variance to check."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    img = rng.normal(sky, noise, shape).astype(np.float32)
    yy, xx = np.mgrid[:ny, :nx]
    centres = []
    while len(centres) < n_src:
        c = rng.uniform([12, 12], [nx - 12, ny - 12])
        if all(np.hypot(*(c - d)) > 22 for d in centres):
            centres.append(c)
    fps = []
    for cx, cy in centres:
        img += (2000 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.0**2))).astype(np.float32)
        fps.append(Footprint(np.array([[int(cy), int(cx), int(cx)]])).dilated(9))
    mask = rng.integers(0, 4, shape).astype(np.int32)
    var = np.full(shape, noise**2, np.float32)
    return MaskedImage(img, mask, var), fps


# ---------------------------------------------------------------------------------------------------
# the Gaussian stream


def test_portable_log_matches_numpy_to_two_ulp():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(1e-12, 1, 20000), 10 ** rng.uniform(-300, 300, 5000), [1.0, 0.5, 2.0, 1e-310]])
    got, want = _core.portable_log(x), np.log(x)
    ulp = np.abs(got - want) / np.spacing(np.abs(want) + 1e-300)
    assert ulp.max() <= 2
    assert _core.portable_log(np.array([1.0]))[0] == 0.0


@pytest.mark.parametrize("seed", [1, 5489, 123456789, 2**32 - 1])
def test_portable_normal_is_the_documented_stream(seed):
    z = _core.portable_normal(seed, 20000)
    np.testing.assert_allclose(z, reference_normals(seed, 20000), rtol=0, atol=4e-15)


def test_portable_normal_moments_and_large_seeds():
    z = _core.portable_normal(1, 400000)
    # mean 0 +- 1/sqrt(n) ~ 0.0016; variance 1 +- sqrt(2/n) ~ 0.0022; 5 sigma bounds
    assert abs(z.mean()) < 0.008 and abs(z.var() - 1) < 0.011
    assert abs(np.mean(z**3)) < 0.02 and abs(np.mean(z**4) - 3) < 0.05
    a, b = _core.portable_normal(2**40 + 1, 100), _core.portable_normal(2**40 + 2, 100)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, _core.portable_normal(2**40 + 1, 100))


# ---------------------------------------------------------------------------------------------------
# clipped statistics


def test_clipped_stats_match_numpy_reference_with_outliers_and_nans():
    rng = np.random.default_rng(7)
    v = rng.normal(50.0, 3.0, (300, 310)).astype(np.float32)
    idx = rng.integers(0, v.size, 4000)
    v.flat[idx] = rng.uniform(100, 1e4, idx.size)  # sources
    v.flat[rng.integers(0, v.size, 50)] = np.nan
    mean, std = noise_statistics(v)
    want_mean, want_std = reference_clipped(v)
    assert mean == pytest.approx(want_mean, rel=1e-12)
    assert std == pytest.approx(want_std, rel=1e-10)
    # the truth the clipping recovers (3-sigma clipping of a Gaussian shrinks sigma by ~1.5%)
    assert mean == pytest.approx(50.0, abs=0.05) and std == pytest.approx(3.0 * 0.9865, rel=0.02)


@pytest.mark.parametrize("step", [2, 3])
def test_clipped_stats_on_a_sample_lattice(step):
    """sample_step uses the pixels with x and y multiples of the step, and lands on the full-image truth."""
    rng = np.random.default_rng(5)
    v = rng.normal(10.0, 2.0, (301, 297)).astype(np.float32)
    idx = rng.integers(0, v.size, 3000)
    v.flat[idx] = rng.uniform(100, 1e4, idx.size)
    mi, _ = blob_image()
    mean, std = noise_statistics(v, sample_step=step)
    assert (mean, std) == pytest.approx(reference_clipped(v[::step, ::step]), rel=1e-12)
    assert (mean, std) == pytest.approx(reference_clipped(v), rel=0.01)
    mi.mask.array[:] = 0
    mi.mask.array[:40] |= mi.mask.get_plane_bitmask("SAT")
    got = noise_statistics(mi, ignored_mask_planes=("SAT",), sample_step=step)
    lattice = mi.image[::step, ::step][(mi.mask.array[::step, ::step] & mi.mask.get_plane_bitmask("SAT")) == 0]
    assert got == pytest.approx(reference_clipped(lattice), rel=1e-12)
    with pytest.raises(ValueError, match="sample_step"):
        noise_statistics(v, sample_step=0)


def test_clipped_mean_agrees_with_background_meanclip():
    """Two implementations of afw's MEANCLIP in the core: the noise replacer's and the background's."""
    rng = np.random.default_rng(11)
    v = np.concatenate([rng.normal(-2.0, 1.5, 50000), rng.uniform(5, 100, 2000)]).astype(np.float32)
    ctrl = _core.BackgroundControl()
    ctrl.statistic = 0  # MEANCLIP
    bg_mean, bg_var_of_mean = _core.bin_statistic(v, ctrl)
    mean, std, n_used, n_clip = _core.clipped_mean_stdev(v.reshape(1, -1), None, 0)
    assert n_used == v.size
    assert mean == pytest.approx(bg_mean, rel=1e-12, abs=1e-12)
    assert std**2 / n_clip == pytest.approx(bg_var_of_mean, rel=1e-9)


def test_clipped_stats_mask_planes_exclude_pixels():
    mi, _ = blob_image()
    mi.mask.array[:] = 0
    mi.image[:40] = 1e6  # a saturated band...
    mi.mask.array[:40] |= mi.mask.get_plane_bitmask("SAT")
    mean, std = noise_statistics(mi, ignored_mask_planes=("SAT",))
    want = reference_clipped(mi.image[40:])
    assert (mean, std) == pytest.approx(want, rel=1e-12)
    mean_all, _ = noise_statistics(mi)  # LSST's choice: no mask, the clipping has to cope
    assert mean_all == pytest.approx(reference_clipped(mi.image)[0], rel=1e-12)


def test_clipped_stats_no_usable_pixel_is_nan_and_bad_arguments():
    assert all(np.isnan(noise_statistics(np.full((4, 4), np.nan, np.float32))))
    with pytest.raises(ValueError, match="n_iter"):
        noise_statistics(np.zeros((4, 4), np.float32), n_iter=-1)
    with pytest.raises(ValueError, match="2-D"):
        noise_statistics(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="bare array"):
        noise_statistics(np.zeros((4, 4), np.float32), ignored_mask_planes=("BAD",))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=60), st.integers(0, 4))
def test_clipped_stats_property_vs_numpy(values, n_iter):
    v = np.array(values, dtype=np.float32).reshape(1, -1)
    mean, std, _, _ = _core.clipped_mean_stdev(v, None, 0, 3.0, n_iter)
    want_mean, want_std = reference_clipped(v, 3.0, n_iter)
    assert mean == pytest.approx(want_mean, rel=1e-9, abs=1e-9)
    assert std == pytest.approx(want_std, rel=1e-7, abs=1e-7, nan_ok=True)


# ---------------------------------------------------------------------------------------------------
# the replacer


def test_replaced_pixels_are_the_reference_noise_and_end_restores_bytes():
    mi, fps = blob_image()
    original = mi.image.copy()
    mask0, var0 = mi.mask.array.copy(), mi.variance.copy()
    nr = NoiseReplacer(mi, fps, exposure_id=17)
    assert nr.seed == 17
    mean, std = noise_statistics(original)
    assert (nr.noise_mean, nr.noise_std) == (mean, std)
    want = reference_replace(original, fps, mean, std, 17)
    np.testing.assert_array_max_ulp(mi.image, want, maxulp=1)
    inside = np.zeros(mi.shape, bool)
    for fp in fps:
        inside |= fp.to_array(mi.bbox)
    np.testing.assert_array_equal(mi.image[~inside], original[~inside])
    nr.end()
    assert mi.image.tobytes() == original.tobytes()
    assert mi.mask.array.tobytes() == mask0.tobytes() and mi.variance.tobytes() == var0.tobytes()
    nr.end()  # idempotent
    assert mi.image.tobytes() == original.tobytes()


def test_noise_has_the_requested_mean_and_sigma():
    shape = (400, 400)
    mi = MaskedImage(np.zeros(shape, np.float32))
    fps = [Footprint(np.array([[y, 0, 399] for y in range(y0, y0 + 50)])) for y0 in range(0, 400, 50)]
    with NoiseReplacer(mi, fps, noise_mean_var=(12.5, 4.0**2)) as nr:
        v = mi.image.astype(np.float64)
        # n = 160000: mean 12.5 +- 0.01, sigma 4 +- 0.007 (1 sigma); 5 sigma bounds
        assert v.mean() == pytest.approx(12.5, abs=0.05)
        assert v.std() == pytest.approx(4.0, abs=0.035)
        assert nr.noise_mean == 12.5 and nr.noise_std == 4.0
    assert not mi.image.any()


def test_same_seed_same_bytes_different_seed_different():
    mi, fps = blob_image()
    orig = mi.image.copy()
    out = []
    for eid in (5, 5, 6, None):
        with NoiseReplacer(mi, fps, exposure_id=eid):
            out.append(mi.image.tobytes())
        assert mi.image.tobytes() == orig.tobytes()
    assert out[0] == out[1] and out[0] != out[2] and out[0] != out[3]
    with NoiseReplacer(mi, fps):
        assert mi.image.tobytes() == out[3]  # no id: seed = multiplier = 1


def test_insert_and_remove_touch_exactly_one_footprint():
    mi, fps = blob_image()
    orig = mi.image.copy()
    with NoiseReplacer(mi, FootprintSet.from_footprints(fps, mi.bbox)) as nr:
        noisy = mi.image.copy()
        for k in (0, 5, len(fps) - 1):
            nr.insert_source(k)
            m = fps[k].to_array(mi.bbox)
            np.testing.assert_array_equal(mi.image[m], orig[m])
            np.testing.assert_array_equal(mi.image[~m], noisy[~m])
            y, x = fps[k].indices()
            np.testing.assert_array_equal(nr.noise_values(k), noisy[y, x])
            nr.remove_source(k)
            assert mi.image.tobytes() == noisy.tobytes()
        with pytest.raises(IndexError):
            nr.insert_source(len(fps))
    assert mi.image.tobytes() == orig.tobytes()
    with pytest.raises(RuntimeError, match="after end"):
        nr.insert_source(0)


def test_overlapping_footprints_keep_one_noise_plane():
    mi, fps = blob_image(n_src=4)
    a = fps[0]
    b = Footprint(a.spans + np.array([3, 4, 4], np.int32))  # overlaps a
    c = a.dilated(2)  # contains a
    fps = [a, b, c] + fps[1:]
    orig = mi.image.copy()
    with NoiseReplacer(mi, fps, exposure_id=3) as nr:
        noisy = mi.image.copy()
        np.testing.assert_array_max_ulp(noisy, reference_replace(orig, fps, nr.noise_mean, nr.noise_std, 3), maxulp=1)
        for k in (0, 1, 2):
            nr.insert_source(k)
            m = fps[k].to_array(mi.bbox)
            np.testing.assert_array_equal(mi.image[m], orig[m])
            nr.remove_source(k)
            assert mi.image.tobytes() == noisy.tobytes()
        nr.insert_source(2)
        nr.insert_source(1)
        nr.remove_source(1)  # b's noise back, including under the still-inserted c: same plane
        nr.remove_source(2)
        assert mi.image.tobytes() == noisy.tobytes()
    assert mi.image.tobytes() == orig.tobytes()


def test_heavy_children_insert_and_remove():
    mi, fps = blob_image()
    orig = mi.image.copy()
    parent = fps[2]
    y, x = parent.indices()
    keep = (x + y) % 3 != 0  # a ragged child inside the parent
    child = Footprint.from_mask(parent.to_array(mi.bbox) & ((np.indices(mi.shape).sum(0) % 3) != 0))
    assert np.all(parent.contains(*child.indices()[::-1]))
    assert keep.sum() == child.area
    cy, cx = child.indices()
    values = (0.5 * orig[cy, cx]).astype(np.float32)
    heavy = HeavyFootprint(child, values)
    with NoiseReplacer(mi, fps) as nr:
        noisy = mi.image.copy()
        nr.insert_heavy(heavy)
        np.testing.assert_array_equal(mi.image[cy, cx], values)
        other = np.ones(mi.shape, bool)
        other[cy, cx] = False
        np.testing.assert_array_equal(mi.image[other], noisy[other])
        nr.remove_heavy(child)
        assert mi.image.tobytes() == noisy.tobytes()
        # a child leaving the replaced pixels is refused and nothing is written
        outside = Footprint(np.array([[0, 0, 199]]))
        with pytest.raises(ValueError, match="leaves the replaced footprints"):
            nr.insert_heavy(HeavyFootprint(outside, np.zeros(200, np.float32)))
        with pytest.raises(ValueError, match="leaves the replaced footprints"):
            nr.remove_heavy(outside)
        assert mi.image.tobytes() == noisy.tobytes()
    assert mi.image.tobytes() == orig.tobytes()


def test_subimage_origin_and_errors_leave_the_image_untouched():
    mi, fps = blob_image()
    x0, y0 = 1000, -50
    sub = MaskedImage(mi.image.copy(), xy0=(x0, y0))
    shifted = [Footprint(fp.spans + np.array([y0, x0, x0], np.int32)) for fp in fps]
    with (NoiseReplacer(sub, shifted, exposure_id=9) as nr,
          NoiseReplacer(mi, fps, exposure_id=9, noise_mean_var=(nr.noise_mean, nr.noise_std**2))):
        assert sub.image.tobytes() == mi.image.tobytes()
    before = sub.image.copy()
    bad = shifted + [Footprint(np.array([[y0 - 1, x0, x0 + 3]]))]
    with pytest.raises(ValueError, match="outside the image"):
        NoiseReplacer(sub, bad)
    assert sub.image.tobytes() == before.tobytes()
    with pytest.raises(ValueError, match="not finite"):
        NoiseReplacer(MaskedImage(np.full((5, 5), np.nan)), [])
    with pytest.raises(ValueError, match="writeable float32"):
        ro = MaskedImage(np.zeros((5, 5), np.float32))
        ro.image.setflags(write=False)
        NoiseReplacer(ro, [])


def test_context_manager_restores_after_an_exception():
    mi, fps = blob_image()
    orig = mi.image.copy()
    with pytest.raises(ZeroDivisionError), NoiseReplacer(mi, fps) as nr:
        nr.insert_source(1)
        1 / 0  # noqa: B018
    assert mi.image.tobytes() == orig.tobytes()


def test_nan_pixels_inside_footprints_are_restored():
    mi, fps = blob_image()
    y, x = fps[0].indices()
    mi.image[y[:5], x[:5]] = np.nan
    orig = mi.image.copy()
    with NoiseReplacer(mi, fps):
        assert np.all(np.isfinite(mi.image[y, x]))
    assert mi.image.tobytes() == orig.tobytes()


def test_config_defaults_seed_and_pickling():
    c = NoiseReplacerConfig()
    assert (c.noise_source, c.noise_offset, c.noise_seed_multiplier) == ("measure", 0.0, 1)
    assert pickle.loads(pickle.dumps(c)) == c
    with pytest.raises(ValueError):
        NoiseReplacerConfig(noise_source="meta")
    with pytest.raises(ValueError):
        NoiseReplacerConfig(bogus=1)
    assert noise_seed(None) == 1 and noise_seed(0) == 1 and noise_seed(42) == 42
    assert noise_seed(42, NoiseReplacerConfig(noise_seed_multiplier=3)) == 126
    mi, fps = blob_image()
    offset = NoiseReplacerConfig(noise_offset=2.5)
    measured = noise_statistics(mi)[0]
    with NoiseReplacer(mi, fps, config=offset) as nr:
        assert nr.noise_mean == measured + 2.5
        assert "NoiseReplacer(12 footprints" in repr(nr)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(nr)


def test_empty_footprint_list_is_a_no_op():
    mi, _ = blob_image()
    orig = mi.image.copy()
    with NoiseReplacer(mi, []) as nr:
        assert len(nr) == 0
        assert mi.image.tobytes() == orig.tobytes()
