"""The aperture-excess cut (visitcal.measurement.aperture_excess) on synthetic catalogs whose truth is known.

The catalog: stars of known flux F over a 2048 x 2048 detector, a PSF flux with relative error e_psf and a 12-px
aperture flux ``EE(x, y) F (1 + c) (1 + noise)``: EE a smooth field (the aperture's encircled energy, the ratio's
model), c the neighbour light of the contaminated stars (0 for the clean ones), the aperture's errors consistent with
its noise. The ratio's noise is then exactly ``sqrt(e_ap^2 - e_psf^2)`` (the aperture flux draws the PSF flux's noise
plus an independent part), as the module assumes, so ``z`` of the clean stars is a unit normal.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from visitcal.core.chebyshev import ChebyshevBoundedField
from visitcal.core.geom import Box2I
from visitcal.measurement.aperture_excess import ApertureExcessConfig, aperture_excess, apply_aperture_excess_cut

BOX = Box2I(0, 0, 2047, 2047)
EE = np.array([[0.98, 0.002, -0.001], [0.0015, 0.0005, 0.0], [-0.001, 0.0, 0.0]])  # [j, i], order 2


def _catalog(n=600, contaminated=0.2, seed=5):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 2047, n), rng.uniform(0, 2047, n)
    flux = 10 ** rng.uniform(4.0, 6.0, n)
    e_psf = 2.0 / np.sqrt(flux)  # 2% .. 0.2%
    e_ind = 1.5 * e_psf  # the aperture's own, independent part
    psf = flux * (1 + e_psf * rng.standard_normal(n))
    c = np.zeros(n)
    bad = rng.random(n) < contaminated
    c[bad] = rng.uniform(0.01, 0.1, bad.sum())  # 1-10% of the star's light from neighbours
    ee = ChebyshevBoundedField(BOX, EE).evaluate(x, y)
    ap = ee * (psf + flux * c + flux * e_ind * rng.standard_normal(n))
    t = Table({"base_SdssCentroid_x": x, "base_SdssCentroid_y": y,
               "base_PsfFlux_instFlux": psf, "base_PsfFlux_instFluxErr": flux * e_psf,
               "base_CircularApertureFlux_12_0_instFlux": ap,
               "base_CircularApertureFlux_12_0_instFluxErr": ee * flux * np.hypot(e_psf, e_ind)})
    t.meta["slots"] = {"Centroid": "base_SdssCentroid"}
    return t, c, ee


def test_clean_stars_are_unit_normal_and_contaminated_ones_stand_out():
    t, c, _ = _catalog()
    res = aperture_excess(t, np.ones(len(t), bool), ApertureExcessConfig(floor=0.0), bbox=BOX)
    assert res.model_order == 2
    z = res.z
    clean = c == 0
    # a unit normal: robust width and median of 480 draws within a few of their standard errors
    width = 1.4826 * np.median(np.abs(z[clean] - np.median(z[clean])))
    assert abs(width - 1.0) < 0.12 and abs(np.median(z[clean])) < 0.15
    # the expected significance of each contaminated star is c / sigma_ratio
    sigma_ratio = np.sqrt((t["base_CircularApertureFlux_12_0_instFluxErr"] / t["base_CircularApertureFlux_12_0_instFlux"])
                          ** 2 - (t["base_PsfFlux_instFluxErr"] / t["base_PsfFlux_instFlux"]) ** 2)
    strong = (c > 0) & (c / sigma_ratio > 8)
    assert strong.sum() > 30 and np.all(z[strong] > 3)


def test_the_cut_removes_the_bias_of_the_contaminated_stars():
    t, c, ee = _catalog(seed=7)
    kept, info = apply_aperture_excess_cut(t, np.ones(len(t), bool), ApertureExcessConfig(), bbox=BOX)
    ratio = np.asarray(t["base_CircularApertureFlux_12_0_instFlux"]) / np.asarray(t["base_PsfFlux_instFlux"]) / ee
    w = 1.0 / (np.asarray(t["base_PsfFlux_instFluxErr"]) / np.asarray(t["base_PsfFlux_instFlux"])) ** 2
    before = np.sum(w * ratio) / np.sum(w) - 1
    after = np.sum(w[kept] * ratio[kept]) / np.sum(w[kept]) - 1
    # the inverse-variance mean of the ratio (as a zero point weighs its stars): biased by the neighbour light
    # (~1% here) before, within its noise (~2e-4) of the truth after
    assert before > 5e-3
    assert abs(after) < 1e-3
    assert info["n_in"] == len(t) and info["n_cut"] == int((~kept).sum()) and info["skipped"] is None
    clean = c == 0
    assert np.mean(~kept[clean]) < 0.01  # one-sided 3 sigma: ~0.1% of the clean stars


def test_cut_off_fallback_and_unmeasurable_rows():
    t, c, _ = _catalog(n=40, contaminated=0.5, seed=11)
    sel = np.ones(len(t), bool)
    kept, info = apply_aperture_excess_cut(t, sel, ApertureExcessConfig(do_cut=False))
    assert np.array_equal(kept, sel) and info["n_cut"] == 0 and info["skipped"] is None
    # too few left: the cut is skipped, and says why
    kept, info = apply_aperture_excess_cut(t, sel, ApertureExcessConfig(min_stars=40))
    assert np.array_equal(kept, sel) and "fewer than min_stars = 40" in info["skipped"]
    # rows without a measurable ratio are left to the other criteria
    t["base_PsfFlux_instFlux"][0] = np.nan
    t["base_CircularApertureFlux_12_0_instFlux"][1] = -5.0
    res = aperture_excess(t, sel)
    assert np.isnan(res.z[:2]).all() and np.isfinite(res.z[2:]).all()
    kept, _ = apply_aperture_excess_cut(t, sel)
    assert kept[0] and kept[1]
    # two stars, one measurable: no model
    kept, info = apply_aperture_excess_cut(t, np.isin(np.arange(len(t)), [0, 2]),
                                           ApertureExcessConfig(min_reference_stars=2))
    assert "fewer than 2" in info["skipped"] and not info["too_few_left"]
    # a sparse selection (fewer than min_reference_stars, 20): not cut, not a fallback
    kept, info = apply_aperture_excess_cut(t, np.arange(len(t)) < 19)
    assert np.array_equal(kept, np.arange(len(t)) < 19) and "fewer than min_reference_stars = 20" in info["skipped"]
    assert not info["too_few_left"]


def test_clear_errors():
    t, _, _ = _catalog(n=10)
    with pytest.raises(ValueError, match="reference must be a boolean array"):
        aperture_excess(t, np.ones(3, bool))
    del t["base_CircularApertureFlux_12_0_instFluxErr"]
    with pytest.raises(KeyError, match="base_CircularApertureFlux_12_0_instFluxErr"):
        aperture_excess(t, np.ones(len(t), bool))
