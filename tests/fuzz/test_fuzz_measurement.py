"""Fuzz: the measurement plugins (visitcal.measurement.plugins.*) and psf_moments.

Each plugin gets fuzzed masked images (any shape from 0 x 0, dtypes and layouts, NaN / inf / 1e308
pixels and variances, random mask bits, an origin near 2**31) and fuzzed source lists (NaN / inf /
1e308 positions, empty, mismatched lengths): a typed exception or, when the inputs are valid, one
row per source. Then each plugin against its truth on a clean image with fuzzed geometry:
aperture flux of a constant image = c pi r^2; PSF flux = sum(m d) / sum(m^2) (numpy); a symmetric
Gaussian's SdssCentroid, windowed centroid and SdssShape centre at its analytic centre and its
SdssShape / psf_moments moments = sigma^2; GaussianFlux = its flux; local background of a constant
image = the constant; Variance of a constant variance plane = that variance; compensated top-hat of
a constant image = 0; pixel flags: none on a clean mask inside the image, offimage outside.

psf_flux with stamp offsets near 2**31 (a known crash, being fixed) runs in a subprocess, which must
end with a Python outcome rather than a signal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from visitcal.core.footprint import Footprint
from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins import aperture_flux as apf
from visitcal.measurement.plugins import compensated_tophat as ctf
from visitcal.measurement.plugins import gaussian_flux as gfl
from visitcal.measurement.plugins import local_background as lbg
from visitcal.measurement.plugins import pixel_flags as pfl
from visitcal.measurement.plugins import psf_flux as psf
from visitcal.measurement.plugins import sdss_centroid as sdc
from visitcal.measurement.plugins import sdss_shape as sds
from visitcal.measurement.plugins import variance as var
from visitcal.measurement.plugins import windowed_centroid as wce

from ._fuzz import (any_float, arrays1d, arrays2d, call, float_values, fuzz, gaussian_image, layout,
                    outcome_in_subprocess)

#: Image origins inside int32, near its ends too (beyond it: test_origin_beyond_int32).
XY0 = st.one_of(st.tuples(st.integers(-50, 50), st.integers(-50, 50)),
                st.tuples(st.sampled_from([2**31 - 40, -2**31, 10]), st.sampled_from([2**31 - 41, -2**31 + 5, 0])))
MASK_BITS = st.sampled_from([0, 0, 1, 1 << 2, 1 << 5, (1 << 12) - 1, -1])


@st.composite
def masked_images(draw, max_side=40):
    image = draw(arrays2d(max_side=max_side))
    shape = image.shape
    v = draw(st.sampled_from(["none", "ones", "abs", "fuzz"]))
    variance = None if v == "none" else (np.ones(shape) if v == "ones" else
                                         np.abs(image.astype(np.float64)) if v == "abs" else
                                         draw(arrays2d(shape=shape)))
    mask = None
    if draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        bits = draw(MASK_BITS)
        mask = np.where(rng.random(shape) < 0.2, bits, 0).astype(np.int32)
    xy0 = draw(XY0)
    r = call(MaskedImage, image, mask=mask, variance=variance, xy0=xy0)
    assume(r.ok)
    return r.value


@st.composite
def positions(draw, mi):
    """(x, y) source positions in the parent frame: mostly on the image, some anywhere."""
    n = draw(st.integers(0, 6))
    x0, y0 = mi.xy0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = x0 + rng.uniform(-3, mi.width + 3, n)
    y = y0 + rng.uniform(-3, mi.height + 3, n)
    for a in (x, y):
        if n and draw(st.booleans()):
            a[draw(st.integers(0, n - 1))] = draw(any_float)
    if draw(st.integers(0, 9)) == 0:  # mismatched lengths
        y = np.append(y, 1.0)
    return x, y


def _rows(out: dict, n: int) -> None:
    for name, col in out.items():
        assert np.shape(col)[0] == n, f"{name}: {np.shape(col)} rows for {n} sources"


def _scalar_or_vector(draw, n):
    if draw(st.booleans()):
        return draw(st.one_of(st.floats(0.5, 4.0), any_float))
    return draw(arrays1d(n, dtypes=("<f8", ">f4", "<i4"), scale=3.0))


def _call_plugin(name, mi, x, y, data):
    n = len(x)
    if name == "aperture":
        radii = data.draw(st.one_of(st.just((3.0, 5.0)), st.lists(st.floats(0.1, 30.0), min_size=1, max_size=4)))
        return call(apf.circular_aperture_flux, mi, x, y, apf.ApertureFluxConfig(radii=tuple(radii)))
    if name == "gaussian_flux":
        s = [_scalar_or_vector(data.draw, n) for _ in range(3)]
        return call(gfl.gaussian_flux, mi, x, y, *s)
    if name == "local_background":
        return call(lbg.local_background, mi, x, y, _scalar_or_vector(data.draw, n))
    if name == "variance":
        s = [_scalar_or_vector(data.draw, n) for _ in range(3)]
        return call(var.variance, mi, x, y, *s)
    if name == "compensated_tophat":
        a = data.draw(st.sampled_from([(12,), (1,), (3, 40)]))
        return call(ctf.compensated_tophat_flux, mi, x, y, ctf.CompensatedTophatConfig(apertures=a))
    if name == "pixel_flags":
        fps = []
        for k in range(n):
            xi = int(np.clip(np.nan_to_num(x[k]), -2**30, 2**30))
            yi = int(np.clip(np.nan_to_num(y[k]), -2**30, 2**30))
            fps.append(Footprint([[yi, xi - 2, xi + 2]]))
        if n and data.draw(st.booleans()):
            fps = fps[:-1]  # one footprint short
        return call(pfl.pixel_flags, mi, x, y, fps)
    if name == "sdss_centroid":
        return call(sdc.sdss_centroid, mi, x, y, _scalar_or_vector(data.draw, n))
    if name == "sdss_shape":
        return call(sds.sdss_shape, mi, x, y)
    if name == "windowed_centroid":  # sigma from 1e3 up: test_windowed_centroid_huge_sigma
        sig = data.draw(st.one_of(st.floats(0.5, 4.0), st.sampled_from(WINDOW_SIGMAS),
                                  arrays1d(n, dtypes=("<f8", ">f4"), scale=3.0, specials=False)))
        return call(wce.windowed_centroid, mi, x, y, sig)
    if name == "psf_flux":  # stamp offsets near 2**31: test_psf_flux_offsets_near_2_31 (subprocess)
        size = data.draw(st.sampled_from([0, 1, 5, 7]))
        models = data.draw(arrays2d(shape=(n * size, size), dtypes=("<f8", "<f4", ">f8")))
        models = models.reshape(n, size, size) if size else np.zeros((n, 0, 0))
        ox = np.asarray(np.nan_to_num(x, nan=0, posinf=0, neginf=0).clip(-2**20, 2**20), np.int64) - size // 2
        oy = np.asarray(np.nan_to_num(y[:n], nan=0, posinf=0, neginf=0).clip(-2**20, 2**20), np.int64) - size // 2
        return call(psf.psf_flux, mi, models, ox, oy)
    raise AssertionError(name)


#: Window sigmas of the in-process fuzzing: ordinary, non-finite and beyond any image (1e6 px makes the
#: C++ loop over the unclipped window, ~(8 sigma)^2 pixels: test_windowed_centroid_huge_sigma).
WINDOW_SIGMAS = (np.nan, np.inf, -np.inf, 0.0, -1.0, 5e-324, 1e300, 1e308, 3.4e38, 2.0**63)

PLUGINS = ["aperture", "gaussian_flux", "local_background", "variance", "compensated_tophat", "pixel_flags",
           "sdss_centroid", "sdss_shape", "windowed_centroid", "psf_flux"]


def _robustness(name, mi, xy, data):
    x, y = xy
    r = _call_plugin(name, mi, x, y, data)
    if r.ok:
        _rows(r.value, len(x))
    elif len(x) == len(y) and name not in ("pixel_flags",):
        pass  # a typed error is accepted (call() checked its type and message)


@fuzz(25)
@given(data=st.data())
def test_aperture_flux_robust(data):
    mi = data.draw(masked_images())
    _robustness("aperture", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(data=st.data())
def test_gaussian_flux_robust(data):
    mi = data.draw(masked_images())
    _robustness("gaussian_flux", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(data=st.data())
def test_local_background_robust(data):
    mi = data.draw(masked_images())
    _robustness("local_background", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(data=st.data())
def test_variance_robust(data):
    mi = data.draw(masked_images())
    _robustness("variance", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(data=st.data())
def test_compensated_tophat_robust(data):
    mi = data.draw(masked_images())
    _robustness("compensated_tophat", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(data=st.data())
def test_pixel_flags_robust(data):
    mi = data.draw(masked_images())
    _robustness("pixel_flags", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(data=st.data())
def test_sdss_centroid_robust(data):
    mi = data.draw(masked_images())
    _robustness("sdss_centroid", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(data=st.data())
def test_sdss_shape_robust(data):
    mi = data.draw(masked_images())
    _robustness("sdss_shape", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(data=st.data())
def test_windowed_centroid_robust(data):
    mi = data.draw(masked_images())
    _robustness("windowed_centroid", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(data=st.data())
def test_psf_flux_robust(data):
    mi = data.draw(masked_images())
    _robustness("psf_flux", mi, data.draw(positions(mi)), data)


@fuzz(25)
@given(image=arrays2d(max_side=32), xy0=st.one_of(st.none(), st.tuples(st.integers(-5, 5), st.integers(-5, 5)),
                                                   st.just((2**31 - 5, -2**31))),
       x=st.one_of(st.none(), any_float), y=st.one_of(st.none(), any_float))
def test_psf_moments_robust(image, xy0, x, y):
    r = call(sds.psf_moments, image, xy0=xy0, x=x, y=y)
    if r.ok:
        assert set(r.value) >= {"xx", "yy", "xy", "x", "y", "flag"}


# ------------------------------------------------------------------------------------------------
# truths on clean images with fuzzed geometry


@st.composite
def gaussian_scene(draw, margin_sigmas=6.0):
    sigma = draw(st.floats(1.2, 3.0))
    m = int(math.ceil(margin_sigmas * sigma)) + 2
    ny, nx = draw(st.integers(2 * m + 1, 2 * m + 12)), draw(st.integers(2 * m + 1, 2 * m + 12))
    xc = draw(st.floats(m, nx - 1 - m))
    yc = draw(st.floats(m, ny - 1 - m))
    flux = draw(st.floats(10.0, 1e6))
    x0, y0 = draw(st.integers(-1000, 1000)), draw(st.integers(-1000, 1000))
    dtype = draw(st.sampled_from(["<f4", "<f8", ">f8"]))
    lay = draw(st.sampled_from(["C", "F", "strided", "reversed", "readonly"]))
    return sigma, (ny, nx), xc, yc, flux, (x0, y0), dtype, lay


def _result(r, mi):
    """The value of ``r``; None when the plugin refused a layout it does not take (x not contiguous):
    a typed ValueError saying so is an accepted outcome, not a wrong result."""
    if r.ok:
        return r.value
    planes = (mi.image, mi.mask.array, mi.variance)
    assert isinstance(r.error, ValueError) and "contiguous" in str(r.error), r.error
    assert any(p.strides[1] != p.itemsize for p in planes), f"{r.error} for x-contiguous planes"
    return None


def _mi(image, dtype, lay, xy0, variance=None):
    img = layout(image.astype(dtype), lay)
    v = np.ones(image.shape) if variance is None else variance
    return MaskedImage(img, variance=layout(v.astype(dtype), lay), xy0=xy0)


@fuzz(30)
@given(scene=gaussian_scene())
def test_centroids_and_shape_of_a_symmetric_gaussian(scene):
    sigma, shape, xc, yc, flux, (x0, y0), dtype, lay = scene
    img = gaussian_image(shape, xc, yc, sigma, flux)
    mi = _mi(img, dtype, lay, (x0, y0))
    X, Y = x0 + xc, y0 + yc
    px, py = np.floor(X + 0.5), np.floor(Y + 0.5)
    o = _result(call(sdc.sdss_centroid, mi, [px], [py], sigma), mi)
    if o is not None:
        assert o["base_SdssCentroid_x"][0] == pytest_approx(X, 2e-3)
        assert o["base_SdssCentroid_y"][0] == pytest_approx(Y, 2e-3)
    o = _result(call(wce.windowed_centroid, mi, [px], [py], sigma), mi)
    if o is not None:
        assert o["ext_windowedCentroid_x"][0] == pytest_approx(X, 1e-3)
        assert o["ext_windowedCentroid_y"][0] == pytest_approx(Y, 1e-3)
    o = _result(call(sds.sdss_shape, mi, [X], [Y]), mi)
    if o is not None:
        assert o["base_SdssShape_x"][0] == pytest_approx(X, 1e-3)
        assert o["base_SdssShape_y"][0] == pytest_approx(Y, 1e-3)
        assert o["base_SdssShape_xx"][0] == pytest_approx(sigma**2, 2e-3 * sigma**2)
        assert o["base_SdssShape_yy"][0] == pytest_approx(sigma**2, 2e-3 * sigma**2)
        assert abs(o["base_SdssShape_xy"][0]) < 2e-3 * sigma**2
    o = _result(call(gfl.gaussian_flux, mi, [X], [Y], sigma**2, sigma**2, 0.0), mi)
    if o is not None:
        assert o["base_GaussianFlux_instFlux"][0] == pytest_approx(flux, 2e-3 * flux)
    stamp = layout_of(img, dtype, lay)
    r = call(sds.psf_moments, stamp, xy0=(0, 0), x=xc, y=yc)
    assert r.ok, r.error
    assert r.value["xx"] == pytest_approx(sigma**2, 2e-3 * sigma**2)
    assert r.value["yy"] == pytest_approx(sigma**2, 2e-3 * sigma**2)
    assert r.value["x"] == pytest_approx(xc, 1e-3) and r.value["y"] == pytest_approx(yc, 1e-3)


def layout_of(img, dtype, lay):
    return layout(img.astype(dtype), lay)


def pytest_approx(v, abs_tol):
    return pytest.approx(v, abs=abs_tol, rel=0)


@fuzz(30)
@given(c=st.floats(-1e4, 1e4), v=st.floats(1e-3, 1e4), r=st.floats(0.5, 12.0), side=st.integers(0, 20),
       dx=st.floats(-0.5, 0.5), dy=st.floats(-0.5, 0.5), dtype=st.sampled_from(["<f4", "<f8", ">f4"]),
       lay=st.sampled_from(["C", "F", "strided", "reversed"]), xy0=st.tuples(st.integers(-99, 99), st.integers(-99, 99)))
def test_constant_image_truths(c, v, r, side, dx, dy, dtype, lay, xy0):
    """Aperture flux c pi r^2 (error^2 = v pi r^2), local background c, Variance v, compensated top-hat 0,
    no pixel flag inside a clean image and offimage outside."""
    sigma = max(r / 4.0, 1.0)  # local background annulus 7-15 sigma: up to 45 px
    n = int(math.ceil(15 * sigma)) + side + 3
    shape = (2 * n + 1, 2 * n + 3)
    c32 = float(np.float32(c))  # MaskedImage keeps float32
    mi = _mi(np.full(shape, c), dtype, lay, xy0, np.full(shape, v))
    X, Y = xy0[0] + n + 1 + dx, xy0[1] + n + dy
    o = _result(call(apf.circular_aperture_flux, mi, [X], [Y], apf.ApertureFluxConfig(radii=(r,))), mi)
    p = apf.aperture_prefix(r)
    if o is not None:
        assert o[f"{p}_instFlux"][0] == pytest_approx(c32 * math.pi * r * r, 1e-9 * abs(c32) * r * r + 1e-9)
        assert not o[f"{p}_flag"][0]
    o = _result(call(lbg.local_background, mi, [X], [Y], sigma), mi)
    if o is not None:
        assert o["base_LocalBackground_instFlux"][0] == pytest_approx(c32, 1e-6 * abs(c32) + 1e-12)
    o = _result(call(var.variance, mi, [X], [Y], sigma**2, sigma**2, 0.0), mi)
    if o is not None:
        assert o["base_Variance_value"][0] == pytest_approx(float(np.float32(v)), 1e-6 * v)
    a = max(1, int(r))
    if 1.7 * a + 2 < n:
        o = _result(call(ctf.compensated_tophat_flux, mi, [X], [Y], ctf.CompensatedTophatConfig(apertures=(a,))), mi)
        if o is not None:
            assert abs(o[f"base_CompensatedTophatFlux_{a}_instFlux"][0]) <= 1e-6 * abs(c32) * a * a * 10
    fp = Footprint([[int(Y), int(X) - 1, int(X) + 1]])
    o = _result(call(pfl.pixel_flags, mi, [X, xy0[0] - 50.0], [Y, Y], [fp, fp]), mi)
    if o is not None:
        assert not any(col[0] for col in o.values()), {k: v for k, v in o.items() if v[0]}
        assert o["base_PixelFlags_flag_offimage"][1]


@fuzz(30)
@given(data=st.data(), size=st.sampled_from([1, 3, 7, 11]), n=st.integers(1, 4),
       dtype=st.sampled_from(["<f4", "<f8", ">f8", "<f2"]), lay=st.sampled_from(["C", "F", "strided", "reversed"]),
       xy0=st.tuples(st.integers(-99, 99), st.integers(-99, 99)))
def test_psf_flux_against_numpy(data, size, n, dtype, lay, xy0):
    shape = (size + data.draw(st.integers(0, 10)), size + data.draw(st.integers(0, 10)))
    img = data.draw(float_values(shape, specials=False))
    mi = _mi(img, dtype, lay, xy0)
    d = mi.image.astype(np.float64)
    models = np.stack([data.draw(float_values((size, size), scale=1.0, specials=False)) for _ in range(n)])
    models += 0.01  # never all zero
    ox = np.array([data.draw(st.integers(0, shape[1] - size)) for _ in range(n)])
    oy = np.array([data.draw(st.integers(0, shape[0] - size)) for _ in range(n)])
    o = _result(call(psf.psf_flux, mi, models, ox + xy0[0], oy + xy0[1]), mi)
    if o is None:
        return
    for k in range(n):
        m = models[k]
        sub = d[oy[k]:oy[k] + size, ox[k]:ox[k] + size]
        want = float((m * sub).sum() / (m * m).sum())
        scale = float(np.abs(m * sub).sum() / (m * m).sum()) + 1e-300
        assert abs(o["base_PsfFlux_instFlux"][k] - want) <= 1e-9 * scale
        assert o["base_PsfFlux_npixels"][k] == size * size


@pytest.mark.parametrize("name", PLUGINS)
@fuzz(3)
@given(data=st.data(), xy0=st.sampled_from([(2**31, 0), (0, -2**31 - 1), (2**40, 2**40)]))
def test_origin_beyond_int32(name, data, xy0):
    """An image origin (xy0) beyond int32: the image is refused with a typed error naming xy0 (the C++
    indexes pixels with int32), or, were it accepted, the plugins must refuse it with a typed error that
    does not dump the binding's signature (or measure)."""
    made = call(MaskedImage, np.ones((8, 8), np.float32), variance=np.ones((8, 8), np.float32), xy0=xy0)
    if not made.ok:
        assert isinstance(made.error, ValueError) and "xy0" in str(made.error)
        return
    mi = made.value
    x, y = np.array([xy0[0] + 3.0]), np.array([xy0[1] + 2.0])
    r = _call_plugin(name, mi, x, y, data)
    if r.ok:
        _rows(r.value, 1)


@pytest.mark.parametrize("sigma", [1e6, 2.0**31])
def test_windowed_centroid_huge_sigma(sigma):
    """A window far larger than the image (sigma = 1e6 px and up) on a 40 x 40 image: a result
    (flagged or not) or a typed error, in a child interpreter given 30 s (a hang guard, not a timing:
    the call takes milliseconds on ordinary input; a loop over the unclipped window takes days)."""
    outcome_in_subprocess("""
        from visitcal.core.image import MaskedImage
        from visitcal.measurement.plugins.windowed_centroid import windowed_centroid
        mi = MaskedImage(np.ones((40, 40), np.float32))
    """, f"windowed_centroid, mi, [20.0], [20.0], {sigma!r}", timeout=30.0)


@fuzz(6)
@given(ox=st.sampled_from([2**31 - 3, 2**31 - 1, -2**31, 2**31 - 100, 2**31, 2**32 + 2]),
       oy=st.sampled_from([0, 2**31 - 3, -2**31 + 1]),
       xy0=st.sampled_from([(0, 0), (2**31 - 10, 0), (-2**31, -2**31)]))
def test_psf_flux_offsets_near_2_31(ox, oy, xy0):
    """Stamp offsets (and image origins) near 2**31, in a subprocess: must end with a Python outcome
    (a typed error or a result, checked as everywhere else), never a signal."""
    outcome_in_subprocess(f"""
        from visitcal.core.image import MaskedImage
        from visitcal.measurement.plugins.psf_flux import psf_flux
        def measure():  # the image itself may be refused (xy0 beyond int32): a typed outcome too
            mi = MaskedImage(np.ones((20, 20), np.float32), variance=np.ones((20, 20), np.float32), xy0={xy0!r})
            m = np.full((1, 5, 5), 0.04)
            return psf_flux(mi, m, np.array([{ox}], np.int64), np.array([{oy}], np.int64))
    """, "measure")
