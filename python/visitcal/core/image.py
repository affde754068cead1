"""Images with a mask and a variance, their visit and detector description, and `Exposure`.

Conventions
-----------
* Arrays are indexed ``(y, x)``; x is the fast axis. Pixel centres sit at integer coordinates.
* ``xy0 = (x0, y0)`` is the parent-frame position of array element ``[0, 0]``; array element
  ``[i, j]`` is parent pixel ``(x, y) = (j + x0, i + y0)``. A sub-image is a view with its own xy0.
* A WCS attached to an `Exposure` maps *parent-frame* pixel coordinates (0-based, as
  ``astropy.wcs.WCS.pixel_to_world``), like afw: it does not change when a sub-image is taken.
* Mask planes: one flag registry, ``visitcal._core.mask_planes()``; a `Mask` starts from it and may
  add planes (up to 32 bits of an int32 array; bit 31 is the sign bit).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import operator
import re
from collections.abc import Mapping

import numpy as np
from astropy.io import fits
from astropy.time import Time

from .. import _core
from .arguments import check_xy0
from .geom import Box2I

__all__ = [
    "UnknownMaskPlaneError",
    "MaskPlanes",
    "Mask",
    "MaskedImage",
    "VisitInfo",
    "Detector",
    "Exposure",
    "MAX_MASK_PLANES",
]

MAX_MASK_PLANES = 32
_PLANE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _to_int32(bits: int) -> np.int32:
    """A 32-bit pattern (0 <= bits < 2**32) as the int32 with the same bits."""
    return np.array([bits], dtype=np.uint32).view(np.int32)[0]


class UnknownMaskPlaneError(KeyError):
    """A mask plane name is not in a `MaskPlanes` dictionary (the message lists the known ones)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class MaskPlanes(Mapping):
    """Mask plane dictionary: plane name -> bit number (0..31), with a description per plane.

    Starts from the standard planes of ``visitcal._core.mask_planes()`` (BAD=0 … NOT_DEBLENDED=11)
    unless ``planes`` is given. Names are upper-case FITS-safe words (``[A-Z][A-Z0-9_]*``),
    because they are persisted as ``MP_<NAME>`` header cards and FITS keys are case-insensitive.
    """

    def __init__(self, planes: Mapping[str, int] | None = None, descriptions: Mapping[str, str] | None = None):
        self._bits: dict[str, int] = {}
        self._descriptions: dict[str, str] = {}
        if planes is None:
            for name, bit, doc in _core.mask_planes():
                self.add(name, bit, doc)
        else:
            for name, bit in planes.items():
                self.add(name, bit, (descriptions or {}).get(name, ""))

    def __getitem__(self, name: str) -> int:
        try:
            return self._bits[name]
        except KeyError:
            known = ", ".join(self._bits) or "none"
            raise UnknownMaskPlaneError(f"unknown mask plane {name!r} (known planes: {known})") from None

    def __iter__(self):
        return iter(self._bits)

    def __len__(self) -> int:
        return len(self._bits)

    def description(self, name: str) -> str:
        """The description of plane ``name`` (empty if none was given).

        Raises
        ------
        UnknownMaskPlaneError
            ``name`` is not a plane of this dictionary.
        """
        self[name]
        return self._descriptions[name]

    def name_of_bit(self, bit: int) -> str | None:
        """The plane using ``bit``, or None."""
        return next((n for n, b in self._bits.items() if b == bit), None)

    def add(self, name: str, bit: int, description: str = "") -> int:
        """Add plane ``name`` at an explicit ``bit``; ValueError on a bad name or a bit collision."""
        if not isinstance(name, str) or not _PLANE_NAME.match(name):
            raise ValueError(f"mask plane name {name!r} must match [A-Z][A-Z0-9_]*")
        bit = int(bit)
        if not 0 <= bit < MAX_MASK_PLANES:
            raise ValueError(f"mask plane {name!r}: bit {bit} outside 0..{MAX_MASK_PLANES - 1}")
        if name in self._bits:
            if self._bits[name] != bit:
                raise ValueError(f"mask plane {name!r} already uses bit {self._bits[name]}, not {bit}")
            return bit
        other = self.name_of_bit(bit)
        if other is not None:
            raise ValueError(f"mask plane {name!r}: bit {bit} is already used by {other!r}")
        self._bits[name] = bit
        self._descriptions[name] = str(description)
        return bit

    def add_plane(self, name: str, description: str = "") -> int:
        """Add ``name`` at the lowest free bit (or return its bit if it exists)."""
        if name in self._bits:
            return self._bits[name]
        used = set(self._bits.values())
        free = [b for b in range(MAX_MASK_PLANES) if b not in used]
        if not free:
            raise ValueError(f"cannot add mask plane {name!r}: all {MAX_MASK_PLANES} bits are used")
        return self.add(name, free[0], description)

    def get_plane_bitmask(self, *names: str) -> int:
        """OR of ``1 << bit`` for ``names`` (an int in ``[0, 2**32)``); `UnknownMaskPlaneError`."""
        value = 0
        for name in names:
            value |= 1 << self[name]
        return value

    def copy(self) -> "MaskPlanes":
        """An independent copy (planes added to it do not appear in this dictionary)."""
        # A valid instance needs no re-validation: copy the two dicts (the constructor re-checks
        # every plane, ~100 us, which the deblender would pay per child).
        out = MaskPlanes.__new__(MaskPlanes)
        out._bits, out._descriptions = dict(self._bits), dict(self._descriptions)
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, MaskPlanes) and self._bits == other._bits

    __hash__ = None

    def __repr__(self) -> str:
        return f"MaskPlanes({self._bits!r})"


class Mask:
    """An int32 ``(y, x)`` bit-mask array with its `MaskPlanes` dictionary.

    Parameters
    ----------
    array : array_like of int, optional
        Converted to int32 (uint32 is reinterpreted bit for bit). ``shape`` makes a zero mask.
    planes : MaskPlanes, optional
        Shared, not copied (a sub-mask shares its parent's planes). Defaults to the standard planes.
    """

    def __init__(self, array=None, planes: MaskPlanes | None = None, *, shape=None):
        if array is None:
            if shape is None:
                raise ValueError("Mask needs an array or a shape")
            array = np.zeros(shape, dtype=np.int32)
        self.array = _as_mask_array(array)
        self.planes = MaskPlanes() if planes is None else planes

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the mask array."""
        return self.array.shape

    def add_plane(self, name: str, description: str = "") -> int:
        """Add plane ``name`` at the lowest free bit of `planes` and return its bit number.

        If the plane exists its bit is returned unchanged. The planes dictionary may be shared with
        other masks (a sub-mask shares its parent's), which then see the new plane too.

        Raises
        ------
        ValueError
            ``name`` does not match ``[A-Z][A-Z0-9_]*``, or all 32 bits are used.
        """
        return self.planes.add_plane(name, description)

    def get_plane_bitmask(self, *names: str) -> int:
        """OR of ``1 << bit`` over the planes ``names``, as a Python int in ``[0, 2**32)``.

        To apply it to the int32 `array` use `test`, `set` or `clear`, or convert it first with
        ``np.uint32(bits).view(np.int32)``: bit 31 is the sign bit of the array.

        Raises
        ------
        UnknownMaskPlaneError
            A name is not in `planes`.
        """
        return self.planes.get_plane_bitmask(*names)

    def set(self, names, where=None) -> None:
        """Set plane(s) ``names`` (a name or a list) where the boolean array ``where`` is True (all if None)."""
        bits = _to_int32(self.get_plane_bitmask(*_names(names)))
        if where is None:
            self.array |= bits
        else:
            self.array[np.asarray(where, dtype=bool)] |= bits

    def clear(self, names=None, where=None) -> None:
        """Clear plane(s) ``names`` (all planes if None) where ``where`` is True (everywhere if None)."""
        bits = 0xFFFFFFFF if names is None else self.get_plane_bitmask(*_names(names))
        keep = _to_int32(~bits & 0xFFFFFFFF)
        if where is None:
            self.array &= keep
        else:
            self.array[np.asarray(where, dtype=bool)] &= keep

    def test(self, names) -> np.ndarray:
        """Boolean array: True where any of plane(s) ``names`` is set."""
        return (self.array & _to_int32(self.get_plane_bitmask(*_names(names)))) != 0

    def __getitem__(self, slices) -> "Mask":
        return Mask(self.array[slices], self.planes)

    def __repr__(self) -> str:
        return f"Mask(shape={self.shape}, planes={list(self.planes)})"


def _names(names) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


def _as_mask_array(array) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"mask must be 2-D (y, x), got {array.ndim}-D shape {array.shape}")
    if array.dtype.kind == "u" and array.dtype.itemsize == 4:
        return array.astype(np.uint32, copy=False).view(np.int32)
    if array.dtype.kind not in "iu":
        raise TypeError(f"mask must hold integers, got dtype {array.dtype}")
    if array.dtype.itemsize > 4 or (array.dtype.kind == "u" and array.dtype.itemsize == 4):
        if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.uint32).max):
            raise ValueError("mask values do not fit in 32 bits")
        return (array.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
    return np.asarray(array, dtype=np.int32)


def _as_float_plane(array, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (y, x), got {array.ndim}-D shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be real numbers, got dtype {array.dtype}")
    return np.asarray(array, dtype=np.float32)  # explicit conversion; no copy if already float32


class MaskedImage:
    """Image, `Mask` and variance planes of one shape ``(ny, nx)`` with an origin ``xy0``.

    Parameters
    ----------
    image : array_like, 2-D
        Pixel values; converted to float32 (no copy when already native float32).
    mask : Mask or array_like of int, optional
        Zero mask with the standard planes when omitted.
    variance : array_like, 2-D, optional
        Per-pixel variance (image units squared), float32; zeros when omitted.
    xy0 : (int, int)
        Parent-frame ``(x0, y0)`` of element ``[0, 0]``; every pixel (and one past the last) must
        lie in the int32 range.

    Raises
    ------
    ValueError
        Planes of different shapes, or pixels outside the int32 range.
    TypeError
        ``xy0`` is not two integers.
    """

    def __init__(self, image, mask=None, variance=None, *, xy0=(0, 0)):
        self.image = _as_float_plane(image, "image")
        shape = self.image.shape
        if mask is None:
            mask = Mask(shape=shape)
        elif not isinstance(mask, Mask):
            mask = Mask(mask)
        self.mask = mask
        self.variance = np.zeros(shape, np.float32) if variance is None else _as_float_plane(variance, "variance")
        for what, plane in (("mask", self.mask.array), ("variance", self.variance)):
            if plane.shape != shape:
                raise ValueError(f"{what} shape {plane.shape} differs from image shape {shape}")
        try:
            x0, y0 = (operator.index(v) for v in xy0)
        except TypeError:
            raise TypeError(f"xy0 must be two integers, got {xy0!r}") from None
        # The C++ kernels take the origin as int and compute the last pixel x0 + nx - 1 in int.
        self.xy0 = check_xy0((x0, y0), shape)

    shape = property(lambda self: self.image.shape, doc="``(ny, nx)``: shape of the three planes.")
    width = property(lambda self: self.image.shape[1], doc="Width ``nx`` in pixels (x, the fast axis).")
    height = property(lambda self: self.image.shape[0], doc="Height ``ny`` in pixels (y).")
    bbox = property(lambda self: Box2I.from_shape(self.shape, self.xy0), doc="parent-frame `Box2I` covered")

    def subimage(self, bbox: Box2I) -> "MaskedImage":
        """A view of the pixels inside the parent-frame ``bbox`` (ValueError if not contained)."""
        if not self.bbox.contains_box(bbox) or bbox.empty:
            raise ValueError(f"{bbox!r} is empty or not inside the image's {self.bbox!r}")
        sl = bbox.slices(self.xy0)
        return MaskedImage(self.image[sl], self.mask[sl], self.variance[sl], xy0=bbox.xy0)

    __getitem__ = subimage

    def clone(self) -> "MaskedImage":
        """A deep copy: new pixel arrays (contiguous), the same planes dictionary copied."""
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        return f"MaskedImage(shape={self.shape}, xy0={self.xy0})"


def _opt_float(value) -> float:
    return float("nan") if value is None else float(value)


def _same(u, v) -> bool:
    """Equality in which NaN equals NaN (recursing into tuples)."""
    if isinstance(u, tuple) and isinstance(v, tuple):
        return len(u) == len(v) and all(_same(a, b) for a, b in zip(u, v))
    if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
        return True
    return u == v


class _NanEq:
    """``==`` field by field with NaN == NaN (unknown values compare equal); hash of the repr."""

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    def __hash__(self) -> int:
        return hash(repr(self))


@dataclasses.dataclass(frozen=True, eq=False)
class VisitInfo(_NanEq):
    """What was observed, when and how: one per visit (all detectors share it).

    Parameters
    ----------
    id : int or None
        Visit (exposure) id, e.g. DECam EXPNUM.
    band, physical_filter : str or None
        Abstract band (``"r"``) and the instrument's filter name.
    exposure_time : float
        Seconds; NaN when unknown (as every float field).
    date : astropy.time.Time, str (ISO) or None
        Middle of the exposure (LSST convention). Stored as an ISO string in UTC with microsecond
        precision (``date``); ``mjd`` (UTC) is derived from it, so round trips are exact.
    airmass : float
        Boresight airmass.
    boresight_ra_dec : (float, float)
        ICRS degrees.
    boresight_rot_angle : float
        Degrees.
    observatory : (float, float, float) or None
        East longitude (deg), latitude (deg), elevation (m).

    Notes
    -----
    FITS cards (`to_header`; afw's names where afw has one): ``EXPID``, ``BAND``, ``FILTER``,
    ``EXPTIME``, ``DATE-AVG`` (+ ``TIMESYS='UTC'``, ``MJD-AVG`` informational), ``BORE-AIRMASS``,
    ``BORE-RA``, ``BORE-DEC``, ``BORE-ROTANG``, ``OBS-LONG``, ``OBS-LAT``, ``OBS-ELEV``. Unknown
    (None/NaN) values are omitted, since FITS headers cannot hold NaN.
    """

    id: int | None = None
    band: str | None = None
    physical_filter: str | None = None
    exposure_time: float = float("nan")
    date: str | None = None
    airmass: float = float("nan")
    boresight_ra_dec: tuple[float, float] = (float("nan"), float("nan"))
    boresight_rot_angle: float = float("nan")
    observatory: tuple[float, float, float] | None = None
    mjd: float = dataclasses.field(init=False, default=float("nan"))

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        if self.id is not None:
            set_("id", int(self.id))
        for key in ("exposure_time", "airmass", "boresight_rot_angle"):
            set_(key, _opt_float(getattr(self, key)))
        ra, dec = self.boresight_ra_dec
        set_("boresight_ra_dec", (_opt_float(ra), _opt_float(dec)))
        if self.observatory is not None:
            set_("observatory", tuple(float(v) for v in self.observatory))
        if self.date is not None:
            t = self.date if isinstance(self.date, Time) else Time(str(self.date), scale="utc")
            iso = Time(t.utc, precision=6).isot  # a new Time: never mutate the caller's
            set_("date", iso)
            set_("mjd", float(Time(iso, format="isot", scale="utc").mjd))

    @property
    def time(self) -> Time | None:
        """`date` as an `astropy.time.Time` (UTC scale), or None when the date is unknown."""
        return None if self.date is None else Time(self.date, format="isot", scale="utc")

    def to_dict(self) -> dict:
        """The constructor arguments as a plain dict (``date`` as its ISO UTC string, no ``mjd``).

        Unknown values stay None or NaN; `from_dict` rebuilds an equal `VisitInfo`.
        """
        d = dataclasses.asdict(self)
        d.pop("mjd")
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "VisitInfo":
        """Inverse of `to_dict`; an ``"mjd"`` key is ignored (it is derived from ``date``)."""
        return cls(**{k: v for k, v in d.items() if k != "mjd"})

    def to_header(self) -> fits.Header:
        """The visit as FITS cards (listed in the class description); unknown values are omitted.

        ``BORE-AIRMASS`` and the other keys longer than 8 characters are written as ``HIERARCH``
        cards. `from_header` reads them back; the round trip is exact (``DATE-AVG`` keeps microseconds).
        """
        h = fits.Header()
        _put(h, "EXPID", self.id, "visit (exposure) id")
        _put(h, "BAND", self.band, "abstract band")
        _put(h, "FILTER", self.physical_filter, "physical filter")
        _put(h, "EXPTIME", self.exposure_time, "[s] exposure time")
        if self.date is not None:
            h["DATE-AVG"] = (self.date, "middle of the exposure (UTC)")
            h["TIMESYS"] = ("UTC", "time system of DATE-AVG")
            h["MJD-AVG"] = (self.mjd, "[d] MJD (UTC) of DATE-AVG")
        _put(h, "BORE-AIRMASS", self.airmass, "boresight airmass")
        _put(h, "BORE-RA", self.boresight_ra_dec[0], "[deg] boresight RA (ICRS)")
        _put(h, "BORE-DEC", self.boresight_ra_dec[1], "[deg] boresight Dec (ICRS)")
        _put(h, "BORE-ROTANG", self.boresight_rot_angle, "[deg] boresight rotation angle")
        if self.observatory is not None:
            for key, v, c in zip(("OBS-LONG", "OBS-LAT", "OBS-ELEV"), self.observatory,
                                 ("[deg] east longitude", "[deg] latitude", "[m] elevation")):
                _put(h, key, v, c)
        return h

    HEADER_KEYS = ("EXPID", "BAND", "FILTER", "EXPTIME", "DATE-AVG", "TIMESYS", "MJD-AVG", "BORE-AIRMASS",
                   "BORE-RA", "BORE-DEC", "BORE-ROTANG", "OBS-LONG", "OBS-LAT", "OBS-ELEV")

    @classmethod
    def from_header(cls, header: Mapping) -> "VisitInfo":
        """Inverse of `to_header` (missing cards give None/NaN). ``TIMESYS`` other than UTC is honoured."""
        g = header.get
        date = g("DATE-AVG")
        if date is not None:
            date = Time(date, format="isot", scale=str(g("TIMESYS", "UTC")).strip().lower())
        obs = None
        if "OBS-LAT" in header or "OBS-LONG" in header:
            obs = (_opt_float(g("OBS-LONG")), _opt_float(g("OBS-LAT")), _opt_float(g("OBS-ELEV")))
        return cls(id=g("EXPID"), band=g("BAND"), physical_filter=g("FILTER"),
                   exposure_time=g("EXPTIME"), date=date, airmass=g("BORE-AIRMASS"),
                   boresight_ra_dec=(g("BORE-RA"), g("BORE-DEC")), boresight_rot_angle=g("BORE-ROTANG"),
                   observatory=obs)


def _put(header: fits.Header, key: str, value, comment: str) -> None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return
    if len(key) > 8:
        key = "HIERARCH " + key
    header[key] = (value, comment)


@dataclasses.dataclass(frozen=True, eq=False)
class Detector(_NanEq):
    """One detector (CCD) of the camera.

    Parameters
    ----------
    id : int
        Detector number (e.g. DECam CCDNUM).
    name : str
        Detector name (e.g. DECam DETPOS ``"N6"``).
    bbox : Box2I
        The detector's full pixel box (its parent frame).
    focal_plane_center : (float, float)
        Focal-plane position of the detector centre, mm; NaN when unknown.
    rotation : float
        Rotation of the detector's x axis from the focal-plane x axis, deg.
    pixel_size_mm : float
        Pixel pitch, mm (DECam: 0.015).

    Notes
    -----
    FITS cards: ``DETID``, ``DETNAME``, ``DBBMINX``/``DBBMINY``/``DBBMAXX``/``DBBMAXY`` (bbox),
    ``DFPX``/``DFPY`` (mm), ``DROT`` (deg), ``DPIXSIZE`` (mm).
    """

    id: int
    name: str
    bbox: Box2I
    focal_plane_center: tuple[float, float] = (float("nan"), float("nan"))
    rotation: float = 0.0
    pixel_size_mm: float = float("nan")

    def __post_init__(self):
        object.__setattr__(self, "id", int(self.id))
        object.__setattr__(self, "name", str(self.name))
        if not isinstance(self.bbox, Box2I):
            raise TypeError(f"Detector.bbox must be a Box2I, got {self.bbox!r}")
        fx, fy = self.focal_plane_center
        object.__setattr__(self, "focal_plane_center", (_opt_float(fx), _opt_float(fy)))
        object.__setattr__(self, "rotation", _opt_float(self.rotation))
        object.__setattr__(self, "pixel_size_mm", _opt_float(self.pixel_size_mm))

    HEADER_KEYS = ("DETID", "DETNAME", "DBBMINX", "DBBMINY", "DBBMAXX", "DBBMAXY", "DFPX", "DFPY", "DROT",
                   "DPIXSIZE")

    def to_dict(self) -> dict:
        """The constructor arguments as a plain dict, with ``bbox`` as ``(min_x, min_y, max_x, max_y)``.

        `from_dict` rebuilds an equal `Detector`.
        """
        d = dataclasses.asdict(self)
        d["bbox"] = (self.bbox.min_x, self.bbox.min_y, self.bbox.max_x, self.bbox.max_y)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "Detector":
        """Inverse of `to_dict`; ``bbox`` may be a `Box2I` or ``(min_x, min_y, max_x, max_y)``."""
        d = dict(d)
        if not isinstance(d["bbox"], Box2I):
            d["bbox"] = Box2I(*d["bbox"])
        return cls(**d)

    def to_header(self) -> fits.Header:
        """The detector as FITS cards (listed in the class description).

        ``DFPX``, ``DFPY``, ``DROT`` and ``DPIXSIZE`` are omitted when NaN (FITS cannot hold NaN).
        """
        h = fits.Header()
        h["DETID"] = (self.id, "detector id")
        h["DETNAME"] = (self.name, "detector name")
        b = self.bbox
        for key, v in zip(self.HEADER_KEYS[2:6], (b.min_x, b.min_y, b.max_x, b.max_y)):
            h[key] = (v, "detector bbox (inclusive, pixels)")
        _put(h, "DFPX", self.focal_plane_center[0], "[mm] focal-plane x of detector centre")
        _put(h, "DFPY", self.focal_plane_center[1], "[mm] focal-plane y of detector centre")
        _put(h, "DROT", self.rotation, "[deg] detector rotation in the focal plane")
        _put(h, "DPIXSIZE", self.pixel_size_mm, "[mm] pixel size")
        return h

    @classmethod
    def from_header(cls, header: Mapping) -> "Detector":
        """Inverse of `to_header`; missing ``DFPX``, ``DFPY``, ``DROT`` or ``DPIXSIZE`` cards give NaN.

        Raises
        ------
        KeyError
            ``DETID``, ``DETNAME`` or one of the bbox cards is missing.
        """
        g = header.get
        bbox = Box2I(*(int(header[k]) for k in cls.HEADER_KEYS[2:6]))
        return cls(id=header["DETID"], name=header["DETNAME"], bbox=bbox,
                   focal_plane_center=(g("DFPX"), g("DFPY")), rotation=g("DROT"),
                   pixel_size_mm=g("DPIXSIZE"))


_COMPONENTS = ("wcs", "psf", "photo_calib", "ap_corr_map", "visit_info", "detector", "background",
               "summary_stats")


class Exposure:
    """A `MaskedImage` with everything known about it.

    Parameters
    ----------
    masked_image : MaskedImage
    wcs : astropy.wcs.WCS, optional
        Maps parent-frame pixel coordinates (0-based, pixel centres at integers) to the sky.
    psf, photo_calib, ap_corr_map, background : optional
        Model components (persistable through `visitcal.core.persistence`).
    visit_info : VisitInfo, optional
    detector : Detector, optional
    summary_stats : dict or persistable object, optional
    metadata : astropy.io.fits.Header or mapping, optional
        Free-form header cards (a `fits.Header` is kept as is, another mapping is copied into one).
    """

    def __init__(self, masked_image: MaskedImage, *, wcs=None, psf=None, photo_calib=None, ap_corr_map=None,
                 visit_info: VisitInfo | None = None, detector: Detector | None = None, background=None,
                 summary_stats=None, metadata=None):
        if not isinstance(masked_image, MaskedImage):
            raise TypeError(f"masked_image must be a MaskedImage, got {type(masked_image).__name__}")
        self.masked_image = masked_image
        self.wcs, self.psf, self.photo_calib, self.ap_corr_map = wcs, psf, photo_calib, ap_corr_map
        self.visit_info, self.detector, self.background = visit_info, detector, background
        self.summary_stats, self.metadata = summary_stats, metadata

    @property
    def metadata(self) -> fits.Header:
        """Free-form FITS header cards, never None.

        Setting None gives an empty header; a `fits.Header` is stored as is (not copied); any other
        mapping is copied into a new header, keys longer than 8 characters as ``HIERARCH`` cards.
        """
        return self._metadata

    @metadata.setter
    def metadata(self, value) -> None:
        if value is None:
            self._metadata = fits.Header()
        elif isinstance(value, fits.Header):
            self._metadata = value
        else:
            header = fits.Header()
            for key, v in dict(value).items():
                header[key if len(key) <= 8 else "HIERARCH " + key] = v
            self._metadata = header

    @classmethod
    def from_arrays(cls, image, mask=None, variance=None, *, xy0=(0, 0), **components) -> "Exposure":
        """An exposure built from numpy arrays.

        Equivalent to ``Exposure(MaskedImage(image, mask, variance, xy0=xy0), **components)``.

        Parameters
        ----------
        image : array_like, 2-D ``(y, x)``
            Pixel values, converted to float32.
        mask : `Mask` or array_like of int, optional
            Zero mask with the standard planes when omitted.
        variance : array_like, 2-D, optional
            Per-pixel variance (image units squared); zeros when omitted.
        xy0 : (int, int)
            Parent-frame ``(x0, y0)`` of element ``[0, 0]``.
        **components
            Keyword arguments of `Exposure` (``wcs``, ``psf``, ``photo_calib``, ...).

        Raises
        ------
        ValueError
            The planes differ in shape or are not 2-D.
        TypeError
            A plane is not numeric, ``xy0`` is not two integers, or a component keyword is unknown.
        """
        return cls(MaskedImage(image, mask, variance, xy0=xy0), **components)

    image = property(lambda self: self.masked_image.image, doc="float32 (y, x) pixel values")
    mask = property(lambda self: self.masked_image.mask, doc="`Mask`")
    variance = property(lambda self: self.masked_image.variance, doc="float32 (y, x) variance")
    xy0 = property(lambda self: self.masked_image.xy0, doc="parent-frame (x0, y0) of element [0, 0]")
    bbox = property(lambda self: self.masked_image.bbox, doc="parent-frame `Box2I`")
    width = property(lambda self: self.masked_image.width, doc="Width ``nx`` in pixels (x, the fast axis).")
    height = property(lambda self: self.masked_image.height, doc="Height ``ny`` in pixels (y).")
    shape = property(lambda self: self.masked_image.shape, doc="``(ny, nx)``: shape of the pixel arrays.")

    def components(self) -> dict:
        """The components that are set, by attribute name."""
        return {k: getattr(self, k) for k in _COMPONENTS if getattr(self, k) is not None}

    def subimage(self, bbox: Box2I) -> "Exposure":
        """A view of the pixels in the parent-frame ``bbox``, sharing every component (the WCS, being in
        the parent frame, stays valid unchanged)."""
        return Exposure(self.masked_image.subimage(bbox), metadata=self.metadata, **self.components())

    __getitem__ = subimage

    def copy(self) -> "Exposure":
        """A deep copy (pixels and components)."""
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        comps = ", ".join(self.components()) or "none"
        return f"Exposure(shape={self.shape}, xy0={self.xy0}, components=[{comps}])"
