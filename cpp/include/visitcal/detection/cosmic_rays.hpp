// Cosmic-ray finder and repair (pipe_tasks' RepairTask with meas_algorithms'
// findCosmicRays, after Lupton's SDSS photo pipeline).
//
// Pass 1 scans every pixel for three criteria, cheapest first:
//   1. v - b > min_sigma * sqrt(var)                                (b: background at the pixel)
//   2. v is a local maximum: no usable 8-neighbour is larger;
//   3. v is sharper than the PSF allows: for some direction d (horizontal, vertical, the two
//      diagonals) with both neighbours usable,
//        thresh_d * (v - b - cond3_fac * sqrt(var)) > mean_d + cond3_fac * sigma_d
//      with mean_d the background-subtracted mean of the two neighbours, sigma_d its standard
//      deviation sqrt(var_a + var_b) / 2, and thresh_d = cond3_fac2 * (mean of the PSF at the two
//      unit offsets along d) / (PSF at its centre).
// A pixel found is at once replaced (value and variance) by the lowest of its direction means, so
// the rest of a track can pass criteria 2-3 later in the same raster scan or in the next of
// `niteration` passes (each later pass looks only at the 3x3 neighbours of the previous pass's
// finds). "Usable" = on the image and not in `bad_bits` (BAD | SAT | NO_DATA by default in
// Python): such pixels are never candidates, never neighbours; a direction with an unusable end is
// skipped, and a pixel with no usable direction is not a cosmic ray.
// CR pixels are grouped (8-connectivity) into objects; an object whose flux, the sum of its
// original background-subtracted values, is below `min_dn` is dropped (its pixels restored). The
// objects are interpolated over, then grown: the 8-neighbours of CR pixels are tested again with
// min_sigma / 2 and cond3_fac = 0 (condition 3 keeps its PSF ratio but loses its noise margins:
// our reading of the spec's "cond3 disabled"; without the ratio a CR next to a star would eat the
// star), for up to `niteration` rings. The result is regrouped and interpolated (see
// below), and `cr_bits` is OR-ed into the mask of every CR pixel. With keep_crs the pixel values
// and variances are restored and only the mask is set.
//
// Interpolation: for each CR pixel and each of the four directions, walk both ways to the nearest
// usable non-CR pixel (at most kMaxInterpDistance = 100 steps, never off the image); with both ends
// found the direction's estimate is the linear interpolation between them, and its weight
// 1 / gap length (pixels; a diagonal step counts sqrt 2). The pixel's value is the weighted mean of
// the direction estimates, its variance the same mean of the end pixels' variances (the local
// noise level, so later thresholds stay right, not the variance of the estimate). A pixel with no
// usable direction (image corners and edges, huge blobs) gets the fallback of the spec (InterpImage
// useFallbackValueAtEdge): MEANCLIP of the usable non-CR pixels, a 3-sigma 3-iteration clipped mean
// starting from the median, on a deterministic subsample of at most ~1e6 pixels; its variance is the
// mean variance of the pixels kept.
//
// Thread-safe: no state beyond the call. Deterministic: fixed raster order, sorted frontiers.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "visitcal/core/image_view.hpp"

namespace visitcal {

/// Mirrors visitcal.detection.cosmic_rays.FindCosmicRaysConfig (LSST FindCosmicRaysConfig in snake_case).
struct FindCosmicRaysControl {
    double min_sigma = 6.0;              ///< criterion 1 threshold, in sigma of the pixel (minSigma)
    double min_dn = 150.0;               ///< minimum object flux above background, image units (min_DN)
    double cond3_fac = 2.0;              ///< noise margin of criterion 3, in sigma
    double cond3_fac2 = 0.35;            ///< scale of the PSF neighbour/peak ratio in criterion 3
    int niteration = 6;                  ///< passes of pass 1 (and rings of the grow pass)
    std::int64_t n_cr_pixel_max = 1000000;  ///< more CR pixels than this throws TooManyCosmicRays (nCrPixelMax)
    bool keep_crs = false;               ///< mask only; leave the pixel values (keepCRs)
    bool grow = true;                    ///< run the second, growing pass
};

/// Criterion 3 thresholds from the PSF (cond3_fac2 included).
struct Cond3Thresholds {
    double horizontal;
    double vertical;
    double diagonal_up;    ///< offsets (-1, -1) and (+1, +1)
    double diagonal_down;  ///< offsets (-1, +1) and (+1, -1)
};

/// Thresholds from a PSF image `psf` (ny, nx odd, >= 3, row-major, centred on its middle pixel,
/// which must be positive and finite). Throws std::invalid_argument otherwise.
Cond3Thresholds cond3_thresholds(const double* psf, int ny, int nx, double cond3_fac2);

struct CosmicRay {
    int min_x, min_y, max_x, max_y;  ///< bounding box, array coordinates (inclusive)
    std::int64_t npix;
    double flux;    ///< sum of the original values minus background over the pixels
    double peak;    ///< largest original value minus background
    int peak_x, peak_y;
};

struct FindCosmicRaysResult {
    std::vector<CosmicRay> cosmic_rays;
    std::int64_t n_pixels = 0;         ///< CR pixels masked (after the min_dn filter and growing)
    std::int64_t n_grown = 0;          ///< of which added by the grow pass
    std::int64_t n_rejected = 0;       ///< pixels of objects dropped by the min_dn filter
    std::int64_t n_fallback = 0;       ///< pixels set to the fallback value (no usable direction)
    double fallback_value = 0.0;       ///< the clipped mean used for them (NaN if unused)
};

/// More cosmic-ray pixels than FindCosmicRaysControl::n_cr_pixel_max. The image and variance are
/// restored to their input values and the mask is untouched when this is thrown.
class TooManyCosmicRays : public std::runtime_error {
public:
    TooManyCosmicRays(std::int64_t n_pixels, std::int64_t limit)
        : std::runtime_error("too many cosmic-ray pixels: " + std::to_string(n_pixels) + " > n_cr_pixel_max = " +
                             std::to_string(limit)),
          n_pixels(n_pixels),
          limit(limit) {}
    std::int64_t n_pixels;
    std::int64_t limit;
};

/// Background: a scalar `background`, plus `background_image` when its data pointer is non-null
/// (b = background + background_image(y, x)). All views must have the image's shape.
/// Throws std::invalid_argument on shape mismatch; std::domain_error when a usable pixel has a
/// non-finite value, or a non-finite or non-positive variance (count and first position in the
/// message); TooManyCosmicRays as above. Image and variance are modified in place (interpolated
/// CR pixels), the mask gets `cr_bits`.
FindCosmicRaysResult find_cosmic_rays(ImageView<float> image, ImageView<float> variance,
                                      ImageView<std::int32_t> mask, double background,
                                      ImageView<const float> background_image, const Cond3Thresholds& thresholds,
                                      const FindCosmicRaysControl& ctrl, std::int32_t bad_bits,
                                      std::int32_t cr_bits);

/// Criteria 1-3 on the unmodified image (no replacement, no iteration, no grouping): a 0/1 map.
/// The per-pixel test of find_cosmic_rays, exposed so it can be checked against a reference.
void cosmic_ray_candidates(ImageView<const float> image, ImageView<const float> variance,
                           ImageView<const std::int32_t> mask, double background,
                           ImageView<const float> background_image, const Cond3Thresholds& thresholds,
                           double min_sigma, double cond3_fac, std::int32_t bad_bits, ImageView<std::uint8_t> out);

}  // namespace visitcal
