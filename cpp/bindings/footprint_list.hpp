// Conversions between visitcal::FootprintList and the flat numpy arrays visitcal.core.footprint uses:
// spans (n, 3) int32 [y, x0, x1], span_offsets (k + 1) int64, peak_xy (m, 2) int32 [x, y],
// peak_value (m) float32, peak_significance (m) float32, peak_offsets (k + 1) int64, peak_id (m) int64.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "visitcal/core/footprint.hpp"

namespace visitcal_bind {

namespace py = pybind11;
using visitcal::Peak;
using visitcal::Span;

using SpanArray = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>;
using OffsetArray = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

static_assert(sizeof(Span) == 3 * sizeof(std::int32_t), "Span must be three packed int32");

inline std::vector<Span> spans_from(const SpanArray& a, const char* name = "spans") {
    if (a.ndim() != 2 || a.shape(1) != 3) {
        throw std::invalid_argument(std::string(name) + " must have shape (n, 3) [y, x0, x1]");
    }
    std::vector<Span> out(static_cast<std::size_t>(a.shape(0)));
    if (!out.empty()) std::memcpy(out.data(), a.data(), out.size() * sizeof(Span));
    return out;
}

inline py::array_t<std::int32_t> spans_to(const std::vector<Span>& s) {
    py::array_t<std::int32_t> a({static_cast<py::ssize_t>(s.size()), static_cast<py::ssize_t>(3)});
    if (!s.empty()) std::memcpy(a.mutable_data(), s.data(), s.size() * sizeof(Span));
    return a;
}

inline py::tuple list_to(const visitcal::FootprintList& f) {
    const auto m = static_cast<py::ssize_t>(f.peaks.size());
    py::array_t<std::int32_t> xy({m, static_cast<py::ssize_t>(2)});
    py::array_t<float> value(m), sig(m);
    py::array_t<std::int64_t> ids(m);
    auto pid = ids.mutable_unchecked<1>();
    auto pxy = xy.mutable_unchecked<2>();
    auto pv = value.mutable_unchecked<1>();
    auto ps = sig.mutable_unchecked<1>();
    for (py::ssize_t i = 0; i < m; ++i) {
        const Peak& p = f.peaks[static_cast<std::size_t>(i)];
        pxy(i, 0) = p.x;
        pxy(i, 1) = p.y;
        pv(i) = p.value;
        ps(i) = p.significance;
        pid(i) = p.id;
    }
    py::array_t<std::int64_t> so(static_cast<py::ssize_t>(f.span_offsets.size()));
    py::array_t<std::int64_t> po(static_cast<py::ssize_t>(f.peak_offsets.size()));
    std::memcpy(so.mutable_data(), f.span_offsets.data(), f.span_offsets.size() * sizeof(std::int64_t));
    std::memcpy(po.mutable_data(), f.peak_offsets.data(), f.peak_offsets.size() * sizeof(std::int64_t));
    return py::make_tuple(spans_to(f.spans), so, xy, value, sig, po, ids);
}

inline visitcal::FootprintList list_from(const SpanArray& spans, const OffsetArray& span_offsets, const SpanArray& peak_xy,
                                         const F32Array& peak_value, const F32Array& peak_sig,
                                         const OffsetArray& peak_offsets, const OffsetArray& peak_id) {
    visitcal::FootprintList f;
    f.spans = spans_from(spans);
    const py::ssize_t k = span_offsets.size();
    if (k < 1 || peak_offsets.size() != k) throw std::invalid_argument("span_offsets and peak_offsets must both have n + 1 entries");
    f.span_offsets.assign(span_offsets.data(), span_offsets.data() + k);
    f.peak_offsets.assign(peak_offsets.data(), peak_offsets.data() + k);
    const py::ssize_t m = peak_value.size();
    if (peak_xy.ndim() != 2 || peak_xy.shape(0) != m || peak_xy.shape(1) != 2 || peak_sig.size() != m ||
        peak_id.size() != m) {
        throw std::invalid_argument("peak arrays disagree in length");
    }
    if (f.span_offsets.front() != 0 || f.span_offsets.back() != static_cast<std::int64_t>(f.spans.size()) ||
        f.peak_offsets.front() != 0 || f.peak_offsets.back() != m) {
        throw std::invalid_argument("offsets must start at 0 and end at the array lengths");
    }
    for (py::ssize_t i = 1; i < k; ++i) {
        if (f.span_offsets[i] < f.span_offsets[i - 1] || f.peak_offsets[i] < f.peak_offsets[i - 1]) {
            throw std::invalid_argument("offsets must be non-decreasing");
        }
    }
    f.peaks.resize(static_cast<std::size_t>(m));
    for (py::ssize_t i = 0; i < m; ++i) {
        f.peaks[static_cast<std::size_t>(i)] = {peak_xy.at(i, 0), peak_xy.at(i, 1), peak_value.at(i), peak_sig.at(i),
                                                peak_id.at(i)};
    }
    return f;
}

/// A FootprintList from the 7-tuple `list_to` makes (spans, span_offsets, peak_xy, peak_value,
/// peak_significance, peak_offsets, peak_id), as visitcal.core.footprint.FootprintSet holds it.
inline visitcal::FootprintList list_from_tuple(const py::tuple& t, const char* name = "footprints") {
    if (t.size() != 7) {
        throw std::invalid_argument(std::string(name) +
                                    " must be (spans, span_offsets, peak_xy, peak_value, peak_significance, "
                                    "peak_offsets, peak_id)");
    }
    return list_from(t[0].cast<SpanArray>(), t[1].cast<OffsetArray>(), t[2].cast<SpanArray>(), t[3].cast<F32Array>(),
                     t[4].cast<F32Array>(), t[5].cast<OffsetArray>(), t[6].cast<OffsetArray>());
}

}  // namespace visitcal_bind
