// Glue for the measurement driver: footprints and heavy pixels in, one numpy array per output field
// out. Flag words come back as uint32 arrays (`<prefix>__flags`); Python expands them with the
// plugins' flag registries (`*_flag_names`).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "../footprint_list.hpp"
#include "../image_view.hpp"
#include "visitcal/measurement/single_frame_measurement.hpp"

namespace py = pybind11;
using namespace visitcal;
using visitcal_bind::image_view;

namespace {

template <typename R, typename F>
py::array_t<double> column(const std::vector<R>& v, F get, std::size_t stride = 1, std::size_t k = 0) {
    const std::size_t n = stride ? v.size() / stride : 0;
    py::array_t<double> a(static_cast<py::ssize_t>(n));
    double* p = a.mutable_data();
    for (std::size_t i = 0; i < n; ++i) p[i] = get(v[i * stride + k]);
    return a;
}

template <typename R>
py::array_t<std::uint32_t> flags(const std::vector<R>& v, std::size_t stride = 1, std::size_t k = 0) {
    const std::size_t n = stride ? v.size() / stride : 0;
    py::array_t<std::uint32_t> a(static_cast<py::ssize_t>(n));
    auto* p = a.mutable_data();
    for (std::size_t i = 0; i < n; ++i) p[i] = v[i * stride + k].flags;
    return a;
}

std::string radius_name(double r) {
    // LSST's aperture column names: the radius with one decimal, "." -> "_" (12.0 -> "12_0").
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", r);
    std::string s(buf);
    for (auto& c : s)
        if (c == '.') c = '_';
    return s;
}

py::dict to_columns(const MeasurementOutput& o, const SingleFrameMeasurementControl& ctrl) {
    py::dict d;
    d["peak_x"] = py::array_t<double>(o.peak_x.size(), o.peak_x.data());
    d["peak_y"] = py::array_t<double>(o.peak_y.size(), o.peak_y.data());
    if (!o.pixel_flags.empty() || ctrl.do_pixel_flags)
        d["base_PixelFlags__flags"] = py::array_t<std::uint32_t>(o.pixel_flags.size(), o.pixel_flags.data());
    if (ctrl.do_centroid) {
        const auto& v = o.centroid;
        d["base_SdssCentroid_x"] = column(v, [](const auto& r) { return r.x; });
        d["base_SdssCentroid_y"] = column(v, [](const auto& r) { return r.y; });
        d["base_SdssCentroid_xErr"] = column(v, [](const auto& r) { return r.x_err; });
        d["base_SdssCentroid_yErr"] = column(v, [](const auto& r) { return r.y_err; });
        d["base_SdssCentroid__flags"] = flags(v);
    }
    if (ctrl.do_shape) {
        const auto& v = o.shape;
        d["base_SdssShape_xx"] = column(v, [](const auto& r) { return r.xx; });
        d["base_SdssShape_yy"] = column(v, [](const auto& r) { return r.yy; });
        d["base_SdssShape_xy"] = column(v, [](const auto& r) { return r.xy; });
        d["base_SdssShape_xxErr"] = column(v, [](const auto& r) { return r.xx_err; });
        d["base_SdssShape_yyErr"] = column(v, [](const auto& r) { return r.yy_err; });
        d["base_SdssShape_xyErr"] = column(v, [](const auto& r) { return r.xy_err; });
        d["base_SdssShape_x"] = column(v, [](const auto& r) { return r.x; });
        d["base_SdssShape_y"] = column(v, [](const auto& r) { return r.y; });
        d["base_SdssShape_instFlux"] = column(v, [](const auto& r) { return r.inst_flux; });
        d["base_SdssShape_instFluxErr"] = column(v, [](const auto& r) { return r.inst_flux_err; });
        d["base_SdssShape_instFlux_xx_Cov"] = column(v, [](const auto& r) { return r.inst_flux_xx_cov; });
        d["base_SdssShape_instFlux_yy_Cov"] = column(v, [](const auto& r) { return r.inst_flux_yy_cov; });
        d["base_SdssShape_instFlux_xy_Cov"] = column(v, [](const auto& r) { return r.inst_flux_xy_cov; });
        d["base_SdssShape_psf_xx"] = column(o.psf_shape, [](const auto& r) { return r.xx; });
        d["base_SdssShape_psf_yy"] = column(o.psf_shape, [](const auto& r) { return r.yy; });
        d["base_SdssShape_psf_xy"] = column(o.psf_shape, [](const auto& r) { return r.xy; });
        py::array_t<std::uint32_t> f = flags(v);
        auto* p = f.mutable_data();
        for (std::size_t i = 0; i < o.psf_shape_failed.size(); ++i)
            if (o.psf_shape_failed[i]) p[i] |= sdss_shape_flags::PSF;
        d["base_SdssShape__flags"] = f;
    }
    if (ctrl.do_psf_flux) {
        const auto& v = o.psf_flux;
        d["base_PsfFlux_instFlux"] = column(v, [](const auto& r) { return r.instFlux; });
        d["base_PsfFlux_instFluxErr"] = column(v, [](const auto& r) { return r.instFluxErr; });
        d["base_PsfFlux_area"] = column(v, [](const auto& r) { return r.area; });
        d["base_PsfFlux_chi2"] = column(v, [](const auto& r) { return r.chi2; });
        d["base_PsfFlux_npixels"] = column(v, [](const auto& r) { return static_cast<double>(r.npixels); });
        d["base_PsfFlux__flags"] = flags(v);
    }
    if (ctrl.do_gaussian_flux) {
        const auto& v = o.gaussian_flux;
        d["base_GaussianFlux_instFlux"] = column(v, [](const auto& r) { return r.instFlux; });
        d["base_GaussianFlux_instFluxErr"] = column(v, [](const auto& r) { return r.instFluxErr; });
        d["base_GaussianFlux__flags"] = flags(v);
    }
    if (ctrl.do_apertures) {
        const std::size_t m = ctrl.aperture_radii.size();
        for (std::size_t k = 0; k < m; ++k) {
            const std::string p = "base_CircularApertureFlux_" + radius_name(ctrl.aperture_radii[k]);
            d[(p + "_instFlux").c_str()] = column(o.apertures, [](const auto& r) { return r.instFlux; }, m, k);
            d[(p + "_instFluxErr").c_str()] = column(o.apertures, [](const auto& r) { return r.instFluxErr; }, m, k);
            d[(p + "__flags").c_str()] = flags(o.apertures, m, k);
        }
    }
    if (ctrl.do_compensated_tophat) {
        const std::size_t m = ctrl.compensated_tophat.apertures.size();
        for (std::size_t k = 0; k < m; ++k) {
            const std::string p = "base_CompensatedTophatFlux_" + std::to_string(ctrl.compensated_tophat.apertures[k]);
            const auto& v = o.compensated_tophat;
            d[(p + "_instFlux").c_str()] = column(v, [](const auto& r) { return r.instFlux; }, m, k);
            d[(p + "_instFluxErr").c_str()] = column(v, [](const auto& r) { return r.instFluxErr; }, m, k);
            py::array_t<std::int32_t> bits(static_cast<py::ssize_t>(m ? v.size() / m : 0));
            for (py::ssize_t i = 0; i < bits.size(); ++i) bits.mutable_data()[i] = v[i * m + k].mask_bits;
            d[(p + "_mask_bits").c_str()] = bits;
            d[(p + "__flags").c_str()] = flags(v, m, k);
        }
    }
    if (ctrl.do_local_background) {
        const auto& v = o.local_background;
        d["base_LocalBackground_instFlux"] = column(v, [](const auto& r) { return r.instFlux; });
        d["base_LocalBackground_instFluxErr"] = column(v, [](const auto& r) { return r.instFluxErr; });
        d["base_LocalBackground__flags"] = flags(v);
    }
    if (ctrl.do_variance) {
        const auto& v = o.variance;
        d["base_Variance_value"] = column(v, [](const auto& r) { return r.value; });
        d["base_Variance__flags"] = flags(v);
    }
    return d;
}

}  // namespace

void bind_single_frame_measurement(py::module_& m) {
    py::class_<SingleFrameMeasurementControl>(m, "SingleFrameMeasurementControl")
        .def(py::init<>())
        .def_readwrite("replace_with_noise", &SingleFrameMeasurementControl::replace_with_noise)
        .def_readwrite("noise_mean", &SingleFrameMeasurementControl::noise_mean)
        .def_readwrite("noise_sigma", &SingleFrameMeasurementControl::noise_sigma)
        .def_readwrite("noise_seed", &SingleFrameMeasurementControl::noise_seed)
        .def_readwrite("do_pixel_flags", &SingleFrameMeasurementControl::do_pixel_flags)
        .def_readwrite("do_centroid", &SingleFrameMeasurementControl::do_centroid)
        .def_readwrite("do_shape", &SingleFrameMeasurementControl::do_shape)
        .def_readwrite("do_psf_flux", &SingleFrameMeasurementControl::do_psf_flux)
        .def_readwrite("do_gaussian_flux", &SingleFrameMeasurementControl::do_gaussian_flux)
        .def_readwrite("do_apertures", &SingleFrameMeasurementControl::do_apertures)
        .def_readwrite("do_compensated_tophat", &SingleFrameMeasurementControl::do_compensated_tophat)
        .def_readwrite("do_local_background", &SingleFrameMeasurementControl::do_local_background)
        .def_readwrite("do_variance", &SingleFrameMeasurementControl::do_variance)
        .def_readwrite("centroid", &SingleFrameMeasurementControl::centroid)
        .def_readwrite("shape", &SingleFrameMeasurementControl::shape)
        .def_readwrite("psf_flux", &SingleFrameMeasurementControl::psf_flux)
        .def_readwrite("gaussian_flux", &SingleFrameMeasurementControl::gaussian_flux)
        .def_readwrite("aperture_radii", &SingleFrameMeasurementControl::aperture_radii)
        .def_readwrite("compensated_tophat", &SingleFrameMeasurementControl::compensated_tophat)
        .def_readwrite("local_background", &SingleFrameMeasurementControl::local_background)
        .def_readwrite("variance", &SingleFrameMeasurementControl::variance);

    m.def(
        "measure_sources",
        [](const py::array_t<float, 0>& image, const py::array_t<std::int32_t, 0>& mask,
           const py::array_t<float, 0>& variance, int x0, int y0, const py::tuple& footprints, const py::tuple& parents,
           const py::array_t<std::int64_t, 0>& top, const py::array_t<float, 0>& heavy_values,
           const py::array_t<std::int64_t, 0>& heavy_offsets, const Psf& psf, const SingleFrameMeasurementControl& ctrl,
           const std::optional<py::array_t<double, 0>>& centroid_x, const std::optional<py::array_t<double, 0>>& centroid_y) {
            auto img = image_view<float>(image, "image");
            auto msk = image_view<const std::int32_t>(mask, "mask");
            auto var = image_view<const float>(variance, "variance");
            if (msk.ny != img.ny || msk.nx != img.nx || var.ny != img.ny || var.nx != img.nx)
                throw std::invalid_argument("image, mask and variance must have the same shape");
            FootprintList fps = visitcal_bind::list_from_tuple(footprints);
            FootprintList par = visitcal_bind::list_from_tuple(parents);
            if (top.ndim() != 1 || static_cast<std::size_t>(top.shape(0)) != fps.size() ||
                heavy_offsets.ndim() != 1 || static_cast<std::size_t>(heavy_offsets.shape(0)) != fps.size())
                throw std::invalid_argument("top and heavy_offsets need one entry per footprint");
            for (py::ssize_t i = 0; i < top.shape(0); ++i) {
                const auto t = top.data()[i];
                if (t < 0 || static_cast<std::size_t>(t) >= par.size())
                    throw std::invalid_argument("top[" + std::to_string(i) + "] is not a parent index");
            }
            MeasurementRecords rec{&fps, &par, top.data(), heavy_values.data(), heavy_offsets.data()};
            if (centroid_x.has_value() != centroid_y.has_value())
                throw std::invalid_argument("centroid_x and centroid_y must be given together");
            if (centroid_x) {
                for (const auto* a : {&*centroid_x, &*centroid_y})
                    if (a->ndim() != 1 || static_cast<std::size_t>(a->shape(0)) != fps.size())
                        throw std::invalid_argument("centroid_x and centroid_y need one entry per footprint");
                rec.centroid_x = centroid_x->data();
                rec.centroid_y = centroid_y->data();
            }
            MeasurementOutput out;
            {
                py::gil_scoped_release release;
                out = measure_sources(img, msk, var, x0, y0, rec, psf, ctrl);
            }
            return to_columns(out, ctrl);
        },
        py::arg("image").noconvert(), py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("x0"),
        py::arg("y0"), py::arg("footprints"), py::arg("parents"), py::arg("top").noconvert(),
        py::arg("heavy_values").noconvert(), py::arg("heavy_offsets").noconvert(), py::arg("psf"), py::arg("ctrl"),
        py::arg("centroid_x").noconvert() = py::none(), py::arg("centroid_y").noconvert() = py::none());
}
