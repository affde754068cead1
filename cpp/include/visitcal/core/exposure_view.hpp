// What a measurement plugin sees of an exposure: read-only (y, x) views of the image, mask and
// variance planes, with the parent-frame position (x0, y0) of their [0, 0] pixel. Plugins take
// positions in the parent frame (pixel centres at integers) and never throw for
// data problems: a failure sets flag bits and NaN values in the plugin's result struct.
#pragma once

#include <cmath>
#include <cstdint>

#include "visitcal/core/image_view.hpp"
#include "visitcal/core/geom.hpp"      // position_to_index

namespace visitcal {

struct ExposureView {
    ImageView<const float> image;
    ImageView<const std::int32_t> mask;
    ImageView<const float> variance;
    int x0 = 0;  // parent x of column 0
    int y0 = 0;  // parent y of row 0

    int width() const { return image.nx; }
    int height() const { return image.ny; }
    /// Does the parent pixel (x, y) lie on the image?
    bool contains(int x, int y) const { return x >= x0 && y >= y0 && x < x0 + image.nx && y < y0 + image.ny; }
    // Parent-frame accessors (no bounds check).
    float img(int x, int y) const { return image.row(y - y0)[x - x0]; }
    float var(int x, int y) const { return variance.row(y - y0)[x - x0]; }
    std::int32_t msk(int x, int y) const { return mask.row(y - y0)[x - x0]; }
};

}  // namespace visitcal
