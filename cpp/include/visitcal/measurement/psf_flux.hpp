// base_PsfFlux (meas_base): the linear least-squares amplitude of the PSF model at the source.
// M = the PSF image at the centroid (unit sum, parent-frame x0/y0; Psf::compute_image), clipped to
// the image; pixels with a `bad_mask` bit are dropped (none by default, LSST's badMaskPlanes = []).
//   instFlux    = sum(M D) / sum(M^2)
//   instFluxErr = sqrt(sum(M^2 V) / sum(M^2)^2 + (model_error * instFlux)^2)
//                 (model_error = 0 by default, LSST's formula: the pixel noise alone)
//   area        = (sum M)^2 / sum(M^2)          (over the pixels used)
//   chi2        = sum((D - instFlux M)^2 / V)
//   npixels     = number of pixels used
// Flags: `flag_edge` (with `flag`) when the model stamp is clipped by the image: the values are still
// computed on the part inside, as LSST does; `flag_noGoodPixels` (with `flag`) when no pixel is left
// or sum(M^2) == 0; `flag` alone when a used pixel's image value or variance is not finite (the sums
// are NaN then, as LSST's would be: NaN pixels are not silently dropped). Never throws for data
// problems; thread-safe.
#pragma once

#include <array>
#include <cstdint>

#include "visitcal/core/exposure_view.hpp"
#include "visitcal/psf/models.hpp"  // PsfImage

namespace visitcal {

inline constexpr std::array<const char*, 3> kPsfFluxFlagNames = {"flag", "flag_noGoodPixels", "flag_edge"};
namespace psf_flux_flags {
constexpr std::uint32_t FAILURE = 1u << 0;
constexpr std::uint32_t NO_GOOD_PIXELS = 1u << 1;
constexpr std::uint32_t EDGE = 1u << 2;
}  // namespace psf_flux_flags

struct PsfFluxControl {
    std::int32_t bad_mask = 0;  // OR of the badMaskPlanes bits (LSST default: none)
    // Not LSST: the PSF model's fractional flux error, added in quadrature to the pixel-noise error
    // (a flux error proportional to the flux, which dominates for stars with S/N > 1 / model_error).
    double model_error = 0.0;
};

struct PsfFluxResult {
    double instFlux = NAN;
    double instFluxErr = NAN;
    double area = NAN;
    double chi2 = NAN;
    double npixels = 0;
    std::uint32_t flags = 0;
};

/// The model's pixels are in a (height, width) row-major stamp with data pointer `model`; (mx0, my0)
/// is the parent position of its [0][0]. The PsfImage overload forwards here.
PsfFluxResult measure_psf_flux(const ExposureView& ev, const double* model, int width, int height, int mx0, int my0,
                               const PsfFluxControl& ctrl);

PsfFluxResult measure_psf_flux(const ExposureView& ev, const PsfImage& model, const PsfFluxControl& ctrl);

}  // namespace visitcal
