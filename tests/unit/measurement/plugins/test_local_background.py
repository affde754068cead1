"""base_LocalBackground (visitcal.measurement.plugins.local_background, lsst-spec §5.7) against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from visitcal import _core
from visitcal.core.image import MaskedImage
from visitcal.measurement.plugins.local_background import LocalBackgroundConfig, flag_names, local_background

P = "base_LocalBackground"
IQR_TO_SIGMA = 0.7413011092528009


def reference(img, mask, x, y, sigma, bad, inner=7.0, outer=15.0, rej=3.0, n_iter=3):
    """The readable spec: annulus by pixel-centre distance, afw MEANCLIP / STDEVCLIP."""
    yy, xx = np.indices(img.shape)
    d2 = (xx - x) ** 2 + (yy - y) ** 2
    sel = (d2 > (inner * sigma) ** 2) & (d2 <= (outer * sigma) ** 2) & ((mask & bad) == 0) & np.isfinite(img)
    v = img[sel].astype(np.float64)
    if v.size == 0:
        return np.nan, np.nan
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    centre, hw = med, rej * IQR_TO_SIGMA * (q3 - q1)
    mean = sd = np.nan
    for _ in range(n_iter):
        w = v[np.abs(v - centre) <= hw]
        if w.size == 0:
            return np.nan, np.nan
        mean, sd = w.mean(), (w.std(ddof=1) if w.size > 1 else np.nan)
        centre, hw = mean, (rej * sd if np.isfinite(sd) else 0.0)
    return mean, sd


def test_matches_numpy_reference():
    rng = np.random.default_rng(1)
    img = rng.normal(100, 5, (150, 160)).astype(np.float32)
    img[rng.random(img.shape) < 0.02] += 500  # outliers to clip
    img[40, 40] = np.nan
    mi = MaskedImage(img, variance=np.ones_like(img))
    bad = mi.mask.get_plane_bitmask("BAD", "SAT", "NO_DATA")
    mi.mask.array[rng.random(img.shape) < 0.05] |= mi.mask.get_plane_bitmask("SAT")
    mi.mask.array[rng.random(img.shape) < 0.05] |= mi.mask.get_plane_bitmask("CR")  # not ignored
    x, y = rng.uniform(-5, 165, 40), rng.uniform(-5, 155, 40)
    sig = rng.uniform(1.0, 3.0, 40)
    out = local_background(mi, x, y, sig)
    for k in range(40):
        m, s = reference(img, mi.mask.array, x[k], y[k], sig[k], bad)
        assert out[f"{P}_instFlux"][k] == pytest.approx(m, rel=1e-12, nan_ok=True)
        assert out[f"{P}_instFluxErr"][k] == pytest.approx(s, rel=1e-10, nan_ok=True)
    assert abs(np.nanmedian(out[f"{P}_instFlux"]) - 100) < 1


def test_flags():
    img = np.ones((60, 60), np.float32)
    mi = MaskedImage(img, variance=np.ones_like(img))
    mi.mask.array[:] = mi.mask.get_plane_bitmask("BAD")
    out = local_background(mi, [30.0, 30.0], [30.0, 30.0], [2.0, np.nan])
    assert list(out[f"{P}_flag"]) == [True, True]
    assert list(out[f"{P}_flag_noGoodPixels"]) == [True, False]
    assert list(out[f"{P}_flag_noPsf"]) == [False, True]
    assert np.isnan(out[f"{P}_instFlux"]).all()
    mi.mask.array[:] = 0
    out = local_background(mi, [30.0, 1e4], [30.0, 30.0], 2.0)
    assert out[f"{P}_instFlux"][0] == 1.0 and out[f"{P}_instFluxErr"][0] == 0.0 and not out[f"{P}_flag"][0]
    assert out[f"{P}_flag_noGoodPixels"][1]
    assert flag_names() == ["flag", "flag_noGoodPixels", "flag_noPsf"]


def test_config_defaults_agree():
    c = _core.LocalBackgroundControl()
    cfg = LocalBackgroundConfig()
    mi = MaskedImage(np.zeros((2, 2), np.float32))
    assert (c.annulus_inner, c.annulus_outer, c.bg_rej, c.bg_iter) == (
        cfg.annulus_inner, cfg.annulus_outer, cfg.bg_rej, cfg.bg_iter)
    assert c.bad_mask == cfg.to_control(mi).bad_mask
    with pytest.raises(ValueError, match="annulus_outer"):
        LocalBackgroundConfig(annulus_outer=1.0)
    with pytest.raises(ValueError, match="psf_sigma"):
        local_background(mi, [1.0, 1.0], [1.0, 1.0], [1.0])


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(x=st.one_of(st.integers(-3, 83).map(float), st.integers(-6, 166).map(lambda v: v / 2),
                   st.floats(-3, 83)),
       y=st.one_of(st.integers(-3, 73).map(float), st.floats(-3, 73)),
       sigma=st.one_of(st.sampled_from([0.5, 1.0, 4.0 / 7.0, 1.5, 2.0]), st.floats(0.3, 3.0)))
def test_annulus_pixels_match_the_reference_on_exact_edges(x, y, sigma):
    # integer and half-integer centres and radii (7 sigma, 15 sigma) that land on pixel centres: the
    # run-based annulus must keep exactly the pixels of the d2 > rin^2 && d2 <= rout^2 test
    rng = np.random.default_rng(7)
    img = rng.normal(0, 1, (70, 80)).astype(np.float32)
    mi = MaskedImage(img, variance=np.ones_like(img))
    out = local_background(mi, [x], [y], [sigma])
    m, s = reference(img, mi.mask.array, x, y, sigma, mi.mask.get_plane_bitmask("BAD", "SAT", "NO_DATA"))
    assert out[f"{P}_instFlux"][0] == pytest.approx(m, rel=1e-12, abs=1e-12, nan_ok=True)
    assert out[f"{P}_instFluxErr"][0] == pytest.approx(s, rel=1e-10, abs=1e-12, nan_ok=True)
