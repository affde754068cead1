"""Temporary files of `atomic_write` carry their writer's host and pid, so a killed writer's are removed
and a live one's are kept."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy as np
from astropy.io import fits
from astropy.table import Table

from visitcal.core.atomic import (atomic_write, atomic_write_fits, digest_while_syncing, host_tag, process_alive,
                                  remove_stale_temporaries)


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


@settings(max_examples=25, deadline=None)
@given(payload=st.binary(min_size=0, max_size=3 << 20), text=st.booleans())
def test_digest_while_syncing_is_the_sha256_of_the_written_bytes(tmp_path_factory, payload, text):
    """The hash taken by a second thread during fsync (issue 25) is hashlib's SHA-256 of the file put in
    place, for binary and text writes; a write to another path inside the block is not hashed."""
    folder = tmp_path_factory.mktemp("sync")
    path, other = folder / "product.bin", folder / "other.bin"
    with digest_while_syncing(path) as synced:
        with atomic_write(other) as f:
            f.write(b"not this one")
        if text:
            with atomic_write(path, "w") as f:
                f.write(payload.hex())
        else:
            with atomic_write(path) as f:
                f.write(payload)
    assert synced["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_digest_while_syncing_without_a_write_leaves_no_digest(tmp_path):
    path = tmp_path / "product.bin"
    with digest_while_syncing(path) as synced:
        path.write_bytes(b"written without atomic_write")
    assert "sha256" not in synced
    with atomic_write(path) as f:  # outside any block: no hashing, no error
        f.write(b"x")
    assert path.read_bytes() == b"x"


def test_write_product_digest_matches_a_fresh_hash_for_a_fits_product(tmp_path):
    """A FITS product written through `atomic_write_fits` inside `write_product` returns (and records) the
    digest of its bytes, hashed during its fsync."""
    from visitcal.pipeline.repository import write_product

    hdus = fits.HDUList([fits.PrimaryHDU(np.arange(30000, dtype=np.float32).reshape(100, 300))])
    path = tmp_path / "p.fits"
    digest = write_product(path, lambda p: atomic_write_fits(hdus, p, overwrite=True), root=tmp_path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
