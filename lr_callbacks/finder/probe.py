"""The stability probe: hold the suggested LR as the real run holds its peak; halve it if that is unstable or stalls.

From the restored state (weights, optimizer, RNG: the sweep's own first batches) it replays the run's warmup
with the candidate as the peak, then holds the candidate for ``max(20, 2 × warmup)`` steps
(:func:`~lr_callbacks.finder.stability.hold_steps`) and judges the hold
(:func:`~lr_callbacks.finder.stability.hold_verdict`). A candidate that is unstable, or stable but ends no
lower than the restored state's own loss (the sweep's first points), is halved and probed again from the same
state, at most twice; the probe keeps the first stable hold that made progress, else the first stable one
(:func:`~lr_callbacks.finder.stability.settle`). Every rank sees the same reduced losses and norms, so every
rank reaches the same verdict.

The warmup is ``LRSchedule``'s, from the current step to where the schedule first reaches 99% of its peak;
one longer than a tenth of the run is replayed compressed into a tenth (its shape kept), so that the probe
stays short beside the run. Without ``LRSchedule`` the warmup is unknown and the candidate is held from the
first step.

The candidate is the peak, and the probe trains at what the run after the choice would train at: under a
``DivergenceWatchdog``'s cut (the shared LR model's scale, :func:`~lr_callbacks.core.lr_model.lr_scale`) the
warmup's LRs and the hold are ``candidate × cut``, as the trials'. Before, the warmup was replayed under the cut but
the raw candidate held (×2 the warmup's end under a ×0.5 cut), so the verdict was about an LR the run would not get.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from lr_callbacks.core.snapshot import TrainingSnapshot
from lr_callbacks.finder.driver import Batches, Driver
from lr_callbacks.finder.result import Probe, ProbeAttempt
from lr_callbacks.finder.stability import MAX_HALVINGS, hold_steps, hold_verdict
from lr_callbacks.finder.trials import run_of

__all__ = ["run_probe", "warmup_of"]

log = logging.getLogger("lr_callbacks")


def warmup_of(schedule: Any, total_steps: int | None) -> tuple[int, int]:
    """``(replayed, real)``: the warmup's steps as the probe replays them, and as the schedule has them.

    The real warmup runs from the schedule's current step to the first step at 99% of the peak still ahead; the
    probe replays at most a tenth of the run (``total_steps``) of it. The plan samples a run longer than its 1,000
    points (every 100th step of 100,000), so the step is sought exactly between the samples around it: before, a
    20-step warmup read as 100 steps in a run of 100,000 (and as 20, not 19, in one of 2,000), and the probe
    replayed 80 steps at the peak as "warmup" and held for 200 steps instead of 38.
    """
    if schedule is None:
        return 0, 0
    start = schedule.steps[0]
    planned, lrs = schedule.plan()[schedule.group_tags[0][0]]
    ahead = [(k, lr) for k, lr in zip(planned, lrs) if k >= start]
    if not ahead:
        return 0, 0
    peak = max(lr for _, lr in ahead)
    index = next(i for i, (_, lr) in enumerate(ahead) if lr >= 0.99 * peak)
    after = ahead[index - 1][0] + 1 if index else start  # the first step the samples have not read
    between = (k for k in range(after, ahead[index][0]) if schedule.lr_at(k, 0, 0) >= 0.99 * peak)
    real = next(between, ahead[index][0]) - start
    cap = max(1, total_steps // 10) if total_steps else real
    return min(real, cap), real


def run_probe(
    trainer: Any, driver: Driver, snapshot: TrainingSnapshot, lr: float, schedule: Any, initial: Sequence[float]
) -> Probe:
    """Probe ``lr`` and at most :data:`~lr_callbacks.finder.stability.MAX_HALVINGS` halvings of it, until a hold is
    stable and makes significant progress from ``initial``, the losses of the restored state (the sweep's first
    points).

    The caller restores ``snapshot`` afterwards.
    """
    replayed, real = warmup_of(schedule, run_of(trainer).total_steps)
    hold = hold_steps(replayed)
    attempts: list[ProbeAttempt] = []
    for _ in range(MAX_HALVINGS + 1):
        snapshot.restore()
        attempt = _attempt(trainer, driver, lr, schedule, replayed, real, hold, initial)
        attempts.append(attempt)
        log.info("LRFinder: stability probe at %.3g: %s", lr, attempt.verdict)
        if attempt.hold.progressed:
            break
        lr = lr / 2.0
    return Probe(replayed, hold, tuple(attempts))


def _attempt(
    trainer: Any,
    driver: Driver,
    lr: float,
    schedule: Any,
    replayed: int,
    real: int,
    hold: int,
    initial: Sequence[float],
) -> ProbeAttempt:
    batches = Batches(trainer.train_dataloader, trainer.num_training_batches)
    losses: list[float] = []
    norms: list[float] = []
    skipped: list[bool] = []  # by the GradScaler: its overflows after the restore are no sign of the LR
    ran = 0  # steps (a batch training_step skipped is none), the warmup's too: a NaN/inf loss ends the attempt
    try:
        for step in range(replayed + hold):
            step_batches = batches.take(driver.accumulate)
            if trainer.strategy.reduce_boolean_decision(step_batches is None, all=False):
                break
            assert step_batches is not None
            if step < replayed:
                driver.set_lrs(_warmup_lrs(schedule, lr, step, replayed, real))
            else:  # under the watchdog's cut, as the warmup's LRs (lr_at) and the run after the choice
                driver.set_lr(lr * driver.lr_scale)
            output = driver.step(step_batches, step)
            if output is None:
                continue
            ran += 1
            loss, norm, skip = trainer.strategy.reduce(output, reduce_op="mean").tolist()
            if step >= replayed:
                losses.append(loss)
                norms.append(norm)
                skipped.append(skip > 0.0)
            if not math.isfinite(loss):
                break
    finally:
        batches.close()
    v = hold_verdict(losses, norms, initial, skipped)
    skips = tuple(k for k, s in enumerate(skipped) if s)
    return ProbeAttempt(
        lr, v.verdict, tuple(losses), tuple(norms), v.rise, v.margin, v.growth, v.drop, v.drop_margin, skips, ran
    )


def _warmup_lrs(schedule: Any, lr: float, step: int, replayed: int, real: int) -> list[list[float]]:
    """Every group's LR at warmup step ``step`` of ``replayed``, the real warmup of ``real`` steps compressed."""
    factor = lr / schedule.peak_lrs[0][0]
    offset = round(step * real / replayed) if replayed else 0
    return [
        [schedule.lr_at(schedule.steps[i] + offset, i, j) * factor for j in range(len(row))]
        for i, row in enumerate(schedule.peak_lrs)
    ]
