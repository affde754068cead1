"""Nearest-neighbour pairing of two point lists (C++ grid hash).

`match_nearest` pairs points on a plane (pixels); `gaussian_overlap_sum` sums, per point, the
Gaussian-overlap-weighted values of another list's neighbours (the light of neighbours under a PSF);
`match_nearest_sky` pairs sky positions within an
angle (the direct match of LSST's ``PhotoCalTask``, meas_astrom ``DirectMatchTask``) by projecting both
lists onto the plane tangent at the mean position of the second list (gnomonic, arcsec) and reporting the
true angular separations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _core

__all__ = ["NearestMatch", "angular_separation_arcsec", "gaussian_overlap_sum", "match_nearest", "match_nearest_sky"]


@dataclass(frozen=True)
class NearestMatch:
    """For each object of the first list, its closest object of the second.

    Attributes
    ----------
    index : (n1,) int64
        Index into the second list, -1 where nothing lies within the radius.
    distance : (n1,) float64
        Distance to it (the units of the inputs: px, or arcsec for `match_nearest_sky`); NaN where
        ``index == -1``.
    """

    index: np.ndarray
    distance: np.ndarray

    @property
    def matched(self) -> np.ndarray:
        """(n1,) bool: the object has a partner."""
        return self.index >= 0

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(first, second, distance)`` of the matched objects, in order of the first list."""
        first = np.flatnonzero(self.index >= 0)
        return first, self.index[first], self.distance[first]

    def __len__(self) -> int:
        return int(np.count_nonzero(self.index >= 0))


def _column(a, name: str) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def match_nearest(x1, y1, x2, y2, radius: float, *, unique: bool = False) -> NearestMatch:
    """Pair each point of list 1 with its closest point of list 2 within ``radius``.

    A grid hash of list 2 (cells of about ``radius``) makes this O((n1 + n2) * density). Distances are
    Euclidean in the units of the coordinates (pixels: centres at integers).

    Parameters
    ----------
    x1, y1 : (n1,) array_like
        First list (NaN positions never match).
    x2, y2 : (n2,) array_like
        Second list.
    radius : float
        Largest distance of a pair (inclusive), >= 0.
    unique : bool, keyword-only
        If True, an object of list 2 claimed by several objects of list 1 stays with the closest of them
        (ties: the lower index of list 1) and the others are left unmatched. Default False: every object
        of list 1 gets its closest partner, shared or not.

    Returns
    -------
    `NearestMatch`
        ``index`` (-1: none) and ``distance`` per object of list 1. Ties in distance go to the lower index
        of list 2.

    Raises
    ------
    ValueError
        Arrays of different lengths or not 1-D; a negative or non-finite ``radius``.
    """
    x1, y1, x2, y2 = (_column(a, n) for a, n in ((x1, "x1"), (y1, "y1"), (x2, "x2"), (y2, "y2")))
    if x1.shape != y1.shape:
        raise ValueError(f"x1 and y1 differ in length: {x1.size} and {y1.size}")
    if x2.shape != y2.shape:
        raise ValueError(f"x2 and y2 differ in length: {x2.size} and {y2.size}")
    radius = float(radius)
    if not (np.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be finite and >= 0, got {radius!r}")
    index, distance = _core.match_nearest(x1, y1, x2, y2, radius, bool(unique))
    return NearestMatch(index, distance)


def gaussian_overlap_sum(x1, y1, x2, y2, w2, *, sigma: float, radius: float,
                         min_distance: float = 0.0) -> np.ndarray:
    """Per point of list 1, ``sum_j w2[j] exp(-d_j^2 / (4 sigma^2))`` over the points j of list 2 at a
    distance ``min_distance < d_j <= radius`` (C++ grid hash).

    ``exp(-d^2 / (4 sigma^2))`` is the overlap of two circular Gaussians of width ``sigma`` at separation d
    relative to its value at d = 0: with ``w2`` the neighbours' fluxes and ``sigma`` the PSF's, the sum is the
    neighbours' light that falls under a star's PSF. Distances are Euclidean in the units of the coordinates
    (pixels: centres at integers).

    Parameters
    ----------
    x1, y1 : (n1,) array_like
        The points at which to sum (NaN positions give 0).
    x2, y2, w2 : (n2,) array_like
        The neighbours and their weights (NaN positions never count).
    sigma : float
        Gaussian width (> 0), the units of the coordinates.
    radius : float
        Largest distance summed over (> 0, inclusive); 6 ``sigma`` leaves out less than 1e-15 of a neighbour.
    min_distance : float, optional
        Neighbours at this distance or closer are left out (>= 0): pass a small positive value to leave
        out the point itself when list 2 contains list 1.

    Returns
    -------
    (n1,) float64

    Raises
    ------
    ValueError
        Arrays not 1-D or of different lengths per list; a non-positive or non-finite ``sigma`` or
        ``radius``, a negative or non-finite ``min_distance``.
    """
    x1, y1, x2, y2, w2 = (_column(a, n) for a, n in ((x1, "x1"), (y1, "y1"), (x2, "x2"), (y2, "y2"), (w2, "w2")))
    if x1.shape != y1.shape:
        raise ValueError(f"x1 and y1 differ in length: {x1.size} and {y1.size}")
    if not (x2.shape == y2.shape == w2.shape):
        raise ValueError(f"x2, y2 and w2 differ in length: {x2.size}, {y2.size} and {w2.size}")
    for name, value, low in (("sigma", sigma, None), ("radius", radius, None), ("min_distance", min_distance, 0.0)):
        value = float(value)
        if not np.isfinite(value) or (value <= 0 if low is None else value < low):
            raise ValueError(f"{name} must be finite and {'> 0' if low is None else '>= 0'}, got {value!r}")
    return _core.gaussian_overlap_sum(x1, y1, x2, y2, w2, float(sigma), float(radius), float(min_distance))


def _unit(ra, dec) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)


def angular_separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation in arcsec of positions in degrees (atan2 of the cross and dot products:
    accurate at all separations)."""
    u, v = _unit(ra1, dec1), _unit(ra2, dec2)
    cross = np.linalg.norm(np.cross(u, v), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(u * v, axis=-1))) * 3600.0


def _tangent_arcsec(ra, dec, ra0, dec0):
    u = _unit(ra, dec)
    r0, d0 = np.radians(ra0), np.radians(dec0)
    centre = np.array([np.cos(d0) * np.cos(r0), np.cos(d0) * np.sin(r0), np.sin(d0)])
    east = np.array([-np.sin(r0), np.cos(r0), 0.0])
    north = np.cross(centre, east)
    w = u @ centre
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.where(w > 0, (u @ east) / w, np.nan)
        eta = np.where(w > 0, (u @ north) / w, np.nan)
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def match_nearest_sky(ra1, dec1, ra2, dec2, radius_arcsec: float, *, unique: bool = False) -> NearestMatch:
    """Pair each sky position of list 1 with its closest of list 2 within ``radius_arcsec``.

    Both lists are projected onto the plane tangent at the mean unit vector of list 2 (gnomonic, arcsec;
    objects more than 90 deg away never match) and paired there with `match_nearest` at a radius padded
    by 1e-3 relative (the projection stretches distances by at most 1/cos^2 of the angle from the tangent
    point: < 1e-3 within 1.8 deg); pairs are then kept when their true great-circle separation is within
    ``radius_arcsec``, and ``distance`` is that separation (arcsec).

    Parameters
    ----------
    ra1, dec1, ra2, dec2 : array_like
        Degrees.
    radius_arcsec : float
        Largest separation (arcsec, inclusive).
    unique : bool, keyword-only
        As for `match_nearest`.
    """
    ra1, dec1, ra2, dec2 = (_column(a, n) for a, n in ((ra1, "ra1"), (dec1, "dec1"), (ra2, "ra2"), (dec2, "dec2")))
    if ra1.shape != dec1.shape or ra2.shape != dec2.shape:
        raise ValueError("ra and dec must have one length per list")
    radius_arcsec = float(radius_arcsec)
    if not (np.isfinite(radius_arcsec) and radius_arcsec >= 0):
        raise ValueError(f"radius_arcsec must be finite and >= 0, got {radius_arcsec!r}")
    ok2 = np.isfinite(ra2) & np.isfinite(dec2)
    if not ok2.any() or ra1.size == 0:
        return NearestMatch(np.full(ra1.size, -1, np.int64), np.full(ra1.size, np.nan))
    m = _unit(ra2[ok2], dec2[ok2]).sum(axis=0)
    ra0 = float(np.degrees(np.arctan2(m[1], m[0])))
    dec0 = float(np.degrees(np.arctan2(m[2], np.hypot(m[0], m[1]))))
    x1, y1 = _tangent_arcsec(ra1, dec1, ra0, dec0)
    x2, y2 = _tangent_arcsec(ra2, dec2, ra0, dec0)
    plane = match_nearest(x1, y1, x2, y2, radius_arcsec * (1.0 + 1e-3), unique=unique)
    index = plane.index.copy()
    distance = np.full(ra1.size, np.nan)
    first = np.flatnonzero(index >= 0)
    sep = angular_separation_arcsec(ra1[first], dec1[first], ra2[index[first]], dec2[index[first]])
    keep = sep <= radius_arcsec
    index[first[~keep]] = -1
    distance[first[keep]] = sep[keep]
    return NearestMatch(index, distance)
