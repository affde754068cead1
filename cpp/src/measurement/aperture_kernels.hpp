// Private to cpp/src: the exact circle-pixel overlap of aperture_flux.cpp (its geometry is described
// there), in scalar form and on four-pixel vectors. The vector form (boundary_weights) is compiled twice:
// by aperture_flux.cpp at the baseline ISA and by aperture_avx2.cpp with -mavx2 -mno-fma
// -ffp-contract=off, chosen at run time (as lanczos_shift_kernels.hpp). Each lane performs the scalar
// rect_area's operations on its own pixel (the same multiplies, adds, square-root-free selects and
// comparisons, none fused), so every weight is the scalar one to the bit on either build; lanes whose
// pixel straddles the vertical axis go through the scalar form. The weights are summed afterwards, pixel
// by pixel in the scalar order, by the caller (issue 25: the boundary pixels' geometry was most of the
// apertures' time; the sums' order is what fixes the bits).
#pragma once

#include <cstddef>
#include <cstring>

namespace visitcal {

namespace aperture_geometry {

struct ColEdge {
    double v;  // |x| of the edge relative to the centre
    double g;  // G(min(v, r))
};
struct RowEdge {
    double v;   // |y| of the edge relative to the centre
    double s;   // s(v) = sqrt(r^2 - v^2), 0 for v >= r
    double gs;  // G(s)
};

// std::min / std::max as the scalar code calls them: min(a, b) = b < a ? b : a, max(a, b) = a < b ? b : a.
inline double min_of(double a, double b) { return b < a ? b : a; }
inline double max_of(double a, double b) { return a < b ? b : a; }

// First-quadrant rectangle [a, b] x [c, d].
// Written with selects instead of branches: which terms apply changes from pixel to pixel along the
// arc, and the mispredicted branches cost more than computing both terms (issue 25). The result is
// the branchy form's to the bit: a term that does not apply adds +0.0, and area (0.0 plus terms)
// is never -0.0, so adding +0.0 leaves it unchanged.
inline double quad_area(const ColEdge& a, const ColEdge& b, const RowEdge& c, const RowEdge& d) {
    const double full_hi = min_of(b.v, d.s);
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

// How a pixel row [fc, fd] (relative to the centre) is folded into the first quadrant.
enum RowCase : int { kRowAbove = 0, kRowBelow = 1, kRowStraddles = 2 };
inline int row_case(double fc, double fd) { return fc >= 0.0 ? kRowAbove : (fd <= 0.0 ? kRowBelow : kRowStraddles); }

// Rectangle with signed edges: ea < eb (columns), fc < fd (rows); the tabulated edges carry |.|.
inline double rect_area(double ea, const ColEdge& A, double eb, const ColEdge& B, int rcase, const RowEdge& C,
                        const RowEdge& D, const RowEdge& zr) {
    auto rows = [&](const ColEdge& lo, const ColEdge& hi) {
        if (rcase == kRowAbove) return quad_area(lo, hi, C, D);
        if (rcase == kRowBelow) return quad_area(lo, hi, D, C);
        return quad_area(lo, hi, zr, C) + quad_area(lo, hi, zr, D);
    };
    const ColEdge zc{0.0, 0.0};
    if (ea >= 0.0) return rows(A, B);
    if (eb <= 0.0) return rows(B, A);
    return rows(zc, A) + rows(zc, B);
}

// A pixel's weight: its overlap clamped to [0, 1] as the sums use it.
inline double clamp_weight(double w) { return min_of(max_of(w, 0.0), 1.0); }

}  // namespace aperture_geometry

namespace aperture_kernels {
// Weights w[t] of the pixels i = i0 + t, t < count, of one row: column edge e0 + t is pixel i's left
// edge in (cv, cg) (|x| and G of every column edge), xc the centre's column; C, D the row's lower and
// upper edges, zr the edge at y = 0, rcase the row's RowCase.
using BoundaryWeightsFn = void (*)(const double* cv, const double* cg, std::ptrdiff_t e0, int i0, int count,
                                   double xc, int rcase, const aperture_geometry::RowEdge& C,
                                   const aperture_geometry::RowEdge& D, const aperture_geometry::RowEdge& zr,
                                   double* w);
void boundary_weights_avx2(const double* cv, const double* cg, std::ptrdiff_t e0, int i0, int count, double xc,
                           int rcase, const aperture_geometry::RowEdge& C, const aperture_geometry::RowEdge& D,
                           const aperture_geometry::RowEdge& zr, double* w);
}  // namespace aperture_kernels

namespace {

// Inline and local to each translation unit: GCC's note that a vector return changes the ABI without
// AVX (-Wpsabi) concerns no call across units (GCC reports it at the unit's end, so it stays off there).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef double ApV4 __attribute__((vector_size(32)));
typedef long long ApM4 __attribute__((vector_size(32)));  // lane masks (all ones or zero)

inline ApV4 ap_load(const double* p) {
    ApV4 r;
    std::memcpy(&r, p, sizeof(r));
    return r;
}
inline ApV4 ap_splat(double x) { return ApV4{x, x, x, x}; }
inline ApV4 ap_select(ApM4 m, ApV4 a, ApV4 b) { return m ? a : b; }

// quad_area on four pixels: columns (av, ag) .. (bv, bg) per lane, rows c, d shared.
inline ApV4 ap_quad_area(ApV4 av, ApV4 ag, ApV4 bv, ApV4 bg, const aperture_geometry::RowEdge& c,
                         const aperture_geometry::RowEdge& d) {
    const ApV4 ds = ap_splat(d.s), cs = ap_splat(c.s);
    const ApV4 full_hi = ap_select(ds < bv, ds, bv);  // min_of(b.v, d.s)
    const ApV4 t_full = ap_splat(d.v - c.v) * (full_hi - av);
    const ApM4 near_lo = av >= ds, near_hi = bv <= cs;
    const ApV4 lo = ap_select(near_lo, av, ds), glo = ap_select(near_lo, ag, ap_splat(d.gs));
    const ApV4 hi = ap_select(near_hi, bv, cs), ghi = ap_select(near_hi, bg, ap_splat(c.gs));
    const ApV4 t_arc = (ghi - glo) - ap_splat(c.v) * (hi - lo);
    const ApV4 zero = ap_splat(0.0);
    ApV4 area = zero;
    area += ap_select(full_hi > av, t_full, zero);
    area += ap_select(hi > lo, t_arc, zero);
    return ap_select(av >= cs, zero, area);
}

inline ApV4 ap_rows(ApV4 lov, ApV4 log, ApV4 hiv, ApV4 hig, int rcase, const aperture_geometry::RowEdge& C,
                    const aperture_geometry::RowEdge& D, const aperture_geometry::RowEdge& zr) {
    if (rcase == aperture_geometry::kRowAbove) return ap_quad_area(lov, log, hiv, hig, C, D);
    if (rcase == aperture_geometry::kRowBelow) return ap_quad_area(lov, log, hiv, hig, D, C);
    return ap_quad_area(lov, log, hiv, hig, zr, C) + ap_quad_area(lov, log, hiv, hig, zr, D);
}

inline void boundary_weights_impl(const double* cv, const double* cg, std::ptrdiff_t e0, int i0, int count,
                                  double xc, int rcase, const aperture_geometry::RowEdge& C,
                                  const aperture_geometry::RowEdge& D, const aperture_geometry::RowEdge& zr,
                                  double* w) {
    namespace ag = aperture_geometry;
    int t = 0;
    for (; t + 4 <= count; t += 4) {
        const int i = i0 + t;
        const double ea0 = i - 0.5 - xc, ea3 = (i + 3) - 0.5 - xc;
        const std::ptrdiff_t e = e0 + t;
        if (ea0 >= 0.0 || ea3 + 1.0 <= 0.0) {  // every lane on one side of the axis (edges grow with i)
            const ApV4 av = ap_load(cv + e), agv = ap_load(cg + e), bv = ap_load(cv + e + 1), bg = ap_load(cg + e + 1);
            const ApV4 r = ea0 >= 0.0 ? ap_rows(av, agv, bv, bg, rcase, C, D, zr)   // right: rows(A, B)
                                      : ap_rows(bv, bg, av, agv, rcase, C, D, zr);  // left: rows(B, A)
            const ApV4 zero = ap_splat(0.0), one = ap_splat(1.0);
            const ApV4 lo = ap_select(r < zero, zero, r);   // max_of(w, 0)
            const ApV4 cl = ap_select(one < lo, one, lo);  // min_of(., 1)
            std::memcpy(w + t, &cl, sizeof(cl));
        } else {
            for (int u = 0; u < 4; ++u) {
                const double ea = (i + u) - 0.5 - xc;
                w[t + u] = ag::clamp_weight(
                    ag::rect_area(ea, ag::ColEdge{cv[e + u], cg[e + u]}, ea + 1.0,
                                  ag::ColEdge{cv[e + u + 1], cg[e + u + 1]}, rcase, C, D, zr));
            }
        }
    }
    for (; t < count; ++t) {
        const int i = i0 + t;
        const double ea = i - 0.5 - xc;
        const std::ptrdiff_t e = e0 + t;
        w[t] = ag::clamp_weight(ag::rect_area(ea, ag::ColEdge{cv[e], cg[e]}, ea + 1.0,
                                              ag::ColEdge{cv[e + 1], cg[e + 1]}, rcase, C, D, zr));
    }
}

}  // namespace
}  // namespace visitcal
