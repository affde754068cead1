// The convolution kernels of convolve_kernels.hpp compiled for AVX2 (8 floats / 4 doubles per
// instruction instead of SSE2's 4 / 2), chosen at run time by convolve.cpp when the CPU has it.
// Deliberately without FMA and with contraction off: every output is the same sequence of IEEE
// multiplies and adds as the baseline build, so results are bit-identical whichever path runs
// (tests/unit/test_convolve.py checks it). Without VISITCAL_X86_DISPATCH this file is compiled for
// the baseline ISA and never called, since cpu_has_avx2() is false.
#include "convolve_kernels.hpp"

namespace visitcal {

const ConvKernels& conv_kernels_avx2() { return make_kernels(); }

}  // namespace visitcal
