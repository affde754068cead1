// Cosmic-ray finder and repair; the algorithm is described in cosmic_rays.hpp.
#include "visitcal/detection/cosmic_rays.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <utility>

namespace visitcal {

namespace {

// The eight neighbours; the four directions are the pairs (k, k + 4): W/E, S/N, SW/NE, SE/NW.
constexpr int kDx[8] = {-1, 0, -1, 1, 1, 0, 1, -1};
constexpr int kDy[8] = {0, -1, -1, -1, 0, 1, 1, 1};
constexpr int kMaxInterpDistance = 100;

// A read-only view of everything the per-pixel test needs. Values are read through `image` and
// `variance`, which find_cosmic_rays updates in place as it replaces the pixels it finds.
struct Ctx {
    ImageView<const float> image;
    ImageView<const float> variance;
    ImageView<const std::int32_t> mask;
    double background;
    ImageView<const float> bimage;  // data == nullptr: scalar background only
    double thresh[4];               // horizontal, vertical, diagonal up, diagonal down
    std::int32_t bad_bits;

    int nx() const { return image.nx; }
    int ny() const { return image.ny; }
    float value(int x, int y) const { return image.row(y)[x]; }
    float var(int x, int y) const { return variance.row(y)[x]; }
    double bkg(int x, int y) const { return bimage.data ? background + bimage.row(y)[x] : background; }
    bool usable(int x, int y) const {
        return x >= 0 && y >= 0 && x < image.nx && y < image.ny && (mask.row(y)[x] & bad_bits) == 0;
    }
};

// The order of kDx/kDy pairs to the thresholds: pair (0,4) is W/E -> horizontal, (1,5) S/N ->
// vertical, (2,6) SW/NE -> diagonal up, (3,7) SE/NW -> diagonal down.

/// Criteria 2 and 3 for a pixel that passed criterion 1 (see cosmic_rays.hpp). On success the
/// lowest direction mean (value, variance) is returned through `rv`, `rvar` for the replacement.
bool sharp_peak(const Ctx& c, int x, int y, double v, double d, double sigma, double cond3_fac, float* rv,
                float* rvar) {
    bool ok[8];
    for (int k = 0; k < 8; ++k) {
        const int xn = x + kDx[k], yn = y + kDy[k];
        ok[k] = c.usable(xn, yn);
        if (ok[k] && c.value(xn, yn) > v) return false;  // criterion 2: local maximum
    }
    const double peak_term = d - cond3_fac * sigma;
    bool cr = false;
    double best = std::numeric_limits<double>::infinity(), best_var = 0.0;
    for (int k = 0; k < 4; ++k) {
        if (!ok[k] || !ok[k + 4]) continue;
        const int xa = x + kDx[k], ya = y + kDy[k], xb = x + kDx[k + 4], yb = y + kDy[k + 4];
        const double va = c.value(xa, ya), vb = c.value(xb, yb);
        const double wa = c.var(xa, ya), wb = c.var(xb, yb);
        const double mean_raw = 0.5 * (va + vb);
        const double mean = mean_raw - 0.5 * (c.bkg(xa, ya) + c.bkg(xb, yb));
        const double sigma_mean = 0.5 * std::sqrt(std::max(wa + wb, 0.0));
        if (c.thresh[k] * peak_term > mean + cond3_fac * sigma_mean) cr = true;  // criterion 3
        if (mean_raw < best) {
            best = mean_raw;
            best_var = 0.5 * (wa + wb);
        }
    }
    if (!cr) return false;
    *rv = static_cast<float>(best);
    *rvar = static_cast<float>(best_var);
    return true;
}

/// Full test of pixel (x, y); criterion 1 first because it rejects almost every pixel.
bool is_cr_pixel(const Ctx& c, int x, int y, double min_sigma, double cond3_fac, float* rv, float* rvar) {
    if (!c.usable(x, y)) return false;
    const double v = c.value(x, y);
    const double d = v - c.bkg(x, y);
    const double var = c.var(x, y);
    if (!(d > 0.0) || d * d <= min_sigma * min_sigma * var) return false;  // criterion 1
    return sharp_peak(c, x, y, v, d, std::sqrt(var), cond3_fac, rv, rvar);
}

template <typename T>
ImageView<const T> as_const(ImageView<T> v) {
    return {v.data, v.ny, v.nx, v.stride};
}

void check_shape(int ny, int nx, int vy, int vx, const char* name) {
    if (vy != ny || vx != nx) {
        throw std::invalid_argument(std::string(name) + " shape (" + std::to_string(vy) + ", " + std::to_string(vx) +
                                    ") differs from the image shape (" + std::to_string(ny) + ", " +
                                    std::to_string(nx) + ")");
    }
}

/// Usable pixels must have finite values, finite background and a finite positive variance.
void validate(const Ctx& c) {
    std::int64_t n_image = 0, n_var = 0, n_bkg = 0;
    int fx[3] = {-1, -1, -1}, fy[3] = {-1, -1, -1};
    const float big = std::numeric_limits<float>::max();
    for (int y = 0; y < c.ny(); ++y) {
        const float* im = c.image.row(y);
        const float* va = c.variance.row(y);
        const std::int32_t* ma = c.mask.row(y);
        const float* bi = c.bimage.data ? c.bimage.row(y) : nullptr;
        // Counted branch-free over the row (vectorised; |v| <= max is false for NaN and inf), the row
        // searched again only for a first bad pixel: the scan was 2 % of a calibration with branches.
        int row_image = 0, row_var = 0, row_bkg = 0;
        for (int x = 0; x < c.nx(); ++x) {
            const int use = (ma[x] & c.bad_bits) == 0;
            row_image += use & static_cast<int>(!(std::fabs(im[x]) <= big));
            row_var += use & static_cast<int>(!((va[x] > 0.0f) & (va[x] <= big)));
        }
        if (bi) {
            for (int x = 0; x < c.nx(); ++x) {
                row_bkg += static_cast<int>((ma[x] & c.bad_bits) == 0) & static_cast<int>(!(std::fabs(bi[x]) <= big));
            }
        }
        if ((row_image && !n_image) || (row_var && !n_var) || (row_bkg && !n_bkg)) {
            for (int x = 0; x < c.nx(); ++x) {
                if (ma[x] & c.bad_bits) continue;
                if (row_image && !n_image && fx[0] < 0 && !std::isfinite(im[x])) fx[0] = x, fy[0] = y;
                if (row_var && !n_var && fx[1] < 0 && (!(va[x] > 0.0f) || !std::isfinite(va[x]))) fx[1] = x, fy[1] = y;
                if (row_bkg && !n_bkg && fx[2] < 0 && !std::isfinite(bi[x])) fx[2] = x, fy[2] = y;
            }
        }
        n_image += row_image;
        n_var += row_var;
        n_bkg += row_bkg;
    }
    auto where = [&](int k) { return " (first at x=" + std::to_string(fx[k]) + ", y=" + std::to_string(fy[k]) + ")"; };
    if (n_image) {
        throw std::domain_error("image: " + std::to_string(n_image) +
                                " non-finite pixels not flagged bad" + where(0));
    }
    if (n_var) {
        throw std::domain_error("variance: " + std::to_string(n_var) +
                                " non-positive or non-finite values at pixels not flagged bad" + where(1));
    }
    if (n_bkg) {
        throw std::domain_error("background: " + std::to_string(n_bkg) +
                                " non-finite values at pixels not flagged bad" + where(2));
    }
    if (!std::isfinite(c.background)) throw std::domain_error("background: not finite");
}

struct Original {
    std::int64_t index;  // y * nx + x
    float value;
    float variance;
};

/// The whole find-and-repair run; holds the scratch state of one call.
class Finder {
public:
    Finder(ImageView<float> image, ImageView<float> variance, const Ctx& ctx, const FindCosmicRaysControl& ctrl)
        : image_(image),
          variance_(variance),
          c_(ctx),
          ctrl_(ctrl),
          nx_(image.nx),
          state_(static_cast<std::size_t>(image.nx) * image.ny, 0) {}

    FindCosmicRaysResult run(ImageView<std::int32_t> mask, std::int32_t cr_bits);

private:
    float& at(ImageView<float> v, std::int64_t i) const { return v.row(static_cast<int>(i / nx_))[i % nx_]; }
    int xof(std::int64_t i) const { return static_cast<int>(i % nx_); }
    int yof(std::int64_t i) const { return static_cast<int>(i / nx_); }

    // Test one pixel; on success record its original value, replace it and mark it CR.
    bool try_pixel(int x, int y, double min_sigma, double cond3_fac) {
        const std::int64_t i = static_cast<std::int64_t>(y) * nx_ + x;
        if (state_[i]) return false;
        float rv, rvar;
        if (!is_cr_pixel(c_, x, y, min_sigma, cond3_fac, &rv, &rvar)) return false;
        float& v = image_.row(y)[x];
        float& w = variance_.row(y)[x];
        originals_.push_back({i, v, w});
        v = rv;
        w = rvar;
        state_[i] = 1;
        return true;
    }

    // Up to `passes` rings: each tests the not-yet-CR 8-neighbours of the previous ring's finds
    // (the first ring: of `found`), in index order. Returns the number of pixels found.
    std::int64_t iterate(std::vector<std::int64_t> found, int passes, double min_sigma, double cond3_fac) {
        std::int64_t total = 0;
        std::vector<std::int64_t> frontier;
        for (int pass = 0; pass < passes && !found.empty(); ++pass) {
            frontier.clear();
            for (std::int64_t i : found) {
                const int x = xof(i), y = yof(i);
                for (int k = 0; k < 8; ++k) {
                    const int xn = x + kDx[k], yn = y + kDy[k];
                    if (xn < 0 || yn < 0 || xn >= c_.nx() || yn >= c_.ny()) continue;
                    const std::int64_t j = static_cast<std::int64_t>(yn) * nx_ + xn;
                    if (!state_[j]) frontier.push_back(j);
                }
            }
            std::sort(frontier.begin(), frontier.end());
            frontier.erase(std::unique(frontier.begin(), frontier.end()), frontier.end());
            found.clear();
            for (std::int64_t j : frontier) {
                if (try_pixel(xof(j), yof(j), min_sigma, cond3_fac)) found.push_back(j);
            }
            total += static_cast<std::int64_t>(found.size());
        }
        return total;
    }

    void restore_all() {
        for (const Original& o : originals_) {
            at(image_, o.index) = o.value;
            at(variance_, o.index) = o.variance;
        }
    }

    const Original& original(std::int64_t i) const {  // originals_ sorted by index
        return *std::lower_bound(originals_.begin(), originals_.end(), i,
                                 [](const Original& o, std::int64_t v) { return o.index < v; });
    }

    void sort_originals() {
        std::sort(originals_.begin(), originals_.end(),
                  [](const Original& a, const Original& b) { return a.index < b.index; });
    }

    // 8-connected groups of CR pixels (state 1), each listed in BFS order from its lowest index;
    // groups ordered by their lowest index.
    std::vector<std::vector<std::int64_t>> group() {
        std::vector<std::vector<std::int64_t>> groups;
        std::vector<std::int64_t> stack;
        for (const Original& o : originals_) {
            if (state_[o.index] != 1) continue;
            std::vector<std::int64_t> pixels;
            state_[o.index] = 2;
            stack.push_back(o.index);
            while (!stack.empty()) {
                const std::int64_t i = stack.back();
                stack.pop_back();
                pixels.push_back(i);
                const int x = xof(i), y = yof(i);
                for (int k = 0; k < 8; ++k) {
                    const int xn = x + kDx[k], yn = y + kDy[k];
                    if (xn < 0 || yn < 0 || xn >= c_.nx() || yn >= c_.ny()) continue;
                    const std::int64_t j = static_cast<std::int64_t>(yn) * nx_ + xn;
                    if (state_[j] == 1) {
                        state_[j] = 2;
                        stack.push_back(j);
                    }
                }
            }
            std::sort(pixels.begin(), pixels.end());
            groups.push_back(std::move(pixels));
        }
        for (const auto& g : groups)
            for (std::int64_t i : g) state_[i] = 1;
        return groups;
    }

    CosmicRay describe(const std::vector<std::int64_t>& pixels) const {
        CosmicRay cr{nx_, c_.ny(), -1, -1, static_cast<std::int64_t>(pixels.size()), 0.0,
                     -std::numeric_limits<double>::infinity(), -1, -1};
        for (std::int64_t i : pixels) {
            const int x = xof(i), y = yof(i);
            const double d = original(i).value - c_.bkg(x, y);
            cr.min_x = std::min(cr.min_x, x);
            cr.min_y = std::min(cr.min_y, y);
            cr.max_x = std::max(cr.max_x, x);
            cr.max_y = std::max(cr.max_y, y);
            cr.flux += d;
            if (d > cr.peak) cr.peak = d, cr.peak_x = x, cr.peak_y = y;
        }
        return cr;
    }

    double fallback(float* fallback_var);
    void interpolate(FindCosmicRaysResult& result);

    ImageView<float> image_;
    ImageView<float> variance_;
    const Ctx& c_;
    const FindCosmicRaysControl& ctrl_;
    int nx_;
    std::vector<std::uint8_t> state_;  // 0: not CR; 1: CR; 2: being grouped
    std::vector<Original> originals_;
    bool have_fallback_ = false;
    double fallback_value_ = 0.0;
    float fallback_var_ = 0.0f;
};

// MEANCLIP of the usable non-CR pixels (see cosmic_rays.hpp), computed once, when first needed.
double Finder::fallback(float* fallback_var) {
    if (!have_fallback_) {
        const std::int64_t n = static_cast<std::int64_t>(nx_) * c_.ny();
        const std::int64_t step = std::max<std::int64_t>(1, n / 1000000);
        std::vector<double> v, w;
        for (std::int64_t i = 0; i < n; i += step) {
            const int x = xof(i), y = yof(i);
            if (state_[i] || !c_.usable(x, y)) continue;
            v.push_back(c_.value(x, y));
            w.push_back(c_.var(x, y));
        }
        double center = 0.0, mean_var = 0.0;
        if (!v.empty()) {
            std::vector<double> s = v;
            const std::size_t q1 = s.size() / 4, q2 = s.size() / 2, q3 = (3 * s.size()) / 4;
            std::nth_element(s.begin(), s.begin() + q2, s.end());
            center = s[q2];
            std::nth_element(s.begin(), s.begin() + q1, s.end());
            const double lo = s[q1];
            std::nth_element(s.begin(), s.begin() + q3, s.end());
            double sigma = 0.7413 * (s[q3] - lo);  // IQR -> sigma of a Gaussian
            mean_var = std::accumulate(w.begin(), w.end(), 0.0) / static_cast<double>(w.size());
            for (int iter = 0; iter < 3; ++iter) {
                double sum = 0.0, sum2 = 0.0, sumw = 0.0;
                std::size_t m = 0;
                for (std::size_t k = 0; k < v.size(); ++k) {
                    if (sigma > 0.0 && std::abs(v[k] - center) > 3.0 * sigma) continue;
                    sum += v[k];
                    sum2 += v[k] * v[k];
                    sumw += w[k];
                    ++m;
                }
                if (m == 0) break;
                center = sum / static_cast<double>(m);
                sigma = std::sqrt(std::max(sum2 / static_cast<double>(m) - center * center, 0.0));
                mean_var = sumw / static_cast<double>(m);
            }
        }
        fallback_value_ = center;
        fallback_var_ = static_cast<float>(mean_var);
        have_fallback_ = true;
    }
    *fallback_var = fallback_var_;
    return fallback_value_;
}

// Replace every CR pixel (state 1) by the interpolation of cosmic_rays.hpp. Reads only non-CR
// pixels, so the order of the writes does not matter.
void Finder::interpolate(FindCosmicRaysResult& result) {
    static const double kStep[4] = {1.0, 1.0, std::sqrt(2.0), std::sqrt(2.0)};
    std::vector<std::pair<float, float>> values;
    values.reserve(originals_.size());
    for (const Original& o : originals_) {
        if (state_[o.index] != 1) {
            values.emplace_back(0.0f, 0.0f);
            continue;
        }
        const int x = xof(o.index), y = yof(o.index);
        double sw = 0.0, sv = 0.0, svar = 0.0;
        for (int k = 0; k < 4; ++k) {
            int s[2] = {0, 0};
            for (int side = 0; side < 2; ++side) {
                const int dx = kDx[k + 4 * side], dy = kDy[k + 4 * side];
                for (int t = 1; t <= kMaxInterpDistance; ++t) {
                    const int xt = x + t * dx, yt = y + t * dy;
                    if (xt < 0 || yt < 0 || xt >= nx_ || yt >= c_.ny()) break;
                    if (state_[static_cast<std::int64_t>(yt) * nx_ + xt] == 0 && c_.usable(xt, yt)) {
                        s[side] = t;
                        break;
                    }
                }
            }
            if (s[0] == 0 || s[1] == 0) continue;
            const int xa = x + s[0] * kDx[k], ya = y + s[0] * kDy[k];
            const int xb = x + s[1] * kDx[k + 4], yb = y + s[1] * kDy[k + 4];
            const double gap = static_cast<double>(s[0] + s[1]);
            // Linear interpolation: the nearer end weighs more.
            const double est = (c_.value(xa, ya) * s[1] + c_.value(xb, yb) * s[0]) / gap;
            const double est_var = (c_.var(xa, ya) * s[1] + c_.var(xb, yb) * s[0]) / gap;
            const double weight = 1.0 / (gap * kStep[k]);
            sw += weight;
            sv += weight * est;
            svar += weight * est_var;
        }
        if (sw > 0.0) {
            values.emplace_back(static_cast<float>(sv / sw), static_cast<float>(svar / sw));
        } else {
            float fv;
            const double f = fallback(&fv);
            values.emplace_back(static_cast<float>(f), fv);
            ++result.n_fallback;
        }
    }
    for (std::size_t k = 0; k < originals_.size(); ++k) {
        if (state_[originals_[k].index] != 1) continue;
        at(image_, originals_[k].index) = values[k].first;
        at(variance_, originals_[k].index) = values[k].second;
    }
}

FindCosmicRaysResult Finder::run(ImageView<std::int32_t> mask, std::int32_t cr_bits) {
    FindCosmicRaysResult result;
    result.fallback_value = std::numeric_limits<double>::quiet_NaN();
    const int ny = c_.ny(), nx = c_.nx();

    // Pass 1, first ring: the whole image in raster order. Criterion 1 rejects ~all pixels, so it
    // is evaluated for a whole row first, branch-free (vectorizable; a sign test that branched
    // would mispredict on half the sky pixels), and the full test runs only where it passed.
    // Replacing a pixel changes no other pixel's criterion 1, so this is the same as testing in order.
    std::vector<std::int64_t> found;
    std::vector<std::uint8_t> pass((static_cast<std::size_t>(nx) + 7) & ~std::size_t{7}, 0);
    // A hair looser than the exact (double) test in is_cr_pixel, which then decides: float
    // rounding must not drop a pixel the exact test would take.
    const float k2 = static_cast<float>(ctrl_.min_sigma * ctrl_.min_sigma * (1.0 - 1e-4));
    const float b0 = static_cast<float>(c_.background);
    for (int y = 0; y < ny; ++y) {
        const float* im = image_.row(y);
        const float* va = variance_.row(y);
        std::uint8_t* ps = pass.data();
        if (c_.bimage.data) {
            const float* bi = c_.bimage.row(y);
            for (int x = 0; x < nx; ++x) {
                const float d = im[x] - (b0 + bi[x]);
                ps[x] = static_cast<std::uint8_t>((d > 0.0f) & (d * d > k2 * va[x]));
            }
        } else {
            for (int x = 0; x < nx; ++x) {
                const float d = im[x] - b0;
                ps[x] = static_cast<std::uint8_t>((d > 0.0f) & (d * d > k2 * va[x]));
            }
        }
        for (int x0 = 0; x0 < nx; x0 += 8) {  // skip 8 failing pixels at a time
            std::uint64_t word;
            std::memcpy(&word, ps + x0, sizeof word);
            if (word == 0) continue;
            for (int x = x0; x < std::min(x0 + 8, nx); ++x) {
                if (ps[x] && try_pixel(x, y, ctrl_.min_sigma, ctrl_.cond3_fac)) {
                    found.push_back(static_cast<std::int64_t>(y) * nx + x);
                }
            }
        }
    }
    // Later rings: only the neighbours of the previous ring's finds can have changed.
    if (ctrl_.niteration > 1) iterate(found, ctrl_.niteration - 1, ctrl_.min_sigma, ctrl_.cond3_fac);
    if (static_cast<std::int64_t>(originals_.size()) > ctrl_.n_cr_pixel_max) {
        const auto n = static_cast<std::int64_t>(originals_.size());
        restore_all();
        throw TooManyCosmicRays(n, ctrl_.n_cr_pixel_max);
    }
    sort_originals();

    // Objects below min_dn are not cosmic rays: restore them.
    std::vector<std::int64_t> accepted;
    for (const auto& g : group()) {
        if (describe(g).flux >= ctrl_.min_dn) {
            accepted.insert(accepted.end(), g.begin(), g.end());
            continue;
        }
        for (std::int64_t i : g) {
            const Original& o = original(i);
            at(image_, i) = o.value;
            at(variance_, i) = o.variance;
            state_[i] = 0;
        }
        result.n_rejected += static_cast<std::int64_t>(g.size());
    }
    originals_.erase(std::remove_if(originals_.begin(), originals_.end(),
                                    [this](const Original& o) { return state_[o.index] == 0; }),
                     originals_.end());

    // Grow: interpolate first so the pixels next to a CR are judged against clean neighbours.
    if (ctrl_.grow && !accepted.empty()) {
        interpolate(result);
        result.n_grown = iterate(accepted, std::max(ctrl_.niteration, 1), 0.5 * ctrl_.min_sigma, 0.0);
        if (static_cast<std::int64_t>(originals_.size()) > ctrl_.n_cr_pixel_max) {
            const auto n = static_cast<std::int64_t>(originals_.size());
            restore_all();
            throw TooManyCosmicRays(n, ctrl_.n_cr_pixel_max);
        }
        sort_originals();
    }

    for (const auto& g : group()) result.cosmic_rays.push_back(describe(g));
    result.n_pixels = static_cast<std::int64_t>(originals_.size());
    result.n_fallback = 0;
    if (ctrl_.keep_crs) {
        restore_all();
    } else {
        interpolate(result);
    }
    if (result.n_fallback > 0) result.fallback_value = fallback_value_;
    for (const Original& o : originals_) mask.row(yof(o.index))[xof(o.index)] |= cr_bits;
    return result;
}

}  // namespace

Cond3Thresholds cond3_thresholds(const double* psf, int ny, int nx, double cond3_fac2) {
    if (ny < 3 || nx < 3 || ny % 2 == 0 || nx % 2 == 0) {
        throw std::invalid_argument("psf image must have odd dimensions >= 3, got (" + std::to_string(ny) + ", " +
                                    std::to_string(nx) + ")");
    }
    const int cy = ny / 2, cx = nx / 2;
    auto p = [&](int dy, int dx) { return psf[static_cast<std::ptrdiff_t>(cy + dy) * nx + (cx + dx)]; };
    const double i0 = p(0, 0);
    if (!(i0 > 0.0) || !std::isfinite(i0)) throw std::invalid_argument("psf image: the centre pixel must be positive");
    for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx)
            if (!std::isfinite(p(dy, dx))) throw std::invalid_argument("psf image: non-finite values");
    const double f = cond3_fac2 / i0;
    return {f * 0.5 * (p(0, -1) + p(0, 1)), f * 0.5 * (p(-1, 0) + p(1, 0)), f * 0.5 * (p(-1, -1) + p(1, 1)),
            f * 0.5 * (p(1, -1) + p(-1, 1))};
}

FindCosmicRaysResult find_cosmic_rays(ImageView<float> image, ImageView<float> variance,
                                      ImageView<std::int32_t> mask, double background,
                                      ImageView<const float> background_image, const Cond3Thresholds& thresholds,
                                      const FindCosmicRaysControl& ctrl, std::int32_t bad_bits, std::int32_t cr_bits) {
    check_shape(image.ny, image.nx, variance.ny, variance.nx, "variance");
    check_shape(image.ny, image.nx, mask.ny, mask.nx, "mask");
    if (background_image.data) check_shape(image.ny, image.nx, background_image.ny, background_image.nx, "background");
    if (!(ctrl.min_sigma > 0.0)) throw std::invalid_argument("min_sigma must be positive");
    if (ctrl.niteration < 1) throw std::invalid_argument("niteration must be >= 1");
    if (ctrl.cond3_fac < 0.0) throw std::invalid_argument("cond3_fac must be >= 0");
    if (ctrl.n_cr_pixel_max < 0) throw std::invalid_argument("n_cr_pixel_max must be >= 0");
    Ctx ctx{as_const(image), as_const(variance), as_const(mask), background, background_image,
            {thresholds.horizontal, thresholds.vertical, thresholds.diagonal_up, thresholds.diagonal_down},
            bad_bits};
    validate(ctx);
    if (image.nx == 0 || image.ny == 0) return {};
    Finder finder(image, variance, ctx, ctrl);
    return finder.run(mask, cr_bits);
}

void cosmic_ray_candidates(ImageView<const float> image, ImageView<const float> variance,
                           ImageView<const std::int32_t> mask, double background,
                           ImageView<const float> background_image, const Cond3Thresholds& thresholds,
                           double min_sigma, double cond3_fac, std::int32_t bad_bits, ImageView<std::uint8_t> out) {
    check_shape(image.ny, image.nx, variance.ny, variance.nx, "variance");
    check_shape(image.ny, image.nx, mask.ny, mask.nx, "mask");
    check_shape(image.ny, image.nx, out.ny, out.nx, "out");
    if (background_image.data) check_shape(image.ny, image.nx, background_image.ny, background_image.nx, "background");
    Ctx ctx{image, variance, mask, background, background_image,
            {thresholds.horizontal, thresholds.vertical, thresholds.diagonal_up, thresholds.diagonal_down},
            bad_bits};
    validate(ctx);
    for (int y = 0; y < image.ny; ++y) {
        for (int x = 0; x < image.nx; ++x) {
            float rv, rvar;
            out.row(y)[x] = is_cr_pixel(ctx, x, y, min_sigma, cond3_fac, &rv, &rvar) ? 1 : 0;
        }
    }
}

}  // namespace visitcal
