"""What a finder run produced: the raw curve, the suggestion, the confirm trials; plots and a summary.

A plain frozen dataclass of numbers and strings, so it pickles, fits in a checkpoint (``to_dict``) and
can be compared across ranks. Plotting imports matplotlib only when asked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from lr_callbacks.finder.analysis import DEFAULT_WINDOW, FLAGS, METHODS, suggest_lr
from lr_callbacks.finder.stability import PROBE_FLAGS, HoldVerdict, settle

__all__ = ["ALL_FLAGS", "STOP_REASONS", "FinderResult", "Probe", "ProbeAttempt", "Trial"]

STOP_REASONS = ("completed", "diverged", "data_exhausted", "lr_overridden")

TRIAL_FLAGS = {
    "trials_inconclusive": "the best trials were within noise of each other (or too short to tell); the "
    "candidate nearest the finder's own answer (the probe's, or the sweep's) was taken",
    "trials_skipped": "the sweep (and the probe, when it ran) left too little of confirm mode's budget for trials long "
    "enough to tell the candidates apart; none ran, and the answer is the finder's own (the probe's, else the "
    "sweep's suggestion)",
    "trials_failed": "every candidate ended its trial with a validation loss above the state the trials started "
    "from (or diverged): none trains here, so none was applied and the run keeps its LR",
}

ALL_FLAGS = {**FLAGS, **PROBE_FLAGS, **TRIAL_FLAGS}
"""Every flag a result may carry (the analysis's, the probe's, the trials'), with what it means."""


class _Record:
    """Equality of a result's records field by field, NaN equal to NaN (``compare=False`` fields left out).

    Before, the dataclasses' own ``==`` held a NaN equal only to the same float object: a result saved and loaded
    (``json``, a checkpoint's pickle) or made twice by the same run (a loss of NaN read from a tensor twice) was
    unequal to itself wherever it held a NaN: an unanalysed point's ``smoothed``, a probe attempt's ``rise``, a
    trial's loss.
    """

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in _compared(self))

    def __hash__(self) -> int:
        return hash(tuple(_hashable(getattr(self, f.name)) for f in _compared(self)))


def _compared(record: Any) -> list[Any]:
    return [f for f in fields(record) if f.compare]


def _same(a: Any, b: Any) -> bool:
    """``a == b``, NaN equal to NaN, in tuples too."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _hashable(value: Any) -> Any:
    """``value`` with every NaN as one placeholder: equal records hash alike (a NaN's hash is its object's)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, tuple):
        return tuple(map(_hashable, value))
    return value


@dataclass(frozen=True, eq=False)  # _Record's ==: NaN equal to NaN
class Trial(_Record):
    """One confirm trial: a short run of the real schedule with ``lr`` as the peak.

    Attributes:
        lr: the reference group's peak LR of the trial.
        val_loss: the validation loss at its end (``inf`` if the training loss became NaN/inf).
        losses: the training loss of each of its optimizer steps.
        se: the standard error of ``val_loss`` (``inf`` with it; NaN in a result saved before it was kept).
        rung: the round of the successive halving it ran in (0 first; the survivors of each run again, longer).

    >>> trials = (Trial(1e-4, 0.31), Trial(1e-5, 0.27), Trial(1e-6, 0.40))
    >>> min(trials, key=lambda t: t.val_loss).lr
    1e-05
    """

    lr: float
    val_loss: float
    losses: tuple[float, ...] = ()
    se: float = math.nan
    rung: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "val_loss": self.val_loss, "losses": list(self.losses), "se": self.se, "rung": self.rung}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        se = data.get("se")
        return cls(
            data["lr"], data["val_loss"], tuple(data["losses"]), math.nan if se is None else se, data.get("rung", 0)
        )


@dataclass(frozen=True, eq=False)  # _Record's ==: NaN equal to NaN
class ProbeAttempt(_Record):
    """One hold of the stability probe: the warmup, then ``lr`` held.

    Attributes:
        lr: the reference group's peak LR held (trained at ``lr`` × the watchdog's cut where one is held, as the run
            after the choice trains).
        verdict: ``"stable"``, ``"loss_rose"``, ``"grad_norm_grew"`` or ``"nonfinite"``.
        losses: the training loss of every step of the hold (after the warmup).
        grad_norms: the gradient norm of every step of the hold.
        rise: the loss's end level minus its start level; ``margin``: how far it could rise and still count
            as stable; ``growth``: the gradient norm's end level over its start level.
        drop: the restored state's loss level minus the hold's end level; ``drop_margin``: how far it had to
            drop to count as progress (see :func:`~lr_callbacks.finder.stability.hold_verdict`).
        skipped: the hold's steps (0-based) whose update mixed precision's ``GradScaler`` skipped; their gradient
            norms are left out of the verdict.
        steps: the optimizer steps the attempt ran, its warmup's and its hold's: fewer than the probe's
            ``warmup_steps + hold_steps`` when the loss turned NaN/inf (in the warmup too); ``None`` in a result
            saved before it was kept, whose count is the warmup's plus the hold's losses.
    """

    lr: float
    verdict: str
    losses: tuple[float, ...] = ()
    grad_norms: tuple[float, ...] = ()
    rise: float = math.nan
    margin: float = math.nan
    growth: float = math.nan
    drop: float = math.nan
    drop_margin: float = math.nan
    skipped: tuple[int, ...] = ()
    steps: int | None = None

    @property
    def hold(self) -> HoldVerdict:
        """The hold's verdict, as :func:`~lr_callbacks.finder.stability.hold_verdict` gave it."""
        return HoldVerdict(self.verdict, self.rise, self.margin, self.growth, self.drop, self.drop_margin)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "verdict": self.verdict,
            "losses": list(self.losses),
            "grad_norms": list(self.grad_norms),
            "rise": self.rise,
            "margin": self.margin,
            "growth": self.growth,
            "drop": self.drop,
            "drop_margin": self.drop_margin,
            "skipped": list(self.skipped),
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeAttempt:
        def number(key: str) -> float:
            value = data.get(key)
            return math.nan if value is None else float(value)

        return cls(
            float(data["lr"]),
            str(data["verdict"]),
            tuple(data.get("losses", ())),
            tuple(data.get("grad_norms", ())),
            number("rise"),
            number("margin"),
            number("growth"),
            number("drop"),
            number("drop_margin"),
            tuple(int(k) for k in data.get("skipped", ())),
            None if data.get("steps") is None else int(data["steps"]),
        )


@dataclass(frozen=True, eq=False)  # _Record's ==: NaN equal to NaN
class Probe(_Record):
    """The stability probe: each attempt replays ``warmup_steps`` of the run's warmup, then holds its LR for
    ``hold_steps``; an LR that was unstable, or stable without significant progress, is halved, at most twice,
    and the probe keeps the attempt :func:`~lr_callbacks.finder.stability.settle` picks.

    >>> rose = ProbeAttempt(1e-2, "loss_rose", (1.0,) * 20, rise=0.5, margin=0.1)
    >>> fell = ProbeAttempt(5e-3, "stable", (1.0,) * 20, rise=-0.5, margin=0.1, drop=0.5, drop_margin=0.1)
    >>> p = Probe(10, 20, (rose, fell))
    >>> p.lr, p.stable, p.steps
    (0.005, True, 60)
    """

    warmup_steps: int
    hold_steps: int
    attempts: tuple[ProbeAttempt, ...]

    @property
    def kept(self) -> ProbeAttempt:
        """The attempt the probe settled on."""
        return self.attempts[settle([a.hold for a in self.attempts])]

    @property
    def lr(self) -> float:
        """The LR the probe settled on."""
        return self.kept.lr

    @property
    def stable(self) -> bool:
        return self.kept.verdict == "stable"

    @property
    def steps(self) -> int:
        """The optimizer steps it ran (an attempt whose loss turned NaN/inf stopped there, in its warmup too: before,
        such an attempt was counted with its whole warmup)."""
        return sum(self.warmup_steps + len(a.losses) if a.steps is None else a.steps for a in self.attempts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "warmup_steps": self.warmup_steps,
            "hold_steps": self.hold_steps,
            "attempts": [a.to_dict() for a in self.attempts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Probe:
        attempts = tuple(ProbeAttempt.from_dict(a) for a in data["attempts"])
        return cls(int(data["warmup_steps"]), int(data["hold_steps"]), attempts)


@dataclass(frozen=True, eq=False)  # _Record's ==: NaN equal to NaN
class FinderResult(_Record):
    """One LR range test: the sweep's raw curve and what was concluded from it.

    Attributes:
        lrs: the reference group's LR at each step of the sweep (other groups kept their ratio to it).
        losses: the raw training loss of each step (mean over micro-batches, and over ranks).
        grad_norms: the gradient norm of each step, before clipping (after unscaling, with AMP).
        suggestion: the LR the analysis suggests, or ``None`` (see ``flags``).
        range: ``(lower, upper)``: from the steepest descent to the loss minimum; on a curve read as flat
            (``flat_curve``), ``(edge / 10, edge)``, ``edge`` where the loss's lasting rise begins; or ``None``.
        flags: the warnings of the analysis, the probe and the trials (names from ``ALL_FLAGS`` in
            ``lr_callbacks.finder.result``, which says what each means).
        method: the suggestion rule used.
        stop_reason: ``"completed"`` (all steps ran), ``"diverged"`` (the stop rule fired, or the loss
            became NaN/inf), ``"data_exhausted"`` (no complete optimizer step was left in the data) or
            ``"lr_overridden"`` (``optimizer.step()`` ran at another LR than the finder set: something in the step,
            such as a warmup by hand in the module's ``optimizer_step``, writes the LR; nothing is suggested).
        smoothed: the zero-lag smoothed loss at each step (NaN where not analysed).
        trials: the confirm trials, if confirm mode ran (every rung of the successive halving).
        global_step: the run's step when the finder ran, the step Lightning logs the run's metrics at: the
            trainer's ``global_step``, except with several optimizers stepped by hand, where ``global_step`` counts
            every optimizer's steps and this counts each training step once.
        epoch: the epoch at whose start it ran.
        probe: the stability probe of the suggestion, if it ran (see :class:`Probe`).
        choice: the LR the trials chose (``None`` without trials).
        seconds: the wall time the finder took (sweep, probe and trials).
        window: the smoothing window the analysis used (decades; ``suggest_lr``'s ``window``).
        start_val_loss: the validation loss of the state the trials started from (scored once, untrained): what
            every candidate of the last rung was compared with, ``trials_failed`` when all ended above it by more
            than 2 standard errors (or diverged); NaN when no trial ran, and in a result saved before it was kept.
        start_se: the standard error of ``start_val_loss`` (the spread between validation batches); NaN with it.

    >>> r = FinderResult(lrs=(1e-3, 1e-2), losses=(1.0, 0.5), grad_norms=(2.0, 1.0), suggestion=1e-2,
    ...                  range=(1e-3, 1e-2), flags=(), method="default", stop_reason="completed")
    >>> r.chosen_lr, FinderResult.from_dict(r.to_dict()) == r
    (0.01, True)
    >>> r.headline()
    "answer 0.01 (the sweep's suggestion 0.01, range 0.001 to 0.01, stopped: completed)"
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
    probe: Probe | None = None
    choice: float | None = None
    seconds: float = field(default=0.0, compare=False)  # wall time differs between identical runs
    window: float = DEFAULT_WINDOW
    start_val_loss: float = math.nan
    start_se: float = math.nan

    @property
    def chosen_lr(self) -> float | None:
        """The finder's answer, the LR it applies with ``apply=True``: the trials' choice when confirm mode ran,
        else the suggestion as the stability probe left it (halved when it was unstable), else the suggestion."""
        if self.choice is not None:
            return self.choice
        if "trials_failed" in self.flags:  # every candidate made things worse: none is applied
            return None
        finite = [t for t in self.trials if math.isfinite(t.val_loss)]
        if finite:
            return min(finite, key=lambda t: t.val_loss).lr
        if self.probe is not None and self.suggestion is not None:
            return self.probe.lr
        return self.suggestion

    @property
    def steps_spent(self) -> int:
        """Every optimizer step the finder ran: the sweep's, the probe's and the trials'."""
        probe = self.probe.steps if self.probe is not None else 0
        return len(self.lrs) + probe + sum(len(t.losses) for t in self.trials)

    def alternatives(self) -> dict[str, float | None]:
        """What every suggestion method (``METHODS``) gives on this curve, smoothed as the finder's was (before,
        at the default window whatever the finder's: the table read "default" unlike the suggestion above it). None
        when the step wrote over the sweep's LR (``lr_overridden``): nothing is suggested then."""
        if not self.lrs or self.stop_reason == "lr_overridden":
            return {}
        return {m: suggest_lr(self.lrs, self.losses, m, window=self.window).lr for m in METHODS}

    def headline(self) -> str:
        """The answer in one line: the chosen LR, the sweep's suggestion and range, why the sweep stopped, the
        flags."""
        span = f"{_fmt(self.range[0])} to {_fmt(self.range[1])}" if self.range else "none"
        flags = f"; flags: {', '.join(self.flags)}" if self.flags else ""
        return (
            f"answer {_fmt(self.chosen_lr)} (the sweep's suggestion {_fmt(self.suggestion)}, range {span}, "
            f"stopped: {self.stop_reason}{flags})"
        )

    def summary(self) -> str:
        """A markdown summary: the answer, the flags explained, the other methods, the trials and the state they
        started from."""
        lines = [
            f"**LR finder** at step {self.global_step} (epoch {self.epoch}): {len(self.lrs)} steps from "
            f"{_fmt(self.lrs[0] if self.lrs else None)} to {_fmt(self.lrs[-1] if self.lrs else None)}, "
            f"stopped: {self.stop_reason}.",
            "",
            f"- suggestion ({self.method}): **{_fmt(self.suggestion)}**",
            f"- range: {_fmt(self.range[0]) + ' to ' + _fmt(self.range[1]) if self.range else 'none'}",
        ]
        if self.probe is not None:
            held = ", ".join(f"{_fmt(a.lr)} {_held(a)}" for a in self.probe.attempts)
            lines.append(
                f"- stability probe ({self.probe.warmup_steps} warmup steps, then {self.probe.hold_steps} steps held): "
                f"{held}; answer **{_fmt(self.probe.lr)}**"
            )
        if "trials_failed" in self.flags:
            lines.append("- chosen after the trials: none, every candidate made things worse; nothing applied")
        elif self.trials:
            lines.append(f"- chosen after the trials: **{_fmt(self.chosen_lr)}**")
        elif "trials_skipped" in self.flags:  # with probe=False or a list of candidates, no probe ran
            spent = "the sweep and the probe took" if self.probe is not None else "the sweep left too little of"
            lines.append(f"- confirm trials: none, {spent} the budget; answer **{_fmt(self.chosen_lr)}**")
        lines.append(f"- cost: {self.steps_spent} optimizer steps, {self.seconds:.1f} s")
        for flag in self.flags:
            lines.append(f"- flag `{flag}`: {ALL_FLAGS.get(flag, '')}")
        alternatives = self.alternatives()
        if alternatives:
            lines += ["", "| method | LR |", "|---|---|"]
            lines += [f"| {name} | {_fmt(lr)} |" for name, lr in alternatives.items()]
        if self.trials:
            if not math.isnan(self.start_val_loss):  # what the trials were compared with (trials_failed: all above)
                lines += [
                    "",
                    f"The state the trials started from: validation loss {self.start_val_loss:.6g} "
                    f"± {self.start_se:.2g}.",
                ]
            lines += ["", "| trial | rung | steps | peak LR | validation loss | ± |", "|---|---|---|---|---|---|"]
            lines += [
                f"| {i} | {t.rung} | {len(t.losses)} | {_fmt(t.lr)} | {t.val_loss:.6g} | {t.se:.2g} |"
                for i, t in enumerate(self.trials)
            ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, floats and strings (for a checkpoint, or ``json``); :meth:`from_dict` gives back an equal
        result.

        NaN and inf stay floats, so that a round trip keeps them apart (the losses of a sweep that diverged, a
        trial's validation loss of inf). ``json.dumps`` writes them as ``NaN`` and ``Infinity``, which Python's
        ``json`` reads back but strict JSON does not allow: ``json.dumps(..., allow_nan=False)``, JavaScript or
        ``jq`` refuse them, even in a clean result, whose ``start_val_loss`` and ``start_se`` are NaN when no trial
        ran. For such a reader, write them as ``null`` (``benchmarks/_common.py``'s ``write_json`` does); that file
        is for reading, as :meth:`from_dict` takes floats.

        >>> import json
        >>> r = FinderResult(lrs=(1e-3, 1e-2), losses=(1.0, math.inf), grad_norms=(2.0, 1.0), suggestion=None,
        ...                  range=None, flags=("too_short", "nonfinite"), method="default", stop_reason="diverged")
        >>> FinderResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
        True
        >>> json.dumps(r.to_dict(), allow_nan=False)
        Traceback (most recent call last):
        ValueError: Out of range float values are not JSON compliant...
        """
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
            "trials": [t.to_dict() for t in self.trials],
            "global_step": self.global_step,
            "epoch": self.epoch,
            "probe": self.probe.to_dict() if self.probe is not None else None,
            "choice": self.choice,
            "seconds": self.seconds,
            "window": self.window,
            "start_val_loss": self.start_val_loss,
            "start_se": self.start_se,
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
            trials=tuple(Trial.from_dict(t) for t in data.get("trials", ())),
            global_step=int(data.get("global_step", 0)),
            epoch=int(data.get("epoch", 0)),
            probe=Probe.from_dict(data["probe"]) if data.get("probe") else None,
            choice=data.get("choice"),
            seconds=float(data.get("seconds", 0.0)),
            window=float(data.get("window", DEFAULT_WINDOW)),
            start_val_loss=_number(data.get("start_val_loss")),
            start_se=_number(data.get("start_se")),
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


def _number(value: Any) -> float:
    """A saved float, NaN where it is missing (a result saved before the field was kept) or ``None``."""
    return math.nan if value is None else float(value)


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def _held(attempt: ProbeAttempt) -> str:
    """A hold's verdict in words: a stable hold says whether the loss made significant progress."""
    if attempt.verdict != "stable":
        return attempt.verdict
    return "stable" if attempt.hold.progressed else "stable, no significant progress"


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
    if result.probe is not None and result.probe.lr != result.suggestion:
        markers.append(Marker(result.probe.lr, f"after the probe {_fmt(result.probe.lr)}", color="tab:orange"))
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
