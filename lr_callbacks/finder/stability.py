"""The stability probe's rules: how long it holds a candidate LR, whether the hold was stable, which LR it keeps.

The ramp holds each LR for about one step; the real run holds its peak for tens of steps, long enough for an
instability to grow. The probe (run by :mod:`lr_callbacks.finder.probe`) therefore replays the run's warmup
from the restored state and then holds the candidate for :func:`hold_steps` steps; :func:`hold_verdict`
reads the hold's losses and gradient norms. An unstable candidate is halved, at most :data:`MAX_HALVINGS`
times. A stable hold whose loss made no significant progress has not shown that the run trains at that LR
(an LR past the edge can leave a model stuck where it started without blowing up, e.g. a transformer under
AdamW at its initial loss); it is halved too, within the same budget, and :func:`settle` keeps the first
held LR that was stable *and* made progress, else the first stable one (a trained model at its floor makes
no progress at any LR, and is not pushed down). Nothing here is tuned: the margin is 3 standard errors (the
significance every rule of the analysis uses), and "grows geometrically" means the gradient norm at least
doubles over the hold while the loss makes no significant progress.

Pure functions of plain numbers (stdlib only).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from lr_callbacks.finder.ramp import difference_noise

__all__ = [
    "HOLD_MIN_STEPS",
    "MAX_HALVINGS",
    "PROBE_FLAGS",
    "VERDICTS",
    "HoldVerdict",
    "hold_steps",
    "hold_verdict",
    "probe_flags",
    "settle",
]

HOLD_MIN_STEPS = 20
"""The shortest hold, in optimizer steps."""

MAX_HALVINGS = 2
"""How many times the probe may halve an unstable candidate."""

PROBE_FLAGS = {
    "probe_halved": "held as the real run holds its peak, the suggestion was unstable; the probe halved it",
    "probe_stalled": "held as the real run holds its peak, the suggestion was stable but the loss made no "
    "significant progress, and a lower LR did; the probe took the lower one",
    "probe_no_progress": "no LR the probe held made significant progress (a trained model at its floor, or a hold "
    "too short to tell); the largest stable one was kept",
    "probe_unstable": "even a quarter of the suggestion was unstable when held; lower max_lr or check the model",
}
"""The flags the probe may add to a result, with what they mean."""

VERDICTS = ("stable", "loss_rose", "grad_norm_grew", "nonfinite")
"""What :func:`hold_verdict` may conclude."""

_Z = 3.0


@dataclass(frozen=True)
class HoldVerdict:
    """What a hold showed.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        rise: the loss's level at the end of the hold minus its level at the start (medians of a quarter).
        margin: how far the loss may rise before it counts: 3 standard errors of that difference.
        growth: the gradient norm's level at the end over its level at the start.

    >>> HoldVerdict("stable", -0.2, 0.05, 0.9).progressed
    True
    >>> HoldVerdict("stable", -0.01, 0.05, 0.9).progressed  # stable, but no significant progress
    False
    """

    verdict: str
    rise: float
    margin: float
    growth: float

    @property
    def stable(self) -> bool:
        return self.verdict == "stable"

    @property
    def progressed(self) -> bool:
        """Stable, and the loss ended significantly below where the hold began (``rise < −margin``)."""
        return self.stable and self.rise < -self.margin


def settle(holds: Sequence[HoldVerdict]) -> int:
    """Which of the probe's holds (largest LR first, each half the one before) it keeps: the first that was
    stable and made progress; else the first stable one; else the last (all unstable).

    >>> s, n = HoldVerdict("stable", -1, 0.1, 1), HoldVerdict("stable", 0, 0.1, 1)  # progressed, stalled
    >>> u = HoldVerdict("loss_rose", 1, 0.1, 1)
    >>> settle([u, n, s]), settle([n, n, n]), settle([u, u, u]), settle([s])
    (2, 0, 2, 0)
    """
    if not holds:
        raise ValueError("settle needs at least one hold")
    progressed = [i for i, h in enumerate(holds) if h.progressed]
    stable = [i for i, h in enumerate(holds) if h.stable]
    return (progressed or stable or [len(holds) - 1])[0]


def probe_flags(holds: Sequence[HoldVerdict]) -> tuple[str, ...]:
    """The flags (:data:`PROBE_FLAGS`) of a probe whose holds were ``holds``, in that dict's order.

    >>> s, n = HoldVerdict("stable", -1, 0.1, 1), HoldVerdict("stable", 0, 0.1, 1)  # progressed, stalled
    >>> u = HoldVerdict("loss_rose", 1, 0.1, 1)
    >>> probe_flags([s]), probe_flags([u, s]), probe_flags([n, s]), probe_flags([n, n, n]), probe_flags([u, u, u])
    ((), ('probe_halved',), ('probe_stalled',), ('probe_no_progress',), ('probe_halved', 'probe_unstable'))
    """
    kept = settle(holds)
    found = set()
    if any(not h.stable for h in holds[:kept]):
        found.add("probe_halved")
    if any(h.stable for h in holds[:kept]):
        found.add("probe_stalled")
    if holds[kept].stable and not holds[kept].progressed:
        found.add("probe_no_progress")
    if not holds[kept].stable:
        found.add("probe_unstable")
    return tuple(name for name in PROBE_FLAGS if name in found)


def hold_steps(warmup_steps: int) -> int:
    """The hold's length: ``max(20, 2 × warmup)`` steps (long enough for an instability to show).

    >>> hold_steps(0), hold_steps(15), hold_steps(30)
    (20, 30, 60)
    """
    return max(HOLD_MIN_STEPS, 2 * warmup_steps)


def hold_verdict(losses: Sequence[float], grad_norms: Sequence[float]) -> HoldVerdict:
    """Whether holding an LR was stable, from the hold's training losses and gradient norms.

    With ``q = max(3, n // 4)`` points per end, the start and end levels are the medians of the first and
    the last ``q`` losses, ``s`` the losses' step-to-step noise (:func:`~lr_callbacks.finder.ramp.difference_noise`)
    and ``margin = 3 · √2 · 1.2533 · s / √q`` (3 standard errors of the difference of two medians). Unstable:

    - ``nonfinite``: a loss or a gradient norm is NaN/inf;
    - ``loss_rose``: ``end − start > margin``;
    - ``grad_norm_grew``: the gradient norm's level (medians, the same ends and the middle) rises at each
      step, start < middle < end, at least doubles, and the loss made no significant progress
      (``end − start > −margin``).

    >>> hold_verdict([1.0 - 0.01 * k for k in range(30)], [1.0] * 30).verdict
    'stable'
    >>> hold_verdict([1.0 + 0.05 * k for k in range(30)], [1.0] * 30).verdict
    'loss_rose'
    >>> hold_verdict([1.0, 1.01] * 15, [1.1**k for k in range(30)]).verdict
    'grad_norm_grew'
    """
    values = [float(v) for v in losses]
    norms = [float(v) for v in grad_norms if not math.isnan(v)]  # NaN: no gradient was seen (skipped steps)
    if not values or not all(math.isfinite(v) for v in values) or not all(math.isfinite(v) for v in norms):
        return HoldVerdict("nonfinite", math.inf, 0.0, math.inf)
    q = max(3, len(values) // 4)
    start, end = statistics.median(values[:q]), statistics.median(values[-q:])
    margin = _Z * math.sqrt(2.0) * 1.2533 * difference_noise(values) / math.sqrt(q)
    rise = end - start
    growth = _growth(norms, q)
    if rise > margin:
        return HoldVerdict("loss_rose", rise, margin, growth)
    if growth >= 2.0 and rise > -margin:
        return HoldVerdict("grad_norm_grew", rise, margin, growth)
    return HoldVerdict("stable", rise, margin, growth)


def _growth(norms: Sequence[float], q: int) -> float:
    """The norm's end level over its start level when it rose steadily (start < middle < end), else 1."""
    if len(norms) < 3 * min(q, len(norms) // 3) or len(norms) < 3:
        return 1.0
    q = min(q, len(norms) // 3)
    middle = (len(norms) - q) // 2
    first = statistics.median(norms[:q])
    mid = statistics.median(norms[middle : middle + q])
    last = statistics.median(norms[-q:])
    if not first < mid < last or first <= 0.0:
        return 1.0
    return last / first
