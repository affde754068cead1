// Bindings for footprint.hpp (issue 4): placeholder registered in module.cpp, filled in with the kernel.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_footprint(py::module_& /*m*/) {}
