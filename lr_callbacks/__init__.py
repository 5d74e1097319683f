"""lr_callbacks: PyTorch Lightning callbacks that take charge of the learning rate.

- :class:`LRSchedule`: warmup, decay and cyclical schedules, closed-form and exact on resume.
- Schedule shapes and composites, pure and picklable: :class:`Cosine`, :class:`Phases`, :class:`OneCycle`, …
- Durations with visible units: :class:`Steps`, :class:`Epochs`, :class:`RunFraction`, or strings such as
  ``"500 steps"``, ``"2 epochs"``, ``"5%"``.

>>> import lr_callbacks
>>> lr_callbacks.Cosine(end=0.1)(50, total_steps=100)
0.55
>>> lr_callbacks.__version__
'0.1.0'
"""

from lr_callbacks._composites import CosineRestarts, Cyclic, OneCycle, Phase, Phases, Reversed
from lr_callbacks._durations import Duration, Epochs, Run, RunFraction, Steps, parse_duration
from lr_callbacks._finder import LRFinder, find_lr
from lr_callbacks._finder_analysis import Suggestion, suggest_lr
from lr_callbacks._finder_result import FinderResult, Trial
from lr_callbacks._presets import PRESETS, preset
from lr_callbacks._schedule_callback import LRSchedule
from lr_callbacks._shapes import (
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
from lr_callbacks._transformers import TRANSFORMERS_ARGUMENTS, TransformersSchedule
from lr_callbacks._watchdog import DivergenceWatchdog
from lr_callbacks._watchdog_config import Incident

__version__ = "0.1.0"

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
    "suggest_lr",
]
