"""The watchdog's snapshots and its clean reference batch: a ring of :class:`~lr_callbacks.core.snapshot.ModelSnapshot`
taken at clean steps, each kept with the batch of its step, and the probe that tells damaged weights from bad data.

Nothing here imports Lightning; the callback passes in the module, the optimizer and the trainer's strategy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from lr_callbacks.core.snapshot import ModelSnapshot
from lr_callbacks.watchdog.device import all_reduce_mean

__all__ = ["SnapshotRing", "reference_loss"]


class SnapshotRing:
    """Snapshots by step, the oldest given up (its buffers reused) when the policy's ring drops it.

    Each snapshot keeps the batches of its step: at its weights their loss was the step's own loss, so later
    evaluating the live weights on them tells whether the weights moved for the worse.
    """

    def __init__(self) -> None:
        self.snapshots: dict[int, ModelSnapshot] = {}
        self.batches: dict[int, list[Any]] = {}
        self._spare: ModelSnapshot | None = None

    def __len__(self) -> int:
        return len(self.snapshots)

    def take(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, batches: list[Any]) -> None:
        """Snapshot the state before ``step``'s update, with the batches of that step."""
        snapshot = self._spare if self._spare is not None else ModelSnapshot()
        self._spare = None
        snapshot.take(module, optimizer, step)
        self.snapshots[step] = snapshot
        self.batches[step] = list(batches)

    def drop(self, step: int) -> None:
        """Give up the snapshot of ``step`` (its buffers serve the next one)."""
        snapshot = self.snapshots.pop(step, None)
        self.batches.pop(step, None)
        if snapshot is not None:
            self._spare = snapshot

    def keep_only(self, steps: list[int]) -> None:
        """Give up every snapshot whose step is not in ``steps``."""
        for step in [k for k in self.snapshots if k not in steps]:
            self.drop(step)

    def newest(self) -> ModelSnapshot | None:
        return self.snapshots[max(self.snapshots)] if self.snapshots else None

    def get(self, step: int | None) -> ModelSnapshot | None:
        """The snapshot of ``step`` (``None``: the newest)."""
        return self.newest() if step is None else self.snapshots.get(step, self.newest())

    def reference_batches(self) -> list[Any]:
        """The batches kept with the newest snapshot (empty when it has none)."""
        return self.batches[max(self.batches)] if self.batches else []


@contextlib.contextmanager
def _silenced(module: Any) -> Iterator[None]:
    """``self.log`` and ``self.log_dict`` do nothing inside (a reference evaluation must not be logged)."""
    saved = {name: module.__dict__.get(name) for name in ("log", "log_dict")}
    module.log = lambda *args, **kwargs: None
    module.log_dict = lambda *args, **kwargs: None
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = value


def reference_loss(module: Any, batches: list[Any], world_size: int, strategy: Any) -> float | None:
    """The live weights' loss on ``batches``: ``training_step`` without gradients, logging or a random draw left
    behind (the RNG is forked), averaged over the batches and over ranks (one all-reduce). ``None`` when there
    is nothing to evaluate or ``training_step`` returns no loss."""
    if not batches:
        return None
    devices = [module.device] if module.device.type == "cuda" else []
    losses = []
    with torch.no_grad(), torch.random.fork_rng(devices=devices), _silenced(module):
        for index, batch in enumerate(batches):
            out = module.training_step(batch, index)
            loss = out.get("loss") if isinstance(out, dict) else out
            if not isinstance(loss, torch.Tensor):
                return None
            losses.append(loss.detach().float().reshape(()))
    value = all_reduce_mean(torch.stack(losses).mean().reshape(1), world_size, strategy)
    return float(value[0])
