# Type stubs for the private C++ module visitcal._core (pybind11). Public API and docs live in
# visitcal.geom, visitcal.chebyshev and visitcal.image.
from collections.abc import Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

def mask_planes() -> list[tuple[str, int, str]]: ...

class Box2I:
    min_x: int
    min_y: int
    max_x: int
    max_y: int
    def __init__(self, min_x: int, min_y: int, max_x: int, max_y: int) -> None: ...

class ChebyshevBoundedFieldControl:
    order_x: int
    order_y: int
    triangular: bool
    def __init__(self) -> None: ...
    def size(self) -> int: ...
    def terms(self) -> list[tuple[int, int]]: ...

class ChebyshevBoundedField:
    def __init__(self, bbox: Box2I, coefficients: npt.ArrayLike) -> None: ...
    @staticmethod
    def fit(bbox: Box2I, x: npt.ArrayLike, y: npt.ArrayLike, z: npt.ArrayLike,
            weights: npt.ArrayLike | None, ctrl: ChebyshevBoundedFieldControl) -> ChebyshevBoundedField: ...
    @property
    def bbox(self) -> Box2I: ...
    @property
    def coefficients(self) -> npt.NDArray[np.float64]: ...
    def evaluate_point(self, x: float, y: float) -> float: ...
    def evaluate_points(self, x: npt.ArrayLike, y: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
    def evaluate_grid_into(self, x: npt.ArrayLike, y: npt.ArrayLike,
                           out: npt.NDArray[np.float64] | npt.NDArray[np.float32]) -> None: ...
    def mean(self) -> float: ...
    def scaled(self, factor: float) -> ChebyshevBoundedField: ...

# convolve.hpp
def gaussian_kernel_1d(sigma: float, half_width: int) -> list[float]: ...
@overload
def convolve_separable(image: npt.NDArray[np.float32], kx: Sequence[float], ky: Sequence[float]) -> npt.NDArray[np.float32]: ...
@overload
def convolve_separable(image: npt.NDArray[np.float64], kx: Sequence[float], ky: Sequence[float]) -> npt.NDArray[np.float64]: ...
@overload
def convolve_direct(image: npt.NDArray[np.float32], kernel: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
@overload
def convolve_direct(image: npt.NDArray[np.float64], kernel: npt.ArrayLike) -> npt.NDArray[np.float64]: ...

# background.hpp

# footprint.hpp

# detection.hpp

# cosmic_rays.hpp
class FindCosmicRaysControl:
    min_sigma: float
    min_dn: float
    cond3_fac: float
    cond3_fac2: float
    niteration: int
    n_cr_pixel_max: int
    keep_crs: bool
    grow: bool
    def __init__(self) -> None: ...

class TooManyCosmicRays(RuntimeError): ...  # args: (message, n_pixels, limit)

def cond3_thresholds(psf: npt.ArrayLike, cond3_fac2: float) -> list[float]: ...
def find_cosmic_rays(image: npt.NDArray[np.float32], variance: npt.NDArray[np.float32],
                     mask: npt.NDArray[np.int32], background: float,
                     background_image: npt.NDArray[np.float32] | None, thresholds: Sequence[float],
                     ctrl: FindCosmicRaysControl, bad_bits: int, cr_bits: int) -> dict[str, object]: ...
def cosmic_ray_candidates(image: npt.NDArray[np.float32], variance: npt.NDArray[np.float32],
                          mask: npt.NDArray[np.int32], background: float,
                          background_image: npt.NDArray[np.float32] | None, thresholds: Sequence[float],
                          min_sigma: float, cond3_fac: float, bad_bits: int) -> npt.NDArray[np.uint8]: ...
