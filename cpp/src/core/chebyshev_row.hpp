// Private to cpp/src: the row kernel of ChebyshevBoundedField::evaluate_grid, out[c] = sum_i g[i] T_i[c].
// Included by chebyshev.cpp (baseline ISA) and chebyshev_row_avx2.cpp (compiled with -mavx2): the
// anonymous namespace gives each translation unit its own copy, so the two instruction sets never
// meet in one symbol (no ODR clash).
#pragma once

#include <algorithm>
#include <cstddef>

namespace visitcal {
namespace {

// One output row: out[c] = sum_{i<=order} g[i] * table[i * n + c].
template <int Order, typename T>
void grid_row_fixed(const double* g, const double* table, std::size_t n, T* out) {
    double gl[Order + 1];
    const double* rows[Order + 1];
    for (int i = 0; i <= Order; ++i) {
        gl[i] = g[i];
        rows[i] = table + i * n;
    }
    for (std::size_t c = 0; c < n; ++c) {
        double acc = gl[0];
#pragma GCC unroll 16
        for (int i = 1; i <= Order; ++i) acc += gl[i] * rows[i][c];
        out[c] = static_cast<T>(acc);
    }
}

template <typename T>
void grid_row_generic(int order, const double* g, const double* table, std::size_t n, T* out) {
    constexpr std::size_t kBlock = 512;
    double acc[kBlock];
    for (std::size_t c0 = 0; c0 < n; c0 += kBlock) {
        const std::size_t len = std::min(kBlock, n - c0);
        for (std::size_t c = 0; c < len; ++c) acc[c] = g[0];
        for (int i = 1; i <= order; ++i) {
            const double gi = g[i];
            const double* ti = table + i * n + c0;
            for (std::size_t c = 0; c < len; ++c) acc[c] += gi * ti[c];
        }
        for (std::size_t c = 0; c < len; ++c) out[c0 + c] = static_cast<T>(acc[c]);
    }
}

template <typename T>
void grid_row(int order, const double* g, const double* table, std::size_t n, T* out) {
    switch (order) {
        case 0: return grid_row_fixed<0>(g, table, n, out);
        case 1: return grid_row_fixed<1>(g, table, n, out);
        case 2: return grid_row_fixed<2>(g, table, n, out);
        case 3: return grid_row_fixed<3>(g, table, n, out);
        case 4: return grid_row_fixed<4>(g, table, n, out);
        case 5: return grid_row_fixed<5>(g, table, n, out);
        case 6: return grid_row_fixed<6>(g, table, n, out);
        case 7: return grid_row_fixed<7>(g, table, n, out);
        case 8: return grid_row_fixed<8>(g, table, n, out);
        case 9: return grid_row_fixed<9>(g, table, n, out);
        case 10: return grid_row_fixed<10>(g, table, n, out);
        default: return grid_row_generic(order, g, table, n, out);
    }
}

}  // namespace

// AVX2 versions (defined in chebyshev_row_avx2.cpp when the build targets x86-64).
void grid_row_avx2(int order, const double* g, const double* table, std::size_t n, double* out);
void grid_row_avx2(int order, const double* g, const double* table, std::size_t n, float* out);

}  // namespace visitcal
