"""Issue 22 (hardening): integer/float safety in the C++ core and the one error boundary at the bindings.

Each audit finding is reproduced here: it now gets a typed error whose message names the argument, in
our words (no ``std::``, ``vector::``, pybind11 signature dump), or the right result, checked against a
truth (a shifted-frame measurement, a numpy reference, self-matches at distance 0).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visitcal import _core
from visitcal.calib.match_nearest import match_nearest
from visitcal.core.chebyshev import Box2I, ChebyshevBoundedField
from visitcal.core.image import MaskedImage
from visitcal.detection.convolve import MAX_HALF_WIDTH, gaussian_kernel_1d, gaussian_smooth
from visitcal.measurement.plugins.local_background import LocalBackgroundConfig, local_background
from visitcal.measurement.plugins.psf_flux import psf_flux

I32_MAX = 2**31 - 1
FOREIGN = ("std::", "vector::", "pybind11", "incompatible function arguments", "Invoked with", "bad_alloc")


def assert_ours(err: BaseException, *names: str) -> None:
    """The message names every one of `names` and holds no C++ / pybind11 text."""
    msg = str(err)
    for n in names:
        assert n in msg, (n, msg)
    for f in FOREIGN:
        assert f not in msg, (f, msg)


def gaussian_stamp(size, sigma=2.0):
    h = size // 2
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    m = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return m / m.sum()


def star_image(x0, y0, stamp, sx, sy, flux=5000.0, shape=(60, 80), seed=3):
    """An image at parent origin (x0, y0) with `flux` times `stamp` at parent (sx, sy), plus noise."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, 1.0, shape).astype(np.float32)
    n = stamp.shape[0]
    img[sy - y0:sy - y0 + n, sx - x0:sx - x0 + n] += (flux * stamp).astype(np.float32)
    return MaskedImage(img, variance=np.ones(shape, np.float32), xy0=(x0, y0))


# --- finding 1: psf_flux offsets near 2**31 -----------------------------------------------------------

def test_psf_flux_offset_beyond_int32_is_refused_not_wrapped():
    mi = MaskedImage(np.zeros((30, 30), np.float32), variance=np.ones((30, 30), np.float32))
    models = gaussian_stamp(21)[None]
    # 2**31 + 5 used to be wrapped by astype(int32) to -2**31 + 5
    for name, mx0, my0 in (("model_x0", [2**31 + 5], [0]), ("model_y0", [0], [-(2**31) - 1])):
        with pytest.raises(ValueError) as info:
            psf_flux(mi, models, np.array(mx0, np.int64), np.array(my0, np.int64))
        assert_ours(info.value, name, "int32")


def test_psf_flux_stamp_reaching_past_int32_is_flagged_off_the_image():
    # mx0 + width - 1 overflowed int in the C++ and the box wrapped (a segfault reading past the image);
    # the stamp's far edge is now computed in 64 bits: it lies off the image, flagged, nothing read.
    mi = MaskedImage(np.zeros((30, 30), np.float32), variance=np.ones((30, 30), np.float32))
    out = psf_flux(mi, gaussian_stamp(21)[None], np.array([I32_MAX - 5]), np.array([0]))
    assert out["base_PsfFlux_npixels"][0] == 0
    assert np.isnan(out["base_PsfFlux_instFlux"][0])
    assert out["base_PsfFlux_flag_noGoodPixels"][0] and out["base_PsfFlux_flag_edge"][0]


def test_psf_flux_core_with_wrapping_box_flags_instead_of_reading_past_the_image():
    # The C++ entry alone (no Python check): int32 offsets whose stamp end overflows int.
    img = np.zeros((30, 30), np.float32)
    mask = np.zeros((30, 30), np.int32)
    models = np.repeat(gaussian_stamp(21)[None], 2, axis=0)
    out = _core.measure_psf_flux(img, mask, np.ones((30, 30), np.float32), 0, 0, models,
                                 np.array([I32_MAX - 5, 0], np.int32), np.array([0, I32_MAX - 3], np.int32),
                                 _core.PsfFluxControl())
    assert out["npixels"].tolist() == [0.0, 0.0]
    assert np.isnan(out["instFlux"]).all()
    assert out["flags"].tolist() == [0b111, 0b111]  # flag, noGoodPixels, edge


@pytest.mark.parametrize("x0,y0", [(I32_MAX - 200, -(2**31)), (-(2**31) + 7, I32_MAX - 61)])
def test_psf_flux_large_valid_offsets_give_the_shifted_frame_flux(x0, y0):
    stamp = gaussian_stamp(21)
    ref = psf_flux(star_image(0, 0, stamp, 30, 20), stamp[None], [30], [20])
    far = psf_flux(star_image(x0, y0, stamp, x0 + 30, y0 + 20), stamp[None], np.array([x0 + 30], np.int64),
                   np.array([y0 + 20], np.int64))
    for k in ("base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr", "base_PsfFlux_chi2", "base_PsfFlux_npixels"):
        assert far[k][0] == ref[k][0], k
    assert ref["base_PsfFlux_instFlux"][0] == pytest.approx(5000.0, rel=0.01)
    assert not far["base_PsfFlux_flag"][0]
    # clipped at the image's far corner, as at the shifted frame's
    ref = psf_flux(star_image(0, 0, stamp, 30, 20), stamp[None], [70], [50])
    far = psf_flux(star_image(x0, y0, stamp, x0 + 30, y0 + 20), stamp[None], [x0 + 70], [y0 + 50])
    assert far["base_PsfFlux_npixels"][0] == ref["base_PsfFlux_npixels"][0] == 10 * 10
    assert far["base_PsfFlux_flag_edge"][0] and ref["base_PsfFlux_flag_edge"][0]
    assert far["base_PsfFlux_instFlux"][0] == ref["base_PsfFlux_instFlux"][0]


def test_image_origin_outside_int32_is_refused_by_name():
    # at construction (every kernel takes the origin as a C++ int) ...
    for xy0 in ((I32_MAX - 5, 0), (0, -(2**40)), (-(2**31) - 1, 0)):
        with pytest.raises(ValueError) as info:
            MaskedImage(np.zeros((10, 10), np.float32), xy0=xy0)
        assert_ours(info.value, "xy0", "int32")
    MaskedImage(np.zeros((10, 10), np.float32), xy0=(I32_MAX - 10, -(2**31)))  # the last pixel fits
    # ... and again where a plugin hands it to the C++, should xy0 have been changed since
    mi = MaskedImage(np.zeros((10, 10), np.float32))
    mi.xy0 = (I32_MAX - 5, 0)
    with pytest.raises(ValueError) as info:
        psf_flux(mi, gaussian_stamp(3)[None], [0], [0])
    assert_ours(info.value, "xy0", "int32")
    with pytest.raises(ValueError) as info:
        local_background(mi, [1.0], [1.0], [1.0])
    assert_ours(info.value, "xy0", "int32")


# --- finding 2: gaussian_smooth / gaussian_kernel_1d ----------------------------------------------------

@pytest.mark.parametrize("kwargs,names", [
    (dict(sigma=1e300), ("sigma", "1e+300", str(MAX_HALF_WIDTH))),
    (dict(sigma=float("inf")), ("sigma", "inf")),
    (dict(sigma=float("nan")), ("sigma", "nan")),
    (dict(sigma=-1.0), ("sigma",)),
    (dict(sigma=1.0, half_width=2**31), ("half_width", str(2**31), str(MAX_HALF_WIDTH))),
    (dict(sigma=1.0, half_width=-1), ("half_width", "-1")),
])
def test_gaussian_smooth_bad_sigma_or_half_width(kwargs, names):
    img = np.zeros((20, 20), np.float32)
    with pytest.raises(ValueError) as info:
        gaussian_smooth(img, **kwargs)
    assert_ours(info.value, *names)
    with pytest.raises(ValueError) as info:
        gaussian_kernel_1d(**kwargs)
    assert_ours(info.value, *names)


def test_gaussian_smooth_wrong_types_are_typed():
    img = np.zeros((20, 20), np.float32)
    with pytest.raises(TypeError) as info:
        gaussian_smooth(img, "2")
    assert_ours(info.value, "sigma")
    with pytest.raises(TypeError) as info:
        gaussian_smooth(img, 1.0, half_width=2.5)
    assert_ours(info.value, "half_width")


def test_gaussian_smooth_kernel_larger_than_image_names_the_limit():
    with pytest.raises(ValueError) as info:
        gaussian_smooth(np.zeros((20, 30), np.float32), 1.0, half_width=10)
    assert_ours(info.value, "half_width", "<= 9")


def test_gaussian_smooth_largest_kernel_that_fits():
    # half_width (n - 1) // 2: one valid output column, equal to the direct sum
    rng = np.random.default_rng(5)
    img = rng.normal(size=(21, 25))
    out = gaussian_smooth(img, 3.0, half_width=10)
    k = np.exp(-0.5 * (np.arange(-10, 11) / 3.0) ** 2)
    k /= k.sum()
    want = k @ img[:, 2:23] @ k  # the centre pixel (10, 12)
    assert out.border == (10, 10)
    assert out.image[10, 12] == pytest.approx(want, rel=1e-12)
    assert gaussian_kernel_1d(1.0, 0).tolist() == [1.0]
    # sigma so small that sigma**2 underflows: the delta it tends to (was NaN: 0 / 0 at the centre)
    assert gaussian_kernel_1d(5.9e-199).tolist() == [0.0, 1.0, 0.0]
    assert gaussian_kernel_1d(1e-170, 2).tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70)))
def test_gaussian_kernel_1d_never_leaks_a_foreign_error(value):
    for kwargs in (dict(sigma=value), dict(sigma=1.0, half_width=value)):
        try:
            k = gaussian_kernel_1d(**kwargs)
        except (ValueError, TypeError) as err:
            assert_ours(err, "sigma" if "half_width" not in kwargs else "half_width")
        else:
            assert k.size <= 2 * MAX_HALF_WIDTH + 1
            assert k.sum() == pytest.approx(1.0, rel=1e-12)


# --- finding 2: local_background with a huge psf_sigma ---------------------------------------------------

@pytest.mark.parametrize("psf_sigma", [1e300, 1e6, 1.7e308])
def test_local_background_huge_psf_sigma_is_flagged_without_allocating(psf_sigma):
    # The annulus lies entirely outside the image (every pixel is inside the inner radius): no pixel.
    # This reserved ~3e15 floats (std::bad_alloc) or threw "vector::reserve".
    mi = MaskedImage(np.ones((50, 50), np.float32), variance=np.ones((50, 50), np.float32))
    out = local_background(mi, [25.0], [25.0], [psf_sigma])
    assert np.isnan(out["base_LocalBackground_instFlux"][0])
    assert out["base_LocalBackground_flag"][0] and out["base_LocalBackground_flag_noGoodPixels"][0]
    assert not out["base_LocalBackground_flag_noPsf"][0]


def test_local_background_huge_annulus_covering_the_image_gives_the_clipped_mean():
    # annulus_inner = 0: every pixel but the centre one, whatever psf_sigma; numpy's MEANCLIP as truth.
    rng = np.random.default_rng(8)
    img = rng.normal(10.0, 2.0, (40, 50)).astype(np.float32)
    mi = MaskedImage(img, variance=np.ones((40, 50), np.float32))
    cfg = LocalBackgroundConfig(annulus_inner=0.0, annulus_outer=15.0)
    for psf_sigma in (1e6, 1e300):
        out = local_background(mi, [20.0], [15.0], [psf_sigma], cfg)
        sel = np.ones(img.shape, bool)
        sel[15, 20] = False
        v = img[sel].astype(np.float64)
        q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
        centre, hw = med, 3.0 * 0.7413011092528009 * (q3 - q1)
        for _ in range(3):
            w = v[np.abs(v - centre) <= hw]
            centre, sd = w.mean(), w.std(ddof=1)
            hw = 3.0 * sd
        assert out["base_LocalBackground_instFlux"][0] == pytest.approx(centre, rel=1e-9)
        assert out["base_LocalBackground_instFluxErr"][0] == pytest.approx(sd, rel=1e-9)
        assert not out["base_LocalBackground_flag"][0]


# --- finding 2: the matcher with +-1e308 extents ----------------------------------------------------------

def test_match_nearest_with_extents_that_overflow():
    # xmax - xmin = inf: w / cell was NaN, cast to long (undefined), then a huge vector or an endless loop.
    x = np.array([-1e308, 1e308, 0.0, 5.0, 7.0, 9.0, 11.0])
    y = np.array([0.0, 1.0, 2.0, -1e308, 1e308, 3.0, 4.0])
    m = match_nearest(x, y, x, y, 1.0)
    assert m.index.tolist() == list(range(7))
    assert m.distance.tolist() == [0.0] * 7
    m = match_nearest(x + 0.5, y, x, y, 1.0)
    # +-1e308 + 0.5 == +-1e308 in double: those two match exactly, the rest at 0.5
    assert m.index.tolist() == list(range(7))
    assert m.distance.tolist() == [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5]


def test_offset_histogram_and_pattern_matcher_with_extents_that_overflow():
    x = np.array([-1e308, 1e308, 0.0, 5.0, 7.0, 9.0, 11.0])
    y = np.array([0.0, 1.0, 2.0, -1e308, 1e308, 3.0, 4.0])
    counts, n_pairs = _core.offset_histogram(x, y, x, y, 10.0, 1.0)
    # pairs within 10 px: each point with itself (7) and the 4 finite-neighbourhood points among
    # (0,2), (9,3), (11,4): |(9,3)-(0,2)| = 9.06, |(11,4)-(0,2)| = 11.2, |(11,4)-(9,3)| = 2.24
    assert n_pairs == 7 + 2 * 2
    assert counts[10, 10] == 7 and counts.sum() == n_pairs
    out = _core.match_pessimistic_b(x, y, np.ones(7), x, y, _core.MatcherControl())
    assert out["ok"] is False and "no pattern match verified" in out["reason"]


# --- finding 2: "out must be contiguous" for an empty axis ----------------------------------------------

def test_chebyshev_grid_with_an_empty_or_single_column_axis():
    f = ChebyshevBoundedField(Box2I(0, 0, 9, 9), np.array([[1.0, 2.0], [0.5, 0.0]]))
    assert f.evaluate_grid(np.empty(0), np.arange(3.0)).shape == (3, 0)
    assert f.evaluate_grid(np.arange(3.0), np.empty(0)).shape == (0, 3)
    assert f.evaluate_grid(np.empty(0), np.empty(0), dtype=np.float32).shape == (0, 0)
    # a one-column view with a non-unit stride along x
    out = np.zeros((3, 4))[:, ::2][:, :1]
    got = f.evaluate_grid(np.array([4.0]), np.arange(3.0), out=out)
    assert got is out
    np.testing.assert_allclose(out[:, 0], f.evaluate(np.full(3, 4.0), np.arange(3.0)), rtol=1e-15)
    with pytest.raises(ValueError, match="contiguous along x"):
        f.evaluate_grid(np.arange(2.0), np.arange(3.0), out=np.zeros((3, 4))[:, ::2])


# --- finding 3: the one error boundary --------------------------------------------------------------------

@pytest.mark.parametrize("kind,what,exc", [
    ("bad_alloc", "", MemoryError),
    ("length_error", "vector::reserve", ValueError),
    ("length_error", "cannot create std::vector larger than max_size()", ValueError),
    ("out_of_range", "vector::_M_range_check: __n (which is 9) >= this->size() (which is 3)", ValueError),
    ("overflow_error", "std::overflow_error", ValueError),
    ("invalid_argument", "basic_string::_M_create", ValueError),
])
def test_standard_library_exceptions_become_typed_errors_in_our_words(kind, what, exc):
    with pytest.raises(exc) as info:
        _core._throw_std_for_test(kind, what)
    assert type(info.value) is exc
    assert_ours(info.value, "visitcal")


@pytest.mark.parametrize("kind", ["length_error", "out_of_range", "overflow_error", "invalid_argument", "domain_error"])
def test_our_own_messages_pass_the_boundary_unchanged(kind):
    with pytest.raises(ValueError, match=r"^bin column 3: needs 2 points$"):
        _core._throw_std_for_test(kind, "bin column 3: needs 2 points")


# --- the audit of float -> int casts in cpp/src ------------------------------------------------------------

def noisy_image(seed=1, shape=(40, 50)):
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, 1.0, shape).astype(np.float32)
    var = (1.0 + rng.uniform(0.0, 1.0, shape)).astype(np.float32)
    return img, np.zeros(shape, np.int32), var


def test_huge_aperture_radius_is_flagged_and_the_others_unchanged():
    img, mask, var = noisy_image()
    one = _core.measure_circular_apertures(img, mask, var, 0, 0, np.array([20.0]), np.array([20.0]), [3.0])
    two = _core.measure_circular_apertures(img, mask, var, 0, 0, np.array([20.0]), np.array([20.0]), [3.0, 1e300])
    assert two["instFlux"][0, 0] == one["instFlux"][0, 0] and two["flags"][0, 0] == 0
    assert np.isnan(two["instFlux"][0, 1]) and two["flags"][0, 1] == 0b11  # flag, apertureTruncated


def test_variance_with_an_extremely_elongated_moment_is_the_row_median():
    # xx = 1e200: a half width of 1e100 px (its int cast was undefined); yy = 1e-200: one row
    img, mask, var = noisy_image()
    out = _core.measure_variance(img, mask, var, 0, 0, np.array([20.0]), np.array([20.0]), np.array([1e200]),
                                 np.array([1e-200]), np.array([0.0]), _core.VarianceControl())
    assert out["flags"][0] == 0
    assert out["value"][0] == np.median(var[20].astype(np.float64))


def test_compensated_tophat_with_a_huge_annulus_is_out_of_bounds():
    from visitcal.measurement.plugins.compensated_tophat import CompensatedTophatConfig, compensated_tophat_flux
    img, mask, var = noisy_image()
    mi = MaskedImage(img, mask, var)
    with pytest.raises(ValueError, match="outer_scale"):  # the config refuses it (bounded, issue 22)
        CompensatedTophatConfig(apertures=(3,), outer_scale=1e300)
    # and the C++ stays safe when a config bypasses validation (model_construct)
    cfg = CompensatedTophatConfig.model_construct(**{**CompensatedTophatConfig().model_dump(), "apertures": (3,),
                                                     "outer_scale": 1e300})
    out = compensated_tophat_flux(mi, [20.0], [20.0], cfg)
    p = "base_CompensatedTophatFlux_3"
    assert out[f"{p}_flag"][0] and np.isnan(out[f"{p}_instFlux"][0])
    assert out[f"{p}_mask_bits"][0] == 0
    with pytest.raises(ValueError) as info:
        compensated_tophat_flux(mi, [20.0], [20.0], CompensatedTophatConfig(apertures=(2**31,)))
    assert_ours(info.value, "apertures", str(2**31))


def test_windowed_centroid_with_a_huge_window_is_bad_input():
    from visitcal.measurement.plugins.windowed_centroid import windowed_centroid
    img, mask, var = noisy_image()
    out = windowed_centroid(MaskedImage(img, mask, var), [20.0, 20.0], [20.0, 20.0], [1e300, 2.0])
    assert out["ext_windowedCentroid_flag_badInput"].tolist() == [True, False]
    assert np.isnan(out["ext_windowedCentroid_x"][0]) and np.isfinite(out["ext_windowedCentroid_x"][1])


def test_sphere_link_lengths_are_checked_by_name_and_tiny_ones_work():
    from visitcal.tasks.isolated_star_association import count_neighbours, fof_groups, match_nearest_sphere
    for bad in (float("nan"), float("inf"), 0.0, -1.0, 1e300):
        with pytest.raises(ValueError) as info:
            fof_groups([10.0, 10.0], [0.0, 0.0], bad)
        assert_ours(info.value, "link_arcsec")
        with pytest.raises(ValueError) as info:
            match_nearest_sphere([10.0], [0.0], [10.0], [0.0], bad)
        assert_ours(info.value, "radius_arcsec")
        with pytest.raises(ValueError) as info:
            count_neighbours([10.0], [0.0], bad)
        assert_ours(info.value, "radius_arcsec")
    # 1e-300 arcsec: 1 / chord ~ 1e305 cells was cast to long (undefined); identical points still link
    labels, n = fof_groups([10.0, 10.0, 10.0001], [0.0, 0.0, 0.0], 1e-300)
    assert labels.tolist() == [0, 0, 1] and n == 2


def test_footprint_dilation_is_bounded_by_name_and_huge_growth_is_exact():
    from visitcal.core.footprint import Footprint, FootprintSet
    mask = np.zeros((20, 30), bool)
    mask[5:8, 10:14] = True
    fp = Footprint.from_mask(mask)
    for radius in (2**20 + 1, 2**31, 2**40):  # 2**31 was a pybind11 signature dump
        with pytest.raises(ValueError) as info:
            fp.dilated(radius)
        assert_ours(info.value, "radius", str(2**20))
    # near the int32 edge the grown spans would wrap: refused in our words
    far = Footprint.from_mask(np.ones((1, 1), bool), xy0=(I32_MAX - 3, 0))
    with pytest.raises(ValueError) as info:
        far.dilated(10)
    assert_ours(info.value, "radius", "int32")
    assert far.dilated(2).area == 13  # the disc of radius 2 still fits
    # growing a set by more than its box's width + height covers the box, as any such radius does
    fs = FootprintSet.from_footprints([fp], Box2I(0, 0, 29, 19))
    for radius in (50, 2**31, 10**12):
        g = fs.grown(radius)
        assert len(g) == 1 and g[0].area == 20 * 30


def test_psf_moments_xy0_outside_int32_is_refused_by_name():
    from visitcal.measurement.plugins.sdss_shape import psf_moments
    stamp = gaussian_stamp(15, 2.0)
    ref = psf_moments(stamp)
    assert ref["xx"] == pytest.approx(4.0, rel=1e-3) and not ref["flag"]
    with pytest.raises(ValueError) as info:
        psf_moments(stamp, xy0=(2**31, 0))
    assert_ours(info.value, "xy0", "int32")
    far = psf_moments(stamp, xy0=(I32_MAX - 20, -(2**31)))  # the same stamp, far away: same moments
    assert far["xx"] == ref["xx"] and far["yy"] == ref["yy"] and far["x"] - ref["x"] == I32_MAX - 20 + 7


def test_psf_position_beyond_the_int32_box_is_refused():
    from visitcal.psf.models import GaussianPsf
    psf = GaussianPsf(2.0, size=15)
    near = psf.compute_image(2**30 + 0.25, -(2**30) - 0.25)
    np.testing.assert_allclose(near, psf.compute_image(0.25, -0.25), rtol=0, atol=1e-15)
    for xy in ((1e300, 0.0), (0.0, -(2.0**31)), (float("nan"), 0.0)):
        with pytest.raises(ValueError) as info:
            psf.compute_image(*xy)
        assert_ours(info.value, "PSF position")
