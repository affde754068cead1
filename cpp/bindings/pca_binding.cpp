// Placeholder: filled in by the pca stem (issue 6).
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_pca(py::module_& m) { (void)m; }
