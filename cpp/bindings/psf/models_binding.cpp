// Bindings of the PSF interface. `_core.Psf` can be subclassed in Python (PyPsf below re-enters Python,
// taking the GIL, when C++ code such as the measurement driver calls a Python model), so a PSF
// written in Python (the simulator's GalSim TruePsf) measures exactly like a C++ one.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "visitcal/psf/models.hpp"

namespace py = pybind11;
using visitcal::FixedImagePsf;
using visitcal::GaussianPsf;
using visitcal::Moments;
using visitcal::Psf;
using visitcal::PsfImage;

namespace {

py::tuple image_to_python(const PsfImage& img) {
    py::array_t<double> a({img.height, img.width});
    std::copy(img.data.begin(), img.data.end(), a.mutable_data());
    return py::make_tuple(a, img.x0, img.y0);
}

PsfImage image_from_python(const py::object& result, const char* method) {
    auto t = result.cast<py::tuple>();
    if (t.size() != 3) throw std::runtime_error(std::string("Psf.") + method + " must return (array, x0, y0)");
    auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(t[0]);
    if (!a || a.ndim() != 2) throw std::runtime_error(std::string("Psf.") + method + " must return a 2-D array");
    PsfImage img(static_cast<int>(a.shape(1)), static_cast<int>(a.shape(0)), t[1].cast<int>(), t[2].cast<int>());
    std::copy(a.data(), a.data() + a.size(), img.data.begin());
    return img;
}

class PyPsf : public Psf {
public:
    PsfImage compute_image(double x, double y) const override {
        py::gil_scoped_acquire gil;
        py::function f = py::get_override(static_cast<const Psf*>(this), "compute_image");
        if (!f) throw std::runtime_error("Psf subclass does not implement compute_image");
        return image_from_python(f(x, y), "compute_image");
    }
    PsfImage compute_kernel_image(double x, double y) const override {
        py::gil_scoped_acquire gil;
        py::function f = py::get_override(static_cast<const Psf*>(this), "compute_kernel_image");
        if (!f) throw std::runtime_error("Psf subclass does not implement compute_kernel_image");
        return image_from_python(f(x, y), "compute_kernel_image");
    }
    Moments compute_shape(double x, double y) const override {
        {
            py::gil_scoped_acquire gil;
            py::function f = py::get_override(static_cast<const Psf*>(this), "compute_shape");
            if (f) {
                auto t = f(x, y).cast<py::tuple>();
                return Moments{t[0].cast<double>(), t[1].cast<double>(), t[2].cast<double>()};
            }
        }
        return Psf::compute_shape(x, y);
    }
    double compute_aperture_flux(double radius, double x, double y) const override {
        {
            py::gil_scoped_acquire gil;
            py::function f = py::get_override(static_cast<const Psf*>(this), "compute_aperture_flux");
            if (f) return f(radius, x, y).cast<double>();
        }
        return Psf::compute_aperture_flux(radius, x, y);
    }
    std::array<double, 2> average_position() const override {
        py::gil_scoped_acquire gil;
        py::function f = py::get_override(static_cast<const Psf*>(this), "average_position");
        if (!f) throw std::runtime_error("Psf subclass does not implement average_position");
        auto t = f().cast<py::tuple>();
        return {t[0].cast<double>(), t[1].cast<double>()};
    }
};

}  // namespace

void bind_psf(py::module_& m) {
    py::class_<Psf, PyPsf, std::shared_ptr<Psf>>(m, "Psf")
        .def(py::init<>())
        .def("compute_image", [](const Psf& p, double x, double y) { return image_to_python(p.compute_image(x, y)); })
        .def("compute_kernel_image",
             [](const Psf& p, double x, double y) { return image_to_python(p.compute_kernel_image(x, y)); })
        .def("compute_shape",
             [](const Psf& p, double x, double y) {
                 const Moments s = p.compute_shape(x, y);
                 return py::make_tuple(s.xx, s.yy, s.xy);
             })
        .def("compute_aperture_flux", &Psf::compute_aperture_flux, py::arg("radius"), py::arg("x"), py::arg("y"))
        .def("average_position", [](const Psf& p) {
            const auto a = p.average_position();
            return py::make_tuple(a[0], a[1]);
        });

    py::class_<GaussianPsf, Psf, std::shared_ptr<GaussianPsf>>(m, "GaussianPsf")
        .def(py::init([](int size, double sigma, std::array<double, 2> avg) { return std::make_shared<GaussianPsf>(size, sigma, avg); }),
             py::arg("size"), py::arg("sigma"), py::arg("average_position"))
        .def_property_readonly("size", &GaussianPsf::size)
        .def_property_readonly("sigma", &GaussianPsf::sigma);

    py::class_<FixedImagePsf, Psf, std::shared_ptr<FixedImagePsf>>(m, "FixedImagePsf")
        .def(py::init([](const py::array_t<double, py::array::c_style | py::array::forcecast>& kernel,
                         std::array<double, 2> avg) {
                 if (kernel.ndim() != 2 || kernel.shape(0) != kernel.shape(1))
                     throw std::invalid_argument("kernel must be a square 2-D array");
                 std::vector<double> k(kernel.data(), kernel.data() + kernel.size());
                 return std::make_shared<FixedImagePsf>(std::move(k), static_cast<int>(kernel.shape(0)), avg);
             }),
             py::arg("kernel"), py::arg("average_position"))
        .def_property_readonly("size", &FixedImagePsf::size)
        .def_property_readonly("kernel", [](const FixedImagePsf& p) {
            py::array_t<double> a({p.size(), p.size()});
            std::copy(p.kernel().begin(), p.kernel().end(), a.mutable_data());
            return a;
        });
}
