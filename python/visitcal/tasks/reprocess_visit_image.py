"""`ReprocessVisitImageTask`: the final calibrated visit image and its source catalog (LSST drp_tasks'
``ReprocessVisitImageTask``, which makes the DRP's ``visit_image`` and ``source`` tables; ``run()`` takes
LSST's argument names and returns LSST's result attribute names).

Steps of `ReprocessVisitImageTask.run`, in the order of LSST's:

0. with ``do_use_sky_corr``, the ``sky_corr`` layers appended to the background;
1. snap combination (one or two snaps: images and variances summed, masks OR-ed, exposure time summed; more
   than two snaps or snaps of different boxes are a `ValueError` naming them);
2. the preliminary background subtracted (a background of another box is a `ValueError`); with
   ``remove_initial_photo_calib`` (background in nJy) the snaps are first calibrated with
   ``initial_photo_calib``, and after the subtraction divided by its calibration mean (back to counts);
3. ``psf``, ``ap_corr_map``, ``wcs`` and ``photo_calib`` attached (from the visit summary);
4. cosmic-ray repair with the PSF;
5. `FindSourcesTask`: detection at 5 sigma (the background is not re-estimated), sky sources, deblending,
   measurement, primary flags;
6. the normalized calibration flux (apply only: ``base_NormalizedCompensatedTophatFlux`` = ``slot_CalibFlux``),
   the aperture corrections, the flux-ratio extendedness recomputed on the corrected fluxes; ``visit`` and
   ``detector`` columns;
7. the cross-match to the calib sources (finalize's ``refit_psf_star``) within ``calib_match_radius`` =
   0.2 arcsec, a true angle on the sky (a departure: LSST's ``_match_calib_sources`` appears to pass radians
   to a matcher that expects degrees, which makes its effective radius about 11.5 arcsec), copying
   ``calib_psf_candidate/used/reserved`` from each calib star to its nearest source; then
   ``base_LocalPhotoCalib(Err)`` and ``base_LocalWcs_CDMatrix_*`` (radians per pixel) at each centroid;
8. summary statistics (`ComputeExposureSummaryStatsTask`, as LSST's but without the treecorr rho
   statistics, with magLim / effTime from the exposure's GAIN and RDNOISE cards);
9. the image and variance calibrated to nJy, an identity PhotoCalib, ``BUNIT = 'nJy'``; the catalog's
   ``_flux`` / ``_fluxErr`` / ``_mag`` / ``_magErr`` columns from the PhotoCalib.

Between steps 1 and 2 the ``copy_mask_planes`` (SPIKE) of ``preliminary_mask`` are OR-ed into the mask. Not built:
the optional flat-ratio step (``do_apply_flat_background_ratio``, ComCam only), Kron fluxes and HSM moments
(``base_SdssShape`` stands in), the treecorr rho statistics (NaN in LSST too).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from ..measurement.apply_ap_corr import ApplyApCorrConfig, ApplyApCorrTask, NormalizedCalibrationFluxConfig, NormalizedCalibrationFluxTask
from ..detection.background import BackgroundList
from .calibrate import _recompute_extendedness
from .compute_exposure_summary_stats import ComputeExposureSummaryStatsConfig, ComputeExposureSummaryStatsTask
from ..detection.cosmic_rays import RepairConfig, RepairTask
from .find_sources import FindSourcesConfig, FindSourcesTask
from ..core.image import Exposure
from ..calib.match_nearest import match_nearest_sky
from ..core.photocalib import PhotoCalib
from ..detection.snap_combine import combine_snaps
from ..core.table import DetectorVisitIdGenerator

__all__ = ["ReprocessVisitImageConfig", "ReprocessVisitImageResult", "ReprocessVisitImageTask"]

#: Fields copied from the calib sources (LSST ``calib_source_fields_to_copy``).
CALIB_SOURCE_FIELDS = ("calib_psf_candidate", "calib_psf_used", "calib_psf_reserved")


def _apply_only() -> NormalizedCalibrationFluxConfig:
    return NormalizedCalibrationFluxConfig(do_measure_ap_corr=False)


class ReprocessVisitImageConfig(BaseModel):
    """Configuration of `ReprocessVisitImageTask`: LSST's ``ReprocessVisitImageConfig`` defaults, snake_case.

    Detection does not re-estimate the background, and the normalized calibration flux is applied from the
    ap-corr map, never measured, as in LSST.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    snap_combine_bad_mask_planes: tuple[str, ...] = Field((), description="snap combination: pixels of a snap "
                                                          "with these planes are left out of the sum (LSST "
                                                          "snapCombine badMaskPlanes; none by default)")
    do_repair: bool = Field(True, description="repair cosmic rays")
    repair: RepairConfig = Field(default_factory=RepairConfig, description="cosmic-ray repair")
    find_sources: FindSourcesConfig = Field(default_factory=FindSourcesConfig,
                                            description="detection (5 sigma), sky sources, deblending, measurement")
    normalized_calibration_flux: NormalizedCalibrationFluxConfig = Field(
        default_factory=_apply_only, description="the compensated-tophat normalisation, applied from the map")
    apply_ap_corr: ApplyApCorrConfig = Field(default_factory=ApplyApCorrConfig, description="aperture corrections")
    calib_match_radius: float = Field(0.2, gt=0, le=60, description="radius of the calib-source cross-match, arcsec "
                                                                    "At most 60 arcsec.")
    remove_initial_photo_calib: bool = Field(False, description="the snaps are in counts and the background in the "
                                             "units of initial_photo_calib (nJy): calibrate the snaps with it, "
                                             "subtract the background, then divide by its calibration mean back to "
                                             "counts (LSST remove_initial_photo_calib; off in the DRP pipeline)")
    do_calibrate_pixels: bool = Field(True, description="calibrate the image and variance to nJy")
    do_use_sky_corr: bool = Field(False, description="subtract the sky-correction layers (``sky_corr``) after the "
                                  "preliminary background's (LSST do_use_sky_corr; True in the DRP-full "
                                  "pipeline)")
    copy_mask_planes: tuple[str, ...] = Field(("SPIKE",), description="planes OR-ed from the preliminary mask "
                                              "into the combined snaps' mask (LSST copyMaskPlanes)")
    compute_summary_stats: ComputeExposureSummaryStatsConfig = Field(
        default_factory=ComputeExposureSummaryStatsConfig, description="summary statistics")


@dataclasses.dataclass
class ReprocessVisitImageResult:
    """Result of `ReprocessVisitImageTask.run`, with LSST's attribute names.

    ``exposure`` (image in nJy, variance in nJy^2, identity PhotoCalib, ``BUNIT = 'nJy'``), ``sources`` (the
    calibrated catalog), ``sources_footprints`` (the footprints, aligned with the rows of ``sources``),
    ``background`` (the subtracted background as given: in counts, or in the initial calibration's nJy with
    ``remove_initial_photo_calib``) and ``timings`` (seconds per stage).
    """

    exposure: Exposure
    sources: Table
    sources_footprints: list
    background: object
    timings: dict = dataclasses.field(default_factory=dict)


class ReprocessVisitImageTask:
    """Reprocess one detector of a visit (see the module docstring)."""

    ConfigClass = ReprocessVisitImageConfig
    _DefaultName = "reprocessVisitImage"

    def __init__(self, config: ReprocessVisitImageConfig | None = None):
        self.config = config or ReprocessVisitImageConfig()
        c = self.config
        self.repair = RepairTask(c.repair)
        self.find_sources = FindSourcesTask(c.find_sources)
        self.normalized_calibration_flux = NormalizedCalibrationFluxTask(c.normalized_calibration_flux)
        self.apply_ap_corr = ApplyApCorrTask(c.apply_ap_corr)
        self.compute_summary_stats = ComputeExposureSummaryStatsTask(c.compute_summary_stats)

    def run(self, *, exposures, initial_photo_calib=None, psf, background, ap_corr, photo_calib, wcs,
            calib_sources: Table | None = None, id_generator: DetectorVisitIdGenerator | None = None,
            result=None, preliminary_mask=None, sky_corr=None) -> ReprocessVisitImageResult:
        """Reprocess the snaps of one detector.

        Parameters
        ----------
        exposures : `Exposure` or sequence of one or two
            The post-ISR snaps (counts).
        initial_photo_calib : `PhotoCalib`, optional
            With ``remove_initial_photo_calib``: the calibration the background carries (nJy per count); the
            snaps (counts) are calibrated with it before the background is subtracted, and the result is
            divided by its ``calibration_mean``.
        psf, ap_corr, wcs, photo_calib
            The detector's calibrations (`visitcal.tasks.update_visit_summary.calibrations_for`).
        background : `BackgroundList`
            The preliminary background, subtracted.
        calib_sources : `astropy.table.Table`, optional
            finalize's star table rows of this detector (``coord_ra``/``coord_dec`` in radians and the
            ``calib_psf_*`` flags).
        id_generator : `DetectorVisitIdGenerator`, optional
        result : ignored (LSST's in-place result struct)
        preliminary_mask : `Mask`, optional
            calibrate's mask of this detector (LSST's ``preliminary_mask`` input): its ``copy_mask_planes``
            (SPIKE) bits are OR-ed into the combined snaps' mask. Keyword-only and optional.
        sky_corr : `BackgroundList`, optional
            With ``do_use_sky_corr``: the sky-correction layers (LSST's ``skyCorr``), appended to
            ``background``; the result's ``background`` is the concatenation. Keyword-only and optional.

        Returns
        -------
        result : `ReprocessVisitImageResult`
            The calibrated exposure (its ``summary_stats`` set), the catalog, its footprints and the
            background.

        Raises
        ------
        ValueError
            Bad snaps (count, boxes), a background or preliminary mask of another box; missing calibrations;
            ``do_use_sky_corr`` without ``sky_corr``.
        """
        for name, value in (("psf", psf), ("ap_corr", ap_corr), ("photo_calib", photo_calib), ("wcs", wcs)):
            if value is None:
                raise ValueError(f"{name} is None: the detector's visit-summary row lacks it")
        timings: dict[str, float] = {}
        clock = [time.perf_counter()]

        def lap(stage):
            now = time.perf_counter()
            timings[stage] = timings.get(stage, 0.0) + now - clock[0]
            clock[0] = now

        snaps = [exposures] if isinstance(exposures, Exposure) else list(exposures)
        exposure = combine_snaps(snaps, self.config.snap_combine_bad_mask_planes)
        if preliminary_mask is not None:
            self._copy_mask_planes(exposure, preliminary_mask)
        if self.config.do_use_sky_corr:
            if sky_corr is None:
                raise ValueError("do_use_sky_corr is set but sky_corr is None")
            background = BackgroundList(list(background or []) + list(sky_corr))
        if self.config.remove_initial_photo_calib:
            # As LSST's remove_initial_photo_calib (drp_tasks ReprocessVisitImageTask): the snaps are in counts
            # and the background in the initial calibration's units (nJy). Calibrate the combined snaps with
            # the initial PhotoCalib (image * c(x, y), variance * c**2), subtract the background there, then
            # divide by the initial calibration mean to return to (flattened) counts.
            if initial_photo_calib is None:
                raise ValueError("remove_initial_photo_calib is set but initial_photo_calib is None")
        if background is not None:
            for k, layer in enumerate(background):
                if layer.bbox != exposure.bbox:
                    raise ValueError(f"background: layer {k} was fitted on {layer.bbox!r}, the exposure is "
                                     f"{exposure.bbox!r}")
        if self.config.remove_initial_photo_calib:
            initial_photo_calib.calibrate_image_in_place(exposure.masked_image)
        if background is not None:
            background.subtract_from(exposure.image, bbox=exposure.bbox)
        if self.config.remove_initial_photo_calib:
            mean = float(initial_photo_calib.calibration_mean)
            exposure.image[...] /= np.float32(mean)
            exposure.variance[...] /= np.float32(mean * mean)
        exposure.psf, exposure.ap_corr_map, exposure.wcs, exposure.photo_calib = psf, ap_corr, wcs, photo_calib
        lap("snaps_and_background")
        if self.config.do_repair:
            self.repair.run(exposure, psf)
        lap("repair")
        idg = id_generator or DetectorVisitIdGenerator(0, 0)
        found = self.find_sources.run(exposure, id_generator=idg)
        cat = found.sources
        lap("find_sources")
        self.normalized_calibration_flux.run(exposure=exposure, catalog=cat)
        cat = self.apply_ap_corr.run(cat, ap_corr)
        _recompute_extendedness(cat)
        n = len(cat)
        cat["visit"] = np.full(n, idg.visit, np.int64)
        cat["detector"] = np.full(n, idg.detector, np.int16)
        self._match_calib_sources(cat, calib_sources)
        _post_calculations(cat, photo_calib, wcs)
        lap("ap_corr_and_calib_match")
        stats = self.compute_summary_stats.run(exposure, cat, background)
        lap("summary_stats")
        if self.config.do_calibrate_pixels:
            cat = photo_calib.calibrate_catalog(cat)
            photo_calib.calibrate_image_in_place(exposure.masked_image)
            exposure.photo_calib = PhotoCalib(1.0, photo_calib.calibration_err, bbox=exposure.bbox)
            exposure.metadata["BUNIT"] = "nJy"
        lap("calibrate_to_njy")
        exposure.summary_stats = stats
        return ReprocessVisitImageResult(exposure=exposure, sources=cat, sources_footprints=found.footprints,
                                         background=background, timings=timings)

    def _copy_mask_planes(self, exposure: Exposure, preliminary_mask) -> None:
        """As LSST's copyMaskPlanes step: OR the preliminary mask's ``copy_mask_planes`` bits into the
        exposure's mask (planes the preliminary mask lacks are skipped; planes the exposure lacks are
        added)."""
        if preliminary_mask.shape != exposure.mask.shape:
            raise ValueError(f"preliminary_mask has shape {preliminary_mask.shape}, the exposure "
                             f"{exposure.mask.shape}")
        names = [name for name in self.config.copy_mask_planes if name in preliminary_mask.planes]
        for name in names:
            if name not in exposure.mask.planes:
                exposure.mask.add_plane(name, preliminary_mask.planes.description(name))
        rows = 256  # a band at a time: no whole-detector temporaries (81 MB per plane for a 4k detector)
        for y0 in range(0, exposure.mask.shape[0], rows):
            band, prelim = exposure.mask[y0:y0 + rows], preliminary_mask[y0:y0 + rows]
            for name in names:
                band.set(name, prelim.test(name))

    def _match_calib_sources(self, cat: Table, calib: Table | None) -> None:
        """As LSST's ``_match_calib_sources``: each calib star's nearest new source within
        ``calib_match_radius`` arcsec (a true angle on the sky; see the module docstring) takes its
        ``calib_psf_*`` flags; every other source has them False, as the placeholders
        ``calib_photometry_used/reserved`` and ``calib_astrometry_used/reserved`` always are."""
        n = len(cat)
        for name in CALIB_SOURCE_FIELDS + ("calib_photometry_used", "calib_photometry_reserved",
                                           "calib_astrometry_used", "calib_astrometry_reserved"):
            cat[name] = np.zeros(n, bool)
        if calib is None or len(calib) == 0 or n == 0:
            return
        ra, dec = np.degrees(np.asarray(cat["coord_ra"], np.float64)), np.degrees(np.asarray(cat["coord_dec"], np.float64))
        cra = np.degrees(np.asarray(calib["coord_ra"], np.float64))
        cdec = np.degrees(np.asarray(calib["coord_dec"], np.float64))
        rows = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
        ok = np.flatnonzero(np.isfinite(cra) & np.isfinite(cdec))
        m = match_nearest_sky(cra[ok], cdec[ok], ra[rows], dec[rows], float(self.config.calib_match_radius))
        first, second, _ = m.pairs()
        for name in CALIB_SOURCE_FIELDS:
            if name in calib.colnames:
                col = np.asarray(cat[name]).copy()
                col[rows[second]] = np.asarray(calib[name], bool)[ok[first]]
                cat[name] = col


def _post_calculations(cat: Table, photo_calib, wcs) -> None:
    """LSST's post-calculation plugins (`visitcal.measurement.plugins.catalog_plugins.local_calibration`):
    ``base_LocalPhotoCalib(Err)`` and ``base_LocalWcs_CDMatrix_*`` at each centroid."""
    from ..measurement.plugins.catalog_plugins import local_calibration

    for name, values in local_calibration(cat, photo_calib, wcs).items():
        cat[name] = values


def magnitude_offset_mmag(measured_njy, true_njy) -> float:
    """Median of ``-2.5 log10(measured / true)`` in mmag (a helper of the tests and benches)."""
    r = np.asarray(measured_njy, np.float64) / np.asarray(true_njy, np.float64)
    r = r[np.isfinite(r) & (r > 0)]
    return 1000.0 * float(np.median(-2.5 * np.log10(r))) if r.size else math.nan
