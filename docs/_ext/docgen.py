"""Pages generated from the code at build time (called from ``conf.py``; outputs are git-ignored).

- ``api/generated/<package>.rst``: one page per subpackage, its docstring and an autosummary table of
  the names in its ``__all__`` (autosummary then writes a stub page per name beside it);
- ``generated/configuration.rst``: one table per pydantic config model (field, type, default,
  description from ``model_fields``), nested models expanded once and linked;
- ``generated/cli.rst``: the ``--help`` text of ``visitcal`` and each of its subcommands;
- ``generated/qa_metrics.rst``: every metric of ``visitcal qa`` (name, section, unit, scope, default
  thresholds, LSST name, description) from the metric registry;
- ``generated/compat.rst``: the LSST compatibility table (each LSST task, its config fields and the output
  columns, with visitcal's names) from the checked registry `visitcal.tasks.lsst_compat`.

Files are rewritten only when their text changes, so incremental builds stay incremental.
"""

from __future__ import annotations

import importlib
import io
import os
import pkgutil
import re
import types
import typing
from contextlib import redirect_stdout
from pathlib import Path

import pydantic

#: The subpackages documented in the API reference, in the order of the package map.
SUBPACKAGES = ["core", "io", "detection", "psf", "measurement", "measurement.plugins", "calib", "tasks",
               "sim", "pipeline", "qa"]

#: Modules documented with ``:members:`` on their subpackage's page although the subpackage does not
#: re-export them (the pipeline steps hold the CLI step configs).
EXTRA_MODULES = {
    "tasks": ["visitcal.tasks.lsst_compat"],
    "pipeline": ["visitcal.pipeline.calibrate_step", "visitcal.pipeline.associate_step",
                 "visitcal.pipeline.finalize_step", "visitcal.pipeline.visit_summary_step",
                 "visitcal.pipeline.reprocess_step", "visitcal.pipeline.chain", "visitcal.pipeline.status",
                 "visitcal.pipeline.lock", "visitcal.pipeline.runner"],
    "qa": ["visitcal.qa.report", "visitcal.qa.processing", "visitcal.qa.psf", "visitcal.qa.rho",
           "visitcal.qa.apcorr", "visitcal.qa.astrometry", "visitcal.qa.photometry", "visitcal.qa.catalog",
           "visitcal.qa.truth", "visitcal.qa.products", "visitcal.qa.figures", "visitcal.qa.section",
           "visitcal.qa.metrics"],
}

#: Roots of the configuration reference: (section title, dotted path of the model).
CONFIG_ROOTS = [
    ("Command-line steps", [
        "visitcal.pipeline.calibrate_step.CalibrateStepConfig",
        "visitcal.pipeline.associate_step.AssociateStepConfig",
        "visitcal.pipeline.finalize_step.FinalizeStepConfig",
        "visitcal.pipeline.reprocess_step.ReprocessStepConfig",
        "visitcal.pipeline.chain.RunConfig",
        "visitcal.qa.metrics.QaConfig",
    ]),
    ("Tasks", [
        "visitcal.tasks.CharacterizeImageConfig",
        "visitcal.tasks.CalibrateConfig",
        "visitcal.tasks.IsolatedStarAssociationConfig",
        "visitcal.tasks.FinalizeCharacterizationConfig",
        "visitcal.tasks.ConsolidateFinalizeCharacterizationDetectorConfig",
        "visitcal.tasks.ReprocessVisitImageConfig",
        "visitcal.tasks.ComputeExposureSummaryStatsConfig",
        "visitcal.tasks.FindSourcesConfig",
        "visitcal.tasks.ReserveIsolatedStarsConfig",
    ]),
]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _title(text: str, char: str = "=") -> str:
    return f"{text}\n{char * len(text)}\n"


# --------------------------------------------------------------------------------------------- API
def _api_page(sub: str) -> str:
    name = f"visitcal.{sub}"
    mod = importlib.import_module(name)
    lines = [_title(f"``{name}``"), f".. automodule:: {name}", "   :no-members:", ""]
    public = list(getattr(mod, "__all__", []))
    if public:
        lines += [".. rubric:: Public names", "", f".. currentmodule:: {name}", "",
                  ".. autosummary::", "   :toctree: .", "   :nosignatures:", ""]
        lines += [f"   {n}" for n in public if not n.startswith("_")]
        lines.append("")
    else:  # a package of modules (measurement.plugins): document each module in full on this page
        for m in sorted(m.name for m in pkgutil.iter_modules(mod.__path__) if not m.name.startswith("_")):
            lines += [_title(f"``{name}.{m}``", "-"), f".. automodule:: {name}.{m}", "   :members:", ""]
    for extra in EXTRA_MODULES.get(sub, []):
        lines += [_title(f"``{extra}``", "-"), f".. automodule:: {extra}", "   :members:", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- configs
def _models_in(annotation) -> list[type]:
    """The pydantic models an annotation names (directly, in a union, or as a container's item)."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    out = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def _type_text(annotation) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = repr(annotation).replace("typing.", "")
    # an element bound (Annotated[int, FieldInfo(... Le(le=15))]) reads as its type with the bound
    text = re.sub(r"Annotated\[(\w+), FieldInfo\([^\]]*metadata=\[([^\]]*)\]\)\]",
                  lambda m: f"{m.group(1)} ({m.group(2)})", text)
    for model in _models_in(annotation):
        text = text.replace(f"{model.__module__}.{model.__qualname__}", model.__name__)
    return text.replace("<class '", "").replace("'>", "")


def _default_text(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # factories that take the validated data
            return "(computed)"
        if isinstance(value, pydantic.BaseModel):
            return "see its table"
    elif field.is_required():
        return "(required)"
    else:
        value = field.default
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def _default_cell(field) -> str:
    text = _default_text(field)
    return text if text in ("see its table", "(required)", "(computed)") else _literal(text)


def _cell(text: str) -> str:
    """Text safe for one list-table cell: one line, inline literal when code-like."""
    return " ".join(str(text).split())


def _literal(text: str) -> str:
    text = _cell(text)
    return f"``{text}``" if text else ""


def _label(model: type) -> str:
    return f"config-{model.__module__}.{model.__qualname__}".lower().replace("_", "-")


def _model_tables(model: type, seen: set, char: str) -> list[str]:
    if model in seen:
        return []
    seen.add(model)
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    lines = [f".. _{_label(model)}:", "", _title(model.__name__, char),
             f"``{model.__module__}.{model.__qualname__}``", ""]
    if doc and not doc.startswith("Usage docs"):
        lines += [" ".join(doc.split()), ""]
    nested = []
    if not model.model_fields:
        return lines + ["No fields.", ""]
    lines += [".. list-table::", "   :header-rows: 1", "   :widths: 20 20 20 40", "",
              "   * - field", "     - type", "     - default", "     - description"]
    for fname, field in model.model_fields.items():
        models = _models_in(field.annotation)
        nested += [m for m in models if m not in nested]
        refs = ", ".join(f":ref:`{m.__name__} <{_label(m)}>`" for m in models)
        if models and field.annotation in models:
            type_cell = refs
        else:
            type_cell = _literal(_type_text(field.annotation)) + (f" ({refs})" if models else "")
        lines += [f"   * - ``{fname}``", f"     - {type_cell}", f"     - {_default_cell(field)}",
                  f"     - {_cell(field.description or '')}"]
    lines.append("")
    for sub in nested:
        lines += _model_tables(sub, seen, char)
    return lines


def _config_page() -> str:
    lines = []
    seen: set = set()
    for title, roots in CONFIG_ROOTS:
        lines += [_title(title, "-")]
        for path in roots:
            module, _, name = path.rpartition(".")
            lines += _model_tables(getattr(importlib.import_module(module), name), seen, "~")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- CLI
def _cli_page() -> str:
    from visitcal.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help at the terminal width: fix it
    parser = build_parser()
    sub_action = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    lines = []
    for name, p in [("visitcal", parser), *((f"visitcal {k}", v) for k, v in sub_action.choices.items())]:
        buf = io.StringIO()
        with redirect_stdout(buf):
            p.print_help()
        lines += [_title(f"``{name}``", "-"), ".. code-block:: text", ""]
        lines += [f"   {line}".rstrip() for line in buf.getvalue().splitlines()]
        lines.append("")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- QA metrics
def _rst_text(text: str) -> str:
    """Plain text safe in reStructuredText: its markup characters escaped (``|x|`` is not a substitution)."""
    text = str(text).replace("\\", "\\\\")
    for ch in "*|`":
        text = text.replace(ch, "\\" + ch)
    return re.sub(r"_(?=\W|$)", r"\\_", text)


def _qa_metrics_page() -> str:
    from visitcal.qa.report import import_sections
    from visitcal.qa.metrics import registered_metrics

    import_sections()
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 18 9 6 7 14 14 32", "",
             "   * - metric", "     - section", "     - unit", "     - scope", "     - warn", "     - fail",
             "     - description"]
    for spec in registered_metrics():
        if spec.name.startswith("test"):  # tests register their own; never in the docs
            continue
        th = spec.threshold
        desc = spec.description + (f" LSST: {spec.lsst_name}." if spec.lsst_name else "")
        warn, fail = (th.describe(level) if th else "" for level in ("warn", "fail"))
        if spec.min_count:
            desc += f" Graded from {spec.min_count} objects."
        lines += [f"   * - ``{spec.name}``", f"     - {spec.section}", f"     - {_rst_text(spec.unit) or '—'}",
                  f"     - {spec.scope}", f"     - {_literal(warn) if warn else ''}",
                  f"     - {_literal(fail) if fail else ''}", f"     - {_rst_text(_cell(desc))}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- LSST compat
def _compat_anchor(name: str) -> str:
    return "compat-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _compat_page() -> str:
    """The LSST compatibility table: one section per task (fields), one per output catalog (columns)."""
    from visitcal.tasks import lsst_compat as lc

    lines = [_title("Tasks and configuration fields", "-"),
             "Per LSST task: the visitcal class, then each of LSST's configuration fields with visitcal's path on "
             "the config model (the snake_case of LSST's name unless it differs) or why visitcal has none, then "
             "visitcal's fields that LSST lacks.", ""]
    for task in lc.TASKS:
        lines += [f".. _{_compat_anchor(task.lsst_task)}:", "", _title(f"{task.lsst_task} ({task.lsst_package})", "~")]
        classes = ", ".join(f"`{c}`" for c in task.visitcal)
        lines += [f"visitcal: {classes}" + (f"; config `{task.config}`" if task.config else "") + ".", ""]
        if task.note:
            lines += [_rst_text(_cell(task.note)), ""]
        rows = lc.field_rows(task)
        only = lc.visitcal_only(task)
        if not rows and not only:
            continue
        lines += [".. list-table::", "   :header-rows: 1", "   :widths: 35 30 35", "",
                  "   * - LSST field", "     - visitcal", "     - note"]
        for row in rows:
            renamed = row.ours is not None and row.ours != lc.snake_case(row.lsst)
            lines += [f"   * - ``{row.lsst}``", f"     - ``{row.ours}``" if row.ours else "     - —",
                      f"     - {_rst_text(_cell(row.note))}" if row.note else
                      ("     - renamed" if renamed else "     -")]
        for name, desc in only:
            first = _cell(desc).split(". ")[0].rstrip(".")
            lines += ["   * - —", f"     - ``{name}``", f"     - visitcal only: {_rst_text(first)}"]
        lines.append("")
    lines += [_title("Output columns", "-"),
              "Per output catalog: LSST's column names, visitcal's (the same unless stated) or why visitcal lacks "
              "it. Each name is checked against a processed simulated repository by the test suite.", ""]
    for table in lc.COLUMNS:
        lines += [f".. _{_compat_anchor('columns ' + table.dataset)}:", "",
                  _title(f"``{table.dataset}`` (LSST: {table.lsst_dataset})", "~")]
        if table.note:
            lines += [_rst_text(_cell(table.note)), ""]
        lines += [".. list-table::", "   :header-rows: 1", "   :widths: 40 25 35", "",
                  "   * - LSST column", "     - visitcal", "     - note"]
        for row in lc.column_rows(table):
            lines += [f"   * - ``{row.lsst}``", f"     - ``{row.ours}``" if row.ours else "     - —",
                      f"     - {_rst_text(_cell(row.note))}" if row.note else "     -"]
        lines.append("")
    return "\n".join(lines)


def generate(docs: Path) -> None:
    """Write every generated page under ``docs`` (called by ``conf.py`` on each build)."""
    for sub in SUBPACKAGES:
        _write(docs / "api" / "generated" / f"visitcal.{sub}.rst", _api_page(sub))
    _write(docs / "generated" / "configuration.rst", _config_page())
    _write(docs / "generated" / "cli.rst", _cli_page())
    _write(docs / "generated" / "qa_metrics.rst", _qa_metrics_page())
    _write(docs / "generated" / "compat.rst", _compat_page())
