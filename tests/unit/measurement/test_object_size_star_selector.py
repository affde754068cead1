"""ObjectSizeStarSelectorTask on a synthetic catalog: a tight stellar locus plus larger galaxies."""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from visitcal.measurement.object_size_star_selector import (ObjectSizeStarSelectorConfig, ObjectSizeStarSelectorTask, kmeans_1d,
                                                        smallest_group)


def _catalog(seed=5):
    rng = np.random.default_rng(seed)
    n_star, n_gal = 120, 300
    w_star = 1.8 * (1 + 0.01 * rng.standard_normal(n_star))          # PSF sigma 1.8 px, 1% scatter
    w_gal = np.sqrt(1.8**2 + rng.uniform(0.8, 4.0, n_gal) ** 2)          # >= 11% larger than the PSF
    w = np.concatenate([w_star, w_gal])
    n = w.size
    t = Table({"base_SdssShape_xx": w**2, "base_SdssShape_yy": w**2, "base_SdssShape_flag": np.zeros(n, bool),
               "base_GaussianFlux_instFlux": rng.uniform(2e4, 1e6, n),
               "base_GaussianFlux_instFluxErr": np.full(n, 100.0)})
    t["base_PsfFlux_instFlux"] = t["base_GaussianFlux_instFlux"].copy()  # the default selection flux (LSST's)
    t["base_PsfFlux_instFluxErr"] = t["base_GaussianFlux_instFluxErr"].copy()
    for f in ObjectSizeStarSelectorConfig().bad_flags:
        t[f] = np.zeros(n, bool)
    t.meta["slots"] = {"Shape": "base_SdssShape"}
    is_star = np.arange(n) < n_star
    return t, is_star


def test_selects_the_stellar_locus():
    t, is_star = _catalog()
    t["base_PsfFlux_instFlux"][0] = 4e3                                 # S/N 40: below LSST's default 50
    t["base_PixelFlags_flag_saturatedCenter"][1] = True
    t["base_SdssShape_flag"][2] = True
    r = ObjectSizeStarSelectorTask().run(t)
    sel = r.selected
    assert not sel[:3].any()
    assert (sel & is_star).sum() >= 0.95 * 117 and not (sel & ~is_star).any()
    assert abs(r.locus_center - 1.8) < 0.01


def test_signal_to_noise_limit_and_empty():
    t, is_star = _catalog()
    cfg = ObjectSizeStarSelectorConfig(do_flux_limit=False, do_signal_to_noise_limit=True, signal_to_noise_min=1e3)
    t["base_PsfFlux_instFlux"][:10] = 5e4  # S/N 500
    r = ObjectSizeStarSelectorTask(cfg).run(t)
    assert not r.selected[:10].any() and r.selected[10:120].sum() > 100
    t["base_PixelFlags_flag_edge"][:] = True
    r = ObjectSizeStarSelectorTask().run(t)
    assert not r.selected.any() and np.isnan(r.locus_center)


def test_kmeans_is_deterministic_and_sorted():
    v = np.array([1.0, 1.01, 0.99, 2.0, 2.1, 3.5, 3.6, 5.0])
    labels, centres = kmeans_1d(v, 4)
    assert np.all(np.diff(centres) > 0)
    assert set(labels[:3]) == {0} and not (labels[3:] == 0).any()


def _faint_catalog(seed=3):
    """A faint field as the u band gives it: 10 stars (width 2.0 px, 5% scatter: S/N ~10-20 moments) among 80
    galaxies of width 2.2-4 px, whose bulk (~2.7 px) is tighter than the stars are numerous."""
    rng = np.random.default_rng(seed)
    w_star = 2.0 * (1 + 0.05 * rng.standard_normal(10))
    w_gal = np.sqrt(2.0**2 + rng.gamma(4.0, 0.35, 80) ** 2)
    w = np.concatenate([w_star, np.maximum(w_gal, 2.2)])
    n = w.size
    t = Table({"base_SdssShape_xx": w**2, "base_SdssShape_yy": w**2, "base_SdssShape_flag": np.zeros(n, bool),
               "base_PsfFlux_instFlux": np.full(n, 2000.0), "base_PsfFlux_instFluxErr": np.full(n, 100.0)})
    for f in ObjectSizeStarSelectorConfig().bad_flags:
        t[f] = np.zeros(n, bool)
    t.meta["slots"] = {"Shape": "base_SdssShape"}
    return t, np.arange(n) < 10


def test_smallest_group_finds_the_stars_where_galaxies_outnumber_them():
    """k-means' smallest cluster is the galaxies' bulk on such a field (LSST's locus picks galaxies); the
    smallest tight group is the stars."""
    t, is_star = _faint_catalog()
    base = dict(do_flux_limit=False, do_signal_to_noise_limit=True, signal_to_noise_min=10.0)
    km = ObjectSizeStarSelectorTask(ObjectSizeStarSelectorConfig(**base)).run(t)
    assert (km.selected & ~is_star).sum() > (km.selected & is_star).sum()  # the failure this option answers
    cfg = ObjectSizeStarSelectorConfig(**base, locus="smallest_group", group_half_width_fraction=0.08,
                                       width_sigma_floor_fraction=0.05)
    r = ObjectSizeStarSelectorTask(cfg).run(t)
    assert (r.selected & is_star).sum() >= 7 and (r.selected & ~is_star).sum() <= 1  # a 2-sigma locus: 7 of 10
    assert abs(r.locus_center - 2.0) < 0.06


def test_smallest_group_edges():
    v = np.array([3.0, 1.0, 1.02, 5.0, 1.05, 2.0])
    assert smallest_group(v, 0.05, 3).tolist() == [False, True, True, False, True, False]
    assert not smallest_group(v, 0.001, 2).any()  # no two within 0.2%
    assert smallest_group(v, 0.005, 1).tolist() == [False, True, False, False, False, False]
    assert smallest_group(np.zeros(0), 0.05, 3).size == 0


def test_smallest_group_is_sought_among_the_precise_widths():
    """Adaptive-moment widths at S/N ~10 scatter and come out low: 30 such stars (width 2.0 x (0.92 +- 0.06))
    below 8 stars of S/N 50 (2.0 +- 1%) and 60 galaxies (>= 25% wider). Among all widths the smallest group is the faint stars'
    low tail; among those above ``group_min_snr`` (20) it is the stars, and the faint ones near it join."""
    rng = np.random.default_rng(11)
    w = np.concatenate([2.0 * (1 + 0.01 * rng.standard_normal(8)), 2.0 * (0.92 + 0.06 * rng.standard_normal(30)),
                        np.sqrt(2.0**2 + rng.uniform(1.5, 3.0, 60) ** 2)])
    snr = np.concatenate([np.full(8, 50.0), np.full(30, 10.5), rng.uniform(10.5, 60.0, 60)])
    n = w.size
    t = Table({"base_SdssShape_xx": w**2, "base_SdssShape_yy": w**2, "base_SdssShape_flag": np.zeros(n, bool),
               "base_PsfFlux_instFlux": 100.0 * snr, "base_PsfFlux_instFluxErr": np.full(n, 100.0)})
    for f in ObjectSizeStarSelectorConfig().bad_flags:
        t[f] = np.zeros(n, bool)
    t.meta["slots"] = {"Shape": "base_SdssShape"}
    base = dict(do_flux_limit=False, do_signal_to_noise_limit=True, signal_to_noise_min=10.0, locus="smallest_group",
                group_half_width_fraction=0.08, width_sigma_floor_fraction=0.05)
    r = ObjectSizeStarSelectorTask(ObjectSizeStarSelectorConfig(**base)).run(t)
    assert r.selected[:8].all() and not r.selected[38:].any() and r.selected[8:38].sum() >= 15
    tail = ObjectSizeStarSelectorTask(ObjectSizeStarSelectorConfig(**base, group_min_snr=None)).run(t)
    assert tail.locus_center < r.locus_center - 0.05  # without the anchor: the low tail


def test_defaults_are_lsst_since_september_2023():
    cfg = ObjectSizeStarSelectorConfig()
    assert not cfg.do_flux_limit and cfg.do_signal_to_noise_limit and cfg.signal_to_noise_min == 50.0
    assert cfg.width_min == 0.9 and cfg.source_flux_field == "base_PsfFlux_instFlux"
    t, is_star = _catalog()
    t["base_SdssShape_xx"][3] = t["base_SdssShape_yy"][3] = 0.8 ** 2   # a cosmic ray: narrower than 0.9 px
    assert not ObjectSizeStarSelectorTask().run(t).selected[3]


def test_flux_limit_the_defaults_before_september_2023():
    """LSST's older cuts, set explicitly (visitcal's defaults until issue 24): a GaussianFlux limit, no S/N limit."""
    t, is_star = _catalog()
    t["base_GaussianFlux_instFlux"][0] = 1e4                            # below flux_min 12500
    t["base_PsfFlux_instFlux"][1] = 4e3                                 # S/N 40: no S/N limit here
    cfg = ObjectSizeStarSelectorConfig(do_flux_limit=True, flux_min=12500.0, do_signal_to_noise_limit=False,
                                       width_min=0.0, source_flux_field="base_GaussianFlux_instFlux")
    r = ObjectSizeStarSelectorTask(cfg).run(t)
    assert not r.selected[0] and r.selected[1]
    assert (r.selected & is_star).sum() >= 0.95 * 119 and not (r.selected & ~is_star).any()
