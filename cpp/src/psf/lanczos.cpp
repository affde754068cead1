#include "visitcal/psf/lanczos.hpp"

#include "lanczos_shift_kernels.hpp"
#include "../core/cpu_features.hpp"

#include <cmath>
#include <limits>
#include <algorithm>
#include <stdexcept>

namespace visitcal {

namespace {
constexpr double kPi = 3.14159265358979323846;

double sinc(double x) {
    if (std::fabs(x) < 1e-12) return 1.0;
    const double px = kPi * x;
    return std::sin(px) / px;
}

}  // namespace

double lanczos_kernel(double x, int n) {
    if (std::fabs(x) >= n) return 0.0;
    return sinc(x) * sinc(x / n);
}

void lanczos_weights(double frac, int n, double* w) {
    if (n < 1) throw std::invalid_argument("Lanczos order must be >= 1");
    double sum = 0.0;
    for (int k = 0; k < 2 * n; ++k) {
        w[k] = lanczos_kernel(k - (n - 1) - frac, n);
        sum += w[k];
    }
    for (int k = 0; k < 2 * n; ++k) w[k] /= sum;
}

void lanczos_weights_derivative(double frac, int n, double* w, double* dw) {
    if (n < 1) throw std::invalid_argument("Lanczos order must be >= 1");
    // L(x) = sinc(x) sinc(x/n); L'(x) = sinc'(x) sinc(x/n) + sinc(x) sinc'(x/n) / n with
    // sinc'(x) = (cos(pi x) - sinc(x)) / x (0 at x = 0). x_k = k - (n - 1) - frac, so dL_k/dfrac = -L'(x_k).
    auto dsinc = [](double x) { return std::fabs(x) < 1e-8 ? 0.0 : (std::cos(kPi * x) - sinc(x)) / x; };
    double sum = 0.0, dsum = 0.0;
    for (int k = 0; k < 2 * n; ++k) {
        const double x = k - (n - 1) - frac;
        if (std::fabs(x) >= n) {
            w[k] = dw[k] = 0.0;
            continue;
        }
        const double a = sinc(x), b = sinc(x / n);
        w[k] = a * b;
        dw[k] = -(dsinc(x) * b + a * dsinc(x / n) / n);
        sum += w[k];
        dsum += dw[k];
    }
    for (int k = 0; k < 2 * n; ++k) {
        dw[k] = (dw[k] * sum - w[k] * dsum) / (sum * sum);
        w[k] /= sum;
    }
}

LanczosShiftWeights lanczos_shift_weights(double dx, double dy, int n) {
    if (n < 1) throw std::invalid_argument("Lanczos order must be >= 1");
    LanczosShiftWeights w;
    w.dx = dx;
    w.dy = dy;
    w.n = n;
    if (!std::isfinite(dx) || !std::isfinite(dy)) return w;  // the shift fills its output with NaN
    w.sx = std::floor(-dx);
    w.sy = std::floor(-dy);
    w.wx.resize(2 * static_cast<std::size_t>(n));
    w.wy.resize(w.wx.size());
    lanczos_weights(-dx - w.sx, n, w.wx.data());
    lanczos_weights(-dy - w.sy, n, w.wy.data());
    return w;
}

void shift_image_lanczos(const double* in, int width, int height, const LanczosShiftWeights& weights, double* out) {
    // The AVX2 build of the same loops where the CPU has it (bit-identical; see lanczos_shift_kernels.hpp):
    // the shifts are most of a PCA PSF fit (every basis image to every star, every iteration).
    if (cpu_has_avx2()) {
        shift_image_lanczos_avx2(in, width, height, weights, out);
        return;
    }
    shift_image_lanczos_impl(in, width, height, weights, out);
}

void shift_image_lanczos(const double* in, int width, int height, double dx, double dy, int n, double* out) {
    shift_image_lanczos(in, width, height, lanczos_shift_weights(dx, dy, n), out);
}

void shift_image_lanczos_baseline(const double* in, int width, int height, double dx, double dy, int n,
                                  double* out) {
    shift_image_lanczos_impl(in, width, height, lanczos_shift_weights(dx, dy, n), out);
}

}  // namespace visitcal
