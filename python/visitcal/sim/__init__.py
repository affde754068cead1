"""A GalSim visit simulator that keeps the truth: ``visitcal.sim`` (the ``sim`` extra).

It renders post-ISR images of a camera of detectors on a focal plane (presets ``lsst`` and
``small``) for dithered visits of one or two snaps: stars from a reference catalog and galaxies
convolved with a PSF that varies over the focal plane (Kolmogorov atmosphere and aberrated
optics), a TAN-SIP distortion, sky with a gradient, Poisson and read noise, cosmic rays,
saturation with bleed trails and bad columns. It writes them with everything needed to judge a
pipeline: true positions and fluxes, WCS, photometric calibration, background, cosmic-ray pixels,
and the true PSF at any position.

>>> from visitcal.sim import SimConfig, simulate, SimRepository
>>> summary = simulate(SimConfig(n_visits=2, n_detectors=4, seed=1), "repo")   # doctest: +SKIP
>>> repo = SimRepository("repo")                                               # doctest: +SKIP
>>> psf = repo.true_psf(1000, 0); psf.compute_shape(1000.0, 1000.0)            # doctest: +SKIP

Command line: ``visitcal sim OUT [--visits N] [--detectors M] [--preset small|lsst] [--band r]
[--snaps 1|2] [--seed S] [--overwrite]``. The repository layout is in `visitcal.sim.repository`.
"""

from .camera import SimCamera, SimDetector
from .config import BANDS, CAMERA_PRESETS, CameraConfig, SimConfig
from .psf import OpticsDesign, TruePsf, VisitAtmosphere
from .repository import SimRepository, SimSummary, post_isr_image_path, simulate

__all__ = [
           "BANDS",
           "CAMERA_PRESETS",
           "CameraConfig",
           "OpticsDesign",
           "SimCamera",
           "SimConfig",
           "SimDetector",
           "SimRepository",
           "SimSummary",
           "TruePsf",
           "VisitAtmosphere",
           "post_isr_image_path",
           "simulate",
]
