"""Background statistics and the 41 x 41 FFT convolution, two builds of visitcal side by side (issue 25).

Times, in alternation (round-robin, one subprocess per build and round, one pinned core), the
pipeline's default background (MEANCLIP statistics + the order-6 Chebyshev model, what
``SubtractBackgroundTask`` runs in calibrate and reprocess), MEANCLIP + Akima, the MEANCLIP
statistics alone without and with the mask and variance planes (the pipeline passes both), and
``convolve(image, k41)`` (FFT overlap-save); the peers (``sep.Background(bw=bh=128)`` + ``back()``,
``scipy.signal.fftconvolve`` and ``oaconvolve`` in float32) run in the "after" subprocesses. Images: the
shared simulated 4072 x 4000 detector of ``_sim_image.py`` (background) and the synthetic sky of
``bench_convolve.py`` (convolution). Each build also prints a digest of its background (stats, variance,
model) and of its convolution output, so that identical bytes can be checked.

Both wall-clock and process-CPU bests are printed: on a loaded machine the CPU time is the steadier figure.

Run from the repository root with the "before" build's package in a directory of its own::

    mkdir -p /tmp/before && cp -r python/visitcal /tmp/before/ && cp OLD_core.so /tmp/before/visitcal/_core.cpython-311-x86_64-linux-gnu.so
    python bench/bench_kernels_ab.py --before /tmp/before --rounds 4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads

HERE = Path(__file__).resolve().parent
PEERS = ("sep", "fftconvolve32", "oaconvolve32")


def one(cpu: int, repeat: int, peers: bool) -> dict:
    """Timings of the build on ``sys.path`` (best of ``repeat``, wall and CPU seconds) and its digests."""
    import numpy as np

    import visitcal
    from _sim_image import sim_detector
    from bench_convolve import synthetic_sky
    from visitcal.detection.background import BackgroundConfig, make_background
    from visitcal.detection.convolve import convolve

    _common.pin_one_core(cpu)
    data = sim_detector()
    img, mask, var = data["image"], data["mask"].astype(np.int32), data["variance"]
    out = np.empty(img.shape, np.float32)
    cheb, akima = BackgroundConfig(), BackgroundConfig(use_approximate=False)
    cimg, _ = synthetic_sky(4072, 4000, 3000)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[-20:21, -20:21]
    k41 = np.exp(-0.5 * (yy**2 + xx**2) / 6.0**2) * (1 + 0.1 * rng.normal(size=yy.shape))  # as bench_convolve
    k41 /= k41.sum()
    k32 = k41.astype(np.float32)
    fns = {
        "bg_meanclip_chebyshev_total": lambda: make_background(img, cheb).get_image(out=out),
        "bg_meanclip_akima_total": lambda: make_background(img, akima).get_image(out=out),
        "bg_meanclip_stats": lambda: make_background(img, cheb),
        "bg_meanclip_stats_mask_variance": lambda: make_background(img, cheb, mask=mask, variance=var),
        "convolve_41x41": lambda: convolve(cimg, k41),
    }
    if peers:
        import scipy.signal as sig
        import sep

        fns["sep"] = lambda: sep.Background(img, bw=128, bh=128).back()
        fns["fftconvolve32"] = lambda: sig.fftconvolve(cimg, k32, mode="same")
        fns["oaconvolve32"] = lambda: sig.oaconvolve(cimg, k32, mode="same")
    res: dict = {}
    for name, fn in fns.items():
        fn()
        wall = cpu_s = float("inf")
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu_s = min(wall, time.perf_counter() - t0), min(cpu_s, time.process_time() - c0)
        res[name] = [wall, cpu_s]
    b = make_background(img, cheb, mask=mask, variance=var)
    res["_digest_background"] = hashlib.sha256(b.get_stats_image().tobytes() + b.get_variance_image().tobytes()
                                               + b.get_image().tobytes()).hexdigest()[:16]
    res["_digest_convolve"] = hashlib.sha256(convolve(cimg, k41).image.tobytes()).hexdigest()[:16]
    res["_package"] = str(Path(visitcal.__file__).parent)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=False, help="directory holding the 'before' visitcal package")
    ap.add_argument("--after", default=str(HERE.parent / "python"), help="directory holding the 'after' package")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per subprocess (after one warm-up)")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--peers", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("JSON", json.dumps(one(args.cpu, args.repeat, args.peers)))
        return
    if not args.before:
        ap.error("--before is required")
    print(f"load average before: {os.getloadavg()}")
    variants = {"before": args.before, "after": args.after}
    best: dict = {}
    digests: dict = {}
    for r in range(args.rounds):
        for name, path in variants.items():
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([path, str(HERE)]))
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", "--cpu", str(args.cpu),
                   "--repeat", str(args.repeat)] + (["--peers"] if name == "after" else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("JSON ")]
            if proc.returncode or not lines:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            for key, value in json.loads(lines[0][5:]).items():
                if key.startswith("_"):
                    digests.setdefault(key, {})[name] = value
                    continue
                slot = best.setdefault(key if key in PEERS else f"{name}: {key}", [float("inf"), float("inf")])
                slot[0], slot[1] = min(slot[0], value[0]), min(slot[1], value[1])
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = [(k, v[0] * 1e3, v[1] * 1e3) for k, v in sorted(best.items())]
    print(_common.format_table(["what", "wall ms (best)", "CPU ms (best)"], rows))
    for key, by in digests.items():
        if key == "_package":
            print(f"packages: {by}")
        else:
            print(f"{key}: {by}  ({'identical' if len(set(by.values())) == 1 else 'DIFFERENT'})")
    print(f"load average after: {os.getloadavg()}")
    print("wrote", _common.write_json("bench_kernels_ab", {"best_wall_cpu_s": best, "digests": digests}))


if __name__ == "__main__":
    main()
