"""What a report section hands to the page: metrics, figures, tables and notes.

A section is a function ``build(products, config, figures) -> Section`` (`SectionBuilder`) over one
visit's `VisitProducts`. It never raises for missing data: what could not be computed becomes a note
(and NaN metrics, which grade ``n/a``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from .figures import FigureRef, FigureWriter
from .metrics import Metric, QaConfig
from .products import VisitProducts

__all__ = ["HtmlTable", "Section", "SectionBuilder"]


@dataclasses.dataclass
class HtmlTable:
    """A table for the page: a caption, column names, and rows of values (numbers are formatted by the
    page with ``formats[column]`` when given, else ``{:.4g}``)."""

    caption: str
    columns: list[str]
    rows: list[list]
    formats: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Section:
    """One section of a visit's page."""

    key: str                  # "psf", "astrometry", ...: the page anchor
    title: str
    metrics: list[Metric] = dataclasses.field(default_factory=list)
    figures: list[FigureRef] = dataclasses.field(default_factory=list)
    tables: list[HtmlTable] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


SectionBuilder = Callable[[VisitProducts, QaConfig, FigureWriter], Section]
