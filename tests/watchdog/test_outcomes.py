"""The watchdog's outcomes are typed and its two gates agree.

- the outlier gate exists twice, on the host (:func:`~lr_callbacks.watchdog.stats.judge`) and on the device
  (:class:`~lr_callbacks.watchdog.device.DeviceJudge`); on the same inputs they give the same verdict;
- ``Incident.signal``/``action`` are string-valued enums: equal to the strings, stored as plain strings in a
  checkpoint, and an older checkpoint's strings load;
- a rollback names its target in ``Incident.rollback_to``.
"""

from __future__ import annotations

import math

import pytest
import torch

from lr_callbacks import Incident
from lr_callbacks.watchdog.config import Action, Signal
from lr_callbacks.watchdog.device import DeviceJudge, row_from_state, row_state
from lr_callbacks.watchdog.stats import Gate, Samples, Verdict, judge
from tests.watchdog.test_stats import feed, warm

GATES = [
    Gate(),
    Gate(loss_limit=math.log(2.0), grad_limit=math.log(10.0)),
    Gate(loss_limit=math.log(2.0), grad_limit=math.log(10.0), clip=True),
    Gate(loss_limit=math.log(0.5), grad_limit=math.inf, clip=True),
]
VALUES = [
    (1.0, 3.0),
    (8.0, 3.0),
    (1.0, 40.0),
    (8.0, 40.0),
    (2.0, 10.0),  # at the limits: not an outlier on either side
    (float("nan"), 3.0),
    (1.0, float("inf")),
    (0.0, 1.0),  # log(0) = -inf: never an outlier
]


@pytest.mark.parametrize("gate", GATES, ids=lambda g: f"{g.loss_limit:.2f}-{g.grad_limit:.2f}-{g.clip}")
@pytest.mark.parametrize("loss, norm", VALUES)
def test_the_device_gate_gives_the_host_gates_verdict(gate, loss, norm):
    expected = judge(gate, loss, norm)
    parameter = torch.nn.Parameter(torch.zeros(2))
    parameter.grad = torch.ones(2)
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    device = DeviceJudge(torch.device("cpu"), rows=1, clip=gate.clip)
    device.set_gate(gate)
    device.judge(optimizer, torch.tensor([loss, norm], dtype=torch.float32), step=7, exact_skip=False)
    ((step, verdict, _, _, samples),), _ = device.read(None)
    assert step == 7 and samples is None
    assert (verdict.skip, verdict.signals, verdict.forced) == (expected.skip, expected.signals, expected.forced)
    assert verdict.clip_factor == pytest.approx(expected.clip_factor, rel=1e-6)
    if expected.skip:
        assert torch.equal(parameter.grad, torch.zeros(2))  # the device skip zeroed the gradient
    else:
        assert parameter.grad == pytest.approx(torch.full((2,), expected.clip_factor), rel=1e-6)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize(("loss", "outliers"), [(1.0, 6.0), (1.0, 7.0), (8.0, 7.0), (float("nan"), 7.0)])
def test_the_device_gate_judges_the_per_sample_count_as_the_host_gate(clip, loss, outliers):
    gate = Gate(loss_limit=math.log(2.0), grad_limit=math.log(10.0), clip=clip, sample_limit=2.5, sample_count=6.0)
    expected = judge(gate, loss, 3.0, outliers)
    parameter = torch.nn.Parameter(torch.zeros(2))
    parameter.grad = torch.ones(2)
    device = DeviceJudge(torch.device("cpu"), rows=1, clip=clip, world_size=2)
    device.set_gate(gate)
    # as all-reduced over two ranks: the count and the size are their means
    values = torch.tensor([loss, 3.0, 4.0, outliers / 2, 16.0], dtype=torch.float32)
    device.judge(torch.optim.SGD([parameter], lr=0.1), values, step=7, exact_skip=False)
    ((_, verdict, _, _, samples),), _ = device.read(None)
    assert (verdict.skip, verdict.signals) == (expected.skip, expected.signals)
    assert samples == Samples(largest=4.0, count=outliers / 2, n=16.0)


def test_signals_and_actions_are_strings_stored_as_plain_values():
    incident = Incident(step=3, signal=Signal.LOSS, value=9.0, threshold=2.0, action=Action.SKIP)
    assert incident.signal == "loss" and incident.action == "skip" and str(incident.action) == "skip"
    assert f"{incident.signal}/{incident.action}" == "loss/skip"
    state = incident.state()
    assert type(state["signal"]) is str and type(state["action"]) is str
    assert Incident(**state) == incident


def test_an_older_checkpoints_incidents_and_rows_still_load():
    old = {"step": 5, "signal": "after_rollback", "value": 1.0, "threshold": math.nan, "action": "skip", "detail": ""}
    incident = Incident(**old)  # no rollback_to: written before it existed
    assert incident.signal is Signal.AFTER_ROLLBACK and incident.action is Action.SKIP and incident.rollback_to is None
    row = {"step": 6, "verdict": {"skip": True, "clip_factor": 1.0, "signals": ["after_rollback"]}, "loss": 1.0,
           "grad_norm": 2.0}  # fmt: skip
    step, verdict, _, _, samples = row_from_state(row)  # no per-sample summary: written before it existed
    assert step == 6 and verdict == Verdict(skip=True, forced=True) and samples is None
    assert row_from_state(row_state(step, verdict, 1.0, 2.0))[1] == verdict
    summary = Samples(largest=3.0, count=2.0, n=32.0)
    assert row_from_state(row_state(step, verdict, 1.0, 2.0, summary))[4] == summary
    with pytest.raises(ValueError, match="'louder'"):
        Incident(step=1, signal="louder", value=1.0, threshold=1.0, action="skip")


def test_a_rollback_names_its_target():
    policy = warm(patience=2)  # a snapshot before step 29
    feed(policy, [math.nan, math.nan], start=30)
    (rollback,) = [e for e in policy.events if e.action is Action.ROLLBACK]
    assert rollback.rollback_to == 29
    assert all(e.rollback_to is None for e in policy.events if e.action is not Action.ROLLBACK)
