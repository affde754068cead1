"""Shared pytest fixtures."""

from __future__ import annotations

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
