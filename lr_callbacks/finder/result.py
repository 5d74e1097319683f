"""What a finder run produced: the raw curve, the suggestion, the confirm trials; plots and a summary.

A plain frozen dataclass of numbers and strings, so it pickles, fits in a checkpoint (``to_dict``) and
can be compared across ranks. Plotting imports matplotlib only when asked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lr_callbacks.finder.analysis import FLAGS, METHODS, suggest_lr

__all__ = ["STOP_REASONS", "FinderResult", "Trial"]

STOP_REASONS = ("completed", "diverged", "data_exhausted")


@dataclass(frozen=True)
class Trial:
    """One confirm trial: a short run of the real schedule with ``lr`` as the peak.

    Attributes:
        lr: the reference group's peak LR of the trial.
        val_loss: the validation loss at its end (``inf`` if the training loss became NaN/inf).
        losses: the training loss of each of its optimizer steps.

    >>> trials = (Trial(1e-4, 0.31), Trial(1e-5, 0.27), Trial(1e-6, 0.40))
    >>> min(trials, key=lambda t: t.val_loss).lr
    1e-05
    """

    lr: float
    val_loss: float
    losses: tuple[float, ...] = ()


@dataclass(frozen=True)
class FinderResult:
    """One LR range test: the sweep's raw curve and what was concluded from it.

    Attributes:
        lrs: the reference group's LR at each step of the sweep (other groups kept their ratio to it).
        losses: the raw training loss of each step (mean over micro-batches, and over ranks).
        grad_norms: the gradient norm of each step, before clipping (after unscaling, with AMP).
        suggestion: the LR the analysis suggests, or ``None`` (see ``flags``).
        range: ``(lower, upper)``: from the steepest descent to the loss minimum, or ``None``.
        flags: the analysis's warnings (names from ``FLAGS`` in ``lr_callbacks.finder.analysis``).
        method: the suggestion rule used.
        stop_reason: ``"completed"`` (all steps ran), ``"diverged"`` (the stop rule fired, or the loss
            became NaN/inf) or ``"data_exhausted"`` (no complete optimizer step was left in the data).
        smoothed: the zero-lag smoothed loss at each step (NaN where not analysed).
        trials: the confirm trials, if confirm mode ran.
        global_step: the trainer's ``global_step`` when the finder ran.
        epoch: the epoch at whose start it ran.

    >>> r = FinderResult(lrs=(1e-3, 1e-2), losses=(1.0, 0.5), grad_norms=(2.0, 1.0), suggestion=1e-2,
    ...                  range=(1e-3, 1e-2), flags=(), method="default", stop_reason="completed")
    >>> r.chosen_lr, FinderResult.from_dict(r.to_dict()) == r
    (0.01, True)
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    grad_norms: tuple[float, ...]
    suggestion: float | None
    range: tuple[float, float] | None
    flags: tuple[str, ...]
    method: str
    stop_reason: str
    smoothed: tuple[float, ...] = ()
    trials: tuple[Trial, ...] = field(default_factory=tuple)
    global_step: int = 0
    epoch: int = 0

    @property
    def chosen_lr(self) -> float | None:
        """The LR the finder applies: the best trial's when confirm mode ran, else the suggestion."""
        finite = [t for t in self.trials if math.isfinite(t.val_loss)]
        if finite:
            return min(finite, key=lambda t: t.val_loss).lr
        return self.suggestion

    def alternatives(self) -> dict[str, float | None]:
        """What every suggestion method (``METHODS``) gives on this curve."""
        return {m: suggest_lr(self.lrs, self.losses, m).lr for m in METHODS} if self.lrs else {}

    def summary(self) -> str:
        """A markdown summary: the answer, the flags explained, the other methods, the trials."""
        lines = [
            f"**LR finder** at step {self.global_step} (epoch {self.epoch}): {len(self.lrs)} steps from "
            f"{_fmt(self.lrs[0] if self.lrs else None)} to {_fmt(self.lrs[-1] if self.lrs else None)}, "
            f"stopped: {self.stop_reason}.",
            "",
            f"- suggestion ({self.method}): **{_fmt(self.suggestion)}**",
            f"- range: {_fmt(self.range[0]) + ' to ' + _fmt(self.range[1]) if self.range else 'none'}",
        ]
        if self.trials:
            lines.append(f"- chosen after the trials: **{_fmt(self.chosen_lr)}**")
        for flag in self.flags:
            lines.append(f"- flag `{flag}`: {FLAGS.get(flag, '')}")
        alternatives = self.alternatives()
        if alternatives:
            lines += ["", "| method | LR |", "|---|---|"]
            lines += [f"| {name} | {_fmt(lr)} |" for name, lr in alternatives.items()]
        if self.trials:
            lines += ["", "| trial | peak LR | validation loss |", "|---|---|---|"]
            lines += [f"| {i} | {_fmt(t.lr)} | {t.val_loss:.6g} |" for i, t in enumerate(self.trials)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, floats and strings (for a checkpoint)."""
        return {
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "grad_norms": list(self.grad_norms),
            "suggestion": self.suggestion,
            "range": list(self.range) if self.range else None,
            "flags": list(self.flags),
            "method": self.method,
            "stop_reason": self.stop_reason,
            "smoothed": list(self.smoothed),
            "trials": [{"lr": t.lr, "val_loss": t.val_loss, "losses": list(t.losses)} for t in self.trials],
            "global_step": self.global_step,
            "epoch": self.epoch,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinderResult:
        """The inverse of :meth:`to_dict`."""
        return cls(
            lrs=tuple(data["lrs"]),
            losses=tuple(data["losses"]),
            grad_norms=tuple(data["grad_norms"]),
            suggestion=data["suggestion"],
            range=(float(data["range"][0]), float(data["range"][1])) if data["range"] else None,
            flags=tuple(data["flags"]),
            method=data["method"],
            stop_reason=data["stop_reason"],
            smoothed=tuple(data.get("smoothed", ())),
            trials=tuple(Trial(t["lr"], t["val_loss"], tuple(t["losses"])) for t in data.get("trials", ())),
            global_step=int(data.get("global_step", 0)),
            epoch=int(data.get("epoch", 0)),
        )

    def plot(self) -> Any:
        """The curve as a matplotlib ``Figure`` (raw loss, smoothed loss, suggestion, range, trials).

        No pyplot state is touched; in a notebook the figure displays itself.
        """
        return _curve_figure(self)[0]

    def image(self) -> np.ndarray:
        """The curve as an ``H×W×3`` uint8 image (what ``lr_finder/curve`` shows in TensorBoard)."""
        _, canvas = _curve_figure(self)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def _curve_figure(result: FinderResult) -> tuple[Any, Any]:
    from lr_callbacks.core.plot import Line, Marker, _Figure, _figure

    lines = [Line(result.lrs, result.losses, "loss (raw)", ".")]
    if any(math.isfinite(v) for v in result.smoothed):
        lines.append(Line(result.lrs, result.smoothed, "smoothed (no lag)", "-"))
    markers = []
    if result.range is not None:
        markers.append(Marker(result.range[0], "range", x_end=result.range[1], color="tab:green"))
    if result.suggestion is not None:
        markers.append(Marker(result.suggestion, f"suggestion {_fmt(result.suggestion)}", color="tab:red"))
    for trial in result.trials:
        markers.append(Marker(trial.lr, f"trial {_fmt(trial.lr)}: val {trial.val_loss:.4g}", color="tab:purple"))
    title = f"LR finder ({result.method}; {result.stop_reason})"
    if result.flags:
        title += ": " + ", ".join(result.flags)
    figure, canvas = _figure(
        _Figure(lines, title, "learning rate (reference group)", "training loss", logx=True, markers=markers)
    )
    limits = _y_limits(result)
    if limits is not None:
        figure.axes[0].set_ylim(*limits)
    return figure, canvas


def _y_limits(result: FinderResult) -> tuple[float, float] | None:
    """Keep the valley readable: cut the view where the loss has risen well above where it started."""
    finite = [v for v in result.losses if math.isfinite(v)]
    smooth = [v for v in result.smoothed if math.isfinite(v)]
    if len(finite) < 2:
        return None
    reference = smooth or finite
    low, start = min(min(finite), min(reference)), reference[0]
    high = max(start, max(reference[: max(1, len(reference) // 4)]))
    span = max(high - low, 1e-12 * max(1.0, abs(high)))
    return low - 0.1 * span, high + 0.5 * span
