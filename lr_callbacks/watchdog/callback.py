"""``DivergenceWatchdog``: the Lightning adapter around the pure ladder of ``watchdog/policy.py``.

Each hook is a few lines: read the step's signals (``watchdog.device.StepSignals``), ask the policy, and
apply its answer (skip, clip, LR scale, rollback, halt) through ``watchdog.device`` and ``core.lr_model``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import uuid
from typing import TYPE_CHECKING, Any

import torch
from typing_extensions import override

from lr_callbacks.core.checks import check_choice, check_int, given_arguments
from lr_callbacks.core.compat import (
    Callback,
    clear_found_inf,
    clear_stale_unscale,
    grad_scaler,
    optimizer_steps,
    overrides,
    supports_found_inf,
    to_device,
    unscale_fused,
)
from lr_callbacks.core.logs import given_names, group_names, log_cadence, log_scalars, log_text, names_of
from lr_callbacks.core.lr_model import (
    as_float,
    find_lr_schedule,
    reference_lr,
    require_lr_groups,
    scale_new_swa_scheduler,
    schedule_callback,
    set_lr_scale,
)
from lr_callbacks.core.sharded import plain_shard_group, strategy_kind
from lr_callbacks.core.snapshot import (
    UserStates,
    cloned_model_state,
    cloned_state,
    require_materialized,
    restore_optimizer_state,
    stateful_owners,
)
from lr_callbacks.watchdog.advice import (
    warn_averaging,
    warn_flat_loss,
    warn_lone_skips,
    warn_nonpositive,
    warn_weights_only,
)
from lr_callbacks.watchdog.config import OWNER, Action, Incident, Signal, WatchdogConfig
from lr_callbacks.watchdog.device import (
    DeviceJudge,
    Row,
    StepSignals,
    UpdateProbe,
    all_reduce_signals,
    clip_gradients,
    drop_gradients,
    row_from_state,
    row_state,
)
from lr_callbacks.watchdog.halt import HALT_NAME, check_halt_path, save_last_good, unused_path
from lr_callbacks.watchdog.policy import WatchdogPolicy
from lr_callbacks.watchdog.samples import take_sample_losses
from lr_callbacks.watchdog.snapshots import (
    SNAPSHOT_MODES,
    NormStatistics,
    SnapshotRing,
    choose_snapshot,
    free_host_bytes,
    loads_safely,
    nonfinite_buffers,
    reference_loss,
    rng_state,
    state_bytes,
)
from lr_callbacks.watchdog.state import Decision, Probe
from lr_callbacks.watchdog.stats import Gate, Samples, Verdict

if TYPE_CHECKING:
    from pytorch_lightning import LightningModule, Trainer

__all__ = ["DivergenceWatchdog"]

log = logging.getLogger("lr_callbacks")

_HEADER = "| step | signal | value | threshold | action | detail |\n|---|---|---|---|---|---|\n"
DEVICE_SYNC_EVERY = 8
"""``sync_every_n_steps`` chosen on an accelerator without a ``GradScaler``."""


class DivergenceWatchdog(Callback):
    """Catch loss spikes, non-finite values and slow divergence before the update; answer with the least drastic
    action that works: skip the step, lower the LR, roll back, or halt with nothing lost.

    **Signals**, read before the update, for every optimizer step ``k``: the step's loss (from
    ``on_before_backward``, its micro-batches combined under gradient accumulation) and the global gradient norm
    before clipping (``on_before_optimizer_step``, after AMP unscaling). Both are averaged over ranks with one
    small all-reduce and no barrier, so every rank takes the same decision at the same step.

    **Statistics**, in log space so that one threshold fits every loss scale: the median and MAD of the last
    ``window`` *accepted* steps (outliers never enter), ``z = (log v − median) / max(1.4826·MAD, min_spread)``;
    during the first ``warmup_steps`` only non-finite values and early trouble (below) are judged. A one-sided
    CUSUM of the loss's residuals catches a slow climb that never spikes, and while the LR warms up so does a
    climb whose median over ``patience`` steps passes ``max_level_shift`` above the level before it (the sum
    alone misses it when a loss that is still falling fast, or already unstable, has widened the spread); a
    step up that stays flat is a change of data and gets a new baseline instead of an action.

    **The LR-instability signal.** Every ``update_every`` steps the update's size relative to the weights is
    measured per parameter group, ``‖Δθ‖ / ‖θ‖``, and logged as ``watchdog/update_ratio/<group>``: the LR
    health panel (too high an LR shows as large updates, too low as tiny ones). Divided by the LR that the
    schedule and the watchdog set for the step, it is judged against its own robust baseline: above
    ``update_z_threshold`` spreads, the LR reaching the weights is too high (an LR fault, a scheduler restarted
    by a resume, Adam's second moment collapsed) and the scale is lowered in proportion, to bring the signal
    back to its center; once it falls below the band, that cut is undone in the same proportion. The updates
    made since the last normal sample (at most ``update_every``) are undone too: the run goes back to the
    newest snapshot from before them (at most ``max_rollbacks`` times; past that, or with no such snapshot,
    the cut alone; this signal never halts a run).

    **Cause before action.** At an outlier the live weights are evaluated on a clean reference batch, the batch
    of the newest snapshot step, whose loss at the snapshot's weights is known (its random draws, dropout's
    masks, are replayed: the two differ only by the weights). A loss at most
    ``max_level_shift`` times that level means the *data* is bad: the step is skipped, with no rollback and no
    LR cut (for at most ``max_data_skips`` batches in a row). A higher one means the *weights* are damaged: the
    run rolls back to the newest snapshot taken before the incident began and the LR is lowered, by
    ``lr_factor`` at the first rollback, ``lr_factor²`` at the second, and so on. Before the detector has a
    baseline, a loss above ``max_level_shift`` × the highest loss accepted before it (once there are five) is
    trouble too; at the first updates, before there are five, a loss above ``max_level_shift`` × every one before
    it is checked on
    the reference batch of the run's first step (an LR that blows the run up at its first update), and only
    damaged weights act. While the planned LR warms up, a loss above ``max_level_shift`` × the run's lowest since
    the newest snapshot is checked on that snapshot's reference batch, held to its own lowest reading since (read
    at the steps that set the run's new lows): risen by the factor and back above the run's first loss, the
    weights are damaged, all progress lost (an LR far too high does that at the first updates, while the loss
    still reads below where it began), and the run rolls back, unless the LR scale is at ``min_lr_scale`` or the
    rollbacks are spent. Sound weights train on, with no skip and no event. Bad data is the exception: before the
    baseline, outliers the reference batch calls bad data one at a time but that make up half of the last
    2 × ``patience`` steps, while those steps' median loss stands above ``max_level_shift`` × the median of the
    run's first five, mean the loss's level moved (a fine-tuned model's catapult at too high an LR, which one
    reference batch of 8 may not see): the run rolls back with the LR cut of early trouble, instead of training
    on the easy half of its batches.

    **Trouble while the LR warms up** (before the planned LR first reaches its peak), or at its peak before the run
    has trained there as long as the warmup took, is the planned peak being too high, not a passing fault: the LR
    of each step of the warmup is noted as a share of its planned peak (``LRSchedule``'s peak; a torch scheduler's
    base LR, ``OneCycleLR``'s ``max_lr``), and a rollback for trouble that began then lowers the scale to at most
    a tenth of the share at which it began (an order of magnitude below the LR that broke the run, as an LR range
    test reads its edge; a run that broke at 50% of its peak gets at most 5% of it, never below ``min_lr_scale``),
    no clean stretch raises it back above that, and it goes back to the newest snapshot taken before the planned
    LR first passed the cut one: what the run learnt at higher LRs was learnt at an LR too high. Often that is the
    run's start, which the ring keeps until then (in place of the snapshot after it, so no more copies than
    ``snapshots``); a resumed run holds only its checkpoint's weights. Trouble before the loss has a baseline with
    no known plan gets ``lr_factor`` × the LR. A rollback to the run's start (where the optimizer had no state:
    Adam's moments are empty) warms the LR up again, linearly over as many steps as it undid, instead of giving the
    fresh optimizer the full LR at once; the log says it went back to the start and why.

    After a rollback, what
    damaged the weights may still be coming (a burst of bad batches that each stayed under ``z_threshold``):
    until ``patience`` steps in a row are accepted, a loss is an outlier at half of ``z_threshold``, and the
    reference batch tells the cause as before; bad data found then on the restored weights undoes the
    rollback's LR cut (the data did the damage, not the LR). Without a reference (``reference_batch=False``,
    or before the first snapshot with one) the ladder below acts as it is.

    **Per-sample losses (optional).** A module that calls :func:`~lr_callbacks.report_sample_losses` in
    ``training_step`` with one loss per sample has each batch judged by its samples too. A sample is an outlier
    above the median of the largest per-sample loss of the last ``window`` accepted batches (the loss a clean
    batch's worst sample exceeds half the time); a batch with more outliers than a clean batch shows (the count
    a binomial at the measured clean tail rate exceeds with probability 1e-6, widened by the measured
    over-dispersion of clean batches' counts) is skipped (signal ``"sample_outliers"``). Its cause is told by
    the clean reference batch, as at a loss outlier: sound weights (or no reference to tell) mean bad data, with
    no rollback and no LR cut, for at most ``max_data_skips`` batches in a row, after which the per-sample
    baseline starts again (as it does at any new baseline of the loss); a risen reference loss means damaged
    weights (an LR fault makes every sample an outlier): the ladder's rollback. The limit exists after
    ``warmup_steps`` accepted batches, the tail rate after as many more. The largest loss and the counts are
    computed on the device and read back with the step's other signals (no extra synchronisation), averaged
    over the ranks, so every rank decides the same (under DDP the largest loss is the ranks' mean of theirs).
    A module that does not report sees no change.

    **The ladder** (each rung with its threshold, cooldown and budget):

    1. non-finite loss or gradient norm: skip the step;
    2. an outlier (``z > z_threshold`` on the loss, ``grad_z_threshold`` on the gradient norm): skip the step
       (``outlier_action="skip"``) or scale its gradient down to the threshold (``"clip"``);
    3. ``lower_after`` outlier runs within ``lower_window`` steps, or a slow climb: multiply the LR scale by
       ``lr_factor`` (through ``scale(g)`` of the shared LR model, so a schedule keeps its shape and a user's
       torch scheduler its ``base_lrs``), at most once per ``cooldown_steps``, down to ``min_lr_scale``; after
       ``recover_after`` steps without incident, one cut is undone;
    4. ``patience`` outliers in a row, a climb that survives a cut, or a cut below the floor: roll back to the
       newest clean snapshot before the incident (model and optimizer, and the objects the module keeps that save
       their own state, an EMA as torch_ema or diffusers keep it, but not a Lightning callback's or data loader's;
       on the CPU, a ring of ``snapshots`` taken every ``snapshot_every`` clean steps), skip
       ``skip_after_rollback`` batches and lower the LR, at most ``max_rollbacks`` times;
    5. the budget is spent: halt. The last good state is restored and saved to ``halt_checkpoint``, every rank
       stops at the same step, and :attr:`halt_reason` (and the log) says why.

    A skipped step is a true no-op for the optimizer: gradients are dropped (``p.grad = None``), so weights,
    moments and step counts do not move; this is safe under a ``GradScaler``, which has recorded its inf checks
    by then. The step still counts: ``trainer.global_step`` and :class:`~lr_callbacks.LRSchedule`'s clock
    advance (the batch was spent; ``optimizer.step()`` runs, with nothing to do), and Lightning steps a user's
    torch scheduler as usual. (A step that the ``GradScaler`` itself skips never calls ``optimizer.step()``:
    ``LRSchedule``'s clock waits for it, see there.) What the skipped batch's forward pass moved is put back:
    the normalization layers' running statistics to their values before the step (to the newest snapshot's for
    a step skipped on the device between reads), and any buffer it left non-finite to the newest snapshot's; other
    buffers (an EMA you update in a hook) are left as they are, and your own hooks after the step still run.

    **Cost.** With ``sync_every_n_steps=1`` the host reads two floats per step (one synchronisation) and decides
    exactly. With ``N > 1`` steps are judged on the device against the limits of the last read and the host reads
    every ``N`` steps (counted in the tests with a ``TorchFunctionMode``); between reads a skipped step is exact
    for torch's fused optimizers (``fused=True``, through their ``found_inf`` flag) and, for the others, a
    zero-gradient step (one pass over the gradients each step; momentum and Adam's moments then decay by one
    step and weight decay applies), and LR cuts and rollbacks happen at the next read. The default (``None``) is
    1 on the CPU (there is no device to wait for) and under a ``GradScaler`` (it synchronises every step
    anyway), else 8.

    **Checkpoints.** Statistics, scale, incidents, budgets and the steps judged on the device but not read yet
    round-trip through ``state_dict``. A checkpoint written while an incident is open (or before the judgement of a
    step that will undo it: steps judged on the device and not read yet, an update ratio measured after the step and
    judged too large at the next one, a step just run at an LR written over ``LRSchedule``'s for fewer than
    ``patience`` steps) holds the last clean snapshot as its weights (never poisoned ones), and the live weights in
    the watchdog's state (and, where the update ratio's rollback will go back further, to the newest snapshot from
    before the updates since its last normal sample, that snapshot too), so resuming from it continues exactly as
    the uninterrupted run. While a climb is under way, or a rollback's probation lasts (until ``patience`` steps in
    a row are accepted), no snapshot can be taken soon: the checkpoint holds the live weights and the newest
    snapshot beside them, and a resumed run rolls back where the uninterrupted one would (not under sharded
    training). Snapshots are not saved otherwise (they would double the checkpoint): after any checkpoint both runs
    take a fresh snapshot at the next clean step, and only an incident that begins before it (usually: at the first
    step after the resume) rolls back to the checkpoint's weights rather than to the older
    snapshot the uninterrupted run held. A checkpoint written after a halt (the halt checkpoint, or one written at
    the halting step) resumes training where the uninterrupted run stopped: the halt is cleared and the rollback
    budget renewed, with a warning.

    **Sharded training.** Under FSDP2 (Lightning's ``ModelParallelStrategy``, ``fully_shard`` in
    ``configure_model``) the gradient norm is the whole gradient's, from the shards (one all-reduce), each rank
    snapshots and restores its own shards and optimizer state, every rank rolls back at the same step, and the
    halt checkpoint goes through the strategy's own (distributed) checkpointing, a directory. A checkpoint written
    during an incident holds the snapshot's shards; the live ones are not kept (only rank 0 writes the
    callbacks' state), so a resume from it continues from the snapshot. Lightning's ``FSDPStrategy`` (FSDP1) takes
    the same paths, untested (it runs on GPUs only). DeepSpeed is refused: its engine steps the optimizer itself.

    Only automatic optimization with one optimizer is supported: under manual optimization, under DeepSpeed, or
    with ``LBFGS`` (whose step evaluates its closure several times), the callback raises at setup.

    Logs ``watchdog/loss``, ``watchdog/grad_norm``, ``watchdog/loss_z``, ``watchdog/grad_norm_z``,
    ``watchdog/cusum`` and ``watchdog/lr_scale`` at x = step (and ``watchdog/sample_outliers``, the batch's share of
    outlier samples, for a module that reports them), and ``watchdog/events``, a text table of each
    intervention; :attr:`events` lists them as :class:`~lr_callbacks.Incident` objects.

    Args:
        z_threshold: the robust z-score above which a step's loss is an outlier.
        grad_z_threshold: the same for the gradient norm, whose tail is heavier: on 12 clean runs of AdamW on
            the digits (800 steps each) the gradient norm's z reached 7.2, the loss's 4.3.
        window: how many accepted steps the baseline keeps.
        warmup_steps: accepted steps before outliers and trends are judged.
        min_spread: the floor on the baseline's spread, in log units (0.02 ≈ 2%).
        outlier_action: ``"skip"`` or ``"clip"`` an outlier step.
        patience: outliers in a row that make an incident persistent (rollback, or new baseline).
        lower_after: outlier runs within ``lower_window`` steps that lower the LR.
        lower_window: the window, in steps, for ``lower_after``.
        lr_factor: the LR scale's multiplier at each cut (< 1).
        min_lr_scale: the lowest LR scale; a cut that would go below escalates to a rollback.
        cooldown_steps: steps after a cut before the next one.
        recover_after: steps without incident after which one cut is undone (``200`` or ``"200 steps"``), or that
            share of the run (``"5%"``, the default; doubled by each rollback); ``None`` keeps cuts. A scale raised
            back to that then damages the weights again is too high: later raises stop ``lr_factor`` below it.
        cusum_drift: the slow-climb detector's allowance, in spreads per step.
        cusum_threshold: the slow-climb detector's alarm level.
        max_level_shift: the largest factor by which the loss may step up and stay flat and still count as a
            change of data (a new baseline) rather than divergence (an LR cut).
        snapshot_every: steps between clean snapshots; ``None`` (the default): max(10 steps, 1% of the run), or
            100 steps when the run's length is unknown.
        snapshots: how many snapshots the ring keeps (this many copies of the model and optimizer state); a
            rollback goes to the newest one taken before the incident began (for trouble at the planned peak, before
            the LR passed the cut one: the ring keeps the run's first snapshot until then).
        max_rollbacks: rollbacks allowed before the run halts.
        max_data_skips: consecutive batches that may be skipped as bad data (the reference batch shows sound
            weights) before the watchdog decides: a new baseline when they are finite, a halt that keeps the
            live weights when they are not; steps (``100``, ``"100 steps"``) or a share of the run (``"25%"``).
        update_every: measure the update-to-weight ratio every this many steps (a copy of the weights before
            the update and two norms after it); ``None`` disables the signal.
        update_z_threshold: the robust z-score above which the update, for its planned LR, is too large
            (against the samples of the last ``warmup_steps``): on the digits MLP, clean runs reached 4.1, an
            LR ×5 under AdamW 9.1. A cut it makes by mistake is undone at the next sample (a rollback it makes
            costs at most ``update_every`` plus the snapshot cadence of steps).
        skip_after_rollback: batches skipped after a rollback (PaLM skipped 200–500 because its restart replayed
            them; an in-loop rollback does not rewind the data, so the incident's batches are already dropped).
        flat_loss_steps: after this many accepted steps, warn if the loss fell less than ``flat_loss_drop``
            from its first level, or from the initial weights' loss when the first losses stood far above it (the
            LR may be too low), or rose by more, and by more than the batch noise lets two medians differ (too
            high); ``None`` disables it. It only warns.
        flat_loss_drop: the relative drop below which the loss counts as flat.
        sync_every_n_steps: read the signals back every this many steps (see *Cost*); ``None`` chooses.
        halt_checkpoint: where a halt saves the last good state (a file path); ``None``:
            ``<default_root_dir>/watchdog-last-good.ckpt``. A halt never overwrites: when something is there
            already, it saves to ``<name>-v1.ckpt`` (``-v2``, …); the log line and ``halt_checkpoint_path`` say where.
        log_every_n_steps: log the scalars every this many steps; ``None``: the trainer's ``log_every_n_steps``.
        snapshot: where the snapshots live: ``"host"`` memory; ``"disk"``, files under
            ``<default_root_dir>/watchdog-snapshots/<pid>-<id>`` (a directory of the fit's own) written through the
            trainer's strategy and loaded back at a rollback (removed at the end of the fit); ``"off"``, none:
            damaged weights get the LR cut of a rollback but keep their state, and training goes on from them
            (judged against their own level; a halt keeps them too); ``"auto"`` (the default), host memory when
            ``snapshots`` copies fit in a quarter of the free host memory (under DDP, those of every rank on the
            host: each keeps its own ring), else disk, said in the log (:attr:`snapshot_mode`).
        reference_batch: tell bad data from damaged weights at an incident by evaluating the live weights on the
            batch of the newest snapshot (``training_step`` without gradients, its ``self.log`` calls silenced,
            the RNG forked, the buffers and torchmetrics states put back); ``False`` if ``training_step`` has
            other side effects that must not run twice, and the ladder then acts without knowing the cause.
            A ``training_step`` whose loss depends on ``trainer.global_step`` rather than on the batch (a scripted
            fault) should apply it only when ``torch.is_grad_enabled()``, or the reference batch looks as bad as
            the step's.

    Raises:
        ValueError, TypeError: at construction, for a bad argument; at setup, under manual optimization, a
            DeepSpeed strategy, or with ``LBFGS``.

    Example::

        trainer = Trainer(max_steps=10_000, callbacks=[LRSchedule("cosine", warmup="2%"), DivergenceWatchdog()])

    >>> watchdog = DivergenceWatchdog(outlier_action="clip")
    >>> watchdog.scale, watchdog.events, watchdog.halt_reason
    (1.0, [], None)
    """

    def __init__(
        self,
        *,
        z_threshold: float = 6.0,
        grad_z_threshold: float = 10.0,
        window: int = 100,
        warmup_steps: int = 50,
        min_spread: float = 0.02,
        outlier_action: str = "skip",
        patience: int = 10,
        lower_after: int = 3,
        lower_window: int = 200,
        lr_factor: float = 0.5,
        min_lr_scale: float = 0.05,
        cooldown_steps: int = 50,
        recover_after: int | str | None = "5%",
        cusum_drift: float = 1.0,
        cusum_threshold: float = 25.0,
        max_level_shift: float = 1.5,
        snapshot_every: int | None = None,
        snapshots: int = 3,
        max_rollbacks: int = 3,
        max_data_skips: int | str = "25%",
        update_every: int | None = 5,
        update_z_threshold: float = 8.0,
        skip_after_rollback: int = 0,
        flat_loss_steps: int | None = 300,
        flat_loss_drop: float = 0.01,
        sync_every_n_steps: int | None = None,
        halt_checkpoint: str | os.PathLike[str] | None = None,
        log_every_n_steps: int | None = None,
        reference_batch: bool = True,
        snapshot: str = "auto",
    ) -> None:
        self._given = given_arguments(DivergenceWatchdog.__init__, locals())  # for repr: what it was built with
        self.config = WatchdogConfig(
            z_threshold=z_threshold,
            grad_z_threshold=grad_z_threshold,
            window=window,
            warmup_steps=warmup_steps,
            min_spread=min_spread,
            outlier_action=outlier_action,
            patience=patience,
            lower_after=lower_after,
            lower_window=lower_window,
            lr_factor=lr_factor,
            min_lr_scale=min_lr_scale,
            cooldown_steps=cooldown_steps,
            recover_after=recover_after,
            cusum_drift=cusum_drift,
            cusum_threshold=cusum_threshold,
            max_level_shift=max_level_shift,
            snapshot_every=snapshot_every,
            snapshots=snapshots,
            max_rollbacks=max_rollbacks,
            max_data_skips=max_data_skips,
            update_every=update_every,
            update_z_threshold=update_z_threshold,
            skip_after_rollback=skip_after_rollback,
            flat_loss_steps=flat_loss_steps,
            flat_loss_drop=flat_loss_drop,
        )
        if sync_every_n_steps is not None:
            check_int("sync_every_n_steps", sync_every_n_steps, low=1, owner=OWNER)
        if log_every_n_steps is not None:
            check_int("log_every_n_steps", log_every_n_steps, low=1, owner=OWNER)
        if halt_checkpoint is not None:
            check_halt_path(halt_checkpoint)
        if not isinstance(reference_batch, bool):
            raise TypeError(f"{OWNER}: `reference_batch` must be True or False, got {reference_batch!r}")
        self._reference_batch = reference_batch
        self._snapshot_mode = check_choice("snapshot", snapshot, SNAPSHOT_MODES, owner=OWNER)
        if self._snapshot_mode == "off" and snapshots != 3:
            raise ValueError(
                f"{OWNER}: `snapshots`={snapshots} sizes the ring of snapshots, but snapshot='off' keeps none; "
                "drop `snapshots`, or choose where they live (snapshot='auto', 'host' or 'disk')"
            )
        self._sync_every_arg = sync_every_n_steps
        self._log_every_arg = log_every_n_steps
        self._halt_checkpoint = None if halt_checkpoint is None else os.fspath(halt_checkpoint)
        self._halt_path = self._halt_checkpoint
        self._policy = WatchdogPolicy(self.config)
        self._signals = StepSignals()
        self._ring = SnapshotRing()
        self._batches: list[Any] = []  # the current step's micro-batches
        self._rngs: list[dict[str, torch.Tensor]] = []  # the RNG state each of them started from
        self._updates = UpdateProbe()
        self._restored_reference: list[Any] = []
        self._restored_rngs: list[dict[str, torch.Tensor]] = []
        self._restored_user: list[Any] = []  # a checkpoint's snapshot's user states (an EMA), by place (see there)
        self.snapshot_mode: str | None = None
        """Where the snapshots of the current fit live: ``"host"``, ``"disk"`` or ``"off"`` (``"auto"`` resolved)."""
        self._live: dict[str, Any] | None = None
        self._saved_snapshot: dict[str, Any] | None = None  # a checkpoint's newest snapshot, kept beside its weights
        self._ratio_snapshot: dict[str, Any] | None = None  # a checkpoint's older snapshot, an update ratio's target
        self._warned_reference = False
        self._warned_nonpositive = False
        self._warned_lone_skips = False
        self._held: list[Row] = []  # device rows read early (at a checkpoint)
        # rebaseline()s announced while steps judged on the device wait to be read: (its step, its detail)
        self._rebaselines_due: list[tuple[int, str]] = []
        self._group_names: list[str] = []  # each group's name in the tags, kept once given (see _names)
        # the stage of the trainer's last setup: a state loaded outside a fit (validate, test) is not kept
        self._stage: str | None = None
        self._paused = False
        self._reset_fit()

    def __repr__(self) -> str:
        return f"DivergenceWatchdog({', '.join(f'{k}={v!r}' for k, v in self._given.items())})"

    def _reset_fit(self) -> None:
        self._trainer: Any = None
        self._judge: DeviceJudge | None = None
        self._sync_every = 1
        self._log_every = 1
        self._halt_pending: str | None = None
        self._found_inf_set: Any = None
        self._has_buffers = False  # whether the module has buffers a skipped batch's forward pass may move
        self._norms = NormStatistics(torch.nn.Module())  # its normalization layers' statistics at the step's start
        self._norms_step: int | None = None  # the optimizer step they were captured at
        self._last_step: int | None = None  # the fit's planned last step: read back there, whatever the cadence
        self._clip_value: float | None = None  # the trainer's gradient_clip_val, held back for a dropped step
        self._most_gradients = 0  # the most parameter tensors with a gradient at one step of this fit
        self._last_gradients = 0  # those of the last step, and for how many steps in a row that count held
        self._gradients_held = 0
        self._untouched = False  # no update can have reached the weights since the last restore of a snapshot
        self._unwritten: list[Incident] = []  # incidents reported since the last write to watchdog/events
        self._written_step = -1  # the step of that write
        self._swa_scheduler: int | None = None  # the id of the SWALR whose swa_lr holds this watchdog's scale

    def _drop(self, trainer: Any, optimizer: Any) -> None:
        """Drop the coming update (:func:`~lr_callbacks.watchdog.device.drop_gradients`).

        Lightning clips the gradients after this hook: by value, torch's ``clip_grad_value_`` fails on a step
        without any gradient (``RuntimeError: Expected !nested_tensorlist[0].empty()``), so the trainer's
        ``gradient_clip_val`` is held back until the batch ends (:meth:`_restore_clipping`); there is nothing
        to clip. A module's own ``configure_gradient_clipping`` (which Lightning calls in its place, e.g.
        ``self.clip_gradients(optimizer, 0.5, "value")``) is stood in for by one that does nothing, for this step
        alone: before, it failed the same way at the first skip.
        """
        drop_gradients(optimizer)
        if self._clip_value is None and trainer.gradient_clip_val and trainer.gradient_clip_algorithm == "value":
            self._clip_value, trainer.gradient_clip_val = trainer.gradient_clip_val, None
        module = trainer.lightning_module
        own = module is not None and "configure_gradient_clipping" not in vars(module)
        if own and overrides(module, "configure_gradient_clipping"):
            module.configure_gradient_clipping = _no_clipping  # an instance attribute: Lightning calls it

    def _restore_clipping(self, trainer: Any) -> None:
        if self._clip_value is not None:
            trainer.gradient_clip_val, self._clip_value = self._clip_value, None
        module = trainer.lightning_module
        if module is not None and vars(module).get("configure_gradient_clipping") is _no_clipping:
            del module.configure_gradient_clipping

    # --- public read-outs ----------------------------------------------------------------------------

    @property
    def events(self) -> list[Incident]:
        """Every intervention so far, oldest first: by step, those of one step in the order they were decided.

        An update ratio's incident concerns the step whose update was measured and is decided at a later read
        (the next step's, or after ``sync_every_n_steps``), after that read's own incidents: it is listed at its
        step."""
        return sorted(self._policy.events, key=_step_of)

    @property
    def scale(self) -> float:
        """The current LR multiplier ``scale(g)`` (1.0 until the watchdog lowers it)."""
        return self._policy.scale

    @property
    def _lr_scale(self) -> float:  # the LR model's scale(g), for the finder (lr_model.LRScaler)
        return self._policy.scale

    @property
    def halt_reason(self) -> str | None:
        """Why the run was halted, or ``None``."""
        return self._policy.state.halted

    @property
    def halt_checkpoint_path(self) -> str | None:
        """Where a halt saves the last good state, and after a halt where it saved it (a ``-v<k>`` name when the path
        was taken); ``None`` before the first fit without ``halt_checkpoint``."""
        return self._halt_path

    @property
    def sync_every_n_steps(self) -> int:
        """How often the host reads the signals in this fit (resolved at fit start)."""
        return self._sync_every

    def rebaseline(self, reason: str = "") -> None:
        """Say that the loss's level changes by design from this step on: harder data (a curriculum), an
        auxiliary loss term switched on, a new loss weight. The watchdog would otherwise read a step up beyond
        ``max_level_shift`` as bad data and skip the new batches (up to ``max_data_skips``), or, when the reference
        batch reads the new loss term too, as damaged weights. The loss's, the gradient norm's and the update
        size's baselines start again from the steps to come, and the next clean step's batch becomes the
        reference batch. Call it on every rank at the step the change takes effect, before that step's optimizer
        step (in ``training_step``, or in a callback's ``on_train_batch_start`` or ``on_train_epoch_start``).
        ``reason`` is added to the event's detail.

        With ``sync_every_n_steps`` > 1 the new baselines start at the next read, after the steps judged on the
        device before this one are recorded against the old ones; until then the device judges nothing.

        >>> watchdog = DivergenceWatchdog()
        >>> watchdog.rebaseline("classes 5-9 added")
        >>> watchdog.events[-1].action, watchdog.events[-1].signal
        ('rebaseline', 'requested')
        """
        trainer = self._trainer
        step = int(trainer.global_step) if trainer is not None else 0
        why = f": {reason}" if reason else ""
        if self._judge is not None:
            # the steps judged on the device since the last read are at the old level: recorded at the next read,
            # they would refill the new baselines with it (and the announced batches be skipped against them)
            self._rebaselines_due.append((step, why))
        else:
            self._report(self._policy.rebaseline(step, why))
        self._set_gate()

    def _rebaseline_now(self, before: int) -> None:
        """Apply the rebaseline()s that waited for the read and took effect by the step ``before``, before that
        step is recorded."""
        while self._rebaselines_due and self._rebaselines_due[0][0] <= before:
            self._report(self._policy.rebaseline(*self._rebaselines_due.pop(0)))

    # --- the Pausable protocol (core.lr_model): the finder pauses the watchdog during its sweep -----------

    def _pause(self) -> None:
        """Stop judging steps (while the LR finder sweeps)."""
        self._paused = True
        self._signals.reset()

    def _resume(self, trainer: Any) -> None:
        """Judge steps again, from the next one."""
        self._paused = False
        self._signals.reset()

    # --- Lightning hooks -----------------------------------------------------------------------------

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stage = stage
        if stage != "fit":
            return
        if not pl_module.automatic_optimization:
            raise ValueError(
                f"{OWNER} supports automatic optimization only: under manual optimization it cannot tell which "
                "backward belongs to which optimizer step, so it could not skip or judge an update. Remove it, or, "
                "for a module that steps one optimizer, set `self.automatic_optimization = True` (Lightning steps "
                "several optimizers, a GAN's generator and discriminator, only under manual optimization: train such "
                "a module without the watchdog)"
            )
        if strategy_kind(trainer.strategy) == "deepspeed":
            raise ValueError(
                f"{OWNER} does not support DeepSpeed ({type(trainer.strategy).__name__}): its engine steps, "
                "accumulates and loss-scales by itself and keeps the optimizer's state in its own partitions, so "
                "the watchdog could neither skip an update before it happens nor snapshot it. Use "
                "ModelParallelStrategy (FSDP2), FSDPStrategy or DDP"
            )
        self._new_run()

    def _new_run(self) -> None:
        """Forget every earlier fit: a watchdog passed to a second fit (a loop over seeds or folds) starts it with
        no incidents, a scale of 1, fresh baselines and budgets. A resumed fit then loads its checkpoint's state
        (Lightning restores callbacks after ``setup``). Before, a second fit inherited the first's scale and
        snapshot step, and rolled back to its own start as if to the first fit's snapshot."""
        self._policy = WatchdogPolicy(self.config)
        self._ring.clear()
        self._ring = SnapshotRing()
        self._updates = UpdateProbe()
        self._signals.reset()
        self._restored_reference, self._restored_rngs, self._live, self._held = [], [], None, []
        self._saved_snapshot, self._ratio_snapshot, self._restored_user = None, None, []
        self._batches, self._rngs = [], []
        self._rebaselines_due = []
        self._group_names = []

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        require_lr_groups(trainer, OWNER)
        if any(isinstance(o, torch.optim.LBFGS) for o in trainer.optimizers):
            raise ValueError(
                f"{OWNER} cannot judge LBFGS steps: LBFGS.step() evaluates its closure (the forward and backward "
                "passes, and Lightning's on_before_optimizer_step) several times a step for its line search, so each "
                "evaluation would be judged as a step, and after a rollback the step would write its own history "
                "over the restored state. Train under LBFGS without the watchdog (LRSchedule and LRFinder work with it)"
            )
        self._reset_fit()
        self._trainer = trainer
        if not self._group_names:  # a new run's groups, named as LRSchedule names them at fit start; on resume, kept
            self._group_names = group_names(given_names(trainer.optimizers[0]))
        warn_weights_only(trainer)
        warn_averaging(trainer)
        self._halt_path = self._halt_checkpoint or os.path.join(trainer.default_root_dir, HALT_NAME)
        if self._sync_every_arg is not None:
            self._sync_every = self._sync_every_arg
        else:
            on_host = pl_module.device.type == "cpu" or self._has_scaler(trainer)
            self._sync_every = 1 if on_host else DEVICE_SYNC_EVERY
        self._log_every = log_cadence(trainer, self._log_every_arg)
        self._signals.shard_group = plain_shard_group(trainer.strategy)
        total = _total_steps(trainer)
        self._last_step = total - 1 if total else None
        self._configure_policy()
        if self._sync_every > 1:
            clip = self.config.outlier_action == "clip"
            self._judge = DeviceJudge(pl_module.device, self._sync_every, clip, int(trainer.world_size))
        self._signals.reset()

    def _configure_policy(self) -> None:
        """Resolve the policy's settings against this fit's run (its length read at fit start): the snapshot
        cadence, ``recover_after`` and ``max_data_skips`` given as shares of the run, and whether a rollback has a
        snapshot to go back to (not with ``snapshot="off"``)."""
        total = None if self._last_step is None else self._last_step + 1
        self._policy.configure(total, can_roll_back=self._snapshot_mode != "off")

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        optimizer = self._optimizer(trainer)
        require_materialized(pl_module, OWNER)
        self._has_buffers = any(True for _ in pl_module.buffers())
        self._norms = NormStatistics(pl_module)
        step = int(trainer.global_step)
        restored_step = self._policy.state.snapshot_step
        self._ring.clear()
        self._ring = self._new_ring(trainer, pl_module, optimizer)
        saved, self._saved_snapshot = self._saved_snapshot, None
        if saved is not None and self._live is None and restored_step is not None:
            # the checkpoint holds the live weights and its newest snapshot beside them: the snapshot goes into the
            # ring (with its reference batch and level), the live weights back in after it, as for a substitute
            self._live = {
                "model": cloned_model_state(pl_module.state_dict()),
                "optimizer": cloned_state(optimizer.state_dict()["state"]),
            }
            pl_module.load_state_dict(saved["model"])
            restore_optimizer_state(optimizer, saved["optimizer"])
        live_user = self._put_in_saved_user_states(pl_module, restored_step)
        batches, rngs = self._restored_reference, self._restored_rngs
        self._restored_reference, self._restored_rngs = [], []
        # a checkpoint's tensors load on the device they were saved from (rank 0's, under DDP on GPUs): onto this one
        batches = [to_device(batch, pl_module.device) for batch in batches]
        level = None
        if int(trainer.world_size) > 1 and batches and restored_step is not None:
            # only rank 0 writes the callbacks' state: every rank holds rank 0's batch, whose level was measured as
            # the mean of each rank's own. Its level is measured again, on every rank, at the checkpoint's weights (the
            # snapshot's; the live ones come after): the same batch, weights and draws, the same value everywhere.
            # Before, the resumed run had no reference until its next snapshot, and met damaged weights with skips
            # until `patience` ran out.
            level = reference_loss(pl_module, batches, int(trainer.world_size), trainer.strategy, rngs)
            batches = batches if level is not None else []
        older = self._take_ratio_snapshot(trainer, pl_module, optimizer, restored_step)
        self._ring.take(pl_module, optimizer, step if restored_step is None else restored_step, batches, rngs)
        if restored_step is None:
            self._policy.snapshot_taken(step)
        else:
            self._policy.resumed_from(restored_step, keep_reference=bool(batches), level=level, older=older)
        schedule = find_lr_schedule(trainer)
        if schedule is not None:
            # scale(g) is this watchdog's. On resume the checkpoint's LRSchedule holds it already; one added on resume
            # starts at 1 without it. A new run starts at 1: a fit continued on the last fit's trainer (max_steps
            # raised) goes on with that fit's LRSchedule, and before kept its last cut (0.5) under a watchdog that
            # starts afresh at 1, which never gave it back and logged watchdog/lr_scale 1.0 under the halved LR.
            schedule._set_scale(self._policy.scale)
        # an SWALR there already is the module's own: on resume its swa_lr is the checkpoint's, which holds the scale
        # (before, it was scaled again: 0.005 for swa_lr=0.02 and a cut to 0.5); a new run's scale is 1. Only one
        # StochasticWeightAveraging creates later is scaled (on_train_batch_start)
        self._swa_scheduler = scale_new_swa_scheduler(trainer, 1.0, None)
        live, self._live = self._live, None
        if live is not None:
            pl_module.load_state_dict(live["model"])
            restore_optimizer_state(optimizer, live["optimizer"])
            if live_user is not None:  # only with live weights to put back (see _put_in_saved_user_states)
                live_user.restore()
        else:
            # taken again at the first clean step, with its batch: the reference that tells damaged weights from bad
            # data (at a run's start, an LR that blows the run up at its first updates)
            self._policy.request_snapshot()
        self._set_gate()

    def _take_ratio_snapshot(
        self, trainer: Any, pl_module: Any, optimizer: Any, restored_step: int | None
    ) -> tuple[int, bool, float | None] | None:
        """A resume from a checkpoint written before an update ratio judged too large at the next step, whose rollback
        goes back to an older snapshot than the newest (:meth:`_ratio_snapshot_for`): that snapshot goes into the ring
        first, with its reference batch, and the module gets the checkpoint's weights back. Returns what the policy's
        ring needs of it (its step, whether its reference batch came, its level measured again under DDP)."""
        saved, self._ratio_snapshot = self._ratio_snapshot, None
        if saved is None or restored_step is None or self._live is None:
            return None
        step = int(saved["step"])
        if step >= restored_step or not any(r["step"] == step for r in self._policy.state.ring):
            return None
        here = {
            "model": cloned_model_state(pl_module.state_dict()),
            "optimizer": cloned_state(optimizer.state_dict()["state"]),
        }
        pl_module.load_state_dict(saved["model"])
        restore_optimizer_state(optimizer, saved["optimizer"])
        batches = [to_device(batch, pl_module.device) for batch in saved.get("reference", [])]
        rngs = list(saved.get("reference_rngs", []))
        level = None
        if int(trainer.world_size) > 1 and batches:  # rank 0's batch on every rank: its level measured again
            level = reference_loss(pl_module, batches, int(trainer.world_size), trainer.strategy, rngs)
            batches = batches if level is not None else []
        self._ring.take(pl_module, optimizer, step, batches, rngs)
        pl_module.load_state_dict(here["model"])
        restore_optimizer_state(optimizer, here["optimizer"])
        return step, bool(batches), level

    def _put_in_saved_user_states(self, pl_module: Any, restored_step: int | None) -> UserStates | None:
        """A resume from a checkpoint that carries the newest snapshot beside or under the live weights: put the
        snapshot's user states (an EMA the module keeps, saved by :meth:`_snapshot_user_states`) into their owners
        for the ring's take, as the snapshot's weights are; returns the live ones, which go back in after it.

        Before, the ring took the live EMA the checkpoint held (the module's own ``on_save_checkpoint`` writes it)
        for the snapshot's: the resumed run's rollback put the EMA back to the checkpoint's step, not the snapshot's
        as the uninterrupted run's did (6 updates ahead, the weights equal)."""
        saved, self._restored_user = self._restored_user, []
        if not saved or self._live is None or restored_step is None:
            return None
        live = UserStates.capture(pl_module, model_only=True)
        owners = stateful_owners(pl_module, model_only=True)
        for place, state in saved:
            if 0 <= int(place) < len(owners):
                owners[int(place)].load_state_dict(state)
        return live

    @staticmethod
    def _snapshot_user_states(pl_module: Any, snapshot: Any) -> list[list[Any]]:
        """The snapshot's user states for a checkpoint that carries the snapshot: ``[place, state]`` pairs, ``place``
        the owner's among :func:`~lr_callbacks.core.snapshot.stateful_owners` (the same in a resumed run's module)."""
        places = {id(owner): i for i, owner in enumerate(stateful_owners(pl_module, model_only=True))}
        return [[places[id(owner)], state] for owner, state in snapshot.user_states() if id(owner) in places]

    def _set_gate(self) -> None:
        """Hand the policy's current limits to the step's signals (the per-sample limit) and the device judge;
        on the host path of a module that reports no per-sample losses there is nothing to hand."""
        if self._judge is None and not self._policy.sample_size:
            return
        # nothing is judged on the device while a rebaseline() waits for the read: its baselines are the old ones
        gate = Gate(clip=self.config.outlier_action == "clip") if self._rebaselines_due else self._policy.gate()
        self._signals.sample_limit = gate.sample_limit
        if self._judge is not None:
            self._judge.set_gate(gate)

    def _new_ring(self, trainer: Any, pl_module: Any, optimizer: Any) -> SnapshotRing:
        """The ring where ``snapshot`` says; ``"auto"`` decides from the state's size and the free host memory, on
        every rank alike (disk when any rank's host memory cannot hold the ring: the ranks must meet at the same
        barriers). Disk snapshots go to a directory of this fit's own under ``<default_root_dir>/watchdog-snapshots``:
        two runs started from one directory (``default_root_dir`` is the working directory by default) shared
        ``step-<k>.ckpt`` before, and the first to end removed the other's files (its next rollback failed, or
        loaded the other run's weights)."""
        mode = self._snapshot_mode
        if mode == "auto":
            size = self.config.snapshots * state_bytes(pl_module, optimizer)
            # every rank on this host keeps a ring in its memory (before, one rank's was held to all of it)
            ranks = max(int(trainer.world_size) // max(int(trainer.num_nodes), 1), 1)
            mode, why = choose_snapshot(size, free_host_bytes(), ranks)
            if int(trainer.world_size) > 1 and not trainer.strategy.reduce_boolean_decision(mode == "host", all=True):
                mode, why = "disk", "another rank's host memory cannot hold the ring"
            if trainer.is_global_zero:
                log.info("%s: snapshot='auto' keeps its snapshots in %s memory: %s", OWNER, mode, why)
        self.snapshot_mode = mode
        directory = ""
        if mode == "disk":
            own = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # rank 0's, the same on every rank
            own = trainer.strategy.broadcast(own, src=0) if int(trainer.world_size) > 1 else own
            directory = os.path.join(trainer.default_root_dir, "watchdog-snapshots", own)
        return SnapshotRing(mode, directory, trainer.strategy)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        step = int(trainer.global_step)
        if step != self._norms_step:
            # put back if this step is skipped: captured at its first micro-batch, one whose training_step returns None
            # included (its forward pass moved them too). Before, at the first micro-batch with a loss: a skipped step
            # under accumulation kept the forward pass of a first micro-batch that returned None
            self._norms_step = step
            self._norms.capture()
        if self._signals.micro_batches == 0:
            self._batches, self._rngs = [], []  # the micro-batches of the step's loss: the reference batch
            # StochasticWeightAveraging's SWALR, created at its start epoch, targets swa_lrs without this scale's cut
            self._swa_scheduler = scale_new_swa_scheduler(trainer, self._policy.scale, self._swa_scheduler)
        self._batches.append(batch)
        self._rngs.append(rng_state(pl_module.device))  # a reference evaluation replays its random draws
        take_sample_losses(pl_module)  # drop any left by an evaluation outside the step (the reference batch's)

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        samples = take_sample_losses(pl_module)
        if not self._paused:
            self._signals.add_loss(loss)
            if samples is not None:
                self._signals.add_samples(samples)

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._paused:
            return
        unscale_fused(trainer, optimizer)  # a fused optimizer's gradients, still scaled under a GradScaler
        world = int(trainer.world_size)
        values = self._signals.collect(optimizer, max(int(trainer.accumulate_grad_batches), 1), world)
        self._signals.reset()
        if values is None:
            return
        self._note_gradients(self._signals.gradients)
        if self._policy.state.halted:
            # Lightning may not stop at once (min_steps, min_epochs): no update after a halt, and the batch's forward
            # pass leaves no trace either (before, BatchNorm's statistics moved on from the state the halt saved)
            self._drop(trainer, optimizer)
            if self._has_buffers:
                self._restore_buffers(pl_module, exact=True)
            return
        values = all_reduce_signals(values, world, trainer.strategy)
        step = int(trainer.global_step)
        if self._policy.watches_written_lrs(step):
            self._note_written_over(trainer)
        judge = self._judge
        # read at a fresh run's first step too: its snapshot is retaken there with the batch, the reference that tells
        # damaged weights (an LR that blows the run up at its first updates) from bad data
        read = (step + 1) % self._sync_every == 0 or step in (self._last_step, self._policy.state.first_step)
        if judge is not None and not read and not judge.full:
            held_forced = sum(row[1].forced for row in self._held)
            if self._policy.state.skip_pending > judge.forced_pending + held_forced:
                self._drop(trainer, optimizer)
                judge.forced(values, step)
            else:
                exact = supports_found_inf(optimizer) and not self._has_scaler(trainer)
                judge.judge(optimizer, values, step, exact)
                self._untouched = False  # its update (or a zero-gradient step) may reach the weights
                if exact:
                    self._found_inf_set = optimizer
                every = self.config.update_every  # measured between reads too; dropped at the read if skipped
                if every is not None and step % every == 0 and not self._updates.armed:
                    self._updates.arm(optimizer, step, values[1], self._planned_lrs(trainer))
            return
        self._host_step(trainer, pl_module, optimizer, values, step)

    def _note_written_over(self, trainer: Any) -> None:
        """Tell the policy when the last step ran at an LR above the one ``LRSchedule`` wrote for it by more than the
        ladder's step (1 / ``lr_factor``), and since which step it did: trouble right after it is that LR's, not the
        planned peak's. The same on every rank (the LR is)."""
        written = self._written_beyond_the_ladder(find_lr_schedule(trainer))
        if written is not None:
            self._policy.lr_written(*written)

    def _written_beyond_the_ladder(self, schedule: Any) -> tuple[int, float, int] | None:
        """``schedule``'s note that the last step ran above the LR it wrote (``(step, ratio, since)``, see
        ``LRSchedule._last_written_over``) when the ratio is beyond the ladder's step (1 / ``lr_factor``)."""
        written = schedule._last_written_over() if schedule is not None else None
        return written if written is not None and written[1] > 1.0 / self.config.lr_factor else None

    def _note_gradients(self, count: int) -> None:
        """Start the gradient norm's and the update ratio's baselines again when more parameter tensors have
        gradients than at any step before (a frozen backbone trains from now on), or than at each of the last
        ``warmup_steps`` steps or more (parameters frozen for a while, long enough for the baselines to hold the
        narrower set's steps alone, train again). Counts that change from step to step (a mixture of experts whose
        unused experts get no gradient) do not restart them. Before, only the first: a body frozen for steps
        100-300 and trained again from 300 had its update, 2.84× the head's alone, taken as an LR too high at step
        310: a rollback and the LR cut to 0.35."""
        before, held = self._last_gradients, self._gradients_held
        if count == before:
            self._gradients_held += 1
        else:
            self._last_gradients, self._gradients_held = count, 1
        if count > self._most_gradients or (count > before and held >= self.config.warmup_steps):
            if self._most_gradients:
                log.info(
                    "%s: %d parameter tensors have gradients now, %d before (unfrozen): the gradient norm's and the "
                    "update ratio's baselines start again",
                    OWNER,
                    count,
                    before,
                )
                self._policy.gradients_widened()
                self._set_gate()
            self._most_gradients = max(self._most_gradients, count)

    def _host_step(self, trainer: Any, pl_module: Any, optimizer: Any, values: torch.Tensor, step: int) -> None:
        """Read the signals back (one transfer), replay the device's steps, decide and act on this one."""
        rows, self._held = self._held, []
        # the probe reads the live weights as they are now: the restored snapshot's, unless an update came since
        self._policy.restored_untouched = self._untouched
        pending, lrs, update_step = self._updates.take()
        width = values.numel()  # [loss, grad_norm], then the per-sample summary if the module reports one
        if pending is not None:
            values = torch.cat([values.reshape(-1), pending.to(values.device).reshape(-1)])
        if self._judge is not None:
            device_rows, current = self._judge.read(values)
            rows += device_rows
        else:
            current = values.tolist()
        (loss, norm), ratios = current[:2], current[width:-1]
        self._policy.scaled = self._scaler_amplifies(trainer, loss, norm)
        update_norm = current[-1] if pending is not None else math.nan  # the measured step's gradient norm
        if any(row[0] == update_step and row[1].skip for row in rows):
            ratios = []  # the device skipped the measured step: its "update" is none, or momentum's alone
        if not self._warned_nonpositive:
            below = [(k, lo) for k, _, lo, _, _ in rows if math.isfinite(lo) and lo <= 0.0]  # judged on the device
            below += [(step, loss)] if math.isfinite(loss) and loss <= 0.0 else []
            if below:
                self._warned_nonpositive = True
                warn_nonpositive(trainer, *below[0])
        world = int(trainer.world_size)
        reported = width > 2 and current[4] > 0  # under DDP the summary always comes, with 0 samples for none
        samples = self._in_force(Samples(*current[2:width]) if reported else None, world)
        scale_before = self._policy.scale
        if self._policy.wants_share:
            self._policy.planned_share(step, self._planned_share(trainer, optimizer))
        probe = self._probe(trainer, pl_module)
        decisions: list[Decision] = []
        skipped_before = False  # a step judged on the device whose batch ran forward but was not trained on
        for k, v, lo, no, s in rows:  # the steps judged on the device since the last read, oldest first
            self._rebaseline_now(k)
            # its update ran between reads, at the scale in force then: a decision of this read changes the next ones
            decisions.append(self._record(k, v, lo, no, probe, self._in_force(s, world), scale_before))
            skipped_before |= v.skip
            if self._acted(decisions):
                break  # the steps after it ran on the weights the rollback (or halt) undoes: not judged again
        dropped = self._acted(decisions)  # whether this step's update is dropped
        recorded = not dropped
        self._rebaseline_now(step)
        if dropped:
            self._drop(trainer, optimizer)  # this step too
        else:
            verdict = self._policy.judge(loss, norm, samples)
            dropped = verdict.skip
            if verdict.skip:
                self._drop(trainer, optimizer)
            elif verdict.clip_factor != 1.0:
                clip_gradients(optimizer, verdict.clip_factor)
            decisions.append(self._record(step, verdict, loss, norm, probe, samples))
            if ratios and update_step is not None:
                decisions.append(self._record_update(update_step, ratios, lrs, update_norm, optimizer))
        if not dropped:
            self._untouched = False
        self._apply(trainer, pl_module, optimizer, decisions, scale_before)
        if recorded and step % self._log_every == 0:
            # the scale this step's update uses: after all of this read's decisions (a rollback's cut, the update
            # ratio's), as lr/<group> shows it. Before, the scale after its first decision: 0.5 where the step
            # trained at 0.05 (a rollback's cut, then the update ratio's), 0.1 where its LR was back at the plan's
            log_scalars(self._trainer, {"watchdog/lr_scale": self._policy.scale}, step)
        if not self._warned_lone_skips and self._policy.lone_skips_recur(step):
            self._warned_lone_skips = True
            warn_lone_skips(trainer, self._policy, step)
        # batches that ran forward and were not trained on leave no trace in the buffers, unless a rollback brought the
        # snapshot's back; a halt that keeps the live weights puts them back too (before, the halting batch's NaN input
        # left BatchNorm's statistics NaN in the halt checkpoint, "the last good state")
        not_trained = skipped_before or dropped or self._acted(decisions)
        if not_trained and not any(d.rollback for d in decisions) and self._has_buffers:
            self._restore_buffers(pl_module, exact=not skipped_before)
        every = self.config.update_every
        if every is not None and step % every == 0 and not dropped and not self._acted(decisions):
            self._updates.arm(optimizer, step, norm, self._planned_lrs(trainer))
        if self._policy.wants_snapshot(step):
            self._make_room(step)
            self._ring.take(pl_module, optimizer, step, self._batches, self._rngs)
            self._policy.snapshot_taken(step, loss)
            self._ring.keep_only([int(r["step"]) for r in self._policy.state.ring])
        self._set_gate()
        self._write_events(trainer, step)

    def _make_room(self, step: int) -> None:
        """Before a full ring takes the snapshot of ``step``, give up the one the policy drops for it (the oldest, or
        the one after the run's first while trouble at the planned peak may still send the run back to its start):
        the new snapshot is copied into its buffers. Before, it was given up after the take, and a host ring of
        ``snapshots=3`` held four copies of the model and its optimizer state (the fourth as the spare buffers),
        a third more than ``snapshot="auto"`` counts and the docs say."""
        leaving = self._policy.leaving(step)
        if leaving is not None:
            self._ring.drop(leaving)

    def _restore_buffers(self, pl_module: Any, exact: bool) -> None:
        """Skipped batches' forward passes moved the buffers (a NaN batch leaves BatchNorm's running statistics NaN
        for good, and every evaluation after it). This step's alone (``exact``): the normalization layers' statistics
        go back to their values at its start. Steps judged on the device before this read, whose statistics the
        steps since have moved on from: to the newest snapshot's. Any buffer left non-finite goes back to the
        newest snapshot's too; the others (an EMA the user updates outside the forward pass) keep their updates."""
        names: set[str] = set()
        if exact:
            self._norms.restore()
        else:
            names |= self._norms.names
        names |= nonfinite_buffers(pl_module)
        if names:
            self._ring.restore_buffers(pl_module, names)

    @staticmethod
    def _planned_lrs(trainer: Any) -> list[float] | None:
        """The LRs LRSchedule planned for this step's groups (``None`` without one driving them): the update ratio's
        reference, so that an LR written over the plan is not taken as planned."""
        schedule = schedule_callback(trainer)
        return schedule._planned_lrs(0) if schedule is not None else None

    def _planned_share(self, trainer: Any, optimizer: Any) -> float:
        """This step's LR as a share of its planned peak (LRSchedule's peak, the torch scheduler's), without the
        watchdog's own scale; read only while the run warms up (one float of the first group per step).

        The peak is read at every step: the finder may set a new one mid-fit (``LRFinder(epochs=[k])``). Read once
        and kept, the old peak made a lower answer look like the plan falling past its peak: the warmup was taken
        as over at the finder's epoch, and damage later in the warmup got the cut of a passing fault, undone by
        the next clean stretch. ``LRSchedule`` keeps its peak and the watchdog's scale apart; a torch scheduler
        carries the scale in its own peak (:func:`~lr_callbacks.core.lr_model.set_lr_scale` rescales it)."""
        scale = self._policy.scale
        schedule = find_lr_schedule(trainer)
        if schedule is not None and not schedule._handed_over:
            peak = schedule.peak_lrs[0][0] * scale
        else:
            peak = reference_lr(trainer)
        if not peak or not scale:
            return math.nan
        return as_float(optimizer.param_groups[0]["lr"]) / peak

    def _in_force(self, samples: Samples | None, world_size: int) -> Samples | None:
        """A per-sample summary as read back (its count and size averaged over the ranks) with totals over the
        ranks, and the per-sample limit its count was taken at: the one set at the last read."""
        if samples is None:
            return None
        count, n = samples.count * world_size, samples.n * world_size
        return dataclasses.replace(samples, count=count, n=n, limit=self._signals.sample_limit)

    @staticmethod
    def _acted(decisions: list[Decision]) -> bool:
        return any(d.rollback or d.halt is not None for d in decisions)

    def _record_update(
        self, step: int, ratios: list[float], lrs: list[float], grad_norm: float, optimizer: Any
    ) -> Decision:
        names = self._names(optimizer)
        decision = self._policy.record_update(step, dict(zip(names, zip(ratios, lrs))), grad_norm)
        if step % self._log_every == 0 or decision.incidents:
            log_scalars(self._trainer, {f"watchdog/update_ratio/{n}": r for n, r in zip(names, ratios)}, step)
        for incident in decision.incidents:
            self._report(incident)
        return decision

    def _names(self, optimizer: Any) -> list[str]:
        """Each group's name in its update ratio's tag and in the policy's baselines, as in ``lr/<group>``
        (:func:`~lr_callbacks.core.logs.group_names`): a group named keeps its name, one added since is named as it
        comes, and a resumed run goes on with its checkpoint's names. Before, every group was named afresh at every
        step: groups ``a``, ``h``, then ``a`` and ``a-1`` added, moved the first added from ``a-1`` to ``a-2`` (its
        baseline given to the user's ``a-1``), while LRSchedule kept ``lr/a-1`` and tagged the user's ``a-1-1``."""
        given = given_names(optimizer)
        named = self._group_names[: len(given)]
        if not names_of(named, given[: len(named)]):
            named = []  # not these groups' names (the groups were replaced): named afresh
        self._group_names = group_names(given, named)
        return self._group_names

    def _probe(self, trainer: Any, pl_module: Any) -> Probe | None:
        """The live weights' loss on the newest snapshot's batches, evaluated only if the policy asks, and once per
        read (the steps judged on the device since the last read are recorded on the same weights)."""
        ring = self._ring
        if not self._reference_batch:
            return None
        read: list[float | None] = []

        def probe() -> float | None:
            if not read:
                batches, rngs = ring.reference_batches(), ring.reference_rngs()
                read.append(reference_loss(pl_module, batches, int(trainer.world_size), trainer.strategy, rngs))
            return read[0]

        return probe

    def _record(
        self,
        step: int,
        verdict: Verdict,
        loss: float,
        norm: float,
        probe: Probe | None = None,
        samples: Samples | None = None,
        scale: float | None = None,
    ) -> Decision:
        """Record a step's signals, log them, report its incidents; ``scale``: the LR scale its update used, logged
        as ``watchdog/lr_scale`` (``None``: this read's own step, whose scale is logged once its decisions apply)."""
        logged = step % self._log_every == 0
        scores = self._policy.z_scores(loss, norm) if logged and self._policy.ready else {}  # against the old baseline
        decision = self._policy.record(step, loss, norm, verdict, probe, samples)
        if logged:
            metrics = {"watchdog/loss": loss, "watchdog/grad_norm": norm}
            if scale is not None:
                metrics["watchdog/lr_scale"] = scale
            metrics.update({f"watchdog/{name}": value for name, value in scores.items()})
            if samples is not None and math.isfinite(samples.limit):
                metrics["watchdog/sample_outliers"] = samples.share
            metrics["watchdog/cusum"] = self._policy.cusum.value
            log_scalars(self._trainer, metrics, step)
        for incident in decision.incidents:
            self._report(incident)
        return decision

    def _apply(
        self, trainer: Any, pl_module: Any, optimizer: Any, decisions: list[Decision], scale_before: float
    ) -> None:
        """Apply the rollback, LR scale and halt that the steps just recorded call for."""
        rollback = next((d for d in reversed(decisions) if d.rollback), None)  # the last one's target holds
        snapshot = self._ring.get(rollback.rollback_to) if rollback is not None else None
        if snapshot is not None:
            snapshot.restore(pl_module, optimizer)
            self._drop(trainer, optimizer)
            self._untouched = True
            self._ring.keep_only([int(r["step"]) for r in self._policy.state.ring])
        if self._policy.scale != scale_before:
            set_lr_scale(trainer, self._policy.scale, scale_before)
        halt = next((d.halt for d in decisions if d.halt is not None), None)
        if halt is not None:
            self._drop(trainer, optimizer)
            self._halt_pending = halt

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the steps judged on the device since the last read when the fit ended before its planned last
        step (an early stop, ``max_time``): their incidents and scalars, and the ``rebaseline()``s that waited for
        that read, nothing more to decide. Those a checkpoint read early (held for the next read) come first: before,
        they were left out, and a skip among them never reached ``events`` or TensorBoard."""
        if self._judge is None:
            return
        rows, self._held = self._held, []
        rows += self._judge.read(None)[0] if self._judge.steps else []
        for step, verdict, loss, norm, samples in rows:
            self._rebaseline_now(step)
            in_force = self._in_force(samples, int(trainer.world_size))
            decision = self._policy.record_after_end(step, loss, norm, verdict, in_force)
            if step % self._log_every == 0:
                log_scalars(self._trainer, {"watchdog/loss": loss, "watchdog/grad_norm": norm}, step)
            for incident in decision.incidents:
                self._report(incident)
        if self._rebaselines_due:
            self._rebaseline_now(self._rebaselines_due[-1][0])
        self._write_events(trainer, int(trainer.global_step) - 1)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._clear_found_inf()
        self._restore_clipping(trainer)
        clear_stale_unscale(trainer)  # a batch whose training_step returned None was not stepped (see there)
        if trainer.optimizers:
            self._updates.measure(trainer.optimizers[0], self._signals.shard_group, trainer.strategy.root_device)
        if self._halt_pending is not None:
            self._halt(trainer)

    def _halt(self, trainer: Any) -> None:
        reason, self._halt_pending = self._halt_pending, None
        assert self._halt_path is not None  # set at fit start
        path = trainer.strategy.broadcast(unused_path(self._halt_path))  # never over what is there: -v1, -v2, …
        self._halt_path = path
        save_last_good(trainer, path, str(reason))
        trainer.should_stop = bool(trainer.strategy.reduce_boolean_decision(True, all=False))
        message = f"{OWNER} halted the run: {reason}, and saved to {path}"
        log.error(message)
        self._write_events(trainer, int(trainer.global_step), f"**halt**: {message}")

    def _write_events(self, trainer: Any, step: int, halt: str = "") -> None:
        """Write the incidents reported since the last write to ``watchdog/events``, as one table at ``step`` (the
        read's; a step after the last write's at least), and a halt's message after them.

        TensorBoard's server keeps one entry of a tag per step, the last, and an entry at a step below one it holds
        drops those at or after it (as after a restart). Before, each incident had an entry at its own step: of a
        skip for the loss and the gradient norm only one row was served, and an update ratio's incident, judged at
        the next step and written after that step's, dropped them (a real ``tensorboard`` served 4 of a run's 7
        incidents; the rollback was not among them)."""
        rows, self._unwritten = sorted(self._unwritten, key=_step_of), []  # in step order, as `events` lists them
        if not rows and not halt:
            return
        self._written_step = max(step, self._written_step + 1)
        table = _HEADER + "\n".join(incident.row() for incident in rows) if rows else ""
        log_text(trainer, "watchdog/events", "\n\n".join(text for text in (table, halt) if text), self._written_step)

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Never write poisoned weights: while an incident is open, or steps judged on the device are not read
        yet (``sync_every_n_steps`` > 1: one of them may have done damage the host has not seen), or the last
        step's update ratio, measured but judged only at the next step, is too large (the LR damaged the weights:
        the judgement will undo them), or the last step ran at an LR written over ``LRSchedule``'s
        (:meth:`_lr_written_unread`), save the last clean snapshot instead, with the live weights in the
        watchdog's state for a resume to go on from."""
        snapshot_step = self._policy.state.snapshot_step
        snapshot = self._ring.get(snapshot_step)
        # state_dict, called just before, read the device's rows into _held
        unread = bool(self._held) or self._update_too_large(trainer) or self._lr_written_unread(trainer)
        own = checkpoint.setdefault("callbacks", {}).setdefault(self.state_key, {})
        if (self._policy.incident_open or unread) and snapshot is not None:
            own["live"] = snapshot.substitute(checkpoint)
            if own["live"] is not None:  # not sharded (the callbacks' state is rank 0's alone): with its user states
                own["user_states"] = self._snapshot_user_states(pl_module, snapshot)
                older = self._ratio_snapshot_for(trainer, snapshot_step)
                if older is not None:
                    own["ratio_snapshot"] = older
            return
        # a rollback's probation (until `patience` steps in a row are accepted), once an update reached the restored
        # weights: no snapshot can be taken before its end, and what damaged the weights may still be coming
        probation = self._policy.state.guarded is not None and not self._untouched
        if (
            snapshot is not None
            and (not self._policy.settled or probation)
            and snapshot_step != int(trainer.global_step)
            and strategy_kind(trainer.strategy) == "replicated"
        ):
            # a climb under way (or a run of outliers read as bad data), or a rollback's probation: the live weights
            # are kept, and the newest snapshot beside them, for a resumed run to roll back to what the uninterrupted
            # one would. Before, it took the checkpoint's weights for that snapshot (climbing ones; in probation,
            # those an LR pulse had just damaged), and its rollback restored them
            own["snapshot"] = snapshot.export()
            own["user_states"] = self._snapshot_user_states(pl_module, snapshot)
        if not self._policy.state.halted and self._halt_pending is None:
            self._policy.request_snapshot()

    def _ratio_snapshot_for(self, trainer: Any, newest: int | None) -> dict[str, Any] | None:
        """The snapshot that the update ratio measured at the last sample, judged too large at the next read, will
        send the run back to, when it is older than the newest (the checkpoint's weights): the newest from before the
        updates since the sample before, and one may have been taken among them. A resumed run needs it in its ring to
        go back where the uninterrupted one does. Before, it held the newest alone: an LR ×30 from step 60 of the
        digits MLP under ``sync_every_n_steps=4``, checkpointed after step 60, went back to step 59's snapshot resumed
        and to 47's uninterrupted (final weights 0.12 apart)."""
        step = self._updates.pending_step
        if step is None or newest is None or not self._update_too_large(trainer):
            return None
        target = self._policy._ratio_target(step)
        snapshot = self._ring.get(int(target["step"])) if target is not None else None
        if target is None or int(target["step"]) >= newest or snapshot is None:
            return None
        older = int(target["step"])
        reference = self._ring.batches.get(older, [])
        rngs = self._ring.rngs.get(older, []) if reference else []
        if reference and not loads_safely(reference):
            reference, rngs = [], []
        return {"step": older, **snapshot.export(), "reference": reference, "reference_rngs": rngs}

    def _lr_written_unread(self, trainer: Any) -> bool:
        """Whether the last step ran at an LR above the one ``LRSchedule`` wrote for it by more than the ladder's step,
        for fewer than ``patience`` steps in a row: its loss is not read yet (the next step's), and a checkpoint
        written now may hold weights that LR damaged. An LR pulse ×30 at step 25 of the digits MLP, checkpointed after
        it: the uninterrupted run rolled back to step 20's snapshot; resumed, the checkpoint's damaged weights were the
        only snapshot, and the run trained on at a loss of 150, taken for a new level of the data. Written over for
        longer, without trouble, that LR is the run's."""
        # a lookup: at teardown the schedule has let its fit go
        written = self._written_beyond_the_ladder(schedule_callback(trainer))
        return written is not None and written[0] - written[2] < self.config.patience

    def _update_too_large(self, trainer: Any) -> bool:
        """Whether the update ratio measured at the last step, not judged yet, would be judged too large."""
        pending, lrs = self._updates.pending, self._updates.pending_lr_values
        if pending is None or not trainer.optimizers:
            return False
        *ratios, grad_norm = pending.reshape(-1).tolist()  # the same values on every rank (global norms)
        return self._policy.would_cut(dict(zip(self._names(trainer.optimizers[0]), zip(ratios, lrs))), grad_norm)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """At a fit's end the snapshots are given up: host memory freed (but the newest snapshot's when the fit
        ended in an open incident), disk files removed. Before, a host ring stayed allocated for as long as the
        user kept the watchdog (to read its ``events``): three copies of the model and its optimizer state
        (MiniLM: 507 MiB), and the next fit's hooks paid for freeing them."""
        self._clear_found_inf()
        self._restore_clipping(trainer)
        self._write_events(trainer, int(trainer.global_step) - 1)  # a rebaseline() after the last step
        if stage == "fit":
            # a checkpoint the user writes after the fit still gets the newest snapshot's reference batch, and its
            # weights instead of the live ones when the fit ended in an open incident (see on_save_checkpoint); disk
            # snapshots leave no file
            unclean = (
                self._policy.incident_open
                or bool(self._held)
                or self._update_too_large(trainer)
                or self._lr_written_unread(trainer)
            )
            self._ring.release(self._policy.state.snapshot_step, keep_snapshot=unclean)
        # another stage's end (trainer.validate after the fit) leaves what the fit's end kept: no "disk" file is left
        # by then. Before, it gave up the disk ring's snapshot read back into host memory, and its reference batch
        self._trainer = None

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """A fit that ends by an exception or an interrupt (Ctrl-C), where Lightning calls no ``teardown``: the
        disk snapshots are removed and the trainer's clipping put back, as at a normal end."""
        self.teardown(trainer, pl_module, "fit")

    def _clear_found_inf(self) -> None:
        """Remove the ``found_inf`` flag a device-judged step left on a fused optimizer (or it would skip on)."""
        optimizer, self._found_inf_set = self._found_inf_set, None
        if optimizer is not None:
            clear_found_inf(optimizer)

    @override
    def state_dict(self) -> dict[str, Any]:
        """The policy's state, and the steps judged on the device since the last read (read now, replayed at
        the next read as they would have been, so a resumed run decides exactly as the uninterrupted one)."""
        if self._judge is not None and self._judge.steps:
            self._held += self._judge.read(None)[0]
        snapshot_step = self._policy.state.snapshot_step
        reference = self._ring.batches.get(snapshot_step, []) if snapshot_step is not None else []
        rngs = self._ring.rngs.get(snapshot_step, []) if reference and snapshot_step is not None else []
        if reference and not loads_safely(reference):
            if not self._warned_reference:
                log.info(
                    "%s: the reference batch (%s) would not load with torch.load(weights_only=True), the default "
                    "of a resume; checkpoints leave it out, and a resumed run takes a new one at its next snapshot",
                    OWNER,
                    type(reference[0]).__name__,
                )
                self._warned_reference = True
            reference, rngs = [], []
        return {
            "policy": self._policy.state_dict(),
            "pending": [row_state(*row) for row in self._held],
            "rebaselines_due": [list(due) for due in self._rebaselines_due],
            "reference": reference,  # the clean reference batch of the snapshot a resumed run starts from
            "reference_rngs": rngs,  # the RNG states its evaluation replays
            "update": self._updates.state_dict(),  # an update-ratio measurement not read yet
            "group_names": list(self._group_names),  # a resumed run names its groups so (groups added mid-run)
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "policy" not in state_dict:
            raise ValueError(f"{OWNER}: the checkpoint's state lacks 'policy'; was it written by {OWNER}?")
        if self._stage not in (None, "fit"):
            return  # trainer.test/validate(ckpt_path=...) loads every callback's state: not a resume
        self._policy.load_state_dict(state_dict["policy"])
        if self._trainer is not None:
            # a strategy that restores the checkpoint after its own set-up (ModelParallelStrategy, FSDP) loads this
            # state after on_fit_start, where the settings were resolved against this fit's run: resolved again, as
            # on one device or under DDP, whose on_fit_start comes after the load. Before, such a resume kept the
            # checkpoint's: snapshot_every=2 and max_data_skips=3 where the resumed fit gave 5 and 7, "50%" of the
            # checkpoint's 6-step run for recover_after in a 12-step one, and rollbacks under snapshot="off"
            self._configure_policy()
        self._live = state_dict.get("live")
        self._saved_snapshot = state_dict.get("snapshot")
        self._ratio_snapshot = state_dict.get("ratio_snapshot")
        self._restored_user = list(state_dict.get("user_states", []))
        self._held = [row_from_state(row) for row in state_dict.get("pending", [])]
        self._rebaselines_due = [(int(k), str(why)) for k, why in state_dict.get("rebaselines_due", [])]
        self._updates.load_state_dict(state_dict.get("update"))
        self._restored_reference = list(state_dict.get("reference", []))
        self._restored_rngs = list(state_dict.get("reference_rngs", []))
        self._group_names = [str(name) for name in state_dict.get("group_names", [])]
        if self._policy.state.halted:
            log.warning("%s: resuming a halted run (%s); the rollback budget is renewed", OWNER, self.halt_reason)
            self._policy.state.halted = None
            self._policy.state.rollbacks = 0

    # --- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _optimizer(trainer: Any) -> torch.optim.Optimizer:
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"{OWNER} needs exactly one optimizer (automatic optimization), found {len(trainer.optimizers)}"
            )
        optimizer: torch.optim.Optimizer = trainer.optimizers[0]
        return optimizer

    @staticmethod
    def _has_scaler(trainer: Any) -> bool:
        return grad_scaler(trainer) is not None

    @staticmethod
    def _scaler_amplifies(trainer: Any, loss: float, norm: float) -> bool:
        """Whether a GradScaler may have caused this step's overflowing gradients: one is in use and its scale still
        amplifies them (at least 1; read only for a finite loss whose gradient norm is not finite). A scale fallen
        below 1 overflows on gradients that are not finite unscaled either: before, an exemption without that bound
        let a run whose gradients overflowed every step train on with no decision, its scale at 8e-25."""
        scaler = grad_scaler(trainer)
        if scaler is None or math.isfinite(norm) or not math.isfinite(loss):
            return scaler is not None
        return float(scaler.get_scale()) >= 1.0

    def _report(self, incident: Incident) -> None:
        trainer = self._trainer
        level = logging.INFO if incident.action in (Action.SKIP, Action.CLIP) else logging.WARNING
        if trainer is None or trainer.is_global_zero:
            log.log(
                level,
                "%s at step %d: %s%s → %s.%s",
                OWNER,
                incident.step,
                incident.signal,
                "" if incident.signal is Signal.REQUESTED else f" {incident.value:.4g}",
                incident.action,
                f" {incident.detail}" if incident.detail else "",
            )
        if trainer is not None:
            self._unwritten.append(incident)  # written with the read's others (_write_events)
        if incident.signal is Signal.FLAT_LOSS and (trainer is None or trainer.is_global_zero):
            warn_flat_loss(trainer, incident)


def _step_of(incident: Incident) -> int:
    return incident.step


def _no_clipping(*args: Any, **kwargs: Any) -> None:
    """A dropped step's ``configure_gradient_clipping``: its gradients are gone, there is nothing to clip."""


def _total_steps(trainer: Any) -> int | None:
    """The run's length in optimizer steps, or ``None`` when it is unknown (an endless iterable)."""
    try:
        total = optimizer_steps(trainer)  # under a GradientAccumulationScheduler too
    except Exception:  # no loader length and no max_steps: Lightning cannot tell
        return None
    return total or None  # a run of 0 steps has no length to be relative to
