// The single-frame measurement driver (as meas_base's SingleFrameMeasurementTask): for every record of a
// source catalog, put its pixels back into an image whose footprints are all replaced by noise, run the
// enabled plugins in LSST's execution order (centroid, shape, fluxes), and take the pixels out again.
// The whole loop runs here, in one call per detector; Python only builds the inputs and turns the result
// into columns.
//
// Records are parents (top-level footprints, measured from the original pixels) and deblended children
// (measured from their heavy footprints). The PSF is asked for its shape once per record, at the peak
// (its determinant radius drives the centroid's smoothing and the local-background annulus, its
// moments are the `_psf_` columns), and for its image once, at the centroid (PsfFlux).
#pragma once

#include <cstdint>
#include <vector>

#include "visitcal/core/footprint.hpp"
#include "visitcal/measurement/aperture_flux.hpp"
#include "visitcal/measurement/compensated_tophat.hpp"
#include "visitcal/measurement/gaussian_flux.hpp"
#include "visitcal/measurement/local_background.hpp"
#include "visitcal/measurement/pixel_flags.hpp"
#include "visitcal/measurement/psf_flux.hpp"
#include "visitcal/measurement/sdss_centroid.hpp"
#include "visitcal/measurement/sdss_shape.hpp"
#include "visitcal/measurement/variance.hpp"
#include "visitcal/psf/models.hpp"

namespace visitcal {

struct SingleFrameMeasurementControl {
    // Noise replacement (meas_base's NoiseReplacer): mean and sigma of the noise, MT19937 seed.
    bool replace_with_noise = true;
    double noise_mean = 0.0;
    double noise_sigma = 0.0;
    std::uint64_t noise_seed = 1;

    bool do_pixel_flags = true;
    bool do_centroid = true;
    bool do_shape = true;
    bool do_psf_flux = true;
    bool do_gaussian_flux = true;
    bool do_apertures = true;
    bool do_compensated_tophat = true;
    bool do_local_background = true;
    bool do_variance = true;

    SdssCentroidControl centroid;
    SdssShapeControl shape;
    PsfFluxControl psf_flux;
    GaussianFluxControl gaussian_flux;
    std::vector<double> aperture_radii{3.0, 4.5, 6.0, 9.0, 12.0, 17.0, 25.0, 35.0, 50.0, 70.0};
    CompensatedTophatControl compensated_tophat;
    LocalBackgroundControl local_background;
    VarianceControl variance;
};

/// The catalog to measure. footprints[i] is record i's footprint (a child's heavy spans); its first
/// peak is the record's peak. top[i] is the index, into `parents`, of the top-level footprint holding
/// record i (for a parent, its own). heavy_offsets[i] >= 0 starts record i's heavy pixel values in
/// `heavy_values` (span order); -1 measures the original pixels (parents).
/// `centroid_x`/`centroid_y` (optional, one per record, parent pixels): the centroid every plugin
/// after the centroid stage uses, instead of the centroid plugin's or the peak (a non-finite entry falls
/// back to them). pipe_tasks' FinalizeCharacterizationTask measures with its input's centroid
/// this way.
struct MeasurementRecords {
    const FootprintList* footprints = nullptr;
    const FootprintList* parents = nullptr;
    const std::int64_t* top = nullptr;
    const float* heavy_values = nullptr;
    const std::int64_t* heavy_offsets = nullptr;
    const double* centroid_x = nullptr;
    const double* centroid_y = nullptr;
};

/// One entry per record for every plugin (unused plugins leave their vectors empty).
struct MeasurementOutput {
    std::vector<double> peak_x, peak_y;
    std::vector<std::uint32_t> pixel_flags;
    std::vector<SdssCentroidResult> centroid;
    std::vector<SdssShapeResult> shape;
    std::vector<Moments> psf_shape;
    std::vector<std::uint8_t> psf_shape_failed;
    std::vector<PsfFluxResult> psf_flux;
    std::vector<GaussianFluxResult> gaussian_flux;
    std::vector<ApertureFluxResult> apertures;  // (n_records, n_radii) row-major
    std::vector<CompensatedTophatResult> compensated_tophat;  // (n_records, n_tophat_apertures)
    std::vector<LocalBackgroundResult> local_background;
    std::vector<VarianceResult> variance;
};

/// Measure every record. `image` is modified during the call (noise replacement) and restored
/// bit for bit before returning, also when an exception escapes. Not thread-safe on one image.
MeasurementOutput measure_sources(ImageView<float> image, ImageView<const std::int32_t> mask,
                                  ImageView<const float> variance, int x0, int y0, const MeasurementRecords& records,
                                  const Psf& psf, const SingleFrameMeasurementControl& ctrl);

}  // namespace visitcal
