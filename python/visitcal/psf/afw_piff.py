"""LSST's ``PiffPsf`` (meas_extensions_piff) from an afw archive, wrapped in visitcal's PSF interface.

The archive's ``PiffPsf`` table holds one byte column, ``bytes``: a Python pickle of ``(width, height,
piff_psf)``, the stamp size of the PSF's images (px) and a ``piff.PSF``. **Loading a pickle runs code**
chosen by whoever wrote the file, so `read_piff_psf` refuses unless it is called with ``trust_pickle=True``;
pass that only for files you trust. Unpickling needs piff, galsim and numpy (``pip install piff``),
optional dependencies imported only then.

What LSST's ``PiffPsf.computeImage(x, y)`` returns was established against its own outputs (the 25 x 25
``psfIm_*.fits`` images written with the fixture ``exp.fits``), not from its code: ``piff_psf.draw(x, y,
stamp_size=width)`` (the profile centred at (x, y), drawn on the ``width`` x ``height`` stamp whose middle
pixel holds (x, y)) divided by its sum; the stamps' origin (their ``CRVAL1A/CRVAL2A`` cards) is ``(round(x)
- width // 2, round(y) - height // 2)``, and a NaN position means the PSF's average position, the mean
image position of the stars piff was fitted on. Agreement: 4e-16 of the peak at (0, 0), (10, 100) and
(-200, 30), and at the average position (46.699, 107.484), where piff's own draw sums to 1 - 4.6e-5 and the
normalisation matters.

A pickle written by an older piff may lack attributes that piff 1.7 expects (``_num``, ``_fit_flux``,
``solver``...): they are filled with the defaults of an object built from the same ``kwargs`` (logged).

The module lives in the ``psf`` layer (the wrapper is a `visitcal.psf.models.Psf`, and ``io`` sits below
``psf``); its reader follows the ``read_<thing>(archive, object_id)`` convention of `visitcal.io.afw`.
"""

from __future__ import annotations

import inspect
import logging
import math
import pickle
import threading

import numpy as np

from ..core.geom import Box2I
from ..io import FitsReadError
from ..io.afw_archive import AfwArchive
from .models import Psf, _position

__all__ = ["PiffPsfWrapper", "read_piff_psf"]

_log = logging.getLogger(__name__)


def _import_piff():
    try:
        import galsim
        import piff
    except ImportError as err:
        raise ImportError("reading an LSST PiffPsf needs piff and galsim (optional dependencies of visitcal): "
                          "pip install piff") from err
    return piff, galsim


def _fresh_twin(obj, **extra):
    """An object of ``type(obj)`` built from ``obj.kwargs`` (the arguments piff keeps for serialisation)."""
    params = inspect.signature(type(obj).__init__).parameters
    kwargs = {k: v for k, v in (getattr(obj, "kwargs", None) or {}).items() if k in params}
    kwargs.update(extra)
    return type(obj)(**kwargs)


def _upgrade_old_pickle(psf) -> list[str]:
    """Give a SimplePSF unpickled from an older piff the attributes today's piff expects; returns the names
    added (``"model._fit_flux"``...)."""
    added = []
    parts = {"model": getattr(psf, "model", None), "interp": getattr(psf, "interp", None),
             "outliers": getattr(psf, "outliers", None)}
    twins = {}
    for name, part in parts.items():
        if part is None:
            continue
        try:
            twins[name] = _fresh_twin(part)
        except Exception as err:  # noqa: BLE001 - an unknown class: leave it as pickled
            _log.debug("piff %s %s not rebuilt from its kwargs: %s", name, type(part).__name__, err)
            continue
        for key, value in vars(twins[name]).items():
            if key not in vars(part):
                setattr(part, key, value)
                added.append(f"{name}.{key}")
    if "model" in twins and "interp" in twins and type(psf).__name__ == "SimplePSF":
        try:
            twin = type(psf)(twins["model"], twins["interp"])
        except Exception as err:  # noqa: BLE001
            _log.debug("piff SimplePSF not rebuilt: %s", err)
        else:
            for key, value in vars(twin).items():
                if key not in vars(psf) and key not in ("model", "interp"):
                    setattr(psf, key, value)
                    added.append(key)
    if not hasattr(psf, "_num") or (hasattr(psf, "model") and not hasattr(psf.model, "_num")):
        psf.set_num(None)
    return added


class PiffPsfWrapper(Psf):
    """A ``piff.PSF`` in visitcal's PSF interface, drawing as LSST's ``PiffPsf`` does.

    Parameters
    ----------
    piff_psf : ``piff.PSF``
        The model; positions are the exposure's parent-frame pixels (0-based, centres at integers).
    width, height : int
        The stamp size of the images (px); LSST stores them beside the model.
    chipnum : int, optional
        The chip of a multi-chip piff model; default: its only chip.
    average_position : (float, float), optional
        Default: the mean image position of the stars the model was fitted on.
    pickled : bytes, optional
        The pickle it came from (used to pickle the wrapper again).

    Notes
    -----
    ``compute_image(x, y)``: ``piff_psf.draw`` of the profile centred at (x, y) on the stamp
    `compute_image_bbox` (middle pixel ``floor(x + 0.5), floor(y + 0.5)``), divided by its sum.
    ``compute_kernel_image(x, y)``: the profile of position (x, y) centred on the stamp's middle pixel, unit sum.
    `compute_shape` and `compute_aperture_flux` measure the kernel image (the `Psf` defaults). The piff model
    is called under a lock (piff caches state while drawing).
    """

    def __init__(self, piff_psf, width: int, height: int, *, chipnum=None, average_position=None,
                 pickled: bytes | None = None):
        _, galsim = _import_piff()
        self._galsim = galsim
        self.piff_psf = piff_psf
        self.width, self.height = int(width), int(height)
        if self.width < 1 or self.height < 1:
            raise ValueError(f"stamp size must be positive, got {width} x {height}")
        chips = list(getattr(piff_psf, "wcs", {}) or {})
        if chipnum is None and len(chips) > 1:
            raise ValueError(f"the piff model covers chips {chips}: say which with chipnum")
        self.chipnum = chipnum if chipnum is not None else (chips[0] if chips else None)
        if average_position is None:
            stars = getattr(piff_psf, "stars", None) or []
            pos = [(s.image_pos.x, s.image_pos.y) for s in stars]
            if not pos:
                raise ValueError("the piff model holds no stars: give average_position")
            average_position = tuple(float(v) for v in np.mean(np.array(pos), axis=0))
        self._average = (float(average_position[0]), float(average_position[1]))
        self._pickled = pickled
        self._lock = threading.Lock()

    @property
    def average_position(self) -> tuple[float, float]:
        """The mean image position of the model's stars (unless given), px."""
        return self._average

    def compute_image_bbox(self, x: float, y: float) -> Box2I:
        """The ``width`` x ``height`` stamp whose middle pixel holds (x, y)."""
        x, y = _position(x, y)
        ix, iy = math.floor(x + 0.5), math.floor(y + 0.5)
        x0, y0 = ix - self.width // 2, iy - self.height // 2
        return Box2I(x0, y0, x0 + self.width - 1, y0 + self.height - 1)

    def _draw(self, x, y, box: Box2I, center) -> np.ndarray:
        g = self._galsim
        image = g.ImageD(g.BoundsI(box.min_x, box.max_x, box.min_y, box.max_y))
        with self._lock:
            self.piff_psf.draw(x, y, chipnum=self.chipnum, image=image, center=center)
        arr = np.array(image.array, dtype=np.float64)
        total = arr.sum()
        if not (np.isfinite(total) and total > 0):
            raise ValueError(f"the piff model draws a stamp of sum {total} at ({x}, {y})")
        return arr / total

    def compute_image(self, x: float, y: float) -> np.ndarray:
        """Unit-sum image (height, width), (y, x), of the PSF at (x, y) centred there, on `compute_image_bbox`."""
        x, y = _position(x, y)
        return self._draw(x, y, self.compute_image_bbox(x, y), None)

    def compute_kernel_image(self, x: float, y: float) -> np.ndarray:
        """Unit-sum image of the PSF at (x, y) centred on the stamp's middle pixel."""
        x, y = _position(x, y)
        box = Box2I(-(self.width // 2), -(self.height // 2), self.width - 1 - self.width // 2,
                    self.height - 1 - self.height // 2)
        g = self._galsim
        image = g.ImageD(g.BoundsI(box.min_x, box.max_x, box.min_y, box.max_y))
        with self._lock:
            self.piff_psf.draw(x, y, chipnum=self.chipnum, image=image, center=(0.0, 0.0))
        arr = np.array(image.array, dtype=np.float64)
        return arr / arr.sum()

    def __reduce__(self):
        if self._pickled is None:
            raise pickle.PicklingError("a PiffPsfWrapper not read from a file cannot be pickled")
        return (_from_pickle, (self._pickled, self.chipnum, self._average))

    def __repr__(self) -> str:
        return (f"PiffPsfWrapper({type(self.piff_psf).__name__}, {self.width}x{self.height}, "
                f"average_position={self._average})")


def _from_pickle(data: bytes, chipnum, average_position):
    return _unpickle(data, "pickle", chipnum=chipnum, average_position=average_position)


def _unpickle(data: bytes, where: str, **kwargs) -> PiffPsfWrapper:
    piff, _ = _import_piff()
    try:
        obj = pickle.loads(data)  # noqa: S301 - the caller said trust_pickle=True
    except Exception as err:  # noqa: BLE001 - any failure of foreign bytes is a read error
        raise FitsReadError(f"{where}: the PiffPsf pickle does not load: {type(err).__name__}: {err}") from None
    if not (isinstance(obj, tuple) and len(obj) == 3 and isinstance(obj[2], piff.PSF)):
        raise FitsReadError(f"{where}: the PiffPsf pickle holds {type(obj).__name__}, not (width, height, piff.PSF)")
    width, height, psf = obj
    added = _upgrade_old_pickle(psf)
    if added:
        _log.info("%s: piff model pickled by an older piff; filled in %s", where, ", ".join(added))
    return PiffPsfWrapper(psf, int(width), int(height), pickled=data, **kwargs)


def read_piff_psf(archive: AfwArchive, object_id: int, *, trust_pickle: bool = False) -> PiffPsfWrapper:
    """Read LSST's ``PiffPsf`` (a pickled piff model) from the archive.

    Parameters
    ----------
    archive : `visitcal.io.afw_archive.AfwArchive`
    object_id : int
        The object's archive id (a file's ``ARCHIVE_ID_PSF``).
    trust_pickle : bool
        Must be True: the model is a Python pickle, and loading a pickle runs code the file's writer chose.

    Returns
    -------
    psf : `PiffPsfWrapper`

    Raises
    ------
    PermissionError
        ``trust_pickle`` is not True.
    ImportError
        piff or galsim is not installed.
    FitsReadError
        No such object, not a PiffPsf, or a pickle that does not load into ``(width, height, piff.PSF)``.
    """
    where = f"{archive.path}: archive object {object_id}"
    name = archive.class_of(object_id)
    if name != "PiffPsf":
        raise FitsReadError(f"{where} is a {name}, not a PiffPsf", path=archive.path, hdu="ARCHIVE_INDEX")
    if trust_pickle is not True:
        raise PermissionError(f"{where}: a PiffPsf is stored as a Python pickle, and loading a pickle runs code "
                              "chosen by whoever wrote the file; pass trust_pickle=True only for files you trust")
    table = archive.catalogs(object_id)[0]
    if len(table) != 1 or "bytes" not in table.colnames:
        raise FitsReadError(f"{where} (PiffPsf): expected one row with a 'bytes' column, got {len(table)} rows, "
                            f"columns {table.colnames}", path=archive.path, hdu="ARCHIVE_DATA")
    value = table["bytes"][0]
    data = value if isinstance(value, bytes) else np.asarray(value).astype(np.uint8).tobytes()
    try:
        return _unpickle(data, where)
    except FitsReadError as err:
        raise FitsReadError(str(err), path=archive.path, hdu="ARCHIVE_DATA") from None


def _register() -> None:
    """Add `read_piff_psf` to the afw component readers (`visitcal.io.afw.COMPONENT_READERS`), so that
    `visitcal.io.read_lsst_calexp` reads a PiffPsf once `visitcal.psf` is imported."""
    from ..io.afw import COMPONENT_READERS

    COMPONENT_READERS.setdefault("PiffPsf", read_piff_psf)


_register()
