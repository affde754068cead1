// The aperture boundary weights (aperture_kernels.hpp) compiled for AVX2, without FMA and with contraction
// off: the same IEEE operations as the baseline build, four pixels per instruction. Without
// VISITCAL_X86_DISPATCH this file is compiled for the baseline ISA and never called, since cpu_has_avx2()
// is false.
#include "aperture_kernels.hpp"

namespace visitcal {
namespace aperture_kernels {

void boundary_weights_avx2(const double* cv, const double* cg, std::ptrdiff_t e0, int i0, int count, double xc,
                           int rcase, const aperture_geometry::RowEdge& C, const aperture_geometry::RowEdge& D,
                           const aperture_geometry::RowEdge& zr, double* w) {
    boundary_weights_impl(cv, cg, e0, i0, count, xc, rcase, C, D, zr, w);
}

}  // namespace aperture_kernels
}  // namespace visitcal
