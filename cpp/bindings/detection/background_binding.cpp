// Bindings for background.hpp: statistics of a (y, x) float32 image with an int32 mask and an
// optional float32 variance (no copies: .noconvert()), and the full-image interpolation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "visitcal/detection/background.hpp"

namespace py = pybind11;
using namespace visitcal;

namespace {

using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

template <typename T>
std::ptrdiff_t row_stride(const py::array_t<T, 0>& a, const char* name, py::ssize_t ny, py::ssize_t nx) {
    if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D (y, x)");
    if (ny >= 0 && (a.shape(0) != ny || a.shape(1) != nx)) {
        throw std::invalid_argument(std::string(name) + " shape (" + std::to_string(a.shape(0)) + ", " +
                                    std::to_string(a.shape(1)) + ") differs from the image's (" +
                                    std::to_string(ny) + ", " + std::to_string(nx) + ")");
    }
    if (a.shape(1) > 1 && a.strides(1) != static_cast<py::ssize_t>(sizeof(T))) {
        throw std::invalid_argument(std::string(name) + " must be contiguous along x (its last axis)");
    }
    if (a.strides(0) % static_cast<py::ssize_t>(sizeof(T)) != 0) {
        throw std::invalid_argument(std::string(name) + " has a row stride that is not a whole number of elements");
    }
    return a.strides(0) / static_cast<py::ssize_t>(sizeof(T));
}

py::dict stats(const py::array_t<float, 0>& image, py::object mask, py::object variance, const BackgroundControl& ctrl) {
    const std::ptrdiff_t is = row_stride(image, "image", -1, -1);
    const py::ssize_t ny = image.shape(0), nx = image.shape(1);
    if (ny == 0 || nx == 0) throw std::invalid_argument("image is empty");
    const std::int32_t* mp = nullptr;
    const float* vp = nullptr;
    std::ptrdiff_t ms = 0, vs = 0;
    py::array_t<std::int32_t, 0> m;
    py::array_t<float, 0> v;
    if (!mask.is_none()) {
        m = mask.cast<py::array_t<std::int32_t, 0>>();
        ms = row_stride(m, "mask", ny, nx);
        mp = m.data();
    }
    if (!variance.is_none()) {
        v = variance.cast<py::array_t<float, 0>>();
        vs = row_stride(v, "variance", ny, nx);
        vp = v.data();
    }
    BackgroundStats s;
    {
        py::gil_scoped_release release;
        s = compute_background_stats(image.data(), is, mp, ms, vp, vs, static_cast<int>(ny), static_cast<int>(nx), ctrl);
    }
    const py::ssize_t nyb = s.y.count(), nxb = s.x.count();
    auto grid = [&](const auto& vec) {
        using V = typename std::decay_t<decltype(vec)>::value_type;
        py::array_t<V> a({nyb, nxb});
        std::copy(vec.begin(), vec.end(), a.mutable_data());
        return a;
    };
    py::dict d;
    d["value"] = grid(s.value);
    d["variance"] = grid(s.variance);
    d["npix"] = grid(s.npix);
    d["xcen"] = py::array_t<double>(nxb, s.x.center.data());
    d["ycen"] = py::array_t<double>(nyb, s.y.center.data());
    d["xorig"] = py::array_t<int>(nxb, s.x.origin.data());
    d["yorig"] = py::array_t<int>(nyb, s.y.origin.data());
    d["xsize"] = py::array_t<int>(nxb, s.x.size.data());
    d["ysize"] = py::array_t<int>(nyb, s.y.size.data());
    return d;
}

template <typename T>
void interp_into(const DArray& grid, const DArray& xcen, const DArray& ycen, int style, int undersample,
                 int extrapolation, const DArray& xs, const DArray& ys, py::array_t<T, 0> out) {
    if (grid.ndim() != 2) throw std::invalid_argument("stats must be 2-D (ny_bins, nx_bins)");
    const py::ssize_t nyb = grid.shape(0), nxb = grid.shape(1);
    if (xcen.ndim() != 1 || xcen.shape(0) != nxb) throw std::invalid_argument("xcen must have length nx_bins");
    if (ycen.ndim() != 1 || ycen.shape(0) != nyb) throw std::invalid_argument("ycen must have length ny_bins");
    if (xs.ndim() != 1 || ys.ndim() != 1) throw std::invalid_argument("x and y must be 1-D");
    if (style < 0 || style > 3) throw std::invalid_argument("unknown interpolation style");
    if (undersample < 0 || undersample > 1) throw std::invalid_argument("unknown undersample style");
    if (extrapolation < 0 || extrapolation > 1) throw std::invalid_argument("unknown extrapolation");
    const std::ptrdiff_t os = row_stride(out, "out", ys.shape(0), xs.shape(0));
    if (!out.writeable()) throw std::invalid_argument("out is read-only");
    T* dst = out.mutable_data();
    py::gil_scoped_release release;
    interpolate_background<T>(grid.data(), static_cast<int>(nyb), static_cast<int>(nxb), xcen.data(), ycen.data(),
                              static_cast<InterpStyle>(style), static_cast<UndersampleStyle>(undersample),
                              static_cast<Extrapolation>(extrapolation), xs.data(), static_cast<std::size_t>(xs.shape(0)),
                              ys.data(), static_cast<std::size_t>(ys.shape(0)), dst, os);
}

}  // namespace

void bind_background(py::module_& m) {
    py::class_<BackgroundControl>(m, "BackgroundControl")
        .def(py::init<>())
        .def_readwrite("bin_size_x", &BackgroundControl::bin_size_x)
        .def_readwrite("bin_size_y", &BackgroundControl::bin_size_y)
        .def_property(
            "statistic", [](const BackgroundControl& c) { return static_cast<int>(c.statistic); },
            [](BackgroundControl& c, int s) { c.statistic = static_cast<BackgroundStatistic>(s); })
        .def_readwrite("ignored_mask", &BackgroundControl::ignored_mask)
        .def_readwrite("n_sigma_clip", &BackgroundControl::n_sigma_clip)
        .def_readwrite("n_iter", &BackgroundControl::n_iter)
        .def_readwrite("baseline_only", &BackgroundControl::baseline_only,
                       "Use the portable loops even on an AVX2 CPU (the same results; for tests).")
        .def("validate", &BackgroundControl::validate);

    m.def("background_stats", &stats, py::arg("image").noconvert(), py::arg("mask"), py::arg("variance"),
          py::arg("ctrl"));
    m.def(
        "bin_statistic",
        [](const py::array_t<float, py::array::c_style | py::array::forcecast>& values, const BackgroundControl& ctrl) {
            ctrl.validate();
            std::vector<float> v(values.data(), values.data() + values.size());
            double var = 0.0;
            const double r = bin_statistic(v, ctrl, &var);
            return py::make_tuple(r, var);
        },
        py::arg("values"), py::arg("ctrl"));
    m.def(
        "interpolate_1d",
        [](const DArray& x, const DArray& y, int style, int undersample, int extrapolation, const DArray& xs) {
            if (x.ndim() != 1 || y.ndim() != 1 || x.shape(0) != y.shape(0)) {
                throw std::invalid_argument("x and y must be 1-D of the same length");
            }
            const Interpolant1D f(x.data(), y.data(), static_cast<std::size_t>(x.shape(0)),
                                  static_cast<InterpStyle>(style), static_cast<UndersampleStyle>(undersample),
                                  static_cast<Extrapolation>(extrapolation));
            py::array_t<double> out(xs.size());
            f.evaluate<double>(xs.data(), static_cast<std::size_t>(xs.size()), out.mutable_data());
            return py::make_tuple(out, static_cast<int>(f.style()));
        },
        py::arg("x"), py::arg("y"), py::arg("style"), py::arg("undersample"), py::arg("extrapolation"), py::arg("xs"));
    m.def("interpolate_background_into", &interp_into<float>, py::arg("stats"), py::arg("xcen"), py::arg("ycen"),
          py::arg("style"), py::arg("undersample"), py::arg("extrapolation"), py::arg("x"), py::arg("y"),
          py::arg("out").noconvert());
    m.def("interpolate_background_into", &interp_into<double>, py::arg("stats"), py::arg("xcen"), py::arg("ycen"),
          py::arg("style"), py::arg("undersample"), py::arg("extrapolation"), py::arg("x"), py::arg("y"),
          py::arg("out").noconvert());
}
