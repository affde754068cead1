"""The LSST compatibility registry: each LSST task visitcal mirrors, its configuration fields and the output
columns of the catalogs, each with visitcal's name or the reason it has none (issue 24).

The registry is data checked against the code, so that the documentation's compatibility table
(``docs/generated/compat.rst``, written by ``docs/_ext/docgen.py``) cannot drift from it:

- `TASKS`: per LSST task, the visitcal class and config model, and LSST's field names (camelCase, dotted
  for a subtask's field) as the spec (``lsst-spec.md`` §4-6) and the task's config class name them. A field
  maps to its snake_case path on our config model (`snake_case`: ``thresholdValue`` ->
  ``threshold_value``, ``reserveSelection.reserveFraction`` -> ``reserve_selection.reserve_fraction``)
  unless `TaskCompat.renamed` gives another path or `TaskCompat.absent` the reason it has none.
  `field_rows` resolves every path on the pydantic model and raises `CompatError` when one does not
  resolve, so that renaming a config field breaks ``tests/unit/tasks/test_lsst_compat.py`` and the docs
  build; `visitcal_only` lists our fields that no LSST field maps to.
- `COLUMNS`: per output dataset, LSST's column names (spec §3, §4.11, §5.3, §5.7, §5.10, §2.6) with our
  name (the same unless stated) or the reason we lack it; ``tests/sim/test_products_sim.py`` checks every
  "ours" name against the columns of a processed simulated repository.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from collections.abc import Mapping

from pydantic import BaseModel

__all__ = ["COLUMNS", "ColumnCompat", "CompatError", "FieldRow", "TASKS", "TaskCompat", "column_rows",
           "config_model", "field_rows", "resolve_config_path", "snake_case", "visitcal_only"]


class CompatError(LookupError):
    """A registry entry names a config path or column that visitcal does not have."""


@dataclasses.dataclass(frozen=True)
class TaskCompat:
    """One LSST task and its visitcal counterpart.

    Attributes
    ----------
    lsst_task : str
        LSST's class name.
    lsst_package : str
        The LSST package that defines it.
    visitcal : tuple of str
        Dotted paths of the visitcal classes that do its work.
    config : str or None
        Dotted path of the pydantic config model the field paths are relative to (None: no config).
    lsst_fields : tuple of str
        LSST's config fields, camelCase, dotted for a subtask's field.
    renamed : mapping of str to str
        The exceptions to `snake_case`: LSST's field -> our path.
    absent : mapping of str to str
        LSST fields visitcal does not have -> the reason ("not implemented: ...", "always on", ...).
    note : str
        What else a user should know about the correspondence.
    """

    lsst_task: str
    lsst_package: str
    visitcal: tuple[str, ...]
    config: str | None
    lsst_fields: tuple[str, ...] = ()
    renamed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    absent: Mapping[str, str] = dataclasses.field(default_factory=dict)
    note: str = ""


@dataclasses.dataclass(frozen=True)
class FieldRow:
    """One config field of the compatibility table: LSST's name, ours (None: absent) and a note."""

    lsst: str
    ours: str | None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class ColumnCompat:
    """The columns of one output catalog: LSST's dataset and column names, ours where they differ.

    Attributes
    ----------
    dataset : str
        visitcal's dataset (its folder in the repository).
    lsst_dataset : str
        LSST's dataset (v2 name, the older one in parentheses).
    columns : tuple of str
        LSST's column names that visitcal writes under the same name.
    renamed : mapping of str to str
        LSST's column -> ours, where they differ.
    absent : mapping of str to str
        LSST's columns visitcal lacks -> why.
    note : str
        What the table covers.
    """

    dataset: str
    lsst_dataset: str
    columns: tuple[str, ...]
    renamed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    absent: Mapping[str, str] = dataclasses.field(default_factory=dict)
    note: str = ""


# ------------------------------------------------------------------------------------------ names
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(lsst_name: str) -> str:
    """LSST's camelCase field name in visitcal's snake_case, component by component of a dotted path.

    ``thresholdValue`` -> ``threshold_value``; ``measurePsf.psfDeterminer`` -> ``measure_psf.psf_determiner``;
    names already in snake_case (drp_tasks' ``do_use_sky_corr``) are unchanged. Acronyms are not split
    (``maxSNR`` -> ``max_snr``, ``outlierNSigma`` -> ``outlier_n_sigma``; ``keepCRs`` needs
    `TaskCompat.renamed`).
    """
    return ".".join(_CAMEL.sub("_", part).lower() for part in lsst_name.split("."))


def _import(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def config_model(task: TaskCompat) -> type[BaseModel] | None:
    """The pydantic config model of ``task`` (None when it has none)."""
    return _import(task.config) if task.config else None


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def resolve_config_path(model: type[BaseModel], path: str):
    """The pydantic ``FieldInfo`` at the dotted ``path`` of ``model`` (nested models followed).

    Raises
    ------
    CompatError
        When a component is not a field of the model reached so far.
    """
    current: type[BaseModel] | None = model
    field = None
    for part in path.split("."):
        if current is None or part not in current.model_fields:
            where = current.__name__ if current is not None else f"{field.annotation!r} (not a config model)"
            raise CompatError(f"{model.__name__}: {path!r}: no field {part!r} in {where}")
        field = current.model_fields[part]
        models = _models_in(field.annotation)
        current = models[0] if models else None
    return field


def field_rows(task: TaskCompat) -> list[FieldRow]:
    """Every LSST field of ``task`` with our path (resolved on the config model) or the reason it is absent.

    Raises
    ------
    CompatError
        When a path does not resolve on the config model, or the registry names a field twice or an exception
        for a field it does not list.
    """
    model = config_model(task)
    extra = (set(task.renamed) | set(task.absent)) - set(task.lsst_fields)
    if extra or set(task.renamed) & set(task.absent) or len(set(task.lsst_fields)) != len(task.lsst_fields):
        raise CompatError(f"{task.lsst_task}: inconsistent registry entry (exceptions for fields it does not "
                          f"list: {sorted(extra)}, or a field listed twice)")
    rows = []
    for name in task.lsst_fields:
        if name in task.absent:
            rows.append(FieldRow(name, None, task.absent[name]))
            continue
        ours = task.renamed.get(name, snake_case(name))
        if model is None:
            raise CompatError(f"{task.lsst_task}: {name!r} maps to {ours!r} but the task has no config model")
        resolve_config_path(model, ours)
        rows.append(FieldRow(name, ours))
    return rows


def visitcal_only(task: TaskCompat) -> list[tuple[str, str]]:
    """Our top-level config fields of ``task`` that no LSST field maps to (not even a sub-field of them):
    ``(name, description)`` in the model's order."""
    model = config_model(task)
    if model is None:
        return []
    used = {row.ours.split(".")[0] for row in field_rows(task) if row.ours}
    return [(name, f.description or "") for name, f in model.model_fields.items() if name not in used]


def column_rows(table: ColumnCompat) -> list[FieldRow]:
    """LSST's columns of ``table`` with ours (None: absent, with the reason), in the registry's order."""
    rows = [FieldRow(c, c) for c in table.columns]
    rows += [FieldRow(c, ours) for c, ours in table.renamed.items()]
    rows += [FieldRow(c, None, why) for c, why in table.absent.items()]
    return rows


# -------------------------------------------------------------------------------------- the tasks
_T = "visitcal.tasks."
_NI = "not implemented: "
_IO = "not applicable: visitcal writes its products through the pipeline steps (no Butler)"
_PSF_CHOICE = "the PSF determiner and its config (pipeline: psf_determiner_name / pixel_grid_psf_determiner)"

TASKS: tuple[TaskCompat, ...] = (
    TaskCompat(
        "CharacterizeImageTask", "pipe_tasks", (_T + "CharacterizeImageTask",), _T + "CharacterizeImageConfig",
        ("doMeasurePsf", "psfIterations", "background", "detection", "doDeblend", "deblend", "measurement",
         "doApCorr", "measureApCorr", "applyApCorr", "catalogCalculation", "useSimplePsf", "installSimplePsf",
         "installSimplePsf.fwhm", "measurePsf.starSelector", "measurePsf.makePsfCandidates",
         "measurePsf.psfDeterminer", "measurePsf.psfDeterminer['pca']", "measurePsf.psfDeterminer['piff']",
         "measurePsf.reserve.fraction", "repair", "requireCrForPsf",
         "doNormalizedCalibration", "normalizedCalibrationFlux", "refObjLoader", "doWrite", "doWriteExposure",
         "checkUnitsParseStrict"),
        renamed={"measurePsf.starSelector": "star_selector", "measurePsf.makePsfCandidates": "psf_candidates",
                 "measurePsf.psfDeterminer": "psf_determiner_name",
                 "measurePsf.psfDeterminer['pca']": "psf_determiner",
                 "measurePsf.psfDeterminer['piff']": "pixel_grid_psf_determiner",
                 "measurePsf.reserve.fraction": "reserve_fraction"},
        absent={"doMeasurePsf": "always on: characterisation always fits a PSF",
                "catalogCalculation": "always on: extendedness is computed by the measurement "
                                      "(measurement.extendedness_flux_ratio)",
                "requireCrForPsf": "always on: a failing cosmic-ray repair (TooManyCosmicRaysError) fails the "
                                   "detector",
                "doNormalizedCalibration": "always on (normalized_calibration_flux)",
                "refObjLoader": _NI + "characterisation uses no reference catalog",
                "doWrite": _IO, "doWriteExposure": _IO,
                "checkUnitsParseStrict": "not applicable: astropy tables carry their units"},
        note="LSST's default determiner is psfex (pipeline default piff); visitcal's is 'pca' with 'pixelgrid' "
             "(Piff's model) as the alternative. doDeblend defaults differ (LSST False)."),
    TaskCompat(
        "CalibrateTask", "pipe_tasks", (_T + "CalibrateTask",), _T + "CalibrateConfig",
        ("doAstrometry", "requireAstrometry", "astrometry", "doPhotoCal", "requirePhotoCal", "photoCal",
         "detection", "doDeblend", "deblend", "doSkySources", "skySources", "measurement", "doApCorr", "applyApCorr",
         "normalizedCalibrationFlux", "doNormalizedCalibration", "catalogCalculation", "setPrimaryFlags",
         "postCalibrationMeasurement", "icSourceFieldsToCopy", "matchRadiusPix", "doComputeSummaryStats",
         "computeSummaryStats", "astromRefObjLoader", "photoRefObjLoader", "doWrite", "doWriteMatches",
         "doWriteMatchesDenormalized", "doWriteHeavyFootprintsInSources", "doInsertFakes"),
        renamed={"detection": "find_sources.detection", "doDeblend": "find_sources.do_deblend",
                 "deblend": "find_sources.deblend", "doSkySources": "find_sources.do_sky_sources",
                 "skySources": "find_sources.sky_sources", "measurement": "find_sources.measurement"},
        absent={"doApCorr": "always on (apply_ap_corr)",
                "doNormalizedCalibration": "always on (normalized_calibration_flux)",
                "catalogCalculation": "always on: extendedness is computed by the measurement",
                "setPrimaryFlags": "always on: detect_isPrimary etc. (visitcal.measurement.primary_flags)",
                "postCalibrationMeasurement": "always on: base_LocalPhotoCalib and base_LocalWcs are added after "
                                              "the photometric calibration",
                "icSourceFieldsToCopy": "fixed: calib_psf_candidate, calib_psf_used, calib_psf_reserved",
                "doComputeSummaryStats": "always on (compute_summary_stats)",
                "astromRefObjLoader": "the pipeline step's reference catalog (visitcal.calib.ReferenceObjectLoader)",
                "photoRefObjLoader": "the pipeline step's reference catalog (visitcal.calib.ReferenceObjectLoader)",
                "doWrite": _IO, "doWriteMatches": _NI + "matches are not written",
                "doWriteMatchesDenormalized": _NI + "matches are not written",
                "doWriteHeavyFootprintsInSources": "always on: single_visit_star_footprints holds them",
                "doInsertFakes": _NI + "no fake-source insertion"},
        note="The astrometry pre-pass (LSST's separate 50-sigma detection) is not run: the fit uses the main "
             "detection's sources with S/N > astrometry.min_snr."),
    TaskCompat(
        "IsolatedStarAssociationTask", "pipe_tasks", (_T + "IsolatedStarAssociationTask",),
        _T + "IsolatedStarAssociationConfig",
        ("match_radius", "isolation_radius", "band_order", "source_selector", "id_column", "ra_column",
         "dec_column", "physical_filter_column", "band_column", "extra_columns", "inst_flux_field"),
        absent={"id_column": "fixed: sourceId (written by calibrate)", "ra_column": "fixed: coord_ra",
                "dec_column": "fixed: coord_dec", "physical_filter_column": "fixed: physical_filter",
                "band_column": "fixed: band", "extra_columns": "fixed: LSST's default list (spec §3)",
                "inst_flux_field": "fixed: base_NormalizedCompensatedTophatFlux (slot_CalibFlux)"},
        note="Deblended children are candidates when no other source lies within isolation_radius "
             "(source_selector.isolated.allow_deblended_children; the 'For LSST users' departures)."),
    TaskCompat(
        "ReserveIsolatedStarsTask", "pipe_tasks", (_T + "ReserveIsolatedStarsTask",),
        _T + "ReserveIsolatedStarsConfig", ("reserve_name", "reserve_fraction")),
    TaskCompat(
        "FinalizeCharacterizationTask", "pipe_tasks",
        (_T + "FinalizeCharacterizationTask", _T + "FinalizeCharacterizationDetectorTask"),
        _T + "FinalizeCharacterizationConfig",
        ("source_selector", "id_column", "reserve_selection", "reserve_selection.reserve_name",
         "reserve_selection.reserve_fraction", "make_psf_candidates", "psf_determiner", "measurement",
         "measure_ap_corr", "apply_ap_corr", "do_add_sky_moments", "do_add_fgcm_photometry",
         "fgcmPhotometryBands", "psf_determiner['piff'].spatialOrderPerBand",
         "psf_determiner['piff'].piffPixelGridFitCenter", "psf_determiner['piff'].spatialOrder",
         "psf_determiner['piff'].zerothOrderInterpNotEnoughStars", "psf_determiner['piff'].piffBasisPolynomialSolver",
         "psf_determiner['piff'].useColor"),
        renamed={"psf_determiner['piff'].spatialOrderPerBand": "psf_determiner.pixelgrid.spatial_order_per_band",
                 "psf_determiner['piff'].piffPixelGridFitCenter": "psf_determiner.pixelgrid.fit_center",
                 "psf_determiner['piff'].spatialOrder": "psf_determiner.pixelgrid.spatial_order",
                 "psf_determiner['piff'].zerothOrderInterpNotEnoughStars":
                     "psf_determiner.pixelgrid.zeroth_order_interp_not_enough_stars"},
        absent={"psf_determiner['piff'].piffBasisPolynomialSolver": "not applicable: visitcal's own solver "
                                                                     "(conjugate gradients, coordinates scaled)",
                "psf_determiner['piff'].useColor": _NI + "no colour-dependent PSF"},
        note="do_add_sky_moments and do_add_fgcm_photometry are accepted and refused when True; "
             "'visitcal finalize --preset lsstcam' takes obs_lsst's LSSTCam overrides. "
             "ConsolidateFinalizeCharacterizationDetectorTask is "
             "visitcal.tasks.ConsolidateFinalizeCharacterizationDetectorTask (no fields)."),
    TaskCompat(
        "UpdateVisitSummaryTask", "drp_tasks", (_T + "UpdateVisitSummaryTask",), None,
        ("wcs_provider", "photo_calib_provider", "background_provider", "compute_summary_stats"),
        absent={"wcs_provider": "fixed: calibrate's per-detector WCS (no gbdes)",
                "photo_calib_provider": "fixed: calibrate's per-detector PhotoCalib (no FGCM)",
                "background_provider": "fixed: the preliminary background",
                "compute_summary_stats": "LSST's defaults (visitcal.tasks.ComputeExposureSummaryStatsConfig)"},
        note="Built by 'visitcal reprocess' (or the visit_summary step) when missing."),
    TaskCompat(
        "ReprocessVisitImageTask", "drp_tasks", (_T + "ReprocessVisitImageTask",), _T + "ReprocessVisitImageConfig",
        ("snap_combine", "snap_combine.badMaskPlanes", "repair", "detection", "sky_sources", "deblend", "measurement",
         "normalized_calibration_flux", "apply_aperture_correction", "catalog_calculation", "set_primary_flags",
         "post_calculations", "compute_summary_stats", "calib_match_radius", "remove_initial_photo_calib",
         "do_use_sky_corr", "do_apply_flat_background_ratio", "copyMaskPlanes", "id_generator"),
        renamed={"snap_combine": "snap_combine_bad_mask_planes",
                 "snap_combine.badMaskPlanes": "snap_combine_bad_mask_planes",
                 "detection": "find_sources.detection", "sky_sources": "find_sources.sky_sources",
                 "deblend": "find_sources.deblend", "measurement": "find_sources.measurement",
                 "apply_aperture_correction": "apply_ap_corr"},
        absent={"catalog_calculation": "always on: extendedness is computed by the measurement",
                "set_primary_flags": "always on (visitcal.measurement.primary_flags)",
                "post_calculations": "always on: base_LocalPhotoCalib and base_LocalWcs",
                "do_apply_flat_background_ratio": _NI + "no background-to-photometric flat ratio",
                "id_generator": "fixed: DetectorVisitIdGenerator(visit, detector)"},
        note="The pipeline step's write_source_table (not LSST) also writes the standardized source_table."),
    TaskCompat(
        "ComputeExposureSummaryStatsTask", "pipe_tasks", (_T + "ComputeExposureSummaryStatsTask",),
        _T + "ComputeExposureSummaryStatsConfig",
        ("sigmaClip", "clipIter", "badMaskPlanes", "starSelection", "starSelector", "starShape", "psfShape",
         "psfSampling", "psfGridSampling", "minPsfApRadiusPix", "psfApCorrFieldName", "psfBadMaskPlanes",
         "magLimSnr", "fiducialPsfSigma", "fiducialSkyBackground", "fiducialZeroPoint", "fiducialReadNoise",
         "fiducialExpTime", "maxEffectiveTransparency"),
        absent={"starSelection": "fixed: calib_psf_used", "starSelector": "fixed: LSST's (S/N 50-1000 on "
                "slot_PsfFlux, slot_Shape_flag and slot_PsfFlux_flag vetoed)",
                "starShape": "fixed: slot_Shape", "psfShape": "fixed: slot_PsfShape"},
        note="No treecorr rho statistics (psfTE*)."),
    TaskCompat(
        "SubtractBackgroundTask", "meas_algorithms", ("visitcal.detection.SubtractBackgroundTask",),
        "visitcal.detection.background.BackgroundConfig",
        ("binSize", "binSizeX", "binSizeY", "statisticsProperty", "undersampleStyle", "algorithm",
         "ignoredPixelMask", "isNanSafe", "useApprox", "approxOrderX", "approxOrderY", "weighting"),
        renamed={"statisticsProperty": "statistic", "useApprox": "use_approximate"},
        absent={"isNanSafe": "always on: non-finite pixels are left out of the statistics"}),
    TaskCompat(
        "SourceDetectionTask", "meas_algorithms", ("visitcal.detection.SourceDetectionTask",),
        "visitcal.detection.detection.SourceDetectionConfig",
        ("thresholdValue", "thresholdType", "thresholdPolarity", "includeThresholdMultiplier", "minPixels",
         "nSigmaToGrow", "isotropicGrow", "combinedGrow", "returnOriginalFootprints", "nSigmaForKernel",
         "excludeMaskPlanes", "reEstimateBackground", "background", "doTempLocalBackground", "tempLocalBackground",
         "doTempWideBackground", "tempWideBackground", "nPeaksMaxSimple", "statsMask"),
        absent={"reEstimateBackground": "in CharacterizeImageConfig.do_re_estimate_background; off in reprocessing "
                                        "(as LSST's)",
                "background": "CharacterizeImageConfig.background",
                "doTempLocalBackground": _NI + "off in reprocessing (as LSST's)",
                "tempLocalBackground": _NI + "see doTempLocalBackground",
                "doTempWideBackground": _NI + "LSST's default is off",
                "tempWideBackground": _NI + "see doTempWideBackground",
                "nPeaksMaxSimple": _NI + "only used by the temporary local background",
                "statsMask": "fixed: BAD, SAT, EDGE, NO_DATA (the 'stdev' threshold type)"}),
    TaskCompat(
        "SingleFrameMeasurementTask", "meas_base", ("visitcal.measurement.SingleFrameMeasurementTask",),
        "visitcal.measurement.single_frame_measurement.SingleFrameMeasurementConfig",
        ("plugins", "slots", "slots.centroid", "slots.shape", "slots.psfShape", "slots.psfFlux", "slots.apFlux",
         "slots.calibFlux", "slots.gaussianFlux", "slots.modelFlux", "doReplaceWithNoise", "noiseReplacer",
         "noiseReplacer.noiseSource", "noiseReplacer.noiseOffset", "noiseReplacer.noiseSeedMultiplier",
         "plugins['base_SdssCentroid'].binmax", "plugins['base_SdssCentroid'].wfac",
         "plugins['base_SdssShape'].maxIter", "plugins['base_SdssShape'].doMeasurePsf",
         "plugins['base_PsfFlux'].badMaskPlanes", "plugins['base_CircularApertureFlux'].radii",
         "plugins['base_CircularApertureFlux'].maxSincRadius", "plugins['base_CompensatedTophatFlux'].apertures",
         "plugins['base_LocalBackground'].annulusInner", "plugins['base_LocalBackground'].annulusOuter",
         "undeblended", "loggingInterval"),
        renamed={"plugins['base_SdssCentroid'].binmax": "sdss_centroid.binmax",
                 "plugins['base_SdssCentroid'].wfac": "sdss_centroid.wfac",
                 "plugins['base_SdssShape'].maxIter": "sdss_shape.max_iter",
                 "plugins['base_SdssShape'].doMeasurePsf": "sdss_shape.do_measure_psf",
                 "plugins['base_PsfFlux'].badMaskPlanes": "psf_flux.bad_mask_planes",
                 "plugins['base_CircularApertureFlux'].radii": "circular_aperture_flux.radii",
                 "plugins['base_CircularApertureFlux'].maxSincRadius": "circular_aperture_flux.max_sinc_radius",
                 "plugins['base_CompensatedTophatFlux'].apertures": "compensated_tophat.apertures",
                 "plugins['base_LocalBackground'].annulusInner": "local_background.annulus_inner",
                 "plugins['base_LocalBackground'].annulusOuter": "local_background.annulus_outer"},
        absent={"undeblended": _NI + "no undeblended measurement",
                "loggingInterval": "not applicable: no progress logging per source"},
        note="A plugin's config is a field named after the plugin (sdss_centroid, psf_flux, ...); plugins visitcal "
             "does not have (HSM, Kron, CModel, GAaP) are left out of the plugin list."),
    TaskCompat(
        "SourceDeblendTask", "meas_deblender", ("visitcal.measurement.SourceDeblendTask",),
        "visitcal.measurement.deblend.SourceDeblendConfig",
        ("edgeHandling", "strayFluxToPointSources", "assignStrayFlux", "strayFluxRule", "clipStrayFluxFraction",
         "psfChisq1", "psfChisq2", "psfChisq2b", "maxNumberOfPeaks", "maxFootprintArea", "maxFootprintSize",
         "minFootprintAxisRatio", "notDeblendedMask", "tinyFootprintSize", "propagateAllPeaks", "catchFailures",
         "maskPlanes", "maskLimits", "weightTemplates", "removeDegenerateTemplates", "maxTempDotProd",
         "medianSmoothTemplate"),
        renamed={"psfChisq1": "psf_chisq_1", "psfChisq2": "psf_chisq_2", "psfChisq2b": "psf_chisq_2b"}),
    TaskCompat(
        "MeasureApCorrTask", "meas_algorithms", ("visitcal.measurement.MeasureApCorrTask",),
        "visitcal.measurement.measure_ap_corr.MeasureApCorrConfig",
        ("refFluxName", "sourceSelector", "minDegreesOfFreedom", "fitConfig", "fitConfig.orderX", "fitConfig.orderY",
         "fitConfig.triangular", "numIter", "numSigmaClip", "doFinalMedianShift", "allowFailure")),
    TaskCompat(
        "ApplyApCorrTask", "meas_base", ("visitcal.measurement.ApplyApCorrTask",),
        "visitcal.measurement.apply_ap_corr.ApplyApCorrConfig",
        ("ignoreList", "doFlagApCorrFailures", "proxies"),
        absent={"proxies": _NI + "no proxy aperture corrections"}),
    TaskCompat(
        "NormalizedCalibrationFluxTask", "meas_algorithms", ("visitcal.measurement.NormalizedCalibrationFluxTask",),
        "visitcal.measurement.apply_ap_corr.NormalizedCalibrationFluxConfig",
        ("raw_calibflux_name", "normalized_calibflux_name", "do_set_calib_slot", "do_measure_ap_corr",
         "measure_ap_corr")),
    TaskCompat(
        "ObjectSizeStarSelectorTask", "meas_algorithms", ("visitcal.measurement.ObjectSizeStarSelectorTask",),
        "visitcal.measurement.object_size_star_selector.ObjectSizeStarSelectorConfig",
        ("doFluxLimit", "fluxMin", "fluxMax", "doSignalToNoiseLimit", "signalToNoiseMin", "signalToNoiseMax",
         "widthMin", "widthMax", "sourceFluxField", "widthStdAllowed", "nSigmaClip", "badFlags"),
        note="Defaults are LSST's before September 2023 (flux cut on, base_GaussianFlux; see issue 24)."),
    TaskCompat(
        "ScienceSourceSelectorTask", "meas_algorithms", ("visitcal.measurement.ScienceSourceSelectorTask",),
        "visitcal.measurement.source_selector.ScienceSourceSelectorConfig",
        ("doFluxLimit", "doFlags", "doUnresolved", "doSignalToNoise", "doIsolated", "doRequireFiniteRaDec",
         "doRequirePrimary", "doSkySources", "doSubsample", "fluxLimit", "flags", "flags.good", "flags.bad",
         "unresolved", "unresolved.name", "unresolved.minimum", "unresolved.maximum", "signalToNoise",
         "signalToNoise.fluxField", "signalToNoise.errField", "signalToNoise.minimum", "signalToNoise.maximum",
         "isolated", "isolated.parentName", "isolated.nChildName"),
        absent={"doFluxLimit": _NI + "no flux-limit criterion in this selector",
                "fluxLimit": _NI + "see doFluxLimit",
                "doRequireFiniteRaDec": "done by the isolated-star association itself (its source selection)",
                "doSubsample": _NI + "no subsampling"}),
    TaskCompat(
        "PiffPsfDeterminerTask", "meas_extensions_piff", ("visitcal.psf.PixelGridPsfDeterminer",),
        "visitcal.psf.pixel_grid.PixelGridPsfDeterminerConfig",
        ("stampSize", "modelSize", "samplingSize", "spatialOrder", "spatialOrderPerBand", "piffPixelGridFitCenter",
         "interpolant", "outlierNSigma", "outlierMaxRemove", "piffMaxIter", "maxSNR", "zeroWeightMaskBits",
         "minimumUnmaskedFraction", "zerothOrderInterpNotEnoughStars", "piffBasisPolynomialSolver",
         "useCoordinates", "useColor", "colorOrder", "piffPsfConfigYaml", "maxCandidates", "piffLoggingLevel"),
        renamed={"piffPixelGridFitCenter": "fit_center", "piffMaxIter": "max_iter",
                 "zeroWeightMaskBits": "zero_weight_mask_planes"},
        absent={"piffBasisPolynomialSolver": "not applicable: visitcal's own solver (conjugate gradients on "
                                             "coordinates scaled to [-1, 1])",
                "useCoordinates": _NI + "pixel coordinates only (LSST's default)",
                "useColor": _NI + "no colour-dependent PSF", "colorOrder": _NI + "see useColor",
                "piffPsfConfigYaml": _NI + "no Piff YAML override",
                "maxCandidates": "PsfCandidatesConfig.max_candidates (the candidates' config)",
                "piffLoggingLevel": "not applicable: Python logging"},
        note="visitcal's pixel grid is Piff's PixelGrid + BasisPolynomial model fitted by its own solver "
             "(registry name 'pixelgrid', LSST's 'piff')."),
    TaskCompat(
        "PcaPsfDeterminerTask", "meas_algorithms", ("visitcal.psf.PcaPsfDeterminer",),
        "visitcal.psf.pca.PcaPsfDeterminerConfig",
        ("nEigenComponents", "spatialOrder", "sizeCellX", "sizeCellY", "nStarPerCell", "nStarPerCellSpatialFit",
         "constantWeight", "nIterForPsf", "tolerance", "lam", "reducedChi2ForPsfCandidates", "spatialReject",
         "pixelThreshold", "doRejectBlends", "doMaskBlends", "stampSize", "maxCandidates"),
        renamed={"stampSize": "kernel_size"},
        absent={"sizeCellX": _NI + "no cell thinning", "sizeCellY": _NI + "no cell thinning",
                "nStarPerCell": _NI + "no cell thinning", "nStarPerCellSpatialFit": _NI + "no cell thinning",
                "pixelThreshold": _NI + "LSST's default 0 (off)",
                "doRejectBlends": _NI + "LSST's default is off",
                "doMaskBlends": "PsfCandidatesConfig.do_mask_blends (the candidates' config)",
                "maxCandidates": "PsfCandidatesConfig.max_candidates (the candidates' config)"},
        note="lam is a fractional model-error floor, var + (lam * model)**2 (LSST: lam * data)."),
    TaskCompat(
        "AstrometryTask", "meas_astrom", ("visitcal.calib.AstrometryTask",),
        "visitcal.calib.astrometry.AstrometryConfig",
        ("matcher", "wcsFitter", "maxIter", "minMatchDistanceArcSec", "maxMeanDistanceArcsec",
         "doMagnitudeOutlierRejection", "magnitudeOutlierRejectionNSigma", "sourceFluxType", "sourceSelector",
         "referenceSelector", "doFiducialZeroPointCull", "doFitSipApproximation",
         "referenceSelector.doCullFromMaskedRegion"),
        renamed={"minMatchDistanceArcSec": "min_match_distance_arcsec", "sourceSelector": "min_snr"},
        absent={"referenceSelector": "fixed: finite RA/Dec, the references within reference_pixel_margin",
                "referenceSelector.doCullFromMaskedRegion": _NI + "references on masked regions are kept",
                "doFiducialZeroPointCull": _NI + "LSST's default is off (LSSTCam: on)",
                "doFitSipApproximation": "not applicable: the fitted WCS is TAN-SIP or affine on a TAN-SIP"},
        note="wcsFitter is a name: 'affine' (FitAffineWcsTask, the default here and in CalibrateImageTask) or "
             "'sip' (FitTanSipWcsTask); sourceSelector is reduced to its S/N cut (min_snr), flags (bad_flags) "
             "and centroid error (max_centroid_error)."),
    TaskCompat(
        "MatchPessimisticBTask", "meas_astrom", ("visitcal.calib.MatchPessimisticBTask",),
        "visitcal.calib.match_pessimistic_b.MatchPessimisticBConfig",
        ("numBrightStars", "minMatchedPairs", "minFracMatchedPairs", "matcherIterations", "maxOffsetPix",
         "maxRotationDeg", "numPointsForShape", "numPointsForShapeAttempt", "minMatchDistPixels",
         "numPatternConsensus", "numRefRequireConsensus", "maxRefObjects", "matchDistanceSigma")),
    TaskCompat(
        "FitTanSipWcsTask", "meas_astrom", ("visitcal.calib.FitTanSipWcsTask",),
        "visitcal.calib.fit_tan_sip_wcs.FitTanSipWcsConfig",
        ("order", "numIter", "numRejIter", "rejSigma", "maxScatterArcsec")),
    TaskCompat(
        "FitAffineWcsTask", "meas_astrom", ("visitcal.calib.FitAffineWcsTask",),
        "visitcal.calib.fit_affine_wcs.FitAffineWcsConfig", (),
        note="LSST's has no fields; visitcal's iterate and reject (below)."),
    TaskCompat(
        "PhotoCalTask", "pipe_tasks", ("visitcal.calib.PhotoCalTask",), "visitcal.calib.photo_cal.PhotoCalConfig",
        ("match", "match.matchRadius", "fluxField", "applyColorTerms", "sigmaMax", "nSigma", "useMedian", "nIter",
         "magErrFloor", "colorterms", "photoCatName", "reserve", "match.sourceSelection",
         "match.referenceSelection"),
        renamed={"match": "match_radius", "match.matchRadius": "match_radius", "colorterms": "color_term",
                 "match.sourceSelection": "source_selector"},
        absent={"photoCatName": "fixed: the pipeline step's reference catalog",
                "reserve": _NI + "no photometric reserve (LSST's default fraction is 0)",
                "match.referenceSelection": "fixed: references with a finite position and a positive flux in the band"},
        note="The unresolved cut is extendedness < 0.5 (obs_lsst's old value; LSST's selector default 0.1)."),
    TaskCompat(
        "RepairTask", "pipe_tasks", ("visitcal.detection.RepairTask",), "visitcal.detection.cosmic_rays.RepairConfig",
        ("doInterpolate", "doCosmicRay", "cosmicray", "cosmicray.minSigma", "cosmicray.min_DN", "cosmicray.cond3_fac",
         "cosmicray.cond3_fac2", "cosmicray.niteration", "cosmicray.nCrPixelMax", "cosmicray.keepCRs", "interp"),
        renamed={"cosmicray.keepCRs": "cosmicray.keep_crs"},
        absent={"interp": "fixed: LSST's defaults (fallback value MEANCLIP at the edges)"}),
    TaskCompat(
        "SkyObjectsTask", "meas_algorithms", ("visitcal.detection.SkyObjectsTask",),
        "visitcal.detection.sky_sources.SkyObjectsConfig",
        ("avoidMask", "growMask", "sourceRadius", "nSources", "nTrialSources", "nTrialSourcesMultiplier")),
    TaskCompat(
        "MakePsfCandidatesTask", "meas_algorithms", ("visitcal.psf.candidates.make_psf_candidates",),
        "visitcal.psf.candidates.PsfCandidatesConfig", ("kernelSize", "borderWidth"),
        renamed={"kernelSize": "stamp_size", "borderWidth": "stamp_size"},
        note="stamp_size = kernelSize + 2 * borderWidth (LSST 27 + 0)."),
)


# ------------------------------------------------------------------------------------ the columns
_FLUX = ("instFlux", "instFluxErr", "flag")
_CAL = ("flux", "fluxErr", "mag", "magErr")
_APERTURES = ("3_0", "4_5", "6_0", "9_0", "12_0", "17_0", "25_0", "35_0", "50_0", "70_0")


def _cols(prefix: str, *suffixes: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{s}" for s in suffixes)


_PIXEL_FLAGS = _cols("base_PixelFlags_flag", "edge", "nodata", "interpolated", "saturated", "cr", "bad", "suspect",
                     "interpolatedCenter", "saturatedCenter", "crCenter", "suspectCenter", "offimage")
_SFM = (("id", "parent", "coord_ra", "coord_dec")
        + _cols("base_SdssCentroid", "x", "y", "xErr", "yErr", "flag")
        + _cols("base_SdssShape", "xx", "yy", "xy", "xxErr", "yyErr", "xyErr", "psf_xx", "psf_yy", "psf_xy", "flag")
        + _cols("base_PsfFlux", *_FLUX, "area", "chi2", "npixels", "flag_noGoodPixels", "flag_edge")
        + _cols("base_GaussianFlux", *_FLUX)
        + tuple(c for a in _APERTURES for c in _cols(f"base_CircularApertureFlux_{a}", *_FLUX))
        + _cols("base_CompensatedTophatFlux_12", *_FLUX)
        + _cols("base_NormalizedCompensatedTophatFlux", *_FLUX)
        + _cols("base_LocalBackground", *_FLUX)
        + ("base_Variance_value", "base_ClassificationExtendedness_value", "base_ClassificationSizeExtendedness_value",
           "base_FootprintArea_value")
        + _PIXEL_FLAGS
        + ("deblend_nChild", "deblend_deblendedAsPsf", "deblend_psf_instFlux", "deblend_tooManyPeaks",
           "deblend_parentTooBig", "deblend_masked", "deblend_skipped")
        + ("detect_isPrimary", "detect_isIsolated", "detect_fromBlend", "detect_isDeblendedSource", "sky_source")
        + ("calib_psf_candidate", "calib_psf_used", "calib_psf_reserved")
        + _cols("base_PsfFlux", "apCorr", "apCorrErr", "flag_apCorr")
        + _cols("base_GaussianFlux", "apCorr", "apCorrErr", "flag_apCorr")
        + ("base_LocalPhotoCalib", "base_LocalPhotoCalibErr")
        + _cols("base_LocalWcs_CDMatrix", "1_1", "1_2", "2_1", "2_2")
        + ("base_FPPosition_x", "base_FPPosition_y", "base_Jacobian_value", "visit", "detector")
        + ("calib_astrometry_used", "calib_photometry_used", "calib_photometry_reserved"))
#: After the photometric calibration (reprocessing): nJy fluxes and AB magnitudes.
_CALIBRATED = _cols("base_PsfFlux", *_CAL) + _cols("base_GaussianFlux", *_CAL) \
    + _cols("base_NormalizedCompensatedTophatFlux", *_CAL)
_NOT_MEASURED = {
    "base_Blendedness_abs": _NI + "base_Blendedness",
    "ext_photometryKron_KronFlux_instFlux": _NI + "Kron photometry",
    "ext_shapeHSM_HsmSourceMoments_xx": _NI + "HSM moments (base_SdssShape is the shape slot)",
    "ext_shapeHSM_HsmPsfMoments_xx": _NI + "HSM moments (base_SdssShape_psf is the PSF-shape slot)",
    "ext_shapeHSM_HsmShapeRegauss_e1": _NI + "HSM regaussianization",
}

COLUMNS: tuple[ColumnCompat, ...] = (
    ColumnCompat(
        "single_visit_star", "single_visit_star_footprints (src), afw names", _SFM,
        absent=_NOT_MEASURED,
        note="visitcal's single_visit_star keeps afw's names (LSST's single_visit_star is the standardized table "
             "of those rows, like the source_table below)."),
    ColumnCompat(
        "source", "source_unstandardized (sources_detector)", _SFM + _CALIBRATED, absent=_NOT_MEASURED,
        note="calib_astrometry_used and calib_photometry_used are always False here, as in LSST's."),
    ColumnCompat(
        "refit_psf_star", "refit_psf_star (finalized_src_table)",
        ("id", "coord_ra", "coord_dec", "parent", "base_SdssCentroid_x", "base_SdssCentroid_y",
         "base_CircularApertureFlux_12_0_instFlux", "base_NormalizedCompensatedTophatFlux_instFlux",
         "calib_psf_selection_flux", "calib_psf_selection_flux_err", "calib_psf_candidate", "calib_psf_reserved",
         "calib_psf_used", "visit", "detector", "psf_max_value", "psf_color_value", "psf_color_type")
        + _cols("base_PsfFlux", *_FLUX) + _cols("base_GaussianFlux", *_FLUX)
        + ("apcorr_base_PsfFlux_used", "base_PsfFlux_apCorr", "base_PsfFlux_flag_apCorr"),
        absent={"ext_shapeHSM_HsmSourceMoments_xx": _NI + "HSM moments (base_SdssShape_xx)",
                "ext_shapeHSM_HsmPsfMoments_xx": _NI + "HSM moments (base_SdssShape_psf_xx)",
                "modelfit_CModel_instFlux": _NI + "CModel",
                "ext_gaap_GaapFlux_1_15x_Optimal_instFlux": _NI + "GAaP",
                "shape_Iuu": "refused: do_add_sky_moments=True is an error"}),
    ColumnCompat(
        "visit_summary", "visit_summary (finalVisitSummary)",
        ("id", "visit", "band", "physical_filter", "psf", "wcs", "expTime",
         "psfSigma", "psfIxx", "psfIyy", "psfIxy", "psfArea", "nPsfStar", "psfStarDeltaE1Median",
         "psfStarDeltaE2Median", "psfStarDeltaE1Scatter", "psfStarDeltaE2Scatter", "psfStarDeltaSizeMedian",
         "psfStarDeltaSizeScatter", "psfStarScaledDeltaSizeScatter", "psfTraceRadiusDelta", "psfApFluxDelta",
         "psfApCorrSigmaScaledDelta", "maxDistToNearestPsf", "ra", "dec", "raCorners", "decCorners", "pixelScale",
         "zenithDistance", "zeroPoint", "skyBg", "skyNoise", "meanVar", "magLim", "effTime", "effTimePsfSigmaScale",
         "effTimeSkyBgScale", "effTimeZeroPointScale", "astromOffsetMean", "astromOffsetStd"),
        renamed={"bbox_min_x": "bbox", "bbox_min_y": "bbox", "bbox_max_x": "bbox", "bbox_max_y": "bbox",
                 "apCorrMap": "ap_corr_map", "photoCalib": "photo_calib"},
        absent={"psfTE1e1": _NI + "treecorr rho statistics (NaN at LSST's HEAD too)",
                "starComa1": _NI + "higher-order moments (no HSM)",
                "starEMedian": _NI + "star ellipticity medians",
                "validPolygon": _NI + "no valid polygons", "visitInfo": "the exposure's header cards",
                "transmissionCurve": _NI + "no transmission curves"},
        note="Read with visitcal.tasks.update_visit_summary.read_visit_summary: one row per detector, the "
             "components (psf, ap_corr_map, photo_calib, wcs) as objects, bbox one Box2I column; visitcal adds "
             "detector, status and message."),
    ColumnCompat(
        "isolated_star_association", "isolated_star_association (isolated_star_presource_associations)",
        ("isolated_star_id", "ra", "dec", "primary_band", "source_cat_index", "nsource"),
        renamed={"source_cat_index_<band>": "source_cat_index_r", "nsource_<band>": "nsource_r"},
        note="Per-band columns exist for each band of band_order that has sources (r shown)."),
    ColumnCompat(
        "isolated_star", "isolated_star (isolated_star_presources)",
        ("sourceId", "visit", "detector", "ra", "dec", "physical_filter", "band", "x", "y", "xErr", "yErr",
         "source_row", "obj_index"),
        absent={}),
)
