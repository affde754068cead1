"""Writing a simulated data repository (`simulate`) and reading it back with its truth (`SimRepository`).

Layout of a repository ``OUT`` (every file written atomically; the whole directory appears only
when the simulation has finished, so an interrupted run leaves nothing behind)::

    OUT/
      repo.json                      manifest: format, versions, the SimConfig, data ids, counts
      camera.json                    the camera: detectors (bbox, focal-plane centre, rotation,
                                     gain, read noise, full well, bad columns), distortion, optics
      refcat.parquet                 reference catalog: id, ra, dec, <band>_flux, <band>_fluxErr (nJy)
      post_isr_image/<visit>/post_isr_image_<visit>_<detector>_<snap>.fits
                                     ADU, IMAGE/MASK/VARIANCE, preliminary WCS, VisitInfo, Detector
      truth/visits.parquet           one row per visit: pointing, seeing, atmosphere, zero point, sky
      truth/exposures.parquet        one row per (visit, detector): true and preliminary WCS (FITS
                                     header text), the preliminary WCS's errors, zero point and
                                     calibration (nJy/ADU of the snap-summed image), gain, noise
      truth/objects.parquet          one row per object per (visit, detector): true position, flux
                                     (nJy and ADU), class, galaxy shape, PSF moments at stars
      truth/background.parquet       the true sky of each snap (ADU/px) as an order-2 Chebyshev field
      truth/cosmic_rays.parquet      every pixel a cosmic ray hit: visit, detector, snap, x, y, e-, ADU

Visits are 6-digit, detectors 3-digit zero-padded in file names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from .. import __version__
from ..core.chebyshev import fields_from_table, fields_to_table
from ..core.image import Mask
from ..io import JsonReadError, json_fields, read_catalog, read_exposure, read_json, write_catalog, write_exposure
from ..core.atomic import atomic_write, host_tag, process_alive
from ..core.photocalib import PhotoCalib
from ..core.wcs import read_wcs, wcs_to_header
from .camera import SimCamera
from .config import CameraConfig, SimConfig
from .psf import OpticsDesign, TruePsf, import_galsim
from .render import render_detector
from .scene import (
    VisitPlan,
    make_galaxies,
    make_stars,
    make_visit_plans,
    reference_catalog,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SimRepository", "SimSummary", "check_output_dir", "post_isr_image_path",
           "remove_stale_partials", "simulate"]

FORMAT_NAME = "visitcal-sim"
FORMAT_VERSION = 1


def post_isr_image_path(root, visit: int, detector: int, snap: int) -> Path:
    """Path of a simulated post-ISR snap under ``root``.

    The path is ``post_isr_image/<visit>/post_isr_image_<visit>_<detector>_<snap>.fits``; the visit is
    zero-padded to 6 digits and the detector to 3; ``snap`` (0 or 1) is not padded. Nothing is created
    or checked.
    """
    return Path(root) / "post_isr_image" / f"{visit:06d}" / f"post_isr_image_{visit:06d}_{detector:03d}_{snap}.fits"


@dataclasses.dataclass(frozen=True)
class SimSummary:
    """What `simulate` wrote."""

    path: Path
    n_images: int
    n_visits: int
    n_detectors: int
    n_snaps: int
    n_refcat: int
    n_stars: int
    n_galaxies: int
    n_objects_rendered: int
    n_cosmic_ray_pixels: int
    n_bytes: int
    seconds: float

    def lines(self) -> list[str]:
        """A short report, four lines: files written, size and time; reference catalog; truth; layout."""
        return [
            (f"wrote {self.path}: {self.n_images} post_isr_image files "
            f"({self.n_visits} visits x {self.n_detectors} detectors x {self.n_snaps} snaps), "
            f"{self.n_bytes / 1e6:.1f} MB in {self.seconds:.1f} s"),
            f"  reference catalog: {self.n_refcat} stars (refcat.parquet)",
            (f"  truth: {self.n_stars} stars and {self.n_galaxies} galaxies on the sky; "
            f"{self.n_objects_rendered} renderings on detectors; {self.n_cosmic_ray_pixels} cosmic-ray pixels"),
            "  layout: repo.json, camera.json, refcat.parquet, post_isr_image/<visit>/..., truth/*.parquet",
        ]


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def _write_json(path: Path, obj) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(_json_bytes(obj))


def check_output_dir(out, overwrite: bool) -> None:
    """Raise if ``out`` cannot receive a repository: a file, a non-empty folder without
    ``overwrite`` (`FileExistsError`), or a missing parent (`FileNotFoundError`)."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: no such directory (the parent of the output)")


def simulate(config: SimConfig, out, *, overwrite: bool = False,
             progress: Callable[[int, int, str], None] | None = None) -> SimSummary:
    """Render a repository of post-ISR images with truth into ``out`` (layout in the module docstring).

    Parameters
    ----------
    config : SimConfig
    out : path
        Directory to create. It may exist if empty; a non-empty one is replaced only with
        ``overwrite``. The repository is built beside it and moved into place at the end, so
        ``out`` is never left half-written and an old repository survives a failed run.
    progress : callable, optional
        Called as ``progress(done, total, label)`` after each image is written.

    Returns
    -------
    SimSummary

    The same ``config`` (seed included) gives bit-identical files.
    """
    import_galsim()
    t0 = time.perf_counter()
    out = Path(out)
    check_output_dir(out, overwrite)
    remove_stale_partials(out.parent)
    stage = out.parent / f".{out.name}.{host_tag()}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        summary = _simulate_into(config, stage, progress)
        _put_in_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    n_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return dataclasses.replace(summary, path=out, n_bytes=n_bytes, seconds=time.perf_counter() - t0)


# ".<name>.<host>.partial-<pid>"; an older version's ".<name>.partial-<pid>" has no host and is kept
_PARTIAL = re.compile(r"^\.(?P<name>.+?)(?:\.(?P<host>[^.]+))?\.partial-(?P<pid>\d+)$")


def remove_stale_partials(parent) -> list[Path]:
    """Delete the half-built repositories (``.<name>.<host>.partial-<pid>`` folders) that simulator runs
    killed on this host left in ``parent``; those of running processes and other hosts are kept. Called
    by `simulate` before it builds its own. Returns the removed folders, sorted."""
    removed = []
    host = host_tag()
    for entry in sorted(Path(parent).iterdir()) if Path(parent).is_dir() else ():
        match = _PARTIAL.match(entry.name)
        if (match is None or not entry.is_dir() or entry.is_symlink() or match["host"] != host
                or process_alive(int(match["pid"]))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _put_in_place(stage: Path, out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.exists():
            out.rmdir()
        os.replace(stage, out)


def _simulate_into(config: SimConfig, root: Path, progress) -> SimSummary:
    camera = SimCamera(config.camera, config.n_detectors)
    optics = OpticsDesign()
    stars = make_stars(config, camera)
    galaxies = make_galaxies(config, camera)
    plans = make_visit_plans(config, camera)
    refcat = reference_catalog(config, stars)
    (root / "truth").mkdir()
    camera_doc = camera.to_dict()
    camera_doc["optics"] = dataclasses.asdict(optics)
    _write_json(root / "camera.json", camera_doc)
    write_catalog(refcat, root / "refcat.parquet")
    write_catalog(Table(rows=[p.to_row() for p in plans]), root / "truth" / "visits.parquet")

    total = config.n_visits * config.n_detectors * config.n_snaps
    done = 0
    objects, exposures, backgrounds, cosmic_rays, data_ids = [], [], [], [], []
    for plan in plans:
        for det in camera.detectors:
            truth = render_detector(config, camera, plan, det.id, stars, galaxies, optics=optics)
            for snap in truth.snaps:
                path = post_isr_image_path(root, plan.visit, det.id, snap.snap)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_exposure(snap.exposure, path)
                backgrounds.append((plan.visit, det.id, snap.snap, snap.background))
                cr = snap.cosmic_rays
                cr_full = Table()
                cr_full["visit"] = np.full(len(cr), plan.visit, dtype=np.int64)
                cr_full["detector"] = np.full(len(cr), det.id, dtype=np.int32)
                cr_full["snap"] = np.full(len(cr), snap.snap, dtype=np.int16)
                for col in cr.colnames:
                    cr_full[col] = cr[col]
                cosmic_rays.append(cr_full)
                data_ids.append([plan.visit, det.id, snap.snap])
                done += 1
                if progress is not None:
                    progress(done, total, f"visit {plan.visit} detector {det.id} snap {snap.snap}")
            objects.append(truth.objects)
            row = {"visit": plan.visit, "detector": det.id, "zero_point": truth.zero_point,
                   "calibration": truth.calibration, "gain": det.gain, "read_noise": det.read_noise,
                   "saturation_adu": det.saturation_adu,
                   "true_wcs": wcs_to_header(truth.true_wcs).tostring(),
                   "preliminary_wcs": wcs_to_header(truth.preliminary_wcs).tostring(),
                   "n_stars": int(np.sum(truth.objects["is_star"] & truth.objects["inside"])),
                   "n_galaxies": int(np.sum(~truth.objects["is_star"] & truth.objects["inside"]))}
            row.update(truth.preliminary_offset)
            exposures.append(row)

    objects_table = vstack(objects, metadata_conflicts="silent") if objects else Table()
    objects_table.meta.clear()
    _describe_objects(objects_table)
    write_catalog(objects_table, root / "truth" / "objects.parquet")
    exp_table = Table(rows=exposures)
    write_catalog(exp_table, root / "truth" / "exposures.parquet")
    bg = fields_to_table({f"{v}/{d}/{s}": field for v, d, s, field in backgrounds})
    bg["visit"] = np.array([b[0] for b in backgrounds], dtype=np.int64)
    bg["detector"] = np.array([b[1] for b in backgrounds], dtype=np.int32)
    bg["snap"] = np.array([b[2] for b in backgrounds], dtype=np.int16)
    write_catalog(bg, root / "truth" / "background.parquet")
    cr_table = vstack(cosmic_rays) if cosmic_rays else Table()
    write_catalog(cr_table, root / "truth" / "cosmic_rays.parquet")

    galsim = import_galsim()
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "visitcal_version": __version__, "galsim_version": galsim.__version__,
        "config": config.model_dump(mode="json"),
        "band": config.band, "visits": config.visits, "detectors": [d.id for d in camera.detectors],
        "n_snaps": config.n_snaps, "data_ids": data_ids,
        "counts": {"refcat": len(refcat), "stars": len(stars), "galaxies": len(galaxies),
                   "objects_rendered": len(objects_table), "cosmic_ray_pixels": len(cr_table)},
        "units": {"image": "adu", "flux": "nJy", "positions": "pixels, centres at integers, 0-based",
                  "sky": "deg (ICRS)", "psf_moments": "pixel^2 (adaptive moments, HSM)"},
    }
    _write_json(root / "repo.json", manifest)
    return SimSummary(path=root, n_images=total, n_visits=config.n_visits, n_detectors=config.n_detectors,
                      n_snaps=config.n_snaps, n_refcat=len(refcat), n_stars=len(stars), n_galaxies=len(galaxies),
                      n_objects_rendered=len(objects_table), n_cosmic_ray_pixels=len(cr_table), n_bytes=0,
                      seconds=0.0)


_OBJECT_COLUMNS = {
    "id": "object id: a star's reference-catalog id, or 1e9 + n for a galaxy",
    "is_star": "True for stars (all in refcat.parquet if brighter than its limit), False for galaxies",
    "ra": "true right ascension, deg", "dec": "true declination, deg",
    "x": "true pixel x (0-based, pixel centres at integers) through the true WCS",
    "y": "true pixel y", "inside": "the true position lies on the detector",
    "flux_nJy": "true total flux in the band, nJy",
    "flux_adu": "true total flux in the snap-summed image, ADU",
    "mag": "true AB magnitude in the band",
    "sersic_n": "galaxy Sersic index (1: exponential)", "hlr": "galaxy half-light radius, arcsec",
    "g1": "galaxy reduced shear on the sky (east, north axes)", "g2": "galaxy reduced shear",
    "psf_ixx": "true PSF adaptive moment at a star, pixel^2", "psf_iyy": "pixel^2", "psf_ixy": "pixel^2",
    "saturated": "the star's centre pixel is saturated in snap 0",
}


def _describe_objects(table: Table) -> None:
    for name, text in _OBJECT_COLUMNS.items():
        if name in table.colnames:
            table[name].description = text


class SimRepository:
    """A repository written by `simulate`, with accessors for its images and truth.

    Parameters
    ----------
    path : path
        The repository directory.

    Raises
    ------
    FileNotFoundError, ValueError
        Not a visitcal simulation repository (named), or one of a newer format.
    visitcal.io.JsonReadError
        ``repo.json`` or ``camera.json`` is not valid JSON or lacks or has a bad field (a ``ValueError``; the
        one-line message names the file and the field).
    """

    def __init__(self, path):
        self.path = Path(path)
        manifest = self.path / "repo.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.path}: no repo.json; not a visitcal.sim repository")
        self.manifest = read_json(manifest)
        version = self.manifest.get("format_version", 0)
        if self.manifest.get("format") != FORMAT_NAME or not isinstance(version, int) or version > FORMAT_VERSION:
            raise JsonReadError(f"{manifest}: format {self.manifest.get('format')!r} v{version} is not readable by "
                                f"this visitcal", path=manifest)
        with json_fields(manifest):
            for key, kind in (("band", str), ("visits", list), ("detectors", list), ("data_ids", list),
                              ("n_snaps", int), ("counts", dict), ("config", dict)):
                if not isinstance(self.manifest[key], kind):
                    raise TypeError(f"field {key} is {type(self.manifest[key]).__name__}, expected {kind.__name__}")
        with json_fields(manifest, "config."):
            self.config = SimConfig(**self.manifest["config"])
        camera_path = self.path / "camera.json"
        camera_doc = read_json(camera_path)
        with json_fields(camera_path):
            optics = camera_doc.pop("optics")
        with json_fields(camera_path, "optics."):
            self.optics = OpticsDesign(**optics)
        with json_fields(camera_path, "config."):
            CameraConfig.model_validate(camera_doc["config"])  # a bad value named by its field
        with json_fields(camera_path):
            self.camera = SimCamera.from_dict(camera_doc)
        visits = read_catalog(self.path / "truth" / "visits.parquet")
        self.plans = {int(row["visit"]): VisitPlan.from_row(row) for row in visits}
        self._exposures = read_catalog(self.path / "truth" / "exposures.parquet")
        self._tables: dict[str, Table] = {}

    def _truth_table(self, name: str) -> Table:
        """``truth/<name>.parquet``, read once."""
        if name not in self._tables:
            self._tables[name] = read_catalog(self.path / "truth" / f"{name}.parquet")
        return self._tables[name]

    # --- ids ------------------------------------------------------------------------------------------
    @property
    def band(self) -> str:
        """The band of every visit (``"u"`` ... ``"y"``)."""
        return self.manifest["band"]

    @property
    def visits(self) -> list[int]:
        """The visit ids, in increasing order."""
        return list(self.manifest["visits"])

    @property
    def detectors(self) -> list[int]:
        """The detector ids, in increasing order."""
        return list(self.manifest["detectors"])

    @property
    def data_ids(self) -> list[tuple[int, int, int]]:
        """Every ``(visit, detector, snap)`` with a post_isr_image."""
        return [tuple(d) for d in self.manifest["data_ids"]]

    def _exposure_row(self, visit: int, detector: int):
        sel = (self._exposures["visit"] == visit) & (self._exposures["detector"] == detector)
        if not np.any(sel):
            raise KeyError(f"{self.path}: no (visit={visit}, detector={detector}) in the truth")
        return self._exposures[np.nonzero(sel)[0][0]]

    # --- images -----------------------------------------------------------------------------------
    def post_isr_image_path(self, visit: int, detector: int, snap: int = 0) -> Path:
        """Path of one post-ISR snap in this repository (see the module function `post_isr_image_path`)."""
        return post_isr_image_path(self.path, visit, detector, snap)

    def post_isr_image(self, visit: int, detector: int, snap: int = 0):
        """The post-ISR `Exposure` (ADU, preliminary WCS)."""
        return read_exposure(self.post_isr_image_path(visit, detector, snap))

    def refcat(self) -> Table:
        """The reference catalog: ``id``, ``ra``, ``dec`` (ICRS deg), ``<band>_flux``, ``_fluxErr`` (nJy)."""
        return read_catalog(self.path / "refcat.parquet")

    # --- truth --------------------------------------------------------------------------------------
    def objects(self, visit: int | None = None, detector: int | None = None) -> Table:
        """True objects (all, or of one visit / detector); columns described in the table's metadata."""
        t = self._truth_table("objects")
        sel = np.ones(len(t), dtype=bool)
        if visit is not None:
            sel &= t["visit"] == visit
        if detector is not None:
            sel &= t["detector"] == detector
        return t[sel]

    def true_wcs(self, visit: int, detector: int):
        """The WCS the detector's image was rendered with (TAN-SIP with the camera's distortion), an
        `astropy.wcs.WCS`; KeyError when the data id is not in the truth."""
        row = self._exposure_row(visit, detector)
        return read_wcs(fits.Header.fromstring(str(row["true_wcs"])), where=f"{self.path} true_wcs")

    def preliminary_wcs(self, visit: int, detector: int):
        """The perturbed WCS written in the post-ISR image's header (what astrometry starts from), an
        `astropy.wcs.WCS`; its errors are in `preliminary_wcs_error`. KeyError for an unknown data id."""
        row = self._exposure_row(visit, detector)
        return read_wcs(fits.Header.fromstring(str(row["preliminary_wcs"])), where=f"{self.path} preliminary_wcs")

    def preliminary_wcs_error(self, visit: int, detector: int) -> dict:
        """The preliminary WCS's shift (east, north; arcsec), rotation (rad), scale error and
        measured centre / maximum offsets (arcsec) from the truth."""
        row = self._exposure_row(visit, detector)
        keys = ("prelim_shift_east", "prelim_shift_north", "prelim_rotation", "prelim_scale_error",
                "prelim_center_offset", "prelim_max_offset")
        return {k.removeprefix("prelim_"): float(row[k]) for k in keys}

    def true_photo_calib(self, visit: int, detector: int) -> PhotoCalib:
        """nJy per ADU of the snap-summed image (divide by the snap count for one snap)."""
        row = self._exposure_row(visit, detector)
        return PhotoCalib(float(row["calibration"]), bbox=self.camera[detector].detector.bbox)

    def true_zero_point(self, visit: int, detector: int) -> float:
        """AB magnitude of 1 ADU in this detector's snap-summed image (all throughput losses included)."""
        return float(self._exposure_row(visit, detector)["zero_point"])

    def true_background(self, visit: int, detector: int, snap: int = 0):
        """The true sky of a snap in ADU per pixel, a `ChebyshevBoundedField`."""
        table = self._truth_table("background")
        sel = (table["visit"] == visit) & (table["detector"] == detector) & (table["snap"] == snap)
        if not np.any(sel):
            raise KeyError(f"{self.path}: no background for (visit={visit}, detector={detector}, snap={snap})")
        return next(iter(fields_from_table(table[sel]).values()))

    def cosmic_rays(self, visit: int, detector: int, snap: int = 0) -> Table:
        """Every pixel a cosmic ray hit in one snap: ``visit``, ``detector``, ``snap``, ``x``, ``y``
        (parent-frame pixel indices), ``electrons`` and ``adu`` deposited. Empty when none (or for an
        unknown data id)."""
        table = self._truth_table("cosmic_rays")
        sel = (table["visit"] == visit) & (table["detector"] == detector) & (table["snap"] == snap)
        return table[sel]

    def truth_mask(self, visit: int, detector: int, snap: int = 0) -> Mask:
        """The post-ISR mask plus CR on every pixel a cosmic ray hit."""
        exposure = self.post_isr_image(visit, detector, snap)
        mask = exposure.mask
        cr = self.cosmic_rays(visit, detector, snap)
        where = np.zeros(mask.shape, dtype=bool)
        x0, y0 = exposure.xy0
        where[np.asarray(cr["y"]) - y0, np.asarray(cr["x"]) - x0] = True
        mask.set("CR", where)
        return mask

    def true_psf(self, visit: int, detector: int, *, size: int = 41) -> TruePsf:
        """The true PSF of (visit, detector): ``compute_image(x, y)``, ``compute_kernel_image``,
        ``compute_shape`` (adaptive moments, pixel^2), ``draw(..., normalize=False)``."""
        plan = self.plans[visit]
        return TruePsf(self.camera, detector, plan.atmosphere, self.true_wcs(visit, detector), plan.band,
                       optics=self.optics, size=size)

    def __repr__(self) -> str:
        return (f"SimRepository({str(self.path)!r}: {len(self.visits)} visits x {len(self.detectors)} detectors "
                f"x {self.manifest['n_snaps']} snaps, band {self.band!r})")
