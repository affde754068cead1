// Run-time CPU facts for the kernels that ship a second, AVX2 build of their hot loops
// (chebyshev_row_avx2.cpp, convolve_avx2.cpp, background_avx2.cpp, lanczos_avx2.cpp, fits_checksum_avx2.cpp,
// sdss_shape_avx2.cpp; cpp/CMakeLists.txt). Compiled at the baseline ISA.
#pragma once

namespace visitcal {

/// True when this CPU runs AVX2 and the library was built with VISITCAL_X86_DISPATCH.
bool cpu_has_avx2();

}  // namespace visitcal
