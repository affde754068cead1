"""`FitAffineWcsTask` (issue 21): an affine correction on top of the preliminary WCS's camera distortion.

The truth is a TAN-SIP WCS with a radial cubic distortion about an optical axis off the detector (as
`visitcal.sim`'s camera); the preliminary WCS is the truth with its CD matrix rotated, scaled and sheared and
its tangent point moved by arcseconds. That difference is exactly an affine map on the intermediate
coordinates, so noiseless pairs must give the truth back to numerical precision over the whole detector,
and noisy ones to the least-squares expectation.
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
from visitcal.calib.fit_affine_wcs import FitAffineWcsConfig, FitAffineWcsTask
from visitcal.calib.fit_tan_sip_wcs import AstrometryFitError
from visitcal.core.geom import Box2I
from visitcal.core.wcs import make_tan_sip_wcs, read_wcs, wcs_to_header

NX, NY = 4072, 4000
SCALE = 0.2 / 3600.0


def sep_mas(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3.6e6


def truth_and_preliminary(dec0=-30.0):
    th = np.radians(25.0)
    cd = SCALE * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([-1.0, 1.0])
    k = 2.5 / 7000.0**3  # radial cubic: 2.5 px (0.5") at 7000 px from the axis
    a, b = np.zeros((4, 4)), np.zeros((4, 4))
    a[3, 0] = a[1, 2] = k
    b[2, 1] = b[0, 3] = k
    crpix = (-3000.0, 5200.0)  # the optical axis, off the detector
    truth = make_tan_sip_wcs(crpix, (62.0, dec0), cd, sip_a=a, sip_b=b)
    # the preliminary: rotated 2e-3 rad, scaled 1e-3, sheared 3e-4, tangent point 3" away
    e = 2e-3
    m = (1 + 1e-3) * np.array([[np.cos(e), -np.sin(e)], [np.sin(e), np.cos(e)]]) @ np.array([[1.0, 3e-4], [0.0, 1.0]])
    prelim = make_tan_sip_wcs(crpix, (62.0 + 2.0 / 3600, dec0 - 2.2 / 3600), m @ cd, sip_a=a, sip_b=b)
    return truth, prelim


def grid_error(wcs, truth, n=41):
    gx, gy = np.meshgrid(np.linspace(-0.5, NX - 0.5, n), np.linspace(-0.5, NY - 0.5, n))
    return sep_mas(*wcs.all_pix2world(gx.ravel(), gy.ravel(), 0), *truth.all_pix2world(gx.ravel(), gy.ravel(), 0))


def pairs(truth, n, seed=1, noise_px=0.0):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-0.5, NX - 0.5, n), rng.uniform(-0.5, NY - 0.5, n)
    ra, dec = truth.all_pix2world(x, y, 0)
    return x + rng.normal(0, noise_px, n) * (noise_px > 0), y + rng.normal(0, noise_px, n) * (noise_px > 0), ra, dec


@pytest.mark.parametrize("dec0", [-30.0, 75.0])
def test_noiseless_pairs_give_the_truth_over_the_whole_detector(dec0):
    truth, prelim = truth_and_preliminary(dec0)
    assert grid_error(prelim, truth).max() > 1000.0  # the preliminary is arcseconds off
    x, y, ra, dec = pairs(truth, 12)
    res = FitAffineWcsTask().fit_wcs(x, y, ra, dec, initial_wcs=prelim, bbox=Box2I(0, 0, NX - 1, NY - 1))
    assert grid_error(res.wcs, truth).max() < 1e-3  # mas
    assert res.rms_arcsec < 1e-6 and res.n_used == 12 and res.used.all()
    # the camera model is untouched: CRPIX and the SIP polynomials are the preliminary WCS's
    np.testing.assert_array_equal(res.wcs.wcs.crpix, prelim.wcs.crpix)
    np.testing.assert_array_equal(res.wcs.sip.a, prelim.sip.a)
    np.testing.assert_array_equal(res.wcs.sip.b, prelim.sip.b)
    # the fitted matrix undoes the preliminary's rotation/scale/shear: CD_new = CD_prelim M = CD_true
    np.testing.assert_allclose(prelim.wcs.cd @ res.matrix, truth.wcs.cd, rtol=0, atol=1e-13)
    assert res.crval_shift_arcsec == pytest.approx(np.hypot(2.0 * np.cos(np.radians(dec0)), 2.2), rel=0.05)


def test_result_is_a_tan_sip_fits_wcs():
    truth, prelim = truth_and_preliminary()
    x, y, ra, dec = pairs(truth, 20)
    wcs = FitAffineWcsTask().fit_wcs(x, y, ra, dec, initial_wcs=prelim).wcs
    back = read_wcs(wcs_to_header(wcs))
    assert list(back.wcs.ctype) == ["RA---TAN-SIP", "DEC--TAN-SIP"]
    assert grid_error(back, wcs).max() < 1e-6


def test_noisy_pairs_reach_the_least_squares_expectation():
    """20 mas centroid noise per axis, 40 stars, 6 parameters: the rms over the detector is about
    20 mas x sqrt(6 / 40) x ~1.4 (the corners are extrapolated) = 8 mas; we allow 12, and the fit's
    own residual rms estimates the noise (20 x sqrt(2 (40 - 6) / 40) = 26 mas)."""
    truth, prelim = truth_and_preliminary()
    rms = []
    for seed in range(10):
        x, y, ra, dec = pairs(truth, 40, seed=seed, noise_px=0.1)
        res = FitAffineWcsTask(FitAffineWcsConfig(num_rej_iter=0)).fit_wcs(x, y, ra, dec, initial_wcs=prelim)
        rms.append(np.sqrt(np.mean(grid_error(res.wcs, truth) ** 2)))
        assert 0.018 < res.rms_arcsec < 0.034
    assert np.sqrt(np.mean(np.square(rms))) < 12.0


def test_weights_favour_the_precise_stars():
    truth, prelim = truth_and_preliminary()
    rng = np.random.default_rng(5)
    x, y, ra, dec = pairs(truth, 40)
    sigma = np.where(np.arange(40) < 10, 0.01, 0.5)  # 10 precise stars, 30 poor ones
    xn, yn = x + rng.normal(0, sigma), y + rng.normal(0, sigma)
    task = FitAffineWcsTask(FitAffineWcsConfig(num_rej_iter=0))
    plain = np.sqrt(np.mean(grid_error(task.fit_wcs(xn, yn, ra, dec, initial_wcs=prelim).wcs, truth) ** 2))
    weighted = np.sqrt(np.mean(grid_error(task.fit_wcs(xn, yn, ra, dec, initial_wcs=prelim,
                                                       weights=1 / sigma**2).wcs, truth) ** 2))
    assert weighted < 5.0 < plain


def test_rejection_drops_a_mismatch():
    truth, prelim = truth_and_preliminary()
    x, y, ra, dec = pairs(truth, 30, noise_px=0.02)
    ra, dec = ra.copy(), dec.copy()
    ra[7] += 3.0 / 3600  # a wrong pair, 3" off
    res = FitAffineWcsTask().fit_wcs(x, y, ra, dec, initial_wcs=prelim)
    assert not res.used[7] and res.used.sum() >= 27
    assert np.sqrt(np.mean(grid_error(res.wcs, truth) ** 2)) < 5.0
    assert abs(res.residuals[7, 0]) > 2.0


def similarity_preliminary(dec0=-30.0):
    """The truth of `truth_and_preliminary` and a preliminary WCS off by a rotation, a scale and a shift only
    (no shear): what a camera model with a pointing, rotator and plate-scale error gives."""
    truth, _ = truth_and_preliminary(dec0)
    e = 2e-3
    m = (1 + 1e-3) * np.array([[np.cos(e), -np.sin(e)], [np.sin(e), np.cos(e)]])
    prelim = make_tan_sip_wcs(np.asarray(truth.wcs.crpix) - 1.0, (62.0 + 2.0 / 3600, dec0 - 2.2 / 3600),
                              m @ truth.wcs.cd, sip_a=truth.sip.a, sip_b=truth.sip.b)
    return truth, prelim


@pytest.mark.parametrize("dec0", [-30.0, 75.0])
def test_similarity_recovers_a_rotation_scale_and_shift_exactly(dec0):
    truth, prelim = similarity_preliminary(dec0)
    x, y, ra, dec = pairs(truth, 5)
    res = FitAffineWcsTask(FitAffineWcsConfig(transform="similarity")).fit_wcs(x, y, ra, dec, initial_wcs=prelim)
    assert res.transform == "similarity" and math.isnan(res.shear_p_value)
    assert grid_error(res.wcs, truth).max() < 1e-3  # mas
    # the fitted matrix is a rotation and a scale: CD_prelim M = CD_true
    np.testing.assert_allclose(prelim.wcs.cd @ res.matrix, truth.wcs.cd, rtol=0, atol=1e-13)


def test_similarity_beats_affine_on_few_noisy_stars():
    """8 stars with 0.1 px (20 mas) of centroid noise, a preliminary off by a similarity: the 4-parameter fit's
    expected full-detector rms is about sqrt(4/6) of the 6-parameter one's (fewer parameters from the same
    pairs, and no shear to extrapolate to the corners); over 30 draws the similarity must be better by 15%."""
    truth, prelim = similarity_preliminary()
    rms = {"similarity": [], "affine": []}
    for seed in range(30):
        x, y, ra, dec = pairs(truth, 8, seed=seed, noise_px=0.1)
        for t in rms:
            res = FitAffineWcsTask(FitAffineWcsConfig(transform=t, num_rej_iter=0)).fit_wcs(
                x, y, ra, dec, initial_wcs=prelim)
            rms[t].append(np.sqrt(np.mean(grid_error(res.wcs, truth) ** 2)))
    sim, aff = (np.sqrt(np.mean(np.square(rms[t]))) for t in ("similarity", "affine"))
    assert sim < 0.85 * aff


def test_auto_keeps_the_affine_only_when_the_shear_is_significant():
    # a sheared preliminary (3e-4: 1.2 px across the detector) with 0.1 px noise on 20 stars: affine
    truth, prelim = truth_and_preliminary()
    x, y, ra, dec = pairs(truth, 20, seed=3, noise_px=0.1)
    res = FitAffineWcsTask().fit_wcs(x, y, ra, dec, initial_wcs=prelim)
    assert res.transform == "affine" and res.shear_p_value < 1e-6
    assert np.sqrt(np.mean(grid_error(res.wcs, truth) ** 2)) < 12.0
    # no shear: the similarity, in (1 - 0.01) of the draws at least (the test's false-alarm rate is 1%)
    truth, prelim = similarity_preliminary()
    chosen = []
    for seed in range(40):
        x, y, ra, dec = pairs(truth, 20, seed=seed, noise_px=0.1)
        res = FitAffineWcsTask(FitAffineWcsConfig(num_rej_iter=0)).fit_wcs(x, y, ra, dec, initial_wcs=prelim)
        assert 0 <= res.shear_p_value <= 1
        chosen.append(res.transform)
    assert chosen.count("similarity") >= 38


def test_plain_tan_preliminary_is_supported():
    th = np.radians(10.0)
    cd = SCALE * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([-1.0, 1.0])
    truth = make_tan_sip_wcs((NX / 2, NY / 2), (10.0, 5.0), cd)
    prelim = make_tan_sip_wcs((NX / 2, NY / 2), (10.0 + 1 / 3600, 5.0), 1.001 * cd)
    x, y, ra, dec = pairs(truth, 8)
    res = FitAffineWcsTask().fit_wcs(x, y, ra, dec, initial_wcs=prelim)
    assert res.wcs.sip is None and grid_error(res.wcs, truth).max() < 1e-3


def test_errors_are_typed_and_in_our_words():
    truth, prelim = truth_and_preliminary()
    x, y, ra, dec = pairs(truth, 10)
    task = FitAffineWcsTask()
    with pytest.raises(AstrometryFitError, match="too few pairs") as exc:
        FitAffineWcsTask(FitAffineWcsConfig(transform="affine")).fit_wcs(x[:2], y[:2], ra[:2], dec[:2],
                                                                         initial_wcs=prelim)
    assert exc.value.reason == "too_few_pairs" and exc.value.n_required == 3
    with pytest.raises(AstrometryFitError, match="too few pairs") as exc:  # "auto" starts from the similarity
        task.fit_wcs(x[:1], y[:1], ra[:1], dec[:1], initial_wcs=prelim)
    assert exc.value.reason == "too_few_pairs" and exc.value.n_required == 2
    bad = x.copy()
    bad[3] = np.nan  # a bad row is left out: the fit of the others, bit-identical
    res = task.fit_wcs(bad, y, ra, dec, initial_wcs=prelim)
    keep = np.arange(10) != 3
    clean = task.fit_wcs(x[keep], y[keep], ra[keep], dec[keep], initial_wcs=prelim)
    assert res.bad_input.tolist() == (~keep).tolist() and not res.used[3] and np.isnan(res.residuals[3]).all()
    assert np.array_equal(res.residuals[keep], clean.residuals) and np.array_equal(res.matrix, clean.matrix)
    dbad = dec.copy()
    dbad[[1, 2]] = [95.0, np.inf]
    w = np.ones(10)
    w[5] = 0.0
    res = task.fit_wcs(x, y, ra, dbad, initial_wcs=prelim, weights=w)
    assert np.flatnonzero(res.bad_input).tolist() == [1, 2, 5] and res.n_used <= 7
    line = np.linspace(0, 1000, 10)
    lra, ldec = truth.all_pix2world(line, line, 0)
    with pytest.raises(AstrometryFitError, match="degenerate") as exc:
        FitAffineWcsTask(FitAffineWcsConfig(transform="affine")).fit_wcs(line, line, lra, ldec, initial_wcs=prelim)
    assert exc.value.reason == "degenerate"
    # a line fixes a rotation and a scale: "auto" keeps the similarity rather than fail
    assert task.fit_wcs(line, line, lra, ldec, initial_wcs=prelim).transform == "similarity"
    with pytest.raises(AstrometryFitError, match="degenerate") as exc:
        task.fit_wcs(line[:1].repeat(3), line[:1].repeat(3), lra[:1].repeat(3), ldec[:1].repeat(3),
                     initial_wcs=prelim)
    assert exc.value.reason == "degenerate"
    with pytest.raises(AstrometryFitError, match="scatter") as exc:
        FitAffineWcsTask(FitAffineWcsConfig(max_scatter_arcsec=0.5, num_rej_iter=0)).fit_wcs(
            x + np.random.default_rng(0).normal(0, 10, 10), y, ra, dec, initial_wcs=prelim)
    assert exc.value.reason == "scatter_too_large"
    from astropy.io import fits

    hdr = fits.Header({"CTYPE1": "RA---TPV", "CTYPE2": "DEC--TPV", "CRPIX1": 100.0, "CRPIX2": 100.0,
                       "CRVAL1": 62.0, "CRVAL2": -30.0, "CD1_1": -SCALE, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": SCALE,
                       "PV1_1": 1.0, "PV2_1": 1.0, "PV1_4": 1e-3})
    tpv = read_wcs(hdr)
    with pytest.raises(AstrometryFitError, match="wcs_fitter = 'sip'") as exc:
        task.fit_wcs(x, y, ra, dec, initial_wcs=tpv)
    assert exc.value.reason == "unsupported_wcs"
    with pytest.raises(AstrometryFitError, match="too few pairs"):  # zero weights: every row left out
        task.fit_wcs(x, y, ra, dec, initial_wcs=prelim, weights=np.zeros(10))
    with pytest.raises(ValueError, match="ra has 3 values"):
        task.fit_wcs(x, y, ra[:3], dec, initial_wcs=prelim)
    # the error pickles with its reason (process pools, Dask)
    err = pickle.loads(pickle.dumps(exc.value))
    assert err.reason == "unsupported_wcs" and str(err) == str(exc.value)


def test_task_and_config_pickle_copy_and_repr():
    task = FitAffineWcsTask(FitAffineWcsConfig(num_rej_iter=2))
    for other in (pickle.loads(pickle.dumps(task)), copy.deepcopy(task)):
        assert other.config == task.config
    assert "num_rej_iter=2" in repr(task)
    with pytest.raises(ValueError):
        FitAffineWcsConfig(bogus=1)
