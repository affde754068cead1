"""PSF candidates: stamps of the PSF stars, with other objects' pixels flagged (meas_algorithms'
``MakePsfCandidatesTask`` / ``PsfCandidate``, plus the ``maxCandidates`` cap of its PSF-determiner base
class ``BasePsfDeterminerTask``).

For each star (all pixel positions in the parent frame, pixel centres at integers, arrays ``(y, x)``):

1. A ``stamp_size`` x ``stamp_size`` (27) copy of image, mask and variance whose centre is the pixel
   ``floor(centroid + 0.5)``; its lower-left corner is that pixel minus ``stamp_size // 2``.
2. Blend masking (``do_mask_blends``): if the star's footprint has several peaks, the central peak is the
   one nearest the centroid (the first on ties); each footprint pixel strictly nearer another peak gets
   ``INTRP`` and loses ``DETECTED``.
3. Every 8-connected ``DETECTED`` region of the stamp that does not contain the centre pixel is dilated by a
   disc of radius ``neighbour_grow`` (3 px, ``dx^2 + dy^2 <= r^2``), clipped to the stamp, set ``INTRP``
   and cleared of ``DETECTED``. The regions are taken from the stamp's mask after step 2, as LSST does.
4. A star is skipped, with its reason, when its centroid is not finite (``bad_centroid``), the stamp does
   not lie wholly on the image (``off_edge``), or the stamp maximum (numpy ``max`` semantics: any NaN
   makes it NaN) is not finite (``nonfinite_max``). Otherwise ``psf_max_value`` is that maximum.
5. Cap: with more than ``max_candidates`` good stars, ``numpy.random.RandomState(seed).choice(n_good,
   max_candidates, replace=False)`` picks them (sorted, so stamps stay in star order); the others are
   reported as ``over_cap``. The seed 98765 is the one LSST's ``BasePsfDeterminerTask`` uses, so the same
   stars are chosen.

Steps 1-4 run in C++ in one call with the GIL released.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import _core
from ..core.footprint import FootprintSet
from ..core.image import Exposure, MaskedImage

__all__ = ["SKIP_REASONS", "PsfCandidates", "PsfCandidatesConfig", "footprint_index_of", "make_psf_candidates"]

#: Reason strings by the C++ status code; "" means a candidate. "over_cap" is added by the cap.
SKIP_REASONS = ("", "bad_centroid", "off_edge", "nonfinite_max")


class PsfCandidatesConfig(BaseModel):
    """Configuration of `make_psf_candidates` (the defaults of meas_algorithms' ``MakePsfCandidatesTask``)."""

    model_config = ConfigDict(extra="forbid")

    stamp_size: int = Field(27, gt=0, le=1001, description="Stamp side in pixels (LSST kernelSize + 2 * border); "
                                                           "odd. At most 1001 px: every candidate holds three stamps "
                                                           "of its square (5001 needed 21 GB).")
    do_mask_blends: bool = Field(True, description="Flag INTRP the pixels of the star's footprint nearer "
                                 "another of its peaks than its own (LSST doMaskBlends).")
    neighbour_grow: int = Field(3, ge=0, le=100, description="Radius (px) of the disc by which other DETECTED regions "
                                "in the stamp are dilated before being flagged INTRP. At most 100 px: the growth "
                                "disc's area sizes the time.")
    max_candidates: int = Field(300, ge=0, le=100000, description="At most this many candidates are kept (LSST "
                                "maxCandidates); a seeded random subset when there are more. At most 1e5: it sizes "
                                "the stamps kept.")
    seed: int = Field(98765, ge=0, le=2**32 - 1, description="Seed of numpy.random.RandomState for the cap (LSST's "
                                                             "value). Below 2^32 (numpy's RandomState).")
    centroid_name: str = Field("base_SdssCentroid", description="Column prefix of the centroid: "
                               "<centroid_name>_x and _y are read from the source table (parent-frame pixels).")

    @field_validator("stamp_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"stamp_size must be odd, got {v}")
        return v


@dataclass(frozen=True)
class PsfCandidates:
    """Stamps of the kept candidates (``m`` of them, in star order) and a per-star table.

    Attributes
    ----------
    image, variance : (m, S, S) float32
        Stamp pixels, ``[k, i, j]`` is parent pixel ``(xy0[k, 0] + j, xy0[k, 1] + i)``.
    mask : (m, S, S) int32
        Stamp mask, with the INTRP/DETECTED changes of steps 2-3.
    xy0 : (m, 2) int32
        Parent-frame ``(x, y)`` of each stamp's ``[0, 0]`` pixel.
    table : dict of (n,) arrays
        One row per input star: ``index`` (int64, row of the input), ``x``, ``y`` (float64 centroid),
        ``footprint_index`` (int64, -1 none), ``psf_max_value`` (float64, NaN when skipped before it was
        known), ``used`` (bool, a kept candidate), ``skip_reason`` (str, "" when used).
    """

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    xy0: np.ndarray
    table: dict

    def __len__(self) -> int:
        return int(self.image.shape[0])


def footprint_index_of(footprints: FootprintSet, x, y) -> np.ndarray:
    """Index of the footprint holding the pixel ``floor(x + 0.5), floor(y + 0.5)`` of each star, -1 if none.

    For overlapping footprints, the one whose span on that row starts last at or before the pixel wins.
    """
    cx = np.floor(np.asarray(x, np.float64) + 0.5)
    cy = np.floor(np.asarray(y, np.float64) + 0.5)
    out = np.full(cx.shape, -1, np.int64)
    spans = np.asarray(footprints.spans, np.int64)
    if spans.shape[0] == 0:
        return out
    owner = np.repeat(np.arange(len(footprints), dtype=np.int64), np.diff(footprints.span_offsets))
    ymin = spans[:, 0].min()
    key = (spans[:, 0] - ymin) * (1 << 32) + spans[:, 1]
    order = np.argsort(key, kind="stable")
    key = key[order]
    ok = np.isfinite(cx) & np.isfinite(cy)
    sk = np.where(ok, (np.where(ok, cy, 0) - ymin) * float(1 << 32) + np.where(ok, cx, 0), -np.inf)
    pos = np.searchsorted(key, sk.astype(np.float64), side="right") - 1
    good = ok & (pos >= 0)
    j = order[np.clip(pos, 0, None)]
    hit = good & (spans[j, 0] == cy) & (spans[j, 1] <= cx) & (spans[j, 2] >= cx)
    out[hit] = owner[j[hit]]
    return out


def _column(sources, name: str) -> np.ndarray:
    try:
        col = sources[name]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"sources has no column {name!r}") from None
    return np.ascontiguousarray(col, dtype=np.float64)


def make_psf_candidates(exposure: Exposure | MaskedImage, sources, footprints: FootprintSet,
                        config: PsfCandidatesConfig | None = None, *, footprint_index=None) -> PsfCandidates:
    """Cut PSF candidate stamps for the stars in ``sources``, as LSST's ``MakePsfCandidatesTask`` does.

    The steps are listed in the module docstring.

    Parameters
    ----------
    exposure : `Exposure` or `MaskedImage`
        float32 image/variance and int32 mask, origin ``xy0``. Not modified.
    sources : mapping or table
        Columns ``<centroid_name>_x`` and ``_y``: parent-frame centroids in pixels (centres at integers).
    footprints : `FootprintSet`
        The detection footprints; the star's own footprint gives the peaks for blend masking.
    config : `PsfCandidatesConfig`, optional
    footprint_index : (n,) int array, optional
        Each star's footprint in ``footprints`` (-1: none). Default: `footprint_index_of` the centroid pixel.

    Returns
    -------
    `PsfCandidates`
    """
    cfg = config if config is not None else PsfCandidatesConfig()
    mi = exposure.masked_image if isinstance(exposure, Exposure) else exposure
    if not isinstance(mi, MaskedImage):
        raise TypeError(f"exposure must be an Exposure or MaskedImage, got {type(exposure).__name__}")
    if not isinstance(footprints, FootprintSet):
        raise TypeError(f"footprints must be a FootprintSet, got {type(footprints).__name__}")
    x = _column(sources, cfg.centroid_name + "_x")
    y = _column(sources, cfg.centroid_name + "_y")
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError("centroid columns must be 1-D of the same length")
    if footprint_index is None:
        fidx = footprint_index_of(footprints, x, y)
    else:
        fidx = np.ascontiguousarray(footprint_index, dtype=np.int64)
        if fidx.shape != x.shape:
            raise ValueError(f"footprint_index must have shape {x.shape}, got {fidx.shape}")
        if fidx.size and (fidx.min() < -1 or fidx.max() >= len(footprints)):
            raise ValueError("footprint_index has entries outside -1..len(footprints)-1")
    mask_arr = np.asarray(mi.mask.array if hasattr(mi.mask, "array") else mi.mask)
    r = _core.make_psf_candidates(mi.image, mask_arr, mi.variance, mi.xy0[0], mi.xy0[1], x, y, fidx,
                                  footprints._core_tuple(), cfg.stamp_size, cfg.do_mask_blends, cfg.neighbour_grow)
    status = r["status"]
    reason = np.array(SKIP_REASONS, dtype=object)[status].astype(str)
    good = np.flatnonzero(status == 0)
    if good.size > cfg.max_candidates:
        pick = np.sort(np.random.RandomState(cfg.seed).choice(good.size, cfg.max_candidates, replace=False))
        dropped = np.setdiff1d(good, good[pick])
        reason = reason.astype(object)
        reason[dropped] = "over_cap"
        reason = reason.astype(str)
        good = good[pick]
    used = np.zeros(x.shape, bool)
    used[good] = True
    table = {
        "index": np.arange(x.size, dtype=np.int64),
        "x": x,
        "y": y,
        "footprint_index": fidx,
        "psf_max_value": r["max_value"],
        "used": used,
        "skip_reason": reason,
    }
    xy0 = np.stack([r["corner_x"][good], r["corner_y"][good]], axis=1).astype(np.int32)
    return PsfCandidates(r["image"][good], r["mask"][good], r["variance"][good], xy0, table)
