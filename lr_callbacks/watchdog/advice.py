"""What the watchdog says once, as warnings: setups a rollback cannot fully reach (weight averaging kept inside
a callback, weights-only checkpoints), bad data that keeps coming back, a loss it cannot judge, and what a flat
loss suggests of the LR."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch

from lr_callbacks.core.compat import is_lightning
from lr_callbacks.watchdog.config import OWNER, Incident

if TYPE_CHECKING:
    from lr_callbacks.watchdog.policy import WatchdogPolicy

__all__ = ["warn_averaging", "warn_flat_loss", "warn_lone_skips", "warn_nonpositive", "warn_weights_only"]


def warn_averaging(trainer: Any) -> None:
    """Say that a rollback does not reach the average Lightning's weight-averaging callbacks keep inside the
    callback (found by a review: one LR ×1000 step, rolled back at the next, left ``EMAWeightAveraging``'s
    average, which it copies into the model at the end and into a checkpoint's ``state_dict``, at 1.50 against
    0.20 in the clean run)."""
    names = ("WeightAveraging", "StochasticWeightAveraging")
    averaging = [c for c in trainer.callbacks if any(is_lightning(c, name) for name in names)]
    if averaging and trainer.is_global_zero:
        warnings.warn(
            f"{OWNER}: a rollback puts back the model's weights, not the average {type(averaging[0]).__name__} "
            "keeps inside the callback: updates a rollback undoes may stay averaged in (every step's under "
            "EMAWeightAveraging; under StochasticWeightAveraging those of an epoch end in its averaging phase), "
            "and so in the model it writes at the end and a checkpoint's state_dict, the halt's too. Keep an "
            "EMA in the module instead (torch_ema, diffusers' EMAModel: the watchdog rolls it back), or train "
            "without the watchdog.",
            UserWarning,
            stacklevel=2,
        )


def warn_weights_only(trainer: Any) -> None:
    """Say that weights-only checkpoints bypass the watchdog: Lightning writes them without the callbacks'
    ``on_save_checkpoint``, where a checkpoint written during an incident gets the clean snapshot's weights."""
    savers = [c for c in trainer.callbacks if getattr(c, "save_weights_only", False) is True]
    if savers and trainer.is_global_zero:
        warnings.warn(
            f"{OWNER}: {type(savers[0]).__name__}(save_weights_only=True) writes its checkpoints without the "
            "callbacks' on_save_checkpoint, where the watchdog puts the last clean snapshot's weights in a "
            "checkpoint written while an incident is open: such a file holds the live weights, possibly "
            "damaged. Full checkpoints (the default) are kept clean; a resume needs them anyway.",
            UserWarning,
            stacklevel=2,
        )


def warn_lone_skips(trainer: Any, policy: WatchdogPolicy, step: int) -> None:
    """Say once that bad data keeps coming back between good batches (``WatchdogPolicy.lone_skips``)."""
    count, window = policy.lone_skips(step), policy.config.window
    if count >= policy.config.patience:
        where = f"{count} of the last {window} steps (to step {step})"
    else:
        where = f"{policy.state.lone_skips_total} of the run's {step + 1} steps"
    if trainer.is_global_zero:
        warnings.warn(
            f"{OWNER}: {where} were skipped as bad data one at a time, "
            "between accepted steps, while the clean reference batch read the weights sound. Bad data is the "
            "exception: batches of a higher loss that keep coming back may be part of your data (a second task "
            "or source, harder examples), which the skips keep the model from. If they are, put the losses on "
            "a common scale (e.g. weigh each task's loss by its typical level), or raise z_threshold, or set "
            "outlier_action='clip' (trained on with a clipped gradient); if they are bad (a corrupted shard), "
            "remove them at the source.",
            UserWarning,
            stacklevel=2,
        )


def warn_nonpositive(trainer: Any, step: int, loss: float) -> None:
    """Say once that a loss <= 0 is not judged: the loss rules work in log space (a ratio to the baseline)."""
    if trainer.is_global_zero:
        warnings.warn(
            f"{OWNER}: the loss is {loss:.4g} at step {step}, not positive. The watchdog judges a loss by its "
            "ratio to the baseline (in log space), so a step whose loss is <= 0 is not judged on its loss (its "
            "gradient norm, its update size and non-finite values still are), and a clean reference batch whose "
            "loss was <= 0 when its snapshot was taken cannot tell bad data from damaged weights. From the first "
            "loss below 0 on, no loss is judged, its positive values neither (a loss that can be negative, a "
            "Gaussian NLL or a variational bound, is no ratio to a level): the run is watched through those "
            "signals only.",
            UserWarning,
            stacklevel=2,
        )


def warn_flat_loss(trainer: Any, incident: Incident) -> None:
    """Say what a flat loss (``Signal.FLAT_LOSS``) suggests of the LR: too low, or too high when the loss rose."""
    lr = _reference_lr_text(trainer)
    rose = incident.value <= -incident.threshold  # the drop was negative by the threshold or more
    advice = "a lower" if rose else "a higher"
    warnings.warn(f"{OWNER}: {incident.detail}{lr}; try LRFinder or {advice} peak LR", UserWarning, stacklevel=2)


def _reference_lr_text(trainer: Any) -> str:
    if trainer is None or not trainer.optimizers:
        return ""
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    value = float(lr) if not isinstance(lr, torch.Tensor) else math.nan
    return f" (LR {value:.3g})"
