// base_LocalBackground (meas_base): the background per pixel in an annulus around the source.
// The annulus holds the pixels whose centres lie at a distance d from (x, y) with
// annulus_inner * sigma < d <= annulus_outer * sigma (sigma = the PSF's determinant radius at the
// source, passed in; afw's SpanSet of the outer circle minus that of the inner one), clipped to the
// image; pixels with any `bad_mask` bit or a non-finite value are dropped (afw's NaN-safe statistics).
// On the rest, afw's MEANCLIP/STDEVCLIP: start at the median with half-width
// bg_rej * 0.7413 * IQR (quantiles interpolated linearly, as numpy), then bg_iter passes each taking
// the mean and standard deviation (n - 1) of the values with |v - centre| <= half-width and setting
// centre = mean, half-width = bg_rej * stdev. instFlux = the last mean, instFluxErr = the last stdev.
// Flags: `flag` on any failure; `flag_noGoodPixels` (no usable pixel, or the clipping emptied the
// window); `flag_noPsf` (sigma not finite or <= 0). Never throws for data problems; thread-safe.
#pragma once

#include <array>
#include <cstdint>

#include "visitcal/core/mask.hpp"
#include "visitcal/core/exposure_view.hpp"

namespace visitcal {

inline constexpr std::array<const char*, 3> kLocalBackgroundFlagNames = {"flag", "flag_noGoodPixels", "flag_noPsf"};
namespace local_background_flags {
constexpr std::uint32_t FAILURE = 1u << 0;
constexpr std::uint32_t NO_GOOD_PIXELS = 1u << 1;
constexpr std::uint32_t NO_PSF = 1u << 2;
}  // namespace local_background_flags

struct LocalBackgroundControl {
    double annulus_inner = 7.0;   // inner radius in units of the PSF sigma
    double annulus_outer = 15.0;  // outer radius in units of the PSF sigma
    std::int32_t bad_mask = mask_bits::BAD | mask_bits::SAT | mask_bits::NO_DATA;
    double bg_rej = 3.0;  // clipping half-width in stdevs
    int bg_iter = 3;      // clipping passes
    void validate() const;  // std::invalid_argument naming the field
};

struct LocalBackgroundResult {
    double instFlux = NAN;
    double instFluxErr = NAN;
    std::uint32_t flags = 0;
};

/// `psf_sigma` is the PSF's determinant radius at (x, y) in pixels (NaN when there is no PSF).
LocalBackgroundResult measure_local_background(const ExposureView& ev, double x, double y, double psf_sigma,
                                               const LocalBackgroundControl& ctrl);

}  // namespace visitcal
