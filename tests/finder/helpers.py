"""Shared parts of the LRFinder tests: a model with every kind of state, and a bitwise state comparison.

No tests here; the ``test_finder_*`` modules import from it.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from lr_callbacks.core.compat import Callback
from tests.helpers import TinyModel, loader, regression_data


class FinderModel(TinyModel):
    """TinyModel plus BatchNorm (buffers), Dropout (RNG), ``self.log`` with ``on_step=True``, and a record
    of every ``training_step`` call: ``(lr of group 0, loss)``."""

    def __init__(self, *args: Any, raise_at_call: int | None = None, dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.norm = torch.nn.BatchNorm1d(8)
        self.drop = torch.nn.Dropout(dropout)
        self.calls: list[tuple[float, float]] = []
        self.raise_at_call = raise_at_call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.tanh(self.norm(self.body(x)))))

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.raise_at_call is not None and len(self.calls) == self.raise_at_call:
            raise RuntimeError("scripted failure in training_step")
        loss = super().training_step(batch, batch_idx)
        self.calls.append((float(self.trainer.optimizers[0].param_groups[0]["lr"]), float(loss)))
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss


def shuffled(n: int = 64, batch_size: int = 8, seed: int = 0, **kwargs: Any) -> torch.utils.data.DataLoader:
    """A shuffling loader (its order depends on torch's global RNG)."""
    return loader(regression_data(n, seed=seed), batch_size=batch_size, shuffle=True, **kwargs)


def state_of(trainer: pl.Trainer, module: torch.nn.Module) -> dict[str, Any]:
    """Everything the finder promises to restore, copied."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return {
        "params": {n: p.detach().clone() for n, p in module.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()},
        "buffers": {n: b.clone() for n, b in module.named_buffers()},
        "training": [m.training for m in module.modules()],
        "optimizers": [copy.deepcopy(o.state_dict()) for o in trainer.optimizers],
        "groups": [[{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] for o in trainer.optimizers],
        "schedulers": [copy.deepcopy(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs],
        "scaler": None if scaler is None else scaler.state_dict(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "torch_rng": torch.get_rng_state(),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "loop": copy.deepcopy(trainer.fit_loop.state_dict()),
        "callback_metrics": dict(trainer.callback_metrics),
    }


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Bitwise equality of nested tensors, arrays, dicts, lists and scalars."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"differs at {path}"
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), f"differs at {path}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"keys differ at {path}: {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"lengths differ at {path}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"differs at {path}"
    else:
        assert a == b, f"differs at {path}: {a!r} vs {b!r}"


class Capture(Callback):
    """Records ``state_of`` at a hook (``on_train_start`` or ``on_train_epoch_start`` of given epochs)."""

    def __init__(self, hook: str = "on_train_start", epoch: int | None = None) -> None:
        self.hook, self.epoch = hook, epoch
        self.states: list[dict[str, Any]] = []

    def _capture(self, trainer: pl.Trainer, module: torch.nn.Module) -> None:
        self.states.append(state_of(trainer, module))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.hook == "on_train_start":
            self._capture(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.hook == "on_train_epoch_start" and trainer.current_epoch == self.epoch:
            self._capture(trainer, pl_module)


class BatchRecorder(Callback):
    """The first feature of every batch training sees, in order (to compare data order)."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.seen.append(float(batch[0][0, 0]))


def tree(root: os.PathLike[str] | str) -> list[str]:
    """Every path under ``root``."""
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in [*fs, ""])


def sgd(lr: float = 0.1, head: float = 0.01) -> Callable[[TinyModel], torch.optim.Optimizer]:
    """SGD with momentum, groups "body" (and the norm) at ``lr`` and "head" at ``head``."""

    def make(module: TinyModel) -> torch.optim.Optimizer:
        body = [p for n, p in module.named_parameters() if not n.startswith("head")]
        return torch.optim.SGD(
            [{"params": body, "name": "body"}, {"params": module.head.parameters(), "lr": head, "name": "head"}],
            lr=lr,
            momentum=0.9,
        )

    return make
