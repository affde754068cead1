"""base_SdssShape adaptive moments (lsst-spec §5.7) against analytic truths and a numpy reference.

Truth design: a Gaussian of covariance C sampled at pixel centres has discrete second moments C up to
aliasing terms ~exp(-2 pi^2 lambda_min(C)) (Poisson summation), and so does its product with a
Gaussian weight sampled at the same centres, whose covariance is C / 2 at convergence: adaptive moments
of a sampled Gaussian return C, its centre and its flux up to ~exp(-pi^2 lambda_min(C)), 1e-17 for
sigma = 2 px, 1e-8 for sigma = 1.4 px. The acceptance bound is 1e-6 relative for sigma 2-4 px
(measured: ~1e-12, the rounding of the sums).
Errors: the Fisher-matrix errors agree with the Monte Carlo scatter of many noisy realisations to 15%.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visitcal import _core
from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins.sdss_shape import PLUGIN_NAME, SdssShapeConfig, columns, flag_names, psf_moments, sdss_shape

P = PLUGIN_NAME


def elliptical(shape, x, y, cov, flux=1.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    ci = np.linalg.inv(cov)
    dx, dy = xx - x, yy - y
    q = ci[0, 0] * dx * dx + 2 * ci[0, 1] * dx * dy + ci[1, 1] * dy * dy
    return flux * np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))


def random_cov(rng, smin=2.0, smax=4.0):
    s1, s2 = rng.uniform(smin, smax, 2)
    t = rng.uniform(0, np.pi)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return r @ np.diag([s1 * s1, s2 * s2]) @ r.T


def masked(image, variance=1.0):
    image = np.asarray(image, np.float32)
    return MaskedImage(image, variance=np.full(image.shape, variance, np.float32))


def reference_adaptive(image, x, y, max_iter=100, tol1=1e-5, tol2=1e-4):
    """numpy reference of the iteration in sdss_shape.hpp: pixel-centre weights, or once the weight's
    smallest eigenvalue has dropped below 1 px^2, weights averaged over 4 x 4 sub-pixels."""
    ny, nx = image.shape
    w = np.array([[1.5, 0.0], [0.0, 1.5]])
    xc, yc = x, y
    ns = 1
    for it in range(1, max_iter + 1):
        if np.linalg.eigvalsh(w)[0] < 1.0:
            ns = 4
        hx, hy = int(np.ceil(5 * np.sqrt(w[0, 0]))) + 1, int(np.ceil(5 * np.sqrt(w[1, 1]))) + 1
        ix, iy = int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5))
        xa, xb, ya, yb = max(0, ix - hx), min(nx - 1, ix + hx), max(0, iy - hy), min(ny - 1, iy + hy)
        yy, xx = np.mgrid[ya:yb + 1, xa:xb + 1]
        wi = np.linalg.inv(w)
        sums = np.zeros(6)  # sums of I w, I w dx, I w dy, I w dx^2, I w dy^2, I w dx dy
        offsets = (np.arange(ns) - (ns - 1) / 2) / ns
        for oy in offsets:
            for ox in offsets:
                dx, dy = xx - xc + ox, yy - yc + oy
                wt = np.exp(-0.5 * (wi[0, 0] * dx * dx + 2 * wi[0, 1] * dx * dy + wi[1, 1] * dy * dy)) / ns**2
                v = image[ya:yb + 1, xa:xb + 1] * wt
                sums += [v.sum(), (v * dx).sum(), (v * dy).sum(), (v * dx * dx).sum(), (v * dy * dy).sum(),
                         (v * dx * dy).sum()]
        i0 = sums[0]
        mx, my = sums[1] / i0, sums[2] / i0
        m = np.array([[sums[3] / i0 - mx * mx, sums[5] / i0 - mx * my],
                      [sums[5] / i0 - mx * my, sums[4] / i0 - my * my]])
        c = np.linalg.inv(np.linalg.inv(m) - wi)
        s = np.array([2 * mx, 2 * my])
        flux = i0 * np.sqrt(np.linalg.det(c) / np.linalg.det(m)) * np.exp(0.5 * s @ np.linalg.inv(c + w) @ s)
        tw, tc = np.trace(w), np.trace(c)
        done = (abs((c[0, 0] - c[1, 1]) / tc - (w[0, 0] - w[1, 1]) / tw) < tol1
                and abs(2 * c[0, 1] / tc - 2 * w[0, 1] / tw) < tol1 and abs(tc / tw - 1) < tol2
                and np.hypot(*s) < 1e-4)
        w, xc, yc = c, xc + s[0], yc + s[1]
        if done:
            break
    return {"xx": c[0, 0], "yy": c[1, 1], "xy": c[0, 1], "x": xc, "y": yc, "inst_flux": flux, "n_iter": it}


def test_config_defaults_match_core():
    ctrl, cfg = _core.SdssShapeControl(), SdssShapeConfig()
    for name in type(cfg).model_fields:
        assert getattr(ctrl, name) == getattr(cfg, name), name
    assert (cfg.max_iter, cfg.tol1, cfg.tol2) == (100, 1e-5, 1e-4)


def test_flag_registry_and_columns():
    assert flag_names() == ["flag", "flag_unweightedBad", "flag_unweighted", "flag_shift", "flag_maxIter", "flag_psf"]
    out = sdss_shape(masked(elliptical((30, 30), 15, 15, np.eye(2) * 4, 100)), [15.0], [15.0])
    assert list(out) == columns()


def test_analytic_gaussians_exact():
    rng = np.random.default_rng(3)
    n_side, step = 6, 50
    image = np.zeros((n_side * step, n_side * step))
    truth = []
    for j in range(n_side):
        for i in range(n_side):
            cov = random_cov(rng)
            x, y = i * step + 25 + rng.uniform(-0.5, 0.5), j * step + 25 + rng.uniform(-0.5, 0.5)
            flux = rng.uniform(1e3, 1e5)
            image += elliptical(image.shape, x, y, cov, flux)
            truth.append((x, y, cov, flux))
    # float64 pixels through the image-only entry point: 1e-6 relative is far above the rounding
    for x, y, cov, flux in truth:
        r = _core.adaptive_moments(image, 0, 0, float(np.floor(x + 0.5)), float(np.floor(y + 0.5)),
                                   _core.SdssShapeControl())
        assert r["flags"] == 0
        scale = np.sqrt(cov[0, 0] * cov[1, 1])
        assert r["xx"] == pytest.approx(cov[0, 0], rel=1e-6)
        assert r["yy"] == pytest.approx(cov[1, 1], rel=1e-6)
        assert abs(r["xy"] - cov[0, 1]) < 1e-6 * scale
        assert r["inst_flux"] == pytest.approx(flux, rel=1e-6)
        assert abs(r["x"] - x) < 1e-6 and abs(r["y"] - y) < 1e-6
    # the float32 exposure path: limited by float32 pixels (~1e-7)
    out = sdss_shape(masked(image), [t[0] + 0.3 for t in truth], [t[1] - 0.2 for t in truth])
    assert not out[f"{P}_flag"].any()
    xx = np.array([t[2][0, 0] for t in truth])
    np.testing.assert_allclose(out[f"{P}_xx"], xx, rtol=1e-5)
    np.testing.assert_allclose(out[f"{P}_instFlux"], [t[3] for t in truth], rtol=1e-5)


def test_matches_numpy_reference_on_noisy_source():
    rng = np.random.default_rng(8)
    for _ in range(5):
        cov = random_cov(rng, 1.6, 3.0)
        image = elliptical((41, 41), 20.2, 19.7, cov, 3000.0) + rng.normal(0, 1.0, (41, 41))
        image = image.astype(np.float32).astype(np.float64)
        ref = reference_adaptive(image, 20.0, 20.0)
        r = _core.adaptive_moments(image, 0, 0, 20.0, 20.0, _core.SdssShapeControl())
        for k in ("xx", "yy", "xy", "x", "y", "inst_flux"):
            assert r[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-9), k


def test_undersampled_star_converges_with_latched_subpixel_weights():
    """sigma = 1 px: the weight crosses the 1 px^2 sub-sampling threshold. Switching the sampling back
    and forth made the iteration cycle between two estimates until max_iter; it now latches on."""
    rng = np.random.default_rng(1)
    for x, y in ((64.3, 63.8), (64.0, 64.0), (63.6, 64.45)):
        image = elliptical((128, 128), x, y, np.eye(2), 1e4) + rng.normal(0, 5.0, (128, 128))
        image = image.astype(np.float32).astype(np.float64)
        ref = reference_adaptive(image, 64.0, 64.0)
        r = _core.adaptive_moments(image, 0, 0, 64.0, 64.0, _core.SdssShapeControl())
        assert r["flags"] == 0 and r["n_iter"] == ref["n_iter"] < 20
        for k in ("xx", "yy", "xy", "x", "y", "inst_flux"):
            assert r[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-9), k
        # point-sampled sigma = 1 px Gaussian seen through pixel-averaged weights: a bit wider than 1
        assert 1.0 < r["xx"] < 1.15 and 1.0 < r["yy"] < 1.15


def test_very_elongated_source_exact():
    """Axis ratio 17 at 45 degrees: separating the weight into exp(-a dx^2/2) exp(-c dy^2/2) exp(-b dx dy)
    overflows exp(-b dx dy) (exp(1794) here); the recurrence along rows keeps every factor <= 1."""
    t = np.pi / 4
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cov = rot @ np.diag([400.0, 1.44]) @ rot.T
    image = elliptical((241, 241), 120.3, 119.8, cov, 1e5)
    r = _core.adaptive_moments(image, 0, 0, 120.0, 120.0, _core.SdssShapeControl())
    assert r["flags"] == 0
    assert r["xx"] == pytest.approx(cov[0, 0], rel=1e-6) and r["yy"] == pytest.approx(cov[1, 1], rel=1e-6)
    assert r["xy"] == pytest.approx(cov[0, 1], rel=1e-6)
    assert r["inst_flux"] == pytest.approx(1e5, rel=1e-6)


def test_psf_moments_helper():
    cov = np.array([[3.0, 0.4], [0.4, 2.2]])
    img = elliptical((25, 25), 12.0, 12.0, cov)
    m = psf_moments(img)
    assert not m["flag"]
    # sigma_min = 1.4 px: aliasing ~exp(-pi^2 * 2.0) = 3e-9 (see the module docstring)
    assert (m["xx"], m["yy"], m["xy"]) == pytest.approx((3.0, 2.2, 0.4), rel=1e-6)
    assert (m["x"], m["y"]) == pytest.approx((0.0, 0.0), abs=1e-9)  # kernel-image frame: centre at 0
    with pytest.raises(ValueError, match="2-D"):
        psf_moments(np.ones(5))


def test_errors_match_monte_carlo():
    rng = np.random.default_rng(21)
    cov = np.array([[6.0, 1.2], [1.2, 4.0]])
    flux, var = 1500.0, 1.0
    n_side, step = 24, 40
    shape = (n_side * step, n_side * step)
    xs = np.tile(np.arange(n_side) * step + 20.0, n_side) + rng.uniform(-0.5, 0.5, n_side**2)
    ys = np.repeat(np.arange(n_side) * step + 20.0, n_side) + rng.uniform(-0.5, 0.5, n_side**2)
    image = np.zeros(shape)
    for x, y in zip(xs, ys):
        x0, y0 = int(x) - 18, int(y) - 18
        image[y0:y0 + 37, x0:x0 + 37] += elliptical((37, 37), x - x0, y - y0, cov, flux)
    image += rng.normal(0, np.sqrt(var), shape)
    out = sdss_shape(masked(image, var), xs, ys)
    ok = ~out[f"{P}_flag"]
    assert ok.mean() > 0.98
    truth = {"xx": cov[0, 0], "yy": cov[1, 1], "xy": cov[0, 1], "instFlux": flux}
    for key, t in truth.items():
        v = out[f"{P}_{key}"][ok]
        err = np.median(out[f"{P}_{key}Err"][ok])
        assert v.std() == pytest.approx(err, rel=0.15), key
        assert abs(np.mean(v) - t) < 4 * v.std() / np.sqrt(v.size) + 0.01 * abs(t), key
    # the flux-moment covariances have the sign and size of the Monte Carlo ones
    f = out[f"{P}_instFlux"][ok]
    for key in ("xx", "yy"):
        mc = np.cov(f, out[f"{P}_{key}"][ok])[0, 1]
        assert np.median(out[f"{P}_instFlux_{key}_Cov"][ok]) == pytest.approx(mc, rel=0.3)


def test_failures_flagged_never_raise():
    image = elliptical((40, 60), 15.0, 20.0, np.eye(2) * 4, 1000.0)
    image[20, 16] = np.nan                            # a NaN pixel inside: left out (biased, not failed)
    image[:, 40:] = 0.0                               # blank: no flux
    out = sdss_shape(masked(image), [15.0, 50.0, np.nan, 0.0], [20.0, 20.0, 3.0, 0.0])
    assert not out[f"{P}_flag"][0]
    assert out[f"{P}_xx"][0] == pytest.approx(4.0, rel=0.1)
    assert out[f"{P}_flag_unweightedBad"][1] and np.isnan(out[f"{P}_xx"][1])
    assert out[f"{P}_flag_unweightedBad"][2]
    assert out[f"{P}_flag"][1:].all() or np.isfinite(out[f"{P}_xx"][3])
    # a negative source: the weighted sum is negative
    neg = -elliptical((40, 40), 20.0, 20.0, np.eye(2) * 4, 1000.0)
    out = sdss_shape(masked(neg), [20.0], [20.0])
    assert out[f"{P}_flag"][0] and out[f"{P}_flag_unweightedBad"][0]


def test_unweighted_fallback_and_maxiter():
    # an image rising outwards (r^2): the weighted moments are wider than the weight, no Gaussian
    # deconvolves them; unweighted moments about the input centre over the first box (+-8 px) instead
    yy, xx = np.mgrid[0:41, 0:41]
    image = ((xx - 20.0) ** 2 + (yy - 20.0) ** 2).astype(float)
    out = sdss_shape(masked(image), [20.0], [20.0])
    assert out[f"{P}_flag_unweighted"][0] and out[f"{P}_flag"][0] and not out[f"{P}_flag_unweightedBad"][0]
    box = image[12:29, 12:29]
    dx = xx[12:29, 12:29] - 20.0
    assert out[f"{P}_xx"][0] == pytest.approx((box * dx * dx).sum() / box.sum(), rel=1e-6)
    assert np.isnan(out[f"{P}_instFlux"][0])
    out = sdss_shape(masked(elliptical((41, 41), 20.3, 20.0, np.eye(2) * 9.0, 500.0)), [20.0], [20.0],
                     config=SdssShapeConfig(max_iter=1))
    assert out[f"{P}_flag_maxIter"][0] and out[f"{P}_flag"][0] and np.isfinite(out[f"{P}_xx"][0])


def test_shift_flag():
    image = elliptical((40, 40), 25.0, 20.0, np.eye(2) * 4, 1000.0)
    out = sdss_shape(masked(image), [21.0], [20.0])
    assert out[f"{P}_flag_shift"][0] and out[f"{P}_flag"][0]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), ny=st.integers(9, 64), nx=st.integers(9, 64), sigma=st.floats(0.5, 6.0),
       axis_ratio=st.floats(0.3, 1.0), noise=st.floats(0.0, 0.05), n_bad=st.integers(0, 6))
def test_both_builds_of_the_pixel_sums_agree_bit_for_bit(seed, ny, nx, sigma, axis_ratio, noise, n_bad):
    """The iteration's pixel sums run on four-double vectors, AVX2 where the CPU has it (issue 25): every
    output equals the portable build's to the bit, for wide weights (one sample per pixel, rows in pairs,
    odd and even widths) and narrow ones (sigma < 1 px: 4 x 4 sub-samples), with unusable pixels."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0.3, 0.7) * (nx - 1), rng.uniform(0.3, 0.7) * (ny - 1)
    t = rng.uniform(0, np.pi)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cov = r @ np.diag([sigma**2, (sigma * axis_ratio) ** 2]) @ r.T
    image = elliptical((ny, nx), x, y, cov, flux=100.0) + rng.normal(0.0, noise, (ny, nx))
    image = image.astype(np.float32)
    variance = np.full((ny, nx), noise**2 + 1e-4, np.float32)
    mask = np.zeros((ny, nx), np.int32)
    for _ in range(n_bad):
        image[rng.integers(ny), rng.integers(nx)] = np.nan
    xs, ys = np.array([x, x + 0.4]), np.array([y, y - 0.3])
    ctrl = SdssShapeConfig().to_core()
    fast = _core.sdss_shape_batch(image, mask, variance, 0, 0, xs, ys, ctrl)
    base = _core.sdss_shape_batch(image, mask, variance, 0, 0, xs, ys, ctrl, baseline_only=True)
    assert fast.keys() == base.keys()
    for k in fast:
        np.testing.assert_array_equal(np.asarray(fast[k]).view(np.uint8), np.asarray(base[k]).view(np.uint8), err_msg=k)
    image64 = np.nan_to_num(image.astype(np.float64))
    a = _core.adaptive_moments(image64, 0, 0, x, y, ctrl)
    b = _core.adaptive_moments(image64, 0, 0, x, y, ctrl, baseline_only=True)
    assert {k: np.float64(v).tobytes() for k, v in a.items()} == {k: np.float64(v).tobytes() for k, v in b.items()}
