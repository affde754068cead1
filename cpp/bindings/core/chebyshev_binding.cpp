#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "visitcal/core/chebyshev.hpp"

namespace py = pybind11;
using visitcal::Box2I;
using visitcal::ChebyshevBoundedField;
using visitcal::ChebyshevBoundedFieldControl;
using visitcal::RowMajorArrayXXd;

namespace {

using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

const double* checked_1d(const DArray& a, const char* name, py::ssize_t n) {
    if (a.ndim() != 1) throw std::invalid_argument(std::string(name) + " must be 1-D");
    if (n >= 0 && a.shape(0) != n) {
        throw std::invalid_argument(std::string(name) + " has length " + std::to_string(a.shape(0)) +
                                    ", expected " + std::to_string(n));
    }
    return a.data();
}

template <typename T>
void grid_into(const ChebyshevBoundedField& f, const DArray& xs, const DArray& ys,
               py::array_t<T, 0> out) {
    const double* x = checked_1d(xs, "x", -1);
    const double* y = checked_1d(ys, "y", -1);
    const py::ssize_t nx = xs.shape(0), ny = ys.shape(0);
    if (out.ndim() != 2 || out.shape(0) != ny || out.shape(1) != nx) {
        throw std::invalid_argument("out must have shape (len(y), len(x)) = (" + std::to_string(ny) + ", " +
                                    std::to_string(nx) + ")");
    }
    if (!out.writeable()) throw std::invalid_argument("out is read-only");
    // An empty grid has nothing to write, and numpy gives an axis of length 0 or 1 any stride: only
    // a longer x axis must have unit stride (as image_view's check).
    if (nx == 0 || ny == 0) return;
    if ((nx > 1 && out.strides(1) != static_cast<py::ssize_t>(sizeof(T))) ||
        out.strides(0) % static_cast<py::ssize_t>(sizeof(T)) != 0) {
        throw std::invalid_argument("out must be contiguous along x (its last axis)");
    }
    T* dst = out.mutable_data();
    const std::ptrdiff_t stride = out.strides(0) / static_cast<py::ssize_t>(sizeof(T));
    py::gil_scoped_release release;
    f.evaluate_grid<T>(x, static_cast<std::size_t>(nx), y, static_cast<std::size_t>(ny), dst, stride);
}

}  // namespace

void bind_chebyshev(py::module_& m) {
    py::class_<Box2I>(m, "Box2I")
        .def(py::init<int, int, int, int>(), py::arg("min_x"), py::arg("min_y"), py::arg("max_x"), py::arg("max_y"))
        .def_readonly("min_x", &Box2I::min_x)
        .def_readonly("min_y", &Box2I::min_y)
        .def_readonly("max_x", &Box2I::max_x)
        .def_readonly("max_y", &Box2I::max_y);

    py::class_<ChebyshevBoundedFieldControl>(m, "ChebyshevBoundedFieldControl")
        .def(py::init<>())
        .def_readwrite("order_x", &ChebyshevBoundedFieldControl::order_x)
        .def_readwrite("order_y", &ChebyshevBoundedFieldControl::order_y)
        .def_readwrite("triangular", &ChebyshevBoundedFieldControl::triangular)
        .def("size", &ChebyshevBoundedFieldControl::size)
        .def("terms", &ChebyshevBoundedFieldControl::terms);

    py::class_<ChebyshevBoundedField>(m, "ChebyshevBoundedField")
        .def(py::init([](const Box2I& bbox, const DArray& coefficients) {
                 if (coefficients.ndim() != 2) throw std::invalid_argument("coefficients must be 2-D (order_y+1, order_x+1)");
                 Eigen::Map<const RowMajorArrayXXd> c(coefficients.data(), coefficients.shape(0), coefficients.shape(1));
                 return ChebyshevBoundedField(bbox, RowMajorArrayXXd(c));
             }),
             py::arg("bbox"), py::arg("coefficients"))
        .def_static(
            "fit",
            [](const Box2I& bbox, const DArray& x, const DArray& y, const DArray& z, py::object weights,
               const ChebyshevBoundedFieldControl& ctrl) {
                const py::ssize_t n = x.ndim() == 1 ? x.shape(0) : -1;
                const double* px = checked_1d(x, "x", -1);
                const double* py_ = checked_1d(y, "y", n);
                const double* pz = checked_1d(z, "z", n);
                DArray w;
                const double* pw = nullptr;
                if (!weights.is_none()) {
                    w = DArray::ensure(weights);
                    if (!w) throw std::invalid_argument("weights must be an array of numbers");
                    pw = checked_1d(w, "weights", n);
                }
                py::gil_scoped_release release;
                return ChebyshevBoundedField::fit(bbox, px, py_, pz, pw, static_cast<std::size_t>(n), ctrl);
            },
            py::arg("bbox"), py::arg("x"), py::arg("y"), py::arg("z"), py::arg("weights"), py::arg("ctrl"))
        .def_property_readonly("bbox", &ChebyshevBoundedField::bbox)
        .def_property_readonly("coefficients",
                               [](const ChebyshevBoundedField& f) {
                                   const auto& c = f.coefficients();
                                   py::array_t<double> out({c.rows(), c.cols()});
                                   std::copy(c.data(), c.data() + c.size(), out.mutable_data());
                                   return out;
                               })
        .def("evaluate_point", py::overload_cast<double, double>(&ChebyshevBoundedField::evaluate, py::const_))
        .def("evaluate_points",
             [](const ChebyshevBoundedField& f, const DArray& x, const DArray& y) {
                 const py::ssize_t n = x.ndim() == 1 ? x.shape(0) : -1;
                 const double* px = checked_1d(x, "x", -1);
                 const double* py_ = checked_1d(y, "y", n);
                 py::array_t<double> out(n);
                 double* po = out.mutable_data();
                 {
                     py::gil_scoped_release release;
                     f.evaluate(px, py_, po, static_cast<std::size_t>(n));
                 }
                 return out;
             })
        .def("evaluate_grid_into", &grid_into<double>, py::arg("x"), py::arg("y"), py::arg("out").noconvert())
        .def("evaluate_grid_into", &grid_into<float>, py::arg("x"), py::arg("y"), py::arg("out").noconvert())
        .def("mean", &ChebyshevBoundedField::mean)
        .def("scaled", &ChebyshevBoundedField::scaled);
}
