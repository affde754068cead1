"""The photometry section of `visitcal qa`: zero points, calibrated against reference magnitudes, PSF against
aperture magnitudes.

* **Zero points** (``products.visit_summary``): ``zeroPoint`` per detector, LSST's summary statistic, the AB
  magnitude of one count for the whole exposure (``2.5 log10(instFluxAtZeroMagnitude)``,
  `visitcal.tasks.compute_exposure_summary_stats`; exposure time included, unlike the header's per-second
  ``MAGZERO``); ``zeroPointScatter`` (visit, mmag): their standard deviation (ddof 1) across the detectors
  that have one; ``zeroPointErr`` (mmag): calibrate's ``MAGZERO_ERR`` of the ``preliminary_visit_image``
  header (the zero point's error with its stars' excess scatter).
* **Calibrated - reference** (per detector and pooled, ``...Visit``): the point sources of
  `visitcal.qa.astrometry.point_sources` with PSF-flux S/N above ``QaConfig.photom_min_snr`` (50), matched to
  the reference catalog within ``match_radius_arcsec``; ``base_PsfFlux_mag`` (AB, from the calibrated nJy flux)
  minus the reference's AB magnitude ``31.4 - 2.5 log10(<band>_flux / nJy)``
  (`visitcal.core.photocalib.AB_ZERO_POINT_NJY`), ``<band>`` the exposure's ``BAND`` header card.
  ``photomRefMagDiffMedian`` (mmag) is the median, ``photomRefMagDiffSigmaMad`` (mmag) the robust sigma
  (`visitcal.qa.metrics.robust_sigma`), ``nPhotomMatch`` the number.
* **PSF - aperture**: ``base_PsfFlux_mag - base_CircularApertureFlux_12_0_mag`` of the point sources with
  PSF-flux S/N above ``QaConfig.psf_ap_min_snr`` (100) and an unflagged, positive 12-pixel aperture flux: the
  two fluxes of analysis_tools' ``Ap12_PSF`` plots (``ap12Flux``, ``psfFlux``), whose ``MagDiff`` is drawn
  there as aperture - PSF; here PSF - aperture, as the metric's name says (negative: the PSF flux is the
  brighter). ``psfApMagDiffMedian``, ``psfApMagDiffSigmaMad`` (mmag), ``nPsfApStar``.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.photocalib import AB_ZERO_POINT_NJY
from .astrometry import SOURCE_COLUMNS, match_to_refcat, missing_columns, point_sources
from .figures import draw_detector_outlines, new_figure, thin
from .metrics import Metric, MetricSpec, QaConfig, Threshold, median_error, register, robust_sigma
from .section import HtmlTable, Section

__all__ = ["band_of", "build", "psf_ap_diff_mmag", "ref_mag_diff_mmag"]

APERTURE = "base_CircularApertureFlux_12_0"

#: The fewest stars whose median magnitude differences are graded (fewer: shown, graded n/a).
MIN_STARS = 5

_DET = (
    MetricSpec("zeroPoint", "photometry", "mag",
               "AB magnitude of one count over the whole exposure (visit summary).", lsst_name="zeroPoint"),
    MetricSpec("zeroPointErr", "photometry", "mmag",
               "Error of calibrate's zero point (MAGZERO_ERR of the preliminary_visit_image header)."),
    MetricSpec("photomRefMagDiffMedian", "photometry", "mmag",
               "Median calibrated PSF - reference AB magnitude of the matched point sources above the S/N cut "
               "(graded on its significance: standard error 1.2533 sigmaMAD/sqrt(n)).",
               threshold=Threshold(warn_above=10.0, fail_above=50.0, absolute=True), min_count=MIN_STARS),
    MetricSpec("photomRefMagDiffSigmaMad", "photometry", "mmag",
               "Robust sigma (1.4826 MAD) of calibrated PSF - reference AB magnitude of those stars."),
    MetricSpec("nPhotomMatch", "photometry", "",
               "Point sources above the photometry S/N cut matched to the reference catalog."),
    MetricSpec("psfApMagDiffMedian", "photometry", "mmag",
               "Median PSF - 12-pixel aperture magnitude of the bright point sources (graded on its significance: "
               "standard error 1.2533 sigmaMAD/sqrt(n)).",
               threshold=Threshold(warn_above=10.0, fail_above=30.0, absolute=True), min_count=MIN_STARS),
    MetricSpec("psfApMagDiffSigmaMad", "photometry", "mmag",
               "Robust sigma (1.4826 MAD) of the PSF - 12-pixel aperture magnitude of the bright point sources."),
    MetricSpec("nPsfApStar", "photometry", "", "Bright point sources of the PSF - aperture magnitude metrics."),
)
_VISIT = (
    MetricSpec("zeroPointScatter", "photometry", "mmag",
               "Standard deviation (ddof 1) of the detectors' zero points.", scope="visit",
               threshold=Threshold(warn_above=20.0)),
    *(MetricSpec(s.name + "Visit", s.section, s.unit, s.description.rstrip(".") + ", pooled over the visit.",
                 scope="visit", threshold=s.threshold, min_count=s.min_count)
      for s in _DET if s.name in ("photomRefMagDiffMedian", "photomRefMagDiffSigmaMad", "nPhotomMatch",
                                  "psfApMagDiffMedian", "psfApMagDiffSigmaMad", "nPsfApStar")),
)
register(*_DET, *_VISIT)

_REF = ("photomRefMagDiffMedian", "photomRefMagDiffSigmaMad", "nPhotomMatch")
_PSFAP = ("psfApMagDiffMedian", "psfApMagDiffSigmaMad", "nPsfApStar")


def band_of(products) -> str | None:
    """The visit's abstract band: the ``BAND`` card of the first ``visit_image`` (else
    ``preliminary_visit_image``) header that has one; None when none does."""
    for name in ("visit_image", "preliminary_visit_image"):
        for d in products.detectors:
            h = products.header(name, d)
            if h is not None and str(h.get("BAND", "")).strip():
                return str(h["BAND"]).strip()
    return None


def ref_mag_diff_mmag(src, refcat, band: str, min_snr: float, radius_arcsec: float):
    """Calibrated minus reference magnitude (mmag) of the point sources of ``src`` above ``min_snr`` matched to
    ``refcat`` within ``radius_arcsec``, with their reference magnitudes and focal-plane positions:
    ``(diff_mmag, ref_mag, fp_x, fp_y)``; only pairs with a finite source magnitude and positive reference flux."""
    m = match_to_refcat(src, refcat, point_sources(src, min_snr), radius_arcsec)
    flux = np.asarray(refcat[f"{band}_flux"], float)[m.ref_rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        ref_mag = AB_ZERO_POINT_NJY - 2.5 * np.log10(flux)
    mag = np.asarray(src["base_PsfFlux_mag"], float)[m.src_rows]
    ok = (flux > 0) & np.isfinite(ref_mag) & np.isfinite(mag)
    return 1000.0 * (mag[ok] - ref_mag[ok]), ref_mag[ok], m.fp_x[ok], m.fp_y[ok]


def psf_ap_diff_mmag(src, min_snr: float):
    """PSF minus 12-pixel aperture magnitude (mmag) of the point sources of ``src`` above ``min_snr`` with a
    positive, unflagged aperture flux, and their PSF magnitudes: ``(diff_mmag, psf_mag)``."""
    if f"{APERTURE}_mag" not in src.colnames:
        return np.zeros(0), np.zeros(0)
    keep = point_sources(src, min_snr)
    if f"{APERTURE}_flag" in src.colnames:
        keep &= ~np.asarray(src[f"{APERTURE}_flag"], bool)
    with np.errstate(invalid="ignore"):
        keep &= np.asarray(src[f"{APERTURE}_flux"], float) > 0
    psf = np.asarray(src["base_PsfFlux_mag"], float)[keep]
    ap = np.asarray(src[f"{APERTURE}_mag"], float)[keep]
    ok = np.isfinite(psf) & np.isfinite(ap)
    return 1000.0 * (psf[ok] - ap[ok]), psf[ok]


def _uncertainties(values, names) -> dict[str, tuple[float, int]]:
    """The median's standard error and the count, for the median metric of ``names``."""
    v = np.asarray(values, float)
    return {names[0]: (median_error(v), int(v.size))}


def _stats(values, names) -> dict[str, float]:
    v = np.asarray(values, float)
    if v.size == 0:
        return {names[0]: math.nan, names[1]: math.nan, names[2]: 0.0}
    return {names[0]: float(np.median(v)), names[1]: robust_sigma(v), names[2]: float(v.size)}


def _header_float(products, d, key) -> float:
    h = products.header("preliminary_visit_image", d)
    if h is None or h.get(key) is None:
        return math.nan
    try:
        return float(h[key])
    except (TypeError, ValueError):
        return math.nan


def build(products, config: QaConfig, figures) -> Section:
    """The photometry section of one visit (module docstring): zero points over the focal plane, calibrated -
    reference and PSF - aperture magnitudes, their metrics, figures and a table per detector."""
    sec = Section("photometry", "Photometry: zero points, reference magnitudes, PSF - aperture")

    # zero points
    zp = dict.fromkeys(products.detectors, math.nan)
    vs = products.visit_summary
    if vs is None:
        sec.notes.append("No visit summary (" + next((v for k, v in products.problems.items()
                                                     if k.startswith("visit_summary")), "missing") +
                         "): zero points are NaN.")
    elif missing_columns(vs, ("detector", "zeroPoint")):
        sec.notes.append("The visit summary lacks " + ", ".join(missing_columns(vs, ("detector", "zeroPoint"))) +
                         ": zero points are NaN.")
    else:
        for det, value in zip(np.asarray(vs["detector"]), np.asarray(vs["zeroPoint"], float)):
            if int(det) in zp:
                zp[int(det)] = float(value)
    for d in products.detectors:
        sec.metrics.append(Metric("zeroPoint", zp[d], d))
        sec.metrics.append(Metric("zeroPointErr", 1000.0 * _header_float(products, d, "MAGZERO_ERR"), d))
    finite = np.array([v for v in zp.values() if math.isfinite(v)])
    sec.metrics.append(Metric("zeroPointScatter", 1000.0 * np.std(finite, ddof=1) if finite.size > 1 else math.nan))

    # calibrated - reference, PSF - aperture
    band = band_of(products)
    refcat = products.refcat
    ref_ok = refcat is not None and band is not None and not missing_columns(refcat, ("ra", "dec", f"{band}_flux"))
    if refcat is None:
        sec.notes.append("No reference catalog: the reference-magnitude metrics are NaN.")
    elif band is None:
        sec.notes.append("No BAND card in the image headers: the reference-magnitude metrics are NaN.")
    elif not ref_ok:
        lacking = ", ".join(missing_columns(refcat, ("ra", "dec", f"{band}_flux")))
        sec.notes.append(f"The reference catalog lacks {lacking}: "
                         "the reference-magnitude metrics are NaN.")
    ref_parts, ap_parts = {}, {}
    for d in products.detectors:
        src = products.source(d)
        lacking = missing_columns(src, (*SOURCE_COLUMNS, "base_PsfFlux_mag")) if src is not None else []
        if src is None or lacking:
            why = products.problems.get(f"source {products.visit:06d}/{d:03d}", "missing") if src is None \
                else "lacks " + ", ".join(lacking)
            sec.notes.append(f"Detector {d}: no usable final source catalog ({why}); its photometry metrics are NaN.")
            for name in (*_REF, *_PSFAP):
                sec.metrics.append(Metric(name, math.nan, d))
            continue
        unc = {}
        if ref_ok:
            ref_parts[d] = ref_mag_diff_mmag(src, refcat, band, config.photom_min_snr, config.match_radius_arcsec)
            st = _stats(ref_parts[d][0], _REF)
            unc.update(_uncertainties(ref_parts[d][0], _REF))
        else:
            st = dict.fromkeys(_REF, math.nan)
        ap_parts[d] = psf_ap_diff_mmag(src, config.psf_ap_min_snr)
        st.update(_stats(ap_parts[d][0], _PSFAP))
        unc.update(_uncertainties(ap_parts[d][0], _PSFAP))
        for name in (*_REF, *_PSFAP):
            sec.metrics.append(Metric(name, st[name], d, *unc.get(name, (math.nan, None))))
    pooled, unc = dict.fromkeys((*_REF, *_PSFAP), math.nan), {}
    for parts, names in ((ref_parts, _REF), (ap_parts, _PSFAP)):
        if parts:
            values = np.concatenate([p[0] for p in parts.values()])
            pooled.update(_stats(values, names))
            unc.update(_uncertainties(values, names))
    for name in (*_REF, *_PSFAP):
        sec.metrics.append(Metric(name + "Visit", pooled[name], None, *unc.get(name, (math.nan, None))))
    if ref_ok:
        sec.notes.append(f"Reference magnitudes: {band}_flux as AB; stars: point sources with PSF S/N > "
                         f"{config.photom_min_snr:g} matched within {config.match_radius_arcsec:g} arcsec. "
                         f"PSF - aperture: {APERTURE} on point sources with PSF S/N > {config.psf_ap_min_snr:g}.")

    values = {(m.name, m.detector): m.value for m in sec.metrics}
    cols = ["detector", "zeroPoint", "zeroPointErr", *_REF, *_PSFAP]
    rows = [[d, *[values[(c, d)] for c in cols[1:]]] for d in products.detectors]
    rows.append(["visit", math.nan, math.nan, *[values[(c + "Visit", None)] for c in (*_REF, *_PSFAP)]])
    sec.tables.append(HtmlTable("Photometry per detector (zeroPoint in mag, the rest in mmag).", cols, rows,
                                {"detector": "{}", "zeroPoint": "{:.4f}", "nPhotomMatch": "{:.0f}",
                                 "nPsfApStar": "{:.0f}"}))
    _figures(sec, products, config, figures, zp, ref_parts, ap_parts, band)
    return sec


def _figures(sec, products, config, figures, zp, ref_parts, ap_parts, band) -> None:
    from matplotlib.collections import PolyCollection

    # 1. zero points over the focal plane
    fig, ax = new_figure(width=6.0, height=5.0)
    polys, vals = [], []
    for d in products.detectors:
        xy = products.detector_outline_mm(d)
        if xy is not None and math.isfinite(zp[d]):
            polys.append(xy[:4])
            vals.append(zp[d])
    draw_detector_outlines(ax, products)
    if polys:
        pc = PolyCollection(polys, array=np.asarray(vals), cmap="viridis", edgecolors="0.3", linewidths=0.6,
                            zorder=0)  # under the outlines and their labels
        ax.add_collection(pc)
        ax.autoscale_view()
        fig.colorbar(pc, ax=ax, label="zeroPoint (mag of 1 count)")
    else:
        ax.text(0.5, 0.5, "no zero point with a detector geometry", transform=ax.transAxes, ha="center")
    sec.figures.append(figures.save(fig, "photometry_zero_point",
                                    "Zero point per detector (visit summary zeroPoint: AB magnitude of one count "
                                    "over the exposure) over the focal plane."))

    # 2. calibrated - reference
    fig, axes = new_figure(2, 1, width=4.6, height=3.8)
    diff = np.concatenate([p[0] for p in ref_parts.values()]) if ref_parts else np.zeros(0)
    mag = np.concatenate([p[1] for p in ref_parts.values()]) if ref_parts else np.zeros(0)
    fpx = np.concatenate([p[2] for p in ref_parts.values()]) if ref_parts else np.zeros(0)
    fpy = np.concatenate([p[3] for p in ref_parts.values()]) if ref_parts else np.zeros(0)
    keep = thin(diff.size, config.max_plot_points)
    if diff.size:
        axes[0].scatter(mag[keep], diff[keep], s=4, alpha=0.6)
        axes[0].axhline(float(np.median(diff)), color="C3", lw=1, label=f"median {np.median(diff):.1f} mmag")
        axes[0].legend(fontsize=7)
        lim = max(3.0 * robust_sigma(diff), 1.0) if diff.size > 1 else 10.0
        sc = axes[1].scatter(fpx[keep], fpy[keep], c=diff[keep], s=8, cmap="coolwarm",
                             vmin=float(np.median(diff)) - lim, vmax=float(np.median(diff)) + lim)
        fig.colorbar(sc, ax=axes[1], label="calibrated - reference (mmag)")
    else:
        axes[0].text(0.5, 0.5, "no matched star", transform=axes[0].transAxes, ha="center")
    draw_detector_outlines(axes[1], products, label=False)
    axes[0].set_xlabel(f"reference {band or '?'} magnitude (AB)")
    axes[0].set_ylabel("calibrated PSF - reference (mmag)")
    sec.figures.append(figures.save(fig, "photometry_ref_mag_diff",
                                    f"Calibrated PSF minus reference AB magnitude of the matched point sources with "
                                    f"PSF S/N > {config.photom_min_snr:g}, against the reference magnitude and over "
                                    "the focal plane."))

    # 3. PSF - aperture
    fig, ax = new_figure(width=5.5, height=3.8)
    drawn = False
    for d, (dm, m) in ap_parts.items():
        k = thin(dm.size, max(1, config.max_plot_points // max(1, len(ap_parts))))
        if dm.size:
            ax.scatter(m[k], dm[k], s=4, alpha=0.6, label=f"detector {d}")
            drawn = True
    if drawn:
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.legend(fontsize=7, markerscale=2)
    else:
        ax.text(0.5, 0.5, "no bright point source", transform=ax.transAxes, ha="center")
    ax.set_xlabel("PSF magnitude (AB)")
    ax.set_ylabel(f"PSF - {APERTURE} (mmag)")
    sec.figures.append(figures.save(fig, "photometry_psf_ap",
                                    f"PSF minus 12-pixel aperture magnitude against magnitude, point sources with "
                                    f"PSF S/N > {config.psf_ap_min_snr:g}."))
