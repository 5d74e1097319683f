"""What the watchdog policy remembers, and how it reads it: the loss and gradient-norm baselines, the CUSUM,
the update signal's baselines, the ring of snapshots with the baselines each was taken with, the planned LR's
warmup, and their ``state_dict``.

:class:`PolicyMemory` is the base of :class:`~lr_callbacks.watchdog.policy.WatchdogPolicy`; the rules that
decide (``policy.py``: the ladder; ``update_rules.py``: the LR-instability signal; ``data_rules.py``: bad data
told from damaged weights) read and change this memory and nothing else. Pure: no torch, no Lightning.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from lr_callbacks.watchdog.config import OWNER, Incident, WatchdogConfig, resolve_steps
from lr_callbacks.watchdog.state import DEFAULT_SNAPSHOT_EVERY, Decision, PolicyState
from lr_callbacks.watchdog.stats import Cusum, RollingBaseline, SampleBaseline, log_value

__all__ = ["MIN_UPDATE_SAMPLES", "PolicyMemory"]

MIN_UPDATE_SAMPLES = 10
"""The fewest samples the update signal's baseline keeps once it has them: as many as the defaults give
(``warmup_steps=50``, ``update_every=5``), so a shorter ``warmup_steps`` does not leave it a narrower spread."""


class PolicyMemory:
    """The policy's state, baselines and snapshot ring, with the read-outs and bookkeeping every rule shares.

    Args:
        config: the watchdog's settings.
    """

    def __init__(self, config: WatchdogConfig) -> None:
        self.config = config
        self.loss = RollingBaseline(config.window, config.min_spread)
        self.grad = RollingBaseline(config.window, config.min_spread)
        self.cusum = Cusum(config.cusum_drift, config.cusum_threshold)
        self.updates: dict[str, RollingBaseline] = {}  # per group: log(update ratio / LR), accepted samples
        self.samples = SampleBaseline(config.window, config.warmup_steps)  # for a module reporting per-sample losses
        self._sample_size = 0.0  # the largest batch recorded, in samples over all ranks (for the device's gate)
        self.state = PolicyState()
        self.events: list[Incident] = []
        # a GradScaler skips this step itself if its gradients overflow, and its scale may be why (set by the
        # callback at each read: a scaler in use whose scale is still at least 1)
        self.scaled = False
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
    def settled(self) -> bool:
        """No run of outliers open and no climb under way (the CUSUM at 0, its pre-climb reference not held): the
        state of weights the watchdog would take as a snapshot, as far as its signals tell."""
        return not self.state.run and self.cusum.value == 0.0 and not self.cusum.held

    @property
    def incident_open(self) -> bool:
        """A run of outliers is in progress and the live weights are not known to be clean: the clean reference
        batch did not read them sound at its latest step (or there is none to read), or that step's update was
        not skipped (``outlier_action="clip"``). A skipped step left the weights as they were: read sound, they
        are the newest clean weights, and a checkpoint keeps them (before, it held the older snapshot's after
        any skip, with the score a ``ModelCheckpoint`` had measured on the live ones)."""
        run = self.state.run
        return bool(run) and not run[-1].sound

    def z_scores(self, loss: float, grad_norm: float) -> dict[str, float]:
        """The robust z-scores of a step's loss and gradient norm (only those that can be computed)."""
        scores = {}
        for name, x, baseline in (
            ("loss_z", self._log_loss(loss), self.loss),
            ("grad_norm_z", log_value(grad_norm), self.grad),
        ):
            if x is not None and len(baseline):
                scores[name] = baseline.z(x)
        return scores

    # --- the snapshot ring -------------------------------------------------------------------------

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

    def leaving(self, step: int) -> int | None:
        """The step of the snapshot that :meth:`snapshot_taken` of ``step`` will drop from a full ring (its buffers
        can take the new one before the take), or ``None``: the oldest, when the ring holds ``snapshots`` others,
        but never the run's first while it may still be the target of trouble at the peak (:meth:`_keeps_start`)."""
        kept = [r for r in self.state.ring if r["step"] != step]
        if len(kept) < self.config.snapshots:
            return None
        return int(kept[self._oldest_leaving(kept, step)]["step"])

    def _oldest_leaving(self, ring: list[dict[str, Any]], step: int) -> int:
        """The index in ``ring`` of the snapshot a full ring gives up at ``step``: the oldest, or the one after the
        run's first while :meth:`_keeps_start`."""
        keep_first = len(ring) > 1 and ring[0]["step"] == self.state.first_step and self._keeps_start(step)
        return 1 if keep_first else 0

    def _keeps_start(self, step: int) -> bool:
        """Whether the snapshot of the run's first step stays in the ring at ``step``: within
        :meth:`_in_the_peak_window`, the rollback for trouble goes back to before the LR first passed the cut one
        (:meth:`_peak_target`), often the run's start. A ring of one snapshot keeps none."""
        return self.config.snapshots >= 2 and self._in_the_peak_window(step)

    def _in_the_peak_window(self, step: int) -> bool:
        """Whether trouble that began at ``step`` is read as the planned peak being too high: the planned LR warms up
        (its shares are noted), or reached its peak less than the warmup's length ago. Unless no update moved the
        weights since, or an LR the plan did not set ran just before (:meth:`_written_before`): see ``_rollback``."""
        s = self.state
        return bool(s.shares) and (s.warmup_end is None or step < 2 * s.warmup_end)

    def _written_before(self, step: int) -> bool:
        """Whether an LR the plan did not set ran within ``patience`` steps before ``step`` (:meth:`lr_written`): the
        steps it ran at in a row, from ``lr_written_since`` to the last, meet that stretch. Before, only the last of
        them counted: an LR ×10 over steps 20-29 of the digits MLP's warmup, trouble from step 20, judged a second
        time at step 23 (the LR of step 22 the last noted), was read as the planned peak's, back to the run's
        start at a twentieth of the LR for good (0.357 against 0.105 clean)."""
        s = self.state
        if s.lr_written is None:
            return False
        since = s.lr_written[0] if s.lr_written_since is None else s.lr_written_since
        return since <= step and s.lr_written[0] >= step - self.config.patience

    def lr_written(self, step: int, ratio: float, since: int | None = None) -> None:
        """Note that ``step``'s update ran at an LR ``ratio`` × above the one ``LRSchedule`` wrote for it (written
        over after it: by a callback after it, a second scheduler): trouble that begins within ``patience`` steps
        after it is that LR's doing, not the planned peak's, and gets the rollback of a passing fault
        (:meth:`_in_the_peak_window`). An LR pulse ×10 at step 25 of the digits MLP (its warmup ending at 20) was taken
        for a peak too high: back to the run's start at a tenth of the LR for good, 0.36-0.47 against 0.13-0.18
        unguarded (AdamW). ``since``: the first of the steps in a row up to ``step`` that ran above it (``step``)."""
        self.state.lr_written, self.state.lr_written_since = (step, ratio), step if since is None else since

    def watches_written_lrs(self, step: int) -> bool:
        """Whether the callback should pass on, at ``step``, an LR written over the plan (:meth:`lr_written`): while
        trouble could be read as the planned peak's (the warmup, or less than its length after it; the plan's end not
        yet seen), and while a rollback for such an LR stands (no raise while it is still written over)."""
        s = self.state
        return s.written_rollback or not s.warmed_up or s.warmup_end is None or step < 2 * s.warmup_end

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
        s.ring.append({"step": step, "stats": s.snapshot_stats, "reference": self._log_loss(reference or math.nan)})
        self._start_lows()
        if len(s.ring) > self.config.snapshots:
            return int(s.ring.pop(self._oldest_leaving(s.ring, step))["step"])
        return None

    def resumed_from(
        self,
        step: int,
        keep_reference: bool,
        level: float | None = None,
        older: tuple[int, bool, float | None] | None = None,
    ) -> None:
        """After a resume only the checkpoint's weights exist, as the snapshot of ``step``: the ring holds that
        one, with its reference batch if the checkpoint brought it back (``keep_reference``). With it, the lows
        that tell damage while the LR warms up stay as the checkpoint saved them, so the resumed run decides as
        the uninterrupted one (before, they restarted from the snapshot's reading: a loss back at the run's first
        level, all progress lost, went unchecked after a resume).

        ``level``: the reference batch's loss measured again at the checkpoint's weights (under DDP, where the
        batch is rank 0's and its level was the ranks' mean): the reference reads against it, and the lows start
        from it (they were read on the ranks' own batches).

        ``older``: an older snapshot the checkpoint carried too (an update ratio's rollback target, see the callback's
        ``_ratio_snapshot_for``): its step, whether its reference batch came, and its level measured again; the ring
        keeps it before the checkpoint's."""
        s = self.state
        entry = next((r for r in s.ring if r["step"] == step), {"step": step, "stats": s.snapshot_stats})
        reference = entry.get("reference") if keep_reference else None
        if keep_reference and level is not None:
            reference = self._log_loss(level)
        kept = []
        if older is not None:
            old_step, old_keep, old_level = older
            old = next((r for r in s.ring if r["step"] == old_step), None)
            if old is not None:
                old_reference = old.get("reference") if old_keep else None
                if old_keep and old_level is not None:
                    old_reference = self._log_loss(old_level)
                kept = [{**old, "reference": old_reference}]
        s.ring = [*kept, {**entry, "reference": reference}]
        if level is not None or not (keep_reference and s.low_reference is not None and s.low_loss is not None):
            self._start_lows()

    def request_snapshot(self) -> None:
        """Take a snapshot at the next clean step (after a resume or a checkpoint)."""
        self.state.snapshot_requested = True

    def _target(self, since: int | None) -> dict[str, Any] | None:
        """The newest snapshot taken before ``since`` (the incident's first step); when none held is, the oldest
        held, the nearest to the incident's start (``None``: the ring is empty)."""
        ring = self.state.ring
        before = [r for r in ring if since is None or r["step"] <= since]
        return before[-1] if before else (ring[0] if ring else None)

    def _point_to(self, target: dict[str, Any]) -> None:
        """Make ``target`` the newest snapshot: the ring keeps it and the older ones."""
        s = self.state
        s.snapshot_step, s.snapshot_stats = target["step"], target["stats"]
        s.ring = [r for r in s.ring if r["step"] <= target["step"]]
        self._start_lows()

    def _start_lows(self) -> None:
        """The newest snapshot changed: the lows that tell early damage start from its reference batch's loss (at
        its weights, that batch's loss was the run's loss at that step)."""
        s = self.state
        newest = s.ring[-1] if s.ring else None
        reference = newest["reference"] if newest is not None else None
        s.low_loss = s.low_reference = reference
        s.low_reference_step = int(newest["step"]) if newest is not None and reference is not None else None

    def _restore(self, target: dict[str, Any]) -> None:
        """Go back to the snapshot ``target``: its baselines, and the ring up to it."""
        self._point_to(target)
        self._load_snapshot_baselines()
        self.cusum.reset()

    def _load_snapshot_baselines(self) -> None:
        """The loss and gradient baselines as they were when the newest snapshot was taken."""
        stats = self.state.snapshot_stats
        if stats is not None:
            self.loss.load_state_dict(stats["loss"])
            self.grad.load_state_dict(stats["grad"])

    def _start_note(self) -> str:
        """Said in the log when a rollback goes back to the run's start: the last resort."""
        s = self.state
        if s.snapshot_step is not None and s.snapshot_step == s.first_step and s.accepted > s.snapshot_every:
            return ", the start of the run: no later clean snapshot was left (a last resort)"
        return ""

    # --- the planned LR's warmup -------------------------------------------------------------------

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

    # --- shared by the rules -----------------------------------------------------------------------

    def _log_loss(self, loss: float) -> float | None:
        """The loss in log space, as every loss rule reads it; ``None`` where it is not judged: a loss <= 0, and
        every loss once one below 0 was seen (:meth:`_loss_signed`)."""
        return None if self.state.signed_loss else log_value(loss)

    def _loss_signed(self) -> None:
        """A loss below 0 was seen: the loss can be negative (a Gaussian NLL, a variational bound), so its positive
        values are no ratio to a level either (a loss around -1 reads +0.05 on one batch and +0.2 on another).
        From now on no loss is judged: its baseline, CUSUM, first losses, flat-loss check and the snapshots'
        reference levels are dropped, and the run is watched through non-finite values, the gradient norm and
        the update size. Before, the rare positive values formed a baseline of their own, a few values wide at
        the floor spread: a stationary loss around -1 (batch noise 0.45) had its positive batches skipped as
        outliers and its LR cut for repeated outliers and for a "climb" of them."""
        s = self.state
        s.signed_loss = True
        self.loss.reset([], refill=0)
        self.cusum.reset()
        s.first_losses, s.early_steps, s.flat_checked = [], [], True
        s.low_loss = s.low_reference = s.low_reference_step = None
        for entry in s.ring:
            entry["reference"] = None
        for run_step in s.run:
            run_step.loss = None

    def _emit(self, decision: Decision) -> Decision:
        self.events.extend(decision.incidents)
        if decision.incidents:
            self.state.last_change = decision.incidents[-1].step
        return decision

    def _update_window(self) -> int:
        """How many samples the update signal needs before it judges: those of ``warmup_steps`` (at least 5)."""
        c = self.config
        return max(5, c.warmup_steps // (c.update_every or 1))

    def _update_baseline(self) -> RollingBaseline:
        """The update signal's baseline: its samples of the last ``warmup_steps`` (it drifts as training goes, so
        a short memory; a slow climb of the LR is left to the loss's CUSUM), and at least the last
        :data:`MIN_UPDATE_SAMPLES` (a robust spread of fewer is too narrow: with ``warmup_steps=20`` the baseline
        held 4-5 samples, and clean SGD runs were rolled back for updates 1.3× their usual size)."""
        return RollingBaseline(max(MIN_UPDATE_SAMPLES, self._update_window()), self.config.min_spread)

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
        self.state = PolicyState.from_plain(state["state"])
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
