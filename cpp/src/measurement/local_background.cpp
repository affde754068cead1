// base_LocalBackground; see local_background.hpp.
#include "visitcal/measurement/local_background.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "visitcal/detection/background.hpp"  // clipped_mean_var

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
    // The annulus row by row: on each row it is one run of columns (dy beyond the inner radius) or two
    // (left and right of the inner disc), whose ends come from the circle equations and are then moved
    // by the exact test d2 > rin2 && d2 <= rout2, so the pixel set is exactly that test's (inclusive
    // outer, exclusive inner edge) while the runs themselves need no per-pixel geometry.
    std::vector<float> v;
    v.reserve(static_cast<std::size_t>(3.2 * (rout2 - rin2)) + 64);
    auto d2_of = [&](int px, double dy2) { return (px - x) * (px - x) + dy2; };
    auto take = [&](const float* im, const std::int32_t* m, int from, int to) {
        for (int px = from; px <= to; ++px) {
            const int i = px - ev.x0;
            if ((m[i] & ctrl.bad_mask) || !std::isfinite(im[i])) continue;
            v.push_back(im[i]);
        }
    };
    // The first and last integer of {px : (px - x)^2 + dy2 <= r2}, an interval (empty: first > last).
    // The circle equation gives the ends to within a pixel of rounding; starting one pixel outside and
    // stepping inwards with the exact test lands on them.
    auto run_of = [&](double r2, double dy2, int& first, int& last) {
        const double h = std::sqrt(std::max(0.0, r2 - dy2));
        const int lo = static_cast<int>(std::ceil(x - h)) - 1, hi = static_cast<int>(std::floor(x + h)) + 1;
        first = lo;
        while (first <= hi && d2_of(first, dy2) > r2) ++first;
        last = hi;
        while (last >= first && d2_of(last, dy2) > r2) --last;
    };
    for (int py = py0; py <= py1; ++py) {
        const double dy2 = (py - y) * (py - y);
        if (dy2 > rout2) continue;
        const float* im = ev.image.row(py - ev.y0);
        const std::int32_t* m = ev.mask.row(py - ev.y0);
        int a0, a1;
        run_of(rout2, dy2, a0, a1);
        a0 = std::max(a0, px0);
        a1 = std::min(a1, px1);
        if (a0 > a1) continue;
        int g0 = 1, g1 = 0;  // the inner disc's run on this row, excluded
        if (dy2 <= rin2) run_of(rin2, dy2, g0, g1);
        if (g0 > g1) {
            take(im, m, a0, a1);
        } else {
            take(im, m, a0, std::min(a1, g0 - 1));
            take(im, m, std::max(a0, g1 + 1), a1);
        }
    }
    if (v.empty()) {
        res.flags = FAILURE | NO_GOOD_PIXELS;
        return res;
    }
    // afw's MEANCLIP / STDEVCLIP with LocalBackgroundControl's bgRej and bgIter (3 sigma, 3 passes),
    // the one the background bins and the noise replacer use.
    const ClippedMeanVar c = clipped_mean_var(v.data(), v.size(), ctrl.bg_rej, ctrl.bg_iter);
    const double mean = c.mean, sd = c.sigma;
    res.instFlux = mean;
    res.instFluxErr = sd;
    if (!std::isfinite(mean)) res.flags |= FAILURE | NO_GOOD_PIXELS;
    else if (!std::isfinite(sd)) res.flags |= FAILURE;
    return res;
}

}  // namespace visitcal
