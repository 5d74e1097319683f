"""Natural instability, no injection: charlm at multiples of its best LR, with and without the watchdog.

Run it with ``python -m benchmarks --only natural``.

Protocol (issue 11; ``research/spike_anchors.md`` §10, W4, scaled to a 2-core CPU): the charlm GPT, AdamW,
warmup + cosine through ``LRSchedule``, ``steps`` steps, at 1×, 3×, 10×, 30× and 60× its best LR (0.0128,
the best of the finder benchmark's charlm/AdamW grid), each on ``seeds`` seeds, once unguarded (``none``) and
once with :class:`~lr_callbacks.DivergenceWatchdog` at its defaults (``lr_callbacks``).

A run is **unstable** when its training loss, after the warmup, rises above 1.5× the lowest loss seen so far,
or its final validation loss ends non-finite or 10% above the best-LR run's (mean over seeds). The user's
promise is checked at every multiple where the unguarded run is unstable (on any seed): the guarded runs end
within 10% of the best-LR unguarded run, and never worse than the unguarded run of the same seed beyond the
seed-to-seed spread.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks._common import Context, fmt, log, markdown_table, quiet, stamp, write_json
from benchmarks.models import Task, TaskModule, evaluate, train_loader

__all__ = ["BEST_LR", "MULTIPLES", "NaturalRun", "run"]

BEST_LR = 0.0128
MULTIPLES = (1, 3, 10, 30, 60)
METHODS = ("none", "lr_callbacks")
HEADER = (
    "LR multiple",
    "peak LR",
    "none",
    "lr_callbacks",
    "unguarded unstable",
    "guarded within 10% of best",
    "guarded not worse than none",
)


@dataclass(frozen=True)
class Scale:
    """How much to run: the budget, the seeds and the LR multiples."""

    steps: int
    seeds: int
    multiples: tuple[int, ...] = MULTIPLES


FULL = Scale(steps=400, seeds=3)
QUICK = Scale(steps=30, seeds=1, multiples=(1, 60))


@dataclass
class NaturalRun:
    """One run of the sweep."""

    method: str
    multiple: int
    seed: int
    loss: float
    accuracy: float
    spiked: bool
    steps: int
    events: list[str] = field(default_factory=list)


class _Losses:
    """Records each step's training loss (``on_train_batch_end``)."""

    def __init__(self) -> None:
        from lr_callbacks.core.compat import Callback

        class _Hook(Callback):
            def on_train_batch_end(hook, trainer: Any, pl_module: Any, outputs: Any, batch: Any, i: int) -> None:
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                self.values.append(float(loss.detach()))

        self.values: list[float] = []
        self.callback = _Hook()

    def spiked(self, warmup: int) -> bool:
        """Whether the loss rose above 1.5× its running minimum after ``warmup`` steps (or turned non-finite)."""
        lowest = math.inf
        for step, value in enumerate(self.values):
            if not math.isfinite(value):
                return True
            if step >= warmup and value > 1.5 * lowest:
                return True
            lowest = min(lowest, value)
        return False


def run_one(task: Task, method: str, multiple: int, seed: int, root: str) -> NaturalRun:
    """Train charlm once at ``multiple`` × the best LR, with or without the watchdog."""
    import pytorch_lightning as pl

    from lr_callbacks import DivergenceWatchdog, LRSchedule

    watchdog = DivergenceWatchdog() if method == "lr_callbacks" else None
    losses = _Losses()
    module = TaskModule(task, "adamw", BEST_LR * multiple, seed=seed, log_loss=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=task.steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=root,
        callbacks=[LRSchedule(task.schedule, log_plan=False), *([watchdog] if watchdog else []), losses.callback],
    )
    trainer.fit(module, train_dataloaders=train_loader(task, seed))
    metrics = evaluate(task, module.model)
    events = [f"step {e.step}: {e.signal} → {e.action}" for e in watchdog.events] if watchdog else []
    warmup = math.ceil(0.1 * task.steps)
    return NaturalRun(
        method,
        multiple,
        seed,
        metrics["loss"],
        metrics["accuracy"],
        losses.spiked(warmup),
        int(trainer.global_step),
        events,
    )


class _Files:
    """A strategy's checkpoint methods on one process (for timing :class:`DiskSnapshot` outside a Trainer)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        import os

        import torch

        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(checkpoint, path)

    def remove_checkpoint(self, path: str) -> None:
        import os

        os.remove(path)

    def barrier(self, name: str | None = None) -> None:
        pass


def snapshot_costs(task: Task, root: str, repeats: int = 5) -> dict[str, float]:
    """Memory and time of one watchdog snapshot of ``task``'s model and AdamW state (after one step), in host
    memory and on disk: ``mib`` (model + optimizer state) and the median ms to take one of each."""
    from lr_callbacks.core.snapshot import ModelSnapshot
    from lr_callbacks.watchdog.snapshots import DiskSnapshot, state_bytes

    module = TaskModule(task, "adamw", BEST_LR, seed=0, log_loss=False)
    optimizer = module.configure_optimizers()
    x, y = next(iter(train_loader(task, 0)))
    module.training_step((x, y), 0).backward()
    optimizer.step()
    times: dict[str, list[float]] = {"host": [], "disk": []}
    host, disk = ModelSnapshot(), DiskSnapshot(root, _Files())
    for _ in range(repeats):
        for name, snapshot in (("host", host), ("disk", disk)):
            started = time.perf_counter()
            snapshot.take(module, optimizer, 0)
            times[name].append(time.perf_counter() - started)
    disk.remove()
    return {
        "mib": state_bytes(module, optimizer) / 2**20,
        "host_ms": 1000 * statistics.median(times["host"]),
        "disk_ms": 1000 * statistics.median(times["disk"]),
    }


def _finite(value: float, chance: float) -> float:
    return value if math.isfinite(value) else chance


def score(runs: list[NaturalRun], chance: float) -> dict[str, Any]:
    """Per multiple: mean final loss of each method, whether the unguarded runs were unstable, and the goals."""

    def losses(method: str, multiple: int) -> dict[int, float]:
        return {r.seed: _finite(r.loss, chance) for r in runs if r.method == method and r.multiple == multiple}

    multiples = sorted({r.multiple for r in runs})
    best = statistics.mean(losses("none", multiples[0]).values())
    spread = statistics.stdev(losses("none", multiples[0]).values()) if len(losses("none", multiples[0])) > 1 else 0.0
    tolerance = max(2 * spread, 0.005 * best)
    rows = []
    for multiple in multiples:
        none, ours = losses("none", multiple), losses("lr_callbacks", multiple)
        unstable = any(
            r.spiked or _finite(r.loss, chance) > 1.1 * best
            for r in runs
            if r.method == "none" and r.multiple == multiple
        )
        near_best = all(v <= 1.1 * best for v in ours.values())
        not_worse = all(ours[s] <= none[s] + tolerance for s in ours if s in none)
        rows.append(
            {
                "multiple": multiple,
                "lr": BEST_LR * multiple,
                "none": statistics.mean(none.values()),
                "lr_callbacks": statistics.mean(ours.values()),
                "unstable": unstable,
                "within_10pct_of_best": near_best,
                "not_worse_than_none": not_worse,
            }
        )
    goal_rows = [r for r in rows if r["unstable"]]
    return {
        "best_loss": best,
        "tolerance": tolerance,
        "rows": rows,
        "unstable_multiples": len(goal_rows),
        "within_10pct": sum(r["within_10pct_of_best"] for r in goal_rows),
        "never_worse": all(r["not_worse_than_none"] for r in rows),
    }


def _plot(path: str, runs: list[NaturalRun], result: dict[str, Any], chance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot(1, 1, 1)
    for method, color in (("none", "tab:red"), ("lr_callbacks", "tab:blue")):
        mine = [r for r in runs if r.method == method]
        axes.scatter([BEST_LR * r.multiple for r in mine], [_finite(r.loss, chance) for r in mine], color=color, s=12)
        axes.plot([r["lr"] for r in result["rows"]], [r[method] for r in result["rows"]], color=color, label=method)
    axes.axhline(1.1 * result["best_loss"], color="grey", linestyle="--", label="best-LR run + 10%")
    axes.set_xscale("log")
    axes.set_xlabel("peak LR (AdamW)")
    axes.set_ylabel("final validation loss")
    axes.set_title("charlm: natural instability, with and without the watchdog")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def run(ctx: Context) -> dict[str, Any]:
    """Run the sweep; write ``watchdog_natural.md``/``.json``/``.png``; return the summary part."""
    from benchmarks.models.charlm import charlm_task

    scale = QUICK if ctx.quick else FULL
    task = charlm_task(steps=scale.steps)
    started = time.perf_counter()
    runs: list[NaturalRun] = []
    with ctx.scratch() as root, quiet():
        for method in METHODS:
            log(f"watchdog natural instability: {method} ({len(scale.multiples) * scale.seeds} runs)")
            for multiple in scale.multiples:
                for seed in range(scale.seeds):
                    runs.append(run_one(task, method, multiple, seed, root))
    result = score(runs, task.chance_loss)
    with ctx.scratch() as root:
        costs = snapshot_costs(task, root)
    result["snapshot"] = costs
    seconds = time.perf_counter() - started
    write_json(
        ctx.path("watchdog_natural.json"), {"scale": asdict(scale), "result": result, "runs": [asdict(r) for r in runs]}
    )
    _plot(ctx.path("watchdog_natural.png"), runs, result, task.chance_loss)
    rows = [
        [
            f"{r['multiple']}×",
            fmt(r["lr"]),
            fmt(r["none"]),
            fmt(r["lr_callbacks"]),
            "yes" if r["unstable"] else "no",
            "yes" if r["within_10pct_of_best"] else "no",
            "yes" if r["not_worse_than_none"] else "no",
        ]
        for r in result["rows"]
    ]
    events = "\n".join(
        f"- {r.multiple}× / seed {r.seed}: " + "; ".join(r.events[:6]) + (" …" if len(r.events) > 6 else "")
        for r in runs
        if r.events
    )
    text = f"""# Watchdog: natural instability

{stamp(ctx, seconds)}

Task: {task.describe}; AdamW, warmup + cosine through `LRSchedule`; peak LR = multiple × {BEST_LR} (the best
of the finder benchmark's charlm/AdamW grid); {scale.seeds} seeds per point; no fault is injected. Final
validation loss, mean over seeds (non-finite = the chance loss {task.chance_loss:.3g}). **Unstable**: on some
seed the unguarded training loss rose above 1.5× its running minimum after the warmup, or the run ended more
than 10% above the best-LR run ({fmt(result["best_loss"])}). The goal, at every unstable multiple: the guarded
run within 10% of the best-LR run, and never worse than the unguarded run (same seed, tolerance
{fmt(result["tolerance"])}).

{markdown_table(HEADER, rows)}

Within 10% of the best at {result["within_10pct"]} of {result["unstable_multiples"]} unstable multiples; never
worse than unguarded: {"yes" if result["never_worse"] else "no"}.

![final loss vs LR](watchdog_natural.png)

The watchdog's snapshot of this model (AdamW, after one step): {costs["mib"]:.2f} MiB of model and optimizer
state; {costs["host_ms"]:.2f} ms to take one in host memory, {costs["disk_ms"]:.2f} ms on disk (median of 5;
the default ring holds 3, one every max(10 steps, 1% of the run)).

The watchdog's interventions:

{events or "- none"}
"""
    with open(ctx.path("watchdog_natural.md"), "w") as handle:
        handle.write(text)
    return {
        "unstable_multiples": result["unstable_multiples"],
        "within_10pct": result["within_10pct"],
        "never_worse": result["never_worse"],
        "snapshot_mib": costs["mib"],
        "snapshot_host_ms": costs["host_ms"],
        "snapshot_disk_ms": costs["disk_ms"],
    }
