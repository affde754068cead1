// Binding of visitcal/calib/matcher.hpp: match_nearest, gaussian_overlap_sum and the pessimistic pattern matcher
// (GIL released).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../array_out.hpp"
#include "visitcal/calib/matcher.hpp"

namespace py = pybind11;
using visitcal::MatcherControl;
using visitcal::PatternMatchResult;
using visitcal_bind::vec;

namespace {

using Vec = py::array_t<double, py::array::c_style>;

void check_pair(const Vec& x, const Vec& y, const char* name) {
    if (x.ndim() != 1 || y.ndim() != 1 || x.shape(0) != y.shape(0))
        throw std::invalid_argument(std::string(name) + ": x and y must be 1-D float64 arrays of one length");
}

}  // namespace

void bind_matcher(py::module_& m) {
    m.def(
        "match_nearest",
        [](const Vec& x1, const Vec& y1, const Vec& x2, const Vec& y2, double radius, bool unique) {
            check_pair(x1, y1, "list 1");
            check_pair(x2, y2, "list 2");
            visitcal::NearestMatch r;
            {
                py::gil_scoped_release release;
                r = visitcal::match_nearest(x1.data(), y1.data(), static_cast<std::size_t>(x1.shape(0)), x2.data(),
                                            y2.data(), static_cast<std::size_t>(x2.shape(0)), radius, unique);
            }
            return py::make_tuple(vec<std::int64_t>(r.index2), vec<double>(r.distance));
        },
        py::arg("x1").noconvert(), py::arg("y1").noconvert(), py::arg("x2").noconvert(), py::arg("y2").noconvert(),
        py::arg("radius"), py::arg("unique") = false);

    m.def(
        "gaussian_overlap_sum",
        [](const Vec& x1, const Vec& y1, const Vec& x2, const Vec& y2, const Vec& w2, double sigma, double radius,
           double min_distance) {
            check_pair(x1, y1, "list 1");
            check_pair(x2, y2, "list 2");
            if (w2.ndim() != 1 || w2.shape(0) != x2.shape(0))
                throw std::invalid_argument("the weights must be 1-D and as long as list 2");
            std::vector<double> r;
            {
                py::gil_scoped_release release;
                r = visitcal::gaussian_overlap_sum(x1.data(), y1.data(), static_cast<std::size_t>(x1.shape(0)),
                                                   x2.data(), y2.data(), w2.data(),
                                                   static_cast<std::size_t>(x2.shape(0)), sigma, radius, min_distance);
            }
            return vec<double>(r);
        },
        py::arg("x1").noconvert(), py::arg("y1").noconvert(), py::arg("x2").noconvert(), py::arg("y2").noconvert(),
        py::arg("w2").noconvert(), py::arg("sigma"), py::arg("radius"), py::arg("min_distance"));

    m.def(
        "offset_histogram",
        [](const Vec& xs, const Vec& ys, const Vec& xr, const Vec& yr, double max_offset, double bin) {
            check_pair(xs, ys, "sources");
            check_pair(xr, yr, "references");
            visitcal::OffsetHistogram h;
            {
                py::gil_scoped_release release;
                h = visitcal::offset_histogram(xs.data(), ys.data(), static_cast<std::size_t>(xs.shape(0)), xr.data(),
                                               yr.data(), static_cast<std::size_t>(xr.shape(0)), max_offset, bin);
            }
            py::array_t<std::int64_t> counts({static_cast<py::ssize_t>(h.n_bins), static_cast<py::ssize_t>(h.n_bins)});
            std::copy(h.counts.begin(), h.counts.end(), counts.mutable_data());
            return py::make_tuple(counts, h.n_pairs);
        },
        py::arg("xs").noconvert(), py::arg("ys").noconvert(), py::arg("xr").noconvert(), py::arg("yr").noconvert(),
        py::arg("max_offset"), py::arg("bin"));

    py::class_<MatcherControl>(m, "MatcherControl")
        .def(py::init<>())
        .def_readwrite("num_bright_stars", &MatcherControl::num_bright_stars)
        .def_readwrite("min_matched_pairs", &MatcherControl::min_matched_pairs)
        .def_readwrite("min_frac_matched_pairs", &MatcherControl::min_frac_matched_pairs)
        .def_readwrite("matcher_iterations", &MatcherControl::matcher_iterations)
        .def_readwrite("max_offset_pix", &MatcherControl::max_offset_pix)
        .def_readwrite("max_rotation_deg", &MatcherControl::max_rotation_deg)
        .def_readwrite("num_points_for_shape", &MatcherControl::num_points_for_shape)
        .def_readwrite("num_points_for_shape_attempt", &MatcherControl::num_points_for_shape_attempt)
        .def_readwrite("min_match_dist_pixels", &MatcherControl::min_match_dist_pixels)
        .def_readwrite("num_pattern_consensus", &MatcherControl::num_pattern_consensus)
        .def_readwrite("num_ref_require_consensus", &MatcherControl::num_ref_require_consensus)
        .def_readwrite("match_distance_sigma", &MatcherControl::match_distance_sigma)
        .def_readwrite("max_scale_error", &MatcherControl::max_scale_error);

    m.def(
        "match_pessimistic_b",
        [](const Vec& xs, const Vec& ys, const Vec& fs, const Vec& xr, const Vec& yr, const MatcherControl& ctrl) {
            check_pair(xs, ys, "sources");
            check_pair(xr, yr, "references");
            if (fs.ndim() != 1 || fs.shape(0) != xs.shape(0))
                throw std::invalid_argument("source flux must be 1-D and as long as the source positions");
            PatternMatchResult r;
            {
                py::gil_scoped_release release;
                r = visitcal::match_pessimistic_b(xs.data(), ys.data(), fs.data(), static_cast<std::size_t>(xs.shape(0)),
                                                  xr.data(), yr.data(), static_cast<std::size_t>(xr.shape(0)), ctrl);
            }
            py::dict d;
            d["ok"] = r.ok;
            d["reason"] = r.reason;
            const auto& t = r.transform;
            d["transform"] = py::make_tuple(t.cx, t.cy, t.a, t.b, t.tx, t.ty);
            d["src_index"] = vec<std::int64_t>(r.src_index);
            d["ref_index"] = vec<std::int64_t>(r.ref_index);
            d["distance"] = vec<double>(r.distance);
            d["match_distance"] = r.match_distance;
            d["tolerance"] = r.tolerance;
            d["softening"] = r.softening;
            d["n_consensus"] = r.n_consensus;
            d["n_patterns"] = r.n_patterns;
            d["n_candidates"] = r.n_candidates;
            d["best_n_pairs"] = r.best_n_pairs;
            d["n_required"] = r.n_required;
            return d;
        },
        py::arg("xs").noconvert(), py::arg("ys").noconvert(), py::arg("fs").noconvert(), py::arg("xr").noconvert(),
        py::arg("yr").noconvert(), py::arg("control"));
}
