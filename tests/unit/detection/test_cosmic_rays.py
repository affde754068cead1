"""Cosmic-ray finder (visitcal.detection.cosmic_rays) on synthetic images with known truth.

Scenes are noise-free or Gaussian-noise Gaussian-PSF star fields (sigma 1.5 px) on a
background-subtracted sky of variance 100 (sigma 10) plus the stars' own Poisson variance, with
hits added at known pixels. The numpy reference `reference_candidates` is a loop-by-loop
transcription of criteria 1-3 (module docstring of visitcal.detection.cosmic_rays) and must agree with the
C++ per-pixel test exactly.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from visitcal import _core
from visitcal.detection.cosmic_rays import (
    FindCosmicRaysConfig,
    RepairConfig,
    RepairTask,
    TooManyCosmicRaysError,
    cond3_thresholds,
    cosmic_ray_candidates,
    find_cosmic_rays,
)
from visitcal.core.image import Exposure, MaskedImage

SIGMA = 1.5
SKY_VAR = 100.0


def gaussian_psf(half: int = 7, sigma: float = SIGMA) -> np.ndarray:
    o = np.arange(-half, half + 1)
    p = np.exp(-0.5 * (o[:, None] ** 2 + o[None, :] ** 2) / sigma**2)
    return p / p.sum()


def star_model(shape, stars) -> np.ndarray:
    """Sum of point-sampled Gaussians: (x, y, flux) in pixels / image units."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    model = np.zeros(shape)
    for x, y, f in stars:
        model += f * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / SIGMA**2) / (2 * np.pi * SIGMA**2)
    return model


def scene(shape=(64, 64), stars=(), seed=0, noise=True):
    """(MaskedImage, noise-free model): background-subtracted, variance = sky + model."""
    model = star_model(shape, stars)
    variance = (SKY_VAR + model).astype(np.float32)
    image = model.copy()
    if noise:
        image += np.random.default_rng(seed).normal(size=shape) * np.sqrt(variance)
    return MaskedImage(image.astype(np.float32), None, variance), model


def cr_map(mi) -> np.ndarray:
    return mi.mask.test("CR")


class KernelPsf:
    """Minimal PSF object: the visitcal interface's compute_kernel_image and average_position."""

    average_position = (10.0, 10.0)

    def compute_kernel_image(self, x, y):
        return gaussian_psf()


# --- configuration -------------------------------------------------------------------------------


def test_config_defaults_agree_with_control_and_spec():
    config, ctrl = FindCosmicRaysConfig(), _core.FindCosmicRaysControl()
    for name in ("min_sigma", "min_dn", "cond3_fac", "cond3_fac2", "niteration", "n_cr_pixel_max", "keep_crs", "grow"):
        assert getattr(config, name) == getattr(ctrl, name), name
    # lsst-spec §5.5
    assert (config.min_sigma, config.min_dn, config.cond3_fac, config.cond3_fac2) == (6.0, 150.0, 2.0, 0.35)
    assert (config.niteration, config.n_cr_pixel_max, config.keep_crs) == (6, 1_000_000, False)
    core = config.model_copy(update={"min_sigma": 4.5, "keep_crs": True}).to_core()
    assert (core.min_sigma, core.keep_crs) == (4.5, True)


def test_config_is_strict_and_pickles():
    with pytest.raises(ValueError):
        FindCosmicRaysConfig(minSigma=5.0)
    with pytest.raises(ValueError):
        FindCosmicRaysConfig(min_sigma=0.0)
    config = FindCosmicRaysConfig(min_dn=80.0, bad_mask_planes="BAD")
    assert config.bad_mask_planes == ("BAD",)
    assert pickle.loads(pickle.dumps(config)) == config
    repair = RepairConfig(do_interpolate=False)
    repair.cosmicray.niteration = 3
    assert pickle.loads(pickle.dumps(repair)) == repair
    with pytest.raises(ValueError):
        repair.cosmicray.niteration = 0


def test_cond3_thresholds_from_psf():
    p = gaussian_psf()
    c = p.shape[0] // 2
    t = cond3_thresholds(p, 0.35)
    expected = 0.35 / p[c, c] * np.array([
        0.5 * (p[c, c - 1] + p[c, c + 1]), 0.5 * (p[c - 1, c] + p[c + 1, c]),
        0.5 * (p[c - 1, c - 1] + p[c + 1, c + 1]), 0.5 * (p[c + 1, c - 1] + p[c - 1, c + 1])])
    np.testing.assert_allclose(t, expected, rtol=1e-14)
    np.testing.assert_allclose(t[0], 0.35 * np.exp(-0.5 / SIGMA**2), rtol=1e-12)  # analytic Gaussian ratio


# --- single hits, tracks, filters ----------------------------------------------------------------


def test_single_hot_pixel_found_interpolated_and_masked():
    stars = [(20.3, 22.7, 2e4), (45.0, 40.2, 5e4), (30.5, 50.5, 8e3)]
    mi, model = scene(stars=stars, seed=1)
    y, x = 25, 24  # on the wing of the first star: local level ~50 (5 sigma)
    original = mi.image.copy()
    mi.image[y, x] += 3000.0
    result = find_cosmic_rays(mi, gaussian_psf())
    assert result.n_cr == 1 and result.n_pixels == 1
    np.testing.assert_array_equal(np.argwhere(cr_map(mi)), [[y, x]])
    row = result.cosmic_rays[0]
    assert (row["min_x"], row["min_y"], row["npix"]) == (x, y, 1)
    assert row["flux"] == pytest.approx(original[y, x] + 3000.0, rel=1e-6)
    # Interpolated to the local level within the noise of a pixel.
    assert abs(mi.image[y, x] - model[y, x]) < 3.0 * np.sqrt(SKY_VAR + model[y, x])
    # Every other pixel is untouched; the variance of the hit is the local one.
    keep = ~cr_map(mi)
    np.testing.assert_array_equal(mi.image[keep], original[keep])
    assert mi.variance[y, x] == pytest.approx(SKY_VAR + model[y, x], rel=0.2)


@pytest.mark.parametrize("peak", [1e3, 1e5])
@pytest.mark.parametrize("centre", [(30.0, 30.0), (30.5, 30.5), (30.27, 29.81)])
def test_psf_shaped_star_is_not_a_cosmic_ray(peak, centre):
    flux = peak * 2 * np.pi * SIGMA**2
    for noise in (False, True):
        mi, _ = scene(stars=[(*centre, flux)], seed=3, noise=noise)
        before = mi.image.copy()
        assert cosmic_ray_candidates(mi, gaussian_psf()).sum() == 0
        result = find_cosmic_rays(mi, gaussian_psf())
        assert result.n_pixels == 0 and not cr_map(mi).any()
        np.testing.assert_array_equal(mi.image, before)


def test_two_pixel_track_is_one_object():
    mi, _ = scene(seed=4)
    mi.image[30, 30] += 2500.0
    mi.image[31, 31] += 2000.0  # diagonal neighbour: 8-connected
    result = find_cosmic_rays(mi, gaussian_psf())
    assert result.n_cr == 1
    row = result.cosmic_rays[0]
    assert (row["min_x"], row["min_y"], row["max_x"], row["max_y"], row["npix"]) == (30, 30, 31, 31, 2)
    assert (row["peak_x"], row["peak_y"]) == (30, 30)
    assert set(map(tuple, np.argwhere(cr_map(mi)))) == {(30, 30), (31, 31)}
    assert np.all(np.abs(mi.image[[30, 31], [30, 31]]) < 40.0)  # back to sky (sigma 10)


def test_long_track_needs_iterations():
    mi, _ = scene(seed=5)
    xs = np.arange(20, 32)
    mi.image[40, xs] += 1500.0  # a flat horizontal track: only its ends look sharp at first
    result = find_cosmic_rays(mi, gaussian_psf(), FindCosmicRaysConfig(niteration=6))
    assert result.n_cr == 1 and set(np.nonzero(cr_map(mi)[40])[0]) >= set(xs)
    mi2, _ = scene(seed=5)
    mi2.image[40, xs] += 1500.0
    one = find_cosmic_rays(mi2, gaussian_psf(), FindCosmicRaysConfig(niteration=1))
    assert one.n_pixels < xs.size


def test_min_dn_filter():
    for min_dn, found in ((150.0, False), (50.0, True)):
        mi, _ = scene(seed=6)
        mi.image[20, 20] = 100.0  # 10 sigma and sharp, but below min_DN = 150
        before = mi.image.copy()
        result = find_cosmic_rays(mi, gaussian_psf(), FindCosmicRaysConfig(min_dn=min_dn))
        assert bool(cr_map(mi)[20, 20]) is found
        assert result.n_rejected == (0 if found else 1)
        if not found:
            np.testing.assert_array_equal(mi.image, before)


def test_grow_pass_catches_faint_wing():
    def run(grow):
        mi, _ = scene(seed=7)
        mi.image[30, 30] = 3000.0
        mi.image[30, 31] = 45.0  # 4.5 sigma: misses min_sigma = 6, passes min_sigma / 2 = 3
        return mi, find_cosmic_rays(mi, gaussian_psf(), FindCosmicRaysConfig(grow=grow))

    mi, result = run(False)
    assert result.n_pixels == 1 and not cr_map(mi)[30, 31]
    mi, result = run(True)
    assert result.n_pixels == 2 and result.n_grown == 1 and result.n_cr == 1
    assert cr_map(mi)[30, 31]


def test_grow_does_not_eat_a_star_next_to_a_hit():
    flux = 2e4 * 2 * np.pi * SIGMA**2  # peak 2e4
    mi, _ = scene(stars=[(30.0, 30.0, flux)], seed=8)
    mi.image[30, 32] += 5e4  # two pixels from the peak, > 1.86x the star there
    find_cosmic_rays(mi, gaussian_psf())
    assert cr_map(mi)[30, 32] and not cr_map(mi)[30, 30] and cr_map(mi).sum() <= 2


def test_too_many_cosmic_rays_is_typed_and_leaves_input_alone():
    mi, _ = scene(seed=9)
    hits = [(8 + 6 * k, 8 + 5 * k) for k in range(10)]
    for y, x in hits:
        mi.image[y, x] += 2000.0
    image, variance, mask = mi.image.copy(), mi.variance.copy(), mi.mask.array.copy()
    with pytest.raises(TooManyCosmicRaysError) as info:
        find_cosmic_rays(mi, gaussian_psf(), FindCosmicRaysConfig(n_cr_pixel_max=5))
    assert (info.value.n_pixels, info.value.limit) == (10, 5)
    assert "10 > n_cr_pixel_max = 5" in str(info.value)
    np.testing.assert_array_equal(mi.image, image)
    np.testing.assert_array_equal(mi.variance, variance)
    np.testing.assert_array_equal(mi.mask.array, mask)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is TooManyCosmicRaysError and (again.n_pixels, again.limit) == (10, 5)
    assert str(again) == str(info.value)
    assert find_cosmic_rays(mi, gaussian_psf(), FindCosmicRaysConfig(n_cr_pixel_max=10)).n_pixels == 10


def test_keep_crs_masks_but_keeps_values():
    mi, _ = scene(seed=10)
    mi.image[12, 40] += 4000.0
    image, variance = mi.image.copy(), mi.variance.copy()
    result = find_cosmic_rays(mi, gaussian_psf(), FindCosmicRaysConfig(keep_crs=True))
    assert result.n_pixels == 1 and cr_map(mi)[12, 40]
    np.testing.assert_array_equal(mi.image, image)
    np.testing.assert_array_equal(mi.variance, variance)


def test_bad_pixels_are_never_candidates_nor_neighbours():
    mi, _ = scene(seed=11)
    mi.image[20, 20] += 3000.0
    mi.mask.set("BAD", np.pad(np.ones((1, 1), bool), ((20, 43), (20, 43))))
    mi.image[40, 40] += 3000.0
    mi.image[40, 41] = np.nan  # a NaN where flagged SAT is never read
    sat = np.zeros(mi.shape, bool)
    sat[40, 41] = True
    mi.mask.set("SAT", sat)
    result = find_cosmic_rays(mi, gaussian_psf())
    assert not cr_map(mi)[20, 20] and cr_map(mi)[40, 40] and result.n_pixels == 1
    assert np.isfinite(mi.image[40, 40]) and abs(mi.image[40, 40]) < 40.0


def test_background_scalar_and_image_agree_with_subtracting_first():
    mi0, _ = scene(stars=[(20.0, 20.0, 3e4)], seed=12)
    for y, x in ((10, 50), (45, 12), (21, 23)):
        mi0.image[y, x] += 2500.0
    yy, xx = np.mgrid[:64, :64]
    sky = (500.0 + 3.0 * xx - 2.0 * yy).astype(np.float32)
    ref = MaskedImage(mi0.image.copy(), None, mi0.variance.copy())
    r_ref = find_cosmic_rays(ref, gaussian_psf())
    assert r_ref.n_pixels == 3
    with_image = MaskedImage(mi0.image + sky, None, mi0.variance.copy())
    r_img = find_cosmic_rays(with_image, gaussian_psf(), background=sky)
    with_scalar = MaskedImage(mi0.image + np.float32(500.0), None, mi0.variance.copy())
    r_sc = find_cosmic_rays(with_scalar, gaussian_psf(), background=500.0)
    for mi, r in ((with_image, r_img), (with_scalar, r_sc)):
        np.testing.assert_array_equal(cr_map(mi), cr_map(ref))
        np.testing.assert_allclose(r.cosmic_rays["flux"], r_ref.cosmic_rays["flux"], rtol=1e-4)
    # A linear sky is interpolated exactly, so the repaired pixels differ by the sky there.
    np.testing.assert_allclose(with_image.image - sky, ref.image, atol=0.05)


def test_deterministic_and_xy0_in_table():
    def run():
        mi, _ = scene(stars=[(30.0, 30.0, 1e5)], seed=13)
        mi.image[5, 7] += 3000.0
        mi = MaskedImage(mi.image, mi.mask, mi.variance, xy0=(100, 200))
        return mi, find_cosmic_rays(mi, gaussian_psf())

    (a, ra), (b, _) = run(), run()
    assert a.image.tobytes() == b.image.tobytes() and a.mask.array.tobytes() == b.mask.array.tobytes()
    assert (ra.cosmic_rays["min_x"][0], ra.cosmic_rays["min_y"][0]) == (107, 205)


# --- the per-pixel test against a numpy reference ------------------------------------------------


def reference_candidates(image, variance, bad, background, psf, min_sigma, cond3_fac, cond3_fac2):
    """Criteria 1-3 of lsst-spec §5.5, pixel by pixel in float64 (visitcal.detection.cosmic_rays docstring)."""
    c = psf.shape[0] // 2
    p = psf / psf.sum()
    pairs = [((0, -1), (0, 1)), ((-1, 0), (1, 0)), ((-1, -1), (1, 1)), ((1, -1), (-1, 1))]  # (dy, dx)
    thresh = [cond3_fac2 * 0.5 * (p[c + a[0], c + a[1]] + p[c + b[0], c + b[1]]) / p[c, c] for a, b in pairs]
    ny, nx = image.shape
    ok = lambda y, x: 0 <= y < ny and 0 <= x < nx and not bad[y, x]
    out = np.zeros((ny, nx), bool)
    for y in range(ny):
        for x in range(nx):
            v = float(image[y, x])
            if not ok(y, x) or not v - background > min_sigma * np.sqrt(float(variance[y, x])):
                continue
            if any(ok(y + dy, x + dx) and image[y + dy, x + dx] > v
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx):
                continue
            peak = v - background - cond3_fac * np.sqrt(float(variance[y, x]))
            for t, (a, b) in zip(thresh, pairs):
                ya, xa, yb, xb = y + a[0], x + a[1], y + b[0], x + b[1]
                if not (ok(ya, xa) and ok(yb, xb)):
                    continue
                mean = 0.5 * (float(image[ya, xa]) + float(image[yb, xb])) - background
                sig = 0.5 * np.sqrt(float(variance[ya, xa]) + float(variance[yb, xb]))
                if t * peak > mean + cond3_fac * sig:
                    out[y, x] = True
                    break
    return out


@pytest.mark.parametrize("min_sigma, cond3_fac", [(6.0, 2.0), (3.0, 0.0), (2.0, 1.0)])
def test_per_pixel_criteria_match_numpy_reference(min_sigma, cond3_fac):
    rng = np.random.default_rng(14)
    stars = [(rng.uniform(3, 45), rng.uniform(3, 45), 10 ** rng.uniform(3, 5.5)) for _ in range(15)]
    mi, _ = scene((48, 48), stars, seed=15)
    idx = rng.choice(mi.image.size, 150, replace=False)
    mi.image.ravel()[idx] += (10 ** rng.uniform(1, 3.5, idx.size)).astype(np.float32)  # faint to bright hits
    mi.image += np.float32(50.0)  # a background level, so it is really subtracted
    bad = np.zeros(mi.shape, bool)
    bad.ravel()[rng.choice(mi.image.size, 40, replace=False)] = True
    mi.mask.set("SAT", bad)
    config = FindCosmicRaysConfig(min_sigma=min_sigma, cond3_fac=cond3_fac)
    got = cosmic_ray_candidates(mi, gaussian_psf(), config, background=50.0)
    want = reference_candidates(mi.image, mi.variance, bad, 50.0, gaussian_psf(), min_sigma, cond3_fac, 0.35)
    assert want.sum() >= 5  # the comparison is not vacuous
    np.testing.assert_array_equal(got, want)


# --- properties ----------------------------------------------------------------------------------


star_lists = st.lists(st.tuples(st.floats(2, 37), st.floats(2, 37), st.floats(2.0, 6.0)), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(stars=star_lists, seed=st.integers(0, 2**31 - 1), hit_x=st.integers(1, 38), hit_y=st.integers(1, 38),
       amplitude=st.floats(30.0, 300.0))
def test_property_stars_are_never_hits_and_a_hit_is_found(stars, seed, hit_x, hit_y, amplitude):
    stars = [(x, y, 10**lf) for x, y, lf in stars]
    mi, model = scene((40, 40), stars, seed=seed)
    before = mi.image.copy()
    assert find_cosmic_rays(mi, gaussian_psf()).n_pixels == 0
    np.testing.assert_array_equal(mi.image, before)
    # A hit of `amplitude` sigma, placed where it outshines the star under it (condition 3 cannot
    # see a hit much fainter than the star's own peak: 1/cond3_fac2 - 1 = 1.86x in the worst case).
    sigma = float(np.sqrt(mi.variance[hit_y, hit_x]))
    deposit = amplitude * sigma
    assume(deposit > 4.0 * model[max(hit_y - 2, 0):hit_y + 3, max(hit_x - 2, 0):hit_x + 3].max() + 150.0)
    mi.image[hit_y, hit_x] += np.float32(deposit)
    result = find_cosmic_rays(mi, gaussian_psf())
    assert cr_map(mi)[hit_y, hit_x]
    # One CR: the hit, maybe grown into a few neighbours (next to a star's core the grow pass at
    # min_sigma / 2 can take more than one), never anything beyond the hit's 3 x 3.
    assert result.n_cr == 1
    ys, xs = np.nonzero(cr_map(mi))
    assert np.all((np.abs(ys - hit_y) <= 1) & (np.abs(xs - hit_x) <= 1)), list(zip(xs, ys))


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_errors():
    mi, _ = scene(seed=16)
    psf = gaussian_psf()
    with pytest.raises(ValueError, match="odd"):
        find_cosmic_rays(mi, np.ones((4, 4)))
    with pytest.raises(ValueError, match="normalized"):
        find_cosmic_rays(mi, np.zeros((5, 5)))
    off = np.roll(psf, 2, axis=1)
    with pytest.raises(ValueError, match="middle pixel"):
        find_cosmic_rays(mi, off)
    with pytest.raises(ValueError, match="non-finite"):
        find_cosmic_rays(mi, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="empty"):
        find_cosmic_rays(MaskedImage(np.zeros((0, 5), np.float32)), psf)
    with pytest.raises(TypeError, match="MaskedImage"):
        find_cosmic_rays(mi.image, psf)
    with pytest.raises(ValueError, match="background image shape"):
        find_cosmic_rays(mi, psf, background=np.zeros((3, 3)))
    nan = mi.clone()
    nan.image[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"image: 1 non-finite .*x=4, y=3"):
        find_cosmic_rays(nan, psf)
    zero = mi.clone()
    zero.variance[5, 6] = 0.0
    with pytest.raises(ValueError, match=r"variance: 1 non-positive"):
        find_cosmic_rays(zero, psf)
    frozen = mi.clone()
    frozen.image.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        find_cosmic_rays(frozen, psf)


# --- RepairTask ----------------------------------------------------------------------------------


def test_repair_task_on_exposure_with_psf_object():
    mi, _ = scene(stars=[(32.0, 32.0, 5e4)], seed=17)
    mi.image[10, 10] += 3000.0
    exposure = Exposure(mi, psf=KernelPsf())
    task = RepairTask()
    result = task.run(exposure)
    assert result.cosmic_rays.n_cr == 1 and exposure.mask.test("CR")[10, 10]
    assert abs(exposure.image[10, 10]) < 40.0
    assert "RepairTask" in repr(task)

    mi2, _ = scene(seed=17)
    mi2.image[10, 10] += 3000.0
    kept = mi2.image.copy()
    exposure2 = Exposure(mi2)
    assert RepairTask(RepairConfig(do_cosmic_ray=False)).run(exposure2).cosmic_rays is None
    assert not exposure2.mask.test("CR").any()
    with pytest.raises(ValueError, match="no psf"):
        RepairTask().run(exposure2)
    RepairTask().run(exposure2, gaussian_psf(), keep_crs=True)
    assert exposure2.mask.test("CR")[10, 10]
    np.testing.assert_array_equal(exposure2.image, kept)
    with pytest.raises(NotImplementedError):
        RepairTask().run(exposure2, gaussian_psf(), defects=[1])


def test_subimage_view_is_repaired_in_place_and_results_pickle():
    mi, _ = scene((64, 64), seed=18)
    mi.image[40, 30] += 3000.0
    from visitcal.core.geom import Box2I

    sub = mi.subimage(Box2I(20, 30, 49, 59))  # a strided view: rows of the parent
    result = find_cosmic_rays(sub, gaussian_psf())
    assert mi.mask.test("CR")[40, 30] and abs(mi.image[40, 30]) < 40.0
    assert (result.cosmic_rays["min_x"][0], result.cosmic_rays["min_y"][0]) == (30, 40)
    again = pickle.loads(pickle.dumps(result))
    assert again.n_pixels == result.n_pixels and list(again.cosmic_rays["flux"]) == list(result.cosmic_rays["flux"])
    task = pickle.loads(pickle.dumps(RepairTask(RepairConfig(do_interpolate=False))))
    assert task.config.do_interpolate is False
