// base_LocalBackground (lsst-spec §5.7); see local_background.hpp.
#include "visitcal/measure/local_background.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "visitcal/background.hpp"  // clipped_mean_var

namespace visitcal {

void LocalBackgroundControl::validate() const {
    if (!(annulus_inner >= 0.0) || !std::isfinite(annulus_inner)) throw std::invalid_argument("annulus_inner must be >= 0");
    if (!(annulus_outer > annulus_inner) || !std::isfinite(annulus_outer))
        throw std::invalid_argument("annulus_outer must be finite and > annulus_inner");
    if (!(bg_rej > 0.0)) throw std::invalid_argument("bg_rej must be > 0");
    if (bg_iter < 1) throw std::invalid_argument("bg_iter must be >= 1");
}

LocalBackgroundResult measure_local_background(const ExposureView& ev, double x, double y, double psf_sigma,
                                               const LocalBackgroundControl& ctrl) {
    using namespace local_background_flags;
    LocalBackgroundResult res;
    if (!std::isfinite(psf_sigma) || !(psf_sigma > 0.0)) {
        res.flags = FAILURE | NO_PSF;
        return res;
    }
    if (!std::isfinite(x) || !std::isfinite(y) || std::fabs(x) > 1e9 || std::fabs(y) > 1e9) {
        res.flags = FAILURE;
        return res;
    }
    const double rin = ctrl.annulus_inner * psf_sigma, rout = ctrl.annulus_outer * psf_sigma;
    const double rin2 = rin * rin, rout2 = rout * rout;
    const int px0 = std::max(static_cast<int>(std::ceil(x - rout)), ev.x0);
    const int px1 = std::min(static_cast<int>(std::floor(x + rout)), ev.x0 + ev.width() - 1);
    const int py0 = std::max(static_cast<int>(std::ceil(y - rout)), ev.y0);
    const int py1 = std::min(static_cast<int>(std::floor(y + rout)), ev.y0 + ev.height() - 1);
    // The annulus row by row: the columns of the outer disc minus those of the inner one, from the
    // circle equations (inclusive outer, exclusive inner edge, as d2 <= rin2 || d2 > rout2 rejects).
    std::vector<float> v;
    v.reserve(static_cast<std::size_t>(3.2 * (rout2 - rin2)) + 64);
    for (int py = py0; py <= py1; ++py) {
        const float* im = ev.image.row(py - ev.y0);
        const std::int32_t* m = ev.mask.row(py - ev.y0);
        const double dy2 = (py - y) * (py - y);
        if (dy2 > rout2) continue;
        const double ho = std::sqrt(rout2 - dy2);
        const int a0 = std::max(px0, static_cast<int>(std::ceil(x - ho)) - 1);
        const int a1 = std::min(px1, static_cast<int>(std::floor(x + ho)) + 1);
        for (int px = a0; px <= a1; ++px) {
            const double d2 = (px - x) * (px - x) + dy2;
            if (d2 <= rin2 || d2 > rout2) continue;
            const int i = px - ev.x0;
            if ((m[i] & ctrl.bad_mask) || !std::isfinite(im[i])) continue;
            v.push_back(im[i]);
        }
    }
    if (v.empty()) {
        res.flags = FAILURE | NO_GOOD_PIXELS;
        return res;
    }
    // afw's MEANCLIP / STDEVCLIP with bgRej and bgIter (lsst-spec §5.7), the one the background
    // bins and the noise replacer use.
    const ClippedMeanVar c = clipped_mean_var(v.data(), v.size(), ctrl.bg_rej, ctrl.bg_iter);
    const double mean = c.mean, sd = c.sigma;
    res.instFlux = mean;
    res.instFluxErr = sd;
    if (!std::isfinite(mean)) res.flags |= FAILURE | NO_GOOD_PIXELS;
    else if (!std::isfinite(sd)) res.flags |= FAILURE;
    return res;
}

}  // namespace visitcal
