"""Source detection: smooth, threshold, footprints with peaks, grow (LSST's ``SourceDetectionTask``
in meas_algorithms).

The image must already be background-subtracted (reprocessing subtracts the preliminary background
first; ``re_estimate_background`` is not done here). Steps, with LSST's defaults:

1. clear DETECTED and DETECTED_NEGATIVE;
2. sigma = the PSF's determinant radius at its average position (or the ``sigma`` argument);
3. correlate image and variance with a circular Gaussian of that sigma, width
   ``2 * int((7 sigma + 0.5) / 2) + 1`` (``n_sigma_for_kernel`` = 7); the variance is propagated exactly
   (convolved with the squared kernel);
4. mask EDGE where the kernel does not fit (the border of half that width);
5. threshold the smoothed image: ``pixel_stdev`` (the default) detects pixels above
   ``threshold_value * sqrt(smoothed variance)``; connected pixels (8-connectivity) form footprints,
   their local maxima the peaks (with ``significance = |value| / sigma``);
6. grow by ``int(n_sigma_to_grow * sigma + 0.5)`` px with a disc, merging footprints that touch, and set
   DETECTED (DETECTED_NEGATIVE for negative polarity).

Not reproduced: LSST's temporary local background (``doTempLocalBackground``, used only to re-find
peaks of multi-peak footprints) and the background re-estimation after detection; neither runs in
reprocessing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import _core
from .convolve import _as_image, convolve, gaussian_kernel_1d, gaussian_smooth
from ..core.footprint import FootprintSet
from ..core.geom import Box2I
from ..core.image import Exposure, MaskedImage, _to_int32

__all__ = [
    "DetectionResult",
    "SourceDetectionConfig",
    "SourceDetectionTask",
    "detect_footprints",
    "detection_kernel_half_width",
    "psf_sigma",
]

#: Pixels with these planes may hold non-finite values or non-positive variance; they are treated as
#: empty sky (value 0, median variance) by detection. Elsewhere such pixels are an error.
_MAY_BE_INVALID = ("NO_DATA", "BAD", "SAT")

#: Planes ignored by the "stdev" threshold's clipped standard deviation (as LSST's SourceDetectionTask).
_STDEV_IGNORED = ("BAD", "SAT", "EDGE", "NO_DATA")


class SourceDetectionConfig(BaseModel):
    """Configuration of `SourceDetectionTask` (LSST's SourceDetectionConfig, snake_case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold_value: float = Field(5.0, gt=0, description="Detection threshold, in units of sigma (or a raw value for 'value').")
    threshold_type: Literal["pixel_stdev", "stdev", "value", "pixel_rms"] = Field(
        "pixel_stdev", description="pixel_stdev: sigma = sqrt(variance of the smoothed image) per pixel (LSST default); "
        "stdev: sigma = clipped standard deviation of the smoothed image; value: threshold_value is in image units; "
        "pixel_rms: sigma = sqrt(unsmoothed variance) per pixel, as SExtractor's DETECT_THRESH in units of the "
        "background rms.")
    threshold_polarity: Literal["positive", "negative", "both"] = Field(
        "positive", description="Detect sources above the threshold, below its negative, or both.")
    include_threshold_multiplier: float = Field(
        1.0, gt=0, description="Peaks must exceed threshold_value times this; footprints without such a peak are dropped.")
    min_pixels: int = Field(1, ge=1, le=2**31 - 1, description="Footprints with fewer pixels before growing are "
                                                               "dropped. Within int32 (the C++ argument).")
    n_sigma_to_grow: float = Field(2.4, ge=0, le=50, description="Grow footprints by int(n_sigma_to_grow * sigma + "
                                                                 "0.5) px. At most 50: the growth disc is applied at "
                                                                 "every footprint edge pixel, so its area sizes the "
                                                                 "time (1e6 dilated every footprint to the whole "
                                                                 "detector).")
    isotropic_grow: bool = Field(True, description="Grow with a disc (the only stencil implemented).")
    combined_grow: bool = Field(True, description="Merge footprints whose grown pixels touch.")
    return_original_footprints: bool = Field(
        False, description="Return the footprints before growing (the mask is still set from the grown ones).")
    n_sigma_for_kernel: float = Field(7.0, gt=0, le=50, description="Smoothing-kernel width in sigma: "
                                                                    "2*int((n*sigma+0.5)/2)+1. At most 50: it sizes "
                                                                    "the smoothing kernel.")
    exclude_mask_planes: tuple[str, ...] = Field(
        (), description="Pixels with these planes are zeroed in the smoothed image, so never detected.")

    @field_validator("isotropic_grow")
    @classmethod
    def _isotropic_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError("only isotropic (disc) growth is implemented")
        return value


def detection_kernel_half_width(sigma: float, n_sigma_for_kernel: float = 7.0) -> int:
    """Half width in pixels of the smoothing kernel, ``int((n_sigma_for_kernel * sigma + 0.5) / 2)``.

    The kernel is ``2 * half_width + 1`` pixels wide, the width LSST's ``SourceDetectionTask`` uses.
    """
    return int((sigma * n_sigma_for_kernel + 0.5) / 2)


def psf_sigma(psf, bbox: Box2I | None = None) -> float:
    """The PSF's determinant radius ``(Ixx Iyy - Ixy^2)^(1/4)`` (px) at its average position.

    Accepts an object with ``compute_shape(x, y)`` returning either a shape with ``determinant_radius``
    or a tuple ``(ixx, iyy, ixy)``; the position is ``psf.average_position`` when present, else the
    centre of ``bbox``.
    """
    if hasattr(psf, "average_position"):
        pos = psf.average_position
        x, y = (pos() if callable(pos) else pos)
    elif bbox is not None:
        x, y = 0.5 * (bbox.min_x + bbox.max_x), 0.5 * (bbox.min_y + bbox.max_y)
    else:
        raise ValueError("psf_sigma needs the PSF's average position or an image bbox")
    shape = psf.compute_shape(x, y)
    if hasattr(shape, "determinant_radius"):
        r = shape.determinant_radius
        return float(r() if callable(r) else r)
    ixx, iyy, ixy = (float(v) for v in shape)
    det = ixx * iyy - ixy * ixy
    if not det > 0:
        raise ValueError(f"PSF shape ({ixx}, {iyy}, {ixy}) has a non-positive determinant")
    return det ** 0.25


@dataclasses.dataclass(frozen=True)
class DetectionResult:
    """What `SourceDetectionTask.run` returns (LSST's result names, snake_case).

    Attributes
    ----------
    sources : astropy.table.Table
        One row per footprint (positive first, then negative): ``id``, ``parent`` (0), ``is_negative``,
        ``n_peaks``, ``footprint_area``; row ``i`` belongs to ``footprints[i]``.
    footprints : list of `Footprint`
    positive, negative : `FootprintSet` or None
    num_pos, num_neg : int
    sigma : float
        The smoothing sigma used (px).
    factor : float
        Threshold multiplier applied (always 1.0; kept for LSST's result signature).
    """

    sources: Table
    footprints: list
    positive: FootprintSet | None
    negative: FootprintSet | None
    num_pos: int
    num_neg: int
    sigma: float
    factor: float = 1.0


def _clipped_std(values: np.ndarray, n_sigma: float = 3.0, n_iter: int = 3) -> float:
    v = values[np.isfinite(values)]
    if v.size == 0:
        raise ValueError("no usable pixels to estimate the standard deviation of the smoothed image")
    mean, std = float(np.median(v)), float(np.std(v))
    for _ in range(n_iter):
        keep = np.abs(v - mean) < n_sigma * std
        if not keep.any():
            break
        mean, std = float(v[keep].mean()), float(v[keep].std())
    return std


def _sanitize(mi: MaskedImage) -> tuple[np.ndarray, np.ndarray]:
    """Image and variance with masked invalid pixels replaced; unmasked invalid pixels raise."""
    image, variance = mi.image, mi.variance
    if image.size == 0:
        raise ValueError("cannot detect on an empty image")
    if variance.dtype != image.dtype:
        variance = variance.astype(image.dtype)
    n_invalid, _ = _core.count_invalid_pixels(np.ascontiguousarray(image), np.ascontiguousarray(variance))
    if n_invalid == 0:
        return image, variance
    bad = ~np.isfinite(image) | ~np.isfinite(variance) | ~(variance > 0)
    allowed = mi.mask.test([p for p in _MAY_BE_INVALID if p in mi.mask.planes])
    unmasked = bad & ~allowed
    if unmasked.any():
        y, x = (int(v[0]) for v in np.nonzero(unmasked))
        x0, y0 = mi.xy0
        raise ValueError(f"{int(unmasked.sum())} pixels have a non-finite value or a non-positive variance without a "
                         f"{'/'.join(_MAY_BE_INVALID)} mask (first at x={x + x0}, y={y + y0}); mask or fix them")
    good_var = variance[~bad]
    if good_var.size == 0:
        raise ValueError("every pixel is masked invalid (NO_DATA/BAD/SAT with no usable value): nothing to detect on")
    image = np.where(bad, 0, image).astype(mi.image.dtype)
    variance = np.where(bad, np.median(good_var), variance).astype(mi.variance.dtype)
    return image, variance


def detect_footprints(masked_image: MaskedImage, sigma: float, config: SourceDetectionConfig | None = None, *,
                      do_smooth: bool = True, clear_mask: bool = True,
                      smoothing_kernel=None) -> tuple[FootprintSet | None, FootprintSet | None]:
    """Steps 1 and 3-6 of the module docstring on ``masked_image`` (its mask is updated in place).

    Parameters
    ----------
    masked_image : `MaskedImage`
        Background-subtracted.
    sigma : float
        PSF sigma, px: sets the Gaussian smoothing kernel and the growth radius.
    config : `SourceDetectionConfig`, optional
    do_smooth : bool
        Smooth first (otherwise threshold the image itself; no EDGE border).
    clear_mask : bool
        Clear DETECTED / DETECTED_NEGATIVE first.
    smoothing_kernel : array_like, optional
        An odd 2-D kernel to correlate with in place of the Gaussian (e.g. SExtractor's 3x3 filter);
        it is normalized to unit sum, and the variance is propagated with its square.

    Returns
    -------
    positive, negative : `FootprintSet` or None
        None for a polarity not asked for; coordinates in the parent frame of ``masked_image``.
    """
    config = config or SourceDetectionConfig()
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    mask = masked_image.mask
    if clear_mask:
        mask.clear(["DETECTED", "DETECTED_NEGATIVE"])
    image, variance = _sanitize(masked_image)
    polarities = {"positive": (1,), "negative": (-1,), "both": (1, -1)}[config.threshold_polarity]
    ny, nx = image.shape
    gaussian = do_smooth and smoothing_kernel is None
    if gaussian:
        h = detection_kernel_half_width(sigma, config.n_sigma_for_kernel)
        if 2 * h + 1 > min(nx, ny):
            raise ValueError(f"the detection kernel ({2 * h + 1} px for sigma={sigma:.3g}) is larger than the "
                             f"image ({nx} x {ny})")
    if gaussian and config.threshold_type != "stdev" and not config.exclude_mask_planes:
        # The usual case in one C++ pass over bands of rows, without the two smoothed planes (130 MB for
        # a 4k detector in float32); the same footprints, to the last bit, as the general path below.
        img = _as_image(image, "image")
        var = _as_image(variance, "variance").astype(img.dtype, copy=False)
        noise = {"pixel_stdev": "smoothed_variance", "pixel_rms": "variance", "value": "constant"}[config.threshold_type]
        raws = _core.find_footprints_smoothed(img, var, gaussian_kernel_1d(sigma, h), noise, config.threshold_value,
                                              list(polarities), config.include_threshold_multiplier,
                                              config.min_pixels, 1.0)
        _mask_edge(mask, h, h)
        return _footprint_sets(masked_image, dict(zip(polarities, raws)), sigma, config)
    if do_smooth:
        if gaussian:
            conv = gaussian_smooth(image, sigma, variance=variance, half_width=h)
        else:
            k = np.asarray(smoothing_kernel, dtype=np.float64)
            if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0 or not np.isfinite(k).all() or k.sum() <= 0:
                raise ValueError(f"smoothing_kernel must be a finite 2-D array of odd sizes with a positive sum, "
                                 f"got shape {k.shape}")
            if k.shape[0] > ny or k.shape[1] > nx:
                raise ValueError(f"smoothing_kernel {k.shape} is larger than the image {image.shape}")
            # Correlation, as LSST's detection: flip the kernel for convolve().
            conv = convolve(image, (k / k.sum())[::-1, ::-1], variance=variance)
        smoothed, smoothed_var = conv.image, conv.variance
        hx, hy = conv.border
        _mask_edge(mask, hx, hy)
    else:
        smoothed, smoothed_var, hx, hy = image, variance, 0, 0
    if config.exclude_mask_planes:
        excluded = mask.test(list(config.exclude_mask_planes))
        if excluded.any():
            smoothed = np.where(excluded, 0, smoothed).astype(smoothed.dtype)
    noise, constant = None, 1.0
    if config.threshold_type == "pixel_stdev":
        noise = smoothed_var
    elif config.threshold_type == "pixel_rms":
        noise = variance.astype(smoothed.dtype, copy=False)
    elif config.threshold_type == "stdev":
        usable = ~mask.test([p for p in _STDEV_IGNORED if p in mask.planes])
        usable[:hy, :] = usable[smoothed.shape[0] - hy:, :] = False
        usable[:, :hx] = usable[:, smoothed.shape[1] - hx:] = False
        constant = _clipped_std(smoothed[usable])
    raws = {pol: _core.find_footprints(smoothed, noise, hx, hy, config.threshold_value, pol,
                                       config.include_threshold_multiplier, config.min_pixels, constant)
            for pol in polarities}
    return _footprint_sets(masked_image, raws, sigma, config)


def _mask_edge(mask, hx: int, hy: int) -> None:
    """Set EDGE on the border of ``hx`` columns and ``hy`` rows the smoothing kernel does not reach."""
    ny, nx = mask.array.shape
    edge = _to_int32(mask.get_plane_bitmask("EDGE"))
    arr = mask.array
    arr[:hy, :] |= edge
    arr[ny - hy:, :] |= edge
    arr[:, :hx] |= edge
    arr[:, nx - hx:] |= edge


def _footprint_sets(masked_image: MaskedImage, raws: dict, sigma: float,
                    config: SourceDetectionConfig) -> tuple[FootprintSet | None, FootprintSet | None]:
    """The core's footprints per polarity (+1 first) as FootprintSets: peaks numbered from 1 across the
    polarities, grown, DETECTED / DETECTED_NEGATIVE set on the mask."""
    bbox = Box2I.from_shape(masked_image.image.shape, masked_image.xy0)
    radius = int(config.n_sigma_to_grow * sigma + 0.5)
    sets: dict[int, FootprintSet] = {}
    next_peak_id = 1
    for pol, raw in raws.items():
        found = FootprintSet._from_core(raw, bbox, shift=tuple(masked_image.xy0), first_peak_id=next_peak_id)
        next_peak_id += len(found.peaks)
        grown = found.grown(radius, combined=config.combined_grow) if radius > 0 else found
        grown.set_mask(masked_image.mask, "DETECTED" if pol > 0 else "DETECTED_NEGATIVE")
        sets[pol] = found if config.return_original_footprints else grown
    return sets.get(1), sets.get(-1)


class SourceDetectionTask:
    """Detect sources on a background-subtracted exposure (LSST's SourceDetectionTask).

    Parameters
    ----------
    config : `SourceDetectionConfig`, optional
    """

    ConfigClass = SourceDetectionConfig
    _DefaultName = "detection"

    def __init__(self, config: SourceDetectionConfig | None = None):
        self.config = config or SourceDetectionConfig()

    def run(self, exposure: Exposure, *, do_smooth: bool = True, sigma: float | None = None,
            clear_mask: bool = True, id_start: int = 1) -> DetectionResult:
        """Detect on ``exposure`` (mask updated in place: DETECTED, DETECTED_NEGATIVE, EDGE).

        Parameters
        ----------
        exposure : `Exposure`
            Background-subtracted.
        do_smooth : bool
            Smooth with the PSF-sized Gaussian first (LSST default True).
        sigma : float, optional
            Gaussian sigma, px; default: the exposure PSF's determinant radius (`psf_sigma`).
        clear_mask : bool
            Clear DETECTED / DETECTED_NEGATIVE first.
        id_start : int
            Source id of the first footprint; ids are consecutive.
        """
        mi = exposure.masked_image
        if sigma is None:
            if exposure.psf is None:
                raise ValueError("detection needs a sigma: the exposure has no PSF and none was given")
            sigma = psf_sigma(exposure.psf, Box2I.from_shape(mi.image.shape, mi.xy0))
        positive, negative = detect_footprints(mi, float(sigma), self.config, do_smooth=do_smooth,
                                               clear_mask=clear_mask)
        footprints = (list(positive) if positive is not None else []) + (list(negative) if negative is not None else [])
        num_pos = len(positive) if positive is not None else 0
        num_neg = len(negative) if negative is not None else 0
        n = num_pos + num_neg
        sources = Table()
        sources["id"] = np.arange(id_start, id_start + n, dtype=np.int64)
        sources["parent"] = np.zeros(n, dtype=np.int64)
        sources["is_negative"] = np.arange(n) >= num_pos
        n_peaks = [s.n_peaks for s in (positive, negative) if s is not None]
        areas = [s.areas for s in (positive, negative) if s is not None]
        sources["n_peaks"] = np.concatenate(n_peaks).astype(np.int32) if n_peaks else np.zeros(0, np.int32)
        sources["footprint_area"] = np.concatenate(areas).astype(np.int32) if areas else np.zeros(0, np.int32)
        return DetectionResult(sources=sources, footprints=footprints, positive=positive, negative=negative,
                               num_pos=num_pos, num_neg=num_neg, sigma=float(sigma))
