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

The unit is the visit (its products are per visit) and its outcome is recorded per detector. Every detector's
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
from .runner import run_units

__all__ = ["FinalizeStepConfig", "run_finalize", "summary_lines"]

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
                   tract_paths: dict[int, tuple[Path, Path]]) -> dict[str, str]:
    """The digests of everything a visit reads: its detectors' inputs and every tract's isolated-star tables."""
    return repo.digests([p for pair in inputs.values() for p in pair]
                        + [p for pair in tract_paths.values() for p in pair])


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
    chash = config_hash(config)
    inputs = _visit_inputs(repo, visit)
    paths = _visit_paths(repo, visit)
    tract_paths = _isolated_star_paths(repo)
    digests = _visit_digests(repo, inputs, tract_paths)
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
    active = dict(inputs)

    def drop(err: UnreadableInputError) -> None:
        statuses[err.detector].error_type, statuses[err.detector].message = err.error_type, str(err)
        del active[err.detector]

    t_all = time.perf_counter()
    try:
        band = None
        for d in sorted(active):
            try:
                band = _band(active[d][0])
                break
            except UnreadableInputError as err:
                err.detector = d
                drop(err)
        if band is None:
            raise NoWorkFound(f"visit {visit}: no calibrated detector")
        cats, srcs = _isolated_star_dicts(tract_paths)
        if per_detector:
            result = _finalize_per_detector(repo, config, visit, band, cats, srcs, active, statuses)
        else:
            while True:  # a detector whose input cannot be read is dropped and the visit redone without it
                src_dict = {d: deferred_read(read_catalog, p, d) for d, (p, _) in active.items()}
                exp_dict = {d: deferred_read(read_exposure, p, d) for d, (_, p) in active.items()}
                try:
                    result = FinalizeCharacterizationTask(config.finalize).run(visit, band, cats, srcs, src_dict,
                                                                               exp_dict)
                    break
                except UnreadableInputError as err:
                    drop(err)
                    if not active:
                        raise NoWorkFound(f"visit {visit}: no readable calibrated detector") from None
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
        st.timings["visit_total"] = time.perf_counter() - t_all
        st.peak_rss_mb = peak
        repo.write_status(st)
    return [statuses[d] for d in sorted(statuses)]


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


def run_finalize(root, *, visits=None, per_detector: bool = False, jobs: int = 1,
                 config: FinalizeStepConfig | None = None, overwrite: bool = False, progress=None,
                 executor=None) -> list[UnitStatus]:
    """Associate (when the isolated-star tables are missing) and finalize every calibrated visit.

    Returns the per-detector `UnitStatus` list in (visit, detector) order; visits run in parallel processes
    with ``jobs > 1``, with the same bytes whatever ``jobs`` and ``per_detector``.
    """
    repo = Repository(root)
    config = config or FinalizeStepConfig()
    if not (repo.root / "isolated_star_association").is_dir():
        run_associate(repo.root, executor=executor)
    all_visits = sorted({v for v, _ in repo.data_ids()})
    todo = all_visits if visits is None else [v for v in all_visits if v in set(visits)]
    units = [(str(repo.root), v, config.model_dump_json(), per_detector, overwrite) for v in todo]
    results = run_units(finalize_visit, units, jobs=jobs, executor=executor, progress=progress, crashed=_crashed)
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
