// Footprints: sets of pixels stored as row spans, with their peaks (afw's SpanSet / Footprint /
// PeakRecord). A span is one row's run [x0, x1] (inclusive, as afw). A span list is
// "normalized" when sorted by (y, x0) with no two spans on a row overlapping or touching, which
// makes it a canonical form: two pixel sets are equal exactly when their normalized spans are.
//
// Many footprints are kept flat (FootprintList): one span array and one peak array with offsets,
// because a detector holds 10^4 footprints and per-footprint heap objects would dominate the cost.
// Thread-safe: plain functions on values, no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "visitcal/core/image_view.hpp"

namespace visitcal {

struct Span {
    int y;
    int x0;  // inclusive
    int x1;  // inclusive
    bool operator==(const Span& o) const { return y == o.y && x0 == o.x0 && x1 == o.x1; }
};

/// A peak of a footprint: the integer pixel of a local maximum, its value in the image that was
/// thresholded (smoothed, signed as the image), its significance in sigma (always >= 0), and an id
/// that growing and merging carry along (0 until the caller numbers the peaks).
struct Peak {
    int x;
    int y;
    float value;
    float significance;
    std::int64_t id = 0;
};

/// Footprints stored flat: footprint k owns spans[span_offsets[k] .. span_offsets[k + 1]) and
/// peaks[peak_offsets[k] .. peak_offsets[k + 1]). Each footprint's spans are normalized; its peaks
/// are sorted by decreasing |value| (ties by raster order), as afw sorts them.
struct FootprintList {
    std::vector<Span> spans;
    std::vector<std::int64_t> span_offsets{0};
    std::vector<Peak> peaks;
    std::vector<std::int64_t> peak_offsets{0};

    std::size_t size() const { return span_offsets.size() - 1; }
};

/// Sort by (y, x0) and merge overlapping or adjacent spans. Throws std::invalid_argument for a span
/// with x1 < x0.
std::vector<Span> normalize_spans(std::vector<Span> spans);

/// Number of pixels of a normalized span list.
std::int64_t span_area(const std::vector<Span>& spans);

/// Dilate a normalized span list by a disc of integer radius r: every pixel within Euclidean distance
/// r (dx^2 + dy^2 <= r^2) of a member joins (afw's isotropic grow). r = 0 returns the input.
std::vector<Span> dilate_spans(const std::vector<Span>& spans, int radius);

/// Keep the parts of a normalized span list inside the inclusive box [x_min, x_max] x [y_min, y_max].
std::vector<Span> clip_spans(const std::vector<Span>& spans, int x_min, int y_min, int x_max, int y_max);

/// Connected components (8-connectivity: spans on adjacent rows touch when their x ranges overlap or
/// meet diagonally) of a normalized span list. Returns one label per span, 0..n-1, numbered in the
/// order of each component's first span.
std::vector<int> label_span_components(const std::vector<Span>& spans, int& n_components);

/// Grow every footprint by a disc of `radius` px and clip to [0, width) x [0, height). With
/// `combined`, footprints whose grown pixels touch are merged into one (their peaks concatenated and
/// re-sorted), afw's combinedGrow; otherwise each is grown alone and may overlap others.
FootprintList grow_footprints(const FootprintList& in, int radius, bool combined, int width, int height);

/// OR `bits` into the mask over the spans (which must lie inside the mask; out-of-range spans throw).
void set_mask_over_spans(ImageView<std::int32_t> mask, const std::vector<Span>& spans, std::int32_t bits,
                         int x0 = 0, int y0 = 0);

/// Copy the pixels under the spans, in span order, into `out` (span_area(spans) values). Spans are in
/// the parent frame; (x0, y0) is the parent position of image[0, 0]. Out-of-range spans throw.
template <typename T>
void gather_spans(ImageView<const T> image, const std::vector<Span>& spans, T* out, int x0 = 0, int y0 = 0);

/// The inverse of gather_spans: write `values` (in span order) into the image under the spans.
template <typename T>
void scatter_spans(ImageView<T> image, const std::vector<Span>& spans, const T* values, int x0 = 0, int y0 = 0);

}  // namespace visitcal
