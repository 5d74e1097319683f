"""Lightning's own callbacks that touch the LR, each composed with LRSchedule rather than silently fought.

- ``StochasticWeightAveraging`` drives the LR from its start epoch (SWALR): LRSchedule hands the LR over there
  and says so, as Lightning hands over a user's torch scheduler; before it, the plan is followed.
- ``GradientAccumulationScheduler`` changes the optimizer steps per epoch: the plan counts the real optimizer
  steps, so the schedule ends where the run does; durations in epochs are refused with the fix.
- ``LearningRateMonitor`` logs the LR each update really used.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import GradientAccumulationScheduler, LearningRateMonitor, StochasticWeightAveraging
from torch.utils.data import DataLoader

from lr_callbacks import Cosine, LRSchedule
from tests.helpers import HalveLRAt, TinyModel, loader, make_trainer, read_scalars, regression_data

BATCHES = 8  # regression_data() has 64 samples, batch 8


def fit(tmp_path: Any, callbacks: list[Any], **kwargs: Any) -> TinyModel:
    model = TinyModel()
    trainer = make_trainer(tmp_path, callbacks=callbacks, **kwargs)
    trainer.fit(model, loader())
    return model


def test_lrschedule_hands_the_lr_over_to_swa_at_its_start_and_says_so(tmp_path, caplog):
    schedule = LRSchedule("cosine", end=0.0, log_plan=False)
    swa = StochasticWeightAveraging(swa_lrs=1e-2, swa_epoch_start=3, annealing_epochs=1)  # epoch index 2
    with caplog.at_level(logging.INFO, logger="lr_callbacks"):
        model = fit(tmp_path, [schedule, swa], max_epochs=4)
    body = [lrs[0] for lrs in model.seen_lrs]
    assert len(body) == 4 * BATCHES
    total = 4 * BATCHES
    before = body[: 2 * BATCHES]  # the first two epochs follow the plan exactly
    assert before == pytest.approx([0.1 * Cosine(end=0.0)(k, total_steps=total) for k in range(2 * BATCHES)])
    after = body[2 * BATCHES :]
    assert after[-1] == pytest.approx(1e-2)  # SWA's own LR, not a product of both writers
    assert all(lr == after[-1] for lr in after[BATCHES:])  # SWALR holds swa_lr after its annealing epoch
    assert schedule.steps == [2 * BATCHES]  # the clock stopped at the hand-over
    assert any("hands the LR over to StochasticWeightAveraging at epoch 2" in r.message for r in caplog.records)


@pytest.mark.parametrize("watchdog_first", [False, True], ids=["schedule", "watchdog-first"])
@pytest.mark.parametrize("at", [24, 28], ids=["epoch-end", "mid-epoch"])
def test_a_run_resumed_in_swas_phase_leaves_the_lr_to_swa(tmp_path, at, watchdog_first):
    """Resumed inside SWA's phase (from epoch 2; 8 steps an epoch), no epoch start came before the first step, so
    the schedule did not hand over and wrote its cosine (0.0905 at step 24) where SWA holds 0.02. Listed before
    the schedule, the watchdog set its restored scale through the schedule before the schedule's own train start:
    the plan's LR was written over SWA's, however the run was resumed."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lr_callbacks import DivergenceWatchdog

    def callbacks(save: bool) -> list[Any]:
        swa = StochasticWeightAveraging(swa_lrs=0.02, swa_epoch_start=2, annealing_epochs=2)
        saves = [ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1, filename="{step}")]
        schedule = LRSchedule("cosine", log_plan=False)
        ordered = [DivergenceWatchdog(), schedule] if watchdog_first else [schedule]
        return [*ordered, swa, *(saves if save else [])]

    whole = TinyModel()
    make_trainer(tmp_path / "whole", max_epochs=5, callbacks=callbacks(True), enable_checkpointing=True).fit(
        whole, loader()
    )
    resumed = TinyModel()
    make_trainer(tmp_path / "resumed", max_epochs=5, callbacks=callbacks(False)).fit(
        resumed, loader(), ckpt_path=str(tmp_path / "ckpt" / f"step={at}.ckpt")
    )
    assert [lrs[0] for lrs in resumed.seen_lrs] == pytest.approx([lrs[0] for lrs in whole.seen_lrs[at:]], rel=1e-9)
    assert resumed.seen_lrs[-1][0] == pytest.approx(0.02)


def test_swa_s_default_fractional_start_is_read_once_swa_has_resolved_it(tmp_path):
    """SWA's ``swa_epoch_start`` defaults to 0.8 of the run, resolved in its ``on_fit_start``. The schedule, listed
    first, asked for it in its own (an AssertionError in Lightning's ``swa_start``; under ``python -O`` it read 0
    and never wrote its plan)."""
    schedule = LRSchedule("cosine", end=0.0, log_plan=False)
    model = fit(tmp_path, [schedule, StochasticWeightAveraging(swa_lrs=1e-2)], max_epochs=5)  # 4th epoch: index 3
    body = [lrs[0] for lrs in model.seen_lrs]
    plan = [0.1 * Cosine(end=0.0)(k, total_steps=5 * BATCHES) for k in range(3 * BATCHES)]
    assert body[: 3 * BATCHES] == pytest.approx(plan) and schedule.steps == [3 * BATCHES]


def test_the_finder_inside_swas_phase_says_that_swa_drives_the_lr(tmp_path, caplog):
    """After the hand-over SWA drives the LR: the finder's answer does not reach the groups. It said "applied", and
    took SWA's LR in as the schedule's new peak ("its peak follows") before sweeping."""
    from lr_callbacks import LRFinder

    def run(root, finder: list[Any]) -> list[list[float]]:
        swa = StochasticWeightAveraging(swa_lrs=1e-2, swa_epoch_start=2, annealing_epochs=1)
        return fit(root, [LRSchedule("cosine", log_plan=False), swa, *finder], max_epochs=4).seen_lrs

    plain = run(tmp_path / "plain", [])
    with caplog.at_level(logging.INFO, logger="lr_callbacks"):
        found = run(tmp_path / "found", [LRFinder(num_steps=20, epochs=[3], at_fit_start=False, probe=False)])
    messages = [r.getMessage() for r in caplog.records]
    assert found[-BATCHES:] == plain[-BATCHES:]  # epoch 3: SWA's LR, with or without the finder
    assert any(
        m.startswith("LRFinder: answer")
        and m.endswith("StochasticWeightAveraging drives the LR (LRSchedule handed it over)")
        for m in messages
    ), messages
    assert not any("its peak follows" in m for m in messages)


def test_a_reused_lrschedule_schedules_the_next_fit_after_handing_over_to_swa(tmp_path):
    """A loop over seeds or folds passes the same LRSchedule to each fit. Before, the hand-over to SWA of the first
    fit held for every later one: the next fit, without SWA, trained at ``configure_optimizers``' LR throughout."""
    schedule = LRSchedule("cosine", end=0.0, log_plan=False)
    swa = StochasticWeightAveraging(swa_lrs=1e-2, swa_epoch_start=2, annealing_epochs=1)
    fit(tmp_path / "swa", [schedule, swa], max_epochs=3)
    model = fit(tmp_path / "next", [schedule], max_epochs=2)
    total = 2 * BATCHES
    assert [lrs[0] for lrs in model.seen_lrs] == pytest.approx([0.1 * Cosine(end=0.0)(k, total) for k in range(total)])


def test_the_plan_counts_the_optimizer_steps_of_a_gradient_accumulation_schedule(tmp_path):
    schedule = LRSchedule("cosine", end=0.0, log_plan=False)
    accumulation = GradientAccumulationScheduler(scheduling={0: 1, 2: 4})
    model = fit(tmp_path, [schedule, accumulation], max_epochs=4)
    steps = 2 * BATCHES + 2 * math.ceil(BATCHES / 4)  # 8 + 8 + 2 + 2
    assert schedule.run is not None and schedule.run.total_steps == steps
    body = [lrs[0] for lrs in model.seen_lrs]
    assert len(body) == steps == schedule.steps[0]
    assert body == pytest.approx([0.1 * Cosine(end=0.0)(k, total_steps=steps) for k in range(steps)])
    assert body[-1] == pytest.approx(0.1 * Cosine(end=0.0)(steps - 1, total_steps=steps))  # the end of the plan


def test_a_duration_in_epochs_is_refused_when_the_accumulation_changes_between_epochs(tmp_path):
    schedule = LRSchedule("cosine", warmup="1 epochs", log_plan=False)
    accumulation = GradientAccumulationScheduler(scheduling={0: 1, 2: 4})
    with pytest.raises(ValueError, match=r"a duration in epochs needs a fixed number of optimizer steps per epoch.*"
                       r"give the duration in steps"):  # fmt: skip
        fit(tmp_path, [schedule, accumulation], max_epochs=4)


def test_a_constant_accumulation_schedule_keeps_durations_in_epochs(tmp_path):
    schedule = LRSchedule("cosine", warmup="1 epochs", log_plan=False)
    fit(tmp_path, [schedule, GradientAccumulationScheduler(scheduling={0: 2})], max_epochs=2)
    assert schedule.run is not None and schedule.run.total_steps == 2 * BATCHES // 2
    assert schedule.run.steps_per_epoch == BATCHES // 2


def test_learning_rate_monitor_logs_the_lr_each_update_used(tmp_path):
    schedule = LRSchedule("cosine", warmup="3 steps", end=0.1, log_plan=False)
    model = fit(tmp_path, [schedule, LearningRateMonitor(logging_interval="step")], max_steps=10)
    monitored = [value for _, value in read_scalars(tmp_path, "lr-SGD/body")]
    assert monitored == pytest.approx([lrs[0] for lrs in model.seen_lrs])
    assert [value for _, value in read_scalars(tmp_path, "lr/body")] == pytest.approx(monitored)


class Growing(pl.LightningDataModule):
    """A curriculum: epoch ``e`` trains on the first ``16 × (e + 1)`` samples, its loader reloaded every epoch."""

    def train_dataloader(self) -> DataLoader:
        n = 16 * (self.trainer.current_epoch + 1)
        return loader(regression_data(n), batch_size=8)


def test_a_run_that_outgrows_its_plan_says_so_once(tmp_path):
    """The plan is made at fit start from the first epoch's loader (2 steps × 3 epochs); the loader grows to 4 and
    6 steps, and the run goes on past step 6 at the plan's final LR, 0. Before, half the run trained at LR 0
    without a word."""
    model = TinyModel()
    trainer = make_trainer(
        tmp_path, max_epochs=3, reload_dataloaders_every_n_epochs=1, callbacks=[LRSchedule("cosine")]
    )
    with pytest.warns(UserWarning, match=r"goes on past the 6 optimizer steps planned") as caught:
        trainer.fit(model, datamodule=Growing())
    assert trainer.global_step == 12 and [lrs[0] for lrs in model.seen_lrs[6:]] == [0.0] * 6
    assert sum("goes on past" in str(w.message) for w in caught) == 1
    # the same LRSchedule in the next fit (a loop over seeds): said again, once (before: never again)
    schedule = trainer.callbacks[0]
    again = make_trainer(tmp_path / "again", max_epochs=3, reload_dataloaders_every_n_epochs=1, callbacks=[schedule])
    with pytest.warns(UserWarning, match=r"goes on past the 6 optimizer steps planned") as caught:
        again.fit(TinyModel(), datamodule=Growing())
    assert sum("goes on past" in str(w.message) for w in caught) == 1


@pytest.mark.parametrize("with_schedule", [True, False], ids=["LRSchedule-then-SWA", "SWA-alone"])
def test_a_watchdog_cut_under_swa_lowers_the_lr_swa_drives_and_stays(tmp_path, with_schedule):
    def run(cut: bool) -> list[float]:
        callbacks: list[Any] = [StochasticWeightAveraging(swa_lrs=1e-2, swa_epoch_start=2, annealing_epochs=2)]
        if with_schedule:
            callbacks.append(LRSchedule("cosine", end=0.0, log_plan=False))
        if cut:
            callbacks.append(HalveLRAt(BATCHES + 3))  # in SWA's annealing, epoch index 1
        return [lrs[0] for lrs in fit(tmp_path / str(cut), callbacks, max_epochs=4).seen_lrs]

    plain, cut = run(False), run(True)
    assert cut[: BATCHES + 3] == plain[: BATCHES + 3]
    # every later step, annealing and held, runs at half of what SWA would have run: the cut is not undone by
    # SWALR's next step, which writes absolute LRs from each group's swa_lr
    assert cut[BATCHES + 3 :] == pytest.approx([lr / 2 for lr in plain[BATCHES + 3 :]])
    assert cut[-1] == pytest.approx(0.5e-2)


class _SizedModel(TinyModel):
    """TinyModel with its own loader and a ``batch_size`` for BatchSizeFinder to scale."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_size = 4

    def train_dataloader(self) -> DataLoader:
        return loader(batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return loader()


def _batch_size_finder() -> Any:
    from pytorch_lightning.callbacks import BatchSizeFinder

    return BatchSizeFinder(mode="power", steps_per_trial=2, init_val=4, max_trials=2)


def test_a_reused_lrschedule_with_batch_size_finder_plans_the_second_fit_afresh(tmp_path, recwarn):
    """BatchSizeFinder saves a checkpoint at fit start, before LRSchedule sets up, and restores it. A reused
    LRSchedule gave it the last fit's clocks, took them back as a resume, and trained the second fit past its plan's
    end (at LR 0 under a cosine to 0), saying a changing loader was the cause."""
    schedule = LRSchedule("cosine", warmup="3 steps", end=0.0, log_plan=False)
    seen = []
    for fold in range(2):
        model = _SizedModel()
        make_trainer(
            tmp_path / str(fold), callbacks=[_batch_size_finder(), schedule], max_epochs=2, limit_val_batches=0
        ).fit(model)
        seen.append([lrs[0] for lrs in model.seen_lrs])
    assert len(seen[0]) == len(seen[1]) and seen[1] == pytest.approx(seen[0])
    warmup = [i for i, lr in enumerate(seen[1]) if math.isclose(lr, 0.1 / 3)]  # after BatchSizeFinder's trials
    assert len(warmup) == 1 and seen[1][warmup[0] : warmup[0] + 3] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])
    assert not [w for w in recwarn if "LRSchedule" in str(w.message)]  # no resume, no loader blamed


def test_a_tuners_checkpoint_at_step_0_is_not_a_resume(tmp_path, recwarn):
    """A checkpoint written before any step (BatchSizeFinder's, at fit start) trained at no LR: before, every such
    run with a warmup was told it resumed from a checkpoint written without LRSchedule at LR 0.1."""
    model = _SizedModel()
    callbacks = [_batch_size_finder(), LRSchedule("cosine", warmup="3 steps")]
    make_trainer(tmp_path, callbacks=callbacks, max_epochs=1, limit_val_batches=0).fit(model)
    assert not [w for w in recwarn if "LRSchedule" in str(w.message)]


def test_a_fit_continued_beside_batch_size_finder_goes_on_without_a_false_resume_warning(tmp_path, recwarn):
    """A second ``trainer.fit`` on the same Trainer goes on from the last fit's state; BatchSizeFinder's checkpoint,
    taken before the schedule sets up, holds that state (empty, it read as a checkpoint written without
    LRSchedule)."""
    schedule = LRSchedule("cosine", warmup="3 steps", log_plan=False)
    model = _SizedModel()
    trainer = make_trainer(tmp_path, callbacks=[_batch_size_finder(), schedule], max_steps=4, limit_val_batches=0)
    trainer.fit(model)
    trainer.fit_loop.epoch_loop.max_steps = 8
    trainer.fit(model)
    assert schedule.steps == [8]
    assert not [w for w in recwarn if "written without LRSchedule" in str(w.message)]


def test_the_finder_and_the_watchdog_count_the_run_as_the_schedule_does_under_gradient_accumulation(tmp_path):
    """``estimated_stepping_batches`` ignores a GradientAccumulationScheduler's factors at fit start: ``{0: 4}`` read
    as four times the run, so the finder's sweep followed a run 4× too long (and its cost warning stayed silent) and
    the watchdog's durations relative to the run were 4× too long. Both now count the run as LRSchedule does."""
    from lr_callbacks import DivergenceWatchdog, LRFinder

    runs = {}
    for name, kwargs in {
        "accumulated": dict(max_epochs=50, callbacks=[GradientAccumulationScheduler({0: 4})]),  # 2 steps an epoch
        "plain": dict(max_steps=100, callbacks=[]),
    }.items():
        finder, watchdog, schedule = LRFinder(), DivergenceWatchdog(), LRSchedule("cosine", log_plan=False)
        callbacks = [*kwargs.pop("callbacks"), finder, schedule, watchdog]
        fit(tmp_path / name, callbacks, limit_val_batches=0, **kwargs)
        runs[name] = (schedule.run.total_steps, len(finder.result.lrs), watchdog._last_step)
    assert runs["accumulated"] == runs["plain"] and runs["plain"][0] == 100 and runs["plain"][2] == 99


class _ShrinkingModel(TinyModel):
    """A training loader reloaded every epoch, one batch shorter each time (8, 7, 6 batches of 8)."""

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self._trainer is not None else 0
        data = regression_data()
        return loader(torch.utils.data.Subset(data, range(len(data) - 8 * epoch)))

    def val_dataloader(self) -> DataLoader:
        return loader()


def test_a_run_whose_loader_shrank_says_its_lr_did_not_reach_the_plans_end(tmp_path):
    """The plan is fixed at fit start (8 batches × 3 epochs); reloaded shorter each epoch, the run ended at 21 steps
    with its LR mid-decay, without a word (a loader that grew was told)."""
    schedule = LRSchedule("linear", log_plan=False)
    trainer = make_trainer(
        tmp_path, callbacks=[schedule], max_epochs=3, reload_dataloaders_every_n_epochs=1, limit_val_batches=0
    )
    with pytest.warns(UserWarning, match=r"ended after its 3 epochs at 21 steps, short of the 24 planned"):
        trainer.fit(_ShrinkingModel())
    assert schedule.steps == [21]


def test_a_run_stopped_early_or_by_max_steps_is_not_told_its_loader_shrank(tmp_path, recwarn):
    schedule = LRSchedule("linear", log_plan=False)
    make_trainer(tmp_path, callbacks=[schedule], max_epochs=3, max_steps=10, limit_val_batches=0).fit(_ShrinkingModel())
    assert not [w for w in recwarn if "short of the" in str(w.message)]


def test_an_lrschedule_pickled_before_the_set_up_flag_still_gives_its_state(tmp_path):
    """An LRSchedule pickled by this version before stop 24 lacks ``_before_set_up``: ``state_dict`` raised."""
    import pickle

    schedule = LRSchedule("cosine", log_plan=False)
    fit(tmp_path, [schedule], max_steps=4, limit_val_batches=0)
    old = schedule.__getstate__()
    del old["_before_set_up"]
    restored = LRSchedule.__new__(LRSchedule)
    restored.__setstate__(pickle.loads(pickle.dumps(old)))
    assert restored.state_dict()["steps"] == [4]


class _TwoOptimizers(pl.LightningModule):
    """Manual optimization, two optimizers stepping every batch: Lightning's max_steps counts both."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a, self.b = torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        for optimizer, net in zip(self.optimizers(), (self.a, self.b)):
            loss = torch.nn.functional.mse_loss(net(x), y)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()

    def configure_optimizers(self) -> Any:
        return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]


def test_max_steps_ending_the_last_epoch_is_not_a_shrunk_loader(tmp_path, recwarn):
    """max_steps (both optimizers' steps) ends the run inside its last epoch; Lightning still counts that epoch as
    done. Only the fit-start warning about max_steps is given, not one about the loader."""
    trainer = make_trainer(tmp_path, callbacks=[LRSchedule("cosine", log_plan=False)], max_epochs=2, max_steps=50)
    trainer.fit(_TwoOptimizers(), loader(batch_size=4))
    assert not [w for w in recwarn if "short of the" in str(w.message)]


class _SlowModel(TinyModel):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        import time

        time.sleep(0.02)
        return super().training_step(batch, batch_idx)


def test_a_run_max_time_stopped_says_its_lr_did_not_decay(tmp_path):
    """A time limit is a planned end (a job's), where a user expects the decay to have happened: the run stopped
    near its peak LR without a word."""
    trainer = make_trainer(
        tmp_path, callbacks=[LRSchedule("cosine", log_plan=False)], max_epochs=100, max_time={"seconds": 1}
    )
    with pytest.warns(UserWarning, match=r"Trainer\(max_time=\.\.\.\) ended the run at \d+ steps of the 800 planned"):
        trainer.fit(_SlowModel(), loader(), loader())
    assert trainer.global_step < 800


def test_max_time_alone_is_named_as_why_the_length_is_unknown(tmp_path):
    trainer = make_trainer(tmp_path, callbacks=[LRSchedule("cosine", log_plan=False)], max_time={"seconds": 5})
    with pytest.raises(ValueError, match=r"only Trainer\(max_time=\.\.\.\) bounds it, and a time counts no steps"):
        trainer.fit(TinyModel(), loader(), loader())


def test_max_epochs_minus_one_is_named_as_why_the_length_is_unknown(tmp_path):
    """Before, a run without end on a data set with a length was blamed on "an iterable dataset with no max_steps?"."""
    trainer = make_trainer(tmp_path, callbacks=[LRSchedule("cosine", log_plan=False)], max_epochs=-1)
    with pytest.raises(ValueError, match=r"unknown \(Trainer\(max_epochs=-1\) trains until something stops it"):
        trainer.fit(TinyModel(), loader(), loader())


def test_an_iterable_dataset_with_max_epochs_and_max_time_is_not_blamed_on_max_time(tmp_path):
    from tests.helpers import Stream

    trainer = make_trainer(
        tmp_path, callbacks=[LRSchedule("cosine", log_plan=False)], max_epochs=2, max_time={"seconds": 30}
    )
    with pytest.raises(ValueError, match=r"an iterable dataset with no max_steps\?"):
        trainer.fit(TinyModel(), torch.utils.data.DataLoader(Stream(), batch_size=None), loader())


class _FineTuneLRFinder(pl.Callback):
    """Lightning's documented ``FineTuneLearningRateFinder``: ``LearningRateFinder.lr_find`` at the first epoch's
    start; records the LR of each of the run's updates (not the sweep's: Lightning swaps the callbacks out then)."""

    def __init__(self) -> None:
        from pytorch_lightning.callbacks import LearningRateFinder

        self.finder = LearningRateFinder(num_training_steps=15, min_lr=1e-4, max_lr=1.0)
        self.suggestion: float | None = None
        self.used: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0:
            self.finder.lr_find(trainer, pl_module)
            self.suggestion = self.finder.optimal_lr.suggestion()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.used.append(float(optimizer.param_groups[0]["lr"]))


class _WithLR(TinyModel):
    """TinyModel with the ``lr`` attribute that Lightning's LearningRateFinder updates."""

    def __init__(self) -> None:
        super().__init__()
        self.lr = 0.1


def test_learning_rate_finder_run_mid_fit_sets_the_peak_the_plan_goes_on_from(tmp_path):
    """Lightning's finder restores its checkpoint (the schedule set up again from it), then writes its suggestion
    into the groups: before, the plan wrote over it at the next step and every step trained at the configured LR."""
    finder = _FineTuneLRFinder()
    schedule = LRSchedule("cosine", end=0.0, log_plan=False)
    make_trainer(tmp_path, callbacks=[schedule, finder], max_epochs=2).fit(_WithLR(), loader(regression_data(160)))
    total = 40  # 20 batches an epoch
    lr = finder.suggestion
    assert lr is not None and not math.isclose(lr, 0.1)
    assert finder.used == pytest.approx([lr * Cosine(end=0.0)(k, total) for k in range(total)], rel=1e-9)
    assert schedule.steps == [total] and schedule.peak_lrs == [pytest.approx([lr, lr])]


def test_a_duration_in_epochs_is_refused_under_max_steps_too_when_the_accumulation_changes(tmp_path):
    """With max_steps alone Lightning sets max_epochs=-1: the factors were read over no epochs, and epoch 0's length
    (8 steps) stood for every epoch, so "x0.5 every epoch" halved the LR once in four epochs."""
    schedule = LRSchedule("step", every="1 epochs", gamma=0.5, log_plan=False)
    accumulation = GradientAccumulationScheduler(scheduling={0: 1, 1: 4})
    with pytest.raises(ValueError, match=r"a duration in epochs needs a fixed number of optimizer steps per epoch, "
                       r"but GradientAccumulationScheduler\(\{0: 1, 1: 4\}\) changes it"):  # fmt: skip
        fit(tmp_path, [schedule, accumulation], max_steps=14)
