// numpy (y, x) arrays as visitcal::ImageView without copying: shared by the bindings so every kernel
// refuses the same bad layouts with the same words.
#pragma once

#include <pybind11/numpy.h>

#include <stdexcept>
#include <string>
#include <type_traits>

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
    return {data, static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)),
            a.strides(0) / static_cast<py::ssize_t>(sizeof(U))};
}

}  // namespace visitcal_bind
