// Private to cpp/src: the body of shift_image_lanczos, compiled twice: by lanczos.cpp at the baseline ISA
// and by lanczos_avx2.cpp with -mavx2 -mno-fma -ffp-contract=off (4 doubles per instruction instead of
// SSE2's 2), chosen at run time. Every output is the same sequence of IEEE multiplies and adds in the
// same order on either path (element-wise loops, no fused multiply-add), so the results are
// bit-identical whichever runs (tests/unit/psf/test_lanczos.py). The anonymous namespace gives each
// translation unit its own copy.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "visitcal/psf/lanczos.hpp"

namespace visitcal {
namespace {

inline void shift_image_lanczos_impl(const double* in, int width, int height, const LanczosShiftWeights& sw,
                                     double* out) {
    // Output pixel i samples the input at i - shift = floor(-shift) + i + frac: every pixel of an axis has
    // the same fractional position, so each axis's 2n weights are computed once (the sines dominate; the
    // caller may reuse them for several images). Taps are summed in ascending order and taps off the image
    // are skipped.
    const int n = sw.n;
    if (!std::isfinite(sw.dx) || !std::isfinite(sw.dy)) {  // no defined shift (and floor(NaN) has no int)
        std::fill(out, out + static_cast<std::ptrdiff_t>(width) * height, std::numeric_limits<double>::quiet_NaN());
        return;
    }
    std::vector<double> tmp(static_cast<std::size_t>(width) * height);
    const std::vector<double>& wx = sw.wx;
    const std::vector<double>& wy = sw.wy;
    const double sx = sw.sx, sy = sw.sy;
    // A shift beyond the stamp (plus the taps) leaves every tap off it, whatever its size: clamped
    // there before the int conversion, which is undefined beyond INT_MAX.
    const double lx = static_cast<double>(width) + 2.0 * n, ly = static_cast<double>(height) + 2.0 * n;
    const int bx = static_cast<int>(std::min(std::max(sx, -lx), lx)) - (n - 1);
    const int by = static_cast<int>(std::min(std::max(sy, -ly), ly)) - (n - 1);
    const double* w = wx.data();
    // When every tap of every column lies within 2n pixels of the row (any shift of up to ~n pixels), each
    // row is copied into zeros padded by 2n on both sides and all its columns summed tap by tap, vectorised:
    // a tap off the row then adds w * 0 = +-0 to a sum that started from +0.0 and so is never -0.0, which
    // leaves the sum unchanged to the bit, as skipping the tap did. With a 25-px stamp and Lanczos 11 (the
    // PCA PSF's), 21 of 25 columns were edge columns summed one by one with a bounds test per tap.
    const int pad = 2 * n;
    if (bx >= -pad && bx + 2 * n - 1 <= pad) {
        std::vector<double> padded(static_cast<std::size_t>(width) + 2 * static_cast<std::size_t>(pad), 0.0);
        for (int r = 0; r < height; ++r) {
            const double* row = in + static_cast<std::ptrdiff_t>(r) * width;
            double* t = tmp.data() + static_cast<std::ptrdiff_t>(r) * width;
            std::copy(row, row + width, padded.begin() + pad);
            for (int i = 0; i < width; ++i) t[i] = 0.0;
            for (int k = 0; k < 2 * n; ++k) {
                const double wk = w[k];
                const double* src = padded.data() + (pad + bx + k);
                for (int i = 0; i < width; ++i) t[i] += wk * src[i];
            }
        }
    } else {
        // A larger shift: columns whose 2n taps all lie on the row need no bounds test, [i_lo, i_hi), and are
        // summed tap by tap in the same order as the bounds-tested edge columns (the split changes no bit).
        const int i_lo = std::min(width, std::max(0, -bx));
        const int i_hi = std::max(i_lo, std::min(width, width - bx - 2 * n + 1));
        for (int r = 0; r < height; ++r) {
            const double* row = in + static_cast<std::ptrdiff_t>(r) * width;
            double* t = tmp.data() + static_cast<std::ptrdiff_t>(r) * width;
            auto edge = [&](int i) {
                double acc = 0.0;
                for (int k = 0; k < 2 * n; ++k) {
                    const int j = i + bx + k;
                    if (j >= 0 && j < width) acc += w[k] * row[j];
                }
                t[i] = acc;
            };
            for (int i = 0; i < i_lo; ++i) edge(i);
            // tap by tap over the interior columns (each column's sum still in ascending tap order, from 0.0)
            for (int i = i_lo; i < i_hi; ++i) t[i] = 0.0;
            for (int k = 0; k < 2 * n && i_hi > i_lo; ++k) {
                const double wk = w[k];
                const double* src = row + (i_lo + bx + k);
                double* dst = t + i_lo;
                for (int i = 0, m = i_hi - i_lo; i < m; ++i) dst[i] += wk * src[i];
            }
            for (int i = i_hi; i < width; ++i) edge(i);
        }
    }
    for (int i = 0; i < height; ++i) {
        double* o = out + static_cast<std::ptrdiff_t>(i) * width;
        for (int q = 0; q < width; ++q) o[q] = 0.0;
        for (int k = 0; k < 2 * n; ++k) {
            const int j = i + by + k;
            if (j < 0 || j >= height) continue;
            const double w = wy[k];
            const double* t = tmp.data() + static_cast<std::ptrdiff_t>(j) * width;
            for (int q = 0; q < width; ++q) o[q] += w * t[q];
        }
    }
}

}  // namespace
}  // namespace visitcal
