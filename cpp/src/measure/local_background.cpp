// base_LocalBackground (lsst-spec §5.7); see local_background.hpp.
#include "visitcal/measure/local_background.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace visitcal {

namespace {

constexpr double kIqrToSigma = 0.7413011092528009;  // 1 / (2 * 0.6744897...), afw's IQ_TO_STDEV

// numpy's default ("linear") quantile at fraction q of the n values in v[0, n), with v already
// partitioned about nothing in particular; only v[lo_bound, hi_bound) is searched, which must hold
// the ranks floor(q (n - 1)) and the one after it (reorders that range).
double quantile_in(std::vector<float>& v, std::size_t n, double q, std::size_t lo_bound, std::size_t hi_bound) {
    const double pos = q * static_cast<double>(n - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const double frac = pos - static_cast<double>(lo);
    auto first = v.begin() + static_cast<std::ptrdiff_t>(lo_bound);
    auto last = v.begin() + static_cast<std::ptrdiff_t>(hi_bound);
    std::nth_element(first, v.begin() + static_cast<std::ptrdiff_t>(lo), last);
    const double a = v[lo];
    if (frac == 0.0 || lo + 1 >= n) return a;
    const double b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(lo) + 1, last);
    return a + frac * (b - a);
}

}  // namespace

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
    // Quartiles with one full selection: after the median's nth_element the lower quartile's ranks
    // lie in front of it and the upper quartile's behind it (the work copy keeps v for the clipping).
    std::vector<float> work(v);
    const std::size_t nv = work.size();
    const auto rank = [nv](double q) { return static_cast<std::size_t>(std::floor(q * static_cast<double>(nv - 1))); };
    const std::size_t mid = rank(0.5);
    const double med = quantile_in(work, nv, 0.5, 0, nv);
    // Ranks r and r + 1 of q1 within [0, mid] and of q3 within [mid + 1, nv); else the whole range
    // (tiny samples).
    const double q1 = quantile_in(work, nv, 0.25, 0, rank(0.25) + 1 <= mid ? mid + 1 : nv);
    const double q3 = quantile_in(work, nv, 0.75, rank(0.75) >= mid + 1 ? mid + 1 : 0, nv);
    double centre = med, hwidth = ctrl.bg_rej * kIqrToSigma * (q3 - q1);
    double mean = NAN, sd = NAN;
    for (int it = 0; it < ctrl.bg_iter; ++it) {
        // Two passes (mean, then squared deviations) for accuracy with large offsets.
        double s = 0.0;
        std::size_t n = 0;
        for (const float f : v) {
            const double u = f;
            if (std::fabs(u - centre) <= hwidth) {
                s += u;
                ++n;
            }
        }
        if (n == 0) {
            mean = sd = NAN;
            break;
        }
        const double m = s / static_cast<double>(n);
        double ss = 0.0;
        for (const float f : v) {
            const double u = f;
            if (std::fabs(u - centre) <= hwidth) ss += (u - m) * (u - m);
        }
        mean = m;
        sd = n > 1 ? std::sqrt(ss / static_cast<double>(n - 1)) : NAN;
        centre = mean;
        hwidth = std::isfinite(sd) ? ctrl.bg_rej * sd : 0.0;
    }
    res.instFlux = mean;
    res.instFluxErr = sd;
    if (!std::isfinite(mean)) res.flags |= FAILURE | NO_GOOD_PIXELS;
    else if (!std::isfinite(sd)) res.flags |= FAILURE;
    return res;
}

}  // namespace visitcal
