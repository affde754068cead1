// ChebyshevBoundedField: see chebyshev.hpp; the definition follows afw's ChebyshevBoundedField.
#include "visitcal/core/chebyshev.hpp"

#include "chebyshev_row.hpp"
#include "cpu_features.hpp"

#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace visitcal {

namespace {

// Clenshaw's recurrence for sum_k c[k * stride] T_k(u), k = 0..order.
inline double clenshaw(const double* c, std::ptrdiff_t stride, int order, double u) {
    double b1 = 0.0, b2 = 0.0;
    const double two_u = 2.0 * u;
    for (int k = order; k >= 1; --k) {
        const double b0 = c[k * stride] + two_u * b1 - b2;
        b2 = b1;
        b1 = b0;
    }
    return c[0] + u * b1 - b2;
}

void check_finite(const double* v, std::size_t n, const char* name) {
    for (std::size_t k = 0; k < n; ++k) {
        if (!std::isfinite(v[k])) {
            throw std::invalid_argument(std::string(name) + " has a non-finite value at index " +
                                        std::to_string(k));
        }
    }
}

}  // namespace

void ChebyshevBoundedFieldControl::validate() const {
    if (order_x < 0 || order_y < 0) {
        throw std::invalid_argument("order_x and order_y must be >= 0 (got " + std::to_string(order_x) +
                                    ", " + std::to_string(order_y) + ")");
    }
    if (order_x > 64 || order_y > 64) {
        throw std::invalid_argument("order_x and order_y must be <= 64");
    }
}

std::vector<std::pair<int, int>> ChebyshevBoundedFieldControl::terms() const {
    validate();
    const int max_order = std::max(order_x, order_y);
    std::vector<std::pair<int, int>> out;
    for (int j = 0; j <= order_y; ++j) {
        for (int i = 0; i <= order_x; ++i) {
            if (!triangular || i + j <= max_order) out.emplace_back(j, i);
        }
    }
    return out;
}

int ChebyshevBoundedFieldControl::size() const { return static_cast<int>(terms().size()); }

void chebyshev_table(const double* u, std::size_t n, int order, double* table) {
    // Row k holds T_k(u); T_{k+1} = 2u T_k - T_{k-1}, stable on [-1, 1] and accurate to a few ulp
    // for the orders (<= 10) used here.
    std::fill(table, table + n, 1.0);
    if (order >= 1) std::copy(u, u + n, table + n);
    for (int k = 2; k <= order; ++k) {
        const double* tm1 = table + (k - 1) * n;
        const double* tm2 = table + (k - 2) * n;
        double* tk = table + k * n;
        for (std::size_t m = 0; m < n; ++m) tk[m] = 2.0 * u[m] * tm1[m] - tm2[m];
    }
}

ChebyshevBoundedField::ChebyshevBoundedField(const Box2I& bbox, RowMajorArrayXXd coefficients)
    : bbox_(bbox), coefficients_(std::move(coefficients)) {
    if (bbox_.empty()) throw std::invalid_argument("bbox is empty: " + bbox_.to_string());
    if (coefficients_.size() == 0) throw std::invalid_argument("coefficients array is empty");
    if (coefficients_.rows() > 65 || coefficients_.cols() > 65) {
        throw std::invalid_argument("Chebyshev orders above 64 are not supported (coefficients shape " +
                                    std::to_string(coefficients_.rows()) + " x " +
                                    std::to_string(coefficients_.cols()) + ")");
    }
    check_finite(coefficients_.data(), static_cast<std::size_t>(coefficients_.size()), "coefficients");
    x_sum_ = bbox_.min_x_edge() + bbox_.max_x_edge();
    y_sum_ = bbox_.min_y_edge() + bbox_.max_y_edge();
    inv_width_ = 1.0 / bbox_.width();
    inv_height_ = 1.0 / bbox_.height();
}

ChebyshevBoundedField ChebyshevBoundedField::fit(const Box2I& bbox, const double* x, const double* y,
                                                 const double* z, const double* weights, std::size_t n,
                                                 const ChebyshevBoundedFieldControl& ctrl) {
    const auto terms = ctrl.terms();
    const std::size_t m = terms.size();
    if (bbox.empty()) throw std::invalid_argument("bbox is empty: " + bbox.to_string());
    if (n == 0) throw std::invalid_argument("cannot fit a Chebyshev field to zero points");
    if (n < m) {
        throw std::invalid_argument("a Chebyshev field with " + std::to_string(m) + " terms needs at least " +
                                    std::to_string(m) + " points; got " + std::to_string(n));
    }
    check_finite(x, n, "x");
    check_finite(y, n, "y");
    check_finite(z, n, "z");
    if (weights != nullptr) {
        check_finite(weights, n, "weights");
        for (std::size_t k = 0; k < n; ++k) {
            if (weights[k] < 0) throw std::invalid_argument("weights must be >= 0 (index " + std::to_string(k) + ")");
        }
    }

    // A field with zero coefficients serves to map the coordinates exactly as evaluation does.
    const ChebyshevBoundedField mapper(bbox, RowMajorArrayXXd::Zero(ctrl.order_y + 1, ctrl.order_x + 1));
    std::vector<double> ux(n), uy(n);
    for (std::size_t k = 0; k < n; ++k) {
        ux[k] = mapper.map_x(x[k]);
        uy[k] = mapper.map_y(y[k]);
    }
    std::vector<double> tx((ctrl.order_x + 1) * n), ty((ctrl.order_y + 1) * n);
    chebyshev_table(ux.data(), n, ctrl.order_x, tx.data());
    chebyshev_table(uy.data(), n, ctrl.order_y, ty.data());

    Eigen::MatrixXd design(n, m);
    Eigen::VectorXd rhs(n);
    for (std::size_t t = 0; t < m; ++t) {
        const double* txi = tx.data() + terms[t].second * n;
        const double* tyj = ty.data() + terms[t].first * n;
        for (std::size_t k = 0; k < n; ++k) design(k, t) = txi[k] * tyj[k];
    }
    for (std::size_t k = 0; k < n; ++k) rhs[k] = z[k];
    if (weights != nullptr) {
        for (std::size_t k = 0; k < n; ++k) {
            design.row(k) *= weights[k];
            rhs[k] *= weights[k];
        }
    }
    Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(design);
    if (qr.rank() < static_cast<Eigen::Index>(m)) {
        throw std::invalid_argument("the fit is degenerate: the points (with non-zero weight) determine only " +
                                    std::to_string(qr.rank()) + " of " + std::to_string(m) + " terms");
    }
    const Eigen::VectorXd packed = qr.solve(rhs);
    RowMajorArrayXXd coefficients = RowMajorArrayXXd::Zero(ctrl.order_y + 1, ctrl.order_x + 1);
    for (std::size_t t = 0; t < m; ++t) coefficients(terms[t].first, terms[t].second) = packed[t];
    return ChebyshevBoundedField(bbox, std::move(coefficients));
}

double ChebyshevBoundedField::evaluate(double x, double y) const {
    const double ux = map_x(x), uy = map_y(y);
    const int ox = order_x(), oy = order_y();
    // Collapse x for each y order (coefficients are row-major [j, i]), then sum over y.
    double row_values[65];  // order_y <= 64, checked in the constructor
    for (int j = 0; j <= oy; ++j) row_values[j] = clenshaw(coefficients_.data() + j * (ox + 1), 1, ox, ux);
    return clenshaw(row_values, 1, oy, uy);
}

void ChebyshevBoundedField::evaluate(const double* x, const double* y, double* out, std::size_t n) const {
    for (std::size_t k = 0; k < n; ++k) out[k] = evaluate(x[k], y[k]);
}

template <typename T>
void ChebyshevBoundedField::evaluate_grid(const double* xs, std::size_t nx, const double* ys, std::size_t ny,
                                          T* out, std::ptrdiff_t out_stride) const {
    if (nx == 0 || ny == 0) return;
    const int ox = order_x(), oy = order_y();
    std::vector<double> ux(nx), uy(ny);
    for (std::size_t c = 0; c < nx; ++c) ux[c] = map_x(xs[c]);
    for (std::size_t r = 0; r < ny; ++r) uy[r] = map_y(ys[r]);
    std::vector<double> tx((ox + 1) * nx), ty((oy + 1) * ny);
    chebyshev_table(ux.data(), nx, ox, tx.data());
    chebyshev_table(uy.data(), ny, oy, ty.data());

    // Separable evaluation: for each output row, g_i = sum_j a[j, i] T_j(y'), then
    // f = sum_i g_i T_i(x'). One pass per row reads the (ox + 1) rows of T_i(x') (L2-resident:
    // 7 x 4072 doubles = 228 kB at order 6) and writes each output once; with the order a
    // compile-time constant (orders 0-10) the inner sum is fully unrolled and vectorised.
    std::vector<double> g(ox + 1);
    const bool avx2 = cpu_has_avx2();
    for (std::size_t r = 0; r < ny; ++r) {
        for (int i = 0; i <= ox; ++i) {
            double s = 0.0;
            for (int j = 0; j <= oy; ++j) s += coefficients_(j, i) * ty[j * ny + r];
            g[i] = s;
        }
        T* out_row = out + static_cast<std::ptrdiff_t>(r) * out_stride;
        if (avx2) {
            grid_row_avx2(ox, g.data(), tx.data(), nx, out_row);
        } else {
            grid_row(ox, g.data(), tx.data(), nx, out_row);
        }
    }
}

template void ChebyshevBoundedField::evaluate_grid<double>(const double*, std::size_t, const double*, std::size_t,
                                                           double*, std::ptrdiff_t) const;
template void ChebyshevBoundedField::evaluate_grid<float>(const double*, std::size_t, const double*, std::size_t,
                                                          float*, std::ptrdiff_t) const;

double ChebyshevBoundedField::mean() const {
    auto mean_t = [](int k) { return (k % 2 == 0) ? 1.0 / (1.0 - static_cast<double>(k) * k) : 0.0; };
    double s = 0.0;
    for (int j = 0; j <= order_y(); ++j) {
        const double mj = mean_t(j);
        if (mj == 0.0) continue;
        for (int i = 0; i <= order_x(); ++i) s += coefficients_(j, i) * mean_t(i) * mj;
    }
    return s;
}

ChebyshevBoundedField ChebyshevBoundedField::scaled(double factor) const {
    if (!std::isfinite(factor)) throw std::invalid_argument("scale factor must be finite");
    return ChebyshevBoundedField(bbox_, coefficients_ * factor);
}

}  // namespace visitcal
