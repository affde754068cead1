// The FITS conversion + checksum loops compiled for AVX2 (32-byte vpshufb swaps and 4-lane 64-bit sums),
// chosen at run time by fits_checksum.cpp when the CPU has it. Integer arithmetic only: the bytes and sums
// are those of the baseline build.
#include "fits_checksum_loops.hpp"

namespace visitcal {

// Without VISITCAL_X86_DISPATCH this file is compiled for the baseline ISA and never called, since
// cpu_has_avx2() (cpu_features.cpp) is false.
std::uint32_t fits_convert_avx2(int itemsize, const unsigned char* src, unsigned char* dst, std::size_t count,
                                bool swap_in, bool swap_out, std::uint32_t initial) {
    return fits_convert_any(itemsize, src, dst, count, swap_in, swap_out, initial);
}

}  // namespace visitcal
