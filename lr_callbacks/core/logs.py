"""Writing scalars, images and text to the trainer's loggers.

Scalars go to every logger in ``trainer.loggers`` (TensorBoard by default; others get the scalars).
Images and text need TensorBoard's ``SummaryWriter`` (``add_image``/``add_text``) and are written on the
global rank 0 only, so the other ranks do no rendering.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["log_cadence", "log_image", "log_scalars", "log_text", "summary_writers"]


def log_cadence(trainer: Any, chosen: int | None) -> int:
    """Log every ``chosen`` steps; ``None``: the trainer's ``log_every_n_steps``, Lightning's own cadence.

    >>> class Trainer:
    ...     log_every_n_steps = 50
    >>> log_cadence(Trainer(), None), log_cadence(Trainer(), 1)
    (50, 1)
    """
    return chosen or max(int(getattr(trainer, "log_every_n_steps", 1) or 1), 1)


def log_scalars(trainer: Any, metrics: dict[str, float], step: int) -> None:
    """Log ``metrics`` at ``step`` to every logger of ``trainer`` (loggers do nothing off rank 0)."""
    if not metrics:
        return
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def summary_writers(trainer: Any) -> list[Any]:
    """The TensorBoard ``SummaryWriter`` of each TensorBoard logger, on global rank 0; else empty."""
    if not trainer.is_global_zero:
        return []
    writers = []
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image") and hasattr(experiment, "add_text"):
            writers.append(experiment)
    return writers


def log_image(trainer: Any, tag: str, image: np.ndarray, step: int) -> None:
    """Write an ``H×W×3`` uint8 image to TensorBoard."""
    for writer in summary_writers(trainer):
        writer.add_image(tag, image, global_step=step, dataformats="HWC")
        writer.flush()


def log_text(trainer: Any, tag: str, text: str, step: int) -> None:
    """Write markdown text to TensorBoard's text tab."""
    for writer in summary_writers(trainer):
        writer.add_text(tag, text, global_step=step)
        writer.flush()
