// Placeholder: filled in by the pixel_grid stem (issue 6).
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_pixel_grid(py::module_& m) { (void)m; }
