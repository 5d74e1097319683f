"""Writing scalars, images and text to the trainer's loggers.

Scalars go to every logger in ``trainer.loggers`` (TensorBoard by default; others get the scalars).
Images and text need TensorBoard's ``SummaryWriter`` (``add_image``/``add_text``) and are written on the
global rank 0 only, so the other ranks do no rendering. A parameter group is named in the tags as
:func:`group_names` says, by every callback alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "given_names",
    "group_names",
    "log_cadence",
    "log_image",
    "log_scalars",
    "log_text",
    "names_of",
    "summary_writers",
    "unique",
]


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


def given_names(optimizer: Any) -> list[str]:
    """Each parameter group's ``param_group["name"]``, else ``group<i>``: the names :func:`group_names` starts from.

    >>> import torch
    >>> given_names(torch.optim.SGD([{"params": [torch.zeros(1)], "name": "decay"}, {"params": [torch.zeros(1)]}]))
    ['decay', 'group1']
    """
    return [str(g.get("name", f"group{index}")) for index, g in enumerate(optimizer.param_groups)]


def group_names(given: Sequence[str], named: Sequence[str] = ()) -> list[str]:
    """The name of each parameter group in the tags (``lr/<group>``, ``watchdog/update_ratio/<group>``), so that no
    two groups share a tag and no group is renamed once logged.

    The groups ``named`` already keep their names: at fit start none are, and the groups there take their ``given``
    names made :func:`unique` (``decay``, ``decay-1``); on resume they are the checkpoint's. A group added after
    them (unfrozen mid-run) takes its given name or, taken, the first free ``<name>-<k>``. So groups ``a``, ``h``
    and then ``a`` and ``a-1`` added one at a time are ``a``, ``h``, ``a-1``, ``a-1-1``: the first added kept the
    ``a-1`` it was logged under. Named all at once they would be ``a``, ``h``, ``a-2``, ``a-1``, and a resumed run
    would call the checkpoint's groups by other names: it keeps the checkpoint's (those that are
    :func:`names_of` their groups).

    Args:
        given: each group's ``param_group["name"]``, else ``group<i>`` (:func:`given_names`).
        named: the names of the first groups, kept (``()``: the groups at fit start, none named yet).

    >>> group_names(["decay", "decay", "group2"])
    ['decay', 'decay-1', 'group2']
    >>> group_names(["a", "h", "a", "a-1"], named=["a", "h"]), group_names(["a", "h", "a", "a-1"])
    (['a', 'h', 'a-1', 'a-1-1'], ['a', 'h', 'a-2', 'a-1'])
    """
    if not named:
        return unique(list(given))
    out = list(named[: len(given)])
    taken = set(out)
    for base in given[len(out) :]:
        name, suffix = base, 0
        while name in taken:
            suffix += 1
            name = f"{base}-{suffix}"
        taken.add(name)
        out.append(name)
    return out


def names_of(names: Sequence[str], given: Sequence[str]) -> bool:
    """Whether :func:`group_names` could have named groups ``given`` so: each name is its group's given name or,
    where an earlier group holds that name, the name with a suffix (``decay-2`` for a second ``decay``). A
    checkpoint's names are kept on resume when they are. Groups ``x``, ``x-1`` and groups ``x``, ``x`` are both named
    ``x``, ``x-1``: to tell them apart, compare the given names themselves, where a checkpoint saved them.

    Before, any suffixed form passed: a group given ``x`` was taken for a checkpoint's ``x-1`` with no ``x`` before
    it, a name the rule gives only to a second ``x``.

    >>> names_of(["a", "h", "a-1", "a-1-1"], ["a", "h", "a", "a-1"]), names_of(["body", "head"], ["body", "neck"])
    (True, False)
    >>> names_of(["body", "x-1"], ["body", "x"])
    False
    """
    if len(names) != len(given):
        return False
    for index, (name, base) in enumerate(zip(names, given)):
        suffix = name[len(base) + 1 :] if name.startswith(f"{base}-") else ""
        suffixed = suffix.isascii() and suffix.isdigit() and base in names[:index]
        if name != base and not suffixed:
            return False
    return True


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
