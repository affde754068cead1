"""The astrometry, photometry and aperture-correction sections on a processed simulated repository: every metric
recomputed here independently (astropy's sky matching, numpy on the catalogs) equals the section's value, every
figure is a PNG, and a detector whose final catalog is missing gives NaN metrics and a note."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from visitcal.pipeline.repository import Repository
from visitcal.qa import apcorr, astrometry, photometry
from visitcal.qa.figures import FigureWriter
from visitcal.qa.metrics import QaConfig
from visitcal.qa.products import VisitProducts, repository_visits

from .conftest import copy_repo

AB = 2.5 * math.log10(3.631e12)
REL = 1e-9
BAD = ("base_PixelFlags_flag_edge", "base_PixelFlags_flag_nodata", "base_PixelFlags_flag_interpolatedCenter",
       "base_PixelFlags_flag_saturatedCenter", "base_PixelFlags_flag_crCenter", "base_PixelFlags_flag_bad",
       "base_PixelFlags_flag_interpolated", "base_PixelFlags_flag_saturated", "base_SdssCentroid_flag",
       "base_PsfFlux_flag")


def _close(a, b):
    if math.isnan(b):
        return math.isnan(a)
    return abs(a - b) <= REL * max(abs(b), 1e-300) + 1e-12


@pytest.fixture(scope="module")
def built(processed_repo, tmp_path_factory):
    repo = Repository(processed_repo)
    visits = repository_visits(repo)
    visit = sorted(visits)[0]
    products = VisitProducts(repo, visit, visits[visit])
    out = tmp_path_factory.mktemp("calib_sections")
    writer = FigureWriter(out / "figures", out, dpi=40)
    config = QaConfig()
    sections = {m.__name__.rsplit(".", 1)[1]: m.build(products, config, writer)
                for m in (astrometry, photometry, apcorr)}
    return products, config, sections, out


def _metrics(section):
    return {(m.name, m.detector): m.value for m in section.metrics}


def _point_sources(src, min_snr):
    keep = np.asarray(src["detect_isPrimary"], bool) & ~np.asarray(src["sky_source"], bool)
    keep &= np.nan_to_num(np.asarray(src["base_ClassificationExtendedness_value"], float), nan=1.0) < 0.5
    for f in BAD:
        keep &= ~np.asarray(src[f], bool)
    snr = np.asarray(src["base_PsfFlux_flux"], float) / np.asarray(src["base_PsfFlux_fluxErr"], float)
    keep &= np.nan_to_num(snr, nan=-1.0) > min_snr
    keep &= np.isfinite(np.asarray(src["coord_ra"], float)) & np.isfinite(np.asarray(src["coord_dec"], float))
    return keep


def _match(src, rows, refcat, radius):
    """Rows of src and refcat matched with astropy (nearest reference within radius) and the separation, arcsec."""
    c = SkyCoord(np.asarray(src["coord_ra"])[rows] * u.rad, np.asarray(src["coord_dec"])[rows] * u.rad)
    r = SkyCoord(np.asarray(refcat["ra"]) * u.deg, np.asarray(refcat["dec"]) * u.deg)
    idx, sep, _ = c.match_to_catalog_sky(r)
    ok = sep.arcsec < radius
    return rows[ok], idx[ok], sep.arcsec[ok]


def test_astrometry_metrics_recomputed(built):
    products, config, sections, _ = built
    m = _metrics(sections["astrometry"])
    ref = products.refcat
    all_d, all_r, all_s = [], [], []
    for d in products.detectors:
        src = products.source(d)
        used = np.asarray(src["calib_astrometry_used"], bool) if "calib_astrometry_used" in src.colnames else None
        sel = used if used is not None and used.any() else _point_sources(src, config.astrom_min_snr)
        rows, ridx, sep = _match(src, np.flatnonzero(sel), ref, config.match_radius_arcsec)
        ra, dec = np.degrees(np.asarray(src["coord_ra"])[rows]), np.degrees(np.asarray(src["coord_dec"])[rows])
        dra = (ra - np.asarray(ref["ra"])[ridx]) * np.cos(np.radians(np.asarray(ref["dec"])[ridx])) * 3.6e6
        ddec = (dec - np.asarray(ref["dec"])[ridx]) * 3.6e6
        assert len(rows) >= 5
        assert m[("nAstromMatch", d)] == len(rows)
        assert _close(m[("astromOffsetMean", d)], sep.mean())
        assert _close(m[("astromOffsetStd", d)], sep.std(ddof=1))
        assert _close(m[("astromResidualRaMean", d)], dra.mean())
        assert _close(m[("astromResidualDecMean", d)], ddec.mean())
        assert _close(m[("astromResidualRms", d)], math.sqrt(np.mean(dra ** 2 + ddec ** 2)))
        h = products.header("preliminary_visit_image", d)
        assert _close(m[("astromFitRms", d)], 1000.0 * float(h["SFM_ASTROM_RMS"]))
        all_d.append(dra), all_r.append(ddec), all_s.append(sep)
    dra, ddec, sep = np.concatenate(all_d), np.concatenate(all_r), np.concatenate(all_s)
    assert m[("nAstromMatchVisit", None)] == dra.size
    assert _close(m[("astromOffsetMeanVisit", None)], sep.mean())
    assert _close(m[("astromResidualRmsVisit", None)], math.sqrt(np.mean(dra ** 2 + ddec ** 2)))
    # the simulated WCS fit is good: the residual means are within a few mas of zero
    assert abs(m[("astromResidualRaMeanVisit", None)]) < 10 and abs(m[("astromResidualDecMeanVisit", None)]) < 10


def _robust_sigma(v):
    return 1.4826 * np.median(np.abs(v - np.median(v)))


def test_photometry_metrics_recomputed(built):
    products, config, sections, _ = built
    m = _metrics(sections["photometry"])
    vs = products.visit_summary
    zps = []
    band = products.header("visit_image", products.detectors[0])["BAND"].strip()
    ref = products.refcat
    for d in products.detectors:
        zp = float(np.asarray(vs["zeroPoint"])[np.asarray(vs["detector"]) == d][0])
        zps.append(zp)
        assert m[("zeroPoint", d)] == zp
        magzero_err = float(products.header("preliminary_visit_image", d)["MAGZERO_ERR"])
        assert _close(m[("zeroPointErr", d)], 1000 * magzero_err)
        src = products.source(d)
        rows, ridx, _ = _match(src, np.flatnonzero(_point_sources(src, config.photom_min_snr)), ref,
                               config.match_radius_arcsec)
        ref_mag = AB - 2.5 * np.log10(np.asarray(ref[f"{band}_flux"], float)[ridx])
        diff = 1000 * (np.asarray(src["base_PsfFlux_mag"], float)[rows] - ref_mag)
        assert diff.size >= 5 and m[("nPhotomMatch", d)] == diff.size
        assert _close(m[("photomRefMagDiffMedian", d)], np.median(diff))
        assert _close(m[("photomRefMagDiffSigmaMad", d)], _robust_sigma(diff))
        keep = _point_sources(src, config.psf_ap_min_snr)
        keep &= ~np.asarray(src["base_CircularApertureFlux_12_0_flag"], bool)
        keep &= np.asarray(src["base_CircularApertureFlux_12_0_flux"], float) > 0
        dm = 1000 * (np.asarray(src["base_PsfFlux_mag"], float) - np.asarray(src["base_CircularApertureFlux_12_0_mag"],
                                                                              float))[keep]
        assert dm.size >= 3 and m[("nPsfApStar", d)] == dm.size
        assert _close(m[("psfApMagDiffMedian", d)], np.median(dm))
        assert _close(m[("psfApMagDiffSigmaMad", d)], _robust_sigma(dm))
        # the simulation's calibration is good to a few hundredths of a magnitude
        assert abs(m[("photomRefMagDiffMedian", d)]) < 50
    assert _close(m[("zeroPointScatter", None)], 1000 * np.std(zps, ddof=1))


def test_apcorr_metrics_recomputed(built):
    products, config, sections, _ = built
    m = _metrics(sections["apcorr"])
    stars = products.refit_psf_star
    cat = products.refit_psf_models
    for d in products.detectors:
        amap = cat["ap_corr_map"][np.flatnonzero(np.asarray(cat["detector"]) == d)[0]]
        s = stars[np.asarray(stars["detector"]) == d]
        assert m[("nApCorrStar", d)] == np.count_nonzero(np.asarray(s["apcorr_base_PsfFlux_used"], bool))
        for alg, short in (("base_PsfFlux", "PsfFlux"), ("base_GaussianFlux", "GaussianFlux")):
            field = amap[f"{alg}_instFlux"]
            u_ = s[np.asarray(s[f"apcorr_{alg}_used"], bool)]
            x, y = np.asarray(u_["base_SdssCentroid_x"], float), np.asarray(u_["base_SdssCentroid_y"], float)
            raw = np.asarray(u_[f"{alg}_instFlux"], float) / np.asarray(u_[f"{alg}_apCorr"], float)
            z = np.asarray(u_["base_NormalizedCompensatedTophatFlux_instFlux"], float) / raw
            resid = 2500 * np.log10(z / np.array([field.evaluate(float(a), float(b)) for a, b in zip(x, y)]))
            assert resid.size >= 2
            assert _close(m[(f"apCorr{short}ResidualMedian", d)], np.median(resid))
            assert _close(m[(f"apCorr{short}ResidualSigmaMad", d)], _robust_sigma(resid))
            # the fit's final median shift: the median residual is ~0 on the stars it used
            assert abs(m[(f"apCorr{short}ResidualMedian", d)]) < 0.5
            b = field.bbox
            gx, gy = np.meshgrid(np.linspace(b.min_x, b.max_x, config.apcorr_grid),
                                 np.linspace(b.min_y, b.max_y, config.apcorr_grid))
            v = field.evaluate(gx.ravel(), gy.ravel())
            assert _close(m[(f"apCorr{short}Range", d)], 2500 * math.log10(v.max() / v.min()))


def test_every_figure_is_a_png(built):
    _, _, sections, out = built
    names = set()
    for sec in sections.values():
        assert sec.figures and sec.tables
        for ref in sec.figures:
            data = (out / ref.path).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, ref.path
            names.add(ref.path.rsplit("/", 1)[1])
    assert {"astrometry_quiver.png", "astrometry_residual_hist.png", "astrometry_rms_per_detector.png",
            "photometry_zero_point.png", "photometry_ref_mag_diff.png", "photometry_psf_ap.png",
            "apcorr_map_d000.png", "apcorr_mosaic_base_PsfFlux.png", "apcorr_stars_base_PsfFlux.png"} <= names


def test_missing_source_catalog_gives_nan_and_a_note(processed_repo, tmp_path):
    root = copy_repo(processed_repo, tmp_path / "repo")
    repo = Repository(root)
    visits = repository_visits(repo)
    visit = sorted(visits)[0]
    d_gone = visits[visit][-1]
    repo.dataset_path("source", visit, d_gone, "parquet").unlink()
    products = VisitProducts(repo, visit, visits[visit])
    writer = FigureWriter(tmp_path / "figures", tmp_path, dpi=40)
    for mod, names in ((astrometry, ("nAstromMatch", "astromResidualRms")),
                       (photometry, ("photomRefMagDiffMedian", "psfApMagDiffMedian"))):
        sec = mod.build(products, QaConfig(), writer)
        m = _metrics(sec)
        assert all(math.isnan(m[(n, d_gone)]) for n in names)
        assert all(math.isfinite(m[(n, visits[visit][0])]) for n in names)
        assert any(f"Detector {d_gone}" in note and "source" in note for note in sec.notes)
        for ref in sec.figures:
            assert (tmp_path / ref.path).stat().st_size > 2000
