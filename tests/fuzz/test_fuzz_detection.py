"""Fuzz: detection, background, cosmic rays, sky objects, noise replacement and deblending
(visitcal.detection.*, visitcal.measurement.deblend, tasks.finalize_characterization.footprints_from_detected).

Each takes fuzzed masked images (any shape, dtype and layout, NaN / inf / 1e308 pixels, random mask
bits, origins near the ends of int32) and fuzzed parameters: a typed exception or a result. Truths:
one bright Gaussian on a flat, noiseless-variance image is one footprint holding its peak pixel; the
background of a constant image is that constant; a constant image has no cosmic ray; noise
statistics of a constant are (c, 0); sky objects avoid the masked pixels; a NoiseReplacer restores
the image bit for bit when it ends.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from visitcal.core.footprint import Footprint, FootprintSet
from visitcal.core.image import Exposure, MaskedImage
from visitcal.detection.background import BackgroundConfig, make_background
from visitcal.detection.cosmic_rays import FindCosmicRaysConfig, cond3_thresholds, cosmic_ray_candidates, find_cosmic_rays
from visitcal.detection.detection import SourceDetectionConfig, detect_footprints
from visitcal.detection.noise_replacer import NoiseReplacer, noise_statistics
from visitcal.detection.sky_sources import SkyObjectsConfig, generate_sky_objects
from visitcal.measurement.deblend import deblend_sigma1

from ._fuzz import any_float, any_int, arrays2d, call, fuzz, gaussian_image, special_floats

XY0 = st.one_of(st.tuples(st.integers(-50, 50), st.integers(-50, 50)),
                st.tuples(st.sampled_from([2**31 - 70, -2**31]), st.sampled_from([2**31 - 70, -2**31 + 5])))
MASK_BITS = st.sampled_from([0, 1, 1 << 5, 1 << 8, (1 << 12) - 1, -1])


@st.composite
def masked_images(draw, max_side=40, min_side=0):
    image = draw(arrays2d(min_side=min_side, max_side=max_side))
    shape = image.shape
    v = draw(st.sampled_from(["ones", "abs", "fuzz"]))
    variance = (np.ones(shape) if v == "ones" else np.abs(image.astype(np.float64)) if v == "abs" else
                draw(arrays2d(shape=shape)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = np.where(rng.random(shape) < 0.1, draw(MASK_BITS), 0).astype(np.int32)
    r = call(MaskedImage, image, mask=mask, variance=variance, xy0=draw(XY0))
    assume(r.ok)
    return r.value


@fuzz(40)
@given(mi=masked_images(min_side=4), sigma=st.one_of(st.floats(0.5, 3.0), st.floats(0.5, 3.0), special_floats),
       data=st.data())
def test_detect_footprints(mi, sigma, data):
    cfg = SourceDetectionConfig(threshold_value=data.draw(st.sampled_from([5.0, 1.0, 1e-30, 1e30])),
                                threshold_type=data.draw(st.sampled_from(["stdev", "value", "pixel_stdev"])),
                                threshold_polarity=data.draw(st.sampled_from(["positive", "negative", "both"])))
    r = call(detect_footprints, mi, sigma, cfg)
    if r.ok:
        for fs in r.value:
            assert fs is None or all(f.area >= 1 for f in fs)


@fuzz(20)
@given(sigma=st.floats(1.0, 2.5), side=st.integers(25, 48), dx=st.floats(-3, 3), dy=st.floats(-3, 3),
       xy0=st.tuples(st.integers(-99, 99), st.integers(-99, 99)), dtype=st.sampled_from(["<f4", ">f8", "<i4"]))
def test_detect_one_star(sigma, side, dx, dy, xy0, dtype):
    """A star of S/N ~ 1000 on a zero image with unit variance: one footprint, which holds its peak."""
    xc, yc = side / 2 + dx, side / 2 + dy
    img = gaussian_image((side, side), xc, yc, sigma, 2e4)
    mi = MaskedImage(img.astype(dtype), variance=np.ones((side, side)), xy0=xy0)
    r = call(detect_footprints, mi, sigma, SourceDetectionConfig(threshold_type="stdev"))
    assert r.ok, r.error
    pos = r.value[0]
    assert len(pos) == 1
    py, px = np.unravel_index(np.argmax(img), img.shape)
    assert pos[0].contains(px + xy0[0], py + xy0[1])


@fuzz(30)
@given(mi=masked_images(), bins=st.one_of(st.integers(4, 64), any_int), order=st.integers(0, 6),
       use_approx=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]))
def test_make_background(mi, bins, order, use_approx, dtype):
    cfg = call(BackgroundConfig, bin_size=bins, approx_order_x=order, use_approximate=use_approx)
    if not cfg.ok:
        return
    bg = call(make_background, mi, cfg.value)
    if bg.ok:
        img = call(bg.value.get_image, dtype)
        if img.ok:
            assert img.value.shape == mi.shape


@fuzz(30)
@given(c=st.floats(-1e4, 1e4), shape=st.tuples(st.integers(8, 64), st.integers(8, 64)), bins=st.integers(4, 64),
       use_approx=st.booleans(), xy0=st.tuples(st.integers(-99, 99), st.integers(-99, 99)))
def test_background_of_a_constant(c, shape, bins, use_approx, xy0):
    c32 = float(np.float32(c))
    mi = MaskedImage(np.full(shape, c32, np.float32), variance=np.ones(shape), xy0=xy0)
    cfg = BackgroundConfig(bin_size=bins, approx_order_x=0, use_approximate=use_approx)
    bg = call(make_background, mi, cfg)
    if not bg.ok:  # a box too small for the bins is refused with a typed error
        return
    img = bg.value.get_image(np.float64)
    np.testing.assert_allclose(img, c32, rtol=1e-6, atol=1e-6 * abs(c32) + 1e-12)


psf_kernels = st.one_of(
    arrays2d(min_side=1, max_side=9, dtypes=("<f8", ">f4", "<i2", "<f2"), layouts=("C", "F", "strided")),
    st.builds(lambda s: gaussian_image((2 * s + 1, 2 * s + 1), s, s, 1.5), st.integers(1, 5)))


@fuzz(40)
@given(mi=masked_images(max_side=32), psf=psf_kernels, fac=st.one_of(st.floats(0.1, 1.0), any_float),
       background=st.one_of(st.just(0.0), any_float), keep=st.booleans())
def test_find_cosmic_rays(mi, psf, fac, background, keep):
    call(cond3_thresholds, psf, fac)
    cfg = call(FindCosmicRaysConfig, keep_crs=keep)
    if not cfg.ok:
        return
    call(cosmic_ray_candidates, mi, psf, cfg.value, background=background)
    call(find_cosmic_rays, mi, psf, cfg.value, background=background)


@fuzz(20)
@given(c=st.floats(-1e3, 1e3), shape=st.tuples(st.integers(3, 40), st.integers(3, 40)), s=st.integers(1, 4))
def test_no_cosmic_ray_on_a_constant(c, shape, s):
    mi = MaskedImage(np.full(shape, c, np.float32), variance=np.ones(shape))
    psf = gaussian_image((2 * s + 1, 2 * s + 1), s, s, 1.5)
    r = call(cosmic_ray_candidates, mi, psf)
    assert r.ok, r.error
    assert not r.value.any()


@fuzz(40)
@given(mi=masked_images(), n_sigma=st.one_of(st.floats(1, 5), any_float), n_iter=st.one_of(st.integers(0, 4), any_int),
       step=st.one_of(st.integers(1, 4), st.sampled_from([0, -1, 2**20, 2**31, 2**63])),
       planes=st.sampled_from([(), ("BAD",), ("NOT_A_PLANE",)]))
def test_noise_statistics(mi, n_sigma, n_iter, step, planes):
    r = call(noise_statistics, mi, ignored_mask_planes=planes, n_sigma_clip=n_sigma, n_iter=n_iter, sample_step=step)
    if r.ok and mi.image.size and np.all(mi.image == mi.image.flat[0]) and np.isfinite(mi.image.flat[0]) \
            and not planes and step == 1 and 0 <= n_iter <= 4 and 1 <= n_sigma <= 5:
        assert r.value == (float(mi.image.flat[0]), 0.0)


@st.composite
def footprints_on(draw, mi, max_n=4):
    n = draw(st.integers(0, max_n))
    fps = []
    for _ in range(n):
        x = draw(st.integers(-3, max(mi.width, 1) + 3)) + mi.xy0[0]
        y = draw(st.integers(-3, max(mi.height, 1) + 3)) + mi.xy0[1]
        w = draw(st.integers(0, 6))
        fp = call(Footprint, [[y, x, x + w], [y + 1, x - 1, x + w - 2]] if w > 2 else [[y, x, x + w]])
        if fp.ok:
            fps.append(fp.value)
    return fps


@fuzz(40)
@given(data=st.data(), offset=st.one_of(st.just(0.0), any_float), exposure_id=st.one_of(st.none(), any_int))
def test_noise_replacer_restores_the_image(data, offset, exposure_id):
    mi = data.draw(masked_images())
    fps = data.draw(footprints_on(mi))
    before = mi.image.copy()
    from visitcal.detection.noise_replacer import NoiseReplacerConfig
    cfg = call(NoiseReplacerConfig, noise_offset=offset)
    if not cfg.ok:
        return
    nr = call(NoiseReplacer, mi, fps, config=cfg.value, exposure_id=exposure_id)
    if not nr.ok:
        np.testing.assert_array_equal(mi.image, before)
        return
    nr = nr.value
    for k in range(len(fps)):
        call(nr.insert_source, k)
        call(nr.noise_values, k)
        call(nr.remove_source, k)
    for k in (len(fps), -1, 2**31, 2**63):  # out of range: IndexError (or another typed error)
        call(nr.insert_source, k, _also=(IndexError,))
    nr.end()
    np.testing.assert_array_equal(mi.image, before)


@fuzz(30)
@given(data=st.data(), config_kw=st.fixed_dictionaries({}, optional={
    "grow_mask": st.integers(0, 5), "source_radius": st.one_of(st.floats(0, 10), st.sampled_from([1e6, 2.0**31, 1e300])),
    "n_sources": st.one_of(st.integers(-2, 20), st.sampled_from([2**31, 10**6])),
    "n_trial_sources": st.one_of(st.none(), st.integers(0, 100))}), seed=any_int)
def test_generate_sky_objects(data, config_kw, seed):
    mi = data.draw(masked_images(min_side=16, max_side=48))
    cfg = call(SkyObjectsConfig, **config_kw)
    if not cfg.ok:
        return
    r = call(generate_sky_objects, mi, seed, cfg.value)
    if not r.ok:
        return
    bits = mi.mask.planes.get_plane_bitmask(*cfg.value.avoid_mask)
    assert len(r.value) <= max(cfg.value.n_sources, 0)
    for fp in r.value:
        for y, x0, x1 in fp.spans:
            row = mi.mask.array[y - mi.xy0[1], x0 - mi.xy0[0]:x1 - mi.xy0[0] + 1]
            assert not (row & bits).any(), "a sky object on an avoided pixel"


@fuzz(30)
@given(data=st.data(), planes=st.sampled_from([("SAT",), (), ("NOT_A_PLANE",)]),
       step=st.one_of(st.integers(1, 3), st.sampled_from([0, -5, 2**31])))
def test_deblend_sigma1(data, planes, step):
    mi = data.draw(masked_images())
    fps = data.draw(footprints_on(mi, 1))
    r = call(deblend_sigma1, Exposure(mi), planes, fps[0] if fps else None, sample_step=step)
    if r.ok and not fps and step == 1 and planes == () and mi.variance.size:
        v = mi.variance[np.isfinite(mi.variance)].astype(np.float64)
        if v.size and np.all(v >= 0) and np.all(v == v[0]):
            assert r.value == math.sqrt(float(v[0])) or abs(r.value - math.sqrt(float(v[0]))) <= 1e-6 * math.sqrt(v[0])


@fuzz(25)
@given(data=st.data())
def test_footprint_set_from_fuzzed_footprints(data):
    mi = data.draw(masked_images())
    fps = data.draw(footprints_on(mi, 5))
    fs = call(FootprintSet.from_footprints, fps, mi.bbox)
    if fs.ok:
        assert len(fs.value) <= len(fps)
        call(fs.value.grown, data.draw(st.one_of(st.integers(0, 3), any_int)))
        call(fs.value.set_mask, mi.mask, data.draw(st.sampled_from(["DETECTED", "NOT_A_PLANE"])))
