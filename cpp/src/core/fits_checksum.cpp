// FITS checksums in the byte-swap pass: see visitcal/core/fits_checksum.hpp for the conventions.
#include "visitcal/core/fits_checksum.hpp"

#include <cstring>
#include <stdexcept>

#include "cpu_features.hpp"
#include "fits_checksum_loops.hpp"

namespace visitcal {

std::uint32_t fits_convert_avx2(int itemsize, const unsigned char* src, unsigned char* dst, std::size_t count,
                                bool swap_in, bool swap_out, std::uint32_t initial);

namespace {

// The host's byte order, for loads/stores in a given order through memcpy (compiled to mov + bswap).
inline bool host_little() {
    const std::uint16_t one = 1;
    unsigned char b;
    std::memcpy(&b, &one, 1);
    return b == 1;
}

// Elements of 2, 4 or 8 bytes through the AVX2 build of the loops when the CPU has it.
std::uint32_t convert(int itemsize, const unsigned char* src, unsigned char* dst, std::size_t count, bool swap_in,
                      bool swap_out, std::uint32_t initial) {
    if (cpu_has_avx2()) return fits_convert_avx2(itemsize, src, dst, count, swap_in, swap_out, initial);
    return fits_convert_any(itemsize, src, dst, count, swap_in, swap_out, initial);
}

void check_itemsize(int itemsize) {
    if (itemsize != 1 && itemsize != 2 && itemsize != 4 && itemsize != 8) {
        throw std::invalid_argument("FITS pixels are 1, 2, 4 or 8 bytes wide; got an element of " +
                                    std::to_string(itemsize) + " bytes");
    }
}

}  // namespace

std::uint32_t fits_checksum_bytes(const unsigned char* bytes, std::size_t n, std::uint32_t initial) {
    if (n == 0) return initial;
    if (bytes == nullptr) throw std::invalid_argument("fits_checksum_bytes: no buffer for a non-empty byte count");
    const std::size_t words = n / 4;
    // Whole words: big-endian loads are value bits with swap_in on a little-endian host.
    std::uint32_t s = convert(4, bytes, nullptr, words, host_little(), false, initial);
    if (const std::size_t extra = n % 4) {  // the last partial word, zero-padded as FITS pads the unit
        std::uint32_t w = 0;
        for (std::size_t k = 0; k < extra; ++k) w |= std::uint32_t{bytes[4 * words + k]} << (24 - 8 * k);
        s = fits_checksum_add(s, w);
    }
    return s;
}

std::uint32_t fits_encode_big_endian(const void* src, std::size_t count, int itemsize, bool src_little,
                                     unsigned char* dst, std::uint32_t initial) {
    check_itemsize(itemsize);
    if (count == 0) return initial;
    if (src == nullptr) throw std::invalid_argument("fits_encode_big_endian: no source for a non-empty run");
    const auto* in = static_cast<const unsigned char*>(src);
    if (itemsize == 1) {  // bytes have no order: a copy and the byte-stream sum
        if (dst && dst != in) std::memcpy(dst, in, count);
        return fits_checksum_bytes(in, count, initial);
    }
    const bool little = host_little();
    const bool swap_in = src_little != little, swap_out = little;  // FITS is big-endian
    // An odd count of 2-byte elements ends on the high half of a word, its zero low half adding nothing.
    return convert(itemsize, in, dst, count, swap_in, swap_out, initial);
}

std::uint32_t fits_decode_big_endian(const unsigned char* src, std::size_t count, int itemsize, bool dst_little,
                                     void* dst, std::uint32_t initial) {
    check_itemsize(itemsize);
    if (count == 0) return initial;
    if (src == nullptr || dst == nullptr) {
        throw std::invalid_argument("fits_decode_big_endian: no source or destination for a non-empty run");
    }
    auto* out = static_cast<unsigned char*>(dst);
    if (itemsize == 1) {
        if (out != src) std::memcpy(out, src, count);
        return fits_checksum_bytes(src, count, initial);
    }
    const bool little = host_little();
    const bool swap_in = little, swap_out = dst_little != little;
    return convert(itemsize, src, out, count, swap_in, swap_out, initial);
}

std::string fits_encode_checksum(std::uint32_t value) {
    // Appendix J: each byte b becomes four characters '0' + b / 4 (the first also + b % 4), then pairs are
    // nudged (+1 / -1, keeping their sum) until none is one of the 13 punctuation codes between '9' and 'A'
    // or between 'Z' and 'a'; character j of byte i goes to position 4 j + i, and the 16 are rotated one
    // place right so the value lines up with the 4-byte words of the card it sits in.
    static const unsigned char exclude[] = {0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x40,
                                            0x5b, 0x5c, 0x5d, 0x5e, 0x5f, 0x60};
    char asc[16];
    for (int i = 0; i < 4; ++i) {
        const int byte = static_cast<int>((value >> (24 - 8 * i)) & 0xFFu);
        const int quotient = byte / 4 + '0', remainder = byte % 4;
        int ch[4] = {quotient + remainder, quotient, quotient, quotient};
        for (bool again = true; again;) {
            again = false;
            for (unsigned char x : exclude) {
                for (int j = 0; j < 4; j += 2) {
                    if (ch[j] == x || ch[j + 1] == x) {
                        ++ch[j];
                        --ch[j + 1];
                        again = true;
                    }
                }
            }
        }
        for (int j = 0; j < 4; ++j) asc[4 * j + i] = static_cast<char>(ch[j]);
    }
    std::string out(16, '0');
    for (int i = 0; i < 16; ++i) out[i] = asc[(i + 15) % 16];
    return out;
}

}  // namespace visitcal
