"""Confirm mode: short trials of the real schedule at a few LRs, each from the same restored state, compared
on the validation loss; the best is applied and every trial is reported."""

from __future__ import annotations

import math

import pytest
import torch

from lr_callbacks import LRFinder, LRSchedule
from tests.finder.helpers import FinderModel, sgd, shuffled
from tests.helpers import loader, make_trainer, read_scalars, read_text, regression_data


def val_loader():
    return loader(regression_data(32, seed=1), batch_size=8)


def fit(tmp_path, finder, model=None, callbacks=(), **kwargs):
    model = model if model is not None else FinderModel(optimizer=sgd())
    kwargs.setdefault("max_steps", 1)
    trainer = make_trainer(tmp_path, callbacks=[*callbacks, finder], limit_val_batches=1.0, **kwargs)
    trainer.fit(model, shuffled(), val_loader())
    return model, trainer


def test_default_trials_are_half_one_and_two_times_the_suggestion_from_the_same_state(tmp_path):
    finder = LRFinder(num_steps=40, confirm=True, confirm_length="4 steps")
    model, _ = fit(tmp_path, finder, max_steps=1)
    result = finder.result
    assert [t.lr for t in result.trials] == pytest.approx([result.suggestion * f for f in (0.5, 1.0, 2.0)])
    assert all(len(t.losses) == 4 for t in result.trials)
    firsts = {t.losses[0] for t in result.trials}
    assert len(firsts) == 1  # the same weights and the same first batch before each trial's first update
    best = min(result.trials, key=lambda t: t.val_loss)
    assert result.chosen_lr == best.lr
    sweep_and_trials = len(result.lrs) + 12
    assert model.calls[sweep_and_trials][0] == pytest.approx(best.lr, rel=1e-12)  # applied: the best trial's LR


def test_a_trial_is_the_training_you_would_get_with_its_lr(tmp_path):
    """A trial's losses and validation loss are those of a plain run of the same length at the same LR.

    With no randomness in the training (no dropout, data in order): a trial draws its batches from a fresh
    pass over the data, which with shuffling would be another permutation than the epoch's.
    """
    finder = LRFinder(num_steps=30, confirm=[0.01, 0.05], confirm_length="5 steps", apply=False)
    data = loader(regression_data(64), batch_size=8)
    trainer = make_trainer(tmp_path / "a", max_steps=1, logger=False, callbacks=[finder])
    torch.manual_seed(0)
    trainer.fit(FinderModel(optimizer=sgd(), dropout=0.0), data, val_loader())
    for trial in finder.result.trials:
        torch.manual_seed(0)  # the same starting weights
        model = FinderModel(optimizer=sgd(trial.lr, trial.lr / 10), dropout=0.0)
        plain = make_trainer(tmp_path / "b", max_steps=5, logger=False)
        plain.fit(model, data)
        (metrics,) = plain.validate(model, val_loader(), verbose=False)
        assert [loss for _, loss in model.calls] == pytest.approx(trial.losses, rel=1e-6)
        assert trial.val_loss == pytest.approx(metrics["val_loss"], rel=1e-6)


def test_a_user_list_of_lrs_and_a_diverging_trial(tmp_path):
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2, 1e6], confirm_length="6 steps")
    fit(tmp_path, finder)
    trials = finder.result.trials
    assert [t.lr for t in trials] == [1e-3, 1e-2, 1e6]
    assert trials[2].val_loss == math.inf and not math.isfinite(trials[2].losses[-1])
    assert len(trials[2].losses) < 6  # it stopped at the first NaN/inf
    assert finder.result.chosen_lr == min(trials[:2], key=lambda t: t.val_loss).lr
    assert read_scalars(tmp_path, "lr_finder/trial_lr") == [(k, pytest.approx(t.lr)) for k, t in enumerate(trials)]
    assert [s for s, _ in read_scalars(tmp_path, "lr_finder/trial_val_loss")] == [0, 1, 2]
    assert len(read_scalars(tmp_path, "lr_finder/trial0/loss")) == 6
    (text,) = read_text(tmp_path, "lr_finder/summary")
    assert f"chosen after the trials: **{finder.result.chosen_lr:.3g}**" in text


def test_confirm_length_sets_the_trials_length(tmp_path):
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2], confirm_length="50%", apply=False)
    fit(tmp_path, finder, max_steps=6, logger=False)
    assert [len(t.losses) for t in finder.result.trials] == [3, 3]


def test_with_lrschedule_the_trials_follow_its_schedule_and_a_short_one_warns(tmp_path):
    schedule = LRSchedule("cosine", warmup="4 steps", log_plan=False)
    finder = LRFinder(num_steps=30, confirm=[0.01, 0.02], confirm_length="3 steps")
    with pytest.warns(UserWarning, match=r"the confirm trials \(3 steps\) reach at most 75% of the peak LR"):
        model, _ = fit(tmp_path, finder, callbacks=[schedule], max_steps=20, logger=False)
    n = len(finder.result.lrs)
    trial_lrs = [lr for lr, _ in model.calls[n : n + 6]]
    expected = [lr * w for lr in (0.01, 0.02) for w in (0.25, 0.5, 0.75)]
    assert trial_lrs == pytest.approx(expected, rel=1e-9)
    assert schedule.peak_lrs[0][0] == pytest.approx(finder.result.chosen_lr)


class Named(FinderModel):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_mse", torch.nn.functional.mse_loss(self(x), y))


def test_monitor_names_the_validation_value(tmp_path):
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2], confirm_length="2 steps", monitor="val_mse")
    fit(tmp_path, finder, Named(optimizer=sgd()), logger=False)
    assert all(math.isfinite(t.val_loss) for t in finder.result.trials)


def test_a_monitor_that_validation_step_does_not_log_is_refused(tmp_path):
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2], confirm_length="2 steps")
    with pytest.raises(ValueError, match=r"`monitor`='val_loss', but validation_step logged val_mse and returned"):
        fit(tmp_path, finder, Named(optimizer=sgd()), logger=False)


def test_confirm_needs_validation_data(tmp_path):
    finder = LRFinder(num_steps=30, confirm=True)
    trainer = make_trainer(tmp_path, max_steps=1, logger=False, callbacks=[finder])
    with pytest.raises(ValueError, match=r"compares trials on the validation loss, but the trainer has no validation"):
        trainer.fit(FinderModel(optimizer=sgd()), shuffled())


def test_a_confirm_length_of_zero_steps_is_refused(tmp_path):
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2], confirm_length="0 steps")
    with pytest.raises(ValueError, match=r"`confirm_length` 0 steps is 0 steps for this run; lengthen it"):
        fit(tmp_path, finder, logger=False)
