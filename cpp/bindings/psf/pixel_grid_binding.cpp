// Binding of visitcal/psf/pixel_grid.hpp: the fitted PixelGridPsf and the one fit call (GIL released).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "../array_out.hpp"
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "visitcal/psf/pixel_grid.hpp"

namespace py = pybind11;
using visitcal_bind::vec;
using visitcal::PixelGridControl;
using visitcal::PixelGridPsf;
using visitcal::Psf;
using visitcal::SpatialPolynomial;

namespace {

py::array_t<double> coefficients_array(const PixelGridPsf& p) {
    const py::ssize_t t = p.spatial().n_terms(), g = p.model_size();
    py::array_t<double> a({t, g, g});
    std::memcpy(a.mutable_data(), p.coefficients().data(), p.coefficients().size() * sizeof(double));
    return a;
}

void check_stack(const py::array& a, const char* name, py::ssize_t m, py::ssize_t s) {
    if (a.ndim() != 3 || a.shape(0) != m || a.shape(1) != s || a.shape(2) != s)
        throw std::invalid_argument(std::string(name) + " must have shape (m, S, S) like image");
}

}  // namespace

void bind_pixel_grid(py::module_& m) {
    py::class_<PixelGridControl>(m, "PixelGridControl")
        .def(py::init<>())
        .def_readwrite("model_size", &PixelGridControl::model_size)
        .def_readwrite("sampling_size", &PixelGridControl::sampling_size)
        .def_readwrite("interpolant_order", &PixelGridControl::interpolant_order)
        .def_readwrite("spatial_order", &PixelGridControl::spatial_order)
        .def_readwrite("fit_center", &PixelGridControl::fit_center)
        .def_readwrite("stamp_size", &PixelGridControl::stamp_size)
        .def_readwrite("draw_size", &PixelGridControl::draw_size)
        .def_readwrite("max_snr", &PixelGridControl::max_snr)
        .def_readwrite("outlier_n_sigma", &PixelGridControl::outlier_n_sigma)
        .def_readwrite("outlier_max_remove", &PixelGridControl::outlier_max_remove)
        .def_readwrite("max_iter", &PixelGridControl::max_iter)
        .def_readwrite("min_iter", &PixelGridControl::min_iter)
        .def_readwrite("chisq_thresh", &PixelGridControl::chisq_thresh)
        .def_readwrite("zero_weight_mask", &PixelGridControl::zero_weight_mask)
        .def_readwrite("minimum_unmasked_fraction", &PixelGridControl::minimum_unmasked_fraction)
        .def_readwrite("zeroth_order_fallback", &PixelGridControl::zeroth_order_fallback)
        .def_readwrite("cg_tolerance", &PixelGridControl::cg_tolerance)
        .def_readwrite("cg_chi2_tolerance", &PixelGridControl::cg_chi2_tolerance)
        .def_readwrite("smoothness", &PixelGridControl::smoothness)
        .def_readwrite("varying_radius", &PixelGridControl::varying_radius)
        .def_readwrite("cg_max_iter", &PixelGridControl::cg_max_iter);

    py::class_<PixelGridPsf, Psf, std::shared_ptr<PixelGridPsf>>(m, "PixelGridPsf")
        .def(py::init([](const py::array_t<double, py::array::c_style | py::array::forcecast>& coefficients,
                         double sampling_size, int interpolant_order, int spatial_order, std::array<double, 4> box,
                         int draw_size, std::array<double, 2> avg) {
                 if (coefficients.ndim() != 3 || coefficients.shape(1) != coefficients.shape(2))
                     throw std::invalid_argument("coefficients must have shape (n_terms, model_size, model_size)");
                 std::vector<double> c(coefficients.data(), coefficients.data() + coefficients.size());
                 SpatialPolynomial poly(spatial_order, box[0], box[1], box[2], box[3]);
                 if (coefficients.shape(0) != poly.n_terms())
                     throw std::invalid_argument("coefficients has " + std::to_string(coefficients.shape(0)) +
                                                 " terms; spatial order " + std::to_string(spatial_order) + " needs " +
                                                 std::to_string(poly.n_terms()));
                 return std::make_shared<PixelGridPsf>(std::move(c), static_cast<int>(coefficients.shape(1)), sampling_size,
                                                       interpolant_order, poly, draw_size, avg);
             }),
             py::arg("coefficients"), py::arg("sampling_size"), py::arg("interpolant_order"), py::arg("spatial_order"),
             py::arg("box"), py::arg("draw_size"), py::arg("average_position"))
        .def_property_readonly("coefficients", &coefficients_array)
        .def_property_readonly("model_size", &PixelGridPsf::model_size)
        .def_property_readonly("sampling_size", &PixelGridPsf::sampling_size)
        .def_property_readonly("interpolant_order", &PixelGridPsf::interpolant_order)
        .def_property_readonly("spatial_order", [](const PixelGridPsf& p) { return p.spatial().order(); })
        .def_property_readonly("box",
                               [](const PixelGridPsf& p) {
                                   const auto& s = p.spatial();
                                   return std::array<double, 4>{s.xmin(), s.xmax(), s.ymin(), s.ymax()};
                               })
        .def_property_readonly("draw_size", &PixelGridPsf::draw_size)
        .def("grid_at", [](const PixelGridPsf& p, double x, double y) {
            py::array_t<double> a({p.model_size(), p.model_size()});
            p.grid_at(x, y, a.mutable_data());
            return a;
        });

    m.def(
        "fit_pixel_grid_psf",
        [](const py::array_t<float, py::array::c_style>& image, const py::array_t<std::int32_t, py::array::c_style>& mask,
           const py::array_t<float, py::array::c_style>& variance, const py::array_t<std::int32_t, py::array::c_style>& xy0,
           const py::array_t<double, py::array::c_style>& x, const py::array_t<double, py::array::c_style>& y,
           const py::array_t<std::uint8_t, py::array::c_style>& reserved, std::array<double, 4> box,
           const PixelGridControl& ctl) {
            if (image.ndim() != 3 || image.shape(1) != image.shape(2))
                throw std::invalid_argument("image must have shape (m, S, S)");
            const py::ssize_t n = image.shape(0), s = image.shape(1);
            check_stack(mask, "mask", n, s);
            check_stack(variance, "variance", n, s);
            if (xy0.ndim() != 2 || xy0.shape(0) != n || xy0.shape(1) != 2) throw std::invalid_argument("xy0 must have shape (m, 2)");
            if (x.ndim() != 1 || y.ndim() != 1 || reserved.ndim() != 1 || x.shape(0) != n || y.shape(0) != n ||
                reserved.shape(0) != n)
                throw std::invalid_argument("x, y and reserved must have shape (m,)");
            visitcal::PixelGridFitResult r;
            {
                py::gil_scoped_release release;
                r = visitcal::fit_pixel_grid_psf(image.data(), mask.data(), variance.data(), static_cast<int>(n),
                                                 static_cast<int>(s), xy0.data(), x.data(), y.data(), reserved.data(), box, ctl);
            }
            py::dict out;
            out["psf"] = r.psf ? py::cast(r.psf) : py::none();
            out["status"] = vec<std::uint8_t>(r.status);
            out["flux"] = vec<double>(r.flux);
            out["chi2"] = vec<double>(r.chi2);
            out["dof"] = vec<std::int64_t>(r.dof);
            out["chi2_expected"] = vec<double>(r.chi2_expected);
            out["x"] = vec<double>(r.x);
            out["y"] = vec<double>(r.y);
            out["n_iter"] = r.n_iter;
            out["converged"] = r.converged;
            out["spatial_order"] = r.spatial_order;
            out["n_available"] = r.n_available;
            out["n_used"] = r.n_used;
            out["chi2_total"] = r.chi2_total;
            out["dof_total"] = r.dof_total;
            out["cg_iterations"] = r.cg_iterations;
            out["too_few_n_stars"] = r.too_few_n_stars;
            out["too_few_n_required"] = r.too_few_n_required;
            return out;
        },
        py::arg("image"), py::arg("mask"), py::arg("variance"), py::arg("xy0"), py::arg("x"), py::arg("y"),
        py::arg("reserved"), py::arg("box"), py::arg("control"));

    m.def("chi2_isf", &visitcal::chi2_isf, py::arg("p"), py::arg("dof"));
}
