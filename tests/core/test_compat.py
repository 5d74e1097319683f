"""Every private third-party internal the package touches, checked against the installed versions.

Each lives in one function of :mod:`lr_callbacks.core.compat`; each test here fails when an installed version of
Lightning, torch or torchmetrics changes what that function relies on, so an upgrade breaks a named test instead
of a user's run.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from lr_callbacks.core import compat

NAMESPACES = ["pytorch_lightning", "lightning.pytorch"]


def unstarted_module(pl):
    """A module of namespace ``pl`` for a fit that a callback ends before its first step."""

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            raise AssertionError("the fit should have ended before the first step")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Module()


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_exit_fit_raises_the_tuner_exit_that_ends_a_fit_cleanly(namespace, tmp_path):
    pl = importlib.import_module(namespace)
    exceptions = importlib.import_module(f"{namespace}.utilities.exceptions")
    assert issubclass(exceptions._TunerExitException, Exception)

    class Stop(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            compat.exit_fit(trainer)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)), batch_size=2)
    trainer = pl.Trainer(
        max_epochs=1, callbacks=[Stop()], default_root_dir=tmp_path, logger=False, enable_progress_bar=False
    )
    trainer.fit(unstarted_module(pl), data)  # no exception reaches the caller
    assert trainer.global_step == 0 and trainer.state.finished


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_transfer_hook_routes_to_a_datamodule_that_overrides_it(namespace, tmp_path):
    pl = importlib.import_module(namespace)
    assert callable(getattr(pl.LightningModule, "_on_before_batch_transfer", None))
    seen = []

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)), batch_size=2)

        def on_before_batch_transfer(self, batch, dataloader_idx):
            return [x * 10 for x in batch]

    class Probe(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(compat.transfer_hook(pl_module, [torch.ones(2)])[0].tolist())
            compat.exit_fit(trainer)

    trainer = pl.Trainer(
        max_epochs=1, callbacks=[Probe()], default_root_dir=tmp_path, logger=False, enable_progress_bar=False
    )
    trainer.fit(unstarted_module(pl), datamodule=Data())
    assert seen == [[10.0, 10.0]]  # the DataModule's hook, which the module's public hook would not have run


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("given", [True, False])
def test_load_validation_data_loads_what_the_fit_loop_left_for_its_first_validating_epoch(namespace, given, tmp_path):
    pl = importlib.import_module(namespace)
    seen = []

    class Validated(type(unstarted_module(pl))):
        def validation_step(self, batch, batch_idx):
            pass

    class Probe(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(trainer.val_dataloaders is None)
            stage = trainer.state.stage
            compat.load_validation_data(trainer)
            seen.extend([trainer.val_dataloaders is not None, trainer.state.stage == stage])
            compat.exit_fit(trainer)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)), batch_size=2)
    trainer = pl.Trainer(
        max_epochs=2, check_val_every_n_epoch=2, num_sanity_val_steps=0, callbacks=[Probe()],
        default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(Validated(), data, data if given else None)
    assert seen == [True, given, True]  # not loaded yet at fit start; loaded when given; the stage kept


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_run_step_is_the_step_lightning_logs_the_runs_metrics_at(namespace, tmp_path):
    """With two optimizers stepped by hand ``global_step`` counts both (2 a training step); ``self.log`` logs at the
    training step, which ``run_step`` reads."""
    pl = importlib.import_module(namespace)
    logged, seen = [], []

    class Two(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.a, self.b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            seen.append((compat.run_step(self.trainer), self.trainer.global_step))
            loss = (self.a(batch[0]) + self.b(batch[0])).pow(2).mean()
            self.manual_backward(loss)
            for optimizer in self.optimizers():
                optimizer.step()
            self.log("loss", loss)

        def configure_optimizers(self):
            return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]

    class Steps(pl.loggers.CSVLogger):
        def log_metrics(self, metrics, step=None):
            logged.append(step)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(6, 2)), batch_size=2)
    trainer = pl.Trainer(
        max_epochs=1, logger=Steps(tmp_path), log_every_n_steps=1, default_root_dir=tmp_path,
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Two(), data)
    assert seen == [(0, 0), (1, 2), (2, 4)] and logged[:3] == [0, 1, 2]


def test_fresh_iterator_clears_the_cached_persistent_iterator():
    data = torch.utils.data.TensorDataset(torch.arange(4.0))
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=1, persistent_workers=True)
    assert loader._iterator is None
    next(iter(loader))
    assert loader._iterator is not None  # torch caches the persistent iterator here
    compat.fresh_iterator(loader)
    assert loader._iterator is None


def test_reset_scaler_step_state_clears_the_scalers_per_optimizer_bookkeeping():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scaler.scale(parameter.sum()).backward()
    scaler.unscale_(optimizer)
    assert isinstance(scaler._per_optimizer_states, dict) and scaler._per_optimizer_states
    with pytest.raises(RuntimeError, match="unscale_"):
        scaler.unscale_(optimizer)
    compat.reset_scaler_step_state(scaler)
    scaler.unscale_(optimizer)  # allowed again


def test_metric_states_sees_a_torchmetrics_metric_and_its_counters():
    torchmetrics = pytest.importorskip("torchmetrics")
    module = torch.nn.Module()
    module.metric = torchmetrics.MeanMetric()
    module.metric.update(torch.tensor([1.0, 3.0]))
    ((metric, values),) = compat.metric_states(module)
    assert metric is module.metric
    assert set(compat.METRIC_COUNTERS) <= set(values) and set(module.metric.metric_state) <= set(values)
    assert values["_update_count"] == 1


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_a_fused_optimizer_skips_its_step_on_found_inf(name):
    parameter = torch.nn.Parameter(torch.ones(3))
    kwargs = {"momentum": 0.9} if name == "SGD" else {}
    try:
        optimizer = getattr(torch.optim, name)([parameter], lr=0.1, fused=True, **kwargs)
    except RuntimeError as error:  # a torch build without fused kernels for this device
        pytest.skip(str(error))
    assert compat.supports_found_inf(optimizer)
    assert not compat.supports_found_inf(torch.optim.Adam([torch.nn.Parameter(torch.ones(1))]))
    parameter.grad = torch.ones(3)
    compat.set_found_inf(optimizer, torch.ones(()))
    optimizer.step()
    assert torch.equal(parameter.detach(), torch.ones(3)) and not optimizer.state.get(parameter, {}).get("step")
    compat.clear_found_inf(optimizer)
    assert not hasattr(optimizer, "found_inf")
    optimizer.step()
    assert not torch.equal(parameter.detach(), torch.ones(3))


def test_the_foreach_kernels_used_for_the_gradient_norm_and_clipping_keep_their_signature():
    # torch._foreach_norm / _foreach_mul_ are private by name but are what torch's own clip_grad_norm_ uses;
    # core.grads and watchdog.device call them directly (one kernel per device instead of one per tensor)
    half = [torch.full((4,), 3.0, dtype=torch.float16), torch.full((9,), 1.0, dtype=torch.float16)]
    norms = torch._foreach_norm(half, 2.0, dtype=torch.float32)
    assert [n.dtype for n in norms] == [torch.float32] * 2 and [float(n) for n in norms] == [6.0, 3.0]
    tensors = [torch.ones(2), torch.ones(3)]
    torch._foreach_mul_(tensors, torch.tensor(0.5))  # a tensor factor: no host read
    assert all(torch.equal(t, torch.full_like(t, 0.5)) for t in tensors)


def test_flatten_is_one_contiguous_copy_of_tensors_of_any_shape():
    # torch._utils._flatten_dense_tensors, private by name: the watchdog's update ratio and the CPU gradient norm
    # copy a group of tensors with it in one call
    weight = torch.arange(6.0).reshape(2, 3).t()  # not contiguous
    bias = torch.tensor([7.0, 8.0])
    flat = compat.flatten([weight, bias])
    assert flat.shape == (8,) and flat.is_contiguous()
    assert flat.tolist() == [*weight.reshape(-1).tolist(), 7.0, 8.0]
    flat[0] = 100.0  # a copy: the tensors are untouched
    assert weight[0, 0] == 0.0
    alone = compat.flatten([bias])  # torch's returns a view of a lone tensor; ours a copy
    alone[0] = 100.0
    assert alone.tolist() == [100.0, 8.0] and bias.tolist() == [7.0, 8.0]
