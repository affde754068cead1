// Sky sources (meas_algorithms' generateSkyObjects): discs of empty sky placed at
// quasi-random trial positions, each accepted only if it misses the avoided pixels and every sky
// source accepted before it. The trial positions (a scrambled Halton sequence scaled to the image
// shrunk by int(radius) + 1, truncated to int) are made in Python (visitcal.detection.sky_sources); this is
// the acceptance loop.
//
// Thread safety: a pure function; its scratch (one byte per image pixel) is per call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "visitcal/core/image_view.hpp"
#include "visitcal/core/footprint.hpp"

namespace visitcal {

/// The disc of integer `radius` centred on pixel (x, y): dx^2 + dy^2 <= radius^2 (afw's
/// SpanSet.fromShape(radius, CIRCLE)), as normalized spans.
std::vector<Span> disc_spans(int radius, int x, int y);

/// Walk the trials (xs[i], ys[i]) (parent frame) in order and return the indices of the accepted
/// ones, at most `n_sources`. The avoid set starts as the pixels with any of `avoid_bits` in `mask`,
/// dilated by a disc of `grow_mask` px; a trial is accepted when disc_spans(radius, x, y) meets no
/// avoided pixel, and then its disc dilated by `radius` joins the avoid set (so no two sky sources
/// come within ~2 radius of each other). Disc pixels off the image count as not avoided (trials
/// from the shrunk box never leave it). (x0, y0) is the parent position of mask[0, 0].
/// std::invalid_argument for radius < 0 or grow_mask < 0.
std::vector<std::int64_t> select_sky_sources(ImageView<const std::int32_t> mask, std::int32_t avoid_bits,
                                             int grow_mask, int radius, const int* xs, const int* ys,
                                             std::size_t n_trials, std::size_t n_sources, int x0 = 0, int y0 = 0);

}  // namespace visitcal
