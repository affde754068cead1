// Binding of visitcal/psf/pca.hpp: the PcaPsf model (a _core.Psf subclass), its control struct, and the
// fit as one call with the GIL released for all of it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "../array_out.hpp"
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "visitcal/psf/pca.hpp"

namespace py = pybind11;
using visitcal_bind::vec;
using visitcal::PcaPsf;
using visitcal::PcaPsfControl;
using visitcal::SpatialPolynomial;

namespace {

using F64C = py::array_t<double, py::array::c_style>;

std::shared_ptr<PcaPsf> make_pca_psf(const F64C& basis, const F64C& coefficients, int spatial_order,
                                     std::array<double, 4> box, std::array<double, 2> average_position,
                                     int interpolant_order) {
    if (basis.ndim() != 3 || basis.shape(1) != basis.shape(2))
        throw std::invalid_argument("basis must be (K, n, n)");
    if (coefficients.ndim() != 2 || coefficients.shape(0) != basis.shape(0))
        throw std::invalid_argument("coefficients must be (K, n_terms) with the basis's K");
    const SpatialPolynomial poly(spatial_order, box[0], box[1], box[2], box[3]);
    if (coefficients.shape(1) != poly.n_terms())
        throw std::invalid_argument("coefficients must have (order + 1)(order + 2) / 2 columns");
    std::vector<double> b(basis.data(), basis.data() + basis.size());
    std::vector<double> c(coefficients.data(), coefficients.data() + coefficients.size());
    return std::make_shared<PcaPsf>(std::move(b), static_cast<int>(basis.shape(0)), static_cast<int>(basis.shape(1)),
                                    std::move(c), poly, average_position, interpolant_order);
}

}  // namespace

void bind_pca(py::module_& m) {
    py::class_<PcaPsf, visitcal::Psf, std::shared_ptr<PcaPsf>>(m, "PcaPsf")
        .def(py::init(&make_pca_psf), py::arg("basis").noconvert(), py::arg("coefficients").noconvert(),
             py::arg("spatial_order"), py::arg("box"), py::arg("average_position"), py::arg("interpolant_order"))
        .def_property_readonly("size", &PcaPsf::size)
        .def_property_readonly("n_components", &PcaPsf::n_components)
        .def_property_readonly("interpolant_order", &PcaPsf::interpolant_order)
        .def_property_readonly("spatial_order", [](const PcaPsf& p) { return p.spatial().order(); })
        .def_property_readonly("box",
                               [](const PcaPsf& p) {
                                   const auto& s = p.spatial();
                                   return py::make_tuple(s.xmin(), s.xmax(), s.ymin(), s.ymax());
                               })
        .def_property_readonly("basis",
                               [](const PcaPsf& p) {
                                   py::array_t<double> a({p.n_components(), p.size(), p.size()});
                                   std::memcpy(a.mutable_data(), p.basis().data(), p.basis().size() * sizeof(double));
                                   return a;
                               })
        .def_property_readonly("coefficients", [](const PcaPsf& p) {
            py::array_t<double> a({p.n_components(), p.spatial().n_terms()});
            std::memcpy(a.mutable_data(), p.coefficients().data(), p.coefficients().size() * sizeof(double));
            return a;
        });

    py::class_<PcaPsfControl>(m, "PcaPsfControl")
        .def(py::init<>())
        .def_readwrite("n_eigen_components", &PcaPsfControl::n_eigen_components)
        .def_readwrite("component_noise_threshold", &PcaPsfControl::component_noise_threshold)
        .def_readwrite("n_basis_refinements", &PcaPsfControl::n_basis_refinements)
        .def_readwrite("spatial_order", &PcaPsfControl::spatial_order)
        .def_readwrite("kernel_size", &PcaPsfControl::kernel_size)
        .def_readwrite("n_iter_for_psf", &PcaPsfControl::n_iter_for_psf)
        .def_readwrite("reduced_chi2_for_psf_candidates", &PcaPsfControl::reduced_chi2_for_psf_candidates)
        .def_readwrite("spatial_reject", &PcaPsfControl::spatial_reject)
        .def_readwrite("constant_weight", &PcaPsfControl::constant_weight)
        .def_readwrite("lam", &PcaPsfControl::lam)
        .def_readwrite("tolerance", &PcaPsfControl::tolerance)
        .def_readwrite("bad_mask_bits", &PcaPsfControl::bad_mask_bits)
        .def_readwrite("interpolant_order", &PcaPsfControl::interpolant_order)
        .def_readwrite("zeroth_order_interp_not_enough_stars", &PcaPsfControl::zeroth_order_interp_not_enough_stars)
        .def_readwrite("min_unmasked_fraction", &PcaPsfControl::min_unmasked_fraction);

    m.def("pca_status_names", &visitcal::pca_status_names);

    m.def(
        "fit_pca_psf",
        [](const py::array_t<float, py::array::c_style>& image, const py::array_t<std::int32_t, py::array::c_style>& mask,
           const py::array_t<float, py::array::c_style>& variance, const py::array_t<std::int32_t, py::array::c_style>& xy0,
           const F64C& x, const F64C& y, const py::array_t<std::uint8_t, py::array::c_style>& reserved,
           const PcaPsfControl& control, std::array<double, 4> box) {
            if (image.ndim() != 3 || image.shape(1) != image.shape(2))
                throw std::invalid_argument("image must be (m, S, S)");
            const py::ssize_t n = image.shape(0), S = image.shape(1);
            auto same3 = [&](const py::array& a, const char* name) {
                if (a.ndim() != 3 || a.shape(0) != n || a.shape(1) != S || a.shape(2) != S)
                    throw std::invalid_argument(std::string(name) + " must have the image's shape (m, S, S)");
            };
            same3(mask, "mask");
            same3(variance, "variance");
            if (xy0.ndim() != 2 || xy0.shape(0) != n || xy0.shape(1) != 2) throw std::invalid_argument("xy0 must be (m, 2)");
            if (x.ndim() != 1 || x.size() != n || y.ndim() != 1 || y.size() != n)
                throw std::invalid_argument("x and y must be (m,)");
            if (reserved.ndim() != 1 || reserved.size() != n) throw std::invalid_argument("reserved must be (m,)");
            visitcal::PcaPsfCandidates c;
            c.image = image.data();
            c.mask = mask.data();
            c.variance = variance.data();
            c.n = static_cast<int>(n);
            c.stamp_size = static_cast<int>(S);
            c.xy0 = xy0.data();
            c.x = x.data();
            c.y = y.data();
            c.reserved = reserved.data();
            visitcal::PcaPsfFit r;
            {
                py::gil_scoped_release release;
                r = visitcal::fit_pca_psf(c, control, box[0], box[1], box[2], box[3]);
            }
            py::dict d;
            d["psf"] = r.psf ? py::cast(r.psf) : py::none();
            d["too_few_stars"] = r.too_few_stars;
            d["n_stars"] = r.n_stars;
            d["n_required"] = r.n_required;
            d["status"] = vec<std::uint8_t>(r.status);
            d["flux"] = vec<double>(r.flux);
            d["chi2"] = vec<double>(r.chi2);
            d["dof"] = vec<std::int64_t>(r.dof);
            d["chi2_expected"] = vec<double>(r.chi2_expected);
            d["n_available"] = r.n_available;
            d["n_good"] = r.n_good;
            d["n_iter"] = r.n_iter;
            d["spatial_order"] = r.spatial_order;
            d["n_components"] = r.n_components;
            d["spatial_fit_chi2"] = r.spatial_fit_chi2;
            d["avg_x"] = r.avg_x;
            d["avg_y"] = r.avg_y;
            return d;
        },
        py::arg("image").noconvert(), py::arg("mask").noconvert(), py::arg("variance").noconvert(),
        py::arg("xy0").noconvert(), py::arg("x").noconvert(), py::arg("y").noconvert(),
        py::arg("reserved").noconvert(), py::arg("control"), py::arg("box"));
}
