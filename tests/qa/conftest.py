"""A small processed simulated repository for the QA tests (rendered and run once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="visitcal qa needs matplotlib (pip install 'visitcal[qa]')")

#: Two visits of two 1024 x 1024 detectors, dense enough (60 000 stars/deg^2) that every detector has
#: reserved PSF stars, reference matches and aperture-correction stars.
QA_SIM = dict(preset="small", n_visits=2, n_detectors=2, detector_width=1024, detector_height=1024, n_snaps=1,
              seed=11, star_density=60000.0, galaxy_density=20000.0)


@pytest.fixture(scope="session")
def processed_repo(tmp_path_factory) -> Path:
    """A simulated repository after ``visitcal run`` (defaults, one process). Tests must not modify it:
    copy it (`copy_repo`) first."""
    pytest.importorskip("galsim", reason="visitcal.sim needs GalSim (pip install 'visitcal[sim]')")
    from visitcal.pipeline.chain import run_chain
    from visitcal.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("qa") / "repo"
    simulate(SimConfig(**QA_SIM), root)
    run_chain(root, jobs=1)
    return root


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a repository that a test may change."""
    shutil.copytree(src, dest, symlinks=True)
    return dest
