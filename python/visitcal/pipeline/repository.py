"""A data repository: a directory of inputs and of each step's outputs, with a provenance file per unit
of work so that a rerun redoes exactly the units whose configuration or inputs changed.

Layout (visits 6-digit, detectors 3-digit, zero-padded)::

    ROOT/
      repo.json, camera.json, refcat.parquet, truth/           inputs (`visitcal.sim` writes them)
      post_isr_image/<visit>/post_isr_image_<visit>_<detector>_<snap>.fits
      <dataset>/<visit>/<dataset>_<visit>_<detector>.<ext>      a step's per-detector outputs, e.g.
          preliminary_visit_image (.fits), preliminary_visit_image_background (.fits),
          single_visit_star (.parquet)
      provenance/<step>/<visit>_<detector>.json                 per detector: status ("ok", "degraded"
          with its reason, or the failure's type and message), action, timings, peak memory, config hash,
          input and output digests, versions
      skymap.json                                               the sky map of the per-tract steps
                                                                (`visitcal.core.skymap`)
      <dataset>/<dataset>_<tract>.parquet                       a per-tract step's outputs, e.g.
          isolated_star_association, isolated_star (tracts not zero-padded)
      provenance/<step>/<tract>.json                            per tract, as per detector
      refit_psf_models/, refit_psf_star/, visit_summary/        per-visit outputs (``<name>_<visit>.<ext>``)
      provenance/visit_summary/<visit>.json                     per visit, as per detector
      qa/index.html, qa/<visit>/...                             ``visitcal qa``'s report (`visitcal.qa.report`):
                                                                read from the products, never read by a step

Up to date, redone, skipped
---------------------------
Every unit (a step on one detector, one visit or one tract) records in its provenance the ``config_hash``
of its configuration, ``inputs``, ``{path relative to ROOT: sha256}`` of every file it read, and
``outputs``, the same for every file it wrote. A unit is up to date, and skipped, when its recorded status
is ``ok``, its config hash is the current one, every output exists with the recorded digest, and every
input's current digest is the recorded one; otherwise it is redone, and its ``action`` says why
(`unit_action`). Staleness propagates by itself: a redone unit whose outputs change changes the digests
its consumers read. A redone unit that produces byte-identical output leaves the existing file (bytes and
mtime) alone (`write_product`), so nothing downstream is redone needlessly.

Digests are the SHA-256 of the file's bytes, of upstream products and raw inputs alike: the simplest truth,
deterministic, and independent of mtimes, file systems and which process wrote a file. Cost: hashlib's
SHA-256 runs at ~1.8 GB/s on the development machine (50 MB, a 2k x 2k three-plane FITS, in 28 ms, read from
the page cache), so a no-op rerun of a 4k x 4k LSST detector (two 190 MB snaps, a 190 MB calexp read by
three steps, and each unit's outputs) hashes ~1.5 GB, ~1 s. Since issue 25 (a detector's whole chain in a few
seconds) each file is hashed once: the repository's digest cache (`visitcal.pipeline.digest_cache`,
``REPO/.visitcal/digests``) keeps a file's digest with its device, inode, size, modification and status-change
times, and gives it back only while all are unchanged; the status-change time moves on every write, rename,
``touch`` or ``chmod`` and cannot be set back, so a file rewritten with its mtime restored is hashed again.
``VISITCAL_DIGEST_CACHE=0`` turns it off. A product is hashed by a second thread while its atomic write waits
for ``fsync`` (`visitcal.core.atomic.digest_while_syncing`), which hides the hash behind the disk.

A unit is ``ok``, ``degraded`` (it completed and wrote its products, but they lack something: e.g. a visit
summary without a calibrated detector's row; ``message`` says what) or ``failed``. A degraded unit counts as
done, like an ok one (`UnitStatus.ok` is True for both): its consumers run on its products and a rerun skips it
while it is up to date; `UnitStatus.degraded` tells it apart.

Every file is written atomically, so an interrupted run leaves no half-written product, and a failure on one
unit is recorded without touching the others.

Outputs stay inside the repository: an output folder (a dataset's, ``provenance/``) that is a symbolic link
leading out of ROOT is refused with `OutputOutsideRepositoryError` before anything is written there
(`check_output_path`), so a run never writes elsewhere without a word. Input folders (``post_isr_image/``,
``truth/``) may be links anywhere: they are only read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import resource
import time
from pathlib import Path

from ..core.atomic import atomic_write, digest_while_syncing, temporary_path
from ..io import VisitcalIOError
from .digest_cache import DigestCache, sha256_file

__all__ = ["DEGRADED", "SKIPPED", "SKIPPED_CRASHED", "Repository",
           "UnitStatus", "UnreadableInputError", "config_hash", "crashed_unit_status",
           "deferred_read", "degraded_meta", "file_digest", "recorded", "summary_field", "unit_line", "write_product",
           "OutputOutsideRepositoryError", "check_output_path"]

#: The `UnitStatus.status` of a unit that completed with a documented shortfall (counts as done).
DEGRADED = "degraded"
#: The `UnitStatus.action` of a unit that was up to date.
SKIPPED = "skipped (up to date)"
#: The `UnitStatus.action` of a unit not run because its worker died on it twice (``crashes >= 2``) with the
#: same config and inputs as now (`Repository.unit_action`); the returned status is the recorded failure.
SKIPPED_CRASHED = "skipped (crashed twice; change its inputs or config, or use --overwrite)"

_POST_ISR = re.compile(r"^post_isr_image_(\d+)_(\d+)_(\d+)\.fits$")
_SINGLE_VISIT_STAR = re.compile(r"^single_visit_star_(\d+)_(\d+)\.parquet$")


def summary_field(summary: dict | None, key: str, fmt: str) -> str:
    """``summary[key]`` formatted with ``fmt`` for the steps' per-detector tables; "-" when absent or not finite."""
    v = (summary or {}).get(key)
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def config_hash(config) -> str:
    """SHA-256 (16 hex digits) of a pydantic config's JSON: a rerun with another config is not skipped."""
    text = config.model_dump_json() if hasattr(config, "model_dump_json") else json.dumps(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass
class UnitStatus:
    """What became of one step on one detector (stored as ``provenance/<step>/<visit>_<detector>.json``),
    on one tract (``visit`` and ``detector`` None, ``tract`` set; ``provenance/<step>/<tract>.json``) or on one
    visit (``detector`` and ``tract`` None; ``provenance/<step>/<visit>.json``).

    ``inputs`` and ``outputs`` map each file the unit read or wrote (path relative to the repository, POSIX
    separators) to the SHA-256 of its bytes. ``action`` says what this run did with the unit: ``"done"`` (no
    earlier record), ``"skipped (up to date)"`` (the returned status is then the recorded one, nothing ran),
    or ``"redone (<reason>)"``, e.g. ``"redone (config changed)"``, ``"redone (input changed: <file>, ...)"``,
    or `SKIPPED_CRASHED` (the returned status is the recorded ``WorkerCrashed`` failure, nothing ran).

    ``status`` is ``"ok"``, ``"degraded"`` (the unit completed with a documented shortfall, e.g. a visit
    summary missing a calibrated detector; ``message`` says what, ``error_type`` stays None) or ``"failed"``.

    ``crashes`` counts the consecutive runs whose worker died on the unit (``error_type`` ``"WorkerCrashed"``)
    with this ``config_hash`` and these ``inputs`` (`crashed_unit_status`); 0 for a unit that did not crash.
    """

    step: str
    visit: int | None
    detector: int | None
    status: str                      # "ok", "degraded" or "failed"
    error_type: str | None = None    # the exception's class name on failure
    message: str | None = None
    config_hash: str | None = None
    timings: dict = dataclasses.field(default_factory=dict)
    peak_rss_mb: float | None = None
    versions: dict = dataclasses.field(default_factory=dict)
    summary: dict = dataclasses.field(default_factory=dict)
    tract: int | None = None
    inputs: dict = dataclasses.field(default_factory=dict)
    outputs: dict = dataclasses.field(default_factory=dict)
    action: str | None = None
    crashes: int = 0

    @property
    def skipped(self) -> bool:
        """Whether this run found the unit up to date and did not run it."""
        return self.action == SKIPPED

    @property
    def ok(self) -> bool:
        """Whether the unit completed and its products are there for the next steps: ``status`` is ``"ok"``
        or ``"degraded"`` (see `degraded`). A degraded unit counts as done, not failed."""
        return self.status in ("ok", DEGRADED)

    @property
    def degraded(self) -> bool:
        """Whether the unit completed with a shortfall recorded in ``message`` (``status == "degraded"``)."""
        return self.status == DEGRADED


class Repository:
    """A data repository rooted at ``root`` (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a directory")
        self.digest_cache = DigestCache(self.root)

    # --- inputs ---------------------------------------------------------------------------------
    def post_isr_snaps(self) -> dict[tuple[int, int], list[Path]]:
        """``{(visit, detector): [snap paths in snap order]}`` of every post_isr_image present."""
        found: dict[tuple[int, int], dict[int, Path]] = {}
        base = self.root / "post_isr_image"
        if base.is_dir():
            for path in sorted(base.glob("*/post_isr_image_*.fits")):
                m = _POST_ISR.match(path.name)
                if m:
                    v, d, s = (int(g) for g in m.groups())
                    found.setdefault((v, d), {})[s] = path
        return {k: [snaps[s] for s in sorted(snaps)] for k, snaps in sorted(found.items())}

    def data_ids(self, visits=None, detectors=None) -> list[tuple[int, int]]:
        """Sorted ``(visit, detector)`` with a post_isr_image, restricted to ``visits`` / ``detectors``."""
        ids = list(self.post_isr_snaps())
        if visits is not None:
            ids = [i for i in ids if i[0] in set(visits)]
        if detectors is not None:
            ids = [i for i in ids if i[1] in set(detectors)]
        return ids

    @property
    def refcat_path(self) -> Path:
        """``ROOT/refcat.parquet``: the reference catalog (ICRS degrees, fluxes in nJy); it may not exist."""
        return self.root / "refcat.parquet"

    # --- outputs --------------------------------------------------------------------------------
    def dataset_path(self, name: str, visit: int, detector: int, ext: str) -> Path:
        """Path of a per-detector product, ``ROOT/<name>/<visit>/<name>_<visit>_<detector>.<ext>``.

        The visit is zero-padded to 6 digits, the detector to 3.

        Parameters
        ----------
        name : str
            The dataset name, e.g. ``"preliminary_visit_image"``.
        visit, detector : int
            The data id.
        ext : str
            The extension without its dot: ``"fits"`` or ``"parquet"``.

        Returns
        -------
        path : `pathlib.Path`
            The path; neither it nor its folder is created.
        """
        return self.root / name / f"{visit:06d}" / f"{name}_{visit:06d}_{detector:03d}.{ext}"

    def status_path(self, step: str, visit: int, detector: int) -> Path:
        """Path of a per-detector unit's provenance, ``ROOT/provenance/<step>/<visit>_<detector>.json``."""
        return self.root / "provenance" / step / f"{visit:06d}_{detector:03d}.json"

    def tract_dataset_path(self, name: str, tract: int, ext: str) -> Path:
        """Path of a per-tract product: ``ROOT/<name>/<name>_<tract>.<ext>`` (tract not zero-padded)."""
        return self.root / name / f"{name}_{int(tract)}.{ext}"

    def tract_status_path(self, step: str, tract: int) -> Path:
        """Path of a per-tract unit's provenance: ``ROOT/provenance/<step>/<tract>.json``."""
        return self.root / "provenance" / step / f"{int(tract)}.json"

    def visit_status_path(self, step: str, visit: int) -> Path:
        """Path of a per-visit unit's provenance: ``ROOT/provenance/<step>/<visit>.json`` (visit padded to 6)."""
        return self.root / "provenance" / step / f"{int(visit):06d}.json"

    def read_visit_status(self, step: str, visit: int) -> UnitStatus | None:
        """The recorded `UnitStatus` of ``step`` on one visit; None if absent or unreadable."""
        return self._read_status_file(self.visit_status_path(step, visit))

    def relpath(self, path) -> str:
        """``path`` relative to the repository root, with POSIX separators (the key of a digest mapping)."""
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))).as_posix()

    def digests(self, paths, known: dict | None = None) -> dict[str, str]:
        """``{relpath: file_digest}`` of ``paths`` (a missing file's digest is ``"missing"``), sorted by path,
        through the repository's digest cache. ``known``: ``{Path: digest}`` already computed (e.g. on the
        workers, `digest_files`), used as they are."""
        known = known or {}
        return {self.relpath(p): known[p] if p in known else file_digest(p, self.digest_cache)
                for p in sorted(set(Path(p) for p in paths))}

    def single_visit_star_paths(self) -> dict[tuple[int, int], Path]:
        """``{(visit, detector): path}`` of every single_visit_star present, sorted."""
        found = {}
        base = self.root / "single_visit_star"
        if base.is_dir():
            for path in sorted(base.glob("*/single_visit_star_*.parquet")):
                m = _SINGLE_VISIT_STAR.match(path.name)
                if m:
                    found[(int(m.group(1)), int(m.group(2)))] = path
        return dict(sorted(found.items()))

    def read_status(self, step: str, visit: int, detector: int) -> UnitStatus | None:
        """The recorded `UnitStatus` of ``step`` on one detector; None if absent or unreadable."""
        return self._read_status_file(self.status_path(step, visit, detector))

    def read_tract_status(self, step: str, tract: int) -> UnitStatus | None:
        """The recorded `UnitStatus` of ``step`` on one tract; None if absent or unreadable."""
        return self._read_status_file(self.tract_status_path(step, tract))

    @staticmethod
    def _read_status_file(path: Path) -> UnitStatus | None:
        if not path.is_file():
            return None
        try:
            return UnitStatus(**json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError):
            return None  # unreadable: the unit is not done

    def write_status(self, status: UnitStatus) -> None:
        """Write ``status`` as JSON, atomically, to its per-tract (``status.tract`` set) or per-detector path.

        The provenance folder is created if needed; an existing status of the same unit is replaced.
        """
        if status.tract is not None:
            path = self.tract_status_path(status.step, status.tract)
        elif status.detector is None:
            path = self.visit_status_path(status.step, status.visit)
        else:
            path = self.status_path(status.step, status.visit, status.detector)
        check_output_path(self.root, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as f:
            json.dump(dataclasses.asdict(status), f, indent=1, sort_keys=True, default=_json_default)

    def unit_action(self, previous: UnitStatus | None, cfg_hash: str, inputs: dict, outputs,
                    overwrite: bool = False) -> str:
        """What to do with a unit: `SKIPPED` when it is up to date, else ``"done"`` or ``"redone (<why>)"``.

        Parameters
        ----------
        previous : `UnitStatus` or None
            The unit's recorded status.
        cfg_hash : str
            The current config hash of the unit.
        inputs : dict
            ``{relpath: digest}`` of the files the unit reads now (`digests`).
        outputs : iterable of path-like
            The unit's products.
        overwrite : bool
            Redo even an up-to-date unit (``"redone (overwrite)"``).

        Returns
        -------
        action : str
            `SKIPPED` only when ``previous`` is ok (or degraded), has ``cfg_hash``, every input's recorded digest
            equals the current one (same set of files) and every output exists with its recorded digest.
            `SKIPPED_CRASHED` when ``previous`` is a ``WorkerCrashed`` failure that happened at least twice
            (``crashes >= 2``) with ``cfg_hash`` and the same input digests: running it again would most
            likely kill its worker once more (and cost the runner's isolation retries), so it is left failed
            until its inputs or config change, or ``overwrite``.
        """
        if previous is None:
            return "done"
        if overwrite:
            return "redone (overwrite)"
        if (previous.error_type == "WorkerCrashed" and (previous.crashes or 0) >= 2
                and previous.config_hash is not None and previous.config_hash == cfg_hash
                and (previous.inputs or {}) == dict(inputs)):
            return SKIPPED_CRASHED
        if not previous.ok:
            return f"redone (previous run failed: {previous.error_type or previous.status})"
        if previous.config_hash != cfg_hash:
            return "redone (config changed)"
        changed = sorted(k for k in set(inputs) | set(previous.inputs or {})
                         if inputs.get(k) != (previous.inputs or {}).get(k))
        if changed:
            return f"redone (input changed: {', '.join(Path(k).name for k in changed)})"
        outs = [Path(p) for p in outputs]
        missing = [p.name for p in outs if not p.is_file()]
        if missing:
            return f"redone (output missing: {', '.join(missing)})"
        recorded_out = previous.outputs or {}
        altered = [p.name for p in outs
                   if file_digest(p, self.digest_cache) != recorded_out.get(self.relpath(p))]
        if altered:
            return f"redone (output changed: {', '.join(altered)})"
        return SKIPPED


def degraded_meta(meta: dict, reasons) -> None:
    """Mark a product's metadata (an astropy table's ``meta``, kept by Parquet and FITS) with its fallbacks:
    ``DEGRADED`` (bool) and ``DEGRADED_REASON`` (the reasons joined by "; ", "" when none). Shared by the steps
    that write catalogs (``single_visit_star``, ``refit_psf_star``, ``source``)."""
    reasons = [str(r) for r in reasons if r]
    meta["DEGRADED"] = bool(reasons)
    meta["DEGRADED_REASON"] = "; ".join(reasons)


def file_digest(path, cache: DigestCache | None = None) -> str:
    """SHA-256 (64 hex digits) of a file's bytes, read in 8 MiB blocks; ``"missing"`` if it is not a file.
    With ``cache`` (a repository's `DigestCache`) a file hashed before in its present state is not read again."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    return cache.digest(path) if cache is not None else sha256_file(path)


class UnreadableInputError(Exception):
    """One detector's input could not be read (raised by `deferred_read`): that detector fails, its unit's
    other detectors go on. ``error_type`` is the reader's exception class name; the message names the file."""

    def __init__(self, detector: int, path, err: Exception):
        super().__init__(f"{path}: cannot be read ({type(err).__name__}: {err})")
        self.detector, self.error_type = detector, type(err).__name__


def deferred_read(read, path, detector: int):
    """A callable that reads ``path`` with ``read`` when a task asks for it, raising `UnreadableInputError`
    (naming ``detector`` and the file) if that fails."""
    def load():
        try:
            return read(path)
        except Exception as err:  # noqa: BLE001 - any reader failure is this detector's failure
            raise UnreadableInputError(detector, path, err) from err
    return load


class OutputOutsideRepositoryError(VisitcalIOError):
    """An output would be written outside the repository: a folder on its way is a symbolic link that leads
    out of the repository root (``path`` is that link)."""


def check_output_path(root, path) -> None:
    """Refuse to write ``path`` when it would land outside the repository ``root``.

    ``path`` (which need not exist yet) lands where its folder resolves to once every symbolic link is
    followed; when that is not ``root`` or below it, the first folder between ``root`` and ``path`` that is a
    link is named in an `OutputOutsideRepositoryError`. A link that stays inside the repository is allowed.

    Raises
    ------
    OutputOutsideRepositoryError
        The output would be written outside ``root``.
    """
    root, path = Path(root), Path(path)
    real_root = Path(os.path.realpath(root))
    real_dir = Path(os.path.realpath(path.parent))
    if real_dir == real_root or real_root in real_dir.parents:
        return
    link, here = path.parent, root
    try:
        parts = path.parent.relative_to(root).parts
    except ValueError:
        parts = ()
    for part in parts:
        here = here / part
        if here.is_symlink():
            link = here
            break
    raise OutputOutsideRepositoryError(
        f"{link}: output folder leads outside the repository {root} (a symbolic link to "
        f"{os.path.realpath(link)}); visitcal writes its products only inside the repository: replace the link "
        f"by a folder", path=link)


def write_product(path, writer, *, root=None) -> str:
    """Write a product with ``writer(tmp_path)`` beside ``path``; put it in place only if its bytes differ.

    An unchanged product keeps its bytes and its mtime, so a redone unit that produces the same output
    does not make its consumers look stale. The writer's own atomic write makes the temporary file; the
    final ``os.replace`` is atomic too.

    Parameters
    ----------
    path : path-like
        The product's path; its folder is created if needed.
    writer : callable(path)
        Writes the product to the path it is given (same folder and extension as ``path``).
    root : path-like, optional
        The repository: ``path`` must land inside it (`check_output_path`).

    Returns
    -------
    digest : str
        `file_digest` of the product now at ``path``.

    Raises
    ------
    OutputOutsideRepositoryError
        ``path``'s folder leads outside ``root`` through a symbolic link; nothing is written.
    """
    path = Path(path)
    if root is not None:
        check_output_path(root, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, keep_suffix=True)  # removed by remove_stale_temporaries if we are killed
    cache = DigestCache(root) if root is not None else None
    try:
        # Hashed while the writer's fsync waits for the disk, when the writer writes through atomic_write;
        # else read once here. Either way it decides whether to replace, and it is the returned digest.
        with digest_while_syncing(tmp) as synced:
            writer(tmp)
        written = os.stat(tmp)
        digest = synced.get("sha256") or file_digest(tmp)
        if file_digest(path, cache) == digest:
            tmp.unlink()
        else:
            os.replace(tmp, path)
            if cache is not None:  # its consumers need not hash it again
                cache.record_written(path, digest, written)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return digest


def unit_line(status: UnitStatus, prefix: str, row: str) -> str:
    """One unit's line in a step's table: ``prefix`` (the data id columns) then ``row`` (its state and numbers)
    followed by its action; a skipped unit shows ``skipped (up to date)`` only (it did not run, so its
    numbers are not replayed)."""
    if status.skipped:
        return f"{prefix} {SKIPPED}"
    return f"{prefix} {row}  {status.action}" if status.action else f"{prefix} {row}"


@contextlib.contextmanager
def recorded(repo: "Repository", status: UnitStatus):
    """Run one unit's work in the block: an exception is recorded in ``status`` (its type and message; the
    unit stays "failed") instead of propagating, so the other units go on (a failure never stops a whole
    visit); the block sets ``status.status = "ok"`` (or ``"degraded"``) when it completes. Then the total time
    and the peak RSS are added and the status is written."""
    t0 = time.perf_counter()
    try:
        yield status
    except Exception as err:
        status.status = "failed"
        status.error_type = type(err).__name__
        status.message = str(err)
    finally:
        status.timings["total"] = time.perf_counter() - t0
        status.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        repo.write_status(status)


def _json_default(obj):
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


def crashed_unit_status(step: str, root, visit: int, detectors, message: str, cfg_hash: str | None = None,
                        inputs: dict | None = None) -> list[UnitStatus]:
    """Record and return the failed status of a unit whose worker process died (``WorkerCrashed``).

    What the steps give `visitcal.pipeline.runner.run_units` as its ``crashed`` callback: the runner calls it
    in the parent process, so the crash is in the unit's provenance (a rerun redoes the unit) and in the
    step's table, and the other units go on. With ``cfg_hash`` and ``inputs`` (what the unit would have
    recorded) the status counts the crashes: ``crashes`` is the previous record's plus one when that record
    is a ``WorkerCrashed`` with the same config hash and input digests, else 1; after two, a rerun does not
    run the unit again until its config or inputs change (`Repository.unit_action`, `SKIPPED_CRASHED`).

    Parameters
    ----------
    step : str
        The step name.
    root : path
        The repository.
    visit : int
        The unit's visit.
    detectors : iterable of int
        The unit's detectors (one for a per-detector step, every input detector of a per-visit one).
    message : str
        The runner's description of the death, e.g. ``"worker died (signal 9, SIGKILL)"``.
    cfg_hash : str, optional
        The unit's current `config_hash`.
    inputs : dict, optional
        ``{relpath: digest}`` of the unit's inputs now (`Repository.digests`), as the unit computes them.

    Returns
    -------
    statuses : list of `UnitStatus`
        One failed status per detector, ``error_type`` ``"WorkerCrashed"``, written to provenance.
    """
    repo = Repository(root)
    inputs = dict(inputs) if inputs is not None else {}
    out = []
    for detector in detectors:
        previous = repo.read_status(step, int(visit), int(detector))
        same = (cfg_hash is not None and previous is not None and previous.error_type == "WorkerCrashed"
                and previous.config_hash == cfg_hash and (previous.inputs or {}) == inputs)
        status = UnitStatus(step=step, visit=int(visit), detector=int(detector), status="failed",
                            error_type="WorkerCrashed", message=message, config_hash=cfg_hash, inputs=inputs,
                            action="done", crashes=(previous.crashes or 0) + 1 if same else 1)
        repo.write_status(status)
        out.append(status)
    return out
