"""Driving training steps from inside a hook, through the trainer's own strategy and precision plugin.

Why not a nested ``fit`` (Lightning's ``Tuner.lr_find``)? A nested fit has to save a checkpoint file and
restore the loops from it, which loses a resumed run's optimizer state, and works only at fit start
(research ``lightning_builtins.md`` §3.3-3.4). Driving the steps directly, one optimizer step at a time,
through the public strategy API, keeps the user's whole training recipe and touches no loop state:

- ``strategy.training_step`` runs the user's ``training_step`` inside the precision plugin's autocast and
  through the DDP wrapper;
- ``strategy.backward`` scales the loss for the ``GradScaler`` and syncs gradients across ranks (blocked on
  the micro-batches that only accumulate, as Lightning does);
- ``LightningModule.optimizer_step`` with the ``LightningOptimizer`` goes through the precision plugin:
  unscaling, ``on_before_optimizer_step``, gradient clipping (``gradient_clip_val`` and
  ``configure_gradient_clipping``), the scaler's skip of non-finite steps;
- ``accumulate_grad_batches`` micro-batches make one optimizer step, their loss divided as Lightning does.

While steps are driven, the trainer's callbacks are set aside (the sweep's steps are not training: no
checkpoint, no early stop, no LR monitor, no gradient logger; the progress bar stays, idle) and
``self.log`` in the user's hooks is made a no-op (so the sweep's losses do not leak into epoch metrics).
With manual optimization each ``training_step`` call is one step; it must return the loss.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from typing_extensions import override

from lr_callbacks.core.compat import (
    Callback,
    accumulation,
    clear_stale_unscale,
    fresh_iterator,
    is_lightning,
    transfer_hook,
    unscale_fused,
)
from lr_callbacks.core.grads import global_norm
from lr_callbacks.core.lr_model import as_float, lr_scale, set_lr
from lr_callbacks.core.sharded import plain, plain_shard_group

if TYPE_CHECKING:
    from pytorch_lightning import LightningModule, Trainer

__all__ = ["Batches", "Driver", "evaluate", "fresh_loaders"]


def fresh_loaders(loaders: Any) -> Any:
    """Loaders that can be iterated without disturbing the trainer's own iteration of ``loaders``.

    A ``DataLoader`` with ``persistent_workers`` hands out one shared iterator (and the same worker
    processes, whose random state carries on); iterating it here would reset the epoch the trainer is in.
    A shallow copy with its iterator cleared gets its own workers, which end with it.
    """
    if isinstance(loaders, dict):
        return {key: fresh_loaders(value) for key, value in loaders.items()}
    if isinstance(loaders, (list, tuple)):
        return type(loaders)(fresh_loaders(value) for value in loaders)
    if isinstance(loaders, torch.utils.data.DataLoader) and loaders.persistent_workers:
        loader = copy.copy(loaders)
        fresh_iterator(loader)
        return loader
    return loaders


def _combined(loaders: Any) -> Any:
    if isinstance(loaders, (dict, list, tuple)):
        from pytorch_lightning.utilities import CombinedLoader

        return _CombinedBatches(CombinedLoader(loaders, mode="max_size_cycle"))
    return loaders


class _CombinedBatches:
    """Batches of several training loaders, combined as Lightning does by default (``max_size_cycle``)."""

    def __init__(self, combined: Any) -> None:
        self.combined = combined

    def __iter__(self) -> Iterator[Any]:
        iter(self.combined)
        for batch, _, _ in self.combined:
            yield batch


class Batches:
    """Training batches, pass after pass over the data, each pass as long as one of the trainer's epochs.

    An optimizer step never spans two passes: a pass's last batches, too few for a whole step under gradient
    accumulation, make a step of their own, as Lightning's training does at the end of an epoch (so an epoch
    shorter than ``accumulate_grad_batches`` is one step). When a fresh pass yields no batch, the data is
    exhausted.

    Args:
        loaders: ``trainer.train_dataloader`` (one loader, or a dict/list of them).
        per_pass: batches per pass (``trainer.num_training_batches``; ``inf`` for a stream).

    Attributes:
        passes: how many passes have started (the first :meth:`take` starts one).
        taken: how many batches of the current pass have been taken: after a :meth:`take`, its last batch's
            ``batch_idx`` in the epoch, plus one.
    """

    def __init__(self, loaders: Any, per_pass: float) -> None:
        if loaders is None:
            raise ValueError("LRFinder found no training data: pass train_dataloaders (or a datamodule) to fit")
        self._loaders = fresh_loaders(loaders)
        self._per_pass = per_pass
        self._iterator: Iterator[Any] | None = None
        self.passes = 0
        self.taken = 0

    def take(self, count: int) -> list[Any] | None:
        """The next ``count`` batches, or the fewer that end this pass, starting a new pass if this one has none
        left; ``None`` if a fresh pass has none."""
        for fresh in (False, True):
            if fresh or self._iterator is None:
                self._iterator, self.taken = iter(_combined(self._loaders)), 0
                self.passes += 1
            batches: list[Any] = []
            while len(batches) < count and self.taken < self._per_pass:
                try:
                    batches.append(next(self._iterator))
                except StopIteration:
                    break
                self.taken += 1
            if len(batches) < count:
                self._iterator = None  # this pass has ended: the next step starts a fresh one
            if batches:
                return batches
        return None

    def close(self) -> None:
        self._iterator = None
        self._loaders = None


class _Probe(Callback):
    """Stands in for the trainer's callbacks while steps are driven: reads the gradient norm.

    ``on_before_optimizer_step`` runs after unscaling (AMP) and before clipping: the norm is that of the
    gradients the optimizer would get without clipping. It stays a device tensor (no host sync here). Under a
    sharded strategy it is the norm of the whole gradient, from every rank's shards (one all-reduce).
    """

    def __init__(self, shard_group: Any = None) -> None:
        self.norms: list[torch.Tensor] = []
        self.shard_group = shard_group
        self.lrs_used: list[float] = []  # the reference group's LR at each step of the first optimizer

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        unscale_fused(trainer, optimizer)  # a fused optimizer's gradients, still scaled under a GradScaler
        if optimizer is trainer.optimizers[0]:
            self.lrs_used.append(as_float(optimizer.param_groups[0]["lr"]))
        grads = [p.grad.detach() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            self.norms.append(global_norm(grads, trainer.strategy.root_device, self.shard_group))

    def take(self, device: torch.device) -> torch.Tensor:
        norms, self.norms = self.norms, []
        if not norms:
            return torch.tensor(math.nan, device=device)
        return torch.linalg.vector_norm(torch.stack([n.float().to(device) for n in norms]))


def _discard(*args: Any, **kwargs: Any) -> None:
    return None


class _Recorder:
    """Catches ``self.log(name, value, batch_size=...)`` calls of a validation step.

    A value may be a torchmetrics ``Metric`` (Lightning logs its ``compute()`` at the epoch's end): it is kept as
    it is (before, converting it to a tensor raised, whatever name was monitored)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[Any, int]] = {}

    def log(self, name: str, value: Any, *args: Any, batch_size: int | None = None, **kwargs: Any) -> None:
        kept = value if isinstance(value, torch.nn.Module) else plain(torch.as_tensor(value).detach())
        self.values[name] = (kept, batch_size or 1)

    def log_dict(self, dictionary: Mapping[str, Any], *args: Any, batch_size: int | None = None, **kw: Any) -> None:
        for name, value in dictionary.items():
            self.log(name, value, batch_size=batch_size)


@contextlib.contextmanager
def _module_logging(module: Any, log: Callable[..., None], log_dict: Callable[..., None]) -> Iterator[None]:
    """Route ``module.log``/``module.log_dict`` elsewhere for a while (instance attributes shadow the methods)."""
    saved = {name: module.__dict__.get(name) for name in ("log", "log_dict")}
    module.log, module.log_dict = log, log_dict
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del module.__dict__[name]
            else:
                module.__dict__[name] = value


def _to_device(trainer: Any, module: Any, batch: Any) -> Any:
    """A loader's batch as the training loop hands it over: converted to the precision (``"bf16-true"`` and the
    other true precisions cast floating inputs), through ``on_before_batch_transfer``, onto the device."""
    batch = trainer.precision_plugin.convert_input(batch)
    return trainer.strategy.batch_to_device(transfer_hook(module, batch), dataloader_idx=0)


def _loss_of(output: Any, manual: bool) -> torch.Tensor | None:
    if isinstance(output, Mapping):
        if "loss" not in output:
            raise ValueError(
                "LRFinder: training_step returned a dict without a 'loss' key; return the loss under 'loss'"
            )
        output = output["loss"]
    if output is None or isinstance(output, torch.Tensor):
        if output is None and manual:
            raise ValueError(
                "LRFinder with manual optimization needs training_step to return the loss (a tensor); it "
                "returned None. Return the loss you pass to manual_backward"
            )
        return output
    raise TypeError(f"LRFinder: training_step must return a tensor, a dict with 'loss', or None; got {output!r}")


class Driver:
    """Runs optimizer steps of the user's training recipe at LRs it sets, from inside a hook.

    Use as a context manager: on entry the trainer's callbacks are replaced by a probe and ``self.log`` is
    silenced; on exit both come back.

    Attributes:
        lr_scale: the watchdog's cut of the LR (:func:`~lr_callbacks.core.lr_model.lr_scale`) when the driver was
            made, read while its callbacks are still in the trainer.
    """

    def __init__(self, trainer: Any, module: Any, ratios: Sequence[Sequence[float]]) -> None:
        self.trainer, self.module, self.ratios = trainer, module, ratios
        self.manual = not module.automatic_optimization
        self.accumulate = 1 if self.manual else accumulation(trainer)
        self._probe = _Probe(plain_shard_group(trainer.strategy))
        self._stack = contextlib.ExitStack()
        self._set = math.nan  # the reference group's LR that set_lr set last
        self.lr_scale = lr_scale(trainer)  # inside, the trainer's callbacks are set aside: it reads 1.0 there

    def __enter__(self) -> Driver:
        callbacks = self.trainer.callbacks
        # The progress bar stays: it has none of the hooks driven here, and a live display (Rich) reads it. So does
        # a GradientAccumulationScheduler: the run's length is counted from its factors (optimizer_steps).
        bar = self.trainer.progress_bar_callback
        kept = [c for c in callbacks if is_lightning(c, "GradientAccumulationScheduler")]
        self.trainer.callbacks = [self._probe, *kept] + ([bar] if bar is not None else [])
        self._stack.callback(setattr, self.trainer, "callbacks", callbacks)
        self._stack.enter_context(_module_logging(self.module, _discard, _discard))
        self._stack.enter_context(torch.enable_grad())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def set_lr(self, lr: float) -> None:
        """Set the reference group's LR to ``lr``, every other group to ``lr × ratio``."""
        self._set = lr
        for optimizer, ratios in zip(self.trainer.optimizers, self.ratios):
            for group, ratio in zip(optimizer.param_groups, ratios):
                set_lr(group, lr * ratio)

    def overridden(self) -> float | None:
        """The LR the reference group's ``step()`` ran at since the last :meth:`set_lr`, when that is not the LR
        set (something in the step writes the LR: a warmup by hand in ``optimizer_step``); ``None`` otherwise."""
        used, self._probe.lrs_used = self._probe.lrs_used, []
        wrong = [lr for lr in used if not math.isclose(lr, self._set, rel_tol=1e-6)]
        return wrong[0] if wrong else None

    def set_lrs(self, lrs: Sequence[Sequence[float]]) -> None:
        """Set every group's LR (one list per optimizer)."""
        for optimizer, values in zip(self.trainer.optimizers, lrs):
            for group, value in zip(optimizer.param_groups, values):
                set_lr(group, value)

    def step(self, batches: Sequence[Any], index: int) -> torch.Tensor | None:
        """One optimizer step on ``batches`` (``accumulate`` micro-batches); returns ``[loss, grad_norm, skipped]``.

        The loss is the mean of the micro-batches' losses as ``training_step`` returned them (not divided
        by the accumulation), as a device tensor: nothing here waits for the device, except under mixed
        precision's ``GradScaler``, whose own step already waits to read its overflow check. ``skipped`` is 1 when
        that scaler skipped the update (its scale fell: it backs off exactly when it skips), else 0. ``None``
        when every ``training_step`` returned ``None`` (Lightning's way to skip a batch; single process only).
        """
        trainer, module = self.trainer, self.module
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        scale = scaler.get_scale() if scaler is not None else math.nan
        losses: list[torch.Tensor] = []
        if self.manual:
            batch = _to_device(trainer, module, batches[0])
            loss = _loss_of(trainer.strategy.training_step(batch, index), manual=True)
            assert loss is not None
            losses.append(plain(loss.detach()))
        else:
            optimizer = trainer.optimizers[0]
            lightning_optimizer = module.optimizers()
            for m, raw_batch in enumerate(batches):
                batch_idx = index * self.accumulate + m
                closure = self._closure(_to_device(trainer, module, raw_batch), batch_idx, optimizer, m == 0, losses)
                if m == len(batches) - 1:
                    module.optimizer_step(trainer.current_epoch, batch_idx, lightning_optimizer, closure)
                else:
                    block = getattr(trainer.strategy, "block_backward_sync", contextlib.nullcontext)
                    with block():
                        closure()
        device = trainer.strategy.root_device
        norm = self._probe.take(device)
        clear_stale_unscale(trainer)  # a step whose training_step returned None unscaled a fused optimizer, unstepped
        if not losses:
            return None
        skipped = torch.tensor(float(scaler is not None and scaler.get_scale() < scale), device=device)
        return torch.stack([torch.stack([x.float() for x in losses]).mean().to(device), norm, skipped])

    def _closure(
        self, batch: Any, batch_idx: int, optimizer: Any, first: bool, losses: list[torch.Tensor]
    ) -> Callable[[], torch.Tensor | None]:
        trainer, module = self.trainer, self.module

        def closure() -> torch.Tensor | None:
            loss = _loss_of(trainer.strategy.training_step(batch, batch_idx), manual=False)
            if first:
                module.on_before_zero_grad(optimizer)
                module.optimizer_zero_grad(trainer.current_epoch, batch_idx, optimizer)
            if loss is None:
                if trainer.world_size > 1:
                    raise RuntimeError(
                        "LRFinder: training_step returned None (skip) under a distributed strategy, which "
                        "Lightning does not support either; return the loss on every rank"
                    )
                return None
            losses.append(plain(loss.detach()))
            scaled = loss / self.accumulate
            trainer.strategy.backward(scaled, optimizer)
            return scaled.detach()

        return closure


def evaluate(trainer: Any, module: Any, loaders: Any, max_batches: float, monitor: str) -> torch.Tensor:
    """The validation loss named ``monitor``, averaged over up to ``max_batches`` batches of the first loader.

    ``loaders`` is ``trainer.val_dataloaders``: one loader, or a list or dict of them, whose first (Lightning's
    ``dataloader_idx`` 0) is read; with several, ``validation_step`` gets that ``dataloader_idx`` too, as Lightning
    passes it (before, a dict was iterated as its keys, and a step that takes ``dataloader_idx`` without a default
    raised a ``TypeError``).

    The value is what ``validation_step`` logs under ``monitor`` (``self.log``, weighted by ``batch_size``
    when given), or returns (a tensor, or a dict with ``monitor`` or ``"loss"``); a torchmetrics ``Metric`` logged under
    ``monitor`` counts as its ``compute()`` after the last batch, as Lightning logs it. Returns a device tensor
    ``[Σ w·v, Σ w, Σ w·v², batches]`` (``w`` the batch's weight, ``v`` its value) so that several ranks can be
    summed before dividing, and the spread between batches gives the mean's standard error.

    Raises:
        ValueError: if ``validation_step`` neither logs nor returns ``monitor``.
    """
    extra = (0,) if isinstance(loaders, (list, tuple, dict)) and len(loaders) > 1 else ()  # the dataloader_idx
    loaders = _first_loader(loaders)
    recorder = _Recorder()
    device = trainer.strategy.root_device
    total = torch.zeros(4, dtype=_sums_dtype(device), device=device)
    modes = [(m, m.training) for m in module.modules()]
    metric: Any = None
    module.eval()
    try:
        with _module_logging(module, recorder.log, recorder.log_dict), torch.no_grad():
            for index, raw_batch in enumerate(fresh_loaders(loaders)):
                if index >= max_batches:
                    break
                recorder.values.clear()
                output = trainer.strategy.validation_step(_to_device(trainer, module, raw_batch), index, *extra)
                value, weight = _monitored(output, recorder, monitor)
                if isinstance(value, torch.nn.Module):  # a Metric, updated batch after batch: read at the end
                    metric = value
                    continue
                value = value.to(device, total.dtype)
                one = _scalar(1.0, device)
                total += torch.stack([value * weight, _scalar(weight, device), value * value * weight, one])
            if metric is not None:  # its value over the evaluation, as Lightning logs it (no spread between batches)
                value = plain(torch.as_tensor(metric.compute()).detach()).to(device, total.dtype)
                one = _scalar(1.0, device)
                total += torch.stack([value, one, value * value, one])
    finally:
        for submodule, training in modes:
            submodule.training = training
    return total


def _first_loader(loaders: Any) -> Any:
    """The loader Lightning numbers ``dataloader_idx`` 0: the first of a list, or of a dict's values."""
    if isinstance(loaders, dict):
        return next(iter(loaders.values()))
    if isinstance(loaders, (list, tuple)):
        return loaders[0]
    return loaders


def _sums_dtype(device: torch.device) -> torch.dtype:
    """The sums' precision: float64, but float32 on Apple's MPS, which has no float64 (the confirm trials'
    validation failed there before).

    >>> _sums_dtype(torch.device("cpu")), _sums_dtype(torch.device("mps"))
    (torch.float64, torch.float32)
    """
    return torch.float32 if device.type == "mps" else torch.float64


def _scalar(value: float, device: torch.device) -> torch.Tensor:
    """``value`` as a 0-d tensor on ``device``, filled there: before, ``torch.tensor(value, device=...)`` copied it
    from the host, two copies per validation batch, each of which waits for the GPU's queue under CUDA.

    >>> _scalar(2.5, torch.device("cpu"))
    tensor(2.5000, dtype=torch.float64)
    """
    return torch.full((), float(value), dtype=_sums_dtype(device), device=device)


def _monitored(output: Any, recorder: _Recorder, monitor: str) -> tuple[Any, int]:
    if monitor in recorder.values:
        return recorder.values[monitor]
    if isinstance(output, Mapping) and (monitor in output or "loss" in output):
        return torch.as_tensor(output.get(monitor, output.get("loss"))).detach(), 1
    if isinstance(output, torch.Tensor):
        return output.detach(), 1
    logged = ", ".join(sorted(recorder.values)) or "nothing"
    raise ValueError(
        f"LRFinder(confirm=...) compares trials on `monitor`={monitor!r}, but validation_step logged {logged} "
        f"and returned {type(output).__name__}; set monitor= to one of the logged names, or self.log({monitor!r}, "
        "loss) in validation_step"
    )
