"""The ``lr_callbacks`` logger's console: the callbacks' info lines, printed when nothing else would print them.

The callbacks log what they decided at INFO (the finder's answer, the plan, a hand-over to SWA). Python prints no
INFO line of a library by default; Lightning adds a console handler to its own logger for that reason. Ours
prints only while the application has set up no logging of its own (the root logger has no handler), so that a
``logging.basicConfig`` or pytest's capture takes over without a line printed twice. Records come from the global
rank 0 only, as Lightning's ``rank_zero_info``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

__all__ = ["LOGGER_NAME", "setup_console", "warn_rank_zero"]

LOGGER_NAME = "lr_callbacks"

#: Where Lightning keeps the process's global rank (set by the strategy); not imported here, only read.
_RANK_MODULES = ("lightning_fabric.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _RankZero(logging.Filter):
    """Lets a record through on the global rank 0 only (one process before Lightning is imported)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in _RANK_MODULES:
            module = sys.modules.get(name)
            if module is not None and getattr(module.rank_zero_only, "rank", 0) != 0:
                return False
        return True


class _Console(logging.StreamHandler):
    """Prints to stderr while the root logger has no handler of its own."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def setup_console() -> logging.Logger:
    """Give the ``lr_callbacks`` logger its rank filter, INFO level (unless set) and console; idempotent.

    >>> log = setup_console()
    >>> log.getEffectiveLevel() <= logging.INFO and sum(isinstance(h, _Console) for h in log.handlers)
    1
    """
    log = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, _RankZero) for f in log.filters):
        log.addFilter(_RankZero())
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not any(isinstance(h, _Console) for h in log.handlers):
        log.addHandler(_Console())
    return log


def warn_rank_zero(trainer: Any, message: str, stacklevel: int = 2) -> None:
    """``warnings.warn(message, UserWarning)`` on the global rank 0 only, as Lightning's ``rank_zero_warn`` (and
    every process when ``trainer`` is ``None``): what holds for the whole run is said once, not once per process.
    ``stacklevel`` is what the caller would give ``warnings.warn`` itself.

    >>> class Rank1:
    ...     is_global_zero = False
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_rank_zero(Rank1(), "said on rank 0 only")
    >>> caught
    []
    """
    if trainer is None or bool(getattr(trainer, "is_global_zero", True)):
        warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
