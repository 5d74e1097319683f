"""``core.sharded`` and the DTensor paths of ``core.grads`` and ``core.snapshot``, in one process.

A one-rank gloo group and mesh make real DTensors (FSDP2's ``fully_shard`` included) without a second process;
what two ranks change (the all-reduce, each rank's own shard) is tested in ``tests/integration/test_fsdp2.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch.strategies as lightning_strategies
import pytest
import pytorch_lightning.strategies as pl_strategies
import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from lr_callbacks.core.grads import global_norm
from lr_callbacks.core.sharded import is_dtensor, layout_of, local, plain, plain_shard_group, rebuild, strategy_kind
from lr_callbacks.core.snapshot import ModelSnapshot, OptimizerState, TrainingSnapshot, to_host
from lr_callbacks.watchdog.snapshots import DiskSnapshot
from tests.helpers import one_rank_mesh


def bare(cls: type) -> object:
    """An instance without ``__init__`` (DeepSpeed's needs deepspeed, FSDP's a GPU only at setup): its class is
    what counts."""
    return cls.__new__(cls)


@pytest.mark.parametrize("strategies", [pl_strategies, lightning_strategies], ids=["pytorch_lightning", "lightning"])
def test_strategy_kind_tells_the_sharded_strategies_apart(strategies):
    names = ("ModelParallelStrategy", "FSDPStrategy", "DeepSpeedStrategy", "DDPStrategy", "SingleDeviceStrategy")
    kinds = {name: strategy_kind(bare(getattr(strategies, name))) for name in names}
    assert kinds == {
        "ModelParallelStrategy": "fsdp2",
        "FSDPStrategy": "fsdp",
        "DeepSpeedStrategy": "deepspeed",
        "DDPStrategy": "replicated",
        "SingleDeviceStrategy": "replicated",
    }
    assert plain_shard_group(bare(strategies.FSDPStrategy)) is None  # no process group: nothing to reduce over


@pytest.fixture
def mesh() -> Iterator[object]:
    with one_rank_mesh() as mesh:
        yield mesh


def test_local_plain_layout_and_rebuild_on_a_dtensor(mesh):
    whole = torch.arange(6.0).reshape(3, 2)
    sharded = distribute_tensor(whole, mesh, [Shard(0)])
    assert is_dtensor(sharded) and not is_dtensor(whole)
    assert local(whole) is whole and plain(whole) is whole
    with torch.no_grad():
        local(sharded).add_(1.0)  # the local tensor shares the DTensor's storage
    assert torch.equal(plain(sharded), whole + 1.0)
    again = rebuild(torch.zeros(3, 2), layout_of(sharded))
    assert isinstance(again, DTensor) and again.placements == sharded.placements and again.shape == (3, 2)
    assert layout_of(whole) is None and rebuild(whole, None) is whole


def test_global_norm_of_dtensor_gradients_is_the_whole_gradients(mesh):
    grads = [torch.randn(5, 3), torch.randn(7)]
    sharded = [distribute_tensor(g, mesh, [Shard(0)]) for g in grads]
    expected = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    assert float(global_norm(sharded, torch.device("cpu"))) == pytest.approx(float(expected), rel=1e-6)
    mixed = [sharded[0], grads[1]]  # a replicated plain tensor beside a shard
    assert float(global_norm(mixed, torch.device("cpu"))) == pytest.approx(float(expected), rel=1e-6)
    poisoned = [sharded[0], distribute_tensor(torch.tensor([float("nan")]), mesh, [Shard(0)])]
    assert torch.isnan(global_norm(poisoned, torch.device("cpu")))


def test_snapshots_of_an_fsdp2_module_restore_its_shards_and_optimizer_state_in_place(mesh):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    fully_shard(module, mesh=mesh)
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(module(x), y).backward()
        optimizer.step()

    step()
    params = list(module.parameters())
    assert all(is_dtensor(p) for p in params) and all(is_dtensor(optimizer.state[p]["exp_avg"]) for p in params)
    assert not is_dtensor(to_host(params[0]))
    before = [plain(p.detach()).clone() for p in params]
    moments = [plain(optimizer.state[p]["exp_avg"]).clone() for p in params]

    snapshot = ModelSnapshot()  # the watchdog's rollback target
    snapshot.take(module, optimizer, step=1)
    step()
    step()
    snapshot.restore(module, optimizer)
    assert [p is q for p, q in zip(module.parameters(), params)] == [True] * len(params)  # in place
    assert all(torch.equal(plain(p.detach()), b) for p, b in zip(params, before))
    assert all(torch.equal(plain(optimizer.state[p]["exp_avg"]), m) for p, m in zip(params, moments))

    # a sharded state the optimizer lost is recreated as a DTensor of the same layout
    saved = OptimizerState().capture(optimizer)
    optimizer.state[params[0]].pop("exp_avg")
    saved.restore(optimizer)
    restored = optimizer.state[params[0]]["exp_avg"]
    assert is_dtensor(restored) and torch.equal(plain(restored), moments[0])

    # the finder's snapshot: parameters and gradients (a gradient set to None comes back as a DTensor)
    trainer = type("Trainer", (), {"optimizers": [optimizer], "lr_scheduler_configs": []})()
    full = TrainingSnapshot.capture(trainer, module)
    grads = [plain(p.grad).clone() for p in params]
    step()
    for p in params:
        p.grad = None
    full.restore()
    assert all(torch.equal(plain(p.detach()), b) for p, b in zip(params, before))
    assert all(is_dtensor(p.grad) and torch.equal(plain(p.grad), g) for p, g in zip(params, grads))


class _ReplacingEMA:
    """An EMA as torch_ema's ``ExponentialMovingAverage`` keeps it: ``load_state_dict`` takes the loaded shadow
    tensors as its own (it does not copy into the old ones), and ``update`` mixes them with the parameters."""

    def __init__(self, parameters: list[torch.nn.Parameter]) -> None:
        self.params = parameters
        self.shadow_params = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def update(self) -> None:
        for shadow, p in zip(self.shadow_params, self.params):
            shadow.sub_(0.1 * (shadow - p.detach()))

    def state_dict(self) -> dict[str, object]:
        return {"shadow_params": self.shadow_params}

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        self.shadow_params = list(state["shadow_params"])


def test_an_ema_of_fsdp2_parameters_comes_back_sharded_from_every_snapshot(mesh, tmp_path):
    """An EMA the module keeps of its FSDP2 parameters holds DTensors: each snapshot (the finder's, the watchdog's
    in host memory and on disk) gives it DTensors back, of the same layout. Before, it got this rank's shards as
    plain tensors, and the EMA's next update failed ("aten.sub.Tensor got mixed torch.Tensor and DTensor"): after
    the finder's sweep, and at the watchdog's first rollback (2 FSDP2 ranks: repro in the review's notes)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    fully_shard(net, mesh=mesh)
    module = torch.nn.Module()
    module.net = net
    module.ema = _ReplacingEMA(list(net.parameters()))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = type("Trainer", (), {"optimizers": [optimizer], "lr_scheduler_configs": []})()
    strategy = type("Strategy", (), {"world_size": 1, "global_rank": 0})()
    kept = [plain(s).clone() for s in module.ema.shadow_params]
    full = TrainingSnapshot.capture(trainer, module)
    host = ModelSnapshot()
    host.take(module, optimizer, step=0)
    disk = DiskSnapshot(str(tmp_path), strategy)
    disk.take(module, optimizer, step=0)
    for restore in (full.restore, lambda: host.restore(module, optimizer), lambda: disk.restore(module, optimizer)):
        with torch.no_grad():
            for p in net.parameters():
                local(p).add_(1.0)
        module.ema.update()
        restore()
        shadows = module.ema.shadow_params
        assert all(is_dtensor(s) and s.placements == p.placements for s, p in zip(shadows, net.parameters()))
        assert all(torch.equal(plain(s), k) for s, k in zip(shadows, kept))
        module.ema.update()  # mixes DTensors with DTensors


def test_global_norm_of_plain_tensors_of_mixed_dtypes_accumulates_in_float32():
    grads = [torch.randn(5, 3), torch.randn(7, dtype=torch.float64), torch.full((10_000,), 1000.0, dtype=torch.float16)]
    expected = torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in grads]))
    norm = global_norm(grads, torch.device("cpu"))
    assert norm.dtype == torch.float32 and float(norm) == pytest.approx(float(expected), rel=1e-5)
    assert float(global_norm(grads[:1] * 3, torch.device("cpu"))) == pytest.approx(3**0.5 * float(grads[0].norm()))
    assert torch.isinf(global_norm([grads[0], torch.tensor([float("inf")])], torch.device("cpu")))
