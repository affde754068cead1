"""Figures of the QA report: matplotlib with the non-interactive Agg backend, written atomically.

Figures are built on `matplotlib.figure.Figure` directly (never ``pyplot``), so no global figure
state is kept and nothing needs a display; each is saved to PNG through `visitcal.core.atomic`, so an
interrupted report leaves no half-written image. matplotlib is the ``qa`` extra; without it
`require_matplotlib` raises an `ImportError` saying how to install it.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_write

__all__ = ["FigureRef", "FigureWriter", "draw_detector_outlines", "new_figure", "require_matplotlib", "thin"]


def require_matplotlib():
    """Import matplotlib with the Agg backend; an `ImportError` naming the ``qa`` extra when absent."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("visitcal qa draws with matplotlib, which is not installed: "
                          "pip install 'visitcal[qa]'") from err
    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    return matplotlib


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 4.0, **subplot_kw):
    """A `matplotlib.figure.Figure` of ``nrows x ncols`` axes of ``width x height`` inches each, with
    its axes array (squeezed like ``pyplot.subplots``)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=True, subplot_kw=subplot_kw or None)
    return fig, axes


def thin(n: int, limit: int) -> np.ndarray:
    """Indices of an evenly spaced subset of at most ``limit`` of ``n`` points (all of them when
    ``n <= limit``): deterministic, so the same data draw the same picture."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


@dataclasses.dataclass(frozen=True)
class FigureRef:
    """A written figure: ``path`` relative to the visit's page, and its caption."""

    path: str
    caption: str


class FigureWriter:
    """Saves figures as PNG under ``directory`` (created), atomically, and returns `FigureRef`.

    Parameters
    ----------
    directory : path
        Where the PNG files go (the visit's ``figures/`` folder).
    relative_to : path
        The folder the HTML page lives in: `FigureRef.path` is relative to it.
    dpi : int
        Resolution.
    """

    def __init__(self, directory, relative_to, *, dpi: int = 90):
        self.directory = Path(directory)
        self.relative_to = Path(relative_to)
        self.dpi = int(dpi)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.written: set[str] = set()

    def save(self, fig, name: str, caption: str) -> FigureRef:
        """Write ``fig`` to ``<directory>/<name>.png`` and release it. ``name`` may hold letters, digits,
        ``_`` and ``-`` only."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"figure name {name!r}: letters, digits, '_' and '-' only")
        path = self.directory / f"{name}.png"
        buf = io.BytesIO()
        # no date in the metadata, so the same figure gives the same bytes
        fig.savefig(buf, format="png", dpi=self.dpi, metadata={"Software": None})
        fig.clear()
        with atomic_write(path) as f:
            f.write(buf.getvalue())
        self.written.add(path.name)
        return FigureRef(path=path.relative_to(self.relative_to).as_posix(), caption=caption)

    def remove_stale(self) -> list[Path]:
        """Delete the PNG files of ``directory`` this writer did not write (a previous report's figures that
        this one no longer draws), so the folder holds exactly the current report's; returns them."""
        stale = sorted(p for p in self.directory.glob("*.png") if p.name not in self.written)
        for p in stale:
            p.unlink()
        return stale


def draw_detector_outlines(ax, products, *, label: bool = True, **line_kw) -> bool:
    """Draw every detector of ``products`` (a `VisitProducts`) as its focal-plane outline (mm) on ``ax``,
    labelled with its number; False (nothing drawn) when no detector's geometry is known."""
    drawn = False
    kw = {"color": "0.6", "lw": 0.6, **line_kw}
    for d in products.detectors:
        xy = products.detector_outline_mm(d)
        if xy is None:
            continue
        ax.plot(xy[:, 0], xy[:, 1], **kw)
        if label:
            ax.text(xy[:4, 0].mean(), xy[:4, 1].mean(), str(d), color="0.5", fontsize=7, ha="center", va="center")
        drawn = True
    if drawn:
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("focal plane x (mm)")
        ax.set_ylabel("focal plane y (mm)")
    return drawn
