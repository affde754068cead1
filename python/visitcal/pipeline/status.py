"""Where a repository stands (``visitcal status``): per step, the units that are done and up to date, out
of date (and why), failed (by error type) or missing, from the provenance the steps write; the done units that
are degraded are listed with their reason.

A recorded unit is *out of date* when a file it read or wrote no longer has the digest its provenance
recorded (it changed, or is gone), or when its step's configuration changed: with ``config`` (a `RunConfig`,
what ``visitcal run`` would use) each unit's recorded config hash is compared with the hash its step computes
from that configuration (`step_config_hashes`), and a unit recorded with another one is out of date with the
reason ``"config changed"``, exactly the units a rerun with that configuration redoes for that reason.
``repository_status`` without ``config`` compares only the files; ``visitcal status`` always passes one: its
``--preset`` and ``--config`` as ``visitcal run`` takes them, so without them the defaults (the ``lsst``
preset), and a repository run with ``--preset sparse`` shows calibrate out of date unless status is given
``--preset sparse`` too.

A unit is *missing* when its step has not recorded it although its inputs are there: a calibrate unit for
every post_isr_image, a finalize and a reprocess unit for every detector calibrated ok, a visit-summary unit
for every finalized visit. Tracts are listed as recorded (which tracts a run will touch depends on the
sources' positions). A ``degraded`` unit (a visit summary that lost a calibrated detector, say) counts as
done, as for the steps; `StepState.degraded` names it with its reason.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from .repository import Repository, UnitStatus, config_hash, file_digest

__all__ = ["CONFIG_CHANGED", "STATUS_STEPS", "StepState", "repository_status", "step_config_hashes"]

#: The steps `repository_status` reports on, in chain order.
STATUS_STEPS = ("calibrate", "associate", "finalize", "visit_summary", "reprocess")
#: The reason of a unit recorded with another config hash than the one given.
CONFIG_CHANGED = "config changed"


@dataclasses.dataclass
class StepState:
    """The units of one step, by state; each unit is named ``"visit/detector"``, ``"visit"`` or
    ``"tract T"``.

    ``reasons`` maps each out-of-date unit to why (``"config changed"``, ``"input changed: <file>, ..."``,
    ``"output changed: ..."``, ``"output missing: ..."``); ``degraded`` maps each unit recorded ``degraded``
    (counted in ``done`` or ``out_of_date`` like an ok unit) to its reason.
    """

    step: str
    done: list[str] = dataclasses.field(default_factory=list)
    out_of_date: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)      # unit -> error type
    missing: list[str] = dataclasses.field(default_factory=list)
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)     # out-of-date unit -> why
    degraded: dict[str, str] = dataclasses.field(default_factory=dict)    # degraded unit -> its reason

    @property
    def failed_by_type(self) -> dict[str, int]:
        """How many units failed with each error type."""
        return dict(sorted(Counter(self.failed.values()).items()))

    def as_dict(self) -> dict:
        """A JSON-ready mapping of the counts and the units of each state (``units["reasons"]``: why each
        out-of-date unit is; ``units["degraded"]``: each degraded unit's reason)."""
        return {"step": self.step, "done": len(self.done), "out_of_date": len(self.out_of_date),
                "failed": len(self.failed), "missing": len(self.missing), "degraded": len(self.degraded),
                "failed_by_type": self.failed_by_type,
                "units": {"done": self.done, "out_of_date": self.out_of_date, "failed": self.failed,
                          "missing": self.missing, "reasons": self.reasons, "degraded": self.degraded}}


def _name(status: UnitStatus) -> str:
    if status.tract is not None:
        return f"tract {status.tract}"
    if status.detector is None:
        return f"{status.visit}"
    return f"{status.visit}/{status.detector}"


def step_config_hashes(root, config=None) -> dict[str, str]:
    """``{step: config hash}`` that each step of the chain records when run with ``config``.

    Each is computed as the step computes it: `config_hash` of the step's section of ``config`` for
    calibrate, finalize and reprocess (`CalibrateStepConfig`, `FinalizeStepConfig`, `ReprocessStepConfig`);
    `visitcal.pipeline.associate_step.expected_config_hash` of the associate section and the repository's
    ``skymap.json`` for associate (left out when the repository has no readable sky map: its tracts are then
    out of date by their recorded ``skymap.json`` input anyway); and
    `visitcal.pipeline.visit_summary_step.expected_config_hash` for the visit summaries, which have no
    configuration of their own.

    Parameters
    ----------
    root : path
        The repository.
    config : `RunConfig`, optional
        The chain's configuration; the defaults (the ``lsst`` preset) when None.

    Returns
    -------
    dict
    """
    from ..core.skymap import SKYMAP_FILE, load_skymap
    from . import associate_step, visit_summary_step
    from .chain import RunConfig

    config = config if config is not None else RunConfig()
    hashes = {"calibrate": config_hash(config.calibrate), "finalize": config_hash(config.finalize),
              "visit_summary": visit_summary_step.expected_config_hash(), "reprocess": config_hash(config.reprocess)}
    skymap_path = Path(root) / SKYMAP_FILE
    if skymap_path.is_file():
        try:
            hashes["associate"] = associate_step.expected_config_hash(config.associate, load_skymap(skymap_path))
        except ValueError:  # unreadable sky map: the tracts' recorded skymap.json digest tells
            pass
    return dict(sorted(hashes.items(), key=lambda item: STATUS_STEPS.index(item[0])))


def repository_status(root, *, config=None, config_hashes: dict[str, str] | None = None) -> list[StepState]:
    """The state of every step of the chain in the repository ``root``.

    Parameters
    ----------
    root : path
        The repository.
    config : `RunConfig`, optional
        The configuration a rerun would use (as ``visitcal run --preset/--config`` builds it): a unit recorded
        with another config hash than its step computes from it (`step_config_hashes`) is out of date, reason
        ``"config changed"``. Without it (and without ``config_hashes``) only the files are compared.
    config_hashes : dict, optional
        ``{step: config hash}`` to compare with instead, step by step (over those of ``config``).

    Returns
    -------
    list of `StepState`
        One per step of `STATUS_STEPS`, in that order.
    """
    repo = Repository(root)
    cache: dict[str, str] = {}
    wanted = dict(step_config_hashes(repo.root, config)) if config is not None else {}
    wanted.update(config_hashes or {})

    def changed(mapping: dict) -> list[str]:
        out = []
        for rel, digest in (mapping or {}).items():
            if rel not in cache:
                cache[rel] = file_digest(repo.root / rel, repo.digest_cache)
            if cache[rel] != digest:
                out.append(rel)
        return out

    def why(status: UnitStatus, want: str | None) -> str | None:
        if want is not None and status.config_hash != want:
            return CONFIG_CHANGED
        if inputs := changed(status.inputs):
            return f"input changed: {', '.join(Path(k).name for k in inputs)}"
        if outputs := changed(status.outputs):
            gone = [Path(k).name for k in outputs if cache[k] == "missing"]
            kept = [Path(k).name for k in outputs if cache[k] != "missing"]
            return "; ".join(([f"output missing: {', '.join(gone)}"] if gone else [])
                             + ([f"output changed: {', '.join(kept)}"] if kept else []))
        return None

    recorded: dict[str, dict[str, UnitStatus]] = {}
    for step in STATUS_STEPS:
        units = {}
        folder = repo.root / "provenance" / step
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            status = repo._read_status_file(path)
            if status is not None:  # unreadable provenance: the unit counts as missing
                units[_name(status)] = status
        recorded[step] = units

    calibrated = sorted(k for k, s in recorded["calibrate"].items() if s.ok)
    finalized_visits = sorted({k.split("/")[0] for k, s in recorded["finalize"].items() if s.ok})
    expected = {
        "calibrate": [f"{v}/{d}" for v, d in repo.data_ids()],
        "associate": [],
        "finalize": calibrated,
        "visit_summary": finalized_visits,
        "reprocess": [k for k in calibrated if k.split("/")[0] in set(finalized_visits)],
    }
    states = []
    for step in STATUS_STEPS:
        state = StepState(step)
        want = wanted.get(step)
        for name, status in recorded[step].items():
            if not status.ok:
                state.failed[name] = status.error_type or status.status
                continue
            if status.degraded:
                state.degraded[name] = status.message or "degraded"
            reason = why(status, want)
            if reason is None:
                state.done.append(name)
            else:
                state.out_of_date.append(name)
                state.reasons[name] = reason
        state.missing = [name for name in expected[step] if name not in recorded[step]]
        states.append(state)
    return states
