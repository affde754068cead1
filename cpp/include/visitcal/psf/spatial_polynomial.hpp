// The spatial polynomial of the fitted PSF models (issue 6): monomials x^i y^j with i + j <= order in
// coordinates scaled to [-1, 1] over the fit's bounding box. Piff's BasisPolynomial uses raw pixel
// coordinates, which makes order 4 ill-conditioned at x ~ 4000 (its terms span 1e14);
// scaled to [-1, 1] every term is O(1) and the normal matrix of a detector's stars stays well conditioned.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace visitcal {

class SpatialPolynomial {
public:
    SpatialPolynomial() = default;
    /// `order` >= 0; the box [xmin, xmax] x [ymin, ymax] (parent pixels) maps to [-1, 1]^2 and must have
    /// positive extent on both axes.
    SpatialPolynomial(int order, double xmin, double xmax, double ymin, double ymax)
        : order_(order), xmin_(xmin), xmax_(xmax), ymin_(ymin), ymax_(ymax) {
        if (order < 0 || order > 15)
            throw std::invalid_argument("spatial order must be in 0..15, got " + std::to_string(order));
        if (!(xmax > xmin) || !(ymax > ymin)) throw std::invalid_argument("spatial box must have positive extent");
    }

    int order() const { return order_; }
    /// (order + 1)(order + 2) / 2.
    int n_terms() const { return (order_ + 1) * (order_ + 2) / 2; }
    static int n_terms(int order) { return (order + 1) * (order + 2) / 2; }
    double xmin() const { return xmin_; }
    double xmax() const { return xmax_; }
    double ymin() const { return ymin_; }
    double ymax() const { return ymax_; }

    double scale_x(double x) const { return (2.0 * x - (xmin_ + xmax_)) / (xmax_ - xmin_); }
    double scale_y(double y) const { return (2.0 * y - (ymin_ + ymax_)) / (ymax_ - ymin_); }

    /// The n_terms() basis values at parent position (x, y), in the order of total degree d = 0..order
    /// and, within a degree, increasing power of y: 1, u, v, u^2, u v, v^2, u^3, ... (u, v scaled x, y).
    void evaluate(double x, double y, double* out) const {
        const double u = scale_x(x), v = scale_y(y);
        double upow[16], vpow[16];
        upow[0] = vpow[0] = 1.0;
        for (int k = 1; k <= order_; ++k) {
            upow[k] = upow[k - 1] * u;
            vpow[k] = vpow[k - 1] * v;
        }
        int t = 0;
        for (int d = 0; d <= order_; ++d)
            for (int j = 0; j <= d; ++j) out[t++] = upow[d - j] * vpow[j];
    }
    std::vector<double> evaluate(double x, double y) const {
        std::vector<double> out(static_cast<std::size_t>(n_terms()));
        evaluate(x, y, out.data());
        return out;
    }

private:
    int order_ = 0;
    double xmin_ = -1.0, xmax_ = 1.0, ymin_ = -1.0, ymax_ = 1.0;
};

}  // namespace visitcal
