#include "visitcal/detection/detection.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace visitcal {

namespace {

// Per-row predicate: flags[x] = 1 where the pixel is detected. Written branch-free over the row so
// the compiler vectorizes it; the threshold compare for pixel_stdev is done squared (s > 0 and
// s^2 > value^2 v) to avoid a square root per pixel.
template <typename T>
void threshold_row(const T* s, const T* v, int x_begin, int x_end, const ThresholdControl& c, std::uint8_t* flags) {
    const T pol = static_cast<T>(c.polarity);
    if (v) {
        const T v2 = static_cast<T>(c.value * c.value);
        for (int x = x_begin; x < x_end; ++x) {
            const T a = pol * s[x];
            flags[x] = static_cast<std::uint8_t>((a > T(0)) & (a * a > v2 * v[x]));
        }
    } else {
        const T t = static_cast<T>(c.value * c.constant_sigma);
        for (int x = x_begin; x < x_end; ++x) flags[x] = static_cast<std::uint8_t>(pol * s[x] > t);
    }
}

// What thresholding gathers row by row, for one control: the runs of detected pixels (raster order),
// the peak candidates of each run (local maxima above the include threshold, raster order; run i owns
// cands[cand_end[i - 1] .. cand_end[i])) and each run's highest pixel (the first on ties) with its
// sigma, for a footprint without a candidate. Everything the footprints need from the thresholded
// image, so it can be discarded row by row (find_footprints_smoothed never holds it whole).
template <typename T>
struct RowScan {
    std::vector<Span> runs;
    std::vector<Peak> cands;
    std::vector<std::int64_t> cand_end;
    std::vector<T> best_a;
    std::vector<int> best_x;
    std::vector<double> best_sigma;
};

void check_control(const ThresholdControl& ctrl, bool has_noise) {
    if (ctrl.polarity != 1 && ctrl.polarity != -1) throw std::invalid_argument("polarity must be +1 or -1");
    if (!(ctrl.value > 0.0) || !std::isfinite(ctrl.value)) {
        throw std::invalid_argument("threshold value must be finite and > 0, got " + std::to_string(ctrl.value));
    }
    if (!has_noise && !(ctrl.constant_sigma > 0.0 && std::isfinite(ctrl.constant_sigma))) {
        throw std::invalid_argument("constant_sigma must be finite and > 0");
    }
}

// Row y of the thresholded image s (with rows y - 1 and y + 1, null outside the image) and of the noise
// variance v (null: constant sigma), detected in columns [xb, xe). A pixel is a peak candidate when its
// neighbours before it in raster order are strictly lower and those after no higher (a plateau yields
// exactly its first pixel; NaN neighbours never block) and it exceeds the include threshold.
template <typename T>
void scan_row(const T* s_prev, const T* s, const T* s_next, const T* v, int y, int nx, int xb, int xe,
              const ThresholdControl& ctrl, std::uint8_t* flags, RowScan<T>& out) {
    threshold_row<T>(s, v, xb, xe, ctrl, flags);
    flags[static_cast<std::size_t>(xe)] = 0;
    const T pol = static_cast<T>(ctrl.polarity);
    const double include = ctrl.value * ctrl.include_multiplier;
    auto sigma_at = [&](int x) { return v ? std::sqrt(static_cast<double>(v[x])) : ctrl.constant_sigma; };
    const T* nbr_rows[3] = {s_prev, s, s_next};
    int x = xb;
    while (x < xe) {
        while (x < xe && !flags[static_cast<std::size_t>(x)]) ++x;
        if (x >= xe) break;
        const int x0 = x;
        while (flags[static_cast<std::size_t>(x)]) ++x;
        out.runs.push_back({y, x0, x - 1});
        T best = -std::numeric_limits<T>::infinity();
        int best_x = x0;
        for (int xp = x0; xp < x; ++xp) {
            const T a = pol * s[xp];
            if (a > best) { best = a; best_x = xp; }
            bool is_peak = true;
            for (int dy = -1; dy <= 1 && is_peak; ++dy) {
                const T* r = nbr_rows[dy + 1];
                if (!r) continue;
                for (int dx = -1; dx <= 1; ++dx) {
                    if (dx == 0 && dy == 0) continue;
                    const int xx = xp + dx;
                    if (xx < 0 || xx >= nx) continue;
                    const T nb = pol * r[xx];
                    const bool before = dy < 0 || (dy == 0 && dx < 0);
                    if (before ? (nb >= a) : (nb > a)) { is_peak = false; break; }
                }
            }
            if (!is_peak) continue;
            const double sig = sigma_at(xp);
            if (!(static_cast<double>(a) > include * sig)) continue;
            out.cands.push_back({xp, y, static_cast<float>(s[xp]), static_cast<float>(a / sig)});
        }
        out.cand_end.push_back(static_cast<std::int64_t>(out.cands.size()));
        out.best_a.push_back(best);
        out.best_x.push_back(best_x);
        out.best_sigma.push_back(sigma_at(best_x));
    }
}

// The runs' indices grouped by 8-connected component: component c owns grouped[start[c] .. start[c + 1]).
// Labels follow first-run order and the fill is stable, so components are in raster order of their first
// pixel and each group is in raster order.
std::vector<std::int64_t> group_runs(const std::vector<Span>& runs, int& n_comp, std::vector<std::int64_t>& start) {
    const std::vector<int> label = label_span_components(runs, n_comp);
    start.assign(static_cast<std::size_t>(n_comp) + 1, 0);
    for (int l : label) ++start[static_cast<std::size_t>(l) + 1];
    std::partial_sum(start.begin(), start.end(), start.begin());
    std::vector<std::int64_t> grouped(runs.size());
    std::vector<std::int64_t> fill(start.begin(), start.end() - 1);
    for (std::size_t i = 0; i < runs.size(); ++i) {
        grouped[static_cast<std::size_t>(fill[static_cast<std::size_t>(label[i])]++)] = static_cast<std::int64_t>(i);
    }
    return grouped;
}

// The footprints of a finished scan: connected runs, the min_pixels cut, each footprint's peaks (its
// candidates, or its highest pixel when it has none and that passes the include threshold; otherwise
// it is dropped, as SourceDetectionTask does with includeThresholdMultiplier), sorted by |value|.
template <typename T>
FootprintList assemble(const RowScan<T>& scan, const ThresholdControl& ctrl) {
    FootprintList out;
    const std::vector<Span>& runs = scan.runs;
    int n_comp = 0;
    std::vector<std::int64_t> start;
    const std::vector<std::int64_t> grouped = group_runs(runs, n_comp, start);
    const double include = ctrl.value * ctrl.include_multiplier;
    const T pol = static_cast<T>(ctrl.polarity);
    std::vector<Peak> peaks;
    for (int c = 0; c < n_comp; ++c) {
        const auto b = grouped.begin() + start[static_cast<std::size_t>(c)];
        const auto e = grouped.begin() + start[static_cast<std::size_t>(c) + 1];
        std::int64_t area = 0;
        for (auto it = b; it != e; ++it) area += runs[static_cast<std::size_t>(*it)].x1 - runs[static_cast<std::size_t>(*it)].x0 + 1;
        if (area < ctrl.min_pixels) continue;
        peaks.clear();
        T best = -std::numeric_limits<T>::infinity();
        std::int64_t best_run = *b;
        for (auto it = b; it != e; ++it) {
            const auto i = static_cast<std::size_t>(*it);
            const std::int64_t c0 = i ? scan.cand_end[i - 1] : 0;
            peaks.insert(peaks.end(), scan.cands.begin() + c0, scan.cands.begin() + scan.cand_end[i]);
            if (scan.best_a[i] > best) { best = scan.best_a[i]; best_run = *it; }
        }
        if (peaks.empty()) {
            const auto i = static_cast<std::size_t>(best_run);
            const double sig = scan.best_sigma[i];
            if (!(static_cast<double>(best) > include * sig)) continue;
            // pol * (pol * value) is the value itself (a sign flip is exact).
            peaks.push_back({scan.best_x[i], runs[i].y, static_cast<float>(pol * best), static_cast<float>(best / sig)});
        }
        std::stable_sort(peaks.begin(), peaks.end(), [](const Peak& p, const Peak& q) {
            const float a = std::fabs(p.value), d = std::fabs(q.value);
            if (a != d) return a > d;
            return p.y < q.y || (p.y == q.y && p.x < q.x);
        });
        for (auto it = b; it != e; ++it) out.spans.push_back(runs[static_cast<std::size_t>(*it)]);
        out.span_offsets.push_back(static_cast<std::int64_t>(out.spans.size()));
        out.peaks.insert(out.peaks.end(), peaks.begin(), peaks.end());
        out.peak_offsets.push_back(static_cast<std::int64_t>(out.peaks.size()));
    }
    return out;
}

}  // namespace

template <typename T>
FootprintList find_footprints(ImageView<const T> image, ImageView<const T> noise_variance, int border_x, int border_y,
                              const ThresholdControl& ctrl) {
    check_control(ctrl, noise_variance.data != nullptr);
    if (noise_variance.data && (noise_variance.nx != image.nx || noise_variance.ny != image.ny)) {
        throw std::invalid_argument("noise variance and image differ in shape");
    }
    if (border_x < 0 || border_y < 0) throw std::invalid_argument("borders must be >= 0");
    const int nx = image.nx, ny = image.ny;
    const int xb = border_x, xe = nx - border_x, yb = border_y, ye = ny - border_y;
    if (xe <= xb || ye <= yb) return FootprintList{};
    RowScan<T> scan;
    std::vector<std::uint8_t> flags(static_cast<std::size_t>(nx) + 1, 0);
    for (int y = yb; y < ye; ++y) {
        scan_row<T>(y > 0 ? image.row(y - 1) : nullptr, image.row(y), y + 1 < ny ? image.row(y + 1) : nullptr,
                    noise_variance.data ? noise_variance.row(y) : nullptr, y, nx, xb, xe, ctrl, flags.data(), scan);
    }
    return assemble(scan, ctrl);
}

template <typename T>
std::vector<FootprintList> find_footprints_smoothed(ImageView<const T> image, ImageView<const T> variance,
                                                    const std::vector<double>& kernel, NoiseModel noise,
                                                    const std::vector<ThresholdControl>& controls, int band_rows) {
    const bool has_noise = noise != NoiseModel::Constant;
    for (const ThresholdControl& c : controls) check_control(c, has_noise);
    if (has_noise && (variance.nx != image.nx || variance.ny != image.ny)) {
        throw std::invalid_argument("variance and image differ in shape");
    }
    if (band_rows < 1 || band_rows > (1 << 16)) {
        throw std::invalid_argument("band_rows must be in [1, 65536], got " + std::to_string(band_rows));
    }
    const int kn = static_cast<int>(kernel.size());
    if (kn % 2 == 0 || kn > image.nx || kn > image.ny) {
        throw std::invalid_argument("the smoothing kernel (" + std::to_string(kn) + " taps) must be odd and fit the "
                                    "image (" + std::to_string(image.ny) + ", " + std::to_string(image.nx) + ")");
    }
    const int h = kn / 2, nx = image.nx, ny = image.ny;
    std::vector<double> kernel2(kernel.size());
    for (std::size_t i = 0; i < kernel.size(); ++i) kernel2[i] = kernel[i] * kernel[i];
    std::vector<RowScan<T>> scans(controls.size());
    std::vector<std::uint8_t> flags(static_cast<std::size_t>(nx) + 1, 0);
    const int yb = h, ye = ny - h;
    // s holds the smoothed rows [y0 - 1, y1 + 1) of the band [y0, y1) (the peaks' neighbours), sv the
    // smoothed variance of [y0, y1). The two rows below the next band are carried over, not recomputed.
    const auto stride = static_cast<std::ptrdiff_t>(nx);
    std::vector<T> s(static_cast<std::size_t>(band_rows + 2) * static_cast<std::size_t>(nx));
    std::vector<T> sv(noise == NoiseModel::SmoothedVariance ? static_cast<std::size_t>(band_rows) * nx : 0);
    auto srow = [&](int i) { return s.data() + static_cast<std::ptrdiff_t>(i) * stride; };
    int have = 0;  // smoothed rows [y0 - 1, y0 - 1 + have) are in s
    for (int y0 = yb; y0 < ye; y0 += band_rows) {
        const int y1 = std::min(y0 + band_rows, ye);
        const int lo = std::max(y0 - 1, 0), hi = std::min(y1 + 1, ny);  // rows needed
        const int off = y0 - 1;  // image row of s's row 0 (row -1 when y0 == 0: never read)
        int first_new = lo;
        if (have == 2) {  // rows y0 - 1 and y0 from the previous band's last two
            std::copy(srow(band_rows), srow(band_rows + 2), srow(0));
            first_new = y0 + 1;
        }
        if (hi > first_new) {
            convolve_separable_rows<T>(image, ImageView<T>{srow(first_new - off), hi - first_new, nx, stride},
                                       first_new, kernel, kernel);
        }
        have = (y1 == y0 + band_rows && hi == y1 + 1) ? 2 : 0;
        const T* vband = nullptr;
        if (noise == NoiseModel::SmoothedVariance) {
            convolve_separable_rows<T>(variance, ImageView<T>{sv.data(), y1 - y0, nx, stride}, y0, kernel2, kernel2);
            vband = sv.data();
        }
        for (int y = y0; y < y1; ++y) {
            const T* v = nullptr;
            if (noise == NoiseModel::SmoothedVariance) v = vband + static_cast<std::ptrdiff_t>(y - y0) * stride;
            if (noise == NoiseModel::Variance) v = variance.row(y);
            for (std::size_t c = 0; c < controls.size(); ++c) {
                scan_row<T>(y > 0 ? srow(y - 1 - off) : nullptr, srow(y - off), y + 1 < ny ? srow(y + 1 - off) : nullptr,
                            v, y, nx, h, nx - h, controls[c], flags.data(), scans[c]);
            }
        }
    }
    std::vector<FootprintList> out;
    out.reserve(controls.size());
    for (std::size_t c = 0; c < controls.size(); ++c) out.push_back(assemble(scans[c], controls[c]));
    return out;
}

FootprintList find_mask_footprints(ImageView<const std::int32_t> mask, std::int32_t bits) {
    std::vector<Span> runs;
    for (int y = 0; y < mask.ny; ++y) {
        const std::int32_t* m = mask.row(y);
        int x = 0;
        while (x < mask.nx) {
            while (x < mask.nx && !(m[x] & bits)) ++x;
            if (x >= mask.nx) break;
            const int x0 = x;
            while (x < mask.nx && (m[x] & bits)) ++x;
            runs.push_back({y, x0, x - 1});
        }
    }
    int n_comp = 0;
    std::vector<std::int64_t> start;
    const std::vector<std::int64_t> grouped = group_runs(runs, n_comp, start);
    FootprintList out;
    out.spans.reserve(runs.size());
    for (int c = 0; c < n_comp; ++c) {
        for (std::int64_t k = start[static_cast<std::size_t>(c)]; k < start[static_cast<std::size_t>(c) + 1]; ++k) {
            out.spans.push_back(runs[static_cast<std::size_t>(grouped[static_cast<std::size_t>(k)])]);
        }
        out.span_offsets.push_back(static_cast<std::int64_t>(out.spans.size()));
        out.peak_offsets.push_back(0);
    }
    return out;
}

template <typename T>
std::int64_t count_invalid_pixels(ImageView<const T> image, ImageView<const T> variance, std::int64_t& first) {
    if (variance.nx != image.nx || variance.ny != image.ny) throw std::invalid_argument("variance and image differ in shape");
    std::int64_t n = 0;
    first = -1;
    const T big = std::numeric_limits<T>::max();
    for (int y = 0; y < image.ny; ++y) {
        const T* a = image.row(y);
        const T* v = variance.row(y);
        // Branch-free count per row (vectorizes): |a| <= max is false for NaN and inf; v > 0 && v <= max
        // is false for NaN, inf and non-positive values.
        int row_bad = 0;
        for (int x = 0; x < image.nx; ++x) {
            row_bad += static_cast<int>(!((std::fabs(a[x]) <= big) & (v[x] > T(0)) & (v[x] <= big)));
        }
        if (row_bad && first < 0) {
            for (int x = 0; x < image.nx; ++x) {
                if (!((std::fabs(a[x]) <= big) && v[x] > T(0) && v[x] <= big)) {
                    first = static_cast<std::int64_t>(y) * image.nx + x;
                    break;
                }
            }
        }
        n += row_bad;
    }
    return n;
}

template std::int64_t count_invalid_pixels<float>(ImageView<const float>, ImageView<const float>, std::int64_t&);
template std::int64_t count_invalid_pixels<double>(ImageView<const double>, ImageView<const double>, std::int64_t&);

template FootprintList find_footprints<float>(ImageView<const float>, ImageView<const float>, int, int,
                                              const ThresholdControl&);
template FootprintList find_footprints<double>(ImageView<const double>, ImageView<const double>, int, int,
                                               const ThresholdControl&);
template std::vector<FootprintList> find_footprints_smoothed<float>(ImageView<const float>, ImageView<const float>,
                                                                    const std::vector<double>&, NoiseModel,
                                                                    const std::vector<ThresholdControl>&, int);
template std::vector<FootprintList> find_footprints_smoothed<double>(ImageView<const double>, ImageView<const double>,
                                                                     const std::vector<double>&, NoiseModel,
                                                                     const std::vector<ThresholdControl>&, int);

}  // namespace visitcal
