"""Cosmic-ray finder (visitcal.detection.cosmic_rays.find_cosmic_rays) on a full detector, one core.

A 4072 x 4000 float32 sky in ADU (gain 1): flat background of ``--sky`` ADU subtracted, Poisson +
read noise (variance plane = sky + source + read noise squared), ``--stars`` Gaussian stars of
sigma 1.5 px with fluxes log-uniform in 1e3-1e6 ADU (the brightest peak near 7e4 ADU), and
``--crs`` cosmic-ray tracks drawn like visitcal.sim (exponential lengths, mean 10 px, capped at
60; 800-5000 ADU per pixel of track, deposited in 0.1 px steps).

Times the finder with interpolation (the default configuration) on a fresh copy each run (the copy
is not timed), reports pixels/s and the recovery of the true CR pixels (those with > 5 sigma of
deposited signal). A peer (astroscrappy, L.A.Cosmic) is timed beside it when importable; it is not
a dependency and is not installed by default.

Run from the repository root: ``python bench/bench_cosmic_rays.py``.
"""

from __future__ import annotations

import argparse
import time

import _common  # before numpy: sets the BLAS/OpenMP thread counts
import numpy as np
from visitcal.detection.cosmic_rays import FindCosmicRaysConfig, find_cosmic_rays
from visitcal.core.image import MaskedImage

SIGMA_PSF = 1.5
READ_NOISE = 5.0


def gaussian_stamp(x: float, y: float, flux: float, half: int) -> tuple[np.ndarray, int, int]:
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    o = np.arange(-half, half + 1)
    gx = np.exp(-0.5 * ((ix + o - x) / SIGMA_PSF) ** 2)
    gy = np.exp(-0.5 * ((iy + o - y) / SIGMA_PSF) ** 2)
    return flux * np.outer(gy, gx) / (2 * np.pi * SIGMA_PSF**2), ix - half, iy - half


def cosmic_rays(rng, shape, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices and ADU of ``n`` tracks (the visitcal.sim recipe)."""
    ny, nx = shape
    x0, y0 = rng.uniform(-0.5, nx - 0.5, n), rng.uniform(-0.5, ny - 0.5, n)
    length = np.minimum(rng.exponential(10.0, n), 60.0)
    angle = rng.uniform(0, np.pi, n)
    per_px = rng.uniform(800.0, 5000.0, n)
    counts = np.maximum(np.ceil(length / 0.1).astype(np.int64), 1)
    track = np.repeat(np.arange(n), counts)
    t = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)) * 0.1
    px = np.floor(x0[track] + t * np.cos(angle[track]) + 0.5).astype(np.int64)
    py = np.floor(y0[track] + t * np.sin(angle[track]) + 0.5).astype(np.int64)
    charge = per_px[track] * np.where(counts[track] > 1, 0.1, 1.0)
    ok = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    index, inverse = np.unique(py[ok] * nx + px[ok], return_inverse=True)
    return index, np.bincount(inverse, weights=charge[ok])


def make_sky(nx: int, ny: int, n_stars: int, n_crs: int, sky: float, seed: int):
    rng = np.random.default_rng(seed)
    model = np.full((ny, nx), sky)
    half = 10
    xs, ys = rng.uniform(half, nx - half - 1, n_stars), rng.uniform(half, ny - half - 1, n_stars)
    fluxes = 10 ** rng.uniform(3, 6, n_stars)
    for x, y, f in zip(xs, ys, fluxes):
        stamp, x0, y0 = gaussian_stamp(x, y, f, half)
        model[y0:y0 + stamp.shape[0], x0:x0 + stamp.shape[1]] += stamp
    electrons = rng.poisson(model).astype(np.float64)
    cr_index, cr_adu = cosmic_rays(rng, (ny, nx), n_crs)
    electrons.ravel()[cr_index] += cr_adu
    electrons += rng.normal(0.0, READ_NOISE, electrons.shape)
    variance = (np.maximum(electrons, 0.0) + READ_NOISE**2).astype(np.float32)
    image = (electrons - sky).astype(np.float32)
    o = np.arange(-7, 8)
    psf = np.exp(-0.5 * (o[:, None] ** 2 + o[None, :] ** 2) / SIGMA_PSF**2)
    noise = np.sqrt(sky + READ_NOISE**2)
    return image, variance, psf, cr_index, cr_adu, noise


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nx", type=int, default=4072)
    p.add_argument("--ny", type=int, default=4000)
    p.add_argument("--stars", type=int, default=3000)
    p.add_argument("--crs", type=int, default=2000)
    p.add_argument("--sky", type=float, default=1000.0)
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("Cosmic-ray finder, one detector", cpu)

    image, variance, psf, cr_index, cr_adu, noise = make_sky(args.nx, args.ny, args.stars, args.crs, args.sky,
                                                             args.seed)
    npix = image.size
    config = FindCosmicRaysConfig()
    work = [None]

    def fresh():
        work[0] = MaskedImage(image.copy(), None, variance.copy())

    def run():
        return find_cosmic_rays(work[0], psf, config)

    times = []
    fresh()
    result = run()  # warm-up
    for _ in range(args.repeat):
        fresh()
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    timing = _common.Timing(times, 1)
    masked = work[0].mask.test("CR").ravel()
    detectable = cr_index[cr_adu > 5.0 * noise]
    recovered = float(masked[detectable].mean())
    false_px = int(masked.sum() - masked[cr_index].sum())
    rows = [["visitcal find_cosmic_rays", timing.best * 1e3, timing.median * 1e3, npix / timing.best / 1e6]]
    payload = {
        "shape": [args.ny, args.nx], "stars": args.stars, "cr_tracks": args.crs, "sky_adu": args.sky,
        "visitcal": timing.as_dict(), "n_cr": result.n_cr, "n_pixels": result.n_pixels,
        "n_grown": result.n_grown, "true_cr_pixels": int(cr_index.size), "detectable_cr_pixels": int(detectable.size),
        "recovered_fraction_detectable": recovered, "masked_not_hit": false_px,
    }
    try:
        import astroscrappy  # type: ignore[import-not-found]
    except ImportError:
        astroscrappy = None
        print("peer: astroscrappy is not importable; visitcal alone")
    if astroscrappy is not None:
        t = _common.time_it(lambda: astroscrappy.detect_cosmics(image + args.sky, gain=1.0, readnoise=READ_NOISE,
                                                                sigclip=4.5), repeat=max(1, args.repeat // 2))
        rows.append(["astroscrappy.detect_cosmics", t.best * 1e3, t.median * 1e3, npix / t.best / 1e6])
        payload["astroscrappy"] = t.as_dict()
        print(f"ratio astroscrappy / visitcal (best): {t.best / timing.best:.2f}")
    print(_common.format_table(["finder", "best ms", "median ms", "Mpix/s"], rows))
    print(f"{result.n_cr} CR objects, {result.n_pixels} pixels ({result.n_grown} grown); true CR pixels "
          f"{cr_index.size}, of which {detectable.size} with > 5 sigma ({5 * noise:.0f} ADU): {recovered:.4f} "
          f"masked; {false_px} masked pixels with no CR charge")
    out = _common.write_json("bench_cosmic_rays", payload, args.json)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
