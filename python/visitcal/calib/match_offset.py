"""The astrometric matcher's fallback: an offset search that trusts the preliminary WCS to its stated error
(`MatchOffsetTask`).

When the pattern matcher (`MatchPessimisticBTask`) finds nothing -- a few dozen sources against a reference
catalog whose faint half was not detected leave too few 6-object patterns in common -- the preliminary WCS
is still good to a few arcseconds: the camera model is right and the pointing, rotation and plate scale are
nearly so. The references are projected into the pixel plane through it and the offset between the two
lists is found directly, as the peak of their cross-correlation (the histogram of all source-to-reference
offsets within ``max_offset_arcsec``, C++ ``offset_histogram``; Groth 1986 counts the same coincidences
with triangles, this is the simpler search a known scale and orientation allow):

1. histogram the offsets ``r - s`` of every source/reference pair within ``max_offset_arcsec``, in bins of
   ``bin_arcsec``; sum each 3 x 3 block of bins (the rotation and scale errors of the preliminary WCS spread
   the true offsets by up to about its stated error from the detector's centre to its corners);
2. the block with the most pairs is the candidate; its count must reach ``min_matches`` and exceed the
   chance coincidences (the mean block count outside it) by ``min_significance`` Poisson sigmas (of at
   least one pair);
3. pair each source, moved by the block's mean offset, with its nearest reference within
   ``match_radius_arcsec`` (each reference to its closest source);
4. ``num_refine_iter`` times: fit an affine map source -> reference to the pairs (least squares, 6
   parameters) and pair again through it within ``max(min_match_radius_arcsec, 3 rms)`` (at most
   ``match_radius_arcsec``); stop when the pairs no longer change.

The result is accepted with at least ``min_matches`` pairs. `AstrometryTask` then fits the WCS to them and
matches again through the fitted WCS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field

from .. import _core
from .match_nearest import angular_separation_arcsec, match_nearest
from .match_pessimistic_b import MatchError, _column

__all__ = ["MatchOffsetConfig", "MatchOffsetResult", "MatchOffsetTask"]


class MatchOffsetConfig(BaseModel):
    """Configuration of `MatchOffsetTask` (ours; LSST has no such fallback)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_offset_arcsec: float = Field(10.0, gt=0, le=120, description="Largest offset searched: what the preliminary "
                                     "WCS may be wrong by at the centre of the sources (visitcal.sim's are within "
                                     "2\"). At most 120 arcsec: with bin_arcsec it sizes the offset histogram "
                                     "((2 max / bin)^2 bins).")
    bin_arcsec: float = Field(1.0, ge=0.1, le=60, description="Bin of the offset histogram; the peak is summed over "
                              "3 x 3 bins. 0.1 to 60 arcsec: with max_offset_arcsec it sizes the histogram (at most "
                              "2400^2 bins).")
    match_radius_arcsec: float = Field(2.0, gt=0, le=60, description="Pairing radius about the offset found, and the "
                                       "largest of the refinement's. At most 60 arcsec.")
    min_match_radius_arcsec: float = Field(0.2, gt=0, le=60, description="Smallest pairing radius of the refinement. "
                                                                         "At most 60 arcsec.")
    min_matches: int = Field(6, ge=3, le=2**31 - 1, description="Pairs needed (in the histogram's peak and at the "
                                                                "end). Within int32.")
    min_significance: float = Field(5.0, ge=0, description="The peak must exceed the mean 3 x 3 block count by "
                                    "this many Poisson sigmas.")
    num_refine_iter: int = Field(3, ge=0, le=100, description="Affine refits and re-pairings after the first "
                                                              "pairing. At most 100.")


@dataclass(frozen=True)
class MatchOffsetResult:
    """Matched pairs of the offset search.

    Attributes
    ----------
    source_index, ref_index : (m,) int64
        Matched pairs: indices into the arrays given to `MatchOffsetTask.match_objects`, sorted by source
        index; each reference appears once.
    distance_pix : (m,) float64
        Distance between the reference (projected through the preliminary WCS) and the source mapped by the
        final affine fit, px.
    offset_pix : (float, float)
        The histogram peak's mean offset (reference minus source, px, in the preliminary WCS's frame).
    n_peak : int
        Pairs in the peak's 3 x 3 block.
    chance : float
        Mean pairs per 3 x 3 block (the coincidence floor).
    match_distance_pix : float
        The final pairing radius (px).
    n_sources, n_references : int
        Usable sources; references projected into the searched region.
    """

    source_index: np.ndarray
    ref_index: np.ndarray
    distance_pix: np.ndarray
    offset_pix: tuple[float, float]
    n_peak: int
    chance: float
    match_distance_pix: float
    n_sources: int
    n_references: int

    def __len__(self) -> int:
        return int(self.source_index.size)


class MatchOffsetTask:
    """Match sources to references by the offset search of the module docstring.

    Parameters
    ----------
    config : `MatchOffsetConfig`, optional
    """

    ConfigClass = MatchOffsetConfig
    _DefaultName = "offsetMatcher"

    def __init__(self, config: MatchOffsetConfig | None = None):
        self.config = config if config is not None else MatchOffsetConfig()
        if not isinstance(self.config, MatchOffsetConfig):
            raise TypeError(f"config must be a MatchOffsetConfig, got {type(self.config).__name__}")

    def __repr__(self) -> str:
        return f"MatchOffsetTask(config={self.config!r})"

    def match_objects(self, source_xy, source_flux, ref_ra, ref_dec, ref_flux, wcs: WCS) -> MatchOffsetResult:
        """Match sources to references (the arguments of `MatchPessimisticBTask.match_objects`; the fluxes
        are not used).

        Parameters
        ----------
        source_xy : (n, 2) array_like
            Source centroids ``(x, y)`` in pixels (centres at integers; the WCS's 0-based frame).
        source_flux : (n,) array_like
            Unused (kept for the matchers' common signature).
        ref_ra, ref_dec : (m,) array_like
            Reference positions in degrees.
        ref_flux : (m,) array_like
            Unused.
        wcs : `astropy.wcs.WCS`
            The preliminary WCS (celestial; distortions allowed).

        Returns
        -------
        `MatchOffsetResult`

        Raises
        ------
        MatchError
            Too few usable sources or references (``"too_few_sources"``, ``"too_few_references"``), or no
            significant peak / too few pairs (``"no_match"``).
        ValueError, TypeError
            Malformed inputs.
        """
        cfg = self.config
        xy = np.asarray(source_xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"source_xy must have shape (n, 2), got {xy.shape}")
        ra, dec = _column(ref_ra, "ref_ra"), _column(ref_dec, "ref_dec")
        if ra.size != dec.size:
            raise ValueError(f"ref_ra and ref_dec differ in length: {ra.size}, {dec.size}")
        if not isinstance(wcs, WCS) or not wcs.has_celestial:
            raise TypeError("wcs must be an astropy.wcs.WCS with celestial axes")
        ok_src = np.flatnonzero(np.isfinite(xy[:, 0]) & np.isfinite(xy[:, 1]))
        xs, ys = np.ascontiguousarray(xy[ok_src, 0]), np.ascontiguousarray(xy[ok_src, 1])
        if ok_src.size < cfg.min_matches:
            raise MatchError("too_few_sources", ok_src.size, ra.size, 0, cfg.min_matches,
                             f"the offset search needs min_matches = {cfg.min_matches} sources")
        scale = _pixel_scale_arcsec(wcs, xs, ys)
        max_off = cfg.max_offset_arcsec / scale
        ref_keep, xr, yr = _project_references(xs, ys, ra, dec, wcs, max_off + cfg.match_radius_arcsec / scale)
        if ref_keep.size < cfg.min_matches:
            raise MatchError("too_few_references", ok_src.size, ref_keep.size, 0, cfg.min_matches,
                             "too few references within max_offset_arcsec of the sources")
        bin_pix = cfg.bin_arcsec / scale
        counts, n_pairs = _core.offset_histogram(xs, ys, xr, yr, max_off, bin_pix)
        h = counts.shape[0] // 2
        padded = np.pad(counts, 1)
        block = sum(padded[1 + dy:1 + dy + counts.shape[0], 1 + dx:1 + dx + counts.shape[1]]
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        iy, ix = np.unravel_index(int(np.argmax(block)), block.shape)  # ties: the first, deterministic
        n_peak = int(block[iy, ix])
        # the floor: the pairs outside the peak's block spread over the other bins of the searched disc
        chance = 9.0 * max(n_pairs - n_peak, 0) / max(math.pi * (max_off / bin_pix) ** 2 - 9.0, 1.0)
        need = max(cfg.min_matches, chance + cfg.min_significance * math.sqrt(max(chance, 1.0)))
        if n_peak < need:
            raise MatchError("no_match", ok_src.size, ref_keep.size, n_peak, int(math.ceil(need)),
                             f"offset search: the best 3x3 block of the {bin_pix:.1f}-px offset histogram holds "
                             f"{n_peak} pairs, chance {chance:.2f}")
        win = counts[max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2].astype(float)
        gy, gx = np.mgrid[max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2][:, :win.shape[0], :win.shape[1]]
        off = (float(((gx - h) * win).sum() / win.sum() * bin_pix), float(((gy - h) * win).sum() / win.sum() * bin_pix))

        radius = cfg.match_radius_arcsec / scale
        min_radius = cfg.min_match_radius_arcsec / scale
        px, py = xs + off[0], ys + off[1]
        pairs = None
        for it in range(cfg.num_refine_iter + 1):
            m = match_nearest(px, py, xr, yr, radius, unique=True)
            si, ri, dist = m.pairs()
            key = (si.tobytes(), ri.tobytes())
            if si.size < 3 or key == pairs or it == cfg.num_refine_iter:
                break
            pairs = key
            design = np.column_stack([xs[si], ys[si], np.ones(si.size)])
            sol, *_ = np.linalg.lstsq(design, np.column_stack([xr[ri], yr[ri]]), rcond=None)
            full = np.column_stack([xs, ys, np.ones(xs.size)]) @ sol
            px, py = full[:, 0], full[:, 1]
            resid = np.hypot(full[si, 0] - xr[ri], full[si, 1] - yr[ri])
            radius = float(min(max(min_radius, 3.0 * math.sqrt(np.mean(resid**2))), cfg.match_radius_arcsec / scale))
        if si.size < cfg.min_matches:
            raise MatchError("no_match", ok_src.size, ref_keep.size, int(si.size), cfg.min_matches,
                             f"offset search: {si.size} pairs within {radius:.1f} px of the offset "
                             f"({off[0]:.1f}, {off[1]:.1f}) px")
        return MatchOffsetResult(source_index=ok_src[si].astype(np.int64), ref_index=ref_keep[ri].astype(np.int64),
                                 distance_pix=np.asarray(dist, np.float64), offset_pix=off, n_peak=n_peak,
                                 chance=float(chance), match_distance_pix=float(radius), n_sources=int(ok_src.size),
                                 n_references=int(ref_keep.size))


def _pixel_scale_arcsec(wcs: WCS, xs, ys) -> float:
    cx, cy = 0.5 * (xs.min() + xs.max()), 0.5 * (ys.min() + ys.max())
    (r0, r1), (d0, d1) = wcs.all_pix2world([cx, cx + 1.0], [cy, cy], 0)
    (r2,), (d2,) = wcs.all_pix2world([cx], [cy + 1.0], 0)
    s = math.sqrt(float(angular_separation_arcsec(r0, d0, r1, d1)) * float(angular_separation_arcsec(r0, d0, r2, d2)))
    if not (math.isfinite(s) and s > 0):
        raise ValueError("the WCS gives no finite pixel scale at the sources' centre")
    return s


def _project_references(xs, ys, ra, dec, wcs: WCS, margin: float):
    """Indices of the references within ``margin`` px of the sources' bounding box under ``wcs``, and their
    pixel positions."""
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    ok = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
    if ok.size == 0:
        return ok, np.empty(0), np.empty(0)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    (cra, era), (cdec, edec) = wcs.all_pix2world([cx, cx + 1.0], [cy, cy], 0)
    scale = float(angular_separation_arcsec(cra, cdec, era, edec))
    radius = 2.0 * (0.5 * math.hypot(x1 - x0, y1 - y0) + margin) * scale
    ok = ok[angular_separation_arcsec(ra[ok], dec[ok], cra, cdec) <= radius]
    if ok.size == 0:
        return ok, np.empty(0), np.empty(0)
    xr, yr = wcs.all_world2pix(ra[ok], dec[ok], 0, tolerance=1e-6, maxiter=50, quiet=True)
    inside = (np.isfinite(xr) & np.isfinite(yr) & (xr >= x0 - margin) & (xr <= x1 + margin)
              & (yr >= y0 - margin) & (yr <= y1 + margin))
    return ok[inside], np.ascontiguousarray(xr[inside]), np.ascontiguousarray(yr[inside])
