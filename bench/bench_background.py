"""Background estimation on a full detector: visitcal against sep, on one core.

Image: 4072 x 4000 float32, a realistic synthetic sky (seeded): 1000 ADU with a 4% gradient and a
faint large-scale bump, Gaussian noise of 12 ADU, 6000 stars (Gaussian PSF sigma 1.6 px, fluxes
log-uniform 1e2-1e6 ADU) and 300 hot pixels. Bins of 128 px (32 x 32 bins).

Timed (best of ``--repeat`` after one warm-up):

* visitcal statistics alone (``make_background``: MEANCLIP, the LSST default; and MODE_SEXTRACTOR
  with the 3 x 3 mesh filter, SExtractor's recipe);
* visitcal full-image model from the stats: Akima interpolation, and the order-6 Chebyshev
  approximation (fit + evaluation);
* totals (stats + model) against ``sep.Background(data, bw=128, bh=128)`` + ``.back()`` (sep's
  defaults: 3 x 3 mesh filter, bicubic spline).

Accuracy against the true sky (excluding pixels within 6 px of a star brighter than 1e3 ADU) is
printed for each, in units of the noise. Target (the issue): no slower than sep.

Run from the repository root: ``python bench/bench_background.py`` (see bench/README.md).
"""

from __future__ import annotations

import argparse

import numpy as np
from visitcal.detection.background import BackgroundConfig, make_background

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads


def make_sky(nx: int, ny: int, seed: int = 42):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:ny, :nx].astype(np.float32)
    truth = (1000.0 * (1 + 0.04 * xx / nx - 0.02 * yy / ny)
             + 8.0 * np.exp(-((xx - 0.3 * nx) ** 2 + (yy - 0.6 * ny) ** 2) / (2 * (0.2 * nx) ** 2))).astype(np.float32)
    img = truth + rng.normal(0.0, 12.0, (ny, nx)).astype(np.float32)
    near = np.zeros((ny, nx), dtype=bool)
    n_stars, sig, half = 6000, 1.6, 12
    xs, ys = rng.uniform(0, nx, n_stars), rng.uniform(0, ny, n_stars)
    flux = 10 ** rng.uniform(2, 6, n_stars)
    for x, y, f in zip(xs, ys, flux):
        ix, iy = int(x), int(y)
        x0, x1, y0, y1 = max(ix - half, 0), min(ix + half + 1, nx), max(iy - half, 0), min(iy + half + 1, ny)
        gx = np.exp(-((np.arange(x0, x1) - x) ** 2) / (2 * sig * sig))
        gy = np.exp(-((np.arange(y0, y1) - y) ** 2) / (2 * sig * sig))
        img[y0:y1, x0:x1] += (f / (2 * np.pi * sig * sig) * np.outer(gy, gx)).astype(np.float32)
        if f > 1e3:
            near[max(iy - 6, 0):iy + 7, max(ix - 6, 0):ix + 7] = True
    k = rng.integers(0, nx * ny, 300)
    img.flat[k] += 5e4
    return img, truth, ~near


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nx", type=int, default=4072)
    ap.add_argument("--ny", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    ap.add_argument("--synthetic", action="store_true",
                    help="use the synthetic sky (--nx, --ny) instead of the simulated 4072 x 4000 detector")
    args = ap.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    if args.synthetic:
        img, truth, far = make_sky(args.nx, args.ny)
        noise = 12.0
    else:
        from scipy import ndimage

        from _sim_image import sim_detector

        data = sim_detector()
        img, truth = data["image"], data["background"].astype(np.float64)
        noise = float(np.sqrt(np.median(data["variance"])))
        far = ~ndimage.binary_dilation(np.abs(img - truth) > 3 * noise, iterations=10)
        args.ny, args.nx = img.shape
    _common.print_header(f"background: {args.nx} x {args.ny} float32 ({'synthetic' if args.synthetic else 'simulated detector'}), bins of 128 px", cpu)
    rep = args.repeat
    results: dict = {"nx": args.nx, "ny": args.ny, "bin": 128}

    def accuracy(model):
        d = (model.astype(np.float64) - truth)[far] / noise
        return {"p99_abs_sigma": float(np.percentile(np.abs(d), 99)), "rms_sigma": float(np.sqrt(np.mean(d * d)))}

    rows = []
    meanclip = BackgroundConfig(use_approximate=False)
    sexlike = BackgroundConfig(statistic="MODE_SEXTRACTOR", median_filter_size=3, algorithm="NATURAL_SPLINE",
                               extrapolation="END_SEGMENT", use_approximate=False)
    for name, cfg in (("MEANCLIP", meanclip), ("MODE_SEXTRACTOR+filter3", sexlike)):
        t = _common.time_it(lambda cfg=cfg: make_background(img, cfg), rep)
        bg = make_background(img, cfg)
        results[f"stats_{name}"] = t.as_dict()
        out = np.empty(img.shape, np.float32)
        ti = _common.time_it(lambda bg=bg, out=out: bg.get_image(out=out), rep)
        results[f"interp_{name}"] = {**ti.as_dict(), **accuracy(bg.get_image())}
        rows.append((f"visitcal {name} stats", t.best, None))
        rows.append((f"visitcal {name} {cfg.algorithm} model", ti.best, None))
        results[f"total_{name}_interp"] = t.best + ti.best
    cheb_cfg = BackgroundConfig()
    bg = make_background(img, cheb_cfg)

    out = np.empty(img.shape, np.float32)
    # a fresh layer per call, so the cached fit is redone each time
    tc = _common.time_it(lambda: type(bg)(bg.get_stats_image(), bg.get_variance_image(), bg.get_npix_image(),
                                          bg.xcen, bg.ycen, bg.bbox, cheb_cfg).get_image(out=out), rep)
    results["chebyshev_model"] = {**tc.as_dict(), **accuracy(bg.get_image())}
    rows.append(("visitcal Chebyshev order-6 fit + model", tc.best, None))
    results["total_MEANCLIP_chebyshev"] = results["stats_MEANCLIP"]["best_s"] + tc.best

    try:
        import sep
    except ImportError:
        sep = None
    if sep is not None:
        ts = _common.time_it(lambda: sep.Background(img, bw=128, bh=128).back(), rep)
        results["sep"] = {**ts.as_dict(), "version": sep.__version__,
                          **accuracy(sep.Background(img, bw=128, bh=128).back())}
        rows.append(("sep.Background(bw=bh=128) + back()", ts.best, 1.0))
        for key in ("total_MEANCLIP_interp", "total_MEANCLIP_chebyshev", "total_MODE_SEXTRACTOR+filter3_interp"):
            ratio = results[key] / ts.best
            results[f"ratio_{key}_over_sep"] = ratio
            rows.append((key.replace("total_", "visitcal total "), results[key], ratio))
    print(_common.format_table(["what", "best s", "time / sep"], [(a, b, c) for a, b, c in rows]))
    for key in ("interp_MEANCLIP", "interp_MODE_SEXTRACTOR+filter3", "chebyshev_model", "sep"):
        if key in results:
            r = results[key]
            print(f"accuracy {key}: p99 |model - truth| = {r['p99_abs_sigma']:.3f} sigma, rms {r['rms_sigma']:.3f} sigma")
    for key, value in results.items():
        if key.startswith("ratio_"):
            print(f"{key}: {value:.2f} ({'no slower than sep' if value <= 1.0 else 'SLOWER than sep'})")
    print("wrote", _common.write_json("bench_background", results))


if __name__ == "__main__":
    main()
