"""The C++ harness bench/cpp/bench_core reads what bench/cpp/make_inputs.py writes (issue 25).

* Always: every control field make_inputs.py stores (every public field of the bound control structs) is
  read by the harness's source, so a field added to a control cannot be left at its C++ default there.
* When the harness is built (``cmake -DVISITCAL_BUILD_BENCH=ON``, see bench/README.md; CI does not build
  it, so this test is skipped there): small inputs of every case (PSF stamps, a convolution image,
  a background image, a measured exposure) are written with make_inputs.py's own functions, the harness
  is run on them, and each of its check values (PSF fit chi2 and star counts, sums of the convolved
  images and of the background model, the measured PSF fluxes) must equal the value the Python binding
  gave on the same arrays to 1e-9 relative: the harness parsed every array and control value as Python
  passed them. ``VISITCAL_BENCH_CORE`` names the executable (default build/bench/bench/cpp/bench_core).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from visitcal import _core

REPO = Path(__file__).resolve().parents[2]
MAKE_INPUTS = REPO / "bench" / "cpp" / "make_inputs.py"
HARNESS_SOURCE = REPO / "bench" / "cpp" / "bench_core.cpp"
HARNESS = Path(os.environ.get("VISITCAL_BENCH_CORE", REPO / "build" / "bench" / "bench" / "cpp" / "bench_core"))

pytestmark = pytest.mark.skipif(not MAKE_INPUTS.exists(), reason="bench/ is not beside the tests")


@pytest.fixture(scope="module")
def make_inputs():
    """bench/cpp/make_inputs.py as a module; its import-time changes (thread env vars, sys.path) undone."""
    env, path = dict(os.environ), list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location("visitcal_bench_make_inputs", MAKE_INPUTS)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = path


def test_harness_reads_every_stored_control_field(make_inputs):
    source = HARNESS_SOURCE.read_text()
    read = set(re.findall(r'kv\.(?:set|str|num|nums|integer|flag)\("([^"]+)"', source))
    controls = {"pixel_grid": _core.PixelGridControl(), "pca": _core.PcaPsfControl(),
                "background": _core.BackgroundControl(), "measure": _core.SingleFrameMeasurementControl()}
    for case, ctrl in controls.items():
        keys = {k for k, _ in make_inputs.control_items(ctrl)}
        assert len(keys) >= 6, case
        missing = keys - read
        assert not missing, f"{case}: control fields stored by make_inputs.py but not read by bench_core.cpp: {missing}"


def _gaussian_stamps(rng, m, side, box):
    """m noisy Gaussian stars (sigma varying linearly over the box) on stamps centred as make_psf_candidates cuts."""
    from visitcal.psf.candidates import PsfCandidates

    xs, ys = rng.uniform(20, box - 20, m), rng.uniform(20, box - 20, m)
    img = np.zeros((m, side, side))
    xy0 = np.zeros((m, 2), np.int32)
    yy, xx = np.mgrid[0:side, 0:side]
    for k in range(m):
        xy0[k] = (np.floor(xs[k] + 0.5) - side // 2, np.floor(ys[k] + 0.5) - side // 2)
        sigma = 1.6 + 0.3 * xs[k] / box
        r2 = (xx + xy0[k, 0] - xs[k]) ** 2 + (yy + xy0[k, 1] - ys[k]) ** 2
        img[k] = 2e4 * np.exp(-0.5 * r2 / sigma**2) / (2 * np.pi * sigma**2)
    var = 100.0 + img
    img = img + rng.normal(size=img.shape) * np.sqrt(var)
    table = {"x": xs, "y": ys, "used": np.ones(m, bool)}
    return PsfCandidates(img.astype(np.float32), np.zeros(img.shape, np.int32), var.astype(np.float32), xy0, table)


def _exposure(rng, ny=200, nx=220, n_stars=12, sigma=1.8):
    from visitcal.core.image import Exposure
    from visitcal.core.wcs import make_tan_sip_wcs
    from visitcal.psf.models import GaussianPsf

    yy, xx = np.mgrid[0:ny, 0:nx]
    model = np.zeros((ny, nx))
    for x, y, f in zip(rng.uniform(15, nx - 15, n_stars), rng.uniform(15, ny - 15, n_stars),
                       10 ** rng.uniform(3.5, 5, n_stars)):
        model += f * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2) / (2 * np.pi * sigma**2)
    var = 25.0 + model
    image = (model + rng.normal(size=model.shape) * np.sqrt(var)).astype(np.float32)
    wcs = make_tan_sip_wcs((nx / 2, ny / 2), (150.0, 2.0), np.diag([-0.2, 0.2]) / 3600.0)
    return Exposure.from_arrays(image, np.zeros((ny, nx), np.int32), var.astype(np.float32), wcs=wcs,
                                psf=GaussianPsf(sigma, average_position=(nx / 2, ny / 2)))


@pytest.mark.skipif(not HARNESS.exists(), reason=f"the C++ harness is not built ({HARNESS})")
def test_harness_reproduces_the_python_calls_on_stored_inputs(make_inputs, tmp_path):
    pytest.importorskip("scipy")  # bench_convolve.py, which conv_case reuses, imports scipy
    from visitcal.core.geom import Box2I
    from visitcal.psf.pca import PcaPsfDeterminerConfig
    from visitcal.psf.pixel_grid import PixelGridPsfDeterminerConfig

    rng = np.random.default_rng(20261207)
    cand = _gaussian_stamps(rng, 40, 27, 600)
    bbox = Box2I(0, 0, 599, 599)
    built = {
        "pixel_grid": make_inputs.psf_case("pixel_grid", tmp_path, cand, bbox, PixelGridPsfDeterminerConfig(spatial_order=1)),
        "pca": make_inputs.psf_case("pca", tmp_path, cand, bbox, PcaPsfDeterminerConfig(spatial_order=1)),
        "conv": make_inputs.conv_case(tmp_path, ny=130, nx=110, stars=8),
        "background": make_inputs.background_case(
            tmp_path, image=(500.0 + 10.0 * rng.normal(size=(300, 270))).astype(np.float32)),
        "measure": make_inputs.measure_case(tmp_path, _exposure(rng)),
    }
    make_inputs.write_checks(tmp_path, built)
    out = tmp_path / "bench_core.json"
    run = subprocess.run([str(HARNESS), "--inputs", str(tmp_path), "--repeat", "1", "--cpu", "-1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(out.read_text())
    assert doc["checks_agree"] is True
    checks = {(row["case"], key): value for row in doc["cases"] for key, value in row["check"].items()}
    expected = {(case, key) for case, b in built.items() for key in b["check"]}
    assert set(checks) == expected
    for (case, key), value in checks.items():
        python = built[case]["check"][key]
        assert value["python"] == pytest.approx(python, rel=1e-12)
        assert value["harness"] == pytest.approx(python, rel=1e-9), (case, key)
    assert built["measure"]["check"]["psf_flux_finite"] >= 8  # the stars were measured, not just flagged
    assert built["pixel_grid"]["check"]["n_used"] >= 30 and built["pca"]["check"]["n_used"] >= 30
