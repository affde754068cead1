"""The ``associate`` step over a repository: per tract, `IsolatedStarAssociationTask` on every
``single_visit_star`` table (of the detectors whose ``calibrate`` provenance says ok) ->
``isolated_star_association/isolated_star_association_<tract>.parquet`` (the stars) and
``isolated_star/isolated_star_<tract>.parquet`` (their sources), with the provenance
``provenance/associate/<tract>.json``.

Tracts come from the repository's sky map, ``skymap.json`` at its root (`visitcal.core.skymap`); when it is
absent the step writes the default one, centred on the reference catalog (``refcat.parquet``; or on the
sources themselves when there is none, from their coordinate columns), so every later run uses the same
tracts. The tracts processed are those whose outer region holds at least one source, or the requested ones.

A tract's inputs are the ``single_visit_star`` tables of the calibrated detectors whose sources reach it and
``skymap.json``; its provenance records their SHA-256 digests, its config hash (the step's configuration and
the sky map, `expected_config_hash`) and its outputs' digests. A rerun skips a tract only when it is up to
date (`Repository.unit_action`), so adding a visit or a recalibration that changes a table redoes exactly the
tracts that table reaches; outputs that come out byte-identical are left as they were. A failing tract is
recorded (error type and message) and the others go on.

Fault isolation: one bad table fails the tracts it reaches, never the step
--------------------------------------------------------------------------
Each tract unit reads its own tables, in this process or on an executor's worker alike; a table that cannot
be read fails that tract with ``UnreadableInputError`` (its message names the visit, the detector and the
file, with the reader's error), and the other tracts finish. Before the units, the step reads only what it
needs to deal the tables to tracts, table by table: the two coordinate columns (``coord_ra``,
``coord_dec``). When that read fails, the table is placed by the sky extent its detector's ``calibrate``
provenance records (``summary["sky_boundary"]``: the detector's outer pixel edges through its WCS, corners and
edge midpoints): it goes to every tract whose outer region (grown by `BOUNDARY_MARGIN_DEG`, for the
curvature of the edges between those points) meets the convex hull of that boundary on the sky map's
tangent plane, a superset of the tracts its sources would reach. Those tracts then fail when they read it.

When nothing is known about an unreadable table (a calibrate record without ``sky_boundary``, written before
it was recorded), it is put in every tract: those the other tables reach and those recorded before in
``provenance/associate`` (or the requested ones), which all fail naming it. A table that cannot be placed
could hold sources of any tract, and associating a tract without it would give a wrong product marked ok;
failing its visit's other detectors' tracts only would still miss a tract that only it reaches. When there
is no tract at all to fail (every table unreadable and unplaced, nothing associated before), the step stops
with a `ValueError` naming the files. Recalibrating the detector (which records its extent) or repairing the
file limits the failure again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
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
from .repository import (SKIPPED, Repository, UnitStatus, UnreadableInputError, file_digest, recorded, unit_line,
                         write_product)
from .runner import run_units

__all__ = ["AssociateStepConfig", "BOUNDARY_MARGIN_DEG", "OUTPUTS", "STEP", "associate_tract",
           "expected_config_hash", "repository_skymap", "run_associate", "summary_lines", "tracts_of_boundary"]

STEP = "associate"
#: dataset name -> file extension (one file per tract)
OUTPUTS = {"isolated_star_association": "parquet", "isolated_star": "parquet"}
#: How far (deg, 2 arcsec) a tract's outer region is grown when an unreadable table is placed by its detector's
#: recorded boundary: the boundary is 8 points, and a distorted edge may bow out between two of them (by well
#: under an arcsecond over half a 4k detector).
BOUNDARY_MARGIN_DEG = 2.0 / 3600.0


class AssociateStepConfig(BaseModel):
    """The step's configuration: the association task's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    association: IsolatedStarAssociationConfig = Field(default_factory=IsolatedStarAssociationConfig,
                                                       description="IsolatedStarAssociationTask")


def _coords_deg(table) -> tuple[np.ndarray, np.ndarray]:
    from ..tasks.isolated_star_association import _coord_degrees

    return _coord_degrees(table, COLUMN_MAP["ra"]), _coord_degrees(table, COLUMN_MAP["dec"])


def _read_coords(path) -> tuple[np.ndarray, np.ndarray]:
    """The sources' ``(ra, dec)`` in degrees, reading only the two coordinate columns of ``path``."""
    return _coords_deg(read_catalog(path, columns=[COLUMN_MAP["ra"], COLUMN_MAP["dec"]]))


def repository_skymap(repo: Repository, coords=()) -> SimpleSkyMap:
    """The repository's sky map: ``skymap.json``, or (written there first) the default one centred on
    ``refcat.parquet``, or, when the repository has no reference catalog, on the sources of ``coords``.

    Parameters
    ----------
    repo : `Repository`
    coords : iterable
        The ``(ra, dec)`` arrays (degrees) of each input table, or the tables themselves (afw coordinate
        columns).
    """
    path = repo.root / SKYMAP_FILE
    if path.is_file():
        return load_skymap(path)
    if repo.refcat_path.is_file():
        ref = read_catalog(repo.refcat_path, columns=["ra", "dec"])
        ra, dec = np.asarray(ref["ra"], np.float64), np.asarray(ref["dec"], np.float64)
    else:
        pairs = [c if isinstance(c, tuple) else _coords_deg(c) for c in coords]
        if not pairs:
            raise ValueError(f"{repo.root}: no {SKYMAP_FILE}, no refcat.parquet and no sources to centre a sky map on")
        ra = np.concatenate([p[0] for p in pairs])
        dec = np.concatenate([p[1] for p in pairs])
    skymap = default_skymap(ra, dec)
    write_skymap(skymap, path)
    return skymap


def _paths(repo: Repository, tract: int) -> dict[str, Path]:
    return {name: repo.tract_dataset_path(name, tract, ext) for name, ext in OUTPUTS.items()}


def expected_config_hash(config: AssociateStepConfig | None, skymap: SimpleSkyMap) -> str:
    """The config hash a tract unit records: SHA-256 (16 hex digits) of the step's configuration (the defaults
    when None) and the sky map, so that a new sky map redoes every tract."""
    config = config if config is not None else AssociateStepConfig()
    doc = {"config": json.loads(config.model_dump_json()), "skymap": skymap.model_dump()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """The convex hull (counter-clockwise, shape (k, 2)) of 2-d points (Andrew's monotone chain)."""
    pts = sorted(set(map(tuple, np.asarray(points, np.float64))))
    if len(pts) <= 2:
        return np.array(pts, np.float64).reshape(-1, 2)

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1], np.float64)


def _hull_meets_box(hull: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> bool:
    """Whether a convex polygon (or a point or segment) and the box ``[x0, x1] x [y0, y1]`` intersect
    (separating-axis test: the box's two axes and the polygon's edge normals)."""
    if hull[:, 0].max() < x0 or hull[:, 0].min() > x1 or hull[:, 1].max() < y0 or hull[:, 1].min() > y1:
        return False
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    for k in range(len(hull)):
        edge = hull[(k + 1) % len(hull)] - hull[k]
        normal = np.array([-edge[1], edge[0]])
        if not normal.any():
            continue
        a, b = hull @ normal, box @ normal
        if a.max() < b.min() or b.max() < a.min():
            return False
    return True


def tracts_of_boundary(skymap: SimpleSkyMap, boundary, *, margin_deg: float = BOUNDARY_MARGIN_DEG) -> list[int]:
    """The tracts whose outer region, grown by ``margin_deg``, meets a detector's sky footprint.

    Parameters
    ----------
    skymap : `SimpleSkyMap`
    boundary : array-like, shape (n, 2)
        ``(ra, dec)`` in degrees of points on the detector's boundary (``calibrate``'s ``sky_boundary``); the
        footprint is their convex hull on the sky map's tangent plane.
    margin_deg : float
        Added to every side of each tract's outer region.

    Returns
    -------
    list of int
        Sorted tract ids: a superset of the tracts `SimpleSkyMap.find_tracts` gives for sources inside the
        footprint.

    Raises
    ------
    ValueError
        ``boundary`` is not a list of finite ``(ra, dec)`` pairs with a gnomonic image in the sky map.
    """
    pts = np.asarray(boundary, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"sky boundary: expected (ra, dec) pairs, got shape {pts.shape}")
    xi, eta = skymap.project(pts[:, 0], pts[:, 1])
    if not (np.all(np.isfinite(xi)) and np.all(np.isfinite(eta))):
        raise ValueError("sky boundary: a point is not finite or lies 90 deg or more from the sky map's centre")
    hull = _convex_hull(np.column_stack([xi, eta]))
    s, n = skymap.tract_size_deg, (skymap.n_tracts_per_side - 1) // 2
    h = 0.5 * s + skymap.tract_overlap_deg + margin_deg
    i_lo, i_hi = max(-n, math.floor((xi.min() - h) / s)), min(n, math.ceil((xi.max() + h) / s))
    j_lo, j_hi = max(-n, math.floor((eta.min() - h) / s)), min(n, math.ceil((eta.max() + h) / s))
    found = []
    for j in range(j_lo, j_hi + 1):
        for i in range(i_lo, i_hi + 1):
            if _hull_meets_box(hull, i * s - h, i * s + h, j * s - h, j * s + h):
                found.append((j + n) * skymap.n_tracts_per_side + (i + n))
    return sorted(found)


def _digest(path, cache=None) -> str:
    """`file_digest`, or ``"unreadable (<error>)"`` when the file cannot be opened (its tract then fails on it)."""
    try:
        return file_digest(path, cache)
    except OSError as err:
        return f"unreadable ({type(err).__name__})"


def _recorded_tracts(repo: Repository) -> list[int]:
    folder = repo.root / "provenance" / STEP
    return sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()) if folder.is_dir() else []


def _check_skymap_reaches(repo: Repository, skymap: SimpleSkyMap, coords) -> None:
    """Raise a `ValueError` naming the sky map and the data's extent when sources exist but no tract holds
    one (a sky map of another field): associating nothing and reporting "0 of 0 tracts" would hide it."""
    ra = np.concatenate([np.asarray(c[0], np.float64) for c in coords]) if coords else np.empty(0)
    dec = np.concatenate([np.asarray(c[1], np.float64) for c in coords]) if coords else np.empty(0)
    ok = np.isfinite(ra) & np.isfinite(dec)
    if not ok.any():
        return  # no source at all: nothing to associate, and nothing missed
    ra, dec = ra[ok], dec[ok]
    # RA extent about the sources' circular mean, so that a field across RA 0 reads as one interval
    mid = np.degrees(np.arctan2(np.sin(np.radians(ra)).mean(), np.cos(np.radians(ra)).mean())) % 360.0
    off = (ra - mid + 180.0) % 360.0 - 180.0
    half = skymap.n_tracts_per_side * skymap.tract_size_deg / 2 + skymap.tract_overlap_deg
    raise ValueError(f"{repo.root / SKYMAP_FILE}: the sky map misses all the data: its tracts reach {half:g} deg "
                     f"(on its tangent plane) from (ra, dec) = ({skymap.ra0:g}, {skymap.dec0:g}), the {ra.size} sources "
                     f"span ra {(mid + off.min()) % 360:.4f} to {(mid + off.max()) % 360:.4f}, dec {dec.min():.4f} to "
                     f"{dec.max():.4f} deg; fix or remove {SKYMAP_FILE} (a default one is then centred on the data)")


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
        Run the tracts on it (e.g. Dask's, `visitcal.pipeline.dask_executor`); by default they run one after
        another in this process. Either way each tract reads its own input tables; the same bytes either way.

    Returns
    -------
    list of UnitStatus
        One per tract, in tract order (``tract`` set, ``visit``/``detector`` None); ``summary`` holds
        ``n_inputs``, ``n_stars``, ``n_sources`` and ``nstar_<band>`` (stars with sources in the band). A tract
        that reads an unreadable table is failed with ``UnreadableInputError`` (see the module docstring).

    Raises
    ------
    ValueError
        A requested tract is not in the sky map; there is no sky map and nothing to centre one on; the sky map
        misses every source (the message names it and gives the sources' extent); or tables
        that cannot be read and have no recorded extent leave no tract to fail on them (the message names the
        files).
    """
    repo = Repository(root)
    config = config or AssociateStepConfig()
    inputs = []   # (visit, detector, calibrate config hash, path, calibrate summary)
    for (visit, detector), path in repo.single_visit_star_paths().items():
        st = repo.read_status("calibrate", visit, detector)
        if st is not None and st.ok:
            inputs.append((visit, detector, st.config_hash or "", path, st.summary or {}))
    # Plan: only the coordinate columns, table by table; a table that cannot be read is placed later.
    coords: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    unreadable: dict[int, str] = {}
    for k, (*_, path, _summary) in enumerate(inputs):
        try:
            coords[k] = _read_coords(path)
        except Exception as err:  # noqa: BLE001 - any failure to read: the tracts that read it fail on it
            unreadable[k] = f"{type(err).__name__}: {err}"
    digests = [_digest(p, repo.digest_cache) for *_, p, _summary in inputs]
    skymap = repository_skymap(repo, [coords[k] for k in sorted(coords)])
    skymap_digest = file_digest(repo.root / SKYMAP_FILE, repo.digest_cache)
    chash = expected_config_hash(config, skymap)
    overlaps: dict[int, set[int]] = {}
    unplaced = []
    for k in range(len(inputs)):
        if k in coords:
            reached = skymap.find_tracts(*coords[k])
        else:
            try:
                reached = tracts_of_boundary(skymap, inputs[k][4]["sky_boundary"])
            except (KeyError, TypeError, ValueError):  # no usable recorded extent: placed below
                unplaced.append(k)
                continue
        for tract in reached:
            overlaps.setdefault(tract, set()).add(k)
    todo = sorted(overlaps) if tracts is None else sorted({int(t) for t in tracts})
    if tracts is None and not overlaps and not unplaced:
        _check_skymap_reaches(repo, skymap, [coords[k] for k in sorted(coords)])
    if unplaced:  # nothing known about where it lies: every tract might need it, those associated before too
        everywhere = todo if tracts is not None else sorted(set(todo) | set(_recorded_tracts(repo)))
        if not everywhere:
            files = "; ".join(f"{inputs[k][3]} ({unreadable[k]})" for k in unplaced)
            raise ValueError(f"{repo.root}: no tract to associate: no readable single_visit_star reaches one, and "
                             f"these cannot be read and have no recorded sky extent: {files}")
        todo = sorted(set(todo) | set(everywhere))
        for tract in todo:
            overlaps.setdefault(tract, set()).update(unplaced)
    for t in todo:
        skymap.tract_indices(t)  # a clear error for a tract not in the sky map
    units = []
    for tract in todo:
        members = sorted(overlaps.get(tract, ()))
        sources = [str(inputs[k][3]) for k in members]
        ids = [[inputs[k][0], inputs[k][1], inputs[k][2]] for k in members]
        unit_inputs = {repo.relpath(inputs[k][3]): digests[k] for k in members}
        unit_inputs[SKYMAP_FILE] = skymap_digest
        units.append((str(repo.root), tract, config.model_dump_json(), skymap, sources, ids,
                      dict(sorted(unit_inputs.items())), chash, overwrite))
    return run_units(associate_tract, units, executor=executor, progress=progress, crashed=_crashed)


def associate_tract(root, tract, config_json, skymap, sources, ids, unit_inputs, chash, overwrite) -> UnitStatus:
    """One tract (a unit of `run_associate`, run in this process or on an executor's worker): skipped when up
    to date, else associated from the tables at ``sources`` (paths, read here) and recorded. A failure, an
    unreadable table among them (``UnreadableInputError``, naming the file), is recorded and returned as the
    tract's status.

    Parameters
    ----------
    root : str
        The repository.
    tract : int
    config_json : str
        The `AssociateStepConfig` as JSON.
    skymap : `SimpleSkyMap`
    sources : list of str
        The ``single_visit_star`` paths, in (visit, detector) order.
    ids : list of [visit, detector, calibrate config hash]
        One per source table.
    unit_inputs : dict
        ``{relpath: digest}`` of the tables and the sky map, as the planning phase saw them.
    chash : str
        `expected_config_hash`.
    overwrite : bool
        Redo the tract even when up to date.
    """
    repo = Repository(root)
    paths = _paths(repo, tract)
    previous = repo.read_tract_status(STEP, tract)
    action = repo.unit_action(previous, chash, unit_inputs, paths.values(), overwrite)
    if action == SKIPPED:
        return dataclasses.replace(previous, action=SKIPPED)
    task = IsolatedStarAssociationTask(AssociateStepConfig.model_validate_json(config_json).association)
    return _associate_tract(repo, task, tract, skymap, sources, ids, chash, paths, unit_inputs, action)


def _crashed(unit, message) -> UnitStatus:
    """The recorded status of a tract whose worker died (`run_units`' ``crashed`` callback)."""
    root, tract = unit[:2]
    status = UnitStatus(step=STEP, visit=None, detector=None, tract=int(tract), status="failed",
                        error_type="WorkerCrashed", message=message, action="done")
    Repository(root).write_status(status)
    return status


def _read_tables(sources, ids) -> list:
    """Read a tract's input tables; the first that cannot be read raises `UnreadableInputError` naming its
    visit, detector and file."""
    tables = []
    for path, (visit, detector, _) in zip(sources, ids):
        try:
            tables.append(read_catalog(path))
        except Exception as err:  # noqa: BLE001 - any reader failure fails this tract, naming the file
            raise UnreadableInputError(int(detector), f"visit {visit} detector {detector}: {path}", err) from err
    return tables


def _associate_tract(repo, task, tract, skymap, sources, ids, chash, paths, inputs, action) -> UnitStatus:
    timings: dict[str, float] = {}
    status = UnitStatus(step=STEP, visit=None, detector=None, tract=int(tract), status="failed", config_hash=chash,
                        timings=timings, versions={"visitcal": __version__, "numpy": np.__version__},
                        inputs=inputs, action=action)
    status.summary = {"n_inputs": len(sources), "inputs": ids}  # kept on failure: which tables the tract reads
    with recorded(repo, status):  # a failure is recorded, the other units go on
        t0 = time.perf_counter()
        tables = _read_tables(sources, ids)
        timings["read"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            result = task.run(tables, tract, skymap)
        except KeyError as err:  # a missing column: the task names its input by position, name the file
            text = re.sub(r"source_tables\[(\d+)\]", lambda m: str(sources[int(m.group(1))]),
                          str(err.args[0]) if err.args else "")
            raise KeyError(text) from err
        timings["associate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for name, table in (("isolated_star_association", result.star_cat), ("isolated_star", result.source_cat)):
            table.meta["tract"] = int(tract)
            status.outputs[repo.relpath(paths[name])] = write_product(
                paths[name], lambda p, table=table: write_catalog(table, p, overwrite=True), root=repo.root)
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
