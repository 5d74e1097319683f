"""Robust, scale-free statistics for :class:`~lr_callbacks.DivergenceWatchdog`: pure Python, no torch.

Everything here works on ``log(value)``: a loss of 3.0 that doubles and a loss of 0.05 that doubles move by
the same ``log 2``, so one threshold fits every loss scale and every model (a multiplicative rule such as
"3× the mean" is too loose at loss 0.05 and too tight at loss 8).

- :class:`RollingBaseline`: the median and the MAD of the last ``window`` *accepted* values (outliers and
  non-finite values never enter it, so a spike cannot hide the next one), with a floor on the spread.
- :class:`Cusum`: a one-sided CUSUM of the robust residuals, for a slow climb that never spikes. Its
  reference is frozen while the sum is above zero, so a climb cannot drag its own reference up.
- :func:`judge` gives a step its verdict against the limits of a :class:`Gate` (skip, clip or take it).
- :func:`trend` tells a climb (still rising) from a level shift (a step up, then flat or falling): the first is
  divergence, the second a change of data that deserves a new baseline, not an action.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lr_callbacks.watchdog.config import Signal

__all__ = ["MAD_TO_SIGMA", "Cusum", "Gate", "RollingBaseline", "Verdict", "judge", "log_value", "trend"]

MAD_TO_SIGMA = 1.4826
"""The factor that makes the median absolute deviation estimate a Gaussian's standard deviation."""


def log_value(value: float) -> float | None:
    """``log(value)`` for a positive finite value, else ``None`` (the value cannot be judged in log space).

    >>> round(log_value(math.e), 6), log_value(0.0), log_value(float("nan"))
    (1.0, None, None)
    """
    if not math.isfinite(value) or value <= 0.0:
        return None
    return math.log(value)


class RollingBaseline:
    """The median and robust spread of the last ``window`` accepted values.

    ``spread = max(1.4826 · median(|x − median|), floor)``, where ``floor`` is ``min_spread`` or, after
    :meth:`reset`, the spread before the reset until the buffer has ``refill`` values again (a new baseline
    built from a handful of values must not be tighter than the one it replaces).

    Args:
        window: how many accepted values it keeps.
        min_spread: the smallest spread, in the units of the values (log units: 0.02 is about 2%).

    >>> baseline = RollingBaseline(window=5, min_spread=0.01)
    >>> for x in [1.0, 1.1, 0.9, 1.0, 1.2]:
    ...     baseline.add(x)
    >>> baseline.center, round(baseline.spread, 4), round(baseline.z(1.6), 2)
    (1.0, 0.1483, 4.05)
    """

    def __init__(self, window: int, min_spread: float) -> None:
        self.window = window
        self.min_spread = min_spread
        self._values: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []  # the same values, in order: the median and the MAD need no sort
        self._floor = min_spread
        self._refill = 0
        self._cache: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self._values)

    @property
    def values(self) -> list[float]:
        """The accepted values, oldest first."""
        return list(self._values)

    def add(self, value: float) -> None:
        """Accept ``value`` into the baseline."""
        if len(self._values) == self.window:
            del self._sorted[bisect.bisect_left(self._sorted, self._values[0])]
        self._values.append(value)
        bisect.insort(self._sorted, value)
        self._cache = None
        if self._refill and len(self._values) >= self._refill:
            self._floor, self._refill = self.min_spread, 0

    def reset(self, values: Iterable[float], refill: int) -> None:
        """Start a new baseline from ``values``; keep the current spread as a floor for ``refill`` values."""
        old_spread = self.spread if self._values else self.min_spread
        self._values = deque(values, maxlen=self.window)
        self._sorted = sorted(self._values)
        self._cache = None
        self._floor, self._refill = max(old_spread, self.min_spread), refill
        if len(self._values) >= refill:
            self._floor, self._refill = self.min_spread, 0

    def _stats(self) -> tuple[float, float]:
        if self._cache is None:
            if not self._values:
                raise ValueError("RollingBaseline: no value accepted yet, so there is no center or spread")
            center = _median(self._sorted)
            self._cache = (center, max(MAD_TO_SIGMA * _median_distance(self._sorted, center), self._floor))
        return self._cache

    @property
    def center(self) -> float:
        """The median of the accepted values."""
        return self._stats()[0]

    @property
    def spread(self) -> float:
        """``max(1.4826 · MAD, floor)``."""
        return self._stats()[1]

    def z(self, value: float) -> float:
        """The robust z-score of ``value``: ``(value − center) / spread``."""
        center, spread = self._stats()
        return (value - center) / spread

    def limit(self, z: float) -> float:
        """The value whose z-score is ``z``: ``center + z · spread``."""
        center, spread = self._stats()
        return center + z * spread

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self._values), "floor": self._floor, "refill": self._refill}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._values = deque((float(v) for v in state["values"]), maxlen=self.window)
        self._sorted = sorted(self._values)
        self._floor, self._refill = float(state["floor"]), int(state["refill"])
        self._cache = None


def _median(ordered: Sequence[float]) -> float:
    """The median of sorted values, as ``statistics.median`` computes it."""
    n = len(ordered)
    middle = n // 2
    if n % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _median_distance(ordered: Sequence[float], center: float) -> float:
    """``statistics.median(abs(v - center) for v in ordered)`` for sorted values, without a sort.

    The distances grow outward from ``center`` on both sides: two sorted runs, ``ordered[r:] − center`` and
    ``center − ordered[:r][::-1]`` (``r`` the first value at or above ``center``). The smallest ``n // 2 + 1``
    distances are the first ``i`` of the right run and the rest from the left one, for the smallest ``i`` whose
    next right distance is no smaller than the last left one taken: a binary search on ``i`` (called for two
    baselines at every step, where walking half the values cost several times more). The median is the largest
    distance taken, or with an even ``n`` its mean with the second largest.

    >>> import random, statistics
    >>> values = sorted(random.Random(0).gauss(0, 1) for _ in range(101))
    >>> c = statistics.median(values)
    >>> _median_distance(values, c) == statistics.median(abs(v - c) for v in values)
    True
    """
    n = len(ordered)
    right = bisect.bisect_left(ordered, center)
    taken = n // 2 + 1  # up to the upper middle distance
    low, high = max(0, taken - right), min(taken, n - right)
    while low < high:
        i = (low + high) // 2  # i from the right run, taken − i from the left one
        if ordered[right + i] - center < center - ordered[right - (taken - i)]:
            low = i + 1
        else:
            high = i
    i, j = low, taken - low
    last_right = ordered[right + i - 1] - center if i else -math.inf
    last_left = center - ordered[right - j] if j else -math.inf
    if n % 2:
        return max(last_right, last_left)
    if last_right >= last_left:  # the second largest taken: the one before it, or the other run's last
        before = ordered[right + i - 2] - center if i > 1 else -math.inf
        return (last_right + max(before, last_left)) / 2
    before = center - ordered[right - j + 1] if j > 1 else -math.inf
    return (last_left + max(before, last_right)) / 2


class Cusum:
    """A one-sided CUSUM of robust residuals, ``S ← max(0, S + z − drift)``, for slow divergence.

    ``z`` is the step's residual against a *frozen* reference: the baseline's center and spread at the last
    step where ``S`` was 0. While ``S`` is above 0 the reference does not move, so a steady climb keeps
    adding ``z − drift > 0`` and ``S`` grows, whereas noise around a flat level keeps falling back to 0. The
    step where ``S`` last left 0 estimates when the climb began (:attr:`start`), and the values since then
    (:attr:`since_start`) let :func:`trend` tell a climb from a level shift.

    After an action, :meth:`restart` zeroes ``S`` but *holds* the reference until a value comes back down to
    it: if the loss stays up, ``S`` grows again against the level before the climb, not against a baseline
    that has followed the loss up.

    Args:
        drift: the residual (in spreads) that counts as "no change"; larger values ignore slower climbs.
        threshold: the value of ``S`` that raises the alarm.

    >>> cusum = Cusum(drift=1.0, threshold=5.0)
    >>> [round(cusum.update(x, center=0.0, spread=1.0, step=k), 1) for k, x in enumerate([0.5, 2.0, 3.0, 4.0])]
    [0.0, 1.0, 3.0, 6.0]
    >>> cusum.alarm, cusum.start, cusum.since_start
    (True, 1, [2.0, 3.0, 4.0])
    >>> cusum.restart()
    >>> cusum.update(2.0, center=3.0, spread=1.0, step=4)  # the reference (0, 1) is held: z = 2
    1.0
    """

    def __init__(self, drift: float, threshold: float) -> None:
        self.drift = drift
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Forget the sum and the reference."""
        self.value = 0.0
        self.reference: tuple[float, float] | None = None
        self.held = False
        self.start: int | None = None
        self.since_start: list[float] = []

    def restart(self) -> None:
        """Zero the sum, and hold the reference until a value is back at its center."""
        self.value, self.start, self.since_start, self.held = 0.0, None, [], True

    @property
    def alarm(self) -> bool:
        """``S ≥ threshold``."""
        return self.value >= self.threshold

    def update(self, x: float, center: float, spread: float, step: int) -> float:
        """Add the accepted value ``x`` of ``step``; ``center``/``spread`` are the baseline's before ``x``."""
        if self.reference is None or (self.value == 0.0 and not self.held):
            self.reference = (center, spread)
        ref_center, ref_spread = self.reference
        if self.held and x <= ref_center:
            self.held = False
        self.value = max(0.0, self.value + (x - ref_center) / ref_spread - self.drift)
        if self.value == 0.0:
            self.start, self.since_start = None, []
        else:
            if self.start is None:
                self.start = step
            self.since_start.append(x)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "reference": list(self.reference) if self.reference is not None else None,
            "held": self.held,
            "start": self.start,
            "since_start": list(self.since_start),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        reference = state["reference"]
        self.reference = (float(reference[0]), float(reference[1])) if reference is not None else None
        self.held = bool(state["held"])
        self.start = None if state["start"] is None else int(state["start"])
        self.since_start = [float(v) for v in state["since_start"]]


def trend(values: Sequence[float], spread: float) -> str:
    """``"rising"`` if ``values`` still climb, ``"flat"`` if they stepped up and stayed (or fell back).

    After a change of data the loss steps up once and then stays, or falls as the model adapts; a diverging
    loss keeps climbing. So the values are rising when the median of their second half exceeds the median of
    their first half by more than one ``spread`` (the noise of the baseline before the change).

    Args:
        values: log values since the change began, oldest first.
        spread: the baseline's spread before the change.

    >>> trend([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], spread=0.05)
    'rising'
    >>> trend([0.5, 0.52, 0.49, 0.51, 0.5, 0.5], spread=0.05)
    'flat'
    """
    half = len(values) // 2
    if half == 0:
        return "flat"
    rise = statistics.median(values[-half:]) - statistics.median(values[:half])
    return "rising" if rise > spread else "flat"


@dataclass(frozen=True)
class Gate:
    """What judging a step needs, in log space: a step is an outlier above these limits (``inf``: not judged).

    The callback hands it to the device as a small tensor, so that steps can be judged there without
    reading anything back (see ``sync_every_n_steps``).
    """

    loss_limit: float = math.inf
    grad_limit: float = math.inf
    clip: bool = False


@dataclass(frozen=True)
class Verdict:
    """How one step is treated before its update: taken, skipped, or clipped by ``clip_factor``.

    ``signals`` are the outlying ones; ``forced`` marks a skip the policy ordered itself (the batches skipped
    after a rollback), whatever the step's values.
    """

    skip: bool = False
    clip_factor: float = 1.0
    signals: tuple[Signal, ...] = ()
    forced: bool = False

    def state(self) -> dict[str, Any]:
        """The verdict as plain data, for a checkpoint."""
        return {
            "skip": self.skip,
            "clip_factor": self.clip_factor,
            "signals": [s.value for s in self.signals],
            "forced": self.forced,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Verdict:
        """The inverse of :meth:`state`; reads the older form too (a forced skip as the signal ``after_rollback``)."""
        signals = tuple(Signal(s) for s in state.get("signals", ()))
        forced = bool(state.get("forced", False)) or signals == (Signal.AFTER_ROLLBACK,)
        signals = () if forced else signals
        return cls(skip=bool(state["skip"]), clip_factor=float(state["clip_factor"]), signals=signals, forced=forced)


def judge(gate: Gate, loss: float, grad_norm: float) -> Verdict:
    """Judge one step against ``gate``: non-finite values are skipped, outliers skipped or clipped.

    The clip factor is ``min(limit / value)`` over the outlying signals (in linear units), so a clipped step
    is no larger than one at the threshold.

    >>> judge(Gate(loss_limit=math.log(2.0), grad_limit=math.log(10.0)), loss=1.0, grad_norm=3.0) == Verdict()
    True
    >>> judge(Gate(math.log(2.0), math.log(10.0)), loss=8.0, grad_norm=3.0).state()
    {'skip': True, 'clip_factor': 1.0, 'signals': ['loss'], 'forced': False}
    >>> clipped = judge(Gate(math.log(2.0), math.log(10.0), clip=True), loss=1.0, grad_norm=40.0)
    >>> clipped.skip, round(clipped.clip_factor, 12), clipped.signals == ("grad_norm",)
    (False, 0.25, True)
    >>> judge(Gate(), loss=float("nan"), grad_norm=3.0).state()
    {'skip': True, 'clip_factor': 1.0, 'signals': ['non_finite'], 'forced': False}
    """
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        return Verdict(skip=True, signals=(Signal.NON_FINITE,))
    signals: list[Signal] = []
    factor = 1.0
    for name, value, limit in ((Signal.LOSS, loss, gate.loss_limit), (Signal.GRAD_NORM, grad_norm, gate.grad_limit)):
        x = log_value(value)
        if x is not None and x > limit:
            signals.append(name)
            factor = min(factor, math.exp(limit - x))
    if not signals:
        return Verdict()
    if gate.clip:
        return Verdict(clip_factor=factor, signals=tuple(signals))
    return Verdict(skip=True, signals=tuple(signals))
