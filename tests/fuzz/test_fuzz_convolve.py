"""Fuzz: visitcal.detection.convolve (gaussian_kernel_1d, gaussian_smooth, convolve).

References: the kernel against exp(-i^2 / 2 sigma^2) normalised; smoothing and convolution against
scipy.signal.convolve2d (mode "valid") in float64 on the interior, a zero border of the reported
width; non-finite pixels must raise ValueError.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from visitcal.detection.convolve import convolve, gaussian_kernel_1d, gaussian_smooth

from ._fuzz import FLOAT_DTYPES, arrays2d, call, fuzz, special_floats

signal = pytest.importorskip("scipy.signal")

sigmas = st.one_of(st.floats(0.3, 4.0), special_floats, st.sampled_from([1e6, 1e300, -1.0, 0.5, 1e-200]))
half_widths = st.one_of(st.none(), st.integers(0, 12),
                        st.sampled_from([-1, 46341, 2**31 - 1, 2**31, -2**31, 2**40]))


def _reference_kernel(sigma, h):
    i = np.arange(-h, h + 1, dtype=np.float64)
    with np.errstate(over="ignore"):
        k = np.exp(-0.5 * (i / sigma) ** 2)  # a delta for a subnormal sigma (sigma**2 underflows to 0)
    return k / k.sum()


def _tolerance(img_f64, out_dtype):
    scale = float(np.max(np.abs(img_f64))) if img_f64.size else 0.0
    return (1e-5 if out_dtype == np.float32 else 1e-11) * max(scale, 1e-30)


def _check_interior(out, img64, ker, border):
    hx, hy = border
    ny, nx = img64.shape
    ref = signal.convolve2d(img64, ker, mode="valid")
    got = np.asarray(out, np.float64)
    assert got.shape == img64.shape
    np.testing.assert_allclose(got[hy:ny - hy, hx:nx - hx], ref, rtol=0, atol=_tolerance(img64, out.dtype) *
                               max(1.0, float(np.abs(ker).sum())))
    inner = np.zeros(got.shape, bool)
    inner[hy:ny - hy, hx:nx - hx] = True
    assert np.all(got[~inner] == 0.0), "the border must be zero"


@fuzz(60)
@given(sigma=sigmas, half_width=half_widths)
def test_gaussian_kernel_1d(sigma, half_width):
    r = call(gaussian_kernel_1d, sigma, half_width)
    valid = math.isfinite(sigma) and 0 < sigma <= 4 and (
        half_width is None and sigma <= 4 or half_width is not None and 0 <= half_width <= 12)
    if valid:
        assert r.ok, r.error
        h = int(math.ceil(4 * sigma)) if half_width is None else half_width
        np.testing.assert_allclose(r.value, _reference_kernel(sigma, h), rtol=1e-12, atol=1e-300)
    elif not (math.isfinite(sigma) and sigma > 0):
        assert not r.ok, f"sigma={sigma} accepted"


@fuzz(60)
@given(image=arrays2d(max_side=40), sigma=sigmas, half_width=half_widths, with_variance=st.booleans())
def test_gaussian_smooth(image, sigma, half_width, with_variance):
    variance = np.abs(image.astype(np.float64)) if with_variance else None
    r = call(gaussian_smooth, image, sigma, variance=variance, half_width=half_width)
    img64 = image.astype(np.float64)
    finite = bool(np.all(np.isfinite(img64)))
    if not finite and image.size:
        assert not r.ok, "non-finite pixels must raise ValueError"
        assert isinstance(r.error, ValueError)
        return
    sane = math.isfinite(sigma) and 0.3 <= sigma <= 4.0 and (half_width is None or 0 <= half_width <= 12)
    if not sane:
        return  # a typed error or any result: call() has checked it
    h = int(math.ceil(4 * sigma)) if half_width is None else half_width
    fits = image.shape[0] >= 2 * h + 1 and image.shape[1] >= 2 * h + 1
    if not fits:
        assert not r.ok and isinstance(r.error, ValueError), "a kernel larger than the image must raise"
        return
    assert r.ok, r.error
    out = r.value
    want_dtype = image.dtype if image.dtype in (np.dtype("<f4"), np.dtype("<f8")) else np.float64
    assert out.image.dtype == want_dtype
    k = _reference_kernel(sigma, h)
    if np.max(np.abs(img64), initial=0.0) < 1e300:
        _check_interior(out.image, img64, np.outer(k, k), out.border)
        if with_variance:
            _check_interior(out.variance, np.abs(img64), np.outer(k * k, k * k), out.border)


kernels = st.one_of(
    arrays2d(min_side=1, max_side=7, dtypes=FLOAT_DTYPES + ("<i4",), layouts=("C", "F", "strided")),
    st.sampled_from([np.ones((0, 3)), np.ones((3, 3, 1)), np.ones((2, 3)), np.full((3, 3), np.nan)]))


@fuzz(60)
@given(image=arrays2d(max_side=40), kernel=kernels, method=st.sampled_from(["auto", "direct", "fft", "bogus"]),
       with_variance=st.booleans())
def test_convolve(image, kernel, method, with_variance):
    variance = np.abs(image.astype(np.float64)) if with_variance else None
    r = call(convolve, image, kernel, variance=variance, method=method)
    img64 = image.astype(np.float64)
    ker = np.asarray(kernel, np.float64)
    ok_kernel = (ker.ndim == 2 and ker.size and ker.shape[0] % 2 == 1 and ker.shape[1] % 2 == 1
                 and np.all(np.isfinite(ker)) and np.max(np.abs(ker)) < 1e30)
    if method == "bogus" or ker.ndim != 2 or (ker.size and not np.all(np.isfinite(ker))):
        assert not r.ok
        return
    if not ok_kernel or image.size == 0:
        return
    if not np.all(np.isfinite(img64)):
        if ker.shape[0] <= image.shape[0] and ker.shape[1] <= image.shape[1]:
            assert not r.ok and isinstance(r.error, ValueError), "non-finite pixels must raise ValueError"
        return
    if ker.shape[0] > image.shape[0] or ker.shape[1] > image.shape[1]:
        assert not r.ok
        return
    assert r.ok, r.error
    if np.max(np.abs(img64), initial=0.0) < 1e30:
        _check_interior(r.value.image, img64, ker, r.value.border)
        if with_variance:
            _check_interior(r.value.variance, np.abs(img64), ker * ker, r.value.border)
