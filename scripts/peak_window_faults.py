"""The watchdog benchmark's seven faults moved into the window where trouble is read as a peak LR too high.

``benchmarks.watchdog_recovery`` starts its faults at 40% of the run (step 160 + 7 × seed of 400), past the window in
which the watchdog reads trouble as the planned peak's fault (while the LR warms up, and at its peak until twice the
warmup's end: steps 0-39 of the digits MLP's 400, whose 5% warmup ends at step 20). There a rollback goes back to
before the LR passed a tenth of it and keeps the scale at a tenth of the LR's share (``PEAK_CUT``). This runs the
same faults, seeds and runs as that benchmark (its ``run_one``), started at step ``--start`` + 2 × seed instead,
unguarded and guarded by the default ``DivergenceWatchdog``, and prints each pair's final validation loss: the
issue's promise is that the watchdog never leaves a run worse off than no watchdog would have.

    python scripts/peak_window_faults.py --start 25            # at the peak, after the warmup (all faults)
    python scripts/peak_window_faults.py --start 12 --faults lr_pulse_x10,label_noise_50 --optimizers adamw

writes ``--out`` (JSON, each pair's two final losses and the guarded run's events) and prints one line per fault,
optimizer and seed, ``WORSE`` where the guarded run ends more than 5% above the unguarded one; then the count of
such pairs. About 4 seconds a run on this 2-core CPU: the seven faults on both optimizers over 5 seeds are 70 pairs,
140 runs, 9-10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORSE = 1.05
"""A guarded run counts as worse than the unguarded one above this ratio of their final losses."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=25, help="the fault's first step for seed 0 (+2 per seed)")
    parser.add_argument("--faults", default="", help="comma-separated (default: the benchmark's seven)")
    parser.add_argument("--optimizers", default="sgd,adamw")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="peak_window_faults.json")
    args = parser.parse_args(argv)

    import torch

    from benchmarks import watchdog_recovery
    from benchmarks.faults import FAULTS, applies, fault
    from benchmarks.models.digits import digits_task

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # the benchmark's runs as they are, the fault's start moved into the window (both put back at the end: a test
    # runs this script in its own process)
    watchdog_recovery.fault = lambda name, start, seed=0: fault(name, args.start + 2 * seed, seed)  # type: ignore[assignment]
    try:
        _run(args, watchdog_recovery, applies, FAULTS, digits_task)
    finally:
        watchdog_recovery.fault = fault
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, watchdog_recovery: Any, applies: Any, all_faults: Any, digits_task: Any) -> None:
    scale = watchdog_recovery.FULL
    task = digits_task("mlp", steps=scale.steps)
    faults = [f for f in args.faults.split(",") if f] or list(all_faults)
    rows, worse = [], 0
    for optimizer in args.optimizers.split(","):
        for name in faults:
            if not applies(name, optimizer):
                continue
            for seed in range(args.seeds):
                losses, events = {}, []
                for method in ("none", "lr_callbacks"):
                    with tempfile.TemporaryDirectory() as root:
                        outcome = watchdog_recovery.run_one(task, method, optimizer, name, seed, scale, root)
                    losses[method] = outcome.loss
                    events = outcome.events if method == "lr_callbacks" else events
                flag = losses["lr_callbacks"] > WORSE * losses["none"]
                worse += flag
                print(
                    f"{optimizer} {name} seed {seed} (from step {args.start + 2 * seed}): unguarded "
                    f"{losses['none']:.4f}, guarded {losses['lr_callbacks']:.4f}{'  WORSE' if flag else ''}",
                    flush=True,
                )
                rows.append({"optimizer": optimizer, "fault": name, "seed": seed, **losses, "events": events})
    print(f"guarded worse than unguarded (by more than {WORSE - 1:.0%}): {worse} of {len(rows)} runs")
    with open(args.out, "w") as handle:
        json.dump({"start": args.start, "runs": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
