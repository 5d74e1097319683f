"""What every sample model shares: a :class:`Task`, its optimizers, a plain training loop and a Lightning module.

A task is data (real, bundled with an installed package), a model factory, a loss, a training budget and the
schedule the run really uses. Both sides of every benchmark train a task through the code here:

- :func:`train` is a plain torch loop that follows ``lr × schedule(k)`` exactly; the finder benchmark trains
  its LR grid *and* every finder's suggestion with it, so both are trained the same way;
- :class:`TaskModule` is the same model, loss and optimizer as a ``LightningModule``, for the benchmarks that
  need a real ``Trainer`` (overhead, the finders themselves, the watchdog).
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lr_callbacks import Schedule, report_sample_losses

__all__ = [
    "OPTIMIZERS",
    "Start",
    "Task",
    "TaskModule",
    "TrainResult",
    "evaluate",
    "make_optimizer",
    "train",
    "train_loader",
]

OPTIMIZERS = ("sgd", "adamw")
"""The optimizers of the tuning tasks; the held-out tasks add ``"nesterov"``, ``"rmsprop"``, ``"adam"``,
``"adagrad"``, ``"nadam"``, ``"plain_sgd"``, ``"adamax"``, ``"radam"``, ``"asgd"`` and ``"amsgrad"``."""

_ALL_OPTIMIZERS = (
    *OPTIMIZERS,
    "nesterov",
    "rmsprop",
    "adam",
    "adagrad",
    "nadam",
    "plain_sgd",
    "adamax",
    "radam",
    "asgd",
    "amsgrad",
)


def make_optimizer(name: str, params: Iterable[Any], lr: float) -> torch.optim.Optimizer:
    """The optimizers of the benchmarks: ``"sgd"`` (momentum 0.9) and ``"adamw"`` (weight decay 0.01); for the
    held-out tasks ``"nesterov"`` (SGD, Nesterov momentum 0.9), ``"plain_sgd"`` (SGD without momentum),
    ``"rmsprop"``, ``"adam"``, ``"adagrad"``, ``"nadam"``, ``"adamax"``, ``"radam"`` and ``"asgd"`` (torch's
    defaults), and ``"amsgrad"`` (Adam with ``amsgrad=True``, torch's defaults otherwise).

    ``params`` may be parameters or parameter groups (``{"params": ..., "name": ..., "lr": ...}``).
    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr)
    if name == "plain_sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adamax":
        return torch.optim.Adamax(params, lr=lr)
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr)
    if name == "asgd":
        return torch.optim.ASGD(params, lr=lr)
    if name == "amsgrad":
        return torch.optim.Adam(params, lr=lr, amsgrad=True)
    raise ValueError(f"optimizer must be one of {', '.join(_ALL_OPTIMIZERS)}; got {name!r}")


@dataclass(frozen=True)
class Start:
    """A trained state a task starts from instead of a fresh model: a run resumed mid-way.

    Attributes:
        optimizer: the optimizer the state belongs to; the task then trains with it only.
        model: the model's ``state_dict``.
        optimizer_state: the optimizer's ``state_dict`` (SGD's momentum buffers, Adam's moments and step count).
        describe: how the state was made (it enters the task's fingerprint, so name everything that decides it).
    """

    optimizer: str
    model: Mapping[str, torch.Tensor] = field(repr=False)
    optimizer_state: Mapping[str, Any] = field(repr=False)
    describe: str

    def load_model(self, model: torch.nn.Module) -> None:
        """Copy the model's state into ``model``."""
        model.load_state_dict(self.model)

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Copy the optimizer's state into ``optimizer`` (a deep copy: the saved buffers are never trained in
        place); the groups' LRs come back as saved, so set them afterwards."""
        optimizer.load_state_dict(copy.deepcopy(dict(self.optimizer_state)))

    def check(self, optimizer: str) -> None:
        """Refuse an optimizer the state does not belong to."""
        if optimizer != self.optimizer:
            raise ValueError(
                f"optimizer: this task starts from a {self.optimizer} state ({self.describe}); got {optimizer!r}, "
                f"train it with {self.optimizer!r}"
            )


@dataclass(frozen=True)
class Task:
    """A sample model with its data, budget and schedule.

    Attributes:
        name: e.g. ``"digits-mlp"``.
        build: makes a fresh model (call it under a seeded RNG).
        train_set, val_set: ``(input, target)`` datasets.
        loss: ``loss(output, target) -> scalar``.
        batch_size: training batch size.
        steps: the training budget, in optimizer steps.
        schedule: the LR multiplier the run follows (the "real schedule").
        default_lr: the fixed reference LR of each optimizer (the regret's denominator).
        grid: the ground-truth LR grid's ``(lowest, highest)`` for each optimizer.
        optimizers: the optimizers benchmarked on this task.
        param_groups: optional ``model -> groups`` (e.g. to freeze parts or name groups); default: all
            parameters in one group.
        chance_loss: the loss of a model that knows nothing (used for runs that diverge).
        describe: one line of what the task is, for the reports.
        metrics: optional extra metrics of a trained model (e.g. minilm's test accuracy and forgetting).
        extra: anything else (``classes``: the number of classes).
        gradient_clip_val: clip the gradients' global L2 norm to this before every step, as Lightning's
            ``Trainer(gradient_clip_val=...)`` does (``None``: no clipping).
        start: the trained state every run starts from (``None``: a fresh model and optimizer).
        sample_loss: optional ``sample_loss(output, target) -> one loss per sample``, whose mean is ``loss``
            (for :class:`TaskModule`'s ``per_sample``).
    """

    name: str
    build: Callable[[], torch.nn.Module]
    train_set: Dataset[Any]
    val_set: Dataset[Any]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch_size: int
    steps: int
    schedule: Schedule
    default_lr: Mapping[str, float]
    grid: Mapping[str, tuple[float, float]]
    optimizers: tuple[str, ...] = OPTIMIZERS
    param_groups: Callable[[torch.nn.Module], list[dict[str, Any]]] | None = None
    chance_loss: float = math.nan
    describe: str = ""
    metrics: Callable[[torch.nn.Module], dict[str, float]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    gradient_clip_val: float | None = None
    start: Start | None = None
    sample_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def fingerprint(self) -> str:
        """A short hash of everything that decides a training run's outcome (for caching results)."""
        text = f"{self.describe}|{self.schedule.describe()}|{self.steps}|{self.batch_size}|{torch.__version__}"
        if self.gradient_clip_val is not None:
            text += f"|clip {self.gradient_clip_val!r}"
        if self.start is not None:
            text += f"|start {self.start.optimizer} {self.start.describe}"
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """The parameter groups the optimizer gets."""
        if self.param_groups is not None:
            return self.param_groups(model)
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def steps_per_epoch(self) -> int:
        return max(len(self.train_set) // self.batch_size, 1)  # type: ignore[arg-type]


def train_loader(task: Task, seed: int, batch_size: int | None = None) -> DataLoader[Any]:
    """The training loader: shuffled with a generator seeded by ``seed``, last partial batch dropped."""
    return DataLoader(
        task.train_set,
        batch_size=batch_size or task.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )


def _val_loader(task: Task) -> DataLoader[Any]:
    return DataLoader(task.val_set, batch_size=256)


@torch.no_grad()
def evaluate(task: Task, model: torch.nn.Module) -> dict[str, float]:
    """Validation loss and accuracy (the arg-max of the last dimension against the target)."""
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0.0, 0
    for x, y in _val_loader(task):
        out = model(x)
        n = int(y.numel())
        total += float(task.loss(out, y)) * n
        classified = out.dim() == y.dim() + 1  # a class score per target; else a regression: no accuracy
        correct += float((out.argmax(-1) == y).sum()) if classified else math.nan
        count += n
    model.train(was_training)
    return {"loss": total / count, "accuracy": correct / count}


@dataclass(frozen=True)
class TrainResult:
    """The outcome of one training run: final validation loss and accuracy, and whether it diverged."""

    loss: float
    accuracy: float
    diverged: bool
    steps: int
    train_losses: tuple[float, ...] = ()
    extra: Mapping[str, float] = field(default_factory=dict)
    optimizer_state: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


def train(
    task: Task,
    optimizer: str,
    lr: float,
    seed: int,
    *,
    schedule: Schedule | None = None,
    steps: int | None = None,
    model: torch.nn.Module | None = None,
    stop: int | None = None,
) -> tuple[TrainResult, torch.nn.Module]:
    """Train ``task`` from a fresh model (seed ``seed``), or from its :class:`Start`, at peak LR ``lr`` under its
    schedule.

    Step ``k`` uses ``lr × schedule(k)`` for every group, times the group's own ratio to the first group
    (groups that set their own ``lr`` keep their ratio). With ``task.gradient_clip_val`` the gradients' global
    L2 norm is clipped to it before each step (as Lightning does). With ``task.start`` the model and the
    optimizer start from its state (the data order is still seed ``seed``'s, from the first batch).

    A run **diverged** when its loss turns non-finite (it stops there and is scored at the task's
    ``chance_loss``: the model learned nothing usable), or when it ends no better than chance after its
    training loss rose above twice its first value, and above twice what its starting weights score on that
    same batch (it blew up, then stalled). A batch that is merely harder than the first, such as one holding the
    autoencoder's rare pixels, scores as high before training, so a run that never learned is not a divergence.

    Args:
        task: the sample model.
        optimizer: ``"sgd"`` or ``"adamw"``.
        lr: the peak LR of the first parameter group.
        seed: the model's initialisation and the data order.
        schedule: overrides the task's schedule.
        steps: overrides the task's budget.
        model: train this model instead of a fresh one (or the task's start model; the optimizer still
            starts from the task's start, if any).
        stop: end after this many steps while the schedule still spans ``steps`` (a run cut short, to resume
            from; the result's ``optimizer_state`` is where it stopped).

    Returns:
        The result and the trained model.
    """
    schedule = schedule if schedule is not None else task.schedule
    steps = steps if steps is not None else task.steps
    end = steps if stop is None else stop
    if not 0 < end <= steps:
        raise ValueError(f"stop must lie in 1..{steps} (the run's steps); got {stop}")
    if task.start is not None:
        task.start.check(optimizer)
    torch.manual_seed(seed)
    if model is None:
        model = task.build()
        if task.start is not None:
            task.start.load_model(model)
    model.train()
    initial = copy.deepcopy(model)  # the starting weights, to tell a blow-up from a hard batch
    groups = task.groups(model)
    reference = groups[0].get("lr", lr)
    ratios = [g.get("lr", reference) / reference for g in groups]
    opt = make_optimizer(optimizer, [{k: v for k, v in g.items() if k != "lr"} for g in groups], lr)
    if task.start is not None:
        task.start.load_optimizer(opt)
    params = [p for g in opt.param_groups for p in g["params"]]
    loader = train_loader(task, seed)
    per_epoch = len(loader)
    losses: list[float] = []
    rises: list[tuple[Any, Any, float]] = []  # the batches whose loss rose above twice the first
    diverged = False
    k = 0
    while k < end and not diverged:
        for x, y in loader:
            if k >= end:
                break
            multiplier = schedule(k, steps, per_epoch)
            for group, ratio in zip(opt.param_groups, ratios):
                group["lr"] = lr * ratio * multiplier
            loss = task.loss(model(x), y)
            value = float(loss.detach())
            losses.append(value)
            if not math.isfinite(value):
                diverged = True
                break
            if value > 2 * losses[0]:
                rises.append((x, y, value))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if task.gradient_clip_val is not None:
                torch.nn.utils.clip_grad_norm_(params, task.gradient_clip_val)
            opt.step()
            k += 1
    metrics = evaluate(task, model) if not diverged else {"loss": math.nan, "accuracy": math.nan}
    if not math.isfinite(metrics["loss"]):
        diverged = True
        classes = task.extra.get("classes", 1)
        metrics = {"loss": task.chance_loss, "accuracy": 1.0 / classes if classes else math.nan}
    elif metrics["loss"] >= task.chance_loss and _blew_up(task, initial, rises):
        diverged = True
    extra = task.metrics(model) if task.metrics is not None and not diverged else {}
    state = opt.state_dict()
    return TrainResult(metrics["loss"], metrics["accuracy"], diverged, k, tuple(losses), extra, state), model


def _blew_up(task: Task, initial: torch.nn.Module, rises: Sequence[tuple[Any, Any, float]]) -> bool:
    """Whether a training loss above twice the first was the weights' doing: above twice what the starting
    weights ``initial`` score on the same batch (scored without drawing from the run's random numbers)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        return any(value > 2 * float(task.loss(initial(x), y)) for x, y, value in rises)


class TaskModule(pl.LightningModule):
    """A task's model, loss and optimizer as a ``LightningModule``.

    A task with a :class:`Start` loads it as a user resuming from saved weights would: the model's state here,
    the optimizer's in ``configure_optimizers`` (its groups then get this module's LRs back).

    Args:
        task: the sample model.
        optimizer: ``"sgd"`` or ``"adamw"``.
        lr: the peak LR of the first group (``self.lr``, so Lightning's ``Tuner.lr_find`` can set it).
        seed: the model's initialisation.
        log_loss: log ``train_loss`` with ``self.log`` (Lightning's default cadence).
        per_sample: hand the batch's per-sample losses to a ``DivergenceWatchdog``
            (:func:`~lr_callbacks.report_sample_losses`, from the task's ``sample_loss`` of the detached output:
            the training itself is the same).
    """

    def __init__(
        self, task: Task, optimizer: str, lr: float, seed: int = 0, log_loss: bool = True, per_sample: bool = False
    ) -> None:
        super().__init__()
        if per_sample and task.sample_loss is None:
            raise ValueError(f"per_sample=True needs a task with a sample_loss; {task.name!r} has none")
        self.task = task
        self.optimizer_name = optimizer
        self.lr = lr
        self.log_loss = log_loss
        self.per_sample = per_sample
        torch.manual_seed(seed)
        self.model = task.build()
        if task.start is not None:
            task.start.check(optimizer)
            task.start.load_model(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self.model(x)
        loss = self.task.loss(out, y)
        if self.per_sample and self.task.sample_loss is not None:
            report_sample_losses(self, self.task.sample_loss(out.detach(), y))
        if self.log_loss:
            self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self.model(x)
        self.log("val_loss", self.task.loss(out, y), batch_size=int(y.shape[0]))
        if out.dim() == y.dim() + 1:  # a class score per target (a regression has no accuracy)
            self.log("val_acc", (out.argmax(-1) == y).float().mean(), batch_size=int(y.shape[0]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = self.task.groups(self.model)
        reference = groups[0].get("lr", self.lr)
        scaled = [{**g, "lr": self.lr * g.get("lr", reference) / reference} for g in groups]
        optimizer = make_optimizer(self.optimizer_name, scaled, self.lr)
        if self.task.start is not None:
            self.task.start.load_optimizer(optimizer)
            for group, wanted in zip(optimizer.param_groups, scaled):
                group["lr"] = wanted["lr"]
        return optimizer
