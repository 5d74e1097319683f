"""Named schedules: the common recipes, each built by composing the shapes.

``preset(name, **kwargs)`` builds one; ``LRSchedule("cosine", warmup="5%")`` calls it. Every preset
takes the same warmup arguments:

- ``warmup``: its length (``"500 steps"``, ``"2 epochs"``, ``"5%"``), or ``None`` for no warmup;
- ``warmup_curve``: ``"linear"``, ``"cosine"`` or ``"exponential"`` (see :class:`~lr_callbacks.Warmup`);
- ``warmup_start``: the multiplier the warmup ramps from (its first step already trains above it).

>>> sorted(PRESETS)  # doctest: +NORMALIZE_WHITESPACE
['constant', 'cosine', 'cosine_restarts', 'cyclic', 'exponential', 'inverse_sqrt', 'linear',
 'multistep', 'one_cycle', 'polynomial', 'step', 'wsd']
>>> preset("cosine", warmup="10 steps", end=0.1)(10, total_steps=100)
1.0
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from lr_callbacks.core.checks import check_choice, check_number
from lr_callbacks.core.durations import Duration, is_zero, parse_duration
from lr_callbacks.schedule.composites import CosineRestarts, Cyclic, OneCycle, Phase, Phases
from lr_callbacks.schedule.shapes import (
    WARMUP_CURVES,
    Constant,
    Cosine,
    Exponential,
    InverseSqrt,
    Linear,
    MultiStep,
    OneMinusSqrt,
    Polynomial,
    Schedule,
    Step,
    Warmup,
)

__all__ = ["PRESETS", "preset"]

DurationLike = Duration | str


def _warmup(curve: str, start: float) -> Warmup:
    """``Warmup(curve, start)``, its arguments checked under the preset's names (``warmup_curve``, ``warmup_start``),
    with a fix a preset takes: before, the refusal named Warmup's own ``curve`` and ``start``, and suggested
    ``start=0.01``, which the preset refuses.

    Raises:
        ValueError: for an unknown curve, a negative start, or an exponential warmup from 0.
    """
    check_choice("warmup_curve", curve, WARMUP_CURVES, owner="LRSchedule")
    check_number("warmup_start", start, low=0.0, owner="LRSchedule")
    if start > 1.0:
        # before, taken: warmup_start=3 ran the "warmup" down from 3 times the peak (2.6x at step 0 of 5)
        raise ValueError(
            f"LRSchedule: `warmup_start` is the multiplier of each group's peak LR the warmup ramps up from, so at "
            f"most 1; got {start!r}, which would start the run above the peak. For a warmup from 10% of the peak "
            "write warmup_start=0.1"
        )
    if curve == "exponential" and start <= 0.0:
        raise ValueError(
            f"LRSchedule: an exponential warmup needs `warmup_start` > 0, got {start!r}; try warmup_start=0.01"
        )
    return Warmup(curve=curve, start=start)


def _refuse_warmup_shape_without_warmup(curve: str, start: float) -> None:
    """Refuse ``warmup_curve`` or ``warmup_start`` given without ``warmup``: they would shape no warmup.

    Raises:
        ValueError: naming what was given, and the fix.
    """
    given = [f"warmup_curve={curve!r}"] if curve != "linear" else []
    given += [f"warmup_start={start!r}"] if start != 0.0 else []
    if given:
        raise ValueError(
            f"LRSchedule: {' and '.join(given)} {'shape' if len(given) > 1 else 'shapes'} a warmup, but no "
            "`warmup` is given, so there is none; "
            "give its length too, e.g. warmup='5%', or leave them out"
        )


def _decay_to(end: float, name: str) -> float:
    """``end``, the floor a decaying preset ends at, refused above 1 (its other checks are the shape's).

    Raises:
        ValueError: for a floor above the peak, with the fix.
    """
    if isinstance(end, (int, float)) and not isinstance(end, bool) and end > 1.0:
        # before, taken: LRSchedule("cosine", end=10) (meant as 10%) climbed from the peak to 10 times it
        raise ValueError(
            f"LRSchedule: `end` is the floor the {name!r} schedule decays to, as a fraction of each group's peak LR, "
            f"so at most 1; got {end!r}, which would make it climb above the peak. For a floor of 10% of the peak "
            "write end=0.1 (the peak itself is the group's lr, or peak_lrs)"
        )
    return end


def _with_warmup(body: Schedule, warmup: DurationLike | None, curve: str, start: float) -> Schedule:
    if warmup is None:
        _refuse_warmup_shape_without_warmup(curve, start)
        return body
    return Phases((Phase(_warmup(curve, start), parse_duration(warmup, "warmup")), Phase(body)))


def constant(
    *, warmup: DurationLike | None = None, warmup_curve: str = "linear", warmup_start: float = 0.0
) -> Schedule:
    """The configured LR throughout, after an optional warmup."""
    return _with_warmup(Constant(), warmup, warmup_curve, warmup_start)


def linear(
    *,
    end: float = 0.0,
    warmup: DurationLike | None = None,
    warmup_curve: str = "linear",
    warmup_start: float = 0.0,
) -> Schedule:
    """Linear decay to ``end`` (a fraction of each group's peak) over the rest of the run."""
    return _with_warmup(Linear(1.0, _decay_to(end, "linear")), warmup, warmup_curve, warmup_start)


def cosine(
    *,
    end: float = 0.0,
    exponent: float = 1.0,
    k_decay: float = 1.0,
    warmup: DurationLike | None = None,
    warmup_curve: str = "linear",
    warmup_start: float = 0.0,
) -> Schedule:
    """Cosine decay to the floor ``end`` (a fraction of each group's peak)."""
    return _with_warmup(
        Cosine(1.0, _decay_to(end, "cosine"), exponent=exponent, k_decay=k_decay), warmup, warmup_curve, warmup_start
    )


def polynomial(
    *,
    end: float = 0.0,
    power: float = 1.0,
    warmup: DurationLike | None = None,
    warmup_curve: str = "linear",
    warmup_start: float = 0.0,
) -> Schedule:
    """Polynomial decay ``end + (1 − end)(1 − p)^power``."""
    return _with_warmup(Polynomial(1.0, _decay_to(end, "polynomial"), power=power), warmup, warmup_curve, warmup_start)


def exponential(
    *,
    end: float | None = None,
    gamma: float | None = None,
    warmup: DurationLike | None = None,
    warmup_curve: str = "linear",
    warmup_start: float = 0.0,
) -> Schedule:
    """Exponential decay: to ``end`` over the run, or by ``gamma`` per step (floored at ``end``)."""
    if end is not None:
        _decay_to(end, "exponential")
    if isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and gamma > 1.0:
        # before, taken: gamma=1.5 climbed above the peak from step 1, and 1.5^k overflowed (OverflowError) at
        # step 1751, at fit start already for a longer run, where the plan reads every step
        raise ValueError(
            f"LRSchedule: `gamma` is the factor the 'exponential' schedule decays by at each step, so at most 1; got "
            f"{gamma!r}, which would climb above the peak without bound. For a decay of 0.1% a step write gamma=0.999"
        )
    return _with_warmup(Exponential(1.0, end=end, gamma=gamma), warmup, warmup_curve, warmup_start)


def step(
    *,
    every: DurationLike = "1 epochs",
    gamma: float = 0.1,
    warmup: DurationLike | None = None,
    warmup_curve: str = "linear",
    warmup_start: float = 0.0,
) -> Schedule:
    """Multiply by ``gamma`` every ``every``."""
    return _with_warmup(Step(every, gamma), warmup, warmup_curve, warmup_start)


def multistep(
    *,
    milestones: Sequence[DurationLike] = (),
    gamma: float = 0.1,
    warmup: DurationLike | None = None,
    warmup_curve: str = "linear",
    warmup_start: float = 0.0,
) -> Schedule:
    """Multiply by ``gamma`` at each milestone (counted from the end of the warmup)."""
    return _with_warmup(MultiStep(milestones, gamma), warmup, warmup_curve, warmup_start)  # type: ignore[arg-type]


def inverse_sqrt(
    *,
    timescale: DurationLike | None = None,
    warmup: DurationLike | None = None,
    warmup_curve: str = "linear",
    warmup_start: float = 0.0,
) -> Schedule:
    """Inverse square root decay after the warmup; ``timescale`` defaults to the warmup's length, else 10,000 steps.

    The fallback is transformers' (``get_inverse_sqrt_schedule``): without a warmup (or with one of zero length, as
    transformers' ``num_warmup_steps=0``), a run much shorter than 10,000 steps barely decays; give ``timescale``
    for it."""
    if timescale is None:
        # before, warmup="0 steps" became a timescale of 0, refused as "`timescale` must be longer than zero"
        # though no timescale was given
        given = None if warmup is None else parse_duration(warmup, "warmup")
        timescale = given if given is not None and not is_zero(given) else "10000 steps"
    return _with_warmup(InverseSqrt(timescale), warmup, warmup_curve, warmup_start)


_DECAY_SHAPES = ("1-sqrt", "linear", "cosine")


def wsd(
    *,
    decay: DurationLike = "20%",
    decay_shape: str = "1-sqrt",
    end: float = 0.0,
    warmup: DurationLike | None = None,
    warmup_curve: str = "linear",
    warmup_start: float = 0.0,
) -> Schedule:
    """Warmup-stable-decay: hold the peak, then decay to ``end`` over the last ``decay`` of the run."""
    check_choice("decay_shape", decay_shape, _DECAY_SHAPES, owner="wsd")
    _decay_to(end, "wsd")
    shapes: dict[str, Schedule] = {
        "1-sqrt": OneMinusSqrt(1.0, end),
        "linear": Linear(1.0, end),
        "cosine": Cosine(1.0, end),
    }
    phases = [Phase(Constant(), None), Phase(shapes[decay_shape], parse_duration(decay, "decay"))]
    if warmup is None:
        # before, wsd alone took them without a word: LRSchedule("wsd", warmup_curve="cosine") ran no warmup
        _refuse_warmup_shape_without_warmup(warmup_curve, warmup_start)
    else:
        phases.insert(0, Phase(_warmup(warmup_curve, warmup_start), parse_duration(warmup, "warmup")))
    return Phases(tuple(phases))


def cosine_restarts(
    *,
    period: DurationLike | None = None,
    cycles: int | None = None,
    period_mult: float = 1.0,
    decay: float = 1.0,
    limit: int | None = None,
    end: float = 0.0,
    warmup: DurationLike | None = None,
    warmup_curve: str = "linear",
    warmup_start: float = 0.0,
) -> Schedule:
    """SGDR: cosine cycles with warm restarts (see :class:`~lr_callbacks.CosineRestarts`)."""
    _decay_to(end, "cosine_restarts")
    body = CosineRestarts(period=period, cycles=cycles, period_mult=period_mult, decay=decay, limit=limit, end=end)
    return _with_warmup(body, warmup, warmup_curve, warmup_start)


def cyclic(
    *,
    low: float = 0.1,
    up: DurationLike = "2000 steps",
    down: DurationLike | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    momentum: tuple[float, float] | None = None,
) -> Schedule:
    """Cyclical LR, as torch's ``CyclicLR`` (see :class:`~lr_callbacks.Cyclic`)."""
    return Cyclic(low=low, up=up, down=down, mode=mode, gamma=gamma, momentum=momentum)


def one_cycle(
    *,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    anneal: str = "cos",
    momentum: tuple[float, float] | None = (0.85, 0.95),
) -> Schedule:
    """One-cycle, as torch's ``OneCycleLR`` (see :class:`~lr_callbacks.OneCycle`)."""
    return OneCycle(
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
        anneal=anneal,
        momentum=momentum,
    )


PRESETS: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "linear": linear,
    "cosine": cosine,
    "polynomial": polynomial,
    "exponential": exponential,
    "step": step,
    "multistep": multistep,
    "inverse_sqrt": inverse_sqrt,
    "wsd": wsd,
    "cosine_restarts": cosine_restarts,
    "cyclic": cyclic,
    "one_cycle": one_cycle,
}


def preset(name: str, **kwargs: Any) -> Schedule:
    """Build the named schedule.

    Args:
        name: one of :data:`PRESETS` (``"cosine"``, ``"wsd"``, ``"one_cycle"``, …).
        **kwargs: the preset's arguments (see each preset's signature).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
        TypeError: for an argument the preset does not take (the message lists those it takes).

    >>> [round(preset("wsd", warmup="2 steps", decay="50%")(k, total_steps=10), 3) for k in range(10)]
    [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.553, 0.368, 0.225, 0.106]
    """
    check_choice("schedule", name, PRESETS, owner="preset")
    builder = PRESETS[name]
    accepted = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"the {name!r} schedule does not take {', '.join(map(repr, unknown))}; it takes: {', '.join(accepted)}"
        )
    return builder(**kwargs)
