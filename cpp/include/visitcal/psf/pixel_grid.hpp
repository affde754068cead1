// The Piff-style pixel-grid PSF (meas_extensions_piff's PiffPsfDeterminer with
// Piff's PixelGrid model; Jarvis et al. 2021): a grid of
// model_size^2 values at sampling_size image pixels per grid step, interpolated onto each star's pixels
// with a Lanczos(n) kernel at the star's sub-pixel position, whose values vary over the detector as a
// 2-D polynomial (SpatialPolynomial, coordinates scaled to [-1, 1]).
//
// The fit is Piff's SimplePSF loop with PixelGrid + BasisPolynomial + Chisq outliers, with two changes
// of method that do not change the model being fitted:
//  * the joint linear system of all stars, whose unknowns are (grid pixels) x (polynomial terms) (3750
//    at order 2, 9375 at order 4), is never formed. Its matrix is sum_i (b_i b_i^T) (x) (F_i^2 A_i^T W_i
//    A_i), with A_i = Ly_i (x) Lx_i the separable Lanczos interpolation of star i. We solve it by
//    preconditioned conjugate gradients: each product costs four 25 x 25 x 25 matrix products per star,
//    and the preconditioner (sum_i s_i b_i b_i^T) (x) mean(Ty) (x) mean(Tx) is a Kronecker product of
//    three small matrices, inverted exactly. Piff forms the dense matrix (2 GB, 20-35 s).
//  * the normalisation (and, with fit_center, the centroid) of the model is imposed as exact linear
//    constraints on every polynomial term, by projecting the conjugate-gradient iterates, rather than by
//    renormalising star by star.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "visitcal/psf/models.hpp"
#include "visitcal/psf/spatial_polynomial.hpp"

namespace visitcal {

/// The fitted model: coefficients c[t][j] (term t, grid pixel j = gy * model_size + gx) with the grid
/// of position (x, y) p_j(x, y) = sum_t c[t][j] basis_t(x, y). Grid pixel (gx, gy) sits at
/// ((gx - origin) * sampling, (gy - origin) * sampling) image pixels from the star's centre, origin =
/// (model_size - 1) / 2. An image pixel at offset (u, v) from the centre has the value of the grid
/// interpolated at (u / sampling + origin, v / sampling + origin) with Lanczos(n) weights (renormalised
/// to unit sum, lanczos.hpp), zero where the grid has no support. Images are divided by the model's flux,
/// sum(grid) * sampling^2, not by their own sum (see PixelGridPsf::draw).
class PixelGridPsf : public Psf {
public:
    PixelGridPsf(std::vector<double> coefficients, int model_size, double sampling_size, int interpolant_order,
                 SpatialPolynomial spatial, int draw_size, std::array<double, 2> average_position);

    PsfImage compute_image(double x, double y) const override;
    PsfImage compute_kernel_image(double x, double y) const override;
    std::array<double, 2> average_position() const override { return average_position_; }

    /// The model_size^2 grid values at (x, y), row-major (gy, gx).
    void grid_at(double x, double y, double* out) const;
    /// Render `grid` onto a (height, width) pixel stamp whose [0][0] pixel sits at offset (u0, v0) px
    /// from the star's centre; `out` row-major. Not normalised.
    void render(const double* grid, double u0, double v0, int width, int height, double* out) const;

    const std::vector<double>& coefficients() const { return coefficients_; }
    int model_size() const { return model_size_; }
    double sampling_size() const { return sampling_size_; }
    int interpolant_order() const { return interpolant_order_; }
    const SpatialPolynomial& spatial() const { return spatial_; }
    int draw_size() const { return draw_size_; }

private:
    PsfImage draw(double x, double y, double u0, double v0, int x0, int y0) const;

    std::vector<double> coefficients_;  // (n_terms, model_size^2)
    int model_size_;
    double sampling_size_;
    int interpolant_order_;
    SpatialPolynomial spatial_;
    int draw_size_;
    std::array<double, 2> average_position_;
};

/// Configuration (defaults after meas_extensions_piff's PiffPsfDeterminerConfig and Piff's SimplePSF).
struct PixelGridControl {
    int model_size = 25;
    double sampling_size = 1.0;
    int interpolant_order = 11;
    int spatial_order = 2;
    bool fit_center = true;
    int stamp_size = 25;                     // pixels of each candidate used (centred on its stamp)
    int draw_size = 25;                      // side of the model's images
    double max_snr = 200.0;                  // per-star S/N cap of the weights
    double outlier_n_sigma = 4.0;
    double outlier_max_remove = 0.05;        // fraction of the used stars removed per iteration at most
    int max_iter = 15;
    int min_iter = 2;
    double chisq_thresh = 0.1;               // converged when old chi2 - chi2 < chisq_thresh * dof
    std::int32_t zero_weight_mask = 0;       // mask bits giving a pixel zero weight
    double minimum_unmasked_fraction = 0.5;
    bool zeroth_order_fallback = false;      // too few stars: order 0 (max_iter 1) instead of failing
    double cg_tolerance = 1e-10;             // relative residual of the conjugate-gradient solves
    double cg_chi2_tolerance = 0.0;          // ... or stop when a step lowers the chi2 by less than this
    int cg_max_iter = 1000;
    // Weight of a smoothness prior on the grid (0: none, Piff's model): smoothness * kappa * the sum
    // of the squared second differences of every term's grid along x and y joins the chi2, kappa the
    // stars' mean weight on one grid value of the constant term. For supersampled grids, whose
    // highest frequencies the pixels barely constrain.
    double smoothness = 0.0;
    // > 0: the polynomial terms above the constant are zero on the grid pixels farther than this (image
    // pixels) from the centre, so only the PSF's core varies over the detector and its wings are the
    // constant term's (0: every term spans the whole grid, Piff's model). The normalisation and centroid
    // constraints of those terms then hold on the core alone.
    double varying_radius = 0.0;
};

/// Per-star outcome.
enum class PixelGridStarStatus : std::uint8_t {
    used = 0,
    reserved = 1,
    outlier = 2,
    too_few_pixels = 3,  // under minimum_unmasked_fraction of the stamp usable
    bad_variance = 4,    // the variance-vs-signal line gives no positive sky variance
    fit_failed = 5,      // the flux (and centre) fit was singular or non-finite
};

struct PixelGridFitResult {
    std::shared_ptr<PixelGridPsf> psf;       // null when `error` is set
    std::vector<std::uint8_t> status;        // PixelGridStarStatus per candidate
    std::vector<double> flux, chi2, x, y;    // final flux, chi2, centre (refitted with fit_center)
    std::vector<std::int64_t> dof;
    std::vector<double> chi2_expected;       // sum of weight x variance over the fitted pixels: the chi2 a
                                             // perfect model would get from noise alone (the overfit check)
    int n_iter = 0;
    bool converged = false;
    int spatial_order = 0;                   // the order fitted (0 after a fall back)
    int n_available = 0;                     // usable, non-reserved stars before the fit
    int n_used = 0;
    double chi2_total = 0.0;                 // sum over used stars
    std::int64_t dof_total = 0;
    int cg_iterations = 0;                   // summed over the solves
    int too_few_n_stars = -1;                // >= 0: too few stars (the count), psf is null
    int too_few_n_required = 0;
};

/// Fit the pixel-grid PSF to m candidate stamps of side `stamp_side` (>= control.stamp_size), stored
/// (m, stamp_side, stamp_side) row-major; xy0 (m, 2) their parent origins; (x, y) the stars' centroids;
/// reserved (m) nonzero for stars kept out of the fit. `box` = [xmin, xmax, ymin, ymax] of the detector.
/// Thread-safe; throws std::invalid_argument on inconsistent arguments.
PixelGridFitResult fit_pixel_grid_psf(const float* image, const std::int32_t* mask, const float* variance, int m,
                                      int stamp_side, const std::int32_t* xy0, const double* x, const double* y,
                                      const std::uint8_t* reserved, std::array<double, 4> box,
                                      const PixelGridControl& control);

/// Inverse survival function of the chi-square distribution: x with P(chi2_dof > x) = p (0 < p < 1).
double chi2_isf(double p, double dof);

}  // namespace visitcal
