"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
