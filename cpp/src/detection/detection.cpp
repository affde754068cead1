#include "visitcal/detection/detection.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

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

}  // namespace

template <typename T>
FootprintList find_footprints(ImageView<const T> image, ImageView<const T> noise_variance, int border_x, int border_y,
                              const ThresholdControl& ctrl) {
    if (ctrl.polarity != 1 && ctrl.polarity != -1) throw std::invalid_argument("polarity must be +1 or -1");
    if (!(ctrl.value > 0.0) || !std::isfinite(ctrl.value)) {
        throw std::invalid_argument("threshold value must be finite and > 0, got " + std::to_string(ctrl.value));
    }
    if (!noise_variance.data && !(ctrl.constant_sigma > 0.0 && std::isfinite(ctrl.constant_sigma))) {
        throw std::invalid_argument("constant_sigma must be finite and > 0");
    }
    if (noise_variance.data && (noise_variance.nx != image.nx || noise_variance.ny != image.ny)) {
        throw std::invalid_argument("noise variance and image differ in shape");
    }
    if (border_x < 0 || border_y < 0) throw std::invalid_argument("borders must be >= 0");
    const int nx = image.nx, ny = image.ny;
    const int xb = border_x, xe = nx - border_x, yb = border_y, ye = ny - border_y;
    FootprintList out;
    if (xe <= xb || ye <= yb) return out;

    // 1. Runs of detected pixels, row by row, already normalized (sorted, disjoint, not touching).
    std::vector<Span> runs;
    std::vector<std::uint8_t> flags(static_cast<std::size_t>(nx) + 1, 0);
    for (int y = yb; y < ye; ++y) {
        const T* v = noise_variance.data ? noise_variance.row(y) : nullptr;
        threshold_row<T>(image.row(y), v, xb, xe, ctrl, flags.data());
        flags[static_cast<std::size_t>(xe)] = 0;
        int x = xb;
        while (x < xe) {
            while (x < xe && !flags[static_cast<std::size_t>(x)]) ++x;
            if (x >= xe) break;
            const int x0 = x;
            while (flags[static_cast<std::size_t>(x)]) ++x;
            runs.push_back({y, x0, x - 1});
        }
    }
    int n_comp = 0;
    const std::vector<int> label = label_span_components(runs, n_comp);

    // 2. Group spans by component (labels follow first-span order, so this keeps raster order).
    std::vector<std::int64_t> start(static_cast<std::size_t>(n_comp) + 1, 0);
    for (int l : label) ++start[static_cast<std::size_t>(l) + 1];
    std::partial_sum(start.begin(), start.end(), start.begin());
    std::vector<Span> grouped(runs.size());
    {
        std::vector<std::int64_t> fill(start.begin(), start.end() - 1);
        for (std::size_t i = 0; i < runs.size(); ++i) {
            grouped[static_cast<std::size_t>(fill[static_cast<std::size_t>(label[i])]++)] = runs[i];
        }
    }

    // 3. Peaks per component, then the keep/drop decision.
    const T pol = static_cast<T>(ctrl.polarity);
    auto value_at = [&](int x, int y) { return pol * image.row(y)[x]; };
    auto sigma_at = [&](int x, int y) {
        return noise_variance.data ? std::sqrt(static_cast<double>(noise_variance.row(y)[x])) : ctrl.constant_sigma;
    };
    const double include = ctrl.value * ctrl.include_multiplier;
    std::vector<Peak> peaks;
    for (int c = 0; c < n_comp; ++c) {
        const auto b = grouped.begin() + start[static_cast<std::size_t>(c)];
        const auto e = grouped.begin() + start[static_cast<std::size_t>(c) + 1];
        std::int64_t area = 0;
        for (auto it = b; it != e; ++it) area += it->x1 - it->x0 + 1;
        if (area < ctrl.min_pixels) continue;
        peaks.clear();
        T best = -std::numeric_limits<T>::infinity();
        int best_x = b->x0, best_y = b->y;
        for (auto it = b; it != e; ++it) {
            const int y = it->y;
            for (int x = it->x0; x <= it->x1; ++x) {
                const T a = value_at(x, y);
                if (a > best) { best = a; best_x = x; best_y = y; }
                bool is_peak = true;
                // Neighbours before (x, y) in raster order must be strictly lower, those after no
                // higher: a plateau yields exactly its first pixel. NaN neighbours never block.
                for (int dy = -1; dy <= 1 && is_peak; ++dy) {
                    const int yy = y + dy;
                    if (yy < 0 || yy >= ny) continue;
                    for (int dx = -1; dx <= 1; ++dx) {
                        if (dx == 0 && dy == 0) continue;
                        const int xx = x + dx;
                        if (xx < 0 || xx >= nx) continue;
                        const T nb = value_at(xx, yy);
                        const bool before = dy < 0 || (dy == 0 && dx < 0);
                        if (before ? (nb >= a) : (nb > a)) { is_peak = false; break; }
                    }
                }
                if (!is_peak) continue;
                const double sig = sigma_at(x, y);
                if (!(static_cast<double>(a) > include * sig)) continue;
                peaks.push_back({x, y, static_cast<float>(image.row(y)[x]), static_cast<float>(a / sig)});
            }
        }
        if (peaks.empty()) {
            // A footprint whose highest pixel misses the include threshold is dropped (as SourceDetectionTask
            // does with includeThresholdMultiplier);
            // otherwise its maximum is a peak even if an out-of-footprint neighbour ties with it.
            const double sig = sigma_at(best_x, best_y);
            if (!(static_cast<double>(best) > include * sig)) continue;
            peaks.push_back({best_x, best_y, static_cast<float>(image.row(best_y)[best_x]), static_cast<float>(best / sig)});
        }
        std::stable_sort(peaks.begin(), peaks.end(), [](const Peak& p, const Peak& q) {
            const float a = std::fabs(p.value), d = std::fabs(q.value);
            if (a != d) return a > d;
            return p.y < q.y || (p.y == q.y && p.x < q.x);
        });
        out.spans.insert(out.spans.end(), b, e);
        out.span_offsets.push_back(static_cast<std::int64_t>(out.spans.size()));
        out.peaks.insert(out.peaks.end(), peaks.begin(), peaks.end());
        out.peak_offsets.push_back(static_cast<std::int64_t>(out.peaks.size()));
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

}  // namespace visitcal
