"""Astrometric fitting, one core: visitcal's FitTanSipWcsTask beside astropy's ``fit_wcs_from_points`` (issue 7).

The scene: a 4072 x 4000 detector at 0.2"/px with a true TAN-SIP WCS of order 3 (CRPIX at the detector's
centre, CD rotated by 30 deg with the usual RA parity; a radial cubic distortion of 0.4" at the corners plus
quadratic terms of up to 0.03", as a detector away from the optical axis sees), 1000 stars placed uniformly,
their sky positions from the true WCS and their pixel positions perturbed by Gaussian centroid noise of
10 mas (0.05 px) per axis. The reference catalog is exact.

Each row fits a SIP order-3 WCS to the 1000 (pixel, sky) pairs:
- visitcal: ``FitTanSipWcsTask(order=3)`` (defaults otherwise: 3 iterations, one 3-sigma rejection pass,
  reverse polynomials of order 4 on a grid over the detector);
- astropy: ``astropy.wcs.utils.fit_wcs_from_points((x, y), SkyCoord(ra, dec), sip_degree=3)`` (scipy's
  ``least_squares`` on CD and CRPIX, then on everything with the SIP terms; tangent point at the centre of
  the points; no reverse polynomials, no rejection).

Time: wall clock of the fit call alone (best and median of 5 after a warm-up), on the first scene.
Accuracy, over 10 scenes (seeds seed..seed+9): the rms (root of the mean over scenes of the mean square)
and the worst on-sky distance between the fitted and the true WCS over a 41 x 41 grid spanning the
detector (least-squares expectation for the rms: 10 mas x sqrt(2 x 10 terms / 1000 stars) = 1.4 mas); the
rms of the fit's residuals at the stars.

Run from the repository root: ``PYTHONPATH=python python bench/bench_astrom.py [--repeat N] [--seed S]``.
Results: ``bench/results/astrom.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads
import numpy as np

NX, NY = 4072, 4000
SCALE = 0.2 / 3600.0  # deg / px
N_STARS = 1000
NOISE_MAS = 10.0


@dataclass
class Scene:
    """What every row gets: the stars' measured pixel positions and reference sky positions, the true WCS
    (for scoring only) and a preliminary WCS (the truth off by 8" = 40 px, 0.3 deg and 1e-3 in scale, without
    the distortion: the input a matcher starts from)."""

    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    true_wcs: object
    preliminary_wcs: object


def make_scene(seed: int) -> Scene:
    from visitcal.core.wcs import make_tan_sip_wcs

    rng = np.random.default_rng(seed)
    th = np.radians(30.0)
    cd = SCALE * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([-1.0, 1.0])
    k3 = 2.0 / np.hypot(NX / 2, NY / 2) ** 3  # radial cubic: 2 px = 0.4" at the corners
    k2 = 3.5e-8  # quadratic: up to ~0.15 px = 0.03" at the edges
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[2, 0], a[1, 1], a[0, 2] = k2, 0.6 * k2, -0.3 * k2
    b[2, 0], b[1, 1], b[0, 2] = -0.4 * k2, 0.8 * k2, 0.5 * k2
    a[3, 0], a[1, 2] = k3, k3
    b[2, 1], b[0, 3] = k3, k3
    crpix = ((NX - 1) / 2, (NY - 1) / 2)
    truth = make_tan_sip_wcs(crpix, (150.1, 2.2), cd, sip_a=a, sip_b=b)
    x = rng.uniform(-0.5, NX - 0.5, N_STARS)
    y = rng.uniform(-0.5, NY - 0.5, N_STARS)
    ra, dec = truth.all_pix2world(x, y, 0)
    sigma_px = NOISE_MAS / 1000 / 0.2
    xm = x + rng.normal(0, sigma_px, N_STARS)
    ym = y + rng.normal(0, sigma_px, N_STARS)
    # The preliminary WCS: 8" (40 px) off in RA, rotated 0.3 deg, scale 1e-3 off, and no distortion.
    dth = np.radians(0.3)
    rot = np.array([[np.cos(dth), -np.sin(dth)], [np.sin(dth), np.cos(dth)]])
    prelim = make_tan_sip_wcs(crpix, (150.1 + 8.0 / 3600, 2.2), 1.001 * rot @ cd)
    return Scene(xm, ym, ra, dec, truth, prelim)


def sep_arcsec(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600.0


def score(wcs, scene: Scene) -> dict:
    gx, gy = np.meshgrid(np.linspace(-0.5, NX - 0.5, 41), np.linspace(-0.5, NY - 0.5, 41))
    r1, d1 = scene.true_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    r2, d2 = wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    err = sep_arcsec(r1, d1, r2, d2) * 1000
    rs, ds = wcs.all_pix2world(scene.x, scene.y, 0)
    resid = sep_arcsec(rs, ds, scene.ra, scene.dec) * 1000
    return {"grid_rms_mas": float(np.sqrt(np.mean(err**2))), "grid_max_mas": float(err.max()),
            "resid_rms_mas": float(np.sqrt(np.mean(resid**2)))}


# --- the rows: (label, what it does, fit(scene) -> astropy WCS) ----------------------------------------------


def _unpaired(scene: Scene):
    """The scene's stars as unpaired catalogues: sources (x, y, flux with 2% scatter) and references (the
    same stars shuffled, plus 300 more over the detector, with their true fluxes), deterministic."""
    rng = np.random.default_rng(99)
    n = scene.x.size
    flux = 10 ** rng.uniform(2.5, 5.0, n)
    src_flux = flux * (1 + 0.02 * rng.normal(size=n))
    ex, ey = rng.uniform(-0.5, NX - 0.5, 300), rng.uniform(-0.5, NY - 0.5, 300)
    era, edec = scene.true_wcs.all_pix2world(ex, ey, 0)
    perm = rng.permutation(n + 300)
    ref_ra = np.concatenate([scene.ra, era])[perm]
    ref_dec = np.concatenate([scene.dec, edec])[perm]
    ref_flux = np.concatenate([flux, 10 ** rng.uniform(2.5, 5.0, 300)])[perm]
    return np.stack([scene.x, scene.y], 1), src_flux, ref_ra, ref_dec, ref_flux


def match_and_fit_visitcal(scene: Scene):
    """One match through the preliminary WCS, then the fit of the matched pairs (AstrometryTask's first
    iteration; its later ones re-match through the fitted WCS)."""
    from visitcal.calib.fit_tan_sip_wcs import FitTanSipWcsConfig, FitTanSipWcsTask
    from visitcal.core.geom import Box2I
    from visitcal.calib.match_pessimistic_b import MatchPessimisticBTask

    xy, src_flux, ref_ra, ref_dec, ref_flux = _unpaired(scene)
    m = MatchPessimisticBTask().match_objects(xy, src_flux, ref_ra, ref_dec, ref_flux, scene.preliminary_wcs)
    task = FitTanSipWcsTask(FitTanSipWcsConfig(order=3))
    si, ri = m.source_index, m.ref_index
    return task.fit_wcs(xy[si, 0], xy[si, 1], ref_ra[ri], ref_dec[ri], bbox=Box2I(0, 0, NX - 1, NY - 1)).wcs


def fit_visitcal(scene: Scene):
    from visitcal.calib.fit_tan_sip_wcs import FitTanSipWcsConfig, FitTanSipWcsTask
    from visitcal.core.geom import Box2I

    task = FitTanSipWcsTask(FitTanSipWcsConfig(order=3))
    return task.fit_wcs(scene.x, scene.y, scene.ra, scene.dec, bbox=Box2I(0, 0, NX - 1, NY - 1)).wcs


def fit_astropy(scene: Scene):
    import warnings

    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import fit_wcs_from_points

    coords = SkyCoord(scene.ra, scene.dec, unit="deg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_wcs_from_points((scene.x, scene.y), coords, sip_degree=3)


ROWS = [
    ("visitcal FitTanSipWcsTask", "fit alone, order 3", fit_visitcal),
    ("astropy fit_wcs_from_points", "fit alone, sip_degree 3", fit_astropy),
    # Match + fit: from the preliminary WCS (40 px off, rotated 0.3 deg, scale 1e-3) and unpaired catalogues.
    ("visitcal MatchPessimisticB + FitTanSip", "match 1000 vs 1300 refs + fit, order 3", match_and_fit_visitcal),
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--n-scenes", type=int, default=10, help="scenes the accuracy is averaged over")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    args = parser.parse_args(argv)
    cpu = _common.pin_one_core(args.cpu)
    _common.print_header("Astrometric fit: TAN-SIP order 3, 1000 stars, 4072 x 4000 at 0.2\"/px, 10 mas noise", cpu)
    scenes = [make_scene(args.seed + k) for k in range(args.n_scenes)]
    scene = scenes[0]
    table, results = [], []
    for label, what, fn in ROWS:
        timing = _common.time_it(lambda fn=fn: fn(scene), repeat=args.repeat)
        per = [score(fn(sc), sc) for sc in scenes]
        s = {"grid_rms_mas": float(np.sqrt(np.mean([p["grid_rms_mas"] ** 2 for p in per]))),
             "grid_max_mas": float(max(p["grid_max_mas"] for p in per)),
             "resid_rms_mas": float(np.sqrt(np.mean([p["resid_rms_mas"] ** 2 for p in per]))),
             "per_scene": per}
        results.append({"label": label, "what": what, **timing.as_dict(), **s})
        table.append([label, what, f"{timing.best * 1e3:.2f} ms", f"{timing.median * 1e3:.2f} ms",
                      f"{s['grid_rms_mas']:.3f}", f"{s['grid_max_mas']:.3f}", f"{s['resid_rms_mas']:.2f}"])
    print(_common.format_table(["fitter", "what", "best", "median", "rms vs truth (mas)", "max vs truth (mas)",
                                "resid rms (mas)"], table))
    expected = NOISE_MAS * np.sqrt(2 * 10 / N_STARS)
    print(f"least-squares expectation of the rms vs truth: {expected:.2f} mas")
    out = _common.write_json("astrom", {"n_stars": N_STARS, "noise_mas": NOISE_MAS, "seed": args.seed,
                                        "n_scenes": args.n_scenes,
                                        "expected_rms_mas": expected, "rows": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
