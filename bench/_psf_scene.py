"""The PSF benchmark's simulated scene (issue 6): 300 stars on a 4072 x 4000 detector, with their truth.

- The PSF is the simulator's (`visitcal.sim.psf.TruePsf`): Kolmogorov seeing convolved with aberrated
  optics varying over the focal plane, for the one detector of an ``lsst``-preset camera with
  ``n_detectors=1`` (so the detector spans the whole field: the PSF varies by a few percent in size
  and ~0.05 in ellipticity across it), visit 0 of seed 4.
- 300 stars at seeded uniform positions (>= 20 px from the edges), S/N (PSF-optimal) log-uniform in
  50-1000, each drawn by GalSim with that PSF (41 px stamps, unit-flux profile times the flux), added
  to a flat sky-subtracted image; noise: sky sigma 10 ADU plus Poisson (gain 1.5 e-/ADU), Gaussian.
  float32 image, variance = sky^2 + model / gain, empty mask.
- Then visitcal as the pipeline would: `SourceDetectionTask` (footprints), SDSS centroids at the
  detected peaks, each true star matched to its detection (< 2 px), and `make_psf_candidates`.
- Truth for the accuracy metrics: the unit-sum TruePsf stamp (25 x 25 on the pixel holding (x, y))
  at 50 seeded positions over the detector with random sub-pixel offsets.

Everything is cached in ``bench/results/psf_scene.npz`` (git-ignored); only the stars' stamps are
drawn, so a fresh build is ~1 min, most of it GalSim.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / "results" / "psf_scene.npz"
N_STARS = 300
N_EVAL = 50
EVAL_SIZE = 25
SKY_SIGMA = 10.0
GAIN = 1.5
SEED = 20240606


def true_psf():
    """The TruePsf of the scene (cheap to build: no image is rendered)."""
    from visitcal.sim import SimConfig
    from visitcal.sim.camera import SimCamera
    from visitcal.sim.psf import OpticsDesign, TruePsf
    from visitcal.sim.scene import make_visit_plans

    config = SimConfig(preset="lsst", n_visits=1, n_detectors=1, n_snaps=1, seed=4)
    camera = SimCamera(config.camera, config.n_detectors)
    plan = make_visit_plans(config, camera)[0]
    wcs = camera.true_wcs(0, plan.boresight_ra, plan.boresight_dec, plan.rotation_deg)
    return TruePsf(camera, 0, plan.atmosphere, wcs, plan.band, optics=OpticsDesign()), camera[0].detector.bbox


def eval_positions(width: int, height: int) -> np.ndarray:
    """(N_EVAL, 2) seeded positions over the detector (not at stars), with sub-pixel offsets."""
    rng = np.random.default_rng(SEED + 1)
    return np.stack([rng.uniform(15, width - 16, N_EVAL), rng.uniform(15, height - 16, N_EVAL)], axis=1)


def _build() -> dict:
    from visitcal.detection.detection import SourceDetectionTask, psf_sigma
    from visitcal.core.footprint import FootprintSet
    from visitcal.core.image import Exposure
    from visitcal.measurement.plugins.sdss_centroid import sdss_centroid
    from visitcal.psf.models import GaussianPsf
    from visitcal.psf.candidates import make_psf_candidates

    psf, bbox = true_psf()
    width, height = bbox.width, bbox.height
    rng = np.random.default_rng(SEED)
    xs = rng.uniform(20, width - 21, N_STARS)
    ys = rng.uniform(20, height - 21, N_STARS)
    sigma = psf_sigma(psf, bbox)
    n_eff = 4.0 * math.pi * sigma**2  # noise-equivalent area of a Gaussian PSF, px
    snr = np.exp(rng.uniform(math.log(50.0), math.log(1000.0), N_STARS))
    # S/N = F / sqrt(F / gain + n_eff sky^2)  ->  F^2 - S^2 F / gain - S^2 n_eff sky^2 = 0
    b = snr**2 / GAIN
    flux = 0.5 * (b + np.sqrt(b * b + 4.0 * snr**2 * n_eff * SKY_SIGMA**2))

    model = np.zeros((height, width), np.float64)
    half = 20
    for x, y, f in zip(xs, ys, flux):
        stamp, box = psf.draw(float(x), float(y), size=2 * half + 1, normalize=False)
        x0, y0 = max(box.min_x, 0), max(box.min_y, 0)
        x1, y1 = min(box.max_x, width - 1), min(box.max_y, height - 1)
        model[y0:y1 + 1, x0:x1 + 1] += f * stamp[y0 - box.min_y:y1 - box.min_y + 1, x0 - box.min_x:x1 - box.min_x + 1]
    variance = (SKY_SIGMA**2 + np.maximum(model, 0.0) / GAIN).astype(np.float32)
    noise = np.random.default_rng(SEED + 2).standard_normal((height, width), dtype=np.float32)
    image = (model + noise * np.sqrt(variance)).astype(np.float32)
    del model, noise
    mask = np.zeros((height, width), np.int32)

    exposure = Exposure.from_arrays(image, mask, variance, psf=GaussianPsf(sigma, average_position=(width / 2, height / 2)))
    det = SourceDetectionTask().run(exposure, sigma=sigma)
    fps = det.positive
    peaks = fps.peaks
    first = np.asarray(fps.peak_offsets[:-1], np.int64)
    px = np.asarray(peaks["i_x"], np.float64)[first]  # the brightest peak of each footprint
    py = np.asarray(peaks["i_y"], np.float64)[first]
    cen = sdss_centroid(exposure, px, py, sigma)
    cx, cy = cen["base_SdssCentroid_x"], cen["base_SdssCentroid_y"]
    # each true star -> the nearest detection (the stars are isolated enough; blends keep their peaks)
    d2 = (xs[:, None] - px[None, :]) ** 2 + (ys[:, None] - py[None, :]) ** 2
    nearest = np.argmin(d2, axis=1)
    matched = np.sqrt(d2[np.arange(N_STARS), nearest]) < 2.0
    fidx = nearest[matched]
    sources = {"base_SdssCentroid_x": np.where(np.isfinite(cx[fidx]), cx[fidx], px[fidx]),
               "base_SdssCentroid_y": np.where(np.isfinite(cy[fidx]), cy[fidx], py[fidx])}
    assert isinstance(fps, FootprintSet)
    cand = make_psf_candidates(exposure, sources, fps, footprint_index=fidx)
    eval_xy = eval_positions(width, height)
    truth = np.stack([psf.draw(float(x), float(y), size=EVAL_SIZE)[0] for x, y in eval_xy])
    used = cand.table["used"]
    return {
        "width": width, "height": height, "psf_sigma": sigma,
        "star_x": xs, "star_y": ys, "star_flux": flux, "star_snr": snr, "star_matched": matched,
        "n_detections": len(fps),
        "cand_image": cand.image, "cand_mask": cand.mask, "cand_variance": cand.variance, "cand_xy0": cand.xy0,
        "cand_x": cand.table["x"][used], "cand_y": cand.table["y"][used],
        "cand_true_x": xs[matched][used], "cand_true_y": ys[matched][used],
        "eval_xy": eval_xy, "truth": truth,
    }


def psf_scene() -> dict:
    """The cached scene (built on first use); see the module docstring for the keys' meaning."""
    if not CACHE.exists():
        data = _build()
        CACHE.parent.mkdir(exist_ok=True)
        np.savez(CACHE, **data)
    with np.load(CACHE) as z:
        return {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}


def candidates(scene: dict):
    """The scene's `PsfCandidates` (27 x 27 stamps)."""
    from visitcal.psf.candidates import PsfCandidates

    n = scene["cand_image"].shape[0]
    table = {"index": np.arange(n, dtype=np.int64), "x": scene["cand_x"], "y": scene["cand_y"],
             "footprint_index": np.full(n, -1, np.int64), "psf_max_value": scene["cand_image"].reshape(n, -1).max(1),
             "used": np.ones(n, bool), "skip_reason": np.full(n, "", "<U13")}
    return PsfCandidates(scene["cand_image"], scene["cand_mask"], scene["cand_variance"], scene["cand_xy0"], table)
