"""Measurement on simulated detectors with the true PSF, against the simulator's truth (issue 5).

Each detector's snaps are summed, the true background subtracted, the true cosmic-ray pixels masked
CR (a perfect repair's mask), and `FindSourcesTask` run with the true (GalSim) PSF: detection, sky
sources, deblending, measurement with noise replacement, primary flags.

Isolated stars are the unsaturated true stars matched within 1 px by a primary, isolated, unflagged
source, with no other true object brighter than 1% of their flux within 6 FWHM and no CR, SAT,
INTRP or EDGE pixel in their footprint.
- PSF flux: the truth is F times the fraction of the true PSF's light inside the model's 41 px
  stamp (the model is normalised to unit sum there, as LSST's are; aperture corrections take the
  rest). The inverse-variance weighted mean ratio is 1 within 0.2% and the pulls
  (measured - truth) / instFluxErr have a standard deviation within 10% of 1.
- Centroid: the Cramer-Rao bound of each star comes from the Fisher information of its noise-free
  model (the true PSF times F, pixel variance from the variance plane); the pulls about the
  centroid the algorithm finds on the noise-free star have a standard deviation within 20% of 1.
"""

from __future__ import annotations

import numpy as np
import pytest
from visitcal import _core
from visitcal.tasks.find_sources import FindSourcesTask
from visitcal.core.table import DetectorVisitIdGenerator

from .helpers import combined_snaps

_BAD_PIXELS = ("cr", "saturated", "interpolated", "edge", "bad", "nodata")


@pytest.fixture(scope="module")
def measured(sim_repo):
    out = {}
    for v in sim_repo.visits:
        for d in sim_repo.detectors:
            exp, _ = combined_snaps(sim_repo, v, d, mask_cosmic_rays=True)
            exp.psf = sim_repo.true_psf(v, d)
            result = FindSourcesTask().run(exp, id_generator=DetectorVisitIdGenerator(v, d))
            out[(v, d)] = (exp, result)
    return out


def _isolated_stars(sim_repo, v, d, exp, sources):
    objects = sim_repo.objects(v, d)
    ox, oy, of = (np.asarray(objects[c], dtype=float) for c in ("x", "y", "flux_adu"))
    psf = exp.psf
    fwhm = 2.3548 * psf.compute_shape(*psf.average_position).determinant_radius
    good = (np.asarray(sources["detect_isPrimary"]) & np.asarray(sources["detect_isIsolated"])
            & ~np.asarray(sources["sky_source"]) & ~np.asarray(sources["base_PsfFlux_flag"])
            & ~np.asarray(sources["base_SdssCentroid_flag"]))
    for name in _BAD_PIXELS:
        good &= ~np.asarray(sources[f"base_PixelFlags_flag_{name}"])
    sx, sy = np.asarray(sources["base_SdssCentroid_x"]), np.asarray(sources["base_SdssCentroid_y"])
    rows, stars = [], []
    for k in np.flatnonzero(good):
        dist = np.hypot(ox - sx[k], oy - sy[k])
        j = int(np.argmin(dist))
        if dist[j] > 1.0 or not objects["is_star"][j] or objects["saturated"][j]:
            continue
        near = (np.hypot(ox - ox[j], oy - oy[j]) < 6 * fwhm) & (of > 0.01 * of[j])
        if near.sum() > 1:
            continue
        rows.append(k)
        stars.append(j)
    return np.array(rows, int), objects[np.array(stars, int)]


def test_psf_flux_of_isolated_stars_is_unbiased_and_noise_limited(sim_repo, measured):
    ratios, weights, pulls = [], [], []
    for (v, d), (exp, result) in measured.items():
        sources = result.sources
        rows, stars = _isolated_stars(sim_repo, v, d, exp, sources)
        for k, star in zip(rows, stars):
            raw, _ = exp.psf.draw(float(star["x"]), float(star["y"]), normalize=False)
            truth = float(star["flux_adu"]) * raw.sum()  # light inside the unit-sum model stamp
            flux, err = float(sources["base_PsfFlux_instFlux"][k]), float(sources["base_PsfFlux_instFluxErr"][k])
            ratios.append(flux / truth)
            weights.append((truth / err) ** 2)
            pulls.append((flux - truth) / err)
    ratios, weights, pulls = map(np.asarray, (ratios, weights, pulls))
    assert len(ratios) >= 40, f"only {len(ratios)} isolated stars"
    bias = np.sum(weights * ratios) / np.sum(weights) - 1.0
    assert abs(bias) < 0.002, f"PSF flux bias {bias:.4%} over {len(ratios)} stars"
    assert 0.9 < np.std(pulls) < 1.1, f"pull std {np.std(pulls):.3f} over {len(pulls)} stars"


def _cramer_rao(psf, x, y, flux, variance):
    """(sigma_x, sigma_y) bounds of an unbiased position estimate from the noise-free star's pixels."""
    h = 0.01
    img, box = psf.draw(x, y, normalize=False)
    dx = (psf.draw(x, y, center=(x + h, y), normalize=False)[0] - psf.draw(x, y, center=(x - h, y), normalize=False)[0]) / (2 * h)
    dy = (psf.draw(x, y, center=(x, y + h), normalize=False)[0] - psf.draw(x, y, center=(x, y - h), normalize=False)[0]) / (2 * h)
    var = variance[box.min_y:box.max_y + 1, box.min_x:box.max_x + 1]
    fisher = flux**2 * np.array([[np.sum(dx * dx / var), np.sum(dx * dy / var)],
                                 [np.sum(dx * dy / var), np.sum(dy * dy / var)]])
    cov = np.linalg.inv(fisher)
    return np.sqrt(cov[0, 0]), np.sqrt(cov[1, 1]), img, box


def test_centroid_scatter_is_near_the_cramer_rao_bound(sim_repo, measured):
    pulls = []
    for (v, d), (exp, result) in measured.items():
        sources = result.sources
        rows, stars = _isolated_stars(sim_repo, v, d, exp, sources)
        variance = exp.masked_image.variance
        sigma = exp.psf.compute_shape(*exp.psf.average_position).determinant_radius
        for k, star in zip(rows[:40], stars[:40]):
            x, y, flux = float(star["x"]), float(star["y"]), float(star["flux_adu"])
            if max(abs(x - round(x)), abs(y - round(y))) > 0.48:
                continue  # the +-0.01 px derivative stamps would straddle a pixel boundary
            sx, sy, img, box = _cramer_rao(exp.psf, x, y, flux, variance)
            # where the algorithm puts the noise-free star (the PSF's asymmetry moves its peak)
            peak = result.footprints[k].peaks[0]
            ref = _core.sdss_centroid_batch(
                (flux * img).astype(np.float32), np.zeros(img.shape, np.int32),
                np.ascontiguousarray(variance[box.min_y:box.max_y + 1, box.min_x:box.max_x + 1]),
                box.min_x, box.min_y, np.array([float(peak["i_x"])]), np.array([float(peak["i_y"])]),
                np.array([sigma]), None, None, _core.SdssCentroidControl())
            rx, ry = ref["x"][0], ref["y"][0]
            pulls += [(sources["base_SdssCentroid_x"][k] - rx) / sx, (sources["base_SdssCentroid_y"][k] - ry) / sy]
    pulls = np.asarray(pulls)
    assert len(pulls) >= 80
    assert np.std(pulls) < 1.2, f"centroid scatter {np.std(pulls):.3f} x the Cramer-Rao bound ({len(pulls)} axes)"


def test_sky_sources_avoid_every_detection_and_each_other(measured):
    for exp, result in measured.values():
        sources, footprints = result.sources, result.footprints
        sky = np.flatnonzero(np.asarray(sources["sky_source"]))
        assert len(sky) >= 50
        detected = exp.mask.test("DETECTED")
        covered = np.zeros_like(detected)
        for k in sky:
            ys, xs = footprints[k].indices()
            assert not detected[ys, xs].any()
            assert not covered[ys, xs].any()
            covered[ys, xs] = True
        assert not np.any(np.asarray(sources["detect_isPrimary"])[sky])


def test_every_primary_is_an_isolated_parent_or_a_deblended_child(measured):
    n_children = 0
    for _, result in measured.values():
        s = result.sources
        primary = np.asarray(s["detect_isPrimary"])
        isolated_parent = (np.asarray(s["parent"]) == 0) & (np.asarray(s["deblend_nChild"]) == 0) \
            & ~np.asarray(s["sky_source"])
        child = np.asarray(s["parent"]) != 0
        assert np.array_equal(primary, isolated_parent ^ child)
        assert not np.any(isolated_parent & child)
        n_children += int(child.sum())
        # one row per footprint, ids unique
        assert len(np.unique(s["id"])) == len(s) == len(result.footprints)
    assert n_children > 0
