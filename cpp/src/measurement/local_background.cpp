// base_LocalBackground; see local_background.hpp.
#include "visitcal/measurement/local_background.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "visitcal/core/checked.hpp"
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
    // The outer circle's box clipped to the image in double, before any conversion to int: rout may be
    // ~1e301 (a huge psf_sigma), whose int cast is undefined and whose unclipped area once sized the
    // reservation below (std::bad_alloc). The clipped box lies on the image, so it fits an int.
    const double fx0 = std::max(std::ceil(x - rout), static_cast<double>(ev.x0));
    const double fx1 = std::min(std::floor(x + rout), static_cast<double>(last_of(ev.x0, ev.width())));
    const double fy0 = std::max(std::ceil(y - rout), static_cast<double>(ev.y0));
    const double fy1 = std::min(std::floor(y + rout), static_cast<double>(last_of(ev.y0, ev.height())));
    if (!(fx0 <= fx1 && fy0 <= fy1)) {
        res.flags = FAILURE | NO_GOOD_PIXELS;
        return res;
    }
    const int px0 = static_cast<int>(fx0), px1 = static_cast<int>(fx1);
    const int py0 = static_cast<int>(fy0), py1 = static_cast<int>(fy1);
    // The annulus row by row: on each row it is one run of columns (dy beyond the inner radius) or two
    // (left and right of the inner disc), whose ends come from the circle equations and are then moved
    // by the exact test d2 > rin2 && d2 <= rout2, so the pixel set is exactly that test's (inclusive
    // outer, exclusive inner edge) while the runs themselves need no per-pixel geometry.
    std::vector<float> v;
    // The annulus area (plus slack), at most the clipped box's; rout2 - rin2 is NaN when both are inf.
    const double box_area = (fx1 - fx0 + 1.0) * (fy1 - fy0 + 1.0);
    double want = 3.2 * (rout2 - rin2) + 64.0;
    if (!(want <= box_area)) want = box_area;
    v.reserve(static_cast<std::size_t>(want));
    auto d2_of = [&](std::int64_t px, double dy2) {
        const double dx = static_cast<double>(px) - x;
        return dx * dx + dy2;
    };
    // Branch-free compaction (the same values in the same order as a push_back per usable pixel):
    // every pixel is written and the end advances only past the usable ones; finiteness is tested on
    // the exponent bits. No push_back's capacity check and branches per pixel (issue 25).
    std::size_t used = 0;
    auto take = [&](const float* im, const std::int32_t* m, int from, int to) {
        const std::size_t len = static_cast<std::size_t>(to - from + 1);
        if (v.size() < used + len) v.resize(used + len);  // within the reservation in practice
        float* out = v.data();
        const float* ip = im + (from - ev.x0);
        const std::int32_t* mp = m + (from - ev.x0);
        constexpr std::uint32_t kExp = 0x7f800000u;
        for (std::size_t i = 0; i < len; ++i) {
            std::uint32_t bits;
            std::memcpy(&bits, ip + i, 4);
            out[used] = ip[i];
            used += static_cast<std::size_t>(((mp[i] & ctrl.bad_mask) == 0) & ((bits & kExp) != kExp));
        }
    };
    // The first and last integer of {px : (px - x)^2 + dy2 <= r2}, an interval (empty: first > last),
    // within [px0 - 1, px1 + 1] (enough for the callers, which clip to [px0, px1]; r2 may be inf).
    // The circle equation gives the ends to within a pixel of rounding; starting one pixel outside and
    // stepping inwards with the exact test lands on them. 64-bit: px0 - 1 may be below INT_MIN.
    const double lo_lim = static_cast<double>(px0) - 1.0, hi_lim = static_cast<double>(px1) + 1.0;
    auto run_of = [&](double r2, double dy2, std::int64_t& first, std::int64_t& last) {
        const double h = std::sqrt(std::max(0.0, r2 - dy2));
        const auto lo = static_cast<std::int64_t>(std::max(std::ceil(x - h) - 1.0, lo_lim));
        const auto hi = static_cast<std::int64_t>(std::min(std::floor(x + h) + 1.0, hi_lim));
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
        std::int64_t r0, r1;
        run_of(rout2, dy2, r0, r1);
        const int a0 = static_cast<int>(std::max<std::int64_t>(r0, px0));
        const int a1 = static_cast<int>(std::min<std::int64_t>(r1, px1));
        if (a0 > a1) continue;
        std::int64_t g0 = 1, g1 = 0;  // the inner disc's run on this row, excluded
        if (dy2 <= rin2) run_of(rin2, dy2, g0, g1);
        if (g0 > g1) {
            take(im, m, a0, a1);
        } else {
            const std::int64_t left_end = std::min<std::int64_t>(a1, g0 - 1);
            const std::int64_t right_start = std::max<std::int64_t>(a0, g1 + 1);
            if (left_end >= a0) take(im, m, a0, static_cast<int>(left_end));
            if (right_start <= a1) take(im, m, static_cast<int>(right_start), a1);
        }
    }
    v.resize(used);
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
