#include "visitcal/psf/pixel_grid.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>

#include "visitcal/psf/lanczos.hpp"

namespace visitcal {

namespace {

using RMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Eigen::MatrixXd;
using Eigen::VectorXd;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The interpolation matrix of one axis: L[c][g] is the weight of grid index g in the pixel c of a line
// of `n_px` pixels whose first pixel sits at offset u0 (px) from the star's centre; dL its derivative
// with respect to the star's centre (d/dxc = -(1/s) d/dt). `in` marks pixels inside the grid's support.
// The fit uses the pixels inside the support only (Piff's PixelGrid fits "the pixels covered by the
// model"); with `full_reach` a pixel outside it but within the kernel's reach of the grid also gets its
// interpolated value, as GalSim's InterpolatedImage gives it when Piff draws the model (the Lanczos
// kernel's side lobes reach `order` grid steps beyond the grid: up to ~2.5e-4 of the peak).
struct AxisInterp {
    RMat L, dL;
    std::vector<char> in;
};

void axis_interp(double u0, int n_px, int G, double s, int order, bool with_derivative, AxisInterp& a,
                 bool full_reach = false) {
    a.L.setZero(n_px, G);
    if (with_derivative) a.dL.setZero(n_px, G);
    a.in.assign(static_cast<std::size_t>(n_px), 0);
    const double origin = 0.5 * (G - 1);
    std::vector<double> w(2 * static_cast<std::size_t>(order)), dw(w.size());
    // With sampling 1 every pixel has the same fractional grid position: one set of weights serves all.
    double last_frac = kNaN;
    for (int c = 0; c < n_px; ++c) {
        const double t = (u0 + c) / s + origin;
        const bool inside = t >= -1e-9 && t <= G - 1 + 1e-9;
        if (!inside && !(full_reach && t > -order && t < G - 1 + order)) continue;
        a.in[c] = inside ? 1 : 0;
        const double base = std::floor(t);
        const double frac = t - base;
        if (frac != last_frac) {
            if (with_derivative)
                lanczos_weights_derivative(frac, order, w.data(), dw.data());
            else
                lanczos_weights(frac, order, w.data());
            last_frac = frac;
        }
        const int first = static_cast<int>(base) - (order - 1);
        for (int k = 0; k < 2 * order; ++k) {
            const int g = first + k;
            if (g < 0 || g >= G) continue;
            a.L(c, g) = w[k];
            if (with_derivative) a.dL(c, g) = -dw[k] / s;
        }
    }
}

// Regularized upper incomplete gamma Q(a, x), by the power series of P for x < a + 1 and the
// continued fraction of Q (modified Lentz) otherwise (Abramowitz & Stegun 6.5.29, 6.5.31).
double gamma_q(double a, double x) {
    if (x <= 0.0) return 1.0;
    const double lead = std::exp(-x + a * std::log(x) - std::lgamma(a));
    if (x < a + 1.0) {
        double ap = a, term = 1.0 / a, sum = term;
        for (int i = 0; i < 10000; ++i) {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if (std::fabs(term) < std::fabs(sum) * 1e-16) break;
        }
        return std::max(0.0, 1.0 - sum * lead);
    }
    const double tiny = 1e-300;
    double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
    for (int i = 1; i < 10000; ++i) {
        const double an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if (std::fabs(d) < tiny) d = tiny;
        c = b + an / c;
        if (std::fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        const double del = d * c;
        h *= del;
        if (std::fabs(del - 1.0) < 1e-16) break;
    }
    return lead * h;
}

// One star in the fit.
struct Star {
    int index = 0;
    int sx0 = 0, sy0 = 0;     // parent origin of the fitted stamp
    double xc = 0, yc = 0;    // current centre
    double x_in = 0, y_in = 0;
    double flux = 0;
    RMat d, w, weff;           // data, weight, weight inside the model's support
    RMat var;                  // the pixels' variance (0 where unusable), for chi2_expected
    AxisInterp ax, ay;
    std::vector<double> basis;
    int n_eff = 0;             // pixels with weff > 0
    double mean_w = 0;
    PixelGridStarStatus status = PixelGridStarStatus::used;
    // Variable projection (see Fitter::solve): the model image m and its derivatives with respect to
    // the centre, V = [m, mx, my], with (V^T W V)^-1; r = d - F m.
    RMat vm, vmx, vmy, resid;
    Eigen::Matrix3d vinv = Eigen::Matrix3d::Zero();
    bool has_projection = false;
    double chi2 = kNaN;
    double chi2_expected = kNaN;  // sum weff * var: the chi2 pure noise gives a perfect model
    std::int64_t dof = 0;
};

class Fitter {
public:
    Fitter(const PixelGridControl& ctl, const SpatialPolynomial& poly)
        : ctl_(ctl), poly_(poly), G_(ctl.model_size), G2_(ctl.model_size * ctl.model_size), T_(poly.n_terms()), S_(ctl.stamp_size) {
        norm_ = 1.0 / (ctl.sampling_size * ctl.sampling_size);
        const double origin = 0.5 * (G_ - 1);
        Q_.setZero(G2_, ctl.fit_center ? 3 : 1);
        for (int gy = 0; gy < G_; ++gy)
            for (int gx = 0; gx < G_; ++gx) {
                const int j = gy * G_ + gx;
                Q_(j, 0) = 1.0;
                if (ctl.fit_center) {
                    Q_(j, 1) = gx - origin;
                    Q_(j, 2) = gy - origin;
                }
            }
        for (int k = 0; k < Q_.cols(); ++k) Q_.col(k).normalize();  // already mutually orthogonal
        if (ctl.varying_radius > 0.0) {
            // The varying terms live on the disc of the core: a 0/1 mask, and the constraint vectors restricted
            // to it (still mutually orthogonal: the disc is symmetric about the grid's centre).
            core_.setZero(G2_);
            Qc_.setZero(G2_, Q_.cols());
            const double r2 = ctl.varying_radius * ctl.varying_radius / (ctl.sampling_size * ctl.sampling_size);
            for (int gy = 0; gy < G_; ++gy)
                for (int gx = 0; gx < G_; ++gx) {
                    const double dx = gx - origin, dy = gy - origin;
                    if (dx * dx + dy * dy > r2) continue;
                    const int j = gy * G_ + gx;
                    core_(j) = 1.0;
                    Qc_(j, 0) = 1.0;
                    if (ctl.fit_center) {
                        Qc_(j, 1) = dx;
                        Qc_(j, 2) = dy;
                    }
                }
            if (core_.sum() < 2.0 * Qc_.cols())
                throw std::invalid_argument("varying_radius " + std::to_string(ctl.varying_radius) +
                                            " leaves too few grid pixels in the core");
            for (int k = 0; k < Qc_.cols(); ++k) Qc_.col(k).normalize();
        }
        // K = D2^T D2, D2 the (G - 2) x G second-difference operator (1, -2, 1); M = D1^T D1, D1 the
        // (G - 1) x G first difference (-1, 1).
        M_.setZero(G_, G_);
        for (int r = 0; r + 1 < G_; ++r) {
            M_(r, r) += 1.0;
            M_(r + 1, r + 1) += 1.0;
            M_(r, r + 1) -= 1.0;
            M_(r + 1, r) -= 1.0;
        }
        K_.setZero(G_, G_);
        for (int r = 0; r + 2 < G_; ++r) {
            const double d[3] = {1.0, -2.0, 1.0};
            for (int a = 0; a < 3; ++a)
                for (int b = 0; b < 3; ++b) K_(r + a, r + b) += d[a] * d[b];
        }
    }

    void set_geometry(Star& s) const {
        axis_interp(s.sx0 - s.xc, S_, G_, ctl_.sampling_size, ctl_.interpolant_order, ctl_.fit_center, s.ax);
        axis_interp(s.sy0 - s.yc, S_, G_, ctl_.sampling_size, ctl_.interpolant_order, ctl_.fit_center, s.ay);
        s.weff.resize(S_, S_);
        s.n_eff = 0;
        for (int r = 0; r < S_; ++r)
            for (int c = 0; c < S_; ++c) {
                const double v = (s.ax.in[c] && s.ay.in[r]) ? s.w(r, c) : 0.0;
                s.weff(r, c) = v;
                s.n_eff += v > 0;
            }
    }

    // grid of star s under coefficients X (G2 x T), as a (G, G) row-major matrix
    RMat grid(const MatrixXd& X, const Star& s) const {
        VectorXd p = X * Eigen::Map<const VectorXd>(s.basis.data(), T_);
        return Eigen::Map<RMat>(p.data(), G_, G_);
    }

    // z <- W_perp z = W z - W V (V^T W V)^-1 V^T W z: the weight with the star's own parameters
    // (flux, centre) profiled out.
    void weight_perp(const Star& s, RMat& z) const {
        z.array() *= s.weff.array();
        if (!s.has_projection) return;
        const int k = ctl_.fit_center ? 3 : 1;
        Eigen::Vector3d a(0, 0, 0);
        a[0] = (s.vm.array() * z.array()).sum();
        if (k == 3) {
            a[1] = (s.vmx.array() * z.array()).sum();
            a[2] = (s.vmy.array() * z.array()).sum();
        }
        const Eigen::Vector3d c = s.vinv * a;
        if (k == 3)
            z.array() -= s.weff.array() * (c[0] * s.vm.array() + c[1] * s.vmx.array() + c[2] * s.vmy.array());
        else
            z.array() -= s.weff.array() * (c[0] * s.vm.array());
    }

    // Y = A X for the normal equations of the stars in `active`.
    void apply(const MatrixXd& X, const std::vector<Star*>& active, MatrixXd& Y) {
        Y.setZero(G2_, T_);
        for (const Star* s : active) {
            const RMat P = grid(X, *s);
            tmp_sg_.noalias() = s->ay.L * P;
            img_.noalias() = tmp_sg_ * s->ax.L.transpose();
            weight_perp(*s, img_);
            img_ *= s->flux * s->flux;
            tmp_gs_.noalias() = s->ay.L.transpose() * img_;
            back_.noalias() = tmp_gs_ * s->ax.L;
            Eigen::Map<const VectorXd> r(back_.data(), G2_);
            for (int t = 0; t < T_; ++t) Y.col(t) += s->basis[t] * r;
        }
        add_smoothness(X, 1.0, Y);
    }

    // Y += sign * R X, R the smoothness prior's matrix: lambda * kappa * (K (x) I + I (x) K + 2 M (x) M)
    // on every term's grid, K = D2^T D2 and M = D1^T D1 with D2, D1 the second- and first-difference
    // operators along one axis. Its quadratic form, lambda * kappa * sum (f_xx^2 + 2 f_xy^2 + f_yy^2)
    // over each term's grid in finite differences, is the thin-plate energy: rotation invariant, and
    // zero only for planes (which the normalisation and centroid constraints then fix).
    void add_smoothness(const MatrixXd& X, double sign, MatrixXd& Y) const {
        if (!(penalty_ > 0)) return;
        for (int t = 0; t < T_; ++t) {
            Eigen::Map<const RMat> p(X.col(t).data(), G_, G_);
            Eigen::Map<RMat> y(Y.col(t).data(), G_, G_);
            y.noalias() += (sign * penalty_) * (K_ * p);
            y.noalias() += (sign * penalty_) * (p * K_);
            y.noalias() += (2.0 * sign * penalty_) * (M_ * p * M_);
        }
    }

    void rhs(const std::vector<Star*>& active, MatrixXd& B) {
        B.setZero(G2_, T_);
        for (const Star* s : active) {
            img_ = s->has_projection ? s->resid : s->d;
            weight_perp(*s, img_);
            img_ *= s->flux;
            tmp_gs_.noalias() = s->ay.L.transpose() * img_;
            back_.noalias() = tmp_gs_ * s->ax.L;
            Eigen::Map<const VectorXd> r(back_.data(), G2_);
            for (int t = 0; t < T_; ++t) B.col(t) += s->basis[t] * r;
        }
    }

    // The orthogonal projector onto the constrained model space: every term's normalisation (and centroid)
    // fixed; with varying_radius, the terms above the constant also zero outside the core.
    void project(MatrixXd& X) const {
        if (core_.size() == 0 || X.cols() < 2) {
            X -= Q_ * (Q_.transpose() * X);
            return;
        }
        X.col(0) -= Q_ * (Q_.transpose() * X.col(0));
        for (int t = 1; t < X.cols(); ++t) {
            X.col(t).array() *= core_.array();
            X.col(t) -= Qc_ * (Qc_.transpose() * X.col(t));
        }
    }

    // The Kronecker preconditioner (see the header) for the current stars.
    void build_preconditioner(const std::vector<Star*>& active) {
        RMat tx = RMat::Zero(G_, G_), ty = RMat::Zero(G_, G_);
        MatrixXd gm = MatrixXd::Zero(T_, T_);
        double ssum = 0.0;
        for (const Star* s : active) {
            const double si = s->flux * s->flux * s->mean_w;
            if (!(si > 0)) continue;
            RMat lx = s->ax.L, ly = s->ay.L;
            for (int c = 0; c < S_; ++c)
                if (!s->ax.in[c]) lx.row(c).setZero();
            for (int r = 0; r < S_; ++r)
                if (!s->ay.in[r]) ly.row(r).setZero();
            tx.noalias() += si * (lx.transpose() * lx);
            ty.noalias() += si * (ly.transpose() * ly);
            Eigen::Map<const VectorXd> b(s->basis.data(), T_);
            gm.noalias() += si * (b * b.transpose());
            ssum += si;
        }
        if (!(ssum > 0)) ssum = 1.0;
        tx /= ssum;
        ty /= ssum;
        auto ridge = [](auto& m, double rel) {
            const double r = rel * m.trace() / m.rows() + 1e-300;
            m.diagonal().array() += r;
        };
        // The smoothness prior's weight: ctl.smoothness times the stars' mean weight on one grid value
        // of the constant term (the diagonal of the preconditioner's constant-term block), so lambda
        // is dimensionless and does not depend on the number or brightness of the stars. Higher
        // terms, whose data weight is smaller (|basis| <= 1), are thereby smoothed relatively more.
        penalty_ = 0.0;
        if (ctl_.smoothness > 0 && G_ >= 3) {
            penalty_ = ctl_.smoothness * gm(0, 0) * (ty.trace() / G_) * (tx.trace() / G_);
            build_smooth_preconditioner(tx, ty, gm);
            return;
        }
        ridge(tx, 1e-8);
        ridge(ty, 1e-8);
        ridge(gm, 1e-10);
        txi_ = Eigen::MatrixXd(tx).ldlt().solve(MatrixXd::Identity(G_, G_));
        tyi_ = Eigen::MatrixXd(ty).ldlt().solve(MatrixXd::Identity(G_, G_));
        gmi_ = gm.ldlt().solve(MatrixXd::Identity(T_, T_));
    }

    // With the prior, the preconditioner gm (x) ty (x) tx + penalty I (x) (K (x) I + I (x) K + 2 M (x) M) is
    // inverted in the eigenbasis E of K (K = E diag(k) E^T; its modes are near-Fourier, and so nearly
    // diagonalise tx and ty, which are near-Toeplitz averages of the stars' interpolation Grams): tx
    // and ty are replaced by their diagonals in that basis, gm by its eigendecomposition U diag(g) U^T,
    // and the prior is kept (M, like tx, by its diagonal there). Mode (t, i, j) then has the scalar
    // g_t dy_i dx_j + penalty (k_i + k_j + 2 m_i m_j). A Kronecker product with the prior folded into tx and ty instead over-counts it by
    // penalty^2 K (x) K and slows CG in proportion to the smoothness.
    void build_smooth_preconditioner(const RMat& tx, const RMat& ty, const MatrixXd& gm) {
        const MatrixXd kd = K_;
        Eigen::SelfAdjointEigenSolver<MatrixXd> ek(kd);
        E_ = ek.eigenvectors();
        const VectorXd k = ek.eigenvalues().cwiseMax(0.0);
        const VectorXd dx = (E_.transpose() * MatrixXd(tx) * E_).diagonal().cwiseMax(0.0);
        const VectorXd dy = (E_.transpose() * MatrixXd(ty) * E_).diagonal().cwiseMax(0.0);
        const VectorXd mm = (E_.transpose() * MatrixXd(M_) * E_).diagonal().cwiseMax(0.0);
        Eigen::SelfAdjointEigenSolver<MatrixXd> eg(gm);
        U_ = eg.eigenvectors();
        const VectorXd g = eg.eigenvalues().cwiseMax(0.0);
        const double floor = 1e-12 * (g.maxCoeff() * dx.maxCoeff() * dy.maxCoeff()) + 1e-300;
        inv_denom_.resize(G2_, T_);
        for (int t = 0; t < T_; ++t)
            for (int i = 0; i < G_; ++i)
                for (int j = 0; j < G_; ++j)
                    inv_denom_(i * G_ + j, t) = 1.0 / (g[t] * dy[i] * dx[j] + penalty_ * (k[i] + k[j] + 2.0 * mm[i] * mm[j]) + floor);
    }

    void precondition(const MatrixXd& R, MatrixXd& Z) const {
        Z.resize(G2_, T_);
        if (penalty_ > 0) {
            MatrixXd A(G2_, T_);
            for (int t = 0; t < T_; ++t) {
                Eigen::Map<const RMat> r(R.col(t).data(), G_, G_);
                Eigen::Map<RMat> a(A.col(t).data(), G_, G_);
                a.noalias() = E_.transpose() * r * E_;
            }
            MatrixXd B = (A * U_).cwiseProduct(inv_denom_);
            A.noalias() = B * U_.transpose();
            for (int t = 0; t < T_; ++t) {
                Eigen::Map<const RMat> a(A.col(t).data(), G_, G_);
                Eigen::Map<RMat> z(Z.col(t).data(), G_, G_);
                z.noalias() = E_ * a * E_.transpose();
            }
            return;
        }
        for (int t = 0; t < T_; ++t) {
            Eigen::Map<const RMat> r(R.col(t).data(), G_, G_);
            Eigen::Map<RMat> z(Z.col(t).data(), G_, G_);
            z.noalias() = tyi_ * r * txi_;
        }
        Z = Z * gmi_;
    }

    // Solve the constrained normal equations by projected preconditioned CG, starting from X.
    //
    // The first solve holds every star's flux and centre (Piff's step). Later ones are Gauss-Newton
    // steps for the grid and all stars' parameters jointly: each star's flux and centre are profiled
    // out of its chi2 (variable projection, Golub & Pereyra 1973), so the solve returns the grid
    // correction dX of the joint linearised problem, and the flux/grid alternation, which converges
    // only linearly (1e-4 flux errors after 15 iterations on exact data), is not needed.
    int solve(const std::vector<Star*>& active, MatrixXd& X) {
        const bool gauss_newton = !active.empty() && active.front()->has_projection;
        if (gauss_newton) {
            MatrixXd dX = MatrixXd::Zero(G2_, T_);
            const int it = solve_from(active, dX, MatrixXd::Zero(G2_, T_), &X);
            X += dX;
            return it;
        }
        MatrixXd X0 = MatrixXd::Zero(G2_, T_);
        X0.col(0).setConstant(norm_ / G2_);
        return solve_from(active, X, X0);
    }

    // `base`, for a Gauss-Newton step: the current model, whose prior gradient -R base joins the
    // right-hand side (the step minimises chi2 + prior at base + X).
    int solve_from(const std::vector<Star*>& active, MatrixXd& X, const MatrixXd& X0, const MatrixXd* base = nullptr) {
        if (X.rows() != G2_ || X.cols() != T_) X = X0;
        // Put the starting point on the constraint surface.
        MatrixXd D = X - X0;
        project(D);
        X = X0 + D;
        build_preconditioner(active);
        MatrixXd B, AX, R, Z, P, AP;
        rhs(active, B);
        if (base) add_smoothness(*base, -1.0, B);
        apply(X, active, AX);
        R = B - AX;
        project(R);
        MatrixXd PB = B;
        project(PB);
        // Gauss-Newton steps converge relative to the first solve's right-hand side too: near the
        // solution their own right-hand side is at the rounding level and cannot shrink further.
        const double bnorm = PB.norm();
        if (first_bnorm_ == 0.0) first_bnorm_ = bnorm;
        if (!(bnorm > 0)) return 0;
        const double stop = ctl_.cg_tolerance * std::max(bnorm, first_bnorm_);
        precondition(R, Z);
        project(Z);
        P = Z;
        double rz = (R.array() * Z.array()).sum();
        int it = 0;
        for (; it < ctl_.cg_max_iter; ++it) {
            if (R.norm() <= stop) break;
            apply(P, active, AP);
            project(AP);
            const double pap = (P.array() * AP.array()).sum();
            if (!(pap > 0)) break;
            const double alpha = rz / pap;
            // The step lowers the total chi2 by alpha * rz (exactly, for this quadratic). When that is
            // below cg_chi2_tolerance the remaining gain is statistically irrelevant: stop.
            const bool negligible = alpha * rz < ctl_.cg_chi2_tolerance;
            X.noalias() += alpha * P;
            R.noalias() -= alpha * AP;
            if (negligible) {
                ++it;
                break;
            }
            precondition(R, Z);
            project(Z);
            const double rz_new = (R.array() * Z.array()).sum();
            P = Z + (rz_new / rz) * P;
            rz = rz_new;
        }
        return it;
    }

    // Refit the flux (and centre) of star s under X; then its chi2 and dof.
    void reflux(const MatrixXd& X, Star& s) {
        const RMat P = grid(X, s);
        auto render = [&](const RMat& ly, const RMat& lx) {
            tmp_sg_.noalias() = ly * P;
            RMat m = tmp_sg_ * lx.transpose();
            return m;
        };
        RMat m = render(s.ay.L, s.ax.L);
        if (ctl_.fit_center) {
            const RMat mx = render(s.ay.L, s.ax.dL);
            const RMat my = render(s.ay.dL, s.ax.L);
            Eigen::Matrix3d a = Eigen::Matrix3d::Zero();
            Eigen::Vector3d b = Eigen::Vector3d::Zero();
            for (int r = 0; r < S_; ++r)
                for (int c = 0; c < S_; ++c) {
                    const double w = s.weff(r, c);
                    if (w == 0.0) continue;
                    const Eigen::Vector3d v(m(r, c), mx(r, c), my(r, c));
                    a.noalias() += w * v * v.transpose();
                    b.noalias() += w * s.d(r, c) * v;
                }
            const Eigen::Vector3d sol = a.ldlt().solve(b);
            if (sol.allFinite() && sol[0] > 0) {
                // One linearised step, as Piff's reflux; bounded so a bad star cannot run away.
                const double dx = std::clamp(sol[1] / sol[0], -0.5, 0.5);
                const double dy = std::clamp(sol[2] / sol[0], -0.5, 0.5);
                const double nx = s.xc + dx, ny = s.yc + dy;
                if (std::fabs(nx - s.x_in) <= 2.0 && std::fabs(ny - s.y_in) <= 2.0) {
                    s.xc = nx;
                    s.yc = ny;
                    set_geometry(s);
                    m = render(s.ay.L, s.ax.L);
                }
            }
        }
        const double mm = (s.weff.array() * m.array() * m.array()).sum();
        const double dm = (s.weff.array() * s.d.array() * m.array()).sum();
        const int npar = ctl_.fit_center ? 3 : 1;
        if (!(mm > 0) || !std::isfinite(dm) || s.n_eff <= npar) {
            s.flux = kNaN;
            s.chi2 = kNaN;
            s.chi2_expected = kNaN;
            s.dof = 0;
            return;
        }
        s.flux = dm / mm;
        s.resid = s.d - s.flux * m;
        s.chi2 = (s.weff.array() * s.resid.array().square()).sum();
        s.chi2_expected = (s.weff.array() * s.var.array()).sum();
        s.dof = s.n_eff - npar;
        // The projection of the next Gauss-Newton step, at the star's new parameters.
        s.vm = m;
        Eigen::Matrix3d a = Eigen::Matrix3d::Identity();
        a(0, 0) = mm;
        if (ctl_.fit_center) {
            s.vmx = s.flux * render(s.ay.L, s.ax.dL);
            s.vmy = s.flux * render(s.ay.dL, s.ax.L);
            const RMat* v[3] = {&s.vm, &s.vmx, &s.vmy};
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j <= i; ++j) a(i, j) = a(j, i) = (s.weff.array() * v[i]->array() * v[j]->array()).sum();
        }
        const Eigen::Matrix3d inv = a.inverse();
        s.has_projection = inv.allFinite();
        s.vinv = s.has_projection ? inv : Eigen::Matrix3d::Zero();
        if (!ctl_.fit_center) s.vinv(1, 1) = s.vinv(2, 2) = 0.0;
    }

    double chi2_threshold(std::int64_t dof) {
        auto it = isf_cache_.find(dof);
        if (it != isf_cache_.end()) return it->second;
        const double p = std::erfc(ctl_.outlier_n_sigma / std::sqrt(2.0));
        // Beyond ~37 sigma the tail probability underflows: no star is that far out of any bound.
        const double v = p > 0 ? chi2_isf(p, static_cast<double>(dof)) : std::numeric_limits<double>::infinity();
        isf_cache_.emplace(dof, v);
        return v;
    }

private:
    const PixelGridControl& ctl_;
    const SpatialPolynomial& poly_;
    int G_, G2_, T_, S_;
    double norm_;
    MatrixXd Q_;
    VectorXd core_;   // varying_radius > 0: 1 on the core's grid pixels, else empty
    MatrixXd Qc_;     // the constraint vectors on the core
    MatrixXd txi_, tyi_, gmi_;
    RMat K_, M_;
    double penalty_ = 0.0;
    MatrixXd E_, U_, inv_denom_;  // the prior's preconditioner (build_smooth_preconditioner)
    RMat tmp_sg_, img_, tmp_gs_, back_;
    std::map<std::int64_t, double> isf_cache_;
    double first_bnorm_ = 0.0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------
// PixelGridPsf

PixelGridPsf::PixelGridPsf(std::vector<double> coefficients, int model_size, double sampling_size, int interpolant_order,
                           SpatialPolynomial spatial, int draw_size, std::array<double, 2> average_position)
    : coefficients_(std::move(coefficients)),
      model_size_(model_size),
      sampling_size_(sampling_size),
      interpolant_order_(interpolant_order),
      spatial_(spatial),
      draw_size_(draw_size),
      average_position_(average_position) {
    if (model_size < 1) throw std::invalid_argument("model_size must be >= 1");
    if (!(sampling_size > 0) || !std::isfinite(sampling_size)) throw std::invalid_argument("sampling_size must be positive");
    if (interpolant_order < 1) throw std::invalid_argument("interpolant_order must be >= 1");
    if (draw_size < 1 || draw_size % 2 == 0) throw std::invalid_argument("draw_size must be odd and positive");
    const std::size_t want = static_cast<std::size_t>(spatial.n_terms()) * model_size * model_size;
    if (coefficients_.size() != want)
        throw std::invalid_argument("coefficients must hold n_terms * model_size^2 = " + std::to_string(want) + " values, got " +
                                    std::to_string(coefficients_.size()));
}

void PixelGridPsf::grid_at(double x, double y, double* out) const {
    const int G2 = model_size_ * model_size_;
    const int T = spatial_.n_terms();
    double b[136];
    spatial_.evaluate(x, y, b);
    std::fill(out, out + G2, 0.0);
    for (int t = 0; t < T; ++t) {
        const double* c = coefficients_.data() + static_cast<std::size_t>(t) * G2;
        const double bt = b[t];
        for (int j = 0; j < G2; ++j) out[j] += bt * c[j];
    }
}

void PixelGridPsf::render(const double* grid, double u0, double v0, int width, int height, double* out) const {
    AxisInterp ax, ay;
    axis_interp(u0, width, model_size_, sampling_size_, interpolant_order_, false, ax, true);
    axis_interp(v0, height, model_size_, sampling_size_, interpolant_order_, false, ay, true);
    Eigen::Map<const RMat> P(grid, model_size_, model_size_);
    Eigen::Map<RMat> o(out, height, width);
    o.noalias() = ay.L * P * ax.L.transpose();
}

PsfImage PixelGridPsf::draw(double x, double y, double u0, double v0, int x0, int y0) const {
    std::vector<double> g(static_cast<std::size_t>(model_size_) * model_size_);
    grid_at(x, y, g.data());
    PsfImage im(draw_size_, draw_size_, x0, y0);
    render(g.data(), u0, v0, draw_size_, draw_size_, im.data.data());
    // Normalise by the model's flux, sum(grid) * sampling^2 (the integral of the grid interpolated with
    // DC-conserving weights; 1 for a fitted model, whose constant term is constrained to it), not by the
    // stamp's sum: at a sub-pixel phase the edge row and column of the grid's support fall outside the
    // pixels (zero where the grid has no support), and renormalising the stamp would put that light
    // (~1e-3 of the flux at a half-pixel offset) into the core. PsfFlux measured with such images
    // depended on the star's sub-pixel phase by up to 1.8 mmag on the simulator's PSFs, which no smooth
    // aperture-correction field can follow; Piff's drawn stars are not renormalised either.
    double flux = 0.0;
    for (double v : g) flux += v;
    flux *= sampling_size_ * sampling_size_;
    if (flux != 0.0 && std::isfinite(flux))
        for (double& v : im.data) v /= flux;
    return im;
}

PsfImage PixelGridPsf::compute_image(double x, double y) const {
    const int h = draw_size_ / 2;
    const int ix = position_to_index(x), iy = position_to_index(y);
    return draw(x, y, (ix - h) - x, (iy - h) - y, ix - h, iy - h);
}

PsfImage PixelGridPsf::compute_kernel_image(double x, double y) const {
    const int h = draw_size_ / 2;
    return draw(x, y, -h, -h, -h, -h);
}

// ---------------------------------------------------------------------------------------------------
// chi2_isf

double chi2_isf(double p, double dof) {
    if (!(p > 0 && p < 1)) throw std::invalid_argument("chi2_isf: p must be in (0, 1)");
    if (!(dof > 0)) throw std::invalid_argument("chi2_isf: dof must be positive");
    const double a = 0.5 * dof;
    // Bracket, then Newton on log Q with bisection as a safeguard (log Q(a, x/2) is decreasing in x).
    double lo = 0.0, hi = dof + 10.0 * std::sqrt(2.0 * dof) + 50.0;
    while (gamma_q(a, 0.5 * hi) > p) hi *= 2.0;
    // Wilson-Hilferty start with a normal quantile from a crude inversion of erfc.
    double x = std::clamp(dof + std::sqrt(2.0 * dof) * std::sqrt(-2.0 * std::log(p)), lo + 1e-12, hi);
    const double lp = std::log(p);
    for (int it = 0; it < 200; ++it) {
        const double q = gamma_q(a, 0.5 * x);
        if (q > p) lo = x; else hi = x;
        if (q <= 0) {
            x = 0.5 * (lo + hi);
            continue;
        }
        // d log Q / dx = -pdf(x) / Q with pdf the chi2 density.
        const double lpdf = (a - 1.0) * std::log(0.5 * x) - 0.5 * x - std::lgamma(a) - std::log(2.0);
        const double g = std::log(q) - lp;
        const double dg = -std::exp(lpdf) / q;
        double xn = x - g / dg;
        if (!(xn > lo && xn < hi) || !std::isfinite(xn)) xn = 0.5 * (lo + hi);
        if (std::fabs(xn - x) <= 1e-12 * x) return xn;
        x = xn;
        if (hi - lo <= 1e-12 * hi) break;
    }
    return x;
}

// ---------------------------------------------------------------------------------------------------
// fit_pixel_grid_psf

PixelGridFitResult fit_pixel_grid_psf(const float* image, const std::int32_t* mask, const float* variance, int m,
                                      int stamp_side, const std::int32_t* xy0, const double* x, const double* y,
                                      const std::uint8_t* reserved, std::array<double, 4> box,
                                      const PixelGridControl& ctl_in) {
    PixelGridControl ctl = ctl_in;
    if (m < 0) throw std::invalid_argument("number of candidates must be >= 0");
    if (ctl.stamp_size < 1 || ctl.stamp_size % 2 == 0) throw std::invalid_argument("stamp_size must be odd and positive");
    if (ctl.stamp_size > stamp_side)
        throw std::invalid_argument("stamp_size " + std::to_string(ctl.stamp_size) + " exceeds the candidates' stamps (" +
                                    std::to_string(stamp_side) + ")");
    if (ctl.model_size < 1) throw std::invalid_argument("model_size must be >= 1");
    if (!(ctl.sampling_size > 0)) throw std::invalid_argument("sampling_size must be positive");
    if (ctl.interpolant_order < 1) throw std::invalid_argument("interpolant_order must be >= 1");
    if (ctl.max_iter < 1) throw std::invalid_argument("max_iter must be >= 1");

    PixelGridFitResult res;
    res.status.assign(static_cast<std::size_t>(m), static_cast<std::uint8_t>(PixelGridStarStatus::used));
    res.flux.assign(static_cast<std::size_t>(m), kNaN);
    res.chi2.assign(static_cast<std::size_t>(m), kNaN);
    res.chi2_expected.assign(static_cast<std::size_t>(m), kNaN);
    res.x.assign(x, x + m);
    res.y.assign(y, y + m);
    res.dof.assign(static_cast<std::size_t>(m), 0);

    const int S = ctl.stamp_size;
    const int off = stamp_side / 2 - S / 2;
    const std::size_t plane = static_cast<std::size_t>(stamp_side) * stamp_side;

    // Stars: pixels, weights (as PiffPsfDeterminer makes them: 1 / sky variance, S/N capped), in candidate order.
    std::vector<Star> stars;
    stars.reserve(static_cast<std::size_t>(m));
    for (int i = 0; i < m; ++i) {
        Star s;
        s.index = i;
        s.sx0 = xy0[2 * i] + off;
        s.sy0 = xy0[2 * i + 1] + off;
        s.xc = s.x_in = x[i];
        s.yc = s.y_in = y[i];
        s.d.resize(S, S);
        s.w.resize(S, S);
        s.var.resize(S, S);
        const float* im = image + plane * i;
        const std::int32_t* mk = mask + plane * i;
        const float* va = variance + plane * i;
        int n_good = 0;
        double sx = 0, sy = 0, sxx = 0, sxy = 0;
        for (int r = 0; r < S; ++r)
            for (int c = 0; c < S; ++c) {
                const std::size_t k = static_cast<std::size_t>(r + off) * stamp_side + (c + off);
                const double v = va[k], d = im[k];
                const bool good = v != 0.0 && std::isfinite(v) && std::isfinite(d) && (mk[k] & ctl.zero_weight_mask) == 0;
                s.d(r, c) = good ? d : 0.0;
                s.w(r, c) = good ? 1.0 : 0.0;
                s.var(r, c) = good ? v : 0.0;
                if (good) {
                    ++n_good;
                    sx += d;
                    sy += v;
                    sxx += d * d;
                    sxy += d * v;
                }
            }
        if (!std::isfinite(x[i]) || !std::isfinite(y[i]) ||
            n_good < ctl.minimum_unmasked_fraction * static_cast<double>(S) * S || n_good < 2) {
            res.status[i] = static_cast<std::uint8_t>(PixelGridStarStatus::too_few_pixels);
            continue;
        }
        // var = a * img + b by least squares; b is the sky-only variance, so the star's own Poisson
        // noise is left out of the weights on purpose (LSST's piffPsfDeterminer).
        const double n = n_good;
        const double det = n * sxx - sx * sx;
        const double b = det != 0.0 ? (sxx * sy - sx * sxy) / det : sy / n;
        if (!(b > 0) || !std::isfinite(b)) {
            res.status[i] = static_cast<std::uint8_t>(PixelGridStarStatus::bad_variance);
            continue;
        }
        double wv = 1.0 / b;
        // S/N cap: F = sum w I^2, SNR = (F - Npix) / sqrt(F).
        const double F = wv * sxx;
        const double snr = F > n ? (F - n) / std::sqrt(F) : 0.0;
        if (snr > ctl.max_snr) wv *= (ctl.max_snr / snr) * (ctl.max_snr / snr);
        s.w *= wv;
        s.mean_w = wv;
        if (reserved && reserved[i]) {
            s.status = PixelGridStarStatus::reserved;
            res.status[i] = static_cast<std::uint8_t>(PixelGridStarStatus::reserved);
        }
        stars.push_back(std::move(s));
    }

    auto n_fit_candidates = [&]() {
        int n = 0;
        for (const Star& s : stars) n += s.status == PixelGridStarStatus::used;
        return n;
    };
    res.n_available = n_fit_candidates();

    int order = ctl.spatial_order;
    int max_iter = ctl.max_iter;
    // PiffPsfDeterminer's too-few-stars rule (PiffTooFewGoodStarsError): fewer stars than polynomial terms.
    if (res.n_available < SpatialPolynomial::n_terms(order)) {
        if (ctl.zeroth_order_fallback && res.n_available >= 1) {
            order = 0;
            max_iter = 1;
        } else {
            res.too_few_n_stars = res.n_available;
            res.too_few_n_required = SpatialPolynomial::n_terms(order);
            return res;
        }
    }

    std::vector<Star> initial = stars;  // for a refit at order 0
    for (int attempt = 0; attempt < 2; ++attempt) {
        const SpatialPolynomial poly(order, box[0], box[1], box[2], box[3]);
        Fitter fitter(ctl, poly);
        for (Star& s : stars) {
            s.basis = poly.evaluate(s.xc, s.yc);
            fitter.set_geometry(s);
            // Initial flux: the sum of the usable pixels inside the model's support.
            s.flux = (s.d.array() * (s.weff.array() > 0).cast<double>()).sum();
            if (!(s.flux > 0)) s.flux = s.d.sum();
        }
        MatrixXd X;
        double old_chi2 = std::numeric_limits<double>::infinity();
        res.converged = false;
        res.cg_iterations = 0;
        int iter = 0;
        for (; iter < max_iter; ++iter) {
            std::vector<Star*> active;
            for (Star& s : stars)
                if (s.status == PixelGridStarStatus::used && s.flux > 0 && std::isfinite(s.flux)) active.push_back(&s);
            res.cg_iterations += fitter.solve(active, X);
            for (Star& s : stars) {
                if (s.status == PixelGridStarStatus::too_few_pixels || s.status == PixelGridStarStatus::bad_variance) continue;
                fitter.reflux(X, s);
                if (s.status == PixelGridStarStatus::used && !std::isfinite(s.chi2)) s.status = PixelGridStarStatus::fit_failed;
                // The basis follows the refitted centre.
                s.basis = poly.evaluate(s.xc, s.yc);
            }
            double chi2 = 0.0;
            std::int64_t dof = 0;
            std::vector<Star*> used;
            for (Star& s : stars)
                if (s.status == PixelGridStarStatus::used) {
                    used.push_back(&s);
                    chi2 += s.chi2;
                    dof += s.dof;
                }
            // Chisq outliers (Piff), from the second iteration on: the first one's fluxes are rough.
            int n_removed = 0;
            if (iter >= 1 && !used.empty() && dof > 0) {
                const double factor = std::max(1.0, chi2 / static_cast<double>(dof));
                std::vector<std::pair<double, Star*>> over;
                for (Star* s : used) {
                    const double th = fitter.chi2_threshold(s->dof) * factor;
                    if (s->chi2 > th) over.emplace_back(s->chi2 - th, s);
                }
                const std::size_t n_max =
                    static_cast<std::size_t>(std::ceil(ctl.outlier_max_remove * static_cast<double>(used.size())));
                if (over.size() > n_max) {
                    // Largest excess first; ties by candidate index, so the choice is deterministic.
                    std::stable_sort(over.begin(), over.end(), [](const auto& a, const auto& b) {
                        return a.first > b.first || (a.first == b.first && a.second->index < b.second->index);
                    });
                    over.resize(n_max);
                }
                for (auto& o : over) {
                    o.second->status = PixelGridStarStatus::outlier;
                    chi2 -= o.second->chi2;
                    dof -= o.second->dof;
                }
                n_removed = static_cast<int>(over.size());
            }
            res.chi2_total = chi2;
            res.dof_total = dof;
            const bool settled = n_removed == 0 && old_chi2 - chi2 < ctl.chisq_thresh * static_cast<double>(dof);
            old_chi2 = chi2;
            if (iter + 1 >= std::min(ctl.min_iter, max_iter) && settled) {
                res.converged = true;
                ++iter;
                break;
            }
        }
        res.n_iter = iter;
        res.spatial_order = order;
        res.n_used = n_fit_candidates();
        if (res.n_used < poly.n_terms()) {
            if (ctl.zeroth_order_fallback && order > 0 && attempt == 0 && res.n_used >= 1) {
                // Redo the fit at order 0 (as PiffPsfDeterminer does), from the initial stars.
                stars = initial;
                order = 0;
                max_iter = 1;
                continue;
            }
            res.too_few_n_stars = res.n_used;
            res.too_few_n_required = poly.n_terms();
            return res;
        }
        // Outputs.
        double ax = 0, ay = 0;
        int nu = 0;
        for (const Star& s : stars) {
            res.status[s.index] = static_cast<std::uint8_t>(s.status);
            res.flux[s.index] = s.flux;
            res.chi2[s.index] = s.chi2;
            res.chi2_expected[s.index] = s.chi2_expected;
            res.dof[s.index] = s.dof;
            res.x[s.index] = s.xc;
            res.y[s.index] = s.yc;
            if (s.status == PixelGridStarStatus::used) {
                ax += s.xc;
                ay += s.yc;
                ++nu;
            }
        }
        // Coefficients as (term, grid pixel).
        std::vector<double> coeffs(static_cast<std::size_t>(poly.n_terms()) * ctl.model_size * ctl.model_size);
        const int G2 = ctl.model_size * ctl.model_size;
        for (int t = 0; t < poly.n_terms(); ++t)
            for (int j = 0; j < G2; ++j) coeffs[static_cast<std::size_t>(t) * G2 + j] = X(j, t);
        res.psf = std::make_shared<PixelGridPsf>(std::move(coeffs), ctl.model_size, ctl.sampling_size, ctl.interpolant_order,
                                                 poly, ctl.draw_size, std::array<double, 2>{ax / nu, ay / nu});
        return res;
    }
    return res;
}

}  // namespace visitcal
