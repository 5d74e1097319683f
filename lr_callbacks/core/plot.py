"""Line plots rendered off-screen with matplotlib (Agg), as images for TensorBoard and PNG files.

No pyplot state is touched: each figure is built and discarded here, so plotting from a callback never
opens a window or leaks figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Line", "Marker", "render", "save_png"]


@dataclass(frozen=True)
class Line:
    """One curve: its points and its legend label."""

    xs: Sequence[float]
    ys: Sequence[float]
    label: str = ""
    style: str = "-"


@dataclass(frozen=True)
class Marker:
    """A vertical line (``x``) or a shaded band (``x`` to ``x_end``) with a label."""

    x: float
    label: str = ""
    x_end: float | None = None
    color: str = "tab:red"


@dataclass(frozen=True)
class _Figure:
    lines: Sequence[Line]
    title: str
    xlabel: str
    ylabel: str
    logx: bool = False
    logy: bool = False
    markers: Sequence[Marker] = field(default_factory=tuple)


def _figure(spec: _Figure):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.0), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for line in spec.lines:
        axes.plot(list(line.xs), list(line.ys), line.style, label=line.label or None, linewidth=1.5)
    for marker in spec.markers:
        if marker.x_end is None:
            axes.axvline(marker.x, color=marker.color, linestyle="--", label=marker.label or None)
        else:
            axes.axvspan(marker.x, marker.x_end, color=marker.color, alpha=0.15, label=marker.label or None)
    if spec.logx:
        axes.set_xscale("log")
    if spec.logy:
        axes.set_yscale("log")
    axes.set_title(spec.title)
    axes.set_xlabel(spec.xlabel)
    axes.set_ylabel(spec.ylabel)
    axes.grid(True, alpha=0.3)
    if any(line.label for line in spec.lines) or any(m.label for m in spec.markers):
        axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return figure, canvas


def render(
    lines: Sequence[Line],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    markers: Sequence[Marker] = (),
) -> np.ndarray:
    """Render the lines to an ``H×W×3`` uint8 RGB array."""
    _, canvas = _figure(_Figure(lines, title, xlabel, ylabel, logx, logy, markers))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(
    path: str,
    lines: Sequence[Line],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    markers: Sequence[Marker] = (),
) -> None:
    """Render the lines to a PNG file at ``path``."""
    figure, _ = _figure(_Figure(lines, title, xlabel, ylabel, logx, logy, markers))
    figure.savefig(path)
