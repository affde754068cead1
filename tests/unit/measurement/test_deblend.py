"""The SDSS-style deblender (lsst-spec §5.6): two-star blends against the truth, flux conservation,
skip / failure flags, and a numpy reference of the template + apportion steps."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from astropy.table import Table
from hypothesis import given, settings
from hypothesis import strategies as st
from visitcal import _core
from visitcal.measurement.deblend import (
    DEBLEND_COLUMNS,
    SourceDeblendConfig,
    SourceDeblendTask,
    deblend_sigma1,
)
from visitcal.detection.detection import SourceDetectionTask
from visitcal.core.footprint import Footprint, HeavyFootprint, make_peaks
from visitcal.core.image import Exposure
from visitcal.psf.models import GaussianPsf
from visitcal.core.table import DetectorVisitIdGenerator

SIGMA = 1.8
FWHM = 2.3548 * SIGMA


def gauss(shape, x, y, flux, sigma=SIGMA):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)


def two_stars(sep_fwhm, ratio, noise, *, shape=(72, 72), flux=2e4, seed=3):
    x1, y1 = 28.3, 35.2
    x2, y2 = x1 + sep_fwhm * FWHM * 0.95, y1 + sep_fwhm * FWHM * 0.3
    img = gauss(shape, x1, y1, flux) + gauss(shape, x2, y2, flux * ratio)
    var = np.full(shape, 25.0, np.float32)
    if noise:
        img = img + np.random.default_rng(seed).normal(0.0, 5.0, shape)
    exp = Exposure.from_arrays(img.astype(np.float32), None, var, psf=GaussianPsf(SIGMA))
    return exp, [(x1, y1, flux), (x2, y2, flux * ratio)]


def detect_and_deblend(exp, config=None, **kw):
    det = SourceDetectionTask().run(exp)
    return det, SourceDeblendTask(config).run(exp, det.sources, det.footprints, **kw)


def child_rows(res):
    return [k for k in range(len(res.sources)) if res.sources["parent"][k] != 0]


def assert_conserved(exp, res, parent_row):
    """Children sum to the image on every pixel some template covers; their union is the parent's
    footprint. (Pixels inside a child's spans where every template is 0 carry 0: unassigned.)"""
    kids = [k for k in child_rows(res) if res.sources["parent"][k] == res.sources["id"][parent_row]]
    total = np.zeros(exp.shape)
    covered = np.zeros(exp.shape, bool)
    assigned = np.zeros(exp.shape, bool)
    for k in kids:
        y, x = res.footprints[k].indices()
        np.add.at(total, (y, x), res.footprints[k].image)
        covered[y, x] = True
        assigned[y, x] |= res.footprints[k].image != 0
    np.testing.assert_allclose(total[assigned], exp.image[assigned], rtol=1e-5, atol=1e-3)
    assert assigned.sum() >= 0.97 * covered.sum()
    _py, _px = res.footprints[parent_row].indices()
    union = Footprint.from_mask(covered)
    assert np.array_equal(res.footprints[parent_row].spans, union.spans)
    return kids


# --- configuration ------------------------------------------------------------------------------

def test_config_defaults_agree_with_control():
    c = _core.DeblendControl()
    cfg = SourceDeblendConfig()
    d = cfg.to_control()
    for name in ("assign_stray_flux", "clip_stray_flux_fraction", "psf_chisq_1", "psf_chisq_2", "psf_chisq_2b",
                 "max_number_of_peaks", "max_footprint_area", "max_footprint_size", "min_footprint_axis_ratio",
                 "tiny_footprint_size", "propagate_all_peaks", "catch_failures", "weight_templates",
                 "remove_degenerate_templates", "max_temp_dot_prod", "median_smooth_template", "edge_handling",
                 "stray_flux_to_point_sources", "stray_flux_rule", "sigma1_bad_bits", "mask_limits"):
        assert getattr(c, name) == getattr(d, name), name
    # lsst-spec §5.6 values
    assert (cfg.edge_handling, cfg.stray_flux_rule, cfg.stray_flux_to_point_sources) == ("ramp", "trim", "necessary")
    assert cfg.max_footprint_area == 10000 and cfg.mask_limits == {"NO_DATA": 0.25}
    assert cfg.mask_planes == ("SAT", "INTRP", "NO_DATA") and cfg.not_deblended_mask == "NOT_DEBLENDED"
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(ValueError):
        SourceDeblendConfig(stray_flux_rule="nope")
    with pytest.raises(ValueError):
        SourceDeblendConfig(not_a_field=1)


def test_sigma1_matches_numpy():
    rng = np.random.default_rng(0)
    var = rng.uniform(1, 5, (40, 30)).astype(np.float32)
    exp = Exposure.from_arrays(np.zeros((40, 30), np.float32), None, var)
    exp.mask.set("SAT", var > 4.0)
    exp.mask.set("BAD", var < 1.5)  # not excluded
    ref = np.sqrt(np.median(var[var <= 4.0]))
    assert deblend_sigma1(exp) == pytest.approx(ref, rel=1e-6)
    fp = Footprint([[3, 2, 20], [4, 0, 9]])
    y, x = fp.indices()
    sel = var[y, x][var[y, x] <= 4.0]
    assert deblend_sigma1(exp, footprint=fp) == pytest.approx(np.sqrt(np.median(sel)), rel=1e-6)
    # the whole-image median on a sample lattice (the task's default sigma1_sample_step = 2)
    for step in (2, 3):
        lat, good = var[::step, ::step], var[::step, ::step] <= 4.0
        assert deblend_sigma1(exp, sample_step=step) == pytest.approx(np.sqrt(np.median(lat[good])), rel=1e-6)
    with pytest.raises(ValueError, match="sample_step"):
        deblend_sigma1(exp, sample_step=0)


@settings(max_examples=30, deadline=None)
@given(ny=st.integers(1, 30), nx=st.integers(1, 30), seed=st.integers(0, 10_000), ties=st.booleans(),
       frac_bad=st.floats(0, 0.9))
def test_sigma1_whole_image_radix_median_matches_numpy(ny, nx, seed, ties, frac_bad):
    # the whole-image path selects the median by radix histograms: exact, odd and even counts, ties,
    # values spanning signs and decades, NaN / masked pixels ignored
    rng = np.random.default_rng(seed)
    var = rng.choice([0.5, 1.0, 1.0000001, 2.0, 4.0], (ny, nx)) if ties else \
        np.exp(rng.normal(0, 3, (ny, nx))) * rng.choice([-1, 1], (ny, nx), p=[0.1, 0.9])
    var = var.astype(np.float32)
    var[rng.random((ny, nx)) < 0.05] = np.nan
    exp = Exposure.from_arrays(np.zeros((ny, nx), np.float32), None, var)
    exp.mask.set("SAT", rng.random((ny, nx)) < frac_bad)
    good = var[~exp.mask.test("SAT") & np.isfinite(var)].astype(np.float64)
    got = deblend_sigma1(exp)
    if good.size == 0:
        assert np.isnan(got)
    else:
        with np.errstate(invalid="ignore"):  # a negative median variance gives NaN, as in C++
            np.testing.assert_equal(got, np.sqrt(np.median(good)))


@pytest.mark.parametrize("kind", ["lognormal", "plateau", "even_ties", "rows_differ", "all_bad_but_few"])
@pytest.mark.parametrize("shape", [(256, 190), (257, 33)])
def test_sigma1_whole_image_large_matches_numpy(kind, shape):
    # the whole-image radix median on larger images: plateaus, ties, nearly all masked, odd / even counts
    rng = np.random.default_rng(len(kind) + shape[0])
    var = np.exp(rng.normal(3, 0.3, shape))
    bad = rng.random(shape) < 0.1
    if kind == "plateau":
        var[rng.random(shape) < 0.7] = 20.0
    elif kind == "even_ties":
        var = rng.choice([1.0, 2.0, 3.0, 4.0], shape)
    elif kind == "rows_differ":  # a block of equal values straddling the median
        var[::3] = np.float32(np.median(var))
    elif kind == "all_bad_but_few":
        bad = rng.random(shape) < 0.995
    var = var.astype(np.float32)
    for drop in (0, 1):  # odd and even counts of good pixels
        b = bad.copy()
        idx = np.flatnonzero(~b.ravel())
        if drop and idx.size:
            b.ravel()[idx[0]] = True
        exp = Exposure.from_arrays(np.zeros(shape, np.float32), None, var)
        exp.mask.set("SAT", b)
        good = var[~b].astype(np.float64)
        np.testing.assert_equal(deblend_sigma1(exp), np.sqrt(np.median(good)))


# --- the acceptance test: two stars ---------------------------------------------------------------

def psf_fit_flux(fp: HeavyFootprint, x, y):
    """Least-squares amplitude of the unit-flux PSF at the true position on the child's pixels."""
    py, px = fp.indices()
    model = gauss((py.max() + 10, px.max() + 10), x, y, 1.0)[py, px]
    return float(np.dot(model, fp.image) / np.dot(model, model))


@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("ratio", [1.0, 3.0])
@pytest.mark.parametrize("sep_fwhm", [2.0, 2.5, 3.0])
def test_two_stars_recover_true_flux(sep_fwhm, ratio, noise):
    exp, truth = two_stars(sep_fwhm, ratio, noise)
    _det, res = detect_and_deblend(exp)
    t = res.sources
    parents = np.flatnonzero((t["parent"] == 0) & (t["deblend_nChild"] > 0))
    assert len(parents) == 1
    kids = assert_conserved(exp, res, parents[0])
    assert len(kids) == 2
    assert t["deblend_nChild"][parents[0]] == 2
    assert not t["deblend_failed"][parents[0]] and not t["deblend_skipped"][parents[0]]
    for k in kids:
        fp = res.footprints[k]
        assert isinstance(fp, HeavyFootprint) and len(fp.peaks) == 1
        px, py = int(fp.peaks["i_x"][0]), int(fp.peaks["i_y"][0])
        x, y, flux = min(truth, key=lambda s: (s[0] - px) ** 2 + (s[1] - py) ** 2)
        assert abs(fp.image.sum() / flux - 1) < 0.02, (fp.image.sum(), flux)
        assert abs(psf_fit_flux(fp, x, y) / flux - 1) < 0.02
        assert (t["deblend_peak_center_x"][k], t["deblend_peak_center_y"][k]) == (px, py)
        assert t["deblend_peakId"][k] == fp.peaks["id"][0]
        assert t["deblend_nPeaks"][k] == 1 and t["deblend_parentNPeaks"][k] == 2
        if t["deblend_deblendedAsPsf"][k]:
            # the PSF fit's flux and centre describe the star too
            assert abs(t["deblend_psf_instFlux"][k] / flux - 1) < 0.05
            assert np.hypot(t["deblend_psfCenter_x"][k] - x, t["deblend_psfCenter_y"][k] - y) < 1.0
        else:
            assert np.isnan(t["deblend_psf_instFlux"][k])


@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("ratio", [1.0, 3.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_stars_at_2_fwhm_random_geometry(seed, ratio, noise):
    """2 FWHM apart at a random position angle with random sub-pixel offsets (neither star on a pixel
    centre): both are deblended as PSF (the position-free fit converges and each neighbour's PSF sits
    at its fitted centre), their PSF centres and fluxes match the truth, and the children's fluxes are
    within 2%."""
    rng = np.random.default_rng(100 + seed)
    shape = (72, 72)
    x1, y1 = 30 + rng.uniform(0.2, 0.8), 34 + rng.uniform(0.2, 0.8)
    pa = rng.uniform(0, np.pi)
    x2, y2 = x1 + 2.0 * FWHM * np.cos(pa), y1 + 2.0 * FWHM * np.sin(pa)
    truth = [(x1, y1, 2e4), (x2, y2, 2e4 * ratio)]
    img = gauss(shape, *truth[0]) + gauss(shape, *truth[1])
    if noise:
        img = img + rng.normal(0.0, 5.0, shape)
    exp = Exposure.from_arrays(img.astype(np.float32), None, np.full(shape, 25.0, np.float32), psf=GaussianPsf(SIGMA))
    _, res = detect_and_deblend(exp)
    t = res.sources
    parents = np.flatnonzero((t["parent"] == 0) & (t["deblend_nChild"] > 0))
    assert len(parents) == 1
    kids = assert_conserved(exp, res, parents[0])
    assert len(kids) == 2
    for k in kids:
        fp = res.footprints[k]
        px, py = int(fp.peaks["i_x"][0]), int(fp.peaks["i_y"][0])
        x, y, flux = min(truth, key=lambda s: (s[0] - px) ** 2 + (s[1] - py) ** 2)
        assert abs(fp.image.sum() / flux - 1) < 0.02, (fp.image.sum(), flux)
        assert abs(psf_fit_flux(fp, x, y) / flux - 1) < 0.02
        assert t["deblend_deblendedAsPsf"][k]
        tol_xy, tol_f = (0.01, 1e-3) if not noise else (0.05, 0.01)
        assert np.hypot(t["deblend_psfCenter_x"][k] - x, t["deblend_psfCenter_y"][k] - y) < tol_xy
        assert t["deblend_psf_instFlux"][k] == pytest.approx(flux, rel=tol_f)


def test_point_sources_are_deblended_as_psf():
    # Stars near pixel centres with noise: the fixed-centre PSF fit passes chi^2/dof < 1.5.
    shape = (72, 72)
    truth = [(28.1, 35.0, 2e4), (38.0, 37.1, 6e4)]
    img = sum(gauss(shape, *s) for s in truth) + np.random.default_rng(9).normal(0, 5.0, shape)
    exp = Exposure.from_arrays(img.astype(np.float32), None, np.full(shape, 25.0, np.float32), psf=GaussianPsf(SIGMA))
    _, res = detect_and_deblend(exp)
    kids = child_rows(res)
    assert all(res.sources["deblend_deblendedAsPsf"][k] for k in kids)
    for k in kids:
        _x, _y, flux = min(truth, key=lambda s: (s[0] - res.sources["deblend_psfCenter_x"][k]) ** 2
                         + (s[1] - res.sources["deblend_psfCenter_y"][k]) ** 2)
        assert res.sources["deblend_psf_instFlux"][k] == pytest.approx(flux, rel=0.01)
        assert abs(res.footprints[k].image.sum() / flux - 1) < 0.02


def test_single_peak_parent_has_no_children():
    img = gauss((40, 40), 20.2, 19.7, 1e4).astype(np.float32)
    exp = Exposure.from_arrays(img, None, np.full((40, 40), 1.0, np.float32), psf=GaussianPsf(SIGMA))
    det, res = detect_and_deblend(exp)
    assert len(res.sources) == len(det.sources) == 1
    assert res.sources["deblend_nChild"][0] == 0 and not res.sources["deblend_skipped"][0]
    assert res.footprints[0] == det.footprints[0]


def built_blend(shape=(60, 60)):
    """Two stars with a hand-made footprint (every pixel above 5 counts) and their two peaks."""
    img = (gauss(shape, 25, 30, 2e4) + gauss(shape, 33, 30, 2e4)).astype(np.float32)
    fp = Footprint.from_mask(img > 5.0)
    fp = Footprint(fp.spans, make_peaks([[25, 30], [33, 30]], [img[30, 25], img[30, 33]], [100, 100], ids=[7, 8]))
    exp = Exposure.from_arrays(img, None, np.full(shape, 4.0, np.float32), psf=GaussianPsf(SIGMA))
    return exp, fp, Table({"id": np.array([11], np.int64), "parent": np.array([0], np.int64)})


def test_too_big_parent_is_skipped_and_masked():
    exp, fp, src = built_blend()
    res = SourceDeblendTask(SourceDeblendConfig(max_footprint_area=50)).run(exp, src, [fp])
    t = res.sources
    assert len(t) == 1 and t["deblend_parentTooBig"][0] and t["deblend_skipped"][0]
    assert t["deblend_nChild"][0] == 0 and not t["deblend_masked"][0]
    y, x = fp.indices()
    assert exp.mask.test("NOT_DEBLENDED")[y, x].all()
    assert exp.mask.test("NOT_DEBLENDED").sum() == fp.area
    b = fp.bbox
    assert t["deblend_peak_center_x"][0] == b.min_x + b.width // 2


def test_masked_parent_is_skipped():
    exp, fp, src = built_blend()
    y, x = fp.indices()
    nodata = np.zeros(exp.shape, bool)
    nodata[y[: int(0.3 * fp.area)], x[: int(0.3 * fp.area)]] = True
    exp.mask.set("NO_DATA", nodata)
    res = SourceDeblendTask().run(exp, src, [fp])
    t = res.sources
    assert t["deblend_masked"][0] and t["deblend_skipped"][0] and not t["deblend_parentTooBig"][0]
    assert exp.mask.test("NOT_DEBLENDED")[y, x].all()
    # 20% NO_DATA is under the 0.25 limit: deblended
    exp2, fp2, src2 = built_blend()
    nodata[:] = False
    nodata[y[: int(0.2 * fp.area)], x[: int(0.2 * fp.area)]] = True
    exp2.mask.set("NO_DATA", nodata)
    assert SourceDeblendTask().run(exp2, src2, [fp2]).sources["deblend_nChild"][0] == 2


def test_nan_pixel_flags_failed_without_raising():
    exp, fp, src = built_blend()
    exp.image[30, 29] = np.nan
    res = SourceDeblendTask().run(exp, src, [fp])
    assert res.sources["deblend_failed"][0] and res.sources["deblend_nChild"][0] == 0
    with pytest.raises(ValueError, match="non-finite"):
        SourceDeblendTask(SourceDeblendConfig(catch_failures=False)).run(exp, src, [fp])


@pytest.mark.parametrize("spans", [np.zeros((0, 3), np.int32), np.array([[30, 55, 70]], np.int32)])
def test_degenerate_footprints_flag_failed(spans):
    exp, fp, src = built_blend()
    bad = Footprint._from_normalized(spans, fp.peaks.copy())  # empty / reaching off the image
    res = SourceDeblendTask().run(exp, src, [bad])
    assert res.sources["deblend_failed"][0] and res.sources["deblend_nChild"][0] == 0


def test_peaks_outside_footprint_give_no_crash():
    exp, fp, src = built_blend()
    peaks = make_peaks([[25, 30], [2, 2]], [1.0, 1.0], [5.0, 5.0])
    res = SourceDeblendTask().run(exp, src, [Footprint(fp.spans, peaks)])
    t = res.sources
    assert not t["deblend_failed"][0]
    assert t["deblend_nChild"][0] == 1  # the off-footprint peak gets no template
    assert t["deblend_skipped"][0]      # LSST: the last peak produced no child


def test_negative_and_child_rows_are_not_deblended():
    exp, fp, _ = built_blend()
    src = Table({"id": np.array([1, 2], np.int64), "parent": np.array([0, 0], np.int64),
                 "is_negative": np.array([True, False])})
    res = SourceDeblendTask().run(exp, src, [fp, fp])
    assert list(res.sources["deblend_nChild"][:2]) == [0, 2]
    assert list(res.sources["parent"][2:]) == [2, 2]


def test_ids_and_columns():
    exp, fp, src = built_blend()
    gen = DetectorVisitIdGenerator(visit=12, detector=3)
    src["id"] = gen.source_ids(1)
    res = SourceDeblendTask().run(exp, src, [fp], id_generator=gen)
    t = res.sources
    assert list(t["id"]) == list(gen.source_ids(3))
    assert set(DEBLEND_COLUMNS) <= set(t.colnames)
    res2 = SourceDeblendTask().run(exp, src, [fp], id_generator=lambda n: np.arange(100, 100 + n))
    assert list(res2.sources["id"][1:]) == [100, 101]
    res3 = SourceDeblendTask().run(exp, src, [fp])
    assert list(res3.sources["id"][1:]) == [src["id"][0] + 1, src["id"][0] + 2]
    assert len(res3.footprints) == len(res3.sources)
    with pytest.raises(ValueError, match="footprints"):
        SourceDeblendTask().run(exp, src, [fp, fp])
    with pytest.raises(ValueError, match="parent"):
        SourceDeblendTask().run(exp, Table({"id": [1]}), [fp])


def test_deterministic():
    exp, _ = two_stars(2.0, 3.0, True)
    _, a = detect_and_deblend(exp.copy())
    _, b = detect_and_deblend(exp.copy())
    assert all(np.array_equal(a.sources[c], b.sources[c], equal_nan=a.sources[c].dtype.kind == "f")
               for c in a.sources.colnames)
    assert all(fa == fb for fa, fb in zip(a.footprints, b.footprints))


def test_batch_built_footprints_equal_checked_construction():
    # the children are built in one batch from the flat C++ output (HeavyFootprint._batch_from_flat):
    # each equals the footprint built and validated one by one, owns its mask planes, and the parents'
    # footprints are normalized Footprints with the input peaks
    exp, _ = two_stars(2.0, 3.0, True)
    exp.mask.array[30:40, 30:33] |= exp.mask.get_plane_bitmask("BAD")
    det, res = detect_and_deblend(exp)
    kids = child_rows(res)
    assert len(kids) == 2
    for k in kids:
        hf = res.footprints[k]
        ref = HeavyFootprint.from_masked_image(Footprint(hf.spans, hf.peaks), exp.masked_image)
        ref = HeavyFootprint(ref, hf.image, ref.mask, ref.variance, exp.mask.planes)
        assert type(hf) is HeavyFootprint and hf == ref
        assert hf.image.dtype == np.float32 and hf.mask.dtype == np.int32 and hf.variance.dtype == np.float32
        assert hf.mask.any() and hf.planes == exp.mask.planes and hf.planes is not exp.mask.planes
        assert not hf.spans.flags.writeable
        assert pickle.loads(pickle.dumps(hf)) == hf
    res.footprints[kids[0]].planes.add_plane("EXTRA")
    assert "EXTRA" not in res.footprints[kids[1]].planes and "EXTRA" not in exp.mask.planes
    for k in range(len(det.sources)):
        fp = res.footprints[k]
        assert type(fp) is Footprint and fp == Footprint(fp.spans, det.footprints[k].peaks)
        assert np.array_equal(fp.peaks, det.footprints[k].peaks) and not fp.spans.flags.writeable
    # a FootprintSet and a list of footprints give the same result
    from visitcal.core.footprint import FootprintSet
    from visitcal.core.geom import Box2I
    fs = FootprintSet.from_footprints(det.footprints, Box2I.from_shape(exp.shape))
    res2 = SourceDeblendTask().run(exp, det.sources, fs)
    assert all(a == b for a, b in zip(res.footprints, res2.footprints))
    assert all(np.array_equal(res.sources[c], res2.sources[c], equal_nan=res.sources[c].dtype.kind == "f")
               for c in res.sources.colnames)


def test_no_sources_and_no_children():
    exp, fp, _ = built_blend()
    empty = Table({"id": np.zeros(0, np.int64), "parent": np.zeros(0, np.int64)})
    res = SourceDeblendTask().run(exp, empty, [])
    assert len(res.sources) == 0 and res.footprints == []
    single = Footprint(fp.spans, fp.peaks[:1])
    res = SourceDeblendTask().run(exp, Table({"id": [5], "parent": [0]}), [single])
    assert len(res.sources) == 1 and len(res.footprints) == 1 and res.footprints[0] == single


@pytest.mark.parametrize("rule", ["r-to-peak", "r-to-footprint", "nearest-footprint"])
def test_assigned_stray_flux_conserves_the_whole_parent(rule):
    exp, _truth = two_stars(2.0, 1.0, True, seed=5)
    det = SourceDetectionTask().run(exp)
    cfg = SourceDeblendConfig(stray_flux_rule=rule, edge_handling="clip")
    res = SourceDeblendTask(cfg).run(exp, det.sources, det.footprints)
    p = int(np.flatnonzero(res.sources["deblend_nChild"] > 0)[0])
    assert_conserved(exp, res, p)
    # with assignment every parent pixel is covered, so the children sum to the parent's whole flux
    y, x = det.footprints[p].indices()
    kid_sum = sum(res.footprints[k].image.sum() for k in child_rows(res))
    assert kid_sum == pytest.approx(exp.image[y, x].sum(), rel=1e-5)


def test_weight_and_degenerate_options_run():
    exp, _truth = two_stars(2.5, 1.0, False)
    for cfg in (SourceDeblendConfig(weight_templates=True), SourceDeblendConfig(remove_degenerate_templates=True)):
        _, res = detect_and_deblend(exp.copy(), cfg)
        kids = child_rows(res)
        assert len(kids) == 2
        for k in kids:
            assert abs(res.footprints[k].image.sum() / 2e4 - 1) < 0.02


# --- numpy reference of the template + apportion steps --------------------------------------------

def reference_children(img, member, peaks):
    """Symmetric templates, monotonic (ring by ring, each pixel capped by the pixel one ring in along
    the line to the peak), clipped to non-zero run ends, then I T_i / sum T. No PSF fit, no ramp,
    no median (the config of `test_reference_agrees`). Returns one {(y, x): value} per peak."""
    ys, xs = np.nonzero(member)
    bx0, bx1, by0, by1 = xs.min(), xs.max(), ys.min(), ys.max()
    temps = []
    for cx, cy in peaks:
        x0, x1 = max(bx0, 2 * cx - bx1), min(bx1, 2 * cx - bx0)
        y0, y1 = max(by0, 2 * cy - by1), min(by1, 2 * cy - by0)
        t = np.zeros_like(img, dtype=np.float64)
        m = np.zeros_like(member)
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                if member[y, x] and member[2 * cy - y, 2 * cx - x]:
                    m[y, x] = True
                    t[y, x] = max(0.0, min(img[y, x], img[2 * cy - y, 2 * cx - x]))
        t = t.astype(np.float32)
        for r in range(1, max(cx - x0, x1 - cx, cy - y0, y1 - cy) + 1):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if max(abs(dx), abs(dy)) != r or not (x0 <= cx + dx <= x1 and y0 <= cy + dy <= y1):
                        continue
                    f = (r - 1) / r
                    ix = cx + int(np.sign(dx * f) * np.floor(abs(dx * f) + 0.5))
                    iy = cy + int(np.sign(dy * f) * np.floor(abs(dy * f) + 0.5))
                    if x0 <= ix <= x1 and y0 <= iy <= y1:
                        t[cy + dy, cx + dx] = min(t[cy + dy, cx + dx], t[iy, ix])
        for y in range(img.shape[0]):
            row = np.flatnonzero(m[y])
            if row.size == 0:
                continue
            runs = np.split(row, np.flatnonzero(np.diff(row) > 1) + 1)
            for run in runs:
                nz = run[t[y, run] != 0]
                m[y, run] = False
                if nz.size:
                    m[y, nz[0]:nz[-1] + 1] = True
        temps.append((t, m))
    total = sum(np.where(m, t, 0) for t, m in temps)
    out = []
    for t, m in temps:
        yy, xx = np.nonzero(m)
        out.append({(y, x): (img[y, x] * t[y, x] / total[y, x] if total[y, x] > 0 else 0.0) for y, x in zip(yy, xx)})
    return out


@settings(max_examples=30, deadline=None)
@given(sep=st.integers(4, 9), dy=st.integers(-3, 3), ratio=st.floats(0.3, 3.0), seed=st.integers(0, 1000))
def test_reference_agrees(sep, dy, ratio, seed):
    shape = (40, 44)
    rng = np.random.default_rng(seed)
    c1, c2 = (15, 20), (15 + sep, 20 + dy)
    img = (gauss(shape, *c1, 5e3, 2.5) + gauss(shape, *c2, 5e3 * ratio, 2.5) + rng.normal(0, 1.0, shape)).astype(np.float32)
    member = img > 4.0
    from scipy import ndimage
    lab, _ = ndimage.label(member, np.ones((3, 3)))
    member = lab == lab[c1[1], c1[0]]
    if not member[c2[1], c2[0]]:
        return
    fp = Footprint(Footprint.from_mask(member).spans, make_peaks([c1, c2], [1.0, 1.0], [1.0, 1.0]))
    exp = Exposure.from_arrays(img, None, np.ones(shape, np.float32), psf=GaussianPsf(2.5))
    cfg = SourceDeblendConfig(edge_handling="clip", median_smooth_template=False, psf_chisq_1=1e-12,
                              psf_chisq_2=1e-12, psf_chisq_2b=1e-12)
    res = SourceDeblendTask(cfg).run(exp, Table({"id": [1], "parent": [0]}), [fp])
    ref = reference_children(img, member, [c1, c2])
    kids = child_rows(res)
    got = {int(res.sources["deblend_peak_center_x"][k]): res.footprints[k] for k in kids}
    for (cx, _), r in zip([c1, c2], ref):
        if not any(v != 0 for v in r.values()):
            assert cx not in got
            continue
        hf = got[cx]
        y, x = hf.indices()
        assert set(zip(y.tolist(), x.tolist())) == set(r)
        np.testing.assert_allclose(hf.image, [r[(a, b)] for a, b in zip(y, x)], rtol=1e-4, atol=1e-3)


def test_sigma1_of_a_footprint_off_the_image_uses_the_pixels_on_it():
    """Spans reaching past the image (and an image with an origin) count only their pixels on it, NaN variances
    and SAT pixels left out: the exact median (the sqrt of float32 values, as numpy's median of them)."""
    rng = np.random.default_rng(3)
    var = rng.uniform(1, 5, (40, 30)).astype(np.float32)
    var[10, 5] = np.nan
    exp = Exposure.from_arrays(np.zeros((40, 30), np.float32), None, var, xy0=(100, 200))
    exp.mask.set("SAT", var > 4.5)
    fp = Footprint([[199, 90, 140], [205, 95, 110], [210, 120, 150], [239, 129, 129], [240, 100, 120]])
    y, x = fp.indices()
    on = (y >= 200) & (y < 240) & (x >= 100) & (x < 130)
    vals = var[y[on] - 200, x[on] - 100]
    vals = vals[np.isfinite(vals) & (vals <= 4.5)]
    assert vals.size > 10
    assert deblend_sigma1(exp, footprint=fp) == pytest.approx(float(np.sqrt(np.median(vals))), rel=1e-7)
