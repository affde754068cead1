"""Running tasks over a data repository: data ids, output paths, per-detector status and resume
(`Repository`), and a runner over any `concurrent.futures.Executor` (`run_units`)."""

from .repository import Repository, UnitStatus
from .runner import run_units

__all__ = ["Repository", "UnitStatus", "run_units"]
