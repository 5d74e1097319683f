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

A step up in the loss that stays flat is a change of data, not divergence: after a slow climb that turns out
flat, or when outliers persist on the freshly restored weights of a rollback, the baseline is rebuilt from
the new level (and the rollback's LR cut is undone) instead of acting again.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from lr_callbacks.watchdog.config import OWNER, Action, Incident, Signal, WatchdogConfig
from lr_callbacks.watchdog.stats import Cusum, Gate, RollingBaseline, Verdict, judge, log_value, trend

__all__ = ["Decision", "WatchdogPolicy"]


@dataclass(frozen=True)
class Decision:
    """What the callback must do after a step was recorded.

    Attributes:
        scale: the new LR scale, or ``None`` to keep it.
        rollback: restore the last clean snapshot (and skip the current step's update).
        halt: the reason to stop the run (the last good state is restored and saved first), or ``None``.
        incidents: what was done, for the log.
    """

    scale: float | None = None
    rollback: bool = False
    halt: str | None = None
    incidents: tuple[Incident, ...] = ()


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
        self.state = _State()
        self.events: list[Incident] = []

    # --- read-outs ---------------------------------------------------------------------------------

    @property
    def scale(self) -> float:
        """The current LR multiplier."""
        return self.state.scale

    @property
    def ready(self) -> bool:
        """Whether the warmup is over, so outliers and trends are judged."""
        return self.state.accepted >= self.config.warmup_steps

    @property
    def incident_open(self) -> bool:
        """A run of outliers is in progress: the live weights are not known to be clean."""
        return bool(self.state.run)

    def gate(self) -> Gate:
        """The limits a step is judged against now (``inf`` during warmup)."""
        if not self.ready:
            return Gate(clip=self.config.outlier_action == "clip")
        c = self.config
        return Gate(
            loss_limit=self.loss.limit(c.z_threshold) if len(self.loss) else math.inf,
            grad_limit=self.grad.limit(c.grad_z_threshold) if len(self.grad) else math.inf,
            clip=self.config.outlier_action == "clip",
        )

    def z_scores(self, loss: float, grad_norm: float) -> dict[str, float]:
        """The robust z-scores of a step's loss and gradient norm (only those that can be computed)."""
        scores = {}
        for name, value, baseline in (("loss_z", loss, self.loss), ("grad_norm_z", grad_norm, self.grad)):
            x = log_value(value)
            if x is not None and len(baseline):
                scores[name] = baseline.z(x)
        return scores

    def judge(self, loss: float, grad_norm: float) -> Verdict:
        """The verdict for a step, including the skips that follow a rollback."""
        if self.state.skip_pending:
            return Verdict(skip=True, forced=True)
        return judge(self.gate(), loss, grad_norm)

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
        return s.snapshot_requested or s.snapshot_step is None or step - s.snapshot_step >= self.config.snapshot_every

    def snapshot_taken(self, step: int) -> None:
        """Note that the state before ``step``'s update was snapshotted (a rollback restores these baselines)."""
        self.state.snapshot_step, self.state.snapshot_requested = step, False
        self.state.snapshot_stats = {"loss": self.loss.state_dict(), "grad": self.grad.state_dict()}

    def request_snapshot(self) -> None:
        """Take a snapshot at the next clean step (after a resume or a checkpoint)."""
        self.state.snapshot_requested = True

    # --- the ladder --------------------------------------------------------------------------------

    def record(self, step: int, loss: float, grad_norm: float, verdict: Verdict) -> Decision:
        """Record ``step`` with the ``verdict`` it was given; return what must be done now."""
        s = self.state
        if s.halted:
            return Decision()
        if verdict.forced:
            s.skip_pending -= 1
            note = Incident(step, Signal.AFTER_ROLLBACK, loss, math.nan, Action.SKIP, f"{s.skip_pending} more to skip")
            return self._emit(Decision(incidents=(note,)))
        if verdict.signals:
            return self._emit(self._outlier(step, loss, grad_norm, verdict))
        return self._emit(self._accepted(step, loss, grad_norm))

    def _emit(self, decision: Decision) -> Decision:
        self.events.extend(decision.incidents)
        if decision.incidents:
            self.state.last_change = decision.incidents[-1].step
        return decision

    def _outlier(self, step: int, loss: float, grad_norm: float, verdict: Verdict) -> Decision:
        s, c = self.state, self.config
        action = Action.SKIP if verdict.skip else Action.CLIP
        gate = self.gate()
        incidents = []
        for signal in verdict.signals:
            value, limit = (grad_norm, gate.grad_limit) if signal is Signal.GRAD_NORM else (loss, gate.loss_limit)
            if signal is Signal.NON_FINITE:
                value = loss if not math.isfinite(loss) else grad_norm
            threshold = math.exp(limit) if signal is not Signal.NON_FINITE and math.isfinite(limit) else math.nan
            detail = "" if verdict.skip else f"gradient × {verdict.clip_factor:.3g}"
            incidents.append(Incident(step, signal, value, threshold, action, detail))
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
        return Decision(
            scale=escalation.scale,
            rollback=escalation.rollback,
            halt=escalation.halt,
            incidents=(*incidents, *escalation.incidents),
        )

    def _persistent(self, step: int) -> Decision:
        """``patience`` outliers in a row: a change of data if the restored weights see it too, else roll back."""
        s = self.state
        run, s.run = s.run, []
        finite = not any(r.non_finite for r in run)
        if finite and s.clean_since_rollback == 0:
            return self._rebaseline_after_rollback(step, run)
        kind = "non-finite" if not finite else "outlying"
        return self._rollback(
            step, Signal.PERSISTENT_OUTLIERS, len(run), self.config.patience, f"{len(run)} {kind} steps in a row"
        )

    def _rebaseline_after_rollback(self, step: int, run: list[_RunStep]) -> Decision:
        """Outliers persist on weights just restored from a clean snapshot: the data changed, not the model."""
        s, c = self.state, self.config
        if any(r.loss_out for r in run):
            self.loss.reset([r.loss for r in run if r.loss is not None], refill=c.warmup_steps)
        if any(r.grad_out for r in run):
            self.grad.reset([r.grad for r in run if r.grad is not None], refill=c.warmup_steps)
        self.cusum.reset()
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

    def _rollback(self, step: int, signal: Signal, value: float, threshold: float, why: str) -> Decision:
        """Rung 4: restore the last clean snapshot and cut the LR; rung 5 when the budget is spent."""
        s, c = self.state, self.config
        s.run, s.run_starts = [], []
        self.cusum.reset()
        if s.rollbacks >= c.max_rollbacks or s.snapshot_step is None:
            if s.snapshot_step is None:
                reason = f"{why} at step {step}, and there is no clean snapshot to return to"
            else:
                reason = (
                    f"{why} at step {step}, and all {c.max_rollbacks} rollbacks (max_rollbacks) are used; "
                    f"the last good state (before step {s.snapshot_step}) is restored"
                )
            s.halted = reason
            note = Incident(step, signal, value, threshold, Action.HALT, reason, rollback_to=s.snapshot_step)
            return Decision(rollback=s.snapshot_step is not None, halt=reason, incidents=(note,))
        s.rollbacks += 1
        s.clean_since_rollback, s.normal_since_rollback, s.skip_pending = 0, False, c.skip_after_rollback
        if s.snapshot_stats is not None:
            self.loss.load_state_dict(s.snapshot_stats["loss"])
            self.grad.load_state_dict(s.snapshot_stats["grad"])
        s.scale_before_rollback = s.scale
        old, s.scale = s.scale, max(s.scale * c.lr_factor, c.min_lr_scale)
        s.last_cut = step
        detail = (
            f"{why}; back to the snapshot before step {s.snapshot_step} "
            f"(rollback {s.rollbacks} of {c.max_rollbacks}), LR scale {old:.3g} → {s.scale:.3g}"
        )
        note = Incident(step, signal, value, threshold, Action.ROLLBACK, detail, rollback_to=s.snapshot_step)
        return Decision(scale=s.scale, rollback=True, incidents=(note,))

    def _accepted(self, step: int, loss: float, grad_norm: float) -> Decision:
        s = self.state
        s.run, s.last_accepted = [], step
        if s.clean_since_rollback is not None:
            s.clean_since_rollback += 1
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
        decision = self._trend(step) if ready else Decision()
        if not decision.incidents:
            decision = self._recover(step)
        flat = self._flat_check(step)
        if flat is not None:
            decision = Decision(decision.scale, decision.rollback, decision.halt, (*decision.incidents, flat))
        return decision

    def _trend(self, step: int) -> Decision:
        """The CUSUM alarmed: a change of data gets a new baseline, a climb or a big jump an LR cut or a rollback.

        Acts only once ``patience`` values since the change began can tell the cases apart:

        - the weights were just restored from a clean snapshot and the loss was never back at its old level:
          the data changed (the rollback's LR cut is undone);
        - a step up by at most ``max_level_shift`` that stays flat: a change of data;
        - anything else (still rising, or up by more): divergence. The LR is cut; if the loss stays up after
          a cut (a second alarm within ``cooldown_steps``), the run is rolled back.
        """
        cusum, s, c = self.cusum, self.state, self.config
        if not cusum.alarm or len(cusum.since_start) < c.patience or cusum.reference is None:
            return Decision()
        center, spread = cusum.reference
        values, value = list(cusum.since_start), cusum.value
        elevation = statistics.median(values) - center
        change = f"the loss rose {math.exp(elevation) - 1.0:+.1%} over {len(values)} steps"
        if s.clean_since_rollback is not None and not s.normal_since_rollback:
            self.loss.reset(values, refill=c.warmup_steps)
            cusum.reset()
            s.clean_since_rollback = None
            old, s.scale = s.scale, s.scale_before_rollback
            detail = (
                f"{change} on the restored weights: a change of data; new baseline, LR scale {old:.3g} → {s.scale:.3g}"
            )
            note = Incident(step, Signal.LOSS_TREND, value, c.cusum_threshold, Action.REBASELINE, detail)
            return Decision(scale=s.scale if s.scale != old else None, incidents=(note,))
        if trend(values, spread) == "flat" and elevation <= math.log(c.max_level_shift):
            self.loss.reset(values, refill=c.warmup_steps)
            cusum.reset()
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
        """After ``recover_after`` steps with no incident, undo one LR cut (toward 1.0)."""
        s, c = self.state, self.config
        if c.recover_after is None or s.scale >= 1.0 or s.last_change is None:
            return Decision()
        if step - s.last_change < c.recover_after:
            return Decision()
        old, s.scale = s.scale, min(1.0, s.scale / c.lr_factor)
        detail = f"{step - s.last_change} steps without incident; LR scale {old:.3g} → {s.scale:.3g}"
        note = Incident(step, Signal.CLEAN_STRETCH, step - s.last_change, c.recover_after, Action.RAISE_LR, detail)
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
        detail = (
            f"the loss went from {math.exp(early):.4g} to {math.exp(late):.4g} ({-drop:+.2%}) over the first "
            f"{s.accepted} steps: the LR may be too low"
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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"state", "loss", "grad", "cusum", "events"} - set(state)
        if missing:
            raise ValueError(f"{OWNER}: the checkpoint's state lacks {sorted(missing)}; was it written by it?")
        plain = dict(state["state"])
        plain["run"] = [_RunStep(**r) for r in plain["run"]]
        self.state = _State(**plain)
        self.loss.load_state_dict(state["loss"])
        self.grad.load_state_dict(state["grad"])
        self.cusum.load_state_dict(state["cusum"])
        self.events = [Incident(**e) for e in state["events"]]
