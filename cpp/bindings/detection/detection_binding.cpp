#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../footprint_list.hpp"
#include "../image_view.hpp"
#include "visitcal/detection/detection.hpp"

namespace py = pybind11;
using visitcal::ImageView;

namespace {

visitcal::ThresholdControl threshold_control(double value, int polarity, double include_multiplier, int min_pixels,
                                             double constant_sigma) {
    visitcal::ThresholdControl ctrl;
    ctrl.value = value;
    ctrl.polarity = polarity;
    ctrl.include_multiplier = include_multiplier;
    ctrl.min_pixels = min_pixels;
    ctrl.constant_sigma = constant_sigma;
    return ctrl;
}

template <typename T>
py::tuple find(const py::array_t<T, 0>& image, const std::optional<py::array_t<T, 0>>& noise_variance, int border_x,
               int border_y, double value, int polarity, double include_multiplier, int min_pixels,
               double constant_sigma) {
    auto in = visitcal_bind::image_view<const T>(image, "image");
    ImageView<const T> var{nullptr, 0, 0, 0};
    if (noise_variance) var = visitcal_bind::image_view<const T>(*noise_variance, "noise_variance");
    const visitcal::ThresholdControl ctrl =
        threshold_control(value, polarity, include_multiplier, min_pixels, constant_sigma);
    visitcal::FootprintList out;
    {
        py::gil_scoped_release release;
        out = visitcal::find_footprints<T>(in, var, border_x, border_y, ctrl);
    }
    return visitcal_bind::list_to(out);
}

// Returns one footprint tuple per polarity, in the order given.
template <typename T>
py::list find_smoothed(const py::array_t<T, 0>& image, const py::array_t<T, 0>& variance,
                       const std::vector<double>& kernel, const std::string& noise, double value,
                       const std::vector<int>& polarities, double include_multiplier, int min_pixels,
                       double constant_sigma, int band_rows) {
    auto in = visitcal_bind::image_view<const T>(image, "image");
    auto var = visitcal_bind::image_view<const T>(variance, "variance");
    visitcal::NoiseModel model;
    if (noise == "smoothed_variance") {
        model = visitcal::NoiseModel::SmoothedVariance;
    } else if (noise == "variance") {
        model = visitcal::NoiseModel::Variance;
    } else if (noise == "constant") {
        model = visitcal::NoiseModel::Constant;
    } else {
        throw std::invalid_argument("noise must be 'smoothed_variance', 'variance' or 'constant', got '" + noise + "'");
    }
    std::vector<visitcal::ThresholdControl> controls;
    for (int pol : polarities) {
        controls.push_back(threshold_control(value, pol, include_multiplier, min_pixels, constant_sigma));
    }
    std::vector<visitcal::FootprintList> out;
    {
        py::gil_scoped_release release;
        out = visitcal::find_footprints_smoothed<T>(in, var, kernel, model, controls, band_rows);
    }
    py::list result;
    for (const auto& fl : out) result.append(visitcal_bind::list_to(fl));
    return result;
}

template <typename T>
py::tuple count_invalid(const py::array_t<T, 0>& image, const py::array_t<T, 0>& variance) {
    auto a = visitcal_bind::image_view<const T>(image, "image");
    auto v = visitcal_bind::image_view<const T>(variance, "variance");
    std::int64_t first = -1, n = 0;
    {
        py::gil_scoped_release release;
        n = visitcal::count_invalid_pixels<T>(a, v, first);
    }
    return py::make_tuple(n, first);
}

template <typename T>
void bind_find(py::module_& m) {
    m.def("count_invalid_pixels", &count_invalid<T>, py::arg("image").noconvert(), py::arg("variance").noconvert());
    m.def("find_footprints", &find<T>, py::arg("image").noconvert(), py::arg("noise_variance").noconvert(),
          py::arg("border_x"), py::arg("border_y"), py::arg("value"), py::arg("polarity"),
          py::arg("include_multiplier"), py::arg("min_pixels"), py::arg("constant_sigma"));
    m.def("find_footprints_smoothed", &find_smoothed<T>, py::arg("image").noconvert(),
          py::arg("variance").noconvert(), py::arg("kernel"), py::arg("noise"), py::arg("value"),
          py::arg("polarities"), py::arg("include_multiplier"), py::arg("min_pixels"), py::arg("constant_sigma"),
          py::arg("band_rows") = 64);
}

}  // namespace

py::tuple find_in_mask(const py::array_t<std::int32_t, 0>& mask, std::int32_t bits) {
    auto in = visitcal_bind::image_view<const std::int32_t>(mask, "mask");
    visitcal::FootprintList out;
    {
        py::gil_scoped_release release;
        out = visitcal::find_mask_footprints(in, bits);
    }
    return visitcal_bind::list_to(out);
}

void bind_detection(py::module_& m) {
    m.def("find_mask_footprints", &find_in_mask, py::arg("mask").noconvert(), py::arg("bits"),
          "The 8-connected regions of the pixels with any of `bits` set, as find_footprints orders them, no peaks.");
    bind_find<float>(m);
    bind_find<double>(m);
}
