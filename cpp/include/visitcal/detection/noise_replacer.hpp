// Noise replacement for measurement (meas_base's NoiseReplacer): every top-level
// footprint is replaced by Gaussian noise; the measurement driver then puts one source back at a time
// (its parent's pixels, or a deblended child's heavy footprint), measures, and puts the noise back.
//
// Differences from LSST, on purpose:
// - Only the image plane is touched; LSST also sets temporary THISDET / OTHERDET mask planes.
// - One noise value per pixel for the whole run. LSST draws a separate noise footprint for every
//   child that has a heavy footprint, so removing a child leaves *that* noise under it rather than
//   the parent's; here remove_spans() restores the parent's noise, so the noisy image is the same
//   whatever the order of insertions and removals.
// - Noise: MT19937 (std::mt19937, whose output sequence the C++ standard fixes) through our own
//   polar Gaussian transform with a portable logarithm, so the bytes are the same on every platform
//   and standard library (std::normal_distribution is not specified). LSST's afw draws with GSL over
//   each footprint's bounding box; the values cannot match LSST's, only their distribution does.
//
// Thread safety: the free functions are pure. A NoiseReplacer mutates the image it was given; one
// thread at a time may call it (the measurement driver's per-source loop is sequential per image).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "visitcal/core/image_view.hpp"
#include "visitcal/core/footprint.hpp"
#include "visitcal/core/mask.hpp"

namespace visitcal {

/// Image-wide clipped statistics (afw MEANCLIP / STDEVCLIP): from the median with sigma =
/// 0.7413 IQR (numpy-"linear" quartiles), `n_iter` passes of mean and unbiased (n - 1) standard
/// deviation over |x - centre| <= n_sigma_clip * sigma, each pass re-centred on the previous mean
/// with the previous sigma. No usable pixel: NaN mean and stdev.
struct ClippedStats {
    double mean;
    double stdev;
    std::int64_t n_used;  // finite, unmasked pixels (before clipping)
    std::int64_t n_clip;  // pixels inside the last clipping window
};

/// The noise replacer's mean and sigma (NoiseReplacerConfig.noiseSource='measure'). Pixels count when
/// finite and (if `mask.data` is not null) `(mask & ignored_mask) == 0`. LSST computes these on
/// the Image alone (no mask: ignored_mask = 0 or a null mask); kNoiseStatsMask is the stricter
/// choice that also leaves out detections and bad pixels. Copies the usable pixels once (4 bytes
/// each, 65 MB transient for a 4072 x 4000 detector), finds the quartiles by radix selection and
/// makes n_iter passes over the copy: ~0.16 s for such a detector. sample_step > 1 uses only the
/// pixels with x and y multiples of it (a regular lattice of 1 / step^2 of them, ~0.04 s at 2).
ClippedStats clipped_mean_stdev(ImageView<const float> image, ImageView<const std::int32_t> mask,
                                std::int32_t ignored_mask, double n_sigma_clip = 3.0, int n_iter = 3,
                                int sample_step = 1);

inline constexpr std::int32_t kNoiseStatsMask = mask_bits::DETECTED | mask_bits::DETECTED_NEGATIVE |
                                                mask_bits::BAD | mask_bits::SAT | mask_bits::NO_DATA |
                                                mask_bits::EDGE;

/// ln(x) for finite x > 0 with only IEEE-exact operations (frexp, +, -, *, /), so every platform
/// gives the same bits (libm's log may differ in the last place between C libraries). Error
/// below 2 ulp. Exposed for tests.
double portable_log(double x);

/// Standard normal deviates from MT19937, the same bits everywhere.
/// Seeding: a seed below 2^32 seeds std::mt19937 directly (the reference init_genrand, as afw/GSL
/// MT19937 for a non-zero seed); a larger one goes through std::seed_seq{low 32 bits, high 32 bits}.
/// Uniforms have 53 bits, (a >> 5) * 2^26 + (b >> 6) over 2^53 from two draws (genrand_res53).
/// Normals come in pairs from Marsaglia's polar method (v1, v2 uniform in [-1, 1), s = v1^2 + v2^2
/// accepted if 0 < s < 1, factor sqrt(-2 ln s / s)): v1 * factor first, then v2 * factor.
class PortableNormal {
public:
    explicit PortableNormal(std::uint64_t seed);
    double uniform();  // [0, 1)
    double operator()();

private:
    std::mt19937 mt_;
    double spare_ = 0.0;
    bool has_spare_ = false;
};

class NoiseReplacer {
public:
    /// Saves the pixels of every footprint of `footprints` (the top-level parents, spans in the parent
    /// frame; (x0, y0) is the parent position of image[0, 0]) and fills them with float(mean + sigma *
    /// N(0, 1)) drawn in footprint order, span order, x order. A pixel covered by several footprints
    /// gets the value of the first one that covers it (grown-and-merged footprints never overlap; this
    /// keeps one noise plane if they do). Throws std::invalid_argument (before touching the image)
    /// for a span outside the image, a non-finite mean or sigma, or sigma < 0. The image must outlive
    /// the replacer. Cost: 8 bytes per footprint pixel plus a per-row index of the spans; ~50 ns
    /// per footprint pixel (85 ms for 3000 footprints, 1.7 M pixels), mostly the Gaussian draws.
    /// insert(k) / remove(k) are a copy of footprint k's pixels (~1 us for 560 px).
    NoiseReplacer(ImageView<float> image, const FootprintList& footprints, double mean, double sigma,
                  std::uint64_t seed, int x0 = 0, int y0 = 0);
    ~NoiseReplacer();
    NoiseReplacer(const NoiseReplacer&) = delete;
    NoiseReplacer& operator=(const NoiseReplacer&) = delete;

    std::size_t size() const { return span_offsets_.size() - 1; }
    bool ended() const { return ended_; }
    double mean() const { return mean_; }
    double sigma() const { return sigma_; }

    /// Put footprint k's original pixels back. std::out_of_range for k >= size(); std::logic_error
    /// after end().
    void insert(std::size_t k);
    /// Put footprint k's noise back.
    void remove(std::size_t k);
    /// Write `values` (one per pixel, in span order then x order) under `spans` (parent frame), e.g. a
    /// deblended child's heavy footprint. Every pixel must lie in some replaced footprint (else
    /// std::invalid_argument, nothing written), so that remove_spans can undo it.
    void insert_heavy(const Span* spans, std::size_t n, const float* values);
    /// Restore the noise under `spans` (each pixel must lie in some replaced footprint).
    void remove_spans(const Span* spans, std::size_t n);
    /// Restore the original image bit for bit; later calls do nothing. The destructor calls it.
    void end();

    /// Number of pixels of footprint k.
    std::int64_t area(std::size_t k) const { return pixel_offsets_.at(k + 1) - pixel_offsets_.at(k); }
    /// The area(k) noise values written under footprint k (span order, then x), for tests and
    /// diagnostics. std::logic_error after end() (the buffers are freed).
    const float* noise_of(std::size_t k) const;

private:
    struct RowEntry {
        int x0, x1;            // array frame, inclusive
        std::int64_t offset;  // index of pixel x0 in original_ / noise_
    };
    template <typename F>
    void for_each_covered(const Span* spans, std::size_t n, F&& f) const;
    void check_covered(const Span* spans, std::size_t n, const char* what) const;
    void write(std::size_t k, const std::vector<float>& src);
    void check_live(const char* what) const;

    ImageView<float> image_;
    int x0_, y0_;
    double mean_, sigma_;
    std::vector<Span> spans_;  // array frame
    std::vector<std::int64_t> span_offsets_;
    std::vector<std::int64_t> pixel_offsets_;  // per footprint
    std::vector<float> original_, noise_;
    std::vector<std::int64_t> row_start_;  // per image row, into rows_
    std::vector<RowEntry> rows_;           // sorted by x0 within a row
    bool ended_ = false;
};

}  // namespace visitcal
