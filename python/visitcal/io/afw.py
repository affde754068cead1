"""Readers of the components that afw persists in a FITS archive (`visitcal.io.afw_archive`).

A reader of one persisted class is ``read_<thing>(archive, object_id, **options) -> object``: it turns
archive object ``object_id`` (an `AfwArchive` id) into the visitcal object. `COMPONENT_READERS` maps
afw class names to readers; `read_afw_components` reads every component a file's primary header names
(``ARCHIVE_ID_<COMPONENT>`` cards) and *lists* the classes it has no reader for (never dropped silently);
`read_afw_exposure_catalog` reads an afw ExposureCatalog (a visit summary, a ``refit_psf_models`` table)
with its per-row objects.

Classes read here (facts of the format, from the files; no LSST code):

``ChebyshevBoundedField``
    ``order_x``, the bbox (``bbox_min``/``bbox_max`` points, or ``bbox_min_x`` ... scalars) and a flat
    ``coefficients`` array ordered by y order then x order: reshaped to ``(order_y + 1, order_x + 1)``,
    the layout of `visitcal.core.chebyshev.ChebyshevBoundedField`, whose map of the box onto ``[-1, 1]``
    (``x' = (2x - (xmin + xmax)) / W`` on the box's continuous edges) is afw's.
``PhotoCalib``
    ``calibrationMean`` (nJy/count), ``calibrationErr``, flag ``isConstant`` and ``field`` (the archive
    id of a ChebyshevBoundedField). A constant calibration gives ``PhotoCalib(mean, err)`` (afw stores an
    order-0 field on an empty box beside it, which is not read); a varying one gives
    ``PhotoCalib.from_field(field, err)`` with the *stored* ``calibrationMean`` kept as its mean (afw's
    persisted value, which afw computes as the field's mean over its box).
``ApCorrMap``
    rows ``(name, field)``: name -> ChebyshevBoundedField, in file order.
``FilterLabel``
    ``band`` and ``physical`` (each with an ``<name>_exists`` flag): a `FilterLabel`.
``Detector``
    name, id, serial, bbox, pixel size (mm), focal-plane position (mm), yaw, physical type, and the
    amplifiers (second catalog: name, gain, read noise, saturation, bbox): an `AfwDetector`, i.e. our
    `Detector` plus those afw fields. Its ``transformMap`` (AST transforms) is not read.
``VisitInfo``
    exposure/dark time (s), TAI date (afw ``DateTime`` nanoseconds: MJD(TAI) = 40587 + ns / 86400e9),
    UT1 (MJD), ERA, boresight RA/Dec, Az/Alt and rotation angle (radians in the file, degrees here),
    airmass, rotation type, observatory (radians/m), weather, instrument, id, focus z and the
    observation strings: an `AfwVisitInfo`, i.e. our `VisitInfo` plus those fields.

Read elsewhere: ``SkyWcs``/``TanWcs`` (`visitcal.io.afw_wcs`, registered below). The PSFs are PSF models, the
layer above this one, so their readers register themselves (the registry is open:
``COMPONENT_READERS[name] = reader``) when `visitcal.psf` is imported: ``PiffPsf`` (`visitcal.psf.afw_piff`)
and ``GaussianPsf`` (`visitcal.psf.afw_gaussian`). Other PSFs (``DoubleGaussianPsf``, ``PsfexPsf``,
``CoaddPsf``), ``TransmissionCurve``, ``ValidPolygon``, ``TransformMap`` are listed as unsupported when met.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Column, Table
from astropy.time import Time
from astropy.units import UnitsWarning
from erfa import ErfaWarning

from ..core.apcorr import ApCorrMap
from ..core.chebyshev import ChebyshevBoundedField
from ..core.geom import Box2I
from ..core.image import Detector, VisitInfo
from ..core.photocalib import PhotoCalib
from . import FitsReadError
from .afw_archive import AfwArchive, afw_string, hdu_type
from .afw_wcs import read_sky_wcs, read_tan_wcs

__all__ = [
    "AfwDetector",
    "AfwVisitInfo",
    "Amplifier",
    "COMPONENT_ATTRIBUTES",
    "COMPONENT_READERS",
    "FilterLabel",
    "LEGACY_ID_CARDS",
    "afw_component_ids",
    "read_afw_components",
    "read_afw_exposure_catalog",
    "read_ap_corr_map",
    "read_chebyshev_bounded_field",
    "read_detector",
    "read_filter_label",
    "read_photo_calib",
    "read_visit_info",
]

log = logging.getLogger(__name__)

#: afw's ``DateTime`` counts TAI nanoseconds from MJD 40587 (1970-01-01) on the TAI scale.
_DATETIME_EPOCH_MJD = 40587
_NS_PER_DAY = 86_400 * 10**9
#: afw ``VisitInfo.RotType`` values.
ROT_TYPES = {0: "UNKNOWN", 1: "SKY", 2: "HORIZON", 3: "MOUNT"}


# --- small helpers -------------------------------------------------------------------------------
def _where(archive: AfwArchive, object_id: int) -> str:
    try:
        name = archive.name(object_id)
    except KeyError:
        name = "?"
    return f"{archive.path}: archive object {object_id} ({name})"


def _fail(archive: AfwArchive, object_id: int, why: str) -> FitsReadError:
    return FitsReadError(f"{_where(archive, object_id)}: {why}", path=archive.path, hdu="ARCHIVE_DATA")


def _parts(archive: AfwArchive, object_id: int, expect: str | None = None) -> list[Table]:
    """The object's catalogs, checked: it exists, is of class ``expect``, and its rows are in the tables."""
    name = archive.class_of(object_id)
    if expect is not None and name != expect:
        raise _fail(archive, object_id, f"expected a {expect}")
    tables = archive.catalogs(object_id)
    entries = sorted((e for e in archive.entries if e.id == object_id), key=lambda e: e.part)
    for e, t in zip(entries, tables):
        if e.row0 < 0 or len(t) != e.nrows:
            raise _fail(archive, object_id, f"rows {e.row0}..{e.row0 + e.nrows - 1} of data table {e.catalog} "
                                            f"lie outside it")
    return tables


def _flags(archive: AfwArchive, object_id: int, part: int, row) -> dict[str, bool]:
    """The afw flag bits of ``row`` (column ``flags``) by their ``TFLAGn`` names."""
    entry = next(e for e in archive.entries if e.id == object_id and e.part == part)
    header = archive.hdul[archive.data_hdus[entry.catalog - 1]].header
    if "flags" not in row.colnames:
        return {}
    bits = np.atleast_1d(np.asarray(row["flags"], dtype=bool))
    return {str(header[f"TFLAG{k + 1}"]).strip(): bool(b) for k, b in enumerate(bits) if f"TFLAG{k + 1}" in header}


def _col(archive, object_id, row, *names):
    """The first of ``names`` present in ``row`` (afw renamed some columns between versions)."""
    for n in names:
        if n in row.colnames:
            return row[n]
    raise _fail(archive, object_id, f"no column {' or '.join(repr(n) for n in names)}")


def _point(archive, object_id, row, name) -> tuple[int, int]:
    """An afw ``Point2I`` field: a 2-element column ``name`` or the scalars ``name_x``, ``name_y``."""
    if name in row.colnames:
        x, y = np.asarray(row[name]).ravel()[:2]
        return int(x), int(y)
    return int(_col(archive, object_id, row, f"{name}_x")), int(_col(archive, object_id, row, f"{name}_y"))


def _box(archive, object_id, row, prefix="bbox") -> Box2I:
    """An afw ``Box2I``: ``<prefix>_min``/``_max`` points, or ``_min`` and ``_extent``."""
    x0, y0 = _point(archive, object_id, row, f"{prefix}_min")
    if f"{prefix}_max" in row.colnames or f"{prefix}_max_x" in row.colnames:
        x1, y1 = _point(archive, object_id, row, f"{prefix}_max")
    else:
        w, h = _point(archive, object_id, row, f"{prefix}_extent")
        x1, y1 = x0 + w - 1, y0 + h - 1
    return Box2I(x0, y0, x1, y1)


def _float(value) -> float:
    return float(np.asarray(value).ravel()[0]) if np.ndim(value) else float(value)


# --- readers -------------------------------------------------------------------------------------
def read_chebyshev_bounded_field(archive: AfwArchive, object_id: int, **options) -> ChebyshevBoundedField:
    """afw ``ChebyshevBoundedField`` -> `visitcal.core.chebyshev.ChebyshevBoundedField`.

    Parameters
    ----------
    archive : `AfwArchive`
    object_id : int
        The field's archive id.
    **options
        Ignored (the reader convention).

    Raises
    ------
    FitsReadError
        Missing columns, a coefficient count that is not a multiple of ``order_x + 1``, an empty box (afw
        writes one beside a constant PhotoCalib; such a field has no domain to evaluate on).
    """
    (table,) = _parts(archive, object_id, "ChebyshevBoundedField")[:1]
    row = table[0]
    order_x = int(_col(archive, object_id, row, "order_x"))
    bbox = _box(archive, object_id, row)
    coeffs = np.atleast_1d(np.asarray(_col(archive, object_id, row, "coefficients"), dtype=np.float64))
    if order_x < 0 or coeffs.size % (order_x + 1):
        raise _fail(archive, object_id, f"{coeffs.size} coefficients do not fill rows of order_x + 1 = {order_x + 1}")
    if bbox.empty:
        raise _fail(archive, object_id, f"empty bbox {bbox}: the field has no domain")
    try:
        return ChebyshevBoundedField(bbox, coeffs.reshape(-1, order_x + 1))
    except ValueError as err:
        raise _fail(archive, object_id, str(err)) from None


def read_photo_calib(archive: AfwArchive, object_id: int, **options) -> PhotoCalib:
    """afw ``PhotoCalib`` -> `visitcal.core.photocalib.PhotoCalib` (nJy per count).

    A constant calibration (flag ``isConstant``) gives ``PhotoCalib(calibrationMean, calibrationErr)``;
    otherwise the ChebyshevBoundedField ``field`` is read and the result is spatially varying
    (``is_constant`` False, ``field`` set) with afw's stored ``calibrationMean`` as its mean.
    """
    (table,) = _parts(archive, object_id, "PhotoCalib")[:1]
    row = table[0]
    mean = float(_col(archive, object_id, row, "calibrationMean"))
    err = float(_col(archive, object_id, row, "calibrationErr"))
    flags = _flags(archive, object_id, 0, row)
    constant = flags.get("isConstant", True)
    try:
        if constant:
            return PhotoCalib(mean, err)
        field = read_chebyshev_bounded_field(archive, int(_col(archive, object_id, row, "field")))
        return PhotoCalib._from_state(mean, err, field, field.bbox)
    except (ValueError, TypeError) as err_:
        if isinstance(err_, FitsReadError):
            raise
        raise _fail(archive, object_id, str(err_)) from None


def read_ap_corr_map(archive: AfwArchive, object_id: int, **options) -> ApCorrMap:
    """afw ``ApCorrMap`` -> `visitcal.core.apcorr.ApCorrMap`: each row's ``name`` -> its ``field``
    (a ChebyshevBoundedField, read with `read_chebyshev_bounded_field`), in file order."""
    (table,) = _parts(archive, object_id, "ApCorrMap")[:1]
    out = ApCorrMap()
    for row in table:
        name = afw_string(_col(archive, object_id, row, "name"))
        out[name] = read_chebyshev_bounded_field(archive, int(_col(archive, object_id, row, "field")))
    return out


@dataclasses.dataclass(frozen=True)
class FilterLabel:
    """afw's ``FilterLabel``: the abstract ``band`` (e.g. ``"r"``) and the ``physical`` filter name, each
    None when absent. visitcal keeps them in `VisitInfo` (``band``, ``physical_filter``)."""

    band: str | None = None
    physical: str | None = None


def read_filter_label(archive: AfwArchive, object_id: int, **options) -> FilterLabel:
    """afw ``FilterLabel`` -> `FilterLabel` (a field whose ``<name>_exists`` flag is clear is None)."""
    (table,) = _parts(archive, object_id, "FilterLabel")[:1]
    row = table[0]
    flags = _flags(archive, object_id, 0, row)
    values = {}
    for name in ("band", "physical"):
        present = flags.get(f"{name}_exists", name in row.colnames)
        values[name] = afw_string(row[name]) if present and name in row.colnames else None
    return FilterLabel(**values)


@dataclasses.dataclass(frozen=True)
class Amplifier:
    """One amplifier of an afw ``Detector``: ``name``, ``gain`` (e-/ADU), ``read_noise`` (e-),
    ``saturation`` (ADU) and its ``bbox`` in the assembled detector (0-based parent pixels)."""

    name: str
    gain: float
    read_noise: float
    saturation: float
    bbox: Box2I


@dataclasses.dataclass(frozen=True, eq=False)
class AfwDetector(Detector):
    """Our `Detector` with what afw's adds: ``serial``, ``physical_type`` and the ``amplifiers``
    (tuple of `Amplifier`). ``rotation`` holds afw's yaw (deg), ``pixel_size_mm`` the x pixel size."""

    serial: str = ""
    physical_type: str = ""
    amplifiers: tuple = ()


def read_detector(archive: AfwArchive, object_id: int, **options) -> AfwDetector:
    """afw ``Detector`` -> `AfwDetector` (its TransformMap, the AST camera geometry, is not read).

    Units as afw persists them (its ``TUNIT`` cards): pixel size and focal-plane position in mm; yaw in
    radians, given here in degrees as ``rotation``; gain in electron/adu, read noise in electrons.
    """
    tables = _parts(archive, object_id, "Detector")
    row = tables[0][0]
    amps = []
    if len(tables) > 1:
        for a in tables[1]:
            amps.append(Amplifier(name=afw_string(a["name"]), gain=float(a["gain"]),
                                  read_noise=float(a["readnoise"]) if "readnoise" in a.colnames else math.nan,
                                  saturation=float(a["saturation"]) if "saturation" in a.colnames else math.nan,
                                  bbox=_box(archive, object_id, a)))
    fp = (_float(row["fpPosition_x"]), _float(row["fpPosition_y"])) if "fpPosition_x" in row.colnames \
        else (math.nan, math.nan)
    name = afw_string(_col(archive, object_id, row, "name"))
    return AfwDetector(id=int(_col(archive, object_id, row, "id")), name=name,
                       bbox=_box(archive, object_id, row), focal_plane_center=fp,
                       rotation=math.degrees(float(row["yaw"])) if "yaw" in row.colnames else 0.0,
                       pixel_size_mm=float(row["pixelSize_x"]) if "pixelSize_x" in row.colnames else math.nan,
                       serial=afw_string(row["serial"]) if "serial" in row.colnames else "",
                       physical_type=afw_string(row["physicalType"]) if "physicalType" in row.colnames else "",
                       amplifiers=tuple(amps))


@dataclasses.dataclass(frozen=True, eq=False)
class AfwVisitInfo(VisitInfo):
    """Our `VisitInfo` with the afw fields it lacks.

    Parameters
    ----------
    dark_time : float
        Seconds (NaN when unknown).
    rotation_type : str or None
        ``UNKNOWN``, ``SKY``, ``HORIZON`` or ``MOUNT`` (afw ``RotType``).
    extras : tuple of (str, object)
        Every other afw field read, as ``(name, value)`` pairs in file order (``ut1`` MJD, ``era`` deg,
        ``boresight_az_alt`` deg, ``weather`` (air temperature C, pressure Pa, humidity %),
        ``instrument``, ``focus_z`` mm, ``observation_type``, ``science_program``, ``observation_reason``,
        ``object``); see `extra`.
    """

    dark_time: float = math.nan
    rotation_type: str | None = None
    extras: tuple = ()

    def extra(self, name: str, default=None):
        """The afw field ``name`` from `extras` (``default`` when absent)."""
        return dict(self.extras).get(name, default)


def read_visit_info(archive: AfwArchive, object_id: int, **options) -> AfwVisitInfo:
    """afw ``VisitInfo`` (archive form) -> `AfwVisitInfo`.

    Angles are radians in the file and degrees here; the date is afw's TAI nanoseconds since
    MJD 40587 (TAI), stored (as every `VisitInfo` date) in UTC; the observatory is (east longitude deg,
    latitude deg, elevation m). NaN stays NaN (unknown).
    """
    (table,) = _parts(archive, object_id, "VisitInfo")[:1]
    row = table[0]
    g = lambda name, default=math.nan: float(row[name]) if name in row.colnames else default  # noqa: E731
    deg = lambda name: math.degrees(g(name))  # noqa: E731
    s = lambda name: afw_string(row[name]) if name in row.colnames else None  # noqa: E731
    date = None
    if "tai" in row.colnames and int(row["tai"]) != 0:
        days, ns = divmod(int(row["tai"]), _NS_PER_DAY)
        date = Time(_DATETIME_EPOCH_MJD + days, ns / _NS_PER_DAY, format="mjd", scale="tai")
    obs = None
    if "latitude" in row.colnames:
        obs = (deg("longitude"), deg("latitude"), g("elevation"))
    visit_id = int(row["idnum"]) if "idnum" in row.colnames else (int(row["exposureid"]) if "exposureid" in
                                                                 row.colnames else None)
    extras = [("ut1", g("ut1")), ("era", deg("era")),
              ("boresight_az_alt", (deg("boresightazalt_az"), deg("boresightazalt_alt"))),
              ("weather", (g("airtemperature"), g("airpressure"), g("humidity")))]
    for key, col in (("instrument", "instrumentlabel"), ("observation_type", "observationType"),
                     ("science_program", "scienceProgram"), ("observation_reason", "observationReason"),
                     ("object", "object")):
        if col in row.colnames:
            extras.append((key, s(col)))
    if "focusz" in row.colnames:
        extras.append(("focus_z", g("focusz")))
    rot = int(row["rottype"]) if "rottype" in row.colnames else None
    with warnings.catch_warnings():  # a date past the leap-second table: ERFA's "dubious year", not an error
        warnings.simplefilter("ignore", ErfaWarning)
        return AfwVisitInfo(id=visit_id, exposure_time=g("exposuretime"), date=date, airmass=g("boresightairmass"),
                            boresight_ra_dec=(deg("boresightradec_ra"), deg("boresightradec_dec")),
                            boresight_rot_angle=deg("boresightrotangle"), observatory=obs,
                            dark_time=g("darktime"),
                            rotation_type=ROT_TYPES.get(rot, None if rot is None else str(rot)),
                            extras=tuple(extras))


#: afw class name -> reader. Open: other modules register theirs (``SkyWcs``, ``PiffPsf`` ...).
COMPONENT_READERS: dict[str, Callable] = {
    "ChebyshevBoundedField": read_chebyshev_bounded_field,
    "PhotoCalib": read_photo_calib,
    "ApCorrMap": read_ap_corr_map,
    "FilterLabel": read_filter_label,
    "Detector": read_detector,
    "VisitInfo": read_visit_info,
    "SkyWcs": read_sky_wcs,
    "TanWcs": read_tan_wcs,
}
# LSST's PiffPsf and afw's GaussianPsf are read by visitcal.psf.afw_piff and visitcal.psf.afw_gaussian (PSF models:
# the layer above), which add themselves here when visitcal.psf is imported.

#: afw component (``ARCHIVE_ID_<NAME>``) -> the key `read_afw_components` uses (our `Exposure` attribute
#: where there is one); others are lower-cased.
COMPONENT_ATTRIBUTES = {"SKYWCS": "wcs", "PSF": "psf", "PHOTOCALIB": "photo_calib", "APCORRMAP": "ap_corr_map",
                        "DETECTOR": "detector", "FILTER": "filter", "VISITINFO": "visit_info",
                        "VALIDPOLYGON": "valid_polygon", "TRANSMISSIONCURVE": "transmission_curve",
                        "SUMMARYSTATS": "summary_stats"}


#: Older afw files name some components with ``<NAME>_ID`` cards only (the HSC cut-out: ``WCS_ID``).
LEGACY_ID_CARDS = {"WCS_ID": "SKYWCS", "PSF_ID": "PSF"}


def afw_component_ids(header) -> dict[str, int]:
    """``{component: archive id}`` named by a primary header: its ``ARCHIVE_ID_<NAME>`` cards (as
    `AfwArchive.components`), plus the older ``WCS_ID`` / ``PSF_ID`` cards for a component that has no
    ``ARCHIVE_ID_`` card. Ids of 0 (absent) are left out."""
    out = {}
    for key, value in header.items():
        if key.startswith("ARCHIVE_ID_") and int(value or 0) > 0:
            out[key[len("ARCHIVE_ID_"):]] = int(value)
    for key, comp in LEGACY_ID_CARDS.items():
        if comp not in out and isinstance(header.get(key), (int, np.integer)) and int(header[key]) > 0:
            out[comp] = int(header[key])
    return out


def _read_object(archive: AfwArchive, object_id: int, readers: Mapping[str, Callable], unsupported: list[str],
                 options) -> object | None:
    try:
        name = archive.name(object_id)
    except KeyError:
        raise FitsReadError(f"{archive.path}: archive id {object_id} is not in the ARCHIVE_INDEX",
                            path=archive.path, hdu="ARCHIVE_INDEX") from None
    reader = readers.get(name)
    if reader is None:
        if name not in unsupported:
            unsupported.append(name)
        return None
    try:
        return reader(archive, object_id, **options)
    except FitsReadError:
        raise
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise _fail(archive, object_id, f"cannot be read: {err}") from err


def read_afw_components(hdul, path, *, readers: Mapping[str, Callable] = COMPONENT_READERS,
                        **options) -> tuple[dict[str, object], list[str]]:
    """Every component that the primary header names (`afw_component_ids`), read by its class's reader.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The open afw file.
    path : str or os.PathLike
        Its path, for messages.
    readers : mapping of str to callable, optional
        afw class name -> ``reader(archive, object_id, **options)``; default `COMPONENT_READERS`.
    **options
        Passed to every reader (e.g. ``trust_pickle=True`` for a PiffPsf reader).

    Returns
    -------
    components : dict
        Key from `COMPONENT_ATTRIBUTES` (``"photo_calib"``, ``"detector"``, ``"filter"`` ...) -> object.
    unsupported : list of str
        The afw class names met without a reader, and those whose reader refused (a ``PiffPsf`` without
        ``trust_pickle=True``), also logged at WARNING with the reason: those components are absent from
        ``components``.

    Raises
    ------
    FitsReadError
        No archive index, an index row or a component id pointing outside the file, a malformed table.
    """
    archive = AfwArchive(hdul, path)
    out: dict[str, object] = {}
    unsupported: list[str] = []
    for comp, object_id in afw_component_ids(hdul[0].header).items():
        try:
            obj = _read_object(archive, object_id, readers, unsupported, options)
        except PermissionError as err:  # a reader that will not run code it was not trusted to (a pickle)
            log.warning("%s: %s not read: %s", path, comp, err)
            unsupported.append(archive.name(object_id))
            continue
        if obj is not None:
            out[COMPONENT_ATTRIBUTES.get(comp, comp.lower())] = obj
    if unsupported:
        log.warning("%s: afw components not read (no reader for %s)", path, ", ".join(unsupported))
    return out, unsupported


def _archive_id_columns(hdu) -> list[str]:
    """The columns of an afw table that hold archive ids (``TDOCn = 'archive ID for ...'``)."""
    h = hdu.header
    out = []
    for k in range(1, int(h.get("TFIELDS", 0)) + 1):
        if str(h.get(f"TDOC{k}", "")).lower().startswith("archive id for"):
            out.append(str(h[f"TTYPE{k}"]).strip())
    return out


def read_afw_exposure_catalog(path, *, readers: Mapping[str, Callable] = COMPONENT_READERS, **options) -> Table:
    """An afw ExposureCatalog (a visit summary, ``refit_psf_models`` ...) as an astropy `Table`.

    Every column that holds archive ids (``psf``, ``apCorrMap``, ``wcs``, ``photoCalib`` ... : ``TDOCn``
    starting "archive ID for") becomes a column of objects read by `readers` (None where the id is 0 or
    the class has no reader); ``table.meta["afw_unsupported"]`` lists the classes without a reader (also
    logged at WARNING). Other columns are as stored (``bbox_min``/``bbox_max`` points as 2-element arrays).

    Parameters
    ----------
    path : str or os.PathLike
    readers : mapping, optional
        afw class name -> reader; default `COMPONENT_READERS`.
    **options
        Passed to the readers (``trust_pickle`` ...).

    Raises
    ------
    FitsReadError
        Not an afw table file, or a malformed archive.
    """
    from .fits import open_fits

    path = Path(path)
    with open_fits(path) as hdul:
        main = next((k for k in range(1, len(hdul)) if isinstance(hdul[k], fits.BinTableHDU)
                     and hdu_type(hdul[k]) not in ("ARCHIVE_INDEX", "ARCHIVE_DATA")), None)
        if main is None:
            raise FitsReadError(f"{path}: no catalog HDU (an afw ExposureCatalog has a binary table in HDU 1)",
                                path=path, hdu=1)
        with warnings.catch_warnings():  # afw's units are not all FITS units: not ours to judge
            warnings.simplefilter("ignore", UnitsWarning)
            table = Table.read(hdul[main], mask_invalid=False, character_as_bytes=False)
        id_columns = _archive_id_columns(hdul[main])
        unsupported: list[str] = []
        archive = AfwArchive(hdul, path) if any(np.any(np.asarray(table[c]) > 0) for c in id_columns) else None
        for c in id_columns:
            values = [None if int(i) <= 0 else _read_object(archive, int(i), readers, unsupported, options)
                      for i in np.asarray(table[c])]
            col = Column(np.empty(len(values), dtype=object), name=c)
            col[:] = values
            table.replace_column(c, col)
        table.meta["afw_unsupported"] = unsupported
    if unsupported:
        log.warning("%s: afw objects not read (no reader for %s)", path, ", ".join(unsupported))
    return table
