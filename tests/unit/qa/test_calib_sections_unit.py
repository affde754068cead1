"""Hand-built cases with known answers for the astrometry, photometry and aperture-correction QA sections.

A tiny fake visit (`FakeProducts`, the accessors the sections read) whose catalogs are made from a known
reference catalog: a known shift, a known zero-point offset, an aperture-correction field the stars follow
exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

pytest.importorskip("matplotlib")

from visitcal.core.apcorr import ApCorrMap  # noqa: E402
from visitcal.core.chebyshev import ChebyshevBoundedField  # noqa: E402
from visitcal.core.geom import Box2I  # noqa: E402
from visitcal.core.image import Detector  # noqa: E402
from visitcal.qa import apcorr, astrometry, photometry  # noqa: E402
from visitcal.qa.figures import FigureWriter  # noqa: E402
from visitcal.qa.metrics import QaConfig  # noqa: E402

AB = 2.5 * math.log10(3.631e12)
SIZE = 1000
BBOX = Box2I(0, 0, SIZE - 1, SIZE - 1)


class FakeProducts:
    """The accessors of `VisitProducts` the three sections use, over in-memory tables."""

    def __init__(self, detectors, sources, refcat, headers=None, visit_summary=None, refit_psf_models=None,
                 refit_psf_star=None):
        self.visit = 7
        self.detectors = list(detectors)
        self.problems = {}
        self._sources, self.refcat, self._headers = sources, refcat, headers or {}
        self.visit_summary, self.refit_psf_models, self.refit_psf_star = visit_summary, refit_psf_models, refit_psf_star

    def source(self, d):
        if d not in self._sources:
            self.problems[f"source {self.visit:06d}/{d:03d}"] = "missing: source/test"
        return self._sources.get(d)

    def header(self, name, d):
        return self._headers.get(d)

    def detector_geometry(self, d):
        return Detector(id=d, name=f"D{d}", bbox=BBOX, focal_plane_center=(12.0 * d, 0.0), rotation=0.0,
                        pixel_size_mm=0.01)

    def detector_outline_mm(self, d):
        x0 = 12.0 * d
        return np.array([[x0 - 5, -5], [x0 + 5, -5], [x0 + 5, 5], [x0 - 5, 5], [x0 - 5, -5]], float)


def _refcat(n=40, seed=3):
    rng = np.random.default_rng(seed)
    ra = 150.0 + rng.uniform(-0.02, 0.02, n)
    dec = -30.0 + rng.uniform(-0.02, 0.02, n)
    mag = rng.uniform(16.0, 20.0, n)
    return Table({"id": np.arange(n), "ra": ra, "dec": dec, "r_flux": 10 ** (-0.4 * (mag - AB)),
                  "r_fluxErr": np.full(n, 1.0)})


def _sources(ref, rows, ddec_mas=0.0, dmag=0.0, ap_minus_psf=0.0, detector=0):
    """A final source catalog of the refcat rows ``rows``: Dec shifted by ``ddec_mas``, PSF magnitudes
    ``dmag`` fainter than the reference, 12-px aperture magnitudes ``ap_minus_psf`` fainter than PSF."""
    n = len(rows)
    ref_mag = AB - 2.5 * np.log10(np.asarray(ref["r_flux"])[rows])
    psf_mag = ref_mag + dmag
    ap_mag = psf_mag + ap_minus_psf
    flux = 10 ** (-0.4 * (psf_mag - AB))
    return Table({
        "coord_ra": np.radians(np.asarray(ref["ra"])[rows]),
        "coord_dec": np.radians(np.asarray(ref["dec"])[rows] + ddec_mas / 3.6e6),
        "base_PsfFlux_flux": flux, "base_PsfFlux_fluxErr": flux / 1000.0, "base_PsfFlux_mag": psf_mag,
        "base_CircularApertureFlux_12_0_flux": 10 ** (-0.4 * (ap_mag - AB)),
        "base_CircularApertureFlux_12_0_mag": ap_mag,
        "base_CircularApertureFlux_12_0_flag": np.zeros(n, bool),
        "base_ClassificationExtendedness_value": np.zeros(n), "detect_isPrimary": np.ones(n, bool),
        "sky_source": np.zeros(n, bool), "base_PixelFlags_flag_edge": np.zeros(n, bool),
        "base_FPPosition_x": np.linspace(-4, 4, n) + 12.0 * detector, "base_FPPosition_y": np.linspace(4, -4, n),
    })


def _header(band="r", magzero_err=0.002, astrom_rms=0.007):
    h = fits.Header()
    h["BAND"] = band
    h["HIERARCH MAGZERO_ERR"] = magzero_err
    h["HIERARCH SFM_ASTROM_RMS"] = astrom_rms
    return h


def _metrics(section):
    return {(m.name, m.detector): m.value for m in section.metrics}


def _check_pngs(section, tmp_path):
    assert section.figures
    for ref in section.figures:
        data = (tmp_path / ref.path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, ref.path


@pytest.fixture
def writer(tmp_path):
    return FigureWriter(tmp_path / "figures", tmp_path, dpi=40)


def test_astrometry_known_dec_shift_and_missing_detector(tmp_path, writer):
    ref = _refcat()
    products = FakeProducts([0, 1, 2], {0: _sources(ref, np.arange(0, 20), ddec_mas=30.0),
                                        1: _sources(ref, np.arange(20, 40), ddec_mas=30.0, detector=1)},
                            ref, headers={0: _header(astrom_rms=0.007)})
    sec = astrometry.build(products, QaConfig(), writer)
    m = _metrics(sec)
    for d in (0, 1):
        assert m[("nAstromMatch", d)] == 20
        assert abs(m[("astromResidualDecMean", d)] - 30.0) < 1e-6
        assert abs(m[("astromResidualRaMean", d)]) < 1e-6
        assert abs(m[("astromResidualRms", d)] - 30.0) < 1e-6
        assert abs(m[("astromOffsetMean", d)] - 0.030) < 1e-9   # arcsec
        assert m[("astromOffsetStd", d)] < 1e-9
    assert abs(m[("astromResidualDecMeanVisit", None)] - 30.0) < 1e-6 and m[("nAstromMatchVisit", None)] == 40
    assert abs(m[("astromFitRms", 0)] - 7.0) < 1e-12 and math.isnan(m[("astromFitRms", 1)])
    # detector 2 has no catalog: NaN metrics and a note, the section still builds
    assert all(math.isnan(m[(n, 2)]) for n in ("nAstromMatch", "astromResidualRms", "astromOffsetMean"))
    assert any("Detector 2" in note for note in sec.notes)
    assert [f.path for f in sec.figures] == ["figures/astrometry_quiver.png", "figures/astrometry_residual_hist.png",
                                             "figures/astrometry_rms_per_detector.png"]
    _check_pngs(sec, tmp_path)


def test_astrometry_uses_calib_astrometry_used_when_it_flags_rows(writer):
    ref = _refcat()
    src = _sources(ref, np.arange(40), ddec_mas=30.0)
    used = np.zeros(40, bool)
    used[:10] = True
    src["calib_astrometry_used"] = used
    # the other 30 rows sit 200 mas off: they must not enter
    dec = np.asarray(src["coord_dec"]).copy()
    dec[10:] += np.radians(170.0 / 3.6e6)
    src["coord_dec"] = dec
    m = _metrics(astrometry.build(FakeProducts([0], {0: src}, ref), QaConfig(), writer))
    assert m[("nAstromMatch", 0)] == 10 and abs(m[("astromResidualDecMean", 0)] - 30.0) < 1e-6


def test_astrometry_selection_drops_extended_faint_and_beyond_radius(writer):
    ref = _refcat()
    src = _sources(ref, np.arange(40), ddec_mas=30.0)
    ext = np.zeros(40)
    ext[:5] = 1.0                      # galaxies
    err = np.asarray(src["base_PsfFlux_fluxErr"]).copy()
    err[5:10] = np.asarray(src["base_PsfFlux_flux"])[5:10] / 5.0   # S/N 5
    dec = np.asarray(src["coord_dec"]).copy()
    dec[10:15] += np.radians(2.0 / 3600.0)   # 2 arcsec off: beyond the 1 arcsec radius
    src["base_ClassificationExtendedness_value"], src["base_PsfFlux_fluxErr"], src["coord_dec"] = ext, err, dec
    m = _metrics(astrometry.build(FakeProducts([0], {0: src}, ref), QaConfig(), writer))
    assert m[("nAstromMatch", 0)] == 25 and abs(m[("astromResidualDecMean", 0)] - 30.0) < 1e-6


def test_photometry_known_zero_point_offset(tmp_path, writer):
    ref = _refcat()
    products = FakeProducts(
        [0, 1, 2], {0: _sources(ref, np.arange(0, 20), dmag=0.025, ap_minus_psf=0.004),
                    1: _sources(ref, np.arange(20, 40), dmag=0.025, ap_minus_psf=0.004, detector=1)},
        ref, headers={0: _header(magzero_err=0.0021), 1: _header()},
        visit_summary=Table({"detector": [0, 1, 2], "zeroPoint": [30.0, 30.01, 30.02]}))
    sec = photometry.build(products, QaConfig(), writer)
    m = _metrics(sec)
    for d in (0, 1):
        assert abs(m[("photomRefMagDiffMedian", d)] - 25.0) < 1e-6      # mmag
        assert m[("photomRefMagDiffSigmaMad", d)] < 1e-6
        assert m[("nPhotomMatch", d)] == 20
        assert abs(m[("psfApMagDiffMedian", d)] + 4.0) < 1e-6           # PSF - aperture = -4 mmag
        assert m[("nPsfApStar", d)] == 20
    assert abs(m[("zeroPointErr", 0)] - 2.1) < 1e-9
    assert [m[("zeroPoint", d)] for d in (0, 1, 2)] == [30.0, 30.01, 30.02]
    assert abs(m[("zeroPointScatter", None)] - 10.0) < 1e-9             # std (ddof 1) of 0, 10, 20 mmag
    assert abs(m[("photomRefMagDiffMedianVisit", None)] - 25.0) < 1e-6
    assert all(math.isnan(m[(n, 2)]) for n in ("photomRefMagDiffMedian", "psfApMagDiffMedian", "nPhotomMatch"))
    assert any("Detector 2" in note for note in sec.notes)
    _check_pngs(sec, tmp_path)


def test_photometry_without_band_column_is_nan_with_a_note(writer):
    ref = _refcat()
    ref.remove_column("r_flux")
    products = FakeProducts([0], {0: _sources(_refcat(), np.arange(20))}, ref, headers={0: _header()})
    sec = photometry.build(products, QaConfig(), writer)
    m = _metrics(sec)
    assert math.isnan(m[("photomRefMagDiffMedian", 0)]) and any("r_flux" in n for n in sec.notes)
    assert abs(m[("psfApMagDiffMedian", 0)]) < 1e-6   # PSF - aperture does not need the reference


def _field(c10=0.02, c01=-0.01, c00=1.03):
    return ChebyshevBoundedField(BBOX, np.array([[c00, c10], [c01, 0.0]]))


def _apcorr_products(offsets_mmag=0.0, n=30, seed=5):
    """Detector 0 with a map whose base_PsfFlux and base_GaussianFlux fields the ``n`` stars follow times
    ``10**(offsets_mmag / 2500)``; detector 1 without a map (finalize failed there)."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, SIZE - 1, n), rng.uniform(0, SIZE - 1, n)
    fields = {"base_PsfFlux": _field(), "base_GaussianFlux": _field(0.0, 0.03, 1.08)}
    raw = rng.uniform(1e4, 1e5, n)
    cols = {"detector": np.zeros(n, int), "base_SdssCentroid_x": x, "base_SdssCentroid_y": y,
            "base_FPPosition_x": (x - 499.5) * 0.01, "base_FPPosition_y": (y - 499.5) * 0.01}
    ref = None
    for alg, f in fields.items():
        corr = f.evaluate(x, y)
        if ref is None:
            ref = raw * corr * 10 ** (np.asarray(offsets_mmag) / 2500.0)  # the reference flux the fit saw
        else:
            raw_alg = ref / corr / 10 ** (np.asarray(offsets_mmag) / 2500.0)
        a_raw = raw if alg == "base_PsfFlux" else raw_alg
        cols[f"{alg}_instFlux"] = a_raw * corr          # finalize applied the correction in place
        cols[f"{alg}_apCorr"] = corr
        cols[f"apcorr_{alg}_used"] = np.ones(n, bool)
    cols["base_NormalizedCompensatedTophatFlux_instFlux"] = ref
    stars = Table(cols)
    stars.meta["slots"] = {"CalibFlux": "base_NormalizedCompensatedTophatFlux", "Centroid": "base_SdssCentroid"}
    m = ApCorrMap({f"{a}_instFlux": f for a, f in fields.items()})
    models = Table({"detector": [0, 1], "ap_corr_map": np.array([m, None], dtype=object),
                    "message": ["", "psf fit failed"]})
    return FakeProducts([0, 1], {}, None, refit_psf_models=models, refit_psf_star=stars), fields


def test_apcorr_exact_field_gives_zero_residual_and_known_range(tmp_path, writer):
    products, fields = _apcorr_products()
    sec = apcorr.build(products, QaConfig(apcorr_grid=11), writer)
    m = _metrics(sec)
    for short in ("PsfFlux", "GaussianFlux"):
        assert abs(m[(f"apCorr{short}ResidualMedian", 0)]) < 1e-9
        assert m[(f"apCorr{short}ResidualSigmaMad", 0)] < 1e-9
    # the fields are linear in x and y: their extremes are at the box's corner pixels
    for alg, short in (("base_PsfFlux", "PsfFlux"), ("base_GaussianFlux", "GaussianFlux")):
        corners = fields[alg].evaluate(np.array([0.0, SIZE - 1, 0.0, SIZE - 1]),
                                       np.array([0.0, 0.0, SIZE - 1, SIZE - 1]))
        expect = 2500 * math.log10(corners.max() / corners.min())
        assert abs(m[(f"apCorr{short}Range", 0)] - expect) < 1e-9 * expect
    assert m[("nApCorrStar", 0)] == 30
    assert all(math.isnan(m[(n, 1)]) for n in ("apCorrPsfFluxResidualMedian", "apCorrPsfFluxRange", "nApCorrStar"))
    assert any("Detector 1" in note and "psf fit failed" in note for note in sec.notes)
    names = [f.path for f in sec.figures]
    assert "figures/apcorr_map_d000.png" in names and "figures/apcorr_mosaic_base_PsfFlux.png" in names
    assert "figures/apcorr_stars_base_GaussianFlux.png" in names and "figures/apcorr_map_d001.png" not in names
    _check_pngs(sec, tmp_path)


def test_apcorr_known_star_offsets(writer):
    offsets = np.linspace(-6.0, 10.0, 31)[:30]   # mmag; median of 30 evenly spaced values
    products, _ = _apcorr_products(offsets_mmag=offsets)
    m = _metrics(apcorr.build(products, QaConfig(), writer))
    assert abs(m[("apCorrPsfFluxResidualMedian", 0)] - np.median(offsets)) < 1e-9
    assert abs(m[("apCorrGaussianFluxResidualMedian", 0)] - np.median(offsets)) < 1e-9
    expect_sigma = 1.4826 * np.median(np.abs(offsets - np.median(offsets)))
    assert abs(m[("apCorrPsfFluxResidualSigmaMad", 0)] - expect_sigma) < 1e-9


def test_sections_without_any_product_build_with_nan(writer):
    products = FakeProducts([0], {}, None)
    for mod in (astrometry, photometry, apcorr):
        sec = mod.build(products, QaConfig(), writer)
        assert sec.notes and all(math.isnan(x.value) for x in sec.metrics if x.name != "zeroPointScatter")


def test_catalog_lacking_a_column_gives_nan_and_a_note(writer):
    ref = _refcat()
    broken = _sources(ref, np.arange(20))
    broken.remove_column("base_PsfFlux_fluxErr")
    products = FakeProducts([0, 1], {0: broken, 1: _sources(ref, np.arange(20, 40), ddec_mas=30.0, detector=1)},
                            ref, headers={0: _header(), 1: _header()})
    for mod, name in ((astrometry, "astromResidualRms"), (photometry, "photomRefMagDiffMedian")):
        sec = mod.build(products, QaConfig(), writer)
        m = _metrics(sec)
        assert math.isnan(m[(name, 0)]) and math.isfinite(m[(name, 1)])
        assert any("Detector 0" in n and "base_PsfFlux_fluxErr" in n for n in sec.notes)
