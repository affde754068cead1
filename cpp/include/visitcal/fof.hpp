// Friends-of-friends and neighbour searches on the sphere (lsst-spec §3, isolated-star association).
//
// Positions are (ra, dec) in degrees, turned into unit vectors; two points are "within r" when their
// great-circle separation is <= r, tested exactly as a chord length |u1 - u2| <= 2 sin(r / 2) (so no
// tangent-plane distortion and no special case at RA = 0/360 or at the poles). Points are hashed on a
// 3-D grid of cells one chord wide, keyed by (ix, iy, iz) packed into 64 bits; a query scans the 27
// cells around its point. The cells are stored sorted by key (then input index), so every result is a
// pure function of the inputs (no hash-map iteration order, no threads).
//
// Cost: O(n log n) for building the grid, O(n * density * r^2) for the queries; at 1 arcsec and the
// densities of a survey (< 1e6 sources per deg^2, i.e. < 0.1 per query) a query is ~27 binary searches.
//
// Non-finite positions are never within anything: they are their own FoF group and have no
// neighbours or matches.
//
// Thread safety: pure functions; all scratch is per call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace visitcal {

/// Chord length of a great-circle separation `sep_deg` (degrees).
double chord_of_separation(double sep_deg);

/// Friends-of-friends groups with linking length `link_deg` (degrees): label[i] in [0, n_groups),
/// groups numbered in order of their lowest member index (so deterministic and stable).
std::vector<std::int64_t> fof_groups(const double* ra, const double* dec, std::size_t n, double link_deg,
                                     std::int64_t* n_groups);

/// For every point of list 1, the index of its closest point of list 2 within `radius_deg` (ties: the
/// lower index), or -1; `separation_deg[i]` its separation (NaN when none).
void match_nearest_sphere(const double* ra1, const double* dec1, std::size_t n1, const double* ra2,
                          const double* dec2, std::size_t n2, double radius_deg, std::int64_t* index,
                          double* separation_deg);

/// For every point, the number of other points of the same list within `radius_deg`.
void count_neighbours(const double* ra, const double* dec, std::size_t n, double radius_deg,
                      std::int64_t* count);

}  // namespace visitcal
