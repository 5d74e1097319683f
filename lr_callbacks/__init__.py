"""lr_callbacks: PyTorch Lightning callbacks that take charge of the learning rate.

- :class:`LRSchedule`: warmup, decay and cyclical schedules, closed-form and exact on resume.
- Schedule shapes and composites, pure and picklable: :class:`Cosine`, :class:`Phases`, :class:`OneCycle`, …
- Durations with visible units: :class:`Steps`, :class:`Epochs`, :class:`RunFraction`, or strings such as
  ``"500 steps"``, ``"2 epochs"``, ``"5%"``.

>>> import lr_callbacks
>>> lr_callbacks.Cosine(end=0.1)(50, total_steps=100)
0.55
>>> lr_callbacks.__version__
'0.2.0'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lr_callbacks.core.console import setup_console
from lr_callbacks.core.durations import Duration, Epochs, Run, RunFraction, Steps, parse_duration
from lr_callbacks.finder.analysis import Suggestion, suggest_lr
from lr_callbacks.finder.result import FinderResult, Trial
from lr_callbacks.schedule.composites import CosineRestarts, Cyclic, OneCycle, Phase, Phases, Reversed
from lr_callbacks.schedule.presets import PRESETS, preset
from lr_callbacks.schedule.shapes import (
    Constant,
    Cosine,
    Exponential,
    InverseSqrt,
    Linear,
    MultiStep,
    OneMinusSqrt,
    Polynomial,
    Schedule,
    Step,
    Warmup,
)
from lr_callbacks.schedule.transformers import TRANSFORMERS_ARGUMENTS, TransformersSchedule
from lr_callbacks.watchdog.config import Incident

if TYPE_CHECKING:
    from lr_callbacks.finder.callback import LRFinder, find_lr
    from lr_callbacks.schedule.callback import LRSchedule
    from lr_callbacks.watchdog.callback import DivergenceWatchdog
    from lr_callbacks.watchdog.samples import report_sample_losses

__version__ = "0.2.0"

setup_console()  # the callbacks' info lines reach the console unless the application has set up logging

# The callbacks import Lightning (seconds); they are imported when first used, so that the pure parts (schedules,
# durations, the curve analysis) and the command line (`python -m lr_callbacks`) start at once.
_LAZY = {
    "LRSchedule": "lr_callbacks.schedule.callback",
    "LRFinder": "lr_callbacks.finder.callback",
    "find_lr": "lr_callbacks.finder.callback",
    "DivergenceWatchdog": "lr_callbacks.watchdog.callback",
    "report_sample_losses": "lr_callbacks.watchdog.samples",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lr_callbacks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "PRESETS",
    "TRANSFORMERS_ARGUMENTS",
    "Constant",
    "Cosine",
    "CosineRestarts",
    "Cyclic",
    "DivergenceWatchdog",
    "Duration",
    "Epochs",
    "Exponential",
    "FinderResult",
    "Incident",
    "InverseSqrt",
    "LRFinder",
    "LRSchedule",
    "Linear",
    "MultiStep",
    "OneCycle",
    "OneMinusSqrt",
    "Phase",
    "Phases",
    "Polynomial",
    "Reversed",
    "Run",
    "RunFraction",
    "Schedule",
    "Step",
    "Steps",
    "Suggestion",
    "TransformersSchedule",
    "Trial",
    "Warmup",
    "__version__",
    "find_lr",
    "parse_duration",
    "preset",
    "report_sample_losses",
    "suggest_lr",
]
