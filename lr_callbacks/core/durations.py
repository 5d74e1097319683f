"""Durations with visible units: optimizer steps, epochs, or a fraction of the run.

A schedule's phase lengths, periods and milestones are :class:`Duration` values. They are resolved to
optimizer steps only when the run's length is known (at fit start), from a :class:`Run`.

>>> Steps(500).to_steps(Run(total_steps=1000))
500
>>> RunFraction(0.05).to_steps(Run(total_steps=1000))
50
>>> Epochs(2).to_steps(Run(total_steps=1000, steps_per_epoch=30))
60
>>> parse_duration("5%"), parse_duration("2 epochs"), parse_duration("100 steps")
(RunFraction(fraction=0.05), Epochs(epochs=2.0), Steps(steps=100))
"""

from __future__ import annotations

import math
import numbers
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from lr_callbacks.core.checks import foreign_scalar

__all__ = ["Duration", "Epochs", "Run", "RunFraction", "Steps", "is_zero", "known_total", "parse_duration"]


@dataclass(frozen=True)
class Run:
    """What a schedule needs to know about the run it drives.

    Args:
        total_steps: optimizer steps in the whole run, or ``None`` when the length is unknown (an
            iterable dataset with no ``max_steps``).
        steps_per_epoch: optimizer steps in one epoch, or ``None`` when unknown.

    >>> run = Run(total_steps=1000, steps_per_epoch=100)
    >>> Epochs(2).to_steps(run), RunFraction(0.25).to_steps(run)
    (200, 250)
    """

    total_steps: int | None = None
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        for name in ("total_steps", "steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"`{name}` must be a non-negative int or None, got {value!r}")


def known_total(estimated: float | None) -> int | None:
    """Lightning's ``trainer.estimated_stepping_batches`` as :attr:`Run.total_steps`: ``None`` where it does not
    know the run's length, which it says with ``inf`` (no ``max_steps`` and ``max_epochs=-1``) or with ``-1`` (an
    iterable dataset of unknown length and no ``max_steps``: it returns ``max_steps`` itself).

    >>> known_total(1000), known_total(float("inf")), known_total(-1), known_total(None)
    (1000, None, None, None)
    """
    if estimated is None or not math.isfinite(estimated) or estimated < 0:
        return None
    return int(estimated)


class Duration(ABC):
    """A length of training with its unit: :class:`Steps`, :class:`Epochs` or :class:`RunFraction`.

    Resolve it with :meth:`to_steps` against a :class:`Run`.

    >>> [d.to_steps(Run(total_steps=400, steps_per_epoch=50)) for d in (Steps(30), Epochs(1.5), RunFraction(0.1))]
    [30, 75, 40]
    """

    @abstractmethod
    def to_steps(self, run: Run) -> int:
        """The duration in optimizer steps for ``run``.

        Raises:
            ValueError: if ``run`` lacks what the unit needs (the total for a fraction, the epoch length
                for epochs).
        """

    @abstractmethod
    def needs_total(self) -> bool:
        """Whether resolving needs the run's total length."""

    @abstractmethod
    def describe(self) -> str:
        """A short human-readable form, e.g. ``"500 steps"``."""


@dataclass(frozen=True)
class Steps(Duration):
    """A number of optimizer steps (not batches: with gradient accumulation, one step is several batches).

    >>> Steps(10).describe()
    '10 steps'
    """

    steps: int

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool):
            raise TypeError(
                f"Steps takes a whole number of optimizer steps, got {self.steps!r}{foreign_scalar(self.steps, 'int')}"
            )
        if self.steps < 0:
            raise ValueError(f"Steps: `steps` must be >= 0, got {self.steps}")

    def to_steps(self, run: Run) -> int:
        return self.steps

    def needs_total(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.steps} steps"


@dataclass(frozen=True)
class Epochs(Duration):
    """A number of epochs (fractions allowed), resolved as ``ceil(epochs × steps_per_epoch)`` steps.

    >>> Epochs(0.5).to_steps(Run(steps_per_epoch=11))
    6
    """

    epochs: float

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, (int, float)) or isinstance(self.epochs, bool):
            raise TypeError(
                f"Epochs takes a number of epochs, got {self.epochs!r}{foreign_scalar(self.epochs, 'float')}"
            )
        if not math.isfinite(self.epochs) or self.epochs < 0:
            raise ValueError(f"Epochs: `epochs` must be finite and >= 0, got {self.epochs}")
        object.__setattr__(self, "epochs", float(self.epochs))

    def to_steps(self, run: Run) -> int:
        if run.steps_per_epoch is None:
            raise ValueError(
                f"a duration of {self.describe()} needs the epoch length, which this run does not know: previewing "
                "a schedule, pass it (schedule(step, total_steps=..., steps_per_epoch=...)); in a fit, the training "
                "loader has no length (an iterable dataset?): give the duration in steps (Steps(...), '200 steps')"
            )
        return math.ceil(self.epochs * run.steps_per_epoch - 1e-9)

    def needs_total(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.epochs:g} epochs"


@dataclass(frozen=True)
class RunFraction(Duration):
    """A fraction of the whole run, in ``[0, 1]``, resolved as ``ceil(fraction × total_steps)`` steps.

    Rounded up as transformers rounds ``warmup_ratio``, but by the exact product: transformers takes
    ``ceil(100 × 0.07)`` as 8 (the float product is 7.000000000000001), here ``"7%"`` of 100 steps is 7.

    >>> RunFraction(0.1).to_steps(Run(total_steps=15)), RunFraction(0.07).to_steps(Run(total_steps=100))
    (2, 7)
    """

    fraction: float

    def __post_init__(self) -> None:
        if not isinstance(self.fraction, (int, float)) or isinstance(self.fraction, bool):
            raise TypeError(
                f"RunFraction takes a number in [0, 1], got {self.fraction!r}{foreign_scalar(self.fraction, 'float')}"
            )
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(
                f"RunFraction: `fraction` must be in [0, 1], got {self.fraction}; for a length in steps use Steps(...)"
            )
        object.__setattr__(self, "fraction", float(self.fraction))

    def to_steps(self, run: Run) -> int:
        if run.total_steps is None:
            raise ValueError(
                f"a duration of {self.describe()} needs the run's total length, which is unknown; "
                "set Trainer(max_steps=...) or give the duration in Steps(...)"
            )
        return math.ceil(self.fraction * run.total_steps - 1e-9)

    def needs_total(self) -> bool:
        return True

    def describe(self) -> str:
        return f"{self.fraction:.4g} of the run"


_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(steps?|epochs?|%)\s*$", re.IGNORECASE)


def _readings(value: float) -> str:
    """What a bare number could have meant, each in both spellings (a whole number as steps or epochs, a number
    in [0, 1] as a share of the run too: ``0.05`` is ``'5%'``, not ``'0.05%'``)."""
    options = []
    if not math.isfinite(value):
        return "Write a length such as '500 steps', '2 epochs' or '5%'"
    if float(value).is_integer() and value >= 0:
        options.append(f"'{int(value)} step{'' if value == 1 else 's'}' (Steps({int(value)}))")
    if value > 0:
        options.append(f"'{value:g} epoch{'' if value == 1 else 's'}' (Epochs({value!r}))")
    if 0 < value <= 1:
        options.append(f"'{value * 100:g}%' of the run (RunFraction({value!r}))")
    if not options:
        return "Write a length such as '500 steps', '2 epochs' or '5%'"
    return "Write " + ", or ".join(options)


def parse_duration(value: Duration | str, name: str = "duration") -> Duration:
    """Turn ``"500 steps"``, ``"2 epochs"``, ``"2.5 epochs"`` or ``"5%"`` into a :class:`Duration`.

    The unit may be written in any case (``"500 Steps"``). A bare number is rejected, whatever its type (an int, a
    float, a numpy scalar, a ``Fraction``): ``100`` could mean steps, epochs or a percentage.

    Args:
        value: a :class:`Duration` (returned as is) or a string with its unit.
        name: the argument's name, for the error message.

    Raises:
        TypeError: for a bare number or another type.
        ValueError: for a string that is not of the forms above.

    >>> parse_duration("250 steps")
    Steps(steps=250)
    """
    if isinstance(value, Duration):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # a numpy scalar or a Fraction too
        shown = value if isinstance(value, (int, float)) else float(f"{float(value):.7g}")  # np.float32(0.05)
        raise TypeError(f"`{name}` needs its unit: got the bare number {value!r}. {_readings(shown)}")
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be a Duration or a string such as '500 steps', '2 epochs' or '5%', got {value!r}"
        )
    match = _PATTERN.match(value)
    if match is None and value.strip().startswith("-"):
        raise ValueError(f"`{name}` must not be negative, got {value!r}; write a length such as '500 steps' or '5%'")
    if match is None:
        raise ValueError(
            f"`{name}` could not be read: {value!r}. Use '<n> steps', '<n> epochs' or '<p>%' "
            "(e.g. '500 steps', '2 epochs', '5%')"
        )
    number, unit = match.group(1), match.group(2).lower()
    if not math.isfinite(float(number)):
        raise ValueError(f"`{name}` must be finite, got {value!r}; write a length such as '500 steps' or '5%'")
    if unit.startswith("step"):
        if not float(number).is_integer():
            raise ValueError(f"`{name}` must be a whole number of steps, got {value!r}; e.g. '500 steps'")
        return Steps(int(float(number)))
    if unit.startswith("epoch"):
        return Epochs(float(number))
    if float(number) > 100.0:
        raise ValueError(f"`{name}` is a fraction of the run, so at most 100%, got {value!r}")
    return RunFraction(float(number) / 100.0)


def is_zero(duration: Duration) -> bool:
    """Whether ``duration`` is zero whatever the run: ``Steps(0)``, ``Epochs(0)`` or ``RunFraction(0)``.

    >>> is_zero(Steps(0)), is_zero(RunFraction(0.01))
    (True, False)
    """
    if isinstance(duration, Steps):
        return duration.steps == 0
    if isinstance(duration, Epochs):
        return duration.epochs == 0.0
    if isinstance(duration, RunFraction):
        return duration.fraction == 0.0
    return False
