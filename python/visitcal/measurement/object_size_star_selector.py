"""Select PSF stars as the stellar locus in object size (meas_algorithms ``objectSizeStarSelector``).

Stars are the smallest objects of an image and, whatever their brightness, all have the PSF's size;
galaxies are larger and spread out. The selector, per catalog:

1. **Candidates**: the size ``width = sqrt((xx + yy) / 2)`` (px, the trace radius of ``slot_Shape``'s
   adaptive moments) is finite and ``width_min < width < width_max``; the flux ``source_flux_field`` is
   within ``(flux_min, flux_max)`` (``do_flux_limit``; a limit of 0 is none) and/or its S/N within
   ``(signal_to_noise_min, signal_to_noise_max)`` (``do_signal_to_noise_limit``); none of ``bad_flags``
   (pixel flags: edge, interpolated/saturated/CR centre, bad, interpolated) nor the shape's own flag is
   set.
2. **Clusters**: a 1-D k-means of the candidates' widths with ``n_cluster`` (4) centres, started at
   ``w0 (1 + 2 width_std_allowed k)`` with ``w0`` the 10th percentile of the widths (deterministic; with the
   default 0.15 the centres are 30% apart, so a galaxy must be about 15% larger than the PSF to leave the
   stellar cluster, and a tight stellar locus is never split), and updated with the members' median
   (robust to a long galaxy tail) until the assignment no longer changes (at most 100 passes). The
   cluster with the smallest centre is the stellar locus.
3. **Clip**: at most 10 passes, centre = median and ``sd = min(std, 0.741 IQR)`` of the current locus,
   the new locus = the candidates with ``|width - centre| < n_sigma_clip * max(sd, width_sigma_floor_fraction *
   centre)`` (the floor, 2.5% of the width by default, keeps a locus measured on a handful of stars from
   cutting off stars where the PSF is a little larger or smaller); stop when it no longer
   changes or, after the first pass, as soon as ``sd < width_std_allowed`` (the locus is already as tight
   as a good PSF star set needs, LSST's meaning of ``widthStdAllowed``; clipping a tight locus again and
   again would only eat into its wings, since each clip shrinks the measured sd by ~5%). Candidates may re-enter the locus when the window
   moves, so a locus cut short by the k-means boundary is completed.

``locus = "smallest_group"`` (not LSST) replaces step 2's k-means by `smallest_group`: the first window of
widths ``[w, w (1 + 2 group_half_width_fraction)]`` from the smallest up holding ``group_min_size`` candidates,
sought among the candidates above S/N ``group_min_snr`` (20) when there are enough (the widths of S/N-10 stars
scatter by ~10% and come out low: the smallest group of all would be their low tail); step 3 then clips over
every candidate.
Characterisation's fainter-star fallback uses it: among sources down to S/N 10 the galaxies can outnumber the
stars tenfold, and k-means' smallest cluster is then their bulk.

Differences from LSST: LSST converts the moments to the focal plane (pixel distortion) before measuring
widths, which changes nothing on one detector at the 1e-3 level; its k-means starts from centres spread
in a similar way but with a spacing proportional to the width in different units; and its clipping only ever removes members. The work is
whole-array numpy on a few thousand sources.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from .source_selector import resolve_column

__all__ = ["ObjectSizeStarSelectorConfig", "ObjectSizeStarSelectorResult", "ObjectSizeStarSelectorTask",
           "kmeans_1d", "smallest_group"]

log = logging.getLogger(__name__)


class ObjectSizeStarSelectorConfig(BaseModel):
    """Configuration of `ObjectSizeStarSelectorTask` (LSST ObjectSizeStarSelectorConfig in snake_case).

    The defaults are LSST's current ones (meas_algorithms since September 2023): no flux limit, PSF-flux S/N
    above 50, widths above 0.9 px. Until issue 24 visitcal had the older ones (``base_GaussianFlux_instFlux``
    above 12500 counts, no S/N limit, no width floor); set those fields to get them back. On the simulator's
    fields the two gave the same statuses, zero points and PSFs to their seed-to-seed noise (bench/README.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_flux_limit: bool = Field(False, description="Apply flux_min / flux_max to source_flux_field (LSST's default "
                                "since September 2023: False; True before).")
    flux_min: float = Field(12500.0, ge=0, description="Exclusive minimum flux (instFlux units); 0: none. Used "
                            "when do_flux_limit.")
    flux_max: float = Field(0.0, ge=0, description="Exclusive maximum flux; 0: none.")
    do_signal_to_noise_limit: bool = Field(True, description="Apply the S/N limits to source_flux_field (LSST's "
                                           "default since September 2023: True; False before).")
    signal_to_noise_min: float = Field(50.0, ge=0, description="Exclusive minimum S/N; 0: none (LSST's default "
                                       "since September 2023: 50; 20 before, unused then).")
    signal_to_noise_max: float = Field(0.0, ge=0, description="Exclusive maximum S/N; 0: none.")
    width_min: float = Field(0.9, ge=0, le=1000, description="Exclusive minimum width (px), a floor against "
                             "cosmic rays and hot pixels (LSST's default since September 2023: 0.9; 0 before). "
                             "At most 1000 px.")
    width_max: float = Field(10.0, gt=0, le=1000, description="Exclusive maximum width (px). At most 1000 px.")
    source_flux_field: str = Field("base_PsfFlux_instFlux", description="Flux column (its error is <field>Err) for "
                                   "the flux and S/N limits (LSST's default since September 2023: "
                                   "base_PsfFlux_instFlux; base_GaussianFlux_instFlux before).")
    shape_name: str = Field("slot_Shape", description="Moments prefix: <name>_xx, _yy, _flag.")
    bad_flags: tuple[str, ...] = Field(
        ("base_PixelFlags_flag_edge", "base_PixelFlags_flag_interpolatedCenter",
         "base_PixelFlags_flag_saturatedCenter", "base_PixelFlags_flag_crCenter", "base_PixelFlags_flag_bad",
         "base_PixelFlags_flag_interpolated"),
        description="A source with any of these flags is not a candidate.")
    width_std_allowed: float = Field(0.15, ge=0, le=1000, description="Stop clipping once the locus's sd is below "
                                                                      "this (px). At most 1000 px.")
    n_sigma_clip: float = Field(2.0, gt=0, le=100, description="Half-width of the locus in its sd. At most 100.")
    n_cluster: int = Field(4, ge=1, le=100, description="Number of k-means clusters in width. At most 100 (k-means).")
    locus: Literal["kmeans", "smallest_group"] = Field(
        "kmeans", description="How the stellar locus starts (step 2): 'kmeans' (LSST's, the smallest k-means "
        "cluster) or 'smallest_group' (not LSST: the tight group of smallest widths, for faint sources, where the "
        "galaxies can outnumber the stars tenfold and form the smallest k-means cluster themselves).")
    group_half_width_fraction: float = Field(0.05, gt=0, lt=1, description="'smallest_group': the group spans "
                                             "widths w to w (1 + 2 x this).")
    group_min_size: int = Field(3, ge=1, le=1000, description="'smallest_group': fewest candidates in the group.")
    group_min_snr: float | None = Field(20.0, ge=0, description="'smallest_group': the group is sought among the "
                                        "candidates above this S/N (source_flux_field), when there are group_min_size "
                                        "of them (fainter widths scatter and are biased low); None: all.")
    width_sigma_floor_fraction: float = Field(0.025, ge=0, le=1.0, description="The locus's sd used for clipping is at "
                                              "least this fraction of its width (visitcal: a handful of stars "
                                              "can give an sd far below the PSF's variation over the detector). At "
                                              "most 1.")


@dataclasses.dataclass(frozen=True)
class ObjectSizeStarSelectorResult:
    """``selected``: bool per row (LSST's ``SourceSelectorResult.selected``); ``width``: each row's width
    (px, NaN where not computable); ``candidate``: rows that passed step 1; ``locus_center``,
    ``locus_sigma``: the stellar locus's median width and sd (NaN when nothing was selected)."""

    selected: np.ndarray
    width: np.ndarray
    candidate: np.ndarray
    locus_center: float
    locus_sigma: float


def kmeans_1d(values: np.ndarray, n_cluster: int, *, spacing: float = 0.3,
              max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 1-D k-means of positive sizes with median centres.

    Returns ``(labels, centres)``: labels index the centres of the non-empty clusters, sorted ascending. The centres start at ``w0 (1 + spacing k)``, k = 0 .. n_cluster - 1, with ``w0`` the 10th
    percentile of ``values``: the first sits on the small objects (stars) and the others are spread over
    the larger ones, so a tight stellar locus is not split between several centres.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    w0 = float(np.quantile(v, 0.1))
    centres = w0 * (1.0 + spacing * np.arange(n_cluster))
    labels = np.argmin(np.abs(v[:, None] - centres[None, :]), axis=1)
    for _ in range(max_iter):
        # Lloyd's update; an empty cluster keeps its centre, so it can still take the points it is nearest
        centres = np.array([np.median(v[labels == k]) if np.any(labels == k) else centres[k]
                            for k in range(centres.size)])
        new = np.argmin(np.abs(v[:, None] - centres[None, :]), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    occupied = np.unique(labels)
    centres = centres[occupied]
    order = np.argsort(centres, kind="stable")
    remap = np.empty(occupied.size, dtype=np.int64)
    remap[order] = np.arange(occupied.size)
    labels = remap[np.searchsorted(occupied, labels)]
    return labels, centres


def smallest_group(values: np.ndarray, half_width_fraction: float, min_size: int) -> np.ndarray:
    """The members of the first window ``[w, w (1 + 2 half_width_fraction)]``, from the smallest ``w`` of
    ``values`` up, that holds at least ``min_size`` of them (all False when none does).

    Stars are the smallest objects and all share the PSF's width, so they form the first tight group from
    below; galaxies, larger and spread over a wide range, come after it. On a u-band detector at S/N > 10 (7-15
    stars of width 1.9-2.1 px among 60-85 galaxies from 2.2 px up), the k-means' smallest cluster was the
    galaxies' bulk around 2.7 px; this group is the stars.
    """
    v = np.asarray(values, np.float64)
    order = np.argsort(v, kind="stable")
    ws = v[order]
    hi = np.searchsorted(ws, ws * (1.0 + 2.0 * half_width_fraction), side="right")
    count = hi - np.arange(ws.size)
    first = np.flatnonzero(count >= min_size)
    out = np.zeros(v.size, bool)
    if first.size:
        i = int(first[0])
        out[order[i:hi[i]]] = True
    return out


def _robust_sd(w: np.ndarray) -> float:
    q25, q75 = np.quantile(w, [0.25, 0.75])
    return float(min(np.std(w), 0.741 * (q75 - q25)))


class ObjectSizeStarSelectorTask:
    """Select stars by size (see the module docstring)."""

    ConfigClass = ObjectSizeStarSelectorConfig
    _DefaultName = "objectSize"

    def __init__(self, config: ObjectSizeStarSelectorConfig | None = None):
        self.config = config if config is not None else ObjectSizeStarSelectorConfig()

    def candidates(self, catalog: Table) -> tuple[np.ndarray, np.ndarray]:
        """``(candidate, width)`` of step 1."""
        cfg = self.config
        xx = np.asarray(catalog[resolve_column(catalog, cfg.shape_name + "_xx")], dtype=np.float64)
        yy = np.asarray(catalog[resolve_column(catalog, cfg.shape_name + "_yy")], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            width = np.sqrt(0.5 * (xx + yy))
            good = np.isfinite(width) & (width > cfg.width_min) & (width < cfg.width_max)
            flux = np.asarray(catalog[resolve_column(catalog, cfg.source_flux_field)], dtype=np.float64)
            if cfg.do_flux_limit:
                good &= np.isfinite(flux)
                if cfg.flux_min > 0:
                    good &= flux > cfg.flux_min
                if cfg.flux_max > 0:
                    good &= flux < cfg.flux_max
            if cfg.do_signal_to_noise_limit:
                err = np.asarray(catalog[resolve_column(catalog, cfg.source_flux_field + "Err")], dtype=np.float64)
                snr = flux / err
                good &= np.isfinite(snr)
                if cfg.signal_to_noise_min > 0:
                    good &= snr > cfg.signal_to_noise_min
                if cfg.signal_to_noise_max > 0:
                    good &= snr < cfg.signal_to_noise_max
        for name in cfg.bad_flags:
            good &= ~np.asarray(catalog[resolve_column(catalog, name)], dtype=bool)
        try:
            good &= ~np.asarray(catalog[resolve_column(catalog, cfg.shape_name + "_flag")], dtype=bool)
        except KeyError:
            pass
        width = np.where(np.isfinite(width), width, np.nan)
        return good, width

    def run(self, catalog: Table, exposure=None) -> ObjectSizeStarSelectorResult:
        """Select the stellar locus of ``catalog`` (``exposure`` is accepted for LSST's signature, unused)."""
        cfg = self.config
        candidate, width = self.candidates(catalog)
        selected = np.zeros(len(catalog), dtype=bool)
        rows = np.flatnonzero(candidate)
        if rows.size == 0:
            log.warning("objectSize star selector: no candidate passed the flux, size and flag cuts")
            return ObjectSizeStarSelectorResult(selected, width, candidate, np.nan, np.nan)
        w = width[rows]
        if cfg.locus == "smallest_group":
            # the group is sought among the candidates whose widths are precise (S/N > group_min_snr: at S/N ~10
            # adaptive-moment widths scatter by ~10% and are biased low, so the smallest group would be the faint
            # stars' low tail); every candidate near it then joins in the clipping below
            anchor = np.ones(rows.size, bool)
            if cfg.group_min_snr:
                flux = np.asarray(catalog[resolve_column(catalog, cfg.source_flux_field)], np.float64)[rows]
                err = np.asarray(catalog[resolve_column(catalog, cfg.source_flux_field + "Err")], np.float64)[rows]
                with np.errstate(divide="ignore", invalid="ignore"):
                    precise = flux / err > cfg.group_min_snr
                if precise.sum() >= cfg.group_min_size:
                    anchor = precise
            locus = np.zeros(rows.size, bool)
            locus[np.flatnonzero(anchor)[smallest_group(w[anchor], cfg.group_half_width_fraction,
                                                        cfg.group_min_size)]] = True
            if not locus.any():
                log.warning("objectSize star selector: no %d candidates within +-%.0f%% of one width",
                            cfg.group_min_size, 100 * cfg.group_half_width_fraction)
                return ObjectSizeStarSelectorResult(selected, width, candidate, np.nan, np.nan)
        else:
            labels, _ = kmeans_1d(w, cfg.n_cluster, spacing=2.0 * cfg.width_std_allowed)
            locus = labels == 0
        centre, sd = float(np.median(w[locus])), _robust_sd(w[locus])
        for _ in range(10):
            new = np.abs(w - centre) < cfg.n_sigma_clip * max(sd, cfg.width_sigma_floor_fraction * centre)
            if not new.any() or np.array_equal(new, locus):
                break
            locus = new
            centre, sd = float(np.median(w[locus])), _robust_sd(w[locus])
            if sd < cfg.width_std_allowed:
                break
        selected[rows[locus]] = True
        log.info("objectSize star selector: %d stars of %d candidates, width %.3f +- %.3f px",
                 int(locus.sum()), rows.size, centre, sd)
        return ObjectSizeStarSelectorResult(selected, width, candidate, centre, sd)

    def __repr__(self) -> str:
        return f"ObjectSizeStarSelectorTask(config={self.config!r})"
