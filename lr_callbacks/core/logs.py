"""Writing scalars, images and text to the trainer's loggers.

Scalars go to every logger in ``trainer.loggers`` (TensorBoard by default; others get the scalars).
Images and text need TensorBoard's ``SummaryWriter`` (``add_image``/``add_text``) and are written on the
global rank 0 only, so the other ranks do no rendering. A parameter group is named in the tags as
:func:`group_names` says, by every callback alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["group_names", "log_cadence", "log_image", "log_scalars", "log_text", "summary_writers", "unique"]


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


def group_names(optimizer: Any) -> list[str]:
    """The name of each parameter group of ``optimizer`` in the tags (``lr/<group>``,
    ``watchdog/update_ratio/<group>``): its ``param_group["name"]``, else ``group<i>``, repeated names made
    :func:`unique` (``decay``, ``decay-1``), so that no two groups share a tag.

    >>> import torch
    >>> groups = [{"params": [torch.zeros(1, requires_grad=True)], "name": "decay"} for _ in range(2)]
    >>> group_names(torch.optim.SGD([*groups, {"params": [torch.zeros(1, requires_grad=True)]}], lr=0.1))
    ['decay', 'decay-1', 'group2']
    """
    return unique([str(g.get("name", f"group{index}")) for index, g in enumerate(optimizer.param_groups)])


def unique(names: list[str]) -> list[str]:
    """Make repeated names distinct, as LearningRateMonitor does: ``Adam``, ``Adam-1``; a suffix never takes a name
    given to another (before, groups named ``a``, ``a``, ``a-1`` were all tagged ``a``, ``a-1``, ``a-1``: two
    groups on one TensorBoard tag, and ``peak_lrs={"a-1": ...}`` set both).

    >>> unique(["Adam", "SGD", "Adam"])
    ['Adam', 'SGD', 'Adam-1']
    >>> unique(["a", "a", "a-1"])
    ['a', 'a-2', 'a-1']
    """
    taken = set(names)  # each given name stays its first holder's
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name not in seen:
            seen[name] = 0
            out.append(name)
            continue
        suffix = seen[name] + 1
        while f"{name}-{suffix}" in taken:
            suffix += 1
        seen[name] = suffix
        taken.add(f"{name}-{suffix}")
        out.append(f"{name}-{suffix}")
    return out
