"""LRFinder restores everything it touches, bit for bit, writes no file, and training after it is the
training you would get by setting its LR by hand."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.precision import MixedPrecision

from lr_callbacks import LRFinder, LRSchedule
from tests.finder.helpers import (
    BatchRecorder,
    Capture,
    FinderModel,
    assert_same,
    sgd,
    shuffled,
    state_of,
    tree,
)
from tests.helpers import loader, make_trainer, regression_data


def decay(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0 / (1.0 + 0.1 * k))


def test_everything_is_restored_at_fit_start(tmp_path):
    before, after = Capture(), Capture()
    finder = LRFinder(num_steps=30, apply=False)
    model = FinderModel(optimizer=sgd(), scheduler=decay)
    trainer = make_trainer(tmp_path, max_steps=1, callbacks=[before, finder, after])
    trainer.fit(model, shuffled())
    n = len(finder.result.lrs)
    assert n >= 8  # the sweep really ran ...
    probe = finder.result.probe.steps  # then the stability probe held the suggestion
    assert probe >= 20 and len(model.calls) == n + probe + 1  # ... through the model's training_step
    assert [lr for lr, _ in model.calls[:n]] == pytest.approx(finder.result.lrs, rel=1e-12)  # LambdaLR stood still
    assert_same(before.states[0], after.states[0])


def test_everything_is_restored_mid_training_with_amp_and_accumulation(tmp_path):
    """At epoch 1: momentum buffers, gradients, GradScaler state and loop counters are all non-trivial."""
    before, after = Capture("on_train_epoch_start", 1), Capture("on_train_epoch_start", 1)
    finder = LRFinder(num_steps=12, apply=False, at_fit_start=False, epochs=[1])
    precision = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))
    model = FinderModel(optimizer=sgd(), scheduler=decay)
    trainer = make_trainer(
        tmp_path,
        max_epochs=2,
        plugins=[precision],
        accumulate_grad_batches=2,
        gradient_clip_val=0.5,
        callbacks=[before, finder, after],
    )
    trainer.fit(model, shuffled())
    state = before.states[0]
    assert state["global_step"] == 4 and state["scaler"]["_growth_tracker"] > 0
    assert all(g is not None for g in state["grads"].values())
    assert finder.result.epoch == 1 and finder.result.global_step == 4
    assert_same(state, after.states[0])


def test_a_sweep_that_raises_halfway_restores_everything(tmp_path):
    before = Capture()
    model = FinderModel(optimizer=sgd(), scheduler=decay, raise_at_call=5)
    trainer = make_trainer(tmp_path, max_steps=1, callbacks=[before, LRFinder(num_steps=30)])
    with pytest.raises(RuntimeError, match="scripted failure"):
        trainer.fit(model, shuffled())
    assert len(model.calls) == 5
    saved = before.states[0]
    now = state_of(trainer, model)
    for key in ("params", "grads", "buffers", "training", "optimizers", "groups", "schedulers", "torch_rng"):
        assert_same(saved[key], now[key], key)


@pytest.mark.parametrize("lr_model", ["optimizer", "torch scheduler", "LRSchedule"])
def test_training_after_the_finder_equals_training_with_its_lr_set_by_hand(tmp_path, lr_model):
    """Same final weights bitwise, same data order: the finder leaves nothing behind but the LR."""

    def run(finder: LRFinder | None, body: float, head: float) -> tuple[FinderModel, list[float], Capture]:
        torch.manual_seed(0)
        model = FinderModel(optimizer=sgd(body, head), scheduler=decay if lr_model == "torch scheduler" else None)
        recorder, applied = BatchRecorder(), Capture()
        callbacks: list = [recorder]
        if lr_model == "LRSchedule":
            peaks = None if finder is not None else {"body": body, "head": head}
            callbacks.append(LRSchedule("cosine", peak_lrs=peaks, log_plan=False))
        callbacks += [finder, applied] if finder is not None else [applied]
        trainer = make_trainer(tmp_path / str(finder is None), max_steps=12, logger=False, callbacks=callbacks)
        trainer.fit(model, shuffled())
        return model, recorder.seen, applied

    finder = LRFinder(num_steps=30)
    with_finder, seen, applied = run(finder, 0.1, 0.01)
    if lr_model == "LRSchedule":
        schedule = next(c for c in finder_trainer_callbacks(with_finder) if isinstance(c, LRSchedule))
        body, head = schedule.peak_lrs[0]
    else:
        groups = applied.states[0]["groups"][0]
        body, head = (g.get("initial_lr", g["lr"]) for g in groups)
    assert body == pytest.approx(finder.result.chosen_lr, rel=1e-12)
    assert head == pytest.approx(body / 10, rel=1e-12)  # the ratio between the groups is kept
    by_hand, seen_by_hand, _ = run(None, body, head)
    assert seen == seen_by_hand
    assert_same(dict(with_finder.named_parameters()), dict(by_hand.named_parameters()))
    assert_same(dict(with_finder.named_buffers()), dict(by_hand.named_buffers()))


def finder_trainer_callbacks(model: FinderModel) -> list:
    return model.trainer.callbacks


def test_the_user_scheduler_keeps_the_answer(tmp_path):
    """Lightning's finder sets only group['lr'] and LambdaLR throws it away at the next step; ours sticks."""
    finder = LRFinder(num_steps=30)
    model = FinderModel(optimizer=sgd(), scheduler=decay)
    trainer = make_trainer(tmp_path, max_steps=5, logger=False, callbacks=[finder])
    trainer.fit(model, shuffled())
    used = [lr for lr, _ in model.calls[-5:]]
    assert used == pytest.approx([finder.result.chosen_lr / (1 + 0.1 * k) for k in range(5)], rel=1e-12)


S = torch.optim.lr_scheduler
TORCH_SCHEDULERS = {  # each a function of (optimizer, the peak LR it is built with)
    "LambdaLR warmup": lambda o, peak: S.LambdaLR(o, lambda k: min(1.0, (k + 1) / 5)),
    "LinearLR": lambda o, peak: S.LinearLR(o, start_factor=0.1, total_iters=5),
    "SequentialLR": lambda o, peak: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.1, total_iters=5), S.CosineAnnealingLR(o, T_max=15)], milestones=[5]
    ),
    "ChainedScheduler": lambda o, peak: S.ChainedScheduler(
        [S.LinearLR(o, start_factor=0.1, total_iters=5), S.ExponentialLR(o, gamma=0.95)]
    ),
    "CosineAnnealingLR": lambda o, peak: S.CosineAnnealingLR(o, T_max=20),
    "CosineAnnealingWarmRestarts": lambda o, peak: S.CosineAnnealingWarmRestarts(o, T_0=7),
    "StepLR": lambda o, peak: S.StepLR(o, step_size=5, gamma=0.5),
    "PolynomialLR": lambda o, peak: S.PolynomialLR(o, total_iters=20, power=2.0),
    "ConstantLR": lambda o, peak: S.ConstantLR(o, factor=0.25, total_iters=5),
    "OneCycleLR": lambda o, peak: S.OneCycleLR(o, max_lr=peak, total_steps=20),  # starts at peak / 25
    "CyclicLR": lambda o, peak: S.CyclicLR(o, base_lr=peak / 10, max_lr=peak, step_size_up=5),  # floor: peak / 10
    "SequentialLR of OneCycleLR": lambda o, peak: S.SequentialLR(  # a OneCycleLR inside: its peak, not its start
        o, [S.LinearLR(o, start_factor=1.0, total_iters=1), S.OneCycleLR(o, max_lr=peak, total_steps=20)], [1]
    ),
    "ChainedScheduler of OneCycleLR": lambda o, peak: S.ChainedScheduler(
        [S.OneCycleLR(o, max_lr=peak, total_steps=20), S.ExponentialLR(o, gamma=1.0)]
    ),
    "SequentialLR of CyclicLR": lambda o, peak: S.SequentialLR(
        o, [S.ConstantLR(o, factor=0.1, total_iters=1), S.CyclicLR(o, peak / 10, peak, step_size_up=5)], [1]
    ),
}


@pytest.mark.parametrize("name", list(TORCH_SCHEDULERS))
def test_with_any_torch_scheduler_the_run_is_the_one_built_at_the_answer_by_hand(tmp_path, name):
    """The answer is the scheduler's peak: the LRs after the finder are those of the same scheduler built with the
    answer as its peak LR. OneCycleLR and CyclicLR climb from a start below their peak (before, the answer became
    that start, and the run peaked at 25× and 10× it)."""

    def lrs(lr: float, callbacks: list) -> list[float]:
        torch.manual_seed(0)
        build = TORCH_SCHEDULERS[name]
        model = FinderModel(optimizer=sgd(lr, head=lr / 10), scheduler=lambda o: build(o, lr))
        make_trainer(tmp_path / str(lr), max_steps=20, logger=False, callbacks=callbacks).fit(model, shuffled())
        return [used for used, _ in model.calls[-20:]]

    finder = LRFinder(num_steps=20, probe=False)
    after = lrs(0.1, [finder])
    answer = finder.result.chosen_lr
    assert after == pytest.approx(lrs(answer, []), rel=1e-12)
    if name != "ChainedScheduler":  # the others reach their peak (there, the decay runs during the warmup)
        assert max(after) == pytest.approx(answer, rel=1e-12)


def test_no_file_is_written(tmp_path):
    seen_during: list[list[str]] = []

    class Look(Capture):
        def on_train_start(self, trainer, pl_module):
            seen_during.append(tree(tmp_path))

    trainer = make_trainer(tmp_path, max_steps=2, logger=False, callbacks=[LRFinder(num_steps=20), Look()])
    before = tree(tmp_path)
    trainer.fit(FinderModel(optimizer=sgd()), shuffled())
    assert seen_during == [before] and tree(tmp_path) == before == ["."]


def test_on_resume_the_finder_does_not_run_again(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = LRFinder(num_steps=20)
    trainer = make_trainer(
        tmp_path, max_epochs=1, logger=False, enable_checkpointing=True, callbacks=[first, checkpoints]
    )
    trainer.fit(FinderModel(optimizer=sgd()), shuffled())

    again = LRFinder(num_steps=20)
    model = FinderModel(optimizer=sgd())
    trainer = make_trainer(tmp_path, max_epochs=2, logger=False, callbacks=[again])
    trainer.fit(model, shuffled(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert len(model.calls) == 8  # epoch 1 only: no sweep
    assert again.results == first.results
    assert model.calls[0][0] == pytest.approx(first.result.chosen_lr, rel=1e-12)  # the LR came from the checkpoint


def fit_epochs(root, finder=None, ckpt=None, every=4):
    """Three epochs of 4 batches (no randomness: no dropout, data in order), a checkpoint every ``every`` steps."""
    saves = ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1, filename="{step}")
    model = FinderModel(optimizer=sgd(), dropout=0.0)
    callbacks = [saves] if finder is None else [finder, saves]
    trainer = make_trainer(root, max_epochs=3, logger=False, enable_checkpointing=True, callbacks=callbacks)
    trainer.fit(model, loader(regression_data(32), batch_size=8), ckpt_path=ckpt)
    return model


def test_a_resume_from_the_last_batch_before_a_listed_epoch_runs_the_finder_there(tmp_path):
    """Resumed from a checkpoint written on epoch 0's last batch, Lightning restarts "mid-epoch" into epoch 1 and
    does not call ``on_train_epoch_start`` for it: the finder runs before its first batch, so the resumed run is
    the uninterrupted one (before, it never ran, and epochs 1 and 2 trained at configure_optimizers' LR)."""
    whole = LRFinder(num_steps=20, epochs=[1], at_fit_start=False)
    whole_model = fit_epochs(tmp_path / "whole", whole)
    resumed = LRFinder(num_steps=20, epochs=[1], at_fit_start=False)
    model = fit_epochs(tmp_path / "resumed", resumed, str(tmp_path / "whole" / "step=4.ckpt"))
    assert [r.epoch for r in resumed.results] == [1]
    assert (resumed.result.lrs, resumed.result.losses) == (whole.result.lrs, whole.result.losses)
    assert resumed.result.chosen_lr == whole.result.chosen_lr
    assert model.calls[-8:] == whole_model.calls[-8:]  # epochs 1 and 2: the same LRs and losses, step for step
    assert [lr for lr, _ in model.calls[-8:]] == pytest.approx([whole.result.chosen_lr] * 8, rel=1e-12)


def test_a_resume_inside_a_listed_epoch_from_a_fit_that_did_not_run_there_says_so(tmp_path):
    fit_epochs(tmp_path / "first", every=2)  # no finder: step=6.ckpt is at batch 1 of epoch 1
    finder = LRFinder(num_steps=20, epochs=[1], at_fit_start=False)
    with pytest.warns(UserWarning, match=r"resumed at batch 2 of epoch 1, past the start where the finder runs"):
        fit_epochs(tmp_path / "resumed", finder, str(tmp_path / "first" / "step=6.ckpt"))
    assert finder.results == ()


def test_a_finder_added_on_resume_does_not_sweep_the_trained_weights_mid_run(tmp_path):
    """Resumed at step 6 from a checkpoint of a fit without the finder: the fit's start is past. Before, the finder
    swept the weights trained 6 steps at the resume and wrote its answer over the LR the run trained at (0.1 became
    0.0654, said only as "applied"), where a listed epoch's finder whose start is past does not run. Now it does
    not run either, and says so: the run goes on at the checkpoint's LR."""
    whole = fit_epochs(tmp_path / "first", every=2)  # no finder
    finder = LRFinder(num_steps=20)
    with pytest.warns(UserWarning, match=r"LRFinder: the fit resumed at step 6 .* did not run the finder at its start"):
        model = fit_epochs(tmp_path / "resumed", finder, str(tmp_path / "first" / "step=6.ckpt"))
    assert finder.results == ()
    assert [lr for lr, _ in model.calls] == [lr for lr, _ in whole.calls[6:]] == [0.1] * 6  # no sweep, the same LR


@pytest.mark.parametrize(
    ("with_finder", "apply"), [(True, True), (False, True), (True, False)], ids=["resumed", "dropped", "not-applied"]
)
def test_a_schedule_added_on_resume_takes_the_finders_answer_or_says_the_lr_jumps(tmp_path, with_finder, apply):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = LRFinder(num_steps=20, apply=apply)
    trainer = make_trainer(
        tmp_path, max_epochs=1, logger=False, enable_checkpointing=True, callbacks=[first, checkpoints]
    )
    trainer.fit(FinderModel(optimizer=sgd()), shuffled())
    answer = first.result.chosen_lr
    assert answer is not None and not math.isclose(answer, 0.1)  # configure_optimizers' LR

    model = FinderModel(optimizer=sgd())
    callbacks = [LRFinder(num_steps=20, apply=apply)] if with_finder else []
    trainer = make_trainer(tmp_path, max_epochs=2, logger=False, callbacks=[*callbacks, LRSchedule("constant")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, shuffled(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    said = [str(w.message) for w in caught if "from a checkpoint written without LRSchedule" in str(w.message)]
    if not apply:  # an answer never applied is not applied on resume either: the run goes on at its own LR
        assert model.calls[0][0] == pytest.approx(0.1, rel=1e-12) and not said
    elif with_finder:  # the finder, resumed, gives the new schedule its answer: the run goes on at it, nothing to say
        assert model.calls[0][0] == pytest.approx(answer, rel=1e-12) and not said
    else:  # the plan's peak is configure_optimizers' LR: the LR jumps, and the warning gives both
        assert model.calls[0][0] == pytest.approx(0.1, rel=1e-12)
        assert len(said) == 1 and f"trained at LR {answer:.4g} there" in said[0] and "writes 0.1 " in said[0]


def test_torchmetrics_states_updated_by_training_step_are_restored(tmp_path):
    import torchmetrics

    class Metered(FinderModel):
        def __init__(self):
            super().__init__(optimizer=sgd())
            self.mean_loss = torchmetrics.MeanMetric()

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.mean_loss.update(loss.detach())
            return loss

    model = Metered()
    finder = LRFinder(num_steps=20, apply=False)
    make_trainer(tmp_path, max_steps=2, logger=False, callbacks=[finder]).fit(model, shuffled())
    assert len(model.calls) == len(finder.result.lrs) + finder.result.probe.steps + 2
    real = [loss for _, loss in model.calls[-2:]]
    assert float(model.mean_loss.compute()) == pytest.approx(sum(real) / 2, rel=1e-6)


class ShadowEMA:
    """An EMA as torch_ema's ``ExponentialMovingAverage`` (or diffusers' ``EMAModel``) keeps it: a plain object with
    shadow tensors and a counter, saved and restored through ``state_dict``/``load_state_dict``, no ``Module``."""

    def __init__(self, parameters, decay: float = 0.9) -> None:
        self.decay, self.num_updates = decay, 0
        self.shadow_params = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def update(self, parameters) -> None:
        self.num_updates += 1
        for shadow, p in zip(self.shadow_params, parameters):
            shadow.sub_((1.0 - self.decay) * (shadow - p))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow_params": self.shadow_params}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.num_updates = state["decay"], state["num_updates"]
        self.shadow_params = [t.clone() for t in state["shadow_params"]]


def test_an_ema_object_the_module_updates_in_a_step_hook_is_restored(tmp_path):
    """The EMA of torch_ema's Lightning recipe, updated in ``on_before_zero_grad`` (a hook the sweep's steps run):
    before, it kept every sweep step's update (the diverged weights too), and the run's EMA was not the one
    trained at the answer by hand."""

    class Averaged(FinderModel):
        def __init__(self, lr: float) -> None:
            super().__init__(optimizer=sgd(lr, lr / 10), dropout=0.0)
            self.ema = ShadowEMA(self.parameters())

        def on_before_zero_grad(self, optimizer):
            self.ema.update(self.parameters())

    def run(finder: LRFinder | None, lr: float) -> Averaged:
        torch.manual_seed(0)
        model = Averaged(lr)
        make_trainer(tmp_path, max_steps=3, logger=False, callbacks=[finder] if finder else []).fit(model, shuffled())
        return model

    finder = LRFinder(num_steps=20, probe=False)
    swept, by_hand = run(finder, 0.1), run(None, finder.result.chosen_lr)
    assert swept.ema.num_updates == by_hand.ema.num_updates == 3
    assert_same(swept.ema.shadow_params, by_hand.ema.shadow_params)


def test_a_callback_the_module_keeps_a_reference_to_is_not_restored_as_its_state(tmp_path):
    """A module that keeps its watchdog (``self.watchdog``, to call ``rebaseline``): the callback's state is
    Lightning's to save and load, and loading it mid-fit is a resume to it. The finder's restore loads only the
    states of objects that are part of the model's training (an EMA), never a callback's."""
    from lr_callbacks import DivergenceWatchdog

    class Counted(DivergenceWatchdog):
        loads = 0

        def load_state_dict(self, state_dict):
            type(self).loads += 1
            super().load_state_dict(state_dict)

    watchdog = Counted()
    model = FinderModel(optimizer=sgd())
    model.watchdog = watchdog
    make_trainer(tmp_path, max_steps=3, logger=False, callbacks=[LRFinder(num_steps=20), watchdog]).fit(
        model, shuffled()
    )
    assert Counted.loads == 0


def test_a_sweep_that_raises_between_unscale_and_update_leaves_the_scaler_usable(tmp_path):
    """The GradScaler marks an optimizer "unscaled" until ``update()``; a failure in between must not leave it."""

    class FailsBeforeTheStep(FinderModel):
        def on_before_optimizer_step(self, optimizer):  # after scaler.unscale_, before scaler.step/update
            if len(self.calls) == 4:
                raise RuntimeError("scripted failure after unscaling")

    precision = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    model = FailsBeforeTheStep(optimizer=sgd())
    trainer = make_trainer(tmp_path, max_steps=1, logger=False, plugins=[precision], callbacks=[LRFinder()])
    with pytest.raises(RuntimeError, match="scripted failure after unscaling"):
        trainer.fit(model, shuffled())
    optimizer = trainer.optimizers[0]
    precision.scaler.unscale_(optimizer)  # raises "unscale_() has already been called" if the mark was left
