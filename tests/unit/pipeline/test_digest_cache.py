"""The repository's digest cache (visitcal.pipeline.digest_cache): a file is hashed once, and a cached digest is
never given for content it was not computed from (checked against hashlib on every change a user can make)."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from visitcal.pipeline import digest_cache
from visitcal.pipeline.digest_cache import CACHE_DIR, DigestCache
from visitcal.pipeline.repository import Repository, file_digest, write_product

GUARD = 0.03  # s: past the 20 ms racy guard


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def counted(monkeypatch):
    """Count the files actually hashed (sha256_file calls)."""
    calls = []
    real = digest_cache.sha256_file

    def counting(path):
        calls.append(os.path.basename(path))
        return real(path)
    monkeypatch.setattr(digest_cache, "sha256_file", counting)
    return calls


def _settled(path, data: bytes):
    path.write_bytes(data)
    time.sleep(GUARD)
    return path


def test_a_file_is_hashed_once_then_served_from_the_cache(tmp_path, counted):
    f = _settled(tmp_path / "a.bin", os.urandom(5000))
    cache = DigestCache(tmp_path)
    assert cache.digest(f) == _sha(f) and counted == ["a.bin"]
    assert DigestCache(tmp_path).digest(f) == _sha(f) and counted == ["a.bin"]  # another process, same entry
    entries = list((tmp_path / CACHE_DIR).glob("*.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text())["path"] == "a.bin"


def test_same_size_rewrite_with_the_mtime_restored_is_hashed_again(tmp_path, counted):
    """``cp -p`` / ``rsync -t`` in place: size and mtime as before, but the status-change time moved."""
    f = _settled(tmp_path / "a.bin", b"x" * 4096)
    cache = DigestCache(tmp_path)
    old = cache.digest(f)
    st = os.stat(f)
    f.write_bytes(b"y" * 4096)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_mtime_ns == st.st_mtime_ns and os.stat(f).st_size == st.st_size
    assert cache.digest(f) == _sha(f) != old
    assert counted == ["a.bin", "a.bin"]


def test_a_replaced_file_misses(tmp_path):
    f = _settled(tmp_path / "a.bin", b"1" * 100)
    cache = DigestCache(tmp_path)
    cache.digest(f)
    other = _settled(tmp_path / "b.bin", b"2" * 100)
    os.replace(other, f)  # another inode under the same name
    assert cache.digest(f) == _sha(f) == hashlib.sha256(b"2" * 100).hexdigest()


def test_an_entry_recorded_within_the_guard_is_not_stored(tmp_path, counted):
    """git's racy case: a change in the same timestamp tick as the recorded state would keep its ctime."""
    f = tmp_path / "fresh.bin"
    f.write_bytes(b"z" * 64)
    cache = DigestCache(tmp_path)
    before = os.stat(f)
    assert not cache.store(f, _sha(f), before)  # written just now: not trusted yet
    time.sleep(GUARD)
    assert cache.store(f, _sha(f), before)
    assert cache.lookup(f) == _sha(f)
    f.write_bytes(b"w" * 64)  # changed after it was recorded: the state differs
    assert cache.lookup(f) is None


def test_an_entry_for_another_state_or_a_corrupt_one_is_a_miss(tmp_path):
    f = _settled(tmp_path / "a.bin", b"abc" * 10)
    cache = DigestCache(tmp_path)
    cache.digest(f)
    entry = next((tmp_path / CACHE_DIR).glob("*.json"))
    for text in ("{not json", json.dumps({"version": 1, "path": "a.bin"}), ""):
        entry.write_text(text)
        assert cache.lookup(f) is None
        assert cache.digest(f) == _sha(f)
    data = json.loads(entry.read_text())
    data["sha256"] = "0" * 64
    data["state"][2] += 1  # another size: not this file's state
    entry.write_text(json.dumps(data))
    assert cache.lookup(f) is None


def test_files_outside_the_repository_and_the_switch(tmp_path, monkeypatch, counted):
    root = tmp_path / "repo"
    root.mkdir()
    outside = _settled(tmp_path / "out.bin", b"o" * 10)
    cache = DigestCache(root)
    assert cache.digest(outside) == _sha(outside) and not (root / CACHE_DIR).exists()
    monkeypatch.setenv("VISITCAL_DIGEST_CACHE", "0")
    f = _settled(root / "a.bin", b"a" * 10)
    off = DigestCache(root)
    assert off.digest(f) == off.digest(f) == _sha(f)
    assert counted == ["out.bin", "a.bin", "a.bin"] and not (root / CACHE_DIR).exists()


def test_a_written_product_is_not_hashed_again_by_its_consumers(tmp_path, counted):
    repo = Repository(tmp_path)
    path = tmp_path / "visit_image" / "big.fits"
    payload = os.urandom(digest_cache._RECORD_ON_WRITE_BYTES)
    digest = write_product(path, lambda p: p.write_bytes(payload), root=tmp_path)
    assert digest == hashlib.sha256(payload).hexdigest()
    hashed = len(counted)  # the temporary (the existing product was missing)
    assert repo.digests([path]) == {"visit_image/big.fits": digest}
    assert file_digest(path, repo.digest_cache) == digest
    assert len(counted) == hashed  # served from the entry recorded at the write
    small = tmp_path / "visit_image" / "small.fits"
    write_product(small, lambda p: p.write_bytes(b"s" * 100), root=tmp_path)
    assert repo.digests([small])["visit_image/small.fits"] == hashlib.sha256(b"s" * 100).hexdigest()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.binary(min_size=1, max_size=300), second=st.binary(min_size=1, max_size=300),
       restore_mtime=st.booleans(), same_size=st.booleans())
def test_the_cache_never_gives_a_digest_of_other_content(tmp_path, first, second, restore_mtime, same_size):
    if same_size:
        second = (second * (len(first) // len(second) + 1))[:len(first)]
    f = _settled(tmp_path / "p.bin", first)
    cache = DigestCache(tmp_path)
    assert cache.digest(f) == hashlib.sha256(first).hexdigest()
    st_ = os.stat(f)
    f.write_bytes(second)
    if restore_mtime:
        os.utime(f, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    assert cache.digest(f) == hashlib.sha256(second).hexdigest()
