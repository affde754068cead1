"""Shared simulated repositories (rendered once per session; ~10 s)."""

from __future__ import annotations

import pytest

pytest.importorskip("galsim", reason="visitcal.sim needs GalSim (pip install 'visitcal[sim]')")

from visitcal.sim import SimConfig, SimRepository, simulate

#: Two visits of two 1024 x 1024 detectors with two snaps: every effect, an eighth of the default's
#: pixels, with 4x the default star density (so each test has a few dozen bright stars) and 5x the
#: cosmic rays.
SMALL = SimConfig(preset="small", n_visits=2, n_detectors=2, detector_width=1024, detector_height=1024,
                  n_snaps=2, seed=7, star_density=24000.0, galaxy_density=20000.0, cosmic_ray_rate=0.5)


@pytest.fixture(scope="session")
def sim_repo(tmp_path_factory) -> SimRepository:
    out = tmp_path_factory.mktemp("sim") / "repo"
    simulate(SMALL, out)
    return SimRepository(out)
