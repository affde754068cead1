"""The whole single-visit chain over a repository in one call: calibrate -> associate -> finalize ->
visit summaries -> reprocess (``visitcal run``).

Each step is the same function its own command runs (`run_calibrate`, `run_associate`, `run_finalize`,
`run_visit_summary`, `run_reprocess`), with the section of one `RunConfig` that concerns it, so a unit
that is up to date is skipped and a failed detector is recorded and left out of what follows, exactly
as when the steps are chained by hand. A step after a failed one still runs on what succeeded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from .associate_step import AssociateStepConfig, run_associate
from .calibrate_step import CalibrateStepConfig, run_calibrate
from .finalize_step import FinalizeStepConfig, run_finalize
from .repository import Repository, UnitStatus
from .reprocess_step import ReprocessStepConfig, run_reprocess
from .visit_summary_step import run_visit_summary

__all__ = ["CHAIN_STEPS", "ChainResult", "RunConfig", "run_chain"]

#: The steps of `run_chain`, in order.
CHAIN_STEPS = ("calibrate", "associate", "finalize", "visit_summary", "reprocess")


class RunConfig(BaseModel):
    """The configuration of every step of the chain, one section per step (a ``visitcal run --config``
    file gives only the fields it changes, at any depth)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calibrate: CalibrateStepConfig = Field(default_factory=CalibrateStepConfig,
                                           description="calibrate: CharacterizeImageTask + CalibrateTask per detector")
    associate: AssociateStepConfig = Field(default_factory=AssociateStepConfig,
                                           description="associate: IsolatedStarAssociationTask per tract")
    finalize: FinalizeStepConfig = Field(default_factory=FinalizeStepConfig,
                                         description="finalize: FinalizeCharacterizationTask per visit")
    reprocess: ReprocessStepConfig = Field(default_factory=ReprocessStepConfig,
                                           description="reprocess: ReprocessVisitImageTask per detector")


@dataclasses.dataclass
class ChainResult:
    """What `run_chain` did: per step, the `UnitStatus` of its units, and the step's wall time in seconds."""

    statuses: dict[str, list] = dataclasses.field(default_factory=dict)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        """Number of failed units over every step."""
        return sum(not s.ok for step in self.statuses.values() for s in step if isinstance(s, UnitStatus))


def run_chain(root, *, visits=None, detectors=None, jobs: int = 1, config: RunConfig | None = None,
              overwrite: bool = False, progress: Callable[[str], Callable] | None = None,
              on_step: Callable[[str, list], None] | None = None, executor=None) -> ChainResult:
    """Run calibrate, associate, finalize, the visit summaries and reprocess over the repository ``root``.

    Parameters
    ----------
    root : path
        The repository (e.g. written by ``visitcal sim``).
    visits, detectors : iterable of int, optional
        Only these visits / detectors (associate runs on every tract their sources reach; finalize and the
        visit summaries on the selected visits, with every calibrated detector of each).
    jobs : int
        Worker processes for the per-detector and per-visit steps.
    config : RunConfig, optional
        Every step's configuration; the defaults otherwise.
    overwrite : bool
        Redo every unit, up to date or not.
    progress : callable, optional
        ``progress(step)`` returns the ``progress(done, total, label)`` callback of that step (e.g. a
        `visitcal.pipeline.console.ChainProgress`, one display over the chain).
    on_step : callable, optional
        Called as ``on_step(step, statuses)`` when a step ends, e.g. to print its summary.
    executor : concurrent.futures.Executor, optional
        Every step's units run on it (e.g. Dask's, `visitcal.pipeline.dask_executor.dask_executor`) instead
        of ``jobs`` local processes; the same bytes either way.

    Returns
    -------
    `ChainResult`
    """
    config = config if config is not None else RunConfig()
    repo = Repository(root)
    result = ChainResult()

    def step(name, fn):
        start = time.perf_counter()
        out = fn()
        result.seconds[name] = time.perf_counter() - start
        result.statuses[name] = out
        if on_step is not None:
            on_step(name, out)

    bar = progress if progress is not None else (lambda name: None)
    step("calibrate", lambda: run_calibrate(repo.root, visits=visits, detectors=detectors, jobs=jobs,
                                            config=config.calibrate, overwrite=overwrite,
                                            progress=bar("calibrate"), executor=executor))
    step("associate", lambda: run_associate(repo.root, config=config.associate, overwrite=overwrite,
                                            progress=bar("associate"), executor=executor))
    step("finalize", lambda: run_finalize(repo.root, visits=visits, jobs=jobs, config=config.finalize,
                                          overwrite=overwrite, progress=bar("finalize"), executor=executor))
    step("visit_summary", lambda: run_visit_summary(repo.root, visits=visits, overwrite=overwrite,
                                                    return_status=True, jobs=jobs, executor=executor,
                                                    progress=bar("visit_summary")))
    step("reprocess", lambda: run_reprocess(repo.root, visits=visits, detectors=detectors, jobs=jobs,
                                            config=config.reprocess, overwrite=overwrite,
                                            progress=bar("reprocess"), visit_summaries=False,
                                            executor=executor))
    return result
