// Exact circular apertures (base_CircularApertureFlux; see aperture_flux.hpp).
//
// Geometry. With the circle at the origin, the area of a rectangle [a, b] x [c, d] inside it is split
// at the axes and each piece reflected into the first quadrant (0 <= a <= b, 0 <= c <= d). There,
// with s(y) = sqrt(r^2 - y^2) where the circle crosses the line y (0 beyond r) and
// G(x) = int_0^x sqrt(r^2 - t^2) dt = (x s(x) + r^2 asin(x / r)) / 2,
//     area = (d - c) * |[a, min(b, s(d))]|                        (the column is full height)
//          + [G(hi) - G(lo)] - c (hi - lo),  lo = max(a, s(d)), hi = min(b, s(c))   (under the arc)
// and the area is 0 when the near corner (a, c) lies outside (a >= s(c)). Every G needed is G at a
// pixel column edge or G(s) at a pixel row edge, so per radius we tabulate G at the ~2r + 2 column
// edges and s, G(s) at the ~2r + 2 row edges (4r + 4 asin calls), and each boundary pixel then costs
// a few multiply-adds. Pixels with all four corners inside (w = 1) need no geometry at all: per row
// they form a run that grows with r, so one call sums each row once for all radii (a running row
// sum extended radius by radius), and only the ~8r boundary pixels of each radius are weighted.
// G(hi) - G(lo) cancels at most ~pi r^2 / 4 down to <= 1: ~1e-16 * r^2 absolute per pixel, far below
// the 1e-10 relative agreement with photutils asserted by the tests.
#include "visitcal/measurement/aperture_flux.hpp"
#include "visitcal/core/checked.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace visitcal {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kMaxRadii = 64;

struct ColEdge {
    double v;  // |x| of the edge relative to the centre
    double g;  // G(min(v, r))
};
struct RowEdge {
    double v;   // |y| of the edge relative to the centre
    double s;   // s(v) = sqrt(r^2 - v^2), 0 for v >= r
    double gs;  // G(s)
};

inline double g_of(double x, double r, double r2) {
    const double xc = std::min(x, r);
    const double s = std::sqrt(std::max(r2 - xc * xc, 0.0));
    return 0.5 * (xc * s + r2 * std::asin(xc / r));
}
inline ColEdge col_edge(double v, double r, double r2) { return {v, g_of(v, r, r2)}; }
inline RowEdge row_edge(double v, double r, double r2) {
    const double s = v < r ? std::sqrt(r2 - v * v) : 0.0;
    return {v, s, g_of(s, r, r2)};
}

// First-quadrant rectangle [a, b] x [c, d].
// Written with selects instead of branches: which terms apply changes from pixel to pixel along the
// arc, and the mispredicted branches cost more than computing both terms (issue 25). The result is
// the branchy form's to the bit: a term that does not apply adds +0.0, and area (0.0 plus terms)
// is never -0.0, so adding +0.0 leaves it unchanged.
inline double quad_area(const ColEdge& a, const ColEdge& b, const RowEdge& c, const RowEdge& d) {
    const double full_hi = std::min(b.v, d.s);
    const double t_full = (d.v - c.v) * (full_hi - a.v);
    const bool near_lo = a.v >= d.s, near_hi = b.v <= c.s;
    const double lo = near_lo ? a.v : d.s, glo = near_lo ? a.g : d.gs;
    const double hi = near_hi ? b.v : c.s, ghi = near_hi ? b.g : c.gs;
    const double t_arc = (ghi - glo) - c.v * (hi - lo);
    double area = 0.0;
    area += full_hi > a.v ? t_full : 0.0;
    area += hi > lo ? t_arc : 0.0;
    return a.v >= c.s ? 0.0 : area;  // the near corner outside: nothing inside
}

// Rectangle with signed edges: ea < eb (columns), fc < fd (rows); the tabulated edges carry |.|.
inline double rect_area(double ea, const ColEdge& A, double eb, const ColEdge& B, double fc, const RowEdge& C,
                        double fd, const RowEdge& D, const ColEdge& zc, const RowEdge& zr) {
    auto rows = [&](const ColEdge& lo, const ColEdge& hi) {
        if (fc >= 0.0) return quad_area(lo, hi, C, D);
        if (fd <= 0.0) return quad_area(lo, hi, D, C);
        return quad_area(lo, hi, zr, C) + quad_area(lo, hi, zr, D);
    };
    if (ea >= 0.0) return rows(A, B);
    if (eb <= 0.0) return rows(B, A);
    return rows(zc, A) + rows(zc, B);
}

// Sum of n floats (and of their variances) in double with four interleaved accumulators (a fixed
// order, so deterministic; ~4x faster than one dependent chain).
template <typename T>
inline double sum_run(const T* p, int n) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += p[i];
        a1 += p[i + 1];
        a2 += p[i + 2];
        a3 += p[i + 3];
    }
    for (; i < n; ++i) a0 += p[i];
    return (a0 + a1) + (a2 + a3);
}

// sum_run of the image run p[0, n) and of the variance run q[0, n). (Fusing the two chains into one
// loop was measured and gained nothing; issue 25.)
template <typename T>
inline void sum_run2(const T* p, const float* q, int n, double& sp, double& sq) {
    sp = sum_run(p, n);
    sq = sum_run(q, n);
}

// Pixel index range [lo, hi] touched by a circle of radius r centred at local coordinate c.
// Saturated: a finite radius may still be ~1e300 (an int cast would be undefined); such an aperture
// then fails the on-image test of sort_and_count_valid and is never tabulated.
inline int first_touched(double c, double r) { return saturate_to_int(std::floor(c - 0.5 - r) + 1.0); }
inline int last_touched(double c, double r) { return saturate_to_int(std::ceil(c + 0.5 + r) - 1.0); }

struct Sums {
    double flux = 0.0;
    double var = 0.0;
    double area = 0.0;
};

// The shared core: apertures of radii r[order[0]] <= r[order[1]] <= ... of which the first n_valid
// lie on the image. `var` may have data == nullptr (no variance).
template <typename T>
void aperture_core(ImageView<const T> img, ImageView<const float> var, double xc, double yc, const double* radii,
                   const int* order, int n_valid, Sums* sums) {
    if (n_valid == 0) return;
    const bool has_var = var.data != nullptr;
    // Per-radius edge tables.
    struct Tab {
        double r, r2;
        int ilo, ihi, jlo, jhi;
        std::size_t col0, row0;  // offsets into the edge arrays
    };
    Tab tabs[kMaxRadii];
    std::size_t ncol = 0, nrow = 0;
    for (int k = 0; k < n_valid; ++k) {
        Tab& t = tabs[k];
        t.r = radii[order[k]];
        t.r2 = t.r * t.r;
        t.ilo = first_touched(xc, t.r);
        t.ihi = last_touched(xc, t.r);
        t.jlo = first_touched(yc, t.r);
        t.jhi = last_touched(yc, t.r);
        t.col0 = ncol;
        t.row0 = nrow;
        ncol += static_cast<std::size_t>(t.ihi - t.ilo + 2);
        nrow += static_cast<std::size_t>(t.jhi - t.jlo + 2);
    }
    std::vector<ColEdge> cols(ncol);
    std::vector<RowEdge> rows(nrow);
    for (int k = 0; k < n_valid; ++k) {
        const Tab& t = tabs[k];
        for (int i = t.ilo; i <= t.ihi + 1; ++i) cols[t.col0 + (i - t.ilo)] = col_edge(std::fabs(i - 0.5 - xc), t.r, t.r2);
        for (int j = t.jlo; j <= t.jhi + 1; ++j) rows[t.row0 + (j - t.jlo)] = row_edge(std::fabs(j - 0.5 - yc), t.r, t.r2);
    }

    const Tab& big = tabs[n_valid - 1];
    // The aperture's rows are 4 * nx bytes apart, so every row is a fresh cache miss that the
    // hardware prefetcher does not predict; with sources in random order the sums are memory-bound
    // (perf: ~60% of the time on the first load of each row at r = 12). Requesting every line up
    // front lets the misses overlap (on the shared 2-core machine: ours/sep.sum_circle went from
    // 0.52 to 0.45 at r = 12 and 0.48 to 0.44 at r = 25; noisy, but never slower).
    for (int j = big.jlo; j <= big.jhi; ++j) {
        const char* a = reinterpret_cast<const char*>(img.row(j) + big.ilo);
        const char* b = reinterpret_cast<const char*>(img.row(j) + big.ihi);
        for (const char* p = a; p <= b + 63; p += 64) __builtin_prefetch(p);
        if (has_var) {
            const char* va = reinterpret_cast<const char*>(var.row(j) + big.ilo);
            const char* vb = reinterpret_cast<const char*>(var.row(j) + big.ihi);
            for (const char* p = va; p <= vb + 63; p += 64) __builtin_prefetch(p);
        }
    }
    for (int j = big.jlo; j <= big.jhi; ++j) {
        const T* irow = img.row(j);
        const float* vrow = has_var ? var.row(j) : nullptr;
        const double fc = j - 0.5 - yc, fd = fc + 1.0;
        const double n2 = (fc < 0.0 && fd > 0.0) ? 0.0 : std::min(fc * fc, fd * fd);
        const double m2 = std::max(fc * fc, fd * fd);
        int cur_lo = 0, cur_hi = -1;  // whole-pixel run summed so far on this row
        double row_img = 0.0, row_var = 0.0;
        for (int k = 0; k < n_valid; ++k) {
            const Tab& t = tabs[k];
            if (j < t.jlo || j > t.jhi) continue;
            Sums& s = sums[k];
            // Whole pixels: |x| <= sqrt(r^2 - max y^2) at both column edges.
            int f_lo = 0, f_hi = -1;
            if (m2 <= t.r2) {
                const double tf = std::sqrt(t.r2 - m2);
                f_lo = saturate_to_int(std::ceil(xc + 0.5 - tf));  // |tf| <= r: on the image
                f_hi = saturate_to_int(std::floor(xc - 0.5 + tf));
            }
            if (f_lo <= f_hi) {
                if (has_var) {
                    if (cur_lo > cur_hi) {
                        sum_run2(irow + f_lo, vrow + f_lo, f_hi - f_lo + 1, row_img, row_var);
                    } else {
                        double il, vl, ir, vr;
                        sum_run2(irow + f_lo, vrow + f_lo, cur_lo - f_lo, il, vl);
                        sum_run2(irow + cur_hi + 1, vrow + cur_hi + 1, f_hi - cur_hi, ir, vr);
                        row_img += il + ir;
                        row_var += vl + vr;
                    }
                } else if (cur_lo > cur_hi) {
                    row_img = sum_run(irow + f_lo, f_hi - f_lo + 1);
                } else {
                    row_img += sum_run(irow + f_lo, cur_lo - f_lo) + sum_run(irow + cur_hi + 1, f_hi - cur_hi);
                }
                cur_lo = f_lo;
                cur_hi = f_hi;
                s.flux += row_img;
                s.var += row_var;
                s.area += f_hi - f_lo + 1;
            }
            // Boundary pixels: the pixel's nearest point is inside r.
            const double tp = std::sqrt(std::max(t.r2 - n2, 0.0));
            const int p_lo = std::max(saturate_to_int(std::floor(xc - 0.5 - tp) + 1.0), t.ilo);
            const int p_hi = std::min(saturate_to_int(std::ceil(xc + 0.5 + tp) - 1.0), t.ihi);
            const RowEdge& C = rows[t.row0 + (j - t.jlo)];
            const RowEdge& D = rows[t.row0 + (j + 1 - t.jlo)];
            const ColEdge zc{0.0, 0.0};
            const RowEdge zr{0.0, t.r, 0.25 * kPi * t.r2};
            const ColEdge* ce = cols.data() + t.col0;  // ce[i - ilo] = left edge of column i
            auto boundary = [&](int i) {
                const double ea = i - 0.5 - xc;
                const ColEdge& A = ce[i - t.ilo];
                double w = rect_area(ea, A, ea + 1.0, (&A)[1], fc, C, fd, D, zc, zr);
                w = std::min(std::max(w, 0.0), 1.0);
                // w = 0 adds +0.0 (and not 0 x a NaN pixel): the sums, never -0.0, are unchanged, as
                // when the pixel is skipped, without a data-dependent branch.
                const bool in = w > 0.0;
                s.flux += in ? w * static_cast<double>(irow[i]) : 0.0;
                if (has_var) s.var += in ? w * static_cast<double>(vrow[i]) : 0.0;
                s.area += w;
            };
            if (f_lo <= f_hi) {
                for (int i = p_lo; i < f_lo; ++i) boundary(i);
                for (int i = f_hi + 1; i <= p_hi; ++i) boundary(i);
            } else {
                for (int i = p_lo; i <= p_hi; ++i) boundary(i);
            }
        }
    }
}

// Sort radii (indices) ascending and count those whose aperture lies on the image.
inline int sort_and_count_valid(const double* radii, int n, double xc, double yc, int nx, int ny, int* order) {
    for (int k = 0; k < n; ++k) order[k] = k;
    std::stable_sort(order, order + n, [&](int a, int b) { return radii[a] < radii[b]; });
    int n_valid = 0;
    for (int k = 0; k < n; ++k) {
        const double r = radii[order[k]];
        if (first_touched(xc, r) < 0 || last_touched(xc, r) > nx - 1 || first_touched(yc, r) < 0 ||
            last_touched(yc, r) > ny - 1)
            break;
        ++n_valid;
    }
    return n_valid;
}

inline bool position_ok(double xc, double yc) {
    // Beyond ~1e9 px the int conversions overflow; such positions are off any image anyway.
    return std::isfinite(xc) && std::isfinite(yc) && std::fabs(xc) < 1e9 && std::fabs(yc) < 1e9;
}

}  // namespace

void ApertureFluxControl::validate() const {
    if (radii.empty()) throw std::invalid_argument("radii must not be empty");
    if (radii.size() > static_cast<std::size_t>(kMaxRadii))
        throw std::invalid_argument("radii: at most " + std::to_string(kMaxRadii) + " radii");
    for (double r : radii)
        if (!(r > 0.0) || !std::isfinite(r)) throw std::invalid_argument("radii must be finite and > 0");
}

void measure_circular_apertures(const ExposureView& ev, double x, double y, const double* radii, int n_radii,
                                ApertureFluxResult* out) {
    using namespace aperture_flux_flags;
    const double xc = x - ev.x0, yc = y - ev.y0;
    for (int k = 0; k < n_radii; ++k) out[k] = ApertureFluxResult{};
    if (n_radii <= 0) return;
    if (n_radii > kMaxRadii || !position_ok(xc, yc)) {
        for (int k = 0; k < n_radii; ++k) out[k].flags = FAILURE;
        return;
    }
    int order[kMaxRadii];
    const int n_valid = sort_and_count_valid(radii, n_radii, xc, yc, ev.width(), ev.height(), order);
    // Equal radii (the compensated top hat's inner radius equals its aperture by default) are summed
    // once. Leaving a repeated radius out changes no sum: its whole-pixel run adds empty runs (+0.0) to
    // the running row sum, which can only turn a -0.0 row sum into +0.0, and the aperture sums, which
    // start at +0.0, never hold -0.0, so x + (-0.0) == x + (+0.0) for them bit for bit.
    int uorder[kMaxRadii], umap[kMaxRadii];
    int n_unique = 0;
    for (int k = 0; k < n_valid; ++k) {
        if (k == 0 || radii[order[k]] != radii[order[k - 1]]) uorder[n_unique++] = order[k];
        umap[k] = n_unique - 1;
    }
    Sums sums[kMaxRadii];
    aperture_core<float>(ev.image, ev.variance, xc, yc, radii, uorder, n_unique, sums);
    for (int k = 0; k < n_radii; ++k) {
        ApertureFluxResult& o = out[order[k]];
        if (k >= n_valid) {
            o.flags = FAILURE | APERTURE_TRUNCATED;
            continue;
        }
        const Sums& sk = sums[umap[k]];
        o.instFlux = sk.flux;
        o.instFluxErr = sk.var >= 0.0 ? std::sqrt(sk.var) : kNaN;  // NaN stays NaN
        o.area = sk.area;
        if (!std::isfinite(o.instFlux) || !std::isfinite(o.instFluxErr)) o.flags |= FAILURE;
    }
}

template <typename T>
double circular_aperture_sum(ImageView<const T> image, int x0, int y0, double x, double y, double radius,
                             bool* truncated) {
    if (truncated) *truncated = false;
    const double xc = x - x0, yc = y - y0;
    if (!position_ok(xc, yc) || !(radius > 0.0) || !std::isfinite(radius)) return kNaN;
    int order[1];
    if (sort_and_count_valid(&radius, 1, xc, yc, image.nx, image.ny, order) == 0) {
        if (truncated) *truncated = true;
        return kNaN;
    }
    Sums s;
    aperture_core<T>(image, ImageView<const float>{nullptr, 0, 0, 0}, xc, yc, &radius, order, 1, &s);
    return s.flux;
}

template double circular_aperture_sum<float>(ImageView<const float>, int, int, double, double, double, bool*);
template double circular_aperture_sum<double>(ImageView<const double>, int, int, double, double, double, bool*);

double circle_rectangle_overlap(double radius, double xa, double xb, double ya, double yb) {
    if (!(radius > 0.0) || !(xb > xa) || !(yb > ya)) return 0.0;
    const double r = radius, r2 = r * r;
    const ColEdge A = col_edge(std::fabs(xa), r, r2), B = col_edge(std::fabs(xb), r, r2);
    const RowEdge C = row_edge(std::fabs(ya), r, r2), D = row_edge(std::fabs(yb), r, r2);
    const ColEdge zc{0.0, 0.0};
    const RowEdge zr{0.0, r, 0.25 * kPi * r2};
    return rect_area(xa, A, xb, B, ya, C, yb, D, zc, zr);
}

}  // namespace visitcal
