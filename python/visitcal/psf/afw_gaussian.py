"""afw's ``GaussianPsf`` from an afw archive, as visitcal's `GaussianPsf`.

afw persists a ``GaussianPsf`` as one archive catalog row with three fields: ``width`` and ``height`` (int, the
dimensions in pixels of the images its ``computeKernelImage`` / ``computeImage`` return) and ``sigma``
(double, the Gaussian's standard deviation in pixels). Its images sample the circular Gaussian at pixel centres
and are normalised to unit sum, as `GaussianPsf`'s are; afw's average position is the origin, as ours.

visitcal's `GaussianPsf` draws square stamps of an odd side: a ``width x width`` file is read exactly (its
``size``). afw lets the two dimensions differ; such a PSF is read with the larger one as the side, so its
images are the same Gaussian on a stamp one or more rows or columns larger than afw's, normalised over that
stamp: the pixel values differ from afw's by the fraction of the light in the extra rows (for the smallest
margin ``m`` px beyond afw's edge of half-width ``h``, about ``exp(-h^2 / (2 sigma^2))``, 4e-6 at ``h = 5
sigma``). An even dimension (afw's kernels are centred on a pixel, so it writes odd ones) is an error.

This module registers `read_gaussian_psf` with `visitcal.io.afw.COMPONENT_READERS` when `visitcal.psf` is
imported (the reader builds a PSF model: the layer above ``io``), so that `visitcal.io.read_lsst_calexp`
attaches it as the exposure's ``psf``.
"""

from __future__ import annotations

import logging
import math

from ..io import FitsReadError
from ..io.afw_archive import AfwArchive
from .models import GaussianPsf

__all__ = ["read_gaussian_psf"]

log = logging.getLogger(__name__)


def read_gaussian_psf(archive: AfwArchive, object_id: int, **_options) -> GaussianPsf:
    """Read afw's ``GaussianPsf`` (one row: ``width``, ``height``, ``sigma``, pixels) from the archive.

    Parameters
    ----------
    archive : `visitcal.io.afw_archive.AfwArchive`
    object_id : int
        The object's archive id (a file's ``ARCHIVE_ID_PSF``).
    **_options
        The options every component reader receives (``trust_pickle``); unused.

    Returns
    -------
    psf : `GaussianPsf`
        ``GaussianPsf(sigma, size=max(width, height))``, average position (0, 0) as afw's.

    Raises
    ------
    FitsReadError
        No such object, not a GaussianPsf, not one row with those three fields, a sigma that is not positive
        and finite, or a dimension that is not odd and positive.
    """
    where = f"{archive.path}: archive object {object_id}"
    name = archive.class_of(object_id)
    if name != "GaussianPsf":
        raise FitsReadError(f"{where} is a {name}, not a GaussianPsf", path=archive.path, hdu="ARCHIVE_INDEX")
    table = archive.catalogs(object_id)[0]
    missing = [c for c in ("width", "height", "sigma") if c not in table.colnames]
    if len(table) != 1 or missing:
        raise FitsReadError(f"{where} (GaussianPsf): expected one row with width, height and sigma, got "
                            f"{len(table)} rows, columns {table.colnames}", path=archive.path, hdu="ARCHIVE_DATA")
    width, height, sigma = int(table["width"][0]), int(table["height"][0]), float(table["sigma"][0])
    if not (sigma > 0 and math.isfinite(sigma)):
        raise FitsReadError(f"{where} (GaussianPsf): sigma {sigma} is not positive and finite", path=archive.path,
                            hdu="ARCHIVE_DATA")
    if width < 1 or height < 1 or width % 2 == 0 or height % 2 == 0:
        raise FitsReadError(f"{where} (GaussianPsf): dimensions {width} x {height} are not odd and positive",
                            path=archive.path, hdu="ARCHIVE_DATA")
    if width != height:
        log.info("%s (GaussianPsf): %d x %d px read as a square stamp of %d px (visitcal's GaussianPsf is square)",
                 where, width, height, max(width, height))
    return GaussianPsf(sigma, size=max(width, height))


def _register() -> None:
    """Add `read_gaussian_psf` to the afw component readers (`visitcal.io.afw.COMPONENT_READERS`)."""
    from ..io.afw import COMPONENT_READERS

    COMPONENT_READERS.setdefault("GaussianPsf", read_gaussian_psf)


_register()
