"""Seeded faults, identical for every method: corrupted batches in the data stream, and LR excursions.

Data faults are injected by :class:`FaultyLoader` at the ``n``-th batch *drawn* from the training loader
(counting across epochs), so every method sees exactly the same stream, whatever it does with it. LR faults
are injected by :class:`LRFault`, which multiplies every group's LR just before the optimizer step (it must be
the last callback, after ``LRSchedule`` and any watchdog have written the LR); ``LRSchedule`` writes the
planned LR again after the step, so a pulse ends by itself.

The faults (:data:`FAULTS`) follow ``research/spike_anchors.md`` §10, scaled to the digits model:

- ``nan_batch``: one batch whose first image is all NaN;
- ``inputs_x1e3``: one batch with inputs ×1000;
- ``label_noise_10`` / ``label_noise_50``: 10 or 50 consecutive batches with every label replaced at random;
- ``lr_pulse_x10`` / ``lr_pulse_x30``: the LR ×10 or ×30 for 20 steps;
- ``lr_x5_persistent``: the LR ×5 from the fault on, to the end (slow divergence, no spike);
- controls: ``clean`` (nothing) and ``data_switch`` (benign: from the fault on, the images come with 75% of
  their contrast, as from a new scanner; a real change of distribution that costs little: the final
  validation loss of the digits MLP rises by about a tenth).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lr_callbacks.core.compat import Callback

__all__ = ["CONTROLS", "FAULTS", "Fault", "FaultyLoader", "LRFault", "fault"]

FAULTS = (
    "nan_batch",
    "inputs_x1e3",
    "label_noise_10",
    "label_noise_50",
    "lr_pulse_x10",
    "lr_pulse_x30",
    "lr_x5_persistent",
)
CONTROLS = ("clean", "data_switch")

_KINDS: dict[str, tuple[str, int | None, float]] = {
    "nan_batch": ("nan", 1, 0.0),
    "inputs_x1e3": ("scale", 1, 1e3),
    "label_noise_10": ("labels", 10, 0.0),
    "label_noise_50": ("labels", 50, 0.0),
    "lr_pulse_x10": ("lr", 20, 10.0),
    "lr_pulse_x30": ("lr", 20, 30.0),
    "lr_x5_persistent": ("lr", None, 5.0),
    "clean": ("none", 0, 0.0),
    "data_switch": ("contrast", None, 0.75),
}


@dataclass(frozen=True)
class Fault:
    """One injected fault: its name, kind, first step, length (``None``: to the end) and factor."""

    name: str
    kind: str
    start: int
    length: int | None
    factor: float
    seed: int

    def active(self, index: int) -> bool:
        """Whether batch or step ``index`` (0-based) is inside the fault."""
        if self.kind == "none" or index < self.start:
            return False
        return self.length is None or index < self.start + self.length


def fault(name: str, start: int, seed: int = 0) -> Fault:
    """The fault ``name`` (see :data:`FAULTS` and :data:`CONTROLS`) starting at step ``start``.

    >>> fault("label_noise_10", start=100).active(109), fault("label_noise_10", start=100).active(110)
    (True, False)
    """
    if name not in _KINDS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS + CONTROLS)}; got {name!r}")
    kind, length, factor = _KINDS[name]
    return Fault(name, kind, start, length, factor, seed)


class FaultyLoader:
    """A training loader that corrupts the batches a data fault covers (batches counted across epochs).

    Args:
        loader: the clean loader, yielding ``(inputs, labels)``.
        fault: the fault; LR faults and ``clean`` pass every batch through.
        classes: the number of classes (for random labels).
    """

    def __init__(self, loader: Any, fault: Fault, classes: int) -> None:
        self.loader = loader
        self.fault = fault
        self.classes = classes
        self.drawn = 0
        self.generator = torch.Generator().manual_seed(10_000 + fault.seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            index = self.drawn
            self.drawn += 1
            yield self.corrupt(index, x, y)

    def corrupt(self, index: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch ``index`` as the fault makes it."""
        f = self.fault
        if f.kind in ("none", "lr") or not f.active(index):
            return x, y
        if f.kind == "nan":
            x = x.clone()
            x[0] = float("nan")
        elif f.kind == "scale":
            x = x * f.factor
        elif f.kind == "labels":
            y = torch.randint(0, self.classes, y.shape, generator=self.generator)
        elif f.kind == "contrast":
            x = x * f.factor
        return x, y


class LRFault(Callback):
    """Multiplies every group's LR by the fault's factor just before the optimizer steps it covers.

    Steps are counted by this callback (one per ``on_before_optimizer_step``), so a watchdog's skipped or
    rolled-back steps still count: the fault is a fixed window of the run's wall clock, as a real one would be.
    """

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.calls = 0

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        index = self.calls
        self.calls += 1
        if self.fault.kind == "lr" and self.fault.active(index):
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * self.fault.factor
