"""The PSF section of a visit's QA page: how well the refit PSF models the stars, per detector and per visit.

Inputs: finalize's ``refit_psf_star`` table (`VisitProducts.refit_psf_star`), whose star moments
``base_SdssShape_xx/yy/xy`` and model moments ``base_SdssShape_psf_xx/yy/xy`` were both measured by
`visitcal.tasks.finalize_characterization` *after* the refit: its step 10 measures the candidates on a copy of
the exposure whose ``psf`` is the newly fitted model (``exp.psf = psf``), so ``base_SdssShape_psf_*`` are the
adaptive moments of the refit PSF at each star; the models themselves (`VisitProducts.refit_psf_models`,
else the visit summary's ``psf``) draw the stamps.

Conventions: distortion ellipticities e1 = (Ixx - Iyy)/(Ixx + Iyy), e2 = 2 Ixy/(Ixx + Iyy) and sizes
T = Ixx + Iyy, in each detector's pixel frame for the metrics (as LSST's summary statistics); star minus
model for every residual (de = e_star - e_model, dT = T_star - T_model), dT/T over the model's T.

Metrics, per detector and (suffix ``Visit``) over all the visit's detectors:

- LSST's ``ComputeExposureSummaryStatsTask`` fields on the ``calib_psf_used`` stars, computed by
  `visitcal.tasks.compute_exposure_summary_stats.psf_star_residual_stats` (its S/N 50..1000 selection):
  ``nPsfStar``, ``psfStarDeltaE1Median``, ``psfStarDeltaE2Median``, ``psfStarDeltaE1Scatter``,
  ``psfStarDeltaE2Scatter``, ``psfStarDeltaSizeMedian``, ``psfStarDeltaSizeScatter``,
  ``psfStarScaledDeltaSizeScatter``;
- ours, on the reserved stars (``calib_psf_reserved``, never fitted) with valid moments: ``nPsfStarReserved``
  (all reserved rows), ``psfReservedDeltaTOverTMean``, ``psfReservedDeltaTOverTRms`` (root mean square about
  zero), ``psfReservedDeltaE1Mean``, ``psfReservedDeltaE2Mean``;
- the whisker means ``psfModelE1Mean``, ``psfModelE2Mean``: the model's ellipticity averaged over every PSF
  star with valid moments;

and per visit the rho statistics (`visitcal.qa.rho`; paired by TreeCorr above `TREECORR_ABOVE` stars when it
is installed) of the reserved stars: ``rho1At1Arcmin`` ..
``rho5At1Arcmin`` (xi+ in the bin containing 1 arcmin; NaN when that bin has no pair), ``rho1At1ArcminErr``
(its shot-noise sigma). For the rho statistics the moments are carried to the sky's tangent plane (x east,
y north) with the local Jacobian of the visit summary's WCS at each star (`visitcal.core.wcs.local_cd_matrix`),
so pairs across detectors compare ellipticities in one frame.

Stars "with valid moments": finite, positive T of star and model, finite e of both, no ``base_SdssShape_flag``.
A detector without rows in ``refit_psf_star`` (finalize gave it none) or whose products are missing gets NaN
metrics (grade ``n/a``) and a note.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.wcs import local_cd_matrix, pixel_to_sky
from ..tasks.compute_exposure_summary_stats import psf_star_residual_stats
from .figures import draw_detector_outlines, new_figure, thin
from .metrics import Metric, MetricSpec, QaConfig, Threshold, mean_error, register, robust_sigma
from .rho import RHO_NAMES, rho_statistics
from .section import Section

__all__ = ["excess_scatter", "DETECTOR_METRICS", "VISIT_METRICS", "build", "psf_star_quantities", "star_model_residual"]

SECTION = "psf"

_LSST_SPECS = [
    MetricSpec("nPsfStar", SECTION, "",
               "PSF stars used by the refit PSF (calib_psf_used); warn below 10, fail below 3.",
               threshold=Threshold(warn_below=10, fail_below=3), lsst_name="nPsfStar"),
    MetricSpec("psfStarDeltaE1Median", SECTION, "",
               "Median of e1(star) - e1(model) over the used PSF stars with 50 < S/N < 1000 (pixel frame); warn "
               "|x| > 0.005, fail |x| > 0.02.",
               threshold=Threshold(warn_above=0.005, fail_above=0.02, absolute=True), lsst_name="psfStarDeltaE1Median"),
    MetricSpec("psfStarDeltaE2Median", SECTION, "",
               "Median of e2(star) - e2(model) over the used PSF stars with 50 < S/N < 1000 (pixel frame); warn "
               "|x| > 0.005, fail |x| > 0.02.",
               threshold=Threshold(warn_above=0.005, fail_above=0.02, absolute=True), lsst_name="psfStarDeltaE2Median"),
    MetricSpec("psfStarDeltaE1Scatter", SECTION, "",
               "1.4826 MAD of e1(star) - e1(model) over the used PSF stars with 50 < S/N < 1000.",
               lsst_name="psfStarDeltaE1Scatter"),
    MetricSpec("psfStarDeltaE2Scatter", SECTION, "",
               "1.4826 MAD of e2(star) - e2(model) over the used PSF stars with 50 < S/N < 1000.",
               lsst_name="psfStarDeltaE2Scatter"),
    MetricSpec("psfStarDeltaSizeMedian", SECTION, "pixel",
               "Median of size(star) - size(model), size = sqrt((Ixx + Iyy)/2), over the used PSF stars with "
               "50 < S/N < 1000.", lsst_name="psfStarDeltaSizeMedian"),
    MetricSpec("psfStarDeltaSizeScatter", SECTION, "pixel",
               "1.4826 MAD of size(star) - size(model) over the used PSF stars with 50 < S/N < 1000.",
               lsst_name="psfStarDeltaSizeScatter"),
    MetricSpec("psfStarScaledDeltaSizeScatter", SECTION, "",
               "psfStarDeltaSizeScatter over the median star size; warn > 0.01 (a 2% rms in T), fail > 0.05.",
               threshold=Threshold(warn_above=0.01, fail_above=0.05), lsst_name="psfStarScaledDeltaSizeScatter"),
]

#: The fewest reserved stars whose mean residuals are graded: fewer are shown, with their standard error, but
#: grade n/a (one star's moments at S/N ~ 50 scatter by several per cent in T: no verdict on the model).
RESERVED_MIN_COUNT = 3
#: The fewest reserved stars whose rms is graded: an rms of fewer than 10 stars is uncertain by more than 22% and
#: is decided by its worst star (in the simulated sparse fields, one star in four carries an unresolved
#: neighbour 2 px away that widens it by 10%: a fact about that star, not about the model).
RESERVED_RMS_MIN_COUNT = 10

_OUR_SPECS = [
    MetricSpec("nPsfStarReserved", SECTION, "", "Reserved PSF stars (calib_psf_reserved, not fitted); warn at 0: "
               "no independent check of the model.", threshold=Threshold(warn_below=1)),
    MetricSpec("psfReservedDeltaTOverTMean", SECTION, "",
               "Mean of (T(star) - T(model))/T(model), T = Ixx + Iyy, over the reserved stars with valid moments; "
               "warn |x| > 0.005, fail |x| > 0.02.",
               threshold=Threshold(warn_above=0.005, fail_above=0.02, absolute=True), min_count=RESERVED_MIN_COUNT),
    MetricSpec("psfReservedDeltaTOverTRms", SECTION, "",
               "Root mean square (about zero) of (T(star) - T(model))/T(model) over the reserved stars with valid "
               "moments, the stars' measurement noise included (informative: psfReservedDeltaTOverTExcessScatter is "
               "graded).", min_count=RESERVED_RMS_MIN_COUNT),
    MetricSpec("psfReservedDeltaTOverTExcessScatter", SECTION, "",
               "The scatter of (T(star) - T(model))/T(model) over the reserved stars beyond their measurement noise, "
               "robustly: sqrt(max(0, sigmaMAD(dT/T)^2 - median(sigma^2))), sigma = sqrt(xxErr^2 + yyErr^2)/T(model) "
               "(the model's own size error; a star widened by an unresolved neighbour does not decide it); "
               "warn > 0.02, fail > 0.05.", threshold=Threshold(warn_above=0.02, fail_above=0.05),
               min_count=RESERVED_RMS_MIN_COUNT),
    MetricSpec("psfReservedDeltaE1Mean", SECTION, "",
               "Mean of e1(star) - e1(model) over the reserved stars with valid moments (pixel frame); warn "
               "|x| > 0.005, fail |x| > 0.02.", threshold=Threshold(warn_above=0.005, fail_above=0.02, absolute=True),
               min_count=RESERVED_MIN_COUNT),
    MetricSpec("psfReservedDeltaE2Mean", SECTION, "",
               "Mean of e2(star) - e2(model) over the reserved stars with valid moments (pixel frame); warn "
               "|x| > 0.005, fail |x| > 0.02.", threshold=Threshold(warn_above=0.005, fail_above=0.02, absolute=True),
               min_count=RESERVED_MIN_COUNT),
    MetricSpec("psfModelE1Mean", SECTION, "",
               "Mean e1 of the PSF model over every PSF star with valid moments (the model whiskers' mean; pixel "
               "frame)."),
    MetricSpec("psfModelE2Mean", SECTION, "",
               "Mean e2 of the PSF model over every PSF star with valid moments (the model whiskers' mean; pixel "
               "frame)."),
]

#: The per-detector metrics, in the order they are emitted.
DETECTOR_METRICS = tuple(s.name for s in _LSST_SPECS + _OUR_SPECS)
#: The visit-wide ones: each per-detector metric over all detectors (suffix ``Visit``), then the rho statistics.
VISIT_METRICS = tuple(f"{n}Visit" for n in DETECTOR_METRICS) + tuple(
    f"{r}At1Arcmin" for r in RHO_NAMES) + ("rho1At1ArcminErr",)

register(*_LSST_SPECS, *_OUR_SPECS)
register(*(MetricSpec(f"{s.name}Visit", SECTION, s.unit, s.description.rstrip(".") + ", over all the visit's "
                      "detectors together.", scope="visit", threshold=s.threshold, min_count=s.min_count)
                      for s in _LSST_SPECS + _OUR_SPECS))
register(*(MetricSpec(f"{r}At1Arcmin", SECTION, "",
                      f"{r} (xi+) of the reserved PSF stars in the logarithmic separation bin containing 1 arcmin "
                      "(Jarvis et al. 2016; star - model residuals, tangent-plane frame); NaN when the bin has no "
                      "pair.", scope="visit") for r in RHO_NAMES))
register(MetricSpec("rho1At1ArcminErr", SECTION, "",
                    "Shot-noise standard deviation of rho1At1Arcmin (TreeCorr's 'shot' estimate).", scope="visit"))


def psf_star_quantities(stars) -> dict[str, np.ndarray]:
    """Per-star ellipticities and sizes of a ``refit_psf_star`` table (pixel frame).

    Returns
    -------
    dict of numpy.ndarray
        ``e1``, ``e2``, ``T`` of the star and ``pe1``, ``pe2``, ``pT`` of the model (T = Ixx + Iyy, px^2),
        ``de1``, ``de2`` (star - model), ``dtt`` ((T - pT)/pT), ``dtt_err`` (the star's measurement error of
        dtt, sqrt(xxErr^2 + yyErr^2)/pT; NaN without ``base_SdssShape_xxErr``), ``valid`` (finite, positive T of
        both, no ``base_SdssShape_flag``), ``used``, ``reserved`` (bool).
    """
    def col(name):
        return np.asarray(stars[name], np.float64)

    xx, yy, xy = col("base_SdssShape_xx"), col("base_SdssShape_yy"), col("base_SdssShape_xy")
    pxx, pyy, pxy = col("base_SdssShape_psf_xx"), col("base_SdssShape_psf_yy"), col("base_SdssShape_psf_xy")
    with np.errstate(divide="ignore", invalid="ignore"):
        T, pT = xx + yy, pxx + pyy
        q = {"T": T, "pT": pT, "e1": (xx - yy) / T, "e2": 2 * xy / T, "pe1": (pxx - pyy) / pT, "pe2": 2 * pxy / pT}
        q["de1"], q["de2"], q["dtt"] = q["e1"] - q["pe1"], q["e2"] - q["pe2"], (T - pT) / pT
        if "base_SdssShape_xxErr" in stars.colnames and "base_SdssShape_yyErr" in stars.colnames:
            q["dtt_err"] = np.hypot(col("base_SdssShape_xxErr"), col("base_SdssShape_yyErr")) / pT
        else:
            q["dtt_err"] = np.full(len(T), np.nan)
    valid = np.ones(len(T), bool)
    for k in ("T", "pT", "e1", "e2", "pe1", "pe2"):
        valid &= np.isfinite(q[k])
    valid &= (T > 0) & (pT > 0)
    if "base_SdssShape_flag" in stars.colnames:
        valid &= ~np.asarray(stars["base_SdssShape_flag"], bool)
    q["valid"] = valid
    q["used"] = np.asarray(stars["calib_psf_used"], bool)
    q["reserved"] = np.asarray(stars["calib_psf_reserved"], bool)
    return q


def excess_scatter(residuals, errors) -> float:
    """``sqrt(max(0, sigmaMAD(r)^2 - median(sigma^2)))``: the robust scatter of ``residuals`` beyond what their
    measurement ``errors`` explain (the model's own error once the stars' noise is removed in quadrature; median
    and MAD, so that a few stars spoiled by neighbours do not decide it, as in LSST's psfStar* statistics); NaN
    without residuals or with a non-finite error."""
    r, e = np.asarray(residuals, float), np.asarray(errors, float)
    if r.size == 0 or not np.all(np.isfinite(e)):
        return math.nan
    return float(math.sqrt(max(0.0, robust_sigma(r) ** 2 - float(np.median(e ** 2)))))


def _mean(v) -> float:
    return float(np.mean(v)) if len(v) else math.nan


def _star_metrics(stars) -> tuple[dict[str, float], dict[str, tuple[float, int]]]:
    """The per-detector metric values of the PSF stars ``stars`` (one detector's rows, or the visit's), and
    ``{metric: (standard error, count)}`` of the reserved-star ones (the rms and the excess scatter have no
    error: their count alone gates their grade)."""
    q = psf_star_quantities(stars)
    out = {"nPsfStar": float(np.sum(q["used"]))}
    lsst = psf_star_residual_stats(stars)
    for s in _LSST_SPECS[1:]:
        out[s.name] = float(lsst.get(s.name, math.nan))
    res = q["reserved"] & q["valid"]
    out["nPsfStarReserved"] = float(np.sum(q["reserved"]))
    dtt, de1, de2 = q["dtt"][res], q["de1"][res], q["de2"][res]
    out["psfReservedDeltaTOverTMean"] = _mean(dtt)
    out["psfReservedDeltaTOverTRms"] = float(np.sqrt(np.mean(dtt ** 2))) if dtt.size else math.nan
    out["psfReservedDeltaTOverTExcessScatter"] = excess_scatter(dtt, q["dtt_err"][res])
    out["psfReservedDeltaE1Mean"] = _mean(de1)
    out["psfReservedDeltaE2Mean"] = _mean(de2)
    out["psfModelE1Mean"] = _mean(q["pe1"][q["valid"]])
    out["psfModelE2Mean"] = _mean(q["pe2"][q["valid"]])
    n = int(res.sum())
    extra = {"psfReservedDeltaTOverTMean": (mean_error(dtt), n), "psfReservedDeltaTOverTRms": (math.nan, n),
             "psfReservedDeltaTOverTExcessScatter": (math.nan, n), "psfReservedDeltaE1Mean": (mean_error(de1), n),
             "psfReservedDeltaE2Mean": (mean_error(de2), n)}
    return out, extra


def _metrics_of(names, values, extra, detector=None, suffix=""):
    out = []
    for n in names:
        error, count = extra.get(n, (math.nan, None))
        out.append(Metric(f"{n}{suffix}", values[n], detector, error=error, count=count))
    return out


def _column_or_nan(stars, name):
    return np.asarray(stars[name], np.float64) if name in stars.colnames else np.full(len(stars), np.nan)


def _psf_of(products, detector):
    """The refit PSF of ``detector`` (finalize's models, else the visit summary's); None when neither has one."""
    for table in (products.refit_psf_models, products.visit_summary):
        if table is None or "psf" not in table.colnames:
            continue
        rows = np.flatnonzero(np.asarray(table["detector"]) == detector)
        if rows.size and table["psf"][rows[0]] is not None:
            return table["psf"][rows[0]]
    return None


def _wcs_of(products, detector):
    vs = products.visit_summary
    if vs is None or "wcs" not in vs.colnames:
        return None
    rows = np.flatnonzero(np.asarray(vs["detector"]) == detector)
    return vs["wcs"][rows[0]] if rows.size else None


def build(products, config: QaConfig, figures) -> Section:
    """The PSF section of ``products``' visit (module docstring for the metrics and conventions).

    Parameters
    ----------
    products : VisitProducts
        The visit's products.
    config : QaConfig
        ``stamps_per_detector``, ``stamp_size``, the ``rho_*`` fields, ``max_plot_points``.
    figures : FigureWriter
        Where the figures go (``psf_stamps_dNNN`` per detector, ``psf_whiskers``, ``psf_size_residuals``,
        ``psf_rho``).

    Returns
    -------
    Section
        Key ``"psf"``; every metric of `DETECTOR_METRICS` per detector and of `VISIT_METRICS`, NaN where not
        measurable, with a note saying why.
    """
    section = Section(key="psf", title="PSF")
    # base_SdssShape_psf_* are the refit PSF's moments: finalize measures its stars with exp.psf = the new model
    stars = products.refit_psf_star
    nan_det = dict.fromkeys(DETECTOR_METRICS, math.nan)
    if stars is None:
        section.notes.append("No refit_psf_star table for this visit: every PSF metric is NaN"
                             + _problem(products, "refit_psf_star") + ".")
        for d in products.detectors:
            section.metrics += [Metric(n, math.nan, d) for n in DETECTOR_METRICS]
        section.metrics += [Metric(n, math.nan) for n in VISIT_METRICS]
        return section

    det_col = np.asarray(stars["detector"])
    present = [d for d in products.detectors if np.any(det_col == d)]
    for d in products.detectors:
        if d in present:
            values, extra = _star_metrics(stars[det_col == d])
        else:
            values, extra = nan_det, {}
            section.notes.append(f"Detector {d}: no PSF stars in refit_psf_star (finalize gave it no row"
                                 f"{_status_text(products, d)}); its PSF metrics are NaN.")
        section.metrics += _metrics_of(DETECTOR_METRICS, values, extra, d)
    in_visit = np.isin(det_col, present)
    visit_stars = stars[in_visit]
    values, extra = _star_metrics(visit_stars) if len(visit_stars) else (nan_det, {})
    section.metrics += _metrics_of(DETECTOR_METRICS, values, extra, suffix="Visit")

    q = psf_star_quantities(visit_stars)
    rho_res, rho_used = _rho(products, visit_stars, q, config, section.notes)
    for k, r in enumerate(RHO_NAMES, start=1):
        section.metrics.append(Metric(f"{r}At1Arcmin", rho_res.value_at(1.0, k) if rho_res else math.nan))
    section.metrics.append(Metric("rho1At1ArcminErr", rho_res.sigma_at(1.0, 1) if rho_res else math.nan))

    _figure_guard(section, "stamps", lambda: _stamp_figures(products, stars, det_col, present, config, figures,
                                                            section))
    _figure_guard(section, "whiskers", lambda: section.figures.append(
        _whisker_figure(products, visit_stars, q, config, figures)))
    _figure_guard(section, "size residuals", lambda: section.figures.append(
        _size_figure(products, visit_stars, q, config, figures)))
    _figure_guard(section, "rho statistics", lambda: section.figures.append(
        _rho_figure(rho_res, rho_used, config, figures)))
    return section


def _problem(products, name) -> str:
    for key, why in products.problems.items():
        if key.startswith(name):
            return f" ({why})"
    return ""


def _status_text(products, detector) -> str:
    models = products.refit_psf_models
    if models is None or "status" not in models.colnames:
        return ""
    rows = np.flatnonzero(np.asarray(models["detector"]) == detector)
    if not rows.size:
        return ""
    msg = str(models["message"][rows[0]]) if "message" in models.colnames else ""
    return f"; its finalize status: {models['status'][rows[0]]}" + (f", {msg[:200]}" if msg else "")


def _figure_guard(section, what, draw):
    """Draw one figure; a failure (an unreadable image, a degenerate plot) becomes a note, not a dead report."""
    try:
        draw()
    except Exception as err:  # noqa: BLE001 - one figure must not take the section down
        section.notes.append(f"The PSF {what} figure could not be drawn: {type(err).__name__}: {err}"[:400])


# --- rho statistics -------------------------------------------------------------------------------------
def _sky_quantities(products, stars, q, select, notes):
    """ra, dec (deg) and tangent-plane (x east, y north) e1, e2, T of the selected stars, by each detector's WCS;
    the stars of detectors without a WCS are dropped (a note)."""
    det = np.asarray(stars["detector"])
    x, y = np.asarray(stars["base_SdssCentroid_x"], float), np.asarray(stars["base_SdssCentroid_y"], float)
    keep = select & np.isfinite(x) & np.isfinite(y)
    cols = {k: [] for k in ("ra", "dec", "e1", "e2", "T", "pe1", "pe2", "pT")}
    missing = []
    for d in np.unique(det[keep]):
        rows = np.flatnonzero(keep & (det == d))
        wcs = _wcs_of(products, int(d))
        if wcs is None:
            missing.append(int(d))
            continue
        ra, dec = pixel_to_sky(wcs, x[rows], y[rows])
        J = local_cd_matrix(wcs, x[rows], y[rows]) * 60.0  # arcmin / px, (n, 2, 2)
        for prefix, names in (("", ("base_SdssShape_xx", "base_SdssShape_yy", "base_SdssShape_xy")),
                              ("p", ("base_SdssShape_psf_xx", "base_SdssShape_psf_yy", "base_SdssShape_psf_xy"))):
            xx, yy, xy = (np.asarray(stars[n], float)[rows] for n in names)
            M = np.stack([np.stack([xx, xy], -1), np.stack([xy, yy], -1)], -2)
            Ms = J @ M @ np.swapaxes(J, -1, -2)  # moments on the tangent plane, arcmin^2
            T = Ms[:, 0, 0] + Ms[:, 1, 1]
            cols[prefix + "e1"].append((Ms[:, 0, 0] - Ms[:, 1, 1]) / T)
            cols[prefix + "e2"].append(2 * Ms[:, 0, 1] / T)
            cols[prefix + "T"].append(T)
        cols["ra"].append(np.asarray(ra, float))
        cols["dec"].append(np.asarray(dec, float))
    if missing:
        notes.append(f"Rho statistics: detectors {missing} have no WCS in the visit summary; their stars are left out.")
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    ok = np.ones(len(out["ra"]), bool)
    for v in out.values():
        ok &= np.isfinite(v)
    return {k: v[ok] for k, v in out.items()}


#: Above this many stars the rho statistics are paired by TreeCorr when it is installed: the exact C++ sum costs
#: ~30 ns a pair and correlation (five per set, n^2/2 pairs: ~10 s at 20 000 stars), TreeCorr's tree far less;
#: both give the same numbers to rounding (tests/unit/qa/test_rho.py).
TREECORR_ABOVE = 20_000


def _rho_backend(n: int) -> str:
    if n <= TREECORR_ABOVE:
        return "visitcal"
    try:
        import treecorr  # noqa: F401
    except ImportError:
        return "visitcal"
    return "treecorr"


def _rho(products, stars, q, config, notes):
    """Rho statistics of the reserved and of the used stars (None where fewer than two stars)."""
    out = []
    for kind, select in (("reserved", q["reserved"] & q["valid"]), ("used", q["used"] & q["valid"])):
        s = _sky_quantities(products, stars, q, select, notes) if len(stars) else None
        n = 0 if s is None else len(s["ra"])
        if n < 2:
            out.append(None)
            notes.append(f"Rho statistics of the {kind} stars: {n} star(s) with valid moments and a WCS, not enough "
                         "for a pair" + ("; the rho metrics are NaN." if kind == "reserved" else "."))
            continue
        # without TreeCorr the exact pair sum is bounded to TREECORR_ABOVE stars (~10 s), so that the report's time
        # stays bounded whatever the catalog; with it, to rho_max_stars
        limit = config.rho_max_stars if _rho_backend(n) == "treecorr" else min(config.rho_max_stars, TREECORR_ABOVE)
        idx = thin(n, limit)
        if idx.size < n:
            notes.append(f"Rho statistics of the {kind} stars: an evenly spaced {idx.size} of {n} stars "
                         + ("(rho_max_stars)." if limit == config.rho_max_stars else
                            "(install TreeCorr, the qa extra, to pair them all)."))
        s = {k: v[idx] for k, v in s.items()}
        backend = _rho_backend(idx.size)
        if backend == "treecorr":
            notes.append(f"Rho statistics of the {kind} stars: {idx.size} stars, paired by TreeCorr.")
        out.append(rho_statistics(s["ra"], s["dec"], s["e1"], s["e2"], s["T"], s["pe1"], s["pe2"], s["pT"],
                                  min_sep_arcmin=config.rho_min_sep_arcmin, max_sep_arcmin=config.rho_max_sep_arcmin,
                                  nbins=config.rho_nbins, backend=backend))
    if not config.rho_min_sep_arcmin <= 1.0 < config.rho_max_sep_arcmin:
        notes.append("The rho metrics at 1 arcmin are NaN: 1 arcmin is outside the configured rho range.")
    return out[0], out[1]


def _rho_figure(res, used, config, figures):
    fig, axes = new_figure(2, 1, width=5.0, height=4.0)
    markers = ("o", "s", "^", "v", "D")
    for ax, r, kind in zip(axes, (res, used), ("reserved", "used")):
        ax.set_xscale("log")
        ax.set_xlabel("separation (arcmin)")
        ax.set_ylabel(r"$|\xi_+|$")
        if r is None or not np.any(r.npairs > 0):
            ax.text(0.5, 0.5, f"too few {kind} stars for pairs", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"rho statistics, {kind} stars")
            continue
        lowest = []
        for k, name in enumerate(RHO_NAMES):
            v, err = r.xip[k], np.sqrt(r.varxip[k])
            ok = np.isfinite(v) & (v != 0)
            if not ok.any():
                continue
            lowest.append(np.min(np.abs(v[ok])))
            # shifted a little along x so the five do not overlap; negative values open, same colour
            x = r.meanr * 1.04 ** (k - 2)
            pos, neg = ok & (v > 0), ok & (v < 0)
            line = ax.errorbar(x[pos], v[pos], yerr=err[pos], fmt=markers[k], ms=4, capsize=2, label=name)
            ax.errorbar(x[neg], -v[neg], yerr=err[neg], fmt=markers[k], ms=4, capsize=2, color=line[0].get_color(),
                        mfc="none")
        if lowest:
            ax.set_yscale("log")
            # error bars reaching zero would stretch the axis to nothing: the axis starts a decade below the data
            ax.set_ylim(bottom=0.1 * min(lowest))
            ax.legend(fontsize=7)
        ax.set_xlim(config.rho_min_sep_arcmin, config.rho_max_sep_arcmin)
        ax.set_title(f"rho statistics, {kind} stars ({r.n_stars})")
    return figures.save(fig, "psf_rho", "Rho statistics (xi+) of the star - model residuals of the reserved (left) "
                        "and used (right) PSF stars: |rho| with shot-noise error bars, negative values open.")


# --- figures ---------------------------------------------------------------------------------------------
def _rotation(products, detector) -> float:
    det = products.detector_geometry(int(detector))
    rot = getattr(det, "rotation", None) if det is not None else None
    return math.radians(rot) if rot is not None and math.isfinite(rot) else 0.0


def _whisker_figure(products, stars, q, config, figures):
    fig, axes = new_figure(2, 1, width=5.5, height=5.0)
    fx, fy = _column_or_nan(stars, "base_FPPosition_x"), _column_or_nan(stars, "base_FPPosition_y")
    ok = q["valid"] & np.isfinite(fx) & np.isfinite(fy)
    # whiskers in the focal-plane frame: a detector rotated by r turns its pixel-frame angle by r
    rot = np.array([_rotation(products, d) for d in np.asarray(stars["detector"])]) if len(stars) else np.zeros(0)
    idx = np.flatnonzero(ok)[thin(int(ok.sum()), config.max_plot_points)]
    extent = max(np.ptp(fx[idx]) if idx.size else 0.0, np.ptp(fy[idx]) if idx.size else 0.0, 1.0)
    for ax, (e1, e2, what) in zip(axes, ((q["pe1"], q["pe2"], "PSF model e"),
                                         (q["de1"], q["de2"], "star - model e"))):
        draw_detector_outlines(ax, products)
        ax.set_title(what)
        if not idx.size:
            ax.text(0.5, 0.5, "no PSF star with valid moments", ha="center", va="center", transform=ax.transAxes)
            continue
        mod = np.hypot(e1[idx], e2[idx])
        ang = 0.5 * np.arctan2(e2[idx], e1[idx]) + rot[idx]
        ref = float(np.percentile(mod, 90)) if np.any(mod > 0) else 0.01
        key = float(f"{ref:.1g}") if ref > 0 else 0.01
        scale = key / (0.08 * extent)  # the key's whisker is 8% of the field
        qv = ax.quiver(fx[idx], fy[idx], mod * np.cos(ang), mod * np.sin(ang), angles="xy", scale_units="xy",
                       scale=scale, headwidth=0, headlength=0, headaxislength=0, pivot="middle", width=0.004)
        ax.quiverkey(qv, 0.85, 1.02, key, f"|e| = {key:g}", labelpos="W", coordinates="axes")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("focal plane x (mm)")
        ax.set_ylabel("focal plane y (mm)")
    return figures.save(fig, "psf_whiskers", "Whiskers of the PSF model ellipticity (left) and of the star - model "
                        "residual (right) at the PSF stars, focal-plane frame: length proportional to |e|, angle "
                        "atan2(e2, e1)/2; the key gives the scale.")


def _size_figure(products, stars, q, config, figures):
    fig, axes = new_figure(3, 1, width=4.2, height=3.6)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = -2.5 * np.log10(_column_or_nan(stars, "base_PsfFlux_instFlux"))
    fx, fy = _column_or_nan(stars, "base_FPPosition_x"), _column_or_nan(stars, "base_FPPosition_y")
    groups = (("other candidates", q["valid"] & ~q["used"] & ~q["reserved"], "0.6"),
              ("used", q["valid"] & q["used"], "C0"), ("reserved", q["valid"] & q["reserved"], "C1"))
    for ax, xv, xlabel in zip(axes, (mag, fx, fy), ("instrumental magnitude (-2.5 log10 instFlux)",
                                                    "focal plane x (mm)", "focal plane y (mm)")):
        for label, sel, color in groups:
            rows = np.flatnonzero(sel & np.isfinite(xv))
            rows = rows[thin(rows.size, config.max_plot_points)]
            if rows.size:
                ax.scatter(xv[rows], q["dtt"][rows], s=8, color=color, label=f"{label} ({rows.size})")
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("dT/T (star - model)/model")
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        axes[0].legend(fontsize=7)
    return figures.save(fig, "psf_size_residuals", "Size residual dT/T = (T(star) - T(model))/T(model), T = Ixx + Iyy, "
                        "of the PSF stars against instrumental magnitude and focal-plane position: used (blue), "
                        "reserved (orange), other candidates (grey).")


def _stamp_figures(products, stars, det_col, present, config, figures, section):
    k = config.stamps_per_detector
    if k == 0:
        return
    flux_all = _column_or_nan(stars, "base_PsfFlux_instFlux")
    for d in present:
        rows = np.flatnonzero(det_col == d)
        q = psf_star_quantities(stars[rows])
        flux = flux_all[rows]
        picks = []
        for kind, sel in (("used", q["used"]), ("reserved", q["reserved"])):
            cand = np.flatnonzero(sel & np.isfinite(flux))
            cand = cand[np.argsort(-flux[cand], kind="stable")][:k]  # the brightest, deterministic
            picks += [(kind, rows[c]) for c in cand]
        if not picks:
            continue
        psf = _psf_of(products, d)
        if psf is None:
            section.notes.append(f"Detector {d}: no refit PSF model to draw the stamps with.")
            continue
        exposure = products.exposure("visit_image", d)
        if exposure is None:
            section.notes.append(f"Detector {d}: no visit_image, no PSF stamps{_problem(products, 'visit_image')}.")
            continue
        section.figures.append(_stamp_figure(d, exposure, psf, stars, picks, config, figures))


def _cut(image, xy0, box):
    """``image`` (y, x) with origin ``xy0`` on the pixel box ``(x0, y0, x1, y1)`` (inclusive), NaN outside."""
    x0, y0, x1, y1 = box
    out = np.full((y1 - y0 + 1, x1 - x0 + 1), np.nan)
    h, w = image.shape
    ax0, ay0 = max(x0, xy0[0]), max(y0, xy0[1])
    ax1, ay1 = min(x1, xy0[0] + w - 1), min(y1, xy0[1] + h - 1)
    if ax0 <= ax1 and ay0 <= ay1:
        out[ay0 - y0:ay1 - y0 + 1, ax0 - x0:ax1 - x0 + 1] = image[ay0 - xy0[1]:ay1 - xy0[1] + 1,
                                                                  ax0 - xy0[0]:ax1 - xy0[0] + 1]
    return out


def star_model_residual(image, xy0, psf, x: float, y: float, size: int):
    """The ``size x size`` stamp of ``image`` (origin ``xy0``) around the pixel holding (x, y), the PSF model
    there scaled by its least-squares amplitude, and the residual, each (size, size) (y, x).

    The model is ``psf.compute_image(x, y)`` (light centred at (x, y)) placed on its own `compute_image_bbox`
    pixels, zero beyond; the amplitude minimises sum (star - A model)^2 over the stamp's finite pixels. Pixels
    outside the image are NaN in the star and the residual.
    """
    h = size // 2
    ix, iy = math.floor(x + 0.5), math.floor(y + 0.5)
    box = (ix - h, iy - h, ix + h, iy + h)
    star = _cut(np.asarray(image, np.float64), xy0, box)
    m = np.asarray(psf.compute_image(x, y), np.float64)
    mb = psf.compute_image_bbox(x, y)
    model = np.nan_to_num(_cut(m, (mb.min_x, mb.min_y), box), nan=0.0)
    ok = np.isfinite(star)
    den = float(np.sum(model[ok] ** 2))
    amp = float(np.sum(star[ok] * model[ok]) / den) if den > 0 else math.nan
    model = amp * model
    return star, model, star - model


def _stamp_figure(d, exposure, psf, stars, picks, config, figures):
    size = config.stamp_size
    n = len(picks)
    fig, axes = new_figure(3, n, width=1.7, height=1.7)
    axes = np.atleast_2d(axes)
    xy0 = tuple(int(v) for v in exposure.xy0)
    x = np.asarray(stars["base_SdssCentroid_x"], float)
    y = np.asarray(stars["base_SdssCentroid_y"], float)
    for row, (kind, i) in enumerate(picks):
        star, model, res = star_model_residual(exposure.image, xy0, psf, float(x[i]), float(y[i]), size)
        vmax = float(np.nanmax(model)) if np.isfinite(model).any() and np.nanmax(model) > 0 else 1.0
        for col, (img, title) in enumerate(((star, "star"), (model, "model"), (res, "residual (+-10% peak)"))):
            ax = axes[row, col]
            if col < 2:
                ax.imshow(img, origin="lower", cmap="viridis", vmin=-0.05 * vmax, vmax=vmax, interpolation="nearest")
            else:
                ax.imshow(img, origin="lower", cmap="RdBu_r", vmin=-0.1 * vmax, vmax=0.1 * vmax,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{kind}\n({x[i]:.0f}, {y[i]:.0f})", fontsize=7)
    return figures.save(fig, f"psf_stamps_d{d:03d}",
                        f"Detector {d}: brightest used and reserved PSF stars (visit_image), the refit PSF model "
                        "scaled by its least-squares amplitude, and star - model on a diverging scale of +-10% of "
                        "the model peak.")
