"""A repository's cache of file digests, so that each file is hashed once rather than by every unit that reads
it (issue 25).

Provenance records the SHA-256 of every file a unit reads and writes (`visitcal.pipeline.repository`), and a unit
is skipped only when they are unchanged. Without a cache every unit hashes all its inputs again: a 4k detector's
two snaps (0.4 GB) in calibrate and again in reprocess, its ``preliminary_visit_image`` in finalize, in the visit
summary and in reprocess, about 1.2 s of hashing per detector and chain, and as much on an up-to-date rerun.

An entry, ``REPO/.visitcal/digests/<sha256 of the relative path>.json``, holds a file's digest with the identity
of the file's state when it was hashed: device, inode, size, modification and status-change times (ns). It is
used only while all of them are unchanged. The status-change time (``st_ctime``) cannot be set by a program:
every write, ``truncate``, ``utime``/``touch -d``, ``chmod`` or rename of the file moves it to the present, so a
file rewritten with its size and modification time restored (``cp -p``, ``rsync -t`` in place) still misses.

The one gap is git's "racy" case: a change within the same timestamp tick as the state recorded keeps the
status-change time. An entry is therefore trusted only when it was recorded at least a guard interval after that
time: 20 ms on file systems with sub-millisecond timestamps (Linux's tick is 1-10 ms), 2 s where timestamps are
whole seconds or milliseconds (ext3, FAT, some network file systems). The digest of a product written by a unit
is recorded right after its rename, once the guard has passed (`record_written`: a wait of at most 20 ms, and only
for files of 8 MiB or more, whose hashing costs more than the wait).

The cache is an optimisation only: an entry that is missing, unreadable, from another version or for another
file is a miss and the file is hashed; failing to write an entry (a read-only repository) is ignored. Set
``VISITCAL_DIGEST_CACHE=0`` to hash every file every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from ..core.atomic import temporary_path

__all__ = ["CACHE_DIR", "DigestCache", "sha256_file"]

#: Where the entries live, relative to the repository root.
CACHE_DIR = Path(".visitcal") / "digests"
_VERSION = 1
_FINE_GUARD_NS = 20_000_000  # timestamps with sub-ms digits: 20 ms covers a 1-10 ms kernel tick
_COARSE_GUARD_NS = 2_000_000_000  # whole seconds or milliseconds (FAT's 2 s included)
_RECORD_ON_WRITE_BYTES = 8 << 20  # below this, hashing again costs less than waiting out the guard


def sha256_file(path) -> str:
    """SHA-256 (64 hex digits) of a file's bytes, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            h.update(block)
    return h.hexdigest()


def _state(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _guard_ns(st: os.stat_result) -> int:
    """The racy-change guard for this file system, told by its timestamps' resolution."""
    fine = st.st_ctime_ns % 1_000_000 or st.st_mtime_ns % 1_000_000
    return _FINE_GUARD_NS if fine else _COARSE_GUARD_NS


class DigestCache:
    """The digest cache of the repository at ``root`` (see the module docstring).

    Parameters
    ----------
    root : path-like
        The repository root; only files under it are cached.
    enabled : bool, optional
        False hashes every time; by default True unless ``VISITCAL_DIGEST_CACHE=0``.
    """

    def __init__(self, root, enabled: bool | None = None):
        self.root = Path(os.path.abspath(root))
        self.dir = self.root / CACHE_DIR
        self.enabled = os.environ.get("VISITCAL_DIGEST_CACHE", "1") != "0" if enabled is None else bool(enabled)

    def _entry_path(self, path) -> tuple[str, Path] | None:
        """``(path relative to the root, its entry's path)``; None when the cache is off or ``path`` lies outside
        the repository."""
        if not self.enabled:
            return None
        rel = os.path.relpath(os.path.abspath(path), self.root)
        if rel.startswith(os.pardir) or os.path.isabs(rel):
            return None
        rel = Path(rel).as_posix()
        return rel, self.dir / (hashlib.sha256(rel.encode()).hexdigest()[:40] + ".json")

    def lookup(self, path) -> str | None:
        """The cached digest of ``path`` in its present state, or None (a miss)."""
        where = self._entry_path(path)
        if where is None:
            return None
        rel, entry_path = where
        try:
            st = os.stat(path)
            with open(entry_path, encoding="utf-8") as f:
                entry = json.load(f)
            if (entry.get("version") != _VERSION or entry.get("path") != rel or entry.get("state") != _state(st)
                    or entry["recorded_ns"] - st.st_ctime_ns < _guard_ns(st)):
                return None
            digest = entry["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return digest if isinstance(digest, str) and len(digest) == 64 else None

    def store(self, path, digest: str, before: os.stat_result) -> bool:
        """Record ``digest`` for ``path`` if the file is still in the state ``before`` (its `os.stat` taken before
        it was hashed) and the guard has passed since that state began. Returns whether it was recorded."""
        where = self._entry_path(path)
        if where is None:
            return False
        rel, entry_path = where
        try:
            st = os.stat(path)
            now = time.time_ns()
            if _state(st) != _state(before) or now - st.st_ctime_ns < _guard_ns(st):
                return False
            payload = json.dumps({"version": _VERSION, "path": rel, "state": _state(st), "recorded_ns": now,
                                  "sha256": digest})
            entry_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_path(entry_path)
            try:
                tmp.write_text(payload, encoding="utf-8")
                os.replace(tmp, entry_path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        except OSError:
            return False
        return True

    def digest(self, path) -> str:
        """SHA-256 of ``path``'s bytes: from the cache, or computed and recorded."""
        cached = self.lookup(path)
        if cached is not None:
            return cached
        before = os.stat(path)
        digest = sha256_file(path)
        self.store(path, digest, before)
        return digest

    def record_written(self, path, digest: str, written: os.stat_result) -> bool:
        """Record the digest of a product just put in place at ``path`` (hashed as its temporary, whose
        `os.stat` was ``written``): the same file (device, inode, size, modification time) is waited for until
        the guard has passed (at most 20 ms), then recorded. Small files and coarse timestamps are left to the
        next reader. Returns whether it was recorded."""
        if not self.enabled or written.st_size < _RECORD_ON_WRITE_BYTES:
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        if _state(st)[:4] != _state(written)[:4] or _guard_ns(st) != _FINE_GUARD_NS:
            return False
        wait = st.st_ctime_ns + _FINE_GUARD_NS - time.time_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        return self.store(path, digest, st)
