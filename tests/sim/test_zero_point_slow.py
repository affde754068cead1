"""The zero point on sparse detectors (issue 21), with visitcal sim's default star density, against the truth.

The repository: one visit of four ``small`` 2048 x 2048 detectors at 6000 stars/deg^2 (``SimConfig()``'s
density: 5-6 stars per detector with PSF-flux S/N > 200, a dozen with S/N > 50), calibrated with the default
configuration (~1 min to render and calibrate).

The zero point of ``slot_CalibFlux`` is the 12-px aperture's (``tests/sim/test_calibrate_sim.py``), so it rests
on the normalisation of the compensated-tophat flux onto that aperture, measured from the detector's stars in
characterisation: its truth is the ratio of the two fluxes measured on the true PSF's image at the detector's
centre, with the same plugins. With LSST's selection (the median ratio of the few ``calib_psf_used`` stars with
S/N > 200) it was 5-39 mmag off on bench_matrix's default and seeing rows; the default weighted fit is within
2 mmag on every detector.

The zero point itself cannot be held to 2 mmag on such detectors: the simulated reference catalog's fluxes carry
a 0.5% error per star (as a PS1-like survey's), and a detector has 9-17 good photometric stars, so its stated
error ``MAGZERO_RMS`` is 2-4 mmag. It is checked against that error.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from visitcal.core.image import MaskedImage
from visitcal.io import read_exposure
from visitcal.measurement.plugins.aperture_flux import ApertureFluxConfig, circular_aperture_flux
from visitcal.measurement.plugins.compensated_tophat import compensated_tophat_flux
from visitcal.pipeline.calibrate_step import run_calibrate
from visitcal.pipeline.repository import Repository
from visitcal.qa.truth import encircled_energy
from visitcal.sim import SimConfig, SimRepository, simulate


DEFAULT_DENSITY = SimConfig(n_visits=1, n_detectors=4, seed=5)
CT = "base_CompensatedTophatFlux_12_instFlux"


def true_normalization(psf, x, y, size=121) -> float:
    """``base_CircularApertureFlux_12_0 / base_CompensatedTophatFlux_12`` of the true PSF at (x, y): the plugins
    on its noise-free kernel image."""
    k = np.asarray(psf.compute_kernel_image(x, y, size), np.float64)
    mi = MaskedImage((k / k.sum()).astype(np.float32), variance=np.ones(k.shape, np.float32))
    c = np.array([float(size // 2)])
    ap = circular_aperture_flux(mi, c, c, ApertureFluxConfig(radii=(12.0,)))["base_CircularApertureFlux_12_0_instFlux"]
    return float(ap[0] / compensated_tophat_flux(mi, c, c)[CT][0])


@pytest.mark.slow
def test_zero_point_and_its_normalisation_on_sparse_detectors(tmp_path):
    sim_path = tmp_path / "sim"
    simulate(DEFAULT_DENSITY, sim_path)
    sim = SimRepository(sim_path)
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("repo.json", "camera.json", "refcat.parquet"):
        shutil.copy(sim_path / name, root / name)
    (root / "truth").symlink_to(sim_path / "truth")
    (root / "post_isr_image").symlink_to(sim_path / "post_isr_image")
    statuses = run_calibrate(root)
    assert all(s.ok for s in statuses), [(s.detector, s.error_type, s.message) for s in statuses]
    repo = Repository(root)
    pulls = []
    for v, d in repo.data_ids():
        exp = read_exposure(repo.dataset_path("preliminary_visit_image", v, d, "fits"))
        cx, cy = exp.bbox.center
        psf = sim.true_psf(v, d)
        fitted = float(exp.ap_corr_map[CT].evaluate(np.array([cx]), np.array([cy]))[0])
        norm_err = 2.5 * math.log10(fitted / true_normalization(psf, cx, cy))
        assert abs(norm_err) < 0.002, f"detector {d}: normalisation {1000 * norm_err:+.1f} mmag from the truth"

        true_zp = (2.5 * math.log10(sim.true_photo_calib(v, d).instflux_at_zero_magnitude)
                   + 2.5 * math.log10(encircled_energy(psf, cx, cy)))
        zp = 2.5 * math.log10(exp.photo_calib.instflux_at_zero_magnitude)
        md = exp.metadata
        sigma = float(md.get("HIERARCH MAGZERO_RMS", md.get("MAGZERO_RMS")))
        n_good = int(md.get("HIERARCH MAGZERO_NOBJ", md.get("MAGZERO_NOBJ")))
        assert n_good >= 5 and 0.001 < sigma < 0.005, (d, n_good, sigma)
        pulls.append((zp - true_zp) / sigma)
        assert abs(zp - true_zp) < 3.5 * sigma, f"detector {d}: zp {1000 * (zp - true_zp):+.1f} mmag, sigma {sigma}"
    assert np.sqrt(np.mean(np.square(pulls))) < 2.0, pulls
