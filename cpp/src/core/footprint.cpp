#include "visitcal/core/footprint.hpp"
#include "visitcal/core/checked.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

namespace visitcal {

namespace {

bool span_less(const Span& a, const Span& b) { return a.y < b.y || (a.y == b.y && a.x0 < b.x0); }

// Merge runs of one row that overlap or touch; `first..last` sorted by x0.
void merge_row(std::vector<Span>::const_iterator first, std::vector<Span>::const_iterator last,
               std::vector<Span>& out) {
    Span cur = *first;
    for (auto it = first + 1; it != last; ++it) {
        if (it->x0 <= cur.x1 + 1) {
            cur.x1 = std::max(cur.x1, it->x1);
        } else {
            out.push_back(cur);
            cur = *it;
        }
    }
    out.push_back(cur);
}

struct UnionFind {
    std::vector<int> parent;
    explicit UnionFind(std::size_t n) : parent(n) { std::iota(parent.begin(), parent.end(), 0); }
    int find(int i) {
        while (parent[i] != i) {
            parent[i] = parent[parent[i]];  // path halving
            i = parent[i];
        }
        return i;
    }
    void unite(int a, int b) {
        a = find(a);
        b = find(b);
        if (a == b) return;
        // Keep the smaller index as root so labels follow raster order deterministically.
        if (a < b) parent[b] = a; else parent[a] = b;
    }
};

void check_span_in(const Span& s, int nx, int ny, int x0, int y0, const char* what) {
    if (s.y - y0 < 0 || s.y - y0 >= ny || s.x0 - x0 < 0 || s.x1 - x0 >= nx || s.x1 < s.x0) {
        throw std::invalid_argument(std::string(what) + ": span (y=" + std::to_string(s.y) + ", x0=" +
                                    std::to_string(s.x0) + ", x1=" + std::to_string(s.x1) +
                                    ") lies outside the image");
    }
}

}  // namespace

std::vector<Span> normalize_spans(std::vector<Span> spans) {
    std::vector<Span> out;
    if (spans.empty()) return out;
    int y_min = spans.front().y, y_max = spans.front().y;
    for (const Span& s : spans) {
        if (s.x1 < s.x0) {
            throw std::invalid_argument("span with x1 < x0 at y=" + std::to_string(s.y));
        }
        y_min = std::min(y_min, s.y);
        y_max = std::max(y_max, s.y);
    }
    const std::int64_t n_rows = static_cast<std::int64_t>(y_max) - y_min + 1;
    if (n_rows <= 4 * static_cast<std::int64_t>(spans.size()) + 1024) {
        // Counting sort by row (O(n + rows)): dilation and merging produce many spans over few rows.
        std::vector<std::int64_t> start(static_cast<std::size_t>(n_rows) + 1, 0);
        for (const Span& s : spans) ++start[static_cast<std::size_t>(s.y - y_min) + 1];
        std::partial_sum(start.begin(), start.end(), start.begin());
        std::vector<Span> sorted(spans.size());
        std::vector<std::int64_t> fill(start.begin(), start.end() - 1);
        for (const Span& s : spans) sorted[static_cast<std::size_t>(fill[static_cast<std::size_t>(s.y - y_min)]++)] = s;
        spans.swap(sorted);
        for (std::int64_t r = 0; r < n_rows; ++r) {
            auto b = spans.begin() + start[static_cast<std::size_t>(r)];
            auto e = spans.begin() + start[static_cast<std::size_t>(r) + 1];
            if (e - b > 1) std::sort(b, e, span_less);
        }
    } else {
        std::sort(spans.begin(), spans.end(), span_less);
    }
    out.reserve(spans.size());
    auto row_begin = spans.cbegin();
    for (auto it = spans.cbegin(); it != spans.cend(); ++it) {
        if (it + 1 == spans.cend() || (it + 1)->y != it->y) {
            merge_row(row_begin, it + 1, out);
            row_begin = it + 1;
        }
    }
    return out;
}

std::int64_t span_area(const std::vector<Span>& spans) {
    std::int64_t n = 0;
    for (const Span& s : spans) n += static_cast<std::int64_t>(s.x1) - s.x0 + 1;
    return n;
}

std::vector<Span> dilate_spans(const std::vector<Span>& spans, int radius) {
    if (radius < 0) throw std::invalid_argument("dilation radius must be >= 0, got " + std::to_string(radius));
    if (radius == 0 || spans.empty()) return spans;
    // Sizes and coordinates checked before the allocation: spans x (2 r + 1) rows are reserved, and
    // y +- r, x0 - r, x1 + r must not wrap in int.
    constexpr std::size_t kMaxGrown = std::size_t{1} << 26;  // 768 MB of spans
    if (static_cast<double>(spans.size()) * (2.0 * radius + 1.0) > static_cast<double>(kMaxGrown))
        throw std::invalid_argument("dilating " + std::to_string(spans.size()) + " spans by radius " +
                                    std::to_string(radius) + " makes more than 2^26 spans");
    for (const Span& sp : spans) {
        if (!fits_int(static_cast<double>(sp.y) - radius) || !fits_int(static_cast<double>(sp.y) + radius) ||
            !fits_int(static_cast<double>(sp.x0) - radius) || !fits_int(static_cast<double>(sp.x1) + radius))
            throw std::invalid_argument("dilation radius " + std::to_string(radius) +
                                        " moves a span outside the int32 range");
    }
    // Half-widths of the disc's rows: w(dy) = floor(sqrt(r^2 - dy^2)), computed in integers so the
    // stencil is exact (dx^2 + dy^2 <= r^2).
    std::vector<int> half(static_cast<std::size_t>(radius) + 1);
    for (int dy = 0; dy <= radius; ++dy) {
        const long long rem = static_cast<long long>(radius) * radius - static_cast<long long>(dy) * dy;
        long long w = static_cast<long long>(std::sqrt(static_cast<double>(rem)));
        while (w * w > rem) --w;
        while ((w + 1) * (w + 1) <= rem) ++w;
        half[static_cast<std::size_t>(dy)] = static_cast<int>(w);
    }
    std::vector<Span> grown;
    grown.reserve(spans.size() * (2 * static_cast<std::size_t>(radius) + 1));
    for (const Span& s : spans) {
        for (int dy = -radius; dy <= radius; ++dy) {
            const int w = half[static_cast<std::size_t>(std::abs(dy))];
            grown.push_back({s.y + dy, s.x0 - w, s.x1 + w});
        }
    }
    return normalize_spans(std::move(grown));
}

std::vector<Span> clip_spans(const std::vector<Span>& spans, int x_min, int y_min, int x_max, int y_max) {
    std::vector<Span> out;
    out.reserve(spans.size());
    for (const Span& s : spans) {
        if (s.y < y_min || s.y > y_max) continue;
        const int a = std::max(s.x0, x_min), b = std::min(s.x1, x_max);
        if (a <= b) out.push_back({s.y, a, b});
    }
    return out;
}

std::vector<int> label_span_components(const std::vector<Span>& spans, int& n_components) {
    const std::size_t n = spans.size();
    UnionFind uf(n);
    // Two pointers over consecutive rows: spans a (row y-1) and b (row y) touch under 8-connectivity
    // when a.x0 <= b.x1 + 1 and b.x0 <= a.x1 + 1.
    std::size_t prev_begin = 0, prev_end = 0, cur_begin = 0;
    while (cur_begin < n) {
        std::size_t cur_end = cur_begin;
        while (cur_end < n && spans[cur_end].y == spans[cur_begin].y) ++cur_end;
        if (prev_end > prev_begin && spans[prev_begin].y == spans[cur_begin].y - 1) {
            std::size_t p = prev_begin;
            for (std::size_t c = cur_begin; c < cur_end; ++c) {
                while (p < prev_end && spans[p].x1 + 1 < spans[c].x0) ++p;
                for (std::size_t q = p; q < prev_end && spans[q].x0 <= spans[c].x1 + 1; ++q) {
                    uf.unite(static_cast<int>(q), static_cast<int>(c));
                }
            }
        }
        prev_begin = cur_begin;
        prev_end = cur_end;
        cur_begin = cur_end;
    }
    std::vector<int> label(n, -1), root_label(n, -1);
    n_components = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const int r = uf.find(static_cast<int>(i));
        if (root_label[static_cast<std::size_t>(r)] < 0) root_label[static_cast<std::size_t>(r)] = n_components++;
        label[i] = root_label[static_cast<std::size_t>(r)];
    }
    return label;
}

namespace {

void sort_peaks(std::vector<Peak>::iterator b, std::vector<Peak>::iterator e) {
    std::stable_sort(b, e, [](const Peak& p, const Peak& q) {
        const float a = std::fabs(p.value), c = std::fabs(q.value);
        if (a != c) return a > c;
        return p.y < q.y || (p.y == q.y && p.x < q.x);
    });
}

// The index of the span of a normalized list holding pixel (x, y), or -1.
std::int64_t find_span(const std::vector<Span>& spans, int x, int y) {
    auto it = std::upper_bound(spans.begin(), spans.end(), Span{y, x, x},
                               [](const Span& a, const Span& b) { return span_less(a, b); });
    if (it == spans.begin()) return -1;
    --it;
    if (it->y == y && it->x0 <= x && x <= it->x1) return it - spans.begin();
    return -1;
}

}  // namespace

FootprintList grow_footprints(const FootprintList& in, int radius, bool combined, int width, int height) {
    FootprintList out;
    const std::size_t n = in.size();
    auto spans_of = [&](std::size_t k) {
        return std::vector<Span>(in.spans.begin() + in.span_offsets[k], in.spans.begin() + in.span_offsets[k + 1]);
    };
    if (!combined) {
        for (std::size_t k = 0; k < n; ++k) {
            std::vector<Span> g = clip_spans(dilate_spans(spans_of(k), radius), 0, 0, width - 1, height - 1);
            out.spans.insert(out.spans.end(), g.begin(), g.end());
            out.span_offsets.push_back(static_cast<std::int64_t>(out.spans.size()));
            out.peaks.insert(out.peaks.end(), in.peaks.begin() + in.peak_offsets[k], in.peaks.begin() + in.peak_offsets[k + 1]);
            out.peak_offsets.push_back(static_cast<std::int64_t>(out.peaks.size()));
        }
        return out;
    }
    std::vector<Span> all;
    for (std::size_t k = 0; k < n; ++k) {
        std::vector<Span> g = clip_spans(dilate_spans(spans_of(k), radius), 0, 0, width - 1, height - 1);
        all.insert(all.end(), g.begin(), g.end());
    }
    all = normalize_spans(std::move(all));
    int n_comp = 0;
    const std::vector<int> label = label_span_components(all, n_comp);
    // Each input footprint lies inside its grown self, so its first pixel names its component.
    std::vector<std::vector<std::size_t>> members(static_cast<std::size_t>(n_comp));
    for (std::size_t k = 0; k < n; ++k) {
        if (in.span_offsets[k + 1] == in.span_offsets[k]) continue;
        const Span& s = in.spans[static_cast<std::size_t>(in.span_offsets[k])];
        if (s.y < 0 || s.y >= height || s.x0 < 0 || s.x0 >= width) {
            throw std::invalid_argument("grow_footprints: footprint " + std::to_string(k) + " lies outside the image");
        }
        const std::int64_t i = find_span(all, s.x0, s.y);
        members[static_cast<std::size_t>(label[static_cast<std::size_t>(i)])].push_back(k);
    }
    // Spans of each component, in order (labels follow first-span order, so a stable bucket works).
    std::vector<std::int64_t> count(static_cast<std::size_t>(n_comp) + 1, 0);
    for (int l : label) ++count[static_cast<std::size_t>(l) + 1];
    std::partial_sum(count.begin(), count.end(), count.begin());
    out.spans.resize(all.size());
    std::vector<std::int64_t> fill(count.begin(), count.end() - 1);
    for (std::size_t i = 0; i < all.size(); ++i) {
        out.spans[static_cast<std::size_t>(fill[static_cast<std::size_t>(label[i])]++)] = all[i];
    }
    out.span_offsets.assign(count.begin(), count.end());
    for (int c = 0; c < n_comp; ++c) {
        const std::size_t first = out.peaks.size();
        for (std::size_t k : members[static_cast<std::size_t>(c)]) {
            out.peaks.insert(out.peaks.end(), in.peaks.begin() + in.peak_offsets[k], in.peaks.begin() + in.peak_offsets[k + 1]);
        }
        if (members[static_cast<std::size_t>(c)].size() > 1) {
            sort_peaks(out.peaks.begin() + static_cast<std::ptrdiff_t>(first), out.peaks.end());
        }
        out.peak_offsets.push_back(static_cast<std::int64_t>(out.peaks.size()));
    }
    return out;
}

void set_mask_over_spans(ImageView<std::int32_t> mask, const std::vector<Span>& spans, std::int32_t bits, int x0,
                         int y0) {
    for (const Span& s : spans) check_span_in(s, mask.nx, mask.ny, x0, y0, "set_mask_over_spans");
    for (const Span& s : spans) {
        std::int32_t* row = mask.row(s.y - y0);
        for (int x = s.x0 - x0; x <= s.x1 - x0; ++x) row[x] |= bits;
    }
}

template <typename T>
void gather_spans(ImageView<const T> image, const std::vector<Span>& spans, T* out, int x0, int y0) {
    for (const Span& s : spans) check_span_in(s, image.nx, image.ny, x0, y0, "gather_spans");
    for (const Span& s : spans) {
        const T* row = image.row(s.y - y0);
        out = std::copy(row + (s.x0 - x0), row + (s.x1 - x0) + 1, out);
    }
}

template <typename T>
void scatter_spans(ImageView<T> image, const std::vector<Span>& spans, const T* values, int x0, int y0) {
    for (const Span& s : spans) check_span_in(s, image.nx, image.ny, x0, y0, "scatter_spans");
    for (const Span& s : spans) {
        T* row = image.row(s.y - y0);
        const int n = s.x1 - s.x0 + 1;
        std::copy(values, values + n, row + (s.x0 - x0));
        values += n;
    }
}

template void gather_spans<float>(ImageView<const float>, const std::vector<Span>&, float*, int, int);
template void gather_spans<double>(ImageView<const double>, const std::vector<Span>&, double*, int, int);
template void gather_spans<std::int32_t>(ImageView<const std::int32_t>, const std::vector<Span>&, std::int32_t*, int, int);
template void scatter_spans<float>(ImageView<float>, const std::vector<Span>&, const float*, int, int);
template void scatter_spans<double>(ImageView<double>, const std::vector<Span>&, const double*, int, int);
template void scatter_spans<std::int32_t>(ImageView<std::int32_t>, const std::vector<Span>&, const std::int32_t*, int, int);

}  // namespace visitcal
