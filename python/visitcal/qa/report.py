"""The static HTML report of ``visitcal qa``: an index page for the repository and a page per visit.

Layout of the output folder (``REPO/qa`` by default)::

    OUT/index.html                              every visit: detectors by state, the worst grades, links
    OUT/<visit>/index.html                      the visit's page: a summary per detector, then one section
                                                each for processing, PSF, aperture corrections, astrometry,
                                                photometry, the catalog (and the truth with ``truth=True``)
    OUT/<visit>/figures/*.png                   its figures
    OUT/<visit>/metrics_<visit>.parquet         its metrics (`visitcal.qa.metrics.metrics_table`)

Plain HTML with inline CSS and PNG images: no server, no script, opens from disk, and the same inputs
give the same bytes (no dates). Every file is written atomically. A section that fails on a visit (a
bug, an unreadable product) becomes a note on that page and the other sections go on; a detector that
failed in the pipeline is listed with its reason and graded ``fail``.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import logging
import math
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa

from .. import __version__
from ..core.atomic import atomic_write
from ..pipeline.repository import Repository
from .figures import FigureWriter, require_matplotlib
from .metrics import GRADES, QaConfig, metric_spec, metrics_table, registered_metrics, worst_grade, write_metrics
from .products import VisitProducts, repository_visits
from .processing import detector_state
from .section import HtmlTable, Section

__all__ = ["SECTIONS", "QaReport", "VisitReport", "check_thresholds", "import_sections", "make_report"]

log = logging.getLogger(__name__)

#: The report's sections in page order: each module of `visitcal.qa` exposes ``build(products, config,
#: figures) -> Section``. ``truth`` is added with ``truth=True``.
SECTIONS = ("processing", "psf", "apcorr", "astrometry", "photometry", "catalog")
#: Most worker processes of ``make_report(jobs=...)``.
MAX_JOBS = 256


@dataclasses.dataclass
class VisitReport:
    """What was written for one visit."""

    visit: int
    page: Path
    metrics_path: Path
    detector_grades: dict[int, str]     # worst of ok / warn / fail over the detector's metrics and state
    detector_states: dict[int, tuple[str, str]]
    visit_grade: str
    n_metrics: int
    section_errors: dict[str, str]
    seconds: float
    section_seconds: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class QaReport:
    """The report: its index page and each visit's `VisitReport`."""

    out: Path
    index: Path
    visits: list[VisitReport]
    failed: dict[int, str] = dataclasses.field(default_factory=dict)   # visits whose report could not be made


def _worst(grades) -> str:
    """The worst grade, ``n/a`` left out (not measurable does not grade a detector or a visit)."""
    return worst_grade([g for g in grades if g != "n/a"])


def _section_builder(name: str) -> Callable:
    return importlib.import_module(f"{__package__}.{name}").build


def import_sections(truth: bool = True) -> None:
    """Import every section module, so that every metric is registered (the truth section's too, unless
    ``truth`` is False)."""
    for name in (*SECTIONS, *(("truth",) if truth else ())):
        importlib.import_module(f"{__package__}.{name}")


def check_thresholds(config: QaConfig) -> None:
    """`ValueError` naming the configured thresholds whose metric does not exist."""
    import_sections()
    known = {s.name for s in registered_metrics()}
    unknown = sorted(set(config.thresholds) - known)
    if unknown:
        raise ValueError(f"thresholds: unknown metric(s) {', '.join(unknown)} (the metrics are listed in the docs' "
                         "QA page)")


def make_report(root, *, visits=None, out=None, truth: bool = False, config: QaConfig | None = None,
                progress: Callable[[str], None] | None = None, jobs: int = 1) -> QaReport:
    """Write the QA report of the repository ``root``.

    Parameters
    ----------
    root : path
        A processed data repository (`visitcal.pipeline.repository`).
    visits : iterable of int, optional
        Only these visits (default: every visit the repository holds).
    out : path, optional
        The output folder (default ``root/qa``); created.
    truth : bool
        Add the comparison with the simulator's truth (`visitcal.qa.truth`); the repository must be one
        that ``visitcal sim`` wrote.
    config : QaConfig, optional
        Thresholds and figure settings.
    progress : callable, optional
        Called with a line of text per visit done.
    jobs : int
        Visits reported in parallel worker processes (1: in this process). Each visit's files are the same
        bytes whatever ``jobs``; a visit whose worker dies is listed in the index with the error.

    Returns
    -------
    QaReport

    Raises
    ------
    FileNotFoundError
        ``root`` is not a directory.
    ValueError
        A requested visit is not in the repository, or it has none, or ``truth`` on a repository without the
        simulator's truth.
    ImportError
        matplotlib (the ``qa`` extra) is not installed.
    """
    require_matplotlib()
    config = config or QaConfig()
    check_thresholds(config)
    repo = Repository(root)
    known = repository_visits(repo)
    if not known:
        raise ValueError(f"{repo.root}: no visit found (no post_isr_image, no per-detector product, no provenance)")
    if visits is not None:
        visits = sorted({int(v) for v in visits})
        missing = [v for v in visits if v not in known]
        if missing:
            raise ValueError(f"{repo.root}: visit(s) {', '.join(map(str, missing))} not in the repository "
                             f"(it has {', '.join(map(str, known))})")
    else:
        visits = list(known)
    sections = list(SECTIONS)
    if truth:
        from .truth import TruthUnavailable, open_truth

        try:
            open_truth(repo.root)
        except TruthUnavailable as err:
            raise ValueError(f"--truth: {err}") from None
        sections.append("truth")
    out = Path(out) if out is not None else repo.root / "qa"
    out.mkdir(parents=True, exist_ok=True)
    if not 1 <= int(jobs) <= MAX_JOBS:
        raise ValueError(f"jobs must be in [1, {MAX_JOBS}], got {jobs}")
    reports, failed = [], {}

    def done(r: VisitReport) -> None:
        reports.append(r)
        if progress is not None:
            counts = {g: list(r.detector_grades.values()).count(g) for g in ("ok", "warn", "fail")}
            progress(f"visit {r.visit}: {r.visit_grade} ({counts['ok']} ok, {counts['warn']} warn, {counts['fail']} "
                     f"fail detector(s)); {r.n_metrics} metrics; {r.seconds:.1f} s -> {r.page}")

    if int(jobs) == 1 or len(visits) == 1:
        for v in visits:
            done(_visit_report(repo, v, known[v], sections, out, config))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(int(jobs), len(visits))) as pool:
            futures = {v: pool.submit(_visit_report, repo, v, known[v], sections, out, config) for v in visits}
            for v, future in futures.items():  # in visit order: the same progress lines whatever finishes first
                try:
                    done(future.result())
                except Exception as err:  # noqa: BLE001 - a dead worker costs its visit only (BrokenProcessPool...)
                    failed[v] = f"{type(err).__name__}: {err}"
                    log.error("qa: visit %s: %s", v, failed[v])
    index = out / "index.html"
    _write_text(index, _index_page(repo, reports, out, truth, failed))
    return QaReport(out=out, index=index, visits=reports, failed=failed)


def _visit_report(repo, visit, detectors, section_names, out, config) -> VisitReport:
    t0 = time.perf_counter()
    folder = out / f"{visit:06d}"
    products = VisitProducts(repo, visit, detectors)
    figures = FigureWriter(folder / "figures", folder, dpi=config.dpi)
    sections, errors, seconds = [], {}, {}
    for name in section_names:
        t_section = time.perf_counter()
        try:
            sections.append(_section_builder(name)(products, config, figures))
        except Exception as err:  # noqa: BLE001 - one section's failure must not cost the others
            log.exception("qa: section %s failed on visit %s", name, visit)
            errors[name] = f"{type(err).__name__}: {err}"
            sections.append(Section(name, name.capitalize(), notes=[f"This section failed: {errors[name]}"]))
        seconds[name] = time.perf_counter() - t_section
    figures.remove_stale()
    metrics = [m for s in sections for m in s.metrics]
    table = metrics_table(visit, metrics, config)
    metrics_path = write_metrics(table, folder / f"metrics_{visit:06d}.parquet")
    states = {d: detector_state(products, d) for d in products.detectors}
    grades = _detector_grades(table, states)
    visit_rows = [g for d, g in zip(table["detector"].to_pylist(), table["grade"].to_pylist()) if d == -1]
    visit_grade = _worst([*grades.values(), *visit_rows])
    page = folder / "index.html"
    _write_text(page, _visit_page(repo, visit, products, sections, table, states, grades, visit_grade, errors))
    return VisitReport(visit=visit, page=page, metrics_path=metrics_path, detector_grades=grades,
                       detector_states=states, visit_grade=visit_grade, n_metrics=table.num_rows,
                       section_errors=errors, seconds=time.perf_counter() - t0, section_seconds=seconds)


def _detector_grades(table: pa.Table, states) -> dict[int, str]:
    by_det: dict[int, list[str]] = {d: [] for d in states}
    for d, g in zip(table["detector"].to_pylist(), table["grade"].to_pylist()):
        if d in by_det:
            by_det[d].append(g)
    out = {}
    for d, grades in by_det.items():
        state = states[d][0]
        extra = ["fail"] if state in ("failed", "not run") else (["warn"] if state == "degraded" else [])
        out[d] = _worst([*grades, *extra])
    return out


# --- HTML -----------------------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-top: 0.6em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } td.text { text-align: left; max-width: 50em; }
.ok { background: #d9f2d9; } .warn { background: #ffe9a8; } .fail { background: #f6b8b8; }
.na { background: #eeeeee; color: #777; } .degraded { background: #ffe9a8; } .failed { background: #f6b8b8; }
.notrun { background: #dddddd; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #ddd; } figcaption { font-size: 0.8em; max-width: 60em; }
nav a { margin-right: 1em; } .note { font-size: 0.85em; color: #444; } details { font-size: 0.85em; }
"""

_GRADE_CLASS = {"ok": "ok", "warn": "warn", "fail": "fail", "n/a": "na", "degraded": "degraded",
                "failed": "failed", "not run": "notrun"}


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value, fmt: str | None = None) -> str:
    if isinstance(value, (bool,)) or value is None:
        return _e(value)
    if isinstance(value, (int,)):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—" if math.isnan(value) else _e(value)
        return _e((fmt or "{:.4g}").format(value))
    return _e(value)


def _page(title: str, body: list[str]) -> str:
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", *body,
                      f'<p class="note">visitcal {_e(__version__)} qa</p>', "</body>", "</html>", ""])


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def _fold(text: str, limit: int = 300) -> str:
    """Escaped ``text``; over ``limit`` characters, its start with the rest folded in a ``<details>``."""
    if len(text) <= limit:
        return _e(text)
    return f"<details><summary>{_e(text[:limit - 40])}…</summary>{_e(text)}</details>"


def _html_table(t: HtmlTable) -> list[str]:
    lines = ["<table>", f"<caption>{_e(t.caption)}</caption>",
             "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in t.columns) + "</tr>"]
    for row in t.rows:
        cells = []
        for col, value in zip(t.columns, row):
            if isinstance(value, str):
                cls = _GRADE_CLASS.get(value.split(" (")[0], "text")
                cells.append(f'<td class="{cls}">{_fold(value, 160)}</td>')  # a long message folds away
            else:
                cells.append(f"<td>{_fmt(value, t.formats.get(col))}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return lines


def _metric_grid(section: Section, table: pa.Table, detectors) -> list[str]:
    """The section's metrics: a row per metric, a column for the visit and each detector, coloured by grade (a
    per-detector metric's pooled ``<name>Visit`` in the visit column of its row; the error after ``±``, the
    count in the cell's tooltip)."""
    names = list(dict.fromkeys(m.name for m in section.metrics))
    if not names:
        return []
    cell, bounds = {}, {}
    for d, name, value, err, count, g, warn, fail in zip(
            *(table[c].to_pylist() for c in ("detector", "metric", "value", "error", "count", "grade", "warn",
                                              "fail"))):
        cell[(name, d)] = (value, err, count, g)
        bounds.setdefault(name, (warn, fail))
    pooled = {n: f"{n}Visit" for n in names if f"{n}Visit" in names}
    for n, v in pooled.items():
        if (v, -1) in cell:
            cell[(n, -1)] = cell[(v, -1)]
    names = [n for n in names if n not in set(pooled.values())]
    visit_cols = any((n, -1) in cell for n in names)
    cols = ([-1] if visit_cols else []) + [d for d in detectors if any((n, d) in cell for n in names)]
    lines = ["<table>", "<tr><th>metric</th><th>unit</th>"
             + "".join(f"<th>{'visit' if d == -1 else f'det {d}'}</th>" for d in cols)
             + "<th>warn</th><th>fail</th></tr>"]
    for name in names:
        spec = metric_spec(name)
        th_warn, th_fail = bounds.get(name, ("", ""))
        row = [f'<td class="text" title="{_e(spec.description)}">{_e(name)}</td><td>{_e(spec.unit)}</td>']
        for d in cols:
            if (name, d) in cell:
                value, err, count, g = cell[(name, d)]
                extra = f" ± {_fmt(err, '{:.2g}')}" if err is not None and math.isfinite(err) else ""
                title = f' title="n = {count}"' if count is not None and count >= 0 else ""
                row.append(f'<td class="{_GRADE_CLASS[g]}"{title}>{_fmt(value)}{extra}</td>')
            else:
                row.append("<td></td>")
        row.append(f"<td>{_e(th_warn)}</td><td>{_e(th_fail)}</td>")
        lines.append("<tr>" + "".join(row) + "</tr>")
    lines.append("</table>")
    return lines


def _visit_page(repo, visit, products, sections, table, states, grades, visit_grade, errors) -> str:
    body = [f"<h1>visit {visit} <span class=\"{_GRADE_CLASS[visit_grade]}\">{_e(visit_grade)}</span></h1>",
            f'<p><a href="../index.html">all visits</a> · repository {_e(repo.root.name)} · '
            f'{len(products.detectors)} detector(s) · metrics: <a href="metrics_{visit:06d}.parquet">'
            f"metrics_{visit:06d}.parquet</a></p>",
            "<nav>" + "".join(f'<a href="#{_e(s.key)}">{_e(s.title)}</a>' for s in sections) + "</nav>",
            "<h2>Detectors</h2>", "<table>",
            "<tr><th>detector</th><th>state</th><th>grade</th><th>warn / fail metrics</th><th>reason</th></tr>"]
    flagged: dict[int, list[str]] = {}
    for d, name, g in zip(table["detector"].to_pylist(), table["metric"].to_pylist(), table["grade"].to_pylist()):
        if g in ("warn", "fail"):
            flagged.setdefault(d, []).append(f"{name} ({g})")
    for d in products.detectors:
        state, why = states[d]
        reason = _fold(why, 160)
        body.append(f'<tr><td>{d}</td><td class="{_GRADE_CLASS[state]}">{_e(state)}</td>'
                    f'<td class="{_GRADE_CLASS[grades[d]]}">{_e(grades[d])}</td>'
                    f'<td class="text">{_e(", ".join(flagged.get(d, [])))}</td><td class="text">{reason}</td></tr>')
    body.append("</table>")
    if flagged.get(-1):
        body.append(f'<p class="note">visit-wide metrics out of bounds: {_e(", ".join(flagged[-1]))}</p>')
    if products.problems:
        body.append("<details><summary>products missing or unreadable "
                    f"({len(products.problems)})</summary><ul>"
                    + "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in sorted(products.problems.items()))
                    + "</ul></details>")
    for s in sections:
        body.append(f'<h2 id="{_e(s.key)}">{_e(s.title)}</h2>')
        body += [f'<p class="note">{_fold(n)}</p>' for n in s.notes]
        body += _metric_grid(s, table, products.detectors)
        for t in s.tables:
            body += _html_table(t)
        for f in s.figures:
            body.append(f'<figure><img src="{_e(f.path)}" alt="{_e(f.caption)}">'
                        f"<figcaption>{_e(f.caption)}</figcaption></figure>")
    return _page(f"visitcal qa: visit {visit}", body)


def _index_page(repo, reports, out, truth, failed=None) -> str:
    body = [f"<h1>visitcal qa: {_e(repo.root.name)}</h1>",
            f"<p>{len(reports)} visit(s){' · with the simulator&#x27;s truth' if truth else ''}. Grades: "
            + " ".join(f'<span class="{_GRADE_CLASS[g]}">{_e(g)}</span>' for g in GRADES)
            + " (n/a: not measurable on these data).</p>",
            "<table>", "<tr><th>visit</th><th>grade</th><th>detectors</th><th>ok</th><th>degraded</th><th>failed"
                       "</th><th>warn</th><th>fail</th><th>metrics</th><th>section errors</th></tr>"]
    for r in reports:
        states = [s for s, _ in r.detector_states.values()]
        grades = list(r.detector_grades.values())
        link = r.page.relative_to(out).as_posix()
        body.append(f'<tr><td><a href="{_e(link)}">{r.visit}</a></td>'
                    f'<td class="{_GRADE_CLASS[r.visit_grade]}">{_e(r.visit_grade)}</td>'
                    f"<td>{len(states)}</td><td>{states.count('ok')}</td><td>{states.count('degraded')}</td>"
                    f"<td>{states.count('failed') + states.count('not run')}</td><td>{grades.count('warn')}</td>"
                    f"<td>{grades.count('fail')}</td>"
                    f'<td><a href="{_e(r.metrics_path.relative_to(out).as_posix())}">{r.n_metrics}</a></td>'
                    f'<td class="text">{_e("; ".join(f"{k}: {v}" for k, v in r.section_errors.items()))}</td></tr>')
    for v, why in sorted((failed or {}).items()):
        body.append(f'<tr><td>{v}</td><td class="fail">no report</td><td colspan="8" class="text">{_e(why)}</td></tr>')
    body.append("</table>")
    return _page(f"visitcal qa: {repo.root.name}", body)
