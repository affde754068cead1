// TAN-SIP WCS: the model (FITS SIP convention, Shupe et al. 2005) and its fit to matched pixel/sky pairs
// (meas_astrom's FitTanSipWcsTask and its C++ CreateWcsWithSip).
//
// The model. Pixel (x, y), 0-based, pixel centres at integers; offsets u = x - crpix[0], v = y - crpix[1]
// (crpix 0-based, i.e. FITS CRPIX - 1). Forward:
//     U = u + sum_{p,q} A_pq u^p v^q,   V = v + sum_{p,q} B_pq u^p v^q   (2 <= p + q <= order)
//     (xi, eta) = CD (U, V)      [degrees, the gnomonic "standard coordinates", xi to the east]
//     (ra, dec) = TAN^-1(xi, eta) about crval (degrees; FITS TAN with LONPOLE 180).
// Reverse (approximate, fitted): u = U + sum AP_pq U^p V^q, v = V + sum BP_pq U^p V^q (1 <= p + q <=
// inverse_order), as LSST and astropy allow (the SIP paper also allows the linear terms).
// Coefficient arrays are (order + 1)^2 row-major: A_pq at [p * (order + 1) + q], astropy's sip.a[p, q].
//
// The fit (fit_tan_sip_wcs), all linear least squares:
//  * CRPIX = mean source position; tangent point T = the normalised mean of the reference unit vectors.
//  * Project the references onto the plane tangent at T; fit (xi, eta) as one full polynomial of total
//    order `order` in (u, v) (constant and linear terms included), with u, v scaled by their largest
//    absolute value so that order 4-5 stays well conditioned (raw pixel powers span 1e13), by
//    column-pivoted Householder QR (Eigen), both axes against one factorisation.
//  * The polynomial's value at CRPIX is the tangent point's offset: move T there (deproject it) and
//    refit, num_iter fits in all. After the last fit the (by then ~1e-12 deg) constant that remains is
//    absorbed into CRPIX instead: CRPIX moves to the polynomial's root (Newton) and the polynomial is
//    re-expanded exactly about it (a polynomial translation), so no term of order 0 is left; the linear
//    terms are CD, and CD^-1 times the terms of order >= 2 are A, B. The fitted function is unchanged by
//    this bookkeeping: it is the least-squares polynomial on the final tangent plane.
//  * Rejection (num_rej_iter passes): residuals dx, dy on the tangent plane; a pair is rejected when
//    |dx| > rej_sigma std(dx) or |dy| > rej_sigma std(dy) (std over the pairs still used). Two-sided:
//    FitTanSipWcsTask.rejectMatches tests dx > rej_sigma std, one-sided, so negative outliers survive;
//    we reject both signs. After each pass the whole fit is redone from the start.
//  * Reverse polynomials fitted on a grid of grid_size^2 points spanning the box (the detector), in
//    scaled coordinates, terms 1..inverse_order.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace visitcal {

/// Mirrors the Python FitTanSipWcsConfig (LSST FitTanSipWcsConfig names in snake_case).
struct FitTanSipControl {
    int order = 2;                      ///< SIP order of A, B (terms 2..order); LSST `order`
    int num_iter = 3;                   ///< fits per pass, the tangent point moved after each; LSST `numIter`
    int num_rej_iter = 1;               ///< rejection passes before the final fit; LSST `numRejIter`
    double rej_sigma = 3.0;             ///< rejection threshold in std of the residuals; LSST `rejSigma`
    double max_scatter_arcsec = 10.0;   ///< fail above this median on-sky scatter; LSST `maxScatterArcsec`
    int inverse_order = -1;             ///< order of AP, BP; -1: order + 1
    int grid_size = 0;                  ///< reverse-fit grid points per axis; 0: 10 (inverse_order + 1) in [20, 100]
};

struct TanSipWcs {
    std::array<double, 2> crpix{0.0, 0.0};   ///< 0-based pixel (FITS CRPIX - 1)
    std::array<double, 2> crval{0.0, 0.0};   ///< degrees
    std::array<double, 4> cd{1.0, 0.0, 0.0, 1.0};  ///< CD1_1, CD1_2, CD2_1, CD2_2, degrees per pixel
    int order = 0;                           ///< 0: no forward SIP
    std::vector<double> a, b;                ///< (order + 1)^2 each
    int inverse_order = 0;                   ///< 0: no reverse SIP
    std::vector<double> ap, bp;              ///< (inverse_order + 1)^2 each

    /// Validates sizes; throws std::invalid_argument.
    void check() const;
    /// (xi, eta) in degrees on the plane tangent at crval.
    void pixel_to_intermediate(double x, double y, double& xi, double& eta) const;
    /// (ra, dec) in degrees; ra in [0, 360).
    void pixel_to_sky(double x, double y, double& ra, double& dec) const;
    /// Pixel of (ra, dec) through the reverse polynomials (no iteration; exact only to their fit).
    void sky_to_pixel_reverse(double ra, double dec, double& x, double& y) const;
};

struct FitTanSipResult {
    enum Status : int { ok = 0, too_few = 1, scatter_too_large = 2, degenerate = 3 };
    int status = ok;
    TanSipWcs wcs;
    std::vector<std::uint8_t> used;    ///< entered the final fit (not rejected)
    std::vector<double> dx, dy;        ///< model - reference on the final tangent plane, arcsec (all pairs)
    std::vector<double> separation;    ///< on-sky distance model - reference, arcsec (all pairs)
    double scatter_on_sky = 0.0;       ///< median separation over the used pairs, arcsec
    double rms_arcsec = 0.0;           ///< sqrt(mean(dx^2 + dy^2)) over the used pairs
    int n_used = 0;
    int n_required = 0;                ///< (order + 1)(order + 2) / 2
    int n_fits = 0;                    ///< least-squares solves made
    double reverse_max_error_px = 0.0; ///< max |reverse(forward(p)) - p| over a grid staggered from the fit grid
};

/// Fit a TAN-SIP WCS to n pairs: pixel (x, y) 0-based, reference (ra, dec) degrees, optional weights
/// (nullptr: equal; otherwise > 0). box = (xmin, xmax, ymin, ymax) pixels spanned by the reverse fit.
/// Input validity (finite, n >= n_required) is the caller's job; throws std::invalid_argument on
/// bad control values or non-finite input.
FitTanSipResult fit_tan_sip_wcs(int n, const double* x, const double* y, const double* ra, const double* dec,
                                const double* weights, std::array<double, 4> box, const FitTanSipControl& ctl);

/// Gnomonic projection about (ra0, dec0): (xi, eta) degrees; false when (ra, dec) is >= 90 deg away.
bool gnomonic_project(double ra0, double dec0, double ra, double dec, double& xi, double& eta);

}  // namespace visitcal
