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

__all__ = ["PsfDeterminerError", "PsfDeterminerResult", "PsfFitError", "PsfTooFewStarsError",
           "fit_with_order_step_down", "n_spatial_terms"]

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
    """

    def __init__(self, n_stars: int, n_required: int, what: str = ""):
        self.n_stars = int(n_stars)
        self.n_required = int(n_required)
        self.what = str(what)
        super().__init__(f"too few PSF stars{(' ' + what) if what else ''}: {self.n_stars} usable, "
                         f"the spatial model needs at least {self.n_required}")

    def __reduce__(self):
        return (type(self), (self.n_stars, self.n_required, self.what), self.__dict__)


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
                             checks: PsfCheckConfig, what: str, zeroth_order_fallback: bool = False
                             ) -> PsfDeterminerResult:
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
    """
    n_avail = int(np.count_nonzero(~np.asarray(reserved, bool)))
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
    last.add_note(f"{what}: every spatial order tried failed: " + "; ".join(reasons))
    raise last
