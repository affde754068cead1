// Selected bits of an int32 mask, kept one byte per pixel and put back: a task that lets a step modify a
// few planes of a mask and then restores them keeps 1 byte per pixel instead of a copy of the 4-byte mask
// (16 MB instead of 65 MB for a 4k detector; issue 25's memory budget). Up to 8 bits.
#pragma once

#include <cstddef>
#include <cstdint>

namespace visitcal {

// The positions (0-31) of the set bits of `bits`, lowest first, in `positions`; returns how many (must be <= 8;
// std::invalid_argument otherwise, or for no bit at all).
int mask_bit_positions(std::int32_t bits, int positions[8]);

// packed[i] bit k = bit positions[k] of mask[i], for the set bits of `bits` (lowest first).
void pack_mask_bits(const std::int32_t* mask, std::size_t n, std::int32_t bits, std::uint8_t* packed);

// mask[i] = (mask[i] & ~bits) | the bits of packed[i] put back at their positions: the state `pack_mask_bits`
// saw for those bits; every other bit of mask[i] is left as it is.
void restore_mask_bits(std::int32_t* mask, std::size_t n, std::int32_t bits, const std::uint8_t* packed);

}  // namespace visitcal
