"""ChebyshevBoundedField: visitcal's C++ core against numpy.polynomial.chebyshev, on one core.

Grid evaluation on a full detector (default 4072 x 4000) for orders 2-6:

* visitcal ``_core.ChebyshevBoundedField.evaluate_grid_into`` into a pre-faulted float64 and
  float32 array, and into a fresh ``np.empty`` float64 array (what an allocating wrapper pays);
* ``numpy.polynomial.chebyshev.chebgrid2d`` (the separable numpy peer; the speed-up reference);
* ``chebval2d`` on the full meshgrid (point by point; slow and ~4 GB at order 6, so timed once
  per order by default, or on a subgrid and scaled with ``--chebval2d subgrid``);
* the time just to write the output: ``out.fill(1.0)`` into a pre-faulted array (the
  write-only reference of the goal) and ``np.empty`` + ``fill`` fresh.

Results are checked against chebgrid2d (max abs diff; ~1e-15 for float64, ~1e-7 for float32).
Goal (the issue): >= 8x faster than chebgrid2d and within 3x of the write-only time, orders 2-6.

Fit: an order-2 and an order-6 triangular field fitted to 1e3 and 1e5 points, visitcal
``ChebyshevBoundedField.fit`` (column-pivoting QR) against ``numpy.linalg.lstsq`` on the same
design matrix built with ``chebvander2d`` (timed with and without building the matrix).

Run from the repository root: ``python bench/bench_chebyshev.py`` (see bench/README.md).
"""

from __future__ import annotations

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads

import argparse  # noqa: E402
import gc  # noqa: E402

import numpy as np  # noqa: E402
from numpy.polynomial import chebyshev as npcheb  # noqa: E402

from visitcal import _core  # noqa: E402

GOAL_SPEEDUP = 8.0  # >= 8x faster than chebgrid2d
GOAL_FILL_RATIO = 3.0  # <= 3x the write-only time


def bench_coefficients(order: int) -> np.ndarray:
    """The benchmark field, shared with bench/cpp/bench_chebyshev.cpp: triangular,
    a[j, i] = (-1)^j / (1 + i + j) for i + j <= order (j: y order, i: x order)."""
    j, i = np.indices((order + 1, order + 1))
    a = np.where(j % 2, -1.0, 1.0) / (1.0 + i + j)
    a[i + j > order] = 0.0
    return a


def to_cheb(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Pixel coordinates -> [-1, 1] over the box's continuous edges [lo - 0.5, hi + 0.5]."""
    return (2.0 * v - ((lo - 0.5) + (hi + 0.5))) / (hi - lo + 1)


def bench_grid(args: argparse.Namespace) -> dict:
    nx, ny, rep = args.nx, args.ny, args.repeat
    npix = nx * ny
    box = _core.Box2I(0, 0, nx - 1, ny - 1)
    xs = np.arange(nx, dtype=np.float64)
    ys = np.arange(ny, dtype=np.float64)
    xp, yp = to_cheb(xs, 0, nx - 1), to_cheb(ys, 0, ny - 1)

    # Write-only references (order independent). Pre-faulted: the warm-up call touches every page.
    out64 = np.empty((ny, nx), np.float64)
    out32 = np.empty((ny, nx), np.float32)
    ref = {
        "fill_f64": _common.time_it(lambda: out64.fill(1.0), rep),
        "fill_f32": _common.time_it(lambda: out32.fill(1.0), rep),
        "empty_fill_f64": _common.time_it(lambda: np.empty((ny, nx), np.float64).fill(1.0), rep),
        "empty_fill_f32": _common.time_it(lambda: np.empty((ny, nx), np.float32).fill(1.0), rep),
    }
    ref_desc = {
        "fill_f64": "out.fill(1.0), pre-faulted float64",
        "fill_f32": "out.fill(1.0), pre-faulted float32",
        "empty_fill_f64": "np.empty + fill, fresh float64",
        "empty_fill_f32": "np.empty + fill, fresh float32",
    }
    print(f"\nWrite-only references at the start of the run, {nx} x {ny} ({npix * 8 / 1e6:.0f} MB float64), best/median of {rep}")
    print(_common.format_table(
        ["kernel", "best ms", "median ms", "GB/s written"],
        [[ref_desc[k], t.best * 1e3, t.median * 1e3, npix * (8 if k.endswith("64") else 4) / t.best / 1e9]
         for k, t in ref.items()],
        ".4g",
    ))

    if args.chebval2d == "subgrid":
        sub = (slice(None, None, 4), slice(None, None, 4))  # 1/16 of the pixels, spread over the box
        cv_note = "chebval2d on a 1/16 subgrid (every 4th row and column), best of 3, time scaled x(npix/nsub)"
    elif args.chebval2d == "full":
        sub = (slice(None), slice(None))
        cv_note = "chebval2d on the full meshgrid, timed once (1 run, no warm-up) per order"
    else:
        sub = None
        cv_note = "chebval2d skipped"

    # Phase 1, the fast timings. Each order re-times the pre-faulted fills just before its own
    # runs and its x/fill ratios use those paired figures: on this VM the memory bandwidth drifts
    # by 20-40 % over a minute, more after the multi-GB chebval2d runs, which is why those come last.
    rows, results = {}, []
    for order in args.orders:
        coeffs = bench_coefficients(order)
        f = _core.ChebyshevBoundedField(box, coeffs)

        fill64 = _common.time_it(lambda: out64.fill(1.0), rep)
        fill32 = _common.time_it(lambda: out32.fill(1.0), rep)
        t64 = _common.time_it(lambda: f.evaluate_grid_into(xs, ys, out64), rep)
        t32 = _common.time_it(lambda: f.evaluate_grid_into(xs, ys, out32), rep)

        def fresh() -> None:
            o = np.empty((ny, nx), np.float64)
            f.evaluate_grid_into(xs, ys, o)

        t_fresh = _common.time_it(fresh, rep)
        t_empty_fill = _common.time_it(lambda: np.empty((ny, nx), np.float64).fill(1.0), rep)
        t_grid = _common.time_it(lambda: npcheb.chebgrid2d(yp, xp, coeffs), args.peer_repeat)

        truth = npcheb.chebgrid2d(yp, xp, coeffs)
        f.evaluate_grid_into(xs, ys, out64)
        d64 = float(np.max(np.abs(out64 - truth)))
        f.evaluate_grid_into(xs, ys, out32)
        d32 = float(np.max(np.abs(out32 - truth)))
        del truth

        results.append({
            "order": order,
            "fill_f64": fill64.as_dict(),
            "fill_f32": fill32.as_dict(),
            "empty_fill_f64": t_empty_fill.as_dict(),
            "visitcal_f64": {**t64.as_dict(), "max_abs_diff_vs_chebgrid2d": d64},
            "visitcal_f32": {**t32.as_dict(), "max_abs_diff_vs_chebgrid2d": d32},
            "visitcal_f64_fresh": t_fresh.as_dict(),
            "chebgrid2d": t_grid.as_dict(),
        })
        base = t_grid.best

        def row(name, t, fill_ref, diff):
            return [order, name, t.best * 1e3, t.median * 1e3, npix / t.best / 1e6, f"{base / t.best:.1f}x",
                    f"{t.best / fill_ref.best:.2f}", f"{diff:.1e}" if diff is not None else ""]

        rows[order] = [
            row("visitcal grid f64 (into)", t64, fill64, d64),
            row("visitcal grid f32 (into)", t32, fill32, d32),
            row("visitcal grid f64 (np.empty + into)*", t_fresh, t_empty_fill, None),
            row("numpy chebgrid2d", t_grid, fill64, 0.0),
        ]

    # Phase 2: chebval2d, point by point on the meshgrid (slow, up to ~4 GB at order 6).
    if sub is not None:
        ygrid, xgrid = np.meshgrid(yp[sub[0]], xp[sub[1]], indexing="ij")
        nsub = ygrid.size
        for e in results:
            order = e["order"]
            coeffs = bench_coefficients(order)
            kept = []  # the last result, for the agreement check (a full-grid run is only done once)

            def run_cv() -> None:
                kept[:] = [npcheb.chebval2d(ygrid, xgrid, coeffs)]

            if args.chebval2d == "full":
                t_cv = _common.time_it(run_cv, 1, warmup=0)
                scale = 1.0
            else:
                t_cv = _common.time_it(run_cv, 3)
                scale = npix / nsub
            truth = npcheb.chebgrid2d(yp, xp, coeffs)[sub]
            dcv = float(np.max(np.abs(kept[0] - truth)))
            del kept, truth
            gc.collect()
            t_scaled = _common.Timing([t * scale for t in t_cv.times], t_cv.warmup)
            e["chebval2d"] = {**t_cv.as_dict(), "scale": scale, "note": cv_note, "max_abs_diff_vs_chebgrid2d": dcv}
            rows[order].append([order, "numpy chebval2d" + (" (scaled)" if scale != 1 else " (1 run)"),
                                t_scaled.best * 1e3, t_scaled.median * 1e3, npix / t_scaled.best / 1e6,
                                f"{e['chebgrid2d']['best_s'] / t_scaled.best:.2f}x",
                                f"{t_scaled.best / e['fill_f64']['best_s']:.0f}", f"{dcv:.1e}"])
        del ygrid, xgrid
    rows = [r for order in args.orders for r in rows[order]]

    print(f"\nGrid evaluation, {nx} x {ny}; best/median of {rep} (visitcal) and {args.peer_repeat} (chebgrid2d) "
          "after 1 warm-up;\nx/fill = best time / best out.fill time into a pre-faulted array of the same dtype, "
          "timed just before (* : / np.empty + fill fresh, float64)")
    print(f"({cv_note})")
    print(_common.format_table(
        ["order", "method", "best ms", "median ms", "Mpix/s", "vs chebgrid2d", "x/fill", "max|diff| vs chebgrid2d"],
        rows, ".4g"))

    # Verdicts against the goals.
    goal_rows, verdicts = [], {}
    for e in results:
        for dt in ("f64", "f32"):
            t = e[f"visitcal_{dt}"]["best_s"]
            speedup = e["chebgrid2d"]["best_s"] / t
            ratio = t / e[f"fill_{dt}"]["best_s"]
            ok = speedup >= GOAL_SPEEDUP and ratio <= GOAL_FILL_RATIO
            verdicts[f"order{e['order']}_{dt}"] = {"speedup": speedup, "fill_ratio": ratio, "meets_goal": ok}
            goal_rows.append([e["order"], dt, f"{speedup:.1f}x", "yes" if speedup >= GOAL_SPEEDUP else "NO",
                              f"{ratio:.2f}", "yes" if ratio <= GOAL_FILL_RATIO else "NO"])
    print(f"\nGoals: >= {GOAL_SPEEDUP:g}x chebgrid2d and <= {GOAL_FILL_RATIO:g}x the write-only time "
          "(pre-faulted out.fill, same dtype, paired)")
    print(_common.format_table(["order", "dtype", "vs chebgrid2d", ">= 8x", "x/fill", "<= 3x"], goal_rows))

    return {
        "nx": nx,
        "ny": ny,
        "coefficients": "triangular, a[j, i] = (-1)^j / (1 + i + j) for i + j <= order",
        "write_only": {k: {**t.as_dict(), "description": ref_desc[k]} for k, t in ref.items()},
        "chebval2d_mode": cv_note,
        "orders": results,
        "goals": {"min_speedup_vs_chebgrid2d": GOAL_SPEEDUP, "max_ratio_to_fill": GOAL_FILL_RATIO, "verdicts": verdicts},
    }


def bench_fit(args: argparse.Namespace) -> dict:
    """visitcal fit (QR) vs numpy lstsq (SVD, LAPACK gelsd) on the same chebvander2d design matrix."""
    nx, ny = args.nx, args.ny
    box = _core.Box2I(0, 0, nx - 1, ny - 1)
    rng = np.random.default_rng(20261123)
    rows, results = [], []
    for order in (2, 6):
        j, i = np.indices((order + 1, order + 1))
        tri = (i + j <= order).ravel()  # chebvander2d(y', x') column (order+1) j + i is T_j(y') T_i(x')
        truth = _core.ChebyshevBoundedField(box, bench_coefficients(order))
        ctrl = _core.ChebyshevBoundedFieldControl()
        ctrl.order_x = ctrl.order_y = order
        ctrl.triangular = True
        for n in (1_000, 100_000):
            x = rng.uniform(-0.5, nx - 0.5, n)
            y = rng.uniform(-0.5, ny - 0.5, n)
            z = truth.evaluate_points(x, y) + rng.normal(0.0, 1e-3, n)
            xp, yp = to_cheb(x, 0, nx - 1), to_cheb(y, 0, ny - 1)
            design = npcheb.chebvander2d(yp, xp, [order, order])[:, tri]

            def numpy_full() -> np.ndarray:
                a = npcheb.chebvander2d(yp, xp, [order, order])[:, tri]
                return np.linalg.lstsq(a, z, rcond=None)[0]

            rep = args.fit_repeat
            t_vc = _common.time_it(lambda: _core.ChebyshevBoundedField.fit(box, x, y, z, None, ctrl), rep)
            t_ls = _common.time_it(lambda: np.linalg.lstsq(design, z, rcond=None), rep)
            t_full = _common.time_it(numpy_full, rep)
            got = np.asarray(_core.ChebyshevBoundedField.fit(box, x, y, z, None, ctrl).coefficients).ravel()[tri]
            ref_sol = numpy_full()
            diff = float(np.max(np.abs(got - ref_sol)))
            results.append({
                "order": order, "n": n, "terms": int(tri.sum()),
                "visitcal_fit": t_vc.as_dict(),
                "numpy_lstsq_only": t_ls.as_dict(),
                "numpy_chebvander2d_lstsq": t_full.as_dict(),
                "max_abs_coeff_diff": diff,
            })
            rows.append([order, int(tri.sum()), n, t_vc.best * 1e3, t_ls.best * 1e3, t_full.best * 1e3,
                         f"{t_ls.best / t_vc.best:.1f}x", f"{t_full.best / t_vc.best:.1f}x", f"{diff:.1e}"])
    print(f"\nFit (triangular), best of {args.fit_repeat} after 1 warm-up; visitcal: fit from (x, y, z) "
          "(builds its design matrix, column-pivoting QR); numpy: lstsq (gelsd) on the chebvander2d matrix")
    print(_common.format_table(
        ["order", "terms", "points", "visitcal ms", "lstsq ms", "vander+lstsq ms", "vs lstsq", "vs vander+lstsq",
         "max|coeff diff|"],
        rows, ".4g"))
    return {"fit": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=lambda s: [int(v) for v in s.split(",")], default=[2, 3, 4, 5, 6])
    p.add_argument("--nx", type=int, default=4072)
    p.add_argument("--ny", type=int, default=4000)
    p.add_argument("--repeat", type=int, default=10, help="timed runs of visitcal and the write-only references")
    p.add_argument("--peer-repeat", type=int, default=3, help="timed runs of chebgrid2d")
    p.add_argument("--fit-repeat", type=int, default=10)
    p.add_argument("--chebval2d", choices=["full", "subgrid", "skip"], default="full",
                   help="full: the whole meshgrid, once per order (~9 s and ~4 GB at order 6); "
                        "subgrid: a 1/16 subgrid, scaled; skip")
    p.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    p.add_argument("--no-fit", action="store_true")
    p.add_argument("--json", default=None, help="output path (default bench/results/bench_chebyshev.json)")
    args = p.parse_args(argv)

    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("bench_chebyshev: visitcal ChebyshevBoundedField vs numpy.polynomial.chebyshev", cpu)
    payload = {"args": {k: v for k, v in vars(args).items()}}
    payload["grid"] = bench_grid(args)
    if not args.no_fit:
        payload.update(bench_fit(args))
    out = _common.write_json("bench_chebyshev", payload, args.json)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
