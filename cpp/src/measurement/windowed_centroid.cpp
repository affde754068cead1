// ext_windowedCentroid; see measurement/windowed_centroid.hpp (SExtractor's XWIN_IMAGE recipe).
#include "visitcal/measurement/windowed_centroid.hpp"
#include "visitcal/core/checked.hpp"

#include <algorithm>
#include <climits>
#include <cmath>

namespace visitcal {

namespace F = windowed_centroid_flags;

WindowedCentroidResult measure_windowed_centroid(const ExposureView& ev, double x, double y, double sigma,
                                                 const WindowedCentroidControl& ctrl) {
    WindowedCentroidResult r;
    // A bad input fails this row alone (NaN position), before any pixel is read. The start must lie
    // on the image: its nearest pixel (centres at integers) inside the bounding box.
    // Compared in double so that a huge start cannot overflow an int (NaN fails every comparison).
    const bool start_ok = x >= ev.x0 - 0.5 && x < ev.x0 + ev.image.nx - 0.5 && y >= ev.y0 - 0.5 &&
                          y < ev.y0 + ev.image.ny - 0.5;
    // A window wider than 2^24 px (rmax below) covers no image: refused as bad input, before its box is
    // converted to int (undefined beyond INT_MAX) or looped over (2^48 pixels).
    const bool window_ok = std::max(sigma, ctrl.min_sigma) * ctrl.n_sigma <= 16777216.0;
    if (!start_ok || !std::isfinite(sigma) || !(sigma > 0.0) || !window_ok) {
        r.flags = F::FAILURE | F::BAD_INPUT;
        return r;
    }
    r.x = x;
    r.y = y;
    sigma = std::max(sigma, ctrl.min_sigma);
    const double rmax = ctrl.n_sigma * sigma, rmax2 = rmax * rmax;
    const double inv2s2 = 0.5 / (sigma * sigma);
    const int os = std::max(1, ctrl.oversample);
    const double step = 1.0 / os, area = 1.0 / (os * os);
    // A pixel whose centre is within rmax -+ sqrt(2)/2 is surely inside / may straddle the boundary.
    const double r_in = std::max(0.0, rmax - M_SQRT1_2), r_out = rmax + M_SQRT1_2;
    double cx = x, cy = y;
    const int max_iter = std::max(1, ctrl.max_iter);
    for (int it = 1; it <= max_iter; ++it) {
        r.n_iter = it;
        // Saturated (and below INT_MAX, so ++px cannot overflow): a centre moved near 2^31 stays defined.
        int xa = floor_to_int(cx - rmax), xb = std::min(ceil_to_int(cx + rmax), INT_MAX - 1);
        int ya = floor_to_int(cy - rmax), yb = std::min(ceil_to_int(cy + rmax), INT_MAX - 1);
        // Only the image and the ring of pixels just outside it are visited: a window reaching further
        // out reaches that ring too (the disc is convex and its centre starts on the image), which sets
        // EDGE as the pixels beyond would; without the clip a window of sigma 1e6 px loops over 1e13
        // pixels. In 64 bits: x0 - 1 and x0 + nx may leave int32.
        const long long ring_x0 = static_cast<long long>(ev.x0) - 1, ring_x1 = static_cast<long long>(ev.x0) + ev.image.nx;
        const long long ring_y0 = static_cast<long long>(ev.y0) - 1, ring_y1 = static_cast<long long>(ev.y0) + ev.image.ny;
        xa = static_cast<int>(std::max<long long>({xa, ring_x0, INT_MIN}));
        xb = static_cast<int>(std::min<long long>({xb, ring_x1, INT_MAX - 1}));
        ya = static_cast<int>(std::max<long long>({ya, ring_y0, INT_MIN}));
        yb = static_cast<int>(std::min<long long>({yb, ring_y1, INT_MAX - 1}));
        double tw = 0.0, sx = 0.0, sy = 0.0;
        for (int py = ya; py <= yb; ++py) {
            const double dy = py - cy;
            for (int px = xa; px <= xb; ++px) {
                const double dx = px - cx, d2 = dx * dx + dy * dy;
                if (d2 > r_out * r_out) continue;
                double frac = 1.0;
                if (d2 > r_in * r_in) {  // boundary: fraction of the sub-pixel grid inside rmax
                    int n_in = 0;
                    for (int j = 0; j < os; ++j) {
                        const double ey = dy - 0.5 + (j + 0.5) * step;
                        for (int i = 0; i < os; ++i) {
                            const double ex = dx - 0.5 + (i + 0.5) * step;
                            n_in += (ex * ex + ey * ey < rmax2);
                        }
                    }
                    if (n_in == 0) continue;
                    frac = n_in * area;
                }
                if (!ev.contains(px, py)) {
                    r.flags |= F::EDGE;
                    continue;
                }
                const double v = ev.img(px, py);
                if (!std::isfinite(v) || (ev.mask.data && (ev.msk(px, py) & (ctrl.bad_mask_bits | mask_bits::NO_DATA)))) {
                    r.flags |= F::EDGE;
                    continue;
                }
                const double w = frac * std::exp(-d2 * inv2s2) * v;
                tw += w;
                sx += w * dx;
                sy += w * dy;
            }
        }
        if (!(tw > 0.0)) {
            r.flags |= F::FAILURE | F::NO_FLUX;
            return r;
        }
        const double ddx = sx / tw, ddy = sy / tw;
        cx += 2.0 * ddx;
        cy += 2.0 * ddy;
        r.x = cx;
        r.y = cy;
        if (ddx * ddx + ddy * ddy < ctrl.step_min * ctrl.step_min) return r;
    }
    r.flags |= F::MAXITER;
    return r;
}

}  // namespace visitcal
