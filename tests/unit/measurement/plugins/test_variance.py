"""base_Variance (visitcal.measurement.plugins.variance, lsst-spec §5.7) against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from visitcal import _core
from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins.variance import VarianceConfig, flag_names, variance

P = "base_Variance"


def reference(var, mask, bad, x, y, xx, yy, xy, scale=5.0):
    yy_, xx_ = np.indices(var.shape)
    dx, dy = xx_ - x, yy_ - y
    q = scale**2 * np.array([[xx, xy], [xy, yy]])
    inv = np.linalg.inv(q)
    inside = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy <= 1
    sel = inside & ((mask & bad) == 0) & np.isfinite(var)
    return np.median(var[sel].astype(np.float64)) if sel.any() else np.nan


def test_matches_numpy_reference():
    rng = np.random.default_rng(3)
    shape = (80, 90)
    var = rng.uniform(1, 10, shape).astype(np.float32)
    var[rng.random(shape) < 0.01] = np.nan
    mi = MaskedImage(np.zeros(shape, np.float32), variance=var)
    mi.mask.array[rng.random(shape) < 0.3] |= mi.mask.get_plane_bitmask("DETECTED")
    mi.mask.array[rng.random(shape) < 0.05] |= mi.mask.get_plane_bitmask("CR")  # not excluded
    bad = mi.mask.get_plane_bitmask("DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT")
    n = 40
    x, y = rng.uniform(-3, 93, n), rng.uniform(-3, 83, n)
    xx, yy = rng.uniform(0.5, 6, n), rng.uniform(0.5, 6, n)
    xy = rng.uniform(-0.8, 0.8, n) * np.sqrt(xx * yy)
    out = variance(mi, x, y, xx, yy, xy)
    for k in range(n):
        want = reference(var, mi.mask.array, bad, x[k], y[k], xx[k], yy[k], xy[k])
        assert out[f"{P}_value"][k] == pytest.approx(want, rel=1e-6, nan_ok=True)
        assert out[f"{P}_flag_emptyFootprint"][k] == np.isnan(want)


def test_flags_and_config():
    mi = MaskedImage(np.zeros((30, 30), np.float32), variance=np.ones((30, 30), np.float32))
    mi.mask.array[:] = mi.mask.get_plane_bitmask("DETECTED")
    out = variance(mi, [15.0, 15.0, 15.0], [15.0, 15.0, np.nan], [2.0, -1.0, 2.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0])
    assert list(out[f"{P}_flag"]) == [True, True, True]
    assert list(out[f"{P}_flag_emptyFootprint"]) == [True, False, False]
    assert np.isnan(out[f"{P}_value"]).all()
    assert flag_names() == ["flag", "flag_emptyFootprint"]
    c = _core.VarianceControl()
    assert c.scale == VarianceConfig().scale
    assert c.mask == VarianceConfig().to_control(mi).mask
