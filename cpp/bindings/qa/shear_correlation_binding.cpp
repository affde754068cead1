// Binding of visitcal/qa/shear_correlation.hpp (GIL released around the pair loop; inputs not copied).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "../array_out.hpp"
#include "visitcal/qa/shear_correlation.hpp"

namespace py = pybind11;
using visitcal_bind::vec;

namespace {

using ShearVec = py::array_t<double, py::array::c_style>;

void check_shear_column(const ShearVec& v, py::ssize_t n, const char* name) {
    if (v.ndim() != 1 || v.shape(0) != n)
        throw std::invalid_argument(std::string("shear correlation: ") + name +
                                    " must be a 1-D float64 array as long as x (" + std::to_string(n) + ")");
}

}  // namespace

void bind_shear_correlation(py::module_& m) {
    m.def(
        "shear_correlation",
        [](const ShearVec& x, const ShearVec& y, const ShearVec& a1, const ShearVec& a2, const ShearVec& b1,
           const ShearVec& b2, const ShearVec& w, double min_sep, double max_sep, int nbins, bool cross) {
            if (x.ndim() != 1) throw std::invalid_argument("shear correlation: x must be a 1-D float64 array");
            const py::ssize_t n = x.shape(0);
            check_shear_column(y, n, "y");
            check_shear_column(a1, n, "a1");
            check_shear_column(a2, n, "a2");
            check_shear_column(b1, n, "b1");
            check_shear_column(b2, n, "b2");
            check_shear_column(w, n, "w");
            visitcal::ShearCorrelationSums s;
            {
                py::gil_scoped_release release;
                s = visitcal::shear_correlation(x.data(), y.data(), a1.data(), a2.data(), b1.data(), b2.data(),
                                                w.data(), static_cast<std::size_t>(n), min_sep, max_sep, nbins,
                                                cross);
            }
            py::dict d;
            d["weight"] = vec<double>(s.weight);
            d["npairs"] = vec<double>(s.npairs);
            d["sum_wr"] = vec<double>(s.sum_wr);
            d["sum_wlogr"] = vec<double>(s.sum_wlogr);
            d["xip"] = vec<double>(s.xip);
            d["xip_im"] = vec<double>(s.xip_im);
            d["xim"] = vec<double>(s.xim);
            d["xim_im"] = vec<double>(s.xim_im);
            return d;
        },
        py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("a1").noconvert(), py::arg("a2").noconvert(),
        py::arg("b1").noconvert(), py::arg("b2").noconvert(), py::arg("w").noconvert(), py::arg("min_sep"),
        py::arg("max_sep"), py::arg("nbins"), py::arg("cross"));
}
