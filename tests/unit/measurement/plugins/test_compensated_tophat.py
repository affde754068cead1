"""base_CompensatedTophatFlux (visitcal.measurement.plugins.compensated_tophat, lsst-spec §5.7).

Truths: a constant sky cancels exactly; for a point source the value is A0 minus the annulus term,
computed here from the exact pixel overlaps (circle_rectangle_overlap) of the source's pixel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from visitcal import _core
from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins.compensated_tophat import CompensatedTophatConfig, compensated_tophat_flux, flag_names, schema

P = "base_CompensatedTophatFlux_12"


def test_constant_sky_cancels():
    img = np.full((100, 100), 37.0, np.float32)
    mi = MaskedImage(img, variance=np.full_like(img, 2.0))
    rng = np.random.default_rng(1)
    x, y = rng.uniform(45, 55, 10), rng.uniform(45, 55, 10)
    out = compensated_tophat_flux(mi, x, y)
    np.testing.assert_allclose(out[f"{P}_instFlux"], 0.0, atol=1e-8)
    # var = var(A0) + s^2 (var(A2) - var(A1)) with var(A) = 2 pi r^2
    s = 1 / (1.7**2 - 1)
    want = 2 * math.pi * 144 * (1 + s * s * (1.7**2 - 1))
    np.testing.assert_allclose(out[f"{P}_instFluxErr"] ** 2, want, rtol=1e-10)
    assert not out[f"{P}_flag"].any()


def test_point_source_analytic():
    # one bright pixel at (50, 50) plus sky: A(r) = F w(r) + sky pi r^2
    img = np.full((100, 100), 3.0, np.float32)
    img[50, 50] += 1000.0
    mi = MaskedImage(img, variance=np.ones_like(img))
    xc, yc = 50.4, 49.3  # the pixel sits 0.4 / 0.7 px off the centre: partly outside r = 12? no: w(12) = 1
    out = compensated_tophat_flux(mi, [xc], [yc])
    w = {r: _core.circle_rectangle_overlap(r, 49.5 - xc, 50.5 - xc, 49.5 - yc, 50.5 - yc) for r in (12.0, 20.4)}
    s = 1 / (1.7**2 - 1)
    a0 = 1000 * w[12.0] + 3 * math.pi * 144
    a2 = 1000 * w[20.4] + 3 * math.pi * 20.4**2
    assert out[f"{P}_instFlux"][0] == pytest.approx(a0 - s * (a2 - a0), rel=1e-10)
    # a source pixel near the aperture edge: partial weights enter analytically
    img2 = np.zeros((100, 100), np.float32)
    img2[50, 62] = 500.0
    out2 = compensated_tophat_flux(MaskedImage(img2, variance=np.ones_like(img2)), [50.2], [50.1])
    w12 = _core.circle_rectangle_overlap(12.0, 61.5 - 50.2, 62.5 - 50.2, 49.5 - 50.1, 50.5 - 50.1)
    assert 0 < w12 < 1
    assert out2[f"{P}_instFlux"][0] == pytest.approx(500 * w12 - s * (500 - 500 * w12), rel=1e-10)


def test_bounds_mask_bits_nan_and_config():
    img = np.ones((100, 100), np.float32)
    mi = MaskedImage(img, variance=np.ones_like(img))
    mi.mask.array[60, 60] = mi.mask.get_plane_bitmask("SAT")
    mi.mask.array[5, 5] = mi.mask.get_plane_bitmask("BAD")
    mi.mask.array[50, 0] = mi.mask.get_plane_bitmask("CR")
    # box half-width ceil(1.7 * 12) = 21: centre 21 fits, 20 does not
    out = compensated_tophat_flux(mi, [50.0, 21.0, 20.0, 50.0], [50.0, 21.0, 50.0, np.nan])
    assert list(out[f"{P}_flag_bounds"]) == [False, False, True, False]
    assert list(out[f"{P}_flag"]) == [False, False, True, True]
    assert np.isnan(out[f"{P}_instFlux"][2]) and np.isnan(out[f"{P}_instFlux"][3])
    assert out[f"{P}_mask_bits"][0] == mi.mask.get_plane_bitmask("SAT")
    assert out[f"{P}_mask_bits"][1] == mi.mask.get_plane_bitmask("BAD")
    assert out[f"{P}_mask_bits"][2] == mi.mask.get_plane_bitmask("CR")  # the box's on-image part
    img[55, 50] = np.nan
    out = compensated_tophat_flux(MaskedImage(img, variance=np.ones_like(img)), [50.0], [50.0])
    assert np.isnan(out[f"{P}_instFlux"][0]) and out[f"{P}_flag"][0] and not out[f"{P}_flag_bounds"][0]
    c = _core.CompensatedTophatControl()
    cfg = CompensatedTophatConfig()
    assert (tuple(c.apertures), c.inner_scale, c.outer_scale) == (cfg.apertures, cfg.inner_scale, cfg.outer_scale)
    assert flag_names() == ["flag", "flag_bounds"]
    assert schema() == [f"{P}_instFlux", f"{P}_instFluxErr", f"{P}_mask_bits", f"{P}_flag", f"{P}_flag_bounds"]
    with pytest.raises(ValueError, match="outer_scale"):
        CompensatedTophatConfig(outer_scale=0.5)
    two = compensated_tophat_flux(mi, [50.0], [50.0], CompensatedTophatConfig(apertures=(12, 17)))
    assert "base_CompensatedTophatFlux_17_instFlux" in two
