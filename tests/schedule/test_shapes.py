"""The pure schedule core: exact values at simple points, bad input at construction, every argument matters.

Each expected value is written out by hand (or as the textbook formula inline), at step 0, at every phase
boundary and past the end, so a change in any convention (warmup off by one, a cosine that climbs again, a
boundary that slips by a step) fails here with the exact step named.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from lr_callbacks import (
    Constant,
    Cosine,
    CosineRestarts,
    Cyclic,
    Epochs,
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
    TransformersSchedule,
    Warmup,
    parse_duration,
    preset,
)

SQRT2 = math.sqrt(2.0)

# (id, schedule, total_steps, steps_per_epoch, {step: exact multiplier})
TABLE: list[tuple[str, Schedule, int | None, int | None, dict[int, float]]] = [
    ("constant", Constant(0.5), None, None, {0: 0.5, 7: 0.5, 10**6: 0.5}),
    ("linear-decay", Linear(1.0, 0.0), 4, None, {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.25, 4: 0.0, 9: 0.0}),
    ("linear-rise", Linear(0.2, 1.0), 4, None, {0: 0.2, 2: 0.6, 4: 1.0, 50: 1.0}),
    ("cosine-thirds", Cosine(), 3, None, {0: 1.0, 1: 0.75, 2: 0.25, 3: 0.0, 30: 0.0}),
    ("cosine-floor", Cosine(end=0.1), 2, None, {0: 1.0, 1: 0.55, 2: 0.1, 5: 0.1}),
    ("cosine-exponent", Cosine(exponent=2.0), 2, None, {0: 1.0, 1: 0.25, 2: 0.0}),
    ("cosine-k-decay", Cosine(k_decay=2.0), 2, None, {0: 1.0, 1: 0.5 + SQRT2 / 4, 2: 0.0}),
    ("cosine-full-cycle", Cosine(cycles=1.0), 4, None, {0: 1.0, 1: 0.5, 2: 0.0, 3: 0.5, 4: 1.0, 8: 1.0}),
    ("cosine-warmup", Cosine(start=0.0, end=1.0), 2, None, {0: 0.0, 1: 0.5, 2: 1.0}),
    ("polynomial-square", Polynomial(power=2.0), 4, None, {0: 1.0, 2: 0.25, 4: 0.0, 6: 0.0}),
    ("polynomial-floor", Polynomial(end=0.2), 2, None, {0: 1.0, 1: 0.6, 2: 0.2}),
    ("one-minus-sqrt", OneMinusSqrt(), 4, None, {0: 1.0, 1: 0.5, 4: 0.0, 9: 0.0}),
    ("one-minus-sqrt-floor", OneMinusSqrt(end=0.2), 100, None, {0: 1.0, 25: 0.6, 100: 0.2}),
    ("exponential-interpolate", Exponential(end=0.01), 2, None, {0: 1.0, 1: 0.1, 2: 0.01, 4: 0.01}),
    ("exponential-warmup", Exponential(start=0.01, end=1.0), 2, None, {0: 0.01, 1: 0.1, 2: 1.0}),
    ("exponential-gamma", Exponential(gamma=0.5), None, None, {0: 1.0, 1: 0.5, 3: 0.125}),
    ("exponential-gamma-floor", Exponential(gamma=0.5, end=0.2), None, None, {0: 1.0, 2: 0.25, 3: 0.2, 9: 0.2}),
    (
        "exponential-gamma-ceiling",
        Exponential(start=0.125, gamma=2.0, end=1.0),
        None,
        None,
        {0: 0.125, 2: 0.5, 3: 1.0, 5: 1.0},
    ),
    ("warmup-linear", Warmup(), 4, None, {0: 0.25, 1: 0.5, 2: 0.75, 3: 1.0, 4: 1.0}),
    ("warmup-from", Warmup(start=0.2), 4, None, {0: 0.4, 3: 1.0}),
    ("warmup-cosine", Warmup("cosine"), 2, None, {0: 0.5, 1: 1.0}),
    ("warmup-exponential", Warmup("exponential", start=0.01), 2, None, {0: 0.1, 1: 1.0}),
    ("step", Step("3 steps", gamma=0.5), None, None, {0: 1.0, 2: 1.0, 3: 0.5, 5: 0.5, 6: 0.25}),
    ("step-epochs", Step("1 epochs", gamma=0.1), 20, 4, {0: 1.0, 3: 1.0, 4: 0.1, 8: 0.01}),
    ("multistep", MultiStep(("2 steps", "5 steps"), gamma=0.1), None, None, {0: 1.0, 1: 1.0, 2: 0.1, 4: 0.1, 5: 0.01}),
    ("multistep-fraction", MultiStep(("50%",), gamma=0.1), 10, None, {0: 1.0, 4: 1.0, 5: 0.1, 9: 0.1}),
    ("inverse-sqrt", InverseSqrt("100 steps"), None, None, {0: 1.0, 300: 0.5, 800: 1 / 3}),
    ("reversed", Reversed(Linear(1.0, 0.0)), 4, None, {0: 0.0, 1: 0.25, 4: 1.0}),
    (
        "warmup-then-cosine",
        Phases([(Warmup(), "4 steps"), (Cosine(end=0.1), None)]),
        8,
        None,
        {0: 0.25, 3: 1.0, 4: 1.0, 6: 0.55, 8: 0.1, 12: 0.1},
    ),
    (
        "wsd-three-phases",
        Phases([(Warmup(), "2 steps"), (Constant(), None), (Linear(1.0, 0.0), "25%")]),
        8,
        None,
        {0: 0.5, 1: 1.0, 2: 1.0, 5: 1.0, 6: 1.0, 7: 0.5, 8: 0.0},
    ),
    (
        "phases-epochs",
        Phases([(Linear(0.0, 1.0), "1 epochs"), (Constant(0.5), "1 epochs"), (Constant(0.25), None)]),
        12,
        4,
        {0: 0.0, 2: 0.5, 3: 0.75, 4: 0.5, 7: 0.5, 8: 0.25, 11: 0.25},
    ),
    (
        "phases-fixed-shorter-than-run",
        Phases([(Linear(1.0, 0.5), "2 steps"), (Linear(0.5, 0.0), "2 steps")]),
        10,
        None,
        {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.25, 4: 0.0, 9: 0.0},
    ),
    ("restarts", CosineRestarts(period="4 steps"), None, None, {0: 1.0, 2: 0.5, 3: 0.5 - SQRT2 / 4, 4: 1.0, 6: 0.5}),
    ("restarts-mult", CosineRestarts(period="4 steps", period_mult=2.0), None, None, {4: 1.0, 8: 0.5, 12: 1.0}),
    ("restarts-decay", CosineRestarts(period="4 steps", decay=0.5), None, None, {0: 1.0, 4: 0.5, 8: 0.25, 10: 0.125}),
    ("restarts-limit", CosineRestarts(period="4 steps", limit=2), None, None, {4: 1.0, 7: 0.5 - SQRT2 / 4, 8: 0.0}),
    ("restarts-floor", CosineRestarts(period="4 steps", end=0.2), None, None, {0: 1.0, 2: 0.6, 4: 1.0}),
    ("restarts-cycles", CosineRestarts(cycles=2), 8, None, {0: 1.0, 2: 0.5, 4: 1.0, 6: 0.5, 8: 0.0}),
    ("cyclic", Cyclic(low=0.2, up="2 steps"), None, None, {0: 0.2, 1: 0.6, 2: 1.0, 3: 0.6, 4: 0.2, 6: 1.0}),
    ("cyclic-asymmetric", Cyclic(low=0.2, up="2 steps", down="6 steps"), None, None, {2: 1.0, 5: 0.6, 8: 0.2}),
    ("cyclic-triangular2", Cyclic(low=0.2, up="2 steps", mode="triangular2"), None, None, {2: 1.0, 4: 0.2, 6: 0.6}),
    (
        "cyclic-exp-range",
        Cyclic(low=0.2, up="2 steps", mode="exp_range", gamma=0.5),
        None,
        None,
        {0: 0.2, 1: 0.2 + 0.8 * 0.5 * 0.5, 2: 0.2 + 0.8 * 0.25},
    ),
    ("one-cycle", OneCycle(), 10, None, {0: 0.04, 2: 1.0, 9: 0.04 / 1e4}),
    ("one-cycle-linear", OneCycle(anneal="linear"), 10, None, {0: 0.04, 1: 0.52, 2: 1.0, 9: 4e-6}),
    (
        "one-cycle-three-phase",
        OneCycle(anneal="linear", three_phase=True),
        10,
        None,
        {0: 0.04, 2: 1.0, 3: 0.52, 4: 0.04, 9: 4e-6},
    ),
    (
        "preset-cosine-warmup",
        preset("cosine", warmup="2 steps", end=0.2),
        6,
        None,
        {0: 0.5, 1: 1.0, 2: 1.0, 3: 0.6 + 0.4 * SQRT2 / 2, 4: 0.6, 6: 0.2},
    ),
    ("preset-linear", preset("linear", warmup="1 steps"), 5, None, {0: 1.0, 1: 1.0, 3: 0.5, 5: 0.0}),
    (
        "preset-wsd",
        preset("wsd", warmup="2 steps", decay="50%", decay_shape="linear"),
        8,
        None,
        {1: 1.0, 3: 1.0, 4: 1.0, 6: 0.5},
    ),
    ("preset-inverse-sqrt", preset("inverse_sqrt", warmup="100 steps"), None, None, {0: 0.01, 99: 1.0, 400: 0.5}),
    ("transformers-linear", TransformersSchedule("linear", 2), 6, None, {0: 0.0, 1: 0.5, 2: 1.0, 4: 0.5, 6: 0.0}),
    ("transformers-cosine", TransformersSchedule("cosine", 2), 5, None, {0: 0.0, 2: 1.0, 3: 0.75, 4: 0.25, 5: 0.0}),
]


@pytest.mark.parametrize(
    ("schedule", "total", "per_epoch", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_exact_values_at_simple_points(
    schedule: Schedule, total: int | None, per_epoch: int | None, expected: dict[int, float]
) -> None:
    got = {step: schedule(step, total_steps=total, steps_per_epoch=per_epoch) for step in expected}
    assert got == pytest.approx(expected, abs=1e-12)


def test_ramps_hold_their_end_value_past_their_span_without_the_run_clamp() -> None:
    run = Run(total_steps=100)
    for shape in (Linear(1.0, 0.3), Cosine(end=0.3), Polynomial(end=0.3, power=3.0), OneMinusSqrt(end=0.3)):
        assert [shape.at(k, 10, run) for k in (10, 11, 50, 99)] == pytest.approx([0.3] * 4, abs=1e-15)
    assert [Warmup(end=0.7).at(k, 10, run) for k in (9, 10, 40)] == pytest.approx([0.7] * 3)


def test_momentum_is_co_scheduled_inversely() -> None:
    run = Run(total_steps=10)
    cyclic = Cyclic(low=0.2, up="2 steps", momentum=(0.8, 0.9))
    assert [cyclic.momentum_at(k, None, run) for k in range(5)] == pytest.approx([0.9, 0.85, 0.8, 0.85, 0.9])
    one_cycle = OneCycle(anneal="linear", momentum=(0.85, 0.95))
    assert [one_cycle.momentum_at(k, 10, run) for k in (0, 1, 2, 9)] == pytest.approx([0.95, 0.9, 0.85, 0.95])
    three = OneCycle(anneal="linear", three_phase=True, momentum=(0.85, 0.95))
    assert [three.momentum_at(k, 10, run) for k in (0, 2, 3, 4, 9)] == pytest.approx([0.95, 0.85, 0.9, 0.95, 0.95])
    assert OneCycle(momentum=None).momentum_at(3, 10, run) is None
    assert Cosine().momentum_at(3, 10, run) is None
    phased = Phases([(Constant(), "2 steps"), (cyclic, None)])
    assert phased.co_schedules_momentum() and phased.momentum_at(3, 10, run) == pytest.approx(0.85)


def test_reversed_plays_a_co_scheduled_momentum_backwards_with_its_lr() -> None:
    """``Reversed(inner)`` is ``inner(n − k)``, its momentum too. Before, it passed on no momentum: Reversed(OneCycle())
    said it co-scheduled none, and a fit left the momentum as configure_optimizers set it, where OneCycle played
    backwards moves it from 0.95 (step 0, the cycle's end) down to 0.85 (at its LR's peak) and back up to 0.95."""
    run = Run(total_steps=10)
    one_cycle = OneCycle(anneal="linear", momentum=(0.85, 0.95))  # its LR peaks at step 2 of 10 (pct_start 0.3)
    backwards = Reversed(one_cycle)
    assert backwards.co_schedules_momentum() and not Reversed(OneCycle(momentum=None)).co_schedules_momentum()
    lrs = [backwards.multiplier(k, run) for k in range(11)]
    momenta = [backwards.momentum_for(k, run) for k in range(11)]
    assert lrs == pytest.approx([one_cycle.at(10 - k, 10, run) for k in range(11)])
    assert momenta == pytest.approx([one_cycle.momentum_at(10 - k, 10, run) for k in range(11)])
    assert lrs[8] == 1.0 and [momenta[k] for k in (0, 8, 10)] == pytest.approx([0.95, 0.85, 0.95])  # peak: 10 − 2
    assert momenta[5] == pytest.approx(0.85 + 0.1 * 3 / 7)  # OneCycle's step 5: 3 of the 7 steps from its peak up
    # its momentum's check is passed on too, naming the step of the run that plays the inner's step 9 (20 − 9)
    falling = Cyclic(low=0.1, up="4 steps", mode="exp_range", gamma=1.5, momentum=(0.85, 0.95))
    with pytest.raises(ValueError, match=r"^Reversed plays Cyclic\(.*\) backwards, from the end of its span: .* "
                       r"the momentum is -0\.01108, below 0, at step 11 of the run \(its own step 9\)"):  # fmt: skip
        Reversed(falling).check_momentum(20, Run(total_steps=20))
    assert Reversed(falling).momentum_for(11, Run(total_steps=20)) == pytest.approx(-0.01108, abs=1e-5)


def test_durations_resolve_with_visible_units() -> None:
    run = Run(total_steps=15, steps_per_epoch=4)
    assert parse_duration("7 steps").to_steps(run) == 7
    assert parse_duration("1 step").to_steps(run) == 1
    assert parse_duration("2.5 epochs").to_steps(run) == 10
    assert parse_duration("0.3 epochs").to_steps(run) == 2  # ceil(1.2)
    assert parse_duration("10%").to_steps(run) == 2  # ceil(1.5), as transformers' warmup ratio
    assert parse_duration("20%").to_steps(run) == 3  # exactly 3: no float noise rounds it up to 4
    assert parse_duration("1e3 steps") == Steps(1000)
    assert parse_duration(Epochs(2)) == Epochs(2.0)
    assert [Steps(3).describe(), Epochs(0.5).describe(), RunFraction(0.05).describe()] == [
        "3 steps",
        "0.5 epochs",
        "0.05 of the run",
    ]
    assert not Steps(3).needs_total() and not Epochs(1).needs_total() and RunFraction(0.1).needs_total()


def test_a_duration_unit_may_be_written_in_any_case() -> None:
    """``"5 Steps"`` or ``"2 EPOCHS"`` was refused as "could not be read", though it cannot be misread."""
    assert [parse_duration(text) for text in ("5 Steps", "2 EPOCHS", "1E2 steps", " 1 Step ")] == [
        Steps(5),
        Epochs(2.0),
        Steps(100),
        Steps(1),
    ]


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        # a bare number of another type was "must be a Duration or a string", not "needs its unit"
        (np.int64(5), TypeError, r"`warmup` needs its unit: got the bare number np.int64\(5\)\. Write '5 steps'"),
        (np.float32(0.05), TypeError, r"bare number np.float32\(0.05\)\. .*'5%' of the run \(RunFraction\(0.05\)\)$"),
        (Fraction(1, 2), TypeError, r"bare number Fraction\(1, 2\)\. .*'50%' of the run \(RunFraction\(0.5\)\)$"),
        # inf was answered "Write 'inf epochs' (Epochs(inf))", which Epochs refuses
        (math.inf, TypeError, r"bare number inf\. Write a length such as '500 steps', '2 epochs' or '5%'$"),
        # '1e400 steps' was "must be a whole number of steps", '1e400 epochs' an Epochs error without the argument
        ("1e400 steps", ValueError, r"^`warmup` must be finite, got '1e400 steps'; write a length such as"),
        ("1e400 epochs", ValueError, r"^`warmup` must be finite, got '1e400 epochs'"),
    ],
)
def test_parse_duration_names_the_fix_for_numbers_of_any_type(value: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_duration(value, "warmup")


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Steps(np.int64(5)), r"got np.int64\(5\) \(a numpy.int64\); convert it with int\(\.\.\.\) or \.item"),
        (lambda: Epochs(np.float32(1.5)), r"got np.float32\(1.5\) \(a numpy.float32\); convert it with float"),
        (lambda: RunFraction(Fraction(1, 3)), r"got Fraction\(1, 3\) \(a fractions.Fraction\); convert it with float"),
    ],
)
def test_a_duration_of_a_foreign_number_type_names_the_conversion(build: Callable[[], Any], match: str) -> None:
    """``Steps(np.int64(5))`` was refused as "takes a whole number of optimizer steps", which it is."""
    with pytest.raises(TypeError, match=match):
        build()


@pytest.mark.parametrize("total", [10, 15, 20, 25, 33, 3127])
def test_phases_as_shares_that_add_up_to_the_run_fit_it_whatever_its_length(total: int) -> None:
    """10% + 70% + 20% of 15 steps, each rounded up, is 2 + 11 + 3 = 16 steps: before, refused at fit start ("give them
    as fractions of the run"), for most lengths of the run. The boundaries are rounded instead; the first phase (a
    warmup) keeps its ceil, and a length that divides evenly is planned as before."""
    schedule = Phases([(Warmup(), "10%"), (Constant(), "70%"), (Linear(1.0, 0.0), "20%")])
    run = Run(total_steps=total)
    schedule.check(total, run)
    lengths = schedule._lengths(total, run)
    assert sum(lengths) == total and lengths[0] == math.ceil(total / 10)
    assert schedule.multiplier(lengths[0] - 1, run) == 1.0  # the warmup's peak
    assert schedule.multiplier(total - 1, run) == pytest.approx(1 / lengths[2])
    with_open = Phases([(Warmup(), "10%"), (Constant(), None), (Linear(1.0, 0.0), "90%")])
    with_open.check(total, run)
    assert sum(with_open._lengths(total, run)) == total


def test_phases_longer_than_the_run_without_rounding_are_still_refused() -> None:
    # fractions alone that add up to more than 100% (10% + 80% + 20%) are refused at construction
    # (phases-fractions-over-the-run); with steps among them, only the run tells
    with pytest.raises(ValueError, match=r"the phases add up to 16 steps \(0\.1 of the run = 2 steps \+ 0\.8 of"):
        Phases([(Warmup(), "10%"), (Constant(), "80%"), (Linear(), "2 steps")]).check(15, Run(total_steps=15))


def test_what_needs_the_total_is_known_before_the_run() -> None:
    assert not Constant().needs_total() and not Step("2 steps").needs_total() and not InverseSqrt().needs_total()
    assert not Exponential(gamma=0.9).needs_total() and not Cyclic().needs_total()
    assert Cosine().needs_total() and Exponential(end=0.1).needs_total() and OneCycle().needs_total()
    assert Step("10%").needs_total() and MultiStep(("1 epochs", "50%")).needs_total()
    assert not Phases([(Warmup(), "10 steps"), (InverseSqrt(), None)]).needs_total()
    assert Phases([(Warmup(), "5%"), (Constant(), None)]).needs_total()
    assert Phases([(Constant(), None), (Linear(), "100 steps")]).needs_total()  # the open phase is not last
    assert not TransformersSchedule("constant_with_warmup", 5).needs_total()
    assert TransformersSchedule("cosine", 5).needs_total()
    wsd = (("num_decay_steps", 5), ("num_stable_steps", 10))
    assert not TransformersSchedule("warmup_stable_decay", 5, wsd).needs_total()


def test_describe_reads_back_the_arguments() -> None:
    assert Cosine(end=0.1).describe() == "Cosine(end=0.1)"
    assert Step("2 epochs", gamma=0.5).describe() == "Step(every=2 epochs, gamma=0.5)"
    assert Phases([(Warmup(), "5%"), (Constant(), None)]).describe() == (
        "Phases(Warmup() for 0.05 of the run; Constant() for the rest of the run)"
    )
    assert Reversed(Linear()).describe() == "Reversed(Linear())"


# --- bad input: every constructor, every check, with the argument, the value and the fix in the message -------

BAD_INPUT: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("constant-negative", lambda: Constant(-1.0), ValueError, r"Constant: `value` must be >= 0, got -1\.0"),
    ("constant-type", lambda: Constant("1"), TypeError, r"`value` must be a number, got '1'"),
    ("linear-start", lambda: Linear(start=-0.5), ValueError, r"Linear: `start` must be >= 0, got -0\.5"),
    ("linear-end-nan", lambda: Linear(end=math.nan), ValueError, r"Linear: `end` must be finite, got nan"),
    ("cosine-bool", lambda: Cosine(end=True), TypeError, r"Cosine: `end` must be a number, got True"),
    ("cosine-exponent", lambda: Cosine(exponent=0.0), ValueError, r"Cosine: `exponent` must be > 0, got 0\.0"),
    ("cosine-k-decay", lambda: Cosine(k_decay=-1.0), ValueError, r"Cosine: `k_decay` must be > 0, got -1\.0"),
    ("cosine-cycles", lambda: Cosine(cycles=0.0), ValueError, r"Cosine: `cycles` must be > 0, got 0\.0"),
    ("polynomial-power", lambda: Polynomial(power=0), ValueError, r"Polynomial: `power` must be > 0, got 0"),
    ("one-minus-sqrt", lambda: OneMinusSqrt(end=-1), ValueError, r"OneMinusSqrt: `end` must be >= 0, got -1"),
    ("exponential-neither", lambda: Exponential(), ValueError, r"`end`.*or `gamma`.*got neither"),
    ("exponential-start", lambda: Exponential(start=0.0, end=1.0), ValueError, r"`start` must be > 0, got 0\.0"),
    ("exponential-end", lambda: Exponential(end=0.0), ValueError, r"Exponential: `end` must be > 0, got 0\.0"),
    ("exponential-gamma", lambda: Exponential(gamma=0.0), ValueError, r"`gamma` must be > 0, got 0\.0"),
    (
        "exponential-floor-above-start",
        lambda: Exponential(gamma=0.9, end=2.0),
        ValueError,
        r"gamma=0\.9 < 1.*`end` is its floor.*got end=2\.0; lower `end`",
    ),
    (
        "exponential-ceiling-below-start",
        lambda: Exponential(gamma=1.1, end=0.5),
        ValueError,
        r"gamma=1\.1 > 1.*ceiling.*got end=0\.5; raise `end`",
    ),
    ("warmup-curve", lambda: Warmup("quadratic"), ValueError, r"unknown `curve` 'quadratic'; choose one of linear"),
    ("warmup-start", lambda: Warmup(start=-0.1), ValueError, r"Warmup: `start` must be >= 0, got -0\.1"),
    ("warmup-end", lambda: Warmup(end=-1.0), ValueError, r"Warmup: `end` must be >= 0, got -1\.0"),
    (
        "warmup-exponential-zero",
        lambda: Warmup("exponential"),
        ValueError,
        r"exponential warmup needs `start` > 0, got 0\.0; try start=0\.01",
    ),
    ("step-bare-number", lambda: Step(100), TypeError, r"`every` needs its unit: got the bare number 100.*'100 steps'"),
    ("step-zero", lambda: Step("0 steps"), ValueError, r"Step: `every` must be longer than zero, got 0 steps"),
    ("step-gamma", lambda: Step("2 steps", gamma=-0.1), ValueError, r"Step: `gamma` must be >= 0, got -0\.1"),
    (
        "multistep-empty",
        lambda: MultiStep(()),
        ValueError,
        r"`milestones` must not be empty; for no decay use Constant",
    ),
    ("multistep-string", lambda: MultiStep("10 steps"), TypeError, r"`milestones` must be a sequence.*got '10 steps'"),
    ("multistep-bare", lambda: MultiStep((10, 20)), TypeError, r"`milestones` needs its unit: got the bare number 10"),
    (
        "multistep-order",
        lambda: MultiStep(("5 steps", "3 steps")),
        ValueError,
        r"`milestones` must not decrease, got \(5 steps, 3 steps\); sort them",
    ),
    ("multistep-gamma", lambda: MultiStep(("5 steps",), gamma="x"), TypeError, r"`gamma` must be a number, got 'x'"),
    ("inverse-sqrt-zero", lambda: InverseSqrt("0 steps"), ValueError, r"`timescale` must be longer than zero"),
    ("inverse-sqrt-bare", lambda: InverseSqrt(1000), TypeError, r"`timescale` needs its unit: got the bare number"),
    ("steps-negative", lambda: Steps(-1), ValueError, r"Steps: `steps` must be >= 0, got -1"),
    ("steps-float", lambda: Steps(1.5), TypeError, r"whole number of optimizer steps, got 1\.5"),
    ("steps-bool", lambda: Steps(True), TypeError, r"whole number of optimizer steps, got True"),
    ("epochs-negative", lambda: Epochs(-1), ValueError, r"Epochs: `epochs` must be finite and >= 0, got -1"),
    ("epochs-inf", lambda: Epochs(math.inf), ValueError, r"`epochs` must be finite and >= 0, got inf"),
    ("epochs-string", lambda: Epochs("2"), TypeError, r"Epochs takes a number of epochs, got '2'"),
    ("fraction-above-one", lambda: RunFraction(1.5), ValueError, r"`fraction` must be in \[0, 1\], got 1\.5.*Steps"),
    ("fraction-type", lambda: RunFraction(None), TypeError, r"RunFraction takes a number in \[0, 1\], got None"),
    (
        "run-negative",
        lambda: Run(total_steps=-1),
        ValueError,
        r"`total_steps` must be a non-negative int or None, got -1",
    ),
    ("run-float", lambda: Run(steps_per_epoch=2.5), ValueError, r"`steps_per_epoch` must be a non-negative int.*2\.5"),
    (
        "parse-bare",
        lambda: parse_duration(5, "warmup"),
        TypeError,
        r"`warmup` needs its unit.*'5 steps' \(Steps\(5\)\)",
    ),
    (
        "parse-bare-share",  # a number in [0, 1] may be a share of the run: 0.05 is '5%', not '0.05%'
        lambda: parse_duration(0.05, "warmup"),
        TypeError,
        r"`warmup` needs its unit.*'0.05 epochs' \(Epochs\(0.05\)\), or '5%' of the run \(RunFraction\(0.05\)\)$",
    ),
    ("parse-type", lambda: parse_duration(None, "decay"), TypeError, r"`decay` must be a Duration or a string.*None"),
    ("parse-unit", lambda: parse_duration("5 stp", "warmup"), ValueError, r"`warmup` could not be read: '5 stp'"),
    ("parse-fraction-of-step", lambda: parse_duration("1.5 steps"), ValueError, r"whole number of steps, got '1\.5"),
    ("parse-percent", lambda: parse_duration("150%", "warmup"), ValueError, r"`warmup` .*at most 100%, got '150%'"),
    ("parse-negative", lambda: parse_duration("-3 steps", "up"), ValueError, r"`up` must not be negative, got '-3"),
    (
        "epochs-unknown-epoch",
        lambda: Epochs(1).to_steps(Run(total_steps=10)),
        ValueError,
        r"1 epochs needs the epoch length.*Steps\(\.\.\.\)",
    ),
    (
        "fraction-unknown-total",
        lambda: RunFraction(0.1).to_steps(Run()),
        ValueError,
        r"0\.1 of the run needs the run's total length.*max_steps",
    ),
    ("phase-schedule", lambda: Phase("cosine"), TypeError, r"Phase: `schedule` must be a Schedule.*got 'cosine'"),
    ("phase-duration", lambda: Phase(Cosine(), 10), TypeError, r"`duration` needs its unit: got the bare number 10"),
    ("phases-empty", lambda: Phases([]), ValueError, r"Phases needs at least one phase"),
    ("phases-not-a-list", lambda: Phases(Phase(Cosine())), TypeError, r"Phases takes a list of Phase"),
    (
        "phases-bare-schedule",
        lambda: Phases([Warmup(), Cosine()]),
        TypeError,
        r"Phases: `phases\[0\]` must be a Phase\(schedule, duration\) or a \(schedule, duration\) pair "
        r"\(e\.g\. \(Warmup\(\), '10%'\)\), got Warmup\(\)",
    ),
    (
        "phases-name",
        lambda: Phases([(Warmup(), "5%"), "cosine"]),
        TypeError,
        r"`phases\[1\]` must be a Phase.*got 'cosine'",
    ),
    (
        "phases-triple",
        lambda: Phases([(Warmup(), "5%", "linear")]),
        TypeError,
        r"`phases\[0\]` must be a Phase.*got \(Warmup\(.*\), '5%', 'linear'\)",
    ),
    (
        "phases-two-open",
        lambda: Phases([(Constant(), None), (Cosine(), None)]),
        ValueError,
        r"at most one phase may be open-ended.*phases \[0, 1\].*'10%'",
    ),
    (  # before, taken, and refused only at fit start: no run fits 120% of it
        "phases-fractions-over-the-run",
        lambda: Phases([(Constant(), "60%"), (Cosine(), "60%")]),
        ValueError,
        r"Phases: the phases given as fractions of the run add up to more than the whole run \(60% \+ 60% = 120%\); "
        r"shorten them to 100% at most",
    ),
    (
        "wsd-fractions-over-the-run",
        lambda: preset("wsd", warmup="90%", decay="20%"),
        ValueError,
        r"add up to more than the whole run \(90% \+ 20% = 110%\)",
    ),
    ("reversed-type", lambda: Reversed(Cosine), TypeError, r"Reversed: `inner` must be a Schedule"),
    (
        "restarts-neither",
        lambda: CosineRestarts(),
        ValueError,
        r"exactly one of `period`.*or `cycles`.*got period=None",
    ),
    ("restarts-both", lambda: CosineRestarts("5 steps", 2), ValueError, r"exactly one of `period`"),
    ("restarts-zero", lambda: CosineRestarts("0%"), ValueError, r"`period` must be longer than zero, got 0 of the run"),
    ("restarts-cycles", lambda: CosineRestarts(cycles=0), ValueError, r"`cycles` must be >= 1, got 0"),
    (
        "restarts-cycles-type",
        lambda: CosineRestarts(cycles=1.5),
        TypeError,
        r"`cycles` must be a whole number, got 1.5",
    ),
    (
        "restarts-cycles-mult",
        lambda: CosineRestarts(cycles=2, period_mult=2.0),
        ValueError,
        r"`period_mult` must be 1, got 2\.0; give `period` instead",
    ),
    ("restarts-mult", lambda: CosineRestarts("5 steps", period_mult=0.5), ValueError, r"`period_mult` must be >= 1"),
    ("restarts-decay", lambda: CosineRestarts("5 steps", decay=-1.0), ValueError, r"`decay` must be >= 0, got -1\.0"),
    ("restarts-limit", lambda: CosineRestarts("5 steps", limit=0), ValueError, r"`limit` must be >= 1, got 0"),
    ("restarts-start", lambda: CosineRestarts("5 steps", start=-1), ValueError, r"`start` must be >= 0, got -1"),
    ("restarts-end", lambda: CosineRestarts("5 steps", end=-1), ValueError, r"`end` must be >= 0, got -1"),
    ("cyclic-low", lambda: Cyclic(low=-0.1), ValueError, r"Cyclic: `low` must be >= 0, got -0\.1"),
    ("cyclic-high", lambda: Cyclic(low=0.5, high=0.2), ValueError, r"`high` must be >= `low`, got high=0\.2, low=0\.5"),
    ("cyclic-up-zero", lambda: Cyclic(up="0 steps"), ValueError, r"`up` must be longer than zero.*got 0 steps"),
    ("cyclic-down", lambda: Cyclic(down=3), TypeError, r"`down` needs its unit: got the bare number 3"),
    ("cyclic-mode", lambda: Cyclic(mode="sine"), ValueError, r"unknown `mode` 'sine'; choose one of: 'triangular'"),
    ("cyclic-gamma", lambda: Cyclic(gamma=0.0), ValueError, r"Cyclic: `gamma` must be > 0, got 0\.0"),
    ("cyclic-momentum-pair", lambda: Cyclic(momentum=0.9), TypeError, r"`momentum` must be a pair.*got 0\.9"),
    ("cyclic-momentum-range", lambda: Cyclic(momentum=(0.8, 1.5)), ValueError, r"`momentum\[1\]` must be <= 1"),
    (
        "cyclic-momentum-order",
        lambda: Cyclic(momentum=(0.95, 0.85)),
        ValueError,
        r"`momentum` is \(base, max\) with base <= max, got \(0\.95, 0\.85\)",
    ),
    ("one-cycle-pct", lambda: OneCycle(pct_start=0.0), ValueError, r"OneCycle: `pct_start` must be > 0, got 0\.0"),
    ("one-cycle-pct-high", lambda: OneCycle(pct_start=1.5), ValueError, r"`pct_start` must be <= 1, got 1\.5"),
    ("one-cycle-div", lambda: OneCycle(div_factor=0), ValueError, r"`div_factor` must be > 0, got 0"),
    ("one-cycle-final-div", lambda: OneCycle(final_div_factor=-1), ValueError, r"`final_div_factor` must be > 0"),
    ("one-cycle-anneal", lambda: OneCycle(anneal="exp"), ValueError, r"unknown `anneal` 'exp'; choose one of: 'cos'"),
    ("one-cycle-three-type", lambda: OneCycle(three_phase=1), TypeError, r"`three_phase` must be True or False, got 1"),
    (
        "one-cycle-three-pct",
        lambda: OneCycle(three_phase=True, pct_start=0.6),
        ValueError,
        r"three_phase=True.*must be <= 0\.5, got 0\.6",
    ),
    ("one-cycle-momentum", lambda: OneCycle(momentum=(0.9,)), TypeError, r"`momentum` must be a pair"),
    # a momentum of 1 was taken: Adam with beta1 = 1 divided by zero at its first step
    (
        "one-cycle-momentum-one",
        lambda: OneCycle(momentum=(0.85, 1.0)),
        ValueError,
        r"^OneCycle: `momentum\[1\]` must be < 1 .*at 1 Adam divides by zero.*got \(0\.85, 1\.0\); "
        r"e\.g\. \(0\.85, 0\.95\)$",
    ),
    ("cyclic-momentum-one", lambda: Cyclic(momentum=(1.0, 1.0)), ValueError, r"Cyclic: `momentum\[1\]` must be < 1"),
    ("preset-name", lambda: preset("cosinus"), ValueError, r"unknown `schedule` 'cosinus'; choose one of: 'constant'"),
    (
        "preset-argument",
        lambda: preset("cosine", floor=0.1),
        TypeError,
        r"does not take 'floor'; it takes: end, exponent",
    ),
    ("preset-warmup-bare", lambda: preset("cosine", warmup=100), TypeError, r"`warmup` needs its unit.*'100 steps'"),
    (
        "preset-warmup-curve",
        lambda: preset("linear", warmup="5%", warmup_curve="sine"),
        ValueError,
        r"`warmup_curve` 'sine'",
    ),
    ("preset-wsd-shape", lambda: preset("wsd", decay_shape="exp"), ValueError, r"unknown `decay_shape` 'exp'"),
    ("preset-wsd-decay", lambda: preset("wsd", decay=0.2), TypeError, r"`decay` needs its unit: got the bare number"),
    ("preset-cosine-end", lambda: preset("cosine", end=-0.1), ValueError, r"`end` must be >= 0, got -0\.1"),
    ("preset-exponential", lambda: preset("exponential"), ValueError, r"`end`.*or `gamma`"),
    ("preset-step-every", lambda: preset("step", every=3), TypeError, r"`every` needs its unit"),
    ("preset-multistep", lambda: preset("multistep"), ValueError, r"`milestones` must not be empty"),
    ("preset-restarts", lambda: preset("cosine_restarts"), ValueError, r"exactly one of `period`"),
    ("preset-cyclic", lambda: preset("cyclic", mode="saw"), ValueError, r"unknown `mode` 'saw'"),
    ("preset-one-cycle", lambda: preset("one_cycle", anneal="exp"), ValueError, r"unknown `anneal` 'exp'"),
    ("preset-inverse-sqrt", lambda: preset("inverse_sqrt", timescale=10), TypeError, r"`timescale` needs its unit"),
    ("preset-polynomial", lambda: preset("polynomial", power=-1), ValueError, r"`power` must be > 0, got -1"),
    ("preset-constant", lambda: preset("constant", warmup="x"), ValueError, r"`warmup` could not be read: 'x'"),
    ("preset-linear", lambda: preset("linear", end="0"), TypeError, r"`end` must be a number, got '0'"),
    ("hf-name", lambda: TransformersSchedule("cosine_annealing"), ValueError, r"unknown `name`.*'linear', 'cosine'"),
    (
        "hf-warmup-ratio",
        lambda: TransformersSchedule("linear", 0.1),
        TypeError,
        r"`num_warmup_steps` is a number of steps, got 0\.1.*warmup='5%'",
    ),
    ("hf-warmup-negative", lambda: TransformersSchedule("linear", -1), ValueError, r"`num_warmup_steps` must be >= 0"),
    (
        "hf-training-steps",
        lambda: TransformersSchedule("linear", 0, (("num_training_steps", 100),)),
        TypeError,
        r"`num_training_steps` comes from the trainer.*max_steps",
    ),
    (
        "hf-unknown-argument",
        lambda: TransformersSchedule("cosine", 0, (("lr_end", 0.1),)),
        TypeError,
        r"'cosine' does not take 'lr_end'; it takes: num_cycles",
    ),
    (
        "hf-linear-argument",
        lambda: TransformersSchedule("linear", 0, (("power", 2.0),)),
        TypeError,
        r"'linear' does not take 'power'; it takes: no other arguments",
    ),
    (
        "hf-cycles",
        lambda: TransformersSchedule("cosine", 0, (("num_cycles", 0),)),
        ValueError,
        r"`num_cycles` must be > 0",
    ),
    (
        "hf-restarts-cycles",
        lambda: TransformersSchedule("cosine_with_restarts", 0, (("num_cycles", 1.5),)),
        TypeError,
        r"`num_cycles` must be a whole number, got 1\.5",
    ),
    ("hf-power", lambda: TransformersSchedule("polynomial", 0, (("power", 0.0),)), ValueError, r"`power` must be > 0"),
    (
        "hf-lr-end",
        lambda: TransformersSchedule("polynomial", 0, (("lr_end", -1.0),)),
        ValueError,
        r"`lr_end` must be >= 0",
    ),
    (
        "hf-timescale",
        lambda: TransformersSchedule("inverse_sqrt", 0, (("timescale", 0),)),
        ValueError,
        r"`timescale` must be >= 1, got 0",
    ),
    (
        "hf-min-lr-neither",
        lambda: TransformersSchedule("cosine_with_min_lr", 0),
        ValueError,
        r"set exactly one of `min_lr` \(absolute\) or `min_lr_rate`",
    ),
    (
        "hf-min-lr-both",
        lambda: TransformersSchedule("cosine_with_min_lr", 0, (("min_lr", 1e-4), ("min_lr_rate", 0.1))),
        ValueError,
        r"set exactly one of `min_lr`",
    ),
    (
        "hf-min-lr-rate",
        lambda: TransformersSchedule("cosine_with_min_lr", 0, (("min_lr_rate", -0.1),)),
        ValueError,
        r"`min_lr_rate` must be >= 0, got -0\.1",
    ),
    (  # before, taken: the cosine climbed from the peak to 10 times it
        "hf-min-lr-rate-above-1",
        lambda: TransformersSchedule("cosine_with_min_lr", 0, (("min_lr_rate", 10.0),)),
        ValueError,
        r"`min_lr_rate` is the floor as a fraction of the peak LR, at most 1, got 10\.0, .* write min_lr_rate=0\.1",
    ),
    (
        "hf-min-lr",
        lambda: TransformersSchedule("cosine_with_min_lr", 0, (("min_lr", "1e-4"),)),
        TypeError,
        r"`min_lr` must be a number, got '1e-4'",
    ),
    (
        "hf-wsd-decay-missing",
        lambda: TransformersSchedule("warmup_stable_decay", 0),
        TypeError,
        r"`num_decay_steps` is required",
    ),
    (
        "hf-wsd-warmup-type",
        lambda: TransformersSchedule("warmup_stable_decay", 0, (("num_decay_steps", 5), ("warmup_type", "exp"))),
        ValueError,
        r"unknown `warmup_type` 'exp'; choose one of: 'linear', 'cosine', '1-sqrt'",
    ),
    (
        "hf-wsd-decay-type",
        lambda: TransformersSchedule("warmup_stable_decay", 0, (("num_decay_steps", 5), ("decay_type", "step"))),
        ValueError,
        r"unknown `decay_type` 'step'",
    ),
    (
        "hf-wsd-ratio",
        lambda: TransformersSchedule("warmup_stable_decay", 0, (("num_decay_steps", 5), ("min_lr_ratio", 2.0))),
        ValueError,
        r"`min_lr_ratio` must be <= 1, got 2\.0",
    ),
    (
        "hf-wsd-stable",
        lambda: TransformersSchedule("warmup_stable_decay", 0, (("num_decay_steps", 5), ("num_stable_steps", -2))),
        ValueError,
        r"`num_stable_steps` must be >= 0, got -2",
    ),
    (
        "hf-wsd-decay-steps",
        lambda: TransformersSchedule("warmup_stable_decay", 0, (("num_decay_steps", 2.5),)),
        TypeError,
        r"`num_decay_steps` must be a whole number, got 2\.5",
    ),
    (  # the LR the decay starts from is below its floor: before, refused only once evaluated, with no fix
        "hf-lr-end-above-lr",
        lambda: TransformersSchedule("polynomial", 2, (("lr_end", 0.5),), reference_lr=0.1),
        ValueError,
        r"`lr_end` \(0\.5\) must be smaller than the optimizer's lr \(0\.1\), the LR the decay starts from .*: "
        r"lower lr_end below 0\.1 \(it is an absolute LR, not a fraction of the peak\), or raise the optimizer's lr",
    ),
    (
        "hf-lr-end-at-lr-bound",
        lambda: TransformersSchedule("polynomial", 2, (("lr_end", 0.1),)).bound_to(0.1),
        ValueError,
        r"`lr_end` \(0\.1\) must be smaller than the optimizer's lr \(0\.1\).*lower lr_end below 0\.1",
    ),
    (
        "hf-reference-lr",
        lambda: TransformersSchedule("polynomial", 0, reference_lr=0.0),
        ValueError,
        r"`reference_lr` must be > 0, got 0\.0",
    ),
]


@pytest.mark.parametrize(("build", "error", "match"), [b[1:] for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_refused_at_construction(build: Callable[[], Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


# Checks that need the run (at fit start, through Schedule.check): (id, schedule, run, match)
BAD_FOR_THE_RUN: list[tuple[str, Schedule, Run, str]] = [
    (
        "phases-longer-than-run",
        Phases([(Warmup(), "8 steps"), (Cosine(), "1 epochs")]),
        Run(total_steps=10, steps_per_epoch=4),
        r"the phases add up to 12 steps \(8 steps \+ 1 epochs = 4 steps\), but the run has 10 steps; shorten",
    ),
    (
        "nested-phases-longer-than-their-phase",
        Phases([(Warmup(), "8 steps"), (Phases([(Constant(), "4 steps"), (Linear(), "4 steps")]), None)]),
        Run(total_steps=10),
        r"add up to 8 steps \(4 steps \+ 4 steps\), but the enclosing phase has 2 steps",
    ),
    ("cosine-unknown-length", Cosine(), Run(), r"Cosine\(\) needs a run of known length.*max_steps"),
    ("open-phase-first-unknown-length", Phases([(Constant(), None), (Linear(), "5 steps")]), Run(), r"known length"),
    (
        "step-epochs-unknown",
        Step("2 epochs"),
        Run(total_steps=100),
        r"2 epochs needs the epoch length.*previewing a schedule, pass it \(schedule\(step, total_steps=\.\.\., "
        r"steps_per_epoch=\.\.\.\)\)",
    ),
    (
        "step-resolves-to-zero",
        Step(Epochs(1e-12)),
        Run(total_steps=10, steps_per_epoch=4),
        r"Step: `every` must be at least one step, got 1e-12 epochs = 0 steps for this run",
    ),
    (
        "inverse-sqrt-resolves-to-zero",
        InverseSqrt(Epochs(1e-12)),
        Run(total_steps=10, steps_per_epoch=4),
        r"`timescale` must be at least one step",
    ),
    (
        "restarts-resolve-to-zero",
        CosineRestarts(Epochs(1e-12)),
        Run(steps_per_epoch=4),
        r"`period` must be at least one step",
    ),
    ("cyclic-resolves-to-zero", Cyclic(up=Epochs(1e-12)), Run(steps_per_epoch=4), r"`up` must be at least one step"),
    (
        "multistep-mixed-units-out-of-order",
        MultiStep(("1 epochs", "2 steps")),
        Run(total_steps=20, steps_per_epoch=4),
        r"`milestones` must not decrease, got \[4, 2\] steps for this run",
    ),
    (
        "one-cycle-empty-rise",
        OneCycle(pct_start=0.1),
        Run(total_steps=10),
        r"the rising phase is empty \(pct_start=0\.1 of 10 steps\); raise `pct_start`",
    ),
    (
        "transformers-warmup-longer-than-run",
        TransformersSchedule("cosine", 12),
        Run(total_steps=10),
        r"num_warmup_steps=12 is longer than the run's 10 optimizer steps.*never reach its peak",
    ),
    (
        "transformers-wsd-longer-than-run",
        TransformersSchedule("warmup_stable_decay", 2, (("num_decay_steps", 5), ("num_stable_steps", 6))),
        Run(total_steps=10),
        r"num_warmup_steps \+ num_decay_steps \+ num_stable_steps = 13 is more than the run's 10.*cut short",
    ),
    (
        "transformers-wsd-no-room-for-decay",
        TransformersSchedule("warmup_stable_decay", 4, (("num_decay_steps", 8),)),
        Run(total_steps=10),
        r"num_warmup_steps \+ num_decay_steps = 12 is more than the run's 10",
    ),
    (
        "transformers-floor-unbound",
        TransformersSchedule("polynomial", 2),
        Run(total_steps=10),
        r"an absolute floor needs the optimizer's defaults\['lr'\]: `lr_end` \(1e-07\) is an LR.*to preview this "
        r"schedule, give it: TransformersSchedule\(\.\.\., reference_lr=<the optimizer's lr>\)",
    ),
    # shapes that grow each step, fine in a short phase, refused over a span where they pass 1e6 × the peak (before:
    # an OverflowError from gamma ** k at fit start or mid-run, or LRs of 1e20 × the peak with no word)
    (
        "exponential-growth-over-the-run",
        Exponential(gamma=1.01),
        Run(total_steps=100_000),
        r"^Exponential\(gamma=1\.01\) grows by gamma=1\.01 at each step, without bound, and it spans 100000 steps: its "
        r"multiplier passes 1e\+06 × the peak LR at step 1389; use a smaller gamma, give it an `end` \(its ceiling, "
        r"e\.g\. end=10\.0\), or put it in a phase of at most 1388 steps$",
    ),
    (
        "exponential-growth-run-of-unknown-length",
        Exponential(gamma=1.01),
        Run(),
        r"without bound, and the run's length is unknown: its multiplier passes 1e\+06 × the peak LR at step 1389",
    ),
    (
        "step-growth",
        Step("10 steps", gamma=2.0),
        Run(total_steps=1000),
        r"Step\(every=10 steps, gamma=2\.0\) multiplies by gamma=2\.0 every 10 steps, without bound.*passes 1e\+06 × "
        r"the peak LR at step 200; use a gamma of at most 1 \(a decay\), a smaller one or a longer `every`",
    ),
    (
        "multistep-growth",
        MultiStep(tuple(f"{k} steps" for k in range(1, 8)), gamma=10.0),
        Run(total_steps=100),
        r"multiplies by gamma=10\.0 at each of its 7 milestones.*at step 7; use a smaller gamma or fewer milestones",
    ),
    (
        "cyclic-exp-range-growth",
        Cyclic(up="10 steps", mode="exp_range", gamma=1.01),
        Run(total_steps=100_000),
        r"scales its cycles by gamma=1\.01 at each step \(mode='exp_range'\).*the top of its cycles passes 1e\+06 × "
        r"the peak LR at step 1400; use a gamma of at most 1",
    ),
    (
        "restarts-growing-peaks",
        CosineRestarts(period="1 steps", decay=2.0),
        Run(total_steps=5000),
        r"raises each cycle's peak by decay=2\.0.*at step 20; use a decay of at most 1 or a `limit` of at most 20",
    ),
    (
        "growth-in-the-open-phase",
        Phases([(Warmup(), "100 steps"), (Exponential(gamma=1.01), None)]),
        Run(total_steps=100_000),
        r"^phase 2 of 2 \(Exponential\(gamma=1\.01\) for the rest of the run\): Exponential\(gamma=1\.01\) .* it spans "
        r"99900 steps: its multiplier passes 1e\+06 × the peak LR at step 1489 of the run \(its own step 1389\)",
    ),
    (
        "growth-played-backwards",
        Reversed(Exponential(gamma=1.01)),
        Run(total_steps=5000),
        r"^Reversed plays Exponential\(gamma=1\.01\) backwards, from the end of its span: .* at step 0 of the run",
    ),
]


@pytest.mark.parametrize(
    ("schedule", "run", "match"), [b[1:] for b in BAD_FOR_THE_RUN], ids=[b[0] for b in BAD_FOR_THE_RUN]
)
def test_what_does_not_fit_the_run_is_refused_by_check(schedule: Schedule, run: Run, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        schedule.check(run.total_steps, run)


def test_a_shape_that_grows_each_step_fits_a_span_where_it_stays_below_the_bound() -> None:
    """A doubling warmup phase, growth held at a ceiling, and growth whose bound lies past the span all pass check;
    and a ceiling is held however far the step (before, ``1.01 ** 100000`` raised an OverflowError under it)."""
    run = Run(total_steps=100_000)
    doubling = Phases([(Exponential(start=2.0**-10, gamma=2.0), "10 steps"), (Cosine(), None)])
    for schedule in (
        doubling,
        Exponential(gamma=1.01, end=10.0),
        Step("10000 steps", gamma=2.0),  # 2^10 × the peak at the end of the run: below 1e6
        Cyclic(up="10 steps", mode="exp_range", gamma=1.0001),
        CosineRestarts(period="1 steps", decay=2.0, limit=19),
    ):
        schedule.check(run.total_steps, run)
    assert Exponential(gamma=1.01, end=10.0)(100_000, total_steps=200_000) == 10.0
    assert Exponential(gamma=1.01)(1388) < 1e6 and [doubling(k, total_steps=100_000) for k in (9, 10)] == [0.5, 1.0]
    Phases([(Exponential(gamma=1.01), "1388 steps"), (Cosine(), None)]).check(run.total_steps, run)  # the fix it names
    with pytest.raises(ValueError, match=r"at step 1389 of the run"):
        Phases([(Exponential(gamma=1.01), "1389 steps"), (Cosine(), None)]).check(run.total_steps, run)


def test_a_co_scheduled_momentum_that_falls_below_0_within_the_span_is_refused_by_check_momentum() -> None:
    """Cyclic(mode="exp_range", gamma > 1) moves the momentum as ``max − (max − base)·s·gamma^k``: below 0 once
    ``s·gamma^k > 9.5`` for (0.85, 0.95), long before its LR's cycles pass 10⁶ × the peak. Before, nothing refused it,
    and a fit wrote beta1 = -0.011 at step 9 of 20, -165 at step 19, into Adam."""
    run = Run(total_steps=20)
    cyclic = Cyclic(low=0.1, up="4 steps", mode="exp_range", gamma=1.5, momentum=(0.85, 0.95))
    assert cyclic.momentum_at(8, None, run) == pytest.approx(0.95) and cyclic.momentum_at(9, None, run) < 0
    cyclic.check(20, run)  # its LR stays below the bound over 20 steps
    with pytest.raises(ValueError) as caught:
        cyclic.check_momentum(20, run)
    assert str(caught.value) == (
        "Cyclic(up=4 steps, mode='exp_range', gamma=1.5, momentum=(0.85, 0.95)) co-schedules the momentum (SGD's "
        "`momentum`, Adam's `betas[0]`) as max − (max − base)·s·gamma^k with gamma=1.5 > 1 (mode='exp_range'), and "
        "it spans 20 steps: the momentum is -0.01108, below 0, at step 9, and torch, which checks it only when the "
        "optimizer is built, trains with it as written; use a gamma of at most 1 (below 1, exp_range shrinks the "
        "cycles) or momentum=None, or put it in a phase of at most 8 steps"
    )
    phased = Phases([(Warmup(), "2 steps"), (cyclic, None)])
    with pytest.raises(ValueError, match=r"^phase 2 of 2 \(Cyclic\(.*for the rest of the run\): .* it spans 18 steps: "
                       r"the momentum is -0\.01108, below 0, at step 11 of the run \(its own step 9\)"):  # fmt: skip
        phased.check_momentum(20, run)
    with pytest.raises(ValueError, match=r"the run's length is unknown: the momentum is -0\.01108, below 0, at step 9"):
        cyclic.check_momentum(None, Run())
    Phases([(cyclic, "8 steps"), (Cosine(), None)]).check_momentum(20, run)  # the fix it names
    # the modes whose amplitude does not grow keep the momentum within [base, max], however long the span
    long = Run(total_steps=10_000)
    for fits in (
        Cyclic(up="4 steps", mode="exp_range", gamma=0.99, momentum=(0.85, 0.95)),
        Cyclic(up="4 steps", mode="triangular2", momentum=(0.0, 0.99)),
        OneCycle(three_phase=True, momentum=(0.0, 0.99)),
    ):
        fits.check_momentum(long.total_steps, long)
        momenta = [fits.momentum_for(k, long) for k in range(0, 10_000, 7)]
        assert all(0.0 <= m < 1.0 for m in momenta if m is not None)
    Cyclic(up="4 steps", mode="exp_range", gamma=1.5, momentum=(0.9, 0.9)).check_momentum(20, run)  # held at 0.9


@pytest.mark.parametrize(
    "schedule", [Linear(), Warmup(), Reversed(Linear()), CosineRestarts(cycles=2), OneCycle()], ids=type
)
def test_a_shape_that_needs_its_span_refuses_to_evaluate_without_one(schedule: Schedule) -> None:
    with pytest.raises(ValueError, match=r"needs a (span|run) of known length"):
        schedule.at(3, None, Run())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: Cosine()(5),
            r"Cosine\(\) needs the run's length to be evaluated: pass total_steps=N.*"
            r"e\.g\. schedule\(5, total_steps=1000\)",
        ),
        (lambda: Phases([(Warmup(), "5%"), (Constant(), None)])(5), r"needs the run's length.*pass total_steps=N"),
        (lambda: TransformersSchedule("cosine", 10)(5), r"transformers 'cosine'.*pass total_steps=N"),
        (lambda: Cosine()(-1, total_steps=10), r"Cosine: `step` is an optimizer step, a whole number >= 0, got -1"),
        (lambda: Linear()(1.5, total_steps=10), r"Linear: `step` .* got 1\.5; steps are counted.*pass an int"),
        (lambda: Constant()(float("nan")), r"Constant: `step` .* got nan"),
        (lambda: Exponential(gamma=1.01)(100_000, total_steps=200_000), r"passes 1e\+06 × the peak LR at step 1389"),
        (lambda: Exponential(gamma=1.01)(5000), r"the run's length is unknown: .* at step 1389"),
        (
            lambda: Phases([(Warmup(), "2 steps"), (Step("1 steps", gamma=2.0), None)])(3000, total_steps=5000),
            r"phase 2 of 2 .* at step 22 of the run \(its own step 20\)",
        ),
    ],
    ids=[
        "cosine-no-total",
        "fraction-no-total",
        "transformers-no-total",
        "negative",
        "fractional",
        "nan",
        "growth-past-the-bound",
        "growth-no-total",
        "growth-in-a-phase",
    ],
)
def test_a_preview_refuses_a_bad_step_or_a_missing_length_and_names_the_fix(call: Any, match: str) -> None:
    """Before, ``Cosine()(5)`` said only "this shape needs a span of known length", and ``Cosine()(-1, total_steps=10)``
    and ``Linear()(1.5, total_steps=10)`` returned values (1.0 and 0.85) for steps no run has."""
    with pytest.raises(ValueError, match=match):
        call()


def test_a_preview_takes_an_integral_step_of_any_type() -> None:
    assert Cosine()(2.0, total_steps=4) == Cosine()(np.int64(2), total_steps=4) == Cosine()(2, total_steps=4)
    assert Phases([(Warmup(), "2 steps"), (Cosine(), "4 steps")])(0) == 0.5  # fixed lengths need no total


def test_schedules_that_fit_pass_check() -> None:
    run = Run(total_steps=10, steps_per_epoch=4)
    for schedule in (
        Phases([(Warmup(), "6 steps"), (Cosine(), "1 epochs")]),
        TransformersSchedule("cosine", 10),  # a warmup as long as the run is allowed, as in transformers
        MultiStep(("1 epochs", "5 steps")),
        OneCycle(pct_start=0.2),
    ):
        schedule.check(run.total_steps, run)


# --- every argument of every shape changes something -------------------------------------------------------

# (schedule, the field to change, another valid value); evaluated over 24 steps, 6 per epoch
ARGUMENTS: list[tuple[Schedule, str, Any]] = [
    (Constant(), "value", 0.5),
    (Linear(), "start", 0.5),
    (Linear(), "end", 0.5),
    (Cosine(), "start", 0.5),
    (Cosine(), "end", 0.5),
    (Cosine(), "exponent", 2.0),
    (Cosine(), "k_decay", 2.0),
    (Cosine(), "cycles", 1.0),
    (Polynomial(), "start", 0.5),
    (Polynomial(), "end", 0.5),
    (Polynomial(), "power", 2.0),
    (OneMinusSqrt(), "start", 0.5),
    (OneMinusSqrt(), "end", 0.5),
    (Exponential(end=0.1), "start", 0.5),
    (Exponential(end=0.1), "end", 0.2),
    (Exponential(gamma=0.9), "gamma", 0.8),
    (Exponential(gamma=0.9, end=0.5), "end", 0.6),
    (Warmup(), "curve", "cosine"),
    (Warmup(), "start", 0.5),
    (Warmup(), "end", 0.5),
    (Step("5 steps"), "every", "1 epochs"),
    (Step("5 steps"), "gamma", 0.5),
    (MultiStep(("5 steps",)), "milestones", ("6 steps",)),
    (MultiStep(("5 steps",)), "gamma", 0.5),
    (InverseSqrt("10 steps"), "timescale", "1 epochs"),
    (Phases([(Warmup(), "2 steps"), (Cosine(), None)]), "phases", [(Warmup(), "4 steps"), (Cosine(), None)]),
    (Reversed(Linear()), "inner", Linear(0.5, 0.0)),
    (CosineRestarts("5 steps"), "period", "1 epochs"),
    (CosineRestarts(cycles=2), "cycles", 3),
    (CosineRestarts("5 steps"), "period_mult", 2.0),
    (CosineRestarts("5 steps"), "decay", 0.5),
    (CosineRestarts("5 steps"), "limit", 2),
    (CosineRestarts("5 steps"), "start", 0.5),
    (CosineRestarts("5 steps"), "end", 0.5),
    (Cyclic(up="3 steps"), "low", 0.5),
    (Cyclic(up="3 steps"), "high", 0.5),
    (Cyclic(up="3 steps"), "up", "4 steps"),
    (Cyclic(up="3 steps"), "down", "5 steps"),
    (Cyclic(up="3 steps"), "mode", "triangular2"),
    (Cyclic(up="3 steps", mode="exp_range"), "gamma", 0.9),
    (OneCycle(), "pct_start", 0.5),
    (OneCycle(), "div_factor", 10.0),
    (OneCycle(), "final_div_factor", 10.0),
    (OneCycle(), "three_phase", True),
    (OneCycle(), "anneal", "linear"),
    (TransformersSchedule("linear"), "name", "cosine"),
    (TransformersSchedule("linear"), "num_warmup_steps", 3),
    (TransformersSchedule("cosine"), "arguments", (("num_cycles", 1.0),)),
    (TransformersSchedule("polynomial", reference_lr=0.1), "reference_lr", 0.2),
]


def _values(schedule: Schedule) -> list[float]:
    run = Run(total_steps=24, steps_per_epoch=6)
    return [schedule.at(k, 24, run) for k in range(25)]


@pytest.mark.parametrize(
    ("schedule", "name", "other"), ARGUMENTS, ids=[f"{type(s).__name__}-{n}" for s, n, _ in ARGUMENTS]
)
def test_every_argument_changes_the_values(schedule: Schedule, name: str, other: Any) -> None:
    changed = type(schedule)(**{**{f.name: getattr(schedule, f.name) for f in fields(schedule)}, name: other})
    assert _values(changed) != pytest.approx(_values(schedule), abs=1e-9)


def test_momentum_arguments_change_the_momentum() -> None:
    run = Run(total_steps=24)
    for schedule in (Cyclic(up="3 steps", momentum=(0.8, 0.9)), OneCycle(momentum=(0.8, 0.9))):
        base = [schedule.momentum_at(k, 24, run) for k in range(24)]
        other = type(schedule)(
            **{**{f.name: getattr(schedule, f.name) for f in fields(schedule)}, "momentum": (0.7, 0.9)}
        )
        assert [other.momentum_at(k, 24, run) for k in range(24)] != base


def test_the_multistep_preset_refuses_a_single_string_for_its_milestones() -> None:
    with pytest.raises(TypeError, match=r"`milestones` must be a sequence.*'10 epochs', '20 epochs'"):
        preset("multistep", milestones="10 epochs")
    assert preset("multistep", milestones=["10 steps", "20 steps"], gamma=0.5)(15) == 0.5


@pytest.mark.parametrize("total", [200, 1_000_003])
def test_the_key_steps_hold_one_cycles_peak_and_both_sides_of_each_drop_read_or_sampled(total: int) -> None:
    from lr_callbacks.schedule.plan import key_steps

    run = Run(total_steps=total)
    peak = round(0.3 * total - 1)
    assert peak in key_steps(OneCycle(), run)
    assert OneCycle().multiplier(peak, run) == pytest.approx(1.0, abs=1e-6)
    drops = [int(total * 0.4), int(total * 0.7)]
    steps = key_steps(MultiStep([Steps(d) for d in drops], gamma=0.1), run)
    assert all(d - 1 in steps and d in steps for d in drops), steps
    # a warm restart every 50 steps: both sides of the first ones, at most 12 of them in all
    restarts = [s for s in key_steps(CosineRestarts(Steps(50)), run) if s % 50 in (0, 49) and 0 < s < 600]
    assert restarts[:4] == [49, 50, 99, 100] and len(restarts) <= 12


def test_restarts_whose_span_ends_on_a_restart_hold_the_floor_not_the_next_peak(tmp_path: Any) -> None:
    """A span that ends exactly on a restart holds the cycle it closes at its floor ``end``.

    Before, it held the value of the restart step that follows the span: a last phase of 8 steps of 4-step cycles
    ran its remaining steps at the peak (1.0, here 0.1 of the group's 0.1), and past the end of a run of 300 steps
    of 100-step cycles the LR jumped from ~0 back to the peak and stayed there.
    """
    from lr_callbacks import LRSchedule
    from tests.helpers import TinyModel, loader, make_trainer

    model = TinyModel()
    schedule = Phases([(CosineRestarts("4 steps", end=0.1), "8 steps")])
    trainer = make_trainer(tmp_path, max_steps=12, callbacks=[LRSchedule(schedule)])
    trainer.fit(model, loader())
    seen = [lrs[0] / 0.1 for lrs in model.seen_lrs]
    cycle = [0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t / 4)) for t in range(4)]  # 1.0, 0.868, 0.55, 0.232
    assert seen[:8] == pytest.approx(cycle * 2, abs=1e-12)  # two cycles, as planned
    assert seen[8:] == pytest.approx([0.1] * 4, abs=1e-12)  # then the floor the last cycle closed on
    past_the_end = [CosineRestarts("100 steps")(k, total_steps=300) for k in (299, 300, 500)]
    assert past_the_end[0] < 1e-3 and past_the_end[1:] == [0.0, 0.0]
    growing = CosineRestarts("5 steps", period_mult=2.0, decay=0.5, end=0.2)  # restarts at 0, 5, 15, 35
    assert [growing(k, total_steps=35) for k in (35, 60)] == [0.2, 0.2]
    assert growing(35, total_steps=36) == 0.2 + (0.125 - 0.2) * 1.0  # a restart inside the run is kept (as torch's)


def test_triangular2_goes_on_past_1024_cycles() -> None:
    """Before, its amplitude ``1 / 2.0 ** (cycle - 1)`` raised OverflowError from cycle 1025 on: a fit with
    Cyclic(up="1 steps", mode="triangular2") stopped at step 2048 (at step 8192 with up="4 steps")."""
    clr = Cyclic(low=0.1, up="1 steps", mode="triangular2", momentum=(0.85, 0.95))
    run = Run(total_steps=3000)
    assert [clr(k) for k in (1, 3)] == pytest.approx([1.0, 0.55])
    assert [clr(k, total_steps=3000) for k in (2048, 2049, 2999)] == pytest.approx([0.1, 0.1, 0.1])
    assert clr.momentum_for(2049, run) == pytest.approx(0.95)
