"""Convolution kernels (separable, direct, FFT) against scipy and brute force.

Tolerances: float32 results within 1e-5 of the reference's largest |value| (float32 arithmetic in
the kernels; measured ~2e-7), float64 within 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as sig
from hypothesis import given, settings
from hypothesis import strategies as st
from visitcal import _core
from visitcal.detection.convolve import (
    Convolved,
    _method_costs,
    convolve,
    gaussian_kernel_1d,
    gaussian_smooth,
)

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _inner(a, hx, hy):
    return a[hy:a.shape[0] - hy, hx:a.shape[1] - hx]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sigma", [0.7, 1.6, 3.3])
def test_gaussian_smoothing_matches_scipy_valid_region(dtype, sigma):
    rng = np.random.default_rng(1)
    image = rng.normal(100, 10, (97, 131)).astype(dtype)
    result = gaussian_smooth(image, sigma)
    k = gaussian_kernel_1d(sigma)
    h = k.size // 2
    expected = sig.convolve(image.astype(np.float64), np.outer(k, k), mode="valid")
    assert result.image.dtype == dtype and result.border == (h, h)
    np.testing.assert_allclose(_inner(result.image, h, h), expected, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert np.all(result.image[result.edge_mask()] == 0)
    # scipy.ndimage's Gaussian uses the same sampled, normalised kernel (truncate=4)
    nd = ndi.gaussian_filter(image.astype(np.float64), sigma, truncate=h / sigma, mode="constant")
    np.testing.assert_allclose(_inner(result.image, h, h), _inner(nd, h, h), rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(0, 5), st.sampled_from([np.float32, np.float64]))
def test_direct_convolution_matches_scipy_signal(seed, hy, hx, dtype):
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(2 * hy + 1, 2 * hx + 1))
    image = rng.normal(size=(2 * hy + 1 + rng.integers(0, 30), 2 * hx + 1 + rng.integers(0, 30))).astype(dtype)
    result = convolve(image, kernel)
    expected = sig.convolve(image.astype(np.float64), kernel, mode="valid")
    got = _inner(result.image, hx, hy)
    scale = np.abs(kernel).sum() * np.abs(image).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=(1e-5 if dtype == np.float32 else 1e-12) * scale)


def test_variance_propagation_matches_brute_force():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(40, 50))
    variance = rng.uniform(0.5, 4.0, size=(40, 50))
    kernel = rng.normal(size=(5, 7))
    result = convolve(image, kernel, variance=variance)
    # brute force: var(sum w_k x_k) = sum w_k^2 var_k, pixel by pixel with explicit loops
    y, x = 20, 30
    brute = sum(kernel[j, i] ** 2 * variance[y + 2 - j, x + 3 - i] for j in range(5) for i in range(7))
    assert result.variance[y, x] == pytest.approx(brute, rel=1e-12)
    smooth = gaussian_smooth(image, 1.3, variance=variance)
    k = gaussian_kernel_1d(1.3)
    h = k.size // 2
    kk = np.outer(k, k)
    brute = sum(kk[j, i] ** 2 * variance[y + h - j, x + h - i] for j in range(k.size) for i in range(k.size))
    assert smooth.variance[y, x] == pytest.approx(brute, rel=1e-12)
    # and statistically: smoothing white noise of unit variance gives sum(k^2)^2 per pixel
    noise = rng.normal(size=(600, 600))
    s = gaussian_smooth(noise, 1.3, variance=np.ones_like(noise))
    assert np.var(_inner(s.image, h, h)) == pytest.approx(s.variance[300, 300], rel=0.05)


def test_bad_input_gets_clear_errors():
    image = np.ones((20, 20))
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"image: 1 non-finite pixel\(s\), the first at \(y, x\) = \(3, 4\)"):
        gaussian_smooth(image, 1.0)
    with pytest.raises(ValueError, match="larger than the image"):
        convolve(np.ones((5, 5)), np.ones((7, 3)))
    with pytest.raises(ValueError, match="odd"):
        convolve(np.ones((9, 9)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="2-D"):
        gaussian_smooth(np.ones(10), 1.0)
    with pytest.raises(ValueError, match="negative"):
        gaussian_smooth(np.ones((20, 20)), 1.0, variance=-np.ones((20, 20)))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_smooth(np.ones((20, 20)), 0.0)


def test_strided_views_and_integer_input():
    rng = np.random.default_rng(3)
    big = rng.normal(size=(60, 80)).astype(np.float32)
    view = big[5:50, 7:70]          # row stride of the parent, x contiguous: no copy needed
    a = gaussian_smooth(view, 1.1).image
    b = gaussian_smooth(np.ascontiguousarray(view), 1.1).image
    np.testing.assert_array_equal(a, b)
    ints = np.arange(30 * 40).reshape(30, 40)
    np.testing.assert_allclose(gaussian_smooth(ints, 1.0).image[10, 10], 10 * 40 + 10, rtol=1e-12)


def _check_close(got, expected, dtype):
    scale = np.abs(expected).max()
    assert scale > 0
    assert np.abs(got - expected).max() <= TOL[dtype] * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "kshape"), [
    ((300, 257), (41, 41)),    # detector-like kernel, image not a multiple of the tile
    ((131, 97), (9, 23)),      # odd, non-square kernel
    ((45, 29), (43, 27)),      # image just bigger than the kernel
    ((41, 41), (41, 41)),      # a single valid pixel
    ((70, 500), (1, 15)),      # a row kernel
    ((520, 33), (31, 1)),      # a column kernel, tall image
])
def test_fft_matches_scipy(dtype, shape, kshape):
    rng = np.random.default_rng(sum(shape) + sum(kshape))
    image = rng.normal(50, 10, shape).astype(dtype)
    kernel = rng.normal(size=kshape)
    result = convolve(image, kernel, method="fft")
    hy, hx = kshape[0] // 2, kshape[1] // 2
    assert result.method == "fft" and result.border == (hx, hy) and result.image.dtype == dtype
    expected = sig.convolve(image.astype(np.float64), kernel, mode="valid")
    _check_close(_inner(result.image, hx, hy), expected, dtype)
    assert np.all(result.image[result.edge_mask()] == 0)
    # and scipy.ndimage.convolve (the same convolution, reflected border) on the valid region
    nd = ndi.convolve(image.astype(np.float64), kernel, mode="constant")
    _check_close(_inner(result.image, hx, hy), _inner(nd, hx, hy), dtype)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 12), st.integers(0, 12), st.sampled_from([np.float32, np.float64]),
       st.sampled_from([0, 16, 32, 64]))
def test_fft_equals_direct_on_random_data(seed, hy, hx, dtype, tile):
    rng = np.random.default_rng(seed)
    kshape = (2 * hy + 1, 2 * hx + 1)
    tile = tile if tile >= max(kshape) else 0  # forced tile sizes exercise many tiles and edge tiles
    image = rng.normal(size=(kshape[0] + rng.integers(0, 90), kshape[1] + rng.integers(0, 90))).astype(dtype)
    kernel = rng.normal(size=kshape)
    fft = _core.convolve_fft(image, kernel, tile)
    direct = convolve(image, kernel, method="direct").image
    expected = sig.convolve(image.astype(np.float64), kernel, mode="valid")
    _check_close(_inner(fft, hx, hy), expected, dtype)
    _check_close(_inner(direct, hx, hy), expected, dtype)
    assert np.all(fft[convolve(image, kernel, method="direct").edge_mask()] == 0)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_variance_propagation_brute_force_both_methods(method):
    rng = np.random.default_rng(5)
    image = rng.normal(size=(80, 70))
    variance = rng.uniform(0.5, 4.0, size=(80, 70))
    kernel = rng.normal(size=(15, 9))
    result = convolve(image, kernel, variance=variance, method=method)
    assert result.method == method
    for y, x in [(7, 4), (40, 33), (72, 65)]:
        brute = sum(kernel[j, i] ** 2 * variance[y + 7 - j, x + 4 - i] for j in range(15) for i in range(9))
        assert result.variance[y, x] == pytest.approx(brute, rel=1e-12)
    v32 = convolve(image.astype(np.float32), kernel, variance=variance.astype(np.float32), method=method)
    _check_close(_inner(v32.variance, 4, 7), _inner(result.variance, 4, 7), np.float32)


def test_auto_choice_follows_the_measured_crossover():
    detector = (4072, 4000)
    # documented crossover: direct up to 11 x 11, FFT from 13 x 13 (convolve's docstring)
    for side in (3, 5, 7, 9, 11):
        costs = _method_costs(detector, (side, side))
        assert costs["direct"] < costs["fft"], side
    for side in (13, 15, 21, 41, 81):
        costs = _method_costs(detector, (side, side))
        assert costs["fft"] < costs["direct"], side
    assert _core.fft_tile_size(*detector, 41, 41) == 256
    rng = np.random.default_rng(6)
    image = rng.normal(size=(400, 380)).astype(np.float32)
    small, big = rng.normal(size=(5, 3)), rng.normal(size=(41, 41))
    assert convolve(image, small).method == "direct"
    auto = convolve(image, big)
    assert auto.method == "fft"
    np.testing.assert_array_equal(auto.image, convolve(image, big, method="fft").image)
    # a rank-1 kernel goes to the separable path, with the same result to rounding
    outer = np.outer(gaussian_kernel_1d(1.5), rng.uniform(0.5, 1.0, 9))
    sep = convolve(image, outer, variance=np.ones_like(image))
    assert sep.method == "separable"
    direct = convolve(image, outer, variance=np.ones_like(image), method="direct")
    _check_close(sep.image, direct.image, np.float32)
    _check_close(sep.variance, direct.variance, np.float32)


@pytest.mark.parametrize("method", ["auto", "direct", "fft"])
def test_convolve_bad_input(method):
    with pytest.raises(ValueError, match="larger than the image"):
        convolve(np.ones((20, 30)), np.ones((21, 3)), method=method)
    with pytest.raises(ValueError, match="larger than the image"):
        convolve(np.ones((0, 0)), np.ones((1, 1)), method=method)
    with pytest.raises(ValueError, match="odd"):
        convolve(np.ones((20, 30)), np.ones((3, 4)), method=method)
    with pytest.raises(ValueError, match="kernel: non-finite"):
        convolve(np.ones((20, 30)), np.full((3, 3), np.inf), method=method)
    with pytest.raises(ValueError, match="method"):
        convolve(np.ones((20, 30)), np.ones((3, 3)), method="fast")


@pytest.mark.parametrize("method", ["direct", "fft", "separable"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [[(0, 0)], [(19, 29)], [(7, 12), (19, 0)]])
def test_non_finite_pixels_are_named(method, bad, where):
    # the detection runs on the outputs: corner pixels reach only one valid output, and zero
    # weights must still see them (NaN * 0 is NaN)
    for dtype in (np.float32, np.float64):
        image = np.ones((20, 30), dtype)
        for y, x in where:
            image[y, x] = bad
        first = min(where)
        pattern = rf"image: {len(where)} non-finite pixel\(s\), the first at \(y, x\) = \({first[0]}, {first[1]}\)"
        kernel = np.zeros((5, 7))
        kernel[2, 3] = 1.0
        with pytest.raises(ValueError, match=pattern):
            if method == "separable":
                gaussian_smooth(image, 1.0)
            else:
                convolve(image, kernel, method=method)
        variance = np.where(np.isfinite(image), 1.0, bad).astype(dtype)
        with pytest.raises(ValueError, match=rf"variance: {len(where)} non-finite"):
            if method == "separable":
                gaussian_smooth(np.ones_like(image), 1.0, variance=np.abs(variance))
            else:
                convolve(np.ones_like(image), kernel, variance=np.abs(variance), method=method)


def test_finite_overflow_is_not_reported_as_bad_input():
    image = np.full((10, 10), 3e38, np.float32)  # finite, but every 3 x 3 sum overflows float32
    for method in ("direct", "fft"):
        out = convolve(image, np.ones((3, 3)), method=method).image
        assert not np.isfinite(out[5, 5])
    assert np.isinf(convolve(image, np.ones((3, 3)) * 2).image[5, 5])  # rank 1: the separable path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simd_and_baseline_paths_are_bit_identical(dtype):
    rng = np.random.default_rng(7)
    image = rng.normal(size=(203, 301)).astype(dtype)  # widths exercise vector bodies and scalar tails
    k = gaussian_kernel_1d(1.9)
    kern = rng.normal(size=(7, 5))
    big = rng.normal(size=(25, 19))
    pairs = [
        (_core.convolve_separable(image, k, k), _core.convolve_separable(image, k, k, True)),
        (_core.convolve_separable(image, k[::-1] * np.arange(1, k.size + 1), k, False),
         _core.convolve_separable(image, k[::-1] * np.arange(1, k.size + 1), k, True)),
        (_core.convolve_direct(image, kern), _core.convolve_direct(image, kern, True)),
        (_core.convolve_fft(image, big, 64), _core.convolve_fft(image, big, 64, True)),
    ]
    for fast, base in pairs:
        assert fast.tobytes() == base.tobytes()
    # determinism: same input, same bytes
    assert _core.convolve_fft(image, big).tobytes() == _core.convolve_fft(image, big).tobytes()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["direct", "fft"]), st.floats(-3, 3), st.floats(-3, 3))
def test_property_linearity(seed, method, a, b):
    rng = np.random.default_rng(seed)
    kshape = tuple(2 * rng.integers(0, 6, 2) + 1)
    shape = (kshape[0] + rng.integers(0, 40), kshape[1] + rng.integers(0, 40))
    u, v = rng.normal(size=shape), rng.normal(size=shape)
    kernel = rng.normal(size=kshape)
    lhs = convolve(a * u + b * v, kernel, method=method).image
    rhs = a * convolve(u, kernel, method=method).image + b * convolve(v, kernel, method=method).image
    scale = (abs(a) + abs(b)) * np.abs(kernel).sum() * max(np.abs(u).max(), np.abs(v).max())
    # absolute floor: subnormal factors (hypothesis tries 5e-324) lose relative precision by definition
    assert np.abs(lhs - rhs).max() <= 1e-12 * scale + 1e-300


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["direct", "fft"]), st.sampled_from([np.float32, np.float64]))
def test_property_delta_reproduces_kernel_and_shifts_with_it(seed, method, dtype):
    rng = np.random.default_rng(seed)
    hy, hx = rng.integers(0, 6, 2)
    kernel = rng.normal(size=(2 * hy + 1, 2 * hx + 1))
    ny, nx = 4 * hy + 3 + rng.integers(0, 30), 4 * hx + 3 + rng.integers(0, 30)
    y0 = rng.integers(2 * hy, ny - 2 * hy)  # whole response inside the valid region
    x0 = rng.integers(2 * hx, nx - 2 * hx)
    image = np.zeros((ny, nx), dtype)
    image[y0, x0] = 1
    out = convolve(image, kernel, method=method).image
    patch = out[y0 - hy:y0 + hy + 1, x0 - hx:x0 + hx + 1]
    # convolution: out(y0 + j - hy, x0 + i - hx) = k(j, i), the kernel as stored; seen from the
    # delta's position (offsets d = hy - j) it is the flipped kernel, k(hy - d, ...)
    np.testing.assert_allclose(patch, kernel, rtol=0, atol=TOL[dtype] * np.abs(kernel).max())
    outside = out.copy()
    outside[y0 - hy:y0 + hy + 1, x0 - hx:x0 + hx + 1] = 0
    assert np.abs(outside).max() <= TOL[dtype] * np.abs(kernel).max()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["direct", "fft", "gauss"]))
def test_property_sum_conservation_in_the_interior(seed, method):
    rng = np.random.default_rng(seed)
    if method == "gauss":
        sigma = rng.uniform(0.5, 2.5)
        k1 = gaussian_kernel_1d(sigma)
        kernel = np.outer(k1, k1)
    else:
        kernel = rng.uniform(0, 1, size=tuple(2 * rng.integers(0, 5, 2) + 1))
    hy, hx = kernel.shape[0] // 2, kernel.shape[1] // 2
    ny, nx = 4 * hy + 2 + rng.integers(0, 30), 4 * hx + 2 + rng.integers(0, 30)
    image = np.zeros((ny, nx))
    image[2 * hy:ny - 2 * hy, 2 * hx:nx - 2 * hx] = rng.uniform(0, 10, (ny - 4 * hy, nx - 4 * hx))
    out = gaussian_smooth(image, sigma).image if method == "gauss" else convolve(image, kernel, method=method).image
    assert out.sum() == pytest.approx(image.sum() * kernel.sum(), rel=1e-12)


def test_fft_strided_view_and_pickle():
    import pickle

    rng = np.random.default_rng(8)
    big = rng.normal(size=(120, 140)).astype(np.float32)
    view = big[3:110, 5:131]
    kernel = rng.normal(size=(17, 13))
    a = convolve(view, kernel, method="fft")
    b = convolve(np.ascontiguousarray(view), kernel, method="fft")
    np.testing.assert_array_equal(a.image, b.image)
    c = pickle.loads(pickle.dumps(a))
    assert isinstance(c, Convolved) and c.method == "fft" and c.border == a.border
    np.testing.assert_array_equal(c.image, a.image)
