// shift_image_lanczos's loops (lanczos_shift_kernels.hpp) compiled for AVX2, without FMA and with contraction
// off: the same IEEE operations as the baseline build, four doubles at a time. Without VISITCAL_X86_DISPATCH
// this file is compiled for the baseline ISA and never called, since cpu_has_avx2() is false.
#include "lanczos_shift_kernels.hpp"

namespace visitcal {

void shift_image_lanczos_avx2(const double* in, int width, int height, const LanczosShiftWeights& weights,
                              double* out) {
    shift_image_lanczos_impl(in, width, height, weights, out);
}

}  // namespace visitcal
