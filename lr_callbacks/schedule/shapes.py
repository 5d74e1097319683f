"""Schedule shapes: pure, closed-form learning-rate multipliers.

A :class:`Schedule` maps an optimizer step to a multiplier of each parameter group's peak LR:
``lr(g, k) = peak(g) × schedule(k) × scale(g)``. Every shape is a frozen dataclass (picklable, hashable,
comparable), validated at construction, and a pure function of the step: no hidden counters, nothing
read back from the optimizer.

A shape fills a *span* of steps: the whole run, or one phase of :class:`~lr_callbacks.Phases`. Within a
span of ``n`` steps, step ``k`` has progress ``p = min(k / n, 1)``; at ``p = 1`` a shape holds its end
value, so past the end the LR never climbs again.

>>> Cosine()(50, total_steps=100)
0.5
>>> Linear(start=1.0, end=0.0)(25, total_steps=100)
0.75
>>> Cosine(end=0.1)(1000, total_steps=100)  # past the end: held at the floor
0.1
"""

from __future__ import annotations

import bisect
import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from lr_callbacks.core.checks import check_number, check_step
from lr_callbacks.core.durations import Duration, Epochs, Run, RunFraction, Steps, is_zero, parse_duration

__all__ = [
    "Constant",
    "Cosine",
    "Exponential",
    "InverseSqrt",
    "Linear",
    "MultiStep",
    "OneMinusSqrt",
    "Polynomial",
    "Schedule",
    "Step",
    "Warmup",
]


#: The largest multiplier of a group's peak LR that a shape growing step by step (``Exponential(gamma > 1)``,
#: ``Step(gamma > 1)``, ``MultiStep(gamma > 1)``, ``Cyclic(mode="exp_range", gamma > 1)``, ``CosineRestarts(decay >
#: 1)``) may reach within its span. Such a shape is fine in a short phase (a warmup that doubles the LR each step), but
#: over a long span its multiplier grows without bound, then stops being a finite float (``1.01^k`` overflows at
#: ``k = 71,333``). Its ``check`` refuses the span at fit start, naming the step where the multiplier passes this bound
#: (10⁶ × the peak: no LR schedule trains there, and it stays far below where a float, or a float32 LR, overflows).
MAX_MULTIPLIER = 1e6


class _OutsideSpan(ValueError):
    """A shape leaves what it may reach at ``step`` of its own span: its LR multiplier passes :data:`MAX_MULTIPLIER`
    (:class:`_Unbounded`), or its co-scheduled momentum leaves ``[0, 1)`` (``Cyclic``'s ``_MomentumOut``).

    :class:`~lr_callbacks.Phases` add their phase's start to ``offset`` and name the phase in ``where`` (outermost
    first), so the message gives the step of the run too.
    """

    def __init__(self, *args: object, step: int, span: float | None) -> None:
        super().__init__(*args)
        self.step, self.span = step, span
        self.offset = 0
        self.where: list[str] = []

    def in_phase(self, label: str, start: float, step: int | None = None) -> _OutsideSpan:
        """This error as seen from the enclosing span, where its phase ``label`` starts at step ``start`` (and, for a
        phase played backwards, passes the bound at its own ``step`` instead)."""
        error = copy.copy(self)
        error.offset = int(start) + (self.offset if step is None else step - self.step)
        error.where = [label, *self.where]
        return error

    def _located(self) -> tuple[str, str]:
        """The phases it is in ``"phase 2 of 2 (...): "``; and its step: ``"step 22 of the run (its own step 20)"``."""
        where = "".join(f"{label}: " for label in self.where)
        at = (
            f"step {self.offset + self.step} of the run (its own step {self.step})"
            if self.where
            else f"step {self.step}"
        )
        return where, at

    def _spans(self) -> str:
        return "and the run's length is unknown" if self.span is None else f"and it spans {self.span:g} steps"


class _Unbounded(_OutsideSpan):
    """A growing shape's multiplier passes :data:`MAX_MULTIPLIER` within its span, at its own ``step``."""

    def __init__(self, shape: str, growth: str, step: int, span: float | None, fix: str, what: str) -> None:
        super().__init__(shape, growth, step, span, fix, what, step=step, span=span)
        self.shape, self.growth, self.fix, self.what = shape, growth, fix, what

    def __str__(self) -> str:
        where, at = self._located()
        return (
            f"{where}{self.shape} {self.growth}, without bound, {self._spans()}: {self.what} passes "
            f"{MAX_MULTIPLIER:g} × the peak LR at {at}; {self.fix}"
        )


def _first_over(value_at: Callable[[int], float], guess: float) -> int:
    """The first ``k >= 0`` where ``value_at(k)``, non-decreasing in ``k``, passes :data:`MAX_MULTIPLIER` or stops
    being a finite float; ``guess`` (from logarithms) is within a step or two of it.

    >>> _first_over(lambda k: 10.0**k, guess=5.9)
    7
    """

    def over(k: int) -> bool:
        try:
            return not value_at(k) <= MAX_MULTIPLIER
        except OverflowError:
            return True

    k = max(math.floor(guess), 0)
    while k > 0 and over(k - 1):
        k -= 1
    while not over(k):
        k += 1
    return k


def _refuse_growth(
    schedule: Schedule,
    first: int | None,
    span: float | None,
    run: Run,
    growth: str,
    fix: str,
    what: str = "its multiplier",
) -> None:
    """Refuse ``schedule`` over a span of ``span`` steps if ``what`` passes :data:`MAX_MULTIPLIER` at step ``first``
    (``None``: never) within it; the step the span ends on counts where it is the value held after it.

    ``fix`` is completed with the longest phase that would fit: ``"use a smaller gamma"`` reads
    ``"use a smaller gamma, or put it in a phase of at most 99 steps"``.

    Raises:
        _Unbounded: naming the shape, how it grows, the step and the fix.
    """
    if first is None or (span is not None and first > span):
        return
    if span is not None and first == span:
        try:
            if schedule.at(first, span, run) <= MAX_MULTIPLIER:
                return
        except OverflowError:
            pass
    shorter = f", or put it in a phase of at most {first - 1} steps" if first > 1 else ""
    raise _Unbounded(schedule.describe(), growth, first, span, fix + shorter, what)


def progress(step: int, span: float | None) -> float:
    """``min(step / span, 1)``, with a zero-length span already at its end."""
    if span is None:
        raise ValueError("this shape needs a span of known length")
    if span <= 0:
        return 1.0
    return min(max(step, 0) / span, 1.0)


class Schedule(ABC):
    """A learning-rate multiplier as a pure function of the optimizer step.

    Subclasses implement :meth:`at`. Call a schedule directly to evaluate it over a whole run:
    ``schedule(step, total_steps=..., steps_per_epoch=...)``.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Halving(Schedule):
    ...     def at(self, step, span, run):
    ...         return 0.5 ** (step // 100)
    >>> Halving()(250)
    0.25
    """

    @abstractmethod
    def at(self, step: int, span: float | None, run: Run) -> float:
        """The multiplier at local ``step`` of a span ``span`` steps long.

        Args:
            step: the step within this schedule's span, 0-based.
            span: the span's length in steps, or ``None`` when it is open-ended.
            run: the run's total length and epoch length, to resolve durations.
        """

    def momentum_at(self, step: int, span: float | None, run: Run) -> float | None:
        """The momentum (or Adam ``beta1``) to co-schedule at ``step``, or ``None`` to leave it alone."""
        return None

    def needs_span(self) -> bool:
        """Whether :meth:`at` needs a span of known length (a shape defined by its progress)."""
        return False

    def needs_total(self) -> bool:
        """Whether resolving this schedule over a whole run needs the run's total length."""
        return self.needs_span() or self.durations_need_total()

    def durations(self) -> list[Duration]:
        """Every duration in this schedule: its own, its phases' lengths, and those of the schedules inside it.

        >>> [d.describe() for d in Phases([(Warmup(), "5%"), (Step("2 epochs"), None)]).durations()]
        ['0.05 of the run', '2 epochs']
        """
        found: list[Duration] = []
        for value in _field_values(self):
            if isinstance(value, Duration):
                found.append(value)
            elif isinstance(value, Schedule):
                found.extend(value.durations())
            else:  # a Phase: its length, then its schedule's durations
                duration, schedule = getattr(value, "duration", None), getattr(value, "schedule", None)
                if isinstance(duration, Duration):
                    found.append(duration)
                if isinstance(schedule, Schedule):
                    found.extend(schedule.durations())
        return found

    def durations_need_total(self) -> bool:
        """Whether a duration inside this schedule (a fraction of the run) needs the total, whatever its span.

        A shape that only needs its span (a cosine) needs no total inside a phase of fixed length.
        """
        return any(duration.needs_total() for duration in self.durations())

    def check(self, span: float | None, run: Run) -> None:
        """Check that this schedule fits a span of ``span`` steps of ``run``.

        A shape that grows at each step (``Exponential``, ``Step`` or ``MultiStep`` with ``gamma > 1``,
        ``Cyclic(mode="exp_range", gamma > 1)``, ``CosineRestarts(decay > 1)``) fits a span where its multiplier stays
        at most 10⁶ (× the peak LR); past it, it grows without bound, to where a float overflows.

        Raises:
            ValueError: naming what does not fit, and the fix; for a growing shape, the step (of the run, and of its
                phase) where its multiplier passes 10⁶.
        """
        if span is None and self.needs_span():
            raise ValueError(
                f"{self.describe()} needs a run of known length, but this run's length is unknown; "
                "set Trainer(max_steps=...) or choose a shape that needs no total (Constant, Step, "
                "MultiStep, InverseSqrt, Exponential(gamma=...))"
            )
        for value in _field_values(self):
            if isinstance(value, Duration):
                value.to_steps(run)

    def check_momentum(self, span: float | None, run: Run) -> None:
        """Check that the momentum this schedule co-schedules stays in ``[0, 1)`` over a span of ``span`` steps.

        torch checks SGD's ``momentum`` and Adam's ``betas[0]`` only when the optimizer is built; a value written
        after that is used as it is (Adam divides by zero at ``beta1 = 1``, and trains on with ``beta1 < 0``).
        A shape that co-schedules none has nothing to check.

        Raises:
            ValueError: naming the step (of the run, and of its phase) where the momentum leaves ``[0, 1)``, its
                value there, and the fix.
        """
        return  # a shape that co-schedules no momentum has none to check

    def co_schedules_momentum(self) -> bool:
        """Whether this schedule also sets the momentum (or Adam ``beta1``)."""
        return False

    def describe(self) -> str:
        """A short, readable form of this schedule."""
        parts = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value == f.default:
                continue
            shown = value.describe() if isinstance(value, (Duration, Schedule)) else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def multiplier(self, step: int, run: Run) -> float:
        """The multiplier at ``step`` of a whole ``run``; past the planned end it holds the end value.

        The one place where a run's step is clamped to its end and the schedule evaluated over the run.
        """
        return self.at(_clamped(step, run), run.total_steps, run)

    def momentum_for(self, step: int, run: Run) -> float | None:
        """The co-scheduled momentum at ``step`` of a whole ``run`` (``None`` if not co-scheduled), clamped alike."""
        return self.momentum_at(_clamped(step, run), run.total_steps, run)

    def __call__(self, step: int, total_steps: int | None = None, steps_per_epoch: int | None = None) -> float:
        """Evaluate over a whole run of ``total_steps`` optimizer steps; past the end, hold the end value.

        The preview of a schedule before a fit: ``step`` counts optimizer steps from 0.

        Raises:
            ValueError: for a negative or fractional ``step``, or no ``total_steps`` for a schedule that needs the
                run's length (a decay over the run, a duration in ``"%"``); or where a shape that grows each step has
                passed :data:`MAX_MULTIPLIER` by ``step``, as its :meth:`check` refuses it at fit start. Each names the
                fix.
        """
        step = check_step("step", step, owner=type(self).__name__)
        if total_steps is None and self.needs_total():
            raise ValueError(
                f"{self.describe()} needs the run's length to be evaluated: pass total_steps=N, the run's optimizer "
                f"steps (Lightning's trainer.estimated_stepping_batches), e.g. schedule({step}, total_steps=1000)"
            )
        run = Run(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
        try:
            value = self.multiplier(step, run)
        except OverflowError:
            self.check(total_steps, run)  # a growth past its bound: its fit-start refusal, not a traceback
            raise
        if not value <= MAX_MULTIPLIER:
            self.check(total_steps, run)
        return value


def _clamped(step: int, run: Run) -> int:
    return step if run.total_steps is None else min(step, run.total_steps)


def _field_values(schedule: Schedule) -> list[object]:
    values: list[object] = []
    for f in fields(schedule):  # type: ignore[arg-type]
        value = getattr(schedule, f.name)
        values.extend(value if isinstance(value, tuple) else [value])
    return values


@dataclass(frozen=True)
class Constant(Schedule):
    """A constant multiplier.

    Args:
        value: the multiplier, >= 0.

    >>> [Constant(0.5)(k) for k in (0, 10)]
    [0.5, 0.5]
    """

    value: float = 1.0

    def __post_init__(self) -> None:
        check_number("value", self.value, low=0.0, owner="Constant")

    def at(self, step: int, span: float | None, run: Run) -> float:
        return float(self.value)


@dataclass(frozen=True)
class _Ramp(Schedule):
    """A curve from ``start`` to ``end`` over its span; the end value is held after it."""

    start: float = 1.0
    end: float = 0.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_number("start", self.start, low=0.0, owner=name)
        check_number("end", self.end, low=0.0, owner=name)

    def needs_span(self) -> bool:
        return True


@dataclass(frozen=True)
class Linear(_Ramp):
    """A straight line: ``start + (end − start)·p``.

    Args:
        start: the multiplier at ``p = 0``.
        end: the multiplier at ``p = 1`` and after.

    >>> [Linear(0.0, 1.0)(k, total_steps=4) for k in range(5)]
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """

    def at(self, step: int, span: float | None, run: Run) -> float:
        return self.start + (self.end - self.start) * progress(step, span)


@dataclass(frozen=True)
class Cosine(_Ramp):
    """Cosine annealing with a floor: ``end + (start − end)·c(p)^exponent``, ``c(p) = ½(1 + cos(2π·cycles·p^k))``.

    With the defaults (``cycles=0.5``, ``k_decay=1``, ``exponent=1``) it is one half-period from
    ``start`` to ``end``. ``end`` is the floor as a fraction of each group's own peak.

    Args:
        start: the multiplier at ``p = 0``.
        end: the multiplier at ``p = 1`` (the floor); held after it.
        exponent: raises the cosine factor to this power (optax's ``exponent``); > 1 decays faster early.
        k_decay: k-decay (timm's ``k_decay``): the angle uses ``p^k``; > 1 keeps the LR high for longer.
        cycles: the number of periods over the span (transformers' ``num_cycles``); 0.5 is a half-cosine.

    Step 0 is ``start``, a third of the way is 0.75 of the way from ``end`` to ``start``, step ``n`` is ``end``:

    >>> [round(Cosine()(k, total_steps=3), 12) for k in (0, 1, 2, 3, 9)]
    [1.0, 0.75, 0.25, 0.0, 0.0]
    >>> Cosine(start=0.0, end=1.0)(50, total_steps=100)  # a cosine warmup
    0.5
    """

    exponent: float = 1.0
    k_decay: float = 1.0
    cycles: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("exponent", self.exponent, low=0.0, low_open=True, owner="Cosine")
        check_number("k_decay", self.k_decay, low=0.0, low_open=True, owner="Cosine")
        check_number("cycles", self.cycles, low=0.0, low_open=True, owner="Cosine")

    def at(self, step: int, span: float | None, run: Run) -> float:
        p = progress(step, span)
        factor = 0.5 * (1.0 + math.cos(math.pi * self.cycles * 2.0 * p**self.k_decay))
        return self.end + (self.start - self.end) * factor**self.exponent


@dataclass(frozen=True)
class Polynomial(_Ramp):
    """Polynomial decay: ``end + (start − end)·(1 − p)^power``.

    >>> [Polynomial(power=2.0)(k, total_steps=4) for k in (0, 2, 4, 9)]  # step 0, half way, the end, held
    [1.0, 0.25, 0.0, 0.0]
    """

    power: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("power", self.power, low=0.0, low_open=True, owner="Polynomial")

    def at(self, step: int, span: float | None, run: Run) -> float:
        return self.end + (self.start - self.end) * (1.0 - progress(step, span)) ** self.power


@dataclass(frozen=True)
class OneMinusSqrt(_Ramp):
    """The 1-sqrt cooldown (Hägele et al. 2024): ``end + (start − end)·(1 − √p)``.

    >>> [OneMinusSqrt()(k, total_steps=100) for k in (0, 25, 100, 200)]  # step 0, a quarter, the end, held
    [1.0, 0.5, 0.0, 0.0]
    """

    def at(self, step: int, span: float | None, run: Run) -> float:
        return self.end + (self.start - self.end) * (1.0 - math.sqrt(progress(step, span)))


@dataclass(frozen=True)
class Exponential(Schedule):
    """Exponential change, either over the span or per step.

    - With ``end`` (and no ``gamma``): geometric interpolation over the span, ``start·(end/start)^p``.
      This is also the exponential warmup: ``Exponential(start=0.01, end=1.0)``.
    - With ``gamma``: ``start·gamma^k`` per step, as torch's ``ExponentialLR``; needs no total. ``end``,
      if given, is then a floor (decay) or a ceiling (growth).

    Args:
        start: the multiplier at step 0, > 0.
        end: the multiplier at the end of the span (interpolation), or the bound (with ``gamma``).
        gamma: the factor per step, > 0.

    >>> [round(Exponential(start=1.0, end=0.01)(k, total_steps=100), 12) for k in (0, 50, 100, 150)]
    [1.0, 0.1, 0.01, 0.01]
    >>> [Exponential(gamma=0.5, end=0.2)(k) for k in (0, 1, 2, 3, 10)]  # floored at `end` from step 3
    [1.0, 0.5, 0.25, 0.2, 0.2]
    """

    start: float = 1.0
    end: float | None = None
    gamma: float | None = None

    def __post_init__(self) -> None:
        check_number("start", self.start, low=0.0, low_open=True, owner="Exponential")
        if self.end is None and self.gamma is None:
            raise ValueError(
                "Exponential needs `end` (interpolate over the span, e.g. end=0.01) or `gamma` (a factor per step, "
                "e.g. gamma=0.999), got neither"
            )
        if self.end is not None:
            check_number("end", self.end, low=0.0, low_open=self.gamma is None, owner="Exponential")
        if self.gamma is not None:
            check_number("gamma", self.gamma, low=0.0, low_open=True, owner="Exponential")
            if self.end is not None and self.gamma < 1.0 and self.end > self.start:
                raise ValueError(
                    f"Exponential: with gamma={self.gamma} < 1 the multiplier decays, so `end` is its floor and must "
                    f"be <= start={self.start}, got end={self.end}; lower `end`, or use gamma > 1 to grow towards it"
                )
            if self.end is not None and self.gamma > 1.0 and self.end < self.start:
                raise ValueError(
                    f"Exponential: with gamma={self.gamma} > 1 the multiplier grows, so `end` is its ceiling and "
                    f"must be >= start={self.start}, got end={self.end}; raise `end`, or use gamma < 1 to decay"
                )

    def needs_span(self) -> bool:
        return self.gamma is None

    def check(self, span: float | None, run: Run) -> None:
        """Also refuse a growth (``gamma > 1``) that passes :data:`MAX_MULTIPLIER` within the span.

        Raises:
            ValueError: as :meth:`Schedule.check`; or, with ``gamma > 1`` and no ``end`` at or below the bound, a
                span that reaches the step where ``start·gamma^k`` passes it (``gamma=1.01``: step 1389).
        """
        super().check(span, run)
        gamma = self.gamma
        if gamma is None or gamma <= 1.0 or (self.end is not None and self.end <= MAX_MULTIPLIER):
            return
        guess = math.log(MAX_MULTIPLIER / self.start) / math.log(gamma)
        first = _first_over(lambda k: self.at(k, None, run), guess)
        _refuse_growth(
            self,
            first,
            span,
            run,
            f"grows by gamma={gamma!r} at each step",
            "use a smaller gamma, give it an `end` (its ceiling, e.g. end=10.0)",
        )

    def at(self, step: int, span: float | None, run: Run) -> float:
        if self.gamma is None:
            assert self.end is not None  # guaranteed by __post_init__
            return self.start * (self.end / self.start) ** progress(step, span)
        try:
            value = self.start * self.gamma ** max(step, 0)
        except OverflowError:  # gamma > 1 far along: held at a ceiling `end`, else refused by check before a fit
            value = math.inf
        if self.end is None:
            return value
        return max(value, self.end) if self.gamma <= 1.0 else min(value, self.end)


WARMUP_CURVES = ("linear", "cosine", "exponential")


@dataclass(frozen=True)
class Warmup(Schedule):
    """A warmup that trains from its first step and reaches ``end`` on its last.

    Over a span of ``n`` steps, step ``k`` uses ``q = (k + 1) / n``, so step 0 is not wasted at LR 0
    (transformers' warmups run step 0 at LR 0) and the peak is reached on the warmup's last step:

    - ``linear``: ``start + (end − start)·q``
    - ``cosine``: ``start + (end − start)·½(1 − cos πq)``
    - ``exponential``: ``start·(end/start)^q``, which needs ``start > 0``.

    For the step-0-at-zero convention, use ``Linear(0.0, 1.0)`` as the warmup phase instead.

    Args:
        curve: ``"linear"``, ``"cosine"`` or ``"exponential"``.
        start: the multiplier the ramp starts from (reached at ``q = 0``, one step before the first).
        end: the multiplier reached on the last warmup step.

    >>> [Warmup()(k, total_steps=4) for k in range(5)]  # step 0 already trains; the last step is the peak
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """

    curve: str = "linear"
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if self.curve not in WARMUP_CURVES:
            raise ValueError(f"Warmup: unknown `curve` {self.curve!r}; choose one of {', '.join(WARMUP_CURVES)}")
        check_number("start", self.start, low=0.0, owner="Warmup")
        check_number("end", self.end, low=0.0, owner="Warmup")
        if self.curve == "exponential" and self.start <= 0.0:
            raise ValueError(f"Warmup: an exponential warmup needs `start` > 0, got {self.start!r}; try start=0.01")

    def needs_span(self) -> bool:
        return True

    def at(self, step: int, span: float | None, run: Run) -> float:
        if span is None:
            raise ValueError("Warmup needs a span of known length")
        q = 1.0 if span <= 0 else min((max(step, 0) + 1) / span, 1.0)
        if self.curve == "linear":
            return self.start + (self.end - self.start) * q
        if self.curve == "cosine":
            return self.start + (self.end - self.start) * 0.5 * (1.0 - math.cos(math.pi * q))
        return self.start * (self.end / self.start) ** q


@dataclass(frozen=True)
class Step(Schedule):
    """Step decay: ``gamma^⌊k / every⌋``, as torch's ``StepLR``.

    Args:
        every: the interval between decays (a :class:`~lr_callbacks.Duration` or a string such as
            ``"2 epochs"``).
        gamma: the factor at each decay.

    >>> [Step("10 steps", gamma=0.5)(k) for k in (0, 9, 10, 19, 20, 25)]
    [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """

    every: Duration | str = field(default_factory=lambda: parse_duration("1 epochs"))
    gamma: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "every", parse_duration(self.every, "every"))
        if is_zero(self.every):  # type: ignore[arg-type]
            raise ValueError(f"Step: `every` must be longer than zero, got {self.every.describe()}; e.g. '1 epochs'")  # type: ignore[union-attr]
        check_number("gamma", self.gamma, low=0.0, owner="Step")

    def check(self, span: float | None, run: Run) -> None:
        super().check(span, run)
        if self._every(run) <= 0:
            raise ValueError(
                f"Step: `every` must be at least one step, got {self.every.describe()} = 0 steps for this run; "  # type: ignore[union-attr]
                "give it in steps"
            )
        if self.gamma > 1.0:
            every = self._every(run)
            count = _first_over(lambda c: self.gamma**c, math.log(MAX_MULTIPLIER) / math.log(self.gamma))
            _refuse_growth(
                self,
                count * every,
                span,
                run,
                f"multiplies by gamma={self.gamma!r} every {self.every.describe()}",  # type: ignore[union-attr]
                "use a gamma of at most 1 (a decay), a smaller one or a longer `every`",
            )

    def _every(self, run: Run) -> int:
        assert isinstance(self.every, Duration)
        return self.every.to_steps(run)

    def at(self, step: int, span: float | None, run: Run) -> float:
        return float(self.gamma ** (max(step, 0) // max(self._every(run), 1)))


@dataclass(frozen=True)
class MultiStep(Schedule):
    """Multi-step decay: ``gamma^(number of milestones ≤ k)``, as torch's ``MultiStepLR``.

    Args:
        milestones: the steps at which the LR is multiplied by ``gamma``, in increasing order.
        gamma: the factor at each milestone.

    >>> [MultiStep(("10 steps", "20 steps"), gamma=0.5)(k) for k in (0, 9, 10, 19, 20)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    milestones: tuple[Duration | str, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.milestones, (str, Duration)) or not isinstance(self.milestones, Sequence):
            raise TypeError(
                f"MultiStep: `milestones` must be a sequence of durations, got {self.milestones!r}; "
                "write a list such as ['10 epochs', '20 epochs']"
            )
        if not self.milestones:
            raise ValueError("MultiStep: `milestones` must not be empty; for no decay use Constant()")
        parsed = tuple(parse_duration(m, "milestones") for m in self.milestones)
        object.__setattr__(self, "milestones", parsed)
        check_number("gamma", self.gamma, low=0.0, owner="MultiStep")
        amounts = [_amount(m) for m in parsed]
        if len({type(m) for m in parsed}) == 1 and amounts != sorted(amounts):  # one unit: the order is known now
            shown = ", ".join(m.describe() for m in parsed)
            raise ValueError(f"MultiStep: `milestones` must not decrease, got ({shown}); sort them")

    def _steps(self, run: Run) -> list[int]:
        return [m.to_steps(run) for m in self.milestones]  # type: ignore[union-attr]

    def check(self, span: float | None, run: Run) -> None:
        super().check(span, run)
        steps = self._steps(run)
        if steps != sorted(steps):
            raise ValueError(f"MultiStep: `milestones` must not decrease, got {steps} steps for this run; sort them")
        if self.gamma > 1.0:
            count = _first_over(lambda c: self.gamma**c, math.log(MAX_MULTIPLIER) / math.log(self.gamma))
            _refuse_growth(
                self,
                steps[count - 1] if count <= len(steps) else None,
                span,
                run,
                f"multiplies by gamma={self.gamma!r} at each of its {len(steps)} milestones",
                "use a smaller gamma or fewer milestones",
            )

    def at(self, step: int, span: float | None, run: Run) -> float:
        return float(self.gamma ** bisect.bisect_right(self._steps(run), step))


def _amount(duration: Duration) -> float:
    """The number in a duration, in its own unit (to compare durations of one unit)."""
    if isinstance(duration, Steps):
        return float(duration.steps)
    if isinstance(duration, Epochs):
        return duration.epochs
    if isinstance(duration, RunFraction):
        return duration.fraction
    return math.nan


@dataclass(frozen=True)
class InverseSqrt(Schedule):
    """Inverse square root decay: ``1 / √((k + τ) / τ)``, 1 at step 0; needs no total.

    Args:
        timescale: ``τ``, the steps over which the LR falls to ``1/√2``.

    >>> [InverseSqrt("100 steps")(k) for k in (0, 300, 800)]
    [1.0, 0.5, 0.3333333333333333]
    """

    timescale: Duration | str = field(default_factory=lambda: parse_duration("10000 steps"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "timescale", parse_duration(self.timescale, "timescale"))
        if is_zero(self.timescale):  # type: ignore[arg-type]
            raise ValueError(
                f"InverseSqrt: `timescale` must be longer than zero, got {self.timescale.describe()}; "  # type: ignore[union-attr]
                "e.g. '1000 steps'"
            )

    def _tau(self, run: Run) -> int:
        assert isinstance(self.timescale, Duration)
        return self.timescale.to_steps(run)

    def check(self, span: float | None, run: Run) -> None:
        super().check(span, run)
        if self._tau(run) <= 0:
            raise ValueError(
                f"InverseSqrt: `timescale` must be at least one step, got {self.timescale.describe()} = 0 steps "  # type: ignore[union-attr]
                "for this run; give it in steps"
            )

    def at(self, step: int, span: float | None, run: Run) -> float:
        tau = self._tau(run)
        return 1.0 / math.sqrt((max(step, 0) + tau) / tau)
