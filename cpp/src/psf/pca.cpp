// The PCA PSF determiner and PcaPsf (header: visitcal/psf/pca.hpp).
#include "visitcal/psf/pca.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "visitcal/psf/lanczos.hpp"

namespace visitcal {

// --- PcaPsf ----------------------------------------------------------------------------------------
PcaPsf::PcaPsf(std::vector<double> basis, int n_components, int size, std::vector<double> coefficients,
               SpatialPolynomial spatial, std::array<double, 2> average_position, int interpolant_order)
    : basis_(std::move(basis)),
      n_components_(n_components),
      size_(size),
      coefficients_(std::move(coefficients)),
      spatial_(spatial),
      average_position_(average_position),
      interpolant_order_(interpolant_order) {
    if (size < 1 || size % 2 == 0) throw std::invalid_argument("PcaPsf basis images must be square with an odd size");
    if (n_components < 1) throw std::invalid_argument("PcaPsf needs at least one basis image");
    if (basis_.size() != static_cast<std::size_t>(n_components) * size * size)
        throw std::invalid_argument("PcaPsf basis must have n_components * size * size elements");
    if (coefficients_.size() != static_cast<std::size_t>(n_components) * spatial_.n_terms())
        throw std::invalid_argument("PcaPsf coefficients must have n_components * n_terms elements");
    if (interpolant_order < 1) throw std::invalid_argument("PcaPsf interpolant_order must be >= 1");
    for (double v : basis_)
        if (!std::isfinite(v)) throw std::invalid_argument("PcaPsf basis has non-finite values");
    for (double v : coefficients_)
        if (!std::isfinite(v)) throw std::invalid_argument("PcaPsf coefficients have non-finite values");
}

PsfImage PcaPsf::compute_kernel_image(double x, double y) const {
    const int h = size_ / 2;
    const int n_terms = spatial_.n_terms();
    const std::size_t npix = static_cast<std::size_t>(size_) * size_;
    double f[136];  // n_terms <= 136 for order <= 15
    spatial_.evaluate(x, y, f);
    PsfImage img(size_, size_, -h, -h);
    for (int k = 0; k < n_components_; ++k) {
        double a = 0.0;
        for (int t = 0; t < n_terms; ++t) a += coefficients_[static_cast<std::size_t>(k) * n_terms + t] * f[t];
        const double* b = basis_.data() + k * npix;
        for (std::size_t p = 0; p < npix; ++p) img.data[p] += a * b[p];
    }
    double sum = 0.0;
    for (double v : img.data) sum += v;
    if (!(std::fabs(sum) > 0.0)) throw std::runtime_error("PcaPsf kernel has zero sum at this position");
    const double inv = 1.0 / sum;
    for (double& v : img.data) v *= inv;
    return img;
}

PsfImage PcaPsf::compute_image(double x, double y) const {
    const PsfImage k = compute_kernel_image(x, y);
    const int h = size_ / 2;
    PsfImage img(size_, size_, position_to_index(x) - h, position_to_index(y) - h);
    const double dx = x - position_to_index(x), dy = y - position_to_index(y);
    if (dx == 0.0 && dy == 0.0) {
        img.data = k.data;
        return img;
    }
    shift_image_lanczos(k.data.data(), size_, size_, dx, dy, interpolant_order_, img.data.data());
    // Unit sum over the stamp, as computeImage promises (the shift moves a little light off the edge).
    double sum = 0.0;
    for (double v : img.data) sum += v;
    const double inv = 1.0 / sum;
    for (double& v : img.data) v *= inv;
    return img;
}

std::vector<std::string> pca_status_names() {
    return {"used", "reserved", "outlier", "too_few_pixels", "bad_flux", "bad_centroid"};
}

// --- the determiner --------------------------------------------------------------------------------
namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

struct Star {
    int index = 0;
    bool reserved = false;
    bool fittable = false;  // has a kernel-sized crop with enough good pixels and positive flux
    bool has_bad = false;   // some stamp pixel is bad (filled before centring)
    PcaStatus status = PcaStatus::used;
    double x = 0.0, y = 0.0;
    double dx = 0.0, dy = 0.0;  // centroid minus centre pixel, in [-0.5, 0.5)
    int cx = 0, cy = 0;         // centre pixel in stamp indices
    std::vector<double> crop_d, crop_var;  // n x n around the centre pixel
    std::vector<char> crop_good;
    int n_good = 0;
    double flux0 = 0.0;  // sum of the good crop pixels
    double snr2 = 0.0;   // flux0^2 / sum of their variances
    // Per fit:
    double coef_flux = 0.0;       // flux of the per-star basis fit (c_0)
    std::vector<double> a;        // its normalised amplitudes a_1..a_{K-1}
    std::vector<double> a_var;    // and their variances
    std::vector<double> model;    // unit-sum model on the crop grid (PcaPsf::compute_image)
    double flux = NAN, chi2 = NAN, chi2_expected = NAN;
    std::int64_t dof = 0;
};

// Pseudo-inverse solve of a symmetric positive semi-definite system: eigenvalues below 1e-12 of the
// largest are dropped, so star positions on a line (degenerate terms) give the minimum-norm solution.
VectorXd solve_symmetric(const MatrixXd& a, const VectorXd& b) {
    Eigen::SelfAdjointEigenSolver<MatrixXd> es(a);
    const VectorXd& ev = es.eigenvalues();
    const double cut = 1e-12 * std::max(ev.maxCoeff(), 0.0);
    VectorXd proj = es.eigenvectors().transpose() * b;
    for (int i = 0; i < proj.size(); ++i) proj[i] = ev[i] > cut && ev[i] > 0.0 ? proj[i] / ev[i] : 0.0;
    return es.eigenvectors() * proj;
}

MatrixXd pinv_symmetric(const MatrixXd& a) {
    Eigen::SelfAdjointEigenSolver<MatrixXd> es(a);
    const VectorXd& ev = es.eigenvalues();
    const double cut = 1e-12 * std::max(ev.maxCoeff(), 0.0);
    VectorXd inv(ev.size());
    for (int i = 0; i < ev.size(); ++i) inv[i] = ev[i] > cut && ev[i] > 0.0 ? 1.0 / ev[i] : 0.0;
    return es.eigenvectors() * inv.asDiagonal() * es.eigenvectors().transpose();
}

// Deterministic sign of an eigen-image: the first pixel (row-major) within 1e-9 of the largest magnitude
// is made positive, so near-ties (symmetric images) do not flip on rounding noise.
void fix_sign(double* v, std::size_t n) {
    double amax = 0.0;
    for (std::size_t p = 0; p < n; ++p) amax = std::max(amax, std::fabs(v[p]));
    for (std::size_t p = 0; p < n; ++p) {
        if (std::fabs(v[p]) >= (1.0 - 1e-9) * amax) {
            if (v[p] < 0.0)
                for (std::size_t q = 0; q < n; ++q) v[q] = -v[q];
            return;
        }
    }
}

double median_inplace(std::vector<double>& v) {
    if (v.empty()) return 0.0;
    const std::size_t mid = v.size() / 2;
    std::nth_element(v.begin(), v.begin() + mid, v.end());
    double m = v[mid];
    if (v.size() % 2 == 0) {
        const double lo = *std::max_element(v.begin(), v.begin() + mid);
        m = 0.5 * (m + lo);
    }
    return m;
}

class PcaFitter {
public:
    PcaFitter(const PcaPsfCandidates& c, const PcaPsfControl& ctl, double xmin, double xmax, double ymin, double ymax)
        : c_(c), ctl_(ctl), n_(ctl.kernel_size), h_(ctl.kernel_size / 2), S_(c.stamp_size),
          xmin_(xmin), xmax_(xmax), ymin_(ymin), ymax_(ymax) {}

    PcaPsfFit run();

private:
    void prepare();
    std::vector<double> centred_star(const Star& s, bool use_model, double* sum_out = nullptr) const;
    const std::vector<double>& centred(const Star& s, bool use_model, double* sum_out = nullptr);
    std::vector<double> build_basis(const std::vector<Star*>& used, bool use_model);
    void refine_basis(const std::vector<Star*>& used, const std::vector<double>& coefficients,
                      const SpatialPolynomial& poly, bool use_model);
    std::vector<double> shifted_basis(const Star& s) const;
    void fit_star_coefficients(Star& s, const std::vector<double>& pk) const;
    std::vector<double> fit_spatial(const std::vector<Star*>& used, const std::vector<std::vector<double>>& pks,
                                    const SpatialPolynomial& poly) const;
    void evaluate_star(Star& s, const PcaPsf& psf) const;
    std::shared_ptr<PcaPsf> fit_once(std::vector<Star*>& used, bool use_model, int order);

    const PcaPsfCandidates& c_;
    const PcaPsfControl& ctl_;
    int n_, h_, S_;
    double xmin_, xmax_, ymin_, ymax_;
    int K_ = 0;                  // basis images of the current fit
    std::vector<double> basis_;  // (K, n, n)
    std::vector<Star> stars_;
    // Per fit_once: each star's centred image and its sum (computed once; the fill of its bad pixels uses the
    // previous fit's model, which does not change within a fit).
    std::vector<std::vector<double>> centred_cache_;
    std::vector<double> centred_sum_;
};

void PcaFitter::prepare() {
    const std::size_t S2 = static_cast<std::size_t>(S_) * S_;
    const int n2 = n_ * n_;
    stars_.resize(c_.n);
    for (int i = 0; i < c_.n; ++i) {
        Star& s = stars_[i];
        s.index = i;
        s.reserved = c_.reserved != nullptr && c_.reserved[i] != 0;
        s.x = c_.x[i];
        s.y = c_.y[i];
        s.status = s.reserved ? PcaStatus::reserved : PcaStatus::used;
        if (!std::isfinite(s.x) || !std::isfinite(s.y)) {
            if (!s.reserved) s.status = PcaStatus::bad_centroid;
            continue;
        }
        const int ix = position_to_index(s.x), iy = position_to_index(s.y);
        s.dx = s.x - ix;
        s.dy = s.y - iy;
        s.cx = ix - c_.xy0[2 * i];
        s.cy = iy - c_.xy0[2 * i + 1];
        if (s.cx - h_ < 0 || s.cx + h_ >= S_ || s.cy - h_ < 0 || s.cy + h_ >= S_) {
            if (!s.reserved) s.status = PcaStatus::bad_centroid;
            continue;
        }
        const float* im = c_.image + i * S2;
        const std::int32_t* mk = c_.mask + i * S2;
        const float* va = c_.variance + i * S2;
        s.crop_d.assign(n2, 0.0);
        s.crop_var.assign(n2, 0.0);
        s.crop_good.assign(n2, 0);
        double sv = 0.0;
        for (int r = 0; r < n_; ++r) {
            for (int q = 0; q < n_; ++q) {
                const std::size_t sp = static_cast<std::size_t>(s.cy - h_ + r) * S_ + (s.cx - h_ + q);
                const std::size_t cp = static_cast<std::size_t>(r) * n_ + q;
                const double d = im[sp], v = va[sp];
                const bool good = std::isfinite(d) && std::isfinite(v) && v > 0.0 && (mk[sp] & ctl_.bad_mask_bits) == 0;
                s.crop_good[cp] = good;
                if (good) {
                    s.crop_d[cp] = d;
                    s.crop_var[cp] = v;
                    ++s.n_good;
                    s.flux0 += d;
                    sv += v;
                }
            }
        }
        for (std::size_t sp = 0; sp < S2 && !s.has_bad; ++sp)
            s.has_bad = !(std::isfinite(im[sp]) && std::isfinite(va[sp]) && va[sp] > 0.0 &&
                          (mk[sp] & ctl_.bad_mask_bits) == 0);
        if (s.n_good < ctl_.min_unmasked_fraction * n2 || s.n_good < 2) {
            if (!s.reserved) s.status = PcaStatus::too_few_pixels;
            continue;
        }
        if (!(s.flux0 > 0.0)) {
            if (!s.reserved) s.status = PcaStatus::bad_flux;
            continue;
        }
        s.snr2 = s.flux0 * s.flux0 / sv;
        s.fittable = true;
    }
}

// The star centred on the kernel grid (light moved from (cx + dx, cy + dy) to the middle pixel) and
// normalised to unit sum. Bad pixels are filled first so the Lanczos taps do not spread garbage: with
// the current model times the star's flux when there is one (inside the crop), else with the pixel
// mirrored through the centre pixel (PSFs are nearly symmetric), else zero.
std::vector<double> PcaFitter::centred_star(const Star& s, bool use_model, double* sum_out) const {
    const std::size_t S2 = static_cast<std::size_t>(S_) * S_;
    const float* im = c_.image + s.index * S2;
    const std::int32_t* mk = c_.mask + s.index * S2;
    const float* va = c_.variance + s.index * S2;
    auto good_at = [&](int r, int q) {
        const std::size_t sp = static_cast<std::size_t>(r) * S_ + q;
        const double d = im[sp], v = va[sp];
        return std::isfinite(d) && std::isfinite(v) && v > 0.0 && (mk[sp] & ctl_.bad_mask_bits) == 0;
    };
    std::vector<double> stamp(S2);
    for (int r = 0; r < S_; ++r) {
        for (int q = 0; q < S_; ++q) {
            const std::size_t sp = static_cast<std::size_t>(r) * S_ + q;
            if (good_at(r, q)) {
                stamp[sp] = im[sp];
                continue;
            }
            const int cr = r - (s.cy - h_), cq = q - (s.cx - h_);
            if (use_model && !s.model.empty() && std::isfinite(s.flux) && cr >= 0 && cr < n_ && cq >= 0 && cq < n_) {
                stamp[sp] = s.flux * s.model[static_cast<std::size_t>(cr) * n_ + cq];
                continue;
            }
            const int mr = 2 * s.cy - r, mq = 2 * s.cx - q;
            stamp[sp] = (mr >= 0 && mr < S_ && mq >= 0 && mq < S_ && good_at(mr, mq)) ? static_cast<double>(im[static_cast<std::size_t>(mr) * S_ + mq]) : 0.0;
        }
    }
    std::vector<double> shifted(S2);
    shift_image_lanczos(stamp.data(), S_, S_, -s.dx, -s.dy, ctl_.interpolant_order, shifted.data());
    std::vector<double> out(static_cast<std::size_t>(n_) * n_);
    double sum = 0.0;
    for (int r = 0; r < n_; ++r)
        for (int q = 0; q < n_; ++q) {
            const double v = shifted[static_cast<std::size_t>(s.cy - h_ + r) * S_ + (s.cx - h_ + q)];
            out[static_cast<std::size_t>(r) * n_ + q] = v;
            sum += v;
        }
    if (sum_out != nullptr) *sum_out = sum;
    if (sum > 0.0)
        for (double& v : out) v /= sum;
    return out;
}

const std::vector<double>& PcaFitter::centred(const Star& s, bool use_model, double* sum_out) {
    if (centred_cache_.size() != stars_.size()) {
        centred_cache_.assign(stars_.size(), {});
        centred_sum_.assign(stars_.size(), 0.0);
    }
    std::vector<double>& c = centred_cache_[s.index];
    if (c.empty()) c = centred_star(s, use_model, &centred_sum_[s.index]);
    if (sum_out != nullptr) *sum_out = centred_sum_[s.index];
    return c;
}

// KL basis of the used stars: eigen-decomposition of the m x m Gram matrix of the centred, normalised
// stars (cheaper than the n^2 x n^2 pixel covariance for m < n^2 = 625; 300 stars: ~10 ms). Not
// mean-subtracted, so the leading eigen-image is the mean PSF; it becomes B_0 (unit sum) and the others are
// made zero-sum by subtracting their sum times B_0, so kernel sums are a_0 = 1 at every position.
std::vector<double> PcaFitter::build_basis(const std::vector<Star*>& used, bool use_model) {
    const int n2 = n_ * n_;
    const int m = static_cast<int>(used.size());
    MatrixXd D(n2, m);
    double noise_sum = 0.0, noise_max = 0.0;
    for (int j = 0; j < m; ++j) {
        const Star& s = *used[j];
        const std::vector<double>& cs = centred(s, use_model);
        // constant_weight: every star counts the same; else by its S/N^2 (inverse variance of its
        // normalised image), relative to the first star so the scale is O(1).
        const double w2 = ctl_.constant_weight ? 1.0 : s.snr2 / used[0]->snr2;
        const double w = std::sqrt(w2);
        for (int p = 0; p < n2; ++p) D(p, j) = cs[p] * w;
        // Expected noise energy of this column: sum of its pixel variances over flux0^2 (bad pixels are
        // filled, so counted at the mean variance).
        double sv = 0.0;
        for (int p = 0; p < n2; ++p) sv += s.crop_var[p];
        const double noise = w2 * sv * n2 / s.n_good / (s.flux0 * s.flux0);
        noise_sum += noise;
        noise_max = std::max(noise_max, noise);
    }
    const MatrixXd G = D.transpose() * D;
    Eigen::SelfAdjointEigenSolver<MatrixXd> es(G);
    const VectorXd& ev = es.eigenvalues();  // ascending
    const double lmax = ev[m - 1];
    // Components beyond the first are kept only above the noise: rounding noise (an exactly constant PSF
    // has rank 1) and the largest eigenvalue pure pixel noise would give. For white noise of column
    // energies e_s we take (sqrt(max_s e_s) + sqrt(sum_s e_s / n^2))^2: the Marchenko-Pastur edge
    // e (1 + sqrt(m / n^2))^2 when all e_s are equal, the noisiest star's energy when it dominates.
    // Eigen-images below it are mostly the noise of a few faint stars, which would then fit their own
    // noise and be rejected by the spatial test.
    const double noise_edge = std::pow(std::sqrt(noise_max) + std::sqrt(noise_sum / n2), 2);
    int K = std::min(ctl_.n_eigen_components, m);
    int keep = 1;
    for (int j = m - 2; j >= 0 && keep < K; --j) {
        if (ev[j] > 1e-14 * lmax && ev[j] > ctl_.component_noise_threshold * noise_edge) ++keep;
        else break;
    }
    K = keep;
    std::vector<double> basis(static_cast<std::size_t>(K) * n2);
    for (int k = 0; k < K; ++k) {
        VectorXd u = D * es.eigenvectors().col(m - 1 - k) / std::sqrt(ev[m - 1 - k]);
        std::copy(u.data(), u.data() + n2, basis.begin() + static_cast<std::ptrdiff_t>(k) * n2);
    }
    double* b0 = basis.data();
    double s0 = 0.0;
    for (int p = 0; p < n2; ++p) s0 += b0[p];
    for (int p = 0; p < n2; ++p) b0[p] /= s0;
    for (int k = 1; k < K; ++k) {
        double* bk = basis.data() + static_cast<std::size_t>(k) * n2;
        double sk = 0.0;
        for (int p = 0; p < n2; ++p) sk += bk[p];
        double norm = 0.0;
        for (int p = 0; p < n2; ++p) {
            bk[p] -= sk * b0[p];
            norm += bk[p] * bk[p];
        }
        norm = std::sqrt(norm);
        for (int p = 0; p < n2; ++p) bk[p] /= norm;
        fix_sign(bk, n2);
    }
    K_ = K;
    return basis;
}

// Refinement of the basis (not in LSST): the KL eigen-images are those of the stars' normalised images, each
// star counting the same (constant_weight) or by its S/N^2, so every faint star's pixel noise is in them; with
// LSST's 4 components on 270 simulated stars that noise, multiplied by the amplitudes, made the reserved stars'
// size error 0.5% rms (1.5% worst) where the pixel grid, which weights every pixel by its inverse variance,
// had 0.08%. Here, with the spatial amplitudes a_k(x_s) of the current fit held, each basis pixel is refitted
// by inverse-variance weighted least squares over the used stars,
//     minimise sum_s w_sp (u_sp - F_s sum_k a_k(x_s) B_k(p))^2,   w_sp = 1 / var_sp,
// (u_s: the star centred on the kernel grid, F_s its basis-fit flux; masked pixels have zero weight): one
// K x K solve per pixel. Alternated with the spatial fit, this is a weighted rank-K fit of the data whose
// spatial dependence is the polynomials': the span of the basis follows the signal, the noise of each star
// enters with its own weight. B_0 is then renormalised to unit sum, the others made zero-sum and
// orthonormal (the spatial fit that follows re-expresses the same model in them); a component left without
// support (norm below 1e-9 of B_0's) is dropped.
void PcaFitter::refine_basis(const std::vector<Star*>& used, const std::vector<double>& coefficients,
                             const SpatialPolynomial& poly, bool use_model) {
    const int n2 = n_ * n_;
    const int K = K_;
    const int T = poly.n_terms();
    std::vector<double> A(static_cast<std::size_t>(n2) * K * K, 0.0), rhs(static_cast<std::size_t>(n2) * K, 0.0);
    std::vector<double> f(T), a(K);
    for (const Star* sp : used) {
        const Star& s = *sp;
        double sum = 0.0;
        const std::vector<double>& cs = centred(s, use_model, &sum);
        if (!(sum > 0.0)) continue;
        poly.evaluate(s.x, s.y, f.data());
        for (int k = 0; k < K; ++k) {
            double v = 0.0;
            for (int t = 0; t < T; ++t) v += coefficients[static_cast<std::size_t>(k) * T + t] * f[t];
            a[k] = v;
        }
        const double F = s.coef_flux;
        for (int p = 0; p < n2; ++p) {
            if (!s.crop_good[p]) continue;
            const double w = 1.0 / s.crop_var[p];
            const double u = cs[p] * sum;
            double* Ap = A.data() + static_cast<std::size_t>(p) * K * K;
            double* bp = rhs.data() + static_cast<std::size_t>(p) * K;
            for (int k = 0; k < K; ++k) {
                bp[k] += w * F * a[k] * u;
                for (int l = 0; l <= k; ++l) Ap[k * K + l] += w * F * F * a[k] * a[l];
            }
        }
    }
    std::vector<double> basis(basis_.size(), 0.0);
    for (int p = 0; p < n2; ++p) {
        MatrixXd Ap(K, K);
        VectorXd bp(K);
        for (int k = 0; k < K; ++k) {
            bp[k] = rhs[static_cast<std::size_t>(p) * K + k];
            for (int l = 0; l <= k; ++l) Ap(k, l) = Ap(l, k) = A[static_cast<std::size_t>(p) * K * K + k * K + l];
        }
        if (!(Ap(0, 0) > 0.0)) {  // no star has a good pixel here: keep the current basis
            for (int k = 0; k < K; ++k)
                basis[static_cast<std::size_t>(k) * n2 + p] = basis_[static_cast<std::size_t>(k) * n2 + p];
            continue;
        }
        const VectorXd sol = solve_symmetric(Ap, bp);
        for (int k = 0; k < K; ++k) basis[static_cast<std::size_t>(k) * n2 + p] = sol[k];
    }
    double s0 = 0.0;
    for (int p = 0; p < n2; ++p) s0 += basis[p];
    if (!(s0 > 0.0)) return;  // degenerate: keep the KL basis
    double n0 = 0.0;
    for (int p = 0; p < n2; ++p) {
        basis[p] /= s0;
        n0 += basis[p] * basis[p];
    }
    n0 = std::sqrt(n0);
    std::vector<double> out(basis.begin(), basis.begin() + n2);
    int kept = 1;
    for (int k = 1; k < K; ++k) {
        std::vector<double> bk(basis.begin() + static_cast<std::ptrdiff_t>(k) * n2,
                               basis.begin() + static_cast<std::ptrdiff_t>(k + 1) * n2);
        double sk = 0.0;
        for (int p = 0; p < n2; ++p) sk += bk[p];
        for (int p = 0; p < n2; ++p) bk[p] -= sk * basis[p];
        for (int j = 1; j < kept; ++j) {  // Gram-Schmidt against the zero-sum images kept so far
            const double* bj = out.data() + static_cast<std::size_t>(j) * n2;
            double d = 0.0;
            for (int p = 0; p < n2; ++p) d += bk[p] * bj[p];
            for (int p = 0; p < n2; ++p) bk[p] -= d * bj[p];
        }
        double norm = 0.0;
        for (int p = 0; p < n2; ++p) norm += bk[p] * bk[p];
        norm = std::sqrt(norm);
        if (!(norm > 1e-9 * n0)) continue;
        for (int p = 0; p < n2; ++p) bk[p] /= norm;
        fix_sign(bk.data(), n2);
        out.insert(out.end(), bk.begin(), bk.end());
        ++kept;
    }
    basis_.swap(out);
    K_ = kept;
}

// fit_star_coefficients' sums over the star's good pixels (in pixel order), into the lower triangles of A and B
// and into b; v[p] = var on good pixels. KF > 0 fixes the number of components at compile time (the sums then
// live in registers: LSST's default of four); KF = 0 takes it at run time. The same terms in the same order
// either way, so the same bits.
template <int KF>
void accumulate_normal_equations(const Star& s, const std::vector<double>& pk, int n2, int k_run, std::vector<double>& v,
                                 MatrixXd& A, MatrixXd& B, VectorXd& b) {
    const int K = KF > 0 ? KF : k_run;
    constexpr int kFixed = KF > 0 ? KF : 1;
    double a_fixed[kFixed * kFixed] = {}, bb_fixed[kFixed * kFixed] = {}, r_fixed[kFixed] = {};
    std::vector<double> a_run(KF > 0 ? 0 : static_cast<std::size_t>(K) * K), bb_run(a_run.size()),
        r_run(KF > 0 ? 0 : static_cast<std::size_t>(K));
    double* a = KF > 0 ? a_fixed : a_run.data();
    double* bb = KF > 0 ? bb_fixed : bb_run.data();
    double* r = KF > 0 ? r_fixed : r_run.data();
    const double* pk_fixed[kFixed];
    std::vector<const double*> pk_run(KF > 0 ? 0 : static_cast<std::size_t>(K));
    const double** pkk = KF > 0 ? pk_fixed : pk_run.data();
    for (int k = 0; k < K; ++k) pkk[k] = pk.data() + static_cast<std::size_t>(k) * n2;
    for (int p = 0; p < n2; ++p) {
        if (!s.crop_good[p]) continue;
        v[p] = s.crop_var[p];
        const double w = 1.0 / v[p];
        for (int k = 0; k < K; ++k) {
            const double pkp = pkk[k][p];
            r[k] += w * pkp * s.crop_d[p];
            for (int l = 0; l <= k; ++l) {
                const double pl = pkk[l][p];
                a[k * K + l] += w * pkp * pl;
                bb[k * K + l] += w * w * v[p] * pkp * pl;
            }
        }
    }
    for (int k = 0; k < K; ++k) {
        b[k] = r[k];
        for (int l = 0; l <= k; ++l) {
            A(k, l) = a[k * K + l];
            B(k, l) = bb[k * K + l];
        }
    }
}

// The K basis images moved to the star's sub-pixel position on its crop grid.
std::vector<double> PcaFitter::shifted_basis(const Star& s) const {
    const std::size_t n2 = static_cast<std::size_t>(n_) * n_;
    std::vector<double> pk(K_ * n2);
    // one star's shift for every basis image: its weights (their sines) computed once
    const LanczosShiftWeights weights = lanczos_shift_weights(s.dx, s.dy, ctl_.interpolant_order);
    for (int k = 0; k < K_; ++k) shift_image_lanczos(basis_.data() + k * n2, n_, n_, weights, pk.data() + k * n2);
    return pk;
}

// The star's own amplitudes: data ~ sum_k c_k P_k over its good pixels, flux = c_0 (P_0 sums to ~1, the
// others to ~0), a_k = c_k / c_0. The pixels are weighted exactly as in the spatial fit (1 / v, v = var), so
// where the basis cannot represent the star
// exactly, the star's own amplitudes and the spatial fit's still estimate the same thing and only noise
// separates them. Their variances come from the sandwich A^-1 (sum w^2 v P P^T) A^-1 / c_0^2, scaled by
// the fit's reduced chi2 when it exceeds 1.
void PcaFitter::fit_star_coefficients(Star& s, const std::vector<double>& pk) const {
    const int n2 = n_ * n_;
    MatrixXd A = MatrixXd::Zero(K_, K_), B = MatrixXd::Zero(K_, K_);
    VectorXd b = VectorXd::Zero(K_);
    std::vector<double> v(n2, 0.0);
    if (K_ == 4) {
        accumulate_normal_equations<4>(s, pk, n2, K_, v, A, B, b);
    } else {
        accumulate_normal_equations<0>(s, pk, n2, K_, v, A, B, b);
    }
    for (int k = 0; k < K_; ++k)
        for (int l = k + 1; l < K_; ++l) {
            A(k, l) = A(l, k);
            B(k, l) = B(l, k);
        }
    const MatrixXd Ai = pinv_symmetric(A);
    const VectorXd cvec = Ai * b;
    s.coef_flux = cvec[0];
    s.a.assign(K_ - 1, 0.0);
    s.a_var.assign(K_ - 1, INFINITY);
    if (!(s.coef_flux > 0.0)) return;
    double chi2 = 0.0;
    for (int p = 0; p < n2; ++p) {
        if (!s.crop_good[p]) continue;
        double m = 0.0;
        for (int k = 0; k < K_; ++k) m += cvec[k] * pk[static_cast<std::size_t>(k) * n2 + p];
        chi2 += (s.crop_d[p] - m) * (s.crop_d[p] - m) / v[p];
    }
    const double red = std::max(1.0, chi2 / std::max(1, s.n_good - K_));
    const MatrixXd cov = Ai * B * Ai;
    for (int k = 1; k < K_; ++k) {
        s.a[k - 1] = cvec[k] / s.coef_flux;
        s.a_var[k - 1] = cov(k, k) / (s.coef_flux * s.coef_flux) * red;
    }
}

// One joint fit of C[k >= 1, t] over every good pixel of every used star:
//   minimise sum_s sum_p w_sp (d_sp - F_s P_0 - F_s sum_{k,t} C_kt f_t(x_s) P_k)^2,
// whose normal matrix is sum_s F_s^2 (f_s f_s^T) (x) G_s with G_s the star's weighted basis Gram matrix:
// (K - 1) T unknowns (18 for K = 4, order 2). w = 1 / var on good pixels: inverse variance whatever
// constant_weight says, as meas_algorithms' spatial fit (fitSpatialKernelFromPsfCandidates) weights each pixel
// by its variance; constantWeight only shapes the KL basis there. The model-error floor lam is left out of
// the fits' weights (it enters each star's chi2 only): as a weight it capped a bright star's per-pixel S/N
// at 1 / lam = 20, so the bright stars, which carry the PSF's shape, counted little more than the faint
// ones (reserved stars' size error 0.29% rms with lam = 0 in the fits against 0.53% with 0.05, before
// the basis refinement; 270 simulated stars).
std::vector<double> PcaFitter::fit_spatial(const std::vector<Star*>& used, const std::vector<std::vector<double>>& pks,
                                           const SpatialPolynomial& poly) const {
    const int T = poly.n_terms();
    const int Km = K_ - 1;
    std::vector<double> coefficients(static_cast<std::size_t>(K_) * T, 0.0);
    coefficients[0] = 1.0;  // a_0 = 1
    if (Km == 0) return coefficients;
    const int n2 = n_ * n_;
    const int P = Km * T;
    MatrixXd N = MatrixXd::Zero(P, P);
    VectorXd r = VectorXd::Zero(P);
    std::vector<double> f(T);
    for (std::size_t j = 0; j < used.size(); ++j) {
        const Star& s = *used[j];
        const std::vector<double>& pk = pks[j];
        const double F = s.coef_flux;
        MatrixXd Gs = MatrixXd::Zero(Km, Km);
        VectorXd gs = VectorXd::Zero(Km);
        for (int p = 0; p < n2; ++p) {
            if (!s.crop_good[p]) continue;
            const double w = 1.0 / s.crop_var[p];
            const double res0 = s.crop_d[p] - F * pk[p];
            for (int k = 0; k < Km; ++k) {
                const double wk = w * pk[static_cast<std::size_t>(k + 1) * n2 + p];
                gs[k] += wk * res0;
                for (int l = 0; l <= k; ++l) Gs(k, l) += wk * pk[static_cast<std::size_t>(l + 1) * n2 + p];
            }
        }
        poly.evaluate(s.x, s.y, f.data());
        for (int k = 0; k < Km; ++k) {
            for (int t = 0; t < T; ++t) {
                r[k * T + t] += F * f[t] * gs[k];
                for (int l = 0; l <= k; ++l) {
                    const double g = F * F * Gs(k, l);
                    for (int u = 0; u < T; ++u) N(k * T + t, l * T + u) += g * f[t] * f[u];
                }
            }
        }
    }
    // The loops above fill the blocks (k, l <= k); mirror them into the upper blocks.
    for (int i = 0; i < P; ++i)
        for (int j = 0; j < P; ++j)
            if (j / T > i / T) N(i, j) = N(j, i);
    const VectorXd sol = solve_symmetric(N, r);
    for (int k = 0; k < Km; ++k)
        for (int t = 0; t < T; ++t) coefficients[static_cast<std::size_t>(k + 1) * T + t] = sol[k * T + t];
    return coefficients;
}

// Flux and chi2 of a star against the model at its position (flux fitted, two passes so the model-error
// floor (lam F m)^2 uses the fitted flux); dof = good pixels - 1.
void PcaFitter::evaluate_star(Star& s, const PcaPsf& psf) const {
    const int n2 = n_ * n_;
    const PsfImage img = psf.compute_image(s.x, s.y);
    s.model = img.data;
    const std::vector<double>& m = s.model;
    double F = 0.0;
    for (int pass = 0; pass < 2; ++pass) {
        double smd = 0.0, smm = 0.0;
        for (int p = 0; p < n2; ++p) {
            if (!s.crop_good[p]) continue;
            const double me = ctl_.lam * F * m[p];
            const double w = 1.0 / (s.crop_var[p] + (pass == 0 ? 0.0 : me * me));
            smd += w * m[p] * s.crop_d[p];
            smm += w * m[p] * m[p];
        }
        F = smm > 0.0 ? smd / smm : NAN;
    }
    double chi2 = 0.0, expected = 0.0;
    for (int p = 0; p < n2; ++p) {
        if (!s.crop_good[p]) continue;
        const double me = ctl_.lam * F * m[p];
        const double res = s.crop_d[p] - F * m[p];
        chi2 += res * res / (s.crop_var[p] + me * me);
        expected += s.crop_var[p] / (s.crop_var[p] + me * me);
    }
    s.flux = F;
    s.chi2 = chi2;
    s.chi2_expected = expected;
    s.dof = s.n_good - 1;
}

// One fit on the used stars: basis, each star's amplitudes, the spatial fit, the model; then every
// fittable star's flux and chi2 against it. Used stars whose basis fit has no positive flux leave.
std::shared_ptr<PcaPsf> PcaFitter::fit_once(std::vector<Star*>& used, bool use_model, int order) {
    centred_cache_.clear();
    // The first fit starts from the KL basis (LSST's); a later fit (after outlier rejection) from the previous
    // fit's refined basis, so the refinement rounds of successive fits add up (the alternation converges
    // slowly: 3 rounds from the KL basis left the reserved stars' size error 0.12-0.16% rms on the varying
    // field, 6 rounds 0.07-0.09%) at the cost of one fit's rounds.
    const bool warm = ctl_.n_basis_refinements > 0 && K_ > 1 && !basis_.empty();
    if (!warm) basis_ = build_basis(used, use_model);
    const SpatialPolynomial poly(order, xmin_, xmax_, ymin_, ymax_);
    std::vector<double> coefficients;
    // KL basis, then n_basis_refinements rounds of (amplitudes + spatial fit, basis refit), then the final
    // amplitudes and spatial fit in the refined basis.
    for (int round = 0;; ++round) {
        std::vector<std::vector<double>> pks;
        std::vector<Star*> kept;
        for (Star* s : used) {
            std::vector<double> pk = shifted_basis(*s);
            fit_star_coefficients(*s, pk);
            if (s->coef_flux > 0.0) {
                kept.push_back(s);
                pks.push_back(std::move(pk));
            } else {
                s->status = PcaStatus::bad_flux;
            }
        }
        used.swap(kept);
        if (used.empty()) return nullptr;
        coefficients = fit_spatial(used, pks, poly);
        // One component has no spatial freedom (a_0 = 1): refitting it only reweights the mean PSF towards
        // the bright stars, wherever they sit (on 12-17 simulated stars that moved the size at the detector
        // centre 1.6% from the truth against 0.9% for the KL mean): kept as LSST's.
        if (round >= ctl_.n_basis_refinements || K_ < 2) break;
        refine_basis(used, coefficients, poly, use_model);
    }
    for (Star& s : stars_)
        if (s.fittable && s.status != PcaStatus::used) fit_star_coefficients(s, shifted_basis(s));
    double ax = 0.0, ay = 0.0;
    for (const Star* s : used) {
        ax += s->x;
        ay += s->y;
    }
    auto psf = std::make_shared<PcaPsf>(basis_, K_, n_, coefficients, poly,
                                        std::array<double, 2>{ax / used.size(), ay / used.size()},
                                        ctl_.interpolant_order);
    for (Star& s : stars_)
        if (s.fittable) evaluate_star(s, *psf);
    return psf;
}

PcaPsfFit PcaFitter::run() {
    if (ctl_.kernel_size < 1 || ctl_.kernel_size % 2 == 0) throw std::invalid_argument("kernel_size must be odd and positive");
    if (ctl_.kernel_size > S_) throw std::invalid_argument("kernel_size is larger than the candidate stamps");
    if (ctl_.n_eigen_components < 1) throw std::invalid_argument("n_eigen_components must be >= 1");
    if (ctl_.n_iter_for_psf < 1) throw std::invalid_argument("n_iter_for_psf must be >= 1");
    if (ctl_.n_basis_refinements < 0 || ctl_.n_basis_refinements > 50)
        throw std::invalid_argument("n_basis_refinements must be in [0, 50]");
    if (ctl_.interpolant_order < 1) throw std::invalid_argument("interpolant_order must be >= 1");
    prepare();
    PcaPsfFit out;
    int order = ctl_.spatial_order;
    for (const Star& s : stars_) out.n_available += !s.reserved;
    // Too few stars, the rule of meas_extensions_piff's PiffPsfDeterminer applied here too: fewer stars than
    // spatial terms -> order 0 (when allowed, its zerothOrderInterpNotEnoughStars) or a typed failure.
    auto enough = [&](int n_used) {
        if (n_used >= SpatialPolynomial::n_terms(order) && n_used >= 1) return true;
        if (ctl_.zeroth_order_interp_not_enough_stars && order > 0 && n_used >= 1) {
            order = 0;
            return true;
        }
        out.too_few_stars = true;
        out.n_stars = n_used;
        out.n_required = std::max(1, SpatialPolynomial::n_terms(order));
        return false;
    };
    auto no_stars_left = [&]() {
        enough(0);
        return out;
    };
    std::vector<Star*> used;
    for (Star& s : stars_)
        if (s.fittable && s.status == PcaStatus::used) used.push_back(&s);
    if (!enough(static_cast<int>(used.size()))) return out;

    std::shared_ptr<PcaPsf> psf;
    double prev_chi2 = NAN;
    for (int it = 0; it < ctl_.n_iter_for_psf; ++it) {
        // First fit: bad pixels are filled by mirroring, which fails where the mirror pixel is bad too (a
        // cosmic ray across the core); a preliminary fit gives a model to fill them with before any
        // star is judged.
        bool any_bad = false;
        for (const Star* s : used) any_bad = any_bad || s->has_bad;
        if (it == 0 && any_bad) {
            std::vector<Star*> pre = used;
            if (!fit_once(pre, false, order)) return no_stars_left();
            for (Star& s : stars_)
                if (s.status == PcaStatus::bad_flux && s.fittable && !s.reserved) s.status = PcaStatus::used;
        }
        psf = fit_once(used, it > 0 || any_bad, order);
        if (!psf) return no_stars_left();
        if (!enough(static_cast<int>(used.size()))) return out;
        if (order != psf->spatial().order()) {  // fell back to order 0 after losing stars: refit
            psf = fit_once(used, true, order);
            if (!psf) return no_stars_left();
        }
        double chi2 = 0.0;
        for (const Star* s : used) chi2 += s->chi2;
        out.n_iter = it + 1;
        out.spatial_fit_chi2 = chi2;
        out.avg_x = psf->average_position()[0];
        out.avg_y = psf->average_position()[1];
        out.spatial_order = order;
        out.n_components = K_;
        if (it == ctl_.n_iter_for_psf - 1) break;

        // Judge every candidate of the pool (not reserved, fittable, not bad_flux) against this fit, the
        // used ones and those rejected earlier alike: a star rejected by an early, poorer model comes back
        // once the model is good. Both tests on the same fit.
        std::vector<Star*> pool;
        for (Star& s : stars_)
            if (s.fittable && (s.status == PcaStatus::used || s.status == PcaStatus::outlier)) pool.push_back(&s);
        const SpatialPolynomial& poly = psf->spatial();
        const int T = poly.n_terms();
        const std::vector<double>& coefficients = psf->coefficients();
        std::vector<char> reject(pool.size(), 0);
        for (std::size_t j = 0; j < pool.size(); ++j)
            if (!(pool[j]->chi2 / pool[j]->dof <= ctl_.reduced_chi2_for_psf_candidates)) reject[j] = 1;
        if (K_ > 1 && static_cast<int>(used.size()) > T) {
            std::vector<double> f(T);
            std::vector<std::vector<double>> res(pool.size(), std::vector<double>(K_ - 1));
            for (std::size_t j = 0; j < pool.size(); ++j) {
                poly.evaluate(pool[j]->x, pool[j]->y, f.data());
                for (int k = 1; k < K_; ++k) {
                    double pred = 0.0;
                    for (int t = 0; t < T; ++t) pred += coefficients[static_cast<std::size_t>(k) * T + t] * f[t];
                    res[j][k - 1] = pool[j]->a[k - 1] - pred;
                }
            }
            for (int k = 0; k < K_ - 1; ++k) {
                // Robust scatter (1.4826 MAD) of the used stars' deviations, plus each star's own error.
                std::vector<double> dev;
                for (std::size_t j = 0; j < pool.size(); ++j)
                    if (pool[j]->status == PcaStatus::used) dev.push_back(res[j][k]);
                const double med = median_inplace(dev);
                dev.clear();
                for (std::size_t j = 0; j < pool.size(); ++j)
                    if (pool[j]->status == PcaStatus::used) dev.push_back(std::fabs(res[j][k] - med));
                const double mad = 1.4826 * median_inplace(dev);
                for (std::size_t j = 0; j < pool.size(); ++j) {
                    const double sig = std::sqrt(pool[j]->a_var[k] + mad * mad);
                    if (!(std::fabs(res[j][k]) <= ctl_.spatial_reject * sig)) reject[j] = 1;
                }
            }
        }
        int n_changed = 0;
        used.clear();
        for (std::size_t j = 0; j < pool.size(); ++j) {
            const PcaStatus st = reject[j] ? PcaStatus::outlier : PcaStatus::used;
            n_changed += st != pool[j]->status;
            pool[j]->status = st;
            if (!reject[j]) used.push_back(pool[j]);
        }
        const bool converged = n_changed == 0 && std::isfinite(prev_chi2) &&
                               std::fabs(chi2 - prev_chi2) <= ctl_.tolerance * std::max(chi2, 1e-300);
        prev_chi2 = n_changed == 0 ? chi2 : NAN;
        if (converged) break;
        if (!enough(static_cast<int>(used.size()))) return out;
    }
    out.psf = psf;
    out.n_good = static_cast<int>(used.size());
    out.status.resize(stars_.size());
    out.flux.assign(stars_.size(), NAN);
    out.chi2.assign(stars_.size(), NAN);
    out.dof.assign(stars_.size(), 0);
    out.chi2_expected.assign(stars_.size(), NAN);
    for (std::size_t i = 0; i < stars_.size(); ++i) {
        const Star& s = stars_[i];
        out.status[i] = static_cast<std::uint8_t>(s.status);
        if (s.fittable && std::isfinite(s.flux)) {
            out.flux[i] = s.flux;
            out.chi2[i] = s.chi2;
            out.chi2_expected[i] = s.chi2_expected;
            out.dof[i] = s.dof;
        }
    }
    return out;
}

}  // namespace

PcaPsfFit fit_pca_psf(const PcaPsfCandidates& candidates, const PcaPsfControl& control, double xmin, double xmax,
                      double ymin, double ymax) {
    if (candidates.n < 0 || candidates.stamp_size < 1) throw std::invalid_argument("bad candidate dimensions");
    PcaFitter fitter(candidates, control, xmin, xmax, ymin, ymax);
    return fitter.run();
}

}  // namespace visitcal
