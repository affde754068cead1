"""base_PsfFlux (visitcal.measurement.plugins.psf_flux, lsst-spec §5.7).

Truths: an image equal to F times the model gives F to 1e-12 with chi2 = 0; with Gaussian noise the
reported error matches the Monte-Carlo scatter (5%) and the mean matches F; a numpy reference of the
formulas on a clipped, masked stamp.
"""

from __future__ import annotations

import numpy as np
import pytest

from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins.psf_flux import PsfFluxConfig, flag_names, psf_flux

P = "base_PsfFlux"


def gaussian_stamp(size, dx, dy, sigma):
    h = size // 2
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    m = np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * sigma**2))
    return m / m.sum()


def test_exact_model_gives_flux():
    rng = np.random.default_rng(1)
    img = np.zeros((100, 100), np.float64)
    models, mx0, my0, fluxes = [], [], [], []
    for k in range(8):
        cx, cy = 15 + 10 * k, 20 + 8 * k
        m = gaussian_stamp(21, rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 2.0)
        models.append(m)
        mx0.append(cx - 10)
        my0.append(cy - 10)
        fluxes.append(1000.0 * (k + 1))
    # one source at a time on a clean image (float32 storage: F * M rounded to float32)
    for k in range(8):
        img[:] = 0
        img[my0[k]:my0[k] + 21, mx0[k]:mx0[k] + 21] = fluxes[k] * models[k]
        mi = MaskedImage(img.astype(np.float32), variance=np.ones((100, 100), np.float32))
        out = psf_flux(mi, np.array(models[k:k + 1]), [mx0[k]], [my0[k]])
        m32 = mi.image[my0[k]:my0[k] + 21, mx0[k]:mx0[k] + 21].astype(np.float64)
        want = (m32 * models[k]).sum() / (models[k] ** 2).sum()  # exact for the stored float32 image
        assert out[f"{P}_instFlux"][0] == pytest.approx(want, rel=1e-12)
        assert out[f"{P}_instFlux"][0] == pytest.approx(fluxes[k], rel=1e-6)
        assert out[f"{P}_chi2"][0] < 1e-6
        assert out[f"{P}_npixels"][0] == 441
        assert out[f"{P}_area"][0] == pytest.approx(1 / (models[k] ** 2).sum(), rel=1e-12)
        assert not out[f"{P}_flag"][0]


def test_double_precision_exact():
    # an image that holds F * M exactly (M a float32-representable stamp scaled by a power of two)
    m = gaussian_stamp(15, 0.2, -0.3, 1.8).astype(np.float32).astype(np.float64)
    img = np.zeros((40, 40), np.float32)
    img[10:25, 12:27] = (1024.0 * m).astype(np.float32)
    out = psf_flux(MaskedImage(img, variance=np.ones_like(img)), m[None], [12], [10])
    assert out[f"{P}_instFlux"][0] == pytest.approx(1024.0, rel=1e-12)


def test_error_matches_monte_carlo():
    rng = np.random.default_rng(2)
    m = gaussian_stamp(25, 0.1, 0.3, 2.5)
    var = rng.uniform(20, 60, (25, 25))
    flux = 500.0
    n = 3000
    models = np.repeat(m[None], n, axis=0)
    # all trials side by side on one wide image: trial k's stamp at x = 25 k
    img = np.zeros((25, 25 * n), np.float32)
    variance = np.tile(var, (1, n)).astype(np.float32)
    for k in range(n):
        img[:, 25 * k:25 * k + 25] = flux * m + rng.normal(size=(25, 25)) * np.sqrt(variance[:, :25])
    out = psf_flux(MaskedImage(img, variance=variance), models, 25 * np.arange(n), np.zeros(n, int))
    f = out[f"{P}_instFlux"]
    err = out[f"{P}_instFluxErr"][0]
    want_err = np.sqrt((m**2 * variance[:, :25]).sum()) / (m**2).sum()
    assert err == pytest.approx(want_err, rel=1e-6)
    assert f.std(ddof=1) == pytest.approx(err, rel=0.05)
    assert abs(f.mean() - flux) < 4 * err / np.sqrt(n)
    # chi2 ~ npix on average
    assert out[f"{P}_chi2"].mean() == pytest.approx(625, rel=0.03)


def test_reference_clipped_and_masked():
    rng = np.random.default_rng(3)
    img = rng.normal(5, 2, (30, 30)).astype(np.float32)
    var = rng.uniform(1, 3, (30, 30)).astype(np.float32)
    mi = MaskedImage(img, variance=var, xy0=(100, 200))
    mi.mask.array[rng.random((30, 30)) < 0.1] = mi.mask.get_plane_bitmask("BAD")
    m = gaussian_stamp(11, 0, 0, 1.5)
    mx0, my0 = 95, 210  # 5 columns off the left edge
    out = psf_flux(mi, m[None], [mx0], [my0], PsfFluxConfig(bad_mask_planes=("BAD",)))
    sub = np.s_[my0 - 200:my0 - 200 + 11, 0:6]
    M = m[:, 5:]
    D = img[sub].astype(float)
    V = var[sub].astype(float)
    good = (mi.mask.array[sub] & mi.mask.get_plane_bitmask("BAD")) == 0
    M, D, V = M[good], D[good], V[good]
    f = (M * D).sum() / (M**2).sum()
    assert out[f"{P}_instFlux"][0] == pytest.approx(f, rel=1e-12)
    assert out[f"{P}_instFluxErr"][0] == pytest.approx(np.sqrt((M**2 * V).sum()) / (M**2).sum(), rel=1e-12)
    assert out[f"{P}_area"][0] == pytest.approx(M.sum() ** 2 / (M**2).sum(), rel=1e-12)
    assert out[f"{P}_chi2"][0] == pytest.approx((((D - f * M) ** 2) / V).sum(), rel=1e-10)
    assert out[f"{P}_npixels"][0] == good.sum()
    assert out[f"{P}_flag_edge"][0] and out[f"{P}_flag"][0] and not out[f"{P}_flag_noGoodPixels"][0]


def test_failures():
    img = np.ones((20, 20), np.float32)
    img[10, 10] = np.nan
    mi = MaskedImage(img, variance=np.ones_like(img))
    m = gaussian_stamp(5, 0, 0, 1.0)
    models = np.stack([m, m, m, np.zeros_like(m)])
    out = psf_flux(mi, models, [8, 100, 1, 1], [8, 100, 1, 1])
    assert np.isnan(out[f"{P}_instFlux"][0]) and out[f"{P}_flag"][0]          # NaN pixel used
    assert out[f"{P}_flag_noGoodPixels"][1] and out[f"{P}_flag_edge"][1]      # entirely off the image
    ones = 1.0 / (m**2).sum()  # a constant image of ones: sum(M) / sum(M^2)
    assert not out[f"{P}_flag"][2] and out[f"{P}_instFlux"][2] == pytest.approx(ones, rel=1e-12)
    assert out[f"{P}_flag_noGoodPixels"][3]                                   # zero model
    # the NaN pixel masked out as BAD: fine again
    mi.mask.array[10, 10] = mi.mask.get_plane_bitmask("BAD")
    out = psf_flux(mi, m[None], [8], [8], PsfFluxConfig(bad_mask_planes=("BAD",)))
    good = np.ones((5, 5), bool)
    good[2, 2] = False
    assert out[f"{P}_instFlux"][0] == pytest.approx(m[good].sum() / (m[good] ** 2).sum(), rel=1e-12)
    assert flag_names() == ["flag", "flag_noGoodPixels", "flag_edge"]
    with pytest.raises(ValueError, match="model_x0"):
        psf_flux(mi, m[None], [1, 2], [1])
    with pytest.raises(ValueError, match="models"):
        psf_flux(mi, m, [1], [1])


def test_model_error_adds_a_term_proportional_to_the_flux():
    """model_error = e: instFluxErr^2 = (pixel-noise error)^2 + (e instFlux)^2 exactly; the flux is unchanged;
    the default (0) is LSST's error, and the config's default is the C++ control's."""
    from visitcal import _core

    rng = np.random.default_rng(3)
    m = gaussian_stamp(21, 0.3, -0.2, 2.0)
    img = (5e4 * m + rng.normal(0, 3.0, m.shape)).astype(np.float32)
    mi = MaskedImage(img, variance=np.full(m.shape, 9.0, np.float32))
    plain = psf_flux(mi, m[None], [0], [0])
    e = 0.004
    with_term = psf_flux(mi, m[None], [0], [0], PsfFluxConfig(model_error=e))
    f, err = plain[f"{P}_instFlux"][0], plain[f"{P}_instFluxErr"][0]
    assert err == pytest.approx(3.0 / np.sqrt((m**2).sum()), rel=1e-6)  # sqrt(sum M^2 V) / sum M^2, V = 9
    assert with_term[f"{P}_instFlux"][0] == f
    assert with_term[f"{P}_instFluxErr"][0] ** 2 == pytest.approx(err**2 + (e * f) ** 2, rel=1e-12)
    assert PsfFluxConfig().model_error == _core.PsfFluxControl().model_error == 0.0
    assert PsfFluxConfig(model_error=e).to_control(mi).model_error == e
    with pytest.raises(ValueError, match="model_error"):
        PsfFluxConfig(model_error=-0.01)


def test_model_error_makes_the_pulls_of_bright_stars_unit_width():
    """Stars whose true PSF is a Gaussian 1% wider or narrower than the model (sigma_true = sigma (1 + eta),
    eta ~ N(0, 1%)) at S/N ~ 2000: the amplitude is off by the fraction 2 / (2 + 2 eta + eta^2) - 1 ~ -eta
    (the overlap of two unit Gaussians over the model's own), so the pulls of the pixel-noise error have a
    width ~ 0.01 x 2000 = 20; with model_error = 0.01 they have a width of 1 (the robust width of 1600 pulls
    scatters by ~3%)."""
    rng = np.random.default_rng(5)
    n, size, sigma, flux, noise = 1600, 31, 2.0, 1e5, 7.0
    model = gaussian_stamp(size, 0.0, 0.0, sigma)
    eta = rng.normal(0.0, 0.01, n)
    img = np.zeros((size, n * size), np.float32)
    for k in range(n):
        star = flux * gaussian_stamp(size, 0.0, 0.0, sigma * (1 + eta[k]))
        img[:, k * size:(k + 1) * size] = star + rng.normal(0.0, noise, (size, size))
    mi = MaskedImage(img, variance=np.full(img.shape, noise**2, np.float32))
    models, x0, y0 = np.repeat(model[None], n, axis=0), np.arange(n) * size, np.zeros(n, int)
    snr = flux * np.sqrt((model**2).sum()) / noise
    assert 1500 < snr < 2500

    def width(cfg):
        out = psf_flux(mi, models, x0, y0, cfg)
        pull = (out[f"{P}_instFlux"] - flux) / out[f"{P}_instFluxErr"]
        return 1.4826 * np.median(np.abs(pull - np.median(pull)))

    assert width(PsfFluxConfig()) > 10
    assert width(PsfFluxConfig(model_error=0.01)) == pytest.approx(1.0, abs=0.1)
