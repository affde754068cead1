"""The 4072 x 4000 simulated detector the image-kernel benchmarks share (issue 4).

One ``lsst``-preset detector of one visit, one snap (seed 4), rendered once by `visitcal.sim`
(~15 s) and cached in ``bench/results/sim_detector.npz``: the post-ISR image, variance and mask, the
true background, and the true PSF's sigma at the detector centre. Kernels then see real-looking
data: a sky gradient, ~10^4 stars and galaxies with a varying PSF, cosmic rays, bleed trails.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / "results" / "sim_detector.npz"


def sim_detector() -> dict[str, np.ndarray | float]:
    """``image``, ``variance``, ``mask`` (y, x), ``background`` (true, same shape), ``psf_sigma`` (px)."""
    if CACHE.exists():
        with np.load(CACHE) as z:
            return {k: (float(z[k]) if z[k].ndim == 0 else z[k]) for k in z.files}
    from visitcal.detection.detection import psf_sigma
    from visitcal.core.geom import Box2I
    from visitcal.sim import SimConfig, SimRepository, simulate

    tmp = Path(tempfile.mkdtemp())
    try:
        simulate(SimConfig(preset="lsst", n_visits=1, n_detectors=1, n_snaps=1, seed=4), tmp / "repo")
        repo = SimRepository(tmp / "repo")
        visit, det, _ = repo.data_ids[0]
        mi = repo.post_isr_image(visit, det, 0).masked_image
        data = {
            "image": mi.image, "variance": mi.variance, "mask": mi.mask.array,
            "background": repo.true_background(visit, det, 0).evaluate_image(dtype=np.float32),
            "psf_sigma": psf_sigma(repo.true_psf(visit, det), Box2I.from_shape(mi.image.shape)),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    CACHE.parent.mkdir(exist_ok=True)
    np.savez(CACHE, **data)
    return data
