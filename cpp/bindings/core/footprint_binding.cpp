#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../footprint_list.hpp"
#include "../image_view.hpp"
#include "visitcal/core/footprint.hpp"

namespace py = pybind11;
using namespace visitcal_bind;
using visitcal::ImageView;

namespace {

template <typename T>
py::array_t<T> gather(const py::array_t<T, 0>& image, const SpanArray& spans, int x0, int y0) {
    auto view = image_view<const T>(image, "image");
    auto s = spans_from(spans);
    py::array_t<T> out(static_cast<py::ssize_t>(visitcal::span_area(s)));
    T* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        visitcal::gather_spans<T>(view, s, dst, x0, y0);
    }
    return out;
}

template <typename T>
void scatter(py::array_t<T, 0>& image, const SpanArray& spans, const py::array_t<T, 0>& values, int x0, int y0) {
    auto view = image_view<T>(image, "image");
    auto s = spans_from(spans);
    if (values.ndim() != 1 || values.shape(0) != visitcal::span_area(s) || (values.shape(0) > 1 && values.strides(0) != sizeof(T))) {
        throw std::invalid_argument("values must be a contiguous 1-D array with one value per footprint pixel");
    }
    py::gil_scoped_release release;
    visitcal::scatter_spans<T>(view, s, values.data(), x0, y0);
}

template <typename T>
void bind_gather_scatter(py::module_& m) {
    m.def("gather_spans", &gather<T>, py::arg("image").noconvert(), py::arg("spans"), py::arg("x0"), py::arg("y0"));
    m.def("scatter_spans", &scatter<T>, py::arg("image").noconvert(), py::arg("spans"), py::arg("values").noconvert(),
          py::arg("x0"), py::arg("y0"));
}

}  // namespace

void bind_footprint(py::module_& m) {
    m.def("normalize_spans", [](const SpanArray& spans) {
        auto s = spans_from(spans);
        py::gil_scoped_release release;
        auto r = visitcal::normalize_spans(std::move(s));
        py::gil_scoped_acquire acquire;
        return spans_to(r);
    }, py::arg("spans"));
    m.def("dilate_spans", [](const SpanArray& spans, int radius) {
        auto s = spans_from(spans);
        py::gil_scoped_release release;
        auto r = visitcal::dilate_spans(s, radius);
        py::gil_scoped_acquire acquire;
        return spans_to(r);
    }, py::arg("spans"), py::arg("radius"));
    m.def("clip_spans", [](const SpanArray& spans, int x_min, int y_min, int x_max, int y_max) {
        return spans_to(visitcal::clip_spans(spans_from(spans), x_min, y_min, x_max, y_max));
    }, py::arg("spans"), py::arg("x_min"), py::arg("y_min"), py::arg("x_max"), py::arg("y_max"));
    m.def("label_span_components", [](const SpanArray& spans) {
        int n = 0;
        auto labels = visitcal::label_span_components(spans_from(spans), n);
        py::array_t<std::int32_t> a(static_cast<py::ssize_t>(labels.size()));
        std::copy(labels.begin(), labels.end(), a.mutable_data());
        return py::make_tuple(a, n);
    }, py::arg("spans"));
    m.def("grow_footprints", [](const SpanArray& spans, const OffsetArray& so, const SpanArray& pxy, const F32Array& pv,
                                const F32Array& ps, const OffsetArray& po, const OffsetArray& pid, int radius, bool combined,
                                int width, int height) {
        auto in = list_from(spans, so, pxy, pv, ps, po, pid);
        visitcal::FootprintList out;
        {
            py::gil_scoped_release release;
            out = visitcal::grow_footprints(in, radius, combined, width, height);
        }
        return list_to(out);
    }, py::arg("spans"), py::arg("span_offsets"), py::arg("peak_xy"), py::arg("peak_value"), py::arg("peak_significance"),
       py::arg("peak_offsets"), py::arg("peak_id"), py::arg("radius"), py::arg("combined"), py::arg("width"), py::arg("height"));
    m.def("set_mask_over_spans", [](py::array_t<std::int32_t, 0>& mask, const SpanArray& spans, std::int32_t bits, int x0,
                                    int y0) {
        auto view = image_view<std::int32_t>(mask, "mask");
        auto s = spans_from(spans);
        py::gil_scoped_release release;
        visitcal::set_mask_over_spans(view, s, bits, x0, y0);
    }, py::arg("mask").noconvert(), py::arg("spans"), py::arg("bits"), py::arg("x0"), py::arg("y0"));
    bind_gather_scatter<float>(m);
    bind_gather_scatter<double>(m);
    bind_gather_scatter<std::int32_t>(m);
}
