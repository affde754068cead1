// Nearest-neighbour pairing and the pessimistic pattern matcher (see visitcal/calib/matcher.hpp).
#include "visitcal/calib/matcher.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

namespace visitcal {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

bool finite2(double x, double y) { return std::isfinite(x) && std::isfinite(y); }

std::string fmt(double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.3g", v);
    return buf;
}

}  // namespace

// --- PointGrid -------------------------------------------------------------------------------------

PointGrid::PointGrid(const double* x, const double* y, std::size_t n, double cell) {
    double xmin = std::numeric_limits<double>::infinity(), ymin = xmin, xmax = -xmin, ymax = -xmin;
    std::size_t n_ok = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (!finite2(x[i], y[i])) continue;
        xmin = std::min(xmin, x[i]);
        xmax = std::max(xmax, x[i]);
        ymin = std::min(ymin, y[i]);
        ymax = std::max(ymax, y[i]);
        ++n_ok;
    }
    if (n_ok == 0) return;
    if (n > std::numeric_limits<std::uint32_t>::max() - 1) throw std::invalid_argument("PointGrid: too many points");
    empty_ = false;
    x0_ = xmin;
    y0_ = ymin;
    const double w = xmax - xmin, h = ymax - ymin;
    // At most ~4 cells per point (+64): a few KB of offsets for small lists whatever the extent.
    const double max_cells = 4.0 * static_cast<double>(n_ok) + 64.0;
    double c = std::isfinite(cell) && cell > 0 ? cell : 1.0;
    c = std::max(c, std::sqrt(w * h / max_cells));
    c = std::max(c, std::max(w, h) / max_cells);
    c = std::max(c, 1e-9 * (1.0 + std::max(w, h)));
    if (!(std::isfinite(w) && std::isfinite(h) && std::isfinite(c))) {
        // Extents beyond ~1.8e308 (points at +-1e308) overflow to inf, and w / c to NaN, whose cast to
        // long is undefined (it once sized a vector of ~2^63 cells, or looped forever). One cell of the
        // largest finite size then holds every point, and for_each_near visits them all.
        nx_ = ny_ = 1;
        c = std::numeric_limits<double>::max();
        overflowed_ = true;
    } else {
        for (;;) {  // w / c <= max_cells here: the casts are exact
            nx_ = static_cast<long>(std::floor(w / c)) + 1;
            ny_ = static_cast<long>(std::floor(h / c)) + 1;
            if (static_cast<double>(nx_) * static_cast<double>(ny_) <= 2.0 * max_cells) break;
            c *= 1.25;
        }
    }
    cell_ = c;
    const std::size_t n_cells = static_cast<std::size_t>(nx_ * ny_);
    std::vector<std::uint32_t> cell_of(n, 0);
    start_.assign(n_cells + 1, 0);
    for (std::size_t i = 0; i < n; ++i) {
        if (!finite2(x[i], y[i])) continue;
        const long ix = std::min(cell_index(x[i], x0_, nx_), nx_ - 1);
        const long iy = std::min(cell_index(y[i], y0_, ny_), ny_ - 1);
        cell_of[i] = static_cast<std::uint32_t>(iy * nx_ + ix);
        ++start_[cell_of[i] + 1];
    }
    std::partial_sum(start_.begin(), start_.end(), start_.begin());
    order_.resize(n_ok);
    std::vector<std::uint32_t> fill(start_.begin(), start_.end() - 1);
    for (std::size_t i = 0; i < n; ++i) {  // input order within a cell: deterministic
        if (!finite2(x[i], y[i])) continue;
        order_[fill[cell_of[i]]++] = static_cast<std::uint32_t>(i);
    }
}

// --- offset_histogram -----------------------------------------------------------------------------

OffsetHistogram offset_histogram(const double* xs, const double* ys, std::size_t n_src, const double* xr,
                                 const double* yr, std::size_t n_ref, double max_offset, double bin) {
    if (!(std::isfinite(max_offset) && max_offset > 0)) throw std::invalid_argument("offset_histogram: max_offset must be > 0");
    if (!(std::isfinite(bin) && bin > 0)) throw std::invalid_argument("offset_histogram: bin must be > 0");
    const double half = std::ceil(max_offset / bin);
    if (half > 2048) throw std::invalid_argument("offset_histogram: more than 4097 bins per axis");
    OffsetHistogram h;
    h.bin = bin;
    h.n_bins = 2 * static_cast<int>(half) + 1;
    const long hb = static_cast<long>(half);
    h.counts.assign(static_cast<std::size_t>(h.n_bins) * static_cast<std::size_t>(h.n_bins), 0);
    if (n_src == 0 || n_ref == 0) return h;
    const PointGrid grid(xr, yr, n_ref, max_offset);
    const double r2 = max_offset * max_offset;
    for (std::size_t i = 0; i < n_src; ++i) {
        if (!finite2(xs[i], ys[i])) continue;
        grid.for_each_near(xs[i], ys[i], max_offset, [&](std::size_t j) {
            const double dx = xr[j] - xs[i], dy = yr[j] - ys[i];
            if (dx * dx + dy * dy > r2) return;
            const long ix = static_cast<long>(std::floor(dx / bin + 0.5)) + hb;
            const long iy = static_cast<long>(std::floor(dy / bin + 0.5)) + hb;
            if (ix < 0 || iy < 0 || ix >= h.n_bins || iy >= h.n_bins) return;
            ++h.counts[static_cast<std::size_t>(iy) * static_cast<std::size_t>(h.n_bins) + static_cast<std::size_t>(ix)];
            ++h.n_pairs;
        });
    }
    return h;
}

// --- match_nearest ---------------------------------------------------------------------------------

namespace {

/// Closest point of `grid` (positions x2, y2) to (x, y) within radius r, skipping `skip(j)`; -1 if none.
template <typename Skip>
std::int64_t closest(const PointGrid& grid, const double* x2, const double* y2, double x, double y, double r,
                     double& best_d2, Skip&& skip) {
    std::int64_t best = -1;
    best_d2 = r * r;
    grid.for_each_near(x, y, r, [&](std::size_t j) {
        if (skip(j)) return;
        const double dx = x2[j] - x, dy = y2[j] - y, d2 = dx * dx + dy * dy;
        if (d2 < best_d2 || (d2 == best_d2 && (best < 0 || static_cast<std::int64_t>(j) < best))) {
            best_d2 = d2;
            best = static_cast<std::int64_t>(j);
        }
    });
    return best;
}

NearestMatch match_with_grid(const PointGrid& grid, const double* x1, const double* y1, std::size_t n1,
                             const double* x2, const double* y2, std::size_t n2, double radius, bool unique) {
    NearestMatch out;
    out.index2.assign(n1, -1);
    out.distance.assign(n1, kNaN);
    for (std::size_t i = 0; i < n1; ++i) {
        if (!finite2(x1[i], y1[i])) continue;
        double d2;
        const std::int64_t j = closest(grid, x2, y2, x1[i], y1[i], radius, d2, [](std::size_t) { return false; });
        if (j >= 0) {
            out.index2[i] = j;
            out.distance[i] = std::sqrt(d2);
        }
    }
    if (unique) {
        std::vector<std::int64_t> owner(n2, -1);
        for (std::size_t i = 0; i < n1; ++i) {
            const std::int64_t j = out.index2[i];
            if (j < 0) continue;
            std::int64_t& o = owner[static_cast<std::size_t>(j)];
            if (o < 0 || out.distance[i] < out.distance[static_cast<std::size_t>(o)]) o = static_cast<std::int64_t>(i);
        }
        for (std::size_t i = 0; i < n1; ++i) {
            const std::int64_t j = out.index2[i];
            if (j >= 0 && owner[static_cast<std::size_t>(j)] != static_cast<std::int64_t>(i)) {
                out.index2[i] = -1;
                out.distance[i] = kNaN;
            }
        }
    }
    return out;
}

}  // namespace

NearestMatch match_nearest(const double* x1, const double* y1, std::size_t n1, const double* x2, const double* y2,
                           std::size_t n2, double radius, bool unique) {
    if (!(std::isfinite(radius) && radius >= 0)) {
        throw std::invalid_argument("match_nearest: radius must be finite and >= 0, got " + std::to_string(radius));
    }
    const PointGrid grid(x2, y2, n2, radius);
    return match_with_grid(grid, x1, y1, n1, x2, y2, n2, radius, unique);
}

// --- gaussian_overlap_sum --------------------------------------------------------------------------

std::vector<double> gaussian_overlap_sum(const double* x1, const double* y1, std::size_t n1, const double* x2,
                                         const double* y2, const double* w2, std::size_t n2, double sigma,
                                         double radius, double min_distance) {
    if (!(std::isfinite(sigma) && sigma > 0))
        throw std::invalid_argument("gaussian_overlap_sum: sigma must be finite and > 0, got " + std::to_string(sigma));
    if (!(std::isfinite(radius) && radius > 0))
        throw std::invalid_argument("gaussian_overlap_sum: radius must be finite and > 0, got " +
                                    std::to_string(radius));
    if (!(std::isfinite(min_distance) && min_distance >= 0))
        throw std::invalid_argument("gaussian_overlap_sum: min_distance must be finite and >= 0, got " +
                                    std::to_string(min_distance));
    const PointGrid grid(x2, y2, n2, radius);
    const double r2max = radius * radius, r2min = min_distance * min_distance, scale = 4.0 * sigma * sigma;
    std::vector<double> out(n1, 0.0);
    for (std::size_t i = 0; i < n1; ++i) {
        if (!finite2(x1[i], y1[i])) continue;
        double sum = 0.0;
        grid.for_each_near(x1[i], y1[i], radius, [&](std::size_t j) {
            const double dx = x2[j] - x1[i], dy = y2[j] - y1[i], d2 = dx * dx + dy * dy;
            if (d2 <= r2max && d2 > r2min) sum += w2[j] * std::exp(-d2 / scale);
        });
        out[i] = sum;
    }
    return out;
}

// --- the pattern matcher ---------------------------------------------------------------------------

namespace {

struct Spoke {
    std::size_t src;  // source index
    double vx, vy;    // s_k - s0
    double len;
};

/// Least-squares similarity r ≈ c + M (s - c) + t over the pairs (closed form: centred cross sums).
bool fit_similarity(const std::vector<double>& sx, const std::vector<double>& sy, const std::vector<double>& rx,
                    const std::vector<double>& ry, double cx, double cy, SimilarityTransform& out) {
    const std::size_t n = sx.size();
    if (n < 2) return false;
    double mus_x = 0, mus_y = 0, mur_x = 0, mur_y = 0;
    for (std::size_t i = 0; i < n; ++i) {
        mus_x += sx[i] - cx;
        mus_y += sy[i] - cy;
        mur_x += rx[i] - cx;
        mur_y += ry[i] - cy;
    }
    const double nd = static_cast<double>(n);
    mus_x /= nd;
    mus_y /= nd;
    mur_x /= nd;
    mur_y /= nd;
    double suu = 0, sdot = 0, scross = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double ux = sx[i] - cx - mus_x, uy = sy[i] - cy - mus_y;
        const double qx = rx[i] - cx - mur_x, qy = ry[i] - cy - mur_y;
        suu += ux * ux + uy * uy;
        sdot += ux * qx + uy * qy;
        scross += ux * qy - uy * qx;
    }
    if (!(suu > 0)) return false;
    out.cx = cx;
    out.cy = cy;
    out.a = sdot / suu;
    out.b = scross / suu;
    out.tx = mur_x - (out.a * mus_x - out.b * mus_y);
    out.ty = mur_y - (out.b * mus_x + out.a * mus_y);
    return true;
}

class Matcher {
public:
    Matcher(const double* xs, const double* ys, const double* fs, std::size_t n_src, const double* xr, const double* yr,
            std::size_t n_ref, const MatcherControl& ctrl)
        : xs_(xs), ys_(ys), n_src_(n_src), xr_(xr), yr_(yr), n_ref_(n_ref), ctrl_(ctrl),
          grid_(xr, yr, n_ref, std::max(ctrl.min_match_dist_pixels, 1.0) * 4.0) {
        // Bright sources: finite positions, by flux (NaN last), ties by index.
        std::vector<std::size_t> idx;
        double xmin = std::numeric_limits<double>::infinity(), ymin = xmin, xmax = -xmin, ymax = -xmin;
        for (std::size_t i = 0; i < n_src; ++i) {
            if (!finite2(xs[i], ys[i])) continue;
            idx.push_back(i);
            xmin = std::min(xmin, xs[i]);
            xmax = std::max(xmax, xs[i]);
            ymin = std::min(ymin, ys[i]);
            ymax = std::max(ymax, ys[i]);
        }
        n_src_ok_ = idx.size();
        auto key = [fs](std::size_t i) { return std::isfinite(fs[i]) ? fs[i] : -std::numeric_limits<double>::infinity(); };
        std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return key(a) > key(b); });
        if (idx.size() > static_cast<std::size_t>(std::max(ctrl.num_bright_stars, 0)))
            idx.resize(static_cast<std::size_t>(std::max(ctrl.num_bright_stars, 0)));
        bright_ = std::move(idx);
        if (n_src_ok_ > 0) {
            cx_ = 0.5 * (xmin + xmax);
            cy_ = 0.5 * (ymin + ymax);
            corners_ = {xmin, ymin, xmax, ymin, xmin, ymax, xmax, ymax};
        }
        double rxmin = std::numeric_limits<double>::infinity(), rymin = rxmin, rxmax = -rxmin, rymax = -rxmin;
        for (std::size_t j = 0; j < n_ref; ++j) {
            if (!finite2(xr[j], yr[j])) continue;
            ++n_ref_ok_;
            rxmin = std::min(rxmin, xr[j]);
            rxmax = std::max(rxmax, xr[j]);
            rymin = std::min(rymin, yr[j]);
            rymax = std::max(rymax, yr[j]);
        }
        if (n_ref_ok_ > 0) ref_box_ = {rxmin, rymin, rxmax, rymax};
        theta_max_ = ctrl.max_rotation_deg * kPi / 180.0;
        const double frac_req = ctrl.min_frac_matched_pairs * static_cast<double>(std::min(n_src_ok_, n_ref_ok_));
        n_required_ = static_cast<std::int64_t>(std::min(static_cast<double>(ctrl.min_matched_pairs), std::ceil(frac_req)));
    }

    PatternMatchResult run() {
        PatternMatchResult res;
        res.n_required = n_required_;
        const int n_match = ctrl_.num_points_for_shape;
        if (n_match < 3) {
            res.reason = "num_points_for_shape must be >= 3";
            return res;
        }
        if (bright_.size() < static_cast<std::size_t>(n_match) || n_ref_ok_ < static_cast<std::size_t>(n_match)) {
            res.reason = "too few objects for a pattern: " + std::to_string(bright_.size()) + " sources, " +
                         std::to_string(n_ref_ok_) + " references with finite positions; num_points_for_shape = " +
                         std::to_string(n_match);
            return res;
        }
        const std::size_t consensus =
            n_ref_ok_ >= static_cast<std::size_t>(std::max(ctrl_.num_ref_require_consensus, 0))
                ? static_cast<std::size_t>(std::max(ctrl_.num_pattern_consensus, 1))
                : 1;
        for (int i = 0; i < std::max(ctrl_.matcher_iterations, 1); ++i) {
            const double tol = std::max(ctrl_.min_match_dist_pixels, 1e-3) * std::ldexp(1.0, i);
            for (int j = 0; j < std::max(ctrl_.matcher_iterations, 1); ++j) {
                const int n_attempt = std::max(ctrl_.num_points_for_shape_attempt, n_match) + j;
                std::vector<SimilarityTransform> found;
                for (std::size_t p = 0; p < bright_.size(); ++p) {
                    SimilarityTransform t;
                    ++res.n_patterns;
                    if (!match_pattern(p, n_attempt, tol, t)) continue;
                    std::size_t agree = 1;
                    for (const auto& f : found) agree += agrees(f, t, 2.0 * tol) ? 1 : 0;
                    found.push_back(t);
                    if (agree < consensus) continue;
                    ++res.n_candidates;
                    if (verify(t, tol, res)) {
                        res.ok = true;
                        res.tolerance = tol;
                        res.softening = i;
                        res.n_consensus = static_cast<int>(agree);
                        return res;
                    }
                }
                if (bright_.size() < static_cast<std::size_t>(n_attempt)) break;  // larger patterns add nothing
            }
        }
        res.reason = "no pattern match verified: " + std::to_string(res.n_patterns) + " source patterns, " +
                     std::to_string(res.n_candidates) + " candidate transforms, best " +
                     std::to_string(res.best_n_pairs) + " pairs of " + std::to_string(n_required_) +
                     " required (within " + fmt(best_distance_) + " px, where chance gives " + fmt(best_chance_) + "; " +
                     std::to_string(n_src_ok_) + " sources, " + std::to_string(n_ref_ok_) + " references)";
        return res;
    }

private:
    /// Do two transforms put the source box corners within `d` of each other?
    bool agrees(const SimilarityTransform& f, const SimilarityTransform& g, double d) const {
        for (int k = 0; k < 4; ++k) {
            double ax, ay, bx, by;
            f.apply(corners_[2 * k], corners_[2 * k + 1], ax, ay);
            g.apply(corners_[2 * k], corners_[2 * k + 1], bx, by);
            if ((ax - bx) * (ax - bx) + (ay - by) * (ay - by) > d * d) return false;
        }
        return true;
    }

    /// Pattern of bright source p: spokes to the next n_attempt - 1 bright sources. On success `out` is
    /// the similarity fitted to the best reference pattern found.
    bool match_pattern(std::size_t p, int n_attempt, double tol, SimilarityTransform& out) const {
        const std::size_t n_spokes_needed = static_cast<std::size_t>(ctrl_.num_points_for_shape - 1);
        const std::size_t s0 = bright_[p];
        std::vector<Spoke> spokes;
        for (std::size_t q = p + 1; q < bright_.size() && spokes.size() + 1 < static_cast<std::size_t>(n_attempt); ++q) {
            const std::size_t k = bright_[q];
            const double vx = xs_[k] - xs_[s0], vy = ys_[k] - ys_[s0];
            const double len = std::hypot(vx, vy);
            if (len > 2.0 * tol) spokes.push_back({k, vx, vy, len});  // a near-coincident pair fixes no angle
        }
        if (spokes.size() < n_spokes_needed) return false;
        std::stable_sort(spokes.begin(), spokes.end(), [](const Spoke& a, const Spoke& b) { return a.len > b.len; });

        const double se = ctrl_.max_scale_error;
        const double d0 = std::hypot(xs_[s0] - cx_, ys_[s0] - cy_);
        const double r_centre = ctrl_.max_offset_pix + d0 * (theta_max_ + se) + tol;
        const double max_shift = ctrl_.max_offset_pix + tol;

        // Best over all (reference centre, anchor): most spokes, then smallest squared residual.
        std::size_t best_n = 0;
        double best_res = 0;
        std::vector<std::size_t> best_src, best_ref;
        std::vector<std::size_t> centres;
        grid_.for_each_near(xs_[s0], ys_[s0], r_centre, [&](std::size_t j) {
            const double dx = xr_[j] - xs_[s0], dy = yr_[j] - ys_[s0];
            if (dx * dx + dy * dy <= r_centre * r_centre) centres.push_back(j);
        });
        std::sort(centres.begin(), centres.end());
        std::vector<std::size_t> used_ref, match_src, match_ref;
        for (const std::size_t r0 : centres) {
            for (std::size_t ia = 0; ia + n_spokes_needed <= spokes.size(); ++ia) {
                const Spoke& an = spokes[ia];
                const double ex = xr_[r0] + an.vx, ey = yr_[r0] + an.vy;
                const double r_arc = an.len * (theta_max_ + se) + tol;
                std::vector<std::size_t> ends;
                grid_.for_each_near(ex, ey, r_arc, [&](std::size_t j) {
                    if (j != r0) ends.push_back(j);
                });
                std::sort(ends.begin(), ends.end());
                for (const std::size_t re : ends) {
                    const double wx = xr_[re] - xr_[r0], wy = yr_[re] - yr_[r0];
                    const double wlen = std::hypot(wx, wy);
                    if (std::abs(wlen - an.len) > tol + an.len * se) continue;
                    const double l2 = an.len * an.len;
                    const double a = (an.vx * wx + an.vy * wy) / l2, b = (an.vx * wy - an.vy * wx) / l2;
                    if (std::abs(std::atan2(b, a)) > theta_max_ + std::asin(std::min(1.0, tol / an.len))) continue;
                    // Shift at the centre of the sources: t = r0 - c - M (s0 - c).
                    const double ux = xs_[s0] - cx_, uy = ys_[s0] - cy_;
                    const double tx = xr_[r0] - cx_ - (a * ux - b * uy), ty = yr_[r0] - cy_ - (b * ux + a * uy);
                    if (tx * tx + ty * ty > max_shift * max_shift) continue;
                    // The other spokes, longest first.
                    used_ref.assign({r0, re});
                    match_src.assign({s0, an.src});
                    match_ref.assign({r0, re});
                    double res2 = 0;
                    std::size_t n_ok = 1;
                    const std::size_t n_other = spokes.size() - 1;
                    std::size_t n_tried = 0;
                    for (std::size_t k = 0; k < spokes.size(); ++k) {
                        if (k == ia) continue;
                        if (n_ok + (n_other - n_tried) < n_spokes_needed) break;  // cannot reach it any more
                        ++n_tried;
                        const Spoke& sp = spokes[k];
                        const double px = xr_[r0] + a * sp.vx - b * sp.vy, py = yr_[r0] + b * sp.vx + a * sp.vy;
                        const double tk = tol * std::max(1.0, sp.len / an.len);
                        double d2;
                        const std::int64_t jr = closest(grid_, xr_, yr_, px, py, tk, d2, [&](std::size_t j) {
                            return std::find(used_ref.begin(), used_ref.end(), j) != used_ref.end();
                        });
                        if (jr < 0) continue;
                        ++n_ok;
                        res2 += d2 / (tk * tk);
                        used_ref.push_back(static_cast<std::size_t>(jr));
                        match_src.push_back(sp.src);
                        match_ref.push_back(static_cast<std::size_t>(jr));
                    }
                    if (n_ok < n_spokes_needed) continue;
                    if (n_ok > best_n || (n_ok == best_n && res2 < best_res)) {
                        best_n = n_ok;
                        best_res = res2;
                        best_src = match_src;
                        best_ref = match_ref;
                    }
                }
            }
        }
        if (best_n < n_spokes_needed) return false;
        std::vector<double> sx, sy, rx, ry;
        for (std::size_t k = 0; k < best_src.size(); ++k) {
            sx.push_back(xs_[best_src[k]]);
            sy.push_back(ys_[best_src[k]]);
            rx.push_back(xr_[best_ref[k]]);
            ry.push_back(yr_[best_ref[k]]);
        }
        if (!fit_similarity(sx, sy, rx, ry, cx_, cy_, out)) return false;
        const double scale = std::hypot(out.a, out.b);
        return std::abs(scale - 1.0) <= se + tol / static_cast<double>(best_src.size()) &&
               std::abs(std::atan2(out.b, out.a)) <= theta_max_ + std::asin(std::min(1.0, tol / spokes.front().len)) &&
               out.tx * out.tx + out.ty * out.ty <= max_shift * max_shift;
    }

    /// Pair every source with its nearest reference under t within d (unique on the reference side).
    NearestMatch pair(const SimilarityTransform& t, double d, std::vector<double>& tx, std::vector<double>& ty) const {
        tx.resize(n_src_);
        ty.resize(n_src_);
        for (std::size_t i = 0; i < n_src_; ++i) t.apply(xs_[i], ys_[i], tx[i], ty[i]);
        return match_with_grid(grid_, tx.data(), ty.data(), n_src_, xr_, yr_, n_ref_, d, true);
    }

    /// Refine a candidate by pairing and refitting; accept it if the pairs are many and not chance.
    bool verify(SimilarityTransform t, double tol, PatternMatchResult& res) const {
        double d = tol;
        std::vector<double> tx, ty, sx, sy, rx, ry;
        for (int it = 0; it < 4; ++it) {
            const NearestMatch m = pair(t, d, tx, ty);
            sx.clear();
            sy.clear();
            rx.clear();
            ry.clear();
            for (std::size_t i = 0; i < n_src_; ++i) {
                if (m.index2[i] < 0) continue;
                sx.push_back(xs_[i]);
                sy.push_back(ys_[i]);
                rx.push_back(xr_[m.index2[i]]);
                ry.push_back(yr_[m.index2[i]]);
            }
            if (sx.size() < 3) return false;
            SimilarityTransform fit;
            if (!fit_similarity(sx, sy, rx, ry, cx_, cy_, fit)) return false;
            t = fit;
            // The spread of the pair distances from their median, assuming Gaussian offsets (Rayleigh
            // distances: median 1.1774 s, mean 1.2533 s, std 0.6551 s), which the truncation at d biases
            // much less than it biases the mean and std themselves.
            std::vector<double> dist(sx.size());
            for (std::size_t k = 0; k < sx.size(); ++k) {
                double px, py;
                t.apply(sx[k], sy[k], px, py);
                dist[k] = std::hypot(px - rx[k], py - ry[k]);
            }
            const std::size_t mid = dist.size() / 2;
            std::nth_element(dist.begin(), dist.begin() + static_cast<std::ptrdiff_t>(mid), dist.end());
            double median = dist[mid];
            if (dist.size() % 2 == 0) median = 0.5 * (median + *std::max_element(dist.begin(), dist.begin() + mid));
            const double sigma = median / 1.1774100225154747;
            const double mean = 1.2533141373155001 * sigma, sd = 0.6551363775620336 * sigma;
            d = std::min(2.0 * tol, std::max(ctrl_.min_match_dist_pixels, mean + ctrl_.match_distance_sigma * sd));
        }
        const NearestMatch m = pair(t, d, tx, ty);
        std::int64_t n_pairs = 0;
        std::size_t n_inside = 0;
        for (std::size_t i = 0; i < n_src_; ++i) {
            n_pairs += m.index2[i] >= 0 ? 1 : 0;
            if (tx[i] >= ref_box_[0] && tx[i] <= ref_box_[2] && ty[i] >= ref_box_[1] && ty[i] <= ref_box_[3]) ++n_inside;
        }
        // Chance coincidences: sources inside the reference box times the references within d of a point.
        const double area = std::max((ref_box_[2] - ref_box_[0]) * (ref_box_[3] - ref_box_[1]), kPi * d * d);
        const double chance = static_cast<double>(n_inside) * static_cast<double>(n_ref_ok_) / area * kPi * d * d;
        if (n_pairs > res.best_n_pairs) {
            res.best_n_pairs = n_pairs;
            best_chance_ = chance;
            best_distance_ = d;
        }
        if (n_pairs < n_required_ || static_cast<double>(n_pairs) < 3.0 * chance + 3.0) return false;
        res.transform = t;
        res.match_distance = d;
        res.src_index.clear();
        res.ref_index.clear();
        res.distance.clear();
        for (std::size_t i = 0; i < n_src_; ++i) {
            if (m.index2[i] < 0) continue;
            res.src_index.push_back(static_cast<std::int64_t>(i));
            res.ref_index.push_back(m.index2[i]);
            res.distance.push_back(m.distance[i]);
        }
        return true;
    }

    const double *xs_, *ys_;
    std::size_t n_src_;
    const double *xr_, *yr_;
    std::size_t n_ref_;
    const MatcherControl& ctrl_;
    PointGrid grid_;
    std::vector<std::size_t> bright_;
    std::size_t n_src_ok_ = 0, n_ref_ok_ = 0;
    double cx_ = 0, cy_ = 0, theta_max_ = 0;
    std::vector<double> corners_ = std::vector<double>(8, 0.0);
    std::vector<double> ref_box_ = std::vector<double>(4, 0.0);
    std::int64_t n_required_ = 0;
    mutable double best_chance_ = 0, best_distance_ = 0;  // of the best rejected candidate, for the message
};

}  // namespace

PatternMatchResult match_pessimistic_b(const double* xs, const double* ys, const double* fs, std::size_t n_src,
                                       const double* xr, const double* yr, std::size_t n_ref,
                                       const MatcherControl& ctrl) {
    if (!(ctrl.max_offset_pix >= 0) || !(ctrl.max_rotation_deg >= 0) || !(ctrl.min_match_dist_pixels > 0) ||
        !(ctrl.max_scale_error >= 0) || !(ctrl.match_distance_sigma >= 0)) {
        throw std::invalid_argument("match_pessimistic_b: max_offset_pix, max_rotation_deg, max_scale_error and "
                                    "match_distance_sigma must be >= 0 and min_match_dist_pixels > 0");
    }
    Matcher m(xs, ys, fs, n_src, xr, yr, n_ref, ctrl);
    return m.run();
}

}  // namespace visitcal
