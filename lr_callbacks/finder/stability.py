"""The stability probe's rules: how long it holds a candidate LR, whether the hold was stable, which LR it keeps.

The ramp holds each LR for about one step; the real run holds its peak for tens of steps, long enough for an
instability to grow. The probe (run by :mod:`lr_callbacks.finder.probe`) therefore replays the run's warmup
from the restored state and then holds the candidate for :func:`hold_steps` steps; :func:`hold_verdict`
reads the hold's losses and gradient norms. An unstable candidate is halved, at most :data:`MAX_HALVINGS`
times. A stable hold that ends no lower than the restored state's own loss (the sweep's first points, at LRs
too small to train) has not shown that the run trains at that LR: past its edge an LR can leave a model
stuck where it started without blowing up (e.g. a transformer under AdamW at its initial loss). It is halved
too, within the same budget, and :func:`settle` keeps the first held LR that was stable *and* made progress,
else the first stable one (a trained model at its floor makes no progress at any LR, and is not pushed
down). Progress is measured from the common starting point, not within the hold: every attempt replays the
warmup at its own LR first, and a larger LR has made more of its progress by the time its hold begins.

Nothing here is tuned: the margins are 3 standard errors (the significance every rule of the analysis uses),
and "grows geometrically" means the gradient norm at least doubles over the hold while the loss makes no
significant progress.

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
    "probe_halved": "held as the real run holds its peak, an LR above the answer (the suggestion, or its half) was "
    "unstable; the probe halved it",
    "probe_stalled": "held as the real run holds its peak, an LR above the answer (the suggestion, or its half) was "
    "stable but the loss made no significant progress, and a lower LR did; the probe took the lower one",
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
        drop: the restored state's loss level (before the warmup) minus the hold's end level; NaN when the
            starting losses are unknown.
        drop_margin: how far the loss must drop to count as progress: 3 standard errors of that difference.

    >>> HoldVerdict("stable", 0.0, 0.05, 0.9, drop=0.2, drop_margin=0.05).progressed
    True
    >>> HoldVerdict("stable", 0.0, 0.05, 0.9, drop=0.01, drop_margin=0.05).progressed  # stable, no progress
    False
    """

    verdict: str
    rise: float
    margin: float
    growth: float
    drop: float = math.nan
    drop_margin: float = math.nan

    @property
    def stable(self) -> bool:
        return self.verdict == "stable"

    @property
    def progressed(self) -> bool:
        """Stable, and the hold ended significantly below the restored state's loss (``drop > drop_margin``)."""
        return self.stable and self.drop > self.drop_margin


def settle(holds: Sequence[HoldVerdict]) -> int:
    """Which of the probe's holds (largest LR first, each half the one before) it keeps: the first that was
    stable and made progress; else the first stable one; else the last (all unstable).

    >>> s, n = HoldVerdict("stable", 0, 0.1, 1, 1, 0.1), HoldVerdict("stable", 0, 0.1, 1, 0, 0.1)  # progressed, stalled
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

    >>> s, n = HoldVerdict("stable", 0, 0.1, 1, 1, 0.1), HoldVerdict("stable", 0, 0.1, 1, 0, 0.1)  # progressed, stalled
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


def hold_verdict(
    losses: Sequence[float],
    grad_norms: Sequence[float],
    initial: Sequence[float] = (),
    skipped: Sequence[bool] = (),
) -> HoldVerdict:
    """Whether holding an LR was stable, from the hold's training losses and gradient norms, and whether it made
    progress from ``initial``, the losses of the state the probe started from (the sweep's first points).

    ``skipped[k]`` is true when mixed precision's ``GradScaler`` skipped step ``k``'s update (its scaled gradients
    overflowed; the scaler backs off and the weights do not move). A scaler skips its first steps after every
    restore (a fresh scale, 2¹⁶ by default, is calibrated by overflowing), so such a step is no sign of the LR: its
    gradient norm (inf or NaN) is left out, as a NaN norm (no gradient seen) is. Its loss stays: the weights did not
    move, and it is a true reading of them; a non-finite loss is ``nonfinite`` whether or not the step was skipped.
    But when the scaler skipped each of the hold's last ``q`` steps (so also when it skipped them all), the
    gradients stayed non-finite after it had backed off ``q`` times: that is no calibration, and no update at the
    held LR has shown that it works, so the hold is ``nonfinite``.

    With ``q = max(3, n // 4)`` points per end, the start and end levels are the medians of the first and
    the last ``q`` losses, ``s`` the losses' step-to-step noise (:func:`~lr_callbacks.finder.ramp.difference_noise`)
    and ``margin = 3 · √2 · 1.2533 · s / √q`` (3 standard errors of the difference of two medians). Unstable:

    - ``nonfinite``: a loss or the gradient norm of a step not ``skipped`` is NaN/inf, or the last ``q`` steps were
      all ``skipped``;
    - ``loss_rose``: ``end − start > margin``, or the hold ended above the restored state's loss by more than
      ``drop_margin`` (``drop < −drop_margin``): a loss that blows up in the hold's first ``q`` steps puts the
      blow-up into the start level, and where it settles after it can stand far above the loss training began
      from (before, SGD held at 4.3 on the digits MLP went from 2.3 to 27 and ended at 4.4, read as "stable, no
      significant progress", and the probe kept it as its answer);
    - ``grad_norm_grew``: the gradient norm's level (medians, the same ends and the middle) rises at each
      step, start < middle < end, at least doubles, and the loss made no significant progress
      (``end − start > −margin``).

    Progress (``drop``): the median of the first ``q`` losses of ``initial`` minus ``end``, against
    ``drop_margin``, 3 standard errors of that difference (each series' own noise); NaN without ``initial``.

    >>> hold_verdict([1.0 - 0.01 * k for k in range(30)], [1.0] * 30).verdict
    'stable'
    >>> hold_verdict([1.0 + 0.05 * k for k in range(30)], [1.0] * 30).verdict
    'loss_rose'
    >>> hold_verdict([1.0, 1.01] * 15, [1.1**k for k in range(30)]).verdict
    'grad_norm_grew'
    >>> stuck = hold_verdict([2.3, 2.31] * 15, [1.0] * 30, initial=[2.3, 2.32] * 4)
    >>> stuck.stable, stuck.progressed, hold_verdict([1.0, 1.01] * 15, [1.0] * 30, initial=[2.3, 2.32] * 4).progressed
    (True, False, True)
    >>> calibrating = [True] * 4 + [False] * 26  # a fresh GradScaler's first overflows
    >>> hold_verdict([1.0 - 0.01 * k for k in range(30)], [math.inf] * 4 + [1.0] * 26, skipped=calibrating).verdict
    'stable'
    >>> hold_verdict([1.0 - 0.01 * k for k in range(30)], [math.inf] * 30, skipped=[True] * 30).verdict
    'nonfinite'
    """
    values = [float(v) for v in losses]
    skips = [bool(s) for s in skipped]
    q = max(3, len(values) // 4)
    # NaN: no gradient was seen; a step the GradScaler skipped: its overflow is the scaler's calibration
    norms = [float(v) for k, v in enumerate(grad_norms) if not math.isnan(v) and not (k < len(skips) and skips[k])]
    finite = all(math.isfinite(v) for v in values) and all(math.isfinite(v) for v in norms)
    if not values or not finite or (skips and all(skips[-q:])):
        return HoldVerdict("nonfinite", math.inf, 0.0, math.inf)
    begin, end = statistics.median(values[:q]), statistics.median(values[-q:])
    noise = difference_noise(values)
    margin = _Z * math.sqrt(2.0) * 1.2533 * noise / math.sqrt(q)
    rise = end - begin
    growth = _growth(norms, q)
    drop, drop_margin = _drop(initial, end, noise, q)
    if rise > margin or drop < -drop_margin:  # NaN drop (no starting losses): only the rise within the hold
        return HoldVerdict("loss_rose", rise, margin, growth, drop, drop_margin)
    if growth >= 2.0 and rise > -margin:
        return HoldVerdict("grad_norm_grew", rise, margin, growth, drop, drop_margin)
    return HoldVerdict("stable", rise, margin, growth, drop, drop_margin)


def _drop(initial: Sequence[float], end: float, noise: float, q: int) -> tuple[float, float]:
    """The restored state's loss level minus the hold's end level, and 3 standard errors of that difference."""
    first = [float(v) for v in initial[:q] if math.isfinite(v)]
    if not first:
        return math.nan, math.nan
    se_initial = 1.2533 * difference_noise(first) / math.sqrt(len(first))
    se_end = 1.2533 * noise / math.sqrt(q)
    return statistics.median(first) - end, _Z * math.hypot(se_initial, se_end)


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
