"""The astrometry section of `visitcal qa`: final source positions against the reference catalog.

Selection (`astrometry_stars`), per detector, on the final ``source`` catalog:

* the rows flagged ``calib_astrometry_used`` when the column exists and flags any row (calibrate's own
  astrometric stars, carried to the final catalog);
* otherwise the point sources of `point_sources`: ``detect_isPrimary`` (when present), not ``sky_source``,
  ``base_ClassificationExtendedness_value < 0.5``, none of the pixel flags the aperture-correction selector
  vetoes (`visitcal.measurement.measure_ap_corr.PIXEL_BAD_FLAGS`) nor ``base_SdssCentroid_flag`` /
  ``base_PsfFlux_flag``, finite coordinates, and ``base_PsfFlux_flux / base_PsfFlux_fluxErr > astrom_min_snr``
  (`QaConfig`, 50 by default: with S/N > 10 the centroid noise alone gives 30-45 mas of 2-D rms on the simulated
  repositories (/tmp/qarepo, 0.7 arcsec seeing), above the 20 mas warn bound, against 5-8 mas with S/N > 50,
  which still leaves 10-35 matches per 2048^2 detector there).

Each selected source is matched to the nearest reference (``products.refcat``) within
``QaConfig.match_radius_arcsec`` (`visitcal.tasks.isolated_star_association.match_nearest_sphere`, C++).
Residuals are source minus reference: ``dRa = wrap(ra_src - ra_ref) cos(dec_ref)`` and
``dDec = dec_src - dec_ref``, in milliarcseconds (the tangent-plane offsets to better than 1e-6 of
themselves at the arcsecond separations matched).

Metrics (per detector; the same pooled over the visit's detectors with the suffix ``Visit``):

* ``astromOffsetMean`` / ``astromOffsetStd``: mean and standard deviation (ddof 1) of the match separations,
  **arcsec** (LSST's unit and definition: ``ComputeExposureSummaryStatsTask`` copies calibrate's
  ``SFM_ASTROM_OFFSET_MEAN/STD``, the mean and std of the astrometric match distances; here measured again on
  the final catalog and WCS);
* ``astromResidualRaMean``, ``astromResidualDecMean`` (mas): the mean ``dRa``, ``dDec``;
* ``astromResidualRms`` (mas): ``sqrt(mean(dRa^2 + dDec^2))``, the 2-D rms about zero (a mean offset counts);
* ``nAstromMatch``: matched sources;
* ``astromFitRms`` (mas, per detector only): the WCS fit's own residual rms, ``SFM_ASTROM_RMS`` of the
  ``preliminary_visit_image`` header.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..measurement.measure_ap_corr import PIXEL_BAD_FLAGS
from ..tasks.isolated_star_association import match_nearest_sphere
from .figures import draw_detector_outlines, new_figure, thin
from .metrics import Metric, MetricSpec, QaConfig, Threshold, mean_error, register
from .section import HtmlTable, Section

__all__ = ["AstrometryMatches", "SOURCE_COLUMNS", "astrometry_stars", "build", "match_to_refcat", "missing_columns",
           "point_sources", "residual_stats"]

MAS_PER_DEG = 3.6e6

#: The source-catalog columns `point_sources` and `match_to_refcat` cannot do without.
SOURCE_COLUMNS = ("coord_ra", "coord_dec", "base_PsfFlux_flux", "base_PsfFlux_fluxErr")

#: The fewest matches whose offsets are graded (fewer: shown, graded n/a; nAstromMatch itself fails below 5).
MIN_MATCHES = 5

_DET = (
    MetricSpec("astromOffsetMean", "astrometry", "arcsec",
               "Mean separation of the selected final sources from their reference match.",
               threshold=Threshold(warn_above=0.05, fail_above=0.5), lsst_name="astromOffsetMean",
               min_count=MIN_MATCHES),
    MetricSpec("astromOffsetStd", "astrometry", "arcsec",
               "Standard deviation (ddof 1) of the separations of the selected sources from their match.",
               lsst_name="astromOffsetStd"),
    MetricSpec("astromResidualRaMean", "astrometry", "mas",
               "Mean source - reference offset in RA times cos(Dec) of the matched sources (graded on its "
               "significance: standard error std/sqrt(n)).",
               threshold=Threshold(warn_above=10.0, absolute=True), min_count=MIN_MATCHES),
    MetricSpec("astromResidualDecMean", "astrometry", "mas",
               "Mean source - reference offset in Dec of the matched sources (graded on its significance: "
               "standard error std/sqrt(n)).",
               threshold=Threshold(warn_above=10.0, absolute=True), min_count=MIN_MATCHES),
    MetricSpec("astromResidualRms", "astrometry", "mas",
               "2-D rms about zero of the source - reference offsets, sqrt(mean(dRa^2 + dDec^2)).",
               threshold=Threshold(warn_above=20.0, fail_above=100.0), min_count=MIN_MATCHES),
    MetricSpec("nAstromMatch", "astrometry", "",
               "Selected final sources matched to the reference catalog.",
               threshold=Threshold(fail_below=5.0)),
    MetricSpec("astromFitRms", "astrometry", "mas",
               "The WCS fit's own residual rms (SFM_ASTROM_RMS of the preliminary_visit_image header).",
               threshold=Threshold(warn_above=20.0, fail_above=100.0)),
)
_VISIT = tuple(
    MetricSpec(s.name + "Visit", s.section, s.unit, s.description.rstrip(".") + ", pooled over the visit.",
               scope="visit", threshold=s.threshold, min_count=s.min_count)
    for s in _DET if s.name != "astromFitRms")
register(*_DET, *_VISIT)

#: The per-detector metric names computed from the matches, in table order.
_MATCH_METRICS = ("nAstromMatch", "astromOffsetMean", "astromOffsetStd", "astromResidualRaMean",
                  "astromResidualDecMean", "astromResidualRms")


def missing_columns(table, names) -> list[str]:
    """The ``names`` that ``table`` (an astropy Table) lacks, in order."""
    return [n for n in names if n not in table.colnames]


def _column(table, name, default=None):
    return np.asarray(table[name]) if name in table.colnames else default


def point_sources(src, min_snr: float) -> np.ndarray:
    """Boolean mask of the unblemished point sources of a final ``source`` catalog with PSF-flux S/N above
    ``min_snr``.

    Kept: ``detect_isPrimary`` (when the column exists), not ``sky_source``,
    ``base_ClassificationExtendedness_value < 0.5``, none of `PIXEL_BAD_FLAGS`, ``base_SdssCentroid_flag`` and
    ``base_PsfFlux_flag`` set (each only when present), finite ``coord_ra``/``coord_dec``, and
    ``base_PsfFlux_flux / base_PsfFlux_fluxErr > min_snr`` (nJy columns; NaN fails).
    """
    n = len(src)
    keep = np.ones(n, bool)
    primary = _column(src, "detect_isPrimary")
    if primary is not None:
        keep &= primary.astype(bool)
    sky = _column(src, "sky_source")
    if sky is not None:
        keep &= ~sky.astype(bool)
    ext = _column(src, "base_ClassificationExtendedness_value", np.full(n, np.nan))
    with np.errstate(invalid="ignore"):
        keep &= np.asarray(ext, float) < 0.5
    for flag in (*PIXEL_BAD_FLAGS, "base_SdssCentroid_flag", "base_PsfFlux_flag"):
        f = _column(src, flag)
        if f is not None:
            keep &= ~f.astype(bool)
    keep &= np.isfinite(np.asarray(src["coord_ra"], float)) & np.isfinite(np.asarray(src["coord_dec"], float))
    flux = np.asarray(src["base_PsfFlux_flux"], float)
    err = np.asarray(src["base_PsfFlux_fluxErr"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        keep &= flux / err > min_snr
    return keep


def astrometry_stars(src, min_snr: float) -> tuple[np.ndarray, str]:
    """The mask of the sources whose positions are checked, and which selection it is: ``"calib_astrometry_used"``
    when that column flags any row with finite coordinates, else ``"point sources S/N > <min_snr>"``
    (`point_sources`)."""
    used = _column(src, "calib_astrometry_used")
    if used is not None:
        used = used.astype(bool) & np.isfinite(np.asarray(src["coord_ra"], float)) \
            & np.isfinite(np.asarray(src["coord_dec"], float))
        if used.any():
            return used, "calib_astrometry_used"
    return point_sources(src, min_snr), f"point sources S/N > {min_snr:g}"


@dataclasses.dataclass
class AstrometryMatches:
    """The matches of one detector's selected sources: rows into the source catalog and the refcat, the
    separation (arcsec), the residuals source - reference (mas), and the sources' focal-plane positions (mm,
    NaN when the catalog lacks them)."""

    src_rows: np.ndarray
    ref_rows: np.ndarray
    sep_arcsec: np.ndarray
    dra_mas: np.ndarray
    ddec_mas: np.ndarray
    fp_x: np.ndarray
    fp_y: np.ndarray
    selection: str

    def __len__(self) -> int:
        return int(self.src_rows.size)


def match_to_refcat(src, refcat, mask: np.ndarray, radius_arcsec: float, selection: str = "") -> AstrometryMatches:
    """Match the rows ``mask`` of ``src`` (``coord_ra``/``coord_dec`` radians) to the nearest ``refcat`` entry
    (``ra``/``dec`` degrees) within ``radius_arcsec``; unmatched rows are dropped."""
    rows = np.flatnonzero(mask)
    ra = np.degrees(np.asarray(src["coord_ra"], float)[rows])
    dec = np.degrees(np.asarray(src["coord_dec"], float)[rows])
    rra, rdec = np.asarray(refcat["ra"], float), np.asarray(refcat["dec"], float)
    good_ref = np.flatnonzero(np.isfinite(rra) & np.isfinite(rdec))
    if rows.size and good_ref.size:
        idx, sep = match_nearest_sphere(ra, dec, rra[good_ref], rdec[good_ref], radius_arcsec)
    else:
        idx, sep = np.full(rows.size, -1, np.int64), np.full(rows.size, np.nan)
    ok = idx >= 0
    ref_rows = good_ref[idx[ok]]
    ra, dec, sep = ra[ok], dec[ok], sep[ok]
    # wrap the RA difference to [-180, 180) so a pair across RA = 0 gives its small offset
    dra = (np.mod(ra - rra[ref_rows] + 180.0, 360.0) - 180.0) * np.cos(np.radians(rdec[ref_rows])) * MAS_PER_DEG
    ddec = (dec - rdec[ref_rows]) * MAS_PER_DEG
    src_rows = rows[ok]
    nan = np.full(len(src), np.nan)
    fpx = np.asarray(_column(src, "base_FPPosition_x", nan), float)[src_rows]
    fpy = np.asarray(_column(src, "base_FPPosition_y", nan), float)[src_rows]
    return AstrometryMatches(src_rows, ref_rows, sep, dra, ddec, fpx, fpy, selection)


def residual_stats(sep_arcsec, dra_mas, ddec_mas) -> dict[str, float]:
    """The metrics of `_MATCH_METRICS` from the match separations (arcsec) and residuals (mas); NaN where not
    measurable (no match; one match for the std)."""
    n = int(np.size(sep_arcsec))
    nan = math.nan
    if n == 0:
        return {"nAstromMatch": 0.0, "astromOffsetMean": nan, "astromOffsetStd": nan, "astromResidualRaMean": nan,
                "astromResidualDecMean": nan, "astromResidualRms": nan}
    return {
        "nAstromMatch": float(n),
        "astromOffsetMean": float(np.mean(sep_arcsec)),
        "astromOffsetStd": float(np.std(sep_arcsec, ddof=1)) if n > 1 else nan,
        "astromResidualRaMean": float(np.mean(dra_mas)),
        "astromResidualDecMean": float(np.mean(ddec_mas)),
        "astromResidualRms": float(np.sqrt(np.mean(dra_mas ** 2 + ddec_mas ** 2))),
    }


def residual_uncertainties(sep_arcsec, dra_mas, ddec_mas) -> dict[str, tuple[float, int]]:
    """``{metric: (standard error, count)}`` of the match metrics: the mean offsets' standard errors
    (std/sqrt(n)); the separation mean and the rms carry only their count."""
    n = int(np.size(sep_arcsec))
    return {"astromOffsetMean": (math.nan, n), "astromResidualRms": (math.nan, n),
            "astromResidualRaMean": (mean_error(dra_mas), n), "astromResidualDecMean": (mean_error(ddec_mas), n)}


def _fit_rms_mas(products, d) -> float:
    h = products.header("preliminary_visit_image", d)
    if h is None:
        return math.nan
    v = h.get("SFM_ASTROM_RMS")
    try:
        return float(v) * 1000.0 if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def build(products, config: QaConfig, figures) -> Section:
    """The astrometry section of one visit (module docstring): metrics per detector and per visit, a residual
    quiver over the focal plane, residual histograms, the rms per detector and a table."""
    sec = Section("astrometry", "Astrometry: final sources against the reference catalog")
    min_snr = config.astrom_min_snr
    refcat = products.refcat
    if refcat is None:
        sec.notes.append("No reference catalog: " + products.problems.get("refcat", "not found") +
                         "; the match metrics are NaN.")
    elif missing_columns(refcat, ("ra", "dec")):
        sec.notes.append("The reference catalog lacks ra/dec: the match metrics are NaN.")
        refcat = None
    per_det: dict[int, AstrometryMatches | None] = {}
    for d in products.detectors:
        src = products.source(d) if refcat is not None else None
        if refcat is not None and src is None:
            why = products.problems.get(f"source {products.visit:06d}/{d:03d}", "missing")
            sec.notes.append(f"Detector {d}: no final source catalog ({why}); its astrometry metrics are NaN.")
        elif src is not None and missing_columns(src, SOURCE_COLUMNS):
            lacking = ", ".join(missing_columns(src, SOURCE_COLUMNS))
            sec.notes.append(f"Detector {d}: the source catalog lacks {lacking}; "
                             "its astrometry metrics are NaN.")
            src = None
        m = None
        if src is not None:
            mask, selection = astrometry_stars(src, min_snr)
            m = match_to_refcat(src, refcat, mask, config.match_radius_arcsec, selection)
        per_det[d] = m
        stats = residual_stats(m.sep_arcsec, m.dra_mas, m.ddec_mas) if m is not None \
            else dict.fromkeys(_MATCH_METRICS, math.nan)
        unc = residual_uncertainties(m.sep_arcsec, m.dra_mas, m.ddec_mas) if m is not None else {}
        for name in _MATCH_METRICS:
            sec.metrics.append(Metric(name, stats[name], d, *unc.get(name, (math.nan, None))))
        sec.metrics.append(Metric("astromFitRms", _fit_rms_mas(products, d), d))

    got = [m for m in per_det.values() if m is not None]
    if got:
        arrays = (np.concatenate([m.sep_arcsec for m in got]), np.concatenate([m.dra_mas for m in got]),
                  np.concatenate([m.ddec_mas for m in got]))
        pooled, unc = residual_stats(*arrays), residual_uncertainties(*arrays)
    else:
        pooled, unc = dict.fromkeys(_MATCH_METRICS, math.nan), {}
    for name in _MATCH_METRICS:
        sec.metrics.append(Metric(name + "Visit", pooled[name], None, *unc.get(name, (math.nan, None))))
    selections = sorted({m.selection for m in got})
    if selections:
        sec.notes.append(f"Sources checked: {'; '.join(selections)}; matched within {config.match_radius_arcsec:g} "
                         "arcsec; residuals are source - reference (dRa = dRA cos Dec).")

    values = {(m.name, m.detector): m.value for m in sec.metrics}
    cols = ["detector", "selection", *_MATCH_METRICS, "astromFitRms"]
    rows = []
    for d in products.detectors:
        m = per_det[d]
        rows.append([d, m.selection if m is not None else "no catalog",
                     *[values[(c, d)] for c in cols[2:]]])
    rows.append(["visit", "", *[values[(c + "Visit", None)] for c in _MATCH_METRICS], math.nan])
    sec.tables.append(HtmlTable("Astrometric residuals per detector (offsets in arcsec, residuals in mas).", cols, rows,
                                {"detector": "{}", "nAstromMatch": "{:.0f}"}))
    _figures(sec, products, config, figures, per_det, values)
    return sec


def _figures(sec, products, config, figures, per_det, values) -> None:
    got = [m for m in per_det.values() if m is not None and len(m)]
    dra = np.concatenate([m.dra_mas for m in got]) if got else np.zeros(0)
    ddec = np.concatenate([m.ddec_mas for m in got]) if got else np.zeros(0)
    fpx = np.concatenate([m.fp_x for m in got]) if got else np.zeros(0)
    fpy = np.concatenate([m.fp_y for m in got]) if got else np.zeros(0)

    # 1. quiver over the focal plane
    fig, ax = new_figure(width=6.5, height=5.5)
    draw_detector_outlines(ax, products)
    ok = np.isfinite(fpx) & np.isfinite(fpy)
    keep = np.flatnonzero(ok)[thin(int(ok.sum()), config.max_plot_points)]
    if keep.size:
        amp = np.hypot(dra[keep], ddec[keep])
        key = float(np.percentile(amp, 90)) if np.any(amp > 0) else 1.0
        key = float(10 ** np.round(np.log10(key))) if key > 0 else 1.0  # a round key length
        span = max(np.ptp(fpx[keep]), np.ptp(fpy[keep]), 1.0)
        scale = key / (0.06 * span)  # the key arrow is 6% of the field: mas per mm
        q = ax.quiver(fpx[keep], fpy[keep], dra[keep], ddec[keep], angles="xy", scale_units="xy", scale=scale,
                      width=0.003, color="C0")
        ax.quiverkey(q, 0.80, 0.96, key, f"{key:g} mas", labelpos="E", coordinates="axes")
    else:
        ax.text(0.5, 0.5, "no matched source with a focal-plane position", transform=ax.transAxes, ha="center")
    ax.set_xlabel("focal plane x (mm)")
    ax.set_ylabel("focal plane y (mm)")
    sec.figures.append(figures.save(fig, "astrometry_quiver",
                                    "Astrometric residuals (source - reference, components dRA cos Dec and dDec, "
                                    "drawn along focal-plane x and y) of the matched stars over the focal plane; "
                                    "the key arrow gives the scale in mas."))

    # 2. histograms
    fig, axes = new_figure(2, 1, width=4.0, height=3.2)
    for ax, v, label in ((axes[0], dra, "dRA cos Dec (mas)"), (axes[1], ddec, "dDec (mas)")):
        v = v[np.isfinite(v)]
        if v.size:
            ax.hist(v, bins=min(60, max(5, int(np.sqrt(v.size)))), color="C0")
            ax.axvline(float(np.mean(v)), color="C3", lw=1, label=f"mean {np.mean(v):.2f}")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no matches", transform=ax.transAxes, ha="center")
        ax.set_xlabel(label)
    axes[0].set_ylabel("sources")
    sec.figures.append(figures.save(fig, "astrometry_residual_hist",
                                    "Histograms of the source - reference residuals of all matched stars (mas)."))

    # 3. rms per detector
    fig, ax = new_figure(width=max(4.0, 0.5 * len(products.detectors) + 2), height=3.2)
    dets = list(products.detectors)
    rms = [values[("astromResidualRms", d)] for d in dets]
    fit = [values[("astromFitRms", d)] for d in dets]
    xs = np.arange(len(dets))
    ax.bar(xs - 0.2, np.nan_to_num(rms), width=0.4, label="final vs refcat (2-D rms)")
    ax.bar(xs + 0.2, np.nan_to_num(fit), width=0.4, label="WCS fit (SFM_ASTROM_RMS)")
    ax.set_xticks(xs, [str(d) for d in dets])
    ax.set_xlabel("detector")
    ax.set_ylabel("rms (mas)")
    ax.legend(fontsize=7)
    sec.figures.append(figures.save(fig, "astrometry_rms_per_detector",
                                    "Astrometric rms per detector: the final sources against the reference catalog, "
                                    "and the WCS fit's own rms (missing values drawn as 0)."))
