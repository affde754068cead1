"""World coordinate systems: astropy ``WCS`` holding TAN-SIP or TPV, with our pixel convention.

Pixel coordinates are *parent-frame* positions with pixel centres at integers (an exposure with
``xy0 = (x0, y0)`` has array index ``[j, i]`` at pixel ``(x0 + i, y0 + j)``), i.e. astropy's
``origin=0`` convention. TAN-SIP uses astropy's SIP support; TPV (``RA---TPV``, the DECam/DES
SCAMP solution) is evaluated by WCSLIB inside astropy. All functions are vectorised.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning, Sip

__all__ = [
    "read_wcs",
    "wcs_to_header",
    "make_tan_sip_wcs",
    "pixel_to_sky",
    "sky_to_pixel",
    "local_cd_matrix",
    "pixel_scale_arcsec",
    "shift_wcs",
    "has_celestial_wcs",
]


def read_wcs(header: fits.Header, *, where: str = "header") -> WCS | None:
    """The celestial WCS of a FITS header, or None when it has none.

    WCSLIB's informational "fixes" (e.g. a DATE-OBS normalised) are silenced; a header whose WCS
    cards are present but unusable raises ``ValueError`` naming ``where``.
    """
    if not has_celestial_wcs(header):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2, relax=True)
    except Exception as err:  # astropy raises several types for malformed WCS cards
        why = " ".join(line.strip() for line in str(err).splitlines() if line.strip())  # WCSLIB's run over lines
        raise ValueError(f"{where}: cannot read the WCS: {why}") from err
    if not wcs.has_celestial:
        return None
    return wcs


def has_celestial_wcs(header: fits.Header) -> bool:
    """Whether ``header``'s ``CTYPE1`` / ``CTYPE2`` name a celestial pair of axes.

    True when ``CTYPE1`` starts with ``RA--``, ``GLON`` or ``ELON`` and ``CTYPE2`` with ``DEC-``,
    ``GLAT`` or ``ELAT`` (any projection). Only these two cards are looked at; the WCS itself is not
    parsed, so `read_wcs` can still fail on such a header.
    """
    ctype1 = str(header.get("CTYPE1", ""))
    ctype2 = str(header.get("CTYPE2", ""))
    return ctype1[:4] in ("RA--", "GLON", "ELON") and ctype2[:4] in ("DEC-", "GLAT", "ELAT")


def wcs_to_header(wcs: WCS) -> fits.Header:
    """Header cards of ``wcs``, keeping SIP (``A_*``/``B_*``) and TPV (``PVi_j``) terms.

    Values are written with 17 significant digits (WCSLIB's ``WCSHDO_P17``; astropy's default is
    14), so a header round trip reproduces pixel->sky bit for bit.
    """
    from astropy.wcs import WCSHDO_P17, WCSHDO_all
    from astropy.wcs.wcs import WCSHDO_SIP

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        header = wcs.to_header(relax=WCSHDO_all | WCSHDO_P17 | WCSHDO_SIP)
    for key in ("DATEREF", "MJDREF", "MJDREFI", "MJDREFF"):
        header.remove(key, ignore_missing=True, remove_all=True)
    return header


def make_tan_sip_wcs(crpix, crval, cd, *, sip_a=None, sip_b=None, sip_ap=None, sip_bp=None) -> WCS:
    """A TAN or TAN-SIP WCS.

    Parameters
    ----------
    crpix : (float, float)
        Reference pixel (x, y) in our 0-based pixel convention (FITS CRPIX minus 1).
    crval : (float, float)
        Reference (ra, dec) in degrees.
    cd : array_like, shape (2, 2)
        CD matrix in degrees per pixel.
    sip_a, sip_b : array_like, shape (order+1, order+1), optional
        Forward SIP polynomials (``A_p_q`` at ``[p, q]``); ``sip_ap``/``sip_bp`` the inverse ones.
    """
    wcs = WCS(naxis=2)
    wcs.wcs.crpix = [float(crpix[0]) + 1.0, float(crpix[1]) + 1.0]
    wcs.wcs.crval = [float(crval[0]), float(crval[1])]
    wcs.wcs.cd = np.asarray(cd, dtype=np.float64)
    if sip_a is not None or sip_b is not None:
        if sip_a is None or sip_b is None:
            raise ValueError("sip_a and sip_b must be given together")
        wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        wcs.sip = Sip(np.asarray(sip_a, float), np.asarray(sip_b, float),
                      None if sip_ap is None else np.asarray(sip_ap, float),
                      None if sip_bp is None else np.asarray(sip_bp, float),
                      wcs.wcs.crpix)
    else:
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.set()
    return wcs


def pixel_to_sky(wcs: WCS, x, y):
    """``(ra, dec)`` in degrees of pixel positions ``(x, y)`` (all distortions applied)."""
    ra, dec = wcs.all_pix2world(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), 0)
    return ra, dec


def sky_to_pixel(wcs: WCS, ra, dec, *, tolerance: float = 1e-8):
    """Pixel ``(x, y)`` of sky positions in degrees; distortions inverted iteratively to ``tolerance`` px."""
    x, y = wcs.all_world2pix(np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64), 0,
                             tolerance=tolerance, maxiter=50)
    return x, y


def _gnomonic(ra, dec, ra0, dec0):
    """Tangent-plane (xi, eta) in degrees of (ra, dec) about (ra0, dec0); xi to the east."""
    r, d, r0, d0 = (np.radians(v) for v in (ra, dec, ra0, dec0))
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
    xi = np.cos(d) * np.sin(r - r0) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(r - r0)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def local_cd_matrix(wcs: WCS, x, y, *, step: float = 0.5) -> np.ndarray:
    """The local linear WCS at pixel ``(x, y)``: d(xi, eta)/d(x, y) in degrees per pixel.

    ``xi`` points east and ``eta`` north on the plane tangent at the sky position of ``(x, y)``,
    as a FITS CD matrix. Computed with central differences of ``step`` pixels (exact for the
    linear part; the error from distortion curvature is O(step^2) of the second derivatives).
    Returns shape (2, 2) for a scalar position, (n, 2, 2) for arrays.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    scalar = x.ndim == 0 and y.ndim == 0
    x, y = np.broadcast_arrays(np.atleast_1d(x), np.atleast_1d(y))
    ra0, dec0 = pixel_to_sky(wcs, x, y)
    offsets = [(step, 0.0), (-step, 0.0), (0.0, step), (0.0, -step)]
    planes = []
    for dx, dy in offsets:
        ra, dec = pixel_to_sky(wcs, x + dx, y + dy)
        planes.append(_gnomonic(ra, dec, ra0, dec0))
    cd = np.empty(x.shape + (2, 2))
    for k in range(2):  # k = 0: xi, 1: eta
        cd[..., k, 0] = (planes[0][k] - planes[1][k]) / (2 * step)
        cd[..., k, 1] = (planes[2][k] - planes[3][k]) / (2 * step)
    return cd[0] if scalar else cd.reshape(x.shape + (2, 2))


def pixel_scale_arcsec(wcs: WCS, x, y):
    """Local pixel scale ``sqrt(|det CD|)`` in arcseconds at ``(x, y)``."""
    cd = local_cd_matrix(wcs, x, y)
    return 3600.0 * np.sqrt(np.abs(np.linalg.det(cd)))


def shift_wcs(wcs: WCS, dx: float, dy: float) -> WCS:
    """A copy of ``wcs`` for pixel coordinates shifted by ``(dx, dy)``: ``new(x + dx, y + dy) == old(x, y)``.

    Moves CRPIX (SIP polynomials are relative to CRPIX, so they move with it; TPV acts on
    intermediate coordinates, after CRPIX, so it is unaffected). Lookup-table distortions
    (``cpdis``/``det2im``) are indexed by pixel and cannot be shifted: `NotImplementedError`.
    """
    if getattr(wcs, "cpdis1", None) is not None or getattr(wcs, "det2im1", None) is not None:
        raise NotImplementedError("cannot shift a WCS with lookup-table distortions")
    new = wcs.deepcopy()
    new.wcs.crpix = [wcs.wcs.crpix[0] + dx, wcs.wcs.crpix[1] + dy]
    if new.sip is not None:
        new.sip = Sip(new.sip.a, new.sip.b, new.sip.ap, new.sip.bp, new.wcs.crpix)
    new.wcs.set()
    return new
