// TAN-SIP model and fit: see visitcal/calib/sip.hpp for the model and the method.
#include "visitcal/calib/sip.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace visitcal {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kRad = kPi / 180.0;
constexpr double kArcsec = 3600.0;

struct Vec3 {
    double x, y, z;
};
double dot(const Vec3& a, const Vec3& b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
Vec3 unit_vector(double ra, double dec) {
    const double a = ra * kRad, d = dec * kRad;
    return {std::cos(d) * std::cos(a), std::cos(d) * std::sin(a), std::sin(d)};
}
void to_sky(const Vec3& r, double& ra, double& dec) {
    ra = std::atan2(r.y, r.x) / kRad;
    if (ra < 0.0) ra += 360.0;
    if (ra >= 360.0) ra -= 360.0;
    dec = std::atan2(r.z, std::hypot(r.x, r.y)) / kRad;
}
double angle_arcsec(const Vec3& a, const Vec3& b) {
    const Vec3 c{a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
    return std::atan2(std::sqrt(dot(c, c)), dot(a, b)) / kRad * kArcsec;
}

/// The plane tangent at (ra0, dec0): centre c, east e, north n (an orthonormal frame).
struct Plane {
    double ra0 = 0.0, dec0 = 0.0;
    Vec3 c{1, 0, 0}, e{0, 1, 0}, n{0, 0, 1};
    Plane() = default;
    Plane(double ra, double dec) : ra0(ra), dec0(dec) {
        const double a = ra * kRad, d = dec * kRad;
        c = unit_vector(ra, dec);
        e = {-std::sin(a), std::cos(a), 0.0};
        n = {-std::sin(d) * std::cos(a), -std::sin(d) * std::sin(a), std::cos(d)};
    }
    bool project(const Vec3& r, double& xi, double& eta) const {
        const double den = dot(r, c);
        if (!(den > 0.0)) return false;
        xi = dot(r, e) / den / kRad;
        eta = dot(r, n) / den / kRad;
        return true;
    }
    Vec3 deproject_vec(double xi, double eta) const {
        const double s = xi * kRad, t = eta * kRad;
        return {c.x + s * e.x + t * n.x, c.y + s * e.y + t * n.y, c.z + s * e.z + t * n.z};
    }
};

// Total-degree monomial order shared by the fits: d = 0..order, within a degree increasing power of v.
struct Terms {
    std::vector<int> p, q;
    Terms(int min_degree, int max_degree) {
        for (int d = min_degree; d <= max_degree; ++d)
            for (int j = 0; j <= d; ++j) {
                p.push_back(d - j);
                q.push_back(j);
            }
    }
    int size() const { return static_cast<int>(p.size()); }
};

/// sum_{p,q} c[p * (m + 1) + q] u^p v^q for a square (m + 1)^2 array.
double poly_eval(const std::vector<double>& c, int m, double u, double v) {
    if (m <= 0) return c.empty() ? 0.0 : c[0];
    double vp[16];
    vp[0] = 1.0;
    for (int k = 1; k <= m; ++k) vp[k] = vp[k - 1] * v;
    double sum = 0.0, up = 1.0;
    for (int p = 0; p <= m; ++p) {
        double row = 0.0;
        for (int q = 0; q <= m - p; ++q) row += c[p * (m + 1) + q] * vp[q];
        sum += up * row;
        up *= u;
    }
    return sum;
}

/// d/du and d/dv of poly_eval.
void poly_grad(const std::vector<double>& c, int m, double u, double v, double& du, double& dv) {
    du = dv = 0.0;
    for (int p = 0; p <= m; ++p)
        for (int q = 0; q <= m - p; ++q) {
            const double k = c[p * (m + 1) + q];
            if (k == 0.0) continue;
            if (p > 0) du += k * p * std::pow(u, p - 1) * std::pow(v, q);
            if (q > 0) dv += k * q * std::pow(u, p) * std::pow(v, q - 1);
        }
}

/// The coefficients of c(u0 + s, v0 + t) in (s, t): an exact polynomial translation.
std::vector<double> poly_translate(const std::vector<double>& c, int m, double u0, double v0) {
    std::vector<double> binom((m + 1) * (m + 1), 0.0);
    for (int n = 0; n <= m; ++n) {
        binom[n * (m + 1)] = 1.0;
        for (int k = 1; k <= n; ++k)  // binom[n-1][n] is still 0
            binom[n * (m + 1) + k] = binom[(n - 1) * (m + 1) + k - 1] + binom[(n - 1) * (m + 1) + k];
    }
    std::vector<double> out(c.size(), 0.0);
    for (int p = 0; p <= m; ++p)
        for (int q = 0; q <= m - p; ++q) {
            const double k = c[p * (m + 1) + q];
            if (k == 0.0) continue;
            for (int i = 0; i <= p; ++i)
                for (int j = 0; j <= q; ++j)
                    out[i * (m + 1) + j] += k * binom[p * (m + 1) + i] * binom[q * (m + 1) + j] * std::pow(u0, p - i) *
                                            std::pow(v0, q - j);
        }
    return out;
}

struct PolyFit {
    std::vector<double> px, py;  // (m + 1)^2 each, unscaled coefficients
    bool ok = false;
};

/// Weighted least squares of (fx, fy) on the monomials of `terms` in (u / su, v / sv), rows `rows`.
/// Coefficients are returned for the unscaled (u, v) in (m + 1)^2 arrays.
PolyFit fit_poly(const Terms& terms, int m, const std::vector<int>& rows, const std::vector<double>& u,
                 const std::vector<double>& v, const std::vector<double>& fx, const std::vector<double>& fy,
                 const double* w) {
    double su = 0.0, sv = 0.0;
    for (int i : rows) {
        su = std::max(su, std::abs(u[i]));
        sv = std::max(sv, std::abs(v[i]));
    }
    PolyFit out;
    if (!(su > 0.0) || !(sv > 0.0)) return out;
    const int nr = static_cast<int>(rows.size()), nt = terms.size();
    Eigen::MatrixXd design(nr, nt);
    Eigen::MatrixXd rhs(nr, 2);
    std::vector<double> up(m + 1), vp(m + 1);
    for (int r = 0; r < nr; ++r) {
        const int i = rows[r];
        const double sw = w ? std::sqrt(w[i]) : 1.0;
        up[0] = vp[0] = 1.0;
        for (int k = 1; k <= m; ++k) {
            up[k] = up[k - 1] * (u[i] / su);
            vp[k] = vp[k - 1] * (v[i] / sv);
        }
        for (int t = 0; t < nt; ++t) design(r, t) = sw * up[terms.p[t]] * vp[terms.q[t]];
        rhs(r, 0) = sw * fx[i];
        rhs(r, 1) = sw * fy[i];
    }
    Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(design);
    if (qr.rank() < nt) return out;
    const Eigen::MatrixXd sol = qr.solve(rhs);
    out.px.assign((m + 1) * (m + 1), 0.0);
    out.py.assign((m + 1) * (m + 1), 0.0);
    for (int t = 0; t < nt; ++t) {
        const double s = std::pow(su, terms.p[t]) * std::pow(sv, terms.q[t]);
        out.px[terms.p[t] * (m + 1) + terms.q[t]] = sol(t, 0) / s;
        out.py[terms.p[t] * (m + 1) + terms.q[t]] = sol(t, 1) / s;
    }
    out.ok = true;
    return out;
}

double median(std::vector<double> v) {
    if (v.empty()) return std::nan("");
    const std::size_t h = v.size() / 2;
    std::nth_element(v.begin(), v.begin() + h, v.end());
    double m = v[h];
    if (v.size() % 2 == 0) m = 0.5 * (m + *std::max_element(v.begin(), v.begin() + h));
    return m;
}

}  // namespace

bool gnomonic_project(double ra0, double dec0, double ra, double dec, double& xi, double& eta) {
    return Plane(ra0, dec0).project(unit_vector(ra, dec), xi, eta);
}

void TanSipWcs::check() const {
    if (order < 0 || order > 15 || inverse_order < 0 || inverse_order > 15)
        throw std::invalid_argument("SIP orders must be in 0..15");
    const std::size_t na = order > 0 ? static_cast<std::size_t>((order + 1) * (order + 1)) : 0;
    const std::size_t ni = inverse_order > 0 ? static_cast<std::size_t>((inverse_order + 1) * (inverse_order + 1)) : 0;
    if (a.size() != na || b.size() != na) throw std::invalid_argument("a and b must hold (order + 1)^2 coefficients");
    if (ap.size() != ni || bp.size() != ni)
        throw std::invalid_argument("ap and bp must hold (inverse_order + 1)^2 coefficients");
}

void TanSipWcs::pixel_to_intermediate(double x, double y, double& xi, double& eta) const {
    const double u = x - crpix[0], v = y - crpix[1];
    double uu = u, vv = v;
    if (order > 0) {
        uu += poly_eval(a, order, u, v);
        vv += poly_eval(b, order, u, v);
    }
    xi = cd[0] * uu + cd[1] * vv;
    eta = cd[2] * uu + cd[3] * vv;
}

void TanSipWcs::pixel_to_sky(double x, double y, double& ra, double& dec) const {
    double xi, eta;
    pixel_to_intermediate(x, y, xi, eta);
    to_sky(Plane(crval[0], crval[1]).deproject_vec(xi, eta), ra, dec);
}

void TanSipWcs::sky_to_pixel_reverse(double ra, double dec, double& x, double& y) const {
    double xi, eta;
    if (!Plane(crval[0], crval[1]).project(unit_vector(ra, dec), xi, eta)) {
        x = y = std::nan("");
        return;
    }
    const double det = cd[0] * cd[3] - cd[1] * cd[2];
    const double uu = (cd[3] * xi - cd[1] * eta) / det, vv = (-cd[2] * xi + cd[0] * eta) / det;
    double u = uu, v = vv;
    if (inverse_order > 0) {
        u += poly_eval(ap, inverse_order, uu, vv);
        v += poly_eval(bp, inverse_order, uu, vv);
    }
    x = u + crpix[0];
    y = v + crpix[1];
}

FitTanSipResult fit_tan_sip_wcs(int n, const double* x, const double* y, const double* ra, const double* dec,
                                const double* weights, std::array<double, 4> box, const FitTanSipControl& ctl) {
    const int m = ctl.order;
    if (m < 1 || m > 9) throw std::invalid_argument("order must be in 1..9, got " + std::to_string(m));
    const int mi = ctl.inverse_order < 0 ? m + 1 : ctl.inverse_order;
    if (mi < 1 || mi > 10) throw std::invalid_argument("inverse_order must be in 1..10");
    if (ctl.num_iter < 1) throw std::invalid_argument("num_iter must be >= 1");
    if (ctl.num_rej_iter < 0) throw std::invalid_argument("num_rej_iter must be >= 0");
    if (!(ctl.rej_sigma > 0.0)) throw std::invalid_argument("rej_sigma must be > 0");
    if (!(box[1] > box[0]) || !(box[3] > box[2])) throw std::invalid_argument("box must have positive extent");
    for (int i = 0; i < n; ++i) {
        if (!std::isfinite(x[i]) || !std::isfinite(y[i]) || !std::isfinite(ra[i]) || !std::isfinite(dec[i]))
            throw std::invalid_argument("non-finite pixel or sky position at pair " + std::to_string(i));
        if (weights && !(weights[i] > 0.0 && std::isfinite(weights[i])))
            throw std::invalid_argument("weights must be finite and > 0");
    }

    const Terms terms(0, m);
    FitTanSipResult res;
    res.n_required = terms.size();
    res.used.assign(n, 1);
    std::vector<Vec3> ref(n);
    for (int i = 0; i < n; ++i) ref[i] = unit_vector(ra[i], dec[i]);

    std::vector<double> u(n), v(n), xi(n), eta(n);
    std::vector<int> rows;
    PolyFit fit;
    Plane plane, fit_plane;  // the current tangent plane; the one `fit` was made on
    std::array<double, 2> crpix{0.0, 0.0};

    // LSST's initial TAN WCS: CRPIX = the mean source position (of all pairs, kept through the rejection
    // passes, so that rejecting pairs does not move the tangent point), tangent point = the normalised
    // mean reference unit vector. Each fit then moves the tangent point to the sky position of CRPIX.
    {
        double mx = 0.0, my = 0.0;
        Vec3 s{0.0, 0.0, 0.0};
        for (int i = 0; i < n; ++i) {
            mx += x[i];
            my += y[i];
            s.x += ref[i].x;
            s.y += ref[i].y;
            s.z += ref[i].z;
        }
        crpix = {mx / n, my / n};
        double ra0, dec0;
        to_sky(s, ra0, dec0);
        plane = Plane(ra0, dec0);
    }
    for (int i = 0; i < n; ++i) {
        u[i] = x[i] - crpix[0];
        v[i] = y[i] - crpix[1];
    }

    const int passes = ctl.num_rej_iter + 1;
    for (int pass = 0; pass < passes; ++pass) {
        rows.clear();
        for (int i = 0; i < n; ++i)
            if (res.used[i]) rows.push_back(i);
        res.n_used = static_cast<int>(rows.size());
        if (res.n_used < res.n_required) {
            res.status = FitTanSipResult::too_few;
            return res;
        }
        for (int it = 0; it < ctl.num_iter; ++it) {
            for (int i = 0; i < n; ++i)
                if (!plane.project(ref[i], xi[i], eta[i]))
                    throw std::invalid_argument("reference " + std::to_string(i) + " is 90 deg or more from the others");
            fit = fit_poly(terms, m, rows, u, v, xi, eta, weights);
            fit_plane = plane;
            ++res.n_fits;
            if (!fit.ok) {
                res.status = FitTanSipResult::degenerate;
                return res;
            }
            if (it + 1 < ctl.num_iter || pass + 1 < passes) {  // move the tangent point to the sky of CRPIX
                double r0, d0;
                to_sky(plane.deproject_vec(fit.px[0], fit.py[0]), r0, d0);
                plane = Plane(r0, d0);
            }
        }
        if (pass + 1 == passes) break;
        // Rejection, two-sided (FitTanSipWcsTask.rejectMatches tests dx > rejSigma std, one-sided).
        std::vector<double> rx(n), ry(n);
        double sx = 0.0, sy = 0.0, sxx = 0.0, syy = 0.0;
        for (int i = 0; i < n; ++i) {
            rx[i] = poly_eval(fit.px, m, u[i], v[i]) - xi[i];
            ry[i] = poly_eval(fit.py, m, u[i], v[i]) - eta[i];
        }
        for (int i : rows) {
            sx += rx[i];
            sy += ry[i];
        }
        sx /= res.n_used;
        sy /= res.n_used;
        for (int i : rows) {
            sxx += (rx[i] - sx) * (rx[i] - sx);
            syy += (ry[i] - sy) * (ry[i] - sy);
        }
        const double tx = ctl.rej_sigma * std::sqrt(sxx / res.n_used), ty = ctl.rej_sigma * std::sqrt(syy / res.n_used);
        int n_rej = 0;
        for (int i : rows)
            if (std::abs(rx[i]) > tx || std::abs(ry[i]) > ty) {
                res.used[i] = 0;
                ++n_rej;
            }
        if (n_rej == 0) break;  // the next pass would repeat this one
    }

    // Absorb the constant term into CRPIX: Newton for the root (u0, v0) of the polynomial, then an exact
    // translation of the polynomial to it.
    double u0 = 0.0, v0 = 0.0;
    for (int k = 0; k < 50; ++k) {
        const double fx = poly_eval(fit.px, m, u0, v0), fy = poly_eval(fit.py, m, u0, v0);
        double jxu, jxv, jyu, jyv;
        poly_grad(fit.px, m, u0, v0, jxu, jxv);
        poly_grad(fit.py, m, u0, v0, jyu, jyv);
        const double det = jxu * jyv - jxv * jyu;
        if (det == 0.0) break;
        const double du = (jyv * fx - jxv * fy) / det, dv = (-jyu * fx + jxu * fy) / det;
        u0 -= du;
        v0 -= dv;
        if (std::abs(du) < 1e-13 && std::abs(dv) < 1e-13) break;
    }
    const std::vector<double> qx = poly_translate(fit.px, m, u0, v0);
    const std::vector<double> qy = poly_translate(fit.py, m, u0, v0);

    TanSipWcs& wcs = res.wcs;
    wcs.crpix = {crpix[0] + u0, crpix[1] + v0};
    wcs.crval = {fit_plane.ra0, fit_plane.dec0};
    wcs.cd = {qx[1 * (m + 1) + 0], qx[0 * (m + 1) + 1], qy[1 * (m + 1) + 0], qy[0 * (m + 1) + 1]};
    const double det = wcs.cd[0] * wcs.cd[3] - wcs.cd[1] * wcs.cd[2];
    if (!(std::abs(det) > 0.0) || !std::isfinite(det)) {
        res.status = FitTanSipResult::degenerate;
        return res;
    }
    const double inv[4] = {wcs.cd[3] / det, -wcs.cd[1] / det, -wcs.cd[2] / det, wcs.cd[0] / det};
    if (m >= 2) {
        wcs.order = m;
        wcs.a.assign((m + 1) * (m + 1), 0.0);
        wcs.b.assign((m + 1) * (m + 1), 0.0);
        for (int p = 0; p <= m; ++p)
            for (int q = 0; q <= m - p; ++q) {
                if (p + q < 2) continue;
                const int k = p * (m + 1) + q;
                wcs.a[k] = inv[0] * qx[k] + inv[1] * qy[k];
                wcs.b[k] = inv[2] * qx[k] + inv[3] * qy[k];
            }

        // Reverse polynomials on a grid over the box: u - U = AP(U, V), v - V = BP(U, V).
        const int g = ctl.grid_size > 0 ? ctl.grid_size : std::clamp(10 * (mi + 1), 20, 100);
        const Terms rterms(1, mi);
        const int ng = g * g;
        std::vector<double> gu(ng), gv(ng), fu(ng), fv(ng);
        std::vector<int> grows(ng);
        for (int j = 0; j < g; ++j)
            for (int i = 0; i < g; ++i) {
                const int k = j * g + i;
                const double px = box[0] + (box[1] - box[0]) * i / (g - 1);
                const double py = box[2] + (box[3] - box[2]) * j / (g - 1);
                const double uu = px - wcs.crpix[0], vv = py - wcs.crpix[1];
                const double U = uu + poly_eval(wcs.a, m, uu, vv), V = vv + poly_eval(wcs.b, m, uu, vv);
                gu[k] = U;
                gv[k] = V;
                fu[k] = uu - U;
                fv[k] = vv - V;
                grows[k] = k;
            }
        const PolyFit rev = fit_poly(rterms, mi, grows, gu, gv, fu, fv, nullptr);
        if (!rev.ok) {
            res.status = FitTanSipResult::degenerate;
            return res;
        }
        wcs.inverse_order = mi;
        wcs.ap = rev.px;
        wcs.bp = rev.py;
        // Check the inversion at the centres of the grid's cells (points the fit did not see).
        double worst = 0.0;
        for (int j = 0; j + 1 < g; ++j)
            for (int i = 0; i + 1 < g; ++i) {
                const double px = box[0] + (box[1] - box[0]) * (i + 0.5) / (g - 1);
                const double py = box[2] + (box[3] - box[2]) * (j + 0.5) / (g - 1);
                const double uu = px - wcs.crpix[0], vv = py - wcs.crpix[1];
                const double U = uu + poly_eval(wcs.a, m, uu, vv), V = vv + poly_eval(wcs.b, m, uu, vv);
                const double ru = U + poly_eval(wcs.ap, mi, U, V), rv = V + poly_eval(wcs.bp, mi, U, V);
                worst = std::max(worst, std::hypot(ru - uu, rv - vv));
            }
        res.reverse_max_error_px = worst;
    }

    // Residuals of the final WCS, as astropy will evaluate it.
    res.dx.assign(n, 0.0);
    res.dy.assign(n, 0.0);
    res.separation.assign(n, 0.0);
    const Plane fin(wcs.crval[0], wcs.crval[1]);
    std::vector<double> seps;
    double sum2 = 0.0;
    for (int i = 0; i < n; ++i) {
        double mxi, meta, rxi, reta;
        wcs.pixel_to_intermediate(x[i], y[i], mxi, meta);
        fin.project(ref[i], rxi, reta);
        res.dx[i] = (mxi - rxi) * kArcsec;
        res.dy[i] = (meta - reta) * kArcsec;
        Vec3 mv = fin.deproject_vec(mxi, meta);
        const double nrm = std::sqrt(dot(mv, mv));
        mv = {mv.x / nrm, mv.y / nrm, mv.z / nrm};
        res.separation[i] = angle_arcsec(mv, ref[i]);
        if (res.used[i]) {
            seps.push_back(res.separation[i]);
            sum2 += res.dx[i] * res.dx[i] + res.dy[i] * res.dy[i];
        }
    }
    res.n_used = static_cast<int>(seps.size());
    res.scatter_on_sky = median(seps);
    res.rms_arcsec = std::sqrt(sum2 / res.n_used);
    if (!(res.scatter_on_sky <= ctl.max_scatter_arcsec)) res.status = FitTanSipResult::scatter_too_large;
    return res;
}

}  // namespace visitcal
