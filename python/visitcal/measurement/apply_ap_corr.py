"""Apply aperture corrections to a catalog, and the normalised calibration flux.

`ApplyApCorrTask` (LSST meas_base ``ApplyApCorrTask``), for every registered name
(`visitcal.measurement.ap_corr_registry`) whose ``<name>_instFlux`` column exists and that is not in ``ignore_list``:

* columns ``<name>_apCorr``, ``<name>_apCorrErr`` (float64, NaN to start) and ``<name>_flag_apCorr``;
* if the map lacks ``<name>_instFlux`` or ``<name>_instFluxErr``: warning, ``_flag_apCorr`` True on
  every row, nothing else changes;
* otherwise ``a = map[<name>_instFlux](slot_Centroid_x, slot_Centroid_y)`` and, with LSST's
  ``UseNaiveFluxErr = True``, ``aErr = 0``; ``_flag_apCorr`` is set on every row and, with
  ``do_flag_ap_corr_failures``, so is ``<name>_flag``; on the rows where ``a`` is finite and > 0:
  ``instFlux *= a``, ``instFluxErr *= a`` (the correction's own error is *not* propagated),
  ``_flag_apCorr`` cleared and ``<name>_flag`` restored.

Divergence from current LSST: in meas_base since July 2025 the ``_apCorr``/``_apCorrErr`` columns are
never written (``ApCorrInfo.doApCorrColumn`` stays None) and stay NaN. Here they hold ``a`` and ``aErr``
(0) on every row where the map has the entry (``a`` may be NaN or <= 0 on rows that were not corrected),
as LSST did before 2025-07.

`NormalizedCalibrationFluxTask` (meas_algorithms ``NormalizedCalibrationFluxTask``, as run by
``CalibrateImageTask`` and, apply-only, by ``ReprocessVisitImageTask`` and ``CalibrateTask``) brings the
raw calibration flux ``base_CompensatedTophatFlux_12`` onto the 12-px circular aperture:

* *measure* mode (characterisation): the ratio ``base_CircularApertureFlux_12_0 / raw`` is measured by a
  `MeasureApCorrTask` as an order-0 field; if that fails, the median ratio over the selected stars (finite,
  positive) is used. Not LSST, by default: the fit is weighted by each star's ratio error
  (``fit_weighted``), on every unresolved star (``base_ClassificationSizeExtendedness_value`` < 0.5), not
  deblended, without a bad pixel flag, with base_PsfFlux S/N > 50 (relaxed down to 20 when fewer than 2
  stars qualify). LSST's selection is the ``calib_psf_used`` stars with S/N > 200, unweighted. The ratio
  is ``1 + s (A(20.4) - A(12)) / raw``: its error is the annulus' background noise over the flux, ~1% for
  an S/N-200 star and 0.2% at S/N 1000, so a median of the few S/N > 200 PSF stars of a sparse detector
  missed the truth by 4.6-39 mmag on 7 of the 16 detectors of bench_matrix's ``default`` and ``seeing_*``
  rows (39 mmag from 5 stars), while the weighted fit on all the detector's stars is within 1.3 mmag on
  every detector of those rows and of ``lsst`` (bench/README.md);
* *apply* mode (calibration, reprocessing): the field comes from the exposure's ap-corr map; a map
  without it gives 1 with a warning.

Either way ``c = field(x, y)`` at the slot centroid, ``base_NormalizedCompensatedTophatFlux_instFlux =
raw * c``, ``_instFluxErr = raw_err * c``, ``_flag = raw_flag | c <= 0`` (or not finite), ``slot_CalibFlux``
is aliased to it, and the result's map holds ``base_CompensatedTophatFlux_12_instFlux`` (the field) and
``_instFluxErr`` (a constant 0, as in LSST, so the normalisation's error is not propagated), which
characterisation merges into the exposure's map so that later steps carry it forward.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from .ap_corr_registry import get_ap_corr_name_set
from ..core.apcorr import ApCorrMap
from ..core.chebyshev import ChebyshevBoundedField, ChebyshevBoundedFieldControl
from ..core.image import Exposure
from .measure_ap_corr import PIXEL_BAD_FLAGS, MeasureApCorrConfig, MeasureApCorrError, MeasureApCorrTask
from .source_selector import (RequireFlags, RequireUnresolved, ScienceSourceSelectorConfig, SignalToNoiseLimit,
                              resolve_column)
from ..core.table import set_slot

__all__ = [
    "ApplyApCorrConfig",
    "ApplyApCorrTask",
    "NormalizedCalibrationFluxConfig",
    "NormalizedCalibrationFluxResult",
    "NormalizedCalibrationFluxTask",
]

log = logging.getLogger(__name__)

#: LSST's module constant: do not propagate the correction's error into the flux error.
USE_NAIVE_FLUX_ERR = True


def _centroids(catalog: Table, x_column: str, y_column: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(catalog[resolve_column(catalog, x_column)], dtype=np.float64)
    y = np.asarray(catalog[resolve_column(catalog, y_column)], dtype=np.float64)
    return x, y


def _evaluate(field: ChebyshevBoundedField, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Field values at (x, y); NaN where the position is not finite."""
    out = np.full(x.shape, np.nan)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.any():
        out[ok] = field.evaluate(x[ok], y[ok])
    return out


class ApplyApCorrConfig(BaseModel):
    """Configuration of `ApplyApCorrTask` (LSST ApplyApCorrConfig in snake_case, LSST defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ignore_list: tuple[str, ...] = Field((), description="Registered names not to correct.")
    do_flag_ap_corr_failures: bool = Field(True, description="Set <name>_flag where the correction fails.")
    x_column: str = Field("slot_Centroid_x", description="Column of the x position (parent pixels).")
    y_column: str = Field("slot_Centroid_y", description="Column of the y position (parent pixels).")


class ApplyApCorrTask:
    """Apply an `ApCorrMap` to a catalog's registered fluxes, in place (see the module docstring)."""

    ConfigClass = ApplyApCorrConfig
    _DefaultName = "applyApCorr"

    def __init__(self, config: ApplyApCorrConfig | None = None):
        self.config = config if config is not None else ApplyApCorrConfig()

    def names_in(self, catalog: Table) -> list[str]:
        """Registered names with an ``_instFlux`` column in ``catalog``, minus ``ignore_list``."""
        return [n for n in get_ap_corr_name_set()
                if n + "_instFlux" in catalog.colnames and n not in self.config.ignore_list]

    def run(self, catalog: Table, ap_corr_map: ApCorrMap) -> Table:
        """Correct ``catalog`` (modified in place and returned) with ``ap_corr_map``."""
        if not isinstance(ap_corr_map, ApCorrMap):
            raise TypeError(f"ap_corr_map must be an ApCorrMap, got {type(ap_corr_map).__name__}")
        cfg = self.config
        n = len(catalog)
        names = self.names_in(catalog)
        x = y = None
        for name in names:
            for needed in ("_instFluxErr", "_flag"):
                if name + needed not in catalog.colnames:
                    raise KeyError(f"catalog has {name}_instFlux but no {name}{needed}")
            ap_col, err_col, flag_col = f"{name}_apCorr", f"{name}_apCorrErr", f"{name}_flag_apCorr"
            catalog[ap_col] = np.full(n, np.nan)
            catalog[err_col] = np.full(n, np.nan)
            catalog[flag_col] = np.ones(n, dtype=bool)
            key, key_err = name + "_instFlux", name + "_instFluxErr"
            if key not in ap_corr_map or key_err not in ap_corr_map:
                log.warning("The aperture-correction map has no %s (or its error): %s not corrected, "
                            "%s set on every row", key, name, flag_col)
                continue
            if x is None:
                x, y = _centroids(catalog, cfg.x_column, cfg.y_column)
            a = _evaluate(ap_corr_map[key], x, y)
            a_err = np.zeros(n) if USE_NAIVE_FLUX_ERR else _evaluate(ap_corr_map[key_err], x, y)
            flux_flag = np.asarray(catalog[name + "_flag"], dtype=bool).copy()
            if cfg.do_flag_ap_corr_failures:
                catalog[name + "_flag"] = np.ones(n, dtype=bool)
            with np.errstate(invalid="ignore"):
                good = np.isfinite(a) & (a > 0) & (a_err >= 0)
            flux = np.asarray(catalog[key], dtype=np.float64)
            flux_err = np.asarray(catalog[key_err], dtype=np.float64)
            if USE_NAIVE_FLUX_ERR:
                new_err = flux_err * a
            else:  # LSST's unused formula, kept for reference
                with np.errstate(invalid="ignore", divide="ignore"):
                    new_err = np.abs(flux * a) * np.sqrt((flux_err / flux) ** 2 + (a_err / a) ** 2)
            catalog[key][good] = (flux * a)[good]
            catalog[key_err][good] = new_err[good]
            catalog[ap_col] = a
            catalog[err_col] = a_err
            flags = np.asarray(catalog[flag_col], dtype=bool).copy()
            flags[good] = False
            catalog[flag_col] = flags
            if cfg.do_flag_ap_corr_failures:
                restored = np.asarray(catalog[name + "_flag"], dtype=bool).copy()
                restored[good] = flux_flag[good]
                catalog[name + "_flag"] = restored
        return catalog

    def __repr__(self) -> str:
        return f"ApplyApCorrTask(config={self.config!r})"


def _default_normalization_ap_corr() -> MeasureApCorrConfig:
    return MeasureApCorrConfig(
        ref_flux_name="base_CircularApertureFlux_12_0",
        fit_config=ChebyshevBoundedFieldControl(order_x=0, order_y=0, triangular=True),
        fit_weighted=True,
        fallback_min_snr=20.0,
        source_selector=ScienceSourceSelectorConfig(
            do_flags=True, do_unresolved=True, do_signal_to_noise=True, do_isolated=True,
            flags=RequireFlags(bad=PIXEL_BAD_FLAGS),
            unresolved=RequireUnresolved(name="base_ClassificationSizeExtendedness_value", maximum=0.5),
            signal_to_noise=SignalToNoiseLimit(flux_field="base_PsfFlux_instFlux",
                                               err_field="base_PsfFlux_instFluxErr", minimum=50.0)))


class NormalizedCalibrationFluxConfig(BaseModel):
    """Configuration of `NormalizedCalibrationFluxTask` (LSST names in snake_case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw_calibflux_name: str = Field("base_CompensatedTophatFlux_12", description="Raw calibration flux prefix.")
    normalized_calibflux_name: str = Field("base_NormalizedCompensatedTophatFlux",
                                           description="Prefix of the normalised flux columns written.")
    do_set_calib_slot: bool = Field(True, description="Alias slot_CalibFlux to the normalised flux.")
    do_measure_ap_corr: bool = Field(True, description="Measure the normalisation (characterisation); else "
                                     "take it from the exposure's ap-corr map (calibration, reprocessing).")
    measure_ap_corr: MeasureApCorrConfig = Field(default_factory=_default_normalization_ap_corr,
                                                 description="How the normalisation is measured.")
    fallback_to_median_ratio: bool = Field(True, description="When the measurement fails, use the median ratio "
                                           "reference / raw over the selected stars.")


@dataclasses.dataclass(frozen=True)
class NormalizedCalibrationFluxResult:
    """``ap_corr_map``: the normalisation entries (``<raw>_instFlux``, ``<raw>_instFluxErr``);
    ``degraded_reason``: None, or the fallback the measurement took (a relaxed S/N limit, the median ratio)."""

    ap_corr_map: ApCorrMap
    degraded_reason: str | None = None


class NormalizedCalibrationFluxTask:
    """Measure and/or apply the normalisation of the raw calibration flux (see the module docstring)."""

    ConfigClass = NormalizedCalibrationFluxConfig
    _DefaultName = "normalizedCalibrationFlux"

    def __init__(self, config: NormalizedCalibrationFluxConfig | None = None):
        self.config = config if config is not None else NormalizedCalibrationFluxConfig()
        self.measure_ap_corr = MeasureApCorrTask(self.config.measure_ap_corr,
                                                 names_to_correct=[self.config.raw_calibflux_name])

    def run(self, *, exposure: Exposure, catalog: Table) -> NormalizedCalibrationFluxResult:
        """Add the normalised flux columns to ``catalog`` (in place).

        Parameters
        ----------
        exposure : `Exposure`
            Its bbox is the field's domain; in apply mode its ``ap_corr_map`` supplies the field.
        catalog : astropy.table.Table
            With the raw flux, its error and flag, and the slot centroid (and, in measure mode, the
            reference flux and the selector's columns).
        """
        cfg = self.config
        raw = cfg.raw_calibflux_name
        key, key_err = raw + "_instFlux", raw + "_instFluxErr"
        bbox = exposure.bbox
        degraded = None
        if cfg.do_measure_ap_corr:
            field, degraded = self._measure(exposure, catalog)
        else:
            apc = exposure.ap_corr_map
            if apc is not None and key in apc:
                field = apc[key]
            else:
                log.warning("The exposure's ap-corr map has no %s: %s is not normalised (factor 1)", key, raw)
                field = ChebyshevBoundedField(bbox, np.array([[1.0]]))
        x, y = _centroids(catalog, "slot_Centroid_x", "slot_Centroid_y")
        c = _evaluate(field, x, y)
        out = cfg.normalized_calibflux_name
        catalog[out + "_instFlux"] = np.asarray(catalog[key], dtype=np.float64) * c
        catalog[out + "_instFluxErr"] = np.asarray(catalog[key_err], dtype=np.float64) * c
        with np.errstate(invalid="ignore"):
            catalog[out + "_flag"] = np.asarray(catalog[raw + "_flag"], dtype=bool) | ~(c > 0)
        if cfg.do_set_calib_slot:
            set_slot(catalog, "CalibFlux", out)
        ap_corr_map = ApCorrMap()
        ap_corr_map[key] = field
        ap_corr_map[key_err] = ChebyshevBoundedField(bbox, np.array([[0.0]]))
        return NormalizedCalibrationFluxResult(ap_corr_map=ap_corr_map, degraded_reason=degraded)

    def _measure(self, exposure: Exposure, catalog: Table) -> tuple[ChebyshevBoundedField, str | None]:
        """The normalisation field and the fallback taken (None when none)."""
        cfg = self.config
        key = cfg.raw_calibflux_name + "_instFlux"
        try:
            res = self.measure_ap_corr.run(catalog, exposure)
            return res.ap_corr_map[key], res.degraded_reason
        except MeasureApCorrError as err:
            if not cfg.fallback_to_median_ratio:
                raise
            ref = cfg.measure_ap_corr.ref_flux_name
            sel = self.measure_ap_corr.source_selector.run(catalog)
            ref_flux = np.asarray(catalog[resolve_column(catalog, ref + "_instFlux")], dtype=np.float64)
            raw = np.asarray(catalog[key], dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = ref_flux[sel] / raw[sel]
            ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
            if ratio.size == 0:
                raise MeasureApCorrError(cfg.raw_calibflux_name, 0, -1) from err
            value = float(np.median(ratio))
            log.warning("%s; using the median ratio %s / %s = %g over %d stars", err, ref, key, value, ratio.size)
            why = f"{cfg.raw_calibflux_name}: the median ratio over {ratio.size} star(s) ({err})"
            return ChebyshevBoundedField(exposure.bbox, np.array([[value]])), why

    def __repr__(self) -> str:
        return f"NormalizedCalibrationFluxTask(config={self.config!r})"
