"""The pixel-grid PSF determiner and model (lsst-spec §4.7) against analytic truths and a numpy reference.

The numpy reference renders a grid onto a stamp the way the model is defined (module docstring of
visitcal.psf.pixel_grid): Lanczos(n) weights renormalised to unit sum, taps outside the grid dropped,
pixels beyond the grid's extent zero.
"""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import stats
from visitcal import _core
from visitcal.core.geom import Box2I
from visitcal.core.persistence import component_from_table, component_to_table
from visitcal.psf.checks import PsfCheckConfig
from visitcal.psf.pixel_grid import (
    PixelGridPsf,
    PixelGridPsfDeterminer,
    PixelGridPsfDeterminerConfig,
)
from visitcal.psf.candidates import PsfCandidates
from visitcal.psf.determiner import PsfTooFewStarsError, screen_candidates

W, H = 2048, 2000
BBOX = Box2I(0, 0, W - 1, H - 1)
S = 27


# ------------------------------------------------------------------------------------------------
# numpy reference


def lanczos_matrix(u0, n_px, G, s, order, full_reach=False):
    """(n_px, G) interpolation matrix of one axis; u0 = offset of pixel 0 from the centre (px). Pixels off the
    grid's support are zero (the fit's model), or with ``full_reach`` get the kernel's side lobes within its
    reach of the grid (the drawn model, as GalSim's InterpolatedImage draws Piff's grid)."""
    L = np.zeros((n_px, G))
    origin = 0.5 * (G - 1)
    for c in range(n_px):
        t = (u0 + c) / s + origin
        if not (-1e-9 <= t <= G - 1 + 1e-9) and not (full_reach and -order < t < G - 1 + order):
            continue
        base = np.floor(t)
        taps = np.arange(base - (order - 1), base + order + 1)
        xk = taps - t
        w = np.where(np.abs(xk) < order, np.sinc(xk) * np.sinc(xk / order), 0.0)
        w /= w.sum()
        ok = (taps >= 0) & (taps < G)
        L[c, taps[ok].astype(int)] = w[ok]
    return L


def render(grid, u0, v0, n_px, s=1.0, order=11, full_reach=False):
    G = grid.shape[0]
    return (lanczos_matrix(v0, n_px, G, s, order, full_reach) @ grid
            @ lanczos_matrix(u0, n_px, G, s, order, full_reach).T)


def basis(x, y, order, box=(0.0, W - 1.0, 0.0, H - 1.0)):
    u = (2 * x - (box[0] + box[1])) / (box[1] - box[0])
    v = (2 * y - (box[2] + box[3])) / (box[3] - box[2])
    return np.array([u ** (d - j) * v**j for d in range(order + 1) for j in range(d + 1)])


def gaussian_stamp(x, y, x0, y0, sigma, n=S):
    yy, xx = np.mgrid[0:n, 0:n]
    return np.exp(-((xx + x0 - x) ** 2 + (yy + y0 - y) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)


def make_candidates(x, y, stamps, variance=None, mask=None):
    m = len(x)
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    xy0 = np.stack([ix - S // 2, iy - S // 2], 1).astype(np.int32)
    img = np.asarray(stamps, np.float32)
    var = np.ones_like(img) if variance is None else np.asarray(variance, np.float32)
    msk = np.zeros(img.shape, np.int32) if mask is None else mask
    table = {"x": np.asarray(x, float), "y": np.asarray(y, float), "used": np.ones(m, bool),
             "index": np.arange(m)}
    return PsfCandidates(img, msk, var, xy0, table)


def positions(m, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(20, W - 20, m), rng.uniform(20, H - 20, m), rng.uniform(2e4, 2e5, m)


def constant_gaussian_candidates(m=200, sigma=2.0, seed=1):
    x, y, flux = positions(m, seed)
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    stamps = [f * gaussian_stamp(a, b, i - S // 2, j - S // 2, sigma) for a, b, i, j, f in zip(x, y, ix, iy, flux)]
    return make_candidates(x, y, stamps), flux


def worst_residual(psf, sigma, points):
    worst = 0.0
    for px, py in points:
        im = psf.compute_image(px, py)
        box = psf.compute_image_bbox(px, py)
        truth = gaussian_stamp(px, py, box.min_x, box.min_y, sigma, n=im.shape[0])
        truth /= truth.sum()
        worst = max(worst, np.abs(im - truth).max() / truth.max())
    return worst


POINTS = [(1024.0, 1000.0), (10.3, 12.7), (2040.5, 1990.25), (300.2, 1700.9), (1500.77, 20.1)]


# ------------------------------------------------------------------------------------------------
# the model


def test_model_images_match_the_numpy_reference():
    rng = np.random.default_rng(3)
    coeffs = rng.normal(size=(6, 25, 25))
    psf = PixelGridPsf(coeffs, sampling_size=1.0, interpolant_order=11, spatial_order=2, box=(0, W - 1, 0, H - 1),
                       draw_size=25, average_position=(5.0, 6.0))
    for x, y in [(100.3, 1500.8), (2000.0, 7.49), (1024.5, 1000.5)]:
        grid = np.tensordot(basis(x, y, 2), coeffs, axes=1)
        np.testing.assert_allclose(psf.grid_at(x, y), grid, rtol=0, atol=1e-12)
        ix, iy = np.floor(x + 0.5), np.floor(y + 0.5)
        ref = render(grid, ix - 12 - x, iy - 12 - y, 25, full_reach=True)
        # normalised by the model's flux (the grid's sum), not the stamp's: the phase moves a row of the
        # support off the pixels, and that light must not go into the core
        np.testing.assert_allclose(psf.compute_image(x, y), ref / grid.sum(), rtol=1e-10, atol=1e-13)
        assert psf.compute_image_bbox(x, y) == Box2I(int(ix) - 12, int(iy) - 12, int(ix) + 12, int(iy) + 12)
        kern = psf.compute_kernel_image(x, y)
        np.testing.assert_allclose(kern, grid / grid.sum(), rtol=1e-10, atol=1e-13)  # integer offset: the grid
    assert psf.average_position == (5.0, 6.0)


@settings(max_examples=25, deadline=None)
@given(s=st.sampled_from([0.5, 0.57, 1.0, 1.5]), order=st.integers(2, 11), fx=st.floats(0, 0.999),
       fy=st.floats(0, 0.999), draw=st.sampled_from([15, 25, 31]))
def test_model_rendering_property(s, order, fx, fy, draw):
    rng = np.random.default_rng(0)
    coeffs = rng.uniform(0.1, 1.0, size=(1, 17, 17))
    psf = PixelGridPsf(coeffs, sampling_size=s, interpolant_order=order, spatial_order=0, box=(0, 100, 0, 100),
                       draw_size=draw)
    x, y = 50.0 + fx, 40.0 + fy
    ix, iy = np.floor(x + 0.5), np.floor(y + 0.5)
    ref = render(coeffs[0], ix - draw // 2 - x, iy - draw // 2 - y, draw, s=s, order=order, full_reach=True)
    np.testing.assert_allclose(psf.compute_image(x, y), ref / (coeffs[0].sum() * s * s), rtol=1e-9, atol=1e-12)


def test_psf_flux_of_model_images_does_not_depend_on_the_sub_pixel_phase():
    # A star whose profile is the model's own interpolated surface (a sigma 3.5 px Gaussian grid of unit
    # sum, zero beyond it), drawn at several sub-pixel phases with all its light: the star is the grid
    # zero-padded to 27 x 27 and rendered, so it keeps the light the 25 x 25 support drops at a
    # half-pixel phase. Model images are normalised by the model's flux, so PsfFlux = sum(I P) / sum(P^2)
    # is exactly 1 at every phase; renormalising the cut stamp would lower it by the dropped light.
    sigma = 3.5
    yy, xx = np.mgrid[0:25, 0:25] - 12.0
    grid = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    grid /= grid.sum()
    psf = PixelGridPsf(grid[None], sampling_size=1.0, interpolant_order=11, spatial_order=0,
                       box=(0, 100, 0, 100), draw_size=25)
    padded = np.pad(grid, 1)
    fluxes, renormalised = [], []
    for fx, fy in [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.25, 0.75), (0.9, 0.1)]:
        x, y = 50.0 + fx, 40.0 + fy
        box = psf.compute_image_bbox(x, y)
        model = psf.compute_image(x, y)
        star = render(padded, box.min_x - x, box.min_y - y, 25)
        fluxes.append(np.sum(star * model) / np.sum(model**2))
        cut = model / model.sum()
        renormalised.append(np.sum(star * cut) / np.sum(cut**2))
    np.testing.assert_allclose(fluxes, 1.0, rtol=0, atol=1e-12)
    assert np.ptp(renormalised) > 2e-4  # what normalising by the stamp's sum did
    np.testing.assert_allclose(psf.compute_image(50.0, 40.0).sum(), 1.0, rtol=0, atol=1e-12)  # phase 0: whole grid


def test_model_round_trips_through_fits_table_and_pickle():
    rng = np.random.default_rng(4)
    psf = PixelGridPsf(rng.normal(size=(10, 25, 25)), sampling_size=0.7, interpolant_order=7, spatial_order=3,
                       box=(0, 4071, 0, 3999), draw_size=35, average_position=(1.5, 2.5))
    back = component_from_table(component_to_table(psf))
    again = pickle.loads(pickle.dumps(psf))
    for other in (back, again):
        assert other == psf
        assert np.array_equal(other.compute_image(123.4, 567.8), psf.compute_image(123.4, 567.8))
        assert other.box == psf.box and other.draw_size == 35 and other.sampling_size == 0.7


def test_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="terms"):
        PixelGridPsf(np.ones((5, 25, 25)), sampling_size=1, interpolant_order=11, spatial_order=2,
                     box=(0, 1, 0, 1), draw_size=25)
    with pytest.raises(ValueError, match="draw_size"):
        PixelGridPsf(np.ones((1, 25, 25)), sampling_size=1, interpolant_order=11, spatial_order=0,
                     box=(0, 1, 0, 1), draw_size=24)
    with pytest.raises(ValueError, match="non-finite"):
        PixelGridPsf(np.full((1, 5, 5), np.nan), sampling_size=1, interpolant_order=11, spatial_order=0,
                     box=(0, 1, 0, 1), draw_size=5)


def test_chi2_isf_matches_scipy():
    for p in (0.5, 1e-3, 6.334e-5, 1e-9):
        for dof in (1, 3, 22, 200, 619, 5000):
            assert _core.chi2_isf(p, dof) == pytest.approx(stats.chi2.isf(p, dof), rel=1e-9)


# ------------------------------------------------------------------------------------------------
# the fit


def test_exact_grid_is_recovered_from_stars_rendered_with_it():
    """Stars drawn from a known, spatially varying grid by the model's own definition: the fit must
    give back the coefficients (the machinery is exact; only the CG tolerance limits it)."""
    G, order = 25, 2
    gy, gx = np.mgrid[0:G, 0:G] - 12.0
    # A round Gaussian grid whose width varies over the detector: centroid 0 by symmetry, so it
    # satisfies the fit's centroid constraint; the sum is normalised to 1 at every position.
    x, y, flux = positions(150, 6)
    g0 = np.exp(-(gx**2 + gy**2) / (2 * 2.0**2))
    g0 /= g0.sum()
    g1 = np.exp(-(gx**2 + gy**2) / (2 * 2.5**2))
    g1 = g1 / g1.sum() - g0  # zero sum, zero centroid
    g2 = np.exp(-(gx**2 / 1.6**2 + gy**2 / 2.4**2) / 2)
    g2 = g2 / g2.sum() - g0
    truth = np.zeros((6, G, G))
    truth[0], truth[1], truth[2] = g0, 0.3 * g1, 0.2 * g2
    truth[3] = 0.05 * g1
    stamps = []
    for a, b, f in zip(x, y, flux):
        grid = np.tensordot(basis(a, b, order), truth, axes=1)
        ix, iy = np.floor(a + 0.5), np.floor(b + 0.5)
        st_ = np.zeros((S, S))
        st_[1:-1, 1:-1] = f * render(grid, ix - 12 - a, iy - 12 - b, 25)
        stamps.append(st_)
    cands = make_candidates(x, y, stamps)
    for fit_center in (False, True):
        cfg = PixelGridPsfDeterminerConfig(fit_center=fit_center, cg_tolerance=1e-13, cg_chi2_tolerance=0.0)
        r = PixelGridPsfDeterminer(cfg).determine_psf(cands, BBOX)
        assert r.used.all()
        np.testing.assert_allclose(r.psf.coefficients, truth, rtol=0, atol=1e-7 * g0.max())
        np.testing.assert_allclose(r.flux, flux, rtol=1e-7)
        np.testing.assert_allclose(r.x, x, rtol=0, atol=1e-7)
        assert r.metadata["numGoodStars"] == 150 and r.metadata["converged"]


def test_varying_radius_confines_the_varying_terms_to_the_core():
    """varying_radius: a truth whose varying terms live within 6 px (a core that changes, wings that do not)
    is recovered exactly; the fitted terms above the constant are zero outside the radius and keep zero sum
    and centroid on the core; a truth that varies beyond it is not representable (the fit's chi2 says so)."""
    G, order, radius = 25, 2, 6.0
    gy, gx = np.mgrid[0:G, 0:G] - 12.0
    core = gx**2 + gy**2 <= radius**2
    x, y, flux = positions(150, 7)
    g0 = np.exp(-(gx**2 + gy**2) / (2 * 2.0**2))
    g0 /= g0.sum()

    def confined(width):  # zero sum, zero centroid, zero outside the core
        g = np.where(core, np.exp(-(gx**2 + gy**2) / (2 * width**2)), 0.0)
        g = g / g.sum() - np.where(core, g0, 0.0) / g0[core].sum()
        return g

    truth = np.zeros((6, G, G))
    truth[0], truth[1], truth[2] = g0, 0.3 * confined(2.5), 0.2 * confined(1.7)

    def stars(model):
        out = []
        for a, b, f in zip(x, y, flux):
            grid = np.tensordot(basis(a, b, order), model, axes=1)
            ix, iy = np.floor(a + 0.5), np.floor(b + 0.5)
            st_ = np.zeros((S, S))
            st_[1:-1, 1:-1] = f * render(grid, ix - 12 - a, iy - 12 - b, 25)
            out.append(st_)
        return make_candidates(x, y, out)

    cfg = PixelGridPsfDeterminerConfig(varying_radius=radius, cg_tolerance=1e-13, cg_chi2_tolerance=0.0)
    r = PixelGridPsfDeterminer(cfg).determine_psf(stars(truth), BBOX)
    assert r.used.all()
    np.testing.assert_allclose(r.psf.coefficients, truth, rtol=0, atol=1e-7 * g0.max())
    c = r.psf.coefficients
    assert np.all(c[1:, ~core] == 0.0)
    np.testing.assert_allclose(c[1:].sum(axis=(1, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose((c[1:] * gx).sum(axis=(1, 2)), 0.0, atol=1e-11)
    # wings that vary (the unconfined term of the exact-grid test): Piff's model fits them, the confined one
    # cannot (its chi2 is far above the exact fit's)
    wide = truth.copy()
    g1 = np.exp(-(gx**2 + gy**2) / (2 * 3.5**2))
    wide[1] = 0.3 * (g1 / g1.sum() - g0)
    cands = stars(wide)
    free = PixelGridPsfDeterminer(cfg.model_copy(update={"varying_radius": 0.0})).determine_psf(cands, BBOX)
    tied = PixelGridPsfDeterminer(cfg).determine_psf(cands, BBOX)
    assert free.metadata["spatialFitChi2"] < 1e-6 * tied.metadata["spatialFitChi2"]
    with pytest.raises(ValueError, match="varying_radius"):
        PixelGridPsfDeterminer(cfg.model_copy(update={"varying_radius": 0.5})).determine_psf(cands, BBOX)


def test_constant_gaussian_is_recovered_to_1e4_of_its_peak():
    cands, flux = constant_gaussian_candidates()
    cfg = PixelGridPsfDeterminerConfig(interpolant="Lanczos(15)")
    r = PixelGridPsfDeterminer(cfg).determine_psf(cands, BBOX)
    assert r.used.all()
    assert worst_residual(r.psf, 2.0, POINTS) < 1e-4
    np.testing.assert_allclose(r.flux / flux, 1, atol=2e-4)
    # The default interpolant, Lanczos(11), is limited by its own interpolation error (3.0e-4 of the
    # peak for this Gaussian in 1-D, module docstring): the fit cannot do better than a few 1e-4.
    r11 = PixelGridPsfDeterminer().determine_psf(cands, BBOX)
    assert 1e-4 < worst_residual(r11.psf, 2.0, POINTS) < 7e-4


def test_spatially_varying_psf_is_recovered_on_reserved_stars_with_noise():
    """Gaussian sigma 1.7 -> 2.3 px linearly across the detector, e1 varying, sky noise; 20% reserved."""
    rng = np.random.default_rng(8)
    m = 250
    x, y, flux = positions(m, 9)

    def shape_at(a, b):
        return 1.7 + 0.6 * a / W, 0.04 * (b / H - 0.5)

    stamps, var = [], []
    for a, b, f in zip(x, y, flux):
        ix, iy = np.floor(a + 0.5), np.floor(b + 0.5)
        s_, e1 = shape_at(a, b)
        yy, xx = np.mgrid[0:S, 0:S]
        dx, dy = xx + ix - 13 - a, yy + iy - 13 - b
        sx2, sy2 = s_**2 * (1 + e1), s_**2 * (1 - e1)
        im = f * np.exp(-0.5 * (dx**2 / sx2 + dy**2 / sy2)) / (2 * np.pi * np.sqrt(sx2 * sy2))
        v = 25.0 + im / 4.0
        stamps.append(im + rng.normal(0, np.sqrt(v)))
        var.append(v)
    reserved = np.zeros(m, bool)
    reserved[rng.choice(m, m // 5, replace=False)] = True
    cands = make_candidates(x, y, stamps, variance=var)
    r = PixelGridPsfDeterminer().determine_psf(cands, BBOX, reserved=reserved)
    assert not (r.used & reserved).any()
    assert set(r.status[reserved]) == {"reserved"}
    assert r.used.sum() >= 0.9 * (m - reserved.sum())
    for a, b in zip(x[reserved], y[reserved]):
        s_, e1 = shape_at(a, b)
        mom = r.psf.compute_shape(a, b)
        assert mom.xx == pytest.approx(s_**2 * (1 + e1), rel=0.01)
        assert mom.yy == pytest.approx(s_**2 * (1 - e1), rel=0.01)
        assert abs(mom.xy) < 0.005 * s_**2
    # Reserved stars get a flux and chi2 under the final model: consistent with noise.
    red = r.chi2[reserved] / r.dof[reserved]
    assert np.median(red) < 1.3


def test_reserved_stars_never_enter_the_fit():
    """A fit with some stars reserved equals, bit for bit, the fit without them at all."""
    cands, _ = constant_gaussian_candidates(m=60, seed=11)
    reserved = np.zeros(60, bool)
    reserved[::4] = True
    # Make the reserved stars absurd: if they entered the fit it would show.
    img = cands.image.copy()
    img[reserved] = img[reserved][:, ::-1, :] * 3 + 50.0
    cands = PsfCandidates(img, cands.mask, cands.variance, cands.xy0, cands.table)
    cfg = PixelGridPsfDeterminerConfig(spatial_order=1)
    r = PixelGridPsfDeterminer(cfg).determine_psf(cands, BBOX, reserved=reserved)
    keep = ~reserved
    sub = PsfCandidates(cands.image[keep], cands.mask[keep], cands.variance[keep], cands.xy0[keep],
                        {k: np.asarray(v)[keep] for k, v in cands.table.items()})
    r2 = PixelGridPsfDeterminer(cfg).determine_psf(sub, BBOX)
    assert np.array_equal(r.psf.coefficients, r2.psf.coefficients)
    assert np.array_equal(r.flux[keep], r2.flux)
    assert not r.used[reserved].any() and (r.status[reserved] == "reserved").all()
    assert np.isfinite(r.chi2[reserved]).all()


def test_identical_results_run_to_run():
    cands, _ = constant_gaussian_candidates(m=80, seed=12)
    a = PixelGridPsfDeterminer().determine_psf(cands, BBOX)
    b = PixelGridPsfDeterminer().determine_psf(cands, BBOX)
    assert a.psf.coefficients.tobytes() == b.psf.coefficients.tobytes()
    assert a.chi2.tobytes() == b.chi2.tobytes() and a.flux.tobytes() == b.flux.tobytes()


def test_too_few_stars_is_a_typed_error_or_falls_back_to_order_0():
    cands, _ = constant_gaussian_candidates(m=5, seed=13)
    lsst = dict(order_step_down=False, min_stars_per_parameter=1.0)  # LSST's rule: one star per term
    with pytest.raises(PsfTooFewStarsError) as err:
        PixelGridPsfDeterminer(PixelGridPsfDeterminerConfig(**lsst)).determine_psf(cands, BBOX)
    assert err.value.n_stars == 5 and err.value.n_required == 6
    # Reserved stars do not count.
    cands10, _ = constant_gaussian_candidates(m=10, seed=13)
    with pytest.raises(PsfTooFewStarsError):
        PixelGridPsfDeterminer(PixelGridPsfDeterminerConfig(**lsst)).determine_psf(cands10, BBOX,
                                                                                   reserved=np.arange(10) < 5)
    noise_free = PsfCheckConfig(min_chi2_ratio=0.0)  # no noise to overfit
    # The default steps down to order 0 (5 stars < 3 per term at orders 2 and 1).
    r = PixelGridPsfDeterminer(PixelGridPsfDeterminerConfig(checks=noise_free)).determine_psf(cands, BBOX)
    assert r.psf.spatial_order == 0 and r.metadata["spatial_order_configured"] == 2 and r.order_reduced
    cfg = PixelGridPsfDeterminerConfig(zeroth_order_interp_not_enough_stars=True, checks=noise_free, **lsst)
    r = PixelGridPsfDeterminer(cfg).determine_psf(cands, BBOX)
    assert r.psf.spatial_order == 0 and r.metadata["n_iter"] == 1 and r.used.all()
    assert worst_residual(r.psf, 2.0, POINTS[:2]) < 1e-3


def test_outliers_are_rejected():
    cands, _ = constant_gaussian_candidates(m=120, seed=14)
    img = cands.image.copy()
    bad = [3, 50, 77]
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, img.shape).astype(np.float32)
    for k in bad:  # a companion 4 px away at half the flux: a double star
        img[k] += 0.5 * np.roll(img[k], 4, axis=1)
    cands = PsfCandidates(img + noise, cands.mask, cands.variance, cands.xy0, cands.table)
    r = PixelGridPsfDeterminer().determine_psf(cands, BBOX)
    assert set(np.flatnonzero(r.status == "outlier")) == set(bad)
    assert r.used.sum() == 117


def test_masked_and_bad_stars_are_dropped_with_a_reason():
    cands, _ = constant_gaussian_candidates(m=40, seed=15)
    mask = cands.mask.copy()
    mask[2, :, :20] = 1 << 2  # INTRP over most of the fitted stamp: under half usable
    var = cands.variance.copy()
    var[5] = 0.0  # no usable pixel
    img = cands.image.copy()
    img[7, 13, 13] = np.nan  # one bad pixel: still fitted
    cands = PsfCandidates(img, mask, var, cands.xy0, cands.table)
    r = PixelGridPsfDeterminer().determine_psf(cands, BBOX)
    assert r.status[2] == "too_few_pixels" and r.status[5] == "too_few_pixels"
    assert r.status[7] == "used"
    assert r.metadata["numAvailStars"] == 38


def test_config_validation():
    with pytest.raises(ValidationError, match="odd"):
        PixelGridPsfDeterminerConfig(stamp_size=24)
    with pytest.raises(ValidationError, match="Lanczos"):
        PixelGridPsfDeterminerConfig(interpolant="Cubic")
    with pytest.raises(ValidationError, match="extent"):
        PixelGridPsfDeterminerConfig(stamp_size=21, model_size=25)
    with pytest.raises(ValidationError):
        PixelGridPsfDeterminerConfig(spatial_ordr=2)
    assert PixelGridPsfDeterminerConfig().draw_size == 25
    assert PixelGridPsfDeterminerConfig(sampling_size=0.5, model_size=41).draw_size == 51
    assert PixelGridPsfDeterminerConfig(spatial_order_per_band={"r": 4}).order_for_band("r") == 4


# ------------------------------------------------------------------------------------------------
# the smoothness prior


def difference_grams(G):
    """K = D2^T D2 and M = D1^T D1 of the second- and first-difference operators along one axis."""
    D2 = np.zeros((G - 2, G))
    for r in range(G - 2):
        D2[r, r:r + 3] = (1.0, -2.0, 1.0)
    D1 = np.diff(np.eye(G), axis=0)
    return D2.T @ D2, D1.T @ D1


def noisy_supersampled_candidates(m, seed, sigma=1.3, noise=1.0):
    rng = np.random.default_rng(seed)
    x, y, flux = positions(m, seed)
    flux = flux / 50.0
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    stamps = [f * gaussian_stamp(a, b, i - S // 2, j - S // 2, sigma) + rng.normal(0, noise, (S, S))
              for a, b, i, j, f in zip(x, y, ix, iy, flux)]
    return make_candidates(x, y, stamps, variance=np.full((m, S, S), noise**2))


def test_smoothness_prior_fit_is_a_stationary_point_of_chi2_plus_prior():
    """Independent check of the penalised fit: at the returned model, the gradient of the stars' chi2
    (fluxes profiled, numpy reference rendering) must balance the prior's gradient, lambda * kappa *
    (K P + P K + 2 M P M) per term grid (the thin-plate energy f_xx^2 + 2 f_xy^2 + f_yy^2 in finite
    differences), on the constraint's tangent space (each term's sum held)."""
    G, s, order, stamp, lam = 11, 0.6, 1, 15, 0.3
    cands = noisy_supersampled_candidates(60, seed=21)
    cfg = PixelGridPsfDeterminerConfig(model_size=G, sampling_size=s, spatial_order=order, stamp_size=stamp,
                                       fit_center=False, smoothness=lam, max_snr=1e12, outlier_n_sigma=50.0,
                                       min_iter=6, chisq_thresh=0.0,
                                       cg_tolerance=1e-13, cg_chi2_tolerance=0.0)
    r = PixelGridPsfDeterminer(cfg).determine_psf(cands, BBOX)
    assert r.used.all()
    X = r.psf.coefficients
    off = S // 2 - stamp // 2
    origin = 0.5 * (G - 1)
    grad = np.zeros_like(X)
    si, txs, tys = [], [], []
    for k in range(len(cands)):
        u0 = cands.xy0[k, 0] + off - r.x[k]
        v0 = cands.xy0[k, 1] + off - r.y[k]
        lx, ly = lanczos_matrix(u0, stamp, G, s, 11), lanczos_matrix(v0, stamp, G, s, 11)
        inx = np.abs((u0 + np.arange(stamp)) / s) <= origin + 1e-9
        iny = np.abs((v0 + np.arange(stamp)) / s) <= origin + 1e-9
        w = np.outer(iny, inx).astype(float)  # unit variance: weight 1 inside the support
        d = cands.image[k, off:off + stamp, off:off + stamp].astype(float)
        b = basis(r.x[k], r.y[k], order)
        m = ly @ np.tensordot(b, X, axes=1) @ lx.T
        f = np.sum(w * d * m) / np.sum(w * m * m)
        assert f == pytest.approx(r.flux[k], rel=1e-9)
        back = f * ly.T @ (w * (d - f * m)) @ lx
        grad += b[:, None, None] * back[None]
        si.append(f * f)
        txs.append(lx[inx].T @ lx[inx])
        tys.append(ly[iny].T @ ly[iny])
    si = np.array(si)
    tx = np.tensordot(si, np.array(txs), axes=1) / si.sum()
    ty = np.tensordot(si, np.array(tys), axes=1) / si.sum()
    kappa = si.sum() * np.trace(ty) / G * np.trace(tx) / G
    K, M = difference_grams(G)
    prior = lam * kappa * (K @ X + X @ K + 2 * M @ X @ M)  # matmul broadcasts over the terms
    tangent = lambda a: a - a.mean(axis=(1, 2), keepdims=True)
    g, p = tangent(grad), tangent(prior)
    assert np.abs(p).max() > 0.05 * np.abs(g).max()  # the prior matters here
    np.testing.assert_allclose(g, p, rtol=0, atol=2e-6 * np.abs(p).max())
    # Without the prior the chi2 gradient alone vanishes on the tangent space, and the grid is rougher.
    r0 = PixelGridPsfDeterminer(cfg.model_copy(update={"smoothness": 0.0})).determine_psf(cands, BBOX)
    rough = lambda c: float(np.sum((K @ c + c @ K + 2 * M @ c @ M) * c))
    assert rough(r0.psf.coefficients) > 1.3 * rough(X)


def test_smoothness_prior_in_its_strong_limit_gives_the_flat_grid():
    """lambda -> infinity: every term's grid has zero thin-plate energy (a plane), its sum and first
    moments are constrained (1 / s^2 for the constant term, 0 otherwise): the constant grid."""
    G, s = 11, 0.6
    cands = noisy_supersampled_candidates(40, seed=22)
    cfg = PixelGridPsfDeterminerConfig(model_size=G, sampling_size=s, spatial_order=1, stamp_size=15,
                                       smoothness=1e9, max_iter=2, outlier_n_sigma=50.0, cg_chi2_tolerance=0.0,
                                       checks=PsfCheckConfig(do_checks=False))  # a flat grid is no PSF
    c = PixelGridPsfDeterminer(cfg).determine_psf(cands, BBOX).psf.coefficients
    flat = 1.0 / (s * s) / G**2
    np.testing.assert_allclose(c[0], flat, rtol=0, atol=1e-6 * flat)
    np.testing.assert_allclose(c[1:], 0.0, rtol=0, atol=1e-6 * flat)


def test_cross_validated_smoothness_follows_its_documented_recipe():
    G, s, stamp = 21, 0.5, 15
    cands = noisy_supersampled_candidates(80, seed=23, sigma=1.5)
    reserved = np.zeros(80, bool)
    reserved[::8] = True
    cfg = PixelGridPsfDeterminerConfig(model_size=G, sampling_size=s, spatial_order=0, stamp_size=stamp)
    det = PixelGridPsfDeterminer(cfg)
    values = (0.0, 0.1, 1.0)
    best, table = det.cross_validate_smoothness(cands, BBOX, values=values, n_folds=3, reserved=reserved, seed=5)
    assert list(table["smoothness"]) == list(values)
    assert set(table["n_scored"]) == {70}  # every non-reserved star scored once, no reserved star
    # A 2x supersampled grid on 70 noisy stars over-fits: some smoothing predicts held-out stars better.
    assert best > 0 and table["median_chi2dof"][0] > table["median_chi2dof"][list(values).index(best)]
    # The recipe by hand for the winning value: folds from default_rng(seed).permutation of the pool.
    pool = np.flatnonzero(~reserved)
    fold = np.full(80, -1)
    fold[pool[np.random.default_rng(5).permutation(pool.size)]] = np.arange(pool.size) % 3
    scores = []
    for k in range(3):
        held = fold == k
        rk = PixelGridPsfDeterminer(cfg.model_copy(update={"smoothness": best})).determine_psf(
            cands, BBOX, reserved=reserved | held)
        assert not rk.used[held].any()
        scores.append(rk.chi2[held] / rk.dof[held])
    assert table["median_chi2dof"][list(values).index(best)] == np.median(np.concatenate(scores))
    with pytest.raises(ValueError, match="n_folds"):
        det.cross_validate_smoothness(cands, BBOX, n_folds=1)
    with pytest.raises(ValueError, match="values"):
        det.cross_validate_smoothness(cands, BBOX, values=(-1.0,))


# ------------------------------------------------------------------------------------------------
# garbage never becomes a model (issue 22)


def _noisy_gaussians(m, sigma, seed, noise=3.0):
    x, y, flux = positions(m, seed)
    rng = np.random.default_rng(seed + 1)
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    stamps = np.array([f * gaussian_stamp(a, b, i - S // 2, j - S // 2, sigma)
                       for a, b, i, j, f in zip(x, y, ix, iy, flux)])
    return x, y, stamps + rng.normal(0, noise, stamps.shape), np.full(stamps.shape, noise**2)


@pytest.mark.parametrize("garbage", ["zero", "negative"])
def test_all_zero_or_negative_stamps_raise_too_few_stars_with_a_reason_per_star(garbage):
    """Before issue 22 an all-zero or negative set fitted a flat PSF with every star "used"."""
    x, y, stamps, var = _noisy_gaussians(30, 2.0, seed=3)
    stamps = np.zeros_like(stamps) if garbage == "zero" else -stamps
    cands = make_candidates(x, y, stamps, variance=var)
    with pytest.raises(PsfTooFewStarsError) as info:
        PixelGridPsfDeterminer().determine_psf(cands, BBOX)
    assert info.value.n_stars == 0
    assert info.value.dropped_candidates == {"bad_flux": list(range(30))}
    assert "bad_flux: 30" in str(info.value)


def test_stamps_of_pure_noise_are_refused_as_low_snr():
    """Noise stamps whose sum is exactly +1 sigma (sigma = sqrt(sum variance) = 3 * 27 = 81): positive flux, no
    star above the noise (min_star_snr 3)."""
    x, y, _, var = _noisy_gaussians(30, 2.0, seed=4)
    noise = np.random.default_rng(5).normal(0, 3.0, var.shape)
    noise += (81.0 - noise.sum(axis=(1, 2), keepdims=True)) / S**2
    cands = make_candidates(x, y, noise, variance=var)
    with pytest.raises(PsfTooFewStarsError) as info:
        PixelGridPsfDeterminer(PixelGridPsfDeterminerConfig(spatial_order=0)).determine_psf(cands, BBOX)
    assert info.value.dropped_candidates == {"low_snr": list(range(30))}
    # the threshold is the configured one: at 0.99 sigma every stamp passes the screen (its whole box is at 1)
    assert list(screen_candidates(cands, size=27, bad_mask_bits=0, min_snr=0.99)) == [""] * 30
    # the S/N is the best of the central boxes: a faint star's core is seen where the whole box's sum is not
    star = np.zeros((1, S, S))
    star[0, S // 2, S // 2] = 4.0 * 3.0 * 5  # 4 sigma of a 5 x 5 box (noise 3 * 5), 0.74 sigma of 27 x 27
    one = make_candidates(x[:1], y[:1], star, variance=var[:1])
    assert list(screen_candidates(one, size=27, bad_mask_bits=0, min_snr=3.0)) == [""]
    assert list(screen_candidates(one, size=27, bad_mask_bits=0, min_snr=4.1)) == ["low_snr"]


def test_garbage_among_good_stars_is_dropped_with_its_reason_and_the_psf_comes_from_the_good_ones():
    sigma = 2.0
    x, y, stamps, var = _noisy_gaussians(60, sigma, seed=6)
    garbage = {"bad_flux": [3, 17, 41, 50], "low_snr": [8, 29]}
    stamps[[3, 17]] = 0.0
    stamps[[41, 50]] *= -1.0
    stamps[[8, 29]] = np.random.default_rng(7).normal(0, 3.0, (2, S, S))  # noise alone: no star
    stamps[[8, 29]] -= stamps[[8, 29]].sum(axis=(1, 2), keepdims=True) / S**2 - 0.1  # S/N 0.1 * 729 / 81 = 0.9
    cands = make_candidates(x, y, stamps, variance=var)
    r = PixelGridPsfDeterminer(PixelGridPsfDeterminerConfig(spatial_order=1)).determine_psf(cands, BBOX)
    assert r.metadata["dropped_candidates"] == garbage
    bad = sorted(garbage["bad_flux"] + garbage["low_snr"])
    assert not r.used[bad].any() and np.isnan(r.flux[bad]).all() and (r.dof[bad] == 0).all()
    assert list(r.status[bad]) == ["bad_flux", "low_snr", "bad_flux", "low_snr", "bad_flux", "bad_flux"]
    good = np.setdiff1d(np.arange(60), bad)
    assert r.used[good].sum() >= 50
    assert r.metadata["numGoodStars"] == r.used.sum()
    # the model is the Gaussian that made the good stamps: its size within 1% of sigma, everywhere
    for px, py in POINTS:
        size = r.psf.compute_shape(px, py).determinant_radius
        assert abs(size / sigma - 1) < 0.01, (px, py, size)
    flux = positions(60, 6)[2]
    assert np.allclose(r.flux[good][r.used[good]], flux[good][r.used[good]], rtol=0.02)
