"""Astrometric and photometric calibration, in the spirit of LSST's ``meas_astrom`` and the
photometric calibration of ``pipe_tasks``: the reference-catalog loader, source matchers (nearest
neighbour, LSST's pessimistic pattern matcher B and the offset search that backs it up), the WCS fits (an
affine correction on top of the camera's distortion, LSST's current default, and a full TAN-SIP fit), the
WCS check, the astrometry task that ties them together, the photometric zero point, and nested HEALPix
pixel indices (the order of LSST's isolated-star table).
"""

from .astrometry import AstrometryConfig, AstrometryError, AstrometryResult, AstrometryTask
from .fit_affine_wcs import FitAffineWcsConfig, FitAffineWcsResult, FitAffineWcsTask
from .fit_tan_sip_wcs import AstrometryFitError, FitTanSipWcsConfig, FitTanSipWcsResult, FitTanSipWcsTask
from .healpix import healpix_nest_pixel
from .match_nearest import match_nearest, match_nearest_sky
from .match_offset import MatchOffsetConfig, MatchOffsetResult, MatchOffsetTask
from .match_pessimistic_b import MatchPessimisticBConfig, MatchPessimisticBResult, MatchPessimisticBTask
from .photo_cal import PhotoCalConfig, PhotoCalError, PhotoCalResult, PhotoCalTask
from .ref_loader import ReferenceCatalogError, ReferenceObjectLoader
from .wcs_check import check_wcs

__all__ = [
    "AstrometryConfig",
    "AstrometryError",
    "AstrometryResult",
    "AstrometryFitError",
    "AstrometryTask",
    "FitAffineWcsConfig",
    "FitAffineWcsResult",
    "FitAffineWcsTask",
    "FitTanSipWcsConfig",
    "FitTanSipWcsResult",
    "FitTanSipWcsTask",
    "MatchOffsetConfig",
    "MatchOffsetResult",
    "MatchOffsetTask",
    "MatchPessimisticBConfig",
    "MatchPessimisticBResult",
    "MatchPessimisticBTask",
    "PhotoCalConfig",
    "PhotoCalError",
    "PhotoCalResult",
    "PhotoCalTask",
    "ReferenceCatalogError",
    "ReferenceObjectLoader",
    "check_wcs",
    "healpix_nest_pixel",
    "match_nearest",
    "match_nearest_sky",
]
