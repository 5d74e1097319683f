"""The LR range test on its own: ``find_lr`` before training, like ``Tuner.lr_find``, without the callback.

A small CNN learns scikit-learn's bundled 8×8 digits with SGD and momentum. ``find_lr`` sweeps the LR inside
the trainer you will train with, returns a ``FinderResult`` (the curve, a suggestion, a range, flags that
say when the curve does not support a clean answer, and what every suggestion rule gives), and leaves the
model and the random number generators as they were. The script saves the curve, sets the LR it found as
the model's ``lr``, and trains with a cosine decay from it (``LRSchedule`` takes the peak from the optimizer).
On a run this short (225 steps) the finder warns that its sweep and probe (120 steps) take 53% of it; the
warning is expected here, as in the quickstart.

    python examples/find_lr.py                 # writes find_lr.png
    python examples/find_lr.py --method valley # fastai's rule, for comparison
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from lr_callbacks import LRSchedule, find_lr


def digits(batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    """80/20 train/validation loaders over the 1,797 digits as 1×8×8 images in [0, 1]."""
    data = load_digits()
    x, y = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0, torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val = order[: int(0.8 * len(x))], order[int(0.8 * len(x)) :]
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True),
        DataLoader(TensorDataset(x[val], y[val]), batch_size=512),
    )


class DigitsCNN(pl.LightningModule):
    """Two 3×3 convolutions and a linear head; SGD with momentum at ``self.lr`` (which ``find_lr`` sets)."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1, stride=2),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(32 * 4 * 4, 10),
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val_acc", (self.net(batch[0]).argmax(-1) == batch[1]).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    methods = ("default", "steepest", "min_div_10", "valley")  # suggest_lr's rules
    parser.add_argument("--method", default="default", choices=methods, help="the rule that picks the LR")
    parser.add_argument("--num-steps", type=int, default=100, help="optimizer steps of the sweep")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of training at the LR found")
    parser.add_argument("--plot", default="find_lr.png", help="where to save the curve")
    args = parser.parse_args(argv)

    pl.seed_everything(0, verbose=False)
    train, val = digits()
    model = DigitsCNN()
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[LRSchedule("cosine")],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    result = find_lr(
        trainer, model, train_dataloaders=train, min_lr=1e-5, max_lr=10.0, num_steps=args.num_steps, method=args.method
    )
    print(result.summary())
    result.plot().savefig(args.plot)
    print(f"\nthe curve: {args.plot}")
    if result.chosen_lr is None:
        print(f"no clean suggestion ({', '.join(result.flags)}): keeping lr={model.lr}")
    else:
        model.lr = result.chosen_lr  # the answer: the suggestion as the stability probe left it (halved if unstable)
    trainer.fit(model, train, val)
    accuracy = float(trainer.callback_metrics["val_acc"])
    print(f"\ntrained from a peak lr={model.lr:.3g} for {args.epochs} epochs: validation accuracy {accuracy:.3f}")
    return {"result": result, "lr": model.lr, "accuracy": accuracy}


if __name__ == "__main__":
    main()
