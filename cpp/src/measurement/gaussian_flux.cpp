// base_GaussianFlux; see gaussian_flux.hpp.
#include "visitcal/measurement/gaussian_flux.hpp"
#include "visitcal/core/checked.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace visitcal {

namespace {
constexpr double kPi = 3.14159265358979323846;
}

void GaussianFluxControl::validate() const {
    if (!(box_sigma > 0.0) || !std::isfinite(box_sigma)) throw std::invalid_argument("box_sigma must be finite and > 0");
    if (!(max_radius > 0.0) || !std::isfinite(max_radius)) throw std::invalid_argument("max_radius must be finite and > 0");
}

GaussianFluxResult measure_gaussian_flux(const ExposureView& ev, double x, double y, const Moments& q,
                                         const GaussianFluxControl& ctrl) {
    using namespace gaussian_flux_flags;
    GaussianFluxResult res;
    const double det = q.xx * q.yy - q.xy * q.xy;
    if (!std::isfinite(det) || !(q.xx > 0.0) || !(q.yy > 0.0) || !(det > 0.0)) {
        res.flags = FAILURE | BAD_SHAPE;
        return res;
    }
    if (!std::isfinite(x) || !std::isfinite(y) || std::fabs(x) > 1e9 || std::fabs(y) > 1e9) {
        res.flags = FAILURE;
        return res;
    }
    const double ixx = q.yy / det, iyy = q.xx / det, ixy = -q.xy / det;  // Q^-1
    const double rad = std::min(ctrl.box_sigma * std::sqrt(std::max(q.xx, q.yy)), ctrl.max_radius);
    // Clipped to the image in double before the int conversion: a huge moment or max_radius makes
    // rad too large for an int (the cast was undefined).
    int px0, px1, py0, py1;
    clip_run(std::ceil(x - rad), std::floor(x + rad), ev.x0, ev.x0 + ev.width() - 1, px0, px1);
    clip_run(std::ceil(y - rad), std::floor(y + rad), ev.y0, ev.y0 + ev.height() - 1, py0, py1);
    if (px0 > px1 || py0 > py1) {
        res.flags = FAILURE;
        return res;
    }
    double sum = 0.0;
    for (int py = py0; py <= py1; ++py) {
        const float* im = ev.image.row(py - ev.y0);
        const double dy = py - y;
        const double a = 0.5 * iyy * dy * dy, b = ixy * dy;
        for (int px = px0; px <= px1; ++px) {
            const double dx = px - x;
            sum += std::exp(-(0.5 * ixx * dx * dx + b * dx + a)) * static_cast<double>(im[px - ev.x0]);
        }
    }
    res.instFlux = 2.0 * sum;
    const int ix = position_to_index(x), iy = position_to_index(y);
    const double vc = ev.contains(ix, iy) ? static_cast<double>(ev.var(ix, iy)) : NAN;
    res.instFluxErr = 2.0 * std::sqrt(vc * kPi * std::sqrt(det));
    if (!std::isfinite(res.instFlux) || !std::isfinite(res.instFluxErr)) res.flags |= FAILURE;
    return res;
}

}  // namespace visitcal
