#include "visitcal/lanczos.hpp"

#include <cmath>
#include <stdexcept>

namespace visitcal {

namespace {
constexpr double kPi = 3.14159265358979323846;

double sinc(double x) {
    if (std::fabs(x) < 1e-12) return 1.0;
    const double px = kPi * x;
    return std::sin(px) / px;
}

// One axis: out[i] = sum_k in[i - shift + k] w, reading `in` with a stride; zero outside [0, n).
void shift_line(const double* in, std::ptrdiff_t in_stride, int n_px, double shift, int order, double* out,
                std::ptrdiff_t out_stride) {
    // out[i] samples the input at position i - shift = base + frac, base = floor(i - shift).
    const double s = -shift;
    const double fl = std::floor(s);
    const int base_off = static_cast<int>(fl);
    const double frac = s - fl;
    std::vector<double> w(2 * static_cast<std::size_t>(order));
    lanczos_weights(frac, order, w.data());
    for (int i = 0; i < n_px; ++i) {
        double acc = 0.0;
        const int first = i + base_off - (order - 1);
        for (int k = 0; k < 2 * order; ++k) {
            const int j = first + k;
            if (j >= 0 && j < n_px) acc += w[k] * in[j * in_stride];
        }
        out[i * out_stride] = acc;
    }
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

void shift_image_lanczos(const double* in, int width, int height, double dx, double dy, int n, double* out) {
    std::vector<double> tmp(static_cast<std::size_t>(width) * height);
    for (int y = 0; y < height; ++y) {
        shift_line(in + static_cast<std::ptrdiff_t>(y) * width, 1, width, dx, n, tmp.data() + static_cast<std::ptrdiff_t>(y) * width, 1);
    }
    for (int x = 0; x < width; ++x) shift_line(tmp.data() + x, width, height, dy, n, out + x, width);
}

}  // namespace visitcal
