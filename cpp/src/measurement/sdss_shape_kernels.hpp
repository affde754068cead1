// Private to cpp/src: SdssShape's per-iteration pixel sums (the inner loops of weighted_sums in
// sdss_shape.cpp), compiled twice: by sdss_shape.cpp at the baseline ISA and by sdss_shape_avx2.cpp
// with -mavx2 -mno-fma -ffp-contract=off, chosen at run time (as lanczos_shift_kernels.hpp).
//
// The sums are written on four-double vectors (GCC/Clang vector extensions: one ymm register with AVX2,
// two xmm with SSE2) whose lanes are partial sums that were already independent in the scalar loops
// these replace (issue 25), so every lane performs the same IEEE multiplies and adds, in the same
// order, as the scalar code did and the results are the same to the bit on either build:
// - one sample per pixel: the scalar loop kept two sets of partial sums per row (even and odd pixels);
//   the lanes are (row y even, row y odd, row y + 1 even, row y + 1 odd), two rows at a time;
// - 4 x 4 sub-samples: each sub-row kept its own sums over the row; the lanes are the four sub-rows.
// No element-wise operation is fused (no FMA, contraction off), and no sum is reassociated.
#pragma once

#include <cstddef>
#include <cstring>

namespace visitcal {

/// Per-row sums of the one-sample-per-pixel path: sum w v, sum w v ex, sum w v ex^2, sum w^2 var, sum w^2
/// (w = weight * use), each the even-pixel partial sum plus the odd-pixel one.
struct SdssRowSums {
    double i0, ix, ixx, w2v, w2;
};

/// Sums of the 4 x 4 sub-sampled path for the four sub-rows j of one pixel row: a0[j] = sum_i v_i sw_ij,
/// ax[j] = sum_i v_i swx_ij, axx[j] = sum_i v_i swxx_ij; wsum[i] = sum_j sw_ij (j in order).
struct SdssSubRowSums {
    double a0[4], ax[4], axx[4];
};

namespace sdss_kernels {
// g0, g1: the weights of rows y and y + 1 (nx each); v, var, use: their cached pixels (row stride cw).
// With two_rows false only row y is summed (out[1] untouched).
using RowPairFn = void (*)(const double* g0, const double* g1, const double* v, const double* var,
                           const double* use, std::ptrdiff_t cw, int nx, double ex0, bool two_rows,
                           SdssRowSums* out);
// g: the four sub-rows' weights (row j at g + j * 4 nx); v: the row's values (0 where unusable);
// ex0: the first sub-sample's x offset, h = 1/4; wsum: nx totals, overwritten.
using SubRowsFn = void (*)(const double* g, const double* v, int nx, double ex0, double h, double* wsum,
                           SdssSubRowSums* out);

void row_pair_avx2(const double* g0, const double* g1, const double* v, const double* var, const double* use,
                   std::ptrdiff_t cw, int nx, double ex0, bool two_rows, SdssRowSums* out);
void sub_rows_avx2(const double* g, const double* v, int nx, double ex0, double h, double* wsum,
                   SdssSubRowSums* out);
}  // namespace sdss_kernels

namespace {

// The vector helpers below are inline and local to each translation unit, so GCC's note that a vector
// return changes the ABI without AVX (-Wpsabi) concerns no call across units. GCC reports it at the end
// of the unit, so it stays off for the two units that include this header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef double SdssV4 __attribute__((vector_size(32)));

inline SdssV4 sdss_pair2(const double* a, const double* b) {
    SdssV4 r = {a[0], a[1], b[0], b[1]};
    return r;
}

inline void sdss_row_pair_impl(const double* g0, const double* g1, const double* v, const double* var,
                               const double* use, std::ptrdiff_t cw, int nx, double ex0, bool two_rows,
                               SdssRowSums* out) {
    // Row y + 1's data; a lone row reads row y twice and drops lanes 2 and 3.
    const std::ptrdiff_t d = two_rows ? cw : 0;
    const double* gb = two_rows ? g1 : g0;
    SdssV4 i0 = {0, 0, 0, 0}, ix = i0, ixx = i0, w2v = i0, w2 = i0;
    int i = 0;
    for (; i + 1 < nx; i += 2) {
        const SdssV4 wt = sdss_pair2(g0 + i, gb + i) * sdss_pair2(use + i, use + d + i);
        const double e0 = ex0 + i, e1 = ex0 + (i + 1);  // the scalar loop's ex0 + (i + u)
        const SdssV4 ex = {e0, e1, e0, e1};
        const SdssV4 wv = wt * sdss_pair2(v + i, v + d + i), wvx = wv * ex;
        i0 += wv;
        ix += wvx;
        ixx += wvx * ex;
        w2v += wt * wt * sdss_pair2(var + i, var + d + i);
        w2 += wt * wt;
    }
    double a[5][4];
    std::memcpy(a[0], &i0, sizeof(a[0]));
    std::memcpy(a[1], &ix, sizeof(a[1]));
    std::memcpy(a[2], &ixx, sizeof(a[2]));
    std::memcpy(a[3], &w2v, sizeof(a[3]));
    std::memcpy(a[4], &w2, sizeof(a[4]));
    const int rows = two_rows ? 2 : 1;
    for (int r = 0; r < rows; ++r) {
        const int l = 2 * r;
        if (i < nx) {  // odd width: the last pixel joins the even sums
            const double* gr = r == 0 ? g0 : g1;
            const std::ptrdiff_t o = r * cw + i;
            const double wt = gr[i] * use[o], ex = ex0 + i;
            const double wv = wt * v[o], wvx = wv * ex;
            a[0][l] += wv;
            a[1][l] += wvx;
            a[2][l] += wvx * ex;
            a[3][l] += wt * wt * var[o];
            a[4][l] += wt * wt;
        }
        out[r] = SdssRowSums{a[0][l] + a[0][l + 1], a[1][l] + a[1][l + 1], a[2][l] + a[2][l + 1],
                             a[3][l] + a[3][l + 1], a[4][l] + a[4][l + 1]};
    }
}

inline void sdss_sub_rows_impl(const double* g, const double* v, int nx, double ex0, double h, double* wsum,
                               SdssSubRowSums* out) {
    constexpr int kS = 4;  // sub-samples per pixel side
    const std::ptrdiff_t nsub = static_cast<std::ptrdiff_t>(kS) * nx;
    SdssV4 a0 = {0, 0, 0, 0}, ax = a0, axx = a0;
    for (int i = 0; i < nx; ++i) {
        const std::ptrdiff_t o = static_cast<std::ptrdiff_t>(kS) * i;
        double ex = ex0 + kS * i * h;  // the scalar loop's ex, stepped by h
        SdssV4 sw = {0, 0, 0, 0}, swx = sw, swxx = sw;
        for (int u = 0; u < kS; ++u, ex += h) {
            const SdssV4 e = {g[o + u], g[nsub + o + u], g[2 * nsub + o + u], g[3 * nsub + o + u]};
            const SdssV4 ee = e * ex;
            sw += e;
            swx += ee;
            swxx += ee * ex;
        }
        double s[4];
        std::memcpy(s, &sw, sizeof(s));
        wsum[i] = (((0.0 + s[0]) + s[1]) + s[2]) + s[3];  // sub-rows in order, from 0 as before
        const double pv = v[i];  // 0 for unusable pixels
        a0 += pv * sw;
        ax += pv * swx;
        axx += pv * swxx;
    }
    std::memcpy(out->a0, &a0, sizeof(out->a0));
    std::memcpy(out->ax, &ax, sizeof(out->ax));
    std::memcpy(out->axx, &axx, sizeof(out->axx));
}

}  // namespace
}  // namespace visitcal
