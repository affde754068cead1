"""Temporary files of `atomic_write` carry their writer's host and pid, so a killed writer's are removed
and a live one's are kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import numpy as np
from astropy.io import fits
from astropy.table import Table

from visitcal.core.atomic import atomic_write, atomic_write_fits, host_tag, process_alive, remove_stale_temporaries


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_name_carries_host_and_pid(tmp_path):
    with atomic_write(tmp_path / "a.txt", "w") as fh:
        assert os.path.basename(fh.name).startswith(f".a.txt.{host_tag()}.{os.getpid()}.")
        assert fh.name.endswith(".tmp")
        assert remove_stale_temporaries(tmp_path) == []  # our own, live
        fh.write("x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_only_dead_writers_temporaries_are_removed(tmp_path):
    dead_pid = _dead_pid()
    assert not process_alive(dead_pid) and process_alive(os.getppid())
    (tmp_path / "sub").mkdir()
    dead = tmp_path / "sub" / f".x.fits.{host_tag()}.{dead_pid}.k2j4_9zq.tmp"
    live = tmp_path / f".y.fits.{host_tag()}.{os.getppid()}.aaaaaaaa.tmp"
    other_host = tmp_path / f".z.fits.otherhost.{dead_pid}.aaaaaaaa.tmp"
    unrelated = tmp_path / f".w.{dead_pid}.tmp"
    for path in (dead, live, other_host, unrelated):
        path.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other_host.exists() and unrelated.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="zombies are told apart through Linux's /proc")
def test_a_zombie_writer_is_dead(tmp_path):
    """A killed writer that nobody reaped (a zombie) writes nothing more: its temporary is stale."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child exits at once and stays a zombie until reaped below
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process_alive(child):
            time.sleep(0.01)
        assert not process_alive(child)
        stale = tmp_path / f".x.fits.{host_tag()}.{child}.abcd1234.tmp"
        stale.write_bytes(b"partial")
        assert remove_stale_temporaries(tmp_path) == [stale]
    finally:
        os.waitpid(child, 0)


def test_fits_checksums_match_tables_with_blank_padded_strings(tmp_path):
    """astropy turns a string column's trailing blanks into NULs only while writing: the checksums that
    atomic_write_fits adds must be those of the written bytes, and the same table gives the same bytes."""
    table = Table({"status": ["ok", "failed  ", "two words "], "n": [1, 2, 3]})
    for name in ("a.fits", "b.fits"):
        hdus = fits.HDUList([fits.PrimaryHDU(np.arange(4.0)), fits.table_to_hdu(table)])
        atomic_write_fits(hdus, tmp_path / name)
    with fits.open(tmp_path / "a.fits") as hdul:
        assert [(h.verify_checksum(), h.verify_datasum()) for h in hdul] == [(1, 1), (1, 1)]
        assert hdul[1].data["status"].tolist() == ["ok", "failed", "two words"]
    assert (tmp_path / "a.fits").read_bytes() == (tmp_path / "b.fits").read_bytes()
