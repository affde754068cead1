"""The ``visit_summary`` of every finalized visit (`visitcal.tasks.update_visit_summary`): written to
``REPO/visit_summary/visit_summary_<visit>.fits`` from ``refit_psf_models``, the calibrated detectors'
``preliminary_visit_image`` (WCS, PhotoCalib, pixels) and ``preliminary_visit_image_background``, and
``refit_psf_star`` (for ``nPsfStar``). Reprocessing reads its calibrations from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..detection.background import BackgroundList
from ..tasks.finalize_characterization import read_psf_ap_corr_cat
from ..io import read_catalog, read_exposure
from ..tasks.update_visit_summary import UpdateVisitSummaryTask, write_visit_summary
from .repository import Repository

__all__ = ["run_visit_summary", "visit_summary_path"]


def visit_summary_path(repo: Repository, visit: int) -> Path:
    """Path of a visit's summary, ``REPO/visit_summary/visit_summary_<visit>.fits`` (visit padded to 6)."""
    return repo.root / "visit_summary" / f"visit_summary_{visit:06d}.fits"


def run_visit_summary(root, *, visits=None, overwrite: bool = False) -> list[Path]:
    """Write the visit summary of every visit with ``refit_psf_models`` (or of ``visits``); returns the paths.
    Skips visits whose summary is newer than their ``refit_psf_models`` unless ``overwrite``."""
    repo = Repository(root)
    out = []
    models_dir = repo.root / "refit_psf_models"
    for path in sorted(models_dir.glob("refit_psf_models_*.fits")) if models_dir.is_dir() else []:
        visit = int(path.stem.rsplit("_", 1)[1])
        if visits is not None and visit not in set(visits):
            continue
        target = visit_summary_path(repo, visit)
        if not overwrite and target.is_file() and target.stat().st_mtime_ns >= path.stat().st_mtime_ns:
            out.append(target)
            continue
        cat = read_psf_ap_corr_cat(path)
        calexps, backgrounds = {}, {}
        for v, d in repo.data_ids(visits=[visit]):
            st = repo.read_status("calibrate", v, d)
            exp_path = repo.dataset_path("preliminary_visit_image", v, d, "fits")
            if st is None or not st.ok or not exp_path.is_file():
                continue
            calexps[d] = lambda p=exp_path: read_exposure(p)
            bg = repo.dataset_path("preliminary_visit_image_background", v, d, "fits")
            if bg.is_file():
                backgrounds[d] = lambda p=bg: BackgroundList.read_fits(p)
        stars_path = repo.root / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet"
        sources = {}
        if stars_path.is_file():
            stars = read_catalog(stars_path, columns=["detector", "calib_psf_used"])
            det = np.asarray(stars["detector"])
            sources = {d: stars[det == d] for d in calexps}
        table = UpdateVisitSummaryTask().run(visit, cat, calexps, background_dict=backgrounds, source_dict=sources)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_visit_summary(table, target, overwrite=True)
        out.append(target)
    return out
