"""Property tests of the simulator's pixel helpers (bleeding, row interpolation)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from visitcal.sim.render import _bleed, _interpolate_rows


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(1e3, 1e5), st.integers(0, 5))
def test_bleed_conserves_charge_and_respects_full_well(seed, full_well, n_stars):
    rng = np.random.default_rng(seed)
    ny, nx = 400, 40
    image = rng.uniform(0, 0.5 * full_well, (ny, nx))
    for _ in range(n_stars):  # over-full spots well inside the column, so no charge reaches an edge
        x, y = rng.integers(2, nx - 2), rng.integers(150, 250)
        image[y - 1:y + 2, x] += rng.uniform(1, 20) * full_well
    before = image.copy()
    _bleed(image, full_well)
    assert image.max() <= full_well * (1 + 1e-12)
    np.testing.assert_allclose(image.sum(axis=0), before.sum(axis=0), rtol=1e-12)
    untouched = ~(before > full_well).any(axis=0)
    np.testing.assert_array_equal(image[:, untouched], before[:, untouched])
    # charge only ever moves into pixels: none loses any
    assert np.all(image >= np.minimum(before, full_well) - 1e-9)


def test_bleed_splits_the_excess_evenly_up_and_down():
    image = np.zeros((101, 3))
    image[50, 1] = 11.0
    _bleed(image, 1.0)
    np.testing.assert_array_equal(image[45:56, 1], np.ones(11))
    assert image.sum() == 11.0 and image[:45].sum() == 0 and image[56:].sum() == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_interpolation_reproduces_a_linear_ramp_along_rows(seed):
    rng = np.random.default_rng(seed)
    ny, nx = 30, 50
    a, b = rng.normal(size=ny), rng.normal(size=ny)
    truth = a[:, None] + b[:, None] * np.arange(nx)[None, :]
    bad = np.zeros((ny, nx), dtype=bool)
    for _ in range(rng.integers(1, 6)):  # runs of bad columns, never the first or last column
        x = rng.integers(1, nx - 4)
        bad[rng.integers(0, ny):, x:x + rng.integers(1, 4)] = True
    image = np.where(bad, 1e6, truth)
    _interpolate_rows(image, bad)
    np.testing.assert_allclose(image, truth, atol=1e-9)
