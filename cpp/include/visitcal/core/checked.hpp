// Overflow-safe integer arithmetic and float -> int conversions for pixel boxes.
// A float -> int static_cast of a value outside the int range (or of NaN/inf) is undefined behaviour,
// and x0 + width - 1 on int wraps for an origin near 2^31: both once let a box "wrap" and a loop read
// far outside an image. Boxes are therefore computed in 64 bits or with saturating conversions, then
// clipped to the image, whose own bounds (and one past its last pixel) fit an int: the bindings check
// that with run_fits_int.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace visitcal {

inline constexpr double kIntMin = static_cast<double>(std::numeric_limits<int>::min());
inline constexpr double kIntMax = static_cast<double>(std::numeric_limits<int>::max());

/// Is v finite and representable as an int once rounded (floor/ceil) into [INT_MIN, INT_MAX]?
inline bool fits_int(double v) { return v >= kIntMin && v <= kIntMax; }  // false for NaN

/// v converted to int, saturated to [INT_MIN, INT_MAX]; NaN gives `if_nan`. v should already be
/// integral (floor/ceil/round) when truncation matters. Never undefined behaviour.
inline int saturate_to_int(double v, int if_nan = 0) {
    if (!(v == v)) return if_nan;
    if (v <= kIntMin) return std::numeric_limits<int>::min();
    if (v >= kIntMax) return std::numeric_limits<int>::max();
    return static_cast<int>(v);
}

/// floor(v) and ceil(v) as saturated ints (see saturate_to_int).
inline int floor_to_int(double v, int if_nan = 0) { return saturate_to_int(std::floor(v), if_nan); }
inline int ceil_to_int(double v, int if_nan = 0) { return saturate_to_int(std::ceil(v), if_nan); }

/// The last index of a run of `width` pixels starting at `first`, in 64 bits (no int wrap).
inline std::int64_t last_of(int first, int width) {
    return static_cast<std::int64_t>(first) + static_cast<std::int64_t>(width) - 1;
}

/// Does the run [first, first + width - 1] fit in int with one past its end (so an int loop
/// `for (p = first; p <= last; ++p)` over it cannot overflow)?
inline bool run_fits_int(std::int64_t first, std::int64_t width) {
    return first >= std::numeric_limits<int>::min() && width >= 0 &&
           first + width <= std::numeric_limits<int>::max();
}

/// The integer run [lo, hi] (lo, hi already rounded to integers; any double, inf or NaN) intersected
/// with [min, max], as ints in first/last. False, with an empty run (first > last), when the
/// intersection is empty or lo/hi is NaN. The clip happens in double, so no cast can overflow.
inline bool clip_run(double lo, double hi, int min, int max, int& first, int& last) {
    const double a = std::max(lo, static_cast<double>(min)), b = std::min(hi, static_cast<double>(max));
    if (!(a <= b)) {  // empty, or NaN (std::max/min pass a NaN first argument through)
        first = 1;
        last = 0;
        return false;
    }
    first = static_cast<int>(a);
    last = static_cast<int>(b);
    return true;
}

}  // namespace visitcal
