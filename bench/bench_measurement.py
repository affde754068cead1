"""Deblending and measurement of a 4072 x 4000 simulated detector, one core: visitcal vs sep and photutils (issue 5).

visitcal: on the image minus its true background, `SourceDetectionTask` (not timed), then
`SourceDeblendTask` + `SingleFrameMeasurementTask` with the full default plugin list (pixel flags, SDSS
centroid, adaptive moments of source and PSF, PSF flux, Gaussian flux, 10 exact apertures 3-70 px,
compensated top hat, local background, variance, sky coordinates, focal-plane position, Jacobian,
footprint area, both extendednesses) and noise replacement, with a C++ Gaussian PSF of the
simulation's PSF sigma (a GalSim PSF would time GalSim).

Peers, beside it on the same image:
- sep: extract (its own detection and deblending) + sum_circle at 3 radii + winpos;
- photutils: SourceCatalog (centroids, moments, fluxes) on its own segmentation + aperture_photometry at
  3 radii; photutils' deblend_sources needs scikit-image, which is absent here, so it is skipped.
And the aperture kernel alone, per source and radius, vs sep.sum_circle (exact, subpix=0).

Run from the repository root: ``python bench/bench_measurement.py``.
"""

from __future__ import annotations

import argparse

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np
from _sim_image import sim_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("Deblend + measure, 4072 x 4000 simulated detector", cpu)

    from visitcal.measurement.deblend import SourceDeblendTask
    from visitcal.detection.detection import SourceDetectionTask
    from visitcal.core.image import Exposure, Mask
    from visitcal.measurement.plugins.aperture_flux import (
        ApertureFluxConfig,
        circular_aperture_flux,
    )
    from visitcal.psf.models import GaussianPsf
    from visitcal.measurement.single_frame_measurement import SingleFrameMeasurementTask
    from visitcal.core.wcs import make_tan_sip_wcs

    data = sim_detector()
    image = (data["image"] - data["background"]).astype(np.float32)
    variance = data["variance"]
    sigma = float(data["psf_sigma"])
    ny, nx = image.shape
    wcs = make_tan_sip_wcs((nx / 2, ny / 2), (150.0, 2.0), np.diag([-0.2, 0.2]) / 3600.0)
    exposure = Exposure.from_arrays(image.copy(), data["mask"].copy(), variance, wcs=wcs,
                                    psf=GaussianPsf(sigma, average_position=(nx / 2, ny / 2)))
    detection = SourceDetectionTask().run(exposure)
    deblender = SourceDeblendTask()
    measurement = SingleFrameMeasurementTask()
    found = {}

    def ours():
        result = deblender.run(exposure, detection.sources.copy(), detection.footprints)
        found["ours"] = measurement.run(result.sources, exposure, result.footprints)

    rows, payload = [], {"psf_sigma": sigma, "n_detections": len(detection.sources)}
    t_ours = _common.time_it(ours, repeat=args.repeat)
    n_ours = len(found["ours"])
    rows.append(["visitcal deblend + measure (all plugins)", t_ours.best, t_ours.median, n_ours, ""])
    payload["visitcal"] = {**t_ours.as_dict(), "n_sources": n_ours}
    measure_only = SingleFrameMeasurementTask()
    deblended = deblender.run(exposure, detection.sources.copy(), detection.footprints)
    t_meas = _common.time_it(lambda: measure_only.run(deblended.sources.copy(), exposure, deblended.footprints),
                             repeat=args.repeat)
    rows.append(["  of which measurement", t_meas.best, t_meas.median, len(deblended.sources), ""])
    payload["visitcal_measurement"] = t_meas.as_dict()

    import sep

    err = np.sqrt(variance).astype(np.float32)
    sep.set_extract_pixstack(10_000_000)
    sep.set_sub_object_limit(4096)
    radii = (3.0, 12.0, 25.0)

    def sep_run():
        objs = sep.extract(image, 5.0, err=err)
        for r in radii:
            sep.sum_circle(image, objs["x"], objs["y"], r, err=err, subpix=0)
        r50, _ = sep.flux_radius(image, objs["x"], objs["y"], 6.0 * objs["a"], 0.5, subpix=5)
        sep.winpos(image, objs["x"], objs["y"], 2.0 * r50 / 2.35)
        found["sep"] = objs

    t = _common.time_it(sep_run, repeat=args.repeat)
    rows.append(["sep extract + sum_circle x3 + winpos", t.best, t.median, len(found["sep"]),
                 f"{t.best / t_ours.best:.1f}x"])
    payload["sep"] = {**t.as_dict(), "n_objects": len(found["sep"]), "ratio_to_visitcal": t.best / t_ours.best}

    try:
        from photutils.aperture import CircularAperture, aperture_photometry
        from photutils.segmentation import SourceCatalog, detect_sources
    except ImportError:
        print("photutils is not installed: peer skipped")
    else:
        def photutils_run():
            segm = detect_sources(image, 5.0 * err, n_pixels=5)
            cat = SourceCatalog(image, segm, error=err)
            xy = np.column_stack([cat.x_centroid, cat.y_centroid])
            _ = cat.to_table()
            for r in radii:
                aperture_photometry(image, CircularAperture(xy, r), error=err, method="exact")
            found["photutils"] = cat

        t = _common.time_it(photutils_run, repeat=1, warmup=0)
        rows.append(["photutils SourceCatalog + aperture_photometry x3 (no deblend_sources: no scikit-image)",
                     t.best, t.median, len(found["photutils"]), f"{t.best / t_ours.best:.1f}x"])
        payload["photutils"] = {**t.as_dict(), "n_objects": len(found["photutils"]),
                                "ratio_to_visitcal": t.best / t_ours.best}

    print(_common.format_table(["what", "best s", "median s", "sources", "peer / visitcal"], rows))
    n = n_ours
    print(f"per source: {1e6 * t_ours.best / n:.0f} us; scaled to 3000 sources: {3000 * t_ours.best / n:.3f} s")
    print(f"target: deblend + measure <= 0.6 s -> {'met' if 3000 * t_ours.best / n <= 0.6 else 'MISSED'}")

    # the aperture kernel alone, r = 12, vs sep.sum_circle exact
    objs = found["sep"]
    x, y = objs["x"].astype(np.float64), objs["y"].astype(np.float64)
    from visitcal.core.image import MaskedImage

    mi = MaskedImage(image, Mask(data["mask"].copy()), variance)
    cfg12 = ApertureFluxConfig(radii=(12.0,))
    t_ap = _common.time_it(lambda: circular_aperture_flux(mi, x, y, cfg12), repeat=5)
    t_sep = _common.time_it(lambda: sep.sum_circle(image, x, y, 12.0, err=err, subpix=0), repeat=5)
    us_ours, us_sep = 1e6 * t_ap.best / len(x), 1e6 * t_sep.best / len(x)
    print(f"aperture r=12 per source: visitcal {us_ours:.2f} us, sep.sum_circle {us_sep:.2f} us "
          f"({us_sep / us_ours:.2f}x)")
    payload["aperture_r12_us"] = {"visitcal": us_ours, "sep": us_sep}
    print(f"wrote {_common.write_json('measurement', payload)}")


if __name__ == "__main__":
    main()
