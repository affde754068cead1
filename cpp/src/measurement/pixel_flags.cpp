// base_PixelFlags; see pixel_flags.hpp.
#include "visitcal/measurement/pixel_flags.hpp"

#include <algorithm>
#include <cmath>

#include "visitcal/core/mask.hpp"

namespace visitcal {

PixelFlagsResult measure_pixel_flags(const ExposureView& ev, double x, double y, const Span* spans,
                                     std::size_t n_spans) {
    using namespace pixel_flags_flags;
    PixelFlagsResult res;
    const int xe = ev.x0 + ev.width() - 1, ye = ev.y0 + ev.height() - 1;
    std::int32_t any = 0;
    for (std::size_t k = 0; k < n_spans; ++k) {
        const Span& s = spans[k];
        if (s.y < ev.y0 || s.y > ye) continue;
        const int a = std::max(s.x0, ev.x0), b = std::min(s.x1, xe);
        const std::int32_t* m = ev.mask.row(s.y - ev.y0);
        for (int px = a; px <= b; ++px) any |= m[px - ev.x0];
    }
    for (std::size_t p = 0; p < kPixelFlagsAnyPlanes.size(); ++p)
        if (any & kPixelFlagsAnyPlanes[p]) res.flags |= 1u << (kAnyFirst + p);

    if (!std::isfinite(x) || !std::isfinite(y) || std::fabs(x) > 1e9 || std::fabs(y) > 1e9) {
        res.flags |= FAILURE;
        return res;
    }
    const int ix = position_to_index(x), iy = position_to_index(y);
    if (!ev.contains(ix, iy)) {
        res.flags |= OFFIMAGE | EDGE;
        return res;
    }
    std::int32_t c_any = 0, c_all = ~std::int32_t{0};
    for (int py = std::max(iy - 1, ev.y0); py <= std::min(iy + 1, ye); ++py) {
        const std::int32_t* m = ev.mask.row(py - ev.y0);
        for (int px = std::max(ix - 1, ev.x0); px <= std::min(ix + 1, xe); ++px) {
            c_any |= m[px - ev.x0];
            c_all &= m[px - ev.x0];
        }
    }
    for (std::size_t p = 0; p < kPixelFlagsCenterPlanes.size(); ++p) {
        if (c_any & kPixelFlagsCenterPlanes[p]) res.flags |= 1u << (kCenterFirst + p);
        if (c_all & kPixelFlagsCenterPlanes[p]) res.flags |= 1u << (kCenterAllFirst + p);
    }
    return res;
}

}  // namespace visitcal
