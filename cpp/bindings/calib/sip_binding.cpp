// Binding of visitcal/calib/sip.hpp: the TAN-SIP model (vectorised evaluation) and the fit (GIL released).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../array_out.hpp"
#include "visitcal/calib/sip.hpp"

namespace py = pybind11;
using visitcal::FitTanSipControl;
using visitcal::TanSipWcs;
using visitcal_bind::vec;

namespace {

using Vec = py::array_t<double, py::array::c_style>;

py::array_t<double> square(const std::vector<double>& c, int order) {
    const py::ssize_t k = order > 0 ? order + 1 : 0;
    py::array_t<double> a({k, k});
    std::copy(c.begin(), c.end(), a.mutable_data());
    return a;
}

std::vector<double> from_square(const py::object& obj, int& order, const char* name) {
    if (obj.is_none()) {
        order = 0;
        return {};
    }
    auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(obj);
    if (!a || a.ndim() != 2 || a.shape(0) != a.shape(1) || a.shape(0) < 2)
        throw std::invalid_argument(std::string(name) + " must be a square (order + 1, order + 1) array");
    order = static_cast<int>(a.shape(0)) - 1;
    return std::vector<double>(a.data(), a.data() + a.size());
}

void check_same_length(const Vec& a, const Vec& b, const char* what) {
    if (a.ndim() != 1 || b.ndim() != 1 || a.shape(0) != b.shape(0))
        throw std::invalid_argument(std::string(what) + " must be 1-d arrays of one length");
}

// Apply f(a_i, b_i, out1_i, out2_i) over two arrays, GIL released.
template <typename F>
py::tuple map2(const Vec& a, const Vec& b, F f) {
    const py::ssize_t n = a.shape(0);
    Vec o1(n), o2(n);
    const double *pa = a.data(), *pb = b.data();
    double *p1 = o1.mutable_data(), *p2 = o2.mutable_data();
    {
        py::gil_scoped_release release;
        for (py::ssize_t i = 0; i < n; ++i) f(pa[i], pb[i], p1[i], p2[i]);
    }
    return py::make_tuple(o1, o2);
}

}  // namespace

void bind_sip(py::module_& m) {
    py::class_<FitTanSipControl>(m, "FitTanSipControl")
        .def(py::init<>())
        .def_readwrite("order", &FitTanSipControl::order)
        .def_readwrite("num_iter", &FitTanSipControl::num_iter)
        .def_readwrite("num_rej_iter", &FitTanSipControl::num_rej_iter)
        .def_readwrite("rej_sigma", &FitTanSipControl::rej_sigma)
        .def_readwrite("max_scatter_arcsec", &FitTanSipControl::max_scatter_arcsec)
        .def_readwrite("inverse_order", &FitTanSipControl::inverse_order)
        .def_readwrite("grid_size", &FitTanSipControl::grid_size);

    py::class_<TanSipWcs>(m, "TanSipWcs")
        .def(py::init([](std::array<double, 2> crpix, std::array<double, 2> crval, std::array<double, 4> cd,
                         const py::object& a, const py::object& b, const py::object& ap, const py::object& bp) {
                 TanSipWcs w;
                 w.crpix = crpix;
                 w.crval = crval;
                 w.cd = cd;
                 int ob = 0, obp = 0;
                 w.a = from_square(a, w.order, "a");
                 w.b = from_square(b, ob, "b");
                 w.ap = from_square(ap, w.inverse_order, "ap");
                 w.bp = from_square(bp, obp, "bp");
                 if (ob != w.order || obp != w.inverse_order)
                     throw std::invalid_argument("a and b (ap and bp) must have the same order");
                 w.check();
                 return w;
             }),
             py::arg("crpix"), py::arg("crval"), py::arg("cd"), py::arg("a") = py::none(), py::arg("b") = py::none(),
             py::arg("ap") = py::none(), py::arg("bp") = py::none())
        .def(py::pickle(
            [](const TanSipWcs& w) {
                py::object none = py::none();
                return py::make_tuple(w.crpix, w.crval, w.cd, w.order ? py::object(square(w.a, w.order)) : none,
                                      w.order ? py::object(square(w.b, w.order)) : none,
                                      w.inverse_order ? py::object(square(w.ap, w.inverse_order)) : none,
                                      w.inverse_order ? py::object(square(w.bp, w.inverse_order)) : none);
            },
            [](const py::tuple& t) {
                if (t.size() != 7) throw std::invalid_argument("bad TanSipWcs state");
                TanSipWcs w;
                w.crpix = t[0].cast<std::array<double, 2>>();
                w.crval = t[1].cast<std::array<double, 2>>();
                w.cd = t[2].cast<std::array<double, 4>>();
                int ob = 0, obp = 0;
                w.a = from_square(t[3], w.order, "a");
                w.b = from_square(t[4], ob, "b");
                w.ap = from_square(t[5], w.inverse_order, "ap");
                w.bp = from_square(t[6], obp, "bp");
                w.check();
                return w;
            }))
        .def("__repr__",
             [](const TanSipWcs& w) {
                 return "TanSipWcs(crval=(" + std::to_string(w.crval[0]) + ", " + std::to_string(w.crval[1]) +
                        "), crpix=(" + std::to_string(w.crpix[0]) + ", " + std::to_string(w.crpix[1]) +
                        "), order=" + std::to_string(w.order) + ", inverse_order=" + std::to_string(w.inverse_order) + ")";
             })
        .def_readonly("crpix", &TanSipWcs::crpix)
        .def_readonly("crval", &TanSipWcs::crval)
        .def_readonly("cd", &TanSipWcs::cd)
        .def_readonly("order", &TanSipWcs::order)
        .def_readonly("inverse_order", &TanSipWcs::inverse_order)
        .def_property_readonly("a", [](const TanSipWcs& w) { return square(w.a, w.order); })
        .def_property_readonly("b", [](const TanSipWcs& w) { return square(w.b, w.order); })
        .def_property_readonly("ap", [](const TanSipWcs& w) { return square(w.ap, w.inverse_order); })
        .def_property_readonly("bp", [](const TanSipWcs& w) { return square(w.bp, w.inverse_order); })
        .def("pixel_to_sky",
             [](const TanSipWcs& w, const Vec& x, const Vec& y) {
                 check_same_length(x, y, "x and y");
                 return map2(x, y, [&w](double a, double b, double& r, double& d) { w.pixel_to_sky(a, b, r, d); });
             },
             py::arg("x"), py::arg("y"))
        .def("pixel_to_intermediate",
             [](const TanSipWcs& w, const Vec& x, const Vec& y) {
                 check_same_length(x, y, "x and y");
                 return map2(x, y, [&w](double a, double b, double& r, double& d) { w.pixel_to_intermediate(a, b, r, d); });
             },
             py::arg("x"), py::arg("y"))
        .def("sky_to_pixel_reverse",
             [](const TanSipWcs& w, const Vec& ra, const Vec& dec) {
                 check_same_length(ra, dec, "ra and dec");
                 return map2(ra, dec, [&w](double a, double b, double& x, double& y) { w.sky_to_pixel_reverse(a, b, x, y); });
             },
             py::arg("ra"), py::arg("dec"));

    m.def(
        "fit_tan_sip_wcs",
        [](const Vec& x, const Vec& y, const Vec& ra, const Vec& dec, const py::object& weights,
           std::array<double, 4> box, const FitTanSipControl& ctl) {
            check_same_length(x, y, "x and y");
            check_same_length(ra, dec, "ra and dec");
            check_same_length(x, ra, "x and ra");
            const py::ssize_t n = x.shape(0);
            Vec w;
            const double* pw = nullptr;
            if (!weights.is_none()) {
                w = Vec::ensure(weights);
                if (!w || w.ndim() != 1 || w.shape(0) != n) throw std::invalid_argument("weights must have shape (n,)");
                pw = w.data();
            }
            visitcal::FitTanSipResult r;
            {
                py::gil_scoped_release release;
                r = visitcal::fit_tan_sip_wcs(static_cast<int>(n), x.data(), y.data(), ra.data(), dec.data(), pw, box, ctl);
            }
            py::dict out;
            out["status"] = r.status;
            out["wcs"] = r.wcs;
            out["used"] = vec<bool>(r.used);
            out["dx"] = vec<double>(r.dx);
            out["dy"] = vec<double>(r.dy);
            out["separation"] = vec<double>(r.separation);
            out["scatter_on_sky"] = r.scatter_on_sky;
            out["rms_arcsec"] = r.rms_arcsec;
            out["n_used"] = r.n_used;
            out["n_required"] = r.n_required;
            out["n_fits"] = r.n_fits;
            out["reverse_max_error_px"] = r.reverse_max_error_px;
            return out;
        },
        py::arg("x"), py::arg("y"), py::arg("ra"), py::arg("dec"), py::arg("weights"), py::arg("box"), py::arg("control"));
}
