// Sky-source acceptance loop; see sky_sources.hpp.
#include "visitcal/detection/sky_sources.hpp"

#include <algorithm>
#include <stdexcept>

namespace visitcal {

std::vector<Span> disc_spans(int radius, int x, int y) {
    if (radius < 0) throw std::invalid_argument("disc_spans: radius must be >= 0");
    return dilate_spans({Span{y, x, x}}, radius);
}

std::vector<std::int64_t> select_sky_sources(ImageView<const std::int32_t> mask, std::int32_t avoid_bits,
                                             int grow_mask, int radius, const int* xs, const int* ys,
                                             std::size_t n_trials, std::size_t n_sources, int x0, int y0) {
    if (radius < 0) throw std::invalid_argument("select_sky_sources: radius must be >= 0");
    if (grow_mask < 0) throw std::invalid_argument("select_sky_sources: grow_mask must be >= 0");
    const int nx = mask.nx, ny = mask.ny;
    std::vector<std::int64_t> accepted;
    if (n_sources == 0 || nx <= 0 || ny <= 0) return accepted;

    // The avoid set as one byte per pixel (16 MB for a 4072 x 4000 detector): a disc test is then
    // ~200 byte reads, and 500 trials cost nothing next to building the plane (one mask pass).
    std::vector<std::uint8_t> avoid(static_cast<std::size_t>(nx) * static_cast<std::size_t>(ny), 0);
    auto at = [&](int x, int y) -> std::uint8_t& { return avoid[static_cast<std::size_t>(y) * nx + x]; };
    std::vector<Span> runs;  // avoided pixels as spans (array frame), only needed to grow them
    for (int y = 0; y < ny; ++y) {
        const std::int32_t* m = mask.row(y);
        int x = 0;
        while (x < nx) {
            if ((m[x] & avoid_bits) == 0) {
                ++x;
                continue;
            }
            const int start = x;
            while (x < nx && (m[x] & avoid_bits) != 0) at(x++, y) = 1;
            if (grow_mask > 0) runs.push_back({y, start, x - 1});
        }
    }
    auto paint = [&](const std::vector<Span>& spans) {
        for (const Span& s : clip_spans(spans, 0, 0, nx - 1, ny - 1)) {
            std::fill(avoid.begin() + static_cast<std::ptrdiff_t>(s.y) * nx + s.x0,
                      avoid.begin() + static_cast<std::ptrdiff_t>(s.y) * nx + s.x1 + 1, std::uint8_t{1});
        }
    };
    if (grow_mask > 0 && !runs.empty()) paint(dilate_spans(runs, grow_mask));  // runs are normalized

    for (std::size_t i = 0; i < n_trials && accepted.size() < n_sources; ++i) {
        const int cx = xs[i] - x0, cy = ys[i] - y0;
        const std::vector<Span> disc = clip_spans(disc_spans(radius, cx, cy), 0, 0, nx - 1, ny - 1);
        bool hit = false;
        for (const Span& s : disc) {
            const std::uint8_t* row = avoid.data() + static_cast<std::ptrdiff_t>(s.y) * nx;
            for (int x = s.x0; x <= s.x1 && !hit; ++x) hit = row[x] != 0;
            if (hit) break;
        }
        if (hit) continue;
        accepted.push_back(static_cast<std::int64_t>(i));
        paint(dilate_spans(disc_spans(radius, cx, cy), radius));
    }
    return accepted;
}

}  // namespace visitcal
