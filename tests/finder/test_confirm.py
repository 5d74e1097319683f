"""Confirm mode: trials of the real schedule (compressed, cooled down) at a few LRs, each from the same restored
state, spent as successive halving and compared on the validation loss with a noise margin; by default the
candidates are the stability probe's answer and half of it; the choice is applied and every trial is reported.
And the finder's budget: the default sweep follows the run, the trials get what is left of 35% of it."""

from __future__ import annotations

import math
import re

import pytest
import pytorch_lightning as pl
import torch

from lr_callbacks import FinderResult, LRFinder, LRSchedule, preset
from lr_callbacks.finder.ramp import sweep_lrs
from lr_callbacks.finder.selection import all_worse, choose, cooldown, rungs, trial_budget
from tests.finder.helpers import Capture, FinderModel, assert_same, sgd, shuffled
from tests.finder.test_callback import HandWarmup
from tests.finder.test_probe import EdgeModel
from tests.helpers import loader, make_trainer, read_scalars, read_text, regression_data, stream


def val_loader():
    return loader(regression_data(32, seed=1), batch_size=8)


class ValidatedEdgeModel(EdgeModel):
    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.w.sum() * 0.0 + 1.0)


def run_edge(tmp_path, edge, **kwargs):
    """The probe's scripted model (a hold above ``edge`` makes the loss climb), with validation data."""
    finder = LRFinder(num_steps=60, **kwargs)
    trainer = make_trainer(tmp_path, max_steps=3, callbacks=[finder], logger=False, limit_val_batches=1.0)
    trainer.fit(ValidatedEdgeModel(edge), shuffled(), val_loader())
    return finder.result


def fit(tmp_path, finder, model=None, callbacks=(), **kwargs):
    model = model if model is not None else FinderModel(optimizer=sgd())
    kwargs.setdefault("max_steps", 1)
    trainer = make_trainer(tmp_path, callbacks=[*callbacks, finder], limit_val_batches=1.0, **kwargs)
    trainer.fit(model, shuffled(), val_loader())
    return model, trainer


def test_default_trials_are_the_probes_answer_and_half_of_it_with_the_probes_answer_as_anchor(tmp_path):
    finder = LRFinder(num_steps=40, confirm=True, confirm_length="4 steps")
    model, _ = fit(tmp_path, finder, max_steps=1)
    result = finder.result
    assert result.probe is not None  # confirm=True holds the sweep's answer first
    assert [t.lr for t in result.trials] == pytest.approx([result.probe.lr * 0.5, result.probe.lr], rel=1e-12)
    assert max(t.lr for t in result.trials) <= result.probe.lr  # never above what the probe saw held
    assert [(t.rung, len(t.losses)) for t in result.trials] == [(0, 4)] * 2  # two candidates: one rung
    firsts = {t.losses[0] for t in result.trials}
    assert len(firsts) == 1  # the same weights and the same first batch before each trial's first update
    assert all(t.se > 0 for t in result.trials)  # every score carries its standard error
    expected = choose(
        [t.lr for t in result.trials],
        [t.val_loss for t in result.trials],
        [t.se for t in result.trials],
        result.probe.lr,
        too_short=True,
    )  # 4 steps < 8: too short to tell, so the anchor (the probe's answer) stands
    assert result.chosen_lr == result.choice == expected.lr == result.probe.lr
    assert "trials_inconclusive" in result.flags
    spent = len(result.lrs) + result.probe.steps + 2 * 4
    assert result.steps_spent == spent
    assert model.calls[spent][0] == pytest.approx(result.choice, rel=1e-12)  # applied


def test_with_an_unstable_suggestion_the_candidates_are_the_halved_answer_and_below(tmp_path):
    """The probe halves the sweep's answer when a hold of it is unstable: no trial runs at the unstable LR."""
    suggestion = run_edge(tmp_path / "a", edge=math.inf, probe=False).suggestion
    result = run_edge(tmp_path / "b", edge=0.75 * suggestion, confirm=True, confirm_length="8 steps")
    assert result.suggestion == suggestion and "probe_halved" in result.flags
    assert [t.lr for t in result.trials] == pytest.approx([suggestion / 4, suggestion / 2], rel=1e-12)


def test_default_trials_get_what_sweep_and_probe_leave_of_the_budget_or_none(tmp_path):
    assert trial_budget(1000, 100 + 150) == 100 and trial_budget(300, 107) == 0  # 35% of the run, less the spent
    finder = LRFinder(num_steps=30, confirm=True)
    fit(tmp_path, finder, max_steps=100, logger=False)  # 35% of 100 steps: 35; the sweep and one hold take 50
    result = finder.result
    assert result.probe.steps >= 20 and len(result.lrs) + result.probe.steps > 35
    assert result.trials == () and "trials_skipped" in result.flags and "trials_inconclusive" not in result.flags
    assert result.choice is None and result.chosen_lr == result.probe.lr
    assert math.isnan(result.start_val_loss) and math.isnan(result.start_se)  # no trial ran: nothing was scored
    assert f"confirm trials: none, the sweep and the probe took the budget; answer **{result.chosen_lr:.3g}**" in (
        result.summary()
    )


def test_on_a_run_long_enough_the_trials_run_in_what_sweep_and_probe_leave_of_35_percent_and_all_is_restored(tmp_path):
    """A run of hundreds of steps (the benchmark's leave no trials): the trials run as rungs() of trial_budget(), the
    whole finder stays within 35% of the run, everything is reported, and training starts from the state before it
    (here under gradient accumulation: the budget and the trials count optimizer steps). No defect found; the path
    where the default trials run was covered only with confirm_length."""
    before, after = Capture(), Capture()
    finder = LRFinder(confirm=True, apply=False)
    trainer = make_trainer(
        tmp_path, max_steps=400, accumulate_grad_batches=2, limit_val_batches=1.0, callbacks=[before, finder, after]
    )
    trainer.fit(FinderModel(optimizer=sgd()), shuffled(), val_loader())
    result = finder.result
    spent = len(result.lrs) + result.probe.steps
    ((count, steps),) = rungs(2, budget=trial_budget(400, spent))
    assert steps >= 8 and "trials_skipped" not in result.flags  # the trials ran
    assert [(t.rung, len(t.losses)) for t in result.trials] == [(0, steps)] * count
    assert result.steps_spent == spent + count * steps <= 0.35 * 400
    assert read_scalars(tmp_path, "lr_finder/steps_spent") == [(0, result.steps_spent)]
    for k, trial in enumerate(result.trials):
        assert [v for _, v in read_scalars(tmp_path, f"lr_finder/trial{k}/loss")] == pytest.approx(trial.losses)
    assert f"- cost: {result.steps_spent} optimizer steps" in result.summary()
    assert_same(before.states[0], after.states[0])  # apply=False: weights, optimizer, RNG, loops, all as before


def test_trials_skipped_without_a_probe_do_not_say_that_a_probe_took_the_budget_or_gave_the_answer(tmp_path):
    """With probe=False no probe runs: before, the summary said "the sweep and the probe took the budget", and the
    flag "the probe's answer was applied", of a run whose answer was the sweep's suggestion."""
    finder = LRFinder(num_steps=30, confirm=True, probe=False)
    fit(tmp_path, finder, max_steps=100, logger=False)  # 35% of 100 steps: the sweep leaves 5, too few for 2 trials
    result = finder.result
    assert result.probe is None and result.trials == () and "trials_skipped" in result.flags
    assert result.chosen_lr == result.suggestion
    summary = result.summary()
    assert f"confirm trials: none, the sweep left too little of the budget; answer **{result.chosen_lr:.3g}**" in (
        summary
    )
    assert "the probe took" not in summary and "the probe's answer was applied" not in summary


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
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2, 1e6], confirm_length="16 steps")
    fit(tmp_path, finder)
    trials = finder.result.trials
    assert [t.lr for t in trials] == [1e-3, 1e-2, 1e6, 1e-3, 1e-2]  # the diverging one does not run again
    assert trials[2].val_loss == math.inf and not math.isfinite(trials[2].losses[-1])
    assert len(trials[2].losses) < 8  # it stopped at the first NaN/inf
    last = trials[3:]
    expected = choose(
        [t.lr for t in last],
        [t.val_loss for t in last],
        [t.se for t in last],
        finder.result.suggestion,
        too_short=False,
    )
    assert finder.result.chosen_lr == expected.lr
    assert ("trials_inconclusive" in finder.result.flags) == expected.inconclusive
    assert read_scalars(tmp_path, "lr_finder/trial_lr") == [(k, pytest.approx(t.lr)) for k, t in enumerate(trials)]
    assert [s for s, _ in read_scalars(tmp_path, "lr_finder/trial_val_loss")] == [0, 1, 2, 3, 4]
    assert [v for _, v in read_scalars(tmp_path, "lr_finder/trial_rung")] == [0, 0, 0, 1, 1]
    assert len(read_scalars(tmp_path, "lr_finder/trial0/loss")) == 8
    assert len(read_scalars(tmp_path, "lr_finder/trial3/loss")) == 16
    (text,) = read_text(tmp_path, "lr_finder/summary")
    assert f"chosen after the trials: **{finder.result.chosen_lr:.3g}**" in text


@pytest.mark.parametrize("candidates", [[50.0, 100.0], [1e6, 1e7]])
def test_candidates_that_all_end_worse_than_where_they_began_are_not_applied(tmp_path, candidates):
    """Every candidate of the user's list blows the model up (finite losses far above the start, or NaN): none
    trains here, so none is applied and the run keeps its LR (flag ``trials_failed``). Before, the least bad was
    applied as a clear win (a reviewer's digits MLP: 50, 200× the sweep's answer, at a validation loss of 75.7
    against 2.3 at the start), or, all NaN, the finder's own answer as "within noise"."""
    finder = LRFinder(num_steps=30, confirm=candidates, confirm_length="16 steps")
    model, _ = fit(tmp_path, finder)
    result = finder.result
    assert "trials_failed" in result.flags and "trials_inconclusive" not in result.flags
    assert result.chosen_lr is None and result.choice is None
    assert model.optimizers().param_groups[0]["lr"] == pytest.approx(0.1)  # the module's own LR, kept
    assert "every candidate made things worse; nothing applied" in result.summary()


class Bowl(pl.LightningModule):
    """``0.5 (w − 1)²`` from ``w = 0``, for training and validation alike: SGD multiplies ``w − 1`` by ``1 − lr``
    each step, so an LR above 2 makes the loss grow ``(lr − 1)²``-fold a step, and the validation loss has no
    spread between batches."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.w - 1.0).pow(2).sum()

    def training_step(self, batch, batch_idx):
        return self.loss()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_trials_are_judged_against_the_restored_state_not_the_sweeps_diverged_end(tmp_path):
    """16 steps at 2.1 take the validation loss from 0.5 to 10.6, at 2.2 to 171: both worse than the start, so
    neither is applied. Before, the start was scored at the weights the sweep had left, diverged (4.7e10): 2.1 read
    as no worse than the start and was applied."""
    finder = LRFinder(min_lr=1e-3, max_lr=100.0, num_steps=30, confirm=[2.1, 2.2], confirm_length="16 steps")
    model = Bowl()
    trainer = make_trainer(tmp_path, max_steps=1, callbacks=[finder], logger=False, limit_val_batches=1.0)
    trainer.fit(model, shuffled(), val_loader())
    result = finder.result
    assert result.stop_reason == "diverged" and result.losses[-1] > 1e6  # the sweep left the weights blown up
    assert [t.val_loss for t in result.trials] == pytest.approx([10.557, 170.91], rel=1e-3)
    assert "trials_failed" in result.flags and result.chosen_lr is None
    assert model.optimizers().param_groups[0]["lr"] == pytest.approx(0.1)  # the module's own LR, kept


def test_the_result_and_tensorboard_carry_the_score_of_the_state_the_trials_started_from(tmp_path):
    """The trials are compared with the validation loss of the state they start from (``all_worse``): the result
    keeps it with its standard error, and TensorBoard shows it beside the trials. Before, it was only in the log
    warning of a ``trials_failed`` run: a reader of the result could not see what the trials were compared with."""
    torch.manual_seed(0)
    model = FinderModel(optimizer=sgd())
    torch.manual_seed(0)
    untrained = FinderModel(optimizer=sgd())  # the same weights, validated by Lightning
    (plain,) = make_trainer(tmp_path / "plain", logger=False).validate(untrained, val_loader(), verbose=False)
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2], confirm_length="8 steps", apply=False)
    fit(tmp_path / "run", finder, model=model)
    result = finder.result
    assert len(result.trials) == 2
    assert result.start_val_loss == pytest.approx(plain["val_loss"], rel=1e-6) and result.start_se > 0
    failed = all_worse(
        [t.val_loss for t in result.trials], [t.se for t in result.trials], result.start_val_loss, result.start_se
    )
    assert failed == ("trials_failed" in result.flags)  # the very numbers the decision was taken on
    assert read_scalars(tmp_path / "run", "lr_finder/start_val_loss") == [(0, pytest.approx(result.start_val_loss))]
    assert read_scalars(tmp_path / "run", "lr_finder/start_se") == [(0, pytest.approx(result.start_se))]
    (text,) = read_text(tmp_path / "run", "lr_finder/summary")
    assert f"The state the trials started from: validation loss {result.start_val_loss:.6g} ±" in text


def test_a_trials_failed_summary_shows_the_score_every_candidate_ended_above(tmp_path):
    """On the bowl the state the trials start from scores 0.5 (w = 0), with no spread between batches; both
    candidates end far above it. The summary says so with the numbers (before, it said "every candidate made things
    worse" without what they were compared with)."""
    finder = LRFinder(min_lr=1e-3, max_lr=100.0, num_steps=30, confirm=[2.1, 2.2], confirm_length="16 steps")
    trainer = make_trainer(tmp_path, max_steps=1, callbacks=[finder], logger=False, limit_val_batches=1.0)
    trainer.fit(Bowl(), shuffled(), val_loader())
    result = finder.result
    assert "trials_failed" in result.flags
    assert (result.start_val_loss, result.start_se) == (0.5, 0.0)
    summary = result.summary()
    assert "every candidate made things worse; nothing applied" in summary
    assert "The state the trials started from: validation loss 0.5 ± 0." in summary
    assert FinderResult.from_dict(result.to_dict()) == result


def test_confirm_length_sets_the_trials_length(tmp_path):
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2], confirm_length="50%", apply=False)
    fit(tmp_path, finder, max_steps=6, logger=False)
    assert [len(t.losses) for t in finder.result.trials] == [3, 3]


def test_with_lrschedule_a_trial_is_the_whole_schedule_compressed(tmp_path):
    """Warmup and decay both happen inside the trial: a 4-step trial of a 20-step run takes every 5th step."""
    schedule = LRSchedule("cosine", warmup="4 steps", log_plan=False)
    finder = LRFinder(num_steps=30, confirm=[0.01, 0.02], confirm_length="4 steps")
    model, _ = fit(tmp_path, finder, callbacks=[schedule], max_steps=20, logger=False)
    n = len(finder.result.lrs)
    trial_lrs = [lr for lr, _ in model.calls[n : n + 8]]
    shape = preset("cosine", warmup="4 steps")
    expected = [lr * shape(k, 20, 8) for lr in (0.01, 0.02) for k in (0, 5, 10, 15)]
    assert trial_lrs == pytest.approx(expected, rel=1e-9)
    assert schedule.peak_lrs[0][0] == pytest.approx(finder.result.chosen_lr)


def test_a_schedule_that_does_not_cool_down_gets_a_cooldown_in_its_trials(tmp_path):
    schedule = LRSchedule("constant", log_plan=False)
    finder = LRFinder(num_steps=30, confirm=[0.01, 0.02], confirm_length="8 steps")
    model, _ = fit(tmp_path, finder, callbacks=[schedule], max_steps=20, logger=False)
    n = len(finder.result.lrs)
    trial_lrs = [lr for lr, _ in model.calls[n : n + 8]]
    assert trial_lrs == pytest.approx([0.01 * cooldown(t, 8) for t in range(8)], rel=1e-9, abs=1e-15)
    assert trial_lrs[-1] == 0.0 and trial_lrs[5] == 0.01


class Scheduled(FinderModel):
    """FinderModel with the user's scheduler, configured as ``config``: a StepLR halving the LR each time it steps,
    by hand after each step under manual optimization; or (``plateau``) a ReduceLROnPlateau on ``val_loss``,
    patience 0, that would halve it at the first epoch's end that validates."""

    def __init__(self, config: dict, manual: bool = False, plateau: bool = False, lr: float = 0.1) -> None:
        super().__init__(optimizer=sgd(lr, lr / 10), dropout=0.0)
        self.config, self.plateau, self.automatic_optimization = config, plateau, not manual

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if not self.automatic_optimization:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self.lr_schedulers().step()
        return loss

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        if self.plateau:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, threshold=10.0)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **self.config}}


@pytest.mark.parametrize(
    ("config", "manual", "accumulate"),
    [
        ({"interval": "step"}, True, 1),  # Lightning never steps it under manual optimization; the step does
        ({"interval": "step", "frequency": 2}, False, 2),  # frequency counts batches (batch_idx + 1), not steps
        ({"interval": "epoch"}, False, 1),  # Lightning's default interval: where an epoch ends
        ({"interval": "epoch", "frequency": 2}, False, 2),  # every second epoch's end
    ],
)
def test_a_trial_steps_the_users_scheduler_where_lightning_steps_it(tmp_path, config, manual, accumulate):
    """Without LRSchedule a trial is the first steps of the real run: each of its optimizer steps runs at the LRs
    of a plain run of the same length at its peak, here over epochs of 5 batches (3 steps under accumulation)."""
    data = loader(regression_data(40), batch_size=8)
    finder = LRFinder(num_steps=10, confirm=[0.01, 0.02], confirm_length="8 steps", apply=False)
    options = dict(logger=False, accumulate_grad_batches=accumulate, limit_val_batches=1.0)
    model = Scheduled(config, manual)
    make_trainer(tmp_path / "a", max_steps=1, callbacks=[finder], **options).fit(model, data, val_loader())
    n = len(finder.result.lrs)
    for index, lr in enumerate((0.01, 0.02)):
        trial = model.seen_lrs[n + 8 * index : n + 8 * (index + 1)]
        plain = Scheduled(config, manual, lr=lr)
        make_trainer(tmp_path / f"plain{index}", max_steps=8, **options).fit(plain, data, val_loader())
        assert len(set(map(tuple, plain.seen_lrs))) > 1  # the scheduler did step in the real run
        every_group = [lr for lrs in plain.seen_lrs for lr in lrs]
        assert [lr for lrs in trial for lr in lrs] == pytest.approx(every_group, rel=1e-12)


def test_a_trial_holds_a_reduce_on_plateau_schedulers_lr(tmp_path):
    """ReduceLROnPlateau reads a metric from the run's logs, which a trial neither writes nor validates for before
    its end: the trial is not stepped on it (here the real run would halve the LR at the first epoch's end)."""
    data = loader(regression_data(40), batch_size=8)
    finder = LRFinder(num_steps=10, confirm=[0.01, 0.02], confirm_length="8 steps", apply=False)
    model = Scheduled({}, plateau=True)
    make_trainer(tmp_path, max_steps=1, callbacks=[finder], logger=False).fit(model, data, val_loader())
    n = len(finder.result.lrs)
    assert [lrs[0] for lrs in model.seen_lrs[n : n + 16]] == pytest.approx([0.01] * 8 + [0.02] * 8, rel=1e-12)


def test_trials_within_noise_take_the_candidate_nearest_the_sweeps_answer(tmp_path):
    """LRs so small that training does not move: the trials tie, the choice is the one nearest the sweep's
    answer, and the result says the trials were inconclusive."""
    finder = LRFinder(num_steps=30, confirm=[1e-12, 2e-12], confirm_length="8 steps")
    fit(tmp_path, finder, logger=False)
    result = finder.result
    assert result.trials[0].val_loss == pytest.approx(result.trials[1].val_loss, rel=1e-6)
    assert result.chosen_lr == 2e-12 and "trials_inconclusive" in result.flags
    assert "trials_inconclusive" in result.summary()


def test_the_default_sweep_follows_the_run_and_an_expensive_finder_warns(tmp_path):
    finder = LRFinder(divergence_threshold=None, probe=False)
    fit(tmp_path / "a", finder, max_steps=200, logger=False)
    assert finder.result.lrs == sweep_lrs(1e-7, 10.0, 50)  # a quarter of a 200-step run
    short = LRFinder(divergence_threshold=None, probe=False)
    readable = r"the sweep \(40 steps\) .* 100% of the training run .* a sweep that can be read"
    with pytest.warns(UserWarning, match=readable):
        fit(tmp_path / "s", short, max_steps=40, logger=False)
    assert short.result.lrs == sweep_lrs(1e-7, 10.0, 40)  # not a quarter (10): one point per 0.2 decade of 8
    confirm = LRFinder(divergence_threshold=None, confirm=[1e-3, 1e-2])
    fit(tmp_path / "b", confirm, max_steps=100, logger=False)
    assert len(confirm.result.lrs) == 10  # a tenth with a list of candidates ...
    assert [len(t.losses) for t in confirm.result.trials] == [12, 12]  # ... and the trials the rest of 35%
    message = r"the sweep \(100 steps\) is planned to take 100 optimizer steps, 100% of the training run .* shorten"
    with pytest.warns(UserWarning, match=message):
        fit(tmp_path / "c", LRFinder(num_steps=100, probe=False), max_steps=100, logger=False)
    # the stability probe counts too: a 180-step run's default sweep (45) and probe (at least 20) pass 35%
    probed = r"the sweep \(45 steps\) and the stability probe \(20 steps a hold, .* planned to take 65 .*probe=False"
    with pytest.warns(UserWarning, match=probed):
        fit(tmp_path / "d", LRFinder(divergence_threshold=None), max_steps=180, logger=False)
    # with LRSchedule's warmup the probe replays it before its hold (the callbacks are out of the trainer while the
    # finder drives it: the warning had read no schedule, so no warmup)
    finder = LRFinder(divergence_threshold=None)
    with pytest.warns(UserWarning, match=r"the stability probe \(\d+ steps a hold") as seen:
        fit(tmp_path / "e", finder, max_steps=180, logger=False, callbacks=[LRSchedule("cosine", warmup="10%")])
    (said,) = [re.search(r"probe \((\d+) steps a hold", str(w.message)) for w in seen if "probe (" in str(w.message)]
    probe = finder.result.probe
    assert said is not None and probe is not None and probe.warmup_steps > 0  # the warmup up to the peak, replayed
    assert int(said.group(1)) == probe.warmup_steps + probe.hold_steps  # what the first hold really took


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


def test_confirm_needs_validation_data_and_says_so_before_the_sweep(tmp_path):
    finder = LRFinder(num_steps=30, confirm=True)
    trainer = make_trainer(tmp_path, max_steps=1, logger=False, callbacks=[finder])
    model = FinderModel(optimizer=sgd())
    with pytest.raises(ValueError, match=r"compares trials on the validation loss, but the trainer has no validation"):
        trainer.fit(model, shuffled())
    assert model.calls == []  # no step of the sweep or the probe was spent


def test_confirm_finds_validation_data_that_lightning_loads_only_at_the_first_validating_epoch(tmp_path):
    """``check_val_every_n_epoch=2`` without a sanity check: Lightning has not loaded the validation data at fit
    start, where the finder runs. Before, confirm mode was refused for "no validation data" that was passed."""
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2], confirm_length="8 steps")
    fit(tmp_path, finder, check_val_every_n_epoch=2, num_sanity_val_steps=0, logger=False)
    assert [t.lr for t in finder.result.trials] == [1e-3, 1e-2]
    assert all(math.isfinite(t.val_loss) for t in finder.result.trials)


def test_a_confirm_length_without_confirm_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"`confirm_length` \(0.05 of the run\) is the length of the confirm trials, "
                       r"but confirm is off; pass confirm=True"):  # fmt: skip
        LRFinder(confirm_length="5%")


def test_a_monitor_without_confirm_is_refused_at_construction():
    """As ``confirm_length``: the trials are what it scores. Before, it was accepted and never used."""
    with pytest.raises(ValueError, match=r"`monitor` \('val_acc'\) is the validation value the confirm trials are "
                       r"scored on, but confirm is off; pass confirm=True"):  # fmt: skip
        LRFinder(monitor="val_acc")
    assert LRFinder(monitor="val_acc", confirm=True).monitor == "val_acc"


def test_a_confirm_length_of_zero_steps_for_this_run_is_refused(tmp_path):
    """Nothing at construction ("0 steps" is refused there); a length too small to round up to a step here."""
    finder = LRFinder(num_steps=30, confirm=[1e-3, 1e-2], confirm_length="1e-12 epochs")
    with pytest.raises(ValueError, match=r"`confirm_length` 1e-12 epochs is 0 steps for this run; lengthen it"):
        fit(tmp_path, finder, logger=False)


@pytest.mark.parametrize(
    ("length", "match"),
    [
        (None, r"LRFinder: the run's length is unknown.*give confirm_length in steps \('200 steps': an epoch's is"),
        ("1 epochs", r"LRFinder: `confirm_length` 1 epochs: a duration of 1 epochs needs the epoch length"),
        ("5%", r"LRFinder: `confirm_length` 0.05 of the run: a duration of 0.05 of the run needs the run's total"),
    ],
)
def test_on_a_stream_of_unknown_length_the_error_names_confirm_length_and_a_length_that_works(tmp_path, length, match):
    """Before, the default's error advised "in steps or epochs", and an epoch's length is unknown there too: given
    in epochs, the next error named neither the finder nor the argument. Both come before the sweep."""
    finder = LRFinder(num_steps=30, confirm=True, confirm_length=length)
    model = FinderModel(optimizer=sgd())
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[finder], logger=False, limit_val_batches=1.0)
    with pytest.raises(ValueError, match=match):
        trainer.fit(model, stream(), val_loader())
    assert model.calls == []


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_the_sweep_and_the_trials_run_at_a_true_precision(tmp_path, precision):
    """Lightning's loop casts a batch to a true precision before the step (``convert_input``); the finder's sweep,
    probe and validated trials feed theirs the same way (before: ``mat1 and mat2 must have the same dtype`` at the
    first sweep step)."""
    finder = LRFinder(num_steps=30, confirm=True, confirm_length="4 steps")
    _, trainer = fit(tmp_path, finder, max_steps=1, precision=precision)
    assert finder.result is not None and finder.result.trials
    assert trainer.global_step == 1


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_trials_score_the_first_of_several_validation_loaders_as_lightning_numbers_it(tmp_path, kind):
    """With several validation loaders Lightning passes ``dataloader_idx`` to ``validation_step`` (which may take it
    without a default) and numbers a dict's loaders in order. Before, the trials called the step without it (a
    ``TypeError``), and iterated a dict as its keys (a string for a batch)."""

    class SeveralLoaders(FinderModel):
        def __init__(self) -> None:
            super().__init__(optimizer=sgd())
            self.indices: list[int] = []

        def validation_step(self, batch, batch_idx, dataloader_idx):  # no default, as Lightning allows
            self.indices.append(dataloader_idx)
            self.log("val_loss", batch[1].mean())

    def constant(value: float) -> torch.utils.data.DataLoader:
        return loader(torch.utils.data.TensorDataset(torch.zeros(16, 4), torch.full((16, 1), value)), batch_size=8)

    first, second = constant(1.0), constant(5.0)
    model = SeveralLoaders()
    finder = LRFinder(num_steps=20, confirm=[1e-3, 1e-2], confirm_length="2 steps")
    trainer = make_trainer(tmp_path, max_steps=1, logger=False, callbacks=[finder])
    trainer.fit(model, shuffled(), [first, second] if kind == "list" else {"first": first, "second": second})
    assert [t.val_loss for t in finder.result.trials] == [1.0, 1.0]  # the first loader's
    assert set(model.indices) == {0}


@pytest.mark.parametrize("monitor", ["val_loss", "val_mean"])
def test_a_validation_step_that_logs_a_torchmetrics_metric_is_scored(tmp_path, monitor):
    """``self.log(name, metric)`` (a torchmetrics ``Metric``, which Lightning computes at the epoch's end) beside the
    monitored loss, or monitored itself: its value over the evaluation. Before, the trials converted every logged
    value to a tensor, and a ``Metric`` raised ``TypeError``."""
    import torchmetrics

    class Metered(FinderModel):
        def __init__(self) -> None:
            super().__init__(optimizer=sgd())
            self.val_mean = torchmetrics.MeanMetric()

        def validation_step(self, batch, batch_idx):
            self.val_mean.update(batch[1])  # the targets: a value the trial's weights do not change
            self.log("val_mean", self.val_mean)
            self.log("val_loss", batch[1].mean())

    targets = torch.arange(32, dtype=torch.float32).reshape(32, 1)
    val = loader(torch.utils.data.TensorDataset(torch.zeros(32, 4), targets), batch_size=8)
    model = Metered()
    finder = LRFinder(num_steps=20, confirm=[1e-3, 1e-2], confirm_length="2 steps", monitor=monitor)
    make_trainer(tmp_path, max_steps=1, logger=False, callbacks=[finder]).fit(model, shuffled(), val)
    assert [t.val_loss for t in finder.result.trials] == pytest.approx([15.5, 15.5], rel=1e-6)
    assert float(model.val_mean.update_count) == 0  # the trials' updates are put back


def test_listed_candidates_are_not_tried_when_the_step_writes_the_lr(tmp_path, caplog):
    """The warning says no sweep can measure the LR and nothing is suggested; before, the listed candidates' trials
    ran anyway (21 steps), every one at the 1e-4 the step wrote (the same validation loss to the last digit), and
    0.001 was "chosen after the trials" and applied."""
    import logging

    finder = LRFinder(num_steps=40, confirm=(1e-3, 1e-2, 1e-1), confirm_length="6 steps")
    with caplog.at_level(logging.INFO, logger="lr_callbacks"), pytest.warns(UserWarning, match=r"nothing is suggested"):
        fit(tmp_path, finder, model=HandWarmup(optimizer=sgd()), logger=False)
    result = finder.result
    assert result.stop_reason == "lr_overridden" and result.trials == () and result.chosen_lr is None
    assert result.steps_spent == 0 and "trials_inconclusive" not in result.flags
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LRFinder: answer")]
    assert lines and lines[-1].endswith("; no answer, nothing applied")


def test_the_last_rung_is_as_long_as_confirm_length_asks(tmp_path):
    """Three candidates and "15 steps": the first rung 7 steps, the deciding rung 15. Before, the rungs were doubled
    up from the first (15 // 2 = 7, then 14), and the deciding trials ran 14 steps, not the 15 asked for."""
    assert rungs(3, final=15) == [(3, 7), (2, 15)] and rungs(5, final=2)[-1] == (2, 2)
    finder = LRFinder(num_steps=30, confirm=[1e-3, 3e-3, 1e-2], confirm_length="15 steps", apply=False)
    fit(tmp_path, finder, logger=False)
    assert [(t.rung, len(t.losses)) for t in finder.result.trials] == [(0, 7)] * 3 + [(1, 15)] * 2


class HeldCut(pl.Callback):
    """Stands for a DivergenceWatchdog holding a ×0.5 cut of the LR (core.lr_model.LRScaler): without LRSchedule the
    cut is in the optimizer's LRs, as the watchdog's set_lr_scale leaves it."""

    _lr_scale = 0.5

    def on_train_start(self, trainer, pl_module):
        for group in trainer.optimizers[0].param_groups:
            group["lr"] *= self._lr_scale


def test_without_lrschedule_a_trial_trains_under_the_watchdogs_cut_as_the_run_after_the_choice_does(tmp_path):
    """Under a ×0.5 cut, the trial of 0.04 ran at 0.04 while the run, 0.04 applied, trained at 0.02 (with LRSchedule
    the trials' lr_at holds the cut): the trials compared LRs twice those the run would train at."""
    finder = LRFinder(num_steps=20, confirm=[0.01, 0.04], confirm_length="4 steps", probe=False)
    model, _ = fit(tmp_path, finder, FinderModel(optimizer=sgd(), dropout=0.0), [HeldCut()], max_steps=2)
    trial_lrs = [lr for lr, _ in model.calls[20:28]]
    assert trial_lrs == pytest.approx([0.005] * 4 + [0.02] * 4, rel=1e-9)
    run_lrs = [lr for lr, _ in model.calls[28:]]
    assert run_lrs == pytest.approx([finder.result.chosen_lr * 0.5] * 2, rel=1e-9)
