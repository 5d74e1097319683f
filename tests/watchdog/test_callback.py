"""DivergenceWatchdog's mechanics with a real Trainer: exact skips (also under a GradScaler and on the device),
host synchronisations, the shared LR model, TensorBoard, pausing, accumulation, checkpoints and resume."""

from __future__ import annotations

import collections
import itertools
import logging
import math
import random
import re
import statistics
import warnings
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, StochasticWeightAveraging
from pytorch_lightning.plugins.precision import MixedPrecision
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader

from lr_callbacks import DivergenceWatchdog, Incident, LRFinder, LRSchedule
from lr_callbacks.core.compat import Callback
from lr_callbacks.core.lr_model import paused
from lr_callbacks.watchdog.callback import DEVICE_SYNC_EVERY
from lr_callbacks.watchdog.config import Action, Signal
from lr_callbacks.watchdog.device import UPDATE_SAMPLE, UpdateProbe, sample_stride
from lr_callbacks.watchdog.snapshots import reference_loss, state_bytes
from tests.helpers import TinyModel, loader, make_trainer, read_events, read_scalars, read_text, regression_data
from tests.watchdog.test_models import DigitsModel, Faults, digits_data, digits_loader, fit


def small(**kwargs: object) -> DivergenceWatchdog:
    """A watchdog that judges from step 10 and snapshots every 10 clean steps, for short runs."""
    options: dict[str, object] = dict(warmup_steps=10, window=20, snapshot_every=10, flat_loss_steps=None)
    options.update(kwargs)
    return DivergenceWatchdog(**options)  # type: ignore[arg-type]


def state_of(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    tensors = [p.detach().clone() for p in module.parameters()]
    for p in module.parameters():
        tensors += [v.detach().clone() for v in optimizer.state.get(p, {}).values() if isinstance(v, torch.Tensor)]
    return tensors


class StepSpy(pl.Callback):
    """Placed after the watchdog: the state an update starts from, and the state after it, at one step."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.before: list[torch.Tensor] | None = None
        self.after: list[torch.Tensor] | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            self.before = state_of(pl_module, optimizer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step + 1 and self.after is None:
            self.after = state_of(pl_module, trainer.optimizers[0])

    def unchanged(self) -> bool:
        assert self.before is not None and self.after is not None
        return len(self.before) == len(self.after) and all(map(torch.equal, self.before, self.after))


# --- the skip is a true no-op ---------------------------------------------------------------------------------


def test_a_skipped_step_leaves_weights_moments_and_step_count_alone(tmp_path):
    spy, schedule, watchdog = StepSpy(30), LRSchedule("constant"), small()
    trainer = fit(tmp_path, DigitsModel("adamw", faults=Faults(nan_loss=[30])), [schedule, watchdog, spy], 40)
    assert [(e.step, e.action) for e in watchdog.events] == [(30, "skip")]
    assert spy.unchanged()
    assert watchdog.sync_every_n_steps == 1  # on the CPU the host decides every step
    # the step still counts: the batch was spent, and the schedule's clock moves with trainer.global_step
    assert trainer.global_step == 40 and schedule.steps == [40]


def test_the_skip_is_exact_under_a_grad_scaler(tmp_path):
    spy, watchdog = StepSpy(30), small()
    # a small loss scale, so that the ×1000 loss stays finite in float16: the skip is the watchdog's, not the scaler's
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=10_000)
    model = DigitsModel("adamw", faults=Faults(loss_times={30: 1000.0}))
    fit(tmp_path, model, [watchdog, spy], 40, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert (30, "loss", "skip") in [(e.step, e.signal, e.action) for e in watchdog.events]
    assert spy.unchanged()  # no "No inf checks were recorded for this optimizer": the scaler unscaled first
    assert scaler.get_scale() == 4.0  # the scaler found nothing to skip
    assert watchdog.sync_every_n_steps == 1  # the scaler reads its inf flag every step anyway
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_fused_optimizer_under_a_grad_scaler_is_judged_on_unscaled_gradients_and_skips_exactly(tmp_path):
    """Lightning leaves a fused optimizer's gradients scaled at ``on_before_optimizer_step`` (it unscales in its
    step). Before: the watchdog's gradient norms were ×(loss scale), and its skip (every gradient dropped) left the
    scaler with no inf checks: ``AssertionError: No inf checks were recorded prior to update`` at the first skip."""
    spy, watchdog = StepSpy(30), small()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=10_000)
    model = DigitsModel("adamw_fused", faults=Faults(nan_loss=[30]))
    fit(tmp_path, model, [watchdog, spy], 40, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(30, "non_finite", "skip")]
    assert spy.unchanged() and all(torch.isfinite(p).all() for p in model.parameters())
    norms = [math.exp(v) for v in watchdog._policy.grad.values]
    assert 0.05 < statistics.median(norms) < 20.0  # a digits MLP's gradient norm, not ×4 or more of it


def test_a_grad_scalers_overflows_while_it_calibrates_are_not_incidents(tmp_path):
    """A loss scale of 2**30 overflows float16 for many steps in a row while it halves down: the scaler skips them
    itself. Before, `patience` of them in a row read as persistent outliers: a rollback and a halved LR."""
    watchdog = small()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30, growth_interval=10_000)
    model = DigitsModel("adamw")
    fit(tmp_path, model, [watchdog], 40, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert scaler.get_scale() < 2.0**20  # it did calibrate, over more than `patience` steps
    assert not [e for e in watchdog.events if e.signal == "non_finite" or e.action != "skip"]
    assert watchdog.scale == 1.0


def test_gradients_that_overflow_every_step_under_a_grad_scaler_get_a_decision_once_its_scale_is_below_1(tmp_path):
    """The scaler's overflows are not incidents while its scale amplifies the gradients; once it has halved below 1,
    gradients still overflowing are not finite unscaled either. Before, such a run trained on with no decision
    (its scale at 8e-25): the exemption had no bound (found by a review of this stop's changes)."""
    watchdog = small(max_data_skips=20)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**6, growth_interval=10_000)
    model = DigitsModel("adamw", faults=Faults(inf_grad=list(range(30, 80))))
    fit(tmp_path, model, [watchdog], 80, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    skips = [e.step for e in watchdog.events if e.signal == "non_finite"]
    assert skips and 30 < skips[0] <= 38  # after 6 overflows the scale is 1, then below it
    assert watchdog.halt_reason is not None and "the data stayed bad" in watchdog.halt_reason


class SkipsABatch(TinyModel):
    """A fused SGD; ``training_step`` returns ``None`` once at step 15 (Lightning's way to skip a batch)."""

    def __init__(self) -> None:
        super().__init__(optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.01, fused=True))
        self.deltas: dict[int, float] = {}
        self._before: list[torch.Tensor] | None = None
        self._skipped = False

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.global_step == 15 and torch.is_grad_enabled() and not self._skipped:
            self._skipped = True
            return None
        return super().training_step(batch, batch_idx)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        self._before = [p.detach().clone() for p in self.parameters()]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._before is not None:
            moved = sum(float((p - b).norm()) for p, b in zip(self.parameters(), self._before))
            self.deltas[int(self.global_step)] = moved
            self._before = None


def test_a_batch_skipped_by_returning_none_leaves_a_fused_optimizer_under_a_grad_scaler_as_without_the_watchdog(
    tmp_path,
):
    """Lightning calls ``on_before_optimizer_step`` for such a batch, where the watchdog unscales a fused optimizer,
    and then steps neither the optimizer nor the scaler: the scaler's "unscaled" mark stayed, and the next step's
    gradients went unread and were applied ×(loss scale) (or, without gradients, "No inf checks were recorded")."""
    deltas = []
    for callbacks in ([], [small()]):
        pl.seed_everything(0, verbose=False)
        model = SkipsABatch()
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=10_000)
        precision = MixedPrecision("16-mixed", "cpu", scaler=scaler)
        trainer = make_trainer(tmp_path, max_steps=20, callbacks=callbacks, plugins=[precision])
        trainer.fit(model, loader(batch_size=4))
        deltas.append(model.deltas)
        assert not (callbacks and callbacks[0].events)
    assert deltas[0] == pytest.approx(deltas[1], rel=1e-6)


def test_on_the_device_a_fused_optimizer_skips_exactly_through_found_inf(tmp_path):
    spy, watchdog = StepSpy(30), small(sync_every_n_steps=4)
    model = DigitsModel("adamw_fused", faults=Faults(nan_loss=[30]))
    fit(tmp_path, model, [watchdog, spy], 40)
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(30, "non_finite", "skip")]
    assert spy.unchanged()
    assert not hasattr(model.trainer.optimizers[0], "found_inf")


def test_on_the_device_another_optimizer_gets_zero_gradients_instead(tmp_path):
    spy, watchdog = StepSpy(30), small(sync_every_n_steps=4)
    model = DigitsModel("sgd", faults=Faults(nan_loss=[30]))
    fit(tmp_path, model, [watchdog, spy], 40)
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(30, "non_finite", "skip")]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert spy.before is not None and spy.after is not None
    # SGD's momentum buffers decay by 0.9 and the weights move by the old momentum: documented, not a no-op
    weights, buffers = len(list(model.parameters())), spy.before[len(list(model.parameters())) :]
    assert all(torch.allclose(a, 0.9 * b) for a, b in zip(spy.after[weights:], buffers))


class SyncCounter(TorchFunctionMode):
    """Counts the calls that make the host wait for the device: ``item``, ``tolist``, ``cpu``, ``bool(t)``..."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.syncs = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.syncs:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("sync_every", "reads"), [(DEVICE_SYNC_EVERY, 64 // DEVICE_SYNC_EVERY + 1), (1, 64)])
def test_host_reads_once_every_sync_every_n_steps(tmp_path, monkeypatch, sync_every, reads):
    import lr_callbacks.watchdog.callback as callback_module

    counts, probes = [], []

    def counted(*args, **kwargs):  # the reference batch's evaluations, with the reads they make
        before = counter.count
        value = reference_loss(*args, **kwargs)
        probes.append((int(args[0].trainer.global_step), counter.count - before))
        return value

    monkeypatch.setattr(callback_module, "reference_loss", counted)
    faults = Faults(reading_times={5: 20.0})  # a loss that reads high in the warmup: the reference batch is read
    for callbacks in (
        [LRSchedule("cosine", warmup="12 steps")],
        [LRSchedule("cosine", warmup="12 steps"), small(sync_every_n_steps=sync_every)],
    ):
        with SyncCounter() as counter:
            fit(tmp_path, DigitsModel(faults=faults), callbacks, 64, logger=False)
        counts.append(counter.count)
    # what the watchdog adds: one read of its signals per `sync_every` steps, and one at the run's first step; and
    # while the LR warms up, before its baseline exists (warmup_steps=10), at a read step that saw the loss rise, its
    # reference batch's loss (against an LR that damages the weights as it warms up): nothing between reads or after
    assert probes and all((step + 1) % sync_every == 0 or step == 0 for step, _ in probes)
    assert all(step < 10 + sync_every for step, _ in probes)  # a read covers the steps since the last one
    assert len({step for step, _ in probes}) == len(probes)  # once per read at most
    assert counts[1] - counts[0] - sum(n for _, n in probes) == reads


class AutocastSeen(TinyModel):
    """Records, for each ``training_step`` call without gradients (the watchdog's reference evaluation), whether
    it ran under the CPU's autocast."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reference_autocast: list[bool] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if not torch.is_grad_enabled():
            self.reference_autocast.append(torch.is_autocast_enabled("cpu"))
        return super().training_step(batch, batch_idx)


def test_the_reference_batch_is_evaluated_in_the_steps_precision(tmp_path):
    """Its level is the step's own loss, computed under the precision plugin's autocast; before, the reference ran
    in float32 (and a model with half-only kernels would fail there)."""
    model = AutocastSeen(loss_hook=lambda step, loss: loss * 50.0 if step in (40, 41) else loss)
    watchdog = DivergenceWatchdog(warmup_steps=10, update_every=None)
    trainer = make_trainer(tmp_path, max_steps=60, precision="bf16-mixed", callbacks=[watchdog])
    trainer.fit(model, loader(regression_data()))
    assert model.reference_autocast and all(model.reference_autocast)


def test_a_tensor_lr_is_not_read_back_between_reads():
    """A fused or capturable optimizer's LR may be a tensor on the device: arming the update probe copies it (no
    read); the next host read takes it as a number. Before, ``float(group["lr"])`` at every armed step synced the
    device between reads (every ``update_every`` steps)."""
    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=torch.tensor(0.01))
    probe = UpdateProbe()
    with SyncCounter() as counter:
        probe.arm(optimizer, step=5)
        optimizer.param_groups[0]["lr"].fill_(0.02)  # a schedule writing the next LR in place
    assert counter.count == 0
    layer.weight.grad, layer.bias.grad = torch.ones(2, 4), torch.ones(2)
    optimizer.step()
    probe.measure(optimizer)
    _, lrs, step = probe.take()
    assert lrs == [pytest.approx(0.01)] and step == 5  # the LR of the measured update, not the one written since


def test_the_update_ratio_is_reduced_on_the_device_it_is_given_not_the_weights(monkeypatch):
    """Under FSDP2 with ``CPUOffloadPolicy`` the weight shards live on the host while the process group is NCCL's,
    which reduces GPU tensors only: the callback passes the strategy's root device, and both norms are reduced
    there. Before, they were reduced on the weights' device (the host), which NCCL refuses at the first measured
    step. (No second device here: the device the norms are asked on is recorded.)"""
    import lr_callbacks.watchdog.device as device_module

    asked: list[torch.device] = []
    real = device_module.global_norm

    def recording(tensors, device, shard_group=None):
        asked.append(device)
        return real(tensors, torch.device("cpu"), shard_group)

    monkeypatch.setattr(device_module, "global_norm", recording)
    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    probe = UpdateProbe()
    probe.arm(optimizer, step=5)
    layer.weight.grad, layer.bias.grad = torch.ones(2, 4), torch.ones(2)
    optimizer.step()
    probe.measure(optimizer, device=torch.device("meta"))
    assert asked == [torch.device("meta")] * 2
    ratios, _, _ = probe.take()
    assert ratios is not None and float(ratios[0]) > 0


def test_auto_sync_every_is_8_on_an_accelerator_and_1_on_the_cpu():
    assert DEVICE_SYNC_EVERY == 8
    assert DivergenceWatchdog().sync_every_n_steps == 1  # before fit: not resolved yet


def test_clip_scales_the_gradient_down_to_the_threshold(tmp_path):
    norms: dict[int, float] = {}

    class Norm(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            norms[trainer.global_step] = float(torch.nn.utils.get_total_norm(grads))

    watchdog = small(outlier_action="clip", grad_z_threshold=6.0)
    model = DigitsModel(faults=Faults(loss_times={30: 1000.0}))
    fit(tmp_path, model, [watchdog, Norm()], 40)
    clipped = [e for e in watchdog.events if e.step == 30]
    assert {e.action for e in clipped} == {"clip"}
    loss_limit, grad_limit = (next(e.threshold for e in clipped if e.signal == s) for s in ("loss", "grad_norm"))
    # min(limit / value) over the two signals: the step is no larger than one at the threshold
    assert norms[30] <= grad_limit * (1 + 1e-5)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert loss_limit < 1000.0


class ClippedDigits(DigitsModel):
    """Records each step's gradients after the trainer's clipping (Lightning calls this hook to clip)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clipped: dict[int, tuple[float, float]] = {}  # step: (norm, largest |g|) after clipping

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        largest = max(float(g.abs().max()) for g in grads)
        self.clipped[self.global_step] = (float(torch.nn.utils.get_total_norm(grads)), largest)


@pytest.mark.parametrize(("algorithm", "value"), [("norm", 0.5), ("value", 0.01)])
def test_the_gradient_norm_is_read_before_the_trainers_clipping_which_still_applies_after(tmp_path, algorithm, value):
    """The watchdog judges the gradient the step computed (its norm logged before ``gradient_clip_val`` clips it);
    its own ``"clip"`` of an outlier comes first, and the trainer's clipping still applies to every step after it."""
    norms: dict[int, float] = {}

    class Norm(pl.Callback):  # after the watchdog, before Lightning's clipping
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            norms[trainer.global_step] = float(torch.nn.utils.get_total_norm(grads))

    watchdog = small(outlier_action="clip", log_every_n_steps=1)
    model = ClippedDigits(faults=Faults(loss_times={30: 1000.0}))
    fit(tmp_path, model, [watchdog, Norm()], 40, gradient_clip_val=value, gradient_clip_algorithm=algorithm)
    assert {(e.step, e.action) for e in watchdog.events} == {(30, "clip")}
    logged = dict(read_scalars(tmp_path, "watchdog/grad_norm"))
    assert all(logged[k] == pytest.approx(norms[k], rel=1e-6) for k in range(40) if k != 30)
    assert max(norms.values()) > 4 * value  # the clipping below had work to do
    assert sorted(model.clipped) == list(range(40))
    measure = 0 if algorithm == "norm" else 1
    assert all(clipped[measure] <= value * (1 + 1e-5) for clipped in model.clipped.values())


# --- the shared LR model --------------------------------------------------------------------------------------


def test_lowering_the_lr_goes_through_lr_schedule_scale(tmp_path):
    schedule = LRSchedule("cosine", warmup="5 steps")
    # without the reference batch the repeated spikes lower the LR (with it they are bad data, skipped)
    watchdog = small(lower_after=2, lower_window=20, recover_after=15, reference_batch=False)
    model = DigitsModel(faults=Faults(loss_times={20: 1000.0, 25: 1000.0}))
    fit(tmp_path, model, [schedule, watchdog], 60)
    kinds = [(e.step, e.action) for e in watchdog.events if e.action != "skip"]
    assert kinds == [(25, "lower_lr"), (40, "raise_lr")]
    expected = [schedule.lr_at(k) * (0.5 if 25 <= k < 40 else 1.0) for k in range(60)]
    assert model.seen_lrs == pytest.approx(expected, rel=1e-12)
    assert [v for _, v in read_scalars(tmp_path, "watchdog/lr_scale")][24:27] == [1.0, 0.5, 0.5]
    assert schedule.scales == [[1.0]] and schedule.steps == [60]


def test_lowering_the_lr_rescales_a_user_torch_scheduler(tmp_path):
    def hook(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * 1000.0 if step in (20, 22) else loss

    model = TinyModel(
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1.0 + 0.01 * k)),
        loss_hook=hook,
    )
    watchdog = small(lower_after=2, min_spread=0.05, reference_batch=False, recover_after=None)
    trainer = make_trainer(tmp_path, max_steps=30, callbacks=[watchdog])
    trainer.fit(model, loader(regression_data(n=256)))
    assert [(e.step, e.action) for e in watchdog.events if e.action != "skip"] == [(22, "lower_lr")]
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.base_lrs == pytest.approx([0.05, 0.005])
    for k, (body, head) in enumerate(model.seen_lrs):
        scale = 0.5 if k >= 22 else 1.0
        assert body == pytest.approx(0.1 * scale / (1 + 0.01 * k)) and head == pytest.approx(body / 10)


TORCH_SCHEDULERS = {
    # recursive: each step's LR is the group's last one (× gamma every 10 steps)
    "StepLR": lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5),
    # closed form, from the initial_lr, max_lr and min_lr it keeps in each group
    "OneCycleLR": lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, total_steps=70, pct_start=0.25
    ),
    # closed form, from its base_lrs
    "LambdaLR": lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0 / (1.0 + 0.01 * k)),
}


class OwnScheduler(DigitsModel):
    """DigitsModel (SGD, LR 0.1) with a torch scheduler of its own, stepped every step, instead of LRSchedule."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scheduler_name = name

    def configure_optimizers(self) -> Any:
        optimizer = super().configure_optimizers()
        scheduler = TORCH_SCHEDULERS[self.scheduler_name](optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@pytest.mark.parametrize("name", sorted(TORCH_SCHEDULERS))
def test_a_cut_of_a_user_torch_scheduler_is_kept_and_given_back(tmp_path, name):
    """The user's scheduler writes group['lr'] every step: the watchdog's cut at step 25 holds through its steps (a
    StepLR decay at step 30 included) and the clean stretch gives it back at step 40, each step at the scheduler's
    own LR times the scale (the same scheduler stepped alone is the reference), and ``watchdog/lr_scale`` logs that
    scale at every step."""
    watchdog = small(lower_after=2, lower_window=20, recover_after=15, reference_batch=False)
    model = OwnScheduler(name, faults=Faults(loss_times={20: 1000.0, 25: 1000.0}))
    fit(tmp_path, model, [watchdog], 60)
    assert [(e.step, e.action) for e in watchdog.events if e.action != "skip"] == [(25, "lower_lr"), (40, "raise_lr")]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    scheduler, alone = TORCH_SCHEDULERS[name](optimizer), []
    for _ in range(60):
        alone.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    scales = [0.5 if 25 <= k < 40 else 1.0 for k in range(60)]
    assert model.seen_lrs == pytest.approx([lr * scale for lr, scale in zip(alone, scales)], rel=1e-12)
    assert dict(read_scalars(tmp_path, "watchdog/lr_scale")) == dict(enumerate(scales))
    # the update ratio, judged against the group's LR (the cut in it), under the group's lr/<group> name
    assert [k for k, _ in read_scalars(tmp_path, "watchdog/update_ratio/group0")] == [0, 5, 10, 15, *range(30, 60, 5)]
    assert watchdog.scale == 1.0


def test_lowering_the_lr_scales_a_cosine_annealing_floor_with_it(tmp_path):
    """CosineAnnealingLR's ``eta_min`` is where its curve goes, not a clamp: left unscaled, it pulled a cut LR back
    up (the head group, cut from 0.0050 to 0.0025 at step 22, climbed back to 0.0040 by step 29; the body's cut
    from 0.0199 to 0.0099 ended at 0.0041, not 0.0021). It is now scaled with the cut: every step's LR is the
    scale times the schedule's."""

    def hook(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * 1000.0 if step in (20, 22) else loss

    model = TinyModel(
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30, eta_min=0.004),
        loss_hook=hook,
    )
    watchdog = small(lower_after=2, min_spread=0.05, reference_batch=False, recover_after=None)
    trainer = make_trainer(tmp_path, max_steps=30, callbacks=[watchdog])
    trainer.fit(model, loader(regression_data(n=256)))
    assert [(e.step, e.action) for e in watchdog.events if e.action != "skip"] == [(22, "lower_lr")]
    for k, lrs in enumerate(model.seen_lrs):
        scale = 0.5 if k >= 22 else 1.0
        cosine = [0.004 + (base - 0.004) * (1 + math.cos(math.pi * k / 30)) / 2 for base in (0.1, 0.01)]
        assert lrs == pytest.approx([scale * lr for lr in cosine], rel=1e-9)


@pytest.mark.parametrize("with_schedule", [True, False], ids=["LRSchedule", "alone"])
def test_a_cut_taken_before_swa_starts_and_given_back_in_its_phase_ends_at_the_swa_lrs(tmp_path, with_schedule):
    """StochasticWeightAveraging starts at step 32 (epoch 1) with swa_lrs=0.02; the watchdog cut the LR to 0.5 at
    step 31 and to 0.25 at its rollback at step 41, and gives both back at steps 71 and 101. SWALR's swa_lr was set
    after the first cut, without it: giving the cuts back took it to 0.04, twice the swa_lrs asked for."""

    def hook(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * 1000.0 if step in (20, 22) else loss

    model = TinyModel(loss_hook=hook)
    watchdog = small(lower_after=2, min_spread=0.05, reference_batch=False, recover_after=15)
    swa = StochasticWeightAveraging(swa_lrs=0.02, swa_epoch_start=2, annealing_epochs=1)
    callbacks = [*([LRSchedule("constant", log_plan=False)] if with_schedule else []), watchdog, swa]
    pl.seed_everything(0, verbose=False)
    trainer = make_trainer(tmp_path, max_epochs=4, callbacks=callbacks, logger=False)
    trainer.fit(model, loader(regression_data(n=256)))
    kinds = [(e.step, e.action) for e in watchdog.events if e.action != "skip"]
    assert kinds == [(31, "lower_lr"), (41, "rollback"), (71, "raise_lr"), (101, "raise_lr")]
    assert watchdog.scale == 1.0 and model.seen_lrs[-1] == pytest.approx([0.02, 0.02], rel=1e-12)
    assert model.seen_lrs[80] == pytest.approx([0.01, 0.01], rel=1e-12)  # swa_lrs at the cut still held, 0.5


class OwnSwalr(DigitsModel):
    """Its own SWALR (swa_lr 0.02), stepped every step; records each step's ``swa_lr``."""

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        swalr = torch.optim.swa_utils.SWALR(optimizer, swa_lr=0.02, anneal_epochs=100, anneal_strategy="linear")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": swalr, "interval": "step"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.swa_lrs = [*getattr(self, "swa_lrs", []), self.trainer.optimizers[0].param_groups[0]["swa_lr"]]


def test_a_resume_keeps_the_cut_in_a_module_s_own_swalr_once(tmp_path):
    """The module's own SWALR targets swa_lr 0.02; the watchdog's cut to 0.5 at step 25 takes it to 0.01, and the
    checkpoint's optimizer holds that. Before, the resumed fit took the restored SWALR for one StochasticWeightAveraging
    had just created, without the cut, and cut it again: 0.005, half the LR the uninterrupted run anneals to."""
    options = dict(lower_after=2, lower_window=20, recover_after=None, reference_batch=False)
    model, watchdog = OwnSwalr(faults=Faults(loss_times={20: 1000.0, 25: 1000.0})), small(**options)
    trainer = fit(tmp_path, model, [watchdog], 30, logger=False)
    assert [(e.step, e.action) for e in watchdog.events if e.action != "skip"] == [(25, "lower_lr")]
    assert model.swa_lrs[-1] == pytest.approx(0.01)
    trainer.save_checkpoint(tmp_path / "cut.ckpt")
    resumed, watchdog = OwnSwalr(), small(**options)
    trainer = make_trainer(tmp_path, max_steps=32, callbacks=[watchdog], logger=False)
    trainer.fit(resumed, digits_loader(), ckpt_path=tmp_path / "cut.ckpt")
    assert watchdog.scale == 0.5 and resumed.swa_lrs == pytest.approx([0.01, 0.01])


def test_a_fit_continued_on_the_same_trainer_does_not_keep_a_cut_the_new_watchdog_run_does_not_hold(tmp_path):
    """``trainer.fit`` again with max_steps raised: LRSchedule goes on from the last fit, the watchdog starts afresh
    (no incidents, scale 1). Before, the schedule kept the last fit's cut (scale 0.5) under it: the second fit trained
    at half the LR, a cut no watchdog held or would give back, while ``watchdog/lr_scale`` read 1.0."""
    schedule = LRSchedule("constant", log_plan=False)
    watchdog = small(lower_after=2, lower_window=20, recover_after=None, reference_batch=False)
    model = DigitsModel(faults=Faults(loss_times={20: 1000.0, 25: 1000.0}))
    trainer = fit(tmp_path, model, [schedule, watchdog], 30, logger=False)
    assert [(e.step, e.action) for e in watchdog.events if e.action != "skip"] == [(25, "lower_lr")]
    assert schedule.scales == [[0.5]] and model.seen_lrs[25:] == [0.05] * 5
    trainer.fit_loop.epoch_loop.max_steps = 40
    trainer.fit(model, digits_loader())
    assert trainer.global_step == 40 and watchdog.events == [] and watchdog.scale == 1.0
    assert schedule.scales == [[1.0]] and model.seen_lrs[30:] == [0.1] * 10


def test_a_resume_without_the_watchdog_keeps_its_cut_and_says_so(tmp_path):
    """The watchdog cut the LR to 0.5 at step 25; the run resumes from step 30 without it. LRSchedule keeps the cut
    (the LR goes on as the checkpoint's run trained, 0.05) and says so once: the scale per group, the step of the cut,
    and the fix, which works (the checkpoint's scales set to 1 train at the plan's 0.1, without a word). Before, only
    Lightning's generic warning about a callback missing from the checkpoint's said anything."""
    options = dict(lower_after=2, lower_window=20, recover_after=None, reference_batch=False)
    model, watchdog = DigitsModel(faults=Faults(loss_times={20: 1000.0, 25: 1000.0})), small(**options)
    trainer = fit(tmp_path, model, [LRSchedule("constant", log_plan=False), watchdog], 30, logger=False)
    assert [(e.step, e.action) for e in watchdog.events if e.action != "skip"] == [(25, "lower_lr")]
    path = tmp_path / "cut.ckpt"
    trainer.save_checkpoint(path)

    def resume(*watchdog: DivergenceWatchdog) -> tuple[DigitsModel, LRSchedule, list[str]]:
        model, schedule = DigitsModel(), LRSchedule("constant", log_plan=False)
        trainer = make_trainer(tmp_path, max_steps=34, callbacks=[schedule, *watchdog], logger=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(model, digits_loader(), ckpt_path=str(path))
        return model, schedule, [str(w.message) for w in caught if "LRSchedule: resuming" in str(w.message)]

    model, schedule, said = resume()
    assert schedule.scales == [[0.5]] and model.seen_lrs == [0.05] * 4
    assert len(said) == 1
    assert said[0].startswith(
        "LRSchedule: resuming with the LR scales DivergenceWatchdog set at step 25 ('group0' 0.5), but this run has no "
        "DivergenceWatchdog to give them back"
    )
    assert "Keep DivergenceWatchdog in the callbacks" in said[0]
    assert "state = ckpt['callbacks']['LRSchedule']; state['scales'] = [[1.0]]; state.pop('lrs')" in said[0]
    # with the watchdog, which holds the cut and gives it back itself: nothing to say
    model, schedule, said = resume(small(**options))
    assert said == [] and schedule.scales == [[0.5]] and model.seen_lrs == [0.05] * 4
    # the fix it names
    ckpt = torch.load(path, weights_only=False)
    state = ckpt["callbacks"]["LRSchedule"]
    state["scales"] = [[1.0]]
    state.pop("lrs")
    torch.save(ckpt, path)
    model, schedule, said = resume()
    assert said == [] and schedule.scales == [[1.0]] and model.seen_lrs == [0.1] * 4


@pytest.mark.parametrize("schedule_first", [True, False], ids=["schedule_first", "watchdog_first"])
def test_under_fast_dev_run_the_watchdog_leaves_an_aside_schedule_aside(tmp_path, schedule_first):
    """``fast_dev_run`` smoke-tests the code on a few batches, and LRSchedule stands aside. Before, the watchdog set
    it up at its first step (reading the planned peak) against those 3 batches: "the phases add up to 50 steps
    (50 steps), but the run has 3 steps", a failed smoke test of a configuration that trains."""
    schedule, watchdog = LRSchedule("cosine", warmup="50 steps"), DivergenceWatchdog()
    model = DigitsModel()
    callbacks = [schedule, watchdog] if schedule_first else [watchdog, schedule]
    fit(tmp_path, model, callbacks, 300, fast_dev_run=3, logger=False)
    assert model.seen_lrs == [0.1, 0.1, 0.1] and schedule.run is None  # configure_optimizers' LR, no plan


@pytest.mark.parametrize(
    ("faults", "options"),
    [
        (Faults(lr_times={k: 30.0 for k in range(35, 39)}), {}),
        (Faults(loss_times={20: 1000.0, 25: 1000.0}), dict(sync_every_n_steps=8, lower_after=2, reference_batch=False)),
    ],
    ids=["host", "device"],
)
def test_the_logged_lr_scale_is_the_one_each_update_used(tmp_path, faults, options):
    """``watchdog/lr_scale`` at step k is the scale of the LR step k trained at, as ``lr/<group>`` shows it. Before, on
    the host it was the scale after the step's first decision: at step 36 a rollback's cut (0.5) and then the update
    ratio's (0.05) trained it at 0.005, logged 0.5; at step 41 the LR was back at the plan's 0.1, logged 0.1. On the
    device (read every 8 steps) the steps judged between reads got the scale decided at the read, which only the
    steps from the read on used: 0.5 at steps 25-30, which trained at 0.1."""
    watchdog = small(**options)
    fit(tmp_path, DigitsModel(faults=faults), [LRSchedule("constant", log_plan=False), watchdog], 60)
    assert {e.action for e in watchdog.events} >= {"lower_lr", "raise_lr"}
    scales, lrs = dict(read_scalars(tmp_path, "watchdog/lr_scale")), dict(read_scalars(tmp_path, "lr/group0"))
    assert len(scales) >= 55 and set(scales) <= set(lrs)
    assert {k: 0.1 * scale for k, scale in scales.items()} == pytest.approx({k: lrs[k] for k in scales}, rel=1e-6)


# --- reporting --------------------------------------------------------------------------------------------------


def test_tensorboard_gets_the_statistics_and_a_row_per_intervention(tmp_path):
    watchdog = small()
    fit(tmp_path, DigitsModel(faults=Faults(loss_times={30: 1000.0})), [watchdog], 40)
    losses = dict(read_scalars(tmp_path, "watchdog/loss"))
    assert sorted(losses) == list(range(40)) and losses[30] > 100 * losses[29]
    z = dict(read_scalars(tmp_path, "watchdog/loss_z"))
    assert min(z) == 10 and z[30] > 6.0 > max(v for k, v in z.items() if k != 30)
    assert {k for k, _ in read_scalars(tmp_path, "watchdog/grad_norm_z")} == set(z)
    assert [v for _, v in read_scalars(tmp_path, "watchdog/lr_scale")] == [1.0] * 40
    assert len(read_scalars(tmp_path, "watchdog/cusum")) == 40
    texts = read_text(tmp_path, "watchdog/events")
    assert len(texts) == 1 and "| step | signal | value | threshold | action |" in texts[0]  # one table a step
    assert "| 30 | loss |" in texts[0] and "| 30 | grad_norm |" in texts[0] and "| skip |" in texts[0]


def test_tensorboard_serves_every_intervention_in_watchdog_events(tmp_path):
    """TensorBoard's server keeps one text entry per step, the last, and an entry at an earlier step than one it has
    drops those after it (a restarted run's): the watchdog wrote a row per incident at the incident's step, and the
    update ratio's incidents, judged at the next step, after that step's. Of this run's 7 incidents, a real
    ``tensorboard`` served 4 (steps 25, 30, 34, 35): the rollback at step 31 was not among them. Every read now
    writes one entry, its incidents' rows in order, at steps that only rise (all 7 served).

    In step order: the update ratio's incident of step 30, decided at step 31's read after that step's rollback,
    came after it in ``events`` and in the table (25, 31, 31, 31, 30, ...)."""
    watchdog = small()
    fit(tmp_path, DigitsModel(faults=Faults(nan_loss=[25], lr_times={30: 1000.0})), [watchdog], 40)
    events = [(e.step, e.signal, e.action) for e in watchdog.events]
    assert events[:5] == [
        (25, "non_finite", "skip"),
        (30, "update_ratio", "lower_lr"),
        (31, "loss", "skip"),
        (31, "grad_norm", "skip"),
        (31, "damaged_weights", "rollback"),
    ]
    assert [step for step, _, _ in events] == sorted(step for step, _, _ in events)
    entries = read_events(tmp_path).Tensors("watchdog/events/text_summary")
    steps = [entry.step for entry in entries]
    assert steps == sorted(set(steps))
    rows = [row for entry in entries for row in entry.tensor_proto.string_val[0].decode().splitlines()[2:]]
    assert rows == [incident.row() for incident in watchdog.events]


def test_log_every_n_steps_thins_the_scalars(tmp_path):
    fit(tmp_path, DigitsModel(), [small(log_every_n_steps=5)], 20)
    assert [k for k, _ in read_scalars(tmp_path, "watchdog/loss")] == [0, 5, 10, 15]


def test_a_flat_loss_is_reported_with_its_numbers(tmp_path):
    with pytest.warns(UserWarning, match=r"the loss went from .* over the first 40 steps: .* \(LR 1e-05\); .* higher"):
        fit(tmp_path, DigitsModel(lr=1e-5), [small(flat_loss_steps=40)], 50, logger=False)


@pytest.mark.parametrize(("drop", "advice"), [(0.005, "a higher"), (-0.005, "a higher"), (-0.3, "a lower")])
def test_the_flat_loss_advice_follows_the_numbers(drop, advice):
    """A loss that barely fell, or barely rose, wants a higher LR; one that rose by the threshold or more, lower."""
    flat = Incident(300, Signal.FLAT_LOSS, drop, 0.01, Action.WARN, "the loss went from 2 to 2.6 (+30%)")
    with pytest.warns(UserWarning, match=f"try LRFinder or {advice} peak LR"):
        DivergenceWatchdog()._report(flat)


# --- pausing, accumulation, manual optimization ------------------------------------------------------------------


def test_a_paused_watchdog_neither_judges_nor_learns(tmp_path):
    class Sweep(pl.Callback):
        """Pauses the Pausable callbacks over steps 20-25, as the LR finder does during its sweep."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == 20:
                self.context = paused(trainer)
                self.context.__enter__()
            if trainer.global_step == 26:
                self.context.__exit__(None, None, None)

    watchdog = small()
    faults = Faults(reading_times={22: 1000.0, 30: 1000.0})  # the loss reads ×1000; the gradient is the true one
    fit(tmp_path, DigitsModel(faults=faults), [watchdog, Sweep()], 35)
    assert [(e.step, e.signal) for e in watchdog.events] == [(30, "loss")]
    assert watchdog._policy.state.accepted == 35 - 6 - 1  # not the 6 paused steps, not the outlier


def test_micro_batches_of_one_step_are_combined(tmp_path):
    model = DigitsModel()
    fit(tmp_path, model, [small()], 12, accumulate_grad_batches=3)
    logged = [v for _, v in read_scalars(tmp_path, "watchdog/loss")]
    means = [sum(model.losses[3 * k : 3 * k + 3]) / 3 for k in range(12)]
    assert logged == pytest.approx(means, rel=1e-6)


class NormedMicroBatches(DigitsModel):
    """The digits MLP with BatchNorm under ``accumulate_grad_batches=4``: at step ``at`` one input sample of the 3rd
    micro-batch is NaN, and with ``none_first`` the 1st micro-batch's ``training_step`` returns ``None`` (after its
    forward pass). Records the running statistics at each step's start and end, and the state before each update."""

    def __init__(self, at: int, none_first: bool) -> None:
        super().__init__("adamw")
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
            )
        self.at, self.none_first = at, none_first
        self.statistics: dict[tuple[int, str], list[torch.Tensor]] = {}
        self.states: dict[int, list[torch.Tensor]] = {}

    def _statistics(self) -> list[torch.Tensor]:
        norm = self.net[1]
        return [norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone()]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx % 4 == 0:
            self.statistics[(self.global_step, "start")] = self._statistics()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        if torch.is_grad_enabled() and self.global_step == self.at and batch_idx % 4 == 2:
            x = x.clone()
            x[0, 0] = math.nan
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        first = torch.is_grad_enabled() and self.global_step == self.at and batch_idx % 4 == 0
        return None if first and self.none_first else loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.states[self.global_step] = state_of(self, optimizer)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx % 4 == 3:  # the step's last micro-batch: global_step counts it already
            self.statistics[(self.global_step - 1, "end")] = self._statistics()
            self.states[self.global_step - 1] = (
                state_of(self, self.trainer.optimizers[0]) + self.states[self.global_step - 1]
            )


@pytest.mark.parametrize("none_first", [False, True])
def test_a_fault_in_the_third_micro_batch_skips_the_whole_step_and_puts_batchnorm_back_to_its_start(
    tmp_path, none_first
):
    """Under ``accumulate_grad_batches=4`` a NaN input in the 3rd micro-batch of step 20: the step is skipped (weights,
    AdamW's moments and step count as before it), and BatchNorm's statistics are those of the step's start, before
    its 1st micro-batch's forward pass. Before, when that 1st micro-batch's ``training_step`` returned ``None``, they
    were captured at the 2nd, and the 1st's forward pass stayed in them (running_mean off by up to 0.009,
    num_batches_tracked by 1)."""
    model = NormedMicroBatches(at=20, none_first=none_first)
    watchdog = small()
    fit(tmp_path, model, [watchdog], 24, accumulate_grad_batches=4, logger=False)
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(20, "non_finite", "skip")]
    after_and_before = model.states[20]
    half = len(after_and_before) // 2
    assert all(map(torch.equal, after_and_before[:half], after_and_before[half:]))
    assert all(map(torch.equal, model.statistics[(20, "end")], model.statistics[(20, "start")]))
    assert not all(map(torch.equal, model.statistics[(19, "end")], model.statistics[(19, "start")]))  # they move


class NoneGroupBeforeTheFault(NormedMicroBatches):
    """NormedMicroBatches whose every micro-batch of step ``at - 1`` returns ``None`` (after its forward pass)."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        loss = super().training_step(batch, batch_idx)
        return None if torch.is_grad_enabled() and self.global_step == self.at - 1 else loss


def test_an_all_none_accumulation_group_keeps_its_batchnorm_updates_when_the_next_step_is_skipped(tmp_path):
    """Every micro-batch of step 19 returns ``None`` (no update; Lightning still counts the step), and step 20 is
    skipped for a NaN input. Only step 20's forward passes are put back: BatchNorm ends step 20 with the statistics
    step 19's four forward passes left, as it would without the watchdog (its capture is taken at each step's first
    micro-batch, and ``global_step`` moves on after an all-``None`` step too). No defect found; not covered before."""
    model = NoneGroupBeforeTheFault(at=20, none_first=False)
    watchdog = small()
    fit(tmp_path, model, [watchdog], 24, accumulate_grad_batches=4, logger=False)
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(20, "non_finite", "skip")]
    assert all(map(torch.equal, model.statistics[(20, "end")], model.statistics[(20, "start")]))
    assert all(map(torch.equal, model.statistics[(19, "end")], model.statistics[(20, "start")]))
    assert not any(map(torch.equal, model.statistics[(19, "end")][:2], model.statistics[(19, "start")][:2]))
    assert model.statistics[(20, "end")][2] == model.statistics[(19, "start")][2] + 4  # 19's passes counted


def test_manual_optimization_is_refused_with_the_reason(tmp_path):
    class Manual(DigitsModel):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

    with pytest.raises(ValueError, match=r"supports automatic optimization only.*automatic_optimization = True"):
        fit(tmp_path, Manual(), [small()], 5, logger=False)


def test_manual_optimization_with_two_optimizers_is_not_told_to_switch_to_automatic(tmp_path):
    """A GAN steps two optimizers, which Lightning allows only under manual optimization: the refusal told it to set
    ``automatic_optimization = True``, and Lightning then refused that ("Training with multiple optimizers is only
    supported with manual optimization")."""

    class TwoOptimizers(DigitsModel):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def configure_optimizers(self):
            return [
                torch.optim.SGD(self.net[0].parameters(), lr=0.1),
                torch.optim.SGD(self.net[2].parameters(), lr=0.1),
            ]

    with pytest.raises(
        ValueError, match=r"for a module that steps one optimizer.*several optimizers.*without the watchdog"
    ):
        fit(tmp_path, TwoOptimizers(), [small()], 5, logger=False)


def test_lbfgs_is_refused_with_the_reason(tmp_path):
    """LBFGS evaluates its closure several times a step: each evaluation was judged as a step (144 judged for 36
    steps), and after a rollback LBFGS wrote the faulty step's history over the restored state, so the next steps
    were judged damaged again until the rollbacks ran out and the run halted."""

    class WithLBFGS(DigitsModel):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=4)

    with pytest.raises(ValueError, match=r"cannot judge LBFGS steps: LBFGS.step\(\) evaluates its closure.*without"):
        fit(tmp_path, WithLBFGS(), [small()], 5, logger=False)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_deepspeed_is_refused_with_the_reason():
    # DeepSpeed is not installed here, so the trainer is a stand-in holding a strategy of that name: the kind of
    # strategy is all that setup looks at (FSDP2 and FSDP1 are accepted: tests/integration/test_fsdp2.py)
    class DeepSpeedStrategy:
        pass

    trainer = type("Trainer", (), {"strategy": DeepSpeedStrategy()})()
    module = type("Module", (), {"automatic_optimization": True})()
    with pytest.raises(ValueError, match=r"does not support DeepSpeed \(DeepSpeedStrategy\).*steps.*Use Model"):
        DivergenceWatchdog().setup(trainer, module, "fit")


# --- checkpoints, resume, halt -----------------------------------------------------------------------------------


class Weights(pl.Callback):
    """Placed after the watchdog: the module's weights each update starts from, by step."""

    def __init__(self) -> None:
        self.before: dict[int, list[torch.Tensor]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before[trainer.global_step] = [t.detach().clone() for t in pl_module.state_dict().values()]


@pytest.mark.parametrize("reference_batch", [False, True])
def test_a_checkpoint_written_during_an_incident_holds_the_clean_snapshot(tmp_path, reference_batch):
    """Without a reference batch the live weights during a run of outliers are not known clean: the checkpoint
    holds the snapshot's, the live ones in the watchdog's state. With one, the reference batch reads them sound
    and the skips left them as they were: the checkpoint holds them."""
    weights, watchdog = Weights(), small(reference_batch=reference_batch)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    faults = Faults(loss_times={k: 1000.0 for k in range(30, 34)})
    fit(tmp_path, DigitsModel(faults=faults), [watchdog, weights, checkpoints], 36, enable_checkpointing=True)
    snapshot = watchdog._policy.state.snapshot_step
    assert snapshot is not None and snapshot < 30
    during = torch.load(tmp_path / "ckpt" / "epoch=0-step=32.ckpt", weights_only=False)  # after steps 30, 31
    after = torch.load(tmp_path / "ckpt" / "epoch=0-step=35.ckpt", weights_only=False)  # after step 34: clean
    own = during["callbacks"]["DivergenceWatchdog"]
    if reference_batch:
        assert "live" not in own and all(map(torch.equal, during["state_dict"].values(), weights.before[32]))
    else:
        assert all(map(torch.equal, during["state_dict"].values(), weights.before[snapshot]))
        assert all(map(torch.equal, own["live"]["model"].values(), weights.before[30]))  # both steps were skipped
    assert "live" not in after["callbacks"]["DivergenceWatchdog"]
    assert all(map(torch.equal, after["state_dict"].values(), weights.before[35]))


def epochs_loader() -> DataLoader:
    return DataLoader(digits_data(), batch_size=32, shuffle=False)


def run(tmp_path, faults: Faults, steps: int, ckpt_path: str | None = None, every: int = 57, **kwargs):
    """A run whose step ``k`` trains on a batch fixed by ``k`` (Lightning restarts a plain DataLoader from its first
    batch on a mid-epoch resume), checkpointed every ``every`` steps (57: the end of epoch 0)."""
    pl.seed_everything(0, verbose=False)
    model, watchdog = DigitsModel(faults=faults, batch_by_step=True), small(patience=6, **kwargs)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=every, save_top_k=-1)
    trainer = make_trainer(tmp_path, max_steps=steps, callbacks=[watchdog, saver], enable_checkpointing=True)
    trainer.fit(model, epochs_loader(), ckpt_path=ckpt_path)
    return model, watchdog


def same(a: list[Incident], b: list[Incident]) -> bool:
    return [repr(e) for e in a] == [repr(e) for e in b]  # repr: NaN values compare equal


class Halved(DigitsModel):
    """Its ``on_after_batch_transfer`` halves the inputs (a normalization on the device)."""

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return x * 0.5, y


def test_a_resumed_reference_batch_goes_to_the_device_without_the_transfer_hooks_again(tmp_path):
    """The reference batch in a checkpoint is the one ``training_step`` got, after ``on_after_batch_transfer``: on
    resume it is moved to the module's device as it is (the hooks again would halve it twice)."""
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=15, save_top_k=-1, filename="{step}")
    fit(tmp_path / "full", Halved(), [small(), saver], 20, enable_checkpointing=True)
    path = tmp_path / "ckpt" / "step=15.ckpt"
    saved = torch.load(path, weights_only=True)["callbacks"]["DivergenceWatchdog"]["reference"][0]
    watchdog, seen = small(), []

    class Look(Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if not seen:
                seen.append(watchdog._ring.reference_batches()[0])

    trainer = make_trainer(tmp_path / "resumed", max_steps=20, callbacks=[watchdog, Look()])
    trainer.fit(Halved(), digits_loader(0), ckpt_path=str(path))
    assert torch.equal(seen[0][0], saved[0]) and torch.equal(seen[0][1], saved[1])


def test_weights_only_checkpoints_are_said_to_bypass_the_watchdog(tmp_path):
    """Lightning writes them without the callbacks' ``on_save_checkpoint``: one written during an incident held the
    live, damaged weights (loss 11.6) where a full one held the clean snapshot's (0.94). Said once at fit start."""
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_weights_only=True)
    with pytest.warns(UserWarning, match=r"ModelCheckpoint\(save_weights_only=True\) writes its checkpoints without"):
        fit(tmp_path, DigitsModel(), [small(), saver], 10, enable_checkpointing=True)


def test_lightning_s_weight_averaging_is_said_to_be_out_of_a_rollback_s_reach(tmp_path):
    """EMAWeightAveraging keeps its average inside the callback: a rollback does not put it back (one LR ×1000 step
    rolled back at the next left the average at 1.50 against 0.20 in the clean run). Said once at fit start."""
    from pytorch_lightning.callbacks import EMAWeightAveraging

    with pytest.warns(UserWarning, match=r"a rollback puts back the model's weights, not the average "):
        fit(tmp_path, DigitsModel(), [small(), EMAWeightAveraging()], 10)


def test_a_checkpoint_written_while_a_climb_is_under_way_keeps_the_newest_snapshot_beside_the_live_weights(tmp_path):
    """An LR that grows from step 30: the loss climbs (the CUSUM above 0 from step 46) until the weights read as
    damaged at step 49, rolled back to the snapshot before step 45. A checkpoint after step 47 holds the live
    weights (no incident is open) and, now, that snapshot beside them. Before, the resumed run took the checkpoint's
    climbing weights for the snapshot of step 45, and its "rollback to 45" restored them (found by a review)."""
    faults = Faults(lr_growth_from=30, lr_growth=1.15, lr_growth_max=40.0)
    full_model, full = run(tmp_path / "full", faults, 80, every=1)
    assert (49, "damaged_weights", "rollback", 45) in [(e.step, e.signal, e.action, e.rollback_to) for e in full.events]
    path = tmp_path / "full" / "ckpt" / "epoch=0-step=48.ckpt"
    own = torch.load(path, weights_only=True)["callbacks"]["DivergenceWatchdog"]
    assert own["policy"]["cusum"]["value"] > 0 and "live" not in own and "snapshot" in own
    resumed_model, resumed = run(tmp_path / "resumed", faults, 80, ckpt_path=str(path), every=1)
    assert same(full.events, resumed.events)
    assert all(map(torch.equal, full_model.state_dict().values(), resumed_model.state_dict().values()))


@pytest.mark.parametrize("saved_at", [43, 44])
def test_a_checkpoint_in_a_rollback_s_probation_keeps_the_snapshot_the_next_rollback_goes_to(tmp_path, saved_at):
    """LR pulses at steps 40 and 43: the first is rolled back at step 41 to the snapshot before step 40, the second
    (its damage read at step 44, while the restored weights are still in probation) to the same snapshot. A
    checkpoint written in between (after step 42's update, or after step 43's, the damaging one) now carries that
    snapshot beside its live weights. Before, the resumed run took the checkpoint's weights for the snapshot of step
    40: its rollback at step 44 restored them (from the checkpoint after step 43: the damaged weights, trained on
    after a new baseline), where the uninterrupted run went back to step 40's."""
    faults = Faults(lr_times={40: 50.0, 43: 300.0})
    full_model, full = run(tmp_path / "full", faults, 60, every=1)
    rollbacks = [(e.step, e.rollback_to) for e in full.events if e.action == "rollback"]
    assert rollbacks == [(41, 40), (44, 40)]
    path = tmp_path / "full" / "ckpt" / f"epoch=0-step={saved_at}.ckpt"
    own = torch.load(path, weights_only=True)["callbacks"]["DivergenceWatchdog"]
    assert own["policy"]["state"]["guarded"] is not None and "live" not in own and "snapshot" in own
    resumed_model, resumed = run(tmp_path / "resumed", faults, 60, ckpt_path=str(path), every=1)
    assert same(full.events, resumed.events)
    assert all(map(torch.equal, full_model.state_dict().values(), resumed_model.state_dict().values()))


@pytest.mark.parametrize(
    ("faults", "kwargs"),
    [
        # the checkpoint at the end of epoch 0 (step 57) is written in the middle of a run of outliers, which
        # ends in a rollback at step 58 (6 in a row) back to the snapshot before step 50
        (Faults(loss_times={k: 1000.0 for k in range(53, 62)}), {}),
        # written in a clean stretch: the next rollback (step 75) goes back to a snapshot taken after the resume
        (Faults(nan_loss=list(range(70, 76))), {}),
        # written mid-warmup: the resumed run finishes the same warmup and catches the same spike
        (Faults(loss_times={80: 1000.0}), {"warmup_steps": 70, "window": 80}),
        # judged on the device, read every 4 steps: step 56 was judged but not read yet when step 57 saved
        (Faults(loss_times={k: 1000.0 for k in range(53, 62)}), {"sync_every_n_steps": 4}),
    ],
    ids=["mid-incident", "clean", "mid-warmup", "between-reads"],
)
def test_resuming_behaves_like_the_uninterrupted_run(tmp_path, faults, kwargs):
    full_model, full = run(tmp_path / "full", faults, 90, **kwargs)
    ckpt = str(tmp_path / "full" / "ckpt" / "epoch=0-step=57.ckpt")
    pending = torch.load(ckpt, weights_only=False)["callbacks"]["DivergenceWatchdog"]["pending"]
    assert [row["step"] for row in pending] == ([56] if "sync_every_n_steps" in kwargs else [])
    resumed_model, resumed = run(tmp_path / "resumed", faults, 90, ckpt_path=ckpt, **kwargs)
    assert same(resumed.events, full.events) and resumed.scale == full.scale
    assert any(e.step > 57 and e.action in ("rollback", "skip") for e in full.events)
    assert repr(resumed.state_dict()) == repr(full.state_dict())
    assert all(map(torch.equal, resumed_model.state_dict().values(), full_model.state_dict().values()))


class WipeAt(pl.Callback):
    """After the update that ends at ``step`` (before a checkpoint written there): the MLP loses all its progress,
    as an LR fault leaves it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad(), torch.random.fork_rng():
                torch.manual_seed(123)
                for layer in pl_module.net:
                    if isinstance(layer, torch.nn.Linear):
                        layer.reset_parameters()
                pl_module.net[2].weight.mul_(3.0)


@pytest.mark.parametrize("snapshot_every", [100, 10])
def test_a_resume_while_the_lr_warms_up_judges_damage_as_the_uninterrupted_run(tmp_path, snapshot_every):
    """The weights lose all progress at step 57, where a checkpoint is written, while the LR still warms up; the
    uninterrupted run rolls back once at step 57 (the reference batch back above the run's first loss). Resumed:
    the lows that tell this damage come back with the checkpoint (before, they restarted from the snapshot's reading
    and, with a snapshot far back, the loss at the run's first level passed unchecked); and the restored weights,
    untouched, reading high on the reference are the snapshot's own level, not damage (before, with a snapshot every
    10 steps, every step after the rollback rolled back to the same weights again and cut the LR 3 times). A
    checkpoint holds no snapshot: where the uninterrupted run goes back to its start, the resumed run goes back to
    the weights it was resumed from."""

    def fit_from(root, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        model = DigitsModel("adamw", lr=3e-2, batch_by_step=True)
        watchdog = DivergenceWatchdog(
            warmup_steps=70, window=80, snapshot_every=snapshot_every, flat_loss_steps=None, patience=6
        )
        saver = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=57, save_top_k=-1)
        schedule = LRSchedule("cosine", warmup="65 steps", log_plan=False)
        callbacks = [schedule, watchdog, WipeAt(57), saver]
        trainer = make_trainer(root, max_steps=70, callbacks=callbacks, enable_checkpointing=True, logger=False)
        trainer.fit(model, epochs_loader(), ckpt_path=ckpt_path)
        return watchdog

    full = fit_from(tmp_path / "full")
    assert [(e.step, e.signal, e.action) for e in full.events] == [(57, "damaged_weights", "rollback")]
    resumed = fit_from(tmp_path / "resumed", str(tmp_path / "full" / "ckpt" / "epoch=0-step=57.ckpt"))
    if snapshot_every == 100:  # the run's start is the only snapshot either run has: the same rollback
        assert same(resumed.events, full.events) and resumed.scale == full.scale
        return
    # the uninterrupted run keeps its start in the ring while the LR warms up and goes back there, before the LR
    # passed the cut one; the resumed run holds only its checkpoint's weights: the same verdict and cut, another target
    [back], [again] = full.events, resumed.events
    assert (again.step, again.signal, again.action) == (back.step, back.signal, back.action)
    assert back.rollback_to == 0 and again.rollback_to != 0
    cut = re.compile(r"LR scale \S+ → \S+")
    assert cut.findall(again.detail) == cut.findall(back.detail)


class ScheduledDigits(DigitsModel):
    """DigitsModel with a torch scheduler of its own (a per-step decay) instead of LRSchedule."""

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0 / (1.0 + 0.01 * k))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


def test_resuming_after_a_cut_of_a_user_torch_scheduler_keeps_the_cut_once(tmp_path):
    """The cut lives in the scheduler's base LRs, which the checkpoint holds: the resumed run neither loses it nor
    applies it a second time."""

    def fit_from(root, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        faults = Faults(loss_times={60: 1000.0, 62: 1000.0})  # two outlier runs: lower_after=2 cuts at step 62
        model = ScheduledDigits(faults=faults, batch_by_step=True)
        watchdog = small(lower_after=2, reference_batch=False, recover_after=None)
        saver = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=70, save_top_k=-1)
        trainer = make_trainer(root, max_steps=90, callbacks=[watchdog, saver], enable_checkpointing=True)
        trainer.fit(model, epochs_loader(), ckpt_path=ckpt_path)
        return model, watchdog, trainer.lr_scheduler_configs[0].scheduler

    full_model, full, full_scheduler = fit_from(tmp_path / "full")
    assert [(e.step, e.action) for e in full.events if e.action != "skip"] == [(62, "lower_lr")]
    resumed_model, resumed, resumed_scheduler = fit_from(
        tmp_path / "resumed", str(tmp_path / "full" / "ckpt" / "epoch=1-step=70.ckpt")
    )
    assert resumed.scale == full.scale == 0.5 and resumed_scheduler.base_lrs == full_scheduler.base_lrs == [0.05]
    assert resumed_model.seen_lrs == full_model.seen_lrs[70:]
    assert all(map(torch.equal, resumed_model.state_dict().values(), full_model.state_dict().values()))


def test_resuming_after_an_update_ratio_sample_keeps_its_measurement(tmp_path):
    """Step 170 samples the update ratio (every 5 steps): measured after its update, read at step 171. The
    checkpoint written after step 170 (the end of epoch 2) carries that measurement, so the resumed run records
    it as the uninterrupted one does (without it, the ratio's baseline differs, and so do its alarms)."""
    faults = Faults(lr_times={k: 30.0 for k in range(175, 179)})  # 175: a sample step
    full_model, full = run(tmp_path / "full", faults, 200, every=171)
    ckpt = str(tmp_path / "full" / "ckpt" / "epoch=2-step=171.ckpt")
    update = torch.load(ckpt, weights_only=False)["callbacks"]["DivergenceWatchdog"]["update"]
    assert update["step"] == 170 and len(update["ratios"]) == len(update["lrs"]) == 1
    resumed_model, resumed = run(tmp_path / "resumed", faults, 200, ckpt_path=ckpt, every=171)
    assert any(e.signal == "update_ratio" for e in full.events)
    assert same(resumed.events, full.events) and resumed.scale == full.scale
    assert repr(resumed.state_dict()) == repr(full.state_dict())
    assert all(map(torch.equal, resumed_model.state_dict().values(), full_model.state_dict().values()))


def test_after_a_halt_no_update_happens_even_if_lightning_runs_on(tmp_path):
    watchdog = small(patience=3, max_rollbacks=0)
    model = DigitsModel(faults=Faults(nan_from=30))
    trainer = fit(tmp_path, model, [watchdog], 40, min_steps=40)  # min_steps: should_stop is not honoured yet
    assert watchdog.halt_reason is not None and trainer.global_step == 40
    assert [e.action for e in watchdog.events][-1] == "halt"
    saved = torch.load(watchdog.halt_checkpoint_path, weights_only=False)["state_dict"]
    assert all(map(torch.equal, saved.values(), model.state_dict().values()))


def test_resuming_a_halted_run_renews_the_rollback_budget(tmp_path, caplog):
    watchdog = small(patience=3, max_rollbacks=0)
    fit(tmp_path, DigitsModel(faults=Faults(nan_from=30)), [watchdog], 40)
    resumed = small(patience=3, max_rollbacks=0)
    with caplog.at_level(logging.WARNING, logger="lr_callbacks"):
        trainer = make_trainer(tmp_path / "again", max_steps=50, callbacks=[resumed], logger=False)
        pl.seed_everything(0, verbose=False)
        trainer.fit(DigitsModel(), epochs_loader(), ckpt_path=watchdog.halt_checkpoint_path)
    assert "resuming a halted run" in caplog.text and "rollback budget is renewed" in caplog.text
    assert resumed.halt_reason is None and trainer.global_step == 50
    assert same(resumed.events[: len(watchdog.events)], watchdog.events)
    assert math.isclose(resumed.scale, watchdog.scale)


def test_a_snapshot_restores_in_place_and_keeps_the_current_hyperparameters():
    from lr_callbacks.core.snapshot import ModelSnapshot

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    snapshot = ModelSnapshot()
    snapshot.take(model, optimizer, step=1)
    saved = state_of(model, optimizer)
    tensors = [id(t) for t in [*model.parameters(), *optimizer.state[model.weight].values()]]
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
    optimizer.param_groups[0]["lr"] = 0.05  # e.g. the schedule moved on
    snapshot.restore(model, optimizer)
    assert all(map(torch.equal, state_of(model, optimizer), saved))
    assert [id(t) for t in [*model.parameters(), *optimizer.state[model.weight].values()]] == tensors
    assert optimizer.param_groups[0]["lr"] == 0.05
    with pytest.raises(ValueError, match="no snapshot to restore yet"):
        ModelSnapshot().restore(model, optimizer)


def test_the_lr_finder_sweep_does_not_trigger_the_watchdog(tmp_path):
    from lr_callbacks import LRFinder

    # the sweep drives the LR up to 10, where the loss explodes; the watchdog is paused meanwhile
    finder, watchdog = LRFinder(num_steps=30, max_lr=10.0), small()
    fit(tmp_path, DigitsModel(), [finder, watchdog], 30, logger=False)
    assert finder.result is not None and finder.result.stop_reason == "diverged"
    assert watchdog.events == [] and watchdog._policy.state.accepted == 30


# --- the snapshot ring: host, disk, off, auto ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["host", "disk"])
def test_a_rollback_restores_the_same_state_from_host_memory_and_from_disk(tmp_path, mode):
    faults = Faults(lr_times={k: 30.0 for k in range(30, 33)})
    weights, watchdog = Weights(), small(snapshot=mode, update_every=None)
    model = DigitsModel(faults=faults)
    fit(tmp_path / mode, model, [watchdog, weights], 40)
    rollback = next(e for e in watchdog.events if e.action == "rollback")
    assert watchdog.snapshot_mode == mode and rollback.signal == "damaged_weights" and rollback.rollback_to == 30
    restored = weights.before[rollback.step + 1]  # the next update starts from the snapshot of step 30
    assert all(map(torch.equal, restored, weights.before[30]))
    assert not (tmp_path / mode / "watchdog-snapshots").exists()  # the files and the directory made for them


def test_two_runs_from_one_directory_keep_their_disk_snapshots_apart(tmp_path):
    """Two seeds started from one directory (``default_root_dir`` is the working directory by default) shared
    ``watchdog-snapshots/step-<k>.ckpt``: the first to end removed the other's files, whose next rollback then
    failed (``FileNotFoundError``), or loaded the other run's weights."""
    faults = Faults(lr_times={k: 30.0 for k in range(30, 33)})
    weights, watchdog = Weights(), small(snapshot="disk", update_every=None)
    other = small(snapshot="disk", update_every=None)

    class OtherRunEnds(Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step == 31:  # the other run, from the same directory, ends before this one's rollback
                fit(tmp_path, DigitsModel(seed=1), [other], 35)

    fit(tmp_path, DigitsModel(faults=faults), [watchdog, weights, OtherRunEnds()], 40)
    rollback = next(e for e in watchdog.events if e.action == "rollback")
    assert rollback.rollback_to == 30 and all(map(torch.equal, weights.before[rollback.step + 1], weights.before[30]))
    assert not other.events and not (tmp_path / "watchdog-snapshots").exists()


@pytest.mark.parametrize("sync_every", [1, 4, 8])
def test_one_damage_is_rolled_back_once_however_often_the_host_reads(tmp_path, sync_every):
    """Read back every N steps (the default on a GPU), the steps held on the device since the last read are
    replayed in order; once one of them rolls back, the later ones ran on the weights the rollback undoes and
    are not judged again (before: each rolled back on its own, all to the same snapshot, cutting the LR each
    time, and one damaged step could spend every rollback and halt the run)."""
    faults = Faults(lr_times={28: 100.0})  # one update at 100× the LR damages the weights; the host reads at 31
    watchdog = small(sync_every_n_steps=sync_every, update_every=None)
    fit(tmp_path, DigitsModel(faults=faults), [watchdog], 60)
    rollbacks = [e for e in watchdog.events if e.action == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0].rollback_to <= 28, watchdog.events  # a snapshot from a host read
    assert "LR scale 1 → 0.5" in rollbacks[0].detail and watchdog.halt_reason is None


class ShadowEMA:
    """An EMA of a module's parameters as torch_ema keeps it: no Module, ``state_dict``/``load_state_dict``."""

    def __init__(self, parameters: Any, decay: float = 0.99) -> None:
        self.parameters = list(parameters)
        self.shadow = [p.detach().clone() for p in self.parameters]
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        for shadow, p in zip(self.shadow, self.parameters):
            shadow.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = state["updates"]
        for shadow, saved in zip(self.shadow, state["shadow"]):
            shadow.copy_(saved)


class WithEMA(DigitsModel):
    """The digits MLP with an EMA updated in ``on_before_zero_grad`` (torch_ema's Lightning recipe), and a reference
    to the watchdog (to call ``rebaseline``), which saves its own state too."""

    def __init__(self, faults: Faults, watchdog: DivergenceWatchdog) -> None:
        super().__init__(faults=faults)
        self.ema, self.watchdog = ShadowEMA(self.net.parameters()), watchdog
        self.emas: dict[int, list[torch.Tensor]] = {}  # the EMA as each step's update began (after the watchdog's say)

    def on_before_zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        self.ema.update()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.emas[self.global_step] = [s.clone() for s in self.ema.shadow]
        super().on_before_optimizer_step(optimizer)


@pytest.mark.parametrize("snapshot", ["host", "disk"])
def test_a_rollback_puts_back_the_ema_the_module_keeps(tmp_path, snapshot):
    """An EMA the module keeps as a plain object (torch_ema, diffusers) goes back to the snapshot's with the weights.
    Before, it kept the damaged update averaged in: after one update at 1000× the LR, rolled back at the next step,
    the EMA's loss on the digits was 3.0 where the clean run's was 0.38 (and 1.5 against 0.20 forty steps later); a
    halt saved it so. The watchdog the module holds a reference to is left alone (its budget is not undone)."""
    watchdog = small(snapshot=snapshot, update_every=None, max_rollbacks=1)
    model = WithEMA(Faults(lr_times={28: 1000.0, 48: 1000.0}), watchdog)
    fit(tmp_path, model, [watchdog], 60, logger=False)
    acted = [e for e in watchdog.events if e.action in ("rollback", "halt")]
    assert [e.action for e in acted] == ["rollback", "halt"], watchdog.events
    for incident in acted:
        back = incident.rollback_to
        assert back is not None and back <= 28 + 20 * (incident.action == "halt")
        assert all(map(torch.equal, model.emas[incident.step], model.emas[back])), incident
    assert all(map(torch.equal, model.ema.shadow, model.emas[acted[1].step]))  # as the halt left it
    saved = torch.load(watchdog.halt_checkpoint_path, weights_only=False)
    assert saved["global_step"] == acted[1].step + 1 and watchdog.halt_reason is not None


class SavedEMA(DigitsModel):
    """The digits MLP, its batches fixed by step, with an EMA the module writes into its checkpoints and loads from
    them (torch_ema's Lightning recipe)."""

    def __init__(self, faults: Faults) -> None:
        super().__init__(faults=faults, batch_by_step=True)
        self.ema = ShadowEMA(self.net.parameters(), decay=0.9)

    def on_before_zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        self.ema.update()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.ema.load_state_dict(checkpoint["ema"])


@pytest.mark.parametrize(
    ("faults", "every", "options"),
    [
        # written while a run of outliers is open (the snapshot of step 50 in the checkpoint's state_dict), rolled
        # back at step 58 to that snapshot
        (Faults(loss_times={k: 1000.0 for k in range(53, 62)}), 57, {"reference_batch": False}),
        (Faults(loss_times={k: 1000.0 for k in range(53, 62)}), 57, {"reference_batch": False, "snapshot": "disk"}),
        # written while a climb is under way (the snapshot of step 45 beside the live weights), rolled back at 49
        (Faults(lr_growth_from=30, lr_growth=1.15, lr_growth_max=40.0), 48, {}),
    ],
    ids=["mid-incident", "mid-incident-disk", "climbing"],
)
def test_a_resumed_rollback_puts_back_the_snapshots_ema_as_the_uninterrupted_run(tmp_path, faults, every, options):
    """A checkpoint that carries the newest snapshot (in its state_dict while an incident is open, beside the live
    weights while a climb is under way) carries the EMA the module keeps as it was at that snapshot too: the
    resumed run's rollback puts it back as the uninterrupted run's does. Before, the resumed run's ring took the
    live EMA the checkpoint held for the snapshot's: its rollback left the EMA 6 updates ahead, weights equal."""

    def run_ema(root: Any, ckpt_path: str | None = None) -> tuple[SavedEMA, DivergenceWatchdog]:
        pl.seed_everything(0, verbose=False)
        model, watchdog = SavedEMA(faults), small(patience=6, **options)
        saver = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=every, save_top_k=-1)
        trainer = make_trainer(root, max_steps=80, callbacks=[watchdog, saver], enable_checkpointing=True)
        trainer.fit(model, epochs_loader(), ckpt_path=ckpt_path)
        return model, watchdog

    full_model, full = run_ema(tmp_path / "full")
    assert any(e.action == "rollback" and e.step > every for e in full.events), full.events
    ckpt = tmp_path / "full" / "ckpt" / f"epoch=0-step={every}.ckpt"
    resumed_model, resumed = run_ema(tmp_path / "resumed", str(ckpt))
    assert same(resumed.events, full.events)
    assert all(map(torch.equal, resumed_model.state_dict().values(), full_model.state_dict().values()))
    assert resumed_model.ema.updates == full_model.ema.updates
    assert all(map(torch.equal, resumed_model.ema.shadow, full_model.ema.shadow))


def test_without_snapshots_damaged_weights_get_an_lr_cut_and_no_rollback(tmp_path):
    faults = Faults(lr_times={k: 30.0 for k in range(30, 33)})
    watchdog = small(snapshot="off", update_every=None)
    fit(tmp_path, DigitsModel(faults=faults), [watchdog], 40)
    assert watchdog.snapshot_mode == "off" and not any(e.action == "rollback" for e in watchdog.events)
    assert any(e.signal == "damaged_weights" and e.action == "lower_lr" for e in watchdog.events)


def test_without_snapshots_training_goes_on_from_damaged_weights_at_a_lower_lr(tmp_path):
    """With nothing to go back to, the damaged weights are the run's state: judged against their own level, the
    steps on them train (before, each was an outlier, skipped and cut again at once: one damaged update spent
    every cut in four steps and halted the run, saving the damaged weights as its "last good state")."""
    model = DigitsModel(faults=Faults(lr_times={28: 100.0}))
    watchdog = small(snapshot="off", update_every=None)
    fit(tmp_path, model, [watchdog], 80)
    cuts = [e for e in watchdog.events if e.action == "lower_lr"]
    assert len(cuts) == 1 and cuts[0].signal == "damaged_weights", watchdog.events
    assert watchdog.halt_reason is None and len(model.seen_lrs) == 80
    damaged = model.losses[cuts[0].step]
    assert math.isfinite(model.losses[-1]) and model.losses[-1] < damaged / 10  # it trained on from there


def test_auto_keeps_a_small_models_snapshots_in_host_memory_and_says_so(tmp_path, caplog):
    watchdog = small()
    with caplog.at_level(logging.INFO, logger="lr_callbacks"):
        fit(tmp_path, DigitsModel(), [watchdog], 12)
    assert watchdog.snapshot_mode == "host"
    assert any("snapshot='auto' keeps its snapshots in host memory" in r.getMessage() for r in caplog.records)


def test_the_update_ratio_is_logged_per_group_every_update_every_steps(tmp_path):
    watchdog = small(update_every=4, log_every_n_steps=1)
    fit(tmp_path, DigitsModel(), [watchdog], 30)
    ratios = read_scalars(tmp_path, "watchdog/update_ratio/group0")
    assert [step for step, _ in ratios] == list(range(0, 30, 4))  # step 28 is read at step 29
    assert all(0.0 < value < 1.0 for _, value in ratios)


def test_groups_that_share_a_name_get_an_update_ratio_each_under_their_lr_tags(tmp_path):
    """Two groups named ``w`` (0.1 and 0.01): ``lr/w`` and ``lr/w-1``, and an update ratio for each under the same
    names. Before, both ratios went to one key, ``w``: only the second group's was logged and judged (the first
    group, at ten times the LR, was never watched)."""

    def same_names(module: TinyModel) -> torch.optim.Optimizer:
        groups = [{"params": module.body.parameters(), "name": "w"}, {"params": module.head.parameters(), "name": "w"}]
        groups[1]["lr"] = 0.01
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)

    watchdog = small(update_every=2, log_every_n_steps=1)
    trainer = make_trainer(tmp_path, max_steps=12, callbacks=[LRSchedule("constant"), watchdog])
    trainer.fit(TinyModel(optimizer=same_names), loader(regression_data()))
    tags = set(read_events(tmp_path).Tags()["scalars"])
    assert {t for t in tags if t.startswith("lr/")} == {"lr/w", "lr/w-1"}
    assert {t for t in tags if t.startswith("watchdog/update_ratio/")} == {
        "watchdog/update_ratio/w",
        "watchdog/update_ratio/w-1",
    }
    body, head = (read_scalars(tmp_path, f"watchdog/update_ratio/{name}") for name in ("w", "w-1"))
    assert [step for step, _ in body] == [step for step, _ in head] == list(range(0, 12, 2))
    assert [value for _, value in body] != [value for _, value in head]  # two groups, not one logged twice
    assert set(watchdog.state_dict()["policy"]["updates"]) == {"w", "w-1"}  # both judged


def test_a_checkpoint_written_before_the_group_names_were_saved_names_the_groups_as_then(tmp_path):
    """A checkpoint whose state has no ``group_names`` (written before they were saved) still loads, and the
    resumed fit names its groups at fit start, as the watchdog then did: groups ``w``, ``w``, ``h`` are ``w``,
    ``w-1``, ``h`` in the update ratios' tags and the policy's baselines, as in ``lr/<group>``."""

    def optimizer(module: TinyModel) -> torch.optim.Optimizer:
        params = [[module.body.weight], [module.body.bias], list(module.head.parameters())]
        return torch.optim.SGD([{"params": p, "name": n} for p, n in zip(params, "wwh")], lr=0.1, momentum=0.9)

    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, filename="{step}")
    callbacks = [small(update_every=1, log_every_n_steps=1), checkpoints]
    trainer = make_trainer(tmp_path / "then", max_steps=3, enable_checkpointing=True, callbacks=callbacks)
    trainer.fit(TinyModel(optimizer=optimizer), loader(regression_data()))
    path = tmp_path / "ckpt" / "step=3.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["callbacks"]["DivergenceWatchdog"].pop("group_names") == ["w", "w-1", "h"]
    torch.save(checkpoint, path)
    watchdog = small(update_every=1, log_every_n_steps=1)
    trainer = make_trainer(tmp_path / "now", max_steps=6, callbacks=[watchdog])
    trainer.fit(TinyModel(optimizer=optimizer), loader(regression_data()), ckpt_path=str(path))
    names = ["w", "w-1", "h"]
    assert watchdog.state_dict()["group_names"] == names
    tags = {t for t in read_events(tmp_path / "now").Tags()["scalars"] if t.startswith("watchdog/update_ratio/")}
    assert tags == {f"watchdog/update_ratio/{name}" for name in names}
    assert set(watchdog.state_dict()["policy"]["updates"]) == set(names)


class NormedDigits(DigitsModel):
    """The digits MLP with BatchNorm, one of whose input samples turns NaN at step ``nan_at``; it records the
    running statistics after every step."""

    def __init__(self, nan_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
            )
        self.nan_at = nan_at
        self.means: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        if torch.is_grad_enabled() and self.global_step == self.nan_at:
            x = x.clone()
            x[0, 0] = math.nan
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.means.append(self.net[1].running_mean.clone())


@pytest.mark.parametrize("sync_every", [1, 4])
def test_a_skipped_batch_leaves_no_trace_in_batchnorm_s_running_statistics(tmp_path, sync_every):
    """A skip drops the update, but the batch's forward pass had already moved the buffers: a NaN input made
    BatchNorm's running statistics NaN for good, and every evaluation after it. The buffers go back to the newest
    snapshot's (at the next host read: step 27 when it reads every 4 steps)."""
    model = NormedDigits(nan_at=25)
    watchdog = small(sync_every_n_steps=sync_every, update_every=None)
    fit(tmp_path, model, [watchdog], 40)
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(25, "non_finite", "skip")]
    read = 25 if sync_every == 1 else 27
    poisoned = [not bool(torch.isfinite(mean).all()) for mean in model.means]
    assert poisoned[25 : read + 1] == [True] * (read - 25) + [False]  # read every 4 steps: NaN until the read
    assert not any(poisoned[:25]) and not any(poisoned[read:])
    assert bool(torch.isfinite(model.net[1].running_var).all())
    unguarded = NormedDigits(nan_at=25)
    fit(tmp_path / "unguarded", unguarded, [], 40)  # without the watchdog: NaN to the end
    assert not bool(torch.isfinite(unguarded.net[1].running_mean).all())


class EmaDigits(NormedDigits):
    """NormedDigits with an EMA of its first layer's weight in a buffer, updated after each step (as Mean Teacher or
    a model EMA is); it records the EMA and the running mean before each step."""

    def __init__(self, nan_at: int, **kwargs: Any) -> None:
        super().__init__(nan_at, **kwargs)
        self.register_buffer("ema", self.net[0].weight.detach().clone())
        self.before: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, batch, batch_idx) -> None:
        state = (self.ema.clone(), self.net[1].running_mean.clone(), self.net[0].weight.detach().clone())
        self.before.append(state)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        with torch.no_grad():
            self.ema.mul_(0.9).add_(self.net[0].weight, alpha=0.1)


class NormedNanFrom(NormedDigits):
    """NormedDigits whose loss (not its input) is NaN from step ``nan_from`` on: the forward pass stays finite and
    moves BatchNorm's running statistics as usual."""

    def __init__(self, nan_from: int) -> None:
        super().__init__(nan_at=-1)
        self.nan_from = nan_from

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * math.nan if torch.is_grad_enabled() and self.global_step >= self.nan_from else loss


def test_after_a_halt_the_steps_lightning_runs_on_leave_batchnorm_s_statistics_alone(tmp_path):
    """After a halt Lightning trains on until ``min_steps``; those steps' updates were dropped, but their forward
    passes moved BatchNorm's running statistics (max 0.13 on a small MLP over 66 steps): the model left in memory
    was not the last good state the halt saved. They go back as at any skipped step."""
    watchdog = small(patience=3, max_rollbacks=0)
    model = NormedNanFrom(nan_from=30)
    trainer = fit(tmp_path, model, [watchdog], 45, min_steps=45)  # min_steps: should_stop is not honoured yet
    assert watchdog.halt_reason is not None and trainer.global_step == 45
    saved = torch.load(watchdog.halt_checkpoint_path, weights_only=False)["state_dict"]
    assert saved.keys() == model.state_dict().keys()
    assert all(map(torch.equal, saved.values(), model.state_dict().values()))


class NanInputFrom(NormedDigits):
    """NormedDigits one of whose input samples is NaN at every step from ``nan_from`` on (a corrupted shard)."""

    def __init__(self, nan_from: int) -> None:
        super().__init__(nan_at=-1)
        self.nan_from = nan_from

    def training_step(self, batch, batch_idx):
        x, y = batch
        if torch.is_grad_enabled() and self.global_step >= self.nan_from:
            x = x.clone()
            x[0, 0] = math.nan
        return torch.nn.functional.cross_entropy(self.net(x), y)


def test_a_halt_for_bad_data_saves_batchnorm_s_statistics_as_they_were_before_the_halting_batch(tmp_path):
    """NaN inputs from step 30: each skipped batch's statistics are put back, until the run halts for data that stayed
    bad (the live weights kept). The halting batch's were not: the halt checkpoint, "the last good state", held NaN
    running statistics (every evaluation from it NaN), and so did the model in memory."""
    watchdog = small(patience=3)
    model = NanInputFrom(nan_from=30)
    fit(tmp_path, model, [watchdog], 60)
    assert [(e.signal, e.action) for e in watchdog.events][-1] == ("bad_data", "halt")
    saved = torch.load(watchdog.halt_checkpoint_path, weights_only=False)["state_dict"]
    assert all(bool(torch.isfinite(v.float()).all()) for v in saved.values())
    assert torch.equal(saved["net.1.running_mean"], model.means[29])  # as the last step trained on left them
    assert all(map(torch.equal, saved.values(), model.state_dict().values()))


def test_a_skipped_batch_puts_back_only_what_its_forward_pass_moved(tmp_path):
    """BatchNorm's statistics go back to their values before the skipped step, not to the newest snapshot's (up to
    ``snapshot_every`` steps old); an EMA held in a buffer, updated outside the forward pass, keeps its updates.
    Before, a skip rewound every buffer to the snapshot: the EMA lost the steps since."""
    model = EmaDigits(nan_at=25)
    watchdog = small(update_every=None)
    fit(tmp_path, model, [watchdog], 27)
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(25, "non_finite", "skip")]
    assert watchdog._policy.state.snapshot_step == 20  # the snapshot is older than the skipped step
    assert torch.equal(model.means[25], model.before[25][1])  # the statistics as the skipped step found them
    # the EMA's own hook ran after the skipped step too, from the weights that the skip kept as they were
    ema, _, weight = model.before[25]
    assert torch.equal(model.before[26][2], weight)
    assert torch.allclose(model.before[26][0], 0.9 * ema + 0.1 * weight, rtol=0, atol=1e-7)


class EmptyGroupDigits(DigitsModel):
    """The digits MLP with a second, empty parameter group (e.g. one kept for parameters added later)."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([{"params": self.parameters()}, {"params": [], "weight_decay": 0.0}], lr=3e-3)


def test_a_watchdog_passed_to_a_second_fit_starts_it_afresh(tmp_path):
    """A loop over seeds or folds may reuse one watchdog: the second fit must not inherit the first's incidents,
    LR scale, budgets or snapshot step."""
    watchdog = small(update_every=None)
    fit(tmp_path / "first", DigitsModel(faults=Faults(lr_times={k: 30.0 for k in range(30, 33)})), [watchdog], 40)
    assert any(e.action == "rollback" for e in watchdog.events) and watchdog.scale < 1.0
    fresh = small(update_every=None)
    again, alone = DigitsModel(seed=1), DigitsModel(seed=1)
    fit(tmp_path / "second", again, [watchdog], 40)
    fit(tmp_path / "alone", alone, [fresh], 40)
    assert watchdog.events == fresh.events == [] and watchdog.scale == fresh.scale == 1.0
    assert again.seen_lrs == alone.seen_lrs and again.losses == alone.losses


def test_an_empty_parameter_group_is_measured_as_nothing_moved(tmp_path):
    """Before, the update probe's copy of an empty group raised ``Tensor list must have at least one tensor``."""
    watchdog = small(update_every=4, log_every_n_steps=1)
    fit(tmp_path, EmptyGroupDigits(), [watchdog], 20)
    assert [step for step, _ in read_scalars(tmp_path, "watchdog/update_ratio/group0")] == [0, 4, 8, 12, 16]
    assert watchdog.events == []


class StopAt(pl.Callback):
    """Ends the fit after the step ``step`` (as EarlyStopping or ``max_time`` would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self.step:
            trainer.should_stop = True


def test_read_back_every_n_steps_the_last_steps_of_a_fit_are_read_too(tmp_path):
    """Steps judged on the device since the last read: at the planned last step the host reads, whatever the
    cadence; a fit that ends earlier (an early stop) records them at its end. Before, their incidents and
    scalars never reached ``events`` or TensorBoard."""
    planned = small(sync_every_n_steps=8, log_every_n_steps=1)
    fit(tmp_path / "planned", DigitsModel(faults=Faults(nan_loss=[58])), [planned], 60)
    assert (58, "non_finite", "skip") in [(e.step, e.signal, e.action) for e in planned.events]
    assert [step for step, _ in read_scalars(tmp_path / "planned", "watchdog/loss")][-3:] == [57, 58, 59]

    stopped = small(sync_every_n_steps=8, log_every_n_steps=1)
    fit(tmp_path / "stopped", DigitsModel(faults=Faults(nan_loss=[50])), [stopped, StopAt(52)], 60)
    assert [(e.step, e.signal, e.action) for e in stopped.events] == [(50, "non_finite", "skip")]
    assert [step for step, _ in read_scalars(tmp_path / "stopped", "watchdog/loss")][-3:] == [50, 51, 52]


class SaveAt(pl.Callback):
    """Writes a checkpoint after the step ``step`` (as ModelCheckpoint(every_n_train_steps=...) would)."""

    def __init__(self, step: int, path: Any) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step + 1:
            trainer.save_checkpoint(self.path)


def test_read_back_every_n_steps_a_fit_that_ends_early_records_the_steps_a_checkpoint_read(tmp_path):
    """As above, with a checkpoint written after step 51, between reads: it reads the steps judged on the device
    since the last one (48-51) to hold them for the next read, and the fit ends after step 52, before it. Before,
    the fit's end recorded only the steps not read yet (52): the NaN step 50's skip never reached ``events`` or
    TensorBoard, nor did steps 48-51's scalars."""
    watchdog = small(sync_every_n_steps=8, log_every_n_steps=1)
    callbacks = [watchdog, SaveAt(51, tmp_path / "mid.ckpt"), StopAt(52)]
    fit(tmp_path, DigitsModel(faults=Faults(nan_loss=[50])), callbacks, 60)
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(50, "non_finite", "skip")]
    assert [step for step, _ in read_scalars(tmp_path, "watchdog/loss")][-6:] == [47, 48, 49, 50, 51, 52]
    assert "| 50 | non_finite |" in read_text(tmp_path, "watchdog/events")[-1]


@pytest.mark.parametrize(("sync_every", "longest_gap"), [(4, 4), (8, 8)])
def test_read_back_every_n_steps_the_update_ratio_is_still_measured_every_update_every_steps(
    tmp_path, sync_every, longest_gap
):
    """Judged on the device between reads (the GPU default), the update is measured there too, one measurement
    at a time, its gradient norm carried on the device with it (before, only steps that were both host reads and
    multiples of update_every were measured: every 40 steps at the GPU's default of 8, never at 10)."""
    watchdog = small(update_every=4, sync_every_n_steps=sync_every, log_every_n_steps=1)
    fit(tmp_path, DigitsModel(), [watchdog], 60)
    steps = [step for step, _ in read_scalars(tmp_path, "watchdog/update_ratio/group0")]
    assert steps[0] == 0 and all(step % 4 == 0 for step in steps)
    assert max(b - a for a, b in itertools.pairwise(steps)) <= longest_gap and steps[-1] >= 60 - 2 * longest_gap


def test_a_large_group_s_update_ratio_is_read_on_a_sample_that_agrees_with_the_whole():
    """Above UPDATE_SAMPLE elements the probe copies every k-th element of each tensor (k prime, the same for all),
    not the whole weights: a copy of at most UPDATE_SAMPLE elements, and ‖Δθ‖/‖θ‖ to well under 1%."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(768, 384), (384,), (1000, 384)]  # 679,296 elements: a stride of 3
    params = [torch.nn.Parameter(torch.randn(*shape, generator=generator)) for shape in shapes]
    optimizer = torch.optim.SGD(params, lr=0.1)
    before = torch.cat([p.detach().reshape(-1) for p in params])
    probe = UpdateProbe()
    probe.arm(optimizer, step=7)
    assert sample_stride(before.numel()) == 3 and probe._before[0][0].numel() <= UPDATE_SAMPLE
    with torch.no_grad():
        for p, scale in zip(params, (1e-3, 1e-2, 3e-3)):  # each tensor moved by a different relative amount
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    probe.measure(optimizer)
    ratios, lrs, step = probe.take()
    after = torch.cat([p.detach().reshape(-1) for p in params])
    exact = float(torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(after))
    assert step == 7 and lrs == [0.1] and float(ratios[0]) == pytest.approx(exact, rel=0.01)


@pytest.mark.parametrize("with_schedule", [True, False])
def test_the_warmup_is_read_from_the_plan_lrschedule_or_a_torch_scheduler(tmp_path, with_schedule):
    """The watchdog notes each warmup step's LR as a share of the planned peak: ``LRSchedule``'s peak, or a torch
    scheduler's base LR; it stops once the plan has reached its peak."""

    def warmup(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / 10))

    if with_schedule:
        model, callbacks = TinyModel(), [LRSchedule("constant", warmup="10 steps", warmup_start=0.0)]
    else:
        model, callbacks = TinyModel(scheduler=warmup), []
    watchdog = DivergenceWatchdog()
    trainer = make_trainer(tmp_path, max_steps=30, callbacks=[*callbacks, watchdog])
    trainer.fit(model, loader(regression_data()))
    policy = watchdog._policy
    # step k's LR is (k + 1) / 10 of the peak in both plans; at step 9 it reaches the peak and the noting stops
    assert [step for step, _ in policy.state.shares] == list(range(9))
    assert [share for _, share in policy.state.shares] == pytest.approx([(k + 1) / 10 for k in range(9)])
    assert policy.state.warmed_up and policy.state.warmup_end == 9


@pytest.mark.parametrize("with_schedule", [True, False])
@pytest.mark.parametrize("factor", [1 / 1.5, 1.5])
def test_the_warmup_is_read_against_the_peak_in_force_when_the_finder_sets_one_mid_fit(tmp_path, factor, with_schedule):
    """``LRFinder(epochs=[k])`` sets a new peak inside the warmup: the shares go on against it. Read once against
    the old peak, a lower answer looked like the plan falling past its peak (the warmup taken as over at the
    finder's step, and later trouble in it cut as a passing fault), a higher one reached "the peak" early."""
    from lr_callbacks.core.lr_model import set_peak_lr

    class NewPeak(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == 8:  # as the finder's answer at an epoch's start
                set_peak_lr(trainer, 0.1 * factor)

    def warmup(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / 20))

    watchdog = DivergenceWatchdog()
    if with_schedule:
        model, callbacks = TinyModel(), [LRSchedule("constant", warmup="20 steps", warmup_start=0.0)]
    else:  # set_peak_lr rescales the torch scheduler, whose peak then carries the watchdog's scale too
        model, callbacks = TinyModel(scheduler=warmup), []
    trainer = make_trainer(tmp_path, max_steps=40, callbacks=[NewPeak(), *callbacks, watchdog])
    trainer.fit(model, loader(regression_data()))  # the reference group's peak: 0.1
    policy = watchdog._policy
    assert [step for step, _ in policy.state.shares] == list(range(19))
    assert [share for _, share in policy.state.shares] == pytest.approx([(k + 1) / 20 for k in range(19)])
    assert policy.state.warmup_end == 19


def test_the_warmup_of_a_one_cycle_scheduler_is_read_against_its_peak(tmp_path):
    """OneCycleLR starts at max_lr / 25 (its base LR) and climbs to max_lr: the shares rise from 1/25 to the peak,
    where the noting stops (read against the base LR, every share would be at least 1 and no warmup seen)."""

    def one_cycle(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.OneCycleLR:
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=40, pct_start=0.25)

    model = TinyModel(optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1), scheduler=one_cycle)
    watchdog = DivergenceWatchdog()
    make_trainer(tmp_path, max_steps=40, callbacks=[watchdog]).fit(model, loader(regression_data()))
    state = watchdog._policy.state
    shares = [share for _, share in state.shares]
    assert shares[0] == pytest.approx(1 / 25) and shares == sorted(shares) and shares[-1] < 1.0
    assert [step for step, _ in state.shares] == list(range(9)) and state.warmup_end == 9  # the peak: step 9


class SkipsBatch(DigitsModel):
    """A module whose ``training_step`` returns ``None`` (Lightning's way to skip a batch) at the given steps."""

    def __init__(self, skip_at: set[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skip_at = skip_at

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        loss = super().training_step(batch, batch_idx)
        return None if torch.is_grad_enabled() and self.global_step in self.skip_at else loss


@pytest.mark.parametrize("sync_every", [1, 8])
def test_a_training_step_that_returns_none_on_a_read_step_is_passed_over(tmp_path, sync_every):
    """A step without a loss has nothing to judge, and on a read step its read is done at the next step with one
    (before, at 8 the device's rows ran past their 8 places: ``IndexError`` at the step after)."""
    watchdog = small(sync_every_n_steps=sync_every)
    model = SkipsBatch({15, 23, 24}, faults=Faults(nan_loss=[20]))
    fit(tmp_path, model, [watchdog], 60)
    assert model.global_step == 60
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(20, "non_finite", "skip")]


@pytest.mark.parametrize("fault", [Faults(nan_loss=[20]), Faults(lr_times={20: 300.0})])
def test_a_dropped_update_under_clipping_by_value_trains_on(tmp_path, fault):
    """Lightning clips after the watchdog's hook, and torch's ``clip_grad_value_`` fails on a step without any
    gradient: before, the first skip (or rollback) under ``gradient_clip_algorithm="value"`` ended the fit with
    ``RuntimeError: Expected !nested_tensorlist[0].empty()``. Clipping by value applies again from the next step."""
    watchdog = small()
    trainer = fit(
        tmp_path, DigitsModel(faults=fault), [watchdog], 60, gradient_clip_val=0.5, gradient_clip_algorithm="value"
    )
    assert trainer.global_step == 60 and watchdog.events and not watchdog.halt_reason
    assert trainer.gradient_clip_val == 0.5


class ClipsByValueItself(DigitsModel):
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=0.5, gradient_clip_algorithm="value")
        self.clipped = getattr(self, "clipped", 0) + 1


def test_a_module_that_clips_by_value_itself_trains_on_after_a_dropped_update(tmp_path):
    """A module's own ``configure_gradient_clipping`` clipping by value: before, the first skip ended the fit with
    torch's ``RuntimeError: Expected !nested_tensorlist[0].empty()`` (no gradient left to clip). It is not called for
    a dropped step, and is again from the next."""
    watchdog, model = small(), ClipsByValueItself(faults=Faults(nan_loss=[20]))
    trainer = fit(tmp_path, model, [watchdog], 60)
    assert trainer.global_step == 60 and [(e.step, e.action) for e in watchdog.events] == [(20, "skip")]
    assert model.clipped == 59 and "configure_gradient_clipping" not in vars(model)


class Raises(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 45:
            raise RuntimeError("the user's code failed")


def test_disk_snapshots_are_removed_when_the_fit_ends_by_an_exception(tmp_path):
    """Lightning calls no ``teardown`` when a fit ends by an exception (or Ctrl-C): before, the disk snapshots
    (each the size of the model and its optimizer state) stayed under ``default_root_dir``."""
    watchdog = small(snapshot="disk", snapshot_every=10)
    with pytest.raises(RuntimeError, match="the user's code failed"):
        fit(tmp_path, DigitsModel(), [watchdog, Raises()], 60)
    assert not (tmp_path / "watchdog-snapshots").exists()


Pair = collections.namedtuple("Pair", "x y")


class PairModel(TinyModel):
    """Reads its batch by name, as a module fed a ``BatchEncoding`` or a named tuple does."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self(batch.x), batch.y)


def test_a_checkpoint_with_a_batch_that_weights_only_cannot_load_still_loads_and_resumes(tmp_path):
    """The watchdog keeps its reference batch in the checkpoint; a batch that is not tensors in plain containers
    (a named tuple here; a ``BatchEncoding`` or a NumPy array alike) made the whole checkpoint fail to load under
    ``weights_only=True``, torch's default for ``fit(ckpt_path=...)`` and ``load_from_checkpoint``. It is left
    out, and the resumed run takes a new reference."""
    data = DataLoader(regression_data(), batch_size=8, collate_fn=lambda items: Pair(*map(torch.stack, zip(*items))))
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=15, save_top_k=-1)
    make_trainer(tmp_path, max_steps=30, callbacks=[small(), saver], enable_checkpointing=True).fit(PairModel(), data)
    path = tmp_path / "ckpt" / "epoch=1-step=15.ckpt"
    assert torch.load(path, weights_only=True)["callbacks"]
    PairModel.load_from_checkpoint(path)
    watchdog = small()
    trainer = make_trainer(tmp_path / "resumed", max_steps=40, callbacks=[watchdog])
    trainer.fit(PairModel(), data, ckpt_path=str(path))
    assert trainer.global_step == 40 and not watchdog.events


def test_a_checkpoint_before_the_second_snapshot_keeps_the_first_steps_reference_batch(tmp_path):
    """The newest snapshot is the run's first step's (step 0) until the next one: a checkpoint written then left its
    batch out (``0 or -1`` picked no step), and the resumed run had no reference to tell damaged weights from bad
    data until its next snapshot."""
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    watchdog = small(snapshot_every=50)
    make_trainer(tmp_path, max_steps=3, callbacks=[watchdog, saver], enable_checkpointing=True).fit(
        TinyModel(), loader(regression_data())
    )
    [path] = (tmp_path / "ckpt").glob("*.ckpt")
    state = torch.load(path, weights_only=True)["callbacks"]["DivergenceWatchdog"]
    assert state["policy"]["state"]["snapshot_step"] == 0 and len(state["reference"]) == 1
    assert [set(rng) for rng in state["reference_rngs"]] == [{"cpu"}]  # its random draws, replayed after a resume


class Dropped(pl.LightningModule):
    """A digits MLP with dropout (p = 0.5): each forward pass draws its own masks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(64, 10)
        )
        self.losses: dict[int, float] = {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])
        if torch.is_grad_enabled():
            self.losses[self.global_step] = float(loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_reference_batch_is_evaluated_with_its_steps_own_random_draws(tmp_path):
    """At the snapshot's own weights (before its update) the reference evaluation gives the step's own loss
    exactly: the dropout masks are the step's. Before, every evaluation drew new masks, and at a low loss dropout
    alone read as damaged weights (a fine-tuned MiniLM's batch of 8: 0.0055 to 0.147 at the same weights)."""
    watchdog = small()
    seen: dict[int, tuple[float, float]] = {}

    class Probe(Callback):
        def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
            ring, step = watchdog._ring, trainer.global_step
            if step in ring.batches:  # the watchdog (listed first) took its snapshot before this step's update
                args = (pl_module, ring.reference_batches(), 1, trainer.strategy)
                seen[step] = (reference_loss(*args, ring.reference_rngs()), reference_loss(*args))

    model = Dropped()
    make_trainer(tmp_path, max_steps=25, callbacks=[watchdog, Probe()]).fit(model, digits_loader(0))
    assert sorted(seen) == [0, 10, 20]
    for step, (replayed, fresh) in seen.items():
        assert replayed == model.losses[step] and fresh != model.losses[step]


@pytest.mark.parametrize("snapshot", ["host", "disk"])
def test_the_snapshots_are_given_up_when_the_fit_ends(tmp_path, snapshot):
    """A host ring stayed allocated for as long as the user kept the watchdog to read its events: three copies of the
    model and its optimizer state (507 MiB for MiniLM), whose freeing then landed in the next fit's steps."""
    watchdog = DivergenceWatchdog(snapshot=snapshot)
    fit(tmp_path, DigitsModel(), [watchdog], 40)
    assert watchdog.snapshot_mode == snapshot and not watchdog.events
    assert not watchdog._ring.snapshots and watchdog._ring._spare is None
    assert not (tmp_path / "watchdog-snapshots").exists()
    fit(tmp_path / "again", DigitsModel(), [watchdog], 40)  # the same watchdog takes a new ring for the next fit
    assert not watchdog.events and not watchdog._ring.snapshots


class HostBytes(Callback):
    """Records, after every step, the bytes of the host copies the watchdog's ring holds (its spare buffers too), and
    what ``snapshot="auto"`` counts for the ring (``snapshots`` × :func:`state_bytes`, on the optimizer's state)."""

    def __init__(self, watchdog: DivergenceWatchdog) -> None:
        self.watchdog = watchdog
        self.held: list[int] = []
        self.counted: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        ring = self.watchdog._ring
        storages: dict[int, int] = {}
        for snapshot in [*ring.snapshots.values(), *([ring._spare] if ring._spare is not None else [])]:
            tensors = [*snapshot.model.values()]
            tensors += [v for state in snapshot.optimizer.state.values() for v in state.values()]
            storages.update((t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for t in tensors)
        self.held.append(sum(storages.values()))
        self.counted.append(self.watchdog.config.snapshots * state_bytes(pl_module, trainer.optimizers[0]))


def test_a_full_host_ring_holds_as_many_copies_as_snapshots_and_as_many_bytes_as_auto_counts(tmp_path):
    """Before, the oldest snapshot was given up after the new one was taken, and kept as the next take's buffers: a
    ring of ``snapshots=3`` held four copies of the model and its momentum from its fourth snapshot on (here 4 ×
    38,480 bytes against the 3 × 38,480 that ``"auto"`` counts)."""
    watchdog = small(snapshot="host", snapshots=3)
    recorder = HostBytes(watchdog)
    fit(tmp_path, DigitsModel(optimizer="sgd"), [watchdog, recorder], 60)
    assert not watchdog.events and len(watchdog._policy.state.ring) == 3
    assert recorder.held[-1] == recorder.counted[-1]  # three snapshots after step 50: what "auto" counts
    assert max(recorder.held) == recorder.counted[-1]


@pytest.mark.parametrize("reference_batch", [True, False])
def test_a_checkpoint_written_after_a_fit_that_ended_mid_incident_holds_the_newest_clean_weights(
    tmp_path, reference_batch
):
    """The fit ends with an incident open (the last two losses ×1000, skipped). Without a reference batch the
    weights' state is unknown: the snapshot it would roll back to is kept after the fit, so a checkpoint the user
    writes then holds its weights, the live ones in the watchdog's state, and the reference batch, as one written
    during the fit does (the other snapshots are given up). With one, the reference batch read the live weights
    sound and the skips left them as they were: they are the newest clean weights, and the checkpoint holds them
    (before, the older snapshot's)."""
    model = DigitsModel(faults=Faults(loss_times={58: 1000.0, 59: 1000.0}))
    watchdog = DivergenceWatchdog(warmup_steps=20, reference_batch=reference_batch)
    trainer = make_trainer(tmp_path, max_steps=60, callbacks=[watchdog])
    trainer.fit(model, digits_loader(0))
    assert [(e.step, e.action) for e in watchdog.events] == [(58, "skip"), (59, "skip")]
    assert watchdog._policy.incident_open is not reference_batch
    assert list(watchdog._ring.snapshots) == ([] if reference_batch else [50])
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    checkpoint = torch.load(tmp_path / "after.ckpt", weights_only=False)
    own = checkpoint["callbacks"]["DivergenceWatchdog"]
    live = model.state_dict()
    kept = all(torch.equal(checkpoint["state_dict"][name], live[name]) for name in live)
    assert kept is reference_batch and ("live" in own) is not reference_batch
    assert len(own["reference"]) == 1


def test_with_disk_snapshots_a_checkpoint_written_after_a_fit_that_ended_mid_incident_holds_the_clean_weights(
    tmp_path,
):
    """As in host memory (above, without a reference batch): the snapshot the open incident would roll back to
    holds the checkpoint's weights. On disk the fit's end removed every file, and a checkpoint written then held
    the live weights of the two ×1000 steps' run of outliers, not known clean, with no live copy beside them
    and no reference batch. The snapshot is read back into host memory at the fit's end; its file goes."""
    model = DigitsModel(faults=Faults(loss_times={58: 1000.0, 59: 1000.0}))
    watchdog = DivergenceWatchdog(warmup_steps=20, reference_batch=False, snapshot="disk")
    weights = Weights()
    trainer = make_trainer(tmp_path, max_steps=60, callbacks=[watchdog, weights])
    trainer.fit(model, digits_loader(0))
    assert [(e.step, e.action) for e in watchdog.events] == [(58, "skip"), (59, "skip")]
    assert watchdog._policy.incident_open and watchdog._policy.state.snapshot_step == 50
    assert not (tmp_path / "watchdog-snapshots").exists()
    _assert_checkpoint_holds_the_snapshot_of_step_50(trainer, tmp_path, weights, model)


def _assert_checkpoint_holds_the_snapshot_of_step_50(trainer: Any, tmp_path: Any, weights: Any, model: Any) -> None:
    """A checkpoint written now holds step 50's snapshot, the live weights beside it, and one reference batch."""
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    checkpoint = torch.load(tmp_path / "after.ckpt", weights_only=False)
    own = checkpoint["callbacks"]["DivergenceWatchdog"]
    assert all(map(torch.equal, checkpoint["state_dict"].values(), weights.before[50]))
    assert all(map(torch.equal, own["live"]["model"].values(), model.state_dict().values()))
    assert len(own["reference"]) == 1


class Validated(DigitsModel):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1]))


@pytest.mark.parametrize("snapshot", ["host", "disk"])
def test_a_checkpoint_written_after_a_validate_that_followed_a_fit_ended_mid_incident_holds_the_clean_weights(
    tmp_path, snapshot
):
    """As above, with ``trainer.validate`` between the fit and the checkpoint. The validation's teardown gave up
    the disk ring's snapshot, read back into host memory at the fit's end, and its reference batch: the checkpoint
    held the live weights of the two ×1000 steps, with no live copy beside them and no reference batch (in host
    memory it held the snapshot's)."""
    model = Validated(faults=Faults(loss_times={58: 1000.0, 59: 1000.0}))
    watchdog = DivergenceWatchdog(warmup_steps=20, reference_batch=False, snapshot=snapshot)
    weights = Weights()
    trainer = make_trainer(tmp_path, max_steps=60, callbacks=[watchdog, weights], logger=False)
    trainer.fit(model, digits_loader(0))
    assert watchdog._policy.incident_open and watchdog._policy.state.snapshot_step == 50
    trainer.validate(model, digits_loader(1), verbose=False)
    _assert_checkpoint_holds_the_snapshot_of_step_50(trainer, tmp_path, weights, model)


def test_a_checkpoint_after_a_skipped_bad_batch_holds_the_live_weights_it_was_scored_on(tmp_path):
    """A NaN batch at an epoch's last step is skipped exactly, the reference batch reads the weights sound; the
    ``ModelCheckpoint`` that saves at that epoch's end holds the weights it scored. Before, the open incident put
    the newest snapshot's (up to ``snapshot_every`` steps older) in the file, under the live weights' val_loss."""
    model = Validated(faults=Faults(nan_loss=[113]))  # digits: 57 batches an epoch, step 113 the last of the 2nd
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss", save_top_k=1, filename="best")
    watchdog = DivergenceWatchdog(warmup_steps=20)
    trainer = make_trainer(tmp_path, max_steps=114, callbacks=[watchdog, checkpoints], enable_checkpointing=True)
    trainer.fit(model, digits_loader(0), val_dataloaders=DataLoader(digits_data(1), batch_size=256))
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(113, "non_finite", "skip")]
    saved = torch.load(checkpoints.best_model_path, weights_only=False)
    assert saved["global_step"] == 114 and "live" not in saved["callbacks"]["DivergenceWatchdog"]
    live = model.state_dict()
    assert all(torch.equal(saved["state_dict"][name], live[name]) for name in live)


class Lazy(TinyModel):
    """TinyModel whose body is a ``LazyLinear``: its weights get their shape at the first forward pass, or at the
    dry run in ``setup`` (``dry_run``), as torch recommends before an optimizer is built."""

    def __init__(self, dry_run: bool) -> None:
        super().__init__()
        self.body = torch.nn.LazyLinear(8)
        self.dry_run = dry_run

    def setup(self, stage: str) -> None:
        if self.dry_run:
            self(torch.zeros(1, 4))


@pytest.mark.parametrize("callback", [lambda: small(), lambda: LRFinder(num_steps=10)])
def test_lazy_weights_not_initialized_at_fit_start_are_refused_with_the_fix(tmp_path, callback):
    """Before: torch's "Attempted to use an uninitialized parameter" from the snapshot at fit start."""
    with pytest.raises(ValueError, match=r"2 of its tensors are lazy and not initialized yet \(body.weight, "
                       r"body.bias\): run the model once on a batch before fit"):  # fmt: skip
        make_trainer(tmp_path, max_steps=12, callbacks=[callback()]).fit(Lazy(dry_run=False), loader(regression_data()))
    trainer = make_trainer(tmp_path / "dry", max_steps=12, callbacks=[callback()])
    trainer.fit(Lazy(dry_run=True), loader(regression_data()))  # the fix it names
    assert trainer.global_step == 12


def test_the_watchdog_trains_in_float64(tmp_path):
    """``precision="64-true"``: the update probe's norm of float64 weights (before: ``linalg.vector_norm: the dtype
    of the input (Double) should be convertible without narrowing``, at the first measurement)."""
    watchdog = small(update_every=2, log_every_n_steps=1)
    trainer = make_trainer(tmp_path, max_steps=20, callbacks=[watchdog], precision="64-true")
    trainer.fit(TinyModel(), loader(regression_data()))
    assert trainer.global_step == 20 and not watchdog.events
    assert read_scalars(tmp_path, "watchdog/update_ratio/body")


class Unfreezes(pl.LightningModule):
    """A digits MLP whose body is frozen (in the optimizer, without gradients) until ``unfreeze_at``, as a
    backbone is under ``BackboneFinetuning``; then its loss turns NaN at ``nan_at``."""

    def __init__(self, unfreeze_at: int, nan_at: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, 10)
        self.body.requires_grad_(False)
        self.unfreeze_at, self.nan_at = unfreeze_at, nan_at

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == self.unfreeze_at:
            self.body.requires_grad_(True)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.head(self.body(x)), y)
        return loss * math.nan if torch.is_grad_enabled() and self.global_step == self.nan_at else loss

    def configure_optimizers(self) -> Any:
        groups = [{"params": self.head.parameters(), "name": "head"}, {"params": self.body.parameters(), "lr": 1e-3}]
        return torch.optim.AdamW(groups, lr=1e-2)


@pytest.mark.parametrize("seed", [0, 1])
def test_parameters_unfrozen_mid_run_start_the_gradient_baselines_again(tmp_path, seed):
    """Unfrozen parameters add their gradients to the norm, which steps up for good: before, the first 10-18 steps
    after the unfreeze were skipped as gradient-norm outliers on 7 of 8 seeds (or the new group's update ratio
    rolled the run back), on a clean run. A fault after the unfreeze is still caught."""
    watchdog = small(log_every_n_steps=1)
    model = Unfreezes(unfreeze_at=2, nan_at=200)  # 45 steps an epoch: unfrozen from step 90
    fit(tmp_path, model, [watchdog], 225, seed=seed)
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(200, "non_finite", "skip")]


class FreezeBody(pl.Callback):
    """Freezes TinyModel's body for the steps ``start`` to ``end`` (excluded), then trains it again."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        pl_module.body.requires_grad_(not self.start <= trainer.global_step < self.end)


def test_parameters_frozen_for_a_while_and_trained_again_start_the_gradient_baselines_again(tmp_path):
    """The body is frozen for steps 100-300, then trained again: the count of tensors with gradients comes back to
    its earlier most, and the baselines, all of the head's steps alone by then, were kept. Before, the update at
    step 310 (2.84× the head's alone) was taken as an LR too high: a rollback and the LR cut to 0.35."""
    torch.manual_seed(0)
    model = TinyModel(optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=1e-3))
    watchdog = DivergenceWatchdog()
    trainer = make_trainer(tmp_path, max_steps=450, logger=False, callbacks=[FreezeBody(100, 300), watchdog])
    trainer.fit(model, loader(regression_data(n=256)))
    assert [e for e in watchdog.events if e.step >= 100] == [] and watchdog.scale == 1.0


def test_a_checkpoint_written_before_the_device_judged_steps_are_read_holds_the_clean_snapshot(tmp_path):
    """Read back every 4 steps (the GPU path): a ×30 LR update at step 30, caught at the read after it (step 31) by
    the update ratio. The checkpoint written after step 30, before that read, held the damaged weights and no live
    state; a resume from it lowered the LR without a rollback, then rolled back three times to the damaged weights
    and halted at step 52. Now it holds the newest snapshot, the live weights beside it, and the resumed run rolls
    the damage back at step 30, as the uninterrupted run does (to the only snapshot it has)."""
    weights = Weights()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    model = DigitsModel(faults=Faults(lr_times={30: 30.0}), batch_by_step=True)
    watchdog = small(sync_every_n_steps=4, snapshot_every=10)
    fit(tmp_path, model, [watchdog, weights, checkpoints], 40, enable_checkpointing=True)
    assert next((e.step, e.signal, e.action) for e in watchdog.events) == (30, "update_ratio", "rollback")
    path = tmp_path / "ckpt" / "epoch=0-step=31.ckpt"
    written = torch.load(path, weights_only=True)
    own = written["callbacks"]["DivergenceWatchdog"]
    assert [row["step"] for row in own["pending"]] == [28, 29, 30] and "live" in own
    snapshot = own["policy"]["state"]["snapshot_step"]
    assert all(map(torch.equal, written["state_dict"].values(), weights.before[snapshot]))

    resumed = small(sync_every_n_steps=4, snapshot_every=10)
    pl.seed_everything(0, verbose=False)
    trainer = make_trainer(tmp_path / "resumed", max_steps=40, callbacks=[resumed])
    trainer.fit(
        DigitsModel(faults=Faults(lr_times={30: 30.0}), batch_by_step=True), digits_loader(0), ckpt_path=str(path)
    )
    assert next((e.step, e.signal, e.action) for e in resumed.events) == (30, "update_ratio", "rollback")
    assert not resumed.halt_reason and trainer.global_step == 40


def test_a_checkpoint_written_before_a_too_large_update_is_judged_holds_the_clean_snapshot(tmp_path):
    """Judged every step (the CPU path): the update ratio of a ×30 LR update at step 40 (a sampled step) is measured
    after it and judged at the next step, where it rolls the update back. The checkpoint written between the two
    held the damaged weights; a resume from it rolled back to them and ended 1.8× above the uninterrupted run, its
    LR cut for good. Now it holds the newest snapshot, the live weights beside it; a checkpoint after a sampled
    step whose update is normal keeps the live weights, as before."""
    weights = Weights()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    model = DigitsModel(faults=Faults(lr_times={40: 30.0}), batch_by_step=True)
    watchdog = small(snapshot_every=10)
    fit(tmp_path, model, [watchdog, weights, checkpoints], 60, enable_checkpointing=True)
    assert next((e.step, e.signal, e.action) for e in watchdog.events) == (40, "update_ratio", "rollback")
    written = torch.load(tmp_path / "ckpt" / "epoch=0-step=41.ckpt", weights_only=True)
    own = written["callbacks"]["DivergenceWatchdog"]
    assert own["update"] is not None and "live" in own
    snapshot = own["policy"]["state"]["snapshot_step"]
    assert all(map(torch.equal, written["state_dict"].values(), weights.before[snapshot]))
    clean = torch.load(tmp_path / "ckpt" / "epoch=0-step=36.ckpt", weights_only=True)  # after sampled step 35
    assert clean["callbacks"]["DivergenceWatchdog"]["update"] is not None
    assert "live" not in clean["callbacks"]["DivergenceWatchdog"]


def test_the_reference_batchs_evaluation_leaves_the_modules_torchmetrics_as_they_were(tmp_path):
    """A metric updated in ``training_step`` (the samples seen, an accuracy) took in the reference batch each time
    the watchdog evaluated it: the epoch's count read one batch more than the epoch had."""
    import torchmetrics

    class Counted(DigitsModel):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seen = torchmetrics.SumMetric()
            self.evaluated = 0

        def training_step(self, batch, batch_idx):
            self.seen.update(len(batch[1]))
            self.evaluated += not torch.is_grad_enabled()
            return super().training_step(batch, batch_idx)

    model = Counted(faults=Faults(reading_times={30: 1000.0}))
    watchdog = small()
    fit(tmp_path, model, [watchdog], 40)
    assert model.evaluated >= 1 and [e.step for e in watchdog.events][:1] == [30]
    assert int(model.seen.compute()) == 40 * 32


class MomentumJump(pl.Callback):
    """SGD's momentum from 0.5 to 0.95 at step 150, as a momentum schedule moves it (``one_cycle``: 0.95 → 0.85 →
    0.95): the same LR makes steady updates 10× larger."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        for group in trainer.optimizers[0].param_groups:
            group["momentum"] = 0.5 if trainer.global_step < 150 else 0.95


def test_a_momentum_that_moves_is_no_update_ratio_alarm(tmp_path):
    """The update ratio is judged for the LR as the update scales with it, ``lr / (1 − momentum)`` under SGD:
    before, the jump read as an LR fault (a rollback at step 155 and an LR cut, on a clean run)."""
    watchdog = DivergenceWatchdog()
    fit(tmp_path, DigitsModel(optimizer="sgd"), [watchdog, MomentumJump()], 300, seed=0)
    assert not watchdog.events


def test_a_schedule_added_on_resume_keeps_the_watchdogs_cut(tmp_path):
    """The checkpoint's run had no LRSchedule: the cut lived in the optimizer's LR. A schedule added on resume
    starts from configure_optimizers' LR; the resumed watchdog gives it its scale, so the run goes on at the cut."""

    def fit_from(root, callbacks, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        model = DigitsModel(faults=Faults(loss_times={60: 1000.0, 62: 1000.0}), batch_by_step=True)
        watchdog = small(lower_after=2, reference_batch=False, recover_after=None)
        saver = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=70, save_top_k=-1)
        trainer = make_trainer(root, max_steps=90, callbacks=[*callbacks, watchdog, saver], enable_checkpointing=True)
        trainer.fit(model, epochs_loader(), ckpt_path=ckpt_path)
        return model, watchdog

    full_model, full = fit_from(tmp_path / "full", [])
    assert [(e.step, e.action) for e in full.events if e.action != "skip"] == [(62, "lower_lr")]
    ckpt = str(tmp_path / "full" / "ckpt" / "epoch=1-step=70.ckpt")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="LRSchedule: resuming")  # the LR goes on: nothing to warn of
        resumed_model, resumed = fit_from(tmp_path / "resumed", [LRSchedule("constant", log_plan=False)], ckpt)
    assert resumed.scale == 0.5 and resumed_model.seen_lrs == full_model.seen_lrs[70:]


@pytest.mark.parametrize("path", ["", "folder", "folder/"])
def test_a_halt_checkpoint_that_is_no_file_path_is_refused_at_construction(tmp_path, path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=r"`halt_checkpoint` (is empty|'.*folder/?' is a folder; give a file path)"):
        DivergenceWatchdog(halt_checkpoint=str(tmp_path / path) if path else "")


@pytest.mark.parametrize("below", ["good.ckpt", "new/good.ckpt"])
def test_a_halt_checkpoint_under_a_file_is_refused_at_construction(tmp_path, below):
    """A file where the checkpoint's folder would be: the halt, the moment the last good state is to be saved,
    failed with FileExistsError and saved nothing."""
    (tmp_path / "runs").write_text("a file")
    match = (
        r"`halt_checkpoint` '.*runs/.*good.ckpt' cannot be written: '.*runs' is a file, where its folder would be; "
        r"give a path in a folder, e.g. '.*watchdog-last-good.ckpt'"
    )
    with pytest.raises(ValueError, match=match):
        DivergenceWatchdog(halt_checkpoint=tmp_path / "runs" / below)
    DivergenceWatchdog(halt_checkpoint=tmp_path / "new" / "good.ckpt")  # a folder yet to be made is fine


def test_a_halt_never_overwrites_an_earlier_halts_checkpoint(tmp_path):
    earlier = tmp_path / "watchdog-last-good.ckpt"
    earlier.write_text("an earlier run's last good state")
    watchdog = small(patience=3, max_rollbacks=0)
    fit(tmp_path, DigitsModel(faults=Faults(nan_from=30)), [watchdog], 40)
    assert watchdog.halt_reason is not None
    assert earlier.read_text() == "an earlier run's last good state"
    assert watchdog.halt_checkpoint_path == str(tmp_path / "watchdog-last-good-v1.ckpt")
    assert "state_dict" in torch.load(watchdog.halt_checkpoint_path, weights_only=True)


def test_a_loss_at_or_below_zero_is_said_once_not_to_be_judged(tmp_path):
    """The loss rules work in log space: a loss <= 0 (a Gaussian NLL, a variational bound) is not judged, and the
    user is told so once, instead of the loss going unwatched without a word."""
    model = TinyModel(loss_hook=lambda step, loss: loss - 1.0 if step >= 5 else loss)
    with pytest.warns(UserWarning, match=r"the loss is -?[0-9.e-]+ at step 5, not positive") as caught:
        make_trainer(tmp_path, max_steps=12, callbacks=[small()]).fit(model, loader())
    assert sum("not positive" in str(w.message) for w in caught) == 1


def test_a_loss_mostly_below_zero_is_not_judged_on_its_rare_positive_batches(tmp_path):
    """A stationary loss around -1 (a Gaussian NLL; batch noise 0.45): 14 of its 1,000 batches read above 0. Its
    positive values are no ratio to a level; before, they formed a baseline of their own at the floor spread, and
    were skipped as loss outliers (steps 184, 383, 614, 715 and 728) and the LR halved at step 728 for repeated
    outliers. From the first loss below 0 on, no loss is judged: no event at all."""
    rng = random.Random(3)
    offsets = [rng.gauss(-1.0, 0.45) for _ in range(1000)]
    model = TinyModel(loss_hook=lambda step, loss: 0.01 * loss + offsets[step])
    watchdog = DivergenceWatchdog()
    with pytest.warns(UserWarning, match="not positive") as caught:
        make_trainer(tmp_path, max_steps=1000, logger=False, callbacks=[watchdog]).fit(
            model, loader(regression_data(n=256))
        )
    assert watchdog.events == [] and watchdog.scale == 1.0
    assert any("From the first loss below 0 on, no loss is judged" in str(w.message) for w in caught)


class TwoTasks(pl.LightningModule):
    """A shared body with a head per task; every 8th batch is task B, a learnable regression of a higher loss
    (its targets offset by 6), the others task A: a clean mixture, not bad data."""

    def __init__(self, every: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.every = every
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh())
        self.heads = torch.nn.ModuleList([torch.nn.Linear(32, 1), torch.nn.Linear(32, 1)])
        self.weights = torch.randn(2, 8, 1, generator=torch.Generator().manual_seed(0))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (index,) = batch
        generator = torch.Generator().manual_seed(int(index))
        x = torch.randn(16, 8, generator=generator)
        task = int(index) % self.every == self.every - 1
        y = x @ self.weights[int(task)] + (6.0 if task else 0.0)
        return torch.nn.functional.mse_loss(self.heads[int(task)](self.body(x)), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_bad_data_that_keeps_coming_back_between_good_batches_is_said_once(tmp_path, recwarn):
    """A mixture of two tasks, one of a higher loss: its batches, one in eight, are outliers the reference batch
    calls bad data, and are skipped one at a time (task B ended at 2.09 against 0.47 unguarded). The watchdog cannot
    tell such a task from a recurring bad shard; it now says what it is doing and what to do, once."""
    watchdog = DivergenceWatchdog()
    batches = DataLoader(torch.utils.data.TensorDataset(torch.arange(400)), batch_size=None)
    make_trainer(tmp_path, max_steps=400, callbacks=[watchdog]).fit(TwoTasks(), batches)
    said = [str(w.message) for w in recwarn if "one at a time, between accepted steps" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("DivergenceWatchdog: 10 of the ")
    assert "put the losses on a common scale" in said[0]
    skipped = [e.step for e in watchdog.events if e.action == "skip"]
    assert len(skipped) >= 10 and all(k % 8 == 7 for k in skipped)


def test_rare_hard_batches_skipped_all_run_are_said_to_recur(tmp_path, recwarn):
    """One batch in 32 of the higher-loss task (3%): never 10 in a window of 100, so the window's rule never said
    it, while they were skipped all run (found by a review, on a long-tailed data set). 10 over the run, at one step
    in a hundred or more, are said once."""
    watchdog = DivergenceWatchdog()
    batches = DataLoader(torch.utils.data.TensorDataset(torch.arange(700)), batch_size=None)
    make_trainer(tmp_path, max_steps=700, callbacks=[watchdog]).fit(TwoTasks(every=32), batches)
    said = [str(w.message) for w in recwarn if "one at a time, between accepted steps" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("DivergenceWatchdog: 10 of the run's ")


def test_a_clean_run_and_a_burst_of_bad_data_are_not_said_to_recur(tmp_path, recwarn):
    watchdog = DivergenceWatchdog()
    faults = Faults(loss_times={k: 1000.0 for k in range(150, 170)})  # one burst, skipped in a row
    fit(tmp_path, DigitsModel(faults=faults), [watchdog], 300)
    assert sorted({e.step for e in watchdog.events if e.action == "skip"}) == list(range(150, 170))
    assert not [w for w in recwarn if "one at a time, between accepted steps" in str(w.message)]
