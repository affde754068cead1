"""What every PSF determiner shares (as meas_algorithms' ``BasePsfDeterminerTask``): its typed failures
and its result.

A determiner fits a PSF model to the stamps of `visitcal.psf.candidates.PsfCandidates` and returns a
`PsfDeterminerResult`. Two are implemented: the Piff-style pixel grid (``"pixelgrid"``,
`visitcal.psf.pixel_grid`) and the PCA determiner (``"pca"``, `visitcal.psf.pca`). Both call::

    result = Determiner(config).determine_psf(candidates, bbox, reserved=reserved)

with ``bbox`` the detector's `~visitcal.core.geom.Box2I` (the spatial polynomial's coordinates are scaled
to [-1, 1] over it) and ``reserved`` an optional boolean per candidate: reserved stars are never fitted,
but their residuals are reported, which is how the reserve tests the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .models import Psf

__all__ = ["PsfDeterminerError", "PsfDeterminerResult", "PsfTooFewStarsError"]


class PsfDeterminerError(RuntimeError):
    """A PSF fit that could not be made (LSST's AlgorithmError for the PSF determiners)."""


class PsfTooFewStarsError(PsfDeterminerError):
    """Fewer usable stars than the spatial model has free parameters (LSST ``PiffTooFewGoodStarsError``).

    Attributes
    ----------
    n_stars : int
        Stars left for the fit (not reserved, not rejected, with enough usable pixels).
    n_required : int
        Free spatial parameters, ``(order + 1) (order + 2) / 2``.
    """

    def __init__(self, n_stars: int, n_required: int, what: str = ""):
        self.n_stars = int(n_stars)
        self.n_required = int(n_required)
        super().__init__(f"too few PSF stars{(' ' + what) if what else ''}: {self.n_stars} usable, "
                         f"the spatial model needs at least {self.n_required}")


@dataclass
class PsfDeterminerResult:
    """A fitted PSF and what became of each candidate.

    Attributes
    ----------
    psf : `visitcal.psf.Psf`
        The fitted model.
    used : (m,) bool
        Candidate entered the final fit (LSST ``calib_psf_used``): not reserved, not dropped for too few
        usable pixels, not rejected as an outlier.
    reserved : (m,) bool
        The ``reserved`` argument (all False without one).
    flux : (m,) float64
        Fitted flux of each candidate under the final model (NaN for a star that could not be fitted).
    chi2, dof : (m,) float64, (m,) int64
        Each candidate's chi-square and degrees of freedom under the final model, reserved stars
        included (NaN / 0 when it could not be fitted).
    status : (m,) str
        ``"used"``, ``"reserved"``, ``"outlier"``, ``"too_few_pixels"``, ...
    metadata : dict
        LSST's ``spatialFitChi2``, ``numAvailStars``, ``numGoodStars``, ``avgX``, ``avgY``, plus
        ``n_iter``.
    x, y : (m,) float64 or None
        Each candidate's centre as fitted (a determiner that refits centres), else None.
    """

    psf: Psf
    used: np.ndarray
    reserved: np.ndarray
    flux: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray
    status: np.ndarray
    metadata: dict = field(default_factory=dict)
    x: np.ndarray | None = None
    y: np.ndarray | None = None
