"""Quality metrics: named numbers with units, thresholds that grade them, and the per-visit Parquet table.

Every number the report shows as a headline is a `Metric`: a registered name (`MetricSpec`, one per
name, documented in the docs' QA page), a value, and the detector it belongs to (``None`` for a
visit-wide metric). Names follow LSST where LSST has one (``ComputeExposureSummaryStatsTask``'s
``psfStarDeltaE1Median``..., analysis_tools' ``astromOffsetMean``...), given in ``lsst_name``; otherwise
they are ours, in the same camelCase.

A `Threshold` grades a value ``ok``, ``warn`` or ``fail``; each spec carries a default one (or none), and
`QaConfig.thresholds` overrides them by metric name. A value that is NaN (not measurable on these data)
grades ``n/a``: never ``ok``.

A statistic of a few stars is noisy, and a report that cries wolf on every sparse detector is a report
nobody reads; one that calls a real bias ``ok`` is worse. So a metric may carry the number of objects it
was computed from (``count``) and its standard error (``error``). A spec's ``min_count`` is the fewest
objects worth grading: below it the value is shown but grades ``n/a``. With an error, a bound is crossed
only when the value is beyond it by more than ``QaConfig.grade_significance`` (2) standard errors: a
significant excess, as one would test it by hand (``|x| - 2 sigma > bound``; for a lower bound,
``x + 2 sigma < bound``).

The table written per visit (`metrics_table`, `write_metrics`) is long: one row per (detector, metric),
with columns ``visit``, ``detector`` (-1 for the visit), ``section``, ``metric``, ``value``, ``error``
(NaN when none), ``count`` (-1 when not counted), ``unit``, ``grade``, ``warn``, ``fail`` (the bounds
applied, as text), and ``lsst_name``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.atomic import atomic_write

__all__ = ["GRADES", "Metric", "MetricSpec", "QaConfig", "Threshold", "grade", "metric_spec", "metrics_table",
           "mean_error", "median_error", "register", "registered_metrics", "robust_sigma", "worst_grade",
           "write_metrics"]

#: The grades, best first. ``n/a``: the metric could not be measured (no data), which is shown, not hidden.
GRADES = ("ok", "n/a", "warn", "fail")


class Threshold(BaseModel):
    """Bounds that grade a metric: ``fail`` beyond a ``fail_*`` bound, else ``warn`` beyond a ``warn_*``
    bound, else ``ok``. With ``absolute`` the bounds apply to ``|value|`` (a bias either way)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warn_above: float | None = None
    fail_above: float | None = None
    warn_below: float | None = None
    fail_below: float | None = None
    absolute: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        for name in ("warn_above", "fail_above", "warn_below", "fail_below"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"threshold {name} must be finite, got {v}")
        if self.warn_above is not None and self.fail_above is not None and self.fail_above < self.warn_above:
            raise ValueError(f"fail_above ({self.fail_above}) is below warn_above ({self.warn_above})")
        if self.warn_below is not None and self.fail_below is not None and self.fail_below > self.warn_below:
            raise ValueError(f"fail_below ({self.fail_below}) is above warn_below ({self.warn_below})")
        return self

    def describe(self, level: str) -> str:
        """``"|x| > 0.01"``-style text of the ``level`` (``"warn"`` or ``"fail"``) bounds; empty if none."""
        x = "|x|" if self.absolute else "x"
        parts = []
        above, below = getattr(self, f"{level}_above"), getattr(self, f"{level}_below")
        if above is not None:
            parts.append(f"{x} > {above:g}")
        if below is not None:
            parts.append(f"{x} < {below:g}")
        return " or ".join(parts)


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """What a metric name means.

    Parameters
    ----------
    name : str
        The metric's name in the table (camelCase, LSST's where one exists).
    section : str
        The report section that computes it: ``processing``, ``psf``, ``apcorr``, ``astrometry``,
        ``photometry``, ``catalog`` or ``truth``.
    unit : str
        Its unit (``""`` for a pure number), e.g. ``"mas"``, ``"mmag"``, ``"arcmin"``.
    description : str
        One sentence: what is measured, on which objects.
    scope : {"detector", "visit"}
        Whether a value is given per detector or once per visit.
    threshold : Threshold or None
        The default grading bounds; None: the metric is informative only.
    lsst_name : str or None
        The LSST name when LSST computes the same quantity under another name (or the same name).
    min_count : int
        The fewest objects (`Metric.count`) a value must come from to be graded; fewer grade ``n/a``.
    """

    name: str
    section: str
    unit: str
    description: str
    scope: str = "detector"
    threshold: Threshold | None = None
    lsst_name: str | None = None
    min_count: int = 0

    def __post_init__(self):
        if self.scope not in ("detector", "visit"):
            raise ValueError(f"metric {self.name}: scope must be 'detector' or 'visit', got {self.scope!r}")


_REGISTRY: dict[str, MetricSpec] = {}


def register(*specs: MetricSpec) -> None:
    """Add metric specs to the registry (a section module does this at import). A name registered twice
    with a different spec is an error: one name, one meaning."""
    for spec in specs:
        old = _REGISTRY.get(spec.name)
        if old is not None and old != spec:
            raise ValueError(f"metric {spec.name!r} registered twice with different meanings")
        _REGISTRY[spec.name] = spec


def metric_spec(name: str) -> MetricSpec:
    """The spec of a registered metric; `KeyError` naming it when it is unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown QA metric {name!r}") from None


def registered_metrics() -> list[MetricSpec]:
    """Every registered spec, sorted by section then name (the docs' metric table)."""
    return sorted(_REGISTRY.values(), key=lambda s: (s.section, s.name))


@dataclasses.dataclass(frozen=True)
class Metric:
    """One value of a registered metric: ``detector`` None for a visit-wide one; ``error`` its standard error
    (NaN: none) and ``count`` the number of objects it comes from (None: not a count-based statistic)."""

    name: str
    value: float
    detector: int | None = None
    error: float = math.nan
    count: int | None = None

    def __post_init__(self):
        spec = metric_spec(self.name)
        if (spec.scope == "visit") != (self.detector is None):
            raise ValueError(f"metric {self.name} is per {spec.scope}; got detector={self.detector}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "error", float(self.error))
        if self.count is not None:
            object.__setattr__(self, "count", int(self.count))


class QaConfig(BaseModel):
    """Configuration of `visitcal qa` (`visitcal.qa.report.make_report`).

    Every field that sizes time or memory is bounded.
    """

    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, Threshold] = Field(
        default_factory=dict, description="Grading bounds by metric name, replacing the metric's default (names "
                                          "are checked against the registered metrics when the report starts).")
    stamps_per_detector: int = Field(
        3, ge=0, le=20, description="PSF stars shown as star / model / residual stamps per detector and kind "
                                    "(used, reserved).")
    stamp_size: int = Field(25, ge=9, le=101, description="Side of a PSF star stamp, pixels (odd).")
    rho_min_sep_arcmin: float = Field(0.5, gt=0.0, le=600.0, description="Smallest rho-statistics separation.")
    rho_max_sep_arcmin: float = Field(60.0, gt=0.0, le=6000.0, description="Largest rho-statistics separation.")
    rho_nbins: int = Field(8, ge=1, le=100, description="Logarithmic separation bins of the rho statistics.")
    rho_max_stars: int = Field(
        200_000, ge=10, le=10_000_000,
        description="Most stars used for the rho statistics, paired by TreeCorr above 20 000 when it is installed "
                    "(without it, at most 20 000: the exact pair sum grows as n^2); above, an evenly spaced subset.")
    match_radius_arcsec: float = Field(
        1.0, gt=0.0, le=10.0, description="Radius of the match of sources to the reference catalog.")
    max_plot_points: int = Field(
        200_000, ge=100, le=10_000_000, description="Most points drawn in one scatter plot (evenly thinned).")
    dpi: int = Field(90, ge=30, le=300, description="Resolution of the PNG figures.")
    grade_significance: float = Field(
        2.0, ge=0.0, le=10.0, description="A metric with a standard error crosses a bound only when it is beyond it "
                                          "by more than this many errors (0: the value alone decides).")

    # --- astrometry, photometry and apcorr sections (qa/astrometry.py, photometry.py, apcorr.py) -------------
    astrom_min_snr: float = Field(
        50.0, gt=0.0, le=1e6, description="Astrometry: PSF-flux S/N above which a point source is matched to the "
                                          "reference catalog (when calib_astrometry_used flags none). 50: at S/N 10 "
                                          "the centroid noise alone (~40 mas rms on the simulated repositories) "
                                          "exceeds the residual rms's warn bound of 20 mas; above 50 it is ~6 mas.")
    photom_min_snr: float = Field(
        50.0, gt=0.0, le=1e6, description="Photometry: PSF-flux S/N above which a matched star enters the "
                                          "calibrated - reference magnitude metrics.")
    psf_ap_min_snr: float = Field(
        100.0, gt=0.0, le=1e6, description="Photometry: PSF-flux S/N above which a star enters the PSF - aperture "
                                           "magnitude metrics.")
    apcorr_grid: int = Field(
        32, ge=2, le=512, description="Aperture corrections: points per side of the grid each field is drawn and "
                                      "its range measured on.")
    # --- end of the astrometry, photometry and apcorr block -------------------------------------------------

    # --- truth section (visitcal.qa.truth, `visitcal qa --truth`) -----------------------------------------------
    truth_wcs_grid: int = Field(
        21, ge=2, le=201, description="Truth: points per axis of the grid over each detector on which the fitted "
                                      "and the true WCS are compared.")
    truth_match_radius_px: float = Field(
        1.0, gt=0.0, le=10.0, description="Truth: a true object counts as detected when a final source lies within "
                                          "this many pixels.")
    truth_completeness_bin_mag: float = Field(
        0.5, ge=0.05, le=2.0, description="Truth: width of the magnitude bins of the completeness curve.")
    truth_bright_snr: float = Field(
        50.0, gt=0.0, le=1e6, description="Truth: 'bright' stars of the completeness have a true flux above this "
                                          "many sky-limited PsfFlux errors.")
    # --- end of the truth section's fields ----------------------------------------------------------------------

    @model_validator(mode="after")
    def _check(self):
        if self.rho_min_sep_arcmin >= self.rho_max_sep_arcmin:
            raise ValueError("rho_min_sep_arcmin must be below rho_max_sep_arcmin")
        if self.stamp_size % 2 == 0:
            raise ValueError(f"stamp_size must be odd, got {self.stamp_size}")
        return self

    def threshold(self, name: str) -> Threshold | None:
        """The bounds that grade ``name``: the configured ones, else the metric's default."""
        return self.thresholds.get(name, metric_spec(name).threshold)


def grade(value: float, threshold: Threshold | None, *, error: float = math.nan, significance: float = 2.0,
          count: int | None = None, min_count: int = 0) -> str:
    """``ok``, ``warn`` or ``fail`` of ``value`` under ``threshold`` (``ok`` without one).

    ``n/a`` when the value is not finite, or when it comes from ``count`` objects, fewer than ``min_count``.
    With a finite ``error`` (standard error), a bound is crossed only by more than ``significance`` errors:
    ``x - significance * error > above`` and ``x + significance * error < below`` (``x`` being ``|value|``
    for an absolute threshold).
    """
    value = float(value)
    if not math.isfinite(value) or (count is not None and count < min_count):
        return "n/a"
    if threshold is None:
        return "ok"
    x = abs(value) if threshold.absolute else value
    margin = significance * error if math.isfinite(error) and error > 0 else 0.0
    for level in ("fail", "warn"):
        above, below = getattr(threshold, f"{level}_above"), getattr(threshold, f"{level}_below")
        if (above is not None and x - margin > above) or (below is not None and x + margin < below):
            return level
    return "ok"


def worst_grade(grades) -> str:
    """The worst of ``grades`` in the order `GRADES` (``ok`` for none)."""
    rank = {g: k for k, g in enumerate(GRADES)}
    return max(grades, key=lambda g: rank[g], default="ok")


def metrics_table(visit: int, metrics, config: QaConfig) -> pa.Table:
    """The long table of ``metrics`` (an iterable of `Metric`) for ``visit``, sorted by detector (the visit's
    rows, -1, first), section and name, with each value's grade under ``config``."""
    rows = []
    for m in metrics:
        spec = metric_spec(m.name)
        th = config.threshold(m.name)
        g = grade(m.value, th, error=m.error, significance=config.grade_significance, count=m.count,
                  min_count=spec.min_count)
        rows.append((-1 if m.detector is None else int(m.detector), spec.section, m.name, m.value, m.error,
                     -1 if m.count is None else m.count, spec.unit, g, th.describe("warn") if th else "",
                     th.describe("fail") if th else "", spec.lsst_name or ""))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    cols = list(zip(*rows)) if rows else [[] for _ in range(11)]
    return pa.table({
        "visit": pa.array([int(visit)] * len(rows), pa.int64()),
        "detector": pa.array(cols[0], pa.int32()),
        "section": pa.array(cols[1], pa.string()),
        "metric": pa.array(cols[2], pa.string()),
        "value": pa.array(np.asarray(cols[3], float), pa.float64()),
        "error": pa.array(np.asarray(cols[4], float), pa.float64()),
        "count": pa.array(cols[5], pa.int64()),
        "unit": pa.array(cols[6], pa.string()),
        "grade": pa.array(cols[7], pa.string()),
        "warn": pa.array(cols[8], pa.string()),
        "fail": pa.array(cols[9], pa.string()),
        "lsst_name": pa.array(cols[10], pa.string()),
    })


def write_metrics(table: pa.Table, path) -> Path:
    """Write a `metrics_table` to ``path`` (Parquet) atomically."""
    path = Path(path)
    with atomic_write(path) as f:
        pq.write_table(table, f)
    return path


def robust_sigma(values) -> float:
    """1.4826 times the median absolute deviation of the finite ``values`` (the Gaussian sigma a median-based
    estimate gives; analysis_tools' ``sigmaMad``); NaN when there are none."""
    a = np.asarray(values, float)
    a = a[np.isfinite(a)]
    return float(1.4826 * np.median(np.abs(a - np.median(a)))) if a.size else math.nan


def mean_error(values) -> float:
    """Standard error of the mean of the finite ``values``: ``std(ddof=1) / sqrt(n)``; NaN below 2 values."""
    a = np.asarray(values, float)
    a = a[np.isfinite(a)]
    return float(np.std(a, ddof=1) / math.sqrt(a.size)) if a.size >= 2 else math.nan


def median_error(values) -> float:
    """Standard error of the median of the finite ``values`` for a Gaussian core: ``1.2533 * robust_sigma /
    sqrt(n)`` (the median's efficiency is 2/pi of the mean's); NaN below 2 values."""
    a = np.asarray(values, float)
    a = a[np.isfinite(a)]
    return float(1.2533 * robust_sigma(a) / math.sqrt(a.size)) if a.size >= 2 else math.nan
