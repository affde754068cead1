"""Running the tasks over a data repository: data ids, output paths and per-unit provenance with the
digests of every file a unit read and wrote (`Repository`, `UnitStatus`), the steps (``*_step``
modules: calibrate, associate, finalize, visit summaries, reprocess), the whole chain in one call
(`run_chain`, `RunConfig`; ``visitcal run``), where a repository stands (`repository_status`;
``visitcal status``), one writer at a time (`repository_lock`), and a runner over any
`concurrent.futures.Executor` that survives crashed workers (`run_units`, `WorkerCrashed`)."""

from .chain import RunConfig, run_chain
from .lock import RepositoryLockedError, repository_lock
from .repository import Repository, UnitStatus
from .runner import WorkerCrashed, run_units
from .status import repository_status

__all__ = ["Repository", "RepositoryLockedError", "RunConfig", "UnitStatus", "WorkerCrashed", "repository_lock",
           "repository_status", "run_chain", "run_units"]
