"""Astrometric matching and the photometric zero point, one core (issue 7).

Scene (seeded): a 4072 x 4000 px LSST detector at 0.2"/px under a TAN WCS; 1000 sources (700 with a
reference, 300 without; 0.1 px centroid noise) and 3000 references (700 + 2300 without a source, spread
over the detector and a 300-px margin); the preliminary WCS is the true one after a 40-px shift, a
0.5 deg rotation and a 1e-3 scale error about the detector centre.

Timed (best and median of --repeat after a warm-up):
1. `MatchPessimisticBTask.match_objects` end to end (reference projection through astropy's WCS, the C++
   matcher, distances in arcsec) and the C++ matcher alone (`_core.match_pessimistic_b` on the projected
   positions); the fraction of correct pairs is printed.
2. `match_nearest` of the 1000 transformed sources against the 3000 references at 1 px, beside scipy's
   cKDTree query (k=1, distance_upper_bound) as the peer.
3. The zero-point core (`zero_point_from_fluxes`, lsst-spec §6.3) on 1000 pre-matched pairs.

Run from the repository root: ``python bench/bench_astrom_match.py`` [--repeat N] [--cpu C].
"""

from __future__ import annotations

import argparse
import math

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np
from astropy.wcs import WCS

NX, NY = 4072, 4000
SCALE = 0.2 / 3600


def tan(crpix, cd):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [crpix[0] + 1, crpix[1] + 1]
    w.wcs.cd = cd
    w.wcs.set()
    return w


def scene(seed=1, n_common=700, n_src_only=300, n_ref_only=2300, shift=(40.0, -25.0), rot=0.5, scale=1.001):
    rng = np.random.default_rng(seed)
    c = np.array([(NX - 1) / 2, (NY - 1) / 2])
    cd = np.array([[-SCALE, 0.0], [0.0, SCALE]])
    true = tan(c, cd)
    n_on = n_common + n_src_only
    x = np.r_[rng.uniform(0, NX - 1, n_on), rng.uniform(-300, NX + 299, n_ref_only)]
    y = np.r_[rng.uniform(0, NY - 1, n_on), rng.uniform(-300, NY + 299, n_ref_only)]
    flux = 10 ** rng.uniform(3, 6, x.size)
    ra, dec = true.all_pix2world(x, y, 0)
    th = math.radians(rot)
    m = scale * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    prelim = tan(c - np.linalg.solve(m, np.asarray(shift)), cd @ m)
    src = np.arange(n_on)
    ref = np.r_[0:n_common, n_on:x.size]
    sxy = np.c_[x[src], y[src]] + rng.normal(0, 0.1, (src.size, 2))
    return dict(sxy=sxy, sflux=flux[src], ra=ra[ref], dec=dec[ref], rflux=flux[ref] * rng.lognormal(0, 0.2, ref.size),
                wcs=prelim, n_common=n_common)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--cpu", type=int, default=0)
    args = ap.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("astrometric matching and zero point (issue 7)", cpu)

    from scipy.spatial import cKDTree

    from visitcal import _core
    from visitcal.calib.match_nearest import match_nearest
    from visitcal.calib.match_pessimistic_b import MatchPessimisticBTask
    from visitcal.calib.photo_cal import zero_point_from_fluxes

    s = scene()
    task = MatchPessimisticBTask()
    run = lambda: task.match_objects(s["sxy"], s["sflux"], s["ra"], s["dec"], s["rflux"], s["wcs"])  # noqa: E731
    res = run()
    correct = int(np.sum((res.source_index < s["n_common"]) & (res.source_index == res.ref_index)))
    t_task = _common.time_it(run, args.repeat)

    keep, xr, yr = task._project_references(s["sxy"][:, 0], s["sxy"][:, 1], s["ra"], s["dec"], s["rflux"], s["wcs"])
    xs, ys = np.ascontiguousarray(s["sxy"][:, 0]), np.ascontiguousarray(s["sxy"][:, 1])
    fs = np.ascontiguousarray(s["sflux"])
    ctrl = task.config.to_control()
    t_core = _common.time_it(lambda: _core.match_pessimistic_b(xs, ys, fs, xr, yr, ctrl), args.repeat)

    tx, ty = res.transform(xs, ys)
    t_nn = _common.time_it(lambda: match_nearest(tx, ty, xr, yr, 1.0), args.repeat)
    refxy = np.c_[xr, yr]
    srcxy = np.c_[tx, ty]
    t_kd = _common.time_it(lambda: cKDTree(refxy).query(srcxy, k=1, distance_upper_bound=1.0), args.repeat)
    ours = match_nearest(tx, ty, xr, yr, 1.0)
    d_kd, i_kd = cKDTree(refxy).query(srcxy, k=1, distance_upper_bound=1.0)
    agree = bool(np.array_equal(np.where(np.isfinite(d_kd), i_kd, -1), ours.index))

    rng = np.random.default_rng(3)
    mag = rng.uniform(16, 22, 1000)
    ref = 10 ** (-0.4 * (mag - 31.4))
    src = 10 ** (-0.4 * (mag - 28.0)) * (1 + rng.normal(0, 0.01, 1000))
    t_zp = _common.time_it(lambda: zero_point_from_fluxes(src, src * 0.01, ref, ref * 0.01), args.repeat)

    rows = [
        ["MatchPessimisticBTask.match_objects (end to end)", t_task.best * 1e3, t_task.median * 1e3],
        ["  C++ matcher alone (_core.match_pessimistic_b)", t_core.best * 1e3, t_core.median * 1e3],
        ["match_nearest 1000 x 3000 at 1 px (ours)", t_nn.best * 1e3, t_nn.median * 1e3],
        ["  scipy cKDTree build + query (peer)", t_kd.best * 1e3, t_kd.median * 1e3],
        ["zero_point_from_fluxes, 1000 pairs", t_zp.best * 1e3, t_zp.median * 1e3],
    ]
    print(_common.format_table(["what", "best ms", "median ms"], rows, ".3g"))
    print(f"pairs {len(res)} of {s['n_common']} true, correct {correct}; shift {res.shift[0]:.2f}, {res.shift[1]:.2f} px, "
          f"rotation {res.rotation_deg:.4f} deg, scale {res.scale:.6f}; softening {res.softening}, consensus "
          f"{res.n_consensus}; references searched {res.n_references}; match_nearest == cKDTree: {agree}")
    out = _common.write_json("bench_astrom_match", {
        "rows": [{"what": r[0].strip(), "best_ms": r[1], "median_ms": r[2]} for r in rows],
        "pairs": len(res), "correct": correct, "n_common": s["n_common"], "nearest_agrees_with_ckdtree": agree})
    print(f"-> {out}")


if __name__ == "__main__":
    main()
