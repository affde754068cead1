// base_LocalBackground (lsst-spec §5.7); see local_background.hpp.
#include "visitcal/measure/local_background.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace visitcal {

namespace {

constexpr double kIqrToSigma = 0.7413011092528009;  // 1 / (2 * 0.6744897...), afw's IQ_TO_STDEV

// numpy's default (linear) quantile of v[0..n) (reorders v).
double quantile(std::vector<double>& v, double q) {
    const std::size_t n = v.size();
    const double pos = q * static_cast<double>(n - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const double frac = pos - static_cast<double>(lo);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(lo), v.end());
    const double a = v[lo];
    if (frac == 0.0 || lo + 1 >= n) return a;
    const double b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(lo) + 1, v.end());
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
    std::vector<double> v;
    for (int py = py0; py <= py1; ++py) {
        const float* im = ev.image.row(py - ev.y0);
        const std::int32_t* m = ev.mask.row(py - ev.y0);
        const double dy2 = (py - y) * (py - y);
        for (int px = px0; px <= px1; ++px) {
            const double d2 = (px - x) * (px - x) + dy2;
            if (d2 <= rin2 || d2 > rout2) continue;
            const int i = px - ev.x0;
            if (m[i] & ctrl.bad_mask) continue;
            if (!std::isfinite(im[i])) continue;
            v.push_back(im[i]);
        }
    }
    if (v.empty()) {
        res.flags = FAILURE | NO_GOOD_PIXELS;
        return res;
    }
    std::vector<double> work(v);
    const double q1 = quantile(work, 0.25), med = quantile(work, 0.5), q3 = quantile(work, 0.75);
    double centre = med, hwidth = ctrl.bg_rej * kIqrToSigma * (q3 - q1);
    double mean = NAN, sd = NAN;
    for (int it = 0; it < ctrl.bg_iter; ++it) {
        // Two passes (mean, then squared deviations) for accuracy with large offsets.
        double s = 0.0;
        std::size_t n = 0;
        for (double u : v)
            if (std::fabs(u - centre) <= hwidth) {
                s += u;
                ++n;
            }
        if (n == 0) {
            mean = sd = NAN;
            break;
        }
        const double m = s / static_cast<double>(n);
        double ss = 0.0;
        for (double u : v)
            if (std::fabs(u - centre) <= hwidth) ss += (u - m) * (u - m);
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
