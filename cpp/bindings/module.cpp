// visitcal._core: private glue between the C++ core and the Python package. Docstrings live in
// Python (visitcal.*), not here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace {

// The one error boundary between the C++ core and Python. The core throws std::invalid_argument (and
// domain_error, length_error, ...) with messages in our words naming the field; the standard library
// throws the same types with its own words ("vector::reserve", "cannot create std::vector larger than
// max_size()") or none (std::bad_alloc). Users get a typed Python exception and never library text:
// pybind11's own translation would pass what() through, or map overflow_error to OverflowError and
// out_of_range to IndexError. The Python wrappers validate sizes first, so these are the last resort.
bool library_text(const char* what) {
    return what == nullptr || *what == '\0' || std::strstr(what, "std::") != nullptr ||
           std::strstr(what, "vector::") != nullptr || std::strstr(what, "basic_string") != nullptr ||
           std::strstr(what, "max_size") != nullptr || std::strstr(what, "bad_alloc") != nullptr ||
           std::strstr(what, "bad_array_new_length") != nullptr;
}

void set_error(PyObject* type, const std::exception& e, const char* ours) {
    PyErr_SetString(type, library_text(e.what()) ? ours : e.what());
}

void translate_std_exceptions(std::exception_ptr p) {
    try {
        if (p) std::rethrow_exception(p);
    } catch (const std::bad_alloc&) {
        PyErr_SetString(PyExc_MemoryError,
                        "visitcal: not enough memory for the arrays this call needs (check the sizes its "
                        "arguments imply: image shapes, radii, kernel widths, list lengths)");
    } catch (const std::length_error& e) {
        set_error(PyExc_ValueError, e,
                  "visitcal: an array size computed from the arguments exceeds the allowed range "
                  "(check image shapes, radii, kernel widths and coordinate extents)");
    } catch (const std::out_of_range& e) {
        set_error(PyExc_ValueError, e, "visitcal: an index computed from the arguments is out of range");
    } catch (const std::overflow_error& e) {
        set_error(PyExc_ValueError, e, "visitcal: a value computed from the arguments overflows");
    } catch (const std::invalid_argument& e) {
        set_error(PyExc_ValueError, e, "visitcal: invalid argument");
    } catch (const std::domain_error& e) {
        set_error(PyExc_ValueError, e, "visitcal: an argument is outside its valid domain");
    }
    // Anything else (py::error_already_set, pybind11's builtin exceptions, std::runtime_error) falls
    // through to pybind11's own translators.
}

}  // namespace

void bind_chebyshev(py::module_& m);
void bind_mask(py::module_& m);
void bind_mask_bits(py::module_& m);
void bind_convolve(py::module_& m);
void bind_background(py::module_& m);
void bind_footprint(py::module_& m);
void bind_detection(py::module_& m);
void bind_cosmic_rays(py::module_& m);
void bind_psf(py::module_& m);
void bind_measure_centroid_shape(py::module_& m);
void bind_measure_photometry(py::module_& m);
void bind_noise_replacer(py::module_& m);
void bind_sky_sources(py::module_& m);
void bind_deblend(py::module_& m);
void bind_single_frame_measurement(py::module_& m);
void bind_psf_candidates(py::module_& m);
void bind_pixel_grid(py::module_& m);
void bind_pca(py::module_& m);
void bind_lanczos(py::module_& m);
void bind_sip(py::module_& m);
void bind_matcher(py::module_& m);
void bind_fof(py::module_& m);
void bind_healpix(py::module_& m);
void bind_shear_correlation(py::module_& m);
void bind_fits_checksum(py::module_& m);

PYBIND11_MODULE(_core, m) {
    py::register_local_exception_translator(&translate_std_exceptions);  // this module only
    // Private: throws the standard exception `kind` with `what`, so the tests can check the boundary
    // above without provoking a real allocation failure.
    m.def(
        "_throw_std_for_test",
        [](const std::string& kind, const std::string& what) {
            if (kind == "bad_alloc") throw std::bad_alloc();
            if (kind == "length_error") throw std::length_error(what);
            if (kind == "out_of_range") throw std::out_of_range(what);
            if (kind == "overflow_error") throw std::overflow_error(what);
            if (kind == "domain_error") throw std::domain_error(what);
            throw std::invalid_argument(what);
        },
        py::arg("kind"), py::arg("what"));
    bind_chebyshev(m);
    bind_mask(m);
    bind_mask_bits(m);
    bind_convolve(m);
    bind_background(m);
    bind_footprint(m);
    bind_detection(m);
    bind_cosmic_rays(m);
    bind_psf(m);
    bind_measure_centroid_shape(m);
    bind_measure_photometry(m);
    bind_noise_replacer(m);
    bind_sky_sources(m);
    bind_deblend(m);
    bind_single_frame_measurement(m);
    bind_psf_candidates(m);
    bind_pixel_grid(m);
    bind_pca(m);
    bind_lanczos(m);
    bind_sip(m);
    bind_matcher(m);
    bind_fof(m);
    bind_healpix(m);
    bind_shear_correlation(m);
    bind_fits_checksum(m);
}
