"""From a background-subtracted exposure to the measured source catalog: detection, sky sources,
deblending, measurement and primary flags, in the order ReprocessVisitImageTask's ``_find_sources``
runs them (LSST drp_tasks; repair and the calibration steps around it are separate).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from astropy.table import Table, vstack
from pydantic import BaseModel, ConfigDict, Field

from ..measurement.deblend import SourceDeblendConfig, SourceDeblendTask
from ..detection.detection import DetectionResult, SourceDetectionConfig, SourceDetectionTask
from ..core.image import Exposure
from ..measurement.primary_flags import set_primary_flags
from ..measurement.single_frame_measurement import (
    SingleFrameMeasurementConfig,
    SingleFrameMeasurementTask,
)
from ..detection.sky_sources import SkyObjectsConfig, SkyObjectsTask
from ..core.table import DetectorVisitIdGenerator

__all__ = ["FindSourcesConfig", "FindSourcesResult", "FindSourcesTask"]


class FindSourcesConfig(BaseModel):
    """Configuration of `FindSourcesTask`: its subtasks' configs and switches (LSST defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detection: SourceDetectionConfig = Field(default_factory=SourceDetectionConfig, description="detection")
    do_sky_sources: bool = Field(True, description="add sky sources (LSST SkyObjectsTask)")
    sky_sources: SkyObjectsConfig = Field(default_factory=SkyObjectsConfig, description="sky sources")
    do_deblend: bool = Field(True, description="deblend multi-peak parents (LSST SourceDeblendTask)")
    deblend: SourceDeblendConfig = Field(default_factory=SourceDeblendConfig, description="deblender")
    measurement: SingleFrameMeasurementConfig = Field(default_factory=SingleFrameMeasurementConfig,
                                                      description="measurement plugins and slots")
    seed_noise_with_catalog_id: bool = Field(
        False, description="seed the noise replacer with the catalog id (CalibrateTask) instead of 1 "
                           "(ReprocessVisitImage and FinalizeCharacterization pass no id)")


@dataclasses.dataclass
class FindSourcesResult:
    """Attributes: ``sources`` (the measured catalog, ``id``-sorted parents first as afw keeps them),
    ``footprints`` (aligned with ``sources``; children heavy), ``detection`` (the `DetectionResult`)."""

    sources: Table
    footprints: list
    detection: DetectionResult


class FindSourcesTask:
    """Detect, add sky sources, deblend, measure and set the primary flags on one exposure.

    Parameters
    ----------
    config : `FindSourcesConfig`, optional
    """

    ConfigClass = FindSourcesConfig
    _DefaultName = "findSources"

    def __init__(self, config: FindSourcesConfig | None = None):
        self.config = config or FindSourcesConfig()
        self.detection = SourceDetectionTask(self.config.detection)
        self.sky_sources = SkyObjectsTask(self.config.sky_sources)
        self.deblend = SourceDeblendTask(self.config.deblend)
        self.measurement = SingleFrameMeasurementTask(self.config.measurement)

    def run(self, exposure: Exposure, *, id_generator: DetectorVisitIdGenerator | None = None) -> FindSourcesResult:
        """Run on ``exposure`` (background-subtracted, cosmic rays repaired, with a PSF).

        The mask gains DETECTED (and NOT_DEBLENDED over skipped parents); the image is restored after
        measurement. Ids are packed by ``id_generator`` (default: visit 0, detector 0), whose catalog id
        also seeds the sky sources' Halton sequence (as LSST's ``IdGenerator.catalog_id`` does).
        """
        if exposure.psf is None:
            raise ValueError("exposure has no PSF: detection, deblending and measurement need one")
        idg = id_generator or DetectorVisitIdGenerator(0, 0)
        detection = self.detection.run(exposure)
        keep = ~np.asarray(detection.sources["is_negative"], dtype=bool)
        rows = np.flatnonzero(keep)
        footprints = [detection.footprints[k] for k in rows]
        sources = Table({"id": idg.source_ids(len(rows)), "parent": np.zeros(len(rows), np.int64),
                         "sky_source": np.zeros(len(rows), bool)})
        if self.config.do_sky_sources:
            sky = self.sky_sources.run(exposure.mask, idg.catalog_id)
            sky_rows = Table({"id": idg.source_ids(len(sky), start=len(rows) + 1),
                              "parent": np.zeros(len(sky), np.int64), "sky_source": np.ones(len(sky), bool)})
            sources = vstack([sources, sky_rows])
            footprints = footprints + list(sky)
        if self.config.do_deblend:
            result = self.deblend.run(exposure, sources, footprints, id_generator=idg)
            sources, footprints = result.sources, result.footprints
        else:
            sources["deblend_nChild"] = np.zeros(len(sources), np.int32)
        exposure_id = idg.catalog_id if self.config.seed_noise_with_catalog_id else None
        self.measurement.run(sources, exposure, footprints, exposure_id=exposure_id)
        set_primary_flags(sources)
        return FindSourcesResult(sources=sources, footprints=footprints, detection=detection)
