"""LRFinder through a real Trainer: the sweep, its stop reasons, its logs, where the answer goes, every
argument, and every error."""

from __future__ import annotations

import math
import pickle
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule
from lr_callbacks.finder.ramp import sweep_lrs
from tests.finder.helpers import BatchRecorder, Capture, FinderModel, sgd, shuffled
from tests.finder.test_probe import EdgeModel
from tests.helpers import loader, make_trainer, read_events, read_scalars, read_text, regression_data, stream


def fit(tmp_path, finder, model=None, data=None, **trainer_kwargs):
    model = model if model is not None else FinderModel(optimizer=sgd())
    trainer_kwargs.setdefault("max_steps", 1)
    trainer = make_trainer(tmp_path, callbacks=[finder, *trainer_kwargs.pop("callbacks", [])], **trainer_kwargs)
    trainer.fit(model, data if data is not None else shuffled())
    return model, trainer


# --- the sweep -------------------------------------------------------------------------------------------


def test_the_sweep_ramps_every_group_together_and_records_the_raw_loss(tmp_path):
    finder = LRFinder(min_lr=1e-4, max_lr=1.0, num_steps=9, divergence_threshold=None, apply=False)
    model, _ = fit(tmp_path, finder, logger=False)
    result = finder.result
    assert result.lrs == sweep_lrs(1e-4, 1.0, 9) and result.stop_reason == "completed"
    sweep = model.calls[:9]
    assert [lr for lr, _ in sweep] == pytest.approx(result.lrs, rel=1e-12)
    assert result.losses == pytest.approx([loss for _, loss in sweep], rel=1e-6)
    assert all(n > 0 and math.isfinite(n) for n in result.grad_norms)


def test_group_ratios_are_kept_during_the_sweep(tmp_path):
    seen: list[list[float]] = []

    class Groups(FinderModel):
        def on_before_optimizer_step(self, optimizer):
            seen.append([float(g["lr"]) for g in optimizer.param_groups])

    fit(tmp_path, LRFinder(num_steps=10, min_lr=1e-3, max_lr=1.0, apply=False), Groups(optimizer=sgd()), logger=False)
    assert all(head == pytest.approx(body / 10, rel=1e-12) for body, head in seen[:10])


def test_gradient_accumulation_makes_one_sweep_step_of_several_batches(tmp_path):
    finder = LRFinder(num_steps=8, min_lr=1e-4, max_lr=1e-2, divergence_threshold=None, apply=False)
    model, _ = fit(tmp_path, finder, accumulate_grad_batches=3, logger=False)
    sizes = [3, 3, 2] * 2 + [3, 3]  # 8 batches a pass: its last two are a step, as in Lightning's epochs
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    calls = model.calls[: sum(sizes)]
    lrs = [lr for lr, n in zip(finder.result.lrs, sizes) for _ in range(n)]
    assert [lr for lr, _ in calls] == pytest.approx(lrs, rel=1e-12)
    means = [sum(loss for _, loss in calls[i : i + n]) / n for i, n in zip(starts, sizes)]
    assert finder.result.losses == pytest.approx(means, rel=1e-6)  # the step's loss, not a third of the last batch


def test_under_a_gradient_accumulation_scheduler_the_sweep_accumulates_as_the_epoch_does(tmp_path):
    """``GradientAccumulationScheduler({0: 3})`` sets the factor in its ``on_train_epoch_start``, after the finder
    (at ``on_train_start``) has run: the sweep stepped on every batch, at a third of the run's batch size."""
    from pytorch_lightning.callbacks import GradientAccumulationScheduler

    finder = LRFinder(num_steps=8, min_lr=1e-4, max_lr=1e-2, divergence_threshold=None, apply=False)
    model, _ = fit(tmp_path, finder, logger=False, callbacks=[GradientAccumulationScheduler({0: 3})])
    sizes = [3, 3, 2] * 2 + [3, 3]  # as under Trainer(accumulate_grad_batches=3)
    lrs = [lr for lr, n in zip(finder.result.lrs, sizes) for _ in range(n)]
    assert [lr for lr, _ in model.calls[: sum(sizes)]] == pytest.approx(lrs, rel=1e-12)


def test_gradient_clipping_applies_and_the_norm_is_read_before_it(tmp_path):
    clipped: list[float] = []

    class Norms(FinderModel):
        def on_before_optimizer_step(self, optimizer):  # Lightning clips right after this hook
            clipped.append(0.0)

        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            clipped[-1] = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    finder = LRFinder(num_steps=20, min_lr=1e-2, max_lr=10.0, divergence_threshold=None, apply=False)
    fit(tmp_path, finder, Norms(optimizer=sgd()), gradient_clip_val=0.05, logger=False)
    assert max(clipped[:20]) <= 0.05 + 1e-6
    assert max(finder.result.grad_norms) > 0.05  # the recorded norm is the unclipped one


def test_it_stops_when_the_loss_diverges(tmp_path):
    finder = LRFinder(num_steps=60, max_lr=100.0, apply=False)
    fit(tmp_path, finder, logger=False)
    result = finder.result
    assert result.stop_reason == "diverged" and len(result.lrs) < 60
    assert result.losses[-1] > 5 * min(result.losses)


def test_it_stops_at_once_on_nan(tmp_path):
    model = FinderModel(optimizer=sgd(), loss_hook=lambda step, loss: loss * float("nan") if loss > 0 else loss)
    finder = LRFinder(num_steps=20, apply=False)
    fit(tmp_path, finder, model, logger=False)
    assert finder.result.stop_reason == "diverged" and len(finder.result.lrs) == 1
    assert finder.result.suggestion is None and finder.result.flags == ("too_short", "nonfinite")


def test_a_sweep_stopped_by_nan_while_the_loss_fell_is_not_flagged_min_at_end(tmp_path):
    """The loss fell at every one of the 30 steps, then turned NaN: the sweep stopped at the blow-up, where "raise
    max_lr" (min_at_end, before) was the wrong advice."""
    calls: list[int] = []

    def script(step: int, loss: torch.Tensor) -> torch.Tensor:
        calls.append(step)
        k = len(calls)
        value = math.nan if k == 31 else 2.0 - 0.05 * k + 0.01 * (-1) ** k
        return loss - loss.detach() + value

    finder = LRFinder(num_steps=40, min_lr=1e-5, max_lr=1e-1, apply=False, probe=False)
    fit(tmp_path, finder, FinderModel(optimizer=sgd(), loss_hook=script), logger=False)
    result = finder.result
    assert result.stop_reason == "diverged" and len(result.lrs) == 31 and math.isnan(result.losses[-1])
    assert result.flags == ("nonfinite",) and result.range[1] == result.lrs[29]
    assert "raise max_lr" not in result.summary()


def test_a_pass_shorter_than_a_step_is_a_step_as_lightning_trains_it(tmp_path):
    """Two batches a pass, three per optimizer step: Lightning steps at the end of each epoch on the two, and so
    does the sweep (before, it found no complete step and gave no answer, silently)."""
    finder = LRFinder(num_steps=20, divergence_threshold=None, apply=False)
    model, _ = fit(
        tmp_path, finder, data=loader(regression_data(16), batch_size=8), accumulate_grad_batches=3, logger=False
    )
    assert finder.result.stop_reason == "completed" and len(finder.result.lrs) == 20
    calls = model.calls[:40]
    assert [lr for lr, _ in calls] == pytest.approx([lr for lr in finder.result.lrs for _ in range(2)], rel=1e-12)
    means = [(calls[i][1] + calls[i + 1][1]) / 2 for i in range(0, 40, 2)]
    assert finder.result.losses == pytest.approx(means, rel=1e-6)


class Once(torch.utils.data.IterableDataset):
    """Two batches of 8 the first time it is iterated (Lightning may take that pass itself while it sets the fit
    up), and nothing after: a stream that cannot restart."""

    def __init__(self) -> None:
        self.used = False

    def __iter__(self):
        if self.used:
            return iter(())
        self.used = True
        x, y = regression_data(16).tensors
        return iter(list(zip(x, y)))


def test_it_stops_when_the_data_runs_out(tmp_path):
    finder = LRFinder(num_steps=20, apply=False)
    fit(tmp_path, finder, data=torch.utils.data.DataLoader(Once(), batch_size=8), max_steps=1, logger=False)
    assert finder.result.stop_reason == "data_exhausted" and len(finder.result.lrs) <= 2


def test_it_runs_pass_after_pass_over_short_data(tmp_path):
    finder = LRFinder(num_steps=20, min_lr=1e-4, max_lr=1e-3, apply=False)
    _model, _ = fit(tmp_path, finder, data=loader(regression_data(24), batch_size=8), logger=False)
    assert finder.result.stop_reason == "completed" and len(finder.result.lrs) == 20


def test_it_respects_limit_train_batches(tmp_path):
    recorder = BatchRecorder()

    class Seen(FinderModel):
        def training_step(self, batch, batch_idx):
            recorder.seen.append(float(batch[0][0, 0]))
            return super().training_step(batch, batch_idx)

    data = loader(regression_data(64), batch_size=8)
    fit(tmp_path, LRFinder(num_steps=8, apply=False), Seen(optimizer=sgd()), data, limit_train_batches=3, logger=False)
    firsts = [float(x[0, 0]) for x, _ in data][:3]
    assert recorder.seen[:8] == firsts + firsts + firsts[:2]


def test_self_log_in_the_users_hooks_does_not_break_or_leak(tmp_path):
    """FinderModel logs with on_step=True, which Lightning refuses outside training_step."""
    model, trainer = fit(tmp_path, LRFinder(num_steps=20), max_steps=2)
    steps = [s for s, _ in read_scalars(tmp_path, "train_loss_step")]
    assert steps == [0, 1]
    assert float(trainer.callback_metrics["train_loss_epoch"]) == pytest.approx(
        sum(loss for _, loss in model.calls[-2:]) / 2, rel=1e-6
    )


def test_data_loaders_with_persistent_workers_and_their_own_generator(tmp_path):
    def data():
        generator = torch.Generator().manual_seed(7)
        return torch.utils.data.DataLoader(
            regression_data(32), batch_size=8, shuffle=True, generator=generator, num_workers=1, persistent_workers=True
        )

    def run(finder):
        recorder = BatchRecorder()
        torch.manual_seed(0)
        callbacks = [finder, recorder] if finder else [recorder]
        trainer = make_trainer(tmp_path, max_epochs=2, logger=False, callbacks=callbacks)
        trainer.fit(FinderModel(optimizer=sgd()), data())
        return recorder.seen

    assert run(LRFinder(num_steps=10, apply=False, epochs=[1])) == run(None) == run(LRFinder(num_steps=10, apply=False))


# --- where the answer goes -------------------------------------------------------------------------------


def test_apply_writes_the_answer_and_apply_false_only_reports(tmp_path):
    applied = Capture()
    finder = LRFinder(num_steps=30)
    fit(tmp_path / "a", finder, callbacks=[applied], logger=False)
    body, head = (g["lr"] for g in applied.states[0]["groups"][0])
    assert body == pytest.approx(finder.result.chosen_lr, rel=1e-12) and head == pytest.approx(body / 10)

    kept = Capture()
    fit(tmp_path / "b", LRFinder(num_steps=30, apply=False), callbacks=[kept], logger=False)
    assert [g["lr"] for g in kept.states[0]["groups"][0]] == [0.1, 0.01]


def test_with_lrschedule_it_is_paused_during_the_sweep_and_the_answer_becomes_its_peak(tmp_path):
    schedule = LRSchedule("constant", log_plan=False)
    finder = LRFinder(num_steps=30)
    model, _ = fit(tmp_path, finder, callbacks=[schedule], max_steps=3, logger=False)
    assert schedule.steps == [3]  # the sweep's steps did not move its clock
    chosen = finder.result.chosen_lr  # the suggestion, or less where the stability probe halved it
    assert schedule.peak_lrs[0] == pytest.approx([chosen, chosen / 10])
    assert [lr for lr, _ in model.calls[-3:]] == pytest.approx([chosen] * 3, rel=1e-12)
    assert [lr for lr, _ in model.calls[: len(finder.result.lrs)]] == pytest.approx(finder.result.lrs, rel=1e-12)


def test_it_runs_again_at_given_epochs_without_breaking_the_loop(tmp_path):
    finder = LRFinder(num_steps=20, epochs=[1, 2])
    _model, trainer = fit(tmp_path, finder, max_steps=-1, max_epochs=3)
    assert [r.epoch for r in finder.results] == [0, 1, 2]
    assert [r.global_step for r in finder.results] == [0, 8, 16]
    assert trainer.global_step == 24
    tags = read_events(tmp_path).Tags()["scalars"]
    assert {"lr_finder/loss", "lr_finder/epoch1/loss", "lr_finder/epoch2/loss"} <= set(tags)
    answered = [r.global_step for r in finder.results if r.suggestion is not None]
    assert answered[0] == 0 and [s for s, _ in read_scalars(tmp_path, "lr_finder/suggestion")] == answered


def test_a_run_of_unknown_length_is_swept(tmp_path):
    """max_epochs over an iterable dataset: Lightning's estimated_stepping_batches is -1 there (before, the finder
    read it as a run of -1 steps and raised)."""
    watchdog = DivergenceWatchdog()
    finder = LRFinder(num_steps=20)
    _model, trainer = fit(
        tmp_path,
        finder,
        FinderModel(),
        stream(12),
        max_steps=-1,
        max_epochs=1,
        callbacks=[watchdog],
        logger=False,
    )
    assert trainer.estimated_stepping_batches == -1 and trainer.global_step == 12
    assert len(finder.result.lrs) == 20 and finder.result.stop_reason == "completed"
    assert watchdog._policy.state.snapshot_every == 100  # the watchdog's cadence for a run of unknown length


def test_at_fit_start_false_runs_only_at_the_epochs(tmp_path):
    finder = LRFinder(num_steps=20, at_fit_start=False, epochs=[1])
    fit(tmp_path, finder, max_steps=-1, max_epochs=2, logger=False)
    assert [r.epoch for r in finder.results] == [1]


@pytest.mark.parametrize(
    ("max_steps", "accumulate", "listed", "said"),
    [
        (16, 1, [1, 3], r"epochs \[3\] are past the run's last epoch \(1, max_steps=16 at 8 steps an epoch\)"),
        (16, 2, [3, 4, 6], r"epochs \[4, 6\] are past the run's last epoch \(3, max_steps=16 at 4 steps an epoch\)"),
    ],
)
def test_epochs_past_the_end_max_steps_sets_are_said_at_fit_start(tmp_path, max_steps, accumulate, listed, said):
    """8 batches an epoch, max_steps=16: the fit ends with epoch 1, and the finder listed at epoch 3 never ran, without
    a word (only max_epochs was checked)."""
    finder = LRFinder(num_steps=10, min_lr=1e-3, max_lr=0.1, at_fit_start=False, epochs=listed, probe=False)
    with pytest.warns(UserWarning, match=said + r": the finder never runs at them; .*raise max_steps") as caught:
        _model, trainer = fit(tmp_path, finder, max_steps=max_steps, max_epochs=-1, accumulate_grad_batches=accumulate)
    assert sum("past the run" in str(w.message) for w in caught) == 1  # once
    assert trainer.global_step == max_steps and [r.epoch for r in finder.results] == [listed[0]]


def test_an_epoch_max_steps_ends_inside_is_not_said_to_be_past_the_run(tmp_path):
    """17 steps at 8 an epoch: epoch 2 starts (16 steps before it) and the finder runs there."""
    finder = LRFinder(num_steps=10, min_lr=1e-3, max_lr=0.1, at_fit_start=False, epochs=[2], apply=False, probe=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, finder, max_steps=17, max_epochs=-1, logger=False)
    assert not [w for w in caught if "past the run" in str(w.message)]
    assert [r.epoch for r in finder.results] == [2]


# --- reporting -------------------------------------------------------------------------------------------


def test_tensorboard_gets_the_curve_the_answer_an_image_and_a_summary(tmp_path):
    finder = LRFinder(num_steps=40)
    fit(tmp_path, finder)
    result = finder.result
    n = len(result.lrs)
    assert read_scalars(tmp_path, "lr_finder/loss") == [
        (i, pytest.approx(v, rel=1e-6)) for i, v in enumerate(result.losses)
    ]
    assert read_scalars(tmp_path, "lr_finder/lr") == [(i, pytest.approx(v, rel=1e-6)) for i, v in enumerate(result.lrs)]
    assert len(read_scalars(tmp_path, "lr_finder/grad_norm")) == n
    assert read_scalars(tmp_path, "lr_finder/suggestion") == [(0, pytest.approx(result.suggestion, rel=1e-6))]
    assert read_scalars(tmp_path, "lr_finder/chosen_lr") == [(0, pytest.approx(result.chosen_lr, rel=1e-6))]
    events = read_events(tmp_path)
    assert "lr_finder/curve" in events.Tags()["images"]
    image = events.Images("lr_finder/curve")[0]
    assert image.width > 300 and image.height > 200
    (text,) = read_text(tmp_path, "lr_finder/summary")
    assert f"{result.suggestion:.3g}" in text and result.stop_reason in text


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_respects_enable_progress_bar(tmp_path, capfd, enabled):
    fit(tmp_path, LRFinder(num_steps=10, min_lr=1e-4, max_lr=1e-3), logger=False, enable_progress_bar=enabled)
    captured = capfd.readouterr()
    assert ("LRFinder" in captured.err + captured.out) is enabled


# --- every argument changes something --------------------------------------------------------------------


def test_mode_linear_spaces_the_lrs_evenly(tmp_path):
    finder = LRFinder(min_lr=0.01, max_lr=0.1, num_steps=10, mode="linear", divergence_threshold=None, apply=False)
    fit(tmp_path, finder, logger=False)
    assert finder.result.lrs == pytest.approx([0.01 * (i + 1) for i in range(10)])


def test_method_window_and_divergence_threshold_change_the_answer(tmp_path):
    def result(**kwargs):
        torch.manual_seed(0)
        finder = LRFinder(num_steps=60, max_lr=100.0, apply=False, **kwargs)
        fit(tmp_path, finder, logger=False)
        return finder.result

    default = result()
    assert result(method="min_div_10").suggestion == pytest.approx(default.range[1] / 10)
    assert result(method="steepest").method == "steepest"
    assert result(window=0.6).smoothed != default.smoothed
    run_on = result(divergence_threshold=None)
    assert run_on.stop_reason == "completed" and len(run_on.lrs) == 60 > len(default.lrs)


# --- manual optimization ---------------------------------------------------------------------------------


class Manual(FinderModel):
    def __init__(self, returns_loss: bool = True) -> None:
        super().__init__(optimizer=sgd())
        self.automatic_optimization = False
        self.returns_loss = returns_loss

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        loss = torch.nn.functional.mse_loss(self(batch[0]), batch[1])
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.calls.append((float(optimizer.param_groups[0]["lr"]), float(loss)))
        return loss if self.returns_loss else None


def test_manual_optimization_sweeps_one_step_per_training_step(tmp_path):
    finder = LRFinder(num_steps=30)
    model, _ = fit(tmp_path, finder, Manual(), max_steps=2, logger=False)
    n = len(finder.result.lrs)
    assert [lr for lr, _ in model.calls[:n]] == pytest.approx(finder.result.lrs, rel=1e-12)
    assert finder.result.suggestion is not None
    assert len(model.calls) == n + finder.result.probe.steps + 2
    assert [lr for lr, _ in model.calls[-2:]] == pytest.approx([finder.result.chosen_lr] * 2, rel=1e-12)


class TwoOptimizers(FinderModel):
    """Manual optimization stepping two optimizers every training step (body, then head and norm)."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def configure_optimizers(self):
        rest = [p for n, p in self.named_parameters() if not n.startswith("body")]
        return [torch.optim.SGD(self.body.parameters(), lr=0.1), torch.optim.SGD(rest, lr=0.01)]

    def training_step(self, batch, batch_idx):
        optimizers = self.optimizers()
        loss = torch.nn.functional.mse_loss(self(batch[0]), batch[1])
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(loss)
        for optimizer in optimizers:
            optimizer.step()
        self.log("train_loss", loss, on_step=True)
        return loss


def test_with_two_optimizers_it_reports_at_the_runs_step_not_at_both_optimizers_step_count(tmp_path):
    """Lightning's ``global_step`` counts each optimizer's steps: 16 after 8 training steps with two optimizers, while
    the run's own metrics are logged at step 8. Before, a finder at epoch 1 reported step 16 and logged its answer
    and cost there, past the run's own curves."""
    finder = LRFinder(num_steps=20, epochs=[1])
    _model, trainer = fit(tmp_path, finder, TwoOptimizers(), max_steps=-1, max_epochs=2)
    assert trainer.global_step == 32  # 2 epochs of 8 training steps, 2 optimizer steps each
    assert [r.global_step for r in finder.results] == [0, 8]
    assert [s for s, _ in read_scalars(tmp_path, "lr_finder/epoch1/steps_spent")] == [8]
    assert [s for s, _ in read_scalars(tmp_path, "train_loss")] == list(range(16))
    assert read_text(tmp_path, "lr_finder/summary")[-1].startswith("**LR finder** at step 8 (epoch 1)")


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_lr": 0.0}, ValueError, r"`min_lr` must be > 0, got 0.0"),
        ({"max_lr": "1"}, TypeError, r"`max_lr` must be a number"),
        ({"min_lr": 1.0, "max_lr": 0.1}, ValueError, r"`max_lr` must be above `min_lr`, got min_lr=1.0, max_lr=0.1"),
        (
            {"min_lr": 1e-320},  # a subnormal: before, accepted, and the fit failed with an OverflowError
            ValueError,
            r"LRFinder: `min_lr` is too small for `max_lr`: from min_lr=1e-320 to max_lr=10.0 is 321 decades, and "
            r"max_lr / min_lr overflows a float, .* such as 1e-7 \(the default\)",
        ),
        (
            {"min_lr": 0.01, "max_lr": 0.01 * (1 + 1e-15)},  # before, accepted, and the fit failed after the sweep
            ValueError,
            r"LRFinder: from min_lr=0.01 to max_lr=0.01000000000000001 the sweep's 8 steps are 1.6e-16 apart "
            r"\(relative\), below 1e-13: .* widen the range \(e.g. max_lr=10\)$",
        ),
        ({"num_steps": 5}, ValueError, r"`num_steps` must be >= 8, got 5"),
        ({"num_steps": 10.0}, TypeError, r"`num_steps` must be a whole number"),
        ({"mode": "log"}, ValueError, r"unknown `mode` 'log'; choose one of: 'exponential', 'linear'"),
        (
            {"mode": "linear"},
            ValueError,
            r"mode='linear' from min_lr=1e-07 to max_lr=10.0 \(8 decades\) spends 90% of its steps in the last decade"
            r" and 10% on the 7 below it"
            r".* at most 2 decades \(e.g. min_lr=0.1\), or use mode='exponential'",
        ),
        ({"method": "fastai"}, ValueError, r"unknown `method` 'fastai'; choose one of: 'default', 'steepest'"),
        ({"apply": 1}, TypeError, r"`apply` must be True or False, got 1"),
        ({"at_fit_start": "yes"}, TypeError, r"`at_fit_start` must be True or False"),
        ({"epochs": 3}, TypeError, r"`epochs` must be a list of epoch numbers such as \[3, 6\], got 3"),
        ({"epochs": [-1]}, ValueError, r"`epochs\[0\]` must be >= 0, got -1"),
        ({"at_fit_start": False}, ValueError, r"would never run: at_fit_start=False and no `epochs`"),
        ({"epochs": [0, 2]}, ValueError, r"epoch 0 starts at fit start; drop 0 from `epochs`"),
        ({"divergence_threshold": 0}, ValueError, r"`divergence_threshold` must be > 0, got 0"),
        ({"window": -0.2}, ValueError, r"`window` must be > 0, got -0.2"),
        ({"confirm": "yes"}, TypeError, r"`confirm` must be True/False or a list of LRs"),
        ({"confirm": [1e-4]}, ValueError, r"`confirm` needs at least two LRs to compare, got \[0.0001\]"),
        ({"confirm": [1e-4, -1.0]}, ValueError, r"`confirm\[1\]` must be > 0, got -1.0"),
        ({"confirm": [0.1, 0.1, 0.01]}, ValueError, r"`confirm` lists 0.1 more than once \(\[0.1, 0.1, 0.01\]\).*list"),
        ({"confirm_length": "0 steps"}, ValueError, r"`confirm_length` is 0 steps: a trial of no steps tells nothing"),
        ({"confirm_length": "0%"}, ValueError, r"`confirm_length` is 0 of the run: a trial of no steps"),
        ({"confirm_length": 50}, TypeError, r"`confirm_length` needs its unit: got the bare number 50"),
        ({"confirm_length": "5 batches"}, ValueError, r"LRFinder: `confirm_length` could not be read: '5 batches'"),
        ({"confirm_length": "-5%"}, ValueError, r"LRFinder: `confirm_length` must not be negative, got '-5%'; write a"),
        ({"monitor": ""}, TypeError, r"`monitor` must be the name of a validation value, got ''"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        LRFinder(**kwargs)


def test_a_range_too_narrow_for_the_default_sweep_is_refused_before_it_runs(tmp_path):
    """The default num_steps is known only at fit start: 0.01 to 0.01·e^1e-12 has 8 distinct LRs (taken at
    construction) but not 25, the default for 100 steps. Before, the sweep ran and the analysis failed with
    "`lrs` must be strictly increasing", naming neither LRFinder's arguments nor the fix."""
    finder = LRFinder(min_lr=0.01, max_lr=0.01 * math.exp(1e-12))
    model = FinderModel(optimizer=sgd())
    with pytest.raises(
        ValueError,
        match=r"LRFinder: from min_lr=0.01 .* the sweep's 25 steps are 4.2e-14 apart .*"
        r"widen the range \(e.g. max_lr=10\), or give fewer num_steps",
    ):
        fit(tmp_path, finder, model, logger=False, max_steps=100)
    assert model.calls == [] and finder.result is None


def test_a_strategy_that_accumulates_itself_is_refused(tmp_path):
    class Accumulating(SingleDeviceStrategy):
        @property
        def handles_gradient_accumulation(self) -> bool:
            return True

    with pytest.raises(ValueError, match=r"cannot drive the optimizer under Accumulating, which steps and accumul"):
        fit(tmp_path, LRFinder(), strategy=Accumulating(device=torch.device("cpu")), logger=False)


def test_a_reference_group_at_lr_zero_is_refused(tmp_path):
    """A backbone frozen with LR 0 is a common recipe: the message says to list it after a group that trains."""
    with pytest.raises(ValueError, match=r"reference group \(first group of the first optimizer\) has LR 0.*list a gr"):
        fit(tmp_path, LRFinder(), FinderModel(optimizer=sgd(lr=0.0)), logger=False)


def test_manual_optimization_must_return_the_loss(tmp_path):
    with pytest.raises(ValueError, match=r"manual optimization needs training_step to return the loss"):
        fit(tmp_path, LRFinder(), Manual(returns_loss=False), logger=False)


@pytest.mark.parametrize(
    ("output", "error", "match"),
    [
        ({"logits": 1}, ValueError, r"training_step returned a dict without a 'loss' key"),
        ("loss", TypeError, r"training_step must return a tensor, a dict with 'loss', or None; got 'loss'"),
    ],
)
def test_a_training_step_output_without_a_loss_is_refused(tmp_path, output, error, match):
    class Odd(FinderModel):
        def training_step(self, batch, batch_idx):
            return output

    with pytest.raises(error, match=match):
        fit(tmp_path, LRFinder(), Odd(optimizer=sgd()), logger=False)


def test_a_training_step_that_skips_a_batch_is_left_out_of_the_curve(tmp_path):
    class Skips(FinderModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return None if len(self.calls) == 3 else loss

    finder = LRFinder(num_steps=10, min_lr=1e-4, max_lr=1e-3, apply=False)
    fit(tmp_path, finder, Skips(optimizer=sgd()), logger=False)
    assert len(finder.result.lrs) == 9 and finder.result.lrs[2] < finder.result.lrs[3] / 1.2


def test_the_finder_works_with_the_unified_lightning_package(tmp_path):
    import lightning

    trainer = lightning.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, max_steps=1, callbacks=[finder := LRFinder(num_steps=20)],
    )  # fmt: skip

    class Model(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer.fit(Model(), shuffled())
    assert len(finder.result.lrs) > 8


def test_skipping_a_batch_under_a_distributed_strategy_is_refused(tmp_path):
    two_ranks = SingleDeviceStrategy(device=torch.device("cpu"))
    two_ranks.world_size = 2  # one process that reports two ranks: enough to reach the finder's check

    class Skips(FinderModel):
        def training_step(self, batch, batch_idx):
            return None

    with pytest.raises(RuntimeError, match=r"training_step returned None \(skip\) under a distributed strategy"):
        fit(tmp_path, LRFinder(), Skips(optimizer=sgd()), strategy=two_ranks, logger=False)


def test_a_state_not_written_by_the_finder_is_refused():
    with pytest.raises(ValueError, match=r"the checkpoint's state lacks 'results'/'done'; was it written by LRFinder"):
        LRFinder().load_state_dict({"steps": [3]})


def test_the_state_round_trips_into_a_fresh_finder(tmp_path):
    finder = LRFinder(num_steps=20)
    fit(tmp_path, finder, logger=False)
    fresh = LRFinder()
    fresh.load_state_dict(finder.state_dict())
    assert fresh.results == finder.results and fresh.state_dict() == finder.state_dict()
    assert pickle.loads(pickle.dumps(fresh)).results == finder.results  # (after a fit, Lightning attaches log)


def test_no_training_data_is_an_error():
    from lr_callbacks.finder.driver import Batches

    with pytest.raises(ValueError, match=r"LRFinder found no training data: pass train_dataloaders"):
        Batches(None, 10)


def test_a_datamodules_batch_transfer_hook_applies_to_the_sweep(tmp_path):
    seen: list[float] = []

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return shuffled()

        def on_before_batch_transfer(self, batch, dataloader_idx):
            x, y = batch
            return x * 0.0 + 1.0, y

    class Records(FinderModel):
        def training_step(self, batch, batch_idx):
            seen.append(float(batch[0].abs().sum() / batch[0].numel()))
            return super().training_step(batch, batch_idx)

    finder = LRFinder(num_steps=10, min_lr=1e-4, max_lr=1e-3, apply=False)
    trainer = make_trainer(tmp_path, max_steps=1, logger=False, callbacks=[finder])
    trainer.fit(Records(optimizer=sgd()), datamodule=Data())
    assert seen == [1.0] * 11


class Backboned(pl.LightningModule):
    """A regression net with a ``backbone`` for ``BackboneFinetuning``, which adds it as a group when it unfreezes."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())
        self.head = torch.nn.Linear(8, 1)
        self.sweep_lrs: list[list[float]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.sweep_lrs.append([float(g["lr"]) for g in self.trainer.optimizers[0].param_groups])
        return torch.nn.functional.mse_loss(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.05)


@pytest.mark.parametrize("order", ["UFS", "FUS", "FSU"])
def test_a_group_added_at_the_epochs_start_is_swept_with_the_others(tmp_path, order):
    """``BackboneFinetuning`` adds the backbone's group at the start of epoch 2 (at a tenth of the head's LR), just
    before ``LRFinder(epochs=[2])`` sweeps. Under ``LRSchedule`` the schedule took the group in only at the next
    step, so the sweep held the backbone at its LR while the head ramped, and the answer was applied to both.
    Listed before ``BackboneFinetuning``, the finder swept at that epoch's start before the backbone was added."""
    from pytorch_lightning.callbacks import BackboneFinetuning

    unfreeze = BackboneFinetuning(unfreeze_backbone_at_epoch=2, backbone_initial_ratio_lr=0.1, verbose=False)
    finder = LRFinder(num_steps=20, epochs=[2], at_fit_start=False, probe=False)
    model = Backboned()
    named = {"U": unfreeze, "F": finder, "S": LRSchedule("constant")}
    trainer = make_trainer(tmp_path, max_epochs=3, callbacks=[named[c] for c in order])
    trainer.fit(model, loader(regression_data(64), batch_size=8))
    sweep = [lrs for lrs in model.sweep_lrs if len(lrs) == 2][:20]
    assert len(sweep) == 20 and sweep[-1][0] > 100 * sweep[0][0]  # the head ramps
    assert [b / h for h, b in sweep] == pytest.approx([0.1] * 20)  # and the backbone with it


@pytest.mark.parametrize("with_schedule", [False, True])
def test_backbone_finetunings_ramp_goes_on_from_the_applied_lr(tmp_path, with_schedule):
    """At each epoch after the unfreeze ``BackboneFinetuning`` sets the backbone's LR to 2 × the one it set
    before. It remembered the LR from before the finder, so at the next epoch the backbone went back to 2 × its
    LR before the sweep, and the finder's answer for it was lost."""
    from pytorch_lightning.callbacks import BackboneFinetuning

    unfreeze = BackboneFinetuning(unfreeze_backbone_at_epoch=2, backbone_initial_ratio_lr=0.1, verbose=False)
    finder = LRFinder(num_steps=20, epochs=[2], at_fit_start=False, probe=False)
    model = Backboned()
    callbacks = [unfreeze, finder] + ([LRSchedule("constant")] if with_schedule else [])
    trainer = make_trainer(tmp_path, max_epochs=4, callbacks=callbacks)
    trainer.fit(model, loader(regression_data(64), batch_size=8))
    answer = finder.result.chosen_lr
    epoch2, epoch3 = model.sweep_lrs[-16:-8], model.sweep_lrs[-8:]
    assert epoch2 == [pytest.approx([answer, 0.1 * answer], rel=1e-9)] * 8
    assert epoch3 == [pytest.approx([answer, 2 * 0.1 * answer], rel=1e-9)] * 8


class SparseEmbedding(pl.LightningModule):
    """Token ids to a regression target through ``nn.Embedding(sparse=True)``: sparse gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 4, sparse=True)
        self.head = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.head(self.embed(x).mean(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def tokens() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 16, (64, 3), generator=generator)
    return loader(torch.utils.data.TensorDataset(x, x.float().mean(1, keepdim=True) / 16), batch_size=8)


def test_a_resume_that_adds_lrschedule_keeps_backbone_finetunings_ramp(tmp_path):
    """The checkpoint's ``BackboneFinetuning`` remembers the backbone's LR with the finder's answer in it. An
    ``LRSchedule`` added on resume is given the answer as its peak; scaling that memory again made the backbone's
    next LR 15× too high (6× the head's)."""
    from pytorch_lightning.callbacks import BackboneFinetuning, ModelCheckpoint

    def run(root, callbacks, ckpt=None):
        unfreeze = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1, should_align=False)
        finder = LRFinder(num_steps=20, epochs=[1], at_fit_start=False, probe=False)
        saves = ModelCheckpoint(dirpath=root, every_n_train_steps=4, save_top_k=-1, filename="{step}")
        model = Backboned()
        trainer = make_trainer(
            root, max_epochs=4, enable_checkpointing=True, callbacks=[unfreeze, finder, *callbacks, saves]
        )
        trainer.fit(model, loader(regression_data(64), batch_size=8), ckpt_path=ckpt)
        return model.sweep_lrs[-16:]  # epochs 2 and 3: [head, backbone] at each step

    whole = run(tmp_path / "whole", [])
    # mid-epoch 1, after the finder ran at its start (a resume at an epoch's end: see LRSchedule's limits)
    resumed = run(tmp_path / "resumed", [LRSchedule("constant")], str(tmp_path / "whole" / "step=12.ckpt"))
    assert resumed == [pytest.approx(lrs, rel=1e-9) for lrs in whole]


class EmbeddingOnly(SparseEmbedding):
    """Only the sparse embedding trains: its gradient is the only one."""

    def __init__(self) -> None:
        super().__init__()
        self.head.requires_grad_(False)

    def configure_optimizers(self):
        return torch.optim.SGD(self.embed.parameters(), lr=0.05)


@pytest.mark.parametrize("model_class", [SparseEmbedding, EmbeddingOnly])
def test_sparse_gradients_are_swept_and_restored(tmp_path, model_class):
    """``nn.Embedding(sparse=True)``: the gradient norm has no sparse kernel, and a sparse gradient cannot be copied
    in place into a dense buffer (before: ``NotImplementedError`` at the first sweep step, and ``copy_() between
    dense and sparse`` when the finder ran at an epoch's start). The run with the finder at epoch 1 and
    ``apply=False`` trains exactly as the run without it; the watchdog judges the same steps. With the embedding as
    the only gradient, the norm's one-tensor path raised the same ``NotImplementedError`` in both callbacks."""
    runs = {}
    for name, callbacks in [
        ("bare", []),
        ("finder", [LRFinder(num_steps=20, epochs=[1], at_fit_start=False, apply=False, probe=False)]),
        ("all", [LRFinder(num_steps=20), DivergenceWatchdog()]),
    ]:
        pl.seed_everything(0, verbose=False)
        model = model_class()
        make_trainer(tmp_path / name, max_epochs=2, callbacks=callbacks).fit(model, tokens())
        runs[name] = [p.detach().clone() for p in model.parameters()]
    assert all(map(torch.equal, runs["finder"], runs["bare"]))
    assert all(p.isfinite().all() for p in runs["all"])


class HandWarmup(FinderModel):
    """Lightning's docs' warmup by hand: ``optimizer_step`` writes the LR while ``global_step`` < 10 (it stays 0
    through a sweep)."""

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        if self.trainer.global_step < 10:
            for group in optimizer.param_groups:
                group["lr"] = 1e-3 * (self.trainer.global_step + 1) / 10
        optimizer.step(closure=optimizer_closure)


def test_an_lr_written_in_the_step_stops_the_sweep_with_the_reason(tmp_path, caplog):
    """The sweep's LR was written over before every step, so it measured one LR forty times and reported a flat
    curve from 1e-7 to 10, with advice to match; now it stops at the first step and says why."""
    finder = LRFinder(num_steps=40)
    with pytest.warns(
        UserWarning, match=r"the sweep set the LR to 1e-07, but optimizer.step\(\) ran at 0.0001.*optimizer_step"
    ):
        make_trainer(tmp_path, max_steps=2, logger=False, callbacks=[finder]).fit(
            HandWarmup(optimizer=sgd()), shuffled()
        )
    result = finder.result
    assert result.stop_reason == "lr_overridden" and result.chosen_lr is None and result.lrs == ()  # not measured
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LRFinder: answer")]
    assert lines and lines[-1].endswith("; no answer, nothing applied")  # it said "applied"


class HandStepDecay(EdgeModel):
    """A step decay by hand: ``optimizer_step`` halves the LR every 40 batches, before the step."""

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        if batch_idx > 0 and batch_idx % 40 == 0:
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
        optimizer.step(closure=optimizer_closure)


def test_an_lr_written_in_the_step_part_way_through_the_sweep_suggests_nothing(tmp_path):
    """The warning says nothing is suggested; before, the 40 steps before the write were read as a curve: their
    suggestion (0.0041) was probed and applied."""
    finder = LRFinder(num_steps=60)
    model = HandStepDecay(math.inf)
    with pytest.warns(UserWarning, match=r"set the LR to 0.02653, but optimizer.step\(\) ran at 0.01326.*nothing is"):
        make_trainer(tmp_path, max_steps=2, logger=False, callbacks=[finder]).fit(model, shuffled())
    result = finder.result
    assert result.stop_reason == "lr_overridden" and len(result.lrs) == 40  # the curve is kept, for the plot
    assert result.suggestion is None and result.range is None and result.probe is None and result.chosen_lr is None
    assert model.optimizers().param_groups[0]["lr"] == 0.1  # configure_optimizers' LR, kept
    assert "- suggestion (default): **none**" in result.summary() and "| method |" not in result.summary()


def test_an_lr_written_in_the_step_leaves_no_flag_of_the_cut_curves_shape(tmp_path):
    """A sweep from 1e-5 to 0.1 stopped at 0.0044 by the step's write, while the loss still fell: its summary said
    "flag `min_at_end`: the loss was still falling at max_lr; raise max_lr", which no max_lr mends."""
    finder = LRFinder(num_steps=60, min_lr=1e-5, max_lr=0.1)
    with pytest.warns(UserWarning, match=r"nothing is suggested"):
        make_trainer(tmp_path, max_steps=2, logger=False, callbacks=[finder]).fit(HandStepDecay(math.inf), shuffled())
    result = finder.result
    assert result.stop_reason == "lr_overridden" and len(result.lrs) == 40 and result.lrs[-1] < 0.005
    assert result.flags == () and "raise max_lr" not in result.summary()


def test_under_fast_dev_run_the_finder_stands_aside(tmp_path):
    """``fast_dev_run`` checks that the code runs, on one batch: Lightning's own Tuner and EarlyStopping stand aside,
    and so does the finder (before, it swept 58 steps on the one batch and applied an answer, warning that the
    sweep was 6000% of the run)."""
    finder = LRFinder()
    model = FinderModel(optimizer=sgd())
    trainer = make_trainer(tmp_path, fast_dev_run=True, callbacks=[finder])
    trainer.fit(model, shuffled())
    assert finder.result is None and len(model.calls) == 1
    assert trainer.optimizers[0].param_groups[0]["lr"] == sgd()(FinderModel()).param_groups[0]["lr"]


@pytest.mark.parametrize("apply", [True, False])
def test_the_log_line_says_whether_the_answer_was_applied(tmp_path, caplog, apply):
    import logging

    finder = LRFinder(num_steps=20, apply=apply)
    with caplog.at_level(logging.INFO, logger="lr_callbacks"):
        fit(tmp_path, finder)
    assert finder.result is not None and finder.result.chosen_lr is not None
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("LRFinder: answer"))
    assert line.endswith("; applied" if apply else "; not applied (apply=False)")
    assert "applies" not in finder.result.summary()


def test_a_flat_sweep_warns_that_its_answer_is_read_from_the_edge(tmp_path):
    """Targets of pure noise: nothing to learn, so the loss stays flat until the LR blows it up. The answer is read
    from that edge, which on a model learning too slowly for the sweep was 35-60× too high: the user is told how to
    measure it instead."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 4, generator=generator), torch.randn(256, 1, generator=generator)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    finder = LRFinder(min_lr=1e-6, max_lr=10.0, num_steps=60, probe=False)
    with pytest.warns(UserWarning, match=r"no descent the LR made during the \d+-step sweep \(flat_curve"):
        fit(tmp_path, finder, data=data, logger=False)
    assert "flat_curve" in finder.result.flags and finder.result.chosen_lr is not None


class _DescentThenPlateau(pl.LightningModule):
    """A scripted loss along the ramp: a real descent from 11 to 1 over 1e-8..1e-4, a plateau at 1 (noise 0.01)
    up to a rise (lr/0.1)²."""

    def __init__(self) -> None:
        super().__init__()
        self.w, self.calls = torch.nn.Parameter(torch.zeros(1)), 0

    def training_step(self, batch, batch_idx):
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        self.calls += 1
        loss = 1.0 + 5.0 * (1.0 - math.tanh(2.0 * (math.log10(lr) + 6.0))) + (lr / 0.1) ** 2 + 0.01 * (-1) ** self.calls
        return self.w.sum() * 0.0 + loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_broad_bottom_after_a_descent_warns_of_a_plateau_not_of_no_descent(tmp_path):
    """The loss falls from 11 to 1, then stays at 1 over 2.5 decades before it rises: read as a flat curve (its
    plateau has no edge), flagged flat_curve and no_clear_valley. Before, the warning said the loss showed no
    descent, at its lowest level from the sweep's start on: a fall of 10, a thousand times the plateau's noise."""
    finder = LRFinder(min_lr=1e-8, max_lr=10.0, num_steps=60, probe=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, finder, model=_DescentThenPlateau(), logger=False)
    assert finder.result.flags == ("flat_curve", "no_clear_valley") and finder.result.chosen_lr is not None
    (message,) = [str(w.message) for w in caught if "(flat_curve" in str(w.message)]
    assert "no descent" not in message and "from the sweep's start" not in message
    assert "stayed at its lowest level over more than 1.5 decades" in message


def test_a_sweep_with_fewer_points_than_smoothing_windows_warns(tmp_path):
    """num_steps=12 over the default 8 decades is 1.5 points per decade, fewer than one per 0.2-decade window:
    on the digits MLP such a sweep suggested 4.3 (100 steps: 0.29) and 10 steps read the fall and rise as
    diverged_at_once, without a word. The same 12 steps over 2 decades, and the default length, say nothing."""
    sparse = r"num_steps=12 gives the sweep 1.5 points per decade .* give num_steps=40 or more"
    with pytest.warns(UserWarning, match=sparse):
        fit(tmp_path / "a", LRFinder(num_steps=12, probe=False, apply=False), logger=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit(tmp_path / "b", LRFinder(num_steps=12, min_lr=1e-3, max_lr=0.1, probe=False, apply=False), logger=False)
        fit(tmp_path / "c", LRFinder(probe=False, apply=False), logger=False, max_steps=400)
    assert not [w for w in seen if "points per decade" in str(w.message)]


def test_a_sweep_past_adafactors_cap_says_where_the_lr_stopped_acting(tmp_path):
    """torch's Adafactor steps with min(lr, 1/√t): past the cap the sweep's LR does nothing, and an answer read there
    is meaningless (one sweep answered 1.64, its whole range above the cap, without a flag)."""

    def adafactor() -> FinderModel:
        return FinderModel(optimizer=lambda module: torch.optim.Adafactor(module.parameters(), lr=1e-2))

    finder = LRFinder(min_lr=1e-4, max_lr=10.0, num_steps=30, probe=False, apply=False)
    with pytest.warns(UserWarning, match=r"Adafactor steps with min\(lr, 1/√t\).*from sweep step \d+ on \(LR"):
        fit(tmp_path, finder, model=adafactor(), logger=False)
    with warnings.catch_warnings(record=True) as caught:  # below the cap (1/√30 > 0.01): no word
        warnings.simplefilter("always")
        fit(tmp_path, LRFinder(min_lr=1e-5, max_lr=1e-2, num_steps=30, probe=False, apply=False), adafactor())
    assert not [w for w in caught if "Adafactor" in str(w.message)]


class _CutEarly(pl.LightningModule):
    """Three ×100 losses in the first epoch (steps 20, 24, 28): the watchdog rolls back and halves the LR."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = torch.nn.Linear(4, 16), torch.nn.Linear(16, 1)
        self.lrs: dict[int, float] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.head(torch.tanh(self.body(x))), y)
        return loss * 100.0 if self.trainer.global_step in (20, 24, 28) and torch.is_grad_enabled() else loss

    def on_train_batch_start(self, batch, batch_idx):
        self.lrs[self.trainer.global_step] = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize("with_schedule", [True, False])
def test_an_answer_applied_under_a_watchdog_cut_is_the_peak_the_cut_stays_on(tmp_path, with_schedule):
    """lr = peak × schedule × scale: the finder sets the peak, the watchdog's cut stays on top of it, with
    LRSchedule and without. Before, without LRSchedule the answer replaced the cut LR (the LR was 1× the answer while
    the cut held), and the watchdog giving its cut back took it to 2× the answer, past what the sweep measured."""
    torch.manual_seed(0)
    x = torch.randn(400, 4)
    y = x @ torch.randn(4, 1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)
    finder = LRFinder(num_steps=30, epochs=[1], at_fit_start=False, probe=False)
    watchdog = DivergenceWatchdog(warmup_steps=10, recover_after=40, cooldown_steps=5, lower_after=3, snapshot_every=5)
    schedule = [LRSchedule("constant", log_plan=False)] if with_schedule else []
    model = _CutEarly()
    trainer = make_trainer(tmp_path, callbacks=[watchdog, finder, *schedule], max_epochs=3, logger=False)
    trainer.fit(model, data)
    cut, given_back = (
        [e for e in watchdog.events if e.action == "rollback"],
        [e for e in watchdog.events if e.action == "raise_lr"],
    )
    assert len(cut) == 1 and cut[0].step < 50 and len(given_back) == 1 and given_back[0].step > 60  # 50 steps/epoch
    answer = finder.result.chosen_lr
    assert model.lrs[55] == pytest.approx(0.5 * answer, rel=1e-6)  # the answer as the peak, the cut on it
    assert model.lrs[given_back[0].step + 1] == pytest.approx(answer, rel=1e-6)  # the cut given back: the peak
