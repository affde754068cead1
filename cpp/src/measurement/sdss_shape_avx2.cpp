// SdssShape's pixel sums (sdss_shape_kernels.hpp) compiled for AVX2, without FMA and with contraction off:
// the same IEEE operations as the baseline build, a four-double vector per instruction. Without
// VISITCAL_X86_DISPATCH this file is compiled for the baseline ISA and never called, since
// cpu_has_avx2() is false.
#include "sdss_shape_kernels.hpp"

namespace visitcal {
namespace sdss_kernels {

void row_pair_avx2(const double* g0, const double* g1, const double* v, const double* var, const double* use,
                   std::ptrdiff_t cw, int nx, double ex0, bool two_rows, SdssRowSums* out) {
    sdss_row_pair_impl(g0, g1, v, var, use, cw, nx, ex0, two_rows, out);
}

void sub_rows_avx2(const double* g, const double* v, int nx, double ex0, double h, double* wsum,
                   SdssSubRowSums* out) {
    sdss_sub_rows_impl(g, v, nx, ex0, h, wsum, out);
}

}  // namespace sdss_kernels
}  // namespace visitcal
