"""The ``finalize`` step over a repository (issue 8): after ``calibrate`` (and ``associate``, run here when
its products are missing), per visit, FinalizeCharacterization: consistent reserved stars, the refit PSF
and aperture corrections.

Products (DESIGN.md §4; LSST v2 names)::

    REPO/refit_psf_models/refit_psf_models_<visit>.fits     one row per detector, sorted: PSF and ap-corr
                                                            map (lossless), status
    REPO/refit_psf_star/refit_psf_star_<visit>.parquet      one row per PSF candidate (lsst-spec §4.11)
    REPO/provenance/finalize/<visit>_<detector>.json        per detector: status, counts, PSF size, timings

Two modes that give identical products: the visit task (``FinalizeCharacterizationTask``, one unit per visit)
or, with ``per_detector``, the detector task per detector (``refit_psf_models_detector/...`` and
``refit_psf_star_detector/...``) followed by ``ConsolidateFinalizeCharacterizationDetectorTask`` per visit.
The inputs of a visit are its detectors whose calibrate provenance is ok.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..finalize_characterization import (
    ConsolidateFinalizeCharacterizationDetectorTask,
    FinalizeCharacterizationConfig,
    FinalizeCharacterizationDetectorTask,
    FinalizeCharacterizationTask,
    read_psf_ap_corr_cat,
    write_psf_ap_corr_cat,
)
from ..io import read_catalog, read_exposure, write_catalog
from .associate_step import isolated_star_inputs, run_associate
from .calibrate_step import OUTPUTS as CALIBRATE_OUTPUTS
from .repository import Repository, UnitStatus, config_hash
from .runner import run_units

__all__ = ["FinalizeStepConfig", "run_finalize", "summary_lines"]

STEP = "finalize"


class FinalizeStepConfig(BaseModel):
    """The step's configuration: the finalize tasks' config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    finalize: FinalizeCharacterizationConfig = Field(default_factory=FinalizeCharacterizationConfig,
                                                     description="FinalizeCharacterization(Detector)Task")
