#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_single_frame_measurement(py::module_& m) { (void)m; }
