"""Benchmark 1: the step-time cost of the callbacks, against a bare ``Trainer``, in one interleaved process.

Arms, each a fresh ``Trainer`` and the same model, data order and logger (TensorBoard, Lightning's default
cadence):

- ``bare``: no callbacks of ours;
- ``LRSchedule``: the task's schedule alone;
- ``DivergenceWatchdog``: the watchdog alone;
- ``all``: ``LRSchedule`` + ``LRFinder`` + ``DivergenceWatchdog``, at their defaults (on the CPU the
  watchdog reads its two numbers back every step: there is no device to wait for);
- ``all, sync every 8``: the same with ``DivergenceWatchdog(sync_every_n_steps=8)``, its default on a GPU
  (decisions on the device, values read back every 8 steps).

Rounds run every arm once, in a rotated order, so slow drift of a shared machine hits every arm alike; the
benchmark reports the median over rounds of each arm's time per step and of the per-round ratio to ``bare``.
A step is timed from one ``on_train_batch_start`` to the next, only after the finder's sweep has ended and
after a few warm-up steps: Trainer start-up and the sweep are not steps.

Host reads per step are counted in separate, untimed runs (a ``TorchFunctionMode`` slows every torch call):
every ``Tensor.item``, ``.cpu``, ``.tolist``, ``.numpy``, ``bool(t)``, ``float(t)`` and ``int(t)`` made while
the timed steps run, model and Lightning included; the ``bare`` arm shows Lightning's own.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.overrides import TorchFunctionMode

from benchmarks._common import Context, fmt, log, markdown_table, quiet, stamp, write_json
from benchmarks.models import Task, TaskModule, train_loader
from lr_callbacks._compat import Callback

__all__ = ["HostReads", "Scale", "StepTimer", "run"]

HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__")


class HostReads(TorchFunctionMode):
    """Counts the torch calls that read a tensor's value back to the host (see :data:`HOST_READS`).

    >>> import torch
    >>> with HostReads() as reads:
    ...     t = torch.ones(2)
    ...     _ = t.sum().item(), bool(t.any()), t.tolist()
    >>> reads.count
    3
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.by_name: dict[str, int] = {}
        self.active = True

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if self.active and name in HOST_READS:
            self.count += 1
            self.by_name[name] = self.by_name.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


class StepTimer(Callback):
    """Records the time of every ``on_train_batch_start`` once ``ready()`` is true (e.g. the finder is done).

    Args:
        ready: a function telling whether the measured part of the run has begun.
        warmup: steps ignored at the start of the measured part.
        reads: an active :class:`HostReads` whose count is sampled at each step (or ``None``).
    """

    def __init__(self, ready: Callable[[], bool] = lambda: True, warmup: int = 5, reads: HostReads | None = None):
        self.ready = ready
        self.warmup = warmup
        self.reads = reads
        self.times: list[float] = []
        self.counts: list[int] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if not self.ready():
            return
        self.times.append(time.perf_counter())
        if self.reads is not None:
            self.counts.append(self.reads.count)

    def seconds_per_step(self) -> float:
        times = self.times[self.warmup :]
        if len(times) < 2:
            return math.nan
        return (times[-1] - times[0]) / (len(times) - 1)

    def reads_per_step(self) -> float:
        counts = self.counts[self.warmup :]
        if len(counts) < 2:
            return math.nan
        return (counts[-1] - counts[0]) / (len(counts) - 1)


@dataclass(frozen=True)
class Scale:
    """How much to run: rounds of every arm, measured steps per run, warm-up steps."""

    rounds: int
    steps: dict[str, int]
    warmup: int = 10
    finder_steps: int | None = None  # the finder's sweep (None: its default)


FULL = Scale(rounds=8, steps={"digits": 600, "charlm": 300})
QUICK = Scale(rounds=2, steps={"digits": 40, "charlm": 15}, warmup=3, finder_steps=10)
ARMS = ("bare", "LRSchedule", "DivergenceWatchdog", "all", "all, sync every 8")


def _callbacks(arm: str, task: Task, scale: Scale) -> tuple[list[Any], Callable[[], bool]]:
    from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule

    if arm == "bare":
        return [], lambda: True
    if arm == "LRSchedule":
        return [LRSchedule(task.schedule)], lambda: True
    if arm == "DivergenceWatchdog":
        return [DivergenceWatchdog()], lambda: True
    finder = LRFinder() if scale.finder_steps is None else LRFinder(num_steps=scale.finder_steps)
    watchdog = DivergenceWatchdog() if arm == "all" else DivergenceWatchdog(sync_every_n_steps=8)
    return [LRSchedule(task.schedule), finder, watchdog], lambda: finder.result is not None


def _fit(task: Task, optimizer: str, arm: str, scale: Scale, steps: int, root: str, count: bool) -> StepTimer:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    callbacks, ready = _callbacks(arm, task, scale)
    reads = HostReads() if count else None
    timer = StepTimer(ready, scale.warmup, reads)
    module = TaskModule(task, optimizer, task.default_lr[optimizer], seed=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + scale.warmup,
        logger=TensorBoardLogger(root, name=arm),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=root,
        callbacks=[*callbacks, timer],
    )
    if reads is not None:
        with reads:
            trainer.fit(module, train_dataloaders=train_loader(task, 0))
    else:
        trainer.fit(module, train_dataloaders=train_loader(task, 0))
    return timer


def measure(ctx: Context, name: str, task: Task, optimizer: str, scale: Scale) -> dict[str, Any]:
    """Interleaved rounds of every arm on one task; medians of time per step and of ratios to ``bare``."""
    steps = scale.steps[name]
    per_arm: dict[str, list[float]] = {arm: [] for arm in ARMS}
    ratios: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with ctx.scratch() as root, quiet():
        for r in range(scale.rounds):
            order = ARMS[r % len(ARMS) :] + ARMS[: r % len(ARMS)]
            times = {arm: _fit(task, optimizer, arm, scale, steps, root, False).seconds_per_step() for arm in order}
            for arm in ARMS:
                per_arm[arm].append(times[arm])
                ratios[arm].append(times[arm] / times["bare"])
            log(
                f"  overhead {name} round {r + 1}/{scale.rounds}: "
                + ", ".join(f"{a} {times[a] * 1e6:.0f} µs" for a in ARMS)
            )
        reads = {arm: _fit(task, optimizer, arm, scale, steps, root, True).reads_per_step() for arm in ARMS}
    result: dict[str, Any] = {"task": task.describe, "optimizer": optimizer, "rounds": scale.rounds, "steps": steps}
    for arm in ARMS:
        bare = statistics.median(per_arm["bare"])
        result[arm] = {
            "us_per_step": statistics.median(per_arm[arm]) * 1e6,
            "ratio": statistics.median(ratios[arm]),
            "added_us_per_step": statistics.median(a - b for a, b in zip(per_arm[arm], per_arm["bare"])) * 1e6,
            "host_reads_per_step": reads[arm],
            "added_host_reads_per_step": reads[arm] - reads["bare"],
            "bare_us_per_step": bare * 1e6,
            "ratios": ratios[arm],
        }
    return result


def run(ctx: Context) -> dict[str, Any]:
    """Run the overhead benchmark on digits and charlm; write ``overhead.md``/``.json``; return the summary part."""
    from benchmarks.models.charlm import charlm_task
    from benchmarks.models.digits import digits_task

    scale = QUICK if ctx.quick else FULL
    start = time.perf_counter()
    tasks = {
        "digits": (digits_task("mlp", steps=scale.steps["digits"]), "adamw"),
        "charlm": (charlm_task(steps=scale.steps["charlm"]), "adamw"),
    }
    results = {}
    for name, (task, optimizer) in tasks.items():
        log(f"overhead: {name}")
        results[name] = measure(ctx, name, task, optimizer, scale)
    seconds = time.perf_counter() - start
    write_json(ctx.path("overhead.json"), results)
    _report(ctx, results, seconds)
    return {
        name: {
            "ratio": r["all"]["ratio"],
            "us_per_step": r["all"]["added_us_per_step"],
            "host_reads_per_step": r["all"]["added_host_reads_per_step"],
        }
        for name, r in results.items()
    }


def _report(ctx: Context, results: dict[str, Any], seconds: float) -> None:
    rows = []
    for name, r in results.items():
        for arm in ARMS:
            a = r[arm]
            rows.append(
                [
                    name,
                    arm,
                    f"{a['us_per_step']:.0f}",
                    f"{(a['ratio'] - 1) * 100:+.2f}%",
                    f"{(min(a['ratios']) - 1) * 100:+.1f}% to {(max(a['ratios']) - 1) * 100:+.1f}%",
                    f"{a['added_us_per_step']:+.0f}",
                    fmt(a["host_reads_per_step"]),
                    fmt(a["added_host_reads_per_step"]),
                ]
            )
    header = [
        "model",
        "arm",
        "µs/step",
        "overhead vs bare",
        "range over rounds",
        "added µs/step",
        "host reads/step",
        "added reads/step",
    ]
    tasks = "\n".join(
        f"- **{name}**: {r['task']}; AdamW; {r['rounds']} rounds of {r['steps']} timed steps"
        for name, r in results.items()
    )
    text = f"""# Overhead of the callbacks

{stamp(ctx, seconds)}

What it measures: the time per optimizer step of a real `Trainer` with our callbacks, against the same
`Trainer` without them (bare), in one process; the arms run in rotated order every round and the table shows
medians over rounds (time per step, ratio to the bare arm of the same round, added µs), and the lowest and
highest per-round ratio: the noise of a CPU shared with other work is of that order. Steps are timed from
one `on_train_batch_start` to the next, after the finder's sweep and a warm-up. Host reads (`item`, `cpu`,
`tolist`, `numpy`, `bool`, `float`, `int` on tensors) are counted in separate untimed runs by a
`TorchFunctionMode`; the bare arm's are Lightning's own. The goal is at most +1% on charlm.

{tasks}

{markdown_table(header, rows)}
"""
    with open(ctx.path("overhead.md"), "w") as handle:
        handle.write(text)
