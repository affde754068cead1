"""visitcal: single-visit PSF, aperture-correction and calibration processing of survey images.

An independent implementation of the Rubin Observatory (LSST) single-visit stages with a C++17/Eigen
core: finalize characterization (PSF and aperture corrections refitted with stars reserved
consistently across visits), calibration (detection, measurement, TAN-SIP astrometry, photometric
zero point) and the reprocessing of each visit image into a calibrated (nJy) image with its source
catalog.

The package is grouped by domain, the way LSST's packages are:

=========================  ==================================================================
`visitcal.core`            data model (``afw``): geometry, exposures, footprints, calibrations
`visitcal.io`              FITS and Parquet files, DECam CP, SExtractor LDAC, LSST calexps
`visitcal.detection`       background, detection, cosmic rays, snaps (``meas_algorithms``)
`visitcal.psf`             PSF models and determiners (pixel grid, PCA)
`visitcal.measurement`     plugins, deblender, selectors, aperture corrections (``meas_base``)
`visitcal.calib`           reference catalogs, matchers, TAN-SIP fit, zero point (``meas_astrom``)
`visitcal.tasks`           the LSST tasks (``pipe_tasks``, ``drp_tasks``)
`visitcal.sim`             GalSim visit simulator with truth (the ``sim`` extra)
`visitcal.pipeline`        data repository, per-detector units, resume
`visitcal.qa`              metrics, figures and the HTML report, with truth (the ``qa`` extra)
`visitcal.cli`             the ``visitcal`` command
=========================  ==================================================================

Each subpackage imports only from those listed before it in this table (`visitcal.core` from none).
The names most users need are also available here, e.g. ``visitcal.read_exposure`` and
``visitcal.CalibrateTask``; they are imported on first use, so ``import visitcal`` stays cheap.

Conventions used throughout: pixel centres sit at integer coordinates; images are numpy arrays
indexed (y, x) with an ``xy0`` origin in the parent frame; fluxes are in instrumental counts (ADU or
electrons) until a `PhotoCalib` turns them into nJy.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("visitcal")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

#: Public name -> the subpackage that defines it; imported lazily by `__getattr__` (PEP 562).
_EXPORTS = {
    # data model
    "ApCorrMap": "core",
    "Box2I": "core",
    "ChebyshevBoundedField": "core",
    "Detector": "core",
    "DetectorVisitIdGenerator": "core",
    "Exposure": "core",
    "Mask": "core",
    "MaskedImage": "core",
    "PhotoCalib": "core",
    "VisitInfo": "core",
    # files
    "read_catalog": "io",
    "read_decam_cp": "io",
    "read_exposure": "io",
    "read_lsst_calexp": "io",
    "write_catalog": "io",
    "write_exposure": "io",
    # PSF models
    "FixedImagePsf": "psf",
    "GaussianPsf": "psf",
    "PcaPsf": "psf",
    "PixelGridPsf": "psf",
    "Psf": "psf",
    # tasks and their configs
    "CalibrateConfig": "tasks",
    "CalibrateTask": "tasks",
    "CharacterizeImageConfig": "tasks",
    "CharacterizeImageTask": "tasks",
    "ComputeExposureSummaryStatsConfig": "tasks",
    "ComputeExposureSummaryStatsTask": "tasks",
    "ConsolidateFinalizeCharacterizationDetectorConfig": "tasks",
    "ConsolidateFinalizeCharacterizationDetectorTask": "tasks",
    "FinalizeCharacterizationConfig": "tasks",
    "FinalizeCharacterizationDetectorTask": "tasks",
    "FinalizeCharacterizationTask": "tasks",
    "FindSourcesConfig": "tasks",
    "FindSourcesTask": "tasks",
    "IsolatedStarAssociationConfig": "tasks",
    "IsolatedStarAssociationTask": "tasks",
    "ReprocessVisitImageConfig": "tasks",
    "ReprocessVisitImageTask": "tasks",
    "ReserveIsolatedStarsConfig": "tasks",
    "ReserveIsolatedStarsTask": "tasks",
    "UpdateVisitSummaryTask": "tasks",
    # simulator and repositories
    "SimConfig": "sim",
    "SimRepository": "sim",
    "simulate": "sim",
    "Repository": "pipeline",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name):
    """Import a public name from its subpackage on first use (PEP 562)."""
    try:
        where = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'visitcal' has no attribute {name!r}") from None
    value = getattr(import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
