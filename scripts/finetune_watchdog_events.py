"""The watchdog's events on a clean MiniLM fine-tuning run (no fault injected): a check of its false interventions
in the package's main use case, which the watchdog benchmark (the digits MLP from scratch) does not cover.

    python scripts/finetune_watchdog_events.py --head probe --lr 1e-4 --seed 0 --steps 300

trains ``benchmarks.models.minilm`` (all-MiniLM-L6-v2, batch 8, AdamW, the task's warmup + linear decay through
``LRSchedule``) with ``DivergenceWatchdog()`` at its defaults and prints every event as ``(step, signal, action)``.
``--head probe`` starts from the fitted linear probe, ``fresh`` from a random head. ``--compare`` also trains
the same run (same seed, same batches) without the watchdog and prints both runs' validation loss: the watchdog
must never leave a run worse off than no watchdog.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    parser.add_argument("--head", choices=("probe", "fresh"), default="probe")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--compare", action="store_true", help="also train without the watchdog; print both val losses")
    args = parser.parse_args()

    import torch

    from benchmarks.finders import trainer
    from benchmarks.models import TaskModule, evaluate, train_loader
    from benchmarks.models.minilm import minilm_task
    from lr_callbacks import DivergenceWatchdog, LRSchedule

    torch.set_num_threads(1)
    task = minilm_task(steps=args.steps, head=args.head)

    def fit(watchdog: DivergenceWatchdog | None) -> float:
        module = TaskModule(task, "adamw", args.lr, seed=args.seed, log_loss=False)
        with tempfile.TemporaryDirectory() as root:
            callbacks = [LRSchedule(task.schedule, log_plan=False), *([watchdog] if watchdog else [])]
            trainer(root, args.steps, callbacks).fit(module, train_dataloaders=train_loader(task, args.seed))
        return float(evaluate(task, module.model)["loss"])

    watchdog = DivergenceWatchdog()
    guarded = fit(watchdog)
    events = [(e.step, str(e.signal), str(e.action)) for e in watchdog.events]
    print(f"{args.head} head, LR {args.lr:g}, seed {args.seed}, {args.steps} steps: {len(events)} events {events}")
    if args.compare:
        print(f"validation loss: with the watchdog {guarded:.4f}, without {fit(None):.4f}")
    else:
        print(f"validation loss: with the watchdog {guarded:.4f}")


if __name__ == "__main__":
    main()
