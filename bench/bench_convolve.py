"""Convolution: visitcal's C++ kernels against scipy, side by side on one core.

On a 4072 x 4000 float32 synthetic sky (seeded: sky level + Gaussian noise + a few thousand Moffat
stars, and a matching variance plane):

* ``gaussian_smooth(image, 2.0)`` vs ``scipy.ndimage.gaussian_filter(image, 2.0)`` (truncate=4,
  the same 17-tap kernel);
* ``gaussian_smooth(image, 2.0, variance=var)`` (image and variance), what detection calls;
* ``convolve(image, k41)`` (method="auto" -> FFT) for a 41 x 41 kernel vs
  ``scipy.signal.fftconvolve(image, k41, mode="same")`` and ``scipy.signal.oaconvolve`` (overlap-add),
  both fed float32 image *and* kernel (scipy then computes in float32; a float64 kernel would upcast it
  to float64 and flatter us), the faster of the two taken as the reference;
* the direct/FFT crossover: both methods for square kernels of a few sizes (``--crossover``).

Each visitcal result is checked against its peer on the valid region (max |difference| relative
to the peer's max |value|). Goals (issue 4): smoothing >= 5x faster than ndimage; 41 x 41 >= 3x
faster than fftconvolve.

Run from the repository root: ``python bench/bench_convolve.py`` (see bench/README.md).
"""

from __future__ import annotations

import argparse  # noqa: E402

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np  # noqa: E402
import scipy.ndimage as ndi  # noqa: E402
import scipy.signal as sig  # noqa: E402
from visitcal import _core  # noqa: E402
from visitcal.detection.convolve import _method_costs, convolve, gaussian_smooth  # noqa: E402

GOAL_SMOOTH = 5.0
GOAL_FFT = 3.0


def synthetic_sky(ny: int, nx: int, nstars: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Sky 1000 ADU + Poisson-like Gaussian noise + Moffat stars (beta 3, FWHM 3-5 px); and its variance."""
    rng = np.random.default_rng(seed)
    model = np.full((ny, nx), 1000.0)
    r = 20
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    for _ in range(nstars):
        y0, x0 = rng.integers(r, ny - r), rng.integers(r, nx - r)
        dy, dx = rng.uniform(-0.5, 0.5, 2)
        fwhm = rng.uniform(3.0, 5.0)
        beta = 3.0
        alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
        flux = 10 ** rng.uniform(3, 6)
        prof = (1 + ((yy - dy) ** 2 + (xx - dx) ** 2) / alpha**2) ** -beta
        model[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1] += flux * prof / prof.sum()
    variance = model.copy()  # gain 1: variance = expected counts
    image = model + rng.normal(size=model.shape) * np.sqrt(variance)
    return image.astype(np.float32), variance.astype(np.float32)


def rel_diff(ours: np.ndarray, peer: np.ndarray, hx: int, hy: int) -> float:
    a = ours[hy:ours.shape[0] - hy, hx:ours.shape[1] - hx].astype(np.float64)
    b = peer[hy:peer.shape[0] - hy, hx:peer.shape[1] - hx].astype(np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ny", type=int, default=4072)
    p.add_argument("--nx", type=int, default=4000)
    p.add_argument("--stars", type=int, default=3000)
    p.add_argument("--sigma", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=5, help="timed runs of visitcal")
    p.add_argument("--peer-repeat", type=int, default=3, help="timed runs of scipy")
    p.add_argument("--crossover", action="store_true", help="also time direct vs FFT for 5..21 square kernels")
    p.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    p.add_argument("--json", default=None, help="output path (default bench/results/bench_convolve.json)")
    args = p.parse_args(argv)

    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("bench_convolve: visitcal.detection.convolve vs scipy.ndimage / scipy.signal", cpu)
    image, variance = synthetic_sky(args.ny, args.nx, args.stars)
    print(f"image {args.ny} x {args.nx} float32, {args.stars} Moffat stars; fft tile for 41 x 41: "
          f"{_core.fft_tile_size(args.ny, args.nx, 41, 41)}")
    rows, payload = [], {"ny": args.ny, "nx": args.nx, "stars": args.stars, "sigma": args.sigma, "cases": {}}

    def record(name, ours_fn, peer_fn, check):
        ours = _common.time_it(ours_fn, args.repeat)
        peer = _common.time_it(peer_fn, args.peer_repeat) if peer_fn else None
        ratio = peer.best / ours.best if peer else None
        payload["cases"][name] = {"visitcal": ours.as_dict(), "peer": peer.as_dict() if peer else None,
                                  "speedup": ratio, "max_rel_diff": check}
        rows.append([name, ours.best * 1e3, peer.best * 1e3 if peer else None, ratio, check])

    sigma = args.sigma
    h = int(np.ceil(4 * sigma))
    ours = gaussian_smooth(image, sigma).image
    peer = ndi.gaussian_filter(image, sigma)
    record(f"gaussian_smooth sigma={sigma} vs ndimage.gaussian_filter",
           lambda: gaussian_smooth(image, sigma), lambda: ndi.gaussian_filter(image, sigma), rel_diff(ours, peer, h, h))
    res = gaussian_smooth(image, sigma, variance=variance)
    record(f"gaussian_smooth sigma={sigma} + variance (vs ndimage on the image only)",
           lambda: gaussian_smooth(image, sigma, variance=variance), lambda: ndi.gaussian_filter(image, sigma),
           rel_diff(res.image, peer, h, h))

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[-20:21, -20:21]
    k41 = np.exp(-0.5 * (yy**2 + xx**2) / 6.0**2) * (1 + 0.1 * rng.normal(size=yy.shape))  # not separable
    k41 /= k41.sum()
    auto = convolve(image, k41)
    k41_32 = k41.astype(np.float32)  # the peer in float32 throughout
    peer = sig.fftconvolve(image, k41_32, mode="same")
    assert peer.dtype == np.float32
    record(f"convolve 41x41 (auto -> {auto.method}) vs signal.fftconvolve(same, float32)",
           lambda: convolve(image, k41), lambda: sig.fftconvolve(image, k41_32, mode="same"),
           rel_diff(auto.image, peer, 20, 20))
    peer_oa = sig.oaconvolve(image, k41_32, mode="same")
    record(f"convolve 41x41 (auto -> {auto.method}) vs signal.oaconvolve(same, float32)",
           lambda: convolve(image, k41), lambda: sig.oaconvolve(image, k41_32, mode="same"),
           rel_diff(auto.image, peer_oa, 20, 20))
    # accuracy against float64 scipy (the documented tolerance: relative to the output's maximum)
    exact = sig.fftconvolve(image.astype(np.float64), k41, mode="same")
    payload["fft_41x41_max_rel_diff_vs_float64"] = rel_diff(auto.image, exact, 20, 20)
    print(f"41x41 FFT against float64 scipy: max |diff| / max |out| = {payload['fft_41x41_max_rel_diff_vs_float64']:.2e}")
    record("convolve 41x41 + variance (fft)",
           lambda: convolve(image, k41, variance=variance), None, None)

    if args.crossover:
        for side in (5, 7, 9, 11, 13, 15, 21):
            k = rng.normal(size=(side, side))
            d = convolve(image, k, method="direct").image
            f = convolve(image, k, method="fft").image
            hh = side // 2
            record(f"crossover {side}x{side}: fft (visitcal) vs direct (visitcal as peer)",
                   lambda k=k: convolve(image, k, method="fft"), lambda k=k: convolve(image, k, method="direct"),
                   rel_diff(f, d, hh, hh))
        payload["auto_choice"] = {side: min(_method_costs(image.shape, (side, side)).items(), key=lambda kv: kv[1])[0]
                                  for side in (5, 7, 9, 11, 13, 15, 21, 41)}
        print("auto choice (non-separable kernels):", payload["auto_choice"])

    print(f"\nbest of {args.repeat} (visitcal) / {args.peer_repeat} (peer), ms; speed-up = peer / visitcal")
    print(_common.format_table(["case", "visitcal ms", "peer ms", "speed-up", "max rel diff"], rows))
    smooth = rows[0][3]
    fft = min(rows[2][2], rows[3][2]) / min(rows[2][1], rows[3][1])  # the faster peer over ours (best of each)
    payload["speedup_41x41_vs_faster_peer"] = fft
    print(f"\nsmoothing: {smooth:.2f}x ndimage (goal >= {GOAL_SMOOTH}x): {'met' if smooth >= GOAL_SMOOTH else 'MISSED'}")
    print(f"41x41:     {fft:.2f}x the faster of fftconvolve / oaconvolve in float32 (goal >= {GOAL_FFT}x): "
          f"{'met' if fft >= GOAL_FFT else 'MISSED'}")
    print(f"smoothing image + variance: {rows[1][1]:.1f} ms")
    out = _common.write_json("bench_convolve", payload, args.json)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
