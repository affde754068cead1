"""Footprints: pixel sets stored as row spans, with peaks (afw's ``SpanSet``, ``Footprint``,
``HeavyFootprint``, ``FootprintSet``, as LSST's ``SourceDetectionTask`` in meas_algorithms produces them).

Conventions
-----------
- Coordinates are in the parent frame (pixel centres at integers, as in afw): a footprint of a
  sub-image with ``xy0 = (x0, y0)`` holds the pixels' parent positions, array index ``[y - y0, x - x0]``.
- A span ``(y, x0, x1)`` is one row's run of pixels ``x0..x1`` **inclusive**, as afw. Spans are kept
  *normalized* (sorted by ``(y, x0)``, disjoint, not touching), a canonical form: two footprints hold
  the same pixels exactly when their span arrays are equal.
- Connectivity is 8-fold (diagonal neighbours connect), as afw's FootprintSet and SExtractor.
- Peaks are a structured array with afw's PeakRecord fields ``id, i_x, i_y, f_x, f_y, peak_value,
  significance``, sorted by decreasing ``|peak_value|``. ``peak_value`` is the value in the image that
  was thresholded (the smoothed image), with its sign; ``significance`` is ``|peak_value| / sigma``.

Many footprints live in a `FootprintSet` as flat arrays (one span array and one peak array with
offsets), since a detector holds ~10^4 of them; ``footprint_set[i]`` builds a `Footprint` on demand.
Tables and FITS HDUs for persistence: `footprints_to_hdus` / `footprints_from_hdus` (files:
`visitcal.io.write_footprints` / `read_footprints`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from astropy.io import fits

from .. import _core
from .geom import Box2I
from .image import Mask, MaskedImage, MaskPlanes, _to_int32

__all__ = [
    "FOOTPRINT_SCHEMA_VERSION",
    "PEAK_DTYPE",
    "Footprint",
    "FootprintSet",
    "HeavyFootprint",
    "footprints_from_hdus",
    "footprints_to_hdus",
]

#: afw's PeakRecord fields.
PEAK_DTYPE = np.dtype([("id", np.int64), ("i_x", np.int32), ("i_y", np.int32), ("f_x", np.float64),
                       ("f_y", np.float64), ("peak_value", np.float32), ("significance", np.float32)])
_PEAK_VOID = np.dtype((np.void, PEAK_DTYPE.itemsize))

#: Version of the FITS layout written by `footprints_to_hdus`.
FOOTPRINT_SCHEMA_VERSION = 1
# Largest radius of Footprint.dilated: its C++ reserves (2 radius + 1) spans per span (and takes an int).
_MAX_DILATION = 1 << 20


def _as_spans(spans) -> np.ndarray:
    a = np.asarray(spans)
    if a.size == 0:
        return np.zeros((0, 3), dtype=np.int32)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"spans must have shape (n, 3) [y, x0, x1], got {a.shape}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"spans must be integers, got {a.dtype}")
    if a.dtype != np.int32:
        # pixel coordinates are int32 in the C++ core: a value beyond it would wrap without a word
        info = np.iinfo(np.int32)
        outside = (a < info.min) | (a > info.max) if a.dtype.kind == "i" else (a > info.max)
        if np.any(outside):
            i = int(np.argmax(np.any(outside, axis=1)))
            raise ValueError(f"span {i} {a[i].tolist()} has a coordinate outside the int32 range "
                             f"[{info.min}, {info.max}]")
    if np.any(a[:, 2] < a[:, 1]):
        i = int(np.argmax(a[:, 2] < a[:, 1]))
        raise ValueError(f"span {i} has x1 < x0: {a[i].tolist()}")
    return np.ascontiguousarray(a, dtype=np.int32)


def _as_peaks(peaks) -> np.ndarray:
    if peaks is None:
        return np.zeros(0, dtype=PEAK_DTYPE)
    p = np.asarray(peaks)
    if p.dtype.names is None:
        raise TypeError(f"peaks must be a structured array with fields {PEAK_DTYPE.names}")
    missing = [n for n in PEAK_DTYPE.names if n not in p.dtype.names]
    if missing:
        raise ValueError(f"peaks lack the fields {missing}")
    out = np.zeros(p.shape[0], dtype=PEAK_DTYPE)
    for name in PEAK_DTYPE.names:
        out[name] = p[name]
    return out


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def make_peaks(xy, value, significance, ids=None) -> np.ndarray:
    """A `PEAK_DTYPE` array from integer positions ``xy`` (m, 2) [x, y], values and significances."""
    xy = np.asarray(xy, dtype=np.int32).reshape(-1, 2)
    peaks = np.zeros(xy.shape[0], dtype=PEAK_DTYPE)
    peaks["id"] = np.arange(1, xy.shape[0] + 1) if ids is None else ids
    peaks["i_x"], peaks["i_y"] = xy[:, 0], xy[:, 1]
    peaks["f_x"], peaks["f_y"] = xy[:, 0], xy[:, 1]
    peaks["peak_value"] = value
    peaks["significance"] = significance
    return peaks


class Footprint:
    """A set of pixels with its peaks.

    Parameters
    ----------
    spans : array_like, shape (n, 3), int
        Row runs ``[y, x0, x1]`` (inclusive, parent frame), in any order; overlapping or touching
        runs are merged.
    peaks : structured array (`PEAK_DTYPE` fields), optional
    """

    __slots__ = ("_peaks", "_spans")

    def __init__(self, spans, peaks=None):
        spans = _as_spans(spans)
        self._spans = _readonly(_core.normalize_spans(spans))
        self._peaks = _as_peaks(peaks)

    @classmethod
    def _from_normalized(cls, spans: np.ndarray, peaks: np.ndarray) -> Footprint:
        fp = cls.__new__(cls)
        fp._spans = _readonly(spans)
        fp._peaks = peaks
        return fp

    @classmethod
    def from_mask(cls, array, xy0=(0, 0)) -> Footprint:
        """The footprint of the True pixels of a boolean (y, x) array whose ``[0, 0]`` sits at ``xy0``."""
        a = np.asarray(array, dtype=bool)
        if a.ndim != 2:
            raise ValueError(f"array must be 2-D (y, x), got shape {a.shape}")
        padded = np.zeros((a.shape[0], a.shape[1] + 2), dtype=np.int8)
        padded[:, 1:-1] = a
        d = np.diff(padded, axis=1)
        ys, starts = np.nonzero(d == 1)
        _, ends = np.nonzero(d == -1)
        spans = np.stack([ys + xy0[1], starts + xy0[0], ends - 1 + xy0[0]], axis=1)
        return cls(spans)

    @property
    def spans(self) -> np.ndarray:
        """Normalized spans, (n, 3) int32 ``[y, x0, x1]`` (read-only)."""
        return self._spans

    @property
    def peaks(self) -> np.ndarray:
        """Peaks (`PEAK_DTYPE`), sorted by decreasing ``|peak_value|``."""
        return self._peaks

    @property
    def area(self) -> int:
        """Number of pixels."""
        s = self._spans
        return int(np.sum(s[:, 2].astype(np.int64) - s[:, 1] + 1))

    @property
    def empty(self) -> bool:
        """Whether the footprint holds no pixel (no spans)."""
        return self._spans.shape[0] == 0

    @property
    def bbox(self) -> Box2I:
        """The smallest box holding every pixel (an empty box for an empty footprint)."""
        s = self._spans
        if s.shape[0] == 0:
            return Box2I(0, 0, -1, -1)
        return Box2I(int(s[:, 1].min()), int(s[0, 0]), int(s[:, 2].max()), int(s[-1, 0]))

    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Parent-frame ``(y, x)`` of every pixel, in span order (the order of heavy-footprint values)."""
        s = self._spans.astype(np.int64)
        lengths = s[:, 2] - s[:, 1] + 1
        y = np.repeat(s[:, 0], lengths)
        starts = np.repeat(s[:, 1] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        x = starts + np.arange(int(lengths.sum()))
        return y, x

    def contains(self, x, y):
        """Whether the pixel(s) at parent position ``(x, y)`` (integers) belong to the footprint."""
        x = np.asarray(x, dtype=np.int64)
        y = np.asarray(y, dtype=np.int64)
        s = self._spans
        if s.shape[0] == 0:
            return np.zeros(np.broadcast(x, y).shape, dtype=bool) if x.ndim or y.ndim else False
        key = s[:, 0].astype(np.int64) * (1 << 32) + (s[:, 1].astype(np.int64) + (1 << 31))
        q = y * (1 << 32) + (x + (1 << 31))
        i = np.searchsorted(key, q, side="right") - 1
        ok = i >= 0
        i = np.clip(i, 0, None)
        result = ok & (s[i, 0] == y) & (s[i, 1] <= x) & (x <= s[i, 2])
        return bool(result) if result.ndim == 0 else result

    def dilated(self, radius: int) -> Footprint:
        """The footprint grown by a disc of ``radius`` px (``dx^2 + dy^2 <= radius^2``), peaks kept."""
        if int(radius) != radius or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        if radius > _MAX_DILATION:  # before the C++ int (and its (2 radius + 1) rows per span)
            raise ValueError(f"radius must be <= {_MAX_DILATION} px, got {radius!r}")
        return Footprint._from_normalized(_core.dilate_spans(self._spans, int(radius)), self._peaks.copy())

    def clipped_to(self, bbox: Box2I) -> Footprint:
        """The part of the footprint inside ``bbox``; peaks outside it are dropped."""
        spans = _core.clip_spans(self._spans, bbox.min_x, bbox.min_y, bbox.max_x, bbox.max_y)
        p = self._peaks
        keep = (p["i_x"] >= bbox.min_x) & (p["i_x"] <= bbox.max_x) & (p["i_y"] >= bbox.min_y) & (p["i_y"] <= bbox.max_y)
        return Footprint._from_normalized(spans, p[keep].copy())

    def to_array(self, bbox: Box2I) -> np.ndarray:
        """A boolean (y, x) array over ``bbox``, True on the footprint's pixels inside it."""
        out = np.zeros(bbox.shape, dtype=np.int32)
        clipped = _core.clip_spans(self._spans, bbox.min_x, bbox.min_y, bbox.max_x, bbox.max_y)
        _core.set_mask_over_spans(out, clipped, 1, bbox.min_x, bbox.min_y)
        return out.astype(bool)

    def make_heavy(self, masked_image: MaskedImage) -> HeavyFootprint:
        """A `HeavyFootprint` carrying ``masked_image``'s pixels under this footprint."""
        return HeavyFootprint.from_masked_image(self, masked_image)

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return np.array_equal(self._spans, other._spans) and np.array_equal(self._peaks, other._peaks)

    __hash__ = None  # mutable peaks

    def __getstate__(self):
        return {"spans": np.array(self._spans), "peaks": self._peaks}

    def __setstate__(self, state):
        self._spans = _readonly(np.array(state["spans"], dtype=np.int32))
        self._peaks = state["peaks"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(area={self.area}, bbox={self.bbox}, n_spans={len(self._spans)}, n_peaks={len(self._peaks)})"


def _xy0(masked_image: MaskedImage) -> tuple[int, int]:
    return tuple(int(v) for v in masked_image.xy0)


class HeavyFootprint(Footprint):
    """A `Footprint` that carries the image, mask and variance values of its pixels (in span order).

    Used to write a catalog's footprints with their pixels and, in measurement, to re-insert a
    deblended child into an image (`insert`).
    """

    __slots__ = ("_image", "_mask", "_planes", "_variance")

    def __init__(self, footprint: Footprint, image, mask=None, variance=None, planes: MaskPlanes | None = None):
        self._spans = footprint.spans
        self._peaks = footprint.peaks.copy()
        n = footprint.area
        self._image = self._values(image, n, "image", None)
        self._mask = self._values(mask, n, "mask", np.int32) if mask is not None else np.zeros(n, np.int32)
        self._variance = self._values(variance, n, "variance", None) if variance is not None \
            else np.zeros(n, self._image.dtype)
        self._planes = planes.copy() if planes is not None else MaskPlanes()

    @classmethod
    def _batch_from_flat(cls, spans: np.ndarray, span_offsets: np.ndarray, peaks: np.ndarray,
                         peak_offsets: np.ndarray, image: np.ndarray, mask: np.ndarray, variance: np.ndarray,
                         value_offsets: np.ndarray, planes: MaskPlanes) -> list[HeavyFootprint]:
        """Many heavy footprints from flat arrays (as C++ returns them), without per-object checks.

        Footprint ``i`` has the (already normalized) spans ``spans[span_offsets[i]:span_offsets[i + 1]]``,
        the peaks ``peaks[peak_offsets[i]:peak_offsets[i + 1]]`` (`PEAK_DTYPE`) and the pixel values
        ``image/mask/variance[value_offsets[i]:value_offsets[i + 1]]`` (span order; ``mask`` int32).
        The footprints hold views of these arrays (the caller hands them over), each its own copy of
        ``planes``. The caller guarantees consistency (values counts = span areas); this is the fast
        path for deblender output, equal to building each with ``HeavyFootprint(Footprint(...), ...)``.
        """
        if len(value_offsets) < 2:
            return []

        def cuts(off):
            return np.asarray(off, dtype=np.int64)[1:-1]

        sp = np.split(spans, cuts(span_offsets))
        pk = np.split(peaks, cuts(peak_offsets))
        im, mk, va = (np.split(a, cuts(value_offsets)) for a in (image, mask, variance))
        out = []
        new = cls.__new__
        for s, p, i, m, v in zip(sp, pk, im, mk, va):
            hf = new(cls)
            s.setflags(write=False)
            hf._spans, hf._peaks, hf._image, hf._mask, hf._variance = s, p, i, m, v
            hf._planes = planes.copy()
            out.append(hf)
        return out

    @staticmethod
    def _values(a, n, name, dtype):
        a = np.ascontiguousarray(a if dtype is None else np.asarray(a, dtype=dtype))
        if a.ndim != 1 or a.shape[0] != n:
            raise ValueError(f"heavy footprint {name} must be 1-D with one value per pixel ({n}), got shape {a.shape}")
        return a

    @classmethod
    def from_masked_image(cls, footprint: Footprint, masked_image: MaskedImage) -> HeavyFootprint:
        """Gather ``masked_image``'s pixels under ``footprint`` (which must lie inside it)."""
        x0, y0 = _xy0(masked_image)
        spans = footprint.spans
        img = _core.gather_spans(np.ascontiguousarray(masked_image.image), spans, x0, y0)
        msk = _core.gather_spans(np.ascontiguousarray(masked_image.mask.array), spans, x0, y0)
        var = _core.gather_spans(np.ascontiguousarray(masked_image.variance), spans, x0, y0)
        return cls(footprint, img, msk, var, masked_image.mask.planes)

    @property
    def image(self) -> np.ndarray:
        """Image values of the footprint's pixels, 1-D, one per pixel in span order (see `indices`)."""
        return self._image

    @property
    def mask(self) -> np.ndarray:
        """int32 mask bits of the footprint's pixels, 1-D in span order; bit meanings in `planes`."""
        return self._mask

    @property
    def variance(self) -> np.ndarray:
        """Variance values of the footprint's pixels (image units squared), 1-D in span order."""
        return self._variance

    @property
    def planes(self) -> MaskPlanes:
        """The `MaskPlanes` dictionary that gives the meaning of the bits in `mask` (a private copy)."""
        return self._planes

    def insert(self, masked_image: MaskedImage, *, mask: bool = False, variance: bool = False) -> None:
        """Write the carried image values (and optionally mask and variance) back into ``masked_image``."""
        x0, y0 = _xy0(masked_image)
        _core.scatter_spans(masked_image.image, self._spans, self._image.astype(masked_image.image.dtype, copy=False),
                            x0, y0)
        if mask:
            _core.scatter_spans(masked_image.mask.array, self._spans, self._mask, x0, y0)
        if variance:
            _core.scatter_spans(masked_image.variance, self._spans,
                                self._variance.astype(masked_image.variance.dtype, copy=False), x0, y0)

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return (Footprint.__eq__(self, other) and np.array_equal(self._image, other._image)
                and np.array_equal(self._mask, other._mask) and np.array_equal(self._variance, other._variance))

    __hash__ = None

    def __getstate__(self):
        state = super().__getstate__()
        state.update(image=self._image, mask=self._mask, variance=self._variance, planes=dict(self._planes))
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._image, self._mask, self._variance = state["image"], state["mask"], state["variance"]
        self._planes = MaskPlanes(state["planes"])


class FootprintSet(Sequence):
    """Footprints of one image, stored flat (afw's ``FootprintSet``).

    Parameters
    ----------
    spans : (n, 3) int32
        All footprints' normalized spans, footprint after footprint.
    span_offsets : (k + 1,) int64
        Footprint ``i`` owns ``spans[span_offsets[i]:span_offsets[i + 1]]``.
    peaks : `PEAK_DTYPE` array
        All peaks, footprint after footprint; footprint ``i`` owns ``peaks[peak_offsets[i]:peak_offsets[i + 1]]``.
    peak_offsets : (k + 1,) int64
    bbox : `Box2I`
        The image the footprints were found on.
    """

    def __init__(self, spans, span_offsets, peaks, peak_offsets, bbox: Box2I):
        self._spans = _readonly(_as_spans(spans))
        self._span_offsets = _readonly(np.ascontiguousarray(span_offsets, dtype=np.int64))
        self._peaks = _as_peaks(peaks)
        self._peak_offsets = _readonly(np.ascontiguousarray(peak_offsets, dtype=np.int64))
        if (self._span_offsets.shape != self._peak_offsets.shape or self._span_offsets.size < 1
                or self._span_offsets[0] != 0 or self._span_offsets[-1] != len(self._spans)
                or self._peak_offsets[0] != 0 or self._peak_offsets[-1] != len(self._peaks)):
            raise ValueError("span_offsets / peak_offsets must have k + 1 entries from 0 to the array lengths")
        self.bbox = bbox

    @classmethod
    def _from_core(cls, result, bbox: Box2I, *, shift=(0, 0), first_peak_id: int | None = None) -> FootprintSet:
        """From the C++ arrays; peaks are numbered from ``first_peak_id`` if given, else keep the core's ids."""
        spans, span_offsets, xy, value, sig, peak_offsets, ids = result
        if shift != (0, 0):
            spans = spans + np.array([shift[1], shift[0], shift[0]], dtype=np.int32)
            xy = xy + np.array(shift, dtype=np.int32)
        if first_peak_id is not None:
            ids = np.arange(first_peak_id, first_peak_id + len(value))
        peaks = make_peaks(xy, value, sig, ids=ids)
        return cls(spans, span_offsets, peaks, peak_offsets, bbox)

    @classmethod
    def from_footprints(cls, footprints: Sequence[Footprint], bbox: Box2I) -> FootprintSet:
        """Pack footprints (in the given order) into flat arrays.

        Parameters
        ----------
        footprints : sequence of `Footprint`
            Footprints in the parent frame; heavy footprints lose their pixel values (only spans and
            peaks are kept).
        bbox : `Box2I`
            Box of the image the footprints belong to (used by `grown` and `set_mask`); footprints are
            not clipped to it.

        Returns
        -------
        footprint_set : `FootprintSet`
            ``footprint_set[i]`` equals ``footprints[i]`` (spans and peaks).
        """
        spans = [fp.spans for fp in footprints]
        peaks = [fp.peaks for fp in footprints]
        so = np.concatenate([[0], np.cumsum([len(s) for s in spans], dtype=np.int64)])
        po = np.concatenate([[0], np.cumsum([len(p) for p in peaks], dtype=np.int64)])
        if not peaks:
            all_peaks = np.zeros(0, PEAK_DTYPE)
        elif all(p.dtype == PEAK_DTYPE for p in peaks):
            # Concatenating structured arrays promotes their fields pair by pair (~10 us per array):
            # join the raw records instead.
            all_peaks = np.concatenate([p.view(_PEAK_VOID) for p in peaks]).view(PEAK_DTYPE)
        else:
            all_peaks = np.concatenate(peaks)
        return cls(np.concatenate(spans) if spans else np.zeros((0, 3), np.int32), so, all_peaks, po, bbox)

    def __len__(self) -> int:
        return len(self._span_offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"footprint index {i} out of range for {n} footprints")
        i %= n
        s = np.array(self._spans[self._span_offsets[i]:self._span_offsets[i + 1]])
        p = self._peaks[self._peak_offsets[i]:self._peak_offsets[i + 1]].copy()
        return Footprint._from_normalized(s, p)

    def __iter__(self) -> Iterator[Footprint]:
        return (self[i] for i in range(len(self)))

    @property
    def spans(self) -> np.ndarray:
        """All footprints' normalized spans, (n, 3) int32 ``[y, x0, x1]`` (parent frame, read-only)."""
        return self._spans

    @property
    def span_offsets(self) -> np.ndarray:
        """(k + 1,) int64: footprint ``i`` owns ``spans[span_offsets[i]:span_offsets[i + 1]]`` (read-only)."""
        return self._span_offsets

    @property
    def peaks(self) -> np.ndarray:
        """All footprints' peaks (`PEAK_DTYPE`), footprint after footprint."""
        return self._peaks

    @property
    def peak_offsets(self) -> np.ndarray:
        """(k + 1,) int64: footprint ``i`` owns ``peaks[peak_offsets[i]:peak_offsets[i + 1]]`` (read-only)."""
        return self._peak_offsets

    @property
    def areas(self) -> np.ndarray:
        """Pixel count of each footprint."""
        lengths = self._spans[:, 2].astype(np.int64) - self._spans[:, 1] + 1
        csum = np.concatenate([[0], np.cumsum(lengths)])
        return csum[self._span_offsets[1:]] - csum[self._span_offsets[:-1]]

    @property
    def n_peaks(self) -> np.ndarray:
        """Number of peaks of each footprint, (k,) int64."""
        return np.diff(self._peak_offsets)

    def grown(self, radius: int, *, combined: bool = True) -> FootprintSet:
        """Every footprint grown by a disc of ``radius`` px and clipped to `bbox`.

        With ``combined`` (afw's combinedGrow) footprints whose grown pixels touch merge into one,
        their peaks pooled and re-sorted; peak ids are kept.
        """
        if int(radius) != radius or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        # A disc wider than the box's width + height covers the box from any pixel: the same result,
        # and the C++ int and its (2 radius + 1) rows per span stay bounded.
        radius = min(int(radius), self.bbox.width + self.bbox.height)
        x0, y0 = self.bbox.xy0
        local = self._spans - np.array([y0, x0, x0], dtype=np.int32)
        xy = np.stack([self._peaks["i_x"] - x0, self._peaks["i_y"] - y0], axis=1).astype(np.int32)
        out = _core.grow_footprints(local, self._span_offsets, xy, self._peaks["peak_value"],
                                    self._peaks["significance"], self._peak_offsets, self._peaks["id"], int(radius),
                                    bool(combined), self.bbox.width, self.bbox.height)
        return FootprintSet._from_core(out, self.bbox, shift=(x0, y0))

    def _core_tuple(self) -> tuple:
        """The 7-tuple of flat arrays the C++ bindings take (parent frame)."""
        xy = np.stack([self._peaks["i_x"], self._peaks["i_y"]], axis=1).astype(np.int32)
        return (self._spans, self._span_offsets, xy, np.ascontiguousarray(self._peaks["peak_value"], np.float32),
                np.ascontiguousarray(self._peaks["significance"], np.float32), self._peak_offsets,
                np.ascontiguousarray(self._peaks["id"], np.int64))

    def set_mask(self, mask: Mask, plane: str) -> None:
        """OR the bit of ``plane`` into ``mask`` (whose ``[0, 0]`` is `bbox`'s corner) on every footprint pixel."""
        if mask.shape != self.bbox.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the footprints' bbox {self.bbox.shape}")
        x0, y0 = self.bbox.xy0
        _core.set_mask_over_spans(mask.array, self._spans, int(_to_int32(mask.get_plane_bitmask(plane))), x0, y0)

    def __eq__(self, other) -> bool:
        if not isinstance(other, FootprintSet):
            return NotImplemented
        return (self.bbox == other.bbox and np.array_equal(self._spans, other._spans)
                and np.array_equal(self._span_offsets, other._span_offsets)
                and np.array_equal(self._peaks, other._peaks) and np.array_equal(self._peak_offsets, other._peak_offsets))

    __hash__ = None

    def __repr__(self) -> str:
        return f"FootprintSet({len(self)} footprints, {len(self._peaks)} peaks, bbox={self.bbox})"


# --- persistence -----------------------------------------------------------------------------------

def footprints_to_hdus(footprints: Sequence[Footprint], ids=None) -> list[fits.BinTableHDU]:
    """Binary-table HDUs holding ``footprints`` (plain or heavy) keyed by ``ids`` (a source id each).

    HDUs: ``FOOTPRINTS`` (id, span/peak/pixel offsets and counts, heavy flag), ``SPANS`` (y, x0, x1),
    ``PEAKS`` (`PEAK_DTYPE`), and ``HEAVY`` (image, mask, variance per pixel of the heavy footprints,
    in span order; mask-plane names as ``MP_<NAME>`` cards). Image values are stored as float64 when
    any heavy footprint is float64, float32 otherwise, so a round trip is exact.
    """
    n = len(footprints)
    ids = np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"ids must have one entry per footprint ({n}), got shape {ids.shape}")
    heavy = np.array([isinstance(fp, HeavyFootprint) for fp in footprints], dtype=bool)
    n_spans = np.array([len(fp.spans) for fp in footprints], dtype=np.int64)
    n_peaks = np.array([len(fp.peaks) for fp in footprints], dtype=np.int64)
    n_pix = np.array([fp.area if h else 0 for fp, h in zip(footprints, heavy)], dtype=np.int64)

    def starts(counts):
        return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)

    index = fits.BinTableHDU.from_columns([
        fits.Column("id", "K", array=ids),
        fits.Column("span_start", "K", array=starts(n_spans)), fits.Column("span_count", "K", array=n_spans),
        fits.Column("peak_start", "K", array=starts(n_peaks)), fits.Column("peak_count", "K", array=n_peaks),
        fits.Column("pixel_start", "K", array=starts(n_pix)), fits.Column("pixel_count", "K", array=n_pix),
        fits.Column("heavy", "L", array=heavy),
    ], name="FOOTPRINTS")
    index.header["FPVER"] = (FOOTPRINT_SCHEMA_VERSION, "visitcal footprint layout version")
    spans = np.concatenate([fp.spans for fp in footprints]) if n else np.zeros((0, 3), np.int32)
    span_hdu = fits.BinTableHDU.from_columns([fits.Column(c, "J", array=spans[:, i]) for i, c in
                                              enumerate(("y", "x0", "x1"))], name="SPANS")
    peaks = np.concatenate([fp.peaks for fp in footprints]) if n else np.zeros(0, PEAK_DTYPE)
    peak_hdu = fits.BinTableHDU(np.asarray(peaks, dtype=PEAK_DTYPE), name="PEAKS")
    hv = [fp for fp, h in zip(footprints, heavy) if h]
    wide = any(fp.image.dtype == np.float64 or fp.variance.dtype == np.float64 for fp in hv)
    fdt, code = (np.float64, "D") if wide else (np.float32, "E")
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    heavy_hdu = fits.BinTableHDU.from_columns([
        fits.Column("image", code, array=cat([fp.image for fp in hv], fdt)),
        fits.Column("mask", "J", array=cat([fp.mask for fp in hv], np.int32)),
        fits.Column("variance", code, array=cat([fp.variance for fp in hv], fdt)),
    ], name="HEAVY")
    planes: dict[str, int] = {}
    for fp in hv:
        for name, bit in fp.planes.items():
            if planes.setdefault(name, bit) != bit:
                raise ValueError(f"heavy footprints disagree on the bit of mask plane {name}")
    for name, bit in sorted(planes.items(), key=lambda kv: kv[1]):
        key = f"MP_{name}"
        heavy_hdu.header[key if len(key) <= 8 else f"HIERARCH {key}"] = bit
    return [index, span_hdu, peak_hdu, heavy_hdu]


def _native(a) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder("="))


def footprints_from_hdus(hdus: Mapping[str, fits.BinTableHDU], where: str = "footprints"):
    """Inverse of `footprints_to_hdus`: ``(ids, [Footprint | HeavyFootprint, ...])``.

    ``hdus`` maps the HDU names (FOOTPRINTS, SPANS, PEAKS, HEAVY) to the HDUs (an HDUList works).
    Malformed input raises ``ValueError`` naming ``where`` and the HDU at fault.
    """
    try:
        index, span_hdu, peak_hdu, heavy_hdu = (hdus[k] for k in ("FOOTPRINTS", "SPANS", "PEAKS", "HEAVY"))
    except KeyError as err:
        raise ValueError(f"{where}: missing HDU {err}") from None
    version = index.header.get("FPVER")
    if version != FOOTPRINT_SCHEMA_VERSION:
        raise ValueError(f"{where}[FOOTPRINTS]: FPVER = {version!r}, this visitcal reads version {FOOTPRINT_SCHEMA_VERSION}")
    try:
        t = index.data
        ids = np.asarray(t["id"], dtype=np.int64)
        spans = np.stack([np.asarray(span_hdu.data[c], dtype=np.int32) for c in ("y", "x0", "x1")], axis=1) \
            if span_hdu.data is not None else np.zeros((0, 3), np.int32)
        peaks = _as_peaks(peak_hdu.data) if peak_hdu.data is not None else np.zeros(0, PEAK_DTYPE)
        hd = heavy_hdu.data
        planes = MaskPlanes({c.keyword[3:]: int(c.value) for c in heavy_hdu.header.cards if c.keyword.startswith("MP_")})
        out: list[Footprint] = []
        for row in range(len(ids)):
            s0, ns = int(t["span_start"][row]), int(t["span_count"][row])
            p0, npk = int(t["peak_start"][row]), int(t["peak_count"][row])
            if s0 < 0 or s0 + ns > len(spans) or p0 < 0 or p0 + npk > len(peaks):
                raise ValueError(f"footprint {row} points outside the SPANS/PEAKS tables")
            fp = Footprint(spans[s0:s0 + ns], peaks[p0:p0 + npk])
            if bool(t["heavy"][row]):
                q0, nq = int(t["pixel_start"][row]), int(t["pixel_count"][row])
                if nq != fp.area or hd is None or q0 + nq > len(hd):
                    raise ValueError(f"heavy footprint {row} has {nq} pixel values for {fp.area} pixels")
                fp = HeavyFootprint(fp, _native(hd["image"][q0:q0 + nq]), np.array(hd["mask"][q0:q0 + nq], np.int32),
                                    _native(hd["variance"][q0:q0 + nq]), planes)
            out.append(fp)
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{where}: malformed footprint tables: {err}") from None
    return ids, out
