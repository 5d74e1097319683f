"""Benchmark 3b: the watchdog benchmark's seven faults moved into the window where trouble is read as the peak's.

:mod:`benchmarks.watchdog_recovery` starts its faults at 40% of the run, past the window in which the watchdog
reads trouble as the planned peak LR's fault (while the LR warms up, and at its peak until twice the warmup's end:
steps 0-39 of the digits MLP's 400, whose 5% warmup ends at step 20). There a rollback goes back to before the LR
passed a tenth of it and keeps the scale at a tenth of the LR's share, which a passing fault does not deserve. This
runs the same seven faults, optimizers, seeds and runs as that benchmark (its :func:`run_one`), each started at
step ``start + 2 × seed`` for every start of :data:`STARTS` (25: at the peak, after the warmup; 12: inside it),
unguarded (``none``) and guarded by the default :class:`~lr_callbacks.DivergenceWatchdog` (``lr_callbacks``), plus
the unguarded clean runs every score is measured against.

The metrics are the watchdog benchmark's, from its own code (:class:`References`, :func:`fault_scores`):
recovered, damage undone (median and 95% bootstrap interval), and worse than none: a guarded run ending above the
unguarded run of the same fault and seed by more than the recovery tolerance, max(2σ of the clean seeds, 0.5% of
the clean run). The issue's promise is that the watchdog never leaves a run worse off than no watchdog would have.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from benchmarks._common import Context, fmt, log, markdown_table, quiet, stamp, write_json
from benchmarks.faults import applies
from benchmarks.models import Task
from benchmarks.watchdog_recovery import FULL as RECOVERY_FULL
from benchmarks.watchdog_recovery import QUICK as RECOVERY_QUICK
from benchmarks.watchdog_recovery import Outcome, References, Scale, fault_scores, pooled, run_one

__all__ = ["FULL", "METHODS", "QUICK", "EarlyScale", "run", "run_start", "summarize"]

METHODS = ("none", "lr_callbacks")
GUARDED = "lr_callbacks"


@dataclass(frozen=True)
class EarlyScale:
    """The watchdog benchmark's scale (its faults, optimizers, LRs, budget and seeds; no held-out faults here),
    and the steps the faults start at for seed 0 (``start + seed_stride × seed`` for the others)."""

    runs: Scale
    starts: tuple[int, ...]
    seed_stride: int = 2


FULL = EarlyScale(runs=replace(RECOVERY_FULL, held_out=()), starts=(25, 12))
"""The digits MLP's 400 steps (warmup to step 20, the peak window to step 39): from step 25 and from step 12."""
QUICK = EarlyScale(runs=replace(RECOVERY_QUICK, held_out=()), starts=(3, 1))
"""A smoke size: 40 steps (warmup to step 2, the peak window to step 3), two faults, one seed, SGD."""


def fault_step(scale: EarlyScale, start: int, seed: int) -> int:
    """The fault's first step for ``seed`` in the runs started from ``start``.

    >>> fault_step(FULL, 25, 0), fault_step(FULL, 12, 4)
    (25, 20)
    """
    return start + scale.seed_stride * seed


def run_start(task: Task, scale: EarlyScale, start: int, root: str) -> list[Outcome]:
    """Every fault × optimizer × seed of ``scale``, from ``start``, unguarded and guarded (no clean runs)."""
    outcomes = []
    for optimizer in scale.runs.optimizers:
        for name in scale.runs.faults:
            if not applies(name, optimizer):
                continue
            for seed in range(scale.runs.fault_seeds):
                step = fault_step(scale, start, seed)
                for method in METHODS:
                    outcomes.append(run_one(task, method, optimizer, name, seed, scale.runs, root, start_step=step))
    return outcomes


def _clean_runs(task: Task, scale: EarlyScale, root: str) -> list[Outcome]:
    """The unguarded clean runs (``clean_seeds`` per optimizer): the references and the recovery tolerance."""
    return [
        run_one(task, "none", optimizer, "clean", seed, scale.runs, root)
        for optimizer in scale.runs.optimizers
        for seed in range(scale.runs.clean_seeds)
    ]


def score(outcomes: Sequence[Outcome], clean: Sequence[Outcome], scale: EarlyScale, chance: float) -> dict[str, Any]:
    """Per method and optimizer: the watchdog benchmark's fault scores of one start's runs."""
    table: dict[str, Any] = {}
    for optimizer in scale.runs.optimizers:
        refs = References([*clean, *outcomes], optimizer, chance)
        for method in METHODS:
            mine = [o for o in outcomes if o.method == method and o.optimizer == optimizer]
            entry = fault_scores(mine, refs)
            entry["worse"] = [_pair(o, refs) for o in mine if method == GUARDED and refs.worse_than_none(o)]
            table.setdefault(method, {})[optimizer] = entry
    return table


def _pair(o: Outcome, refs: References) -> dict[str, Any]:
    """A guarded run worse than the unguarded one: both final losses, the tolerance and what the watchdog did."""
    return {
        "optimizer": o.optimizer,
        "fault": o.fault,
        "seed": o.seed,
        "start": o.start,
        "none": refs.none[(o.fault, o.seed)],
        "lr_callbacks": o.loss,
        "tolerance": refs.tolerance(o.seed),
        "events": o.events,
    }


def summarize(tables: dict[str, Any]) -> dict[str, Any]:
    """The summary part: per start, the guarded runs pooled over the optimizers (and the unguarded recovered)."""
    out = {}
    for start, table in tables.items():
        guarded, unguarded = pooled(table[GUARDED], None), pooled(table["none"], None)
        out[start] = {
            "worse_than_none": guarded["worse_than_none"],
            "runs": guarded["runs"],
            "damage_undone": guarded["damage_undone"],
            "damage_undone_ci": guarded["damage_undone_ci"],
            "recovered": guarded["recovered"],
            "none_recovered": unguarded["recovered"],
        }
    return out


def run(ctx: Context) -> dict[str, Any]:
    """Run the early-fault benchmark; write ``watchdog_early.md``/``.json``; return the summary part."""
    from benchmarks.models.digits import digits_task

    scale = QUICK if ctx.quick else FULL
    if ctx.seeds is not None:
        scale = replace(scale, runs=replace(scale.runs, fault_seeds=ctx.seeds))
    task = digits_task("mlp", steps=scale.runs.steps)
    started = time.perf_counter()
    runs: dict[str, list[Outcome]] = {}
    with ctx.scratch() as root, quiet():
        log(f"early: clean references ({len(scale.runs.optimizers) * scale.runs.clean_seeds} runs)")
        clean = _clean_runs(task, scale, root)
        for start in scale.starts:
            log(f"early: faults from step {start} + {scale.seed_stride} × seed")
            runs[str(start)] = run_start(task, scale, start, root)
    tables = {start: score(outcomes, clean, scale, task.chance_loss) for start, outcomes in runs.items()}
    seconds = time.perf_counter() - started
    write_json(
        ctx.path("watchdog_early.json"),
        {
            "scale": asdict(scale),
            "tables": tables,
            "clean": [asdict(o) for o in clean],
            "runs": {start: [asdict(o) for o in outcomes] for start, outcomes in runs.items()},
        },
    )
    _report(ctx, task, scale, tables, seconds)
    return summarize(tables)


HEADER = ("method", "optimizer", "recovered", "diverged", "damage undone, median [95% CI]", "worse than none")


def _rows(table: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            method,
            optimizer,
            f"{t['recovered']}/{t['runs']}",
            t["diverged"],
            f"{fmt(t['damage_undone'])} [{fmt(t['damage_undone_ci'][0])}, {fmt(t['damage_undone_ci'][1])}] "
            f"(n={t['damage_scored']})",
            t["worse_than_none"],
        ]
        for method, per in table.items()
        for optimizer, t in per.items()
    ]


def _worse_lines(table: dict[str, Any]) -> str:
    lines = [
        f"- {p['optimizer']} / {p['fault']} / seed {p['seed']} (from step {p['start']}): unguarded {fmt(p['none'])}, "
        f"guarded {fmt(p['lr_callbacks'])} (tolerance {fmt(p['tolerance'])}); " + "; ".join(p["events"][:6])
        for per in table.values()
        for t in per.values()
        for p in t["worse"]
    ]
    return "\n".join(lines) or "- none"


def _section(start: str, table: dict[str, Any], scale: EarlyScale) -> str:
    faults = scale.runs.faults
    fault_rows = [
        [method, optimizer, *[t["by_fault"].get(f, "-") for f in faults]]
        for method, per in table.items()
        for optimizer, t in per.items()
    ]
    return f"""## Faults from step {start} (+{scale.seed_stride} × seed)

{markdown_table(HEADER, _rows(table))}

Recovered runs by fault:

{markdown_table(["method", "optimizer", *faults], fault_rows)}

Guarded runs worse than the unguarded run of the same fault and seed:

{_worse_lines(table)}
"""


def _report(ctx: Context, task: Task, scale: EarlyScale, tables: dict[str, Any], seconds: float) -> None:
    runs = scale.runs
    sections = "\n".join(_section(start, table, scale) for start, table in tables.items())
    starts = ", ".join(str(s) for s in scale.starts)
    text = f"""# Watchdog: faults in the peak window

{stamp(ctx, seconds)}

Task: {task.describe}; 5% warmup + cosine through `LRSchedule`; validation every {runs.val_every} steps.
The watchdog benchmark's faults (`watchdog.md`: {", ".join(runs.faults)}), each started at step
`start + {scale.seed_stride} × seed` instead of at 40% of the run, for each start of {starts}: inside the window (to
twice the warmup's end) where the watchdog reads trouble as the planned peak LR too high. Per start:
{len(runs.faults)} faults × {runs.fault_seeds} seeds × {len(runs.optimizers)} optimizers, unguarded (`none`) and with
the default `DivergenceWatchdog` (`lr_callbacks`); {runs.clean_seeds} unguarded clean seeds per optimizer are the
references.

The definitions are the watchdog benchmark's, from its code: **recovered** when the final validation loss is at most
the clean run's (same seed) plus max(2σ of the clean seeds, 0.5%); **diverged**: non-finite or above 1.5× the clean
run's; **damage undone**: (L_none − L)/(L_none − L_clean) against the unguarded run of the same fault and seed
(non-finite = the chance loss, {task.chance_loss:.3g}), scored where the fault did damage beyond the tolerance (n),
with a 95% bootstrap interval of the median; **worse than none**: above the unguarded run of the same fault and seed
by more than the tolerance.

{sections}"""
    with open(ctx.path("watchdog_early.md"), "w") as handle:
        handle.write(text)
