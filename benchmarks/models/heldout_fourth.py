"""The fourth set of held-out pairs: fixed at stop 31 once the third set's first run had been read, before any rule of
the finder changed in response, and never used to set a constant or a rule.

The third set (:mod:`benchmarks.models.heldout_third`) showed a failure no earlier pair had (an autoencoder's noisy
sweep read as a descent at LRs 10⁴ below the best); a rule written after reading it is tuned on it, so these three
pairs measure such a rule. They differ from every earlier pair in model, optimizer or schedule:

- ``cancer-logreg`` with **plain SGD** (no momentum): logistic regression on scikit-learn's breast-cancer data
  (standardised on the training split), a convex problem, under a **quadratic decay** to 0 (polynomial, power 2),
  no warmup;
- ``docstrings-cnn`` with **Adamax**: the third set's docstring task (which of six stdlib packages, the name
  masked) read character by character by a 1-d CNN (embedding 16, 64 filters of width 5, max over time), under a
  **triangular cyclic** schedule (four cycles, each 12.5% up and 12.5% down, from a tenth of the peak);
- ``charlm-gru`` with **RAdam**: a character-level GRU language model (embedding 32, 128 hidden) over 32-character
  windows of the charlm task's stdlib text, under a **linear decay** to 0 without warmup.

Nothing is downloaded: the data ship inside scikit-learn and the Python standard library.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch.utils.data import TensorDataset

from benchmarks.models._task import Task
from lr_callbacks import preset

__all__ = ["HELD_OUT_FOURTH_TASKS", "CharCNN", "CharGRU", "docstring_chars", "fourth_task"]

HELD_OUT_FOURTH_TASKS = ("cancer-logreg", "docstrings-cnn", "charlm-gru")

DOC_CHARS = 128
"""How many characters of a docstring the CNN reads."""


class CharGRU(torch.nn.Module):
    """Characters → embedding (32) → GRU (128) → next-character logits at every position."""

    def __init__(self, vocab: int, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.gru = torch.nn.GRU(width, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(ids))
        return self.head(out)


class CharCNN(torch.nn.Module):
    """Characters → embedding (16) → 64 filters of width 5, ReLU → max over time → 6 classes."""

    def __init__(self, vocab: int, width: int = 16, filters: int = 64, classes: int = 6) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.conv = torch.nn.Conv1d(width, filters, 5, padding=2)
        self.head = torch.nn.Linear(filters, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.embed(ids).transpose(1, 2)))
        return self.head(h.amax(-1))


@lru_cache(maxsize=2)
def docstring_chars(chars: int = DOC_CHARS) -> tuple[TensorDataset, TensorDataset]:
    """``(train, val)``: the docstring task's examples (:func:`benchmarks.models.minilm._examples`) as their first
    ``chars`` characters (charlm's encoding, padded with newlines), labelled by package."""
    from benchmarks.models.charlm import encode
    from benchmarks.models.minilm import _examples

    train, val, _, _ = _examples()

    def dataset(examples: list[tuple[str, int]]) -> TensorDataset:
        ids = torch.stack([encode(text[:chars].ljust(chars, "\n")) for text, _ in examples])
        return TensorDataset(ids, torch.tensor([label for _, label in examples]))

    return dataset(train), dataset(val)


def _logreg() -> torch.nn.Module:
    return torch.nn.Linear(30, 2)


def fourth_task(name: str, steps: int = 300, batch_size: int = 32) -> Task:
    """One pair of the fourth held-out set by name (see :data:`HELD_OUT_FOURTH_TASKS`), trained ``steps`` steps."""
    held = {"held_out": True, "held_out_set": 4}
    if name == "cancer-logreg":
        from benchmarks.models.heldout_second import cancer_data

        train, val = cancer_data()
        return Task(
            name=name,
            build=_logreg,
            train_set=train,
            val_set=val,
            loss=torch.nn.functional.cross_entropy,
            batch_size=batch_size,
            steps=steps,
            schedule=preset("polynomial", power=2.0),
            default_lr={"plain_sgd": 1e-3},  # the benchmark's reference for SGD (torch has no default)
            grid={"plain_sgd": (1e-4, 30.0)},
            optimizers=("plain_sgd",),
            chance_loss=math.log(2),
            describe=f"sklearn breast cancer (455 / 114), logistic regression, batch {batch_size}, {steps} steps, "
            "quadratic decay",
            extra={**held, "classes": 2},
        )
    if name == "docstrings-cnn":
        from benchmarks.models.charlm import VOCAB

        train, val = docstring_chars()
        return Task(
            name=name,
            build=lambda: CharCNN(len(VOCAB) + 1),
            train_set=train,
            val_set=val,
            loss=torch.nn.functional.cross_entropy,
            batch_size=batch_size,
            steps=steps,
            schedule=preset("cyclic", up="12.5%"),
            default_lr={"adamax": 2e-3},  # torch's default
            grid={"adamax": (1e-5, 1.0)},
            optimizers=("adamax",),
            chance_loss=math.log(6),
            describe=f"stdlib docstrings of 6 packages ({len(train)} / {len(val)}), character CNN (16, 64×5), batch "
            f"{batch_size}, {steps} steps, cyclic",
            extra={**held, "classes": 6},
        )
    if name == "charlm-gru":
        from benchmarks.models.charlm import VOCAB, _windows, sequence_cross_entropy

        train, val = _windows(32, 40, 8, 2_000_000)
        vocab = len(VOCAB) + 1
        return Task(
            name=name,
            build=lambda: CharGRU(vocab),
            train_set=train,
            val_set=val,
            loss=sequence_cross_entropy,
            batch_size=16,
            steps=steps,
            schedule=preset("linear"),
            default_lr={"radam": 1e-3},  # torch's default
            grid={"radam": (1e-5, 1.0)},
            optimizers=("radam",),
            chance_loss=math.log(vocab),
            describe=f"GRU 128 character LM (context 32) on 40 stdlib files ({len(train) * 32:,} characters; "
            f"validation 8 other files), batch 16, {steps} steps, linear decay",
            extra={**held, "classes": vocab},
        )
    raise ValueError(f"fourth held-out task must be one of {', '.join(HELD_OUT_FOURTH_TASKS)}; got {name!r}")
