// Binned background statistics and interpolation; see background.hpp.
#include "visitcal/detection/background.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

#include "../core/cpu_features.hpp"
#include "background_kernels.hpp"

namespace visitcal {

const BgKernels& bg_kernels_for(bool baseline_only);

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// sigma of a Gaussian / its interquartile range: 1 / (2 * 0.6744897501960817).
constexpr double kIqrToSigma = 0.7413011092528009;
constexpr double kPi = 3.14159265358979323846;

}  // namespace

void BackgroundControl::validate() const {
    if (bin_size_x < 1) throw std::invalid_argument("bin_size_x must be >= 1, got " + std::to_string(bin_size_x));
    if (bin_size_y < 1) throw std::invalid_argument("bin_size_y must be >= 1, got " + std::to_string(bin_size_y));
    if (!(n_sigma_clip > 0.0) || !std::isfinite(n_sigma_clip)) {
        throw std::invalid_argument("n_sigma_clip must be a finite number > 0");
    }
    if (n_iter < 0) throw std::invalid_argument("n_iter must be >= 0, got " + std::to_string(n_iter));
    const int s = static_cast<int>(statistic);
    if (s < 0 || s > 3) throw std::invalid_argument("statistic: unknown value " + std::to_string(s));
}

BinAxis make_bin_axis(int length, int bin_size) {
    if (length < 1) throw std::invalid_argument("image length must be >= 1");
    if (bin_size < 1) throw std::invalid_argument("bin size must be >= 1");
    // n = ceil(length / bin_size) bins with edges spread evenly (sizes differ by at most one pixel).
    const long long n = (static_cast<long long>(length) + bin_size - 1) / bin_size;
    BinAxis axis;
    axis.origin.resize(n);
    axis.size.resize(n);
    axis.center.resize(n);
    long long prev = 0;
    for (long long i = 0; i < n; ++i) {
        const long long end = ((i + 1) * length + n / 2) / n;
        axis.origin[i] = static_cast<int>(prev);
        axis.size[i] = static_cast<int>(end - prev);
        axis.center[i] = static_cast<double>(prev) + 0.5 * static_cast<double>(end - prev) - 0.5;
        prev = end;
    }
    return axis;
}

// The statistics' pixel loops: the AVX2 build when the CPU has it (bit-identical results).
const BgKernels& bg_kernels_for(bool baseline_only) {
    if (!baseline_only && cpu_has_avx2()) return bg_kernels_avx2();
    return make_bg_kernels();  // this translation unit's (baseline ISA) instances
}

namespace {

// Order statistics ks[0..m) (0-based ranks, any order) of the n values v[0, n), exactly.
// A histogram of 4096 buckets over median +- 10 sigma of a ~512-value subsample finds the bucket
// of each rank in one pass; a second pass gathers the few values of those buckets (about
// n / 1000 each near the median), and nth_element finishes inside them. Two streaming passes
// instead of nth_element's data-dependent partitioning: 4x faster on 128 x 128 bins. Samples of
// 256 to 4096 values use 512 buckets over a 64-value subsample's range, smaller ones exact selection
// (select_copy), and degenerate subsamples (zero spread) are sorted.
struct OrderStats {
    explicit OrderStats(const BgKernels& kernels) : k(&kernels) {}
    const BgKernels* k;
    std::vector<float> scratch;
    std::vector<std::uint32_t> hist;
    std::vector<std::uint16_t> idx;
    std::vector<int> slot;
    std::vector<float> pool;  // the selected buckets' values, one after the other

    void sorted_copy(const float* v, std::size_t n) {
        scratch.assign(v, v + n);
        std::sort(scratch.begin(), scratch.end());
    }

    // Small samples: exact selection by nth_element, each rank selected only inside the interval
    // between the ranks already fixed (after nth_element at k, [lo, k) <= v[k] <= (k, hi)), middle
    // rank first, so the quartiles' ranks partition n, then n / 2 twice, instead of shrinking from the
    // left only (n + 3/4 n + 3/4 n + ...). A rank at an end of its interval (k + 1 after k, the
    // interpolation neighbour of every quantile) is that interval's minimum or maximum: one linear
    // scan. The values are the same order statistics as any exact selection (a -0.0 and a +0.0 of the
    // same rank compare equal and may come back as either). ~2x faster on the local background's
    // ~1300-value annuli (issue 25).
    void select_copy(const float* v, std::size_t n, const std::size_t* ks, int m, double* out) {
        scratch.assign(v, v + n);
        // Ranks in increasing order, then visited in bisection order (middle, then each half's middle).
        std::size_t sorted[16];
        std::vector<std::size_t> big;
        std::size_t* r = sorted;
        if (m > 16) {
            big.resize(static_cast<std::size_t>(m));
            r = big.data();
        }
        for (int i = 0; i < m; ++i) r[i] = ks[i];
        std::sort(r, r + m);
        const int nr = static_cast<int>(std::unique(r, r + m) - r);
        std::vector<unsigned char> fixed_flag(static_cast<std::size_t>(nr), 0);  // rank r[i] in place
        auto select = [&](int i) {
            const std::size_t k = r[i];
            std::size_t lo = 0, hi = n;  // the interval holding rank k between fixed ranks
            for (int j = i - 1; j >= 0; --j)
                if (fixed_flag[static_cast<std::size_t>(j)]) {
                    lo = r[j] + 1;
                    break;
                }
            for (int j = i + 1; j < nr; ++j)
                if (fixed_flag[static_cast<std::size_t>(j)]) {
                    hi = r[j];
                    break;
                }
            auto b = scratch.begin();
            const auto plo = static_cast<std::ptrdiff_t>(lo), phi = static_cast<std::ptrdiff_t>(hi);
            const auto pk = static_cast<std::ptrdiff_t>(k);
            if (k == lo) {
                std::iter_swap(b + plo, std::min_element(b + plo, b + phi));
            } else if (k + 1 == hi) {
                std::iter_swap(b + pk, std::max_element(b + plo, b + phi));
            } else {
                std::nth_element(b + plo, b + pk, b + phi);
            }
            fixed_flag[static_cast<std::size_t>(i)] = 1;
        };
        // Bisection order: the middle rank, then each half's (depth log2 of the number of ranks).
        struct Bisect {
            const decltype(select)& sel;
            void operator()(int a, int e) const {
                if (a >= e) return;
                const int mid = a + (e - a - 1) / 2;
                sel(mid);
                (*this)(a, mid);
                (*this)(mid + 1, e);
            }
        };
        Bisect{select}(0, nr);
        for (int i = 0; i < m; ++i) out[i] = scratch[ks[i]];
    }

    void compute(const float* v, std::size_t n, const std::size_t* ks, int m, double* out) {
        // Below ~256 values the bucket pass's setup costs more than selection. Between 256 and 4096
        // (the local background's annuli, ~1300 values at a 1.5 px PSF) the same buckets, fewer of
        // them (512) and a 64-value subsample for the range: ~3x faster than nth_element there
        // (issue 25), and exact like it.
        if (n < 256) {
            select_copy(v, n, ks, m, out);
            return;
        }
        const bool small = n < 4096;
        const std::size_t stride = small ? n / 64 : n / 512;
        scratch.clear();
        for (std::size_t i = 0; i < n; i += stride) scratch.push_back(v[i]);
        // The subsample's median and quartiles by selection (the median first, then each quartile in
        // its half), not a full sort: the same three values, 3x cheaper (issue 25).
        const std::size_t ns = scratch.size();  // >= 64
        const auto sb = scratch.begin();
        const auto h = static_cast<std::ptrdiff_t>(ns / 2);
        const auto q1 = static_cast<std::ptrdiff_t>(ns / 4), q3 = static_cast<std::ptrdiff_t>((3 * ns) / 4);
        std::nth_element(sb, sb + h, scratch.end());
        std::nth_element(sb, sb + q1, sb + h);
        if (q3 > h) std::nth_element(sb + h + 1, sb + q3, scratch.end());
        const double smed = scratch[ns / 2];
        const double sig = kIqrToSigma * (static_cast<double>(scratch[(3 * ns) / 4]) - scratch[ns / 4]);
        if (!(sig > 0.0) || !std::isfinite(sig)) {
            sorted_copy(v, n);
            for (int i = 0; i < m; ++i) out[i] = scratch[ks[i]];
            return;
        }
        const int nb = small ? 512 : 4096;
        // Bucket 0: below lo; 1..nb: the range; nb + 1: above. Monotone in v (float rounding is
        // monotone), so buckets keep the order. Indices are computed once, in a vectorisable loop.
        const float lo = static_cast<float>(smed - 10.0 * sig);
        const float scale = static_cast<float>(nb / (20.0 * sig));
        idx.resize(n);
        k->bucket_index(v, n, lo, scale, nb, idx.data());
        hist.assign(nb + 2, 0);
        for (std::size_t i = 0; i < n; ++i) ++hist[idx[i]];
        slot.assign(nb + 2, -1);
        std::vector<int> kb(m);
        std::vector<std::size_t> rank(m);
        int nslots = 0;
        std::vector<int> slot_bucket;
        for (int i = 0; i < m; ++i) {
            std::size_t cum = 0;
            int b = 0;
            while (cum + hist[b] <= ks[i]) cum += hist[b++];
            kb[i] = b;
            rank[i] = ks[i] - cum;
            if (slot[b] < 0) {
                slot[b] = nslots++;
                slot_bucket.push_back(b);
            }
        }
        // The selected buckets' values, in input order, each bucket in its own range of the pool.
        std::vector<std::size_t> start(static_cast<std::size_t>(nslots) + 1, 0);
        std::vector<std::uint16_t> bids(static_cast<std::size_t>(nslots));
        for (int s = 0; s < nslots; ++s) {
            start[s + 1] = start[s] + hist[slot_bucket[s]];
            bids[s] = static_cast<std::uint16_t>(slot_bucket[s]);
        }
        pool.resize(start[nslots]);
        std::vector<float*> dst(static_cast<std::size_t>(nslots));
        for (int s = 0; s < nslots; ++s) dst[s] = pool.data() + start[s];
        k->collect(v, idx.data(), n, slot.data(), bids.data(), nslots, dst.data());
        for (int i = 0; i < m; ++i) {
            const int s = slot[kb[i]];
            const auto b = pool.begin() + static_cast<std::ptrdiff_t>(start[s]);
            const auto e = pool.begin() + static_cast<std::ptrdiff_t>(start[s + 1]);
            std::nth_element(b, b + static_cast<std::ptrdiff_t>(rank[i]), e);
            out[i] = b[static_cast<std::ptrdiff_t>(rank[i])];
        }
    }

    // numpy-"linear" quantiles at fractions ps[0..m): index p (n - 1), linear between neighbours.
    void quantiles(const float* v, std::size_t n, const double* ps, int m, double* out) {
        std::vector<std::size_t> ks;
        for (int i = 0; i < m; ++i) {
            const auto k = static_cast<std::size_t>(std::floor(ps[i] * static_cast<double>(n - 1)));
            ks.push_back(k);
            ks.push_back(std::min(k + 1, n - 1));
        }
        std::vector<double> vals(ks.size());
        compute(v, n, ks.data(), static_cast<int>(ks.size()), vals.data());
        for (int i = 0; i < m; ++i) {
            const double idx = ps[i] * static_cast<double>(n - 1);
            const double frac = idx - std::floor(idx);
            const double a = vals[2 * i], b = vals[2 * i + 1];
            out[i] = frac > 0.0 ? a + frac * (b - a) : a;
        }
    }
};

struct MeanVar {
    double mean = kNaN;
    double var = kNaN;  // unbiased (n - 1)
    std::size_t n = 0;
};

using WindowSums = BgWindowSums;  // sums of 1, d and d^2 with d = x - shift

// Sums over lo <= x <= hi (background_kernels.hpp: eight interleaved lanes combined in a fixed
// order, so the loop streams, 1 ns -> 0.2 ns per value at SSE2 width, half that with AVX2, while
// the result stays the same for the same input on either path).
WindowSums window_sums(const BgKernels& k, const float* v, std::size_t n, double lo, double hi, double shift) {
    return k.window_sums(v, n, lo, hi, shift);
}

MeanVar mean_var(const BgKernels& k, const float* v, std::size_t n, double lo, double hi, double shift) {
    // shift near the mean keeps large offsets from costing precision.
    MeanVar out;
    const WindowSums w = window_sums(k, v, n, lo, hi, shift);
    const auto m = static_cast<std::size_t>(w.count);
    out.n = m;
    if (m == 0) return out;
    const double md = w.s / w.count;
    out.mean = shift + md;
    if (m > 1) out.var = std::max(0.0, (w.s2 - w.s * md) / (w.count - 1.0));
    return out;
}

// SExtractor's background estimate of one mesh (Bertin & Arnouts 1996 §3.2; SExtractor manual,
// "Background estimation"): mean and sigma of the pixels, then of those within +-2 sigma; a
// histogram of nlevels = min(int(sqrt(2/pi) 5/4 n + 1), 4096) bins over mean +- 5 sigma; clipping
// at median +- 3 sigma on the histogram until sigma converges; mode = 2.5 median - 1.5 mean when
// |mean - median| / sigma < 0.3, else the median. The median is the histogram's, interpolated
// within its bin, which matters for quantised (integer) data.
double sextractor_mode(const BgKernels& k, const float* v, std::size_t n, double* var_out) {
    // Population moments (SExtractor divides by n), accumulated about the first value.
    const double inf = std::numeric_limits<double>::infinity();
    const double shift = v[0];
    WindowSums w = window_sums(k, v, n, -inf, inf, shift);
    double md = w.s / w.count;
    double mean = shift + md;
    double sig = std::sqrt(std::max(0.0, w.s2 / w.count - md * md));
    const double lcut0 = static_cast<float>(mean - 2.0 * sig), hcut0 = static_cast<float>(mean + 2.0 * sig);
    w = window_sums(k, v, n, lcut0, hcut0, shift);
    const double n1 = w.count;
    if (n1 == 0.0) {
        *var_out = kNaN;
        return mean;
    }
    md = w.s / n1;
    mean = shift + md;
    sig = std::sqrt(std::max(0.0, w.s2 / n1 - md * md));
    if (!(sig > 0.0)) {
        *var_out = 0.0;
        return mean;
    }
    const double step = std::sqrt(2.0 / kPi) * 5.0 / 4.0;
    const int nlevels = static_cast<int>(std::min(step * n1 + 1.0, 4096.0));
    const double qscale = 2.0 * 5.0 * sig / nlevels;
    const double qzero = mean - 5.0 * sig;
    std::vector<double> hist(static_cast<std::size_t>(nlevels) + 1, 0.0);  // +1: a zero guard bin
    const double cste = 0.499999 - qzero / qscale;
    for (std::size_t i = 0; i < n; ++i) {
        // Truncation toward zero, as SExtractor's (int) cast: values just below the range land in bin 0.
        const double b = static_cast<double>(v[i]) / qscale + cste;
        if (b > -1.0 && b < nlevels) hist[static_cast<std::size_t>(static_cast<int>(b))] += 1.0;
    }
    const int top = nlevels - 1;
    int lcut = 0, hcut = top;
    double hsig = 10.0 * top, hsig_prev = 1.0, hmean = 0.0, hmed = 0.0, hsum = 0.0;
    for (int iter = 0; iter < 100 && hsig >= 0.1 && std::fabs(hsig / hsig_prev - 1.0) > 1e-4; ++iter) {
        hsig_prev = hsig;
        double sum = 0.0, m1 = 0.0, m2 = 0.0, low = 0.0, high = 0.0;
        int lo = lcut, hi = hcut;
        for (int i = lcut; i <= hcut; ++i) {
            // The median: consume bins from both ends, always on the lighter side.
            if (low < high) {
                low += hist[lo++];
            } else {
                high += hist[hi--];
            }
            const double h = hist[i];
            sum += h;
            m1 += h * i;
            m2 += h * i * static_cast<double>(i);
        }
        if (hi >= 0) {
            const double peak = std::max(hist[lo], hist[hi]);
            hmed = hi + 0.5 + (peak > 0.0 ? (high - low) / (2.0 * peak) : 0.0);
        } else {
            hmed = 0.0;
        }
        if (sum > 0.0) {
            hmean = m1 / sum;
            hsig = std::sqrt(std::max(0.0, m2 / sum - hmean * hmean));
        } else {
            hsig = 0.0;
        }
        hsum = sum;
        const double l = hmed - 3.0 * hsig, u = hmed + 3.0 * hsig;
        lcut = l > 0.0 ? static_cast<int>(l + 0.5) : 0;
        hcut = u < top ? static_cast<int>(u > 0.0 ? u + 0.5 : u - 0.5) : top;
        if (hcut < lcut) hcut = lcut;
    }
    double mode;
    if (hsig > 0.0) {
        mode = std::fabs((hmean - hmed) / hsig) < 0.3 ? qzero + (2.5 * hmed - 1.5 * hmean) * qscale
                                                      : qzero + hmed * qscale;
    } else {
        mode = qzero + hmean * qscale;
    }
    const double sigma = hsig * qscale;
    *var_out = hsum > 0.0 ? sigma * sigma / hsum : kNaN;
    return mode;
}

}  // namespace

namespace {

ClippedMeanVar clipped_mean_var_of(const float* v, std::size_t n, double n_sigma_clip, int n_iter, OrderStats& os) {
    // afw's MEANCLIP: start from the median with sigma = 0.7413 IQR, then n_iter passes of mean and
    // standard deviation over |x - centre| <= n_sigma_clip * sigma (inclusive, so a constant sample
    // keeps its values), each pass re-centring on the new mean.
    ClippedMeanVar out{kNaN, kNaN, kNaN, 0};
    if (n == 0) return out;
    static constexpr double kQuartiles[3] = {0.25, 0.5, 0.75};
    double q[3];
    os.quantiles(v, n, kQuartiles, 3, q);
    double center = q[1];
    double hwidth = n_sigma_clip * kIqrToSigma * (q[2] - q[0]);
    double last_var = kNaN;
    std::size_t last_n = 0;
    for (int it = 0; it < n_iter; ++it) {
        const MeanVar mv = mean_var(*os.k, v, n, center - hwidth, center + hwidth, center);
        if (mv.n == 0) break;  // only if the window is empty (a median between two far values)
        center = mv.mean;
        last_var = mv.var;
        last_n = mv.n;
        hwidth = std::isfinite(mv.var) ? n_sigma_clip * std::sqrt(mv.var) : 0.0;
    }
    out.mean = center;
    if (last_n == 0) {
        out.sigma = kIqrToSigma * (q[2] - q[0]);
        out.var = out.sigma * out.sigma;
        out.n_clip = n;
    } else {
        out.var = last_var;
        out.sigma = std::sqrt(last_var);
        out.n_clip = last_n;
    }
    return out;
}

double statistic_of(const float* v, std::size_t n, const BackgroundControl& ctrl, double* var_out, OrderStats& os) {
    double var = kNaN;
    double result = kNaN;
    if (n == 0) {
        *var_out = kNaN;
        return kNaN;
    }
    const double inf = std::numeric_limits<double>::infinity();
    static constexpr double kQuartiles[3] = {0.25, 0.5, 0.75};
    switch (ctrl.statistic) {
        case BackgroundStatistic::MEAN: {
            const MeanVar mv = mean_var(*os.k, v, n, -inf, inf, v[0]);
            result = mv.mean;
            var = mv.var / static_cast<double>(n);
            break;
        }
        case BackgroundStatistic::MEDIAN: {
            double q[3];
            os.quantiles(v, n, kQuartiles, 3, q);
            result = q[1];
            const double s = kIqrToSigma * (q[2] - q[0]);
            var = n > 1 ? 0.5 * kPi * s * s / static_cast<double>(n) : kNaN;
            break;
        }
        case BackgroundStatistic::MEANCLIP: {
            const ClippedMeanVar c = clipped_mean_var_of(v, n, ctrl.n_sigma_clip, ctrl.n_iter, os);
            result = c.mean;
            var = c.n_clip > 1 ? c.var / static_cast<double>(c.n_clip) : kNaN;
            break;
        }
        case BackgroundStatistic::MODE_SEXTRACTOR:
            result = sextractor_mode(*os.k, v, n, &var);
            break;
    }
    *var_out = var;
    return result;
}

}  // namespace

ClippedMeanVar clipped_mean_var(const float* values, std::size_t n, double n_sigma_clip, int n_iter) {
    OrderStats os(bg_kernels_for(false));
    return clipped_mean_var_of(values, n, n_sigma_clip, n_iter, os);
}

double bin_statistic(std::vector<float>& values, const BackgroundControl& ctrl, double* var_out) {
    OrderStats os(bg_kernels_for(ctrl.baseline_only));
    double var = kNaN;
    const double r = statistic_of(values.data(), values.size(), ctrl, &var, os);
    if (var_out) *var_out = var;
    return r;
}

BackgroundStats compute_background_stats(const float* image, std::ptrdiff_t image_stride,
                                         const std::int32_t* mask, std::ptrdiff_t mask_stride,
                                         const float* variance, std::ptrdiff_t variance_stride, int ny,
                                         int nx, const BackgroundControl& ctrl) {
    ctrl.validate();
    if (nx < 1 || ny < 1) throw std::invalid_argument("image is empty");
    BackgroundStats out;
    out.x = make_bin_axis(nx, ctrl.bin_size_x);
    out.y = make_bin_axis(ny, ctrl.bin_size_y);
    const int nxb = out.x.count(), nyb = out.y.count();
    const std::size_t nbins = static_cast<std::size_t>(nxb) * static_cast<std::size_t>(nyb);
    out.value.assign(nbins, kNaN);
    out.variance.assign(nbins, kNaN);
    out.npix.assign(nbins, 0);

    const int max_sx = *std::max_element(out.x.size.begin(), out.x.size.end());
    const int max_sy = *std::max_element(out.y.size.begin(), out.y.size.end());
    const std::size_t cap = static_cast<std::size_t>(max_sx) * static_cast<std::size_t>(max_sy);
    // One bin row at a time: gather the usable pixels of each bin of the row (cost: one read of
    // each pixel, and nx_bins * bin area floats of scratch, 2 MB for 32 bins of 128 x 128).
    // Each bin's stretch has 8 spare values: the AVX2 append stores eight at a time.
    const std::size_t stride = cap + 8;
    std::vector<float> gathered(stride * static_cast<std::size_t>(nxb));
    std::vector<std::size_t> count(nxb);
    const BgKernels& kern = bg_kernels_for(ctrl.baseline_only);
    OrderStats os(kern);
    const std::int32_t bad = ctrl.ignored_mask;
    for (int iy = 0; iy < nyb; ++iy) {
        std::fill(count.begin(), count.end(), 0);
        const int y0 = out.y.origin[iy], y1 = y0 + out.y.size[iy];
        for (int y = y0; y < y1; ++y) {
            const float* img = image + static_cast<std::ptrdiff_t>(y) * image_stride;
            const std::int32_t* msk = mask ? mask + static_cast<std::ptrdiff_t>(y) * mask_stride : nullptr;
            const float* var = variance ? variance + static_cast<std::ptrdiff_t>(y) * variance_stride : nullptr;
            for (int ix = 0; ix < nxb; ++ix) {
                const int x0 = out.x.origin[ix];
                float* dst = gathered.data() + stride * static_cast<std::size_t>(ix);
                count[ix] = kern.append_usable(img + x0, msk ? msk + x0 : nullptr, bad, var ? var + x0 : nullptr,
                                               out.x.size[ix], dst, count[ix]);
            }
        }
        for (int ix = 0; ix < nxb; ++ix) {
            const std::size_t k = static_cast<std::size_t>(iy) * nxb + ix;
            const std::size_t c = count[ix];
            out.npix[k] = static_cast<std::int64_t>(c);
            if (c == 0) continue;
            const float* src = gathered.data() + stride * static_cast<std::size_t>(ix);
            double var = kNaN;
            out.value[k] = statistic_of(src, c, ctrl, &var, os);
            out.variance[k] = var;
        }
    }
    return out;
}

// ------------------------------------------------------------------------------- interpolation

int Interpolant1D::min_points(InterpStyle style) {
    switch (style) {
        case InterpStyle::CONSTANT: return 1;
        case InterpStyle::LINEAR: return 2;
        case InterpStyle::NATURAL_SPLINE: return 3;
        case InterpStyle::AKIMA_SPLINE: return 5;
    }
    throw std::invalid_argument("unknown interpolation style");
}

namespace {

const char* style_name(InterpStyle s) {
    switch (s) {
        case InterpStyle::CONSTANT: return "CONSTANT";
        case InterpStyle::LINEAR: return "LINEAR";
        case InterpStyle::NATURAL_SPLINE: return "NATURAL_SPLINE";
        case InterpStyle::AKIMA_SPLINE: return "AKIMA_SPLINE";
    }
    return "?";
}

}  // namespace

Interpolant1D::Interpolant1D(const double* x, const double* y, std::size_t n, InterpStyle style,
                             UndersampleStyle undersample, Extrapolation extrapolation)
    : style_(style), extrapolation_(extrapolation), x_(x, x + n) {
    if (n == 0) throw std::invalid_argument("interpolation needs at least one point");
    for (std::size_t i = 1; i < n; ++i) {
        if (!(x[i] > x[i - 1])) throw std::invalid_argument("interpolation abscissae must be strictly increasing");
    }
    const int have = static_cast<int>(n);
    if (have < min_points(style_)) {
        if (undersample == UndersampleStyle::THROW_EXCEPTION) {
            throw std::length_error(std::string(style_name(style_)) + " needs " + std::to_string(min_points(style_)) +
                                    " points, got " + std::to_string(have));
        }
        // afw's REDUCE_INTERP_ORDER: the best style the points allow.
        style_ = have >= 3 ? InterpStyle::NATURAL_SPLINE : have == 2 ? InterpStyle::LINEAR : InterpStyle::CONSTANT;
    }
    if (style_ == InterpStyle::CONSTANT) {
        // Nearest point (one point: that value).
        a_.assign(y, y + n);
        lo_f_ = y[0];
        hi_f_ = y[n - 1];
        return;
    }
    const std::size_t ns = n - 1;
    std::vector<double> h(ns), m(ns);
    for (std::size_t k = 0; k < ns; ++k) {
        h[k] = x[k + 1] - x[k];
        m[k] = (y[k + 1] - y[k]) / h[k];
    }
    a_.assign(y, y + ns);
    b_.assign(ns, 0.0);
    c_.assign(ns, 0.0);
    d_.assign(ns, 0.0);
    if (style_ == InterpStyle::LINEAR) {
        b_ = m;
    } else if (style_ == InterpStyle::NATURAL_SPLINE) {
        // Second derivatives s with s[0] = s[n-1] = 0 (tridiagonal system, Thomas algorithm).
        std::vector<double> s(n, 0.0), diag(n, 1.0), rhs(n, 0.0), upper(n, 0.0), lower(n, 0.0);
        for (std::size_t i = 1; i + 1 < n; ++i) {
            lower[i] = h[i - 1];
            diag[i] = 2.0 * (h[i - 1] + h[i]);
            upper[i] = h[i];
            rhs[i] = 6.0 * (m[i] - m[i - 1]);
        }
        for (std::size_t i = 1; i < n; ++i) {
            const double w = lower[i] / diag[i - 1];
            diag[i] -= w * upper[i - 1];
            rhs[i] -= w * rhs[i - 1];
        }
        s[n - 1] = rhs[n - 1] / diag[n - 1];
        for (std::size_t i = n - 1; i-- > 0;) s[i] = (rhs[i] - upper[i] * s[i + 1]) / diag[i];
        s[0] = s[n - 1] = 0.0;
        for (std::size_t k = 0; k < ns; ++k) {
            b_[k] = m[k] - h[k] * (2.0 * s[k] + s[k + 1]) / 6.0;
            c_[k] = 0.5 * s[k];
            d_[k] = (s[k + 1] - s[k]) / (6.0 * h[k]);
        }
    } else {
        // Akima (1970): slope t_i = (|m_{i+1} - m_i| m_{i-1} + |m_{i-1} - m_{i-2}| m_i) / (sum of the
        // weights), the mean of m_{i-1} and m_i when both weights vanish; two slopes are added at
        // each end by linear extrapolation of the slopes (m_{-1} = 2 m_0 - m_1 ...), as GSL and scipy.
        std::vector<double> M(ns + 4);
        for (std::size_t k = 0; k < ns; ++k) M[k + 2] = m[k];
        M[1] = 2.0 * M[2] - M[3];
        M[0] = 2.0 * M[1] - M[2];
        M[ns + 2] = 2.0 * M[ns + 1] - M[ns];
        M[ns + 3] = 2.0 * M[ns + 2] - M[ns + 1];
        std::vector<double> t(n);
        for (std::size_t i = 0; i < n; ++i) {
            // m_{i-2} .. m_{i+1} are M[i] .. M[i+3].
            const double w1 = std::fabs(M[i + 3] - M[i + 2]);
            const double w2 = std::fabs(M[i + 1] - M[i]);
            t[i] = (w1 + w2) > 0.0 ? (w1 * M[i + 1] + w2 * M[i + 2]) / (w1 + w2) : 0.5 * (M[i + 1] + M[i + 2]);
        }
        for (std::size_t k = 0; k < ns; ++k) {
            b_[k] = t[k];
            c_[k] = (3.0 * m[k] - 2.0 * t[k] - t[k + 1]) / h[k];
            d_[k] = (t[k] + t[k + 1] - 2.0 * m[k]) / (h[k] * h[k]);
        }
    }
    lo_f_ = a_[0];
    lo_d1_ = b_[0];
    lo_d2_ = 2.0 * c_[0];
    const std::size_t L = ns - 1;
    const double hl = h[L];
    hi_f_ = y[n - 1];
    hi_d1_ = b_[L] + 2.0 * c_[L] * hl + 3.0 * d_[L] * hl * hl;
    hi_d2_ = 2.0 * c_[L] + 6.0 * d_[L] * hl;
}

std::size_t Interpolant1D::segment(double x, std::size_t hint) const {
    // Segment k with x_[k] <= x < x_[k+1], clamped to [0, n - 2].
    const std::size_t ns = x_.size() - 1;
    if (hint < ns && x >= x_[hint] && x < x_[hint + 1]) return hint;
    if (hint + 1 < ns && x >= x_[hint + 1] && x < x_[hint + 2]) return hint + 1;
    const auto it = std::upper_bound(x_.begin(), x_.end(), x);
    std::size_t k = it == x_.begin() ? 0 : static_cast<std::size_t>(it - x_.begin()) - 1;
    return std::min(k, ns - 1);
}

double Interpolant1D::eval_in(std::size_t seg, double x) const {
    const std::size_t n = x_.size();
    if (style_ == InterpStyle::CONSTANT) {
        if (n == 1) return a_[0];
        return (x - x_[seg] <= x_[seg + 1] - x) ? a_[seg] : a_[seg + 1];
    }
    if (extrapolation_ == Extrapolation::TAYLOR2) {
        if (x < x_[0]) {
            const double d = x - x_[0];
            return lo_f_ + d * (lo_d1_ + 0.5 * d * lo_d2_);
        }
        if (x > x_[n - 1]) {
            const double d = x - x_[n - 1];
            return hi_f_ + d * (hi_d1_ + 0.5 * d * hi_d2_);
        }
    }
    const double t = x - x_[seg];
    return a_[seg] + t * (b_[seg] + t * (c_[seg] + t * d_[seg]));
}

double Interpolant1D::operator()(double x) const {
    return eval_in(x_.size() > 1 ? segment(x, 0) : 0, x);
}

template <typename T>
void Interpolant1D::evaluate(const double* xs, std::size_t n, T* out) const {
    if (x_.size() == 1) {
        for (std::size_t k = 0; k < n; ++k) out[k] = static_cast<T>(a_[0]);
        return;
    }
    std::size_t seg = 0;
    for (std::size_t k = 0; k < n; ++k) {
        seg = segment(xs[k], seg);
        out[k] = static_cast<T>(eval_in(seg, xs[k]));
    }
}

template <typename T>
void Interpolant1D::evaluate_sorted(const double* xs, std::size_t n, T* out) const {
    const std::size_t nk = x_.size();
    if (nk == 1 || style_ == InterpStyle::CONSTANT) {
        evaluate(xs, n, out);
        return;
    }
    const std::size_t ns = nk - 1;
    // Column ranges: [0, first) left of x_[0]; segment k: x_[k] <= x < x_[k+1] (the last segment
    // also takes x == x_[n-1]); [last, n) right of x_[n-1].
    const std::size_t first = static_cast<std::size_t>(std::lower_bound(xs, xs + n, x_[0]) - xs);
    const std::size_t last = static_cast<std::size_t>(std::upper_bound(xs, xs + n, x_[nk - 1]) - xs);
    auto poly = [&](std::size_t seg, std::size_t c0, std::size_t c1) {
        const double x0 = x_[seg], a = a_[seg], b = b_[seg], c = c_[seg], d = d_[seg];
        for (std::size_t k = c0; k < c1; ++k) {
            const double t = xs[k] - x0;
            out[k] = static_cast<T>(a + t * (b + t * (c + t * d)));
        }
    };
    if (extrapolation_ == Extrapolation::TAYLOR2) {
        for (std::size_t k = 0; k < first; ++k) {
            const double t = xs[k] - x_[0];
            out[k] = static_cast<T>(lo_f_ + t * (lo_d1_ + 0.5 * t * lo_d2_));
        }
        for (std::size_t k = last; k < n; ++k) {
            const double t = xs[k] - x_[nk - 1];
            out[k] = static_cast<T>(hi_f_ + t * (hi_d1_ + 0.5 * t * hi_d2_));
        }
    } else {
        poly(0, 0, first);
        poly(ns - 1, last, n);
    }
    std::size_t c0 = first;
    for (std::size_t seg = 0; seg < ns; ++seg) {
        const std::size_t c1 = seg + 1 == ns ? last
                                             : std::max(c0, static_cast<std::size_t>(
                                                                std::lower_bound(xs + c0, xs + last, x_[seg + 1]) - xs));
        poly(seg, c0, c1);
        c0 = c1;
    }
}

template void Interpolant1D::evaluate_sorted<float>(const double*, std::size_t, float*) const;
template void Interpolant1D::evaluate_sorted<double>(const double*, std::size_t, double*) const;
template void Interpolant1D::evaluate<float>(const double*, std::size_t, float*) const;
template void Interpolant1D::evaluate<double>(const double*, std::size_t, double*) const;

template <typename T>
void interpolate_background(const double* stats, int ny_bins, int nx_bins, const double* xcen,
                            const double* ycen, InterpStyle style, UndersampleStyle undersample,
                            Extrapolation extrapolation, const double* xs, std::size_t nx,
                            const double* ys, std::size_t ny, T* out, std::ptrdiff_t out_stride) {
    if (ny_bins < 1 || nx_bins < 1) throw std::invalid_argument("the stats grid is empty");
    // Pass 1: along y in each bin column with a finite bin -> cols (ny, nx_bins), row-major.
    std::vector<double> cols(ny * static_cast<std::size_t>(nx_bins), kNaN);
    std::vector<char> valid(nx_bins, 0);
    const bool x_sorted = std::is_sorted(xs, xs + nx);
    const bool y_sorted = std::is_sorted(ys, ys + ny);
    std::vector<double> px, pv, colbuf(ny);
    for (int ix = 0; ix < nx_bins; ++ix) {
        px.clear();
        pv.clear();
        for (int iy = 0; iy < ny_bins; ++iy) {
            const double v = stats[static_cast<std::size_t>(iy) * nx_bins + ix];
            if (std::isfinite(v)) {
                px.push_back(ycen[iy]);
                pv.push_back(v);
            }
        }
        if (px.empty()) continue;
        std::unique_ptr<Interpolant1D> f;
        try {
            f = std::make_unique<Interpolant1D>(px.data(), pv.data(), px.size(), style, undersample, extrapolation);
        } catch (const std::length_error& err) {
            throw std::length_error("bin column " + std::to_string(ix) + ": " + err.what());
        }
        if (y_sorted) {
            f->evaluate_sorted<double>(ys, ny, colbuf.data());
        } else {
            f->evaluate<double>(ys, ny, colbuf.data());
        }
        for (std::size_t r = 0; r < ny; ++r) cols[r * nx_bins + ix] = colbuf[r];
        valid[ix] = 1;
    }
    px.clear();
    for (int ix = 0; ix < nx_bins; ++ix) {
        if (valid[ix]) px.push_back(xcen[ix]);
    }
    if (px.empty()) throw std::invalid_argument("no finite bin in the stats grid");
    // Pass 2: along x in each row through the valid columns.
    for (std::size_t r = 0; r < ny; ++r) {
        pv.clear();
        for (int ix = 0; ix < nx_bins; ++ix) {
            if (valid[ix]) pv.push_back(cols[r * nx_bins + ix]);
        }
        try {
            const Interpolant1D f(px.data(), pv.data(), px.size(), style, undersample, extrapolation);
            T* row = out + static_cast<std::ptrdiff_t>(r) * out_stride;
            if (x_sorted) {
                f.evaluate_sorted<T>(xs, nx, row);
            } else {
                f.evaluate<T>(xs, nx, row);
            }
        } catch (const std::length_error& err) {
            throw std::length_error(std::string("image row interpolation across bins: ") + err.what());
        }
    }
}

template void interpolate_background<float>(const double*, int, int, const double*, const double*, InterpStyle,
                                             UndersampleStyle, Extrapolation, const double*, std::size_t,
                                             const double*, std::size_t, float*, std::ptrdiff_t);
template void interpolate_background<double>(const double*, int, int, const double*, const double*, InterpStyle,
                                              UndersampleStyle, Extrapolation, const double*, std::size_t,
                                              const double*, std::size_t, double*, std::ptrdiff_t);

}  // namespace visitcal
