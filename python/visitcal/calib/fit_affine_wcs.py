"""Fit an affine correction on top of a WCS's camera distortion: `FitAffineWcsTask` (after LSST meas_astrom's
``FitAffineWcsTask``, the fitter of the current ``CalibrateImageTask``).

The preliminary WCS of a detector carries the camera model: where each pixel lands on the focal plane and
the optical distortion. What is uncertain before calibration is mostly how the camera sits on the sky (a
shift, a rotation, a plate-scale change), so the fit keeps the distortion and solves only for an affine map
(2 x 2 matrix plus shift: 6 parameters) on the distortion-corrected ("intermediate") coordinates, as LSST's
task does (it inserts the affine correction between the distortion and the sky mapping). A few dozen stars
pin 6 parameters down everywhere on the detector; a free polynomial fitted to the same stars wanders where
there are none.

For a TAN-SIP WCS (FITS SIP convention, Shupe et al. 2005), with ``u = x - CRPIX``:

    (U, V) = (u + A(u, v), v + B(u, v)),   (xi, eta) = CD (U, V),   (ra, dec) = TAN^-1(xi, eta) about CRVAL.

The fit (vectorised numpy, a 6-parameter linear least-squares problem per iteration):

1. project the references onto the plane tangent at CRVAL and take them back through ``CD^-1`` to
   ``(U_ref, V_ref)`` (pixels); the sources give ``(U, V)`` through the SIP polynomials;
2. solve ``(U_ref, V_ref) = M (U, V) + t`` (least squares, optionally weighted; with ``transform =
   "similarity"`` ``M`` is a rotation and a scale on the tangent plane, 4 parameters in all);
3. fold ``M`` into the CD matrix (``CD <- CD M``) and ``t`` into the tangent point (``CRVAL <-
   TAN^-1(CD t)``), which leaves CRPIX and the SIP polynomials -- forward and reverse -- untouched, so the
   result is again a TAN-SIP WCS with the camera's distortion. Moving the tangent point also turns and
   stretches the tangent plane by a second-order amount (up to a few mas over a detector 0.2 deg from
   the optical axis), so steps 1-3 are repeated ``num_iter`` times: the last shift is then ~1e-9 px;
4. ``num_rej_iter`` passes reject pairs whose tangent-plane residual exceeds ``rej_sigma`` standard
   deviations in x or y (two-sided, as `FitTanSipWcsTask`; LSST's affine fitter does not reject), then
   redo 1-3 from the preliminary WCS with the pairs left.

Which correction (``transform``): what a preliminary WCS gets wrong is mostly a pointing, a rotator angle and a
plate scale, a similarity (4 parameters); the affine adds 2 shear terms (anisotropic scale, e.g. from
differential refraction). With ``"auto"`` (the default, ours) both are fitted and the affine kept only when its
shear terms lower the weighted chi-square significantly (an F-test with 2 and ``2 n - 6`` degrees of freedom,
p-value below ``affine_p_value``, 0.01; for 2 numerator degrees of freedom the F survival function is exactly
``(1 + 2 F / d2)^(-d2 / 2)``): a rich field with real shear gets the affine, a sparse one is not asked to fit two
parameters its stars cannot fix. On the u-band field at the default density (7-10 stars per detector, the
preliminary WCS off by a similarity) the full-detector error went from 5.6-36 mas (affine) to 0.9-16 mas; on the
default r-band field (11-18 stars) from 1.8-4.9 to 0.9-4.9 mas. ``"affine"`` is LSST's.

A TAN WCS without SIP is the special case ``A = B = 0``. A TPV WCS (its distortion acts *after* CD) or one
with lookup-table distortions cannot take the correction this way: `AstrometryFitError` (use
``wcs_fitter = "sip"`` for those).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field

from ..core.wcs import make_tan_sip_wcs
from .fit_tan_sip_wcs import AstrometryFitError, _as_float_array, _bbox_tuple, _expand_to_all_rows, _usable_pairs
from .match_nearest import angular_separation_arcsec

__all__ = ["FitAffineWcsConfig", "FitAffineWcsResult", "FitAffineWcsTask"]

#: Parameters of the affine correction (2 x 2 matrix and a shift): the fewest pairs the fit accepts is 3.
N_PARAMETERS = 6


class FitAffineWcsConfig(BaseModel):
    """Configuration of `FitAffineWcsTask` (LSST's ``FitAffineWcsConfig`` has no fields of its own beyond
    the scatter limit; the iteration and rejection fields are ours, named as `FitTanSipWcsConfig`'s)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_iter: int = Field(3, ge=1, le=100, description="Fits per pass; after each the tangent point moves by the "
                                                       "fitted "
                          "shift (second-order terms make the next fit's shift ~1e-9 px). At most 100 (each is a fit).")
    num_rej_iter: int = Field(1, ge=0, le=100, description="Rejection passes before the final fit. At most 100 (each "
                                                           "is a fit).")
    rej_sigma: float = Field(3.0, gt=0, description="Reject a pair whose tangent-plane residual in x or y exceeds "
                             "rej_sigma times that axis's standard deviation (two-sided).")
    transform: Literal["auto", "affine", "similarity"] = Field(
        "auto", description="The correction fitted: \"affine\" (6 parameters: LSST's), \"similarity\" (4: a "
        "shift, a rotation and a plate scale on the tangent plane) or \"auto\" (ours): the similarity, unless the "
        "affine fit's two shear terms lower the weighted chi-square significantly (F-test p-value below "
        "affine_p_value on the pairs both fits keep).")
    affine_p_value: float = Field(0.01, gt=0, lt=1, description="\"auto\": the affine correction is kept when the "
                                  "F-test's p-value of its shear terms is below this.")
    max_scatter_arcsec: float = Field(10.0, gt=0, le=3600, description="Fail when the median on-sky distance between "
                                                                       "the "
                                      "fitted and reference positions exceeds this (arcsec). At most 3600 arcsec.")


@dataclass(frozen=True)
class FitAffineWcsResult:
    """What `FitAffineWcsTask.fit_wcs` returns (the attributes `FitTanSipWcsResult` shares, plus the affine
    correction).

    Attributes
    ----------
    wcs : `astropy.wcs.WCS`
        The preliminary WCS with the new CD and CRVAL; CRPIX and the SIP polynomials unchanged.
    scatter_on_sky : float
        Median on-sky distance between the fitted positions of the used sources and their references,
        arcsec (LSST ``scatterOnSky``).
    rms_arcsec : float
        ``sqrt(mean(dx^2 + dy^2))`` over the used pairs, arcsec.
    used : (n,) bool
        The pair entered the final fit (not rejected).
    residuals : (n, 2) float64
        ``(dx, dy)`` = fitted minus reference position on the plane tangent at the new CRVAL (xi east,
        eta north), arcsec, for every pair.
    n_used : int
    matrix : (2, 2) float64
        ``M`` with ``CD_new = CD_prelim M`` (the product over the iterations): the rotation, scale and shear
        the preliminary WCS got wrong.
    crval_shift_arcsec : float
        How far the tangent point moved (arcsec).
    bbox : (float, float, float, float)
        ``(xmin, xmax, ymin, ymax)`` of the detector (pixels), for the callers' checks.
    bad_input : (n,) bool
        The pair could not enter the fit (a non-finite ``x``, ``y``, ``ra``, ``dec`` or weight, a weight
        <= 0, ``|dec| > 90``): not ``used``, NaN ``residuals``. Such rows are left out, not an error.
    transform : str
        The correction fitted: ``"affine"`` or ``"similarity"``.
    shear_p_value : float
        ``transform = "auto"``: the F-test's p-value of the affine fit's shear terms (NaN when not tested:
        another transform, or too few pairs for the affine fit).
    """

    wcs: WCS
    scatter_on_sky: float
    rms_arcsec: float
    used: np.ndarray
    residuals: np.ndarray
    n_used: int
    matrix: np.ndarray
    crval_shift_arcsec: float
    bbox: tuple[float, float, float, float]
    bad_input: np.ndarray | None = None
    transform: str = "affine"
    shear_p_value: float = math.nan


def _tan_sip_parts(wcs: WCS):
    """CRPIX (0-based), CRVAL, CD and the SIP arrays of a TAN or TAN-SIP ``wcs``; AstrometryFitError otherwise."""
    if not isinstance(wcs, WCS) or not wcs.has_celestial:
        raise AstrometryFitError("the affine fit needs the preliminary WCS (an astropy WCS with celestial axes)",
                                 reason="unsupported_wcs")
    ctype = [str(c) for c in wcs.wcs.ctype]
    if not (ctype[0].startswith("RA---TAN") and ctype[1].startswith("DEC--TAN")) or any(
            c.endswith("TPV") for c in ctype):
        raise AstrometryFitError(f"the affine fit keeps a TAN or TAN-SIP distortion; the preliminary WCS is "
                                 f"{ctype[0]}/{ctype[1]} (use wcs_fitter = 'sip')", reason="unsupported_wcs")
    if any(getattr(wcs, n, None) is not None for n in ("cpdis1", "cpdis2", "det2im1", "det2im2")):
        raise AstrometryFitError("the affine fit cannot keep lookup-table distortions (use wcs_fitter = 'sip')",
                                 reason="unsupported_wcs")
    cd = np.asarray(wcs.wcs.get_pc(), float) * np.asarray(wcs.wcs.get_cdelt(), float)[:, None]
    if not np.all(np.isfinite(cd)) or abs(np.linalg.det(cd)) == 0:
        raise AstrometryFitError("the preliminary WCS's CD matrix is singular or not finite", reason="unsupported_wcs")
    crpix = np.asarray(wcs.wcs.crpix, float) - 1.0
    crval = np.asarray(wcs.wcs.crval, float)
    sip = wcs.sip
    parts = (None, None, None, None) if sip is None else (sip.a, sip.b, sip.ap, sip.bp)
    # WCSLIB holds a TPV (or other) distortion where CTYPE no longer shows it: rebuild the WCS from the parts
    # read and compare, 1000 px around CRPIX (an unmodelled distortion differs by far more than 1e-9 deg).
    rebuilt = make_tan_sip_wcs(crpix, crval, cd, sip_a=parts[0], sip_b=parts[1]) if sip is not None else \
        make_tan_sip_wcs(crpix, crval, cd)
    px = crpix[0] + np.array([0.0, 1000.0, -1000.0, 700.0, -700.0])
    py = crpix[1] + np.array([0.0, 700.0, 1000.0, -1000.0, -700.0])
    r1, d1 = wcs.all_pix2world(px, py, 0)
    r2, d2 = rebuilt.all_pix2world(px, py, 0)
    if not np.all(angular_separation_arcsec(r1, d1, r2, d2) < 1e-5):
        raise AstrometryFitError("the affine fit keeps a TAN or TAN-SIP distortion; the preliminary WCS has "
                                 "another (e.g. TPV): use wcs_fitter = 'sip'", reason="unsupported_wcs")
    return crpix, crval, cd, parts


def _poly(coeffs, u, v):
    """``sum_pq c[p, q] u^p v^q`` (a SIP polynomial; None is zero)."""
    out = np.zeros_like(u)
    if coeffs is None:
        return out
    c = np.asarray(coeffs, float)
    for p, q in zip(*np.nonzero(c)):
        out += c[p, q] * u**p * v**q
    return out


def _unit(ra, dec):
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)


def _tangent_basis(ra0, dec0):
    r0, d0 = np.radians(ra0), np.radians(dec0)
    centre = np.array([np.cos(d0) * np.cos(r0), np.cos(d0) * np.sin(r0), np.sin(d0)])
    east = np.array([-np.sin(r0), np.cos(r0), 0.0])
    return centre, east, np.cross(centre, east)


def _project(ra, dec, crval):
    """Gnomonic (xi, eta) in degrees about ``crval`` (FITS TAN, xi east)."""
    centre, east, north = _tangent_basis(*crval)
    u = _unit(ra, dec)
    w = u @ centre
    return np.degrees((u @ east) / w), np.degrees((u @ north) / w)


def _deproject(xi, eta, crval):
    """Inverse of `_project` for one point: (ra, dec) degrees."""
    centre, east, north = _tangent_basis(*crval)
    v = centre + np.radians(xi) * east + np.radians(eta) * north
    v /= np.linalg.norm(v)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360.0), float(np.degrees(np.arcsin(np.clip(v[2], -1, 1))))


def _shear_p_value(sim, aff, w) -> float:
    """P-value of the F-test of the affine fit's 2 extra (shear) parameters over the similarity's, on the pairs
    both fits keep: ``F = ((S_sim - S_aff) / 2) / (S_aff / (2 m - 6))`` with ``S`` the weighted sum of squared
    residuals of the ``m`` pairs. For 2 numerator degrees of freedom the F distribution's survival function is
    exactly ``(1 + 2 F / d2)^(-d2 / 2)`` (no special function needed)."""
    used = sim[2] & aff[2]
    m = int(used.sum())
    d2 = 2 * m - N_PARAMETERS
    if d2 <= 0:
        return math.nan
    s_sim = float(np.sum(w[used] * (sim[3][used] ** 2 + sim[4][used] ** 2)))
    s_aff = float(np.sum(w[used] * (aff[3][used] ** 2 + aff[4][used] ** 2)))
    if not s_aff > 0:
        return 0.0 if s_sim > 0 else 1.0
    f = max(s_sim - s_aff, 0.0) / 2.0 / (s_aff / d2)
    return float((1.0 + 2.0 * f / d2) ** (-0.5 * d2))


class FitAffineWcsTask:
    """Fit an affine correction on top of the preliminary WCS's distortion (module docstring). Stateless and
    thread-safe."""

    ConfigClass = FitAffineWcsConfig
    _DefaultName = "fitAffineWcs"

    def __init__(self, config: FitAffineWcsConfig | None = None):
        self.config = config if config is not None else FitAffineWcsConfig()

    def __repr__(self) -> str:
        return f"FitAffineWcsTask({self.config!r})"

    def __reduce__(self):
        return (FitAffineWcsTask, (self.config,))

    def fit_wcs(self, x, y, ra, dec, *, initial_wcs: WCS, bbox=None, weights=None) -> FitAffineWcsResult:
        """Fit the affine correction of ``initial_wcs`` to matched pairs.

        Parameters
        ----------
        x, y : (n,) array_like
            Source positions, pixels, 0-based, pixel centres at integers.
        ra, dec : (n,) array_like
            Reference positions of the same objects, degrees (ICRS).
        initial_wcs : `astropy.wcs.WCS`
            The preliminary WCS, TAN or TAN-SIP: its CRPIX and distortion are kept.
        bbox : `visitcal.core.geom.Box2I` or (xmin, xmax, ymin, ymax), optional
            The detector, reported in the result (default: ``initial_wcs.pixel_shape``, else the sources').
        weights : (n,) array_like, optional
            Positive least-squares weights; default equal.

        Returns
        -------
        result : `FitAffineWcsResult`

        Raises
        ------
        AstrometryFitError
            Fewer usable pairs than the transform needs (3 for "affine", 2 for "similarity" and "auto"), before
            or after rejection (``"too_few_pairs"``), sources on a line for "affine" or all at one position
            (``"degenerate"``), a median scatter above
            ``max_scatter_arcsec`` (``"scatter_too_large"``), a WCS that is not TAN / TAN-SIP
            (``"unsupported_wcs"``).
        ValueError
            Arrays of different lengths or dimensions, a bad ``bbox``.

        Notes
        -----
        A pair with a non-finite ``x``, ``y``, ``ra``, ``dec`` or weight, a weight <= 0 or ``|dec| > 90`` is
        left out (``bad_input``) and the others are fitted exactly as they would be without it.
        """
        cfg = self.config
        x = _as_float_array(x, "x")
        n = x.shape[0]
        y = _as_float_array(y, "y", n)
        ra = _as_float_array(ra, "ra", n)
        dec = _as_float_array(dec, "dec", n)
        w = np.ones(n)
        if weights is not None:
            w = _as_float_array(weights, "weights", n)
        ok = _usable_pairs(x, y, ra, dec, None if weights is None else w)
        if not ok.all():  # bad rows are left out of the fit, each alone; the rest is fitted as without them
            res = self.fit_wcs(x[ok], y[ok], ra[ok], dec[ok], initial_wcs=initial_wcs, bbox=bbox,
                               weights=None if weights is None else w[ok])
            return _expand_to_all_rows(res, ok)
        n_required = 2 if cfg.transform in ("similarity", "auto") else N_PARAMETERS // 2
        if n < n_required:
            raise AstrometryFitError(f"too few pairs for the {cfg.transform} fit: {n} given, at least {n_required} "
                                     f"needed", reason="too_few_pairs", n_pairs=n, n_required=n_required)
        crpix, crval0, cd0, (a, b, ap, bp) = _tan_sip_parts(initial_wcs)
        box = _bbox_tuple(bbox, initial_wcs, x, y)
        u, v = x - crpix[0], y - crpix[1]
        big_u = np.column_stack([u + _poly(a, u, v), v + _poly(b, u, v)])  # distortion-corrected pixels
        p_value = math.nan
        if cfg.transform == "auto":
            sim = self._fit_pass(big_u, ra, dec, w, crval0, cd0, similarity=True)
            chosen, transform = sim, "similarity"
            if n >= N_PARAMETERS // 2 + 1:  # the affine fit needs dof left for the test
                try:
                    aff = self._fit_pass(big_u, ra, dec, w, crval0, cd0, similarity=False)
                except AstrometryFitError:  # on a line, or too few after rejection: the similarity stands
                    aff = None
                if aff is not None:
                    p_value = _shear_p_value(sim, aff, w)
                    if p_value < cfg.affine_p_value:
                        chosen, transform = aff, "affine"
            cd, crval, used, dx, dy = chosen
        else:
            transform = cfg.transform
            cd, crval, used, dx, dy = self._fit_pass(big_u, ra, dec, w, crval0, cd0,
                                                     similarity=transform == "similarity")
        wcs = make_tan_sip_wcs(crpix, crval, cd, sip_a=a, sip_b=b, sip_ap=ap, sip_bp=bp) if a is not None else \
            make_tan_sip_wcs(crpix, crval, cd)
        if getattr(initial_wcs, "pixel_shape", None) is not None:
            wcs.pixel_shape = initial_wcs.pixel_shape
        fra, fdec = wcs.all_pix2world(x, y, 0)
        sep = angular_separation_arcsec(fra, fdec, ra, dec)
        scatter = float(np.median(sep[used]))
        if not scatter <= cfg.max_scatter_arcsec:
            raise AstrometryFitError(f"median on-sky scatter {scatter:.3f}\" exceeds max_scatter_arcsec = "
                                     f"{cfg.max_scatter_arcsec:g}\"", reason="scatter_too_large",
                                     scatter_arcsec=scatter, limit_arcsec=float(cfg.max_scatter_arcsec))
        shift = float(angular_separation_arcsec(crval[0], crval[1], crval0[0], crval0[1]))
        return FitAffineWcsResult(
            wcs=wcs, scatter_on_sky=scatter, rms_arcsec=float(np.sqrt(np.mean(dx[used] ** 2 + dy[used] ** 2))),
            used=used, residuals=np.column_stack([dx, dy]), n_used=int(used.sum()),
            matrix=np.linalg.solve(cd0, cd), crval_shift_arcsec=shift, bbox=box, bad_input=np.zeros(n, bool),
            transform=transform, shear_p_value=p_value)

    def _fit_pass(self, big_u, ra, dec, w, crval0, cd0, *, similarity: bool):
        """The iterated fit with ``num_rej_iter`` rejection passes, from the preliminary ``crval0``, ``cd0``:
        ``(cd, crval, used, dx, dy)``, residuals (fitted minus reference, arcsec) of every pair."""
        cfg = self.config
        n = big_u.shape[0]
        n_required = 2 if similarity else N_PARAMETERS // 2
        used = np.ones(n, bool)
        for rej in range(cfg.num_rej_iter + 1):
            if used.sum() < n_required:
                raise AstrometryFitError(f"too few pairs left after rejection for the "
                                         f"{'similarity' if similarity else 'affine'} fit: {int(used.sum())} of {n}, "
                                         f"at least {n_required} needed", reason="too_few_pairs",
                                         n_pairs=int(used.sum()), n_required=n_required)
            crval, cd = crval0.copy(), cd0.copy()
            for _ in range(cfg.num_iter):
                cd, crval = self._step(big_u, ra, dec, w, used, cd, crval, similarity)
            xi, eta = _project(ra, dec, crval)
            model = big_u @ cd.T  # degrees on the tangent plane at crval
            dx, dy = (model[:, 0] - xi) * 3600.0, (model[:, 1] - eta) * 3600.0
            # no rejection without residual degrees of freedom: an exact fit's residuals are rounding noise
            if rej == cfg.num_rej_iter or 2 * int(used.sum()) - 2 * n_required < 2:
                break
            sx, sy = dx[used].std(), dy[used].std()
            used = used & ~((np.abs(dx) > cfg.rej_sigma * sx) | (np.abs(dy) > cfg.rej_sigma * sy))
        return cd, crval, used, dx, dy

    @staticmethod
    def _step(big_u, ra, dec, w, used, cd, crval, similarity: bool = False):
        """One least-squares solve of ``(U_ref, V_ref) = M (U, V) + t`` (or, with ``similarity``, of a rotation,
        scale and shift on the tangent plane) and its bookkeeping into CD and CRVAL."""
        if similarity:
            return FitAffineWcsTask._similarity_step(big_u, ra, dec, w, used, cd, crval)
        xi, eta = _project(ra[used], dec[used], crval)
        ref = np.column_stack([xi, eta]) @ np.linalg.inv(cd).T  # references in the current pixel frame
        src = big_u[used]
        centre = np.average(src, axis=0, weights=w[used])  # conditioning: offsets about the weighted mean
        design = np.column_stack([src - centre, np.ones(src.shape[0])])
        sw = np.sqrt(w[used])[:, None]
        sv = np.linalg.svd(design[:, :2], compute_uv=False)  # spread of the sources about their centre
        if not sv[1] > 1e-3 * sv[0]:  # on a line (to 0.1%: a camera's distortion bends a line less than that)
            raise AstrometryFitError("degenerate source geometry: the pixel positions do not span two dimensions",
                                     reason="degenerate")
        sol, *_ = np.linalg.lstsq(design * sw, ref * sw, rcond=None)  # (3, 2): rows M^T, then the constant
        m = sol[:2].T
        t = sol[2] - m @ centre  # ref = M src + t
        new_cd = cd @ m
        shift = cd @ t  # degrees on the tangent plane: the new tangent point
        return new_cd, np.array(_deproject(shift[0], shift[1], crval))

    @staticmethod
    def _similarity_step(big_u, ra, dec, w, used, cd, crval):
        """One weighted least-squares solve of ``(xi, eta)_ref = S CD (U, V) + s`` on the plane tangent at
        ``crval`` (degrees), ``S = [[a, -b], [b, a]]`` a rotation and scale: 4 parameters; folded in as
        ``CD <- S CD`` and the tangent point moved by ``s``."""
        xi, eta = _project(ra[used], dec[used], crval)
        src = big_u[used] @ cd.T  # degrees on the tangent plane under the current CD
        wu = w[used]
        centre = np.average(src, axis=0, weights=wu)
        p, q = (src - centre).T
        if not np.any(np.hypot(p, q) > 0):
            raise AstrometryFitError("degenerate source geometry: every pair at the same position",
                                     reason="degenerate")
        n = p.size
        design = np.zeros((2 * n, 4))
        design[:n] = np.column_stack([p, -q, np.ones(n), np.zeros(n)])
        design[n:] = np.column_stack([q, p, np.zeros(n), np.ones(n)])
        target = np.concatenate([xi, eta])
        sw = np.sqrt(np.concatenate([wu, wu]))
        (a, b, sx, sy), *_ = np.linalg.lstsq(design * sw[:, None], target * sw, rcond=None)
        rot = np.array([[a, -b], [b, a]])
        shift = np.array([sx, sy]) - rot @ centre  # ref = S src + shift
        return rot @ cd, np.array(_deproject(shift[0], shift[1], crval))
