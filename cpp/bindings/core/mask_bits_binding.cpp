#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "visitcal/core/mask_bits.hpp"

namespace py = pybind11;

namespace {

using MaskArray = py::array_t<std::int32_t, py::array::c_style>;
using PackedArray = py::array_t<std::uint8_t, py::array::c_style>;

void check_bits(std::int32_t bits, const char* fn) {
    int pos[8];
    try {
        visitcal::mask_bit_positions(bits, pos);
    } catch (const std::invalid_argument& err) {
        throw std::invalid_argument(std::string(fn) + ": bits " + std::to_string(bits) + ": " + err.what());
    }
}

}  // namespace

void bind_mask_bits(py::module_& m) {
    m.def("pack_mask_bits", [](const py::array& mask_obj, std::int32_t bits) {
        if (!py::isinstance<MaskArray>(mask_obj) || !(mask_obj.flags() & py::array::c_style)) {
            throw std::invalid_argument("pack_mask_bits: the mask must be a C-contiguous int32 array");
        }
        check_bits(bits, "pack_mask_bits");
        auto mask = py::reinterpret_borrow<MaskArray>(mask_obj);
        PackedArray packed(std::vector<py::ssize_t>(mask.shape(), mask.shape() + mask.ndim()));
        const auto n = static_cast<std::size_t>(mask.size());
        const std::int32_t* src = mask.data();
        std::uint8_t* dst = packed.mutable_data();
        {
            py::gil_scoped_release release;
            visitcal::pack_mask_bits(src, n, bits, dst);
        }
        return packed;
    }, py::arg("mask"), py::arg("bits"));

    m.def("restore_mask_bits", [](py::array& mask_obj, std::int32_t bits, const py::array& packed_obj) {
        if (!py::isinstance<MaskArray>(mask_obj) || !(mask_obj.flags() & py::array::c_style) ||
            !mask_obj.writeable()) {
            throw std::invalid_argument("restore_mask_bits: the mask must be a writeable C-contiguous int32 array");
        }
        if (!py::isinstance<PackedArray>(packed_obj) || !(packed_obj.flags() & py::array::c_style)) {
            throw std::invalid_argument("restore_mask_bits: the packed bits must be a C-contiguous uint8 array");
        }
        if (packed_obj.size() != mask_obj.size()) {
            throw std::invalid_argument("restore_mask_bits: the packed bits hold " + std::to_string(packed_obj.size()) +
                                        " pixels, the mask " + std::to_string(mask_obj.size()));
        }
        check_bits(bits, "restore_mask_bits");
        auto* dst = static_cast<std::int32_t*>(mask_obj.mutable_data());
        const auto* src = static_cast<const std::uint8_t*>(packed_obj.data());
        const auto n = static_cast<std::size_t>(mask_obj.size());
        py::gil_scoped_release release;
        visitcal::restore_mask_bits(dst, n, bits, src);
    }, py::arg("mask"), py::arg("bits"), py::arg("packed"));
}
