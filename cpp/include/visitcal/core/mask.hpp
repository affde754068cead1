// The standard mask planes, defined once: C++ kernels use the bit
// values below, Python builds visitcal.core.image.MaskPlanes from mask_planes(), and the MASK HDU of a
// FITS file names them in MP_<NAME> cards as Rubin calexps do. The first nine bits match afw's
// default plane order, so an LSST mask with the standard planes reads with no remapping.
#pragma once

#include <array>
#include <cstdint>

namespace visitcal {

struct MaskPlaneDef {
    const char* name;
    int bit;
    const char* description;
};

namespace mask_bits {
constexpr std::int32_t BAD = 1 << 0;
constexpr std::int32_t SAT = 1 << 1;
constexpr std::int32_t INTRP = 1 << 2;
constexpr std::int32_t CR = 1 << 3;
constexpr std::int32_t EDGE = 1 << 4;
constexpr std::int32_t DETECTED = 1 << 5;
constexpr std::int32_t DETECTED_NEGATIVE = 1 << 6;
constexpr std::int32_t SUSPECT = 1 << 7;
constexpr std::int32_t NO_DATA = 1 << 8;
constexpr std::int32_t STREAK = 1 << 9;
constexpr std::int32_t SPIKE = 1 << 10;
constexpr std::int32_t NOT_DEBLENDED = 1 << 11;
}  // namespace mask_bits

inline constexpr std::array<MaskPlaneDef, 12> kStandardMaskPlanes{{
    {"BAD", 0, "bad pixel in the detector (defect, hot or dead)"},
    {"SAT", 1, "saturated pixel or bleed trail"},
    {"INTRP", 2, "pixel value interpolated over"},
    {"CR", 3, "cosmic-ray hit"},
    {"EDGE", 4, "too close to the edge for the detection kernel"},
    {"DETECTED", 5, "inside a positive detection footprint"},
    {"DETECTED_NEGATIVE", 6, "inside a negative detection footprint"},
    {"SUSPECT", 7, "value may be unreliable (near saturation, low weight)"},
    {"NO_DATA", 8, "no data (zero weight, off the detector, no snap)"},
    {"STREAK", 9, "satellite or meteor streak"},
    {"SPIKE", 10, "diffraction spike of a bright star"},
    {"NOT_DEBLENDED", 11, "footprint too large or complex to deblend"},
}};

}  // namespace visitcal
