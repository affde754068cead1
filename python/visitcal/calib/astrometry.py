"""`AstrometryTask`: match a detector's sources to a reference catalog and fit its WCS (LSST meas_astrom's
``AstrometryTask``).

The loop, at most ``max_iter`` times (LSST ``AstrometryTask.solve``):

1. match the selected sources to the references with the pattern matcher
   (`MatchPessimisticBTask`), through the current WCS;
2. cull magnitude outliers: ``dm = ref_mag - (-2.5 log10 instFlux)``, keep ``|dm - median| <= 3 sigma``
   with ``sigma = max(1.4826 MAD, 1e-3)``;
3. fit a TAN-SIP WCS to the matches (`FitTanSipWcsTask`); the references' pixel positions follow it;
4. match statistics: mean, scatter and maximum on-sky distance of the matches under the new WCS.

It stops early when the largest match distance is below ``min_match_distance_arcsec``. Then the check
(LSST ``check``): a mean distance above ``max_mean_distance_arcsec`` (0.5") is a `BadAstrometryFit`.

The source selection is the "science" selector LSST's ``AstrometryTask`` configures: S/N > 40 on
``slot_PsfFlux``, none of the edge / no-data / interpolated-centre / saturated / centroid flags, primary
(when the column exists), not a sky source, centroid error under 3 px.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from .fit_tan_sip_wcs import AstrometryError, FitTanSipWcsConfig, FitTanSipWcsTask
from .match_pessimistic_b import MatchPessimisticBConfig, MatchPessimisticBTask
from ..measurement.plugins import catalog_plugins
from .ref_loader import ReferenceObjectLoader
from ..measurement.source_selector import resolve_column
from ..core.wcs import pixel_to_sky

__all__ = ["AstrometryConfig", "AstrometryError", "AstrometryResult", "AstrometryTask", "BadAstrometryFit"]


class BadAstrometryFit(AstrometryError):
    """The fit finished but its mean match distance exceeds ``max_mean_distance_arcsec`` (LSST's name).

    `AstrometryError` (from `visitcal.calib.fit_tan_sip_wcs`) is the family: no references on the detector,
    too few matches (the matcher's `MatchError` is the cause), a failed fit (`AstrometryFitError`)."""


class AstrometryConfig(BaseModel):
    """Configuration of `AstrometryTask`: LSST meas_astrom's ``AstrometryConfig`` defaults, snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    matcher: MatchPessimisticBConfig = Field(default_factory=MatchPessimisticBConfig, description="pattern matcher")
    wcs_fitter: FitTanSipWcsConfig = Field(default_factory=FitTanSipWcsConfig, description="TAN-SIP fitter")
    max_iter: int = Field(3, ge=1, description="match-and-fit iterations at most")
    min_match_distance_arcsec: float = Field(0.001, ge=0, description="stop when the largest match distance is "
                                             "below this")
    max_mean_distance_arcsec: float = Field(0.5, gt=0, description="the check: a larger mean match distance is a "
                                            "BadAstrometryFit")
    do_magnitude_outlier_rejection: bool = Field(True, description="cull matches whose magnitude difference is an "
                                                 "outlier")
    magnitude_outlier_rejection_n_sigma: float = Field(3.0, gt=0, description="its threshold, in sigma")
    reference_pixel_margin: int = Field(250, ge=0, description="references loaded this far beyond the detector")
    source_flux_type: str = Field("base_PsfFlux", description="flux for the S/N cut and the magnitude cull")
    min_snr: float = Field(40.0, ge=0, description="S/N cut of the science source selector")
    max_centroid_error: float = Field(3.0, gt=0, description="px; sources with larger centroid errors are dropped")
    bad_flags: list[str] = Field(default_factory=lambda: [
        "base_PixelFlags_flag_edge", "base_PixelFlags_flag_nodata", "base_PixelFlags_flag_interpolatedCenter",
        "base_PixelFlags_flag_saturated", "base_SdssCentroid_flag"], description="flags vetoing a source")


@dataclasses.dataclass
class AstrometryResult:
    """``wcs`` (the fitted astropy WCS), ``matches`` (one row per match: ``src_id``, ``ref_id``, source and
    reference positions, ``distance_arcsec``), ``scatter_on_sky`` (arcsec, the fitter's), ``match_stats``
    (``mean``, ``std``, ``median``, ``max``, ``n`` in arcsec; LSST's SFM_ASTROM_OFFSET_*), ``n_iter``."""

    wcs: object
    matches: Table
    scatter_on_sky: float
    match_stats: dict
    n_iter: int


class AstrometryTask:
    """Match to the reference catalog and fit a TAN-SIP WCS (see the module docstring).

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
        self.wcs_fitter = FitTanSipWcsTask(self.config.wcs_fitter)

    def select_sources(self, source_cat: Table) -> np.ndarray:
        """Boolean selection of the sources fit for astrometry (see the module docstring)."""
        cat = source_cat
        n = len(cat)
        flux = np.asarray(cat[f"{self.config.source_flux_type}_instFlux"], np.float64)
        err = np.asarray(cat[f"{self.config.source_flux_type}_instFluxErr"], np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            sel = np.isfinite(flux) & (flux > 0) & (flux / err > self.config.min_snr)
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
        exposure's metadata gains ``SFM_ASTROM_OFFSET_MEAN/STD/MEDIAN`` (arcsec).

        Raises
        ------
        AstrometryError
            No reference on the detector, too few matches (the matcher's error), a failed fit.
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
        sel = np.flatnonzero(self.select_sources(source_cat))
        if sel.size == 0:
            raise AstrometryError("no source passes the astrometry source selection")
        x, y = _centroids(source_cat)
        x, y = x[sel], y[sel]
        flux = np.asarray(source_cat[f"{self.config.source_flux_type}_instFlux"], np.float64)[sel]
        ref_ra = np.asarray(refs["ra"], np.float64)
        ref_dec = np.asarray(refs["dec"], np.float64)
        ref_flux = np.asarray(refs[f"{band}_flux"], np.float64)
        wcs = exposure.wcs
        fit = None
        n_iter = 0
        for n_iter in range(1, self.config.max_iter + 1):
            try:
                m = self.matcher.match_objects(np.stack([x, y], 1), flux, ref_ra, ref_dec, ref_flux, wcs)
            except Exception as err:  # the matcher's typed failure, kept as the cause
                raise AstrometryError(f"matching failed: {err}") from err
            si, ri = np.asarray(m.source_index, np.int64), np.asarray(m.ref_index, np.int64)
            if self.config.do_magnitude_outlier_rejection and si.size:
                keep = _magnitude_cull(flux[si], ref_flux[ri], self.config.magnitude_outlier_rejection_n_sigma)
                si, ri = si[keep], ri[keep]
            try:
                fit = self.wcs_fitter.fit_wcs(x[si], y[si], ref_ra[ri], ref_dec[ri], initial_wcs=wcs,
                                              bbox=exposure.bbox)
            except Exception as err:
                raise AstrometryError(f"WCS fit failed on {si.size} matches: {err}") from err
            wcs = fit.wcs
            dist = _distance_arcsec(wcs, x[si], y[si], ref_ra[ri], ref_dec[ri])
            used = np.asarray(fit.used, bool)
            if dist[used].size and dist[used].max() < self.config.min_match_distance_arcsec:
                break
        stats = _stats(dist[used])
        matches = Table({"src_id": np.asarray(source_cat["id"])[sel[si]], "ref_id": np.asarray(refs["id"])[ri],
                         "src_x": x[si], "src_y": y[si], "ref_ra": ref_ra[ri], "ref_dec": ref_dec[ri],
                         "distance_arcsec": dist, "used": used})
        md = exposure.metadata
        md["HIERARCH SFM_ASTROM_OFFSET_MEAN"] = stats["mean"]
        md["HIERARCH SFM_ASTROM_OFFSET_STD"] = stats["std"]
        md["HIERARCH SFM_ASTROM_OFFSET_MEDIAN"] = stats["median"]
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
                                match_stats=stats, n_iter=n_iter)


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
