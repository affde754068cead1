// See visitcal/qa/shear_correlation.hpp.
#include "visitcal/qa/shear_correlation.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace visitcal {

namespace {

void check_finite(const double* v, std::size_t n, const char* name) {
    for (std::size_t k = 0; k < n; ++k)
        if (!std::isfinite(v[k]))
            throw std::invalid_argument(std::string("shear correlation: ") + name + "[" + std::to_string(k) +
                                        "] is not finite (" + std::to_string(v[k]) +
                                        "); drop such points before correlating");
}

}  // namespace

ShearCorrelationSums shear_correlation(const double* x, const double* y, const double* a1, const double* a2,
                                       const double* b1, const double* b2, const double* w, std::size_t n,
                                       double min_sep, double max_sep, int nbins, bool cross) {
    if (!(std::isfinite(min_sep) && min_sep > 0.0))
        throw std::invalid_argument("shear correlation: min_sep must be finite and positive, got " +
                                    std::to_string(min_sep));
    if (!(std::isfinite(max_sep) && max_sep > min_sep))
        throw std::invalid_argument("shear correlation: max_sep must be finite and above min_sep (" +
                                    std::to_string(min_sep) + "), got " + std::to_string(max_sep));
    if (nbins < 1 || nbins > kShearCorrelationMaxBins)
        throw std::invalid_argument("shear correlation: nbins must be in [1, " +
                                    std::to_string(kShearCorrelationMaxBins) + "], got " + std::to_string(nbins));
    check_finite(x, n, "x");
    check_finite(y, n, "y");
    check_finite(a1, n, "a1");
    check_finite(a2, n, "a2");
    check_finite(b1, n, "b1");
    check_finite(b2, n, "b2");
    check_finite(w, n, "w");

    const std::size_t nb = static_cast<std::size_t>(nbins);
    ShearCorrelationSums s;
    for (auto* v : {&s.weight, &s.npairs, &s.sum_wr, &s.sum_wlogr, &s.xip, &s.xip_im, &s.xim, &s.xim_im})
        v->assign(nb, 0.0);
    const double log_min = std::log(min_sep);
    const double bin_size = (std::log(max_sep) - log_min) / nbins;
    const double min_sq = min_sep * min_sep, max_sq = max_sep * max_sep;
    const double orient = cross ? 2.0 : 1.0;  // ordered pairs (i, j) and (j, i) in cross mode

    for (std::size_t i = 0; i < n; ++i) {
        const double xi = x[i], yi = y[i], wi = w[i];
        const double ai1 = a1[i], ai2 = a2[i], bi1 = b1[i], bi2 = b2[i];
        for (std::size_t j = i + 1; j < n; ++j) {
            const double dx = x[j] - xi, dy = y[j] - yi;
            const double rsq = dx * dx + dy * dy;
            if (rsq < min_sq || rsq >= max_sq) continue;
            const double logr = 0.5 * std::log(rsq);
            const double kf = std::floor((logr - log_min) / bin_size);
            if (!(kf >= 0.0 && kf < static_cast<double>(nbins))) continue;  // rounding at the edges
            const std::size_t k = static_cast<std::size_t>(kf);
            const double ww = wi * w[j];
            // exp(4 i phi) r^4 = (dx + i dy)^4 = (c + i s)^2 with c + i s = (dx + i dy)^2
            const double c = dx * dx - dy * dy, sn = 2.0 * dx * dy;
            const double r4 = rsq * rsq;
            const double e4r = (c * c - sn * sn) / r4, e4i = (2.0 * c * sn) / r4;  // exp(+4 i phi)
            // a_i conj(b_j), and a_i b_j
            double pr = ai1 * b1[j] + ai2 * b2[j];
            double pi = ai2 * b1[j] - ai1 * b2[j];
            double qr = ai1 * b1[j] - ai2 * b2[j];
            double qi = ai1 * b2[j] + ai2 * b1[j];
            if (cross) {  // + a_j conj(b_i), a_j b_i
                const double aj1 = a1[j], aj2 = a2[j];
                pr += aj1 * bi1 + aj2 * bi2;
                pi += aj2 * bi1 - aj1 * bi2;
                qr += aj1 * bi1 - aj2 * bi2;
                qi += aj1 * bi2 + aj2 * bi1;
            }
            // (qr + i qi) exp(-4 i phi)
            const double mr = qr * e4r + qi * e4i, mi = qi * e4r - qr * e4i;
            s.weight[k] += orient * ww;
            s.npairs[k] += orient;
            s.sum_wr[k] += orient * ww * std::sqrt(rsq);
            s.sum_wlogr[k] += orient * ww * logr;
            s.xip[k] += ww * pr;
            if (cross) s.xip_im[k] += ww * pi;  // auto: Im(a_i conj a_j) is odd in (i, j), 0 summed both ways
            s.xim[k] += ww * mr;
            s.xim_im[k] += ww * mi;
        }
    }
    return s;
}

}  // namespace visitcal
