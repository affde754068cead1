// PSF candidates (meas_algorithms' makePsfCandidates / PsfCandidate): a square stamp
// of image, mask and variance around each star's centroid pixel, with the pixels that belong to
// other objects flagged INTRP so the PSF fitter gives them zero weight (PiffPsfDeterminerConfig.zeroWeightMaskBits).
// Thread-safe: a plain function on values, no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "visitcal/core/footprint.hpp"
#include "visitcal/core/exposure_view.hpp"

namespace visitcal {

/// Defaults as meas_algorithms' makePsfCandidates / PsfCandidate.
struct PsfCandidateControl {
    int stamp_size = 27;         // kernelSize + 2 * border; odd
    bool do_mask_blends = true;  // mask pixels of the star's own footprint nearer another peak
    int neighbour_grow = 3;      // disc radius (px) by which other DETECTED areas are dilated
};

/// Why a star has no stamp. Values are stable (Python maps them to names).
enum class PsfCandidateStatus : std::uint8_t {
    ok = 0,
    bad_centroid = 1,    // non-finite centroid
    off_edge = 2,        // the stamp does not lie wholly on the image
    nonfinite_max = 3,   // the stamp maximum is NaN or infinite (numpy max semantics: any NaN wins)
};

/// Stamps of the n stars in star order, each stamp_size^2 values, row-major (y, x). Stamps of
/// skipped stars are left zero (image/variance NaN) and their max_value NaN.
struct PsfCandidateStamps {
    int size = 0;
    std::vector<float> image;
    std::vector<std::int32_t> mask;
    std::vector<float> variance;
    std::vector<int> corner_x;  // parent-frame x of stamp column 0
    std::vector<int> corner_y;  // parent-frame y of stamp row 0
    std::vector<double> max_value;
    std::vector<PsfCandidateStatus> status;
};

/// Cut the candidate stamps of n stars at parent-frame centroids (x[i], y[i]) (pixel centres at
/// integers). footprint_index[i] is the star's footprint in `footprints` (-1: none; its peaks drive
/// the blend masking). The stamp is centred on position_to_index of the centroid. Then, in order:
///   1. blend masking (do_mask_blends, footprints with > 1 peak): the central peak is the one nearest
///      the centroid (first on ties); a footprint pixel strictly nearer another peak gets INTRP and
///      loses DETECTED;
///   2. every 8-connected DETECTED region of the stamp not containing the centre pixel is dilated by
///      a disc (dx^2 + dy^2 <= r^2, r = neighbour_grow), clipped to the stamp, set INTRP and cleared
///      of DETECTED. Regions are found once, after step 1.
/// Throws std::invalid_argument for a bad control (even or non-positive size, negative grow) or a
/// footprint index out of range; data problems only set `status`.
PsfCandidateStamps make_psf_candidates(const ExposureView& ev, const double* x, const double* y,
                                       const std::int64_t* footprint_index, std::size_t n,
                                       const FootprintList& footprints, const PsfCandidateControl& ctrl);

}  // namespace visitcal
