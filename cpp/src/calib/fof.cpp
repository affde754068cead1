// Friends-of-friends and neighbour searches on the sphere (see visitcal/fof.hpp).
#include "visitcal/calib/fof.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

namespace visitcal {

namespace {

constexpr double kDeg = 3.14159265358979323846 / 180.0;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// 21 bits per axis: cells of at least 2 / 2^21 ~ 1e-6 (0.2 arcsec); smaller radii share cells.
constexpr long kMaxCells = (1L << 21) - 1;

/// Unit vectors of (ra, dec) on a 3-D grid of cells at least one query chord wide, stored sorted by
/// packed cell key then index.
class SphereGrid {
public:
    SphereGrid(const double* ra, const double* dec, std::size_t n, double radius_deg) : n_(n) {
        if (!(radius_deg > 0) || !std::isfinite(radius_deg))
            throw std::invalid_argument("radius must be finite and > 0, got " + std::to_string(radius_deg));
        if (n >= std::numeric_limits<std::uint32_t>::max()) throw std::invalid_argument("too many points");
        chord_ = chord_of_separation(radius_deg);
        // Cells at least two chords wide (2 / ncell >= 2 chord): see for_each_within.
        // Capped in double: 1 / chord is ~1e300 for a tiny radius (its long cast undefined).
        ncell_ = std::max(1L, static_cast<long>(std::floor(std::min(1.0 / chord_, static_cast<double>(kMaxCells)))));
        cell_ = 2.0 / static_cast<double>(ncell_);
        xyz_.resize(3 * n);
        finite_.assign(n, 0);
        std::vector<std::pair<std::uint64_t, std::uint32_t>> kv;
        kv.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            if (!std::isfinite(ra[i]) || !std::isfinite(dec[i])) {
                xyz_[3 * i] = xyz_[3 * i + 1] = xyz_[3 * i + 2] = kNaN;
                continue;
            }
            const double a = ra[i] * kDeg, d = dec[i] * kDeg;
            const double cd = std::cos(d);
            double* u = &xyz_[3 * i];
            u[0] = cd * std::cos(a);
            u[1] = cd * std::sin(a);
            u[2] = std::sin(d);
            finite_[i] = 1;
            kv.emplace_back(key_of(cell(u[0]), cell(u[1]), cell(u[2])), static_cast<std::uint32_t>(i));
        }
        std::sort(kv.begin(), kv.end());
        keys_.resize(kv.size());
        order_.resize(kv.size());
        for (std::size_t k = 0; k < kv.size(); ++k) {
            keys_[k] = kv[k].first;
            order_[k] = kv[k].second;
        }
    }

    double chord() const { return chord_; }
    const double* xyz(std::size_t i) const { return &xyz_[3 * i]; }
    bool finite(std::size_t i) const { return finite_[i] != 0; }

    /// Calls f(j, chord_distance) for every stored point j within `chord` (<= the grid's) of the unit
    /// vector u, in no particular order. Cells are >= 2 chords wide, so along each axis the points within
    /// `chord` lie in the point's cell and the neighbour on the side of the half it sits in: 2 x 2 rows of
    /// (ix, iy), each one binary search for (ix, iy, iz0) and a forward scan over iz0 .. iz0 + 1.
    template <typename F>
    void for_each_within(const double* u, double chord, F&& f) const {
        long lo[3];
        for (int a = 0; a < 3; ++a) {
            const double t = (u[a] + 1.0) / cell_;
            const long c = std::max(0L, std::min(static_cast<long>(std::floor(t)), ncell_));
            lo[a] = (t - static_cast<double>(c) < 0.5) ? c - 1 : c;
        }
        const double c2 = chord * chord;
        for (long ix = lo[0]; ix <= lo[0] + 1; ++ix) {
            if (ix < 0 || ix > ncell_) continue;
            for (long iy = lo[1]; iy <= lo[1] + 1; ++iy) {
                if (iy < 0 || iy > ncell_) continue;
                const long iz0 = std::max(lo[2], 0L), iz1 = std::min(lo[2] + 1, ncell_);
                if (iz0 > iz1) continue;
                const std::uint64_t k0 = key_of(ix, iy, iz0), k1 = key_of(ix, iy, iz1);
                for (auto it = std::lower_bound(keys_.begin(), keys_.end(), k0); it != keys_.end() && *it <= k1;
                     ++it) {
                    const std::uint32_t j = order_[static_cast<std::size_t>(it - keys_.begin())];
                    const double* v = &xyz_[3 * j];
                    const double dx = u[0] - v[0], dy = u[1] - v[1], dz = u[2] - v[2];
                    const double d2 = dx * dx + dy * dy + dz * dz;
                    if (d2 <= c2) f(static_cast<std::size_t>(j), std::sqrt(d2));
                }
            }
        }
    }

private:
    long cell(double v) const {
        // v in [-1, 1]; cell index in [0, ncell_] (v = 1 exactly lands in the extra last cell).
        const long c = static_cast<long>(std::floor((v + 1.0) / cell_));
        return std::max(0L, std::min(c, ncell_));
    }
    static std::uint64_t key_of(long ix, long iy, long iz) {
        return (static_cast<std::uint64_t>(ix) << 42) | (static_cast<std::uint64_t>(iy) << 21) |
               static_cast<std::uint64_t>(iz);
    }

    std::size_t n_ = 0;
    double chord_ = 0.0;
    double cell_ = 1.0;
    long ncell_ = 1;
    std::vector<double> xyz_;
    std::vector<unsigned char> finite_;
    std::vector<std::uint64_t> keys_;
    std::vector<std::uint32_t> order_;
};

std::size_t find_root(std::vector<std::size_t>& parent, std::size_t i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];  // path halving
        i = parent[i];
    }
    return i;
}

double separation_of_chord(double chord) { return 2.0 * std::asin(std::min(1.0, 0.5 * chord)) / kDeg; }

}  // namespace

double chord_of_separation(double sep_deg) { return 2.0 * std::sin(0.5 * sep_deg * kDeg); }

std::vector<std::int64_t> fof_groups(const double* ra, const double* dec, std::size_t n, double link_deg,
                                     std::int64_t* n_groups) {
    SphereGrid grid(ra, dec, n, link_deg);
    std::vector<std::size_t> parent(n);
    std::iota(parent.begin(), parent.end(), std::size_t{0});
    for (std::size_t i = 0; i < n; ++i) {
        if (!grid.finite(i)) continue;
        grid.for_each_within(grid.xyz(i), grid.chord(), [&](std::size_t j, double) {
            if (j <= i) return;
            std::size_t a = find_root(parent, i), b = find_root(parent, j);
            if (a == b) return;
            if (b < a) std::swap(a, b);
            parent[b] = a;  // the root is always the lowest index of the group
        });
    }
    std::vector<std::int64_t> label(n, -1);
    std::int64_t next = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t r = find_root(parent, i);
        if (label[r] < 0) label[r] = next++;  // r <= i, so groups are numbered by lowest member
        label[i] = label[r];
    }
    if (n_groups) *n_groups = next;
    return label;
}

void match_nearest_sphere(const double* ra1, const double* dec1, std::size_t n1, const double* ra2,
                          const double* dec2, std::size_t n2, double radius_deg, std::int64_t* index,
                          double* separation_deg) {
    SphereGrid grid(ra2, dec2, n2, radius_deg);
    for (std::size_t i = 0; i < n1; ++i) {
        index[i] = -1;
        separation_deg[i] = kNaN;
        if (!std::isfinite(ra1[i]) || !std::isfinite(dec1[i])) continue;
        const double a = ra1[i] * kDeg, d = dec1[i] * kDeg;
        const double u[3] = {std::cos(d) * std::cos(a), std::cos(d) * std::sin(a), std::sin(d)};
        double best = std::numeric_limits<double>::infinity();
        grid.for_each_within(u, grid.chord(), [&](std::size_t j, double c) {
            const auto jj = static_cast<std::int64_t>(j);
            if (c < best || (c == best && jj < index[i])) {  // ties: the lower index
                best = c;
                index[i] = jj;
            }
        });
        if (index[i] >= 0) separation_deg[i] = separation_of_chord(best);
    }
}

void count_neighbours(const double* ra, const double* dec, std::size_t n, double radius_deg, std::int64_t* count) {
    SphereGrid grid(ra, dec, n, radius_deg);
    for (std::size_t i = 0; i < n; ++i) {
        count[i] = 0;
        if (!grid.finite(i)) continue;
        grid.for_each_within(grid.xyz(i), grid.chord(), [&](std::size_t j, double) {
            if (j != i) ++count[i];
        });
    }
}

}  // namespace visitcal
