"""The ``visit_summary`` of every finalized visit (`visitcal.tasks.update_visit_summary`): written to
``REPO/visit_summary/visit_summary_<visit>.fits`` from ``refit_psf_models``, the calibrated detectors'
``preliminary_visit_image`` (WCS, PhotoCalib, pixels) and ``preliminary_visit_image_background``, and
``refit_psf_star`` (for ``nPsfStar``). Reprocessing reads its calibrations from it.

Each visit is a unit with its provenance, ``REPO/provenance/visit_summary/<visit>.json``: the SHA-256 digests
of those inputs and of the summary, and the config hash of the summary statistics. A rerun skips a visit only
when it is up to date (`Repository.unit_action`); a summary that comes out byte-identical is left as it was.
A detector whose ``preliminary_visit_image`` or background cannot be read, or whose worker dies while it computes
the detector's row (``WorkerCrashed``), gets no row (it is listed with its error in the unit's
``summary["failed_detectors"]``); the other detectors' rows are written. The rows are computed by per-detector
units on the workers (``jobs`` or an executor), the visit-level part in the calling process
(`run_visit_summary`'s Notes), with the bytes of the whole visit in one process (`summarize_visit`).

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
from astropy.io import fits

from .. import __version__
from ..core.wcs import read_wcs, wcs_to_header
from ..detection.background import BackgroundList
from ..tasks.finalize_characterization import read_psf_ap_corr_cat
from ..io import read_catalog, read_exposure
from ..tasks.update_visit_summary import (UpdateVisitSummaryTask, detector_row, make_visit_summary_table,
                                          write_visit_summary, zero_point_of)
from .repository import (DEGRADED, SKIPPED, Repository, UnitStatus, UnreadableInputError, config_hash,
                         deferred_read, recorded, unit_line, write_product)
from .runner import StepProgress, digest_files, run_units, visit_chunks, worker_count

__all__ = ["CALIBRATIONS", "STEP", "DetectorRow", "expected_config_hash", "run_visit_summary", "summarize_detector",
           "summarize_visit", "summary_lines", "visit_summary_path"]

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


def run_visit_summary(root, *, visits=None, overwrite: bool = False, return_status: bool = False, jobs: int = 1,
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
    jobs : int
        Worker processes for the per-detector work (``visitcal run -j N``); 1: in this process.
    executor : concurrent.futures.Executor, optional
        Run the per-detector work on it (e.g. Dask's, `visitcal.pipeline.dask_executor`) instead of ``jobs``
        local processes. The same bytes whatever ``jobs`` or ``executor``.
    progress : callable(done, total, label), optional
        Called as each skipped visit, each detector's row and each written summary ends.

    Returns
    -------
    list of `pathlib.Path` or of `UnitStatus`
        One per visit, in visit order.

    Notes
    -----
    The work is cut in three: in this process, per visit, the up-to-date check (`Repository.unit_action` on the
    inputs' digests: an up-to-date visit is skipped without reading an image) and the reading of
    ``refit_psf_models`` and ``refit_psf_star``; then one unit per detector of every visit to redo, on the
    workers (`summarize_detector`: read its ``preliminary_visit_image`` and background and compute its row's
    statistics, ~0.4 s for an lsst-size detector); then, in this process, per visit, the visit zero point of
    the detectors with too few photometric stars (their statistics computed by a second round of detector units,
    `UpdateVisitSummaryTask.apply_visit_zero_point`), the rows assembled in detector order, the FITS written and
    the provenance recorded. Only rows, zero points and statistics cross processes, never an exposure. The
    summary has the bytes `summarize_visit` (the visit in one process) writes. A detector whose unit fails
    to read its inputs, or whose worker dies (``WorkerCrashed``), gets no row: the summary is degraded, the
    detector listed in ``summary["failed_detectors"]`` with the reason (module docstring); any other error in a
    detector's unit fails the visit, as it does `summarize_visit`.
    """
    repo = Repository(root)
    task = UpdateVisitSummaryTask()
    chash = expected_config_hash()
    models_dir = repo.root / "refit_psf_models"
    statuses: dict[int, UnitStatus] = {}
    plans: dict[int, _VisitPlan] = {}
    todo = {}
    for path in sorted(models_dir.glob("refit_psf_models_*.fits")) if models_dir.is_dir() else []:
        visit = int(path.stem.rsplit("_", 1)[1])
        if visits is None or visit in set(visits):
            todo[visit] = (path, _visit_inputs(repo, visit, path))
    # every input's digest, on the workers: the up-to-date checks below read nothing else
    known = digest_files([p for _, (paths, *_) in todo.values() for p in paths], jobs=jobs, executor=executor,
                         cache=repo.digest_cache)
    for visit, (path, found) in todo.items():
        plan = _plan_visit(repo, chash, visit, path, visit_summary_path(repo, visit), overwrite, found, known)
        if isinstance(plan, UnitStatus):
            statuses[visit] = plan
        else:
            plans[visit] = plan
    steps = StepProgress(progress, len(statuses) + sum(len(p.exposures) for p in plans.values()) + len(plans))
    report = steps.report
    for visit, status in statuses.items():
        report(f"visit {visit}: {status.status} (skipped)")
    # a few visits at a time, each written as soon as its chunk is done: the parent holds their rows only
    for chunk in visit_chunks({v: len(p.exposures) for v, p in plans.items()}, 4 * worker_count(jobs, executor)):
        group = {}
        for visit in chunk:  # the models and stars tables, read once per visit in this process
            try:
                _read_visit_tables(plans[visit])
                group[visit] = plans[visit]
            except Exception as err:  # noqa: BLE001 - recorded as the visit's failure, the others go on
                statuses[visit] = _record_failure(repo, plans[visit].status, err)
                steps.total -= len(plans[visit].exposures)
                report(f"visit {visit}: failed")
        _summarize_group(repo, task, group, statuses, jobs, executor, steps)
    ordered = [statuses[v] for v in sorted(statuses)]
    return ordered if return_status else [visit_summary_path(repo, s.visit) for s in ordered]


def _summarize_group(repo, task, plans: dict, statuses: dict, jobs, executor, steps: StepProgress) -> None:
    """The detectors' units of the visits of ``plans`` (tables read), their visit zero points and second round,
    then each visit's summary written and recorded in ``statuses``."""
    units = [(str(p.exposures[d]), str(p.backgrounds[d]) if d in p.backgrounds else None, v, d,
              p.psf_of(d), p.sources.get(d))
             for v, p in plans.items() for d in sorted(p.exposures)]
    pieces = run_units(summarize_detector, units, jobs=jobs, executor=executor, crashed=_crashed_detector,
                       progress=steps.forward(len(units)))
    for piece in pieces:
        plans[piece.visit].pieces[piece.detector] = piece
    second = []  # the detectors with a visit zero point: their statistics after it
    for visit, plan in plans.items():
        try:
            second += [(str(plan.exposures[d]), str(plan.backgrounds[d]) if d in plan.backgrounds else None, visit,
                        d, plan.psf_of(d), plan.sources.get(d), row["photo_calib"])
                       for d, row in _rows_before_stats(task, plan).items()]
        except Exception as err:  # noqa: BLE001 - a detector's unexpected error: the visit fails (as in one process)
            plan.error = err
    for piece in run_units(summarize_detector, second, jobs=jobs, executor=executor, crashed=_crashed_detector):
        plans[piece.visit].finish(piece)
    for visit, plan in plans.items():
        statuses[visit] = _write_visit(repo, plan)
        plan.models, plan.sources, plan.pieces, plan.rows = {}, {}, {}, {}  # its rows are written: let them go
        steps.report(f"visit {visit}: {statuses[visit].status}")


@dataclasses.dataclass
class DetectorRow:
    """What a detector's unit of `run_visit_summary` returns (`summarize_detector`; picklable, no pixels): the
    calibrated exposure's WCS (`visitcal.core.wcs.wcs_to_header` text), PhotoCalib, bbox and own zero point, and
    the row's statistics (None when they wait for the visit's zero point); or the failure (``status``
    ``"failed"``; ``unreadable``: the detector gets no row, the summary is degraded; else the visit fails with
    ``error_type`` and ``message``)."""

    visit: int
    detector: int
    status: str = "ok"
    wcs: object = None
    photo_calib: object = None
    bbox: object = None
    zero_point: object = None
    stats: dict | None = None
    error_type: str | None = None
    message: str | None = None
    unreadable: bool = False


def summarize_detector(exposure_path: str, background_path: str | None, visit: int, detector: int, psf,
                       sources=None, photo_calib=None) -> DetectorRow:
    """One detector's part of a visit summary (a unit of `run_visit_summary`, on a worker): read its
    ``preliminary_visit_image`` (and background when its row has a PSF) and compute its row's statistics with
    finalize's ``psf`` and its ``sources`` (finalize's ``refit_psf_star`` rows of the detector). The statistics
    of a detector that takes the visit's zero point (`UpdateVisitSummaryTask.waits_for_visit_zero_point`) wait
    for it: a second call with that ``photo_calib`` computes them. Never raises: a failure is the returned
    row's status."""
    task = UpdateVisitSummaryTask()
    out = DetectorRow(visit=int(visit), detector=int(detector))
    try:
        exposure = deferred_read(read_exposure, exposure_path, detector)()
        # the WCS as its header text: astropy pickles a WCS with 12 digits; wcs_to_header's 17 round-trip exactly
        out.wcs = wcs_to_header(exposure.wcs).tostring() if exposure.wcs is not None else None
        out.photo_calib, out.bbox = exposure.photo_calib, exposure.bbox
        out.zero_point = zero_point_of(exposure)
        # read as the visit task reads it (only for a row with a PSF): an unreadable one drops the detector
        background = (deferred_read(BackgroundList.read_fits, background_path, detector)()
                      if psf is not None and background_path is not None else None)
        if photo_calib is None and task.waits_for_visit_zero_point(out.zero_point):
            return out
        row = {"psf": psf, "photo_calib": photo_calib if photo_calib is not None else exposure.photo_calib,
               "stats": {}}
        task.detector_stats(row, exposure, background, sources)
        out.stats = row["stats"]
    except UnreadableInputError as err:
        out.status, out.error_type, out.message, out.unreadable = "failed", err.error_type, str(err), True
    except Exception as err:  # noqa: BLE001 - the visit's failure, recorded by the caller
        out.status, out.error_type, out.message = "failed", type(err).__name__, str(err)
    return out


def _crashed_detector(unit, message) -> DetectorRow:
    """A detector whose worker died (`run_units`' ``crashed`` callback): no row, the summary degraded."""
    visit, detector = unit[2:4]
    return DetectorRow(visit=int(visit), detector=int(detector), status="failed", error_type="WorkerCrashed",
                       message=message, unreadable=True)


@dataclasses.dataclass
class _VisitPlan:
    """A visit to summarize: its status so far (`_plan_visit`), inputs, tables and its detectors' rows."""

    status: UnitStatus
    models_path: Path
    target: Path
    exposures: dict
    backgrounds: dict
    absent: dict
    stars_path: Path
    models: dict = dataclasses.field(default_factory=dict)
    sources: dict = dataclasses.field(default_factory=dict)
    pieces: dict = dataclasses.field(default_factory=dict)
    rows: dict = dataclasses.field(default_factory=dict)
    failed: dict = dataclasses.field(default_factory=dict)
    error: Exception | None = None

    def psf_of(self, detector: int):
        model = self.models.get(detector)
        return model["psf"] if model is not None else None

    def finish(self, piece: DetectorRow) -> None:
        """Take a second-round unit's statistics (or its failure: no row, or the visit's error)."""
        if piece.status != "ok":
            if piece.unreadable:
                self.failed[str(piece.detector)] = f"{piece.error_type}: {piece.message}"
                self.rows.pop(piece.detector, None)
            elif self.error is None:
                self.error = _error(piece)
            return
        if piece.stats is not None:
            self.rows[piece.detector]["stats"] = piece.stats


def _error(piece: DetectorRow) -> Exception:
    """The exception a detector's unit reported, as its own type's name (recorded as the visit's failure)."""
    return type(piece.error_type or "RuntimeError", (RuntimeError,), {})(piece.message)


def _read_visit_tables(plan: _VisitPlan) -> None:
    cat = read_psf_ap_corr_cat(plan.models_path)
    plan.models = {int(r["detector"]): r for r in cat}
    if plan.stars_path.is_file():
        stars = read_catalog(plan.stars_path)  # the shapes too: the psfStarDelta* statistics
        det = np.asarray(stars["detector"])
        plan.sources = {d: stars[det == d] for d in plan.exposures}


def _rows_before_stats(task: UpdateVisitSummaryTask, plan: _VisitPlan) -> dict:
    """Build the visit's rows from its first-round units (a failed detector gets none) and give the detectors
    that wait for it the visit's zero point; returns ``{detector: row}`` of those (their statistics to compute)."""
    zps = {}
    for d in sorted(plan.pieces):
        piece = plan.pieces[d]
        if piece.status != "ok":
            if not piece.unreadable:
                raise _error(piece)
            plan.failed[str(d)] = f"{piece.error_type}: {piece.message}"
            continue
        wcs = read_wcs(fits.Header.fromstring(piece.wcs), where=f"detector {d}") if piece.wcs is not None else None
        row = detector_row(plan.status.visit, d, plan.models.get(d), wcs, piece.photo_calib, piece.bbox)
        if piece.stats is not None:
            row["stats"] = piece.stats
        plan.rows[d] = row
        zps[d] = piece.zero_point
    waiting = {d: plan.rows[d] for d in plan.rows if plan.pieces[d].stats is None
               and task.waits_for_visit_zero_point(zps[d])}
    for d, row in waiting.items():
        task.apply_visit_zero_point(row, d, zps)
    return waiting


def _record_failure(repo: Repository, status: UnitStatus, err: Exception) -> UnitStatus:
    with recorded(repo, status):
        raise err
    return status


def _write_visit(repo: Repository, plan: _VisitPlan) -> UnitStatus:
    """Write a visit's summary from its rows and record its provenance (as `summarize_visit` does)."""
    status = plan.status
    with recorded(repo, status):  # a failure is recorded, the other visits go on
        if plan.error is not None:
            raise plan.error
        table = make_visit_summary_table([plan.rows[d] for d in sorted(plan.rows)])
        _finish(repo, status, table, plan.target, plan.absent, plan.failed)
    return status


def summarize_visit(root, visit: int, overwrite: bool, models_path=None) -> UnitStatus:
    """One visit's summary, in this process (`UpdateVisitSummaryTask.run` on the whole visit; the bytes of
    `run_visit_summary`'s per-detector units): skipped when up to date, else written and recorded,
    ``"degraded"`` when a calibrated detector has no usable row (see the module docstring); a failure is
    recorded and returned as its status."""
    repo = Repository(root)
    task = UpdateVisitSummaryTask()
    chash = expected_config_hash()
    if models_path is None:
        models_path = repo.root / "refit_psf_models" / f"refit_psf_models_{visit:06d}.fits"
    models_path = Path(models_path)
    return _summarize_visit(repo, task, chash, visit, models_path, visit_summary_path(repo, visit), overwrite)


def _visit_inputs(repo, visit, models_path):
    """``(paths, exposures, backgrounds, absent, stars_path)``: every file the visit's summary reads (``paths``),
    ``{detector: path}`` of its calibrated detectors' images and backgrounds, ``{detector: why}`` of those
    calibrated without an image, and the path of its ``refit_psf_star``."""
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
    paths = [Path(models_path), *exposures.values(), *backgrounds.values()] + ([stars_path] if stars_path.is_file()
                                                                              else [])
    return paths, exposures, backgrounds, absent, stars_path


def _plan_visit(repo, chash, visit, models_path, target, overwrite, found=None, known=None):
    """The visit's recorded status when it is up to date (nothing read but the digests; ``known``: those already
    computed, `digest_files`), else a `_VisitPlan` with its inputs (``found``: `_visit_inputs`) and its new status
    (``failed`` until written)."""
    paths, exposures, backgrounds, absent, stars_path = found or _visit_inputs(repo, visit, models_path)
    inputs = repo.digests(paths, known)
    previous = repo.read_visit_status(STEP, visit)
    action = repo.unit_action(previous, chash, inputs, [target], overwrite)
    if action == SKIPPED:
        return dataclasses.replace(previous, action=SKIPPED)
    status = UnitStatus(step=STEP, visit=visit, detector=None, status="failed", config_hash=chash, inputs=inputs,
                        action=action, versions={"visitcal": __version__, "numpy": np.__version__})
    return _VisitPlan(status=status, models_path=models_path, target=target, exposures=exposures,
                      backgrounds=backgrounds, absent=absent, stars_path=stars_path)


def _summarize_visit(repo, task, chash, visit, models_path, target, overwrite) -> UnitStatus:
    plan = _plan_visit(repo, chash, visit, models_path, target, overwrite)
    if isinstance(plan, UnitStatus):
        return plan
    status = plan.status
    with recorded(repo, status):  # a failure is recorded, the other visits go on
        _read_visit_tables(plan)
        failed: dict[str, str] = {}
        active = dict(plan.exposures)
        while True:  # a detector whose input cannot be read gets no row; the summary is redone without it
            calexps = {d: deferred_read(read_exposure, p, d) for d, p in active.items()}
            bgs = {d: deferred_read(BackgroundList.read_fits, p, d) for d, p in plan.backgrounds.items()
                   if d in active}
            try:
                table = task.run(visit, list(plan.models.values()), calexps, background_dict=bgs,
                                 source_dict=plan.sources)
                break
            except UnreadableInputError as err:
                failed[str(err.detector)] = f"{err.error_type}: {err}"
                del active[err.detector]
        _finish(repo, status, table, target, plan.absent, failed)
    return status


def _finish(repo, status, table, target, absent, failed) -> None:
    """Write the summary (degraded keywords when a detector is missing or degraded) and fill ``status``."""
    visit = status.visit
    missing = _missing_detectors(table, absent, failed)
    degraded = {str(int(r["detector"])): str(r["message"]) for r in table if str(r["status"]) == DEGRADED}
    reason = _degradation(visit, missing, degraded)
    status.outputs = {repo.relpath(target): write_product(
        target, lambda p: _write_summary(table, p, missing, reason, degraded), root=repo.root)}
    status.summary = {"n_detectors": len(table), "failed_detectors": failed, "missing_detectors": missing,
                      "degraded_detectors": degraded}
    status.status = DEGRADED if missing or degraded else "ok"
    status.message = reason


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
