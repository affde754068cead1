#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "../image_view.hpp"
#include "visitcal/detection/convolve.hpp"

namespace py = pybind11;
using visitcal::ImageView;

namespace {

using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

template <typename T>
py::array_t<T> separable(const py::array_t<T, 0>& image, const std::vector<double>& kx, const std::vector<double>& ky,
                         bool baseline_only) {
    ImageView<const T> in = visitcal_bind::image_view<const T>(image, "image");
    py::array_t<T> result({static_cast<py::ssize_t>(in.ny), static_cast<py::ssize_t>(in.nx)});
    ImageView<T> out{result.mutable_data(), in.ny, in.nx, static_cast<std::ptrdiff_t>(in.nx)};
    {
        py::gil_scoped_release release;
        visitcal::convolve_separable<T>(in, out, kx, ky, baseline_only);
    }
    return result;
}

template <typename T>
py::array_t<T> direct_or_fft(const py::array_t<T, 0>& image, const DArray& kernel, bool fft, int tile,
                             bool baseline_only) {
    ImageView<const T> in = visitcal_bind::image_view<const T>(image, "image");
    if (kernel.ndim() != 2) throw std::invalid_argument("kernel must be 2-D");
    py::array_t<T> result({static_cast<py::ssize_t>(in.ny), static_cast<py::ssize_t>(in.nx)});
    ImageView<T> out{result.mutable_data(), in.ny, in.nx, static_cast<std::ptrdiff_t>(in.nx)};
    const int kny = static_cast<int>(kernel.shape(0)), knx = static_cast<int>(kernel.shape(1));
    {
        py::gil_scoped_release release;
        if (fft) {
            visitcal::convolve_fft<T>(in, out, kernel.data(), kny, knx, tile, baseline_only);
        } else {
            visitcal::convolve_direct<T>(in, out, kernel.data(), kny, knx, baseline_only);
        }
    }
    return result;
}

template <typename T>
py::array_t<T> direct(const py::array_t<T, 0>& image, const DArray& kernel, bool baseline_only) {
    return direct_or_fft<T>(image, kernel, false, 0, baseline_only);
}

template <typename T>
py::array_t<T> fft(const py::array_t<T, 0>& image, const DArray& kernel, int tile, bool baseline_only) {
    return direct_or_fft<T>(image, kernel, true, tile, baseline_only);
}

}  // namespace

void bind_convolve(py::module_& m) {
    m.def("gaussian_kernel_1d", &visitcal::gaussian_kernel_1d, py::arg("sigma"), py::arg("half_width"));
    m.def("convolve_separable", &separable<float>, py::arg("image").noconvert(), py::arg("kx"), py::arg("ky"),
          py::arg("baseline_only") = false);
    m.def("convolve_separable", &separable<double>, py::arg("image").noconvert(), py::arg("kx"), py::arg("ky"),
          py::arg("baseline_only") = false);
    m.def("convolve_direct", &direct<float>, py::arg("image").noconvert(), py::arg("kernel"),
          py::arg("baseline_only") = false);
    m.def("convolve_direct", &direct<double>, py::arg("image").noconvert(), py::arg("kernel"),
          py::arg("baseline_only") = false);
    m.def("convolve_fft", &fft<float>, py::arg("image").noconvert(), py::arg("kernel"), py::arg("tile") = 0,
          py::arg("baseline_only") = false);
    m.def("convolve_fft", &fft<double>, py::arg("image").noconvert(), py::arg("kernel"), py::arg("tile") = 0,
          py::arg("baseline_only") = false);
    m.def("fft_tile_size", &visitcal::fft_tile_size, py::arg("ny"), py::arg("nx"), py::arg("kny"), py::arg("knx"));
}
