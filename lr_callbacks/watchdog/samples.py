"""The watchdog's optional per-sample signal, torch side: how a module reports its per-sample losses, and the
summary of them the watchdog reads back with its other signals (see :class:`~lr_callbacks.DivergenceWatchdog`).

Nothing here imports Lightning, and nothing reads a value back to the host.
"""

from __future__ import annotations

from typing import Any

import torch

from lr_callbacks.core.sharded import plain

__all__ = ["report_sample_losses", "sample_statistics", "take_sample_losses"]

_ATTRIBUTE = "_lr_callbacks_sample_losses"


def report_sample_losses(module: Any, losses: torch.Tensor) -> None:
    """Hand the current batch's per-sample losses to :class:`~lr_callbacks.DivergenceWatchdog`: call it in
    ``training_step``, once per batch, with one loss per sample (``reduction="none"``).

    The watchdog then also skips a batch dominated by samples whose loss is an outlier against the clean
    per-sample distribution (mislabelled or corrupted samples), as bad data. The losses are detached and kept
    on the module until the watchdog reads them (before the backward pass); without a watchdog, or when this is
    never called, nothing changes. A second call in the same ``training_step`` replaces the first.

    Args:
        module: the ``LightningModule`` (``self`` in ``training_step``).
        losses: one loss per sample of the batch, a 1-D floating-point tensor, e.g.
            ``F.cross_entropy(logits, y, reduction="none")``; for a sequence model, the mean over each sequence's
            tokens, ``per_token.mean(dim=1)``.

    Raises:
        TypeError: ``losses`` is not a floating-point tensor.
        ValueError: ``losses`` is not 1-D, or is empty.

    >>> module = torch.nn.Linear(2, 3)
    >>> logits, y = module(torch.ones(4, 2)), torch.tensor([0, 1, 2, 0])
    >>> report_sample_losses(module, torch.nn.functional.cross_entropy(logits, y, reduction="none"))
    >>> take_sample_losses(module).shape
    torch.Size([4])
    """
    if not isinstance(losses, torch.Tensor) or not losses.is_floating_point():
        got = f"a {losses.dtype} tensor" if isinstance(losses, torch.Tensor) else repr(type(losses).__name__)
        raise TypeError(
            f"report_sample_losses: `losses` must be a floating-point tensor of one loss per sample, got {got}; "
            "pass the loss computed with reduction='none' (e.g. F.cross_entropy(logits, y, reduction='none'))"
        )
    if losses.dim() != 1 or losses.numel() == 0:
        raise ValueError(
            f"report_sample_losses: `losses` must be 1-D, one loss per sample of the batch, got shape "
            f"{tuple(losses.shape)}; compute the loss with reduction='none' and, for a loss per token or per "
            "pixel, average it over each sample (e.g. per_token.mean(dim=1))"
        )
    setattr(module, _ATTRIBUTE, losses.detach())


def take_sample_losses(module: Any) -> torch.Tensor | None:
    """The per-sample losses reported since the last call (removed from the module), or ``None``."""
    # report_sample_losses's setattr keeps the tensor in the instance's __dict__ (a Module's too): read there, the
    # steps without a report (two reads a step) raise no AttributeError from a Module's __getattr__ (3 µs each)
    own = getattr(module, "__dict__", None)
    losses: torch.Tensor | None = own.get(_ATTRIBUTE) if own is not None else getattr(module, _ATTRIBUTE, None)
    if losses is not None:
        delattr(module, _ATTRIBUTE)
    return losses


def sample_statistics(losses: list[torch.Tensor], limit: float) -> torch.Tensor:
    """``[largest, outliers, samples]`` of the step's per-sample losses (its micro-batches together) as a
    float32 tensor on their device: the largest loss, how many are above ``limit`` and how many there are.
    Computed on the device: nothing is read back."""
    values = torch.cat([plain(v).reshape(-1).float() for v in losses])
    outliers = (values > limit).sum().float()
    count = torch.full((), float(values.numel()), device=values.device)
    return torch.stack([values.max(), outliers, count])
