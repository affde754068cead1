"""PCA PSF determiner and PcaPsf (lsst-spec §4.7): recovery of known PSFs, rejection, typed failures,
determinism, persistence, and a numpy reference of the model's evaluation."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from astropy.table import Table
from hypothesis import given, settings
from hypothesis import strategies as st
from visitcal import _core
from visitcal.core.geom import Box2I
from visitcal.core.image import Exposure, MaskPlanes
from visitcal.io import read_exposure, write_exposure
from visitcal.psf.checks import PsfCheckConfig
from visitcal.psf.pca import PcaPsf, PcaPsfDeterminer, PcaPsfDeterminerConfig
from visitcal.core.persistence import component_from_table, component_to_table
from visitcal.psf.models import FixedImagePsf
from visitcal.psf.candidates import PsfCandidates
from visitcal.psf.determiner import PsfTooFewStarsError

S = 27  # candidate stamp side (lsst-spec §4.6)
BBOX = Box2I(0, 0, 1999, 1999)


# --- helpers: stars drawn with numpy straight into PsfCandidates -------------------------------------
def gaussian(shape, x0, y0, x, y, sigma, flux=1.0):
    """flux * unit-integral Gaussian sampled at the pixel centres of an array whose [0, 0] is (x0, y0)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r2 = (xx + x0 - x) ** 2 + (yy + y0 - y) ** 2
    return flux * np.exp(-0.5 * r2 / sigma**2) / (2 * np.pi * sigma**2)


def make_candidates(xs, ys, sigmas, fluxes, *, sky_var=100.0, rng=None, images=None):
    """Stamps centred on floor(centroid + 0.5) as make_psf_candidates cuts them; noise-free unless rng."""
    m = len(xs)
    img = np.zeros((m, S, S))
    xy0 = np.zeros((m, 2), np.int32)
    for k in range(m):
        xy0[k] = (np.floor(xs[k] + 0.5) - S // 2, np.floor(ys[k] + 0.5) - S // 2)
        img[k] = gaussian((S, S), *xy0[k], xs[k], ys[k], sigmas[k], fluxes[k]) if images is None else images[k]
    var = sky_var + np.clip(img, 0, None)  # sky plus Poisson (gain 1)
    if rng is not None:
        img = img + rng.normal(size=img.shape) * np.sqrt(var)
    table = {"x": np.asarray(xs, float), "y": np.asarray(ys, float), "used": np.ones(m, bool)}
    return PsfCandidates(img.astype(np.float32), np.zeros((m, S, S), np.int32), var.astype(np.float32), xy0, table)


def true_image(psf, x, y, sigma):
    box = psf.compute_image_bbox(x, y)
    t = gaussian(box.shape, box.min_x, box.min_y, x, y, sigma)
    return t / t.sum()


def positions(rng, n):
    return rng.uniform(20, 1980, n), rng.uniform(20, 1980, n)


# --- numpy reference of the model's evaluation -------------------------------------------------------
def ref_terms(order, box, x, y):
    u = (2 * x - (box[0] + box[1])) / (box[1] - box[0])
    v = (2 * y - (box[2] + box[3])) / (box[3] - box[2])
    return np.array([u ** (d - j) * v**j for d in range(order + 1) for j in range(d + 1)])


def ref_lanczos_shift(img, dx, dy, n):
    """out(x, y) = sum in(x - dx + k) L_n: separable, renormalised weights, zero outside (lanczos.hpp)."""
    def weights(shift):
        s = -shift
        base = np.floor(s)
        frac = s - base
        k = np.arange(2 * n) - (n - 1)
        w = np.sinc(k - frac) * np.sinc((k - frac) / n)
        return int(base), k, w / w.sum()

    def shift1(a, shift):
        base, k, w = weights(shift)
        out = np.zeros_like(a)
        for i in range(a.shape[-1]):
            j = i + base + k
            ok = (j >= 0) & (j < a.shape[-1])
            out[..., i] = a[..., j[ok]] @ w[ok]
        return out

    return shift1(shift1(img, dx).T, dy).T


def ref_images(psf, x, y):
    a = psf.coefficients @ ref_terms(psf.spatial_order, psf.box, x, y)
    k = np.tensordot(a, psf.basis, axes=1)
    k = k / k.sum()
    ix, iy = np.floor(x + 0.5), np.floor(y + 0.5)
    if x == ix and y == iy:
        return k, k
    im = ref_lanczos_shift(k, x - ix, y - iy, psf.interpolant_order)
    return k, im / im.sum()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 3), st.integers(1, 4), st.floats(-100, 2100), st.floats(-100, 2100), st.integers(0, 2**31 - 1))
def test_pca_psf_images_match_the_numpy_reference(order, n_comp, x, y, seed):
    rng = np.random.default_rng(seed)
    n = 11
    basis = rng.normal(size=(n_comp, n, n)) * 0.1
    basis[0] = gaussian((n, n), -5, -5, 0, 0, 1.5)
    coeffs = rng.normal(size=(n_comp, (order + 1) * (order + 2) // 2)) * 0.05
    coeffs[0] = 0
    coeffs[0, 0] = 1
    psf = PcaPsf(basis, coeffs, spatial_order=order, box=(-0.5, 1999.5, -0.5, 1999.5), interpolant_order=5)
    k_ref, im_ref = ref_images(psf, x, y)
    np.testing.assert_allclose(psf.compute_kernel_image(x, y), k_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(psf.compute_image(x, y), im_ref, rtol=0, atol=1e-12)
    box = psf.compute_image_bbox(x, y)
    assert (box.min_x, box.min_y) == (np.floor(x + 0.5) - n // 2, np.floor(y + 0.5) - n // 2)


def test_config_defaults_match_the_cpp_control():
    cfg, ctl = PcaPsfDeterminerConfig(), _core.PcaPsfControl()
    for name in ("n_eigen_components", "component_noise_threshold", "n_basis_refinements", "spatial_order",
                 "kernel_size", "n_iter_for_psf",
                 "reduced_chi2_for_psf_candidates", "spatial_reject", "constant_weight", "lam", "tolerance",
                 "interpolant_order", "zeroth_order_interp_not_enough_stars", "min_unmasked_fraction"):
        assert getattr(cfg, name) == getattr(ctl, name), name
    planes = MaskPlanes()
    bits = sum(1 << planes[p] for p in ("BAD", "CR", "INTRP", "SAT", "SUSPECT", "NO_DATA"))
    assert cfg.to_control().bad_mask_bits == ctl.bad_mask_bits == bits
    assert (cfg.n_eigen_components, cfg.spatial_order, cfg.n_iter_for_psf) == (4, 2, 3)  # LSST's defaults
    with pytest.raises(ValueError, match="odd"):
        PcaPsfDeterminerConfig(kernel_size=24)
    with pytest.raises(ValueError):
        PcaPsfDeterminerConfig(n_eigen_componets=3)


# --- (1) a constant Gaussian --------------------------------------------------------------------------
def test_constant_gaussian_on_pixel_centres_is_recovered_to_1e_4():
    rng = np.random.default_rng(11)
    xs, ys = np.round(positions(rng, 40))
    sigma = 1.7
    c = make_candidates(xs, ys, [sigma] * 40, 10 ** rng.uniform(4, 5, 40))
    r = PcaPsfDeterminer().determine_psf(c, BBOX)
    assert r.used.all() and (r.status == "used").all()
    assert r.metadata["numGoodStars"] == r.metadata["numAvailStars"] == 40
    for x, y in [(1000.0, 1000.0), (37.0, 1950.0), (1500.2, 400.9)]:
        k = r.psf.compute_kernel_image(x, y)
        t = gaussian(k.shape, -12, -12, 0, 0, sigma)
        t /= t.sum()
        assert np.abs(k - t).max() < 1e-4 * t.max()
    np.testing.assert_allclose(r.psf.average_position, (xs.mean(), ys.mean()), rtol=1e-12)
    np.testing.assert_allclose(r.flux / (r.flux[0] / c.image[0].sum() * c.image.sum(axis=(1, 2))), 1, rtol=1e-3)


def test_constant_gaussian_at_sub_pixel_centres_is_within_the_lanczos_error():
    """The fit shifts each star onto the grid (Lanczos-5), and compute_image shifts the model back. One
    Lanczos-5 shift of the true kernel (FixedImagePsf) errs by up to 2.0e-3 of the peak here; the fitted
    kernel carries the fit's centring error, averaged over stars (measured 1.2e-3 of the peak), and
    compute_image adds one shift: measured 3.2e-3 of the peak, i.e. the two errors added."""
    rng = np.random.default_rng(12)
    xs, ys = positions(rng, 60)
    sigma = 1.7
    c = make_candidates(xs, ys, [sigma] * 60, 10 ** rng.uniform(4, 5, 60))
    r = PcaPsfDeterminer().determine_psf(c, BBOX)
    assert r.used.all()
    true_kernel = gaussian((25, 25), -12, -12, 0, 0, sigma)
    fixed = FixedImagePsf(true_kernel / true_kernel.sum())
    worst, worst_lanczos = 0.0, 0.0
    for x, y in zip(*positions(rng, 20)):
        t = true_image(r.psf, x, y, sigma)
        worst = max(worst, np.abs(r.psf.compute_image(x, y) - t).max() / t.max())
        worst_lanczos = max(worst_lanczos, np.abs(fixed.compute_image(x, y) - t).max() / t.max())
    kt = true_kernel / true_kernel.sum()
    kernel_error = np.abs(r.psf.compute_kernel_image(500, 500) - kt).max() / kt.max()
    assert 5e-4 < worst_lanczos < 2.5e-3
    assert kernel_error < 1.5e-3
    assert worst < 1.1 * (worst_lanczos + kernel_error) and worst < 4e-3


def test_masked_pixels_get_zero_weight():
    """A cosmic ray (CR) or bad column (BAD) across the core of a third of the stars, with absurd values
    under it, changes nothing beyond the interpolant's error: those pixels have zero weight."""
    rng = np.random.default_rng(13)
    xs, ys = np.round(positions(rng, 30))
    c = make_candidates(xs, ys, [1.8] * 30, [3e4] * 30)
    planes = MaskPlanes()
    for k in range(0, 30, 3):
        c.image[k, 13, 10:16] = 1e6
        c.mask[k, 13, 10:16] = 1 << planes["CR"]
        c.image[k, :, 15] = np.nan
        c.mask[k, :, 15] = 1 << planes["BAD"]
    r = PcaPsfDeterminer().determine_psf(c, BBOX)
    assert r.used.all()
    t = gaussian((25, 25), -12, -12, 0, 0, 1.8)
    t /= t.sum()
    assert np.abs(r.psf.compute_kernel_image(900, 900) - t).max() < 1e-4 * t.max()
    np.testing.assert_allclose(r.flux, 3e4 * c.image[1].astype(float).sum() / 3e4, rtol=2e-3)


# --- (2) a spatially varying PSF, reserved stars -------------------------------------------------------
def sigma_field(x, y):
    return 1.6 + 0.3 * x / 2000 + 0.1 * y / 2000


def varying_field(seed=21, n=300):
    rng = np.random.default_rng(seed)
    xs, ys = positions(rng, n)
    c = make_candidates(xs, ys, sigma_field(xs, ys), 10 ** rng.uniform(4, 5.3, n), rng=rng)
    reserved = np.zeros(n, bool)
    reserved[::10] = True
    return c, reserved


def reserved_size_errors(psf, c, reserved):
    """Fractional determinant-radius error of ``psf`` at each reserved star against the true Gaussian, both
    measured the same way (adaptive moments of the pixel-sampled 25 x 25 image)."""
    x, y = c.table["x"], c.table["y"]
    out = []
    for k in np.flatnonzero(reserved):
        truth = FixedImagePsf(gaussian((25, 25), -12, -12, 0, 0, sigma_field(x[k], y[k])))
        out.append(psf.compute_shape(x[k], y[k]).determinant_radius / truth.compute_shape(0, 0).determinant_radius - 1)
    return np.array(out)


def test_varying_gaussian_is_recovered_at_reserved_positions():
    """sigma = 1.6 + 0.3 x / 2000 + 0.1 y / 2000 px over 2000 x 2000 px, 300 stars of flux 1e4-2e5 with
    sky (100 per pixel) and Poisson noise; 30 reserved. At the reserved positions the model's adaptive
    size is within 0.5% of the truth measured the same way, 0.2% rms (measured with the defaults: worst
    0.16%, rms 0.06%; with LSST's KL basis unrefined, n_basis_refinements=0, and Lanczos-5 centring: worst
    1.47%, rms 0.53%, which is why those are not the defaults)."""
    c, reserved = varying_field()
    r = PcaPsfDeterminer().determine_psf(c, BBOX, reserved=reserved)
    assert not r.used[reserved].any() and (r.status[reserved] == "reserved").all()
    assert np.array_equal(r.reserved, reserved)
    # LSST's 4 components; with the refined basis the spatial test rejects none of these good stars (with the
    # unrefined KL basis it rejected 7% of them on their noise amplitudes).
    assert r.used[~reserved].mean() > 0.97 and r.metadata["n_components"] == 4
    assert r.metadata["numAvailStars"] == 270 and r.metadata["numGoodStars"] == r.used.sum()
    err = reserved_size_errors(r.psf, c, reserved)
    assert np.abs(err).max() < 5e-3 and np.sqrt(np.mean(err**2)) < 2e-3
    x, y = c.table["x"], c.table["y"]
    # Reserved stars are measured against the model: chi2 / dof near 1, fluxes near the truth.
    red = r.chi2[reserved] / r.dof[reserved]
    assert np.all(np.isfinite(red)) and 0.85 < np.median(red) < 1.2
    flux_true = c.image.astype(float).sum(axis=(1, 2))  # noise-free sum is close; check loosely
    assert np.median(np.abs(r.flux[reserved] / flux_true[reserved] - 1)) < 0.05
    md = r.metadata
    assert md["avgX"] == pytest.approx(x[r.used].mean()) and md["avgY"] == pytest.approx(y[r.used].mean())
    assert md["spatialFitChi2"] == pytest.approx(r.chi2[r.used].sum())
    assert 1 <= md["n_iter"] <= 3


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_pca_keeps_several_components_and_is_within_2x_of_the_pixel_grid(seed):
    """Issue 21: on a field whose PSF varies, the PCA determiner (defaults) keeps more than one component and
    its reserved-star size error is within 2x of the pixel grid's (defaults) on the same stars and the same
    reserve, both against the true Gaussians. Measured rms (PCA / pixel grid): 5.8e-4 / 6.6e-4, 6.9e-4 /
    8.8e-4, 9.2e-4 / 9.4e-4 for seeds 21-23. With the KL basis unrefined (n_basis_refinements=0) the PCA's
    is 2.8e-3-3.8e-3, 4x the pixel grid's: checked too, so that the refinement is what passes the test."""
    from visitcal.psf.pixel_grid import PixelGridPsfDeterminer

    c, reserved = varying_field(seed)
    pca = PcaPsfDeterminer().determine_psf(c, BBOX, reserved=reserved)
    grid = PixelGridPsfDeterminer().determine_psf(c, BBOX, reserved=reserved)
    assert pca.metadata["n_components"] > 1
    assert np.array_equal(pca.reserved, grid.reserved)
    rms = lambda e: float(np.sqrt(np.mean(e**2)))  # noqa: E731
    rms_pca = rms(reserved_size_errors(pca.psf, c, reserved))
    rms_grid = rms(reserved_size_errors(grid.psf, c, reserved))
    assert rms_pca <= 2 * rms_grid, (rms_pca, rms_grid)
    kl = PcaPsfDeterminer(PcaPsfDeterminerConfig(n_basis_refinements=0)).determine_psf(c, BBOX, reserved=reserved)
    assert rms(reserved_size_errors(kl.psf, c, reserved)) > 2 * rms_grid


# --- (3) determinism ----------------------------------------------------------------------------------
def test_same_input_gives_identical_bytes():
    c, reserved = varying_field(seed=31, n=120)
    a = PcaPsfDeterminer().determine_psf(c, BBOX, reserved=reserved)
    b = PcaPsfDeterminer().determine_psf(c, BBOX, reserved=reserved)
    assert a.psf.basis.tobytes() == b.psf.basis.tobytes()
    assert a.psf.coefficients.tobytes() == b.psf.coefficients.tobytes()
    for name in ("used", "flux", "chi2", "dof", "status"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=name in ("flux", "chi2"))
    assert a.psf.compute_image(123.4, 567.8).tobytes() == b.psf.compute_image(123.4, 567.8).tobytes()


# --- (4) too few stars --------------------------------------------------------------------------------
def test_too_few_stars_raise_or_fall_back_to_order_zero():
    rng = np.random.default_rng(41)
    xs, ys = positions(rng, 8)
    c = make_candidates(xs, ys, [1.8] * 8, [2e4] * 8)
    reserved = np.zeros(8, bool)
    reserved[:3] = True  # 5 usable stars < 6 terms of order 2
    # LSST's rule (no step-down, one star per spatial term): a typed error.
    noise_free = PsfCheckConfig(min_chi2_ratio=0.0)  # no noise to overfit
    lsst = dict(order_step_down=False, min_stars_per_parameter=1.0, checks=noise_free)
    with pytest.raises(PsfTooFewStarsError) as err:
        PcaPsfDeterminer(PcaPsfDeterminerConfig(**lsst)).determine_psf(c, BBOX, reserved=reserved)
    assert (err.value.n_stars, err.value.n_required) == (5, 6)
    r = PcaPsfDeterminer(PcaPsfDeterminerConfig(**lsst)).determine_psf(c, BBOX)  # 8 >= 6
    assert r.psf.spatial_order == 2
    # The default steps down: 5 stars are under 3 per term of orders 2 (6 terms) and 1 (3 terms); these
    # noise-free stars have no noise to overfit, so the chi2 check is off.
    r = PcaPsfDeterminer(PcaPsfDeterminerConfig(checks=noise_free)).determine_psf(c, BBOX, reserved=reserved)
    assert r.psf.spatial_order == 0 and r.metadata["spatial_order_used"] == 0 and r.order_reduced
    assert "order 2: 5 candidates for 6 spatial terms" in r.metadata["order_step_down_reason"]
    cfg = PcaPsfDeterminerConfig(zeroth_order_interp_not_enough_stars=True, **lsst)
    r = PcaPsfDeterminer(cfg).determine_psf(c, BBOX, reserved=reserved)
    assert r.psf.spatial_order == 0 and r.metadata["spatial_order"] == 0 and r.psf.coefficients.shape[1] == 1
    assert r.used.sum() == 5 and (r.status[:3] == "reserved").all()
    t = gaussian((25, 25), -12, -12, 0, 0, 1.8)
    t /= t.sum()
    assert np.abs(r.psf.compute_kernel_image(10, 10) - t).max() < 2e-3 * t.max()
    with pytest.raises(PsfTooFewStarsError):
        PcaPsfDeterminer(cfg).determine_psf(c, BBOX, reserved=np.ones(8, bool))


def test_stars_with_too_few_good_pixels_are_not_used():
    rng = np.random.default_rng(42)
    xs, ys = positions(rng, 12)
    c = make_candidates(xs, ys, [1.8] * 12, [2e4] * 12)
    c.mask[0, :20, :] = 1 << MaskPlanes()["SAT"]  # > half of the 25 x 25 box
    c.image[1] *= -1  # negative flux
    r = PcaPsfDeterminer().determine_psf(c, BBOX)
    assert list(r.status[:3]) == ["too_few_pixels", "bad_flux", "used"]
    assert np.isnan(r.flux[0]) and r.dof[0] == 0 and r.used.sum() == 10
    assert r.metadata["dropped_candidates"] == {"bad_flux": [1], "too_few_pixels": [0]}
    assert r.metadata["n_dropped"] == {"bad_flux": 1, "too_few_pixels": 1}


def test_lam_enters_the_chi2_only_not_the_fit():
    """The model-error floor lam changes each star's chi2 (var + (lam F m)^2) but not the fitted model: with no
    star rejected either way, the basis and coefficients are the same bytes, while the brightest reserved star's
    chi2 (and the chi2 noise alone would give) is smaller with the larger floor."""
    c, reserved = varying_field(seed=71, n=120)
    a = PcaPsfDeterminer(PcaPsfDeterminerConfig(lam=0.05)).determine_psf(c, BBOX, reserved=reserved)
    b = PcaPsfDeterminer(PcaPsfDeterminerConfig(lam=0.2)).determine_psf(c, BBOX, reserved=reserved)
    assert np.array_equal(a.used, b.used) and a.used[~reserved].all()
    assert a.psf.basis.tobytes() == b.psf.basis.tobytes()
    assert a.psf.coefficients.tobytes() == b.psf.coefficients.tobytes()
    k = int(np.argmax(np.where(reserved, c.image.sum(axis=(1, 2)), -np.inf)))  # the brightest reserved star
    assert b.chi2[k] < a.chi2[k] and b.chi2_expected[k] < a.chi2_expected[k]


# --- (5) persistence ----------------------------------------------------------------------------------
def test_fits_round_trip_and_pickle_are_lossless(tmp_path):
    c, reserved = varying_field(seed=51, n=80)
    psf = PcaPsfDeterminer().determine_psf(c, BBOX, reserved=reserved).psf
    assert pickle.loads(pickle.dumps(psf)) == psf
    table = component_to_table(psf)
    table.write(tmp_path / "psf.fits")
    back = component_from_table(Table.read(tmp_path / "psf.fits"))
    assert type(back) is PcaPsf and back == psf
    exposure = Exposure.from_arrays(np.zeros((20, 30), np.float32), psf=psf)
    write_exposure(exposure, tmp_path / "e.fits")
    back2 = read_exposure(tmp_path / "e.fits").psf
    for other in (back, back2, pickle.loads(pickle.dumps(psf))):
        assert other.compute_image(1234.56, 78.9).tobytes() == psf.compute_image(1234.56, 78.9).tobytes()
        assert other.compute_kernel_image(5, 1999).tobytes() == psf.compute_kernel_image(5, 1999).tobytes()
        assert other.average_position == psf.average_position
    assert repr(psf).startswith("PcaPsf(")


def test_pca_psf_rejects_bad_arguments():
    b = np.zeros((2, 5, 5))
    b[0, 2, 2] = 1
    with pytest.raises(ValueError, match="basis"):
        PcaPsf(np.zeros((2, 4, 4)), np.zeros((2, 1)), spatial_order=0, box=(0, 1, 0, 1))
    with pytest.raises(ValueError, match="coefficients"):
        PcaPsf(b, np.zeros((2, 3)), spatial_order=0, box=(0, 1, 0, 1))
    with pytest.raises(ValueError, match="box"):
        PcaPsf(b, np.zeros((2, 1)), spatial_order=0, box=(1, 0, 0, 1))
    c = make_candidates([100.0] * 3, [100.0] * 3, [1.8] * 3, [1e4] * 3)
    with pytest.raises(ValueError, match="reserved"):
        PcaPsfDeterminer().determine_psf(c, BBOX, reserved=np.zeros(2, bool))
    with pytest.raises(ValueError, match="kernel_size"):
        PcaPsfDeterminer(PcaPsfDeterminerConfig(kernel_size=29)).determine_psf(c, BBOX)


# --- (6) outliers ------------------------------------------------------------------------------------
def test_galaxy_and_double_star_are_rejected_as_outliers(caplog):
    rng = np.random.default_rng(61)
    n = 50
    xs, ys = positions(rng, n)
    c = make_candidates(xs, ys, [1.8] * n, 10 ** rng.uniform(4, 5, n), rng=rng)
    imgs = np.array(c.image, dtype=float)
    x0, y0 = c.xy0[7]
    galaxy = gaussian((S, S), x0, y0, xs[7], ys[7], 3.5, 5e4)  # a wide blob
    x0, y0 = c.xy0[20]
    double = gaussian((S, S), x0, y0, xs[20], ys[20], 1.8, 3e4) + gaussian((S, S), x0, y0, xs[20] + 3, ys[20] + 1, 1.8, 2e4)
    for k, im in ((7, galaxy), (20, double)):
        var = 100 + im
        imgs[k] = im + rng.normal(size=im.shape) * np.sqrt(var)
        c.variance[k] = var
    c = PsfCandidates(imgs.astype(np.float32), c.mask, c.variance, c.xy0, c.table)
    r = PcaPsfDeterminer().determine_psf(c, BBOX)
    assert list(r.status[[7, 20]]) == ["outlier", "outlier"] and not r.used[[7, 20]].any()
    # 50 stars at order 2 (6 terms, 3 stars per term) carry 2 components. On this constant PSF the second
    # is noise, and the spatial test may also reject a good star or two on its noise amplitude (measured: 1).
    assert r.metadata["n_components"] == 2 and r.used.sum() >= n - 4
    assert r.metadata["n_dropped"] == {"outlier": n - int(r.used.sum())}
    # Every dropped candidate is reported with its reason, and logged at INFO, not as a warning.
    assert r.metadata["dropped_candidates"] == {"outlier": np.flatnonzero(~r.used).tolist()}
    with caplog.at_level(logging.INFO, logger="visitcal.psf.determiner"):
        PcaPsfDeterminer().determine_psf(c, BBOX)
    records = [rec for rec in caplog.records if rec.name == "visitcal.psf.determiner"]
    assert records and all(rec.levelno == logging.INFO for rec in records)
    assert f"{n - int(r.used.sum())} of {n} candidates not used (outlier" in records[0].getMessage()
    t = gaussian((25, 25), -12, -12, 0, 0, 1.8)
    t /= t.sum()
    assert abs(r.psf.compute_shape(1000, 1000).determinant_radius
               / FixedImagePsf(t).compute_shape(0, 0).determinant_radius - 1) < 0.01


@pytest.mark.parametrize("garbage", ["zero", "negative"])
def test_all_zero_or_negative_stamps_raise_too_few_stars_with_a_reason_per_star(garbage):
    rng = np.random.default_rng(43)
    xs, ys = positions(rng, 20)
    c = make_candidates(xs, ys, [1.8] * 20, [2e4] * 20, rng=rng)
    c.image[:] = 0.0 if garbage == "zero" else -np.abs(c.image)
    with pytest.raises(PsfTooFewStarsError) as info:
        PcaPsfDeterminer().determine_psf(c, BBOX)
    assert info.value.dropped_candidates == {"bad_flux": list(range(20))}
