"""Isolated-star association across visits and bands, per tract (pipe_tasks
``IsolatedStarAssociationTask``).

The association builds, for one tract, a catalog of isolated point sources (``star_cat``, the
``isolated_star_association`` dataset) and the single-visit sources of each (``source_cat``, the
``isolated_star`` dataset). FinalizeCharacterization reads both to choose its PSF stars and to reserve
the same stars in every visit (LSST's ``FinalizeCharacterizationTask``; see
`visitcal.tasks.reserve_isolated_stars`).

Algorithm (`IsolatedStarAssociationTask.run`):

1. **Select** in each input table the rows passing ``config.source_selector`` (LSST's selector for this
   task: the flags below vetoed, sizeExtendedness < 0.1, 8 < S/N < 1000 on the normalized compensated-tophat
   flux, deblend_nChild == 0 (not a blend's parent; LSST also requires parent == 0, see the selector's
   comment: a deblended child is kept only without any other detected source within ``isolation_radius``),
   detect_isPrimary), with finite coordinates, a band in
   ``band_order`` and a position inside the tract's *outer* region.
2. **Primary stars, band by band** in ``band_order``: friends-of-friends groups of that band's
   sources with linking length ``match_radius``; each group gives a star at its mean position (the
   normalised mean of the members' unit vectors, which handles RA = 0/360 and the poles; for groups an
   arcsecond wide it equals the mean RA/Dec to < 1e-9 arcsec). The band's stars are ordered by the nested
   HEALPix pixel (``nside_split``, 32) of their mean position, then by their group's lowest source index
   (see *Star order* below). A star of a later band is dropped when it lies within ``match_radius`` of a
   star already found. ``primary_band`` records the band that made it.
3. **Neighbour removal**: every star with another star within ``isolation_radius`` is removed (both).
4. **Crop** to the tract's inner region (each star belongs to exactly one tract).
5. **Source association**: each selected source is given the nearest star within ``match_radius`` (the
   stars are the same whatever the band, so all bands are matched at once); unmatched sources are
   dropped, and so are stars left without any source. Sources are sorted by (star, band in
   ``band_order``, visit, detector, sourceId), so each star's sources are contiguous and grouped by band.
6. **Ids**: star i (0-based, in the final order) gets
   ``isolated_star_id = (i + 1) * 10**(floor(log10(n_tracts)) + 1) + tract``, with ``n_tracts`` the sky
   map's number of tracts (`SimpleSkyMap.n_tracts`), so ids are unique across tracts.

Star order (LSST's). The reserved PSF stars and the ``isolated_star_id`` of a star depend on its row in
the star table: FinalizeCharacterization's reserve draws a shuffled boolean array over the rows of the
band-cut star table (`visitcal.tasks.reserve_isolated_stars`), so the same stars are reserved as in LSST
only when the rows come in LSST's order. LSST's task bounds its memory by splitting the tract's sources
of each band into nested HEALPix pixels at ``nside_split`` = 32 (about 1.8 deg across), matching each
pixel with a border of neighbouring sources and keeping the groups whose mean position falls inside the
pixel; it appends the groups pixel by pixel in increasing pixel index, each pixel's groups in order of
their lowest source index (smatch's groups as scipy's connected components number them). Its order is
therefore (primary band's rank in ``band_order``, nested nside-32 pixel of the star's mean position,
lowest source index of the group in the band's sources), and neighbour removal, the crop and the
association keep it. We find the groups of a whole tract at once with the spherical grid hash of
`visitcal._core` (``calib/fof.hpp``: exact great-circle separations on unit vectors, union-find,
deterministic order) and sort them into that order with `visitcal.calib.healpix_nest_pixel` (the pixel
hpgeom gives, bit for bit). The groups equal LSST's except a group wider than LSST's border (about ten
match radii), which LSST would split. Sources are in input order: the tables as given, rows in table
order.

Column map
----------
Our ``single_visit_star`` tables carry LSST's afw column names; LSST's association reads the
``sourceTable`` (DPDD) names. The one mapping used by this module (`COLUMN_MAP`): output/DPDD name ->
input afw column (``slot_*`` names resolve through the table's ``meta["slots"]``):

================================  =================================================  ======================
DPDD name (selector / output)     single_visit_star column                           use
================================  =================================================  ======================
sourceId                          id                                                 output
ra, dec                           coord_ra, coord_dec (radians -> degrees)           output, matching
x, y                              slot_Centroid_x, slot_Centroid_y                   output
xErr, yErr                        slot_Centroid_xErr, slot_Centroid_yErr             output
normCompTophatFlux_instFlux       base_NormalizedCompensatedTophatFlux_instFlux      output, S/N
normCompTophatFlux_instFluxErr    base_NormalizedCompensatedTophatFlux_instFluxErr   output, S/N
normCompTophatFlux_flag           base_NormalizedCompensatedTophatFlux_flag          veto
apFlux_12_0_instFlux (Err, flag)  base_CircularApertureFlux_12_0_instFlux (...)      output
apFlux_17_0_instFlux (Err, flag)  base_CircularApertureFlux_17_0_instFlux (...)      output when present
localBackground_instFlux, _flag   base_LocalBackground_instFlux, _flag               output
ixx, iyy, ixy                     slot_Shape_xx, slot_Shape_yy, slot_Shape_xy        output
pixelFlags_edge                   base_PixelFlags_flag_edge                          veto
pixelFlags_interpolatedCenter     base_PixelFlags_flag_interpolatedCenter            veto
pixelFlags_saturatedCenter        base_PixelFlags_flag_saturatedCenter               veto
pixelFlags_crCenter               base_PixelFlags_flag_crCenter                      veto
pixelFlags_bad                    base_PixelFlags_flag_bad                           veto
pixelFlags_interpolated           base_PixelFlags_flag_interpolated                  veto
pixelFlags_saturated              base_PixelFlags_flag_saturated                     veto
centroid_flag                     slot_Centroid_flag                                 veto
sizeExtendedness                  base_ClassificationSizeExtendedness_value          < 0.1
parentSourceId                    parent                                             == 0
deblend_nChild                    deblend_nChild                                     == 0
detect_isPrimary                  detect_isPrimary                                   required
visit, detector, band,            visit, detector, band, physical_filter             output, band split
physical_filter
================================  =================================================  ======================
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import _core
from ..calib.healpix import HEALPIX_MAX_NSIDE, healpix_nest_pixel
from ..measurement.source_selector import (
    RequireFlags,
    RequireIsolated,
    RequireUnresolved,
    ScienceSourceSelectorConfig,
    ScienceSourceSelectorTask,
    SignalToNoiseLimit,
    resolve_column,
)

__all__ = [
    "COLUMN_MAP",
    "IsolatedStarAssociationConfig",
    "IsolatedStarAssociationResult",
    "IsolatedStarAssociationTask",
    "fof_groups",
    "isolated_star_id",
    "match_nearest_sphere",
    "count_neighbours",
    "source_columns",
    "star_columns",
]

#: DPDD (LSST sourceTable) name -> our single_visit_star (afw) column; see the module docstring.
COLUMN_MAP: dict[str, str] = {
    "sourceId": "id",
    "ra": "coord_ra",
    "dec": "coord_dec",
    "x": "slot_Centroid_x",
    "y": "slot_Centroid_y",
    "xErr": "slot_Centroid_xErr",
    "yErr": "slot_Centroid_yErr",
    "normCompTophatFlux_instFlux": "base_NormalizedCompensatedTophatFlux_instFlux",
    "normCompTophatFlux_instFluxErr": "base_NormalizedCompensatedTophatFlux_instFluxErr",
    "normCompTophatFlux_flag": "base_NormalizedCompensatedTophatFlux_flag",
    "apFlux_12_0_instFlux": "base_CircularApertureFlux_12_0_instFlux",
    "apFlux_12_0_instFluxErr": "base_CircularApertureFlux_12_0_instFluxErr",
    "apFlux_12_0_flag": "base_CircularApertureFlux_12_0_flag",
    "apFlux_17_0_instFlux": "base_CircularApertureFlux_17_0_instFlux",
    "apFlux_17_0_instFluxErr": "base_CircularApertureFlux_17_0_instFluxErr",
    "apFlux_17_0_flag": "base_CircularApertureFlux_17_0_flag",
    "localBackground_instFlux": "base_LocalBackground_instFlux",
    "localBackground_flag": "base_LocalBackground_flag",
    "ixx": "slot_Shape_xx",
    "iyy": "slot_Shape_yy",
    "ixy": "slot_Shape_xy",
    "pixelFlags_edge": "base_PixelFlags_flag_edge",
    "pixelFlags_interpolatedCenter": "base_PixelFlags_flag_interpolatedCenter",
    "pixelFlags_saturatedCenter": "base_PixelFlags_flag_saturatedCenter",
    "pixelFlags_crCenter": "base_PixelFlags_flag_crCenter",
    "pixelFlags_bad": "base_PixelFlags_flag_bad",
    "pixelFlags_interpolated": "base_PixelFlags_flag_interpolated",
    "pixelFlags_saturated": "base_PixelFlags_flag_saturated",
    "centroid_flag": "slot_Centroid_flag",
    "sizeExtendedness": "base_ClassificationSizeExtendedness_value",
    "parentSourceId": "parent",
    "deblend_nChild": "deblend_nChild",
    "detect_isPrimary": "detect_isPrimary",
    "visit": "visit",
    "detector": "detector",
    "band": "band",
    "physical_filter": "physical_filter",
}

_VETO = ("pixelFlags_edge", "pixelFlags_interpolatedCenter", "pixelFlags_saturatedCenter", "pixelFlags_crCenter",
         "pixelFlags_bad", "pixelFlags_interpolated", "pixelFlags_saturated", "centroid_flag",
         "normCompTophatFlux_flag")

#: Output source columns copied from the input (DPDD name -> float or bool), in output order after
#: sourceId, visit, detector, ra, dec, physical_filter, band; the 17-pixel aperture only when present.
_SOURCE_FLOATS = ("normCompTophatFlux_instFlux", "normCompTophatFlux_instFluxErr", "x", "y", "xErr", "yErr",
                  "apFlux_12_0_instFlux", "apFlux_12_0_instFluxErr", "apFlux_12_0_flag",
                  "apFlux_17_0_instFlux", "apFlux_17_0_instFluxErr", "apFlux_17_0_flag",
                  "localBackground_instFlux", "localBackground_flag", "ixx", "iyy", "ixy")
_OPTIONAL = ("apFlux_17_0_instFlux", "apFlux_17_0_instFluxErr", "apFlux_17_0_flag")


def _default_selector() -> ScienceSourceSelectorConfig:
    m = COLUMN_MAP
    return ScienceSourceSelectorConfig(
        do_flags=True, do_unresolved=True, do_signal_to_noise=True, do_isolated=True, do_require_primary=True,
        flags=RequireFlags(bad=tuple(m[k] for k in _VETO)),
        unresolved=RequireUnresolved(name=m["sizeExtendedness"], maximum=0.1),
        signal_to_noise=SignalToNoiseLimit(flux_field=m["normCompTophatFlux_instFlux"],
                                           err_field=m["normCompTophatFlux_instFluxErr"],
                                           minimum=8.0, maximum=1000.0),
        # Deblended children are kept (not LSST, which keeps unblended sources only) when no other detected
        # source lies within ``isolation_radius`` (`_children_with_neighbours`): in a crowded field most
        # stars are children of wide blends, and the distance is what keeps a PSF star's stamp clean. At 150 000 stars/deg^2 LSST's rule left ~160 of
        # ~500 PSF candidates per 2k detector and 106 reserved stars (refit PSF size error 1.5e-3 rms);
        # with children, 231 reserved and 1.0e-3 (bench/README.md, the accuracy matrix).
        isolated=RequireIsolated(parent_name=m["parentSourceId"], n_child_name=m["deblend_nChild"],
                                 allow_deblended_children=True))


class IsolatedStarAssociationConfig(BaseModel):
    """Configuration of `IsolatedStarAssociationTask` (LSST IsolatedStarAssociationConfig, snake_case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match_radius: float = Field(1.0, gt=0.0, le=60, description="Friends-of-friends linking length, later-band "
                                                         "duplicate radius and source-to-star match radius, arcsec. "
                                                         "At most 60 arcsec: the friends-of-friends groups grow with "
                                                         "it.")
    isolation_radius: float = Field(2.0, gt=0.0, le=600, description="Stars with another star within this are removed "
                                                             "(both), arcsec. At most 600 arcsec.")
    nside_split: int = Field(32, ge=1, le=HEALPIX_MAX_NSIDE,
                             description="HEALPix nside (nested, a power of two) whose pixels order the stars "
                                         "of a band (LSST's ``nside_split``; LSST also splits its matching by "
                                         "them). Only the star order depends on it.")
    band_order: tuple[str, ...] = Field(("i", "z", "r", "g", "y", "u"),
                                        description="Bands in matching priority; sources of other bands are "
                                                    "ignored.")
    source_selector: ScienceSourceSelectorConfig = Field(
        default_factory=_default_selector, description="Source selection (LSST's defaults for this task; "
                                                        "afw column names).")

    @field_validator("nside_split")
    @classmethod
    def _power_of_two(cls, v):
        if v & (v - 1):
            raise ValueError(f"nside_split must be a power of two, got {v}")
        return v

    @field_validator("band_order")
    @classmethod
    def _distinct(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError(f"band_order must be non-empty and without repeats, got {list(v)}")
        return v


@dataclasses.dataclass(frozen=True)
class IsolatedStarAssociationResult:
    """Result of `IsolatedStarAssociationTask.run`: ``star_cat`` (one row per isolated star) and
    ``source_cat`` (its sources, contiguous per star and grouped by band)."""

    star_cat: Table
    source_cat: Table


# --- kernels (C++, calib/fof.hpp) -----------------------------------------------------------------------------

def _radec(ra, dec, name: str) -> tuple[np.ndarray, np.ndarray]:
    ra = np.ascontiguousarray(ra, dtype=np.float64)
    dec = np.ascontiguousarray(dec, dtype=np.float64)
    if ra.ndim != 1 or ra.shape != dec.shape:
        raise ValueError(f"{name}: ra and dec must be 1-D arrays of one length, got {ra.shape} and {dec.shape}")
    return ra, dec


def _link_deg(name: str, value) -> float:
    """An angle in arcsec as degrees, checked before the C++ call: finite and in (0, 180 deg]."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number (arcsec), got {value!r}") from None
    if not (math.isfinite(v) and 0.0 < v <= 180.0 * 3600.0):
        raise ValueError(f"{name} must be finite and in (0, 648000] arcsec, got {value!r}")
    return v / 3600.0


def fof_groups(ra, dec, link_arcsec: float) -> tuple[np.ndarray, int]:
    """Friends-of-friends groups on the sphere.

    Parameters
    ----------
    ra, dec : (n,) array_like
        Positions, degrees.
    link_arcsec : float
        Linking length, arcsec (> 0): two points are friends when their great-circle separation is <= it.

    Returns
    -------
    labels : (n,) int64
        Group of each point, numbered 0, 1, ... in order of the group's lowest point index. A point with a
        non-finite position is a group of its own.
    n_groups : int
    """
    ra, dec = _radec(ra, dec, "fof_groups")
    labels, n = _core.fof_groups(ra, dec, _link_deg("link_arcsec", link_arcsec))
    return labels, int(n)


def match_nearest_sphere(ra1, dec1, ra2, dec2, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """For each position of list 1, the index of the nearest position of list 2 within ``radius_arcsec``
    (ties: the lower index; -1 for none) and its separation in arcsec (NaN for none). Degrees in."""
    ra1, dec1 = _radec(ra1, dec1, "list 1")
    ra2, dec2 = _radec(ra2, dec2, "list 2")
    index, sep = _core.match_nearest_sphere(ra1, dec1, ra2, dec2, _link_deg("radius_arcsec", radius_arcsec))
    return index, sep * 3600.0


def count_neighbours(ra, dec, radius_arcsec: float) -> np.ndarray:
    """For each position (degrees), the number of other positions within ``radius_arcsec`` (int64)."""
    ra, dec = _radec(ra, dec, "count_neighbours")
    return _core.count_neighbours(ra, dec, _link_deg("radius_arcsec", radius_arcsec))


def _mean_positions(ra: np.ndarray, dec: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the direction of the summed unit vectors (RA in [0, 360), deg)."""
    a, d = np.radians(ra), np.radians(dec)
    cd = np.cos(d)
    x = np.bincount(labels, cd * np.cos(a), minlength=n)
    y = np.bincount(labels, cd * np.sin(a), minlength=n)
    z = np.bincount(labels, np.sin(d), minlength=n)
    r = np.sqrt(x * x + y * y + z * z)
    mra = np.mod(np.degrees(np.arctan2(y, x)), 360.0)
    mdec = np.degrees(np.arcsin(np.clip(z / r, -1.0, 1.0)))
    return mra, mdec


def isolated_star_id(index, tract: int, n_tracts: int) -> np.ndarray:
    """``(index + 1) * 10**(floor(log10(n_tracts)) + 1) + tract``, int64: LSST's isolated_star_id packing.

    Parameters
    ----------
    index : int or array of int
        The star's 0-based row in the tract's star table.
    tract : int
        The tract number: a sky map's tracts run from 0 to ``n_tracts - 1`` (values up to
        ``10 * n_tracts - 1`` are accepted).
    n_tracts : int
        The number of tracts of the sky map (>= 1); sets the decimal width reserved for ``tract``.

    Returns
    -------
    ids : `numpy.ndarray` of int64
        Shaped as ``index``. For ``tract < n_tracts`` the low decimal digits are the tract, so ids are unique
        across the tracts of the sky map.

    Raises
    ------
    ValueError
        When ``n_tracts < 1`` or ``tract`` is out of range.
    """
    if n_tracts < 1 or not 0 <= tract < max(n_tracts, 1) * 10:
        raise ValueError(f"tract {tract} / n_tracts {n_tracts}: need n_tracts >= 1 and 0 <= tract")
    factor = 10 ** (int(math.floor(math.log10(n_tracts))) + 1)
    return (np.asarray(index, dtype=np.int64) + 1) * np.int64(factor) + np.int64(tract)


# --- tables --------------------------------------------------------------------------------------------

def star_columns(band_order) -> list[str]:
    """Columns of the star table, in order."""
    cols = ["isolated_star_id", "ra", "dec", "primary_band", "source_cat_index", "nsource"]
    for b in band_order:
        cols += [f"source_cat_index_{b}", f"nsource_{b}"]
    return cols


def source_columns(with_ap17: bool = True) -> list[str]:
    """Columns of the source table, in order (the 17-pixel aperture columns only when present)."""
    cols = ["sourceId", "visit", "detector", "ra", "dec", "physical_filter", "band"]
    cols += [c for c in _SOURCE_FLOATS if with_ap17 or c not in _OPTIONAL]
    return cols + ["source_row", "obj_index"]


def _coord_degrees(table: Table, name: str) -> np.ndarray:
    col = table[name]
    values = np.asarray(col, dtype=np.float64)
    unit = getattr(col, "unit", None)
    if unit is not None and str(unit) in ("deg", "degree"):
        return values
    return np.degrees(values)  # afw coords are radians


class IsolatedStarAssociationTask:
    """Associate isolated stars across the visits and bands of one tract (see the module docstring).

    Pickles, copies; thread-safe (no state but the config).
    """

    ConfigClass = IsolatedStarAssociationConfig
    _DefaultName = "isolatedStarAssociation"

    def __init__(self, config: IsolatedStarAssociationConfig | None = None):
        self.config = config if config is not None else IsolatedStarAssociationConfig()

    def __repr__(self) -> str:
        return f"IsolatedStarAssociationTask({self.config!r})"

    # ----------------------------------------------------------------------------------------------
    def _select(self, source_tables: list[Table], tract: int, skymap) -> tuple[Table, bool]:
        """The selected sources of every table in the tract's outer region, as one table of DPDD names
        (plus ``source_row``), in input order; and whether every table had the 17-pixel aperture."""
        selector = ScienceSourceSelectorTask(self.config.source_selector)
        bands = set(self.config.band_order)
        with_ap17 = all(COLUMN_MAP["apFlux_17_0_instFlux"] in t.colnames for t in source_tables)
        parts: dict[str, list[np.ndarray]] = {c: [] for c in source_columns(with_ap17) if c != "obj_index"}
        for k, table in enumerate(source_tables):
            if not isinstance(table, Table):
                raise TypeError(f"source_tables[{k}]: expected an astropy Table, got {type(table).__name__}")
            if len(table) == 0:
                continue
            try:
                names = {c: resolve_column(table, COLUMN_MAP[c]) for c in parts if c != "source_row"}
                keep = selector.run(table)
            except KeyError as err:
                raise KeyError(f"source_tables[{k}]: {err.args[0]}") from None
            ra = _coord_degrees(table, names["ra"])
            dec = _coord_degrees(table, names["dec"])
            keep &= np.isfinite(ra) & np.isfinite(dec)
            keep &= np.isin(np.asarray(table[names["band"]]).astype(str), list(bands))
            keep &= ~self._children_with_neighbours(table, ra, dec)
            idx = np.flatnonzero(keep)
            idx = idx[skymap.contains(tract, ra[idx], dec[idx], inner=False)]
            for c in parts:
                if c == "source_row":
                    parts[c].append(idx.astype(np.int64))
                elif c == "ra":
                    parts[c].append(ra[idx])
                elif c == "dec":
                    parts[c].append(dec[idx])
                else:
                    parts[c].append(np.asarray(table[names[c]])[idx])
        out = Table()
        for c, chunks in parts.items():
            if chunks:
                out[c] = np.concatenate(chunks)
            else:
                out[c] = np.zeros(0, dtype=_empty_dtype(c))
        return out, with_ap17

    def _children_with_neighbours(self, table: Table, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Deblended children with another detected source (a blend's child or an unblended source, whatever
        its S/N or size) within ``isolation_radius``: they are not isolated, though the star-level neighbour
        removal (step 3) only sees the *selected* sources. Only when the selector admits children."""
        sel = self.config.source_selector
        out = np.zeros(len(table), dtype=bool)
        if not (sel.do_isolated and sel.isolated.allow_deblended_children):
            return out
        child = np.asarray(table[sel.isolated.parent_name]) != 0
        leaf = (np.asarray(table[sel.isolated.n_child_name]) == 0) & np.isfinite(ra) & np.isfinite(dec)
        if not np.any(child & leaf):
            return out
        rows = np.flatnonzero(leaf)
        crowded = count_neighbours(ra[rows], dec[rows], self.config.isolation_radius) > 0
        out[rows[crowded]] = True
        return out & child

    def run(self, source_tables: list[Table], tract: int, skymap) -> IsolatedStarAssociationResult:
        """Associate the isolated stars of ``tract``.

        Parameters
        ----------
        source_tables : list of astropy.table.Table
            ``single_visit_star`` tables (afw column names, see `COLUMN_MAP`; coordinates in radians,
            ``visit``, ``detector``, ``band``, ``physical_filter`` columns), e.g. one per detector and
            visit, in a fixed order (the outputs depend on it only through ties and star numbering).
        tract : int
            Tract id in ``skymap``.
        skymap : visitcal.core.skymap.SimpleSkyMap
            Sky map (``contains(tract, ra, dec, inner=...)`` and ``n_tracts``).

        Returns
        -------
        IsolatedStarAssociationResult
            ``star_cat`` (columns `star_columns`) and ``source_cat`` (columns `source_columns`); RA/Dec in
            degrees, ``source_row`` the row of the source in its input table, ``obj_index`` the row of its
            star in ``star_cat``.

        Raises
        ------
        KeyError
            A required column is missing (named, with the table's index).
        """
        cfg = self.config
        tract = int(tract)
        sources, with_ap17 = self._select(list(source_tables), tract, skymap)
        band = np.asarray(sources["band"]).astype(str)
        ra_s = np.asarray(sources["ra"], dtype=np.float64)
        dec_s = np.asarray(sources["dec"], dtype=np.float64)

        # 2. primary stars band by band
        star_ra: list[np.ndarray] = []
        star_dec: list[np.ndarray] = []
        star_band: list[np.ndarray] = []
        for b in cfg.band_order:
            sel = np.flatnonzero(band == b)
            if sel.size == 0:
                continue
            labels, n = fof_groups(ra_s[sel], dec_s[sel], cfg.match_radius)
            mra, mdec = _mean_positions(ra_s[sel], dec_s[sel], labels, n)
            # LSST's order within the band: HEALPix pixel of the mean position, then group label (the
            # lowest member index); a stable sort keeps the label order inside a pixel.
            by_pixel = np.argsort(healpix_nest_pixel(cfg.nside_split, mra, mdec), kind="stable")
            mra, mdec = mra[by_pixel], mdec[by_pixel]
            if star_ra:
                old_ra, old_dec = np.concatenate(star_ra), np.concatenate(star_dec)
                dup, _ = match_nearest_sphere(mra, mdec, old_ra, old_dec, cfg.match_radius)
                mra, mdec = mra[dup < 0], mdec[dup < 0]
            star_ra.append(mra)
            star_dec.append(mdec)
            star_band.append(np.full(mra.size, b))
        if star_ra:
            sra, sdec = np.concatenate(star_ra), np.concatenate(star_dec)
            sband = np.concatenate(star_band).astype(str)
        else:
            sra, sdec, sband = np.zeros(0), np.zeros(0), np.zeros(0, dtype="<U1")

        # 3. neighbour removal, 4. crop to the inner tract
        keep = count_neighbours(sra, sdec, cfg.isolation_radius) == 0
        keep &= skymap.contains(tract, sra, sdec, inner=True)
        sra, sdec, sband = sra[keep], sdec[keep], sband[keep]

        # 5. source association; stars without sources dropped
        star_of, _ = match_nearest_sphere(ra_s, dec_s, sra, sdec, cfg.match_radius)
        used = np.zeros(sra.size, dtype=bool)
        used[star_of[star_of >= 0]] = True
        renumber = np.cumsum(used) - 1
        sra, sdec, sband = sra[used], sdec[used], sband[used]
        matched = np.flatnonzero(star_of >= 0)
        obj = renumber[star_of[matched]]
        rank = {b: r for r, b in enumerate(cfg.band_order)}
        band_rank = np.array([rank[b] for b in band[matched]], dtype=np.int64)
        order = np.lexsort((np.asarray(sources["sourceId"])[matched], np.asarray(sources["detector"])[matched],
                           np.asarray(sources["visit"])[matched], band_rank, obj))
        source_cat = sources[matched[order]]
        source_cat["obj_index"] = obj[order].astype(np.int64)
        band_rank = band_rank[order]

        # 6. the star table
        nstar = sra.size
        star_cat = Table()
        star_cat["isolated_star_id"] = isolated_star_id(np.arange(nstar), tract, skymap.n_tracts)
        star_cat["ra"] = sra
        star_cat["dec"] = sdec
        star_cat["primary_band"] = sband.astype(str) if nstar else np.zeros(0, dtype="<U1")
        obj_sorted = np.asarray(source_cat["obj_index"], dtype=np.int64)
        star_cat["source_cat_index"] = np.searchsorted(obj_sorted, np.arange(nstar), side="left").astype(np.int64)
        star_cat["nsource"] = np.bincount(obj_sorted, minlength=nstar).astype(np.int32)
        # Per band: sources sorted by (obj, band rank) -> search the combined key.
        key = obj_sorted * len(cfg.band_order) + band_rank
        for r, b in enumerate(cfg.band_order):
            k = np.arange(nstar, dtype=np.int64) * len(cfg.band_order) + r
            lo = np.searchsorted(key, k, side="left")
            hi = np.searchsorted(key, k, side="right")
            star_cat[f"source_cat_index_{b}"] = lo.astype(np.int64)
            star_cat[f"nsource_{b}"] = (hi - lo).astype(np.int32)
        _describe(star_cat, source_cat)
        source_cat = source_cat[source_columns(with_ap17)]
        return IsolatedStarAssociationResult(star_cat=star_cat, source_cat=source_cat)


def _empty_dtype(name: str):
    if name in ("sourceId", "visit", "source_row", "obj_index", "detector"):
        return np.int64
    if name in ("band", "physical_filter"):
        return "<U1"
    if name.endswith("_flag"):
        return bool
    return np.float64


def _describe(star_cat: Table, source_cat: Table) -> None:
    star_cat["ra"].unit = "deg"
    star_cat["dec"].unit = "deg"
    source_cat["ra"].unit = "deg"
    source_cat["dec"].unit = "deg"
    star_cat["isolated_star_id"].description = "(index + 1) * 10**(floor(log10(n_tracts)) + 1) + tract"
    star_cat["source_cat_index"].description = "first row of the star's sources in the source table"
    star_cat["nsource"].description = "number of the star's sources (all bands)"
    source_cat["source_row"].description = "row of the source in its single_visit_star table"
    source_cat["obj_index"].description = "row of the source's star in the star table"
