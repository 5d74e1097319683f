"""The held-out pairs: sample models and optimizers that no constant of the finder was tuned on.

Fixed here before the finder's second version changed any constant (issue 12), and never used to set one:
the finder benchmark reports them separately from the seven tuning pairs, and together with them.

- ``digits-vit`` with AdamW: a small patch transformer (ViT-style: 2×2 patches of the 8×8 digits, 16 tokens,
  width 32, 2 pre-norm encoder layers, mean pooling), 5% warmup + cosine;
- ``digits-lstm`` with SGD + Nesterov momentum: an LSTM reading the digit row by row (8 steps of 8 pixels,
  64 hidden units), under a **constant** LR;
- ``tabular`` with RMSprop: scikit-learn's bundled diabetes regression (442 patients, 10 features, both
  standardised on the training split), an MLP 10-64-64-1 on the mean squared error, under **one-cycle**
  (torch's ``OneCycleLR`` shape, no momentum cycling: RMSprop runs without momentum).

Nothing is downloaded: the data ship inside scikit-learn.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch.utils.data import TensorDataset

from benchmarks.models._task import Task
from lr_callbacks import preset

__all__ = [
    "HELD_OUT_TASKS",
    "LSTMReader",
    "PatchTransformer",
    "diabetes_data",
    "heldout_task",
    "patches",
    "standardised_split",
]

HELD_OUT_TASKS = ("digits-vit", "digits-lstm", "tabular")


def patches(x: torch.Tensor) -> torch.Tensor:
    """Flattened 8×8 digits → their 16 patches of 2×2 pixels, row by row (``N×16×4``)."""
    return x.view(-1, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(-1, 16, 4)


class PatchTransformer(torch.nn.Module):
    """8×8 image → 16 patches of 2×2 → linear embedding (32) + learned positions → 2 encoder layers → mean → 10."""

    def __init__(self, width: int = 32, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(4, width)
        self.position = torch.nn.Parameter(torch.zeros(16, width))
        torch.nn.init.normal_(self.position, std=0.02)
        layer = torch.nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(patches(x)) + self.position)
        return self.head(self.norm(h).mean(1))


class LSTMReader(torch.nn.Module):
    """The digit read row by row: an LSTM over 8 steps of 8 pixels (64 hidden), its last state → 10 classes."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(8, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.view(-1, 8, 8))
        return self.head(out[:, -1])


class TabularMLP(torch.nn.Sequential):
    """10 → 64 → 64 → 1, ReLU; the output squeezed to one number per row."""

    def __init__(self) -> None:
        super().__init__(
            torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(-1)


def standardised_split(
    x: torch.Tensor, y: torch.Tensor, *, target: bool = False
) -> tuple[TensorDataset, TensorDataset]:
    """``(train, val)``: a fixed 80/20 split (seed 0), the features (and with ``target`` the target too)
    standardised on the train part."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(x))
    train, val = order[:cut], order[cut:]
    x = (x - x[train].mean(0)) / x[train].std(0)
    if target:
        y = (y - y[train].mean()) / y[train].std()
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


@lru_cache(maxsize=1)
def diabetes_data() -> tuple[TensorDataset, TensorDataset]:
    """``(train, val)`` of sklearn's diabetes data: a fixed 80/20 split (seed 0), standardised on the train part."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    return standardised_split(x, torch.tensor(data.target, dtype=torch.float32), target=True)


def heldout_task(name: str, steps: int = 300, batch_size: int = 32) -> Task:
    """One held-out task by name (see :data:`HELD_OUT_TASKS`), trained ``steps`` steps."""
    from benchmarks.models.digits import digits_data

    if name == "digits-vit":
        train, val = digits_data()
        return Task(
            name=name,
            build=PatchTransformer,
            train_set=train,
            val_set=val,
            loss=torch.nn.functional.cross_entropy,
            batch_size=batch_size,
            steps=steps,
            schedule=preset("cosine", warmup="5%"),
            default_lr={"adamw": 1e-3},  # torch's default
            grid={"adamw": (1e-5, 0.1)},
            optimizers=("adamw",),
            chance_loss=2.302585092994046,
            describe=f"sklearn digits 8×8, patch transformer (2×2 patches, 2×32), batch {batch_size}, {steps} steps",
            extra={"classes": 10, "held_out": True},
        )
    if name == "digits-lstm":
        train, val = digits_data()
        return Task(
            name=name,
            build=LSTMReader,
            train_set=train,
            val_set=val,
            loss=torch.nn.functional.cross_entropy,
            batch_size=batch_size,
            steps=steps,
            schedule=preset("constant"),
            default_lr={"nesterov": 1e-3},  # the benchmark's reference for SGD (torch has no default)
            grid={"nesterov": (3e-4, 10.0)},
            optimizers=("nesterov",),
            chance_loss=2.302585092994046,
            describe=f"sklearn digits 8×8 read row by row, LSTM 64, batch {batch_size}, {steps} steps, constant LR",
            extra={"classes": 10, "held_out": True},
        )
    if name == "tabular":
        train, val = diabetes_data()
        return Task(
            name=name,
            build=TabularMLP,
            train_set=train,
            val_set=val,
            loss=torch.nn.functional.mse_loss,
            batch_size=batch_size,
            steps=steps,
            schedule=preset("one_cycle", momentum=None),
            default_lr={"rmsprop": 1e-2},  # torch's default
            grid={"rmsprop": (1e-5, 0.3)},
            optimizers=("rmsprop",),
            chance_loss=1.0,  # the standardised target's variance: predicting the mean
            describe=f"sklearn diabetes regression (353 / 89), MLP 10-64-64-1, MSE, batch {batch_size}, {steps} steps",
            extra={"classes": 0, "held_out": True},
        )
    raise ValueError(f"held-out task must be one of {', '.join(HELD_OUT_TASKS)}; got {name!r}")
