"""ext_windowedCentroid (SExtractor's XWIN_IMAGE / sep.winpos) against a numpy reference, an analytic
truth and real data.

* Analytic: for a sampled circular Gaussian and a window of the same sigma the fixed point is the true
  centre (the weighted profile is a Gaussian centred halfway, hence SExtractor's factor 2): < 1e-4 px
  (the stopping step), measured ~1e-5.
* Real data (../shared/realdata/sep_emmi, SExtractor's catalogue): FLAGS == 0 objects (unblended,
  untruncated), sigma = 2 FLUX_RADIUS / 2.35, start at X/Y_IMAGE: agree with XWIN/YWIN to 0.05 px
  (the acceptance figure; measured < 1e-3 px) and with sep.winpos to 1e-6 px (measured: identical).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from visitcal import _core
from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins.windowed_centroid import (PLUGIN_NAME, WindowedCentroidConfig, columns, flag_names,
                                                sigma_from_flux_radius, windowed_centroid)

P = PLUGIN_NAME


def masked(image):
    image = np.asarray(image, np.float32)
    return MaskedImage(image, variance=np.ones(image.shape, np.float32))


def gaussian(shape, x, y, sigma, flux=1.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return flux / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


def reference_winpos(image, x, y, sig, n_iter=16, step_min=1e-4, nsig=4.0, os=11):
    """numpy reference of the iteration in windowed_centroid.hpp (image fully inside, no mask)."""
    rmax = nsig * sig
    for _ in range(n_iter):
        xa, xb = int(np.floor(x - rmax)), int(np.ceil(x + rmax))
        ya, yb = int(np.floor(y - rmax)), int(np.ceil(y + rmax))
        yy, xx = np.mgrid[ya:yb + 1, xa:xb + 1]
        dx, dy = xx - x, yy - y
        sub = (np.arange(os) + 0.5) / os - 0.5
        ex = dx[..., None, None] + sub[None, None, None, :]
        ey = dy[..., None, None] + sub[None, None, :, None]
        frac = (ex * ex + ey * ey < rmax * rmax).mean(axis=(2, 3))
        d = np.hypot(dx, dy)
        frac = np.where(d <= max(0.0, rmax - np.sqrt(0.5)), 1.0, frac)
        frac = np.where(d > rmax + np.sqrt(0.5), 0.0, frac)
        w = frac * np.exp(-(dx * dx + dy * dy) / (2 * sig * sig)) * image[ya:yb + 1, xa:xb + 1]
        ddx, ddy = (w * dx).sum() / w.sum(), (w * dy).sum() / w.sum()
        x, y = x + 2 * ddx, y + 2 * ddy
        if ddx * ddx + ddy * ddy < step_min * step_min:
            break
    return x, y


def test_config_defaults_match_core():
    ctrl, cfg = _core.WindowedCentroidControl(), WindowedCentroidConfig()
    for name in ("max_iter", "step_min", "n_sigma", "oversample", "min_sigma"):
        assert getattr(ctrl, name) == getattr(cfg, name), name
    assert ctrl.bad_mask_bits == cfg.to_core(masked(np.zeros((2, 2))).mask).bad_mask_bits
    assert (cfg.max_iter, cfg.step_min, cfg.n_sigma, cfg.oversample) == (16, 1e-4, 4.0, 11)


def test_columns():
    assert flag_names()[0] == "flag"
    out = windowed_centroid(masked(gaussian((30, 30), 15, 15, 2, 100)), [15.0], [15.0], 2.0)
    assert [k for k in out if k != f"{P}_niter"] == columns()


def test_matches_numpy_reference():
    rng = np.random.default_rng(4)
    for _ in range(5):
        s = rng.uniform(1.2, 3.0)
        img = gaussian((50, 50), 25 + rng.uniform(-1, 1), 24 + rng.uniform(-1, 1), s, 2000) + rng.normal(0, 1, (50, 50))
        img = img.astype(np.float32)
        x0, y0, sig = 25.3, 23.6, rng.uniform(1.0, 3.0)
        ref = reference_winpos(img.astype(np.float64), x0, y0, sig)
        out = windowed_centroid(masked(img), [x0], [y0], sig)
        assert out[f"{P}_x"][0] == pytest.approx(ref[0], abs=1e-9)
        assert out[f"{P}_y"][0] == pytest.approx(ref[1], abs=1e-9)


def test_gaussian_fixed_point_is_the_centre():
    rng = np.random.default_rng(9)
    for _ in range(10):
        s = rng.uniform(1.5, 3.0)
        x, y = 30 + rng.uniform(-0.5, 0.5), 30 + rng.uniform(-0.5, 0.5)
        out = windowed_centroid(masked(gaussian((60, 60), x, y, s, 1e4)), [30.0], [30.0], s)
        assert not out[f"{P}_flag"][0]
        assert abs(out[f"{P}_x"][0] - x) < 1e-4 and abs(out[f"{P}_y"][0] - y) < 1e-4


def test_flags():
    img = gaussian((40, 40), 2.0, 20.0, 2.0, 1e4)
    img[:, 10:] = 0.0
    img += gaussian((40, 40), 30.0, 32.0, 2.0, 1e4) * (np.arange(40) >= 29)[:, None]
    mi = masked(img)
    where = np.zeros(img.shape, bool)
    where[30, 30] = True
    mi.mask.set("BAD", where=where)
    out = windowed_centroid(mi, [2.0, 20.0, 30.0, np.nan], [20.0, 20.0, 30.0, 5.0], 2.0)
    assert out[f"{P}_flag_edge"][0] and not out[f"{P}_flag"][0]     # window off the image: partial
    assert abs(out[f"{P}_x"][0] - 2.0) < 0.5  # the truncated window biases it inwards (~0.2 px)
    assert out[f"{P}_flag_noFlux"][1] and out[f"{P}_flag"][1]       # empty sky: zero flux
    assert out[f"{P}_flag_edge"][2]                                 # BAD pixel in the window
    assert out[f"{P}_flag"][3] and np.isnan(out[f"{P}_x"][3])
    with pytest.raises(ValueError, match="exactly one"):
        windowed_centroid(mi, [1.0], [1.0])
    out = windowed_centroid(mi, [20.0], [20.0], flux_radius=[-1.0])  # a bad row is flagged, not an error
    assert out[f"{P}_flag"][0] and out[f"{P}_flag_badInput"][0] and np.isnan(out[f"{P}_x"][0])
    with pytest.raises(ValueError, match="flux_radius has 2 entries"):
        windowed_centroid(mi, [1.0], [1.0], flux_radius=[1.0, 2.0])
    assert sigma_from_flux_radius(2.35) == pytest.approx(2.0)


@pytest.mark.realdata
def test_sextractor_xwin_on_sep_emmi(realdata_dir):
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    d = realdata_dir / "sep_emmi"

    def read(name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)  # ESO-MIDAS "ESO-LOG" cards
            with fits.open(d / name) as hdul:
                return hdul[0].data.astype(np.float64)

    data = (read("image.fits") - read("back.fits")).astype(np.float32)
    cat = np.loadtxt(d / "image.cat", comments="#")
    # columns: 1-2 X/Y_IMAGE, 3-4 XWIN/YWIN_IMAGE, 18 FLUX_RADIUS(0.5), 20 FLAGS (SExtractor is 1-based)
    x, y, xw, yw = cat[:, 1] - 1, cat[:, 2] - 1, cat[:, 3] - 1, cat[:, 4] - 1
    fr, flags = cat[:, 18], cat[:, 20].astype(int)
    good = (flags == 0) & (fr > 0)
    assert good.sum() >= 40
    out = windowed_centroid(masked(data), x[good], y[good], flux_radius=fr[good])
    assert not out[f"{P}_flag"].any()
    assert np.abs(out[f"{P}_x"] - xw[good]).max() < 0.05
    assert np.abs(out[f"{P}_y"] - yw[good]).max() < 0.05
    sep = pytest.importorskip("sep")
    sx, sy, _ = sep.winpos(data.astype(np.float64), x[good], y[good], sigma_from_flux_radius(fr[good]))
    assert np.abs(out[f"{P}_x"] - sx).max() < 1e-6
    assert np.abs(out[f"{P}_y"] - sy).max() < 1e-6
