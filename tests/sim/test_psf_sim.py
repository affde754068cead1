"""The pixel-grid PSF fitted to stars drawn with the simulator's spatially varying GalSim PSF, checked
on reserved stars against that PSF (issue 6).

The simulator's `TruePsf` of one detector (optics with field-dependent aberrations, atmosphere, the
local WCS Jacobian) draws 250 stars at seeded positions over the detector with fluxes giving PSF S/N
about 50-1000 (sky 400 ADU/px, gain 1), on the 27 x 27 stamps `make_psf_candidates` would cut (stars
on a real detector are tested through candidates in tests/unit and the bench). 20% are reserved,
and the pixel grid is fitted at LSST's settings (25 x 25, Lanczos(11), order 2). At each reserved
star the model's image is compared with the true PSF drawn on the same pixels (both unit sum):
HSM size and distortion, and the worst pixel residual relative to the peak.

Noise-free, the model's own error shows: the issue's accuracy goals (Piff 1.7 with 300 stars on its
bench scene: size rms 1.4e-3, e1 mean -1.5e-3 / rms 2.0e-3, e2 rms 1.2e-3, worst pixel 0.5% of the
peak, median) must hold with a margin. With noise (S/N 50-1000, log-uniform) the errors are those
of 200 noisy stars; the bounds there are this scene's, and the like-for-like comparison with Piff is
bench/bench_psf.py (same stars, both fitters).
"""

from __future__ import annotations

import numpy as np
import pytest
from visitcal.psf.pixel_grid import PixelGridPsfDeterminer
from visitcal.psf.candidates import PsfCandidates

S = 27


def _shape(image):
    """HSM adaptive-moment size (sigma, px) and distortion (e1, e2) of a stamp."""
    import galsim

    res = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(image, np.float64)), strict=True)
    return res.moments_sigma, res.observed_shape.e1, res.observed_shape.e2


def _fit(sim_repo, noise: bool, determiner=None):
    v, d = sim_repo.visits[0], sim_repo.detectors[0]
    true_psf = sim_repo.true_psf(v, d)
    bbox = true_psf.camera[true_psf.detector_id].detector.bbox
    rng = np.random.default_rng(2024)
    m, sky = 250, 400.0
    x = rng.uniform(bbox.min_x + 14, bbox.max_x - 14, m)
    y = rng.uniform(bbox.min_y + 14, bbox.max_y - 14, m)
    snr = np.exp(rng.uniform(np.log(50), np.log(1000), m))
    # PSF S/N of a star of flux F on sky-dominated pixels: F / sqrt(sky * 4 pi sigma^2), sigma ~ 2 px.
    flux = snr * np.sqrt(sky * 4 * np.pi * 2.0**2)
    img = np.empty((m, S, S), np.float32)
    var = np.empty((m, S, S), np.float32)
    xy0 = np.empty((m, 2), np.int32)
    for i in range(m):
        star, box = true_psf.draw(x[i], y[i], size=S, normalize=False)
        v_ = sky + flux[i] * star
        img[i] = flux[i] * star + (rng.normal(0, np.sqrt(v_)) if noise else 0.0)
        var[i] = v_
        xy0[i] = box.min_x, box.min_y
    cands = PsfCandidates(img, np.zeros(img.shape, np.int32), var, xy0,
                          {"x": x, "y": y, "used": np.ones(m, bool), "index": np.arange(m)})
    reserved = np.zeros(m, bool)
    reserved[rng.choice(m, m // 5, replace=False)] = True
    result = (determiner or PixelGridPsfDeterminer()).determine_psf(cands, bbox, reserved=reserved)
    return true_psf, x, y, reserved, result


@pytest.fixture(scope="module")
def fitted(sim_repo):
    return _fit(sim_repo, noise=True)


@pytest.fixture(scope="module")
def fitted_noise_free(sim_repo):
    return _fit(sim_repo, noise=False)


def _errors(fitted):
    true_psf, x, y, reserved, result = fitted
    assert not result.used[reserved].any() and (result.status[reserved] == "reserved").all()
    dsize, de1, de2, worst = [], [], [], []
    for xi, yi in zip(x[reserved], y[reserved]):
        model = result.psf.compute_image(xi, yi)
        truth = np.asarray(true_psf.compute_image(xi, yi, size=model.shape[0]), float)
        truth /= truth.sum()
        sm, e1m, e2m = _shape(model)
        st, e1t, e2t = _shape(truth)
        dsize.append(sm / st - 1)
        de1.append(e1m - e1t)
        de2.append(e2m - e2t)
        worst.append(np.abs(model - truth).max() / truth.max())
    dsize, de1, de2 = map(np.asarray, (dsize, de1, de2))
    rms = lambda a: float(np.sqrt(np.mean(a**2)))
    out = {"size_rms": rms(dsize), "e1_mean": float(de1.mean()), "e1_rms": rms(de1), "e2_rms": rms(de2),
           "worst_median": float(np.median(worst))}
    print("\n" + " ".join(f"{k} {v:.2e}" for k, v in out.items()))
    return out


def test_noise_free_reserved_stars_meet_the_accuracy_goals(fitted_noise_free):
    e = _errors(fitted_noise_free)
    assert e["size_rms"] < 1.0e-3
    assert abs(e["e1_mean"]) < 0.75e-3
    assert e["e1_rms"] < 1.5e-3 and e["e2_rms"] < 0.8e-3
    assert e["worst_median"] < 0.0025


def test_reserved_stars_match_the_true_psf_with_noise(fitted):
    e = _errors(fitted)
    assert e["size_rms"] < 1.4e-3
    assert abs(e["e1_mean"]) < 1.5e-3
    assert e["e1_rms"] < 3.0e-3 and e["e2_rms"] < 4.0e-3
    assert e["worst_median"] < 0.02


def test_reserve_chi2_is_consistent_with_noise(fitted):
    _, _, _, reserved, result = fitted
    red = result.chi2[reserved] / result.dof[reserved]
    assert 0.8 < np.median(red) < 1.2
    assert result.metadata["numGoodStars"] == result.used.sum() >= 0.9 * (~reserved).sum()



def test_pca_keeps_its_components_and_is_within_2x_of_the_pixel_grid(sim_repo, fitted):
    """Issue 21: the PCA determiner keeps LSST's four KL components on a field whose PSF varies (the noise
    threshold it had kept one), and its reserved stars' size error is within 2x of the pixel grid's on
    the same 250 stars. Measured: PCA 1.8e-3 rms, pixel grid 1.3e-3 (1.4x); mean e1 -4.5e-4 and -3.7e-4
    (LSST's unrefined KL basis with Lanczos-5 centring: 2.4e-3 rms, mean e1 -3.1e-3, 189 of 200 stars used
    against 200)."""
    from visitcal.psf.pca import PcaPsfDeterminer

    pca = _fit(sim_repo, noise=True, determiner=PcaPsfDeterminer())
    assert pca[4].metadata["n_components"] == 4 and pca[4].metadata["spatial_order_used"] == 2
    e_pca, e_grid = _errors(pca), _errors(fitted)
    assert e_pca["size_rms"] < 2.0 * e_grid["size_rms"]


@pytest.fixture(scope="module")
def default_sim(tmp_path_factory):
    """visitcal.sim's default field (small preset, 6000 stars/deg^2): one visit, two 2048^2 detectors."""
    from visitcal.sim import SimConfig, SimRepository, simulate

    out = tmp_path_factory.mktemp("default_sim") / "repo"
    simulate(SimConfig(n_visits=1, n_detectors=2, seed=3), out)
    return SimRepository(out)


def test_default_sparse_field_steps_down_instead_of_failing(default_sim):
    """Issue 21: on the default field the characterisation's PSF had 5-8 usable stars and failed with
    PsfTooFewStarsError at order 2. It now steps down in order or, with fewer bright candidates than a linear
    PSF needs (8 here, of 9), fits a constant PSF on stars down to S/N 10 (37-42 of them), recorded as degraded,
    and the PSF's size is within (measured) 0.4-0.5% rms, 1.0-1.3% worst of the true PSF's over a 5 x 5
    lattice (order 0 from the 5-8 bright stars: 0.6% rms, 1.5% worst)."""
    from visitcal.core.table import DetectorVisitIdGenerator
    from visitcal.detection.snap_combine import combine_snaps
    from visitcal.io import read_exposure
    from visitcal.pipeline.repository import Repository
    from visitcal.tasks.characterize_image import CharacterizeImageTask

    for (v, d), paths in Repository(default_sim.path).post_isr_snaps().items():
        exposure = combine_snaps([read_exposure(p) for p in paths])
        md = CharacterizeImageTask().run(exposure, id_generator=DetectorVisitIdGenerator(v, d)).metadata
        last = md["iterations"][-1]
        assert md["psf_spatial_order"] == last["spatial_order_used"] < 2
        psf_reasons = [r for r in md["degraded_reasons"] if r.startswith(("psf_order_reduced: ", "psf_faint_stars: "))]
        assert len(psf_reasons) == 1
        if psf_reasons[0].startswith("psf_order_reduced: "):
            assert last["n_candidates"] < 18 and "per term" in psf_reasons[0]  # < 3 stars per term of order 2
        else:
            assert "down to S/N 10" in psf_reasons[0] and last["spatial_order_used"] == 0
        true_psf, psf, box = default_sim.true_psf(v, d), exposure.psf, exposure.bbox
        err = np.array([psf.compute_shape(x, y).determinant_radius / true_psf.compute_shape(x, y).determinant_radius - 1
                        for x in np.linspace(100, box.max_x - 100, 5) for y in np.linspace(100, box.max_y - 100, 5)])
        print(f"\nvisit {v} detector {d}: order {md['psf_spatial_order']}, {last['n_used']} stars, size error "
              f"rms {np.sqrt(np.mean(err**2)):.4f} worst {np.abs(err).max():.4f}")
        assert np.sqrt(np.mean(err**2)) < 0.01 and np.abs(err).max() < 0.025
