"""Robust, scale-free statistics for :class:`~lr_callbacks.DivergenceWatchdog`: pure Python, no torch.

Everything here works on ``log(value)``: a loss of 3.0 that doubles and a loss of 0.05 that doubles move by
the same ``log 2``, so one threshold fits every loss scale and every model (a multiplicative rule such as
"3× the mean" is too loose at loss 0.05 and too tight at loss 8).

- :class:`RollingBaseline`: the median and the MAD of the last ``window`` *accepted* values (outliers and
  non-finite values never enter it, so a spike cannot hide the next one), with a floor on the spread.
- :class:`Cusum`: a one-sided CUSUM of the robust residuals, for a slow climb that never spikes. Its
  reference is frozen while the sum is above zero, so a climb cannot drag its own reference up.
- :func:`judge` gives a step its verdict against the limits of a :class:`Gate` (skip, clip or take it).
- :class:`SampleBaseline`: the clean per-sample loss distribution (for modules that report their per-sample
  losses), and :func:`binomial_limit`, the most outlier samples a clean batch shows.
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

__all__ = [
    "MAD_TO_SIGMA",
    "SAMPLE_FALSE_ALARM",
    "Cusum",
    "Gate",
    "RollingBaseline",
    "SampleBaseline",
    "Samples",
    "Verdict",
    "binomial_limit",
    "exp_value",
    "expm1_value",
    "judge",
    "log_value",
    "trend",
]

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


def exp_value(x: float) -> float:
    """``exp(x)``, the ratio a difference of log values stands for, ``inf`` past the float range.

    Log values are bounded by the float range, their differences not by ``log`` of it: a float64 loss from
    1e-10 to 1e300 is a step of 714 in log units, and ``math.exp`` raised ``OverflowError`` in the middle of the
    watchdog's decision (its log line's ratio), ending the fit it watches.

    >>> exp_value(0.0), exp_value(714.0)
    (1.0, inf)
    """
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def expm1_value(x: float) -> float:
    """``exp(x) − 1``, the relative change a difference of log values stands for, ``inf`` past the float range.

    As :func:`exp_value`, for a change near 0, where ``math.expm1`` keeps the digits that ``exp(x) − 1`` loses
    (``exp(1e-12) − 1`` is 1.000088900582341e-12).

    >>> expm1_value(1e-12), expm1_value(710.0)
    (1.0000000000005e-12, inf)
    """
    try:
        return math.expm1(x)
    except OverflowError:
        return math.inf


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

    @property
    def highest(self) -> float:
        """The highest accepted value (``-inf`` before any)."""
        return self._sorted[-1] if self._sorted else -math.inf

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

    def risen(self, count: int, shift: float) -> bool:
        """Whether the last ``count`` values since ``S`` left 0 sit, in their median, more than ``shift`` above the
        reference's center: a climb past the largest level shift that the data may make, however wide the spread
        (the sum grows by ``z − drift`` per value, which a spread widened by a fast-falling or unstable loss keeps
        near 0 while the loss climbs).

        >>> cusum = Cusum(drift=1.0, threshold=25.0)
        >>> for k, x in enumerate([0.0, 0.9, 1.0, 0.8]):
        ...     _ = cusum.update(x, center=0.0, spread=0.5, step=k)
        >>> cusum.alarm, cusum.risen(3, shift=0.405), cusum.risen(4, shift=0.405)
        (False, True, False)
        """
        if self.reference is None or len(self.since_start) < count:
            return False
        return statistics.median(self.since_start[-count:]) - self.reference[0] > shift

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
    sample_limit: float = math.inf  # a sample whose loss is above this is an outlier (linear units, not log)
    sample_count: float = math.inf  # a batch with more outlier samples than this is skipped


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


def judge(gate: Gate, loss: float, grad_norm: float, outliers: float = math.nan) -> Verdict:
    """Judge one step against ``gate``: non-finite values are skipped, outliers skipped or clipped.

    The clip factor is ``min(limit / value)`` over the outlying signals (in linear units), so a clipped step
    is no larger than one at the threshold. ``outliers`` is the step's count of outlier samples (``nan``: the
    module reports no per-sample losses); above ``gate.sample_count`` the batch is bad data and is skipped, in
    ``"clip"`` mode too.

    >>> judge(Gate(loss_limit=math.log(2.0), grad_limit=math.log(10.0)), loss=1.0, grad_norm=3.0) == Verdict()
    True
    >>> judge(Gate(math.log(2.0), math.log(10.0)), loss=8.0, grad_norm=3.0).state()
    {'skip': True, 'clip_factor': 1.0, 'signals': ['loss'], 'forced': False}
    >>> clipped = judge(Gate(math.log(2.0), math.log(10.0), clip=True), loss=1.0, grad_norm=40.0)
    >>> clipped.skip, round(clipped.clip_factor, 12), clipped.signals == ("grad_norm",)
    (False, 0.25, True)
    >>> judge(Gate(), loss=float("nan"), grad_norm=3.0).state()
    {'skip': True, 'clip_factor': 1.0, 'signals': ['non_finite'], 'forced': False}
    >>> judge(Gate(sample_count=7, clip=True), loss=1.0, grad_norm=3.0, outliers=16).state()
    {'skip': True, 'clip_factor': 1.0, 'signals': ['sample_outliers'], 'forced': False}
    """
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        return Verdict(skip=True, signals=(Signal.NON_FINITE,))
    if outliers > gate.sample_count:
        return Verdict(skip=True, signals=(Signal.SAMPLE_OUTLIERS,))
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


SAMPLE_FALSE_ALARM = 1e-6
"""The chance that a clean batch has more outlier samples than :func:`binomial_limit` allows: a clean batch's
count of samples above the per-sample limit is binomial (the loader draws its samples independently of each
other), so at 1e-6 per step the 10,000 clean steps of the benchmark's false-intervention goal expect 0.01 false
skips (:class:`SampleBaseline` widens the limit by the over-dispersion measured on clean batches, whose counts
vary more than a binomial's when the model's errors come together)."""


@dataclass(frozen=True)
class Samples:
    """One step's per-sample losses, summarised on the device: the batch's largest per-sample loss, how many
    samples were above ``limit`` (the per-sample limit in force for the step) and how many samples there were
    (over all ranks)."""

    largest: float
    count: float
    n: float
    limit: float = math.inf

    @property
    def share(self) -> float:
        """The share of outlier samples (``nan`` without samples)."""
        return self.count / self.n if self.n > 0 else math.nan

    def state(self) -> list[float]:
        """As plain data, for a checkpoint."""
        return [self.largest, self.count, self.n, self.limit]


def binomial_limit(n: int, p: float, alpha: float = SAMPLE_FALSE_ALARM) -> int:
    """The largest count of outlier samples a clean batch of ``n`` shows, at tail rate ``p``: the smallest ``k``
    with ``P(X > k) ≤ alpha`` for ``X ~ Binomial(n, p)``.

    >>> binomial_limit(32, 0.05), binomial_limit(32, 0.0), binomial_limit(1, 0.5)
    (10, 0, 1)
    """
    if n <= 0:
        return 0
    if p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    log_p, log_q = math.log(p), math.log1p(-p)

    def log_pmf(k: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q

    # walk down from where the tail is negligible (12 standard deviations and 20 counts above the mode: below
    # 1e-20 for any n and p); the upper tail P(X ≥ k) grows as k falls; stop once it passes alpha
    mode = min(n, int((n + 1) * p))
    top = min(n, mode + int(12.0 * math.sqrt(n * p * (1.0 - p))) + 20)
    tail = 0.0
    for k in range(top, mode - 1, -1):
        tail += math.exp(log_pmf(k))
        if tail > alpha:
            return k  # P(X ≥ k) > alpha, P(X > k) ≤ alpha
    return mode


class SampleBaseline:
    """The clean per-sample loss distribution of the last ``window`` accepted batches, and the rule that tells a
    batch dominated by outlier samples.

    A sample is an outlier when its loss is above ``limit``, the median of the accepted batches' largest
    per-sample losses: the loss that a clean batch's worst sample exceeds half the time (for batches of ``n``
    independent samples, the clean distribution's ``(1/2)^(1/n)`` quantile: 97.9% for 32 samples). It is a
    quantile, so it holds for the right-skewed per-sample losses of a trained model (many near zero, a long
    tail), where a median-plus-spreads rule would sit inside the tail. The share ``p`` of clean samples above
    it is measured at it, over the same batches; a batch of ``n`` samples is dominated by outliers when more
    than :func:`binomial_limit` ``(n, p)`` of them are above it. The samples of a batch are drawn independently,
    but a model's errors are not: a class it confuses for a few steps gives a clean batch several outliers at
    once, so clean counts vary more than a binomial's. Their dispersion ``φ`` (Pearson's: the squared deviations
    of the clean batches' counts from ``n·p`` over their binomial variance, at least 1) is measured on the same
    batches, and the count is held to the quasi-binomial limit ``φ · binomial_limit(n / φ, p)`` (the variance
    ``φ·n·p·(1 − p)``). Nothing is judged before ``warmup`` batches (the limit first, then the rate at it).

    >>> baseline = SampleBaseline(window=20, warmup=3)
    >>> for largest in (0.4, 0.6, 0.5):
    ...     baseline.add(Samples(largest=largest, count=0, n=32))
    >>> baseline.limit, baseline.max_count(32)
    (0.5, inf)
    >>> for _ in range(3):
    ...     baseline.add(Samples(largest=0.5, count=1, n=32, limit=baseline.limit))
    >>> baseline.max_count(32)  # more than 9 of 32 samples above the limit: dominated by outliers
    9.0
    """

    def __init__(self, window: int, warmup: int) -> None:
        self.window, self.warmup = window, warmup
        self.reset()

    def add(self, samples: Samples) -> None:
        """Accept a clean batch's summary; its count enters the tail rate if it was taken at a limit."""
        if not math.isfinite(samples.largest) or samples.n <= 0:
            return
        self.largest.add(samples.largest)
        if math.isfinite(samples.limit):
            self.tails.append((samples.count, samples.n))

    def reset(self) -> None:
        """Forget everything (the data changed): the warmup starts again."""
        self.largest = RollingBaseline(self.window, min_spread=0.0)  # only its median is used
        self.tails: deque[tuple[float, float]] = deque(maxlen=self.window)

    @property
    def limit(self) -> float:
        """The per-sample loss above which a sample is an outlier (``inf`` during the warmup)."""
        return self.largest.center if len(self.largest) >= self.warmup else math.inf

    @property
    def tail_rate(self) -> float:
        """The share of clean samples above the limit, ``(outliers + 1/2) / (samples + 1)`` (never 0)."""
        count = sum(c for c, _ in self.tails)
        total = sum(n for _, n in self.tails)
        return (count + 0.5) / (total + 1.0)

    @property
    def dispersion(self) -> float:
        """``φ``: how much more the clean batches' counts vary than a binomial's (at least 1)."""
        return self._dispersion(self.tail_rate)

    def _dispersion(self, p: float) -> float:
        expected = sum(n * p * (1.0 - p) for _, n in self.tails)
        deviations = sum((c - n * p) ** 2 for c, n in self.tails)
        return max(1.0, deviations / expected) if expected > 0 else 1.0

    def max_count(self, n: float) -> float:
        """The most outlier samples a clean batch of ``n`` shows (``inf``: not judged yet)."""
        if len(self.tails) < self.warmup or n <= 0:
            return math.inf
        p = self.tail_rate
        phi = self._dispersion(p)
        return phi * binomial_limit(max(round(n / phi), 1), p)

    def state_dict(self) -> dict[str, Any]:
        return {"largest": self.largest.state_dict(), "tails": [list(t) for t in self.tails]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.largest.load_state_dict(state["largest"])
        self.tails = deque(((float(c), float(n)) for c, n in state["tails"]), maxlen=self.window)
