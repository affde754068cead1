"""Right by default (issue 21): the whole chain with its DEFAULT configuration over a matrix of simulated
repositories, every detector against the simulator's truth, one table per metric.

Each row is a `visitcal.sim` repository (simulated once, cached in ``bench/results/matrix/<row>/sim``; a cache
whose SimConfig differs from the row's is re-simulated). For each row the simulation is cloned into
``bench/results/matrix/<row>/work`` (``repo.json``, ``camera.json`` and ``refcat.parquet`` copied, the read-only
``post_isr_image/`` and ``truth/`` symlinked, as ``tests/sim/test_calibrate_sim.clone`` does) and
``run_chain(work, jobs=J)`` runs calibrate -> associate -> finalize -> visit summaries -> reprocess with
``RunConfig()``: no preset, no option, what a user of ``visitcal run REPO`` gets. Then per detector:

- **status**: each step's status (ok / degraded / failed, with the error type) for the detector (calibrate,
  finalize and reprocess are recorded per detector, the visit summary per visit, associate per tract); the final
  status is reprocess's (``failed`` when reprocess never ran on it), and the first step that did not end ok;
- **astrometry**: on-sky distance (mas) between the fitted WCS and ``true_wcs`` on a 21 x 21 grid spanning the
  detector's whole bounding box (corners included), rms and max, for ``preliminary_visit_image`` (calibrate) and
  the final ``visit_image`` (the visit summary's WCS); beside it what the fit's own noise allows, ~ r sqrt(4 / (n - 4))
  from calibrate's ``SFM_ASTROM_NSTARS`` n and residual rms ``SFM_ASTROM_RMS`` r (a 4-parameter correction; approximate);
- **zero point**: ``2.5 log10(instflux_at_zero_magnitude)`` of the fitted PhotoCalib minus the truth, mmag, with
  the convention of ``visitcal.qa.truth.true_zero_point``: calibrate calibrates ``slot_CalibFlux`` (normalised to
  the 12-px circular aperture), so the true zero point is that of ``true_photo_calib`` (total flux, nJy/ADU of the
  snap sum) plus 2.5 log10 of the true PSF's encircled energy within 12 px at the detector's centre. Positive:
  calibrated fluxes too low by that much (the sign of the photometry's dm below). For ``preliminary_visit_image``
  (calibrate's) and the visit summary's PhotoCalib (what reprocess applies; the final ``visit_image`` itself carries
  the identity). The simulated reference catalog has noise of its own (0.5% per star and the survey's depth), which
  no pipeline can remove: ``zp_reference_noise_mmag`` is the shift it makes on the stars calibrate's PhotoCal used
  (`zp_reference_noise_mmag`), and ``zp_own_mmag`` calibrate's error less that, the pipeline's own;
- **PSF**: the refit PSF (``refit_psf_models``) at the reserved stars (``refit_psf_star``,
  ``calib_psf_reserved``) against ``true_psf``: fractional error of the determinant radius (Ixx Iyy - Ixy^2)^1/4
  (rms, and mean), mean e1 and e2 errors (distortions), as ``bench_finalize_accuracy.py`` and
  ``tests/sim/test_finalize_accuracy_slow.py`` compute them (``visitcal.qa.truth.psf_errors``), with the number of
  reserved stars;
- **photometry**: the final ``source`` table's calibrated ``base_PsfFlux_flux`` (nJy) of the true unsaturated
  stars matched within 1 px, S/N > 50, primary, unblended (``deblend_nChild == 0``, ``parent == 0``) and isolated
  by the truth (the PSF-overlap-weighted light of every other true object under 1e-3 of the star's:
  ``visitcal.qa.truth.matched_stars``): median and mean of -2.5 log10(measured / true), mmag;
  for S/N > 300 the pulls (measured - true) / fluxErr: robust width (1.4826 MAD) and median. Pooled over a row,
  also the median of dm less each detector's final zero-point error (the measurement's own bias) with its standard
  error (1.2533 x the robust width / sqrt(n)).

The truth comparisons are those of ``visitcal qa --truth`` (`visitcal.qa.truth`): one implementation.

A failed chain is data: a product that is missing gives NaN (the reason is kept in the JSON), the status table
counts the failures. Row summaries pool the stars of all the row's detectors (PSF, photometry) or give the median
and worst detector (astrometry, zero point).

    PYTHONPATH=python python bench/bench_matrix.py                       # the whole matrix: ~7 min on 2 shared
                                                                         # cores with the sims cached, ~17 cold
    PYTHONPATH=python python bench/bench_matrix.py --rows default,crowded --per-detector
    PYTHONPATH=python python bench/bench_matrix.py --reuse-processed     # analyse the kept work dirs again
    PYTHONPATH=python python bench/bench_matrix.py --list                # the rows and their SimConfigs
    PYTHONPATH=python python bench/bench_matrix.py --rows default --seed 2 --config old_cuts.json
                                                # another scene (SimConfig.seed 2), a RunConfig other than the default

``--seed S`` simulates each row with ``SimConfig.seed = S`` instead of 1 (cached in ``<row>/sim_seed<S>``, worked in
``<row>/work_seed<S>``): the spread between seeds is the noise a configuration change must beat. ``--config FILE``
lays a JSON RunConfig over the defaults, as ``visitcal run --config`` does (only the fields it changes, at any
depth); the default is ``RunConfig()``.

-> ``bench/results/matrix.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
import traceback
from collections import Counter

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np

# the truth comparisons: visitcal qa --truth computes the same figures with the same functions
from visitcal.qa.metrics import robust_sigma
from visitcal.qa.truth import (GRID, SNR_PHOT, SNR_PULL, photometry, psf_errors, true_zero_point, wcs_vs_truth,
                               zp_offset_mmag, zp_reference_noise_mmag)

MATRIX_DIR = _common.RESULTS_DIR / "matrix"
PSF_MIN_STARS = 100  # the PSF targets apply where at least this many reserved stars

#: name -> (SimConfig fields over SimConfig()'s defaults, description). Seeds: SimConfig's default (1).
ROWS: dict[str, tuple[dict, str]] = {
    "default": ({}, "`visitcal sim` defaults: small 2048^2, 2 visits x 4 detectors, r, 6000 stars/deg^2"),
    "lsst": (dict(preset="lsst", n_detectors=2), "preset lsst (4072 x 4000), 2 visits x 2 detectors, r, 6000/deg^2"),
    "u_sparse": (dict(band="u"), "band u, small, 2 visits x 4 detectors, 6000 stars/deg^2"),
    # 4 detectors, not 2: with 2 the row has ~55 reserved stars, under the 100 the PSF targets need
    "crowded": (dict(star_density=150000.0), "small, 2 visits x 4 detectors, r, 150000 stars/deg^2"),
    "seeing_0.5": (dict(n_detectors=2, seeing_fwhm_range=(0.5, 0.55)),
                   "small, 2 x 2, r, 6000/deg^2, atmospheric FWHM 0.5-0.55\""),
    "seeing_1.2": (dict(n_detectors=2, seeing_fwhm_range=(1.15, 1.2)),
                   "small, 2 x 2, r, 6000/deg^2, atmospheric FWHM 1.15-1.2\""),
    # the seeing extremes on LSST-size detectors too: 4x the stars of a small one, so the zero point and the
    # photometry are not limited by a dozen calibration stars (the rows above are, as `default`)
    "seeing_0.5_lsst": (dict(preset="lsst", n_detectors=2, seeing_fwhm_range=(0.5, 0.55)),
                        "preset lsst, 2 x 2, r, 6000/deg^2, atmospheric FWHM 0.5-0.55\""),
    "seeing_1.2_lsst": (dict(preset="lsst", n_detectors=2, seeing_fwhm_range=(1.15, 1.2)),
                        "preset lsst, 2 x 2, r, 6000/deg^2, atmospheric FWHM 1.15-1.2\""),
}

TARGETS = {"astrometry_rms_mas": 5.0, "zero_point_mmag": 2.0, "psf_size_rms": 1e-3, "psf_mean_e": 5e-4,
           "phot_bias_mmag": 1.0, "pull_width_tolerance": 0.10}


def sim_config(name: str, seed: int | None = None):
    """The row's SimConfig; ``seed``: SimConfig.seed instead of its default (1)."""
    from visitcal.sim import SimConfig

    return SimConfig(**ROWS[name][0], **({} if seed is None else {"seed": seed}))


def _suffix(seed: int | None) -> str:
    return "" if seed is None else f"_seed{seed}"


# --- repositories -----------------------------------------------------------------------------------------------

def cached_sim(name: str, *, resimulate: bool = False, seed: int | None = None):
    """The row's simulated repository, simulated when absent or of another SimConfig. Returns (path, seconds)."""
    from visitcal.sim import SimRepository, simulate

    cfg = sim_config(name, seed)
    path = MATRIX_DIR / name / ("sim" + _suffix(seed))
    if not resimulate and (path / "repo.json").is_file():
        try:
            if SimRepository(path).config == cfg:
                return path, 0.0
        except (OSError, ValueError):
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"[{name}] simulating {cfg.n_visits} x {cfg.n_detectors} {cfg.preset} detectors into {path} ...", flush=True)
    simulate(cfg, path, overwrite=True)
    return path, time.perf_counter() - t0


def clone(sim_path, work):
    """A work repository sharing the simulation's images and truth (symlinks) with its own outputs."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("repo.json", "camera.json", "refcat.parquet"):
        shutil.copy(sim_path / name, work / name)
    for name in ("truth", "post_isr_image"):
        (work / name).symlink_to((sim_path / name).resolve())
    return work


# --- statuses ---------------------------------------------------------------------------------------------------

def _label(st) -> str:
    if st is None:
        return "not run"
    return f"{st.status} ({st.error_type})" if st.error_type else st.status  # "degraded" may carry a type too


def detector_statuses(repo, v: int, d: int, chain) -> dict:
    """Each step's status for (v, d), the final status and the first step that did not end ok."""
    steps = {}
    for step in ("calibrate", "finalize", "reprocess"):
        st = None
        if chain is not None:
            st = next((s for s in chain.statuses.get(step, []) if s.visit == v and s.detector == d), None)
        if st is None:
            st = repo.read_status(step, v, d)
        steps[step] = st
    vs = None
    if chain is not None:
        vs = next((s for s in chain.statuses.get("visit_summary", []) if getattr(s, "visit", None) == v), None)
    steps["visit_summary"] = vs if vs is not None else repo.read_visit_status("visit_summary", v)
    order = ("calibrate", "finalize", "visit_summary", "reprocess")
    first = next(((k, steps[k]) for k in order if steps[k] is None or steps[k].status != "ok"), None)
    final = steps["reprocess"].status if steps["reprocess"] is not None else "failed"
    out = {"steps": {k: _label(steps[k]) for k in order}, "final": final}
    if first is not None:
        k, st = first
        out["first_not_ok"] = {"step": k, "status": "not run" if st is None else st.status,
                               "error_type": None if st is None else st.error_type,
                               "message": None if st is None else (st.message or "")[:300]}
    return out


# --- metrics against the truth (visitcal.qa.truth) ----------------------------------------------------------------

def _stat(fn, a):
    a = np.asarray(a, float)
    return float(fn(a)) if a.size else math.nan


def analyse_detector(work, repo, sim, v, d, chain) -> tuple[dict, dict]:
    """Per-detector figures (JSON-able) and the raw arrays for the row's pooled statistics."""
    from visitcal.io import read_catalog, read_exposure
    from visitcal.pipeline.visit_summary_step import visit_summary_path
    from visitcal.tasks.update_visit_summary import calibrations_for, read_visit_summary

    out = {"visit": v, "detector": d, "errors": {}}
    raw = {"psf": np.zeros((0, 3)), "psf_nonfinite": 0, "dm": np.zeros(0), "dm_own": np.zeros(0), "pull": np.zeros(0),
           "snr": np.zeros(0)}
    out.update(detector_statuses(repo, v, d, chain))
    bbox = sim.camera[d].detector.bbox
    true_wcs = sim.true_wcs(v, d)

    def attempt(key, fn):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - a missing or broken product is data
            out["errors"][key] = f"{type(err).__name__}: {err}"[:300]
            return None

    tzp = attempt("true_zero_point", lambda: true_zero_point(sim, v, d, bbox))
    out["true_psf_fwhm_arcsec"] = attempt("true_psf", lambda: 2.3548 * 0.2 * sim.true_psf(v, d).compute_shape(
        *bbox.center).determinant_radius)

    prelim = attempt("preliminary_visit_image", lambda: read_exposure(
        repo.dataset_path("preliminary_visit_image", v, d, "fits")))
    out["astrometry_preliminary"] = attempt("astrometry_preliminary", lambda: wcs_vs_truth(prelim.wcs, true_wcs, bbox)
                                            ) if prelim is not None else None
    out["zp_preliminary_mmag"] = attempt("zp_preliminary", lambda: zp_offset_mmag(prelim.photo_calib, tzp)) \
        if prelim is not None and tzp is not None else None
    if prelim is not None:  # the fit's own account: matches used and residual rms (calibrate's metadata)
        md = prelim.metadata
        for key, name, scale in (("astrom_nstars", "SFM_ASTROM_NSTARS", None), ("astrom_fit_rms_mas", "SFM_ASTROM_RMS",
                                                                                 1000.0)):
            value = md.get(name, md.get("HIERARCH " + name)) if md is not None else None
            out[key] = None if value is None else (int(value) if scale is None else scale * float(value))
        n_a, r_a = out.get("astrom_nstars"), out.get("astrom_fit_rms_mas")
        # what the fit's own noise allows: a 4-parameter correction from n stars of residual rms r predicts the
        # positions to ~ r sqrt(4 / (n - 4)) rms where its stars are (approximate: weights and the detector's
        # corners, away from the stars, are ignored)
        out["astrometry_expected_mas"] = r_a * math.sqrt(4.0 / (n_a - 4)) if n_a and r_a is not None and n_a > 4 \
            else None
    out["zp_reference_noise_mmag"] = attempt("zp_reference_noise", lambda: zp_reference_noise_mmag(repo, sim, v, d)) \
        if prelim is not None else None
    if out["zp_preliminary_mmag"] is not None and out["zp_reference_noise_mmag"] is not None:
        out["zp_own_mmag"] = out["zp_preliminary_mmag"] - out["zp_reference_noise_mmag"]
    del prelim

    final = attempt("visit_image", lambda: read_exposure(repo.dataset_path("visit_image", v, d, "fits")))
    out["astrometry_final"] = attempt("astrometry_final", lambda: wcs_vs_truth(final.wcs, true_wcs, bbox)) \
        if final is not None else None
    del final
    cal = attempt("visit_summary", lambda: calibrations_for(read_visit_summary(visit_summary_path(repo, v)), d))
    out["zp_final_mmag"] = attempt("zp_final", lambda: zp_offset_mmag(cal.photo_calib, tzp)) \
        if cal is not None and tzp is not None else None

    err = attempt("psf", lambda: psf_errors(work, sim, v, d))
    if err is not None:
        finite = np.all(np.isfinite(err), axis=1)  # a model whose adaptive moments fail gives NaN: counted apart
        raw["psf"], raw["psf_nonfinite"] = err[finite], int((~finite).sum())
        err = err[finite]
        out["psf"] = {"n_reserved": len(err), "n_nonfinite": raw["psf_nonfinite"],
                      "size_rms": _stat(lambda a: np.sqrt(np.mean(a**2)), err[:, 0]),
                      "size_mean": _stat(np.mean, err[:, 0]), "e1_mean": _stat(np.mean, err[:, 1]),
                      "e2_mean": _stat(np.mean, err[:, 2])}
    source = attempt("source", lambda: read_catalog(repo.dataset_path("source", v, d, "parquet")))
    ph = attempt("photometry", lambda: photometry(source, sim, v, d)) if source is not None else None
    if ph is not None:
        raw["dm"], raw["pull"], raw["snr"] = ph["dm_mmag"], ph["pull"], ph["snr"]
        # the measurement's own error: dm less the detector's zero-point error (both with the same sign)
        raw["dm_own"] = ph["dm_mmag"] - (out["zp_final_mmag"] if out.get("zp_final_mmag") is not None else math.nan)
        bright = ph["snr"] > SNR_PULL
        out["photometry"] = {"n": int(ph["dm_mmag"].size), "dm_median_mmag": _stat(np.median, ph["dm_mmag"]),
                             "dm_mean_mmag": _stat(np.mean, ph["dm_mmag"]), "n_snr300": int(bright.sum()),
                             "pull_width_snr300": robust_sigma(ph["pull"][bright]),
                             "pull_median_snr300": _stat(np.median, ph["pull"][bright])}
    return out, raw


# --- a row ------------------------------------------------------------------------------------------------------

def run_row(name: str, args) -> dict:
    from visitcal.pipeline.chain import run_chain
    from visitcal.pipeline.repository import Repository
    from visitcal.sim import SimRepository

    row = {"row": name, "description": ROWS[name][1],
           "sim_config": sim_config(name, args.seed).model_dump(mode="json")}
    sim_path, row["simulate_s"] = cached_sim(name, resimulate=args.resimulate, seed=args.seed)
    work = MATRIX_DIR / name / ("work" + _suffix(args.seed))
    chain = None
    if args.reuse_processed and (work / "repo.json").is_file():
        print(f"[{name}] analysing the products already in {work}", flush=True)
    else:
        clone(sim_path, work)
        print(f"[{name}] run_chain(jobs={args.jobs}) with {args.config_name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            chain = run_chain(work, jobs=args.jobs, config=args.run_config)
            row["chain_seconds"] = {k: round(s, 1) for k, s in chain.seconds.items()}
            row["associate"] = [_label(s) for s in chain.statuses.get("associate", [])]
        except Exception as err:  # noqa: BLE001 - the chain itself breaking is data too
            row["chain_error"] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        row["chain_s"] = time.perf_counter() - t0
        print(f"[{name}] chain {row['chain_s']:.0f} s", flush=True)
    repo, sim = Repository(work), SimRepository(sim_path)
    if chain is None:  # analysing kept products: the recorded statuses
        row["associate"] = [_label(repo.read_tract_status("associate", int(p.stem)))
                            for p in sorted((work / "provenance" / "associate").glob("*.json"))]
    t0 = time.perf_counter()
    dets, raws = [], []
    for v, d in repo.data_ids():
        det, raw = analyse_detector(work, repo, sim, v, d, chain)
        dets.append(det)
        raws.append(raw)
    row["analysis_s"] = time.perf_counter() - t0
    row["detectors"] = dets
    row["summary"] = summarise(dets, raws)
    if not args.keep_processed:
        shutil.rmtree(work, ignore_errors=True)
    return row


def summarise(dets: list[dict], raws: list[dict]) -> dict:
    s: dict = {"n_detectors": len(dets)}
    finals = Counter(d["final"] for d in dets)
    s["final"] = {k: finals.get(k, 0) for k in ("ok", "degraded", "failed")}
    s["final"].update({k: n for k, n in finals.items() if k not in s["final"]})
    first = Counter(f"{d['first_not_ok']['step']}:{d['first_not_ok']['error_type'] or d['first_not_ok']['status']}"
                    for d in dets if "first_not_ok" in d)
    s["first_not_ok"] = dict(first)
    expected = [d["astrometry_expected_mas"] for d in dets if d.get("astrometry_expected_mas") is not None]
    s["astrometry_expected_mas"] = {"n": len(expected), "median": _stat(np.median, expected),
                                    "worst": _stat(np.max, expected)}
    for key in ("astrometry_preliminary", "astrometry_final"):
        rms = [d[key]["rms_mas"] for d in dets if d.get(key)]
        mx = [d[key]["max_mas"] for d in dets if d.get(key)]
        s[key] = {"n": len(rms), "rms_median": _stat(np.median, rms), "rms_worst": _stat(np.max, rms),
                  "max_worst": _stat(np.max, mx)}
    for key in ("zp_preliminary_mmag", "zp_final_mmag", "zp_reference_noise_mmag", "zp_own_mmag"):
        z = [d[key] for d in dets if d.get(key) is not None]
        worst = z[int(np.argmax(np.abs(z)))] if z else math.nan
        s[key] = {"n": len(z), "median": _stat(np.median, z), "worst": float(worst),
                  "rms": _stat(lambda a: np.sqrt(np.mean(a**2)), z)}
    psf = np.concatenate([r["psf"] for r in raws]) if raws else np.zeros((0, 3))
    sizes = [d["psf"]["size_rms"] for d in dets if d.get("psf") and d["psf"]["n_reserved"]]
    s["psf"] = {"n_detectors": sum(1 for d in dets if d.get("psf")), "n_reserved": len(psf),
                "n_nonfinite": sum(r["psf_nonfinite"] for r in raws),
                "size_rms": _stat(lambda a: np.sqrt(np.mean(a**2)), psf[:, 0]), "size_mean": _stat(np.mean, psf[:, 0]),
                "e1_mean": _stat(np.mean, psf[:, 1]), "e2_mean": _stat(np.mean, psf[:, 2]),
                "size_rms_worst_detector": _stat(np.max, sizes)}
    dm = np.concatenate([r["dm"] for r in raws]) if raws else np.zeros(0)
    pull = np.concatenate([r["pull"] for r in raws]) if raws else np.zeros(0)
    snr = np.concatenate([r["snr"] for r in raws]) if raws else np.zeros(0)
    own = np.concatenate([r["dm_own"] for r in raws]) if raws else np.zeros(0)
    own = own[np.isfinite(own)]
    per_det = [d["photometry"]["dm_median_mmag"] for d in dets if d.get("photometry") and d["photometry"]["n"]]
    bright = snr > SNR_PULL
    s["photometry"] = {"n_detectors": sum(1 for d in dets if d.get("photometry")), "n": int(dm.size),
                       "dm_median_mmag": _stat(np.median, dm), "dm_mean_mmag": _stat(np.mean, dm),
                       "dm_median_worst_detector": float(per_det[int(np.argmax(np.abs(per_det)))]) if per_det
                       else math.nan,
                       # the median of dm less each detector's zero-point error, and its standard error
                       "dm_own_median_mmag": _stat(np.median, own),
                       "dm_own_median_err_mmag": 1.2533 * robust_sigma(own) / math.sqrt(own.size) if own.size
                       else math.nan,
                       "n_snr300": int(bright.sum()), "pull_width_snr300": robust_sigma(pull[bright]),
                       "pull_median_snr300": _stat(np.median, pull[bright])}
    fwhm = [d["true_psf_fwhm_arcsec"] for d in dets if d.get("true_psf_fwhm_arcsec")]
    s["true_psf_fwhm_arcsec"] = [_stat(np.min, fwhm), _stat(np.max, fwhm)]
    return s


# --- tables -----------------------------------------------------------------------------------------------------

def tables(rows: list[dict], per_detector: bool = False) -> str:
    fmt = _common.format_table
    out = []
    out.append("Rows\n" + fmt(["row", "definition", "true PSF FWHM (\")", "simulate s", "chain s", "analysis s"], [
        [r["row"], r["description"], "{:.2f}-{:.2f}".format(*r["summary"]["true_psf_fwhm_arcsec"]),
         round(r.get("simulate_s", 0.0)), round(r["chain_s"]) if "chain_s" in r else None, round(r["analysis_s"])]
        for r in rows]))
    out.append("Status (final = reprocess's; first step not ok: step:error type x detectors)\n" + fmt(
        ["row", "detectors", "ok", "degraded", "failed", "first step not ok", "associate (tracts)", "chain error"], [
            [r["row"], r["summary"]["n_detectors"], r["summary"]["final"]["ok"], r["summary"]["final"]["degraded"],
             r["summary"]["final"]["failed"],
             ", ".join(f"{k} x{n}" for k, n in r["summary"]["first_not_ok"].items()) or "-",
             ", ".join(f"{k} x{n}" for k, n in Counter(r.get("associate", [])).items()) or "-",
             r.get("chain_error", "-")[:60]] for r in rows]))
    hdr = ["row", "n", "calibrate rms median", "rms worst", "max worst", "final n", "final rms median", "rms worst",
           "max worst", "fit's expected rms median", "worst"]
    out.append(f"Astrometry: WCS vs true WCS on a {GRID}x{GRID} grid over the whole detector, mas (target <= 5 rms)\n"
               + fmt(hdr, [[r["row"], *_vals(r["summary"]["astrometry_preliminary"], "n", "rms_median", "rms_worst",
                                            "max_worst"),
                            *_vals(r["summary"]["astrometry_final"], "n", "rms_median", "rms_worst", "max_worst"),
                            *_vals(r["summary"]["astrometry_expected_mas"], "median", "worst")]
                           for r in rows], floatfmt=".3g"))
    out.append("Zero point: fitted - true (slot_CalibFlux = 12-px aperture convention), mmag (target |.| <= 2)\n" + fmt(
        ["row", "n", "calibrate median", "worst", "rms", "final n", "final median", "worst", "rms"],
        [[r["row"], *_vals(r["summary"]["zp_preliminary_mmag"], "n", "median", "worst", "rms"),
          *_vals(r["summary"]["zp_final_mmag"], "n", "median", "worst", "rms")] for r in rows], floatfmt=".3g"))
    out.append("Zero point, the pipeline's own error: calibrate's error less the shift the reference catalog's own "
               "noise (0.5% per star and the survey depth) makes on the stars it used, mmag (the same fit with exact "
               "reference fluxes)\n" + fmt(
                   ["row", "n", "reference noise median", "worst", "own median", "own worst", "own rms"],
                   [[r["row"], *_vals(r["summary"]["zp_reference_noise_mmag"], "n", "median", "worst"),
                     *_vals(r["summary"]["zp_own_mmag"], "median", "worst", "rms")] for r in rows], floatfmt=".3g"))
    out.append("PSF: refit PSF at the reserved stars vs true PSF, pooled over the row (targets where >= 100 stars: "
               "size rms <= 1e-3, |mean e1|, |mean e2| <= 5e-4)\n" + fmt(
                   ["row", "detectors", "reserved", "NaN moments", "size err rms", "size err mean", "mean e1 err",
                    "mean e2 err", "worst detector size rms"],
                   [[r["row"], *_vals(r["summary"]["psf"], "n_detectors", "n_reserved", "n_nonfinite", "size_rms",
                                      "size_mean", "e1_mean", "e2_mean", "size_rms_worst_detector")] for r in rows],
                   floatfmt=".2e"))
    out.append(f"Photometry: final source base_PsfFlux vs true flux, isolated unblended stars S/N > {SNR_PHOT:g}, "
               f"pooled; pulls of S/N > {SNR_PULL:g} (targets: |bias| <= 1 mmag, width within 10% of 1)\n" + fmt(
                   ["row", "detectors", "stars", "median dm (mmag)", "mean dm (mmag)", "worst detector median",
                    "median dm - zp error", "+/-", "S/N>300", "pull width", "median pull"],
                   [[r["row"], *_vals(r["summary"]["photometry"], "n_detectors", "n", "dm_median_mmag", "dm_mean_mmag",
                                      "dm_median_worst_detector", "dm_own_median_mmag", "dm_own_median_err_mmag",
                                      "n_snr300", "pull_width_snr300", "pull_median_snr300")] for r in rows],
                   floatfmt=".3g"))
    if per_detector:
        body = []
        for r in rows:
            for d in r["detectors"]:
                ap, af = d.get("astrometry_preliminary") or {}, d.get("astrometry_final") or {}
                psf, ph = d.get("psf") or {}, d.get("photometry") or {}
                first = d.get("first_not_ok")
                body.append([r["row"], f"{d['visit']}/{d['detector']}", d["final"],
                             f"{first['step']}:{first['error_type'] or first['status']}" if first else "-",
                             ap.get("rms_mas"), af.get("rms_mas"), af.get("max_mas"), d.get("astrom_nstars"),
                             d.get("astrometry_expected_mas"), d.get("zp_preliminary_mmag"), d.get("zp_own_mmag"),
                             d.get("zp_final_mmag"), psf.get("n_reserved"), psf.get("size_rms"), psf.get("e1_mean"),
                             psf.get("e2_mean"), ph.get("n"), ph.get("dm_median_mmag"), ph.get("n_snr300"),
                             ph.get("pull_width_snr300")])
        out.append("Per detector\n" + fmt(["row", "visit/det", "final", "first not ok", "cal rms", "final rms",
                                           "final max", "astrom stars", "expected rms", "zp cal", "zp own", "zp final", "reserved", "size rms", "e1", "e2",
                                           "stars", "median dm", "S/N>300", "pull width"], body, floatfmt=".3g"))
    return "\n\n".join(out)


def _vals(d: dict, *keys):
    return [d.get(k) for k in keys]


def _git_describe() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=_common.BENCH_DIR, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default all: {','.join(ROWS)})")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="worker processes of run_chain (default 2)")
    ap.add_argument("--out", default=None, help="JSON output (default bench/results/matrix.json)")
    ap.add_argument("--keep-processed", action="store_true",
                    help="keep bench/results/matrix/<row>/work (the chain's products); deleted otherwise")
    ap.add_argument("--reuse-processed", action="store_true",
                    help="do not run the chain where a kept work dir exists: analyse its products again (implies "
                         "--keep-processed)")
    ap.add_argument("--resimulate", action="store_true", help="simulate again even when the cached sim matches")
    ap.add_argument("--per-detector", action="store_true", help="also print the per-detector table")
    ap.add_argument("--list", action="store_true", help="print the rows and their SimConfig, and exit")
    ap.add_argument("--seed", type=int, default=None, help="SimConfig.seed of every row (default: SimConfig's, 1); "
                    "cached apart")
    ap.add_argument("--config", default=None, help="a JSON RunConfig laid over the defaults (as visitcal run "
                    "--config); default RunConfig()")
    args = ap.parse_args(argv)
    if args.seed is not None and args.seed < 0:
        ap.error("--seed must be >= 0")
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if args.reuse_processed:
        args.keep_processed = True
    from visitcal.cli import _load_config
    from visitcal.pipeline.chain import RunConfig

    args.run_config = _load_config(ap, args.config, RunConfig) if args.config is not None else RunConfig()
    args.config_name = f"--config {args.config}" if args.config is not None else "RunConfig()"
    if args.list:
        for n in names:
            fields = ", ".join(f"{k}={v!r}" for k, v in ROWS[n][0].items())
            print(f"{n:11s} {ROWS[n][1]}\n            SimConfig({fields})")
        return 0
    _common.tune_allocator_as_the_cli()
    _common.print_header(f"accuracy matrix (issue 21): run_chain(jobs={args.jobs}) with {args.config_name}, rows "
                         f"{','.join(names)}, sim seed {args.seed if args.seed is not None else 'default'}; code "
                         f"{_git_describe()}, {time.strftime('%Y-%m-%d %H:%M')}", None)
    t0 = time.perf_counter()
    rows = []
    for n in names:
        rows.append(run_row(n, args))
        print(f"[{n}] done, {time.perf_counter() - t0:.0f} s so far", flush=True)
    total = time.perf_counter() - t0
    print()
    print(tables(rows, per_detector=args.per_detector))
    print(f"\nmatrix: {total:.0f} s ({total / 60:.1f} min) wall for {len(rows)} rows")
    path = _common.write_json("matrix", {"rows": rows, "total_s": total, "jobs": args.jobs, "targets": TARGETS,
                                         "grid": GRID, "git": _git_describe(), "seed": args.seed,
                                         "config": args.run_config.model_dump(mode="json")}, args.out)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
