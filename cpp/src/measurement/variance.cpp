// base_Variance; see variance.hpp.
#include "visitcal/measurement/variance.hpp"
#include "visitcal/core/checked.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace visitcal {

void VarianceControl::validate() const {
    if (!(scale > 0.0) || !std::isfinite(scale)) throw std::invalid_argument("scale must be finite and > 0");
}

VarianceResult measure_variance(const ExposureView& ev, double x, double y, const Moments& q,
                                const VarianceControl& ctrl) {
    using namespace variance_flags;
    VarianceResult res;
    const double det = q.xx * q.yy - q.xy * q.xy;
    if (!std::isfinite(x) || !std::isfinite(y) || std::fabs(x) > 1e9 || std::fabs(y) > 1e9 ||
        !std::isfinite(det) || !(q.xx > 0.0) || !(q.yy > 0.0) || !(det > 0.0)) {
        res.flags = FAILURE;
        return res;
    }
    const double s2 = ctrl.scale * ctrl.scale;
    // (s^2 Q)^-1 = [[yy, -xy], [-xy, xx]] / (s^2 det)
    const double ixx = q.yy / (s2 * det), iyy = q.xx / (s2 * det), ixy = -q.xy / (s2 * det);
    const double hx = ctrl.scale * std::sqrt(q.xx), hy = ctrl.scale * std::sqrt(q.yy);
    // Clipped to the image in double before the int conversion: a huge moment makes the half
    // widths too large for an int (the cast was undefined).
    int px0, px1, py0, py1;
    clip_run(std::ceil(x - hx), std::floor(x + hx), ev.x0, ev.x0 + ev.width() - 1, px0, px1);
    clip_run(std::ceil(y - hy), std::floor(y + hy), ev.y0, ev.y0 + ev.height() - 1, py0, py1);
    // The pixels inside the ellipse, unmasked and finite, in row-major order. Each pixel is written and
    // the count advanced by whether it qualifies (no branch per pixel: the ellipse's edge made the
    // branches mispredict on every row; issue 25); the kept values and their order are those of a
    // filtered append, so the median is unchanged.
    std::vector<float> v(static_cast<std::size_t>(std::max(px1 - px0 + 1, 0)) *
                         static_cast<std::size_t>(std::max(py1 - py0 + 1, 0)));
    std::size_t n = 0;
    for (int py = py0; py <= py1; ++py) {
        const float* va = ev.variance.row(py - ev.y0);
        const std::int32_t* m = ev.mask.row(py - ev.y0);
        const double dy = py - y;
        for (int px = px0; px <= px1; ++px) {
            const double dx = px - x;
            const int i = px - ev.x0;
            const bool inside = !(ixx * dx * dx + 2.0 * ixy * dx * dy + iyy * dy * dy > 1.0);
            const bool usable = !(m[i] & ctrl.mask) && std::isfinite(va[i]);
            v[n] = va[i];
            n += static_cast<std::size_t>(inside & usable);
        }
    }
    if (n == 0) {
        res.flags = FAILURE | EMPTY_FOOTPRINT;
        return res;
    }
    v.resize(n);
    const std::size_t h = n / 2;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h), v.end());
    double med = v[h];
    if (n % 2 == 0) med = 0.5 * (med + *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h)));
    res.value = med;
    return res;
}

}  // namespace visitcal
