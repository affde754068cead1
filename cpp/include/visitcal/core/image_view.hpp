// The non-owning 2-D image view every kernel takes (detection, PSF, measurement): the pixel layout
// of a numpy (y, x) array, x the fast axis, any whole-element row stride.
#pragma once

#include <cstddef>

namespace visitcal {

/// A 2-D image view, element (y, x) at data[y * stride + x] (x contiguous).
template <typename T>
struct ImageView {
    T* data;
    int ny;
    int nx;
    std::ptrdiff_t stride;
    T* row(int y) const { return data + static_cast<std::ptrdiff_t>(y) * stride; }
};

}  // namespace visitcal
