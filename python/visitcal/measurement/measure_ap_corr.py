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

Beyond LSST, for crowded fields: after the selector, ``aperture_excess`` (off by default; characterisation, calibration's normalisation
and finalize turn it on for a crowded detector: their ``crowded_field``) leaves out the stars whose
12-px aperture holds light their PSF flux does not explain (neighbours merged into their footprint), which bias
the calibration flux's normalisation and the corrections high (`visitcal.measurement.aperture_excess`); what it
did is ``metadata["aperture_excess"]`` (a list, one dict per S/N level tried), and a cut skipped because it would
leave fewer than its ``min_stars`` at the S/N level used is a fallback (``ap_corr_degraded_reason``).

Beyond LSST, for sparse fields (each step recorded, never silent):

* **order step-down**: besides LSST's ``min_degrees_of_freedom``, ``min_stars_per_term`` (off by default)
  lowers both orders while there are fewer stars than that many per fitted term;
* **fainter stars**: when even a constant cannot be fitted from the selected stars, the selector's S/N limit is
  relaxed (halved each time, not below ``fallback_min_snr``) and the name measured again;
* **a constant from too few stars** (``few_star_constant``): when even the faintest level leaves too few stars
  for a fit (one star), the constant is their median ratio with the ratio's own error, recorded;
* **check**: the field is evaluated on a ``check_grid_size`` x ``check_grid_size`` grid over the bbox (corners
  included); it must be finite there and within ``valid_range``, else the order is lowered and the field refit
  (a constant outside the range fails the name).

The result's ``metadata`` holds per name ``ap_corr_order_<name>`` (the order used), the per-name dict (with
``degraded_reason``: None, or why the order or the S/N limit was lowered) and ``ap_corr_degraded_reason`` (the
names' reasons joined by "; ", None when every name used the configured order and S/N limit); `degraded`
tells whether any fallback was taken.

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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .ap_corr_registry import get_ap_corr_name_set
from .aperture_excess import ApertureExcessConfig, apply_aperture_excess_cut
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
    num_iter: int = Field(4, ge=1, le=100, description="Number of clip-and-fit iterations. At most 100.")
    num_sigma_clip: float = Field(4.0, gt=0, le=100, description="Clip at this many (MAD) sigma. At most 100.")
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
    min_stars_per_term: float = Field(0.0, ge=0, description="Not LSST: also lower the orders while the kept stars "
                                      "are fewer than this many per fitted term (0: LSST's rule only, "
                                      "min_degrees_of_freedom). A lowered order is recorded as a fallback.")
    fallback_min_snr: float | None = Field(50.0, gt=0, description="Not LSST: when not even a constant can be fitted, "
                                           "relax the selector's S/N minimum (halved each time) down to this floor "
                                           "before giving up; None: never. A relaxed limit is recorded as a "
                                           "fallback. 50: the ratio of two fluxes at S/N 50 scatters by ~3%, so a "
                                           "few such stars still give the constant to ~1-2%.")
    valid_range: tuple[float, float] = Field((0.5, 2.0), description="Not LSST: the field must lie in this range "
                                             "(and be finite) on the check grid over the detector; otherwise the "
                                             "order is lowered (a constant outside it fails the name).")
    check_grid_size: int = Field(9, ge=2, le=1000, description="Points per side of the check grid (corners "
                                                               "included). At most 1000: the field is evaluated on "
                                                               "its square.")
    few_star_constant: bool = Field(True, description="Not LSST: when even the faintest S/N level leaves too few "
                                    "stars for a fit with min_degrees_of_freedom (1 star), the constant is that "
                                    "star's ratio (the median ratio of the stars left), its error the ratio's own, "
                                    "within valid_range; recorded as a fallback. Off: the name fails (LSST).")
    aperture_excess: ApertureExcessConfig = Field(
        default_factory=lambda: ApertureExcessConfig(do_cut=False), description="Not LSST (off by default; "
        "characterisation, calibration and finalize turn it on for a crowded detector, their crowded_field): leave out the selected stars whose 12-px "
        "aperture holds light their PSF flux does not explain (neighbours merged into their footprint; "
        "`visitcal.measurement.aperture_excess`). In a crowded field they bias the calibration flux's "
        "normalisation and the corrections high.")

    @model_validator(mode="after")
    def _check_range(self):
        lo, hi = self.valid_range
        if not 0 < lo < hi:
            raise ValueError(f"valid_range must satisfy 0 < low < high, got {self.valid_range}")
        return self


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
    reason : str or None
        Why, when it is not the star count (e.g. a constant field outside ``valid_range``).
    """

    def __init__(self, name: str, n_sources: int, ndof: int, iteration: int | None = None,
                 reason: str | None = None):
        self.name, self.n_sources, self.ndof = str(name), int(n_sources), int(ndof)
        self.iteration = None if iteration is None else int(iteration)
        self.reason = None if reason is None else str(reason)
        where = "" if self.iteration is None else f" at iteration {self.iteration}"
        why = f"{self.reason} ({self.n_sources} sources)" if self.reason else \
            f"{self.n_sources} sources, {self.ndof} degrees of freedom"
        super().__init__(f"unable to measure the aperture correction for {self.name!r}{where}: {why}")

    def __reduce__(self):
        return (type(self), (self.name, self.n_sources, self.ndof, self.iteration, self.reason))


@dataclasses.dataclass(frozen=True)
class MeasureApCorrResult:
    """``ap_corr_map``: the measured fields; ``metadata``: per name a dict (``n_used``, ``order``, ``sigma`` (the
    error entry), ``median``, ``mad``, ``rms`` of fit - ratio on the final stars, ``min_snr`` the selector's S/N
    limit used, ``degraded_reason``) and ``ap_corr_order_<name>`` (int, the order used), and
    ``ap_corr_degraded_reason`` (str or None; see the module docstring)."""

    ap_corr_map: ApCorrMap
    metadata: dict

    @property
    def degraded(self) -> bool:
        """Whether a fallback (a lower order or a relaxed S/N limit) was used for any name."""
        return bool(self.metadata.get("ap_corr_degraded_reason"))

    @property
    def degraded_reason(self) -> str | None:
        """The fallbacks taken, per name, or None."""
        return self.metadata.get("ap_corr_degraded_reason")


def _fmt(value) -> str:
    """An S/N limit in words (``"none"`` for no limit)."""
    return "none" if value is None else f"{value:g}"


def _short(err: MeasureApCorrError) -> str:
    return err.reason or f"{err.n_sources} stars"


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

        Returns
        -------
        `MeasureApCorrResult`
            The map and the metadata; ``degraded`` when a fallback (a lower order, fainter stars) was used.

        Raises
        ------
        MeasureApCorrError
            A name not in ``allow_failure`` could not be measured, even from the fainter stars down to
            ``fallback_min_snr`` and at order 0 (its notes list what was tried).
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
        ref_ok = ~ref_flag & np.isfinite(ref_flux)
        levels = self._snr_levels()
        good_refs: dict[int, np.ndarray] = {}
        ref_used = np.zeros(len(catalog), dtype=bool)
        conf_order = max(cfg.fit_config.order_x, cfg.fit_config.order_y)

        ap_corr_map = ApCorrMap()
        metadata: dict = {}
        reasons = []
        excess: dict = {}
        for name in names:
            used = np.zeros(len(catalog), dtype=bool)
            steps = []
            field = None
            for k, (snr, selector) in enumerate(levels):
                if k not in good_refs:
                    good_refs[k] = self._isolated(catalog, selector.run(catalog) & ref_ok, bbox, snr, excess)
                try:
                    field, sigma, rows, info = self._measure_name(name, catalog, good_refs[k], ref_flux, x_all,
                                                                  y_all, bbox)
                    break
                except MeasureApCorrError as err:
                    if k + 1 < len(levels):
                        steps.append(f"S/N > {_fmt(snr)}: {_short(err)}")
                        log.info("%s; retrying with stars of S/N > %s", err, _fmt(levels[k + 1][0]))
                        continue
                    few = self._few_star_constant(name, catalog, good_refs[k], ref_flux, bbox) \
                        if cfg.few_star_constant and err.reason is None and err.n_sources >= 1 else None
                    if few is not None:
                        field, sigma, rows, info = few
                        steps.append(f"S/N > {_fmt(snr)}: {_short(err)}: the constant of {rows.size} star(s) "
                                     f"without degrees of freedom")
                        break
                    if steps:
                        err.add_note(f"also tried: {'; '.join(steps)}")
                    catalog[f"apcorr_{name}_used"] = used
                    if name in cfg.allow_failure:
                        log.warning("%s; skipped (allow_failure)", err)
                        break
                    raise
            if field is None:
                continue
            used[rows] = True
            ref_used |= used
            catalog[f"apcorr_{name}_used"] = used
            ap_corr_map[name + "_instFlux"] = field
            ap_corr_map[name + "_instFluxErr"] = ChebyshevBoundedField(bbox, np.array([[sigma]]))
            info["min_snr"] = snr
            why = list(info.pop("order_steps"))
            if steps:
                why.insert(0, f"S/N limit {_fmt(levels[0][0])} -> {_fmt(snr)} ({'; '.join(steps)})")
            order = max(info["order"])
            info["degraded_reason"] = None
            if why:
                info["degraded_reason"] = (f"{name}: order {order} of {conf_order}, S/N > {_fmt(snr)}, "
                                           f"{info['n_used']} stars: " + "; ".join(why))
                reasons.append(info["degraded_reason"])
                log.warning("Aperture correction degraded: %s", info["degraded_reason"])
            metadata[name] = info
            metadata[f"ap_corr_order_{name}"] = order
            log.info("Aperture correction for %s: median %g, MAD %g, RMS %g of fit - ratio over %d stars",
                     name, info["median"], info["mad"], info["rms"], info["n_used"])
        catalog[f"apcorr_{ref}_used"] = ref_used
        # a list (not a dict: the per-name entries are the dicts of the metadata), one entry per S/N level tried
        metadata["aperture_excess"] = [dict(min_snr=snr, **info) for snr, info in excess.items()]
        used_levels = {info["min_snr"] for key, info in metadata.items() if isinstance(info, dict)}
        skipped = [f"S/N > {_fmt(snr)}: {info['skipped']}" for snr, info in excess.items()
                   if snr in used_levels and info.get("too_few_left")]
        if skipped:
            reasons.append("; ".join(skipped))
            log.warning("Aperture correction stars: %s", "; ".join(skipped))
        metadata["ap_corr_degraded_reason"] = "; ".join(reasons) if reasons else None
        return MeasureApCorrResult(ap_corr_map=ap_corr_map, metadata=metadata)

    def _isolated(self, catalog: Table, selected: np.ndarray, bbox: Box2I, snr, excess: dict) -> np.ndarray:
        """``selected`` after the aperture-excess cut (``config.aperture_excess``), what it did recorded in
        ``excess[snr]``. A catalog without the cut's flux columns is left as it is (recorded, not degraded: the
        cut cannot be asked of it); a cut skipped because it would leave too few stars degrades the result when
        its S/N level is the one a correction was fitted at."""
        cfg = self.config.aperture_excess
        if not cfg.do_cut:
            return selected
        try:
            kept, info = apply_aperture_excess_cut(catalog, selected, cfg, bbox=bbox)
        except KeyError as err:
            kept, info = selected, {"n_in": int(selected.sum()), "n_cut": 0, "model_order": -1,
                                    "skipped": f"aperture-excess cut not applied: {err.args[0]}", "too_few_left": False}
            log.debug("%s", info["skipped"])
        excess[snr] = info
        if info["n_cut"]:
            log.info("Aperture correction stars (S/N > %s): %d of %d left out for light in their aperture that "
                     "their PSF flux does not explain", _fmt(snr), info["n_cut"], info["n_in"])
        return kept

    def _snr_levels(self) -> list[tuple[float | None, ScienceSourceSelectorTask]]:
        """The selector's S/N minimum and its relaxations (halved, down to ``fallback_min_snr``), each with its
        selector; one level when the S/N cut is off or there is no fallback."""
        cfg = self.config
        sel = cfg.source_selector
        minimum = sel.signal_to_noise.minimum if sel.do_signal_to_noise else None
        levels = [(minimum, self.source_selector)]
        floor = cfg.fallback_min_snr
        if minimum is None or floor is None or floor >= minimum:
            return levels
        value = minimum
        while value > floor:
            value = max(value / 2.0, floor)
            relaxed = sel.model_copy(update={"signal_to_noise": sel.signal_to_noise.model_copy(
                update={"minimum": value})})
            levels.append((value, ScienceSourceSelectorTask(relaxed)))
        return levels

    def _measure_name(self, name, catalog, good_ref, ref_flux, x_all, y_all, bbox):
        """`_measure_one`, then the check of the field on a grid over ``bbox``: a field not finite or outside
        ``valid_range`` is refit with lower orders (recorded in ``info["order_steps"]``)."""
        cfg = self.config
        cap = max(cfg.fit_config.order_x, cfg.fit_config.order_y)
        failed_checks = []
        while True:
            field, sigma, rows, info = self._measure_one(name, catalog, good_ref, ref_flux, x_all, y_all, bbox, cap)
            problem = self._check(field, sigma, bbox)
            if problem is None:
                info["order_steps"] = failed_checks + info["order_steps"]
                return field, sigma, rows, info
            order = max(info["order"])
            if order == 0:
                raise MeasureApCorrError(name, rows.size, rows.size - 1,
                                         reason=f"the constant field {problem}")
            failed_checks.append(f"order {order} field {problem}")
            cap = order - 1

    def _few_star_constant(self, name, catalog, good_ref, ref_flux, bbox):
        """The fallback of ``few_star_constant``: the median ratio ref / flux of the usable stars (too few for a
        fit), with the ratio's own error from the two fluxes' errors (the largest, over several stars); None when
        no star is usable or the constant fails `_check`."""
        flux = np.asarray(catalog[name + "_instFlux"], dtype=np.float64)
        flux_err = np.asarray(catalog[name + "_instFluxErr"], dtype=np.float64)
        ref_err = np.asarray(catalog[resolve_column(catalog, self.config.ref_flux_name + "_instFluxErr")], np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            is_good = good_ref & ~np.asarray(catalog[name + "_flag"], dtype=bool) & np.isfinite(flux) & (flux > 0)
            rows = np.flatnonzero(is_good)
            z = ref_flux[rows] / flux[rows]
            sz = np.abs(z) * np.hypot(ref_err[rows] / ref_flux[rows], flux_err[rows] / flux[rows])
        ok = np.isfinite(z) & np.isfinite(sz)
        rows, z, sz = rows[ok], z[ok], sz[ok]
        if rows.size == 0:
            return None
        value, sigma = float(np.median(z)), float(np.max(sz))
        field = ChebyshevBoundedField(bbox, np.array([[value]]))
        if self._check(field, sigma, bbox) is not None:
            return None
        d = value - z
        info = {"n_used": int(rows.size), "order": (0, 0), "sigma": sigma, "median": float(np.median(d)),
                "mad": float(np.median(np.abs(d - np.median(d)))), "rms": float(np.sqrt(np.mean(d * d))),
                "order_steps": []}
        return field, sigma, rows, info

    def _check(self, field: ChebyshevBoundedField, sigma: float, bbox: Box2I) -> str | None:
        """None when the field is finite and within ``valid_range`` on the check grid (and its error finite);
        else what is wrong, in words."""
        n = self.config.check_grid_size
        gx = np.linspace(bbox.min_x, bbox.max_x, n)
        gy = np.linspace(bbox.min_y, bbox.max_y, n)
        values = field.evaluate_grid(gx, gy)
        if not np.all(np.isfinite(values)) or not math.isfinite(sigma):
            return "is not finite on the detector"
        lo, hi = self.config.valid_range
        vmin, vmax = float(values.min()), float(values.max())
        if vmin < lo or vmax > hi:
            return f"spans [{vmin:.4g}, {vmax:.4g}] on the detector, outside the valid range [{lo:g}, {hi:g}]"
        return None

    def _measure_one(self, name, catalog, good_ref, ref_flux, x_all, y_all, bbox, order_cap=None):
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
        if order_cap is not None:
            order_x, order_y = min(order_x, order_cap), min(order_y, order_cap)
        steps = []

        def too_few(n, ox, oy):
            size = _triangular_size(ox, oy, tri)
            return n - size < cfg.min_degrees_of_freedom or n < cfg.min_stars_per_term * size

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
            before = max(order_x, order_y)
            while too_few(rows.size, order_x, order_y):
                if order_x == 0 and order_y == 0:
                    raise MeasureApCorrError(name, rows.size, rows.size - 1, iteration)
                order_x, order_y = max(order_x - 1, 0), max(order_y - 1, 0)
            if max(order_x, order_y) < before:
                steps.append(f"order {before} -> {max(order_x, order_y)}: {rows.size} stars for "
                             f"{_triangular_size(before, before, tri)} terms"
                             + (f" (iteration {iteration})" if iteration else ""))
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
                "rms": float(np.sqrt(np.mean(d * d))), "order_steps": steps}
        return field, sigma, rows, info

    def __repr__(self) -> str:
        return f"MeasureApCorrTask(config={self.config!r})"
