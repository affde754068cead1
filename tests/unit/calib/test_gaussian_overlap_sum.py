"""`visitcal.calib.match_nearest.gaussian_overlap_sum` (C++ grid hash) against a numpy brute force over every
pair, and its argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from visitcal.calib.match_nearest import gaussian_overlap_sum


def brute_force(x1, y1, x2, y2, w2, sigma, radius, min_distance):
    """Every pair: sum of w2 exp(-d^2 / (4 sigma^2)) over min_distance < d <= radius (NaN never counts)."""
    d2 = (x1[:, None] - x2[None, :]) ** 2 + (y1[:, None] - y2[None, :]) ** 2
    with np.errstate(invalid="ignore"):
        use = (d2 <= radius * radius) & (d2 > min_distance * min_distance)
    return np.where(use, w2[None, :] * np.exp(-np.where(use, d2, 0.0) / (4 * sigma * sigma)), 0.0).sum(axis=1)


coords = st.lists(st.tuples(st.floats(-50, 250), st.floats(-50, 250), st.floats(0.0, 1e4)), min_size=0, max_size=60)


@settings(max_examples=150, deadline=None)
@given(coords, coords, st.sampled_from([0.5, 2.0, 7.5]), st.sampled_from([1.0, 12.0, 40.0]),
       st.sampled_from([0.0, 1e-3, 3.0]), st.booleans())
def test_matches_the_brute_force(a, b, sigma, radius, min_distance, contains):
    x1, y1 = (np.array([p[k] for p in a], float) for k in (0, 1))
    x2, y2, w2 = (np.array([p[k] for p in b], float) for k in (0, 1, 2))
    if contains:  # list 2 holds list 1 (the truth's isolation: a star among all objects)
        x2, y2, w2 = np.r_[x2, x1], np.r_[y2, y1], np.r_[w2, np.ones(x1.size)]
    got = gaussian_overlap_sum(x1, y1, x2, y2, w2, sigma=sigma, radius=radius, min_distance=min_distance)
    want = brute_force(x1, y1, x2, y2, w2, sigma, radius, min_distance)
    assert got.shape == (x1.size,)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(w2).sum())))


def test_hand_built_neighbours():
    # points on a line: at x=5 the neighbours at 0 (d=5), 3 (d=2) and 13 (d=8) count, at x=0 only 3 (d=3: 13 is
    # beyond the radius 12, and itself at d=0 is left out by min_distance)
    x2, w2 = np.array([0.0, 3.0, 13.0]), np.array([1.0, 2.0, 4.0])
    got = gaussian_overlap_sum([0.0, 5.0], [0.0, 0.0], x2, np.zeros(3), w2, sigma=2.0, radius=12.0, min_distance=1e-3)
    assert got[0] == pytest.approx(2 * np.exp(-9 / 16), rel=1e-15)
    assert got[1] == pytest.approx(np.exp(-25 / 16) + 2 * np.exp(-4 / 16) + 4 * np.exp(-64 / 16), rel=1e-15)


def test_nan_positions_and_empty_lists():
    got = gaussian_overlap_sum([np.nan, 0.0], [0.0, 0.0], [1.0, np.nan], [0.0, 0.0], [1.0, 5.0], sigma=1.0,
                               radius=5.0)
    assert got[0] == 0.0 and got[1] == pytest.approx(np.exp(-0.25), rel=1e-15)
    assert gaussian_overlap_sum([], [], [1.0], [1.0], [1.0], sigma=1.0, radius=1.0).shape == (0,)
    assert np.array_equal(gaussian_overlap_sum([1.0], [1.0], [], [], [], sigma=1.0, radius=1.0), [0.0])


@pytest.mark.parametrize("kw, word", [(dict(sigma=0.0, radius=1.0), "sigma"), (dict(sigma=np.nan, radius=1.0), "sigma"),
                                      (dict(sigma=1.0, radius=-1.0), "radius"),
                                      (dict(sigma=1.0, radius=np.inf), "radius"),
                                      (dict(sigma=1.0, radius=1.0, min_distance=-1.0), "min_distance")])
def test_bad_arguments_are_named(kw, word):
    with pytest.raises(ValueError, match=word):
        gaussian_overlap_sum([0.0], [0.0], [1.0], [1.0], [1.0], **kw)
    with pytest.raises(ValueError, match="w2"):
        gaussian_overlap_sum([0.0], [0.0], [1.0], [1.0], [1.0, 2.0], sigma=1.0, radius=1.0)
