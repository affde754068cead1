"""The C++ pair kernel of the rho statistics (`visitcal.qa.rho.shear_correlation`) against an independent
numpy sum over every pair (complex arithmetic with atan2, where the kernel avoids trigonometry), its
symmetries, its argument checks, and TreeCorr's GGCorrelation when TreeCorr is installed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from visitcal.qa.rho import shear_correlation


def brute_force(x, y, a, b, w, min_sep, max_sep, nbins, cross):
    """Per-bin sums over unordered pairs i < j (auto) or ordered pairs i != j (cross), by numpy broadcasting."""
    n = len(x)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pairs = (i != j) if cross else (i < j)
    i, j = i[pairs], j[pairs]
    dx, dy = x[j] - x[i], y[j] - y[i]
    r = np.hypot(dx, dy)
    phi = np.arctan2(dy, dx)
    bs = math.log(max_sep / min_sep) / nbins
    inside = (r >= min_sep) & (r < max_sep)
    k = np.floor((np.log(np.where(inside, r, min_sep)) - math.log(min_sep)) / bs).astype(int)
    inside &= (k >= 0) & (k < nbins)
    ww = w[i] * w[j]
    p = ww * a[i] * np.conj(b[j])
    m = ww * a[i] * b[j] * np.exp(-4j * phi)
    out = {}
    for name, v in (("weight", ww), ("npairs", np.ones_like(ww)), ("sum_wr", ww * r), ("sum_wlogr", ww * np.log(r)),
                    ("xip", p.real), ("xip_im", p.imag), ("xim", m.real), ("xim_im", m.imag)):
        out[name] = np.bincount(k[inside], weights=v[inside], minlength=nbins)
    if not cross:
        out["xip_im"][:] = 0.0  # defined as 0 for an auto-correlation (odd in the order of a pair)
    return out


def _random_case(seed, n, cross):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-10, 10, n), rng.uniform(-10, 10, n)
    a = rng.normal(0, 0.1, n) + 1j * rng.normal(0, 0.1, n)
    b = (rng.normal(0, 0.1, n) + 1j * rng.normal(0, 0.1, n)) if cross else a
    w = rng.uniform(0.2, 2.0, n)
    return x, y, a, b, w


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40), cross=st.booleans(), nbins=st.integers(1, 7),
       min_sep=st.floats(0.05, 2.0), ratio=st.floats(1.5, 100.0))
def test_kernel_equals_a_numpy_sum_over_all_pairs(seed, n, cross, nbins, min_sep, ratio):
    x, y, a, b, w = _random_case(seed, n, cross)
    max_sep = min_sep * ratio
    got = shear_correlation(x, y, a.real, a.imag, *((b.real, b.imag) if cross else (None, None)), w,
                            min_sep=min_sep, max_sep=max_sep, nbins=nbins)
    ref = brute_force(x, y, a, b, w, min_sep, max_sep, nbins, cross)
    # scale of a sum: its terms' absolute values (a cancelling sum is compared to its terms, not to ~0)
    scale_ab = float(np.sum(w) ** 2 * np.max(np.abs(a), initial=0) * np.max(np.abs(b), initial=0))
    for name in ("weight", "npairs", "sum_wr", "sum_wlogr"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-12, atol=1e-12 * max(np.sum(w) ** 2, 1) * 30,
                                   err_msg=name)
    for name in ("xip", "xip_im", "xim", "xim_im"):
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-12 * max(scale_ab, 1e-300), err_msg=name)


def test_auto_equals_cross_of_a_field_with_itself():
    """Auto (unordered pairs) and cross of a with a (ordered pairs, each twice) give the same xi; xip_im is 0."""
    x, y, a, _, w = _random_case(3, 200, False)
    auto = shear_correlation(x, y, a.real, a.imag, w=w, min_sep=0.3, max_sep=20.0, nbins=5)
    cross = shear_correlation(x, y, a.real, a.imag, a.real, a.imag, w, min_sep=0.3, max_sep=20.0, nbins=5)
    np.testing.assert_array_equal(cross["npairs"], 2 * auto["npairs"])
    for name in ("xip", "xim", "xim_im"):
        np.testing.assert_allclose(cross[name] / cross["weight"], auto[name] / auto["weight"], rtol=1e-12, atol=1e-15)
    assert np.all(auto["xip_im"] == 0)
    np.testing.assert_allclose(cross["xip_im"], 0.0, atol=1e-15)


def test_rotation_invariance():
    """Positions rotated by alpha leave xi+ unchanged; rotating the spin-2 fields by 2 alpha as well leaves xi- too
    (and changes xi- when the fields stay: a check that the test can fail)."""
    x, y, a, b, w = _random_case(5, 150, True)
    alpha = 0.7
    c, s = math.cos(alpha), math.sin(alpha)
    xr, yr = c * x - s * y, s * x + c * y
    kw = dict(min_sep=0.3, max_sep=25.0, nbins=6)
    ref = shear_correlation(x, y, a.real, a.imag, b.real, b.imag, w, **kw)
    moved = shear_correlation(xr, yr, a.real, a.imag, b.real, b.imag, w, **kw)
    rot = np.exp(2j * alpha)
    turned = shear_correlation(xr, yr, (a * rot).real, (a * rot).imag, (b * rot).real, (b * rot).imag, w, **kw)
    scale = float(np.sum(w) ** 2 * 0.5 ** 2) * 1e-12
    np.testing.assert_allclose(moved["npairs"], ref["npairs"])
    np.testing.assert_allclose(moved["xip"], ref["xip"], atol=scale)
    np.testing.assert_allclose(turned["xip"], ref["xip"], atol=scale)
    np.testing.assert_allclose(turned["xim"], ref["xim"], atol=scale)
    np.testing.assert_allclose(turned["xim_im"], ref["xim_im"], atol=scale)
    assert np.max(np.abs(moved["xim"] - ref["xim"])) > 1e3 * scale


def test_argument_checks_name_the_argument():
    x = np.arange(5.0)
    kw = dict(min_sep=0.5, max_sep=10.0, nbins=3)
    with pytest.raises(ValueError, match=r"a2\[2\] is not finite"):
        shear_correlation(x, x, x, np.array([0, 0, np.nan, 0, 0.0]), **kw)
    with pytest.raises(ValueError, match="y has 4 values"):
        shear_correlation(x, x[:4], x, x, **kw)
    with pytest.raises(ValueError, match="min_sep must be finite and positive"):
        shear_correlation(x, x, x, x, min_sep=0.0, max_sep=1.0, nbins=3)
    with pytest.raises(ValueError, match="max_sep must be finite and above min_sep"):
        shear_correlation(x, x, x, x, min_sep=2.0, max_sep=1.0, nbins=3)
    with pytest.raises(ValueError, match="nbins must be in"):
        shear_correlation(x, x, x, x, min_sep=0.5, max_sep=1.0, nbins=0)
    with pytest.raises(ValueError, match="both b1 and b2"):
        shear_correlation(x, x, x, x, x, **kw)


def test_deterministic():
    x, y, a, b, w = _random_case(9, 300, True)
    args = (x, y, a.real, a.imag, b.real, b.imag, w)
    r1 = shear_correlation(*args, min_sep=0.2, max_sep=30.0, nbins=8)
    r2 = shear_correlation(*args, min_sep=0.2, max_sep=30.0, nbins=8)
    for k in r1:
        assert r1[k].tobytes() == r2[k].tobytes()


@pytest.mark.parametrize("cross", [False, True])
def test_parity_with_treecorr(cross):
    treecorr = pytest.importorskip("treecorr", reason="TreeCorr not installed (pip install 'visitcal[qa]'): "
                                                      "parity with GGCorrelation not checked")
    x, y, a, b, w = _random_case(11, 400, cross)
    # TreeCorr keeps weights in single precision: dyadic weights are exact in both
    w = np.random.default_rng(12).integers(1, 17, len(x)) / 8.0
    kw = dict(min_sep=0.5, max_sep=20.0, nbins=6)
    got = shear_correlation(x, y, a.real, a.imag, *((b.real, b.imag) if cross else (None, None)), w, **kw)
    gg = treecorr.GGCorrelation(**kw, bin_slop=0.0, angle_slop=0.0)
    ca = treecorr.Catalog(x=x, y=y, g1=a.real, g2=a.imag, w=w)
    if cross:
        gg.process(ca, treecorr.Catalog(x=x, y=y, g1=b.real, g2=b.imag, w=w))
    else:
        gg.process(ca)
    np.testing.assert_array_equal(got["npairs"], gg.npairs)
    np.testing.assert_allclose(got["weight"], gg.weight, rtol=1e-12)
    np.testing.assert_allclose(got["sum_wr"] / got["weight"], gg.meanr, rtol=1e-9)
    parts = ("xip", "xim", "xim_im") + (("xip_im",) if cross else ())  # auto xip_im: TreeCorr's tree order
    for name in parts:
        np.testing.assert_allclose(got[name] / got["weight"], getattr(gg, name), rtol=0, atol=1e-10, err_msg=name)
