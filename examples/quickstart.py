"""Quickstart: the three callbacks together on scikit-learn's bundled handwritten digits.

- ``LRFinder`` runs an LR range test at fit start, inside this very trainer, restores everything it
  touched, and sets the peak LR it found;
- ``LRSchedule`` warms up over 5% of the run, then follows a cosine to 5% of that peak;
- ``DivergenceWatchdog`` judges every step before the update. One corrupted batch (its pixels ×1000, as
  from a broken data pipeline) arrives at step ``--bad-batch``: the watchdog skips that update.

    python examples/quickstart.py             # or `bash scripts/demo.sh`, which installs, then runs it
    tensorboard --logdir quickstart_logs --samples_per_plugin text=100000  # lr/..., lr_finder/curve, watchdog/events
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule


def digits(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """80/20 train/validation loaders over the 1,797 8×8 digits, pixels scaled to [0, 1]."""
    data = load_digits()
    x, y = torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val = order[: int(0.8 * len(x))], order[int(0.8 * len(x)) :]
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True),
        DataLoader(TensorDataset(x[val], y[val]), batch_size=512),
    )


class DigitsMLP(pl.LightningModule):
    """64 → 128 → 10, AdamW. ``bad_batch``: the optimizer step whose batch arrives corrupted."""

    def __init__(self, bad_batch: int | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        self.bad_batch = bad_batch

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        # the corrupted batch is this step's own: the watchdog's evaluation of its clean reference batch (run
        # without gradients, at the same global_step) must not see it
        corrupt = torch.is_grad_enabled() and not self.trainer.sanity_checking
        if self.trainer.global_step == self.bad_batch and corrupt:
            x = x * 1000.0
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self.net(batch[0])
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, batch[1]))
        self.log("val_acc", (logits.argmax(-1) == batch[1]).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.01)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--finder-steps", type=int, default=100, help="optimizer steps of the range test")
    parser.add_argument("--bad-batch", type=int, default=120, help="the step of the corrupted batch (-1: none)")
    parser.add_argument("--logdir", default="quickstart_logs", help="where the TensorBoard logs go")
    args = parser.parse_args(argv)

    pl.seed_everything(0, verbose=False)
    train, val = digits()
    finder = LRFinder(min_lr=1e-5, max_lr=1.0, num_steps=args.finder_steps)
    schedule = LRSchedule("cosine", warmup="5%", end=0.05)
    watchdog = DivergenceWatchdog()
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[finder, schedule, watchdog],
        logger=TensorBoardLogger(args.logdir, name="quickstart"),
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    model = DigitsMLP(bad_batch=args.bad_batch if args.bad_batch >= 0 else None)
    trainer.fit(model, train, val)

    assert finder.result is not None
    print(f"\n== LRFinder ==\n{finder.result.summary()}")
    print(f"\n== LRSchedule: the plan it followed ==\n{schedule.plan_table()}")
    print("\n== DivergenceWatchdog ==")
    for i in watchdog.events:
        print(f"step {i.step}: {i.signal} = {i.value:.3g} (limit {i.threshold:.3g}) -> {i.action} {i.detail}")
    if not watchdog.events:
        print("no incident")
    accuracy = float(trainer.callback_metrics["val_acc"])
    print(f"\nvalidation accuracy after {args.epochs} epochs: {accuracy:.3f}")
    print(f"TensorBoard logs in {trainer.log_dir}: tensorboard --logdir {args.logdir} --samples_per_plugin text=100000")
    return {"lr": finder.result.chosen_lr, "accuracy": accuracy, "events": watchdog.events, "schedule": schedule}


if __name__ == "__main__":
    main()
