"""Calibrated WCS against the simulator's true WCS over each detector's whole area (issue 21).

Runs the calibrate step (``visitcal calibrate``: CharacterizeImageTask + CalibrateTask) with a preset on a
simulated repository and, for every detector, compares the WCS of its ``preliminary_visit_image`` with the
true WCS on a 41 x 41 grid spanning the detector (corners included): rms and largest on-sky distance, mas.
The same grid gives the preliminary WCS's error. A failed detector is listed with its error.

Repositories (simulated once into ``--work``, then reused):

- ``default``: ``visitcal sim`` defaults: 2 visits x 4 small (2048 x 2048) detectors, 6000 stars/deg^2;
- ``lsst12``: 1 visit x 2 LSST-size (4072 x 4000) detectors (``--preset lsst``), other defaults.

Run from the repository root: ``PYTHONPATH=python python bench/bench_astrom_sim.py [--repos default lsst12]
[--presets lsst sparse] [--label after]``. Results: ``bench/results/astrom_sim_<label>.json``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np

REPOS = {
    "default": ["sim", "{out}", "-q"],
    "lsst12": ["sim", "{out}", "--visits", "1", "--detectors", "2", "--preset", "lsst", "-q"],
}


def sep_mas(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = (np.radians(np.asarray(v, np.float64)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin(0.5 * (d2 - d1)) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(0.5 * (r2 - r1)) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3.6e6


def grid_error(wcs, truth, bbox, n=41):
    from visitcal.core.wcs import pixel_to_sky

    gx, gy = np.meshgrid(np.linspace(bbox.min_x - 0.5, bbox.max_x + 0.5, n),
                         np.linspace(bbox.min_y - 0.5, bbox.max_y + 0.5, n))
    ra, dec = pixel_to_sky(wcs, gx.ravel(), gy.ravel())
    tra, tdec = pixel_to_sky(truth, gx.ravel(), gy.ravel())
    d = sep_mas(ra, dec, tra, tdec)
    return float(math.sqrt(np.mean(d**2))), float(d.max())


def ensure_repo(work: Path, name: str) -> Path:
    from visitcal.cli import main

    out = work / name
    if not (out / "repo.json").is_file():
        if out.exists():
            shutil.rmtree(out)
        assert main([a.format(out=out) for a in REPOS[name]]) == 0
    return out


def clone(src: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("repo.json", "camera.json", "refcat.parquet"):
        shutil.copy(src / name, dest / name)
    (dest / "truth").symlink_to(src / "truth")
    (dest / "post_isr_image").symlink_to(src / "post_isr_image")
    return dest


def run(repo: Path, preset: str, work: Path) -> list[dict]:
    from visitcal.io import read_exposure
    from visitcal.pipeline.calibrate_step import CalibrateStepConfig, run_calibrate
    from visitcal.pipeline.repository import Repository
    from visitcal.sim import SimRepository

    sim = SimRepository(repo)
    root = clone(repo, work / f"cal_{repo.name}_{preset}")
    t0 = time.perf_counter()
    statuses = run_calibrate(root, config=CalibrateStepConfig.preset(preset))
    elapsed = time.perf_counter() - t0
    rows = []
    for s in statuses:
        truth = sim.true_wcs(s.visit, s.detector)
        prelim = sim.preliminary_wcs(s.visit, s.detector)
        exp = read_exposure(sim.post_isr_image_path(s.visit, s.detector)) if not s.ok else None
        row = {"visit": s.visit, "detector": s.detector, "status": "ok" if s.ok else s.error_type,
               "message": None if s.ok else s.message, "summary": s.summary}
        if s.ok:
            exp = read_exposure(Repository(root).dataset_path("preliminary_visit_image", s.visit, s.detector, "fits"))
            row["rms_mas"], row["max_mas"] = grid_error(exp.wcs, truth, exp.bbox)
        row["prelim_rms_mas"], row["prelim_max_mas"] = grid_error(prelim, truth, exp.bbox)
        rows.append(row)
    print(f"{repo.name} preset {preset}: {elapsed:.0f} s")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/visitcal_bench_astrom_sim", help="where repositories are simulated")
    parser.add_argument("--repos", nargs="+", default=list(REPOS), choices=list(REPOS))
    parser.add_argument("--presets", nargs="+", default=["lsst", "sparse"], choices=["lsst", "sparse"])
    parser.add_argument("--label", default="current", help="name of the results file")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    _common.print_header("Calibrated WCS vs the true WCS over each detector (41 x 41 grid)", None)
    results = {}
    table = []
    for name in args.repos:
        repo = ensure_repo(work, name)
        for preset in args.presets:
            rows = run(repo, preset, work)
            results[f"{name}/{preset}"] = rows
            for r in rows:
                sm = r["summary"] or {}
                table.append([name, preset, f"{r['visit']}/{r['detector']}", r["status"],
                              f"{r.get('rms_mas', float('nan')):.2f}", f"{r.get('max_mas', float('nan')):.2f}",
                              f"{r['prelim_rms_mas']:.0f}", str(sm.get("astrom_fitter", "")),
                              str(sm.get("astrom_matcher", "")), str(sm.get("astrom_n_stars", sm.get(
                                  "astrom_n_matches", "")))])
                if r["message"]:
                    print(f"  {name}/{preset} {r['visit']}/{r['detector']}: {r['message'][:160]}")
    print(_common.format_table(["repo", "preset", "visit/det", "status", "rms (mas)", "max (mas)",
                                "prelim rms (mas)", "fitter", "matcher", "n stars"], table))
    out = _common.write_json(f"astrom_sim_{args.label}", results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
