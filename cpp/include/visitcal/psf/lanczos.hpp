// Lanczos interpolation: the kernel L_n(x) = sinc(x) sinc(x / n) for |x| < n, and sub-pixel shifts of
// small images with it (afw's offsetImage with "lanczos5"; Piff's PixelGrid renders with Lanczos(11)).
// The 2n weights of one offset are renormalised to unit sum, so a constant image stays constant and a
// shift conserves the sum wherever the kernel's support is inside the image.
#pragma once

#include <vector>

namespace visitcal {

/// L_n(x): sinc(x) sinc(x / n) for |x| < n, else 0 (sinc(x) = sin(pi x) / (pi x)).
double lanczos_kernel(double x, int n);

/// The 2n weights w[k] = L_n(k - (n - 1) - frac), k = 0..2n-1, for taps at offsets -(n-1)..n relative
/// to floor(position), renormalised to unit sum; frac in [0, 1).
void lanczos_weights(double frac, int n, double* w);

/// The weights of `lanczos_weights` and their derivatives dw[k] = d w[k] / d frac (quotient rule through
/// the renormalisation), for fitting sub-pixel positions (the pixel-grid PSF's centre fit).
void lanczos_weights_derivative(double frac, int n, double* w, double* dw);

/// Shift a (height, width) row-major image by (dx, dy) pixels (the light moves by +dx, +dy):
/// out(x, y) = sum_k in(x - dx + k, y - dy + l) L L, separably, with zero outside the image.
/// On x86-64 CPUs with AVX2 it runs an AVX2 build of its loops, bit-identical to the baseline's.
void shift_image_lanczos(const double* in, int width, int height, double dx, double dy, int n, double* out);

/// The weights of one shift (dx, dy) of order n (for each axis the floor of -shift and the 2n weights of its
/// fraction; none when the shift is not finite), for shifting several images by the same amount (the basis
/// images of a PCA PSF to one star) without recomputing their sines.
struct LanczosShiftWeights {
    double dx = 0.0, dy = 0.0;
    int n = 1;
    double sx = 0.0, sy = 0.0;  // floor(-dx), floor(-dy)
    std::vector<double> wx, wy;
};
LanczosShiftWeights lanczos_shift_weights(double dx, double dy, int n);

/// shift_image_lanczos with precomputed weights: the same output to the bit.
void shift_image_lanczos(const double* in, int width, int height, const LanczosShiftWeights& weights, double* out);

/// The baseline-ISA and AVX2 builds of shift_image_lanczos (tests compare them; call the ones above).
void shift_image_lanczos_baseline(const double* in, int width, int height, double dx, double dy, int n,
                                  double* out);
void shift_image_lanczos_avx2(const double* in, int width, int height, const LanczosShiftWeights& weights,
                              double* out);

}  // namespace visitcal
