"""visitcal.sim: how long one ``lsst``-preset detector takes to render, and the default command.

* ``lsst``: one visit, one 4072 x 4000 detector, 1 snap (the issue's figure): the scene (every
  star and galaxy drawn by GalSim with its own PSF), the PSF moments of the stars, the snap
  (sky, Poisson and read noise, cosmic rays, bleeding, ISR-like interpolation, masks), then the
  FITS write; peak memory of the process.
* ``default``: ``visitcal sim OUT`` with its defaults (2 visits x 4 ``small`` detectors), end to end.

There is no peer: the time is recorded so that later changes to the simulator can be judged.
Run from the repository root: ``python bench/bench_sim.py [--what lsst|default|both]``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np


def bench_lsst_detector(repeat: int) -> dict:
    from visitcal.io import write_exposure
    from visitcal.sim import SimCamera, SimConfig
    from visitcal.sim.render import render_detector
    from visitcal.sim.scene import make_galaxies, make_stars, make_visit_plans

    config = SimConfig(preset="lsst", n_visits=1, n_detectors=1, seed=1)
    camera = SimCamera(config.camera, 1)
    stars, galaxies = make_stars(config, camera), make_galaxies(config, camera)
    plan = make_visit_plans(config, camera)[0]
    rows, timings = [], []
    tmp = Path(tempfile.mkdtemp())
    try:
        for k in range(repeat):
            t0 = time.perf_counter()
            truth = render_detector(config, camera, plan, 0, stars, galaxies)
            t1 = time.perf_counter()
            write_exposure(truth.snaps[0].exposure, tmp / f"d{k}.fits", overwrite=True)
            t2 = time.perf_counter()
            timings.append((t1 - t0, t2 - t1))
    finally:
        shutil.rmtree(tmp)
    objects = truth.objects
    n_star = int(np.sum(objects["is_star"]))
    render = min(t[0] for t in timings)
    write = min(t[1] for t in timings)
    rows.append(("lsst 4072x4000, 1 snap", n_star, len(objects) - n_star, render, write,
                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    print(_common.format_table(["case", "stars", "galaxies", "render s", "FITS write s", "peak RSS MB"], rows,
                               floatfmt=".3g"))
    return {"render_s": [t[0] for t in timings], "write_s": [t[1] for t in timings], "n_stars": n_star,
            "n_galaxies": len(objects) - n_star, "peak_rss_mb": rows[0][-1]}


def bench_default(repeat: int) -> dict:
    from visitcal.sim import SimConfig, simulate

    times = []
    for _ in range(repeat):
        tmp = Path(tempfile.mkdtemp())
        try:
            t0 = time.perf_counter()
            summary = simulate(SimConfig(), tmp / "repo")
            times.append(time.perf_counter() - t0)
        finally:
            shutil.rmtree(tmp)
    print(_common.format_table(["case", "images", "MB written", "seconds"],
                               [("visitcal sim OUT (defaults)", summary.n_images, summary.n_bytes / 1e6, min(times))]))
    return {"seconds": times, "n_images": summary.n_images, "bytes": summary.n_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", choices=["lsst", "default", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    args = parser.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("visitcal.sim rendering", cpu)
    payload = {}
    if args.what in ("lsst", "both"):
        payload["lsst_detector"] = bench_lsst_detector(args.repeat)
    if args.what in ("default", "both"):
        payload["default_command"] = bench_default(max(1, args.repeat - 1))
    print("results:", _common.write_json("sim", payload))


if __name__ == "__main__":
    main()
