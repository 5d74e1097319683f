"""Benchmark 3: does a run survive a fault, and at what price on clean runs? Five methods, the same faults.

Protocol (``research/spike_anchors.md`` §10, scaled to a 2-core CPU): the digits MLP, trained for the full
budget under warmup + cosine (``LRSchedule``) with validation every ``val_every`` steps, once per
(method × fault × seed). The faults (:mod:`benchmarks.faults`) are seeded and identical for every method; the
fault starts at 40% of the run plus ``seed × 7`` steps. Controls: clean runs over several seeds, and a benign
data switch.

Methods: ``none``; Lightning ``EarlyStopping(monitor="val_loss", check_finite=True)``; Lightning
``SpikeDetection()`` (it raises ``TrainingSpikeException``: the run ends there, as it would without a
restart harness); :class:`~benchmarks.spike_baselines.KillLossSpike` (LLM Foundry's rule, ``log_only=False``);
``grad_clip``: the Trainer's ``gradient_clip_val=1.0``; ``zclip``: :class:`~benchmarks.spike_baselines.ZClip`
at its defaults but without the fixed cap (``max_grad_norm=None``, "pure ZClip"); ``zclip.capped``: ZClip at the
library's own defaults (``max_grad_norm=1.0``: every step clipped to the smaller of the adaptive value and 1.0);
``lr_callbacks``: :class:`~lr_callbacks.DivergenceWatchdog` at its defaults. A separate variant,
``lr_callbacks.per_sample``: the same watchdog, with the module reporting its per-sample losses
(:func:`~lr_callbacks.report_sample_losses`), an input the peers do not get; it never replaces ``lr_callbacks``.
``--methods`` runs a subset of the methods and keeps the others' runs from the previous ``watchdog.json``.

Held-out faults (:data:`benchmarks.faults.HELD_OUT`) run beside the seven original ones and are scored apart;
no constant of the watchdog is tuned on them. The natural-instability sweep (no injection: charlm at multiples
of its best LR) is :mod:`benchmarks.watchdog_natural` (``--only natural``).

Metrics:

- recovered: final validation loss ≤ the clean run's (method ``none``, same seed) + max(2σ of the clean
  seeds, 0.5% of the clean run);
- diverged: final validation loss non-finite or > 1.5× the clean run's;
- false interventions per 1,000 clean steps (clean and data-switch runs): any halt, skip, clip, LR cut or
  rollback;
- damage undone: ``(L_none − L) / (L_none − L_clean)`` per faulted run, against the unguarded run of the same
  fault and seed and the clean unguarded run of the same seed (a non-finite loss counts as the task's chance
  loss); 1 = all the damage undone, 0 = none, < 0 = worse than no guard. Runs whose fault did no damage
  (``L_none − L_clean`` within the recovery tolerance) have no score. The median comes with a 95% bootstrap
  interval;
- worse than none: faulted or clean runs whose final loss ends above the unguarded run's (same fault and
  seed) by more than the tolerance;
- wasted steps: steps not trained because the run halted, plus steps skipped or rolled back;
- overhead: median time per step of the clean runs, relative to ``none``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks._common import Context, _commit, fmt, log, markdown_table, quiet, stamp, stamped_commit, write_json
from benchmarks.faults import CONTROLS, FAULTS, HELD_OUT, FaultyLoader, LRFault, applies, fault
from benchmarks.models import Task, TaskModule, evaluate, train_loader
from benchmarks.overhead import StepTimer

__all__ = [
    "INTERVENTIONS",
    "METHODS",
    "Outcome",
    "References",
    "Scale",
    "bootstrap_median",
    "fault_scores",
    "fault_start",
    "pooled",
    "run",
    "run_one",
]

METHODS = (
    "none",
    "early_stopping",
    "spike_detection",
    "kill_loss_spike",
    "grad_clip",
    "zclip",
    "zclip.capped",
    "lr_callbacks",
    "lr_callbacks.per_sample",
)
OURS = ("lr_callbacks", "lr_callbacks.per_sample")
PER_SAMPLE = "lr_callbacks.per_sample"
"""The watchdog with the module's per-sample losses: a separate variant, the peers do not get this input."""
CONTROL_HEADER = (
    "method",
    "optimizer",
    "clean steps",
    "false interventions",
    "per 1k",
    "worse than none",
    "wasted steps (faulted runs)",
    "overhead",
)
INTERVENTIONS = ("skip", "clip", "lower_lr", "rollback", "halt")


@dataclass(frozen=True)
class Scale:
    """How much to run: optimizers, budget, seeds, validation cadence."""

    optimizers: tuple[str, ...]
    lrs: dict[str, float]  # the (tuned) peak LR of each optimizer
    steps: int
    fault_seeds: int
    clean_seeds: int
    val_every: int
    faults: tuple[str, ...] = FAULTS
    held_out: tuple[str, ...] = HELD_OUT


LRS = {"sgd": 0.1, "adamw": 5e-3}  # near the best of the finder benchmark's digits-mlp grids
# ours: 13 controls × 400 steps × 2 optimizers = 10,400 clean steps
FULL = Scale(optimizers=("sgd", "adamw"), lrs=LRS, steps=400, fault_seeds=5, clean_seeds=12, val_every=50)
QUICK = Scale(
    optimizers=("sgd",),
    lrs=LRS,
    steps=40,
    fault_seeds=1,
    clean_seeds=2,
    val_every=20,
    faults=("nan_batch", "lr_pulse_x30"),
    held_out=("scheduler_restart",),
)
COMPARABLE_SEEDS = 3
"""The first version's results used 3 fault seeds: ``recovered_3_seeds`` counts those runs alone."""


@dataclass
class Outcome:
    """One run: what happened and what it cost."""

    method: str
    optimizer: str
    fault: str
    seed: int
    loss: float
    accuracy: float
    steps: int
    halted: str = ""
    interventions: int = 0
    wasted: int = 0
    seconds_per_step: float = math.nan
    events: list[str] = field(default_factory=list)
    commit: str = ""  # the code it ran at (runs kept by a --methods rerun keep theirs)
    start: int | None = None  # the fault's first step (None: a run written before runs kept theirs)


def _method(name: str) -> tuple[list[Any], Any]:
    callback: Any
    if name == "none":
        return [], None
    if name == "early_stopping":
        from pytorch_lightning.callbacks import EarlyStopping

        callback = EarlyStopping(monitor="val_loss", check_finite=True)
    elif name == "spike_detection":
        from pytorch_lightning.callbacks import SpikeDetection

        callback = SpikeDetection()
    elif name == "kill_loss_spike":
        from benchmarks.spike_baselines import KillLossSpike

        callback = KillLossSpike(log_only=False)
    elif name in ("zclip", "zclip.capped"):
        from benchmarks.spike_baselines import ZClip

        callback = ZClip(max_grad_norm=1.0 if name == "zclip.capped" else None)
    elif name == "grad_clip":
        return [], None  # the Trainer's gradient_clip_val (see run_one)
    elif name in OURS:
        from lr_callbacks import DivergenceWatchdog

        callback = DivergenceWatchdog()
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}")
    return [callback], callback


def _incidents(callback: Any) -> tuple[int, int, list[str]]:
    """Our watchdog's interventions, the steps it skipped or rolled back, and its event log.

    Interventions are the actions that change training (:data:`INTERVENTIONS`), counted once per step and
    action (a step skipped for its loss and its gradient norm is one skip); ``raise_lr`` (undoing a cut),
    ``rebaseline`` and ``warn`` are not. A skip wastes its step; a rollback wastes the steps between its
    snapshot and the incident (``Incident.rollback_to``).
    """
    interventions, wasted, lines = 0, 0, []
    seen: set[tuple[int, str]] = set()
    for incident in callback.events:
        lines.append(f"step {incident.step}: {incident.signal} → {incident.action}")
        if incident.action not in INTERVENTIONS or (incident.step, incident.action) in seen:
            continue
        seen.add((incident.step, incident.action))
        interventions += 1
        if incident.action == "skip":
            wasted += 1
        if incident.action == "rollback" and incident.rollback_to is not None:
            wasted += max(incident.step - incident.rollback_to, 0)
    return interventions, wasted, lines


def fault_start(scale: Scale, seed: int) -> int:
    """The step this benchmark's fault starts at: 40% of the run, plus 7 steps per seed.

    >>> fault_start(FULL, 0), fault_start(FULL, 2)
    (160, 174)
    """
    return int(0.4 * scale.steps) + 7 * seed


def run_one(
    task: Task,
    method: str,
    optimizer: str,
    fault_name: str,
    seed: int,
    scale: Scale,
    root: str,
    start_step: int | None = None,
) -> Outcome:
    """Train once with ``method`` under ``fault_name`` and score the result.

    ``start_step`` is the fault's first step; ``None`` is this benchmark's, :func:`fault_start`.
    """
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from lr_callbacks import LRSchedule

    start = fault_start(scale, seed) if start_step is None else start_step
    the_fault = fault(fault_name, start, seed)
    callbacks, handle = _method(method)
    timer = StepTimer(warmup=5)
    per_sample = method == PER_SAMPLE
    module = TaskModule(task, optimizer, scale.lrs[optimizer], seed=seed, log_loss=False, per_sample=per_sample)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=scale.steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        val_check_interval=scale.val_every,
        check_val_every_n_epoch=None,
        default_root_dir=root,
        gradient_clip_val=1.0 if method == "grad_clip" else None,
        callbacks=[
            LRSchedule(task.schedule, log_plan=False),
            *callbacks,
            LRFault(the_fault, task.schedule, scale.steps),
            timer,
        ],
    )
    loader = FaultyLoader(train_loader(task, seed), the_fault, classes=int(task.extra["classes"]))
    halted = ""
    try:
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=DataLoader(task.val_set, batch_size=512))
    except Exception as error:  # the halting baselines end the run by raising
        halted = type(error).__name__
    steps = int(trainer.global_step)
    if not halted and steps < scale.steps:
        halted = "stopped"
    metrics = evaluate(task, module.model)
    interventions, wasted, events = 0, 0, list[str]()
    if method in OURS:
        interventions, wasted, events = _incidents(handle)
        if halted and not any("halt" in e for e in events):
            interventions += 1
    elif method in ("zclip", "zclip.capped"):
        interventions = handle.clipped
    elif halted:
        interventions = 1
    wasted += scale.steps - steps if halted else 0
    return Outcome(
        method,
        optimizer,
        fault_name,
        seed,
        metrics["loss"],
        metrics["accuracy"],
        steps,
        halted,
        interventions,
        wasted,
        timer.seconds_per_step(),
        events,
        _commit(),
        start,
    )


def bootstrap_median(values: Sequence[float], draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The median of ``values`` and its 95% percentile-bootstrap interval (NaNs when empty).

    >>> bootstrap_median([1.0, 1.0, 1.0])
    (1.0, 1.0, 1.0)
    """
    import numpy as np

    if not values:
        return math.nan, math.nan, math.nan
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(data, size=(draws, len(data)), replace=True), axis=1)
    return float(np.median(data)), float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def _finite(loss: float, chance: float) -> float:
    return loss if math.isfinite(loss) else chance


class References:
    """The unguarded runs every score is measured against, and the recovery tolerance per optimizer."""

    def __init__(self, outcomes: Sequence[Outcome], optimizer: str, chance: float) -> None:
        none = [o for o in outcomes if o.method == "none" and o.optimizer == optimizer]
        self.chance = chance
        self.clean = {o.seed: o.loss for o in none if o.fault == "clean"}
        self.none = {(o.fault, o.seed): o.loss for o in none}
        values = [v for v in self.clean.values() if math.isfinite(v)]
        self.sigma = statistics.stdev(values) if len(values) > 1 else 0.0

    def clean_loss(self, seed: int) -> float:
        return self.clean[seed] if seed in self.clean else self.clean[seed % len(self.clean)]

    def tolerance(self, seed: int) -> float:
        return max(2 * self.sigma, 0.005 * self.clean_loss(seed))

    def damage_undone(self, o: Outcome) -> float | None:
        """``(L_none − L) / (L_none − L_clean)``; ``None`` when the fault did no damage to undo."""
        clean = self.clean_loss(o.seed)
        unguarded = _finite(self.none[(o.fault, o.seed)], self.chance)
        if unguarded - clean <= self.tolerance(o.seed):
            return None
        return (unguarded - _finite(o.loss, self.chance)) / (unguarded - clean)

    def worse_than_none(self, o: Outcome) -> bool:
        unguarded = _finite(self.none[(o.fault, o.seed)], self.chance)
        return _finite(o.loss, self.chance) > unguarded + self.tolerance(o.seed)


def fault_scores(faulted: Sequence[Outcome], refs: References) -> dict[str, Any]:
    recovered, diverged, excess, undone = 0, 0, [], []
    by_fault: dict[str, list[int]] = {}
    for o in faulted:
        reference = refs.clean_loss(o.seed)
        excess.append(o.loss / reference - 1 if math.isfinite(o.loss) else math.inf)
        ok = math.isfinite(o.loss) and o.loss <= reference + refs.tolerance(o.seed)
        recovered += ok
        diverged += not math.isfinite(o.loss) or o.loss > 1.5 * reference
        by_fault.setdefault(o.fault, [0, 0])
        by_fault[o.fault][0] += ok
        by_fault[o.fault][1] += 1
        score = refs.damage_undone(o)
        if score is not None:
            undone.append(score)
    middle, low, high = bootstrap_median(undone)
    return {
        "recovered": recovered,
        "runs": len(faulted),
        "recovered_3_seeds": sum(
            math.isfinite(o.loss) and o.loss <= refs.clean_loss(o.seed) + refs.tolerance(o.seed)
            for o in faulted
            if o.seed < COMPARABLE_SEEDS
        ),
        "runs_3_seeds": sum(o.seed < COMPARABLE_SEEDS for o in faulted),
        "diverged": diverged,
        "median_excess_loss": statistics.median(excess) if excess else math.nan,
        "damage_undone": middle,
        "damage_undone_ci": [low, high],
        "damage_scored": len(undone),
        "damage_values": undone,
        "worse_than_none": sum(refs.worse_than_none(o) for o in faulted),
        "by_fault": {k: f"{v[0]}/{v[1]}" for k, v in by_fault.items()},
    }


def _score(outcomes: Sequence[Outcome], scale: Scale, chance: float) -> dict[str, Any]:
    """Per optimizer and method: the original faults, the held-out faults and the controls, scored apart."""
    table: dict[str, Any] = {}
    for optimizer in scale.optimizers:
        refs = References(outcomes, optimizer, chance)
        none_time = statistics.median(
            o.seconds_per_step
            for o in outcomes
            if o.method == "none" and o.fault in CONTROLS and o.optimizer == optimizer
        )
        for method in METHODS:
            mine = [o for o in outcomes if o.method == method and o.optimizer == optimizer]
            controls = [o for o in mine if o.fault in CONTROLS]
            clean_steps = sum(o.steps for o in controls)
            false = sum(o.interventions for o in controls)
            entry = fault_scores([o for o in mine if o.fault in scale.faults], refs)
            entry["held_out"] = fault_scores([o for o in mine if o.fault in scale.held_out], refs)
            entry.update(
                {
                    "false_interventions": false,
                    "clean_steps": clean_steps,
                    "false_interventions_per_1k": 1000 * false / max(clean_steps, 1),
                    "controls_worse_than_none": sum(refs.worse_than_none(o) for o in controls),
                    "wasted_steps": sum(o.wasted for o in mine if o.fault not in CONTROLS),
                    "overhead": statistics.median(o.seconds_per_step for o in controls) / none_time - 1,
                    "clean_loss": statistics.mean(o.loss for o in controls if o.fault == "clean"),
                }
            )
            table.setdefault(method, {})[optimizer] = entry
    return table


def _plan(scale: Scale, optimizer: str, method: str) -> list[tuple[str, int]]:
    """The runs of one method: every fault × seed, and the controls (the peers get the clean seeds the
    references need, ``fault_seeds``; ours and ``none`` get ``clean_seeds``, for the false-intervention rate)."""
    faults = [f for f in scale.faults + scale.held_out if applies(f, optimizer)]
    plan = [(f, s) for f in faults for s in range(scale.fault_seeds)]
    clean = scale.clean_seeds if method in ("none", *OURS) else min(scale.clean_seeds, scale.fault_seeds)
    return plan + [("clean", s) for s in range(clean)] + [("data_switch", 0)]


def pooled(per: dict[str, Any], part: str | None) -> dict[str, Any]:
    """One method's fault scores over both optimizers (``part="held_out"`` for the held-out faults)."""
    entries = [t if part is None else t[part] for t in per.values()]
    middle, low, high = bootstrap_median([v for e in entries for v in e["damage_values"]])
    return {
        "recovered": sum(e["recovered"] for e in entries),
        "runs": sum(e["runs"] for e in entries),
        "damage_undone": middle,
        "damage_undone_ci": [low, high],
        "worse_than_none": sum(e["worse_than_none"] for e in entries),
    }


def summarize(table: dict[str, Any]) -> dict[str, Any]:
    """The summary part: per method, the original faults, the held-out faults and the clean runs."""
    out = {}
    for method, per in table.items():
        faults, held = pooled(per, None), pooled(per, "held_out")
        clean_steps = sum(t["clean_steps"] for t in per.values())
        out[method] = {
            "recovered": faults["recovered"],
            "runs": faults["runs"],
            "recovered_3_seeds": sum(t["recovered_3_seeds"] for t in per.values()),
            "runs_3_seeds": sum(t["runs_3_seeds"] for t in per.values()),
            "damage_undone": faults["damage_undone"],
            "held_out_damage_undone": held["damage_undone"],
            "held_out_damage_undone_ci": held["damage_undone_ci"],
            "held_out_recovered": held["recovered"],
            "held_out_runs": held["runs"],
            "worse_than_none": faults["worse_than_none"]
            + held["worse_than_none"]
            + sum(t["controls_worse_than_none"] for t in per.values()),
            "false_interventions": sum(t["false_interventions"] for t in per.values()),
            "clean_steps": clean_steps,
            "false_interventions_per_1k": 1000
            * sum(t["false_interventions"] for t in per.values())
            / max(clean_steps, 1),
        }
    return out


def run(ctx: Context) -> dict[str, Any]:
    """Run the watchdog benchmark; write ``watchdog.md``/``.json``; return the summary part."""
    from benchmarks.models.digits import digits_task

    scale = QUICK if ctx.quick else FULL
    task = digits_task("mlp", steps=scale.steps)
    methods = _methods(ctx.methods)
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    with ctx.scratch() as root, quiet():
        for optimizer in scale.optimizers:
            for method in methods:
                plan = _plan(scale, optimizer, method)
                log(f"watchdog: {optimizer} {method} ({len(plan)} runs)")
                for fault_name, seed in plan:
                    outcomes.append(run_one(task, method, optimizer, fault_name, seed, scale, root))
    if len(methods) < len(METHODS):
        outcomes = _with_previous(outcomes, methods, ctx.path("watchdog.json"))
    table = _score(outcomes, scale, task.chance_loss)
    seconds = time.perf_counter() - started
    write_json(
        ctx.path("watchdog.json"), {"scale": asdict(scale), "table": table, "runs": [asdict(o) for o in outcomes]}
    )
    _report(ctx, task, scale, table, outcomes, seconds)
    return summarize(table)


def _methods(only: Sequence[str]) -> list[str]:
    """The methods to run: ``only`` (``--methods``) in the order of :data:`METHODS`, or all of them."""
    unknown = [m for m in only if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)}; choose among {', '.join(METHODS)}")
    return [m for m in METHODS if not only or m in only]


def _with_previous(outcomes: list[Outcome], methods: Sequence[str], path: str) -> list[Outcome]:
    """``outcomes`` and the previous results' runs of every method this invocation did not run (``--methods``),
    so that the tables hold every method (and the unguarded references) without rerunning them."""
    if not os.path.exists(path):
        raise ValueError(f"--methods runs a subset of the methods; the others come from {path}, which is missing")
    with open(path) as handle:
        previous = json.load(handle).get("runs", [])
    commit = stamped_commit(path.removesuffix(".json") + ".md")  # for runs written before they kept theirs
    kept = [_outcome(r, commit) for r in previous if r["method"] not in methods and r["method"] in METHODS]
    if not any(o.method == "none" for o in outcomes + kept):
        raise ValueError(f"the unguarded runs (method 'none') are the references: run them, or keep them in {path}")
    return kept + outcomes


def _outcome(record: dict[str, Any], commit: str = "") -> Outcome:
    """An :class:`Outcome` read back from ``watchdog.json`` (its ``null`` numbers are the NaNs written; a run
    without a commit gets ``commit``)."""
    floats = {"loss", "accuracy", "seconds_per_step"}
    values = {k: (math.nan if k in floats and v is None else v) for k, v in record.items()}
    return Outcome(**{"commit": commit, **{k: v for k, v in values.items() if k != "commit" or v}})


def _provenance(outcomes: Sequence[Outcome]) -> str:
    """Which commit each method's runs ran at, as a paragraph, when they are not all one (a ``--methods`` rerun)."""
    commits: dict[str, set[str]] = {}
    for o in outcomes:
        commits.setdefault(o.method, set()).add(o.commit or "unknown")
    if len({c for cs in commits.values() for c in cs}) <= 1:
        return ""
    lines = [f"- `{m}`: {', '.join(f'`{c}`' for c in sorted(cs))}" for m, cs in commits.items()]
    return "\n\nRuns by method and commit (a rerun of some methods keeps the others' runs):\n\n" + "\n".join(lines)


def _main_rows(table: dict[str, Any], part: str | None) -> list[list[Any]]:
    rows = []
    for method, per in table.items():
        for optimizer, whole in per.items():
            t = whole if part is None else whole[part]
            low, high = t["damage_undone_ci"]
            rows.append(
                [
                    method,
                    optimizer,
                    f"{t['recovered']}/{t['runs']}",
                    t["diverged"],
                    f"{fmt(t['damage_undone'])} [{fmt(low)}, {fmt(high)}] (n={t['damage_scored']})",
                    t["worse_than_none"],
                    f"{t['median_excess_loss'] * 100:+.1f}%",
                ]
            )
    return rows


def _event_lines(outcomes: Sequence[Outcome]) -> str:
    return "\n".join(
        f"- {o.optimizer} / {o.fault} / seed {o.seed}: " + "; ".join(o.events[:6]) + (" …" if len(o.events) > 6 else "")
        for o in outcomes[:60]
    )


def _report(
    ctx: Context, task: Task, scale: Scale, table: dict[str, Any], outcomes: Sequence[Outcome], seconds: float
) -> None:
    header = [
        "method",
        "optimizer",
        "recovered",
        "diverged",
        "damage undone, median [95% CI]",
        "worse than none",
        "median final loss vs clean",
    ]
    control_rows = [
        [
            method,
            optimizer,
            t["clean_steps"],
            t["false_interventions"],
            fmt(t["false_interventions_per_1k"]),
            t["controls_worse_than_none"],
            t["wasted_steps"],
            f"{t['overhead'] * 100:+.1f}%",
        ]
        for method, per in table.items()
        for optimizer, t in per.items()
    ]
    fault_rows = [
        [method, optimizer, *[t["by_fault"].get(f, "-") for f in scale.faults]]
        for method, per in table.items()
        for optimizer, t in per.items()
    ]
    held_rows = [
        [method, optimizer, *[t["held_out"]["by_fault"].get(f, "-") for f in scale.held_out]]
        for method, per in table.items()
        for optimizer, t in per.items()
    ]
    event_lines = _event_lines([o for o in outcomes if o.method == "lr_callbacks" and o.events])
    per_sample_lines = _event_lines([o for o in outcomes if o.method == PER_SAMPLE and o.events])
    text = f"""# Watchdog recovery

{stamp(ctx, seconds)}{_provenance(outcomes)}

Task: {task.describe}; warmup + cosine through `LRSchedule`; validation every {scale.val_every} steps. Each
fault starts at 40% of the run (+7 steps per seed), is seeded, and is the same for every method. Runs:
{len(scale.faults)} faults × {scale.fault_seeds} seeds, {len(scale.held_out)} held-out faults × {scale.fault_seeds}
seeds (`adam_v_reset`: AdamW only), {scale.clean_seeds} clean seeds and one benign data switch, per method and
optimizer.

A run **recovered** when its final validation loss is at most the clean run's (no watchdog, same seed) plus
max(2σ of the clean seeds, 0.5%). **Diverged**: non-finite, or above 1.5× the clean run's. **Damage undone**:
(L_none − L)/(L_none − L_clean) per run against the unguarded run of the same fault and seed (non-finite =
the chance loss, {task.chance_loss:.3g}); runs whose fault did no damage beyond the tolerance are not scored
(n = the runs scored); the interval is a 95% bootstrap of the median. **Worse than none**: runs that end above
the unguarded run of the same fault and seed by more than the tolerance. **False interventions**: halts,
skips, clips, LR cuts or rollbacks on the clean and data-switch runs (ZClip: its clipped steps; the Trainer's
fixed clip is not counted, it acts on every step above 1.0). **Wasted steps**: steps not trained after a halt,
plus steps skipped or rolled back, summed over the faulted runs. **Overhead**: median time per step on the
control runs against `none` (noisy on a shared CPU; see the overhead benchmark for the careful measurement).

## The seven original faults

{markdown_table(header, _main_rows(table, None))}

Recovered runs by fault:

{markdown_table(["method", "optimizer", *scale.faults], fault_rows)}

## Held-out faults (fixed before any tuning, never used to set a constant)

{markdown_table(header, _main_rows(table, "held_out"))}

{markdown_table(["method", "optimizer", *scale.held_out], held_rows)}

A corrupted batch on one DDP rank is not run here (one process per run); see `benchmarks/faults.py`.

## Clean and benign runs

{markdown_table(CONTROL_HEADER, control_rows)}

Our watchdog's interventions (first runs):

{event_lines or "- none"}

## The per-sample variant

`{PER_SAMPLE}`: the default watchdog, with the module reporting its per-sample losses
(`report_sample_losses`, the cross-entropy of each sample): a batch dominated by samples whose loss is an
outlier is skipped as bad data. A separate row in every table above: the peers do not get this input.
Its interventions (first runs), `sample_outliers` being the new signal's:

{per_sample_lines or "- none"}
"""
    with open(ctx.path("watchdog.md"), "w") as handle:
        handle.write(text)
