"""Astrometric pattern matching of sources to a reference catalog (LSST meas_astrom's
``MatchPessimisticBTask``).

The references are projected into the pixel plane through the *preliminary* WCS; the matcher (C++,
``visitcal/calib/matcher.hpp``, after Tabur 2007 and LSST's pessimistic matcher B) then finds the
similarity transform ``r = c + s R(theta) (p - c) + t`` taking source pixel positions ``p`` onto the
projected references ``r`` (``c``: the centre of the sources' bounding box; ``|t| <= max_offset_pix``,
``|theta| <= max_rotation_deg``) from patterns of ``num_points_for_shape`` bright objects ("spokes":
lengths and opening angles from a centre object), softening the tolerance by 2^i over
``matcher_iterations``, requiring ``num_pattern_consensus`` agreeing patterns when there are at least
``num_ref_require_consensus`` references, and accepting a transform only after it pairs enough objects
(``min(min_matched_pairs, min_frac_matched_pairs * min(n_src, n_ref))``) well above chance. All objects
are then paired within the match distance ``max(min_match_dist_pixels, mean + match_distance_sigma *
std)`` of the pair distances.

Not LSST's: the matching is done on the tangent plane of the detector in pixels rather than on unit
vectors; the scale error is bounded explicitly (``max_scale_error``, 1%); the acceptance also
requires the pairs to exceed 3x the expected chance coincidences plus 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field

from .. import _core
from .match_nearest import NearestMatch, angular_separation_arcsec, match_nearest, match_nearest_sky

__all__ = ["MatchError", "MatchPessimisticBConfig", "MatchPessimisticBResult", "MatchPessimisticBTask",
           "NearestMatch", "match_nearest", "match_nearest_sky"]


class MatchError(RuntimeError):
    """The matcher found no acceptable match (LSST raises a RuntimeError from the matcher, which the
    astrometry task reports as a failed fit).

    Attributes
    ----------
    reason : str
        ``"too_few_sources"``, ``"too_few_references"`` or ``"no_match"``.
    n_sources, n_references : int
        Usable sources (finite position) and references (finite position, in the searched region, at
        most ``max_ref_objects``).
    n_pairs : int
        Most pairs any verified candidate transform reached (0 if none was found).
    n_required : int
        Pairs required to accept a match (or objects required for a pattern).
    detail : str
        The matcher's own account.
    """

    def __init__(self, reason: str, n_sources: int, n_references: int, n_pairs: int = 0, n_required: int = 0,
                 detail: str = ""):
        self.reason = str(reason)
        self.n_sources = int(n_sources)
        self.n_references = int(n_references)
        self.n_pairs = int(n_pairs)
        self.n_required = int(n_required)
        self.detail = str(detail)
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"astrometric match failed ({self.reason}): {self.n_sources} sources, {self.n_references} "
                f"references, best {self.n_pairs} pairs of {self.n_required} required"
                + (f"; {self.detail}" if self.detail else ""))

    def __reduce__(self):
        return (type(self), (self.reason, self.n_sources, self.n_references, self.n_pairs, self.n_required,
                             self.detail))


class MatchPessimisticBConfig(BaseModel):
    """Configuration of `MatchPessimisticBTask` (LSST's ``MatchPessimisticBConfig`` in snake_case, with its
    defaults; ``max_scale_error`` is ours). Mirrors the C++ ``MatcherControl``."""

    model_config = ConfigDict(extra="forbid")

    num_bright_stars: int = Field(150, ge=2, le=10000, description="Brightest sources used to build patterns. At "
                                                                   "most 10000: the patterns tried grow with it.")
    min_matched_pairs: int = Field(30, ge=1, le=2**31 - 1, description="Pairs needed to accept a match (or the "
                                                                       "fraction below, "
                                   "whichever is smaller). Within int32.")
    min_frac_matched_pairs: float = Field(0.3, ge=0, le=1, description="Fraction of min(n_sources, n_references) "
                                          "that, if smaller than min_matched_pairs, suffices.")
    matcher_iterations: int = Field(5, ge=1, le=100, description="Softening steps: the pattern tolerance doubles at "
                                                                 "each "
                                    "and the pattern size tried grows by one. At most 100.")
    max_offset_pix: float = Field(250.0, ge=0, le=100000, description="Largest shift (px) between the sources and the "
                                  "references projected through the preliminary WCS, at the sources' centre. At most "
                                  "1e5 px.")
    max_rotation_deg: float = Field(1.0, ge=0, le=45, description="Largest rotation (deg) between them.")
    num_points_for_shape: int = Field(6, ge=3, le=10000, description="Objects in a pattern that must match (centre "
                                      "+ spokes). At most 10000, the most bright stars a pattern can be drawn from "
                                      "(num_bright_stars); the spokes are taken in order, so the cost is linear in it.")
    num_points_for_shape_attempt: int = Field(6, ge=3, le=10000, description="Objects in a pattern tried at the first "
                                              "softening step. At most 10000, as num_points_for_shape.")
    min_match_dist_pixels: float = Field(1.0, gt=0, le=1000, description="Starting pattern tolerance and floor of the "
                                         "match distance (px). At most 1000 px.")
    num_pattern_consensus: int = Field(3, ge=1, le=100, description="Agreeing patterns needed when there are at least "
                                       "num_ref_require_consensus references. At most 100.")
    num_ref_require_consensus: int = Field(1000, ge=0, le=2**31 - 1, description="References from which consensus is "
                                                                                 "required. Within int32.")
    max_ref_objects: int = Field(8192, ge=1, le=1000000, description="Brightest references kept in the searched "
                                                                     "region. At most 1e6: it sizes the reference "
                                                                     "arrays.")
    match_distance_sigma: float = Field(2.0, ge=0, description="Match distance = mean + this * std of the pair "
                                        "distances (floored at min_match_dist_pixels).")
    max_scale_error: float = Field(0.01, ge=0, lt=0.5, description="Ours: largest ``abs(scale - 1)`` between "
                                   "the source and reference patterns.")

    def to_control(self) -> _core.MatcherControl:
        """The C++ ``MatcherControl`` holding this config's matcher fields (same names; pixels, degrees)."""
        c = _core.MatcherControl()
        for name in _CONTROL_FIELDS:
            setattr(c, name, getattr(self, name))
        return c


_CONTROL_FIELDS = ("num_bright_stars", "min_matched_pairs", "min_frac_matched_pairs", "matcher_iterations",
                   "max_offset_pix", "max_rotation_deg", "num_points_for_shape", "num_points_for_shape_attempt",
                   "min_match_dist_pixels", "num_pattern_consensus", "num_ref_require_consensus",
                   "match_distance_sigma", "max_scale_error")


@dataclass(frozen=True)
class MatchPessimisticBResult:
    """Matched pairs and the fitted source -> reference transform.

    Attributes
    ----------
    source_index, ref_index : (m,) int64
        Matched pairs: indices into the source and reference arrays given to `match_objects`, sorted by
        source index; each reference appears once.
    distance_pix : (m,) float64
        ``|T(p) - r|`` in pixels, ``r`` the reference projected through the preliminary WCS.
    distance_arcsec : (m,) float64
        Angular separation between the reference and the source at ``wcs(T(p))`` (arcsec).
    centre : (float, float)
        ``c``, the centre of the sources' bounding box (px).
    shift : (float, float)
        ``t`` (px): where the source at ``c`` lands, relative to ``c``, in the preliminary WCS's pixel frame.
    rotation_deg : float
        ``theta`` (deg, counter-clockwise in (x, y)).
    scale : float
        ``s``.
    match_distance_pix : float
        The final pairing radius (px).
    tolerance_pix : float
        Pattern tolerance at which the match was found (px).
    softening : int
        Softening step of the accepted match (0-based).
    n_consensus : int
        Patterns agreeing with the accepted transform when it was tried.
    n_sources, n_references : int
        Usable sources; references in the searched region (after the ``max_ref_objects`` cut).
    """

    source_index: np.ndarray
    ref_index: np.ndarray
    distance_pix: np.ndarray
    distance_arcsec: np.ndarray
    centre: tuple[float, float]
    shift: tuple[float, float]
    rotation_deg: float
    scale: float
    match_distance_pix: float
    tolerance_pix: float
    softening: int
    n_consensus: int
    n_sources: int
    n_references: int

    def transform(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Source pixel positions mapped into the preliminary WCS's pixel frame, ``T(p)``."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        th = math.radians(self.rotation_deg)
        a, b = self.scale * math.cos(th), self.scale * math.sin(th)
        cx, cy = self.centre
        dx, dy = x - cx, y - cy
        return cx + a * dx - b * dy + self.shift[0], cy + b * dx + a * dy + self.shift[1]

    def __len__(self) -> int:
        return int(self.source_index.size)


def _column(a, name: str) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


class MatchPessimisticBTask:
    """Match sources to a reference catalog with a pessimistic pattern matcher (module docstring).

    Parameters
    ----------
    config : `MatchPessimisticBConfig`, optional
    """

    ConfigClass = MatchPessimisticBConfig
    _DefaultName = "matcher"

    def __init__(self, config: MatchPessimisticBConfig | None = None):
        self.config = config if config is not None else MatchPessimisticBConfig()
        if not isinstance(self.config, MatchPessimisticBConfig):
            raise TypeError(f"config must be a MatchPessimisticBConfig, got {type(self.config).__name__}")

    def __repr__(self) -> str:
        return f"MatchPessimisticBTask(config={self.config!r})"

    def match_objects(self, source_xy, source_flux, ref_ra, ref_dec, ref_flux, wcs: WCS) -> MatchPessimisticBResult:
        """Match sources to references.

        Parameters
        ----------
        source_xy : (n, 2) array_like
            Source centroids ``(x, y)`` in pixels (centres at integers; the WCS's 0-based frame).
        source_flux : (n,) array_like
            Source brightness (instFlux; larger is brighter; NaN ranks last).
        ref_ra, ref_dec : (m,) array_like
            Reference positions in degrees.
        ref_flux : (m,) array_like
            Reference brightness (e.g. nJy; larger is brighter; NaN ranks last): the brightest
            ``max_ref_objects`` in the searched region are kept.
        wcs : `astropy.wcs.WCS`
            The preliminary WCS of the exposure (celestial; distortions allowed).

        Returns
        -------
        `MatchPessimisticBResult`

        Raises
        ------
        MatchError
            Fewer than ``num_points_for_shape`` usable sources or references, or no match verified.
        ValueError, TypeError
            Malformed inputs (shapes, lengths, a WCS without celestial axes).
        """
        cfg = self.config
        xy = np.asarray(source_xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"source_xy must have shape (n, 2), got {xy.shape}")
        xs, ys = np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1])
        fs = _column(source_flux, "source_flux")
        if fs.size != xs.size:
            raise ValueError(f"source_flux has {fs.size} values for {xs.size} sources")
        ra, dec, rf = (_column(a, n) for a, n in ((ref_ra, "ref_ra"), (ref_dec, "ref_dec"), (ref_flux, "ref_flux")))
        if not (ra.size == dec.size == rf.size):
            raise ValueError(f"ref_ra, ref_dec and ref_flux differ in length: {ra.size}, {dec.size}, {rf.size}")
        if not isinstance(wcs, WCS) or not wcs.has_celestial:
            raise TypeError("wcs must be an astropy.wcs.WCS with celestial axes")

        ok_src = np.isfinite(xs) & np.isfinite(ys)
        n_src = int(ok_src.sum())
        need = cfg.num_points_for_shape
        if n_src < need:
            raise MatchError("too_few_sources", n_src, ra.size, 0, need,
                             f"a pattern needs num_points_for_shape = {need} sources")
        ref_keep, xr, yr = self._project_references(xs[ok_src], ys[ok_src], ra, dec, rf, wcs)
        if ref_keep.size < need:
            raise MatchError("too_few_references", n_src, ref_keep.size, 0, need,
                             f"a pattern needs num_points_for_shape = {need} references in the searched region")

        out = _core.match_pessimistic_b(xs, ys, fs, xr, yr, cfg.to_control())
        if not out["ok"]:
            raise MatchError("no_match", n_src, ref_keep.size, out["best_n_pairs"], out["n_required"], out["reason"])
        cx, cy, a, b, tx, ty = out["transform"]
        src_index = out["src_index"]
        ref_index = ref_keep[out["ref_index"]]
        result = MatchPessimisticBResult(
            source_index=src_index, ref_index=ref_index, distance_pix=out["distance"],
            distance_arcsec=np.empty(0), centre=(cx, cy), shift=(tx, ty),
            rotation_deg=math.degrees(math.atan2(b, a)), scale=math.hypot(a, b),
            match_distance_pix=out["match_distance"], tolerance_pix=out["tolerance"], softening=out["softening"],
            n_consensus=out["n_consensus"], n_sources=n_src, n_references=int(ref_keep.size))
        px, py = result.transform(xs[src_index], ys[src_index])
        sra, sdec = wcs.all_pix2world(px, py, 0)
        object.__setattr__(result, "distance_arcsec", angular_separation_arcsec(sra, sdec, ra[ref_index], dec[ref_index]))
        return result

    def _project_references(self, xs, ys, ra, dec, rf, wcs):
        """Indices of the references kept (brightest first) and their pixel positions under ``wcs``."""
        cfg = self.config
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        half_diag = 0.5 * math.hypot(x1 - x0, y1 - y0)
        margin = cfg.max_offset_pix + half_diag * (math.radians(cfg.max_rotation_deg) + cfg.max_scale_error) + 10.0
        ok = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
        if ok.size == 0:
            return ok, np.empty(0), np.empty(0)
        # A generous angular pre-cut keeps far-away references out of the (distortion-inverting) projection.
        cxp, cyp = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        (cra,), (cdec,) = wcs.all_pix2world([cxp], [cyp], 0)
        (era,), (edec,) = wcs.all_pix2world([cxp + 1.0], [cyp], 0)
        scale_arcsec = float(angular_separation_arcsec(cra, cdec, era, edec))
        radius = 2.0 * (half_diag + margin) * scale_arcsec
        ok = ok[angular_separation_arcsec(ra[ok], dec[ok], cra, cdec) <= radius]
        if ok.size == 0:
            return ok, np.empty(0), np.empty(0)
        xr, yr = wcs.all_world2pix(ra[ok], dec[ok], 0, tolerance=1e-6, maxiter=50, quiet=True)
        inside = (np.isfinite(xr) & np.isfinite(yr) & (xr >= x0 - margin) & (xr <= x1 + margin)
                  & (yr >= y0 - margin) & (yr <= y1 + margin))
        ok, xr, yr = ok[inside], xr[inside], yr[inside]
        key = np.where(np.isfinite(rf[ok]), rf[ok], -np.inf)
        order = np.argsort(-key, kind="stable")[:cfg.max_ref_objects]
        return ok[order], np.ascontiguousarray(xr[order]), np.ascontiguousarray(yr[order])
