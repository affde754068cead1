// ext_windowedCentroid: SExtractor's windowed position (XWIN_IMAGE / YWIN_IMAGE; sep.winpos), our own
// plugin (not among meas_base's default single-frame plugins). Written from SExtractor's manual and sep's docs.
//
// Iteration: with the window w = exp(-r^2 / (2 sigma^2)) centred on the current position c, summed
// over the pixels whose centres lie within 4 sigma (the boundary pixels weighted by the fraction of an
// 11 x 11 sub-pixel grid inside, as SExtractor), the offset d = sum(w I (p - c)) / sum(w I) is
// computed and the position moves by 2 d (for a Gaussian of the window's width the weighted centroid
// sits halfway to the true one, hence SExtractor's factor 2). It stops when |d| < 1e-4 px (before the
// factor 2) or after 16 iterations. SExtractor's sigma is 2 FLUX_RADIUS(0.5) / 2.35, at least
// 2 * 0.5 / 2.35 px (min_sigma), computed by the caller.
//
// Unusable pixels (off the image, NO_DATA or any of bad_mask_bits, non-finite) are left out and set
// flag_edge (SExtractor would replace them; sep with a mask uses the mean unmasked value).
// Failures: a non-positive weighted sum (flag_noFlux: x, y left at the last good position), or a bad
// input (flag_badInput: a non-finite start, a start whose nearest pixel is off the image, a non-finite
// or non-positive sigma: x, y NaN, n_iter 0, no pixel read). Each source is measured independently, so
// one bad row never changes another row's result. Thread-safe, no state.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "visitcal/core/mask.hpp"
#include "visitcal/core/exposure_view.hpp"

namespace visitcal {

struct WindowedCentroidControl {
    int max_iter = 16;          // SExtractor WINPOS_NITERMAX
    double step_min = 1e-4;     // stop when the weighted offset is below this (px), WINPOS_STEPMIN
    double n_sigma = 4.0;       // window radius in sigma, WINPOS_NSIG
    int oversample = 11;        // sub-pixel grid per axis for the boundary pixels, WINPOS_OVERSAMP
    double min_sigma = 2.0 * 0.5 / 2.35;  // sigma floor: a half-light radius of 0.5 px
    std::int32_t bad_mask_bits = mask_bits::BAD | mask_bits::SAT | mask_bits::NO_DATA;
};

/// Flag bit i is named kWindowedCentroidFlagNames[i] (column ext_windowedCentroid_<name>).
inline constexpr std::array<const char*, 5> kWindowedCentroidFlagNames = {"flag", "flag_edge", "flag_noFlux",
                                                                         "flag_maxIter", "flag_badInput"};

namespace windowed_centroid_flags {
constexpr std::uint32_t FAILURE = 1u << 0;
constexpr std::uint32_t EDGE = 1u << 1;      // the window held unusable pixels (not a failure alone)
constexpr std::uint32_t NO_FLUX = 1u << 2;   // weighted sum <= 0
constexpr std::uint32_t MAXITER = 1u << 3;   // not converged in max_iter (not a failure alone: SExtractor)
constexpr std::uint32_t BAD_INPUT = 1u << 4; // non-finite / off-image start or bad sigma (with FAILURE)
}  // namespace windowed_centroid_flags

struct WindowedCentroidResult {
    double x = NAN, y = NAN;  // parent frame, px
    int n_iter = 0;
    std::uint32_t flags = 0;
};

/// Windowed centroid starting at (x, y) (parent frame) with window sigma `sigma` (px).
WindowedCentroidResult measure_windowed_centroid(const ExposureView& ev, double x, double y, double sigma,
                                                 const WindowedCentroidControl& ctrl);

}  // namespace visitcal
