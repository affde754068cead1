// Bindings for measurement/sdss_centroid.hpp, measurement/sdss_shape.hpp and measurement/windowed_centroid.hpp.
// The public API is visitcal.measurement.plugins.{sdss_centroid, sdss_shape, windowed_centroid}. Batch entry points
// loop over the sources in C++ with the GIL released and return dicts of numpy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../array_out.hpp"
#include "../exposure_view.hpp"
#include "../image_view.hpp"
#include "visitcal/core/footprint.hpp"
#include "visitcal/measurement/sdss_centroid.hpp"
#include "visitcal/measurement/sdss_shape.hpp"
#include "visitcal/measurement/windowed_centroid.hpp"

namespace py = pybind11;
using visitcal::ExposureView;

namespace {

using Vec = py::array_t<double, py::array::c_style>;

using visitcal_bind::exposure_view;

py::ssize_t same_length(std::initializer_list<std::pair<const Vec*, const char*>> arrays) {
    py::ssize_t n = -1;
    for (const auto& [a, name] : arrays) {
        if (a->ndim() != 1) throw std::invalid_argument(std::string(name) + " must be 1-D");
        if (n < 0) n = a->shape(0);
        if (a->shape(0) != n) throw std::invalid_argument(std::string(name) + " has a different length");
    }
    return n;
}

using visitcal_bind::names;

}  // namespace

void bind_measure_centroid_shape(py::module_& m) {
    // ---- SdssCentroid
    py::class_<visitcal::SdssCentroidControl>(m, "SdssCentroidControl")
        .def(py::init<>())
        .def_readwrite("binmax", &visitcal::SdssCentroidControl::binmax)
        .def_readwrite("peak_min", &visitcal::SdssCentroidControl::peak_min)
        .def_readwrite("wfac", &visitcal::SdssCentroidControl::wfac)
        .def_readwrite("do_footprint_check", &visitcal::SdssCentroidControl::do_footprint_check)
        .def_readwrite("max_dist_to_peak", &visitcal::SdssCentroidControl::max_dist_to_peak);
    m.def("sdss_centroid_flag_names", [] { return names(visitcal::kSdssCentroidFlagNames); });
    m.def("sdss_centroid_batch",
          [](const py::array_t<float, 0>& image, const py::array_t<std::int32_t, 0>& mask,
             const py::array_t<float, 0>& variance, int x0, int y0, const Vec& peak_x, const Vec& peak_y,
             const Vec& psf_sigma, const std::optional<py::array_t<std::int32_t, py::array::c_style>>& spans,
             const std::optional<py::array_t<std::int64_t, py::array::c_style>>& span_offsets,
             const visitcal::SdssCentroidControl& ctrl) {
              const ExposureView ev = exposure_view(image, mask, variance, x0, y0);
              const py::ssize_t n = same_length({{&peak_x, "peak_x"}, {&peak_y, "peak_y"}, {&psf_sigma, "psf_sigma"}});
              const visitcal::Span* sp = nullptr;
              const std::int64_t* off = nullptr;
              if (spans.has_value() != span_offsets.has_value())
                  throw std::invalid_argument("spans and span_offsets go together");
              if (spans) {
                  if (spans->ndim() != 2 || spans->shape(1) != 3) throw std::invalid_argument("spans must be (n, 3) int32");
                  if (span_offsets->ndim() != 1 || span_offsets->shape(0) != n + 1)
                      throw std::invalid_argument("span_offsets must have n_sources + 1 entries");
                  off = span_offsets->data();
                  for (py::ssize_t k = 0; k < n; ++k)
                      if (off[k] < 0 || off[k + 1] < off[k] || off[k + 1] > spans->shape(0))
                          throw std::invalid_argument("span_offsets must be non-decreasing within the spans");
                  sp = reinterpret_cast<const visitcal::Span*>(spans->data());  // (y, x0, x1) int32 rows
              }
              py::array_t<double> ox(n), oy(n), oxe(n), oye(n);
              py::array_t<std::uint32_t> of(n);
              double *px = ox.mutable_data(), *py_ = oy.mutable_data(), *pxe = oxe.mutable_data(), *pye = oye.mutable_data();
              std::uint32_t* pf = of.mutable_data();
              const double *bx = peak_x.data(), *by = peak_y.data(), *bs = psf_sigma.data();
              {
                  py::gil_scoped_release release;
                  for (py::ssize_t k = 0; k < n; ++k) {
                      const visitcal::Span* s = sp ? sp + off[k] : nullptr;
                      const std::size_t ns = sp ? static_cast<std::size_t>(off[k + 1] - off[k]) : 0;
                      const auto r = visitcal::measure_sdss_centroid(ev, bx[k], by[k], bs[k], s, ns, ctrl);
                      px[k] = r.x;
                      py_[k] = r.y;
                      pxe[k] = r.x_err;
                      pye[k] = r.y_err;
                      pf[k] = r.flags;
                  }
              }
              py::dict out;
              out["x"] = ox;
              out["y"] = oy;
              out["x_err"] = oxe;
              out["y_err"] = oye;
              out["flags"] = of;
              return out;
          },
          py::arg("image").noconvert(), py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("x0"),
          py::arg("y0"), py::arg("peak_x").noconvert(), py::arg("peak_y").noconvert(), py::arg("psf_sigma").noconvert(),
          py::arg("spans").noconvert().none(true), py::arg("span_offsets").noconvert().none(true), py::arg("ctrl"));

    // ---- SdssShape
    py::class_<visitcal::SdssShapeControl>(m, "SdssShapeControl")
        .def(py::init<>())
        .def_readwrite("max_iter", &visitcal::SdssShapeControl::max_iter)
        .def_readwrite("tol1", &visitcal::SdssShapeControl::tol1)
        .def_readwrite("tol2", &visitcal::SdssShapeControl::tol2)
        .def_readwrite("max_shift", &visitcal::SdssShapeControl::max_shift)
        .def_readwrite("do_measure_psf", &visitcal::SdssShapeControl::do_measure_psf);
    m.def("sdss_shape_flag_names", [] { return names(visitcal::kSdssShapeFlagNames); });

    static const char* kShapeFields[] = {"x", "y", "xx", "yy", "xy", "xx_err", "yy_err", "xy_err", "inst_flux",
                                         "inst_flux_err", "inst_flux_xx_cov", "inst_flux_yy_cov", "inst_flux_xy_cov"};
    auto shape_values = [](const visitcal::SdssShapeResult& r) {
        return std::array<double, 13>{r.x,         r.y,           r.xx,           r.yy, r.xy, r.xx_err, r.yy_err,
                                      r.xy_err,    r.inst_flux,   r.inst_flux_err, r.inst_flux_xx_cov,
                                      r.inst_flux_yy_cov, r.inst_flux_xy_cov};
    };
    m.def("sdss_shape_batch",
          [shape_values](const py::array_t<float, 0>& image, const py::array_t<std::int32_t, 0>& mask,
                         const py::array_t<float, 0>& variance, int x0, int y0, const Vec& x, const Vec& y,
                         const visitcal::SdssShapeControl& ctrl, bool baseline_only) {
              const ExposureView ev = exposure_view(image, mask, variance, x0, y0);
              const py::ssize_t n = same_length({{&x, "x"}, {&y, "y"}});
              std::vector<py::array_t<double>> cols;
              for (int c = 0; c < 13; ++c) cols.emplace_back(n);
              std::vector<double*> p;
              for (auto& c : cols) p.push_back(c.mutable_data());
              py::array_t<std::uint32_t> flags(n);
              py::array_t<std::int32_t> n_iter(n);
              std::uint32_t* pf = flags.mutable_data();
              std::int32_t* pn = n_iter.mutable_data();
              const double *px = x.data(), *py_ = y.data();
              {
                  py::gil_scoped_release release;
                  for (py::ssize_t k = 0; k < n; ++k) {
                      const auto r = visitcal::measure_sdss_shape(ev, px[k], py_[k], ctrl, baseline_only);
                      const auto v = shape_values(r);
                      for (int c = 0; c < 13; ++c) p[static_cast<std::size_t>(c)][k] = v[static_cast<std::size_t>(c)];
                      pf[k] = r.flags;
                      pn[k] = r.n_iter;
                  }
              }
              py::dict out;
              for (int c = 0; c < 13; ++c) out[kShapeFields[c]] = cols[static_cast<std::size_t>(c)];
              out["flags"] = flags;
              out["n_iter"] = n_iter;
              return out;
          },
          py::arg("image").noconvert(), py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("x0"),
          py::arg("y0"), py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("ctrl"),
          py::arg("baseline_only") = false);
    m.def("adaptive_moments",
          [shape_values](const py::array_t<double, 0>& image, int x0, int y0, double x, double y,
                         const visitcal::SdssShapeControl& ctrl, bool baseline_only) {
              const auto view = visitcal_bind::image_view<const double>(image, "image");
              visitcal::SdssShapeResult r;
              {
                  py::gil_scoped_release release;
                  r = visitcal::adaptive_moments(view, x0, y0, x, y, ctrl, baseline_only);
              }
              const auto v = shape_values(r);
              py::dict out;
              for (int c = 0; c < 13; ++c) out[kShapeFields[c]] = v[static_cast<std::size_t>(c)];
              out["flags"] = r.flags;
              out["n_iter"] = r.n_iter;
              return out;
          },
          py::arg("image").noconvert(), py::arg("x0"), py::arg("y0"), py::arg("x"), py::arg("y"), py::arg("ctrl"),
          py::arg("baseline_only") = false);

    // ---- windowed centroid
    py::class_<visitcal::WindowedCentroidControl>(m, "WindowedCentroidControl")
        .def(py::init<>())
        .def_readwrite("max_iter", &visitcal::WindowedCentroidControl::max_iter)
        .def_readwrite("step_min", &visitcal::WindowedCentroidControl::step_min)
        .def_readwrite("n_sigma", &visitcal::WindowedCentroidControl::n_sigma)
        .def_readwrite("oversample", &visitcal::WindowedCentroidControl::oversample)
        .def_readwrite("min_sigma", &visitcal::WindowedCentroidControl::min_sigma)
        .def_readwrite("bad_mask_bits", &visitcal::WindowedCentroidControl::bad_mask_bits);
    m.def("windowed_centroid_flag_names", [] { return names(visitcal::kWindowedCentroidFlagNames); });
    m.def("windowed_centroid_batch",
          [](const py::array_t<float, 0>& image, const py::array_t<std::int32_t, 0>& mask,
             const py::array_t<float, 0>& variance, int x0, int y0, const Vec& x, const Vec& y, const Vec& sigma,
             const visitcal::WindowedCentroidControl& ctrl) {
              const ExposureView ev = exposure_view(image, mask, variance, x0, y0);
              const py::ssize_t n = same_length({{&x, "x"}, {&y, "y"}, {&sigma, "sigma"}});
              py::array_t<double> ox(n), oy(n);
              py::array_t<std::int32_t> oi(n);
              py::array_t<std::uint32_t> of(n);
              double *qx = ox.mutable_data(), *qy = oy.mutable_data();
              std::int32_t* qi = oi.mutable_data();
              std::uint32_t* qf = of.mutable_data();
              const double *px = x.data(), *py_ = y.data(), *ps = sigma.data();
              {
                  py::gil_scoped_release release;
                  for (py::ssize_t k = 0; k < n; ++k) {
                      const auto r = visitcal::measure_windowed_centroid(ev, px[k], py_[k], ps[k], ctrl);
                      qx[k] = r.x;
                      qy[k] = r.y;
                      qi[k] = r.n_iter;
                      qf[k] = r.flags;
                  }
              }
              py::dict out;
              out["x"] = ox;
              out["y"] = oy;
              out["n_iter"] = oi;
              out["flags"] = of;
              return out;
          },
          py::arg("image").noconvert(), py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("x0"),
          py::arg("y0"), py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("sigma").noconvert(),
          py::arg("ctrl"));
}
