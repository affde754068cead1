"""Reader for DECam Community Pipeline (CP) "InstCal" triplets: image (``ooi``), inverse-variance
weight (``oow``) and data-quality mask (``ood``).

Each file has a primary HDU (exposure-level cards) and one extension per CCD named by its DETPOS
(``'N6'``); the extension may be a plain ``ImageHDU`` or a tile-compressed ``CompImageHDU``.

Conventions
-----------
xy0 (``LTV1``/``LTV2``)
    IRAF's LTV/LTM cards relate "physical" (here: parent CCD) to image pixels by
    ``image = LTM * physical + LTV`` in 1-based coordinates, so with ``LTM = 1`` the cut-out's
    1-based pixel 1 is physical pixel ``1 - LTV``; in 0-based terms the cut-out's element ``[0, 0]``
    is parent pixel ``-LTV``. Hence ``xy0 = (-LTV1, -LTV2)``: the legacypipe test cut-outs have
    ``LTV = -1``, i.e. they start at 0-based parent pixel (1, 1) (1-based (2, 2)).
WCS
    The extension's TPV WCS (read by astropy/wcslib) is written for the cut-out's own pixels (IRAF
    shifts CRPIX together with LTV when it copies a section). visitcal's WCS maps parent-frame
    pixels, so CRPIX is shifted by ``+xy0``: the result at parent ``(j + x0, i + y0)`` equals
    astropy's plain reading of the header at ``(j, i)`` (0-based) for array element ``[i, j]``.
    The WCS uses only the extension's cards: the primary's ``RADESYS = 'FK5'``/``EQUINOX`` describe
    the telescope pointing, not the SCAMP solution, and are not inherited (wcslib's default, ICRS).
Variance
    ``1 / weight`` (float32) where ``weight > 0``; ``+inf`` and the ``NO_DATA`` plane where the weight
    is 0 (or negative or not finite).
Data quality (`DQ_CODES`, `DQ_BITS`)
    CP versions >= V3.5 (``PLVER``) store one integer code per pixel, older ones OR-ed bits.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.time import Time, TimeDelta

from ..core.geom import Box2I
from ..core.image import Detector, Exposure, Mask, MaskedImage, VisitInfo
from . import FitsReadError
from ..core.wcs import shift_wcs
from .fits import RESERVED_PRIMARY_KEYS, copy_cards, float_plane, open_fits, wcs_from_header

__all__ = ["read_decam_cp", "DQ_CODES", "DQ_BITS", "DECAM_PIXEL_SIZE_MM"]

#: CP >= V3.5 data-quality codes -> mask plane.
DQ_CODES = {1: "BAD", 2: "NO_DATA", 3: "SAT", 4: "SAT", 5: "CR", 6: "SUSPECT", 7: "SUSPECT", 8: "STREAK"}
#: CP < V3.5 data-quality bits -> mask plane (1 bad, 2 saturated, 4 interpolated, 16 cosmic ray,
#: 64 bleed trail, 128 transient).
DQ_BITS = {1: "BAD", 2: "SAT", 4: "INTRP", 16: "CR", 64: "SAT", 128: "SUSPECT"}
DECAM_PIXEL_SIZE_MM = 0.015
_CODES_SINCE = (3, 5)

_WCS_KEY = re.compile(r"^(WCSAXES|WCSDIM|CTYPE\d|CUNIT\d|CRPIX\d|CRVAL\d|CDELT\d|CD\d_\d|PC\d_\d|PV\d_\d+|"
                      r"LTV\d|LTM\d_\d|WAT\d_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX)$")
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "EXTNAME",
               "INHERIT", "NEXTEND", "CHECKSUM", "DATASUM", "BSCALE", "BZERO", "ZIMAGE", "ZBITPIX", "ZNAXIS",
               "ZNAXIS1", "ZNAXIS2", "ZCMPTYPE", "ZTILE1", "ZTILE2", "ZQUANTIZ", "ZDITHER0", "TFIELDS"}
#: Header keys turned into VisitInfo/Detector (kept out of the metadata).
DECAM_CONSUMED = ("EXPNUM", "FILTER", "EXPTIME", "MJD-OBS", "AIRMASS", "TELRA", "TELDEC", "OBS-LONG", "OBS-LAT",
                  "OBS-ELEV", "CCDNUM", "DETPOS")


def read_decam_cp(image_path, weight_path, dq_path, *, hdu=None, dq_style: str = "auto") -> Exposure:
    """Read one CCD of a DECam CP image / weight / data-quality triplet into an `Exposure`.

    Parameters
    ----------
    image_path, weight_path, dq_path : str or os.PathLike
        The ``ooi``, ``oow`` and ``ood`` files.
    hdu : int or str, optional
        Extension index or name (DETPOS, e.g. ``'N6'``); by default the only image extension.
    dq_style : {"auto", "codes", "bits"}
        How to read the data-quality values; ``"auto"`` uses codes for ``PLVER >= V3.5``.

    Returns
    -------
    Exposure
        float32 image (CP units, ADU), variance ``1/weight`` (+inf and NO_DATA where weight is 0),
        mask from the DQ plane, xy0 ``= -LTV``, TPV WCS in the parent frame, `VisitInfo` (``id`` =
        EXPNUM, ``band`` = first word of FILTER, ``date`` = MJD-OBS + EXPTIME/2, boresight =
        TELRA/TELDEC), `Detector` (``id`` = CCDNUM, ``name`` = DETPOS, ``bbox`` = the DETSEC extent),
        and the remaining primary + extension cards (GAINA, SATURATE …) as metadata.

    Raises
    ------
    FitsReadError
        Missing extension, shapes differing between the files (both named), unknown DQ value
        (file and value named), non-integer LTV, truncated file.
    """
    if dq_style not in ("auto", "codes", "bits"):
        raise ValueError(f"dq_style must be 'auto', 'codes' or 'bits', got {dq_style!r}")
    paths = [Path(p) for p in (image_path, weight_path, dq_path)]
    planes, headers, primaries = [], [], []
    for path in paths:
        with open_fits(path) as hdul:
            ext = _select_hdu(hdul, hdu, path)
            planes.append(ext.data if path is paths[2] else float_plane(ext, path))
            headers.append(ext.header.copy())
            primaries.append(hdul[0].header.copy())
    image, weight, dq = planes
    for path, plane in zip(paths[1:], planes[1:]):
        if plane.shape != image.shape:
            raise FitsReadError(f"{paths[0]} has shape {image.shape} but {path} has shape {plane.shape}", path=path)
    header, primary = headers[0], primaries[0]
    xy0 = _xy0_from_ltv(header, paths[0])
    variance, no_data = _variance(weight)
    mask = _dq_mask(dq, paths[2], _dq_style(dq_style, primaries[2], primaries[0], paths[2]))
    mask.set("NO_DATA", no_data)
    wcs = _wcs(header, xy0, paths[0])
    merged = _merge(primary, header)
    exposure = Exposure(MaskedImage(image, mask, variance, xy0=xy0), wcs=wcs, visit_info=_visit_info(merged, paths[0]),
                        detector=_detector(merged, image.shape, xy0), metadata=_metadata(merged))
    return exposure


def _select_hdu(hdul, hdu, path):
    if hdu is not None:
        try:
            return hdul[hdu]
        except (KeyError, IndexError):
            names = ", ".join(h.name for h in hdul)
            raise FitsReadError(f"{path}: no HDU {hdu!r} (found: {names})", path=path, hdu=hdu) from None
    images = [h for h in hdul[1:] if h.is_image and h.data is not None]
    if len(images) != 1:
        names = ", ".join(h.name for h in images) or "none"
        raise FitsReadError(f"{path}: expected one image extension, found {len(images)} ({names}); pass hdu=",
                            path=path)
    return images[0]


def _xy0_from_ltv(header, path) -> tuple[int, int]:
    if header.get("LTM1_1", 1.0) != 1.0 or header.get("LTM2_2", 1.0) != 1.0:
        raise FitsReadError(f"{path}: LTM1_1/LTM2_2 != 1 (binned or flipped section) is not supported", path=path)
    ltv = [header.get("LTV1", 0.0), header.get("LTV2", 0.0)]
    if not all(float(v).is_integer() for v in ltv):
        raise FitsReadError(f"{path}: LTV1/LTV2 = {ltv} are not integers", path=path)
    return (int(-ltv[0]), int(-ltv[1]))


def _variance(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    good = np.isfinite(weight) & (weight > 0)
    variance = np.full(weight.shape, np.inf, dtype=np.float32)
    np.divide(np.float32(1.0), weight, out=variance, where=good)
    return variance, ~good


def _dq_style(style: str, dq_primary, image_primary, path) -> str:
    if style != "auto":
        return style
    plver = dq_primary.get("PLVER", image_primary.get("PLVER"))
    match = re.match(r"^\s*V?(\d+)\.(\d+)", str(plver or ""))
    if not match:
        raise FitsReadError(f"{path}: PLVER {plver!r} does not give the CP version; pass dq_style='codes' or "
                            "'bits'", path=path, hdu="PRIMARY")
    return "codes" if (int(match[1]), int(match[2])) >= _CODES_SINCE else "bits"


def _dq_mask(dq: np.ndarray, path, style: str) -> Mask:
    if dq.dtype.kind not in "iu":
        raise FitsReadError(f"{path}: data-quality plane must hold integers, got {dq.dtype}", path=path)
    dq = np.asarray(dq, dtype=np.int64)
    mask = Mask(shape=dq.shape)
    if style == "codes":
        unknown = sorted(set(np.unique(dq).tolist()) - set(DQ_CODES) - {0})
        if unknown:
            raise FitsReadError(f"{path}: unknown CP data-quality code(s) {unknown} (known: {sorted(DQ_CODES)})",
                                path=path)
        for code, plane in DQ_CODES.items():
            mask.set(plane, dq == code)
    else:
        known = sum(DQ_BITS)
        stray = int(np.bitwise_or.reduce(dq, axis=None)) & ~known if dq.size else 0
        if stray or (dq < 0).any():
            raise FitsReadError(f"{path}: unknown CP data-quality bit(s) {hex(stray)} (known: {sorted(DQ_BITS)})",
                                path=path)
        for bit, plane in DQ_BITS.items():
            mask.set(plane, (dq & bit) != 0)
    return mask


def _wcs(header, xy0, path):
    # The cut-out header's WCS is in the cut-out's frame: read it at xy0 = 0 and shift it by xy0.
    wcs = wcs_from_header(header, (0, 0), f"{path}[{header.get('EXTNAME', 1)}]")
    return None if wcs is None else shift_wcs(wcs, *xy0)


def _merge(primary, ext) -> fits.Header:
    """The extension header with the primary's cards inherited (``INHERIT = T``); the extension wins."""
    merged = fits.Header()
    inherit = ext.get("INHERIT", True)
    for card in primary.cards if inherit else ():
        if card.keyword not in _STRUCTURAL:
            merged.append(card)
    for card in ext.cards:
        if card.keyword in _STRUCTURAL:
            continue
        if card.keyword in ("COMMENT", "HISTORY", "") or card.keyword not in merged:
            merged.append(card)
        else:
            merged[card.keyword] = (card.value, card.comment)
    return merged


def _metadata(merged) -> fits.Header:
    drop = set(RESERVED_PRIMARY_KEYS) | set(DECAM_CONSUMED) | {k for k in merged if _WCS_KEY.match(k)}
    return copy_cards(merged, fits.Header(), drop)


def _visit_info(h, path) -> VisitInfo:
    try:
        exptime = float(h["EXPTIME"])
        date = None
        if "MJD-OBS" in h:  # start of the exposure -> middle (VisitInfo convention)
            date = Time(float(h["MJD-OBS"]), format="mjd", scale="utc") + TimeDelta(exptime / 2, format="sec")
        ra = Angle(h["TELRA"], unit=u.hourangle).deg if "TELRA" in h else None
        dec = Angle(h["TELDEC"], unit=u.deg).deg if "TELDEC" in h else None
        obs = None
        if "OBS-LAT" in h and "OBS-LONG" in h:
            # DECam writes OBS-LONG = +70.81489 (west-positive, despite its "east longitude" comment):
            # CTIO is at 70.8 deg *west*, so the east longitude is its negative.
            obs = (-abs(float(h["OBS-LONG"])), float(h["OBS-LAT"]), float(h.get("OBS-ELEV", float("nan"))))
        physical = str(h["FILTER"]).strip() if "FILTER" in h else None
        return VisitInfo(id=h.get("EXPNUM"), band=physical.split()[0] if physical else None,
                         physical_filter=physical, exposure_time=exptime, date=date, airmass=h.get("AIRMASS"),
                         boresight_ra_dec=(ra, dec), observatory=obs)
    except (KeyError, ValueError, TypeError) as err:
        raise FitsReadError(f"{path}: cannot build VisitInfo from the header: {err}", path=path) from err


def _parse_section(value) -> tuple[int, int, int, int] | None:
    m = re.match(r"^\[(\d+):(\d+),(\d+):(\d+)\]$", str(value or "").strip())
    return tuple(int(v) for v in m.groups()) if m else None


def _detector(h, shape, xy0) -> Detector | None:
    if "CCDNUM" not in h:
        return None
    cutout = Box2I.from_shape(shape, xy0)
    bbox, centre = cutout, (float("nan"), float("nan"))
    detsec, detsize = _parse_section(h.get("DETSEC")), _parse_section(h.get("DETSIZE"))
    if detsec is not None:
        x1, x2, y1, y2 = detsec
        full = Box2I(0, 0, abs(x2 - x1), abs(y2 - y1))
        bbox = full if full.contains_box(cutout) else cutout
        if detsize is not None:  # DETSEC centre relative to the focal-plane (DETSIZE) centre, in mm
            cx = 0.5 * (x1 + x2) - 0.5 * (detsize[0] + detsize[1])
            cy = 0.5 * (y1 + y2) - 0.5 * (detsize[2] + detsize[3])
            centre = (cx * DECAM_PIXEL_SIZE_MM, cy * DECAM_PIXEL_SIZE_MM)
    return Detector(id=int(h["CCDNUM"]), name=str(h.get("DETPOS", "")).strip(), bbox=bbox,
                    focal_plane_center=centre, rotation=0.0, pixel_size_mm=DECAM_PIXEL_SIZE_MM)
