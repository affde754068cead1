// numpy image/mask/variance triplets as a visitcal::ExposureView: shared by the measurement and
// deblender bindings so they refuse mismatched planes with the same words.
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>
#include <stdexcept>

#include "image_view.hpp"
#include "visitcal/core/exposure_view.hpp"

namespace visitcal_bind {

namespace py = pybind11;

/// The three planes (y, x) of one exposure with its pixel origin (x0, y0); they must share a shape.
inline visitcal::ExposureView exposure_view(const py::array_t<float, 0>& image,
                                            const py::array_t<std::int32_t, 0>& mask,
                                            const py::array_t<float, 0>& variance, int x0, int y0) {
    visitcal::ExposureView ev{image_view<const float>(image, "image"), image_view<const std::int32_t>(mask, "mask"),
                              image_view<const float>(variance, "variance"), x0, y0};
    if (ev.mask.ny != ev.image.ny || ev.mask.nx != ev.image.nx || ev.variance.ny != ev.image.ny ||
        ev.variance.nx != ev.image.nx) {
        throw std::invalid_argument("image, mask and variance must have the same shape");
    }
    check_origin(x0, y0, ev.image.nx, ev.image.ny);
    return ev;
}

}  // namespace visitcal_bind
