"""Stored inputs for the C++ core harness ``bench_core`` (issue 25), and the Python figures on the same inputs.

The harness (bench/cpp/bench_core.cpp) times the core's kernels without Python; this script writes what
it reads into ``bench/results/cpp_inputs/`` (git-ignored), one ``.npy`` file per array (numpy format 1.0,
little-endian, C order) and one ``.txt`` file of ``key value`` lines per case for the scalars and the
control structs. Every array and control value is captured from the very call the Python API makes into
``visitcal._core`` (the function is wrapped while the Python task runs), so the harness times the same
call on the same arguments:

* ``pixel_grid``, ``pca``: ``PixelGridPsfDeterminer`` (spatial order 2) and ``PcaPsfDeterminer``
  (defaults) on the 300-star simulated PSF scene of bench_psf.py (``bench/_psf_scene.py``: 27 x 27
  candidate stamps of a 4072 x 4000 detector with the simulator's GalSim PSF; ~1 min to build once);
* ``conv``: the 4072 x 4000 float32 synthetic sky of bench_convolve.py (sky + noise + 3000 Moffat stars,
  seed 42; ny = 4072, nx = 4000) and its 41 x 41 non-separable kernel (seed 1);
* ``background``: the simulated detector of bench_background.py (``bench/_sim_image.py``, 4000 x 4072,
  the post-ISR image with its sky), MEANCLIP statistics in 128-px bins and the Akima model, no mask
  (as bench_background's MEANCLIP rows);
* ``measure``: bench_measurement.py's detector (the same image minus its true background), detected and
  deblended by visitcal, then ``SingleFrameMeasurementTask`` with the default plugins and a C++ Gaussian
  PSF of the simulation's sigma; the captured call is ``_core.measure_sources`` (image, mask, variance,
  the flat record and parent footprint lists, heavy pixels, the control struct with its noise statistics).

With ``--time`` (default on) it then times, on the same inputs and one pinned core, the Python API call
and the bare ``_core`` binding call of each case, and writes ``bench/results/bench_core_python.json``; the
README's table puts them beside the harness's figures.

Run from the repository root::

    python bench/cpp/make_inputs.py                 # all cases, then the Python timings (~4 min)
    python bench/cpp/make_inputs.py --cases conv,background --no-time
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402  first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np  # noqa: E402

OUT = BENCH / "results" / "cpp_inputs"
CASES = ("pixel_grid", "pca", "conv", "background", "measure")
SMOOTH_SIGMA = 2.0


# ------------------------------------------------------------------------------------------ writers
def write_npy(directory: Path, name: str, array) -> None:
    """``array`` as ``directory/name.npy``, little-endian and C-contiguous (what the harness's reader takes)."""
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    np.save(directory / f"{name}.npy", a, allow_pickle=False)


def control_items(obj, prefix: str = "") -> list[tuple[str, str]]:
    """Every public data attribute of a pybind11 control struct (nested structs flattened as ``a.b``)."""
    items = []
    for key in sorted(dir(obj)):
        if key.startswith("_"):
            continue
        value = getattr(obj, key)
        if callable(value):
            continue
        if isinstance(value, (bool, np.bool_)):
            items.append((prefix + key, "1" if value else "0"))
        elif hasattr(type(value), "__members__"):  # a pybind11 enum: its integer value
            items.append((prefix + key, str(int(value))))
        elif isinstance(value, (int, np.integer)):
            items.append((prefix + key, str(int(value))))
        elif isinstance(value, (float, np.floating)):
            items.append((prefix + key, repr(float(value))))
        elif isinstance(value, (list, tuple)):
            items.append((prefix + key, ",".join(repr(float(v)) if isinstance(v, float) else str(v) for v in value)))
        else:
            items.extend(control_items(value, prefix + key + "."))
    return items


def write_kv(directory: Path, name: str, items) -> None:
    """``key value`` lines (``directory/name.txt``), the harness's scalar and control input."""
    lines = [f"{k} {v}" for k, v in items]
    (directory / f"{name}.txt").write_text("\n".join(lines) + "\n")


class Capture:
    """Wrap ``visitcal._core.<name>`` so the arguments of its first call are kept (the call goes through)."""

    def __init__(self, name: str):
        from visitcal import _core

        self.name, self.module, self.original = name, _core, getattr(_core, name)
        self.args = None

    def __enter__(self):
        def wrapper(*args):
            if self.args is None:
                self.args = tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args)
            return self.original(*args)

        setattr(self.module, self.name, wrapper)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.original)
        return False


def write_footprints(directory: Path, prefix: str, core_tuple) -> None:
    """A FootprintSet's 7 flat arrays (`FootprintSet._core_tuple`) as ``prefix_*.npy``."""
    names = ("spans", "span_offsets", "peak_xy", "peak_value", "peak_significance", "peak_offsets", "peak_id")
    dtypes = (np.int32, np.int64, np.int32, np.float32, np.float32, np.int64, np.int64)
    for name, dtype, arr in zip(names, dtypes, core_tuple):
        write_npy(directory, f"{prefix}_{name}", np.asarray(arr, dtype))


# ------------------------------------------------------------------------------------------- cases
def psf_case(kind: str, out: Path, cand=None, bbox=None, config=None) -> dict:
    """Fit the candidates (default: the scene's) through the Python determiner, store the `_core` call's
    arguments as ``<kind>_*.npy`` and ``<kind>.txt``; ``config`` defaults to order 2 (pixel grid) / defaults (PCA)."""
    if cand is None:
        from _psf_scene import candidates, psf_scene
        from visitcal.core.geom import Box2I

        scene = psf_scene()
        bbox = Box2I(0, 0, int(scene["width"]) - 1, int(scene["height"]) - 1)
        cand = candidates(scene)
    if kind == "pixel_grid":
        from visitcal.psf.pixel_grid import PixelGridPsfDeterminer as Det
        from visitcal.psf.pixel_grid import PixelGridPsfDeterminerConfig as Cfg

        det, fn = Det(config or Cfg(spatial_order=2)), "fit_pixel_grid_psf"
    else:
        from visitcal.psf.pca import PcaPsfDeterminer as Det
        from visitcal.psf.pca import PcaPsfDeterminerConfig as Cfg

        det, fn = Det(config or Cfg()), "fit_pca_psf"
    with Capture(fn) as cap:
        det.determine_psf(cand, bbox)
    if kind == "pixel_grid":
        image, mask, variance, xy0, x, y, reserved, box, ctl = cap.args
    else:
        image, mask, variance, xy0, x, y, reserved, ctl, box = cap.args
    for name, arr, dtype in (("image", image, np.float32), ("mask", mask, np.int32), ("variance", variance, np.float32),
                             ("xy0", xy0, np.int32), ("x", x, np.float64), ("y", y, np.float64),
                             ("reserved", reserved, np.uint8)):
        write_npy(out, f"{kind}_{name}", np.asarray(arr, dtype))
    write_kv(out, kind, [("box", ",".join(repr(float(v)) for v in box)), *control_items(ctl)])
    r = cap.original(*cap.args)
    check = ({"n_used": int(r["n_used"]), "n_iter": int(r["n_iter"]), "chi2_total": float(r["chi2_total"])}
             if kind == "pixel_grid" else
             {"n_used": int(r["n_good"]), "n_iter": int(r["n_iter"]), "chi2_total": float(r["spatial_fit_chi2"])})
    return {"fit": lambda: det.determine_psf(cand, bbox), "core": lambda: cap.original(*cap.args),
            "check": check, "n_candidates": int(image.shape[0])}


def conv_case(out: Path, ny: int = 4072, nx: int = 4000, stars: int = 3000) -> dict:
    """bench_convolve.py's synthetic sky and 41 x 41 kernel."""
    from bench_convolve import synthetic_sky
    from visitcal import _core
    from visitcal.detection.convolve import convolve, gaussian_kernel_1d, gaussian_smooth

    image, variance = synthetic_sky(ny, nx, stars)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[-20:21, -20:21]
    k41 = np.exp(-0.5 * (yy**2 + xx**2) / 6.0**2) * (1 + 0.1 * rng.normal(size=yy.shape))  # not separable
    k41 /= k41.sum()
    write_npy(out, "conv_image", image)
    write_npy(out, "conv_variance", variance)
    write_npy(out, "conv_k41", k41)
    write_kv(out, "conv", [("sigma", repr(SMOOTH_SIGMA))])
    smooth = gaussian_smooth(image, SMOOTH_SIGMA).image
    fft = convolve(image, k41)
    assert fft.method == "fft", fft.method
    k = gaussian_kernel_1d(SMOOTH_SIGMA)
    return {
        "smooth": lambda: gaussian_smooth(image, SMOOTH_SIGMA),
        "smooth_core": lambda: _core.convolve_separable(image, k, k),
        "smooth_var": lambda: gaussian_smooth(image, SMOOTH_SIGMA, variance=variance),
        "fft": lambda: convolve(image, k41),
        "fft_core": lambda: _core.convolve_fft(image, k41),
        "check": {"smooth_sum": float(np.sum(smooth, dtype=np.float64)),
                  "fft_sum": float(np.sum(fft.image, dtype=np.float64))},
    }


def background_case(out: Path, image=None) -> dict:
    """bench_background.py's simulated detector (or ``image``): MEANCLIP stats + Akima model, no mask."""
    from visitcal.detection.background import BackgroundConfig, make_background

    if image is None:
        from _sim_image import sim_detector

        image = sim_detector()["image"]
    image = np.ascontiguousarray(image, np.float32)
    write_npy(out, "bg_image", image)
    cfg = BackgroundConfig(use_approximate=False)
    ctrl = cfg.to_core()
    write_kv(out, "background", [*control_items(ctrl), ("algorithm", cfg.algorithm),
                                 ("undersample_style", cfg.undersample_style), ("extrapolation", cfg.extrapolation)])
    bg = make_background(image, cfg)
    model = bg.get_image()
    buf = np.empty(image.shape, np.float32)
    return {"stats": lambda: make_background(image, cfg), "interp": lambda: bg.get_image(out=buf),
            "check": {"model_sum": float(np.sum(model, dtype=np.float64)),
                      "stats_sum": float(np.nansum(bg.get_stats_image()))}}


def measure_case(out: Path, exposure=None) -> dict:
    """Detect, deblend and measure ``exposure`` (default: bench_measurement.py's detector, the simulated image
    minus its true background, a Gaussian PSF of the simulation's sigma); the `_core.measure_sources` call stored."""
    from visitcal.detection.detection import SourceDetectionTask
    from visitcal.measurement.deblend import SourceDeblendTask
    from visitcal.measurement.single_frame_measurement import SingleFrameMeasurementTask

    if exposure is None:
        from _sim_image import sim_detector
        from visitcal.core.image import Exposure
        from visitcal.core.wcs import make_tan_sip_wcs
        from visitcal.psf.models import GaussianPsf

        data = sim_detector()
        image = (data["image"] - data["background"]).astype(np.float32)
        sigma = float(data["psf_sigma"])
        ny, nx = image.shape
        wcs = make_tan_sip_wcs((nx / 2, ny / 2), (150.0, 2.0), np.diag([-0.2, 0.2]) / 3600.0)
        exposure = Exposure.from_arrays(image.copy(), data["mask"].copy(), data["variance"], wcs=wcs,
                                        psf=GaussianPsf(sigma, average_position=(nx / 2, ny / 2)))
    detection = SourceDetectionTask().run(exposure)
    deblended = SourceDeblendTask().run(exposure, detection.sources.copy(), detection.footprints)
    task = SingleFrameMeasurementTask()
    with Capture("measure_sources") as cap:
        task.run(deblended.sources.copy(), exposure, deblended.footprints)
    (img, mask, var, x0, y0, records, parents, top, heavy_values, heavy_offsets, psf, ctrl, cx, cy) = cap.args
    if cx is not None or cy is not None:
        raise RuntimeError("the harness measures without input centroids")
    if not hasattr(psf, "sigma"):
        raise RuntimeError(f"the harness builds a C++ GaussianPsf; the exposure's PSF is a {type(psf).__name__}")
    write_npy(out, "meas_image", np.asarray(img, np.float32))
    write_npy(out, "meas_mask", np.asarray(mask, np.int32))
    write_npy(out, "meas_variance", np.asarray(var, np.float32))
    write_footprints(out, "meas_records", records)
    write_footprints(out, "meas_parents", parents)
    write_npy(out, "meas_top", np.asarray(top, np.int64))
    write_npy(out, "meas_heavy_values", np.asarray(heavy_values, np.float32))
    write_npy(out, "meas_heavy_offsets", np.asarray(heavy_offsets, np.int64))
    ax, ay = psf.average_position()
    write_kv(out, "measure", [("x0", str(int(x0))), ("y0", str(int(y0))), ("psf_size", str(int(psf.size))),
                              ("psf_sigma", repr(float(psf.sigma))), ("psf_average_position", f"{ax!r},{ay!r}"),
                              *control_items(ctrl)])
    cols = cap.original(*cap.args)
    flux = np.asarray(cols["base_PsfFlux_instFlux"], np.float64)
    return {"task": lambda: task.run(deblended.sources.copy(), exposure, deblended.footprints),
            "core": lambda: cap.original(*cap.args),
            "check": {"n_records": int(len(top)), "psf_flux_finite": int(np.isfinite(flux).sum()),
                      "psf_flux_sum": float(np.nansum(flux))}}


def write_checks(out: Path, built: dict[str, dict]) -> None:
    """``python_checks.txt``: each case's check values from the Python call (the harness compares its own);
    the entries of cases not in ``built`` (written by an earlier run) are kept."""
    path = out / "python_checks.txt"
    items = dict(line.split(" ", 1) for line in path.read_text().splitlines() if line) if path.exists() else {}
    items = {k: v for k, v in items.items() if k.split(".", 1)[0] not in built}
    items.update({f"{c}.{k}": repr(v) for c, b in built.items() for k, v in b["check"].items()})
    write_kv(out, "python_checks", sorted(items.items()))


def time_wall_and_cpu(fn, repeat: int, warmup: int = 1) -> tuple[_common.Timing, list[float]]:
    """`_common.time_it`'s wall-clock timing plus the thread's CPU seconds of each call (`time.thread_time`,
    as the harness's CLOCK_THREAD_CPUTIME_ID: on a loaded machine it leaves out the waits for the core)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), time.thread_time()
        wall.append(t1 - t0)
        cpu.append(c1 - c0)
    return _common.Timing(wall, warmup), cpu


# -------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--out", default=str(OUT), help="input directory the harness reads (--inputs)")
    p.add_argument("--time", action=argparse.BooleanOptionalAction, default=True,
                   help="time the Python API and the bare _core call on the same inputs")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    p.add_argument("--json", default=None, help="Python timings (default bench/results/bench_core_python.json)")
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("bench_core inputs (and the Python figures on them)", cpu)

    built: dict[str, dict] = {}
    for case in cases:
        t0 = time.perf_counter()
        if case in ("pixel_grid", "pca"):
            built[case] = psf_case(case, out)
        elif case == "conv":
            built[case] = conv_case(out)
        elif case == "background":
            built[case] = background_case(out)
        else:
            built[case] = measure_case(out)
        print(f"{case}: inputs written to {out} ({time.perf_counter() - t0:.1f} s); check {built[case]['check']}")
        write_checks(out, built)  # after each case: a later failure keeps the earlier ones usable
    if not args.time:
        return 0

    what = {"pixel_grid": [("PixelGridPsfDeterminer.determine_psf (order 2)", "fit"),
                           ("_core.fit_pixel_grid_psf", "core")],
            "pca": [("PcaPsfDeterminer.determine_psf", "fit"), ("_core.fit_pca_psf", "core")],
            "conv": [(f"gaussian_smooth(image, {SMOOTH_SIGMA})", "smooth"), ("_core.convolve_separable", "smooth_core"),
                     (f"gaussian_smooth(image, {SMOOTH_SIGMA}, variance=var)", "smooth_var"),
                     ("convolve(image, k41) (fft)", "fft"), ("_core.convolve_fft(image, k41)", "fft_core")],
            "background": [("make_background(image, MEANCLIP, Akima) stats", "stats"),
                           ("Background.get_image(out=) (Akima)", "interp")],
            "measure": [("SingleFrameMeasurementTask.run", "task"), ("_core.measure_sources", "core")]}
    payload: dict = {"repeat": args.repeat, "cases": {}}
    rows = []
    for case, b in built.items():
        for label, key in what[case]:
            t, cpu = time_wall_and_cpu(b[key], args.repeat)
            payload["cases"][f"{case}.{key}"] = {"label": label, **t.as_dict(), "cpu_best_s": min(cpu),
                                                 "cpu_times_s": cpu}
            rows.append([case, label, t.best * 1e3, t.median * 1e3, min(cpu) * 1e3])
    print(_common.format_table(["case", "python call", "best ms", "median ms", "cpu ms"], rows))
    print("wrote", _common.write_json("bench_core_python", payload, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
