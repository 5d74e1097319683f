"""Confirm mode: short trials of the real schedule at a few peak LRs, compared on the validation loss.

A 100-step sweep of the training loss cannot see the run's budget or its schedule, and the best peak LR
moves with both (research ``lr_finder_anchors.md`` §10.5); practitioners who fine-tune try a few LRs an
order of magnitude apart and keep the best. Each trial starts from the same restored state (weights,
optimizer, RNG, so the same batches), runs the first ``length`` optimizer steps of the real schedule with
the candidate as the peak, and is scored on the validation loss at its end; a trial whose training loss
becomes NaN/inf scores ``inf``.

The real schedule is ``LRSchedule``'s ``peak × schedule(k) × scale`` from the current step, with the
candidate as the reference group's peak (others keep their ratio); without ``LRSchedule``, the candidate
is set as the peak through the shared LR model (groups and the user's schedulers) and the user's
step-interval schedulers are stepped after each optimizer step, as Lightning would.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

from lr_callbacks.core.durations import Duration, Run
from lr_callbacks.core.lr_model import set_peak_lr
from lr_callbacks.core.snapshot import TrainingSnapshot
from lr_callbacks.finder.driver import Batches, Driver, evaluate
from lr_callbacks.finder.result import Trial

__all__ = ["CONFIRM_FACTORS", "candidates", "run_of", "run_trials"]

log = logging.getLogger("lr_callbacks")

CONFIRM_FACTORS = (0.5, 1.0, 2.0)
"""The default candidates, as multiples of the suggestion."""


def candidates(confirm: bool | tuple[float, ...], suggestion: float | None) -> tuple[float, ...]:
    """The peak LRs to try: ``confirm``'s list, or the suggestion × :data:`CONFIRM_FACTORS`, or none."""
    if confirm is False:
        return ()
    if confirm is True:
        if suggestion is None:
            log.warning("LRFinder: no suggestion, so no confirm trials (see the flags)")
            return ()
        return tuple(suggestion * f for f in CONFIRM_FACTORS)
    return tuple(confirm)


def run_trials(
    trainer: Any,
    module: Any,
    driver: Driver,
    snapshot: TrainingSnapshot,
    lrs: Sequence[float],
    length: Duration,
    monitor: str,
    schedule: Any,
) -> tuple[Trial, ...]:
    """One trial per LR in ``lrs``, each from ``snapshot``; the caller restores the snapshot afterwards.

    Raises:
        ValueError: if the trainer has no validation data, or ``length`` is 0 steps for this run.
    """
    if trainer.val_dataloaders is None or not trainer.num_val_batches or not trainer.num_val_batches[0]:
        raise ValueError(
            "LRFinder(confirm=...) compares trials on the validation loss, but the trainer has no validation "
            "data; pass val_dataloaders to fit (with limit_val_batches > 0), or drop confirm"
        )
    steps = length.to_steps(run_of(trainer))
    if steps < 1:
        raise ValueError(f"LRFinder: `confirm_length` {length.describe()} is 0 steps for this run; lengthen it")
    if schedule is not None:
        _warn_if_in_warmup(schedule, steps)
    trials = []
    for index, lr in enumerate(lrs):
        snapshot.restore()
        trials.append(_trial(trainer, module, driver, lr, steps, monitor, schedule))
        log.info("LRFinder: trial %d at peak LR %.3g: validation %s %.6g", index, lr, monitor, trials[-1].val_loss)
    return tuple(trials)


def _trial(trainer: Any, module: Any, driver: Driver, lr: float, steps: int, monitor: str, schedule: Any) -> Trial:
    batches = Batches(trainer.train_dataloader, trainer.num_training_batches)
    if schedule is None:
        set_peak_lr(trainer, lr)  # the optimizer's groups and the user's schedulers; the snapshot undoes it
    else:
        factor = lr / schedule.peak_lrs[0][0]
        start = schedule.steps
        shape = [len(row) for row in schedule.peak_lrs]
    losses: list[float] = []
    try:
        for step in range(steps):
            step_batches = batches.take(driver.accumulate)
            if trainer.strategy.reduce_boolean_decision(step_batches is None, all=False):
                break
            assert step_batches is not None
            if schedule is not None:
                driver.set_lrs(
                    [[schedule.lr_at(start[i] + step, i, j) * factor for j in range(n)] for i, n in enumerate(shape)]
                )
            output = driver.step(step_batches, step)
            if schedule is None:
                _step_schedulers(trainer, step)
            if output is None:
                continue
            losses.append(trainer.strategy.reduce(output, reduce_op="mean").tolist()[0])
            if not math.isfinite(losses[-1]):
                return Trial(lr, math.inf, tuple(losses))
    finally:
        batches.close()
    loaders, max_batches = trainer.val_dataloaders, trainer.num_val_batches[0]
    scores = evaluate(trainer, module, loaders, max_batches, monitor)
    total, count = trainer.strategy.reduce(scores, reduce_op="sum").tolist()
    value = total / count if count else math.nan
    return Trial(lr, value if math.isfinite(value) else math.inf, tuple(losses))


def _warn_if_in_warmup(schedule: Any, steps: int) -> None:
    """Warn when the trials end before the schedule reaches its peak: they would compare warmups."""
    start = schedule.steps[0]
    trial_peak = max(schedule.lr_at(start + t, 0, 0) for t in range(steps))
    planned, lrs = schedule.plan()[schedule.group_tags[0][0]]
    run_peak = max([lr for k, lr in zip(planned, lrs) if k >= start] or [trial_peak])
    if trial_peak < 0.99 * run_peak:
        warnings.warn(
            f"LRFinder: the confirm trials ({steps} steps) reach at most {trial_peak / run_peak:.0%} of the peak "
            "LR, inside the schedule's warmup; they compare warmups, not peaks. Lengthen confirm_length past "
            "the warmup",
            UserWarning,
            stacklevel=3,
        )


def _step_schedulers(trainer: Any, step: int) -> None:
    for config in trainer.lr_scheduler_configs:
        if config.interval == "step" and not config.reduce_on_plateau and (step + 1) % config.frequency == 0:
            config.scheduler.step()


def run_of(trainer: Any) -> Run:
    """The run's length in optimizer steps and its epoch length, as ``LRSchedule`` resolves them."""
    total = trainer.estimated_stepping_batches
    batches = trainer.num_training_batches
    per_epoch = None
    if batches is not None and not math.isinf(batches) and batches > 0:
        per_epoch = math.ceil(batches / max(int(trainer.accumulate_grad_batches), 1))
    return Run(total_steps=None if math.isinf(total) else int(total), steps_per_epoch=per_epoch)
