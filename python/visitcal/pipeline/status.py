"""Where a repository stands (``visitcal status``): per step, the units that are done and up to date, out
of date, failed (by error type) or missing, from the provenance the steps write.

A recorded unit is *out of date* when a file it read or wrote no longer has the digest its provenance
recorded (it changed, or is gone), or when its step's configuration changed: a unit's recorded config
hash is compared with the hash of ``config`` when one is given. A unit is *missing* when its step has
not recorded it although its inputs are there: a calibrate unit for every post_isr_image, a finalize and
a reprocess unit for every detector calibrated ok, a visit-summary unit for every finalized visit. Tracts
are listed as recorded (which tracts a run will touch depends on the sources' positions).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from .repository import Repository, UnitStatus, file_digest

__all__ = ["STATUS_STEPS", "StepState", "repository_status"]

#: The steps `repository_status` reports on, in chain order.
STATUS_STEPS = ("calibrate", "associate", "finalize", "visit_summary", "reprocess")


@dataclasses.dataclass
class StepState:
    """The units of one step, by state; each unit is named ``"visit/detector"``, ``"visit"`` or
    ``"tract T"``."""

    step: str
    done: list[str] = dataclasses.field(default_factory=list)
    out_of_date: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)      # unit -> error type
    missing: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed_by_type(self) -> dict[str, int]:
        """How many units failed with each error type."""
        return dict(sorted(Counter(self.failed.values()).items()))

    def as_dict(self) -> dict:
        """A JSON-ready mapping of the counts and the units of each state."""
        return {"step": self.step, "done": len(self.done), "out_of_date": len(self.out_of_date),
                "failed": len(self.failed), "missing": len(self.missing), "failed_by_type": self.failed_by_type,
                "units": {"done": self.done, "out_of_date": self.out_of_date, "failed": self.failed,
                          "missing": self.missing}}


def _name(status: UnitStatus) -> str:
    if status.tract is not None:
        return f"tract {status.tract}"
    if status.detector is None:
        return f"{status.visit}"
    return f"{status.visit}/{status.detector}"


def repository_status(root, *, config_hashes: dict[str, str] | None = None) -> list[StepState]:
    """The state of every step of the chain in the repository ``root``.

    Parameters
    ----------
    root : path
        The repository.
    config_hashes : dict, optional
        ``{step: config hash}`` of the configuration a rerun would use; a unit recorded with another hash is
        out of date. Without it, only the files are compared.

    Returns
    -------
    list of `StepState`
        One per step of `STATUS_STEPS`, in that order.
    """
    repo = Repository(root)
    cache: dict[str, str] = {}

    def changed(mapping: dict) -> bool:
        for rel, digest in (mapping or {}).items():
            if rel not in cache:
                cache[rel] = file_digest(repo.root / rel)
            if cache[rel] != digest:
                return True
        return False

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
        want = (config_hashes or {}).get(step)
        for name, status in recorded[step].items():
            if not status.ok:
                state.failed[name] = status.error_type or status.status
            elif (want is not None and status.config_hash != want) or changed(status.inputs) \
                    or changed(status.outputs):
                state.out_of_date.append(name)
            else:
                state.done.append(name)
        state.missing = [name for name in expected[step] if name not in recorded[step]]
        states.append(state)
    return states
