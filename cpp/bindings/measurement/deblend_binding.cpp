// Bindings of deblend.hpp: one call deblends every parent (GIL released; a Python PSF re-takes it
// per call) and returns flat arrays for visitcal.measurement.deblend to turn into table rows and footprints.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../footprint_list.hpp"
#include "../exposure_view.hpp"
#include "../image_view.hpp"
#include "visitcal/measurement/deblend.hpp"

namespace py = pybind11;
using visitcal::DeblendControl;
using visitcal::DeblendResult;

namespace {

using visitcal_bind::exposure_view;

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v) {
    py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
    return a;
}

py::dict pack(const std::vector<DeblendResult>& res) {
    std::vector<std::int32_t> n_child, n_peaks, scx, scy;
    std::vector<std::uint8_t> tmp_, failed, skipped, big, masked, deblended;
    std::vector<visitcal::Span> pspans;
    std::vector<std::int64_t> poff{0};
    std::vector<std::int64_t> c_parent, c_peak_index, c_peak_id, soff{0}, voff{0};
    std::vector<std::int32_t> c_px, c_py;
    std::vector<visitcal::Span> cspans;
    std::vector<float> cvalues;
    std::vector<double> pcx, pcy, pflux;
    std::vector<std::uint8_t> is_psf, stray, ramped, patched;
    py::list failures;
    for (std::size_t k = 0; k < res.size(); ++k) {
        const DeblendResult& r = res[k];
        n_child.push_back(r.n_child());
        n_peaks.push_back(r.n_peaks);
        scx.push_back(r.skipped_center_x);
        scy.push_back(r.skipped_center_y);
        tmp_.push_back(r.too_many_peaks);
        failed.push_back(r.failed);
        skipped.push_back(r.skipped);
        big.push_back(r.parent_too_big);
        masked.push_back(r.masked);
        deblended.push_back(r.deblended);
        failures.append(r.failure);
        pspans.insert(pspans.end(), r.parent_spans.begin(), r.parent_spans.end());
        poff.push_back(static_cast<std::int64_t>(pspans.size()));
        for (const auto& c : r.children) {
            c_parent.push_back(static_cast<std::int64_t>(k));
            c_peak_index.push_back(static_cast<std::int64_t>(c.peak_index));
            c_peak_id.push_back(c.peak.id);
            c_px.push_back(c.peak.x);
            c_py.push_back(c.peak.y);
            cspans.insert(cspans.end(), c.spans.begin(), c.spans.end());
            soff.push_back(static_cast<std::int64_t>(cspans.size()));
            cvalues.insert(cvalues.end(), c.values.begin(), c.values.end());
            voff.push_back(static_cast<std::int64_t>(cvalues.size()));
            pcx.push_back(c.psf_center_x);
            pcy.push_back(c.psf_center_y);
            pflux.push_back(c.psf_flux);
            is_psf.push_back(c.deblended_as_psf);
            stray.push_back(c.has_stray_flux);
            ramped.push_back(c.ramped_template);
            patched.push_back(c.patched_template);
        }
    }
    py::dict d;
    d["n_child"] = to_array(n_child);
    d["n_peaks"] = to_array(n_peaks);
    d["skipped_center_x"] = to_array(scx);
    d["skipped_center_y"] = to_array(scy);
    d["too_many_peaks"] = to_array(tmp_);
    d["failed"] = to_array(failed);
    d["skipped"] = to_array(skipped);
    d["parent_too_big"] = to_array(big);
    d["masked"] = to_array(masked);
    d["deblended"] = to_array(deblended);
    d["failure"] = failures;
    d["parent_spans"] = visitcal_bind::spans_to(pspans);
    d["parent_span_offsets"] = to_array(poff);
    d["child_parent"] = to_array(c_parent);
    d["child_peak_index"] = to_array(c_peak_index);
    d["child_peak_id"] = to_array(c_peak_id);
    d["child_peak_x"] = to_array(c_px);
    d["child_peak_y"] = to_array(c_py);
    d["child_spans"] = visitcal_bind::spans_to(cspans);
    d["child_span_offsets"] = to_array(soff);
    d["child_values"] = to_array(cvalues);
    d["child_value_offsets"] = to_array(voff);
    d["child_psf_center_x"] = to_array(pcx);
    d["child_psf_center_y"] = to_array(pcy);
    d["child_psf_flux"] = to_array(pflux);
    d["child_deblended_as_psf"] = to_array(is_psf);
    d["child_has_stray_flux"] = to_array(stray);
    d["child_ramped_template"] = to_array(ramped);
    d["child_patched_template"] = to_array(patched);
    return d;
}

py::dict deblend_all(const py::array_t<float, 0>& image, py::array_t<std::int32_t, 0>& mask,
                     const py::array_t<float, 0>& variance, int x0, int y0, const visitcal_bind::SpanArray& spans,
                     const visitcal_bind::OffsetArray& span_offsets, const visitcal_bind::SpanArray& peak_xy,
                     const visitcal_bind::F32Array& peak_value, const visitcal_bind::F32Array& peak_sig,
                     const visitcal_bind::OffsetArray& peak_offsets, const visitcal_bind::OffsetArray& peak_id,
                     const py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>& skip,
                     const visitcal::Psf& psf, double sigma1, const DeblendControl& ctrl, std::int32_t not_deblended_bits) {
    auto ev = exposure_view(image, mask, variance, x0, y0);
    auto mask_out = visitcal_bind::image_view<std::int32_t>(mask, "mask");
    visitcal::FootprintList fl =
        visitcal_bind::list_from(spans, span_offsets, peak_xy, peak_value, peak_sig, peak_offsets, peak_id);
    std::vector<std::uint8_t> sk(skip.data(), skip.data() + skip.size());
    std::vector<DeblendResult> res;
    {
        py::gil_scoped_release release;
        res = visitcal::deblend_footprints(ev, fl, sk, psf, sigma1, ctrl, mask_out, not_deblended_bits);
    }
    return pack(res);
}

double sigma1(const py::array_t<float, 0>& image, const py::array_t<std::int32_t, 0>& mask,
              const py::array_t<float, 0>& variance, int x0, int y0, std::int32_t bad_bits,
              const std::optional<visitcal_bind::SpanArray>& spans, int sample_step) {
    auto ev = exposure_view(image, mask, variance, x0, y0);
    std::vector<visitcal::Span> s;
    if (spans) s = visitcal_bind::spans_from(*spans);
    py::gil_scoped_release release;
    return visitcal::deblend_sigma1(ev, bad_bits, s.data(), s.size(), sample_step);
}

}  // namespace

void bind_deblend(py::module_& m) {
    py::class_<DeblendControl>(m, "DeblendControl")
        .def(py::init<>())
        .def_property("edge_handling", [](const DeblendControl& c) { return static_cast<int>(c.edge_handling); },
                      [](DeblendControl& c, int v) { c.edge_handling = static_cast<visitcal::DeblendEdgeHandling>(v); })
        .def_property("stray_flux_to_point_sources",
                      [](const DeblendControl& c) { return static_cast<int>(c.stray_flux_to_point_sources); },
                      [](DeblendControl& c, int v) {
                          c.stray_flux_to_point_sources = static_cast<visitcal::StrayFluxToPointSources>(v);
                      })
        .def_property("stray_flux_rule", [](const DeblendControl& c) { return static_cast<int>(c.stray_flux_rule); },
                      [](DeblendControl& c, int v) { c.stray_flux_rule = static_cast<visitcal::StrayFluxRule>(v); })
        .def_readwrite("assign_stray_flux", &DeblendControl::assign_stray_flux)
        .def_readwrite("clip_stray_flux_fraction", &DeblendControl::clip_stray_flux_fraction)
        .def_readwrite("psf_chisq_1", &DeblendControl::psf_chisq_1)
        .def_readwrite("psf_chisq_2", &DeblendControl::psf_chisq_2)
        .def_readwrite("psf_chisq_2b", &DeblendControl::psf_chisq_2b)
        .def_readwrite("max_number_of_peaks", &DeblendControl::max_number_of_peaks)
        .def_readwrite("max_footprint_area", &DeblendControl::max_footprint_area)
        .def_readwrite("max_footprint_size", &DeblendControl::max_footprint_size)
        .def_readwrite("min_footprint_axis_ratio", &DeblendControl::min_footprint_axis_ratio)
        .def_readwrite("tiny_footprint_size", &DeblendControl::tiny_footprint_size)
        .def_readwrite("propagate_all_peaks", &DeblendControl::propagate_all_peaks)
        .def_readwrite("catch_failures", &DeblendControl::catch_failures)
        .def_readwrite("sigma1_bad_bits", &DeblendControl::sigma1_bad_bits)
        .def_readwrite("mask_limits", &DeblendControl::mask_limits)
        .def_readwrite("weight_templates", &DeblendControl::weight_templates)
        .def_readwrite("remove_degenerate_templates", &DeblendControl::remove_degenerate_templates)
        .def_readwrite("max_temp_dot_prod", &DeblendControl::max_temp_dot_prod)
        .def_readwrite("median_smooth_template", &DeblendControl::median_smooth_template);
    m.def("deblend_footprints", &deblend_all, py::arg("image").noconvert(), py::arg("mask").noconvert(),
          py::arg("variance").noconvert(), py::arg("x0"), py::arg("y0"), py::arg("spans"), py::arg("span_offsets"),
          py::arg("peak_xy"), py::arg("peak_value"), py::arg("peak_significance"), py::arg("peak_offsets"),
          py::arg("peak_id"), py::arg("skip"), py::arg("psf"), py::arg("sigma1"), py::arg("control"),
          py::arg("not_deblended_bits"));
    m.def("deblend_sigma1", &sigma1, py::arg("image").noconvert(), py::arg("mask").noconvert(),
          py::arg("variance").noconvert(), py::arg("x0"), py::arg("y0"), py::arg("bad_bits"), py::arg("spans") = py::none(),
          py::arg("sample_step") = 1);
}
