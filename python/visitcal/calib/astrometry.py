"""`AstrometryTask`: match a detector's sources to a reference catalog and fit its WCS (LSST meas_astrom's
``AstrometryTask``).

The loop, at most ``max_iter`` times (LSST ``AstrometryTask.solve``):

1. match the selected sources to the references through the current WCS with the pattern matcher
   (`MatchPessimisticBTask`); when it finds nothing, with ``do_offset_fallback``, the offset search
   (`MatchOffsetTask`: the peak of the source-to-reference offsets within ``offset_matcher.max_offset_arcsec``,
   trusting the preliminary WCS to its stated error), so that a few dozen sources suffice;
2. cull magnitude outliers: ``dm = ref_mag - (-2.5 log10 instFlux)``, keep ``|dm - median| <= 3 sigma``
   with ``sigma = max(1.4826 MAD, 1e-3)``;
3. fit the WCS to the matches, each weighted by its inverse centroid variance (plus a floor; ours, LSST
   weighs them alike), by ``wcs_fitter``:

   - ``"affine"`` (default, as LSST's current ``CalibrateImageTask``): `FitAffineWcsTask` keeps the camera
     distortion of the preliminary WCS and fits a correction on top of it (by default a 4-parameter similarity,
     the 6-parameter affine when its shear terms are significant: ``fit_affine_wcs.transform``); a few dozen
     stars fix it over the whole detector;
   - ``"sip"``: `FitTanSipWcsTask`, a full TAN-SIP fit whose order is chosen from the data (held-out
     residuals, ``fit_tan_sip_wcs.order = "auto"``), for preliminary WCSs without a trustworthy distortion;

4. match statistics: mean, scatter and maximum on-sky distance of the matches under the new WCS.

It stops early when the largest match distance is below ``min_match_distance_arcsec``. Then the checks the
WCS must pass before it is kept: finite over the detector, no fold-over, no large change of pixel area
(`visitcal.calib.wcs_check.check_wcs`, an `AstrometryFitError`), and LSST's ``check``: a mean match distance
above ``max_mean_distance_arcsec`` (0.5") is a `BadAstrometryFit`.

The source selection is the "science" selector LSST's ``AstrometryTask`` configures: S/N > 40 on
``slot_PsfFlux``, none of the edge / no-data / interpolated-centre / saturated / centroid flags, primary
(when the column exists), not a sky source, centroid error under 3 px.

Fainter sources (``do_faint_source_fallback``, not LSST): when those sources cannot be matched (too few, or
fewer pairs than the matchers need), the loop is run again from the preliminary WCS with the sources above
``min_snr_fallback`` (10). The fit weighs each pair by its centroid error, so the bright stars still dominate
it; the result records the cut used (``AstrometryResult.min_snr``, ``fallback_reason``, ``SFM_ASTROM_MIN_SNR``)
and `CalibrateTask` marks the detector degraded. On the u-band field at the default star density (4-5 pairs
of the 6 needed above S/N 40 on 7 of 8 detectors) it matches 7-10 stars and the WCS is 0.9-16 mas rms from
the truth over the detector (median 4.4): the number of stars sets that, not the model.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from .fit_affine_wcs import FitAffineWcsConfig, FitAffineWcsTask
from .fit_tan_sip_wcs import AstrometryError, FitTanSipWcsConfig, FitTanSipWcsTask
from .match_offset import MatchOffsetConfig, MatchOffsetTask
from .match_pessimistic_b import MatchError, MatchPessimisticBConfig, MatchPessimisticBTask
from .wcs_check import check_wcs
from ..measurement.plugins import catalog_plugins
from .ref_loader import ReferenceObjectLoader
from ..measurement.source_selector import resolve_column
from ..core.wcs import pixel_to_sky

__all__ = ["AstrometryConfig", "AstrometryError", "AstrometryResult", "AstrometryTask", "BadAstrometryFit"]

log = logging.getLogger(__name__)


class BadAstrometryFit(AstrometryError):
    """The fit finished but its mean match distance exceeds ``max_mean_distance_arcsec`` (LSST's name).

    `AstrometryError` (from `visitcal.calib.errors`) is the family: no references on the detector,
    too few matches (the matcher's `MatchError` is the cause), a failed fit (`AstrometryFitError`)."""


class AstrometryConfig(BaseModel):
    """Configuration of `AstrometryTask`: LSST meas_astrom's ``AstrometryConfig`` defaults, snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    matcher: MatchPessimisticBConfig = Field(default_factory=MatchPessimisticBConfig, description="pattern matcher")
    do_offset_fallback: bool = Field(True, description="when the pattern matcher finds nothing, search the offset "
                                     "of the two lists within the preliminary WCS's stated error (offset_matcher)")
    offset_matcher: MatchOffsetConfig = Field(default_factory=MatchOffsetConfig, description="the fallback matcher")
    wcs_fitter: Literal["affine", "sip"] = Field("affine", description="\"affine\": an affine correction on top of "
                                                 "the preliminary WCS's distortion (FitAffineWcsTask); \"sip\": a "
                                                 "full TAN-SIP fit (FitTanSipWcsTask)")
    fit_affine_wcs: FitAffineWcsConfig = Field(default_factory=FitAffineWcsConfig, description="the affine fitter")
    fit_tan_sip_wcs: FitTanSipWcsConfig = Field(default_factory=lambda: FitTanSipWcsConfig(order="auto"),
                                                description="the TAN-SIP fitter (its order chosen by held-out "
                                                "residuals by default)")
    weight_by_centroid_error: bool = Field(True, description="weight each match in the WCS fit by its inverse "
                                           "centroid variance (ours: LSST's fitters weigh all matches alike)")
    centroid_error_floor_pix: float = Field(0.01, gt=0, description="px per axis added in quadrature to the "
                                            "centroid errors of the weights (what a catalog error misses)")
    max_area_ratio: float = Field(2.0, gt=1, le=100, description="the WCS check: largest change (factor) of the "
                                                                 "pixel area "
                                  "over the detector At most 100.")
    max_iter: int = Field(3, ge=1, le=100, description="match-and-fit iterations at most At most 100 (each iteration "
                                                       "is a match and a fit).")
    min_match_distance_arcsec: float = Field(0.001, ge=0, description="stop when the largest match distance is "
                                             "below this")
    max_mean_distance_arcsec: float = Field(0.5, gt=0, le=3600, description="the check: a larger mean match distance "
                                                                            "is a "
                                            "BadAstrometryFit At most 3600 arcsec.")
    do_magnitude_outlier_rejection: bool = Field(True, description="cull matches whose magnitude difference is an "
                                                 "outlier")
    magnitude_outlier_rejection_n_sigma: float = Field(3.0, gt=0, le=100, description="its threshold, in sigma At "
                                                                                      "most 100.")
    reference_pixel_margin: int = Field(250, ge=0, le=10000, description="references loaded this far beyond the "
                                                                         "detector At most 10000 px: it sizes the "
                                                                         "reference region loaded.")
    source_flux_type: str = Field("base_PsfFlux", description="flux for the S/N cut and the magnitude cull")
    min_snr: float = Field(40.0, ge=0, description="S/N cut of the science source selector")
    do_faint_source_fallback: bool = Field(True, description="not LSST: when matching the sources above min_snr "
                                           "fails (too few of them, or too few pairs), select again down to "
                                           "min_snr_fallback and solve with those (the result records it: "
                                           "AstrometryResult.min_snr, SFM_ASTROM_MIN_SNR)")
    min_snr_fallback: float = Field(10.0, ge=5.0, le=1000.0, description="the S/N cut of that fallback; its "
                                    "centroids are ~4x noisier than S/N 40's, but each pair is weighted by its "
                                    "centroid error in the fit (weight_by_centroid_error)")
    max_centroid_error: float = Field(3.0, gt=0, le=100, description="px; sources with larger centroid errors are "
                                                                     "dropped At most 100 px.")
    bad_flags: list[str] = Field(default_factory=lambda: [
        "base_PixelFlags_flag_edge", "base_PixelFlags_flag_nodata", "base_PixelFlags_flag_interpolatedCenter",
        "base_PixelFlags_flag_saturated", "base_SdssCentroid_flag"], description="flags vetoing a source")


@dataclasses.dataclass
class AstrometryResult:
    """What `AstrometryTask.run` returns.

    Attributes
    ----------
    wcs : `astropy.wcs.WCS`
        The fitted WCS (TAN-SIP).
    matches : `astropy.table.Table`
        One row per match: ``src_id``, ``ref_id``, source and reference positions, ``distance_arcsec``,
        ``used`` (entered the final fit).
    scatter_on_sky : float
        The fitter's median match distance, arcsec.
    match_stats : dict
        ``mean``, ``std``, ``median``, ``max`` (arcsec) and ``n`` of the used matches (LSST's
        SFM_ASTROM_OFFSET_*).
    n_iter : int
        Match-and-fit iterations made.
    rms_arcsec : float
        The fit's own residual: ``sqrt(mean(dx^2 + dy^2))`` over the used matches, arcsec.
    n_stars : int
        Matches that entered the final fit.
    fitter : str
        ``"affine"`` or ``"sip"``.
    matcher : str
        What matched through the preliminary WCS (the first iteration): ``"pessimistic_b"`` or
        ``"offset_fallback"``.
    sip_order : int or None
        The SIP order fitted (``fitter == "sip"``).
    min_snr : float
        The source selection's S/N cut that the solution used: ``min_snr``, or ``min_snr_fallback`` when the
        faint-source fallback was needed.
    fallback_reason : str
        Why the fallback was needed (the first selection's error), "" when it was not.
    transform : str or None
        The affine fitter's correction, ``"similarity"`` or ``"affine"`` (`FitAffineWcsResult.transform`);
        None for the SIP fitter.
    """

    wcs: object
    matches: Table
    scatter_on_sky: float
    match_stats: dict
    n_iter: int
    rms_arcsec: float = float("nan")
    n_stars: int = 0
    fitter: str = "affine"
    matcher: str = "pessimistic_b"
    sip_order: int | None = None
    min_snr: float = float("nan")
    fallback_reason: str = ""
    transform: str | None = None


class _MatchStageError(Exception):
    """Internal: the selection or matching of one S/N cut failed (``error``: the `AstrometryError` to raise)."""

    def __init__(self, error: AstrometryError):
        super().__init__(str(error))
        self.error = error


class AstrometryTask:
    """Match to the reference catalog and fit the WCS (see the module docstring).

    Parameters
    ----------
    config : `AstrometryConfig`, optional
    ref_obj_loader : `ReferenceObjectLoader`
        The reference catalog.
    """

    ConfigClass = AstrometryConfig
    _DefaultName = "astrometry"

    def __init__(self, config: AstrometryConfig | None = None, *, ref_obj_loader: ReferenceObjectLoader):
        self.config = config or AstrometryConfig()
        self.ref_obj_loader = ref_obj_loader
        self.matcher = MatchPessimisticBTask(self.config.matcher)
        self.offset_matcher = MatchOffsetTask(self.config.offset_matcher)
        self.wcs_fitter = (FitAffineWcsTask(self.config.fit_affine_wcs) if self.config.wcs_fitter == "affine"
                           else FitTanSipWcsTask(self.config.fit_tan_sip_wcs))

    def select_sources(self, source_cat: Table, min_snr: float | None = None) -> np.ndarray:
        """Boolean selection of the sources fit for astrometry (see the module docstring); ``min_snr``
        (default ``config.min_snr``) is the S/N cut."""
        cat = source_cat
        n = len(cat)
        snr_cut = self.config.min_snr if min_snr is None else float(min_snr)
        flux = np.asarray(cat[f"{self.config.source_flux_type}_instFlux"], np.float64)
        err = np.asarray(cat[f"{self.config.source_flux_type}_instFluxErr"], np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            sel = np.isfinite(flux) & (flux > 0) & (flux / err > snr_cut)
        for flag in self.config.bad_flags + [f"{self.config.source_flux_type}_flag"]:
            if flag in cat.colnames:
                sel &= ~np.asarray(cat[flag], bool)
        if "detect_isPrimary" in cat.colnames:
            sel &= np.asarray(cat["detect_isPrimary"], bool)
        if "sky_source" in cat.colnames:
            sel &= ~np.asarray(cat["sky_source"], bool)
        for c in ("slot_Centroid_xErr", "slot_Centroid_yErr"):
            try:
                e = np.asarray(cat[resolve_column(cat, c)], np.float64)
            except KeyError:
                continue
            else:
                sel &= ~(e > self.config.max_centroid_error)  # NaN errors pass, as LSST
        x, y = _centroids(cat)
        sel &= np.isfinite(x) & np.isfinite(y)
        return sel if sel.shape == (n,) else np.zeros(n, bool)

    def run(self, exposure, source_cat: Table) -> AstrometryResult:
        """Fit the WCS of ``exposure`` (its current WCS is the starting point) and set it.

        On success the exposure's WCS is replaced; ``source_cat`` gains ``coord_ra``/``coord_dec`` under
        the new WCS and ``calib_astrometry_used`` on the matched sources that entered the final fit; the
        exposure's metadata gains ``SFM_ASTROM_OFFSET_MEAN/STD/MEDIAN`` (arcsec, LSST's) and ours:
        ``SFM_ASTROM_RMS`` (the fit's residual rms, arcsec), ``SFM_ASTROM_NSTARS`` (matches in the final fit),
        ``SFM_ASTROM_FITTER`` and ``SFM_ASTROM_MATCHER`` (as `AstrometryResult`'s ``fitter``, ``matcher``).

        Raises
        ------
        AstrometryError
            No reference on the detector, no match (both matchers' errors), a failed fit; an
            `AstrometryFitError` when the fitted WCS fails `check_wcs` (not finite, folds over, pixel area
            changing by more than ``max_area_ratio``): the exposure keeps its preliminary WCS.
        BadAstrometryFit
            The mean match distance exceeds ``max_mean_distance_arcsec``; the exposure's WCS is then set
            to None and the coordinates to NaN (LSST ``check``).
        """
        if exposure.wcs is None:
            raise AstrometryError("the exposure has no (preliminary) WCS to start from")
        band = exposure.visit_info.band if exposure.visit_info is not None else None
        if not band:
            raise AstrometryError("the exposure's visit_info has no band: the reference fluxes cannot be chosen")
        refs = self.ref_obj_loader.load_pixel_box(exposure.bbox, exposure.wcs, band,
                                                  pixel_margin=self.config.reference_pixel_margin)
        if len(refs) == 0:
            raise AstrometryError(f"no reference objects on the detector (bbox {exposure.bbox!r}, band {band!r})")
        ref_ra = np.asarray(refs["ra"], np.float64)
        ref_dec = np.asarray(refs["dec"], np.float64)
        ref_flux = np.asarray(refs[f"{band}_flux"], np.float64)
        cuts = [float(self.config.min_snr)]
        if self.config.do_faint_source_fallback and self.config.min_snr_fallback < self.config.min_snr:
            cuts.append(float(self.config.min_snr_fallback))
        fallback_reason = ""
        for k, snr_cut in enumerate(cuts):
            try:
                sel, x, y, si, ri, fit, wcs, dist, used, n_iter, matchers = self._solve(
                    exposure, source_cat, ref_ra, ref_dec, ref_flux, snr_cut)
                break
            except _MatchStageError as stage:
                err = stage.error
                if k + 1 == len(cuts):
                    if fallback_reason:  # both selections failed: say so in the message the pipeline records
                        raise AstrometryError(f"with the sources above S/N {snr_cut:g}: {err}; above S/N "
                                              f"{cuts[0]:g}: {fallback_reason}") from err
                    raise err from err.__cause__
                # Too few bright sources to match (a sparse field, a blue band): the fainter ones, whose pairs the
                # fit weighs by their centroid errors, so the bright stars still dominate it.
                fallback_reason = str(err)
                log.warning("astrometry: matching the sources above S/N %g failed (%s); trying S/N > %g", snr_cut,
                            err, cuts[k + 1])
        check_wcs(wcs, fit.bbox, max_area_ratio=self.config.max_area_ratio)  # AstrometryFitError: not kept
        stats = _stats(dist[used])
        matches = Table({"src_id": np.asarray(source_cat["id"])[sel[si]], "ref_id": np.asarray(refs["id"])[ri],
                         "src_x": x[si], "src_y": y[si], "ref_ra": ref_ra[ri], "ref_dec": ref_dec[ri],
                         "distance_arcsec": dist, "used": used})
        md = exposure.metadata
        md["HIERARCH SFM_ASTROM_OFFSET_MEAN"] = stats["mean"]
        md["HIERARCH SFM_ASTROM_OFFSET_STD"] = stats["std"]
        md["HIERARCH SFM_ASTROM_OFFSET_MEDIAN"] = stats["median"]
        md["HIERARCH SFM_ASTROM_RMS"] = float(fit.rms_arcsec)
        md["HIERARCH SFM_ASTROM_NSTARS"] = int(fit.n_used)
        md["HIERARCH SFM_ASTROM_FITTER"] = self.config.wcs_fitter
        md["HIERARCH SFM_ASTROM_MATCHER"] = matchers[0]
        md["HIERARCH SFM_ASTROM_MIN_SNR"] = snr_cut
        if getattr(fit, "transform", None):
            md["HIERARCH SFM_ASTROM_TRANSFORM"] = fit.transform
        calib_used = np.zeros(len(source_cat), bool)
        calib_used[sel[si[used]]] = True
        source_cat["calib_astrometry_used"] = calib_used
        if not (stats["mean"] <= self.config.max_mean_distance_arcsec):
            exposure.wcs = None
            source_cat["coord_ra"] = np.full(len(source_cat), np.nan)
            source_cat["coord_dec"] = np.full(len(source_cat), np.nan)
            raise BadAstrometryFit(f"mean match distance {stats['mean']:.3f}\" exceeds "
                                   f"{self.config.max_mean_distance_arcsec}\" ({stats['n']} matches)")
        exposure.wcs = wcs
        update_source_coords(wcs, source_cat)
        return AstrometryResult(wcs=wcs, matches=matches, scatter_on_sky=float(fit.scatter_on_sky),
                                match_stats=stats, n_iter=n_iter, rms_arcsec=float(fit.rms_arcsec),
                                n_stars=int(fit.n_used), fitter=self.config.wcs_fitter, matcher=matchers[0],
                                sip_order=getattr(fit, "order", None) if self.config.wcs_fitter == "sip" else None,
                                min_snr=snr_cut, fallback_reason=fallback_reason,
                                transform=getattr(fit, "transform", None))

    def _solve(self, exposure, source_cat, ref_ra, ref_dec, ref_flux, min_snr: float):
        """Select the sources above ``min_snr`` and run the match-and-fit loop. A failure to select or match
        (or too few pairs for the fit) raises `_MatchStageError`, which the caller may answer with fainter
        sources; a failed fit of enough pairs is an `AstrometryError`."""
        sel = np.flatnonzero(self.select_sources(source_cat, min_snr))
        if sel.size == 0:
            raise _MatchStageError(AstrometryError(f"no source passes the astrometry source selection (S/N > "
                                                   f"{min_snr:g})"))
        x, y = _centroids(source_cat)
        x, y = x[sel], y[sel]
        flux = np.asarray(source_cat[f"{self.config.source_flux_type}_instFlux"], np.float64)[sel]
        weights = self._weights(source_cat, sel)
        preliminary = exposure.wcs
        wcs = preliminary
        fit = None
        n_iter = 0
        matchers = []
        for n_iter in range(1, self.config.max_iter + 1):
            try:
                m, name = self._match(np.stack([x, y], 1), flux, ref_ra, ref_dec, ref_flux, wcs)
            except AstrometryError as err:
                if n_iter == 1:
                    raise _MatchStageError(err) from err
                raise
            matchers.append(name)
            si, ri = np.asarray(m.source_index, np.int64), np.asarray(m.ref_index, np.int64)
            if self.config.do_magnitude_outlier_rejection and si.size:
                keep = _magnitude_cull(flux[si], ref_flux[ri], self.config.magnitude_outlier_rejection_n_sigma)
                si, ri = si[keep], ri[keep]
            try:
                # The affine correction is always relative to the preliminary WCS (its camera model); the SIP fit
                # needs no starting point.
                fit = self.wcs_fitter.fit_wcs(x[si], y[si], ref_ra[ri], ref_dec[ri], initial_wcs=preliminary,
                                              bbox=exposure.bbox, weights=None if weights is None else weights[si])
            except Exception as err:
                error = AstrometryError(f"WCS fit ({self.config.wcs_fitter}) failed on {si.size} matches: {err}")
                error.__cause__ = err
                if n_iter == 1 and getattr(err, "reason", "") == "too_few_pairs":
                    raise _MatchStageError(error) from err
                raise error from err
            wcs = fit.wcs
            dist = _distance_arcsec(wcs, x[si], y[si], ref_ra[ri], ref_dec[ri])
            used = np.asarray(fit.used, bool)
            if dist[used].size and dist[used].max() < self.config.min_match_distance_arcsec:
                break
        return sel, x, y, si, ri, fit, wcs, dist, used, n_iter, matchers

    def _weights(self, cat: Table, sel: np.ndarray) -> np.ndarray | None:
        """``1 / (xErr^2 + yErr^2 + 2 floor^2)`` of the selected sources (px^-2), or None (equal weights) when
        ``weight_by_centroid_error`` is off or the catalog has no centroid errors. A non-finite error takes the
        median of the finite ones: the fit weighs bright stars by their real precision (a 1000-sigma star's
        centroid is 25x better than a 40-sigma one's), which on a detector with 15 usable stars brings the WCS
        from 3-9 mas to 1-3 mas of the truth (visitcal sim's default field)."""
        if not self.config.weight_by_centroid_error:
            return None
        try:
            ex = np.asarray(cat[resolve_column(cat, "slot_Centroid_xErr")], np.float64)[sel]
            ey = np.asarray(cat[resolve_column(cat, "slot_Centroid_yErr")], np.float64)[sel]
        except KeyError:
            return None
        var = ex**2 + ey**2
        ok = np.isfinite(var) & (var >= 0)
        if not ok.any():
            return None
        var = np.where(ok, var, np.median(var[ok]))
        return 1.0 / (var + 2.0 * self.config.centroid_error_floor_pix**2)

    def _match(self, source_xy, flux, ref_ra, ref_dec, ref_flux, wcs):
        """The pattern matcher's pairs, or the offset search's when it finds nothing (``do_offset_fallback``);
        ``(result, "pessimistic_b" | "offset_fallback")``. `AstrometryError` when neither matches."""
        try:
            return self.matcher.match_objects(source_xy, flux, ref_ra, ref_dec, ref_flux, wcs), "pessimistic_b"
        except MatchError as err:
            if not self.config.do_offset_fallback:
                raise AstrometryError(f"matching failed: {err}") from err
            first = err
        try:
            return self.offset_matcher.match_objects(source_xy, flux, ref_ra, ref_dec, ref_flux, wcs), "offset_fallback"
        except MatchError as err:
            raise AstrometryError(f"matching failed: pattern matcher: {first}; offset search: {err}") from err


def update_source_coords(wcs, source_cat: Table) -> None:
    """Set ``coord_ra``/``coord_dec`` of every source from its slot centroid through ``wcs`` (LSST
    updateSourceCoords), in the measurement's convention (`visitcal.measurement.plugins.catalog_plugins.sky_coord`:
    radians, as afw tables give them)."""
    x, y = _centroids(source_cat)
    for name, values in catalog_plugins.sky_coord(wcs, x, y).items():
        source_cat[name] = values


def _centroids(cat: Table) -> tuple[np.ndarray, np.ndarray]:
    """The slot centroid (``slot_Centroid_x/y``, a column or an alias in ``meta["slots"]``)."""
    return (np.asarray(cat[resolve_column(cat, "slot_Centroid_x")], np.float64),
            np.asarray(cat[resolve_column(cat, "slot_Centroid_y")], np.float64))


def _magnitude_cull(inst_flux, ref_flux_njy, n_sigma: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        dm = (-2.5 * np.log10(ref_flux_njy) + 31.4) - (-2.5 * np.log10(inst_flux))
    ok = np.isfinite(dm)
    if ok.sum() < 2:
        return ok
    zp = np.median(dm[ok])
    sigma = max(1.4826 * np.median(np.abs(dm[ok] - zp)), 1e-3)
    return ok & (np.abs(dm - zp) <= n_sigma * sigma)


def _distance_arcsec(wcs, x, y, ra, dec) -> np.ndarray:
    sra, sdec = pixel_to_sky(wcs, x, y)
    r1, d1, r2, d2 = (np.radians(np.asarray(v, np.float64)) for v in (sra, sdec, ra, dec))
    # haversine: accurate at milliarcsecond separations
    h = np.sin(0.5 * (d2 - d1)) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(0.5 * (r2 - r1)) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600.0


def _stats(d: np.ndarray) -> dict:
    if d.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if d.size > 1 else 0.0,
            "median": float(np.median(d)), "max": float(d.max()), "n": int(d.size)}
