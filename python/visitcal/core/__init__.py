"""The data model, in the spirit of LSST's ``afw``: geometry, images and exposures, footprints, source
ids, Chebyshev bounded fields, aperture-correction maps, photometric calibrations, WCS helpers, the
sky map, and the persistence of model components in FITS binary tables.

Conventions used throughout visitcal: pixel centres sit at integer coordinates (the centre of the
first pixel of an image whose ``xy0`` is (0, 0) is (0.0, 0.0) and its edges are at -0.5 and 0.5);
images are numpy arrays indexed ``(y, x)`` with an ``xy0`` origin in the parent (detector) frame;
fluxes are instrumental (ADU or electrons) until a `PhotoCalib` turns them into nJy.

Nothing in `visitcal.core` imports any other part of visitcal except the compiled kernels.
"""

from .apcorr import ApCorrMap
from .atomic import atomic_write, atomic_write_fits
from .chebyshev import ChebyshevBoundedField, ChebyshevBoundedFieldControl
from .footprint import Footprint, FootprintSet, HeavyFootprint
from .geom import Box2I
from .image import Detector, Exposure, Mask, MaskedImage, MaskPlanes, UnknownMaskPlaneError, VisitInfo
from .persistence import PersistenceError
from .photocalib import PhotoCalib, make_photo_calib_from_calib_zero_point
from .skymap import SimpleSkyMap
from .table import DetectorVisitIdGenerator, unpack_source_ids
from .wcs import make_tan_sip_wcs, pixel_to_sky, read_wcs, sky_to_pixel, wcs_to_header

__all__ = [
    "ApCorrMap",
    "Box2I",
    "ChebyshevBoundedField",
    "ChebyshevBoundedFieldControl",
    "Detector",
    "DetectorVisitIdGenerator",
    "Exposure",
    "Footprint",
    "FootprintSet",
    "HeavyFootprint",
    "Mask",
    "MaskPlanes",
    "MaskedImage",
    "PersistenceError",
    "PhotoCalib",
    "SimpleSkyMap",
    "UnknownMaskPlaneError",
    "VisitInfo",
    "atomic_write",
    "atomic_write_fits",
    "make_photo_calib_from_calib_zero_point",
    "make_tan_sip_wcs",
    "pixel_to_sky",
    "read_wcs",
    "sky_to_pixel",
    "unpack_source_ids",
    "wcs_to_header",
]
