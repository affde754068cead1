"""Fuzz: PSF models and determiners, PSF candidates and star sizes (visitcal.psf.*), and the
astrometric matchers and WCS fit (visitcal.calib.*).

Truths: a GaussianPsf's image sums to 1 and its adaptive moments (measure_star_sizes) give sigma;
a FixedImagePsf's kernel is the given one normalised; the PSF aperture flux of a wide aperture is 1;
a TAN-SIP fit of points projected exactly by a TAN WCS reproduces their sky positions (1e-6 arcsec).
The matchers, determiners and candidate cutting get fuzzed inputs (±1e308 and NaN positions, empty
and mismatched lists, all-zero and non-finite stamps): a typed exception or a result.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS
from hypothesis import given
from hypothesis import strategies as st

from visitcal.calib.fit_tan_sip_wcs import FitTanSipWcsConfig, FitTanSipWcsTask, tan_sip_from_wcs
from visitcal.calib.match_offset import MatchOffsetTask
from visitcal.calib.match_pessimistic_b import MatchPessimisticBTask
from visitcal.core.geom import Box2I
from visitcal.psf.candidates import PsfCandidates
from visitcal.psf.checks import measure_star_sizes
from visitcal.psf.models import FixedImagePsf, GaussianPsf
from visitcal.psf.pca import PcaPsf, PcaPsfDeterminer
from visitcal.psf.pixel_grid import PixelGridPsf, PixelGridPsfDeterminer

from ._fuzz import any_float, any_int, arrays1d, arrays2d, call, fuzz, gaussian_image, special_floats

positions = st.one_of(st.floats(-100, 2100), any_float)


@fuzz(60)
@given(sigma=st.one_of(st.floats(0.5, 4.0), any_float), size=st.one_of(st.none(), st.integers(-1, 41), any_int),
       x=positions, y=positions, radius=st.one_of(st.floats(0, 50), any_float))
def test_gaussian_psf(sigma, size, x, y, radius):
    psf = call(GaussianPsf, sigma, size=size)
    if not psf.ok:
        return
    psf = psf.value
    img = call(psf.compute_image, x, y)
    shape = call(psf.compute_shape, x, y)
    flux = call(psf.compute_aperture_flux, radius, x, y)
    sane = 0.5 <= sigma <= 4 and size is None and all(math.isfinite(v) and abs(v) < 1e4 for v in (x, y))
    if sane:
        assert img.ok and shape.ok, (img.error, shape.error)
        assert abs(float(np.sum(img.value)) - 1.0) < 1e-9
        assert shape.value.xx == np.float64(sigma**2) or abs(shape.value.xx - sigma**2) < 1e-9
        if 0 <= radius <= 50 and flux.ok and radius >= 6 * sigma:
            assert abs(flux.value - 1.0) < 1e-4


@fuzz(60)
@given(kernel=arrays2d(max_side=13), x=positions, y=positions)
def test_fixed_image_psf(kernel, x, y):
    psf = call(FixedImagePsf, kernel)
    if not psf.ok:
        return
    k = np.asarray(kernel, np.float64)
    got = call(psf.value.compute_kernel_image, x, y)
    call(psf.value.compute_shape, x, y)
    call(psf.value.compute_aperture_flux, 3.0, x, y)
    if got.ok and np.all(np.isfinite(k)) and abs(k.sum()) > 1e-3 * np.abs(k).sum() and np.abs(k).max() < 1e100:
        np.testing.assert_allclose(got.value, k / k.sum(), rtol=1e-9, atol=1e-12 * np.abs(k / k.sum()).max())


@fuzz(40)
@given(basis=st.one_of(arrays2d(min_side=1, max_side=9, dtypes=("<f8", ">f4")), st.just(np.zeros((3, 3)))),
       k=st.integers(0, 3), order=st.one_of(st.integers(0, 2), any_int),
       box=st.tuples(any_int, any_int, st.integers(-5, 100), st.integers(-5, 100)), x=positions, y=positions)
def test_pca_and_pixel_grid_psf_models(basis, k, order, box, x, y):
    n = basis.shape[0]
    b = np.repeat(np.asarray(basis, np.float64)[:n, :n][None], max(k, 1), 0)
    n_terms = (max(order, 0) + 1) * (max(order, 0) + 2) // 2 if 0 <= order <= 2 else 1
    coeffs = np.ones((max(k, 1), n_terms))
    bb = call(Box2I, box[0], box[1], box[0] + box[2], box[1] + box[3])
    if not bb.ok:
        return
    for model in (call(PcaPsf, b[:k] if k else b[:0], coeffs[:k] if k else coeffs[:0], spatial_order=order, box=bb.value),
                  call(PixelGridPsf, np.repeat(np.asarray(basis, np.float64)[:n, :n][None], n_terms, 0),
                       sampling_size=1.0, interpolant_order=3, spatial_order=order, box=bb.value, draw_size=max(n, 1) | 1)):
        if model.ok:
            call(model.value.compute_image, x, y)
            call(model.value.compute_shape, x, y)
            call(model.value.compute_aperture_flux, 4.0, x, y)


@st.composite
def candidates(draw):
    m = draw(st.integers(0, 12))
    s = draw(st.sampled_from([5, 27, 27, 31]))  # the determiners' stamps: 25 px and up
    kind = draw(st.sampled_from(["gauss", "zeros", "fuzz"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(0, 200, m)
    y = rng.uniform(0, 200, m)
    if kind == "gauss":
        stamps = np.stack([1e4 * gaussian_image((s, s), s // 2 + rng.uniform(-.5, .5), s // 2 + rng.uniform(-.5, .5), 1.5)
                           + rng.normal(0, 1, (s, s)) for _ in range(m)]) if m else np.zeros((0, s, s))
    elif kind == "zeros":  # all-zero stamps: being fixed (PixelGridPsfDeterminer accepted them)
        stamps = np.zeros((m, s, s))
    else:
        stamps = draw(arrays2d(shape=(m * s, s))).astype(np.float64).reshape(m, s, s)
    var = np.ones((m, s, s)) if draw(st.booleans()) else np.abs(draw(arrays2d(shape=(m * s, s))).astype(np.float64)).reshape(m, s, s)
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    xy0 = np.stack([ix - s // 2, iy - s // 2], 1).astype(np.int32).reshape(m, 2)
    if m and draw(st.booleans()):
        xy0[draw(st.integers(0, m - 1))] = draw(st.sampled_from([(2**31 - 1, 0), (-2**31, -2**31)]))
    table = {"x": x, "y": y, "used": np.ones(m, bool), "index": np.arange(m)}
    r = call(PsfCandidates, stamps.astype(np.float32), np.zeros((m, s, s), np.int32), var.astype(np.float32), xy0, table)
    return r.value if r.ok else None


@fuzz(30)
@given(cands=candidates(), box=st.sampled_from([(0, 0, 199, 199), (0, 0, 0, 0), (-5, -5, 2**31 - 1, 2**31 - 1)]))
def test_psf_determiners(cands, box):
    if cands is None:
        return
    bbox = Box2I(*box)
    for det in (PcaPsfDeterminer(), PixelGridPsfDeterminer()):
        r = call(det.determine_psf, cands, bbox)
        if r.ok:
            psf = r.value.psf
            img = call(psf.compute_kernel_image, 100.0, 100.0)
            assert img.ok and np.all(np.isfinite(img.value)), "a fitted PSF must draw finite images"


@fuzz(40)
@given(sigma=st.floats(1.2, 3.0), m=st.integers(1, 5), s=st.sampled_from([21, 25]), dx=st.floats(-0.5, 0.5),
       dy=st.floats(-0.5, 0.5), dtype=st.sampled_from(["<f4", "<f8", ">f8"]))
def test_measure_star_sizes_of_gaussians(sigma, m, s, dx, dy, dtype):
    stamps = np.stack([gaussian_image((s, s), s // 2 + dx, s // 2 + dy, sigma, 1e4) for _ in range(m)]).astype(dtype)
    r = call(measure_star_sizes, stamps, x_offset=np.full(m, dx), y_offset=np.full(m, dy))
    assert r.ok, r.error
    np.testing.assert_allclose(r.value, sigma, rtol=1e-3)  # adaptive moments are biased below ~1.1 px (LSST too)


@fuzz(40)
@given(data=st.data())
def test_measure_star_sizes_fuzzed(data):
    m = data.draw(st.integers(0, 4))
    s = data.draw(st.sampled_from([0, 1, 4, 7]))
    img = data.draw(arrays2d(shape=(m * s, s))).astype(np.float64).reshape(m, s, s) if s else np.zeros((m, 0, 0))
    mask = None if data.draw(st.booleans()) else np.zeros((m, s, s), np.int32)
    var = None if data.draw(st.booleans()) else data.draw(st.one_of(st.just(np.ones((m, s, s))), st.just(np.ones((1, 2, 2)))))
    off = data.draw(st.one_of(st.none(), arrays1d(m), arrays1d()))
    r = call(measure_star_sizes, img, mask, var, x_offset=off, y_offset=off)
    if r.ok:
        assert np.shape(r.value) == (m,)


SCALE = 0.2 / 3600.0


def tan_wcs(crval=(150.0, 2.0), crpix=(1000.0, 2000.0), rot=0.0, scale=SCALE) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [crpix[0] + 1.0, crpix[1] + 1.0]
    c, s = math.cos(rot), math.sin(rot)
    w.wcs.cd = scale * np.array([[-c, s], [s, c]])
    w.wcs.set()
    return w


@st.composite
def match_inputs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 40))
    wcs = tan_wcs(crval=(draw(st.floats(0, 360)), draw(st.floats(-89, 89))))
    x, y = rng.uniform(0, 2000, n), rng.uniform(0, 4000, n)
    ra, dec = wcs.all_pix2world(x, y, 0)
    flux = 10 ** rng.uniform(3, 6, n)
    sxy = np.c_[x, y] + rng.normal(0, 0.1, (n, 2))
    for a in (sxy[:, 0], ra, dec, flux):
        if n and draw(st.booleans()):
            a[draw(st.integers(0, n - 1))] = draw(special_floats)
    if draw(st.integers(0, 5)) == 0:
        sxy = sxy[:-1] if n else np.zeros((1, 3))
    if draw(st.integers(0, 5)) == 0:
        ra = np.full(n, draw(st.sampled_from([1e308, -1e308, np.nan])))
    return sxy, flux[:len(sxy)] if len(sxy) <= n else flux, ra, dec, flux, wcs


@fuzz(40)
@given(inp=match_inputs())
def test_match_pessimistic_b(inp):
    sxy, sflux, ra, dec, rflux, wcs = inp
    r = call(MatchPessimisticBTask().match_objects, sxy, sflux, ra, dec, rflux, wcs)
    if r.ok:
        assert len(r.value.source_index) == len(r.value.ref_index)


@fuzz(40)
@given(inp=match_inputs())
def test_match_offset(inp):
    sxy, sflux, ra, dec, rflux, wcs = inp
    call(MatchOffsetTask().match_objects, sxy, sflux, ra, dec, rflux, wcs)


@fuzz(30)
@given(n=st.integers(0, 80), order=st.integers(2, 4), crval=st.tuples(st.floats(0, 360), st.floats(-80, 80)),
       rot=st.floats(-math.pi, math.pi), seed=st.integers(0, 2**32 - 1), spoil=st.one_of(st.none(), special_floats))
def test_fit_tan_sip_wcs(n, order, crval, rot, seed, spoil):
    """Points projected exactly by a TAN WCS: the fit maps every one back to its sky position."""
    rng = np.random.default_rng(seed)
    wcs = tan_wcs(crval=crval, rot=rot)
    x, y = rng.uniform(0, 2000, n), rng.uniform(0, 4000, n)
    ra, dec = wcs.all_pix2world(x, y, 0)
    if spoil is not None and n:
        x[rng.integers(n)] = spoil
    r = call(FitTanSipWcsTask(FitTanSipWcsConfig(order=order)).fit_wcs, x, y, ra, dec)
    call(tan_sip_from_wcs, wcs)
    if not r.ok or spoil is not None or n < 3 * (order + 1) * (order + 2):
        return
    fitted = r.value.wcs
    ra2, dec2 = fitted.all_pix2world(x, y, 0)
    d = np.hypot((ra2 - ra + 180) % 360 - 180, dec2 - dec) * 3600.0 * np.cos(np.radians(dec))
    assert np.max(np.abs(d)) < 1e-3, d  # arcsec
