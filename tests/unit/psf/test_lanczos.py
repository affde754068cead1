"""The Lanczos sub-pixel shift (cpp/src/psf/lanczos.cpp): an independent numpy sum, and its two builds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visitcal import _core


def lanczos_weights(frac: float, n: int) -> np.ndarray:
    x = np.arange(2 * n) - (n - 1) - frac
    w = np.sinc(x) * np.sinc(x / n) * (np.abs(x) < n)
    return w / w.sum()


def reference_shift(image: np.ndarray, dx: float, dy: float, n: int) -> np.ndarray:
    """out(y, x) = sum_kl wy[l] wx[k] in(y + by + l, x + bx + k), taps off the image skipped (the spec of the
    header: the light moves by +dx, +dy)."""
    ny, nx = image.shape
    sx, sy = np.floor(-dx), np.floor(-dy)
    wx, wy = lanczos_weights(-dx - sx, n), lanczos_weights(-dy - sy, n)
    bx, by = int(sx) - (n - 1), int(sy) - (n - 1)
    padded = np.zeros((ny + 4 * n + 2 * abs(by), nx + 4 * n + 2 * abs(bx)))
    oy, ox = 2 * n + abs(by), 2 * n + abs(bx)
    padded[oy:oy + ny, ox:ox + nx] = image
    out = np.zeros_like(image)
    for l in range(2 * n):
        for k in range(2 * n):
            out += wy[l] * wx[k] * padded[oy + by + l:oy + by + l + ny, ox + bx + k:ox + bx + k + nx]
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), ny=st.integers(1, 45), nx=st.integers(1, 45), order=st.integers(1, 7),
       dx=st.floats(-6.0, 6.0), dy=st.floats(-6.0, 6.0))
def test_shift_equals_the_reference_and_both_builds_agree_bit_for_bit(seed, ny, nx, order, dx, dy):
    image = np.random.default_rng(seed).normal(0.0, 1.0, (ny, nx))
    fast = _core.shift_image_lanczos(image, dx, dy, order)
    base = _core.shift_image_lanczos(image, dx, dy, order, baseline_only=True)
    np.testing.assert_array_equal(fast.view(np.uint64), base.view(np.uint64))  # the AVX2 build where it runs
    np.testing.assert_allclose(fast, reference_shift(image, dx, dy, order), rtol=0, atol=1e-12)


def test_integer_shift_moves_the_pixels_and_nan_shift_is_nan():
    image = np.arange(48, dtype=float).reshape(6, 8)
    out = _core.shift_image_lanczos(image, 2.0, -1.0, 5)
    np.testing.assert_allclose(out[:5, 2:], image[1:, :6], atol=1e-13)
    assert np.isnan(_core.shift_image_lanczos(image, np.nan, 0.0, 3)).all()
    with pytest.raises(ValueError, match="order must be"):
        _core.shift_image_lanczos(image, 0.5, 0.5, 0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), ny=st.integers(1, 30), nx=st.integers(1, 30), order=st.integers(1, 11),
       dx=st.floats(-30.0, 30.0), dy=st.floats(-30.0, 30.0), signed_zeros=st.booleans())
def test_taps_off_the_stamp_add_nothing_to_the_bit(seed, ny, nx, order, dx, dy, signed_zeros):
    """A tap off the stamp is skipped (or reads a padding zero): the result equals, bit for bit, the shift of
    the stamp embedded in zeros and cut out again, where those taps read real zeros. Covers both the padded
    path (shifts within ~n px) and the bounds-tested one (larger shifts), and -0.0 pixels."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 1.0, (ny, nx))
    if signed_zeros:
        image[rng.random(image.shape) < 0.3] = -0.0
    m = 2 * order + 32
    big = np.zeros((ny + 2 * m, nx + 2 * m))
    big[m:m + ny, m:m + nx] = image
    small = _core.shift_image_lanczos(image, dx, dy, order)
    cut = _core.shift_image_lanczos(big, dx, dy, order)[m:m + ny, m:m + nx]
    np.testing.assert_array_equal(small.view(np.uint64), cut.view(np.uint64))
