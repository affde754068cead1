// A 2-D Chebyshev series over an integer box: f(x, y) = sum_ij a[j, i] T_i(x') T_j(y'),
// with x' = (2x - (xmin + xmax)) / W over the box's continuous edges (afw's
// ChebyshevBoundedField). Coefficients are a (order_y + 1, order_x + 1) array indexed [j, i];
// a triangular field keeps only terms with i + j <= max(order_x, order_y).
//
// Thread safety: a field is immutable after construction; every const method may be called from
// several threads at once. Nothing here holds global state.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <utility>
#include <vector>

#include "visitcal/core/geom.hpp"

namespace visitcal {

// Mirrored by the pydantic model visitcal.core.chebyshev.ChebyshevBoundedFieldControl (a test checks
// that the defaults agree).
struct ChebyshevBoundedFieldControl {
    int order_x = 2;        // maximum Chebyshev order in x
    int order_y = 2;        // maximum Chebyshev order in y
    bool triangular = true;  // keep only terms with i + j <= max(order_x, order_y)

    void validate() const;
    // Number of free coefficients (6 for the default order-2 triangular field).
    int size() const;
    // The (j, i) = (y order, x order) of each free term, ordered by j then i: the packing of the
    // fit's unknowns and of persisted coefficient lists.
    std::vector<std::pair<int, int>> terms() const;
};

using RowMajorArrayXXd = Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

class ChebyshevBoundedField {
public:
    // coefficients: (order_y + 1, order_x + 1); throws std::invalid_argument on an empty box or
    // non-finite coefficients.
    ChebyshevBoundedField(const Box2I& bbox, RowMajorArrayXXd coefficients);

    // Least-squares fit of z at (x, y) (pixel coordinates of the box's frame). weights, when given,
    // are 1/sigma: each row of the design matrix and of z is multiplied by w, so the fit minimises
    // sum w^2 (z - f)^2. Solved by column-pivoting Householder QR of the packed design matrix
    // (n x size, 8 n size bytes) rather than the normal equations afw uses: the same answer, with
    // the condition number not squared.
    static ChebyshevBoundedField fit(const Box2I& bbox, const double* x, const double* y,
                                     const double* z, const double* weights, std::size_t n,
                                     const ChebyshevBoundedFieldControl& ctrl);

    const Box2I& bbox() const { return bbox_; }
    const RowMajorArrayXXd& coefficients() const { return coefficients_; }
    int order_x() const { return static_cast<int>(coefficients_.cols()) - 1; }
    int order_y() const { return static_cast<int>(coefficients_.rows()) - 1; }

    // Value at one point (Clenshaw recurrence in x for each y order, then in y).
    double evaluate(double x, double y) const;
    // Values at n points.
    void evaluate(const double* x, const double* y, double* out, std::size_t n) const;
    // Values on the separable grid out[r, c] = f(xs[c], ys[r]); out is row-major with row stride
    // out_stride (elements). Cost: (order_x + 1) multiply-adds per output value plus
    // (order_x + 1)(nx + (order_y + 1) ny) to tabulate T_i(x') and T_j(y').
    template <typename T>
    void evaluate_grid(const double* xs, std::size_t nx, const double* ys, std::size_t ny, T* out,
                       std::ptrdiff_t out_stride) const;

    // Mean over the continuous box: the integral of f over the box divided by its area
    // (exact: the mean of T_n over [-1, 1] is 1 / (1 - n^2) for even n and 0 for odd n).
    double mean() const;

    // This field times a constant.
    ChebyshevBoundedField scaled(double factor) const;

private:
    double map_x(double x) const { return (2.0 * x - x_sum_) * inv_width_; }
    double map_y(double y) const { return (2.0 * y - y_sum_) * inv_height_; }

    Box2I bbox_;
    RowMajorArrayXXd coefficients_;
    double x_sum_, y_sum_, inv_width_, inv_height_;
};

// T_0..T_order at the mapped coordinates of n values, written as an (order + 1, n) row-major table.
void chebyshev_table(const double* u, std::size_t n, int order, double* table);

}  // namespace visitcal
