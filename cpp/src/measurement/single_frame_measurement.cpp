#include "visitcal/measurement/single_frame_measurement.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <vector>

#include "visitcal/detection/noise_replacer.hpp"

namespace visitcal {

namespace {

const Span* spans_of(const FootprintList& f, std::size_t i, std::size_t& n) {
    const auto a = f.span_offsets[i], b = f.span_offsets[i + 1];
    n = static_cast<std::size_t>(b - a);
    return f.spans.data() + a;
}

constexpr int kBandRows = 256;

// The records' indices by band (floor(y / kBandRows) of the record's peak, or of its first span), then by
// x, increasing in even bands and decreasing in odd ones, then by index; records without a position last,
// by index.
std::vector<std::size_t> measurement_order(const FootprintList& fps) {
    const std::size_t n = fps.size();
    struct Key {
        long long band;
        double x;
        std::size_t i;
    };
    std::vector<Key> keys;
    keys.reserve(n);
    std::vector<std::size_t> order, last;
    order.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        double x, y;
        if (fps.peak_offsets[i + 1] > fps.peak_offsets[i]) {
            const Peak& p = fps.peaks[fps.peak_offsets[i]];
            x = p.x;
            y = p.y;
        } else if (fps.span_offsets[i + 1] > fps.span_offsets[i]) {
            const Span& s = fps.spans[fps.span_offsets[i]];
            x = s.x0;
            y = s.y;
        } else {
            last.push_back(i);
            continue;
        }
        const long long band = static_cast<long long>(std::floor(y / kBandRows));
        keys.push_back({band, (band % 2 == 0) ? x : -x, i});
    }
    std::sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
        if (a.band != b.band) return a.band < b.band;
        if (a.x != b.x) return a.x < b.x;
        return a.i < b.i;
    });
    for (const Key& k : keys) order.push_back(k.i);
    order.insert(order.end(), last.begin(), last.end());
    return order;
}

}  // namespace

MeasurementOutput measure_sources(ImageView<float> image, ImageView<const std::int32_t> mask,
                                  ImageView<const float> variance, int x0, int y0, const MeasurementRecords& rec,
                                  const Psf& psf, const SingleFrameMeasurementControl& ctrl) {
    if (rec.footprints == nullptr || rec.parents == nullptr || rec.top == nullptr || rec.heavy_offsets == nullptr) {
        throw std::invalid_argument("measure_sources: incomplete records");
    }
    const FootprintList& fps = *rec.footprints;
    const std::size_t n = fps.size();
    const std::size_t n_radii = ctrl.aperture_radii.size();
    const std::size_t n_tophat = ctrl.compensated_tophat.apertures.size();

    MeasurementOutput out;
    out.peak_x.assign(n, NAN);
    out.peak_y.assign(n, NAN);
    if (ctrl.do_pixel_flags) out.pixel_flags.assign(n, 0);
    if (ctrl.do_centroid) out.centroid.resize(n);
    if (ctrl.do_shape) {
        out.shape.resize(n);
        out.psf_shape.resize(n);
        out.psf_shape_failed.assign(n, 0);
    }
    if (ctrl.do_psf_flux) out.psf_flux.resize(n);
    if (ctrl.do_gaussian_flux) out.gaussian_flux.resize(n);
    if (ctrl.do_apertures) out.apertures.resize(n * n_radii);
    if (ctrl.do_compensated_tophat) out.compensated_tophat.resize(n * n_tophat);
    if (ctrl.do_local_background) out.local_background.resize(n);
    if (ctrl.do_variance) out.variance.resize(n);

    const ExposureView ev{ImageView<const float>{image.data, image.ny, image.nx, image.stride}, mask, variance, x0, y0};

    // Every top-level footprint becomes noise for the whole loop; each record's pixels come back only
    // while it is measured, so neighbours never leak into its apertures (as meas_base's NoiseReplacer does).
    std::unique_ptr<NoiseReplacer> noise;
    if (ctrl.replace_with_noise) {
        noise = std::make_unique<NoiseReplacer>(image, *rec.parents, ctrl.noise_mean, ctrl.noise_sigma, ctrl.noise_seed,
                                                x0, y0);
    }

    // Records are measured in a cache-friendly order: bands of kBandRows rows, left to right and right to
    // left in turn, so consecutive records share most of the pixels their apertures and weights read
    // (a 70 px aperture reads 141 rows; in catalogue order, sorted by row only, every record read them
    // from memory again). The order changes no result: every record sees the same image (its own
    // pixels, noise elsewhere; NoiseReplacer's inserts and removals are exact inverses), and the
    // outputs are stored at the record's own index.
    const std::vector<std::size_t> order = measurement_order(fps);
    for (const std::size_t i : order) {
        std::size_t n_spans = 0;
        const Span* spans = spans_of(fps, i, n_spans);
        const bool heavy = rec.heavy_offsets[i] >= 0;
        if (noise) {
            if (heavy) noise->insert_heavy(spans, n_spans, rec.heavy_values + rec.heavy_offsets[i]);
            else noise->insert(static_cast<std::size_t>(rec.top[i]));
        }

        // The record's peak: its footprint's first (brightest) peak, or the footprint's first pixel
        // for a footprint without peaks; NaN for an empty footprint (every plugin then flags).
        double px = NAN, py = NAN;
        if (fps.peak_offsets[i + 1] > fps.peak_offsets[i]) {
            const Peak& p = fps.peaks[fps.peak_offsets[i]];
            px = p.x;
            py = p.y;
        } else if (n_spans > 0) {
            px = spans[0].x0;
            py = spans[0].y;
        }
        out.peak_x[i] = px;
        out.peak_y[i] = py;

        // The PSF at the peak: its moments and determinant radius. A PSF that cannot be evaluated
        // there (a fitted model's domain, a Python model raising) leaves NaN, which the plugins flag.
        Moments ps;
        bool psf_ok = false;
        if (std::isfinite(px)) {
            try {
                ps = psf.compute_shape(px, py);
                psf_ok = std::isfinite(ps.xx) && std::isfinite(ps.yy) && std::isfinite(ps.xy);
            } catch (const std::exception&) {
                psf_ok = false;
            }
        }
        const double psf_sigma = psf_ok ? ps.determinant_radius() : NAN;

        // Centroid (slot_Centroid), falling back to the peak when it has no value (meas_base's
        // SafeCentroidExtractor).
        double cx = px, cy = py;
        if (ctrl.do_centroid) {
            auto& c = out.centroid[i];
            if (std::isfinite(px)) c = measure_sdss_centroid(ev, px, py, psf_sigma, spans, n_spans, ctrl.centroid);
            else c.flags |= 1u;
            if (std::isfinite(c.x) && std::isfinite(c.y)) {
                cx = c.x;
                cy = c.y;
            }
        }
        if (rec.centroid_x != nullptr && rec.centroid_y != nullptr && std::isfinite(rec.centroid_x[i]) &&
            std::isfinite(rec.centroid_y[i])) {
            cx = rec.centroid_x[i];
            cy = rec.centroid_y[i];
        }
        if (ctrl.do_pixel_flags) out.pixel_flags[i] = measure_pixel_flags(ev, cx, cy, spans, n_spans).flags;

        Moments shape;  // slot_Shape, NaN unless measured
        if (ctrl.do_shape) {
            auto& s = out.shape[i];
            if (std::isfinite(cx)) s = measure_sdss_shape(ev, cx, cy, ctrl.shape);
            else s.flags |= 1u;
            shape = Moments{s.xx, s.yy, s.xy};
            out.psf_shape[i] = ps;
            out.psf_shape_failed[i] = psf_ok ? 0 : 1;
        }
        if (ctrl.do_psf_flux) {
            auto& f = out.psf_flux[i];
            bool done = false;
            if (std::isfinite(cx)) {
                try {
                    const PsfImage model = psf.compute_image(cx, cy);
                    f = measure_psf_flux(ev, model, ctrl.psf_flux);
                    done = true;
                } catch (const std::exception&) {
                }
            }
            if (!done) f.flags |= 1u;
        }
        if (ctrl.do_gaussian_flux) {
            auto& g = out.gaussian_flux[i];
            if (std::isfinite(cx)) g = measure_gaussian_flux(ev, cx, cy, shape, ctrl.gaussian_flux);
            else g.flags |= 1u;
        }
        if (ctrl.do_apertures && n_radii > 0) {
            ApertureFluxResult* a = out.apertures.data() + i * n_radii;
            if (std::isfinite(cx)) {
                measure_circular_apertures(ev, cx, cy, ctrl.aperture_radii.data(), static_cast<int>(n_radii), a);
            } else {
                for (std::size_t k = 0; k < n_radii; ++k) a[k].flags |= 1u;
            }
        }
        if (ctrl.do_compensated_tophat) {
            for (std::size_t k = 0; k < n_tophat; ++k) {
                auto& t = out.compensated_tophat[i * n_tophat + k];
                if (std::isfinite(cx)) {
                    t = measure_compensated_tophat(ev, cx, cy, ctrl.compensated_tophat.apertures[k], ctrl.compensated_tophat);
                } else {
                    t.flags |= 1u;
                }
            }
        }
        if (ctrl.do_local_background) {
            auto& b = out.local_background[i];
            if (std::isfinite(cx)) b = measure_local_background(ev, cx, cy, psf_sigma, ctrl.local_background);
            else b.flags |= 1u;
        }
        if (ctrl.do_variance) {
            auto& v = out.variance[i];
            if (std::isfinite(cx)) v = measure_variance(ev, cx, cy, shape, ctrl.variance);
            else v.flags |= 1u;
        }

        if (noise) {
            if (heavy) noise->remove_spans(spans, n_spans);
            else noise->remove(static_cast<std::size_t>(rec.top[i]));
        }
    }
    if (noise) noise->end();
    return out;
}

}  // namespace visitcal
