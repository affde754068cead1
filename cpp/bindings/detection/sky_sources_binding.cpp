#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "../footprint_list.hpp"
#include "../image_view.hpp"
#include "visitcal/detection/sky_sources.hpp"

namespace py = pybind11;
using namespace visitcal_bind;

void bind_sky_sources(py::module_& m) {
    m.def("disc_spans", [](int radius, int x, int y) { return spans_to(visitcal::disc_spans(radius, x, y)); },
          py::arg("radius"), py::arg("x"), py::arg("y"));
    m.def(
        "select_sky_sources",
        [](const py::array_t<std::int32_t, 0>& mask, std::int64_t avoid_bits, int grow_mask, int radius,
           const py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>& xs,
           const py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>& ys, std::size_t n_sources, int x0,
           int y0) {
            auto view = image_view<const std::int32_t>(mask, "mask");
            if (xs.ndim() != 1 || ys.ndim() != 1 || xs.size() != ys.size()) {
                throw std::invalid_argument("xs and ys must be 1-D of the same length");
            }
            const auto bits = static_cast<std::int32_t>(static_cast<std::uint32_t>(avoid_bits & 0xffffffffLL));
            std::vector<std::int64_t> idx;
            {
                py::gil_scoped_release release;
                idx = visitcal::select_sky_sources(view, bits, grow_mask, radius, xs.data(), ys.data(),
                                                   static_cast<std::size_t>(xs.size()), n_sources, x0, y0);
            }
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(idx.size()));
            std::copy(idx.begin(), idx.end(), out.mutable_data());
            return out;
        },
        py::arg("mask").noconvert(), py::arg("avoid_bits"), py::arg("grow_mask"), py::arg("radius"), py::arg("xs"),
        py::arg("ys"), py::arg("n_sources"), py::arg("x0") = 0, py::arg("y0") = 0);
}
