"""Image convolution (C++): separable Gaussian smoothing with variance propagation, direct 2-D kernels.

Convention (as ``scipy.signal.convolve``): ``out(y, x) = sum_{j,i} k(j, i) in(y + hy - j, x + hx - i)``
for an odd kernel of half sizes ``(hy, hx)``. Only pixels where the whole kernel lies on the
image are computed; the border of width ``(hx, hy)`` is zero and reported in `Convolved.border`
so callers can mask it EDGE. Sums are accumulated in double; float32 and float64 images keep
their dtype. Non-finite input pixels raise ``ValueError`` (mask and replace them first).

Work in progress for issue 4: the FFT path for large kernels and the automatic choice between the
two are not written yet.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import _core

__all__ = ["Convolved", "gaussian_kernel_1d", "gaussian_smooth", "convolve"]


@dataclasses.dataclass(frozen=True)
class Convolved:
    """A convolved image (and variance), with the width of its unusable border."""

    image: np.ndarray
    variance: np.ndarray | None
    border: tuple[int, int]  # (hx, hy): columns at each side, rows at top and bottom

    def edge_mask(self) -> np.ndarray:
        """Boolean (y, x) mask of the border, True where the kernel did not fit."""
        hx, hy = self.border
        mask = np.ones(self.image.shape, dtype=bool)
        mask[hy:self.image.shape[0] - hy, hx:self.image.shape[1] - hx] = False
        return mask


def gaussian_kernel_1d(sigma: float, half_width: int | None = None) -> np.ndarray:
    """Unit-sum Gaussian of standard deviation ``sigma`` px at offsets ``-h..h`` (``h = ceil(4 sigma)``)."""
    h = int(math.ceil(4.0 * sigma)) if half_width is None else int(half_width)
    return np.asarray(_core.gaussian_kernel_1d(float(sigma), h))


def _as_image(array, name: str) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (y, x), got shape {a.shape}")
    if a.size and a.strides[1] != a.itemsize:
        a = np.ascontiguousarray(a)
    return a


def _run(fn, array, name, *args):
    try:
        return fn(array, *args)
    except ValueError as err:  # std::invalid_argument / std::domain_error from the core
        raise ValueError(f"{name}: {err}") from None


def gaussian_smooth(image, sigma: float, *, variance=None, half_width: int | None = None) -> Convolved:
    """Convolve ``image`` with a circular Gaussian of ``sigma`` px, separably.

    Parameters
    ----------
    image : array_like (y, x), float32 or float64
    sigma : float
        Gaussian standard deviation, pixels.
    variance : array_like, optional
        Per-pixel variance of independent pixels; propagated exactly (convolved with the squared
        kernel), so ``result.variance`` is the variance of each smoothed pixel.
    half_width : int, optional
        Kernel half width; ``ceil(4 sigma)`` by default.
    """
    img = _as_image(image, "image")
    k = gaussian_kernel_1d(sigma, half_width)
    h = k.size // 2
    out = _run(_core.convolve_separable, img, "image", k, k)
    var_out = None
    if variance is not None:
        var = _as_image(variance, "variance").astype(img.dtype, copy=False)
        if var.shape != img.shape:
            raise ValueError(f"variance shape {var.shape} differs from image shape {img.shape}")
        if np.any(var[np.isfinite(var)] < 0):
            raise ValueError("variance: negative values")
        var_out = _run(_core.convolve_separable, var, "variance", k * k, k * k)
    return Convolved(out, var_out, (h, h))


def convolve(image, kernel, *, variance=None) -> Convolved:
    """Convolve ``image`` with an odd 2-D ``kernel`` (direct sum; see the module docstring)."""
    img = _as_image(image, "image")
    ker = np.asarray(kernel, dtype=np.float64)
    if ker.ndim != 2:
        raise ValueError(f"kernel must be 2-D, got shape {ker.shape}")
    if not np.all(np.isfinite(ker)):
        raise ValueError("kernel: non-finite values")
    out = _run(_core.convolve_direct, img, "image", ker)
    var_out = None
    if variance is not None:
        var = _as_image(variance, "variance").astype(img.dtype, copy=False)
        if var.shape != img.shape:
            raise ValueError(f"variance shape {var.shape} differs from image shape {img.shape}")
        var_out = _run(_core.convolve_direct, var, "variance", ker * ker)
    return Convolved(out, var_out, (ker.shape[1] // 2, ker.shape[0] // 2))
