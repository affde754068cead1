// base_GaussianFlux (meas_base): the flux of an elliptical Gaussian weight matched to the
// source's shape. With Q = the shape moments (xx, yy, xy) and r = pixel centre - centroid,
//   w = exp(-r^T Q^-1 r / 2),  instFlux = 2 sum w I,  instFluxErr = 2 sqrt(V_c pi sqrt(det Q)),
// V_c = the variance of the centroid's pixel. For a Gaussian source of flux F and moments Q,
// sum w I = F / 2 exactly in the continuum limit, hence the factor 2. The sum runs over the box
// |dx|, |dy| <= 4 sqrt(max(xx, yy)) (SdssShape's adaptive-moments box, capped at 1000 px) clipped to
// the image, sampling at pixel centres (no sub-pixel sampling): the truncated weight mass is below
// ~1e-7 of the sum for a Gaussian source.
// Flags: `flag` on any failure; `flag_badShape` (with `flag`) when Q is not finite or not positive
// definite. A NaN pixel with w > 0, a centroid pixel off the image or with a non-finite variance,
// or an empty box give NaN values and `flag`. Never throws for data problems; thread-safe.
#pragma once

#include <array>
#include <cstdint>

#include "visitcal/core/exposure_view.hpp"
#include "visitcal/psf/models.hpp"  // Moments

namespace visitcal {

inline constexpr std::array<const char*, 2> kGaussianFluxFlagNames = {"flag", "flag_badShape"};
namespace gaussian_flux_flags {
constexpr std::uint32_t FAILURE = 1u << 0;
constexpr std::uint32_t BAD_SHAPE = 1u << 1;
}  // namespace gaussian_flux_flags

struct GaussianFluxControl {
    double box_sigma = 4.0;      // half-size of the summed box in sqrt(max(xx, yy)) (SdssShape's)
    double max_radius = 1000.0;  // cap on that half-size, pixels
    void validate() const;       // std::invalid_argument naming the field
};

struct GaussianFluxResult {
    double instFlux = NAN;
    double instFluxErr = NAN;
    std::uint32_t flags = 0;
};

GaussianFluxResult measure_gaussian_flux(const ExposureView& ev, double x, double y, const Moments& shape,
                                         const GaussianFluxControl& ctrl);

}  // namespace visitcal
