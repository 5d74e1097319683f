"""The finder's budget and the confirm trials' rules: how long the sweep and the trials run, the trials'
cooldown, the successive-halving rungs, and the choice with its noise margin.

Pure functions of plain numbers (stdlib only). The shares are stated, not tuned: the default sweep takes at
most a quarter of the run (a tenth when the user lists the confirm candidates). In confirm mode the sweep,
the stability probe and the trials together take :data:`CONFIRM_SHARE` of the run (the issue's cost goal):
the trials get what the sweep and the probe leave of it (:func:`trial_budget`), and none run when that
leaves less than :data:`MIN_TRIAL_STEPS` per trial. A finder that would cost more than
:data:`WARN_SHARE` of the training it serves gets a warning with the numbers (:func:`cost_warning`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CONFIRM_SHARE",
    "LIST_SWEEP_SHARE",
    "MAX_SWEEP_STEPS",
    "MIN_TRIAL_STEPS",
    "SWEEP_SHARE",
    "WARN_SHARE",
    "Choice",
    "choose",
    "cooldown",
    "cost_warning",
    "probe_cost_warning",
    "readable_steps",
    "rungs",
    "sparse_sweep_warning",
    "survivors",
    "sweep_steps",
    "trial_budget",
]

MAX_SWEEP_STEPS = 100
"""The longest default sweep (8 decades at 12.5 points per decade)."""

SWEEP_SHARE = 0.25
"""The most of the run the default sweep takes."""

CONFIRM_SHARE = 0.35
"""Confirm mode's whole default budget as a share of the run: sweep, stability probe and trials together."""

LIST_SWEEP_SHARE = 0.10
"""The most of the run the default sweep takes when the user lists the candidates (``confirm=[...]``): there the
sweep's answer only breaks ties between trials, so the trials get the rest of the budget. With
``confirm=True`` the sweep is the default's (:data:`SWEEP_SHARE`): the candidates are built on its answer,
and a shorter sweep answers worse: on the benchmark's tuning pairs a confirm sweep of 15% or 20% of the run
instead of 25% raised the median regret from 0.044 to 0.073 and 0.081, and at 15% two of its answers
diverged in full runs (the stability probe, holding them 28 steps, had found them stable)."""

WARN_SHARE = CONFIRM_SHARE
"""A sweep and trials planned beyond this share of the run get a warning with the numbers."""

MIN_TRIAL_STEPS = 8
"""A final rung shorter than this is too short to tell the candidates apart: with a ``confirm_length`` the
choice is then the anchor's (``trials_inconclusive``); with the default budget no trial runs
(``trials_skipped``)."""

_Z = 2.0  # two standard errors of a difference: the 95% level at which a trial beats another


def sweep_steps(run_steps: int | None, listed: bool, minimum: int = 8, readable: int = 0) -> int:
    """The default sweep's length: :data:`SWEEP_SHARE` of the run (:data:`LIST_SWEEP_SHARE` when the confirm
    trials' candidates are ``listed`` by the user), at most :data:`MAX_SWEEP_STEPS` and at least ``minimum``;
    100 when the run's length is unknown.

    Unless the candidates are listed, the sweep's answer is the finder's answer (the confirm trials are built
    on it), so it is never shorter than
    ``readable`` (capped at :data:`MAX_SWEEP_STEPS`): the points a curve needs to be read at all, one per
    smoothing width of the range (:func:`readable_steps`). A run too short for both gets the readable
    sweep, and :func:`cost_warning` says what it costs.

    >>> sweep_steps(1000, False), sweep_steps(300, False), sweep_steps(300, True), sweep_steps(None, True)
    (100, 75, 30, 100)
    >>> sweep_steps(48, False, readable=40), sweep_steps(48, True, readable=40), sweep_steps(480, False, readable=40)
    (40, 8, 100)
    """
    if run_steps is None:
        return MAX_SWEEP_STEPS
    share = LIST_SWEEP_SHARE if listed else SWEEP_SHARE
    floor = minimum if listed else max(minimum, readable)
    return max(minimum, min(MAX_SWEEP_STEPS, max(floor, math.floor(share * run_steps))))


def readable_steps(min_lr: float, max_lr: float, window: float) -> int:
    """The fewest sweep steps whose curve can be read: one point per smoothing ``window`` (in decades) of
    the range, so that every smoothed value rests on a few points (the Gaussian's ±1 width holds two or three).

    >>> readable_steps(1e-7, 10.0, 0.2)
    40
    """
    return math.ceil(math.log10(max_lr / min_lr) / window - 1e-9)


def sparse_sweep_warning(num_steps: int, min_lr: float, max_lr: float, window: float) -> str | None:
    """A warning with the numbers when a sweep of ``num_steps`` (the user's) has fewer points than
    :func:`readable_steps`, one per smoothing ``window`` of the range: the analysis then widens its window
    (:func:`~lr_callbacks.finder.analysis.effective_window`) until the descent is smoothed away, and each point's
    loss, taken before its step, shows the LR of the point before, a decade or more away. On the digits MLP (SGD),
    12 steps over the default 8 decades suggested 4.3 (``min_at_end``, whose last LR no loss had seen), 10 steps
    read the clear fall and rise as ``diverged_at_once``; 100 steps suggested 0.29. The default ``num_steps``
    never goes below the readable count; ``None`` when ``num_steps`` reaches it.

    >>> sparse_sweep_warning(40, 1e-7, 10.0, 0.2) is None
    True
    >>> sparse_sweep_warning(12, 1e-7, 10.0, 0.2).split(": ")[1][:60]
    'num_steps=12 gives the sweep 1.5 points per decade of LR (8 '
    """
    readable = readable_steps(min_lr, max_lr, window)
    if num_steps >= readable:
        return None
    decades = math.log10(max_lr / min_lr)
    return (
        f"LRFinder: num_steps={num_steps} gives the sweep {num_steps / decades:.2g} points per decade of LR "
        f"({decades:.3g} decades from min_lr={min_lr:.3g} to max_lr={max_lr:.3g}), fewer than one per smoothing "
        f"window ({window:g} decades: {readable} steps): the curve cannot be read at that spacing, so its answer "
        "and flags move with num_steps (too few points can suggest an LR past the edge, or read a fall and a rise "
        f"as diverged_at_once); give num_steps={readable} or more, or a narrower range, or leave num_steps at its "
        "default"
    )


def trial_budget(run_steps: int, spent: int) -> int:
    """All trials together, by default: what is left of :data:`CONFIRM_SHARE` of the run after the ``spent``
    steps of the sweep and the probe (0 when nothing is left).

    >>> trial_budget(300, 40), trial_budget(300, 82), trial_budget(120, 60)
    (65, 23, 0)
    """
    return max(0, math.floor(CONFIRM_SHARE * run_steps) - spent)


def rungs(candidates: int, budget: int | None = None, final: int | None = None) -> list[tuple[int, int]]:
    """Successive halving: ``(trials, steps)`` per rung. Every candidate runs first; each rung keeps the better
    half (rounded up) for a rung twice as long, until two are left; the last rung decides.

    Give either the steps of all trials together (``budget``) or the last rung's length (``final``): the last
    rung is then exactly ``final`` steps, and each rung before it half the next one (rounded down, at least 1).
    Before, the rungs were doubled up from the first: ``rungs(3, final=15)`` ended in 14 steps and
    ``rungs(5, final=2)`` in 4, not the ``confirm_length`` asked for.

    >>> rungs(3, budget=60)
    [(3, 8), (2, 16)]
    >>> rungs(3, final=40), rungs(2, final=40), rungs(5, budget=100)
    ([(3, 20), (2, 40)], [(2, 40)], [(5, 5), (3, 10), (2, 20)])
    >>> rungs(3, final=15), rungs(5, final=10), rungs(5, final=2)
    ([(3, 7), (2, 15)], [(5, 2), (3, 5), (2, 10)], [(5, 1), (3, 1), (2, 2)])
    """
    counts = [candidates]
    while counts[-1] > 2:
        counts.append(math.ceil(counts[-1] / 2))
    depth = len(counts) - 1
    if final is not None:  # halved down from the last rung, which is the length asked for
        return [(count, max(1, final // 2 ** (depth - r))) for r, count in enumerate(counts)]
    if budget is None:
        raise ValueError("rungs needs `budget` (all trials' steps) or `final` (the last rung's steps)")
    weight = sum(count * 2**r for r, count in enumerate(counts))
    first = max(1, budget // weight)
    return [(count, first * 2**r) for r, count in enumerate(counts)]


def cooldown(step: int, steps: int) -> float:
    """A ``1 − √`` cooldown over the last quarter of a trial: 1 before, then ``1 − √((t + 1 − ¾T) / ¼T)`` at step
    ``t``, so that the last step (``t = T − 1``) runs at 0 and does not move the weights; the trial is scored on the
    weights the step before it left. A trial scored after its cooldown predicts a full run far better than one
    scored at its peak LR.

    >>> [round(cooldown(t, 8), 3) for t in range(8)]
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.293, 0.0]
    """
    start = 0.75 * steps
    if step < start or steps < 1:
        return 1.0
    return max(0.0, 1.0 - math.sqrt((step + 1 - start) / (steps - start)))


def survivors(scores: Sequence[float], keep: int) -> list[int]:
    """The indices of the ``keep`` lowest scores (NaN and inf last), in their original order.

    >>> survivors([0.5, math.inf, 0.2, 0.4], 2)
    [2, 3]
    """
    ranked = sorted(range(len(scores)), key=lambda i: (not math.isfinite(scores[i]), scores[i], i))
    return sorted(ranked[:keep])


@dataclass(frozen=True)
class Choice:
    """What the trials decided: the LR, whether the decision was within noise (``inconclusive``), and whether
    every candidate ended worse than the state the trials started from (``failed``: none is chosen)."""

    lr: float | None
    inconclusive: bool
    failed: bool = False


def all_worse(scores: Sequence[float], errors: Sequence[float], start: float, start_error: float) -> bool:
    """Whether every score is non-finite or above ``start`` (the validation loss of the state the trials began
    from) by more than 2 standard errors of the difference: no candidate trained, each made things worse.

    A candidate that barely moved (a tiny LR, a trial too short) is not worse: only damage counts.

    >>> all_worse([75.7, 175.7], [0.5, 0.5], start=2.3, start_error=0.05)
    True
    >>> all_worse([75.7, 2.31], [0.5, 0.05], start=2.3, start_error=0.05), all_worse([], [], 2.3, 0.05)
    (False, False)
    """
    if not scores or not math.isfinite(start):
        return False
    return all(
        not math.isfinite(s) or s - start > _Z * math.hypot(_or_zero(e), _or_zero(start_error))
        for s, e in zip(scores, errors)
    )


def choose(
    lrs: Sequence[float], scores: Sequence[float], errors: Sequence[float], anchor: float | None, too_short: bool
) -> Choice:
    """The last rung's choice: ``anchor`` unless another candidate is better by more than noise.

    Two scores are within noise when they differ by at most 2 standard errors of their difference
    (``√(se_a² + se_b²)``, the 95% level). The lowest score is taken when no other is within noise of it;
    otherwise, or when the trials were too short to tell, the candidate nearest in log to ``anchor`` (the
    finder's own answer: the probe's, or the sweep's) among those within noise of the best (all finite ones
    when too short) is taken, and the choice is ``inconclusive``.

    >>> choose([1e-4, 1e-5], [0.30, 0.50], [0.01, 0.01], anchor=1e-5, too_short=False)
    Choice(lr=0.0001, inconclusive=False, failed=False)
    >>> choose([1e-4, 1e-5], [0.30, 0.31], [0.01, 0.01], anchor=1e-5, too_short=False)
    Choice(lr=1e-05, inconclusive=True, failed=False)
    """
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    if not finite:
        return Choice(None, True)
    best = min(finite, key=lambda i: scores[i])
    tied = [
        i for i in finite if scores[i] - scores[best] <= _Z * math.hypot(_or_zero(errors[i]), _or_zero(errors[best]))
    ]
    if too_short:
        tied = finite
    if len(tied) == 1 and not too_short:
        return Choice(lrs[best], False)
    if anchor is None or anchor <= 0:
        return Choice(lrs[best], True)
    nearest = min(tied, key=lambda i: (abs(math.log(lrs[i] / anchor)), scores[i]))
    return Choice(lrs[nearest], True)


def _or_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def cost_warning(run_steps: int | None, sweep: int, trials: int, defaults: bool = False, probe: int = 0) -> str | None:
    """A warning with the numbers when the sweep, the stability probe and the trials together exceed
    :data:`WARN_SHARE` of the run.

    ``probe``: the steps of the probe's first hold (each halving costs as much again), ``trials``
    those the trials may take besides. ``defaults``: the lengths are the finder's defaults (then only a run too
    short for their minimums, a readable sweep, a hold and a step per trial, gets here, and the advice says so).

    >>> cost_warning(1000, 100, 0) is None, cost_warning(300, 100, 60)[:52]
    (True, 'LRFinder: the sweep (100 steps) and the trials (60 s')
    >>> cost_warning(300, 75, 0, defaults=True, probe=42).split(", ")[0]
    'LRFinder: the sweep (75 steps) and the stability probe (42 steps a hold'
    >>> cost_warning(48, 40, 0, defaults=True).split("%); ")[-1][:58]
    'the run is short for the finder: a sweep that can be read '
    >>> cost_warning(1500, 100, 0, defaults=True, probe=447).split("%); ")[-1][:44]
    'most of it is the stability probe, which hol'
    """
    if not run_steps:
        return None
    total = sweep + probe + trials
    if total <= WARN_SHARE * run_steps:
        return None
    lengths = (
        "num_steps or confirm_length, or leave them at their defaults, which follow the run"
        if trials
        else "num_steps, or leave it at its default, which follows the run"
    )
    probe_is_the_cost = defaults and probe > sweep  # the hold follows the run's warmup: a long one makes it the cost
    if probe_is_the_cost:
        advice = (
            f"most of it is the stability probe, which holds the answer for as long as twice your warmup ({probe} "
            f"steps); probe=False skips it (the sweep alone is {sweep} steps)"
        )
    elif defaults:
        advice = (
            "the run is short for the finder: a sweep that can be read costs that much; set the LR by hand, or set "
            "num_steps to sweep less"
        )
    else:
        advice = f"shorten {lengths}"
    if probe and not probe_is_the_cost:
        advice += ", or probe=False to skip the probe"
    parts = [f"the sweep ({sweep} steps)"]
    if probe:
        parts.append(f"the stability probe ({probe} steps a hold, as much again for each halving)")
    if trials:
        parts.append(f"the trials ({trials} steps)")
    spent = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (
        f"LRFinder: {spent} {'are planned to take' if len(parts) > 1 else 'is planned to take'} {total} optimizer "
        "steps, "
        f"{total / run_steps:.0%} of the training run ({run_steps} steps; more than {WARN_SHARE:.0%}); {advice}"
    )


def probe_cost_warning(
    run_steps: int | None, sweep: int, first_hold: int, probe_steps: int, attempts: int
) -> str | None:
    """After the stability probe: a warning with the numbers when its halvings took the sweep and the probe past
    :data:`WARN_SHARE` of the run, where the plan (the sweep and the probe's first hold, ``first_hold`` steps: what
    :func:`cost_warning` counts before the sweep) stayed within it. Before, nothing said so: on a 3,000-step run
    with a 15% warmup the first hold is 900 steps, and two halvings would have taken the finder to 93% of the run
    without a word. ``probe_steps``: the steps its ``attempts`` (holds) ran. ``None`` when the probe stayed
    within, or when :func:`cost_warning` already spoke.

    >>> probe_cost_warning(240, 60, 20, 20, 1) is None, probe_cost_warning(240, 60, 20, 40, 2)[:62]
    (True, "LRFinder: the stability probe halved the sweep's answer 1 time")
    >>> probe_cost_warning(100, 60, 20, 60, 3) is None  # already over before the sweep: cost_warning said so
    True
    """
    if not run_steps or attempts < 2:
        return None
    limit = WARN_SHARE * run_steps
    spent = sweep + probe_steps
    if spent <= limit or sweep + first_hold > limit:
        return None
    halvings = attempts - 1
    return (
        f"LRFinder: the stability probe halved the sweep's answer {halvings} time{'s' if halvings > 1 else ''} "
        f"(the LR it held did not hold), each halving a hold of {first_hold} steps more: the sweep ({sweep} steps) "
        f"and the probe ({probe_steps} steps) took {spent} optimizer steps, {spent / run_steps:.0%} of the training "
        f"run ({run_steps} steps; more than the {WARN_SHARE:.0%} planned). The run itself is unchanged (everything "
        "is restored); to spend less next time, set the LR the probe kept by hand (result.chosen_lr), or "
        "probe=False to skip the probe and take the sweep's answer unchecked"
    )
