"""afw's persisted WCSs: the AST ``SkyWcs`` and the old-style ``TanWcs`` (readers for `AfwArchive` objects).

``SkyWcs``
    The archive table ``SkyWcs`` holds one byte column ``wcs``: the text ``"<version> SkyWcs <flag> "``
    followed by AST's own text serialisation of a FrameSet (``Begin FrameSet ... End FrameSet``). Its base
    frame (domain ``PIXELS``) is afw's parent-frame pixel coordinates, **0-based with pixel centres at
    integers** (like visitcal's), not AST's 1-based ``GRID``: in ``exposure-version-2.fits`` the
    ``PIXELS -> IWC`` mapping starts with a shift by -4 and pixel (4, 4) maps onto CRVAL (30°, 40°)
    exactly, as the file's description says (CRPIX (4, 4) in afw's 0-based pixels). Its current frame is an
    ICRS ``SkyFrame`` (radians inside AST, degrees here). It is read with starlink-pyast
    (``pip install starlink-pyast``), an optional dependency imported only when a SkyWcs is read, and
    wrapped in `AstSkyWcs`, which evaluates it exactly through AST and fits a TAN-SIP approximation
    (`AstSkyWcs.to_tan_sip`) for code that needs an astropy WCS.
``TanWcs``
    afw's older persisted TAN(-SIP) WCS: a table with ``crval`` (deg), ``crpix`` (parent frame, 0-based:
    the file's FITS header CRPIX is this plus 1 minus xy0), ``cd`` (deg/px, column-major: ``CD1_1, CD2_1, CD1_2, CD2_2``),
    ``ctype1/2``..., and, when it has a distortion, a second table with the SIP matrices ``A``, ``B``,
    ``Ap``, ``Bp`` flattened column-major (coefficient ``A_p_q`` at index ``p + q * n``). Mapped to an
    astropy TAN(-SIP) WCS in the parent frame (`visitcal.core.wcs.make_tan_sip_wcs`), what
    ``Exposure.wcs`` holds.

The facts of the format come from the files themselves; no LSST code is used.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from astropy.wcs import WCS

from .. import _core
from ..core.geom import Box2I
from ..core.wcs import make_tan_sip_wcs
from . import FitsReadError
from .afw_archive import AfwArchive, afw_string

__all__ = ["AstSkyWcs", "import_ast", "read_sky_wcs", "read_tan_wcs"]

_log = logging.getLogger(__name__)


def import_ast():
    """The ``starlink.Ast`` module; an ImportError saying what to install when starlink-pyast is absent."""
    try:
        import starlink.Ast as Ast
    except ImportError as err:
        raise ImportError("reading an afw SkyWcs needs starlink-pyast (AST's Python binding), an optional "
                          "dependency of visitcal: pip install starlink-pyast") from err
    return Ast


def _frameset_from_text(text: str, where: str):
    """The AST FrameSet of a SkyWcs column text (``"<version> SkyWcs <flag> Begin FrameSet ..."``)."""
    Ast = import_ast()
    start = text.find("Begin ")
    if start < 0:
        raise FitsReadError(f"{where}: no AST object in the SkyWcs text (no 'Begin'); it starts {text[:40]!r}")
    head = text[:start].split()
    if len(head) >= 2 and head[1] != "SkyWcs":
        raise FitsReadError(f"{where}: SkyWcs text starts with {text[:start]!r}, not '<version> SkyWcs ...'")
    lines = iter(text[start:].splitlines())

    class _Source:  # pyast's Channel calls astsource() for each line until it returns None
        def astsource(self):
            return next(lines, None)

    try:
        obj = Ast.Channel(_Source()).read()
    except Ast.AstError as err:
        raise FitsReadError(f"{where}: AST cannot read the SkyWcs text: {err}") from None
    if obj is None or obj.Class != "FrameSet":
        raise FitsReadError(f"{where}: the SkyWcs text holds {None if obj is None else obj.Class}, not a FrameSet")
    base, sky = obj.getframe(Ast.BASE), obj.getframe(Ast.CURRENT)
    if base.Naxes != 2 or not sky.isaskyframe():
        raise FitsReadError(f"{where}: the SkyWcs FrameSet maps {base.Naxes}-d {base.Domain!r} to a "
                            f"{sky.Class}, not 2-d pixels to a SkyFrame")
    if base.Domain != "PIXELS":
        _log.warning("%s: the SkyWcs base frame is %r, not afw's 'PIXELS'; taken as 0-based pixels", where,
                     base.Domain)
    return obj


def _unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _tangent_offsets(ra_deg, dec_deg, ra0_deg, dec0_deg):
    """Gnomonic (xi, eta) in radians of (ra, dec) about (ra0, dec0), elementwise; xi to the east."""
    p = _unit_vectors(ra_deg, dec_deg)
    r0, d0 = np.radians(ra0_deg), np.radians(dec0_deg)
    east = np.stack([-np.sin(r0), np.cos(r0), np.zeros_like(r0)], axis=-1)
    north = np.stack([-np.sin(d0) * np.cos(r0), -np.sin(d0) * np.sin(r0), np.cos(d0)], axis=-1)
    centre = _unit_vectors(ra0_deg, dec0_deg)
    w = np.sum(p * centre, axis=-1)
    return np.sum(p * east, axis=-1) / w, np.sum(p * north, axis=-1) / w


def _separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    a, b = _unit_vectors(ra1, dec1), _unit_vectors(ra2, dec2)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(a * b, axis=-1))) * 3600.0


def _box_tuple(bbox) -> tuple[float, float, float, float]:
    """``(xmin, xmax, ymin, ymax)`` in pixels: a `Box2I` spans its pixels' edges (``min - 0.5 .. max + 0.5``)."""
    if isinstance(bbox, Box2I):
        return (bbox.min_x - 0.5, bbox.max_x + 0.5, bbox.min_y - 0.5, bbox.max_y + 0.5)
    b = tuple(float(v) for v in bbox)
    if len(b) != 4 or not (b[1] > b[0] and b[3] > b[2]):
        raise ValueError(f"bbox must be a Box2I or (xmin, xmax, ymin, ymax) with positive extent, got {bbox!r}")
    return b


class AstSkyWcs:
    """An afw ``SkyWcs``: an AST FrameSet from 0-based parent-frame pixels to ICRS, evaluated through AST.

    Parameters
    ----------
    frameset : ``starlink.Ast.FrameSet``
        Base frame: pixels (afw's ``PIXELS``: 0-based, pixel centres at integers, parent frame); current
        frame: a SkyFrame.
    text : str, optional
        The AST text it was read from (kept for pickling and `to_string`); default: written by AST.

    Notes
    -----
    `pixel_to_sky` is AST's forward mapping. `sky_to_pixel` starts from AST's inverse mapping (which for
    distortion polynomials, jointcal's ``PolyMap``, is itself a fitted approximation, off by ~1e-6 px) and
    refines it by Newton steps on the forward mapping to 1e-10 px, so that the two are inverse to each other.
    Requires starlink-pyast (``pip install starlink-pyast``).
    """

    def __init__(self, frameset, *, text: str | None = None):
        Ast = import_ast()
        self._frameset = frameset
        sky = frameset.getframe(Ast.CURRENT)
        self._lon, self._lat = int(sky.LonAxis) - 1, int(sky.LatAxis) - 1
        self._system = str(sky.System)
        self._text = text

    @classmethod
    def from_string(cls, text: str, *, where: str = "SkyWcs") -> AstSkyWcs:
        """Read afw's SkyWcs text (``"1 SkyWcs 0 Begin FrameSet ..."``) or bare AST text (``"Begin FrameSet
        ..."``). ``where`` names the source in error messages (`FitsReadError`)."""
        return cls(_frameset_from_text(text, where), text=text)

    def to_string(self) -> str:
        """The AST text of the FrameSet (afw's column text when read from a file)."""
        if self._text is not None:
            return self._text
        Ast = import_ast()
        out = []

        class _Sink:
            def astsink(self, line):
                out.append(line)

        Ast.Channel(None, _Sink()).write(self._frameset)
        return "\n".join(out) + "\n"

    def __reduce__(self):
        return (AstSkyWcs.from_string, (self.to_string(),))

    @property
    def frameset(self):
        """The AST FrameSet (a copy: AST objects are mutable)."""
        return self._frameset.copy()

    @property
    def system(self) -> str:
        """The sky frame's system (``"ICRS"`` for afw)."""
        return self._system

    def pixel_to_sky(self, x, y):
        """``(ra, dec)`` in degrees (ra in [0, 360)) of 0-based pixel positions ``(x, y)`` (scalars or arrays)."""
        x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
        out = np.asarray(self._frameset.tran(np.stack([x.ravel(), y.ravel()]), True), np.float64)
        ra = np.degrees(out[self._lon]) % 360.0
        dec = np.degrees(out[self._lat])
        ra = ra.reshape(x.shape)
        dec = dec.reshape(x.shape)
        return (float(ra), float(dec)) if x.ndim == 0 else (ra, dec)

    def sky_to_pixel(self, ra, dec, *, tolerance: float = 1e-10, max_iter: int = 10):
        """0-based pixel ``(x, y)`` of sky positions ``(ra, dec)`` in degrees: AST's inverse refined by Newton
        steps on the forward mapping until the step is below ``tolerance`` px."""
        ra, dec = np.broadcast_arrays(np.asarray(ra, np.float64), np.asarray(dec, np.float64))
        shape = ra.shape
        ra, dec = ra.ravel(), dec.ravel()
        sky = np.empty((2, ra.size))
        sky[self._lon], sky[self._lat] = np.radians(ra), np.radians(dec)
        pix = np.asarray(self._frameset.tran(sky, False), np.float64)
        x, y = pix[0].copy(), pix[1].copy()
        h = 0.5  # px: the Jacobian's finite difference (the mapping is smooth on this scale)
        for _ in range(max_iter):
            ok = np.isfinite(x) & np.isfinite(y)
            if not ok.any():
                break
            r0, d0 = self.pixel_to_sky(np.stack([x, x + h, x]), np.stack([y, y, y + h]))
            xi, eta = _tangent_offsets(r0, d0, ra, dec)  # offsets from the target, rad
            j11, j21 = (xi[1] - xi[0]) / h, (eta[1] - eta[0]) / h
            j12, j22 = (xi[2] - xi[0]) / h, (eta[2] - eta[0]) / h
            det = j11 * j22 - j12 * j21
            dx = -(j22 * xi[0] - j12 * eta[0]) / det
            dy = -(-j21 * xi[0] + j11 * eta[0]) / det
            x, y = x + dx, y + dy
            step = np.hypot(dx, dy)
            if not np.any(step[ok] > tolerance):
                break
        x, y = x.reshape(shape), y.reshape(shape)
        return (float(x), float(y)) if len(shape) == 0 else (x, y)

    def pixel_scale_arcsec(self, x, y, *, step: float = 0.5) -> float:
        """The local pixel scale at ``(x, y)``: ``sqrt(|det J|)`` of the pixel-to-tangent-plane Jacobian,
        arcsec/px."""
        j = self._jacobian(x, y, step)
        return math.degrees(math.sqrt(abs(np.linalg.det(j)))) * 3600.0

    def orientation_deg(self, x, y, *, step: float = 0.5) -> float:
        """The position angle of the pixel +y direction at ``(x, y)``, measured from north through east,
        degrees in (-180, 180] (afw's ``makeCdMatrix`` orientation: at 0 +y points north and, unflipped,
        +x points west)."""
        j = self._jacobian(x, y, step)
        return math.degrees(math.atan2(j[0, 1], j[1, 1]))

    def _jacobian(self, x, y, step) -> np.ndarray:
        """``[[dxi/dx, dxi/dy], [deta/dx, deta/dy]]`` (rad/px) at ``(x, y)``, centred differences."""
        x, y = float(x), float(y)
        ra0, dec0 = self.pixel_to_sky(x, y)
        px = np.array([x + step, x - step, x, x])
        py = np.array([y, y, y + step, y - step])
        ra, dec = self.pixel_to_sky(px, py)
        xi, eta = _tangent_offsets(ra, dec, ra0, dec0)
        return np.array([[xi[0] - xi[1], xi[2] - xi[3]], [eta[0] - eta[1], eta[2] - eta[3]]]) / (2 * step)

    def to_tan_sip(self, bbox, *, order: int = 4, n_grid: int = 50) -> tuple[WCS, float]:
        """A TAN-SIP approximation over ``bbox`` and its largest on-sky error there.

        The SIP model is fitted by the C++ fitter of `visitcal.calib.fit_tan_sip_wcs.FitTanSipWcsTask` (no
        rejection; a failed fit is a ValueError) to the AST positions of an ``n_grid`` x ``n_grid`` grid of pixels spanning ``bbox``; the error is then measured
        on the ``(n_grid - 1)`` x ``(n_grid - 1)`` grid of points halfway between those (and the fit points).

        Parameters
        ----------
        bbox : `visitcal.core.geom.Box2I` or (xmin, xmax, ymin, ymax)
            The region, 0-based parent-frame pixels (a Box2I spans its pixels' edges).
        order : int
            The forward SIP order (2 to 9); the reverse polynomials get ``order + 1``.
        n_grid : int
            Grid points per axis (>= order + 2).

        Returns
        -------
        wcs : `astropy.wcs.WCS`
            ``RA---TAN-SIP`` with A/B and AP/BP, parent frame (``origin=0`` in astropy calls gives our pixels).
        max_error_arcsec : float
            The largest distance between the approximation's and AST's sky positions over the test points, arcsec.
        """
        x0, x1, y0, y1 = _box_tuple(bbox)
        order, n_grid = int(order), int(n_grid)
        if not 2 <= order <= 9:
            raise ValueError(f"order must be 2 to 9, got {order}")
        if n_grid < order + 2:
            raise ValueError(f"n_grid = {n_grid} is too small for a SIP order {order} (need >= {order + 2})")
        gx, gy = np.meshgrid(np.linspace(x0, x1, n_grid), np.linspace(y0, y1, n_grid))
        ra, dec = self.pixel_to_sky(gx.ravel(), gy.ravel())
        # the C++ fitter of visitcal.calib.fit_tan_sip_wcs.FitTanSipWcsTask (called directly: io sits below
        # calib), its defaults but no rejection: the grid points are exact
        ctl = _core.FitTanSipControl()
        ctl.order, ctl.num_iter, ctl.num_rej_iter = order, 3, 0
        ctl.rej_sigma, ctl.max_scatter_arcsec, ctl.inverse_order = 3.0, 3600.0, -1
        out = _core.fit_tan_sip_wcs(np.ascontiguousarray(gx.ravel()), np.ascontiguousarray(gy.ravel()),
                                    np.ascontiguousarray(ra), np.ascontiguousarray(dec), None, (x0, x1, y0, y1), ctl)
        if out["status"] != 0:
            raise ValueError(f"the TAN-SIP fit over {bbox!r} failed (status {out['status']})")
        core = out["wcs"]
        approx = make_tan_sip_wcs(core.crpix, core.crval, np.reshape(core.cd, (2, 2)), sip_a=core.a, sip_b=core.b,
                                  sip_ap=core.ap, sip_bp=core.bp)
        hx = 0.5 * (gx[1:, 1:] + gx[:-1, :-1])
        hy = 0.5 * (gy[1:, 1:] + gy[:-1, :-1])
        tx = np.concatenate([gx.ravel(), hx.ravel()])
        ty = np.concatenate([gy.ravel(), hy.ravel()])
        ra_t, dec_t = self.pixel_to_sky(tx, ty)
        ra_f, dec_f = approx.all_pix2world(tx, ty, 0)
        return approx, float(np.max(_separation_arcsec(ra_t, dec_t, ra_f, dec_f)))

    def __repr__(self) -> str:
        return f"AstSkyWcs({self._system}, {self._frameset.Nframe} frames)"


def _one_row(archive: AfwArchive, object_id: int, name: str, parts: int):
    where = f"{archive.path}: archive object {object_id} ({name})"
    found = archive.class_of(object_id)
    if found != name:
        raise FitsReadError(f"{where}: the object is a {found}, not a {name}", path=archive.path,
                            hdu="ARCHIVE_INDEX")
    cats = archive.catalogs(object_id)
    if len(cats) < parts or any(len(c) != 1 for c in cats[:parts]):
        raise FitsReadError(f"{where}: expected {parts} one-row catalog(s), got rows "
                            f"{[len(c) for c in cats]}", path=archive.path, hdu="ARCHIVE_DATA")
    return cats, where


def read_sky_wcs(archive: AfwArchive, object_id: int, **_options) -> AstSkyWcs:
    """Read an afw ``SkyWcs`` (its AST FrameSet) from the archive.

    Parameters
    ----------
    archive : `visitcal.io.afw_archive.AfwArchive`
    object_id : int
        The object's archive id (a file's ``ARCHIVE_ID_SKYWCS``).

    Returns
    -------
    wcs : `AstSkyWcs`
        Pixels are 0-based parent-frame pixels (afw's); sky positions ICRS degrees.

    Raises
    ------
    ImportError
        starlink-pyast is not installed.
    FitsReadError
        No such object, not a SkyWcs, no ``wcs`` column, or text AST cannot read.
    """
    cats, where = _one_row(archive, object_id, "SkyWcs", 1)
    table = cats[0]
    if "wcs" not in table.colnames:
        raise FitsReadError(f"{where}: no 'wcs' column (columns {table.colnames})", path=archive.path,
                            hdu="ARCHIVE_DATA")
    text = afw_string(table["wcs"][0])
    try:
        frameset = _frameset_from_text(text, where)
    except FitsReadError as err:
        raise FitsReadError(str(err), path=archive.path, hdu="ARCHIVE_DATA") from None
    return AstSkyWcs(frameset, text=text)


def _sip_matrix(flat, where: str, name: str) -> np.ndarray:
    flat = np.asarray(flat, np.float64).ravel()
    n = math.isqrt(flat.size)
    if n * n != flat.size:
        raise FitsReadError(f"{where}: SIP column {name} has {flat.size} values, not a square matrix")
    return flat.reshape(n, n).T  # afw writes column-major: A_p_q at p + q * n; astropy wants [p, q]


def read_tan_wcs(archive: AfwArchive, object_id: int, **_options) -> WCS:
    """Read afw's old-style ``TanWcs`` (TAN, or TAN-SIP with its A, B, AP, BP) as an astropy WCS.

    Parameters
    ----------
    archive : `visitcal.io.afw_archive.AfwArchive`
    object_id : int
        The object's archive id (older files point at it with the primary's ``WCS_ID`` card).

    Returns
    -------
    wcs : `astropy.wcs.WCS`
        In the parent frame, like ``Exposure.wcs``: astropy's ``origin=0`` pixels are afw's 0-based
        parent-frame pixels (FITS ``CRPIX`` = the table's ``crpix`` + 1).

    Raises
    ------
    FitsReadError
        No such object, not a TanWcs, a missing column, a projection other than TAN.
    """
    cats, where = _one_row(archive, object_id, "TanWcs", 1)
    row = cats[0][0]
    try:
        crval = np.asarray(row["crval"], np.float64)
        crpix = np.asarray(row["crpix"], np.float64)
        cd = np.asarray(row["cd"], np.float64).reshape(2, 2).T  # column-major, like the SIP matrices
        ctypes = (str(row["ctype1"]).strip(), str(row["ctype2"]).strip())
    except KeyError as err:
        raise FitsReadError(f"{where}: no column {err}", path=archive.path, hdu="ARCHIVE_DATA") from None
    if not (ctypes[0].startswith("RA---TAN") and ctypes[1].startswith("DEC--TAN")):
        raise FitsReadError(f"{where}: projection {ctypes} is not TAN (RA---TAN, DEC--TAN)", path=archive.path,
                            hdu="ARCHIVE_DATA")
    sip = {}
    if len(cats) > 1 and len(cats[1]) == 1:
        srow = cats[1][0]
        try:
            sip = {f"sip_{k.lower()}": _sip_matrix(srow[k], where, k) for k in ("A", "B", "Ap", "Bp")}
        except KeyError as err:
            raise FitsReadError(f"{where}: SIP table lacks column {err}", path=archive.path,
                                hdu="ARCHIVE_DATA") from None
    wcs = make_tan_sip_wcs(crpix, crval, cd, **sip)
    if "radesys" in cats[0].colnames and str(row["radesys"]).strip():  # afw's old TanWcs: FK5, equinox 2000
        wcs.wcs.radesys = str(row["radesys"]).strip()
        if "equinox" in cats[0].colnames and np.isfinite(row["equinox"]):
            wcs.wcs.equinox = float(row["equinox"])
        wcs.wcs.set()
    return wcs
