"""Benchmark 3: does a run survive a fault, and at what price on clean runs? Five methods, the same faults.

Protocol (``research/spike_anchors.md`` §10, scaled to a 2-core CPU): the digits MLP, trained for the full
budget under warmup + cosine (``LRSchedule``) with validation every ``val_every`` steps, once per
(method × fault × seed). The faults (:mod:`benchmarks.faults`) are seeded and identical for every method; the
fault starts at 40% of the run plus ``seed × 7`` steps. Controls: clean runs over several seeds, and a benign
data switch.

Methods: ``none``; Lightning ``EarlyStopping(monitor="val_loss", check_finite=True)``; Lightning
``SpikeDetection()`` (it raises ``TrainingSpikeException``: the run ends there, as it would without a
restart harness); :class:`~benchmarks.spike_baselines.KillLossSpike` (LLM Foundry's rule, ``log_only=False``);
``lr_callbacks``: :class:`~lr_callbacks.DivergenceWatchdog` at its defaults.

Metrics:

- recovered: final validation loss ≤ the clean run's (method ``none``, same seed) + max(2σ of the clean
  seeds, 0.5% of the clean run);
- diverged: final validation loss non-finite or > 1.5× the clean run's;
- false interventions per 1,000 clean steps (clean and data-switch runs): any halt, skip, clip, LR cut or
  rollback;
- wasted steps: steps not trained because the run halted, plus steps skipped or rolled back;
- overhead: median time per step of the clean runs, relative to ``none``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks._common import Context, fmt, log, markdown_table, quiet, stamp, write_json
from benchmarks.faults import CONTROLS, FAULTS, FaultyLoader, LRFault, fault
from benchmarks.models import Task, TaskModule, evaluate, train_loader
from benchmarks.overhead import StepTimer

__all__ = ["INTERVENTIONS", "METHODS", "Outcome", "Scale", "run"]

METHODS = ("none", "early_stopping", "spike_detection", "kill_loss_spike", "lr_callbacks")
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


LRS = {"sgd": 0.1, "adamw": 5e-3}  # near the best of the finder benchmark's digits-mlp grids
FULL = Scale(optimizers=("sgd", "adamw"), lrs=LRS, steps=400, fault_seeds=3, clean_seeds=5, val_every=50)
QUICK = Scale(
    optimizers=("sgd",),
    lrs=LRS,
    steps=40,
    fault_seeds=1,
    clean_seeds=2,
    val_every=20,
    faults=("nan_batch", "lr_pulse_x30"),
)


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
    elif name == "lr_callbacks":
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


def run_one(task: Task, method: str, optimizer: str, fault_name: str, seed: int, scale: Scale, root: str) -> Outcome:
    """Train once with ``method`` under ``fault_name`` and score the result."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from lr_callbacks import LRSchedule

    start = int(0.4 * scale.steps) + 7 * seed
    the_fault = fault(fault_name, start, seed)
    callbacks, handle = _method(method)
    timer = StepTimer(warmup=5)
    module = TaskModule(task, optimizer, scale.lrs[optimizer], seed=seed, log_loss=False)
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
        callbacks=[LRSchedule(task.schedule, log_plan=False), *callbacks, LRFault(the_fault), timer],
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
    if method == "lr_callbacks":
        interventions, wasted, events = _incidents(handle)
        if halted and not any("halt" in e for e in events):
            interventions += 1
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
    )


def _score(outcomes: Sequence[Outcome], scale: Scale) -> dict[str, Any]:
    """Per optimizer and method: recovered/runs, diverged, false interventions per 1k clean steps, waste, cost."""
    table: dict[str, Any] = {}
    for optimizer in scale.optimizers:
        clean = {
            o.seed: o.loss for o in outcomes if o.method == "none" and o.fault == "clean" and o.optimizer == optimizer
        }
        values = [v for v in clean.values() if math.isfinite(v)]
        sigma = statistics.stdev(values) if len(values) > 1 else 0.0
        none_time = statistics.median(
            o.seconds_per_step
            for o in outcomes
            if o.method == "none" and o.fault in CONTROLS and o.optimizer == optimizer
        )
        for method in METHODS:
            mine = [o for o in outcomes if o.method == method and o.optimizer == optimizer]
            faulted = [o for o in mine if o.fault in FAULTS]
            controls = [o for o in mine if o.fault in CONTROLS]
            recovered, diverged = 0, 0
            by_fault: dict[str, list[int]] = {}
            excess = []
            for o in faulted:
                reference = clean[o.seed % len(clean)] if o.seed not in clean else clean[o.seed]
                excess.append(o.loss / reference - 1 if math.isfinite(o.loss) else math.inf)
                tolerance = max(2 * sigma, 0.005 * reference)
                ok = math.isfinite(o.loss) and o.loss <= reference + tolerance
                bad = not math.isfinite(o.loss) or o.loss > 1.5 * reference
                recovered += ok
                diverged += bad
                by_fault.setdefault(o.fault, [0, 0])
                by_fault[o.fault][0] += ok
                by_fault[o.fault][1] += 1
            clean_steps = sum(o.steps for o in controls)
            false = sum(o.interventions for o in controls)
            table.setdefault(method, {})[optimizer] = {
                "recovered": recovered,
                "runs": len(faulted),
                "diverged": diverged,
                "false_interventions": false,
                "clean_steps": clean_steps,
                "false_interventions_per_1k": 1000 * false / max(clean_steps, 1),
                "wasted_steps": sum(o.wasted for o in faulted),
                "median_excess_loss": statistics.median(excess) if excess else math.nan,
                "overhead": statistics.median(o.seconds_per_step for o in controls) / none_time - 1,
                "by_fault": {k: f"{v[0]}/{v[1]}" for k, v in by_fault.items()},
                "clean_loss": statistics.mean(o.loss for o in controls if o.fault == "clean"),
            }
    return table


def run(ctx: Context) -> dict[str, Any]:
    """Run the watchdog benchmark; write ``watchdog.md``/``.json``; return the summary part."""
    from benchmarks.models.digits import digits_task

    scale = QUICK if ctx.quick else FULL
    task = digits_task("mlp", steps=scale.steps)
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    plan = [(f, s) for f in scale.faults for s in range(scale.fault_seeds)]
    plan += [("clean", s) for s in range(scale.clean_seeds)] + [("data_switch", 0)]
    with ctx.scratch() as root, quiet():
        for optimizer in scale.optimizers:
            for method in METHODS:
                log(f"watchdog: {optimizer} {method} ({len(plan)} runs)")
                for fault_name, seed in plan:
                    outcomes.append(run_one(task, method, optimizer, fault_name, seed, scale, root))
    table = _score(outcomes, scale)
    seconds = time.perf_counter() - started
    write_json(
        ctx.path("watchdog.json"), {"scale": asdict(scale), "table": table, "runs": [asdict(o) for o in outcomes]}
    )
    _report(ctx, task, scale, table, outcomes, seconds)
    return {
        method: {
            "recovered": sum(t["recovered"] for t in per.values()),
            "runs": sum(t["runs"] for t in per.values()),
            "false_interventions_per_1k": 1000
            * sum(t["false_interventions"] for t in per.values())
            / max(sum(t["clean_steps"] for t in per.values()), 1),
        }
        for method, per in table.items()
    }


def _report(
    ctx: Context, task: Task, scale: Scale, table: dict[str, Any], outcomes: Sequence[Outcome], seconds: float
) -> None:
    header = [
        "method",
        "optimizer",
        "recovered",
        "diverged",
        "median final loss vs clean",
        "false interventions / 1k clean steps",
        "wasted steps",
        "overhead",
    ]
    rows = []
    for method, per in table.items():
        for optimizer, t in per.items():
            rows.append(
                [
                    method,
                    optimizer,
                    f"{t['recovered']}/{t['runs']}",
                    t["diverged"],
                    f"{t['median_excess_loss'] * 100:+.1f}%",
                    fmt(t["false_interventions_per_1k"]),
                    t["wasted_steps"],
                    f"{t['overhead'] * 100:+.1f}%",
                ]
            )
    faults = list(scale.faults)
    fault_rows = [
        [method, optimizer, *[t["by_fault"].get(f, "-") for f in faults]]
        for method, per in table.items()
        for optimizer, t in per.items()
    ]
    ours = [o for o in outcomes if o.method == "lr_callbacks" and o.events]
    event_lines = "\n".join(
        f"- {o.optimizer} / {o.fault} / seed {o.seed}: " + "; ".join(o.events[:6]) + (" …" if len(o.events) > 6 else "")
        for o in ours[:40]
    )
    text = f"""# Watchdog recovery

{stamp(ctx, seconds)}

Task: {task.describe}; warmup + cosine through `LRSchedule`; validation every {scale.val_every} steps. Each
fault starts at 40% of the run (+7 steps per seed), is seeded, and is the same for every method. Runs:
{len(scale.faults)} faults × {scale.fault_seeds} seeds, {scale.clean_seeds} clean seeds and one benign data
switch, per method and optimizer.

A run **recovered** when its final validation loss is at most the clean run's (no watchdog, same seed) plus
max(2σ of the clean seeds, 0.5%). **Diverged**: non-finite, or above 1.5× the clean run's. **Median final
loss vs clean**: over the faulted runs, how far the final validation loss ends above the clean run's (+inf
for a non-finite one): how much of the damage was undone, where "recovered" is all or nothing. **False
interventions**: halts, skips, clips, LR cuts or rollbacks on the clean and data-switch runs. **Wasted
steps**: steps not trained after a halt, plus steps skipped or rolled back, summed over the faulted runs.
**Overhead**: median time per step on the control runs against `none` (noisy on a shared CPU; see the
overhead benchmark for the careful measurement).

{markdown_table(header, rows)}

Recovered runs by fault:

{markdown_table(["method", "optimizer", *faults], fault_rows)}

Our watchdog's interventions (first runs):

{event_lines or "- none"}
"""
    with open(ctx.path("watchdog.md"), "w") as handle:
        handle.write(text)
