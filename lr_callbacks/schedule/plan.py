"""The planned LR curve of a schedule: sampled points, a table of key steps, and an image.

Shared by :class:`~lr_callbacks.LRSchedule` (``lr_schedule/plan`` at fit start) and the
``python -m lr_callbacks plot`` preview, so both draw the same picture.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import pairwise

import numpy as np

from lr_callbacks.core.durations import Run
from lr_callbacks.core.plot import Line, Marker, render
from lr_callbacks.schedule.composites import Phases
from lr_callbacks.schedule.shapes import Schedule
from lr_callbacks.schedule.transformers import TransformersSchedule

__all__ = ["UNKNOWN_LENGTH_PREVIEW", "key_steps", "plan_image", "plan_table", "sample_steps"]

#: How many steps the plan shows when the run's length is unknown.
UNKNOWN_LENGTH_PREVIEW = 10_000

#: Runs up to this many steps are read at every step for their turns and drops; longer ones are sampled, then
#: read at every step around what the samples show.
_EXACT_READ = 20_000

#: At most this many turns and drops enter the table (a cyclical schedule has one per cycle): the first ones.
_MAX_TURNS = 12


def sample_steps(total: int, points: int = 1000) -> list[int]:
    """Up to ``points`` steps spread over ``[0, total)``, always including the first and the last."""
    if total <= points:
        return list(range(total))
    return sorted({round(x) for x in np.linspace(0, total - 1, points)})


def key_steps(schedule: Schedule, run: Run) -> list[int]:
    """Step 0, each phase's first and last step (nested phases too), the curve's turns and drops, a few steps
    between, and the last step.

    A turn is a step where the curve changes direction (one-cycle's peak, a cycle's top and bottom); a drop is
    a jump between two steps where the curve is otherwise flat or smooth (a step decay, a warm restart): both
    sides of it enter the table.

    >>> from lr_callbacks import OneCycle, Step, TransformersSchedule
    >>> wsd = TransformersSchedule("warmup_stable_decay", 2, (("num_decay_steps", 3),))
    >>> key_steps(wsd, Run(total_steps=12))
    [0, 1, 2, 3, 6, 8, 9, 11]
    >>> key_steps(OneCycle(pct_start=0.2), Run(total_steps=100))
    [0, 19, 25, 50, 75, 99]
    >>> key_steps(Step(every="30 steps"), Run(total_steps=100))
    [0, 25, 29, 30, 50, 59, 60, 75, 89, 90, 99]
    """
    total = run.total_steps if run.total_steps is not None else UNKNOWN_LENGTH_PREVIEW
    steps = {0, max(total - 1, 0)}
    steps.update(int(total * f) for f in (0.25, 0.5, 0.75))
    steps.update(_boundaries(schedule, 0.0, run.total_steps, run))
    if run.total_steps is not None:
        steps.update(_turns(schedule, run, total))
    return sorted(s for s in steps if 0 <= s < max(total, 1))


def _turns(schedule: Schedule, run: Run, total: int) -> list[int]:
    """The steps where ``schedule``'s curve turns or drops (see :func:`key_steps`), the first :data:`_MAX_TURNS`.

    The first :data:`_EXACT_READ` steps are read one by one (a cyclical schedule's first cycles, whatever their
    period); the rest is sampled, and read one by one around each turn or drop the samples show.
    """
    found = set(_read_turns(schedule, run, list(range(min(total, _EXACT_READ)))))
    if total > _EXACT_READ:
        sampled = sample_steps(total, _EXACT_READ)
        for i in _turn_indices([schedule.multiplier(s, run) for s in sampled]):
            if len(found) >= _MAX_TURNS:
                break
            window = list(range(sampled[max(i - 2, 0)], sampled[min(i + 2, len(sampled) - 1)] + 1))
            found.update(_read_turns(schedule, run, window))
    return sorted(found)[:_MAX_TURNS]


def _read_turns(schedule: Schedule, run: Run, steps: list[int]) -> list[int]:
    """The turns and drops among consecutive ``steps``, read at each of them."""
    indices = _turn_indices([schedule.multiplier(s, run) for s in steps])
    return sorted({steps[i] for i in indices})


def _turn_indices(values: list[float]) -> list[int]:
    """The indices where ``values`` change direction, and both sides of each jump (a change more than 4× the
    changes beside it)."""
    diffs = [b - a for a, b in pairwise(values)]
    tiny = 1e-12 * max((abs(v) for v in values), default=0.0)
    found: set[int] = set()
    for i, d in enumerate(diffs):  # d: from values[i] to values[i + 1]
        after = diffs[i + 1] if i + 1 < len(diffs) else 0.0
        before = diffs[i - 1] if i > 0 else 0.0
        if d * after < 0 and abs(d) > tiny and abs(after) > tiny:
            found.add(i + 1)
        if abs(d) > tiny and abs(d) > 4 * max(abs(before), abs(after)):
            found.update({i, i + 1})
    return sorted(found)


def _boundaries(schedule: Schedule, start: float, span: float | None, run: Run) -> set[int]:
    """The first and last step of every phase of ``schedule``, which starts at ``start`` and lasts ``span``."""
    if isinstance(schedule, TransformersSchedule):
        return _boundaries(schedule.phases_schedule, start, span, run)
    if not isinstance(schedule, Phases):
        return set()
    found: set[int] = set()
    for phase, length in zip(schedule.phases, schedule._lengths(span, run)):
        if length is None:
            break
        found.update({int(start), max(int(start + length) - 1, 0)})
        found.update(_boundaries(phase.schedule, start, length, run))
        start += length
    return found


def plan_table(schedule: Schedule, run: Run, peaks: Mapping[str, float]) -> str:
    """A markdown table of the LR of each group at the key steps.

    >>> from lr_callbacks import Cosine
    >>> print(plan_table(Cosine(), Run(total_steps=4), {"group0": 0.1}))
    | step | group0 |
    |---:|---:|
    | 0 | 0.1 |
    | 1 | 0.08536 |
    | 2 | 0.05 |
    | 3 | 0.01464 |
    """
    names = list(peaks)
    rows = ["| step | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for step in key_steps(schedule, run):
        multiplier = schedule.multiplier(step, run)
        rows.append(f"| {step} | " + " | ".join(f"{peaks[n] * multiplier:.4g}" for n in names) + " |")
    return "\n".join(rows)


def by_schedule(groups: Iterable[tuple[str, Schedule, float]]) -> list[tuple[Schedule, dict[str, float]]]:
    """Group ``(name, schedule, peak)`` triples by schedule (the same object), keeping the groups' order."""
    found: dict[int, tuple[Schedule, dict[str, float]]] = {}
    for name, schedule, peak in groups:
        found.setdefault(id(schedule), (schedule, {}))[1][name] = peak
    return list(found.values())


def plan_tables(groups: Iterable[tuple[str, Schedule, float]], run: Run) -> str:
    """One :func:`plan_table` per schedule, headed by its description: ``LRSchedule``'s ``lr_schedule/summary``.

    >>> from lr_callbacks import Constant, Linear
    >>> print(plan_tables([("body", Linear(), 1.0), ("head", Constant(), 0.5)], Run(total_steps=2)))
    **Linear()**
    <BLANKLINE>
    | step | body |
    |---:|---:|
    | 0 | 1 |
    | 1 | 0.5 |
    <BLANKLINE>
    **Constant()**
    <BLANKLINE>
    | step | head |
    |---:|---:|
    | 0 | 0.5 |
    | 1 | 0.5 |
    """
    return "\n\n".join(f"**{s.describe()}**\n\n{plan_table(s, run, peaks)}" for s, peaks in by_schedule(groups))


def plan_image(curves: Mapping[str, tuple[list[int], list[float]]], title: str) -> np.ndarray:
    """Render each group's planned LR over the steps as an ``H×W×3`` image."""
    lines = [Line(xs, ys, label=name) for name, (xs, ys) in curves.items()]
    markers: list[Marker] = []
    return render(lines, title=title, xlabel="optimizer step", ylabel="learning rate", markers=markers)
