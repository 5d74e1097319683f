"""Host-memory snapshots, restored in place: one mechanism for the finder and the watchdog.

- :func:`to_host` makes every host copy (pinned and without blocking when the tensor is on an accelerator,
  into a buffer of an earlier snapshot when one fits); :func:`synchronize` waits for the copies.
- :class:`OptimizerState`: an optimizer's per-parameter state by position (and, if asked, its param groups),
  restored in place: the live tensors keep their identity (fused and capturable optimizers, schedulers and hooks
  hold references to them).
- :class:`ModelSnapshot`: the module's ``state_dict`` and an :class:`OptimizerState`, taken again and again into
  the same buffers: the watchdog's rollback target, and what a checkpoint written mid-incident holds.
- :class:`TrainingSnapshot`: everything an LR finder sweep touches, restored exactly (below).

What :class:`TrainingSnapshot` saves, and how it comes back:

- parameters, their gradients, and buffers (persistent or not, e.g. BatchNorm's running statistics): copied
  to the CPU; restored *in place* into the same tensor objects, so the optimizer, DDP's buckets and any user
  reference keep pointing at the live tensors;
- each module's train/eval mode, and the state of its torchmetrics ``Metric``s (the sweep runs
  ``training_step``, which may update them);
- each optimizer's state and param groups: the same tensor objects and group dicts are put back, their
  values copied in (a state created during the sweep, e.g. Adam's first moments, is removed again);
- the LR schedulers (``state_dict``), the mixed-precision ``GradScaler`` (``state_dict``, and its
  per-step bookkeeping, so a sweep that raised between ``unscale_`` and ``update`` leaves no trace);
- the random number generators: Python's, NumPy's global one, torch's CPU and CUDA ones, and every
  ``torch.Generator`` a data loader or its sampler owns (they decide the data order).

Under a sharded strategy (FSDP2's ``DTensor`` parameters, gradients and optimizer state) every copy is of this
rank's own shard (:mod:`lr_callbacks.core.sharded`), restored in place into the live DTensor's local tensor: each
rank snapshots and restores its own part, with no collective.

Nothing is written to disk. CUDA tensors are copied into pinned host memory without blocking, with one
synchronisation at the end, so a snapshot never doubles GPU memory. The loop counters (``global_step``,
epoch and batch progress) are not saved because the sweep never moves them: it drives the steps itself,
outside Lightning's loops.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lr_callbacks.core.compat import callback_bases, metric_states, reset_scaler_step_state
from lr_callbacks.core.sharded import Layout, all_plain, is_dtensor, layout_of, local, plain, rebuild

__all__ = [
    "CopyPlan",
    "ModelSnapshot",
    "OptimizerState",
    "RngState",
    "TrainingSnapshot",
    "UserStates",
    "attribute_generators",
    "cloned_model_state",
    "cloned_state",
    "copy_into",
    "evaluation_kept",
    "host_tree",
    "loader_generators",
    "refill",
    "require_materialized",
    "restore_optimizer_state",
    "stateful_owners",
    "synchronize",
    "to_host",
]


def require_materialized(module: torch.nn.Module, owner: str) -> None:
    """Refuse a module whose lazy parameters or buffers have no shape yet (a ``LazyLinear`` before its first
    forward pass): a snapshot cannot copy them (before, torch's ``Attempted to use an uninitialized parameter`` at
    fit start).

    Raises:
        ValueError: naming the tensors and the fix.
    """
    tensors = itertools.chain(module.named_parameters(), module.named_buffers())
    lazy = [name for name, tensor in tensors if torch.nn.parameter.is_lazy(tensor)]
    if lazy:
        shown = ", ".join(lazy[:3]) + (", …" if len(lazy) > 3 else "")
        raise ValueError(
            f"{owner} snapshots the model's weights as training starts, but {len(lazy)} of its tensors are lazy "
            f"and not initialized yet ({shown}): run the model once on a batch before fit (in the "
            "LightningModule's `setup`, e.g. `self(example_batch)`), as torch recommends for lazy modules before "
            "an optimizer is built"
        )


def to_host(tensor: torch.Tensor, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """A host copy of ``tensor``, written into ``buffer`` when it fits (same shape and dtype, on the CPU).

    From an accelerator the copy goes to pinned memory without blocking (call :func:`synchronize` before reading
    it); on the CPU it is a plain copy. Of a DTensor, the copy is of this rank's shard.
    """
    tensor = local(tensor.detach())
    if tensor.layout != torch.strided:  # a sparse gradient (nn.Embedding(sparse=True)): copied whole
        return tensor.to("cpu", copy=True)
    on_accelerator = tensor.device.type != "cpu"
    if not (
        isinstance(buffer, torch.Tensor)
        and buffer.shape == tensor.shape
        and buffer.dtype == tensor.dtype
        and buffer.device.type == "cpu"
    ):
        pinned = on_accelerator and torch.cuda.is_available()
        buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=pinned)
    return buffer.copy_(tensor, non_blocking=on_accelerator)


def refill(buffers: list[torch.Tensor], tensors: list[torch.Tensor]) -> bool:
    """Copy plain ``tensors`` into the host ``buffers`` of an earlier copy with one foreach copy, as
    :func:`to_host` would one by one (without blocking from an accelerator, into pinned memory); ``False``, and
    nothing copied, unless every buffer fits (same shape and dtype) and every tensor is a plain tensor or
    parameter (no DTensor).

    On the CPU a Python-level copy per tensor costs microseconds of dispatch each: a snapshot of a model and its
    Adam state is hundreds of them.

    >>> buffers = [torch.zeros(2), torch.zeros(3)]
    >>> refill(buffers, [torch.ones(2), torch.ones(3)]), buffers[1].tolist()
    (True, [1.0, 1.0, 1.0])
    >>> refill(buffers, [torch.ones(2), torch.ones(4)])
    False
    """
    if len(buffers) != len(tensors) or not all_plain(tensors):
        return False
    accelerator = False
    for buffer, tensor in zip(buffers, tensors):
        if buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            return False
        if not tensor.is_cpu:
            if not buffer.is_pinned() and torch.cuda.is_available():
                return False  # to_host would have pinned it
            accelerator = True
    if tensors:
        torch._foreach_copy_(buffers, tensors, non_blocking=accelerator)
    return True


class CopyPlan:
    """The host buffers that a checked :func:`refill` paired with live tensors, so that the next copy of tensors
    laid out the same way is one foreach copy without the checks (a snapshot retaken every few steps).

    :meth:`copy` reuses the pairing only when ``key`` (the caller's structure: the ``state_dict`` names, the
    optimizer state's keys) is equal and the live tensors are plain tensors with the same shapes, dtypes and
    CPU-or-not as the remembered ones, in the same order: then every buffer fits, as :func:`refill` would have
    found. Anything else is a miss and copies nothing.

    >>> plan, buffers = CopyPlan(), [torch.zeros(2)]
    >>> plan.copy([torch.ones(2)], key="a")
    False
    >>> plan.remember([torch.ones(2)], buffers, key="a")
    >>> plan.copy([torch.full((2,), 2.0)], key="a"), buffers[0].tolist()
    (True, [2.0, 2.0])
    >>> plan.copy([torch.ones(2)], key="b"), plan.copy([torch.ones(3)], key="a")
    (False, False)
    """

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Drop the pairing: the next :meth:`copy` is a miss."""
        self._key: Any = None
        self._buffers: list[torch.Tensor] = []
        self._specs: list[tuple[torch.Size, torch.dtype, bool]] = []
        self._non_blocking = False

    def remember(self, live: list[torch.Tensor], buffers: list[torch.Tensor], key: Any) -> None:
        """Keep the pairing of a :func:`refill` of ``live`` into ``buffers`` that succeeded."""
        self._key, self._buffers, self._specs = key, list(buffers), _specs(live)
        self._non_blocking = not all(is_cpu for _, _, is_cpu in self._specs)  # as refill copied them

    def copy(self, live: list[torch.Tensor], key: Any) -> bool:
        """Copy ``live`` into the remembered buffers with one foreach copy; ``False``, and nothing copied, unless
        ``key`` and the live tensors' layout are the remembered ones (see the class)."""
        if not self._buffers or key != self._key or not all_plain(live) or _specs(live) != self._specs:
            return False
        torch._foreach_copy_(self._buffers, live, non_blocking=self._non_blocking)
        return True


def _specs(tensors: list[torch.Tensor]) -> list[tuple[torch.Size, torch.dtype, bool]]:
    return [(tensor.shape, tensor.dtype, tensor.is_cpu) for tensor in tensors]


def copy_into(live: torch.Tensor, saved: torch.Tensor) -> None:
    """Copy a host copy back into the live tensor (a DTensor's local shard), in place."""
    with torch.no_grad():
        local(live).copy_(saved, non_blocking=saved.is_pinned())


def copy_buffers(module: torch.nn.Module, saved: dict[str, torch.Tensor], only: set[str] | None = None) -> None:
    """Copy the buffers of ``saved`` (a ``state_dict`` copy) back into ``module``'s own, in place (``only``: those
    of these names)."""
    names = {name for name, _ in module.named_buffers() if only is None or name in only}
    synchronize()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name in names and name in saved:
                copy_into(tensor, saved[name])
    synchronize()


def synchronize() -> None:
    """Wait for the copies to and from pinned memory (nothing to wait for without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _saved(value: Any, buffer: Any = None) -> Any:
    return to_host(value, buffer) if isinstance(value, torch.Tensor) else copy.deepcopy(value)


class OptimizerState:
    """An optimizer's per-parameter state by position, and with ``groups=True`` its param groups, on the host.

    :meth:`capture` can be called again and again: it reuses the host buffers of the previous capture.
    :meth:`restore` copies the values back *in place* and can be called repeatedly. A state the optimizer did not
    have when captured (e.g. Adam's moments created since) is removed again; a tensor the optimizer no longer
    holds is recreated on the device it came from.
    """

    def __init__(self) -> None:
        self.state: dict[int, dict[str, Any]] = {}
        self.devices: dict[tuple[int, str], torch.device] = {}
        self.layouts: dict[tuple[int, str], Layout] = {}  # of the DTensors (sharded state), to recreate them
        self.groups: list[tuple[dict[str, Any], dict[str, Any]]] | None = None  # (live group dict, saved values)
        self._plan = CopyPlan()  # the last recapture's pairing of live state and buffers

    def capture(self, optimizer: torch.optim.Optimizer, *, groups: bool = False) -> OptimizerState:
        """Copy ``optimizer``'s state (and param groups) to the host; return ``self``."""
        if not groups and self._recapture(optimizer):
            return self
        self._plan.forget()  # new buffers
        taken: dict[int, dict[str, Any]] = {}
        with torch.no_grad():
            for index, parameter in enumerate(_parameters(optimizer)):
                old = self.state.get(index, {})
                state = optimizer.state.get(parameter, {})
                for key, value in state.items():
                    if isinstance(value, torch.Tensor):
                        self.devices[index, key] = local(value).device
                        layout = layout_of(value)
                        if layout is not None:
                            self.layouts[index, key] = layout
                taken[index] = {key: _saved(value, old.get(key)) for key, value in state.items()}
            if groups:
                self.groups = [
                    (group, {k: (v, _saved(v)) for k, v in group.items() if k != "params"})
                    for group in optimizer.param_groups
                ]
        self.state = taken
        return self

    def _recapture(self, optimizer: torch.optim.Optimizer) -> bool:
        """:meth:`capture` into the previous capture's buffers with one foreach copy, when the state holds the same
        keys and plain tensors of the same shapes on the same devices (a ring retaking its snapshots); ``False``,
        and nothing changed, otherwise. A state laid out as at the last recapture is copied through its
        :class:`CopyPlan`, keyed on the state's keys per parameter."""
        parameters = _parameters(optimizer)
        if self.groups is not None or not self.state or len(self.state) != len(parameters):
            return False
        states = [optimizer.state.get(parameter, {}) for parameter in parameters]
        keys = list(map(tuple, states))
        with torch.no_grad():
            if self._plan.copy([value for state in states for value in state.values()], keys):
                return True
        buffers, tensors, others = [], [], []
        for index, state in enumerate(states):
            old = self.state.get(index)
            if old is None or old.keys() != state.keys():
                return False
            for key, value in state.items():
                if isinstance(value, torch.Tensor) != isinstance(old[key], torch.Tensor):
                    return False  # a value that turned from a number into a tensor, or back (LBFGS's ``t``)
                if isinstance(value, torch.Tensor):
                    if self.devices.get((index, key)) != value.device:
                        return False
                    buffers.append(old[key])
                    tensors.append(value)
                else:
                    others.append((old, key, value))
        with torch.no_grad():
            if not refill(buffers, tensors):
                return False
        for old, key, value in others:
            old[key] = copy.deepcopy(value)
        if others:
            self._plan.forget()  # the plan copies tensors only
        else:
            self._plan.remember(tensors, buffers, keys)
        return True

    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        """Put the captured state (and param groups) back into ``optimizer``, in place."""
        if self.groups is not None:
            optimizer.param_groups[:] = [group for group, _ in self.groups]
            for group, values in self.groups:
                for key in [k for k in group if k != "params" and k not in values]:
                    del group[key]
                for key, (original, saved) in values.items():
                    if isinstance(original, torch.Tensor) and original.shape == saved.shape:
                        copy_into(original, saved)
                        group[key] = original
                    else:
                        group[key] = copy.deepcopy(saved)
        restore_optimizer_state(optimizer, self.state, self.devices, self.layouts)

    def for_checkpoint(self) -> dict[int, dict[str, Any]]:
        """A copy of the per-parameter state, in ``Optimizer.state_dict()["state"]`` form."""
        return cloned_state({index: state for index, state in self.state.items() if state})


def _cloned(value: Any) -> Any:
    """A tensor cloned where it is (detached), anything else deep-copied."""
    return value.detach().clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def cloned_model_state(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of a module's ``state_dict`` (its tensors cloned, anything else deep-copied): a module's extra state
    (``get_extra_state``, which TransformerEngine's layers and torch's quantization observers use) may be any
    picklable value, not a tensor."""
    return {name: _cloned(value) for name, value in state.items()}


def cloned_state(state: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """A copy of an optimizer's per-parameter state (its tensors cloned, its other values deep-copied): what
    ``Optimizer.state_dict()["state"]`` hands out holds the live tensors."""
    return {index: {k: _cloned(v) for k, v in values.items()} for index, values in state.items()}


def restore_optimizer_state(
    optimizer: torch.optim.Optimizer,
    saved: dict[int, dict[str, Any]],
    devices: dict[tuple[int, str], torch.device] | None = None,
    layouts: dict[tuple[int, str], Layout] | None = None,
) -> None:
    """Put ``saved`` (per-parameter state by position) into ``optimizer``, in place where shapes allow.

    A tensor the optimizer no longer holds is recreated on the device it came from (``devices``), or, for lack
    of it, where torch's ``Optimizer.load_state_dict`` puts it: on the parameter's device, but Adam's ``step`` on
    the CPU unless its group is fused or capturable (their kernels take it on the device: a CPU ``step`` fails
    there); a sharded one (``layouts``) as a DTensor around the saved shard.
    """
    on_device = {
        id(p)
        for group in optimizer.param_groups
        if group.get("fused") or group.get("capturable")
        for p in group["params"]
    }
    with torch.no_grad():
        for index, parameter in enumerate(_parameters(optimizer)):
            state = saved.get(index, {})
            if not state:
                optimizer.state.pop(parameter, None)
                continue
            live = optimizer.state[parameter]
            for key in [k for k in live if k not in state]:
                del live[key]
            for key, value in state.items():
                current = live.get(key)
                if isinstance(value, torch.Tensor):
                    if isinstance(current, torch.Tensor) and local(current).shape == value.shape:
                        local(current).copy_(value, non_blocking=value.is_pinned())
                    else:
                        on_cpu = key == "step" and id(parameter) not in on_device
                        default = torch.device("cpu") if on_cpu else local(parameter).device
                        device = (devices or {}).get((index, key), default)
                        live[key] = rebuild(value.detach().clone().to(device), (layouts or {}).get((index, key)))
                else:
                    live[key] = copy.deepcopy(value)


class ModelSnapshot:
    """The module's ``state_dict``, the optimizer's per-parameter state and the states of the objects the module
    keeps that save their own (:class:`UserStates`: an EMA as torch_ema or diffusers keep it) at a clean step, on
    the host.

    Before, the EMA was left out: a rollback put the weights back but the EMA kept the damaged updates averaged in
    (an LR ×1000 for one step on the digits MLP, rolled back at the next: the EMA's loss 3.0 after it against 0.38
    in the clean run, and still 1.5 against 0.20 forty steps later), and the halt saved it so.

    Buffers are allocated once and reused, so taking a snapshot every few steps costs a copy, not an allocation
    (the user states' copies are allocated anew).
    Restoring copies back *in place*, and the groups keep their current hyperparameters (the LR is the
    schedule's, not the snapshot's). Under FSDP2 each rank holds its own shards (``state_dict()`` is sharded
    there), so every rank must take and restore at the same step, as the watchdog does.
    """

    def __init__(self) -> None:
        self.step: int | None = None
        self.model: dict[str, torch.Tensor] = {}
        self.layouts: dict[str, Layout] = {}  # the sharded entries' DTensor layouts
        self.devices: dict[str, torch.device] = {}  # and their shards' devices
        self.names: list[str | None] = []  # the optimizer's parameters' names, by position
        self.optimizer = OptimizerState()
        self.user = UserStates([])
        self._plan = CopyPlan()  # the last take's pairing of the live state_dict and self.model

    def take(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Copy the module's ``state_dict``, the optimizer's per-parameter state and the user states."""
        self.user = UserStates.capture(module, model_only=True)
        with torch.no_grad():
            live = module.state_dict()
            if self._plan.copy([*live.values()], [*live]) or self._refill(live):  # into the last buffers, at once
                self.optimizer.capture(optimizer)
                self.step = step
                return
            self._plan.forget()
            # a module's extra state (get_extra_state) may be any value: deep-copied (before, a dict failed the
            # snapshot at fit start with "'dict' object has no attribute 'detach'")
            self.model = {name: _saved(t, self.model.get(name)) for name, t in live.items()}
            self.layouts = {name: layout for name, t in live.items() if (layout := layout_of(t)) is not None}
            self.devices = {name: local(live[name]).device for name in self.layouts}
        if self.layouts:
            names = {id(p): name for name, p in module.named_parameters()}
            self.names = [names.get(id(p)) for p in _parameters(optimizer)]
        self.optimizer.capture(optimizer)
        self.step = step

    def _refill(self, live: dict[str, torch.Tensor]) -> bool:
        """Copy ``live`` into the last take's buffers, checked (:func:`refill`), and remember the pairing."""
        if self.layouts or live.keys() != self.model.keys():
            return False
        buffers, tensors = [*self.model.values()], [*live.values()]
        if not refill(buffers, tensors):
            return False
        self._plan.remember(tensors, buffers, [*live])
        return True

    def restore(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Copy the snapshot back into ``module`` and ``optimizer``, in place."""
        if self.step is None:
            raise ValueError("there is no snapshot to restore yet")
        synchronize()
        with torch.no_grad():
            if self.layouts:  # sharded: each rank copies its own shards back into the live DTensors
                extra = {}
                for name, tensor in module.state_dict().items():
                    if isinstance(tensor, torch.Tensor):
                        copy_into(tensor, self.model[name])
                    else:
                        extra[name] = copy.deepcopy(self.model[name])
                if extra:
                    module.load_state_dict(extra, strict=False)
            else:  # a copy of what is no tensor (extra state): the module may keep what it is given, and change it
                module.load_state_dict(
                    {k: v if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in self.model.items()}
                )
        self.optimizer.restore(optimizer)
        self.user.restore()
        synchronize()

    def restore_buffers(self, module: torch.nn.Module, names: set[str] | None = None) -> None:
        """Copy only the snapshot's buffers (BatchNorm's running statistics and counts; ``names``: those of these
        names) back into ``module``, in place: parameters and optimizer state are left as they are."""
        if self.step is None:
            return
        copy_buffers(module, self.model, names)

    def substitute(self, checkpoint: dict[str, Any]) -> dict[str, Any] | None:
        """Put the snapshot's module and optimizer state into ``checkpoint``; return the live ones it replaced.

        The optimizer keeps its current param groups (LR, momentum): only the per-parameter state is replaced.

        Under FSDP2 the checkpoint's state is sharded (``DTensor``s, optimizer state keyed by parameter name) and
        each rank writes its own shards: the snapshot's shards go in as DTensors of the same layout, and nothing is
        returned (the live shards cannot travel in the callback's state, which only rank 0 writes). A parameter
        without optimizer state in the snapshot keeps its live entry (the distributed load expects one). A full
        checkpoint gathered on rank 0 (``save_distributed_checkpoint=False``) gets the snapshot's weights, gathered
        from every rank, and keeps the live optimizer state.
        """
        if self.layouts:
            synchronize()
            self._substitute_shards(checkpoint)
            return None
        optimizer_states = checkpoint.get("optimizer_states") or [{}]
        live = {"model": checkpoint["state_dict"], "optimizer": optimizer_states[0].get("state", {})}
        exported = self.export()
        checkpoint["state_dict"] = exported["model"]
        if checkpoint.get("optimizer_states"):
            checkpoint["optimizer_states"][0] = {**checkpoint["optimizer_states"][0], "state": exported["optimizer"]}
        return live

    def user_states(self) -> list[tuple[Any, Any]]:
        """Copies of the user states (:class:`UserStates`) as their owners' ``load_state_dict`` takes them, their
        tensors back on their devices: what a checkpoint that carries this snapshot carries of them."""
        return [(owner, _device_tree(state, self.user.device_of)) for owner, state in self.user.saved]

    def export(self) -> dict[str, Any]:
        """A copy of the snapshot as a checkpoint holds state: ``{"model": state_dict, "optimizer": per-parameter
        state by position}`` (not sharded: a sharded snapshot's shards go into a checkpoint by :meth:`substitute`)."""
        synchronize()
        return {"model": cloned_model_state(self.model), "optimizer": self.optimizer.for_checkpoint()}

    def _substitute_shards(self, checkpoint: dict[str, Any]) -> None:
        model = checkpoint["state_dict"]
        if not any(is_dtensor(t) for t in model.values()):
            # a full checkpoint (ModelParallelStrategy(save_distributed_checkpoint=False)): rank 0 holds whole
            # tensors, gathered from every rank's shard; the optimizer's state stays the live one there
            for name, saved in self.model.items():  # the same order on every rank: one gather each
                if not isinstance(saved, torch.Tensor):  # a module's extra state
                    model[name] = copy.deepcopy(saved)
                    continue
                layout = self.layouts.get(name)
                whole = saved if layout is None else plain(rebuild(saved.to(self.devices[name]), layout))
                if name in model:
                    model[name] = whole.detach().clone().to(model[name].device)
            return
        for name, live in model.items():
            saved = self.model[name]
            model[name] = _like(live, saved) if isinstance(saved, torch.Tensor) else copy.deepcopy(saved)
        for optimizer_state in (checkpoint.get("optimizer_states") or [])[:1]:
            state = optimizer_state.get("state", {})
            for index, values in self.optimizer.state.items():
                key = self.names[index] if self.names and any(isinstance(k, str) for k in state) else index
                if not values:
                    # no state in the snapshot (taken before the first update): the live entry stays, as the
                    # distributed load expects one per parameter (skipped steps did not move it)
                    continue
                if key not in state:
                    raise RuntimeError(
                        f"the checkpoint's optimizer state has no entry {key!r} for the snapshot's parameter "
                        f"{index}; a checkpoint written during an incident must hold the snapshot's state"
                    )
                entry = state[key]
                state[key] = {
                    k: _like(entry.get(k), v) if isinstance(v, torch.Tensor) else v for k, v in values.items()
                }


def _like(live: Any, saved: torch.Tensor) -> torch.Tensor:
    """A copy of the host copy ``saved`` shaped as the checkpoint's ``live`` entry: a DTensor of its layout around
    the saved shard, or a plain tensor on its device."""
    if not isinstance(live, torch.Tensor):
        return saved.clone()
    if is_dtensor(live):
        return rebuild(saved.clone().to(local(live).device), layout_of(live))
    return saved.clone().to(live.device)


@dataclass
class RngState:
    """The global random number generators (Python, NumPy, torch CPU and CUDA) and given ``torch.Generator``s."""

    python: Any
    numpy: Any
    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] | None
    generators: list[tuple[torch.Generator, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def capture(cls, generators: Iterable[torch.Generator] = ()) -> RngState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(
            python=random.getstate(),
            numpy=np.random.get_state(),
            torch_cpu=torch.get_rng_state(),
            torch_cuda=cuda,
            generators=[(g, g.get_state()) for g in _unique(generators)],
        )

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda is not None:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        for generator, state in self.generators:
            generator.set_state(state)


def loader_generators(loaders: Any) -> list[torch.Generator]:
    """The ``torch.Generator``s of data loaders: their own, and those their sampler, their batch sampler (and its
    sampler) and their dataset (and a ``Subset``'s dataset) keep as attributes (a dataset that augments with its
    own generator). Other random state there (a NumPy generator, a pass counter) is not restored."""
    found: list[torch.Generator] = []
    for loader in _flatten(loaders):
        batch_sampler = getattr(loader, "batch_sampler", None)
        owners = [loader, getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)]
        dataset = getattr(loader, "dataset", None)
        for _ in range(3):  # a Subset of a Subset of a dataset; through __dict__ only, not a proxying __getattr__
            owners.append(dataset)
            dataset = _attributes(dataset).get("dataset")
        for owner in owners:
            found.extend(v for v in _attributes(owner).values() if isinstance(v, torch.Generator))
    return _unique(found)


def _attributes(owner: Any) -> dict[str, Any]:
    """``owner``'s own attributes (its ``__dict__``), without calling its ``__getattr__`` (a dataset that proxies
    unknown names to its columns or to a remote store raises, or fetches, there)."""
    attributes = getattr(owner, "__dict__", None) if owner is not None else None
    return attributes if isinstance(attributes, dict) else {}


def attribute_generators(owner: Any) -> list[torch.Generator]:
    """The ``torch.Generator``s an object keeps as attributes (a ``LightningDataModule`` that seeds the loaders it
    builds with its own generator), and those of loaders it keeps; empty for ``None``."""
    if owner is None:
        return []
    values = list(vars(owner).values()) if hasattr(owner, "__dict__") else []
    found = [v for v in values if isinstance(v, torch.Generator)]
    return _unique(found + loader_generators([v for v in values if hasattr(v, "sampler")]))


def _flatten(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return [x for value in loaders.values() for x in _flatten(value)]
    if isinstance(loaders, (list, tuple)):
        return [x for value in loaders for x in _flatten(value)]
    return [loaders]


def _unique(items: Iterable[Any]) -> list[Any]:
    seen: dict[int, Any] = {}
    for item in items:
        seen.setdefault(id(item), item)
    return list(seen.values())


@contextlib.contextmanager
def evaluation_kept(module: torch.nn.Module) -> Iterator[None]:
    """Inside, an evaluation may move ``module``'s buffers (BatchNorm's statistics in train mode) and the states of
    its torchmetrics ``Metric``s (one updated in ``training_step``); after, they are as they were
    (:class:`TrainingSnapshot`'s copies of them)."""
    buffers = _Tensors.capture(module, "buffers")
    metrics = _MetricStates.capture(module)
    try:
        yield
    finally:
        buffers.restore()
        metrics.restore()


@dataclass
class _MetricStates:
    """Copies of the states of ``module``'s torchmetrics ``Metric``s; restorable more than once."""

    saved: list[tuple[Any, dict[str, Any]]]

    @classmethod
    def capture(cls, module: torch.nn.Module) -> _MetricStates:
        return cls([(m, copy.deepcopy(values)) for m, values in metric_states(module)])

    def restore(self) -> None:
        for metric, values in self.saved:
            for name, value in values.items():
                setattr(metric, name, copy.deepcopy(value))


@dataclass
class UserStates:
    """Copies of the states of the objects ``module``'s submodules keep as attributes that save and restore
    themselves (``state_dict``/``load_state_dict``) without being a ``Module``: an EMA as torch_ema's
    ``ExponentialMovingAverage`` or diffusers' ``EMAModel`` keeps it, updated in ``on_before_zero_grad`` or
    ``optimizer_step``, hooks the finder's steps run (before, it kept the sweep's diverged weights). Optimizers and
    LR schedulers have their own copies; the tensors are kept on the host. Restorable more than once.

    A Lightning callback the module keeps a reference to is never one of them (see :func:`_stateful`). With
    ``model_only`` (the watchdog's rollback target) the objects that are no part of the model's training state are
    left out too: a data module the module keeps a reference to and anything iterable (a data loader that saves its
    position: a rollback does not rewind the data, while the finder's restore does)."""

    saved: list[tuple[Any, Any]]
    device_of: Any = None  # maps the device a tensor came from to the one it goes back to (another rank's copy)

    @classmethod
    def capture(cls, module: torch.nn.Module, model_only: bool = False) -> UserStates:
        states = [(owner, owner.state_dict()) for owner in stateful_owners(module, model_only)]
        # an empty state has nothing to put back (a disabled GradScaler's refuses to load)
        return cls([(owner, host_tree(state)) for owner, state in states if state])

    def restore(self) -> None:
        for owner, state in self.saved:
            owner.load_state_dict(_device_tree(state, self.device_of))


def stateful_owners(module: torch.nn.Module, model_only: bool = False) -> list[Any]:
    """The objects ``module``'s submodules keep as attributes that save and restore their own state (see
    :class:`UserStates`), each once, in the order of ``module.modules()``."""
    found = [value for submodule in module.modules() for value in vars(submodule).values() if _stateful(value)]
    if model_only:
        found = [value for value in found if not _outside_the_model(value)]
    return _unique(found)


def _outside_the_model(value: Any) -> bool:
    """A Lightning data module, or an iterable (a data loader, a sampler): state that a rollback of the model must
    not touch."""
    return hasattr(value, "train_dataloader") or hasattr(value, "__iter__")


_PLAIN = frozenset({type(None), bool, int, float, str, bytes, dict, list, tuple, set, collections.OrderedDict})
"""What most of a module's attributes are (its flags, and the dicts of its parameters, buffers, children and hooks):
told apart at once, for the snapshot asks every attribute of every submodule at every take."""


def _stateful(value: Any) -> bool:
    """An object that saves and restores its own state and that nothing else in the snapshot restores.

    Never a Lightning callback the module keeps a reference to (``self.watchdog``, to call ``rebaseline``): its
    state is Lightning's to save and load, and loading it mid-fit is a resume to it (the watchdog's rollback would
    undo its own budget; the finder's restore would reset its baselines to the sweep's start)."""
    if type(value) in _PLAIN or isinstance(value, (type, torch.nn.Module, torch.Tensor, torch.optim.Optimizer)):
        return False
    if isinstance(value, callback_bases()):
        return False
    if isinstance(value, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
        return False
    return callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None))


@dataclass(frozen=True)
class _OnDevice:
    """A host copy of a tensor (of a DTensor, this rank's shard), the device it goes back to and the DTensor's layout.

    The layout puts a DTensor back as one: an EMA of FSDP2's parameters keeps DTensors, and given its shards as plain
    tensors (before) its next update failed ("aten.sub.Tensor got mixed torch.Tensor and DTensor"), after the
    finder's sweep and at the watchdog's first rollback."""

    host: torch.Tensor
    device: torch.device
    layout: Layout | None = None


def host_tree(value: Any) -> Any:
    """``value`` (a state dict: dicts, lists and tuples of tensors and plain values) copied, its tensors to the host."""
    if isinstance(value, torch.Tensor):
        return _OnDevice(to_host(value), local(value).device, layout_of(value))
    if isinstance(value, dict):
        return type(value)((key, host_tree(item)) for key, item in value.items())
    if type(value) in (list, tuple):
        return type(value)(host_tree(item) for item in value)
    return copy.deepcopy(value)


def _device_tree(value: Any, device_of: Any = None) -> Any:
    """A fresh copy of a :func:`host_tree` copy, its tensors back on their devices (``device_of(device)``: on
    another, as another rank's copy goes onto this rank's device)."""
    if isinstance(value, _OnDevice):
        shard = value.host.to(value.device if device_of is None else device_of(value.device), copy=True)
        return rebuild(shard, value.layout)
    if isinstance(value, dict):
        return type(value)((key, _device_tree(item, device_of)) for key, item in value.items())
    if type(value) in (list, tuple):
        return type(value)(_device_tree(item, device_of) for item in value)
    return copy.deepcopy(value)


@dataclass
class _Tensors:
    """Tensors owned by modules, by ``(module, name)``, with one host copy per distinct tensor."""

    owners: list[tuple[torch.nn.Module, str, torch.Tensor]]
    saved: dict[int, torch.Tensor]

    @classmethod
    def capture(cls, module: torch.nn.Module, kind: str) -> _Tensors:
        owners, saved = [], {}
        for submodule in module.modules():
            named = submodule.named_parameters if kind == "parameters" else submodule.named_buffers
            for name, tensor in named(recurse=False):
                if tensor is None:
                    continue
                owners.append((submodule, name, tensor))
                if id(tensor) not in saved:
                    saved[id(tensor)] = to_host(tensor)
        return cls(owners, saved)

    def restore(self) -> None:
        done: set[int] = set()
        for owner, name, tensor in self.owners:
            if id(tensor) not in done:
                copy_into(tensor, self.saved[id(tensor)])
                done.add(id(tensor))
            if getattr(owner, name, None) is not tensor:
                setattr(owner, name, tensor)


@dataclass
class TrainingSnapshot:
    """Everything the sweep may change; :meth:`restore` puts it back exactly, and can be called repeatedly."""

    parameters: _Tensors
    buffers: _Tensors
    grads: list[tuple[torch.Tensor, torch.Tensor | None]]
    modes: list[tuple[torch.nn.Module, bool]]
    optimizers: list[tuple[torch.optim.Optimizer, OptimizerState]]
    schedulers: list[tuple[Any, dict[str, Any]]]
    scaler: tuple[Any, dict[str, Any]] | None
    rng: RngState
    metrics: _MetricStates = field(default_factory=lambda: _MetricStates([]))
    user_states: UserStates = field(default_factory=lambda: UserStates([]))

    @classmethod
    def capture(cls, trainer: Any, module: torch.nn.Module, loaders: Any = None) -> TrainingSnapshot:
        """Snapshot ``module``, ``trainer``'s optimizers, schedulers and GradScaler, and the RNGs."""
        parameters = _Tensors.capture(module, "parameters")
        grads = [(p, None if p.grad is None else to_host(p.grad)) for _, _, p in parameters.owners]
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        snapshot = cls(
            parameters=parameters,
            buffers=_Tensors.capture(module, "buffers"),
            grads=grads,
            modes=[(m, m.training) for m in module.modules()],
            optimizers=[(o, OptimizerState().capture(o, groups=True)) for o in trainer.optimizers],
            schedulers=[(c.scheduler, copy.deepcopy(c.scheduler.state_dict())) for c in trainer.lr_scheduler_configs],
            scaler=(scaler, scaler.state_dict()) if scaler is not None and hasattr(scaler, "state_dict") else None,
            rng=RngState.capture(loader_generators(loaders)),
            metrics=_MetricStates.capture(module),
            user_states=UserStates.capture(module),
        )
        synchronize()
        return snapshot

    def restore(self) -> None:
        """Put everything back; the snapshot stays valid for another restore."""
        self.parameters.restore()
        self.buffers.restore()
        for param, grad in self.grads:
            if grad is None:
                param.grad = None
            elif grad.layout != torch.strided:
                param.grad = grad.to(param.device, copy=True)  # sparse: no in-place copy into a dense tensor
            elif param.grad is not None and local(param.grad).shape == grad.shape and param.grad.layout == grad.layout:
                copy_into(param.grad, grad)
            else:  # a sharded parameter's gradient is laid out as the parameter (FSDP2)
                param.grad = rebuild(grad.to(local(param).device, copy=True), layout_of(param))
        for module, training in self.modes:
            module.training = training
        for optimizer, saved in self.optimizers:
            saved.restore(optimizer)
        for scheduler, state in self.schedulers:
            scheduler.load_state_dict(copy.deepcopy(state))
        if self.scaler is not None:
            scaler, state = self.scaler
            reset_scaler_step_state(scaler)
            if state:
                scaler.load_state_dict(state)
        self.metrics.restore()
        self.user_states.restore()
        self.rng.restore()
        synchronize()
