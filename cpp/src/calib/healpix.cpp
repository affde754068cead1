// Nested HEALPix pixel index (see visitcal/calib/healpix.hpp).
#include "visitcal/calib/healpix.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace visitcal {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kTwoPi = 6.28318530717958647693;
constexpr double kHalfPi = 1.57079632679489661923;
constexpr double kTwoOverPi = 0.63661977236758134308;

/// Bits 0..31 of v moved to the even bits 0, 2, ..., 62 (the Morton spread).
inline std::uint64_t spread_even(std::uint64_t v) {
    v &= 0xFFFFFFFFull;
    v = (v | (v << 16)) & 0x0000FFFF0000FFFFull;
    v = (v | (v << 8)) & 0x00FF00FF00FF00FFull;
    v = (v | (v << 4)) & 0x0F0F0F0F0F0F0F0Full;
    v = (v | (v << 2)) & 0x3333333333333333ull;
    v = (v | (v << 1)) & 0x5555555555555555ull;
    return v;
}

/// phi * 2 / pi reduced to [0, 4): the longitude in units of a quarter turn.
inline double quarter_turns(double phi) {
    const double v = phi * kTwoOverPi;
    if (v >= 0.0) return v < 4.0 ? v : std::fmod(v, 4.0);
    const double w = std::fmod(v, 4.0) + 4.0;
    return w == 4.0 ? 0.0 : w;
}

struct Grid {
    std::int64_t nside;
    int order;  // log2(nside)
};

/// The pixel of colatitude theta, longitude phi (radians).
std::int64_t nest_pixel(const Grid& g, double theta, double phi) {
    const double z = std::cos(theta);
    const double za = std::fabs(z);
    const double tt = quarter_turns(phi);
    const auto ns = static_cast<double>(g.nside);
    std::int64_t ix, iy, face;
    if (za <= 2.0 / 3.0) {
        // Equatorial zone: indices of the ascending (jp) and descending (jm) edge lines below the point.
        const double a = ns * (0.5 + tt);
        const double b = ns * (z * 0.75);
        const auto jp = static_cast<std::int64_t>(a - b);
        const auto jm = static_cast<std::int64_t>(a + b);
        const std::int64_t fp = jp >> g.order;
        const std::int64_t fm = jm >> g.order;
        face = fp == fm ? (fp | 4) : (fp < fm ? fp : fm + 8);
        ix = jm & (g.nside - 1);
        iy = g.nside - (jp & (g.nside - 1)) - 1;
    } else {
        // Polar cap: quarter q (a base pixel of the cap), fraction t within it, distance s from the pole.
        std::int64_t q = static_cast<std::int64_t>(tt);
        if (q > 3) q = 3;
        const double t = tt - static_cast<double>(q);
        const bool near_pole = za >= 0.99 && theta >= 0.01 && theta <= 3.14159 - 0.01;
        const double s = near_pole ? ns * std::sin(theta) / std::sqrt((1.0 + za) / 3.0)
                                   : ns * std::sqrt(3.0 * (1.0 - za));
        std::int64_t jp = static_cast<std::int64_t>(t * s);
        std::int64_t jm = static_cast<std::int64_t>((1.0 - t) * s);
        // A point on the cap's outer edge rounds to line nside: it belongs to the last row.
        if (jp >= g.nside) jp = g.nside - 1;
        if (jm >= g.nside) jm = g.nside - 1;
        if (z >= 0.0) {
            ix = g.nside - jm - 1;
            iy = g.nside - jp - 1;
            face = q;
        } else {
            ix = jp;
            iy = jm;
            face = q + 8;
        }
    }
    const std::uint64_t inner = spread_even(static_cast<std::uint64_t>(ix)) |
                                (spread_even(static_cast<std::uint64_t>(iy)) << 1);
    return (face << (2 * g.order)) + static_cast<std::int64_t>(inner);
}

}  // namespace

void healpix_nest_pixel(std::int64_t nside, const double* ra, const double* dec, std::size_t n,
                        std::int64_t* pixel) {
    if (nside < 1 || nside > kHealpixMaxNside || (nside & (nside - 1)) != 0)
        throw std::invalid_argument("nside must be a power of two from 1 to 2^29, got " + std::to_string(nside));
    Grid g{nside, 0};
    while ((std::int64_t{1} << g.order) < nside) ++g.order;
    for (std::size_t i = 0; i < n; ++i) {
        const double a = ra[i], d = dec[i];
        if (!std::isfinite(a) || !std::isfinite(d)) {
            pixel[i] = -1;
            continue;
        }
        if (d < -90.0 || d > 90.0)
            throw std::invalid_argument("dec must be in [-90, 90] deg, got " + std::to_string(d) + " at index " +
                                        std::to_string(i));
        // (deg * pi) / 180, reduced to [0, 2 pi) in radians, and pi / 2 - lat, in this order (see the
        // header: boundary points fall as in hpgeom; reducing RA in degrees first moves some of them).
        double phi = std::fmod((a * kPi) / 180.0, kTwoPi);
        if (phi < 0.0) phi += kTwoPi;
        const double theta = -((d * kPi) / 180.0) + kHalfPi;
        pixel[i] = nest_pixel(g, theta, phi);
    }
}

}  // namespace visitcal
