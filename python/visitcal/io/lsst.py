"""Reader for LSST (afw) calexp-style FITS files.

An afw ``ExposureF`` file has a primary HDU carrying the metadata and VisitInfo cards, then the
``IMAGE``, ``MASK`` and ``VARIANCE`` HDUs, then the afw "archive" binary tables (PhotoCalib, ApCorrMap,
Detector, FilterLabel, SkyWcs, PSF … in afw's own persistence format: `visitcal.io.afw_archive`), which
the primary header points at with ``ARCHIVE_ID_<COMPONENT>`` cards.

Conventions read (afw's, which visitcal's own layout shares):

* The image HDUs are found as afw finds them: by ``EXTTYPE`` (what afw writes, with no ``EXTNAME``), else
  by ``EXTNAME``, else by position (HDUs 1, 2, 3).
* xy0 from the alternate WCS ``A`` (``CRVAL1A/CRVAL2A`` with ``CTYPE1A = 'LINEAR'``), else from
  ``LTV1/LTV2`` (``xy0 = -LTV``).
* The IMAGE header WCS is in the array frame; it is shifted by xy0 into the parent frame. It is replaced by
  the archive's SkyWcs when a reader for its class is registered in `visitcal.io.afw.COMPONENT_READERS`.
* ``MP_<NAME> = bit`` cards are remapped onto visitcal's bits for the same name; planes visitcal does
  not know (e.g. afw's ``CROSSTALK``, ``UNMASKEDNAN``) are added at the lowest free bit.
* Archive components are read by `visitcal.io.afw.read_afw_components`; classes without a reader are
  logged at WARNING by name (never dropped silently).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

from astropy.io import fits
from astropy.time import Time, TimeDelta

from ..core.image import Exposure, MaskedImage, VisitInfo
from . import FitsReadError
from .afw import COMPONENT_READERS, LEGACY_ID_CARDS, AfwVisitInfo, afw_component_ids, read_afw_components
from .fits import RESERVED_PRIMARY_KEYS, check_shapes, copy_cards, find_hdu, float_plane, mask_from_hdu, open_fits, \
    read_xy0, wcs_from_header

__all__ = ["find_afw_hdu", "read_lsst_calexp", "visit_info_from_afw_header", "visit_info_from_lsst_header"]

#: Primary-header keys turned into `VisitInfo` (and therefore not kept in the metadata).
LSST_VISIT_KEYS = ("EXPID", "EXPNUM", "VISIT", "EXPTIME", "FILTER", "BAND", "DATE-AVG", "TIMESYS", "MJD-AVG",
                   "MJD-OBS", "DATE-OBS", "BORE-AIRMASS", "AIRMASS", "BORE-RA", "BORE-DEC", "BORE-ROTANG",
                   "OBS-LONG", "OBS-LAT", "OBS-ELEV")


_PLANE_POSITIONS = {"IMAGE": 1, "MASK": 2, "VARIANCE": 3}


def find_afw_hdu(hdul, name: str, path):
    """The ``IMAGE``/``MASK``/``VARIANCE`` HDU as afw finds it: the first HDU with ``EXTTYPE = name``, else
    the one with ``EXTNAME = name``, else the image HDU at afw's position (1, 2, 3) when it carries neither
    card. `FitsReadError` listing the HDUs present otherwise."""
    for hdu in hdul:
        if str(hdu.header.get("EXTTYPE", "")).strip() == name:
            return hdu
    if name in hdul:
        return hdul[name]
    k = _PLANE_POSITIONS.get(name)
    if k is not None and k < len(hdul):
        hdu = hdul[k]
        if isinstance(hdu, (fits.ImageHDU, fits.CompImageHDU)) and not hdu.header.get("EXTTYPE") \
                and not hdu.header.get("EXTNAME"):
            return hdu
    return find_hdu(hdul, name, path)  # raises, listing the HDUs


def read_lsst_calexp(path, *, trust_pickle: bool = False) -> Exposure:
    """Read an LSST-style calexp FITS file into an `Exposure`.

    Parameters
    ----------
    path : str or os.PathLike
    trust_pickle : bool, optional
        Passed to the component readers: a reader of a pickled component (LSST's ``PiffPsf``) loads it only
        when True (a pickle runs code when loaded: only for files you trust).

    Returns
    -------
    Exposure
        Pixels, mask (planes remapped by name), variance, xy0, the WCS in the parent frame (when the
        IMAGE header has a celestial one, unless the archive's SkyWcs is read), `VisitInfo` from the primary
        header (`visit_info_from_lsst_header`; an `visitcal.io.afw.AfwVisitInfo` with the dark time when the
        file has an afw archive, or the archive's VisitInfo when it has one), the band and physical filter of
        the archive's FilterLabel in ``visit_info``, and the archive's components that have a reader:
        ``photo_calib``, ``ap_corr_map``, ``detector``, ``psf``, ``wcs``. An afw ``SkyWcs`` (AST, read with
        starlink-pyast) is kept exact as ``exposure.sky_wcs`` (`visitcal.io.afw_wcs.AstSkyWcs`; None otherwise)
        and ``exposure.wcs`` is its TAN-SIP approximation over the image, whose largest error (arcsec) is the
        ``AFW_SKYWCS_TANSIP_ERR`` card. afw's ``GaussianPsf`` and LSST's ``PiffPsf`` are read once `visitcal.psf` is
        imported (which registers their readers), the ``PiffPsf`` only with ``trust_pickle``; otherwise it is
        logged and left out. The remaining
        primary cards are the metadata, less the archive's pointers (``ARCHIVE_ID_*``, ``<NAME>_ID``,
        ``AR_HDU``, ``EXPINFO_V``).

    Raises
    ------
    FitsReadError
        Missing HDU, shape mismatch, missing or colliding ``MP_`` cards, truncated file, a malformed archive.
    """
    path = Path(path)
    with open_fits(path) as hdul:
        primary = hdul[0].header
        img, msk, var = (find_afw_hdu(hdul, name, path) for name in ("IMAGE", "MASK", "VARIANCE"))
        xy0 = read_xy0(img.header, f"{path}[IMAGE]")
        image, variance = float_plane(img, path), float_plane(var, path)
        mask = mask_from_hdu(msk, path, remap=True, require_names=True)
        check_shapes(path, IMAGE=image, MASK=mask.array, VARIANCE=variance)
        wcs = wcs_from_header(img.header, xy0, f"{path}[IMAGE]")
        has_archive = bool(afw_component_ids(primary))
        try:
            visit_info = visit_info_from_afw_header(primary) if has_archive else visit_info_from_lsst_header(primary)
        except Exception as err:  # noqa: BLE001 - astropy's Time raises its own types (ScaleValueError)
            why = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
            raise FitsReadError(f"{path}[PRIMARY]: bad visit card: {why}", path=path, hdu="PRIMARY") from err
        components = {}
        if has_archive:
            components, _unsupported = read_afw_components(hdul, path, readers=COMPONENT_READERS,
                                                            trust_pickle=trust_pickle)
        drop = set(RESERVED_PRIMARY_KEYS) | set(LSST_VISIT_KEYS)
        if has_archive:  # the archive's pointers mean nothing outside this file
            drop |= {k for k in primary if k.startswith("ARCHIVE_ID_") or k in ("AR_HDU", "EXPINFO_V")}
            drop |= {f"{c}_ID" for c in afw_component_ids(primary)} | set(LEGACY_ID_CARDS)
        metadata = copy_cards(primary, fits.Header(), drop)
    visit_info = components.pop("visit_info", visit_info)
    filter_label = components.pop("filter", None)
    if filter_label is not None:
        visit_info = dataclasses.replace(visit_info if visit_info is not None else VisitInfo(),
                                         band=filter_label.band, physical_filter=filter_label.physical)
    sky_wcs = components.pop("wcs", None)
    if sky_wcs is not None and not hasattr(sky_wcs, "to_tan_sip"):  # an astropy WCS (an old TanWcs)
        wcs, sky_wcs = sky_wcs, None
    if sky_wcs is not None:
        # an afw SkyWcs (AST): the exposure's astropy WCS is its TAN-SIP approximation over the image, with the
        # approximation's largest error in the metadata; the exact one stays as exposure.sky_wcs
        ny, nx = image.shape
        wcs, err = sky_wcs.to_tan_sip((xy0[0] - 0.5, xy0[0] + nx - 0.5, xy0[1] - 0.5, xy0[1] + ny - 0.5))
        metadata["HIERARCH AFW_SKYWCS_TANSIP_ERR"] = (float(err), "[arcsec] largest error of the TAN-SIP WCS")
    kept = {k: v for k, v in components.items() if k in ("psf", "photo_calib", "ap_corr_map", "detector")}
    exposure = Exposure(MaskedImage(image, mask, variance, xy0=xy0), wcs=wcs, visit_info=visit_info,
                        metadata=metadata, **kept)
    exposure.sky_wcs = sky_wcs
    return exposure


def visit_info_from_lsst_header(header) -> VisitInfo | None:
    """`VisitInfo` from afw keys (``EXPID``, ``DATE-AVG`` + ``TIMESYS``, ``BORE-*``) or the usual FITS
    ones (``EXPNUM``, ``MJD-OBS``/``DATE-OBS`` + half the exposure time, ``AIRMASS``). None when the
    header has none of them."""
    g = header.get
    if not any(k in header for k in LSST_VISIT_KEYS):
        return None
    exptime = g("EXPTIME")
    date = None
    scale = str(g("TIMESYS", "UTC")).strip().lower()
    if g("DATE-AVG") is not None:
        date = Time(g("DATE-AVG"), format="isot", scale=scale)
    elif g("MJD-OBS") is not None or g("DATE-OBS") is not None:
        start = Time(float(g("MJD-OBS")), format="mjd", scale=scale) if g("MJD-OBS") is not None \
            else Time(g("DATE-OBS"), format="isot", scale=scale)
        half = 0.0 if exptime is None or not math.isfinite(exptime) else 0.5 * exptime
        date = start + TimeDelta(half, format="sec")
    visit_id = next((g(k) for k in ("EXPID", "VISIT", "EXPNUM") if g(k) is not None), None)
    obs = None
    if "OBS-LAT" in header and "OBS-LONG" in header:
        obs = (g("OBS-LONG"), g("OBS-LAT"), g("OBS-ELEV", float("nan")))
    return VisitInfo(id=visit_id, band=g("BAND"), physical_filter=g("FILTER"), exposure_time=exptime, date=date,
                     airmass=g("BORE-AIRMASS", g("AIRMASS")), boresight_ra_dec=(g("BORE-RA"), g("BORE-DEC")),
                     boresight_rot_angle=g("BORE-ROTANG"), observatory=obs)


def visit_info_from_afw_header(header: Mapping) -> "AfwVisitInfo | None":
    """`AfwVisitInfo` from the primary-header cards afw writes for an exposure's VisitInfo.

    The `VisitInfo` part is `visit_info_from_lsst_header`'s (``EXPID``, ``EXPTIME``,
    ``DATE-AVG`` + ``TIMESYS``, ``BORE-*``, ``OBS-LONG``/``OBS-LAT``/``OBS-ELEV`` ...); added: ``DARKTIME``
    (s) and ``ROTTYPE``. None when the header has no visit card.
    """
    base = visit_info_from_lsst_header(header)
    if base is None and "DARKTIME" not in header:
        return None
    d = base.to_dict() if base is not None else {}
    rot = header.get("ROTTYPE")
    return AfwVisitInfo(**d, dark_time=float(header.get("DARKTIME", math.nan)),
                        rotation_type=None if rot is None else str(rot).strip())
