// Binding of visitcal/calib/healpix.hpp: nested HEALPix pixel indices (GIL released, inputs not copied).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "visitcal/calib/healpix.hpp"

namespace py = pybind11;

void bind_healpix(py::module_& m) {
    m.def(
        "healpix_nest_pixel",
        [](std::int64_t nside, const py::array_t<double, py::array::c_style>& ra,
           const py::array_t<double, py::array::c_style>& dec) {
            if (ra.ndim() != 1 || dec.ndim() != 1 || ra.shape(0) != dec.shape(0))
                throw std::invalid_argument("healpix_nest_pixel: ra and dec must be 1-D float64 arrays of one length");
            const auto n = static_cast<std::size_t>(ra.shape(0));
            py::array_t<std::int64_t> pixel(static_cast<py::ssize_t>(n));
            std::int64_t* out = pixel.mutable_data();
            {
                py::gil_scoped_release release;
                visitcal::healpix_nest_pixel(nside, ra.data(), dec.data(), n, out);
            }
            return pixel;
        },
        py::arg("nside"), py::arg("ra").noconvert(), py::arg("dec").noconvert());
}
