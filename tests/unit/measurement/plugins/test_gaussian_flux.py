"""base_GaussianFlux (visitcal.measurement.plugins.gaussian_flux, lsst-spec §5.7).

Truth: for a Gaussian source of flux F whose moments are Q (sampled at pixel centres), the weight
matched to Q gives F (analytic: 2 sum w I = F up to the 4-sigma box truncation, < 1e-7).
"""

from __future__ import annotations

import numpy as np
import pytest

from visitcal import _core
from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins.gaussian_flux import GaussianFluxConfig, flag_names, gaussian_flux

P = "base_GaussianFlux"


def gaussian(shape, x, y, q, flux):
    yy, xx = np.indices(shape, dtype=float)
    dx, dy = xx - x, yy - y
    det = q[0] * q[1] - q[2] ** 2
    ixx, iyy, ixy = q[1] / det, q[0] / det, -q[2] / det
    return flux / (2 * np.pi * np.sqrt(det)) * np.exp(-0.5 * (ixx * dx * dx + 2 * ixy * dx * dy + iyy * dy * dy))


@pytest.mark.parametrize("q", [(4.0, 4.0, 0.0), (6.0, 3.0, 1.2), (9.0, 5.0, -2.0)])
def test_gaussian_source_flux_exact(q):
    rng = np.random.default_rng(1)
    for _ in range(4):
        x, y = rng.uniform(40, 41, 2)
        img = gaussian((81, 81), x, y, q, 1e4)
        var = np.full((81, 81), 7.0, np.float32)
        out = gaussian_flux(MaskedImage(img, variance=var), [x], [y], [q[0]], [q[1]], [q[2]])
        assert out[f"{P}_instFlux"][0] == pytest.approx(1e4, rel=2e-7)
        det = q[0] * q[1] - q[2] ** 2
        assert out[f"{P}_instFluxErr"][0] == pytest.approx(2 * np.sqrt(7.0 * np.pi * np.sqrt(det)), rel=1e-12)
        assert not out[f"{P}_flag"][0]


def test_flags():
    img = np.ones((30, 30), np.float32)
    img[15, 16] = np.nan
    mi = MaskedImage(img, variance=np.ones_like(img))
    out = gaussian_flux(mi, [15.0, 5.0, 5.0, 100.0, np.nan], [15.0, 5.0, 5.0, 100.0, 5.0],
                        [2.0, 2.0, -1.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0])
    assert list(out[f"{P}_flag"]) == [True, False, True, True, True]
    assert list(out[f"{P}_flag_badShape"]) == [False, False, True, False, False]
    assert np.isnan(out[f"{P}_instFlux"][[0, 2, 3, 4]]).all()
    assert flag_names() == ["flag", "flag_badShape"]
    c = _core.GaussianFluxControl()
    assert (c.box_sigma, c.max_radius) == (GaussianFluxConfig().box_sigma, GaussianFluxConfig().max_radius)
