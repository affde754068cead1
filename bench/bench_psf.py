"""PSF modelling, one core: visitcal's pixel-grid (and PCA) determiners beside Piff 1.7 (issue 6).

Two cases, each fitter run in its own fresh subprocess pinned to one CPU (so its fit time and its peak
memory are its own):

1. **Sim**: 300 stars of a 4072 x 4000 simulated detector (`_psf_scene`: the simulator's spatially varying
   GalSim PSF, detection, SDSS centroids, `make_psf_candidates`). LSST's Piff settings (lsst-spec §4.7):
   25 x 25 PixelGrid at 1 px, Lanczos(11), centred, BasisPolynomial order 2 in raw pixel x, y, Chisq
   outliers (4 sigma, 5%), max_iter 15; solver "cpp" and "scipy". Ours at spatial order 2 and 4, and the PCA
   determiner. Accuracy against the GalSim truth at 50 seeded positions (not at stars), on the 25 x 25
   stamp holding each position, both images unit-sum on those pixels: HSM adaptive moments (the same
   `galsim.hsm.FindAdaptiveMom` for model and truth) give the size error (relative error of the
   determinant radius ``moments_sigma``) and the distortion errors e1 = (Ixx-Iyy)/(Ixx+Iyy),
   e2 = 2Ixy/(Ixx+Iyy), each as mean and rms over the positions; the worst pixel residual is
   max |model - truth| / max(truth) on the stamp, median over the positions.
2. **DES**: the 117 real DECam stars of ../shared/realdata/piff_des_y1 (63 x 63 VIGNETs, `visitcal.io.ldac`),
   a fixed seeded 20% reserve (the same 23 stars for every fitter), a PixelGrid of 31 at 0.15" on 0.263"
   pixels (sampling 0.15/0.263) at order 2, stamps of 25 px for every fitter (LSST's default stampSize; the
   grid covers 31 x 0.570 = 17.7 px. LSST's validate() would ask for modelSize / samplingSize = 54.4 px, a
   rule that divides where the grid's extent multiplies; with 55-px stamps the reserve chi2 is the same
   within 0.01 for ours, whose fit is 2-3x slower). Ours also with the smoothness prior, its weight chosen by
   5-fold cross-validation on the fitting stars (`cross_validate_smoothness`; the reserve takes no part;
   the cross-validation's time is printed apart from the fit's). Reserve chi2/dof: for each reserved star its
   flux and sub-pixel centre are fitted (3 parameters, the same least-squares routine for every model) with weights 1/variance (sky + Poisson
   from the header's SKYSIGMA and GAINA, no S/N cap) over the good pixels of the 19 x 19 box the model
   covers (31 x 0.570 = 17.7 px) around the star's pixel; dof = n_good - 3; the median is reported.
   PSFEx's own figures (105 stars kept, CHI2_PSF) are read from psfcat.used.fits and printed beside.

Piff's stars are built as LSST's piffPsfDeterminer does: good = var != 0 & finite & no BAD/CR/INTRP/SAT/
SUSPECT/NO_DATA, skipped below half good pixels; weight 1/b from a straight-line fit var = a img + b over
the good pixels; S/N cap at 200. The GalSim image of a stamp has its origin at the stamp's parent-frame
(0-based) corner and image_pos is the 0-based centroid: GalSim's pixel (i, j) is centred at (i, j) in
whatever frame the origin sets, so the frames agree; the worker checks it on the data (HSM centroid of
each star's GalSim image against the true position).

Memory: peak resident set size (``VmHWM``; ``ru_maxrss`` would carry the parent's peak across exec) of the
subprocess that loads the stamps and runs only that fit, and its increase over the RSS just before the fit (the imports of numpy/GalSim/Piff are in both).
Time: wall clock of the fit call alone (``determine_psf`` / ``SimplePSF.fit``, Piff's star building excluded).

Run from the repository root: ``python bench/bench_psf.py`` [--skip-piff] [--piff-solver cpp|scipy|both] [--quick].
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np

REPO = _common.BENCH_DIR.parent
DES_DIR = REPO.parent / "shared" / "realdata" / "piff_des_y1"
DES_CAT = "DECam_00241238_01_psfcat_tb_maxmag_17.0_magcut_3.0_findstars.fits"
DES_PSFEX = "DECam_00241238_01_psfcat.used.fits"
DES_PIXEL = 0.263
DES_SAMPLING = 0.15 / DES_PIXEL
DES_MODEL = 31
DES_STAMP = 25
DES_SMOOTHNESS_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
DES_RESERVE_SEED = 12345
DES_RESERVE_FRACTION = 0.2
MAX_SNR = 200.0
ZERO_WEIGHT_PLANES = ("BAD", "CR", "INTRP", "SAT", "SUSPECT", "NO_DATA")


# --------------------------------------------------------------------------------------------- helpers
def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a worker started from a big parent
    # would report the parent's peak (it did: 568 MB for every fit of ours, the parent's sim scene).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def centre_cut(stack: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """The central ``size`` x ``size`` of (m, S, S) stamps, and the offset of its corner in the stamp."""
    off = (stack.shape[1] - size) // 2
    return stack[:, off:off + size, off:off + size], off


def place(src: np.ndarray, src_x0: int, src_y0: int, dst_shape, dst_x0: int, dst_y0: int) -> np.ndarray:
    """``src`` (with parent corner (src_x0, src_y0)) on a zero array of ``dst_shape`` with corner (dst_x0, dst_y0)."""
    out = np.zeros(dst_shape, np.float64)
    ny, nx = dst_shape
    x0, y0 = max(src_x0, dst_x0), max(src_y0, dst_y0)
    x1 = min(src_x0 + src.shape[1], dst_x0 + nx)
    y1 = min(src_y0 + src.shape[0], dst_y0 + ny)
    if x1 > x0 and y1 > y0:
        out[y0 - dst_y0:y1 - dst_y0, x0 - dst_x0:x1 - dst_x0] = src[y0 - src_y0:y1 - src_y0, x0 - src_x0:x1 - src_x0]
    return out


def box_of(x: float, y: float, size: int) -> tuple[int, int]:
    """Corner of the ``size`` box centred on the pixel holding (x, y) (pixel centres at integers)."""
    return math.floor(x + 0.5) - size // 2, math.floor(y + 0.5) - size // 2


# ------------------------------------------------------------------------------------------ the fitters
def piff_stars(image, mask, variance, xy0, x, y):
    """Piff StarData/Star per stamp as LSST's piffPsfDeterminer builds them (lsst-spec §4.7 step 4)."""
    import galsim
    import piff
    from visitcal.core.image import MaskPlanes

    planes = MaskPlanes()
    bad = 0
    for name in ZERO_WEIGHT_PLANES:
        bad |= 1 << planes[name]
    wcs = galsim.PixelScale(1.0)
    stars, kept = [], []
    for k in range(image.shape[0]):
        img = image[k].astype(np.float64)
        var = variance[k].astype(np.float64)
        good = (var != 0) & np.isfinite(var) & np.isfinite(img) & ((mask[k] & bad) == 0)
        if good.sum() / good.size < 0.5:
            continue
        _a, b = np.polyfit(img[good], var[good], 1)
        w = np.where(good, 1.0 / b, 0.0)
        f = float(np.sum(w * img * img))
        npix = float(good.sum())
        snr = (f - npix) / math.sqrt(f) if f > npix else 0.0
        if snr > MAX_SNR:
            w *= (MAX_SNR / snr) ** 2
        gimg = galsim.Image(np.where(good, img, 0.0), xmin=int(xy0[k, 0]), ymin=int(xy0[k, 1]), wcs=wcs)
        gw = galsim.Image(w, xmin=int(xy0[k, 0]), ymin=int(xy0[k, 1]), wcs=wcs)
        data = piff.StarData(gimg, galsim.PositionD(float(x[k]), float(y[k])), weight=gw,
                             properties={"starId": k})
        stars.append(piff.Star(data, None))
        kept.append(k)
    return stars, np.array(kept, np.int64)


def origin_check(stars, true_x, true_y) -> dict:
    """HSM centroid of each star's GalSim image vs the true position (parent frame, px)."""
    import galsim

    dx, dy = [], []
    for s, tx, ty in zip(stars, true_x, true_y):
        try:
            r = galsim.hsm.FindAdaptiveMom(s.image, weight=None, strict=True)
        except galsim.GalSimError:
            continue
        dx.append(r.moments_centroid.x - tx)
        dy.append(r.moments_centroid.y - ty)
    return {"n": len(dx), "median_dx": float(np.median(dx)), "median_dy": float(np.median(dy))}


def fit_piff(stars, *, model_size, sampling, order, solver):
    import galsim
    import piff

    model = piff.PixelGrid(scale=sampling, size=model_size, interp=galsim.Lanczos(11), centered=True)
    interp = piff.BasisPolynomial(order=[order, order], keys=("x", "y"), solver=solver)
    outliers = piff.ChisqOutliers(nsigma=4.0, max_remove=0.05)
    psf = piff.SimplePSF(model, interp, outliers=[outliers], max_iter=15)  # Piff 1.7 takes a list
    t0 = time.perf_counter()
    psf.fit(stars, wcs={0: galsim.PixelScale(1.0)}, pointing=None, logger=None)
    fit_s = time.perf_counter() - t0
    n_used = int(sum(1 for s in psf.stars if not s.is_flagged and not s.is_reserve))

    def render(x, y, x0, y0, nx, ny, cx=None, cy=None):
        im = galsim.ImageD(nx, ny, xmin=x0, ymin=y0, wcs=galsim.PixelScale(1.0))
        psf.draw(x=x, y=y, chipnum=0, image=im, center=None if cx is None else (cx, cy))
        return im.array.copy()

    return render, fit_s, n_used


def fit_ours(kind, cand, bbox, *, order, reserved=None, **cfg_kw):
    if kind == "pca":
        from visitcal.psf.pca import PcaPsfDeterminer as Det
        from visitcal.psf.pca import PcaPsfDeterminerConfig as Cfg
    else:
        from visitcal.psf.pixel_grid import PixelGridPsfDeterminer as Det
        from visitcal.psf.pixel_grid import PixelGridPsfDeterminerConfig as Cfg
    fields = getattr(Cfg, "model_fields", {})
    kw = {k: v for k, v in {"spatial_order": order, **cfg_kw}.items() if not fields or k in fields}
    det = Det(Cfg(**kw))
    t0 = time.perf_counter()
    res = det.determine_psf(cand, bbox, reserved=reserved)
    fit_s = time.perf_counter() - t0
    psf = res.psf

    def render(x, y, x0, y0, nx, ny, cx=None, cy=None):
        px, py = (x, y) if cx is None else (cx, cy)
        img = np.asarray(psf.compute_image(px, py), np.float64)
        b = psf.compute_image_bbox(px, py)
        return place(img, b.min_x, b.min_y, (ny, nx), x0, y0)

    return render, fit_s, int(np.sum(res.used)), kw


# ---------------------------------------------------------------------------------------------- metrics
def hsm(img):
    import galsim

    r = galsim.hsm.FindAdaptiveMom(galsim.ImageD(img), strict=True)
    return r.moments_sigma, r.observed_shape.e1, r.observed_shape.e2, r.moments_centroid.x, r.moments_centroid.y


def sim_metrics(models: np.ndarray, truth: np.ndarray) -> dict:
    rows = []
    for m, t in zip(models, truth):
        m = m / m.sum()
        sm, e1m, e2m, xm, ym = hsm(m)
        st, e1t, e2t, xt, yt = hsm(t)
        rows.append((sm / st - 1.0, e1m - e1t, e2m - e2t, np.abs(m - t).max() / t.max(), xm - xt, ym - yt))
    a = np.array(rows)
    rms = lambda v: float(np.sqrt(np.mean(v * v)))
    return {"size_err_mean": float(a[:, 0].mean()), "size_err_rms": rms(a[:, 0]),
            "e1_err_mean": float(a[:, 1].mean()), "e1_err_rms": rms(a[:, 1]),
            "e2_err_mean": float(a[:, 2].mean()), "e2_err_rms": rms(a[:, 2]),
            "worst_pixel_median": float(np.median(a[:, 3])), "worst_pixel_max": float(a[:, 3].max()),
            "centroid_dx_mean": float(a[:, 4].mean()), "centroid_dy_mean": float(a[:, 5].mean())}


def reserve_chi2(render, image, mask, variance, xy0, x, y, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Per reserved star: chi2/dof of the best flux + sub-pixel centre fit (module docstring)."""
    from scipy.optimize import least_squares

    size = 2 * half + 1
    chi2dof, ngood = [], []
    for k in range(image.shape[0]):
        s = image.shape[1] // 2
        cxp, cyp = int(xy0[k, 0]) + s, int(xy0[k, 1]) + s
        sl = slice(s - half, s + half + 1)
        d = image[k, sl, sl].astype(np.float64)
        v = variance[k, sl, sl].astype(np.float64)
        good = (mask[k, sl, sl] == 0) & (v > 0) & np.isfinite(d) & np.isfinite(v)
        w = np.where(good, 1.0 / np.where(v > 0, v, 1.0), 0.0)
        sw = np.sqrt(w)
        x0, y0 = cxp - half, cyp - half

        def resid(p, k=k, d=d, sw=sw, x0=x0, y0=y0):
            m = render(x[k], y[k], x0, y0, size, size, x[k] + p[1], y[k] + p[2])
            return (sw * (d - p[0] * m)).ravel()

        m0 = render(x[k], y[k], x0, y0, size, size, x[k], y[k])
        f0 = float(np.sum(w * d * m0) / max(np.sum(w * m0 * m0), 1e-300))
        sol = least_squares(resid, [f0, 0.0, 0.0], x_scale=[abs(f0) + 1.0, 0.1, 0.1], diff_step=1e-4,
                            bounds=([-np.inf, -1.0, -1.0], [np.inf, 1.0, 1.0]))
        n = int(good.sum())
        chi2dof.append(float(np.sum(sol.fun**2)) / (n - 3))
        ngood.append(n)
    return np.array(chi2dof), np.array(ngood)


def des_data(stamp_size=None):
    from visitcal.io.ldac import read_ldac
    from visitcal.psf.vignets import candidates_from_vignets

    header, table = read_ldac(DES_DIR / DES_CAT)
    cand = candidates_from_vignets(table, header, stamp_size=stamp_size or DES_STAMP)
    n = len(cand)
    pick = np.random.RandomState(DES_RESERVE_SEED).choice(n, round(DES_RESERVE_FRACTION * n), replace=False)
    reserved = np.zeros(n, bool)
    reserved[pick] = True
    return header, cand, reserved


# ----------------------------------------------------------------------------------------------- worker
def worker(fitter: str, case: str, out: Path) -> None:
    """One fit in this (fresh) process; writes its timing, memory and model images / reserve chi2 to ``out``."""
    from visitcal.core.geom import Box2I

    kind, _, arg = fitter.partition("-")  # piff-cpp, piff-scipy, ours-2, ours-4, pca-2
    result: dict = {"fitter": fitter, "case": case}
    arrays: dict = {}
    if case == "sim":
        from _psf_scene import EVAL_SIZE, candidates, psf_scene

        scene = psf_scene()
        bbox = Box2I(0, 0, int(scene["width"]) - 1, int(scene["height"]) - 1)
        cand = candidates(scene)
        rss0 = rss_mb()
        if kind == "piff":
            img, off = centre_cut(cand.image, 25)
            msk, _ = centre_cut(cand.mask, 25)
            var, _ = centre_cut(cand.variance, 25)
            stars, kept = piff_stars(img, msk, var, cand.xy0 + off, cand.table["x"], cand.table["y"])
            result["origin_check"] = origin_check(stars, scene["cand_true_x"][kept], scene["cand_true_y"][kept])
            rss0 = rss_mb()
            render, fit_s, n_used = fit_piff(stars, model_size=25, sampling=1.0, order=2, solver=arg)
            result["n_input"] = len(stars)
        else:
            order = int(arg)
            render, fit_s, n_used, kw = fit_ours(kind, cand, bbox, order=order)
            result["config"] = kw
            result["n_input"] = len(cand)
        models = []
        for x, y in scene["eval_xy"]:
            x0, y0 = box_of(x, y, EVAL_SIZE)
            models.append(render(float(x), float(y), x0, y0, EVAL_SIZE, EVAL_SIZE))
        arrays["models"] = np.array(models)
    else:
        header, cand, reserved = des_data()
        bbox = Box2I(0, 0, int(header["NAXIS1"]) - 1, int(header["NAXIS2"]) - 1)
        fit = ~reserved
        rss0 = rss_mb()
        if kind == "piff":
            stars, kept = piff_stars(cand.image[fit], cand.mask[fit], cand.variance[fit], cand.xy0[fit],
                                     cand.table["x"][fit], cand.table["y"][fit])
            rss0 = rss_mb()
            render, fit_s, n_used = fit_piff(stars, model_size=DES_MODEL, sampling=DES_SAMPLING, order=2, solver=arg)
            result["n_input"] = len(stars)
        else:
            order = int(arg.rstrip("s"))
            smooth = {}
            if arg.endswith("s"):
                # The smoothness prior, its weight chosen by 5-fold cross-validation on the fitting stars
                # only (the reserve takes no part), timed apart from the fit.
                from visitcal.psf.pixel_grid import PixelGridPsfDeterminer, PixelGridPsfDeterminerConfig

                det = PixelGridPsfDeterminer(PixelGridPsfDeterminerConfig(
                    spatial_order=order, model_size=DES_MODEL, sampling_size=DES_SAMPLING, stamp_size=DES_STAMP))
                t0 = time.perf_counter()
                best, table = det.cross_validate_smoothness(cand, bbox, values=DES_SMOOTHNESS_GRID, reserved=reserved)
                result["cv_s"] = time.perf_counter() - t0
                result["cv_table"] = {c: [float(v) for v in table[c]] for c in table.colnames}
                smooth = {"smoothness": best}
            # The PCA needs stamps of kernel_size + 2 (27) so a star a pixel off the vignet centre keeps its
            # kernel inside (at 25 px it lost 12-14 stars as bad_centroid); same rows, same reserve.
            fit_cand = des_data(DES_STAMP + 2)[1] if kind == "pca" else cand
            render, fit_s, n_used, kw = fit_ours(kind, fit_cand, bbox, order=order, reserved=reserved,
                                                 model_size=DES_MODEL, sampling_size=DES_SAMPLING,
                                                 stamp_size=DES_STAMP, **smooth)
            result["config"] = kw
            result["n_input"] = int(fit.sum())
        half = math.ceil(0.5 * DES_MODEL * DES_SAMPLING)
        r = reserved
        chi2, ngood = reserve_chi2(render, cand.image[r], cand.mask[r], cand.variance[r], cand.xy0[r],
                                   cand.table["x"][r], cand.table["y"][r], half)
        arrays["reserve_chi2dof"] = chi2
        arrays["reserve_ngood"] = ngood
        result["box"] = 2 * half + 1
    result.update({"fit_s": fit_s, "n_used": n_used, "rss_before_fit_mb": rss0, "peak_rss_mb": peak_rss_mb()})
    np.savez(out, result=json.dumps(result), **arrays)


def run_worker(fitter: str, case: str, cpu: int | None, tmp: Path) -> dict | None:
    out = tmp / f"{case}_{fitter}.npz"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", fitter, "--case", case, "--out", str(out),
           "--cpu", str(-1 if cpu is None else cpu)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        if proc.returncode < 0:
            import signal

            why = f"killed by {signal.Signals(-proc.returncode).name}"
        else:
            why = ((proc.stderr or proc.stdout).strip().splitlines() or ["?"])[-1]
        print(f"  {case} {fitter}: failed after {time.perf_counter() - t0:.0f} s ({why})", flush=True)
        return {"fitter": fitter, "case": case, "error": why}
    with np.load(out) as z:
        res = json.loads(str(z["result"]))
        res["arrays"] = {k: z[k] for k in z.files if k != "result"}
    print(f"  {case} {fitter}: fit {res['fit_s']:.3f} s, peak RSS {res['peak_rss_mb']:.0f} MB "
          f"(process wall {time.perf_counter() - t0:.1f} s)", flush=True)
    return res


def available(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


# ------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-piff", action="store_true", help="run only visitcal's determiners")
    parser.add_argument("--piff-solver", choices=("cpp", "scipy", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="Piff cpp only, and Piff only on the sim scene")
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _common.pin_one_core(args.cpu)
        worker(args.worker, args.case, Path(args.out))
        return

    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("PSF modelling: visitcal vs Piff 1.7 (each fit in its own process, one core)", cpu)
    from _psf_scene import psf_scene

    t0 = time.perf_counter()
    scene = psf_scene()
    print(f"sim scene: {int(scene['star_matched'].sum())} of {len(scene['star_x'])} stars detected and matched, "
          f"{len(scene['cand_x'])} candidates, PSF sigma {scene['psf_sigma']:.3f} px ({time.perf_counter() - t0:.1f} s)")

    solvers = ["cpp"] if args.quick else (["cpp", "scipy"] if args.piff_solver == "both" else [args.piff_solver])
    ours = []
    if available("visitcal.psf.pixel_grid"):
        ours += ["ours-2", "ours-4"]
    else:
        print("visitcal.psf.pixel_grid is not available: our pixel-grid determiner skipped")
    if available("visitcal.psf.pca"):
        ours += ["pca-2"]
    else:
        print("visitcal.psf.pca is not available: the PCA determiner skipped")
    piff_fitters = [] if args.skip_piff else [f"piff-{s}" for s in solvers]
    labels = {"piff-cpp": "Piff 1.7 (cpp solver)", "piff-scipy": "Piff 1.7 (scipy solver)",
              "ours-2": "visitcal pixel grid", "ours-4": "visitcal pixel grid", "pca-2": "visitcal PCA",
              "ours-2s": "visitcal pixel grid + smoothness prior (5-fold CV)"}

    payload: dict = {"sim": {}, "des": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ---- sim
        print("sim fits:")
        sim = {f: run_worker(f, "sim", cpu, tmp) for f in piff_fitters + ours}
        rows = []
        ref = sim.get("piff-cpp")
        for f, r in sim.items():
            if r is None or "error" in r:
                rows.append([labels[f], None, None, None, None, None, None, None, None, None, None, None, "failed"])
                payload["sim"][f] = r
                continue
            m = sim_metrics(r["arrays"]["models"], scene["truth"])
            order = 2 if f.startswith("piff") else int(f.split("-")[1])
            speed = (f"{ref['fit_s'] / r['fit_s']:.0f}x" if ref and "error" not in ref and not f.startswith("piff")
                     else "")
            rows.append([labels[f], order, r["fit_s"], r["peak_rss_mb"], r["peak_rss_mb"] - r["rss_before_fit_mb"],
                         f"{r['n_used']}/{r['n_input']}", m["size_err_rms"], m["e1_err_mean"], m["e1_err_rms"],
                         m["e2_err_mean"], m["e2_err_rms"], m["worst_pixel_median"], speed])
            payload["sim"][f] = {k: v for k, v in r.items() if k != "arrays"} | {"metrics": m, "order": order}
            if "origin_check" in r:
                oc = r["origin_check"]
                print(f"  {f} origin check: HSM centroid of the Piff star images - true position, median "
                      f"({oc['median_dx']:+.4f}, {oc['median_dy']:+.4f}) px over {oc['n']} stars")
            print(f"  {f}: model - truth centroid at the 50 positions, mean ({m['centroid_dx_mean']:+.4f}, "
                  f"{m['centroid_dy_mean']:+.4f}) px; worst pixel max {m['worst_pixel_max']:.4f}")
        print()
        print(f"Sim: {len(scene['cand_x'])} candidates of a 4072 x 4000 detector; accuracy vs GalSim truth at "
              f"50 positions (25 x 25 unit-sum stamps)")
        print(_common.format_table(
            ["fitter", "order", "fit s", "peak RSS MB", "fit +RSS MB", "stars used", "size err rms", "e1 err mean",
             "e1 err rms", "e2 err mean", "e2 err rms", "worst pix / peak (median)", "faster than Piff cpp"],
            rows, floatfmt=".3g"))

        # ---- DES
        print()
        if not (DES_DIR / DES_CAT).is_file():
            print(f"DES: {DES_DIR} not found (expected <repo>/../shared/realdata): skipped")
        else:
            print("DES fits:")
            des_fitters = ([] if args.quick else piff_fitters) + [f for f in ours if f != "ours-4"]
            if "ours-2" in des_fitters:
                des_fitters.insert(des_fitters.index("ours-2") + 1, "ours-2s")
            des = {f: run_worker(f, "des", cpu, tmp) for f in des_fitters}
            from astropy.table import Table

            psfex = Table.read(DES_DIR / DES_PSFEX, hdu="LDAC_OBJECTS")
            psfex_chi2 = np.asarray(psfex["CHI2_PSF"], np.float64)
            rows = []
            for f, r in des.items():
                if r is None or "error" in r:
                    rows.append([labels[f], None, None, None, None, None, None, "failed"])
                    payload["des"][f] = r
                    continue
                c = r["arrays"]["reserve_chi2dof"]
                rows.append([labels[f], r["fit_s"], r["peak_rss_mb"], r["peak_rss_mb"] - r["rss_before_fit_mb"],
                             f"{r['n_used']}/{r['n_input']}", float(np.median(c)), float(np.mean(c)), len(c)])
                if "cv_s" in r:
                    t = r["cv_table"]
                    print(f"  {f}: smoothness {r['config']['smoothness']:g} chosen by cross-validation in "
                          f"{r['cv_s']:.1f} s (held-out median chi2/dof " +
                          ", ".join(f"{v:g}: {m:.3f}" for v, m in zip(t["smoothness"], t["median_chi2dof"])) + ")")
                payload["des"][f] = {k: v for k, v in r.items() if k != "arrays"} | {
                    "reserve_chi2dof": c.tolist(), "reserve_chi2dof_median": float(np.median(c)),
                    "reserve_ngood": r["arrays"]["reserve_ngood"].tolist()}
            rows.append(["PSFEx (DESDM run, its own CHI2_PSF of the kept stars)", None, None, None,
                         f"{len(psfex)}/117", float(np.median(psfex_chi2)), float(np.mean(psfex_chi2)), ""])
            payload["des"]["psfex"] = {"n_kept": len(psfex), "chi2_median": float(np.median(psfex_chi2)),
                                       "chi2_mean": float(np.mean(psfex_chi2))}
            n_res = round(DES_RESERVE_FRACTION * 117)
            print()
            print(f"DES Y1 (117 real DECam stars, {n_res} reserved, seed {DES_RESERVE_SEED}): grid {DES_MODEL} at "
                  f"{DES_SAMPLING:.4f} px (0.15\"), order 2, {DES_STAMP} px stamps; reserve chi2/dof over the "
                  f"{2 * math.ceil(0.5 * DES_MODEL * DES_SAMPLING) + 1}^2 box, flux + centre fitted")
            print(_common.format_table(["fitter", "fit s", "peak RSS MB", "fit +RSS MB", "stars used",
                                        "reserve chi2/dof median", "mean", "n reserve"], rows, floatfmt=".3g"))
    payload["settings"] = {"des_reserve_seed": DES_RESERVE_SEED, "des_stamp": DES_STAMP, "des_model": DES_MODEL,
                           "des_sampling": DES_SAMPLING, "quick": args.quick, "piff_solvers": solvers,
                           "skip_piff": args.skip_piff}
    print(f"wrote {_common.write_json('psf', payload)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
