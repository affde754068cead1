"""Convolution kernels against scipy and brute force (issue 4, first part)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as sig
from hypothesis import given, settings
from hypothesis import strategies as st

from visitcal.convolve import convolve, gaussian_kernel_1d, gaussian_smooth


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
