"""Detection on simulated detectors against the simulator's truth (lsst-spec §5.4 defaults).

The snaps of each detector are summed (as reprocessing's snap combine does; the truth's ``flux_adu`` is
the snap-summed flux), the summed true background subtracted, and detection run with the true PSF's
sigma.
- completeness: of the unsaturated true stars with PSF-optimal S/N > 10 (S/N^2 = F^2 sum(p^2) / V_sky,
  from the true PSF p and the median variance V_sky) at least 10 px from the edges, >= 99% are
  detected: a peak within 2 px, or, for a star closer than 2 FWHM to a brighter object (a blend that
  smoothing cannot split; the deblender's job), inside a footprint;
- purity: a footprint is false when it holds no true object (stars and galaxies of every flux; objects
  centred just off the image are clamped onto its edge) and no true cosmic-ray pixel; <= 0.5% are.
"""

from __future__ import annotations

import numpy as np
import pytest
from visitcal.detection.detection import SourceDetectionTask, psf_sigma
from visitcal.core.geom import Box2I

from .helpers import combined_snaps


def _detect(sim_repo, visit, detector):
    exp, cr_xy = combined_snaps(sim_repo, visit, detector)
    mi = exp.masked_image
    psf = sim_repo.true_psf(visit, detector)
    bbox = Box2I.from_shape(mi.image.shape)
    result = SourceDetectionTask().run(exp, sigma=psf_sigma(psf, bbox))
    return exp, psf, result, cr_xy


@pytest.fixture(scope="module")
def detections(sim_repo):
    return {(v, d): _detect(sim_repo, v, d) for v in sim_repo.visits for d in sim_repo.detectors}


def test_completeness_of_stars_above_snr_10(sim_repo, detections):
    n_bright = n_found = 0
    for (v, d), (exp, psf, result, _) in detections.items():
        mi = exp.masked_image
        ny, nx = mi.image.shape
        objects = sim_repo.objects(v, d)
        kernel = psf.compute_kernel_image(0.5 * nx, 0.5 * ny)
        snr = objects["flux_adu"] * np.sqrt(np.sum(kernel ** 2) / np.median(mi.variance))
        x, y = np.asarray(objects["x"]), np.asarray(objects["y"])
        bright = (np.asarray(objects["is_star"]) & ~np.asarray(objects["saturated"]) & (snr > 10)
                  & (x > 10) & (x < nx - 11) & (y > 10) & (y < ny - 11))
        peaks = result.positive.peaks
        dist = np.hypot(peaks["f_x"][None, :] - x[bright, None], peaks["f_y"][None, :] - y[bright, None]).min(axis=1)
        fwhm = 2.3548 * psf_sigma(psf, Box2I.from_shape(mi.image.shape))
        sep = np.hypot(x[None, :] - x[bright, None], y[None, :] - y[bright, None])
        brighter = objects["flux_adu"][None, :] > objects["flux_adu"][bright, None]
        blended = np.any((sep < 2 * fwhm) & brighter, axis=1)
        in_footprint = mi.mask.test("DETECTED")[np.round(y[bright]).astype(int), np.round(x[bright]).astype(int)]
        n_bright += int(bright.sum())
        n_found += int(np.sum((dist <= 2.0) | (blended & in_footprint)))
    assert n_bright > 100
    assert n_found / n_bright >= 0.99, f"{n_found} of {n_bright} stars with S/N > 10 detected"


def test_false_detections_below_half_a_percent(sim_repo, detections):
    n_footprints = n_false = 0
    for (v, d), (exp, psf, result, (cx, cy)) in detections.items():
        ny, nx = exp.masked_image.image.shape
        objects = sim_repo.objects(v, d)
        ox = np.clip(np.round(np.asarray(objects["x"])).astype(int), 0, nx - 1)
        oy = np.clip(np.round(np.asarray(objects["y"])).astype(int), 0, ny - 1)
        for fp in result.positive:
            grown = fp.dilated(2)
            if not (grown.contains(ox, oy).any() or fp.contains(cx, cy).any()):
                n_false += 1
        n_footprints += len(result.positive)
    assert n_footprints > 200
    assert n_false / n_footprints <= 0.005, f"{n_false} of {n_footprints} footprints match no true object"


def test_detected_plane_is_the_footprints(sim_repo, detections):
    for (exp, psf, result, _) in detections.values():
        mask = exp.masked_image.mask
        detected = mask.test("DETECTED")
        union = np.zeros_like(detected)
        for fp in result.positive:
            union |= fp.to_array(Box2I.from_shape(detected.shape))
        assert np.array_equal(union, detected)
        assert mask.test("EDGE").sum() > 0 and not (mask.test("EDGE")[20:-20, 20:-20]).any()
