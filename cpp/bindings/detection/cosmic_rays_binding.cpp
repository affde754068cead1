// Bindings for cosmic_rays.hpp. The public API is visitcal.detection.cosmic_rays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "../image_view.hpp"
#include "visitcal/detection/cosmic_rays.hpp"

namespace py = pybind11;
using visitcal::Cond3Thresholds;
using visitcal::FindCosmicRaysControl;
using visitcal::ImageView;

namespace {

using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

Cond3Thresholds to_thresholds(const std::array<double, 4>& t) { return {t[0], t[1], t[2], t[3]}; }

ImageView<const float> optional_view(const std::optional<py::array_t<float, 0>>& a) {
    if (!a) return {nullptr, 0, 0, 0};
    return visitcal_bind::image_view<const float>(*a, "background");
}

}  // namespace

void bind_cosmic_rays(py::module_& m) {
    py::class_<FindCosmicRaysControl>(m, "FindCosmicRaysControl")
        .def(py::init<>())
        .def_readwrite("min_sigma", &FindCosmicRaysControl::min_sigma)
        .def_readwrite("min_dn", &FindCosmicRaysControl::min_dn)
        .def_readwrite("cond3_fac", &FindCosmicRaysControl::cond3_fac)
        .def_readwrite("cond3_fac2", &FindCosmicRaysControl::cond3_fac2)
        .def_readwrite("niteration", &FindCosmicRaysControl::niteration)
        .def_readwrite("n_cr_pixel_max", &FindCosmicRaysControl::n_cr_pixel_max)
        .def_readwrite("keep_crs", &FindCosmicRaysControl::keep_crs)
        .def_readwrite("grow", &FindCosmicRaysControl::grow);

    // Raised with args (message, n_pixels, limit); visitcal.detection.cosmic_rays turns it into the public
    // TooManyCosmicRaysError. Held by the module, so no static state here.
    py::object too_many = py::exception<visitcal::TooManyCosmicRays>(m, "TooManyCosmicRays", PyExc_RuntimeError);

    m.def("cond3_thresholds",
          [](const DArray& psf, double cond3_fac2) {
              if (psf.ndim() != 2) throw std::invalid_argument("psf image must be 2-D");
              const Cond3Thresholds t = visitcal::cond3_thresholds(psf.data(), static_cast<int>(psf.shape(0)),
                                                                    static_cast<int>(psf.shape(1)), cond3_fac2);
              return std::array<double, 4>{t.horizontal, t.vertical, t.diagonal_up, t.diagonal_down};
          },
          py::arg("psf"), py::arg("cond3_fac2"));

    m.def("find_cosmic_rays",
          [too_many](const py::array_t<float, 0>& image, const py::array_t<float, 0>& variance,
                     const py::array_t<std::int32_t, 0>& mask, double background,
                     const std::optional<py::array_t<float, 0>>& background_image,
                     const std::array<double, 4>& thresholds, const FindCosmicRaysControl& ctrl,
                     std::int32_t bad_bits, std::int32_t cr_bits) {
              auto im = visitcal_bind::image_view<float>(image, "image");
              auto va = visitcal_bind::image_view<float>(variance, "variance");
              auto ma = visitcal_bind::image_view<std::int32_t>(mask, "mask");
              auto bi = optional_view(background_image);
              const Cond3Thresholds th = to_thresholds(thresholds);
              visitcal::FindCosmicRaysResult r;
              try {
                  py::gil_scoped_release release;
                  r = visitcal::find_cosmic_rays(im, va, ma, background, bi, th, ctrl, bad_bits, cr_bits);
              } catch (const visitcal::TooManyCosmicRays& e) {
                  PyErr_SetObject(too_many.ptr(), py::make_tuple(e.what(), e.n_pixels, e.limit).ptr());
                  throw py::error_already_set();
              }
              const auto n = static_cast<py::ssize_t>(r.cosmic_rays.size());
              py::array_t<std::int32_t> min_x(n), min_y(n), max_x(n), max_y(n), peak_x(n), peak_y(n);
              py::array_t<std::int64_t> npix(n);
              py::array_t<double> flux(n), peak(n);
              for (py::ssize_t k = 0; k < n; ++k) {
                  const auto& c = r.cosmic_rays[static_cast<std::size_t>(k)];
                  min_x.mutable_at(k) = c.min_x;
                  min_y.mutable_at(k) = c.min_y;
                  max_x.mutable_at(k) = c.max_x;
                  max_y.mutable_at(k) = c.max_y;
                  peak_x.mutable_at(k) = c.peak_x;
                  peak_y.mutable_at(k) = c.peak_y;
                  npix.mutable_at(k) = c.npix;
                  flux.mutable_at(k) = c.flux;
                  peak.mutable_at(k) = c.peak;
              }
              py::dict out;
              out["min_x"] = min_x;
              out["min_y"] = min_y;
              out["max_x"] = max_x;
              out["max_y"] = max_y;
              out["npix"] = npix;
              out["flux"] = flux;
              out["peak"] = peak;
              out["peak_x"] = peak_x;
              out["peak_y"] = peak_y;
              out["n_pixels"] = r.n_pixels;
              out["n_grown"] = r.n_grown;
              out["n_rejected"] = r.n_rejected;
              out["n_fallback"] = r.n_fallback;
              out["fallback_value"] = r.fallback_value;
              return out;
          },
          py::arg("image").noconvert(), py::arg("variance").noconvert(), py::arg("mask").noconvert(),
          py::arg("background"), py::arg("background_image").noconvert().none(true), py::arg("thresholds"),
          py::arg("ctrl"), py::arg("bad_bits"), py::arg("cr_bits"));

    m.def("cosmic_ray_candidates",
          [](const py::array_t<float, 0>& image, const py::array_t<float, 0>& variance,
             const py::array_t<std::int32_t, 0>& mask, double background,
             const std::optional<py::array_t<float, 0>>& background_image, const std::array<double, 4>& thresholds,
             double min_sigma, double cond3_fac, std::int32_t bad_bits) {
              auto im = visitcal_bind::image_view<const float>(image, "image");
              auto va = visitcal_bind::image_view<const float>(variance, "variance");
              auto ma = visitcal_bind::image_view<const std::int32_t>(mask, "mask");
              auto bi = optional_view(background_image);
              py::array_t<std::uint8_t> out({static_cast<py::ssize_t>(im.ny), static_cast<py::ssize_t>(im.nx)});
              ImageView<std::uint8_t> ov{out.mutable_data(), im.ny, im.nx, static_cast<std::ptrdiff_t>(im.nx)};
              const Cond3Thresholds th = to_thresholds(thresholds);
              {
                  py::gil_scoped_release release;
                  visitcal::cosmic_ray_candidates(im, va, ma, background, bi, th, min_sigma, cond3_fac, bad_bits, ov);
              }
              return out;
          },
          py::arg("image").noconvert(), py::arg("variance").noconvert(), py::arg("mask").noconvert(),
          py::arg("background"), py::arg("background_image").noconvert().none(true), py::arg("thresholds"),
          py::arg("min_sigma"), py::arg("cond3_fac"), py::arg("bad_bits"));
}
