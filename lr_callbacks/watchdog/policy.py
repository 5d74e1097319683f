"""The watchdog's action ladder, pure: each optimizer step's loss and gradient norm in, decisions out.

No torch and no Lightning here: :class:`WatchdogPolicy` is a state machine over plain floats, so every rung
can be tested with made-up numbers, and the callback (``watchdog/callback.py``) only reads the trainer and applies
what it is told.

The ladder, least drastic first (each rung has its threshold, cooldown and budget in :class:`WatchdogConfig`):

1. **non-finite** loss or gradient norm: skip the step (always, also during warmup);
2. **outlier**, robust ``z > z_threshold`` on the loss (``grad_z_threshold`` on the gradient norm, whose
   tail is heavier): skip the step, or clip it;
3. **repeated outliers** (``lower_after`` runs within ``lower_window`` steps) or a **slow climb** (CUSUM):
   lower the LR scale by ``lr_factor``, not more often than every ``cooldown_steps``;
4. **persistent outliers** (``patience`` in a row), a climb that survives a cut, or a cut below
   ``min_lr_scale``: roll back to the last clean snapshot and lower the LR, at most ``max_rollbacks`` times;
5. the rollback budget is spent: **halt**, with the last good state restored.

**Cause before action.** When the callback can evaluate the live weights on a clean reference batch (the
batch of the newest snapshot step, whose loss at the snapshot's weights is known), every outlier is first
attributed: a reference loss still at its level means the *data* is bad (skip it, within ``max_data_skips``,
no rollback and no LR cut); an elevated one means the *weights* are damaged (roll back to the newest snapshot
taken before the incident began, and lower the LR, more at each rollback). Without a reference the ladder
below applies as it is.

A step up in the loss that stays flat is a change of data, not divergence: after a slow climb that turns out
flat, or when outliers persist on the freshly restored weights of a rollback, the baseline is rebuilt from
the new level (and the rollback's LR cut is undone) instead of acting again.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lr_callbacks.watchdog.config import OWNER, Action, Incident, Signal, WatchdogConfig, resolve_steps
from lr_callbacks.watchdog.stats import (
    Cusum,
    Gate,
    RollingBaseline,
    SampleBaseline,
    Samples,
    Verdict,
    judge,
    log_value,
    trend,
)

__all__ = ["Decision", "Probe", "WatchdogPolicy"]

Probe = Callable[[], "float | None"]
"""The live weights' loss on the clean reference batch kept with the newest snapshot (``None``: unknown)."""

DEFAULT_SNAPSHOT_EVERY = 100
"""The snapshot cadence when the run's length is unknown (else max(10 steps, 1% of the run))."""

GUARD_Z_SHARE = 0.5
"""After a rollback, until ``patience`` steps in a row are accepted, a step's loss is judged at this share of
``z_threshold``: what damaged the weights may still be coming (a burst of bad batches that each stayed under
the threshold), and the clean reference batch tells bad data from damaged weights at every such outlier."""


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
class _RunStep:
    """One step of a run of consecutive outliers."""

    step: int
    loss: float | None  # log values
    grad: float | None
    non_finite: bool
    loss_out: bool
    grad_out: bool


@dataclass
class _State:
    """Everything of the policy but its baselines and CUSUM, as plain data (round-trips through state_dict)."""

    accepted: int = 0
    scale: float = 1.0
    run: list[_RunStep] = field(default_factory=list)
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
    ceiling: float = 1.0  # the highest scale a clean stretch may raise to: a scale raised back to and damaged again
    ceiling_before_rollback: float = 1.0
    raised: bool = False  # a clean stretch raised the scale since the last rollback
    can_roll_back: bool = True  # False with snapshot="off": damaged weights get an LR cut, never a rollback
    rewarm: tuple[int, int] | None = None  # after a rollback to the run's start: (that step, ramp length)
    ramp: float = 1.0  # the share of ``scale`` applied while the LR warms up again after such a rollback
    shares: list[tuple[int, float]] = field(default_factory=list)  # (step, LR / its planned peak) while warming up
    warmup_end: int | None = None  # the step at which the planned LR's first rise (the warmup) was seen to be over
    refundable: bool = False  # the last rollback was the ladder's and bad data may yet be found to have caused it
    data_undone: int = 0  # steps undone by rollbacks that bad data caused (refunded, within ``max_data_skips``)

    @property
    def warmed_up(self) -> bool:
        """The planned LR has reached its peak, or fallen (or could not be read): the warmup is over."""
        return self.warmup_end is not None


class WatchdogPolicy:
    """The ladder as a state machine: :meth:`judge` a step, apply the verdict, then :meth:`record` it.

    >>> policy = WatchdogPolicy(WatchdogConfig(warmup_steps=5, window=20))
    >>> for step in range(10):
    ...     loss = 1.0 + 0.01 * (step % 3)
    ...     _ = policy.record(step, loss, 2.0, policy.judge(loss, 2.0))
    >>> verdict = policy.judge(1000.0, 2.0)
    >>> verdict.skip, policy.record(10, 1000.0, 2.0, verdict).incidents[0].action
    (True, 'skip')
    """

    def __init__(self, config: WatchdogConfig) -> None:
        self.config = config
        self.loss = RollingBaseline(config.window, config.min_spread)
        self.grad = RollingBaseline(config.window, config.min_spread)
        self.cusum = Cusum(config.cusum_drift, config.cusum_threshold)
        self.updates: dict[str, RollingBaseline] = {}  # per group: log(update ratio / LR), accepted samples
        self.samples = SampleBaseline(config.window, config.warmup_steps)  # for a module reporting per-sample losses
        self._sample_size = 0.0  # the largest batch recorded, in samples over all ranks (for the device's gate)
        self.state = _State()
        self.events: list[Incident] = []
        self.configure(None)

    def configure(self, total_steps: int | None, can_roll_back: bool = True) -> None:
        """Resolve the settings relative to the run (``None``: its length is unknown) at fit start;
        ``can_roll_back=False`` when no snapshot is kept (``snapshot="off"``).

        The snapshot cadence is ``snapshot_every`` or max(10 steps, 1% of the run); ``recover_after`` and
        ``max_data_skips`` may be a percentage of the run.
        """
        c, s = self.config, self.state
        s.can_roll_back = can_roll_back
        if c.snapshot_every is not None:
            s.snapshot_every = c.snapshot_every
        elif total_steps:
            s.snapshot_every = max(10, math.ceil(0.01 * total_steps))
        else:
            s.snapshot_every = DEFAULT_SNAPSHOT_EVERY
        fallback = 1000
        s.recover_steps = None if c.recover_after is None else resolve_steps(c.recover_after, total_steps, fallback)
        s.data_budget = resolve_steps(c.max_data_skips, total_steps, fallback)

    # --- read-outs ---------------------------------------------------------------------------------

    @property
    def scale(self) -> float:
        """The current LR multiplier (the ladder's scale, times the ramp of a re-warmup: see :meth:`_rewarm`)."""
        return self.state.scale * self.state.ramp

    @property
    def ready(self) -> bool:
        """Whether the warmup is over, so outliers and trends are judged."""
        return self.state.accepted >= self.config.warmup_steps

    @property
    def sample_size(self) -> float:
        """The largest batch recorded with per-sample losses, in samples over all ranks (0: none reported)."""
        return self._sample_size

    @property
    def incident_open(self) -> bool:
        """A run of outliers is in progress: the live weights are not known to be clean."""
        return bool(self.state.run)

    def gate(self, samples: float | None = None) -> Gate:
        """The limits a step is judged against now; its per-sample count limit for a batch of ``samples`` (over
        all ranks), by default for the largest batch seen (as the device judges: no more skips than exact).

        During the warmup, before the baseline exists, the loss is held against the run's own first losses:
        a loss above ``max_level_shift`` × their median is trouble (the LR warming up into instability).
        """
        if not self.ready:
            first = self.state.first_losses
            if len(first) < 5:
                return Gate(clip=self.config.outlier_action == "clip")
            limit = statistics.median(first[:5]) + math.log(self.config.max_level_shift)
            return Gate(loss_limit=limit, clip=self.config.outlier_action == "clip")
        c = self.config
        z = c.z_threshold * (GUARD_Z_SHARE if self._guarded() else 1.0)
        return Gate(
            loss_limit=self.loss.limit(z) if len(self.loss) else math.inf,
            grad_limit=self.grad.limit(c.grad_z_threshold) if len(self.grad) else math.inf,
            clip=self.config.outlier_action == "clip",
            sample_limit=self.samples.limit,
            sample_count=self.samples.max_count(self._sample_size if samples is None else samples),
        )

    def _guarded(self) -> bool:
        """The stricter loss gate after a rollback holds (only with a reference batch to tell the cause)."""
        s = self.state
        return s.guarded is not None and bool(s.ring) and s.ring[-1]["reference"] is not None

    def z_scores(self, loss: float, grad_norm: float) -> dict[str, float]:
        """The robust z-scores of a step's loss and gradient norm (only those that can be computed)."""
        scores = {}
        for name, value, baseline in (("loss_z", loss, self.loss), ("grad_norm_z", grad_norm, self.grad)):
            x = log_value(value)
            if x is not None and len(baseline):
                scores[name] = baseline.z(x)
        return scores

    def judge(self, loss: float, grad_norm: float, samples: Samples | None = None) -> Verdict:
        """The verdict for a step (``samples``: its per-sample summary, ``None`` without per-sample losses),
        including the skips that follow a rollback."""
        if self.state.skip_pending:
            return Verdict(skip=True, forced=True)
        if samples is None:
            return judge(self.gate(), loss, grad_norm)
        return judge(self.gate(samples.n), loss, grad_norm, samples.count)

    def wants_snapshot(self, step: int) -> bool:
        """Whether the weights before ``step``'s update are a clean snapshot worth taking now.

        Clean: ``step`` was accepted, the CUSUM is at 0 and not holding a pre-climb reference (no climb under
        way), and no incident happened in the last ``patience`` steps.
        """
        s = self.state
        if s.halted or s.run or s.last_accepted != step or self.cusum.value > 0.0 or self.cusum.held:
            return False
        if s.last_change is not None and step - s.last_change < self.config.patience:
            return False
        return s.snapshot_requested or s.snapshot_step is None or step - s.snapshot_step >= s.snapshot_every

    def snapshot_taken(self, step: int, reference: float | None = None) -> int | None:
        """Note that the state before ``step``'s update was snapshotted (a rollback restores these baselines).

        ``reference`` is the loss of the batch kept with it, at its weights (the step's own loss). Returns the
        step of the snapshot that leaves the ring of ``snapshots`` (its buffers may be reused), or ``None``.
        """
        s = self.state
        s.snapshot_step, s.snapshot_requested = step, False
        s.snapshot_stats = {"loss": self.loss.state_dict(), "grad": self.grad.state_dict()}
        if s.first_step is None:
            s.first_step = step
        s.ring = [r for r in s.ring if r["step"] != step]
        s.ring.append({"step": step, "stats": s.snapshot_stats, "reference": log_value(reference or math.nan)})
        if len(s.ring) > self.config.snapshots:
            return int(s.ring.pop(0)["step"])
        return None

    def resumed_from(self, step: int, keep_reference: bool) -> None:
        """After a resume only the checkpoint's weights exist, as the snapshot of ``step``: the ring holds that
        one, with its reference batch if the checkpoint brought it back (``keep_reference``)."""
        s = self.state
        entry = next((r for r in s.ring if r["step"] == step), {"step": step, "stats": s.snapshot_stats})
        s.ring = [{**entry, "reference": entry.get("reference") if keep_reference else None}]

    @property
    def warming_up(self) -> bool:
        """Whether the run is in its warmup: the loss has no baseline yet, or the planned LR noted by
        :meth:`planned_share` has neither reached its peak nor fallen."""
        return not self.ready or (bool(self.state.shares) and not self.state.warmed_up)

    @property
    def wants_share(self) -> bool:
        """Whether :meth:`planned_share` still notes the LR of each step (until the warmup is seen to be over)."""
        return not self.state.warmed_up

    def planned_share(self, step: int, share: float) -> None:
        """Note the LR of ``step`` as a share of the run's planned peak while the run warms up: trouble then
        tells at what share of the peak the run broke (:meth:`_rollback`). The warmup is over once the share
        reaches 1 or falls below the highest noted (a schedule past its peak); a share that is not a positive
        number (the plan is unknown) ends the noting with nothing noted."""
        s = self.state
        if s.warmed_up or (s.shares and s.shares[-1][0] >= step):
            return
        share = min(share, 1.0) if math.isfinite(share) else math.nan
        # the noted shares never fall (a fall ends the noting), so the last one is the highest
        if not share > 0.0 or share >= 1.0 - 1e-6 or (s.shares and share < s.shares[-1][1] - 1e-9):
            s.warmup_end = step
            return
        s.shares.append((step, share))
        del s.shares[: -self.config.window]  # what a rollback can still ask about

    def _share_at(self, step: int) -> float:
        """The noted share of the planned peak at ``step`` (the last one noted before it; 1 if none was)."""
        before = [share for noted, share in self.state.shares if noted <= step]
        return before[-1] if before else 1.0

    def request_snapshot(self) -> None:
        """Take a snapshot at the next clean step (after a resume or a checkpoint)."""
        self.state.snapshot_requested = True

    # --- the LR-instability signal: the update's size relative to the weights ------------------------

    def record_update(self, step: int, ratios: dict[str, tuple[float, float]], grad_norm: float = math.nan) -> Decision:
        """Judge the update of ``step``: per group, ``ratio = ‖Δθ‖ / ‖θ‖`` and the LR the hooks set for it.

        The signal is ``u = log(ratio / LR)`` plus the log of the cut this signal made, less how far the step's
        gradient norm (``grad_norm``) was above its baseline: the update's size for the planned LR (schedule ×
        the ladder's scale) and the gradient it followed, so warmup, decay, the ladder's cuts and a batch with a
        large gradient are no alarm.
        A ``u`` above ``update_z_threshold`` robust spreads means the LR reaching the weights is too high (an LR
        fault, a lost scheduler, a collapsed second moment): the scale is lowered in proportion, by
        ``exp(−excess)``, to bring ``u`` back to its center, and the updates since the last normal sample are
        undone (:meth:`_ratio_cut`). After a cut ``c`` the signal stays near its center
        while the cause lasts and falls about ``log c`` below it once the cause has passed: when every group is
        nearer the latter, the cut is undone. ``u`` is judged after ``warmup_steps /
        update_every`` samples (at least 5) and once the warmup is over; accepted samples form its baseline.
        """
        s, c = self.state, self.config
        if s.halted:
            return Decision()
        values = {}
        gradient = self._gradient_excess(grad_norm)
        for name, (ratio, lr) in ratios.items():
            x, y = log_value(ratio), log_value(lr)
            if x is not None and y is not None:
                values[name] = x - y + math.log(s.ratio_cut) - gradient
        needed = self._update_window()
        judged = {n: v for n, v in values.items() if self.ready and len(self.updates.get(n, ())) >= needed}
        excess = {n: v - self.updates[n].center for n, v in judged.items()}
        high = {n: e for n, e in excess.items() if e > c.update_z_threshold * self.updates[n].spread}
        # after a cut c the signal sits near its center while the cause lasts and near log(c) once it has passed:
        # the cut is undone when every group is nearer the latter (and below its center by a spread or more)
        restored = 0.5 * math.log(s.ratio_cut)
        low = judged and all(e < min(restored, -self.updates[n].spread) for n, e in excess.items())
        if high:
            return self._emit(self._ratio_cut(step, max(high.values()), ratios, high))
        if low and s.ratio_cut < 1.0:
            return self._emit(self._ratio_restore(step, max(excess.values())))  # excess: for the log
        for name, value in values.items():
            self.updates.setdefault(name, self._update_baseline()).add(value)
        return Decision()

    def _gradient_excess(self, grad_norm: float) -> float:
        """How far above its baseline the sampled step's gradient norm was (log units, ≥ 0): a larger gradient
        makes a larger update under SGD, and that is the data's doing, not the LR's."""
        y = log_value(grad_norm)
        if y is None or not len(self.grad):
            return 0.0
        return max(0.0, y - self.grad.center)

    def _update_window(self) -> int:
        c = self.config
        return max(5, c.warmup_steps // (c.update_every or 1))

    def _update_baseline(self) -> RollingBaseline:
        """The update signal's baseline: its samples of the last ``warmup_steps`` (it drifts as training goes, so
        a short memory; a slow climb of the LR is left to the loss's CUSUM)."""
        return RollingBaseline(self._update_window(), self.config.min_spread)

    def _ratio_cut(
        self, step: int, excess: float, ratios: dict[str, tuple[float, float]], high: dict[str, float]
    ) -> Decision:
        """Lower the scale in proportion to the excess, and undo the updates made at the too-high LR.

        The sample before this one was normal, so the LR went wrong at most ``update_every`` steps ago: the
        run goes back to the newest snapshot taken before then (at most ``max_rollbacks`` times, and never a
        halt: past that, or with no such snapshot, the cut alone). Those few updates are what an LR fault has
        done to the weights by the time it is seen; they are not left in the run.
        """
        s, c = self.state, self.config
        factor = math.exp(-excess)
        old, s.scale = s.scale, max(s.scale * factor, c.min_lr_scale)
        s.ratio_cut *= s.scale / old
        name = max(high, key=lambda n: high[n])
        ratio = ratios[name][0]
        threshold = ratio * math.exp(-excess + c.update_z_threshold * self.updates[name].spread)
        target = self._ratio_target(step)
        if target is not None:
            s.ratio_rollbacks += 1
            self._restore(target)
            s.undone, s.guarded, s.refundable = (int(target["step"]), step), 0, False
            undone = (
                f"; its updates since step {target['step']} are undone (back to the snapshot before step "
                f"{target['step']}, {s.ratio_rollbacks} of {c.max_rollbacks}){self._rewarm(step)}"
            )
        else:
            undone = ""
        detail = (
            f"the update of group {name!r} is {math.exp(excess):.3g}× its usual size for the planned LR: the LR "
            f"reaching the weights is too high; LR scale {old:.3g} → {s.scale:.3g}{undone}"
        )
        if target is None:
            note = Incident(step, Signal.UPDATE_RATIO, ratio, threshold, Action.LOWER_LR, detail)
            return Decision(scale=s.scale, incidents=(note,))
        back = int(target["step"])
        note = Incident(step, Signal.UPDATE_RATIO, ratio, threshold, Action.ROLLBACK, detail, rollback_to=back)
        return Decision(scale=s.scale, rollback=True, incidents=(note,), rollback_to=back)

    def _ratio_target(self, step: int) -> dict[str, Any] | None:
        """The newest snapshot from before the updates the update-ratio signal has not seen (``None``: no such
        snapshot, no snapshots kept, a run of outliers open, or the rollback budget spent)."""
        s, c = self.state, self.config
        if not s.can_roll_back or s.run or s.ratio_rollbacks >= c.max_rollbacks:
            return None
        if s.undone is not None and s.undone[0] <= step <= s.undone[1]:
            return None  # a rollback has already undone this update
        since = step - (c.update_every or 1) + 1  # the first update after the last normal sample
        before = [r for r in s.ring if r["step"] <= since]
        return before[-1] if before else None

    def _restore(self, target: dict[str, Any]) -> None:
        """Go back to the snapshot ``target``: its baselines, and the ring up to it."""
        self._point_to(target)
        self._load_snapshot_baselines()
        self.cusum.reset()

    def _rewarm(self, step: int) -> str:
        """After going back to the run's start (step 0), where the optimizer had no state yet (Adam's moments are
        empty), the LR warms up again: the scale ramps linearly back to its value over as many steps as the
        rollback undid, instead of starting the fresh optimizer at the full LR. Returns a note for the log."""
        s = self.state
        if s.snapshot_step != 0 or step <= 1:
            s.rewarm, s.ramp = None, 1.0
            return ""
        s.rewarm, s.ramp = (step, step), 1.0 / step
        return f"; the optimizer starts afresh there, so the LR warms up again over {step} steps"

    def _point_to(self, target: dict[str, Any]) -> None:
        """Make ``target`` the newest snapshot: the ring keeps it and the older ones."""
        s = self.state
        s.snapshot_step, s.snapshot_stats = target["step"], target["stats"]
        s.ring = [r for r in s.ring if r["step"] <= target["step"]]

    def _load_snapshot_baselines(self) -> None:
        """The loss and gradient baselines as they were when the newest snapshot was taken."""
        stats = self.state.snapshot_stats
        if stats is not None:
            self.loss.load_state_dict(stats["loss"])
            self.grad.load_state_dict(stats["grad"])

    def _ratio_restore(self, step: int, excess: float) -> Decision:
        s = self.state
        factor = 1.0 / s.ratio_cut  # the cause has passed: the whole cut this signal made goes
        old, s.scale = s.scale, _snap(min(1.0, s.scale * factor))
        s.ratio_cut = _snap(min(1.0, s.ratio_cut * factor))
        detail = (
            f"the update is back below its usual size for the planned LR: what made it too large has passed; "
            f"LR scale {old:.3g} → {s.scale:.3g}"
        )
        note = Incident(step, Signal.UPDATE_RATIO, math.exp(excess), math.nan, Action.RAISE_LR, detail)
        return Decision(scale=s.scale, incidents=(note,))

    # --- the ladder --------------------------------------------------------------------------------

    def record(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        verdict: Verdict,
        probe: Probe | None = None,
        samples: Samples | None = None,
    ) -> Decision:
        """Record ``step`` with the ``verdict`` it was given; return what must be done now.

        ``probe`` evaluates the live weights on the clean reference batch; it is called only at an incident.
        ``samples`` summarises the step's per-sample losses (``None``: the module reports none).
        """
        s = self.state
        if s.halted:
            return Decision()
        if s.rewarm is not None:
            start, length = s.rewarm
            s.ramp = min(1.0, max(step - start, 1) / length)
            if s.ramp >= 1.0:
                s.rewarm = None
        if samples is not None:
            self._sample_size = max(self._sample_size, samples.n)
        if verdict.forced:
            s.skip_pending -= 1
            note = Incident(step, Signal.AFTER_ROLLBACK, loss, math.nan, Action.SKIP, f"{s.skip_pending} more to skip")
            return self._emit(Decision(incidents=(note,)))
        if Signal.SAMPLE_OUTLIERS in verdict.signals:
            damaged = self._damaged(probe)
            if not damaged:
                return self._emit(self._sample_outliers(step, samples, damaged))
            # the clean reference batch's loss rose too: the weights make the samples outliers, not the data
            measured = self._probe_value
            return self._emit(self._outlier(step, loss, grad_norm, verdict, lambda: measured, samples))
        if verdict.signals:
            return self._emit(self._outlier(step, loss, grad_norm, verdict, probe))
        if samples is not None:
            self.samples.add(samples)
        return self._emit(self._accepted(step, loss, grad_norm, probe))

    def _sample_note(self, step: int, samples: Samples | None, why: str) -> Incident:
        """The skip of a batch dominated by outlier samples, with its numbers."""
        count, n = (samples.count, samples.n) if samples is not None else (math.nan, 0.0)
        limit = self.samples.max_count(n)
        detail = (
            f"{count:.0f} of {n:.0f} samples have a loss above {self.samples.limit:.4g} (a clean batch: at most "
            f"{limit:.3g}, at a tail rate of {self.samples.tail_rate:.2%} and a dispersion of "
            f"{self.samples.dispersion:.2g}); {why}"
        )
        return Incident(step, Signal.SAMPLE_OUTLIERS, count, limit, Action.SKIP, detail)

    def _sample_outliers(self, step: int, samples: Samples | None, damaged: bool | None) -> Decision:
        """The batch is dominated by outlier samples and the clean reference batch shows sound weights (or there
        is no reference to tell): bad data, skipped (no rollback, no LR cut), within ``max_data_skips`` batches in
        a row. Past that budget the data changed: the per-sample baseline starts again from the batches to come.
        (Damaged weights make a batch's samples outliers too: then :meth:`_outlier` takes the step to the ladder.)"""
        s = self.state
        known = "the clean reference batch shows sound weights" if damaged is False else "no reference batch to tell"
        note = self._sample_note(step, samples, f"{known}: bad data")
        count, limit = note.value, note.threshold
        incidents = [note]
        s.data_skips += 1
        if s.data_skips >= s.data_budget:
            self.samples.reset()
            s.data_skips = 0
            why = (
                f"{s.data_budget} batches in a row were dominated by outlier samples (max_data_skips): a change of "
                "data; the per-sample baseline starts again"
            )
            incidents.append(Incident(step, Signal.SAMPLE_OUTLIERS, count, limit, Action.REBASELINE, why))
        return Decision(incidents=tuple(incidents))

    def _emit(self, decision: Decision) -> Decision:
        self.events.extend(decision.incidents)
        if decision.incidents:
            self.state.last_change = decision.incidents[-1].step
        return decision

    def _outlier(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        verdict: Verdict,
        probe: Probe | None,
        samples: Samples | None = None,
    ) -> Decision:
        s = self.state
        action = Action.SKIP if verdict.skip else Action.CLIP
        gate = self.gate()
        incidents = []
        for signal in verdict.signals:
            if signal is Signal.SAMPLE_OUTLIERS:
                incidents.append(self._sample_note(step, samples, "the clean reference batch's loss rose too"))
                continue
            value, limit = (grad_norm, gate.grad_limit) if signal is Signal.GRAD_NORM else (loss, gate.loss_limit)
            if signal is Signal.NON_FINITE:
                value = loss if not math.isfinite(loss) else grad_norm
            threshold = math.exp(limit) if signal is not Signal.NON_FINITE and math.isfinite(limit) else math.nan
            detail = "" if verdict.skip else f"gradient × {verdict.clip_factor:.3g}"
            incidents.append(Incident(step, signal, value, threshold, action, detail))
        if s.guarded is not None:
            s.guarded = 0
        s.run.append(
            _RunStep(
                step,
                log_value(loss),
                log_value(grad_norm),
                Signal.NON_FINITE in verdict.signals,
                Signal.LOSS in verdict.signals,
                Signal.GRAD_NORM in verdict.signals,
            )
        )
        damaged = self._damaged(probe)
        if damaged is not None:
            escalation = self._attributed(step, damaged, probe_value=self._probe_value)
        else:
            escalation = self._unattributed(step)
        return Decision(
            scale=escalation.scale,
            rollback=escalation.rollback,
            halt=escalation.halt,
            incidents=(*incidents, *escalation.incidents),
            rollback_to=escalation.rollback_to,
        )

    def _unattributed(self, step: int) -> Decision:
        """No reference batch to tell the cause: the ladder (repeated outliers lower the LR, persistent roll back)."""
        s, c = self.state, self.config
        escalation = Decision()
        if len(s.run) == 1:
            s.run_starts = [k for k in s.run_starts if k > step - c.lower_window] + [step]
            if len(s.run_starts) >= c.lower_after:
                count = len(s.run_starts)
                escalation = self._lower(
                    step,
                    Signal.REPEATED_OUTLIERS,
                    count,
                    c.lower_after,
                    f"{count} outlier runs in {c.lower_window} steps",
                )
        if len(s.run) >= c.patience:
            escalation = self._persistent(step)
        return escalation

    _probe_value: float = math.nan
    _probe_limit: float = math.nan

    def _damaged(self, probe: Probe | None) -> bool | None:
        """Whether the live weights are damaged: their loss on the reference batch is above the one measured at
        the snapshot by more than ``max_level_shift`` (the bound on a level shift of the loss; the reference
        batch has no sampling noise, so the batch-to-batch spread does not enter, and training since the
        snapshot only lowers it). ``None``: no reference to tell."""
        s = self.state
        reference = s.ring[-1]["reference"] if s.ring else None
        if probe is None or reference is None or not len(self.loss):
            return None
        value = probe()
        if value is None:
            return None
        limit = reference + math.log(self.config.max_level_shift)
        self._probe_value, self._probe_limit = value, math.exp(limit)
        x = log_value(value)
        return x is None or x > limit

    def _attributed(self, step: int, damaged: bool, probe_value: float) -> Decision:
        """The cause is known: damaged weights roll back; bad data is skipped within ``max_data_skips``."""
        s, c = self.state, self.config
        if damaged:
            run, s.run, s.data_skips = s.run, [], 0
            why = (
                f"the clean reference batch's loss is {probe_value:.4g} on the live weights (above "
                f"{self._probe_limit:.4g}): the weights are damaged"
            )
            return self._rollback(step, Signal.DAMAGED_WEIGHTS, probe_value, self._probe_limit, why, since=run[0].step)
        s.data_skips += 1
        undo = self._data_caused_rollback(step) if s.guarded is not None else Decision()
        finite = [r.loss for r in s.run if r.loss is not None]
        if len(s.run) == c.patience and finite and not any(r.non_finite for r in s.run):
            elevation = statistics.median(finite) - self.loss.center
            if elevation <= math.log(c.max_level_shift):
                return self._rebaseline_data(step, s.run, elevation)
        if s.data_skips < s.data_budget:
            return undo
        run, s.run, s.data_skips = s.run, [], 0
        if any(r.non_finite for r in run) or not finite:
            reason = (
                f"the data stayed bad for {len(run)} steps (max_data_skips) while the reference batch shows sound "
                "weights; the live weights are kept"
            )
            s.halted = reason
            note = Incident(step, Signal.BAD_DATA, len(run), s.data_budget, Action.HALT, reason)
            return Decision(halt=reason, incidents=(note,))
        return self._rebaseline_data(step, run, statistics.median(finite) - self.loss.center)

    def _data_caused_rollback(self, step: int) -> Decision:
        """Bad data right after a rollback, on the restored (sound) weights: the damage the rollback undid was
        this data's doing, not the LR's, so the rollback's LR cut is undone (a data fault makes no cut), and the
        rollback is given back to ``max_rollbacks`` (a budget against an LR that keeps diverging, which a run
        that only met bad data must not spend and then halt on) while the steps such rollbacks undid stay
        within ``max_data_skips`` (bad data may cost that many steps, skipped or undone)."""
        s = self.state
        refund = ""
        if s.refundable and s.undone is not None and s.rollbacks > 0:
            undone = s.undone[1] - s.undone[0] + 1
            if s.data_undone + undone <= s.data_budget:
                s.rollbacks, s.data_undone = s.rollbacks - 1, s.data_undone + undone
                refund = f"; the rollback does not count against max_rollbacks ({s.rollbacks} of them used)"
        s.refundable = False
        if s.rollback_cut >= 1.0 and not refund:
            return Decision()
        old, s.scale = s.scale, _snap(min(1.0, s.scale / s.rollback_cut))
        s.rollback_cut, s.ceiling = 1.0, s.ceiling_before_rollback
        detail = (
            f"the batches after the rollback are bad data on the restored weights: they, not the LR, did the "
            f"damage; the rollback's LR cut is undone, LR scale {old:.3g} → {s.scale:.3g}{refund}"
        )
        note = Incident(step, Signal.BAD_DATA, old, s.scale, Action.RAISE_LR, detail)
        return Decision(scale=s.scale, incidents=(note,))

    def _rebaseline_data(self, step: int, run: list[_RunStep], elevation: float) -> Decision:
        """The weights are sound and the data changed: a new baseline from the run's values."""
        c, s = self.config, self.state
        self.loss.reset([r.loss for r in run if r.loss is not None], refill=c.warmup_steps)
        if any(r.grad_out for r in run):
            self.grad.reset([r.grad for r in run if r.grad is not None], refill=c.warmup_steps)
        self.cusum.reset()
        self.samples.reset()
        s.run, s.run_starts, s.data_skips = [], [], 0
        bound = "within" if elevation <= math.log(c.max_level_shift) else "beyond"
        detail = (
            f"the loss stepped up {math.exp(elevation) - 1.0:+.1%} ({bound} max_level_shift) for {len(run)} steps "
            "while the reference batch shows sound weights: a change of data; new baseline"
        )
        note = Incident(step, Signal.BAD_DATA, len(run), c.patience, Action.REBASELINE, detail)
        return Decision(incidents=(note,))

    def _persistent(self, step: int) -> Decision:
        """``patience`` outliers in a row: a change of data if the restored weights see it too, else roll back."""
        s = self.state
        run, s.run = s.run, []
        finite = not any(r.non_finite for r in run)
        if finite and s.clean_since_rollback == 0 and self._within_level_shift(run):
            return self._rebaseline_after_rollback(step, run)
        kind = "non-finite" if not finite else "outlying"
        return self._rollback(
            step,
            Signal.PERSISTENT_OUTLIERS,
            len(run),
            self.config.patience,
            f"{len(run)} {kind} steps in a row",
            since=run[0].step,
        )

    def _within_level_shift(self, run: list[_RunStep]) -> bool:
        """Whether the run's losses sit at most ``max_level_shift`` above the baseline (a new level of data)."""
        losses = [r.loss for r in run if r.loss is not None]
        if not losses or not len(self.loss):
            return True
        return statistics.median(losses) - self.loss.center <= math.log(self.config.max_level_shift)

    def _rebaseline_after_rollback(self, step: int, run: list[_RunStep]) -> Decision:
        """Outliers persist on weights just restored from a clean snapshot: the data changed, not the model."""
        s, c = self.state, self.config
        if any(r.loss_out for r in run):
            self.loss.reset([r.loss for r in run if r.loss is not None], refill=c.warmup_steps)
        if any(r.grad_out for r in run):
            self.grad.reset([r.grad for r in run if r.grad is not None], refill=c.warmup_steps)
        self.cusum.reset()
        self.samples.reset()
        s.run_starts, s.clean_since_rollback = [], None
        old, s.scale = s.scale, s.scale_before_rollback
        detail = (
            f"outliers persist on the restored weights: a change of data; new baseline from {len(run)} steps, "
            f"LR scale {old:.3g} → {s.scale:.3g}"
        )
        note = Incident(step, Signal.PERSISTENT_OUTLIERS, len(run), c.patience, Action.REBASELINE, detail)
        return Decision(scale=s.scale if s.scale != old else None, incidents=(note,))

    def _lower(self, step: int, signal: Signal, value: float, threshold: float, why: str) -> Decision:
        """Rung 3: cut the LR scale, unless in cooldown; at the floor, escalate to a rollback."""
        s, c = self.state, self.config
        if s.last_cut is not None and step - s.last_cut < c.cooldown_steps:
            return Decision()
        if s.scale <= c.min_lr_scale:
            return self._rollback(step, signal, value, threshold, f"{why}; the LR scale is at its floor")
        old, s.scale = s.scale, max(s.scale * c.lr_factor, c.min_lr_scale)
        s.last_cut, s.run_starts = step, []
        note = Incident(step, signal, value, threshold, Action.LOWER_LR, f"{why}; LR scale {old:.3g} → {s.scale:.3g}")
        return Decision(scale=s.scale, incidents=(note,))

    def _target(self, since: int | None) -> dict[str, Any] | None:
        """The newest snapshot taken before ``since`` (the incident's first step), or the newest one."""
        ring = self.state.ring
        before = [r for r in ring if since is None or r["step"] <= since]
        return before[-1] if before else (ring[0] if ring else None)

    def _rollback(
        self, step: int, signal: Signal, value: float, threshold: float, why: str, since: int | None = None
    ) -> Decision:
        """Rung 4: restore the newest snapshot before the incident and cut the LR, by ``lr_factor`` more at each
        rollback (× lr_factor, then lr_factor², …: a spike that comes back means the LR is still too high);
        rung 5 when the budget is spent."""
        s, c = self.state, self.config
        s.run, s.run_starts = [], []
        self.cusum.reset()
        if not s.can_roll_back:
            return self._cut_instead(step, signal, value, threshold, why)
        target = self._target(since)
        if target is not None:
            self._point_to(target)
        if s.rollbacks >= c.max_rollbacks or s.snapshot_step is None:
            if s.snapshot_step is None:
                reason = f"{why} at step {step}, and there is no clean snapshot to return to"
            else:
                reason = (
                    f"{why} at step {step}, and all {c.max_rollbacks} rollbacks (max_rollbacks) are used; "
                    f"the last good state (before step {s.snapshot_step}{self._start_note()}) is restored"
                )
            s.halted = reason
            note = Incident(step, signal, value, threshold, Action.HALT, reason, rollback_to=s.snapshot_step)
            return Decision(
                rollback=s.snapshot_step is not None, halt=reason, incidents=(note,), rollback_to=s.snapshot_step
            )
        s.rollbacks += 1
        s.undone, s.guarded, s.refundable = (int(s.snapshot_step), step), 0, True
        s.clean_since_rollback, s.normal_since_rollback, s.skip_pending = 0, False, c.skip_after_rollback
        self._load_snapshot_baselines()
        s.scale_before_rollback, s.ceiling_before_rollback = s.scale, s.ceiling
        began = step if since is None else since
        # trouble that began while the LR warmed up (or before the loss had a baseline): the LR, not a passing fault
        early = not self.ready or (bool(s.shares) and (s.warmup_end is None or began < s.warmup_end))
        ceiling = ""
        if s.raised:  # the weights were damaged again after a clean stretch raised the LR: that LR is too high
            s.ceiling = min(s.ceiling, s.scale * c.lr_factor)
            ceiling = f"; damaged again after a raise, so clean stretches raise it to {s.ceiling:.3g} at most"
        s.raised = False
        old, s.scale = s.scale, max(s.scale * c.lr_factor**s.rollbacks, c.min_lr_scale)
        if early:
            share = self._share_at(began)
            s.scale = max(min(s.scale, old * c.lr_factor * share), c.min_lr_scale)
            s.ceiling = min(s.ceiling, s.scale)
            ceiling = (
                f"; the trouble began at step {began}, while the LR warmed up, at {share:.0%} of its planned peak: "
                f"the peak is too high for this run, so the scale goes below lr_factor × that share and clean "
                f"stretches do not raise it above {s.ceiling:.3g}"
            )
        s.last_cut, s.rollback_cut = step, s.scale / old
        detail = (
            f"{why}; back to the snapshot before step {s.snapshot_step}{self._start_note()} "
            f"(rollback {s.rollbacks} of {c.max_rollbacks}), LR scale {old:.3g} → {s.scale:.3g}{ceiling}"
            f"{self._rewarm(step)}"
        )
        note = Incident(step, signal, value, threshold, Action.ROLLBACK, detail, rollback_to=s.snapshot_step)
        return Decision(scale=s.scale, rollback=True, incidents=(note,), rollback_to=s.snapshot_step)

    def _cut_instead(self, step: int, signal: Signal, value: float, threshold: float, why: str) -> Decision:
        """No snapshot to go back to (``snapshot="off"``): lower the LR as a rollback would, keep the weights;
        halt (keeping them) once ``max_rollbacks`` such cuts are spent."""
        s, c = self.state, self.config
        if s.rollbacks >= c.max_rollbacks:
            reason = f"{why} at step {step}, and all {c.max_rollbacks} cuts (max_rollbacks) are used; snapshot='off'"
            s.halted = reason
            return Decision(halt=reason, incidents=(Incident(step, signal, value, threshold, Action.HALT, reason),))
        s.rollbacks += 1
        old, s.scale = s.scale, max(s.scale * c.lr_factor**s.rollbacks, c.min_lr_scale)
        s.last_cut = step
        detail = f"{why}; snapshot='off': no rollback, LR scale {old:.3g} → {s.scale:.3g}"
        return Decision(scale=s.scale, incidents=(Incident(step, signal, value, threshold, Action.LOWER_LR, detail),))

    def _start_note(self) -> str:
        """Said in the log when a rollback goes back to the run's start: the last resort."""
        s = self.state
        if s.snapshot_step is not None and s.snapshot_step == s.first_step and s.accepted > s.snapshot_every:
            return ", the start of the run: no later clean snapshot was left (a last resort)"
        return ""

    def _accepted(self, step: int, loss: float, grad_norm: float, probe: Probe | None = None) -> Decision:
        s = self.state
        s.run, s.last_accepted, s.data_skips = [], step, 0
        if s.clean_since_rollback is not None:
            s.clean_since_rollback += 1
        if s.guarded is not None:
            s.guarded = None if s.guarded + 1 >= self.config.patience else s.guarded + 1
        x, y = log_value(loss), log_value(grad_norm)
        ready = self.ready
        if x is not None:
            if ready and len(self.loss):
                self.cusum.update(x, self.loss.center, self.loss.spread, step)
                s.normal_since_rollback = s.normal_since_rollback or self.cusum.value == 0.0
            self.loss.add(x)
            if len(s.first_losses) < self._flat_points():
                s.first_losses.append(x)
        if y is not None:
            self.grad.add(y)
        s.accepted += 1
        decision = self._trend(step, probe) if ready else Decision()
        if not decision.incidents:
            decision = self._recover(step)
        flat = self._flat_check(step)
        if flat is not None:
            decision = dataclasses.replace(decision, incidents=(*decision.incidents, flat))
        return decision

    def _trend(self, step: int, probe: Probe | None = None) -> Decision:
        """The CUSUM alarmed, or, while the LR warms up, the loss has stayed more than ``max_level_shift`` above
        the level before the climb for ``patience`` steps (then the loss is still falling fast or already
        unstable, and the spread that this widens keeps the sum from seeing a climb): a change of data gets a new
        baseline, a climb or a big jump an LR cut or a rollback.

        Acts only once ``patience`` values since the change began can tell the cases apart:

        - the weights were just restored from a clean snapshot and the loss was never back at its old level:
          the data changed (the rollback's LR cut is undone);
        - a step up by at most ``max_level_shift`` that stays flat: a change of data;
        - anything else (still rising, or up by more): divergence. The LR is cut; if the loss stays up after
          a cut (a second alarm within ``cooldown_steps``), the run is rolled back.
        """
        cusum, s, c = self.cusum, self.state, self.config
        if len(cusum.since_start) < c.patience or cusum.reference is None:
            return Decision()
        if not cusum.alarm and not (self.warming_up and cusum.risen(c.patience, math.log(c.max_level_shift))):
            return Decision()
        center, spread = cusum.reference
        values, value = list(cusum.since_start), cusum.value
        elevation = statistics.median(values) - center
        change = f"the loss rose {math.exp(elevation) - 1.0:+.1%} over {len(values)} steps"
        within = elevation <= math.log(c.max_level_shift)
        damaged = self._damaged(probe)
        if damaged is True:
            since = cusum.start
            why = f"{change}, and the clean reference batch's loss rose to {self._probe_value:.4g}: damaged weights"
            return self._rollback(step, Signal.DAMAGED_WEIGHTS, self._probe_value, self._probe_limit, why, since)
        if damaged is False and not within:
            cusum.restart()
            detail = f"{change}, beyond max_level_shift, while the reference batch shows sound weights: watching"
            return Decision(incidents=(Incident(step, Signal.BAD_DATA, value, c.cusum_threshold, Action.WARN, detail),))
        if s.clean_since_rollback is not None and not s.normal_since_rollback and within:
            self.loss.reset(values, refill=c.warmup_steps)
            cusum.reset()
            self.samples.reset()
            s.clean_since_rollback = None
            old, s.scale = s.scale, s.scale_before_rollback
            detail = (
                f"{change} on the restored weights: a change of data; new baseline, LR scale {old:.3g} → {s.scale:.3g}"
            )
            note = Incident(step, Signal.LOSS_TREND, value, c.cusum_threshold, Action.REBASELINE, detail)
            return Decision(scale=s.scale if s.scale != old else None, incidents=(note,))
        if within and (damaged is False or trend(values, spread) == "flat"):
            self.loss.reset(values, refill=c.warmup_steps)
            cusum.reset()
            self.samples.reset()
            detail = f"{change} and stayed flat (a level shift within max_level_shift): new baseline"
            return Decision(
                incidents=(Incident(step, Signal.LOSS_TREND, value, c.cusum_threshold, Action.REBASELINE, detail),)
            )
        cusum.restart()
        decision = self._lower(step, Signal.LOSS_TREND, value, c.cusum_threshold, change)
        if decision.incidents:
            return decision
        return self._rollback(step, Signal.LOSS_TREND, value, c.cusum_threshold, f"{change}, despite a recent LR cut")

    def _recover(self, step: int) -> Decision:
        """After ``recover_after`` steps (or that share of the run) with no incident, undo one LR cut; the wait
        doubles with each rollback of the run. Never above the ceiling: a scale that was raised back to and
        damaged the weights again (repeated trouble at one LR means that LR is too high) stays ``lr_factor``
        below it for the rest of the run."""
        s, c = self.state, self.config
        top = min(s.ratio_cut, s.ceiling)
        if s.recover_steps is None or s.scale >= top or s.last_change is None:
            return Decision()
        wait = s.recover_steps * 2**s.rollbacks  # each rollback says an earlier raise may have come too soon
        if step - s.last_change < wait:
            return Decision()
        old, s.scale = s.scale, _snap(min(top, s.scale / c.lr_factor))
        s.raised = True
        detail = f"{step - s.last_change} steps without incident; LR scale {old:.3g} → {s.scale:.3g}"
        note = Incident(step, Signal.CLEAN_STRETCH, step - s.last_change, s.recover_steps, Action.RAISE_LR, detail)
        return Decision(scale=s.scale, incidents=(note,))

    def _flat_points(self) -> int:
        return max(5, (self.config.flat_loss_steps or 0) // 10)

    def _flat_check(self, step: int) -> Incident | None:
        """Once, after ``flat_loss_steps`` accepted steps: warn if the loss barely fell (the LR may be too low)."""
        s, c = self.state, self.config
        if c.flat_loss_steps is None or s.flat_checked or s.accepted < c.flat_loss_steps:
            return None
        s.flat_checked = True
        points = self._flat_points()
        recent = self.loss.values[-points:]
        if len(s.first_losses) < points or len(recent) < points:
            return None
        early, late = statistics.median(s.first_losses), statistics.median(recent)
        drop = 1.0 - math.exp(late - early)
        if drop >= c.flat_loss_drop:
            return None
        # a loss that ended higher than it began was not too slow: training made it worse
        cause = "the LR may be too low" if drop > -c.flat_loss_drop else "the LR may be too high"
        detail = (
            f"the loss went from {math.exp(early):.4g} to {math.exp(late):.4g} ({-drop:+.2%}) over the first "
            f"{s.accepted} steps: {cause}"
        )
        return Incident(step, Signal.FLAT_LOSS, drop, c.flat_loss_drop, Action.WARN, detail)

    # --- state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self.state)
        return {
            "state": state,
            "loss": self.loss.state_dict(),
            "grad": self.grad.state_dict(),
            "cusum": self.cusum.state_dict(),
            "events": [e.state() for e in self.events],
            "updates": {name: baseline.state_dict() for name, baseline in self.updates.items()},
            "samples": {**self.samples.state_dict(), "size": self._sample_size},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"state", "loss", "grad", "cusum", "events"} - set(state)
        if missing:
            raise ValueError(f"{OWNER}: the checkpoint's state lacks {sorted(missing)}; was it written by it?")
        plain = dict(state["state"])
        plain["run"] = [_RunStep(**r) for r in plain["run"]]
        for key in ("undone", "rewarm"):
            if plain.get(key) is not None:
                plain[key] = tuple(plain[key])
        plain["shares"] = [tuple(pair) for pair in plain.get("shares", [])]
        self.state = _State(**plain)
        self.loss.load_state_dict(state["loss"])
        self.grad.load_state_dict(state["grad"])
        self.cusum.load_state_dict(state["cusum"])
        self.events = [Incident(**e) for e in state["events"]]
        self.updates = {}
        for name, saved in state.get("updates", {}).items():
            self.updates[name] = self._update_baseline()
            self.updates[name].load_state_dict(saved)
        self.samples.reset()
        self._sample_size = 0.0
        if "samples" in state:  # a checkpoint of an older version has none
            self.samples.load_state_dict(state["samples"])
            self._sample_size = float(state["samples"]["size"])


def _snap(scale: float) -> float:
    """1.0 for a scale within rounding of it (a product of cuts and their inverses)."""
    return 1.0 if abs(scale - 1.0) < 1e-9 else scale
