// base_SdssCentroid (meas_base): the SDSS photo centroid. Starting at the footprint's peak pixel,
// smooth a local stamp with a Gaussian of the PSF's sigma (the matched filter for a Gaussian PSF, so the
// smoothed image peaks at the maximum-likelihood position), locate the maximum of the smoothed image
// from its 3 x 3 centre, bin the stamp 2x, 4x ... (up to binmax) along an axis while the object is wide
// there, and fall back to a 5 x 5 sigma-0.5 kernel when the full stamp does not fit (flag_near_edge).
//
// Our reading of the details (written from the spec and the SDSS papers, no LSST code):
// * The 3 x 3 maximum: 1-D peaks through each row (x) and each column (y), then the point where the
//   row-ridge x(y) and the column-ridge y(x) (quadratics through the three rows / columns) cross.
//   The 1-D peaks use Gaussian (log-parabola) interpolation when the three values are positive, which
//   is exact for a Gaussian profile (a sampled Gaussian smoothed by a sampled Gaussian is one, to
//   ~exp(-2 pi^2 sigma^2)), and the plain parabola otherwise ("inter4" in SDSS is a corrected
//   parabola; this is our choice of correction). A noise-free sampled Gaussian (sigma >= 1.5 px) comes
//   back to ~1e-6 px (tests/unit/test_measure_sdss_centroid.py).
// * When the smoothed 3 x 3 says the maximum lies in a neighbouring pixel (|offset| > 0.5 on the first
//   parabola), the centre pixel moves there, at most twice.
// * Binning: the stamp is binned bx x by (MEAN) and smoothed by the same sigma in binned pixels; an axis
//   is binned again while the smoothed width^2 along it (peak / second difference) exceeds
//   wfac^2 (1 + sigma^2), i.e. the object is wider than the kernel by ~wfac (SDSS photo's rule);
//   a binned stamp that does not fit on the image keeps the previous result.
// * Errors (the SDSS formula, first order): x = sx / d2x with sx, d2x the first and second differences
//   of the smoothed image, each a linear filter of the pixels, so
//   var(x) = (var(sx) - 2 x cov(sx, d2x) + x^2 var(d2x)) / d2x^2 summed over the variance plane
//   (sky and source noise), times the binning^2.
// * Unusable pixels (off the image, NO_DATA, non-finite image or variance) in the stamp count as edge.
//
// Never throws: failures set flag bits; x, y then hold the peak position (LSST reports the peak) and
// the errors NaN; x, y are NaN only when the peak itself is not finite. Thread-safe, no state.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "visitcal/core/footprint.hpp"  // Span
#include "visitcal/core/exposure_view.hpp"

namespace visitcal {

/// LSST SdssCentroidControl defaults.
struct SdssCentroidControl {
    int binmax = 16;                  // maximum binning along an axis
    double peak_min = -1.0;           // a smoothed peak below this forces one more binning (<= 0: off)
    double wfac = 1.5;                // "wide" when width^2 > wfac^2 (1 + sigma^2) (smoothed, binned px)
    bool do_footprint_check = true;   // reset to the peak when the centroid leaves the footprint
    double max_dist_to_peak = 1.0;    // reset to the peak when farther than this (px); < 0: no check
};

/// Flag bit i is named kSdssCentroidFlagNames[i] (column base_SdssCentroid_<name>).
inline constexpr std::array<const char*, 8> kSdssCentroidFlagNames = {
    "flag", "flag_edge", "flag_noSecondDerivative", "flag_almostNoSecondDerivative", "flag_notAtMaximum",
    "flag_near_edge", "flag_badInitialCentroid", "flag_resetToPeak"};

namespace sdss_centroid_flags {
constexpr std::uint32_t FAILURE = 1u << 0;
constexpr std::uint32_t EDGE = 1u << 1;
constexpr std::uint32_t NO_SECOND_DERIVATIVE = 1u << 2;
constexpr std::uint32_t ALMOST_NO_SECOND_DERIVATIVE = 1u << 3;
constexpr std::uint32_t NOT_AT_MAXIMUM = 1u << 4;
constexpr std::uint32_t NEAR_EDGE = 1u << 5;
constexpr std::uint32_t BAD_INITIAL_CENTROID = 1u << 6;
constexpr std::uint32_t RESET_TO_PEAK = 1u << 7;
}  // namespace sdss_centroid_flags

struct SdssCentroidResult {
    double x = NAN;      // parent frame, px
    double y = NAN;
    double x_err = NAN;  // 1-sigma, px
    double y_err = NAN;
    std::uint32_t flags = 0;
};

/// Centroid of the source whose peak is at (peak_x, peak_y) (parent frame; the peak pixel is
/// position_to_index of each). psf_sigma (px, > 0) is the smoothing sigma (the PSF's determinant
/// radius). spans[0 .. n_spans) is the source's normalized footprint in the parent frame, used by the
/// footprint check; n_spans = 0 skips it. flag_near_edge also sets bit 0 (as LSST) but keeps the
/// measured position and errors.
SdssCentroidResult measure_sdss_centroid(const ExposureView& ev, double peak_x, double peak_y, double psf_sigma,
                                         const Span* spans, std::size_t n_spans, const SdssCentroidControl& ctrl);

}  // namespace visitcal
