"""What a visit's report reads: every product of a repository for one visit, loaded lazily and once.

A missing or unreadable product is data for the report, not an error: its accessor returns ``None`` and
`VisitProducts.problems` records why (``{"source 001000/003": "CatalogIOError: ..."}``), so a visit
with a failed detector still gets its report with that detector marked.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..core.image import Detector
from ..io import read_catalog, read_exposure
from ..pipeline.repository import Repository, UnitStatus
from ..pipeline.visit_summary_step import visit_summary_path

__all__ = ["STEPS", "VisitProducts", "repository_visits"]

#: The per-detector steps whose provenance the report reads, in pipeline order (visit_summary is per visit).
STEPS = ("calibrate", "finalize", "reprocess")

_DATASETS_PER_DETECTOR = ("preliminary_visit_image", "single_visit_star", "visit_image", "source")


def repository_visits(repo: Repository) -> dict[int, list[int]]:
    """``{visit: [detectors]}`` of every data id the repository knows: its post-ISR inputs, else any
    per-detector product or provenance record (a repository copied without its inputs still reports)."""
    ids = set(repo.data_ids())
    if not ids:
        for name in _DATASETS_PER_DETECTOR:
            for path in (repo.root / name).glob(f"*/{name}_*_*.*"):
                parts = path.stem[len(name) + 1:].split("_")
                if len(parts) == 2 and all(p.isdigit() for p in parts):
                    ids.add((int(parts[0]), int(parts[1])))
        for step in STEPS:
            for path in (repo.root / "provenance" / step).glob("*_*.json"):
                parts = path.stem.split("_")
                if len(parts) == 2 and all(p.isdigit() for p in parts):
                    ids.add((int(parts[0]), int(parts[1])))
    out: dict[int, list[int]] = {}
    for v, d in sorted(ids):
        out.setdefault(v, []).append(d)
    return out


class VisitProducts:
    """Lazy, cached access to one visit's products in ``repo``.

    Parameters
    ----------
    repo : Repository
        The data repository.
    visit : int
        The visit.
    detectors : list of int
        The visit's detectors (`repository_visits`).

    Notes
    -----
    Catalogs are `astropy.table.Table` with LSST column names (``coord_ra``/``coord_dec`` in radians),
    exactly as the pipeline wrote them; the accessors neither select nor convert.
    """

    def __init__(self, repo: Repository, visit: int, detectors):
        self.repo = repo
        self.visit = int(visit)
        self.detectors = sorted(int(d) for d in detectors)
        self.problems: dict[str, str] = {}

    def _load(self, key: str, read, path: Path):
        if not Path(path).exists():
            self.problems[key] = f"missing: {self.repo.relpath(path) if Path(path).is_absolute() else path}"
            return None
        try:
            return read(path)
        except Exception as err:  # noqa: BLE001 - a broken product is reported, the others go on
            self.problems[key] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            return None

    def _key(self, name: str, detector: int | None = None) -> str:
        return f"{name} {self.visit:06d}" + ("" if detector is None else f"/{detector:03d}")

    # --- provenance ------------------------------------------------------------------------------
    def status(self, step: str, detector: int | None = None) -> UnitStatus | None:
        """The recorded `UnitStatus` of ``step`` on ``detector`` (on the visit for ``visit_summary``);
        None when the unit never ran."""
        try:
            if detector is None:
                return self.repo.read_visit_status(step, self.visit)
            return self.repo.read_status(step, self.visit, detector)
        except Exception as err:  # noqa: BLE001 - an unreadable record is reported
            self.problems[self._key(f"provenance/{step}", detector)] = f"{type(err).__name__}: {err}"[:300]
            return None

    # --- per visit ---------------------------------------------------------------------------------
    @functools.cached_property
    def visit_summary(self) -> Table | None:
        """The visit summary (`visitcal.tasks.update_visit_summary.read_visit_summary`): one row per
        detector with ``psf``, ``ap_corr_map``, ``wcs``, ``photo_calib``, ``status`` and the summary stats."""
        from ..tasks.update_visit_summary import read_visit_summary

        return self._load(self._key("visit_summary"), read_visit_summary, visit_summary_path(self.repo, self.visit))

    @functools.cached_property
    def refit_psf_models(self) -> Table | None:
        """Finalize's ``psf_ap_corr_cat``: per detector ``psf``, ``ap_corr_map``, ``status``, ``message``."""
        from ..tasks.finalize_characterization import read_psf_ap_corr_cat

        path = self.repo.root / "refit_psf_models" / f"refit_psf_models_{self.visit:06d}.fits"
        return self._load(self._key("refit_psf_models"), read_psf_ap_corr_cat, path)

    @functools.cached_property
    def refit_psf_star(self) -> Table | None:
        """Finalize's PSF-star table for the visit (``calib_psf_used``, ``calib_psf_reserved``,
        ``base_SdssShape_*`` and ``base_SdssShape_psf_*`` measured with the refit PSF, ``detector``...)."""
        path = self.repo.root / "refit_psf_star" / f"refit_psf_star_{self.visit:06d}.parquet"
        return self._load(self._key("refit_psf_star"), read_catalog, path)

    @functools.cached_property
    def refcat(self) -> Table | None:
        """The repository's reference catalog (``ra``, ``dec`` in degrees, ``<band>_flux``/``_fluxErr`` nJy)."""
        return self._load("refcat", read_catalog, self.repo.refcat_path)

    # --- per detector ------------------------------------------------------------------------------
    def _dataset(self, name: str, detector: int, ext: str) -> Path:
        return self.repo.dataset_path(name, self.visit, detector, ext)

    @functools.lru_cache(maxsize=None)
    def single_visit_star(self, detector: int) -> Table | None:
        """Calibrate's catalog (``calib_*_used`` flags, ``coord_ra``/``coord_dec`` with the fitted WCS)."""
        return self._load(self._key("single_visit_star", detector), read_catalog,
                          self._dataset("single_visit_star", detector, "parquet"))

    @functools.lru_cache(maxsize=None)
    def source(self, detector: int) -> Table | None:
        """Reprocess's final source catalog (calibrated ``*_flux`` in nJy, ``*_mag``, ``sky_source``...)."""
        return self._load(self._key("source", detector), read_catalog, self._dataset("source", detector, "parquet"))

    @functools.lru_cache(maxsize=None)
    def header(self, name: str, detector: int) -> fits.Header | None:
        """The primary header of the image product ``name`` (``preliminary_visit_image`` or ``visit_image``):
        calibrate's ``SFM_ASTROM_*``, ``MAGZERO*`` cards, the Detector cards. Read without the pixels."""
        def read(path):
            return fits.getheader(path, 0)

        return self._load(self._key(f"{name} header", detector), read, self._dataset(name, detector, "fits"))

    def exposure(self, name: str, detector: int):
        """The image product ``name`` of ``detector`` as an `Exposure` (not cached: images are large)."""
        return self._load(self._key(name, detector), read_exposure, self._dataset(name, detector, "fits"))

    @functools.lru_cache(maxsize=None)
    def detector_geometry(self, detector: int) -> Detector | None:
        """The `Detector` (bbox, focal-plane centre, rotation, pixel size) from the first image product
        header that has it; None when no product carries it."""
        for name in ("visit_image", "preliminary_visit_image"):
            path = self._dataset(name, detector, "fits")
            if not path.exists():
                continue
            try:
                h = fits.getheader(path, 0)
                if h.get("VCDET"):
                    return Detector.from_header(h)
            except Exception:  # noqa: BLE001 - the next product may have it
                continue
        return None

    def detector_outline_mm(self, detector: int) -> np.ndarray | None:
        """(5, 2) focal-plane corners (mm, closed) of ``detector``'s pixel box; None when its geometry
        (focal-plane centre, pixel size) is unknown."""
        from ..measurement.plugins.catalog_plugins import fp_position

        det = self.detector_geometry(detector)
        if det is None:
            return None
        b = det.bbox
        fp = fp_position(det, [b.min_x - 0.5, b.max_x + 0.5, b.max_x + 0.5, b.min_x - 0.5, b.min_x - 0.5],
                         [b.min_y - 0.5, b.min_y - 0.5, b.max_y + 0.5, b.max_y + 0.5, b.min_y - 0.5])
        if fp["base_FPPosition_flag"].any():
            return None
        return np.c_[fp["base_FPPosition_x"], fp["base_FPPosition_y"]]
