"""visitcal's FITS layout for an `Exposure` (Rubin-calexp-like multi-extension FITS).

Layout
------
HDU 0 ``PRIMARY``
    No data. ``VCFORMAT = 'visitcal-exposure'``, ``VCFMTVER`` (layout version), ``VCNEXT`` (number of
    extensions written: a file truncated at an HDU boundary is detected), VisitInfo cards (flag
    ``VCVINFO = T``; keys in `visitcal.core.image.VisitInfo`), Detector cards (flag ``VCDET = T``; keys in
    `visitcal.core.image.Detector`), then the exposure's metadata cards. Metadata cards whose keys are
    reserved by this layout are replaced by the structured values (afw does the same).
``IMAGE`` (float32)
    The WCS, written in the *array* frame (``CRPIX`` shifted by ``-xy0``, as afw does) so any FITS
    viewer shows correct coordinates; ``LTV1 = -x0``, ``LTV2 = -y0`` and the afw alternate WCS ``A``
    (``CTYPE1A/2A = 'LINEAR'``, ``CRPIX1A/2A = 1``, ``CRVAL1A/2A = x0/y0``) carry xy0.
``MASK`` (int32)
    ``MP_<NAME> = bit`` per plane (HIERARCH for names longer than 5 characters), description as comment.
``VARIANCE`` (float32)
    The per-pixel variance, in image units squared.

Then one binary table per component that is set, in this order: ``PSF``, ``APCORR``, ``PHOTOCALIB``,
``BACKGROUND``, ``SUMMARY``, each written by `visitcal.core.persistence.component_to_table` (``VCKIND``,
``VCVERS`` cards). A ``summary_stats`` dict of scalars is stored as a one-row table of kind
``SummaryMapping``. Every HDU carries CHECKSUM/DATASUM, verified on reading.

Reading a MASK without ``MP_`` cards is an error for a file marked as ours (our writer always writes
them); for an unmarked file the standard planes are assumed. ``MP_`` names unknown to the standard
registry are added at the file's bit; a bit used twice is an error.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..core.wcs import read_wcs, shift_wcs, wcs_to_header

from ..core.image import _same, Detector, Exposure, Mask, MaskedImage, MaskPlanes, VisitInfo
from ..core.persistence import component_from_table, component_to_table, persistable
from . import FitsReadError, FitsWriteError
from ..core.atomic import atomic_write_fits
from ..core.fits_checksum import read_image_hdu

__all__ = ["write_exposure", "read_exposure", "ExposureFitsReader", "exposure_to_hdulist", "assert_exposures_equal",
           "FORMAT_NAME", "FORMAT_VERSION", "COMPONENT_HDUS"]

FORMAT_NAME = "visitcal-exposure"
FORMAT_VERSION = 1
#: Exposure attribute -> EXTNAME of its binary table, in file order.
COMPONENT_HDUS = {"psf": "PSF", "ap_corr_map": "APCORR", "photo_calib": "PHOTOCALIB",
                  "background": "BACKGROUND", "summary_stats": "SUMMARY"}
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
               "EXTNAME", "CHECKSUM", "DATASUM", "BSCALE", "BZERO", "END", "VCFORMAT", "VCFMTVER", "VCNEXT",
               "VCVINFO", "VCDET"}
RESERVED_PRIMARY_KEYS = frozenset(_STRUCTURAL | set(VisitInfo.HEADER_KEYS) | set(Detector.HEADER_KEYS))


@persistable("SummaryMapping", 1)
class _SummaryMapping:
    """A dict of summary statistics as a one-row table (``from_table`` returns the dict): scalars, or
    short lists of numbers (LSST's ``raCorners`` / ``decCorners``) as fixed-length array columns."""

    def __init__(self, mapping: Mapping):
        for key, value in mapping.items():
            if isinstance(value, (list, tuple, np.ndarray)):
                arr = np.asarray(value)
                if arr.ndim != 1 or arr.dtype.kind not in "biuf":
                    raise TypeError(f"summary_stats[{key!r}] = {value!r} is not a scalar or a 1-D list of numbers")
            elif not isinstance(value, (bool, int, float, str, np.generic)):
                raise TypeError(f"summary_stats[{key!r}] = {value!r} is not a scalar")
        self.mapping = dict(mapping)

    def to_table(self) -> Table:
        return Table({k: [np.asarray(v)] if isinstance(v, (list, tuple, np.ndarray)) else [v]
                      for k, v in self.mapping.items()})

    @classmethod
    def from_table(cls, table: Table) -> dict:
        if len(table) != 1:
            raise ValueError(f"a SummaryMapping table has one row, got {len(table)}")
        out = {}
        for name in table.colnames:
            v = table[name][0]
            if isinstance(v, np.ndarray) and v.ndim == 1:
                out[name] = [x.item() for x in v]
            else:
                out[name] = v.item() if hasattr(v, "item") else v
        return out


# ---------------------------------------------------------------------------------------------- writing

def write_exposure(exposure: Exposure, path, *, overwrite: bool = False) -> None:
    """Write ``exposure`` to ``path`` in visitcal's FITS layout (module docstring), atomically.

    Every HDU is built in memory first, so a component that cannot be persisted raises
    `FitsWriteError` before the file system is touched; ``path`` is never left half-written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    FitsWriteError
        A component or header card cannot be persisted.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists and overwrite is False")
    hdulist = exposure_to_hdulist(exposure, where=str(path))
    atomic_write_fits(hdulist, path, overwrite=overwrite)


def exposure_to_hdulist(exposure: Exposure, *, where: str = "exposure") -> fits.HDUList:
    """The `fits.HDUList` that `write_exposure` writes."""
    tables = [_component_hdu(exposure, attr, extname, where) for attr, extname in COMPONENT_HDUS.items()
              if getattr(exposure, attr) is not None]
    hdus = [_primary_hdu(exposure, n_ext=3 + len(tables))]
    hdus.append(fits.ImageHDU(exposure.image, _image_header(exposure), name="IMAGE"))
    hdus.append(fits.ImageHDU(exposure.mask.array, _mask_header(exposure.mask.planes), name="MASK"))
    hdus.append(fits.ImageHDU(exposure.variance, _plane_header("VARIANCE", exposure.xy0), name="VARIANCE"))
    return fits.HDUList(hdus + tables)


def _primary_hdu(exposure: Exposure, n_ext: int) -> fits.PrimaryHDU:
    header = fits.Header()
    header["VCFORMAT"] = (FORMAT_NAME, "file layout: visitcal Exposure")
    header["VCFMTVER"] = (FORMAT_VERSION, "layout version")
    header["VCNEXT"] = (n_ext, "number of extensions written")
    if exposure.visit_info is not None:
        header["VCVINFO"] = (True, "VisitInfo cards present")
        header.extend(exposure.visit_info.to_header().cards)
    if exposure.detector is not None:
        header["VCDET"] = (True, "Detector cards present")
        header.extend(exposure.detector.to_header().cards)
    copy_cards(exposure.metadata, header, RESERVED_PRIMARY_KEYS)
    return fits.PrimaryHDU(header=header)


def copy_cards(source: fits.Header, target: fits.Header, drop) -> fits.Header:
    """Append ``source``'s cards to ``target`` except keys in ``drop`` and empty blank cards (which FITS
    padding would not preserve)."""
    for card in source.cards:
        if card.keyword in drop or (card.keyword == "" and not str(card.value).strip()):
            continue
        target.append(card)
    return target


def _plane_header(exttype: str, xy0) -> fits.Header:
    x0, y0 = xy0
    h = fits.Header()
    h["EXTTYPE"] = exttype
    h["LTV1"] = (-x0, "xy0: array pixel = parent pixel + LTV")
    h["LTV2"] = (-y0, "xy0: array pixel = parent pixel + LTV")
    for i, v in ((1, x0), (2, y0)):
        h[f"CTYPE{i}A"] = ("LINEAR", "alternate WCS A: parent-frame pixels")
        h[f"CRPIX{i}A"] = 1.0
        h[f"CRVAL{i}A"] = (v, "xy0 (parent frame)")
        h[f"CUNIT{i}A"] = "PIXEL"
    h["WCSNAMEA"] = "A"
    return h


def _image_header(exposure: Exposure) -> fits.Header:
    header = _plane_header("IMAGE", exposure.xy0)
    if exposure.wcs is not None:
        x0, y0 = exposure.xy0
        array_wcs = shift_wcs(exposure.wcs, -x0, -y0)
        header.extend(wcs_to_header(array_wcs).cards)
    return header


def _mask_header(planes: MaskPlanes) -> fits.Header:
    header = fits.Header()
    header["EXTTYPE"] = "MASK"  # xy0 lives in the IMAGE and VARIANCE headers
    for name, bit in sorted(planes.items(), key=lambda kv: kv[1]):
        key = f"MP_{name}"
        header[key if len(key) <= 8 else f"HIERARCH {key}"] = (bit, planes.description(name)[:40])
    return header


def _component_hdu(exposure: Exposure, attr: str, extname: str, where: str) -> fits.BinTableHDU:
    value = getattr(exposure, attr)
    if attr == "summary_stats" and isinstance(value, Mapping):
        value = _SummaryMapping(value)
    try:
        table = component_to_table(value)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hdu = fits.table_to_hdu(table)
    except Exception as err:
        raise FitsWriteError(f"{where}: cannot persist {attr} ({type(value).__name__}) as HDU {extname}: {err}",
                             path=where, hdu=extname) from err
    for w in caught:
        if "skipping" in str(w.message) or "cannot be added" in str(w.message):
            raise FitsWriteError(f"{where}: {attr} table metadata would be lost in HDU {extname}: {w.message}",
                                 path=where, hdu=extname)
    hdu.name = extname
    return hdu


# ---------------------------------------------------------------------------------------------- reading

def read_exposure(path) -> Exposure:
    """Read an `Exposure` written by `write_exposure` (or any file with IMAGE/MASK/VARIANCE HDUs).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    FitsReadError
        Truncated or corrupt file, missing HDU, shape mismatch, bad mask-plane cards, unreadable
        component (the message names the file and the HDU or card).
    """
    path = Path(path)
    with open_fits(path) as hdul:
        primary = hdul[0].header
        ours = primary.get("VCFORMAT") == FORMAT_NAME
        if ours:
            _check_extension_count(hdul, primary, path)
        img_hdu, mask_hdu, var_hdu = (find_hdu(hdul, name, path) for name in ("IMAGE", "MASK", "VARIANCE"))
        xy0 = read_xy0(img_hdu.header, f"{path}[IMAGE]")
        image = float_plane(img_hdu, path)
        mask = mask_from_hdu(mask_hdu, path, remap=False, require_names=ours)
        variance = float_plane(var_hdu, path)
        check_shapes(path, IMAGE=image, MASK=mask.array, VARIANCE=variance)
        exposure = Exposure(MaskedImage(image, mask, variance, xy0=xy0),
                            wcs=wcs_from_header(img_hdu.header, xy0, f"{path}[IMAGE]"))
        _read_primary(exposure, primary, path)
        for attr, extname in COMPONENT_HDUS.items():
            if extname in hdul:
                setattr(exposure, attr, _read_component(hdul[extname], f"{path}[{extname}]"))
    return exposure


def read_mask(path) -> Mask:
    """The `Mask` of an exposure file alone (the MASK HDU and its plane cards; the image and variance are not
    read), e.g. ReprocessVisitImage's ``preliminary_mask``. The HDU is verified (CHECKSUM/DATASUM) and read
    as `read_exposure` reads it: a plain integer image straight into a native int32 array, in one pass
    (issue 25: astropy's big-endian array and its byte-swapped copy took 0.2 s of each reprocessing).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    FitsReadError
        Unreadable file, no MASK HDU, bad mask-plane cards, a CHECKSUM or DATASUM that disagrees with the bytes
        (the message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul, open(path, "rb", buffering=0) as raw:
            ours = hdul[0].header.get("VCFORMAT") == FORMAT_NAME
            hdu = find_hdu(hdul, "MASK", path)
            load_verified_hdu(raw, hdu, f"{path}[MASK]", path)
            return mask_from_hdu(hdu, path, remap=False, require_names=ours)
    except FitsReadError:
        raise
    except _ASTROPY_READ_ERRORS as err:
        raise FitsReadError(f"{path}: not a readable FITS file (truncated or corrupt?): {_first_line(err)}",
                            path=path) from err


#: What astropy raises on a malformed file: besides OSError and ValueError, a bad header card can surface as a
#: KeyError, an AttributeError or an AssertionError (e.g. a non-string TTYPE) from deep in its parsing.
_ASTROPY_READ_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, AttributeError, AssertionError)


def _first_line(err: BaseException) -> str:
    """An error's message on one line (astropy's and WCSLIB's run over several), or its type when empty."""
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    return text or type(err).__name__


def _check_extension_count(hdul, primary, path) -> None:
    expected = primary.get("VCNEXT")
    if expected is not None and len(hdul) - 1 != expected:
        raise FitsReadError(f"{path}: {len(hdul) - 1} extensions found, the header says {expected} were "
                            "written (truncated file?)", path=path)


def _read_primary(exposure: Exposure, primary: fits.Header, path) -> None:
    visit_info, detector, exposure.metadata = _primary_parts(primary, path)
    if visit_info is not None:
        exposure.visit_info = visit_info
    if detector is not None:
        exposure.detector = detector


def _primary_parts(primary: fits.Header, path) -> tuple[VisitInfo | None, Detector | None, fits.Header]:
    """The VisitInfo, Detector (each None when not written) and metadata cards of a primary header."""
    visit_info = detector = None
    try:
        if primary.get("VCVINFO"):
            visit_info = VisitInfo.from_header(primary)
        if primary.get("VCDET"):
            detector = Detector.from_header(primary)
    except Exception as err:  # noqa: BLE001 - astropy's Time raises its own types (ScaleValueError) for bad cards
        raise FitsReadError(f"{path}[PRIMARY]: bad VisitInfo/Detector card: {_first_line(err)}", path=path,
                            hdu="PRIMARY") from err
    return visit_info, detector, copy_cards(primary, fits.Header(), RESERVED_PRIMARY_KEYS)


def _read_component(hdu, where: str):
    try:
        table = Table.read(hdu, mask_invalid=False)  # NaN stays NaN; components decide
    except Exception as err:
        raise FitsReadError(f"{where}: not a readable table: {_first_line(err)}", hdu=hdu.name) from err
    try:
        return component_from_table(table, where=where)
    except (ValueError, KeyError, TypeError, IndexError) as err:  # a bad VCKIND / VCVERS card or a missing column
        why = _first_line(err)
        if isinstance(err, ValueError) and why.startswith(where):
            raise  # already ours, naming the file and the HDU (a PersistenceError)
        raise FitsReadError(f"{where}: {why}", hdu=hdu.name) from err


@contextlib.contextmanager
def open_fits(path, *, load: bool = True):
    """Open ``path`` with every HDU and its data loaded and its CHECKSUM/DATASUM verified; corruption becomes
    `FitsReadError` naming the file (and the HDU).

    With ``load=False`` only the headers are read (and checked for truncation); each HDU's data is then read
    and verified by `load_verified_hdu` when needed (`ExposureFitsReader`).

    Plain image HDUs (no BSCALE/BZERO/BLANK) are read by `visitcal.core.fits_checksum.read_image_hdu`: the
    pixels go straight into a native-order array and are summed in the pass that converts them (C++), and the
    checksums are tested on the bytes as stored (the HDU sums to -0; DATASUM covers the padded data unit).
    Other HDUs (tables, scaled or compressed images) are verified by astropy before their data are read.

    Astropy drops an HDU whose header is cut short with only a ``VerifyWarning``; that warning and
    "file may have been truncated" are turned into errors naming the file. Other warnings are passed on
    unchanged.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hdul = None
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
            problem = _truncation_warning(caught)  # an HDU dropped or cut short: report that first
            if problem is None and load:
                _load_verified(hdul, path)
        except FitsReadError:
            hdul.close()
            raise
        except _ASTROPY_READ_ERRORS as err:
            if hdul is not None:
                hdul.close()
            raise FitsReadError(f"{path}: not a readable FITS file (truncated or corrupt?): {_first_line(err)}",
                                path=path) from err
    others = []
    for w in caught:
        text = str(w.message)
        if ("Error validating header" in text or "truncated" in text or "verification failed" in text.lower()):
            hdul.close()
            raise FitsReadError(f"{path}: corrupt or truncated FITS file: {text.splitlines()[0]}"
                                f"{' ' + text.splitlines()[1].strip() if len(text.splitlines()) > 1 else ''}",
                                path=path)
        others.append(w)
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    try:
        yield hdul
    finally:
        hdul.close()


def _truncation_warning(caught) -> str | None:
    for w in caught:
        text = str(w.message)
        if "Error validating header" in text or "truncated" in text:
            return text
    return None


def _load_verified(hdul, path) -> None:
    """Read every HDU's data, verifying CHECKSUM/DATASUM where present (see `open_fits`)."""
    with open(path, "rb", buffering=0) as raw:
        for k, hdu in enumerate(hdul):
            load_verified_hdu(raw, hdu, f"{path}[{hdu.name or k}]", path)


def load_verified_hdu(raw, hdu, where: str, path) -> None:
    """Read one HDU's data (into ``hdu.data``), verifying its CHECKSUM/DATASUM where present (see `open_fits`).

    ``raw`` is the file opened unbuffered for reading; ``where`` names the HDU in errors.
    """
    if _plain_image_on_disk(hdu):
        data, sums = _read_image_hdu_checked(raw, hdu, where, path)
        datasum_ok, checksum_ok = sums.datasum_ok, sums.checksum_ok
        if data is not None:
            hdu.data = data
    else:
        # astropy's own test, on the bytes in the file (data not yet loaded), as fits.open(checksum=True)
        # (an HDU astropy could not classify, a _CorruptedHDU, has no checksum methods, as before)
        checkable = hasattr(hdu, "verify_checksum")
        datasum_ok = None if not checkable or "DATASUM" not in hdu.header else hdu.verify_datasum() == 1
        checksum_ok = None if not checkable or "CHECKSUM" not in hdu.header else hdu.verify_checksum() == 1
        hdu.data  # noqa: B018 - force reading (and decompressing) now
    _check_sums(datasum_ok, checksum_ok, where, path, hdu.name)


def _plain_image_on_disk(hdu) -> bool:
    """An image HDU without scaling cards (BSCALE/BZERO/BLANK), which `read_image_hdu` reads (told from the
    header alone: `visitcal.core.fits_checksum.is_plain_image` looks at loaded data, for writing)."""
    return type(hdu) in (fits.PrimaryHDU, fits.ImageHDU) and not any(
        key in hdu.header for key in ("BSCALE", "BZERO", "BLANK"))


def _check_sums(datasum_ok, checksum_ok, where: str, path, hdu_name) -> None:
    """`FitsReadError` when a CHECKSUM or DATASUM card present disagrees with the bytes."""
    if datasum_ok is False or checksum_ok is False:
        which = " and ".join(n for n, ok in (("CHECKSUM", checksum_ok), ("DATASUM", datasum_ok)) if ok is False)
        raise FitsReadError(f"{where}: corrupt file: {which} verification failed", path=path, hdu=hdu_name)


def _read_image_hdu_checked(raw, hdu, where: str, path, **kwargs):
    """`read_image_hdu` of a plain image HDU with its errors in our words (naming the file and the HDU)."""
    info = hdu.fileinfo()  # the HDU's own (HDUList.fileinfo also checks every HDU for resizing)
    try:
        return read_image_hdu(raw, hdu.header, info["hdrLoc"], info["datLoc"], info["datSpan"], **kwargs)
    except EOFError as err:
        raise FitsReadError(f"{where}: truncated file: {err}", path=path, hdu=hdu.name) from err
    except ValueError as err:
        raise FitsReadError(f"{where}: {err}", path=path, hdu=hdu.name) from err


class ExposureFitsReader:
    """An exposure file read one part at a time (afw's ``ExposureFitsReader``), each part verified
    (CHECKSUM/DATASUM) as `read_exposure` verifies it.

    Each ``read_*`` call reads its HDU again and keeps no reference to the result; ``add_image_into`` and
    ``add_variance_into`` add a plane into another as it is read, without an array of its own. Summing two
    snaps this way holds one exposure and the second snap's mask (260 MB for a 4k detector) instead of two
    exposures (390 MB). Use it as a context manager (the file stays open, its headers read once); the
    headers and extension count are checked on entering.

    Parameters
    ----------
    path : path-like
        A file `read_exposure` reads (IMAGE, MASK and VARIANCE HDUs).

    Raises
    ------
    FileNotFoundError, FitsReadError
        As `read_exposure`, for the parts read.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._stack: contextlib.ExitStack | None = None
        self._hdul = None
        self._raw = None

    def __enter__(self) -> ExposureFitsReader:
        stack = contextlib.ExitStack()
        try:
            self._hdul = stack.enter_context(open_fits(self.path, load=False))
            self._raw = stack.enter_context(open(self.path, "rb", buffering=0))
            primary = self._hdul[0].header
            self._ours = primary.get("VCFORMAT") == FORMAT_NAME
            if self._ours:
                _check_extension_count(self._hdul, primary, self.path)
            self._planes = {name: find_hdu(self._hdul, name, self.path) for name in ("IMAGE", "MASK", "VARIANCE")}
            shapes = {name: (h.header.get("NAXIS2"), h.header.get("NAXIS1")) for name, h in self._planes.items()}
            if len(set(shapes.values())) > 1:
                desc = ", ".join(f"{n} {s}" for n, s in shapes.items())
                raise FitsReadError(f"{self.path}: plane shapes differ: {desc}", path=self.path)
        except BaseException:
            stack.close()
            self._hdul = self._raw = None
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._hdul = self._raw = None

    def _open(self):
        if self._hdul is None:
            raise ValueError(f"{self.path}: use ExposureFitsReader as a context manager (with ...: ...)")
        return self._hdul

    def _read_plane(self, name: str, convert):
        self._open()
        hdu = self._planes[name]
        load_verified_hdu(self._raw, hdu, f"{self.path}[{name}]", self.path)
        try:
            return convert(hdu)
        finally:
            hdu.__dict__.pop("data", None)  # astropy's HDU would keep the array: the caller's is the only one

    def read_shape(self) -> tuple[int, int]:
        """The planes' shape, (ny, nx)."""
        self._open()
        header = self._planes["IMAGE"].header
        return int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0))

    def read_xy0(self) -> tuple[int, int]:
        """The image's origin in the parent frame, (x0, y0)."""
        self._open()
        return read_xy0(self._planes["IMAGE"].header, f"{self.path}[IMAGE]")

    def read_image(self) -> np.ndarray:
        """The IMAGE plane, float32 (y, x)."""
        return self._read_plane("IMAGE", lambda hdu: float_plane(hdu, self.path))

    def read_variance(self) -> np.ndarray:
        """The VARIANCE plane, float32 (y, x)."""
        return self._read_plane("VARIANCE", lambda hdu: float_plane(hdu, self.path))

    def add_image_into(self, out: np.ndarray) -> None:
        """``out += IMAGE`` (float32, the planes' shape), the same values as ``out + read_image()``; a float32
        plane is added a chunk at a time as it is read and verified, without an array of its own (on a
        checksum error ``out`` may hold part of the sum)."""
        self._add_plane_into("IMAGE", out)

    def add_variance_into(self, out: np.ndarray) -> None:
        """``out += VARIANCE``, as `add_image_into`."""
        self._add_plane_into("VARIANCE", out)

    def _add_plane_into(self, name: str, out: np.ndarray) -> None:
        self._open()
        hdu = self._planes[name]
        if (_plain_image_on_disk(hdu) and hdu.header.get("BITPIX") == -32 and out.dtype == np.float32
                and out.flags.c_contiguous and out.flags.writeable and out.shape == self.read_shape()):
            where = f"{self.path}[{name}]"
            _, sums = _read_image_hdu_checked(self._raw, hdu, where, self.path, add_into=out)
            _check_sums(sums.datasum_ok, sums.checksum_ok, where, self.path, name)
            return
        plane = self._read_plane(name, lambda h: float_plane(h, self.path))
        if plane.shape != out.shape:
            raise ValueError(f"{self.path}[{name}]: shape {plane.shape}, the plane added into is {out.shape}")
        np.add(out, plane, out=out)

    def read_mask(self) -> Mask:
        """The MASK plane with its planes (``MP_`` cards)."""
        return self._read_plane("MASK", lambda hdu: mask_from_hdu(hdu, self.path, remap=False,
                                                                  require_names=self._ours))

    def read_visit_info(self) -> VisitInfo | None:
        """The VisitInfo of the primary header; None when it has none."""
        return _primary_parts(self._open()[0].header, self.path)[0]

    def read_metadata(self) -> fits.Header:
        """The primary header's cards other than the layout's own (an `Exposure`'s ``metadata``)."""
        return _primary_parts(self._open()[0].header, self.path)[2]


def find_hdu(hdul, extname: str, path):
    """The HDU named ``extname``; `FitsReadError` listing the HDUs present otherwise."""
    if extname in hdul:
        return hdul[extname]
    names = ", ".join(h.name or f"#{i}" for i, h in enumerate(hdul))
    raise FitsReadError(f"{path}: no {extname} HDU (found: {names})", path=path, hdu=extname)


def float_plane(hdu, path) -> np.ndarray:
    """A 2-D image HDU's data as native-endian float32 (bit-identical for float32 data)."""
    data = hdu.data
    where = f"{path}[{hdu.name}]"
    if data is None or data.ndim != 2:
        raise FitsReadError(f"{where}: expected a 2-D image, got {None if data is None else data.shape}",
                            path=path, hdu=hdu.name)
    if data.dtype.kind != "f":
        raise FitsReadError(f"{where}: expected floating-point pixels, got {data.dtype}", path=path, hdu=hdu.name)
    return np.ascontiguousarray(data, dtype=np.float32)


def check_shapes(path, **planes) -> None:
    """`FitsReadError` naming the planes whose shapes differ."""
    shapes = {name: a.shape for name, a in planes.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{n} {s}" for n, s in shapes.items())
        raise FitsReadError(f"{path}: plane shapes differ: {desc}", path=path)


def read_xy0(header: fits.Header, where: str) -> tuple[int, int]:
    """xy0 from the afw alternate WCS ``A`` (``CRVAL1A - CRPIX1A + 1``) or else ``-LTV1, -LTV2``; (0, 0) if neither."""
    for key in ("CRVAL1A", "CRVAL2A", "CRPIX1A", "CRPIX2A", "LTV1", "LTV2"):
        value = header.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise FitsReadError(f"{where}: card {key} = {value!r} is not a number")
    if str(header.get("CTYPE1A", "")).strip() == "LINEAR" and "CRVAL1A" in header and "CRVAL2A" in header:
        values = [header[f"CRVAL{i}A"] - header.get(f"CRPIX{i}A", 1.0) + 1.0 for i in (1, 2)]
        source = "CRVAL1A/CRVAL2A"
    elif "LTV1" in header or "LTV2" in header:
        values = [-header.get("LTV1", 0.0), -header.get("LTV2", 0.0)]
        source = "LTV1/LTV2"
    else:
        return (0, 0)
    if not all(math.isfinite(v) and float(v).is_integer() for v in values):
        raise FitsReadError(f"{where}: {source} give a non-integer xy0 {values}")
    return (int(values[0]), int(values[1]))


def wcs_from_header(header: fits.Header, xy0, where: str) -> WCS | None:
    """The celestial WCS of an image header written in the array frame, shifted to the parent frame by
    ``xy0``; None when the header has no celestial WCS. FITS "fix" notices are silenced on purpose."""
    try:
        wcs = read_wcs(header, where=where)
    except ValueError as err:
        raise FitsReadError(str(err)) from err
    if wcs is None:
        return None
    return shift_wcs(wcs, *xy0)


def mask_from_hdu(hdu, path, *, remap: bool, require_names: bool = True) -> Mask:
    """A `Mask` from a MASK HDU and its ``MP_<NAME> = bit`` cards.

    ``remap=False`` keeps the file's bits (our files): standard names must sit at their standard bit;
    other names are added at the file's bit (a collision is an error). ``remap=True`` (foreign files)
    moves each plane onto our bit for its name, adding unknown names at the lowest free bit.
    """
    where = f"{path}[{hdu.name}]"
    data = hdu.data
    if data is None or data.ndim != 2 or data.dtype.kind not in "iu":
        raise FitsReadError(f"{where}: expected a 2-D integer image, got "
                            f"{None if data is None else (data.shape, data.dtype)}", path=path, hdu=hdu.name)
    if data.dtype.itemsize == 4:
        array = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("=")).view(np.uint32)
    else:
        array = (data.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
    cards = {c.keyword[3:]: (c.keyword, c.value, c.comment) for c in hdu.header.cards if c.keyword.startswith("MP_")}
    if not cards:
        if require_names:
            raise FitsReadError(f"{where}: no MP_<NAME> mask-plane cards", path=path, hdu=hdu.name)
        return Mask(array.view(np.int32).copy())
    planes = MaskPlanes()
    file_bits: dict[int, str] = {}
    for name, (key, bit, comment) in cards.items():
        if isinstance(bit, bool) or not isinstance(bit, (int, np.integer)) or not 0 <= bit < 32:
            raise FitsReadError(f"{where}: card {key} = {bit!r} is not a bit number 0..31", path=path, hdu=hdu.name)
        if bit in file_bits:
            raise FitsReadError(f"{where}: planes {file_bits[bit]} and {name} both use bit {bit}",
                                path=path, hdu=hdu.name)
        file_bits[bit] = name
        try:
            if remap:
                planes.add_plane(name, comment)
            else:
                planes.add(name, bit, comment)
        except ValueError as err:
            raise FitsReadError(f"{where}: card {key}: {err}", path=path, hdu=hdu.name) from err
    orphans = int(np.bitwise_or.reduce(array, axis=None)) & ~sum(1 << b for b in file_bits) if array.size else 0
    if orphans:
        raise FitsReadError(f"{where}: mask bits {hex(orphans)} are set but have no MP_ card",
                            path=path, hdu=hdu.name)
    if remap:
        out = np.zeros_like(array)
        for bit, name in file_bits.items():
            out |= ((array >> np.uint32(bit)) & np.uint32(1)) << np.uint32(planes[name])
        array = out
    # The array is the HDU's own (read by open_fits into a native array, or converted above): share it as the
    # image and variance planes are shared (float_plane), instead of a fourth pass over 64 MB (issue 25).
    if not array.flags.writeable:
        array = array.copy()
    return Mask(array.view(np.int32), planes)


# ---------------------------------------------------------------------------------------------- testing

def assert_exposures_equal(a: Exposure, b: Exposure, *, wcs_tol_deg: float = 1e-10, metadata: bool = True) -> None:
    """Assert ``a`` and ``b`` hold the same pixels (bit for bit, NaN payloads included), mask planes,
    xy0, VisitInfo, Detector, metadata cards and summary stats, and WCSs agreeing to ``wcs_tol_deg``
    on a grid over the image. Other components are compared with ``==`` when their class defines it."""
    assert a.xy0 == b.xy0, f"xy0 {a.xy0} != {b.xy0}"
    for name in ("image", "variance"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == np.float32 and x.shape == y.shape, f"{name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), f"{name} pixels differ"
    assert np.array_equal(a.mask.array, b.mask.array), "mask pixels differ"
    assert dict(a.mask.planes) == dict(b.mask.planes), f"mask planes {dict(a.mask.planes)} != {dict(b.mask.planes)}"
    assert a.visit_info == b.visit_info, f"{a.visit_info} != {b.visit_info}"
    assert a.detector == b.detector, f"{a.detector} != {b.detector}"
    if metadata:
        cards = lambda h: [(c.keyword, c.value, c.comment) for c in h.cards]  # noqa: E731
        assert cards(a.metadata) == cards(b.metadata), "metadata cards differ"
    assert (a.wcs is None) == (b.wcs is None), "only one exposure has a WCS"
    if a.wcs is not None:
        ys, xs = np.meshgrid(np.linspace(0, a.height - 1, 7), np.linspace(0, a.width - 1, 7), indexing="ij")
        xs, ys = xs + a.xy0[0], ys + a.xy0[1]
        ra1, dec1 = a.wcs.all_pix2world(xs, ys, 0)
        ra2, dec2 = b.wcs.all_pix2world(xs, ys, 0)
        diff = max(np.max(np.abs((ra1 - ra2 + 180) % 360 - 180) * np.cos(np.radians(dec1))), np.max(np.abs(dec1 - dec2)))
        assert diff <= wcs_tol_deg, f"WCSs differ by {diff} deg"
    for attr in COMPONENT_HDUS:
        x, y = getattr(a, attr), getattr(b, attr)
        assert (x is None) == (y is None), f"{attr} set in only one exposure"
        if x is not None and type(x).__eq__ is not object.__eq__:
            same = (x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)) if isinstance(x, dict) else x == y
            assert same, f"{attr} differs: {x!r} != {y!r}"
