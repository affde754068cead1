"""One processing command per repository at a time: ``ROOT/.visitcal.lock``.

Two commands writing the same repository would interleave their products and provenance. The lock is a
file created atomically (``O_CREAT | O_EXCL``) holding its holder's process id, host and start time; a
second command stops with a message naming the holder. A lock left by a process that died (``kill -9``, a
reboot) is taken over when its holder was on this host and is gone; one from another host is never taken
over, since its process cannot be checked from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
from pathlib import Path

from ..core.atomic import host_tag, process_alive, remove_stale_temporaries

__all__ = ["LOCK_NAME", "RepositoryLock", "RepositoryLockedError", "repository_lock"]

LOCK_NAME = ".visitcal.lock"


class RepositoryLockedError(RuntimeError):
    """The repository is locked by another command (its ``pid``, ``host`` and start time ``since``)."""

    def __init__(self, message: str, pid: int | None = None, host: str | None = None, since: str | None = None):
        super().__init__(message)
        self.pid, self.host, self.since = pid, host, since

    def __reduce__(self):
        return type(self), (str(self), self.pid, self.host, self.since)


@dataclasses.dataclass(frozen=True)
class RepositoryLock:
    """A held lock: its file, holder and the stale temporary files removed when it was taken."""

    path: Path
    pid: int
    host: str
    since: str
    removed_temporaries: tuple[Path, ...] = ()


@contextlib.contextmanager
def repository_lock(root, *, clean: bool = True):
    """Hold ``root/.visitcal.lock`` for the duration of the block.

    Parameters
    ----------
    root : path
        The repository folder (it must exist).
    clean : bool
        Once the lock is held, delete the temporary files that killed writers left in ``root``
        (`visitcal.core.atomic.remove_stale_temporaries`): no other command writes there then.

    Yields
    ------
    RepositoryLock

    Raises
    ------
    RepositoryLockedError
        Another live process holds the lock, or the lock is from another host, or unreadable.

    Notes
    -----
    Not re-entrant: taking it twice in one process raises. The lock is removed on exit only if it is still
    this holder's. It is advisory: only visitcal's commands look at it.
    """
    root = Path(root)
    path = root / LOCK_NAME
    lock = _acquire(root, path)
    try:
        if clean:
            lock = dataclasses.replace(lock, removed_temporaries=tuple(remove_stale_temporaries(root)))
        yield lock
    finally:
        if _read(path) == _content(lock):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _content(lock: RepositoryLock) -> dict:
    return {"pid": lock.pid, "host": lock.host, "since": lock.since}


def _acquire(root: Path, path: Path) -> RepositoryLock:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such repository folder")
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lock = RepositoryLock(path, os.getpid(), host_tag(), since)
    for _ in range(3):  # a stale lock taken over by someone else meanwhile: look again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None:
                if not path.exists():
                    continue
                raise RepositoryLockedError(
                    f"repository {root} is locked by an unreadable {path}; remove it if no visitcal command "
                    "is processing this repository") from None
            if holder.get("host") != lock.host or process_alive(int(holder.get("pid", 0))):
                raise _locked(root, path, holder) from None
            _take_over(path, holder)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(_content(lock), fh)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        return lock
    raise _locked(root, path, _read(path) or {})


def _take_over(path: Path, holder: dict) -> None:
    """Move a dead holder's lock aside (atomic rename), checking it is still that lock: if another process
    replaced it between our read and our rename, put theirs back."""
    aside = path.with_name(f"{LOCK_NAME}.stale-{host_tag()}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != holder:  # a live lock moved by mistake: restore it unless a new one exists
        with contextlib.suppress(FileExistsError, OSError):
            os.link(aside, path)
    with contextlib.suppress(FileNotFoundError):
        aside.unlink()


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None
    return holder if isinstance(holder, dict) else None


def _locked(root: Path, path: Path, holder: dict) -> RepositoryLockedError:
    pid, host, since = holder.get("pid"), holder.get("host"), holder.get("since")
    return RepositoryLockedError(
        f"repository {root} is being processed by pid {pid} on host {host} since {since}; wait for it or "
        f"remove {path} if that process is gone", pid, host, since)
