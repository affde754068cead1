// The SDSS-style deblender (meas_deblender's SourceDeblendTask, "baseline"): split a footprint with several
// peaks into one child per peak. Per parent:
//   1. skip it when too large (area / bbox size / axis ratio) or too masked (maskLimits); the caller
//      sets NOT_DEBLENDED over skipped parents (deblend_footprints does it when given a mask);
//   2. fit each peak with the PSF (+ a linear sky, + the PSFs of neighbouring peaks) in a disc of radius
//      ceil(1.5 FWHM) with weights ramping from 1 at ceil(FWHM) to 0; chi^2/dof < psf_chisq_1 (fixed
//      centre) or < psf_chisq_2 / psf_chisq_2b (re-centred) makes the peak "deblended as PSF" and its
//      template the scaled PSF model clipped to the footprint. Two refinements of LSST's fitPsfs (see
//      fit_psf in deblend.cpp): the re-centred fit iterates its linearized centroid step to
//      convergence and is judged at the converged centre, and each neighbour's PSF enters the fit at
//      that neighbour's fitted centre (<= 3 joint passes) rather than at its integer peak pixel. Both
//      matter for close blends of point sources off pixel centres (2 FWHM: 2-3.5% flux errors before);
//   3. other peaks get a 180-degree symmetric template T(p) = max(0, min(I(p), I(2c - p))) over the pixels
//      whose mirror is also in the footprint; templates with significant flux (> 3 sigma1) on their
//      edge are rebuilt on the footprint dilated by S = odd(1.5 FWHM) ("ramp": off-image mirror pixels
//      take the template's edge values times the peak-normalised PSF); then median smoothing
//      (5 x 5, margins copied), monotonic profiles, clipping to non-zero;
//   4. optional template weighting / degenerate-template removal (both off by default);
//   5. apportion: child_i(p) = I(p) T_i(p) / sum_j T_j(p) over each template's footprint; stray flux
//      (parent pixels where every template is 0) is trimmed (default rule 'trim': the parent footprint
//      shrinks to the union of the templates') or assigned by 1/(1 + r^2) weights.
// Sum of the children = the image on every pixel where some template is non-zero (flux conservation).
// The parent's final footprint is the union of its (trimmed) footprint and its children's spans.
//
// Everything here is the author's own implementation of the published description; numbers follow
// meas_deblender's defaults. Thread-safe: no state; the Psf must allow concurrent const calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "visitcal/core/footprint.hpp"
#include "visitcal/core/mask.hpp"
#include "visitcal/core/exposure_view.hpp"
#include "visitcal/psf/models.hpp"

namespace visitcal {

enum class DeblendEdgeHandling { ramp = 0, clip = 1 };
enum class StrayFluxToPointSources { never = 0, necessary = 1, always = 2 };
enum class StrayFluxRule { r_to_peak = 0, r_to_footprint = 1, nearest_footprint = 2, trim = 3 };

/// meas_deblender's SourceDeblendConfig defaults, mirrored by visitcal.measurement.deblend.SourceDeblendConfig.
struct DeblendControl {
    DeblendEdgeHandling edge_handling = DeblendEdgeHandling::ramp;
    StrayFluxToPointSources stray_flux_to_point_sources = StrayFluxToPointSources::necessary;
    bool assign_stray_flux = true;
    StrayFluxRule stray_flux_rule = StrayFluxRule::trim;
    double clip_stray_flux_fraction = 0.001;
    double psf_chisq_1 = 1.5;
    double psf_chisq_2 = 1.5;
    double psf_chisq_2b = 1.5;
    int max_number_of_peaks = 0;      // <= 0: unlimited (only the first peaks are deblended otherwise)
    int max_footprint_area = 10000;   // <= 0: no limit
    int max_footprint_size = 0;       // <= 0: no limit (max bbox side, px)
    double min_footprint_axis_ratio = 0.0;  // <= 0: no limit
    int tiny_footprint_size = 2;
    bool propagate_all_peaks = false;
    bool catch_failures = true;
    std::int32_t sigma1_bad_bits = mask_bits::SAT | mask_bits::INTRP | mask_bits::NO_DATA;  // maskPlanes
    std::vector<std::pair<std::int32_t, double>> mask_limits{{mask_bits::NO_DATA, 0.25}};  // (bits, fraction)
    bool weight_templates = false;
    bool remove_degenerate_templates = false;
    double max_temp_dot_prod = 0.5;
    bool median_smooth_template = true;
};

/// One child: a heavy footprint (normalized parent-frame spans, image values in span order), its peak
/// and the per-child catalog fields (LSST names in the comments).
struct DeblendChild {
    std::vector<Span> spans;
    std::vector<float> values;
    Peak peak{};
    std::size_t peak_index = 0;        // index of the peak in the parent's peak list
    bool deblended_as_psf = false;     // deblend_deblendedAsPsf
    double psf_center_x = NAN;         // deblend_psfCenter_x (NaN unless deblended as PSF)
    double psf_center_y = NAN;         // deblend_psfCenter_y
    double psf_flux = NAN;             // deblend_psf_instFlux
    bool has_stray_flux = false;       // deblend_hasStrayFlux
    bool ramped_template = false;      // deblend_rampedTemplate
    bool patched_template = false;     // deblend_patchedTemplate (always false: 'noclip' is not implemented)
};

/// The outcome for one parent. Children are empty for single-peak, skipped and failed parents.
struct DeblendResult {
    std::vector<DeblendChild> children;
    std::vector<Span> parent_spans;   // the parent's final footprint (the input when nothing was deblended)
    int n_peaks = 0;
    bool deblended = false;           // the deblender ran (>= 2 peaks, not skipped, not failed early)
    bool too_many_peaks = false;      // deblend_tooManyPeaks (LSST: n_peaks > max_number_of_peaks, literally)
    bool failed = false;              // deblend_failed
    bool skipped = false;             // deblend_skipped
    bool parent_too_big = false;      // deblend_parentTooBig
    bool masked = false;              // deblend_masked
    int skipped_center_x = 0;         // deblend_peak_center for skipped parents: the bbox centre
    int skipped_center_y = 0;
    std::string failure;              // why it failed (empty otherwise)
    int n_child() const { return static_cast<int>(children.size()); }
};

/// sqrt(median variance) over the image pixels without any of `bad_bits` (SourceDeblendTask's sigma1;
/// LSST takes the whole image), or over the given spans only when n_spans > 0. NaN when no pixel qualifies.
/// On the whole image, sample_step > 1 takes only the pixels whose x and y are multiples of it.
double deblend_sigma1(const ExposureView& ev, std::int32_t bad_bits, const Span* spans = nullptr,
                      std::size_t n_spans = 0, int sample_step = 1);

/// Deblend one parent footprint (normalized spans in the parent frame, inside the image; peaks sorted
/// as detection sorts them). Never throws for data problems when ctrl.catch_failures: they set `failed`.
/// Does not touch the mask: the caller ORs NOT_DEBLENDED over `parent_spans` of skipped parents.
DeblendResult deblend_footprint(const ExposureView& ev, const Span* spans, std::size_t n_spans, const Peak* peaks,
                                std::size_t n_peaks, const Psf& psf, double sigma1, const DeblendControl& ctrl);

/// Deblend every footprint of `footprints` whose `skip[k]` is 0 (e.g. negative detections), in order.
/// When `mask_out.data` is not null (same geometry as ev.mask), `not_deblended_bits` are ORed into it
/// over each skipped parent (parentTooBig / masked).
std::vector<DeblendResult> deblend_footprints(const ExposureView& ev, const FootprintList& footprints,
                                              const std::vector<std::uint8_t>& skip, const Psf& psf, double sigma1,
                                              const DeblendControl& ctrl, ImageView<std::int32_t> mask_out,
                                              std::int32_t not_deblended_bits);

}  // namespace visitcal
