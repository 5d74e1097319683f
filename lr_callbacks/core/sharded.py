"""Sharded training seen from one rank: a DTensor's local shard, a DTensor rebuilt around one, the strategy's kind.

Under FSDP2 (``torch.distributed.fsdp.fully_shard``, which Lightning's ``ModelParallelStrategy`` applies in
``configure_model``) the parameters, their gradients and the optimizer's state are ``DTensor``s: each rank holds
a shard (its *local tensor*), and a torch operation on a DTensor is either a collective or not supported at all
(``c10d.allreduce_`` has no sharding strategy). What the callbacks do on one rank (copy to the host, copy back in
place, sum squares) they do on the local shard, and the few collectives they need they issue themselves, on
plain tensors.

Lightning's older ``FSDPStrategy`` (FSDP1) keeps plain tensors that are shards of flat parameters: nothing in
the tensor says so, the strategy does (:func:`plain_shard_group`). That path is written against the same
helpers but cannot be tested on the CPU (FSDP1 refuses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Layout",
    "all_plain",
    "is_dtensor",
    "layout_of",
    "local",
    "plain",
    "plain_shard_group",
    "rebuild",
    "strategy_kind",
]


_PLAIN = (torch.Tensor, torch.nn.Parameter)
_PLAIN_TYPES = frozenset(_PLAIN)
_DTENSOR: list[type | None] = []  # the DTensor class (None without torch.distributed), found at the first call


def _dtensor_type() -> type | None:
    if not _DTENSOR:
        if torch.distributed.is_available():
            from torch.distributed.tensor import DTensor

            _DTENSOR.append(DTensor)
        else:
            _DTENSOR.append(None)
    return _DTENSOR[0]


def is_dtensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (a parameter, gradient or optimizer state under FSDP2).

    Called per tensor on every step (the gradient norm, the update ratio), so the common case is one type test:
    a plain ``Tensor`` or ``Parameter`` is not a DTensor (a DTensor parameter's type is ``DTensor``).
    """
    if type(tensor) in _PLAIN:
        return False
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def all_plain(tensors: list[torch.Tensor]) -> bool:
    """Whether every one of ``tensors`` is a plain ``Tensor`` or ``Parameter`` (none is a DTensor, or any other
    tensor subclass): one type test per distinct type, for the per-step passes over a model's tensors.

    >>> all_plain([torch.ones(2), torch.nn.Parameter(torch.ones(2))]), all_plain([])
    (True, True)
    """
    return set(map(type, tensors)) <= _PLAIN_TYPES


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (sharing its storage: an in-place copy into it writes the DTensor), or
    ``tensor`` itself when it is a plain tensor.

    >>> t = torch.ones(3)
    >>> local(t) is t
    True
    """
    if is_dtensor(tensor):
        with torch.no_grad():  # to_local() outside autograd is the local tensor itself, not a view of it
            result: torch.Tensor = tensor.to_local()  # type: ignore[attr-defined]
        return result
    return tensor


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor with the whole value of ``tensor``: a DTensor's ``full_tensor()`` (a collective if it is
    sharded or partial, none if replicated), a plain tensor as is. For small values such as a loss.

    >>> plain(torch.tensor(2.0))
    tensor(2.)
    """
    if is_dtensor(tensor):
        result: torch.Tensor = tensor.full_tensor()  # type: ignore[attr-defined]
        return result
    return tensor


@dataclass(frozen=True)
class Layout:
    """How a DTensor is laid out over its device mesh: enough to rebuild it around a new local shard."""

    mesh: Any
    placements: tuple[Any, ...]
    shape: torch.Size
    stride: tuple[int, ...]


def layout_of(tensor: torch.Tensor) -> Layout | None:
    """The :class:`Layout` of a DTensor, ``None`` for a plain tensor."""
    if not is_dtensor(tensor):
        return None
    spec: Any = tensor
    return Layout(spec.device_mesh, tuple(spec.placements), tensor.shape, tuple(tensor.stride()))


def rebuild(shard: torch.Tensor, layout: Layout | None) -> torch.Tensor:
    """A DTensor laid out as ``layout`` whose local tensor is ``shard`` (no copy, no collective), or ``shard``
    itself without a layout."""
    if layout is None:
        return shard
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        shard, layout.mesh, layout.placements, run_check=False, shape=layout.shape, stride=layout.stride
    )


def shard_groups(tensor: torch.Tensor) -> tuple[Any, ...]:
    """The process groups over which ``tensor``'s local values are summed into the whole: one per mesh dimension
    that shards it (``Shard``), none for a plain tensor or a replicated dimension."""
    layout = layout_of(tensor)
    if layout is None:
        return ()
    return tuple(layout.mesh.get_group(dim) for dim, p in enumerate(layout.placements) if p.is_shard())


def strategy_kind(strategy: Any) -> str:
    """``"fsdp2"`` (``ModelParallelStrategy``), ``"fsdp"`` (``FSDPStrategy``, FSDP1), ``"deepspeed"``, or
    ``"replicated"`` (every other strategy: one device, DDP), from the class names so that both Lightning
    namespaces and subclasses count.

    >>> strategy_kind(object())
    'replicated'
    """
    names = [cls.__name__ for cls in type(strategy).__mro__]
    if "DeepSpeedStrategy" in names:
        return "deepspeed"
    if "ModelParallelStrategy" in names:
        return "fsdp2"
    if "FSDPStrategy" in names:
        return "fsdp"
    return "replicated"


def plain_shard_group(strategy: Any) -> Any:
    """The process group over which plain gradients are shards under ``strategy`` (FSDP1's flat parameters are
    sharded over all ranks with its default ``FULL_SHARD``), or ``None`` where a plain gradient is whole.

    Untested: FSDP1 runs on GPUs only. Under ``HYBRID_SHARD`` the shards span one node, not the world, and this
    group would count each node's norm once per node.
    """
    if strategy_kind(strategy) == "fsdp" and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.group.WORLD
    return None
