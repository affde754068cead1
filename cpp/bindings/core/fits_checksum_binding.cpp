#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "visitcal/core/fits_checksum.hpp"

namespace py = pybind11;

namespace {

// A contiguous run of a numpy array's elements, checked: the array must be C-contiguous, of a FITS pixel
// type (1, 2, 4 or 8 bytes, integer or float), and the run must start on a 4-byte word of the stream.
struct FitsRun {
    unsigned char* data;
    std::size_t count;
    int itemsize;
    bool little;
};

FitsRun fits_run(py::array& array, std::int64_t start, std::int64_t count, bool writeable, const char* fn) {
    const std::string where(fn);
    if (!(array.flags() & py::array::c_style)) throw std::invalid_argument(where + ": the array must be C-contiguous");
    if (writeable && !array.writeable()) throw std::invalid_argument(where + ": the array is read-only");
    const auto dtype = array.dtype();
    const char kind = dtype.kind();
    const int itemsize = static_cast<int>(dtype.itemsize());
    if ((kind != 'i' && kind != 'u' && kind != 'f') ||
        (itemsize != 1 && itemsize != 2 && itemsize != 4 && itemsize != 8)) {
        throw std::invalid_argument(where + ": FITS pixels are integers or floats of 1, 2, 4 or 8 bytes; got dtype "
                                    "kind '" + std::string(1, kind) + "' of " + std::to_string(itemsize) + " bytes");
    }
    const auto size = static_cast<std::int64_t>(array.size());
    if (start < 0 || count < 0 || start > size || count > size - start) {
        throw std::invalid_argument(where + ": elements [" + std::to_string(start) + ", " + std::to_string(start) +
                                    " + " + std::to_string(count) + ") are outside an array of " +
                                    std::to_string(size));
    }
    if ((start * itemsize) % 4 != 0) {
        throw std::invalid_argument(where + ": a run must start on a 4-byte word of the data unit (element " +
                                    std::to_string(start) + " of " + std::to_string(itemsize) + " bytes does not)");
    }
    const char order = dtype.byteorder();
    const std::uint16_t one = 1;
    const bool host_little = *reinterpret_cast<const unsigned char*>(&one) == 1;
    const bool little = order == '<' || ((order == '=' || order == '|') && host_little);
    auto* base = static_cast<unsigned char*>(writeable ? array.mutable_data() : const_cast<void*>(array.data()));
    return {base + start * itemsize, static_cast<std::size_t>(count), itemsize, little};
}

}  // namespace

void bind_fits_checksum(py::module_& m) {
    m.def("fits_checksum_bytes", [](const py::buffer& data, std::uint32_t initial) {
        const py::buffer_info info = data.request();
        if (info.ndim > 1 || (info.ndim == 1 && info.strides[0] != info.itemsize)) {
            throw std::invalid_argument("fits_checksum_bytes: the buffer must be contiguous and 1-D");
        }
        const auto* bytes = static_cast<const unsigned char*>(info.ptr);
        const auto n = static_cast<std::size_t>(info.size * info.itemsize);
        py::gil_scoped_release release;
        return visitcal::fits_checksum_bytes(bytes, n, initial);
    }, py::arg("data"), py::arg("initial") = 0);

    m.def("fits_encode_big_endian", [](py::array array, std::int64_t start, std::int64_t count, const py::object& out,
                                       std::uint32_t initial) {
        const FitsRun run = fits_run(array, start, count, false, "fits_encode_big_endian");
        unsigned char* dst = nullptr;
        py::buffer_info info;
        if (!out.is_none()) {
            info = py::reinterpret_borrow<py::buffer>(out).request(true);
            if (info.ndim != 1 || info.strides[0] != info.itemsize) {
                throw std::invalid_argument("fits_encode_big_endian: the output buffer must be contiguous and 1-D");
            }
            const auto need = static_cast<py::ssize_t>(run.count) * run.itemsize;
            if (info.size * info.itemsize < need) {
                throw std::invalid_argument("fits_encode_big_endian: the output buffer holds " +
                                            std::to_string(info.size * info.itemsize) + " bytes, the run needs " +
                                            std::to_string(need));
            }
            dst = static_cast<unsigned char*>(info.ptr);
        }
        py::gil_scoped_release release;
        return visitcal::fits_encode_big_endian(run.data, run.count, run.itemsize, run.little, dst, initial);
    }, py::arg("array").noconvert(), py::arg("start"), py::arg("count"), py::arg("out"), py::arg("initial") = 0);

    m.def("fits_decode_big_endian_inplace", [](py::array array, std::int64_t start, std::int64_t count,
                                               std::uint32_t initial) {
        const FitsRun run = fits_run(array, start, count, true, "fits_decode_big_endian_inplace");
        py::gil_scoped_release release;
        return visitcal::fits_decode_big_endian(run.data, run.count, run.itemsize, run.little, run.data, initial);
    }, py::arg("array").noconvert(), py::arg("start"), py::arg("count"), py::arg("initial") = 0);

    m.def("fits_encode_checksum", &visitcal::fits_encode_checksum, py::arg("value"));
}
