"""Point-spread functions: the `Psf` interface and its simple models (`GaussianPsf`, `FixedImagePsf`),
PSF candidates cut around stars, and the two determiners that fit a spatially varying model to them:
a Piff-style pixel grid with a polynomial over the detector (`PixelGridPsfDeterminer`, `PixelGridPsf`)
and LSST's ``psfex``-free principal-component model (`PcaPsfDeterminer`, `PcaPsf`).

Every model answers the same questions at a parent-frame position ``(x, y)`` (pixel centres at
integers): ``compute_image`` (the PSF shifted to the sub-pixel position), ``compute_kernel_image``
(centred), ``compute_shape`` (adaptive moments) and ``compute_aperture_flux``, and round-trips
losslessly through FITS.
"""

from .candidates import PsfCandidates, PsfCandidatesConfig, make_psf_candidates
from .checks import CHECKS, PsfCheckConfig, PsfCheckResult, check_psf_model
from .determiner import PsfDeterminerError, PsfDeterminerResult, PsfFitError, PsfTooFewStarsError
from .models import FixedImagePsf, GaussianPsf, Moments, Psf
from .pca import PcaPsf, PcaPsfDeterminer, PcaPsfDeterminerConfig
from .pixel_grid import PixelGridPsf, PixelGridPsfDeterminer, PixelGridPsfDeterminerConfig
from .vignets import candidates_from_vignets
from . import afw_piff  # noqa: F401 - registers LSST's PiffPsf reader with visitcal.io.afw
from . import afw_gaussian  # noqa: F401 - registers afw's GaussianPsf reader with visitcal.io.afw

__all__ = [
    "CHECKS",
    "FixedImagePsf",
    "GaussianPsf",
    "Moments",
    "PcaPsf",
    "PcaPsfDeterminer",
    "PcaPsfDeterminerConfig",
    "PixelGridPsf",
    "PixelGridPsfDeterminer",
    "PixelGridPsfDeterminerConfig",
    "Psf",
    "PsfCandidates",
    "PsfCandidatesConfig",
    "PsfCheckConfig",
    "PsfCheckResult",
    "PsfDeterminerError",
    "PsfDeterminerResult",
    "PsfFitError",
    "PsfTooFewStarsError",
    "candidates_from_vignets",
    "check_psf_model",
    "make_psf_candidates",
]
