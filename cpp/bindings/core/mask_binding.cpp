#include <pybind11/pybind11.h>

#include "visitcal/core/mask.hpp"

namespace py = pybind11;

void bind_mask(py::module_& m) {
    m.def("mask_planes", []() {
        py::list out;
        for (const auto& p : visitcal::kStandardMaskPlanes) out.append(py::make_tuple(p.name, p.bit, p.description));
        return out;
    });
}
