"""The finder's pure analysis: the ramp, the stop rule and the suggestion, on made-up curves.

The curves are sigmoid descents centred at a known LR followed by an explosion, as in research
``lr_finder_anchors.md`` §10.3, so that each feature's true position is known.
"""

from __future__ import annotations

import itertools
import json
import math
import pickle
import random
import statistics

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lr_callbacks import FinderResult, Suggestion, Trial, suggest_lr
from lr_callbacks.finder.analysis import FLAGS, METHODS, effective_window, smooth
from lr_callbacks.finder.ramp import diverged, sweep_lrs
from lr_callbacks.finder.result import Probe, ProbeAttempt


def curve(lrs, centre=1e-3, explode=0.3, noise=0.0, seed=0, scale=1.0, offset=0.0):
    """A descent of 2 (a tanh centred at ``centre``) then a quadratic explosion around ``explode``."""
    rng = random.Random(seed)
    out = []
    for lr in lrs:
        x = math.log10(lr)
        y = 2.0 - math.tanh(2.0 * (x - math.log10(centre))) + (lr / explode) ** 2 + rng.gauss(0.0, noise)
        out.append(scale * y + offset)
    return out


def swept(min_lr=1e-7, max_lr=10.0, n=100, threshold=1.0, **kwargs):
    """A sweep as the callback records it: cut where the stop rule fires."""
    lrs = sweep_lrs(min_lr, max_lr, n)
    losses = curve(lrs, **kwargs)
    for i in range(1, len(losses) + 1):
        if diverged(losses[:i], threshold):
            return lrs[:i], losses[:i]
    return lrs, losses


def log10(value):
    return math.log10(value)


# --- the ramp --------------------------------------------------------------------------------------------


def test_the_exponential_ramp_is_even_on_the_log_axis_from_its_first_step():
    lrs = sweep_lrs(1e-8, 1.0, 9)
    assert lrs == (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    ratios = [b / a for a, b in itertools.pairwise(lrs)]
    assert ratios == pytest.approx([10.0] * 8, rel=1e-12)  # Lightning's first step is 1.445×, then 1.202×


def test_the_linear_ramp_and_its_end_points():
    assert sweep_lrs(0.1, 0.5, 5, "linear") == (0.1, 0.2, 0.3, 0.4, 0.5)
    lrs = sweep_lrs(3e-7, 7.0, 101)
    assert lrs[0] == 3e-7 and lrs[-1] == 7.0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1e-3, 1.0, 10, "log"), r"unknown `mode` 'log'; choose one of: 'exponential', 'linear'"),
        ((1e-3, 1.0, 1), r"`num_steps` must be >= 2, got 1"),
        ((1.0, 1e-3, 10), r"`min_lr` must be > 0 and below `max_lr`, got min_lr=1.0, max_lr=0.001"),
        ((0.0, 1.0, 10), r"`min_lr` must be > 0 and below `max_lr`, got min_lr=0.0"),
    ],
)
def test_bad_ramps_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        sweep_lrs(*args)


# --- the stop rule ---------------------------------------------------------------------------------------


def first_stop(losses, threshold=1.0):
    return next((i for i in range(1, len(losses) + 1) if diverged(losses[:i], threshold)), None)


def test_the_stop_rule_fires_when_the_loss_has_given_back_threshold_times_its_gain():
    plateau = [3.0 + 0.001 * (-1) ** i for i in range(10)]
    descent = [3.0 - 0.25 * i for i in range(1, 11)]  # to 0.5
    rise = [0.5 + 0.25 * i for i in range(1, 20)]  # back up, past 3.0
    losses = plateau + descent + rise
    # start 3.0 and best 0.5 (medians of 5): it stops when the median of the last 5 exceeds 3.0, or 1.75
    for threshold, level in [(1.0, 3.0), (0.5, 1.75)]:
        stop = first_stop(losses, threshold)
        assert statistics.median(losses[stop - 5 : stop]) > level >= statistics.median(losses[stop - 6 : stop - 1])
    assert first_stop(losses, threshold=None) is None


def test_the_stop_rule_is_unmoved_by_scale_and_offset_and_works_for_negative_losses():
    lrs = sweep_lrs(1e-7, 10.0, 100)
    losses = curve(lrs, noise=0.05, seed=3)
    where = first_stop(losses)
    assert where is not None and 60 < where < 100
    for scale, offset in [(100.0, 0.0), (1e-3, 0.0), (1.0, -50.0), (7.0, -1e4)]:
        assert first_stop([scale * v + offset for v in losses]) == where


def test_a_k_times_best_rule_breaks_where_ours_does_not():
    """fastai/Lightning stop at ``loss > 4 × best``: for losses near zero that fires on noise, and for negative
    losses it fires at once."""
    losses = [0.010, 0.008, 0.012, 0.006, 0.011, 0.002, 0.009, 0.010, 0.008, 0.011, 0.009, 0.010]
    assert first_stop(losses) is None
    assert any(v > 4 * min(losses[: i + 1]) for i, v in enumerate(losses))
    negative = [-5.0, -5.2, -5.1, -5.3, -5.4, -5.35, -5.5, -5.45]
    assert first_stop(negative) is None


def test_the_stop_rule_ignores_a_spike_and_stops_on_nan_and_inf_at_once():
    flat = [1.0, 1.01, 0.99, 1.0, 0.98, 1.02, 1.0, 0.99]
    assert first_stop([*flat, 50.0, *flat]) is None
    assert first_stop([*flat[:2], float("nan")]) == 3
    assert first_stop([float("inf")], threshold=None) == 1


def test_a_flat_noisy_loss_does_not_stop_the_sweep():
    """A flat curve whose first points happen to be calm (a digits CNN under SGD at LRs below 1e-4, seen in the
    benchmark): the stop rule must not read its later noise as a rise."""
    seen = [2.3136, 2.2925, 2.2861, 2.2881, 2.2947, 2.2965, 2.3032, 2.2999, 2.3232, 2.3090, 2.3112, 2.3153, 2.3113]
    seen += [2.2966, 2.2782, 2.2998, 2.2759, 2.2807, 2.2937, 2.2841, 2.2739, 2.2790, 2.2921, 2.3137, 2.3147]
    seen += [2.2852, 2.2903, 2.2791, 2.2958, 2.2989, 2.3002, 2.3016, 2.3043, 2.3007, 2.3094, 2.3092, 2.3052, 2.3134]
    assert first_stop(seen) is None
    for seed in range(20):
        rng = random.Random(seed)
        assert first_stop([2.3 + rng.gauss(0, 0.012) for _ in range(100)]) is None, seed


def test_a_flat_start_whose_lowest_point_comes_early_does_not_stop_the_sweep():
    """A LoRA MiniLM's sweep at 1e-7 to 4e-6 (no update there changes anything): the lowest median at the 5th
    point left four changes, calm by chance, to measure the noise; it stopped at the 9th point. On 3,000 orders of
    220 such losses it stopped within 40 points 1.0% of the time, now 0.1% (Gaussian noise: 0.8%, now 0.3%)."""
    seen = [1.3862, 1.3972, 1.3996, 1.3856, 1.3828, 1.4940, 1.4180, 1.4604, 1.4314]
    assert first_stop(seen) is None


def test_a_loss_that_rises_from_the_start_stops_once_above_its_noise():
    rng = random.Random(0)
    losses = [1.0 + 0.02 * i * i / 10 + rng.gauss(0, 0.01) for i in range(40)]
    where = first_stop(losses)
    assert where is not None and where < 40


# --- smoothing -------------------------------------------------------------------------------------------


def test_smoothing_keeps_a_straight_line_and_has_no_lag():
    lrs = sweep_lrs(1e-6, 1.0, 61)
    line = [3.0 - 0.5 * log10(lr) for lr in lrs]
    assert smooth(lrs, line) == pytest.approx(line, rel=1e-9)
    bump = [math.exp(-(((log10(lr) + 3.0) / 0.5) ** 2)) for lr in lrs]
    smoothed = smooth(lrs, bump)
    assert log10(lrs[max(range(61), key=smoothed.__getitem__)]) == pytest.approx(-3.0)  # an EMA moves it right


def test_the_window_is_widened_only_for_sparse_sweeps():
    dense = [log10(lr) for lr in sweep_lrs(1e-7, 10.0, 100)]
    sparse = [log10(lr) for lr in sweep_lrs(1e-7, 10.0, 20)]
    assert effective_window(dense, 0.2) == 0.2
    assert effective_window(sparse, 0.2) == pytest.approx(5.0 / (2 * math.sqrt(math.pi) * 19 / 8))


# --- the suggestion: position, invariance ----------------------------------------------------------------


def test_on_a_clean_curve_the_features_sit_where_they_are():
    lrs, losses = swept(n=200)
    s = suggest_lr(lrs, losses)
    lower, upper = s.range
    assert log10(lower) == pytest.approx(-3.0, abs=0.05)  # the middle of the descent
    assert log10(suggest_lr(lrs, losses, "steepest").lr) == pytest.approx(-3.0, abs=0.05)
    exact_min = min(lrs, key=lambda lr: curve([lr])[0])
    assert log10(upper) == pytest.approx(log10(exact_min), abs=0.1)
    assert s.lr == pytest.approx(math.sqrt(lower * upper)) and s.flags == ()
    assert suggest_lr(lrs, losses, "min_div_10").lr == pytest.approx(upper / 10)


def test_an_ema_lags_by_decades_and_our_smoothing_not_at_all():
    """fastai's and Lightning's debiased EMA (β = 0.98), computed here as they do, against ours."""
    lrs = sweep_lrs(1e-7, 10.0, 100)
    losses = curve(lrs, explode=100.0)  # no explosion within the sweep: the descent alone
    ema, average = [], 0.0
    for count, loss in enumerate(losses, start=1):
        average = 0.98 * average + 0.02 * loss
        ema.append(average / (1 - 0.98**count))

    def steepest(values):
        return log10(lrs[min(range(1, 99), key=lambda i: values[i + 1] - values[i - 1])])

    assert steepest(losses) == pytest.approx(-3.0, abs=0.05)
    assert steepest(ema) > -3.0 + 0.4  # the EMA moves the steepest point half a decade to the right
    assert steepest(smooth(lrs, losses)) == pytest.approx(-3.0, abs=0.05)


@pytest.mark.parametrize(("scale", "offset"), [(100.0, 0.0), (0.01, 0.0), (1.0, -10.0), (3.0, 1e3), (0.5, -2.5)])
@pytest.mark.parametrize("method", METHODS)
def test_the_answer_does_not_move_when_the_loss_is_scaled_or_shifted(scale, offset, method):
    lrs, losses = swept(noise=0.08, seed=1)
    base = suggest_lr(lrs, losses, method)
    moved = suggest_lr(lrs, [scale * v + offset for v in losses], method)
    assert moved.lr == pytest.approx(base.lr, rel=1e-12) and moved.flags == base.flags
    assert moved.range == pytest.approx(base.range, rel=1e-12)


@pytest.mark.parametrize("method", ["default", "steepest"])
def test_on_a_straight_line_scaling_the_loss_does_not_move_the_answer_by_a_point_of_round_off(method):
    """Found by a hypothesis sweep of adversarial curves: a loss falling by 1.25 a step over 1..100 in 9 steps
    (window=1), where the smoothed points fall on the half-drop level and share one slope. Round-off chose the
    crossing and the steepest point: multiplied by 1000, the default answer moved from 31.6 to 42.2. Now a tie is a
    tie at any scale."""
    lrs = sweep_lrs(1.0, 100.0, 9)
    line = [-1.25 * i for i in range(9)]
    answers = {scale: suggest_lr(lrs, [scale * v for v in line], method, window=1.0) for scale in (1.0, 1e3, 2.0, 7.3)}
    assert {(s.lr, s.range, s.flags) for s in answers.values()} == {(answers[1.0].lr, (10.0, 100.0), ("min_at_end",))}


def test_the_answer_does_not_move_with_the_number_of_steps():
    answers = [log10(suggest_lr(*swept(n=n)).lr) for n in (100, 300, 1000)]
    assert max(answers) - min(answers) < 0.05


def test_the_answer_does_not_move_with_the_lr_range():
    wide = suggest_lr(*swept(1e-8, 1.0, n=120)).lr
    narrow = suggest_lr(*swept(1e-6, 10.0, n=105)).lr
    assert abs(log10(wide) - log10(narrow)) < 0.05


def test_moving_the_curve_by_a_decade_and_a_half_moves_the_answer_by_as_much():
    base = suggest_lr(*swept(centre=1e-3, explode=0.3)).lr
    moved = suggest_lr(*swept(centre=10**-4.5, explode=0.3 * 10**-1.5)).lr
    assert log10(moved) - log10(base) == pytest.approx(-1.5, abs=0.06)


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e-309], ids=["near_1e300", "near_1e-300", "subnormal"])
def test_a_curve_moved_to_the_ends_of_the_float_range_answers_the_lr_moved_by_as_much(scale):
    """The answer is the range's geometric middle: taken as sqrt(lower * upper), the product overflowed to inf for
    LRs near 1e300 (an answer of inf) and underflowed to 0 for LRs near 1e-300 (an answer of 0.0, below the range)."""
    rng = random.Random(0)
    flat_lrs = sweep_lrs(1e-7, 10.0, 100)
    flat = [0.3 + (lr / 0.1) ** 2 + rng.gauss(0, 0.02) for lr in flat_lrs]  # read from its edge, (edge / 10, edge)
    for lrs, losses in (swept(centre=1e-3, explode=0.3), (flat_lrs, flat)):
        base = suggest_lr(lrs, losses)
        moved = suggest_lr([lr * scale for lr in lrs], losses)
        assert moved.range is not None and moved.flags == base.flags
        lower, upper = moved.range
        assert lower < moved.lr < upper
        assert moved.lr / scale == pytest.approx(base.lr, rel=1e-6)


def test_noise_and_spikes_move_it_little():
    clean = log10(suggest_lr(*swept()).lr)
    noisy = [log10(suggest_lr(*swept(noise=0.15, seed=s)).lr) for s in range(10)]
    assert sorted(noisy)[5] == pytest.approx(clean, abs=0.15)
    lrs, losses = swept()
    spiky = [v + (3.0 if i % 9 == 4 else 0.0) for i, v in enumerate(losses)]
    assert log10(suggest_lr(lrs, spiky).lr) == pytest.approx(clean, abs=0.1)


# --- the edges and the flags -----------------------------------------------------------------------------


def test_empty_all_nan_and_too_short_curves_are_flagged():
    assert suggest_lr([], []) == Suggestion(None, None, ("empty",), "default")
    nan = float("nan")
    all_nan = suggest_lr(sweep_lrs(1e-3, 1.0, 20), [nan] * 20)
    assert all_nan.lr is None and all_nan.flags == ("too_short", "nonfinite")
    short = suggest_lr(sweep_lrs(1e-3, 1.0, 7), [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert short.lr is None and short.flags == ("too_short",)


def test_a_nan_tail_is_cut_and_flagged():
    lrs, losses = swept()
    tail = [*losses, float("nan"), float("inf")]
    more = [*lrs, lrs[-1] * 1.1, lrs[-1] * 1.2]
    s = suggest_lr(more, tail)
    assert s.lr == suggest_lr(lrs, losses).lr and s.flags == ("nonfinite",)
    assert math.isnan(s.smoothed[-1]) and len(s.smoothed) == len(tail)


def test_negative_losses_gaussian_nll_style():
    lrs, losses = swept(noise=0.05, seed=4)
    nll = [v - 10.0 for v in losses]  # the whole curve below zero
    assert max(nll) < 0 and suggest_lr(lrs, nll).lr == suggest_lr(lrs, losses).lr


def test_a_flat_curve_gives_no_answer_or_a_tenth_of_where_it_rises():
    lrs = sweep_lrs(1e-7, 10.0, 100)
    rng = random.Random(0)
    flat = [0.3 + rng.gauss(0, 0.02) for _ in lrs]
    assert suggest_lr(lrs, flat) == Suggestion(None, None, ("flat_curve",), "default", suggest_lr(lrs, flat).smoothed)
    trained = [0.3 + (lr / 0.1) ** 2 + rng.gauss(0, 0.02) for lr in lrs]  # a trained model: flat, then explodes
    s = suggest_lr(lrs, trained)
    assert s.flags == ("flat_curve",)
    lower, upper = s.range
    assert upper / lower == pytest.approx(10.0) and s.lr == pytest.approx(math.sqrt(lower * upper))
    assert -2.5 < log10(upper) < -0.5


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "losses",
    [
        [0.3] * 100,  # 0.3 is no binary fraction: the smoothing's round-off (1e-17) read as a valley at 1.7e-7
        [-0.3] * 100,
        [2.5 - (i // 10) * 4.4e-16 for i in range(100)],  # falling by one ulp a decade: an answer of 0.045, no flag
        [2.5 + (i // 10) * 4.4e-16 for i in range(100)],  # rising by one ulp a decade: an edge at 0.0071
    ],
    ids=["0.3", "-0.3", "ulp_steps_down", "ulp_steps_up"],
)
def test_a_constant_loss_is_a_flat_curve_with_no_answer_not_an_answer_from_round_off(losses, method):
    s = suggest_lr(sweep_lrs(1e-7, 10.0, 100), losses, method)
    assert s.lr is None and s.range is None and s.flags == ("flat_curve",)


def test_on_a_flat_curve_each_method_answers_as_the_docstring_says():
    """The range is ``(edge / 10, edge)`` for every method; the LR is its middle for ``default`` and ``steepest``,
    its lower end for ``min_div_10``, and fastai's valley of the raw curve, one of the sweep's LRs, for ``valley``."""
    lrs = sweep_lrs(1e-7, 10.0, 100)
    rng = random.Random(0)
    trained = [0.3 + (lr / 0.1) ** 2 + rng.gauss(0, 0.02) for lr in lrs]
    answers = {method: suggest_lr(lrs, trained, method) for method in METHODS}
    assert {(s.range, s.flags) for s in answers.values()} == {(answers["default"].range, ("flat_curve",))}
    lower, upper = answers["default"].range
    assert answers["default"].lr == answers["steepest"].lr == pytest.approx(math.sqrt(lower * upper), rel=1e-12)
    assert answers["min_div_10"].lr == pytest.approx(lower, rel=1e-12)
    assert answers["valley"].lr in lrs and answers["valley"].lr not in (lower, answers["default"].lr)


def test_min_div_10_never_answers_below_the_sweeps_first_lr():
    """A minimum less than a decade into the sweep: lr_min / 10 lay below min_lr, where no loss was measured (6.5e-5
    from a sweep from 1e-4, on a clean curve; 6.4e-8 from a flat one swept from 1e-7)."""
    lrs = sweep_lrs(1e-4, 1.0, 60)
    s = suggest_lr(lrs, curve(lrs, centre=1e-4, explode=3e-3), "min_div_10")
    assert s.flags == () and s.range[1] < 10 * lrs[0] and s.lr == lrs[0]
    lrs = sweep_lrs(1e-7, 10.0, 100)
    rng = random.Random(0)
    trained = [0.3 + (lr / 5e-6) ** 2 + rng.gauss(0, 0.02) for lr in lrs]  # flat, then a rise soon after min_lr
    s = suggest_lr(lrs, trained, "min_div_10")
    assert s.flags == ("flat_curve",) and s.range[0] < lrs[0] and s.lr == lrs[0]
    assert suggest_lr(lrs, curve(lrs), "min_div_10").lr == suggest_lr(lrs, curve(lrs)).range[1] / 10  # unclamped


@pytest.mark.parametrize("method", ["default", "steepest"])
def test_on_a_flat_curve_whose_edge_is_near_min_lr_the_answer_is_never_below_the_sweeps_first_lr(method):
    """Found by a hypothesis sweep of adversarial curves: a sweep over 1..10 in 14 steps at window=0.0625, flat up to a
    rise whose edge is 2.42, 0.38 decades in. The middle of (edge / 10, edge) was 0.77, below min_lr, where no loss
    was measured; it is min_lr, as min_div_10's answer is. The range keeps its documented (edge / 10, edge)."""
    lrs = sweep_lrs(1.0, 10.0, 14)
    losses = [max(0.0, i / 13 - 0.7) ** 2 for i in range(14)]
    s = suggest_lr(lrs, losses, method, window=0.0625)
    assert s.flags == ("flat_curve",) and s.range == pytest.approx((0.2424462, 2.424462), rel=1e-6)
    assert s.lr == lrs[0] == suggest_lr(lrs, losses, "min_div_10", window=0.0625).lr


def test_a_loss_that_rises_from_the_start_is_flagged_diverged_at_once():
    lrs = sweep_lrs(1e-2, 10.0, 40)
    s = suggest_lr(lrs, [1.0 + (lr / 0.05) for lr in lrs])
    assert s.lr is None and s.flags == ("diverged_at_once",)


def test_a_loss_still_falling_at_max_lr_is_flagged_min_at_end():
    lrs = sweep_lrs(1e-7, 1e-2, 60)
    s = suggest_lr(lrs, curve(lrs))
    assert "min_at_end" in s.flags and s.range[1] == lrs[-1]


@pytest.mark.parametrize("method", METHODS)
def test_a_curve_cut_at_nan_while_still_falling_is_not_flagged_min_at_end(method):
    """The loss still fell at 0.0085 and was NaN from 0.01 on: its end is a blow-up, not a loss still falling at
    max_lr (before, the flags read ("nonfinite", "min_at_end"): "raise max_lr", deeper into the blow-up)."""
    lrs = sweep_lrs(1e-7, 10.0, 100)
    losses = [v if lr < 1e-2 else math.nan for lr, v in zip(lrs, curve(lrs))]
    finite = next(i for i, v in enumerate(losses) if math.isnan(v))
    s = suggest_lr(lrs, losses, method)
    assert s.flags == ("nonfinite",) and s.range[1] == lrs[finite - 1]  # the edge: the last finite point
    uncut = suggest_lr(lrs[:finite], losses[:finite], method)  # the same points, as a sweep that ended there
    assert uncut.flags == ("min_at_end",) and uncut.range == s.range
    if method != "valley":  # fastai's valley reads the raw curve, NaN tail included
        assert s.lr == uncut.lr


def test_a_broad_bottom_is_flagged_no_clear_valley():
    lrs = sweep_lrs(1e-7, 10.0, 100)
    broad = [2.0 - math.tanh(2.0 * (log10(lr) + 5.0)) + (lr / 0.5) ** 2 for lr in lrs]  # flat from 1e-4 to 0.1
    assert "no_clear_valley" in suggest_lr(lrs, broad).flags


def test_a_plateau_with_a_hard_first_batch_is_read_as_a_flat_curve_not_as_a_valley():
    """A model that learns too slowly for the sweep to show it (an autoencoder on heavy-tailed pixels): a hard
    batch at the sweep's first LR, then the plateau's noise up to a rise that passes it at about 0.03. The drop
    from that first batch is significant, but the bottom it reaches spans five decades: read as a valley, its
    lowest point (a lucky stretch at LRs no model learns at) was the edge, and the answer 10-10,000x below the
    best. It is read as a flat curve: the edge is where the lasting rise begins."""
    lrs = sweep_lrs(1e-7, 1.0, 64)
    rng = random.Random(2)
    losses = [0.9 + abs(rng.gauss(0, 0.25)) + (lr / 0.1) ** 2 for lr in lrs]
    losses[0] = 1.8  # the first batch
    s = suggest_lr(lrs, losses)
    assert s.flags == ("flat_curve", "no_clear_valley")
    lower, upper = s.range
    assert upper / lower == pytest.approx(10.0) and -2.0 < log10(upper) < -1.0  # the rise is above the noise
    assert s.lr > 1e-3  # before: 6.0e-06, from the first batch to the plateau's lowest point


def test_a_broad_bottom_after_a_real_descent_has_its_edge_where_the_rise_begins_whatever_the_descents_height():
    """A real descent over 1e-8..1e-4, a floor up to a rise (lr/0.1)² (noise 0.01), read as a flat curve: the
    plateau's level is the floor's, not the descent's. Before, it was the median from the sweep's start, at the
    descent's level when the descent had more points than the floor: the edge was where the loss had risen 2, 9
    and 36 times its noise for a descent of 0.2, 2 and 20 (answers 4.7e-3, 9.3e-3, 1.9e-2)."""
    lrs = sweep_lrs(1e-9, 10.0, 100)
    answers = []
    for height in (0.2, 2.0, 20.0):
        rng = random.Random(0)
        losses = [
            1.0 + height * (1.0 - math.tanh(2.0 * (log10(lr) + 6.0))) / 2.0 + (lr / 0.1) ** 2 + rng.gauss(0, 0.01)
            for lr in lrs
        ]
        s = suggest_lr(lrs, losses)
        assert s.flags == ("flat_curve", "no_clear_valley")
        assert (s.range[1] / 0.1) ** 2 < 0.01  # the edge: where the rise is still within the noise
        answers.append(s.lr)
    assert answers[0] == answers[1] == answers[2]


def test_a_broad_bottom_the_sweep_ends_on_keeps_the_valleys_answer():
    """Without a lasting rise after the bottom (the sweep ended on it, as a short one on a small model does), the
    plateau has no edge to read: the valley's answer stands, flagged. Read as a flat curve, it had none."""
    lrs = sweep_lrs(1e-7, 1e-1, 80)
    rng = random.Random(0)
    losses = [2.0 - math.tanh(2.0 * (log10(lr) + 5.0)) + rng.gauss(0, 0.01) for lr in lrs]  # flat from 1e-4 on
    s = suggest_lr(lrs, losses)
    assert "no_clear_valley" in s.flags and "flat_curve" not in s.flags and s.lr is not None
    lower, upper = s.range
    assert 1e-6 < lower < 1e-4 < upper and s.lr == pytest.approx(math.sqrt(lower * upper))


def test_fastai_valley_picks_about_half_way_along_the_longest_decrease():
    """A strictly decreasing run of 60 points after 10 flat ones (trimmed by fastai's first tenth)."""
    lrs = sweep_lrs(1e-5, 1.0, 100)
    losses = [10.0] * 10 + [10.0 - 0.1 * i for i in range(60)] + [4.0 + 0.5 * i for i in range(30)]
    pick = suggest_lr(lrs, losses, "valley").lr
    assert lrs.index(pick) == pytest.approx(10 + 30, abs=6)  # ½ of the valley, not the documented ⅔


@pytest.mark.parametrize("tail", [math.nan, math.inf], ids=["nan", "inf"])
def test_fastai_valley_on_a_long_sweep_cut_before_its_first_tenth_answers_an_lr_of_the_finite_curve(tail):
    """Found by a hypothesis sweep of adversarial curves: 300 points whose loss is NaN (or inf) from the 21st on.
    fastai's valley trims the first tenth (30 points), so its curve began after the cut: the answer was NaN, or
    6.3e-7, an LR where the loss was inf. fastai stops its sweep there: the valley is that of the 20 finite points."""
    lrs = sweep_lrs(1e-7, 10.0, 300)
    losses = [2.0 - 0.1 * i for i in range(20)] + [tail] * 280
    s = suggest_lr(lrs, losses, "valley")
    assert s.flags == ("nonfinite",) and s.lr == suggest_lr(lrs[:20], losses[:20], "valley").lr
    assert s.lr in lrs[:20]


def test_every_flag_is_documented():
    assert set(FLAGS) == {
        "empty",
        "too_short",
        "nonfinite",
        "diverged_at_once",
        "flat_curve",
        "no_clear_valley",
        "min_at_end",
    }


@pytest.mark.parametrize(
    ("lrs", "losses", "kwargs", "match"),
    [
        ([1e-3, 1e-2], [1.0], {}, r"`lrs` and `losses` must have the same length, got 2 and 1"),
        ([1e-3, 1e-3], [1.0, 1.0], {}, r"`lrs` must be strictly increasing"),
        ([1e-2, 1e-3], [1.0, 1.0], {}, r"lrs\[1\]=0.001 <= lrs\[0\]=0.01: sort the points by LR, losses with them"),
        ([0.0, 1e-3], [1.0, 1.0], {}, r"every LR must be positive and finite; lrs\[0\] is 0.0"),
        ([1e-3, 1e-2], [1.0, 1.0], {"method": "slide"}, r"unknown `method` 'slide'; choose one of: 'default'"),
        ([1e-3, 1e-2], [1.0, 1.0], {"window": 0}, r"`window` must be a positive number of decades"),
        ([1e-3, 1e-2], [1.0, 1.0], {"window": 3}, r"`window` is the smoothing width in decades .* at most 1; got 3"),
    ],
)
def test_bad_input_is_refused(lrs, losses, kwargs, match):
    with pytest.raises(ValueError, match=f"^suggest_lr: .*{match}"):  # every message names the function it came from
        suggest_lr(lrs, losses, **kwargs)


@pytest.mark.parametrize(
    ("lrs", "losses", "kwargs", "match"),
    [
        (1e-3, [1.0], {}, r"suggest_lr: `lrs` must be a sequence of numbers .*, got 0.001"),
        ([1e-3, 1e-2], "12", {}, r"suggest_lr: `losses` must be a sequence of numbers .*, got '12'"),
        ([1e-3, 1e-2], [1.0, "0.5"], {}, r"suggest_lr: `losses\[1\]` must be a number, got '0.5'"),
        ([1e-3, 1e-2], [1.0, None], {}, r"suggest_lr: `losses\[1\]` must be a number, got None"),
        ([1e-3, 1e-2], [1.0, 1.0], {"window": True}, r"`window` must be a positive number of decades.*got True"),
    ],
)
def test_input_that_is_no_numbers_is_refused_naming_the_argument(lrs, losses, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        suggest_lr(lrs, losses, **kwargs)


@pytest.mark.parametrize("argument", ["lrs", "losses"])
def test_a_curve_kept_as_a_dict_or_a_set_is_refused_not_read_by_its_keys(argument):
    """A curve kept as ``{lr: loss}``: before, ``list()`` read its keys without a word, so ``suggest_lr(curve,
    losses)`` took the LRs and ``suggest_lr(lrs, curve)`` took the LRs for the losses (and answered); a set has an
    order of its own."""
    lrs = sweep_lrs(1e-5, 10.0, 31)
    losses = [2.0 - math.tanh(math.log10(lr) + 3.0) + (lr / 0.5) ** 2 for lr in lrs]
    curve = dict(zip(lrs, losses))
    points = {"lrs": lrs, "losses": losses}
    with pytest.raises(
        TypeError,
        match=rf"^suggest_lr: `{argument}` must be a sequence of numbers, one per point, got a dict, which would be "
        r"read by its keys; for a curve kept as \{lr: loss\}, pass "
        r"suggest_lr\(list\(curve\), list\(curve.values\(\)\)\)$",
    ):
        suggest_lr(**{**points, argument: curve})
    with pytest.raises(
        TypeError, match=rf"^suggest_lr: `{argument}` .* got a frozenset, which has no order; pass a list"
    ):
        suggest_lr(**{**points, argument: frozenset(points[argument])})
    assert suggest_lr(list(curve), list(curve.values())) == suggest_lr(lrs, losses)  # the fix the message gives


def test_a_number_too_large_for_a_float_is_refused_as_documented_not_with_an_overflow_error():
    """Found by a fuzz of invalid input: an int loss of 10**400 (or a window of 10**400) escaped as Python's bare
    "OverflowError: int too large to convert to float", an exception the docstring does not list, naming nothing."""
    with pytest.raises(ValueError, match=r"^suggest_lr: `losses\[1\]` is a number too large for a float \(int of 401 "
                       r"characters\); pass float\('inf'\) for a loss that blew up$"):  # fmt: skip
        suggest_lr([1e-3, 1e-2], [1.0, 10**400])
    with pytest.raises(ValueError, match=r"`window` is the smoothing width in decades .* at most 1; got 1000"):
        suggest_lr([1e-3, 1e-2], [1.0, 1.0], window=10**400)


@pytest.mark.parametrize("method", METHODS)
def test_tensors_and_arrays_give_a_suggestion_of_plain_floats(method):
    torch, numpy = pytest.importorskip("torch"), pytest.importorskip("numpy")
    lrs, losses = swept(centre=1e-3, explode=0.3, noise=0.0, seed=0)
    plain = suggest_lr(lrs, losses, method)
    assert plain.lr is not None
    for convert in (lambda v: torch.tensor(v, dtype=torch.float64), numpy.array):
        s = suggest_lr(convert(lrs), convert(losses), method)
        assert type(s.lr) is float and all(type(v) is float for v in s.range), (convert, s)
        assert (s.lr, s.range, s.flags) == (plain.lr, plain.range, plain.flags)


def test_arrays_of_two_dimensions_and_numpy_or_tensor_windows_are_refused_with_the_fix():
    """Before: a (1, n) array was refused as "`losses[0]` must be a number", followed by the whole row; a window of
    np.float32(0.3) as "must be a positive number", which it is. An (n, 1) column holds one value per point: read."""
    torch, numpy = pytest.importorskip("torch"), pytest.importorskip("numpy")
    lrs, losses = swept()
    for row in (numpy.array([losses]), torch.tensor([losses])):
        with pytest.raises(TypeError, match=r"^suggest_lr: `losses` must be 1-d, one value per point, got a \w+ of "
                           rf"shape \(1, {len(losses)}\); flatten it \(\.ravel\(\) .* \.flatten\(\)"):  # fmt: skip
            suggest_lr(lrs, row)
    column = torch.tensor(losses, dtype=torch.float64).reshape(-1, 1)  # one value per point, in 1-element rows
    assert suggest_lr(lrs, column) == suggest_lr(lrs, losses)
    for window in (numpy.float32(0.3), torch.tensor(0.3)):
        with pytest.raises(TypeError, match=r"^suggest_lr: `window` must be a positive number of decades of LR, .*"
                           r"\(a (numpy|torch)\.\w+\); convert it with float\(\.\.\.\) or \.item\(\)$"):  # fmt: skip
            suggest_lr(lrs, losses, window=window)
    assert suggest_lr(lrs, losses, window=float(numpy.float32(0.3))).lr is not None


@settings(max_examples=40, deadline=None)
@given(
    centre=st.floats(-6.0, -1.0),
    noise=st.floats(0.0, 0.3),
    scale=st.floats(0.01, 100.0),
    offset=st.floats(-100.0, 100.0),
    seed=st.integers(0, 10**6),
)
def test_properties_inside_the_sweep_inside_the_range_deterministic_invariant(centre, noise, scale, offset, seed):
    lrs, losses = swept(centre=10**centre, explode=10 ** (centre + 2.5), noise=noise, seed=seed)
    s = suggest_lr(lrs, losses)
    assert s == suggest_lr(lrs, losses)
    if s.lr is not None:
        assert lrs[0] <= s.range[0] <= s.lr <= s.range[1] <= lrs[-1]
    moved = suggest_lr(lrs, [scale * v + offset for v in losses])
    assert (moved.lr, moved.flags) == (pytest.approx(s.lr, rel=1e-9) if s.lr else None, s.flags)


@st.composite
def adversarial_sweeps(draw):
    """0-300 strictly increasing LRs within 1e-12..1e12, geometric or irregular, and losses of any sign and of
    magnitude 1e-30..1e30: constant, monotone, a valley, a flat start then a rise, or random, plus runs of NaN/inf."""
    n = draw(st.integers(0, 300))
    lo = draw(st.floats(-12.0, 11.0))
    hi = draw(st.floats(lo + 1e-3, 12.0))
    irregular = st.lists(st.floats(1e-3, 1.0), min_size=n, max_size=n)
    steps = draw(irregular) if draw(st.booleans()) else [1.0] * n  # geometric: even steps on the log axis
    total, done, lrs = sum(steps) or 1.0, 0.0, []
    for step in steps:
        lr = 10 ** (lo + (hi - lo) * done / total)
        if not lrs or lr > lrs[-1]:  # equal after rounding: one point per LR
            lrs.append(lr)
        done += step
    shape = draw(st.sampled_from(["constant", "up", "down", "valley", "flat_then_rise", "random"]))
    magnitude, offset = 10 ** draw(st.floats(-30.0, 30.0)), draw(st.sampled_from([0.0, 1.0, -1.0, -1e3]))
    noise, rng = draw(st.sampled_from([0.0, 0.01, 0.3])), random.Random(draw(st.integers(0, 1000)))
    losses = []
    for i in range(len(lrs)):
        t = i / max(len(lrs) - 1, 1)
        y = {"constant": 0.3, "up": t, "down": -t, "valley": (t - 0.6) ** 2, "flat_then_rise": max(0.0, t - 0.7) ** 2,
             "random": rng.random()}[shape]  # fmt: skip
        losses.append(magnitude * (y + offset + noise * rng.gauss(0.0, 1.0)))
    for start, length, value in draw(
        st.lists(st.tuples(st.integers(0, 300), st.integers(1, 30), st.sampled_from([math.nan, math.inf, -math.inf])),
                 max_size=2)
    ):  # fmt: skip
        losses[start : start + length] = [value] * len(losses[start : start + length])
    return lrs, losses


@settings(max_examples=60, deadline=None)
@given(sweep=adversarial_sweeps(), method=st.sampled_from(METHODS), window=st.floats(1e-3, 1.0))
def test_properties_on_adversarial_sweeps_an_lr_of_the_sweep_a_range_around_it_documented_flags(sweep, method, window):
    """Never an exception; the answer None or a finite LR within the sweep (on a flat curve too, whose range may
    begin a decade below its edge, under min_lr); the range ordered and ending within the sweep; for ``default``
    the answer inside the range; only documented flags, in their order; the same answer twice."""
    lrs, losses = sweep
    s = suggest_lr(lrs, losses, method, window=window)
    assert s == suggest_lr(lrs, losses, method, window=window)
    assert s.flags == tuple(name for name in FLAGS if name in s.flags) and len(s.smoothed) in (0, len(lrs))
    if s.lr is not None:
        assert math.isfinite(s.lr) and lrs[0] <= s.lr <= lrs[-1]
    if s.range is not None:
        lower, upper = s.range
        assert lower <= upper <= lrs[-1] and (lrs[0] <= lower or "flat_curve" in s.flags)
        if method == "default":
            assert lower <= s.lr <= upper


@settings(max_examples=40, deadline=None)
@given(
    sweep=adversarial_sweeps(),
    method=st.sampled_from(["default", "steepest", "min_div_10"]),
    window=st.floats(1e-3, 1.0),
    scale=st.sampled_from([2.0, 0.5, 1e3, 1e-3, 7.3]),
    shift=st.sampled_from([0.0, 1.0, -3.7]),
)
def test_scaling_and_shifting_adversarial_losses_leaves_the_answer(sweep, method, window, scale, shift):
    """As the module's docstring promises, except below its noise floor: curves whose whole variation is under 1e-6
    of their level (features within a million times float round-off) are left out. fastai's ``valley``, reproduced
    as it is, compares EMA values strictly, and round-off decides it on a constant plateau: left out too."""
    lrs, losses = sweep
    finite = [v for v in losses if math.isfinite(v)]
    level = max((abs(v) for v in finite), default=1.0)
    assume(not finite or max(finite) == min(finite) or max(finite) - min(finite) > 1e-6 * level)
    s = suggest_lr(lrs, losses, method, window=window)
    moved = suggest_lr(lrs, [scale * v + shift * level for v in losses], method, window=window)
    assert moved.flags == s.flags
    assert moved.lr == (pytest.approx(s.lr, rel=1e-9) if s.lr is not None else None)


# --- the result ------------------------------------------------------------------------------------------


def result(**kwargs):
    lrs, losses = swept(noise=0.05)
    s = suggest_lr(lrs, losses)
    fields = dict(
        lrs=lrs, losses=tuple(losses), grad_norms=tuple(1.0 for _ in lrs), suggestion=s.lr, range=s.range,
        flags=s.flags, method="default", stop_reason="diverged", smoothed=s.smoothed,
    )  # fmt: skip
    fields.update(kwargs)
    return FinderResult(**fields)


def test_the_result_round_trips_and_chooses_the_best_finite_trial():
    trials = (Trial(1e-3, 0.5, (1.0, 0.9)), Trial(2e-3, 0.3, (1.0, 0.8)), Trial(4e-3, math.inf, (1.0, math.nan)))
    r = result(trials=trials, global_step=7, epoch=2)
    assert r.chosen_lr == 2e-3
    back = FinderResult.from_dict(r.to_dict())
    assert back.to_dict() == r.to_dict()
    assert result(trials=(Trial(1e-3, math.inf),)).chosen_lr == result().suggestion


def test_the_score_of_the_trials_start_round_trips_and_an_older_result_without_it_loads():
    """``start_val_loss``/``start_se`` (what the trials were compared with) are saved and read back, shown with
    the trials; a result saved before they were kept loads with NaN and no such line."""
    trials = (Trial(1e-3, 0.5, (1.0, 0.9), 0.01), Trial(2e-3, 0.6, (1.0, 0.8), 0.01))
    r = result(trials=trials, flags=("trials_failed",), start_val_loss=0.412, start_se=0.0103)
    back = FinderResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and (back.start_val_loss, back.start_se) == (0.412, 0.0103)
    assert "The state the trials started from: validation loss 0.412 ± 0.01." in r.summary()
    old = {k: v for k, v in r.to_dict().items() if k not in ("start_val_loss", "start_se")}
    loaded = FinderResult.from_dict(old)
    assert math.isnan(loaded.start_val_loss) and math.isnan(loaded.start_se) and loaded.trials == trials
    summary = loaded.summary()
    assert "The state the trials started from:" not in summary and "| 1 | 0 | 2 | 0.002 | 0.6 |" in summary


def test_a_result_with_nan_and_inf_is_equal_to_itself_after_json_and_pickle():
    """A diverged sweep (NaN from the blow-up on, in the losses and the smoothed curve), a probe attempt that turned
    NaN (its rise, margin, ... NaN), trials with an inf validation loss and a NaN loss. Before, ``==`` held a NaN equal
    only to the same float object: loaded from JSON or a checkpoint's pickle, such a result was unequal to itself."""
    lrs = sweep_lrs(1e-7, 10.0, 100)
    losses = [v if lr < 1e-1 else float("nan") for lr, v in zip(lrs, curve(lrs))]
    losses[-1] = math.inf
    attempts = (
        ProbeAttempt(1e-2, "nonfinite", (1.0, float("nan")), (1.0, math.inf), skipped=(1,), steps=12),
        ProbeAttempt(5e-3, "stable", (1.0,) * 4, (1.0,) * 4, rise=-0.5, margin=0.1, drop=0.5, drop_margin=0.1),
    )
    trials = (Trial(5e-3, math.inf, (1.0, float("nan")), math.inf), Trial(2.5e-3, 0.3, (1.0, 0.5)))
    r = result(
        lrs=lrs, losses=tuple(losses), smoothed=suggest_lr(lrs, losses).smoothed, trials=trials,
        probe=Probe(10, 20, attempts), choice=2.5e-3, flags=("nonfinite", "probe_halved", "trials_inconclusive"),
    )  # fmt: skip
    assert any(math.isnan(v) for v in r.smoothed) and math.isnan(r.probe.attempts[0].rise)
    for back in (
        FinderResult.from_dict(json.loads(json.dumps(r.to_dict()))),
        pickle.loads(pickle.dumps(r)),
        FinderResult.from_dict(pickle.loads(pickle.dumps(r.to_dict()))),  # a checkpoint's state_dict
    ):
        assert back == r and hash(back) == hash(r) and back.to_dict().keys() == r.to_dict().keys()
        assert back.trials == r.trials and back.probe == r.probe
    moved = list(losses)
    moved[0] = float("nan")  # a NaN where the other has a number is still a difference
    assert result(lrs=lrs, losses=tuple(moved)) != result(lrs=lrs, losses=tuple(losses))
    assert Trial(1e-3, float("nan")) != Trial(1e-3, 0.5) and Trial(1e-3, float("nan")) == Trial(1e-3, float("nan"))


def test_the_flat_curve_flag_gives_the_broad_bottoms_width_in_decades_not_a_constants_name():
    """The summary (TensorBoard's ``lr_finder/summary``) explains each flag: flat_curve's text read "stayed at its
    lowest level over more than BROAD_BOTTOM decades", the name of a constant that is not public."""
    text = result(flags=("flat_curve", "no_clear_valley")).summary()
    assert "more than 1.5 decades" in text and "BROAD_BOTTOM" not in text


def test_the_summary_explains_the_answer_the_flags_and_the_alternatives():
    r = result(flags=("no_clear_valley",), trials=(Trial(1e-3, 0.5), Trial(2e-3, 0.25)))
    text = r.summary()
    assert f"**{r.suggestion:.3g}**" in text and "stopped: diverged" in text
    assert FLAGS["no_clear_valley"] in text
    for method in METHODS:
        assert f"| {method} |" in text
    assert "chosen after the trials: **0.002**" in text and "| 1 | 0 | 0 | 0.002 | 0.25 |" in text


def test_the_alternatives_are_taken_at_the_finders_own_window():
    """A finder run with window=0.5: the method table's "default" is the suggestion above it, and the window is
    kept with the result (a loaded result re-analysed reproduces it). Before, the table used the default window
    (0.402 under a suggestion of 0.0585, on the digits MLP)."""
    lrs, losses = swept(noise=0.05)
    wide = suggest_lr(lrs, losses, window=0.5)
    assert wide.lr != suggest_lr(lrs, losses).lr  # the window matters on this curve
    r = result(suggestion=wide.lr, range=wide.range, smoothed=wide.smoothed, window=0.5)
    assert r.alternatives()["default"] == wide.lr and f"| default | {wide.lr:.3g} |" in r.summary()
    back = FinderResult.from_dict(r.to_dict())
    assert back.window == 0.5 and suggest_lr(back.lrs, back.losses, window=back.window).lr == back.suggestion


def test_plot_gives_a_figure_and_image_an_rgb_array():
    r = result(trials=(Trial(1e-3, 0.5), Trial(2e-3, 0.25)))
    figure = r.plot()
    axes = figure.axes[0]
    assert axes.get_xscale() == "log"
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert any(label.startswith("suggestion") for label in labels) and "range" in labels
    assert sum(label.startswith("trial") for label in labels) == 2
    _low, high = axes.get_ylim()
    assert high < max(r.losses)  # the explosion does not flatten the valley
    image = r.image()
    assert image.dtype.name == "uint8" and image.shape[2] == 3 and image.shape[0] > 200


@pytest.mark.parametrize(
    ("lrs", "losses"),
    [
        ((), ()),
        ((1e-3,), (1.0,)),
        ((1e-3,), (math.nan,)),
        (sweep_lrs(1e-7, 10.0, 100), (0.3,) * 100),
        (sweep_lrs(1e-7, 10.0, 100), (math.nan,) * 100),
        (sweep_lrs(1e-7, 10.0, 100), (*curve(sweep_lrs(1e-7, 1e-1, 90)), math.inf, *(math.nan,) * 9)),
    ],
    ids=["empty", "one_point", "one_nan", "flat", "all_nan", "diverged"],
)
def test_plot_and_image_draw_any_curve_and_leave_no_pyplot_figure_open(lrs, losses):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    s = suggest_lr(lrs, losses)
    r = result(lrs=lrs, losses=losses, grad_norms=(1.0,) * len(lrs), suggestion=s.lr, range=s.range, flags=s.flags,
               smoothed=s.smoothed, trials=(Trial(1e-3, math.inf),))  # fmt: skip
    assert r.plot().axes[0].get_xscale() == "log"
    image = r.image()
    assert image.dtype.name == "uint8" and image.shape[2] == 3 and image.std() > 0
    assert plt.get_fignums() == before
    assert r.headline().startswith("answer ") and r.summary().startswith("**LR finder**")


def test_a_flat_curve_with_a_lucky_stretch_puts_the_edge_where_the_lasting_rise_begins():
    """A head that starts as a fitted probe: the loss is flat, a stretch of easy batches (1e-6 to 1e-5) dips
    below the plateau, and the loss rises for good only above 1e-2. The floor is the plateau's median, not
    the dip (the smoothed minimum), so the ordinary plateau after the dip does not read as a rise: the
    edge is found within 0.5 decade of 1e-2 (the first version put it at 1.8e-5)."""
    lrs = sweep_lrs(1e-7, 10.0, 100)
    rng = random.Random(4)
    losses = []
    for lr in lrs:
        dip = -0.03 if 1e-6 < lr < 1e-5 else 0.0
        losses.append(0.3 + dip + 3.0 * max(0.0, log10(lr) + 2.0) + rng.gauss(0, 0.02))
    s = suggest_lr(lrs, losses)
    assert s.flags == ("flat_curve",)
    assert -2.5 < log10(s.range[1]) <= -2.0


def test_a_flat_curve_rise_must_last_three_tenths_of_a_decade():
    lrs = sweep_lrs(1e-7, 10.0, 100)
    rng = random.Random(5)
    flat = [0.3 + rng.gauss(0, 0.02) for _ in lrs]
    one_point = [*flat[:-1], 0.6]  # the smoothed rise lasts less than 0.3 decade: a bump, not an edge
    assert suggest_lr(lrs, one_point).lr is None and suggest_lr(lrs, one_point).flags == ("flat_curve",)
    lasting = [*flat[:-6], 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]  # 6 points: 0.4 decade
    s = suggest_lr(lrs, lasting)
    assert s.flags == ("flat_curve",) and lrs[-12] <= s.range[1] <= lrs[-7]
