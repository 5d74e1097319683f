"""The main demo: a real training run on scikit-learn's bundled handwritten digits, with lr_callbacks.

An MLP learns the 8×8 digits (1,797 real images, shipped with scikit-learn) under ``LRSchedule``:
a warmup, then a cosine decay to 5% of the peak. Everything is logged to TensorBoard under
``demo_logs/``; the script prints the plan the schedule followed and the LRs it actually used.

Run it with ``bash scripts/demo.sh`` (installs, then runs), or ``python examples/demo.py`` in the venv.
"""

from __future__ import annotations

import argparse
import logging
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from lr_callbacks import LRSchedule


def digits_loaders(batch_size: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Train/validation loaders over the digits, pixels scaled to [0, 1], a fixed 80/20 split."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(x))
    train, val = order[:cut], order[cut:]
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True),
        DataLoader(TensorDataset(x[val], y[val]), batch_size=256),
    )


class DigitsMLP(pl.LightningModule):
    """64 → 128 → 10 with AdamW; the output layer gets a tenth of the body's LR (two named groups)."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.lr = lr
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU())
        self.head = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            [
                {"params": self.body.parameters(), "name": "body"},
                {"params": self.head.parameters(), "lr": self.lr / 10, "name": "head"},
            ],
            lr=self.lr,
            weight_decay=0.01,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--logdir", default="demo_logs")
    args = parser.parse_args()

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders()

    schedule = LRSchedule("cosine", warmup="5%", end=0.05)
    logger = TensorBoardLogger(args.logdir, name="digits")
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[schedule],
        logger=logger,
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    model = DigitsMLP()
    trainer.fit(model, train, val)

    print("\n== LRSchedule: the plan it followed ==")
    print(schedule.plan_table())
    steps = schedule.steps[0]
    used = [schedule.lr_at(k) for k in (0, steps // 2, steps - 1)]
    print(f"\nbody LR at steps 0, {steps // 2}, {steps - 1}: " + ", ".join(f"{lr:.3g}" for lr in used))
    metrics = trainer.callback_metrics
    print(f"\n== Result after {args.epochs} epochs ({steps} optimizer steps) ==")
    print(f"validation accuracy {float(metrics['val_acc']):.3f}, validation loss {float(metrics['val_loss']):.3f}")
    print(f"\nTensorBoard logs: {logger.log_dir}")
    print(f"  see them with:  tensorboard --logdir {args.logdir}")
    print("  tags: lr/body, lr/head (every step), lr_schedule/plan (image), lr_schedule/summary (text)")


if __name__ == "__main__":
    main()
