"""Per-source bad inputs fail their own row, never the batch (every batch measurement plugin).

A batch of well-measured stars is measured alone and with bad rows inserted at random places: a
non-finite or off-image position, a zero / negative / non-finite per-row width (``sigma``,
``flux_radius``, ``psf_sigma``, second moments). The property: the good rows' outputs are
bit-identical (``np.array_equal``, NaN equal to NaN) in both batches, and every bad row has its
plugin's general failure flag set (``<alg>_flag``). Each kernel measures a source from the pixels
alone, so nothing less than identity is acceptable.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins import aperture_flux as af
from visitcal.measurement.plugins import compensated_tophat as ct
from visitcal.measurement.plugins import gaussian_flux as gf
from visitcal.measurement.plugins import local_background as lb
from visitcal.measurement.plugins import psf_flux as pf
from visitcal.measurement.plugins import sdss_centroid as sc
from visitcal.measurement.plugins import sdss_shape as ss
from visitcal.measurement.plugins import variance as va
from visitcal.measurement.plugins import windowed_centroid as wc

SHAPE = (64, 80)
GOOD_X = np.array([14.2, 40.7, 62.1, 25.5, 55.0])
GOOD_Y = np.array([15.3, 20.1, 44.8, 47.6, 12.9])


def _image() -> MaskedImage:
    rng = np.random.default_rng(21)
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    img = rng.normal(0.0, 1.0, SHAPE)
    for x, y in zip(GOOD_X, GOOD_Y):
        img += 2e4 / (2 * np.pi * 2.0**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    return MaskedImage(img.astype(np.float32), variance=np.ones(SHAPE, np.float32))


MI = _image()
BAD_WIDTHS = (0.0, -1.5, np.nan, np.inf, -np.inf)
BAD_POSITIONS = ((np.nan, 20.0), (20.0, np.inf), (-np.inf, np.nan), (500.0, 20.0), (20.0, -300.0), (-40.0, 10.0),
                 (1e300, 5.0))


def _moments(n, xx=None):
    return (np.full(n, 4.0) if xx is None else xx), np.full(n, 4.0), np.zeros(n)


def _psf_stamps(x, y, w):
    """Gaussian PSF models (21 x 21, sigma ``w``, unit sum) at (x, y): a non-finite position gets a stamp far off the
    image, a bad width a NaN model (what a PSF evaluated at a bad position gives)."""
    n = len(x)
    ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) < 1e6) & (np.abs(y) < 1e6)
    x0 = np.where(ok, np.floor(np.where(ok, x, 0.0)) - 10, 10**6).astype(np.int64)
    y0 = np.where(ok, np.floor(np.where(ok, y, 0.0)) - 10, 10**6).astype(np.int64)
    yy, xx = np.mgrid[0:21, 0:21]
    models = np.empty((n, 21, 21))
    for k in range(n):
        dx, dy = (x[k] - x0[k], y[k] - y0[k]) if ok[k] else (10.0, 10.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * w[k] ** 2)) if w[k] > 0 and np.isfinite(w[k]) \
                else np.full((21, 21), np.nan)
        models[k] = m / m.sum()
    return models, x0, y0


# name -> (measure(x, y, width) with width an (n,) per-row array, general flag column)
PLUGINS = {
    "windowed_centroid_sigma": (lambda x, y, w: wc.windowed_centroid(MI, x, y, w), "ext_windowedCentroid_flag"),
    "windowed_centroid_flux_radius": (lambda x, y, w: wc.windowed_centroid(MI, x, y, flux_radius=w),
                                      "ext_windowedCentroid_flag"),
    "sdss_centroid": (lambda x, y, w: sc.sdss_centroid(MI, x, y, w), "base_SdssCentroid_flag"),
    "local_background": (lambda x, y, w: lb.local_background(MI, x, y, w), "base_LocalBackground_flag"),
    "gaussian_flux": (lambda x, y, w: gf.gaussian_flux(MI, x, y, *_moments(len(x), w)), "base_GaussianFlux_flag"),
    "variance": (lambda x, y, w: va.variance(MI, x, y, *_moments(len(x), w)), "base_Variance_flag"),
    "psf_flux": (lambda x, y, w: pf.psf_flux(MI, *_psf_stamps(x, y, w)), "base_PsfFlux_flag"),
    # position-only plugins (the width is not used)
    "sdss_shape": (lambda x, y, w: ss.sdss_shape(MI, x, y), "base_SdssShape_flag"),
    "aperture_flux": (lambda x, y, w: af.circular_aperture_flux(MI, x, y), "base_CircularApertureFlux_3_0_flag"),
    "compensated_tophat": (lambda x, y, w: ct.compensated_tophat_flux(
        MI, x, y, ct.CompensatedTophatConfig(apertures=[4])), "base_CompensatedTophatFlux_4_flag"),
}
POSITION_ONLY = {"sdss_shape", "aperture_flux", "compensated_tophat"}


@st.composite
def batches(draw, with_widths: bool):
    """Indices of the good rows in the mixed batch and the mixed (x, y, width) arrays."""
    n_bad = draw(st.integers(1, 4))
    bad = []
    for _ in range(n_bad):
        kind = draw(st.sampled_from(("position", "width") if with_widths else ("position",)))
        if kind == "position":
            bx, by = draw(st.sampled_from(BAD_POSITIONS))
            bad.append((bx, by, 2.0))
        else:
            k = draw(st.integers(0, len(GOOD_X) - 1))  # a bad width on a real star
            bad.append((GOOD_X[k], GOOD_Y[k], draw(st.sampled_from(BAD_WIDTHS))))
    rows = [(x, y, 2.0, True) for x, y in zip(GOOD_X, GOOD_Y)] + [(x, y, w, False) for x, y, w in bad]
    order = draw(st.permutations(range(len(rows))))
    rows = [rows[i] for i in order]
    x, y, w, good = (np.array(c) for c in zip(*rows))
    return x.astype(float), y.astype(float), w.astype(float), good.astype(bool)


@pytest.mark.parametrize("name", sorted(PLUGINS))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_bad_rows_do_not_change_good_rows(name, data):
    measure, flag = PLUGINS[name]
    x, y, w, good = data.draw(batches(name not in POSITION_ONLY))
    clean = measure(x[good], y[good], w[good])
    mixed = measure(x, y, w)
    assert set(clean) == set(mixed)
    for col in clean:
        assert np.array_equal(mixed[col][good], clean[col], equal_nan=np.asarray(clean[col]).dtype.kind == "f"), col
    assert mixed[flag][~good].all()
    assert not clean[flag].any()  # the good stars are measured


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_windowed_centroid_bad_radius_is_flagged_with_nan(bad):
    radius = np.array([2.35, bad, 2.35, 2.35, 2.35])
    out = wc.windowed_centroid(MI, GOOD_X, GOOD_Y, flux_radius=radius)
    p = wc.PLUGIN_NAME
    assert out[f"{p}_flag"].tolist() == [False, True, False, False, False]
    assert out[f"{p}_flag_badInput"].tolist() == [False, True, False, False, False]
    assert np.isnan(out[f"{p}_x"][1]) and np.isnan(out[f"{p}_y"][1]) and out[f"{p}_niter"][1] == 0
    # the good rows are the stars (2e4 counts, sigma 2 px, noise 1): within 0.01 px of the truth
    keep = np.array([0, 2, 3, 4])
    assert np.max(np.abs(out[f"{p}_x"][keep] - GOOD_X[keep])) < 0.01
    assert np.max(np.abs(out[f"{p}_y"][keep] - GOOD_Y[keep])) < 0.01


def test_windowed_centroid_off_image_start():
    # nearest pixel on the image (x >= -0.5): measured; off it: flag_badInput, NaN
    p = wc.PLUGIN_NAME
    out = wc.windowed_centroid(MI, [-0.49, -0.51, SHAPE[1] - 0.51, SHAPE[1] - 0.5], [10.0] * 4, 2.0)
    assert out[f"{p}_flag_badInput"].tolist() == [False, True, False, True]
    assert np.isfinite(out[f"{p}_x"][[0, 2]]).all() and np.isnan(out[f"{p}_x"][[1, 3]]).all()
