"""The processing section: what became of each detector in each step, how long it took, how much memory.

Read from the provenance records (``provenance/<step>/<visit>_<detector>.json``, and the visit summary's
per-visit record): the status (``ok``, ``degraded`` with its reason, ``failed`` with the error's type and
message, or never run), the run's action, the timings and the peak resident memory of the process that
ran the unit.
"""

from __future__ import annotations

import math

import numpy as np

from .figures import FigureWriter, draw_detector_outlines, new_figure
from .metrics import Metric, MetricSpec, QaConfig, Threshold, register
from .products import STEPS, VisitProducts
from .section import HtmlTable, Section

__all__ = ["build", "detector_state", "unit_seconds"]

register(
    MetricSpec("nStepsFailed", "processing", "",
               "Steps (calibrate, finalize, reprocess) that failed or never ran on the detector.",
               threshold=Threshold(fail_above=0)),
    MetricSpec("nStepsDegraded", "processing", "",
               "Steps that completed with a documented fallback (status 'degraded') on the detector.",
               threshold=Threshold(warn_above=0)),
    MetricSpec("processingTime", "processing", "s",
               "Wall time of the detector's calibrate, finalize and reprocess units (the sum of `unit_seconds`: "
               "each unit's 'total' timing, or, for finalize run per visit, the detector's own stages)."),
    MetricSpec("peakMemory", "processing", "MB",
               "Largest peak resident memory of the processes that ran the detector's units.",
               threshold=Threshold(warn_above=4000.0, fail_above=16000.0)),
    MetricSpec("visitSummaryFailed", "processing", "",
               "1 when the visit summary failed or never ran, else 0.", scope="visit",
               threshold=Threshold(fail_above=0)),
)

#: The colour of each final state on the focal-plane map.
STATE_COLOURS = {"ok": "#4daf4a", "degraded": "#ffbf00", "failed": "#e41a1c", "not run": "#bbbbbb"}


def detector_state(products: VisitProducts, detector: int) -> tuple[str, str]:
    """The detector's final state and why: ``failed`` (with the first failed step, its error type and
    message), ``not run`` (the first step without a record), ``degraded`` (the degraded steps' reasons) or
    ``ok``."""
    reasons = []
    state = "ok"
    for step in STEPS:
        st = products.status(step, detector)
        if st is None:
            return "not run", f"{step}: never ran"
        if st.status == "failed":
            return "failed", f"{step}: {st.error_type or 'failed'}: {st.message or ''}".strip()
        if st.status == "degraded":
            state = "degraded"
            reasons.append(f"{step}: {st.message or 'degraded'}")
    return state, "; ".join(reasons)


def build(products: VisitProducts, config: QaConfig, figures: FigureWriter) -> Section:
    """Per detector: each step's status, the final state with its reason, time and peak memory."""
    section = Section("processing", "Processing")
    rows, times, memory, states = [], {}, {}, {}
    for d in products.detectors:
        statuses = {step: products.status(step, d) for step in STEPS}
        failed = sum(1 for st in statuses.values() if st is None or st.status == "failed")
        degraded = sum(1 for st in statuses.values() if st is not None and st.status == "degraded")
        times[d] = {step: unit_seconds(st) for step, st in statuses.items()}
        total = [t for t in times[d].values() if math.isfinite(t)]
        peak = [float(st.peak_rss_mb) for st in statuses.values() if st is not None and st.peak_rss_mb is not None]
        memory[d] = max(peak) if peak else math.nan
        state, why = detector_state(products, d)
        states[d] = state
        section.metrics += [Metric("nStepsFailed", failed, d), Metric("nStepsDegraded", degraded, d),
                            Metric("processingTime", sum(total) if total else math.nan, d),
                            Metric("peakMemory", memory[d], d)]
        rows.append([d, *[_label(statuses[s]) for s in STEPS], state, why])
    vs = products.status("visit_summary")
    section.metrics.append(Metric("visitSummaryFailed", 1.0 if vs is None or vs.status == "failed" else 0.0))
    section.tables.append(HtmlTable(
        "Status per detector and step (the reason of a degraded or failed unit is its provenance message).",
        ["detector", *STEPS, "final", "reason"], rows))
    section.notes.append(f"visit summary: {_label(vs)}" + (f" ({vs.message})" if vs is not None and vs.message
                                                           else ""))
    if products.detectors:
        section.figures.append(_status_map(products, states, figures))
        section.figures.append(_time_memory(products, times, memory, figures))
    return section


def unit_seconds(status) -> float:
    """A unit's own wall time, s: its ``total`` timing; for a detector of a visit-wide unit (finalize per
    visit, whose ``visit_total`` is the whole visit's) the sum of its own top-level stages (names without a
    dot); NaN when the unit never ran or recorded no time."""
    if status is None or not status.timings:
        return math.nan
    if "total" in status.timings:
        return float(status.timings["total"])
    own = [float(v) for k, v in status.timings.items() if "." not in k and k != "visit_total"]
    return float(sum(own)) if own else math.nan


def _label(st) -> str:
    if st is None:
        return "not run"
    return f"{st.status} ({st.error_type})" if st.error_type else st.status


def _status_map(products, states, figures):
    from matplotlib.patches import Patch, Polygon

    fig, ax = new_figure(width=5.5, height=5.0)
    drawn = False
    for d in products.detectors:
        xy = products.detector_outline_mm(d)
        if xy is None:
            continue
        ax.add_patch(Polygon(xy[:4], closed=True, facecolor=STATE_COLOURS[states[d]], edgecolor="k", lw=0.5))
        drawn = True
    if drawn:
        draw_detector_outlines(ax, products, color="k")
        ax.autoscale_view()
    else:  # no geometry: a row of boxes by detector number
        for k, d in enumerate(products.detectors):
            ax.add_patch(Polygon([(k, 0), (k + 0.9, 0), (k + 0.9, 0.9), (k, 0.9)], facecolor=STATE_COLOURS[states[d]]))
            ax.text(k + 0.45, 0.45, str(d), ha="center", va="center")
        ax.set_xlim(-0.1, len(products.detectors))
        ax.set_ylim(-0.1, 1.0)
        ax.set_axis_off()
    ax.legend(handles=[Patch(color=c, label=s) for s, c in STATE_COLOURS.items()], fontsize=7, loc="upper right")
    ax.set_title(f"visit {products.visit}: final state per detector")
    return figures.save(fig, "processing_status", "Final state of each detector over the focal plane.")


def _time_memory(products, times, memory, figures):
    fig, (a1, a2) = new_figure(2, 1, width=4.5, height=3.5)
    dets = products.detectors
    x = np.arange(len(dets))
    bottom = np.zeros(len(dets))
    for step in STEPS:
        t = np.array([times[d][step] for d in dets])
        t = np.where(np.isfinite(t), t, 0.0)
        a1.bar(x, t, bottom=bottom, label=step)
        bottom += t
    a1.set_xticks(x, [str(d) for d in dets], fontsize=7)
    a1.set_xlabel("detector")
    a1.set_ylabel("wall time (s)")
    a1.legend(fontsize=7)
    a2.bar(x, [memory[d] if math.isfinite(memory[d]) else 0.0 for d in dets], color="0.4")
    a2.set_xticks(x, [str(d) for d in dets], fontsize=7)
    a2.set_xlabel("detector")
    a2.set_ylabel("peak memory (MB)")
    return figures.save(fig, "processing_time_memory", "Wall time per step and peak memory per detector.")
