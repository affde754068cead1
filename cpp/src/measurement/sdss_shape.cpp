// base_SdssShape adaptive moments; see measurement/sdss_shape.hpp for the algorithm.
#include "visitcal/measurement/sdss_shape.hpp"
#include "visitcal/core/checked.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <vector>
#include <cstring>

#include "visitcal/core/mask.hpp"
#include "../core/cpu_features.hpp"
#include "sdss_shape_kernels.hpp"

namespace visitcal {
namespace {

namespace F = sdss_shape_flags;

// Pixel access for an exposure (value and variance; false for unusable pixels).
struct ExposureAccess {
    const ExposureView& ev;
    static constexpr bool kHasVariance = true;
    int xmin() const { return ev.x0; }
    int ymin() const { return ev.y0; }
    int xmax() const { return ev.x0 + ev.image.nx - 1; }
    int ymax() const { return ev.y0 + ev.image.ny - 1; }
    bool get(int x, int y, double& v, double& var) const {
        v = ev.img(x, y);
        var = ev.var(x, y);
        if (ev.mask.data && (ev.msk(x, y) & mask_bits::NO_DATA)) return false;
        return std::isfinite(v) && std::isfinite(var);
    }
    // Row y, columns x0 .. x0 + n - 1: values, variances and use (1 or 0); unusable pixels get 0.
    // Finiteness is tested on the exponent bits, branch-free, so the loop vectorises.
    void load_row(int y, int x0, int n, double* v, double* var, double* use) const {
        const float* ip = ev.image.row(y - ev.y0) + (x0 - ev.x0);
        const float* vp = ev.variance.row(y - ev.y0) + (x0 - ev.x0);
        const std::int32_t* mp = ev.mask.data ? ev.mask.row(y - ev.y0) + (x0 - ev.x0) : nullptr;
        constexpr std::uint32_t kExp = 0x7f800000u;
        for (int i = 0; i < n; ++i) {
            std::uint32_t ia, ib;
            std::memcpy(&ia, ip + i, 4);
            std::memcpy(&ib, vp + i, 4);
            const bool ok = ((ia & kExp) != kExp) & ((ib & kExp) != kExp) &
                            !(mp != nullptr && (mp[i] & mask_bits::NO_DATA));
            v[i] = ok ? static_cast<double>(ip[i]) : 0.0;
            var[i] = ok ? static_cast<double>(vp[i]) : 0.0;
            use[i] = ok ? 1.0 : 0.0;
        }
    }
};

struct ImageAccess {
    ImageView<const double> im;
    int x0, y0;
    static constexpr bool kHasVariance = false;
    int xmin() const { return x0; }
    int ymin() const { return y0; }
    int xmax() const { return x0 + im.nx - 1; }
    int ymax() const { return y0 + im.ny - 1; }
    bool get(int x, int y, double& v, double& var) const {
        v = im.row(y - y0)[x - x0];
        var = 0.0;
        return std::isfinite(v);
    }
    void load_row(int y, int xs, int n, double* v, double* var, double* use) const {
        const double* ip = im.row(y - y0) + (xs - x0);
        for (int i = 0; i < n; ++i) {
            const bool ok = std::isfinite(ip[i]);
            v[i] = ok ? ip[i] : 0.0;
            var[i] = 0.0;
            use[i] = ok ? 1.0 : 0.0;
        }
    }
};

struct Sym2 {
    double xx, yy, xy;
    double det() const { return xx * yy - xy * xy; }
    Sym2 inv() const {
        const double d = det();
        return {yy / d, xx / d, -xy / d};
    }
    bool positive() const { return xx > 0.0 && yy > 0.0 && det() > 0.0 && std::isfinite(det()); }
    double min_eigen() const {
        const double t = 0.5 * (xx + yy), q = std::sqrt(0.25 * (xx - yy) * (xx - yy) + xy * xy);
        return t - q;
    }
};

struct Box {
    int x0, x1, y0, y1;
    bool empty() const { return x1 < x0 || y1 < y0; }
};

template <class Acc>
Box weight_box(const Acc& a, double xc, double yc, const Sym2& w) {
    // +-5 sigma of the weight's marginals: the matched product (sigma / sqrt 2) is then cut at 7 sigma.
    // In double, clipped before the int conversion: a huge or non-finite weight (or centre) made the
    // int casts undefined and ix +- hx wrap. A NaN gives an empty box.
    const double hx = std::ceil(5.0 * std::sqrt(w.xx)) + 1.0, hy = std::ceil(5.0 * std::sqrt(w.yy)) + 1.0;
    const double ix = std::floor(xc + 0.5), iy = std::floor(yc + 0.5);  // position_to_index, unrounded
    Box b;
    if (!clip_run(ix - hx, ix + hx, a.xmin(), a.xmax(), b.x0, b.x1) ||
        !clip_run(iy - hy, iy + hy, a.ymin(), a.ymax(), b.y0, b.y1)) {
        return {1, 0, 1, 0};
    }
    return b;
}

struct Sums {
    double i0 = 0, ix = 0, iy = 0, ixx = 0, iyy = 0, ixy = 0;
    double vw2 = 0, w2 = 0;  // for the w^2-weighted mean variance
};

// g[k] = exp(-1/2 (a ex_k^2 + 2 b ex_k ey + c ey^2)) for ex_k = ex0 + k h, k < n (a, b, c: the
// inverse weight covariance). Completing the square, the row is exp(-1/2 (c - b^2/a) ey^2) times a
// 1-D Gaussian in ex centred on m = -b ey / a, which is evaluated by the ratio recurrence
// g_{k+1} = g_k r_k, r_{k+1} = r_k exp(-a h^2), walking outwards from the sample nearest m. Every
// factor is then <= 1 (nothing overflows, however elongated the weight; the exp(-b ex ey) factor of
// a plain separation overflows past axis ratios of ~10), it costs 2 exp per row instead of one per
// sample, and the recurrence drifts by ~n ulp. Samples below 1e-250 of the row's peak are set to 0
// (and are so small that denormal arithmetic would only slow the loop down).
// q = exp(-a h^2), the same for every row of a box, is passed in.
//
// gaussian_rows<R> evaluates R such rows (at ey[0..R), row r into g + r n) at once: each row does
// exactly the operations above, so every value is the same to the bit, but the 2R outward walks
// (chains of dependent multiplies, 4-cycle latency each) are stepped in one loop, keeping 2R in
// flight instead of one (issue 25: the recurrence was ~25% of SdssShape's time).
template <int R>
void gaussian_rows(double a, double b, double c, const double* ey, double ex0, double h, double q, int n, double* g) {
    constexpr double kTiny = 1e-250;
    double gf[R], rf[R], gb[R], rb[R], fl[R];
    int kf[R], kb[R];
    for (int r = 0; r < R; ++r) {
        double* gr = g + static_cast<std::ptrdiff_t>(r) * n;
        const double m = -b * ey[r] / a;
        int p = static_cast<int>(std::lround((m - ex0) / h));
        p = std::min(std::max(p, 0), n - 1);
        const double dp = ex0 + p * h - m;
        const double gp = std::exp(-0.5 * ((c - b * b / a) * ey[r] * ey[r] + a * dp * dp));
        fl[r] = gp * kTiny;  // samples below 1e-250 of the row's peak are 0
        gr[p] = gp;
        const double r_fwd = std::exp(-a * h * dp - 0.5 * a * h * h);  // g[p + 1] / g[p]
        gf[r] = gp;
        rf[r] = r_fwd;
        gb[r] = gp;
        rb[r] = q / r_fwd;  // g[p - 1] / g[p] = exp(a h dp - a h^2 / 2)
        kf[r] = p + 1;
        kb[r] = p - 1;
    }
    for (bool more = true; more;) {
        more = false;
        for (int r = 0; r < R; ++r) {
            double* gr = g + static_cast<std::ptrdiff_t>(r) * n;
            if (kf[r] < n && gf[r] > fl[r]) {
                gf[r] *= rf[r];
                rf[r] *= q;
                gr[kf[r]++] = gf[r];
                more = true;
            }
            if (kb[r] >= 0 && gb[r] > fl[r]) {
                gb[r] *= rb[r];
                rb[r] *= q;
                gr[kb[r]--] = gb[r];
                more = true;
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        double* gr = g + static_cast<std::ptrdiff_t>(r) * n;
        for (int k = kf[r]; k < n; ++k) gr[k] = 0.0;
        for (int k = kb[r]; k >= 0; --k) gr[k] = 0.0;
    }
}

void gaussian_row(double a, double b, double c, double ey, double ex0, double h, double q, int n, double* g) {
    gaussian_rows<1>(a, b, c, &ey, ex0, h, q, n, g);
}

// Scratch buffers reused across the iterations of one source, and the source's pixels: values,
// variances and use flags of a region loaded once and re-read by every iteration whose box lies
// inside it (the box moves and grows by a pixel or two between iterations; loading converted and
// tested every pixel of every row at each of the ~15 iterations: ~28% of the iteration loop's
// profile samples on an lsst detector; issue 25). The
// loaded values are what load_row returns, so the sums are unchanged to the bit.
struct Workspace {
    std::vector<double> g, w;
    std::vector<double> v, var, use;  // the cached region, row-major, width cw
    int cx0 = 0, cx1 = -1, cy0 = 0, cy1 = -1, cw = 0;
    void resize(std::size_t nsub, std::size_t nx) {
        if (g.size() < nsub) g.resize(nsub);
        if (w.size() < nx) w.resize(nx);
    }
    // Make the cache cover box b: reload (b grown by a margin, clipped to the image) when it does not.
    template <class Acc>
    void cover(const Acc& a, const Box& b) {
        if (b.x0 >= cx0 && b.x1 <= cx1 && b.y0 >= cy0 && b.y1 <= cy1) return;
        // px: a few iterations' growth of the +-5 sigma box. The margin is added in 64 bits and the result
        // clipped to the image, so a box at the int32 limits (an image far from the origin) cannot overflow.
        constexpr long long kMargin = 4;
        const auto grow = [](int lo, long long by, int limit, bool up) {
            const long long v = static_cast<long long>(lo) + (up ? by : -by);
            return static_cast<int>(up ? std::min<long long>(v, limit) : std::max<long long>(v, limit));
        };
        cx0 = grow(b.x0, kMargin, a.xmin(), false);
        cx1 = grow(b.x1, kMargin, a.xmax(), true);
        cy0 = grow(b.y0, kMargin, a.ymin(), false);
        cy1 = grow(b.y1, kMargin, a.ymax(), true);
        cw = cx1 - cx0 + 1;
        const std::size_t n = static_cast<std::size_t>(cw) * static_cast<std::size_t>(cy1 - cy0 + 1);
        if (v.size() < n) {
            v.resize(n);
            var.resize(n);
            use.resize(n);
        }
        for (int y = cy0; y <= cy1; ++y) {
            const std::size_t o = static_cast<std::size_t>(y - cy0) * static_cast<std::size_t>(cw);
            a.load_row(y, cx0, cw, v.data() + o, var.data() + o, use.data() + o);
        }
    }
    // Offset of pixel (x, y) (inside the cached region) in v, var, use.
    std::size_t at(int x, int y) const {
        return static_cast<std::size_t>(y - cy0) * static_cast<std::size_t>(cw) + static_cast<std::size_t>(x - cx0);
    }
};

// Sub-samples per pixel side for a narrow weight (see adaptive).
constexpr int kSub = 4;

// The per-iteration pixel sums: the AVX2 build where the CPU has it, else this file's baseline build;
// the same bits either way (sdss_shape_kernels.hpp). baseline_only forces the baseline (tests).
struct SumKernels {
    sdss_kernels::RowPairFn row_pair;
    sdss_kernels::SubRowsFn sub_rows;
};

void row_pair_baseline(const double* g0, const double* g1, const double* v, const double* var, const double* use,
                       std::ptrdiff_t cw, int nx, double ex0, bool two_rows, SdssRowSums* out) {
    sdss_row_pair_impl(g0, g1, v, var, use, cw, nx, ex0, two_rows, out);
}
void sub_rows_baseline(const double* g, const double* v, int nx, double ex0, double h, double* wsum,
                       SdssSubRowSums* out) {
    sdss_sub_rows_impl(g, v, nx, ex0, h, wsum, out);
}

SumKernels sum_kernels(bool baseline_only) {
    if (!baseline_only && cpu_has_avx2()) return {sdss_kernels::row_pair_avx2, sdss_kernels::sub_rows_avx2};
    return {row_pair_baseline, sub_rows_baseline};
}

// The weighted sums over the box, the weight averaged over ns x ns sub-pixels of each pixel.
template <class Acc>
Sums weighted_sums(const Acc& a, const Box& b, double xc, double yc, const Sym2& w, int ns, Workspace& ws,
                   const SumKernels& k) {
    const Sym2 wi = w.inv();
    const double h = 1.0 / ns, o0 = -0.5 + 0.5 * h, norm = h * h;
    const double q = std::exp(-wi.xx * h * h);
    const int nx = b.x1 - b.x0 + 1;
    const int nsub = nx * ns;
    // Room for ns sub-rows (ns = kSub), or for two rows at one sample per pixel.
    ws.resize(static_cast<std::size_t>(std::max(ns, 2)) * static_cast<std::size_t>(nsub), static_cast<std::size_t>(nx));
    ws.cover(a, b);
    double* g = ws.g.data();
    Sums s;
    const double ex0 = b.x0 - xc + o0;
    const std::ptrdiff_t cw = ws.cw;
    if (ns == 1) {
        // One sample per pixel. The weights of rows y and y + 1 are evaluated together
        // (gaussian_rows<2>, their recurrences interleaved) and summed together (the kernel's lanes);
        // the moments still accumulate row by row, in order.
        for (int y = b.y0; y <= b.y1; y += 2) {
            const std::size_t o = ws.at(b.x0, y);
            const bool two = y < b.y1;
            if (two) {
                const double eys[2] = {y - yc, (y + 1) - yc};
                gaussian_rows<2>(wi.xx, wi.xy, wi.yy, eys, ex0, 1.0, q, nx, g);
            } else {
                gaussian_row(wi.xx, wi.xy, wi.yy, y - yc, ex0, 1.0, q, nx, g);
            }
            SdssRowSums r[2];
            k.row_pair(g, g + nx, ws.v.data() + o, ws.var.data() + o, ws.use.data() + o, cw, nx, ex0, two, r);
            for (int t = 0; t < (two ? 2 : 1); ++t) {
                const double dy = (y + t) - yc;
                s.i0 += r[t].i0;
                s.ix += r[t].ix;
                s.iy += r[t].i0 * dy;
                s.ixx += r[t].ixx;
                s.iyy += r[t].i0 * dy * dy;
                s.ixy += r[t].ix * dy;
                s.vw2 += r[t].w2v;
                s.w2 += r[t].w2;
            }
        }
        return s;
    }
    // ns x ns (= kSub x kSub) sub-samples per pixel. Per sub-row (ey fixed): each pixel's sums of e,
    // e ex and e ex^2 over its ns sub-columns, times the pixel value, give every moment (the ey factors
    // come out of the pixel sums); the pixel's total weight is kept for the variance terms. The ns
    // sub-rows' weights first, their recurrences interleaved (gaussian_rows), then their sums at once.
    double* wsum = ws.w.data();
    for (int y = b.y0; y <= b.y1; ++y) {
        const double dy = y - yc;
        const std::size_t o = ws.at(b.x0, y);
        double eys[kSub];
        for (int j = 0; j < kSub; ++j) eys[j] = dy + o0 + j * h;
        gaussian_rows<kSub>(wi.xx, wi.xy, wi.yy, eys, ex0, h, q, nsub, g);
        SdssSubRowSums r;
        k.sub_rows(g, ws.v.data() + o, nx, ex0, h, wsum, &r);
        for (int j = 0; j < kSub; ++j) {
            const double ey = eys[j];
            s.i0 += norm * r.a0[j];
            s.ix += norm * r.ax[j];
            s.iy += norm * ey * r.a0[j];
            s.ixx += norm * r.axx[j];
            s.iyy += norm * ey * ey * r.a0[j];
            s.ixy += norm * ey * r.ax[j];
        }
        const double* puse = ws.use.data() + o;
        const double* pvar = ws.var.data() + o;
        for (int i = 0; i < nx; ++i) {
            const double wt = norm * wsum[i] * puse[i];
            s.vw2 += wt * wt * pvar[i];
            s.w2 += wt * wt;
        }
    }
    return s;
}

// Unweighted moments about (xc, yc) over the box: the fallback.
template <class Acc>
void unweighted(const Acc& a, const Box& b, double xc, double yc, SdssShapeResult& r) {
    double i0 = 0, ixx = 0, iyy = 0, ixy = 0;
    for (int y = b.y0; y <= b.y1; ++y)
        for (int x = b.x0; x <= b.x1; ++x) {
            double v, var;
            if (!a.get(x, y, v, var)) continue;
            const double dx = x - xc, dy = y - yc;
            i0 += v;
            ixx += v * dx * dx;
            iyy += v * dy * dy;
            ixy += v * dx * dy;
        }
    r.x = xc;
    r.y = yc;
    const Sym2 m{ixx / i0, iyy / i0, ixy / i0};
    if (i0 > 0.0 && m.positive()) {
        r.xx = m.xx;
        r.yy = m.yy;
        r.xy = m.xy;
        r.flags |= F::FAILURE | F::UNWEIGHTED;
    } else {
        r.flags |= F::FAILURE | F::UNWEIGHTED_BAD;
    }
}

// Inverse Fisher matrix of (F, xx, yy, xy) for F N(r; 0, C) sampled on the box, noise variance v.
void fisher_errors(const Box& b, double xc, double yc, const Sym2& c, double flux, double v, SdssShapeResult& r,
                   Workspace& ws) {
    if (!(v > 0.0) || !std::isfinite(v) || !(flux > 0.0)) return;
    const Sym2 ci = c.inv();
    const double norm = 1.0 / (2.0 * M_PI * std::sqrt(c.det()));
    const double q = std::exp(-ci.xx);
    const int nx = b.x1 - b.x0 + 1;
    ws.resize(static_cast<std::size_t>(nx), static_cast<std::size_t>(nx));
    double* g = ws.g.data();
    // Upper triangle of the 4 x 4 Fisher matrix, summed as scalars (a rank-1 update per pixel).
    double f[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int y = b.y0; y <= b.y1; ++y) {
        const double dy = y - yc;
        gaussian_row(ci.xx, ci.xy, ci.yy, dy, b.x0 - xc, 1.0, q, nx, g);
        for (int i = 0; i < nx; ++i) {
            const double dx = b.x0 + i - xc;
            const double n = norm * g[i];
            const double gx = ci.xx * dx + ci.xy * dy, gy = ci.xy * dx + ci.yy * dy;  // C^-1 r
            // d ln N / dC = 1/2 (g g^T - C^-1); the off-diagonal parameter appears twice.
            const double d0 = n, d1 = flux * n * 0.5 * (gx * gx - ci.xx), d2 = flux * n * 0.5 * (gy * gy - ci.yy),
                         d3 = flux * n * (gx * gy - ci.xy);
            f[0] += d0 * d0;
            f[1] += d0 * d1;
            f[2] += d0 * d2;
            f[3] += d0 * d3;
            f[4] += d1 * d1;
            f[5] += d1 * d2;
            f[6] += d1 * d3;
            f[7] += d2 * d2;
            f[8] += d2 * d3;
            f[9] += d3 * d3;
        }
    }
    Eigen::Matrix4d fm;
    fm << f[0], f[1], f[2], f[3], f[1], f[4], f[5], f[6], f[2], f[5], f[7], f[8], f[3], f[6], f[8], f[9];
    fm /= v;
    Eigen::FullPivLU<Eigen::Matrix4d> lu(fm);
    if (!lu.isInvertible()) return;
    const Eigen::Matrix4d cov = lu.inverse();
    r.inst_flux_err = std::sqrt(cov(0, 0));
    r.xx_err = std::sqrt(cov(1, 1));
    r.yy_err = std::sqrt(cov(2, 2));
    r.xy_err = std::sqrt(cov(3, 3));
    r.inst_flux_xx_cov = cov(0, 1);
    r.inst_flux_yy_cov = cov(0, 2);
    r.inst_flux_xy_cov = cov(0, 3);
}

template <class Acc>
SdssShapeResult adaptive(const Acc& a, double x, double y, const SdssShapeControl& ctrl, bool baseline_only = false) {
    SdssShapeResult r;
    if (!std::isfinite(x) || !std::isfinite(y)) {
        r.flags = F::FAILURE | F::UNWEIGHTED_BAD;
        return r;
    }
    const double max_shift = ctrl.max_shift > 0.0 ? ctrl.max_shift : 2.0;
    Sym2 w{1.5, 1.5, 0.0};
    double xc = x, yc = y;
    Box box = weight_box(a, xc, yc, w);
    auto fail = [&](std::uint32_t extra) {
        const int n_iter = r.n_iter;
        r = SdssShapeResult{};
        r.n_iter = n_iter;
        r.flags = extra;
        unweighted(a, box, x, y, r);
        return r;
    };
    if (box.empty()) return fail(0);
    const int max_iter = std::max(1, ctrl.max_iter);
    Workspace ws;
    const SumKernels kernels = sum_kernels(baseline_only);
    // A narrow weight (smallest eigenvalue of W below 1 px^2) is averaged over 4 x 4 sub-pixels. The
    // choice latches: once on, it stays on for this source. Otherwise a source whose moments sit near
    // the threshold flips between the two samplings, whose answers differ by ~pixel^2/12, and
    // cycles between two estimates until max_iter (seen on undersampled stars, sigma ~ 1 px).
    int ns = 1;
    for (int it = 1; it <= max_iter; ++it) {
        r.n_iter = it;
        box = weight_box(a, xc, yc, w);
        if (box.empty()) return fail(0);
        if (w.min_eigen() < 1.0) ns = kSub;
        const Sums s = weighted_sums(a, box, xc, yc, w, ns, ws, kernels);
        if (!(s.i0 > 0.0) || !std::isfinite(s.i0)) return fail(0);
        const double mx = s.ix / s.i0, my = s.iy / s.i0;
        const Sym2 m{s.ixx / s.i0 - mx * mx, s.iyy / s.i0 - my * my, s.ixy / s.i0 - mx * my};
        if (!m.positive()) return fail(0);
        const Sym2 wi = w.inv(), mi = m.inv();
        const Sym2 cinv{mi.xx - wi.xx, mi.yy - wi.yy, mi.xy - wi.xy};
        if (!cinv.positive()) return fail(0);
        const Sym2 c = cinv.inv();
        if (!c.positive() || c.xx > 1e4 || c.yy > 1e4) return fail(0);
        const double sx = 2.0 * mx, sy = 2.0 * my;
        const double nx = xc + sx, ny = yc + sy;
        if (std::hypot(nx - x, ny - y) > max_shift) return fail(F::SHIFT);

        const double tw = w.xx + w.yy, tc = c.xx + c.yy;
        const bool converged = std::fabs((c.xx - c.yy) / tc - (w.xx - w.yy) / tw) < ctrl.tol1 &&
                               std::fabs(2.0 * c.xy / tc - 2.0 * w.xy / tw) < ctrl.tol1 &&
                               std::fabs(tc / tw - 1.0) < ctrl.tol2 && std::hypot(sx, sy) < 1e-4;
        // Flux of the Gaussian F N(mu, C) that gives these weighted sums (exact for a Gaussian).
        const Sym2 cw{c.xx + w.xx, c.yy + w.yy, c.xy + w.xy};
        const Sym2 cwi = cw.inv();
        const double q = cwi.xx * sx * sx + 2.0 * cwi.xy * sx * sy + cwi.yy * sy * sy;
        r.inst_flux = s.i0 * std::sqrt(c.det() / m.det()) * std::exp(0.5 * q);
        r.x = nx;
        r.y = ny;
        r.xx = c.xx;
        r.yy = c.yy;
        r.xy = c.xy;
        w = c;
        xc = nx;
        yc = ny;
        if (converged || it == max_iter) {
            if (!converged) r.flags |= F::FAILURE | F::MAXITER;
            if constexpr (Acc::kHasVariance) {
                const Box fb = weight_box(a, xc, yc, c);
                fisher_errors(fb, xc, yc, c, r.inst_flux, s.w2 > 0.0 ? s.vw2 / s.w2 : NAN, r, ws);
            }
            return r;
        }
    }
    return r;
}

}  // namespace

SdssShapeResult measure_sdss_shape(const ExposureView& ev, double x, double y, const SdssShapeControl& ctrl,
                                   bool baseline_only) {
    return adaptive(ExposureAccess{ev}, x, y, ctrl, baseline_only);
}

SdssShapeResult adaptive_moments(ImageView<const double> image, int x0, int y0, double x, double y,
                                 const SdssShapeControl& ctrl, bool baseline_only) {
    return adaptive(ImageAccess{image, x0, y0}, x, y, ctrl, baseline_only);
}

}  // namespace visitcal
