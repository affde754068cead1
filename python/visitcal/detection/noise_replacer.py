"""Replace sources by noise while measuring (LSST's ``NoiseReplacer`` in meas_base).

Measuring one source of a crowded image with its neighbours present biases its fluxes and shapes. The
noise replacer therefore fills every top-level footprint with Gaussian noise, then, source by source,
puts back that source's pixels (its parent footprint's, or a deblended child's heavy footprint),
measures, and puts the noise back. `NoiseReplacer.end` (or leaving the ``with`` block) restores the
original image bit for bit. Only the image plane changes; mask and variance are untouched.

The noise is ``N(mean, sigma)`` with ``mean`` and ``sigma`` the image-wide clipped mean and standard
deviation (afw MEANCLIP / STDEVCLIP, 3 sigma, 3 passes; `noise_statistics`) plus ``noise_offset``,
drawn from MT19937 seeded with ``exposure_id * noise_seed_multiplier`` (``noise_seed_multiplier`` when
no id is given, as in FinalizeCharacterization and ReprocessVisitImage). The Gaussian transform is
visitcal's own portable code, so the noise bytes are the same on every platform; they are not LSST's
(afw draws with GSL over each footprint's bounding box), only their distribution is.

The measurement driver uses the C++ class directly; this module is for Python callers and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import _core
from ..core.arguments import checked_int, checked_step
from ..core.footprint import Footprint, FootprintSet, HeavyFootprint
from ..core.image import Exposure, MaskedImage

__all__ = ["NoiseReplacer", "NoiseReplacerConfig", "noise_seed", "noise_statistics"]


class NoiseReplacerConfig(BaseModel):
    """Configuration of `NoiseReplacer` (LSST's NoiseReplacerConfig, snake_case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    noise_source: Literal["measure"] = Field(
        "measure", description="How to choose the noise mean and sigma: 'measure' = the image-wide clipped mean "
        "and standard deviation (LSST's default; its 'meta' and 'variance' choices are not implemented).")
    noise_offset: float = Field(0.0, description="Added to the measured mean of the noise (image units).")
    statistics_sample_step: int = Field(
        2, ge=1, le=1024, description="The clipped mean and sigma are measured on the pixels whose x and y are "
        "multiples of "
        "this step (a regular lattice of 1/step^2 of the image; LSST uses every pixel, i.e. 1). On a 4k x 4k "
        "detector 2 leaves 4 million pixels, which fix sigma to ~5e-4 of itself, and takes 0.04 s instead of 0.16 s. "
        "At most 1024 px.")
    noise_seed_multiplier: int = Field(
        1, ge=1, le=2**31 - 1, description="The RNG seed is exposure_id * noise_seed_multiplier, or "
        "noise_seed_multiplier without "
        "an exposure id (LSST's 0 = unseeded is not allowed: results must be reproducible). Within int32.")


def _masked_image(image) -> MaskedImage:
    if isinstance(image, Exposure):
        return image.masked_image
    if isinstance(image, MaskedImage):
        return image
    raise TypeError(f"expected an Exposure or MaskedImage, got {type(image).__name__}")


#: The most clipping passes of the clipped statistics (afw's default is 3; each pass reads every sampled pixel).
MAX_CLIP_ITERATIONS = 1000


def noise_statistics(image, *, ignored_mask_planes: Sequence[str] = (), n_sigma_clip: float = 3.0,
                     n_iter: int = 3, sample_step: int = 1) -> tuple[float, float]:
    """Image-wide clipped mean and standard deviation (afw MEANCLIP / STDEVCLIP).

    Parameters
    ----------
    image : `Exposure`, `MaskedImage` or 2-D float32 array
    ignored_mask_planes : sequence of str, keyword-only
        Pixels with any of these planes are left out (needs an `Exposure` / `MaskedImage`). LSST uses
        none (it measures the image plane alone, relying on the clipping); ``("DETECTED",
        "DETECTED_NEGATIVE", "BAD", "SAT", "NO_DATA", "EDGE")`` leaves out sources and bad pixels.
    n_sigma_clip, n_iter : keyword-only
        Clipping half-width (sigma) and number of passes (afw's StatisticsControl defaults).
    sample_step : int, keyword-only
        Use only the pixels (x, y) with x and y multiples of this step (1: all of them, as afw).

    Returns
    -------
    mean, stdev : float
        In image units. Start: the median with sigma = 0.7413 IQR (numpy-"linear" quartiles); each pass
        keeps ``|x - mean| <= n_sigma_clip * sigma`` and recomputes the mean and the unbiased (n - 1)
        standard deviation. Non-finite pixels never count. NaN when no pixel is usable.
    """
    if isinstance(image, (Exposure, MaskedImage)):
        mi = _masked_image(image)
        arr, mask = mi.image, mi.mask
    else:
        arr, mask = np.asarray(image), None
        if ignored_mask_planes:
            raise ValueError("ignored_mask_planes needs an Exposure or MaskedImage (a bare array has no mask)")
    if arr.ndim != 2:
        raise ValueError(f"image must be 2-D (y, x), got shape {arr.shape}")
    n_iter = checked_int(n_iter, "n_iter", 0, MAX_CLIP_ITERATIONS)
    if not (np.isfinite(n_sigma_clip) and n_sigma_clip > 0):
        raise ValueError(f"n_sigma_clip must be a finite number > 0, got {n_sigma_clip!r}")
    sample_step = checked_step(sample_step)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if ignored_mask_planes:
        bits = mask.get_plane_bitmask(*ignored_mask_planes)
        mean, std, _, _ = _core.clipped_mean_stdev(arr, np.ascontiguousarray(mask.array), bits, float(n_sigma_clip),
                                                   int(n_iter), int(sample_step))
    else:
        mean, std, _, _ = _core.clipped_mean_stdev(arr, None, 0, float(n_sigma_clip), int(n_iter), int(sample_step))
    return float(mean), float(std)


def noise_seed(exposure_id: int | None, config: NoiseReplacerConfig | None = None) -> int:
    """The RNG seed: ``exposure_id * noise_seed_multiplier``, or the multiplier when the id is None or 0."""
    mult = (config or NoiseReplacerConfig()).noise_seed_multiplier
    if exposure_id is None or exposure_id == 0:
        return mult
    seed = int(exposure_id) * mult
    if not 0 < seed < 2**64:
        raise ValueError(f"seed exposure_id * noise_seed_multiplier = {seed} must lie in [1, 2**64)")
    return seed


def _flat(footprints) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(footprints, FootprintSet):
        return np.ascontiguousarray(footprints.spans), np.ascontiguousarray(footprints.span_offsets)
    fps = list(footprints)
    for i, fp in enumerate(fps):
        if not isinstance(fp, Footprint):
            raise TypeError(f"footprints[{i}] is a {type(fp).__name__}, not a Footprint")
    spans = np.concatenate([fp.spans for fp in fps]) if fps else np.zeros((0, 3), np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(fp.spans) for fp in fps])]).astype(np.int64)
    return np.ascontiguousarray(spans, dtype=np.int32), offsets


class NoiseReplacer:
    """Replace footprints by noise in an image for the duration of a measurement.

    Parameters
    ----------
    image : `Exposure` or `MaskedImage`
        Its image plane (float32, writeable) is modified in place until `end`.
    footprints : `FootprintSet` or sequence of `Footprint`
        The top-level (parent) footprints, parent frame; index ``k`` below refers to this order.
    config : `NoiseReplacerConfig`, keyword-only
    exposure_id : int, keyword-only
        Seeds the RNG (`noise_seed`).
    noise_mean_var : (float, float), keyword-only
        Use this mean and variance instead of measuring them (LSST's ``noiseMeanVar``).

    Notes
    -----
    Use as a context manager; the image is restored on leaving the block, even after an exception::

        with NoiseReplacer(exposure, footprints, exposure_id=catalog_id) as nr:
            for k in range(len(footprints)):
                nr.insert_source(k)
                ...  # measure source k
                nr.remove_source(k)

    Not thread-safe (it modifies one image); not picklable (it holds a view of that image).
    """

    def __init__(self, image, footprints, *, config: NoiseReplacerConfig | None = None,
                 exposure_id: int | None = None, noise_mean_var: tuple[float, float] | None = None):
        self.config = config or NoiseReplacerConfig()
        mi = _masked_image(image)
        if mi.image.dtype != np.float32 or not mi.image.flags.writeable or mi.image.strides[1] != 4:
            raise ValueError("the image plane must be a writeable float32 array contiguous along x")
        if noise_mean_var is not None:
            mean, var = (float(v) for v in noise_mean_var)
            if not var >= 0:
                raise ValueError(f"noise_mean_var variance must be >= 0, got {var}")
            std = var ** 0.5
        else:
            mean, std = noise_statistics(mi)
            mean += self.config.noise_offset
        if not (np.isfinite(mean) and np.isfinite(std)):
            raise ValueError(f"noise mean / sigma are not finite ({mean}, {std}): the image has no usable pixels")
        self._image = mi
        self._spans, self._offsets = _flat(footprints)
        self.seed = noise_seed(exposure_id, self.config)
        x0, y0 = mi.xy0
        self._core = _core.NoiseReplacer(mi.image, self._spans, self._offsets, mean, std, self.seed, x0, y0)

    @property
    def noise_mean(self) -> float:
        """Mean of the noise (image units; LSST's ``noiseGenMean``)."""
        return self._core.mean

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise (image units; LSST's ``noiseGenStd``)."""
        return self._core.sigma

    @property
    def ended(self) -> bool:
        """Whether `end` has run (the original image is restored and the replacer is spent)."""
        return self._core.ended

    def __len__(self) -> int:
        return len(self._core)

    def insert_source(self, k: int) -> None:
        """Put footprint ``k``'s original pixels back."""
        self._core.insert(self._index(k))

    def remove_source(self, k: int) -> None:
        """Put footprint ``k``'s noise back."""
        self._core.remove(self._index(k))

    def insert_heavy(self, heavy: HeavyFootprint) -> None:
        """Write a heavy footprint's image values (e.g. a deblended child's), which must lie inside the
        replaced footprints."""
        if not isinstance(heavy, HeavyFootprint):
            raise TypeError(f"heavy must be a HeavyFootprint, got {type(heavy).__name__}")
        self._core.insert_heavy(heavy.spans, np.ascontiguousarray(heavy.image, dtype=np.float32))

    def remove_heavy(self, footprint: Footprint) -> None:
        """Restore the noise under ``footprint`` (undoes `insert_heavy`)."""
        self._core.remove_spans(footprint.spans)

    def noise_values(self, k: int) -> np.ndarray:
        """The noise written under footprint ``k``, in the order of its pixels (`Footprint.indices`)."""
        return self._core.noise_of(self._index(k))

    def end(self) -> None:
        """Restore the original image (bit for bit). Later calls do nothing."""
        self._core.end()

    def _index(self, k) -> int:
        n = len(self._core)
        k = int(k)
        if not -n <= k < n:
            raise IndexError(f"footprint index {k} out of range for {n} footprints")
        return k % n

    def __enter__(self) -> NoiseReplacer:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc) -> None:
        self.end()

    def __reduce__(self):
        raise TypeError("a NoiseReplacer modifies one image in place and cannot be pickled")

    def __repr__(self) -> str:
        state = "ended" if self.ended else "active"
        return (f"NoiseReplacer({len(self)} footprints, mean={self.noise_mean:.6g}, std={self.noise_std:.6g}, "
                f"seed={self.seed}, {state})")
