"""The catalog section: what the final source catalog holds, per detector.

From each detector's ``source`` catalog (reprocess's output, calibrated fluxes in nJy):

- number counts of PSF magnitude, point sources and extended ones apart (``base_ClassificationExtendedness_value``
  0 or 1), among primary, non-sky sources;
- S/N (``base_PsfFlux_flux / base_PsfFlux_fluxErr``) against magnitude, and two completeness proxies: the
  magnitude where the median S/N falls to 10 (``magAtSnr10``: the catalog's depth as measured, beside the
  summary's predicted 5-sigma ``magLim``; S/N 10 rather than 5 because a 5-sigma detection threshold leaves
  the median of the faintest bin above 5) and the peak of the number counts (``numberCountsPeakMag``, where
  incompleteness overtakes the rising counts);
- the extendedness against magnitude and the fraction of extended sources;
- the rate of the main flags;
- the sky sources (``sky_source``): the flux in the 9-px aperture of these empty-sky positions, whose median
  is the residual background level (analysis_tools' ``medianSky``, ``sigmaMADSky``; nJy), and its median
  significance (flux / error; ~0 when the background is right).
"""

from __future__ import annotations

import math

import numpy as np

from .figures import FigureWriter, new_figure, thin
from .metrics import Metric, MetricSpec, QaConfig, Threshold, register, robust_sigma
from .products import VisitProducts
from .section import HtmlTable, Section

__all__ = ["FLAG_METRICS", "SKY_FLUX", "build", "catalog_metrics"]

#: The aperture of the sky-source statistics (LSST's analysis_tools use the 9-px aperture).
SKY_FLUX = "base_CircularApertureFlux_9_0"

#: metric name -> (flag column, what it means): the fraction of primary non-sky sources with the flag.
FLAG_METRICS = {
    "fractionSaturatedCenter": ("base_PixelFlags_flag_saturatedCenter", "a saturated pixel in the central 3x3"),
    "fractionCosmicRayCenter": ("base_PixelFlags_flag_crCenter", "a cosmic-ray pixel in the central 3x3"),
    "fractionInterpolatedCenter": ("base_PixelFlags_flag_interpolatedCenter",
                                   "an interpolated pixel in the central 3x3"),
    "fractionEdge": ("base_PixelFlags_flag_edge", "the footprint touches the image edge"),
    "fractionPsfFluxFlagged": ("base_PsfFlux_flag", "the PSF flux failed"),
    "fractionCentroidFlagged": ("base_SdssCentroid_flag", "the centroid failed"),
    "fractionShapeFlagged": ("base_SdssShape_flag", "the adaptive moments failed"),
}

register(
    MetricSpec("nSources", "catalog", "", "Primary non-sky sources in the final catalog.",
               threshold=Threshold(fail_below=1)),
    MetricSpec("nSkySources", "catalog", "", "Sky sources (empty-sky positions measured like sources)."),
    MetricSpec("fractionExtended", "catalog", "",
               "Fraction of primary non-sky sources with S/N > 10 whose extendedness is 1."),
    MetricSpec("magAtSnr10", "catalog", "mag",
               "PSF magnitude where the median PSF-flux S/N of primary non-sky sources falls to 10 (log S/N "
               "interpolated linearly between 0.25-mag bins of at least 3 sources); NaN when no bin is below 10."),
    MetricSpec("numberCountsPeakMag", "catalog", "mag",
               "Centre of the fullest 0.25-mag bin of the PSF-magnitude counts of primary non-sky sources (the "
               "faintest one on a tie)."),
    MetricSpec("medianSky", "catalog", "nJy", f"Median {SKY_FLUX}_flux of the sky sources.", lsst_name="medianSky"),
    MetricSpec("sigmaMADSky", "catalog", "nJy", f"1.4826 MAD of {SKY_FLUX}_flux of the sky sources.",
               lsst_name="sigmaMADSky"),
    MetricSpec("skySourceSignificanceMedian", "catalog", "",
               f"Median of {SKY_FLUX}_flux / _fluxErr of the sky sources: the background residual in units of "
               "its noise (0 when the background is right).", threshold=Threshold(warn_above=0.5, fail_above=2.0,
                                                                                  absolute=True)),
    *[MetricSpec(name, "catalog", "", f"Fraction of primary non-sky sources with {col}: {what}.",
                 threshold=Threshold(warn_above=0.2) if name in ("fractionPsfFluxFlagged", "fractionCentroidFlagged")
                 else None)
      for name, (col, what) in FLAG_METRICS.items()],
    MetricSpec("nSourcesVisit", "catalog", "", "Primary non-sky sources in the visit.", scope="visit"),
    MetricSpec("medianSkyVisit", "catalog", "nJy", "medianSky over every sky source of the visit.", scope="visit"),
)


def _col(cat, name, default=np.nan):
    return np.asarray(cat[name], float) if name in cat.colnames else np.full(len(cat), default)


def _flag(cat, name):
    return np.asarray(cat[name], bool) if name in cat.colnames else np.zeros(len(cat), bool)


def _selections(cat):
    sky = _flag(cat, "sky_source")
    primary = _flag(cat, "detect_isPrimary") if "detect_isPrimary" in cat.colnames else np.ones(len(cat), bool)
    return primary & ~sky, sky


def _mag_at_snr(mag, snr, limit: float) -> float:
    ok = np.isfinite(mag) & np.isfinite(snr) & (snr > 0)
    if ok.sum() < 5:
        return math.nan
    mag, snr = mag[ok], snr[ok]
    edges = np.arange(np.floor(mag.min() * 4) / 4, mag.max() + 0.25, 0.25)
    if edges.size < 2:
        return math.nan
    idx = np.digitize(mag, edges) - 1
    centres, med = [], []
    for k in range(edges.size - 1):
        sel = idx == k
        if sel.sum() >= 3:
            centres.append(0.5 * (edges[k] + edges[k + 1]))
            med.append(np.median(snr[sel]))
    centres, med = np.array(centres), np.log10(np.array(med))
    below = np.nonzero(med < math.log10(limit))[0]
    if below.size == 0:
        return math.nan
    k = below[0]
    if k == 0:
        return float(centres[0])
    # the first bin under the limit and the one before: interpolate log10(S/N) linearly in magnitude
    t = (med[k - 1] - math.log10(limit)) / (med[k - 1] - med[k])
    return float(centres[k - 1] + t * (centres[k] - centres[k - 1]))


def _counts_peak(mag) -> float:
    mag = mag[np.isfinite(mag)]
    if mag.size < 5:
        return math.nan
    edges = np.arange(np.floor(mag.min() * 4) / 4, mag.max() + 0.25, 0.25)
    counts, _ = np.histogram(mag, edges)
    k = len(counts) - 1 - int(np.argmax(counts[::-1]))
    return float(0.5 * (edges[k] + edges[k + 1]))


def catalog_metrics(cat) -> dict[str, float]:
    """The per-detector catalog metrics of a final ``source`` catalog (see the module docstring)."""
    objects, sky = _selections(cat)
    flux, err = _col(cat, "base_PsfFlux_flux"), _col(cat, "base_PsfFlux_fluxErr")
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / err
    mag = _col(cat, "base_PsfFlux_mag")
    ext = _col(cat, "base_ClassificationExtendedness_value")
    bright = objects & (snr > 10) & np.isfinite(ext)
    out = {"nSources": float(objects.sum()), "nSkySources": float(sky.sum()),
           "fractionExtended": float(np.mean(ext[bright] > 0.5)) if bright.any() else math.nan,
           "magAtSnr10": _mag_at_snr(mag[objects], snr[objects], 10.0),
           "numberCountsPeakMag": _counts_peak(mag[objects])}
    sflux, serr = _col(cat, f"{SKY_FLUX}_flux")[sky], _col(cat, f"{SKY_FLUX}_fluxErr")[sky]
    good = np.isfinite(sflux) & np.isfinite(serr) & (serr > 0)
    out["medianSky"] = float(np.median(sflux[good])) if good.any() else math.nan
    out["sigmaMADSky"] = robust_sigma(sflux[good]) if good.any() else math.nan
    out["skySourceSignificanceMedian"] = float(np.median(sflux[good] / serr[good])) if good.any() else math.nan
    for name, (col, _) in FLAG_METRICS.items():
        out[name] = float(np.mean(_flag(cat, col)[objects])) if objects.any() and col in cat.colnames else math.nan
    return out


def build(products: VisitProducts, config: QaConfig, figures: FigureWriter) -> Section:
    """Catalog metrics per detector, and number counts, S/N, extendedness and sky-source figures."""
    section = Section("catalog", "Catalog")
    cats, rows = {}, []
    names = ["nSources", "nSkySources", "fractionExtended", "magAtSnr10", "numberCountsPeakMag", "medianSky",
             "sigmaMADSky",
             "skySourceSignificanceMedian", *FLAG_METRICS]
    for d in products.detectors:
        cat = products.source(d)
        values = catalog_metrics(cat) if cat is not None else {n: math.nan for n in names}
        if cat is None:
            section.notes.append(f"detector {d}: no source catalog ({products.problems.get(products._key('source', d), 'missing')})")
        else:
            cats[d] = cat
        section.metrics += [Metric(n, values[n], d) for n in names]
        rows.append([d, *[values[n] for n in names[:8]]])
    section.tables.append(HtmlTable("Final source catalog per detector (primary, non-sky sources; sky sources apart).",
                                    ["detector", *names[:8]], rows,
                                    formats={"nSources": "{:.0f}", "nSkySources": "{:.0f}", "magAtSnr10": "{:.2f}", "numberCountsPeakMag": "{:.2f}",
                                             "medianSky": "{:.2f}", "sigmaMADSky": "{:.2f}"}))
    n_total = sum(int(_selections(c)[0].sum()) for c in cats.values())
    section.metrics.append(Metric("nSourcesVisit", n_total if cats else math.nan))
    sky_all = np.concatenate([_col(c, f"{SKY_FLUX}_flux")[_selections(c)[1]] for c in cats.values()]) if cats \
        else np.zeros(0)
    sky_all = sky_all[np.isfinite(sky_all)]
    section.metrics.append(Metric("medianSkyVisit", float(np.median(sky_all)) if sky_all.size else math.nan))
    if cats:
        section.figures += _figures(cats, config, figures)
    return section


def _figures(cats, config, figures):
    fig, axes = new_figure(2, 2, width=4.5, height=3.5)
    (a_counts, a_snr), (a_ext, a_sky) = axes
    mags, snrs, exts, skies = [], [], [], []
    for cat in cats.values():
        objects, sky = _selections(cat)
        mags.append(_col(cat, "base_PsfFlux_mag")[objects])
        with np.errstate(divide="ignore", invalid="ignore"):
            snrs.append((_col(cat, "base_PsfFlux_flux") / _col(cat, "base_PsfFlux_fluxErr"))[objects])
        exts.append(_col(cat, "base_ClassificationExtendedness_value")[objects])
        skies.append((_col(cat, f"{SKY_FLUX}_flux") / _col(cat, f"{SKY_FLUX}_fluxErr"))[sky])
    mag, snr, ext, sky = (np.concatenate(a) for a in (mags, snrs, exts, skies))
    fin = np.isfinite(mag)
    if fin.any():
        bins = np.arange(np.floor(mag[fin].min()), np.ceil(mag[fin].max()) + 0.25, 0.25)
        a_counts.hist(mag[fin & (ext < 0.5)], bins=bins, histtype="step", label="point (ext. 0)")
        a_counts.hist(mag[fin & (ext > 0.5)], bins=bins, histtype="step", label="extended (ext. 1)")
        a_counts.hist(mag[fin], bins=bins, histtype="step", color="k", label="all")
        a_counts.set_yscale("log")
        a_counts.legend(fontsize=7)
    a_counts.set_xlabel("PSF magnitude (AB)")
    a_counts.set_ylabel("sources per 0.25 mag")
    k = thin(mag.size, config.max_plot_points)
    a_snr.scatter(mag[k], snr[k], s=2, c=np.where(ext[k] > 0.5, "tab:orange", "tab:blue"), rasterized=True)
    a_snr.axhline(5, color="0.5", lw=0.8, ls="--")
    a_snr.set_yscale("log")
    a_snr.set_xlabel("PSF magnitude (AB)")
    a_snr.set_ylabel("PSF flux S/N")
    a_ext.scatter(mag[k], ext[k] + np.linspace(-0.05, 0.05, k.size), s=2, rasterized=True)
    a_ext.set_xlabel("PSF magnitude (AB)")
    a_ext.set_ylabel("extendedness (jittered)")
    sky = sky[np.isfinite(sky)]
    if sky.size:
        a_sky.hist(sky, bins=30, histtype="step", color="k")
        a_sky.axvline(np.median(sky), color="tab:red", lw=1, label=f"median {np.median(sky):+.2f}")
        a_sky.legend(fontsize=7)
    a_sky.set_xlabel(f"sky source {SKY_FLUX} flux / error")
    a_sky.set_ylabel("sky sources")
    ref = figures.save(fig, "catalog_overview", "Number counts, S/N and extendedness against PSF magnitude (primary "
                                                "non-sky sources of every detector; blue point-like, orange "
                                                "extended), and the sky sources' significance.")
    return [ref]
