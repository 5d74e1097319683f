"""Models with scripted faults for the DivergenceWatchdog tests, and tests that the faults do what they say.

``DigitsModel`` is a small MLP on scikit-learn's bundled 8×8 handwritten digits (real data, no download). A
:class:`Faults` value scripts what goes wrong at which optimizer step: a NaN or ×1000 loss, infinite
gradients, a burst of random labels, an LR pulse, a slowly growing LR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import make_trainer


@dataclass(frozen=True)
class Faults:
    """What goes wrong, by optimizer step (``trainer.global_step``)."""

    nan_loss: Sequence[int] = ()
    loss_times: dict[int, float] = field(default_factory=dict)
    reading_times: dict[int, float] = field(default_factory=dict)  # the loss reads ×k, its gradient does not move
    inf_grad: Sequence[int] = ()
    label_noise: Sequence[int] = ()
    lr_times: dict[int, float] = field(default_factory=dict)
    lr_growth_from: int | None = None
    lr_growth: float = 1.0
    lr_growth_max: float = math.inf
    nan_from: int | None = None
    rank: int | None = None  # inject on this global rank only (DDP)


def digits_data(seed: int = 0) -> TensorDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x[order], y[order])


def digits_loader(seed: int = 0, batch_size: int = 32) -> DataLoader:
    return DataLoader(
        digits_data(seed), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


class DigitsModel(pl.LightningModule):
    """A 64-64-10 MLP on the digits, with scripted faults; records the LR each update used."""

    def __init__(
        self,
        optimizer: str = "sgd",
        lr: float | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        batch_by_step: bool = False,
    ) -> None:
        super().__init__()
        # batch_by_step: step k trains on batch k mod 57 of the digits whatever the loader yields, so that a run
        # resumed from a checkpoint sees exactly the batches the uninterrupted run saw
        self.by_step = digits_data(seed).tensors if batch_by_step else None
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        self.optimizer_name = optimizer
        self.lr = lr
        self.faults = faults or Faults()
        self.seen_lrs: list[float] = []
        self.losses: list[float] = []
        self._pulse: tuple[list[float], list[float]] | None = None

    def _mine(self) -> bool:
        return self.faults.rank is None or self.faults.rank == self.global_rank

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        step, f = self.global_step, self.faults
        if not torch.is_grad_enabled():
            # the watchdog evaluating its clean reference batch (without gradients): the scripted faults belong
            # to the step's own batch, as a bad batch's would, so they do not apply here
            return torch.nn.functional.cross_entropy(self.net(x), y)
        if self.by_step is not None:
            start = (step * 32) % (len(self.by_step[1]) - 31)
            x, y = self.by_step[0][start : start + 32], self.by_step[1][start : start + 32]
        if step in f.label_noise and self._mine():
            y = torch.randint(0, 10, y.shape, generator=torch.Generator().manual_seed(step))
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        if self._mine():
            if step in f.nan_loss or (f.nan_from is not None and step >= f.nan_from):
                loss = loss * math.nan
            loss = loss * f.loss_times.get(step, 1.0)
            loss = loss + (f.reading_times.get(step, 1.0) - 1.0) * loss.detach()
            if step in f.inf_grad:
                loss = _InfGradient.apply(loss)
        self.losses.append(float(loss.detach()))
        self.log("train_loss", loss)  # for EarlyStopping
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this after the callbacks' hook (after the watchdog judged the step), just before the
        # update: a faulty LR set here reaches the update the way a misconfigured schedule's would.
        step, f = self.global_step, self.faults
        factor = f.lr_times.get(step, 1.0)
        if f.lr_growth_from is not None and step >= f.lr_growth_from:
            factor *= min(f.lr_growth ** (step - f.lr_growth_from + 1), f.lr_growth_max)
        before = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor
        self._pulse = (before, [group["lr"] for group in optimizer.param_groups])
        self.seen_lrs.append(float(optimizer.param_groups[0]["lr"]))

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        self._pulse = None
        optimizer.step(closure=optimizer_closure)
        if self._pulse is not None:
            before, scaled = self._pulse
            for group, old, new in zip(optimizer.param_groups, before, scaled):
                if group["lr"] == new:  # nobody (LRSchedule's post-hook) wrote the next LR: undo the pulse
                    group["lr"] = old

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.lr or 0.1, momentum=0.9)
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=self.lr or 3e-3, weight_decay=0.01)
        if self.optimizer_name == "adamw_fused":
            return torch.optim.AdamW(self.parameters(), lr=self.lr or 3e-3, weight_decay=0.01, fused=True)
        raise ValueError(self.optimizer_name)


class StepDigitsModel(DigitsModel):
    """``DigitsModel(batch_by_step=True)`` fed by :func:`index_loader`: step ``k`` trains on batch ``k`` whatever the
    loader yields, and the batch the watchdog keeps as its reference is that one too (the loader's index tensor is
    overwritten in place with the step's indices). With ``DigitsModel`` alone the reference batch is the loader's,
    which a mid-epoch resume restarts from the epoch's first batch: a resumed run's reference batch differed from the
    uninterrupted run's though the weights were the same."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, batch_by_step=True, **kwargs)

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        assert self.by_step is not None
        (indices,) = batch
        if torch.is_grad_enabled():
            start = (self.global_step * 32) % (len(self.by_step[1]) - 31)
            indices.copy_(torch.arange(start, start + 32))
        return super().training_step((self.by_step[0][indices], self.by_step[1][indices]), batch_idx)


def index_loader() -> DataLoader:
    """Batches of 32 indices into the digits, for :class:`StepDigitsModel`."""
    return DataLoader(TensorDataset(torch.arange(len(digits_data().tensors[1]))), batch_size=32, drop_last=True)


class _InfGradient(torch.autograd.Function):
    """Identity forward; infinite gradient backward (a finite loss with an overflowing backward pass)."""

    @staticmethod
    def forward(ctx: Any, loss: torch.Tensor) -> torch.Tensor:
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * math.inf


def fit(tmp_path: Any, model: pl.LightningModule, callbacks: list[Any], steps: int, seed: int = 0, **kw: Any) -> Any:
    """Fit ``model`` on the digits for ``steps`` optimizer steps; return the trainer."""
    pl.seed_everything(seed, verbose=False)
    trainer = make_trainer(tmp_path, max_steps=steps, callbacks=callbacks, **kw)
    trainer.fit(model, digits_loader(seed))
    return trainer


def mean_loss(model: DigitsModel) -> float:
    """The model's cross-entropy over the whole digits set."""
    data = digits_data()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model.net(data.tensors[0]), data.tensors[1]))


# --- the faults do what they say --------------------------------------------------------------------------


def test_clean_digits_model_learns(tmp_path):
    model = DigitsModel()
    fit(tmp_path, model, [], 120)
    assert model.losses[0] > 2.0 and mean_loss(model) < 0.4


def test_lr_faults_reach_the_update_and_are_undone(tmp_path):
    model = DigitsModel(faults=Faults(lr_times={5: 30.0}, lr_growth_from=8, lr_growth=2.0))
    fit(tmp_path, model, [], 10, logger=False)
    assert model.seen_lrs == pytest.approx([0.1] * 5 + [3.0, 0.1, 0.1, 0.2, 0.4])
    assert [g["lr"] for g in model.trainer.optimizers[0].param_groups] == [0.1]


def test_inf_gradient_keeps_the_loss_finite(tmp_path):
    model = DigitsModel(faults=Faults(inf_grad=[3]))
    fit(tmp_path, model, [], 4, logger=False)
    assert all(math.isfinite(v) for v in model.losses)
    assert not all(torch.isfinite(p).all() for p in model.parameters())


def test_label_noise_raises_the_loss(tmp_path):
    clean, noisy = DigitsModel(), DigitsModel(faults=Faults(label_noise=[60]))
    fit(tmp_path, clean, [], 61, logger=False)
    fit(tmp_path, noisy, [], 61, logger=False)
    assert noisy.losses[:60] == clean.losses[:60]
    assert noisy.losses[60] > 3 * clean.losses[60]


def test_step_digits_model_trains_on_the_steps_batch_and_keeps_it_as_the_reference(tmp_path):
    """Past the loader's epoch (56 batches) step k still trains on batch k, and the loader's batch (what the watchdog
    keeps as its reference batch) holds that batch's indices after the step."""

    class Seen(pl.Callback):
        def __init__(self) -> None:
            self.indices: list[torch.Tensor] = []

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.indices.append(batch[0].clone())

    seen, model = Seen(), StepDigitsModel()
    pl.seed_everything(0, verbose=False)
    make_trainer(tmp_path, max_steps=60, callbacks=[seen], logger=False).fit(model, index_loader())
    assert [int(i[0]) for i in seen.indices] == [(k * 32) % 1766 for k in range(60)]
    assert all(torch.equal(i, torch.arange(int(i[0]), int(i[0]) + 32)) for i in seen.indices)
