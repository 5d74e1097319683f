"""The LR finder's curve analysis: from a range test's raw losses to a suggestion, a range and flags.

Pure functions of plain numbers (stdlib only: no torch, no Lightning, no numpy), so every rule can be
checked with made-up curves.

**Smoothing without lag.** Existing finders smooth the loss *during* the sweep with an EMA; over the usual
8 decades in 100 steps that shifts every feature of the curve by 1.6-2.7 decades of LR (research
``lr_finder_anchors.md`` §10.2), and by an amount that changes with the number of steps and the range.
Here the raw losses are kept and smoothed *afterwards* by a robust local-linear fit (LOWESS) with Gaussian
weights whose width ``window`` is measured in decades of LR: centred, so no lag; the same width whatever the
number of steps or the range, so the answer does not move with them; robust (bisquare re-weighting), so a
few spiky batches do not move it either. The fit gives the slope on the log-LR axis directly.

**Invariance.** Every rule below compares differences of losses with other differences (the drop from the
start to the minimum, the residual noise), never with the loss's own value, so the answer does not move
when the loss is multiplied by a positive number or shifted: it works for negative losses (Gaussian NLL)
and for near-zero ones (a trained model), where ``loss > 4 × best`` rules break. The one exception is a floor
on the noise, 1e-12 of the loss's level, below which a difference is float round-off (a constant loss), not a
feature.

>>> from lr_callbacks.finder.ramp import sweep_lrs
>>> lrs = sweep_lrs(1e-6, 1.0, 61)
>>> curve = [1.0 / (1.0 + (lr / 1e-3) ** 2) + (lr / 0.1) ** 3 for lr in lrs]
>>> s = suggest_lr(lrs, curve)
>>> round(math.log10(s.lr), 1), s.flags
(-2.5, ())
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace

from lr_callbacks.core.checks import foreign_scalar

__all__ = [
    "BROAD_BOTTOM",
    "DEFAULT_WINDOW",
    "FLAGS",
    "MAX_WINDOW",
    "METHODS",
    "MIN_EFFECTIVE_POINTS",
    "MIN_POINTS",
    "MIN_RISE",
    "Suggestion",
    "check_window",
    "effective_window",
    "smooth",
    "suggest_lr",
    "valley_rule",
]

METHODS = ("default", "steepest", "min_div_10", "valley")
"""The suggestion rules (see :func:`suggest_lr`)."""

BROAD_BOTTOM = 1.5
"""How wide, in decades of LR, a curve's bottom (the smoothed values within 3 standard errors of its lowest) may be
before it is read as a plateau, not a valley (``no_clear_valley``; with a lasting rise after it, the answer of a
flat curve)."""

FLAGS = {
    "empty": "no loss was recorded",
    "too_short": "too few finite points to analyse; run more steps",
    "nonfinite": "the loss became NaN/inf; the curve is cut at the first such point",
    "diverged_at_once": "the loss never fell and then rose: min_lr is already too high, lower it",
    "flat_curve": "the loss did not fall by more than its noise, or stayed at its lowest level over more than "
    f"{BROAD_BOTTOM:g} decades (a trained model, too low max_lr, or a model that learns too slowly for a sweep this "
    "short to show it); the answer is read from where the loss rose for good, and there is none when it never did",
    "no_clear_valley": "the loss falls, but the bottom is broad or noisy; the suggestion is uncertain",
    "min_at_end": "the loss was still falling at max_lr; raise max_lr (never raised on a curve cut at a NaN/inf, whose "
    "end is a blow-up)",
}
"""Every flag :func:`suggest_lr` may raise, with what it means and what to do."""

DEFAULT_WINDOW = 0.2
"""The smoothing width, in decades of LR (the standard deviation of the Gaussian weights)."""

MIN_POINTS = 8
"""The fewest finite points that are analysed; fewer gives ``lr=None`` and the ``too_short`` flag."""

MIN_EFFECTIVE_POINTS = 5.0
"""The effective number of points each smoothed value rests on, at least (see :func:`effective_window`)."""

_Z = 3.0
"""How many standard errors a drop or a rise must exceed to count (the significance of a feature)."""

MIN_RISE = 0.3
"""How long, in decades of LR, a flat curve's rise must last to count as its edge (not a noisy bump)."""

_NOISE_FLOOR = 1e-12
"""The least noise, relative to the loss's level (the median of its smoothed values' magnitudes): a constant loss
has no residual noise but float round-off, which would otherwise read as a significant descent or rise."""


@dataclass(frozen=True)
class Suggestion:
    """What :func:`suggest_lr` concludes from a curve.

    Attributes:
        lr: the suggested LR, or ``None`` when the curve does not support one (see ``flags``).
        range: ``(lower, upper)``, the LRs between the middle of the descent (where half the drop is done: for an
            S-shaped descent its steepest point) and the loss minimum (the band in which training makes fast, stable
            progress); on a curve read as flat (``flat_curve``, a broad bottom too), ``(edge / 10, edge)``, ``edge``
            where the loss's lasting rise begins; or ``None``. The ``"default"`` answer lies in it; the other
            methods' may lie outside it (``lr_min / 10`` and the steepest point below it, fastai's valley either side).
        flags: names from :data:`FLAGS`, in a fixed order; empty for a clean curve.
        method: the rule that chose ``lr``.
        smoothed: the zero-lag smoothed loss at every input point (NaN where it was not analysed).

    >>> s = suggest_lr([1e-4, 1e-3, 1e-2, 1e-1], [1.0, 1.0, 1.0, 1.0])
    >>> s.lr, s.range, s.flags
    (None, None, ('too_short',))
    """

    lr: float | None
    range: tuple[float, float] | None
    flags: tuple[str, ...]
    method: str
    smoothed: tuple[float, ...] = ()


@dataclass(frozen=True)
class _Fit:
    values: tuple[float, ...]
    slopes: tuple[float, ...]  # d loss / d log10(lr)
    n_eff: tuple[float, ...]  # 1 / Σ l_j²: the value's variance is noise² / n_eff
    residuals: tuple[float, ...]  # |loss − smoothed|
    noise: float = 0.0  # the residuals' robust standard deviation, up to just past the minimum
    noise_floor: float = 0.0  # the least noise: float round-off, not a feature (_NOISE_FLOOR × the loss's level)

    def se(self, i: int) -> float:
        """The standard error of the smoothed value at point ``i``."""
        return self.noise / math.sqrt(self.n_eff[i])


MAX_WINDOW = 1.0
"""The widest smoothing ``window``, in decades of LR: a loss's descent spans one or two decades, and a wider
window smooths it away (the documented curve read as ``diverged_at_once`` at 1.5 decades)."""


def check_window(window: float, owner: str) -> None:
    """Refuse a ``window`` above :data:`MAX_WINDOW` decades, with the likely mix-up (a count of points)."""
    if window > MAX_WINDOW:
        raise ValueError(
            f"{owner}: `window` is the smoothing width in decades of LR (default {DEFAULT_WINDOW}), at most "
            f"{MAX_WINDOW:g}; got {window!r}, which would smooth the loss's whole descent away (a number of points "
            "or steps is not what it takes)"
        )


def smooth(lrs: Sequence[float], losses: Sequence[float], window: float = DEFAULT_WINDOW) -> tuple[float, ...]:
    """The zero-lag smoothed losses: a robust local-linear fit on ``log10(lr)``, ``window`` decades wide.

    All losses must be finite (cut the curve at the first NaN/inf first).

    >>> smooth([1e-3, 1e-2, 1e-1, 1.0], [4.0, 3.0, 2.0, 1.0])
    (4.0, 3.0, 2.0, 1.0)
    """
    return _fit([math.log10(lr) for lr in lrs], [float(v) for v in losses], window).values


def effective_window(xs: Sequence[float], window: float) -> float:
    """``window``, widened where the sweep is too sparse for it: each smoothed value rests on at least
    :data:`MIN_EFFECTIVE_POINTS` points (for Gaussian weights, about ``2√π · window · points per decade``).

    With 100 steps over 8 decades (12.5 per decade) the default 0.2 decades is kept; only short sweeps
    over wide ranges are smoothed more, where a fixed width would leave one or two points per window.
    """
    span = xs[-1] - xs[0]
    if len(xs) < 2 or span <= 0:
        return window
    density = (len(xs) - 1) / span
    return max(window, MIN_EFFECTIVE_POINTS / (2.0 * math.sqrt(math.pi) * density))


def _fit(xs: Sequence[float], ys: Sequence[float], window: float, iterations: int = 2) -> _Fit:
    """LOWESS (Cleveland 1979): Gaussian kernel in x, local linear fit, bisquare robustness iterations."""
    n = len(xs)
    robustness = [1.0] * n
    values, slopes, n_eff = [0.0] * n, [0.0] * n, [0.0] * n
    reach = 3.0 * window
    for iteration in range(iterations + 1):
        lo = 0
        for i, x0 in enumerate(xs):
            while xs[lo] < x0 - reach:
                lo += 1
            sw = swx = swy = swxx = swxy = sw2 = sw2d = sw2dd = 0.0
            j = lo
            while j < n and xs[j] <= x0 + reach:
                d = xs[j] - x0
                w = math.exp(-0.5 * (d / window) ** 2) * robustness[j]
                sw += w
                swx += w * d
                swy += w * ys[j]
                swxx += w * d * d
                swxy += w * d * ys[j]
                sw2 += w * w
                sw2d += w * w * d
                sw2dd += w * w * d * d
                j += 1
            if sw <= 0.0:
                values[i], slopes[i], n_eff[i] = ys[i], math.nan, 1.0
                continue
            mean_x, mean_y = swx / sw, swy / sw
            var_x = swxx / sw - mean_x * mean_x
            if var_x > 1e-12 * window * window:
                slope = (swxy / sw - mean_x * mean_y) / var_x
                values[i], slopes[i] = mean_y - slope * mean_x, slope
                # The fitted value is Σ l_j y_j with l_j = (w_j / Σw)(c0 + c1 d_j): its variance is σ² Σ l_j²,
                # larger at the ends of the curve, where the window is one-sided, than Σw²/(Σw)² says.
                c1 = -mean_x / var_x
                c0 = 1.0 - c1 * mean_x
                n_eff[i] = sw * sw / (c0 * c0 * sw2 + 2.0 * c0 * c1 * sw2d + c1 * c1 * sw2dd)
            else:
                values[i], slopes[i] = mean_y, math.nan
                n_eff[i] = sw * sw / sw2
        if iteration == iterations:
            break
        residuals = [abs(y - v) for y, v in zip(ys, values)]
        scales = _local_medians(xs, residuals, 2.0 * window)
        robustness = [
            (1.0 - (r / (6.0 * s)) ** 2) ** 2 if r < 6.0 * s else 0.0 if s > 0.0 else 1.0
            for r, s in zip(residuals, scales)
        ]
    return _Fit(tuple(values), tuple(slopes), tuple(n_eff), tuple(abs(y - v) for y, v in zip(ys, values)))


def _local_medians(xs: Sequence[float], values: Sequence[float], reach: float) -> list[float]:
    """The median of ``values`` over the points within ``reach`` of each point (a local, robust scale).

    Local, not global: the loss is noisier at high LR, and where it explodes the fit lags the curve by a
    similar amount at every point; a global scale would call all of those points outliers.
    """
    out, lo, hi, n = [], 0, 0, len(xs)
    for x0 in xs:
        while xs[lo] < x0 - reach:
            lo += 1
        while hi < n and xs[hi] <= x0 + reach:
            hi += 1
        out.append(statistics.median(values[lo:hi]))
    return out


def suggest_lr(
    lrs: Sequence[float],
    losses: Sequence[float],
    method: str = "default",
    *,
    window: float = DEFAULT_WINDOW,
) -> Suggestion:
    """Suggest a peak LR from a range test's raw curve.

    The curve is cut at the first NaN/inf loss and smoothed without lag (see the module's docstring). On
    the smoothed curve ``ŷ(x)``, ``x = log10(lr)``, with ``D = ŷ(first) − ŷ(lowest)`` the drop:

    - ``lr_min``: where ``ŷ`` is lowest: the edge of stability, past which the loss climbs.
    - ``lr_mid``: the middle of the descent, where ``ŷ`` has done half of the drop: the point just after the
      last one above that level before ``lr_min`` (where the descent crosses it for the last time). For an
      S-shaped descent this is its steepest point; as a level crossing far from the noise it is much steadier
      than the argmin of a derivative.
    - ``range = (lr_mid, lr_min)``: from fast progress to the edge.

    Methods:

    - ``"default"``: the middle of the range on the log axis, ``√(lr_mid · lr_min)``: past the steepest
      descent (often too timid a peak) and a safe distance below the edge. Calibration: on the digits MLP
      (cosine schedule, 8 epochs; a grid of 21 LRs, 2 seeds each, against 4 sweeps) its validation loss
      was within 0.002 (SGD) and 0.012 (AdamW) of the grid's best (0.097, 0.093); ``min_div_10`` was
      about 0.1 worse, ``valley`` 0.1-1.8 worse.
    - ``"steepest"``: where ``dŷ/dx`` is most negative on the descent (between the end of the plateau
      and ``lr_min``): fastai's ``steep`` and Lightning's PR #21171, without their lag.
    - ``"min_div_10"``: ``lr_min / 10``, "one order of magnitude before the minimum"; never below the sweep's
      first LR, where the loss was not measured (when ``lr_min`` is less than a decade into the sweep).
    - ``"valley"``: fastai's ``valley``, as a reference, reproduced exactly: its debiased EMA (β = 0.98),
      the first tenth and the last five points trimmed, the longest decreasing subsequence, and the pick at
      about half of it; on a curve whose NaN/inf comes before the trimmed first tenth, that of the curve up to it
      (fastai's sweep stops there). ``range`` and ``flags`` are still ours.

    Flags (see :data:`FLAGS`) say when the curve does not support a clean answer. A drop or a rise counts
    when it exceeds 3 standard errors of the smoothed curve (the residual noise, measured up to just past
    the minimum, at least 1e-12 of the loss's level, over the square root of the effective number of points in the
    window; so a constant loss, whose only wobble is float round-off, reads as ``flat_curve``). With no
    significant drop, ``lr`` is ``None`` if the loss rose from the start (``diverged_at_once``) or never
    moved; if it stayed flat and then rose for good (``flat_curve``, e.g. a trained model), the range is
    ``(edge / 10, edge)``, ``edge`` the LR where the rise begins, and ``lr`` depends on the method:
    ``"default"`` and ``"steepest"`` (a flat curve has no descent to be steepest on) give its middle,
    ``√(edge/10 · edge)``; ``"min_div_10"`` gives ``edge / 10``, its lower end; either answer is never below the first
    LR swept, where no loss was measured (the range keeps its lower end); ``"valley"`` gives fastai's valley of the raw
    curve, as on any curve. There, the plateau's median is the floor, its noise is measured over the whole plateau,
    and a rise counts only when it lasts at least :data:`MIN_RISE` decades.
    A curve whose bottom (the smoothed values within 3 standard errors of its lowest) spans more than
    :data:`BROAD_BOTTOM` decades is read the same way when the loss rises for good after it (flagged
    ``no_clear_valley`` too), its plateau from the bottom's first point: its lowest point lies anywhere along it
    (after a hard first batch, at LRs too small to have lowered the loss), no edge.

    Args:
        lrs: the LR of each point, positive and strictly increasing.
        losses: the raw loss of each point (NaN/inf allowed: the curve is cut there).
        method: one of :data:`METHODS`.
        window: the smoothing width in decades of LR (> 0).

    Returns:
        A :class:`Suggestion`.

    Raises:
        ValueError: for an unknown method, a window that is not positive and finite, lengths that differ, LRs
            that are not positive, finite and strictly increasing, or a number too large for a float.
        TypeError: for ``lrs`` or ``losses`` that are not 1-d sequences of numbers (lists, tuples, arrays or 1-d
            tensors, read as plain floats; a mapping such as ``{lr: loss}`` or a set is not), or a ``window`` that
            is no Python number.

    >>> from lr_callbacks.finder.ramp import sweep_lrs
    >>> lrs = sweep_lrs(1e-5, 10.0, 91)
    >>> losses = [2.0 - math.tanh(math.log10(lr) + 3.0) + (lr / 0.5) ** 2 for lr in lrs]
    >>> s = suggest_lr(lrs, losses)
    >>> [round(math.log10(v), 2) for v in (s.lr, *s.range)]
    [-2.1, -3.0, -1.2]
    >>> round(math.log10(suggest_lr(lrs, losses, "steepest").lr), 2)
    -3.0
    >>> suggest_lr([], []).flags
    ('empty',)
    """
    lrs, losses = _as_floats("lrs", lrs), _as_floats("losses", losses)
    _check(lrs, losses, method, window)
    n_all = len(losses)
    if n_all == 0:
        return Suggestion(None, None, ("empty",), method)
    cut = next((i for i, v in enumerate(losses) if not math.isfinite(v)), n_all)
    found = ["nonfinite"] if cut < n_all else []
    if cut < MIN_POINTS:
        return Suggestion(None, None, _ordered(["too_short", *found]), method, (math.nan,) * n_all)
    xs = [math.log10(lr) for lr in lrs[:cut]]
    ys = [float(v) for v in losses[:cut]]
    window = effective_window(xs, window)
    fit = _fit(xs, ys, window)
    smoothed = fit.values + (math.nan,) * (n_all - cut)
    lr, lr_range, lr_steep, shape_flags = _analyse(lrs[:cut], xs, fit, window, blew_up=cut < n_all)
    flags = _ordered([*found, *shape_flags])
    if lr is None or lr_range is None or method == "default":
        return Suggestion(lr, lr_range, flags, method, smoothed)
    if method == "steepest":
        lr = lr_steep if lr_steep is not None else lr
    elif method == "min_div_10":
        # no lower than the sweep's first LR: below it no loss was measured (a minimum 0.8 decades into a sweep from
        # 1e-4 answered 6.5e-5, on a clean curve, with no flag)
        lr = max(lr_range[1] / 10.0, lrs[0])
    else:
        lr = _fastai_valley(lrs[:n_all], losses)
        if cut < n_all and not lr < lrs[cut]:
            # The NaN/inf came before fastai's trimmed first tenth, so the trimmed curve began after it: its valley was
            # NaN, or an LR where the loss was inf (300 points cut at the 20th: NaN). fastai stops its sweep at such a
            # point, so its valley is that of the curve up to it.
            lr = _fastai_valley(lrs[:cut], losses[:cut])
    return Suggestion(lr, lr_range, flags, method, smoothed)


def _analyse(
    lrs: Sequence[float], xs: Sequence[float], fit: _Fit, window: float, blew_up: bool = False
) -> tuple[float | None, tuple[float, float] | None, float | None, list[str]]:
    """``(suggestion, range, lr_steep, flags)`` from the smoothed curve; ``blew_up``: the curve was cut where the
    loss became NaN/inf, so its last point is the edge, not a loss still falling at max_lr."""
    values, n = fit.values, len(xs)
    i_min = min(range(n), key=values.__getitem__)
    # The noise, from the residuals up to just past the minimum: beyond, where the loss explodes, the fit
    # lags the curve and its residuals are lack of fit, not noise.
    end = max(MIN_POINTS, next((i for i in range(i_min, n) if xs[i] > xs[i_min] + 2.0 * window), n))
    # A constant loss leaves residuals of float round-off only (1e-17 on a loss of 0.3): a noise that small read a
    # constant curve's round-off as a descent, and suggested an LR. The floor reads it as flat.
    floor = _NOISE_FLOOR * statistics.median(abs(v) for v in values)
    fit = replace(fit, noise=max(floor, 1.4826 * statistics.median(fit.residuals[:end])), noise_floor=floor)
    se_start, se_min = fit.se(0), fit.se(i_min)
    drop = values[0] - values[i_min]
    if drop <= _Z * math.hypot(se_start, se_min):
        lr, lr_range, flags = _no_descent(lrs, xs, fit, window, i_min)
        return lr, lr_range, None, flags
    # The descent: from the last point still within 10% of the drop of the start, to the minimum. Its
    # midpoint (where half the drop is done) is the range's lower end: for a sigmoid-like descent it is
    # the steepest point, and it is a level crossing far from the noise, not the argmin of a derivative.
    # Crossings are taken as the last point above the level (+1), not the first below it: the loss is
    # noisier on the plateau (it is higher there) than near the bottom, so the last crossing is the stabler.
    # A value within float round-off of a level is at it, not above it; a slope within round-off of the steepest is as
    # steep (the first wins): on a straight line, whose points fall on the levels and share one slope, the round-off
    # of the smoothing chose, and multiplying the loss by 1000 moved the answer a point (31.6 to 42.2). The tolerance
    # is a tenth of the noise floor (at most a tenth of the drop, so a point above half of it remains), scaled as the
    # loss is.
    tie = min(0.1 * fit.noise_floor, 0.1 * drop)
    i_mid = 1 + max(i for i in range(i_min) if values[i] > values[0] - 0.5 * drop + tie)
    i_top = max(i for i in range(i_mid) if values[i] >= values[0] - 0.1 * drop - tie)
    slopes = [i for i in range(i_top, i_min + 1) if not math.isnan(fit.slopes[i])]
    steepest = min((fit.slopes[i] for i in slopes), default=math.nan)
    i_steep = next((i for i in slopes if fit.slopes[i] <= steepest + tie / window), i_mid)
    flags = []
    # A curve cut at a NaN/inf ends where the loss blew up: its lowest point at the cut is the edge, and the flag's
    # advice (raise max_lr) would send the next sweep further into the blow-up.
    if i_min == n - 1 and not blew_up:
        flags.append("min_at_end")
    bottom = [x for x, v in zip(xs, values) if v <= values[i_min] + _Z * se_min]
    broad = bottom[-1] - bottom[0] > BROAD_BOTTOM
    if broad:
        # A plateau (with a dip where it begins: a hard first batch, a lucky stretch), not a valley: its lowest
        # point is anywhere along it. Read as the edge, it put answers 10-10,000x below the best (an autoencoder's
        # noisy sweep, a ViT's flat one). When the loss rises for good after it, the edge is where that rise begins,
        # as on a flat curve; without such a rise (the sweep ended on the plateau) the valley's answer stands.
        # The plateau is read from where the bottom begins: the descent before it (a real one, not one batch) is
        # no part of its level. Read from the sweep's start, a descent longer than the plateau put its level at
        # the descent's median and the edge far up the rise: the taller the descent, the higher the answer.
        i_bottom = next(i for i, v in enumerate(values) if v <= values[i_min] + _Z * se_min)
        flat_lr, flat_range, flat = _no_descent(lrs, xs, fit, window, i_min, i_bottom)
        if flat_lr is not None and flat == ["flat_curve"]:
            return flat_lr, flat_range, None, [*flat, "no_clear_valley"]
    if broad or drop <= 2.0 * _Z * math.hypot(se_start, se_min):
        flags.append("no_clear_valley")
    lower, upper = lrs[i_mid], lrs[i_min]
    return _middle(lower, upper), (lower, upper), lrs[i_steep], flags


def _middle(lower: float, upper: float) -> float:
    """The geometric middle of a range: halfway on the log axis.

    ``sqrt(lower * upper)`` wherever that product is finite and normal; beyond (LRs near 1e300 or subnormal), the
    product overflowed to inf or underflowed to 0 and was answered as the LR, so the roots are taken apart.
    """
    product = lower * upper
    if product >= sys.float_info.min and math.isfinite(product):
        return math.sqrt(product)
    return math.sqrt(lower) * math.sqrt(upper)


def _no_descent(
    lrs: Sequence[float], xs: Sequence[float], fit: _Fit, window: float, i_min: int, start: int = 0
) -> tuple[float | None, tuple[float, float] | None, list[str]]:
    """No significant drop: a flat curve (maybe rising later), or one that rose from the start.

    The edge of a flat curve is where a lasting rise above the plateau begins (:func:`_rise_start`); the plateau
    begins at point ``start`` (a broad bottom's first point, after the descent to it).
    """
    i_rise = _rise_start(xs, fit, start)
    if i_rise is None:
        return None, None, ["flat_curve"]
    if xs[i_rise] - xs[0] <= 4.0 * window:
        return None, None, ["diverged_at_once"]
    edge = lrs[i_rise - 1]
    # no lower than the sweep's first LR, where no loss was measured: with an edge less than half a decade into the
    # sweep (a narrow window on a short one), the middle fell below it (0.77 from a sweep over 1..10, edge 2.4)
    return max(_middle(edge / 10.0, edge), lrs[0]), (edge / 10.0, edge), ["flat_curve"]


def _rise_start(xs: Sequence[float], fit: _Fit, start: int = 0) -> int | None:
    """Where a flat curve's lasting rise begins: the first point ``i`` from which every smoothed value stands
    more than 3 standard errors above the plateau before it, for at least :data:`MIN_RISE` decades; ``None``
    when there is no such rise.

    The plateau's level is the median of its smoothed values (not their minimum: a lucky stretch of easy
    batches would read the ordinary plateau as a rise), and its noise is measured over the whole plateau;
    the standard error of that level is the smallest standard error of a smoothed value on it. The plateau runs
    from point ``start`` (0 for a flat curve).
    """
    values, n = fit.values, len(xs)
    last = n - 1
    for i in range(start + 1, n):  # the first start whose rise holds to the end wins
        if xs[last] - xs[i] < MIN_RISE:
            return None
        floor = statistics.median(values[start:i])
        noise = (
            max(fit.noise_floor, 1.4826 * statistics.median(fit.residuals[start:i]))
            if i - start >= MIN_POINTS
            else fit.noise
        )
        se_floor = min(noise / math.sqrt(fit.n_eff[j]) for j in range(start, i))
        if all(values[j] - floor > _Z * math.hypot(noise / math.sqrt(fit.n_eff[j]), se_floor) for j in range(i, n)):
            return i
    return None


def _fastai_valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai 2.7 ``lr_find`` + ``valley``, step for step (``fastai/callback/schedule.py``)."""
    smoothed, average = [], 0.0
    for count, loss in enumerate(losses, start=1):
        average = 0.98 * average + 0.02 * loss
        smoothed.append(average / (1.0 - 0.98**count))
    start, end = len(losses) // 10, len(losses) - 5
    lrs, smoothed = list(lrs[start:end]), smoothed[start:end]
    cut = next((i for i, v in enumerate(smoothed) if math.isnan(v)), len(smoothed))
    lrs, smoothed = lrs[:cut], smoothed[:cut]
    if not smoothed:
        return lrs[0] if lrs else math.nan
    return valley_rule(lrs, smoothed)


def valley_rule(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``valley`` rule, line for line: the longest valley's start plus int(L/3) + int(L/6).

    The valley is the longest strictly decreasing subsequence of ``losses`` (fastai smooths them first).

    >>> valley_rule([1, 2, 3, 4, 5, 6, 7], [5, 4, 3, 2, 1, 0, 9])
    3.0
    """
    n = len(losses)
    if n == 0:
        raise ValueError("valley_rule needs at least one point")
    max_start = max_end = 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])


def _ordered(flags: Sequence[str]) -> tuple[str, ...]:
    return tuple(name for name in FLAGS if name in flags)


def _as_floats(name: str, values: object) -> list[float]:
    """``values`` (a list, a numpy array, a 1-d tensor, …) as plain floats.

    Before, the values went through as they were: from tensors (losses collected as ``loss.detach()``), the
    :class:`Suggestion`'s ``range`` (and ``lr`` for ``"steepest"`` and ``"min_div_10"``) came back as 0-d tensors,
    which ``LRSchedule(peak_lrs=...)`` refuses and ``json`` cannot write; a value that is no number failed deep in
    the analysis with a message that named neither the argument nor the point.

    >>> _as_floats("lrs", (1, 0.5))
    [1.0, 0.5]

    A mapping (``{lr: loss}``) or a set is refused: ``list()`` of a dict is its keys, and of a set an order of its
    own. Before, ``suggest_lr(curve, losses)`` for a ``curve`` kept as ``{lr: loss}`` read the LRs silently, and
    ``suggest_lr(lrs, curve)`` took the LRs for the losses.

    Raises:
        TypeError: for something that is not a sequence of numbers; the message names the argument and the point.
    """
    if isinstance(values, Mapping):
        raise TypeError(
            f"suggest_lr: `{name}` must be a sequence of numbers, one per point, got a {type(values).__name__}, which "
            "would be read by its keys; for a curve kept as {lr: loss}, pass "
            "suggest_lr(list(curve), list(curve.values()))"
        )
    if isinstance(values, Set):
        raise TypeError(
            f"suggest_lr: `{name}` must be a sequence of numbers, one per point, got a {type(values).__name__}, which "
            "has no order; pass a list, the points sorted by LR and the losses in the same order"
        )
    shape = getattr(values, "shape", None)
    if shape is not None and math.prod(shape[1:]) != 1:  # before: "`lrs[0]` must be a number", and the whole row
        raise TypeError(
            f"suggest_lr: `{name}` must be 1-d, one value per point, got a {type(values).__name__} of shape "
            f"{tuple(shape)}; flatten it (.ravel() for an array, .flatten() for a tensor)"
        )
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"suggest_lr: `{name}` must be a sequence of numbers (a list, an array or a 1-d tensor), got {values!r}"
        ) from None
    floats = []
    for i, value in enumerate(items):
        try:
            if isinstance(value, (bool, str, bytes)):
                raise TypeError
            floats.append(float(value))
        except OverflowError:  # before: an OverflowError from float(), with neither the argument nor the point
            raise ValueError(
                f"suggest_lr: `{name}[{i}]` is a number too large for a float ({type(value).__name__} of "
                f"{len(str(value))} characters); pass float('inf') for a loss that blew up"
            ) from None
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several elements
            raise TypeError(f"suggest_lr: `{name}[{i}]` must be a number, got {value!r}") from None
    return floats


def _check(lrs: Sequence[float], losses: Sequence[float], method: str, window: float) -> None:
    if method not in METHODS:
        raise ValueError(f"suggest_lr: unknown `method` {method!r}; choose one of: {', '.join(map(repr, METHODS))}")
    if isinstance(window, bool) or not isinstance(window, (int, float)):
        # before: np.float32(0.3) was refused as "must be a positive number", which it is, with no way out
        raise TypeError(
            f"suggest_lr: `window` must be a positive number of decades of LR, such as 0.2; got {window!r}"
            f"{foreign_scalar(window, 'float')}"
        )
    # an int is finite (math.isfinite(10**400) raised an OverflowError): check_window refuses it, as any above 1
    if not window > 0 or (isinstance(window, float) and not math.isfinite(window)):
        raise ValueError(
            f"suggest_lr: `window` must be a positive number of decades of LR, such as 0.2; got {window!r}"
        )
    check_window(window, "suggest_lr")
    if len(lrs) != len(losses):
        raise ValueError(f"suggest_lr: `lrs` and `losses` must have the same length, got {len(lrs)} and {len(losses)}")
    for i, lr in enumerate(lrs):
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"suggest_lr: every LR must be positive and finite; lrs[{i}] is {lr!r}")
        if i and lr <= lrs[i - 1]:
            raise ValueError(
                f"suggest_lr: `lrs` must be strictly increasing (a range test's ramp); lrs[{i}]={lr!r} <= lrs[{i - 1}]="
                f"{lrs[i - 1]!r}: sort the points by LR, losses with them, and keep one point per LR"
            )
