"""digits: scikit-learn's bundled 8×8 handwritten digits (1,797 real images), an MLP and a small CNN.

Pixels are scaled to [0, 1]; a fixed, seeded 80/20 split gives 1,437 training and 360 validation images.
Nothing is downloaded: the images ship inside scikit-learn.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial

import torch
from torch.utils.data import TensorDataset

from benchmarks.models._task import Task
from lr_callbacks import preset

__all__ = ["CNN", "MLP", "digits_data", "digits_task"]


@lru_cache(maxsize=1)
def digits_data() -> tuple[TensorDataset, TensorDataset]:
    """``(train, val)``: images as ``N×64`` floats in [0, 1], labels 0–9; the split is fixed (seed 0)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(x))
    train, val = order[:cut], order[cut:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


class MLP(torch.nn.Sequential):
    """64 → 128 → 128 → 10, ReLU."""

    def __init__(self) -> None:
        super().__init__(
            torch.nn.Linear(64, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 10),
        )


class CNN(torch.nn.Module):
    """Two 3×3 convolutions (16 and 32 channels), a 2×2 max-pool, then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, 8, 8)).flatten(1))


def digits_task(model: str = "mlp", steps: int = 300, batch_size: int = 32) -> Task:
    """The digits task with an ``"mlp"`` or a ``"cnn"``, trained ``steps`` steps under warmup + cosine."""
    builders = {"mlp": MLP, "cnn": CNN}
    if model not in builders:
        raise ValueError(f"model must be one of {', '.join(builders)}; got {model!r}")
    train, val = digits_data()
    return Task(
        name=f"digits-{model}",
        build=builders[model],
        train_set=train,
        val_set=val,
        loss=torch.nn.functional.cross_entropy,
        batch_size=batch_size,
        steps=steps,
        schedule=preset("cosine", warmup="5%"),
        default_lr={"sgd": 1e-3, "adamw": 1e-3},  # torch's own defaults
        grid={"sgd": (3e-4, 3.0), "adamw": (1e-5, 0.1)},
        chance_loss=math.log(10),
        describe=f"sklearn digits 8×8 (1,437 train / 360 val), {model.upper()}, batch {batch_size}, {steps} steps",
        extra={"classes": 10},
        sample_loss=partial(torch.nn.functional.cross_entropy, reduction="none"),
    )
