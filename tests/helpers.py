"""Small real parts for the tests: a tiny LightningModule, a Trainer factory, TensorBoard read-back."""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BaseFinetuning
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lr_callbacks.core.compat import Callback


def regression_data(n: int = 64, features: int = 4, seed: int = 0) -> TensorDataset:
    """A fixed linear-regression data set with a little noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    w = torch.randn(features, 1, generator=generator)
    y = x @ w + 0.1 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


class TinyModel(pl.LightningModule):
    """A two-layer regression model.

    Args:
        optimizer: a function of the module returning the optimizer (default: SGD, lr 0.1, two named
            groups "body" at 0.1 and "head" at 0.01).
        scheduler: an optional function of the optimizer returning a torch scheduler (stepped per step).
        loss_hook: an optional function ``(step, loss) -> loss`` to script faults (a bad batch's: it does not
            apply when the watchdog evaluates its clean reference batch, without gradients).
    """

    def __init__(
        self,
        optimizer: Callable[[TinyModel], torch.optim.Optimizer] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        loss_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        features: int = 4,
    ) -> None:
        super().__init__()
        self.body = torch.nn.Linear(features, 8)
        self.head = torch.nn.Linear(8, 1)
        self._optimizer = optimizer
        self._scheduler = scheduler
        self._loss_hook = loss_hook
        self.seen_lrs: list[list[float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        if self._loss_hook is not None and torch.is_grad_enabled():
            loss = self._loss_hook(self.trainer.global_step, loss)
        return loss

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls the module's hook after the callbacks': this is the LR the update uses.
        self.seen_lrs.append([float(g["lr"]) for g in optimizer.param_groups])

    def configure_optimizers(self) -> Any:
        if self._optimizer is not None:
            optimizer = self._optimizer(self)
        else:
            optimizer = torch.optim.SGD(
                [
                    {"params": self.body.parameters(), "name": "body"},
                    {"params": self.head.parameters(), "lr": 0.01, "name": "head"},
                ],
                lr=0.1,
                momentum=0.9,
            )
        if self._scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self._scheduler(optimizer), "interval": "step"},
        }


class NamedFinetuning(BaseFinetuning):
    """Unfreezes the module's ``backbone`` at epoch 1 as a parameter group named ``backbone``, at 0.1 × the first
    group's LR then: Lightning's ``BaseFinetuning``, the documented way to add a group during the fit, with a name."""

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if epoch == 1:
            self.make_trainable(pl_module.backbone)
            lr = 0.1 * float(optimizer.param_groups[0]["lr"])
            optimizer.add_param_group({"params": list(pl_module.backbone.parameters()), "lr": lr, "name": "backbone"})


class HalveLRAt(pl.Callback):
    """Halves every LR through the watchdog's entry (``set_lr_scale``) at the start of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            from lr_callbacks.core.lr_model import set_lr_scale

            set_lr_scale(trainer, 0.5, 1.0)


class WarningsPerRank(pl.Callback):
    """Writes, per rank, the ``LRSchedule`` warnings the rank issued during the fit, as a JSON list in
    ``<directory>/<name><rank>.json``."""

    def __init__(self, directory: str, name: str = "rank") -> None:
        self.directory, self.name = directory, name

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.recording = warnings.catch_warnings(record=True)
        self.caught = self.recording.__enter__()
        warnings.simplefilter("always")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        said = [str(w.message) for w in self.caught if str(w.message).startswith("LRSchedule")]
        self.recording.__exit__(None, None, None)
        path = os.path.join(self.directory, f"{self.name}{trainer.global_rank}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(said, handle)


class DestroyProcessGroupAtExit(Callback):
    """Destroys the process group before the interpreter exits, in each process of a fit that ended normally.

    Lightning leaves a gloo process group (``ddp_spawn``) to interpreter finalization. A gloo worker thread may
    still hold the last reference to a finished collective (a rank exits a few ms after its last one); dropping
    it decrefs the tensor's Python object, and a finalizing interpreter ends a thread that asks for the GIL:
    ``terminate called without an active exception``, SIGABRT, after the fit passed. Destroying the group joins
    those threads while the interpreter is whole (Lightning does so at exit for NCCL only). Registered at
    ``teardown`` (not called when the fit raised), it runs after the worker's last use of the group.
    """

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            atexit.unregister(_destroy_process_group)  # once per process
            atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def with_process_group_cleanup(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of a Trainer, with :class:`DestroyProcessGroupAtExit` added when it runs several processes."""
    if options.get("devices", 1) != 1:
        callbacks = options.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        options["callbacks"] = [*callbacks, DestroyProcessGroupAtExit()]
    return options


FORKED_RANKS = "ddp_fork"
"""The strategy of the tests' 2-rank DDP fits: two real gloo ranks, forked from the test process rather than spawned
(``ddp_spawn`` starts fresh interpreters that import torch and Lightning again, about 5 s of CPU each per fit). The
callbacks' pickling into spawned workers is still run by the ``ddp_spawn`` fits that keep it: the three callbacks in
``test_namespaces.py``, LRSchedule's plan in ``test_schedule_ddp.py`` and ``find_lr``'s refusal in
``test_finder_ddp.py``. A forked rank leaves by ``os._exit``: no interpreter finalization for a gloo thread to abort."""


def make_trainer(root: os.PathLike[str] | str, **kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer logging to TensorBoard under ``root``."""
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(root), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
    )
    options.update(kwargs)
    return pl.Trainer(**with_process_group_cleanup(options))


def loader(dataset: TensorDataset | None = None, batch_size: int = 8, shuffle: bool = False) -> DataLoader:
    return DataLoader(dataset if dataset is not None else regression_data(), batch_size=batch_size, shuffle=shuffle)


class Stream(torch.utils.data.IterableDataset):
    """An iterable dataset of ``batches`` batches of 8 that does not say how many: Lightning cannot know the run's
    length from it."""

    def __init__(self, batches: int = 6) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(0)
        for _ in range(self.batches):
            x = torch.randn(8, 4, generator=generator)
            yield x, x.sum(1, keepdim=True)


def stream(batches: int = 6) -> DataLoader:
    """A loader of :class:`Stream` (its batches as they are)."""
    return DataLoader(Stream(batches), batch_size=None)


def event_dirs(root: os.PathLike[str] | str) -> list[str]:
    """Every directory under ``root`` holding TensorBoard event files."""
    files = glob.glob(os.path.join(str(root), "**", "events.out.tfevents.*"), recursive=True)
    return sorted({os.path.dirname(f) for f in files})


def read_events(root: os.PathLike[str] | str) -> Any:
    """An EventAccumulator over the single TensorBoard run under ``root`` (all data kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dirs = event_dirs(root)
    assert len(dirs) == 1, f"expected one TensorBoard run under {root}, found {dirs}"
    accumulator = EventAccumulator(dirs[0], size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def read_scalars(root: os.PathLike[str] | str, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every event of ``tag``, in step order."""
    return [(e.step, e.value) for e in read_events(root).Scalars(tag)]


def read_text(root: os.PathLike[str] | str, tag: str) -> list[str]:
    """The strings written with ``add_text(tag, ...)``."""
    events = read_events(root).Tensors(f"{tag}/text_summary")
    return [e.tensor_proto.string_val[0].decode() for e in events]


@contextlib.contextmanager
def one_rank_mesh() -> Iterator[Any]:
    """A one-rank gloo process group and its device mesh, destroyed on exit: real DTensors (and ``fully_shard``)
    in one process, without leaving the other tests distributed."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()
