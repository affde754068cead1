"""Source measurement, in the spirit of LSST's ``meas_base`` and ``meas_deblender``: the measurement
plugins (`visitcal.measurement.plugins`) run by `SingleFrameMeasurementTask`, the deblender, the
primary flags, source selectors, and the measurement and application of aperture corrections.
"""

from .apply_ap_corr import (
    ApplyApCorrConfig,
    ApplyApCorrTask,
    NormalizedCalibrationFluxConfig,
    NormalizedCalibrationFluxTask,
)
from .aperture_excess import ApertureExcessConfig, ApertureExcessResult, aperture_excess, apply_aperture_excess_cut
from .deblend import SourceDeblendConfig, SourceDeblendResult, SourceDeblendTask
from .measure_ap_corr import MeasureApCorrConfig, MeasureApCorrError, MeasureApCorrResult, MeasureApCorrTask
from .object_size_star_selector import ObjectSizeStarSelectorConfig, ObjectSizeStarSelectorTask
from .primary_flags import set_primary_flags
from .single_frame_measurement import SingleFrameMeasurementConfig, SingleFrameMeasurementTask
from .source_selector import ScienceSourceSelectorConfig, ScienceSourceSelectorTask

__all__ = [
    "ApertureExcessConfig",
    "ApertureExcessResult",
    "ApplyApCorrConfig",
    "ApplyApCorrTask",
    "MeasureApCorrConfig",
    "MeasureApCorrError",
    "MeasureApCorrResult",
    "MeasureApCorrTask",
    "NormalizedCalibrationFluxConfig",
    "NormalizedCalibrationFluxTask",
    "ObjectSizeStarSelectorConfig",
    "ObjectSizeStarSelectorTask",
    "ScienceSourceSelectorConfig",
    "ScienceSourceSelectorTask",
    "SingleFrameMeasurementConfig",
    "SingleFrameMeasurementTask",
    "SourceDeblendConfig",
    "SourceDeblendResult",
    "SourceDeblendTask",
    "aperture_excess",
    "apply_aperture_excess_cut",
    "set_primary_flags",
]
