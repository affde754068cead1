// Binned background statistics and their interpolation to a full image (afw's
// BackgroundMI; SExtractor's mode estimator as an option for comparison with SExtractor / sep).
//
// 1. The image is split into nx_bins = ceil(width / bin_size_x) by ny_bins = ceil(height / bin_size_y)
//    bins whose edges are spread evenly: edge_i = floor((i * length + n / 2) / n) in integers, so
//    bins differ in size by at most one pixel (4072 / 128 -> 32 bins of 127 or 128 px) and a
//    bin_size larger than the image gives one bin. Bin centre (array frame) = origin + size / 2 - 0.5.
// 2. Per bin, a statistic over the pixels that are finite, whose mask has none of `ignored_mask`
//    bits, and (when a variance plane is given) whose variance is finite. An empty bin gives NaN,
//    variance NaN and npix 0.
// 3. Interpolation: along y in each bin column (bins with NaN skipped), then along x in each row,
//    with the style reduced when a column or row has too few points (REDUCE_INTERP_ORDER).
//
// Thread safety: free functions with no state; every call owns its scratch buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "visitcal/core/mask.hpp"

namespace visitcal {

enum class BackgroundStatistic : int {
    MEANCLIP = 0,         // afw: median and IQR-based sigma, then n_iter passes of n_sigma clipping of the mean
    MEAN = 1,             // mean of all usable pixels
    MEDIAN = 2,           // median (linear interpolation between order statistics, as numpy)
    MODE_SEXTRACTOR = 3,  // SExtractor's histogram mode estimate 2.5 median - 1.5 mean
};

// afw's interpolation styles; the minimum number of points each needs is in parentheses.
enum class InterpStyle : int {
    CONSTANT = 0,        // (1) the mean of the points
    LINEAR = 1,          // (2)
    NATURAL_SPLINE = 2,  // (3) natural cubic spline (GSL "cspline", afw CUBIC_SPLINE)
    AKIMA_SPLINE = 3,    // (5) Akima 1970 (GSL "akima", afw AKIMA_SPLINE)
};

enum class UndersampleStyle : int {
    THROW_EXCEPTION = 0,      // too few points for the style: std::length_error
    REDUCE_INTERP_ORDER = 1,  // AKIMA -> NATURAL_SPLINE -> LINEAR -> CONSTANT as points run short
};

// Outside the outermost points (beyond the outer bin centres):
enum class Extrapolation : int {
    TAYLOR2 = 0,      // afw: f(x0) + f'(x0) d + f''(x0) d^2 / 2 from the end point x0
    END_SEGMENT = 1,  // continue the end segment's polynomial (SExtractor / sep, scipy extrapolate=True)
};

// Mirrored by visitcal.detection.background.BackgroundConfig (the statistic part).
struct BackgroundControl {
    int bin_size_x = 128;
    int bin_size_y = 128;
    BackgroundStatistic statistic = BackgroundStatistic::MEANCLIP;
    std::int32_t ignored_mask = mask_bits::BAD | mask_bits::EDGE | mask_bits::DETECTED |
                                mask_bits::DETECTED_NEGATIVE | mask_bits::NO_DATA;
    double n_sigma_clip = 3.0;  // MEANCLIP clipping half-width in sigma (afw StatisticsControl default)
    int n_iter = 3;             // MEANCLIP clipping passes (afw StatisticsControl default)
    // Run the portable (baseline ISA) loops even when the CPU has AVX2: the results are the same
    // bytes; for the tests that check it.
    bool baseline_only = false;

    void validate() const;  // std::invalid_argument naming the field
};

// Bins along one axis (array frame, 0-based).
struct BinAxis {
    std::vector<int> origin;
    std::vector<int> size;
    std::vector<double> center;
    int count() const { return static_cast<int>(origin.size()); }
};

BinAxis make_bin_axis(int length, int bin_size);

struct BackgroundStats {
    BinAxis x, y;
    // (ny_bins, nx_bins) row-major.
    std::vector<double> value;     // the statistic; NaN for an empty bin
    std::vector<double> variance;  // variance of the statistic (see compute_background_stats)
    std::vector<std::int64_t> npix;  // usable pixels in the bin (before clipping)
};

// One pass over the image gathers each bin's usable pixels, then each bin's statistic is computed
// with nth_element-based quantiles. `variance` may be null. Strides are in elements.
// Variance of the statistic: MEAN s^2/n; MEANCLIP s_clip^2/n_clip (s of the last clipping pass);
// MEDIAN (pi/2) s_iqr^2/n with s_iqr = 0.7413 IQR; MODE_SEXTRACTOR sigma^2/n of SExtractor's clipped
// histogram; NaN when it cannot be estimated (n < 2). s^2 uses n - 1 (afw), SExtractor's sigma n.
BackgroundStats compute_background_stats(const float* image, std::ptrdiff_t image_stride,
                                         const std::int32_t* mask, std::ptrdiff_t mask_stride,
                                         const float* variance, std::ptrdiff_t variance_stride, int ny,
                                         int nx, const BackgroundControl& ctrl);

// The statistic of one sample (the values are reordered). Exposed for tests and for the Python
// numpy reference; `var_out` receives the variance of the statistic.
double bin_statistic(std::vector<float>& values, const BackgroundControl& ctrl, double* var_out);

/// afw's MEANCLIP / STDEVCLIP of n finite values: start from the median with sigma = 0.7413 IQR
/// (numpy-"linear" quartiles), then n_iter passes of mean and unbiased (n - 1) variance over
/// |x - centre| <= n_sigma_clip * sigma, each re-centred on the previous mean. With no pass (or an
/// empty window) the centre is the median, sigma the IQR estimate and n_clip = n. n = 0: NaNs.
struct ClippedMeanVar {
    double mean;
    double var;    // of the values (IQR-based when no pass ran)
    double sigma;  // sqrt(var), or the IQR estimate itself when no pass ran
    std::size_t n_clip;
};
ClippedMeanVar clipped_mean_var(const float* values, std::size_t n, double n_sigma_clip, int n_iter);

// A 1-D interpolant through (x, y), x strictly increasing.
class Interpolant1D {
public:
    // Throws std::length_error if n is below the style's minimum and undersample is
    // THROW_EXCEPTION; std::invalid_argument if n == 0 or x is not strictly increasing.
    Interpolant1D(const double* x, const double* y, std::size_t n, InterpStyle style,
                  UndersampleStyle undersample, Extrapolation extrapolation);

    InterpStyle style() const { return style_; }  // after any reduction
    double operator()(double x) const;
    // out[k] = f(xs[k]); xs in any order (fastest when sorted).
    template <typename T>
    void evaluate(const double* xs, std::size_t n, T* out) const;
    // The same for non-decreasing xs: one tight, vectorisable loop per segment.
    template <typename T>
    void evaluate_sorted(const double* xs, std::size_t n, T* out) const;

    static int min_points(InterpStyle style);

private:
    std::size_t segment(double x, std::size_t hint) const;
    double eval_in(std::size_t seg, double x) const;

    InterpStyle style_;
    Extrapolation extrapolation_;
    std::vector<double> x_;
    // Per segment k (x_[k] <= x < x_[k+1]): y = a + b t + c t^2 + d t^3 with t = x - x_[k].
    std::vector<double> a_, b_, c_, d_;
    double constant_ = 0.0;
    // Taylor extrapolation at the two ends: value, first and second derivative.
    double lo_f_ = 0, lo_d1_ = 0, lo_d2_ = 0, hi_f_ = 0, hi_d1_ = 0, hi_d2_ = 0;
};

// Full-image evaluation of a stats grid: out[r, c] = model(xs[c], ys[r]). stats is (ny_bins,
// nx_bins) row-major with NaN for empty bins; xcen / ycen are the bin centres in the frame of xs / ys.
// Interpolates along y in each bin column with a finite bin, then along x in each row.
// Throws std::length_error naming the column/row when undersampled under THROW_EXCEPTION,
// std::invalid_argument when no bin is finite.
template <typename T>
void interpolate_background(const double* stats, int ny_bins, int nx_bins, const double* xcen,
                            const double* ycen, InterpStyle style, UndersampleStyle undersample,
                            Extrapolation extrapolation, const double* xs, std::size_t nx,
                            const double* ys, std::size_t ny, T* out, std::ptrdiff_t out_stride);

}  // namespace visitcal
