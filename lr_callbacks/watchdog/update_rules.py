"""The LR-instability signal's rules: the update's size relative to the weights, for the planned LR.

A too-high LR shows in the update before the loss blows up. :meth:`UpdateRatioRules.record_update` judges
each sampled update (``‖Δθ‖ / ‖θ‖`` per parameter group, measured by the callback every ``update_every``
steps) against its own rolling baseline, lowers the LR scale in proportion to an outlier and undoes the few
updates made at that LR, and gives the cut back once the signal says the cause has passed. Pure: no torch,
no Lightning.
"""

from __future__ import annotations

import math
from typing import Any

from lr_callbacks.watchdog.config import Action, Incident, Signal
from lr_callbacks.watchdog.memory import PolicyMemory
from lr_callbacks.watchdog.state import Decision, snap
from lr_callbacks.watchdog.stats import exp_value, log_value

__all__ = ["UpdateRatioRules"]


class UpdateRatioRules(PolicyMemory):
    """The update-ratio signal's judgement and its LR cuts (a part of
    :class:`~lr_callbacks.watchdog.policy.WatchdogPolicy`)."""

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
        update_every`` samples (at least 5) and once the warmup is over; accepted samples form its baseline
        (it keeps at least the last 10).
        """
        s = self.state
        if s.halted:
            return Decision()
        values, excess, high = self._update_signal(ratios, grad_norm)
        # after a cut c the signal sits near its center while the cause lasts and near log(c) once it has passed:
        # the cut is undone when every group is nearer the latter (and below its center by a spread or more)
        restored = 0.5 * math.log(s.ratio_cut)
        low = bool(excess) and all(e < min(restored, -self.updates[n].spread) for n, e in excess.items())
        if high:
            return self._emit(self._ratio_cut(step, max(high.values()), ratios, high))
        if low and s.ratio_cut < 1.0:
            return self._emit(self._ratio_restore(step, max(excess.values())))  # excess: for the log
        for name, value in values.items():
            self.updates.setdefault(name, self._update_baseline()).add(value)
        return Decision()

    def would_cut(self, ratios: dict[str, tuple[float, float]], grad_norm: float = math.nan) -> bool:
        """Whether :meth:`record_update` would find this update too large, with nothing recorded (a checkpoint
        written before the update is judged asks, so as not to keep weights that the judgement would undo)."""
        return not self.state.halted and bool(self._update_signal(ratios, grad_norm)[2])

    def _update_signal(
        self, ratios: dict[str, tuple[float, float]], grad_norm: float
    ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """Per group: the signal ``u``; its excess over its center where it is judged; the excesses beyond
        ``update_z_threshold`` spreads. Nothing is recorded."""
        s, c = self.state, self.config
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
        return values, excess, high

    def _gradient_excess(self, grad_norm: float) -> float:
        """How far above its baseline the sampled step's gradient norm was (log units, ≥ 0): a larger gradient
        makes a larger update under SGD, and that is the data's doing, not the LR's."""
        y = log_value(grad_norm)
        if y is None or not len(self.grad):
            return 0.0
        return max(0.0, y - self.grad.center)

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
        # a rollback's cut that a change of data undoes gives the scale from before the rollback back, with this
        # cut in it: it is this signal's to undo (before, the scale went back to 1 while the fault lasted, unseen)
        s.scale_before_rollback = max(s.scale_before_rollback * s.scale / old, c.min_lr_scale)
        name = max(high, key=lambda n: high[n])
        ratio = ratios[name][0]
        threshold = ratio * math.exp(-excess + c.update_z_threshold * self.updates[name].spread)
        target = self._ratio_target(step)
        if target is not None:
            s.ratio_rollbacks += 1
            self._restore(target)
            s.undone, s.guarded, s.refundable = (int(target["step"]), step), 0, False
            # the last rollback is this one, and its cut is this signal's: bad data found on the weights it restored
            # undoes no ladder cut (before, it undid the cut of the ladder's last rollback, even one a clean stretch
            # had already given back: an LR fault ×10 cut to 0.099 went to 0.198 while it lasted)
            s.rollback_cut = 1.0
            undone = (
                f"; its updates since step {target['step']} are undone (back to the snapshot before step "
                f"{target['step']}, {s.ratio_rollbacks} of {c.max_rollbacks}){self._rewarm(step)}"
            )
        else:
            undone = ""
        detail = (
            f"the update of group {name!r} is {exp_value(excess):.3g}× its usual size for the planned LR: the LR "
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
        if before:
            return before[-1]
        # none from before the window (a resumed run holds only the checkpoint's; frequent checkpoints take one at
        # every step): the newest from before the measured update still undoes it
        ahead = [r for r in s.ring if r["step"] <= step]
        return ahead[-1] if ahead else None

    def _ratio_restore(self, step: int, excess: float) -> Decision:
        s = self.state
        factor = 1.0 / s.ratio_cut  # the cause has passed: the whole cut this signal made goes
        # up to the ceiling a scale that damaged the weights again left (a cut of the ladder that min_lr_scale held
        # back while this one was in force is not given back with it), and never down
        old, s.scale = s.scale, snap(max(s.scale, min(s.ceiling, s.scale * factor)))
        s.ratio_cut = snap(min(1.0, s.ratio_cut * factor))
        before = s.scale_before_rollback
        s.scale_before_rollback = snap(max(before, min(s.ceiling_before_rollback, before * factor)))
        detail = (
            f"the update is back below its usual size for the planned LR: what made it too large has passed; "
            f"LR scale {old:.3g} → {s.scale:.3g}"
        )
        note = Incident(step, Signal.UPDATE_RATIO, math.exp(excess), math.nan, Action.RAISE_LR, detail)
        return Decision(scale=s.scale, incidents=(note,))
