"""Reader of afw SourceCatalogs (``src`` / ``single_visit_star``-style FITS files written by the LSST
Science Pipelines): every column, the packed flag bits, the aliases (slots) and the footprints.

The layout, as read from real files (facts of the format; no LSST code):

- HDU 1 is the catalog, a binary table (``AFW_TYPE = 'SOURCE'``). Ordinary fields are ordinary columns
  (``id``, ``coord_ra`` / ``coord_dec`` in radians, ``parent``, ``<algorithm>_<field>`` ...), described by
  ``TDOCn`` cards. Pixel positions are afw's: 0-based, pixel centres at integers (as visitcal's).
- Every afw ``Flag`` field is one bit of a single bit-array column (``TFORM = '<n>X'``, named ``flags``; its
  1-based number in the ``FLAGCOL`` card). The bits are named by ``TFLAGk`` cards (``k`` 1-based, in bit
  order) and documented by ``TFDOCk``. Bit ``k`` is the ``k``-th bit of the FITS bit array, the FITS
  standard's order: the most significant bit of the column's first byte first. (Evidence on the real HSC
  catalog of the test suite: with that order every NaN measurement has its ``<algorithm>_flag`` set
  (42 of 42); reversing the bits within bytes, or shifting the names by one, breaks that.)
- ``ALIAS`` cards, ``"<alias>:<target>"``, are afw's alias map: a name starting with ``<alias>`` is the
  name with ``<alias>`` replaced by ``<target>`` (``slot_Centroid:base_SdssCentroid`` makes
  ``slot_Centroid_x`` mean ``base_SdssCentroid_x``). The ``slot_*`` ones become visitcal slots
  (``table.meta["slots"]``, see `visitcal.core.table`), the others are kept in ``table.meta["aliases"]``;
  `afw_column` resolves both.
- Footprints live in the afw archive that follows the catalog (`visitcal.io.afw_archive`): the record's
  ``footprint`` column holds the archive id of its ``Footprint`` (0: none). A ``Footprint`` object has two
  catalogs: (0) one row whose ``id`` is the archive id of its ``SpanSet`` (older files: the spans ``y``,
  ``x0``, ``x1`` themselves) and (1) its peaks (``id``, ``f_x``, ``f_y``, ``i_x``, ``i_y``, ``peakValue``,
  and in newer files ``significance``). A ``SpanSet`` has one catalog of spans ``y``, ``x0``, ``x1``
  (inclusive). A ``HeavyFootprint<T>`` (class names ``HeavyFootprintF``, ``D``, ``I``, ``U`` by pixel
  type) has a third catalog: one row whose array columns ``image``, ``mask`` and ``variance`` hold the
  values of its pixels in span order.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.units import UnitsWarning

from ..core.footprint import PEAK_DTYPE, Footprint, HeavyFootprint
from ..core.table import slot_column
from . import FitsReadError
from .afw_archive import AfwArchive, hdu_type
from .fits import open_fits

__all__ = ["read_afw_source_catalog", "afw_column", "to_source_table", "KNOWN_FOOTPRINT_CLASSES",
           "SOURCE_TABLE_FLAGS", "SOURCE_TABLE_RENAME_RULES"]

_log = logging.getLogger(__name__)

#: Archive classes this reader understands (anything else in the archive is listed, not read).
KNOWN_FOOTPRINT_CLASSES = ("Footprint", "SpanSet", "HeavyFootprintF", "HeavyFootprintD", "HeavyFootprintI",
                           "HeavyFootprintU")

# header cards of a binary table that describe its columns or its structure, not the catalog
_STRUCTURAL = re.compile(r"^(XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|EXTNAME|EXTTYPE|FLAGCOL|ALIAS|AR_HDU|"
                         r"CHECKSUM|DATASUM|COMMENT|HISTORY|"
                         r"(TTYPE|TFORM|TUNIT|TDOC|TCCLS|TFLAG|TFDOC|TDIM|TNULL|TSCAL|TZERO|TDISP)\d+)$")


def afw_column(table: Table, name: str) -> str:
    """The real column behind ``name`` under afw's alias rules.

    ``name`` itself when it is a column; else the longest alias (``slot_<Slot>`` from
    ``table.meta["slots"]``, or a key of ``table.meta["aliases"]``) that equals ``name`` or prefixes it
    (followed by ``_``) is replaced by its target, repeatedly (aliases may point at aliases).

    Raises
    ------
    KeyError
        Naming ``name`` when no column is found (or the aliases loop).
    """
    aliases = {f"slot_{k}": v for k, v in table.meta.get("slots", {}).items()}
    aliases.update(table.meta.get("aliases", {}))
    keys = sorted(aliases, key=len, reverse=True)
    current = name
    for _ in range(len(aliases) + 1):
        if current in table.colnames:
            return current
        for key in keys:
            if current == key or current.startswith(key + "_"):
                current = aliases[key] + current[len(key):]
                break
        else:
            break
    raise KeyError(f"catalog has no column {name!r}, directly or through its aliases"
                   + (f" (resolved as far as {current!r})" if current != name else ""))


def read_afw_source_catalog(path) -> tuple[Table, dict[int, Footprint]]:
    """Read an afw SourceCatalog FITS file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    table : astropy.table.Table
        One row per record. Every ordinary column as in the file, with afw's names and units
        (``coord_ra`` / ``coord_dec`` in radians, pixel positions 0-based with centres at integers) and
        its ``TDOC`` as description; the ``footprint`` column (archive id of the record's footprint, 0 for
        none) is kept. The packed flag bits become boolean columns named by their ``TFLAGk`` cards, in
        the file's schema order. ``meta``: ``"slots"`` (``{"Centroid": "base_SdssCentroid", ...}`` from the
        ``slot_*`` aliases, so ``slot_Centroid_x`` resolves with `visitcal.core.table.slot_column` and
        ``visitcal.measurement.source_selector.resolve_column``), ``"aliases"`` (the other ``ALIAS``
        cards, ``{alias: target}``; `afw_column` resolves them), ``"afw_unread_classes"`` (archive classes
        not read, sorted: also logged as a WARNING) and the catalog's other header cards (repeated keys,
        e.g. ``base_CircularApertureFlux_radii``, as lists).
    footprints : dict of int to `Footprint`
        ``{source id: footprint}`` for every record whose ``footprint`` column is not 0: a
        `HeavyFootprint` (image, mask, variance per pixel in span order) when the file stores a heavy
        one, else a `Footprint` (spans and peaks, parent frame). Peaks keep the file's order; a file
        without ``significance`` gives NaN there. Mask bits keep the file's values (their plane names
        are not stored with footprints).

    Raises
    ------
    FitsReadError
        Not a binary table in HDU 1, a flag bit without its ``TFLAGk`` card (or a card beyond the bits),
        a malformed ``ALIAS`` card, a footprint id missing from the archive, or a heavy footprint whose
        pixel count differs from its spans' area; the message names the file, the HDU and the field.
    """
    path = Path(path)
    with open_fits(path) as hdul:
        if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU) or hdu_type(hdul[1]).startswith("ARCHIVE"):
            raise FitsReadError(f"{path}: HDU 1 is not an afw catalog (binary table)", path=path, hdu=1)
        hdu = hdul[1]
        header = hdu.header
        table = _read_columns(hdu, path)
        table.meta.update(_other_cards(header))
        slots, aliases = _aliases(header, path)
        table.meta["slots"] = slots
        table.meta["aliases"] = aliases
        footprints, unread = {}, []
        if "footprint" in table.colnames and np.any(np.asarray(table["footprint"]) != 0):
            archive = AfwArchive(hdul, path)
            footprints, unread = _read_footprints(archive, table, path)
        elif any(hdu_type(h) == "ARCHIVE_INDEX" for h in hdul[2:]):
            unread = sorted({e.name for e in AfwArchive(hdul, path).entries} - set(KNOWN_FOOTPRINT_CLASSES))
        if unread:
            _log.warning("%s: archive classes not read: %s", path, ", ".join(unread))
        table.meta["afw_unread_classes"] = unread
    return table, footprints


def _read_columns(hdu, path) -> Table:
    header = hdu.header
    with warnings.catch_warnings():  # afw's units ("count", "pixel^2"...) are afw's, not FITS's: not ours to judge
        warnings.simplefilter("ignore", UnitsWarning)
        raw = Table.read(hdu, mask_invalid=False, character_as_bytes=False)
    raw.meta.clear()
    ncol = int(header["TFIELDS"])
    flag_number = header.get("FLAGCOL")
    if flag_number is None:  # afw always names it "flags"; FLAGCOL may be missing in hand-made files
        flag_number = next((k for k in range(1, ncol + 1) if header.get(f"TTYPE{k}") == "flags"
                            and str(header.get(f"TFORM{k}", "")).strip().endswith("X")), None)
    flag_name = header.get(f"TTYPE{flag_number}") if flag_number is not None else None
    flag_bits = None
    if flag_name is not None:
        if not str(header.get(f"TFORM{flag_number}", "")).strip().endswith("X"):
            raise FitsReadError(f"{path}[1]: the flag column {flag_name!r} (FLAGCOL = {flag_number}) is not a bit "
                                f"array (TFORM{flag_number} = {header.get(f'TFORM{flag_number}')!r})", path=path, hdu=1)
        flag_bits = np.asarray(raw[flag_name], dtype=bool)
        if flag_bits.ndim == 1:  # a one-bit column
            flag_bits = flag_bits[:, None]
        nbits = flag_bits.shape[1]
        for key in header:
            m = re.fullmatch(r"TFLAG(\d+)", key)
            if m and not 1 <= int(m.group(1)) <= nbits:
                raise FitsReadError(f"{path}[1]: card {key} = {header[key]!r} names a bit beyond the "
                                    f"{nbits} bits of column {flag_name!r}", path=path, hdu=1)
        missing = [k for k in range(1, nbits + 1) if not str(header.get(f"TFLAG{k}", "")).strip()]
        if missing:
            raise FitsReadError(f"{path}[1]: flag bit(s) of column {flag_name!r} without a name: no card "
                                f"{', '.join(f'TFLAG{k}' for k in missing[:10])}{' ...' if len(missing) > 10 else ''}",
                                path=path, hdu=1)
    # the schema order: the TTYPE and TFLAG cards as the header lists them
    order = []
    for key in header:
        m = re.fullmatch(r"(TTYPE|TFLAG)(\d+)", key)
        if m:
            order.append((m.group(1), int(m.group(2))))
    out = Table()
    for kind, k in order:
        if kind == "TTYPE":
            if k == flag_number:
                continue
            name = header[f"TTYPE{k}"]
            col = raw[name]
            data = np.asarray(col)
            if data.dtype.kind in "iufb" and data.dtype.byteorder not in ("=", "|"):
                data = data.astype(data.dtype.newbyteorder("="))
            out[name] = data
            out[name].info.unit = col.info.unit
            doc = header.get(f"TDOC{k}")
            if doc:
                out[name].info.description = str(doc)
        else:
            if flag_bits is None:
                raise FitsReadError(f"{path}[1]: card TFLAG{k} but no flag (bit array) column", path=path, hdu=1)
            name = str(header[f"TFLAG{k}"]).strip()
            if name in out.colnames or (name in raw.colnames and name != flag_name):
                raise FitsReadError(f"{path}[1]: flag TFLAG{k} = {name!r} has the name of another column",
                                    path=path, hdu=1)
            out[name] = flag_bits[:, k - 1].copy()
            doc = header.get(f"TFDOC{k}")
            if doc:
                out[name].info.description = str(doc)
    return out


def _other_cards(header) -> dict:
    meta: dict = {}
    for card in header.cards:
        key = card.keyword
        if not key or _STRUCTURAL.match(key):
            continue
        value = card.value
        if key in meta:
            meta[key] = (meta[key] if isinstance(meta[key], list) else [meta[key]]) + [value]
        else:
            meta[key] = value
    return meta


def _aliases(header, path) -> tuple[dict[str, str], dict[str, str]]:
    slots: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for card in header.cards:
        if card.keyword != "ALIAS":
            continue
        text = str(card.value).strip()
        alias, sep, target = text.partition(":")
        alias, target = alias.strip(), target.strip()
        if not sep or not alias or not target or ":" in target or " " in alias or " " in target:
            raise FitsReadError(f"{path}[1]: malformed ALIAS card {text!r} (expected '<alias>:<target>')",
                                path=path, hdu=1)
        if alias.startswith("slot_") and len(alias) > len("slot_"):
            slots[alias[len("slot_"):]] = target
        else:
            aliases[alias] = target
    return slots, aliases


def _spans_from(cat: Table, where: str, path) -> np.ndarray:
    try:
        return np.stack([np.asarray(cat[c], dtype=np.int64) for c in ("y", "x0", "x1")], axis=1)
    except KeyError as err:
        raise FitsReadError(f"{path}: {where} lacks span column {err}", path=path, hdu="ARCHIVE_DATA") from None


def _peaks_from(cat: Table) -> np.ndarray:
    peaks = np.zeros(len(cat), dtype=PEAK_DTYPE)
    for ours, theirs in (("id", "id"), ("i_x", "i_x"), ("i_y", "i_y"), ("f_x", "f_x"), ("f_y", "f_y"),
                         ("peak_value", "peakValue"), ("significance", "significance")):
        if theirs in cat.colnames:
            peaks[ours] = np.asarray(cat[theirs])
        elif ours in ("significance", "peak_value", "f_x", "f_y"):
            peaks[ours] = np.nan
    return peaks


def _read_one(archive: AfwArchive, fid: int, record: str, path) -> Footprint:
    name = archive.name(fid)
    where = f"archive object {fid} ({name}, footprint of {record})"
    cats = archive.catalogs(fid)
    heavy = name.startswith("HeavyFootprint")
    if len(cats) < (3 if heavy else 1):
        raise FitsReadError(f"{path}: {where} has {len(cats)} catalogs", path=path, hdu="ARCHIVE_INDEX")
    first = cats[0]
    if "y" in first.colnames:  # older files: the spans themselves
        spans = _spans_from(first, where, path)
    else:
        if len(first) != 1 or "id" not in first.colnames:
            raise FitsReadError(f"{path}: {where}: its first catalog is neither spans nor one SpanSet id",
                                path=path, hdu="ARCHIVE_DATA")
        sid = int(first["id"][0])
        try:
            sname = archive.name(sid)
        except KeyError:
            raise FitsReadError(f"{path}: {where} points at SpanSet {sid}, absent from the archive",
                                path=path, hdu="ARCHIVE_INDEX") from None
        if sname != "SpanSet":
            raise FitsReadError(f"{path}: {where} points at archive object {sid}, a {sname}, not a SpanSet",
                                path=path, hdu="ARCHIVE_INDEX")
        spans = _spans_from(archive.catalogs(sid)[0], f"SpanSet {sid}", path)
    peaks = _peaks_from(cats[1]) if len(cats) > 1 else None
    try:
        fp = Footprint(spans, peaks)
    except (ValueError, TypeError) as err:
        raise FitsReadError(f"{path}: {where}: {err}", path=path, hdu="ARCHIVE_DATA") from None
    if not heavy:
        return fp
    row = cats[2]
    if len(row) != 1 or not {"image", "mask", "variance"} <= set(row.colnames):
        raise FitsReadError(f"{path}: {where}: the pixel catalog needs one row with image, mask, variance",
                            path=path, hdu="ARCHIVE_DATA")
    values = [np.asarray(row[c][0]).ravel() for c in ("image", "mask", "variance")]
    values = [v.astype(v.dtype.newbyteorder("=")) for v in values]
    n = int(np.sum(spans[:, 2] - spans[:, 1] + 1))
    if any(v.shape[0] != n for v in values) or fp.area != n:
        raise FitsReadError(f"{path}: {where}: {[v.shape[0] for v in values]} image/mask/variance values for "
                            f"{n} span pixels ({fp.area} distinct)", path=path, hdu="ARCHIVE_DATA")
    # afw's values follow its spans' order; ours follow the normalized spans (sorted by y, then x)
    y = np.repeat(spans[:, 0], spans[:, 2] - spans[:, 1] + 1)
    x = np.concatenate([np.arange(a, b + 1) for a, b in spans[:, 1:]]) if len(spans) else np.zeros(0, np.int64)
    order = np.lexsort((x, y))
    image, mask, variance = (v[order] for v in values)
    return HeavyFootprint(fp, image, mask.astype(np.int32), variance)


def _read_footprints(archive: AfwArchive, table: Table, path) -> tuple[dict[int, Footprint], list[str]]:
    out: dict[int, Footprint] = {}
    known = set(archive.ids())
    unread = set()
    ids = np.asarray(table["id"]) if "id" in table.colnames else np.arange(len(table))
    for k, (sid, fid) in enumerate(zip(ids, np.asarray(table["footprint"]))):
        fid = int(fid)
        if fid == 0:
            continue
        record = f"record {k} (id {int(sid)})"
        if fid not in known:
            raise FitsReadError(f"{path}[1]: {record}: column 'footprint' = {fid}, not an archive object",
                                path=path, hdu=1)
        name = archive.name(fid)
        if name == "SpanSet" or name not in KNOWN_FOOTPRINT_CLASSES:  # a record's footprint: (Heavy)Footprint
            unread.add(name)
            continue
        out[int(sid)] = _read_one(archive, fid, record, path)
    unread |= {e.name for e in archive.entries} - set(KNOWN_FOOTPRINT_CLASSES)
    return out, sorted(unread)


# --- a DPDD-style export ---------------------------------------------------------------------------

#: The measurement flags and values that LSST's single-visit ``sourceTable`` copies (pipe_tasks
#: ``schemas/Source.yaml``, its ``flags`` list), renamed by `SOURCE_TABLE_RENAME_RULES`.
SOURCE_TABLE_FLAGS = (
    "base_LocalPhotoCalib", "base_LocalPhotoCalib_flag", "base_LocalPhotoCalibErr", "base_LocalWcs_flag",
    "base_LocalWcs_CDMatrix_2_1", "base_LocalWcs_CDMatrix_1_1", "base_LocalWcs_CDMatrix_1_2",
    "base_LocalWcs_CDMatrix_2_2", "base_Blendedness_flag", "base_Blendedness_flag_noCentroid",
    "base_Blendedness_flag_noShape", "base_CircularApertureFlux_12_0_flag",
    "base_CircularApertureFlux_12_0_flag_apertureTruncated", "base_CircularApertureFlux_12_0_flag_sincCoeffsTruncated",
    "base_CircularApertureFlux_12_0_instFlux", "base_CircularApertureFlux_12_0_instFluxErr",
    "base_CircularApertureFlux_17_0_flag", "base_CircularApertureFlux_17_0_instFlux",
    "base_CircularApertureFlux_17_0_instFluxErr", "base_CircularApertureFlux_35_0_flag",
    "base_CircularApertureFlux_35_0_instFlux", "base_CircularApertureFlux_35_0_instFluxErr",
    "base_CircularApertureFlux_50_0_flag", "base_CircularApertureFlux_50_0_instFlux",
    "base_CircularApertureFlux_50_0_instFluxErr", "base_NormalizedCompensatedTophatFlux_flag",
    "base_NormalizedCompensatedTophatFlux_instFlux", "base_NormalizedCompensatedTophatFlux_instFluxErr",
    "base_ClassificationExtendedness_flag", "base_ClassificationSizeExtendedness_flag", "base_FootprintArea_value",
    "base_InvalidPsf_flag", "base_Jacobian_flag", "base_Jacobian_value", "base_LocalBackground_instFlux",
    "base_LocalBackground_instFluxErr", "base_LocalBackground_flag", "base_LocalBackground_flag_noGoodPixels",
    "base_LocalBackground_flag_noPsf", "base_PixelFlags_flag_bad", "base_PixelFlags_flag_cr",
    "base_PixelFlags_flag_crCenter", "base_PixelFlags_flag_edge", "base_PixelFlags_flag_interpolated",
    "base_PixelFlags_flag_interpolatedCenter", "base_PixelFlags_flag_nodata", "base_PixelFlags_flag_offimage",
    "base_PixelFlags_flag_saturated", "base_PixelFlags_flag_saturatedCenter", "base_PixelFlags_flag_suspect",
    "base_PixelFlags_flag_suspectCenter", "base_PsfFlux_apCorr", "base_PsfFlux_apCorrErr", "base_PsfFlux_area",
    "base_PsfFlux_flag", "base_PsfFlux_flag_apCorr", "base_PsfFlux_flag_edge", "base_PsfFlux_flag_noGoodPixels",
    "base_GaussianFlux_flag", "base_SdssCentroid_flag", "base_SdssCentroid_flag_almostNoSecondDerivative",
    "base_SdssCentroid_flag_badError", "base_SdssCentroid_flag_edge", "base_SdssCentroid_flag_noSecondDerivative",
    "base_SdssCentroid_flag_notAtMaximum", "base_SdssCentroid_flag_resetToPeak", "base_Variance_flag",
    "base_Variance_flag_emptyFootprint", "base_Variance_value", "calib_astrometry_used", "calib_photometry_reserved",
    "calib_photometry_used", "calib_psf_candidate", "calib_psf_reserved", "calib_psf_used",
    "deblend_deblendedAsPsf", "deblend_hasStrayFlux", "deblend_masked", "deblend_nChild", "deblend_parentTooBig",
    "deblend_patchedTemplate", "deblend_rampedTemplate", "deblend_skipped", "deblend_tooManyPeaks",
    "ext_shapeHSM_HsmPsfMoments_flag", "ext_shapeHSM_HsmShapeRegauss_flag", "sky_source", "detect_isPrimary",
)

#: ``(old, new)``: applied in order, each to a name that starts with ``old`` (every ``old`` in it replaced), as
#: LSST's sourceTable transform renames the copied flags (``base_PixelFlags_flag_edge`` -> ``pixelFlags_edge``).
SOURCE_TABLE_RENAME_RULES = (
    ("ext_photometryKron_", ""), ("base_Blendedness", "base_blendedness"), ("base_Local", "local"),
    ("base_PixelFlags_flag", "pixelFlags"), ("base_ClassificationE", "e"), ("base_ClassificationS", "s"),
    ("base_SdssCentroid", "centroid"), ("base_Variance", "variance"), ("base_Psf", "psf"),
    ("base_InvalidPsf_flag", "invalidPsfFlag"), ("base_GaussianFlux", "gaussianFlux"),
    ("base_CircularApertureFlux", "apFlux"), ("base_NormalizedCompensatedTophatFlux", "normCompTophatFlux"),
    ("base_FootprintArea", "footprintArea"), ("base_Jacobian", "jacobian"),
    ("ext_shapeHSM_HsmPsfMomentsDebiased", "iDebiasedPSF"), ("ext_shapeHSM_Hsm", "hsm"), ("ext_convolved_", ""),
    ("undeblended_base", "undeblended"), ("undeblended_ext_photometryKron", "undeblended"), ("base_", ""),
    ("slot_", ""),
)


def _renamed(name: str) -> str:
    for old, new in SOURCE_TABLE_RENAME_RULES:
        if name.startswith(old):
            name = name.replace(old, new)
    return name


def to_source_table(table: Table) -> Table:
    """A DPDD-style single-visit source table (LSST's ``sourceTable`` names) from a visitcal ``source``
    catalog (or any catalog with afw's column names and slots).

    Columns, when their inputs exist (the others are left out and listed in ``meta["missing"]``):

    - ``sourceId`` (``id``), ``parentSourceId`` (``parent``), ``visit``, ``detector``;
    - ``coord_ra``, ``coord_dec``, ``ra``, ``dec``: degrees (the input's ``coord_*`` are radians);
    - ``x``, ``y`` (``slot_Centroid``, 0-based pixels, centres at integers), ``xErr``, ``yErr`` (float32);
    - calibrated fluxes in nJy (float32), ``instFlux * base_LocalPhotoCalib`` and
      ``instFluxErr * base_LocalPhotoCalib``: ``psfFlux`` (``slot_PsfFlux``), ``calibFlux``
      (``slot_CalibFlux``), ``gaussianFlux`` (``base_GaussianFlux``), ``apNNFlux`` for the circular
      apertures of radius NN px (3, 6, 9, 12, 17, 25, 35, 50, 70) with ``apNNFlux_flag``, ``sky``
      (``base_LocalBackground``); each with its ``...Err``;
    - ``ixx``, ``iyy``, ``ixy`` (``slot_Shape``), ``ixxPSF``, ``iyyPSF``, ``ixyPSF`` (``slot_PsfShape``): pixel²,
      float32; ``extendedness``, ``sizeExtendedness`` (float32);
    - the flags and values of `SOURCE_TABLE_FLAGS` present in ``table``, renamed by
      `SOURCE_TABLE_RENAME_RULES` (``pixelFlags_edge``, ``psfFlux_flag``, ``centroid_flag``,
      ``extendedness_flag``, ``calib_psf_used``, ``localPhotoCalib``...).

    Parameters
    ----------
    table : astropy.table.Table
        Slots in ``meta["slots"]`` (`visitcal.core.table`) or ``slot_*`` columns.

    Returns
    -------
    astropy.table.Table
    """
    out = Table()
    missing: list[str] = []

    def col(name):
        if name in table.colnames:
            return name
        if name.startswith("slot_"):
            slot, _, suffix = name[len("slot_"):].partition("_")
            try:
                return slot_column(table, slot, suffix)
            except KeyError:
                return None
        return None

    def copy(dst, src, *, dtype=None, unit=None, scale=1.0):
        c = col(src)
        if c is None:
            missing.append(dst)
            return
        data = np.asarray(table[c])
        if scale != 1.0:
            data = data * scale
        out[dst] = data.astype(dtype) if dtype is not None else data
        u = unit if unit is not None else table[c].unit
        if u is not None:
            out[dst].unit = u

    def flux(dst, prefix):
        c, e, cal = col(f"{prefix}_instFlux"), col(f"{prefix}_instFluxErr"), col("base_LocalPhotoCalib")
        if c is None or cal is None:
            missing.append(dst)
        else:
            out[dst] = (np.asarray(table[c]) * np.asarray(table[cal])).astype(np.float32)
            out[dst].unit = "nJy"
        if e is None or cal is None:
            missing.append(dst + "Err")
        else:
            out[dst + "Err"] = (np.asarray(table[e]) * np.asarray(table[cal])).astype(np.float32)
            out[dst + "Err"].unit = "nJy"

    deg = 180.0 / np.pi
    copy("sourceId", "id")
    copy("coord_ra", "coord_ra", scale=deg, unit="deg")
    copy("coord_dec", "coord_dec", scale=deg, unit="deg")
    copy("parentSourceId", "parent")
    for name in ("visit", "detector"):
        if name in table.colnames:
            copy(name, name)
    copy("x", "slot_Centroid_x", unit="pixel")
    copy("y", "slot_Centroid_y", unit="pixel")
    copy("xErr", "slot_Centroid_xErr", dtype=np.float32, unit="pixel")
    copy("yErr", "slot_Centroid_yErr", dtype=np.float32, unit="pixel")
    copy("ra", "coord_ra", scale=deg, unit="deg")
    copy("dec", "coord_dec", scale=deg, unit="deg")
    flux("calibFlux", "slot_CalibFlux")
    for r in (3, 6, 9, 12, 17, 25, 35, 50, 70):
        flux(f"ap{r:02d}Flux", f"base_CircularApertureFlux_{r}_0")
        copy(f"ap{r:02d}Flux_flag", f"base_CircularApertureFlux_{r}_0_flag")
    flux("sky", "base_LocalBackground")
    flux("psfFlux", "slot_PsfFlux")
    for q in ("xx", "yy", "xy"):
        copy(f"i{q}", f"slot_Shape_{q}", dtype=np.float32, unit="pixel2")
    for q in ("xx", "yy", "xy"):
        copy(f"i{q}PSF", f"slot_PsfShape_{q}", dtype=np.float32, unit="pixel2")
    flux("gaussianFlux", "base_GaussianFlux")
    copy("extendedness", "base_ClassificationExtendedness_value", dtype=np.float32)
    copy("sizeExtendedness", "base_ClassificationSizeExtendedness_value", dtype=np.float32)
    for name in SOURCE_TABLE_FLAGS:
        if name in table.colnames and _renamed(name) not in out.colnames:
            copy(_renamed(name), name)
    out.meta["missing"] = missing
    return out
