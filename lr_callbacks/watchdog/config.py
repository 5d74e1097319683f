"""What the watchdog is told and what it tells: its validated settings and the record of one intervention."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from lr_callbacks.core.checks import check_choice, check_int, check_number

__all__ = ["OUTLIER_ACTIONS", "OWNER", "Action", "Incident", "Signal", "WatchdogConfig", "resolve_steps"]

#: The name every error message of the watchdog starts with.
OWNER = "DivergenceWatchdog"
OUTLIER_ACTIONS = ("skip", "clip")


class _Name(str, Enum):
    """A string-valued enum that prints as its value, so an ``Incident`` reads as it did with plain strings."""

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


class Signal(_Name):
    """What triggered an incident. A ``str``: ``Signal.LOSS == "loss"``, and checkpoints store the plain value."""

    NON_FINITE = "non_finite"
    LOSS = "loss"
    GRAD_NORM = "grad_norm"
    REPEATED_OUTLIERS = "repeated_outliers"
    PERSISTENT_OUTLIERS = "persistent_outliers"
    LOSS_TREND = "loss_trend"
    CLEAN_STRETCH = "clean_stretch"
    AFTER_ROLLBACK = "after_rollback"
    FLAT_LOSS = "flat_loss"
    DAMAGED_WEIGHTS = "damaged_weights"
    BAD_DATA = "bad_data"
    UPDATE_RATIO = "update_ratio"
    SAMPLE_OUTLIERS = "sample_outliers"
    REQUESTED = "requested"  # the user said the loss's level changes by design (DivergenceWatchdog.rebaseline)


class Action(_Name):
    """What the watchdog did about an incident; a ``str`` like :class:`Signal`."""

    SKIP = "skip"
    CLIP = "clip"
    LOWER_LR = "lower_lr"
    RAISE_LR = "raise_lr"
    ROLLBACK = "rollback"
    REBASELINE = "rebaseline"
    HALT = "halt"
    WARN = "warn"


@dataclass(frozen=True)
class Incident:
    """One intervention of the watchdog.

    Attributes:
        step: the optimizer step (``trainer.global_step`` before the update) it concerns.
        signal: what triggered it, a :class:`Signal` (a ``str``): ``"non_finite"``, ``"loss"``, ``"grad_norm"``,
            ``"repeated_outliers"``, ``"persistent_outliers"``, ``"loss_trend"``, ``"clean_stretch"``,
            ``"after_rollback"``, ``"flat_loss"``, ``"damaged_weights"`` (the clean reference batch's loss rose
            on the live weights), ``"bad_data"`` (it did not: the batches are bad), ``"update_ratio"`` (the
            update is too large for the planned LR), ``"sample_outliers"`` (the batch is dominated by samples
            whose loss is an outlier: the module reports per-sample losses, see
            :func:`~lr_callbacks.report_sample_losses`), ``"requested"`` (a call of
            :meth:`lr_callbacks.DivergenceWatchdog.rebaseline`; its value and threshold are ``nan``).
        value: the signal's value (the loss, the gradient norm, a count, the CUSUM sum, a relative drop).
        threshold: the value it was compared with (``nan`` where there is none, e.g. non-finite values).
        action: what was done, an :class:`Action` (a ``str``): ``"skip"``, ``"clip"``, ``"lower_lr"``,
            ``"raise_lr"``, ``"rollback"``, ``"rebaseline"``, ``"halt"`` or ``"warn"``.
        detail: a sentence for humans (what changed, from what to what).
        rollback_to: for a rollback (or a halt that restores a snapshot), the step whose pre-update state was
            restored; ``None`` otherwise.

    Strings are accepted for ``signal`` and ``action`` (as older checkpoints hold them) and become the enums.

    >>> incident = Incident(step=12, signal="loss", value=950.0, threshold=2.5, action="skip")
    >>> incident.row(), incident.action is Action.SKIP
    ('| 12 | loss | 950 | 2.5 | skip |  |', True)
    """

    step: int
    signal: Signal
    value: float
    threshold: float
    action: Action
    detail: str = ""
    rollback_to: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "signal", Signal(self.signal))
        object.__setattr__(self, "action", Action(self.action))

    def state(self) -> dict[str, Any]:
        """The incident as plain data (strings and numbers), for a checkpoint."""
        return {
            "step": self.step,
            "signal": self.signal.value,
            "value": self.value,
            "threshold": self.threshold,
            "action": self.action.value,
            "detail": self.detail,
            "rollback_to": self.rollback_to,
        }

    def row(self) -> str:
        """The incident as a markdown table row: step, signal, value, threshold, action, detail."""
        cells = (self.step, self.signal, f"{self.value:.4g}", f"{self.threshold:.4g}", self.action, self.detail)
        return "| " + " | ".join(map(str, cells)) + " |"


@dataclass(frozen=True)
class WatchdogConfig:
    """The thresholds, cooldowns and budgets of the ladder; validated at construction.

    See :class:`~lr_callbacks.DivergenceWatchdog` for the meaning of each field; the defaults are its defaults.
    """

    z_threshold: float = 6.0
    grad_z_threshold: float = 10.0
    window: int = 100
    warmup_steps: int = 50
    min_spread: float = 0.02
    outlier_action: str = "skip"
    patience: int = 10
    lower_after: int = 3
    lower_window: int = 200
    lr_factor: float = 0.5
    min_lr_scale: float = 0.05
    cooldown_steps: int = 50
    recover_after: int | str | None = "5%"
    cusum_drift: float = 1.0
    cusum_threshold: float = 25.0
    max_level_shift: float = 1.5
    snapshot_every: int | None = None
    snapshots: int = 3
    max_rollbacks: int = 3
    max_data_skips: int | str = "25%"
    update_every: int | None = 5
    update_z_threshold: float = 8.0
    skip_after_rollback: int = 0
    flat_loss_steps: int | None = 300
    flat_loss_drop: float = 0.01

    def __post_init__(self) -> None:
        check_number("z_threshold", self.z_threshold, low=0.0, low_open=True, owner=OWNER)
        check_number("grad_z_threshold", self.grad_z_threshold, low=0.0, low_open=True, owner=OWNER)
        check_int("window", self.window, low=3, owner=OWNER)
        check_int("warmup_steps", self.warmup_steps, low=3, owner=OWNER)
        if self.warmup_steps > self.window:
            raise ValueError(
                f"{OWNER}: `warmup_steps` must be <= `window` (the baseline cannot hold more steps than the "
                f"window), got warmup_steps={self.warmup_steps} and window={self.window}; raise window or lower "
                "warmup_steps"
            )
        check_number("min_spread", self.min_spread, low=0.0, low_open=True, owner=OWNER)
        check_choice("outlier_action", self.outlier_action, OUTLIER_ACTIONS, owner=OWNER)
        check_int("patience", self.patience, low=2, owner=OWNER)
        check_int("lower_after", self.lower_after, low=1, owner=OWNER)
        check_int("lower_window", self.lower_window, low=1, owner=OWNER)
        if 2 * (self.lower_after - 1) >= self.lower_window:  # runs apart by an accepted step: starts 2 apart
            raise ValueError(
                f"{OWNER}: {self.lower_after} outlier runs (`lower_after`) cannot start within {self.lower_window} "
                f"steps (`lower_window`): runs are apart by at least one accepted step, so the LR would never be "
                f"lowered; set lower_window to at least {2 * self.lower_after - 1}"
            )
        check_number("lr_factor", self.lr_factor, low=0.0, low_open=True, owner=OWNER)
        if self.lr_factor >= 1.0:
            raise ValueError(
                f"{OWNER}: `lr_factor` multiplies the LR scale at each cut and must be < 1, got "
                f"{self.lr_factor!r}; use e.g. 0.5 to halve the LR"
            )
        check_number("min_lr_scale", self.min_lr_scale, low=0.0, low_open=True, high=1.0, owner=OWNER)
        check_int("cooldown_steps", self.cooldown_steps, low=0, owner=OWNER)
        if self.recover_after is not None:
            _check_steps_or_fraction("recover_after", self.recover_after, "recover_after=None keeps the cuts")
        check_number("cusum_drift", self.cusum_drift, low=0.0, owner=OWNER)
        check_number("cusum_threshold", self.cusum_threshold, low=0.0, low_open=True, owner=OWNER)
        check_number("max_level_shift", self.max_level_shift, low=1.0, owner=OWNER)
        if self.snapshot_every is not None:
            check_int("snapshot_every", self.snapshot_every, low=1, owner=OWNER)
        check_int("snapshots", self.snapshots, low=1, owner=OWNER)
        check_int("max_rollbacks", self.max_rollbacks, low=0, owner=OWNER)
        _check_steps_or_fraction("max_data_skips", self.max_data_skips)
        if self.update_every is not None:
            check_int("update_every", self.update_every, low=1, owner=OWNER)
        check_number("update_z_threshold", self.update_z_threshold, low=0.0, low_open=True, owner=OWNER)
        check_int("skip_after_rollback", self.skip_after_rollback, low=0, owner=OWNER)
        if self.flat_loss_steps is not None:
            check_int("flat_loss_steps", self.flat_loss_steps, low=10, owner=OWNER)
        check_number("flat_loss_drop", self.flat_loss_drop, low=0.0, low_open=True, high=1.0, owner=OWNER)


def _check_steps_or_fraction(name: str, value: object, off: str = "") -> None:
    """``value`` is a step count (an int ≥ 1, or ``"200 steps"``) or a fraction of the run written as a percentage
    (``"5%"``); ``off``: how to turn the setting off, said to a bool.

    A float or a bool was refused as "must be a whole number", which hid the percentage: ``recover_after=0.05``
    (5% of the run) now reads ``write recover_after="5%"``."""
    if isinstance(value, (float, bool)):
        if isinstance(value, float) and 0.0 < value < 1.0:
            fix = f'a share of the run is written as a percentage: {name}="{value * 100:g}%"'
        else:
            fix = f'write e.g. {name}=200 or {name}="5%"' + (f" ({off})" if off and isinstance(value, bool) else "")
        raise TypeError(
            f'{OWNER}: `{name}` must be a whole number of steps or a percentage of the run such as "5%", got '
            f"{value!r}; {fix}"
        )
    if isinstance(value, str):
        text = value.strip()
        if _count_of(text) is not None:
            return
        try:
            fraction = float(text[:-1]) / 100.0 if text.endswith("%") else math.nan
        except ValueError:
            fraction = math.nan
        if fraction > 1.0:
            raise ValueError(
                f'{OWNER}: `{name}` is a share of the run, at most 100%, got {value!r}; write e.g. {name}="5%" or '
                f"a number of steps, {name}=200"
            )
        if not 0.0 < fraction <= 1.0:
            epochs = " (the watchdog counts steps, not epochs)" if "epoch" in text else ""
            raise ValueError(
                f'{OWNER}: `{name}` must be a number of steps or a percentage of the run such as "5%", '
                f'got {value!r}{epochs}; write e.g. {name}="5%", {name}=200 or {name}="200 steps"'
            )
        return
    check_int(name, value, low=1, owner=OWNER)


def _count_of(text: str) -> int | None:
    """The step count written as ``"200 steps"`` (or ``"1 step"``), else ``None``."""
    number, _, unit = text.partition(" ")
    # isdecimal, not isdigit: "²" is a digit int() refuses (a bare ValueError from inside, before)
    if unit.strip() not in ("steps", "step") or not number.isdecimal() or int(number) < 1:
        return None
    return int(number)


def resolve_steps(value: int | str, total_steps: int | None, fallback: int) -> int:
    """A step count from ``value`` (steps, ``"N steps"``, or ``"p%"`` of ``total_steps``; ``fallback`` when the
    run's length is unknown), at least 1.

    >>> resolve_steps("5%", 400, 1000), resolve_steps(30, 400, 1000), resolve_steps("5%", None, 1000)
    (20, 30, 1000)
    >>> resolve_steps("30 steps", None, 1000)
    30
    """
    if isinstance(value, int):
        return value
    count = _count_of(value.strip())
    if count is not None:
        return count
    if total_steps is None or total_steps <= 0:
        return fallback
    return max(1, math.ceil(float(value.strip()[:-1]) / 100.0 * total_steps))
