"""Properties of the schedule core over random valid shapes and compositions (hypothesis).

Bounded, monotone where it decays or warms, continuous at joins where the phases meet, deterministic
(no hidden counters), held after the end, and equal after pickling.
"""

from __future__ import annotations

import itertools
import math
import pickle
from dataclasses import dataclass

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_wsd_schedule,
)

from lr_callbacks import (
    Constant,
    Cosine,
    CosineRestarts,
    Cyclic,
    Exponential,
    InverseSqrt,
    Linear,
    MultiStep,
    OneCycle,
    OneMinusSqrt,
    Phase,
    Phases,
    Polynomial,
    Reversed,
    Run,
    RunFraction,
    Schedule,
    Step,
    Steps,
    Warmup,
)
from lr_callbacks.schedule.presets import PRESETS, preset
from lr_callbacks.schedule.shapes import WARMUP_CURVES

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
EPS = 1e-12

levels = st.floats(min_value=0.0, max_value=2.0, allow_nan=False)
positive_levels = st.floats(min_value=0.01, max_value=2.0, allow_nan=False)
powers = st.floats(min_value=0.5, max_value=4.0, allow_nan=False)
spans = st.integers(min_value=1, max_value=60)


@dataclass(frozen=True)
class Ramp:
    """A shape from ``start`` to ``end`` over its span, monotone in that direction."""

    schedule: Schedule
    start: float
    end: float


RAMP_KINDS = ("linear", "cosine", "polynomial", "1-sqrt", "exponential", "warmup", "reversed")


@st.composite
def ramps(
    draw: st.DrawFn, start: float | None = None, end: float | None = None, kinds: tuple[str, ...] = RAMP_KINDS
) -> Ramp:
    """A random monotone ramp (linear, cosine, polynomial, 1-sqrt, exponential, warmup or reversed).

    All but the warmup are at ``start`` on their first step; a warmup is there one step *before* its first
    (its first step already trains above ``start``), and at ``end`` on its last.
    """
    a = draw(positive_levels) if start is None else start
    b = draw(positive_levels) if end is None else end
    kind = draw(st.sampled_from(kinds))
    if kind == "linear":
        shape: Schedule = Linear(a, b)
    elif kind == "cosine":
        shape = Cosine(a, b, exponent=draw(powers), k_decay=draw(powers))
    elif kind == "polynomial":
        shape = Polynomial(a, b, power=draw(powers))
    elif kind == "1-sqrt":
        shape = OneMinusSqrt(a, b)
    elif kind == "exponential":
        shape = Exponential(start=a, end=b)
    elif kind == "warmup":
        shape = Warmup(draw(st.sampled_from(["linear", "cosine", "exponential"])), start=a, end=b)
    else:
        shape = Reversed(Linear(b, a))
    return Ramp(shape, a, b)


def values(schedule: Schedule, total: int, extra: int = 0, per_epoch: int | None = None) -> list[float]:
    return [schedule(k, total_steps=total, steps_per_epoch=per_epoch) for k in range(total + 1 + extra)]


def is_monotone(xs: list[float], direction: int) -> bool:
    return all(direction * (b - a) >= -EPS for a, b in itertools.pairwise(xs))


@SETTINGS
@given(ramp=ramps(), total=spans)
def test_ramps_stay_between_their_ends_and_move_one_way(ramp: Ramp, total: int) -> None:
    xs = values(ramp.schedule, total, extra=5)
    low, high = min(ramp.start, ramp.end), max(ramp.start, ramp.end)
    assert all(low - EPS <= x <= high + EPS for x in xs)
    assert is_monotone(xs, 1 if ramp.end >= ramp.start else -1)
    assert xs[total:] == pytest.approx([ramp.end] * 6, abs=1e-12)  # the end value, held


@st.composite
def chains(draw: st.DrawFn) -> tuple[Phases, list[Ramp], list[int]]:
    """Phases of random ramps that meet: each starts at the value where the one before ends."""
    count = draw(st.integers(min_value=2, max_value=4))
    points = draw(st.lists(positive_levels, min_size=count + 1, max_size=count + 1))
    pieces = [draw(ramps(start=a, end=b)) for a, b in itertools.pairwise(points)]
    lengths = draw(st.lists(st.integers(min_value=1, max_value=30), min_size=count, max_size=count))
    phases = Phases(tuple(Phase(p.schedule, Steps(n)) for p, n in zip(pieces, lengths)))
    return phases, pieces, lengths


@SETTINGS
@given(chain=chains())
def test_phases_are_bounded_and_continuous_where_they_meet(chain: tuple[Phases, list[Ramp], list[int]]) -> None:
    phases, pieces, lengths = chain
    total = sum(lengths)
    run = Run(total_steps=total)
    xs = values(phases, total, extra=3)
    ends = [p.start for p in pieces] + [pieces[-1].end]
    assert all(min(ends) - EPS <= x <= max(ends) + EPS for x in xs)
    boundary = 0
    for piece, length in zip(pieces, lengths):
        # Within its phase each piece runs on its own clock from 0 ...
        assert xs[boundary : boundary + length] == pytest.approx(
            [piece.schedule.at(k, length, run) for k in range(length)], abs=EPS
        )
        boundary += length
    # ... and across each join the composite moves only by the shapes' own steps: the last step of the phase
    # before (to where it would have gone next, which is where the next one starts), plus for a warmup after
    # the join its own first step (a warmup's first step already trains above its start).
    joins = list(itertools.accumulate(lengths))[:-1]
    for join, before, after, length, next_length in zip(joins, pieces, pieces[1:], lengths, lengths[1:]):
        own = before.schedule.at(length, length, run) - before.schedule.at(length - 1, length, run)
        own += after.schedule.at(0, next_length, run) - after.start if isinstance(after.schedule, Warmup) else 0.0
        assert xs[join] - xs[join - 1] == pytest.approx(own, abs=1e-9), f"join at step {join}"
    assert xs[total:] == pytest.approx([pieces[-1].end] * 4, abs=EPS)


@SETTINGS
@given(
    start=positive_levels,
    end=positive_levels,
    power=st.floats(min_value=0.5, max_value=4.0),
    kind=st.sampled_from(["linear", "cosine", "polynomial", "1-sqrt", "warmup"]),
)
def test_joins_are_continuous_as_the_phases_lengthen(start: float, end: float, power: float, kind: str) -> None:
    """With long phases the step across a join shrinks towards zero: no jump is built into the join."""
    first = {
        "linear": Linear(start, end),
        "cosine": Cosine(start, end),
        "polynomial": Polynomial(start, end, power=power),
        "1-sqrt": OneMinusSqrt(start, end),
        "warmup": Warmup(start=start, end=end),
    }[kind]
    n = 20_000
    joined = Phases([(first, Steps(n)), (Constant(end), None)])
    jump = abs(joined(n, total_steps=2 * n) - joined(n - 1, total_steps=2 * n))
    assert jump <= 0.01 * abs(start - end) + EPS


@SETTINGS
@given(
    warm=st.integers(min_value=1, max_value=20),
    decay=st.integers(min_value=1, max_value=40),
    peak=positive_levels,
    data=st.data(),
)
def test_warmup_then_decay_rises_to_the_peak_then_never_climbs(
    warm: int, decay: int, peak: float, data: st.DataObject
) -> None:
    floor = data.draw(st.floats(min_value=0.0, max_value=peak))
    up = data.draw(ramps(start=data.draw(st.floats(min_value=0.01, max_value=peak)), end=peak))
    no_warmup = tuple(k for k in RAMP_KINDS if k != "warmup")  # a decay that starts at the peak on its first step
    down = data.draw(ramps(start=peak, end=max(floor, 0.01 * peak), kinds=no_warmup))
    schedule = Phases([(up.schedule, Steps(warm)), (down.schedule, None)])
    total = warm + decay
    xs = values(schedule, total, extra=10)
    assert is_monotone(xs[:warm], 1) and is_monotone(xs[warm:], -1)
    assert max(xs) == pytest.approx(peak, abs=1e-12)
    assert xs[total:] == pytest.approx([xs[total]] * 11, abs=0.0)  # past the end: held, never climbing again


@st.composite
def any_schedule(draw: st.DrawFn) -> Schedule:
    """A random valid schedule of any kind, possibly composed."""
    kind = draw(st.sampled_from(["ramp", "step", "multistep", "inverse_sqrt", "restarts", "cyclic", "one_cycle"]))
    if kind == "ramp":
        return draw(ramps()).schedule
    if kind == "step":
        return Step(Steps(draw(st.integers(1, 10))), gamma=draw(st.floats(0.0, 1.0)))
    if kind == "multistep":
        marks = sorted(draw(st.lists(st.integers(0, 40), min_size=1, max_size=4)))
        return MultiStep(tuple(Steps(m) for m in marks), gamma=draw(st.floats(0.0, 1.0)))
    if kind == "inverse_sqrt":
        return InverseSqrt(Steps(draw(st.integers(1, 50))))
    if kind == "restarts":
        return CosineRestarts(
            Steps(draw(st.integers(1, 12))),
            period_mult=draw(st.floats(1.0, 3.0)),
            decay=draw(st.floats(0.1, 1.0)),
            start=draw(positive_levels),
            end=draw(st.floats(0.0, 0.5)),
        )
    if kind == "cyclic":
        low = draw(st.floats(0.0, 1.0))
        return Cyclic(
            low=low,
            high=low + draw(st.floats(0.0, 1.0)),
            up=Steps(draw(st.integers(1, 8))),
            down=Steps(draw(st.integers(0, 8))),
            mode=draw(st.sampled_from(["triangular", "triangular2", "exp_range"])),
            gamma=draw(st.floats(0.5, 1.0)),
            momentum=(0.8, 0.9),
        )
    return OneCycle(
        pct_start=draw(st.floats(0.3, 0.5)),
        div_factor=draw(st.floats(2.0, 50.0)),
        three_phase=draw(st.booleans()),
        anneal=draw(st.sampled_from(["cos", "linear"])),
    )


@st.composite
def maybe_composed(draw: st.DrawFn) -> Schedule:
    first = draw(any_schedule())
    if not draw(st.booleans()):
        return first
    return Phases([(draw(ramps()).schedule, Steps(draw(st.integers(1, 10)))), (first, None)])


@SETTINGS
@given(schedule=maybe_composed(), total=st.integers(min_value=20, max_value=60))
def test_deterministic_without_hidden_counters_and_held_after_the_end(schedule: Schedule, total: int) -> None:
    forward = values(schedule, total, extra=20)
    backward = [schedule(k, total_steps=total) for k in reversed(range(total + 21))][::-1]
    assert forward == backward  # same floats in any order of evaluation: a pure function of the step
    assert all(math.isfinite(x) and x >= 0.0 for x in forward)
    assert forward[total:] == [forward[total]] * 21  # never climbs (or moves at all) past the end


@SETTINGS
@given(schedule=maybe_composed(), total=st.integers(min_value=20, max_value=60))
def test_pickles_to_an_equal_schedule_with_equal_values(schedule: Schedule, total: int) -> None:
    restored = pickle.loads(pickle.dumps(schedule))
    assert restored == schedule and hash(restored) == hash(schedule)
    assert values(restored, total) == values(schedule, total)
    run = Run(total_steps=total)
    assert [restored.momentum_at(k, total, run) for k in range(total)] == [
        schedule.momentum_at(k, total, run) for k in range(total)
    ]


@SETTINGS
@given(
    start=positive_levels,
    end=st.floats(0.0, 0.5),
    decay=st.floats(0.1, 1.0),
    data=st.data(),
)
def test_other_shapes_stay_within_their_levels(start: float, end: float, decay: float, data: st.DataObject) -> None:
    total = 80
    step = Step(Steps(data.draw(st.integers(1, 10))), gamma=data.draw(st.floats(0.0, 1.0)))
    assert all(0.0 <= x <= 1.0 for x in values(step, total)) and is_monotone(values(step, total), -1)
    inverse = InverseSqrt(Steps(data.draw(st.integers(1, 50))))
    assert all(0.0 < x <= 1.0 for x in values(inverse, total)) and is_monotone(values(inverse, total), -1)
    restarts = CosineRestarts(Steps(data.draw(st.integers(1, 12))), decay=decay, start=start, end=end)
    assert all(min(end, start * decay**total) - EPS <= x <= max(start, end) + EPS for x in values(restarts, total))
    low = data.draw(st.floats(0.0, 1.0))
    high = low + data.draw(st.floats(0.0, 1.0))
    cyclic = Cyclic(low=low, high=high, up=Steps(data.draw(st.integers(1, 8))), mode="triangular2")
    assert all(low - EPS <= x <= high + EPS for x in values(cyclic, total))
    one_cycle = OneCycle(div_factor=data.draw(st.floats(2.0, 50.0)), three_phase=data.draw(st.booleans()))
    xs = values(one_cycle, total)
    assert min(xs) >= 1 / one_cycle.div_factor / one_cycle.final_div_factor - EPS and max(xs) <= 1.0 + EPS


@SETTINGS
@given(
    period=st.integers(1, 20),
    mult=st.sampled_from([1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 10.0]),
    steps=st.integers(50, 400),
)
def test_restart_cycles_start_where_the_cycle_lengths_add_up(period: int, mult: float, steps: int) -> None:
    """Against torch's iterative bookkeeping (T_cur, T_i): no cycle slips at a boundary through log rounding."""
    restarts = CosineRestarts(Steps(period), period_mult=mult)
    t_cur, t_i = 0.0, float(period)
    for k in range(steps):
        expected = 0.5 * (1.0 + math.cos(math.pi * t_cur / t_i))
        assert restarts(k) == pytest.approx(expected, abs=1e-9), f"step {k}"
        t_cur += 1.0
        if t_cur >= t_i:
            t_cur -= t_i
            t_i *= mult


@SETTINGS
@given(up=st.integers(1, 8), down=st.integers(0, 8), low=st.floats(0.0, 1.0))
def test_triangular_cycles_repeat_exactly(up: int, down: int, low: float) -> None:
    cyclic = Cyclic(low=low, up=Steps(up), down=Steps(down))
    period = up + down
    xs = [cyclic(k) for k in range(4 * period)]
    assert xs[period:] == pytest.approx(xs[:-period], abs=1e-12)
    assert xs[0] == pytest.approx(low)
    if down:  # with no falling half it is a sawtooth, reset to `low` before it reaches `high` (as torch's)
        assert xs[up] == pytest.approx(1.0)


def test_restart_cycles_growing_by_a_hair_behave_like_equal_cycles() -> None:
    equal = CosineRestarts("10 steps")
    grown = CosineRestarts("10 steps", period_mult=1.0 + 1e-12)
    assert [grown(k) for k in range(1000)] == pytest.approx([equal(k) for k in range(1000)], abs=1e-6)


# Every preset, through ``preset(...)`` as LRSchedule builds it.

DECAYING_PRESETS = ("constant", "linear", "cosine", "polynomial", "exponential", "step", "multistep", "inverse_sqrt")


@st.composite
def presets(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    """A preset's name and random valid arguments, with a warmup in steps, epochs or % (or none) where it takes one."""
    name = draw(st.sampled_from(sorted(PRESETS)))
    end = draw(st.floats(0.0, 1.0))
    kwargs: dict[str, object] = {
        "linear": {"end": end},
        "cosine": {"end": end, "exponent": draw(powers), "k_decay": draw(powers)},
        "polynomial": {"end": end, "power": draw(powers)},
        "exponential": draw(st.sampled_from([{"end": max(end, 1e-3)}, {"gamma": draw(st.floats(0.5, 1.0))}])),
        "step": {"every": f"{draw(st.integers(1, 9))} steps", "gamma": draw(st.floats(0.0, 1.0))},
        "multistep": {
            "milestones": [f"{m} steps" for m in sorted(draw(st.lists(st.integers(1, 90), min_size=1, max_size=3)))]
        },
        "inverse_sqrt": {},
        "wsd": {"decay": f"{draw(st.integers(0, 40))}%", "decay_shape": draw(st.sampled_from(["1-sqrt", "linear"]))},
        "cosine_restarts": {"period": f"{draw(st.integers(1, 20))} steps", "period_mult": draw(st.floats(1.0, 3.0))},
        "cyclic": {"low": end, "up": f"{draw(st.integers(1, 9))} steps", "mode": "triangular2"},
        "one_cycle": {"pct_start": draw(st.floats(0.1, 0.5)), "three_phase": draw(st.booleans())},
        "constant": {},
    }[name]
    if name not in ("cyclic", "one_cycle") and draw(st.booleans()):
        kwargs["warmup"] = draw(st.sampled_from(["1 steps", "7 steps", "1 epochs", "2.5 epochs", "5%", "60%", "100%"]))
        kwargs["warmup_curve"] = draw(st.sampled_from(WARMUP_CURVES))
        kwargs["warmup_start"] = draw(st.floats(0.01, 1.0))
    return name, kwargs


@settings(max_examples=80, deadline=None, derandomize=True)
@given(chosen=presets(), total=st.integers(1, 120), per_epoch=st.integers(1, 13))
@example(  # found in a full run: a warmup of 100% and a WSD decay of 1%, refused at construction
    chosen=("wsd", {"decay": "1%", "decay_shape": "1-sqrt", "warmup": "100%", "warmup_start": 1.0}),
    total=9,
    per_epoch=1,
)
def test_every_preset_is_finite_non_negative_and_never_above_the_peak(
    chosen: tuple[str, dict[str, object]], total: int, per_epoch: int
) -> None:
    """Over any run it fits (1-step runs and a warmup as long as the run included), a preset's multiplier is a finite
    number in [0, 1] at every step and past the end; a warmup reaches the peak (1) on its last step."""
    name, kwargs = chosen
    run = Run(total_steps=total, steps_per_epoch=per_epoch)
    try:
        # fractions of the run over 100% (a warmup of 100% and a WSD decay) are refused at construction; a run too
        # short for the phases at fit start, with their lengths
        schedule = preset(name, **kwargs)
        schedule.check(total, run)
    except ValueError as refused:
        assert "add up to" in str(refused) or "rising phase is empty" in str(refused), str(refused)
        return
    xs = [schedule.multiplier(k, run) for k in range(total + 3)]
    assert all(math.isfinite(x) and 0.0 <= x <= 1.0 + EPS for x in xs), xs
    if "warmup" in kwargs:
        assert isinstance(schedule, Phases)
        warm = schedule._lengths(total, run)[0]
        assert warm is not None
        if warm:
            assert xs[int(warm) - 1] == pytest.approx(1.0, abs=1e-12)
    elif name in DECAYING_PRESETS or name in ("wsd", "cosine_restarts"):
        assert xs[0] == 1.0


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(sorted(set(PRESETS) - {"cyclic", "one_cycle"})),
    per_epoch=st.integers(1, 12),
    epochs=st.integers(1, 10),
    data=st.data(),
)
def test_a_warmup_in_percent_steps_or_epochs_resolves_the_same_curve(
    name: str, per_epoch: int, epochs: int, data: st.DataObject
) -> None:
    """``"10%"`` of 1000 steps is ``"100 steps"`` is one epoch of 100: the same curve, float for float."""
    total = per_epoch * epochs
    warm_epochs = data.draw(st.integers(0, epochs))
    required = {"exponential": {"end": 0.01}, "multistep": {"milestones": ["3 steps"]}}
    required |= {"cosine_restarts": {"period": "4 steps"}, "wsd": {"decay": "0 steps"}}
    kwargs = required.get(name, {})
    run = Run(total_steps=total, steps_per_epoch=per_epoch)
    curves = []
    for warmup in (f"{warm_epochs * per_epoch} steps", f"{warm_epochs} epochs", RunFraction(warm_epochs / epochs)):
        schedule = preset(name, warmup=warmup, **kwargs)
        schedule.check(total, run)
        curves.append([schedule.multiplier(k, run) for k in range(total + 2)])
    assert curves[1] == curves[0] and curves[2] == curves[0]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=4), total=st.integers(1, 80), open_end=st.booleans())
def test_phases_longer_than_the_run_are_refused_at_fit_start_and_any_that_fit_are_taken(
    lengths: list[int], total: int, open_end: bool
) -> None:
    phases = [(Warmup(), Steps(n)) for n in lengths] + ([(Cosine(), None)] if open_end else [])
    schedule = Phases(phases)
    run = Run(total_steps=total)
    if sum(lengths) > total:
        with pytest.raises(ValueError, match=rf"the phases add up to {sum(lengths)} steps .* but the run has {total}"):
            schedule.check(total, run)
    else:
        schedule.check(total, run)
        assert all(0.0 <= schedule.multiplier(k, run) <= 1.0 for k in range(total + 1))


@settings(max_examples=50, deadline=None, derandomize=True)
@given(shares=st.lists(st.integers(1, 100), min_size=2, max_size=4))
def test_fractions_of_the_run_adding_up_to_more_than_it_are_refused_at_construction(shares: list[int]) -> None:
    phases = [(Warmup(), f"{share}%") for share in shares]
    if sum(shares) > 100:
        with pytest.raises(ValueError, match=r"add up to more than the whole run .*; shorten them to 100% at most"):
            Phases(phases)
    else:
        Phases(phases).check(100, Run(total_steps=100))


TRANSFORMERS_PRESETS = {
    "constant": lambda o, w, n: get_constant_schedule_with_warmup(o, w),
    "linear": lambda o, w, n: get_linear_schedule_with_warmup(o, w, n),
    "cosine": lambda o, w, n: get_cosine_schedule_with_warmup(o, w, n),
    "polynomial": lambda o, w, n: get_polynomial_decay_schedule_with_warmup(o, w, n, lr_end=0.0, power=2.0),
    "inverse_sqrt": lambda o, w, n: get_inverse_sqrt_schedule(o, w),
    "wsd": lambda o, w, n: get_wsd_schedule(o, w, 3, n, decay_type="1-sqrt"),
}


@settings(max_examples=100, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(TRANSFORMERS_PRESETS)), total=st.integers(1, 60), data=st.data())
def test_presets_with_a_warmup_match_transformers_one_step_ahead_in_the_warmup_and_exactly_after(
    name: str, total: int, data: st.DataObject
) -> None:
    """Side by side with transformers' ``get_*_schedule``: after the warmup, the same LR at every step; within it,
    ours trains step ``k`` at transformers' step ``k + 1`` (our warmup's first step is not spent at LR 0), and
    reaches the peak on its last step (transformers' next step, past its run where the warmup fills it)."""
    # room for wsd's 3 decay steps; transformers' polynomial divides by zero for a warmup as long as the run
    longest = total - {"wsd": 3, "polynomial": 1}.get(name, 0)
    if longest < 1:
        return
    warm = data.draw(st.integers(1, longest))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = TRANSFORMERS_PRESETS[name](optimizer, warm, total)
    reference = []
    for _ in range(total + 1):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    kwargs = {"polynomial": {"power": 2.0}, "wsd": {"decay": "3 steps"}}.get(name, {})
    schedule = preset(name, warmup=f"{warm} steps", **kwargs)
    run = Run(total_steps=total)
    schedule.check(total, run)
    ours = [schedule.multiplier(k, run) for k in range(total)]
    assert ours[:warm] == pytest.approx([*reference[1:warm], 1.0], rel=1e-12)
    assert ours[warm:] == pytest.approx(reference[warm:total], rel=1e-12, abs=1e-15)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    per_epoch=st.integers(1, 9),
    every=st.sampled_from(["1 epochs", "2 epochs", "1.5 epochs", "0.5 epochs"]),
    milestones=st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.5]), min_size=1, max_size=4, unique=True),
)
def test_step_presets_in_epochs_match_torch_step_and_multistep_at_the_steps_the_epochs_round_up_to(
    per_epoch: int, every: str, milestones: list[float]
) -> None:
    """Epochs that an epoch's steps do not divide (1.5 epochs of 5 steps) are rounded up, to 8 steps, and then the
    curves are torch's StepLR / MultiStepLR stepped at each optimizer step, run side by side."""
    run = Run(total_steps=60, steps_per_epoch=per_epoch)
    epochs = float(every.split()[0])
    size = math.ceil(epochs * per_epoch - 1e-9)
    marks = [math.ceil(m * per_epoch - 1e-9) for m in sorted(milestones)]
    for ours, make in (
        (preset("step", every=every, gamma=0.5), lambda o: lr_scheduler.StepLR(o, step_size=size, gamma=0.5)),
        (
            preset("multistep", milestones=[f"{m} epochs" for m in sorted(milestones)], gamma=0.5),
            lambda o: lr_scheduler.MultiStepLR(o, milestones=marks, gamma=0.5),
        ),
    ):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make(optimizer)
        reference = []
        for _ in range(60):
            reference.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        ours.check(60, run)
        assert [ours.multiplier(k, run) for k in range(60)] == pytest.approx(reference, rel=1e-12)
