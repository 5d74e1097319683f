"""Where the DivergenceWatchdog's time goes: its time per hook on the overhead benchmark's tasks, and a profile.

Trains the overhead benchmark's task (``benchmarks/overhead.py``: the same model, data order, LR, logger and
trainer settings) with a default ``DivergenceWatchdog`` and times each of its hooks (and the parts named in
:data:`PARTS`) with ``perf_counter``, after a warm-up, as the benchmark's ``HookClock`` times them all together, and
on this thread's CPU time (``<hook> cpu``), steadier on a machine shared with other work: run an A/B on it.
With ``--profile`` a ``cProfile`` runs inside the watchdog's hooks only and its top functions are printed.

    PYTHONPATH=$PWD python scripts/profile_watchdog.py --model charlm --steps 300
    PYTHONPATH=$PWD python scripts/profile_watchdog.py --model minilm --steps 30 --profile
    PYTHONPATH=$PWD python scripts/profile_watchdog.py --json out.json  # the µs per hook, for A/B comparisons

Torch runs on one thread (``--threads``), as the benchmarks do.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import tempfile
import time
from collections.abc import Callable
from typing import Any

HOOKS = ("on_train_batch_start", "on_before_backward", "on_before_optimizer_step", "on_train_batch_end")
PARTS = ("_host_step",)
"""Methods called inside the hooks, timed apart (their time is also in their hook's)."""


class Clocks:
    """Per-name totals of the wrapped methods on two clocks, counted once ``active``: the wall clock
    (``perf_counter``) and this thread's CPU time (``thread_time``), which leaves out the time a shared machine gives
    to other processes. An optional profiler runs inside the outermost ones."""

    def __init__(self, profiler: cProfile.Profile | None) -> None:
        self.totals: dict[str, float] = {}
        self.cpu_totals: dict[str, float] = {}
        self.active = False
        self.depth = 0
        self.profiler = profiler

    def wrap(self, owner: Any, name: str) -> None:
        method = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return method(*args, **kwargs)
            self.depth += 1
            if self.depth == 1 and self.profiler is not None:
                self.profiler.enable()
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start
                self.cpu_totals[name] = self.cpu_totals.get(name, 0.0) + time.thread_time() - cpu
                if self.depth == 1 and self.profiler is not None:
                    self.profiler.disable()
                self.depth -= 1

        setattr(owner, name, timed)


def _task(model: str, steps: int) -> Any:
    if model == "charlm":
        from benchmarks.models.charlm import charlm_task

        return charlm_task(steps=steps)
    from benchmarks.models.minilm import minilm_task

    return minilm_task(steps=steps)


def measure(model: str, steps: int, warmup: int, profile: bool) -> tuple[dict[str, float], str]:
    """µs per step in each hook (and ``total``, the hooks together) over ``steps`` steps after ``warmup``, on the
    wall clock and (``<name> cpu``) on this thread's CPU time; and the profile's report ('' without ``profile``)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    from benchmarks.finders import trainer as quiet_trainer
    from benchmarks.models import TaskModule, train_loader
    from benchmarks.overhead import MEASURED_LR
    from lr_callbacks import DivergenceWatchdog
    from lr_callbacks.core.compat import Callback

    task = _task(model, steps + warmup)
    watchdog = DivergenceWatchdog()
    clocks = Clocks(cProfile.Profile() if profile else None)
    for name in HOOKS + PARTS:
        clocks.wrap(watchdog, name)
    counted: list[int] = []

    class Start(Callback):  # counts the measured steps; the clocks start after the warm-up
        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            clocks.active = trainer.global_step >= warmup
            counted.append(int(clocks.active))

    gc.collect()
    module = TaskModule(task, "adamw", MEASURED_LR.get(task.name, task.default_lr["adamw"]), seed=0)
    with tempfile.TemporaryDirectory() as root:
        # the overhead benchmark's trainer (benchmarks.overhead._fit): quiet, no validation, a TensorBoard logger
        logger = TensorBoardLogger(root, name="watchdog")
        trainer = quiet_trainer(root, steps + warmup, [Start(), watchdog], logger=logger)
        trainer.fit(module, train_dataloaders=train_loader(task, 0))
    takes = ", ".join(f"{seconds * 1e3:.1f}" for seconds in watchdog._ring.seconds)
    print(f"snapshot takes (ms, in order, the fit start's first): {takes}")
    if watchdog.events:
        print(f"note: {len(watchdog.events)} watchdog events in the run: {[e.row() for e in watchdog.events]}")
    n = max(sum(counted), 1)
    per_step = {name: clocks.totals.get(name, 0.0) / n * 1e6 for name in HOOKS + PARTS}
    per_step["total"] = sum(per_step[name] for name in HOOKS)
    for name in HOOKS + PARTS:
        per_step[f"{name} cpu"] = clocks.cpu_totals.get(name, 0.0) / n * 1e6
    per_step["total cpu"] = sum(per_step[f"{name} cpu"] for name in HOOKS)
    report = ""
    if clocks.profiler is not None:
        stream = io.StringIO()
        stats = pstats.Stats(clocks.profiler, stream=stream)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
        report = stream.getvalue()
    return per_step, report


def main(argv: list[str] | None = None, run: Callable[..., Any] = measure) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("charlm", "minilm"), default="charlm")
    parser.add_argument("--steps", type=int, default=300, help="measured steps (default 300)")
    parser.add_argument("--warmup", type=int, default=10, help="steps before the clocks start (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--profile", action="store_true", help="cProfile the hooks and print the top functions")
    parser.add_argument("--json", help="also write the µs per hook to this file")
    args = parser.parse_args(argv)

    import logging

    import torch

    threads = torch.get_num_threads()
    loggers = [
        logging.getLogger(name) for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lr_callbacks")
    ]
    levels = [logger.level for logger in loggers]
    torch.set_num_threads(args.threads)
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        per_step, report = run(args.model, args.steps, args.warmup, args.profile)
    finally:  # put back for a caller in the same process (the tests)
        torch.set_num_threads(threads)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    for name, us in per_step.items():
        print(f"{name:28s} {us:9.1f} µs/step")
    if report:
        print(report)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(per_step, handle, indent=1)
    return per_step


if __name__ == "__main__":
    main()
