"""Reading and writing exposures (visitcal's own FITS layout, LSST calexps, DECam CP triplets) and
catalogs (Parquet, FITS tables).

Every reading error is a `FitsReadError` (an `OSError` and a `ValueError`) whose message names the
file and the HDU or header field at fault (a malformed JSON file: a `JsonReadError`, a `ValueError` naming the
file and the field); writes are atomic (`visitcal.core.atomic_write`).
"""

from __future__ import annotations

__all__ = [
    "VisitcalIOError",
    "FitsReadError",
    "FitsWriteError",
    "JsonReadError",
    "json_fields",
    "read_json",
    "read_exposure",
    "read_mask",
    "write_exposure",
    "read_lsst_calexp",
    "read_afw_components",
    "read_afw_exposure_catalog",
    "read_decam_cp",
    "CatalogIOError",
    "read_catalog",
    "write_catalog",
    "read_footprints",
    "write_footprints",
]


def _rebuild(cls, message, path, hdu):
    return cls(message, path=path, hdu=hdu)


class VisitcalIOError(OSError):
    """A file cannot be read or written. ``path`` and ``hdu`` (when known) name what is at fault."""

    def __init__(self, message: str, *, path=None, hdu=None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.hdu = hdu

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self):
        return (_rebuild, (type(self), self.args[0], self.path, self.hdu))


class FitsReadError(VisitcalIOError, ValueError):
    """A FITS file is missing, truncated or malformed (missing HDU, wrong shape, bad card …)."""


class FitsWriteError(VisitcalIOError):
    """An exposure cannot be written (a component cannot be persisted, a header card is invalid)."""


from ..core.jsonfile import JsonReadError, json_fields, read_json  # noqa: E402
from .catalog import CatalogIOError, read_catalog, write_catalog  # noqa: E402
from .decam import read_decam_cp  # noqa: E402
from .fits import read_exposure, read_mask, write_exposure  # noqa: E402
from .footprints import read_footprints, write_footprints  # noqa: E402
from .lsst import read_lsst_calexp  # noqa: E402
from .afw import read_afw_components, read_afw_exposure_catalog  # noqa: E402
