"""Image convolution (C++): separable Gaussian smoothing, direct and FFT 2-D kernels, with variance.

Convention (as ``scipy.signal.convolve``): ``out(y, x) = sum_{j,i} k(j, i) in(y + hy - j, x + hx - i)``
for an odd kernel of half sizes ``(hy, hx)``; arrays are (y, x) with pixel centres at integers. Only
pixels where the whole kernel lies on the image are computed; the border of width ``(hx, hy)`` is
zero and reported in `Convolved.border` so callers can mask it EDGE. float32 and float64 images keep
their dtype, and the arithmetic runs in that dtype: float32 results agree with a float64 reference
to ~1e-6 of the output's largest value (the tests assert 1e-5). Non-finite input pixels raise
``ValueError`` naming the first one (mask and replace them first).

Three methods, all in C++ and single-threaded (the GIL is released):

* separable (`gaussian_smooth`, and `convolve` for a rank-1 kernel): a y-pass then an x-pass per
  output row, vectorised, half the multiplies for symmetric kernels;
* direct (`convolve(..., method="direct")`): the explicit sum, vectorised over x;
* FFT (`convolve(..., method="fft")`): overlap-save on power-of-two tiles (256 x 256 for a 41 x 41
  kernel on a detector) with batched, vectorised Stockham FFTs; its rounding is ~1e-7 of the
  output scale in float32 and ~1e-15 in float64, independent of the kernel size.

On x86-64 the kernels are compiled twice (SSE2 baseline and AVX2, without FMA) and chosen at run
time; both give bit-identical results.
"""

from __future__ import annotations

import dataclasses
import math
import operator

import numpy as np

from .. import _core

__all__ = ["Convolved", "gaussian_kernel_1d", "gaussian_smooth", "convolve"]


@dataclasses.dataclass(frozen=True)
class Convolved:
    """A convolved image (and variance), with the width of its unusable border.

    ``method`` names the algorithm that ran: ``"separable"``, ``"direct"`` or ``"fft"``.
    """

    image: np.ndarray
    variance: np.ndarray | None
    border: tuple[int, int]  # (hx, hy): columns at each side, rows at top and bottom
    method: str = "separable"

    def edge_mask(self) -> np.ndarray:
        """Boolean (y, x) mask of the border, True where the kernel did not fit."""
        hx, hy = self.border
        mask = np.ones(self.image.shape, dtype=bool)
        mask[hy:self.image.shape[0] - hy, hx:self.image.shape[1] - hx] = False
        return mask


# Largest kernel half width: 2**20 px (a 2**21 + 1 tap kernel, 16 MB of float64) is far beyond any
# image this library smooths, and keeps sigma = 1e300 or half_width = 2**31 from sizing an allocation.
MAX_HALF_WIDTH = 1 << 20


def _kernel_half_width(sigma, half_width) -> tuple[float, int]:
    """``(sigma, h)`` validated: sigma finite and > 0; h an integer in ``[0, MAX_HALF_WIDTH]``.

    Checked here, before any conversion to the C++ ``int``: a NaN, infinite or huge value raises
    ValueError naming the argument (not a pybind11 signature dump or an OverflowError).
    """
    if isinstance(sigma, (bool, np.bool_)) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise TypeError(f"sigma must be a real number, got {type(sigma).__name__}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    if half_width is None:
        if 4.0 * sigma > MAX_HALF_WIDTH:  # before ceil(): 4 sigma may be inf
            raise ValueError(f"sigma = {sigma!r} px needs a kernel half width ceil(4 sigma) > {MAX_HALF_WIDTH} px; "
                             f"sigma must be <= {MAX_HALF_WIDTH / 4:g}")
        return sigma, int(math.ceil(4.0 * sigma))
    if isinstance(half_width, (bool, np.bool_)):
        raise TypeError("half_width must be an integer, got bool")
    if isinstance(half_width, (float, np.floating)) and float(half_width).is_integer():
        half_width = int(half_width)
    try:
        h = operator.index(half_width)
    except TypeError:
        raise TypeError(f"half_width must be an integer, got {half_width!r}") from None
    if not 0 <= h <= MAX_HALF_WIDTH:
        raise ValueError(f"half_width must be in [0, {MAX_HALF_WIDTH}], got {h}")
    return sigma, h


def gaussian_kernel_1d(sigma: float, half_width: int | None = None) -> np.ndarray:
    """Unit-sum Gaussian of standard deviation ``sigma`` px at offsets ``-h..h`` (``h = ceil(4 sigma)``).

    Parameters
    ----------
    sigma : float
        Standard deviation, pixels: finite and > 0 (and <= ``MAX_HALF_WIDTH / 4`` without ``half_width``).
    half_width : int, optional
        ``h``, in ``[0, MAX_HALF_WIDTH]``.

    Returns
    -------
    numpy.ndarray
        The ``2 h + 1`` weights, float64.

    Raises
    ------
    ValueError
        ``sigma`` not finite or <= 0, or ``h`` outside ``[0, MAX_HALF_WIDTH]``.
    TypeError
        ``sigma`` not a real number or ``half_width`` not an integer.
    """
    sigma, h = _kernel_half_width(sigma, half_width)
    return np.asarray(_core.gaussian_kernel_1d(sigma, h))


def _as_image(array, name: str) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (y, x), got shape {a.shape}")
    if a.size and a.strides[1] != a.itemsize:
        a = np.ascontiguousarray(a)
    return a


def _as_variance(variance, img: np.ndarray) -> np.ndarray:
    var = _as_image(variance, "variance").astype(img.dtype, copy=False)
    if var.shape != img.shape:
        raise ValueError(f"variance shape {var.shape} differs from image shape {img.shape}")
    # min() is NaN when a NaN is present (then the C++ kernel names it); one cheap pass otherwise
    if var.size and var.min() < 0:
        raise ValueError("variance: negative values")
    return var


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
        Other dtypes are converted to float64. Must be finite.
    sigma : float
        Gaussian standard deviation, pixels.
    variance : array_like, optional
        Per-pixel variance of independent pixels; propagated exactly (convolved with the squared
        kernel), so ``result.variance`` is the variance of each smoothed pixel.
    half_width : int, optional
        Kernel half width; ``ceil(4 sigma)`` by default (scipy.ndimage's ``truncate=4``). The kernel,
        ``2 h + 1`` px, must fit the image.

    Returns
    -------
    Convolved
        Border ``(h, h)``; ``method == "separable"``.

    Raises
    ------
    ValueError
        ``sigma`` not finite or <= 0, a half width outside ``[0, MAX_HALF_WIDTH]``, a kernel larger than
        the image, or non-finite pixels.

    Notes
    -----
    About 35 ms for a 4072 x 4000 float32 image at sigma = 2 px on one AVX2 core, ~8x faster than
    ``scipy.ndimage.gaussian_filter`` (bench/bench_convolve.py); twice that with the variance.
    """
    img = _as_image(image, "image")
    sigma, h = _kernel_half_width(sigma, half_width)
    if 2 * h + 1 > min(img.shape):  # checked before the kernel is built
        raise ValueError(f"the kernel ({2 * h + 1} px: half_width {h} for sigma = {sigma:.6g}) is larger than the "
                         f"image {img.shape}; half_width must be <= {(min(img.shape) - 1) // 2}")
    k = gaussian_kernel_1d(sigma, h)
    out = _run(_core.convolve_separable, img, "image", k, k)
    var_out = None
    if variance is not None:
        var = _as_variance(variance, img)
        var_out = _run(_core.convolve_separable, var, "variance", k * k, k * k)
    return Convolved(out, var_out, (h, h), "separable")


# Cost model of the automatic choice, measured on one AVX2 core of an AMD EPYC with a 4072 x 4000
# float32 image (seconds): direct ~4.4e-11 per valid output pixel and tap plus ~5e-10 per pixel
# (memory traffic; 3 x 3 takes 0.016 s); FFT ~5.5e-10 per tile unit N^2 (log2 N + 2) with the tile
# N of _core.fft_tile_size (the unit the tile choice minimises). Measured pairs (direct / FFT):
# 9 x 9 0.068 / 0.095, 11 x 11 0.093 / 0.097, 13 x 13 0.119 / 0.098, 15 x 15 0.160 / 0.107,
# 21 x 21 0.29 / 0.10, 41 x 41 ~1.5 / 0.11. So the crossover lies between 11 x 11 and 13 x 13
# (~140 taps). float64 roughly doubles both, and the SSE2 fallback slows both by ~1.5-2x, which
# leaves the crossover about where it is.
_DIRECT_S_PER_TAP = 4.4e-11
_DIRECT_S_PER_PIXEL = 5.0e-10
_FFT_S_PER_UNIT = 5.5e-10


def _method_costs(shape: tuple[int, int], kshape: tuple[int, int]) -> dict[str, float]:
    """Predicted seconds of the direct and FFT methods for an image ``shape`` and kernel ``kshape``."""
    ny, nx = shape
    kny, knx = kshape
    nvalid = (ny - kny + 1) * (nx - knx + 1)
    direct = nvalid * (kny * knx * _DIRECT_S_PER_TAP + _DIRECT_S_PER_PIXEL)
    n = _core.fft_tile_size(ny, nx, kny, knx)
    tiles = math.ceil((ny - kny + 1) / (n - kny + 1)) * math.ceil((nx - knx + 1) / (n - knx + 1))
    fft = tiles * n * n * (math.log2(n) + 2.0) * _FFT_S_PER_UNIT
    return {"direct": direct, "fft": fft}


def _separable_factors(ker: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ky, kx)`` with ``ker == outer(ky, kx)`` when ``ker`` is rank 1 to 1e-12 (SVD), else None."""
    if min(ker.shape) == 1:
        return (ker[:, 0].copy(), np.ones(1)) if ker.shape[1] == 1 else (np.ones(1), ker[0].copy())
    u, s, vt = np.linalg.svd(ker)
    if s[0] == 0 or s[1] > 1e-12 * s[0]:
        return None
    r = math.sqrt(s[0])
    return u[:, 0] * r, vt[0] * r


def convolve(image, kernel, *, variance=None, method: str = "auto") -> Convolved:
    """Convolve ``image`` with an odd 2-D ``kernel`` (see the module docstring for the convention).

    Parameters
    ----------
    image : array_like (y, x), float32 or float64
        Other dtypes are converted to float64. Must be finite.
    kernel : array_like (kny, knx)
        Odd sides, finite, no larger than the image; used in float64 (rounded to the image's dtype
        by the direct and separable methods).
    variance : array_like, optional
        Per-pixel variance of independent pixels, propagated exactly (convolved with ``kernel**2``,
        by the same method). The FFT's rounding (~1e-7 of the largest output in float32) can
        leave values within that of zero slightly negative where the variance is ~0.
    method : {"auto", "direct", "fft"}
        ``"auto"`` takes the separable path for a rank-1 kernel (SVD, second singular value
        <= 1e-12 of the first), otherwise the cheaper of direct and FFT by a cost model measured on
        this library's kernels (see ``_method_costs``): direct up to 11 x 11 (121 taps) on a
        detector-sized image, FFT from 13 x 13 (a 41 x 41 kernel: FFT ~0.11 s vs direct ~1.5 s on
        a 4072 x 4000 float32 image, one core).

    Returns
    -------
    Convolved
        Border ``(knx // 2, kny // 2)``; ``method`` says which algorithm ran.
    """
    if method not in ("auto", "direct", "fft"):
        raise ValueError(f"method must be 'auto', 'direct' or 'fft', got {method!r}")
    img = _as_image(image, "image")
    ker = np.asarray(kernel, dtype=np.float64)
    if ker.ndim != 2:
        raise ValueError(f"kernel must be 2-D, got shape {ker.shape}")
    kny, knx = ker.shape
    if kny % 2 == 0 or knx % 2 == 0:
        raise ValueError(f"kernel sizes must be odd, got {ker.shape}")
    if kny > img.shape[0] or knx > img.shape[1]:
        raise ValueError(f"kernel {ker.shape} is larger than the image {img.shape}")
    if not np.all(np.isfinite(ker)):
        raise ValueError("kernel: non-finite values")
    var = _as_variance(variance, img) if variance is not None else None
    factors = _separable_factors(ker) if method == "auto" else None
    if factors is not None:
        ky, kx = factors
        chosen = "separable"
        out = _run(_core.convolve_separable, img, "image", kx, ky)
        var_out = None if var is None else _run(_core.convolve_separable, var, "variance", kx * kx, ky * ky)
    else:
        if method == "auto":
            costs = _method_costs(img.shape, ker.shape)
            chosen = "fft" if costs["fft"] < costs["direct"] else "direct"
        else:
            chosen = method
        fn = _core.convolve_fft if chosen == "fft" else _core.convolve_direct
        out = _run(fn, img, "image", ker)
        var_out = None if var is None else _run(fn, var, "variance", ker * ker)
    return Convolved(out, var_out, (knx // 2, kny // 2), chosen)
