// The grid row kernel compiled for AVX2 (4 doubles per instruction instead of SSE2's 2), chosen at
// run time by evaluate_grid when the CPU has it. Deliberately without FMA (and with contraction
// off): every output is the same sequence of IEEE multiplies and adds as the baseline build, so
// results are bit-identical whichever path runs. At orders >= 4 the baseline kernel is bound by
// arithmetic, not memory (bench/README.md), which is what this doubles.
#include "chebyshev_row.hpp"

namespace visitcal {

// Without VISITCAL_X86_DISPATCH this file is compiled for the baseline ISA and never called, since
// cpu_has_avx2() (cpu_features.cpp) is false.
void grid_row_avx2(int order, const double* g, const double* table, std::size_t n, double* out) {
    grid_row(order, g, table, n, out);
}
void grid_row_avx2(int order, const double* g, const double* table, std::size_t n, float* out) {
    grid_row(order, g, table, n, out);
}

}  // namespace visitcal
