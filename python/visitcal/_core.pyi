# Type stubs for the private C++ module visitcal._core (pybind11). Public API and docs live in
# visitcal.core.geom, visitcal.core.chebyshev and visitcal.core.image.
from collections.abc import Sequence
from typing import Any, TypeAlias, overload

import numpy as np
import numpy.typing as npt

def mask_planes() -> list[tuple[str, int, str]]: ...
def pack_mask_bits(mask: npt.NDArray[np.int32], bits: int) -> npt.NDArray[np.uint8]: ...
def restore_mask_bits(mask: npt.NDArray[np.int32], bits: int, packed: npt.NDArray[np.uint8]) -> None: ...

# module.cpp: the error boundary's test hook (throws the standard exception `kind` with `what`)
def _throw_std_for_test(kind: str, what: str) -> None: ...

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

# detection/convolve.hpp
def gaussian_kernel_1d(sigma: float, half_width: int) -> list[float]: ...
@overload
def convolve_separable(image: npt.NDArray[np.float32], kx: Sequence[float], ky: Sequence[float], baseline_only: bool = False) -> npt.NDArray[np.float32]: ...
@overload
def convolve_separable(image: npt.NDArray[np.float64], kx: Sequence[float], ky: Sequence[float], baseline_only: bool = False) -> npt.NDArray[np.float64]: ...
@overload
def convolve_direct(image: npt.NDArray[np.float32], kernel: npt.ArrayLike, baseline_only: bool = False) -> npt.NDArray[np.float32]: ...
@overload
def convolve_direct(image: npt.NDArray[np.float64], kernel: npt.ArrayLike, baseline_only: bool = False) -> npt.NDArray[np.float64]: ...
@overload
def convolve_fft(image: npt.NDArray[np.float32], kernel: npt.ArrayLike, tile: int = 0, baseline_only: bool = False) -> npt.NDArray[np.float32]: ...
@overload
def convolve_fft(image: npt.NDArray[np.float64], kernel: npt.ArrayLike, tile: int = 0, baseline_only: bool = False) -> npt.NDArray[np.float64]: ...
def fft_tile_size(ny: int, nx: int, kny: int, knx: int) -> int: ...

# detection/background.hpp
class BackgroundControl:
    bin_size_x: int
    bin_size_y: int
    statistic: int  # 0 MEANCLIP, 1 MEAN, 2 MEDIAN, 3 MODE_SEXTRACTOR
    ignored_mask: int
    n_sigma_clip: float
    n_iter: int
    baseline_only: bool  # portable loops even on an AVX2 CPU (the same results; for tests)
    def __init__(self) -> None: ...
    def validate(self) -> None: ...

def background_stats(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32] | None,
                     variance: npt.NDArray[np.float32] | None, ctrl: BackgroundControl) -> dict[str, np.ndarray]: ...
def bin_statistic(values: npt.ArrayLike, ctrl: BackgroundControl) -> tuple[float, float]: ...
def interpolate_1d(x: npt.ArrayLike, y: npt.ArrayLike, style: int, undersample: int, extrapolation: int,
                   xs: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], int]: ...
def interpolate_background_into(stats: npt.ArrayLike, xcen: npt.ArrayLike, ycen: npt.ArrayLike, style: int,
                                undersample: int, extrapolation: int, x: npt.ArrayLike, y: npt.ArrayLike,
                                out: npt.NDArray[np.float64] | npt.NDArray[np.float32]) -> None: ...

# core/footprint.hpp
_FootprintArrays: TypeAlias = tuple[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int32],
                         npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64],
                         npt.NDArray[np.int64]]  # spans, span_offsets, peak_xy, value, significance, peak_offsets, peak_id
def normalize_spans(spans: npt.ArrayLike) -> npt.NDArray[np.int32]: ...
def dilate_spans(spans: npt.ArrayLike, radius: int) -> npt.NDArray[np.int32]: ...
def clip_spans(spans: npt.ArrayLike, x_min: int, y_min: int, x_max: int, y_max: int) -> npt.NDArray[np.int32]: ...
def label_span_components(spans: npt.ArrayLike) -> tuple[npt.NDArray[np.int32], int]: ...
def grow_footprints(spans: npt.ArrayLike, span_offsets: npt.ArrayLike, peak_xy: npt.ArrayLike,
                    peak_value: npt.ArrayLike, peak_significance: npt.ArrayLike, peak_offsets: npt.ArrayLike,
                    peak_id: npt.ArrayLike, radius: int, combined: bool, width: int, height: int) -> _FootprintArrays: ...
def set_mask_over_spans(mask: npt.NDArray[np.int32], spans: npt.ArrayLike, bits: int, x0: int, y0: int) -> None: ...
def gather_spans(image: npt.NDArray[Any], spans: npt.ArrayLike, x0: int, y0: int) -> npt.NDArray[Any]: ...
def scatter_spans(image: npt.NDArray[Any], spans: npt.ArrayLike, values: npt.NDArray[Any], x0: int, y0: int) -> None: ...

# detection/detection.hpp
def find_footprints(image: npt.NDArray[np.float32] | npt.NDArray[np.float64],
                    noise_variance: npt.NDArray[np.float32] | npt.NDArray[np.float64] | None,
                    border_x: int, border_y: int, value: float, polarity: int, include_multiplier: float,
                    min_pixels: int, constant_sigma: float) -> _FootprintArrays: ...
def find_footprints_smoothed(image: npt.NDArray[np.float32] | npt.NDArray[np.float64],
                             variance: npt.NDArray[np.float32] | npt.NDArray[np.float64],
                             kernel: Sequence[float], noise: str, value: float, polarities: Sequence[int],
                             include_multiplier: float, min_pixels: int, constant_sigma: float,
                             band_rows: int = 64) -> list[_FootprintArrays]: ...
def find_mask_footprints(mask: npt.NDArray[np.int32], bits: int) -> _FootprintArrays: ...
def count_invalid_pixels(image: npt.NDArray[np.float32] | npt.NDArray[np.float64],
                         variance: npt.NDArray[np.float32] | npt.NDArray[np.float64]) -> tuple[int, int]: ...

# detection/cosmic_rays.hpp
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

# psf/models.hpp

# measurement/sdss_centroid.hpp, sdss_shape.hpp, windowed_centroid.hpp
class SdssCentroidControl:
    binmax: int
    peak_min: float
    wfac: float
    do_footprint_check: bool
    max_dist_to_peak: float
    def __init__(self) -> None: ...

def sdss_centroid_flag_names() -> list[str]: ...
def sdss_centroid_batch(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32], variance: npt.NDArray[np.float32],
                        x0: int, y0: int, peak_x: npt.NDArray[np.float64], peak_y: npt.NDArray[np.float64],
                        psf_sigma: npt.NDArray[np.float64], spans: npt.NDArray[np.int32] | None,
                        span_offsets: npt.NDArray[np.int64] | None,
                        ctrl: SdssCentroidControl) -> dict[str, np.ndarray]: ...  # x, y, x_err, y_err, flags

class SdssShapeControl:
    max_iter: int
    tol1: float
    tol2: float
    max_shift: float
    do_measure_psf: bool
    def __init__(self) -> None: ...

def sdss_shape_flag_names() -> list[str]: ...
def sdss_shape_batch(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32], variance: npt.NDArray[np.float32],
                     x0: int, y0: int, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
                     ctrl: SdssShapeControl, baseline_only: bool = False) -> dict[str, np.ndarray]: ...
def adaptive_moments(image: npt.NDArray[np.float64], x0: int, y0: int, x: float, y: float,
                     ctrl: SdssShapeControl, baseline_only: bool = False) -> dict[str, float | int]: ...

class WindowedCentroidControl:
    max_iter: int
    step_min: float
    n_sigma: float
    oversample: int
    min_sigma: float
    bad_mask_bits: int
    def __init__(self) -> None: ...

def windowed_centroid_flag_names() -> list[str]: ...
def windowed_centroid_batch(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32],
                            variance: npt.NDArray[np.float32], x0: int, y0: int, x: npt.NDArray[np.float64],
                            y: npt.NDArray[np.float64], sigma: npt.NDArray[np.float64],
                            ctrl: WindowedCentroidControl) -> dict[str, np.ndarray]: ...  # x, y, n_iter, flags

# measurement/ photometry plugins (aperture_flux.hpp, psf_flux.hpp, ...)
class ApertureFluxControl:
    radii: list[float]
    max_sinc_radius: float
    def __init__(self) -> None: ...
    def validate(self) -> None: ...

class CompensatedTophatControl:
    apertures: list[int]
    inner_scale: float
    outer_scale: float
    def __init__(self) -> None: ...
    def validate(self) -> None: ...

class LocalBackgroundControl:
    annulus_inner: float
    annulus_outer: float
    bad_mask: int
    bg_rej: float
    bg_iter: int
    def __init__(self) -> None: ...
    def validate(self) -> None: ...

class VarianceControl:
    scale: float
    mask: int
    def __init__(self) -> None: ...
    def validate(self) -> None: ...

class PsfFluxControl:
    bad_mask: int
    model_error: float
    def __init__(self) -> None: ...

class GaussianFluxControl:
    box_sigma: float
    max_radius: float
    def __init__(self) -> None: ...
    def validate(self) -> None: ...

def aperture_flux_flag_names() -> list[str]: ...
def compensated_tophat_flag_names() -> list[str]: ...
def local_background_flag_names() -> list[str]: ...
def pixel_flags_flag_names() -> list[str]: ...
def variance_flag_names() -> list[str]: ...
def psf_flux_flag_names() -> list[str]: ...
def gaussian_flux_flag_names() -> list[str]: ...
def circle_rectangle_overlap(radius: float, xa: float, xb: float, ya: float, yb: float) -> float: ...
def circular_aperture_sum(image: npt.NDArray[np.float64], x0: int, y0: int, x: float, y: float,
                          radius: float) -> float: ...
# Batch entries: image float32, mask int32, variance float32 (y, x), parent origin (x0, y0); each
# returns a dict of float64 arrays plus "flags" (uint32 words, bit i <-> <plugin>_flag_names()[i]).
def measure_circular_apertures(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32],
                               variance: npt.NDArray[np.float32], x0: int, y0: int, x: npt.ArrayLike,
                               y: npt.ArrayLike, radii: Sequence[float]) -> dict[str, npt.NDArray]: ...
def measure_compensated_tophat(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32],
                               variance: npt.NDArray[np.float32], x0: int, y0: int, x: npt.ArrayLike,
                               y: npt.ArrayLike, aperture: int,
                               ctrl: CompensatedTophatControl) -> dict[str, npt.NDArray]: ...
def measure_local_background(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32],
                             variance: npt.NDArray[np.float32], x0: int, y0: int, x: npt.ArrayLike,
                             y: npt.ArrayLike, psf_sigma: npt.ArrayLike,
                             ctrl: LocalBackgroundControl) -> dict[str, npt.NDArray]: ...
def measure_pixel_flags(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32],
                        variance: npt.NDArray[np.float32], x0: int, y0: int, x: npt.ArrayLike, y: npt.ArrayLike,
                        spans: npt.NDArray[np.int32], span_offsets: npt.NDArray[np.int64]) -> dict[str, npt.NDArray]: ...
def measure_variance(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32],
                     variance: npt.NDArray[np.float32], x0: int, y0: int, x: npt.ArrayLike, y: npt.ArrayLike,
                     xx: npt.ArrayLike, yy: npt.ArrayLike, xy: npt.ArrayLike,
                     ctrl: VarianceControl) -> dict[str, npt.NDArray]: ...
def measure_psf_flux(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32],
                     variance: npt.NDArray[np.float32], x0: int, y0: int, models: npt.NDArray[np.float64],
                     model_x0: npt.NDArray[np.int32], model_y0: npt.NDArray[np.int32],
                     ctrl: PsfFluxControl) -> dict[str, npt.NDArray]: ...
def measure_gaussian_flux(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32],
                          variance: npt.NDArray[np.float32], x0: int, y0: int, x: npt.ArrayLike, y: npt.ArrayLike,
                          xx: npt.ArrayLike, yy: npt.ArrayLike, xy: npt.ArrayLike,
                          ctrl: GaussianFluxControl) -> dict[str, npt.NDArray]: ...

# detection/noise_replacer.hpp
class NoiseReplacer:
    def __init__(self, image: npt.NDArray[np.float32], spans: npt.ArrayLike, span_offsets: npt.ArrayLike,
                 mean: float, sigma: float, seed: int, x0: int = 0, y0: int = 0) -> None: ...
    def __len__(self) -> int: ...
    @property
    def ended(self) -> bool: ...
    @property
    def mean(self) -> float: ...
    @property
    def sigma(self) -> float: ...
    def insert(self, k: int) -> None: ...
    def remove(self, k: int) -> None: ...
    def insert_heavy(self, spans: npt.ArrayLike, values: npt.NDArray[np.float32]) -> None: ...
    def remove_spans(self, spans: npt.ArrayLike) -> None: ...
    def end(self) -> None: ...
    def noise_of(self, k: int) -> npt.NDArray[np.float32]: ...
def clipped_mean_stdev(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32] | None, ignored_mask: int,
                       n_sigma_clip: float = 3.0, n_iter: int = 3,
                       sample_step: int = 1) -> tuple[float, float, int, int]: ...
def noise_stats_mask() -> int: ...
def portable_log(x: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
def portable_normal(seed: int, n: int) -> npt.NDArray[np.float64]: ...

# detection/sky_sources.hpp
def disc_spans(radius: int, x: int, y: int) -> npt.NDArray[np.int32]: ...
def select_sky_sources(mask: npt.NDArray[np.int32], avoid_bits: int, grow_mask: int, radius: int,
                       xs: npt.ArrayLike, ys: npt.ArrayLike, n_sources: int, x0: int = 0,
                       y0: int = 0) -> npt.NDArray[np.int64]: ...

# measurement/deblend.hpp
class DeblendControl:
    edge_handling: int  # 0 ramp, 1 clip
    stray_flux_to_point_sources: int  # 0 never, 1 necessary, 2 always
    stray_flux_rule: int  # 0 r-to-peak, 1 r-to-footprint, 2 nearest-footprint, 3 trim
    assign_stray_flux: bool
    clip_stray_flux_fraction: float
    psf_chisq_1: float
    psf_chisq_2: float
    psf_chisq_2b: float
    max_number_of_peaks: int
    max_footprint_area: int
    max_footprint_size: int
    min_footprint_axis_ratio: float
    tiny_footprint_size: int
    propagate_all_peaks: bool
    catch_failures: bool
    sigma1_bad_bits: int
    mask_limits: list[tuple[int, float]]
    weight_templates: bool
    remove_degenerate_templates: bool
    max_temp_dot_prod: float
    median_smooth_template: bool
    def __init__(self) -> None: ...

def deblend_footprints(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32], variance: npt.NDArray[np.float32],
                       x0: int, y0: int, spans: npt.NDArray[np.int32], span_offsets: npt.NDArray[np.int64],
                       peak_xy: npt.NDArray[np.int32], peak_value: npt.NDArray[np.float32],
                       peak_significance: npt.NDArray[np.float32], peak_offsets: npt.NDArray[np.int64],
                       peak_id: npt.NDArray[np.int64], skip: npt.NDArray[np.uint8], psf: Any, sigma1: float,
                       control: DeblendControl, not_deblended_bits: int) -> dict[str, Any]: ...
def deblend_sigma1(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32], variance: npt.NDArray[np.float32],
                   x0: int, y0: int, bad_bits: int, spans: npt.NDArray[np.int32] | None = None,
                   sample_step: int = 1) -> float: ...

# measurement/single_frame_measurement.hpp
class SingleFrameMeasurementControl:
    replace_with_noise: bool
    noise_mean: float
    noise_sigma: float
    noise_seed: int
    do_pixel_flags: bool
    do_centroid: bool
    do_shape: bool
    do_psf_flux: bool
    do_gaussian_flux: bool
    do_apertures: bool
    do_compensated_tophat: bool
    do_local_background: bool
    do_variance: bool
    centroid: Any
    shape: Any
    psf_flux: Any
    gaussian_flux: Any
    aperture_radii: list[float]
    compensated_tophat: Any
    local_background: Any
    variance: Any
    def __init__(self) -> None: ...

def measure_sources(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32], variance: npt.NDArray[np.float32],
                    x0: int, y0: int, footprints: tuple, parents: tuple, top: npt.NDArray[np.int64],
                    heavy_values: npt.NDArray[np.float32], heavy_offsets: npt.NDArray[np.int64], psf: Any,
                    ctrl: SingleFrameMeasurementControl, centroid_x: npt.NDArray[np.float64] | None = None,
                    centroid_y: npt.NDArray[np.float64] | None = None) -> dict[str, np.ndarray]: ...


# psf/candidates.hpp
def make_psf_candidates(
    image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32], variance: npt.NDArray[np.float32], x0: int, y0: int,
    x: npt.ArrayLike, y: npt.ArrayLike, footprint_index: npt.ArrayLike, footprints: tuple, stamp_size: int,
    do_mask_blends: bool, neighbour_grow: int,
) -> dict[str, np.ndarray]: ...

# psf/pixel_grid.hpp
class PixelGridControl:
    model_size: int
    sampling_size: float
    interpolant_order: int
    spatial_order: int
    fit_center: bool
    stamp_size: int
    draw_size: int
    max_snr: float
    outlier_n_sigma: float
    outlier_max_remove: float
    max_iter: int
    min_iter: int
    chisq_thresh: float
    zero_weight_mask: int
    minimum_unmasked_fraction: float
    zeroth_order_fallback: bool
    cg_tolerance: float
    cg_chi2_tolerance: float
    cg_max_iter: int
    smoothness: float
    varying_radius: float
    def __init__(self) -> None: ...

class PixelGridPsf(Psf):
    def __init__(
        self, coefficients: npt.NDArray[np.float64], sampling_size: float, interpolant_order: int, spatial_order: int,
        box: tuple[float, float, float, float], draw_size: int, average_position: tuple[float, float],
    ) -> None: ...
    coefficients: npt.NDArray[np.float64]
    model_size: int
    sampling_size: float
    interpolant_order: int
    spatial_order: int
    box: tuple[float, float, float, float]
    draw_size: int
    def grid_at(self, x: float, y: float) -> npt.NDArray[np.float64]: ...

def fit_pixel_grid_psf(
    image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32], variance: npt.NDArray[np.float32],
    xy0: npt.NDArray[np.int32], x: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
    reserved: npt.NDArray[np.uint8], box: tuple[float, float, float, float], control: PixelGridControl,
) -> dict: ...
def chi2_isf(p: float, dof: float) -> float: ...

# psf/pca.hpp
class PcaPsf:  # derives from _core.Psf (psf/models.hpp has no stub yet)
    def __init__(self, basis: npt.NDArray[np.float64], coefficients: npt.NDArray[np.float64], spatial_order: int,
                 box: tuple[float, float, float, float], average_position: tuple[float, float],
                 interpolant_order: int) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def n_components(self) -> int: ...
    @property
    def interpolant_order(self) -> int: ...
    @property
    def spatial_order(self) -> int: ...
    @property
    def box(self) -> tuple[float, float, float, float]: ...
    @property
    def basis(self) -> npt.NDArray[np.float64]: ...
    @property
    def coefficients(self) -> npt.NDArray[np.float64]: ...

class PcaPsfControl:
    n_eigen_components: int
    component_noise_threshold: float
    n_basis_refinements: int
    spatial_order: int
    kernel_size: int
    n_iter_for_psf: int
    reduced_chi2_for_psf_candidates: float
    spatial_reject: float
    constant_weight: bool
    lam: float
    tolerance: float
    bad_mask_bits: int
    interpolant_order: int
    zeroth_order_interp_not_enough_stars: bool
    min_unmasked_fraction: float
    def __init__(self) -> None: ...

def pca_status_names() -> list[str]: ...
def fit_pca_psf(image: npt.NDArray[np.float32], mask: npt.NDArray[np.int32], variance: npt.NDArray[np.float32],
                xy0: npt.NDArray[np.int32], x: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
                reserved: npt.NDArray[np.uint8], control: PcaPsfControl,
                box: tuple[float, float, float, float]) -> dict[str, Any]: ...

# calib/sip.hpp
class FitTanSipControl:
    order: int
    num_iter: int
    num_rej_iter: int
    rej_sigma: float
    max_scatter_arcsec: float
    inverse_order: int
    grid_size: int
    def __init__(self) -> None: ...

class TanSipWcs:
    def __init__(self, crpix: tuple[float, float], crval: tuple[float, float], cd: tuple[float, float, float, float],
                 a: npt.ArrayLike | None = None, b: npt.ArrayLike | None = None, ap: npt.ArrayLike | None = None,
                 bp: npt.ArrayLike | None = None) -> None: ...
    crpix: tuple[float, float]
    crval: tuple[float, float]
    cd: tuple[float, float, float, float]
    order: int
    inverse_order: int
    @property
    def a(self) -> npt.NDArray[np.float64]: ...
    @property
    def b(self) -> npt.NDArray[np.float64]: ...
    @property
    def ap(self) -> npt.NDArray[np.float64]: ...
    @property
    def bp(self) -> npt.NDArray[np.float64]: ...
    def pixel_to_sky(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
    def pixel_to_intermediate(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
    def sky_to_pixel_reverse(self, ra: npt.NDArray[np.float64], dec: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...

def fit_tan_sip_wcs(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], ra: npt.NDArray[np.float64], dec: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64] | None, box: tuple[float, float, float, float], control: FitTanSipControl,
) -> dict: ...
# calib/matcher.hpp
def match_nearest(x1: npt.NDArray[np.float64], y1: npt.NDArray[np.float64], x2: npt.NDArray[np.float64],
                  y2: npt.NDArray[np.float64], radius: float,
                  unique: bool = ...) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...

def gaussian_overlap_sum(x1: npt.NDArray[np.float64], y1: npt.NDArray[np.float64], x2: npt.NDArray[np.float64],
                         y2: npt.NDArray[np.float64], w2: npt.NDArray[np.float64], sigma: float, radius: float,
                         min_distance: float) -> npt.NDArray[np.float64]: ...

def offset_histogram(xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], xr: npt.NDArray[np.float64],
                     yr: npt.NDArray[np.float64], max_offset: float,
                     bin: float) -> tuple[npt.NDArray[np.int64], int]: ...

class MatcherControl:
    num_bright_stars: int
    min_matched_pairs: int
    min_frac_matched_pairs: float
    matcher_iterations: int
    max_offset_pix: float
    max_rotation_deg: float
    num_points_for_shape: int
    num_points_for_shape_attempt: int
    min_match_dist_pixels: float
    num_pattern_consensus: int
    num_ref_require_consensus: int
    match_distance_sigma: float
    max_scale_error: float
    def __init__(self) -> None: ...

def match_pessimistic_b(xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], fs: npt.NDArray[np.float64],
                        xr: npt.NDArray[np.float64], yr: npt.NDArray[np.float64],
                        control: MatcherControl) -> dict[str, Any]: ...

# calib/fof.hpp
def fof_groups(ra: npt.NDArray[np.float64], dec: npt.NDArray[np.float64],
               link_deg: float) -> tuple[npt.NDArray[np.int64], int]: ...
def match_nearest_sphere(ra1: npt.NDArray[np.float64], dec1: npt.NDArray[np.float64], ra2: npt.NDArray[np.float64],
                         dec2: npt.NDArray[np.float64],
                         radius_deg: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...
def count_neighbours(ra: npt.NDArray[np.float64], dec: npt.NDArray[np.float64],
                     radius_deg: float) -> npt.NDArray[np.int64]: ...
# qa/shear_correlation.hpp
def shear_correlation(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], a1: npt.NDArray[np.float64],
                      a2: npt.NDArray[np.float64], b1: npt.NDArray[np.float64], b2: npt.NDArray[np.float64],
                      w: npt.NDArray[np.float64], min_sep: float, max_sep: float, nbins: int,
                      cross: bool) -> dict[str, npt.NDArray[np.float64]]: ...

# psf/lanczos.hpp
def shift_image_lanczos(image: npt.ArrayLike, dx: float, dy: float, order: int,
                        baseline_only: bool = False) -> npt.NDArray[np.float64]: ...
