// Binding of visitcal/psf/lanczos.hpp: the Lanczos sub-pixel shift of a small image (tests compare its
// baseline and AVX2 builds; the PSF models call it from C++).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "visitcal/psf/lanczos.hpp"

namespace py = pybind11;

namespace {

py::array_t<double> lanczos_shift(const py::array_t<double, py::array::c_style | py::array::forcecast>& image,
                                  double dx, double dy, int order, bool baseline_only) {
    if (image.ndim() != 2) throw std::invalid_argument("image must be 2-D (y, x)");
    if (order < 1 || order > 64) throw std::invalid_argument("order must be in [1, 64], got " + std::to_string(order));
    const int ny = static_cast<int>(image.shape(0)), nx = static_cast<int>(image.shape(1));
    py::array_t<double> out({ny, nx});
    const double* in = image.data();
    double* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        if (baseline_only) {
            visitcal::shift_image_lanczos_baseline(in, nx, ny, dx, dy, order, o);
        } else {
            visitcal::shift_image_lanczos(in, nx, ny, dx, dy, order, o);
        }
    }
    return out;
}

}  // namespace

void bind_lanczos(py::module_& m) {
    m.def("shift_image_lanczos", &lanczos_shift, py::arg("image"), py::arg("dx"), py::arg("dy"), py::arg("order"),
          py::arg("baseline_only") = false,
          "Shift a (y, x) image by (dx, dy) px with a Lanczos kernel of the given order (zero outside).");
}
