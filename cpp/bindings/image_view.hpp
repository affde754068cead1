// numpy (y, x) arrays as visitcal::ImageView without copying: shared by the bindings so every kernel
// refuses the same bad layouts with the same words.
#pragma once

#include <pybind11/numpy.h>

#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "visitcal/core/checked.hpp"
#include "visitcal/core/image_view.hpp"

namespace visitcal_bind {

namespace py = pybind11;

/// A view of a 2-D array contiguous along x (any whole-element row stride). With a const T the view
/// is read-only; with a mutable T the array must be writeable.
template <typename T>
visitcal::ImageView<T> image_view(const py::array_t<std::remove_const_t<T>, 0>& a, const char* name) {
    using U = std::remove_const_t<T>;
    if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D (y, x)");
    if (a.shape(1) > 1 && a.strides(1) != static_cast<py::ssize_t>(sizeof(U))) {
        throw std::invalid_argument(std::string(name) + " must be contiguous along x (its last axis)");
    }
    if (a.strides(0) % static_cast<py::ssize_t>(sizeof(U)) != 0) {
        throw std::invalid_argument(std::string(name) + " has a row stride that is not a whole number of pixels");
    }
    T* data;
    if constexpr (std::is_const_v<T>) {
        data = a.data();
    } else {
        if (!a.writeable()) throw std::invalid_argument(std::string(name) + " is read-only");
        data = const_cast<py::array_t<U, 0>&>(a).mutable_data();
    }
    if (a.shape(0) > std::numeric_limits<int>::max() || a.shape(1) > std::numeric_limits<int>::max()) {
        throw std::invalid_argument(std::string(name) + " has more than 2^31 - 1 rows or columns");
    }
    return {data, static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)),
            a.strides(0) / static_cast<py::ssize_t>(sizeof(U))};
}

/// The parent frame of an (ny, nx) image at (x0, y0) must fit in int: its last pixel x0 + nx - 1
/// (and y0 + ny - 1) is computed in int by the kernels.
inline void check_origin(int x0, int y0, int nx, int ny) {
    if (!visitcal::run_fits_int(x0, nx) || !visitcal::run_fits_int(y0, ny)) {
        throw std::invalid_argument("the image's parent frame (xy0 = (" + std::to_string(x0) + ", " +
                                    std::to_string(y0) + "), shape (" + std::to_string(ny) + ", " +
                                    std::to_string(nx) + ")) extends beyond the int32 range");
    }
}

}  // namespace visitcal_bind
