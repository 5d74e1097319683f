"""The stability probe: its pure rules (hold length, verdict), and through a real Trainer: it halves a
suggestion that is unstable when held, keeps a stable one, replays LRSchedule's warmup, and reports."""

from __future__ import annotations

import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule, find_lr
from lr_callbacks.core.lr_model import lr_scale
from lr_callbacks.finder.probe import warmup_of
from lr_callbacks.finder.result import Probe
from lr_callbacks.finder.stability import HOLD_MIN_STEPS, MAX_HALVINGS, hold_steps, hold_verdict
from tests.finder.helpers import FinderModel, sgd, shuffled
from tests.helpers import make_trainer, read_scalars

# --- the rules --------------------------------------------------------------------------------------------


def test_the_hold_is_twice_the_warmup_and_at_least_twenty_steps():
    assert [hold_steps(w) for w in (0, 5, 10, 11, 40)] == [20, 20, 20, 22, 80]
    assert HOLD_MIN_STEPS == 20 and MAX_HALVINGS == 2


def test_a_noisy_falling_or_flat_hold_is_stable():
    noise = [0.02 * (-1) ** k for k in range(30)]
    assert hold_verdict([1.0 - 0.01 * k + e for k, e in enumerate(noise)], [1.0] * 30).stable
    assert hold_verdict([1.0 + e for e in noise], [1.0] * 30).stable


def test_a_rise_counts_only_beyond_three_standard_errors_of_the_noise():
    noise = [0.05 * (-1) ** k for k in range(40)]
    small = hold_verdict([1.0 + 0.0005 * k + e for k, e in enumerate(noise)], [1.0] * 40)
    assert small.stable and 0 < small.rise < small.margin
    large = hold_verdict([1.0 + 0.01 * k + e for k, e in enumerate(noise)], [1.0] * 40)
    assert large.verdict == "loss_rose" and large.rise > large.margin
    shifted = hold_verdict([v * 3.0 - 7.0 for v in [1.0 + 0.01 * k + e for k, e in enumerate(noise)]], [1.0] * 40)
    assert shifted.verdict == "loss_rose" and shifted.rise == pytest.approx(3.0 * large.rise)  # scale-free


def test_a_gradient_norm_that_grows_geometrically_without_progress_is_unstable():
    flat = [1.0 + 0.01 * (-1) ** k for k in range(30)]
    assert hold_verdict(flat, [1.1**k for k in range(30)]).verdict == "grad_norm_grew"
    falling = [2.0 - 0.05 * k for k in range(30)]  # the loss makes progress: a growing norm is no alarm
    assert hold_verdict(falling, [1.1**k for k in range(30)]).stable
    bumpy = [1.0, 5.0, 1.0] * 10  # not a steady growth (start < middle < end fails)
    assert hold_verdict(flat, bumpy).stable


def test_a_nonfinite_loss_or_norm_is_unstable():
    assert hold_verdict([1.0, math.nan], [1.0, 1.0]).verdict == "nonfinite"
    assert hold_verdict([1.0] * 5, [1.0, math.inf, 1.0, 1.0, 1.0]).verdict == "nonfinite"
    assert hold_verdict([], []).verdict == "nonfinite"


def test_steps_the_grad_scaler_skipped_are_left_out_unless_it_skipped_the_holds_end():
    """A GradScaler's overflow is its calibration, not the LR's doing; but one that skips the hold's last ``q``
    steps (here 5 of 20), or all of it, saw gradients stay non-finite, and a non-finite loss counts as ever."""
    falling = [1.0 - 0.01 * k for k in range(20)]
    calibrating = [True] * 4 + [False] * 16
    assert hold_verdict(falling, [math.inf] * 4 + [1.0] * 16, skipped=calibrating).stable
    assert hold_verdict(falling, [math.inf] * 4 + [1.0] * 16).verdict == "nonfinite"  # not skipped: inf counts
    assert hold_verdict(falling, [1.0] * 16 + [math.inf] * 4, skipped=[False] * 16 + [True] * 4).stable
    at_the_end = hold_verdict(falling, [1.0] * 15 + [math.inf] * 5, skipped=[False] * 15 + [True] * 5)
    assert at_the_end.verdict == "nonfinite"
    assert hold_verdict(falling, [math.inf] * 20, skipped=[True] * 20).verdict == "nonfinite"
    assert hold_verdict(falling[:2], [math.nan] * 2, skipped=[True] * 2).verdict == "nonfinite"  # a short hold
    nan_loss = hold_verdict([*falling[:-1], math.nan], [1.0] * 19 + [math.nan], skipped=[False] * 19 + [True])
    assert nan_loss.verdict == "nonfinite"


# --- through a real Trainer -------------------------------------------------------------------------------


class EdgeModel(pl.LightningModule):
    """A scripted loss: a valley along the ramp (one step per LR), from 1.0 at tiny LRs; while one LR is held
    (the same LR two steps in a row), a loss that climbs 0.05 per step above ``edge``, falls 0.02 per step up
    to ``trains_below`` (the model trains), and in between stays at 1.0, where it started (stuck): the ramp
    sees none of that, a hold does."""

    def __init__(self, edge: float, trains_below: float = math.inf) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.edge, self.trains_below, self.held, self.previous, self.calls = edge, trains_below, 0, None, 0
        self.used: list[float] = []

    def training_step(self, batch, batch_idx):
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        self.held = self.held + 1 if lr == self.previous else 0
        self.previous, self.calls = lr, self.calls + 1
        self.used.append(lr)
        wiggle = 0.01 * (-1) ** self.calls
        loss = 1.0 / (1.0 + (lr / 1e-3) ** 2) + (lr / 0.1) ** 3 + wiggle
        if lr > self.edge:
            loss += 0.05 * self.held
        elif lr <= self.trains_below:
            loss -= 0.02 * self.held
        elif self.held:
            loss = 1.0 + wiggle
        return self.w.sum() * 0.0 + loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def run(tmp_path, edge, trains_below=math.inf, **kwargs):
    finder = LRFinder(num_steps=60, **kwargs)
    model = EdgeModel(edge, trains_below)
    trainer = make_trainer(tmp_path, max_steps=3, callbacks=[finder], logger=kwargs.pop("logger", False))
    trainer.fit(model, shuffled())
    return finder.result, model


def test_an_unstable_suggestion_is_halved_and_the_half_is_applied(tmp_path):
    suggestion = run(tmp_path / "a", edge=math.inf, probe=False)[0].suggestion
    result, model = run(tmp_path / "b", edge=0.75 * suggestion)
    assert result.suggestion == suggestion  # the sweep's answer is reported as it was
    first, second = result.probe.attempts
    assert (first.lr, first.verdict) == (suggestion, "loss_rose") and first.rise > first.margin
    assert (second.lr, second.verdict) == (suggestion / 2, "stable")
    assert result.chosen_lr == suggestion / 2 and "probe_halved" in result.flags
    assert "probe_unstable" not in result.flags
    assert model.used[-3:] == pytest.approx([suggestion / 2] * 3, rel=1e-12)  # training runs at the half
    assert result.probe.warmup_steps == 0 and result.probe.hold_steps == 20  # no LRSchedule: no known warmup
    assert len(first.losses) == len(second.losses) == 20
    assert result.steps_spent == len(result.lrs) + 40


def test_a_halving_that_takes_the_finder_past_its_share_of_the_run_says_so(tmp_path):
    """The plan (a 60-step sweep and a 20-step hold: 80 of 240 steps, 33%) stays within 35% of the run, so nothing
    is said before the sweep; the halving adds a second hold (the sweep stops where the loss diverged, at 48 steps:
    88 steps, 37%): a warning says so, with the numbers. Before, nothing did. A probe that holds at once says
    nothing."""
    suggestion = run(tmp_path / "a", edge=math.inf, probe=False)[0].suggestion

    def fitted(root, edge):
        finder = LRFinder(num_steps=60)
        trainer = make_trainer(root, max_steps=240, callbacks=[finder], logger=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(EdgeModel(edge), shuffled())
        return finder.result, [str(w.message) for w in caught if "LRFinder" in str(w.message)]

    result, said = fitted(tmp_path / "b", 0.75 * suggestion)
    spent = result.steps_spent
    assert len(result.probe.attempts) == 2 and spent == len(result.lrs) + 40 and spent > 0.35 * 240
    overrun = [m for m in said if "halved" in m]
    assert len(overrun) == 1
    assert f"took {spent} optimizer steps, {spent / 240:.0%} of the training run (240 steps" in overrun[0]
    assert not [m for m in said if "planned to take" in m]  # the plan was within: no warning before the sweep
    held, said = fitted(tmp_path / "c", math.inf)
    assert len(held.probe.attempts) == 1 and not [m for m in said if "halved" in m]


def test_a_candidate_unstable_at_every_halving_is_flagged_and_stops_at_a_quarter(tmp_path):
    suggestion = run(tmp_path / "a", edge=math.inf, probe=False)[0].suggestion
    result, _ = run(tmp_path / "b", edge=0.1 * suggestion)
    assert [a.lr for a in result.probe.attempts] == [suggestion, suggestion / 2, suggestion / 4]
    assert not result.probe.stable and {"probe_halved", "probe_unstable"} <= set(result.flags)
    assert result.chosen_lr == suggestion / 4
    assert "probe_unstable" in result.summary() and "stability probe" in result.summary()


def test_a_stable_suggestion_that_makes_progress_is_kept(tmp_path):
    result, _ = run(tmp_path, edge=math.inf)
    (attempt,) = result.probe.attempts
    assert attempt.verdict == "stable" and attempt.drop > attempt.drop_margin and result.chosen_lr == result.suggestion
    assert not {"probe_halved", "probe_stalled", "probe_no_progress", "probe_unstable"} & set(result.flags)


def test_a_suggestion_that_holds_but_stalls_is_halved_when_the_half_trains(tmp_path):
    """An LR past the edge can leave a model stuck where it started without blowing up: not known to train."""
    suggestion = run(tmp_path / "a", edge=math.inf, probe=False)[0].suggestion
    result, model = run(tmp_path / "b", edge=math.inf, trains_below=0.75 * suggestion)
    first, second = result.probe.attempts
    assert first.verdict == second.verdict == "stable"
    assert first.drop <= first.drop_margin and second.drop > second.drop_margin  # stuck, then training
    assert result.chosen_lr == suggestion / 2 and model.used[-3:] == pytest.approx([suggestion / 2] * 3, rel=1e-12)
    assert "probe_stalled" in result.flags and not {"probe_halved", "probe_no_progress"} & set(result.flags)
    assert "stable, no significant progress" in result.summary()


def test_the_flags_do_not_say_the_suggestion_held_when_it_was_its_half_that_stalled(tmp_path):
    """The suggestion blew up when held, its half held but stalled, the quarter trained. Before, the summary listed
    the suggestion as ``loss_rose`` and, under it, ``probe_stalled``: "the suggestion was stable but the loss made
    no significant progress"."""
    suggestion = run(tmp_path / "a", edge=math.inf, probe=False)[0].suggestion
    result, _ = run(tmp_path / "b", edge=0.75 * suggestion, trains_below=0.3 * suggestion)
    attempts = result.probe.attempts
    assert [(a.verdict, a.hold.progressed) for a in attempts] == [
        ("loss_rose", False),
        ("stable", False),
        ("stable", True),
    ]
    assert result.flags[-2:] == ("probe_halved", "probe_stalled") and result.chosen_lr == suggestion / 4
    summary = result.summary()
    assert f"{suggestion:.3g} loss_rose" in summary and "the suggestion was stable" not in summary
    assert "the suggestion, or its half) was stable but the loss made no significant progress" in summary


def test_when_no_held_lr_makes_progress_the_suggestion_stands(tmp_path):
    """A trained model at its floor makes no progress at any LR: it is not pushed down for it."""
    suggestion = run(tmp_path / "a", edge=math.inf, probe=False)[0].suggestion
    result, _ = run(tmp_path / "b", edge=math.inf, trains_below=0.0)
    assert [a.lr for a in result.probe.attempts] == [suggestion, suggestion / 2, suggestion / 4]
    assert result.probe.stable and result.chosen_lr == suggestion
    assert "probe_no_progress" in result.flags and "probe_stalled" not in result.flags


class _AtEpochStart(pl.Callback):
    """How many ``training_step`` calls the model had made when epoch ``epoch`` began (before a finder listed after
    it runs there), and the watchdog's cut of the LR then."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.calls, self.cut = epoch, -1, math.nan

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            self.calls, self.cut = len(pl_module.calls), lr_scale(trainer)


@pytest.mark.parametrize("schedule", [None, "warmup"])
def test_a_probe_mid_fit_holds_the_candidate_under_the_watchdogs_cut_as_the_run_after_the_choice_trains(
    tmp_path, schedule
):
    """A cut held when the finder runs at epoch 1 (×0.5 without LRSchedule): the run after the choice trains at
    answer × cut (the shared LR model), and so do the trials, but the probe held the raw candidate: its verdict was
    about an LR 2× the one the run would get, and with LRSchedule its warmup, replayed under the cut, ended far below
    the hold that followed it."""

    def spikes(step, loss):  # ×100 losses in the first epoch (50 steps): the watchdog rolls back and cuts the LR
        # (at 20, 24, 28 the first rollback, under the warmup, goes back to the run's start, where the next ×100
        # batch reads as bad data on the restored weights and the cut is undone: the data did it, not the LR)
        return loss * 100.0 if step in (28, 32, 36) else loss

    model = FinderModel(optimizer=sgd(0.05, 0.005), loss_hook=spikes)
    watchdog = DivergenceWatchdog(warmup_steps=10, recover_after=40, cooldown_steps=5, lower_after=3, snapshot_every=5)
    finder = LRFinder(num_steps=30, epochs=[1], at_fit_start=False)
    marker = _AtEpochStart(1)
    callbacks = [watchdog, marker, finder]
    if schedule is not None:  # the warmup still ahead at the finder (to step 59), replayed before the hold
        callbacks.append(LRSchedule("cosine", warmup="60 steps", log_plan=False))
    trainer = make_trainer(tmp_path, callbacks=callbacks, max_epochs=2, logger=False)
    trainer.fit(model, shuffled(n=400))
    cut = marker.cut
    assert cut < 1.0 and (schedule is not None or cut == 0.5)  # the cut the watchdog held at epoch 1
    result, probe = finder.result, finder.result.probe
    assert probe is not None and probe.warmup_steps == (0 if schedule is None else 9)
    start = marker.calls + len(result.lrs)
    for attempt in probe.attempts:
        calls = [lr for lr, _ in model.calls[start : start + attempt.steps]]
        assert calls[probe.warmup_steps :] == pytest.approx([attempt.lr * cut] * (attempt.steps - probe.warmup_steps))
        if schedule is not None:  # the replayed warmup climbs to the hold, not to a fraction of it
            assert calls[probe.warmup_steps - 1] == pytest.approx(attempt.lr * cut * 59 / 60)  # step 58 of 60
        start += attempt.steps
    warmup = 1.0 if schedule is None else 51 / 60  # the run goes on at step 50 of its warmup
    assert model.calls[start][0] == pytest.approx(result.chosen_lr * cut * warmup)  # the run after the choice


def test_probe_false_and_a_list_of_confirm_candidates_run_no_probe(tmp_path):
    assert run(tmp_path / "a", edge=math.inf, probe=False)[0].probe is None
    finder = LRFinder(num_steps=20, confirm=[1e-3, 1e-2], confirm_length="2 steps")
    trainer = make_trainer(tmp_path / "b", max_steps=2, limit_val_batches=2, logger=False, callbacks=[finder])
    trainer.fit(FinderModel(optimizer=sgd()), shuffled(), shuffled(seed=1))
    assert finder.result.probe is None


def test_the_probe_replays_lrschedules_warmup_then_holds(tmp_path):
    finder = LRFinder(num_steps=30)
    schedule = LRSchedule("cosine", warmup="10 steps", log_plan=False)
    model = FinderModel(optimizer=sgd())
    trainer = make_trainer(tmp_path, max_steps=100, limit_train_batches=8, logger=False, callbacks=[schedule, finder])
    trainer.fit(model, shuffled())
    probe = finder.result.probe
    assert (probe.warmup_steps, probe.hold_steps) == (9, 20)  # the schedule is at its peak from step 9
    n = len(finder.result.lrs)
    first = [lr for lr, _ in model.calls[n : n + 29]]
    lr = probe.attempts[0].lr
    assert first[:9] == pytest.approx([lr * (k + 1) / 10 for k in range(9)], rel=1e-9)  # the warmup
    assert first[9:] == pytest.approx([lr] * 20, rel=1e-12)  # then the hold


def test_a_short_warmup_in_a_long_run_is_replayed_as_it_is_not_as_far_as_the_plans_next_sample(tmp_path):
    """The plan samples 1,000 points of a run: every 100th step of 100,000. Before, the probe took the first sample
    at the peak for the warmup's end: 100 steps for a 20-step warmup, of which it replayed 80 at the peak before a
    hold of 200 steps (2 × 100) instead of 38."""
    schedule = LRSchedule("cosine", warmup="20 steps", log_plan=False)
    model = FinderModel(optimizer=sgd())
    trainer = make_trainer(tmp_path, max_steps=100_000, logger=False, callbacks=[schedule])
    result = find_lr(trainer, model, shuffled(), num_steps=40)
    probe = result.probe
    assert (probe.warmup_steps, probe.hold_steps) == (19, 38)  # as in a run of 100 steps: the peak from step 19
    n = len(result.lrs)
    first = [lr for lr, _ in model.calls[n : n + 19 + 38]]
    lr = probe.attempts[0].lr
    assert first[:19] == pytest.approx([lr * (k + 1) / 20 for k in range(19)], rel=1e-9)  # the warmup
    assert first[19:] == pytest.approx([lr] * 38, rel=1e-12)  # then the hold


class NanAtCall(EdgeModel):
    """EdgeModel whose loss is NaN at its ``nan_at``-th ``training_step`` call."""

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__(math.inf)
        self.nan_at = nan_at

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * math.nan if self.calls == self.nan_at else loss


def test_an_attempt_whose_loss_turns_nan_in_the_warmup_counts_the_steps_it_ran(tmp_path):
    """The probe's first attempt stops at the 4th of its 9 warmup steps; before, it counted all 9 in
    ``steps_spent`` (86 steps for the 81 that ran)."""

    def find(root, model):
        trainer = make_trainer(root, max_steps=100, logger=False, callbacks=[LRSchedule("cosine", warmup="10 steps")])
        return find_lr(trainer, model, shuffled(), num_steps=60)

    n = len(find(tmp_path / "a", NanAtCall()).lrs)
    model = NanAtCall(nan_at=n + 4)
    result = find(tmp_path / "b", model)
    assert result.steps_spent == model.calls == n + 4 + 29
    first, second = result.probe.attempts
    assert (first.verdict, first.losses, first.steps) == ("nonfinite", (), 4) and second.steps == 9 + 20
    assert Probe.from_dict(result.probe.to_dict()) == result.probe


def test_a_warmup_longer_than_a_tenth_of_the_run_is_replayed_compressed():
    class Schedule:
        def __init__(self) -> None:
            self.steps, self.group_tags = [0], [["group0"]]

        def plan(self):
            return {"group0": (list(range(100)), [min(1.0, (k + 1) / 30) for k in range(100)])}

    assert warmup_of(Schedule(), 100) == (10, 29)
    assert warmup_of(Schedule(), 1000) == (29, 29)
    assert warmup_of(None, 100) == (0, 0)


def test_the_probe_is_in_tensorboard_and_in_the_state(tmp_path):
    suggestion = run(tmp_path / "a", edge=math.inf, probe=False)[0].suggestion
    finder = LRFinder(num_steps=60)
    trainer = make_trainer(tmp_path / "b", max_steps=1, callbacks=[finder])
    trainer.fit(EdgeModel(0.75 * suggestion), shuffled())
    root = trainer.log_dir
    assert [v for _, v in read_scalars(root, "lr_finder/probe_lr")] == pytest.approx([suggestion, suggestion / 2])
    assert [v for _, v in read_scalars(root, "lr_finder/probe_stable")] == [0.0, 1.0]
    assert [v for _, v in read_scalars(root, "lr_finder/probe_progressed")] == [0.0, 1.0]
    assert len(read_scalars(root, "lr_finder/probe0/loss")) == 20
    (steps,) = read_scalars(root, "lr_finder/steps_spent")
    assert steps[1] == finder.result.steps_spent and len(read_scalars(root, "lr_finder/seconds")) == 1
    restored = LRFinder()
    restored.load_state_dict(finder.state_dict())
    assert restored.result == finder.result and restored.result.probe.lr == suggestion / 2


def test_progress_is_measured_from_the_restored_states_loss_not_within_the_hold():
    """A hold that starts low (its warmup already trained) and stays there made progress; one that sits at the
    starting loss did not, however it moves within the hold; without the starting losses nothing is known."""
    initial = [2.3 + 0.02 * (-1) ** k for k in range(10)]
    low_and_flat = hold_verdict([0.8 + 0.02 * (-1) ** k for k in range(20)], [1.0] * 20, initial)
    assert low_and_flat.stable and abs(low_and_flat.rise) < low_and_flat.margin and low_and_flat.progressed
    stuck = hold_verdict([2.5 - 0.01 * k + 0.02 * (-1) ** k for k in range(20)], [1.0] * 20, initial)
    assert stuck.stable and stuck.rise < -stuck.margin and not stuck.progressed  # fell within the hold, to 2.3
    assert not hold_verdict([0.8] * 20, [1.0] * 20).progressed and math.isnan(hold_verdict([0.8] * 20, [1.0] * 20).drop)


def test_a_hold_that_ends_far_above_the_restored_states_loss_is_unstable_even_when_it_blew_up_at_once():
    """SGD held at 4.3 on the digits MLP: the loss went from 2.3 to 27 within the hold's first quarter, so the
    start level took in the blow-up, and it settled at twice the starting loss. Before, that read as stable
    (no significant progress), and with no halving making progress the probe kept it as its answer."""
    held = [2.3, 3.1, 2.3, 5.6, 21.9, 27.0, 18.4, 18.4, 5.9, 6.4, 6.4, 6.7, 6.5, 7.8, 5.6, 5.7, 3.8, 4.4, 5.2, 4.3]
    initial = [2.31, 2.35, 2.35, 2.28, 2.31, 2.33, 2.32, 2.31]
    verdict = hold_verdict(held, [1.0] * 20, initial)
    assert verdict.rise < verdict.margin  # within the hold, the rise is lost in the blow-up's noise
    assert verdict.drop < -verdict.drop_margin and verdict.verdict == "loss_rose"
    assert hold_verdict(held, [1.0] * 20).verdict == "stable"  # without the starting losses, only the hold is read
    at_the_start = [2.3 + 0.02 * (-1) ** k for k in range(20)]  # a trained model at its floor: no progress, no rise
    assert hold_verdict(at_the_start, [1.0] * 20, initial).stable


class Overflowing(EdgeModel):
    """EdgeModel whose gradient passes through float16 at 4× the GradScaler's scale: while the scale is above 2¹³
    it overflows (a fresh scaler, 2¹⁶, skips 3 steps); with ``always``, its gradient is inf at every step. The
    loss's value is EdgeModel's."""

    def __init__(self, edge: float, always: bool = False) -> None:
        super().__init__(edge)
        self.always = always

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        through_half = self.w.half().float() * 4.0
        extra = (self.w - self.w.detach()).sqrt() if self.always else through_half - through_half.detach()
        return loss + extra.sum()  # + 0, with that gradient


def run_amp(tmp_path, model):
    finder = LRFinder(num_steps=60)
    precision = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = make_trainer(tmp_path, max_steps=3, callbacks=[finder], logger=False, plugins=[precision])
    trainer.fit(model, shuffled())
    return finder.result


def test_a_grad_scalers_first_overflows_after_the_restore_do_not_make_a_hold_unstable(tmp_path):
    """The probe restores the GradScaler before each hold, so each hold starts with a fresh scale's overflows."""
    suggestion = run(tmp_path / "a", edge=math.inf, probe=False)[0].suggestion
    result = run_amp(tmp_path / "b", Overflowing(math.inf))
    assert result.suggestion == suggestion
    assert [a.verdict for a in result.probe.attempts] == ["stable"]
    (attempt,) = result.probe.attempts
    assert attempt.skipped == (0, 1, 2) and [math.isfinite(n) for n in attempt.grad_norms[:4]] == [0, 0, 0, 1]
    assert attempt.hold.progressed and result.chosen_lr == suggestion
    assert not {"probe_halved", "probe_unstable"} & set(result.flags)


def test_a_hold_whose_every_step_the_grad_scaler_skips_is_unstable(tmp_path):
    result = run_amp(tmp_path, Overflowing(math.inf, always=True))
    assert [a.verdict for a in result.probe.attempts] == ["nonfinite"] * 3
    assert all(a.skipped == tuple(range(20)) for a in result.probe.attempts)
    assert "probe_unstable" in result.flags
