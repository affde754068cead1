// base_Variance (the meas_base plugin): the median of the variance plane inside the source's shape
// ellipse scaled by `scale` (5): the pixels whose centres r (relative to the centroid) satisfy
// r^T (scale^2 Q)^-1 r <= 1, Q = the shape moments (xx, yy, xy), clipped to the image, without
// pixels carrying any `mask` bit (DETECTED, DETECTED_NEGATIVE, BAD, SAT) or a non-finite variance.
// The median of an even count is the mean of the two middle values (numpy).
// Flags: `flag` on any failure (non-finite centroid, shape not positive-definite or not finite);
// `flag_emptyFootprint` with `flag` when no pixel is left. Never throws for data problems; thread-safe.
#pragma once

#include <array>
#include <cstdint>

#include "visitcal/core/mask.hpp"
#include "visitcal/core/exposure_view.hpp"
#include "visitcal/psf/models.hpp"  // Moments

namespace visitcal {

inline constexpr std::array<const char*, 2> kVarianceFlagNames = {"flag", "flag_emptyFootprint"};
namespace variance_flags {
constexpr std::uint32_t FAILURE = 1u << 0;
constexpr std::uint32_t EMPTY_FOOTPRINT = 1u << 1;
}  // namespace variance_flags

struct VarianceControl {
    double scale = 5.0;  // scale of the shape ellipse's axes
    std::int32_t mask = mask_bits::DETECTED | mask_bits::DETECTED_NEGATIVE | mask_bits::BAD | mask_bits::SAT;
    void validate() const;  // std::invalid_argument naming the field
};

struct VarianceResult {
    double value = NAN;
    std::uint32_t flags = 0;
};

VarianceResult measure_variance(const ExposureView& ev, double x, double y, const Moments& shape,
                                const VarianceControl& ctrl);

}  // namespace visitcal
