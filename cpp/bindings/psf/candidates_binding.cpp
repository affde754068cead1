// Binding of visitcal/psf/candidates.hpp: one batch call, GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "../array_out.hpp"

#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "../footprint_list.hpp"
#include "../image_view.hpp"
#include "visitcal/psf/candidates.hpp"

namespace py = pybind11;
using namespace visitcal_bind;

namespace {

using F64Array = py::array_t<double, py::array::c_style | py::array::forcecast>;
using I64Array = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

template <typename T>
py::array_t<T> stack(const std::vector<T>& v, py::ssize_t n, py::ssize_t s) {
    py::array_t<T> a({n, s, s});
    if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
    return a;
}

}  // namespace

void bind_psf_candidates(py::module_& m) {
    m.def(
        "make_psf_candidates",
        [](const py::array_t<float, 0>& image, const py::array_t<std::int32_t, 0>& mask,
           const py::array_t<float, 0>& variance, int x0, int y0, const F64Array& x, const F64Array& y,
           const I64Array& footprint_index, const py::tuple& footprints, int stamp_size, bool do_mask_blends,
           int neighbour_grow) {
            visitcal::ExposureView ev{image_view<const float>(image, "image"),
                                      image_view<const std::int32_t>(mask, "mask"),
                                      image_view<const float>(variance, "variance"), x0, y0};
            if (ev.mask.nx != ev.image.nx || ev.mask.ny != ev.image.ny || ev.variance.nx != ev.image.nx ||
                ev.variance.ny != ev.image.ny) {
                throw std::invalid_argument("image, mask and variance must have the same shape");
            }
            visitcal_bind::check_origin(x0, y0, ev.image.nx, ev.image.ny);
            if (x.ndim() != 1 || y.ndim() != 1 || footprint_index.ndim() != 1 || y.size() != x.size() ||
                footprint_index.size() != x.size()) {
                throw std::invalid_argument("x, y and footprint_index must be 1-D of the same length");
            }
            const visitcal::FootprintList fl = list_from_tuple(footprints);
            visitcal::PsfCandidateControl ctrl;
            ctrl.stamp_size = stamp_size;
            ctrl.do_mask_blends = do_mask_blends;
            ctrl.neighbour_grow = neighbour_grow;
            visitcal::PsfCandidateStamps r;
            {
                py::gil_scoped_release release;
                r = visitcal::make_psf_candidates(ev, x.data(), y.data(), footprint_index.data(),
                                                  static_cast<std::size_t>(x.size()), fl, ctrl);
            }
            const auto n = static_cast<py::ssize_t>(r.status.size());
            py::dict d;
            d["image"] = stack(r.image, n, r.size);
            d["mask"] = stack(r.mask, n, r.size);
            d["variance"] = stack(r.variance, n, r.size);
            d["corner_x"] = vec<std::int32_t>(r.corner_x);
            d["corner_y"] = vec<std::int32_t>(r.corner_y);
            d["max_value"] = vec<double>(r.max_value);
            d["status"] = vec<std::uint8_t>(r.status);
            return d;
        },
        py::arg("image").noconvert(), py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("x0"),
        py::arg("y0"), py::arg("x"), py::arg("y"), py::arg("footprint_index"), py::arg("footprints"),
        py::arg("stamp_size"), py::arg("do_mask_blends"), py::arg("neighbour_grow"));
}
