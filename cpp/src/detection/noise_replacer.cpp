// Noise replacement and its clipped statistics; see noise_replacer.hpp.
#include "visitcal/detection/noise_replacer.hpp"

#include "visitcal/detection/background.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

// The Gaussian transform must give the same bits everywhere: no fused multiply-add contraction
// (GCC in ISO mode, which CMake selects, does not contract; clang does unless told).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

namespace visitcal {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

ClippedStats clipped_mean_stdev(ImageView<const float> image, ImageView<const std::int32_t> mask,
                                std::int32_t ignored_mask, double n_sigma_clip, int n_iter, int sample_step) {
    if (!(n_sigma_clip > 0.0) || !std::isfinite(n_sigma_clip)) {
        throw std::invalid_argument("n_sigma_clip must be a finite number > 0");
    }
    if (n_iter < 0) throw std::invalid_argument("n_iter must be >= 0");
    if (sample_step < 1) throw std::invalid_argument("sample_step must be >= 1");
    if (mask.data && (mask.nx != image.nx || mask.ny != image.ny)) {
        throw std::invalid_argument("mask and image differ in shape");
    }
    // A step at least as large as the image samples pixel (0, 0) alone: clamped there, so that x += step and
    // nx + step - 1 cannot overflow int (a step near 2^31 crashed the loop).
    const int step = std::min(sample_step, std::max({image.nx, image.ny, 1}));
    const std::size_t nxs = static_cast<std::size_t>(std::max(image.nx + step - 1, 0) / step);
    const std::size_t nys = static_cast<std::size_t>(std::max(image.ny + step - 1, 0) / step);
    std::vector<float> v(nxs * nys);
    std::size_t used = 0;
    for (int y = 0; y < image.ny; y += step) {
        // Branch-free append: write every pixel, advance only over usable ones.
        const float* img = image.row(y);
        if (mask.data) {
            const std::int32_t* msk = mask.row(y);
            for (int x = 0; x < image.nx; x += step) {
                v[used] = img[x];
                used += (std::isfinite(img[x]) & ((msk[x] & ignored_mask) == 0)) ? 1 : 0;
            }
        } else {
            for (int x = 0; x < image.nx; x += step) {
                v[used] = img[x];
                used += std::isfinite(img[x]) ? 1 : 0;
            }
        }
    }
    v.resize(used);
    ClippedStats out{kNaN, kNaN, static_cast<std::int64_t>(v.size()), 0};
    if (v.empty()) return out;
    // The same MEANCLIP the background's bins use (background.hpp).
    const ClippedMeanVar c = clipped_mean_var(v.data(), v.size(), n_sigma_clip, n_iter);
    out.mean = c.mean;
    out.stdev = c.sigma;
    out.n_clip = static_cast<std::int64_t>(c.n_clip);
    return out;
}

double portable_log(double x) {
    if (!(x > 0.0) || !std::isfinite(x)) {
        return x == 0.0 ? -std::numeric_limits<double>::infinity() : kNaN;
    }
    int e = 0;
    double m = std::frexp(x, &e);  // x = m 2^e, m in [0.5, 1), exact
    constexpr double kSqrtHalf = 0.70710678118654752440;
    if (m < kSqrtHalf) {
        m *= 2.0;  // exact
        --e;
    }
    // m in [sqrt(1/2), sqrt(2)): ln m = 2 atanh(f) = 2 (f + f^3/3 + f^5/5 + ...), f = (m - 1)/(m + 1),
    // |f| <= 0.1716, f^2 <= 0.0295: twelve terms leave a truncation error below 1e-18.
    const double f = (m - 1.0) / (m + 1.0);
    const double f2 = f * f;
    double p = 1.0 / 23.0;
    p = p * f2 + 1.0 / 21.0;
    p = p * f2 + 1.0 / 19.0;
    p = p * f2 + 1.0 / 17.0;
    p = p * f2 + 1.0 / 15.0;
    p = p * f2 + 1.0 / 13.0;
    p = p * f2 + 1.0 / 11.0;
    p = p * f2 + 1.0 / 9.0;
    p = p * f2 + 1.0 / 7.0;
    p = p * f2 + 1.0 / 5.0;
    p = p * f2 + 1.0 / 3.0;
    // ln m = 2f + 2f f2 p: the leading term kept apart so its rounding does not swamp the rest.
    const double two_f = 2.0 * f;
    const double tail = two_f * (f2 * p);
    // ln 2 split so that e * kLn2Hi is exact for |e| < 2^11.
    constexpr double kLn2Hi = 6.93147180369123816490e-01;
    constexpr double kLn2Lo = 1.90821492927058770002e-10;
    const double de = static_cast<double>(e);
    return de * kLn2Hi + (two_f + (tail + de * kLn2Lo));
}

PortableNormal::PortableNormal(std::uint64_t seed) {
    if (seed <= 0xffffffffULL) {
        mt_.seed(static_cast<std::uint32_t>(seed));
    } else {
        std::seed_seq seq{static_cast<std::uint32_t>(seed & 0xffffffffULL), static_cast<std::uint32_t>(seed >> 32)};
        mt_.seed(seq);
    }
}

double PortableNormal::uniform() {
    const std::uint32_t a = static_cast<std::uint32_t>(mt_()) >> 5;
    const std::uint32_t b = static_cast<std::uint32_t>(mt_()) >> 6;
    return (static_cast<double>(a) * 67108864.0 + static_cast<double>(b)) * (1.0 / 9007199254740992.0);
}

double PortableNormal::operator()() {
    if (has_spare_) {
        has_spare_ = false;
        return spare_;
    }
    double v1, v2, s;
    do {
        v1 = 2.0 * uniform() - 1.0;
        v2 = 2.0 * uniform() - 1.0;
        s = v1 * v1 + v2 * v2;
    } while (s >= 1.0 || s == 0.0);
    const double factor = std::sqrt(-2.0 * portable_log(s) / s);
    spare_ = v2 * factor;
    has_spare_ = true;
    return v1 * factor;
}

NoiseReplacer::NoiseReplacer(ImageView<float> image, const FootprintList& footprints, double mean, double sigma,
                             std::uint64_t seed, int x0, int y0)
    : image_(image), x0_(x0), y0_(y0), mean_(mean), sigma_(sigma) {
    if (!std::isfinite(mean)) throw std::invalid_argument("NoiseReplacer: mean must be finite");
    if (!std::isfinite(sigma) || sigma < 0.0) throw std::invalid_argument("NoiseReplacer: sigma must be finite and >= 0");
    const std::size_t nfp = footprints.size();
    if (footprints.span_offsets.empty() || footprints.span_offsets.front() != 0 ||
        footprints.span_offsets.back() != static_cast<std::int64_t>(footprints.spans.size())) {
        throw std::invalid_argument("NoiseReplacer: span_offsets must run from 0 to the number of spans");
    }
    // Validate everything before touching the image.
    spans_.reserve(footprints.spans.size());
    for (const Span& s : footprints.spans) {
        const Span a{s.y - y0, s.x0 - x0, s.x1 - x0};
        if (a.y < 0 || a.y >= image.ny || a.x0 < 0 || a.x1 >= image.nx || a.x1 < a.x0) {
            throw std::invalid_argument("NoiseReplacer: span (y=" + std::to_string(s.y) + ", x0=" + std::to_string(s.x0) +
                                        ", x1=" + std::to_string(s.x1) + ") lies outside the image");
        }
        spans_.push_back(a);
    }
    span_offsets_ = footprints.span_offsets;
    for (std::size_t k = 0; k < nfp; ++k) {
        if (span_offsets_[k + 1] < span_offsets_[k]) throw std::invalid_argument("NoiseReplacer: span_offsets decrease");
    }
    pixel_offsets_.assign(nfp + 1, 0);
    for (std::size_t k = 0; k < nfp; ++k) {
        std::int64_t area = 0;
        for (std::int64_t i = span_offsets_[k]; i < span_offsets_[k + 1]; ++i) area += spans_[i].x1 - spans_[i].x0 + 1;
        pixel_offsets_[k + 1] = pixel_offsets_[k] + area;
    }
    const auto npix = static_cast<std::size_t>(pixel_offsets_[nfp]);

    // Row index for heavy insertion / removal: every span, bucketed by row, sorted by x0.
    row_start_.assign(static_cast<std::size_t>(image.ny) + 1, 0);
    for (const Span& s : spans_) ++row_start_[static_cast<std::size_t>(s.y) + 1];
    for (int y = 0; y < image.ny; ++y) row_start_[y + 1] += row_start_[y];
    rows_.resize(spans_.size());
    {
        std::vector<std::int64_t> fill(row_start_.begin(), row_start_.end() - 1);
        std::int64_t off = 0;
        for (const Span& s : spans_) {
            rows_[static_cast<std::size_t>(fill[s.y]++)] = {s.x0, s.x1, off};
            off += s.x1 - s.x0 + 1;
        }
        for (int y = 0; y < image.ny; ++y) {
            std::stable_sort(rows_.begin() + row_start_[y], rows_.begin() + row_start_[y + 1],
                             [](const RowEntry& a, const RowEntry& b) { return a.x0 < b.x0; });
        }
    }

    // 1. Originals, all of them before any pixel changes (overlapping footprints save the same values).
    original_.resize(npix);
    noise_.resize(npix);
    {
        std::size_t p = 0;
        for (const Span& s : spans_) {
            const float* row = image.row(s.y);
            for (int x = s.x0; x <= s.x1; ++x) original_[p++] = row[x];
        }
    }
    // 2. Noise in footprint, span, x order.
    PortableNormal normal(seed);
    for (std::size_t p = 0; p < npix; ++p) noise_[p] = static_cast<float>(mean + sigma * normal());
    // 3. Write the noise last footprint first, so a pixel ends with the first covering footprint's
    //    value, then read it back so every footprint's copy agrees with the image (one noise plane).
    for (std::size_t k = nfp; k-- > 0;) write(k, noise_);
    {
        std::size_t p = 0;
        for (const Span& s : spans_) {
            const float* row = image.row(s.y);
            for (int x = s.x0; x <= s.x1; ++x) noise_[p++] = row[x];
        }
    }
}

NoiseReplacer::~NoiseReplacer() {
    end();
}

void NoiseReplacer::write(std::size_t k, const std::vector<float>& src) {
    std::int64_t p = pixel_offsets_[k];
    for (std::int64_t i = span_offsets_[k]; i < span_offsets_[k + 1]; ++i) {
        const Span& s = spans_[static_cast<std::size_t>(i)];
        const std::size_t len = static_cast<std::size_t>(s.x1 - s.x0 + 1);
        std::copy_n(src.data() + p, len, image_.row(s.y) + s.x0);
        p += static_cast<std::int64_t>(len);
    }
}

void NoiseReplacer::check_live(const char* what) const {
    if (ended_) throw std::logic_error(std::string("NoiseReplacer.") + what + " called after end()");
}

void NoiseReplacer::insert(std::size_t k) {
    check_live("insert");
    if (k >= size()) throw std::out_of_range("NoiseReplacer.insert: footprint index out of range");
    write(k, original_);
}

void NoiseReplacer::remove(std::size_t k) {
    check_live("remove");
    if (k >= size()) throw std::out_of_range("NoiseReplacer.remove: footprint index out of range");
    write(k, noise_);
}

const float* NoiseReplacer::noise_of(std::size_t k) const {
    check_live("noise_of");
    if (k >= size()) throw std::out_of_range("NoiseReplacer.noise_of: footprint index out of range");
    return noise_.data() + pixel_offsets_[k];
}

// Calls f(row, x0, x1, offset into noise_ of x0, offset into the values of x0) for each covered run
// of each span (array frame), walking the row's entries sorted by x0 (overlapping entries are fine:
// they hold the same noise). Throws std::invalid_argument at the first uncovered pixel.
template <typename F>
void NoiseReplacer::for_each_covered(const Span* spans, std::size_t n, F&& f) const {
    std::int64_t vpos = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const int y = spans[i].y - y0_;
        const int xa = spans[i].x0 - x0_, xb = spans[i].x1 - x0_;
        int c = xa;
        if (y >= 0 && y < image_.ny) {
            for (std::int64_t e = row_start_[y]; e < row_start_[y + 1] && c <= xb; ++e) {
                const RowEntry& r = rows_[static_cast<std::size_t>(e)];
                if (r.x0 > c) break;  // sorted by x0: nothing later covers c
                if (r.x1 < c) continue;
                const int end = std::min(r.x1, xb);
                f(y, c, end, r.offset + (c - r.x0), vpos + (c - xa));
                c = end + 1;
            }
        }
        if (c <= xb) {
            throw std::invalid_argument("NoiseReplacer: span (y=" + std::to_string(spans[i].y) + ", x0=" +
                                        std::to_string(spans[i].x0) + ", x1=" + std::to_string(spans[i].x1) +
                                        ") leaves the replaced footprints");
        }
        vpos += xb - xa + 1;
    }
}

void NoiseReplacer::check_covered(const Span* spans, std::size_t n, const char* what) const {
    for (std::size_t i = 0; i < n; ++i) {
        if (spans[i].x1 < spans[i].x0) {
            throw std::invalid_argument(std::string("NoiseReplacer.") + what + ": span with x1 < x0");
        }
    }
    for_each_covered(spans, n, [](int, int, int, std::int64_t, std::int64_t) {});
}

void NoiseReplacer::insert_heavy(const Span* spans, std::size_t n, const float* values) {
    check_live("insert_heavy");
    check_covered(spans, n, "insert_heavy");
    // Values follow the given spans exactly; coverage was checked above, so nothing is half-written.
    std::int64_t vpos = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const int y = spans[i].y - y0_, xa = spans[i].x0 - x0_, xb = spans[i].x1 - x0_;
        std::copy_n(values + vpos, xb - xa + 1, image_.row(y) + xa);
        vpos += xb - xa + 1;
    }
}

void NoiseReplacer::remove_spans(const Span* spans, std::size_t n) {
    check_live("remove_spans");
    check_covered(spans, n, "remove_spans");
    for_each_covered(spans, n, [this](int y, int xa, int xb, std::int64_t off, std::int64_t) {
        std::copy_n(noise_.data() + off, xb - xa + 1, image_.row(y) + xa);
    });
}

void NoiseReplacer::end() {
    if (ended_) return;
    for (std::size_t k = 0; k < size(); ++k) write(k, original_);
    ended_ = true;
    // Free the buffers: a finished replacer holds no memory.
    std::vector<float>().swap(original_);
    std::vector<float>().swap(noise_);
    std::vector<RowEntry>().swap(rows_);
}

}  // namespace visitcal
