"""Bad data told from damaged weights, and what is done about bad data.

At an incident the live weights' loss on the clean reference batch kept with the newest snapshot tells the
cause (:meth:`DataRules._damaged`): at its level, the *data* is bad, and the batch is skipped within
``max_data_skips`` (no rollback, no LR cut); a batch dominated by outlier samples is skipped the same way
(:meth:`DataRules._sample_outliers`); a rollback that bad data turns out to have caused has its LR cut undone
and is given back (:meth:`DataRules._data_caused_rollback`); data that stays at a new level gets a new
baseline (:meth:`DataRules._rebaseline_data`). Damaged weights go to the ladder's rollback (``policy.py``).
Pure: no torch, no Lightning.
"""

from __future__ import annotations

import math
import statistics

from lr_callbacks.watchdog.config import Action, Incident, Signal
from lr_callbacks.watchdog.memory import PolicyMemory
from lr_callbacks.watchdog.state import Decision, Probe, RunStep, snap
from lr_callbacks.watchdog.stats import Samples, exp_value, log_value

__all__ = ["DataRules"]


class DataRules(PolicyMemory):
    """The cause of an incident, and the rules for bad data (a part of
    :class:`~lr_callbacks.watchdog.policy.WatchdogPolicy`)."""

    _probe_value: float = math.nan  # the reference batch's loss at the last probe, and the limit it was held to
    _probe_limit: float = math.nan
    _reference_moved = False  # the last probe found the reference's own evaluation changed (see _damaged)
    restored_untouched = True  # set by the callback: no update can have reached the weights since the last restore

    def _snapshot_weights(self) -> bool:
        """Whether the live weights are the restored snapshot's: nothing trained since the last rollback. Their
        reference reading is then the snapshot's level, whatever it was when the snapshot was taken."""
        return self.state.clean_since_rollback == 0 and self.restored_untouched

    def _damaged(self, probe: Probe | None, rise: float | None = None) -> bool | None:
        """Whether the live weights are damaged: their loss on the reference batch is above the one measured at
        the snapshot by more than ``max_level_shift`` (the bound on a level shift of the loss; the reference
        batch has no sampling noise, so the batch-to-batch spread does not enter, and training since the
        snapshot only lowers it), or by more than half of ``rise``, the outlying batch's own rise above the
        baseline (log units). Damaged weights raise every batch's loss alike, bad data only its own batch's: a
        reference that shares more than half of the batch's rise is nearer the first. ``None``: no reference
        to tell (also when the snapshot's reference loss was <= 0: the rules compare losses in log space)."""
        s = self.state
        self._reference_moved = False
        reference = s.ring[-1]["reference"] if s.ring else None
        if probe is None or reference is None or not len(self.loss):
            return None
        value = probe()
        if value is None:
            return None
        shared = (
            math.log(self.config.max_level_shift)
            if rise is None
            else min(math.log(self.config.max_level_shift), rise / 2)
        )
        limit = reference + shared
        self._probe_value, self._probe_limit = value, exp_value(limit)
        x = log_value(value)
        if x is not None and x > limit and self._snapshot_weights():
            # nothing trained since the rollback: these are the snapshot's weights, whose loss on the reference was
            # measured at its level when the snapshot was taken. Higher now, the reference's evaluation changed (a
            # change of data or of preprocessing inside training_step), not the weights: it takes its new level.
            # (Before, each step rolled back again to the same weights, and the run halted within four steps.)
            s.ring[-1]["reference"] = x
            self._reference_moved = True
            return False
        if x is None:  # NaN/inf is damage; a finite loss <= 0 is below the snapshot's (positive) one: not damage
            return not math.isfinite(value)
        return x > limit

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
        self._note_lone_skip(step)
        if s.data_skips >= s.data_budget:
            self.samples.reset()
            s.data_skips = 0
            why = (
                f"{s.data_budget} batches in a row were dominated by outlier samples (max_data_skips): a change of "
                "data; the per-sample baseline starts again"
            )
            incidents.append(Incident(step, Signal.SAMPLE_OUTLIERS, count, limit, Action.REBASELINE, why))
        return Decision(incidents=tuple(incidents))

    def _note_lone_skip(self, step: int) -> None:
        """Count a bad-data skip that came one at a time, the step before it accepted (see :meth:`lone_skips`)."""
        s = self.state
        if s.last_accepted == step - 1:
            s.lone_skips = [k for k in s.lone_skips if k > step - self.config.window] + [step]
            s.lone_skips_total += 1

    def lone_skips(self, step: int) -> int:
        """How many of the last ``window`` steps up to ``step`` were skipped as bad data one at a time, between
        accepted ones. Bad data is the exception: batches that the clean reference batch calls bad data but that
        keep coming back between good ones (``patience`` or more in a window) may be part of the data (a second
        task or source whose loss is higher, harder examples), which the skips keep the model from; the callback
        says so once. A decision on them is the user's: nothing here tells a recurring bad shard from a task."""
        return sum(1 for k in self.state.lone_skips if k > step - self.config.window)

    def lone_skips_recur(self, step: int) -> bool:
        """Whether such skips keep coming back: ``patience`` of them within a ``window``, or, spread thinner,
        ``patience`` over the run at one step in a hundred or more. Before, only the first: a long-tailed data
        set whose hard batches are 3% of the run (5-10× the median loss) had every one of them skipped, all run,
        and nothing above INFO said so (found by a review). Bad data at one batch in a hundred is no exception."""
        c, total = self.config, self.state.lone_skips_total
        return self.lone_skips(step) >= c.patience or (total >= c.patience and 100 * total >= step + 1)

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
        s.data_undo = step  # refuted if the weights are damaged again before patience clean steps (``_rollback``)
        old, s.scale = s.scale, snap(min(1.0, s.scale / s.rollback_cut))
        s.rollback_cut, s.ceiling = 1.0, s.ceiling_before_rollback
        detail = (
            f"the batches after the rollback are bad data on the restored weights: they, not the LR, did the "
            f"damage; the rollback's LR cut is undone, LR scale {old:.3g} → {s.scale:.3g}{refund}"
        )
        note = Incident(step, Signal.BAD_DATA, old, s.scale, Action.RAISE_LR, detail)
        return Decision(scale=s.scale, incidents=(note,))

    def _rebaseline_data(
        self, step: int, run: list[RunStep], elevation: float, cause: str = "the reference batch shows sound weights"
    ) -> Decision:
        """The weights are sound and the data changed: a new baseline from the run's values."""
        c, s = self.config, self.state
        bound = "within" if elevation <= math.log(c.max_level_shift) else "beyond"
        change = f"the loss stepped up {exp_value(elevation) - 1.0:+.1%} ({bound} max_level_shift)"
        grads = [r.grad for r in run if r.grad is not None]
        if grads and len(self.grad) and not any(r.loss_out for r in run):  # the gradient norm's outliers alone
            lift = statistics.median(grads) - self.grad.center
            change = f"the gradient norm stepped up ×{exp_value(lift):.3g} (the loss {exp_value(elevation) - 1.0:+.1%})"
        self.loss.reset([r.loss for r in run if r.loss is not None], refill=c.warmup_steps)
        if any(r.grad_out for r in run):
            self.grad.reset(grads, refill=c.warmup_steps)
        self.cusum.reset()
        self.samples.reset()
        s.run, s.run_starts, s.data_skips = [], [], 0
        detail = f"{change} for {len(run)} steps while {cause}: a change of data; new baseline"
        note = Incident(step, Signal.BAD_DATA, len(run), c.patience, Action.REBASELINE, detail)
        return Decision(incidents=(note,))
