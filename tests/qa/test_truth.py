"""Truth mode of ``visitcal qa`` (`visitcal.qa.truth`) on the small processed simulated repository: every figure
of the section against an independent computation written here (astropy's SkyCoord separations, numpy's
encircled energy of the true PSF's kernel, brute-force nearest neighbours and PSF-overlap sums, the moments of
the true PSF), and a repository without truth giving a clear message."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("galsim", reason="the truth needs GalSim (pip install 'visitcal[sim]')")

from astropy.coordinates import SkyCoord  # noqa: E402
from visitcal.io import read_catalog  # noqa: E402
from visitcal.pipeline.repository import Repository  # noqa: E402
from visitcal.qa import truth  # noqa: E402
from visitcal.qa.figures import FigureWriter  # noqa: E402
from visitcal.qa.metrics import QaConfig, grade, metric_spec  # noqa: E402
from visitcal.qa.products import VisitProducts, repository_visits  # noqa: E402
from visitcal.sim import SimRepository  # noqa: E402
from visitcal.tasks.update_visit_summary import calibrations_for  # noqa: E402

from .conftest import copy_repo  # noqa: E402


@pytest.fixture(scope="module")
def built(processed_repo, tmp_path_factory):
    """The truth section of the first visit: (products, section, {(name, detector): value})."""
    repo = Repository(processed_repo)
    visit, detectors = next(iter(repository_visits(repo).items()))
    products = VisitProducts(repo, visit, detectors)
    out = tmp_path_factory.mktemp("truth_report")
    section = truth.build(products, QaConfig(), FigureWriter(out / "figures", out))
    values = {(m.name, m.detector): m.value for m in section.metrics}
    return products, section, values


@pytest.fixture(scope="module")
def sim(processed_repo):
    return SimRepository(processed_repo)


def test_every_metric_is_reported_per_detector_and_per_visit(built):
    products, section, values = built
    assert section.key == "truth"
    names = [n for n, *_ in truth._DETECTOR_SPECS]
    for d in products.detectors:
        for n in names:
            assert (n, d) in values
            assert metric_spec(n).section == "truth" and metric_spec(n).scope == "detector"
        # the figures that every detector of this repository can measure are finite
        for n in ("truthWcsRms", "truthWcsPreliminaryRms", "truthZeroPointOffset", "truthPsfFluxBias",
                  "nTruthPhotometry", "nTruthPsfReserved", "truthCompletenessStarsBright", "truthCompleteness50Mag"):
            assert math.isfinite(values[n, d]), (n, d)
    for n in names:
        assert (n + "Visit", None) in values and metric_spec(n + "Visit").scope == "visit"
    # one table row per detector and one for the visit, with the status; four figures; a note per figure kind
    table = section.tables[0]
    assert [r[0] for r in table.rows] == [str(d) for d in products.detectors] + ["visit"]
    assert all(r[1] in ("ok", "degraded") for r in table.rows[:-1])
    assert sorted(f.path.rsplit("/", 1)[-1] for f in section.figures) == [
        "truth_completeness.png", "truth_photometry.png", "truth_psf_errors.png", "truth_wcs_quiver.png"]
    assert len(section.notes) == len(truth.NOTES), section.notes


def _separations_mas(wcs_a, wcs_b, x, y):
    ra1, dec1 = wcs_a.all_pix2world(x, y, 0)  # pixel centres at integers: origin 0
    ra2, dec2 = wcs_b.all_pix2world(x, y, 0)
    return SkyCoord(ra1, dec1, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).to_value("mas")


def test_wcs_against_astropy_separations_on_our_grid(built, sim):
    products, _, values = built
    v = products.visit
    sq = []
    for d in products.detectors:
        bbox = sim.camera[d].detector.bbox
        gx, gy = np.meshgrid(np.linspace(bbox.min_x, bbox.max_x, 21), np.linspace(bbox.min_y, bbox.max_y, 21))
        final = calibrations_for(products.visit_summary, d).wcs
        sep = _separations_mas(final, sim.true_wcs(v, d), gx.ravel(), gy.ravel())
        # Vincenty (astropy) against haversine: the same angles to far better than 1e-6
        assert values["truthWcsRms", d] == pytest.approx(np.sqrt(np.mean(sep**2)), rel=1e-6)
        assert values["truthWcsMax", d] == pytest.approx(sep.max(), rel=1e-6)
        prelim = products.exposure("preliminary_visit_image", d).wcs
        psep = _separations_mas(prelim, sim.true_wcs(v, d), gx.ravel(), gy.ravel())
        assert values["truthWcsPreliminaryRms", d] == pytest.approx(np.sqrt(np.mean(psep**2)), rel=1e-6)
        assert 0 < values["truthWcsRms", d] < 10.0  # the chain's WCS is good to a few mas here
        sq.append(sep**2)
    assert values["truthWcsRmsVisit", None] == pytest.approx(np.sqrt(np.mean(np.concatenate(sq))), rel=1e-6)


def test_zero_point_against_the_true_calibration_and_numpy_encircled_energy(built, sim):
    products, _, values = built
    v = products.visit
    offsets = []
    for d in products.detectors:
        bbox = sim.camera[d].detector.bbox
        cx, cy = bbox.center
        kernel = np.asarray(sim.true_psf(v, d).compute_kernel_image(cx, cy, 101), float)
        r = np.hypot(*np.meshgrid(np.arange(101) - 50, np.arange(101) - 50))
        ee = kernel[r <= 12.0].sum() / kernel.sum()
        true_zp = 2.5 * np.log10(sim.true_photo_calib(v, d).instflux_at_zero_magnitude * ee)
        zp = 2.5 * np.log10(calibrations_for(products.visit_summary, d).photo_calib.instflux_at_zero_magnitude)
        assert values["truthZeroPointOffset", d] == pytest.approx(1000 * (zp - true_zp), rel=1e-9, abs=1e-9)
        prelim = products.exposure("preliminary_visit_image", d).photo_calib
        assert values["truthZeroPointOffsetPreliminary", d] == pytest.approx(
            1000 * (2.5 * np.log10(prelim.instflux_at_zero_magnitude) - true_zp), rel=1e-9, abs=1e-9)
        assert abs(values["truthZeroPointOffset", d]) < 30.0
        offsets.append(values["truthZeroPointOffset", d])
    assert values["truthZeroPointOffsetVisit", None] == offsets[int(np.argmax(np.abs(offsets)))]


def test_psf_errors_against_the_true_psf_moments(built, sim):
    products, _, values = built
    v = products.visit
    stars, models = products.refit_psf_star, products.refit_psf_models
    pooled = []
    for d in products.detectors:
        psf = models[list(models["detector"]).index(d)]["psf"]
        tpsf = sim.true_psf(v, d, size=61)
        sel = (np.asarray(stars["detector"]) == d) & np.asarray(stars["calib_psf_reserved"], bool)
        size_err, e1 = [], []
        for x, y in zip(np.asarray(stars["base_SdssCentroid_x"])[sel], np.asarray(stars["base_SdssCentroid_y"])[sel]):
            m, t = psf.compute_shape(x, y), tpsf.compute_shape(x, y)
            size_err.append(((m.xx * m.yy - m.xy**2) / (t.xx * t.yy - t.xy**2)) ** 0.25 - 1)
            e1.append((m.xx - m.yy) / (m.xx + m.yy) - (t.xx - t.yy) / (t.xx + t.yy))
        assert values["nTruthPsfReserved", d] == sel.sum() > 0
        assert values["truthPsfSizeErrorRms", d] == pytest.approx(np.sqrt(np.mean(np.square(size_err))), rel=1e-9)
        assert values["truthPsfSizeErrorMean", d] == pytest.approx(np.mean(size_err), rel=1e-9, abs=1e-15)
        assert values["truthPsfE1ErrorMean", d] == pytest.approx(np.mean(e1), rel=1e-9, abs=1e-15)
        assert abs(values["truthPsfSizeErrorMean", d]) < 0.02
        pooled.extend(size_err)
    assert values["truthPsfSizeErrorRmsVisit", None] == pytest.approx(np.sqrt(np.mean(np.square(pooled))), rel=1e-9)


def _brute_nearest(ox, oy, sx, sy, radius, unique):
    """Per object, the closest source within radius (ties: lower index), -1 if none; with ``unique`` a source
    claimed by several objects stays with the closest (ties: the lower object index)."""
    if sx.size == 0:
        return np.full(ox.size, -1)
    d2 = (ox[:, None] - sx[None, :]) ** 2 + (oy[:, None] - sy[None, :]) ** 2
    j = np.argmin(d2, axis=1)
    best = d2[np.arange(ox.size), j]
    idx = np.where(best <= radius**2, j, -1)
    if unique:
        for s in np.unique(idx[idx >= 0]):
            claim = np.flatnonzero(idx == s)
            keep = claim[np.argmin(best[claim])]
            idx[claim[claim != keep]] = -1
    return idx


def test_completeness_against_a_brute_force_match(built, sim, processed_repo):
    products, _, values = built
    v = products.visit
    pooled_mag, pooled_found = [], []
    for d in products.detectors:
        obj = sim.objects(v, d)
        obj = obj[np.asarray(obj["inside"], bool)]
        src = products.source(d)
        sky = np.asarray(src["sky_source"], bool)
        found = _brute_nearest(np.asarray(obj["x"], float), np.asarray(obj["y"], float),
                               np.asarray(src["base_SdssCentroid_x"], float)[~sky],
                               np.asarray(src["base_SdssCentroid_y"], float)[~sky], 1.0, True) >= 0
        stars = np.asarray(obj["is_star"], bool) & ~np.asarray(obj["saturated"], bool)
        limit = 50 * np.median(np.asarray(src["base_PsfFlux_fluxErr"], float)[sky])
        bright = stars & (np.asarray(obj["flux_nJy"], float) > limit)
        assert bright.sum() >= 5
        assert values["truthCompletenessStarsBright", d] == pytest.approx(found[bright].mean(), rel=1e-12)
        mag = np.asarray(obj["mag"], float)[stars]
        assert values["truthCompleteness50Mag", d] == pytest.approx(_m50(mag, found[stars]), rel=1e-12)
        pooled_mag.append(mag)
        pooled_found.append(found[stars])
    assert values["truthCompleteness50MagVisit", None] == pytest.approx(
        _m50(np.concatenate(pooled_mag), np.concatenate(pooled_found)), rel=1e-12)
    # the bright stars are found, the 50% point lies within the simulated magnitude range
    assert values["truthCompletenessStarsBrightVisit", None] > 0.8
    assert 21.0 < values["truthCompleteness50MagVisit", None] < 24.5


def _m50(mag, found, width=0.5, min_count=5):
    """numpy: 0.5-mag bins from the floor of the brightest; the first fall below 0.5 (bins of >= 5), linear."""
    lo = math.floor(mag.min())
    edges = lo + width * np.arange(int(math.ceil((mag.max() + width - lo) / width)) + 1)
    n, _ = np.histogram(mag, edges)
    k, _ = np.histogram(mag[found], edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    ok = n >= min_count
    c, f = centres[ok], k[ok] / n[ok]
    for i in range(1, c.size):
        if f[i - 1] >= 0.5 > f[i]:
            return c[i - 1] + (f[i - 1] - 0.5) / (f[i - 1] - f[i]) * (c[i] - c[i - 1])
    return math.nan


def test_photometry_against_brute_force_isolation(built, sim):
    products, _, values = built
    v = products.visit
    pooled_dm = []
    for d in products.detectors:
        src = products.source(d)
        everything = sim.objects(v, d)
        obj = everything[np.asarray(everything["is_star"], bool) & ~np.asarray(everything["saturated"], bool)]
        ox, oy = np.asarray(obj["x"], float), np.asarray(obj["y"], float)
        idx = _brute_nearest(ox, oy, np.asarray(src["base_SdssCentroid_x"], float),
                             np.asarray(src["base_SdssCentroid_y"], float), 1.0, False)
        i1 = np.flatnonzero(idx >= 0)
        i2 = idx[i1]
        f, fe = np.asarray(src["base_PsfFlux_flux"])[i2], np.asarray(src["base_PsfFlux_fluxErr"])[i2]
        base = ((f / fe > 50) & np.asarray(src["detect_isPrimary"])[i2] & (np.asarray(src["deblend_nChild"])[i2] == 0)
                & (np.asarray(src["parent"])[i2] == 0))
        # every pair star x object: the other objects' light under the star's PSF (sigma 2 px), within 12 px
        ax, ay, af = (np.asarray(everything[c], float) for c in ("x", "y", "flux_nJy"))
        r2 = (ox[i1, None] - ax[None, :]) ** 2 + (oy[i1, None] - ay[None, :]) ** 2
        use = (r2 <= 144.0) & (r2 > 1e-6)
        cont = np.where(use, af[None, :] * np.exp(-r2 / 16.0), 0.0).sum(axis=1) / np.asarray(obj["flux_nJy"])[i1]
        good = base & (cont < 1e-3)
        true = np.asarray(obj["flux_nJy"], float)[i1][good]
        dm = -2500 * np.log10(f[good] / true)
        snr = f[good] / fe[good]
        pulls = (f[good] - true) / fe[good]
        pull, pull_mid = pulls[snr > 300], pulls[(snr > 50) & (snr < 200)]
        assert values["nTruthPhotometry", d] == good.sum() > 5
        assert values["truthPsfFluxBias", d] == pytest.approx(np.median(dm), rel=1e-9)
        for name, p in (("truthPsfFluxPullWidthBright", pull), ("truthPsfFluxPullWidth", pull_mid)):
            width = 1.4826 * np.median(np.abs(p - np.median(p))) if p.size >= 5 else math.nan
            assert values[name, d] == pytest.approx(width, rel=1e-9, nan_ok=True)
        assert abs(values["truthPsfFluxBias", d]) < 20.0
        pooled_dm.append(dm)
    assert values["truthPsfFluxBiasVisit", None] == pytest.approx(np.median(np.concatenate(pooled_dm)), rel=1e-9)


def test_default_thresholds_grade_as_documented():
    cfg = QaConfig()
    assert grade(11.0, cfg.threshold("truthWcsRms")) == "warn" and grade(51.0, cfg.threshold("truthWcsRms")) == "fail"
    assert grade(-12.0, cfg.threshold("truthZeroPointOffset")) == "warn"
    assert grade(-31.0, cfg.threshold("truthZeroPointOffset")) == "fail"
    assert grade(-0.006, cfg.threshold("truthPsfSizeErrorMean")) == "warn"
    assert grade(0.004, cfg.threshold("truthPsfSizeErrorMean")) == "ok"
    assert grade(6.0, cfg.threshold("truthPsfFluxBias")) == "warn"
    assert [grade(w, cfg.threshold("truthPsfFluxPullWidth")) for w in (0.75, 1.0, 1.3)] == ["warn", "ok", "warn"]
    assert cfg.threshold("truthPsfFluxPullWidthBright") is None
    assert grade(math.nan, cfg.threshold("truthWcsRms")) == "n/a"


def test_a_repository_without_truth_gives_a_clear_message(processed_repo, tmp_path):
    root = copy_repo(processed_repo, tmp_path / "plain")
    shutil.rmtree(root / "truth")
    (root / "repo.json").unlink()
    assert truth.is_simulated(processed_repo) and not truth.is_simulated(root)
    with pytest.raises(truth.TruthUnavailable, match="not a simulated repository.*repo.json or truth/"):
        truth.open_truth(root)
    repo = Repository(root)
    visit, detectors = next(iter(repository_visits(repo).items()))
    section = truth.build(VisitProducts(repo, visit, detectors), QaConfig(), FigureWriter(tmp_path / "f", tmp_path))
    assert section.metrics == [] and section.figures == [] and section.tables == []
    assert len(section.notes) == 1 and "not a simulated repository" in section.notes[0]


def test_without_galsim_qa_imports_and_truth_mode_says_how_to_install(processed_repo, monkeypatch):
    monkeypatch.setitem(sys.modules, "galsim", None)  # import galsim now raises ImportError
    with pytest.raises(truth.TruthUnavailable, match=r"GalSim.*visitcal\[sim\]"):
        truth.open_truth(processed_repo)
    code = ("import sys; sys.modules['galsim'] = None; import visitcal.qa, visitcal.qa.truth; "
            "assert 'galsim' not in [m for m in sys.modules if sys.modules[m] is not None]")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_missing_products_give_nan_metrics_and_notes(processed_repo, tmp_path):
    root = copy_repo(processed_repo, tmp_path / "broken")
    repo = Repository(root)
    visit, detectors = next(iter(repository_visits(repo).items()))
    gone = detectors[0]
    repo.dataset_path("source", visit, gone, "parquet").unlink()
    for path in (root / "visit_summary").rglob(f"*{visit:06d}*"):
        path.unlink()
    products = VisitProducts(repo, visit, detectors)
    section = truth.build(products, QaConfig(), FigureWriter(tmp_path / "f", tmp_path))
    values = {(m.name, m.detector): m.value for m in section.metrics}
    for d in detectors:  # no visit summary: no final WCS nor zero point anywhere
        assert math.isnan(values["truthWcsRms", d]) and math.isnan(values["truthZeroPointOffset", d])
        assert math.isfinite(values["truthWcsPreliminaryRms", d])  # calibrate's products are still there
    assert math.isnan(values["truthPsfFluxBias", gone]) and math.isnan(values["truthCompleteness50Mag", gone])
    assert math.isfinite(values["truthPsfFluxBias", detectors[1]])
    assert math.isnan(values["truthWcsRmsVisit", None])
    assert f"source {visit:06d}/{gone:03d}" in products.problems
    assert any(n.startswith(f"source {visit:06d}/{gone:03d}: missing") and "photometry" in n for n in section.notes)
    assert sum(n.startswith(f"visit_summary {visit:06d}: missing") for n in section.notes) == 1
