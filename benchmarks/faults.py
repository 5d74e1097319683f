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

Held-out faults (:data:`HELD_OUT`, issue 11), fixed here before any constant of the watchdog's second version
was tuned, and never used to set one; they are reported apart:

- ``label_noise_20pct_200``: 200 consecutive batches with 20% of their labels replaced at random;
- ``adam_v_reset``: Adam's second moment ``exp_avg_sq`` set to zero (its step count kept), as by a buggy
  resume, just before one update: the next updates are up to ``1/eps`` too large (AdamW only);
- ``scheduler_restart``: from the fault on, the schedule restarts at step 0, as after a resume that lost the
  scheduler's state: the LR warms up again to its peak and then decays on the clock of the restart.

A corrupted batch on one DDP rank is not in this single-process benchmark (it needs several processes per
run); ``tests/integration/test_watchdog_ddp.py`` checks that one rank's bad batch gives the same decision on
every rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lr_callbacks.core.compat import Callback

__all__ = ["CONTROLS", "FAULTS", "HELD_OUT", "Fault", "FaultyLoader", "LRFault", "applies", "fault"]

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
HELD_OUT = ("label_noise_20pct_200", "adam_v_reset", "scheduler_restart")

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
    "label_noise_20pct_200": ("labels", 200, 0.2),
    "adam_v_reset": ("moments", 1, 0.0),
    "scheduler_restart": ("restart", None, 0.0),
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
        raise ValueError(f"fault must be one of {', '.join(FAULTS + HELD_OUT + CONTROLS)}; got {name!r}")
    kind, length, factor = _KINDS[name]
    return Fault(name, kind, start, length, factor, seed)


def applies(name: str, optimizer: str) -> bool:
    """Whether fault ``name`` means something for ``optimizer`` (``adam_v_reset`` needs Adam's moments).

    >>> applies("adam_v_reset", "sgd"), applies("adam_v_reset", "adamw"), applies("nan_batch", "sgd")
    (False, True, True)
    """
    return name != "adam_v_reset" or optimizer != "sgd"


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
        if f.kind not in ("nan", "scale", "labels", "contrast") or not f.active(index):
            return x, y
        if f.kind == "nan":
            x = x.clone()
            x[0] = float("nan")
        elif f.kind == "scale":
            x = x * f.factor
        elif f.kind == "labels" and f.factor > 0.0:  # a fraction of the labels
            noisy = torch.rand(y.shape, generator=self.generator) < f.factor
            y = torch.where(noisy, torch.randint(0, self.classes, y.shape, generator=self.generator), y)
        elif f.kind == "labels":
            y = torch.randint(0, self.classes, y.shape, generator=self.generator)
        elif f.kind == "contrast":
            x = x * f.factor
        return x, y


class LRFault(Callback):
    """The optimizer-side faults, just before the optimizer steps they cover: LR excursions (every group's LR
    times the fault's factor), a schedule restarted at step 0 (the LR times ``schedule(k - start) / schedule(k)``,
    so a watchdog's scale is kept), and Adam's second moment reset to zero.

    Steps are counted by this callback (one per ``on_before_optimizer_step``), so a watchdog's skipped or
    rolled-back steps still count: the fault is a fixed window of the run's wall clock, as a real one would be.

    Args:
        fault: the fault; data faults and ``clean`` do nothing here.
        schedule: the run's schedule, ``schedule(step, total, per_epoch)`` (for ``scheduler_restart``).
        total: the run's length in steps (for ``scheduler_restart``).
    """

    def __init__(self, fault: Fault, schedule: Any = None, total: int = 0) -> None:
        self.fault = fault
        self.schedule = schedule
        self.total = total
        self.calls = 0

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        index = self.calls
        self.calls += 1
        if not self.fault.active(index):
            return
        if self.fault.kind == "lr":
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * self.fault.factor
        elif self.fault.kind == "restart" and self.schedule is not None:
            planned = self.schedule(index, self.total, 1)
            restarted = self.schedule(index - self.fault.start, self.total, 1)
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * restarted / planned if planned > 0 else group["lr"]
        elif self.fault.kind == "moments":
            for state in optimizer.state.values():
                if "exp_avg_sq" in state:
                    state["exp_avg_sq"].zero_()
