"""The documentation's tutorial (docs/tutorial/): its commands are run exactly as written, then its
Python, and the results are checked against the simulator's truth (~50 s on two cores)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("galsim", reason="visitcal.sim needs GalSim (pip install 'visitcal[sim]')")

from visitcal.io import read_catalog, read_exposure  # noqa: E402
from visitcal.sim import SimRepository  # noqa: E402

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial"
REPO = "tutorial_repo"
DETECTORS = [(1000, 0), (1000, 1), (1001, 0), (1001, 1)]


def tutorial_commands() -> list[list[str]]:
    """The command lines of docs/tutorial/commands.sh (comments and blank lines dropped)."""
    lines = [line.strip() for line in (TUTORIAL / "commands.sh").read_text().splitlines()]
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def _visitcal() -> list[str]:
    exe = shutil.which("visitcal")
    return [exe] if exe else [sys.executable, "-m", "visitcal.cli"]


def _env() -> dict:
    # the subprocesses import the same visitcal as this test (a source tree on PYTHONPATH or the installed one)
    import visitcal

    env = dict(os.environ)
    package_parent = str(Path(visitcal.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_parent, env.get("PYTHONPATH")] if p)
    return env


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """Run the tutorial's commands in an empty directory; returns the directory and their outputs."""
    cwd = tmp_path_factory.mktemp("tutorial")
    outputs = []
    for argv in tutorial_commands():
        assert argv[0] == "visitcal", f"the tutorial runs only visitcal commands, not {argv[0]!r}"
        proc = subprocess.run(_visitcal() + argv[1:], cwd=cwd, env=_env(), capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        outputs.append((argv[1], proc.stdout))
    return cwd, outputs


def test_the_commands_are_the_whole_chain_and_the_page_shows_them():
    assert [argv[1] for argv in tutorial_commands()] == ["sim", "calibrate", "associate", "finalize", "reprocess",
                                                         "status", "run", "qa"]
    page = (TUTORIAL / "index.rst").read_text()
    assert ".. literalinclude:: commands.sh" in page and ".. literalinclude:: inspect_repo.py" in page


def test_every_detector_and_tract_is_ok(tutorial):
    cwd, outputs = tutorial
    root = cwd / REPO
    for step in ("calibrate", "finalize", "reprocess"):
        for visit, detector in DETECTORS:
            record = json.loads((root / "provenance" / step / f"{visit:06d}_{detector:03d}.json").read_text())
            assert record["status"] == "ok", (step, visit, detector, record)
    tracts = list((root / "provenance" / "associate").glob("*.json"))
    assert tracts and all(json.loads(p.read_text())["status"] == "ok" for p in tracts)
    # the per-step summary lines the tutorial tells the reader to look at
    printed = dict(outputs)
    assert "4 of 4 detectors calibrated" in printed["calibrate"]
    assert "4 of 4 detectors finalized" in printed["finalize"]
    assert "4 of 4 detectors reprocessed" in printed["reprocess"]
    status = printed["status"].splitlines()
    assert status[0].split() == ["step", "done", "out", "of", "date", "failed", "missing"]
    assert [line.split() for line in status[1:6]] == [
        ["calibrate", "4", "0", "0", "0"], ["associate", str(len(tracts)), "0", "0", "0"],
        ["finalize", "4", "0", "0", "0"], ["visit_summary", "2", "0", "0", "0"], ["reprocess", "4", "0", "0", "0"]]
    for step, n in (("calibrate", 4), ("finalize", 4), ("visit_summary", 2), ("reprocess", 4)):
        assert re.search(rf"== {step}: {n} units, {n} done \(\d+ degraded, {n} skipped, up to date\), 0 failed", printed["run"])


def test_the_qa_report_is_written_and_every_detector_is_ok(tutorial):
    import pyarrow.parquet as pq

    cwd, outputs = tutorial
    qa = cwd / REPO / "qa"
    assert (qa / "index.html").is_file() and "qa report:" in dict(outputs)["qa"]
    for visit in (1000, 1001):
        page = (qa / f"{visit:06d}" / "index.html").read_text()
        assert 'id="truth"' in page and "This section failed" not in page
        t = pq.read_table(qa / f"{visit:06d}" / f"metrics_{visit:06d}.parquet").to_pydict()
        rows = {(d, m): (v, g) for d, m, v, g in zip(t["detector"], t["metric"], t["value"], t["grade"])}
        for _, detector in DETECTORS:
            assert rows[(detector, "nStepsFailed")] == (0.0, "ok")
            assert rows[(detector, "truthWcsRms")][0] < 10.0          # mas, the final WCS against the truth


def test_visit_images_in_njy_with_their_sources_and_psf_near_truth(tutorial):
    cwd, _ = tutorial
    root = cwd / REPO
    truth = SimRepository(root)
    for visit, detector in DETECTORS:
        exposure = read_exposure(root / "visit_image" / f"{visit:06d}" / f"visit_image_{visit:06d}_{detector:03d}.fits")
        assert exposure.metadata["BUNIT"] == "nJy"
        sources = read_catalog(root / "source" / f"{visit:06d}" / f"source_{visit:06d}_{detector:03d}.parquet")
        assert len(sources) > 300 and np.sum(sources["calib_psf_used"]) >= 20
        assert np.isfinite(np.asarray(sources["base_PsfFlux_flux"])).mean() > 0.9
        # the refitted PSF's size within 2% of the true PSF's over the detector
        for x, y in [(200.0, 200.0), (1024.0, 1024.0), (1850.0, 1850.0)]:
            fitted, true = exposure.psf.compute_shape(x, y), truth.true_psf(visit, detector).compute_shape(x, y)
            assert abs((fitted.xx + fitted.yy) / (true.xx + true.yy) - 1) < 0.02, (visit, detector, x, y)


def test_the_tutorial_python_runs(tutorial):
    cwd, _ = tutorial
    proc = subprocess.run([sys.executable, str(TUTORIAL / "inspect_repo.py")], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "nJy" in proc.stdout
    matched = [line for line in proc.stdout.splitlines() if "PSF stars matched" in line]
    assert matched
    mmag = float(matched[0].split("=")[1].split()[0])
    assert abs(mmag) < 20          # calibrated PSF fluxes of the PSF stars agree with the true fluxes
