"""The afw FITS archive: how the LSST Science Pipelines persist an exposure's or a catalog's components.

An afw file (a calexp / visit_image, a SourceCatalog, an ExposureCatalog) stores its non-pixel parts in an
*archive* that follows the main HDUs:

- one ``ARCHIVE_INDEX`` binary table (``EXTTYPE = 'ARCHIVE_INDEX'``): a row per (object, catalog) with the
  columns ``id`` (the object's archive id, 1-based), ``cat.archive`` (which ``ARCHIVE_DATA`` table holds the
  rows, 1-based in file order), ``cat.persistable`` (which of the object's own catalogs this is, 0-based),
  ``row0`` and ``nrows`` (the rows of that table that belong to the object), ``name`` (the persisted class,
  e.g. ``PhotoCalib``) and ``module`` (its Python module);
- one ``ARCHIVE_DATA`` binary table per persisted catalog (``AR_NAME`` card: the class that wrote it).

Objects point at each other by archive id (a PhotoCalib's ``field`` column is the id of its
ChebyshevBoundedField), and the file points at its components with primary-header cards
``ARCHIVE_ID_<COMPONENT>`` (``SKYWCS``, ``PHOTOCALIB``, ``PSF``, ``APCORRMAP``, ``DETECTOR``, ``FILTER``...).
The HDU holding the archive index is found by its ``EXTTYPE`` (afw writes no ``EXTNAME`` in older files),
or by the primary's ``AR_HDU`` card (1-based).

This module reads that structure (facts of the format, from the files; no LSST code) and leaves the
meaning of each class to its reader (`visitcal.io.afw`).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.units import UnitsWarning

from . import FitsReadError

__all__ = ["AfwArchive", "ArchiveEntry", "afw_string", "hdu_type"]


def hdu_type(hdu) -> str:
    """The afw role of an HDU: its ``EXTTYPE`` card (``IMAGE``, ``MASK``, ``VARIANCE``, ``ARCHIVE_INDEX``,
    ``ARCHIVE_DATA``), else its ``EXTNAME``, else ``""``."""
    h = hdu.header
    return str(h.get("EXTTYPE") or h.get("EXTNAME") or "").strip()


@dataclasses.dataclass(frozen=True)
class ArchiveEntry:
    """One row of the archive index: ``rows`` of ``ARCHIVE_DATA`` table ``catalog`` (1-based) hold catalog
    ``part`` (0-based) of object ``id``, of class ``name``."""

    id: int
    catalog: int
    part: int
    row0: int
    nrows: int
    name: str
    module: str


class AfwArchive:
    """The archive of an open afw FITS file.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The open file.
    path : str or os.PathLike
        Its path, for messages.
    index_hdu : int, optional
        The 0-based HDU of the ``ARCHIVE_INDEX`` table; default: the first HDU whose ``EXTTYPE`` is
        ``ARCHIVE_INDEX`` (else the primary's ``AR_HDU`` card, 1-based).

    Raises
    ------
    FitsReadError
        No archive index, or an index row pointing outside the file.
    """

    def __init__(self, hdul, path, *, index_hdu: int | None = None):
        self.path = path
        self.hdul = hdul
        if index_hdu is None:
            index_hdu = next((k for k, h in enumerate(hdul) if hdu_type(h) == "ARCHIVE_INDEX"), None)
        if index_hdu is None and hdul[0].header.get("AR_HDU") is not None:
            index_hdu = int(hdul[0].header["AR_HDU"]) - 1
        if index_hdu is None or not 0 < index_hdu < len(hdul) or not isinstance(hdul[index_hdu], fits.BinTableHDU):
            raise FitsReadError(f"{path}: no afw archive (no ARCHIVE_INDEX table)", path=path, hdu="ARCHIVE_INDEX")
        self.index_hdu = index_hdu
        # the data tables follow the index, in the order cat.archive counts them
        self.data_hdus = [k for k in range(index_hdu + 1, len(hdul)) if hdu_type(hdul[k]) == "ARCHIVE_DATA"]
        table = hdul[index_hdu].data

        def column(name):  # version-1 files write "cat_archive" where later ones write "cat.archive"
            return table[name] if name in table.names else table[name.replace(".", "_")]

        try:
            cols = [np.asarray(column(c)) for c in ("id", "cat.archive", "cat.persistable", "row0", "nrows")]
            names = [str(s).strip() for s in table["name"]]
            modules = [str(s).strip() for s in table["module"]] if "module" in table.names else [""] * len(table)
        except KeyError as err:
            raise FitsReadError(f"{path}[{index_hdu}]: ARCHIVE_INDEX lacks column {err}", path=path,
                                hdu="ARCHIVE_INDEX") from None
        self.entries = [ArchiveEntry(int(i), int(c), int(p), int(r), int(n), name, mod)
                        for i, c, p, r, n, name, mod in zip(*cols, names, modules)]
        for e in self.entries:
            if not 1 <= e.catalog <= len(self.data_hdus):
                raise FitsReadError(f"{path}: archive object {e.id} ({e.name}) points at data table {e.catalog}, "
                                    f"but the file has {len(self.data_hdus)}", path=path, hdu="ARCHIVE_INDEX")
        self._tables: dict[int, Table] = {}

    def ids(self) -> list[int]:
        """Every object id, sorted."""
        return sorted({e.id for e in self.entries})

    def name(self, object_id: int) -> str:
        """The class name of object ``object_id`` (`KeyError` naming the file when absent)."""
        for e in self.entries:
            if e.id == object_id:
                return e.name
        raise KeyError(f"{self.path}: no archive object {object_id}")

    def class_of(self, object_id: int) -> str:
        """The class name of object ``object_id``; a `FitsReadError` naming the file when absent (the readers'
        check, where `name` raises `KeyError`)."""
        try:
            return self.name(object_id)
        except KeyError:
            raise FitsReadError(f"{self.path}: no archive object {object_id}", path=self.path,
                                hdu="ARCHIVE_INDEX") from None

    def _table(self, catalog: int) -> Table:
        if catalog not in self._tables:
            hdu = self.hdul[self.data_hdus[catalog - 1]]
            with warnings.catch_warnings():  # afw's units ("electron adu^-1") are not FITS units: not ours to judge
                warnings.simplefilter("ignore", UnitsWarning)
                self._tables[catalog] = Table.read(hdu, mask_invalid=False, character_as_bytes=False)
        return self._tables[catalog]

    def catalogs(self, object_id: int) -> list[Table]:
        """The rows of each of object ``object_id``'s catalogs, in its own order (``cat.persistable``)."""
        parts = sorted((e for e in self.entries if e.id == object_id), key=lambda e: e.part)
        if not parts:
            raise KeyError(f"{self.path}: no archive object {object_id}")
        return [self._table(e.catalog)[e.row0:e.row0 + e.nrows] for e in parts]

    def components(self) -> dict[str, int]:
        """``{component: archive id}`` from the primary header's ``ARCHIVE_ID_<COMPONENT>`` cards (an id of 0
        means absent and is left out), e.g. ``{"SKYWCS": 1, "PHOTOCALIB": 2}``."""
        out = {}
        for key, value in self.hdul[0].header.items():
            if key.startswith("ARCHIVE_ID_") and int(value) > 0:
                out[key[len("ARCHIVE_ID_"):]] = int(value)
        return out


def afw_string(value) -> str:
    """An afw string cell as a Python `str`.

    afw writes strings either as fixed-width ``nA`` columns (astropy gives a `str`) or as variable-length
    character arrays (``1QA(n)``), which astropy returns as an array of single characters whose blanks have
    been stripped to ``""`` (a char array's elements lose trailing blanks). Each empty element is a blank
    here, so ``"detector 1"`` survives; trailing NULs and blanks of the whole string are dropped.
    """
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("ascii", "replace").rstrip("\x00 ")
    if isinstance(value, (str, np.str_)):
        return str(value).rstrip("\x00 ")
    arr = np.asarray(value)
    if arr.dtype.kind == "u":  # a byte column
        return arr.astype(np.uint8).tobytes().decode("ascii", "replace").rstrip("\x00 ")
    chars = [c.decode("ascii", "replace") if isinstance(c, bytes) else str(c) for c in arr.ravel()]
    return "".join(c if c else " " for c in chars).rstrip("\x00 ")
