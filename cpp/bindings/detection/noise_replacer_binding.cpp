#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>

#include "../footprint_list.hpp"
#include "../image_view.hpp"
#include "visitcal/detection/noise_replacer.hpp"

namespace py = pybind11;
using namespace visitcal_bind;
using visitcal::ImageView;
using visitcal::NoiseReplacer;

namespace {

using F32 = py::array_t<float, 0>;
using I32 = py::array_t<std::int32_t, 0>;

visitcal::FootprintList footprints_from(const SpanArray& spans, const OffsetArray& span_offsets) {
    visitcal::FootprintList f;
    f.spans = spans_from(spans);
    if (span_offsets.ndim() != 1 || span_offsets.size() < 1) {
        throw std::invalid_argument("span_offsets must be 1-D with n + 1 entries");
    }
    f.span_offsets.assign(span_offsets.data(), span_offsets.data() + span_offsets.size());
    f.peak_offsets.assign(f.span_offsets.size(), 0);
    return f;
}

const float* values_for(const F32& values, const std::vector<visitcal::Span>& s) {
    const std::int64_t n = visitcal::span_area(s);
    if (values.ndim() != 1 || values.shape(0) != n || (n > 1 && values.strides(0) != sizeof(float))) {
        throw std::invalid_argument("values must be a contiguous 1-D float32 array with one value per span pixel");
    }
    return values.data();
}

}  // namespace

void bind_noise_replacer(py::module_& m) {
    py::class_<NoiseReplacer>(m, "NoiseReplacer")
        .def(py::init([](F32& image, const SpanArray& spans, const OffsetArray& span_offsets, double mean, double sigma,
                         std::uint64_t seed, int x0, int y0) {
                 auto view = image_view<float>(image, "image");
                 auto fl = footprints_from(spans, span_offsets);
                 py::gil_scoped_release release;
                 return std::make_unique<NoiseReplacer>(view, fl, mean, sigma, seed, x0, y0);
             }),
             py::arg("image").noconvert(), py::arg("spans"), py::arg("span_offsets"), py::arg("mean"),
             py::arg("sigma"), py::arg("seed"), py::arg("x0") = 0, py::arg("y0") = 0,
             py::keep_alive<1, 2>())  // the image array lives as long as the replacer
        .def("__len__", &NoiseReplacer::size)
        .def_property_readonly("ended", &NoiseReplacer::ended)
        .def_property_readonly("mean", &NoiseReplacer::mean)
        .def_property_readonly("sigma", &NoiseReplacer::sigma)
        .def("insert", &NoiseReplacer::insert, py::arg("k"), py::call_guard<py::gil_scoped_release>())
        .def("remove", &NoiseReplacer::remove, py::arg("k"), py::call_guard<py::gil_scoped_release>())
        .def("insert_heavy",
             [](NoiseReplacer& r, const SpanArray& spans, const F32& values) {
                 auto s = spans_from(spans);
                 const float* v = values_for(values, s);
                 py::gil_scoped_release release;
                 r.insert_heavy(s.data(), s.size(), v);
             },
             py::arg("spans"), py::arg("values").noconvert())
        .def("remove_spans",
             [](NoiseReplacer& r, const SpanArray& spans) {
                 auto s = spans_from(spans);
                 py::gil_scoped_release release;
                 r.remove_spans(s.data(), s.size());
             },
             py::arg("spans"))
        .def("end", &NoiseReplacer::end, py::call_guard<py::gil_scoped_release>())
        .def("noise_of", [](const NoiseReplacer& r, std::size_t k) {
            const float* p = r.noise_of(k);
            py::array_t<float> out(static_cast<py::ssize_t>(r.area(k)));
            std::copy_n(p, out.size(), out.mutable_data());
            return out;
        }, py::arg("k"));

    m.def(
        "clipped_mean_stdev",
        [](const F32& image, const std::optional<I32>& mask, std::int64_t ignored_mask, double n_sigma_clip, int n_iter,
           int sample_step) {
            auto img = image_view<const float>(image, "image");
            ImageView<const std::int32_t> msk{nullptr, 0, 0, 0};
            if (mask) {
                msk = image_view<const std::int32_t>(*mask, "mask");
                if (msk.nx != img.nx || msk.ny != img.ny) throw std::invalid_argument("mask and image differ in shape");
            }
            const auto bits = static_cast<std::int32_t>(static_cast<std::uint32_t>(ignored_mask & 0xffffffffLL));
            visitcal::ClippedStats st{};
            {
                py::gil_scoped_release release;
                st = visitcal::clipped_mean_stdev(img, msk, bits, n_sigma_clip, n_iter, sample_step);
            }
            return py::make_tuple(st.mean, st.stdev, st.n_used, st.n_clip);
        },
        py::arg("image").noconvert(), py::arg("mask").noconvert(), py::arg("ignored_mask"),
        py::arg("n_sigma_clip") = 3.0, py::arg("n_iter") = 3, py::arg("sample_step") = 1);
    m.def("noise_stats_mask", []() { return static_cast<std::int64_t>(visitcal::kNoiseStatsMask); });
    m.def("portable_log", [](const py::array_t<double, py::array::c_style | py::array::forcecast>& x) {
        py::array_t<double> out(x.size());
        for (py::ssize_t i = 0; i < x.size(); ++i) out.mutable_data()[i] = visitcal::portable_log(x.data()[i]);
        return out;
    }, py::arg("x"));
    m.def("portable_normal", [](std::uint64_t seed, std::size_t n) {
        py::array_t<double> out(static_cast<py::ssize_t>(n));
        double* o = out.mutable_data();
        {
            py::gil_scoped_release release;
            visitcal::PortableNormal g(seed);
            for (std::size_t i = 0; i < n; ++i) o[i] = g();
        }
        return out;
    }, py::arg("seed"), py::arg("n"));
}
