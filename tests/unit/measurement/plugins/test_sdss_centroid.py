"""base_SdssCentroid (lsst-spec §5.7) against analytic truths.

* Noise-free sampled Gaussians at random sub-pixel positions come back to < 1e-5 px (measured: a few
  1e-8 px, the float32 image's precision): the smoothed image of a sampled Gaussian is a sampled
  Gaussian and the 1-D Gaussian interpolation through the 3 x 3 centre is exact for it.
* With sky noise (variance 1 per pixel, many realisations) the scatter of x is within 20% of the
  Cramer-Rao bound, computed numerically as 1 / sum((dM/dx)^2 / var) for the sampled Gaussian model
  (for a Gaussian PSF in the background-limited limit this is 8 pi sigma^4 var / F^2), and the
  reported x_err agrees with the scatter to 20%.
* Edge, NaN, flat and negative sources set the LSST flags and never raise.
"""

from __future__ import annotations

import numpy as np
import pytest

from visitcal import _core
from visitcal.core.footprint import Footprint
from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins.sdss_centroid import PLUGIN_NAME, SdssCentroidConfig, columns, flag_names, sdss_centroid

P = PLUGIN_NAME


def gaussian(shape, x, y, sigma, flux=1.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return flux / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


def masked(image, variance=1.0):
    image = np.asarray(image, np.float32)
    return MaskedImage(image, variance=np.full(image.shape, variance, np.float32))


def test_config_defaults_match_core():
    ctrl, cfg = _core.SdssCentroidControl(), SdssCentroidConfig()
    for name in type(cfg).model_fields:
        assert getattr(ctrl, name) == getattr(cfg, name), name
    assert (cfg.binmax, cfg.peak_min, cfg.wfac, cfg.do_footprint_check, cfg.max_dist_to_peak) == (16, -1.0, 1.5, True, 1.0)


def test_flag_registry_and_columns():
    assert flag_names() == ["flag", "flag_edge", "flag_noSecondDerivative", "flag_almostNoSecondDerivative",
                            "flag_notAtMaximum", "flag_near_edge", "flag_badInitialCentroid", "flag_resetToPeak"]
    out = sdss_centroid(masked(gaussian((20, 20), 10, 10, 2, 100)), [10.0], [10.0], 2.0)
    assert list(out) == columns()
    assert columns()[:4] == [f"{P}_x", f"{P}_y", f"{P}_xErr", f"{P}_yErr"]


@pytest.mark.parametrize("smooth_factor", [1.0, 0.8, 1.3])
def test_noise_free_gaussians_exact(smooth_factor):
    rng = np.random.default_rng(11)
    n_side, step = 8, 40
    xs, ys, sig = [], [], []
    image = np.zeros((n_side * step, n_side * step))
    for j in range(n_side):
        for i in range(n_side):
            s = rng.uniform(1.5, 3.5)
            x, y = i * step + 20 + rng.uniform(-0.5, 0.5), j * step + 20 + rng.uniform(-0.5, 0.5)
            image += gaussian(image.shape, x, y, s, 1e4)
            xs.append(x)
            ys.append(y)
            sig.append(s * smooth_factor)
    xs, ys = np.array(xs), np.array(ys)
    out = sdss_centroid(masked(image), np.floor(xs + 0.5), np.floor(ys + 0.5), np.array(sig))
    assert not out[f"{P}_flag"].any()
    assert np.abs(out[f"{P}_x"] - xs).max() < 1e-5
    assert np.abs(out[f"{P}_y"] - ys).max() < 1e-5


def test_peak_one_pixel_off_moves_to_the_maximum():
    image = gaussian((40, 40), 20.4, 19.6, 2.0, 1e4)
    out = sdss_centroid(masked(image), [21.0], [19.0], 2.0, config=SdssCentroidConfig(max_dist_to_peak=2.0))
    assert not out[f"{P}_flag"][0]
    assert abs(out[f"{P}_x"][0] - 20.4) < 1e-5 and abs(out[f"{P}_y"][0] - 19.6) < 1e-5


def test_wide_object_is_binned_and_centred():
    # sigma 7 px galaxy with a 1.5 px smoothing kernel: wide, so binned.
    image = gaussian((120, 120), 60.3, 59.8, 7.0, 1e5)
    out = sdss_centroid(masked(image), [60.0], [60.0], 1.5)
    assert not out[f"{P}_flag"][0]
    assert abs(out[f"{P}_x"][0] - 60.3) < 0.02 and abs(out[f"{P}_y"][0] - 59.8) < 0.02


def fisher_bound_x(sigma, flux, var, x=0.3, y=-0.2, half=20):
    """Cramer-Rao bound of x for the sampled Gaussian model F g(p - (x, y)) with noise var per pixel."""
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    g = flux / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    dgdx = g * (xx - x) / sigma**2
    return 1.0 / np.sqrt(np.sum(dgdx**2) / var)


def test_noise_scatter_near_cramer_rao_and_errors_match():
    rng = np.random.default_rng(5)
    sigma, flux, var = 2.0, 600.0, 1.0
    n_side, step = 30, 32
    shape = (n_side * step, n_side * step)
    xs = (np.arange(n_side) * step + 16)[None, :].repeat(n_side, 0).ravel() + rng.uniform(-0.5, 0.5, n_side**2)
    ys = (np.arange(n_side) * step + 16)[:, None].repeat(n_side, 1).ravel() + rng.uniform(-0.5, 0.5, n_side**2)
    image = np.zeros(shape)
    for x, y in zip(xs, ys):
        x0, y0 = int(x) - 14, int(y) - 14
        image[y0:y0 + 29, x0:x0 + 29] += gaussian((29, 29), x - x0, y - y0, sigma, flux)
    image += rng.normal(0, np.sqrt(var), shape)
    out = sdss_centroid(masked(image, var), np.floor(xs + 0.5), np.floor(ys + 0.5), sigma)
    ok = ~out[f"{P}_flag"]
    assert ok.mean() > 0.99
    dx = (out[f"{P}_x"] - xs)[ok]
    dy = (out[f"{P}_y"] - ys)[ok]
    crb = fisher_bound_x(sigma, flux, var)
    assert crb == pytest.approx(np.sqrt(8 * np.pi * sigma**4 * var) / flux, rel=1e-3)  # King (1983)
    for d in (dx, dy):
        assert abs(d.mean()) < 3 * crb / np.sqrt(d.size)
        assert 0.95 * crb < d.std() < 1.2 * crb
    assert np.median(out[f"{P}_xErr"][ok]) == pytest.approx(dx.std(), rel=0.2)
    assert np.median(out[f"{P}_yErr"][ok]) == pytest.approx(dy.std(), rel=0.2)


def test_edges_and_near_edge():
    image = gaussian((60, 60), 4.2, 30.3, 2.0, 1e4) + gaussian((60, 60), 1.1, 10.0, 2.0, 1e4)
    out = sdss_centroid(masked(image), [4.0, 1.0, 30.0, -3.0], [30.0, 10.0, 70.0, 5.0], 2.0)
    # 4 px from the edge: the 5x5 sigma-0.5 fallback, still a good position
    assert out[f"{P}_flag_near_edge"][0] and out[f"{P}_flag"][0] and not out[f"{P}_flag_edge"][0]
    assert abs(out[f"{P}_x"][0] - 4.2) < 0.05 and abs(out[f"{P}_y"][0] - 30.3) < 0.05
    assert np.isfinite(out[f"{P}_xErr"][0])
    # 1 px from the edge: nothing fits, the peak is reported
    assert out[f"{P}_flag_edge"][1] and out[f"{P}_flag"][1]
    assert (out[f"{P}_x"][1], out[f"{P}_y"][1]) == (1.0, 10.0) and np.isnan(out[f"{P}_xErr"][1])
    # off the image
    for k in (2, 3):
        assert out[f"{P}_flag_edge"][k] and out[f"{P}_flag_badInitialCentroid"][k]


def test_nan_masked_flat_negative_and_bad_peak():
    image = gaussian((40, 80), 10.2, 20.1, 2.0, 1e4)
    image[20, 10] = np.nan                        # NaN at the centre
    image += gaussian((40, 80), 30.0, 20.0, 2.0, 1e4)
    image[25, 36] = np.nan                        # NaN 6 px away: near-edge fallback
    image -= gaussian((40, 80), 68.0, 20.0, 2.0, 1e4)  # a hole
    image[:, 40:62] = 50.0                        # flat top (saturated-like), wider than the stamp
    mi = masked(image)
    mi.mask.set("NO_DATA", where=np.zeros(image.shape, bool))
    out = sdss_centroid(mi, [10.0, 30.0, 50.0, 68.0, np.nan], [20.0, 20.0, 20.0, 20.0, 3.0], 2.0)
    f = {name: out[f"{P}_{name}"] for name in flag_names()}
    assert f["flag_edge"][0]
    assert f["flag_near_edge"][1] and not f["flag_edge"][1] and abs(out[f"{P}_x"][1] - 30.0) < 0.05
    assert f["flag_noSecondDerivative"][2] and out[f"{P}_x"][2] == 50.0
    assert f["flag_notAtMaximum"][3]
    assert f["flag_badInitialCentroid"][4] and np.isnan(out[f"{P}_x"][4])
    assert f["flag"].all()


def test_no_data_pixels_are_edge():
    image = gaussian((40, 40), 20.0, 20.0, 2.0, 1e4)
    mi = masked(image)
    where = np.zeros(image.shape, bool)
    where[20, 21] = True
    mi.mask.set("NO_DATA", where=where)
    out = sdss_centroid(mi, [20.0], [20.0], 2.0)
    assert out[f"{P}_flag_edge"][0]


def test_reset_to_peak_and_footprint_check():
    image = gaussian((40, 40), 20.3, 20.0, 2.0, 1e4)
    fp = Footprint([[20, 19, 20]])  # the centroid pixel (20, 20) is in, (21, 20) is not
    fp_out = Footprint([[20, 17, 19], [21, 17, 19]])  # peak (19, 20) in, centroid pixel (20, 20) out
    out = sdss_centroid(masked(image), [20.0, 19.0, 20.0], [20.0, 20.0, 20.0], 2.0, footprints=[fp, fp_out, fp_out])
    assert not out[f"{P}_flag"][0] and abs(out[f"{P}_x"][0] - 20.3) < 1e-5
    assert out[f"{P}_flag_resetToPeak"][1] and out[f"{P}_x"][1] == 19.0
    assert out[f"{P}_flag_badInitialCentroid"][2]  # the peak itself is outside its footprint
    cfg = SdssCentroidConfig(do_footprint_check=False, max_dist_to_peak=2.0)
    out = sdss_centroid(masked(image), [19.0], [20.0], 2.0, footprints=[fp_out], config=cfg)
    assert not out[f"{P}_flag"][0]
    # a peak 2 px from the maximum is farther than max_dist_to_peak = 1 after the moves
    image = gaussian((40, 40), 22.0, 20.0, 2.0, 1e4)
    out = sdss_centroid(masked(image), [20.6], [20.0], 2.0)
    assert out[f"{P}_flag_resetToPeak"][0] and out[f"{P}_x"][0] == 20.6


def test_bad_arguments():
    mi = masked(np.zeros((10, 10)))
    out = sdss_centroid(mi, [1.0, 2.0], [1.0, 2.0], [0.0, np.nan])  # bad per-row sigmas fail their rows
    assert out[f"{P}_flag"].all() and np.isnan(out[f"{P}_xErr"]).all() and out[f"{P}_x"].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="psf_sigma has 2 entries"):
        sdss_centroid(mi, [1.0], [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="peak_y"):
        sdss_centroid(mi, [1.0, 2.0], [1.0], 1.0)
    with pytest.raises(ValueError, match="footprints"):
        sdss_centroid(mi, [1.0], [1.0], 1.0, footprints=[])
    with pytest.raises(TypeError, match="Exposure or MaskedImage"):
        sdss_centroid(np.zeros((10, 10)), [1.0], [1.0], 1.0)


def test_deterministic_and_xy0():
    image = gaussian((40, 40), 20.3, 19.8, 2.0, 1e4) + np.random.default_rng(1).normal(0, 1, (40, 40))
    a = sdss_centroid(masked(image), [20.0], [20.0], 2.0)
    b = sdss_centroid(masked(image), [20.0], [20.0], 2.0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    mi = MaskedImage(image.astype(np.float32), variance=np.ones((40, 40), np.float32), xy0=(100, -7))
    c = sdss_centroid(mi, [120.0], [13.0], 2.0)
    assert c[f"{P}_x"][0] == pytest.approx(a[f"{P}_x"][0] + 100, abs=1e-12)
    assert c[f"{P}_y"][0] == pytest.approx(a[f"{P}_y"][0] - 7, abs=1e-12)
