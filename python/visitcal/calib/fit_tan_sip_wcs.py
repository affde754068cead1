"""Fit a TAN-SIP WCS to matched pixel/sky pairs: `FitTanSipWcsTask` (after LSST meas_astrom's
``FitTanSipWcsTask`` and its C++ ``CreateWcsWithSip``).

The model (FITS SIP convention, Shupe et al. 2005). With pixel offsets ``u = x - crpix_x``,
``v = y - crpix_y`` (0-based pixels, pixel centres at integers):

    (xi, eta) = CD (u + A(u, v), v + B(u, v)),   (ra, dec) = TAN^-1(xi, eta) about CRVAL,

``A``, ``B`` polynomials with terms ``2 <= p + q <= order``. The reverse polynomials ``AP``, ``BP``
(order ``order + 1``, terms ``1 <= p + q``, as LSST and astropy allow) map the other way and are only
an approximation (their inversion error over the box is reported, ``reverse_max_error_px``).

The fit (C++, one call, GIL released; all of it linear least squares, so no starting WCS is needed):

1. CRPIX = the mean source position, the tangent point = the normalised mean reference unit vector
   (LSST's initial TAN WCS).
2. Project the references onto the tangent plane; fit ``(xi, eta)`` as full polynomials of order
   ``order`` in ``(u, v)`` (scaled to [-1, 1] for conditioning; column-pivoted QR). Move the tangent
   point to the sky position the fit gives CRPIX and refit: ``num_iter`` fits. The small constant term
   left by the last fit is absorbed into CRPIX by an exact re-expansion of the polynomial about its root,
   its linear terms are CD, and ``CD^-1`` times its terms of order >= 2 are A and B.
3. ``num_rej_iter`` times: reject pairs with ``|dx| > rej_sigma * std(dx)`` or ``|dy| > rej_sigma *
   std(dy)`` (tangent-plane residuals, std over the pairs still in), then redo 1-2. **Two-sided**: LSST's
   ``FitTanSipWcsTask.rejectMatches`` tests the signed ``dx > rej_sigma * std``, so negative outliers
   survive there.
4. Fit AP, BP on a grid over ``bbox``; fail if the median on-sky scatter exceeds ``max_scatter_arcsec``.

With ``order = "auto"`` the order is chosen from the data (`FitTanSipWcsTask.select_order`: k-fold held-out
residuals, each order tried only with ``min_stars_per_parameter`` training pairs per term), and a fit that
fails `visitcal.calib.wcs_check.check_wcs` (not finite, folding over or changing its pixel area inside the
box) gives way to the next lower order: a free polynomial must not wander where it has no stars.
`AstrometryTask` uses this fitter with ``wcs_fitter = "sip"``, for preliminary WCSs without a trustworthy
distortion; its default is `visitcal.calib.fit_affine_wcs.FitAffineWcsTask`.

Differences from LSST: the rejection is two-sided; the tangent point is iterated to the sky position of
CRPIX (LSST keeps CRPIX and CRVAL of its initial TAN WCS and absorbs the fit's constant term into CRPIX to
first order each iteration); ``initial_wcs`` is optional because nothing here linearises about it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import _core
from ..core.geom import Box2I
from ..core.wcs import make_tan_sip_wcs
from .errors import AstrometryError, AstrometryFitError
from .wcs_check import check_wcs

__all__ = [
    "AstrometryError",
    "AstrometryFitError",
    "FitTanSipWcsConfig",
    "FitTanSipWcsResult",
    "FitTanSipWcsTask",
    "tan_sip_from_wcs",
]


class FitTanSipWcsConfig(BaseModel):
    """Configuration of `FitTanSipWcsTask`: LSST's ``FitTanSipWcsConfig`` in snake_case with its defaults.

    Mirrors the C++ ``FitTanSipControl`` (a test checks the defaults agree).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    order: int | Literal["auto"] = Field(2, description="Order of the forward SIP polynomials A, B (terms 2 <= "
                                         "p + q <= order), 2 to 9; or \"auto\": chosen from order_range by "
                                         "held-out residuals (k-fold cross-validation).")
    order_range: tuple[int, int] = Field((2, 5), description="Orders tried by order = \"auto\" (inclusive).")
    min_stars_per_parameter: float = Field(4.0, gt=0, description="order = \"auto\" tries an order only when each "
                                           "fold's training pairs number at least this many times its terms per "
                                           "axis, (order + 1)(order + 2) / 2.")
    n_folds: int = Field(5, ge=2, le=100, description="Folds of order = \"auto\"'s cross-validation. At most 100 "
                                                      "(each fold is a fit per order).")
    num_iter: int = Field(3, ge=1, le=100, description="Fits per pass; after each one but the last the tangent point "
                                                       "moves "
                          "to the sky position of CRPIX. At most 100 (each is a fit).")
    num_rej_iter: int = Field(1, ge=0, le=100, description="Rejection passes before the final fit. At most 100 (each "
                                                           "is a fit).")
    rej_sigma: float = Field(3.0, gt=0, description="Reject a pair whose tangent-plane residual in x or y exceeds "
                             "rej_sigma times that axis's standard deviation (two-sided; LSST's is one-sided).")
    max_scatter_arcsec: float = Field(10.0, gt=0, le=3600, description="Fail when the median on-sky distance between "
                                                                       "the "
                                      "fitted and reference positions exceeds this (arcsec). At most 3600 arcsec.")
    inverse_order: int | None = Field(None, ge=1, le=10, description="Order of the reverse polynomials AP, BP "
                                      "(None: order + 1).")

    @field_validator("order")
    @classmethod
    def _check_order(cls, v):
        if v != "auto" and not 2 <= v <= 9:
            raise ValueError(f"order must be 2 to 9 or \"auto\", got {v!r}")
        return v

    @field_validator("order_range")
    @classmethod
    def _check_range(cls, v):
        if not 2 <= v[0] <= v[1] <= 9:
            raise ValueError(f"order_range must satisfy 2 <= low <= high <= 9, got {v!r}")
        return v

    def _control(self, order: int | None = None) -> _core.FitTanSipControl:
        order = self.order if order is None else order
        if order == "auto":
            raise ValueError("order \"auto\" is resolved by FitTanSipWcsTask.fit_wcs, not by the C++ control")
        ctl = _core.FitTanSipControl()
        ctl.order = order
        ctl.num_iter = self.num_iter
        ctl.num_rej_iter = self.num_rej_iter
        ctl.rej_sigma = self.rej_sigma
        ctl.max_scatter_arcsec = self.max_scatter_arcsec
        ctl.inverse_order = -1 if self.inverse_order is None else self.inverse_order
        return ctl


@dataclass(frozen=True)
class FitTanSipWcsResult:
    """What `FitTanSipWcsTask.fit_wcs` returns.

    Attributes
    ----------
    wcs : `astropy.wcs.WCS`
        The fitted TAN-SIP WCS (``RA---TAN-SIP``), forward A/B and reverse AP/BP polynomials; pixel
        coordinates 0-based (``origin=0`` in astropy calls).
    scatter_on_sky : float
        Median on-sky distance between the fitted positions of the used sources and their references,
        arcsec (LSST ``scatterOnSky``).
    rms_arcsec : float
        ``sqrt(mean(dx^2 + dy^2))`` over the used pairs, arcsec.
    used : (n,) bool
        The pair entered the final fit (not rejected).
    residuals : (n, 2) float64
        ``(dx, dy)`` = fitted minus reference position on the plane tangent at CRVAL (xi to the east,
        eta to the north), arcsec, for every pair (rejected ones included).
    n_used : int
    reverse_max_error_px : float
        Largest ``|reverse(forward(p)) - p|`` of the AP/BP polynomials at points between those they were
        fitted on, over ``bbox``, pixels.
    bbox : (float, float, float, float)
        ``(xmin, xmax, ymin, ymax)`` the reverse polynomials were fitted over.
    tan_sip : `visitcal._core.TanSipWcs`
        The same WCS as C++ evaluates it.
    order : int
        The SIP order fitted (the configured one, or the one ``order = "auto"`` chose).
    order_scores : dict
        With ``order = "auto"``: held-out rms distance (arcsec, capped as `FitTanSipWcsTask.select_order`
        says) per order tried; empty otherwise.
    bad_input : (n,) bool
        The pair could not enter the fit (a non-finite ``x``, ``y``, ``ra``, ``dec`` or weight, a weight
        <= 0, ``|dec| > 90``): not ``used``, NaN ``residuals``. Such rows are left out, not an error.
    """

    wcs: WCS
    scatter_on_sky: float
    rms_arcsec: float
    used: np.ndarray
    residuals: np.ndarray
    n_used: int
    reverse_max_error_px: float
    bbox: tuple[float, float, float, float]
    tan_sip: object
    order: int = 0
    order_scores: dict = field(default_factory=dict)
    bad_input: np.ndarray | None = None


def tan_sip_from_wcs(wcs: WCS):
    """The C++ model (`visitcal._core.TanSipWcs`) of an astropy TAN or TAN-SIP ``wcs`` (CD or PC+CDELT)."""
    cd = np.asarray(wcs.wcs.get_pc(), float) * np.asarray(wcs.wcs.get_cdelt(), float)[:, None]
    sip = wcs.sip
    args = dict(a=None, b=None, ap=None, bp=None)
    if sip is not None:
        args.update(a=sip.a, b=sip.b, ap=sip.ap, bp=sip.bp)
    crpix = (wcs.wcs.crpix[0] - 1.0, wcs.wcs.crpix[1] - 1.0)
    return _core.TanSipWcs(crpix, tuple(wcs.wcs.crval), tuple(cd.ravel()), **args)


def _as_float_array(value, name: str, n: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values, x has {n}")
    return arr


def _usable_pairs(x, y, ra, dec, weights) -> np.ndarray:
    """Rows that can enter a fit: finite ``x``, ``y``, ``ra``, ``dec``, ``|dec| <= 90``, a finite weight > 0."""
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    if weights is not None:
        ok &= np.isfinite(weights) & (weights > 0)
    return ok


def _expand_to_all_rows(result, ok: np.ndarray):
    """``result`` of a fit on the rows ``ok`` with its per-pair arrays on every row (bad rows: not used,
    NaN residuals) and ``bad_input = ~ok``."""
    used = np.zeros(ok.shape[0], bool)
    used[ok] = result.used
    residuals = np.full((ok.shape[0], 2), np.nan)
    residuals[ok] = result.residuals
    return dataclasses.replace(result, used=used, residuals=residuals, bad_input=~ok)


def _bbox_tuple(bbox, initial_wcs, x, y) -> tuple[float, float, float, float]:
    if bbox is not None:
        if isinstance(bbox, Box2I):
            # The box's pixels cover [min - 0.5, max + 0.5]: span the whole area.
            return (bbox.min_x - 0.5, bbox.max_x + 0.5, bbox.min_y - 0.5, bbox.max_y + 0.5)
        b = tuple(float(v) for v in bbox)
        if len(b) != 4 or not (b[1] > b[0] and b[3] > b[2]):
            raise ValueError(f"bbox must be a Box2I or (xmin, xmax, ymin, ymax) with positive extent, got {bbox!r}")
        return b
    shape = getattr(initial_wcs, "pixel_shape", None) if initial_wcs is not None else None
    if shape is not None and all(s for s in shape):
        return (-0.5, shape[0] - 0.5, -0.5, shape[1] - 0.5)
    return (float(x.min()), float(x.max()), float(y.min()), float(y.max()))


class FitTanSipWcsTask:
    """Fit a TAN-SIP WCS to matched pairs (see the module docstring). Stateless and thread-safe."""

    ConfigClass = FitTanSipWcsConfig
    _DefaultName = "fitWcs"

    def __init__(self, config: FitTanSipWcsConfig | None = None):
        self.config = config if config is not None else FitTanSipWcsConfig()

    def __repr__(self) -> str:
        return f"FitTanSipWcsTask({self.config!r})"

    def __reduce__(self):
        return (FitTanSipWcsTask, (self.config,))

    def fit_wcs(self, x, y, ra, dec, *, initial_wcs: WCS | None = None, bbox=None, weights=None) -> FitTanSipWcsResult:
        """Fit the WCS.

        Parameters
        ----------
        x, y : (n,) array_like
            Source positions, pixels, 0-based, pixel centres at integers (SExtractor's ``XWIN_IMAGE - 1``).
        ra, dec : (n,) array_like
            Reference positions of the same objects, degrees (ICRS).
        initial_wcs : `astropy.wcs.WCS`, optional
            Not needed by the fit (it is linear); when given with a ``pixel_shape`` and ``bbox`` is None,
            the reverse polynomials cover the whole detector ``[-0.5, nx - 0.5] x [-0.5, ny - 0.5]``.
        bbox : `visitcal.core.geom.Box2I` or (xmin, xmax, ymin, ymax), optional
            Region the reverse polynomials must invert (pixels); default: see ``initial_wcs``, else the
            sources' bounding box.
        weights : (n,) array_like, optional
            Positive least-squares weights (e.g. inverse centroid variances); default equal.

        Returns
        -------
        result : `FitTanSipWcsResult`

        Raises
        ------
        AstrometryFitError
            Fewer usable pairs than the
            ``(order + 1)(order + 2) / 2`` the polynomials need, before or after rejection
            (``"too_few_pairs"``), sources on a line (``"degenerate"``), or a median scatter above
            ``max_scatter_arcsec`` (``"scatter_too_large"``); with ``order = "auto"``, a lowest-order WCS
            that fails `check_wcs` (``"fold_over"``, ``"area_change"``, ``"non_finite"``).
        ValueError
            Arrays of different lengths or dimensions, a bad ``bbox``.

        Notes
        -----
        A pair with a non-finite ``x``, ``y``, ``ra``, ``dec`` or weight, a weight <= 0 or ``|dec| > 90`` is
        left out (``bad_input``) and the others are fitted exactly as they would be without it; only when too
        few usable pairs remain does the fit fail (``"too_few_pairs"``).
        """
        cfg = self.config
        x = _as_float_array(x, "x")
        n = x.shape[0]
        y = _as_float_array(y, "y", n)
        ra = _as_float_array(ra, "ra", n)
        dec = _as_float_array(dec, "dec", n)
        if weights is not None:
            weights = _as_float_array(weights, "weights", n)
        ok = _usable_pairs(x, y, ra, dec, weights)
        if not ok.any():
            low = cfg.order_range[0] if cfg.order == "auto" else cfg.order
            raise AstrometryFitError(f"too few pairs for the TAN-SIP fit: none of {n} is usable (finite, "
                                     f"|dec| <= 90, weight > 0)", reason="too_few_pairs", n_pairs=0,
                                     n_required=(low + 1) * (low + 2) // 2)
        if not ok.all():  # bad rows are left out of the fit, each alone; the rest is fitted as without them
            res = self.fit_wcs(x[ok], y[ok], ra[ok], dec[ok], initial_wcs=initial_wcs, bbox=bbox,
                               weights=None if weights is None else weights[ok])
            return _expand_to_all_rows(res, ok)
        box = _bbox_tuple(bbox, initial_wcs, x, y)
        if cfg.order != "auto":
            return dataclasses.replace(self._fit(x, y, ra, dec, weights, box, cfg.order, initial_wcs),
                                       bad_input=np.zeros(n, bool))
        order, scores = self.select_order(x, y, ra, dec, weights=weights, bbox=box)
        for o in range(order, cfg.order_range[0] - 1, -1):  # a model that fails the checks gives way to a lower one
            res = self._fit(x, y, ra, dec, weights, box, o, initial_wcs)
            try:
                check_wcs(res.wcs, box)
            except AstrometryFitError:
                if o == cfg.order_range[0]:
                    raise
                continue
            return dataclasses.replace(res, order_scores=scores, bad_input=np.zeros(n, bool))
        raise AssertionError("unreachable")

    def select_order(self, x, y, ra, dec, *, weights=None, bbox=None) -> tuple[int, dict]:
        """The SIP order of ``order_range`` that predicts held-out pairs best (k-fold cross-validation).

        The pairs are dealt into ``n_folds`` folds (a fixed permutation: deterministic). An order is tried only
        when every fold's training set holds at least ``min_stars_per_parameter`` pairs per polynomial term
        ((order + 1)(order + 2) / 2 per axis). For each order, each fold is fitted on the other folds and
        predicts its own pairs; the score is the rms of the held-out on-sky distances, each capped at 5 times
        their median at the lowest order (so a few mismatches weigh alike on every order). The chosen order
        is the lowest whose mean squared held-out distance exceeds the best order's by no more than one
        standard error of the paired differences (the "one-standard-error rule"): a higher order must earn
        its terms.

        Parameters
        ----------
        x, y, ra, dec, weights
            As `fit_wcs` (validated there).
        bbox : tuple, optional
            As `fit_wcs`'s ``bbox`` (the reverse polynomials' region).

        Returns
        -------
        order : int
        scores : dict
            ``{order: held-out rms (arcsec)}`` of the orders tried (inf when a fold's fit failed).

        Raises
        ------
        AstrometryFitError
            Too few pairs even for the lowest order (``"too_few_pairs"``).
        """
        cfg = self.config
        n = len(x)
        lo, hi = cfg.order_range
        k = min(cfg.n_folds, n)
        n_train = n - int(math.ceil(n / k))
        orders = [o for o in range(lo, hi + 1) if n_train >= cfg.min_stars_per_parameter * (o + 1) * (o + 2) / 2]
        if not orders:
            need = (lo + 1) * (lo + 2) // 2
            if n < need:
                raise AstrometryFitError(f"too few pairs for a SIP fit of order {lo}: {n} given, at least {need} "
                                         f"needed", reason="too_few_pairs", n_pairs=n, n_required=need)
            return lo, {}
        if len(orders) == 1:
            return orders[0], {}
        box = bbox if bbox is not None else (float(np.min(x)), float(np.max(x)), float(np.min(y)), float(np.max(y)))
        fold = np.empty(n, np.int64)
        fold[np.random.default_rng(20261207).permutation(n)] = np.arange(n) % k
        held = {}
        for o in orders:
            d = np.full(n, np.inf)
            for f in range(k):
                tr, te = fold != f, fold == f
                w = None if weights is None else np.ascontiguousarray(weights[tr])
                try:
                    res = self._fit(np.ascontiguousarray(x[tr]), np.ascontiguousarray(y[tr]),
                                    np.ascontiguousarray(ra[tr]), np.ascontiguousarray(dec[tr]), w, box, o, None)
                except AstrometryFitError:
                    continue
                pra, pdec = res.wcs.all_pix2world(x[te], y[te], 0)
                d[te] = _separation_arcsec(pra, pdec, ra[te], dec[te])
            held[o] = d
        finite = np.isfinite(held[orders[0]])
        cap = 5.0 * float(np.median(held[orders[0]][finite])) if finite.any() else np.inf
        scores = {o: float(np.sqrt(np.mean(np.minimum(held[o], cap) ** 2))) if np.all(np.isfinite(held[o]))
                  else float("inf") for o in orders}
        best = min(orders, key=lambda o: scores[o])
        if not np.isfinite(scores[best]):
            return orders[0], scores
        # The one-standard-error rule on the paired held-out squared distances: the lowest order whose excess
        # over the best is within one standard error of its mean (Hastie, Tibshirani & Friedman, ESL 7.10).
        sq_best = np.minimum(held[best], cap) ** 2
        for o in orders:
            if not np.isfinite(scores[o]):
                continue
            diff = np.minimum(held[o], cap) ** 2 - sq_best
            if diff.mean() <= diff.std(ddof=1) / math.sqrt(n):
                return o, scores
        return best, scores

    def _fit(self, x, y, ra, dec, weights, box, order: int, initial_wcs) -> FitTanSipWcsResult:
        """One fit of the given order (inputs validated)."""
        cfg = self.config
        n = x.shape[0]
        n_required = (order + 1) * (order + 2) // 2
        if n < n_required:
            raise AstrometryFitError(f"too few pairs for a SIP fit of order {order}: {n} given, at least "
                                     f"{n_required} needed", reason="too_few_pairs", n_pairs=n, n_required=n_required)
        out = _core.fit_tan_sip_wcs(x, y, ra, dec, weights, box, cfg._control(order))
        status = out["status"]
        if status == 1:
            raise AstrometryFitError(f"too few pairs left after rejection for a SIP fit of order {order}: "
                                     f"{out['n_used']} of {n}, at least {n_required} needed",
                                     reason="too_few_pairs", n_pairs=int(out["n_used"]), n_required=n_required)
        if status == 3:
            raise AstrometryFitError("degenerate source geometry: the pixel positions do not span two dimensions",
                                     reason="degenerate")
        if status == 2:
            raise AstrometryFitError(f"median on-sky scatter {out['scatter_on_sky']:.3f}\" exceeds "
                                     f"max_scatter_arcsec = {cfg.max_scatter_arcsec:g}\"", reason="scatter_too_large",
                                     scatter_arcsec=float(out["scatter_on_sky"]),
                                     limit_arcsec=float(cfg.max_scatter_arcsec))
        core = out["wcs"]
        wcs = make_tan_sip_wcs(core.crpix, core.crval, np.reshape(core.cd, (2, 2)), sip_a=core.a, sip_b=core.b,
                               sip_ap=core.ap, sip_bp=core.bp)
        if initial_wcs is not None and getattr(initial_wcs, "pixel_shape", None) is not None:
            wcs.pixel_shape = initial_wcs.pixel_shape
        return FitTanSipWcsResult(
            wcs=wcs,
            scatter_on_sky=float(out["scatter_on_sky"]),
            rms_arcsec=float(out["rms_arcsec"]),
            used=out["used"],
            residuals=np.column_stack([out["dx"], out["dy"]]),
            n_used=int(out["n_used"]),
            reverse_max_error_px=float(out["reverse_max_error_px"]),
            bbox=box,
            tan_sip=core,
            order=order,
        )


def _separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    r1, d1, r2, d2 = (np.radians(np.asarray(v, np.float64)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin(0.5 * (d2 - d1)) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(0.5 * (r2 - r1)) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600.0
