// Thresholding into footprints with peaks, as meas_algorithms' SourceDetectionTask does after smoothing:
// the EDGE border the kernel cannot reach, connected pixels above threshold with their local-maximum
// peaks (dropped when the highest misses the includeThresholdMultiplier), and each peak's significance.
// The caller smooths the image (convolve.hpp), or find_footprints_smoothed does both in bands, and grows the
// result (footprint.hpp).
#pragma once

#include <cstdint>
#include <vector>

#include "visitcal/detection/convolve.hpp"
#include "visitcal/core/footprint.hpp"

namespace visitcal {

/// What counts as detected. A pixel of the thresholded image s is detected when
/// polarity * s > value * sigma, where sigma is sqrt(noise_variance(y, x)) when a noise-variance
/// plane is given ("pixel_stdev": the variance of the smoothed image) and `constant_sigma` otherwise.
struct ThresholdControl {
    double value = 5.0;               ///< threshold in units of sigma
    int polarity = +1;                ///< +1 finds positive sources, -1 negative ones
    double include_multiplier = 1.0;  ///< peaks must exceed value * include_multiplier * sigma
    int min_pixels = 1;               ///< footprints with fewer pixels (before growing) are dropped
    double constant_sigma = 1.0;      ///< sigma when no noise-variance plane is given
};

/// Connected (8-connectivity) regions of detected pixels inside the usable region
/// [border_x, nx - border_x) x [border_y, ny - border_y), each with its peaks: pixels of the region that
/// are local maxima of polarity * s over their 8 neighbours (ties resolved in raster order, so a flat
/// top gives one peak) and exceed the include threshold. Peak significance is |s| / sigma at the peak.
/// Footprints are returned in raster order of their first pixel; spans in the image's array frame.
/// `noise_variance.data` may be null (constant sigma). Non-finite pixels are never detected.
template <typename T>
FootprintList find_footprints(ImageView<const T> image, ImageView<const T> noise_variance, int border_x, int border_y,
                              const ThresholdControl& ctrl);

/// What find_footprints_smoothed compares the smoothed image with (SourceDetectionConfig.threshold_type):
/// the smoothed image's own variance ("pixel_stdev"), the unsmoothed variance ("pixel_rms"), or
/// ThresholdControl::constant_sigma ("value").
enum class NoiseModel { SmoothedVariance, Variance, Constant };

/// Smoothing and thresholding in one pass over bands of `band_rows` rows, for detection on a large
/// image without its smoothed planes: the same footprints and peaks, to the last bit, as
/// convolve_separable(image, kernel, kernel) (and, for SmoothedVariance, of the variance with the squared
/// kernel) followed by find_footprints with border (h, h) (h = kernel.size() / 2), one list per control
/// (e.g. both polarities from one smoothing). Holds (band_rows + 2) rows of the smoothed image and
/// band_rows of its variance instead of two whole planes (130 MB for a 4k x 4k float detector).
/// `variance` is read only for the noise models that use it. Image and variance must be finite (the
/// caller replaces masked invalid pixels first); std::domain_error otherwise.
template <typename T>
std::vector<FootprintList> find_footprints_smoothed(ImageView<const T> image, ImageView<const T> variance,
                                                    const std::vector<double>& kernel, NoiseModel noise,
                                                    const std::vector<ThresholdControl>& controls,
                                                    int band_rows = 64);

/// The 8-connected regions of the pixels with any of `bits` set in `mask`, as find_footprints orders them
/// (raster order of their first pixel; spans in the array frame), without peaks: the footprints a
/// calexp's DETECTED plane holds, rebuilt without a float copy of the plane (finalize).
FootprintList find_mask_footprints(ImageView<const std::int32_t> mask, std::int32_t bits);

/// Count the pixels whose value is not finite or whose variance is not finite and > 0 (one pass, for
/// the input check before smoothing); `first` receives the row-major index of the first (or -1).
template <typename T>
std::int64_t count_invalid_pixels(ImageView<const T> image, ImageView<const T> variance, std::int64_t& first);

}  // namespace visitcal
