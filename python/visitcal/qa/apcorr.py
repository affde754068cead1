"""The aperture-correction section of `visitcal qa`: finalize's refit aperture-correction fields and the stars
that measured them.

Inputs: ``products.refit_psf_models`` (per detector ``ap_corr_map``, a `visitcal.core.apcorr.ApCorrMap` of
``<alg>_instFlux`` -> `visitcal.core.chebyshev.ChebyshevBoundedField`, None where finalize failed) and
``products.refit_psf_star`` (the visit's PSF stars, ``apcorr_<alg>_used`` on the stars of each final fit).

What the fit saw (`visitcal.measurement.measure_ap_corr`, as run by finalize): at the star's ``slot_Centroid``
(``base_SdssCentroid``) the ratio ``z = ref / flux`` of the reference flux ``slot_CalibFlux``
(``base_NormalizedCompensatedTophatFlux_instFlux``; the table's ``meta["slots"]["CalibFlux"]`` when given) to
the algorithm's raw flux. Finalize then applies the corrections to those stars (``ApplyApCorrTask``:
``<alg>_instFlux *= <alg>_apCorr``), so the raw flux is recovered as ``<alg>_instFlux / <alg>_apCorr``.

Per detector and default field (``base_PsfFlux`` -> ``PsfFlux``, ``base_GaussianFlux`` -> ``GaussianFlux``):

* ``apCorr<F>ResidualMedian``, ``apCorr<F>ResidualSigmaMad`` (mmag): median and robust sigma of
  ``2500 log10(z / field(x, y))`` over the stars with ``apcorr_<alg>_used`` (positive: the star's measured
  ratio is above the field; the fit's final median shift makes the median 0 by construction, so a non-zero
  median says the stored map is not the one fitted to these stars);
* ``apCorr<F>Range`` (mmag): ``2500 log10(max / min)`` of the field on a ``QaConfig.apcorr_grid`` square grid of
  pixel positions spanning the field's box (corners included);
* ``nApCorrStar``: the stars of the ``base_PsfFlux`` fit (NaN for a detector without a map: no fit).

Figures: each ``<alg>_instFlux`` field of each detector as an image (``apcorr_map_dNNN``), each field over the
focal plane (``apcorr_mosaic_<alg>``), and for the default fields the measured ratios against the field at
the stars over the focal plane with the residual histogram (``apcorr_stars_<alg>``).
"""

from __future__ import annotations

import math

import numpy as np

from ..measurement.plugins.catalog_plugins import fp_position
from .figures import draw_detector_outlines, new_figure, thin
from .metrics import Metric, MetricSpec, QaConfig, Threshold, median_error, register, robust_sigma
from .section import HtmlTable, Section

__all__ = ["DEFAULT_FIELDS", "build", "field_range_mmag", "star_residuals_mmag"]

#: The fields with metrics: algorithm -> the short name in the metric names.
DEFAULT_FIELDS = {"base_PsfFlux": "PsfFlux", "base_GaussianFlux": "GaussianFlux"}

_SPECS = []
for _alg, _short in DEFAULT_FIELDS.items():
    _SPECS += [
        MetricSpec(f"apCorr{_short}ResidualMedian", "apcorr", "mmag",
                   f"Median 2500 log10(measured / fitted) aperture correction of the stars of the {_alg} fit "
                   "(graded on its significance: standard error 1.2533 sigmaMAD/sqrt(n); at least 3 stars).",
                   threshold=Threshold(warn_above=5.0, absolute=True), min_count=3),
        MetricSpec(f"apCorr{_short}ResidualSigmaMad", "apcorr", "mmag",
                   f"Robust sigma (1.4826 MAD) of 2500 log10(measured / fitted) over the stars of the {_alg} fit."),
        MetricSpec(f"apCorr{_short}Range", "apcorr", "mmag",
                   f"2500 log10(max / min) of the {_alg} aperture-correction field over the detector."),
    ]
_SPECS.append(MetricSpec("nApCorrStar", "apcorr", "", "Stars of the base_PsfFlux aperture-correction fit."))
register(*_SPECS)


def _slot(table, slot: str, default: str) -> str:
    return str(dict(table.meta.get("slots", {}) or {}).get(slot, default))


def star_residuals_mmag(stars, field, alg: str):
    """For the rows of ``stars`` (one detector's refit PSF stars) with ``apcorr_<alg>_used``: the measured ratio
    ``z`` (reference flux over the raw ``alg`` flux), the field at the star, ``2500 log10(z / field)`` (mmag) and
    the stars' focal-plane positions (mm): ``(z, fit, resid_mmag, fp_x, fp_y)``; only finite, positive ratios."""
    used_col = f"apcorr_{alg}_used"
    empty = (np.zeros(0),) * 5
    if used_col not in stars.colnames or f"{alg}_instFlux" not in stars.colnames:
        return empty
    rows = np.flatnonzero(np.asarray(stars[used_col], bool))
    ref_col = _slot(stars, "CalibFlux", "base_NormalizedCompensatedTophatFlux") + "_instFlux"
    cen = _slot(stars, "Centroid", "base_SdssCentroid")
    if ref_col not in stars.colnames or f"{cen}_x" not in stars.colnames or f"{cen}_y" not in stars.colnames \
            or rows.size == 0:
        return empty
    flux = np.asarray(stars[f"{alg}_instFlux"], float)[rows]
    if f"{alg}_apCorr" in stars.colnames:  # finalize applied the correction in place: undo it
        flux = flux / np.asarray(stars[f"{alg}_apCorr"], float)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.asarray(stars[ref_col], float)[rows] / flux
    x = np.asarray(stars[f"{cen}_x"], float)[rows]
    y = np.asarray(stars[f"{cen}_y"], float)[rows]
    ok = np.isfinite(z) & (z > 0) & np.isfinite(x) & np.isfinite(y)
    z, x, y, rows = z[ok], x[ok], y[ok], rows[ok]
    fit = np.asarray(field.evaluate(x, y), float) if rows.size else np.zeros(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = 2500.0 * np.log10(z / fit)
    nan = np.full(len(stars), np.nan)
    fpx = np.asarray(stars["base_FPPosition_x"], float)[rows] if "base_FPPosition_x" in stars.colnames else nan[rows]
    fpy = np.asarray(stars["base_FPPosition_y"], float)[rows] if "base_FPPosition_y" in stars.colnames else nan[rows]
    return z, fit, resid, fpx, fpy


def _grid(field, n: int):
    b = field.bbox
    return np.linspace(b.min_x, b.max_x, n), np.linspace(b.min_y, b.max_y, n)


def _edges(b, n: int):
    """Edges of an ``n x n`` grid of cells covering the box ``b`` (pixel edges at half-integers)."""
    return np.linspace(b.min_x - 0.5, b.max_x + 0.5, n + 1), np.linspace(b.min_y - 0.5, b.max_y + 0.5, n + 1)


def field_range_mmag(field, n: int) -> float:
    """``2500 log10(max / min)`` (mmag) of ``field`` on an ``n x n`` grid of pixel positions spanning its box
    (corners included); NaN when the minimum is not positive."""
    gx, gy = _grid(field, n)
    v = field.evaluate_grid(gx, gy)
    lo, hi = float(np.min(v)), float(np.max(v))
    return 2500.0 * math.log10(hi / lo) if lo > 0 and math.isfinite(hi) else math.nan


def _maps(products) -> tuple[dict, list[str]]:
    """``{detector: ApCorrMap or None}`` and notes."""
    notes = []
    maps = dict.fromkeys(products.detectors)
    cat = products.refit_psf_models
    if cat is None:
        notes.append("No refit_psf_models (" + next((v for k, v in products.problems.items()
                                                    if k.startswith("refit_psf_models")), "missing") +
                     "): the aperture-correction metrics are NaN.")
        return maps, notes
    for row in cat:
        d = int(row["detector"])
        if d in maps:
            maps[d] = row["ap_corr_map"]
    for d in products.detectors:
        if maps[d] is None:
            msg = ""
            sel = np.flatnonzero(np.asarray(cat["detector"]) == d)
            if sel.size and "message" in cat.colnames:
                msg = f": {cat['message'][sel[0]]}"
            notes.append(f"Detector {d}: no refit aperture-correction map{msg}; its metrics are NaN.")
    return maps, notes


def build(products, config: QaConfig, figures) -> Section:
    """The aperture-correction section of one visit (module docstring)."""
    sec = Section("apcorr", "Aperture corrections (finalize's refit)")
    maps, notes = _maps(products)
    sec.notes += notes
    stars = products.refit_psf_star
    if stars is None:
        sec.notes.append("No refit_psf_star table: the star residual metrics are NaN.")
    elif "detector" not in stars.colnames:
        sec.notes.append("The refit_psf_star table has no detector column: the star residual metrics are NaN.")
        stars = None
    ref = _slot(stars, "CalibFlux", "base_NormalizedCompensatedTophatFlux") if stars is not None else "?"
    star_data: dict[tuple[int, str], tuple] = {}
    for d in products.detectors:
        m = maps[d]
        det_stars = stars[np.asarray(stars["detector"]) == d] if stars is not None else None
        for alg, short in DEFAULT_FIELDS.items():
            key = f"{alg}_instFlux"
            field = m[key] if m is not None and key in m else None
            if m is not None and field is None:
                sec.notes.append(f"Detector {d}: the map has no {key} field.")
            med = sig = rng = err = math.nan
            count = None
            if field is not None:
                rng = field_range_mmag(field, config.apcorr_grid)
                if det_stars is not None:
                    data = star_residuals_mmag(det_stars, field, alg)
                    star_data[(d, alg)] = data
                    r = data[2][np.isfinite(data[2])]
                    count = int(r.size)
                    if r.size:
                        med, sig, err = float(np.median(r)), robust_sigma(r), median_error(r)
            sec.metrics += [Metric(f"apCorr{short}ResidualMedian", med, d, err, count),
                            Metric(f"apCorr{short}ResidualSigmaMad", sig, d), Metric(f"apCorr{short}Range", rng, d)]
        n = math.nan
        if m is not None and det_stars is not None and "apcorr_base_PsfFlux_used" in det_stars.colnames:
            n = float(np.count_nonzero(np.asarray(det_stars["apcorr_base_PsfFlux_used"], bool)))
        sec.metrics.append(Metric("nApCorrStar", n, d))
    sec.notes.append(f"Measured ratio: {ref}_instFlux over the raw flux (instFlux / apCorr) of the stars each fit "
                     "used; residual = 2500 log10(measured / field at the star), mmag.")

    values = {(m.name, m.detector): m.value for m in sec.metrics}
    names = [s.name for s in _SPECS]
    rows = [[d, *[values[(c, d)] for c in names]] for d in products.detectors]
    sec.tables.append(HtmlTable("Aperture corrections per detector (mmag).", ["detector", *names], rows,
                                {"detector": "{}", "nApCorrStar": "{:.0f}"}))
    _figures(sec, products, config, figures, maps, star_data, stars)
    return sec


def _algorithms(maps) -> list[str]:
    algs: list[str] = []
    for m in maps.values():
        if m is not None:
            algs += [a for a in m.algorithms if a not in algs]
    return algs


def _figures(sec, products, config, figures, maps, star_data, stars) -> None:
    n = config.apcorr_grid
    algs = _algorithms(maps)
    cen = _slot(stars, "Centroid", "base_SdssCentroid") if stars is not None else "base_SdssCentroid"

    # 1. each field of each detector
    for d in products.detectors:
        m = maps[d]
        if m is None:
            continue
        fields = [a for a in m.algorithms if f"{a}_instFlux" in m]
        if not fields:
            continue
        fig, axes = new_figure(len(fields), 1, width=3.6, height=3.2)
        axes = np.atleast_1d(axes)
        for ax, alg in zip(axes, fields):
            f = m[f"{alg}_instFlux"]
            b = f.bbox
            ex, ey = _edges(b, n)
            img = f.evaluate_grid(0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1]))  # at the cell centres
            im = ax.imshow(img, origin="lower", cmap="viridis",
                           extent=(b.min_x - 0.5, b.max_x + 0.5, b.min_y - 0.5, b.max_y + 0.5))
            fig.colorbar(im, ax=ax, shrink=0.8)
            if stars is not None and f"apcorr_{alg}_used" in stars.colnames and f"{cen}_x" in stars.colnames \
                    and f"{cen}_y" in stars.colnames:
                s = stars[(np.asarray(stars["detector"]) == d) & np.asarray(stars[f"apcorr_{alg}_used"], bool)]
                ax.plot(np.asarray(s[f"{cen}_x"], float), np.asarray(s[f"{cen}_y"], float), "k.", ms=3)
            ax.set_title(alg, fontsize=8)
            ax.set_xlabel("x (pixel)")
        axes[0].set_ylabel("y (pixel)")
        sec.figures.append(figures.save(fig, f"apcorr_map_d{d:03d}",
                                        f"Detector {d}: each aperture-correction field (multiplicative correction "
                                        "to the calibration flux) over the detector; dots: the stars its fit used."))

    # 2. each field over the focal plane
    for alg in algs:
        pieces = []
        for d in products.detectors:
            m, det = maps[d], products.detector_geometry(d)
            if m is None or det is None or f"{alg}_instFlux" not in m:
                continue
            f = m[f"{alg}_instFlux"]
            ex, ey = _edges(f.bbox, n)
            cx, cy = 0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1])
            ex2, ey2 = np.meshgrid(ex, ey)
            fp = fp_position(det, ex2, ey2)
            if fp["base_FPPosition_flag"].any():
                continue
            pieces.append((fp["base_FPPosition_x"], fp["base_FPPosition_y"], f.evaluate_grid(cx, cy)))
        if not pieces:
            continue
        vmin = min(float(p[2].min()) for p in pieces)
        vmax = max(float(p[2].max()) for p in pieces)
        fig, ax = new_figure(width=6.0, height=5.0)
        mesh = None
        for X, Y, V in pieces:
            mesh = ax.pcolormesh(X, Y, V, cmap="viridis", vmin=vmin, vmax=vmax, shading="flat")
        fig.colorbar(mesh, ax=ax, label=f"{alg} aperture correction")
        draw_detector_outlines(ax, products)
        sec.figures.append(figures.save(fig, f"apcorr_mosaic_{alg}",
                                        f"The {alg} aperture-correction field of every detector over the focal plane."))

    # 3. the measured ratios against the fit (default fields)
    for alg in DEFAULT_FIELDS:
        parts = [star_data[(d, alg)] for d in products.detectors if (d, alg) in star_data]
        parts = [p for p in parts if p[0].size]
        if not parts:
            continue
        z, fit, resid, fpx, fpy = (np.concatenate([p[k] for p in parts]) for k in range(5))
        keep = thin(z.size, config.max_plot_points)
        fig, axes = new_figure(3, 1, width=3.8, height=3.2)
        for ax, pos, label in ((axes[0], fpx, "focal plane x (mm)"), (axes[1], fpy, "focal plane y (mm)")):
            ax.plot(pos[keep], z[keep], "o", ms=3, alpha=0.6, label="measured")
            ax.plot(pos[keep], fit[keep], "x", ms=4, color="C3", label="field at the star")
            ax.set_xlabel(label)
            ax.legend(fontsize=7)
        axes[0].set_ylabel("reference / raw flux")
        r = resid[np.isfinite(resid)]
        axes[2].hist(r, bins=min(40, max(5, int(np.sqrt(r.size)) + 1)), color="C0")
        axes[2].set_xlabel("2500 log10(measured / field) (mmag)")
        sec.figures.append(figures.save(fig, f"apcorr_stars_{alg}",
                                        f"{alg}: the ratio each used star measured and the fitted field at it, over "
                                        "the focal plane, and the residual histogram."))
