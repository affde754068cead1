// Astrometric matching in the pixel plane (meas_astrom's MatchPessimisticBTask, AstrometryTask's matcher):
//
//  - `match_nearest`: nearest-neighbour pairing of two point lists through a grid hash (PhotoCal's
//    direct match, the 3-px icSrc match, the matcher's own pairing).
//  - `gaussian_overlap_sum`: per point, the Gaussian-overlap-weighted sum over the neighbours of another
//    list within a radius, on the same grid hash (the truth's isolation of stars in visitcal.qa.truth).
//  - `match_pessimistic_b`: a pessimistic pattern matcher in the spirit of Tabur (2007, PASA 24, 189)
//    and LSST's pessimistic matcher B. Sources and references are given as pixel positions on one
//    plane (the references projected through the preliminary WCS); the matcher finds the similarity
//    transform (shift, rotation, scale) taking source positions onto the reference positions and
//    pairs the objects. Written from the published description, not from LSST's code.
//
// Pattern search. Sources are ranked by flux (brightest first; NaN flux last; ties by index). The
// pattern of bright source p is its "spokes" to the next `n_attempt - 1` bright sources, longest first.
// The rotation is small (|theta| <= max_rotation_deg), the scale error too (|scale - 1| <= max_scale_error)
// and the shift bounded (|t| <= max_offset_pix), so a reference centre r0 lies within
// max_offset + |s0 - c|·(theta_max + max_scale_error) + tol of the source centre s0, and
// a spoke v = s_k - s0 ends near r0 + R(theta) v: the reference at its end lies on an arc of radius |v|
// spanning ±theta_max, found by one grid query of radius |v|·theta_max + tol. The first spoke matched
// within tol + |v|·max_scale_error in length and tol/|v| in angle fixes (theta, scale); every other spoke
// must then land within tol·max(1, |v_k|/|v|) of its prediction, on a distinct reference. A pattern matches when at least `n_match - 1` spokes do
// (`num_points_for_shape`); per source centre the candidate with the most spokes (then the smallest
// spoke residual) is kept. The tolerance tol = min_match_dist_pixels · 2^i grows over
// `matcher_iterations` softening steps i; at each, the pattern size tried grows too (n_attempt =
// num_points_for_shape_attempt + j, j < matcher_iterations), as LSST does.
//
// Consensus. With at least `num_ref_require_consensus` references, a transform is only tried once
// `num_pattern_consensus` patterns (distinct source centres) agree with it: their predictions of the
// corners of the source bounding box differ by < 2 tol. Below that, one pattern suffices.
//
// Verification (the "pessimistic" part). A candidate transform pairs every source with its nearest
// reference within tol (each reference to its closest source), the similarity is refitted by least
// squares and the match distance set to max(min_match_dist_pixels, mean + match_distance_sigma·std) of
// the pair distances, capped at 2 tol; pairing and fit are repeated four times. The mean and std are
// those of Rayleigh-distributed distances with the pairs' median (Gaussian offsets of sigma s: median
// 1.1774 s, mean 1.2533 s, std 0.6551 s): the median is hardly biased by the truncation at the current
// distance, the mean and std are. The candidate is accepted when
// n_pairs >= min(min_matched_pairs, min_frac_matched_pairs·min(n_src, n_ref)) AND n_pairs exceeds the
// chance coincidences by a wide margin: n_pairs >= 3·chance + 3 with chance = n_src_inside · rho_ref ·
// pi·d² (rho_ref the reference density over the references' bounding box). Otherwise the search goes on.
//
// Costs: per pattern, one query of radius ~max_offset for centre candidates (~70 at 3000 references
// over 2k x 4k px), then a few short arc queries each; the verification is O(n log n) with the grid.
//
// Thread safety: pure functions; all scratch is per call.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace visitcal {

/// A uniform grid hash of 2-D points (NaN coordinates are left out). Cells are at least `cell` px wide
/// and the grid has at most ~4 n + 64 cells (so a huge extent with few points stays small).
class PointGrid {
public:
    PointGrid(const double* x, const double* y, std::size_t n, double cell);

    /// Calls f(index) for every stored point within the square [x - r, x + r] x [y - r, y + r]
    /// (the caller tests the true distance), in increasing cell order then input order.
    template <typename F>
    void for_each_near(double x, double y, double r, F&& f) const {
        if (empty_ || !(r >= 0)) return;
        if (overflowed_) {  // one cell, every point (cell_index would put an inf offset past the grid)
            for (std::uint32_t k = start_[0]; k < start_[1]; ++k) f(static_cast<std::size_t>(order_[k]));
            return;
        }
        const long ix0 = cell_index(x - r, x0_, nx_), ix1 = cell_index(x + r, x0_, nx_);
        const long iy0 = cell_index(y - r, y0_, ny_), iy1 = cell_index(y + r, y0_, ny_);
        if (ix1 < 0 || iy1 < 0 || ix0 >= nx_ || iy0 >= ny_) return;
        for (long iy = std::max(iy0, 0L); iy <= std::min(iy1, ny_ - 1); ++iy) {
            for (long ix = std::max(ix0, 0L); ix <= std::min(ix1, nx_ - 1); ++ix) {
                const std::size_t c = static_cast<std::size_t>(iy * nx_ + ix);
                for (std::uint32_t k = start_[c]; k < start_[c + 1]; ++k) f(static_cast<std::size_t>(order_[k]));
            }
        }
    }

    std::size_t size() const { return order_.size(); }

private:
    long cell_index(double v, double origin, long n) const {
        const double f = (v - origin) / cell_;
        if (!(f >= 0)) return -1;  // also NaN: no cell (a long cast of NaN is undefined)
        if (f >= static_cast<double>(n)) return n;
        return static_cast<long>(f);
    }
    bool empty_ = true;
    bool overflowed_ = false;  // the points' extent overflowed a double: one cell holds them all
    double x0_ = 0, y0_ = 0, cell_ = 1;
    long nx_ = 0, ny_ = 0;
    std::vector<std::uint32_t> start_;  // CSR offsets, size nx*ny + 1
    std::vector<std::uint32_t> order_;  // point indices grouped by cell
};

/// For each point i of list 1, the closest point of list 2 within `radius` (Euclidean): index2[i]
/// (-1 when none; ties go to the lower index) and distance[i] (NaN when none). With `unique`, a point
/// of list 2 claimed by several points of list 1 stays only with the closest of them (ties: the lower
/// index of list 1); the others get -1. NaN positions never match. std::invalid_argument for a
/// negative or non-finite radius.
struct NearestMatch {
    std::vector<std::int64_t> index2;
    std::vector<double> distance;
};
NearestMatch match_nearest(const double* x1, const double* y1, std::size_t n1, const double* x2, const double* y2,
                           std::size_t n2, double radius, bool unique = false);

/// For each point i of list 1, the sum over the points j of list 2 at a distance d (Euclidean, the units of the
/// inputs: px) with min_distance < d <= radius of w2[j] exp(-d^2 / (4 sigma^2)): the overlap of two circular
/// Gaussians of width sigma at separation d, relative to its value at d = 0, weighted by w2 (the light of a
/// neighbour that falls under a star's PSF; visitcal.qa.truth's isolation of the true stars). Points at
/// d <= min_distance (the point itself, when list 2 contains list 1) are left out. NaN positions of list 1
/// give 0, of list 2 never count; the sum runs in the grid's order (cells, then input order).
/// std::invalid_argument for a non-finite or non-positive sigma or radius, or a negative or non-finite
/// min_distance.
std::vector<double> gaussian_overlap_sum(const double* x1, const double* y1, std::size_t n1, const double* x2,
                                         const double* y2, const double* w2, std::size_t n2, double sigma,
                                         double radius, double min_distance);

/// The offset search of the matcher's fallback (visitcal.calib.match_offset): a 2-D histogram of the offsets
/// (xr[j] - xs[i], yr[j] - ys[i]) of every source/reference pair whose offset lies within `max_offset` (px,
/// Euclidean), in square bins of `bin` px, the central bin centred on zero offset. The histogram has
/// n = 2 ceil(max_offset / bin) + 1 bins per axis, counts[iy * n + ix] holding offsets dx in
/// [(ix - h - 1/2) bin, (ix - h + 1/2) bin) with h = (n - 1) / 2 (likewise for y). A correct preliminary
/// WCS up to a shift puts the true pairs into one bin (or a few, when its rotation and scale errors spread
/// them), over a flat floor of chance pairs: this is the cross-correlation of the two point lists,
/// evaluated only at offsets within max_offset. Cost: one grid query of radius max_offset per source,
/// O(n_src * n_ref * pi max_offset^2 / area). NaN positions are left out. std::invalid_argument for a
/// non-positive or non-finite bin or max_offset, or more than 4097 bins per axis.
struct OffsetHistogram {
    int n_bins = 0;                     // per axis
    double bin = 0;                     // px
    std::vector<std::int64_t> counts;   // n_bins * n_bins, row-major (y, x)
    std::int64_t n_pairs = 0;           // pairs counted (offset within max_offset)
};
OffsetHistogram offset_histogram(const double* xs, const double* ys, std::size_t n_src, const double* xr,
                                 const double* yr, std::size_t n_ref, double max_offset, double bin);

/// Mirrors visitcal.calib.match_pessimistic_b.MatchPessimisticBConfig (LSST's MatchPessimisticBConfig in
/// snake_case; the pixel-plane fields only).
struct MatcherControl {
    int num_bright_stars = 150;             // sources used as pattern centres and spokes
    int min_matched_pairs = 30;             // pairs needed to accept a match ...
    double min_frac_matched_pairs = 0.3;    // ... or this fraction of min(n_src, n_ref), whichever is smaller
    int matcher_iterations = 5;             // softening steps of the tolerance (x2 each) and pattern size
    double max_offset_pix = 250.0;          // largest shift (px) at the centre of the sources
    double max_rotation_deg = 1.0;          // largest rotation (deg)
    int num_points_for_shape = 6;           // objects per pattern that must match (centre + spokes)
    int num_points_for_shape_attempt = 6;   // objects per pattern tried
    double min_match_dist_pixels = 1.0;     // starting tolerance and floor of the match distance (px)
    int num_pattern_consensus = 3;          // agreeing patterns needed with many references
    int num_ref_require_consensus = 1000;   // references from which consensus is required
    double match_distance_sigma = 2.0;      // match distance = mean + this · std of the pair distances
    double max_scale_error = 0.01;          // ours: largest |scale - 1| of a spoke (LSST has no such field)
};

/// r = c + [[a, -b], [b, a]] (s - c) + t : source pixel s -> reference pixel r (both in the plane of
/// the preliminary WCS). scale = hypot(a, b), rotation = atan2(b, a).
struct SimilarityTransform {
    double cx = 0, cy = 0;  // centre of the sources' bounding box
    double a = 1, b = 0;
    double tx = 0, ty = 0;
    void apply(double x, double y, double& rx, double& ry) const {
        const double dx = x - cx, dy = y - cy;
        rx = cx + a * dx - b * dy + tx;
        ry = cy + b * dx + a * dy + ty;
    }
};

struct PatternMatchResult {
    bool ok = false;
    std::string reason;                   // why not (ok == false)
    SimilarityTransform transform;
    std::vector<std::int64_t> src_index;  // matched pairs, sorted by source index
    std::vector<std::int64_t> ref_index;
    std::vector<double> distance;         // |T(s) - r| in px
    double match_distance = 0;            // final pairing radius (px)
    double tolerance = 0;                 // pattern tolerance when the match was found (px)
    int softening = -1;                   // softening step i of the accepted match
    int n_consensus = 0;                  // patterns agreeing with the accepted transform
    std::int64_t n_patterns = 0;          // source patterns examined
    std::int64_t n_candidates = 0;        // transforms verified
    std::int64_t best_n_pairs = 0;        // most pairs any verified candidate reached
    std::int64_t n_required = 0;          // pairs required
};

/// The pattern matcher described at the top of this header. Sources (xs, ys; n_src) with fluxes fs
/// (any monotonic brightness, larger is brighter: they rank the pattern objects) and references
/// (xr, yr; n_ref) are pixel positions on one plane. Every reference may be a pattern centre or end a
/// spoke, so the caller culls them to the searched region and to the brightest max_ref_objects.
/// Deterministic. std::invalid_argument for negative limits.
PatternMatchResult match_pessimistic_b(const double* xs, const double* ys, const double* fs, std::size_t n_src,
                                       const double* xr, const double* yr, std::size_t n_ref,
                                       const MatcherControl& ctrl);

}  // namespace visitcal
