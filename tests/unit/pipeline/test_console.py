"""The command line's console (issue 20): log records never share a line with the progress bar, -v/-q set
the levels and the logging state is restored, and the chain's time-left estimate is the measured rate
times the work left, skipped units left out of the rate."""

from __future__ import annotations

import io
import logging
import warnings

import pytest

from visitcal.cli import build_parser
from visitcal.pipeline.console import STEP_COST, ChainProgress, Console, ProgressBar, format_seconds, logging_to

CLEAR = "\r\033[K"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _screen(raw: str) -> list[str]:
    """What a terminal shows: each line as left by its last carriage return (``\\r\\033[K`` clears)."""
    return [line.split(CLEAR)[-1].split("\r")[-1] for line in raw.split("\n")]


def test_a_record_clears_the_bar_and_the_bar_is_drawn_again_under_it():
    term = _Terminal()
    console = Console(term)
    bar = ProgressBar(console, unit="detectors", width=4)
    bar(1, 4, "visit 1 detector 0: ok")
    console.write("WARNING visitcal.x: few stars")
    bar(2, 4, "visit 1 detector 1: ok")
    console.write("INFO visitcal.y: done")
    bar(4, 4, "visit 2 detector 1: ok")
    assert _screen(term.getvalue()) == ["WARNING visitcal.x: few stars", "INFO visitcal.y: done",
                                        "[####] 4/4 detectors  visit 2 detector 1: ok", ""]
    # each record starts on a cleared line, and the bar was redrawn after each record
    raw = term.getvalue()
    assert raw.count(CLEAR + "WARNING") == 1 and raw.count(CLEAR + "INFO") == 1
    assert "few stars\n[#...] 1/4" in raw and "done\n[##..] 2/4" in raw


def test_off_a_terminal_progress_is_a_line_per_tenth_and_records_plain_lines():
    out = io.StringIO()
    console = Console(out)
    bar = ProgressBar(console, unit="units", width=2)
    for k in range(0, 101):
        bar(k, 100, f"u{k}")
        if k == 50:
            console.write("WARNING a record")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()
    assert len(lines) == 12 and lines[6] == "WARNING a record" and lines[-1].startswith("[##] 100/100")


def test_quiet_console_draws_no_progress_but_writes_records():
    out = _Terminal()
    console = Console(out, show_progress=False)
    ProgressBar(console)(1, 2, "x")
    console.write("ERROR boom")
    assert out.getvalue() == CLEAR + "ERROR boom\n"


@pytest.mark.parametrize("verbosity, shown", [(-1, {"error"}), (0, {"warning", "error", "pywarn"}),
                                              (1, {"info", "warning", "error", "pywarn"}),
                                              (2, {"debug", "info", "warning", "error", "pywarn"})])
def test_verbosity_levels_and_logging_state_restored(verbosity, shown):
    log = logging.getLogger("visitcal.tests.console")
    root = logging.getLogger()
    before = (root.level, logging.getLogger("visitcal").level, list(root.handlers))
    out = io.StringIO()
    with logging_to(Console(out), verbosity):
        log.debug("debug")
        log.info("info")
        log.warning("warning")
        log.error("error")
        logging.getLogger("someone.else").info("other info")  # other libraries: warnings up only
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("pywarn", UserWarning, stacklevel=1)
    text = out.getvalue()
    seen = {w for w in ("debug", "info", "warning", "error", "pywarn") if f": {w}" in text or f"{w}\n" in text
            or f"UserWarning: {w}" in text}
    assert seen == shown
    assert "other info" not in text
    assert (root.level, logging.getLogger("visitcal").level, list(root.handlers)) == before


def test_every_command_takes_verbose_and_quiet_but_not_both():
    parser = build_parser()
    for cmd in (["info", "x"], ["sim", "x"], ["calibrate", "r"], ["associate", "r"], ["finalize", "r"],
                ["reprocess", "r"], ["run", "r"], ["status", "r"], ["convert-decam", "a", "b", "c", "d"]):
        assert parser.parse_args(cmd + ["-vv"]).verbose == 2
        assert parser.parse_args(cmd + ["-q"]).quiet is True
        with pytest.raises(SystemExit):
            parser.parse_args(cmd + ["-q", "-v"])


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_chain_eta_is_the_measured_rate_times_the_work_left():
    clock = _Clock()
    lines = []
    steps = ("calibrate", "associate", "finalize", "visit_summary", "reprocess")
    chain = ChainProgress(steps, 4, lambda line, final: lines.append((line, final)), clock=clock)
    cal = chain("calibrate")
    cal(0, 4, "")
    assert chain.eta() is None and lines[-1][0].endswith("ETA --")
    clock.t = 20.0
    cal(1, 4, "visit 1 detector 0: ok (skipped)")  # skipped: no weight in the rate
    assert chain.eta() is None
    cal(2, 4, "visit 1 detector 1: ok")  # one computed unit of weight 1 in 20 s -> 20 s per unit of weight
    left = 2 * STEP_COST["calibrate"] + 4 * sum(STEP_COST[s] for s in steps[1:])
    assert chain.eta() == pytest.approx(20.0 * left)
    assert chain.fraction() == pytest.approx(2 / (4 * sum(STEP_COST.values())))
    assert "step 1/5 calibrate 2/4" in lines[-1][0] and f"ETA {format_seconds(20.0 * left)}" in lines[-1][0]
    clock.t = 40.0
    cal(4, 4, "visit 2 detector 1: ok")
    assert lines[-1][1] is True  # the step's last line is final
    asc = chain("associate")
    asc(0, 1, "")
    asc(1, 1, "tract 0: ok")
    # 3 computed weights (2 calibrate + 0.08 associate... ) over 40 s; finalize, summaries, reprocess left
    computed = 3 * STEP_COST["calibrate"] + 4 * STEP_COST["associate"]
    left = 4 * (STEP_COST["finalize"] + STEP_COST["visit_summary"] + STEP_COST["reprocess"])
    assert chain.eta() == pytest.approx(40.0 / computed * left)


def test_chain_progress_off_a_terminal_draws_a_line_per_tenth_of_each_step():
    lines = []
    chain = ChainProgress(("calibrate", "reprocess"), 100, lambda line, final: lines.append(line),
                          every_tenth=True, clock=_Clock())
    for step in ("calibrate", "reprocess"):
        cb = chain(step)
        for k in range(101):
            cb(k, 100, f"unit {k}")
    assert len(lines) == 22 and "100%" in lines[-1]


@pytest.mark.parametrize("seconds, text", [(None, "--"), (0.4, "0:00"), (59.6, "1:00"), (3725, "1:02:05")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text
