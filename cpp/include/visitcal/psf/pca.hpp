// The PCA PSF determiner (meas_algorithms' pcaPsfDeterminer) and its fitted model.
//
// The model is a Karhunen-Loeve (PCA) basis of K images B_k (n x n, centred on the middle pixel) whose
// amplitudes vary over the detector as polynomials of order `spatial_order` (SpatialPolynomial: monomials
// in coordinates scaled to [-1, 1] over the detector box):
//     kernel(x, y) = sum_k a_k(x, y) B_k,   a_k(x, y) = sum_t C[k, t] f_t(x, y),
// normalised to unit sum. The fit makes B_0 the unit-sum leading eigen-image and B_1.. zero-sum, with
// a_0 = 1 everywhere, so the flux of a star and the shape of the PSF separate (as LSST's KL kernel does).
//
// The fit (fit_pca_psf), one call, no Python, no global state, deterministic (same input, same bytes):
//   1. each candidate is centred on the kernel grid (sub-pixel shift by a Lanczos interpolant of
//      `interpolant_order`, lanczos.hpp) and normalised to unit sum; pixels that are masked
//      (bad_mask_bits), non-finite or have non-positive variance are filled first: with the pixel
//      mirrored through the centre on the first pass, with the current model afterwards;
//   2. the basis: the leading eigen-images of the stack of used stars (eigen-decomposition of the m x m
//      Gram matrix), K reduced when there are fewer stars or fewer non-degenerate components; then (not in
//      LSST) `n_basis_refinements` rounds of steps 3-4 followed by an inverse-variance weighted refit of every
//      basis pixel with the spatial amplitudes held (a weighted rank-K fit; see refine_basis in pca.cpp);
//   3. each star's coefficients by a forward-model weighted least-squares fit of the basis shifted to the
//      star (masked pixels get zero weight instead of being filled);
//   4. one joint pixel-level weighted least-squares fit of the spatial coefficients C[k >= 1, t];
//   5. each star's flux and chi2 against the model (reserved stars included), then rejection of used stars
//      whose chi2 / dof exceeds `reduced_chi2_for_psf_candidates` or whose coefficients deviate from the
//      spatial fit by more than `spatial_reject` sigma; back to 1, at most `n_iter_for_psf` fits.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "visitcal/core/mask.hpp"
#include "visitcal/psf/models.hpp"
#include "visitcal/psf/spatial_polynomial.hpp"

namespace visitcal {

/// A PCA PSF: K basis images with spatially varying amplitudes (see the file comment).
class PcaPsf : public Psf {
public:
    /// `basis` is (K, size, size) row-major, `coefficients` (K, poly.n_terms()) row-major; size odd.
    /// Stored as given (no renormalisation), so a persisted model reproduces the same images bit for bit.
    /// Throws std::invalid_argument on inconsistent sizes, non-finite values or interpolant_order < 1.
    PcaPsf(std::vector<double> basis, int n_components, int size, std::vector<double> coefficients,
           SpatialPolynomial spatial, std::array<double, 2> average_position, int interpolant_order);

    /// sum_k a_k(x, y) B_k normalised to unit sum, centred on the middle pixel (x0 = y0 = -size / 2).
    PsfImage compute_kernel_image(double x, double y) const override;
    /// The kernel image shifted by (x - floor(x + 0.5), y - floor(y + 0.5)) with the Lanczos interpolant of
    /// interpolant_order, on the stamp centred on pixel floor(x + 0.5), floor(y + 0.5); unit sum.
    PsfImage compute_image(double x, double y) const override;
    std::array<double, 2> average_position() const override { return average_position_; }

    int size() const { return size_; }
    int n_components() const { return n_components_; }
    int interpolant_order() const { return interpolant_order_; }
    const std::vector<double>& basis() const { return basis_; }
    const std::vector<double>& coefficients() const { return coefficients_; }
    const SpatialPolynomial& spatial() const { return spatial_; }

private:
    std::vector<double> basis_;
    int n_components_;
    int size_;
    std::vector<double> coefficients_;
    SpatialPolynomial spatial_;
    std::array<double, 2> average_position_;
    int interpolant_order_;
};

/// Configuration of fit_pca_psf (mirrored by visitcal.psf.pca.PcaPsfDeterminerConfig; LSST defaults).
struct PcaPsfControl {
    int n_eigen_components = 4;      // basis images K (reduced automatically)
    double component_noise_threshold = 0.0;  // > 0: keep components whose eigenvalue exceeds this x the noise edge
    int spatial_order = 2;           // order of the amplitude polynomials
    int kernel_size = 25;            // model stamp side n, odd, <= candidate stamp side
    int n_iter_for_psf = 3;          // at most this many fits (rejection between them)
    int n_basis_refinements = 3;     // not LSST: weighted refits of the basis with the spatial amplitudes held
    double reduced_chi2_for_psf_candidates = 2.0;
    double spatial_reject = 3.0;     // sigma
    bool constant_weight = true;     // every star weighs the same in the KL basis (else S/N^2); fits: 1/var
    double lam = 0.05;               // fractional model-error floor: var_eff = var + (lam * model)^2
    double tolerance = 1e-2;         // stop early: no rejection and relative change of chi2 below it
    std::int32_t bad_mask_bits = mask_bits::BAD | mask_bits::CR | mask_bits::INTRP | mask_bits::SAT |
                                 mask_bits::SUSPECT | mask_bits::NO_DATA;
    int interpolant_order = 11;      // Lanczos order of every sub-pixel shift
    bool zeroth_order_interp_not_enough_stars = false;
    double min_unmasked_fraction = 0.5;  // of the n x n pixels around the star
};

/// Per-candidate outcome codes (their names are in pca_status_names()).
enum class PcaStatus : std::uint8_t { used = 0, reserved, outlier, too_few_pixels, bad_flux, bad_centroid };
std::vector<std::string> pca_status_names();

/// The candidates: `n` stamps (stamp_size x stamp_size, contiguous), parent origin xy0 (n, 2) of each
/// stamp's [0, 0] pixel, the star centroids x, y (parent pixels) and an optional reserved flag per star.
struct PcaPsfCandidates {
    const float* image = nullptr;
    const std::int32_t* mask = nullptr;
    const float* variance = nullptr;
    int n = 0;
    int stamp_size = 0;
    const std::int32_t* xy0 = nullptr;
    const double* x = nullptr;
    const double* y = nullptr;
    const std::uint8_t* reserved = nullptr;  // may be null: nothing reserved
};

struct PcaPsfFit {
    std::shared_ptr<PcaPsf> psf;  // null when too_few_stars
    bool too_few_stars = false;
    int n_stars = 0;              // usable non-reserved stars left (for the too-few error)
    int n_required = 0;           // spatial terms needed
    std::vector<std::uint8_t> status;  // PcaStatus per candidate
    std::vector<double> flux;          // NaN when not fitted
    std::vector<double> chi2;          // NaN when not fitted
    std::vector<std::int64_t> dof;     // 0 when not fitted
    std::vector<double> chi2_expected; // sum of var / (var + (lam F m)^2): the chi2 of pure noise (NaN: not fitted)
    int n_available = 0;               // non-reserved candidates
    int n_good = 0;                    // used in the final fit
    int n_iter = 0;                    // fits made
    int spatial_order = 0;             // order actually fitted (0 after the fallback)
    int n_components = 0;              // K actually fitted
    double spatial_fit_chi2 = 0.0;     // sum of the used stars' chi2 under the final model
    double avg_x = 0.0, avg_y = 0.0;   // mean position of the used stars
};

/// Fit a PcaPsf to the candidates; the spatial polynomial is scaled over [xmin, xmax] x [ymin, ymax]
/// (the detector's continuous box). Throws std::invalid_argument on a bad control or kernel_size larger
/// than the stamps. Thread-safe (no shared state).
PcaPsfFit fit_pca_psf(const PcaPsfCandidates& candidates, const PcaPsfControl& control, double xmin, double xmax,
                      double ymin, double ymax);

}  // namespace visitcal
