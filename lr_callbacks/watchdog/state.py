"""The watchdog policy's plain data: the :class:`Decision` it hands the callback after each step, and
:class:`PolicyState`, everything it remembers besides its baselines (a dataclass of plain values, so a checkpoint
holds it as ``dataclasses.asdict`` writes it and :meth:`PolicyState.from_plain` reads it back).

Pure: no torch, no Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lr_callbacks.watchdog.config import Incident

__all__ = ["DEFAULT_SNAPSHOT_EVERY", "Decision", "PolicyState", "Probe", "RunStep", "snap"]

Probe = Callable[[], "float | None"]
"""The live weights' loss on the clean reference batch kept with the newest snapshot (``None``: unknown)."""

DEFAULT_SNAPSHOT_EVERY = 100
"""The snapshot cadence when the run's length is unknown (else max(10 steps, 1% of the run))."""


@dataclass(frozen=True)
class Decision:
    """What the callback must do after a step was recorded.

    Attributes:
        scale: the new LR scale, or ``None`` to keep it.
        rollback: restore the snapshot of step ``rollback_to`` (and skip the current step's update).
        halt: the reason to stop the run (the last good state is restored and saved first), or ``None``.
        incidents: what was done, for the log.
        rollback_to: the snapshot's step, with ``rollback`` (``None``: the newest).
    """

    scale: float | None = None
    rollback: bool = False
    halt: str | None = None
    incidents: tuple[Incident, ...] = ()
    rollback_to: int | None = None


@dataclass
class RunStep:
    """One step of a run of consecutive outliers."""

    step: int
    loss: float | None  # log values
    grad: float | None
    non_finite: bool
    loss_out: bool
    grad_out: bool
    sound: bool = False  # skipped, and the clean reference batch read the live weights sound at this step


@dataclass
class PolicyState:
    """Everything of the policy but its baselines and CUSUM, as plain data (round-trips through state_dict)."""

    accepted: int = 0
    scale: float = 1.0
    run: list[RunStep] = field(default_factory=list)
    run_starts: list[int] = field(default_factory=list)
    last_cut: int | None = None
    last_change: int | None = None  # the last step an incident or a scale change happened
    rollbacks: int = 0
    clean_since_rollback: int | None = None  # accepted steps since the last rollback (None: no rollback)
    normal_since_rollback: bool = True  # the restored weights gave a loss back at the reference level
    scale_before_rollback: float = 1.0
    skip_pending: int = 0
    snapshot_step: int | None = None
    snapshot_stats: dict[str, Any] | None = None  # the baselines when the snapshot was taken
    snapshot_requested: bool = False
    last_accepted: int | None = None
    first_losses: list[float] = field(default_factory=list)
    flat_checked: bool = False
    halted: str | None = None
    ring: list[dict[str, Any]] = field(default_factory=list)  # {"step", "stats", "reference"}, oldest first
    first_step: int | None = None  # the first snapshot of the fit: the run's start
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY
    recover_steps: int | None = None
    data_budget: int = 100
    data_skips: int = 0  # skips of the current bad-data incident
    ratio_cut: float = 1.0  # the part of the LR scale set by the update-ratio signal (undone when it ends)
    ratio_rollbacks: int = 0  # rollbacks of updates made at too high an LR (at most max_rollbacks; never a halt)
    undone: tuple[int, int] | None = None  # the last rollback undid the updates of these steps (first, last)
    guarded: int | None = None  # after a rollback: steps accepted in a row (None: no guard; see GUARD_Z_SHARE)
    rollback_cut: float = 1.0  # the LR cut the last rollback of the ladder made (undone if bad data caused it)
    # the highest scale a clean stretch may raise to (times ``ratio_cut`` while that is in force): a scale raised back
    # to and damaged again
    ceiling: float = 1.0
    ceiling_before_rollback: float = 1.0
    raised: bool = False  # a clean stretch raised the scale since the last rollback
    # the last step whose LR ran above the one LRSchedule wrote for it, by more than 1 / lr_factor, and by how much
    lr_written: tuple[int, float] | None = None
    lr_written_since: int | None = None  # the first of the steps in a row up to that one whose LR was written over
    # the last rollback was for such an LR's trouble: no clean stretch raises the scale while it is still written over
    written_rollback: bool = False
    can_roll_back: bool = True  # False with snapshot="off": damaged weights get an LR cut, never a rollback
    rewarm: tuple[int, int] | None = None  # after a rollback to the run's start: (that step, ramp length)
    ramp: float = 1.0  # the share of ``scale`` applied while the LR warms up again after such a rollback
    shares: list[tuple[int, float]] = field(default_factory=list)  # (step, LR / its planned peak) while warming up
    warmup_end: int | None = None  # the step at which the planned LR's first rise (the warmup) was seen to be over
    refundable: bool = False  # the last rollback was the ladder's and bad data may yet be found to have caused it
    data_undone: int = 0  # steps undone by rollbacks that bad data caused (refunded, within ``max_data_skips``)
    data_undo: int | None = None  # bad data was blamed for a rollback and its cut undone at this step (while guarded)
    # while the LR warms up, since the newest snapshot (log units; None: no reference batch): the run's lowest loss
    # that had the reference batch read, and that batch's lowest reading on the live weights, with its step
    low_loss: float | None = None
    low_reference: float | None = None
    low_reference_step: int | None = None
    # before the loss has a baseline: the last 2 × patience steps judged, as (step, log loss, above the gate)
    early_steps: list[tuple[int, float, bool]] = field(default_factory=list)
    # the steps of the last ``window`` skipped as bad data one at a time (the step before them was accepted)
    lone_skips: list[int] = field(default_factory=list)
    lone_skips_total: int = 0  # such skips over the whole run
    level_rollback: int | None = None  # the step of the last rollback for the loss's level moving (before a baseline)
    signed_loss: bool = False  # a loss below 0 was seen: no loss is judged from then on (see ``_log_loss``)

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> PolicyState:
        """The state from its ``dataclasses.asdict`` form (a checkpoint's), tuples and runs rebuilt."""
        values = dict(plain)
        values["run"] = [RunStep(**r) for r in values["run"]]
        for key in ("undone", "rewarm", "lr_written"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        values["shares"] = [tuple(pair) for pair in values.get("shares", [])]
        values["early_steps"] = [tuple(entry) for entry in values.get("early_steps", [])]
        return cls(**values)

    @property
    def warmed_up(self) -> bool:
        """The planned LR has reached its peak, or fallen (or could not be read): the warmup is over."""
        return self.warmup_end is not None


def snap(scale: float) -> float:
    """1.0 for a scale within rounding of it (a product of cuts and their inverses)."""
    return 1.0 if abs(scale - 1.0) < 1e-9 else scale
