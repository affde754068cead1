"""Cosmic-ray detection and repair on a single image (LSST's ``RepairTask`` in pipe_tasks, with
meas_algorithms' ``FindCosmicRaysConfig`` and ``findCosmicRays``).

The finder is the SDSS *photo* / LSST ``CR.cc`` algorithm, written from their public descriptions;
the per-pixel work is C++ (``visitcal._core.find_cosmic_rays``). A pixel of value ``v``, background
``b`` and variance ``var`` is a cosmic-ray (CR) pixel when

1. ``v - b > min_sigma * sqrt(var)``;
2. no usable 8-neighbour is larger (a local maximum);
3. for at least one direction ``d`` (horizontal, vertical, the two diagonals) whose two neighbours
   are usable, ``thresh_d * (v - b - cond3_fac * sqrt(var)) > mean_d + cond3_fac * sigma_d``, with
   ``mean_d`` the background-subtracted mean of the two neighbours, ``sigma_d = sqrt(var_a + var_b) / 2``
   its noise, and ``thresh_d = cond3_fac2 * mean(P at the two unit offsets along d) / P(0, 0)``
   from the PSF kernel image ``P``: the pixel is sharper than any PSF-shaped source can be.

Each pixel found is at once replaced by its lowest direction mean so the rest of a track can be
found, in the same raster scan or in the next of ``niteration`` passes over the neighbours of new
finds. CR pixels are grouped into objects (8-connectivity); objects whose flux (sum of their
background-subtracted values) is below ``min_dn`` are dropped. The survivors are interpolated over
and grown: their neighbours are tested again with ``min_sigma / 2`` and ``cond3_fac = 0`` (the
PSF-ratio test of condition 3 stays, its noise margins go: our reading of how LSST's ``CR.cc`` grow
pass disables condition 3; without the PSF test a CR next to a star would take the star's core with it).

Conventions
-----------
* Arrays are ``(y, x)``, pixel centres at integers; table positions are parent-frame (``xy0`` added).
* *Usable* pixels are those not flagged in ``config.bad_mask_planes`` (BAD, SAT, NO_DATA): they
  are never CR candidates, never used as neighbours nor as interpolation ends, and may hold NaN.
  Every other pixel must have a finite value and a finite, positive variance (else ``ValueError``).
* Interpolation: per direction, linear interpolation between the nearest usable non-CR pixels on
  either side (at most 100 px away), weighted by the inverse gap length; the value is the weighted
  mean over the directions that have both ends, the variance the same mean of the ends' variances.
  A pixel with no such direction (image corners, edges along a CR, huge blobs) gets MEANCLIP of the
  usable pixels (3 sigma, 3 iterations from the median; its variance the mean variance kept).
* Mask: the CR plane is set on every CR pixel, with or without ``keep_crs``; nothing else (LSST's
  ``RepairTask`` sets CR only; INTRP stays for ISR's interpolations). Existing CR bits are kept.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import _core
from ..core.image import Exposure, MaskedImage

__all__ = [
    "FindCosmicRaysConfig",
    "FindCosmicRaysResult",
    "RepairConfig",
    "RepairResult",
    "RepairTask",
    "TooManyCosmicRaysError",
    "cond3_thresholds",
    "cosmic_ray_candidates",
    "find_cosmic_rays",
    "psf_kernel_image",
]

log = logging.getLogger(__name__)


class TooManyCosmicRaysError(RuntimeError):
    """More cosmic-ray pixels than ``n_cr_pixel_max`` (LSST's ``TooManyCosmicRays``).

    The image and variance are left as they were given and the mask is untouched.

    Attributes
    ----------
    n_pixels : int
        CR pixels found when the limit was checked (after pass 1, or after the grow pass).
    limit : int
        The ``n_cr_pixel_max`` in force.
    """

    def __init__(self, n_pixels: int, limit: int):
        super().__init__(int(n_pixels), int(limit))
        self.n_pixels = int(n_pixels)
        self.limit = int(limit)

    def __str__(self) -> str:
        return f"too many cosmic-ray pixels: {self.n_pixels} > n_cr_pixel_max = {self.limit}"

    def __reduce__(self):
        return (type(self), (self.n_pixels, self.limit))


class FindCosmicRaysConfig(BaseModel):
    """Configuration of the finder; mirrors the C++ ``FindCosmicRaysControl`` (LSST names in snake_case)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    min_sigma: float = Field(6.0, gt=0, description="Criterion 1: a CR pixel exceeds background + min_sigma * "
                                                    "sqrt(variance) (LSST minSigma).")
    min_dn: float = Field(150.0, description="Minimum flux of a CR object, sum of its background-subtracted "
                                             "pixel values, image units (LSST min_DN).")
    cond3_fac: float = Field(2.0, ge=0, description="Noise margin of criterion 3, in sigma.")
    cond3_fac2: float = Field(0.35, gt=0, description="Scale of the PSF neighbour/peak ratios of criterion 3.")
    niteration: int = Field(6, ge=1, le=100, description="Passes of the detection (and rings of the grow pass). At "
                                                         "most 100 passes.")
    n_cr_pixel_max: int = Field(1_000_000, ge=0, le=2**31 - 1, description="More CR pixels than this raises "
                                                              "TooManyCosmicRaysError (LSST nCrPixelMax). Within "
                                                              "int32 (the C++ count).")
    keep_crs: bool = Field(False, description="Mask CR pixels but leave their values (LSST keepCRs).")
    grow: bool = Field(True, description="Run the second pass growing each CR (min_sigma / 2, cond3_fac 0).")
    bad_mask_planes: tuple[str, ...] = Field(("BAD", "SAT", "NO_DATA"), description=(
        "Pixels with these planes are neither candidates, neighbours nor interpolation ends (visitcal)."))

    @field_validator("bad_mask_planes", mode="before")
    @classmethod
    def _planes(cls, v):
        return (v,) if isinstance(v, str) else tuple(v)

    def to_core(self) -> _core.FindCosmicRaysControl:
        """The finder settings as the compiled ``visitcal._core.FindCosmicRaysControl`` struct.

        ``bad_mask_planes`` is not part of it: `find_cosmic_rays` turns those names into a bitmask with
        the image's own mask planes.
        """
        ctrl = _core.FindCosmicRaysControl()
        for name in ("min_sigma", "min_dn", "cond3_fac", "cond3_fac2", "niteration", "n_cr_pixel_max",
                     "keep_crs", "grow"):
            setattr(ctrl, name, getattr(self, name))
        return ctrl


@dataclasses.dataclass(frozen=True)
class FindCosmicRaysResult:
    """What `find_cosmic_rays` found.

    Attributes
    ----------
    cosmic_rays : astropy.table.Table
        One row per CR object: ``id`` (1..n), bounding box ``min_x, min_y, max_x, max_y`` and
        ``peak_x, peak_y`` (parent frame, inclusive), ``npix``, ``flux`` and ``peak`` (original
        values minus background, image units).
    n_pixels : int
        CR pixels masked (after the ``min_dn`` filter and the grow pass).
    n_grown : int
        Of which added by the grow pass.
    n_rejected : int
        Pixels of candidate objects dropped by the ``min_dn`` filter (restored).
    n_fallback : int
        Pixels set to the MEANCLIP fallback; ``fallback_value`` is that value (NaN if unused).
    """

    cosmic_rays: Table
    n_pixels: int
    n_grown: int
    n_rejected: int
    n_fallback: int
    fallback_value: float

    @property
    def n_cr(self) -> int:
        """Number of CR objects."""
        return len(self.cosmic_rays)


def _psf_array(psf) -> np.ndarray:
    p = np.asarray(psf, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"psf image must be 2-D, got shape {p.shape}")
    if p.shape[0] < 3 or p.shape[1] < 3 or p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0:
        raise ValueError(f"psf image must have odd dimensions >= 3 (centred on its middle pixel), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("psf image has non-finite values")
    total = p.sum()
    if not total > 0:
        raise ValueError(f"psf image cannot be normalized: its sum is {total}")
    cy, cx = p.shape[0] // 2, p.shape[1] // 2
    core = p[cy - 1:cy + 2, cx - 1:cx + 2]
    if not p[cy, cx] > 0 or p[cy, cx] < core.max():
        raise ValueError("psf image must peak on its middle pixel (a kernel image, centred), "
                         f"got centre {p[cy, cx]} and 3x3 maximum {core.max()}")
    return p / total


def psf_kernel_image(psf, position: tuple[float, float] | None = None) -> np.ndarray:
    """A centred, unit-sum PSF kernel image from an array or a PSF object.

    Parameters
    ----------
    psf : array_like or object
        A 2-D odd-sized image centred on its middle pixel, or an object with
        ``compute_kernel_image(x, y)`` (visitcal PSF interface), evaluated at ``position``, else at
        its ``average_position`` if it has one.
    position : (float, float), optional
        Parent-frame ``(x, y)`` at which to evaluate a PSF object.
    """
    if hasattr(psf, "compute_kernel_image"):
        if position is None:
            if not hasattr(psf, "average_position"):
                raise ValueError("a position is needed for a PSF object without average_position")
            position = psf.average_position
        if callable(position):  # a method in visitcal.sim.psf.TruePsf, a property elsewhere
            position = position()
        psf = psf.compute_kernel_image(float(position[0]), float(position[1]))
    return _psf_array(psf)


def cond3_thresholds(psf, cond3_fac2: float = 0.35) -> np.ndarray:
    """The four criterion-3 thresholds (horizontal, vertical, diagonal (-1,-1)/(+1,+1),
    diagonal (+1,-1)/(-1,+1)) of a PSF kernel image, ``cond3_fac2`` included."""
    return np.array(_core.cond3_thresholds(_psf_array(psf), float(cond3_fac2)))


def _planes_of(masked_image):
    if isinstance(masked_image, Exposure):
        masked_image = masked_image.masked_image
    if not isinstance(masked_image, MaskedImage):
        raise TypeError("masked_image must be a visitcal.core.image.MaskedImage or Exposure (wrap arrays with "
                        f"MaskedImage(image, mask, variance)), got {type(masked_image).__name__}")
    if masked_image.image.size == 0:
        raise ValueError(f"masked_image is empty (shape {masked_image.shape})")
    return masked_image


def _int32(bits: int) -> int:
    return int(np.array([bits], dtype=np.uint32).view(np.int32)[0])


def _background(background, shape) -> tuple[float, np.ndarray | None]:
    if background is None:
        return 0.0, None
    if np.ndim(background) == 0:
        value = float(background)
        if not np.isfinite(value):
            raise ValueError(f"background must be finite, got {value}")
        return value, None
    b = np.asarray(background, dtype=np.float32)
    if b.shape != tuple(shape):
        raise ValueError(f"background image shape {b.shape} differs from the image shape {tuple(shape)}")
    if b.strides[1] != b.itemsize:
        b = np.ascontiguousarray(b)
    return 0.0, b


def _run_core(fn, *args):
    try:
        return fn(*args)
    except _core.TooManyCosmicRays as err:
        raise TooManyCosmicRaysError(err.args[1], err.args[2]) from None


def find_cosmic_rays(masked_image, psf, config: FindCosmicRaysConfig | None = None, *,
                     background=0.0) -> FindCosmicRaysResult:
    """Find cosmic rays, mask them CR and (unless ``config.keep_crs``) interpolate over them, in place.

    Parameters
    ----------
    masked_image : MaskedImage or Exposure
        float32 image and variance (image units, usually ADU or electrons, and their square), int32
        mask; modified in place. Normally background-subtracted already.
    psf : array_like or PSF object
        Kernel image (2-D, odd, centred on its middle pixel; normalized here) or an object with
        ``compute_kernel_image(x, y)``, evaluated at its ``average_position`` (or the image centre).
    config : FindCosmicRaysConfig, optional
    background : float or array_like, keyword-only
        The background level under each pixel: a scalar (LSST passes one) or a ``(y, x)`` image of
        the image's shape. 0 for a background-subtracted image.

    Returns
    -------
    FindCosmicRaysResult

    Raises
    ------
    TooManyCosmicRaysError
        More than ``config.n_cr_pixel_max`` CR pixels; nothing is modified.
    ValueError
        Empty image; NaN/inf pixel values or non-positive variance at usable pixels; a bad PSF
        image; a background of the wrong shape.

    Notes
    -----
    Releases the GIL. Deterministic: the same input gives the same bytes.
    """
    config = FindCosmicRaysConfig() if config is None else config
    mi = _planes_of(masked_image)
    if not isinstance(psf, np.ndarray) and hasattr(psf, "compute_kernel_image"):
        position = getattr(psf, "average_position", None)
        if callable(position):
            position = position()
        if position is None:
            bbox = mi.bbox
            position = (0.5 * (bbox.min_x + bbox.max_x), 0.5 * (bbox.min_y + bbox.max_y))
        kernel = psf_kernel_image(psf, position)
    else:
        kernel = _psf_array(psf)
    thresholds = _core.cond3_thresholds(kernel, float(config.cond3_fac2))
    level, bimage = _background(background, mi.shape)
    bad = _int32(mi.mask.get_plane_bitmask(*config.bad_mask_planes))
    cr = _int32(mi.mask.get_plane_bitmask("CR"))
    out = _run_core(_core.find_cosmic_rays, mi.image, mi.variance, mi.mask.array, level, bimage,
                    thresholds, config.to_core(), bad, cr)
    x0, y0 = mi.xy0
    table = Table()
    table["id"] = np.arange(1, len(out["npix"]) + 1, dtype=np.int64)
    for name, offset in (("min_x", x0), ("min_y", y0), ("max_x", x0), ("max_y", y0), ("peak_x", x0), ("peak_y", y0)):
        table[name] = out[name] + np.int32(offset)
    table["npix"] = out["npix"]
    table["flux"] = out["flux"]
    table["peak"] = out["peak"]
    return FindCosmicRaysResult(table, int(out["n_pixels"]), int(out["n_grown"]), int(out["n_rejected"]),
                                int(out["n_fallback"]), float(out["fallback_value"]))


def cosmic_ray_candidates(masked_image, psf, config: FindCosmicRaysConfig | None = None, *,
                          background=0.0) -> np.ndarray:
    """Boolean ``(y, x)`` map of the pixels passing criteria 1-3 on the image as given.

    The per-pixel test of `find_cosmic_rays` without replacement, iteration, grouping, ``min_dn``
    or growing; nothing is modified. For diagnostics and tests.
    """
    config = FindCosmicRaysConfig() if config is None else config
    mi = _planes_of(masked_image)
    thresholds = _core.cond3_thresholds(psf_kernel_image(psf) if hasattr(psf, "compute_kernel_image")
                                        else _psf_array(psf), float(config.cond3_fac2))
    level, bimage = _background(background, mi.shape)
    bad = _int32(mi.mask.get_plane_bitmask(*config.bad_mask_planes))
    return _core.cosmic_ray_candidates(mi.image, mi.variance, mi.mask.array, level, bimage, thresholds,
                                       float(config.min_sigma), float(config.cond3_fac), bad).astype(bool)


class RepairConfig(BaseModel):
    """Configuration of `RepairTask` (LSST ``RepairConfig`` in snake_case)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    do_interpolate: bool = Field(True, description="Interpolate over defects (only when defects are given; "
                                                   "none in reprocess).")
    do_cosmic_ray: bool = Field(True, description="Find and repair cosmic rays.")
    cosmicray: FindCosmicRaysConfig = Field(default_factory=FindCosmicRaysConfig,
                                            description="The cosmic-ray finder.")


@dataclasses.dataclass(frozen=True)
class RepairResult:
    """``cosmic_rays``: the finder's result, or None when ``do_cosmic_ray`` is off."""

    cosmic_rays: FindCosmicRaysResult | None


class RepairTask:
    """Repair an exposure in place: find, mask and interpolate over cosmic rays (LSST ``RepairTask``).

    Parameters
    ----------
    config : RepairConfig, optional
    """

    _DefaultName = "repair"
    ConfigClass = RepairConfig

    def __init__(self, config: RepairConfig | None = None):
        self.config = RepairConfig() if config is None else config

    def run(self, exposure, psf=None, *, defects=None, keep_crs: bool | None = None,
            background=0.0) -> RepairResult:
        """Repair ``exposure`` (an `Exposure` or `MaskedImage`) in place.

        Parameters
        ----------
        psf : array_like or PSF object, optional
            Kernel image or an object with ``compute_kernel_image(x, y)``; ``exposure.psf`` by default.
        defects : None
            Defect interpolation is not implemented yet; a non-empty value raises NotImplementedError.
        keep_crs : bool, optional
            Overrides ``config.cosmicray.keep_crs``.
        background : float or array_like
            Background level under the pixels (0 for a background-subtracted image, as in calibrate
            and reprocess).
        """
        if defects is not None and len(defects) and self.config.do_interpolate:
            raise NotImplementedError("RepairTask: defect interpolation is not implemented yet")
        if not self.config.do_cosmic_ray:
            return RepairResult(None)
        if psf is None:
            psf = getattr(exposure, "psf", None)
            if psf is None:
                raise ValueError("RepairTask.run: no psf given and the exposure has none")
        config = self.config.cosmicray
        if keep_crs is not None:
            config = config.model_copy(update={"keep_crs": bool(keep_crs)})
        result = find_cosmic_rays(exposure, psf, config, background=background)
        log.info("Identified %d cosmic rays (%d pixels).", result.n_cr, result.n_pixels)
        return RepairResult(result)

    def __repr__(self) -> str:
        return f"RepairTask(config={self.config!r})"
