"""What every PSF determiner shares (as meas_algorithms' ``BasePsfDeterminerTask``): its typed failures
and its result.

A determiner fits a PSF model to the stamps of `visitcal.psf.candidates.PsfCandidates` and returns a
`PsfDeterminerResult`. Two are implemented: the Piff-style pixel grid (``"pixelgrid"``,
`visitcal.psf.pixel_grid`) and the PCA determiner (``"pca"``, `visitcal.psf.pca`). Both call::

    result = Determiner(config).determine_psf(candidates, bbox, reserved=reserved)

with ``bbox`` the detector's `~visitcal.core.geom.Box2I` (the spatial polynomial's coordinates are scaled
to [-1, 1] over it) and ``reserved`` an optional boolean per candidate: reserved stars are never fitted,
but their residuals are reported, which is how the reserve tests the model.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.geom import Box2I
from .checks import PsfCheckConfig, check_psf_model, measure_star_sizes
from .models import Psf

__all__ = ["SCREEN_BOXES", "SCREEN_REASONS", "PsfDeterminerError", "PsfDeterminerResult", "PsfFitError", "PsfTooFewStarsError",
           "fit_screened", "fit_with_order_step_down", "n_spatial_terms", "screen_candidates"]

log = logging.getLogger(__name__)


class PsfDeterminerError(RuntimeError):
    """A PSF fit that could not be made (LSST's AlgorithmError for the PSF determiners)."""


class PsfTooFewStarsError(PsfDeterminerError):
    """Fewer usable stars than the spatial model has free parameters (LSST ``PiffTooFewGoodStarsError``).

    Attributes
    ----------
    n_stars : int
        Stars left for the fit (not reserved, not rejected, with enough usable pixels).
    n_required : int
        Free spatial parameters, ``(order + 1) (order + 2) / 2``.
    dropped_candidates : dict of str to list of int
        The candidates refused before any fit (`screen_candidates`), their indices by reason ("bad_flux",
        "low_snr"); empty when none was. The message counts them.
    """

    def __init__(self, n_stars: int, n_required: int, what: str = "", dropped_candidates: dict | None = None):
        self.n_stars = int(n_stars)
        self.n_required = int(n_required)
        self.what = str(what)
        self.dropped_candidates = {str(k): [int(i) for i in v] for k, v in (dropped_candidates or {}).items() if v}
        refused = "; ".join(f"{k}: {len(v)}" for k, v in sorted(self.dropped_candidates.items()))
        super().__init__(f"too few PSF stars{(' ' + what) if what else ''}: {self.n_stars} usable, "
                         f"the spatial model needs at least {self.n_required}"
                         + (f" (refused before the fit, {refused})" if refused else ""))

    def __reduce__(self):
        return (type(self), (self.n_stars, self.n_required, self.what, self.dropped_candidates), self.__dict__)


class PsfFitError(PsfDeterminerError):
    """A fitted PSF model failed one of the checks of `visitcal.psf.checks` (at every spatial order tried).

    Attributes
    ----------
    check : str
        The check that failed (one of `visitcal.psf.checks.CHECKS`) at the last order tried.
    spatial_order : int
        That order.
    detail : str
        What the check found.
    """

    def __init__(self, check: str, detail: str, spatial_order: int):
        self.check = str(check)
        self.detail = str(detail)
        self.spatial_order = int(spatial_order)
        super().__init__(f"the PSF model fitted at spatial order {self.spatial_order} failed its "
                         f"'{self.check}' check: {self.detail}")

    def __reduce__(self):
        return (type(self), (self.check, self.detail, self.spatial_order), self.__dict__)


#: Why `screen_candidates` refuses a candidate: "bad_flux", the sum of its usable pixels is not positive in
#: any of the central boxes (an empty, negative or non-finite stamp); "low_snr", in none of them is that sum
#: ``min_snr`` times the square root of their summed variance (no signal above the noise).
SCREEN_REASONS = ("bad_flux", "low_snr")

#: Sides (px) of the central boxes `screen_candidates` measures a star in, besides the whole fitted box: a
#: faint star's light is in its core, where the whole box's sum would drown it in the sky's noise (a star
#: detected at 10 sigma has a 25 x 25 box S/N of ~2; its 5 x 5 core, ~6).
SCREEN_BOXES = (5, 9, 15)


def screen_candidates(candidates, *, size: int, bad_mask_bits: int, min_snr: float,
                      min_usable_fraction: float = 0.0) -> np.ndarray:
    """Refuse, before any fit, the candidates that hold no star: garbage must never become a model.

    In each of the stamp's central boxes (`SCREEN_BOXES` and the whole ``size`` x ``size`` box fitted), the
    usable pixels (finite image and variance, variance > 0, none of ``bad_mask_bits``) give a flux
    ``F = sum(image)`` and its noise ``N = sqrt(sum(variance))``. A candidate whose ``F`` is positive (and
    finite) in no box is "bad_flux"; one whose ``F`` reaches ``min_snr * N`` in no box is "low_snr". A
    candidate with fewer usable pixels than ``min_usable_fraction`` of the whole box (or none) is left to
    the fit, which reports it as having too few pixels.

    Parameters
    ----------
    candidates : `visitcal.psf.candidates.PsfCandidates`
        The stamps, ``(m, S, S)``.
    size : int
        Side of the central box the determiner fits (px); the whole stamp when larger than it.
    bad_mask_bits : int
        Mask bits whose pixels are not usable (the determiner's zero-weight planes).
    min_snr : float
        Smallest ``F / N`` of a star (dimensionless).
    min_usable_fraction : float
        The determiner's own smallest fraction of usable pixels.

    Returns
    -------
    reasons : (m,) str array
        "" for a candidate to fit, else one of `SCREEN_REASONS`.
    """
    image = np.asarray(candidates.image)
    m = len(candidates)
    if m == 0 or image.ndim != 3:
        return np.full(m, "", dtype=object)
    s = image.shape[1]
    lo = max(0, (s - int(size)) // 2)
    hi = min(s, lo + int(size))
    img = np.asarray(image[:, lo:hi, lo:hi], np.float64)
    var = np.asarray(np.asarray(candidates.variance)[:, lo:hi, lo:hi], np.float64)
    msk = np.asarray(np.asarray(candidates.mask)[:, lo:hi, lo:hi], np.int64)
    bits = int(np.uint32(np.int32(bad_mask_bits)))  # the C++ control's int32, bit 31 included
    with np.errstate(invalid="ignore"):
        good = np.isfinite(img) & np.isfinite(var) & (var > 0) & ((msk & bits) == 0)
    value, weight = np.where(good, img, 0.0), np.where(good, var, 0.0)
    n = img.shape[1]
    positive = np.zeros(m, bool)
    detected = np.zeros(m, bool)
    for side in sorted({min(b, n) for b in SCREEN_BOXES} | {n}):
        a = (n - side) // 2
        flux = value[:, a:a + side, a:a + side].sum(axis=(1, 2))
        noise = np.sqrt(weight[:, a:a + side, a:a + side].sum(axis=(1, 2)))
        ok = (flux > 0) & np.isfinite(flux)
        positive |= ok
        detected |= ok & (flux >= float(min_snr) * noise)
    n_good = good.sum(axis=(1, 2))
    any_good = (n_good > 0) & (n_good >= float(min_usable_fraction) * n * n)
    reasons = np.full(m, "", dtype=object)
    reasons[any_good & ~positive] = "bad_flux"
    reasons[any_good & positive & ~detected] = "low_snr"
    return reasons


def _subset(candidates, keep: np.ndarray):
    """The candidates of the boolean ``keep`` (stamps and the kept rows of the table, in order)."""
    from .candidates import PsfCandidates

    table = {k: np.asarray(v).copy() for k, v in candidates.table.items()}
    rows = np.flatnonzero(np.asarray(table["used"], bool))
    table["used"][rows[~keep]] = False
    xy0 = np.asarray(candidates.xy0).reshape(-1, 2)
    return PsfCandidates(candidates.image[keep], candidates.mask[keep], candidates.variance[keep], xy0[keep], table)


def fit_screened(fit: Callable[..., PsfDeterminerResult], candidates, reserved: np.ndarray, reasons: np.ndarray,
                 what: str) -> Callable[[int], PsfDeterminerResult]:
    """``fit_screened(fit, ...)(order)``: ``fit(candidates, keep, order)`` on the candidates `screen_candidates`
    kept, its result expanded back to every candidate (the refused ones not used, their flux, chi2 and centre
    NaN, their status the reason)."""
    keep = np.asarray(reasons == "", bool)
    reserved = np.asarray(reserved, bool)
    dropped = {r: np.flatnonzero(reasons == r).tolist() for r in SCREEN_REASONS if np.any(reasons == r)}

    def one(order: int) -> PsfDeterminerResult:
        if not np.any(keep & ~reserved):
            raise PsfTooFewStarsError(0, 1, f"for the {what}: no candidate holds a star", dropped_candidates=dropped)
        if keep.all():
            return fit(candidates, keep, order)
        res = fit(_subset(candidates, keep), keep, order)
        m = keep.size

        def fill(a, value, dtype):
            if a is None:
                return None
            out = np.full(m, value, dtype)
            out[keep] = a
            return out

        status = np.array(reasons, dtype=object)
        status[keep] = np.asarray(res.status).astype(object)
        return PsfDeterminerResult(psf=res.psf, used=fill(res.used, False, bool), reserved=reserved.copy(),
                                   flux=fill(res.flux, np.nan, np.float64), chi2=fill(res.chi2, np.nan, np.float64),
                                   dof=fill(res.dof, 0, np.int64), status=status.astype(str), metadata=res.metadata,
                                   x=fill(res.x, np.nan, np.float64), y=fill(res.y, np.nan, np.float64),
                                   chi2_expected=fill(res.chi2_expected, np.nan, np.float64))

    return one


def n_spatial_terms(order: int) -> int:
    """Free parameters of a polynomial of total order ``order`` in two variables: ``(o + 1)(o + 2) / 2``."""
    return (int(order) + 1) * (int(order) + 2) // 2


@dataclass
class PsfDeterminerResult:
    """A fitted PSF and what became of each candidate.

    Attributes
    ----------
    psf : `visitcal.psf.Psf`
        The fitted model.
    used : (m,) bool
        Candidate entered the final fit (LSST ``calib_psf_used``): not reserved, not dropped for too few
        usable pixels, not rejected as an outlier.
    reserved : (m,) bool
        The ``reserved`` argument (all False without one).
    flux : (m,) float64
        Fitted flux of each candidate under the final model (NaN for a star that could not be fitted).
    chi2, dof : (m,) float64, (m,) int64
        Each candidate's chi-square and degrees of freedom under the final model, reserved stars
        included (NaN / 0 when it could not be fitted).
    status : (m,) str
        ``"used"``, ``"reserved"``, ``"outlier"``, ``"too_few_pixels"``, ...
    metadata : dict
        LSST's ``spatialFitChi2``, ``numAvailStars``, ``numGoodStars``, ``avgX``, ``avgY``, plus
        ``n_iter``; after `fit_with_order_step_down` also ``spatial_order_configured``,
        ``spatial_order_used``, ``order_step_down_reason`` ("" when the configured order was kept),
        ``psf_checks`` ("passed" or "off"), ``chi2_ratio`` (the overfit statistic), ``n_dropped``
        (candidates neither used nor reserved, counted by status) and ``dropped_candidates`` (their candidate
        indices, by status: every dropped candidate with its reason; logged at INFO level).
    x, y : (m,) float64 or None
        Each candidate's centre as fitted (a determiner that refits centres), else None.
    chi2_expected : (m,) float64 or None
        The chi-square noise alone would give each candidate under a perfect model (NaN when not fitted).
    """

    psf: Psf
    used: np.ndarray
    reserved: np.ndarray
    flux: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray
    status: np.ndarray
    metadata: dict = field(default_factory=dict)
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    chi2_expected: np.ndarray | None = None

    @property
    def order_reduced(self) -> bool:
        """Whether the model was fitted at a lower spatial order than configured (a degraded result)."""
        md = self.metadata
        return md.get("spatial_order_used", md.get("spatial_order", 0)) < md.get(
            "spatial_order_configured", md.get("spatial_order", 0))


def _star_sizes(candidates) -> np.ndarray:
    """Each candidate's adaptive-moment size (px), measured around its centroid."""
    kept = np.asarray(candidates.table["used"], bool)
    x = np.asarray(candidates.table["x"], np.float64)[kept]
    y = np.asarray(candidates.table["y"], np.float64)[kept]
    s = candidates.image.shape[1] if candidates.image.ndim == 3 else 0
    xy0 = np.asarray(candidates.xy0, np.float64).reshape(-1, 2)
    if x.size != len(candidates) or s == 0:
        return np.full(len(candidates), np.nan)
    return measure_star_sizes(candidates.image, candidates.mask, candidates.variance,
                              x_offset=x - xy0[:, 0] - s // 2, y_offset=y - xy0[:, 1] - s // 2)


def fit_with_order_step_down(fit: Callable[[int], PsfDeterminerResult], order: int, candidates, bbox: Box2I,
                             reserved: np.ndarray, *, step_down: bool, min_stars_per_parameter: float,
                             checks: PsfCheckConfig, what: str, zeroth_order_fallback: bool = False,
                             refused=None) -> PsfDeterminerResult:
    """Fit at ``order``, checked; with too few stars or a failed check, step the order down to 0.

    At each order ``o`` from ``order`` down (only ``order`` when not ``step_down``):

    1. with fewer non-reserved candidates than ``min_stars_per_parameter`` times the polynomial's
       ``(o + 1)(o + 2) / 2`` terms (orders above 0), go lower without fitting;
    2. ``fit(o)``; a `PsfTooFewStarsError` goes lower;
    3. with fewer *used* stars (after the fit's rejections) than that, go lower;
    4. `visitcal.psf.checks.check_psf_model` on the model, the used stars' sizes and chi-squares; a
       failed check goes lower.

    The first order that passes is returned, its metadata telling the orders tried and why each was
    left. Nothing passes: the last order's error is raised (`PsfFitError` naming the check, or
    `PsfTooFewStarsError`), with a note listing every order's reason.

    Parameters
    ----------
    fit : callable
        ``fit(order) -> PsfDeterminerResult`` (the determiner's single-order fit).
    order : int
        The configured spatial order.
    candidates : `visitcal.psf.candidates.PsfCandidates`
        The stamps (for the stars' sizes).
    bbox : `Box2I`
        The detector, for the checks' lattice.
    reserved : (m,) bool
        Stars kept out of the fit.
    step_down, min_stars_per_parameter, checks
        The determiner's configuration.
    what : str
        The determiner's name for messages ("pixel-grid PSF", "PCA PSF").
    zeroth_order_fallback : bool
        The determiner's ``zeroth_order_interp_not_enough_stars`` (LSST's own fallback, in the fit): the
        count of step 1 is left to the fit, which drops to order 0 itself.
    refused : (m,) str array, optional
        `screen_candidates`' reasons: the refused candidates are not available (step 1), and a final
        `PsfTooFewStarsError` lists them.
    """
    refused = np.full(len(reserved), "", dtype=object) if refused is None else np.asarray(refused, dtype=object)
    n_avail = int(np.count_nonzero(~np.asarray(reserved, bool) & (refused == "")))
    sizes = _star_sizes(candidates) if checks.do_checks else None
    reasons: list[str] = []
    last: PsfDeterminerError | None = None
    lowest = 0 if step_down else order
    for o in range(order, lowest - 1, -1):
        n_terms = n_spatial_terms(o)
        need = max(1, math.ceil(min_stars_per_parameter * n_terms)) if o > 0 else 1
        if n_avail < need and not zeroth_order_fallback:
            reasons.append(f"order {o}: {n_avail} candidates for {n_terms} spatial terms "
                           f"(< {min_stars_per_parameter:g} per term)")
            last = PsfTooFewStarsError(n_avail, need, f"for the {what} at spatial order {o} "
                                                      f"({min_stars_per_parameter:g} per spatial term)")
            continue
        try:
            res = fit(o)
        except PsfTooFewStarsError as err:
            reasons.append(f"order {o}: {err}")
            last = err
            continue
        used = np.asarray(res.used, bool)
        o_fit = int(res.metadata.get("spatial_order", o))
        n_used = int(used.sum())
        need_fit = max(1, math.ceil(min_stars_per_parameter * n_spatial_terms(o_fit))) if o_fit > 0 else 1
        if n_used < need_fit:
            reasons.append(f"order {o_fit}: {n_used} stars left after rejection for {n_spatial_terms(o_fit)} spatial "
                           f"terms (< {min_stars_per_parameter:g} per term)")
            last = PsfTooFewStarsError(n_used, need_fit, f"for the {what} at spatial order {o_fit} after rejection "
                                                         f"({min_stars_per_parameter:g} per spatial term)")
            continue
        md = res.metadata
        if checks.do_checks:
            exp = res.chi2_expected if res.chi2_expected is not None else None
            chk = check_psf_model(res.psf, bbox, sizes[used] if sizes is not None else None,
                                  chi2=np.asarray(res.chi2)[used] if exp is not None else None,
                                  chi2_expected=np.asarray(exp)[used] if exp is not None else None,
                                  stars_per_parameter=n_used / n_spatial_terms(o_fit), config=checks)
            md["chi2_ratio"] = chk.chi2_ratio
            if not chk.ok:
                reasons.append(f"order {o_fit}: failed the '{chk.failed}' check ({chk.message})")
                last = PsfFitError(chk.failed, chk.message, o_fit)
                continue
        md["psf_checks"] = "passed" if checks.do_checks else "off"
        md["spatial_order_configured"] = int(order)
        md["spatial_order_used"] = o_fit
        md["order_step_down_reason"] = "; ".join(reasons) if o_fit < order else ""
        status = np.asarray(res.status).astype(str)
        dropped = Counter(str(v) for v in status[~np.isin(status, ("used", "reserved"))])
        md["n_dropped"] = dict(sorted(dropped.items()))
        md["dropped_candidates"] = {reason: np.flatnonzero(status == reason).tolist() for reason in sorted(dropped)}
        if dropped:
            # INFO, not WARNING: a few outliers are the fit working as meant (a chi2 / spatial test rejecting
            # stars is expected on every detector); the counts and indices are in the metadata.
            idx = np.flatnonzero(~np.isin(status, ("used", "reserved")))
            log.info("%s: %d of %d candidates not used (%s); candidate indices %s%s", what, idx.size, status.size,
                     ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items())),
                     idx[:20].tolist(), " ..." if idx.size > 20 else "")
        if o_fit < order:
            log.warning("%s fitted at spatial order %d instead of %d: %s", what, o_fit, order,
                        md["order_step_down_reason"])
        return res
    assert last is not None
    dropped = {r: np.flatnonzero(refused == r).tolist() for r in SCREEN_REASONS if np.any(refused == r)}
    if isinstance(last, PsfTooFewStarsError) and dropped and not last.dropped_candidates:
        last = PsfTooFewStarsError(last.n_stars, last.n_required, last.what, dropped_candidates=dropped)
    last.add_note(f"{what}: every spatial order tried failed: " + "; ".join(reasons))
    raise last
