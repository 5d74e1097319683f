"""The Lightning/torch compatibility layer: one callback base for both Lightning namespaces, and every private
third-party internal the package touches, each in one function that says why (``tests/core/test_compat.py``
fails when an installed version changes one of them). ``torch._foreach_norm`` and ``torch._foreach_mul_``
(private by name, but what torch's own ``clip_grad_norm_`` uses) are called where they are used, in
``core.grads`` and ``watchdog.device``; the same tests pin their signatures.

Lightning ships twice: ``pytorch_lightning`` and ``lightning.pytorch`` (the unified ``lightning``
package). Their ``Callback`` classes are distinct, and a Trainer (and LightningCLI) from one namespace
does not accept a callback built on the other. Our callbacks derive from both bases where both are
installed, so they work, and pass Lightning's ``isinstance`` checks, whichever namespace the user imports.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
from typing import TYPE_CHECKING, Any, NoReturn, cast

import torch

__all__ = [
    "Callback",
    "accumulation",
    "adafactor_steps",
    "callback_bases",
    "callback_named",
    "clear_found_inf",
    "clear_stale_unscale",
    "exit_fit",
    "flatten",
    "fresh_iterator",
    "grad_scaler",
    "is_lightning",
    "load_validation_data",
    "metric_states",
    "move_after_finetuning",
    "optimizer_steps",
    "overrides",
    "reset_scaler_step_state",
    "run_step",
    "scale_backbone_ramp",
    "set_found_inf",
    "supports_found_inf",
    "swa_start_epoch",
    "to_device",
    "transfer_hook",
    "unscale_fused",
]


@functools.cache
def callback_bases() -> tuple[type, ...]:
    """The installed Lightning ``Callback`` classes: ``pytorch_lightning``'s, then ``lightning.pytorch``'s (looked
    up once: the snapshots ask for every attribute of every submodule)."""
    bases: list[type] = []
    if importlib.util.find_spec("pytorch_lightning") is not None:
        from pytorch_lightning import Callback as PLCallback

        bases.append(PLCallback)
    if importlib.util.find_spec("lightning") is not None:
        from lightning.pytorch import Callback as LCallback

        bases.append(LCallback)
    if not bases:
        raise ImportError("lr_callbacks needs PyTorch Lightning: pip install pytorch-lightning")
    return tuple(bases)


if TYPE_CHECKING:
    from pytorch_lightning import Callback
else:
    _bases = callback_bases()
    Callback = _bases[0] if len(_bases) == 1 else type("Callback", _bases, {"__module__": __name__})


def exit_fit(trainer: Any) -> NoReturn:
    """End ``trainer``'s fit from a hook, before any epoch, as ``Tuner.lr_find`` does.

    Lightning's ``_TunerExitException`` (private) makes the Trainer tear down and finish cleanly; the public
    ``trainer.should_stop`` would still train a whole epoch when ``min_epochs``/``min_steps`` are set. Taken from
    the namespace of this trainer.
    """
    package = "lightning.pytorch" if type(trainer).__module__.startswith("lightning.") else "pytorch_lightning"
    raise importlib.import_module(f"{package}.utilities.exceptions")._TunerExitException()


def callback_named(trainer: Any, name: str) -> Any:
    """The trainer's callback of Lightning's class ``name`` (either namespace, or a subclass), or ``None``."""
    return next((c for c in trainer.callbacks if is_lightning(c, name)), None)


def is_lightning(obj: Any, name: str) -> bool:
    """``obj`` is an instance of Lightning's class ``name`` (either namespace, or a subclass)."""
    return any(cls.__name__ == name and cls.__module__.split(".")[0] in _LIGHTNING for cls in type(obj).__mro__)


_LIGHTNING = ("pytorch_lightning", "lightning")


def overrides(obj: Any, name: str) -> bool:
    """Whether ``obj``'s class defines the method ``name`` itself, not only by inheriting Lightning's (either
    namespace): Lightning's ``is_overridden``, without importing one of the two.

    >>> class Plain: pass
    >>> overrides(Plain(), "configure_gradient_clipping")
    False
    """
    owner = next((cls for cls in type(obj).__mro__ if name in vars(cls)), None)
    return owner is not None and owner.__module__.split(".")[0] not in _LIGHTNING


def move_after_finetuning(trainer: Any, callback: Any) -> str | None:
    """Move ``callback`` after the fine-tuning callbacks (Lightning's ``BaseFinetuning``, e.g. ``BackboneFinetuning``)
    listed after it in ``trainer.callbacks``; the class name of the last of them, or ``None`` when none is. Call it
    from ``setup``: the list is replaced by a new one, so the loop over the hooks running then goes on over the old.
    """
    callbacks = list(trainer.callbacks)
    index = callbacks.index(callback)
    later = [i for i, c in enumerate(callbacks) if i > index and is_lightning(c, "BaseFinetuning")]
    if not later:
        return None
    last = callbacks[later[-1]]
    callbacks.insert(later[-1] + 1, callback)
    del callbacks[index]
    trainer.callbacks = callbacks
    return type(last).__name__


def swa_start_epoch(swa: Any) -> int | None:
    """The epoch (from 0) at which ``StochasticWeightAveraging`` starts, or ``None`` before its ``on_fit_start`` has
    resolved a fractional ``swa_epoch_start`` against ``max_epochs`` (its ``swa_start`` asserts there: private
    ``_swa_epoch_start``)."""
    start = getattr(swa, "_swa_epoch_start", None)
    return swa.swa_start if isinstance(start, int) and not isinstance(start, bool) else None


def scale_backbone_ramp(trainer: Any, factor: float) -> None:
    """Scale the backbone LR that Lightning's ``BackboneFinetuning`` remembers (``previous_backbone_lr``, public
    but undocumented). At each epoch after the unfreeze it sets the backbone group's LR to ``lambda_func(epoch + 1)
    × previous``, which throws away a change made between its epochs (the finder's answer, the watchdog's cut)."""
    if factor == 1.0:
        return
    for callback in trainer.callbacks:
        previous = getattr(callback, "previous_backbone_lr", None)
        if is_lightning(callback, "BackboneFinetuning") and isinstance(previous, float):
            callback.previous_backbone_lr = previous * factor


def accumulation(trainer: Any, epoch: int | None = None) -> int:
    """The micro-batches of an optimizer step in the current epoch (or in ``epoch``). Lightning's
    ``GradientAccumulationScheduler`` sets ``trainer.accumulate_grad_batches`` only in its ``on_train_epoch_start``:
    before it, at ``on_train_start`` or in an epoch-start hook that runs first, the trainer still holds the last
    epoch's factor (or 1)."""
    scheduler = callback_named(trainer, "GradientAccumulationScheduler")
    if scheduler is not None:
        epoch = int(trainer.current_epoch) if epoch is None else epoch
        return max(int(scheduler.get_accumulate_grad_batches(epoch)), 1)
    return max(int(trainer.accumulate_grad_batches), 1)


def run_step(trainer: Any) -> int:
    """The step at which Lightning logs the run's metrics (``self.log``, ``LearningRateMonitor``): the training
    steps so far, the fit loop's private ``_batches_that_stepped``. It is ``trainer.global_step`` with one optimizer;
    with several, stepped by hand, ``global_step`` counts every optimizer's steps (16 after 8 training steps with
    two) and this counts each training step once (8)."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


def adafactor_steps(optimizer: Any) -> int | None:
    """The step count ``t`` of torch's ``Adafactor`` (which steps with ``min(lr, 1/√t)``: an LR above that cap does
    nothing), or ``None`` for any other optimizer."""
    inner = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper
    if type(inner).__name__ != "Adafactor" or not type(inner).__module__.startswith("torch.optim"):
        return None
    steps = [state["step"] for state in inner.state.values() if "step" in state]
    return int(max(float(step) for step in steps)) if steps else 0


def optimizer_steps(trainer: Any) -> int | None:
    """The run's length in optimizer steps (``None``: unknown), Lightning's ``estimated_stepping_batches``, counted
    epoch by epoch under a ``GradientAccumulationScheduler``: Lightning divides every epoch by the factor the trainer
    holds at fit start (1, the scheduler sets it at each epoch's start), so ``{0: 4}`` read as four times the run.
    """
    from lr_callbacks.core.durations import known_total

    total = known_total(trainer.estimated_stepping_batches)
    scheduler = callback_named(trainer, "GradientAccumulationScheduler")
    batches, epochs = trainer.num_training_batches, trainer.max_epochs
    if scheduler is None or batches is None or math.isinf(batches) or batches <= 0 or not epochs or epochs < 0:
        return total
    factors = [max(int(scheduler.get_accumulate_grad_batches(e)), 1) for e in range(int(epochs))]
    counted = sum(math.ceil(int(batches) / f) for f in factors)
    return counted if int(trainer.max_steps) < 0 else min(counted, int(trainer.max_steps))


def transfer_hook(module: Any, batch: Any) -> Any:
    """Run the ``on_before_batch_transfer`` hook on ``batch`` as Lightning's loop does.

    The loop calls the module's private ``_on_before_batch_transfer``, which routes the hook to a DataModule that
    overrides it; the public ``on_before_batch_transfer`` cannot route.
    """
    before = getattr(module, "_on_before_batch_transfer", None)
    return before(batch, dataloader_idx=0) if before is not None else module.on_before_batch_transfer(batch, 0)


def to_device(data: Any, device: torch.device) -> Any:
    """``data``'s tensors moved to ``device`` (Lightning's ``move_data_to_device``), without the module's batch
    transfer hooks: a batch kept from a step has been through them already (``on_after_batch_transfer`` would run
    twice: an augmentation or a normalization applied again)."""
    try:
        from lightning_fabric.utilities.apply_func import move_data_to_device
    except ImportError:  # the unified `lightning` package only
        from lightning.fabric.utilities.apply_func import move_data_to_device
    return move_data_to_device(data, device)


def load_validation_data(trainer: Any) -> None:
    """Load the fit's validation data now, as Lightning's fit loop does at its start when the first epoch validates
    (``fit_loop.on_run_start``: ``trainer.validating = True``, ``val_loop.setup_data()``); the loaders stay for the
    run. Nothing when no validation data was given (the loop's private ``_data_source``)."""
    loop = trainer.fit_loop.epoch_loop.val_loop
    source = getattr(loop, "_data_source", None)
    if source is None or not source.is_defined():
        return
    stage = trainer.state.stage
    trainer.validating = True
    try:
        loop.setup_data()
    finally:
        trainer.state.stage = stage


def fresh_iterator(loader: torch.utils.data.DataLoader) -> None:
    """Forget a (shallow-copied) ``DataLoader``'s cached persistent iterator, so that it starts its own workers.

    ``_iterator`` is torch's cache of the persistent-workers iterator: private, and nothing public clears it.
    """
    loader._iterator = None


def reset_scaler_step_state(scaler: Any) -> None:
    """Forget a ``GradScaler``'s per-step bookkeeping (``_per_optimizer_states``, private).

    A step that raised between ``scaler.unscale_`` and ``scaler.update`` leaves the optimizer marked as
    "unscaled", and the next real step would fail with "unscale_() has already been called"; torch has no public
    way to clear the mark. The bookkeeping is a defaultdict that ``update()`` itself empties.
    """
    states = getattr(scaler, "_per_optimizer_states", None)
    if isinstance(states, dict):
        states.clear()


#: torchmetrics' counters kept beside a ``Metric``'s public ``metric_state``; ``compute()`` reads them.
METRIC_COUNTERS = ("_update_count", "_computed")


def metric_states(module: torch.nn.Module) -> list[tuple[Any, dict[str, Any]]]:
    """Every torchmetrics ``Metric`` in ``module`` with the names of its state (public ``metric_state`` and the
    private :data:`METRIC_COUNTERS`, which have no public setter). Duck-typed, so torchmetrics stays optional."""
    found = []
    for submodule in module.modules():
        if isinstance(getattr(type(submodule), "metric_state", None), property) and hasattr(submodule, "_computed"):
            state = cast(dict[str, Any], submodule.metric_state)
            found.append((submodule, {name: getattr(submodule, name) for name in [*state, *METRIC_COUNTERS]}))
    return found


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One contiguous 1-D copy of ``tensors`` (of one dtype, on one device), in a single C++ call.

    ``torch._utils._flatten_dense_tensors`` is private by name but is what DDP and apex use to bucket gradients. On
    the CPU a Python loop of ``reshape`` calls before a ``cat`` costs microseconds per tensor, more than the copy.
    Of a lone tensor it returns a view, not a copy: that one is cloned here.

    >>> flatten([torch.ones(2, 2), torch.zeros(3)]).tolist()
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    """
    from torch._utils import _flatten_dense_tensors

    if len(tensors) == 1:
        return tensors[0].reshape(-1).clone()
    flat: torch.Tensor = _flatten_dense_tensors(tensors)
    return flat


def supports_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours a ``found_inf`` flag (torch's fused Adam, AdamW, SGD, Adagrad).

    ``_step_supports_amp_scaling`` is the private marker torch's ``GradScaler`` checks for the same purpose.
    """
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def grad_scaler(trainer: Any) -> Any:
    """The trainer's ``GradScaler`` when one is in use (fp16 mixed precision), else ``None``."""
    scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None


def unscale_fused(trainer: Any, optimizer: torch.optim.Optimizer) -> None:
    """Unscale the gradients of an optimizer that unscales in its own step (``fused=True``) before the hooks read
    them, as Lightning does for every other optimizer under a ``GradScaler``.

    Lightning leaves the unscaling to such an optimizer: at ``on_before_optimizer_step`` its gradients are still
    multiplied by the loss scale (a norm read there is ×65536 at the default scale), and a step whose gradients
    are all dropped leaves the scaler without inf checks (``scaler.update()``: "No inf checks were recorded"). The
    scaler's ``unscale_`` records them, and the fused step then skips on them and unscales nothing more: torch's
    documented way to read or clip gradients under a ``GradScaler``. Nothing where the optimizer was unscaled
    already (the stage is ``_per_optimizer_states``, private)."""
    scaler = grad_scaler(trainer)
    if scaler is None or not supports_found_inf(optimizer):
        return
    from torch.amp.grad_scaler import OptState

    states = getattr(scaler, "_per_optimizer_states", {})
    state = states.get(id(optimizer)) if isinstance(states, dict) else None
    if state is None or state.get("stage") is OptState.READY:
        scaler.unscale_(optimizer)


def clear_stale_unscale(trainer: Any) -> None:
    """After a step: forget a ``GradScaler``'s "unscaled" mark on an optimizer that was not stepped.

    :func:`unscale_fused` unscales in ``on_before_optimizer_step``, which Lightning calls also for a batch whose
    ``training_step`` returned ``None``; it then skips the scaler's ``step`` and ``update``, which would have
    cleared the mark. Left, the next step found its optimizer "unscaled" already: its gradients went unread and
    were applied as they were, ×(loss scale), or, without gradients, ``update()`` failed ("No inf checks were
    recorded"). After a stepped batch the scaler's ``update`` has emptied the marks: nothing to forget."""
    scaler = grad_scaler(trainer)
    states = getattr(scaler, "_per_optimizer_states", None)
    if scaler is None or not isinstance(states, dict):
        return
    from torch.amp.grad_scaler import OptState

    for optimizer in getattr(trainer, "optimizers", []):
        state = states.get(id(optimizer))
        if state is not None and state.get("stage") is OptState.UNSCALED and supports_found_inf(optimizer):
            del states[id(optimizer)]


def set_found_inf(optimizer: torch.optim.Optimizer, flag: torch.Tensor) -> None:
    """Make the next ``step()`` of a fused optimizer skip when ``flag`` is 1, on the device, as a ``GradScaler``
    does after an overflow (weights, moments and step count do not move); ``grad_scale=None``: no unscaling."""
    optimizer.found_inf = flag  # type: ignore[attr-defined]
    optimizer.grad_scale = None  # type: ignore[attr-defined]


def clear_found_inf(optimizer: torch.optim.Optimizer) -> None:
    """Remove what :func:`set_found_inf` set (or every later step would be judged by the stale flag)."""
    for name in ("found_inf", "grad_scale"):
        if hasattr(optimizer, name):
            delattr(optimizer, name)
