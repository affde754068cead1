"""`visitcal.qa.rho.rho_statistics` on analytic cases: a constant residual field, uncorrelated residuals, the
tangent-plane projection, the bin lookup, the shot-noise variance recomputed with numpy, and the TreeCorr
backend when TreeCorr is installed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from visitcal.qa.rho import rho_statistics, tangent_plane

KW = dict(min_sep_arcmin=0.5, max_sep_arcmin=30.0, nbins=6)


def _field(n, seed, spread_deg=0.25):
    """n stars within ~spread_deg of (150, -30), a random PSF model (e, T) at each."""
    rng = np.random.default_rng(seed)
    ra = 150.0 + rng.uniform(-spread_deg, spread_deg, n) / math.cos(math.radians(30.0))
    dec = -30.0 + rng.uniform(-spread_deg, spread_deg, n)
    e1m, e2m = rng.normal(0, 0.05, n), rng.normal(0, 0.05, n)
    Tm = rng.uniform(4.0, 6.0, n)
    return rng, ra, dec, e1m, e2m, Tm


def test_constant_residual_gives_its_square_in_every_bin():
    rng, ra, dec, e1m, e2m, Tm = _field(300, 1)
    d1, d2 = 0.012, -0.007
    r = rho_statistics(ra, dec, e1m + d1, e2m + d2, Tm, e1m, e2m, Tm, **KW)
    filled = r.npairs > 0
    assert filled.sum() == r.nbins  # the field fills every bin
    np.testing.assert_allclose(r.xip[0], d1 ** 2 + d2 ** 2, rtol=1e-12)
    np.testing.assert_allclose(r.xip_im[0], 0.0, atol=1e-18)
    # dT = 0 makes rho3..rho5 exactly zero
    assert np.all(r.xip[2:] == 0)
    # value_at: the bin that holds 1 arcmin (0.5 * (60)^(1/6)^k edges: bin 1 is [0.98, 1.93))
    k = int(np.searchsorted(r.edges, 1.0, side="right") - 1)
    assert r.value_at(1.0, 1) == r.xip[0, k]
    assert math.isnan(r.value_at(0.4, 1)) and math.isnan(r.value_at(30.0, 1))
    assert r.edges[0] == 0.5 and math.isclose(r.edges[-1], 30.0, rel_tol=1e-14)


def test_uncorrelated_residuals_are_consistent_with_zero():
    rng, ra, dec, e1m, e2m, Tm = _field(800, 2)
    s = 0.01
    r = rho_statistics(ra, dec, e1m + rng.normal(0, s, 800), e2m + rng.normal(0, s, 800),
                       Tm * (1 + rng.normal(0, 0.01, 800)), e1m, e2m, Tm, **KW)
    sigma = np.sqrt(r.varxip[0])
    assert np.all(np.abs(r.xip[0]) < 4 * sigma), (r.xip[0], sigma)
    # and the test can fail: the same residuals plus a constant 0.01 are 4 sigma away everywhere
    r2 = rho_statistics(ra, dec, e1m + rng.normal(0, s, 800) + 0.01, e2m, Tm, e1m, e2m, Tm, **KW)
    assert np.all(np.abs(r2.xip[0]) > 4 * np.sqrt(r2.varxip[0]))


def test_shot_variance_is_treecorr_formula():
    """varxip = 2 var1 var2 / weight, var the per-component (population) variance; unit weights."""
    rng, ra, dec, e1m, e2m, Tm = _field(200, 3)
    de1, de2 = rng.normal(0, 0.01, 200), rng.normal(0, 0.02, 200)
    r = rho_statistics(ra, dec, e1m + de1, e2m + de2, Tm, e1m, e2m, Tm, **KW)
    var_de = (np.var(de1) + np.var(de2)) / 2
    var_e = (np.var(e1m) + np.var(e2m)) / 2
    np.testing.assert_allclose(r.varxip[0], 2 * var_de ** 2 / r.weight, rtol=1e-10)
    # rho2 is a cross term: its pair weight counts both orders, 2 x the unordered weight
    np.testing.assert_allclose(r.varxip[1], 2 * var_e * var_de / (2 * r.weight), rtol=1e-10)
    assert math.isclose(r.sigma_at(1.0, 1), math.sqrt(r.varxip[0, r.bin_of(1.0)]))


def test_rho3_rho5_from_a_size_offset():
    """T_star = (1 + k) T_model everywhere: dT/T = k, so rho3 = k^2 <e* e>, rho5 = k <e* e> and rho4 = 0."""
    rng, ra, dec, _, _, Tm = _field(150, 4)
    e1m, e2m = np.full(150, 0.03), np.full(150, -0.04)
    k = 0.02
    r = rho_statistics(ra, dec, e1m, e2m, Tm * (1 + k), e1m, e2m, Tm, **KW)
    ee = 0.03 ** 2 + 0.04 ** 2
    np.testing.assert_allclose(r.xip[2], k ** 2 * ee, rtol=1e-12)
    np.testing.assert_allclose(r.xip[4], k * ee, rtol=1e-12)
    np.testing.assert_allclose(r.xip[0], 0.0, atol=1e-30)
    np.testing.assert_allclose(r.xip[3], 0.0, atol=1e-30)


def test_tangent_plane_axes_and_scale():
    # 1 arcmin north and 1 arcmin east (on the sky) of the centre
    ra0, dec0 = 150.0, -30.0
    x, y = tangent_plane([ra0, ra0, ra0 + (1 / 60) / math.cos(math.radians(dec0))],
                         [dec0, dec0 + 1 / 60, dec0], center_deg=(ra0, dec0))
    np.testing.assert_allclose(x[:2], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(y, [0.0, 1.0, 0.0], atol=1e-4)
    assert abs(x[2] - 1.0) < 1e-4
    # default centre: the mean direction, so a symmetric pair lands at +-x
    x, y = tangent_plane([149.9, 150.1], [0.0, 0.0])
    np.testing.assert_allclose(x, [-6.0, 6.0], rtol=1e-5)


def test_bad_input_is_named():
    _, ra, dec, e1m, e2m, Tm = _field(10, 5)
    bad = e1m.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="e1_star is not finite at 1 star"):
        rho_statistics(ra, dec, bad, e2m, Tm, e1m, e2m, Tm, **KW)
    with pytest.raises(ValueError, match="T_model must be positive"):
        rho_statistics(ra, dec, e1m, e2m, Tm, e1m, e2m, -Tm, **KW)
    with pytest.raises(ValueError, match="backend"):
        rho_statistics(ra, dec, e1m, e2m, Tm, e1m, e2m, Tm, backend="piff", **KW)
    with pytest.raises(ValueError, match="T_star has 9 values"):
        rho_statistics(ra, dec, e1m, e2m, Tm[:9], e1m, e2m, Tm, **KW)
    with pytest.raises(ValueError, match="min_sep_arcmin < max_sep_arcmin"):
        rho_statistics(ra, dec, e1m, e2m, Tm, e1m, e2m, Tm, min_sep_arcmin=2.0, max_sep_arcmin=1.0, nbins=3)


def test_treecorr_backend_agrees():
    pytest.importorskip("treecorr", reason="TreeCorr not installed (pip install 'visitcal[qa]'): backend not checked")
    rng, ra, dec, e1m, e2m, Tm = _field(300, 6)
    args = (ra, dec, e1m + rng.normal(0, 0.01, 300), e2m + rng.normal(0, 0.01, 300),
            Tm * (1 + rng.normal(0, 0.02, 300)), e1m, e2m, Tm)
    a = rho_statistics(*args, **KW)
    b = rho_statistics(*args, backend="treecorr", **KW)
    np.testing.assert_array_equal(a.npairs, b.npairs)
    np.testing.assert_allclose(a.meanr, b.meanr, rtol=1e-9)
    for name in ("xip", "xim", "xip_im", "xim_im"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(a.varxip, b.varxip, rtol=1e-10)
