"""The global gradient norm, read by the finder (per sweep step) and the watchdog (per step)."""

from __future__ import annotations

import torch

__all__ = ["global_norm"]


def global_norm(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The 2-norm of all ``tensors`` together, computed in float32, as a scalar on ``device`` (0 without any).

    One ``torch._foreach_norm`` per device (usually one). Float32 accumulation keeps the norm of half-precision
    gradients finite where they are (``torch.nn.utils.get_total_norm`` returns inf for fp16 gradients whose
    norm passes 65504, a false "non-finite" for the watchdog), while a NaN or inf gradient still gives NaN/inf.

    >>> half = [torch.full((10_000,), 1000.0, dtype=torch.float16)]
    >>> float(global_norm(half, torch.device("cpu"))), float(torch.nn.utils.get_total_norm(half))
    (99999.546875, inf)
    """
    if not tensors:
        return torch.zeros((), device=device)
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_device.setdefault(tensor.device, []).append(tensor)
    parts = []
    for where, group in by_device.items():
        part = torch.stack(torch._foreach_norm(group, 2.0, dtype=torch.float32))
        parts.append(part if where == device else part.to(device))
    return torch.linalg.vector_norm(parts[0] if len(parts) == 1 else torch.cat(parts), 2.0)
