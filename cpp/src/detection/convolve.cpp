#include "visitcal/detection/convolve.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "convolve_kernels.hpp"
#include "../core/cpu_features.hpp"

namespace visitcal {

std::vector<double> gaussian_kernel_1d(double sigma, int half_width) {
    if (!(sigma > 0.0) || !std::isfinite(sigma)) throw std::invalid_argument("sigma must be positive and finite");
    // Bounded before the allocation (the Python wrapper checks first; this keeps the core safe alone).
    if (half_width < 0 || half_width > (1 << 20)) throw std::invalid_argument("half_width must be in [0, 1048576]");
    std::vector<double> k(2 * static_cast<std::size_t>(half_width) + 1);
    if (sigma * sigma == 0.0) {  // sigma < ~1e-162: 0 / 0 at the centre tap would make the kernel NaN
        k[static_cast<std::size_t>(half_width)] = 1.0;  // the limit: a delta
        return k;
    }
    double sum = 0.0;
    for (int i = -half_width; i <= half_width; ++i) {
        const double di = i;  // i * i in int overflows from half_width 46341 on (a NaN kernel)
        const double v = std::exp(-0.5 * (di * di) / (sigma * sigma));
        k[static_cast<std::size_t>(i + half_width)] = v;
        sum += v;
    }
    for (double& v : k) v /= sum;
    return k;
}

namespace {

const ConvKernels& kernels(bool baseline_only) {
    if (!baseline_only && cpu_has_avx2()) return conv_kernels_avx2();
    return make_kernels();  // this translation unit's (baseline ISA) instances
}

template <typename T>
void check_kernel(const ImageView<const T>& in, int kny, int knx) {
    if (kny % 2 == 0 || knx % 2 == 0 || kny < 1 || knx < 1) {
        throw std::invalid_argument("kernel sizes must be odd, got (" + std::to_string(kny) + ", " +
                                    std::to_string(knx) + ")");
    }
    if (kny > in.ny || knx > in.nx) {
        throw std::invalid_argument("kernel (" + std::to_string(kny) + ", " + std::to_string(knx) +
                                    ") is larger than the image (" + std::to_string(in.ny) + ", " +
                                    std::to_string(in.nx) + ")");
    }
}

template <typename T>
void check_shapes(const ImageView<const T>& in, const ImageView<T>& out, int kny, int knx) {
    if (in.ny != out.ny || in.nx != out.nx) throw std::invalid_argument("output shape differs from the input's");
    check_kernel(in, kny, knx);
}

// Called only when a kernel saw a non-finite output: names the first non-finite input pixel, or
// returns quietly when the input is finite (a genuine overflow, left in the output as inf/NaN).
// Rows [y0, y1) only when given (a band's input rows).
template <typename T>
void check_finite(const ImageView<const T>& in, int y0 = 0, int y1 = -1) {
    long long bad = 0;
    int fy = -1, fx = -1;
    if (y1 < 0) y1 = in.ny;
    for (int y = y0; y < y1; ++y) {
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

bool run_separable(const ConvKernels& k, ImageView<const float> in, ImageView<float> out, int y_begin, const float* kx,
                   int knx, const float* ky, int kny) {
    return k.separable_f(in, out, y_begin, kx, knx, ky, kny);
}
bool run_separable(const ConvKernels& k, ImageView<const double> in, ImageView<double> out, int y_begin,
                   const double* kx, int knx, const double* ky, int kny) {
    return k.separable_d(in, out, y_begin, kx, knx, ky, kny);
}
bool run_direct(const ConvKernels& k, ImageView<const float> in, ImageView<float> out, const float* w, int kny,
                int knx) {
    return k.direct_f(in, out, w, kny, knx);
}
bool run_direct(const ConvKernels& k, ImageView<const double> in, ImageView<double> out, const double* w, int kny,
                int knx) {
    return k.direct_d(in, out, w, kny, knx);
}
bool run_fft(const ConvKernels& k, ImageView<const float> in, ImageView<float> out, const double* w, int kny,
             int knx, int n) {
    return k.fft_f(in, out, w, kny, knx, n);
}
bool run_fft(const ConvKernels& k, ImageView<const double> in, ImageView<double> out, const double* w, int kny,
             int knx, int n) {
    return k.fft_d(in, out, w, kny, knx, n);
}

}  // namespace

template <typename T>
void convolve_separable(ImageView<const T> in, ImageView<T> out, const std::vector<double>& kx,
                        const std::vector<double>& ky, bool baseline_only) {
    const int knx = static_cast<int>(kx.size()), kny = static_cast<int>(ky.size());
    check_shapes(in, out, kny, knx);
    const std::vector<T> kxt(kx.begin(), kx.end()), kyt(ky.begin(), ky.end());
    zero_border(out, kny / 2, knx / 2);
    const int hy = kny / 2;
    const ImageView<T> valid{out.row(hy), out.ny - 2 * hy, out.nx, out.stride};
    if (!run_separable(kernels(baseline_only), in, valid, hy, kxt.data(), knx, kyt.data(), kny)) check_finite(in);
}

template <typename T>
void convolve_separable_rows(ImageView<const T> in, ImageView<T> out, int y_begin, const std::vector<double>& kx,
                             const std::vector<double>& ky, bool baseline_only) {
    const int knx = static_cast<int>(kx.size()), kny = static_cast<int>(ky.size());
    if (out.nx != in.nx) throw std::invalid_argument("output width differs from the input's");
    check_kernel(in, kny, knx);
    if (y_begin < 0 || out.ny < 0 || y_begin > in.ny - out.ny) {
        throw std::invalid_argument("rows [" + std::to_string(y_begin) + ", " + std::to_string(y_begin + out.ny) +
                                    ") are outside the image's " + std::to_string(in.ny) + " rows");
    }
    const int hy = kny / 2, hx = knx / 2;
    // The valid rows of the band; the rest of it (the image's top and bottom border) and its border
    // columns are zero, as in convolve_separable's output.
    const int v0 = std::max(y_begin, hy), v1 = std::min(y_begin + out.ny, in.ny - hy);
    for (int y = y_begin; y < y_begin + out.ny; ++y) {
        T* r = out.row(y - y_begin);
        if (y < v0 || y >= v1) {
            std::fill(r, r + out.nx, T(0));
        } else {
            std::fill(r, r + hx, T(0));
            std::fill(r + out.nx - hx, r + out.nx, T(0));
        }
    }
    if (v1 <= v0) return;
    const std::vector<T> kxt(kx.begin(), kx.end()), kyt(ky.begin(), ky.end());
    const ImageView<T> valid{out.row(v0 - y_begin), v1 - v0, out.nx, out.stride};
    if (!run_separable(kernels(baseline_only), in, valid, v0, kxt.data(), knx, kyt.data(), kny)) {
        check_finite(in, v0 - hy, v1 + hy);  // the input rows these outputs read
    }
}

template <typename T>
void convolve_direct(ImageView<const T> in, ImageView<T> out, const double* kernel, int kny, int knx,
                     bool baseline_only) {
    check_shapes(in, out, kny, knx);
    const std::vector<T> k(kernel, kernel + static_cast<std::ptrdiff_t>(kny) * knx);
    zero_border(out, kny / 2, knx / 2);
    if (!run_direct(kernels(baseline_only), in, out, k.data(), kny, knx)) check_finite(in);
}

int fft_tile_size(int ny, int nx, int kny, int knx) {
    int best = 0;
    double best_cost = 0.0;
    // Measured on a 4072 x 4000 float32 image (one AVX2 core): 16 x 16 tiles cost 8x what the
    // N^2 log2 N count says (per-tile overhead), so the smallest tile is 32; "+ 2" stands for the
    // packing, transposes and spectrum product (~2 FFT stages' worth per pixel); above 256 the
    // N x (N/2 + 8) spectrum outgrows a 512 kB L2 (41 x 41 kernel: 0.110 s at 256 vs 0.119 s at 512
    // although the count favours 512 by 1%), hence the 15% penalty.
    for (int n = 32; n <= 4096; n *= 2) {
        if (n < kny || n < knx) continue;
        const double ty = std::ceil(double(ny - kny + 1) / (n - kny + 1));
        const double tx = std::ceil(double(nx - knx + 1) / (n - knx + 1));
        const double cost = ty * tx * double(n) * n * (std::log2(double(n)) + 2.0) * (n > 256 ? 1.15 : 1.0);
        if (best == 0 || cost < best_cost) best = n, best_cost = cost;
    }
    if (best == 0) throw std::invalid_argument("kernel too large for the FFT path (max side 4096)");
    return best;
}

template <typename T>
void convolve_fft(ImageView<const T> in, ImageView<T> out, const double* kernel, int kny, int knx, int tile,
                  bool baseline_only) {
    check_shapes(in, out, kny, knx);
    if (tile == 0) tile = fft_tile_size(in.ny, in.nx, kny, knx);
    if (tile < 16 || tile > 8192 || (tile & (tile - 1)) != 0 || tile < kny || tile < knx) {
        throw std::invalid_argument("tile must be a power of two in [16, 8192] and >= the kernel's sides, got " +
                                    std::to_string(tile));
    }
    zero_border(out, kny / 2, knx / 2);
    if (!run_fft(kernels(baseline_only), in, out, kernel, kny, knx, tile)) check_finite(in);
}

template void convolve_separable_rows<float>(ImageView<const float>, ImageView<float>, int,
                                              const std::vector<double>&, const std::vector<double>&, bool);
template void convolve_separable_rows<double>(ImageView<const double>, ImageView<double>, int,
                                               const std::vector<double>&, const std::vector<double>&, bool);
template void convolve_separable<float>(ImageView<const float>, ImageView<float>, const std::vector<double>&,
                                        const std::vector<double>&, bool);
template void convolve_separable<double>(ImageView<const double>, ImageView<double>, const std::vector<double>&,
                                         const std::vector<double>&, bool);
template void convolve_direct<float>(ImageView<const float>, ImageView<float>, const double*, int, int, bool);
template void convolve_direct<double>(ImageView<const double>, ImageView<double>, const double*, int, int, bool);
template void convolve_fft<float>(ImageView<const float>, ImageView<float>, const double*, int, int, int, bool);
template void convolve_fft<double>(ImageView<const double>, ImageView<double>, const double*, int, int, int, bool);

}  // namespace visitcal
