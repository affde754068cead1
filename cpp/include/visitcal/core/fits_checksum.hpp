// FITS CHECKSUM / DATASUM (FITS Standard 4.0, appendix J; Seaman, Pence & Rots, "FITS Checksum
// Proposal") computed in the same pass as the big-endian <-> native conversion of an image's pixels.
//
// The checksum of a byte stream is the 32-bit ones' complement sum (end-around carry) of its bytes read as
// big-endian 32-bit words, the stream being zero-padded to a whole word (FITS pads every data unit to 2880
// bytes with zeros, which add nothing). DATASUM is the checksum of an HDU's data unit; CHECKSUM is the
// 16-character ASCII encoding of the complement of the sum of the header (with CHECKSUM = '0000000000000000')
// and the data, so that the whole HDU then sums to -0 (0xFFFFFFFF).
//
// Conventions of this module:
// - Sums are accumulated in 64 bits and folded (end-around carry) at the end: the fold of any partial sum is
//   the same as that of the word-by-word ones' complement addition (both are the value in [1, 2^32 - 1]
//   congruent to the total modulo 2^32 - 1, or 0 for an all-zero stream), and the same as astropy's
//   `_compute_checksum`.
// - A run of elements handed to one call must start at a byte offset of the stream that is a multiple of 4
//   (the callers stream an array in chunks of whole words); only the stream's last run may end inside a word.
// - The word a FITS element contributes is computed from its value bits (an element of 4 bytes is one word,
//   of 8 bytes two, of 2 bytes half a word), so no byte swap is needed for the sum itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace visitcal {

/// End-around-carry fold of a 64-bit sum of 32-bit words into the ones' complement 32-bit sum.
inline std::uint32_t fits_fold(std::uint64_t s) {
    while (s >> 32) s = (s & 0xFFFFFFFFu) + (s >> 32);
    return static_cast<std::uint32_t>(s);
}

/// Ones' complement sum of two checksums (a + b with end-around carry).
inline std::uint32_t fits_checksum_add(std::uint32_t a, std::uint32_t b) {
    return fits_fold(static_cast<std::uint64_t>(a) + b);
}

/// The checksum of `n` bytes (a stream starting on a word boundary; a final partial word is zero-padded),
/// added to `initial` (the checksum of what precedes it in the HDU).
std::uint32_t fits_checksum_bytes(const unsigned char* bytes, std::size_t n, std::uint32_t initial);

/// Encode `count` elements of `itemsize` bytes (1, 2, 4 or 8) from `src`, stored in little-endian byte order
/// when `src_little` (else big-endian), as the FITS (big-endian) bytes into `dst` (count * itemsize bytes;
/// may be null to compute the sum only), returning `initial` plus the checksum of those bytes. `src` and `dst`
/// may be the same memory (in place) but must not otherwise overlap.
std::uint32_t fits_encode_big_endian(const void* src, std::size_t count, int itemsize, bool src_little,
                                     unsigned char* dst, std::uint32_t initial);

/// Decode `count` elements of `itemsize` bytes from the FITS (big-endian) bytes `src` into `dst`, stored in
/// little-endian byte order when `dst_little` (else big-endian), returning `initial` plus the checksum of the
/// source bytes. `src` and `dst` may be the same memory (in place) but must not otherwise overlap.
std::uint32_t fits_decode_big_endian(const unsigned char* src, std::size_t count, int itemsize, bool dst_little,
                                     void* dst, std::uint32_t initial);

/// The 16-character ASCII encoding of a checksum value (appendix J: four bytes spread over four characters
/// each from '0', avoiding the punctuation between the digits and the letters, then rotated one place
/// right). CHECKSUM is the encoding of the complement of the HDU's sum with CHECKSUM = '0000000000000000'.
std::string fits_encode_checksum(std::uint32_t value);

}  // namespace visitcal
