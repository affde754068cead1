// base_CompensatedTophatFlux; see compensated_tophat.hpp.
#include "visitcal/measurement/compensated_tophat.hpp"
#include "visitcal/core/checked.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "visitcal/measurement/aperture_flux.hpp"

namespace visitcal {

void CompensatedTophatControl::validate() const {
    if (apertures.empty()) throw std::invalid_argument("apertures must not be empty");
    for (int a : apertures)
        if (a <= 0) throw std::invalid_argument("apertures must be > 0");
    if (!(inner_scale > 0.0) || !std::isfinite(inner_scale)) throw std::invalid_argument("inner_scale must be > 0");
    if (!(outer_scale > inner_scale) || !std::isfinite(outer_scale))
        throw std::invalid_argument("outer_scale must be finite and > inner_scale");
}

CompensatedTophatResult measure_compensated_tophat(const ExposureView& ev, double x, double y, int aperture,
                                                   const CompensatedTophatControl& ctrl) {
    using namespace compensated_tophat_flags;
    CompensatedTophatResult res;
    if (!std::isfinite(x) || !std::isfinite(y) || std::fabs(x) > 1e9 || std::fabs(y) > 1e9 || aperture <= 0) {
        res.flags = FAILURE;
        return res;
    }
    const double a = aperture;
    // In double: outer_scale * aperture may pass INT_MAX (its int cast was undefined, ix +- half wrapped).
    const double half = std::ceil(ctrl.outer_scale * a);
    const int ix = position_to_index(x), iy = position_to_index(y);  // exact: |x|, |y| <= 1e9
    // OR of the mask over the box's on-image part (clipped in double).
    int bx0, bx1, by0, by1;
    clip_run(ix - half, ix + half, ev.x0, ev.x0 + ev.width() - 1, bx0, bx1);
    clip_run(iy - half, iy + half, ev.y0, ev.y0 + ev.height() - 1, by0, by1);
    std::int32_t bits = 0;
    for (int py = by0; py <= by1; ++py) {
        const std::int32_t* m = ev.mask.row(py - ev.y0);
        for (int px = bx0; px <= bx1; ++px) bits |= m[px - ev.x0];
    }
    res.mask_bits = bits;
    // The whole box on the image: clipping left it unchanged.
    if (bx0 != ix - half || bx1 != ix + half || by0 != iy - half || by1 != iy + half) {
        res.flags = FAILURE | BOUNDS;
        return res;
    }
    const double radii[3] = {a, a * ctrl.inner_scale, a * ctrl.outer_scale};
    ApertureFluxResult ap[3];
    measure_circular_apertures(ev, x, y, radii, 3, ap);
    // The box contains every aperture (|x - ix| <= 1/2), so truncation cannot happen here; keep the
    // check so a future change of the box cannot silently return partial sums.
    if ((ap[0].flags | ap[1].flags | ap[2].flags) & aperture_flux_flags::APERTURE_TRUNCATED) {
        res.flags = FAILURE | BOUNDS;
        return res;
    }
    const double s = 1.0 / (ctrl.outer_scale * ctrl.outer_scale - ctrl.inner_scale * ctrl.inner_scale);
    const double v0 = ap[0].instFluxErr * ap[0].instFluxErr, v1 = ap[1].instFluxErr * ap[1].instFluxErr,
                 v2 = ap[2].instFluxErr * ap[2].instFluxErr;
    res.instFlux = ap[0].instFlux - (ap[2].instFlux - ap[1].instFlux) * s;
    const double var = v0 + s * s * (v2 - v1);
    res.instFluxErr = var >= 0.0 ? std::sqrt(var) : NAN;
    if (!std::isfinite(res.instFlux) || !std::isfinite(res.instFluxErr)) res.flags |= FAILURE;
    return res;
}

}  // namespace visitcal
