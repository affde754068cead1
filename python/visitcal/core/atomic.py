"""Atomic file writes: a temporary file in the destination folder, fsync, then rename.

A reader never sees a half-written file, and a failed write leaves an existing file untouched
(POSIX ``rename`` is atomic within one file system, which is why the temporary file is created in
the destination's own folder, not in ``/tmp``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_fits"]


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
    tmp = tempfile.NamedTemporaryFile(mode=mode, dir=folder, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
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
    give the same bytes.
    """
    if checksum:
        for hdu in hdulist:
            hdu.add_checksum(when="checksum of this HDU")
    with atomic_write(path, "wb", overwrite=overwrite) as f:
        hdulist.writeto(f, checksum=False)
