"""Shared pytest fixtures."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest


def _pin_openblas_kernels() -> None:
    """Make numpy's OpenBLAS use its Haswell (AVX2 + FMA) kernels on every x86-64 machine that has them.

    OpenBLAS picks its kernels by CPU at load time (Haswell on a Zen, SkylakeX on a Xeon with AVX-512), and
    their sums round differently in the last bit, which reaches the products through numpy's linear algebra
    (the astrometric and photometric fits): the stored product digests (tests/sim/test_products_sim.py)
    were written with the Haswell kernels. Runs before numpy is imported (no pytest plugin imports it) and
    is inherited by the xdist workers and every subprocess; an OPENBLAS_CORETYPE already set is kept.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return
    if "avx2" in flags and "fma" in flags:
        os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")


_pin_openblas_kernels()

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """``<repo>/../shared/realdata`` (see its README.md); the test is skipped when it is absent."""
    if not (REALDATA / "README.md").is_file():
        pytest.skip(f"real data not found at {REALDATA} (expected <repo>/../shared/realdata)")
    return REALDATA


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (long integration runs)")
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="tests/fuzz: 2000 random examples per test instead of the CI budget "
                          "(same as VISITCAL_FUZZ_EXAMPLES=2000; an explicit VISITCAL_FUZZ_EXAMPLES wins)")


def pytest_configure(config):
    # read by tests/fuzz/_fuzz.py when the fuzz modules are imported, after this
    if config.getoption("--fuzz-long") and not os.environ.get("VISITCAL_FUZZ_EXAMPLES"):
        os.environ["VISITCAL_FUZZ_EXAMPLES"] = "2000"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
