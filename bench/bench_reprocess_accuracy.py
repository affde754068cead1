"""Accuracy of the reprocessed visit images on a rich full-size simulated repository (issue 9's goals), one-off.

Uses the repository of `bench_finalize_accuracy.py` (``bench/results/sim_repo_finalize``: lsst preset, 3 visits x
one 4072 x 4000 detector, one 60-s snap, 100000 stars/deg^2, calibrated with SIP order 3; run that script
first). Finalizes with the default configuration (``overwrite``), writes the visit summaries, reprocesses every
detector with the default configuration, and compares each ``source`` catalog with the simulator's truth:

- photometry: ``base_PsfFlux_flux`` (nJy) of the true, unsaturated stars matched within 1 px, S/N > 50, primary,
  not blended (``deblend_nChild == 0``, ``parent == 0``), against their true nJy flux: the median offset (mmag)
  and the robust width (1.4826 MAD) of the pulls ``(flux - true) / fluxErr``, whose width above 1 is the
  calibrations' share, which fluxErr does not carry;
- astrometry: against the true positions, same stars, mas: the rms of the separation (2-D), the rms per
  coordinate (of Delta ra cos dec and Delta dec pooled), the 2-D rms of the S/N > 200 stars, and the fitted WCS
  against the true WCS on a 21 x 21 grid (rms);
- the reserved flags: the fraction of the calib stars with ``calib_psf_reserved`` whose flag the cross-match
  carried to a source.

Each detector gets two rows: all those stars, and the truth-isolated ones of
`visitcal.qa.truth.matched_stars` (the overlap-weighted light of every other true object under 1e-3
of the star's).

    PYTHONPATH=python python bench/bench_reprocess_accuracy.py [--reuse]

``--reuse`` skips the finalize / visit summary / reprocess runs and analyses the products already there.
"""

from __future__ import annotations

import sys

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np

REPO = _common.RESULTS_DIR / "sim_repo_finalize"


def main() -> None:
    from visitcal.qa.truth import matched_stars
    from visitcal.io import read_catalog
    from visitcal.pipeline.finalize_step import run_finalize
    from visitcal.pipeline.repository import Repository
    from visitcal.pipeline.reprocess_step import run_reprocess
    from visitcal.pipeline.visit_summary_step import run_visit_summary
    from visitcal.sim import SimRepository

    if not (REPO / "preliminary_visit_image").is_dir():
        raise SystemExit(f"{REPO}: run bench/bench_finalize_accuracy.py first (it simulates and calibrates)")
    _common.print_header("reprocess accuracy on a rich 3-visit 4072 x 4000 repository", None)
    if "--reuse" not in sys.argv:
        run_finalize(REPO, overwrite=True)
        run_visit_summary(REPO, overwrite=True)
        statuses = run_reprocess(REPO, overwrite=True)
        assert all(s.ok for s in statuses), statuses
    repo, sim = Repository(REPO), SimRepository(REPO)
    rows = []
    for v, d in repo.data_ids():
        s = read_catalog(repo.dataset_path("source", v, d, "parquet"))
        obj, i1, i2, f, fe, base, isolated = matched_stars(s, sim, v, d)
        for label, good in (("all", base), ("isolated", base & isolated)):
            rows.append(_row(f"{v}/{d} {label}", s, obj, i1, i2, f, fe, good, v, d, repo, sim))
    print(_common.format_table(["visit/detector stars", "S/N>50", "median dm (mmag)", "median dm S/N>200 (mmag)",
                                "pull width", "position rms 2-D (mas)", "per coordinate", "2-D, S/N>200",
                                "WCS vs true WCS", "reserved carried"], rows, floatfmt=".3g"))


def _row(label, s, obj, i1, i2, f, fe, good, v, d, repo, sim) -> list:
    """One table row for the stars ``good`` (flags on the matched pairs i1 -> i2)."""
    from visitcal.io import read_catalog
    from visitcal.pipeline.visit_summary_step import visit_summary_path
    from visitcal.tasks.update_visit_summary import calibrations_for, read_visit_summary
    from visitcal.core.wcs import pixel_to_sky

    true_flux = np.asarray(obj["flux_nJy"])[i1][good]
    dm = -2.5 * np.log10(f[good] / true_flux)
    pull = (f[good] - true_flux) / fe[good]
    width = 1.4826 * np.median(np.abs(pull - np.median(pull)))
    ra, dec = np.degrees(np.asarray(s["coord_ra"]))[i2][good], np.degrees(np.asarray(s["coord_dec"]))[i2][good]
    tra, tdec = np.asarray(obj["ra"])[i1][good], np.asarray(obj["dec"])[i1][good]
    dra, ddec = (ra - tra) * np.cos(np.radians(tdec)) * 3.6e6, (dec - tdec) * 3.6e6
    sep = np.hypot(dra, ddec)
    cal = calibrations_for(read_visit_summary(visit_summary_path(repo, v)), d)
    gx, gy = (a.ravel().astype(float) for a in np.meshgrid(np.linspace(0, 4071, 21), np.linspace(0, 3999, 21)))
    (ra1, de1), (ra2, de2) = pixel_to_sky(cal.wcs, gx, gy), pixel_to_sky(sim.true_wcs(v, d), gx, gy)
    wcs_rms = float(np.sqrt(np.mean(((ra1 - ra2) * np.cos(np.radians(de2))) ** 2 + (de1 - de2) ** 2)) * 3.6e6)
    stars = read_catalog(REPO / "refit_psf_star" / f"refit_psf_star_{v:06d}.parquet")
    reserved = int(np.sum(np.asarray(stars["calib_psf_reserved"])[np.asarray(stars["detector"]) == d]))
    carried = int(np.sum(s["calib_psf_reserved"]))
    bright = f[good] / fe[good] > 200
    return [label, int(good.sum()), 1000 * float(np.median(dm)), 1000 * float(np.median(dm[bright])),
            float(width), float(np.sqrt(np.mean(sep**2))), float(np.sqrt(np.mean(np.r_[dra, ddec] ** 2))),
            float(np.sqrt(np.mean(sep[bright] ** 2))), wcs_rms, f"{carried}/{reserved}"]


if __name__ == "__main__":
    main()
