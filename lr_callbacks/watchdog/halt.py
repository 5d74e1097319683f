"""Where a halted run's last good state goes: the ``halt_checkpoint`` path checked at construction, a free name
beside an earlier run's halt, and the save."""

from __future__ import annotations

import os
from typing import Any

from lr_callbacks.watchdog.config import OWNER

__all__ = ["HALT_NAME", "check_halt_path", "file_in_the_way", "save_last_good", "unused_path"]

HALT_NAME = "watchdog-last-good.ckpt"
"""The halt checkpoint's file name under ``default_root_dir`` when ``halt_checkpoint`` is not given."""


def save_last_good(trainer: Any, path: str, reason: str) -> None:
    """Save a halted run's last good state (the weights the halt left in the model) to ``path`` through the
    trainer; a save that fails says where that state still is."""
    try:
        trainer.save_checkpoint(path)
    except OSError as error:  # a full disk, a folder removed or replaced by a file since the fit began
        raise OSError(
            f"{OWNER} halted the run ({reason}) but could not save the last good state to {path}: {error}. The "
            "model in memory holds it (its weights restored): save it with trainer.save_checkpoint(path) or "
            "torch.save(model.state_dict(), path) before anything else runs"
        ) from error


def check_halt_path(path: object) -> None:
    """Refuse a ``halt_checkpoint`` that cannot be a checkpoint's path: not a path, empty, or a folder (one that is
    not a distributed checkpoint, which sharded strategies write as a folder)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{OWNER}: `halt_checkpoint` must be a path or None, got {path!r}")
    text = os.fspath(path)
    if not text:
        raise ValueError(f"{OWNER}: `halt_checkpoint` is empty; give a file path, or None for the default")
    distributed = os.path.exists(os.path.join(text, ".metadata"))
    if text.endswith(("/", os.sep)) or (os.path.isdir(text) and not distributed):
        raise ValueError(
            f"{OWNER}: `halt_checkpoint` {text!r} is a folder; give a file path in it, e.g. "
            f"{os.path.join(text, HALT_NAME)!r}"
        )
    blocker = file_in_the_way(text)
    if blocker is not None:
        raise ValueError(
            f"{OWNER}: `halt_checkpoint` {text!r} cannot be written: {blocker!r} is a file, where its folder would "
            f"be; give a path in a folder, e.g. {os.path.join(os.path.dirname(blocker), HALT_NAME)!r}"
        )


def file_in_the_way(path: str) -> str | None:
    """The nearest existing ancestor of ``path`` when it is a file, not a folder (so that no folder can be made
    there), else ``None``. Before, such a ``halt_checkpoint`` was accepted and the halt itself, the moment the last
    good state is to be saved, failed with ``FileExistsError`` and saved nothing.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     open(os.path.join(d, "runs"), "w").close()
    ...     blocked = file_in_the_way(os.path.join(d, "runs", "new", "good.ckpt"))
    ...     os.path.basename(blocked), file_in_the_way(os.path.join(d, "new", "good.ckpt"))
    ('runs', None)
    """
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return None if os.path.isdir(folder) else folder


def unused_path(path: str) -> str:
    """``path``, or when something is there already (an earlier run's halt), the first free ``<name>-v<k><ext>``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     first = unused_path(os.path.join(d, "last.ckpt"))
    ...     open(first, "w").close()
    ...     os.path.basename(first), os.path.basename(unused_path(first))
    ('last.ckpt', 'last-v1.ckpt')
    """
    stem, ext = os.path.splitext(path)
    candidate, version = path, 0
    while os.path.exists(candidate):
        version += 1
        candidate = f"{stem}-v{version}{ext}"
    return candidate
