// base_SdssShape adaptive moments; see measure/sdss_shape.hpp for the algorithm (lsst-spec §5.7).
#include "visitcal/measure/sdss_shape.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <vector>

#include "visitcal/mask.hpp"

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
    const int hx = static_cast<int>(std::ceil(5.0 * std::sqrt(w.xx))) + 1;
    const int hy = static_cast<int>(std::ceil(5.0 * std::sqrt(w.yy))) + 1;
    const int ix = position_to_index(xc), iy = position_to_index(yc);
    return {std::max(a.xmin(), ix - hx), std::min(a.xmax(), ix + hx), std::max(a.ymin(), iy - hy),
            std::min(a.ymax(), iy + hy)};
}

struct Sums {
    double i0 = 0, ix = 0, iy = 0, ixx = 0, iyy = 0, ixy = 0;
    double vw2 = 0, w2 = 0;  // for the w^2-weighted mean variance
};

template <class Acc>
Sums weighted_sums(const Acc& a, const Box& b, double xc, double yc, const Sym2& w) {
    const Sym2 wi = w.inv();
    const bool sub = w.min_eigen() < 1.0;  // narrow weight: average it over 4 x 4 sub-pixels
    Sums s;
    // Without sub-pixels the weight factorises as exp(-a dx^2 / 2) exp(-c dy^2 / 2) r^dx with
    // r = exp(-b dy): one exp per column and two per row instead of one per pixel (the box is
    // +-5 sigma, so no factor over- or underflows; the recurrence costs ~1e-14 relative).
    const int nx = b.x1 - b.x0 + 1;
    std::vector<double> colw(sub ? 0 : static_cast<std::size_t>(nx));
    if (!sub)
        for (int i = 0; i < nx; ++i) {
            const double dx = b.x0 + i - xc;
            colw[static_cast<std::size_t>(i)] = std::exp(-0.5 * wi.xx * dx * dx);
        }
    for (int y = b.y0; y <= b.y1; ++y) {
        const double dy = y - yc;
        const double rowf = sub ? 0.0 : std::exp(-0.5 * wi.yy * dy * dy);
        const double ratio = sub ? 0.0 : std::exp(-wi.xy * dy);
        double cross = sub ? 0.0 : std::exp(-wi.xy * dy * (b.x0 - xc));
        for (int x = b.x0; x <= b.x1; ++x, cross *= ratio) {
            double v, var;
            if (!a.get(x, y, v, var)) continue;
            const double dx = x - xc;
            double wt, wx, wy, wxx, wyy, wxy;
            if (!sub) {
                wt = rowf * colw[static_cast<std::size_t>(x - b.x0)] * cross;
                wx = wt * dx;
                wy = wt * dy;
                wxx = wt * dx * dx;
                wyy = wt * dy * dy;
                wxy = wt * dx * dy;
            } else {
                wt = wx = wy = wxx = wyy = wxy = 0.0;
                for (int sj = 0; sj < 4; ++sj) {
                    const double ey = dy + (sj - 1.5) * 0.25;
                    for (int si = 0; si < 4; ++si) {
                        const double ex = dx + (si - 1.5) * 0.25;
                        const double e = std::exp(-0.5 * (wi.xx * ex * ex + 2.0 * wi.xy * ex * ey + wi.yy * ey * ey)) / 16.0;
                        wt += e;
                        wx += e * ex;
                        wy += e * ey;
                        wxx += e * ex * ex;
                        wyy += e * ey * ey;
                        wxy += e * ex * ey;
                    }
                }
            }
            s.i0 += wt * v;
            s.ix += wx * v;
            s.iy += wy * v;
            s.ixx += wxx * v;
            s.iyy += wyy * v;
            s.ixy += wxy * v;
            s.vw2 += wt * wt * var;
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
void fisher_errors(const Box& b, double xc, double yc, const Sym2& c, double flux, double v, SdssShapeResult& r) {
    if (!(v > 0.0) || !std::isfinite(v) || !(flux > 0.0)) return;
    const Sym2 ci = c.inv();
    const double norm = 1.0 / (2.0 * M_PI * std::sqrt(c.det()));
    Eigen::Matrix4d fm = Eigen::Matrix4d::Zero();
    for (int y = b.y0; y <= b.y1; ++y) {
        const double dy = y - yc;
        for (int x = b.x0; x <= b.x1; ++x) {
            const double dx = x - xc;
            const double n = norm * std::exp(-0.5 * (ci.xx * dx * dx + 2.0 * ci.xy * dx * dy + ci.yy * dy * dy));
            const double gx = ci.xx * dx + ci.xy * dy, gy = ci.xy * dx + ci.yy * dy;  // C^-1 r
            // d ln N / dC = 1/2 (g g^T - C^-1); the off-diagonal parameter appears twice.
            Eigen::Vector4d d(n, flux * n * 0.5 * (gx * gx - ci.xx), flux * n * 0.5 * (gy * gy - ci.yy),
                              flux * n * (gx * gy - ci.xy));
            fm.noalias() += d * d.transpose();
        }
    }
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
SdssShapeResult adaptive(const Acc& a, double x, double y, const SdssShapeControl& ctrl) {
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
    for (int it = 1; it <= max_iter; ++it) {
        r.n_iter = it;
        box = weight_box(a, xc, yc, w);
        if (box.empty()) return fail(0);
        const Sums s = weighted_sums(a, box, xc, yc, w);
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
                fisher_errors(fb, xc, yc, c, r.inst_flux, s.w2 > 0.0 ? s.vw2 / s.w2 : NAN, r);
            }
            return r;
        }
    }
    return r;
}

}  // namespace

SdssShapeResult measure_sdss_shape(const ExposureView& ev, double x, double y, const SdssShapeControl& ctrl) {
    return adaptive(ExposureAccess{ev}, x, y, ctrl);
}

SdssShapeResult adaptive_moments(ImageView<const double> image, int x0, int y0, double x, double y,
                                 const SdssShapeControl& ctrl) {
    return adaptive(ImageAccess{image, x0, y0}, x, y, ctrl);
}

}  // namespace visitcal
