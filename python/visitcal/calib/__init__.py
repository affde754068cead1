"""Astrometric and photometric calibration, in the spirit of LSST's ``meas_astrom`` and the
photometric calibration of ``pipe_tasks``: the reference-catalog loader, source matchers (nearest
neighbour and LSST's pessimistic pattern matcher B), the TAN-SIP WCS fit, the astrometry task that
ties them together, and the photometric zero point.
"""

from .astrometry import AstrometryConfig, AstrometryError, AstrometryResult, AstrometryTask
from .fit_tan_sip_wcs import FitTanSipWcsConfig, FitTanSipWcsResult, FitTanSipWcsTask
from .match_nearest import match_nearest, match_nearest_sky
from .match_pessimistic_b import MatchPessimisticBConfig, MatchPessimisticBResult, MatchPessimisticBTask
from .photo_cal import PhotoCalConfig, PhotoCalError, PhotoCalResult, PhotoCalTask
from .ref_loader import ReferenceCatalogError, ReferenceObjectLoader

__all__ = [
    "AstrometryConfig",
    "AstrometryError",
    "AstrometryResult",
    "AstrometryTask",
    "FitTanSipWcsConfig",
    "FitTanSipWcsResult",
    "FitTanSipWcsTask",
    "MatchPessimisticBConfig",
    "MatchPessimisticBResult",
    "MatchPessimisticBTask",
    "PhotoCalConfig",
    "PhotoCalError",
    "PhotoCalResult",
    "PhotoCalTask",
    "ReferenceCatalogError",
    "ReferenceObjectLoader",
    "match_nearest",
    "match_nearest_sky",
]
