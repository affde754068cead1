"""Image-level work before measurement, in the spirit of LSST's ``meas_algorithms``: convolution,
background estimation and subtraction, source detection, cosmic-ray repair, replacing sources by
noise, combining snaps and placing sky sources.
"""

from .background import (
    Background,
    BackgroundConfig,
    BackgroundError,
    BackgroundList,
    SubtractBackgroundConfig,
    SubtractBackgroundResult,
    SubtractBackgroundTask,
)
from .convolve import convolve, gaussian_smooth
from .cosmic_rays import RepairConfig, RepairResult, RepairTask, TooManyCosmicRaysError, find_cosmic_rays
from .detection import DetectionResult, SourceDetectionConfig, SourceDetectionTask, detect_footprints
from .noise_replacer import NoiseReplacer, NoiseReplacerConfig
from .sky_sources import SkyObjectsConfig, SkyObjectsTask
from .snap_combine import combine_snaps

__all__ = [
    "Background",
    "BackgroundConfig",
    "BackgroundError",
    "BackgroundList",
    "DetectionResult",
    "NoiseReplacer",
    "NoiseReplacerConfig",
    "RepairConfig",
    "RepairResult",
    "RepairTask",
    "SkyObjectsConfig",
    "SkyObjectsTask",
    "SourceDetectionConfig",
    "SourceDetectionTask",
    "SubtractBackgroundConfig",
    "SubtractBackgroundResult",
    "SubtractBackgroundTask",
    "TooManyCosmicRaysError",
    "combine_snaps",
    "convolve",
    "detect_footprints",
    "find_cosmic_rays",
    "gaussian_smooth",
]
