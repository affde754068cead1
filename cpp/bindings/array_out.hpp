// std::vector results as new numpy arrays: shared by the bindings that return per-star columns.
#pragma once

#include <pybind11/numpy.h>

#include <vector>

namespace visitcal_bind {

namespace py = pybind11;

/// A new 1-D array of T holding v's values (converted element by element).
template <typename T, typename U = T>
py::array_t<T> vec(const std::vector<U>& v) {
    py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
    auto p = a.mutable_data();
    for (std::size_t i = 0; i < v.size(); ++i) p[i] = static_cast<T>(v[i]);
    return a;
}

}  // namespace visitcal_bind
