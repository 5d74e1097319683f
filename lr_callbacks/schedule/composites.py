"""Composite schedules: phases in sequence, warm restarts, cyclical LR and one-cycle.

Each is a frozen dataclass over the shapes of :mod:`lr_callbacks.schedule.shapes`, closed-form in the step.

>>> wsd = Phases([Phase(Warmup(), "10 steps"), Phase(Constant(), "70%"), Phase(OneMinusSqrt(end=0.0))])
>>> [round(wsd(k, total_steps=100), 3) for k in (0, 9, 10, 79, 80, 90, 99)]
[0.1, 1.0, 1.0, 1.0, 1.0, 0.293, 0.025]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lr_callbacks.core.checks import check_bool, check_choice, check_int, check_number
from lr_callbacks.core.durations import Duration, Epochs, Run, RunFraction, Steps, is_zero, parse_duration
from lr_callbacks.schedule.shapes import (
    MAX_MULTIPLIER,
    Schedule,
    _first_over,
    _OutsideSpan,
    _refuse_growth,
    _Unbounded,
)

__all__ = ["CosineRestarts", "Cyclic", "OneCycle", "Phase", "Phases", "Reversed"]


@dataclass(frozen=True)
class Phase:
    """One phase of :class:`Phases`: a schedule that runs on its own clock for ``duration``.

    Args:
        schedule: the shape of this phase; its step 0 is the phase's first step.
        duration: how long the phase lasts (a :class:`~lr_callbacks.Duration` or a string such as
            ``"500 steps"``, ``"2 epochs"``, ``"5%"``), or ``None`` for what the other phases leave of the run.

    >>> print(Phase(Warmup(), "500 steps").describe())
    Warmup() for 500 steps
    """

    schedule: Schedule
    duration: Duration | str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"Phase: `schedule` must be a Schedule (e.g. Cosine()), got {self.schedule!r}")
        if self.duration is not None:
            object.__setattr__(self, "duration", parse_duration(self.duration, "duration"))

    def describe(self) -> str:
        length = "the rest of the run" if self.duration is None else self.duration.describe()  # type: ignore[union-attr]
        return f"{self.schedule.describe()} for {length}"


def _phase(index: int, item: object) -> Phase:
    """One item of ``Phases``'s list as a :class:`Phase`: one already, or a ``(schedule, duration)`` pair.

    Before, any other item was unpacked into ``Phase(*item)``: a bare schedule (``Phases([Warmup(), Cosine()])``)
    failed with "Phase() argument after * must be an iterable, not Warmup", a string with a count of arguments.

    Raises:
        TypeError: for an item that is neither; the message names it and shows the pair to write.
    """
    if isinstance(item, Phase):
        return item
    if isinstance(item, (tuple, list)) and len(item) in (1, 2):
        return Phase(*item)
    shown = item.describe() if isinstance(item, Schedule) else repr(item)
    example = shown if isinstance(item, Schedule) else "Cosine()"
    raise TypeError(
        f"Phases: `phases[{index}]` must be a Phase(schedule, duration) or a (schedule, duration) pair "
        f"(e.g. ({example}, '10%')), got {shown}"
    )


@dataclass(frozen=True)
class Phases(Schedule):
    """Phases in sequence, each on its own local clock (optax's ``join_schedules``).

    Warmup, then stable, then decay (WSD) is three phases. A phase holds its final value after its
    duration. One phase may be open-ended (``duration=None``): it fills what the others leave of the run,
    so ``[warmup "5%", stable None, decay "20%"]`` decays over the last fifth whatever the run's length.

    Each phase's length is rounded up on its own (``"5%"`` of a run is transformers' ``ceil`` of its
    ``warmup_ratio``). Where that would make phases that fit the run overrun it (``10%`` + ``70%`` + ``20%`` of
    15 steps: 2 + 11 + 3 steps), each phase ends instead at the rounded-up sum of the lengths so far (2 + 10 + 3):
    the first phase keeps its length, and the phases add up to the run.

    Args:
        phases: the phases, in order (:class:`Phase` objects, or ``(schedule, duration)`` pairs).

    Raises:
        ValueError: at construction for more than one open phase, or fractions of the run that add up to more than
            100%; at fit start, if the phases add up to more than the run.

    >>> warm_cos = Phases([(Warmup(), "4 steps"), (Cosine(end=0.1), None)])
    >>> [round(warm_cos(k, total_steps=8), 3) for k in range(9)]
    [0.25, 0.5, 0.75, 1.0, 1.0, 0.868, 0.55, 0.232, 0.1]
    """

    phases: tuple[Phase, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.phases, (Phase, Schedule)) or not isinstance(self.phases, Sequence):
            raise TypeError(f"Phases takes a list of Phase(schedule, duration), got {self.phases!r}")
        if not self.phases:
            raise ValueError("Phases needs at least one phase")
        phases = tuple(_phase(i, p) for i, p in enumerate(self.phases))
        open_phases = [i for i, p in enumerate(phases) if p.duration is None]
        if len(open_phases) > 1:
            raise ValueError(
                f"Phases: at most one phase may be open-ended (duration=None), but phases {open_phases} are; "
                "give all but one a duration, e.g. '10%'"
            )
        shares = [p.duration for p in phases if isinstance(p.duration, RunFraction)]
        total = sum(d.fraction for d in shares)
        if total > 1.0 + 1e-9:  # before, refused only at fit start: no run fits them
            parts = " + ".join(f"{d.fraction * 100:g}%" for d in shares)
            raise ValueError(
                f"Phases: the phases given as fractions of the run add up to more than the whole run ({parts} = "
                f"{total * 100:g}%); shorten them to 100% at most"
            )
        object.__setattr__(self, "phases", phases)

    def _open_index(self) -> int | None:
        return next((i for i, p in enumerate(self.phases) if p.duration is None), None)

    def _lengths(self, span: float | None, run: Run) -> tuple[float | None, ...]:
        """Each phase's length in steps; the last answer is kept for the same (immutable) ``run`` and ``span``,
        since the schedule is evaluated at every optimizer step of one run."""
        memo = self.__dict__.get("_last_lengths")
        if memo is not None and memo[0] is run and memo[1] == span:
            return memo[2]
        lengths: list[float | None] = [
            None if p.duration is None else float(p.duration.to_steps(run))  # type: ignore[union-attr]
            for p in self.phases
        ]
        fixed = [(i, p.duration) for i, p in enumerate(self.phases) if p.duration is not None]
        if span is not None and sum(lengths[i] or 0.0 for i, _ in fixed) > span:
            # rounded up one by one, phases that fit the run overran it (before, refused at fit start, for most
            # lengths of the run): round their boundaries instead
            exact = [_exact_steps(duration, run) for _, duration in fixed]  # type: ignore[arg-type]
            if sum(exact) <= span + 1e-9:
                for (i, _), length in zip(fixed, _rounded_at_boundaries(exact)):
                    lengths[i] = length
        index = self._open_index()
        if index is not None and span is not None:
            lengths[index] = max(span - sum(length for length in lengths if length is not None), 0.0)
        object.__setattr__(self, "_last_lengths", (run, span, tuple(lengths)))
        return tuple(lengths)

    def needs_span(self) -> bool:
        index = self._open_index()
        if index is None:
            return False
        return index < len(self.phases) - 1 or self.phases[index].schedule.needs_span()

    def co_schedules_momentum(self) -> bool:
        return any(p.schedule.co_schedules_momentum() for p in self.phases)

    def check(self, span: float | None, run: Run) -> None:
        if span is None and self.needs_span():
            super().check(span, run)
        lengths = self._lengths(span, run)
        fixed = sum(length for p, length in zip(self.phases, lengths) if p.duration is not None and length)
        if span is not None and fixed > span:
            parts = " + ".join(
                p.duration.describe()
                if isinstance(p.duration, Steps)
                else f"{p.duration.describe()} = {length:g} steps"  # type: ignore[union-attr]
                for p, length in zip(self.phases, lengths)
                if p.duration is not None
            )
            room = "the run has" if span == run.total_steps else "the enclosing phase has"
            raise ValueError(
                f"the phases add up to {fixed:g} steps ({parts}), but {room} {span:g} steps; "
                "shorten the phases or give them as fractions of the run (e.g. '10%')"
            )
        start = 0.0
        for i, (phase, length) in enumerate(zip(self.phases, lengths)):
            try:
                phase.schedule.check(length, run)
            except _OutsideSpan as error:  # a growth over a phase's span: say which phase, and the step of the run
                raise error.in_phase(f"phase {i + 1} of {len(self.phases)} ({phase.describe()})", start) from None
            start += length or 0.0

    def check_momentum(self, span: float | None, run: Run) -> None:
        start = 0.0
        for i, (phase, length) in enumerate(zip(self.phases, self._lengths(span, run))):
            try:
                phase.schedule.check_momentum(length, run)
            except _OutsideSpan as error:  # say which phase, and the step of the run
                raise error.in_phase(f"phase {i + 1} of {len(self.phases)} ({phase.describe()})", start) from None
            start += length or 0.0

    def _locate(self, step: int, span: float | None, run: Run) -> tuple[Phase, int, float | None]:
        start = 0.0
        lengths = self._lengths(span, run)
        last = len(self.phases) - 1
        for i, (phase, length) in enumerate(zip(self.phases, lengths)):
            if i == last or length is None or step < start + length:
                local = step - start
                if length is not None:
                    local = min(local, length)
                return phase, int(local), length
            start += length
        raise AssertionError("unreachable: the last phase always matches")

    def at(self, step: int, span: float | None, run: Run) -> float:
        phase, local, length = self._locate(step, span, run)
        return phase.schedule.at(local, length, run)

    def momentum_at(self, step: int, span: float | None, run: Run) -> float | None:
        phase, local, length = self._locate(step, span, run)
        return phase.schedule.momentum_at(local, length, run)

    def describe(self) -> str:
        return "Phases(" + "; ".join(p.describe() for p in self.phases) + ")"


def _exact_steps(duration: Duration, run: Run) -> float:
    """``duration`` in steps before it is rounded: a share of the run or a number of epochs as it is.

    >>> _exact_steps(RunFraction(0.1), Run(total_steps=15)), _exact_steps(Steps(4), Run(total_steps=15))
    (1.5, 4.0)
    """
    if isinstance(duration, RunFraction) and run.total_steps is not None:
        return duration.fraction * run.total_steps
    if isinstance(duration, Epochs) and run.steps_per_epoch is not None:
        return duration.epochs * run.steps_per_epoch
    return float(duration.to_steps(run))


def _rounded_at_boundaries(exact: Sequence[float]) -> list[float]:
    """Lengths that end where the running sums of ``exact`` end, rounded up: the first is ``exact[0]`` rounded up,
    and they add up to ``sum(exact)`` rounded up.

    >>> _rounded_at_boundaries([1.5, 10.5, 3.0])
    [2.0, 10.0, 3.0]
    """
    lengths, done, total = [], 0.0, 0.0
    for length in exact:
        total += length
        end = float(math.ceil(total - 1e-9))  # the tolerance RunFraction and Epochs round with
        lengths.append(end - done)
        done = end
    return lengths


@dataclass(frozen=True)
class Reversed(Schedule):
    """A schedule played backwards over its span: ``inner(n − k)``.

    A decay reversed is the matching warmup: ``Reversed(OneMinusSqrt())`` rises as ``1 − √(1 − p)``,
    transformers' ``1-sqrt`` warmup. A momentum that ``inner`` co-schedules (``OneCycle``, ``Cyclic``) is played
    backwards with its LR: ``inner``'s momentum at ``n − k``.

    >>> [Reversed(Linear(1.0, 0.0))(k, total_steps=100) for k in (0, 25, 100)]
    [0.0, 0.25, 1.0]
    """

    inner: Schedule

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Schedule):
            raise TypeError(f"Reversed: `inner` must be a Schedule, got {self.inner!r}")

    def needs_span(self) -> bool:
        return True

    def check(self, span: float | None, run: Run) -> None:
        super().check(span, run)
        try:
            self.inner.check(span, run)
        except _Unbounded as error:  # played backwards, the span's last value comes first: at step 0
            raise error.in_phase(self._backwards(), 0, step=0) from None

    def check_momentum(self, span: float | None, run: Run) -> None:
        try:
            self.inner.check_momentum(span, run)
        except _OutsideSpan as error:  # named at the step that plays the inner's step (its momentum oscillates)
            at = round(span) - error.step if span is not None else None
            raise error.in_phase(self._backwards(), 0, step=at) from None

    def co_schedules_momentum(self) -> bool:
        # before, not passed on: Reversed(OneCycle()) left the momentum as configure_optimizers set it
        return self.inner.co_schedules_momentum()

    def _backwards(self) -> str:
        return f"Reversed plays {self.inner.describe()} backwards, from the end of its span"

    def _inner_step(self, step: int, span: float | None) -> int:
        if span is None:
            raise ValueError("Reversed needs a span of known length")
        return max(round(span) - max(step, 0), 0)

    def at(self, step: int, span: float | None, run: Run) -> float:
        return self.inner.at(self._inner_step(step, span), span, run)

    def momentum_at(self, step: int, span: float | None, run: Run) -> float | None:
        return self.inner.momentum_at(self._inner_step(step, span), span, run)

    def describe(self) -> str:
        return f"Reversed({self.inner.describe()})"


@dataclass(frozen=True)
class CosineRestarts(Schedule):
    """Cosine annealing with warm restarts (SGDR): cosine cycles that restart at ``start``.

    Cycle ``i`` lasts ``period·period_mult^i`` steps and peaks at ``start·decay^i``; within it the
    multiplier is ``end + (start·decay^i − end)·½(1 + cos(π·t/T_i))``. After ``limit`` cycles it holds
    ``end``. Give either ``period`` (a duration) or ``cycles`` (equal cycles that fill the span, as
    transformers' ``cosine_with_restarts``; they may fall between steps).

    After its span (past the end of the run, or of its phase) it holds its value at the span's end; where the span
    ends exactly on a restart, that is the closing cycle's floor ``end``, not the next cycle's peak.

    Args:
        period: the first cycle's length.
        cycles: the number of equal cycles over the span (instead of ``period``).
        period_mult: each cycle is this much longer than the one before (torch's ``T_mult``, any float >= 1).
        decay: each cycle's peak is this fraction of the one before (timm's ``cycle_decay``).
        limit: the number of cycles after which the multiplier holds ``end`` (``None``: no limit;
            with ``cycles`` the limit is ``cycles``).
        start: the first cycle's peak multiplier.
        end: the floor, as a fraction of each group's peak.

    Cycles of 10, 20, 40 … steps restart at steps 0, 10, 30, 70 …:

    >>> sgdr = CosineRestarts(period="10 steps", period_mult=2.0)
    >>> [round(sgdr(k), 3) for k in (0, 5, 9, 10, 20, 29, 30)]
    [1.0, 0.5, 0.024, 1.0, 0.5, 0.006, 1.0]
    """

    period: Duration | str | None = None
    cycles: int | None = None
    period_mult: float = 1.0
    decay: float = 1.0
    limit: int | None = None
    start: float = 1.0
    end: float = 0.0

    def __post_init__(self) -> None:
        if (self.period is None) == (self.cycles is None):
            raise ValueError(
                "CosineRestarts needs exactly one of `period` (e.g. '1000 steps') or `cycles` (e.g. 3), "
                f"got period={self.period!r}, cycles={self.cycles!r}"
            )
        if self.period is not None:
            object.__setattr__(self, "period", parse_duration(self.period, "period"))
            if is_zero(self.period):  # type: ignore[arg-type]
                raise ValueError(
                    f"CosineRestarts: `period` must be longer than zero, got {self.period.describe()}; "  # type: ignore[union-attr]
                    "e.g. '1000 steps'"
                )
        if self.cycles is not None:
            check_int("cycles", self.cycles, low=1, owner="CosineRestarts")
            if self.period_mult != 1.0:
                raise ValueError(
                    f"CosineRestarts: `cycles` splits the span into equal cycles, so `period_mult` must be 1, "
                    f"got {self.period_mult!r}; give `period` instead to grow the cycles"
                )
        check_number("period_mult", self.period_mult, low=1.0, owner="CosineRestarts")
        check_number("decay", self.decay, low=0.0, owner="CosineRestarts")
        if self.limit is not None:
            check_int("limit", self.limit, low=1, owner="CosineRestarts")
        check_number("start", self.start, low=0.0, owner="CosineRestarts")
        check_number("end", self.end, low=0.0, owner="CosineRestarts")

    def needs_span(self) -> bool:
        return self.cycles is not None

    def check(self, span: float | None, run: Run) -> None:
        super().check(span, run)
        if self.period is not None and self.period.to_steps(run) <= 0:  # type: ignore[union-attr]
            raise ValueError(
                f"CosineRestarts: `period` must be at least one step, got {self.period.describe()} = 0 steps "  # type: ignore[union-attr]
                "for this run; give it in steps"
            )
        if self.decay > 1.0 and self.start > 0.0:
            cycle = _first_over(
                lambda i: self.start * self.decay**i, math.log(MAX_MULTIPLIER / self.start) / math.log(self.decay)
            )
            limit = self.limit if self.cycles is None else min(self.limit or self.cycles, self.cycles)
            first = None if limit is not None and cycle >= limit else self._cycle_begins(cycle, span, run)
            _refuse_growth(
                self,
                first,
                span,
                run,
                f"raises each cycle's peak by decay={self.decay!r}",
                f"use a decay of at most 1 or a `limit` of at most {cycle} cycles",
            )

    def _cycle_begins(self, index: int, span: float | None, run: Run) -> int | None:
        """The first step of cycle ``index`` (``None``: past any step a float counts)."""
        if self.cycles is not None:
            assert span is not None  # needs_span: Schedule.check refused a span of unknown length
            step = max(math.ceil(index * span / self.cycles) - 1, 0)
            while math.floor(step * self.cycles / span) < index:
                step += 1
            return step
        period = float(self.period.to_steps(run))  # type: ignore[union-attr]
        if self.period_mult == 1.0:
            return int(index * period)
        try:
            return math.ceil(_cycle_start(index, period, self.period_mult))
        except OverflowError:
            return None

    def at(self, step: int, span: float | None, run: Run) -> float:
        step = max(step, 0)
        limit = self.limit
        if self.cycles is not None:
            if span is None:
                raise ValueError("CosineRestarts(cycles=...) needs a span of known length")
            if span <= 0:
                return self.end
            u = step * self.cycles / span
            index, within = math.floor(u), u - math.floor(u)
            limit = self.cycles if limit is None else min(limit, self.cycles)
        else:
            period = float(self.period.to_steps(run))  # type: ignore[union-attr]
            mult = self.period_mult
            if mult == 1.0:
                index = math.floor(step / period)
                within = (step - index * period) / period
            else:
                index = _cycle_index(step, period, mult)
                length = mult**index * period
                within = (step - _cycle_start(index, period, mult)) / length
            if span is not None and step >= span and within == 0.0 and index > 0:
                index, within = index - 1, 1.0  # the span ends on a restart: hold the end of the cycle it closes
        if limit is not None and index >= limit:
            return self.end
        peak = self.start * self.decay**index
        return self.end + (peak - self.end) * 0.5 * (1.0 + math.cos(math.pi * within))


def _cycle_start(index: int, period: float, mult: float) -> float:
    """The first step of cycle ``index`` when cycle ``i`` lasts ``period·mult^i`` steps (``mult > 1``).

    ``period·(mult^i − 1)/(mult − 1)``, computed with ``expm1``/``log1p`` so that it stays accurate for a
    ``mult`` just above 1, and snapped to the nearest whole step when within float noise of it (the exact
    value is then that step: ``mult=10`` gives ``1.0000000000000002`` for ``1``).
    """
    start = period * math.expm1(index * math.log1p(mult - 1.0)) / (mult - 1.0)
    nearest = round(start)
    return float(nearest) if abs(start - nearest) <= 1e-9 * max(1.0, start) else start


def _cycle_index(step: int, period: float, mult: float) -> int:
    """The cycle that ``step`` falls in (``mult > 1``).

    The closed form ``⌊log_mult(1 + step·(mult − 1)/period)⌋`` can land one cycle short at a boundary
    (``math.log(1000, 10)`` is ``2.9999999999999996``), so it is corrected against the cycles' start steps.
    """
    index = max(math.floor(math.log1p(step * (mult - 1.0) / period) / math.log1p(mult - 1.0)), 0)
    while _cycle_start(index + 1, period, mult) <= step:
        index += 1
    while index > 0 and _cycle_start(index, period, mult) > step:
        index -= 1
    return index


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


@dataclass(frozen=True)
class Cyclic(Schedule):
    """Cyclical learning rates (Smith 2017), as torch's ``CyclicLR``, as multipliers of each group's peak.

    The multiplier climbs from ``low`` to ``high`` over ``up`` and falls back over ``down``:
    ``low + (high − low)·s·f``, with ``s`` the triangle wave and ``f`` the amplitude scale: 1
    (``triangular``), ``1/2^(cycle−1)`` (``triangular2``) or ``gamma^k`` (``exp_range``). With
    ``momentum=(base, max)`` the momentum (Adam ``beta1``) moves inversely: ``max − (max − base)·s·f``.

    The group's configured LR is torch's ``max_lr``; ``low`` is ``base_lr / max_lr``.

    Args:
        low: the multiplier at the bottom of each cycle.
        high: the multiplier at the top of each cycle.
        up: the length of the rising half.
        down: the length of the falling half (``None``: the same as ``up``).
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: the per-step amplitude factor in ``exp_range`` mode.
        momentum: ``(base_momentum, max_momentum)`` to co-schedule (``0 <= base <= max < 1``), or ``None``.

    Raises:
        ValueError: at construction, for a ``momentum`` not within ``0 <= base <= max < 1``; at fit start, for
            ``mode="exp_range"`` with ``gamma > 1`` over a span where the top of the cycles passes 10⁶ × the peak LR,
            or where the co-scheduled momentum falls below 0 (see :meth:`check_momentum`).

    >>> clr = Cyclic(low=0.1, up="4 steps")
    >>> [round(clr(k), 3) for k in range(9)]
    [0.1, 0.325, 0.55, 0.775, 1.0, 0.775, 0.55, 0.325, 0.1]
    """

    low: float = 0.1
    high: float = 1.0
    up: Duration | str = "2000 steps"
    down: Duration | str | None = None
    mode: str = "triangular"
    gamma: float = 1.0
    momentum: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_number("low", self.low, low=0.0, owner="Cyclic")
        check_number("high", self.high, low=0.0, owner="Cyclic")
        if self.high < self.low:
            raise ValueError(
                f"Cyclic: `high` must be >= `low`, got high={self.high}, low={self.low}; swap them or raise `high`"
            )
        object.__setattr__(self, "up", parse_duration(self.up, "up"))
        if is_zero(self.up):  # type: ignore[arg-type]
            raise ValueError(
                f"Cyclic: `up` must be longer than zero (the rising half of each cycle), got {self.up.describe()}; "  # type: ignore[union-attr]
                "e.g. '2000 steps'"
            )
        if self.down is not None:
            object.__setattr__(self, "down", parse_duration(self.down, "down"))
        check_choice("mode", self.mode, _CYCLIC_MODES, owner="Cyclic")
        check_number("gamma", self.gamma, low=0.0, low_open=True, owner="Cyclic")
        object.__setattr__(self, "momentum", _check_momentum(self.momentum, "Cyclic"))

    def _sizes(self, run: Run) -> tuple[int, int]:
        up = self.up.to_steps(run)  # type: ignore[union-attr]
        down = up if self.down is None else self.down.to_steps(run)  # type: ignore[union-attr]
        return up, down

    def check(self, span: float | None, run: Run) -> None:
        super().check(span, run)
        up, _ = self._sizes(run)
        if up <= 0:
            raise ValueError(
                f"Cyclic: `up` must be at least one step, got {self.up.describe()} = 0 steps for this run; "  # type: ignore[union-attr]
                "give it in steps"
            )
        if self.mode == "exp_range" and self.gamma > 1.0 and self.high > self.low:
            amplitude = self.high - self.low
            first = _first_over(
                lambda k: self.low + amplitude * self.gamma**k,
                math.log(MAX_MULTIPLIER / amplitude) / math.log(self.gamma),
            )
            _refuse_growth(
                self,
                first,
                span,
                run,
                f"scales its cycles by gamma={self.gamma!r} at each step (mode='exp_range')",
                "use a gamma of at most 1 (below 1, exp_range shrinks the cycles)",
                what="the top of its cycles",
            )

    def check_momentum(self, span: float | None, run: Run) -> None:
        """Also refuse, with ``mode="exp_range"`` and ``gamma > 1``, a span over which the momentum falls below 0.

        The momentum ``max − (max − base)·s·gamma^k`` is below 0 once ``s·gamma^k > max / (max − base)`` (9.5 for
        ``(0.85, 0.95)``), long before the top of the LR's cycles passes 10⁶ × the peak. In the other modes, and with
        ``gamma <= 1``, ``s·f <= 1`` keeps it within ``[base, max]``.

        Raises:
            ValueError: naming the step where the momentum falls below 0, its value there, and the fix.
        """
        if (
            self.momentum is None
            or self.mode != "exp_range"
            or self.gamma <= 1.0
            or self.momentum[0] == self.momentum[1]
        ):
            return
        base, top = self.momentum
        up, down = self._sizes(run)
        # no step before the first where (max − base)·gamma^k passes max can go below 0 (s <= 1); from there, s
        # reaches 1 within a cycle
        step = max(math.floor(math.log(top / (top - base)) / math.log(self.gamma)) - 1, 0)
        for k in range(step, step + up + down + 2):
            if span is not None and k > span:
                return
            value = self._momentum_at(k, run)
            if value < 0.0:
                shorter = f", or put it in a phase of at most {k - 1} steps" if k > 1 else ""
                fix = f"use a gamma of at most 1 (below 1, exp_range shrinks the cycles) or momentum=None{shorter}"
                raise _MomentumOut(self.describe(), self.gamma, k, value, span, fix)

    def _momentum_at(self, step: int, run: Run) -> float:
        """The co-scheduled momentum at ``step``; ``-inf`` where ``gamma^k`` overflows."""
        try:
            value = self.momentum_at(step, None, run)
        except OverflowError:
            return -math.inf
        assert value is not None  # only asked with a momentum
        return value

    def co_schedules_momentum(self) -> bool:
        return self.momentum is not None

    def _wave(self, step: int, run: Run) -> tuple[float, float]:
        up, down = self._sizes(run)
        total = float(up + down)
        ratio = up / total
        step = max(step, 0)
        cycle = math.floor(1 + step / total)
        x = 1.0 + step / total - cycle
        s = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        if self.mode == "triangular":
            f = 1.0
        elif self.mode == "triangular2":
            f = 0.5 ** (cycle - 1)  # 1 / 2.0 ** (cycle - 1) overflowed from cycle 1025 on
        else:
            f = self.gamma**step
        return s, f

    def at(self, step: int, span: float | None, run: Run) -> float:
        s, f = self._wave(step, run)
        return self.low + (self.high - self.low) * s * f

    def momentum_at(self, step: int, span: float | None, run: Run) -> float | None:
        if self.momentum is None:
            return None
        s, f = self._wave(step, run)
        base, top = self.momentum
        return top - (top - base) * s * f


_ANNEALS = ("cos", "linear")


@dataclass(frozen=True)
class OneCycle(Schedule):
    """The one-cycle policy (Smith & Topin 2018), as torch's ``OneCycleLR``, as multipliers of the peak.

    Two phases: from ``1/div_factor`` up to 1 until step ``pct_start·n − 1``, then down to
    ``1/(div_factor·final_div_factor)`` at step ``n − 1``. Three phases (``three_phase=True``): up, back
    down to ``1/div_factor`` by step ``2·pct_start·n − 2``, then down to the minimum. With
    ``momentum=(base, max)`` the momentum (Adam ``beta1``) moves inversely, from ``max`` to ``base`` and
    back. The group's configured LR is torch's ``max_lr``.

    Args:
        pct_start: the fraction of the span spent rising.
        div_factor: the start is ``1/div_factor`` of the peak.
        final_div_factor: the end is ``1/(div_factor·final_div_factor)`` of the peak.
        three_phase: use torch's three-phase variant.
        anneal: ``"cos"`` or ``"linear"``.
        momentum: ``(base_momentum, max_momentum)`` to co-schedule (``0 <= base <= max < 1``), or ``None``.

    Raises:
        ValueError: at construction, for a ``momentum`` not within ``0 <= base <= max < 1``; at fit start, where the
            rising phase is empty (``pct_start·n ≤ 1``: a run of 3 steps at the
            default 0.3). This differs from torch on purpose: there ``OneCycleLR`` divides by zero
            (``pct_start·n = 1``) or, below it, starts on the way down, past a peak it never reaches.

    >>> [round(OneCycle(momentum=None)(k, total_steps=10), 2) for k in range(10)]
    [0.04, 0.52, 1.0, 0.95, 0.81, 0.61, 0.39, 0.19, 0.05, 0.0]
    """

    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    anneal: str = "cos"
    momentum: tuple[float, float] | None = (0.85, 0.95)

    def __post_init__(self) -> None:
        check_number("pct_start", self.pct_start, low=0.0, high=1.0, low_open=True, owner="OneCycle")
        check_number("div_factor", self.div_factor, low=0.0, low_open=True, owner="OneCycle")
        check_number("final_div_factor", self.final_div_factor, low=0.0, low_open=True, owner="OneCycle")
        check_choice("anneal", self.anneal, _ANNEALS, owner="OneCycle")
        check_bool("three_phase", self.three_phase, owner="OneCycle")
        if self.three_phase and self.pct_start > 0.5:
            raise ValueError(
                f"OneCycle: with three_phase=True the rise and the fall back each take `pct_start` of the run, so "
                f"it must be <= 0.5, got {self.pct_start}; lower it (torch's default is 0.3)"
            )
        object.__setattr__(self, "momentum", _check_momentum(self.momentum, "OneCycle"))

    def needs_span(self) -> bool:
        return True

    def co_schedules_momentum(self) -> bool:
        return self.momentum is not None

    def check(self, span: float | None, run: Run) -> None:
        super().check(span, run)
        if span is not None and self.pct_start * span - 1 <= 0:
            raise ValueError(
                f"OneCycle: the rising phase is empty (pct_start={self.pct_start} of {span:g} steps); "
                "raise `pct_start` or lengthen the run"
            )

    def _phase(self, step: int, span: float | None) -> tuple[float, int, int]:
        """(progress in the phase, its start level, its end level), levels 0 = initial, 1 = max, 2 = min."""
        if span is None:
            raise ValueError("OneCycle needs a run of known length")
        n = float(span)
        if self.three_phase:
            ends = [self.pct_start * n - 1, 2 * self.pct_start * n - 2, n - 1]
            points = [(0, 1), (1, 0), (0, 2)]
        else:
            ends = [self.pct_start * n - 1, n - 1]
            points = [(0, 1), (1, 2)]
        begin = 0.0
        for i, end in enumerate(ends):
            if step <= end or i == len(ends) - 1:
                pct = (step - begin) / (end - begin) if end > begin else 1.0
                a, b = points[i]
                return min(max(pct, 0.0), 1.0), a, b
            begin = end
        raise AssertionError("unreachable")

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def at(self, step: int, span: float | None, run: Run) -> float:
        pct, a, b = self._phase(max(step, 0), span)
        levels = (1.0 / self.div_factor, 1.0, 1.0 / self.div_factor / self.final_div_factor)
        return self._anneal(levels[a], levels[b], pct)

    def momentum_at(self, step: int, span: float | None, run: Run) -> float | None:
        if self.momentum is None:
            return None
        pct, a, b = self._phase(max(step, 0), span)
        base, top = self.momentum
        levels = (top, base, top)
        return self._anneal(levels[a], levels[b], pct)


class _MomentumOut(_OutsideSpan):
    """``Cyclic(mode="exp_range", gamma > 1)``'s co-scheduled momentum falls below 0 at its own ``step``."""

    def __init__(self, shape: str, gamma: float, step: int, value: float, span: float | None, fix: str) -> None:
        super().__init__(shape, gamma, step, value, span, fix, step=step, span=span)
        self.shape, self.gamma, self.value, self.fix = shape, gamma, value, fix

    def __str__(self) -> str:
        where, at = self._located()
        return (
            f"{where}{self.shape} co-schedules the momentum (SGD's `momentum`, Adam's `betas[0]`) as "
            f"max − (max − base)·s·gamma^k with gamma={self.gamma!r} > 1 (mode='exp_range'), {self._spans()}: the "
            "momentum is "
            f"{self.value:.4g}, below 0, at {at}, and torch, which checks it only when the optimizer is built, trains "
            f"with it as written; {self.fix}"
        )


def _check_momentum(momentum: object, owner: str) -> tuple[float, float] | None:
    if momentum is None:
        return None
    if not isinstance(momentum, Sequence) or isinstance(momentum, str) or len(momentum) != 2:
        raise TypeError(f"{owner}: `momentum` must be a pair (base, max) or None, got {momentum!r}")
    base = check_number("momentum[0]", momentum[0], low=0.0, high=1.0, owner=owner)
    top = check_number("momentum[1]", momentum[1], low=0.0, high=1.0, owner=owner)
    if base > top:
        raise ValueError(f"{owner}: `momentum` is (base, max) with base <= max, got {momentum!r}")
    if top >= 1.0:  # before, taken: Adam with beta1 = 1 divided by zero at its first step (torch checks at build only)
        raise ValueError(
            f"{owner}: `momentum[1]` must be < 1 (SGD's `momentum` and Adam's `betas[0]` are in [0, 1); at 1 Adam "
            f"divides by zero and SGD never forgets a gradient), got {momentum!r}; e.g. (0.85, 0.95)"
        )
    return (base, top)
