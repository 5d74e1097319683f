"""Confirm mode: trials of the real schedule at a few peak LRs, compared on the validation loss after a cooldown.

A 100-step sweep of the training loss cannot see the run's budget or its schedule, and the best peak LR
moves with both (research ``lr_finder_anchors.md`` §10.5); practitioners who fine-tune try a few LRs an
order of magnitude apart and keep the best. Each trial starts from the same restored state (weights,
optimizer, RNG, so the same batches) and is scored on the validation loss at its end; a trial whose
training loss becomes NaN/inf scores ``inf``.

**The candidates never exceed what the run can hold.** With ``confirm=True`` the stability probe first
holds the sweep's answer as the run holds its peak (halving it when that is unstable or stalls), and the candidates
are the probe's answer and half of it (:data:`CONFIRM_FACTORS`): nothing above the LR the probe saw held.
A trial that fits in the finder's budget is a few percent of the run; at that horizon a larger LR nearly
always looks better (the model is still far from where the run ends), so a larger candidate that wins a
trial says little about the run (the ×2 candidates that won 16-step trials diverged in full runs). A
smaller candidate that wins despite that bias is real evidence that the probe's answer is too high. With a
list (``confirm=[...]``) the user's candidates run as they are, and the sweep's answer breaks ties.

**A trial predicts the run.** With ``LRSchedule``, a trial of ``T`` steps is the user's whole schedule
compressed into ``T`` steps (its warmup, its decay), with the candidate as the reference group's peak (other
groups keep their ratio); a schedule that does not end below half its peak (constant, one with steps) gets
a ``1 − √`` cooldown over the trial's last quarter (:func:`~lr_callbacks.finder.selection.cooldown`). A
score taken at the peak LR favours small LRs (short-horizon bias); one taken after a cooldown does not.
Without ``LRSchedule``, the candidate is set as the peak through the shared LR model (under the watchdog's cut, as
the run after the choice trains; ``LRSchedule``'s LRs hold it) and the user's schedulers
are stepped on Lightning's clock (:func:`_step_schedulers`): the trial is the first ``T`` steps of the real run
(its schedule cannot be compressed). A ``"step"`` scheduler steps after an optimizer step whose last batch's
``batch_idx + 1`` (batches, not optimizer steps: under gradient accumulation they differ) is a multiple of its
``frequency``; an ``"epoch"`` one (Lightning's default) where a pass over the data, one epoch long, ends, when
``current_epoch + 1`` is a multiple of its ``frequency``. Under manual optimization none is stepped: Lightning
never steps them there (the user's ``training_step`` does, and does so in the trial too). ``ReduceLROnPlateau``
is not stepped either: it reads a metric from the run's logs, which a trial neither writes (``self.log`` is
silenced) nor validates for before its end; stepping it on the run's stale metrics would be no truer. A trial
holds its LR, which is what the plateau scheduler does while the metric improves, as it does early in a run.

**The budget** (:func:`~lr_callbacks.finder.selection.trial_budget`): by default the trials get what is
left of :data:`~lr_callbacks.finder.selection.CONFIRM_SHARE` of the run after the sweep and the probe; when
that leaves less than :data:`~lr_callbacks.finder.selection.MIN_TRIAL_STEPS` per trial in the last rung,
no trial runs (flag ``trials_skipped``) and the probe's answer stands. **Successive halving**
(:func:`~lr_callbacks.finder.selection.rungs`): every candidate runs briefly, the better half runs again
from the start, twice as long, until two are left; the last, longest rung decides. Each score carries a
standard error (the spread between validation batches, or the noise of the trial's final training losses
when that is larger); the choice is the anchor (the probe's answer, or the sweep's with a list) unless
another candidate is better by more than 2 standard errors of the difference; when the best two are within
noise, or the last rung was too short to tell, the candidate nearest in log to the anchor is taken and
``trials_inconclusive`` is flagged (:func:`~lr_callbacks.finder.selection.choose`). **No least bad winner**: the
state the trials start from is scored too (one validation pass); when every candidate of the last rung ends above
it by more than 2 standard errors, or diverged, none is chosen or applied (``trials_failed``,
:func:`~lr_callbacks.finder.selection.all_worse`). Before, a list of LRs all too high for the model had its least
bad applied as a clear win (50 on a digits MLP whose sweep answered 0.23: validation loss 75.7 against 2.3).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from lr_callbacks.core.compat import accumulation, load_validation_data, optimizer_steps
from lr_callbacks.core.durations import Duration, Run
from lr_callbacks.core.lr_model import set_peak_lr
from lr_callbacks.core.snapshot import TrainingSnapshot
from lr_callbacks.finder.driver import Batches, Driver, evaluate
from lr_callbacks.finder.ramp import difference_noise
from lr_callbacks.finder.result import Trial
from lr_callbacks.finder.selection import (
    MIN_TRIAL_STEPS,
    Choice,
    all_worse,
    choose,
    cooldown,
    rungs,
    survivors,
    trial_budget,
)

__all__ = ["CONFIRM_FACTORS", "candidates", "plan_trials", "run_of", "run_trials"]

log = logging.getLogger("lr_callbacks")

CONFIRM_FACTORS = (0.5, 1.0)
"""The default candidates, as multiples of the stability probe's answer (never above it)."""


def candidates(confirm: bool | tuple[float, ...], anchor: float | None) -> tuple[float, ...]:
    """The peak LRs to try: ``confirm``'s list, or ``anchor`` (the probe's answer) × :data:`CONFIRM_FACTORS`,
    or none."""
    if confirm is False:
        return ()
    if confirm is True:
        if anchor is None:
            log.warning("LRFinder: no suggestion, so no confirm trials (see the flags)")
            return ()
        return tuple(anchor * f for f in CONFIRM_FACTORS)
    return tuple(confirm)


def require_validation(trainer: Any) -> None:
    """Refuse confirm mode without validation data: its trials are compared on the validation loss.

    Raises:
        ValueError: naming the fix.
    """
    if trainer.val_dataloaders is None:
        # Lightning loads it at fit start only when the first epoch validates (or the sanity check ran): under
        # check_val_every_n_epoch=2 without a sanity check, confirm mode was refused for data that was there
        load_validation_data(trainer)
    if trainer.val_dataloaders is None or not trainer.num_val_batches or not trainer.num_val_batches[0]:
        raise ValueError(
            "LRFinder(confirm=...) compares trials on the validation loss, but the trainer has no validation "
            "data; pass val_dataloaders to fit (with limit_val_batches > 0), or drop confirm"
        )


def plan_trials(trainer: Any, count: int, length: Duration | None, spent: int = 0) -> list[tuple[int, int]]:
    """The rungs ``(trials, steps)`` for ``count`` candidates: ``length`` is the last rung's, or, when ``None``,
    all trials share :func:`~lr_callbacks.finder.selection.trial_budget` of the run, what is left after the
    ``spent`` steps of the sweep and the probe (a rung of 0 steps when nothing is left).

    Raises:
        ValueError: if a length is 0 steps for this run, or the run's length is unknown and none was given.
    """
    run = run_of(trainer)
    if length is None:
        if run.total_steps is None:
            # epochs only where an epoch's length is known: a training loader without one (a stream) has neither
            lengths = (
                "in steps or epochs" if run.steps_per_epoch else "in steps ('200 steps': an epoch's is unknown too)"
            )
            raise ValueError(
                "LRFinder: the run's length is unknown, so the confirm trials cannot take their share of it; "
                f"give confirm_length {lengths}"
            )
        budget = trial_budget(run.total_steps, spent)
        return rungs(count, budget=budget) if budget >= count else [(count, 0)]
    try:
        steps = length.to_steps(run)
    except ValueError as error:  # the run lacks the total or the epoch length the unit needs
        raise ValueError(f"LRFinder: `confirm_length` {length.describe()}: {error}") from None
    if steps < 1:
        raise ValueError(f"LRFinder: `confirm_length` {length.describe()} is 0 steps for this run; lengthen it")
    return rungs(count, final=steps)


def run_trials(
    trainer: Any,
    module: Any,
    driver: Driver,
    snapshot: TrainingSnapshot,
    lrs: Sequence[float],
    length: Duration | None,
    monitor: str,
    schedule: Any,
    anchor: float | None = None,
    spent: int = 0,
) -> tuple[tuple[Trial, ...], Choice, tuple[float, float]]:
    """Every rung's trials (each from ``snapshot``), the choice, and the score of the state they start from
    (validation loss and standard error: what the last rung is compared with); the caller restores the snapshot
    afterwards.

    ``anchor`` is the probe's answer (or the sweep's with a list of candidates): the choice unless another
    candidate is better beyond noise. ``spent``: the steps the sweep and the probe took. When the default
    budget leaves the last rung under :data:`~lr_callbacks.finder.selection.MIN_TRIAL_STEPS`, no trial runs:
    the result is no trials, ``Choice(None, inconclusive=False)`` (the caller flags ``trials_skipped``) and no
    score (NaN).

    Raises:
        ValueError: if the trainer has no validation data, or a trial would be 0 steps long.
    """
    require_validation(trainer)
    plan = plan_trials(trainer, len(lrs), length, spent)
    if length is None and plan[-1][1] < MIN_TRIAL_STEPS:
        log.info("LRFinder: the budget leaves %d steps per confirm trial, too few to tell; none run", plan[-1][1])
        return (), Choice(None, False), (math.nan, math.nan)
    # the state every trial starts from, not trained on: the sweep (or the probe's last hold) left other weights
    snapshot.restore()
    start, start_error = _score(trainer, module, monitor)
    alive, trials = list(lrs), []
    rung: list[Trial] = []
    for index, (_, steps) in enumerate(plan):
        rung = []
        for lr in alive:
            snapshot.restore()
            rung.append(_trial(trainer, module, driver, lr, steps, monitor, schedule, index))
            log.info("LRFinder: trial at peak LR %.3g, %d steps: %s %.6g", lr, steps, monitor, rung[-1].val_loss)
        trials += rung
        if index + 1 < len(plan):
            alive = [alive[i] for i in survivors([t.val_loss for t in rung], plan[index + 1][0])]
    too_short = plan[-1][1] < MIN_TRIAL_STEPS
    scores, errors = [t.val_loss for t in rung], [t.se for t in rung]
    if all_worse(scores, errors, start, start_error):
        log.warning(
            "LRFinder: every confirm candidate (%s) ended its trial with %s above %.6g, the state the trials started "
            "from, or diverged: none trains here, so none is applied (the run keeps its LR); try smaller ones",
            ", ".join(f"{t.lr:.3g}: {t.val_loss:.6g}" for t in rung),
            monitor,
            start,
        )
        return tuple(trials), Choice(None, False, failed=True), (start, start_error)
    choice = choose([t.lr for t in rung], scores, errors, anchor, too_short)
    return tuple(trials), choice, (start, start_error)


def _score(trainer: Any, module: Any, monitor: str) -> tuple[float, float]:
    """The validation loss named ``monitor`` and its standard error (the spread between validation batches), at
    the weights as they are: a trial's end, and the state the trials start from."""
    loaders, max_batches = trainer.val_dataloaders, trainer.num_val_batches[0]
    total, count, squares, parts = trainer.strategy.reduce(
        evaluate(trainer, module, loaders, max_batches, monitor), reduce_op="sum"
    ).tolist()
    value = total / count if count else math.nan
    spread = math.sqrt(max(squares / count - value * value, 0.0) / parts) if count and parts > 1 else 0.0
    return value, spread


def _trial(
    trainer: Any, module: Any, driver: Driver, lr: float, steps: int, monitor: str, schedule: Any, rung: int
) -> Trial:
    batches = Batches(trainer.train_dataloader, trainer.num_training_batches)
    if schedule is None:
        # the optimizer's groups and the user's schedulers, under the watchdog's cut as the run after the choice
        # trains (with LRSchedule, lr_at holds it); the snapshot undoes it
        set_peak_lr(trainer, lr * driver.lr_scale)
    else:
        lr_of = _compressed(trainer, schedule, lr, steps)
    stepped = schedule is None and not driver.manual  # where Lightning steps the user's schedulers
    losses: list[float] = []
    try:
        for step in range(steps):
            passes = batches.passes
            step_batches = batches.take(driver.accumulate)
            if trainer.strategy.reduce_boolean_decision(step_batches is None, all=False):
                break
            assert step_batches is not None
            if stepped and 0 < passes < batches.passes:  # the pass before this step's ended an epoch
                _step_schedulers(trainer, module, "epoch", trainer.current_epoch + passes - 1)
            if schedule is not None:
                driver.set_lrs(lr_of(step))
            output = driver.step(step_batches, step)
            if stepped:
                _step_schedulers(trainer, module, "step", batches.taken - 1)
            if output is None:
                continue
            losses.append(trainer.strategy.reduce(output, reduce_op="mean").tolist()[0])
            if not math.isfinite(losses[-1]):
                return Trial(lr, math.inf, tuple(losses), math.inf, rung)
    finally:
        batches.close()
    value, spread = _score(trainer, module, monitor)
    if not math.isfinite(value):
        return Trial(lr, math.inf, tuple(losses), math.inf, rung)
    return Trial(lr, value, tuple(losses), max(spread, _final_noise(losses)), rung)


def _final_noise(losses: Sequence[float]) -> float:
    """The standard error of where training ended: the noise of the last quarter's losses over √ their number."""
    tail = list(losses[-max(3, len(losses) // 4) :])
    if len(tail) < 3:
        return 0.0
    return 1.2533 * difference_noise(tail) / math.sqrt(len(tail))


def _compressed(trainer: Any, schedule: Any, lr: float, steps: int) -> Any:
    """``step -> every group's LR``: the rest of the run's schedule compressed into ``steps``, peak ``lr``,
    with a cooldown over the last quarter when the schedule does not end below half its peak."""
    factor = lr / schedule.peak_lrs[0][0]
    start = list(schedule.steps)
    total = run_of(trainer).total_steps
    remaining = max((total or 0) - start[0], steps)
    shape = [len(row) for row in schedule.peak_lrs]

    def at(step: int) -> int:
        return min(math.floor(step * remaining / steps), remaining - 1)

    reference = [schedule.lr_at(start[0] + at(t), 0, 0) for t in range(steps)]
    cools = reference[-1] <= 0.5 * max(reference) if reference and max(reference) > 0 else True

    def lrs(step: int) -> list[list[float]]:
        extra = 1.0 if cools else cooldown(step, steps)
        return [
            [schedule.lr_at(start[i] + at(step), i, j) * factor * extra for j in range(n)] for i, n in enumerate(shape)
        ]

    return lrs


def _step_schedulers(trainer: Any, module: Any, interval: str, index: int) -> None:
    """Step the user's ``interval`` schedulers (not ``ReduceLROnPlateau``) as Lightning's ``_update_learning_rates``
    does, through the module's ``lr_scheduler_step``: those whose ``frequency`` divides ``index + 1``, ``index``
    being the ``batch_idx`` of an optimizer step's last batch (``"step"``) or the epoch that ended (``"epoch"``).

    An epoch-interval scheduler is stepped here before the next pass's first step rather than after the last
    step of the pass that ended: no optimizer step comes between, so the LRs are the same, and a stream's pass,
    whose end is known only when it yields no more, is handled as any other.
    """
    for config in trainer.lr_scheduler_configs:
        if config.interval == interval and not config.reduce_on_plateau and (index + 1) % config.frequency == 0:
            module.lr_scheduler_step(config.scheduler, None)


def run_of(trainer: Any) -> Run:
    """The run's length in optimizer steps and its epoch length, as ``LRSchedule`` resolves them."""
    total = optimizer_steps(trainer)  # under a GradientAccumulationScheduler too
    batches = trainer.num_training_batches
    per_epoch = None
    if batches is not None and not math.isinf(batches) and batches > 0:
        per_epoch = math.ceil(batches / accumulation(trainer))  # the epoch's, under a GradientAccumulationScheduler too
    return Run(total_steps=total, steps_per_epoch=per_epoch)
