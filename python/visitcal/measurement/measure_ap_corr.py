"""Measure aperture corrections: fit, per flux algorithm, the ratio of the calibration flux to its flux
over the detector (LSST meas_algorithms ``MeasureApCorrTask``).

For each name ``<name>`` to correct (the registered names of `visitcal.measurement.ap_corr_registry` whose
``_instFlux``, ``_instFluxErr`` and ``_flag`` columns exist, or the names given to the task):

1. ``sel`` = the science selector (default: the pixel-flag veto, unresolved, S/N > 200 on
   base_PsfFlux); the reference is good where ``sel`` holds, its ``_flag`` is False and its flux finite.
2. Of those, the stars where ``<name>_flag`` is False and ``<name>_instFlux`` is finite and > 0. With
   fewer than ``min_degrees_of_freedom + 1`` of them the name fails.
3. ``z = ref / flux`` at the slot centroid; ``fit = median(z)`` to start.
4. ``num_iter`` times: ``resid = z - fit``, ``sigma = 1.4826 MAD(resid) + 1e-7`` (MAD about the
   median, scipy's ``scale="normal"``), keep ``|resid| <= num_sigma_clip * sigma`` (the arrays shrink);
   while ``n_kept - n_terms < min_degrees_of_freedom`` lower both Chebyshev orders (below 0: the name
   fails); fit the Chebyshev field (unweighted least squares) to the kept points and evaluate it there.
5. ``do_final_median_shift``: ``a_00 -= median(fit - z)``.
6. ``ap_corr_map["<name>_instFlux"]`` = the field; ``["<name>_instFluxErr"]`` = a constant field equal
   to the *last sigma* (the scatter about the previous fit, computed at the start of the last
   iteration); ``apcorr_<name>_used`` is True on the stars of the final fit.

A failed name raises `MeasureApCorrError` unless it is in ``allow_failure`` (then it is skipped with a
warning and has no map entry). The work is a few hundred stars of whole-array numpy and two C++ calls
(the Chebyshev fit and evaluation); no per-pixel work happens here.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from .ap_corr_registry import get_ap_corr_name_set
from ..core.apcorr import ApCorrMap
from ..core.chebyshev import ChebyshevBoundedField, ChebyshevBoundedFieldControl
from ..core.geom import Box2I
from ..core.image import Exposure
from .source_selector import (
    RequireFlags,
    ScienceSourceSelectorConfig,
    ScienceSourceSelectorTask,
    SignalToNoiseLimit,
    resolve_column,
)

__all__ = ["MAD_TO_SIGMA", "MeasureApCorrConfig", "MeasureApCorrError", "MeasureApCorrResult", "MeasureApCorrTask"]

log = logging.getLogger(__name__)

#: 1 / Phi^-1(3/4): a normal distribution's sigma over its median absolute deviation (scipy "normal").
MAD_TO_SIGMA = 1.482602218505602

#: The pixel flags the science selectors veto (MeasureApCorrTask's defaults; FinalizeCharacterizationTask's
#: PSF-star selector adds slot_Centroid_flag and base_GaussianFlux_flag).
PIXEL_BAD_FLAGS = (
    "base_PixelFlags_flag_edge",
    "base_PixelFlags_flag_nodata",
    "base_PixelFlags_flag_interpolatedCenter",
    "base_PixelFlags_flag_saturatedCenter",
    "base_PixelFlags_flag_crCenter",
    "base_PixelFlags_flag_bad",
    "base_PixelFlags_flag_interpolated",
    "base_PixelFlags_flag_saturated",
)


def default_ap_corr_selector() -> ScienceSourceSelectorConfig:
    """LSST's MeasureApCorr selector: flags vetoed, unresolved, S/N > 200 on base_PsfFlux."""
    return ScienceSourceSelectorConfig(
        do_flags=True, do_unresolved=True, do_signal_to_noise=True,
        flags=RequireFlags(bad=PIXEL_BAD_FLAGS),
        signal_to_noise=SignalToNoiseLimit(flux_field="base_PsfFlux_instFlux", err_field="base_PsfFlux_instFluxErr",
                                           minimum=200.0))


class MeasureApCorrConfig(BaseModel):
    """Configuration of `MeasureApCorrTask` (LSST MeasureApCorrConfig in snake_case, LSST defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ref_flux_name: str = Field("slot_CalibFlux", description="Reference flux prefix: <name>_instFlux and "
                               "<name>_flag are read (a slot alias is resolved through the catalog's slots).")
    source_selector: ScienceSourceSelectorConfig = Field(default_factory=default_ap_corr_selector,
                                                         description="Which sources measure the corrections.")
    min_degrees_of_freedom: int = Field(1, ge=1, description="Minimum stars minus fitted terms.")
    fit_config: ChebyshevBoundedFieldControl = Field(default_factory=ChebyshevBoundedFieldControl,
                                                     description="Chebyshev field of each correction.")
    num_iter: int = Field(4, ge=1, description="Number of clip-and-fit iterations.")
    num_sigma_clip: float = Field(4.0, gt=0, description="Clip at this many (MAD) sigma.")
    do_final_median_shift: bool = Field(True, description="Shift the field's constant term so that the median "
                                        "residual of the final fit is 0.")
    fit_weighted: bool = Field(False, description="Not LSST: weight each star by 1/sigma_z, sigma_z the ratio's "
                               "error from the reference and the corrected flux's errors (stars without finite "
                               "errors are left out), and take the final median shift as the weighted median "
                               "(weights 1/sigma_z^2). LSST's fit is unweighted, so the many faint stars set it, with "
                               "their crowding and background biases; weighted, the bright ones do. On "
                               "bench_finalize_accuracy's repository an order-4 weighted field is 1.28 mmag rms from "
                               "the true correction, LSST's order-2 unweighted one 1.73 (bench/README.md).")
    allow_failure: tuple[str, ...] = Field((), description="Names whose failure is a warning, not an error.")


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value at which the cumulative weight of the sorted values first reaches half the total (the lower
    weighted median; with equal weights and an odd count, the median)."""
    order = np.argsort(values, kind="stable")
    c = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(c, 0.5 * c[-1])])


class MeasureApCorrError(RuntimeError):
    """An aperture correction could not be measured (LSST ``MeasureApCorrError``).

    Attributes
    ----------
    name : str
        The flux algorithm (``base_PsfFlux``, ...).
    n_sources : int
        Stars left when it failed.
    ndof : int
        Their degrees of freedom (stars minus fitted terms, or minus 1 before any fit).
    iteration : int or None
        The clipping iteration (0-based), None before the iterations.
    """

    def __init__(self, name: str, n_sources: int, ndof: int, iteration: int | None = None):
        self.name, self.n_sources, self.ndof = str(name), int(n_sources), int(ndof)
        self.iteration = None if iteration is None else int(iteration)
        where = "" if self.iteration is None else f" at iteration {self.iteration}"
        super().__init__(f"unable to measure the aperture correction for {self.name!r}{where}: "
                         f"{self.n_sources} sources, {self.ndof} degrees of freedom")

    def __reduce__(self):
        return (type(self), (self.name, self.n_sources, self.ndof, self.iteration))


@dataclasses.dataclass(frozen=True)
class MeasureApCorrResult:
    """``ap_corr_map``: the measured fields; ``metadata``: per name ``n_used``, ``order``, ``sigma`` (the
    error entry), ``median``, ``mad``, ``rms`` of fit - ratio on the final stars."""

    ap_corr_map: ApCorrMap
    metadata: dict


def _triangular_size(order_x: int, order_y: int, triangular: bool) -> int:
    return ChebyshevBoundedFieldControl(order_x=order_x, order_y=order_y, triangular=triangular).size


class MeasureApCorrTask:
    """Measure the aperture-correction map of one exposure (see the module docstring).

    Parameters
    ----------
    config : `MeasureApCorrConfig`, optional
    names_to_correct : sequence of str, optional
        Flux algorithms to measure; default every registered name (`get_ap_corr_name_set`) whose
        columns are in the catalog. Names given here must have their columns.
    """

    ConfigClass = MeasureApCorrConfig
    _DefaultName = "measureApCorr"

    def __init__(self, config: MeasureApCorrConfig | None = None, *, names_to_correct=None):
        self.config = config if config is not None else MeasureApCorrConfig()
        self.names_to_correct = None if names_to_correct is None else tuple(names_to_correct)
        self.source_selector = ScienceSourceSelectorTask(self.config.source_selector)

    def names_in(self, catalog: Table) -> list[str]:
        """The names this task corrects on ``catalog`` (those with _instFlux, _instFluxErr and _flag)."""
        suffixes = ("_instFlux", "_instFluxErr", "_flag")
        if self.names_to_correct is not None:
            for name in self.names_to_correct:
                missing = [name + s for s in suffixes if name + s not in catalog.colnames]
                if missing:
                    raise KeyError(f"catalog lacks {', '.join(missing)} needed to measure the aperture correction "
                                   f"of {name!r}")
            return list(self.names_to_correct)
        return [n for n in get_ap_corr_name_set() if all(n + s in catalog.colnames for s in suffixes)]

    def run(self, catalog: Table, exposure: Exposure | Box2I) -> MeasureApCorrResult:
        """Measure the corrections from the stars of ``catalog``.

        Parameters
        ----------
        catalog : astropy.table.Table
            Measured sources (the slot centroid, the reference and each name's flux columns, the
            selector's columns). Gains the boolean columns ``apcorr_<name>_used`` (and
            ``apcorr_<ref_flux_name>_used``, True on the stars of any final fit), in place.
        exposure : `Exposure` or `Box2I`
            Its bbox (parent pixels) is the fields' domain. LSST's argument order ``(exposure,
            catalog)`` is accepted too.

        Raises
        ------
        MeasureApCorrError
            A name not in ``allow_failure`` could not be measured.
        """
        if isinstance(catalog, (Exposure, Box2I)) and isinstance(exposure, Table):
            catalog, exposure = exposure, catalog  # LSST's order
        if not isinstance(catalog, Table):
            raise TypeError(f"catalog must be an astropy Table, got {type(catalog).__name__}")
        bbox = exposure if isinstance(exposure, Box2I) else exposure.bbox
        cfg = self.config
        names = self.names_in(catalog)
        ref = cfg.ref_flux_name
        ref_flux = np.asarray(catalog[resolve_column(catalog, ref + "_instFlux")], dtype=np.float64)
        ref_flag = np.asarray(catalog[resolve_column(catalog, ref + "_flag")], dtype=bool)
        x_all = np.asarray(catalog[resolve_column(catalog, "slot_Centroid_x")], dtype=np.float64)
        y_all = np.asarray(catalog[resolve_column(catalog, "slot_Centroid_y")], dtype=np.float64)
        sel = self.source_selector.run(catalog)
        good_ref = sel & ~ref_flag & np.isfinite(ref_flux)
        ref_used = np.zeros(len(catalog), dtype=bool)

        ap_corr_map = ApCorrMap()
        metadata: dict = {}
        for name in names:
            used = np.zeros(len(catalog), dtype=bool)
            try:
                field, sigma, rows, info = self._measure_one(name, catalog, good_ref, ref_flux, x_all, y_all, bbox)
            except MeasureApCorrError as err:
                catalog[f"apcorr_{name}_used"] = used
                if name in cfg.allow_failure:
                    log.warning("%s; skipped (allow_failure)", err)
                    continue
                raise
            used[rows] = True
            ref_used |= used
            catalog[f"apcorr_{name}_used"] = used
            ap_corr_map[name + "_instFlux"] = field
            ap_corr_map[name + "_instFluxErr"] = ChebyshevBoundedField(bbox, np.array([[sigma]]))
            metadata[name] = info
            log.info("Aperture correction for %s: median %g, MAD %g, RMS %g of fit - ratio over %d stars",
                     name, info["median"], info["mad"], info["rms"], info["n_used"])
        catalog[f"apcorr_{ref}_used"] = ref_used
        return MeasureApCorrResult(ap_corr_map=ap_corr_map, metadata=metadata)

    def _measure_one(self, name, catalog, good_ref, ref_flux, x_all, y_all, bbox):
        cfg = self.config
        flux = np.asarray(catalog[name + "_instFlux"], dtype=np.float64)
        flag = np.asarray(catalog[name + "_flag"], dtype=bool)
        with np.errstate(invalid="ignore"):
            is_good = good_ref & ~flag & np.isfinite(flux) & (flux > 0)
        rows = np.flatnonzero(is_good)
        if rows.size - 1 < cfg.min_degrees_of_freedom:
            raise MeasureApCorrError(name, rows.size, rows.size - 1)
        z = ref_flux[rows] / flux[rows]
        w = None
        if cfg.fit_weighted:
            # sigma_z / z = sqrt((sigma_ref / ref)^2 + (sigma_f / f)^2)
            ref_err = np.asarray(catalog[resolve_column(catalog, cfg.ref_flux_name + "_instFluxErr")], np.float64)
            err = np.asarray(catalog[name + "_instFluxErr"], np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                sz = np.abs(z) * np.hypot(ref_err[rows] / ref_flux[rows], err[rows] / flux[rows])
            ok = np.isfinite(sz) & (sz > 0)
            rows, z, w = rows[ok], z[ok], 1.0 / sz[ok]
            if rows.size - 1 < cfg.min_degrees_of_freedom:
                raise MeasureApCorrError(name, rows.size, rows.size - 1)
        x, y = x_all[rows], y_all[rows]
        order_x, order_y, tri = cfg.fit_config.order_x, cfg.fit_config.order_y, cfg.fit_config.triangular
        fit = np.full(z.shape, np.median(z))
        field = None
        sigma = math.nan
        for iteration in range(cfg.num_iter):
            resid = z - fit
            sigma = MAD_TO_SIGMA * float(np.median(np.abs(resid - np.median(resid)))) + 1e-7
            keep = np.abs(resid) <= cfg.num_sigma_clip * sigma
            rows, x, y, z = rows[keep], x[keep], y[keep], z[keep]
            if w is not None:
                w = w[keep]
            while rows.size - _triangular_size(order_x, order_y, tri) < cfg.min_degrees_of_freedom:
                if order_x == 0 and order_y == 0:
                    raise MeasureApCorrError(name, rows.size, rows.size - 1, iteration)
                order_x, order_y = max(order_x - 1, 0), max(order_y - 1, 0)
            control = ChebyshevBoundedFieldControl(order_x=order_x, order_y=order_y, triangular=tri)
            try:
                field = ChebyshevBoundedField.fit(bbox, x, y, z, weights=w, control=control)
            except ValueError:  # positions that cannot determine every term (e.g. all on one line)
                raise MeasureApCorrError(name, rows.size, rows.size - control.size, iteration) from None
            fit = field.evaluate(x, y)
        if cfg.do_final_median_shift:
            coeffs = field.coefficients
            coeffs[0, 0] -= float(np.median(fit - z)) if w is None else _weighted_median(fit - z, w * w)
            field = ChebyshevBoundedField(bbox, coeffs)
            fit = field.evaluate(x, y)
        d = fit - z
        info = {"n_used": int(rows.size), "order": (order_x, order_y), "sigma": sigma,
                "median": float(np.median(d)), "mad": float(np.median(np.abs(d - np.median(d)))),
                "rms": float(np.sqrt(np.mean(d * d)))}
        return field, sigma, rows, info

    def __repr__(self) -> str:
        return f"MeasureApCorrTask(config={self.config!r})"
