"""Independent references, run side by side: transformers' and torch's own schedulers.

- transformers: every name ``LRSchedule.from_transformers`` takes, over a spread of its arguments, on a real
  optimizer with two parameter groups of different LRs (and an optimizer whose ``defaults["lr"]`` is neither,
  which is what transformers divides absolute floors by); then through a real Trainer with gradient
  accumulation, against ``get_scheduler``'s LambdaLR stepped once per optimizer step.
- torch: OneCycleLR and CyclicLR through a real Trainer (LR and momentum / Adam beta1, two groups; the
  group's configured LR is torch's ``max_lr``), and the closed forms of StepLR, MultiStepLR, ExponentialLR,
  CosineAnnealingLR, PolynomialLR, CosineAnnealingWarmRestarts and LinearLR against our shapes.
- Where we deliberately differ (past the end of the run; plans longer than the run), the difference itself is
  asserted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler as torch_schedulers
from transformers import get_inverse_sqrt_schedule, get_scheduler

from lr_callbacks import (
    Constant,
    Cosine,
    CosineRestarts,
    Cyclic,
    Exponential,
    Linear,
    LRSchedule,
    MultiStep,
    OneCycle,
    Phases,
    Polynomial,
    Run,
    Schedule,
    Step,
    TransformersSchedule,
    preset,
)
from tests.helpers import TinyModel, loader, make_trainer, read_scalars

GROUP_LRS = (0.05, 0.01)  # the two groups' LRs
DEFAULT_LR = 0.1  # the optimizer's defaults["lr"]: transformers divides lr_end and min_lr by it


def two_group_optimizer(cls: type[torch.optim.Optimizer] = torch.optim.SGD, **kwargs: Any) -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in GROUP_LRS]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, GROUP_LRS)]
    return cls(groups, **{"lr": DEFAULT_LR, **kwargs})


def stepped(optimizer: torch.optim.Optimizer, scheduler: Any, steps: int) -> list[list[float]]:
    """Each group's LR at each step: read before ``optimizer.step()``, then the scheduler steps once."""
    out = []
    for _ in range(steps):
        out.append([float(g["lr"]) for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


def ours(schedule: Schedule, total: int, steps: int, lrs: tuple[float, ...] = GROUP_LRS) -> list[list[float]]:
    """What LRSchedule writes: each group's peak × the multiplier, held past the end of the run."""
    if isinstance(schedule, TransformersSchedule) and schedule.needs_reference_lr():
        schedule = replace(schedule, reference_lr=DEFAULT_LR)  # as LRSchedule binds it at fit start
    run = Run(total_steps=total)
    schedule.check(total, run)
    return [[lr * schedule.multiplier(k, run) for lr in lrs] for k in range(steps)]


WSD = [
    {"num_decay_steps": decay, "warmup_type": warmup, "decay_type": shape, "min_lr_ratio": ratio, **stable}
    for decay in (4, 9)
    for warmup in ("linear", "cosine", "1-sqrt")
    for shape in ("linear", "cosine", "1-sqrt")
    for ratio in (0.0, 0.1)
    for stable in ({}, {"num_stable_steps": 3})
] + [{"num_decay_steps": 6, "decay_type": "cosine", "num_cycles": 0.25}]

TRANSFORMERS_CASES: list[tuple[str, dict[str, Any]]] = [
    ("linear", {}),
    ("cosine", {}),
    ("cosine", {"num_cycles": 1.0}),
    ("cosine", {"num_cycles": 0.25}),
    ("cosine", {"num_cycles": 1.5}),
    ("cosine_with_restarts", {}),
    ("cosine_with_restarts", {"num_cycles": 3}),
    ("cosine_with_restarts", {"num_cycles": 7}),
    ("polynomial", {}),
    ("polynomial", {"lr_end": 1e-3, "power": 2.0}),
    ("polynomial", {"lr_end": 0.02, "power": 0.5}),
    ("constant", {}),
    ("constant_with_warmup", {}),
    ("inverse_sqrt", {}),
    ("inverse_sqrt", {"timescale": 7}),
    ("cosine_with_min_lr", {"min_lr_rate": 0.1}),
    ("cosine_with_min_lr", {"min_lr": 1e-3}),
    ("cosine_with_min_lr", {"min_lr_rate": 0.05, "num_cycles": 1.0}),
    *(("warmup_stable_decay", kwargs) for kwargs in WSD),
]


def test_the_cases_cover_every_name_and_argument_from_transformers_takes() -> None:
    from lr_callbacks import TRANSFORMERS_ARGUMENTS

    assert {name for name, _ in TRANSFORMERS_CASES} == set(TRANSFORMERS_ARGUMENTS)
    for name, arguments in TRANSFORMERS_ARGUMENTS.items():
        used = {k for n, kwargs in TRANSFORMERS_CASES if n == name for k in kwargs}
        assert used == set(arguments), name


@pytest.mark.parametrize(
    ("name", "kwargs"),
    TRANSFORMERS_CASES,
    ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for n, kw in TRANSFORMERS_CASES],
)
def test_transformers_get_scheduler_gives_the_same_lr_per_group_per_step(name: str, kwargs: dict[str, Any]) -> None:
    for warmup, total in ((0, 24), (1, 24), (5, 24), (9, 31), (24, 24)):
        if (
            name == "warmup_stable_decay"
            and warmup + kwargs["num_decay_steps"] + kwargs.get("num_stable_steps", 0) > total
        ):
            continue  # refused by ours at fit start (tested in schedule/test_shapes.py)
        if name == "polynomial" and warmup == total:
            continue  # transformers divides by zero there (tested below)
        if name == "constant" and warmup > 0:
            continue  # transformers drops the warmup, ours refuses it (tested below)
        optimizer = two_group_optimizer()
        reference = stepped(optimizer, get_scheduler(name, optimizer, warmup, total, dict(kwargs)), total)
        got = ours(TransformersSchedule(name, warmup, tuple(sorted(kwargs.items()))), total, total)
        for step, (expected, actual) in enumerate(zip(reference, got)):
            assert actual == pytest.approx(expected, rel=1e-12, abs=1e-18), f"warmup={warmup} total={total} step={step}"


@pytest.mark.parametrize(
    ("name", "kwargs", "climbs"),
    [
        ("cosine", {}, True),
        ("cosine_with_min_lr", {"min_lr_rate": 0.1}, True),
        ("inverse_sqrt", {}, False),
        ("linear", {}, None),
        ("polynomial", {"lr_end": 1e-3}, None),
        ("cosine_with_restarts", {"num_cycles": 2}, None),
        ("constant_with_warmup", {}, None),
        ("warmup_stable_decay", {"num_decay_steps": 5, "min_lr_ratio": 0.1}, None),
    ],
)
def test_past_the_end_ours_holds_where_transformers_climbs_or_keeps_decaying(
    name: str, kwargs: dict[str, Any], climbs: bool | None
) -> None:
    """Only reachable when a resumed run is longer than planned (on_length_change='keep')."""
    warmup, total = 4, 20
    optimizer = two_group_optimizer()
    reference = stepped(optimizer, get_scheduler(name, optimizer, warmup, total, dict(kwargs)), 3 * total)
    got = ours(TransformersSchedule(name, warmup, tuple(sorted(kwargs.items()))), total, 3 * total)
    assert got[: total + 1] == [pytest.approx(row, rel=1e-12) for row in reference[: total + 1]]  # identical
    assert got[total:] == [got[total]] * (2 * total)  # ours: held
    if climbs is None:  # these hold in transformers too
        assert reference[total:] == [pytest.approx(row, rel=1e-12) for row in got[total:]]
    elif climbs:  # the cosine continues: back to the peak at step 2·total − warmup
        assert reference[2 * total - warmup] == pytest.approx(list(GROUP_LRS), rel=1e-12)
        assert got[2 * total - warmup][0] < 0.11 * GROUP_LRS[0]
    else:  # inverse_sqrt keeps decaying
        assert reference[3 * total - 1][0] < got[3 * total - 1][0]


def test_a_warmup_given_to_constant_is_dropped_by_transformers_and_refused_by_ours() -> None:
    """Before, ours dropped it too, without a word: a run asked for 5 warmup steps trained at its peak from step 0."""
    optimizer = two_group_optimizer()
    reference = stepped(optimizer, get_scheduler("constant", optimizer, 5, 24, {}), 3)
    assert reference == [list(GROUP_LRS)] * 3  # no warmup: step 0 at the peak
    with pytest.raises(ValueError, match=r"num_warmup_steps=5 would warm nothing up.*'constant_with_warmup', num_warm"):
        TransformersSchedule("constant", 5)
    TransformersSchedule("constant_with_warmup", 5)  # the fix it names (its steps are compared above)


def test_transformers_names_ours_does_not_take_are_refused_with_why_and_the_names_it_takes() -> None:
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION

    from lr_callbacks import TRANSFORMERS_ARGUMENTS

    missing = sorted({t.value for t in TYPE_TO_SCHEDULER_FUNCTION} - set(TRANSFORMERS_ARGUMENTS))
    for name in missing:  # 'cosine_warmup_with_min_lr', 'greedy', 'reduce_lr_on_plateau' in transformers 5.24
        with pytest.raises(ValueError, match=rf"transformers' '{name}' .*; the names LRSchedule takes: 'linear', "):
            TransformersSchedule(name)


@pytest.mark.parametrize("warmup", ["0 steps", "0%", "0 epochs"])
def test_the_inverse_sqrt_preset_with_a_warmup_of_zero_falls_back_to_transformers_timescale(warmup: str) -> None:
    """transformers takes ``timescale = num_warmup_steps or 10_000``; before, ours took the zero warmup as the
    timescale and refused it ("`timescale` must be longer than zero"), a timescale the user never gave."""
    optimizer = two_group_optimizer()
    reference = stepped(optimizer, get_inverse_sqrt_schedule(optimizer, num_warmup_steps=0), 30)
    schedule = preset("inverse_sqrt", warmup=warmup)
    run = Run(total_steps=30_000, steps_per_epoch=10)
    schedule.check(run.total_steps, run)
    got = [[lr * schedule.multiplier(k, run) for lr in GROUP_LRS] for k in range(30)]
    assert got == [pytest.approx(row, rel=1e-12) for row in reference]
    assert preset("inverse_sqrt", warmup=warmup) == preset("inverse_sqrt", warmup=warmup, timescale="10000 steps")


def test_polynomial_with_a_warmup_as_long_as_the_run_divides_by_zero_in_transformers_not_in_ours() -> None:
    optimizer = two_group_optimizer()
    scheduler = get_scheduler("polynomial", optimizer, 10, 10)
    with pytest.raises(ZeroDivisionError):
        stepped(optimizer, scheduler, 10)  # the scheduler.step() after the last step
    got = ours(TransformersSchedule("polynomial", 10), 10, 10)
    assert [row[0] for row in got] == pytest.approx([0.05 * k / 10 for k in range(10)], rel=1e-12)


def test_transformers_floors_are_ratios_of_the_optimizer_default_lr_in_both() -> None:
    """transformers' min_lr is min_lr / defaults['lr'] for every group: the second group's floor is not min_lr."""
    optimizer = two_group_optimizer()
    scheduler = get_scheduler("cosine_with_min_lr", optimizer, 0, 10, {"min_lr": 1e-3})
    reference = stepped(optimizer, scheduler, 11)
    got = ours(TransformersSchedule("cosine_with_min_lr", 0, (("min_lr", 1e-3),)), 10, 11)
    assert reference[10] == pytest.approx([0.05 * 1e-2, 0.01 * 1e-2]) and got[10] == pytest.approx(reference[10])


class RecordingModel(TinyModel):
    """TinyModel that also records each group's momentum (or Adam beta1) as the update uses it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen_momenta: list[list[float]] = []

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        self.seen_momenta.append(
            [float(g["betas"][0] if "betas" in g else g["momentum"]) for g in optimizer.param_groups]
        )


def named_groups(cls: type[torch.optim.Optimizer], **kwargs: Any) -> Callable[[TinyModel], torch.optim.Optimizer]:
    """The optimizer factory for TinyModel: groups "body" at 0.1 and "head" at 0.01."""

    def build(model: TinyModel) -> torch.optim.Optimizer:
        groups = [
            {"params": model.body.parameters(), "name": "body"},
            {"params": model.head.parameters(), "lr": 0.01, "name": "head"},
        ]
        return cls(groups, **{"lr": 0.1, **kwargs})

    return build


@pytest.mark.parametrize(
    ("name", "kwargs", "warmup"),
    [
        ("cosine", {}, 4),
        ("polynomial", {"lr_end": 1e-3, "power": 2.0}, 3),
        ("warmup_stable_decay", {"num_decay_steps": 5, "decay_type": "1-sqrt", "min_lr_ratio": 0.1}, 2),
        ("cosine_with_restarts", {"num_cycles": 2}, 1),
    ],
)
def test_trainer_with_from_transformers_and_accumulation_matches_lambdalr(
    tmp_path: Any, name: str, kwargs: dict[str, Any], warmup: int
) -> None:
    # 8 batches per epoch, accumulated by 3: 3 optimizer steps per epoch (the last one partial), 4 epochs.
    model = TinyModel()
    callback = LRSchedule.from_transformers(name, num_warmup_steps=warmup, **kwargs)
    trainer = make_trainer(tmp_path, max_epochs=4, accumulate_grad_batches=3, callbacks=[callback])
    trainer.fit(model, loader())
    assert trainer.global_step == 12 and callback.steps == [12]

    reference_optimizer = torch.optim.SGD(
        [
            {"params": [torch.nn.Parameter(torch.zeros(1))]},
            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01},
        ],
        lr=0.1,
        momentum=0.9,
    )
    scheduler = get_scheduler(name, reference_optimizer, warmup, 12, dict(kwargs))
    reference = stepped(reference_optimizer, scheduler, 12)
    assert model.seen_lrs == [pytest.approx(lrs, rel=1e-12, abs=1e-18) for lrs in reference]
    for index, tag in enumerate(("body", "head")):
        logged = read_scalars(tmp_path, f"lr/{tag}")
        assert [step for step, _ in logged] == list(range(12))
        assert [value for _, value in logged] == pytest.approx([lrs[index] for lrs in reference], rel=1e-6)


def torch_reference(
    cls: type[torch.optim.Optimizer], make: Callable[[torch.optim.Optimizer], Any], steps: int, **kwargs: Any
) -> tuple[list[list[float]], list[list[float]]]:
    """torch's LRs and momenta (or beta1) per group per step, on the same two groups (0.1 and 0.01)."""
    optimizer = cls(
        [
            {"params": [torch.nn.Parameter(torch.zeros(1))]},
            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01},
        ],
        **{"lr": 0.1, **kwargs},
    )
    scheduler = make(optimizer)
    lrs, momenta = [], []
    for _ in range(steps):
        lrs.append([float(g["lr"]) for g in optimizer.param_groups])
        momenta.append([float(g["betas"][0] if "betas" in g else g["momentum"]) for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs, momenta


TORCH_CYCLES: list[tuple[str, type[torch.optim.Optimizer], dict[str, Any], Callable[..., Any], Schedule]] = [
    (
        "one-cycle-cos-sgd",
        torch.optim.SGD,
        {"momentum": 0.9},
        lambda o: torch_schedulers.OneCycleLR(o, max_lr=[0.1, 0.01], total_steps=16),
        OneCycle(),
    ),
    (
        "one-cycle-three-phase-linear-adam",
        torch.optim.Adam,
        {"betas": (0.9, 0.99)},
        lambda o: torch_schedulers.OneCycleLR(
            o,
            max_lr=[0.1, 0.01],
            total_steps=16,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
            div_factor=10.0,
            final_div_factor=100.0,
            base_momentum=0.8,
            max_momentum=0.9,
        ),
        OneCycle(
            pct_start=0.25,
            anneal="linear",
            three_phase=True,
            div_factor=10.0,
            final_div_factor=100.0,
            momentum=(0.8, 0.9),
        ),
    ),
    (
        "one-cycle-three-phase-cos-sgd",
        torch.optim.SGD,
        {"momentum": 0.9},
        lambda o: torch_schedulers.OneCycleLR(o, max_lr=[0.1, 0.01], total_steps=16, three_phase=True),
        OneCycle(three_phase=True),
    ),
    (
        "one-cycle-linear-adam",
        torch.optim.AdamW,
        {},
        lambda o: torch_schedulers.OneCycleLR(o, max_lr=[0.1, 0.01], total_steps=16, anneal_strategy="linear"),
        OneCycle(anneal="linear"),
    ),
    (
        "cyclic-triangular-sgd",
        torch.optim.SGD,
        {"momentum": 0.9},
        lambda o: torch_schedulers.CyclicLR(o, base_lr=[0.02, 0.002], max_lr=[0.1, 0.01], step_size_up=3),
        Cyclic(low=0.2, up="3 steps", momentum=(0.8, 0.9)),
    ),
    (
        "cyclic-triangular2-adam",
        torch.optim.Adam,
        {},
        lambda o: torch_schedulers.CyclicLR(
            o, base_lr=[0.02, 0.002], max_lr=[0.1, 0.01], step_size_up=2, step_size_down=3, mode="triangular2"
        ),
        Cyclic(low=0.2, up="2 steps", down="3 steps", mode="triangular2", momentum=(0.8, 0.9)),
    ),
    (
        "cyclic-exp-range-sgd",
        torch.optim.SGD,
        {"momentum": 0.9},
        lambda o: torch_schedulers.CyclicLR(
            o,
            base_lr=[0.02, 0.002],
            max_lr=[0.1, 0.01],
            step_size_up=4,
            mode="exp_range",
            gamma=0.95,
            base_momentum=0.85,
            max_momentum=0.95,
        ),
        Cyclic(low=0.2, up="4 steps", mode="exp_range", gamma=0.95, momentum=(0.85, 0.95)),
    ),
]


@pytest.mark.parametrize(
    ("cls", "options", "make", "schedule"), [c[1:] for c in TORCH_CYCLES], ids=[c[0] for c in TORCH_CYCLES]
)
def test_trainer_one_cycle_and_cyclic_match_torch_lr_and_momentum(
    tmp_path: Any,
    cls: type[torch.optim.Optimizer],
    options: dict[str, Any],
    make: Callable[..., Any],
    schedule: Schedule,
) -> None:
    model = RecordingModel(optimizer=named_groups(cls, **options))
    trainer = make_trainer(tmp_path, max_steps=16, callbacks=[LRSchedule(schedule)])
    trainer.fit(model, loader())
    lrs, momenta = torch_reference(cls, make, 16, **options)
    assert model.seen_lrs == [pytest.approx(row, rel=1e-12) for row in lrs]
    assert model.seen_momenta == [pytest.approx(row, rel=1e-12) for row in momenta]
    assert [v for _, v in read_scalars(tmp_path, "momentum/head")] == pytest.approx([m[1] for m in momenta], rel=1e-6)


CLOSED_FORMS: list[tuple[str, Callable[[torch.optim.Optimizer], Any], Schedule, int | None, int]] = [
    ("StepLR", lambda o: torch_schedulers.StepLR(o, step_size=3, gamma=0.5), Step("3 steps", gamma=0.5), None, 20),
    (
        "MultiStepLR",  # torch's milestones are a Counter: a repeated milestone compounds, as ours does
        lambda o: torch_schedulers.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.5),
        MultiStep(("2 steps", "5 steps", "5 steps", "9 steps"), gamma=0.5),
        None,
        20,
    ),
    ("ExponentialLR", lambda o: torch_schedulers.ExponentialLR(o, gamma=0.9), Exponential(gamma=0.9), None, 40),
    ("CosineAnnealingLR", lambda o: torch_schedulers.CosineAnnealingLR(o, T_max=10), Cosine(), 10, 11),
    (
        "PolynomialLR",
        lambda o: torch_schedulers.PolynomialLR(o, total_iters=10, power=2.0),
        Polynomial(power=2.0),
        10,
        15,
    ),
    (
        "LinearLR",  # held at end_factor after total_iters, as ours holds its end past its span
        lambda o: torch_schedulers.LinearLR(o, start_factor=0.25, end_factor=0.75, total_iters=8),
        Phases([(Linear(0.25, 0.75), "8 steps"), (Constant(0.75), None)]),
        None,
        14,
    ),
    *(
        (
            f"CosineAnnealingWarmRestarts-T0={t0}-Tmult={mult}",
            lambda o, t0=t0, mult=mult: torch_schedulers.CosineAnnealingWarmRestarts(o, T_0=t0, T_mult=mult),
            CosineRestarts(period=f"{t0} steps", period_mult=float(mult)),
            None,
            400,
        )
        for t0, mult in ((3, 1), (2, 2), (1, 3), (5, 2), (1, 10), (3, 10))
    ),
]


@pytest.mark.parametrize(
    ("make", "schedule", "total", "steps"), [c[1:] for c in CLOSED_FORMS], ids=[c[0] for c in CLOSED_FORMS]
)
def test_torch_schedulers_match_our_closed_forms(
    make: Callable[[torch.optim.Optimizer], Any], schedule: Schedule, total: int | None, steps: int
) -> None:
    optimizer = two_group_optimizer()
    reference = stepped(optimizer, make(optimizer), steps)
    run = Run(total_steps=total)
    got = [[lr * schedule.at(k, total, run) for lr in GROUP_LRS] for k in range(steps)]
    # torch's own recursive forms drift by a few ulps over the steps: rel=1e-9
    assert got == [pytest.approx(row, rel=1e-9, abs=1e-15) for row in reference]


def test_cosine_annealing_with_a_floor_matches_torch_eta_min_per_group() -> None:
    """torch's eta_min is absolute, ours relative to each group: equal when eta_min is each group's ratio."""
    for lr in GROUP_LRS:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        reference = stepped(optimizer, torch_schedulers.CosineAnnealingLR(optimizer, T_max=10, eta_min=0.2 * lr), 11)
        got = [lr * Cosine(end=0.2)(k, total_steps=10) for k in range(11)]
        assert got == pytest.approx([row[0] for row in reference], rel=1e-9)
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        scheduler = torch_schedulers.CosineAnnealingWarmRestarts(optimizer, T_0=4, T_mult=2, eta_min=0.2 * lr)
        restarts = CosineRestarts("4 steps", period_mult=2.0, end=0.2)
        assert [lr * restarts(k) for k in range(40)] == pytest.approx([r[0] for r in stepped(optimizer, scheduler, 40)])


def test_torch_cosine_annealing_climbs_past_t_max_and_ours_holds() -> None:
    optimizer = two_group_optimizer()
    reference = stepped(optimizer, torch_schedulers.CosineAnnealingLR(optimizer, T_max=4), 9)
    assert [row[0] for row in reference] == pytest.approx(
        [0.05 * f for f in (1, 0.8536, 0.5, 0.1464, 0, 0.1464, 0.5, 0.8536, 1)], abs=1e-5
    )
    assert [Cosine()(k, total_steps=4) for k in range(4, 9)] == [0.0] * 5


def test_torch_one_cycle_refuses_to_step_past_its_total_and_ours_holds_the_minimum() -> None:
    optimizer = two_group_optimizer()
    scheduler = torch_schedulers.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    stepped(optimizer, scheduler, 10)
    with pytest.raises(ValueError, match="Tried to step"):
        scheduler.step()
    assert [OneCycle()(k, total_steps=10) for k in (9, 10, 50)] == pytest.approx([1 / 25 / 1e4] * 3)
