// Binding of visitcal/calib/fof.hpp: spherical friends-of-friends, nearest match and neighbour counts
// (GIL released).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../array_out.hpp"
#include "visitcal/calib/fof.hpp"

namespace py = pybind11;

namespace {

using Vec = py::array_t<double, py::array::c_style>;

std::size_t check_radec(const Vec& ra, const Vec& dec, const char* name) {
    if (ra.ndim() != 1 || dec.ndim() != 1 || ra.shape(0) != dec.shape(0))
        throw std::invalid_argument(std::string(name) + ": ra and dec must be 1-D float64 arrays of one length");
    return static_cast<std::size_t>(ra.shape(0));
}

}  // namespace

void bind_fof(py::module_& m) {
    m.def(
        "fof_groups",
        [](const Vec& ra, const Vec& dec, double link_deg) {
            const std::size_t n = check_radec(ra, dec, "points");
            std::vector<std::int64_t> label;
            std::int64_t n_groups = 0;
            {
                py::gil_scoped_release release;
                label = visitcal::fof_groups(ra.data(), dec.data(), n, link_deg, &n_groups);
            }
            return py::make_tuple(visitcal_bind::vec<std::int64_t>(label), n_groups);
        },
        py::arg("ra").noconvert(), py::arg("dec").noconvert(), py::arg("link_deg"));

    m.def(
        "match_nearest_sphere",
        [](const Vec& ra1, const Vec& dec1, const Vec& ra2, const Vec& dec2, double radius_deg) {
            const std::size_t n1 = check_radec(ra1, dec1, "list 1");
            const std::size_t n2 = check_radec(ra2, dec2, "list 2");
            py::array_t<std::int64_t> index(static_cast<py::ssize_t>(n1));
            py::array_t<double> sep(static_cast<py::ssize_t>(n1));
            std::int64_t* pi = index.mutable_data();
            double* ps = sep.mutable_data();
            {
                py::gil_scoped_release release;
                visitcal::match_nearest_sphere(ra1.data(), dec1.data(), n1, ra2.data(), dec2.data(), n2, radius_deg,
                                               pi, ps);
            }
            return py::make_tuple(index, sep);
        },
        py::arg("ra1").noconvert(), py::arg("dec1").noconvert(), py::arg("ra2").noconvert(),
        py::arg("dec2").noconvert(), py::arg("radius_deg"));

    m.def(
        "count_neighbours",
        [](const Vec& ra, const Vec& dec, double radius_deg) {
            const std::size_t n = check_radec(ra, dec, "points");
            py::array_t<std::int64_t> count(static_cast<py::ssize_t>(n));
            std::int64_t* pc = count.mutable_data();
            {
                py::gil_scoped_release release;
                visitcal::count_neighbours(ra.data(), dec.data(), n, radius_deg, pc);
            }
            return count;
        },
        py::arg("ra").noconvert(), py::arg("dec").noconvert(), py::arg("radius_deg"));
}
