// base_PixelFlags (meas_base): mask planes present in a source's footprint and at its centre.
//   "anywhere" flags: some footprint pixel (on the image) has the plane: edge (EDGE), nodata
//     (NO_DATA), interpolated (INTRP), saturated (SAT), cr (CR), bad (BAD), suspect (SUSPECT), and
//     streak (STREAK, the extra plane reprocessing adds to masksFpAnywhere);
//   "...Center": some pixel of the 3 x 3 box around the centroid's pixel (floor(x + 0.5),
//     floor(y + 0.5)), clipped to the image, has the plane; "...CenterAll": every such pixel has it
//     (for INTRP, SAT, CR, SUSPECT, BAD and the STREAK extra);
//   offimage: the centroid's pixel is off the image, which also sets edge (and no Center flag);
//   flag: the centroid is not finite (the centre flags cannot be evaluated; footprint flags still are).
// Footprint spans are in the parent frame; their off-image parts are ignored. An empty footprint
// simply sets no "anywhere" flag. Never throws for data problems; thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "visitcal/core/footprint.hpp"  // Span
#include "visitcal/core/mask.hpp"
#include "visitcal/core/exposure_view.hpp"

namespace visitcal {

inline constexpr std::array<const char*, 22> kPixelFlagsFlagNames = {
    "flag",
    "flag_offimage",
    "flag_edge",
    "flag_nodata",
    "flag_interpolated",
    "flag_saturated",
    "flag_cr",
    "flag_bad",
    "flag_suspect",
    "flag_streak",
    "flag_interpolatedCenter",
    "flag_saturatedCenter",
    "flag_crCenter",
    "flag_suspectCenter",
    "flag_badCenter",
    "flag_streakCenter",
    "flag_interpolatedCenterAll",
    "flag_saturatedCenterAll",
    "flag_crCenterAll",
    "flag_suspectCenterAll",
    "flag_badCenterAll",
    "flag_streakCenterAll",
};

namespace pixel_flags_flags {
constexpr std::uint32_t FAILURE = 1u << 0;
constexpr std::uint32_t OFFIMAGE = 1u << 1;
constexpr std::uint32_t EDGE = 1u << 2;
constexpr int kAnyFirst = 2;     // bits 2..9: the "anywhere" planes, in kPixelFlagsAnyPlanes order
constexpr int kCenterFirst = 10;  // bits 10..15: "...Center", in kPixelFlagsCenterPlanes order
constexpr int kCenterAllFirst = 16;  // bits 16..21: "...CenterAll", same order
}  // namespace pixel_flags_flags

/// Mask bits behind the "anywhere" flags (bits 2..9) and the centre flags (bits 10..15, 16..21).
inline constexpr std::array<std::int32_t, 8> kPixelFlagsAnyPlanes = {
    mask_bits::EDGE, mask_bits::NO_DATA, mask_bits::INTRP,   mask_bits::SAT,
    mask_bits::CR,   mask_bits::BAD,     mask_bits::SUSPECT, mask_bits::STREAK};
inline constexpr std::array<std::int32_t, 6> kPixelFlagsCenterPlanes = {
    mask_bits::INTRP, mask_bits::SAT, mask_bits::CR, mask_bits::SUSPECT, mask_bits::BAD, mask_bits::STREAK};

struct PixelFlagsResult {
    std::uint32_t flags = 0;
};

PixelFlagsResult measure_pixel_flags(const ExposureView& ev, double x, double y, const Span* spans,
                                     std::size_t n_spans);

}  // namespace visitcal
