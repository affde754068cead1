// base_CompensatedTophatFlux_{a} (the meas_base plugin): an aperture flux with the local background
// removed by an annulus, for each aperture radius a (pixels, integers as LSST's config):
//   A0 = aperture flux at r = a, A1 = at r = a * inner_scale, A2 = at r = a * outer_scale,
//   instFlux    = A0 - (A2 - A1) / (outer_scale^2 - inner_scale^2)
//   instFluxErr = sqrt(var(A0) + s^2 (var(A2) - var(A1))),  s = 1 / (outer_scale^2 - inner_scale^2)
// (the spec's variance formula, kept as written). The apertures are the exact-overlap apertures of
// aperture_flux.hpp, var(A) = sum w V. The whole (2 ceil(outer_scale a) + 1)^2 box centred on the
// centroid's pixel must lie on the image, else `flag` + `flag_bounds` and NaN values; `mask_bits` is
// the OR of the mask over that box (its on-image part when out of bounds). A NaN pixel or variance in
// any aperture makes the value NaN and sets `flag`. Never throws for data problems; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "visitcal/core/exposure_view.hpp"

namespace visitcal {

inline constexpr std::array<const char*, 2> kCompensatedTophatFlagNames = {"flag", "flag_bounds"};
namespace compensated_tophat_flags {
constexpr std::uint32_t FAILURE = 1u << 0;
constexpr std::uint32_t BOUNDS = 1u << 1;
}  // namespace compensated_tophat_flags

struct CompensatedTophatControl {
    std::vector<int> apertures{12};  // radii a (pixels); columns base_CompensatedTophatFlux_<a>
    double inner_scale = 1.0;
    double outer_scale = 1.7;
    void validate() const;  // std::invalid_argument naming the field
};

struct CompensatedTophatResult {
    double instFlux = NAN;
    double instFluxErr = NAN;
    std::int32_t mask_bits = 0;
    std::uint32_t flags = 0;
};

/// One aperture `a` of the source at parent (x, y).
CompensatedTophatResult measure_compensated_tophat(const ExposureView& ev, double x, double y, int aperture,
                                                   const CompensatedTophatControl& ctrl);

}  // namespace visitcal
