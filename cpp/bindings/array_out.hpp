// std::vector results as new numpy arrays: shared by the bindings that return per-star columns.
#pragma once

#include <pybind11/numpy.h>

#include <array>
#include <cstddef>
#include <string>
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

/// A flag-name registry (a std::array of C strings) as a list of str.
template <std::size_t N>
std::vector<std::string> names(const std::array<const char*, N>& a) {
    return std::vector<std::string>(a.begin(), a.end());
}

}  // namespace visitcal_bind
