"""Atomic file writes: a temporary file in the destination folder, fsync, then rename.

A reader never sees a half-written file, and a failed write leaves an existing file untouched
(POSIX ``rename`` is atomic within one file system, which is why the temporary file is created in
the destination's own folder, not in ``/tmp``).

A temporary file is named ``.<name>.<host>.<pid>.<random>.tmp`` after its writer, so that
`remove_stale_temporaries` can delete the ones a killed process left behind (``kill -9``, the OOM
killer, a power cut) without touching those of a writer that is still running.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import re
import socket
import tempfile
import threading
from pathlib import Path


__all__ = ["atomic_write", "atomic_write_fits", "digest_while_syncing", "host_tag", "process_alive",
           "remove_stale_temporaries", "temporary_path"]

# ".<name>.<host>.<pid>.<8 random characters from tempfile>.tmp", optionally followed by the product's own
# extension (".tmp.fits": writers that choose the format by the extension); the host tag has no dots (host_tag)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)\.(?P<pid>\d+)\.(?P<random>[a-z0-9_]{8})\.tmp"
                        r"(?:\.[A-Za-z0-9]+)?$")


def host_tag() -> str:
    """This host's name as it appears in temporary and lock names: the short host name, without dots
    or path separators (``"node12"`` for ``node12.cluster.example.org``)."""
    name = socket.gethostname().split(".")[0] or "localhost"
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def process_alive(pid: int) -> bool:
    """Whether a process with this id is running on this host (a zombie, which can write nothing more,
    counts as dead: killed workers whose parent died may stay zombies where PID 1 does not reap them).

    Errs towards alive: a process of another user (``EPERM``) is alive, and so is an unrelated process
    that reused the id, so callers that delete a dead process's leftovers may keep some but never delete
    a live one's.
    """
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # no signals on this platform: do not guess
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` is a zombie (Linux ``/proc``; False where it cannot be told)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")"
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def temporary_path(path, *, keep_suffix: bool = False) -> Path:
    """A fresh hidden temporary name beside ``path`` that `remove_stale_temporaries` recognises:
    ``.<name>.<host>.<pid>.<random>.tmp``, with ``path``'s extension appended when ``keep_suffix`` (for
    writers that choose the format by the extension). The file is not created."""
    path = Path(path)
    random = next(tempfile._get_candidate_names())  # 8 characters of [a-z0-9_], as mkstemp's
    tail = path.suffix if keep_suffix else ""
    return path.with_name(f".{path.name}.{host_tag()}.{os.getpid()}.{random}.tmp{tail}")


def remove_stale_temporaries(root) -> list[Path]:
    """Delete, anywhere under ``root``, the temporary files of `atomic_write` whose writer was on this
    host and is no longer running. Returns the removed paths, sorted.

    A writer that was killed before its rename leaves its hidden ``.<name>.<host>.<pid>.<random>.tmp``
    behind; the destination itself is untouched (the old file, or none). Temporaries of a live process,
    of another host (a shared file system) and files of any other name are kept. Safe to call while other
    processes write into ``root``. Cost: one directory walk (about 0.1 s per 10,000 files).
    """
    host = host_tag()
    removed = []
    for folder, _, files in os.walk(root):
        for name in files:
            match = _TEMPORARY.match(name)
            if match is None or match["host"] != host or process_alive(int(match["pid"])):
                continue
            path = Path(folder) / name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return sorted(removed)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is not thread-safe)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/file system lets a directory be fsync'ed
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# {destination path: its SHA-256 once written} for the writes under `digest_while_syncing`.
_DIGEST_REQUESTS: contextvars.ContextVar[dict[Path, str | None] | None] = contextvars.ContextVar(
    "visitcal_digest_requests", default=None)


@contextlib.contextmanager
def digest_while_syncing(path):
    """Ask the `atomic_write` of ``path`` made inside the block for the SHA-256 of what it wrote.

    The file is hashed by a second thread while the writer waits for ``fsync`` (hashlib releases the
    GIL), so the digest costs no extra time when the disk is slower than the hash, as it is for a 4k
    exposure (issue 25: ~0.1 s of fsync per 195 MB product that a hash after the write paid on top).
    Yields a dict whose ``"sha256"`` is set after the block when that write happened and its hash
    succeeded (64 hex digits, what `visitcal.pipeline.digest_cache.sha256_file` returns); otherwise the
    key is absent and the caller hashes the file itself.
    """
    key = Path(path).absolute()
    requests = dict(_DIGEST_REQUESTS.get() or {})
    requests[key] = None
    token = _DIGEST_REQUESTS.set(requests)
    result: dict[str, str] = {}
    try:
        yield result
    finally:
        _DIGEST_REQUESTS.reset(token)
    if requests.get(key) is not None:
        result["sha256"] = requests[key]


def _sha256_of(name: str, out: dict) -> None:
    """``out["sha256"]`` = the SHA-256 of file ``name``; nothing on an OSError (the caller then hashes it)."""
    try:
        # 1 MiB at a time into one buffer: the hash runs beside the writer's peak (its planes and their
        # write buffers), which a larger block would raise.
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        with open(name, "rb") as f:
            while n := f.readinto(buf):
                h.update(view[:n])
        out["sha256"] = h.hexdigest()
    except OSError:
        pass


def _sync(tmp, path: Path) -> None:
    """flush + fsync ``tmp``; when a `digest_while_syncing` block asked for ``path``, hash the written
    bytes meanwhile and give it the digest (None if the hash failed)."""
    tmp.flush()
    requests = _DIGEST_REQUESTS.get()
    key = path.absolute()
    if not requests or key not in requests:
        os.fsync(tmp.fileno())
        return
    out: dict = {}
    worker = threading.Thread(target=_sha256_of, args=(tmp.name, out), name="visitcal-digest", daemon=True)
    worker.start()
    try:
        os.fsync(tmp.fileno())
    finally:
        worker.join()
    requests[key] = out.get("sha256")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", *, overwrite: bool = True):
    """Context manager yielding a file object whose contents replace ``path`` only on success.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. Its folder must exist.
    mode : {"wb", "w"}
        Binary or text mode of the yielded file.
    overwrite : bool
        If False, `FileExistsError` when ``path`` exists (checked before writing and, atomically,
        when the file is put in place with a hard link).

    Notes
    -----
    On any exception inside the block the temporary file is removed and the exception propagates;
    ``path`` is then exactly as before. New files get the usual ``0o666 & ~umask`` permissions
    (an overwritten file keeps its mode).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists and overwrite is False")
    folder = path.parent if str(path.parent) else Path(".")
    tmp = tempfile.NamedTemporaryFile(mode=mode, dir=folder, prefix=f".{path.name}.{host_tag()}.{os.getpid()}.",
                                      suffix=".tmp", delete=False)
    try:
        with tmp:
            yield tmp
            _sync(tmp, path)  # flush, fsync (and hash, when asked)
        try:
            file_mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            file_mode = 0o666 & ~_umask()
        os.chmod(tmp.name, file_mode)
        _put_in_place(tmp.name, path, overwrite)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp.name)
        raise


def _put_in_place(tmp_name: str, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp_name, path)
        return
    try:
        os.link(tmp_name, path)  # fails atomically if path appeared meanwhile
    except FileExistsError:
        raise FileExistsError(f"{path} exists and overwrite is False") from None
    except OSError:  # file system without hard links: best effort
        if path.exists():
            raise FileExistsError(f"{path} exists and overwrite is False") from None
        os.replace(tmp_name, path)
        return
    os.unlink(tmp_name)


def atomic_write_fits(hdulist, path, *, overwrite: bool = False, checksum: bool = True) -> None:
    """Write an ``astropy.io.fits.HDUList`` to ``path`` atomically (see `atomic_write`).

    ``checksum`` adds CHECKSUM/DATASUM cards to every HDU, which `visitcal.io.read_exposure` verifies.
    Their comments are fixed text (astropy's default is the current time), so the same HDUs always
    give the same bytes. The file is byte for byte what ``hdu.add_checksum(when="checksum of this HDU")``
    on every HDU then ``hdulist.writeto`` write, but image pixels are converted and summed by the C++
    kernel in one pass (`visitcal.core.fits_checksum.write_hdulist`; issue 25: a 4k exposure's write went
    from 2.6x to about astropy's own time without checksums).

    A table's character columns are put in their written form first: astropy turns trailing blanks into
    NULs only while writing, so a checksum taken before would not match the file. Serialising the table
    HDUs once to memory does that (tables are small; image HDUs need nothing).
    """
    if checksum:
        from .fits_checksum import write_hdulist  # the compiled kernels, only when FITS is written

        with atomic_write(path, "wb", overwrite=overwrite) as f:
            write_hdulist(hdulist, f)
        return
    with atomic_write(path, "wb", overwrite=overwrite) as f:
        hdulist.writeto(f, checksum=False)
