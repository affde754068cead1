"""A simple sky map: square tracts on one tangent plane, for the per-tract steps (``associate``).

LSST tiles the sky with tracts (a ring sky map of ~1.7 deg tracts, 1 arcmin overlap); the isolated-star
association (pipe_tasks ``IsolatedStarAssociationTask``) works per tract: it selects sources inside a
tract's *outer* region (inner + overlap border), associates them, and keeps the stars inside its
*inner* region, so that each star belongs to exactly one tract. `SimpleSkyMap` is the smallest sky map
with those properties, enough for a field of a few degrees:

* one gnomonic (TAN) projection about the map centre ``(ra0, dec0)``; plane coordinates ``(xi, eta)``
  in degrees, xi towards East (increasing RA), eta towards North;
* tract ``(i, j)``, ``-n <= i, j <= n`` with ``n = (n_tracts_per_side - 1) / 2``, has its centre at
  ``(xi, eta) = (i, j) * tract_size_deg`` and its inner region is the half-open square
  ``[(i - 1/2) s, (i + 1/2) s) x [(j - 1/2) s, (j + 1/2) s)`` (s = ``tract_size_deg``): the inner
  regions tile the plane without gaps or overlaps, so a position has at most one inner tract;
* the outer region grows the inner square by ``tract_overlap_deg`` on every side;
* tract id = ``(j + n) * n_tracts_per_side + (i + n)``: integers 0 .. ``n_tracts - 1``, row by row from
  the South-West corner;
* positions at or beyond 90 deg from the centre (no gnomonic image) and outside the grid belong to no
  tract.

A repository declares its sky map in ``skymap.json`` at its root, e.g.::

    {"type": "simple", "ra0": 150.0, "dec0": -30.0, "tract_size_deg": 1.0,
     "tract_overlap_deg": 0.016666666666666666, "n_tracts_per_side": 11}

When the file is absent, `default_skymap` builds one centred on the repository's reference catalog
(the normalised mean of its unit vectors; or of the given positions when there is no refcat), with
1-degree tracts, LSST's 1-arcmin overlap and 11 x 11 tracts (so ``n_tracts`` = 121, the tract at the
centre is 60), and the ``associate`` step writes it, so later runs use the same tracts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SKYMAP_FILE", "SimpleSkyMap", "default_skymap", "load_skymap", "write_skymap"]

SKYMAP_FILE = "skymap.json"


class SimpleSkyMap(BaseModel):
    """Square tracts on a tangent plane about ``(ra0, dec0)`` (see the module docstring).

    All angles in degrees. Pickles, copies and round-trips through JSON (`model_dump_json`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field("simple", pattern="^simple$", description="Sky map kind (only 'simple').")
    ra0: float = Field(ge=0.0, lt=360.0, description="RA of the tangent point (the centre tract's centre), deg.")
    dec0: float = Field(ge=-90.0, le=90.0, description="Dec of the tangent point, deg.")
    tract_size_deg: float = Field(1.0, gt=0.0, le=10.0, description="Side of a tract's inner square, deg "
                                                                     "(on the tangent plane).")
    tract_overlap_deg: float = Field(1.0 / 60.0, ge=0.0, le=5.0, description="Border added to every side of the "
                                                                      "inner square to make the outer region, deg. "
                                                                      "At most 5 deg.")
    n_tracts_per_side: int = Field(11, ge=1, le=999, description="Tracts per side of the grid (odd).")

    def model_post_init(self, __context) -> None:
        if self.n_tracts_per_side % 2 != 1:
            raise ValueError(f"n_tracts_per_side must be odd, got {self.n_tracts_per_side}")
        if (self.n_tracts_per_side / 2.0) * self.tract_size_deg >= 60.0:
            raise ValueError("the grid must stay within 60 deg of the centre: reduce n_tracts_per_side or "
                             "tract_size_deg")

    # --- geometry -----------------------------------------------------------------------------------
    @property
    def n_tracts(self) -> int:
        """Number of tracts (``n_tracts_per_side ** 2``)."""
        return self.n_tracts_per_side ** 2

    @property
    def _half(self) -> int:
        return (self.n_tracts_per_side - 1) // 2

    def project(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """Gnomonic plane coordinates ``(xi, eta)`` in degrees of ``ra``, ``dec`` (deg); NaN at or beyond
        90 deg from the centre."""
        a = np.radians(np.asarray(ra, dtype=np.float64))
        d = np.radians(np.asarray(dec, dtype=np.float64))
        a0, d0 = np.radians(self.ra0), np.radians(self.dec0)
        cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = cosc > 0
            xi = np.where(ok, np.cos(d) * np.sin(a - a0) / cosc, np.nan)
            eta = np.where(ok, (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc, np.nan)
        return np.degrees(xi), np.degrees(eta)

    def deproject(self, xi, eta) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of `project`: ``(ra, dec)`` in degrees, RA in [0, 360)."""
        x = np.radians(np.asarray(xi, dtype=np.float64))
        y = np.radians(np.asarray(eta, dtype=np.float64))
        a0, d0 = np.radians(self.ra0), np.radians(self.dec0)
        rho = np.hypot(x, y)
        c = np.arctan(rho)
        with np.errstate(invalid="ignore", divide="ignore"):
            dec = np.arcsin(np.cos(c) * np.sin(d0) + np.where(rho > 0, y * np.sin(c) * np.cos(d0) / rho, 0.0))
        ra = a0 + np.arctan2(x * np.sin(c), rho * np.cos(d0) * np.cos(c) - y * np.sin(d0) * np.sin(c))
        return np.mod(np.degrees(ra), 360.0), np.degrees(dec)

    def tract_indices(self, tract: int) -> tuple[int, int]:
        """Grid indices ``(i, j)`` of a tract id (centre at ``(i, j) * tract_size_deg``)."""
        tract = int(tract)
        if not 0 <= tract < self.n_tracts:
            raise ValueError(f"tract {tract} is not in this sky map (0 .. {self.n_tracts - 1})")
        return tract % self.n_tracts_per_side - self._half, tract // self.n_tracts_per_side - self._half

    def tract_of(self, ra, dec) -> np.ndarray:
        """The tract whose inner region holds each position (int64 array, -1 for none)."""
        xi, eta = self.project(ra, dec)
        s, n = self.tract_size_deg, self._half
        with np.errstate(invalid="ignore"):
            i = np.floor(xi / s + 0.5)
            j = np.floor(eta / s + 0.5)
            ok = np.isfinite(i) & np.isfinite(j) & (np.abs(i) <= n) & (np.abs(j) <= n)
        out = np.full(np.shape(xi), -1, dtype=np.int64)
        out[ok] = ((j[ok] + n) * self.n_tracts_per_side + (i[ok] + n)).astype(np.int64)
        return out

    def contains(self, tract: int, ra, dec, *, inner: bool = True) -> np.ndarray:
        """Whether each position lies in the tract's inner (default) or outer region (bool array)."""
        i, j = self.tract_indices(tract)
        xi, eta = self.project(ra, dec)
        s = self.tract_size_deg
        if inner:
            with np.errstate(invalid="ignore"):
                return (np.floor(xi / s + 0.5) == i) & (np.floor(eta / s + 0.5) == j)
        h = 0.5 * s + self.tract_overlap_deg
        with np.errstate(invalid="ignore"):
            return (np.abs(xi - i * s) <= h) & (np.abs(eta - j * s) <= h)

    def find_tracts(self, ra, dec) -> list[int]:
        """Sorted ids of the tracts whose *outer* region holds at least one of the positions."""
        xi, eta = self.project(np.atleast_1d(ra), np.atleast_1d(dec))
        ok = np.isfinite(xi) & np.isfinite(eta)
        xi, eta = xi[ok], eta[ok]
        s, n, o = self.tract_size_deg, self._half, self.tract_overlap_deg
        found: set[int] = set()
        # A position lies in the outer region of its inner tract and of the neighbours within `o`.
        for dx in (-o, 0.0, o):
            for dy in (-o, 0.0, o):
                i = np.floor((xi + dx) / s + 0.5)
                j = np.floor((eta + dy) / s + 0.5)
                good = (np.abs(i) <= n) & (np.abs(j) <= n)
                found.update(((j[good] + n) * self.n_tracts_per_side + (i[good] + n)).astype(np.int64).tolist())
        return sorted(found)

    def tract_polygon(self, tract: int, *, inner: bool = True) -> np.ndarray:
        """The tract's corners, shape (4, 2) of (ra, dec) deg, counter-clockwise from South-West, of its
        inner (default) or outer square. The edges are straight on the tangent plane (great circles)."""
        i, j = self.tract_indices(tract)
        h = 0.5 * self.tract_size_deg + (0.0 if inner else self.tract_overlap_deg)
        cx, cy = i * self.tract_size_deg, j * self.tract_size_deg
        xi = np.array([cx - h, cx + h, cx + h, cx - h])
        eta = np.array([cy - h, cy - h, cy + h, cy + h])
        ra, dec = self.deproject(xi, eta)
        return np.column_stack([ra, dec])

    def tract_center(self, tract: int) -> tuple[float, float]:
        """``(ra, dec)`` of the tract's centre, deg."""
        i, j = self.tract_indices(tract)
        ra, dec = self.deproject(i * self.tract_size_deg, j * self.tract_size_deg)
        return float(ra), float(dec)

    def __repr__(self) -> str:
        return (f"SimpleSkyMap(ra0={self.ra0}, dec0={self.dec0}, tract_size_deg={self.tract_size_deg}, "
                f"tract_overlap_deg={self.tract_overlap_deg:.6g}, n_tracts_per_side={self.n_tracts_per_side})")


def default_skymap(ra, dec) -> SimpleSkyMap:
    """The default sky map (see the module docstring) centred on the normalised mean unit vector of the
    positions ``ra``, ``dec`` (deg), rounded to 1e-6 deg."""
    a = np.radians(np.asarray(ra, dtype=np.float64))
    d = np.radians(np.asarray(dec, dtype=np.float64))
    ok = np.isfinite(a) & np.isfinite(d)
    if not ok.any():
        raise ValueError("default_skymap: no finite position to centre the sky map on")
    v = np.array([np.sum(np.cos(d[ok]) * np.cos(a[ok])), np.sum(np.cos(d[ok]) * np.sin(a[ok])),
                  np.sum(np.sin(d[ok]))])
    v /= np.linalg.norm(v)
    ra0 = round(float(np.mod(np.degrees(np.arctan2(v[1], v[0])), 360.0)), 6) % 360.0
    dec0 = round(float(np.degrees(np.arcsin(np.clip(v[2], -1.0, 1.0)))), 6)
    return SimpleSkyMap(ra0=ra0, dec0=dec0)


def load_skymap(path) -> SimpleSkyMap:
    """Read a ``skymap.json``; errors (`visitcal.io.JsonReadError`, a ``ValueError``) are one line naming the
    file and the field."""
    from .jsonfile import json_fields, read_json

    path = Path(path)
    doc = read_json(path)
    with json_fields(path):
        return SimpleSkyMap.model_validate(doc)


def write_skymap(skymap: SimpleSkyMap, path) -> None:
    """Write ``skymap`` as JSON (atomically)."""
    from .atomic import atomic_write

    with atomic_write(Path(path), "w") as f:
        f.write(json.dumps(skymap.model_dump(), indent=1, sort_keys=True) + "\n")
