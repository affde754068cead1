"""Reference catalogs: the objects of a reference catalog that fall on a detector (LSST's
``ReferenceObjectLoader.loadPixelBox`` in meas_algorithms).

A reference catalog is a table with ``id``, ``ra``, ``dec`` (ICRS degrees) and, per band, ``<band>_flux``
and ``<band>_fluxErr`` in nJy: the format `visitcal.sim` writes (``refcat.parquet``) and the one Gaia- or
survey-derived catalogs are easily put into. ``coord_ra``/``coord_dec`` are accepted for ``ra``/``dec``.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..core.geom import Box2I
from ..core.wcs import pixel_to_sky

__all__ = ["ReferenceCatalogError", "ReferenceObjectLoader"]


class ReferenceCatalogError(ValueError):
    """The reference catalog cannot serve the request (a missing column, such as a band's flux)."""


class ReferenceObjectLoader:
    """Serve the reference objects on a detector.

    Parameters
    ----------
    catalog : `astropy.table.Table`
        ``id``, ``ra``/``dec`` (or ``coord_ra``/``coord_dec``) in degrees, ``<band>_flux`` and
        ``<band>_fluxErr`` (nJy) for each band it holds.
    name : str
        Where it came from, for error messages (a file name).
    """

    def __init__(self, catalog: Table, *, name: str = "reference catalog"):
        self.name = name
        cols = set(catalog.colnames)
        ra = "ra" if "ra" in cols else "coord_ra"
        dec = "dec" if "dec" in cols else "coord_dec"
        for col in ("id", ra, dec):
            if col not in cols:
                raise ReferenceCatalogError(f"{name}: no column {col!r} (has {sorted(cols)})")
        self.catalog = catalog
        self._ra = np.asarray(catalog[ra], np.float64)
        self._dec = np.asarray(catalog[dec], np.float64)
        # Unit vectors, for a cheap cone cut before projecting through the WCS.
        r, d = np.radians(self._ra), np.radians(self._dec)
        self._xyz = np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=1)

    @property
    def bands(self) -> list[str]:
        """Bands with a ``<band>_flux`` column."""
        return sorted(c[:-5] for c in self.catalog.colnames if c.endswith("_flux") and f"{c}Err" in self.catalog.colnames)

    def load_pixel_box(self, bbox: Box2I, wcs, band: str, *, pixel_margin: int = 250) -> Table:
        """The reference objects inside ``bbox`` grown by ``pixel_margin`` pixels, through ``wcs``.

        Parameters
        ----------
        bbox : `Box2I`
            The detector (parent pixels, centres at integers).
        wcs : astropy.wcs.WCS
            The (preliminary) WCS that places the references on the detector.
        band : str
            The band whose fluxes are wanted.
        pixel_margin : int
            Margin in pixels (LSST: 250).

        Returns
        -------
        `astropy.table.Table`
            The catalog's format, restricted to the box: ``id``, ``ra``, ``dec`` (degrees), ``<band>_flux``,
            ``<band>_fluxErr`` (nJy), plus ``centroid_x``, ``centroid_y`` (pixels through ``wcs``); finite
            positions only. Empty when nothing falls on the box.

        Raises
        ------
        ReferenceCatalogError
            The catalog has no ``<band>_flux`` / ``<band>_fluxErr``.
        """
        fcol, ecol = f"{band}_flux", f"{band}_fluxErr"
        if fcol not in self.catalog.colnames or ecol not in self.catalog.colnames:
            raise ReferenceCatalogError(f"{self.name}: no {fcol!r}/{ecol!r} columns for band {band!r} "
                                        f"(bands held: {self.bands})")
        if wcs is None:
            raise ValueError("wcs is None: the references cannot be placed on the detector")
        # Cone around the box centre with the half-diagonal (plus margin) as radius, then the exact box.
        cx, cy = bbox.center
        ra0, dec0 = pixel_to_sky(wcs, np.array([cx]), np.array([cy]))
        corners_x = np.array([bbox.min_x, bbox.max_x, bbox.min_x, bbox.max_x], np.float64)
        corners_y = np.array([bbox.min_y, bbox.min_y, bbox.max_y, bbox.max_y], np.float64)
        cra, cdec = pixel_to_sky(wcs, corners_x, corners_y)
        centre = _unit(ra0, dec0)[0]
        cos_c = _unit(cra, cdec) @ centre
        scale = np.degrees(np.arccos(np.clip(cos_c.min(), -1, 1))) / max(0.5 * np.hypot(bbox.width, bbox.height), 1)
        radius = np.radians(scale * (0.5 * np.hypot(bbox.width, bbox.height) + pixel_margin) * 1.05)
        near = np.flatnonzero(self._xyz @ centre >= np.cos(radius))
        # quiet: a reference far outside the distortion's domain may not converge; it is off the box anyway.
        x, y = wcs.all_world2pix(self._ra[near], self._dec[near], 0, tolerance=1e-8, maxiter=50, quiet=True)
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        inside = (np.isfinite(x) & np.isfinite(y) & (x >= bbox.min_x - pixel_margin - 0.5)
                  & (x <= bbox.max_x + pixel_margin + 0.5) & (y >= bbox.min_y - pixel_margin - 0.5)
                  & (y <= bbox.max_y + pixel_margin + 0.5))
        rows = near[inside]
        out = Table()
        out["id"] = np.asarray(self.catalog["id"])[rows]
        out["ra"] = self._ra[rows]
        out["dec"] = self._dec[rows]
        out["centroid_x"] = x[inside]
        out["centroid_y"] = y[inside]
        out[fcol] = np.asarray(self.catalog[fcol], np.float64)[rows]
        out[ecol] = np.asarray(self.catalog[ecol], np.float64)[rows]
        for c, unit in (("ra", "deg"), ("dec", "deg"), ("centroid_x", "pix"), ("centroid_y", "pix"),
                        (fcol, "nJy"), (ecol, "nJy")):
            out[c].unit = unit
        out.meta["band"] = band
        return out


def _unit(ra, dec) -> np.ndarray:
    r, d = np.radians(np.atleast_1d(ra)), np.radians(np.atleast_1d(dec))
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=1)
