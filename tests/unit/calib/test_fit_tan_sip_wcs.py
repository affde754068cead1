"""FitTanSipWcsTask against known TAN-SIP truths (exact and noisy pairs), a numpy least-squares reference,
astropy's evaluation of the fitted WCS, and its typed failures."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visitcal import _core
from visitcal.calib.fit_tan_sip_wcs import (
    AstrometryError,
    AstrometryFitError,
    FitTanSipWcsConfig,
    FitTanSipWcsTask,
    tan_sip_from_wcs,
)
from visitcal.core.geom import Box2I
from visitcal.core.wcs import _gnomonic, make_tan_sip_wcs

NX, NY = 4072, 4000
SCALE = 0.2 / 3600.0  # deg / px


def sep_arcsec(ra1, dec1, ra2, dec2):
    """Angular distance (arcsec), exact for tiny separations (haversine)."""
    r1, d1, r2, d2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600.0


def sip_array(order, coeffs):
    """(order+1)^2 array with the given {(p, q): value} terms."""
    a = np.zeros((order + 1, order + 1))
    for (p, q), val in coeffs.items():
        a[p, q] = val
    return a


def radial_sip(order, k2=3e-8, k3=-2e-12, k4=5e-16):
    """Realistic distortion terms: quadratic, cubic (radial) and quartic, ~1-3 px at the detector corner."""
    a = {(2, 0): k2, (1, 1): 0.5 * k2, (0, 2): -0.3 * k2}
    b = {(2, 0): -0.4 * k2, (1, 1): 0.7 * k2, (0, 2): 0.9 * k2}
    if order >= 3:
        a.update({(3, 0): k3, (1, 2): k3})
        b.update({(2, 1): k3, (0, 3): k3})
    if order >= 4:
        a.update({(4, 0): k4, (2, 2): -k4, (1, 3): 0.5 * k4})
        b.update({(0, 4): k4, (2, 2): 0.7 * k4, (3, 1): -0.5 * k4})
    return sip_array(order, a), sip_array(order, b)


def truth_wcs(x, y, *, order=2, crval=(150.0, 2.0), rotation_deg=20.0, scale=SCALE, flip=True, a=None, b=None):
    """A TAN-SIP truth whose CRPIX is the sources' mean position (so its tangent point is the one the fit
    converges to and the truth lies in the fitted model space)."""
    th = np.radians(rotation_deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    cd = scale * rot @ np.diag([-1.0 if flip else 1.0, 1.0])
    if a is None:
        a, b = radial_sip(order)
    return make_tan_sip_wcs((np.mean(x), np.mean(y)), crval, cd, sip_a=a, sip_b=b)


def random_sources(rng, n, nx=NX, ny=NY):
    return rng.uniform(-0.5, nx - 0.5, n), rng.uniform(-0.5, ny - 0.5, n)


def grid(nx=NX, ny=NY, k=21):
    gx, gy = np.meshgrid(np.linspace(-0.5, nx - 0.5, k), np.linspace(-0.5, ny - 0.5, k))
    return gx.ravel(), gy.ravel()


def grid_error_arcsec(result, truth, nx=NX, ny=NY):
    gx, gy = grid(nx, ny)
    r1, d1 = truth.all_pix2world(gx, gy, 0)
    r2, d2 = result.wcs.all_pix2world(gx, gy, 0)
    return sep_arcsec(r1, d1, r2, d2)


# --- configuration ---------------------------------------------------------------------------------------


def test_config_defaults_match_control_and_lsst():
    cfg, ctl = FitTanSipWcsConfig(), _core.FitTanSipControl()
    assert (cfg.order, cfg.num_iter, cfg.num_rej_iter, cfg.rej_sigma, cfg.max_scatter_arcsec) == (2, 3, 1, 3.0, 10.0)
    got = cfg._control()
    for name in ("order", "num_iter", "num_rej_iter", "rej_sigma", "max_scatter_arcsec", "inverse_order"):
        assert getattr(got, name) == getattr(ctl, name), name
    with pytest.raises(ValueError):
        FitTanSipWcsConfig(bogus=1)
    with pytest.raises(ValueError):
        FitTanSipWcsConfig(order=1)


def test_task_pickles_and_copies():
    task = FitTanSipWcsTask(FitTanSipWcsConfig(order=4))
    for other in (pickle.loads(pickle.dumps(task)), copy.deepcopy(task)):
        assert other.config == task.config
    assert "order=4" in repr(task)


# --- exact recovery --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [2, 4])
def test_exact_recovery(order):
    rng = np.random.default_rng(order)
    x, y = random_sources(rng, 500)
    truth = truth_wcs(x, y, order=order)
    ra, dec = truth.all_pix2world(x, y, 0)
    res = FitTanSipWcsTask(FitTanSipWcsConfig(order=order)).fit_wcs(x, y, ra, dec, bbox=Box2I(0, 0, NX - 1, NY - 1))
    assert res.rms_arcsec < 1e-6
    assert res.scatter_on_sky < 1e-6
    assert grid_error_arcsec(res, truth).max() < 1e-6
    # The fit's own bookkeeping: CRVAL is the true sky position of CRPIX (the pass after the rejection,
    # which on exact data drops pairs on 1e-12" residuals, starts from the mean of the pairs left, so CRPIX
    # is not the truth's); no SIP term below order 2.
    crpix = res.wcs.wcs.crpix - 1.0
    assert sep_arcsec(*res.wcs.wcs.crval, *truth.all_pix2world([crpix[0]], [crpix[1]], 0)) < 1e-6
    a = res.wcs.sip.a
    assert a[0, 0] == a[1, 0] == a[0, 1] == 0.0
    assert res.reverse_max_error_px < 1e-3


@settings(max_examples=60, deadline=None)
@given(rotation=st.floats(-180, 180), log_scale=st.floats(np.log(0.05), np.log(1.0)), flip=st.booleans(),
       ra0=st.floats(0, 360, exclude_max=True), dec0=st.floats(-85, 85), order=st.integers(2, 4),
       coeffs=st.lists(st.floats(-1.0, 1.0), min_size=30, max_size=30), seed=st.integers(0, 2**16))
def test_exact_recovery_property(rotation, log_scale, flip, ra0, dec0, order, coeffs, seed):
    """Any CD rotation/scale/parity, tangent point and SIP coefficients (up to ~5 px of distortion at the
    corner per term) are recovered from noise-free pairs."""
    rng = np.random.default_rng(seed)
    nx, ny = 2048, 4096
    x, y = random_sources(rng, 300, nx, ny)
    half = 0.5 * np.hypot(nx, ny)
    a, b, k = np.zeros((order + 1,) * 2), np.zeros((order + 1,) * 2), 0
    for p in range(order + 1):
        for q in range(order + 1 - p):
            if p + q >= 2:
                a[p, q] = 5.0 * coeffs[k] / half ** (p + q - 1)
                b[p, q] = 5.0 * coeffs[k + 1] / half ** (p + q - 1)
                k += 2
    truth = truth_wcs(x, y, order=order, crval=(ra0, dec0), rotation_deg=rotation, scale=np.exp(log_scale) / 3600,
                      flip=flip, a=a, b=b)
    ra, dec = truth.all_pix2world(x, y, 0)
    res = FitTanSipWcsTask(FitTanSipWcsConfig(order=order)).fit_wcs(x, y, ra, dec)
    assert res.rms_arcsec < 1e-6
    assert grid_error_arcsec(res, truth, nx, ny).max() < 1e-6


# --- agreement with astropy and with a numpy reference ---------------------------------------------------


def test_astropy_evaluates_our_model():
    rng = np.random.default_rng(7)
    x, y = random_sources(rng, 800)
    truth = truth_wcs(x, y, order=4, crval=(359.95, -30.0))  # the fitted CRVAL sits near ra = 0 / 360
    ra, dec = truth.all_pix2world(x, y, 0)
    ra = ra + rng.normal(0, 0.05 / 3600, x.size) / np.cos(np.radians(dec))
    dec = dec + rng.normal(0, 0.05 / 3600, x.size)
    res = FitTanSipWcsTask(FitTanSipWcsConfig(order=4)).fit_wcs(x, y, ra, dec, bbox=(-0.5, NX - 0.5, -0.5, NY - 0.5))
    gx, gy = grid(k=41)
    ra_a, dec_a = res.wcs.all_pix2world(gx, gy, 0)
    ra_c, dec_c = res.tan_sip.pixel_to_sky(gx, gy)
    assert (sep_arcsec(ra_a, dec_a, ra_c, dec_c) / 3600).max() < 1e-10
    # The reverse polynomials invert the forward ones over the box, ours and astropy's evaluation alike.
    xr, yr = res.tan_sip.sky_to_pixel_reverse(ra_c, dec_c)
    assert np.hypot(xr - gx, yr - gy).max() < 1e-3
    # astropy: wcs_world2pix gives CRPIX + (U, V); sip_foc2pix takes (U, V) relative to CRPIX (with origin=1
    # taken as is) and returns the 1-based pixel.
    foc = res.wcs.wcs_world2pix(np.column_stack([ra_c, dec_c]), 0) - (res.wcs.wcs.crpix - 1.0)
    xa, ya = (res.wcs.sip_foc2pix(foc, 1) - 1.0).T
    np.testing.assert_allclose(xa, xr, atol=1e-8)
    np.testing.assert_allclose(ya, yr, atol=1e-8)
    # A header round trip keeps it (to the 17 digits written).
    from visitcal.core.wcs import read_wcs, wcs_to_header

    back = read_wcs(wcs_to_header(res.wcs))
    rb, db = back.all_pix2world(gx, gy, 0)
    assert sep_arcsec(rb, db, ra_a, dec_a).max() < 1e-9
    # And tan_sip_from_wcs rebuilds the C++ model from astropy's.
    rr, dd = tan_sip_from_wcs(res.wcs).pixel_to_sky(gx, gy)
    assert sep_arcsec(rr, dd, ra_c, dec_c).max() < 1e-9


def test_matches_numpy_least_squares_reference():
    """One fit, no rejection: the fitted function is numpy's lstsq polynomial on the same tangent plane."""
    rng = np.random.default_rng(11)
    order = 3
    x, y = random_sources(rng, 400)
    truth = truth_wcs(x, y, order=order)
    ra, dec = truth.all_pix2world(x, y, 0)
    ra = ra + rng.normal(0, 0.3 / 3600, x.size)
    dec = dec + rng.normal(0, 0.3 / 3600, x.size)
    w = rng.uniform(0.5, 2.0, x.size)
    cfg = FitTanSipWcsConfig(order=order, num_iter=1, num_rej_iter=0)
    res = FitTanSipWcsTask(cfg).fit_wcs(x, y, ra, dec, weights=w)
    # numpy: tangent point = normalised mean unit vector, monomials in pixel offsets from the mean position.
    vec = np.column_stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                           np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))]).sum(0)
    ra0, dec0 = np.degrees(np.arctan2(vec[1], vec[0])) % 360, np.degrees(np.arctan2(vec[2], np.hypot(*vec[:2])))
    np.testing.assert_allclose(res.wcs.wcs.crval, [ra0, dec0], rtol=0, atol=1e-12)
    xi, eta = _gnomonic(ra, dec, ra0, dec0)
    terms = [(d - j, j) for d in range(order + 1) for j in range(d + 1)]
    s = 2000.0

    def design(px, py):
        return np.column_stack([((px - x.mean()) / s) ** p * ((py - y.mean()) / s) ** q for p, q in terms])

    sw = np.sqrt(w)[:, None]
    cx, cy = np.linalg.lstsq(design(x, y) * sw, np.column_stack([xi, eta]) * sw, rcond=None)[0].T
    gx, gy = grid()
    xi_c, eta_c = res.tan_sip.pixel_to_intermediate(gx, gy)
    np.testing.assert_allclose(xi_c, design(gx, gy) @ cx, rtol=0, atol=1e-11)  # degrees: 4e-8 arcsec
    np.testing.assert_allclose(eta_c, design(gx, gy) @ cy, rtol=0, atol=1e-11)
    # Residuals as reported: fitted minus reference on that plane, arcsec.
    np.testing.assert_allclose(res.residuals[:, 0], (design(x, y) @ cx - xi) * 3600, atol=1e-7)
    np.testing.assert_allclose(res.residuals[:, 1], (design(x, y) @ cy - eta) * 3600, atol=1e-7)


# --- noise and outliers -----------------------------------------------------------------------------------


def noisy_case(rng, n, sigma_px, order=3):
    x, y = random_sources(rng, n)
    truth = truth_wcs(x, y, order=order)
    ra, dec = truth.all_pix2world(x, y, 0)
    return x + rng.normal(0, sigma_px, n), y + rng.normal(0, sigma_px, n), ra, dec, truth


def test_noise_follows_least_squares_expectation():
    """Centroid noise sigma px, n stars, T = (order+1)(order+2)/2 terms per axis: the fitted function's mean
    squared error over the detector is sigma^2 T / n per axis (uniform sources), i.e. an rms of
    scale * sigma * sqrt(2 T / n) on the sky. Averaged over 12 realisations, within 15%."""
    order, n, sigma = 3, 500, 0.05
    t = (order + 1) * (order + 2) // 2
    expected = SCALE * 3600 * sigma * np.sqrt(2 * t / n)
    rng = np.random.default_rng(3)
    mse = []
    for _ in range(12):
        x, y, ra, dec, truth = noisy_case(rng, n, sigma, order)
        res = FitTanSipWcsTask(FitTanSipWcsConfig(order=order)).fit_wcs(x, y, ra, dec)
        mse.append(np.mean(grid_error_arcsec(res, truth) ** 2))
        # The residual rms is the noise less the fitted degrees of freedom: sigma * sqrt(2 (n - T) / n).
        assert res.rms_arcsec == pytest.approx(SCALE * 3600 * sigma * np.sqrt(2), rel=0.15)
    assert np.sqrt(np.mean(mse)) / expected == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("direction", ["random", "negative_xi"])
def test_outliers_are_rejected_and_do_not_bias(direction):
    """5% of the references moved by 5" (random directions, or all towards -xi, which LSST's one-sided
    test would keep): all rejected, and the fit is as good as without them."""
    rng = np.random.default_rng(5)
    n, sigma = 1000, 0.05  # 10 mas
    x, y, ra, dec, truth = noisy_case(rng, n, sigma)
    clean = FitTanSipWcsTask(FitTanSipWcsConfig(order=3)).fit_wcs(x, y, ra, dec)
    bad = rng.choice(n, n // 20, replace=False)
    phi = rng.uniform(0, 2 * np.pi, bad.size) if direction == "random" else np.full(bad.size, np.pi)
    ra_o, dec_o = ra.copy(), dec.copy()
    ra_o[bad] += 5.0 / 3600 * np.cos(phi) / np.cos(np.radians(dec[bad]))
    dec_o[bad] += 5.0 / 3600 * np.sin(phi)
    res = FitTanSipWcsTask(FitTanSipWcsConfig(order=3)).fit_wcs(x, y, ra_o, dec_o)
    assert not res.used[bad].any()
    good = np.setdiff1d(np.arange(n), bad)
    assert res.used[good].mean() > 0.98  # 3-sigma clipping of Gaussian noise drops ~0.3-0.5%
    err_clean = np.sqrt(np.mean(grid_error_arcsec(clean, truth) ** 2))
    err = np.sqrt(np.mean(grid_error_arcsec(res, truth) ** 2))
    assert err < 1.2 * err_clean + 1e-4
    assert err < 0.004  # 4 mas, against an expectation of 0.2" * 0.05 * sqrt(20 / 950) = 1.5 mas
    # Without rejection the outliers pull the fit by tens of mas.
    raw = FitTanSipWcsTask(FitTanSipWcsConfig(order=3, num_rej_iter=0)).fit_wcs(x, y, ra_o, dec_o)
    assert np.sqrt(np.mean(grid_error_arcsec(raw, truth) ** 2)) > 5 * err


def test_deterministic():
    rng = np.random.default_rng(9)
    x, y, ra, dec, _ = noisy_case(rng, 300, 0.1)
    r1 = FitTanSipWcsTask().fit_wcs(x, y, ra, dec)
    r2 = FitTanSipWcsTask().fit_wcs(x.copy(), y.copy(), ra.copy(), dec.copy())
    assert r1.residuals.tobytes() == r2.residuals.tobytes()
    assert r1.wcs.sip.a.tobytes() == r2.wcs.sip.a.tobytes() and r1.wcs.sip.bp.tobytes() == r2.wcs.sip.bp.tobytes()
    # The result pickles (the process pool ships it), C++ model included.
    back = pickle.loads(pickle.dumps(r1))
    gx, gy = grid()
    assert np.array_equal(np.array(back.tan_sip.pixel_to_sky(gx, gy)), np.array(r1.tan_sip.pixel_to_sky(gx, gy)))
    # astropy pickles a WCS through a header of its default precision (and CD becomes PC x CDELT): close,
    # not bit-identical.
    assert sep_arcsec(*back.wcs.all_pix2world(gx, gy, 0), *r1.wcs.all_pix2world(gx, gy, 0)).max() < 1e-6
    assert "TanSipWcs(crval=" in repr(r1.tan_sip)


def test_bbox_from_initial_wcs_shape():
    rng = np.random.default_rng(2)
    x, y = random_sources(rng, 200, 1000, 1000)  # sources cover only a corner of the detector
    truth = truth_wcs(x, y, order=2)
    truth.pixel_shape = (NX, NY)
    ra, dec = truth.all_pix2world(x, y, 0)
    res = FitTanSipWcsTask().fit_wcs(x, y, ra, dec, initial_wcs=truth)
    assert res.bbox == (-0.5, NX - 0.5, -0.5, NY - 0.5)
    assert res.wcs.pixel_shape == (NX, NY)
    gx, gy = grid()
    rr, dd = res.tan_sip.pixel_to_sky(gx, gy)
    xr, yr = res.tan_sip.sky_to_pixel_reverse(rr, dd)
    assert np.hypot(xr - gx, yr - gy).max() < 1e-3


# --- failures ----------------------------------------------------------------------------------------------


def test_too_few_pairs():
    rng = np.random.default_rng(0)
    x, y = random_sources(rng, 14)
    truth = truth_wcs(x, y, order=4)
    ra, dec = truth.all_pix2world(x, y, 0)
    with pytest.raises(AstrometryFitError, match="15 needed") as info:
        FitTanSipWcsTask(FitTanSipWcsConfig(order=4)).fit_wcs(x, y, ra, dec)
    assert info.value.reason == "too_few_pairs" and info.value.n_required == 15 and info.value.n_pairs == 14
    assert isinstance(info.value, AstrometryError) and isinstance(info.value, RuntimeError)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is AstrometryFitError and again.n_required == 15 and str(again) == str(info.value)


def test_too_few_after_rejection():
    """Six pairs for order 2 (6 terms): a rejection leaves five."""
    rng = np.random.default_rng(1)
    x, y = random_sources(rng, 7)
    truth = truth_wcs(x, y, order=2)
    ra, dec = truth.all_pix2world(x, y, 0)
    dec = dec + np.array([0, 0, 0, 0, 0, 0, 20.0]) / 3600
    with pytest.raises(AstrometryFitError, match="after rejection") as info:
        FitTanSipWcsTask(FitTanSipWcsConfig(rej_sigma=0.5)).fit_wcs(x, y, ra, dec)
    assert info.value.reason == "too_few_pairs"


@pytest.mark.parametrize("order", [3, "auto"])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_bad_rows_are_left_out(order, data):
    # A pair with a non-finite value, a weight <= 0 or |dec| > 90 is left out (bad_input, not used, NaN
    # residuals); the fit of the others is bit-identical to the fit without those rows.
    rng = np.random.default_rng(4)
    x, y = random_sources(rng, 80)
    ra, dec = truth_wcs(x, y).all_pix2world(x, y, 0)
    args = dict(x=x, y=y, ra=ra, dec=dec, weights=rng.uniform(0.5, 2.0, 80))
    rows = data.draw(st.lists(st.integers(0, 79), min_size=1, max_size=6, unique=True))
    mixed = {k: v.copy() for k, v in args.items()}
    for r in rows:
        name = data.draw(st.sampled_from(["x", "y", "ra", "dec", "weights"]))
        value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf] + ([0.0, -1.0] if name == "weights" else [])
                                          + ([91.0, -95.0] if name == "dec" else [])))
        mixed[name][r] = value
    task = FitTanSipWcsTask(FitTanSipWcsConfig(order=order))
    box = (0.0, 4000.0, 0.0, 4000.0)
    res = task.fit_wcs(mixed["x"], mixed["y"], mixed["ra"], mixed["dec"], weights=mixed["weights"], bbox=box)
    keep = np.ones(80, bool)
    keep[rows] = False
    clean = task.fit_wcs(x[keep], y[keep], ra[keep], dec[keep], weights=args["weights"][keep], bbox=box)
    assert res.bad_input.tolist() == (~keep).tolist() and not clean.bad_input.any()
    assert not res.used[~keep].any() and np.isnan(res.residuals[~keep]).all()
    assert np.array_equal(res.used[keep], clean.used) and np.array_equal(res.residuals[keep], clean.residuals)
    assert (res.order, res.n_used, res.scatter_on_sky) == (clean.order, clean.n_used, clean.scatter_on_sky)
    assert res.wcs.to_header_string(relax=True) == clean.wcs.to_header_string(relax=True)


def test_scatter_too_large():
    rng = np.random.default_rng(6)
    x, y = random_sources(rng, 200)
    ra, dec = truth_wcs(x, y).all_pix2world(x, y, 0)
    dec = dec + rng.normal(0, 30.0, x.size) / 3600  # 30" of scatter: a wrong match
    with pytest.raises(AstrometryFitError, match="exceeds max_scatter_arcsec") as info:
        FitTanSipWcsTask().fit_wcs(x, y, ra, dec)
    assert info.value.reason == "scatter_too_large" and info.value.scatter_arcsec > 10.0
    # With a looser limit it passes.
    res = FitTanSipWcsTask(FitTanSipWcsConfig(max_scatter_arcsec=100.0)).fit_wcs(x, y, ra, dec)
    assert 10.0 < res.scatter_on_sky < 100.0


def test_degenerate_geometry_and_bad_arguments():
    x = np.linspace(0, 1000, 50)
    y = 2.0 * x + 3.0  # on a line
    ra, dec = truth_wcs(np.array([0.0, 1000]), np.array([0.0, 2000])).all_pix2world(x, y, 0)
    with pytest.raises(AstrometryFitError, match="degenerate") as info:
        FitTanSipWcsTask().fit_wcs(x, y, ra, dec)
    assert info.value.reason == "degenerate"
    rng = np.random.default_rng(8)
    x, y = random_sources(rng, 50)
    ra, dec = truth_wcs(x, y).all_pix2world(x, y, 0)
    with pytest.raises(ValueError, match="ra has 49 values"):
        FitTanSipWcsTask().fit_wcs(x, y, ra[:-1], dec)
    with pytest.raises(AstrometryFitError, match="none of 50 is usable") as info:  # every row bad
        FitTanSipWcsTask().fit_wcs(x, y, ra, dec, weights=np.zeros(50))
    assert info.value.reason == "too_few_pairs"
    with pytest.raises(ValueError, match="bbox"):
        FitTanSipWcsTask().fit_wcs(x, y, ra, dec, bbox=(10, 0, 0, 10))


# --- order chosen by held-out residuals (order = "auto", issue 21) ---------------------------------------


@pytest.mark.parametrize("true_order, n, expected", [(3, 600, 3), (4, 2000, 4), (2, 600, 2)])
def test_auto_order_finds_the_true_order(true_order, n, expected):
    """With enough stars, k-fold cross-validation picks the truth's order (a lower one leaves the distortion,
    a higher one only fits noise, and the lowest within 5% of the best wins), and the fit is then as good as
    the fixed-order fit of that order."""
    rng = np.random.default_rng(11 + true_order)
    x, y = random_sources(rng, n)
    # each order's terms worth ~0.5 px at the corners, against 0.05 px of centroid noise
    a, b = radial_sip(true_order, k3=-2e-11, k4=8e-15)
    truth = truth_wcs(x, y, order=true_order, a=a, b=b)
    ra, dec = truth.all_pix2world(x, y, 0)
    x, y = x + rng.normal(0, 0.05, n), y + rng.normal(0, 0.05, n)
    task = FitTanSipWcsTask(FitTanSipWcsConfig(order="auto"))
    res = task.fit_wcs(x, y, ra, dec, bbox=Box2I(0, 0, NX - 1, NY - 1))
    assert res.order == expected, res.order_scores
    assert set(res.order_scores) == {2, 3, 4, 5}
    fixed = FitTanSipWcsTask(FitTanSipWcsConfig(order=expected)).fit_wcs(x, y, ra, dec,
                                                                          bbox=Box2I(0, 0, NX - 1, NY - 1))
    np.testing.assert_allclose(grid_error_arcsec(res, truth), grid_error_arcsec(fixed, truth), atol=1e-9)
    assert task.select_order(x, y, ra, dec) == task.select_order(x, y, ra, dec)  # deterministic


def test_auto_order_respects_stars_per_parameter():
    """30 stars, 5 folds (24 training pairs), 4 per term: orders with more than 6 terms are not tried, so the
    order is 2 with no scores; with 10 stars even order 2 is short of 4 per term, and 2 is used as is."""
    rng = np.random.default_rng(5)
    x, y, ra, dec, truth = noisy_case(rng, 30, 0.05, order=3)
    res = FitTanSipWcsTask(FitTanSipWcsConfig(order="auto")).fit_wcs(x, y, ra, dec)
    assert res.order == 2 and res.order_scores == {}
    res = FitTanSipWcsTask(FitTanSipWcsConfig(order="auto")).fit_wcs(x[:10], y[:10], ra[:10], dec[:10])
    assert res.order == 2
    with pytest.raises(AstrometryFitError) as exc:
        FitTanSipWcsTask(FitTanSipWcsConfig(order="auto")).fit_wcs(x[:5], y[:5], ra[:5], dec[:5])
    assert exc.value.reason == "too_few_pairs"
    with pytest.raises(ValueError, match="order must be 2 to 9"):
        FitTanSipWcsConfig(order=1)
    with pytest.raises(ValueError, match="order_range"):
        FitTanSipWcsConfig(order_range=(4, 3))
    with pytest.raises(ValueError, match="auto"):
        FitTanSipWcsConfig(order="auto")._control()
