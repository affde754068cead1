"""The ``visit_summary`` of every finalized visit (`visitcal.tasks.update_visit_summary`): written to
``REPO/visit_summary/visit_summary_<visit>.fits`` from ``refit_psf_models``, the calibrated detectors'
``preliminary_visit_image`` (WCS, PhotoCalib, pixels) and ``preliminary_visit_image_background``, and
``refit_psf_star`` (for ``nPsfStar``). Reprocessing reads its calibrations from it.

Each visit is a unit with its provenance, ``REPO/provenance/visit_summary/<visit>.json``: the SHA-256 digests
of those inputs and of the summary, and the config hash of the summary statistics. A rerun skips a visit only
when it is up to date (`Repository.unit_action`); a summary that comes out byte-identical is left as it was.
A detector whose ``preliminary_visit_image`` or background cannot be read gets no row (it is listed with its
error in the unit's ``summary["failed_detectors"]``); the other detectors' rows are written.

A visit summary that lost a detector is ``degraded``, never ``ok``: when a detector whose ``calibrate``
provenance is ok has no row (its ``preliminary_visit_image`` or background is missing or unreadable) or a row
without a PSF, an aperture-correction map, a WCS or a PhotoCalib (its finalize failed), the summary is still
written (the other detectors are reprocessed from it; a degraded unit counts as done), and the unit's status
is ``"degraded"`` with the reason naming each such detector in its provenance (``message``, and
``summary["missing_detectors"]``: ``{detector: reason}``), in the FITS file (the ``INDEX`` HDU's header:
``VCSTATUS = 'degraded'``, ``VCMISSDT`` the detectors, comma-separated, ``VCREASON`` the reason) and in the
step's summary lines. A complete summary has none of those keywords (the same bytes as before they existed).

A summary with a row calibrated by a documented fallback (finalize's ``degraded`` rows: an aperture correction
of lower order, from fainter stars or from the whole visit; the visit's zero point for a detector with
too few photometric stars, `UpdateVisitSummaryTask`) is ``degraded`` too, the row usable: its ``status`` column
says ``degraded`` and its ``message`` why, the unit's provenance lists it in ``summary["degraded_detectors"]``
and its message, the ``INDEX`` header in ``VCDEGDT`` (and ``VCREASON``).
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
from .repository import (DEGRADED, SKIPPED, Repository, UnitStatus, UnreadableInputError, config_hash,
                         deferred_read, recorded, unit_line, write_product)
from .runner import run_units

__all__ = ["CALIBRATIONS", "STEP", "expected_config_hash", "run_visit_summary", "summarize_visit", "summary_lines",
           "visit_summary_path"]

STEP = "visit_summary"
#: What a detector's row must hold for reprocessing (`visitcal.tasks.update_visit_summary.calibrations_for`).
CALIBRATIONS = ("psf", "ap_corr_map", "wcs", "photo_calib")


def expected_config_hash() -> str:
    """The config hash a visit-summary unit records: `config_hash` of the summary statistics' configuration
    (`UpdateVisitSummaryTask`'s default; the step has no configuration of its own)."""
    return config_hash(UpdateVisitSummaryTask().compute_summary_stats.config)


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
    skipped when up to date, else written and recorded, ``"degraded"`` when a calibrated detector has no usable
    row (see the module docstring); a failure is recorded and returned as its status."""
    repo = Repository(root)
    task = UpdateVisitSummaryTask()
    chash = expected_config_hash()
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
    absent: dict[str, str] = {}  # calibrated ok, but no preliminary_visit_image to make a row from
    for v, d in repo.data_ids(visits=[visit]):
        st = repo.read_status("calibrate", v, d)
        exp_path = repo.dataset_path("preliminary_visit_image", v, d, "fits")
        if st is None or not st.ok:
            continue
        if not exp_path.is_file():
            absent[str(d)] = f"{exp_path}: no such file"
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
            stars = read_catalog(stars_path)  # the shapes too: the psfStarDelta* statistics
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
        missing = _missing_detectors(table, absent, failed)
        degraded = {str(int(r["detector"])): str(r["message"]) for r in table if str(r["status"]) == DEGRADED}
        reason = _degradation(visit, missing, degraded)
        status.outputs = {repo.relpath(target): write_product(
            target, lambda p: _write_summary(table, p, missing, reason, degraded), root=repo.root)}
        status.summary = {"n_detectors": len(table), "failed_detectors": failed, "missing_detectors": missing,
                          "degraded_detectors": degraded}
        status.status = DEGRADED if missing or degraded else "ok"
        status.message = reason
    return status


def _missing_detectors(table, absent: dict[str, str], failed: dict[str, str]) -> dict[str, str]:
    """``{detector: reason}`` of the calibrated detectors reprocessing cannot use: no row (``absent``: no
    preliminary_visit_image; ``failed``: an unreadable input) or a row lacking one of `CALIBRATIONS`."""
    missing = {d: f"no row: {why}" for d, why in {**absent, **failed}.items()}
    for row in table:
        lacks = [name for name in CALIBRATIONS if row[name] is None]
        if lacks:
            missing[str(int(row["detector"]))] = (f"no {', '.join(lacks)} (finalize status {str(row['status'])!r}: "
                                                  f"{row['message']})")
    return dict(sorted(missing.items(), key=lambda item: int(item[0])))


def _degradation(visit: int, missing: dict[str, str], degraded: dict[str, str] | None = None) -> str | None:
    """The reason of a degraded summary, naming each missing detector and each degraded row (a fallback
    calibration: its message); None when nothing is missing or degraded."""
    parts = []
    if missing:
        parts.append(f"visit {visit}: {len(missing)} calibrated detector(s) without a usable row "
                     f"({', '.join(missing)}): " + "; ".join(f"detector {d}: {why}" for d, why in missing.items()))
    if degraded:
        parts.append(f"visit {visit}: {len(degraded)} detector(s) with a fallback calibration "
                     f"({', '.join(degraded)}): " + "; ".join(f"detector {d}: {why}" for d, why in degraded.items()))
    return " | ".join(parts) if parts else None


def _write_summary(table, path, missing: dict[str, str], reason: str | None,
                   degraded: dict[str, str] | None = None) -> None:
    """`write_visit_summary`; a degraded summary has its status, missing and degraded detectors and reason in
    the ``INDEX`` header (``VCSTATUS``, ``VCMISSDT``, ``VCDEGDT``, ``VCREASON``)."""
    header = None
    if missing or degraded:
        # no comments on the long values (a card holds 80 characters; astropy would warn as it truncates them):
        # the detectors without a usable row, then why; long strings continue over CONTINUE cards, in ASCII
        header = {"VCSTATUS": DEGRADED}
        if missing:
            header["VCMISSDT"] = ",".join(missing)
        if degraded:
            header["VCDEGDT"] = ",".join(degraded)
        header["VCREASON"] = "".join(c if " " <= c <= "~" else "?" for c in reason)[:2000]
    write_visit_summary(table, path, overwrite=True, header=header)


def summary_lines(statuses: list[UnitStatus]) -> list[str]:
    """A per-visit table (text): state (``ok``, ``degraded`` or the failure's type), rows written, calibrated
    detectors without a usable row (unreadable or absent input, or no finalize calibration), then the action;
    a degraded or failed visit is followed by its reason. A skipped visit's line says ``skipped (up to date)``
    only."""
    lines = [f"{'visit':>7} {'status':<22} {'rows':>5} {'missing detectors'}"]
    for s in statuses:
        sm = s.summary or {}
        state = s.status if s.ok else (s.error_type or "failed")
        missing = sm.get("missing_detectors", sm.get("failed_detectors", {}))
        names = ",".join(sorted(missing, key=int)) or "-"
        lines.append(unit_line(s, f"{s.visit:>7}", f"{state:<22} {sm.get('n_detectors', '-'):>5} {names}"))
        if (s.degraded or not s.ok) and s.message and not s.skipped:
            lines.append(f"{'':>8}{s.message[:200]}")
    return lines
