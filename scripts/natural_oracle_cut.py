"""What the best reactive LR cut could do for a run started at a too-high LR: the natural-instability benchmark's
charlm run (``benchmarks.watchdog_natural``: GPT 2×64, AdamW, warmup + cosine, 400 steps) at ``--multiple`` × its
best LR, with the LR scale cut by ``--factor`` at step ``--cut-at``, as the watchdog cuts it
(:func:`~lr_callbacks.core.lr_model.set_lr_scale`), chosen with hindsight instead of by a detector: an oracle.

    python scripts/natural_oracle_cut.py --multiple 10 --seed 1 --cut-at 150 --factor 0.5

prints the final validation loss of the run without a cut and with it, and the training loss's mean over each
25-step block of the cut run. If no cut at or after the step where a detector could first see the trouble ends
the run near the best-LR run's loss (2.24; the benchmark's goal: within 10%, 2.46), no watchdog rule that acts
then can either: the damage was done before anything showed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multiple", type=float, default=10.0, help="the peak LR as a multiple of the best, 0.0128")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cut-at", type=int, default=150, help="the step whose update is the first at the cut LR")
    parser.add_argument("--factor", type=float, default=0.5, help="the LR scale from that step on")
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()

    import pytorch_lightning as pl
    import torch

    from benchmarks.finders import trainer as make_trainer
    from benchmarks.models import TaskModule, evaluate, train_loader
    from benchmarks.models.charlm import charlm_task
    from benchmarks.watchdog_natural import BEST_LR, _Losses
    from lr_callbacks import LRSchedule
    from lr_callbacks.core.lr_model import set_lr_scale

    torch.set_num_threads(1)
    task = charlm_task(steps=args.steps)

    class OracleCut(pl.Callback):
        def on_train_batch_start(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, i: int
        ) -> None:
            if trainer.global_step == args.cut_at:
                set_lr_scale(trainer, args.factor, 1.0)

    def train(cut: bool) -> tuple[float, list[float]]:
        losses = _Losses()
        module = TaskModule(task, "adamw", BEST_LR * args.multiple, seed=args.seed, log_loss=False)
        callbacks = [LRSchedule(task.schedule, log_plan=False), *([OracleCut()] if cut else []), losses.callback]
        with tempfile.TemporaryDirectory() as root:
            make_trainer(root, task.steps, callbacks).fit(module, train_dataloaders=train_loader(task, args.seed))
        return evaluate(task, module.model)["loss"], losses.values

    plain, _ = train(cut=False)
    cut, values = train(cut=True)
    blocks = [round(statistics.mean(values[i : i + 25]), 2) for i in range(0, len(values), 25)]
    run = f"{args.multiple:g}x, seed {args.seed}: final val loss"
    print(f"{run} {plain:.3f} without a cut")
    print(f"{run} {cut:.3f} with the LR scale cut to {args.factor:g} at step {args.cut_at}")
    print(f"training loss, mean of each 25 steps of the cut run: {blocks}")


if __name__ == "__main__":
    main()
