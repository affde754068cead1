"""The ``associate`` step over a repository: per tract, `IsolatedStarAssociationTask` on every
``single_visit_star`` table (of the detectors whose ``calibrate`` provenance says ok) ->
``isolated_star_association/isolated_star_association_<tract>.parquet`` (the stars) and
``isolated_star/isolated_star_<tract>.parquet`` (their sources), with the provenance
``provenance/associate/<tract>.json``.

Tracts come from the repository's sky map, ``skymap.json`` at its root (`visitcal.core.skymap`); when it is
absent the step writes the default one, centred on the reference catalog (``refcat.parquet``; or on the
sources themselves when there is none), so every later run uses the same tracts. The tracts processed are
those whose outer region holds at least one source, or the requested ones.

A tract's inputs are the ``single_visit_star`` tables of the calibrated detectors whose sources reach it and
``skymap.json``; its provenance records their SHA-256 digests, its config hash (the step's configuration and
the sky map) and its outputs' digests. A rerun skips a tract only when it is up to date
(`Repository.unit_action`), so adding a visit or a recalibration that changes a table redoes exactly the
tracts that table reaches; outputs that come out byte-identical are left as they were. A failing tract is
recorded (error type and message) and the others go on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..io import read_catalog, write_catalog
from ..tasks.isolated_star_association import (
    COLUMN_MAP,
    IsolatedStarAssociationConfig,
    IsolatedStarAssociationTask,
)
from ..core.skymap import SKYMAP_FILE, SimpleSkyMap, default_skymap, load_skymap, write_skymap
from .repository import SKIPPED, Repository, UnitStatus, file_digest, recorded, unit_line, write_product
from .runner import run_units

__all__ = ["AssociateStepConfig", "OUTPUTS", "STEP", "associate_tract", "repository_skymap", "run_associate",
           "summary_lines"]

STEP = "associate"
#: dataset name -> file extension (one file per tract)
OUTPUTS = {"isolated_star_association": "parquet", "isolated_star": "parquet"}


class AssociateStepConfig(BaseModel):
    """The step's configuration: the association task's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    association: IsolatedStarAssociationConfig = Field(default_factory=IsolatedStarAssociationConfig,
                                                       description="IsolatedStarAssociationTask")


def _coords_deg(table) -> tuple[np.ndarray, np.ndarray]:
    from ..tasks.isolated_star_association import _coord_degrees

    return _coord_degrees(table, COLUMN_MAP["ra"]), _coord_degrees(table, COLUMN_MAP["dec"])


def repository_skymap(repo: Repository, tables=()) -> SimpleSkyMap:
    """The repository's sky map: ``skymap.json``, or (written there first) the default one centred on
    ``refcat.parquet``, or on the ``tables``' sources when the repository has no reference catalog."""
    path = repo.root / SKYMAP_FILE
    if path.is_file():
        return load_skymap(path)
    if repo.refcat_path.is_file():
        ref = read_catalog(repo.refcat_path, columns=["ra", "dec"])
        ra, dec = np.asarray(ref["ra"], np.float64), np.asarray(ref["dec"], np.float64)
    else:
        pairs = [_coords_deg(t) for t in tables]
        if not pairs:
            raise ValueError(f"{repo.root}: no {SKYMAP_FILE}, no refcat.parquet and no sources to centre a sky map on")
        ra = np.concatenate([p[0] for p in pairs])
        dec = np.concatenate([p[1] for p in pairs])
    skymap = default_skymap(ra, dec)
    write_skymap(skymap, path)
    return skymap


def _paths(repo: Repository, tract: int) -> dict[str, Path]:
    return {name: repo.tract_dataset_path(name, tract, ext) for name, ext in OUTPUTS.items()}


def _unit_hash(config: AssociateStepConfig, skymap: SimpleSkyMap) -> str:
    doc = {"config": json.loads(config.model_dump_json()), "skymap": skymap.model_dump()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def run_associate(root, *, tracts=None, overwrite: bool = False, config: AssociateStepConfig | None = None,
                  progress=None, executor=None) -> list[UnitStatus]:
    """Associate isolated stars in every tract the calibrated sources reach (or in ``tracts``).

    Parameters
    ----------
    root : path
        The repository.
    tracts : iterable of int, optional
        Only these tracts (those without sources get empty outputs).
    overwrite : bool
        Redo tracts already done.
    config : AssociateStepConfig, optional
    progress : callable(done, total, label), optional
    executor : concurrent.futures.Executor, optional
        Run the tracts on it (e.g. Dask's, `visitcal.pipeline.dask_executor`), each reading its own input
        tables; by default they run one after another in this process. The same bytes either way.

    Returns
    -------
    list of UnitStatus
        One per tract, in tract order (``tract`` set, ``visit``/``detector`` None); ``summary`` holds
        ``n_inputs``, ``n_stars``, ``n_sources`` and ``nstar_<band>`` (stars with sources in the band).
    """
    repo = Repository(root)
    config = config or AssociateStepConfig()
    inputs = []
    for (visit, detector), path in repo.single_visit_star_paths().items():
        st = repo.read_status("calibrate", visit, detector)
        if st is not None and st.ok:
            inputs.append((visit, detector, st.config_hash or "", path))
    t0 = time.perf_counter()
    tables = [read_catalog(p) for *_, p in inputs]
    digests = [file_digest(p) for *_, p in inputs]
    t_read = time.perf_counter() - t0
    skymap = repository_skymap(repo, tables)
    skymap_digest = file_digest(repo.root / SKYMAP_FILE)
    chash = _unit_hash(config, skymap)
    overlaps: dict[int, list[int]] = {}
    for k, table in enumerate(tables):
        ra, dec = _coords_deg(table)
        for tract in skymap.find_tracts(ra, dec):
            overlaps.setdefault(tract, []).append(k)
    todo = sorted(overlaps) if tracts is None else sorted({int(t) for t in tracts})
    for t in todo:
        skymap.tract_indices(t)  # a clear error for a tract not in the sky map
    units = []
    for tract in todo:
        members = overlaps.get(tract, [])
        # in this process the tables already read are used; on an executor each unit reads its own
        sources = [tables[k] if executor is None else str(inputs[k][3]) for k in members]
        ids = [[inputs[k][0], inputs[k][1], inputs[k][2]] for k in members]
        unit_inputs = {repo.relpath(inputs[k][3]): digests[k] for k in members}
        unit_inputs[SKYMAP_FILE] = skymap_digest
        units.append((str(repo.root), tract, config.model_dump_json(), skymap, sources, ids,
                      dict(sorted(unit_inputs.items())), chash, t_read, overwrite))
    return run_units(associate_tract, units, executor=executor, progress=progress, crashed=_crashed)


def associate_tract(root, tract, config_json, skymap, sources, ids, unit_inputs, chash, t_read,
                    overwrite) -> UnitStatus:
    """One tract (a unit of `run_associate`, run in this process or on an executor's worker): skipped when up
    to date, else associated from ``sources`` (the input tables, or their paths to read) and recorded.
    A failure is recorded and returned as the tract's status."""
    repo = Repository(root)
    paths = _paths(repo, tract)
    previous = repo.read_tract_status(STEP, tract)
    action = repo.unit_action(previous, chash, unit_inputs, paths.values(), overwrite)
    if action == SKIPPED:
        return dataclasses.replace(previous, action=SKIPPED)
    task = IsolatedStarAssociationTask(AssociateStepConfig.model_validate_json(config_json).association)
    t0 = time.perf_counter()
    tables = [read_catalog(s) if isinstance(s, str) else s for s in sources]
    t_read = t_read if all(not isinstance(s, str) for s in sources) else time.perf_counter() - t0
    return _associate_tract(repo, task, tract, skymap, tables, ids, chash, paths, t_read, unit_inputs, action)


def _crashed(unit, message) -> UnitStatus:
    """The recorded status of a tract whose worker died (`run_units`' ``crashed`` callback)."""
    root, tract = unit[:2]
    status = UnitStatus(step=STEP, visit=None, detector=None, tract=int(tract), status="failed",
                        error_type="WorkerCrashed", message=message, action="done")
    Repository(root).write_status(status)
    return status


def _associate_tract(repo, task, tract, skymap, tables, ids, chash, paths, t_read, inputs, action) -> UnitStatus:
    timings = {"read_all": t_read}
    status = UnitStatus(step=STEP, visit=None, detector=None, tract=int(tract), status="failed", config_hash=chash,
                        timings=timings, versions={"visitcal": __version__, "numpy": np.__version__},
                        inputs=inputs, action=action)
    with recorded(repo, status):  # a failure is recorded, the other units go on
        t0 = time.perf_counter()
        result = task.run(tables, tract, skymap)
        timings["associate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for name, table in (("isolated_star_association", result.star_cat), ("isolated_star", result.source_cat)):
            table.meta["tract"] = int(tract)
            status.outputs[repo.relpath(paths[name])] = write_product(
                paths[name], lambda p, table=table: write_catalog(table, p, overwrite=True))
        timings["write"] = time.perf_counter() - t0
        stars = result.star_cat
        status.summary = {"n_inputs": len(tables), "inputs": ids, "n_stars": len(stars),
                          "n_sources": len(result.source_cat)}
        for b in task.config.band_order:
            status.summary[f"nstar_{b}"] = int(np.count_nonzero(np.asarray(stars[f"nsource_{b}"]) > 0))
        status.status = "ok"
    return status


def summary_lines(statuses: list[UnitStatus]) -> list[str]:
    """A per-tract summary table (text) of a run: each tract's state and numbers followed by its action; a skipped
    tract's line says ``skipped (up to date)`` only."""
    lines = [f"{'tract':>6} {'status':<22} {'inputs':>6} {'stars':>7} {'sources':>8} {'time s':>7}"]
    for s in statuses:
        sm = s.summary or {}
        state = "ok" if s.ok else (s.error_type or "failed")
        lines.append(unit_line(s, f"{s.tract:>6}", f"{state:<22} {sm.get('n_inputs', '-'):>6} "
                               f"{sm.get('n_stars', '-'):>7} {sm.get('n_sources', '-'):>8} "
                               f"{s.timings.get('total', float('nan')):>7.2f}"))
        if not s.ok and s.message:
            lines.append(f"{'':>7}{s.message[:200]}")
    return lines
