// The background statistics' pixel loops of background_kernels.hpp compiled for AVX2, chosen at run
// time by background.cpp when the CPU has it. Deliberately without FMA and with contraction off:
// every value is the same sequence of IEEE operations as the baseline build, so the statistics are
// bit-identical whichever path runs (tests/unit/detection/test_background.py checks it). Without
// VISITCAL_X86_DISPATCH this file is compiled for the baseline ISA and never called, since
// cpu_has_avx2() is false.
#include "background_kernels.hpp"

namespace visitcal {

const BgKernels& bg_kernels_avx2() { return make_bg_kernels(); }

}  // namespace visitcal
