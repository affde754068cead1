"""The LSST tasks, one module each (LSST's ``pipe_tasks`` and ``drp_tasks``, with the class, config
and ``run()`` argument and result names Rubin users know): image characterization, calibration,
source finding, isolated-star association and reservation, finalize characterization, the visit
summary and its statistics, and the reprocessing of a visit image.
"""

from .calibrate import CalibrateConfig, CalibrateResult, CalibrateTask
from .characterize_image import CharacterizeImageConfig, CharacterizeImageResult, CharacterizeImageTask
from .compute_exposure_summary_stats import ComputeExposureSummaryStatsConfig, ComputeExposureSummaryStatsTask
from .finalize_characterization import (
    ConsolidateFinalizeCharacterizationDetectorConfig,
    ConsolidateFinalizeCharacterizationDetectorTask,
    FinalizeCharacterizationConfig,
    FinalizeCharacterizationDetectorTask,
    FinalizeCharacterizationResult,
    FinalizeCharacterizationTask,
)
from .find_sources import FindSourcesConfig, FindSourcesResult, FindSourcesTask
from .isolated_star_association import (
    IsolatedStarAssociationConfig,
    IsolatedStarAssociationResult,
    IsolatedStarAssociationTask,
)
from .reprocess_visit_image import ReprocessVisitImageConfig, ReprocessVisitImageResult, ReprocessVisitImageTask
from .reserve_isolated_stars import ReserveIsolatedStarsConfig, ReserveIsolatedStarsTask
from .update_visit_summary import UpdateVisitSummaryTask

__all__ = [
    "CalibrateConfig",
    "CalibrateResult",
    "CalibrateTask",
    "CharacterizeImageConfig",
    "CharacterizeImageResult",
    "CharacterizeImageTask",
    "ComputeExposureSummaryStatsConfig",
    "ComputeExposureSummaryStatsTask",
    "ConsolidateFinalizeCharacterizationDetectorConfig",
    "ConsolidateFinalizeCharacterizationDetectorTask",
    "FinalizeCharacterizationConfig",
    "FinalizeCharacterizationDetectorTask",
    "FinalizeCharacterizationResult",
    "FinalizeCharacterizationTask",
    "FindSourcesConfig",
    "FindSourcesResult",
    "FindSourcesTask",
    "IsolatedStarAssociationConfig",
    "IsolatedStarAssociationResult",
    "IsolatedStarAssociationTask",
    "ReprocessVisitImageConfig",
    "ReprocessVisitImageResult",
    "ReprocessVisitImageTask",
    "ReserveIsolatedStarsConfig",
    "ReserveIsolatedStarsTask",
    "UpdateVisitSummaryTask",
]
