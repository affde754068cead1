"""The ``visit_summary`` of every finalized visit (`visitcal.tasks.update_visit_summary`): written to
``REPO/visit_summary/visit_summary_<visit>.fits`` from ``refit_psf_models``, the calibrated detectors'
``preliminary_visit_image`` (WCS, PhotoCalib, pixels) and ``preliminary_visit_image_background``, and
``refit_psf_star`` (for ``nPsfStar``). Reprocessing reads its calibrations from it.

Each visit is a unit with its provenance, ``REPO/provenance/visit_summary/<visit>.json``: the SHA-256 digests
of those inputs and of the summary, and the config hash of the summary statistics. A rerun skips a visit only
when it is up to date (`Repository.unit_action`); a summary that comes out byte-identical is left as it was.
A detector whose ``preliminary_visit_image`` or background cannot be read gets no row (it is listed with its
error in the unit's ``summary["failed_detectors"]``); the other detectors' rows are written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import __version__
from ..detection.background import BackgroundList
from ..tasks.finalize_characterization import read_psf_ap_corr_cat
from ..io import read_catalog, read_exposure
from ..tasks.update_visit_summary import UpdateVisitSummaryTask, write_visit_summary
from .repository import (SKIPPED, Repository, UnitStatus, UnreadableInputError, config_hash, deferred_read, recorded,
                         unit_line, write_product)
from .runner import run_units

__all__ = ["STEP", "run_visit_summary", "summarize_visit", "summary_lines", "visit_summary_path"]

STEP = "visit_summary"


def visit_summary_path(repo: Repository, visit: int) -> Path:
    """Path of a visit's summary, ``REPO/visit_summary/visit_summary_<visit>.fits`` (visit padded to 6)."""
    return repo.root / "visit_summary" / f"visit_summary_{visit:06d}.fits"


def run_visit_summary(root, *, visits=None, overwrite: bool = False, return_status: bool = False,
                      executor=None, progress=None) -> list:
    """Write the visit summary of every visit with ``refit_psf_models`` (or of ``visits``).

    Parameters
    ----------
    root : path
        The repository.
    visits : iterable of int, optional
        Only these visits.
    overwrite : bool
        Redo visits that are up to date.
    return_status : bool
        Return the visits' `UnitStatus` (``action`` says what was done) instead of the summaries' paths.
    executor : concurrent.futures.Executor, optional
        Run the visits on it (e.g. Dask's, `visitcal.pipeline.dask_executor`); by default one after another
        in this process. The same bytes either way.
    progress : callable(done, total, label), optional
        Called as each visit ends.

    Returns
    -------
    list of `pathlib.Path` or of `UnitStatus`
        One per visit, in visit order.
    """
    repo = Repository(root)
    units = []
    models_dir = repo.root / "refit_psf_models"
    for path in sorted(models_dir.glob("refit_psf_models_*.fits")) if models_dir.is_dir() else []:
        visit = int(path.stem.rsplit("_", 1)[1])
        if visits is not None and visit not in set(visits):
            continue
        units.append((str(repo.root), visit, overwrite, str(path)))
    statuses = run_units(summarize_visit, units, executor=executor, crashed=_crashed, progress=progress)
    return statuses if return_status else [visit_summary_path(repo, unit[1]) for unit in units]


def summarize_visit(root, visit: int, overwrite: bool, models_path=None) -> UnitStatus:
    """One visit's summary (a unit of `run_visit_summary`, run in this process or on an executor's worker):
    skipped when up to date, else written and recorded; a failure is recorded and returned as its status."""
    repo = Repository(root)
    task = UpdateVisitSummaryTask()
    chash = config_hash(task.compute_summary_stats.config)
    if models_path is None:
        models_path = repo.root / "refit_psf_models" / f"refit_psf_models_{visit:06d}.fits"
    models_path = Path(models_path)
    return _summarize_visit(repo, task, chash, visit, models_path, visit_summary_path(repo, visit), overwrite)


def _crashed(unit, message) -> UnitStatus:
    """The recorded status of a visit whose worker died (`run_units`' ``crashed`` callback)."""
    root, visit = unit[:2]
    status = UnitStatus(step=STEP, visit=int(visit), detector=None, status="failed", error_type="WorkerCrashed",
                        message=message, action="done")
    Repository(root).write_status(status)
    return status


def _summarize_visit(repo, task, chash, visit, models_path, target, overwrite) -> UnitStatus:
    exposures, backgrounds = {}, {}
    for v, d in repo.data_ids(visits=[visit]):
        st = repo.read_status("calibrate", v, d)
        exp_path = repo.dataset_path("preliminary_visit_image", v, d, "fits")
        if st is None or not st.ok or not exp_path.is_file():
            continue
        exposures[d] = exp_path
        bg = repo.dataset_path("preliminary_visit_image_background", v, d, "fits")
        if bg.is_file():
            backgrounds[d] = bg
    stars_path = repo.root / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet"
    inputs = repo.digests([models_path, *exposures.values(), *backgrounds.values()]
                          + ([stars_path] if stars_path.is_file() else []))
    previous = repo.read_visit_status(STEP, visit)
    action = repo.unit_action(previous, chash, inputs, [target], overwrite)
    if action == SKIPPED:
        return dataclasses.replace(previous, action=SKIPPED)
    status = UnitStatus(step=STEP, visit=visit, detector=None, status="failed", config_hash=chash, inputs=inputs,
                        action=action, versions={"visitcal": __version__, "numpy": np.__version__})
    with recorded(repo, status):  # a failure is recorded, the other visits go on
        cat = read_psf_ap_corr_cat(models_path)
        sources = {}
        if stars_path.is_file():
            stars = read_catalog(stars_path, columns=["detector", "calib_psf_used"])
            det = np.asarray(stars["detector"])
            sources = {d: stars[det == d] for d in exposures}
        failed: dict[str, str] = {}
        active = dict(exposures)
        while True:  # a detector whose input cannot be read gets no row; the summary is redone without it
            calexps = {d: deferred_read(read_exposure, p, d) for d, p in active.items()}
            bgs = {d: deferred_read(BackgroundList.read_fits, p, d) for d, p in backgrounds.items() if d in active}
            try:
                table = task.run(visit, cat, calexps, background_dict=bgs, source_dict=sources)
                break
            except UnreadableInputError as err:
                failed[str(err.detector)] = f"{err.error_type}: {err}"
                del active[err.detector]
        status.outputs = {repo.relpath(target): write_product(
            target, lambda p: write_visit_summary(table, p, overwrite=True))}
        status.summary = {"n_detectors": len(table), "failed_detectors": failed}
        status.status = "ok"
    return status


def summary_lines(statuses: list[UnitStatus]) -> list[str]:
    """A per-visit table (text): rows written, detectors without a row (unreadable input), then the action;
    a skipped visit's line says ``skipped (up to date)`` only."""
    lines = [f"{'visit':>7} {'status':<22} {'rows':>5} {'failed detectors'}"]
    for s in statuses:
        sm = s.summary or {}
        state = "ok" if s.ok else (s.error_type or "failed")
        failed = ",".join(sorted(sm.get("failed_detectors", {}))) or "-"
        lines.append(unit_line(s, f"{s.visit:>7}", f"{state:<22} {sm.get('n_detectors', '-'):>5} {failed}"))
        if not s.ok and s.message:
            lines.append(f"{'':>8}{s.message[:200]}")
    return lines
