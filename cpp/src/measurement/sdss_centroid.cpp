// base_SdssCentroid; see measurement/sdss_centroid.hpp for the algorithm and our reading of its details.
#include "visitcal/measurement/sdss_centroid.hpp"
#include "visitcal/core/checked.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "visitcal/core/mask.hpp"

namespace visitcal {
namespace {

namespace F = sdss_centroid_flags;

// Gaussian of sigma sampled at -h..h, unit sum (the smoothing filter).
void gaussian_weights(double sigma, int h, std::vector<double>& k) {
    k.assign(static_cast<std::size_t>(2 * h + 1), 0.0);
    double sum = 0.0;
    for (int i = -h; i <= h; ++i) sum += (k[static_cast<std::size_t>(i + h)] = std::exp(-0.5 * i * i / (sigma * sigma)));
    for (double& v : k) v /= sum;
}

// A binned (bx x by, MEAN) stamp of (2h+1)^2 binned pixels centred on binned pixel (0, 0), which covers
// parent columns cx0 .. cx0 + bx - 1 and rows cy0 .. cy0 + by - 1.
struct Stamp {
    int h = 0;
    std::vector<double> img, var;
    double im(int i, int j) const { return img[static_cast<std::size_t>((j + h) * (2 * h + 1) + i + h)]; }
    double va(int i, int j) const { return var[static_cast<std::size_t>((j + h) * (2 * h + 1) + i + h)]; }
};

bool fill_stamp(const ExposureView& ev, int cx0, int cy0, int bx, int by, int h, Stamp& s) {
    const int n = 2 * h + 1;
    // The stamp's corners in 64 bits: near an origin of -2^31 they leave int (sanitizer: -2147483642 - 101).
    const long long xa64 = static_cast<long long>(cx0) - static_cast<long long>(h) * bx;
    const long long ya64 = static_cast<long long>(cy0) - static_cast<long long>(h) * by;
    const long long xb64 = xa64 + static_cast<long long>(n) * bx - 1, yb64 = ya64 + static_cast<long long>(n) * by - 1;
    if (xa64 < ev.x0 || ya64 < ev.y0 || xb64 >= static_cast<long long>(ev.x0) + ev.image.nx ||
        yb64 >= static_cast<long long>(ev.y0) + ev.image.ny)
        return false;
    const int xa = static_cast<int>(xa64), ya = static_cast<int>(ya64);  // on the image: within int
    s.h = h;
    s.img.assign(static_cast<std::size_t>(n * n), 0.0);
    s.var.assign(static_cast<std::size_t>(n * n), 0.0);
    const double inv = 1.0 / (bx * by);
    for (int j = 0; j < n; ++j) {
        for (int yy = 0; yy < by; ++yy) {
            const int py = ya + j * by + yy;
            const float* ir = ev.image.row(py - ev.y0);
            const float* vr = ev.variance.row(py - ev.y0);
            const std::int32_t* mr = ev.mask.data ? ev.mask.row(py - ev.y0) : nullptr;
            for (int i = 0; i < n; ++i) {
                double si = 0.0, sv = 0.0;
                for (int xx = 0; xx < bx; ++xx) {
                    const int c = xa + i * bx + xx - ev.x0;
                    const double v = ir[c], w = vr[c];
                    if (!std::isfinite(v) || !std::isfinite(w) || (mr && (mr[c] & mask_bits::NO_DATA))) return false;
                    si += v;
                    sv += w;
                }
                s.img[static_cast<std::size_t>(j * n + i)] += si * inv;
                s.var[static_cast<std::size_t>(j * n + i)] += sv * inv * inv;  // variance of a mean
            }
        }
    }
    return true;
}

// 1-D maximum through (vm, v0, vp) at -1, 0, 1: log-parabola (exact for a Gaussian) when all are
// positive, parabola otherwise. False when not a maximum or the maximum is outside (-1, 1).
bool peak3(double vm, double v0, double vp, double& off) {
    if (vm > 0.0 && v0 > 0.0 && vp > 0.0) {
        const double lm = std::log(vm), l0 = std::log(v0), lp = std::log(vp);
        const double d2 = 2.0 * l0 - lm - lp;
        if (!(d2 > 0.0)) return false;
        off = 0.5 * (lp - lm) / d2;
    } else {
        const double d2 = 2.0 * v0 - vm - vp;
        if (!(d2 > 0.0)) return false;
        off = 0.5 * (vp - vm) / d2;
    }
    return std::fabs(off) < 1.0;
}

// Quadratic through f(-1), f(0), f(1), evaluated at t.
inline double quad3(double fm, double f0, double fp, double t) {
    return f0 + 0.5 * (fp - fm) * t + (0.5 * (fp + fm) - f0) * t * t;
}

struct Fit {
    double dx = 0, dy = 0;          // offset of the maximum from binned pixel (0, 0), binned px
    double var_x = NAN, var_y = NAN;  // binned px^2
    double size_x2 = NAN, size_y2 = NAN, peak = NAN;
    int move_x = 0, move_y = 0;     // when non-zero: redo centred one pixel over
    std::uint32_t fail = 0;         // failure flag bits
};

// Smooth the 3 x 3 centre of the stamp with the separable kernel k (half width kh = h - 1), locate the
// maximum and its variance.
Fit fit_centre(const Stamp& s, const std::vector<double>& k) {
    Fit f;
    const int h = s.h, kh = h - 1;
    // Row pass: R[i][J] = sum_a k[a] img(i - a, J) for i in -1..1 and every row J.
    double R[3][256];  // 2h + 1 <= 203: the kernel half width is capped at 100
    for (int J = -h; J <= h; ++J)
        for (int i = -1; i <= 1; ++i) {
            double acc = 0.0;
            for (int a = -kh; a <= kh; ++a) acc += k[static_cast<std::size_t>(a + kh)] * s.im(i - a, J);
            R[i + 1][J + h] = acc;
        }
    double S[3][3];  // S[j+1][i+1], smoothed value at (i, j)
    for (int j = -1; j <= 1; ++j)
        for (int i = -1; i <= 1; ++i) {
            double acc = 0.0;
            for (int b = -kh; b <= kh; ++b) acc += k[static_cast<std::size_t>(b + kh)] * R[i + 1][j - b + h];
            S[j + 1][i + 1] = acc;
        }
    const double d2x = 2.0 * S[1][1] - S[1][0] - S[1][2];
    const double d2y = 2.0 * S[1][1] - S[0][1] - S[2][1];
    const double sx = 0.5 * (S[1][2] - S[1][0]);
    const double sy = 0.5 * (S[2][1] - S[0][1]);
    if (d2x == 0.0 || d2y == 0.0 || !std::isfinite(d2x) || !std::isfinite(d2y)) {
        f.fail = F::NO_SECOND_DERIVATIVE;
        return f;
    }
    if (d2x < 0.0 || d2y < 0.0) {
        f.fail = F::NOT_AT_MAXIMUM;
        return f;
    }
    const double dx0 = sx / d2x, dy0 = sy / d2y;
    if (std::fabs(dx0) > 10.0 || std::fabs(dy0) > 10.0) {
        f.fail = F::ALMOST_NO_SECOND_DERIVATIVE;
        return f;
    }
    // The maximum is in a neighbouring pixel: recentre there (margin 0.05 so a source halfway between
    // two pixels does not oscillate).
    if (std::fabs(dx0) > 0.55) f.move_x = dx0 > 0 ? 1 : -1;
    if (std::fabs(dy0) > 0.55) f.move_y = dy0 > 0 ? 1 : -1;
    f.peak = S[1][1] + 0.5 * (sx * dx0 + sy * dy0);
    f.size_x2 = std::fabs(f.peak) / d2x;
    f.size_y2 = std::fabs(f.peak) / d2y;

    double mx[3], my[3];
    bool ok = true;
    for (int r = 0; r < 3 && ok; ++r) ok = peak3(S[r][0], S[r][1], S[r][2], mx[r]);   // row y = r - 1
    for (int c = 0; c < 3 && ok; ++c) ok = peak3(S[0][c], S[1][c], S[2][c], my[c]);   // column x = c - 1
    double dx = dx0, dy = dy0;
    if (ok) {
        // The crossing of the ridges x(y) and y(x); a contraction for any sensible peak.
        dx = mx[1];
        dy = my[1];
        for (int it = 0; it < 50; ++it) {
            const double nx = quad3(mx[0], mx[1], mx[2], dy);
            const double ny = quad3(my[0], my[1], my[2], nx);
            const bool done = std::fabs(nx - dx) < 1e-12 && std::fabs(ny - dy) < 1e-12;
            dx = nx;
            dy = ny;
            if (done) break;
        }
        if (!std::isfinite(dx) || !std::isfinite(dy) || std::fabs(dx) > 1.5 || std::fabs(dy) > 1.5) {
            dx = dx0;
            dy = dy0;
        }
    }
    f.dx = dx;
    f.dy = dy;

    // Errors: sx, d2x are linear filters ky(J) * ax(I) of the stamp; sum var * filter^2 over it.
    // ax_s(I) = (k(I - 1) - k(I + 1)) / 2, ax_d(I) = 2 k(I) - k(I - 1) - k(I + 1), ay = k(J).
    auto kv = [&](int i) { return (i < -kh || i > kh) ? 0.0 : k[static_cast<std::size_t>(i + kh)]; };
    double vss = 0, vsd = 0, vdd = 0, wss = 0, wsd = 0, wdd = 0;  // x then y filters
    for (int J = -h; J <= h; ++J) {
        const double ky = kv(J), ky2 = ky * ky;
        const double dyS = 0.5 * (kv(J - 1) - kv(J + 1)), dyD = 2.0 * kv(J) - kv(J - 1) - kv(J + 1);
        for (int I = -h; I <= h; ++I) {
            const double v = s.va(I, J);
            const double kx = kv(I);
            const double dxS = 0.5 * (kv(I - 1) - kv(I + 1)), dxD = 2.0 * kv(I) - kv(I - 1) - kv(I + 1);
            vss += v * ky2 * dxS * dxS;
            vsd += v * ky2 * dxS * dxD;
            vdd += v * ky2 * dxD * dxD;
            const double kx2 = kx * kx;
            wss += v * kx2 * dyS * dyS;
            wsd += v * kx2 * dyS * dyD;
            wdd += v * kx2 * dyD * dyD;
        }
    }
    f.var_x = (vss - 2.0 * dx * vsd + dx * dx * vdd) / (d2x * d2x);
    f.var_y = (wss - 2.0 * dy * wsd + dy * dy * wdd) / (d2y * d2y);
    return f;
}

bool in_spans(const Span* spans, std::size_t n, int x, int y) {
    // normalized: sorted by (y, x0); binary search the first span with (y, x0) > (y, x)
    const Span* end = spans + n;
    const Span* it = std::upper_bound(spans, end, Span{y, x, x},
                                      [](const Span& a, const Span& b) { return a.y < b.y || (a.y == b.y && a.x0 < b.x0); });
    if (it == spans) return false;
    --it;
    return it->y == y && it->x0 <= x && x <= it->x1;
}

}  // namespace

SdssCentroidResult measure_sdss_centroid(const ExposureView& ev, double peak_x, double peak_y, double psf_sigma,
                                         const Span* spans, std::size_t n_spans, const SdssCentroidControl& ctrl) {
    SdssCentroidResult r;
    if (!std::isfinite(peak_x) || !std::isfinite(peak_y)) {
        r.flags = F::FAILURE | F::BAD_INITIAL_CENTROID;
        return r;
    }
    // Failures report the peak (LSST sets the centroid to the peak before measuring).
    r.x = peak_x;
    r.y = peak_y;
    int ix = position_to_index(peak_x), iy = position_to_index(peak_y);
    if (!ev.contains(ix, iy)) {
        r.flags = F::FAILURE | F::EDGE | F::BAD_INITIAL_CENTROID;
        return r;
    }
    if (!(psf_sigma > 0.0) || !std::isfinite(psf_sigma)) {
        r.flags = F::FAILURE;
        return r;
    }
    const bool check_fp = ctrl.do_footprint_check && spans != nullptr && n_spans > 0;
    if (check_fp && !in_spans(spans, n_spans, ix, iy)) {
        r.flags = F::FAILURE | F::BAD_INITIAL_CENTROID;
        return r;
    }

    // Kernel half width 4 sigma (truncation moves a Gaussian's centroid by < 1e-5 px), capped so the
    // stamp stays small for absurd sigmas.
    const int kh_full = std::min(100, std::max(1, ceil_to_int(4.0 * psf_sigma)));  // saturated: psf_sigma may be huge
    std::vector<double> kernel;
    Stamp stamp;
    std::uint32_t extra = 0;
    double sigma = psf_sigma;
    int kh = kh_full;
    gaussian_weights(sigma, kh, kernel);

    // The unbinned stamp around (ix, iy); near the edge, the 5 x 5 sigma-0.5 kernel of SDSS.
    auto unbinned_stamp = [&]() {
        if (fill_stamp(ev, ix, iy, 1, 1, kh + 1, stamp)) return true;
        if (kh != kh_full) return false;
        sigma = 0.5;
        kh = 2;
        gaussian_weights(sigma, kh, kernel);
        extra |= F::NEAR_EDGE | F::FAILURE;
        return fill_stamp(ev, ix, iy, 1, 1, kh + 1, stamp);
    };

    // Binning 1 x 1, moving at most twice to a neighbouring pixel.
    Fit fit;
    for (int attempt = 0; attempt < 3; ++attempt) {
        if (!ev.contains(ix, iy) || !unbinned_stamp()) {
            r.flags = F::FAILURE | F::EDGE | extra;
            return r;
        }
        fit = fit_centre(stamp, kernel);
        if (fit.fail) {
            r.flags = F::FAILURE | fit.fail | extra;
            return r;
        }
        if ((fit.move_x == 0 && fit.move_y == 0) || attempt == 2) break;
        ix += fit.move_x;
        iy += fit.move_y;
    }
    double best_x = ix + fit.dx, best_y = iy + fit.dy;
    double best_vx = fit.var_x, best_vy = fit.var_y;

    // Binning: while wide (or fainter than peak_min), bin that axis 2x more and measure again.
    if (!(extra & F::NEAR_EDGE)) {
        const double wide = ctrl.wfac * ctrl.wfac * (1.0 + sigma * sigma);
        int bx = 1, by = 1;
        for (;;) {
            const bool faint = ctrl.peak_min > 0.0 && fit.peak < ctrl.peak_min;
            const int nbx = (fit.size_x2 > wide || faint) && bx * 2 <= ctrl.binmax ? bx * 2 : bx;
            const int nby = (fit.size_y2 > wide || faint) && by * 2 <= ctrl.binmax ? by * 2 : by;
            if (nbx == bx && nby == by) break;
            bx = nbx;
            by = nby;
            // Binned pixel 0 covers columns cx0 .. cx0 + bx - 1 with the current best x inside.
            const int cx0 = position_to_index(best_x) - bx / 2, cy0 = position_to_index(best_y) - by / 2;
            if (!fill_stamp(ev, cx0, cy0, bx, by, kh + 1, stamp)) break;
            const Fit fb = fit_centre(stamp, kernel);
            if (fb.fail) break;
            fit = fb;
            // Binned coordinate u maps to parent cx0 + (bx - 1) / 2 + u bx.
            best_x = cx0 + 0.5 * (bx - 1) + fb.dx * bx;
            best_y = cy0 + 0.5 * (by - 1) + fb.dy * by;
            best_vx = fb.var_x * bx * bx;
            best_vy = fb.var_y * by * by;
        }
    }

    r.flags = extra;
    const double dist2 = (best_x - peak_x) * (best_x - peak_x) + (best_y - peak_y) * (best_y - peak_y);
    const bool too_far = ctrl.max_dist_to_peak >= 0.0 && dist2 > ctrl.max_dist_to_peak * ctrl.max_dist_to_peak;
    const bool outside = check_fp && !in_spans(spans, n_spans, position_to_index(best_x), position_to_index(best_y));
    if (too_far || outside || !std::isfinite(best_x) || !std::isfinite(best_y)) {
        r.flags |= F::FAILURE | F::RESET_TO_PEAK;
        return r;
    }
    r.x = best_x;
    r.y = best_y;
    r.x_err = best_vx >= 0.0 ? std::sqrt(best_vx) : NAN;
    r.y_err = best_vy >= 0.0 ? std::sqrt(best_vy) : NAN;
    return r;
}

}  // namespace visitcal
