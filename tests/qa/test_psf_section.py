"""The PSF section of `visitcal qa` (`visitcal.qa.psf.build`).

On the processed simulated repository every metric the section emits is recomputed here with numpy and
astropy from the catalogs (the LSST PSF-star statistics, the reserved-star residuals, the whisker means, and
the rho statistics at 1 arcmin by an all-pairs sum on the tangent plane), and every figure is checked to be a
PNG. On hand-built visits: a PSF model whose stars are offset by a known ellipticity and size gives those
offsets back (and rho1 = |de|^2), a detector without PSF stars gets NaN metrics and a note, a visit without
``refit_psf_star`` still builds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from visitcal.qa import psf as psf_section
from visitcal.qa.figures import FigureWriter
from visitcal.qa.metrics import QaConfig
from visitcal.qa.products import VisitProducts, repository_visits

CONFIG = QaConfig(stamps_per_detector=2)


# --- independent recomputations ------------------------------------------------------------------------
def _moments(t):
    f = {k: np.asarray(t[c], float) for k, c in (
        ("xx", "base_SdssShape_xx"), ("yy", "base_SdssShape_yy"), ("xy", "base_SdssShape_xy"),
        ("pxx", "base_SdssShape_psf_xx"), ("pyy", "base_SdssShape_psf_yy"), ("pxy", "base_SdssShape_psf_xy"))}
    with np.errstate(all="ignore"):
        T, pT = f["xx"] + f["yy"], f["pxx"] + f["pyy"]
        e1, e2, pe1, pe2 = (f["xx"] - f["yy"]) / T, 2 * f["xy"] / T, (f["pxx"] - f["pyy"]) / pT, 2 * f["pxy"] / pT
    valid = np.isfinite(T) & np.isfinite(pT) & (T > 0) & (pT > 0) & np.isfinite(e1) & np.isfinite(e2) \
        & np.isfinite(pe1) & np.isfinite(pe2) & ~np.asarray(t["base_SdssShape_flag"], bool)
    return f, T, pT, e1, e2, pe1, pe2, valid


def _excess(dtt, sigma) -> float:
    """The robust scatter of dtt beyond sigma in quadrature, by hand."""
    if dtt.size == 0 or not np.isfinite(sigma).all():
        return math.nan
    mad = 1.4826 * np.median(np.abs(dtt - np.median(dtt)))
    return math.sqrt(max(0.0, mad ** 2 - float(np.median(sigma ** 2))))


def expected_metrics(t) -> dict:
    """Every per-detector metric of the PSF stars ``t``, by numpy (LSST's definitions for the psfStar* ones)."""
    f, T, pT, e1, e2, pe1, pe2, valid = _moments(t)
    used = np.asarray(t["calib_psf_used"], bool)
    reserved = np.asarray(t["calib_psf_reserved"], bool)
    with np.errstate(all="ignore"):
        snr = np.asarray(t["base_PsfFlux_instFlux"], float) / np.asarray(t["base_PsfFlux_instFluxErr"], float)
        size, psize = np.sqrt(T / 2), np.sqrt(pT / 2)
    sel = used & ~np.asarray(t["base_SdssShape_flag"], bool) & ~np.asarray(t["base_PsfFlux_flag"], bool) \
        & (snr > 50) & (snr < 1000) & np.isfinite(e1) & np.isfinite(e2) & np.isfinite(size) & np.isfinite(pe1) \
        & np.isfinite(psize)

    def med(v):
        return float(np.median(v)) if v.size else math.nan

    def mad(v):
        return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else math.nan

    d1, d2, ds = (e1 - pe1)[sel], (e2 - pe2)[sel], (size - psize)[sel]
    res = reserved & valid
    dtt = ((T - pT) / pT)[res]
    return {
        "nPsfStar": float(used.sum()),
        "psfStarDeltaE1Median": med(d1), "psfStarDeltaE2Median": med(d2),
        "psfStarDeltaE1Scatter": mad(d1), "psfStarDeltaE2Scatter": mad(d2),
        "psfStarDeltaSizeMedian": med(ds), "psfStarDeltaSizeScatter": mad(ds),
        "psfStarScaledDeltaSizeScatter": mad(ds) / med(size[sel]) if ds.size else math.nan,
        "nPsfStarReserved": float(reserved.sum()),
        "psfReservedDeltaTOverTMean": float(dtt.mean()) if dtt.size else math.nan,
        "psfReservedDeltaTOverTRms": float(np.sqrt(np.mean(dtt ** 2))) if dtt.size else math.nan,
        "psfReservedDeltaTOverTExcessScatter": _excess(dtt, (np.hypot(np.asarray(t["base_SdssShape_xxErr"], float),
                                                                  np.asarray(t["base_SdssShape_yyErr"], float))
                                                         / pT)[res]),
        "psfReservedDeltaE1Mean": float((e1 - pe1)[res].mean()) if res.any() else math.nan,
        "psfReservedDeltaE2Mean": float((e2 - pe2)[res].mean()) if res.any() else math.nan,
        "psfModelE1Mean": float(pe1[valid].mean()) if valid.any() else math.nan,
        "psfModelE2Mean": float(pe2[valid].mean()) if valid.any() else math.nan,
    }


def _gnomonic_deg(ra, dec, ra0, dec0):
    r, d, r0, d0 = (np.radians(v) for v in (ra, dec, ra0, dec0))
    c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
    return (np.degrees(np.cos(d) * np.sin(r - r0) / c),
            np.degrees((np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(r - r0)) / c))


def expected_rho_at_1arcmin(t, wcs_by_detector, config) -> tuple[list[float], float]:
    """rho1..5 (xi+) at 1 arcmin and rho1's shot sigma of the reserved stars with valid moments: moments
    carried to each star's tangent plane by central differences (0.5 px) of its detector's WCS, positions
    projected about their mean direction, every pair summed with numpy."""
    f, T, pT, e1, e2, pe1, pe2, valid = _moments(t)
    sel = np.asarray(t["calib_psf_reserved"], bool) & valid
    det = np.asarray(t["detector"])
    ra, dec, es, em, Ts, Tm = [], [], [], [], [], []
    for d in np.unique(det[sel]):
        rows = np.flatnonzero(sel & (det == d))
        w = wcs_by_detector[int(d)]
        x = np.asarray(t["base_SdssCentroid_x"], float)[rows]
        y = np.asarray(t["base_SdssCentroid_y"], float)[rows]
        r0, d0 = w.all_pix2world(x, y, 0)
        J = np.empty((rows.size, 2, 2))
        for col, (dx, dy) in enumerate(((0.5, 0.0), (0.0, 0.5))):
            rp, dp = w.all_pix2world(x + dx, y + dy, 0)
            rm, dm = w.all_pix2world(x - dx, y - dy, 0)
            xp, yp = _gnomonic_deg(rp, dp, r0, d0)
            xm, ym = _gnomonic_deg(rm, dm, r0, d0)
            J[:, 0, col], J[:, 1, col] = (xp - xm) / 1.0 * 60, (yp - ym) / 1.0 * 60
        for pre, out_e, out_T in (("", es, Ts), ("p", em, Tm)):
            M = np.empty((rows.size, 2, 2))
            M[:, 0, 0], M[:, 1, 1] = f[pre + "xx"][rows], f[pre + "yy"][rows]
            M[:, 0, 1] = M[:, 1, 0] = f[pre + "xy"][rows]
            S = np.einsum("nij,njk,nlk->nil", J, M, J)
            tt = S[:, 0, 0] + S[:, 1, 1]
            out_e.append(((S[:, 0, 0] - S[:, 1, 1]) + 2j * S[:, 0, 1]) / tt)
            out_T.append(tt)
        ra.append(r0)
        dec.append(d0)
    if not ra or sum(len(r) for r in ra) < 2:
        return [math.nan] * 5, math.nan
    ra, dec, es, em, Ts, Tm = (np.concatenate(v) for v in (ra, dec, es, em, Ts, Tm))
    v = np.array([np.sum(np.cos(np.radians(dec)) * np.cos(np.radians(ra))),
                  np.sum(np.cos(np.radians(dec)) * np.sin(np.radians(ra))), np.sum(np.sin(np.radians(dec)))])
    ra0, dec0 = math.degrees(math.atan2(v[1], v[0])), math.degrees(math.asin(v[2] / np.linalg.norm(v)))
    x, y = (60 * c for c in _gnomonic_deg(ra, dec, ra0, dec0))
    de, wt = es - em, em * (Ts - Tm) / Tm
    n = len(x)
    i, j = np.triu_indices(n, 1)
    r = np.hypot(x[j] - x[i], y[j] - y[i])
    edges = config.rho_min_sep_arcmin * (config.rho_max_sep_arcmin / config.rho_min_sep_arcmin) ** (
        np.arange(config.rho_nbins + 1) / config.rho_nbins)
    k = int(np.searchsorted(edges, 1.0, side="right") - 1)
    inbin = (r >= edges[k]) & (r < edges[k + 1])
    if not inbin.any():
        return [math.nan] * 5, math.nan
    i, j = i[inbin], j[inbin]
    out = []
    for a, b in ((de, de), (em, de), (wt, wt), (de, wt), (em, wt)):
        # ordered pairs both ways (for a == b the same value as the unordered pairs)
        out.append(float(np.sum((a[i] * np.conj(b[j]) + a[j] * np.conj(b[i])).real) / (2 * inbin.sum())))
    var = (np.var(de.real) + np.var(de.imag)) / 2
    return out, math.sqrt(2 * var * var / inbin.sum())


def _values(section):
    return {(m.name, m.detector): m.value for m in section.metrics}


def _check_png(out_dir: Path, section):
    assert section.figures
    for ref in section.figures:
        data = (out_dir / ref.path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, ref.path


# --- the processed repository --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(processed_repo, tmp_path_factory):
    from visitcal.pipeline.repository import Repository

    repo = Repository(processed_repo)
    out = []
    for visit, detectors in repository_visits(repo).items():
        products = VisitProducts(repo, visit, detectors)
        out_dir = tmp_path_factory.mktemp(f"psf{visit}")
        section = psf_section.build(products, CONFIG, FigureWriter(out_dir / "figures", out_dir, dpi=50))
        out.append((products, section, out_dir))
    return out


def test_every_metric_recomputed(built):
    checked, rho_finite = 0, 0
    for products, section, _ in built:
        got = _values(section)
        stars = products.refit_psf_star
        assert len(section.metrics) == len(got)  # no duplicate
        assert len(got) == len(psf_section.DETECTOR_METRICS) * (len(products.detectors)) + len(
            psf_section.VISIT_METRICS)
        det = np.asarray(stars["detector"])
        for d in products.detectors:
            for name, value in expected_metrics(stars[det == d]).items():
                np.testing.assert_allclose(got[(name, d)], value, rtol=1e-12, atol=1e-15, err_msg=f"{name} {d}")
                checked += 1
        for name, value in expected_metrics(stars).items():
            np.testing.assert_allclose(got[(f"{name}Visit", None)], value, rtol=1e-12, atol=1e-15, err_msg=name)
        vs = products.visit_summary
        wcs = {int(d): w for d, w in zip(vs["detector"], vs["wcs"])}
        rhos, sigma = expected_rho_at_1arcmin(stars, wcs, CONFIG)
        for k, value in enumerate(rhos, start=1):
            np.testing.assert_allclose(got[(f"rho{k}At1Arcmin", None)], value, rtol=1e-9, atol=1e-15,
                                       err_msg=f"rho{k}")
        np.testing.assert_allclose(got[("rho1At1ArcminErr", None)], sigma, rtol=1e-9)
        rho_finite += all(math.isfinite(got[(f"rho{k}At1Arcmin", None)]) for k in range(1, 6))
        # the simulated visits are healthy: the refit PSF leaves small residuals on the used stars
        assert got[("nPsfStarVisit", None)] >= 10
        assert abs(got[("psfStarDeltaE1MedianVisit", None)]) < 0.01
    assert checked > 0
    assert rho_finite > 0, "no visit had reserved pairs at 1 arcmin: the rho comparison compared NaNs only"


def test_figures_are_pngs(built):
    for products, section, out_dir in built:
        _check_png(out_dir, section)
        names = {Path(ref.path).stem for ref in section.figures}
        assert {"psf_whiskers", "psf_size_residuals", "psf_rho"} <= names
        assert {f"psf_stamps_d{d:03d}" for d in products.detectors} <= names


# --- hand-built visits ---------------------------------------------------------------------------------
class FakeProducts:
    """What `build` reads of a `VisitProducts`: catalogs in memory, no images, no geometry."""

    def __init__(self, visit, detectors, stars, visit_summary=None):
        self.visit, self.detectors, self.problems = visit, list(detectors), {}
        self.refit_psf_star, self.visit_summary, self.refit_psf_models = stars, visit_summary, None

    def exposure(self, name, detector):
        self.problems[f"{name} {detector}"] = "missing: test"
        return None

    def detector_geometry(self, detector):
        return None

    def detector_outline_mm(self, detector):
        return None


def _tan_wcs(crpix_x):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, -30.0]
    w.wcs.crpix = [crpix_x + 1, 513.0]
    w.wcs.cd = np.array([[-0.2 / 3600, 0.0], [0.0, 0.2 / 3600]])
    return w


DE1, DE2, DTT = 0.004, -0.003, 0.01


def _synthetic_visit(n_per_detector=80, seed=0):
    """Two 1024^2 detectors side by side (0.2"/px): model moments with a random e and T; every star's moments
    are the model's with e + (DE1, DE2) and T (1 + DTT)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d, crpix in ((0, 512.0), (1, 512.0 - 1074.0)):
        n = n_per_detector
        pe1, pe2, pT = rng.normal(0.02, 0.02, n), rng.normal(-0.01, 0.02, n), rng.uniform(7.0, 9.0, n)
        e1, e2, T = pe1 + DE1, pe2 + DE2, pT * (1 + DTT)
        flux = rng.uniform(2e4, 2e5, n)
        rows.append(Table({
            "detector": np.full(n, d, np.int32),
            "calib_psf_used": np.arange(n) % 4 != 0, "calib_psf_reserved": np.arange(n) % 4 == 0,
            "base_SdssCentroid_x": rng.uniform(20, 1000, n), "base_SdssCentroid_y": rng.uniform(20, 1000, n),
            "base_SdssShape_xx": T * (1 + e1) / 2, "base_SdssShape_yy": T * (1 - e1) / 2,
            "base_SdssShape_xy": T * e2 / 2,
            "base_SdssShape_psf_xx": pT * (1 + pe1) / 2, "base_SdssShape_psf_yy": pT * (1 - pe1) / 2,
            "base_SdssShape_psf_xy": pT * pe2 / 2, "base_SdssShape_flag": np.zeros(n, bool),
            "base_PsfFlux_instFlux": flux, "base_PsfFlux_instFluxErr": flux / 300,
            "base_PsfFlux_flag": np.zeros(n, bool),
            "base_FPPosition_x": rng.uniform(-10, 10, n), "base_FPPosition_y": rng.uniform(-10, 10, n),
        }))
    from astropy.table import vstack

    stars = vstack(rows)
    stars.meta["slots"] = {"Shape": "base_SdssShape", "PsfShape": "base_SdssShape_psf", "PsfFlux": "base_PsfFlux"}
    vs = Table({"detector": np.array([0, 1, 2], np.int32)})
    vs["wcs"] = np.array([_tan_wcs(512.0), _tan_wcs(512.0 - 1074.0), None], dtype=object)
    return stars, vs


def test_known_offsets_come_back_and_a_missing_detector_is_nan(tmp_path):
    stars, vs = _synthetic_visit()
    products = FakeProducts(7, [0, 1, 2], stars, vs)  # detector 2: no PSF star at all
    section = psf_section.build(products, CONFIG, FigureWriter(tmp_path / "figures", tmp_path, dpi=50))
    got = _values(section)
    for d in (0, 1, None):
        suffix = "" if d is not None else "Visit"
        for name in ("psfStarDeltaE1Median", "psfReservedDeltaE1Mean"):
            assert math.isclose(got[(name + suffix, d)], DE1, rel_tol=1e-9), name
        for name in ("psfStarDeltaE2Median", "psfReservedDeltaE2Mean"):
            assert math.isclose(got[(name + suffix, d)], DE2, rel_tol=1e-9), name
        assert math.isclose(got[("psfReservedDeltaTOverTMean" + suffix, d)], DTT, rel_tol=1e-9)
        assert math.isclose(got[("psfReservedDeltaTOverTRms" + suffix, d)], DTT, rel_tol=1e-9)
        assert got[("psfStarDeltaE1Scatter" + suffix, d)] < 1e-12
        sel = np.ones(len(stars), bool) if d is None else np.asarray(stars["detector"]) == d
        pe1 = (stars["base_SdssShape_psf_xx"] - stars["base_SdssShape_psf_yy"]) / (
            stars["base_SdssShape_psf_xx"] + stars["base_SdssShape_psf_yy"])
        assert math.isclose(got[("psfModelE1Mean" + suffix, d)], float(np.mean(pe1[sel])), rel_tol=1e-12)
    assert got[("nPsfStar", 0)] == 60 and got[("nPsfStarReserved", 0)] == 20 and got[("nPsfStarVisit", None)] == 120
    # a constant residual: rho1 = |de|^2 (the flip and the tiny TAN non-linearity of the frame change leave it)
    assert math.isclose(got[("rho1At1Arcmin", None)], DE1 ** 2 + DE2 ** 2, rel_tol=1e-4)
    assert 0 < got[("rho1At1ArcminErr", None)] < 1e-12  # a constant field has no shape noise
    # detector 2: every metric NaN, and a note that says why
    assert all(math.isnan(got[(n, 2)]) for n in psf_section.DETECTOR_METRICS)
    assert any("Detector 2" in note and "no PSF stars" in note for note in section.notes)
    # no images: a note per detector instead of stamps, the other figures drawn
    assert any("no visit_image" in note or "no refit PSF model" in note for note in section.notes)
    _check_png(tmp_path, section)
    assert {Path(r.path).stem for r in section.figures} == {"psf_whiskers", "psf_size_residuals", "psf_rho"}


def test_visit_without_refit_psf_star_builds(tmp_path):
    products = FakeProducts(8, [0, 1], None)
    products.problems["refit_psf_star 000008"] = "missing: refit_psf_star/refit_psf_star_000008.parquet"
    section = psf_section.build(products, CONFIG, FigureWriter(tmp_path / "figures", tmp_path, dpi=50))
    assert section.key == "psf" and not section.figures
    assert len(section.metrics) == 2 * len(psf_section.DETECTOR_METRICS) + len(psf_section.VISIT_METRICS)
    assert all(math.isnan(m.value) for m in section.metrics)
    assert "missing: refit_psf_star" in section.notes[0]


def test_stamp_model_matches_a_known_star():
    """star_model_residual: a star drawn from a Gaussian PSF at a sub-pixel position, times 1000, gives a model
    equal to it and a zero residual (the PSF's own pixels, placed by its bbox)."""
    from visitcal.psf.models import GaussianPsf

    psf = GaussianPsf(2.0, size=21)
    x, y = 40.3, 31.8
    image = np.zeros((64, 80))
    img, box = psf.compute_image(x, y), psf.compute_image_bbox(x, y)
    image[box.min_y - 5:box.max_y - 5 + 1, box.min_x - 10:box.max_x - 10 + 1] = 1000.0 * img  # origin (10, 5)
    star, model, res = psf_section.star_model_residual(image, (10, 5), psf, x, y, 15)
    assert star.shape == (15, 15) and np.isfinite(star).all()
    np.testing.assert_allclose(model, star, rtol=1e-10, atol=1e-9)
    assert np.max(np.abs(res)) < 1e-9
    assert math.isclose(star[7, 7], image[32 - 5, 40 - 10])  # the middle pixel holds (x, y)
    # at the image's edge the stamp is NaN outside
    star, _, _ = psf_section.star_model_residual(image, (10, 5), psf, 11.0, 6.0, 15)
    assert np.isnan(star[0, 0]) and np.isfinite(star[7, 7])


def test_large_star_sets_go_to_treecorr_with_the_same_numbers(tmp_path, monkeypatch):
    """Above TREECORR_ABOVE stars the section pairs with TreeCorr (when installed): same metrics to rounding."""
    pytest.importorskip("treecorr", reason="TreeCorr not installed (pip install 'visitcal[qa]'): not checked")
    stars, vs = _synthetic_visit(seed=3)
    # a varying residual, so the rho values are not all |de|^2
    rng = np.random.default_rng(4)
    stars["base_SdssShape_xy"] += rng.normal(0, 0.02, len(stars))
    ref = _values(psf_section.build(FakeProducts(7, [0, 1], stars, vs), CONFIG, FigureWriter(tmp_path / "a", tmp_path)))
    monkeypatch.setattr(psf_section, "TREECORR_ABOVE", 10)
    section = psf_section.build(FakeProducts(7, [0, 1], stars, vs), CONFIG, FigureWriter(tmp_path / "b", tmp_path))
    assert any("paired by TreeCorr" in note for note in section.notes)
    got = _values(section)
    for k in range(1, 6):
        value = got[(f"rho{k}At1Arcmin", None)]
        assert math.isfinite(value)
        assert math.isclose(value, ref[(f"rho{k}At1Arcmin", None)], rel_tol=1e-8, abs_tol=1e-14)


def test_excess_scatter_removes_the_measurement_noise_and_outliers():
    rng = np.random.default_rng(5)
    sigma = np.full(20000, 0.03)
    model_error = 0.01
    dtt = rng.normal(0.0, 1.0, sigma.size) * np.hypot(sigma, model_error)
    assert psf_section.excess_scatter(dtt, sigma) == pytest.approx(model_error, abs=1.5e-3)
    spoiled = dtt.copy()
    spoiled[:400] += 0.3                                     # 2% of the stars widened by an unresolved neighbour
    # the MAD moves by ~2.5% of the total scatter with 2% outliers: 0.0122 expected, not the rms's 0.05
    assert psf_section.excess_scatter(spoiled, sigma) == pytest.approx(model_error, abs=4e-3)
    assert math.sqrt(np.mean(spoiled ** 2) - 0.03 ** 2) > 0.04       # what an rms would have said
    assert psf_section.excess_scatter(np.array([0.01, -0.01, 0.0]), np.full(3, 0.05)) == 0.0       # all noise
    assert math.isnan(psf_section.excess_scatter(np.array([0.1]), np.array([np.nan])))
