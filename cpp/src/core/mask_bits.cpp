// Packing and restoring selected mask bits (header: visitcal/core/mask_bits.hpp).
#include "visitcal/core/mask_bits.hpp"

#include <stdexcept>

namespace visitcal {

int mask_bit_positions(std::int32_t bits, int positions[8]) {
    const auto u = static_cast<std::uint32_t>(bits);
    int n = 0;
    for (int p = 0; p < 32; ++p) {
        if ((u >> p) & 1u) {
            if (n == 8) throw std::invalid_argument("more than 8 mask bits to keep in one byte per pixel");
            positions[n++] = p;
        }
    }
    if (n == 0) throw std::invalid_argument("no mask bit to keep");
    return n;
}

void pack_mask_bits(const std::int32_t* mask, std::size_t n, std::int32_t bits, std::uint8_t* packed) {
    int pos[8];
    const int m = mask_bit_positions(bits, pos);
    for (std::size_t i = 0; i < n; ++i) {
        const auto v = static_cast<std::uint32_t>(mask[i]);
        unsigned out = 0;
        for (int k = 0; k < m; ++k) out |= ((v >> pos[k]) & 1u) << k;
        packed[i] = static_cast<std::uint8_t>(out);
    }
}

void restore_mask_bits(std::int32_t* mask, std::size_t n, std::int32_t bits, const std::uint8_t* packed) {
    int pos[8];
    const int m = mask_bit_positions(bits, pos);
    const auto keep = ~static_cast<std::uint32_t>(bits);
    for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t v = static_cast<std::uint32_t>(mask[i]) & keep;
        const unsigned p = packed[i];
        for (int k = 0; k < m; ++k) v |= static_cast<std::uint32_t>((p >> k) & 1u) << pos[k];
        mask[i] = static_cast<std::int32_t>(v);
    }
}

}  // namespace visitcal
