"""Hand-built cases of `visitcal.qa.truth`'s helpers that need no simulation: completeness curves and their
50% point, sky separations, PSF shape vectors, the test for a simulated repository."""

from __future__ import annotations

import math

import numpy as np
import pytest
from visitcal.psf.models import Moments
from visitcal.qa import truth


def test_completeness_curve_counts_and_fractions():
    mag = np.array([20.1, 20.2, 20.3, 20.7, 21.4, np.nan])
    found = np.array([True, True, False, True, False, True])
    c, f, n = truth.completeness_curve(mag, found, 0.5)
    assert np.allclose(c, [20.25, 20.75, 21.25]) and list(n) == [3, 1, 1]
    assert np.allclose(f, [2 / 3, 1.0, 0.0])
    c, f, n = truth.completeness_curve([], [], 0.5)
    assert c.size == f.size == n.size == 0


def test_completeness_50_mag_interpolates_the_first_fall():
    centres = np.array([20.25, 20.75, 21.25, 21.75, 22.25])
    # 1.0, 0.9, 0.7, 0.3, 0.1: crosses between 21.25 (0.7) and 21.75 (0.3) at 21.25 + 0.2 / 0.4 * 0.5 = 21.5
    assert truth.completeness_50_mag(centres, [1.0, 0.9, 0.7, 0.3, 0.1], [10] * 5) == pytest.approx(21.5)
    # a bin of too few objects is skipped: 0.0 at 21.25 (2 objects) is not the fall
    assert truth.completeness_50_mag(centres, [1.0, 0.9, 0.0, 0.6, 0.2], [10, 10, 2, 10, 10]) == pytest.approx(
        21.75 + 0.1 / 0.4 * 0.5)
    assert math.isnan(truth.completeness_50_mag(centres, [1.0] * 5, [10] * 5))  # never falls
    assert math.isnan(truth.completeness_50_mag(centres, [0.2] * 5, [10] * 5))  # never above


def test_sky_separation_mas_known_angles():
    assert truth.sky_separation_mas(10.0, 0.0, 10.0, 1.0) == pytest.approx(3.6e6, rel=1e-12)
    # 1 arcsec of RA at dec 60 deg is 0.5 arcsec on the sky
    assert truth.sky_separation_mas(0.0, 60.0, 1 / 3600, 60.0) == pytest.approx(500.0, rel=1e-6)
    assert truth.sky_separation_mas(359.9999, -30.0, 0.0001, -30.0) == pytest.approx(
        0.0002 * 3.6e6 * math.cos(math.radians(30.0)), rel=1e-6)


def test_shape_vector_of_an_ellipse():
    s = truth.shape_vector(Moments(5.0, 3.0, 1.0))
    assert s == pytest.approx([(15.0 - 1.0) ** 0.25, 2.0 / 8.0, 2.0 / 8.0], rel=1e-15)


def test_is_simulated_needs_the_manifest_and_the_truth(tmp_path):
    assert not truth.is_simulated(tmp_path)
    (tmp_path / "repo.json").write_text("{}")
    assert not truth.is_simulated(tmp_path)
    (tmp_path / "truth").mkdir()
    assert truth.is_simulated(tmp_path)
    with pytest.raises(truth.TruthUnavailable, match="unreadable"):
        truth.open_truth(tmp_path)  # a manifest that is not a simulation's
