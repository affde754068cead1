"""Characterise one exposure: background, cosmic rays, a PSF model and the aperture corrections (pipe_tasks'
legacy ``CharacterizeImageTask``, the step `CalibrateTask` assumes has run, with the PSF-normalised
calibration flux that pipe_tasks' ``CalibrateImageTask`` measures).

`CharacterizeImageTask.run` on a post-ISR exposure (counts), in place:

1. **Background**: fit and subtract (`SubtractBackgroundTask`), appended to ``background``; then, not LSST, the
   **crowded-field decision** (``crowded_field``, `visitcal.detection.crowding`): the fraction of the pixels inside
   a plain 5-sigma detection's footprints against ``crowded_field_threshold`` ("auto"; "on" / "off" force it). A
   crowded detector is characterised with `with_crowded_field_options` (the background fitted again from the same
   pixels, source-masked; the aperture-excess cut of the aperture corrections' and the normalisation's stars); the
   decision, the measure and the threshold go to ``metadata`` (``crowded_field``, ``crowding``,
   ``crowding_threshold``) and to the exposure's metadata cards (``CROWDED_FIELD``, ``CROWDING``,
   ``CROWDING_THRESHOLD``), which calibration and finalize follow. A mode, not a fallback: not degraded.
2. **Simple PSF**: a round Gaussian of FWHM ``install_simple_psf.fwhm`` (px) at the detector centre,
   unless the exposure has a PSF and ``use_simple_psf`` is off.
3. ``psf_iterations`` (2) times, each with the PSF of the previous one:

   a. **repair** cosmic rays with ``keep_crs`` (masked CR, pixels left alone: a CR with a wrong PSF must not
      eat a star's core);
   b. **detect** bright sources (5 sigma with peaks above 10x that, LSST's characterisation defaults) and
      refit the background with the detections masked (``do_re_estimate_background``, a new layer);
   c. **deblend**, **measure** (centroid, adaptive moments, PSF, Gaussian, aperture and compensated-tophat
      fluxes, pixel flags);
   d. **select stars** (`ObjectSizeStarSelectorTask`), cut **PSF candidates** (`make_psf_candidates`), keep
      ``reserve_fraction`` of them out of the fit (seeded by the catalog id), and fit the **PCA PSF**
      (`PcaPsfDeterminer`); the model becomes the exposure's PSF.

   The first iteration measures the PSF from a Gaussian guess, the second from the PCA model's own
   detections and moments, which is how the FWHM is found without being known.

   **Fainter stars** (``do_faint_psf_fallback``, not LSST): when the configured cuts leave fewer non-reserved
   candidates than a linear PSF needs (3 x the determiner's ``min_stars_per_parameter``; a constant's count for
   a configured order 0), or their PSF fails at every order, the iteration detects again on the same pixels
   keeping every peak above ``min_snr_fallback`` (10) sigma, selects stars by S/N > ``min_snr_fallback``
   instead of the configured limit (S/N > 50 by default; the locus as the smallest tight width group: among
   faint sources the galaxies outnumber the stars), and fits the PSF on them as a constant (spatial order 0;
   the PCA weighting its stars by S/N). The catalog is then the fainter detection's; ``metadata["psf_min_snr"]``
   and a ``psf_faint_stars: ...`` degraded reason say so. The next iteration starts from the fainter cuts. A
   u-band detector at the default star density (2-4 stars above S/N 50, 8-14 above S/N 10) then gets a PSF
   within ~1% of the truth where the configured cuts gave none.
4. **Final repair**: cosmic rays found with the final PSF are interpolated over.
5. **Re-measure** the last iteration's sources with the final PSF.
6. **Aperture corrections**: the normalisation of ``base_CompensatedTophatFlux_12`` onto the 12-px
   aperture (`NormalizedCalibrationFluxTask`, measure mode; slot_CalibFlux then points to
   ``base_NormalizedCompensatedTophatFlux``), `MeasureApCorrTask` on the ``calib_psf_used`` stars (S/N > 200,
   no unresolved cut), the two maps merged into ``exposure.ap_corr_map`` (the normalisation entry is carried
   forward by calibration and reprocessing), then `ApplyApCorrTask` and the flux-ratio extendedness again.

The PSF determiners check their models and step the spatial order down when the stars are too few for
it (`visitcal.psf.determiner.fit_with_order_step_down`); a PSF of a lower order than configured, or from the
fainter-star fallback, is a degraded result, named in ``metadata["degraded_reasons"]``.

Failures are typed and propagate: `visitcal.psf.determiner.PsfTooFewStarsError` (with a note saying how
many stars the selector and the candidate cut left, in which iteration), `MeasureApCorrError`,
`visitcal.detection.cosmic_rays.TooManyCosmicRaysError`, `CharacterizeImageError` (a PSF with a NaN size).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Literal

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from ..core.apcorr import ApCorrMap
from ..measurement.apply_ap_corr import (
    ApplyApCorrConfig,
    ApplyApCorrTask,
    NormalizedCalibrationFluxConfig,
    NormalizedCalibrationFluxTask,
)
from ..detection.background import BackgroundConfig, BackgroundList, SubtractBackgroundTask, make_background
from ..detection.cosmic_rays import RepairConfig, RepairTask
from ..detection.crowding import CrowdedFieldMode, is_crowded, measure_crowding, write_crowding_metadata
from ..measurement.deblend import SourceDeblendConfig, SourceDeblendTask
from ..detection.detection import SourceDetectionConfig, SourceDetectionTask
from ..core.footprint import FootprintSet
from ..core.image import Exposure
from ..measurement.plugins import catalog_plugins
from ..measurement.measure_ap_corr import MeasureApCorrConfig, MeasureApCorrTask, default_ap_corr_selector
from ..measurement.object_size_star_selector import ObjectSizeStarSelectorConfig, ObjectSizeStarSelectorTask
from ..psf.pca import PcaPsfDeterminer, PcaPsfDeterminerConfig
from ..psf.models import GaussianPsf
from ..psf.candidates import PsfCandidatesConfig, make_psf_candidates
from ..psf.pixel_grid import PixelGridPsfDeterminer, PixelGridPsfDeterminerConfig
from ..psf.determiner import PsfDeterminerError, n_spatial_terms
from ..measurement.single_frame_measurement import SingleFrameMeasurementConfig, SingleFrameMeasurementTask
from ..core.table import DetectorVisitIdGenerator

__all__ = [
    "CharacterizeImageConfig",
    "CharacterizeImageError",
    "CharacterizeImageResult",
    "CharacterizeImageTask",
    "InstallGaussianPsfConfig",
    "with_crowded_field_options",
]

log = logging.getLogger(__name__)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: The measurement characterisation needs: PSF stars, their moments, the fluxes whose aperture
#: corrections are measured and the calibration flux (LSST's characterisation runs the default list;
#: the sky/focal-plane columns and the local background/variance are left to calibration).
CHARACTERIZE_PLUGINS = (
    "base_PixelFlags",
    "base_SdssCentroid",
    "base_SdssShape",
    "base_GaussianFlux",
    "base_PsfFlux",
    "base_CircularApertureFlux",
    "base_CompensatedTophatFlux",
    "base_ClassificationSizeExtendedness",
    "base_FootprintArea",
    "base_ClassificationExtendedness",
)


class CharacterizeImageError(RuntimeError):
    """Characterisation produced an unusable result (e.g. a PSF whose size is NaN)."""


class InstallGaussianPsfConfig(BaseModel):
    """The initial PSF (LSST InstallGaussianPsfTask)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fwhm: float = Field(4.0, gt=0, le=100, description="FWHM of the Gaussian, px (CalibrateImageTask's 4 px). At "
                                                       "most 100 px: it sizes the PSF's images.")


#: The crowded-field background's source masking (`BackgroundConfig.source_mask_threshold`, sigma): at 150 000
#: stars/deg^2 it brings LSST's sky, 0.6 ADU high, to within 0.05 ADU of the truth.
CROWDED_SOURCE_MASK_THRESHOLD = 3.0


def _with_cut(mac: MeasureApCorrConfig) -> MeasureApCorrConfig:
    return mac.model_copy(update={"aperture_excess": mac.aperture_excess.model_copy(update={"do_cut": True})})


def with_crowded_field_options(config: "CharacterizeImageConfig") -> "CharacterizeImageConfig":
    """``config`` in crowded-field mode (``crowded_field = "on"``): the source-masked background (unless one is
    configured already) and the aperture-excess cut of the aperture corrections' and the normalisation's stars."""
    bg = config.background
    if bg.source_mask_threshold is None:
        bg = bg.model_copy(update={"source_mask_threshold": CROWDED_SOURCE_MASK_THRESHOLD})
    ncf = config.normalized_calibration_flux
    return config.model_copy(update={
        "crowded_field": "on", "background": bg, "measure_ap_corr": _with_cut(config.measure_ap_corr),
        "normalized_calibration_flux": ncf.model_copy(update={"measure_ap_corr": _with_cut(ncf.measure_ap_corr)})})


def _default_detection() -> SourceDetectionConfig:
    return SourceDetectionConfig(threshold_value=5.0, include_threshold_multiplier=10.0)


def _default_measurement() -> SingleFrameMeasurementConfig:
    return SingleFrameMeasurementConfig(plugins=CHARACTERIZE_PLUGINS)


def _default_measure_ap_corr() -> MeasureApCorrConfig:
    sel = default_ap_corr_selector()
    sel = sel.model_copy(update={"do_unresolved": False,
                                 "flags": sel.flags.model_copy(update={"good": ("calib_psf_used",)})})
    return MeasureApCorrConfig(source_selector=sel)


class CharacterizeImageConfig(BaseModel):
    """Configuration of `CharacterizeImageTask` (LSST CharacterizeImageConfig names in snake_case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_subtract_background: bool = Field(True, description="Fit and subtract a background first.")
    background: BackgroundConfig = Field(
        default_factory=BackgroundConfig, description="Background model (LSST's: a clipped mean of the pixels "
        "outside DETECTED). A crowded detector (crowded_field) gets background.source_mask_threshold = 3 (not LSST: "
        "iterative source masking, `visitcal.detection.background`): at 150000 stars/deg^2 LSST's sky is 0.6 ADU "
        "high (noise 16 ADU) and the isolated stars' PSF fluxes 1.6 mmag faint; with it, 0.05 ADU and 0.1 mmag. "
        "Not on sparse detectors: there the right sky trips finalize's order-2 PSF corner checks on some small "
        "test detectors (bench/README.md, issue 21).")
    crowded_field: CrowdedFieldMode = Field(
        "auto", description="Not LSST: crowded-field mode (`visitcal.detection.crowding`). 'auto': on when the "
        "detector's detected fraction (the fraction of its pixels inside a plain 5-sigma detection's footprints, "
        "measured after the first background fit) exceeds crowded_field_threshold; 'on' / 'off': forced ('off' is "
        "LSST's behaviour). In the mode the background is source-masked (source_mask_threshold 3), the aperture "
        "corrections' and the normalisation's stars pass the aperture-excess cut, and the decision is written to "
        "the exposure's metadata (CROWDED_FIELD, CROWDING, CROWDING_THRESHOLD), which calibration (the zero point's "
        "cut, the normalisation measured again) and finalize (its aperture corrections' cut) follow.")
    crowded_field_threshold: float = Field(
        0.08, gt=0.0, lt=1.0, description="The detected fraction above which crowded_field 'auto' is on. Measured: "
        "0.010-0.027 on the matrix's sparse and default rows (6000 stars/deg^2), 0.051-0.067 on the test "
        "repositories at 60000 stars/deg^2 with 60-s exposures (where the source-masked background trips PSF "
        "checks), 0.096-0.109 at 150000 stars/deg^2 (the crowded row, where the mode is needed).")
    do_re_estimate_background: bool = Field(True, description="After each detection, fit the residual "
                                            "background with the sources masked and subtract it (a new layer).")
    use_simple_psf: bool = Field(True, description="Start from the Gaussian even if the exposure has a PSF.")
    install_simple_psf: InstallGaussianPsfConfig = Field(default_factory=InstallGaussianPsfConfig,
                                                         description="The initial Gaussian PSF.")
    psf_iterations: int = Field(2, ge=1, le=10, description="Detect-measure-fit passes (LSST psfIterations). At most "
                                                            "10 (each is a detect-measure-fit pass).")
    repair: RepairConfig = Field(default_factory=RepairConfig, description="Cosmic-ray repair.")
    detection: SourceDetectionConfig = Field(default_factory=_default_detection, description="Detection of "
                                             "bright sources (5 sigma, peaks above 50 sigma).")
    do_deblend: bool = Field(True, description="Deblend multi-peak footprints.")
    deblend: SourceDeblendConfig = Field(default_factory=SourceDeblendConfig, description="Deblender.")
    measurement: SingleFrameMeasurementConfig = Field(default_factory=_default_measurement,
                                                      description="Measurement plugins and slots.")
    star_selector: ObjectSizeStarSelectorConfig = Field(default_factory=ObjectSizeStarSelectorConfig,
                                                        description="PSF star selection (objectSize).")
    psf_candidates: PsfCandidatesConfig = Field(default_factory=PsfCandidatesConfig, description="PSF stamps.")
    psf_determiner_name: Literal["pca", "pixelgrid"] = Field(
        "pca", description="The PSF determiner: 'pca' (the default here) or 'pixelgrid' (Piff's model, "
                           "which LSST's CalibrateImageTask now uses). On a 4072 x 4000 simulated detector with ~40 PSF "
                           "stars the PCA model kept one component (a constant PSF) and was 1.4% too large at the "
                           "centre; the pixel grid at order 2 was within 0.4% everywhere.")
    psf_determiner: PcaPsfDeterminerConfig = Field(default_factory=PcaPsfDeterminerConfig,
                                                   description="The PCA PSF determiner.")
    pixel_grid_psf_determiner: PixelGridPsfDeterminerConfig = Field(
        default_factory=PixelGridPsfDeterminerConfig, description="The pixel-grid determiner (psf_determiner_name "
                                                                  "'pixelgrid'), LSST's Piff settings.")
    reserve_fraction: float = Field(0.0, ge=0, lt=1, description="Fraction of the PSF candidates kept out of "
                                    "the fit (calib_psf_reserved), drawn with RandomState(catalog id).")
    do_ap_corr: bool = Field(True, description="Measure and apply aperture corrections.")
    normalized_calibration_flux: NormalizedCalibrationFluxConfig = Field(
        default_factory=NormalizedCalibrationFluxConfig, description="Compensated-tophat normalisation (measured).")
    measure_ap_corr: MeasureApCorrConfig = Field(default_factory=_default_measure_ap_corr,
                                                 description="Aperture corrections, on the calib_psf_used stars.")
    apply_ap_corr: ApplyApCorrConfig = Field(default_factory=ApplyApCorrConfig, description="Applying them.")
    do_faint_psf_fallback: bool = Field(
        True, description="Not LSST: when the configured cuts (detection peaks above threshold_value x "
        "include_threshold_multiplier sigma, the star selector's flux or S/N limit) leave fewer PSF candidates than "
        "a linear PSF needs (3 x the determiner's min_stars_per_parameter; 1 x for a configured order 0), or their "
        "PSF fails at every order, detect and select again down to min_snr_fallback and fit the PSF on the larger "
        "set; the detector is then degraded ('psf_faint_stars: ...'). A field with enough bright stars keeps the "
        "configured cuts.")
    min_snr_fallback: float = Field(
        10.0, ge=5.0, le=1000.0, description="The fainter-star fallback's floor: detection peaks above this many "
        "sigma and star-selector S/N (source_flux_field) above it, in place of the configured S/N or flux limit. "
        "Bounded below by the 5-sigma detection threshold: fainter stars add noise, not information, to a PSF model.")


@dataclasses.dataclass
class CharacterizeImageResult:
    """What `CharacterizeImageTask.run` returns (LSST's names in snake_case).

    Attributes
    ----------
    exposure : `Exposure`
        The input, background-subtracted and repaired, with the PCA PSF and the ap-corr map.
    source_cat : astropy.table.Table
        The bright sources measured with the final PSF, aperture-corrected, with ``calib_psf_candidate``,
        ``calib_psf_used``, ``calib_psf_reserved`` and ``apcorr_*_used``.
    footprints : list
        Aligned with ``source_cat``.
    background : `BackgroundList`
        The layers subtracted (the input's, then the new ones).
    metadata : dict
        Per iteration the star counts and the determiner's metadata, the ap-corr measurement's
        metadata, ``timings`` (seconds per stage), ``psf_spatial_order`` (of the final PSF) and, when a
        documented fallback was used (a PSF of a lower spatial order than configured, an aperture correction of
        lower order or from fainter stars, the normalisation's median ratio), ``degraded_reasons`` (a list of
        str): the detector is then ``degraded``, not ``ok``.
    """

    exposure: Exposure
    source_cat: Table
    footprints: list
    background: BackgroundList
    metadata: dict


class CharacterizeImageTask:
    """Characterise an exposure (see the module docstring).

    Parameters
    ----------
    config : `CharacterizeImageConfig`, optional
    """

    ConfigClass = CharacterizeImageConfig
    _DefaultName = "characterizeImage"

    def __init__(self, config: CharacterizeImageConfig | None = None):
        config = config if config is not None else CharacterizeImageConfig()
        if config.crowded_field == "on":
            config = with_crowded_field_options(config)
        self.config = c = config
        self._crowded_task: CharacterizeImageTask | None = None
        self.background = SubtractBackgroundTask(c.background)
        self.repair = RepairTask(c.repair)
        self.detection = SourceDetectionTask(c.detection)
        self.deblend = SourceDeblendTask(c.deblend)
        self.measurement = SingleFrameMeasurementTask(c.measurement)
        self.star_selector = ObjectSizeStarSelectorTask(c.star_selector)
        self.psf_determiner = (PixelGridPsfDeterminer(c.pixel_grid_psf_determiner)
                               if c.psf_determiner_name == "pixelgrid" else PcaPsfDeterminer(c.psf_determiner))
        # The fainter-star fallback: footprints with a peak above min_snr_fallback sigma (never a stricter cut than
        # the configured one), stars by S/N > min_snr_fallback instead of the configured S/N or flux limit.
        faint_multiplier = min(c.detection.include_threshold_multiplier,
                               max(1.0, c.min_snr_fallback / c.detection.threshold_value))
        self.faint_detection = SourceDetectionTask(c.detection.model_copy(
            update={"include_threshold_multiplier": faint_multiplier}))
        self.faint_star_selector = ObjectSizeStarSelectorTask(c.star_selector.model_copy(update={
            "do_flux_limit": False, "do_signal_to_noise_limit": True, "locus": "smallest_group",
            "group_half_width_fraction": 0.08, "width_sigma_floor_fraction": 0.05,
            "signal_to_noise_min": min(c.min_snr_fallback, c.star_selector.signal_to_noise_min)
            if c.star_selector.do_signal_to_noise_limit else c.min_snr_fallback}))
        # The faint set spans S/N ~10 to a few hundred: the PCA's equal weights per star (constant_weight) would give
        # an S/N-10 star's noise the weight of the brightest star, and on the u-band sparse field (8-17 stars) its
        # kernels came out peaking 1 px off centre on 6 of 8 detectors; weighted by S/N, all 8 passed the checks,
        # within 0.6-1.2% rms of the true size. The pixel grid weighs its pixels by their variance already.
        # And the faint stars fit a constant (spatial order 0) only: their noise does not pin down a spatial
        # variation (in finalize, an order-1 pixel grid on 17 stars of S/N 10-50 left the PSF fluxes of a
        # detector's S/N > 50 stars 45 mmag faint; a constant, 5 mmag).
        self.faint_psf_determiner = (
            PixelGridPsfDeterminer(c.pixel_grid_psf_determiner.model_copy(update={
                "spatial_order": 0, "spatial_order_per_band": {}}))
            if c.psf_determiner_name == "pixelgrid" else
            PcaPsfDeterminer(c.psf_determiner.model_copy(update={"constant_weight": False, "spatial_order": 0})))
        self.normalized_calibration_flux = NormalizedCalibrationFluxTask(c.normalized_calibration_flux)
        self.measure_ap_corr = MeasureApCorrTask(c.measure_ap_corr)
        self.apply_ap_corr = ApplyApCorrTask(c.apply_ap_corr)

    def run(self, exposure: Exposure, background: BackgroundList | None = None,
            id_generator: DetectorVisitIdGenerator | None = None) -> CharacterizeImageResult:
        """Characterise ``exposure`` in place.

        Parameters
        ----------
        exposure : `Exposure`
            Post-ISR, counts; its image, mask and PSF / ap-corr map are modified.
        background : `BackgroundList`, optional
            Layers already subtracted; the new ones are appended (a new list when None).
        id_generator : `DetectorVisitIdGenerator`, optional
            Packs the source ids and seeds the noise replacer and the reserve (visit 0, detector 0 by default).
        """
        if not isinstance(exposure, Exposure):
            raise TypeError(f"exposure must be an Exposure, got {type(exposure).__name__}")
        c = self.config
        idg = id_generator or DetectorVisitIdGenerator(0, 0)
        background = BackgroundList() if background is None else background
        timings: dict[str, float] = {}
        metadata: dict = {"timings": timings, "iterations": []}

        def timed(stage, fn, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
            return out

        # 'auto' may switch to the crowded-field background after the first fit: keep the pixels it started from
        saved = None
        n_layers = len(background)
        if c.do_subtract_background:
            if c.crowded_field == "auto":
                saved = exposure.image.copy()
            timed("background", self.background.run, exposure, background)
        if exposure.psf is None or c.use_simple_psf:
            bbox = exposure.bbox
            centre = (0.5 * (bbox.min_x + bbox.max_x), 0.5 * (bbox.min_y + bbox.max_y))
            exposure.psf = GaussianPsf(c.install_simple_psf.fwhm / FWHM_PER_SIGMA, average_position=centre)

        # the crowded-field decision, once per detector (visitcal.detection.crowding); a mode, not a fallback
        crowding = timed("crowding", measure_crowding, exposure)
        crowded = is_crowded(c.crowded_field, crowding, c.crowded_field_threshold)
        metadata.update(crowded_field=crowded, crowding=crowding, crowding_threshold=c.crowded_field_threshold)
        write_crowding_metadata(exposure.metadata, crowded, crowding, c.crowded_field_threshold)
        log.info("crowding: %.4f of the pixels detected (threshold %.3f, mode %s): %s", crowding,
                 c.crowded_field_threshold, c.crowded_field, "crowded field" if crowded else "not crowded")
        task = self
        if crowded and c.crowded_field == "auto":
            if self._crowded_task is None:
                self._crowded_task = CharacterizeImageTask(c.model_copy(update={"crowded_field": "on"}))
            task = self._crowded_task
            if saved is not None and task.config.background != c.background:
                exposure.image[...] = saved  # the first fit again, source-masked
                background.truncate(n_layers)
                timed("background", task.background.run, exposure, background)
        del saved
        return task._characterize(exposure, background, idg, metadata, timed)

    def _characterize(self, exposure, background, idg, metadata, timed) -> CharacterizeImageResult:
        """The PSF iterations, the final repair and measurement and the aperture corrections (steps 3-6 of the
        module docstring) with this task's configuration."""
        c = self.config

        # CR bits the input already had; each repair below starts again from them, so that stars taken for
        # cosmic rays under the initial (wrong) PSF are not flagged forever.
        input_cr = exposure.mask.test("CR").copy() if "CR" in exposure.mask.planes else None
        sources = footprints = None
        state: dict = {}
        for iteration in range(c.psf_iterations):
            sources, footprints, info = self._detect_measure_and_estimate_psf(
                exposure, background, idg, iteration, timed, input_cr, state)
            metadata["iterations"].append(info)

        last = metadata["iterations"][-1]
        metadata["psf_spatial_order"] = int(last.get("spatial_order_used", last.get("spatial_order", -1)))
        if last.get("faint_fallback_reason"):
            # A documented fallback: the PSF was fitted on stars fainter than the configured cuts.
            metadata["psf_min_snr"] = last["psf_min_snr"]
            metadata.setdefault("degraded_reasons", []).append(last["faint_fallback_reason"])
        if last.get("order_step_down_reason"):
            # A documented fallback: the PSF of a lower spatial order than configured (too few stars per
            # spatial term, or the configured order's model failed its checks).
            metadata.setdefault("degraded_reasons", []).append(
                f"psf_order_reduced: spatial order {metadata['psf_spatial_order']} instead of "
                f"{last['spatial_order_configured']} ({last['order_step_down_reason']})")

        timed("repair", self._repair, exposure, False, input_cr)
        timed("measurement", self.measurement.run, sources, exposure, footprints, exposure_id=idg.catalog_id)

        if c.do_ap_corr:
            self._ap_corr(exposure, sources, metadata, timed)
        return CharacterizeImageResult(exposure=exposure, source_cat=sources, footprints=footprints,
                                       background=background, metadata=metadata)

    # --- steps -----------------------------------------------------------------------------------
    def _faint_fallback_threshold(self, band: str | None) -> int:
        """Non-reserved candidates below which the fainter-star fallback is used: what a linear (order-1) PSF
        needs at the determiner's ``min_stars_per_parameter`` (3 terms), or a constant's 3 stars when the
        configured order is 0. Below it the configured cuts would leave a constant PSF from a handful of stars."""
        c = self.config
        if c.psf_determiner_name == "pixelgrid":
            det = c.pixel_grid_psf_determiner
            order = int(det.spatial_order_per_band.get(band, det.spatial_order)) if band else int(det.spatial_order)
        else:
            det = c.psf_determiner
            order = int(det.spatial_order)
        return max(1, math.ceil(det.min_stars_per_parameter * n_spatial_terms(min(order, 1))))

    def _detect_measure_and_estimate_psf(self, exposure, background, idg, iteration, timed, input_cr, state):
        c = self.config
        timed("repair", self._repair, exposure, True, input_cr)
        detection = timed("detection", self.detection.run, exposure)
        if c.do_re_estimate_background:
            layer = timed("background", make_background, exposure.masked_image, c.background)
            timed("background", _subtract_layer, exposure, layer)
            background.append(layer)
        sources, footprints = self._deblend_and_measure(exposure, detection, idg, timed)
        selected = self._select_psf_candidates(exposure, sources, footprints, idg, self.star_selector)
        band = exposure.visit_info.band if exposure.visit_info is not None else None
        need = self._faint_fallback_threshold(band)
        n_fit = selected.n_fit
        first_error = None
        psf_result = info = None
        if not (c.do_faint_psf_fallback and (state.get("faint") or n_fit < need)):
            try:
                psf_result, info = timed("psf", self._measure_psf, exposure, sources, selected, iteration,
                                         self.psf_determiner)
            except PsfDeterminerError as err:
                if not c.do_faint_psf_fallback:
                    raise
                first_error = err  # the bright stars cannot give a PSF that passes its checks: try fainter ones
        fallback = None
        if psf_result is None:
            # Too few bright stars: detect again, on the same background-subtracted pixels (no new background
            # layer), keeping every footprint with a peak above min_snr_fallback sigma, and select stars by S/N
            # instead of the configured S/N or flux limit. The faint set contains the bright one; a field rich
            # enough for the configured cuts never gets here.
            faint_detection = timed("detection", self.faint_detection.run, exposure)
            f_sources, f_footprints = self._deblend_and_measure(exposure, faint_detection, idg, timed)
            f_selected = self._select_psf_candidates(exposure, f_sources, f_footprints, idg, self.faint_star_selector)
            why = (f"the configured cuts' fit failed ({type(first_error).__name__}: {first_error})" if first_error
                   else f"the configured cuts leaving {n_fit}, fewer than the {need} of a linear PSF")
            order = (c.pixel_grid_psf_determiner.spatial_order_per_band.get(band, c.pixel_grid_psf_determiner.spatial_order)
                     if c.psf_determiner_name == "pixelgrid" else c.psf_determiner.spatial_order)
            fallback = (f"psf_faint_stars: PSF candidates down to S/N {c.min_snr_fallback:g} ({f_selected.n_fit} to "
                        f"fit, a constant PSF: spatial order 0 instead of {order}), {why}")
            if f_selected.n_fit <= n_fit and first_error is not None:
                raise first_error  # no fainter star to add: the configured cuts' failure stands
            if f_selected.n_fit > n_fit:
                log.warning("PSF iteration %d: %s", iteration + 1, fallback)
                sources, footprints, selected = f_sources, f_footprints, f_selected
                state["faint"] = True  # the next iteration goes straight to the faint cuts
                determiner = self.faint_psf_determiner
            else:  # nothing fainter: the configured cuts' candidates, as without the fallback
                fallback, determiner = None, self.psf_determiner
            try:
                psf_result, info = timed("psf", self._measure_psf, exposure, sources, selected, iteration, determiner)
            except PsfDeterminerError as err:
                if first_error is not None:
                    err.add_note(f"with the configured cuts ({n_fit} candidates): {type(first_error).__name__}: "
                                 f"{first_error}")
                raise
        info["n_candidates_configured_cuts"] = int(n_fit)
        info["faint_fallback_threshold"] = int(need)
        if fallback:
            info["psf_min_snr"] = float(c.min_snr_fallback)
            info["faint_fallback_reason"] = fallback
        exposure.psf = psf_result.psf
        return sources, footprints, info

    def _deblend_and_measure(self, exposure, detection, idg, timed):
        """The positive detections of ``detection`` deblended and measured with the exposure's current PSF."""
        c = self.config
        keep = np.flatnonzero(~np.asarray(detection.sources["is_negative"], dtype=bool))
        footprints = [detection.footprints[k] for k in keep]
        sources = Table({"id": idg.source_ids(len(keep)), "parent": np.zeros(len(keep), np.int64)})
        if c.do_deblend:
            result = timed("deblend", self.deblend.run, exposure, sources, footprints, id_generator=idg)
            sources, footprints = result.sources, result.footprints
        else:
            sources["deblend_nChild"] = np.zeros(len(sources), np.int32)
        timed("measurement", self.measurement.run, sources, exposure, footprints, exposure_id=idg.catalog_id)
        return sources, footprints

    def _repair(self, exposure, keep_crs: bool, input_cr):
        if input_cr is not None:
            exposure.mask.clear("CR")
            exposure.mask.set("CR", input_cr)
        return self.repair.run(exposure, keep_crs=keep_crs)

    def _select_psf_candidates(self, exposure, sources, footprints, idg, star_selector) -> "_PsfSelection":
        """Stars by ``star_selector``, their candidate stamps and the reserve (seeded by the catalog id)."""
        c = self.config
        n = len(sources)
        selection = star_selector.run(sources, exposure)
        stars = np.flatnonzero(selection.selected)
        # Candidates' blend masking needs each star's top-level footprint (all the blend's peaks).
        parent = np.asarray(sources["parent"], dtype=np.int64)
        top_rows = np.flatnonzero(parent == 0)
        row_of_id = {int(i): k for k, i in enumerate(np.asarray(sources["id"], dtype=np.int64))}
        top_index = np.full(n, -1, dtype=np.int64)
        top_index[top_rows] = np.arange(top_rows.size)
        for k in stars:
            j = k
            while parent[j] != 0:
                j = row_of_id[int(parent[j])]
            top_index[k] = top_index[j]
        top_set = FootprintSet.from_footprints([footprints[k] for k in top_rows], exposure.bbox)
        star_table = {name: np.asarray(sources[name])[stars] for name in
                      (c.psf_candidates.centroid_name + "_x", c.psf_candidates.centroid_name + "_y")}
        candidates = make_psf_candidates(exposure, star_table, top_set, c.psf_candidates,
                                         footprint_index=top_index[stars])
        cand_rows = stars[candidates.table["used"]]
        reserved = np.zeros(len(candidates), dtype=bool)
        if c.reserve_fraction > 0 and len(candidates):
            n_res = int(round(c.reserve_fraction * len(candidates)))
            rng = np.random.RandomState(idg.catalog_id & 0xFFFFFFFF)
            reserved[np.sort(rng.choice(len(candidates), n_res, replace=False))] = True
        return _PsfSelection(selection, stars, candidates, cand_rows, reserved)

    def _measure_psf(self, exposure, sources, selected: "_PsfSelection", iteration, determiner):
        c = self.config
        n = len(sources)
        selection, stars, candidates = selected.selection, selected.stars, selected.candidates
        cand_rows, reserved = selected.cand_rows, selected.reserved
        info = {"iteration": iteration, "n_selected": int(stars.size), "n_candidates": int(len(candidates)),
                "n_reserved": int(reserved.sum()), "locus_width": selection.locus_center,
                "locus_sigma": selection.locus_sigma}
        try:
            result = determiner.determine_psf(candidates, exposure.bbox, reserved=reserved)
        except PsfDeterminerError as err:
            err.add_note(f"CharacterizeImageTask, PSF iteration {iteration + 1} of {c.psf_iterations}: "
                         f"{stars.size} stars selected by objectSize from {n} sources, {len(candidates)} PSF "
                         f"candidates, {int(reserved.sum())} reserved")
            raise
        x, y = result.psf.average_position
        radius = result.psf.compute_shape(x, y).determinant_radius
        if not math.isfinite(radius):
            raise CharacterizeImageError(f"PSF iteration {iteration + 1}: the PSF's size at ({x:.1f}, {y:.1f}) "
                                         "is NaN")
        for name in ("calib_psf_candidate", "calib_psf_used", "calib_psf_reserved"):
            sources[name] = np.zeros(n, dtype=bool)
        sources["calib_psf_candidate"][cand_rows] = True
        sources["calib_psf_used"][cand_rows[result.used]] = True
        sources["calib_psf_reserved"][cand_rows[reserved]] = True
        info.update({"n_used": int(result.used.sum()), "psf_sigma": radius, **result.metadata})
        log.info("PSF iteration %d: %d stars selected, %d candidates, %d used; sigma %.3f px at (%.0f, %.0f)",
                 iteration + 1, stars.size, len(candidates), int(result.used.sum()), radius, x, y)
        return result, info

    def _ap_corr(self, exposure, sources, metadata, timed):
        t0 = time.perf_counter()
        norm = self.normalized_calibration_flux.run(exposure=exposure, catalog=sources)
        measured = self.measure_ap_corr.run(sources, exposure)
        ap_corr_map = ApCorrMap()
        for key, field in measured.ap_corr_map.items():
            ap_corr_map[key] = field
        for key, field in norm.ap_corr_map.items():
            ap_corr_map[key] = field
        exposure.ap_corr_map = ap_corr_map
        self.apply_ap_corr.run(sources, ap_corr_map)
        if "base_ClassificationExtendedness" in self.config.measurement.plugins:
            out = catalog_plugins.classification_extendedness(
                sources["base_PsfFlux_instFlux"], sources["base_PsfFlux_flag"],
                sources["base_GaussianFlux_instFlux"], sources["base_GaussianFlux_flag"],
                flux_ratio=self.config.measurement.extendedness_flux_ratio)
            for k, v in out.items():
                sources[k] = v
        metadata["ap_corr"] = measured.metadata
        reasons = [r for r in (norm.degraded_reason, measured.degraded_reason) if r]
        if reasons:
            metadata.setdefault("degraded_reasons", []).append("aperture correction: " + "; ".join(reasons))
        metadata["timings"]["ap_corr"] = metadata["timings"].get("ap_corr", 0.0) + time.perf_counter() - t0


@dataclasses.dataclass(frozen=True)
class _PsfSelection:
    """The star selector's result, the selected rows, their candidate stamps, the rows of the candidates and
    which candidates are reserved."""

    selection: object
    stars: np.ndarray
    candidates: object
    cand_rows: np.ndarray
    reserved: np.ndarray

    @property
    def n_fit(self) -> int:
        """Candidates the determiner may fit (not reserved)."""
        return int(np.count_nonzero(~self.reserved))


def _subtract_layer(exposure: Exposure, layer) -> None:
    layer.subtract_from(exposure.image)
