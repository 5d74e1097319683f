"""Benchmark 1: the step-time cost of the callbacks, against a bare ``Trainer``, in one interleaved process.

Arms, each a fresh ``Trainer`` and the same model, data order and logger (TensorBoard, Lightning's default
cadence):

- ``bare``: no callbacks of ours;
- ``LRSchedule``: the task's schedule alone;
- ``DivergenceWatchdog``: the watchdog alone;
- ``gradient norm alone``: :class:`GradientNormFloor`, a hook that reads the step's gradient norm back and does
  nothing else: the least any guard that looks at every step's gradients costs (the watchdog's cost budget is
  set against it in ``overhead.md``);
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

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.overrides import TorchFunctionMode

from benchmarks._common import Context, fmt, log, markdown_table, quiet, stamp, write_json
from benchmarks.models import Task, TaskModule, train_loader
from lr_callbacks.core.compat import Callback

__all__ = ["GradientNormFloor", "HookClock", "HostReads", "Scale", "StepTimer", "run"]

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


class HookClock:
    """Time spent inside the hooks of the given callbacks (and ``LRSchedule``'s optimizer step hook).

    Each ``on_*`` hook (and ``_after_step``) is wrapped on the instance, so Lightning, which looks hooks up by
    name, calls the wrapper; the wrapper adds its ``perf_counter`` time to :attr:`total`.

    >>> class Slow:
    ...     def on_train_batch_start(self, *args):
    ...         sum(range(10_000))
    >>> slow = Slow()
    >>> clock = HookClock([slow])
    >>> slow.on_train_batch_start(None)
    >>> clock.total > 0
    True
    """

    def __init__(self, callbacks: list[Any]) -> None:
        self.total = 0.0
        for callback in callbacks:
            for name in dir(type(callback)):
                if name.startswith("on_") or name == "_after_step":
                    setattr(callback, name, self._timed(getattr(callback, name)))

    def _timed(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start

        return timed


class StepTimer(Callback):
    """Records the wall and CPU time of every ``on_train_batch_start`` once ``ready()`` is true.

    The CPU time is the process's (``time.process_time``, every thread): unlike the wall time it does not
    count the time a shared machine gives to other work.

    Args:
        ready: a function telling whether the measured part of the run has begun (e.g. the finder is done).
        warmup: steps ignored at the start of the measured part.
        reads: an active :class:`HostReads` whose count is sampled at each step (or ``None``).
        clock: a :class:`HookClock` whose total is sampled at each step (or ``None``).
    """

    def __init__(
        self,
        ready: Callable[[], bool] = lambda: True,
        warmup: int = 5,
        reads: HostReads | None = None,
        clock: HookClock | None = None,
    ):
        self.ready = ready
        self.warmup = warmup
        self.reads = reads
        self.clock = clock
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.counts: list[int] = []
        self.hook_times: list[float] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if not self.ready():
            return
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())
        if self.reads is not None:
            self.counts.append(self.reads.count)
        if self.clock is not None:
            self.hook_times.append(self.clock.total)

    @staticmethod
    def _per_step(samples: list[float] | list[int], warmup: int) -> float:
        samples = samples[warmup:]
        if len(samples) < 2:
            return math.nan
        return (samples[-1] - samples[0]) / (len(samples) - 1)

    def seconds_per_step(self) -> float:
        return self._per_step(self.times, self.warmup)

    def cpu_seconds_per_step(self) -> float:
        return self._per_step(self.cpu_times, self.warmup)

    def reads_per_step(self) -> float:
        return self._per_step(self.counts, self.warmup)

    def hook_seconds_per_step(self) -> float:
        return self._per_step(self.hook_times, self.warmup)


class GradientNormFloor(Callback):
    """The floor of a per-step guard: the step's gradient norm, one pass over the gradients
    (:func:`~lr_callbacks.core.grads.global_norm`, as the watchdog computes it) and one host read, nothing kept.

    >>> import torch
    >>> layer = torch.nn.Linear(2, 1)
    >>> layer(torch.ones(1, 2)).sum().backward()
    >>> floor = GradientNormFloor()
    >>> floor.on_before_optimizer_step(None, None, torch.optim.SGD(layer.parameters(), lr=0.1))
    >>> round(floor.norm, 4)
    1.7321
    """

    def __init__(self) -> None:
        self.norm = math.nan

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        from lr_callbacks.core.grads import global_norm

        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            self.norm = global_norm(grads, grads[0].device).item()


@dataclass(frozen=True)
class Scale:
    """How much to run: rounds of every arm, measured steps per run (per model: a model not named is not run),
    warm-up steps; ``rounds_of`` overrides the rounds for a model (MiniLM's steps are slow)."""

    rounds: int
    steps: dict[str, int]
    warmup: int = 10
    finder_steps: int | None = None  # the finder's sweep (None: its default)
    rounds_of: dict[str, int] = field(default_factory=dict)

    def rounds_for(self, name: str) -> int:
        return self.rounds_of.get(name, self.rounds)


FULL = Scale(rounds=8, steps={"digits": 600, "charlm": 300, "minilm": 60}, rounds_of={"minilm": 3})
QUICK = Scale(rounds=2, steps={"digits": 40, "charlm": 15}, warmup=3, finder_steps=10)
ARMS = ("bare", "LRSchedule", "DivergenceWatchdog", "gradient norm alone", "all", "all, sync every 8")


def _callbacks(arm: str, task: Task, scale: Scale) -> tuple[list[Any], Callable[[], bool]]:
    from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule

    if arm == "bare":
        return [], lambda: True
    if arm == "LRSchedule":
        return [LRSchedule(task.schedule)], lambda: True
    if arm == "DivergenceWatchdog":
        return [DivergenceWatchdog()], lambda: True
    if arm == "gradient norm alone":
        return [GradientNormFloor()], lambda: True
    finder = LRFinder() if scale.finder_steps is None else LRFinder(num_steps=scale.finder_steps)
    watchdog = DivergenceWatchdog() if arm == "all" else DivergenceWatchdog(sync_every_n_steps=8)
    return [LRSchedule(task.schedule), finder, watchdog], lambda: finder.result is not None


MEASURED_LR = {"minilm": 1e-4}
"""The LR the arms train at where the task's reference LR (torch's default) is one a careful user would not run:
MiniLM with its fitted probe head is past its cliff at 1e-3 (the watchdog rolled back at steps 1, 3 and 7 and
skipped inside the timed window, so the times held rollbacks and dropped updates, and the host reads went
negative: a dropped AdamW step makes none of its 100 reads), and trains cleanly at 1e-4 (``finetune_watchdog_events``
with ``--head probe``). The other tasks run at their reference LR."""


def _fit(task: Task, optimizer: str, arm: str, scale: Scale, steps: int, root: str, count: bool) -> StepTimer:
    from pytorch_lightning.loggers import TensorBoardLogger

    from benchmarks.finders import trainer as quiet_trainer

    gc.collect()  # the last arm's trainer and callbacks (cycles): collected here, not inside this arm's steps
    callbacks, ready = _callbacks(arm, task, scale)
    reads = HostReads() if count else None
    timer = StepTimer(ready, scale.warmup, reads, None if count else HookClock(callbacks))
    module = TaskModule(task, optimizer, MEASURED_LR.get(task.name, task.default_lr[optimizer]), seed=0)
    trainer = quiet_trainer(root, steps + scale.warmup, [*callbacks, timer], logger=TensorBoardLogger(root, name=arm))
    if reads is not None:
        with reads:
            trainer.fit(module, train_dataloaders=train_loader(task, 0))
    else:
        trainer.fit(module, train_dataloaders=train_loader(task, 0))
    return timer


def measure(ctx: Context, name: str, task: Task, optimizer: str, scale: Scale) -> dict[str, Any]:
    """Interleaved rounds of every arm on one task; medians of time per step and of ratios to ``bare``."""
    steps, rounds = scale.steps[name], scale.rounds_for(name)
    clocks = ("wall", "cpu", "hooks")
    per_arm: dict[str, dict[str, list[float]]] = {arm: {c: [] for c in clocks} for arm in ARMS}
    with ctx.scratch() as root, quiet():
        for r in range(rounds):
            order = ARMS[r % len(ARMS) :] + ARMS[: r % len(ARMS)]
            timers = {arm: _fit(task, optimizer, arm, scale, steps, root, False) for arm in order}
            for arm, timer in timers.items():
                per_arm[arm]["wall"].append(timer.seconds_per_step())
                per_arm[arm]["cpu"].append(timer.cpu_seconds_per_step())
                per_arm[arm]["hooks"].append(timer.hook_seconds_per_step())
            log(
                f"  overhead {name} round {r + 1}/{rounds}: "
                + ", ".join(
                    f"{a} {per_arm[a]['wall'][-1] * 1e6:.0f} µs (cpu {per_arm[a]['cpu'][-1] * 1e6:.0f})" for a in ARMS
                )
            )
        reads = {arm: _fit(task, optimizer, arm, scale, steps, root, True).reads_per_step() for arm in ARMS}
    result: dict[str, Any] = {"task": task.describe, "optimizer": optimizer, "rounds": rounds, "steps": steps}
    bare = per_arm["bare"]
    for arm in ARMS:
        a = per_arm[arm]
        ratios = {c: [x / b for x, b in zip(a[c], bare[c])] for c in ("wall", "cpu")}
        result[arm] = {
            "us_per_step": statistics.median(a["wall"]) * 1e6,
            "ratio": statistics.median(ratios["wall"]),
            "ratios": ratios["wall"],
            "added_us_per_step": statistics.median(x - b for x, b in zip(a["wall"], bare["wall"])) * 1e6,
            "cpu_us_per_step": statistics.median(a["cpu"]) * 1e6,
            "cpu_ratio": statistics.median(ratios["cpu"]),
            "cpu_ratios": ratios["cpu"],
            "added_cpu_us_per_step": statistics.median(x - b for x, b in zip(a["cpu"], bare["cpu"])) * 1e6,
            "hook_us_per_step": statistics.median(a["hooks"]) * 1e6,
            "hook_share": statistics.median(h / b for h, b in zip(a["hooks"], bare["wall"])),
            "host_reads_per_step": reads[arm],
            "added_host_reads_per_step": reads[arm] - reads["bare"],
        }
    return result


def run(ctx: Context) -> dict[str, Any]:
    """Run the overhead benchmark on digits, charlm and (full size only) MiniLM; write ``overhead.md``/``.json``;
    return the summary part."""
    from benchmarks.models.charlm import charlm_task
    from benchmarks.models.digits import digits_task
    from benchmarks.models.minilm import minilm_task

    scale = QUICK if ctx.quick else FULL
    start = time.perf_counter()
    builders = {
        "digits": lambda steps: digits_task("mlp", steps=steps),
        "charlm": lambda steps: charlm_task(steps=steps),
        "minilm": lambda steps: minilm_task(steps=steps),
    }
    tasks = {name: (builders[name](steps), "adamw") for name, steps in scale.steps.items()}
    results = {}
    for name, (task, optimizer) in tasks.items():
        log(f"overhead: {name}")
        results[name] = measure(ctx, name, task, optimizer, scale)
    seconds = time.perf_counter() - start
    write_json(ctx.path("overhead.json"), results)
    _report(ctx, results, seconds)
    return {
        name: {
            "ratio": 1.0 + r["all"]["hook_share"],
            "ab_ratio": r["all"]["cpu_ratio"],
            "us_per_step": r["all"]["hook_us_per_step"],
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
                    f"{a['cpu_us_per_step']:.0f}",
                    f"{(a['cpu_ratio'] - 1) * 100:+.2f}%",
                    f"{(min(a['cpu_ratios']) - 1) * 100:+.1f}% to {(max(a['cpu_ratios']) - 1) * 100:+.1f}%",
                    f"{a['hook_us_per_step']:.0f}",
                    f"{a['hook_share'] * 100:.2f}%",
                    fmt(a["host_reads_per_step"]),
                    fmt(a["added_host_reads_per_step"]),
                ]
            )
    header = [
        "model",
        "arm",
        "wall µs/step",
        "wall vs bare",
        "wall, range over rounds",
        "CPU µs/step",
        "CPU vs bare",
        "CPU, range over rounds",
        "µs/step in our hooks",
        "hooks / bare step",
        "host reads/step",
        "added reads/step",
    ]
    tasks = "\n".join(
        f"- **{name}**: {r['task']}; AdamW; {r['rounds']} rounds of {r['steps']} timed steps"
        for name, r in results.items()
    )
    floor = "; ".join(
        f"{name} {r['gradient norm alone']['hook_us_per_step']:.0f} µs "
        f"({r['gradient norm alone']['hook_share'] * 100:.2f}% of a bare step; the watchdog "
        f"{r['DivergenceWatchdog']['hook_us_per_step']:.0f} µs, {r['DivergenceWatchdog']['hook_share'] * 100:.2f}%)"
        for name, r in results.items()
    )
    text = f"""# Overhead of the callbacks

{stamp(ctx, seconds)}

What it measures: the time per optimizer step of a real `Trainer` with our callbacks, against the same
`Trainer` without them (bare), in one process. The arms run in rotated order every round; the table shows
medians over rounds of the time per step and of the ratio to the bare arm of the same round, and the lowest
and highest per-round ratio: the noise of a CPU shared with other work is of that order. Steps are timed from
one `on_train_batch_start` to the next, after the finder's sweep and a warm-up, on two clocks: the wall
clock, and the process's CPU time (`time.process_time`, all threads), which does not count time the machine
gives to other processes. On this shared 2-core machine the speed of a whole run drifts by ±10% from one run
to the next, so an A/B ratio cannot resolve a 1% cost. "µs/step in our hooks" is therefore measured
directly: every hook of our callbacks (and `LRSchedule`'s optimizer step hook) is timed, which gives the
cost the callbacks add without the noise of an A/B difference (their TensorBoard logging included, not the
logger's writer thread); "hooks / bare step" divides it by the bare arm's step time of the same round. That
is the headline `ratio` in `summary.json` (`ab_ratio` is the A/B median of CPU time). Host reads (`item`,
`cpu`, `tolist`, `numpy`, `bool`, `float`, `int` on tensors) are counted in separate untimed runs by a
`TorchFunctionMode`; the bare arm's are Lightning's own. The goal is at most +1% on charlm.

On this CPU every small tensor op runs synchronously, so the watchdog's device-side judging (`sync every 8`,
its default on a GPU, where it saves a host-device sync per step) costs more here than reading two numbers
back every step (its default on the CPU).

`gradient norm alone` is the floor of any guard that looks at every step's gradients: a hook that computes the
step's gradient norm as the watchdog does (one `_foreach_norm` pass over the gradients) and reads it back, nothing
else. Measured the same way, inside the same steps, that alone costs {floor}.
A budget below the floor cannot be met by a guard that reads every step's gradient norm, which is what catches
a NaN or exploding gradient before the update.

digits and charlm are small: a step's fixed costs (the watchdog's Python, one dispatch per tensor) weigh
most there. MiniLM (22.7M parameters, fully fine-tuned) shows the cost at a real model's size, where the
memory traffic weighs most: the gradient norm's pass over the gradients every step, and the snapshots' copies
of the model and its AdamW state, every 10 steps in these 70-step runs (every 1% of a run of thousands of steps).

{tasks}

{markdown_table(header, rows)}
"""
    with open(ctx.path("overhead.md"), "w") as handle:
        handle.write(text)
