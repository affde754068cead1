// base_SdssShape (meas_base): adaptive elliptical Gaussian moments (Bernstein & Jarvis 2002, the
// SDSS photo algorithm), written from the spec and the paper.
//
// Iteration (our reading): start from the weight W = (1.5, 0, 1.5) px^2 at the input centre. Each
// iteration sums, over a box of +-5 sqrt(W_xx), +-5 sqrt(W_yy) (truncation below 1e-9 of a matched
// Gaussian's moments), the image times w = exp(-1/2 r^T W^-1 r); from the weighted centroid offset m
// and the weighted covariance M about it, the object covariance is C = (M^-1 - W^-1)^-1 (for a
// Gaussian object the product of two Gaussians has covariance (C^-1 + W^-1)^-1, so this is exact) and
// the centre moves by 2 m (exact at W = C, as SExtractor's windowed centroid). Then W <- C. It has
// converged when e1 = (xx - yy) / (xx + yy) and e2 = 2 xy / (xx + yy) change by < tol1, the trace by
// a fraction < tol2 and the centre by < 1e-4 px (ours: re-centring needs a stop too). When the weight
// is narrower than 1 px (smallest eigenvalue of W < 1 px^2) it is averaged over 4 x 4 sub-pixels, and
// stays so for the rest of that source's iterations (switching back and forth cycles forever on
// undersampled stars). The weight is evaluated by an overflow-free ratio recurrence along each row.
//
// Reported: the object moments C (= W at convergence), the centre, and inst_flux, the flux of the
// best-fit elliptical Gaussian: F = I0 sqrt(det C / det M) exp(1/2 s^T (C + W)^-1 s) with I0 the
// weighted sum and s the last shift (= 2 I0 at convergence, as LSST's instFlux). Errors: the inverse
// Fisher matrix of (F, xx, yy, xy) for the model F N(r; 0, C) in uniform noise of variance v, v being
// the variance plane averaged with weights w^2 over the box (the noise the estimator sees); for a
// Gaussian object adaptive moments are the maximum-likelihood fit, so this matches their scatter.
//
// Failures (never thrown): a non-positive weighted sum, a non-invertible M or C, a weight grown past
// 100 px, or a centre moved more than max_shift from the input (flag_shift): unweighted moments about
// the input centre over the last box are reported with flag_unweighted, or NaN with
// flag_unweightedBad if they are not a valid covariance (inst_flux and errors NaN in both cases).
// No convergence after max_iter: the last estimate with flag_maxIter. Every failure sets bit 0.
// Pixels that are non-finite (image or variance) or NO_DATA are left out of every sum.
// Thread-safe, no state.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "visitcal/core/image_view.hpp"
#include "visitcal/core/exposure_view.hpp"

namespace visitcal {

/// LSST SdssShapeControl defaults (badMaskPlanes is not used by LSST's algorithm either).
struct SdssShapeControl {
    int max_iter = 100;        // maximum number of iterations
    double tol1 = 1e-5;        // convergence tolerance on e1, e2
    double tol2 = 1e-4;        // convergence tolerance on the size (fractional change of the trace)
    double max_shift = 0.0;    // maximum centre shift (px); <= 0: 2 px (ours; LSST leaves it to the code)
    bool do_measure_psf = true;  // the driver measures the PSF moments (_psf_xx ...) too
};

/// Flag bit i is named kSdssShapeFlagNames[i] (column base_SdssShape_<name>). flag_psf is set by the
/// driver when adaptive_moments of the PSF image fails.
inline constexpr std::array<const char*, 6> kSdssShapeFlagNames = {
    "flag", "flag_unweightedBad", "flag_unweighted", "flag_shift", "flag_maxIter", "flag_psf"};

namespace sdss_shape_flags {
constexpr std::uint32_t FAILURE = 1u << 0;
constexpr std::uint32_t UNWEIGHTED_BAD = 1u << 1;
constexpr std::uint32_t UNWEIGHTED = 1u << 2;
constexpr std::uint32_t SHIFT = 1u << 3;
constexpr std::uint32_t MAXITER = 1u << 4;
constexpr std::uint32_t PSF = 1u << 5;
}  // namespace sdss_shape_flags

struct SdssShapeResult {
    double x = NAN, y = NAN;           // parent frame, px
    double xx = NAN, yy = NAN, xy = NAN;  // px^2
    double xx_err = NAN, yy_err = NAN, xy_err = NAN;
    double inst_flux = NAN, inst_flux_err = NAN;  // image units (counts)
    double inst_flux_xx_cov = NAN, inst_flux_yy_cov = NAN, inst_flux_xy_cov = NAN;
    int n_iter = 0;
    std::uint32_t flags = 0;
};

/// Adaptive moments of the source at (x, y) (parent frame, e.g. slot_Centroid). The pixel sums have an
/// AVX2 build chosen at run time with the same results to the bit; baseline_only forces the portable
/// one (for the tests that compare them).
SdssShapeResult measure_sdss_shape(const ExposureView& ev, double x, double y, const SdssShapeControl& ctrl,
                                   bool baseline_only = false);

/// The same on a bare image (a PSF image: no variance, so the errors are NaN). (x0, y0) is the parent
/// position of image[0][0]; (x, y) the starting centre in that frame. Used by Psf::compute_shape.
SdssShapeResult adaptive_moments(ImageView<const double> image, int x0, int y0, double x, double y,
                                 const SdssShapeControl& ctrl, bool baseline_only = false);

}  // namespace visitcal
