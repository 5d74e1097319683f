"""Snapshot and exact restore of everything the finder's sweep touches, held in host memory.

What is saved, and how it comes back:

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

Nothing is written to disk. CUDA tensors are copied into pinned host memory without blocking, with one
synchronisation at the end, so a snapshot never doubles GPU memory. The loop counters (``global_step``,
epoch and batch progress) are not saved because the sweep never moves them: it drives the steps itself,
outside Lightning's loops.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

__all__ = ["RngState", "Snapshot", "loader_generators"]


def _to_host(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach()
    if tensor.device.type == "cuda":
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor, non_blocking=True)
    return tensor.clone()


def _copy_into(live: torch.Tensor, saved: torch.Tensor) -> None:
    with torch.no_grad():
        live.copy_(saved, non_blocking=saved.is_pinned())


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


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
    """The ``torch.Generator``s of data loaders (their own, their sampler's, their batch sampler's sampler's)."""
    found: list[torch.Generator] = []
    for loader in _flatten(loaders):
        sampler = getattr(loader, "sampler", None)
        batch_sampler = getattr(loader, "batch_sampler", None)
        for owner in (loader, sampler, getattr(batch_sampler, "sampler", None)):
            generator = getattr(owner, "generator", None)
            if isinstance(generator, torch.Generator):
                found.append(generator)
    return _unique(found)


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
                    saved[id(tensor)] = _to_host(tensor)
        return cls(owners, saved)

    def restore(self) -> None:
        done: set[int] = set()
        for owner, name, tensor in self.owners:
            if id(tensor) not in done:
                _copy_into(tensor, self.saved[id(tensor)])
                done.add(id(tensor))
            if getattr(owner, name, None) is not tensor:
                setattr(owner, name, tensor)


def _save_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return (value, _to_host(value))
    return (None, copy.deepcopy(value))


def _restored_value(live: Any, saved: tuple[Any, Any]) -> Any:
    original, value = saved
    if original is None:
        return copy.deepcopy(value)
    if original.shape == value.shape:
        _copy_into(original, value)
        return original
    return value.to(original.device)


@dataclass
class _Optimizer:
    optimizer: torch.optim.Optimizer
    groups: list[dict[str, Any]]  # the live group dicts
    group_values: list[dict[str, Any]]
    state: dict[torch.Tensor, dict[str, Any]]  # param -> {key: saved value}

    @classmethod
    def capture(cls, optimizer: torch.optim.Optimizer) -> _Optimizer:
        groups = list(optimizer.param_groups)
        values = [{k: _save_value(v) for k, v in g.items() if k != "params"} for g in groups]
        state = {p: {k: _save_value(v) for k, v in s.items()} for p, s in optimizer.state.items()}
        return cls(optimizer, groups, values, state)

    def restore(self) -> None:
        optimizer = self.optimizer
        optimizer.param_groups[:] = self.groups
        for group, values in zip(self.groups, self.group_values):
            for key in [k for k in group if k != "params" and k not in values]:
                del group[key]
            for key, saved in values.items():
                group[key] = _restored_value(group.get(key), saved)
        for param in [p for p in optimizer.state if p not in self.state]:
            del optimizer.state[param]
        for param, values in self.state.items():
            optimizer.state[param] = {k: _restored_value(None, saved) for k, saved in values.items()}


def _reset_scaler_step_state(scaler: Any) -> None:
    # A sweep that raised between ``scaler.unscale_`` and ``scaler.update`` leaves the optimizer marked as
    # "unscaled", and the next real step would fail with "unscale_() has already been called". torch has no
    # public way to clear that mark; the bookkeeping is a defaultdict that ``update()`` itself empties.
    states = getattr(scaler, "_per_optimizer_states", None)
    if isinstance(states, dict):
        states.clear()


def _metric_states(module: torch.nn.Module) -> list[tuple[Any, dict[str, Any]]]:
    # torchmetrics ``Metric``s accumulate in ``update()``, which a sweep through ``training_step`` calls.
    # Their state is public (``metric_state``), but the two counters kept beside it (``_update_count``,
    # ``_computed``, which ``compute()`` reads) have no public setter. Duck-typed, so torchmetrics stays
    # optional. Metric states are small (sums, counts), so they are deep-copied where they live.
    saved = []
    for submodule in module.modules():
        if isinstance(getattr(type(submodule), "metric_state", None), property) and hasattr(submodule, "_computed"):
            state = cast(dict[str, Any], submodule.metric_state)
            names = [*state, "_update_count", "_computed"]
            saved.append((submodule, {name: copy.deepcopy(getattr(submodule, name)) for name in names}))
    return saved


@dataclass
class Snapshot:
    """Everything the sweep may change; :meth:`restore` puts it back exactly, and can be called repeatedly."""

    parameters: _Tensors
    buffers: _Tensors
    grads: list[tuple[torch.Tensor, torch.Tensor | None]]
    modes: list[tuple[torch.nn.Module, bool]]
    optimizers: list[_Optimizer]
    schedulers: list[tuple[Any, dict[str, Any]]]
    scaler: tuple[Any, dict[str, Any]] | None
    rng: RngState
    metrics: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def capture(cls, trainer: Any, module: torch.nn.Module, loaders: Any = None) -> Snapshot:
        """Snapshot ``module``, ``trainer``'s optimizers, schedulers and GradScaler, and the RNGs."""
        parameters = _Tensors.capture(module, "parameters")
        grads = [(p, None if p.grad is None else _to_host(p.grad)) for _, _, p in parameters.owners]
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        snapshot = cls(
            parameters=parameters,
            buffers=_Tensors.capture(module, "buffers"),
            grads=grads,
            modes=[(m, m.training) for m in module.modules()],
            optimizers=[_Optimizer.capture(o) for o in trainer.optimizers],
            schedulers=[(c.scheduler, copy.deepcopy(c.scheduler.state_dict())) for c in trainer.lr_scheduler_configs],
            scaler=(scaler, scaler.state_dict()) if scaler is not None and hasattr(scaler, "state_dict") else None,
            rng=RngState.capture(loader_generators(loaders)),
            metrics=_metric_states(module),
        )
        _synchronize()
        return snapshot

    def restore(self) -> None:
        """Put everything back; the snapshot stays valid for another restore."""
        self.parameters.restore()
        self.buffers.restore()
        for param, grad in self.grads:
            if grad is None:
                param.grad = None
            elif param.grad is not None and param.grad.shape == grad.shape:
                _copy_into(param.grad, grad)
            else:
                param.grad = grad.to(param.device)
        for module, training in self.modes:
            module.training = training
        for optimizer in self.optimizers:
            optimizer.restore()
        for scheduler, state in self.schedulers:
            scheduler.load_state_dict(copy.deepcopy(state))
        if self.scaler is not None:
            scaler, state = self.scaler
            _reset_scaler_step_state(scaler)
            if state:
                scaler.load_state_dict(state)
        for metric, values in self.metrics:
            for name, value in values.items():
                setattr(metric, name, copy.deepcopy(value))
        self.rng.restore()
        _synchronize()
