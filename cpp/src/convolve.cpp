#include "visitcal/convolve.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace visitcal {

std::vector<double> gaussian_kernel_1d(double sigma, int half_width) {
    if (!(sigma > 0.0) || !std::isfinite(sigma)) throw std::invalid_argument("sigma must be positive and finite");
    if (half_width < 0) throw std::invalid_argument("half_width must be >= 0");
    std::vector<double> k(2 * static_cast<std::size_t>(half_width) + 1);
    double sum = 0.0;
    for (int i = -half_width; i <= half_width; ++i) {
        const double v = std::exp(-0.5 * (i * i) / (sigma * sigma));
        k[static_cast<std::size_t>(i + half_width)] = v;
        sum += v;
    }
    for (double& v : k) v /= sum;
    return k;
}

namespace {

template <typename T>
void check_shapes(const ImageView<const T>& in, const ImageView<T>& out, int kny, int knx) {
    if (kny % 2 == 0 || knx % 2 == 0 || kny < 1 || knx < 1) {
        throw std::invalid_argument("kernel sizes must be odd, got (" + std::to_string(kny) + ", " +
                                    std::to_string(knx) + ")");
    }
    if (in.ny != out.ny || in.nx != out.nx) throw std::invalid_argument("output shape differs from the input's");
    if (kny > in.ny || knx > in.nx) {
        throw std::invalid_argument("kernel (" + std::to_string(kny) + ", " + std::to_string(knx) +
                                    ") is larger than the image (" + std::to_string(in.ny) + ", " +
                                    std::to_string(in.nx) + ")");
    }
}

template <typename T>
void check_finite(const ImageView<const T>& in) {
    long long bad = 0;
    int fy = -1, fx = -1;
    for (int y = 0; y < in.ny; ++y) {
        const T* r = in.row(y);
        for (int x = 0; x < in.nx; ++x) {
            if (!std::isfinite(r[x])) {
                if (bad++ == 0) fy = y, fx = x;
            }
        }
    }
    if (bad) {
        throw std::domain_error(std::to_string(bad) + " non-finite pixel(s), the first at (y, x) = (" +
                                std::to_string(fy) + ", " + std::to_string(fx) + ")");
    }
}

template <typename T>
void zero_border(ImageView<T> out, int hy, int hx) {
    for (int y = 0; y < out.ny; ++y) {
        T* r = out.row(y);
        if (y < hy || y >= out.ny - hy) {
            std::fill(r, r + out.nx, T(0));
        } else {
            std::fill(r, r + hx, T(0));
            std::fill(r + out.nx - hx, r + out.nx, T(0));
        }
    }
}

}  // namespace

template <typename T>
void convolve_separable(ImageView<const T> in, ImageView<T> out, const std::vector<double>& kx,
                        const std::vector<double>& ky) {
    const int knx = static_cast<int>(kx.size()), kny = static_cast<int>(ky.size());
    check_shapes(in, out, kny, knx);
    check_finite(in);
    const int hx = knx / 2, hy = kny / 2;
    const int nvx = in.nx - 2 * hx;  // valid columns x in [hx, nx - hx)
    // Ring of kny rows of the x-convolved image (valid columns only), in double: rows y - hy .. y + hy.
    std::vector<double> ring(static_cast<std::size_t>(kny) * nvx);
    std::vector<double> acc(nvx);
    auto smooth_row = [&](int y) {
        double* dst = ring.data() + static_cast<std::size_t>(y % kny) * nvx;
        std::fill(dst, dst + nvx, 0.0);
        const T* src = in.row(y);
        for (int i = 0; i < knx; ++i) {
            const double w = kx[static_cast<std::size_t>(i)];
            const T* s = src + (2 * hx - i);  // out column x = hx + xv reads in(x + hx - i)
            for (int xv = 0; xv < nvx; ++xv) dst[xv] += w * static_cast<double>(s[xv]);
        }
    };
    zero_border(out, hy, hx);
    for (int y = 0; y < 2 * hy; ++y) smooth_row(y);
    for (int y = hy; y < in.ny - hy; ++y) {
        smooth_row(y + hy);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int j = 0; j < kny; ++j) {
            const double w = ky[static_cast<std::size_t>(j)];
            const double* t = ring.data() + static_cast<std::size_t>((y + hy - j) % kny) * nvx;
            for (int xv = 0; xv < nvx; ++xv) acc[xv] += w * t[xv];
        }
        T* o = out.row(y) + hx;
        for (int xv = 0; xv < nvx; ++xv) o[xv] = static_cast<T>(acc[xv]);
    }
}

template <typename T>
void convolve_direct(ImageView<const T> in, ImageView<T> out, const double* kernel, int kny, int knx) {
    check_shapes(in, out, kny, knx);
    check_finite(in);
    const int hx = knx / 2, hy = kny / 2;
    const int nvx = in.nx - 2 * hx;
    std::vector<double> acc(nvx);
    zero_border(out, hy, hx);
    for (int y = hy; y < in.ny - hy; ++y) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int j = 0; j < kny; ++j) {
            const T* src = in.row(y + hy - j);
            for (int i = 0; i < knx; ++i) {
                const double w = kernel[static_cast<std::size_t>(j) * knx + i];
                if (w == 0.0) continue;
                const T* s = src + (2 * hx - i);
                for (int xv = 0; xv < nvx; ++xv) acc[xv] += w * static_cast<double>(s[xv]);
            }
        }
        T* o = out.row(y) + hx;
        for (int xv = 0; xv < nvx; ++xv) o[xv] = static_cast<T>(acc[xv]);
    }
}

template void convolve_separable<float>(ImageView<const float>, ImageView<float>, const std::vector<double>&,
                                        const std::vector<double>&);
template void convolve_separable<double>(ImageView<const double>, ImageView<double>, const std::vector<double>&,
                                         const std::vector<double>&);
template void convolve_direct<float>(ImageView<const float>, ImageView<float>, const double*, int, int);
template void convolve_direct<double>(ImageView<const double>, ImageView<double>, const double*, int, int);

}  // namespace visitcal
