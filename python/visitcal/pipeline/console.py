"""What the command line shows while it works: one progress line on stderr that log records never break,
the ``-v``/``-q`` logging levels, and the progress of the whole chain with an estimated time to the end.

`Console` owns the terminal's stderr. A progress line is redrawn in place on a terminal (``\\r``); a log
record (a library warning, a ``-v`` info line, a Python warning) first clears that line, is written on a
line of its own, and the progress line is drawn again under it, so the two never share a line. Off a
terminal (a log file, CI), progress is a line per tenth of the work and records are plain lines.

`ChainProgress` turns the per-step callbacks of `visitcal.pipeline.chain.run_chain` into one display over
the five steps. Its estimate of the time left is the rate measured so far in this run (seconds per unit of
work, counting only units that were computed, not skipped as up to date) times the work left, each unit
weighted by its step's relative cost (`STEP_COST`, from the per-detector benchmarks in ``bench/README.md``).
Until one unit has been computed there is no estimate (``ETA --``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable

__all__ = ["STEP_COST", "ChainProgress", "Console", "ProgressBar", "logging_to", "format_seconds"]

#: Relative cost of a step per detector it covers, calibrate = 1 (bench/README.md, lsst-size detectors on one
#: core: calibrate ~2.5 s, finalize ~1.5 s, reprocess ~2.8 s per detector; associate and the visit summary
#: read tables and take a few hundredths of a detector's time). Only the time-left estimate uses them.
STEP_COST = {"calibrate": 1.0, "associate": 0.02, "finalize": 0.6, "visit_summary": 0.02, "reprocess": 1.1}

#: A progress label that ends with this marks a unit skipped as up to date (`visitcal.pipeline.runner`).
SKIPPED_MARK = "(skipped)"


def format_seconds(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a duration in seconds; ``--`` for None."""
    if seconds is None:
        return "--"
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Console:
    """stderr shared by a progress line and log records (see the module docstring).

    Parameters
    ----------
    stream : file-like, optional
        Where to write (default ``sys.stderr``); redrawn in place when ``stream.isatty()``.
    show_progress : bool
        False (``-q``) draws no progress at all.
    """

    def __init__(self, stream=None, *, show_progress: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.show_progress = show_progress
        self._line = ""  # the progress line now on screen (a terminal only)
        self._pid = os.getpid()  # a forked worker inherits this object: it must not redraw the parent's line

    def progress(self, line: str, *, final: bool = False) -> None:
        """Show ``line`` as the progress line; ``final`` ends it (the next one starts on a new line)."""
        if not self.show_progress:
            return
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
            self._line = "" if final else line
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Take the progress line off the screen (before other output, e.g. a summary table on stdout)."""
        if self.tty and self._line and os.getpid() == self._pid:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._line = ""

    def write(self, text: str) -> None:
        """Write ``text`` on lines of its own, above the progress line, which is then drawn again."""
        if self.tty:
            self.stream.write("\r\033[K" + text.rstrip("\n") + "\n")
            if self._line and os.getpid() == self._pid:
                self.stream.write(self._line)
        else:
            self.stream.write(text.rstrip("\n") + "\n")
        self.stream.flush()


class _ConsoleHandler(logging.Handler):
    """A logging handler that writes through a `Console`."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.write(self.format(record))
        except Exception:  # pragma: no cover - logging must never raise into the pipeline
            self.handleError(record)


@contextlib.contextmanager
def logging_to(console: Console, verbosity: int = 0):
    """Within the block, log records and Python warnings go through ``console`` at the level of ``-v``/``-q``;
    the logging state is restored after it.

    Parameters
    ----------
    console : Console
    verbosity : int
        -1 (``-q``: errors only), 0 (warnings, the default), 1 (``-v``: visitcal's info lines) or 2 and more
        (``-vv``: visitcal's debug lines). Other libraries' records show from warnings up (errors with ``-q``).

    Notes
    -----
    Worker processes forked inside the block inherit the handler: their records clear the progress line
    and are written on their own line; the parent draws the line again at the next update.
    """
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(max(min(verbosity, 2), -1), logging.DEBUG)
    handler = _ConsoleHandler(console)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root, ours, warn = logging.getLogger(), logging.getLogger("visitcal"), logging.getLogger("py.warnings")
    saved = (root.level, ours.level, warn.level)
    root.addHandler(handler)
    root.setLevel(logging.ERROR if verbosity < 0 else logging.WARNING)
    ours.setLevel(level)
    warn.setLevel(logging.ERROR if verbosity < 0 else logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> this handler
    try:
        yield handler
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])
        warn.setLevel(saved[2])


class ProgressBar:
    """The ``progress(done, total, label)`` callback of one command: a bar drawn through a `Console` (in
    place on a terminal, a line per tenth of the work otherwise)."""

    def __init__(self, console: Console, unit: str = "images", width: int = 30):
        self.console = console
        self.unit = unit
        self.width = width
        self._last_decile = -1

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.console.tty:
            decile = 10 * done // max(total, 1)
            if decile == self._last_decile and done != total:
                return
            self._last_decile = decile
        filled = int(self.width * done / max(total, 1))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {self.unit}  {label}"
        self.console.progress(line, final=done == total)


@dataclasses.dataclass
class _StepState:
    total: int | None = None  # units, known when the step starts
    done: int = 0
    computed_weight: float = 0.0  # weight of the units computed (not skipped)


class ChainProgress:
    """One progress display over the steps of `run_chain`, with the time left (see the module docstring).

    Parameters
    ----------
    steps : sequence of str
        The chain's steps in order (`visitcal.pipeline.chain.CHAIN_STEPS`).
    n_detectors : int
        Detectors the chain covers (sizes the steps not started yet).
    show : callable
        ``show(line, final=...)`` draws a line (e.g. `Console.progress`); ``final`` at the end of each step.
    every_tenth : bool
        Draw only a line per tenth of each step (for a log file rather than a terminal).
    clock : callable, optional
        Seconds, monotonic (`time.monotonic`; a test passes its own).
    width : int
        Characters of the bar.

    Notes
    -----
    ``chain(step)`` returns that step's ``progress(done, total, label)`` callback, as `run_chain` expects.
    """

    def __init__(self, steps, n_detectors: int, show: Callable[..., None], *, every_tenth: bool = False,
                 clock: Callable[[], float] = time.monotonic, width: int = 20):
        self.steps = list(steps)
        self.n_detectors = max(int(n_detectors), 1)
        self.show = show
        self.every_tenth = every_tenth
        self.clock = clock
        self.width = width
        self.state = {s: _StepState() for s in self.steps}
        self.start = clock()
        self._last_decile: dict[str, int] = {}

    def _planned(self, step: str) -> float:
        return STEP_COST.get(step, 1.0) * self.n_detectors

    def _unit_weight(self, step: str) -> float:
        st = self.state[step]
        return self._planned(step) / max(st.total or 1, 1)

    def fraction(self) -> float:
        """The share of the chain's work done, 0 to 1 (skipped units count as done)."""
        total = sum(self._planned(s) for s in self.steps)
        done = sum(min(st.done, st.total or 0) * self._unit_weight(s) for s, st in self.state.items())
        return min(done / total, 1.0) if total > 0 else 1.0

    def eta(self) -> float | None:
        """Seconds left: the rate of the computed units so far times the work left; None before any."""
        computed = sum(st.computed_weight for st in self.state.values())
        if computed <= 0:
            return None
        rate = (self.clock() - self.start) / computed
        left = 0.0
        for s, st in self.state.items():
            left += self._planned(s) if st.total is None else (st.total - st.done) * self._unit_weight(s)
        return rate * left

    def __call__(self, step: str) -> Callable[[int, int, str], None]:
        index = self.steps.index(step) + 1

        def progress(done: int, total: int, label: str) -> None:
            st = self.state[step]
            st.total = total
            if done > st.done and label and not label.endswith(SKIPPED_MARK):
                st.computed_weight += (done - st.done) * self._unit_weight(step)
            st.done = done
            final = done >= total
            if self.every_tenth:
                decile = 10 * done // max(total, 1)
                if decile == self._last_decile.get(step) and not final:
                    return
                self._last_decile[step] = decile
            frac = self.fraction()
            filled = int(self.width * frac)
            line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * frac:3.0f}%  "
                    f"step {index}/{len(self.steps)} {step} {done}/{total}  "
                    f"{format_seconds(self.clock() - self.start)} elapsed, ETA {format_seconds(self.eta())}"
                    + (f"  {label}" if label else ""))
            self.show(line, final=final)

        return progress
