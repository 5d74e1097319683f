"""The global gradient norm, read by the finder (per sweep step) and the watchdog (per step), also from shards."""

from __future__ import annotations

from typing import Any

import torch

from lr_callbacks.core.compat import flatten
from lr_callbacks.core.sharded import is_dtensor, local, plain, shard_groups

__all__ = ["global_norm"]


def global_norm(tensors: list[torch.Tensor], device: torch.device, shard_group: Any = None) -> torch.Tensor:
    """The 2-norm of all ``tensors`` together, computed in float32, as a scalar on ``device`` (0 without any).

    ``‖g‖ = sqrt(Σ_plain ‖t‖² + Σ_sharded all_reduce(Σ_local ‖shard‖²))``: a plain tensor is whole on this rank;
    a ``DTensor`` (FSDP2) contributes the squared norm of its local shard, summed over the ranks that shard it
    with one ``all_reduce`` per distinct set of process groups (one under FSDP2 with data parallelism only), so
    every rank gets the norm of the whole gradient, the same value as an unsharded run up to float error. With
    ``shard_group`` (FSDP1, whose flat parameters are plain shards) the plain tensors are shards over that group.

    One ``torch._foreach_norm`` per device (usually one); a lone tensor, and small float32 CPU tensors as one flat
    copy (:data:`FLAT_CPU_LIMIT`), with one reduction: the same value up to float rounding. Float32 accumulation
    keeps the norm of half-precision gradients finite where they are (``torch.nn.utils.get_total_norm`` returns
    inf for fp16 gradients whose norm passes 65504, a false "non-finite" for the watchdog), while a NaN or inf
    gradient still gives NaN/inf.

    >>> half = [torch.full((10_000,), 1000.0, dtype=torch.float16)]
    >>> float(global_norm(half, torch.device("cpu"))), float(torch.nn.utils.get_total_norm(half))
    (99999.546875, inf)
    """
    if not tensors:
        return torch.zeros((), device=device)
    if shard_group is None and not any(map(is_dtensor, tensors)):  # nothing sharded: the unsharded computation
        if len(tensors) == 1 or _flat_on_cpu(tensors):  # one reduction
            whole = tensors[0] if len(tensors) == 1 else flatten(tensors)
            norm = torch.linalg.vector_norm(whole, 2.0, dtype=torch.float32)
            return norm if norm.device == device else norm.to(device)
        return torch.linalg.vector_norm(_norms(tensors, device), 2.0)
    by_groups: dict[tuple[Any, ...], list[torch.Tensor]] = {}
    for tensor in tensors:
        if is_dtensor(tensor) and any(p.is_partial() for p in tensor.placements):  # type: ignore[attr-defined]
            tensor = plain(tensor)  # partial sums: reduce them first (not what FSDP2 leaves in .grad)
        groups = shard_groups(tensor) if is_dtensor(tensor) else ((shard_group,) if shard_group is not None else ())
        by_groups.setdefault(groups, []).append(local(tensor))
    squares = []
    for groups, group in by_groups.items():
        square = torch.linalg.vector_norm(_norms(group, device), 2.0).square()
        for process_group in groups:
            torch.distributed.all_reduce(square, op=torch.distributed.ReduceOp.SUM, group=process_group)
        squares.append(square)
    total = squares[0] if len(squares) == 1 else torch.stack(squares).sum()
    return total.sqrt()


FLAT_CPU_LIMIT = 1 << 22
"""Float32 CPU tensors of at most this many elements in all are normed as one flat copy (16 MiB at most)."""


def _flat_on_cpu(tensors: list[torch.Tensor]) -> bool:
    """Whether to norm ``tensors`` as one flat copy: on the CPU ``_foreach_norm`` launches one reduction per tensor
    (about 2 µs each, 60 µs for a small GPT's 30 gradients), where a copy and one reduction cost less up to a few
    million elements. On an accelerator ``_foreach_norm`` is one fused kernel and stays."""
    if len(tensors) < 2:
        return False
    total = 0
    for tensor in tensors:
        if not tensor.is_cpu or tensor.dtype != torch.float32:
            return False
        total += tensor.numel()
    return total <= FLAT_CPU_LIMIT


def _norms(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The float32 norms of plain ``tensors``, on ``device``: one ``_foreach_norm`` per device they are on."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_device.setdefault(tensor.device, []).append(tensor)
    parts = []
    for where, group in by_device.items():
        part = torch.stack(torch._foreach_norm(group, 2.0, dtype=torch.float32))
        parts.append(part if where == device else part.to(device))
    return parts[0] if len(parts) == 1 else torch.cat(parts)
