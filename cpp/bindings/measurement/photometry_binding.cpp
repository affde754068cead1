// Bindings for the photometry plugins (measurement/aperture_flux.hpp, compensated_tophat.hpp,
// local_background.hpp, pixel_flags.hpp, variance.hpp, psf_flux.hpp, gaussian_flux.hpp). The public
// API is visitcal.measurement.plugins.<stem>. Each batch entry loops over the sources in C++ without the GIL and
// returns the values plus one uint32 flag word per source; Python expands the words into the LSST
// flag columns with the <plugin>_flag_names() registries.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "../array_out.hpp"
#include "../image_view.hpp"
#include "visitcal/core/footprint.hpp"
#include "visitcal/measurement/aperture_flux.hpp"
#include "visitcal/measurement/compensated_tophat.hpp"
#include "visitcal/core/exposure_view.hpp"
#include "visitcal/measurement/gaussian_flux.hpp"
#include "visitcal/measurement/local_background.hpp"
#include "visitcal/measurement/pixel_flags.hpp"
#include "visitcal/measurement/psf_flux.hpp"
#include "visitcal/measurement/variance.hpp"

namespace py = pybind11;
using namespace visitcal;

namespace {

using F32 = py::array_t<float, 0>;
using I32 = py::array_t<std::int32_t, 0>;
using D1 = py::array_t<double, py::array::c_style | py::array::forcecast>;
using I64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
using I32C = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>;

ExposureView make_view(const F32& image, const I32& mask, const F32& variance, int x0, int y0) {
    ExposureView ev{visitcal_bind::image_view<const float>(image, "image"),
                    visitcal_bind::image_view<const std::int32_t>(mask, "mask"),
                    visitcal_bind::image_view<const float>(variance, "variance"), x0, y0};
    if (ev.mask.ny != ev.image.ny || ev.mask.nx != ev.image.nx)
        throw std::invalid_argument("mask shape differs from image shape");
    if (ev.variance.ny != ev.image.ny || ev.variance.nx != ev.image.nx)
        throw std::invalid_argument("variance shape differs from image shape");
    visitcal_bind::check_origin(x0, y0, ev.image.nx, ev.image.ny);
    return ev;
}

py::ssize_t check_1d(const D1& a, const char* name, py::ssize_t n = -1) {
    if (a.ndim() != 1) throw std::invalid_argument(std::string(name) + " must be 1-D");
    if (n >= 0 && a.shape(0) != n)
        throw std::invalid_argument(std::string(name) + " must have the length of x (" + std::to_string(n) + ")");
    return a.shape(0);
}

using visitcal_bind::names;

#define VIEW_ARGS                                                                                            \
    py::arg("image").noconvert(), py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("x0"), \
        py::arg("y0")

}  // namespace

void bind_measure_photometry(py::module_& m) {
    m.def("aperture_flux_flag_names", [] { return names(kApertureFluxFlagNames); });
    m.def("compensated_tophat_flag_names", [] { return names(kCompensatedTophatFlagNames); });
    m.def("local_background_flag_names", [] { return names(kLocalBackgroundFlagNames); });
    m.def("pixel_flags_flag_names", [] { return names(kPixelFlagsFlagNames); });
    m.def("variance_flag_names", [] { return names(kVarianceFlagNames); });
    m.def("psf_flux_flag_names", [] { return names(kPsfFluxFlagNames); });
    m.def("gaussian_flux_flag_names", [] { return names(kGaussianFluxFlagNames); });

    py::class_<ApertureFluxControl>(m, "ApertureFluxControl")
        .def(py::init<>())
        .def_readwrite("radii", &ApertureFluxControl::radii)
        .def_readwrite("max_sinc_radius", &ApertureFluxControl::max_sinc_radius)
        .def("validate", &ApertureFluxControl::validate);
    py::class_<CompensatedTophatControl>(m, "CompensatedTophatControl")
        .def(py::init<>())
        .def_readwrite("apertures", &CompensatedTophatControl::apertures)
        .def_readwrite("inner_scale", &CompensatedTophatControl::inner_scale)
        .def_readwrite("outer_scale", &CompensatedTophatControl::outer_scale)
        .def("validate", &CompensatedTophatControl::validate);
    py::class_<LocalBackgroundControl>(m, "LocalBackgroundControl")
        .def(py::init<>())
        .def_readwrite("annulus_inner", &LocalBackgroundControl::annulus_inner)
        .def_readwrite("annulus_outer", &LocalBackgroundControl::annulus_outer)
        .def_readwrite("bad_mask", &LocalBackgroundControl::bad_mask)
        .def_readwrite("bg_rej", &LocalBackgroundControl::bg_rej)
        .def_readwrite("bg_iter", &LocalBackgroundControl::bg_iter)
        .def("validate", &LocalBackgroundControl::validate);
    py::class_<VarianceControl>(m, "VarianceControl")
        .def(py::init<>())
        .def_readwrite("scale", &VarianceControl::scale)
        .def_readwrite("mask", &VarianceControl::mask)
        .def("validate", &VarianceControl::validate);
    py::class_<PsfFluxControl>(m, "PsfFluxControl")
        .def(py::init<>())
        .def_readwrite("bad_mask", &PsfFluxControl::bad_mask)
        .def_readwrite("model_error", &PsfFluxControl::model_error);
    py::class_<GaussianFluxControl>(m, "GaussianFluxControl")
        .def(py::init<>())
        .def_readwrite("box_sigma", &GaussianFluxControl::box_sigma)
        .def_readwrite("max_radius", &GaussianFluxControl::max_radius)
        .def("validate", &GaussianFluxControl::validate);

    m.def("circle_rectangle_overlap", &circle_rectangle_overlap, py::arg("radius"), py::arg("xa"), py::arg("xb"),
          py::arg("ya"), py::arg("yb"));
    m.def("circular_aperture_sum",
          [](const py::array_t<double, 0>& image, int x0, int y0, double x, double y, double radius) {
              auto v = visitcal_bind::image_view<const double>(image, "image");
              return circular_aperture_sum<double>(v, x0, y0, x, y, radius);
          },
          py::arg("image").noconvert(), py::arg("x0"), py::arg("y0"), py::arg("x"), py::arg("y"), py::arg("radius"));

    m.def("measure_circular_apertures",
          [](const F32& image, const I32& mask, const F32& variance, int x0, int y0, const D1& x, const D1& y,
             const std::vector<double>& radii) {
              const ExposureView ev = make_view(image, mask, variance, x0, y0);
              const py::ssize_t n = check_1d(x, "x");
              check_1d(y, "y", n);
              ApertureFluxControl ctrl;
              ctrl.radii = radii;
              ctrl.validate();
              const auto k = static_cast<py::ssize_t>(radii.size());
              py::array_t<double> flux({n, k}), err({n, k});
              py::array_t<std::uint32_t> flags({n, k});
              {
                  py::gil_scoped_release release;
                  const double* px = x.data();
                  const double* py_ = y.data();
                  double* f = flux.mutable_data();
                  double* e = err.mutable_data();
                  std::uint32_t* fl = flags.mutable_data();
                  std::vector<ApertureFluxResult> out(static_cast<std::size_t>(k));
                  for (py::ssize_t s = 0; s < n; ++s) {
                      measure_circular_apertures(ev, px[s], py_[s], radii.data(), static_cast<int>(k), out.data());
                      for (py::ssize_t r = 0; r < k; ++r) {
                          f[s * k + r] = out[r].instFlux;
                          e[s * k + r] = out[r].instFluxErr;
                          fl[s * k + r] = out[r].flags;
                      }
                  }
              }
              py::dict d;
              d["instFlux"] = flux;
              d["instFluxErr"] = err;
              d["flags"] = flags;
              return d;
          },
          VIEW_ARGS, py::arg("x"), py::arg("y"), py::arg("radii"));

    m.def("measure_compensated_tophat",
          [](const F32& image, const I32& mask, const F32& variance, int x0, int y0, const D1& x, const D1& y,
             int aperture, const CompensatedTophatControl& ctrl) {
              const ExposureView ev = make_view(image, mask, variance, x0, y0);
              const py::ssize_t n = check_1d(x, "x");
              check_1d(y, "y", n);
              ctrl.validate();
              if (aperture <= 0) throw std::invalid_argument("aperture must be > 0");
              py::array_t<double> flux(n), err(n);
              py::array_t<std::int32_t> bits(n);
              py::array_t<std::uint32_t> flags(n);
              {
                  py::gil_scoped_release release;
                  for (py::ssize_t s = 0; s < n; ++s) {
                      const auto r = measure_compensated_tophat(ev, x.data()[s], y.data()[s], aperture, ctrl);
                      flux.mutable_data()[s] = r.instFlux;
                      err.mutable_data()[s] = r.instFluxErr;
                      bits.mutable_data()[s] = r.mask_bits;
                      flags.mutable_data()[s] = r.flags;
                  }
              }
              py::dict d;
              d["instFlux"] = flux;
              d["instFluxErr"] = err;
              d["mask_bits"] = bits;
              d["flags"] = flags;
              return d;
          },
          VIEW_ARGS, py::arg("x"), py::arg("y"), py::arg("aperture"), py::arg("ctrl"));

    m.def("measure_local_background",
          [](const F32& image, const I32& mask, const F32& variance, int x0, int y0, const D1& x, const D1& y,
             const D1& psf_sigma, const LocalBackgroundControl& ctrl) {
              const ExposureView ev = make_view(image, mask, variance, x0, y0);
              const py::ssize_t n = check_1d(x, "x");
              check_1d(y, "y", n);
              check_1d(psf_sigma, "psf_sigma", n);
              ctrl.validate();
              py::array_t<double> flux(n), err(n);
              py::array_t<std::uint32_t> flags(n);
              {
                  py::gil_scoped_release release;
                  for (py::ssize_t s = 0; s < n; ++s) {
                      const auto r = measure_local_background(ev, x.data()[s], y.data()[s], psf_sigma.data()[s], ctrl);
                      flux.mutable_data()[s] = r.instFlux;
                      err.mutable_data()[s] = r.instFluxErr;
                      flags.mutable_data()[s] = r.flags;
                  }
              }
              py::dict d;
              d["instFlux"] = flux;
              d["instFluxErr"] = err;
              d["flags"] = flags;
              return d;
          },
          VIEW_ARGS, py::arg("x"), py::arg("y"), py::arg("psf_sigma"), py::arg("ctrl"));

    m.def("measure_pixel_flags",
          [](const F32& image, const I32& mask, const F32& variance, int x0, int y0, const D1& x, const D1& y,
             const I32C& spans, const I64& span_offsets) {
              const ExposureView ev = make_view(image, mask, variance, x0, y0);
              const py::ssize_t n = check_1d(x, "x");
              check_1d(y, "y", n);
              if (spans.ndim() != 2 || spans.shape(1) != 3)
                  throw std::invalid_argument("spans must have shape (m, 3) [y, x0, x1]");
              if (span_offsets.ndim() != 1 || span_offsets.shape(0) != n + 1)
                  throw std::invalid_argument("span_offsets must be 1-D with len(x) + 1 entries");
              const std::int64_t* off = span_offsets.data();
              const std::int64_t m_spans = spans.shape(0);
              if (off[0] != 0 || off[n] != m_spans) throw std::invalid_argument("span_offsets must run from 0 to len(spans)");
              for (py::ssize_t s = 0; s < n; ++s)
                  if (off[s + 1] < off[s]) throw std::invalid_argument("span_offsets must be non-decreasing");
              const auto* sp = reinterpret_cast<const Span*>(spans.data());
              static_assert(sizeof(Span) == 3 * sizeof(std::int32_t), "Span must be three packed int32");
              for (std::int64_t k = 0; k < m_spans; ++k)
                  if (sp[k].x1 < sp[k].x0) throw std::invalid_argument("spans: x1 < x0 in span " + std::to_string(k));
              py::array_t<std::uint32_t> flags(n);
              {
                  py::gil_scoped_release release;
                  for (py::ssize_t s = 0; s < n; ++s)
                      flags.mutable_data()[s] = measure_pixel_flags(ev, x.data()[s], y.data()[s], sp + off[s],
                                                                    static_cast<std::size_t>(off[s + 1] - off[s]))
                                                    .flags;
              }
              py::dict d;
              d["flags"] = flags;
              return d;
          },
          VIEW_ARGS, py::arg("x"), py::arg("y"), py::arg("spans"), py::arg("span_offsets"));

    m.def("measure_variance",
          [](const F32& image, const I32& mask, const F32& variance, int x0, int y0, const D1& x, const D1& y,
             const D1& xx, const D1& yy, const D1& xy, const VarianceControl& ctrl) {
              const ExposureView ev = make_view(image, mask, variance, x0, y0);
              const py::ssize_t n = check_1d(x, "x");
              check_1d(y, "y", n);
              check_1d(xx, "xx", n);
              check_1d(yy, "yy", n);
              check_1d(xy, "xy", n);
              ctrl.validate();
              py::array_t<double> value(n);
              py::array_t<std::uint32_t> flags(n);
              {
                  py::gil_scoped_release release;
                  for (py::ssize_t s = 0; s < n; ++s) {
                      Moments q;
                      q.xx = xx.data()[s];
                      q.yy = yy.data()[s];
                      q.xy = xy.data()[s];
                      const auto r = measure_variance(ev, x.data()[s], y.data()[s], q, ctrl);
                      value.mutable_data()[s] = r.value;
                      flags.mutable_data()[s] = r.flags;
                  }
              }
              py::dict d;
              d["value"] = value;
              d["flags"] = flags;
              return d;
          },
          VIEW_ARGS, py::arg("x"), py::arg("y"), py::arg("xx"), py::arg("yy"), py::arg("xy"), py::arg("ctrl"));

    m.def("measure_psf_flux",
          [](const F32& image, const I32& mask, const F32& variance, int x0, int y0,
             const py::array_t<double, py::array::c_style | py::array::forcecast>& models, const I32C& model_x0,
             const I32C& model_y0, const PsfFluxControl& ctrl) {
              const ExposureView ev = make_view(image, mask, variance, x0, y0);
              if (models.ndim() != 3) throw std::invalid_argument("models must be 3-D (n, height, width)");
              const py::ssize_t n = models.shape(0);
              if (model_x0.ndim() != 1 || model_x0.shape(0) != n || model_y0.ndim() != 1 || model_y0.shape(0) != n)
                  throw std::invalid_argument("model_x0 and model_y0 must be 1-D of length models.shape[0]");
              if (models.shape(1) > std::numeric_limits<int>::max() || models.shape(2) > std::numeric_limits<int>::max())
                  throw std::invalid_argument("models: a stamp has more than 2^31 - 1 rows or columns");
              const int h = static_cast<int>(models.shape(1)), w = static_cast<int>(models.shape(2));
              py::array_t<double> flux(n), err(n), area(n), chi2(n), npix(n);
              py::array_t<std::uint32_t> flags(n);
              {
                  py::gil_scoped_release release;
                  const std::ptrdiff_t stamp = static_cast<std::ptrdiff_t>(h) * w;
                  for (py::ssize_t s = 0; s < n; ++s) {
                      const auto r = measure_psf_flux(ev, models.data() + s * stamp, w, h, model_x0.data()[s],
                                                      model_y0.data()[s], ctrl);
                      flux.mutable_data()[s] = r.instFlux;
                      err.mutable_data()[s] = r.instFluxErr;
                      area.mutable_data()[s] = r.area;
                      chi2.mutable_data()[s] = r.chi2;
                      npix.mutable_data()[s] = r.npixels;
                      flags.mutable_data()[s] = r.flags;
                  }
              }
              py::dict d;
              d["instFlux"] = flux;
              d["instFluxErr"] = err;
              d["area"] = area;
              d["chi2"] = chi2;
              d["npixels"] = npix;
              d["flags"] = flags;
              return d;
          },
          VIEW_ARGS, py::arg("models"), py::arg("model_x0"), py::arg("model_y0"), py::arg("ctrl"));

    m.def("measure_gaussian_flux",
          [](const F32& image, const I32& mask, const F32& variance, int x0, int y0, const D1& x, const D1& y,
             const D1& xx, const D1& yy, const D1& xy, const GaussianFluxControl& ctrl) {
              const ExposureView ev = make_view(image, mask, variance, x0, y0);
              const py::ssize_t n = check_1d(x, "x");
              check_1d(y, "y", n);
              check_1d(xx, "xx", n);
              check_1d(yy, "yy", n);
              check_1d(xy, "xy", n);
              ctrl.validate();
              py::array_t<double> flux(n), err(n);
              py::array_t<std::uint32_t> flags(n);
              {
                  py::gil_scoped_release release;
                  for (py::ssize_t s = 0; s < n; ++s) {
                      Moments q;
                      q.xx = xx.data()[s];
                      q.yy = yy.data()[s];
                      q.xy = xy.data()[s];
                      const auto r = measure_gaussian_flux(ev, x.data()[s], y.data()[s], q, ctrl);
                      flux.mutable_data()[s] = r.instFlux;
                      err.mutable_data()[s] = r.instFluxErr;
                      flags.mutable_data()[s] = r.flags;
                  }
              }
              py::dict d;
              d["instFlux"] = flux;
              d["instFluxErr"] = err;
              d["flags"] = flags;
              return d;
          },
          VIEW_ARGS, py::arg("x"), py::arg("y"), py::arg("xx"), py::arg("yy"), py::arg("xy"), py::arg("ctrl"));
}
