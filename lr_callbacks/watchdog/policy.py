"""The watchdog's action ladder, pure: each optimizer step's loss and gradient norm in, decisions out.

No torch and no Lightning here: :class:`WatchdogPolicy` is a state machine over plain floats, so every rung
can be tested with made-up numbers, and the callback (``watchdog/callback.py``) only reads the trainer and applies
what it is told.

The policy is one class over five modules, each one concern: ``state.py`` (its plain data: the decision it hands
the callback, and the state a checkpoint holds), ``memory.py`` (what it remembers: baselines, the snapshot ring,
the planned LR's warmup), ``data_rules.py`` (bad data told from damaged weights), ``update_rules.py`` (the
LR-instability signal), and this one, the ladder that :meth:`WatchdogPolicy.record` runs.

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
from typing import Any

from lr_callbacks.watchdog.config import Action, Incident, Signal
from lr_callbacks.watchdog.data_rules import DataRules
from lr_callbacks.watchdog.state import Decision, Probe, RunStep, snap
from lr_callbacks.watchdog.stats import Gate, Samples, Verdict, exp_value, expm1_value, judge, log_value, trend
from lr_callbacks.watchdog.update_rules import UpdateRatioRules

__all__ = ["GUARD_Z_SHARE", "WatchdogPolicy"]

GUARD_Z_SHARE = 0.5
"""After a rollback, until ``patience`` steps in a row are accepted, a step's loss is judged at this share of
``z_threshold``: what damaged the weights may still be coming (a burst of bad batches that each stayed under
the threshold), and the clean reference batch tells bad data from damaged weights at every such outlier."""


PEAK_CUT = 0.1
"""Trouble while the planned LR warms up, or at its peak before the run has trained there as long as the warmup took,
means the peak is too high for the run: the rollback cuts the scale to this × the LR's share of its peak when the
trouble began (an order of magnitude below the LR that broke the run, as an LR range test reads its edge: fastai's
``minimum / 10``), and goes back to before the LR first passed the cut LR, the run's start when it broke early in the
warmup. A run is far more forgiving of an LR below its best than above: charlm at 30× its best LR, caught at its
peak (step 50 of a 40-step warmup), ended at 2.95 after a ×0.5 cut from the snapshot before step 40, 2.85 after a ×0.1
cut from there (the weights trained at 15-30× had already lost what a good LR learns), and 2.25 sent back to its start
with this cut (the best LR ends at 2.24)."""


class WatchdogPolicy(UpdateRatioRules, DataRules):
    """The ladder as a state machine: :meth:`judge` a step, apply the verdict, then :meth:`record` it.

    >>> from lr_callbacks.watchdog.config import WatchdogConfig
    >>> policy = WatchdogPolicy(WatchdogConfig(warmup_steps=5, window=20))
    >>> for step in range(10):
    ...     loss = 1.0 + 0.01 * (step % 3)
    ...     _ = policy.record(step, loss, 2.0, policy.judge(loss, 2.0))
    >>> verdict = policy.judge(1000.0, 2.0)
    >>> verdict.skip, policy.record(10, 1000.0, 2.0, verdict).incidents[0].action
    (True, 'skip')
    """

    def gate(self, samples: float | None = None) -> Gate:
        """The limits a step is judged against now; its per-sample count limit for a batch of ``samples`` (over
        all ranks), by default for the largest batch seen (as the device judges: no more skips than exact).

        During the warmup, before the baseline exists, the loss is held against the run's own losses: once there
        are five, a loss above ``max_level_shift`` × the highest accepted so far (counted at most
        ``max_level_shift`` × the first five's highest) is trouble (the LR warming up into instability). The
        highest, not their median: a batch's loss varies around its level, widely for small batches at a low loss
        (a fine-tuned model's batch of 8 can read twice another's), and a batch is trouble only when it is worse
        by the factor than every one before it. From scratch the first losses all sit at the loss of the initial
        weights, the highest of the run. The losses accepted are the baseline's, which a rollback takes back to
        the snapshot's and a rebaseline empties.
        """
        if not self.ready:
            if len(self.state.first_losses) < 5:
                return Gate(clip=self.config.outlier_action == "clip")
            return Gate(loss_limit=self._first_losses_limit(), clip=self.config.outlier_action == "clip")
        c = self.config
        z = c.z_threshold * (GUARD_Z_SHARE if self._guarded() else 1.0)
        return Gate(
            loss_limit=self.loss.limit(z) if len(self.loss) and not self.state.signed_loss else math.inf,
            grad_limit=self.grad.limit(c.grad_z_threshold) if len(self.grad) else math.inf,
            clip=self.config.outlier_action == "clip",
            sample_limit=self.samples.limit,
            sample_count=self.samples.max_count(self._sample_size if samples is None else samples),
        )

    def _first_losses_limit(self) -> float:
        """``max_level_shift`` × the highest of the run's first (up to five) losses and of the losses accepted
        since, these at most ``max_level_shift`` × the first five's highest, in log units: the warmup's gate once
        there are five, and the check of the first updates before. Only the first five, before, skipped a
        fine-tuned MiniLM's clean batches of 8 at 1.6-1.8× them; without the bound, a loss climbing by less than
        the factor at each step would raise the gate with it and never be held."""
        shift = math.log(self.config.max_level_shift)
        first = max(self.state.first_losses[:5])
        return max(first, min(self.loss.highest, first + shift)) + shift

    def gradients_widened(self) -> None:
        """More parameter tensors have gradients than at any step before (a frozen backbone trains from now
        on, as ``BackboneFinetuning`` or a module's own ``requires_grad_`` makes it), or than at each of the last
        ``warmup_steps`` steps or more (parameters frozen for a while train again): the gradient norm and each
        group's update change their scale, not their health, so their baselines start again from the steps to
        come (the loss's stays). Before, the first 10-18 steps after an unfreeze were skipped as gradient-norm
        outliers, or the new group's update ratio rolled a clean run back."""
        self.grad.reset([], refill=self.config.warmup_steps)
        self.updates.clear()

    def rebaseline(self, step: int, why: str = "") -> Incident:
        """The user says the loss's level changes by design from ``step`` on (harder data, a loss term switched
        on): the loss's, the gradient norm's and the update's baselines start again from the steps to come (the
        current spread a floor while they refill, as after any new baseline), no incident stays open, and the next
        clean step is snapshotted, its batch the reference that tells bad data from damaged weights from then on
        (the last one holds the old data, or the old loss). Its incident does not count as trouble: the snapshot
        is not held back as after one. During the watchdog's warmup, the gate of ``max_level_shift`` × the first
        losses and the first-loss floor of damage while the LR warms up start from the new level too, and the
        lows that tell that damage wait for the new reference; the one-off flat-loss check is not made."""
        self._new_baselines()
        detail = "asked for (rebaseline()): the loss changes by design; new baselines and a new reference batch"
        incident = Incident(step, Signal.REQUESTED, math.nan, math.nan, Action.REBASELINE, f"{detail}{why}")
        self.events.append(incident)
        return incident

    def _new_baselines(self) -> None:
        """The loss's level moved by the data's doing: every baseline starts again from the steps to come, no
        incident stays open, and the next clean step is snapshotted with its batch as the new reference."""
        c, s = self.config, self.state
        self.loss.reset([], refill=c.warmup_steps)
        self.grad.reset([], refill=c.warmup_steps)
        self.updates.clear()
        self.cusum.reset()
        self.samples.reset()
        s.run, s.run_starts, s.data_skips, s.snapshot_requested = [], [], 0, True
        if not self.ready:  # the watchdog's warmup: its gate and the first-loss floor start from the new level
            s.first_losses, s.early_steps = [], []
        s.flat_checked = True  # "the loss barely fell from its first level" no longer compares like with like
        s.low_loss = s.low_reference = s.low_reference_step = None  # until the new snapshot's reference

    def _guarded(self) -> bool:
        """The stricter loss gate after a rollback holds (only with a reference batch to tell the cause)."""
        s = self.state
        return s.guarded is not None and bool(s.ring) and s.ring[-1]["reference"] is not None

    def judge(self, loss: float, grad_norm: float, samples: Samples | None = None) -> Verdict:
        """The verdict for a step (``samples``: its per-sample summary, ``None`` without per-sample losses),
        including the skips that follow a rollback."""
        if self.state.skip_pending:
            return Verdict(skip=True, forced=True)
        if samples is None:
            return judge(self.gate(), loss, grad_norm)
        return judge(self.gate(samples.n), loss, grad_norm, samples.count)

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
        if loss < 0.0 and math.isfinite(loss) and not s.signed_loss:
            self._loss_signed()
        if s.rewarm is not None:
            start, length = s.rewarm
            s.ramp = min(1.0, max(step - start, 1) / length)
            if s.ramp >= 1.0:
                s.rewarm = None
        if self.scaled and verdict.signals == (Signal.NON_FINITE,) and math.isfinite(loss) and not verdict.forced:
            # a GradScaler's overflow: a finite loss whose scaled gradients overflowed. The scaler skips the step
            # itself and lowers its scale; it is how it calibrates, not an incident (before, `patience` of them in a
            # row, as a scale of 2**30 calibrates, rolled the run back and halved its LR)
            return Decision()
        if samples is not None:
            self._sample_size = max(self._sample_size, samples.n)
        if verdict.forced:
            s.skip_pending -= 1
            note = Incident(step, Signal.AFTER_ROLLBACK, loss, math.nan, Action.SKIP, f"{s.skip_pending} more to skip")
            return self._emit(Decision(incidents=(note,)))
        self._note_early(step, loss, Signal.LOSS in verdict.signals)
        if Signal.SAMPLE_OUTLIERS in verdict.signals:
            damaged = self._damaged(probe)
            if not damaged:
                return self._emit(self._sample_outliers(step, samples, damaged))
            # the clean reference batch's loss rose too: the weights make the samples outliers, not the data
            measured = self._probe_value
            return self._emit(self._outlier(step, loss, grad_norm, verdict, lambda: measured, samples))
        if verdict.signals:
            return self._emit(self._outlier(step, loss, grad_norm, verdict, probe))
        if s.shares and not s.warmed_up:  # the planned LR warms up
            early = self._damaged_while_warming(step, loss, probe)
        else:
            early = self._blown_up_at_start(step, loss, probe)
        if early is not None:
            return self._emit(early)
        if samples is not None:
            self.samples.add(samples)
        return self._emit(self._accepted(step, loss, grad_norm, probe))

    def _blown_up_at_start(self, step: int, loss: float, probe: Probe | None) -> Decision | None:
        """A run's first updates, before the warmup's gate has its five first losses: a loss above
        ``max_level_shift`` × every loss before it is checked on the clean reference batch (the batch of the run's
        first step, at the initial weights), and rolled back if the weights are damaged (an LR far too high blows
        a run up at its first update: Adam at LR 3 took a digits MLP from 2.26 to 3775 at step 1, and the five
        first losses then held every later one to ×1.5 of the blown-up level). Only the reference tells: a
        fine-tuned model's first batches may differ by more than the factor, and sound weights train on as
        before, with no skip and no event. ``None``: nothing to do."""
        x = self._log_loss(loss)
        first = self.state.first_losses
        if self.ready or not first or len(first) >= 5 or x is None or x <= self._first_losses_limit():
            return None
        if not self._damaged(probe):  # sound weights, or no reference to tell
            return None
        why = (
            f"the loss {loss:.4g} at step {step}, at the run's first updates, is above max_level_shift × every loss "
            f"before it, and the clean reference batch's loss is {self._probe_value:.4g} on the live weights (above "
            f"{self._probe_limit:.4g}): the weights are damaged"
        )
        return self._rollback(step, Signal.DAMAGED_WEIGHTS, self._probe_value, self._probe_limit, why, since=step)

    def _damaged_while_warming(self, step: int, loss: float, probe: Probe | None) -> Decision | None:
        """While the planned LR warms up and before the loss has a baseline (the watchdog's ``warmup_steps``), a
        loss above ``max_level_shift`` × the run's lowest since the newest snapshot is checked on the clean
        reference batch kept with that snapshot. The weights are damaged when that batch's loss on the live weights
        has risen by the same factor above its own lowest reading since the snapshot (one batch, its random draws
        replayed, read on two sets of weights) and back above the run's first loss: all the progress is lost.
        Damaged weights are rolled back to the newest snapshot before that lowest reading, with the LR cut of
        trouble met while the LR warms up (below its share of the peak then).

        An LR far too high damages a run within its first updates, while its loss still reads below where it
        began: AdamW at 30× its best LR took the charlm GPT from 4.79 to 2.89 in two steps and back to 4.9 at
        step 4, a tenth of the way up its warmup; the run never left 3.0 (the best LR ends at 2.2). The rise was
        within the five first losses × ``max_level_shift``, and against its reading at the snapshot (4.79, the
        initial weights) the reference batch read sound (5.36); against its low (3.47) it had risen ×1.55.
        A sound run's batch may read ×1.5 higher a few steps later: at a low loss (the digits MLP, 0.089 then 0.136
        at step 47 of the quickstart, at a settled LR), or in a catapult at a high but good LR (the digits MLP
        under SGD at 0.3, 0.225 then 0.516 at step 44 of its warmup; it ends better than at 0.1). Hence the run's
        first loss as a floor, and only while the LR warms up (at a settled LR :meth:`_blown_up_at_start` holds
        the reading to the snapshot's). Not when the LR scale is at ``min_lr_scale`` or the rollbacks are spent: a
        halt there would end a run that may yet settle.

        The reference batch is read only at such a rise and at a new low of the run's loss by √``max_level_shift``
        below the last low read (each new low read cost charlm 1.3% of a 310-step run; the lows of 30× were two
        such steps); sound weights train on with no skip and no event. ``None``: nothing to do."""
        s, c, x = self.state, self.config, self._log_loss(loss)
        if self.ready or x is None or probe is None or s.low_loss is None or s.low_reference is None:
            return None
        if s.rollbacks >= c.max_rollbacks or s.scale <= c.min_lr_scale:
            return None
        shift = math.log(c.max_level_shift)
        if s.low_loss - shift / 2 <= x <= s.low_loss + shift:
            return None
        value = probe()
        reading = log_value(value) if value is not None else None
        if value is None or (reading is None and math.isfinite(value)):  # unknown, or <= 0 (not comparable)
            s.low_loss = min(s.low_loss, x)
            return None
        if x < s.low_loss:  # a new low: the reference's reading on these weights is the one to hold a rise to
            s.low_loss = x
            if reading is not None and reading < s.low_reference:
                s.low_reference, s.low_reference_step = reading, step
            return None
        start = s.first_losses[0] if s.first_losses else math.inf
        if reading is not None and (reading <= s.low_reference + shift or reading < start):
            return None
        if reading is not None and self._snapshot_weights():
            # nothing trained since the rollback (or the resume): these are the snapshot's weights, so the
            # reference's evaluation changed, not the weights (as in ``_damaged``): the lows restart from them
            # (before, every step rolled back to the same weights again, each with an LR cut)
            s.ring[-1]["reference"] = s.low_reference = reading
            s.low_loss, s.low_reference_step = x, int(s.ring[-1]["step"])
            return None
        limit = exp_value(max(s.low_reference + shift, start))
        why = (
            f"the loss {loss:.4g} at step {step}, while the LR warms up and before the watchdog has a baseline, is "
            f"above max_level_shift × the run's lowest since its snapshot ({math.exp(s.low_loss):.4g}), and the "
            f"clean reference batch's loss rose from {math.exp(s.low_reference):.4g} at step {s.low_reference_step} "
            f"to {value:.4g} on the live weights, back above the run's first loss ({math.exp(start):.4g}): the "
            "weights are damaged, all progress lost"
        )
        return self._rollback(step, Signal.DAMAGED_WEIGHTS, value, limit, why, since=s.low_reference_step)

    def _note_early(self, step: int, loss: float, outlier: bool) -> None:
        """Before the loss has a baseline: keep the step's loss, and whether it was above the gate, among the last
        2 × ``patience`` steps judged (for :meth:`_frequent_outliers`)."""
        s, x = self.state, self._log_loss(loss)
        if self.ready:
            if s.early_steps:
                s.early_steps = []  # the baseline judges from now on
        elif x is not None:
            s.early_steps = [*s.early_steps, (step, x, outlier)][-2 * self.config.patience :]

    def _frequent_outliers(self, step: int) -> Decision | None:
        """Before the loss has a baseline, outliers that the reference batch calls bad data, one at a time, but
        that make up half of the last 2 × ``patience`` steps, while the median loss of those steps (every one, the
        skipped too) stands more than ``max_level_shift`` above the median of the run's first five: the loss's
        level has moved, not the data. Bad data is the exception, and skipping half of a run's batches trains it
        on the easy half only. The run is rolled back to the newest snapshot before the first of those outliers,
        with the LR cut of early trouble (below its share of the peak then, while it warms up).

        The reference batch is one batch: in a fine-tuned model's catapult at a high LR it may read low while most
        batches read ×3-5 higher. MiniLM with its fitted linear-probe head at LR 3e-4 (batch 8, seed 0): the
        batches' median loss went from 0.26 to about 1 over the LR's warmup and the first losses held the gate at
        0.74; 36 of steps 20-84 were skipped as bad data, interleaved with accepted ones (never ``patience`` in a
        row), and the run ended at a validation loss of 0.455, against 0.378 unguarded and 0.322 at 1e-4.
        When every step since the first of those outliers was one, each skipped (``outlier_action="skip"``; a
        clipped one trained at the LR), no update has moved the weights since, so the LR cannot have moved the
        level: the rollback is a passing fault's, never the planned peak's (fifty batches of random labels from step
        25 of the digits MLP under AdamW were rolled back to the run's start with the peak's cut, kept, and the run
        ended at 0.66 against 0.17 unguarded). Not when the LR scale is at ``min_lr_scale`` or the rollbacks are
        spent (as for damage while the LR warms up: a halt would end a run that may yet settle; the batches are
        skipped as bad data, as before).
        ``None``: nothing to do (a loss below the gate resets nothing: the stretch is the last steps judged)."""
        s, c = self.state, self.config
        recent = s.early_steps
        outliers = [k for k, _, out in recent if out]
        if self.ready or len(outliers) < c.patience or len(s.first_losses) < 5:
            return None
        start, level = statistics.median(s.first_losses[:5]), statistics.median(x for _, x, _ in recent)
        if level - start <= math.log(c.max_level_shift):
            return None
        if s.level_rollback is not None and self._above_from_the_restored_weights(recent):
            return self._level_of_the_data(step, math.exp(level), math.exp(start) * c.max_level_shift)
        if s.rollbacks >= c.max_rollbacks or s.scale <= c.min_lr_scale:
            return None
        why = (
            f"{len(outliers)} of the last {len(recent)} steps were above the gate, each sound by the reference batch, "
            f"and their median loss {math.exp(level):.4g} is above max_level_shift × the median of the run's first "
            f"five ({math.exp(start):.4g}): the loss's level moved, not the data"
        )
        # every step since the first outlier was one, each skipped: no update has moved the weights since, so the LR
        # cannot have moved the level: no peak's rollback (a passing fault's, whose cut the data may yet undo). With
        # outlier_action="clip" each of them trained, clipped, at the LR: the peak's rule, as for any other outliers
        skipped = c.outlier_action == "skip"
        frozen = skipped and all(out for k, _, out in recent if k >= outliers[0])
        decision = self._rollback(
            step,
            Signal.PERSISTENT_OUTLIERS,
            math.exp(level),
            math.exp(start) * c.max_level_shift,
            why,
            outliers[0],
            not_the_lr=frozen,
        )
        s.refundable, s.rollback_cut = False, 1.0  # not a bad batch's doing: the batches after it undo no cut
        s.level_rollback = step if decision.rollback and not decision.halt else None
        return decision

    def _above_from_the_restored_weights(self, recent: list[tuple[int, float, bool]]) -> bool:
        """Whether the first ``patience`` steps since the last rollback for the level (all of them judged on the
        weights it restored, at its cut LR) were above the gate, from the first on: the restored weights met a
        higher level before a lower LR could act. An LR too high shows only after some updates (the catapult that
        :meth:`_frequent_outliers` was written on had normal batches between its outliers)."""
        s, c = self.state, self.config
        assert s.level_rollback is not None
        since = [out for k, _, out in recent if k > s.level_rollback]
        return len(since) == len(recent) and len(since) >= c.patience and all(since[: c.patience])

    def _level_of_the_data(self, step: int, level: float, limit: float) -> Decision:
        """The loss's level moved again right after a rollback for it, on the clean weights it restored: the data's
        level moved (a second task or source after the first, unshuffled), not the LR's doing. The rollback's LR cut
        is undone and the rollback given back, and the baselines start again from the new level, with a new
        reference batch. Before, each came back at once and was rolled back again (three times), the LR left at
        ``min_lr_scale`` with its ceiling there: two tasks of 40 batches each, in turn, ended the second task at a
        loss of 4.52 against 0.062 unguarded."""
        s = self.state
        s.level_rollback = None
        old, s.scale, s.ceiling = s.scale, s.scale_before_rollback, s.ceiling_before_rollback
        s.rollbacks = max(s.rollbacks - 1, 0)
        self._new_baselines()
        detail = (
            f"the loss stood above the gate from the first step on the weights the last rollback restored (median "
            f"{level:.4g}): the data's level moved, not the LR; new baselines and a new reference batch, the rollback "
            f"given back ({s.rollbacks} of {self.config.max_rollbacks} used), LR scale {old:.3g} → {s.scale:.3g}"
        )
        note = Incident(step, Signal.PERSISTENT_OUTLIERS, level, limit, Action.REBASELINE, detail)
        return Decision(scale=s.scale if s.scale != old else None, incidents=(note,))

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
        incidents = self._verdict_notes(step, loss, grad_norm, verdict, samples)
        if s.guarded is not None:
            s.guarded = 0
        s.run.append(
            RunStep(
                step,
                self._log_loss(loss),
                log_value(grad_norm),
                Signal.NON_FINITE in verdict.signals,
                Signal.LOSS in verdict.signals,
                Signal.GRAD_NORM in verdict.signals,
            )
        )
        x = self._log_loss(loss)
        rise = x - self.loss.center if Signal.LOSS in verdict.signals and x is not None and len(self.loss) else None
        damaged = self._damaged(probe, rise)
        s.run[-1].sound = damaged is False and verdict.skip
        frequent = self._frequent_outliers(step) if damaged is False else None
        if frequent is not None:
            escalation = frequent
        elif damaged is not None:
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

    def _verdict_notes(
        self, step: int, loss: float, grad_norm: float, verdict: Verdict, samples: Samples | None
    ) -> list[Incident]:
        """The step's own incidents: what its verdict did (skip or clip) and why, one per signal."""
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
            detail = self._limit_note(signal, threshold)
            if not verdict.skip:
                detail += f"; gradient × {verdict.clip_factor:.3g}"
            incidents.append(Incident(step, signal, value, threshold, action, detail))
        return incidents

    def _limit_note(self, signal: Signal, threshold: float) -> str:
        """What the step's value was held to, in words, for the log."""
        if signal is Signal.NON_FINITE:
            return "not a finite number"
        if signal is Signal.GRAD_NORM:
            return f"above {threshold:.4g}: grad_z_threshold robust z-scores above the gradient norm's baseline"
        if not self.ready:
            return (
                f"above {threshold:.4g}: max_level_shift × the highest of the run's losses so far (the loss "
                "has no baseline yet)"
            )
        z = f"{GUARD_Z_SHARE:g} × z_threshold (stricter just after a rollback)" if self._guarded() else "z_threshold"
        return f"above {threshold:.4g}: {z} robust z-scores above the loss's baseline"

    def record_after_end(
        self, step: int, loss: float, grad_norm: float, verdict: Verdict, samples: Samples | None = None
    ) -> Decision:
        """A step judged on the device that the fit ended before the host read (an early stop): its own
        incidents, for the record; nothing more is decided (the skip or clip it got stands)."""
        if verdict.forced or not verdict.signals:
            return Decision()
        notes = self._verdict_notes(step, loss, grad_norm, verdict, samples)
        return self._emit(Decision(incidents=tuple(notes)))

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

    def _attributed(self, step: int, damaged: bool, probe_value: float) -> Decision:
        """The cause is known: damaged weights roll back; bad data is skipped within ``max_data_skips``."""
        s, c = self.state, self.config
        if damaged:
            run, s.run, s.data_skips = s.run, [], 0
            why = (
                f"the clean reference batch's loss is {probe_value:.4g} on the live weights (above "
                f"{self._probe_limit:.4g}): the weights are damaged"
            )
            return self._rollback(
                step, Signal.DAMAGED_WEIGHTS, probe_value, self._probe_limit, why, since=run[0].step, run=run
            )
        s.data_skips += 1
        self._note_lone_skip(step)
        # (a reference that moved on the restored weights took the new level: the data changed, its doing too)
        after_rollback = s.guarded is not None and (self._reference_moved or self._beyond_the_restored_level())
        undo = self._data_caused_rollback(step) if after_rollback else Decision()
        finite = [r.loss for r in s.run if r.loss is not None]
        if self._reference_moved and finite:  # the restored weights read the reference higher: the data changed
            self._reference_moved = False
            cause = "the reference batch's loss on the weights just restored moved too (its evaluation changed)"
            rebase = self._rebaseline_data(step, s.run, statistics.median(finite) - self.loss.center, cause)
            scale = undo.scale if undo.scale is not None else rebase.scale
            return Decision(scale=scale, incidents=(*undo.incidents, *rebase.incidents))
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

    def _beyond_the_restored_level(self) -> bool:
        """Whether the outlier after a rollback is one for the restored weights too: its loss above their own, the
        snapshot's reference level, by the stricter gate's margin (non-finite, or no level: yes).

        A snapshot taken partway into trouble (before the loss had a baseline to hold it to) holds weights whose
        batches all read above the baseline: an outlier against the baseline alone then says nothing of the data,
        and the rollback's cut stays. Before, one such batch undid it as bad data: charlm at 30× its best LR, rolled
        back at step 50 to weights whose reference read 3.87 against a baseline of 3.26, had its cut undone by the
        next batch (4.79, 1.24× that level), and was damaged again 15 steps later."""
        s = self.state
        reference = s.ring[-1]["reference"] if s.ring else None
        loss = s.run[-1].loss if s.run else None
        if reference is None or loss is None:
            return True
        return loss - reference > GUARD_Z_SHARE * self.config.z_threshold * self.loss.spread

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
            run=run,
        )

    def _within_level_shift(self, run: list[RunStep]) -> bool:
        """Whether the run's losses sit at most ``max_level_shift`` above the baseline (a new level of data)."""
        losses = [r.loss for r in run if r.loss is not None]
        if not losses or not len(self.loss):
            return True
        return statistics.median(losses) - self.loss.center <= math.log(self.config.max_level_shift)

    def _rebaseline_after_rollback(self, step: int, run: list[RunStep]) -> Decision:
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

    def _rollback(
        self,
        step: int,
        signal: Signal,
        value: float,
        threshold: float,
        why: str,
        since: int | None = None,
        run: list[RunStep] | None = None,
        not_the_lr: bool = False,
    ) -> Decision:
        """Rung 4: restore the newest snapshot before the incident and cut the LR, by ``lr_factor`` more at each
        rollback (× lr_factor, then lr_factor², …: a spike that comes back means the LR is still too high);
        rung 5 when the budget is spent. ``run``: the outliers of the incident, if it was a run of them.
        ``not_the_lr``: no update moved the weights since the trouble began, so it is not the planned peak's."""
        s, c = self.state, self.config
        s.run, s.run_starts, s.early_steps = [], [], []
        s.level_rollback = None  # set again by _frequent_outliers when this is its rollback
        self.cusum.reset()
        if not s.can_roll_back:
            return self._cut_instead(step, signal, value, threshold, why, run or [])
        began = step if since is None else since
        # trouble that began while the LR warmed up, or at its peak before the run had trained there as long as it
        # took to get there: the planned peak is too high (the LR, not a passing fault)
        warming = bool(s.shares) and (s.warmup_end is None or began < s.warmup_end)
        window = self._in_the_peak_window(began)
        written = self._written_before(began)  # an LR the plan did not set: a passing fault's, whenever it came
        at_the_peak = window and not written and not not_the_lr
        share = (self._share_at(began) if warming else 1.0) if at_the_peak else None
        target = self._target(since)
        if share is not None and s.rollbacks < c.max_rollbacks:  # a halt keeps the newest clean weights
            back = self._peak_target(PEAK_CUT * share)
            if back is not None and (target is None or back["step"] < target["step"]):
                target = back
        # the run's start chosen over later snapshots: each of them was taken after the LR passed the cut one
        restart = share is not None and target is not None and target["step"] == s.first_step and len(s.ring) > 1
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
        # bad data was blamed for the last rollback and its LR cut undone, and the weights are damaged again before
        # ``patience`` clean steps in a row: the LR was the cause after all, so this rollback's cut is not undone
        refuted = s.data_undo is not None
        s.undone, s.guarded, s.refundable = (int(s.snapshot_step), step), 0, not refuted
        s.data_undo = None
        s.clean_since_rollback, s.normal_since_rollback, s.skip_pending = 0, False, c.skip_after_rollback
        self._load_snapshot_baselines()
        s.scale_before_rollback, s.ceiling_before_rollback = s.scale, s.ceiling
        s.written_rollback = written
        early = share is not None or (not self.ready and not written)
        ceiling = ""
        if s.raised or refuted:  # damaged again after a clean stretch (or blamed bad data) raised the LR: too high
            s.ceiling = min(s.ceiling, s.scale / s.ratio_cut * c.lr_factor)  # the ladder's part (see _recover)
            ceiling = f"; damaged again after a raise, so clean stretches raise it to {s.ceiling:.3g} at most"
        s.raised = False
        old, s.scale = s.scale, max(s.scale * c.lr_factor**s.rollbacks, c.min_lr_scale)
        if early:
            # the planned peak broke the run: an order of magnitude below the LR it broke at (as an LR range test reads
            # its edge), with the share of the peak the LR had then. Without a known plan, lr_factor below the LR
            factor = PEAK_CUT if share is not None else c.lr_factor
            s.scale = max(min(s.scale, old * factor * (1.0 if share is None else share)), c.min_lr_scale)
            s.ceiling = min(s.ceiling, s.scale / s.ratio_cut)
            if warming and share is not None:
                when = f"while the LR warmed up, at {share:.0%} of its planned peak"
            elif share is not None:
                when = "at the planned LR's peak, before the run had trained there as long as its warmup took"
            else:
                when = "before the loss had a baseline (the watchdog's warmup_steps)"
            below = f"{PEAK_CUT:g} × the LR's share of its peak then" if share is not None else "lr_factor × the LR"
            # skipped steps since the trouble began: the same cut and ceiling, but the peak is not blamed
            blame = ": the peak is too high for this run"
            if not_the_lr:
                blame = ", every step since skipped: not the LR's doing"
            ceiling = (
                f"; the trouble began at step {began}, {when}{blame}, so the scale goes below {below}, and clean "
                f"stretches do not raise it above {s.ceiling:.3g}"
            )
        if refuted:
            ceiling = (
                "; bad data was blamed for the last rollback and its LR cut undone, and the weights are damaged "
                f"again: the LR is the cause, so this cut stays and clean stretches raise it to {s.ceiling:.3g} at most"
            )
        if written and s.lr_written is not None and window:
            last, since = s.lr_written[0], s.lr_written_since
            steps = f"steps {since}-{last}" if since is not None and since < last else f"step {last}"
            ceiling += (
                f"; the LR of {steps} ran ×{s.lr_written[1]:.3g} above the one LRSchedule wrote for it "
                "(written over after it, not by the plan): that LR's trouble, not the planned peak's"
            )
        s.last_cut, s.rollback_cut = step, 1.0 if refuted else s.scale / old  # 1.0: no cut for bad data to undo
        start = (
            ", the start of the run: every later snapshot was taken after the LR had passed the cut one"
            if restart
            else self._start_note()
        )
        detail = (
            f"{why}; back to the snapshot before step {s.snapshot_step}{start} "
            f"(rollback {s.rollbacks} of {c.max_rollbacks}), LR scale {old:.3g} → {s.scale:.3g}{ceiling}"
            f"{self._rewarm(step)}"
        )
        note = Incident(step, signal, value, threshold, Action.ROLLBACK, detail, rollback_to=s.snapshot_step)
        return Decision(scale=s.scale, rollback=True, incidents=(note,), rollback_to=s.snapshot_step)

    def _peak_target(self, share: float) -> dict[str, Any] | None:
        """The newest snapshot taken before the planned LR first passed ``share`` of its peak (``None``: none held):
        what the run learnt at LRs above the cut one was learnt at an LR too high. When the oldest share still noted
        is already above it (the notes keep the last ``window`` steps: a long warmup passed it earlier), the oldest
        snapshot held from before that step, the run's start if the ring kept it."""
        s = self.state
        index = next((i for i, (_, value) in enumerate(s.shares) if value > share), None)
        if index is None:
            return None
        before = [r for r in s.ring if r["step"] <= s.shares[index][0]]
        if not before:
            return None
        return before[0] if index == 0 else before[-1]

    def _cut_instead(
        self, step: int, signal: Signal, value: float, threshold: float, why: str, run: list[RunStep]
    ) -> Decision:
        """No snapshot to go back to (``snapshot="off"``): lower the LR as a rollback would and train on from the
        weights as they are, at most once per ``cooldown_steps``; halt (keeping them) once ``max_rollbacks`` such
        cuts are spent.

        The damaged weights are the run's state from now on, so their loss level (the incident's outliers) is the
        new baseline and their loss on the reference batch the new reference: judged against the clean level, every
        step on them would be an outlier and a "damaged" verdict, skipped, and cut again at the next step, until a
        halt (before, one damaged update halted the run within four steps, the LR cut 20×).
        """
        s, c = self.state, self.config
        if s.last_cut is not None and step - s.last_cut < c.cooldown_steps:
            return Decision()
        if s.rollbacks >= c.max_rollbacks:
            reason = (
                f"{why} at step {step}, and all {c.max_rollbacks} cuts (max_rollbacks) are used; snapshot='off' kept "
                "no clean state, so the live weights are kept as they are"
            )
            s.halted = reason
            return Decision(halt=reason, incidents=(Incident(step, signal, value, threshold, Action.HALT, reason),))
        s.rollbacks += 1
        old, s.scale = s.scale, max(s.scale * c.lr_factor**s.rollbacks, c.min_lr_scale)
        s.last_cut = step
        losses = [r.loss for r in run if r.loss is not None]
        grads = [r.grad for r in run if r.grad is not None]
        if losses:
            self.loss.reset(losses, refill=c.warmup_steps)
        if grads:
            self.grad.reset(grads, refill=c.warmup_steps)
        self.samples.reset()
        self.request_snapshot()  # the reference batch's level on these weights, at the next clean step
        detail = (
            f"{why}; snapshot='off': no rollback, LR scale {old:.3g} → {s.scale:.3g}; training goes on from the "
            "weights as they are, judged against their own level"
        )
        return Decision(scale=s.scale, incidents=(Incident(step, signal, value, threshold, Action.LOWER_LR, detail),))

    def _accepted(self, step: int, loss: float, grad_norm: float, probe: Probe | None = None) -> Decision:
        s = self.state
        s.run, s.last_accepted, s.data_skips = [], step, 0
        if s.clean_since_rollback is not None:
            s.clean_since_rollback += 1
        if s.guarded is not None:
            s.guarded = None if s.guarded + 1 >= self.config.patience else s.guarded + 1
            if s.guarded is None:
                s.data_undo = None  # the restored weights trained clean at the raised LR: the undo stands
        x, y = self._log_loss(loss), log_value(grad_norm)
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
        change = f"the loss rose {exp_value(elevation) - 1.0:+.1%} over {len(values)} steps"
        within = elevation <= math.log(c.max_level_shift)
        shape = trend(values, spread)  # "rising": still climbing; "flat": stepped up and stayed
        damaged = self._damaged(probe)
        if damaged is True:
            since = cusum.start
            why = f"{change}, and the clean reference batch's loss rose to {self._probe_value:.4g}: damaged weights"
            return self._rollback(step, Signal.DAMAGED_WEIGHTS, self._probe_value, self._probe_limit, why, since)
        if damaged is False and not within:
            # still rising: the sum's reference is held at the level before the climb, so the climb is read again as it
            # goes on. Stayed flat: the data's new level, on sound weights, trained on; the sum starts again from the
            # baseline, which takes that level as its steps are accepted. Held at the old level, the sum alarmed every
            # ~patience steps for the rest of the run, and no snapshot was taken again: a later fault went back to the
            # last one before the step up (a regression whose data got harder at step 300: 510 steps undone at 800)
            if shape == "rising":
                cusum.restart()
                shape, watch = "", "watching"
            else:
                cusum.reset()
                shape, watch = " and stayed flat", "trained on, and watched from its new level"
            detail = f"{change}{shape}, beyond max_level_shift, while the reference batch shows sound weights: {watch}"
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
        if within and (damaged is False or shape == "flat"):
            self.loss.reset(values, refill=c.warmup_steps)
            cusum.reset()
            self.samples.reset()
            # a climb still under way is a change of data only by the reference batch's reading (it said "stayed
            # flat" of values that climbed throughout: a loss rising 0.2% a step, rebaselined every ~25 steps)
            how = "stayed flat" if shape == "flat" else "is still rising while the reference batch shows sound weights"
            detail = f"{change} and {how} (a level shift within max_level_shift): new baseline"
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
        below it for the rest of the run. The ceiling holds the ladder's part of the scale: the update ratio's cut
        comes on top of it and is that signal's to undo (before, the smaller of the two was the top, so a clean
        stretch gave an LR fault's cut back while the fault lasted, and the fault's end then raised the scale above
        the ceiling)."""
        s, c = self.state, self.config
        top = s.ceiling * s.ratio_cut
        if s.recover_steps is None or s.scale >= top * (1.0 - 1e-9) or s.last_change is None:
            return Decision()
        wait = s.recover_steps * 2**s.rollbacks  # each rollback says an earlier raise may have come too soon
        if step - s.last_change < wait:
            return Decision()
        if s.written_rollback and s.lr_written is not None and step - s.lr_written[0] < wait:
            return Decision()  # the LR that caused the rollback is still written over the plan: the fault goes on
        old, s.scale = s.scale, snap(min(top, s.scale / c.lr_factor))
        s.raised = True
        detail = f"{step - s.last_change} steps without incident; LR scale {old:.3g} → {s.scale:.3g}"
        note = Incident(step, Signal.CLEAN_STRETCH, step - s.last_change, s.recover_steps, Action.RAISE_LR, detail)
        return Decision(scale=s.scale, incidents=(note,))

    def _flat_points(self) -> int:
        return max(5, (self.config.flat_loss_steps or 0) // 10)

    def _flat_check(self, step: int) -> Incident | None:
        """Once, after ``flat_loss_steps`` accepted steps: warn if the loss barely fell from its first level, or from
        the initial weights' loss (the LR may be too low, or too high to get going)."""
        s, c = self.state, self.config
        if c.flat_loss_steps is None or s.flat_checked or s.accepted < c.flat_loss_steps:
            return None
        s.flat_checked = True
        points = self._flat_points()
        recent = self.loss.values[-points:]
        if len(s.first_losses) < points or len(recent) < points:
            return None
        # the first losses' level, or the initial weights' loss when they stood far above it (by more than an outlier's
        # z_threshold spreads): a run that blew up at its first updates (the LR far too high) and sank back to where it
        # began. A first loss a little below their median is one noisy batch: taken as the level (as any lower first
        # loss was), a flat loss read as a rise in most runs (a flat loss at 15% batch noise: "the LR may be too high",
        # the callback's "try a lower peak LR", on 125 of 200 seeds; "too low" on 26)
        first, start = statistics.median(s.first_losses), s.first_losses[0]
        early = start if first - start > c.z_threshold * self.loss.spread else first
        late = statistics.median(recent)
        drop = 1.0 - exp_value(late - early)
        if drop >= c.flat_loss_drop:
            return None
        # a loss that ended higher than it began was not too slow: training made it worse. Higher by more than
        # flat_loss_drop and than the noise of the two medians (two standard errors of their difference, from the
        # batches' spread), which alone put half the flat runs' medians apart by more than 1% at 15% batch noise
        noise = 2.0 * 1.2533 * self.loss.spread * math.sqrt(2.0 / points)
        # the threshold the rise is held to, in the drop's units (inf for a spread past the float range)
        rise = max(c.flat_loss_drop, expm1_value(noise))
        cause = (
            "the LR may be too low, or so high that training cannot get going (a loss stuck at its first level "
            "is either; LRFinder tells them apart)"
            if drop > -rise
            else "the LR may be too high"
        )
        detail = (
            f"the loss went from {math.exp(early):.4g} to {math.exp(late):.4g} ({-drop:+.2%}) over the first "
            f"{s.accepted} steps: {cause}"
        )
        return Incident(step, Signal.FLAT_LOSS, drop, rise, Action.WARN, detail)
