"""The finder's sweep: the LR of each step, and the rule that stops it when the loss diverges.

Pure functions of plain numbers (stdlib only), like the analysis in :mod:`lr_callbacks.finder.analysis`.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence

__all__ = ["MODES", "difference_noise", "diverged", "sweep_lrs"]

MODES = ("exponential", "linear")
"""The ramps :func:`sweep_lrs` knows."""

_MEDIAN_WINDOW = 5
_STOP_NOISE = 4.0
_FLAT_STOP_NOISE = 6.0


def sweep_lrs(min_lr: float, max_lr: float, num_steps: int, mode: str = "exponential") -> tuple[float, ...]:
    """The LR of each step of the sweep, from ``min_lr`` to ``max_lr`` inclusive, evenly spaced.

    ``exponential``: ``lr_i = min_lr · (max_lr / min_lr) ** (i / (n − 1))`` (even on the log axis, including
    the first step, which Lightning's ladder gets uneven); ``linear``: ``lr_i = min_lr + (max_lr − min_lr) ·
    i / (n − 1)``. Step 0 is ``min_lr`` and step ``n − 1`` is ``max_lr``, exactly.

    Raises:
        ValueError: for an unknown ``mode``, ``num_steps < 2`` or ``not 0 < min_lr < max_lr``.

    >>> sweep_lrs(1e-4, 1e-1, 4)
    (0.0001, 0.001, 0.01, 0.1)
    >>> sweep_lrs(0.0, 0.3, 4, "linear")
    Traceback (most recent call last):
    ...
    ValueError: `min_lr` must be > 0 and below `max_lr`, got min_lr=0.0, max_lr=0.3
    """
    if mode not in MODES:
        raise ValueError(f"unknown `mode` {mode!r}; choose one of: {', '.join(map(repr, MODES))}")
    if num_steps < 2:
        raise ValueError(f"`num_steps` must be >= 2, got {num_steps}")
    if not 0 < min_lr < max_lr:
        raise ValueError(f"`min_lr` must be > 0 and below `max_lr`, got min_lr={min_lr!r}, max_lr={max_lr!r}")
    last = num_steps - 1
    if mode == "linear":
        lrs = [min_lr + (max_lr - min_lr) * i / last for i in range(num_steps)]
    else:
        ratio = math.log(max_lr / min_lr)
        lrs = [min_lr * math.exp(ratio * i / last) for i in range(num_steps)]
    lrs[0], lrs[-1] = min_lr, max_lr
    return tuple(float(f"{lr:.15g}") for lr in lrs)


def diverged(losses: Sequence[float], threshold: float | None = 1.0) -> bool:
    """The sweep's stop rule: whether the loss, seen up to its latest point, has diverged.

    It stops at once on a NaN/inf loss. Otherwise, with ``m`` the median of the last 5 losses (robust to a
    spiky batch or two), ``best`` the lowest ``m`` so far, ``start`` the median of the first 5 and ``s`` the
    noise (the robust spread of step-to-step changes, measured up to the best point so that the rise does
    not inflate it), it stops when::

        m > best + max(threshold · (start − best), 4 · s)      if start − best > 4 · s
        m > best + 6 · s                                        otherwise

    i.e. when the loss has given back ``threshold`` times what it gained (1.0: it is back where it
    started), or, if it has not clearly gained anything, when it has risen far above its noise (a flat,
    noisy curve wanders by a few times its step-to-step noise without diverging). Only differences of
    losses appear, so the rule works for negative losses and is unmoved by the loss's scale and offset
    (a ``loss > 4 × best`` rule breaks on both). ``threshold=None`` stops only on NaN/inf.

    >>> curve = [3.0, 3.01, 2.99, 3.0, 2.98, 2.9, 2.5, 2.0, 1.5, 1.0, 0.8, 0.7, 0.75, 1.2, 2.0, 3.5, 5.0, 7.0]
    >>> diverged(curve[:-1]), diverged(curve)  # the median of the last 5 passes 3.0, where it started
    (False, True)
    >>> diverged([-3.0, -4.0, -5.0, -5.5, -5.6, -5.5, -5.6, -5.4])
    False
    >>> diverged([1.0, float("nan")])
    True
    >>> diverged([1.3862, 1.3972, 1.3996, 1.3856, 1.3828, 1.4940, 1.4180, 1.4604, 1.4314])  # a flat, noisy start
    False
    >>> diverged([1.0, 1.01, 0.99, 1.0, 1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8])  # no gain, then a rise
    True
    """
    if not losses:
        return False
    if not math.isfinite(losses[-1]):
        return True
    if threshold is None or len(losses) < _MEDIAN_WINDOW:
        return False
    values = [float(v) for v in losses]
    medians = [statistics.median(values[max(0, i - _MEDIAN_WINDOW + 1) : i + 1]) for i in range(len(values))]
    start = medians[_MEDIAN_WINDOW - 1]
    i_best = min(range(_MEDIAN_WINDOW - 1, len(values)), key=medians.__getitem__)
    best = medians[i_best]
    noise = difference_noise(values[: i_best + 1])  # not from the rise, which would hide itself
    gain = start - best
    if gain <= _STOP_NOISE * noise:  # no clear gain yet: a flat curve's slow wander is not a divergence
        # the noise over every point, when larger: a flat start's lowest median can come after a few steps,
        # whose few changes can read a tenth of the noise (a LoRA MiniLM's sweep stopped at its 9th step, at
        # 4e-6, where nothing can change); a real rise outgrows its own changes within a few steps
        noise = max(noise, difference_noise(values))
        return medians[-1] > best + _FLAT_STOP_NOISE * noise
    return medians[-1] > best + max(threshold * gain, _STOP_NOISE * noise)


def difference_noise(values: Sequence[float]) -> float:
    """The noise of a series with a slow trend: the robust size of its step-to-step changes, / √2.

    Not centred on the median change: that would read an alternating series as noiseless, and a trend
    only makes the estimate larger, i.e. the stop rule more patient.

    >>> round(difference_noise([1.0, 1.1, 1.0, 1.1, 1.0]), 4)
    0.1048
    """
    if len(values) < 3:
        return 0.0
    return 1.4826 * statistics.median(abs(b - a) for a, b in itertools.pairwise(values)) / math.sqrt(2.0)
