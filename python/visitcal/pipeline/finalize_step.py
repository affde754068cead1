"""The ``finalize`` step over a repository: after ``calibrate`` (and ``associate``, run here when
its products are missing), per visit, FinalizeCharacterization: consistent reserved stars, the refit PSF
and aperture corrections.

Products (dataset names as LSST's DRP v2 pipeline)::

    REPO/refit_psf_models/refit_psf_models_<visit>.fits     one row per detector, sorted: PSF and ap-corr
                                                            map (lossless), status
    REPO/refit_psf_star/refit_psf_star_<visit>.parquet      one row per PSF candidate (LSST's columns)
    REPO/provenance/finalize/<visit>_<detector>.json        per detector: status, counts, PSF size, timings

Two modes that give identical products: the visit task (``FinalizeCharacterizationTask``, one unit per visit)
or, with ``per_detector``, the detector task per detector (``refit_psf_models_detector/...`` and
``refit_psf_star_detector/...``) followed by ``ConsolidateFinalizeCharacterizationDetectorTask`` per visit.
The inputs of a visit are its detectors whose calibrate provenance is ok.

The unit is the visit (its products are per visit) and its outcome is recorded per detector. With fewer visits
than workers (`choose_split`) each visit's detectors run as separate units on the workers and the visit-level
part in the calling process, with the same products and provenance (`run_finalize`'s ``split`` and Notes).
Every detector's
provenance records the visit's inputs, ``{path: sha256}`` of each detector's ``single_visit_star`` and
``preliminary_visit_image`` and of every tract's ``isolated_star_association`` and ``isolated_star`` table
(all of them are read, as LSST hands finalize the overlapping tracts; not a tract whose latest association
failed, whose files are stale), and the digests of the two products.
A rerun skips the visit only when every detector's record is up to date (`Repository.unit_action`):
recalibrating one detector, or re-associating a tract whose tables change, redoes the visits that read them.
Products that come out byte-identical are left as they were.

A detector finalized with a documented fallback (a PSF from fainter stars, an ap corr of lower order or from
fainter stars, or, when its own stars cannot give one, the visit-level PSF of `apply_visit_level_psf` and the
visit-level ap corr of `apply_visit_level_ap_corr`, in both modes) is recorded
``degraded`` with the reason (provenance ``message``; the ``status`` and ``message`` of its ``refit_psf_models``
row; ``DEGRADED`` / ``DEGRADED_REASON`` in the ``refit_psf_star`` metadata); its products are used downstream.

Each input is read inside the unit, when the task needs it: a detector whose ``single_visit_star`` or
``preliminary_visit_image`` cannot be read is recorded as failed (the reader's error type, a message naming
the file) and the visit is finalized from its other detectors.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..tasks.finalize_characterization import (
    ConsolidateFinalizeCharacterizationDetectorTask,
    FinalizeCharacterizationConfig,
    FinalizeCharacterizationDetectorTask,
    FinalizeCharacterizationTask,
    apply_visit_level_ap_corr,
    apply_visit_level_psf,
    concat_isolated_star_cats,
    read_psf_ap_corr_cat,
    write_psf_ap_corr_cat,
)
from ..tasks.finalize_characterization import NoWorkFound
from ..io import read_catalog, read_exposure, write_catalog
from .associate_step import OUTPUTS as ASSOCIATE_OUTPUTS
from .associate_step import STEP as ASSOCIATE_STEP
from .associate_step import run_associate
from .repository import (DEGRADED, SKIPPED, SKIPPED_CRASHED, config_hash, crashed_unit_status, deferred_read,
                         Repository, summary_field, unit_line, UnitStatus, UnreadableInputError, write_product)
from .runner import StepProgress, digest_files, run_units, visit_chunks, worker_count

__all__ = ["SPLIT_MIN_DETECTORS_PER_WORKER", "DetectorUnitResult", "FinalizeStepConfig", "PreparedVisit",
           "choose_split", "finalize_detector", "finalize_visit", "prepare_visit", "run_finalize", "summary_lines"]

STEP = "finalize"


class FinalizeStepConfig(BaseModel):
    """The step's configuration: the finalize tasks' config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    finalize: FinalizeCharacterizationConfig = Field(default_factory=FinalizeCharacterizationConfig,
                                                     description="FinalizeCharacterization(Detector)Task")


def _visit_inputs(repo: Repository, visit: int) -> dict[int, tuple[Path, Path]]:
    """``{detector: (single_visit_star, preliminary_visit_image)}`` of the visit's calibrated detectors."""
    out = {}
    for (v, d) in repo.data_ids(visits=[visit]):
        st = repo.read_status("calibrate", v, d)
        src = repo.dataset_path("single_visit_star", v, d, "parquet")
        exp = repo.dataset_path("preliminary_visit_image", v, d, "fits")
        if st is not None and st.ok and src.is_file() and exp.is_file():
            out[d] = (src, exp)
    return out


def _isolated_star_paths(repo: Repository) -> dict[int, tuple[Path, Path]]:
    """``{tract: (isolated_star_association, isolated_star)}`` paths of every associated tract. A tract whose
    latest association failed is left out: its files, if any, are from an earlier run and stale."""
    out = {}
    base = repo.root / "isolated_star_association"
    for path in sorted(base.glob("isolated_star_association_*.parquet")) if base.is_dir() else []:
        tract = int(path.stem.rsplit("_", 1)[1])
        status = repo.read_tract_status(ASSOCIATE_STEP, tract)
        if status is not None and not status.ok:
            continue
        out[tract] = (path, repo.tract_dataset_path("isolated_star", tract, ASSOCIATE_OUTPUTS["isolated_star"]))
    return out


def _isolated_star_dicts(tract_paths: dict[int, tuple[Path, Path]]) -> tuple[dict, dict]:
    """Every tract's isolated-star and isolated-source tables (LSST hands finalize the overlapping tracts;
    `concat_isolated_star_cats` keeps only this visit's sources, so the others cost a read)."""
    cats = {t: read_catalog(a) for t, (a, _) in tract_paths.items()}
    srcs = {t: read_catalog(i) for t, (_, i) in tract_paths.items()}
    return cats, srcs


def _visit_digests(repo: Repository, inputs: dict[int, tuple[Path, Path]],
                   tract_paths: dict[int, tuple[Path, Path]], known: dict | None = None) -> dict[str, str]:
    """The digests of everything a visit reads: its detectors' inputs and every tract's isolated-star tables
    (``known``: those already computed, `digest_files`)."""
    return repo.digests(_visit_files(inputs, tract_paths), known)


def _visit_files(inputs: dict[int, tuple[Path, Path]], tract_paths: dict[int, tuple[Path, Path]]) -> list[Path]:
    return [p for pair in inputs.values() for p in pair] + [p for pair in tract_paths.values() for p in pair]


def _visit_paths(repo: Repository, visit: int) -> dict[str, Path]:
    return {"refit_psf_models": repo.root / "refit_psf_models" / f"refit_psf_models_{visit:06d}.fits",
            "refit_psf_star": repo.root / "refit_psf_star" / f"refit_psf_star_{visit:06d}.parquet"}


def _detector_paths(repo: Repository, visit: int, detector: int) -> dict[str, Path]:
    return {"refit_psf_models_detector": repo.dataset_path("refit_psf_models_detector", visit, detector, "fits"),
            "refit_psf_star_detector": repo.dataset_path("refit_psf_star_detector", visit, detector, "parquet")}


def _band(src_path: Path) -> str:
    try:
        cat = read_catalog(src_path, columns=["band"])
    except Exception as err:  # noqa: BLE001 - recorded on the detector
        raise UnreadableInputError(-1, src_path, err) from err
    bands = sorted(set(str(b) for b in cat["band"]))
    if len(bands) != 1:
        raise ValueError(f"{src_path}: expected one band, found {bands}")
    return bands[0]


def _detector_status(step_status: UnitStatus, ds, psf_row) -> UnitStatus:
    """Fill a provenance record from the task's `DetectorStatus` (and the detector's catalog row)."""
    step_status.status = (DEGRADED if ds.degraded else "ok") if ds.ok else "failed"
    step_status.error_type = None if ds.ok else (ds.error_type or ds.status)
    step_status.message = ds.message or (None if ds.ok else ds.status)
    step_status.timings.update({k: float(v) for k, v in ds.timings.items()})
    summary = {"finalize_status": ds.status, "n_selected": ds.n_selected, "n_matched": ds.n_matched,
               "n_reserved": ds.n_reserved, "n_candidates": ds.n_candidates, "n_used": ds.n_used,
               "psf_spatial_order": getattr(ds, "psf_spatial_order", -1)}
    if getattr(ds, "degraded_reason", ""):
        summary["degraded_reason"] = ds.degraded_reason
    if psf_row is not None:
        psf, apc = psf_row["psf"], psf_row["ap_corr_map"]
        if psf is not None:
            x, y = psf.average_position
            summary["psf_sigma"] = float(psf.compute_shape(x, y).determinant_radius)
        if apc is not None:
            for key in ("base_PsfFlux_instFlux", "base_GaussianFlux_instFlux"):
                if key in apc:
                    summary[f"apcorr_{key.split('_')[1]}_mean"] = float(apc[key].mean())
    step_status.summary = summary
    return step_status


def finalize_visit(root, visit: int, config_json: str, per_detector: bool = False, overwrite: bool = False
                   ) -> list[UnitStatus]:
    """Finalize one visit (visit task, or detector tasks + consolidate); never raises for the data: each
    detector's outcome is in its returned and stored `UnitStatus`. An up-to-date visit is not run: its
    recorded statuses are returned with ``action`` `SKIPPED`."""
    repo = Repository(root)
    config = FinalizeStepConfig.model_validate_json(config_json)
    plan = _plan_visit(repo, visit, config, overwrite)
    if isinstance(plan, list):
        return plan

    def compute():
        band, cats, srcs = _band_and_tracts(plan)
        if per_detector:
            return _finalize_per_detector(repo, config, visit, band, cats, srcs, plan.active, plan.statuses)
        while True:  # a detector whose input cannot be read is dropped and the visit redone without it
            src_dict = {d: deferred_read(read_catalog, p, d) for d, (p, _) in plan.active.items()}
            exp_dict = {d: deferred_read(read_exposure, p, d) for d, (_, p) in plan.active.items()}
            try:
                return FinalizeCharacterizationTask(config.finalize).run(visit, band, cats, srcs, src_dict, exp_dict)
            except UnreadableInputError as err:
                plan.drop(err.detector, err.error_type, str(err))
                if not plan.active:
                    raise NoWorkFound(f"visit {visit}: no readable calibrated detector") from None

    return _conclude(plan, compute)


@dataclasses.dataclass
class _VisitPlan:
    """A visit to finalize (`_plan_visit`): its detectors' new statuses (``failed`` until written), the readable
    ones (``active``: ``{detector: (single_visit_star, preliminary_visit_image)}``), its products' paths, and,
    on the per-detector path, what the parent prepared and the detectors' parts."""

    repo: Repository
    visit: int
    config: FinalizeStepConfig
    statuses: dict
    previous: dict
    active: dict
    paths: dict
    tract_paths: dict
    t0: float
    band: str | None = None
    iso: object = None
    iso_of: dict = dataclasses.field(default_factory=dict)
    parts: dict = dataclasses.field(default_factory=dict)
    error: Exception | None = None

    def drop(self, detector: int, error_type: str, message: str) -> None:
        """A detector whose input cannot be read (or whose worker died) fails; the visit goes on without it."""
        self.statuses[detector].error_type, self.statuses[detector].message = error_type, message
        del self.active[detector]


def _plan_visit(repo: Repository, visit: int, config: FinalizeStepConfig, overwrite: bool, known: dict | None = None):
    """The recorded statuses (``action`` `SKIPPED` or `SKIPPED_CRASHED`) when the visit is up to date, else a
    `_VisitPlan` (the digests of every input are computed here, or taken from ``known``; no image is read)."""
    chash = config_hash(config)
    inputs = _visit_inputs(repo, visit)
    paths = _visit_paths(repo, visit)
    tract_paths = _isolated_star_paths(repo)
    digests = _visit_digests(repo, inputs, tract_paths, known)
    previous = {d: repo.read_status(STEP, visit, d) for d in sorted(inputs)}
    actions = {d: repo.unit_action(previous[d], chash, digests, paths.values(), overwrite) for d in previous}
    # up to date, or left failed after crashing twice (every detector of the visit then says so)
    if inputs and all(a in (SKIPPED, SKIPPED_CRASHED) for a in actions.values()):
        return [dataclasses.replace(previous[d], action=actions[d]) for d in sorted(inputs)]
    # the visit is one unit: a detector up to date by itself is redone with the others, for their reason
    reason = next((a for a in actions.values() if a != SKIPPED), "done")
    versions = {"visitcal": __version__, "numpy": np.__version__}
    statuses = {d: UnitStatus(step=STEP, visit=visit, detector=d, status="failed", config_hash=chash, timings={},
                              versions=versions, inputs=digests,
                              action=reason if actions[d] == SKIPPED else actions[d]) for d in sorted(inputs)}
    return _VisitPlan(repo=repo, visit=visit, config=config, statuses=statuses, previous=previous,
                      active=dict(inputs), paths=paths, tract_paths=tract_paths, t0=time.perf_counter())


def _band_and_tracts(plan: _VisitPlan):
    """The visit's band (from its first readable detector; an unreadable one is dropped) and every tract's
    isolated-star tables."""
    band = None
    for d in sorted(plan.active):
        try:
            band = _band(plan.active[d][0])
            break
        except UnreadableInputError as err:
            plan.drop(d, err.error_type, str(err))
    if band is None:
        raise NoWorkFound(f"visit {plan.visit}: no calibrated detector")
    cats, srcs = _isolated_star_dicts(plan.tract_paths)
    return band, cats, srcs


def _conclude(plan: _VisitPlan, compute) -> list[UnitStatus]:
    """Run ``compute()`` (the visit's `FinalizeCharacterizationResult`), write the products and record every
    detector's status; a visit-level failure is recorded on every detector of the visit."""
    repo, paths, statuses = plan.repo, plan.paths, plan.statuses
    try:
        result = compute()
        outputs = {
            repo.relpath(paths["refit_psf_models"]): write_product(
                paths["refit_psf_models"], lambda p: write_psf_ap_corr_cat(result.psf_ap_corr_cat, p, overwrite=True),
                root=repo.root),
            repo.relpath(paths["refit_psf_star"]): write_product(
                paths["refit_psf_star"], lambda p: write_catalog(result.output_table, p, overwrite=True),
                root=repo.root),
        }
        rows = {int(r["detector"]): r for r in result.psf_ap_corr_cat}
        for d, ds in result.detector_status.items():
            _detector_status(statuses[d], ds, rows.get(d))
            statuses[d].outputs = outputs
    except Exception as err:  # a visit-level failure: recorded on every detector of the visit
        for st in statuses.values():
            if st.error_type is None:
                st.error_type, st.message = type(err).__name__, str(err)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    for st in statuses.values():
        st.timings["visit_total"] = time.perf_counter() - plan.t0
        st.peak_rss_mb = peak
        repo.write_status(st)
    return [statuses[d] for d in sorted(statuses)]


# --------------------------------------------------------------------------------------------------------
# The per-detector path: a visit's detectors on the workers, the visit-level part in the parent
# --------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DetectorUnitResult:
    """What a detector's unit of the per-detector path returns (`finalize_detector`; picklable, no pixels):
    the task's `DetectorPart`, or the failure (``unreadable``: an input could not be read or the worker died,
    the detector fails and the visit goes on without it; else the visit fails with ``error_type`` and
    ``message``, as an exception in the visit task does)."""

    visit: int
    detector: int
    status: str = "ok"
    part: object = None
    error_type: str | None = None
    message: str | None = None
    unreadable: bool = False


def finalize_detector(src_path: str, exp_path: str, visit: int, band: str, detector: int, iso, config_json: str
                      ) -> DetectorUnitResult:
    """One detector's part of a visit's finalize (a unit of the per-detector path of `run_finalize`, on a
    worker): `FinalizeCharacterizationTask.run_detector` on its ``single_visit_star`` and
    ``preliminary_visit_image`` with the visit's isolated sources ``iso`` (those of this detector). Never
    raises: a failure is the returned status."""
    out = DetectorUnitResult(visit=int(visit), detector=int(detector))
    config = FinalizeStepConfig.model_validate_json(config_json)
    try:
        task = FinalizeCharacterizationTask(config.finalize)
        out.part = task.run_detector(visit, band, detector, deferred_read(read_catalog, src_path, detector),
                                     deferred_read(read_exposure, exp_path, detector), iso)
    except UnreadableInputError as err:
        out.status, out.error_type, out.message, out.unreadable = "failed", err.error_type, str(err), True
    except Exception as err:  # noqa: BLE001 - the visit's failure, recorded by the parent
        out.status, out.error_type, out.message = "failed", type(err).__name__, str(err)
    return out


def _crashed_detector(unit, message) -> DetectorUnitResult:
    """A detector whose worker died (`run_units`' ``crashed`` callback): it fails, the visit goes on."""
    visit, _, detector = unit[2:5]
    return DetectorUnitResult(visit=int(visit), detector=int(detector), status="failed",
                              error_type="WorkerCrashed", message=message, unreadable=True)


def _iso_by_detector(iso, srcs: dict, visit: int, id_column: str, detectors) -> dict:
    """``{detector: rows of the visit's isolated sources on it}`` (by source id; what a detector's unit needs
    of the visit's table: its own sources' matches are the same, source ids being unique). Every detector gets
    the whole table when a tract's source table has no ``detector`` column."""
    ids, dets = [], []
    for tract in sorted(srcs):
        sources = srcs[tract]
        if "detector" not in sources.colnames:
            return {d: iso for d in detectors}
        keep = np.asarray(sources["visit"]) == visit
        ids.append(np.asarray(sources[id_column], dtype=np.int64)[keep])
        dets.append(np.asarray(sources["detector"], dtype=np.int64)[keep])
    ids_all, dets_all = np.concatenate(ids), np.concatenate(dets)
    order = np.argsort(ids_all, kind="stable")
    iso_ids = np.asarray(iso[id_column], dtype=np.int64)
    pos = np.clip(np.searchsorted(ids_all[order], iso_ids), 0, max(len(order) - 1, 0))
    det_of = np.where(ids_all[order][pos] == iso_ids, dets_all[order][pos], -1) if len(order) else \
        np.full(len(iso), -1)
    return {d: iso[det_of == d] for d in detectors}


@dataclasses.dataclass
class PreparedVisit:
    """What a visit's first unit on the per-detector path returns (`prepare_visit`; picklable): its band, its
    isolated sources and each detector's share of them, the detectors dropped (an unreadable input:
    ``{detector: (error_type, message)}``); or the visit's failure (``error_type`` and ``message``; ``crashed``
    when its worker died)."""

    visit: int
    band: str | None = None
    iso: object = None
    iso_of: dict = dataclasses.field(default_factory=dict)
    dropped: dict = dataclasses.field(default_factory=dict)
    error_type: str | None = None
    message: str | None = None
    crashed: bool = False


def prepare_visit(root, visit: int, config_json: str, active: dict) -> PreparedVisit:
    """The first unit of a visit on the per-detector path (on a worker: it reads the repository's tables): the
    band (from the first readable detector of ``active``, ``{detector: (single_visit_star,
    preliminary_visit_image)}``), every tract's isolated-star tables, the visit's isolated sources
    (`FinalizeCharacterizationTask.isolated_sources`) and each detector's share of them. Never raises."""
    config = FinalizeStepConfig.model_validate_json(config_json)
    out = PreparedVisit(visit=int(visit))
    plan = _VisitPlan(repo=Repository(root), visit=int(visit), config=config,
                      statuses={d: UnitStatus(step=STEP, visit=visit, detector=d, status="failed") for d in active},
                      previous={}, active={d: (Path(a), Path(b)) for d, (a, b) in active.items()}, paths={},
                      tract_paths=_isolated_star_paths(Repository(root)), t0=0.0)
    try:
        band, cats, srcs = _band_and_tracts(plan)
        task = FinalizeCharacterizationTask(config.finalize)
        out.band = band
        out.iso = task.isolated_sources(visit, band, cats, srcs)
        out.iso_of = _iso_by_detector(out.iso, srcs, visit, config.finalize.id_column, sorted(plan.active))
    except Exception as err:  # noqa: BLE001 - recorded on every detector of the visit by the parent
        out.error_type, out.message = type(err).__name__, str(err)
    out.dropped = {d: (st.error_type, st.message) for d, st in plan.statuses.items() if d not in plan.active}
    return out


def _crashed_prepare(unit, message) -> PreparedVisit:
    """A visit whose first unit's worker died (`run_units`' ``crashed`` callback): every detector crashed."""
    return PreparedVisit(visit=int(unit[1]), error_type="WorkerCrashed", message=message, crashed=True)


def _take_prepared(plan: _VisitPlan, prepared: PreparedVisit) -> None:
    """Apply a visit's `PreparedVisit` to its plan (dropped detectors; the band and isolated sources; or the
    visit's failure, a crash counted on every detector as `crashed_unit_status` does)."""
    for d, (error_type, message) in prepared.dropped.items():
        plan.drop(d, error_type, message)
    if prepared.error_type is not None:
        if prepared.crashed:
            for d in plan.statuses:
                _count_crash(plan, d)
        plan.error = _remote_error(prepared.error_type, prepared.message)
        return
    plan.band, plan.iso, plan.iso_of = prepared.band, prepared.iso, prepared.iso_of


def _remote_error(error_type: str | None, message: str | None) -> Exception:
    """An exception raised in a worker, as its own type's name (recorded as the visit's failure)."""
    return type(error_type or "RuntimeError", (RuntimeError,), {})(message)


def _assemble_split(plan: _VisitPlan):
    """The visit-level part of the per-detector path, in the parent: the detectors' parts in detector order (an
    unreadable or crashed detector dropped, any other error the visit's), then `FinalizeCharacterizationTask.
    assemble` (the visit-level PSF and ap-corr fallbacks): the visit task's result."""
    if plan.error is not None:
        raise plan.error
    visit = plan.visit
    parts = {}
    for d in sorted(plan.active):
        unit = plan.parts[d]
        if unit.status == "ok":
            parts[d] = unit.part
        elif unit.unreadable:
            plan.drop(d, unit.error_type, unit.message)
            if unit.error_type == "WorkerCrashed":
                _count_crash(plan, d)
        else:
            raise _remote_error(unit.error_type, unit.message)
    if not parts:
        raise NoWorkFound(f"visit {visit}: no readable calibrated detector")
    if parts[min(parts)].template is None:  # cannot happen: every unit builds its schema
        raise RuntimeError(f"visit {visit}: detector {min(parts)} gave no output schema")
    src_dict = {d: deferred_read(read_catalog, p, d) for d, (p, _) in plan.active.items()}
    exp_dict = {d: deferred_read(read_exposure, p, d) for d, (_, p) in plan.active.items()}
    task = FinalizeCharacterizationTask(plan.config.finalize)
    return task.assemble(visit, plan.band, parts, plan.iso, src_dict, exp_dict)


def _count_crash(plan: _VisitPlan, detector: int) -> None:
    """A crashed detector's ``crashes``: the previous record's plus one when it crashed with the same config and
    inputs (`crashed_unit_status`), else 1."""
    st, previous = plan.statuses[detector], plan.previous.get(detector)
    same = (previous is not None and previous.error_type == "WorkerCrashed"
            and previous.config_hash == st.config_hash and (previous.inputs or {}) == st.inputs)
    st.crashes = (previous.crashes or 0) + 1 if same else 1


def _run_split(repo: Repository, todo, config: FinalizeStepConfig, overwrite: bool, jobs: int, executor,
               progress) -> list[list[UnitStatus]]:
    """The per-detector path of `run_finalize` (see its Notes); the statuses per visit, in ``todo``'s order."""
    results: dict[int, list[UnitStatus]] = {}
    plans: dict[int, _VisitPlan] = {}
    tract_paths = _isolated_star_paths(repo)  # every input's digest, on the workers (the up-to-date checks)
    known = digest_files([p for v in todo for p in _visit_files(_visit_inputs(repo, v), tract_paths)], jobs=jobs,
                         executor=executor, cache=repo.digest_cache)
    for visit in todo:
        plan = _plan_visit(repo, visit, config, overwrite, known)
        if isinstance(plan, list):
            results[visit] = plan
        else:
            plans[visit] = plan
    config_json = config.model_dump_json()
    steps = StepProgress(progress, len(results) + sum(len(p.active) + 1 for p in plans.values()))
    report = steps.report
    for visit, statuses in results.items():
        report(f"visit {visit}: {sum(s.ok for s in statuses)} of {len(statuses)} detectors ok (skipped)")
    # a few visits at a time, each concluded when its group is done: this process holds their parts only
    for chunk in visit_chunks({v: len(p.active) for v, p in plans.items()}, 4 * worker_count(jobs, executor)):
        first = [(str(repo.root), v, config_json, {d: (str(a), str(b)) for d, (a, b) in plans[v].active.items()})
                 for v in chunk]
        for prepared in run_units(prepare_visit, first, jobs=jobs, executor=executor, crashed=_crashed_prepare):
            n_before = len(plans[prepared.visit].active)
            _take_prepared(plans[prepared.visit], prepared)
            plan = plans[prepared.visit]
            steps.total -= n_before - (len(plan.active) if plan.error is None else 0)
        units = [(str(plans[v].active[d][0]), str(plans[v].active[d][1]), v, plans[v].band, d, plans[v].iso_of[d],
                  config_json) for v in chunk if plans[v].error is None for d in sorted(plans[v].active)]
        for unit in run_units(finalize_detector, units, jobs=jobs, executor=executor, crashed=_crashed_detector,
                              progress=steps.forward(len(units))):
            plans[unit.visit].parts[unit.detector] = unit
        for visit in chunk:
            plan = plans.pop(visit)
            results[visit] = _conclude(plan, lambda plan=plan: _assemble_split(plan))
            report(f"visit {visit}: {sum(s.ok for s in results[visit])} of {len(results[visit])} detectors ok")
    return [results[v] for v in todo]


def _finalize_per_detector(repo, config, visit, band, cats, srcs, active, statuses):
    """The detector task on each readable detector, then the consolidation; a detector that fails is recorded."""
    task = FinalizeCharacterizationDetectorTask(config.finalize)
    models, stars, det_status = {}, {}, {}
    for d in sorted(active):
        src_path, exp_path = active[d]
        dpaths = _detector_paths(repo, visit, d)
        try:
            res = task.run(visit, band, d, cats, srcs, deferred_read(read_catalog, src_path, d),
                           deferred_read(read_exposure, exp_path, d))
        except NoWorkFound as err:
            statuses[d].error_type, statuses[d].message = "NoWorkFound", str(err)
            continue
        except UnreadableInputError as err:
            statuses[d].error_type, statuses[d].message = err.error_type, str(err)
            continue
        det_status.update(res.detector_status)
        write_product(dpaths["refit_psf_models_detector"],
                      lambda p: write_psf_ap_corr_cat(res.psf_ap_corr_cat, p, overwrite=True), root=repo.root)
        write_product(dpaths["refit_psf_star_detector"], lambda p: write_catalog(res.output_table, p, overwrite=True),
                      root=repo.root)
        models[d] = lambda p=dpaths["refit_psf_models_detector"]: read_psf_ap_corr_cat(p)
        stars[d] = lambda p=dpaths["refit_psf_star_detector"]: read_catalog(p)
    result = ConsolidateFinalizeCharacterizationDetectorTask().run(
        psf_ap_corr_detector_dict=models, src_detector_table_dict=stars)
    result.detector_status = det_status
    if config.finalize.do_visit_level_psf:  # as the visit task does, on the same inputs: the same bytes
        iso = concat_isolated_star_cats(band, cats, srcs, visit=visit, reserve_selection=task.reserve_selection,
                                        id_column=config.finalize.id_column)
        pairs = {d: (lambda s=active[d][0], e=active[d][1], d=d: (deferred_read(read_catalog, s, d)(),
                                                                  deferred_read(read_exposure, e, d)()))
                 for d in active}
        apply_visit_level_psf(result, pairs, config.finalize, visit=visit, band=band, isolated_source_table=iso)
    if config.finalize.do_visit_level_ap_corr:  # as the visit task does, on the same tables: the same bytes
        inputs = {d: (lambda p=active[d][1], d=d: _bbox_and_ap_corr(p, d)) for d in active}
        apply_visit_level_ap_corr(result, inputs, config.finalize)
    return result


def _bbox_and_ap_corr(path, detector: int):
    """A calibrated detector's bbox and input ap-corr map (for the visit-level fallback of the per-detector path)."""
    exposure = deferred_read(read_exposure, path, detector)()
    return exposure.bbox, exposure.ap_corr_map


#: `choose_split`'s minimum of calibrated detectors per worker for the per-detector path (fewer would leave
#: workers idle anyway). Measured (bench/README.md, issue 25), 1 visit on 2 workers, best of 4 at low load:
#: 4 lsst detectors 2.76 s on the per-detector path vs 3.78 s as one unit, 8 small ones 2.30 vs 2.85 s (single
#: runs at a higher load went the other way by up to 1.3x: the path's fixed costs, fresh workers for each of
#: its three rounds of units, are about a second).
SPLIT_MIN_DETECTORS_PER_WORKER = 1


def choose_split(n_visits: int, n_detectors: int, workers: int) -> bool:
    """Whether `run_finalize` takes the per-detector path by default: fewer visits than workers (one unit per
    visit would leave workers idle) and at least `SPLIT_MIN_DETECTORS_PER_WORKER` detectors per worker over
    those visits. The products are the same bytes either way."""
    return workers > 1 and 0 < n_visits < workers and n_detectors >= SPLIT_MIN_DETECTORS_PER_WORKER * workers


def run_finalize(root, *, visits=None, per_detector: bool = False, jobs: int = 1,
                 config: FinalizeStepConfig | None = None, overwrite: bool = False, progress=None,
                 executor=None, split: bool | None = None) -> list[UnitStatus]:
    """Associate (when the isolated-star tables are missing) and finalize every calibrated visit.

    Returns the per-detector `UnitStatus` list in (visit, detector) order, with the same bytes whatever
    ``jobs``, ``executor``, ``per_detector`` and ``split``.

    Parameters
    ----------
    split : bool, optional
        Run each visit's detectors as separate units (the per-detector path, Notes). By default (None) it is
        chosen by `choose_split`: per detector when fewer visits are to be finalized than there are workers
        (``jobs``, or the executor's workers) and they have at least `SPLIT_MIN_DETECTORS_PER_WORKER`
        detectors per worker (and ``per_detector`` is False); else one unit per visit.

    Notes
    -----
    One unit per visit (`finalize_visit`) keeps a worker per visit, so one or two visits use one or two cores
    whatever ``jobs``. The per-detector path cuts each visit in four: in this process, the up-to-date check
    (an up-to-date visit is skipped without reading an image; the inputs' digests are computed on the workers,
    `digest_files`); a first unit per visit on the workers
    (`prepare_visit`: the band, the tracts' isolated-star tables and the visit's isolated sources, split by
    detector); one unit per detector on the workers (`finalize_detector`: the PSF star
    selection, the PSF fit, the measurement of the PSF stars and their aperture correction,
    `FinalizeCharacterizationTask.run_detector`), returning the detector's PSF, ap-corr map, measured star rows
    and status (no pixels); then, in this process, the visit-level part (`FinalizeCharacterizationTask.assemble`:
    rows in detector order, the visit-level PSF fallback, which reads the inputs again, and the ap-corr
    fallback), the products written and the provenance recorded. The products and provenance are those of the
    visit unit (timings and peak memory aside: ``peak_rss_mb`` is then this process's). A detector whose
    worker dies (``WorkerCrashed``) fails alone on this path, its visit finalized from the others, where the
    visit unit fails the whole visit.
    """
    repo = Repository(root)
    config = config or FinalizeStepConfig()
    if not (repo.root / "isolated_star_association").is_dir():
        run_associate(repo.root, executor=executor)
    all_visits = sorted({v for v, _ in repo.data_ids()})
    todo = all_visits if visits is None else [v for v in all_visits if v in set(visits)]
    if split is None:
        split = not per_detector and choose_split(len(todo), sum(len(_visit_inputs(repo, v)) for v in todo),
                                                  worker_count(jobs, executor))
    if split and not per_detector:
        results = _run_split(repo, todo, config, overwrite, jobs, executor, progress)
    else:
        units = [(str(repo.root), v, config.model_dump_json(), per_detector, overwrite) for v in todo]
        results = run_units(finalize_visit, units, jobs=jobs, executor=executor, progress=progress,
                            crashed=_crashed)
    return [s for per_visit in results for s in per_visit]


def summary_lines(statuses: list[UnitStatus]) -> list[str]:
    """The per-detector summary: stars used and reserved, PSF size, ap-corr means, status, then the action
    (``done``, ``redone (<why>)``); a skipped detector's line says ``skipped (up to date)`` only."""
    lines = [f"{'visit':>7} {'det':>4} {'status':<24} {'cand':>5} {'used':>5} {'resvd':>5} {'psfSigma':>8} "
             f"{'apcorr Psf':>10} {'apcorr Gau':>10}"]
    for s in statuses:
        sm = s.summary or {}

        def f(key, fmt):
            return summary_field(sm, key, fmt)
        state = sm.get("finalize_status") or ("ok" if s.ok else (s.error_type or "failed"))
        lines.append(unit_line(s, f"{s.visit:>7} {s.detector:>4}",
                               f"{state:<24} {f('n_matched', 'd'):>5} {f('n_used', 'd'):>5} "
                               f"{f('n_reserved', 'd'):>5} {f('psf_sigma', '.4f'):>8} "
                               f"{f('apcorr_PsfFlux_mean', '.4f'):>10} {f('apcorr_GaussianFlux_mean', '.4f'):>10}"))
        if (s.degraded or not s.ok) and s.message and not s.skipped:
            lines.append(f"{'':>13}{s.message[:200]}")
    return lines


def _crashed(unit, message):
    """The recorded statuses of a visit whose worker died (`run_units`' ``crashed`` callback): every
    calibrated detector of the visit fails with ``WorkerCrashed``."""
    root, visit, config_json = unit[:3]
    repo = Repository(root)
    inputs = _visit_inputs(repo, visit)
    digests = _visit_digests(repo, inputs, _isolated_star_paths(repo))
    chash = config_hash(FinalizeStepConfig.model_validate_json(config_json))
    return crashed_unit_status(STEP, root, visit, sorted(inputs), message, chash, digests)
