// Image convolution: separable (Gaussian smoothing) and direct 2-D kernels.
//
// Convolution, not correlation: out(y, x) = sum_{j,i} k(j, i) in(y + hy - j, x + hx - i) for an
// odd kernel of half sizes (hy, hx), as scipy.signal.convolve. Only the "valid" region, where the
// whole kernel lies on the image, is computed; the border of width (hx, hy) is set to zero and the
// caller masks it (EDGE). Sums are accumulated in double for float and double images alike.
// Thread-safe: no state; every call owns its scratch rows.
#pragma once

#include <cstddef>
#include <vector>

namespace visitcal {

/// A 2-D image view, element (y, x) at data[y * stride + x] (x contiguous).
template <typename T>
struct ImageView {
    T* data;
    int ny;
    int nx;
    std::ptrdiff_t stride;
    T* row(int y) const { return data + static_cast<std::ptrdiff_t>(y) * stride; }
};

/// Gaussian of standard deviation `sigma` (pixels) sampled at offsets -h..h, normalised to unit sum.
std::vector<double> gaussian_kernel_1d(double sigma, int half_width);

/// Separable convolution by `kx` along x and `ky` along y (odd lengths). Throws std::invalid_argument
/// when a kernel length is even or the kernel does not fit in the image, std::domain_error when
/// the input holds a non-finite value (its count and the first position are in the message).
template <typename T>
void convolve_separable(ImageView<const T> in, ImageView<T> out, const std::vector<double>& kx,
                        const std::vector<double>& ky);

/// Direct 2-D convolution with an odd (kny, knx) kernel stored row-major; same errors.
template <typename T>
void convolve_direct(ImageView<const T> in, ImageView<T> out, const double* kernel, int kny, int knx);

}  // namespace visitcal
