"""Both Lightning namespaces: ``pytorch_lightning`` and ``lightning.pytorch`` (the unified ``lightning`` package).

The two ship distinct ``Callback``, ``LightningModule`` and ``Trainer`` classes, and a Trainer of one refuses
the other's objects. Our callbacks derive from both ``Callback`` classes: these tests run each one under a
real Trainer of each namespace, through Lightning's own checks (``isinstance`` on callbacks, the
``state_dict`` override check that decides what a checkpoint saves), and resume from a real checkpoint.

The modules here are defined once per namespace, at module level, so LightningCLI and pickling can use them.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import lightning.pytorch
import pytest
import pytorch_lightning
import torch
from torch.utils.data import DataLoader

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule
from tests.helpers import read_events, read_scalars, regression_data, with_process_group_cleanup

NAMESPACES = ["pytorch_lightning", "lightning.pytorch"]


class _Tiny:
    """The body of the test module, shared by both namespaces: two named SGD groups, body 0.1, head 0.01.

    ``spike_at``: the optimizer step whose loss is multiplied by a million (on ``spike_rank`` only, if given).
    """

    def __init__(self, lr: float = 0.1, spike_at: int | None = None, spike_rank: int | None = None) -> None:
        super().__init__()
        self.lr = lr
        self.spike_at, self.spike_rank = spike_at, spike_rank
        self.body = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 1)
        self.seen_lrs: list[float] = []  # the first group's LR at each optimizer step
        self.seen_group_lrs: list[list[float]] = []  # every group's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        spiking = torch.is_grad_enabled()  # the step's own batch: not the watchdog's reference evaluation
        if spiking and self.trainer.global_step == self.spike_at and self.spike_rank in (None, self.global_rank):
            loss = loss * 1e6
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.seen_group_lrs.append([float(g["lr"]) for g in optimizer.param_groups])
        self.seen_lrs.append(self.seen_group_lrs[-1][0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [
                {"params": self.body.parameters(), "name": "body"},
                {"params": self.head.parameters(), "lr": self.lr / 10, "name": "head"},
            ],
            lr=self.lr,
            momentum=0.9,
        )


class _Data:
    """64 regression samples in batches of 8: 8 steps per epoch."""

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(regression_data(), batch_size=self.batch_size)


class PLTiny(_Tiny, pytorch_lightning.LightningModule):
    """The test module, as a ``pytorch_lightning.LightningModule``."""


class LTiny(_Tiny, lightning.pytorch.LightningModule):
    """The test module, as a ``lightning.pytorch.LightningModule``."""


class PLData(_Data, pytorch_lightning.LightningDataModule):
    """The test data, as a ``pytorch_lightning.LightningDataModule``."""


class LData(_Data, lightning.pytorch.LightningDataModule):
    """The test data, as a ``lightning.pytorch.LightningDataModule``."""


MODULES = {"pytorch_lightning": (PLTiny, PLData), "lightning.pytorch": (LTiny, LData)}


def trainer_in(namespace: str, root: Any, **kwargs: Any) -> Any:
    """A quiet CPU Trainer of ``namespace``, logging to TensorBoard under ``root``."""
    pl = importlib.import_module(namespace)
    loggers = importlib.import_module(f"{namespace}.loggers")
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=loggers.TensorBoardLogger(str(root), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        default_root_dir=str(root),
    )
    options.update(kwargs)
    return pl.Trainer(**with_process_group_cleanup(options))


CALLBACKS = [LRSchedule, LRFinder, DivergenceWatchdog]


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("callback", CALLBACKS, ids=lambda c: c.__name__)
def test_our_callbacks_are_callbacks_of_both_namespaces(namespace: str, callback: type) -> None:
    pl = importlib.import_module(namespace)
    assert isinstance(callback(), pl.Callback)
    assert issubclass(callback, pl.Callback)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_lr_schedule_drives_a_trainer_of_each_namespace(namespace: str, tmp_path) -> None:
    model_class, data_class = MODULES[namespace]
    schedule = LRSchedule("cosine", warmup="2 steps", end=0.1)
    trainer = trainer_in(namespace, tmp_path, max_steps=8, callbacks=[schedule])
    assert schedule in trainer.callbacks
    model = model_class()
    trainer.fit(model, datamodule=data_class())
    expected = [schedule.lr_at(k) for k in range(8)]
    assert model.seen_lrs == pytest.approx(expected, rel=1e-12)
    assert [v for _, v in read_scalars(tmp_path, "lr/body")] == pytest.approx(expected, rel=1e-6)
    tags = read_events(tmp_path).Tags()
    assert "lr_schedule/plan" in tags["images"]
    assert "lr_schedule/summary/text_summary" in tags["tensors"]


@pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.parametrize("namespace", NAMESPACES)
def test_checkpoint_saves_our_state_and_resume_is_exact_in_each_namespace(namespace: str, tmp_path) -> None:
    """Lightning decides what to checkpoint by ``is_overridden("state_dict", cb, parent=<its Callback>)``."""
    pl = importlib.import_module(namespace)
    model_class, data_class = MODULES[namespace]
    torch.manual_seed(0)
    whole = LRSchedule("wsd", warmup="3 steps", decay="50%")
    full_model = model_class()
    trainer_in(namespace, tmp_path / "whole", max_steps=16, callbacks=[whole]).fit(full_model, datamodule=data_class())

    torch.manual_seed(0)
    first = LRSchedule("wsd", warmup="3 steps", decay="50%")
    trainer = trainer_in(namespace, tmp_path / "first", max_steps=16, callbacks=[first])
    half = model_class()

    class StopAt(pl.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 5:  # mid-epoch (8 steps per epoch)
                trainer.save_checkpoint(tmp_path / "half.ckpt")
                trainer.should_stop = True

    trainer.callbacks.append(StopAt())
    trainer.fit(half, datamodule=data_class())
    checkpoint = torch.load(tmp_path / "half.ckpt", weights_only=False)
    assert checkpoint["callbacks"][first.state_key]["steps"] == [5]

    resumed = LRSchedule("wsd", warmup="3 steps", decay="50%")
    rest = model_class()
    trainer = trainer_in(namespace, tmp_path / "rest", max_steps=16, callbacks=[resumed])
    trainer.fit(rest, datamodule=data_class(), ckpt_path=tmp_path / "half.ckpt")
    assert resumed.steps == [16]
    assert half.seen_lrs + rest.seen_lrs == pytest.approx(full_model.seen_lrs, rel=1e-12)
    assert len(full_model.seen_lrs) == 16


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_finder_sets_the_schedule_peak_in_each_namespace_and_not_again_on_resume(namespace: str, tmp_path) -> None:
    pl = importlib.import_module(namespace)
    model_class, data_class = MODULES[namespace]
    finder, schedule = LRFinder(min_lr=1e-4, max_lr=1.0, num_steps=10), LRSchedule("cosine")
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = trainer_in(
        namespace, tmp_path, max_steps=8, callbacks=[finder, schedule, checkpoint], enable_checkpointing=True
    )
    model = model_class()
    trainer.fit(model, datamodule=data_class())
    assert finder.result is not None and finder.result.suggestion is not None
    assert schedule.peak_lrs[0] == pytest.approx([finder.result.chosen_lr, finder.result.chosen_lr / 10])
    probe = finder.result.probe.steps  # the stability probe's steps
    assert len(model.seen_lrs) == 10 + probe + 8  # the sweep's steps, the probe's, then training's
    assert model.seen_lrs[10 + probe] == pytest.approx(finder.result.chosen_lr)  # cosine at step 0: the peak
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert finder.state_key in state and schedule.state_key in state

    again = LRFinder(min_lr=1e-4, max_lr=1.0, num_steps=10)
    resumed = LRSchedule("cosine")
    trainer = trainer_in(namespace, tmp_path / "resumed", max_steps=12, callbacks=[again, resumed])
    rest = model_class()
    trainer.fit(rest, datamodule=data_class(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert len(rest.seen_lrs) == 4  # no sweep on resume: the four steps left
    assert again.result == finder.result
    assert resumed.peak_lrs == schedule.peak_lrs


class RecordPerRank(lightning.pytorch.Callback):
    """Writes, per rank, what the callbacks decided and the LR of every optimizer step of training."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: torch.optim.Optimizer) -> None:
        self.lrs.append(float(optimizer.param_groups[0]["lr"]))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        finder = next(c for c in trainer.callbacks if isinstance(c, LRFinder))
        schedule = next(c for c in trainer.callbacks if isinstance(c, LRSchedule))
        watchdog = next(c for c in trainer.callbacks if isinstance(c, DivergenceWatchdog))
        record = {
            "events": [[i.step, i.action] for i in watchdog.events],
            "weights": [p.detach().flatten().tolist() for p in pl_module.parameters()],
            "world_size": trainer.world_size,
            "suggestion": finder.result.suggestion,
            "sweep_lrs": list(finder.result.lrs),
            "peaks": schedule.peak_lrs,
            "lrs": self.lrs,
        }
        (Path(self.directory) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def test_the_three_callbacks_under_ddp_in_the_lightning_namespace(tmp_path) -> None:
    """Two CPU processes (gloo) of a ``lightning.pytorch`` Trainer take the same decisions and LRs.

    The loss spikes on rank 1 only, at step 12: both ranks must skip that step together, or DDP's weights
    would part.
    """
    callbacks = [
        LRFinder(min_lr=1e-4, max_lr=1.0, num_steps=10),
        LRSchedule("cosine"),
        DivergenceWatchdog(warmup_steps=3, window=8),
        RecordPerRank(str(tmp_path)),
    ]
    trainer = trainer_in(
        "lightning.pytorch", tmp_path, devices=2, strategy="ddp_spawn", max_steps=14, callbacks=callbacks
    )
    trainer.fit(LTiny(spike_at=12, spike_rank=1), datamodule=LData())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["suggestion"] is not None and ranks[0]["suggestion"] == ranks[1]["suggestion"]
    assert ranks[0]["sweep_lrs"] == ranks[1]["sweep_lrs"] and len(ranks[0]["sweep_lrs"]) == 10
    assert ranks[0]["peaks"] == ranks[1]["peaks"] and ranks[0]["peaks"][0][0] == ranks[0]["suggestion"]
    assert ranks[0]["lrs"][-14:] == ranks[1]["lrs"][-14:]
    assert ranks[0]["lrs"][-14] == pytest.approx(ranks[0]["suggestion"])  # cosine at step 0: the peak
    assert ranks[0]["events"] == ranks[1]["events"] and {tuple(e) for e in ranks[0]["events"]} == {(12, "skip")}
    assert ranks[0]["weights"] == ranks[1]["weights"]


@pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.parametrize("namespace", NAMESPACES)
def test_watchdog_skips_a_spike_and_resumes_with_its_state_in_each_namespace(namespace: str, tmp_path) -> None:
    pl = importlib.import_module(namespace)
    model_class, data_class = MODULES[namespace]
    watchdog = DivergenceWatchdog(warmup_steps=4, window=8)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = trainer_in(namespace, tmp_path, max_steps=14, callbacks=[watchdog, checkpoint], enable_checkpointing=True)
    model = model_class(spike_at=10)
    trainer.fit(model, datamodule=data_class())
    assert {(i.step, i.action) for i in watchdog.events} == {(10, "skip")}
    assert "watchdog/events/text_summary" in read_events(tmp_path).Tags()["tensors"]

    resumed = DivergenceWatchdog(warmup_steps=4, window=8)
    trainer = trainer_in(namespace, tmp_path / "resumed", max_steps=16, callbacks=[resumed])
    trainer.fit(model_class(), datamodule=data_class(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.events == watchdog.events  # restored from the checkpoint, and nothing new
