"""The watchdog's tensor work on FSDP2's DTensor gradients (one-rank mesh): judged on the device, skipped and
clipped through the local shards. Two ranks: ``tests/integration/test_fsdp2.py``."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, distribute_tensor

from lr_callbacks.core.sharded import is_dtensor, plain
from lr_callbacks.watchdog.device import DeviceJudge, StepSignals, clip_gradients
from lr_callbacks.watchdog.stats import Gate
from tests.helpers import one_rank_mesh


def sharded_step(mesh: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    fully_shard(module, mesh=mesh)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    loss = torch.nn.functional.mse_loss(module(torch.randn(16, 4)), torch.randn(16, 1))
    loss.backward()
    return module, optimizer, loss


def test_signals_clipping_and_device_skips_work_on_dtensor_gradients():
    with one_rank_mesh() as mesh:
        module, optimizer, loss = sharded_step(mesh)
        grads = [p.grad for p in module.parameters()]
        assert all(is_dtensor(g) for g in grads)
        whole = [plain(g).clone() for g in grads]
        norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in whole])))

        signals = StepSignals()
        signals.add_loss(loss)
        values = signals.collect(optimizer, accumulate=1)
        assert values is not None and not is_dtensor(values)
        assert values.tolist() == pytest.approx([float(loss.detach()), norm], rel=1e-6)

        # a loss that is itself a DTensor (tensor parallelism: a replicated or partial value) is read whole
        signals.reset()
        signals.add_loss(distribute_tensor(loss.detach(), mesh, [Replicate()]))
        values = signals.collect(optimizer, accumulate=1)
        assert values is not None and not is_dtensor(values)
        assert values.tolist() == pytest.approx([float(loss.detach()), norm], rel=1e-6)

        clip_gradients(optimizer, torch.tensor(0.5))
        assert all(torch.equal(plain(g), w * 0.5) for g, w in zip(grads, whole))

        judge = DeviceJudge(torch.device("cpu"), rows=2, clip=False)
        judge.set_gate(Gate(loss_limit=math.inf, grad_limit=math.inf, clip=False))
        judge.judge(optimizer, torch.tensor([math.nan, 1.0]), step=0, exact_skip=False)  # non-finite: skip
        assert all(is_dtensor(g) and not plain(g).any() for g in grads)  # zeroed in place, still DTensors
