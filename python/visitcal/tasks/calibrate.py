"""`CalibrateTask`: deep detection and measurement, astrometry and photometric calibration of a
characterized detector (LSST pipe_tasks' legacy ``CalibrateTask``, with its ``run()`` argument and
result attribute names; the current DRP runs ``CalibrateImageTask`` instead).

The input exposure has been through `CharacterizeImageTask`: background-subtracted, cosmic rays
repaired, with the initial (PCA) PSF and the initial aperture-correction map, which carries the
``base_CompensatedTophatFlux_12`` normalisation entry. Steps (LSST's order, but for the flags copied
before the normalisation, which can be measured on their stars):

1. ``find_sources``: detection at 5 sigma, sky sources (seeded with the catalog id), deblending,
   measurement with the full plugin set, primary flags (`FindSourcesTask`);
2. ``calib_psf_candidate/used/reserved`` (and ``calib_detected``) copied from the characterization
   catalog by a nearest match within ``match_radius_pix`` (3 px), children of deblended parents left out;
3. the normalized calibration flux (``base_NormalizedCompensatedTophatFlux``, the ``slot_CalibFlux``), the
   characterisation's normalisation applied (or, on a crowded detector, measured again on this catalog's
   ``calib_psf_used`` stars: ``CalibrateConfig.normalized_calibration_flux``), then the aperture corrections
   (`ApplyApCorrTask`) and the extendedness that depends on the corrected fluxes;
4. astrometry (`AstrometryTask`): match to the reference catalog through the preliminary WCS (pattern
   matcher, offset search as its fallback), an affine correction on top of the preliminary WCS's camera
   distortion (or a full TAN-SIP fit), coordinates of every source;
5. photometric calibration (`PhotoCalTask`): the zero point against the references, ``MAGZERO`` /
   ``MAGZERO_RMS`` (LSST's: the zero point's error, sqrt(1 / sum of the weights)) / ``MAGZERO_NOBJ`` (the good
   stars) and, not LSST, ``MAGZERO_MIN_NOBJ`` (`PhotoCalConfig.min_n_stars`) and ``MAGZERO_ERR`` (the error
   with the stars' excess scatter, `PhotoCalResult.error`) in the exposure's metadata; the
   PhotoCalib is attached, the pixels stay in counts (as LSST's calexp). A zero point from fewer than
   ``min_n_stars`` stars is kept, the best available, and the detector marked degraded (below);
6. the summary statistics known at this stage (`ComputeExposureSummaryStatsTask`).

Differences from LSST, on purpose: the astrometric fit uses the main detection's sources selected by
S/N > 40 (LSST runs a separate 50-sigma detection and measurement first for it: the same stars, twice
the cost); a failure of astrometry or photometry is raised as the typed error (`AstrometryError`,
`PhotoCalError`) when ``require_astrometry`` / ``require_photo_cal`` (the defaults), so that the
pipeline records it for the detector.

Crowded fields (not LSST): ``crowded_field`` "auto" follows the characterisation's decision, recorded in the
exposure's metadata (``CROWDED_FIELD``, `visitcal.detection.crowding`); a crowded detector is calibrated with
`with_crowded_field_options` (the aperture-excess cut of the zero point's and the normalisation's stars, the
normalisation measured again). ``output_summary_metrics["crowded_field"]`` says which; a mode, not a fallback.

Degraded, not failed: when a documented fallback was used, ``output_summary_metrics["degraded_reasons"]`` lists
why (a zero point from fewer than ``photo_cal.min_n_stars`` stars; characterisation's fallbacks are added by the
``calibrate`` step); the products are written and usable, and the pipeline records the detector ``degraded``.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from ..core.apcorr import ApCorrMap
from ..measurement.measure_ap_corr import MeasureApCorrError
from ..measurement.apply_ap_corr import (
    ApplyApCorrConfig,
    ApplyApCorrTask,
    NormalizedCalibrationFluxConfig,
    NormalizedCalibrationFluxTask,
)
from ..detection.crowding import CrowdedFieldMode, resolve_crowded_field
from ..calib.astrometry import AstrometryConfig, AstrometryError, AstrometryTask, update_source_coords
from .compute_exposure_summary_stats import ComputeExposureSummaryStatsConfig, ComputeExposureSummaryStatsTask
from .find_sources import FindSourcesConfig, FindSourcesTask
from ..core.image import Exposure
from ..calib.match_nearest import match_nearest
from ..measurement.plugins import catalog_plugins
from ..calib.photo_cal import PhotoCalConfig, PhotoCalError, PhotoCalTask
from ..calib.ref_loader import ReferenceObjectLoader
from ..measurement.source_selector import resolve_column
from ..core.table import DetectorVisitIdGenerator

__all__ = ["CalibrateConfig", "CalibrateResult", "CalibrateTask", "with_crowded_field_options"]

#: Fields copied from the characterization catalog (LSST icSourceFieldsToCopy).
IC_SOURCE_FIELDS_TO_COPY = ("calib_psf_candidate", "calib_psf_used", "calib_psf_reserved")


def _default_find_sources() -> FindSourcesConfig:
    return FindSourcesConfig(seed_noise_with_catalog_id=True)


def _apply_only() -> NormalizedCalibrationFluxConfig:
    return NormalizedCalibrationFluxConfig(do_measure_ap_corr=False)


def with_crowded_field_options(config: "CalibrateConfig") -> "CalibrateConfig":
    """``config`` in crowded-field mode (``crowded_field = "on"``): the aperture-excess cut of the zero point's and
    the normalisation's stars, and the normalisation measured again on this catalog."""
    def cut(cfg):
        return cfg.model_copy(update={"aperture_excess": cfg.aperture_excess.model_copy(update={"do_cut": True})})

    ncf = config.normalized_calibration_flux
    return config.model_copy(update={
        "crowded_field": "on", "photo_cal": cut(config.photo_cal),
        "normalized_calibration_flux": ncf.model_copy(update={"do_measure_ap_corr": True,
                                                              "measure_ap_corr": cut(ncf.measure_ap_corr)})})


class CalibrateConfig(BaseModel):
    """Configuration of `CalibrateTask`: LSST ``CalibrateConfig`` names in snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    find_sources: FindSourcesConfig = Field(default_factory=_default_find_sources,
                                            description="detection, sky sources, deblending, measurement")
    normalized_calibration_flux: NormalizedCalibrationFluxConfig = Field(
        default_factory=_apply_only, description="the compensated-tophat normalisation, applied from the "
        "characterisation's map (LSST). Not LSST, on a crowded detector (crowded_field): do_measure_ap_corr = True "
        "measures it again on this catalog's calib_psf_used stars, because the compensated tophat's annulus holds the "
        "faint neighbours that this deeper detection replaces by noise and the characterisation's did not (~1.5 mmag "
        "at 150000 stars/deg^2); where it cannot be measured the characterisation's is applied (a degraded result). "
        "It goes with the source-masked background that characterisation gives a crowded detector: the 12-px "
        "aperture it is measured against is biased by a sky that is too high.")
    crowded_field: CrowdedFieldMode = Field(
        "auto", description="not LSST: crowded-field mode (`visitcal.detection.crowding`). 'auto': the "
        "characterisation's decision (the exposure's CROWDED_FIELD card; not crowded without it); 'on' / 'off': "
        "forced ('off' is LSST's behaviour). In the mode the zero point's and the normalisation's stars pass the "
        "aperture-excess cut and the normalisation is measured again on this catalog.")
    apply_ap_corr: ApplyApCorrConfig = Field(default_factory=ApplyApCorrConfig, description="aperture corrections")
    do_astrometry: bool = Field(True, description="fit the WCS")
    require_astrometry: bool = Field(True, description="a failed astrometry fails the detector")
    astrometry: AstrometryConfig = Field(default_factory=AstrometryConfig, description="astrometry")
    match_radius_pix: float = Field(3.0, gt=0, le=100, description="radius of the characterization-catalog match, px "
                                                                   "At most 100 px.")
    do_photo_cal: bool = Field(True, description="fit the zero point")
    require_photo_cal: bool = Field(True, description="a failed photometric calibration fails the detector")
    photo_cal: PhotoCalConfig = Field(default_factory=PhotoCalConfig, description="photometric calibration")
    compute_summary_stats: ComputeExposureSummaryStatsConfig = Field(
        default_factory=ComputeExposureSummaryStatsConfig, description="summary statistics")


@dataclasses.dataclass
class CalibrateResult:
    """Result of `CalibrateTask.run`, with LSST's attribute names.

    ``output_exposure`` (counts, with psf, ap_corr_map, wcs, photo_calib and summary_stats), ``output_cat``
    (the source catalog), ``output_background`` (the background list, unchanged: this step does not
    re-estimate it), ``astrom_matches`` (`AstrometryResult.matches`, or None), ``output_summary_metrics``
    (dict: match statistics, ``astrom_rms_arcsec`` / ``astrom_n_stars`` / ``astrom_fitter`` / ``astrom_matcher``
    (`AstrometryResult`'s ``rms_arcsec``, ``n_stars``, ``fitter``, ``matcher``), zero point, its error and the
    stars' scatter, counts, ``timings`` in seconds per stage and, when a fallback was used,
    ``degraded_reasons``, a list of str).
    """

    output_exposure: Exposure
    output_cat: Table
    output_background: object
    astrom_matches: Table | None
    output_summary_metrics: dict
    footprints: list = dataclasses.field(default_factory=list)


class CalibrateTask:
    """Calibrate a characterized detector (see the module docstring).

    Parameters
    ----------
    config : `CalibrateConfig`, optional
    ref_obj_loader : `ReferenceObjectLoader`, optional
        The reference catalog for astrometry and photometry; required when either is on.
    """

    ConfigClass = CalibrateConfig
    _DefaultName = "calibrate"

    def __init__(self, config: CalibrateConfig | None = None, *, ref_obj_loader: ReferenceObjectLoader | None = None):
        config = config or CalibrateConfig()
        if config.crowded_field == "on":
            config = with_crowded_field_options(config)
        self.config = c = config
        self._crowded_task: CalibrateTask | None = None
        if (c.do_astrometry or c.do_photo_cal) and ref_obj_loader is None:
            raise ValueError("ref_obj_loader is required for astrometry and photometric calibration")
        self.ref_obj_loader = ref_obj_loader
        self.find_sources = FindSourcesTask(c.find_sources)
        self.normalized_calibration_flux = NormalizedCalibrationFluxTask(c.normalized_calibration_flux)
        self.apply_ap_corr = ApplyApCorrTask(c.apply_ap_corr)
        self.astrometry = AstrometryTask(c.astrometry, ref_obj_loader=ref_obj_loader) if c.do_astrometry else None
        self.photo_cal = PhotoCalTask(c.photo_cal) if c.do_photo_cal else None
        self.compute_summary_stats = ComputeExposureSummaryStatsTask(c.compute_summary_stats)

    def run(self, exposure: Exposure, background=None, ic_source_cat: Table | None = None,
            id_generator: DetectorVisitIdGenerator | None = None) -> CalibrateResult:
        """Calibrate ``exposure`` in place (its mask gains DETECTED; wcs and photo_calib are replaced).

        Parameters
        ----------
        exposure : `Exposure`
            Characterized: background-subtracted, with ``psf`` and ``ap_corr_map``; ``wcs`` is the
            preliminary WCS the astrometric fit starts from; ``visit_info.band`` selects reference fluxes.
        background : `BackgroundList`, optional
            What characterization subtracted; returned as ``output_background``.
        ic_source_cat : `astropy.table.Table`, optional
            The characterization catalog, whose ``calib_psf_*`` flags are copied.
        id_generator : `DetectorVisitIdGenerator`, optional
            Packs source ids and seeds sky sources and noise replacement.

        Raises
        ------
        AstrometryError, PhotoCalError
            When the step fails and is required.
        """
        c = self.config
        if exposure.psf is None:
            raise ValueError("exposure has no PSF: run CharacterizeImageTask first")
        idg = id_generator or DetectorVisitIdGenerator(0, 0)
        crowded = resolve_crowded_field(c.crowded_field, exposure.metadata)
        if crowded and c.crowded_field == "auto":  # the characterisation's decision: the crowded-field options
            if self._crowded_task is None:
                self._crowded_task = CalibrateTask(c.model_copy(update={"crowded_field": "on"}),
                                                   ref_obj_loader=self.ref_obj_loader)
            return self._crowded_task.run(exposure, background, ic_source_cat, id_generator)
        timings: dict[str, float] = {}
        metrics: dict = {"timings": timings, "crowded_field": crowded}

        def timed(stage, fn, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
            return out

        found = timed("find_sources", self.find_sources.run, exposure, id_generator=idg)
        cat = found.sources
        # first: the calib_psf_used stars are those the normalisation is measured on
        timed("copy_ic_source_fields", self._copy_ic_source_fields, cat, ic_source_cat)
        timed("normalized_calibration_flux", self._normalize_calib_flux, exposure, cat, metrics)
        if exposure.ap_corr_map is not None:
            cat = timed("apply_ap_corr", self.apply_ap_corr.run, cat, exposure.ap_corr_map)
            _recompute_extendedness(cat)

        astrom_matches = None
        if self.astrometry is not None:
            try:
                res = timed("astrometry", self.astrometry.run, exposure, cat)
                astrom_matches = res.matches
                metrics["astrom_offset_mean"] = res.match_stats["mean"]
                metrics["astrom_offset_std"] = res.match_stats["std"]
                metrics["astrom_n_matches"] = res.match_stats["n"]
                metrics["astrom_rms_arcsec"] = res.rms_arcsec
                metrics["astrom_n_stars"] = res.n_stars
                metrics["astrom_fitter"] = res.fitter
                metrics["astrom_matcher"] = res.matcher
                metrics["astrom_min_snr"] = res.min_snr
                metrics["astrom_transform"] = res.transform
                if res.fallback_reason:
                    # a documented fallback: matched (and fitted) with sources fainter than the configured cut
                    metrics.setdefault("degraded_reasons", []).append(
                        f"astrometry_faint_sources: matched with the sources above S/N {res.min_snr:g} "
                        f"({res.n_stars} stars in the fit); above S/N {self.astrometry.config.min_snr:g}: "
                        f"{res.fallback_reason}")
            except AstrometryError:
                if c.require_astrometry:
                    raise
                metrics["astrometry_failed"] = True
        if exposure.wcs is not None and "coord_ra" not in cat.colnames:
            update_source_coords(exposure.wcs, cat)

        if self.photo_cal is not None:
            try:
                refs = self.ref_obj_loader.load_pixel_box(exposure.bbox, exposure.wcs, exposure.visit_info.band,
                                                          pixel_margin=0)
                pres = timed("photo_cal", self.photo_cal.run, exposure, cat, refs)
                exposure.photo_calib = pres.photo_calib
                exp_time = exposure.visit_info.exposure_time if exposure.visit_info is not None else math.nan
                md = exposure.metadata
                md["MAGZERO"] = pres.zero_point - 2.5 * math.log10(exp_time) if exp_time > 0 else pres.zero_point
                md["HIERARCH MAGZERO_RMS"] = pres.sigma
                md["HIERARCH MAGZERO_NOBJ"] = pres.ngood
                # not LSST: the error with the stars' excess scatter (PhotoCalResult.error), for the visit summary
                md["HIERARCH MAGZERO_ERR"] = pres.error
                # not LSST: the threshold below which the zero point is not the detector's own (a visit
                # summary replaces it with the visit's zero point; see PhotoCalConfig.min_n_stars)
                md["HIERARCH MAGZERO_MIN_NOBJ"] = int(self.photo_cal.config.min_n_stars)
                for k in (1, 2, 3):
                    md[f"HIERARCH COLORTERM{k}"] = 0.0
                metrics["zero_point"] = pres.zero_point
                metrics["zero_point_err"] = float(pres.photo_calib.calibration_err / pres.photo_calib.calibration_mean
                                                  * 2.5 / math.log(10)) if pres.photo_calib.calibration_mean else math.nan
                metrics["photo_cal_n_good"] = pres.ngood
                metrics["zero_point_scatter"] = pres.scatter
                if pres.degraded:
                    metrics.setdefault("degraded_reasons", []).append(f"photometric calibration: "
                                                                      f"{pres.degraded_reason}")
            except (PhotoCalError, ValueError) as err:
                if c.require_photo_cal or not isinstance(err, PhotoCalError):
                    raise
                metrics["photo_cal_failed"] = True

        if exposure.photo_calib is not None or exposure.wcs is not None:
            # LSST's post-calculation plugins, after calibration (its single_visit_star has them)
            from ..measurement.plugins.catalog_plugins import local_calibration

            for name, values in local_calibration(cat, exposure.photo_calib, exposure.wcs).items():
                cat[name] = values
        stats = timed("summary_stats", self.compute_summary_stats.run, exposure, cat, background)
        exposure.summary_stats = stats
        metrics["summary_stats"] = stats
        return CalibrateResult(output_exposure=exposure, output_cat=cat, output_background=background,
                               astrom_matches=astrom_matches, output_summary_metrics=metrics,
                               footprints=found.footprints)

    def _normalize_calib_flux(self, exposure: Exposure, cat: Table, metrics: dict) -> None:
        """The normalised calibration flux of ``cat``. In measure mode (a crowded detector, crowded_field) the normalisation is measured on
        this catalog and replaces the characterisation's in ``exposure.ap_corr_map``; the flux corrections there,
        measured against the characterisation's calibration flux, are scaled by the ratio of the two
        normalisations' means, so that they stay corrections to this catalog's calibration flux. A normalisation
        that cannot be measured here (no star) leaves the characterisation's, applied, and a degraded reason."""
        cfg = self.config.normalized_calibration_flux
        if not cfg.do_measure_ap_corr:
            self.normalized_calibration_flux.run(exposure=exposure, catalog=cat)
            return
        key = cfg.raw_calibflux_name + "_instFlux"
        apc = exposure.ap_corr_map
        old = apc[key] if apc is not None and key in apc else None
        try:
            res = self.normalized_calibration_flux.run(exposure=exposure, catalog=cat)
        except MeasureApCorrError as err:
            if old is None:
                raise
            NormalizedCalibrationFluxTask(cfg.model_copy(update={"do_measure_ap_corr": False})).run(
                exposure=exposure, catalog=cat)
            metrics.setdefault("degraded_reasons", []).append(
                f"calibration flux normalisation: the characterisation's, not measured again ({err})")
            return
        if res.degraded_reason:
            metrics.setdefault("degraded_reasons", []).append(f"calibration flux normalisation: {res.degraded_reason}")
        if apc is None:
            exposure.ap_corr_map = apc = ApCorrMap()
        new = res.ap_corr_map[key]
        if old is not None and old.mean() > 0:
            ratio = new.mean() / old.mean()
            metrics["calib_flux_normalization_change"] = ratio
            for name in list(apc):
                if name.endswith("_instFlux") and name != key:
                    apc[name] = apc[name] * ratio
        for name in res.ap_corr_map:
            apc[name] = res.ap_corr_map[name]

    def _copy_ic_source_fields(self, cat: Table, ic: Table | None) -> None:
        """As LSST's ``CalibrateTask.copyIcSourceFields``: each characterization source takes its nearest
        target within ``match_radius_pix``; targets are the non-sky sources with ``deblend_nChild == 0`` (a
        deblended parent is not a target, its children are); the target gains ``calib_detected`` and the
        ``calib_psf_*`` flags."""
        n = len(cat)
        cat["calib_detected"] = np.zeros(n, bool)
        for name in IC_SOURCE_FIELDS_TO_COPY:
            cat[name] = np.zeros(n, bool)
        if ic is None or len(ic) == 0 or n == 0:
            return
        x = np.asarray(cat[resolve_column(cat, "slot_Centroid_x")], np.float64)
        y = np.asarray(cat[resolve_column(cat, "slot_Centroid_y")], np.float64)
        target = np.isfinite(x) & np.isfinite(y)
        if "deblend_nChild" in cat.colnames:
            target &= np.asarray(cat["deblend_nChild"]) == 0
        if "sky_source" in cat.colnames:
            target &= ~np.asarray(cat["sky_source"], bool)
        rows = np.flatnonzero(target)
        ix = np.asarray(ic[resolve_column(ic, "slot_Centroid_x")], np.float64)
        iy = np.asarray(ic[resolve_column(ic, "slot_Centroid_y")], np.float64)
        ok = np.isfinite(ix) & np.isfinite(iy)
        ic_rows = np.flatnonzero(ok)
        m = match_nearest(ix[ic_rows], iy[ic_rows], x[rows], y[rows], float(self.config.match_radius_pix))
        i1, i2, _ = m.pairs()
        src_rows = rows[i2]
        ic_idx = ic_rows[i1]
        cat["calib_detected"][src_rows] = True
        for name in IC_SOURCE_FIELDS_TO_COPY:
            if name in ic.colnames:
                vals = np.asarray(ic[name], bool)[ic_idx]
                col = np.asarray(cat[name])
                col[src_rows] = vals
                cat[name] = col


def _recompute_extendedness(cat: Table) -> None:
    """catalogCalculation after the aperture corrections: the flux-ratio extendedness depends on them."""
    need = ("base_PsfFlux_instFlux", "base_PsfFlux_flag", "base_GaussianFlux_instFlux", "base_GaussianFlux_flag")
    if all(c in cat.colnames for c in need) and "base_ClassificationExtendedness_value" in cat.colnames:
        cols = catalog_plugins.classification_extendedness(
            np.asarray(cat["base_PsfFlux_instFlux"], np.float64), np.asarray(cat["base_PsfFlux_flag"], bool),
            np.asarray(cat["base_GaussianFlux_instFlux"], np.float64), np.asarray(cat["base_GaussianFlux_flag"], bool))
        for k, v in cols.items():
            cat[k] = v
