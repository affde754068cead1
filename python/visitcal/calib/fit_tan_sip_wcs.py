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

Differences from LSST: the rejection is two-sided; the tangent point is iterated to the sky position of
CRPIX (LSST keeps CRPIX and CRVAL of its initial TAN WCS and absorbs the fit's constant term into CRPIX to
first order each iteration); ``initial_wcs`` is optional because nothing here linearises about it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field

from .. import _core
from ..core.geom import Box2I
from ..core.wcs import make_tan_sip_wcs

__all__ = [
    "AstrometryError",
    "AstrometryFitError",
    "FitTanSipWcsConfig",
    "FitTanSipWcsResult",
    "FitTanSipWcsTask",
    "tan_sip_from_wcs",
]


class AstrometryError(RuntimeError):
    """An astrometric calibration that could not be made (LSST's ``BadAstrometryFit`` family).

    Like the other typed failures of visitcal's algorithms (`visitcal.psf.determiner.PsfDeterminerError`,
    `visitcal.detection.background.BackgroundError`), a `RuntimeError`: the detector fails, the visit goes on.
    """


def _rebuild_fit_error(message, reason, details):
    return AstrometryFitError(message, reason=reason, **details)


class AstrometryFitError(AstrometryError):
    """`FitTanSipWcsTask` could not fit a WCS.

    Attributes
    ----------
    reason : str
        ``"too_few_pairs"`` (``n_pairs``, ``n_required``), ``"non_finite"`` (``argument``, ``n_bad``),
        ``"scatter_too_large"`` (``scatter_arcsec``, ``limit_arcsec``) or ``"degenerate"`` (the sources do
        not span two dimensions).
    details : dict
        The numbers named above.
    """

    def __init__(self, message: str, *, reason: str, **details):
        super().__init__(message)
        self.reason = reason
        self.details = dict(details)
        for k, v in self.details.items():
            setattr(self, k, v)

    def __reduce__(self):
        return (_rebuild_fit_error, (self.args[0], self.reason, self.details))


class FitTanSipWcsConfig(BaseModel):
    """Configuration of `FitTanSipWcsTask`: LSST's ``FitTanSipWcsConfig`` in snake_case with its defaults.

    Mirrors the C++ ``FitTanSipControl`` (a test checks the defaults agree).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    order: int = Field(2, ge=2, le=9, description="Order of the forward SIP polynomials A, B (terms 2 <= p + q "
                       "<= order).")
    num_iter: int = Field(3, ge=1, description="Fits per pass; after each one but the last the tangent point moves "
                          "to the sky position of CRPIX.")
    num_rej_iter: int = Field(1, ge=0, description="Rejection passes before the final fit.")
    rej_sigma: float = Field(3.0, gt=0, description="Reject a pair whose tangent-plane residual in x or y exceeds "
                             "rej_sigma times that axis's standard deviation (two-sided; LSST's is one-sided).")
    max_scatter_arcsec: float = Field(10.0, gt=0, description="Fail when the median on-sky distance between the "
                                      "fitted and reference positions exceeds this (arcsec).")
    inverse_order: int | None = Field(None, ge=1, le=10, description="Order of the reverse polynomials AP, BP "
                                      "(None: order + 1).")

    def _control(self) -> _core.FitTanSipControl:
        ctl = _core.FitTanSipControl()
        ctl.order = self.order
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
            Non-finite input (``reason="non_finite"``, the argument named), fewer pairs than the
            ``(order + 1)(order + 2) / 2`` the polynomials need, before or after rejection
            (``"too_few_pairs"``), sources on a line (``"degenerate"``), or a median scatter above
            ``max_scatter_arcsec`` (``"scatter_too_large"``).
        ValueError
            Arrays of different lengths or dimensions, weights <= 0, a bad ``bbox``.
        """
        cfg = self.config
        x = _as_float_array(x, "x")
        n = x.shape[0]
        y = _as_float_array(y, "y", n)
        ra = _as_float_array(ra, "ra", n)
        dec = _as_float_array(dec, "dec", n)
        for name, arr in (("x", x), ("y", y), ("ra", ra), ("dec", dec)):
            bad = ~np.isfinite(arr)
            if bad.any():
                raise AstrometryFitError(f"{name} has {int(bad.sum())} non-finite value(s) (first at index "
                                         f"{int(np.flatnonzero(bad)[0])})", reason="non_finite", argument=name,
                                         n_bad=int(bad.sum()))
        if weights is not None:
            weights = _as_float_array(weights, "weights", n)
            bad = ~np.isfinite(weights)
            if bad.any():
                raise AstrometryFitError(f"weights has {int(bad.sum())} non-finite value(s)", reason="non_finite",
                                         argument="weights", n_bad=int(bad.sum()))
            if (weights <= 0).any():
                raise ValueError("weights must be > 0 (drop a pair rather than give it zero weight)")
        if np.any(np.abs(dec) > 90.0):
            raise ValueError("dec must be within [-90, 90] degrees")
        n_required = (cfg.order + 1) * (cfg.order + 2) // 2
        if n < n_required:
            raise AstrometryFitError(f"too few pairs for a SIP fit of order {cfg.order}: {n} given, at least "
                                     f"{n_required} needed", reason="too_few_pairs", n_pairs=n, n_required=n_required)
        box = _bbox_tuple(bbox, initial_wcs, x, y)

        out = _core.fit_tan_sip_wcs(x, y, ra, dec, weights, box, cfg._control())
        status = out["status"]
        if status == 1:
            raise AstrometryFitError(f"too few pairs left after rejection for a SIP fit of order {cfg.order}: "
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
        )
