"""Issue 9's accuracy goals end to end on a rich repository (slow: ``--runslow``; about 5 minutes).

``visitcal sim`` -> calibrate (SIP order 3) -> finalize (defaults) -> visit summary -> reprocess (defaults), three
visits of one 4072 x 4000 detector (LSSTCam's), 100000 stars/deg^2, one 60-s snap. Against the simulator's truth, for the
true unsaturated *isolated* stars matched within 1 px, S/N > 50, primary and unblended. Isolated by the truth:
the light of every other true object, detected or not, weighted by its overlap with the star's PSF
(``sum f_n / f exp(-r^2 / 4 sigma^2)``, sigma = 2 px), is under 1e-3 of the star's, i.e. its neighbours cannot
move the star's PsfFlux by a millimagnitude nor its centroid by more than ~1 mas. In this crowded field that keeps
94% of the stars, but the other 6% carry most of the excess scatter: with them the 2-D position rms is 11-12 mas
instead of 6-8 (centroid shifts correlated at 0.83-0.95 with those the true neighbours predict), and on a
2048^2 detector one visit's flux pulls widen to 1.4 (bench/README.md, issue 9's accuracy section).

- calibrated base_PsfFlux (nJy) against the true flux: median offset under 2 mmag; the scatter consistent with
  the errors: the pulls' width (1.4826 MAD) of the S/N 50-200 stars within [0.8, 1.25], and the floor that,
  added in quadrature to fluxErr, makes the width of all the pulls 1 — the calibrations' own error (zero
  point, ap-corr field, PSF model), which fluxErr does not carry — under 4 mmag;
- coord_ra / coord_dec against the true positions under 10 mas rms, as the 2-D separation (per coordinate it
  is sqrt(2) smaller); the fitted WCS against the true WCS under 5 mas rms over the detector;
- at least 99% of the reserved calib stars keep calib_psf_reserved through the 0.2" cross-match.
"""

from __future__ import annotations

import numpy as np
import pytest
from visitcal.io import read_catalog
from visitcal.pipeline.calibrate_step import run_calibrate
from visitcal.pipeline.finalize_step import run_finalize
from visitcal.pipeline.repository import Repository
from visitcal.pipeline.reprocess_step import run_reprocess
from visitcal.pipeline.visit_summary_step import visit_summary_path
from visitcal.qa.truth import matched_stars
from visitcal.sim import SimRepository, simulate
from visitcal.tasks.update_visit_summary import calibrations_for, read_visit_summary
from visitcal.core.wcs import pixel_to_sky

from .test_finalize_accuracy_slow import RICH, RICH_CALIBRATE



@pytest.mark.slow
def test_reprocessed_photometry_astrometry_and_reserve_flags(tmp_path):
    root = tmp_path / "repo"
    simulate(RICH, root)
    assert all(s.ok for s in run_calibrate(root, config=RICH_CALIBRATE))
    assert all(s.ok for s in run_finalize(root))
    statuses = run_reprocess(root)
    assert all(s.ok for s in statuses), [(s.visit, s.detector, s.message) for s in statuses]
    repo, sim = Repository(root), SimRepository(root)
    for v, d in repo.data_ids():
        s = read_catalog(repo.dataset_path("source", v, d, "parquet"))
        obj, i1, i2, f, fe, base, isolated = matched_stars(s, sim, v, d)
        good = base & isolated
        true_flux = np.asarray(obj["flux_nJy"])[i1][good]
        dm = 1000 * np.median(-2.5 * np.log10(f[good] / true_flux))
        def width(floor, sel=slice(None)):
            pull = ((f[good] - true_flux) / np.hypot(fe[good], floor * f[good]))[sel]
            return 1.4826 * np.median(np.abs(pull - np.median(pull)))

        faint = f[good] / fe[good] < 200
        lo, hi = 0.0, 0.05  # bisection for the floor giving width 1
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if width(mid) > 1 else (lo, mid)
        floor = 1000 * 1.0857 * hi if width(0.0) > 1 else 0.0
        print(f"\n{v}/{d}: {good.sum()} stars, median dm {dm:.2f} mmag, pull width {width(0.0):.2f} "
              f"(S/N<200: {width(0.0, faint):.2f}), calibration floor {floor:.1f} mmag", end="")
        assert good.sum() > 80 and abs(dm) < 2.0 and 0.8 < width(0.0, faint) < 1.25 and floor < 4.0
        ra, dec = np.degrees(np.asarray(s["coord_ra"]))[i2][good], np.degrees(np.asarray(s["coord_dec"]))[i2][good]
        tra, tdec = np.asarray(obj["ra"])[i1][good], np.asarray(obj["dec"])[i1][good]
        dra, ddec = (ra - tra) * np.cos(np.radians(tdec)) * 3.6e6, (dec - tdec) * 3.6e6
        rms_2d, per_coord = np.sqrt(np.mean(dra**2 + ddec**2)), np.sqrt(np.mean(np.r_[dra, ddec] ** 2))
        cal = calibrations_for(read_visit_summary(visit_summary_path(repo, v)), d)
        gx, gy = (a.ravel().astype(float) for a in np.meshgrid(np.linspace(0, 4071, 11), np.linspace(0, 3999, 11)))
        (ra1, de1), (ra2, de2) = pixel_to_sky(cal.wcs, gx, gy), pixel_to_sky(sim.true_wcs(v, d), gx, gy)
        wcs_rms = np.sqrt(np.mean(((ra1 - ra2) * np.cos(np.radians(de2))) ** 2 + (de1 - de2) ** 2)) * 3.6e6
        print(f", positions {rms_2d:.1f} mas 2-D ({per_coord:.1f} per coordinate), WCS {wcs_rms:.1f} mas", end="")
        assert rms_2d < 10.0 and wcs_rms < 5.0
        stars = read_catalog(root / "refit_psf_star" / f"refit_psf_star_{v:06d}.parquet")
        reserved = int(np.sum(np.asarray(stars["calib_psf_reserved"])[np.asarray(stars["detector"]) == d]))
        assert reserved > 5 and int(np.sum(s["calib_psf_reserved"])) >= 0.99 * reserved
