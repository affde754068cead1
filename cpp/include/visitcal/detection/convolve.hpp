// Image convolution: separable (Gaussian smoothing), direct 2-D and FFT (overlap-save) kernels.
//
// Convolution, not correlation: out(y, x) = sum_{j,i} k(j, i) in(y + hy - j, x + hx - i) for an
// odd kernel of half sizes (hy, hx), as scipy.signal.convolve. Only the "valid" region, where the
// whole kernel lies on the image, is computed; the border of width (hx, hy) is set to zero and the
// caller masks it (EDGE).
//
// Arithmetic is in the image's type (float sums for float images, double for double): for float
// images the results agree with a double-precision reference to ~1e-6 of the image's scale
// (tests/unit/test_convolve.py asserts 1e-5). The hot loops exist twice, for the baseline ISA and
// for AVX2 (chosen at run time on x86-64), with bit-identical results (see
// cpp/src/detection/convolve_kernels.hpp); `baseline_only` forces the former (for tests).
//
// Errors: std::invalid_argument when a kernel length is even, the kernel does not fit in the
// image or shapes differ; std::domain_error when the input holds a non-finite value (its count and
// the first position are in the message). Thread-safe: no state; every call owns its scratch.
#pragma once

#include <cstddef>
#include <vector>

#include "visitcal/core/image_view.hpp"

namespace visitcal {

/// Gaussian of standard deviation `sigma` (pixels) sampled at offsets -h..h, normalised to unit sum.
std::vector<double> gaussian_kernel_1d(double sigma, int half_width);

/// Separable convolution by `kx` along x and `ky` along y (odd lengths); the weights are rounded to
/// T first. An exactly symmetric kernel (as a Gaussian) takes a path with half the multiplies.
template <typename T>
void convolve_separable(ImageView<const T> in, ImageView<T> out, const std::vector<double>& kx,
                        const std::vector<double>& ky, bool baseline_only = false);

/// Rows [y_begin, y_begin + out.ny) of convolve_separable's output (border rows and columns zero),
/// written to `out` (its row 0 is image row y_begin, out.nx == in.nx): bit-identical to the same rows of
/// the whole image's output, for smoothing in bands without holding the whole smoothed image.
template <typename T>
void convolve_separable_rows(ImageView<const T> in, ImageView<T> out, int y_begin, const std::vector<double>& kx,
                             const std::vector<double>& ky, bool baseline_only = false);

/// Direct 2-D convolution with an odd (kny, knx) kernel stored row-major.
template <typename T>
void convolve_direct(ImageView<const T> in, ImageView<T> out, const double* kernel, int kny, int knx,
                     bool baseline_only = false);

/// FFT convolution (overlap-save with tile x tile tiles, tile a power of two in [16, 8192] and >= the
/// kernel's larger side; 0 picks fft_tile_size()). Same output as convolve_direct to rounding (~1e-7 relative to
/// the output's scale in float, ~1e-15 in double).
template <typename T>
void convolve_fft(ImageView<const T> in, ImageView<T> out, const double* kernel, int kny, int knx, int tile = 0,
                  bool baseline_only = false);

/// The overlap-save tile size minimising (number of tiles) x N^2 (log2 N + 2) (x 1.15 above 256)
/// over powers of two N (32 .. 4096, N >= max(kny, knx)); see convolve.cpp for the measurements.
int fft_tile_size(int ny, int nx, int kny, int knx);

}  // namespace visitcal
