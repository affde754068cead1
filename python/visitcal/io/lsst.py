"""Reader for LSST (afw) calexp-style FITS files.

An afw ``ExposureF`` file has an empty primary HDU carrying the metadata and VisitInfo cards, then
``IMAGE``, ``MASK`` and ``VARIANCE`` HDUs (found here by EXTNAME), then afw "archive" binary tables
(PSF, ap-corr map … in afw's own persistence format, which this reader ignores).

Conventions read (afw's, which visitcal's own layout shares):

* xy0 from the alternate WCS ``A`` (``CRVAL1A/CRVAL2A`` with ``CTYPE1A = 'LINEAR'``), else from
  ``LTV1/LTV2`` (``xy0 = -LTV``).
* The IMAGE header WCS is in the array frame; it is shifted by xy0 into the parent frame.
* ``MP_<NAME> = bit`` cards are remapped onto visitcal's bits for the same name; planes visitcal does
  not know (e.g. afw's ``CROSSTALK``, ``UNMASKEDNAN``) are added at the lowest free bit.
"""

from __future__ import annotations

import math
from pathlib import Path

from astropy.io import fits
from astropy.time import Time, TimeDelta

from ..core.image import Exposure, MaskedImage, VisitInfo
from . import FitsReadError
from .fits import RESERVED_PRIMARY_KEYS, check_shapes, copy_cards, find_hdu, float_plane, mask_from_hdu, open_fits, \
    read_xy0, wcs_from_header

__all__ = ["read_lsst_calexp", "visit_info_from_lsst_header"]

#: Primary-header keys turned into `VisitInfo` (and therefore not kept in the metadata).
LSST_VISIT_KEYS = ("EXPID", "EXPNUM", "VISIT", "EXPTIME", "FILTER", "BAND", "DATE-AVG", "TIMESYS", "MJD-AVG",
                   "MJD-OBS", "DATE-OBS", "BORE-AIRMASS", "AIRMASS", "BORE-RA", "BORE-DEC", "BORE-ROTANG",
                   "OBS-LONG", "OBS-LAT", "OBS-ELEV")


def read_lsst_calexp(path) -> Exposure:
    """Read an LSST-style calexp FITS file into an `Exposure`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Exposure
        Pixels, mask (planes remapped by name), variance, xy0, the WCS in the parent frame (when the
        IMAGE header has a celestial one), `VisitInfo` from the primary header (`visit_info_from_lsst_header`)
        and the remaining primary cards as metadata. afw archive components are not read.

    Raises
    ------
    FitsReadError
        Missing HDU, shape mismatch, missing or colliding ``MP_`` cards, truncated file.
    """
    path = Path(path)
    with open_fits(path) as hdul:
        primary = hdul[0].header
        img, msk, var = (find_hdu(hdul, name, path) for name in ("IMAGE", "MASK", "VARIANCE"))
        xy0 = read_xy0(img.header, f"{path}[IMAGE]")
        image, variance = float_plane(img, path), float_plane(var, path)
        mask = mask_from_hdu(msk, path, remap=True, require_names=True)
        check_shapes(path, IMAGE=image, MASK=mask.array, VARIANCE=variance)
        wcs = wcs_from_header(img.header, xy0, f"{path}[IMAGE]")
        try:
            visit_info = visit_info_from_lsst_header(primary)
        except Exception as err:  # noqa: BLE001 - astropy's Time raises its own types (ScaleValueError)
            why = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
            raise FitsReadError(f"{path}[PRIMARY]: bad visit card: {why}", path=path, hdu="PRIMARY") from err
        metadata = copy_cards(primary, fits.Header(), set(RESERVED_PRIMARY_KEYS) | set(LSST_VISIT_KEYS))
    return Exposure(MaskedImage(image, mask, variance, xy0=xy0), wcs=wcs, visit_info=visit_info, metadata=metadata)


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
