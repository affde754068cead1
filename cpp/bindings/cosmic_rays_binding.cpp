// Bindings for cosmic_rays.hpp (issue 4): placeholder registered in module.cpp, filled in with the kernel.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_cosmic_rays(py::module_& /*m*/) {}
