// visitcal._core: private glue between the C++ core and the Python package. Docstrings live in
// Python (visitcal.*), not here.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_chebyshev(py::module_& m);
void bind_mask(py::module_& m);
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
void bind_sip(py::module_& m);
void bind_matcher(py::module_& m);
void bind_fof(py::module_& m);

PYBIND11_MODULE(_core, m) {
    bind_chebyshev(m);
    bind_mask(m);
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
    bind_sip(m);
    bind_matcher(m);
    bind_fof(m);
}
