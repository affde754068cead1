// PSF candidate stamps, as meas_algorithms' makePsfCandidates / PsfCandidate make them.
#include "visitcal/psf/candidates.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "visitcal/core/geom.hpp"
#include "visitcal/core/mask.hpp"

namespace visitcal {

namespace {

// PsfCandidate's blend masking (doMaskBlends): pixels of the star's own (blended) footprint that are
// nearer a non-central peak.
void mask_blend(const FootprintList& fl, std::int64_t k, double xc, double yc, int cx0, int cy0, int s,
                std::int32_t* m) {
    const auto p0 = static_cast<std::size_t>(fl.peak_offsets[k]);
    const auto p1 = static_cast<std::size_t>(fl.peak_offsets[k + 1]);
    if (p1 - p0 < 2) return;
    std::size_t central = p0;
    double best = std::numeric_limits<double>::infinity();
    for (std::size_t p = p0; p < p1; ++p) {
        const double d = (fl.peaks[p].x - xc) * (fl.peaks[p].x - xc) + (fl.peaks[p].y - yc) * (fl.peaks[p].y - yc);
        if (d < best) {
            best = d;
            central = p;
        }
    }
    const Peak& pc = fl.peaks[central];
    for (auto j = fl.span_offsets[k]; j < fl.span_offsets[k + 1]; ++j) {
        const Span& sp = fl.spans[static_cast<std::size_t>(j)];
        const int yy = sp.y - cy0;
        if (yy < 0 || yy >= s) continue;
        const int xa = std::max(sp.x0, cx0), xb = std::min(sp.x1, cx0 + s - 1);
        for (int xp = xa; xp <= xb; ++xp) {
            const long dc = static_cast<long>(xp - pc.x) * (xp - pc.x) + static_cast<long>(sp.y - pc.y) * (sp.y - pc.y);
            bool other = false;
            for (std::size_t p = p0; p < p1 && !other; ++p) {
                if (p == central) continue;
                const long d = static_cast<long>(xp - fl.peaks[p].x) * (xp - fl.peaks[p].x) +
                               static_cast<long>(sp.y - fl.peaks[p].y) * (sp.y - fl.peaks[p].y);
                other = d < dc;
            }
            if (other) {
                std::int32_t& v = m[yy * s + (xp - cx0)];
                v = (v | mask_bits::INTRP) & ~mask_bits::DETECTED;
            }
        }
    }
}

// PsfCandidate's neighbour masking: other DETECTED regions of the stamp, grown, become INTRP. Stamp coordinates.
void mask_neighbours(int s, int grow, std::int32_t* m) {
    std::vector<Span> det;
    for (int yy = 0; yy < s; ++yy) {
        int xx = 0;
        while (xx < s) {
            if (m[yy * s + xx] & mask_bits::DETECTED) {
                const int a = xx;
                while (xx < s && (m[yy * s + xx] & mask_bits::DETECTED)) ++xx;
                det.push_back({yy, a, xx - 1});
            } else {
                ++xx;
            }
        }
    }
    if (det.empty()) return;  // already normalized: row order, runs separated by gaps
    int ncomp = 0;
    const std::vector<int> label = label_span_components(det, ncomp);
    const int c = s / 2;
    int centre_label = -1;
    for (std::size_t j = 0; j < det.size(); ++j) {
        if (det[j].y == c && det[j].x0 <= c && c <= det[j].x1) centre_label = label[j];
    }
    std::vector<std::vector<Span>> comps(static_cast<std::size_t>(ncomp));
    for (std::size_t j = 0; j < det.size(); ++j) comps[static_cast<std::size_t>(label[j])].push_back(det[j]);
    for (int l = 0; l < ncomp; ++l) {
        if (l == centre_label) continue;
        const auto grown = clip_spans(dilate_spans(comps[static_cast<std::size_t>(l)], grow), 0, 0, s - 1, s - 1);
        for (const Span& sp : grown) {
            for (int xx = sp.x0; xx <= sp.x1; ++xx) {
                std::int32_t& v = m[sp.y * s + xx];
                v = (v | mask_bits::INTRP) & ~mask_bits::DETECTED;
            }
        }
    }
}

}  // namespace

PsfCandidateStamps make_psf_candidates(const ExposureView& ev, const double* x, const double* y,
                                       const std::int64_t* footprint_index, std::size_t n,
                                       const FootprintList& footprints, const PsfCandidateControl& ctrl) {
    if (ctrl.stamp_size <= 0 || ctrl.stamp_size % 2 == 0) {
        throw std::invalid_argument("stamp_size must be odd and positive, got " + std::to_string(ctrl.stamp_size));
    }
    if (ctrl.neighbour_grow < 0) throw std::invalid_argument("neighbour_grow must be >= 0");
    const auto nfp = static_cast<std::int64_t>(footprints.size());
    for (std::size_t i = 0; i < n; ++i) {
        if (footprint_index[i] < -1 || footprint_index[i] >= nfp) {
            throw std::invalid_argument("footprint_index[" + std::to_string(i) + "] = " +
                                        std::to_string(footprint_index[i]) + " is out of range");
        }
    }
    const int s = ctrl.stamp_size, h = s / 2;
    const std::size_t npix = static_cast<std::size_t>(s) * s;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    PsfCandidateStamps out;
    out.size = s;
    out.image.assign(n * npix, nan);
    out.variance.assign(n * npix, nan);
    out.mask.assign(n * npix, 0);
    out.corner_x.assign(n, 0);
    out.corner_y.assign(n, 0);
    out.max_value.assign(n, std::numeric_limits<double>::quiet_NaN());
    out.status.assign(n, PsfCandidateStatus::ok);
    for (std::size_t i = 0; i < n; ++i) {
        if (!std::isfinite(x[i]) || !std::isfinite(y[i]) || std::abs(x[i]) > 1e9 || std::abs(y[i]) > 1e9) {
            out.status[i] = PsfCandidateStatus::bad_centroid;
            continue;
        }
        const int cx0 = position_to_index(x[i]) - h, cy0 = position_to_index(y[i]) - h;
        out.corner_x[i] = cx0;
        out.corner_y[i] = cy0;
        if (!ev.contains(cx0, cy0) || !ev.contains(cx0 + s - 1, cy0 + s - 1)) {
            out.status[i] = PsfCandidateStatus::off_edge;
            continue;
        }
        float* im = out.image.data() + i * npix;
        float* va = out.variance.data() + i * npix;
        std::int32_t* mk = out.mask.data() + i * npix;
        // numpy max semantics: NaN anywhere makes the maximum NaN (makePsfCandidates
        // skips a star whose stamp maximum is not finite).
        double mx = -std::numeric_limits<double>::infinity();
        bool any_nan = false;
        for (int yy = 0; yy < s; ++yy) {
            for (int xx = 0; xx < s; ++xx) {
                const float v = ev.img(cx0 + xx, cy0 + yy);
                im[yy * s + xx] = v;
                va[yy * s + xx] = ev.var(cx0 + xx, cy0 + yy);
                mk[yy * s + xx] = ev.msk(cx0 + xx, cy0 + yy);
                if (std::isnan(v)) any_nan = true;
                else mx = std::max(mx, static_cast<double>(v));
            }
        }
        out.max_value[i] = any_nan ? std::numeric_limits<double>::quiet_NaN() : mx;
        if (!std::isfinite(out.max_value[i])) {
            out.status[i] = PsfCandidateStatus::nonfinite_max;
            continue;
        }
        if (ctrl.do_mask_blends && footprint_index[i] >= 0) {
            mask_blend(footprints, footprint_index[i], x[i], y[i], cx0, cy0, s, mk);
        }
        mask_neighbours(s, ctrl.neighbour_grow, mk);
    }
    return out;
}

}  // namespace visitcal
