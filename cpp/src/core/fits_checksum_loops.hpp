// Private to cpp/src: the conversion + checksum loops of fits_checksum.cpp. Included by fits_checksum.cpp
// (baseline ISA) and fits_checksum_avx2.cpp (compiled with -mavx2, where GCC turns the byte swaps into
// vpshufb and the widening sums into 4-lane adds): the anonymous namespace gives each translation unit its
// own copy, so the two instruction sets never meet in one symbol (no ODR clash). Integer arithmetic only:
// both builds give the same sums and bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "visitcal/core/fits_checksum.hpp"

namespace visitcal {
namespace {

template <typename U>
inline U fits_bswap(U v) {
    if constexpr (sizeof(U) == 2) return static_cast<U>(__builtin_bswap16(v));
    if constexpr (sizeof(U) == 4) return __builtin_bswap32(v);
    if constexpr (sizeof(U) == 8) return __builtin_bswap64(v);
    return v;
}

// Sums are folded every kFitsBlock elements so the 64-bit accumulator cannot overflow (an element adds at
// most 2 * (2^32 - 1)); even, so 2-byte runs keep their word phase across blocks.
constexpr std::size_t kFitsBlock = std::size_t{1} << 28;

// Value bits U of each element read from `src` (byte-swapped when SwapIn), written to `dst` (swapped when
// SwapOut; skipped when !HasDst), the sum of the element's FITS words accumulated: a 4-byte element is one
// word, an 8-byte one two (high, low), a 2-byte one half a word (element 2k the high half of word k; runs
// start on word boundaries). The branches are template parameters so each inner loop is straight-line.
template <typename U, bool SwapIn, bool SwapOut, bool HasDst>
std::uint64_t fits_convert_run(const unsigned char* src, unsigned char* dst, std::size_t start, std::size_t stop) {
    std::uint64_t s = 0;
    if constexpr (sizeof(U) == 2) {
        std::uint64_t hi = 0, lo = 0;
        std::size_t i = start;
        for (; i + 1 < stop; i += 2) {
            U a, b;
            std::memcpy(&a, src + 2 * i, 2);
            std::memcpy(&b, src + 2 * i + 2, 2);
            if constexpr (SwapIn) { a = fits_bswap(a); b = fits_bswap(b); }
            hi += a;
            lo += b;
            if constexpr (HasDst) {
                const U wa = SwapOut ? fits_bswap(a) : a, wb = SwapOut ? fits_bswap(b) : b;
                std::memcpy(dst + 2 * i, &wa, 2);
                std::memcpy(dst + 2 * i + 2, &wb, 2);
            }
        }
        if (i < stop) {  // an odd run ends on the high half of a word
            U a;
            std::memcpy(&a, src + 2 * i, 2);
            if constexpr (SwapIn) a = fits_bswap(a);
            hi += a;
            if constexpr (HasDst) {
                const U wa = SwapOut ? fits_bswap(a) : a;
                std::memcpy(dst + 2 * i, &wa, 2);
            }
        }
        s = (hi << 16) + lo;  // < 2^28 * 2^16 * 2^16 + ...: no overflow within a block
    } else {
        for (std::size_t i = start; i < stop; ++i) {
            U v;
            std::memcpy(&v, src + sizeof(U) * i, sizeof(U));
            if constexpr (SwapIn) v = fits_bswap(v);
            if constexpr (sizeof(U) == 8) {
                s += (v >> 32) + (v & 0xFFFFFFFFu);
            } else {
                s += v;
            }
            if constexpr (HasDst) {
                const U w = SwapOut ? fits_bswap(v) : v;
                std::memcpy(dst + sizeof(U) * i, &w, sizeof(U));
            }
        }
    }
    return s;
}

template <typename U, bool SwapIn, bool SwapOut, bool HasDst>
std::uint32_t fits_convert_blocks(const unsigned char* src, unsigned char* dst, std::size_t count,
                                  std::uint32_t initial) {
    std::uint32_t total = initial;
    for (std::size_t start = 0; start < count; start += kFitsBlock) {
        const std::size_t stop = count - start < kFitsBlock ? count : start + kFitsBlock;
        const std::uint64_t s = fits_convert_run<U, SwapIn, SwapOut, HasDst>(src, dst, start, stop);
        total = fits_checksum_add(total, fits_fold(s));
    }
    return total;
}

// In place: one pointer read and written at the same index, so the compiler vectorises without the run-time
// overlap test that would send an exactly overlapping src/dst pair to the scalar loop.
template <typename U, bool SwapIn, bool SwapOut>
std::uint32_t fits_convert_inplace(unsigned char* p, std::size_t count, std::uint32_t initial) {
    return fits_convert_blocks<U, SwapIn, SwapOut, true>(p, p, count, initial);
}

template <typename U>
std::uint32_t fits_convert_typed(const unsigned char* src, unsigned char* dst, std::size_t count, bool swap_in,
                                 bool swap_out, std::uint32_t initial) {
    if (dst == src) {
        if (swap_in == swap_out) {  // the bytes stay as they are: the sum alone
            return swap_in ? fits_convert_blocks<U, true, false, false>(src, nullptr, count, initial)
                           : fits_convert_blocks<U, false, false, false>(src, nullptr, count, initial);
        }
        return swap_in ? fits_convert_inplace<U, true, false>(dst, count, initial)
                       : fits_convert_inplace<U, false, true>(dst, count, initial);
    }
    if (dst == nullptr) {
        return swap_in ? fits_convert_blocks<U, true, false, false>(src, dst, count, initial)
                       : fits_convert_blocks<U, false, false, false>(src, dst, count, initial);
    }
    if (swap_in) {
        return swap_out ? fits_convert_blocks<U, true, true, true>(src, dst, count, initial)
                        : fits_convert_blocks<U, true, false, true>(src, dst, count, initial);
    }
    return swap_out ? fits_convert_blocks<U, false, true, true>(src, dst, count, initial)
                    : fits_convert_blocks<U, false, false, true>(src, dst, count, initial);
}

// The one entry point of the loops: elements of 2, 4 or 8 bytes.
inline std::uint32_t fits_convert_any(int itemsize, const unsigned char* src, unsigned char* dst, std::size_t count,
                                      bool swap_in, bool swap_out, std::uint32_t initial) {
    switch (itemsize) {
        case 2: return fits_convert_typed<std::uint16_t>(src, dst, count, swap_in, swap_out, initial);
        case 4: return fits_convert_typed<std::uint32_t>(src, dst, count, swap_in, swap_out, initial);
        default: return fits_convert_typed<std::uint64_t>(src, dst, count, swap_in, swap_out, initial);
    }
}

}  // namespace
}  // namespace visitcal
