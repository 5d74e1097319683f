"""A retaken snapshot copies through the pairing of its last take (``CopyPlan``) only while it still fits."""

from __future__ import annotations

import pytest
import torch

from lr_callbacks.core.snapshot import ModelSnapshot, restore_optimizer_state


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(8, 3)).square().mean().backward()
    optimizer.step()
    return model, optimizer


def _values(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[list[float]]:
    tensors = [*model.state_dict().values()]
    tensors += [v for p in model.parameters() for v in optimizer.state[p].values()]
    return [t.flatten().tolist() for t in tensors]


def _assert_restores(snapshot: ModelSnapshot, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    expected = _values(model, optimizer)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
            for value in optimizer.state[p].values():
                value.add_(1.0)
    snapshot.restore(model, optimizer)
    assert _values(model, optimizer) == expected


def test_a_retake_of_the_same_tensors_copies_their_new_values():
    model, optimizer = _model_and_optimizer()
    snapshot = ModelSnapshot()
    for step in range(3):  # the first take allocates, the second checks and pairs, the third copies as paired
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.5)
                optimizer.state[p]["exp_avg"].add_(0.25)
        snapshot.take(model, optimizer, step)
        _assert_restores(snapshot, model, optimizer)


def test_a_replaced_state_tensor_a_renamed_or_new_key_or_a_new_shape_is_copied_afresh():
    model, optimizer = _model_and_optimizer()
    snapshot = ModelSnapshot()
    for step in range(3):
        snapshot.take(model, optimizer, step)
    first = next(iter(model.parameters()))
    optimizer.state[first]["exp_avg"] = torch.full_like(first, 7.0)  # a new object in the same place
    snapshot.take(model, optimizer, 3)
    assert snapshot.optimizer.state[0]["exp_avg"].eq(7.0).all()
    _assert_restores(snapshot, model, optimizer)
    state = optimizer.state[first]
    state["moment"] = state.pop("exp_avg")  # a renamed key, the same tensors and shapes
    snapshot.take(model, optimizer, 3)
    assert set(snapshot.optimizer.state[0]) == {"step", "exp_avg_sq", "moment"}
    assert snapshot.optimizer.state[0]["moment"].eq(7.0).all()
    _assert_restores(snapshot, model, optimizer)
    optimizer.state[first]["extra"] = torch.ones(2)  # a new key
    for step in (4, 5):  # a fresh capture, then a checked one that pairs again
        snapshot.take(model, optimizer, step)
    assert snapshot.optimizer.state[0]["extra"].tolist() == [1.0, 1.0]
    _assert_restores(snapshot, model, optimizer)
    optimizer.state[first]["extra"].data = torch.full((3,), 2.0)  # the same object, another shape
    snapshot.take(model, optimizer, 6)
    assert snapshot.optimizer.state[0]["extra"].tolist() == [2.0, 2.0, 2.0]
    model.register_buffer("seen", torch.tensor([5.0]))  # a new state_dict entry
    snapshot.take(model, optimizer, 7)
    assert snapshot.model["seen"].tolist() == [5.0]
    model[0].weight = torch.nn.Parameter(torch.full((4, 3), 3.0))  # a new parameter object under the same name
    snapshot.take(model, optimizer, 8)
    assert snapshot.model["0.weight"].eq(3.0).all()


def test_a_state_value_that_turns_from_a_number_into_a_tensor_and_back_is_copied_afresh():
    """LBFGS's ``t`` is a float at first and a 0-d tensor after a line search, and can turn back: the retake
    paired a float buffer with a tensor (``AttributeError: 'float' object has no attribute 'shape'``)."""
    model, optimizer = _model_and_optimizer()
    first = next(iter(model.parameters()))
    snapshot = ModelSnapshot()
    for step, t in enumerate([0.5, 0.25, torch.tensor(0.125), torch.tensor(0.0625), 0.03125, torch.tensor(0.015625)]):
        optimizer.state[first]["t"] = t
        snapshot.take(model, optimizer, step)
        assert float(snapshot.optimizer.state[0]["t"]) == float(t)
        optimizer.state[first]["t"] = 9.0
        snapshot.restore(model, optimizer)
        assert float(optimizer.state[first]["t"]) == float(t)


@pytest.mark.parametrize(
    ("options", "step_on_device"), [({}, False), ({"capturable": True}, True), ({"fused": True}, True)]
)
def test_a_recreated_step_goes_where_torch_puts_it(options: dict[str, bool], step_on_device: bool) -> None:
    """Adam's ``step`` recreated from saved state: on the CPU for a plain optimizer, on the parameter's device for
    a fused or capturable one, as torch's ``load_state_dict`` does (the ``meta`` device stands for a GPU). Before,
    always on the CPU: a capturable or fused optimizer resumed from a checkpoint written mid-incident failed."""
    parameter = torch.nn.Parameter(torch.zeros(4, device="meta"))
    optimizer = torch.optim.AdamW([parameter], lr=1e-3, **options)
    saved = {0: {"step": torch.tensor(5.0), "exp_avg": torch.ones(4), "exp_avg_sq": torch.ones(4)}}
    restore_optimizer_state(optimizer, saved)
    state = optimizer.state[parameter]
    assert state["step"].device.type == ("meta" if step_on_device else "cpu")
    assert state["exp_avg"].device.type == "meta" and state["exp_avg_sq"].device.type == "meta"


class _Counted(torch.nn.Linear):
    """A layer with an extra state that is no tensor (``get_extra_state``, as TransformerEngine's layers and torch's
    quantization observers keep one): a dict it keeps and changes in place."""

    def __init__(self) -> None:
        super().__init__(3, 2)
        self.counts = {"forward": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counts["forward"] += 1
        return super().forward(x)

    def get_extra_state(self) -> dict[str, int]:
        return self.counts

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.counts = state


def test_a_module_whose_extra_state_is_no_tensor_is_snapshotted_restored_and_exported():
    """Before, the snapshot failed at the watchdog's fit start: "'dict' object has no attribute 'detach'"."""
    torch.manual_seed(0)
    model = _Counted()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    snapshot = ModelSnapshot()
    snapshot.take(model, optimizer, step=1)
    weight = model.weight.detach().clone()
    for _ in range(2):  # restored twice: the value handed back is a copy, not the snapshot's own
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
        snapshot.restore(model, optimizer)
        assert model.counts == {"forward": 1} and torch.equal(model.weight, weight)
    model(torch.randn(4, 3))
    exported = snapshot.export()["model"]
    assert exported["_extra_state"] == {"forward": 1} and model.counts == {"forward": 2}
    checkpoint = {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}
    live = snapshot.substitute(checkpoint)
    assert checkpoint["state_dict"]["_extra_state"] == {"forward": 1} and live["model"]["_extra_state"]["forward"] == 2
