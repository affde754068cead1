"""Exposure FITS read and write: visitcal before and after the C++ checksum kernel, astropy, raw numpy.

Exposure: 4096 x 4096 (``--size``), image and variance float32, mask int32 (seeded noise, a few mask
bits), a TAN WCS, VisitInfo and Detector cards, and three small tables (PhotoCalib, SUMMARY, and an
aperture-correction map of two order-2 Chebyshev fields). About 192 MiB of pixels.

Timed, best of ``--repeat`` rounds after a warm-up round (each round runs every variant once, so a shared
machine's load falls on all alike), on one core, into ``--dir`` (default: a temporary folder
beside the repository, i.e. the same file system as the data products). Every write goes to a new file
(the previous one is deleted outside the timing, as a pipeline writes new products; replacing a 200 MB file
costs its deletion, ~0.08 s here, in the rename):

* write: visitcal before (``exposure_to_hdulist`` + astropy ``add_checksum`` on every HDU + ``writeto``
  into the atomic file: the code before issue 25, kept here as the reference), visitcal after
  (`visitcal.io.write_exposure`); the same two writers into a plain file (no fsync, no rename: the cost of
  the checksummed write alone); astropy ``HDUList.writeto`` of the same HDUs without checksums, without and
  with fsync (the peer of the atomic write, which fsyncs before its rename);
  raw numpy (``ndarray.tofile`` of the three planes' bytes), without and with fsync;
* read: visitcal before and after, both `visitcal.io.read_exposure` (the Exposure built: WCS, mask planes,
  components) and the I/O layer alone (``open_fits``: every HDU loaded and verified), before being
  ``fits.open(checksum=True)``; astropy ``fits.open`` + every HDU's ``.data`` without checksums
  (big-endian arrays, as astropy returns them); raw numpy (``np.fromfile`` of the same number of bytes).
  Reads are from the page cache (the files were just written), as in the pipeline's steps.

The goal (issue 25): visitcal within 1.5x of astropy without checksums, checksums on. Both visitcal
writers are also checked to give byte-identical files (sha256).

Run from the repository root: ``python bench/bench_fits_io.py`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import _common  # first: sets the BLAS/OpenMP thread counts before numpy loads

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

import visitcal.io.fits as vfits  # noqa: E402
from visitcal.core.apcorr import ApCorrMap  # noqa: E402
from visitcal.core.atomic import atomic_write  # noqa: E402
from visitcal.core.chebyshev import ChebyshevBoundedField  # noqa: E402
from visitcal.core.fits_checksum import write_hdulist  # noqa: E402
from visitcal.core.geom import Box2I  # noqa: E402
from visitcal.core.image import Exposure  # noqa: E402
from visitcal.core.photocalib import PhotoCalib  # noqa: E402
from visitcal.io import FitsReadError, read_exposure, write_exposure  # noqa: E402


def make_exposure(n: int) -> Exposure:
    rng = np.random.default_rng(25)
    image = rng.normal(1000.0, 12.0, (n, n)).astype(np.float32)
    variance = (image * 0.0 + 144.0 + rng.uniform(0, 10, (n, n))).astype(np.float32)
    h = fits.Header()
    h.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.1, CRVAL2=2.2, CRPIX1=n / 2, CRPIX2=n / 2,
             CD1_1=-5.5e-5, CD1_2=1.2e-6, CD2_1=-1.1e-6, CD2_2=5.5e-5)
    bbox = Box2I(0, 0, n - 1, n - 1)
    apcorr = ApCorrMap({name: ChebyshevBoundedField(bbox, np.array([[1.0, 1e-3, 2e-4], [3e-4, 1e-5, 0.0],
                                                                     [2e-6, 0.0, 0.0]]))
                        for name in ("base_PsfFlux_instFlux", "base_GaussianFlux_instFlux")})
    exp = Exposure.from_arrays(image, variance=variance, wcs=WCS(h), photo_calib=PhotoCalib(0.35, 1e-3, bbox=bbox),
                               ap_corr_map=apcorr,
                               summary_stats={"psfSigma": 1.7, "nPsfStar": 120, "band": "r", "zeroPoint": 31.2})
    exp.mask.set("CR", rng.uniform(size=(n, n)) < 0.001)
    exp.mask.set("SAT", rng.uniform(size=(n, n)) < 0.0005)
    return exp


# ------------------------------------------------------------------ the code before issue 25, as reference

def checksummed_before(exposure: Exposure, path: Path):
    """The HDUs as write_exposure prepared them before: astropy add_checksum on every HDU."""
    hdulist = vfits.exposure_to_hdulist(exposure, where=str(path))
    for hdu in hdulist:
        is_table = isinstance(hdu, (fits.BinTableHDU, fits.TableHDU))
        if is_table and any("A" in str(fmt) for fmt in hdu.columns.formats):
            hdu.writeto(io.BytesIO())
        hdu.add_checksum(when="checksum of this HDU")
    return hdulist


def write_before(exposure: Exposure, path: Path) -> None:
    """write_exposure as it was: astropy add_checksum on every HDU, then HDUList.writeto into the atomic file."""
    hdulist = checksummed_before(exposure, path)
    with atomic_write(path, "wb", overwrite=True) as f:
        hdulist.writeto(f, checksum=False)


@contextlib.contextmanager
def open_fits_before(path):
    """open_fits as it was: fits.open(checksum=True) then every HDU's data (warnings -> errors as before)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hdul = fits.open(path, memmap=False, checksum=True, lazy_load_hdus=False)
        for hdu in hdul:
            hdu.data  # noqa: B018
    for w in caught:
        if "verification failed" in str(w.message).lower() or "truncated" in str(w.message):
            hdul.close()
            raise FitsReadError(f"{path}: {w.message}", path=path)
    try:
        yield hdul
    finally:
        hdul.close()


def read_before(path: Path) -> Exposure:
    saved = vfits.open_fits
    vfits.open_fits = open_fits_before
    try:
        return read_exposure(path)
    finally:
        vfits.open_fits = saved


# ------------------------------------------------------------------ the peers

def write_before_plain(exposure: Exposure, path: Path) -> None:
    """The former checksummed writer into a plain file (no fsync, no rename)."""
    hdulist = checksummed_before(exposure, path)
    with open(path, "wb") as f:
        hdulist.writeto(f, checksum=False)


def write_after_plain(exposure: Exposure, path: Path) -> None:
    """The kernel's checksummed writer into a plain file (no fsync, no rename)."""
    with open(path, "wb") as f:
        write_hdulist(vfits.exposure_to_hdulist(exposure, where=str(path)), f)


def open_before(path: Path) -> None:
    with open_fits_before(path):
        pass


def open_after(path: Path) -> None:
    with vfits.open_fits(path):
        pass


def write_astropy(exposure: Exposure, path: Path, fsync: bool = False) -> None:
    with open(path, "wb") as f:
        vfits.exposure_to_hdulist(exposure, where=str(path)).writeto(f, checksum=False)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def read_astropy(path: Path) -> list:
    with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
        return [hdu.data for hdu in hdul]


def write_raw(exposure: Exposure, path: Path, fsync: bool = False) -> None:
    with open(path, "wb") as f:
        for plane in (exposure.image, exposure.mask.array, exposure.variance):
            plane.tofile(f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def read_raw(path: Path, n: int) -> list:
    with open(path, "rb") as f:
        return [np.fromfile(f, dtype, count=n * n) for dtype in (np.float32, np.int32, np.float32)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    ap.add_argument("--dir", type=Path, default=None, help="folder for the files (default: a temporary one beside "
                                                            "the repository)")
    args = ap.parse_args()
    cpu = _common.pin_one_core(args.cpu)
    n = args.size
    _common.print_header(f"exposure FITS I/O: {n} x {n} image/mask/variance + 3 tables", cpu)
    folder = Path(tempfile.mkdtemp(prefix="bench_fits_io.", dir=args.dir or _common.BENCH_DIR.parent))
    try:
        exp = make_exposure(n)
        paths = {k: folder / f"{k}.fits" for k in ("before", "after", "astropy", "raw")}
        write_before(exp, paths["before"])
        write_exposure(exp, paths["after"], overwrite=True)
        identical = sha256(paths["before"]) == sha256(paths["after"])
        print(f"files written before/after byte-identical: {identical} ({paths['after'].stat().st_size} bytes)")
        rep = args.repeat
        # (name, callable, path deleted before each call or None): run round-robin, one call of each per round,
        # so that the load of a shared machine falls on every variant alike
        cases = [  # the fsync'ed writes last, so every file is clean in the page cache when it is read
            ("write_before_plain_file", lambda p: write_before_plain(exp, p), paths["before"]),
            ("write_after_plain_file", lambda p: write_after_plain(exp, p), paths["after"]),
            ("write_astropy_nochecksum", lambda p: write_astropy(exp, p), paths["astropy"]),
            ("write_raw", lambda p: write_raw(exp, p), paths["raw"]),
            ("write_before", lambda p: write_before(exp, p), paths["before"]),
            ("write_after", lambda p: write_exposure(exp, p), paths["after"]),
            ("write_astropy_nochecksum_fsync", lambda p: write_astropy(exp, p, fsync=True), paths["astropy"]),
            ("write_raw_fsync", lambda p: write_raw(exp, p, fsync=True), paths["raw"]),
            ("read_before", lambda: read_before(paths["before"]), None),
            ("read_after", lambda: read_exposure(paths["after"]), None),
            ("read_before_open_fits", lambda: open_before(paths["before"]), None),
            ("read_after_open_fits", lambda: open_after(paths["after"]), None),
            ("read_astropy_nochecksum", lambda: read_astropy(paths["astropy"]), None),
            ("read_raw", lambda: read_raw(paths["raw"], n), None),
        ]
        t = {name: _common.Timing([], 1) for name, _, _ in cases}
        for round_ in range(rep + 1):  # round 0 is the warm-up
            for name, fn, path in cases:
                if path is not None:
                    path.unlink(missing_ok=True)
                    t0 = time.perf_counter()
                    fn(path)
                else:
                    t0 = time.perf_counter()
                    out = fn()
                    del out  # freeing the arrays is part of a read's cost
                if round_:
                    t[name].times.append(time.perf_counter() - t0)
        assert sha256(paths["before"]) == sha256(paths["after"])  # the plain-file writers too
        results = {"size": n, "file_bytes": paths["after"].stat().st_size, "byte_identical": identical,
                   **{k: v.as_dict() for k, v in t.items()}}
        rows = []
        for op in ("write", "read"):
            peer = t[f"{op}_astropy_nochecksum"].best
            for key in [k for k in t if k.startswith(op)]:
                rows.append((key, t[key].best, t[key].median, t[key].best / peer))
            for key in [k for k in t if k.startswith(f"{op}_before") or k.startswith(f"{op}_after")]:
                results[f"ratio_{key}_over_astropy"] = t[key].best / peer
        print(_common.format_table(["what", "best s", "median s", "best / astropy (no checksum)"], rows))
        for key in ("write_after", "write_after_plain_file", "read_after", "read_after_open_fits"):
            r = results[f"ratio_{key}_over_astropy"]
            print(f"{key} / astropy = {r:.2f} ({'within' if r <= 1.5 else 'OUTSIDE'} the 1.5x goal)")
        print("wrote", _common.write_json("bench_fits_io", results))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
