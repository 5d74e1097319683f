"""The finder-variants benchmark's parts: a task's start state and gradient clipping, in the plain training loop,
in the ``TaskModule`` the finders sweep, and in the cache keys; the full part runs in the ``--quick`` smoke test."""

from __future__ import annotations

import doctest
import math
from dataclasses import replace

import pytest
import torch

import benchmarks.finder_variants
from benchmarks.finder_quality import RunCache
from benchmarks.finder_variants import QUICK, midway, variants
from benchmarks.finders import run_finder, trainer
from benchmarks.models import TaskModule, evaluate, make_task, train, train_loader


@pytest.fixture(scope="module")
def base():
    return make_task("digits-mlp", steps=100)


@pytest.fixture(scope="module")
def resumed(base):
    """A digits-MLP run at 0.2, stopped after half of its 100 steps."""
    return midway(base, "sgd", 0.2, 0.5)


def test_doctests() -> None:
    module = benchmarks.finder_variants
    failed, attempted = doctest.testmod(module, globs={"math": math, **vars(module)})
    assert attempted > 0 and failed == 0


def test_stop_cuts_the_run_where_the_full_run_passes() -> None:
    task = make_task("digits-mlp", steps=20)
    full, _ = train(task, "sgd", 0.1, seed=0)
    cut, _ = train(task, "sgd", 0.1, seed=0, stop=8)
    assert cut.steps == 8 and cut.train_losses == full.train_losses[:8]  # the same steps, the same schedule
    assert cut.optimizer_state is not None and cut.optimizer_state["state"]  # the momentum buffers, to resume from
    for stop in (0, 21):
        with pytest.raises(ValueError, match=rf"stop must lie in 1\.\.20 \(the run's steps\); got {stop}"):
            train(task, "sgd", 0.1, seed=0, stop=stop)


def test_a_start_state_is_where_every_run_and_the_lightning_module_begin(base, resumed) -> None:
    start, record = resumed
    assert record["stop"] == 50 and record["val_loss"] < 1.0  # trained: a fresh model is at ln 10 ≈ 2.3
    task = replace(make_task("digits-mlp", steps=50), start=start, optimizers=("sgd",))
    module = TaskModule(task, "sgd", 0.05, seed=3)
    assert evaluate(task, module.model)["loss"] == pytest.approx(record["val_loss"])  # whatever the seed
    optimizer = module.configure_optimizers()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # the module's LR, not the saved one
    saved = start.optimizer_state["state"][0]["momentum_buffer"]
    assert torch.equal(optimizer.state[optimizer.param_groups[0]["params"][0]]["momentum_buffer"], saved)
    before = saved.clone()
    near_zero, _ = train(task, "sgd", 1e-9, seed=1)
    assert near_zero.train_losses[0] < 1.0 and near_zero.loss == pytest.approx(record["val_loss"], rel=1e-3)
    assert torch.equal(start.optimizer_state["state"][0]["momentum_buffer"], before)  # never trained in place
    with pytest.raises(ValueError, match=r"this task starts from a sgd state .*; got 'adamw', train it with 'sgd'"):
        train(task, "adamw", 1e-3, seed=0)
    with pytest.raises(ValueError, match="resume_at must lie strictly between 0 and 1"):
        midway(base, "sgd", 0.1, 1.0)


def test_the_finder_sweeps_the_trained_state_in_a_trainer(base, resumed, tmp_path) -> None:
    start, _ = resumed
    task = replace(make_task("digits-mlp", steps=50), start=start, optimizers=("sgd",))
    fresh = run_finder("lr_callbacks", make_task("digits-mlp", steps=30), "sgd", 0, str(tmp_path / "fresh"))[0]
    (ours, *_) = run_finder("lr_callbacks", task, "sgd", 0, str(tmp_path / "resumed"))
    assert fresh.losses[0] > 2.0 and ours.losses[0] < 1.0
    (lightning,) = run_finder("lightning", task, "sgd", 0, str(tmp_path / "lightning"))
    assert lightning.losses[0] < 1.0


def test_clipping_is_lightnings_global_norm_clip(base, tmp_path) -> None:
    clipped = replace(base, gradient_clip_val=1.0)
    plain, _ = train(base, "sgd", 0.5, seed=0)
    assert train(clipped, "sgd", 0.5, seed=0)[0].loss != plain.loss
    # The same ten steps in a Trainer that clips (constant LR: no schedule callback in either).
    from lr_callbacks import preset

    constant = replace(clipped, schedule=preset("constant"))
    reference, _ = train(constant, "sgd", 0.5, seed=0, steps=10)
    unclipped, _ = train(replace(constant, gradient_clip_val=None), "sgd", 0.5, seed=0, steps=10)
    assert abs(unclipped.loss - reference.loss) > 1e-3  # the clip acts in these ten steps
    module = TaskModule(constant, "sgd", 0.5, seed=0, log_loss=False)
    trainer(str(tmp_path), 10, gradient_clip_val=1.0).fit(module, train_loader(constant, 0))
    assert evaluate(constant, module.model)["loss"] == pytest.approx(reference.loss, rel=1e-4)
    for name in ("torch_lr_finder", "fastai_valley"):
        with pytest.raises(ValueError, match=f"finder '{name}' sweeps a fresh model in its own loop"):
            run_finder(name, clipped, "sgd", 0, str(tmp_path))


def test_every_variant_has_its_own_cache_key(base, resumed) -> None:
    start, record = resumed
    tasks = variants(replace(QUICK, steps=100), base, start, record["stop"])
    keys = {RunCache.key(task, "sgd", 0.1, 0) for task in tasks.values()}
    assert len(keys) == 4 and RunCache.key(base, "sgd", 0.1, 0) in keys  # ×1 is the finder benchmark's pair
    assert [t.steps for t in tasks.values()] == [100, 500, 50, 100]
    other, _ = midway(base, "sgd", 0.1, 0.5)  # another start state is another task
    assert RunCache.key(replace(tasks["mid-training"], start=other), "sgd", 0.1, 0) not in keys
