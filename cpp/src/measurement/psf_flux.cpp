// base_PsfFlux; see psf_flux.hpp.
#include "visitcal/measurement/psf_flux.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "visitcal/core/checked.hpp"

namespace visitcal {

PsfFluxResult measure_psf_flux(const ExposureView& ev, const double* model, int width, int height, int mx0, int my0,
                               const PsfFluxControl& ctrl) {
    using namespace psf_flux_flags;
    PsfFluxResult res;
    if (width <= 0 || height <= 0 || model == nullptr) {
        res.flags = FAILURE | NO_GOOD_PIXELS;
        return res;
    }
    // The stamp's last pixel in 64 bits: mx0 + width - 1 wraps in int for an origin near 2^31, and a
    // wrapped box once made the loops below read far outside the image. The clipped box lies on the
    // image, so it fits an int again.
    const std::int64_t mx1 = last_of(mx0, width), my1 = last_of(my0, height);
    const std::int64_t bx0 = std::max<std::int64_t>(mx0, ev.x0), bx1 = std::min(mx1, last_of(ev.x0, ev.width()));
    const std::int64_t by0 = std::max<std::int64_t>(my0, ev.y0), by1 = std::min(my1, last_of(ev.y0, ev.height()));
    if (bx0 != mx0 || by0 != my0 || bx1 != mx1 || by1 != my1) res.flags |= FAILURE | EDGE;
    if (bx0 > bx1 || by0 > by1) {  // the stamp misses the image
        res.flags |= FAILURE | NO_GOOD_PIXELS;
        res.npixels = 0.0;
        return res;
    }
    // Two passes: the amplitude first, then chi2 with it (the stamp is small; this avoids the
    // cancellation of the expanded sum(D^2/V) - 2 f sum(MD/V) + f^2 sum(M^2/V)).
    double smm = 0.0, smd = 0.0, smmv = 0.0, sm = 0.0;
    long n = 0;
    bool finite = true;
    for (std::int64_t py = by0; py <= by1; ++py) {
        const double* mr = model + static_cast<std::ptrdiff_t>(py - my0) * width + (bx0 - mx0);
        const float* im = ev.image.row(static_cast<int>(py - ev.y0)) + (bx0 - ev.x0);
        const float* va = ev.variance.row(static_cast<int>(py - ev.y0)) + (bx0 - ev.x0);
        const std::int32_t* ma = ev.mask.row(static_cast<int>(py - ev.y0)) + (bx0 - ev.x0);
        for (std::int64_t px = 0; px <= bx1 - bx0; ++px) {
            if (ma[px] & ctrl.bad_mask) continue;
            const double m = mr[px], d = im[px], v = va[px];
            if (!std::isfinite(d) || !std::isfinite(v)) finite = false;
            smm += m * m;
            smd += m * d;
            smmv += m * m * v;
            sm += m;
            ++n;
        }
    }
    res.npixels = static_cast<double>(n);
    if (n == 0 || !(smm > 0.0)) {
        res.flags |= FAILURE | NO_GOOD_PIXELS;
        return res;
    }
    const double f = smd / smm;
    double chi2 = 0.0;
    for (std::int64_t py = by0; py <= by1; ++py) {
        const double* mr = model + static_cast<std::ptrdiff_t>(py - my0) * width + (bx0 - mx0);
        const float* im = ev.image.row(static_cast<int>(py - ev.y0)) + (bx0 - ev.x0);
        const float* va = ev.variance.row(static_cast<int>(py - ev.y0)) + (bx0 - ev.x0);
        const std::int32_t* ma = ev.mask.row(static_cast<int>(py - ev.y0)) + (bx0 - ev.x0);
        for (std::int64_t px = 0; px <= bx1 - bx0; ++px) {
            if (ma[px] & ctrl.bad_mask) continue;
            const double r = im[px] - f * mr[px];
            chi2 += r * r / va[px];
        }
    }
    res.instFlux = f;
    const double noise_err = std::sqrt(smmv) / smm;
    // model_error: a relative error of the model that moves the amplitude by the same fraction
    res.instFluxErr = ctrl.model_error > 0.0 ? std::hypot(noise_err, ctrl.model_error * f) : noise_err;
    res.area = sm * sm / smm;
    res.chi2 = chi2;
    if (!finite || !std::isfinite(res.instFlux) || !std::isfinite(res.instFluxErr)) {
        res.flags |= FAILURE;
        res.instFlux = res.instFluxErr = res.chi2 = NAN;
    }
    return res;
}

PsfFluxResult measure_psf_flux(const ExposureView& ev, const PsfImage& model, const PsfFluxControl& ctrl) {
    return measure_psf_flux(ev, model.data.data(), model.width, model.height, model.x0, model.y0, ctrl);
}

}  // namespace visitcal
