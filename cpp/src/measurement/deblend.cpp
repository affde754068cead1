// The SDSS-style deblender (meas_deblender's SourceDeblendTask); the header describes the algorithm.
// Own implementation.
//
// Working representation: every template is a raster (values + membership) over its own bounding box in
// the parent frame; a parent's footprints are a few hundred to ~10^4 pixels, so rasters of their bboxes
// cost less than span arithmetic and keep every step a plain loop.
#include "visitcal/measurement/deblend.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <climits>
#include <array>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>

namespace visitcal {

namespace {

// Membership + values over a box (parent frame).
struct Raster {
    Box2I box;
    std::vector<float> v;
    std::vector<std::uint8_t> m;

    Raster() = default;
    explicit Raster(const Box2I& b)
        : box(b), v(b.empty() ? 0 : static_cast<std::size_t>(b.width()) * b.height(), 0.0f),
          m(v.size(), 0) {}
    bool inside(int x, int y) const { return x >= box.min_x && x <= box.max_x && y >= box.min_y && y <= box.max_y; }
    std::size_t idx(int x, int y) const {
        return static_cast<std::size_t>(y - box.min_y) * box.width() + static_cast<std::size_t>(x - box.min_x);
    }
    bool in(int x, int y) const { return inside(x, y) && m[idx(x, y)] != 0; }
    float val(int x, int y) const { return inside(x, y) ? v[idx(x, y)] : 0.0f; }
};

Box2I bbox_of(const std::vector<Span>& s) {
    if (s.empty()) return {};
    Box2I b(s[0].x0, s[0].y, s[0].x1, s[0].y);
    for (const Span& sp : s) {
        b.min_x = std::min(b.min_x, sp.x0);
        b.max_x = std::max(b.max_x, sp.x1);
        b.min_y = std::min(b.min_y, sp.y);
        b.max_y = std::max(b.max_y, sp.y);
    }
    return b;
}

Box2I grow(const Box2I& b, int s) { return {b.min_x - s, b.min_y - s, b.max_x + s, b.max_y + s}; }
Box2I intersect(const Box2I& a, const Box2I& b) {
    return {std::max(a.min_x, b.min_x), std::max(a.min_y, b.min_y), std::min(a.max_x, b.max_x), std::min(a.max_y, b.max_y)};
}
Box2I unite(const Box2I& a, const Box2I& b) {
    if (a.empty()) return b;
    if (b.empty()) return a;
    return {std::min(a.min_x, b.min_x), std::min(a.min_y, b.min_y), std::max(a.max_x, b.max_x), std::max(a.max_y, b.max_y)};
}

Raster raster_of(const std::vector<Span>& spans, const Box2I& box) {
    Raster r(box);
    for (const Span& s : spans) {
        if (s.y < box.min_y || s.y > box.max_y) continue;
        for (int x = std::max(s.x0, box.min_x); x <= std::min(s.x1, box.max_x); ++x) r.m[r.idx(x, s.y)] = 1;
    }
    return r;
}

std::vector<Span> spans_of(const Raster& r) {
    std::vector<Span> out;
    if (r.box.empty()) return out;
    for (int y = r.box.min_y; y <= r.box.max_y; ++y) {
        int x = r.box.min_x;
        while (x <= r.box.max_x) {
            if (!r.m[r.idx(x, y)]) { ++x; continue; }
            const int x0 = x;
            while (x <= r.box.max_x && r.m[r.idx(x, y)]) ++x;
            out.push_back({y, x0, x - 1});
        }
    }
    return out;
}

// A PSF stamp read by parent pixel (0 outside).
struct Stamp {
    PsfImage img;
    double at(int x, int y) const {
        const int ix = x - img.x0, iy = y - img.y0;
        if (ix < 0 || iy < 0 || ix >= img.width || iy >= img.height) return 0.0;
        return img.at(ix, iy);
    }
    Box2I box() const { return {img.x0, img.y0, img.x0 + img.width - 1, img.y0 + img.height - 1}; }
};

struct Template {
    Raster r;               // values + template footprint
    bool skip = false;      // no usable template (no child)
    bool psf = false;       // deblended as PSF
    bool ramped = false;
    double psf_cx = NAN, psf_cy = NAN, psf_flux = NAN;
};

// Weighted linear least squares as numpy.linalg.lstsq: chi^2 only for a full-rank, over-determined system.
double lstsq(const Eigen::MatrixXd& a, const Eigen::VectorXd& b, Eigen::VectorXd& x) {
    Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(a);
    x = qr.solve(b);
    if (qr.rank() < a.cols() || a.rows() <= a.cols()) return 1e30;
    return (a * x - b).squaredNorm();
}

struct PsfFit {
    bool is_psf = false;
    double cx = NAN, cy = NAN, flux = NAN;
    // The converged position of the position-free fit (whether or not it passed the chi^2 cut); the
    // neighbours' PSFs enter the other peaks' fits there. NaN when the position fit did not converge
    // within 1 px of the peak.
    double fit_x = NAN, fit_y = NAN;
};

// meas_deblender's fitPsfs for one peak: PSF + linear sky + neighbouring PSFs,
// with and without centroid-shift terms, in a disc of radius R1 = ceil(1.5 FWHM) weighted 1 inside
// R0 = ceil(FWHM) and ramping to 0 at R1. Neighbour j's PSF is placed at centres[j].
//
// The position-free fit (chi^2 test 2): LSST evaluates the PSF + derivative-terms model once at the
// peak pixel, i.e. a single linearized step, whose chi^2 includes the linearization error
// ~ f d^2 P''/2: for a star offset by d ~ 0.3 px from its peak pixel at S/N >~ 100 that error alone
// exceeds the noise, so even an isolated bright star fails the cut unless it sits on a pixel centre.
// We instead iterate the step (Gauss-Newton on the centre, <= 8 steps, until it moves < 0.01 px) and
// take chi^2 of the derivative-terms fit at the converged centre, where the linear terms vanish and
// the test measures what it means to ("is this a PSF at some position within 1 px of the peak?").
// The first step is LSST's; for a peak on a pixel centre nothing changes.
PsfFit fit_psf(const ExposureView& ev, const Raster& fp, std::size_t k, const Peak* peaks, std::size_t n_peaks,
               const std::vector<std::array<double, 2>>& centres, const Psf& psf, double fwhm,
               const DeblendControl& ctrl) {
    PsfFit out;
    const double cx = peaks[k].x, cy = peaks[k].y;
    const int r0 = static_cast<int>(std::ceil(fwhm));
    const int r1 = static_cast<int>(std::ceil(1.5 * fwhm));
    Stamp p0{psf.compute_image(cx, cy)};
    const double r2 = r1 + std::min(p0.img.width, p0.img.height) / 2.0;
    Box2I stamp(static_cast<int>(std::floor(cx - r1)), static_cast<int>(std::floor(cy - r1)),
                static_cast<int>(std::ceil(cx + r1)), static_cast<int>(std::ceil(cy + r1)));
    stamp = intersect(stamp, fp.box);
    if (stamp.empty()) return out;
    if (std::min(stamp.width(), stamp.height()) <= std::max(ctrl.tiny_footprint_size, 2)) return out;  // tiny

    std::vector<Stamp> others;
    for (std::size_t j = 0; j < n_peaks; ++j) {
        if (j == k) continue;
        const double dx = peaks[j].x - cx, dy = peaks[j].y - cy;
        if (dx * dx + dy * dy > r2 * r2) continue;
        Stamp o{psf.compute_image(centres[j][0], centres[j][1])};
        if (intersect(o.box(), stamp).empty()) continue;
        others.push_back(std::move(o));
    }
    struct Pix { int x, y; double w, rw; };
    std::vector<Pix> pix;
    double sumr = 0.0;
    for (int y = stamp.min_y; y <= stamp.max_y; ++y) {
        for (int x = stamp.min_x; x <= stamp.max_x; ++x) {
            if (!fp.in(x, y)) continue;
            const double rr = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            if (rr > double(r1) * r1) continue;
            const double var = ev.var(x, y);
            if (!(var > 0.0) || !std::isfinite(var)) continue;
            double rw = 1.0;
            if (rr > double(r0) * r0) rw = r1 > r0 ? std::max(0.0, 1.0 - (std::sqrt(rr) - r0) / (r1 - r0)) : 0.0;
            pix.push_back({x, y, std::sqrt(rw / var), rw});
            sumr += rw;
        }
    }
    const int n1 = 4 + static_cast<int>(others.size());
    const int n2 = n1 + 2;
    const int np = static_cast<int>(pix.size());
    if (np == 0) return out;
    Eigen::MatrixXd a(np, n2);
    Eigen::VectorXd b(np);
    // Columns 0 (PSF) and n1, n1 + 1 (centroid-shift terms: half-differences of the PSF shifted by one
    // pixel) for the PSF centred at (ux, uy).
    auto set_psf_columns = [&](double ux, double uy) {
        Stamp pu{psf.compute_image(ux, uy)};
        for (int i = 0; i < np; ++i) {
            const Pix& q = pix[i];
            a(i, 0) = pu.at(q.x, q.y) * q.w;
            a(i, n1) = 0.5 * (pu.at(q.x + 1, q.y) - pu.at(q.x - 1, q.y)) * q.w;
            a(i, n1 + 1) = 0.5 * (pu.at(q.x, q.y + 1) - pu.at(q.x, q.y - 1)) * q.w;
        }
    };
    for (int i = 0; i < np; ++i) {
        const Pix& q = pix[i];
        a(i, 1) = q.w;
        a(i, 2) = (q.x - cx) * q.w;
        a(i, 3) = (q.y - cy) * q.w;
        for (std::size_t j = 0; j < others.size(); ++j) a(i, 4 + static_cast<int>(j)) = others[j].at(q.x, q.y) * q.w;
        b(i) = ev.img(q.x, q.y) * q.w;
    }
    set_psf_columns(cx, cy);
    Eigen::VectorXd x1, x2;
    const double chisq1 = lstsq(a.leftCols(n1), b, x1);
    const double dof1 = sumr - n1, dof2 = sumr - n2;
    if (!(dof1 > 0) || !(dof2 > 0)) return out;
    const double q1 = chisq1 / dof1;
    const bool ispsf1 = q1 < ctrl.psf_chisq_1;

    // Position-free fit: f P(x - d) ~ f P(x) - f d P'(x), so the derivative columns' coefficients are
    // -f dx, -f dy; step the centre by d until it converges (see above).
    double dx = 0.0, dy = 0.0, q2 = 1e30;
    bool converged = false;
    for (int iter = 0; iter < 8; ++iter) {
        if (iter > 0) set_psf_columns(cx + dx, cy + dy);
        q2 = lstsq(a, b, x2) / dof2;
        if (!(x2(0) > 0) || !std::isfinite(x2(0))) break;
        const double ddx = -x2(n1) / x2(0), ddy = -x2(n1 + 1) / x2(0);
        if (!(std::abs(dx + ddx) < 1.0 && std::abs(dy + ddy) < 1.0)) break;
        if (std::abs(ddx) < 0.01 && std::abs(ddy) < 0.01) {
            dx += ddx;
            dy += ddy;
            converged = true;
            break;
        }
        dx += ddx;
        dy += ddy;
    }
    bool ispsf2 = converged && q2 < ctrl.psf_chisq_2;
    if (converged) {
        out.fit_x = cx + dx;
        out.fit_y = cy + dy;
    }
    if (ispsf2) {
        // Refit at the shifted centre without the derivative terms (LSST's chi^2 test 2b).
        set_psf_columns(cx + dx, cy + dy);
        Eigen::VectorXd xb;
        const double qb = lstsq(a.leftCols(n1), b, xb) / dof1;
        ispsf2 = qb < ctrl.psf_chisq_2b;
        q2 = qb;
        x2 = xb;
    }
    const bool use2 = (ispsf1 && ispsf2 && q2 < q1) || (ispsf2 && !ispsf1);
    out.flux = use2 ? x2(0) : x1(0);
    out.cx = use2 ? cx + dx : cx;
    out.cy = use2 ? cy + dy : cy;
    // A non-positive flux would give a negative template: not a point source (our addition).
    out.is_psf = (ispsf1 || ispsf2) && out.flux > 0.0 && std::isfinite(out.flux);
    return out;
}

// 180-degree symmetric template about (cx, cy) over the members of `f`, values from `val`.
template <typename Val>
Template symmetric_template(const Raster& f, int cx, int cy, Val val) {
    Template t;
    if (!f.in(cx, cy)) { t.skip = true; return t; }
    // The mirror box in 64 bits (2 cx overflows int beyond 2^30), clamped to int: the intersection with the
    // footprint's box is within int anyway.
    const auto mirror = [](int c, int v) {
        return static_cast<int>(std::clamp<long long>(2LL * c - v, INT_MIN, INT_MAX));
    };
    const Box2I box = intersect(f.box, Box2I(mirror(cx, f.box.max_x), mirror(cy, f.box.max_y),
                                             mirror(cx, f.box.min_x), mirror(cy, f.box.min_y)));
    t.r = Raster(box);
    bool any = false;
    for (int y = box.min_y; y <= box.max_y; ++y) {
        for (int x = box.min_x; x <= box.max_x; ++x) {
            const int mx = cx + (cx - x), my = cy + (cy - y);  // on the footprint (box is mirror-symmetric): no overflow
            if (!f.in(x, y) || !f.in(mx, my)) continue;
            const std::size_t i = t.r.idx(x, y);
            t.r.m[i] = 1;
            t.r.v[i] = std::max(0.0f, std::min(val(x, y), val(mx, my)));
            any = any || t.r.v[i] > 0.0f;
        }
    }
    if (!any) t.skip = true;
    return t;
}

// Members with a 4-neighbour outside the footprint.
bool is_edge(const Raster& r, int x, int y) {
    return !r.in(x - 1, y) || !r.in(x + 1, y) || !r.in(x, y - 1) || !r.in(x, y + 1);
}

void median_smooth(Raster& r, int half) {
    const int s = 2 * half + 1;
    const int w = r.box.width(), h = r.box.height();
    if (w < s || h < s) return;
    const std::vector<float> in = r.v;
    std::vector<float> buf(static_cast<std::size_t>(s) * s);
    for (int y = half; y < h - half; ++y) {
        for (int x = half; x < w - half; ++x) {
            std::size_t n = 0;
            for (int j = -half; j <= half; ++j)
                for (int i = -half; i <= half; ++i) buf[n++] = in[static_cast<std::size_t>(y + j) * w + x + i];
            std::nth_element(buf.begin(), buf.begin() + buf.size() / 2, buf.end());
            r.v[static_cast<std::size_t>(y) * w + x] = buf[buf.size() / 2];
        }
    }
}

// Monotonic profile: working out from the peak in square rings, each pixel is capped by the pixel one
// ring further in along the line to the peak (own variant of meas_deblender's shadowing).
void make_monotonic(Raster& r, int cx, int cy) {
    const Box2I& b = r.box;
    const int lmax = std::max({cx - b.min_x, b.max_x - cx, cy - b.min_y, b.max_y - cy});
    for (int l = 1; l <= lmax; ++l) {
        for (int dy = -l; dy <= l; ++dy) {
            const bool row_edge = (dy == -l || dy == l);
            for (int dx = -l; dx <= l; dx += row_edge ? 1 : 2 * l) {
                const int x = cx + dx, y = cy + dy;
                if (!r.inside(x, y)) continue;
                const double f = double(l - 1) / l;
                const int ix = cx + static_cast<int>(std::lround(dx * f));
                const int iy = cy + static_cast<int>(std::lround(dy * f));
                if (!r.inside(ix, iy)) continue;
                float& v = r.v[r.idx(x, y)];
                v = std::min(v, r.v[r.idx(ix, iy)]);
            }
        }
    }
}

// Trim zero values off both ends of every run of the footprint (runs entirely zero vanish).
void clip_to_nonzero(Raster& r) {
    for (const Span& s : spans_of(r)) {
        int a = s.x0, e = s.x1;
        while (a <= e && r.v[r.idx(a, s.y)] == 0.0f) r.m[r.idx(a++, s.y)] = 0;
        while (e >= a && r.v[r.idx(e, s.y)] == 0.0f) r.m[r.idx(e--, s.y)] = 0;
    }
}

double psf_fwhm(const Psf& psf, double x, double y) {
    try {
        return 2.35 * psf.compute_shape(x, y).determinant_radius();
    } catch (const std::logic_error&) {
        // A model without compute_shape: unweighted second moments of its kernel image.
        const PsfImage k = psf.compute_kernel_image(x, y);
        double s = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
        for (int j = 0; j < k.height; ++j)
            for (int i = 0; i < k.width; ++i) {
                const double v = k.at(i, j), px = i + k.x0, py = j + k.y0;
                s += v; sx += v * px; sy += v * py; sxx += v * px * px; syy += v * py * py; sxy += v * px * py;
            }
        const double mx = sx / s, my = sy / s;
        const double xx = sxx / s - mx * mx, yy = syy / s - my * my, xy = sxy / s - mx * my;
        return 2.35 * std::pow(xx * yy - xy * xy, 0.25);
    }
}

// The deblender proper, for a parent with >= 2 peaks that passed the size / mask limits. Throws on failure.
void run_deblend(const ExposureView& ev, const std::vector<Span>& fp_spans, const Peak* peaks, std::size_t n_peaks,
                 const Psf& psf, double fwhm, double sigma1, const DeblendControl& ctrl, DeblendResult& res) {
    const Box2I image_box(ev.x0, ev.y0, ev.x0 + ev.width() - 1, ev.y0 + ev.height() - 1);
    const Box2I fbb = bbox_of(fp_spans);
    const Raster fp = raster_of(fp_spans, fbb);
    for (const Span& s : fp_spans)
        for (int x = s.x0; x <= s.x1; ++x)
            if (!std::isfinite(ev.img(x, s.y))) throw std::domain_error("non-finite image pixel in the footprint");
    const std::size_t n_use = ctrl.max_number_of_peaks > 0
                                  ? std::min<std::size_t>(n_peaks, static_cast<std::size_t>(ctrl.max_number_of_peaks))
                                  : n_peaks;
    auto image_val = [&](int x, int y) { return ev.img(x, y); };

    // PSF fits. LSST places each neighbour's PSF at that peak's (integer) position; a neighbour
    // 0.3 px off its peak pixel then leaves residuals of a few % of its peak in the fit, enough to fail
    // the chi^2 cut for both stars of a close blend (~2 FWHM). So we iterate jointly: after a pass,
    // each peak's converged position-free centre (PsfFit::fit_x/y, also when the cut failed) becomes
    // where its PSF enters the other peaks' fits, and all peaks are refitted, until no centre moves by
    // more than 0.01 px (<= 3 passes). Peaks without a converged centre stay at their peak pixel.
    std::vector<std::array<double, 2>> centres(n_peaks);
    for (std::size_t k = 0; k < n_peaks; ++k) centres[k] = {double(peaks[k].x), double(peaks[k].y)};
    std::vector<PsfFit> fits(n_peaks);
    for (int pass = 0;; ++pass) {
        for (std::size_t k = 0; k < n_use; ++k) fits[k] = fit_psf(ev, fp, k, peaks, n_peaks, centres, psf, fwhm, ctrl);
        if (pass == 2) break;
        bool moved = false;
        for (std::size_t k = 0; k < n_use; ++k) {
            const double nx = std::isfinite(fits[k].fit_x) ? fits[k].fit_x : double(peaks[k].x);
            const double ny = std::isfinite(fits[k].fit_y) ? fits[k].fit_y : double(peaks[k].y);
            if (std::abs(nx - centres[k][0]) > 0.01 || std::abs(ny - centres[k][1]) > 0.01) moved = true;
            centres[k] = {nx, ny};
        }
        if (!moved) break;
    }

    std::vector<Template> t(n_peaks);
    for (std::size_t k = 0; k < n_peaks; ++k) {
        if (k >= n_use) { t[k].skip = true; continue; }
        const PsfFit& f = fits[k];
        if (f.is_psf) {
            // Template: the scaled PSF model on the footprint (our PSF values clamped at >= 0).
            Stamp st{psf.compute_image(f.cx, f.cy)};
            Template& tk = t[k];
            tk.psf = true;
            tk.psf_cx = f.cx; tk.psf_cy = f.cy; tk.psf_flux = f.flux;
            tk.r = Raster(intersect(st.box(), fbb));
            for (int y = tk.r.box.min_y; y <= tk.r.box.max_y; ++y)
                for (int x = tk.r.box.min_x; x <= tk.r.box.max_x; ++x) {
                    if (!fp.in(x, y)) continue;
                    const std::size_t i = tk.r.idx(x, y);
                    tk.r.m[i] = 1;
                    tk.r.v[i] = static_cast<float>(std::max(0.0, st.at(x, y) * f.flux));
                }
            clip_to_nonzero(tk.r);
            if (spans_of(tk.r).empty()) tk.skip = true;
            continue;
        }
        const int cx = peaks[k].x, cy = peaks[k].y;
        Template tk = symmetric_template(fp, cx, cy, image_val);
        if (tk.skip) { t[k] = std::move(tk); continue; }
        // Edge handling: significant (> 3 sigma1) template flux on the template's edge -> ramp.
        bool significant = false;
        if (ctrl.edge_handling == DeblendEdgeHandling::ramp) {
            for (int y = tk.r.box.min_y; y <= tk.r.box.max_y && !significant; ++y)
                for (int x = tk.r.box.min_x; x <= tk.r.box.max_x; ++x)
                    if (tk.r.in(x, y) && tk.r.v[tk.r.idx(x, y)] > 3.0 * sigma1 && is_edge(tk.r, x, y)) {
                        significant = true;
                        break;
                    }
        }
        if (significant) {
            const int s = static_cast<int>((1.5 * fwhm + 0.5) / 2) * 2 + 1;
            const Box2I tbb = grow(tk.r.box, s);
            const std::vector<Span> grown = clip_spans(dilate_spans(fp_spans, s), tbb.min_x, tbb.min_y, tbb.max_x, tbb.max_y);
            const Raster f2 = raster_of(grown, tbb);
            // Ramp values (needed off the image only): max over template edge pixels e of T(e) P(p - e),
            // P the PSF at the footprint's centre scaled to peak 1 and cut at |dx|, |dy| <= s.
            Raster ramp(tbb);
            bool need_ramp = false;
            for (const Span& sp : grown)
                for (int x = sp.x0; x <= sp.x1; ++x)
                    if (!ev.contains(x, sp.y) || ev.img(x, sp.y) == 0.0f) need_ramp = true;
            if (need_ramp) {
                const int xc = (fbb.min_x + fbb.max_x) / 2, yc = (fbb.min_y + fbb.max_y) / 2;
                Stamp pc{psf.compute_image(xc, yc)};
                double pmax = 0.0;
                for (double v : pc.img.data) pmax = std::max(pmax, v);
                for (int y = tk.r.box.min_y; y <= tk.r.box.max_y; ++y)
                    for (int x = tk.r.box.min_x; x <= tk.r.box.max_x; ++x) {
                        if (!tk.r.in(x, y) || !is_edge(tk.r, x, y)) continue;
                        const float te = tk.r.v[tk.r.idx(x, y)];
                        for (int j = -s; j <= s; ++j)
                            for (int i = -s; i <= s; ++i) {
                                if (!ramp.inside(x + i, y + j)) continue;
                                const double p = pc.at(xc + i, yc + j) / pmax;
                                float& o = ramp.v[ramp.idx(x + i, y + j)];
                                o = std::max(o, static_cast<float>(te * p));
                            }
                    }
            }
            auto padded = [&](int x, int y) -> float {
                if (ev.contains(x, y)) {
                    const float v = ev.img(x, y);
                    if (v != 0.0f) return v;
                }
                return ramp.val(x, y);
            };
            Template t2 = symmetric_template(f2, cx, cy, padded);
            if (!t2.skip) {
                // Clip to the image (this may break the symmetry, as in LSST).
                Raster c(intersect(t2.r.box, image_box));
                for (int y = c.box.min_y; y <= c.box.max_y; ++y)
                    for (int x = c.box.min_x; x <= c.box.max_x; ++x) {
                        c.m[c.idx(x, y)] = t2.r.m[t2.r.idx(x, y)];
                        c.v[c.idx(x, y)] = t2.r.v[t2.r.idx(x, y)];
                    }
                tk.r = std::move(c);
                tk.ramped = true;
            }
        }
        if (ctrl.median_smooth_template) median_smooth(tk.r, 2);
        make_monotonic(tk.r, cx, cy);
        clip_to_nonzero(tk.r);
        if (spans_of(tk.r).empty()) tk.skip = true;
        t[k] = std::move(tk);
    }

    auto dot = [](const Raster& a, const Raster& b) {
        const Box2I box = intersect(a.box, b.box);
        double s = 0.0;
        for (int y = box.min_y; y <= box.max_y; ++y)
            for (int x = box.min_x; x <= box.max_x; ++x)
                if (a.in(x, y) && b.in(x, y)) s += double(a.v[a.idx(x, y)]) * b.v[b.idx(x, y)];
        return s;
    };

    if (ctrl.weight_templates) {
        // Least-squares weights making sum_i w_i T_i best match the image on the footprint.
        std::vector<std::size_t> live;
        for (std::size_t k = 0; k < n_peaks; ++k) if (!t[k].skip) live.push_back(k);
        const std::int64_t area = span_area(fp_spans);
        Eigen::MatrixXd a = Eigen::MatrixXd::Zero(area, static_cast<Eigen::Index>(live.size()));
        Eigen::VectorXd b(area);
        Eigen::Index row = 0;
        for (const Span& s : fp_spans)
            for (int x = s.x0; x <= s.x1; ++x, ++row) {
                b(row) = ev.img(x, s.y);
                for (std::size_t c = 0; c < live.size(); ++c) {
                    const Raster& r = t[live[c]].r;
                    if (r.in(x, s.y)) a(row, static_cast<Eigen::Index>(c)) = r.v[r.idx(x, s.y)];
                }
            }
        if (!live.empty()) {
            Eigen::VectorXd w = a.colPivHouseholderQr().solve(b);
            for (std::size_t c = 0; c < live.size(); ++c)
                for (float& v : t[live[c]].r.v) v = static_cast<float>(v * w(static_cast<Eigen::Index>(c)));
        }
    }

    if (ctrl.remove_degenerate_templates) {
        // Drop one of each pair of nearly parallel templates (cosine > max_temp_dot_prod), repeatedly.
        for (;;) {
            std::vector<std::size_t> live;
            for (std::size_t k = 0; k < n_peaks; ++k) if (!t[k].skip) live.push_back(k);
            const std::size_t n = live.size();
            std::vector<double> self(n);
            std::vector<float> tmax(n, 0.0f);
            for (std::size_t i = 0; i < n; ++i) {
                self[i] = dot(t[live[i]].r, t[live[i]].r);
                for (std::size_t p = 0; p < t[live[i]].r.v.size(); ++p)
                    if (t[live[i]].r.m[p]) tmax[i] = std::max(tmax[i], t[live[i]].r.v[p]);
            }
            bool found = false;
            std::size_t fi = 0, fj = 0;
            for (std::size_t i = 0; i < n && !found; ++i) {
                double current = 0.0;
                for (std::size_t j = 0; j < i; ++j) {
                    const double norm = self[i] * self[j];
                    const double c = norm > 0 ? dot(t[live[i]].r, t[live[j]].r) / std::sqrt(norm) : 0.0;
                    if (c > current) {
                        current = c;
                        if (current > ctrl.max_temp_dot_prod) { found = true; fi = i; fj = j; }
                    }
                }
            }
            if (!found) break;
            std::size_t reject = fj;
            const bool psf_i = t[live[fi]].psf, psf_j = t[live[fj]].psf;
            if (psf_i && !psf_j) reject = fi;
            else if (!psf_i && psf_j) reject = fj;
            else if (tmax[fj] > tmax[fi]) reject = fi;
            t[live[reject]].skip = true;
        }
    }

    // Apportion (step 5): sum of templates over the union of their boxes.
    Box2I ubox = fbb;
    for (const Template& tk : t) if (!tk.skip) ubox = unite(ubox, tk.r.box);
    Raster sum(ubox);
    for (const Template& tk : t) {
        if (tk.skip) continue;
        for (int y = tk.r.box.min_y; y <= tk.r.box.max_y; ++y)
            for (int x = tk.r.box.min_x; x <= tk.r.box.max_x; ++x)
                if (tk.r.in(x, y)) {
                    const std::size_t i = sum.idx(x, y);
                    sum.v[i] += tk.r.v[tk.r.idx(x, y)];
                    sum.m[i] = 1;
                }
    }
    std::vector<Raster> child(n_peaks);
    for (std::size_t k = 0; k < n_peaks; ++k) {
        if (t[k].skip) continue;
        child[k] = Raster(ubox);
        const Raster& r = t[k].r;
        for (int y = r.box.min_y; y <= r.box.max_y; ++y)
            for (int x = r.box.min_x; x <= r.box.max_x; ++x) {
                if (!r.in(x, y)) continue;
                const std::size_t i = child[k].idx(x, y);
                child[k].m[i] = 1;
                const float s = sum.v[i];
                child[k].v[i] = s > 0.0f ? static_cast<float>(double(ev.img(x, y)) * r.v[r.idx(x, y)] / s) : 0.0f;
            }
    }
    std::vector<std::uint8_t> stray_got(n_peaks, 0);
    const bool trim = ctrl.stray_flux_rule == StrayFluxRule::trim;
    if (ctrl.assign_stray_flux && !trim) {
        bool any_extended = false;
        for (const Template& tk : t) if (!tk.skip && !tk.psf) any_extended = true;
        std::vector<std::size_t> elig;
        for (std::size_t k = 0; k < n_peaks; ++k) {
            if (t[k].skip) continue;
            const bool ok = !t[k].psf || ctrl.stray_flux_to_point_sources == StrayFluxToPointSources::always ||
                            (ctrl.stray_flux_to_point_sources == StrayFluxToPointSources::necessary && !any_extended);
            if (ok) elig.push_back(k);
        }
        std::vector<std::vector<Span>> tspans(n_peaks);
        for (std::size_t k : elig) tspans[k] = spans_of(t[k].r);
        std::vector<double> w(elig.size());
        for (const Span& s : fp_spans)
            for (int x = s.x0; x <= s.x1; ++x) {
                const int y = s.y;
                if (sum.val(x, y) > 0.0f || elig.empty()) continue;
                double tot = 0.0;
                for (std::size_t e = 0; e < elig.size(); ++e) {
                    const std::size_t k = elig[e];
                    double r2 = 0.0;
                    if (ctrl.stray_flux_rule == StrayFluxRule::r_to_peak) {
                        r2 = double(x - peaks[k].x) * (x - peaks[k].x) + double(y - peaks[k].y) * (y - peaks[k].y);
                    } else {
                        r2 = 1e30;
                        for (const Span& q : tspans[k]) {
                            const int ddx = x < q.x0 ? q.x0 - x : (x > q.x1 ? x - q.x1 : 0);
                            const int ddy = std::abs(q.y - y);
                            r2 = std::min(r2, ctrl.stray_flux_rule == StrayFluxRule::nearest_footprint
                                                  ? double(ddx + ddy) : double(ddx) * ddx + double(ddy) * ddy);
                        }
                    }
                    w[e] = ctrl.stray_flux_rule == StrayFluxRule::nearest_footprint ? r2 : 1.0 / (1.0 + r2);
                }
                if (ctrl.stray_flux_rule == StrayFluxRule::nearest_footprint) {
                    const std::size_t best = static_cast<std::size_t>(std::min_element(w.begin(), w.end()) - w.begin());
                    std::fill(w.begin(), w.end(), 0.0);
                    w[best] = 1.0;
                }
                for (double v : w) tot += v;
                // Clip small portions, then renormalize so the pixel's flux is kept whole.
                double tot2 = 0.0;
                for (double& v : w) { v /= tot; if (v < ctrl.clip_stray_flux_fraction) v = 0.0; tot2 += v; }
                for (std::size_t e = 0; e < elig.size(); ++e) {
                    if (w[e] <= 0.0) continue;
                    Raster& c = child[elig[e]];
                    const std::size_t i = c.idx(x, y);
                    c.m[i] = 1;
                    c.v[i] += static_cast<float>(double(ev.img(x, y)) * w[e] / tot2);
                    stray_got[elig[e]] = 1;
                }
            }
    }

    // Parent footprint: trimmed to the union of the templates ('trim'), then united with the children.
    Raster parent(ubox);
    if (!trim) for (const Span& s : fp_spans) for (int x = s.x0; x <= s.x1; ++x) parent.m[parent.idx(x, s.y)] = 1;
    for (std::size_t k = 0; k < n_peaks; ++k)
        if (!t[k].skip)
            for (std::size_t i = 0; i < parent.m.size(); ++i) parent.m[i] |= child[k].m[i];
    res.parent_spans = spans_of(parent);
    res.deblended = true;

    res.skipped = false;
    for (std::size_t k = 0; k < n_peaks; ++k) {
        if (t[k].skip) {
            res.skipped = true;  // LSST: set per failed peak, reset by the next child
            if (!ctrl.propagate_all_peaks) continue;
        }
        DeblendChild c;
        c.peak = peaks[k];
        c.peak_index = k;
        if (t[k].skip) {
            // propagate_all_peaks: a child with the parent's footprint and zero pixels.
            c.spans = res.parent_spans;
            c.values.assign(static_cast<std::size_t>(span_area(c.spans)), 0.0f);
        } else {
            c.spans = spans_of(child[k]);
            c.values.reserve(static_cast<std::size_t>(span_area(c.spans)));
            for (const Span& s : c.spans)
                for (int x = s.x0; x <= s.x1; ++x) c.values.push_back(child[k].v[child[k].idx(x, s.y)]);
        }
        c.deblended_as_psf = t[k].psf;
        if (t[k].psf) {
            c.psf_center_x = t[k].psf_cx;
            c.psf_center_y = t[k].psf_cy;
            c.psf_flux = t[k].psf_flux;
        }
        c.has_stray_flux = stray_got[k] != 0;
        c.ramped_template = t[k].ramped;
        res.skipped = false;
        res.children.push_back(std::move(c));
    }
}

}  // namespace

namespace {

// Order-preserving map of a finite float to uint32 (IEEE bits; negatives reversed).
inline std::uint32_t float_key(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline float key_float(std::uint32_t k) {
    const std::uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// Exact median of the whole image's good variance pixels without copying them: two radix passes
// (histogram of the keys' high 16 bits picks the bin holding the middle rank, a histogram of the low
// 16 bits within that bin picks the exact value). ~10x faster than nth_element on a 16 Mpx copy and
// bit-identical to it. An even count takes the mean of the two middle values (afw's MEDIAN).
double whole_image_median_variance(const ExposureView& ev, std::int32_t bad_bits, int step) {
    const int nx = ev.width(), ny = ev.height();
    // Pass 1: four interleaved histograms (summed after) so that runs of equal keys, the common case
    // on a sky-dominated variance plane, do not serialize on one counter.
    std::vector<std::uint32_t> h4(4 * 65536, 0);
    for (int j = 0; j < ny; j += step) {
        const float* v = ev.variance.row(j);
        const std::int32_t* m = ev.mask.row(j);
        for (int i = 0; i < nx; i += step) {
            std::uint32_t u;
            std::memcpy(&u, &v[i], sizeof u);
            const bool good = (m[i] & bad_bits) == 0 && (u & 0x7f800000u) != 0x7f800000u;  // finite
            const std::uint32_t k = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
            h4[static_cast<std::size_t>(i & 3) * 65536 + (k >> 16)] += good;
        }
    }
    std::vector<std::uint64_t> hist(65536);
    std::uint64_t n = 0;
    for (std::size_t b = 0; b < 65536; ++b) {
        hist[b] = std::uint64_t(h4[b]) + h4[65536 + b] + h4[2 * 65536 + b] + h4[3 * 65536 + b];
        n += hist[b];
    }
    auto for_good = [&](auto&& fn) {
        for (int j = 0; j < ny; j += step) {
            const float* v = ev.variance.row(j);
            const std::int32_t* m = ev.mask.row(j);
            for (int i = 0; i < nx; i += step)
                if ((m[i] & bad_bits) == 0 && std::isfinite(v[i])) fn(float_key(v[i]));
        }
    };
    if (n == 0) return NAN;
    const std::uint64_t h = n / 2;  // rank of the upper middle value (0-based)
    std::uint32_t bin = 0;
    std::uint64_t below = 0;
    while (below + hist[bin] <= h) below += hist[bin++];
    const std::uint64_t r = h - below;  // rank within the bin
    std::vector<std::uint64_t> low(65536, 0);
    std::uint32_t max_below = 0;  // largest key in the bins under `bin` (for an even count, r == 0)
    bool any_below = false;
    for_good([&](std::uint32_t k) {
        const std::uint32_t hi = k >> 16;
        if (hi == bin) {
            ++low[k & 0xffffu];
        } else if (hi < bin) {
            if (!any_below || k > max_below) max_below = k;
            any_below = true;
        }
    });
    std::uint32_t lo = 0;
    std::uint64_t acc = 0;
    while (acc + low[lo] <= r) acc += low[lo++];
    const float upper = key_float((bin << 16) | lo);
    double med = upper;
    if (n % 2 == 0) {
        float lower;
        if (r > acc) {
            lower = upper;  // rank h - 1 has the same value
        } else if (r > 0) {
            std::uint32_t l2 = lo;
            do { --l2; } while (low[l2] == 0);
            lower = key_float((bin << 16) | l2);
        } else {
            lower = key_float(max_below);
        }
        med = 0.5 * (med + lower);
    }
    return med;
}

}  // namespace

double deblend_sigma1(const ExposureView& ev, std::int32_t bad_bits, const Span* spans, std::size_t n_spans,
                      int sample_step) {
    if (sample_step < 1) throw std::invalid_argument("sample_step must be >= 1");
    if (n_spans == 0) {
        // a step at least as large as the image samples pixel (0, 0) alone: clamped, so j += step cannot overflow
        const double med = whole_image_median_variance(
            ev, bad_bits, std::min(sample_step, std::max({ev.image.nx, ev.image.ny, 1})));
        return std::isfinite(med) ? std::sqrt(med) : NAN;
    }
    // Each span clipped to the image once, then its row read straight (the median does not depend on the
    // order the values are gathered in; the detected pixels of a crowded detector are millions).
    std::size_t total = 0;
    for (std::size_t i = 0; i < n_spans; ++i) {
        total += static_cast<std::size_t>(std::max(0LL, static_cast<long long>(spans[i].x1) - spans[i].x0 + 1));
    }
    total = std::min<std::size_t>(total, static_cast<std::size_t>(ev.width()) * static_cast<std::size_t>(ev.height()));
    std::vector<float> v;
    v.reserve(total);
    const int xlo = ev.x0, xhi = ev.x0 + ev.width() - 1;
    for (std::size_t i = 0; i < n_spans; ++i) {
        const int y = spans[i].y;
        if (y < ev.y0 || y >= ev.y0 + ev.height()) continue;
        const int a = std::max(spans[i].x0, xlo), b = std::min(spans[i].x1, xhi);
        if (a > b) continue;
        const float* vr = ev.variance.row(y - ev.y0);
        const std::int32_t* mr = ev.mask.row(y - ev.y0);
        for (int c = a - ev.x0; c <= b - ev.x0; ++c) {
            if ((mr[c] & bad_bits) == 0 && std::isfinite(vr[c])) v.push_back(vr[c]);
        }
    }
    if (v.empty()) return NAN;
    // afw's MEDIAN of an even count: the mean of the two middle values.
    const std::size_t h = v.size() / 2;
    std::nth_element(v.begin(), v.begin() + h, v.end());
    double med = v[h];
    if (v.size() % 2 == 0) med = 0.5 * (med + *std::max_element(v.begin(), v.begin() + h));
    return std::sqrt(med);
}

DeblendResult deblend_footprint(const ExposureView& ev, const Span* spans, std::size_t n_spans, const Peak* peaks,
                                std::size_t n_peaks, const Psf& psf, double sigma1, const DeblendControl& ctrl) {
    DeblendResult res;
    res.n_peaks = static_cast<int>(n_peaks);
    std::vector<Span> fp(spans, spans + n_spans);
    res.parent_spans = fp;
    auto fail = [&](const std::string& why) {
        res.failed = true;
        res.failure = why;
        res.children.clear();
        res.parent_spans = fp;
        res.deblended = false;
    };
    if (n_peaks < 2) return res;  // single-peak parents are not deblended (nChild = 0)
    if (fp.empty()) { fail("empty footprint"); return res; }
    for (const Span& s : fp) {
        if (s.x1 < s.x0 || !ev.contains(s.x0, s.y) || !ev.contains(s.x1, s.y)) {
            fail("footprint span outside the image");
            return res;
        }
    }
    const Box2I fbb = bbox_of(fp);
    const double area = static_cast<double>(span_area(fp));
    // Step 1: size and mask limits (isLargeFootprint / isMasked).
    bool big = ctrl.max_footprint_area > 0 && area > ctrl.max_footprint_area;
    if (ctrl.max_footprint_size > 0 && std::max(fbb.width(), fbb.height()) > ctrl.max_footprint_size) big = true;
    double mx = 0, my = 0;
    for (const Span& s : fp) for (int x = s.x0; x <= s.x1; ++x) { mx += x; my += s.y; }
    mx /= area;
    my /= area;
    if (!big && ctrl.min_footprint_axis_ratio > 0) {
        double xx = 0, yy = 0, xy = 0;
        for (const Span& s : fp)
            for (int x = s.x0; x <= s.x1; ++x) { xx += (x - mx) * (x - mx); yy += (s.y - my) * (s.y - my); xy += (x - mx) * (s.y - my); }
        xx /= area; yy /= area; xy /= area;
        const double tr = 0.5 * (xx + yy), d = std::sqrt(0.25 * (xx - yy) * (xx - yy) + xy * xy);
        const double a = std::sqrt(std::max(0.0, tr + d)), b = std::sqrt(std::max(0.0, tr - d));
        if (b < ctrl.min_footprint_axis_ratio * a) big = true;
    }
    bool masked = false;
    if (!big) {
        for (const auto& [bits, limit] : ctrl.mask_limits) {
            double n = 0;
            for (const Span& s : fp) for (int x = s.x0; x <= s.x1; ++x) n += (ev.msk(x, s.y) & bits) != 0;
            if (n / area > limit) masked = true;
        }
    }
    if (big || masked) {
        res.parent_too_big = big;
        res.masked = masked;
        res.skipped = true;
        res.skipped_center_x = fbb.min_x + fbb.width() / 2;
        res.skipped_center_y = fbb.min_y + fbb.height() / 2;
        return res;
    }
    try {
        const double fwhm = psf_fwhm(psf, mx, my);
        if (!(fwhm > 0) || !std::isfinite(fwhm)) throw std::domain_error("invalid PSF FWHM at the footprint centroid");
        // The stamps, radii and dilations below convert multiples of the FWHM to int: bounded first
        // (a broken PSF's 1e300 px made those casts undefined and the dilation unbounded).
        if (fwhm > 1e5) throw std::domain_error("PSF FWHM at the footprint centroid exceeds 1e5 px");
        // LSST sets tooManyPeaks = n_peaks > maxNumberOfPeaks literally (always true for the default 0).
        res.too_many_peaks = static_cast<long>(n_peaks) > ctrl.max_number_of_peaks;
        run_deblend(ev, fp, peaks, n_peaks, psf, fwhm, sigma1, ctrl, res);
    } catch (const std::exception& e) {
        if (!ctrl.catch_failures) throw;
        const bool tmp = res.too_many_peaks;
        fail(e.what());
        res.too_many_peaks = tmp;
    }
    return res;
}

std::vector<DeblendResult> deblend_footprints(const ExposureView& ev, const FootprintList& footprints,
                                              const std::vector<std::uint8_t>& skip, const Psf& psf, double sigma1,
                                              const DeblendControl& ctrl, ImageView<std::int32_t> mask_out,
                                              std::int32_t not_deblended_bits) {
    const std::size_t n = footprints.size();
    if (!skip.empty() && skip.size() != n) throw std::invalid_argument("skip must have one entry per footprint");
    std::vector<DeblendResult> out(n);
    for (std::size_t k = 0; k < n; ++k) {
        const auto s0 = static_cast<std::size_t>(footprints.span_offsets[k]);
        const auto s1 = static_cast<std::size_t>(footprints.span_offsets[k + 1]);
        const auto p0 = static_cast<std::size_t>(footprints.peak_offsets[k]);
        const auto p1 = static_cast<std::size_t>(footprints.peak_offsets[k + 1]);
        if (!skip.empty() && skip[k]) {
            out[k].n_peaks = static_cast<int>(p1 - p0);
            out[k].parent_spans.assign(footprints.spans.begin() + s0, footprints.spans.begin() + s1);
            continue;
        }
        out[k] = deblend_footprint(ev, footprints.spans.data() + s0, s1 - s0, footprints.peaks.data() + p0, p1 - p0, psf,
                                   sigma1, ctrl);
        if (out[k].skipped && !out[k].deblended && mask_out.data != nullptr && not_deblended_bits != 0) {
            set_mask_over_spans(mask_out, out[k].parent_spans, not_deblended_bits, ev.x0, ev.y0);
        }
    }
    return out;
}

}  // namespace visitcal
