"""LRSchedule through a real Trainer: what it writes, counts, logs and refuses.

Every LR asserted here is the one the update used (read in ``on_before_optimizer_step``, after the callbacks),
and every logged value is read back from the TensorBoard event file.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BackboneFinetuning
from pytorch_lightning.plugins.precision import MixedPrecision

from lr_callbacks import Cosine, Cyclic, Exponential, Linear, LRSchedule, Phases, Run, Step, Warmup
from lr_callbacks.core.lr_model import find_lr_schedule, paused, reference_lr, set_lr_scale, set_peak_lr
from tests.helpers import (
    HalveLRAt,
    NamedFinetuning,
    TinyModel,
    loader,
    make_trainer,
    read_events,
    read_scalars,
    read_text,
    stream,
)


def fit(tmp_path: Any, callback: LRSchedule, model: pl.LightningModule | None = None, **kwargs: Any) -> TinyModel:
    model = model if model is not None else TinyModel()
    data = kwargs.pop("train_dataloaders", None)
    data = loader() if data is None else data
    trainer = make_trainer(tmp_path, **{"max_steps": 10, "callbacks": [callback], **kwargs})
    trainer.fit(model, data)
    return model  # type: ignore[return-value]


def body(model: TinyModel) -> list[float]:
    return [lrs[0] for lrs in model.seen_lrs]


def logged(root: Any, tag: str) -> tuple[list[int], list[float]]:
    events = read_scalars(root, tag)
    return [step for step, _ in events], [value for _, value in events]


# --- wiring errors ---------------------------------------------------------------------------------------------


def test_a_torch_scheduler_from_configure_optimizers_is_refused(tmp_path: Any) -> None:
    model = TinyModel(scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, 2))
    with pytest.raises(ValueError, match=r"also returned a torch scheduler \(StepLR\).*Return only the optimizer"):
        fit(tmp_path, LRSchedule("cosine"), model)


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        (LRSchedule("cosine"), r"needs a run of known length for Cosine\(\).*Set Trainer\(max_steps=\.\.\.\)"),
        (LRSchedule("linear", warmup="5%"), r"needs a run of known length"),
        (LRSchedule("step"), r"1 epochs needs the epoch length.*give the duration in steps \(Steps"),
        # both fixes at once: after max_steps alone, the epochs would be refused next
        (LRSchedule("wsd", decay="2 epochs"), r"Set Trainer\(max_steps=\.\.\.\) and give its durations in steps"),
    ],
)
def test_a_run_of_unknown_length_is_refused_with_the_fix(tmp_path: Any, schedule: LRSchedule, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit(tmp_path, schedule, max_steps=-1, max_epochs=2, train_dataloaders=stream())


def test_a_run_of_unknown_length_works_when_the_schedule_needs_no_total(tmp_path: Any) -> None:
    schedule = LRSchedule("inverse_sqrt", warmup="4 steps")
    model = fit(tmp_path, schedule, max_steps=-1, max_epochs=2, train_dataloaders=stream())
    assert schedule.run == Run(total_steps=None, steps_per_epoch=None) and schedule.steps == [12]
    expected = [0.1 * (k + 1) / 4 for k in range(4)] + [0.1 / math.sqrt((k - 4 + 4) / 4) for k in range(4, 12)]
    assert body(model) == pytest.approx(expected, rel=1e-12)
    assert "unknown length" in read_text(tmp_path, "lr_schedule/summary")[0]


def test_an_iterable_dataset_with_max_steps_has_a_known_length(tmp_path: Any) -> None:
    schedule = LRSchedule("cosine")
    model = fit(tmp_path, schedule, max_steps=6, train_dataloaders=stream())
    assert schedule.run == Run(total_steps=6, steps_per_epoch=None)
    assert body(model) == pytest.approx([0.1 * Cosine()(k, total_steps=6) for k in range(6)], rel=1e-12)


class WarningsAtSecondEpoch(pl.Callback):
    """Counts LRSchedule's warnings so far when the second epoch starts."""

    def __init__(self, caught: list[warnings.WarningMessage]) -> None:
        self.caught, self.count = caught, -1

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == 1:
            self.count = len(lr_schedule_warnings(self.caught))


def lr_schedule_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("LRSchedule")]


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (
            {"limit_train_batches": 10, "max_steps": -1},
            r"the first epoch ran 4 batches \(4 optimizer steps\), but the plan counted 10 an epoch .*limit_train_"
            r"batches on an iterable dataset.*, so the run will end after about 12 of the 30 optimizer steps planned "
            r".*Give the run's real length: Trainer\(max_steps=12\) or Trainer\(limit_train_batches=4\)$",
        ),
        (
            {"max_steps": 30},
            r"the first epoch ran 4 batches \(4 optimizer steps\), and Trainer\(max_epochs=3\) ends the run after its "
            r"last epoch, but the plan took max_steps=30: .*no len\(\)\), so the run will end after about 12 of the "
            r"30 .*Trainer\(max_steps=12\)$",
        ),
    ],
    ids=["limit_train_batches", "max_steps"],
)
def test_an_epoch_shorter_than_planned_is_said_at_the_first_epochs_end(
    tmp_path: Any, limits: dict[str, Any], match: str
) -> None:
    """An iterable dataset of 4 batches under limit_train_batches=10 (or with no length, under max_steps=30) and
    max_epochs=3: the cosine planned over 30 steps ends after 12, at 0.07 of its 0.1 peak. Before, this was said
    only at the run's end, blamed on a loader "reloaded every epoch?"; now once, when the first epoch ends."""
    schedule = LRSchedule("cosine", log_plan=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe = WarningsAtSecondEpoch(caught)
        fit(tmp_path, schedule, train_dataloaders=stream(4), max_epochs=3, callbacks=[schedule, probe], **limits)
    said = lr_schedule_warnings(caught)
    assert len(said) == 1 and probe.count == 1, said  # once, by the second epoch's start: not again at the end
    assert re.search(match, said[0]), said[0]
    assert schedule.steps == [12] and schedule.run == Run(
        total_steps=30, steps_per_epoch=limits.get("limit_train_batches")
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"train_dataloaders": stream(4), "limit_train_batches": 10, "max_steps": 12},  # max_steps ends it as planned
        {"max_steps": -1},  # a loader with a length: the epochs are as counted
        {"train_dataloaders": stream(4), "max_steps": 6, "max_epochs": -1},  # no bound on the epochs
    ],
    ids=["max-steps-as-planned", "sized", "unbounded-epochs"],
)
def test_an_epoch_as_planned_is_not_said_short(tmp_path: Any, kwargs: dict[str, Any]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, LRSchedule("cosine", log_plan=False), **{"max_epochs": 3, **kwargs})
    assert lr_schedule_warnings(caught) == []


def test_no_optimizer_is_refused(tmp_path: Any) -> None:
    class NoOptimizer(TinyModel):
        def configure_optimizers(self) -> None:
            return None

    with pytest.raises(ValueError, match=r"LRSchedule found no optimizer to drive.*return an optimizer"):
        fit(tmp_path, LRSchedule("constant"), NoOptimizer())


def test_momentum_co_scheduling_needs_an_optimizer_with_momentum(tmp_path: Any) -> None:
    model = TinyModel(optimizer=lambda m: torch.optim.Adagrad(m.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"co-schedules the momentum, but Adagrad has neither.*momentum=None"):
        fit(tmp_path, LRSchedule("one_cycle"), model)


def test_phases_longer_than_the_run_are_refused_at_fit_start(tmp_path: Any) -> None:
    schedule = LRSchedule(Phases([(Warmup(), "8 steps"), (Cosine(), "4 steps")]))
    with pytest.raises(ValueError, match=r"LRSchedule: the phases add up to 12 steps.*the run has 10 steps"):
        fit(tmp_path, schedule)


@pytest.mark.parametrize(
    ("schedule", "kwargs", "match"),
    [
        (
            Phases([(Warmup(), "2 steps"), (Step("1 steps", gamma=2.0), None)]),
            {"max_steps": 30},
            r"^LRSchedule: phase 2 of 2 \(Step\(every=1 steps, gamma=2\.0\) for the rest of the run\): .* it spans 28 "
            r"steps: its multiplier passes 1e\+06 × the peak LR at step 22 of the run \(its own step 20\); use a gamma "
            r"of at most 1 \(a decay\), a smaller one or a longer `every`, or put it in a phase of at most 19 steps$",
        ),
        (
            Exponential(gamma=1.01),
            {"max_steps": -1, "max_epochs": 2, "train_dataloaders": stream()},
            r"^LRSchedule: Exponential\(gamma=1\.01\) .* and the run's length is unknown: its multiplier passes "
            r"1e\+06 × the peak LR at step 1389",
        ),
    ],
    ids=["phase-of-the-run", "run-of-unknown-length"],
)
def test_a_shape_growing_past_the_bound_within_the_run_is_refused_at_fit_start(
    tmp_path: Any, schedule: Any, kwargs: dict[str, Any], match: str
) -> None:
    """Before, a step warmup doubling the LR each step, left in the run's last phase, trained at 2^27 × the peak by
    step 29 of a 30-step run without a word (and raised a bare OverflowError at fit start over 1,100 steps); an
    exponential growth on a run of unknown length trained on until ``1.01 ** k`` overflowed mid-run."""
    model = TinyModel()
    with pytest.raises(ValueError, match=match):
        fit(tmp_path, LRSchedule(schedule), model, **kwargs)
    assert model.seen_lrs == []


def test_a_co_scheduled_momentum_falling_below_0_within_the_run_is_refused_at_fit_start(tmp_path: Any) -> None:
    """Before, Cyclic(mode="exp_range", gamma=1.5, momentum=(0.85, 0.95)) wrote Adam's beta1 = -0.011 at step 9 of a
    20-step run and -165 at step 19, and the fit trained on without a word (torch checks betas only at build)."""
    model = TinyModel(optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=0.01))
    schedule = LRSchedule(Cyclic(low=0.1, up="4 steps", mode="exp_range", gamma=1.5, momentum=(0.85, 0.95)))
    match = r"^LRSchedule: Cyclic\(.*\) co-schedules the momentum .* the momentum is -0\.01108, below 0, at step 9, "
    with pytest.raises(ValueError, match=match + r".*momentum=None, or put it in a phase of at most 8 steps$"):
        fit(tmp_path, schedule, model, max_steps=20)
    assert model.seen_lrs == []


def test_a_transformers_warmup_longer_than_the_run_is_refused_at_fit_start(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"num_warmup_steps=20 is longer than the run's 10 optimizer steps"):
        fit(tmp_path, LRSchedule.from_transformers("linear", num_warmup_steps=20))


# --- per group -------------------------------------------------------------------------------------------------


def test_group_schedules_and_peak_lrs_by_param_group_name(tmp_path: Any) -> None:
    schedule = LRSchedule("cosine", end=0.1, group_schedules={"head": Linear(1.0, 0.5)}, peak_lrs={"body": 0.2})
    model = fit(tmp_path, schedule)
    cosine = [Cosine(end=0.1)(k, total_steps=10) for k in range(10)]
    linear = [Linear(1.0, 0.5)(k, total_steps=10) for k in range(10)]
    assert body(model) == pytest.approx([0.2 * c for c in cosine], rel=1e-12)
    assert [lrs[1] for lrs in model.seen_lrs] == pytest.approx([0.01 * f for f in linear], rel=1e-12)
    assert logged(tmp_path, "lr/head") == (list(range(10)), pytest.approx([0.01 * f for f in linear], rel=1e-6))
    assert schedule.peak_lrs == [[0.2, 0.01]] and schedule.group_tags == [["body", "head"]]
    assert schedule.lr_at(5, 0, 1) == pytest.approx(0.01 * linear[5])
    summary = read_text(tmp_path, "lr_schedule/summary")[0]
    assert "Cosine(end=0.1)" in summary and "Linear(end=0.5)" in summary


def test_group_schedules_and_peak_lrs_reach_every_group_that_shares_the_name(tmp_path: Any) -> None:
    """Weight-decay groups per layer share their names: before, ``{"no_decay": ...}`` reached only the first
    ``no_decay`` group; the second (tagged ``no_decay-1``) kept the cosine and its configured 0.05, without a word."""

    def optimizer(m: TinyModel) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [
                {"params": [m.body.weight], "name": "decay", "weight_decay": 0.01},
                {"params": [m.body.bias], "name": "no_decay", "lr": 0.05},
                {"params": [m.head.weight], "name": "decay", "weight_decay": 0.01},
                {"params": [m.head.bias], "name": "no_decay", "lr": 0.05},
            ],
            lr=0.1,
        )

    schedule = LRSchedule("cosine", group_schedules={"no_decay": "constant"}, peak_lrs={"no_decay": 0.02})
    model = fit(tmp_path, schedule, TinyModel(optimizer=optimizer), max_steps=4)
    assert schedule.group_tags == [["decay", "no_decay", "decay-1", "no_decay-1"]]
    assert schedule.peak_lrs == [[0.1, 0.02, 0.1, 0.02]]
    cosine = [0.1 * Cosine()(k, total_steps=4) for k in range(4)]
    assert model.seen_lrs == [pytest.approx([c, 0.02, c, 0.02], rel=1e-12) for c in cosine]
    # one of them by its tag: the tag is the more specific key
    tagged = LRSchedule("cosine", peak_lrs={"no_decay": 0.02, "no_decay-1": 0.03})
    fit(tmp_path / "tagged", tagged, TinyModel(optimizer=optimizer), max_steps=1)
    assert tagged.peak_lrs == [[0.1, 0.02, 0.1, 0.03]]


def test_a_repeated_group_name_is_never_suffixed_onto_a_name_another_group_was_given(tmp_path: Any) -> None:
    """Groups named ``a``, ``a``, ``a-1``: before, the second was tagged ``a-1`` like the third (one TensorBoard tag
    for two groups), and ``peak_lrs={"a-1": 0.03}`` set both groups' peaks."""

    def optimizer(m: TinyModel) -> torch.optim.Optimizer:
        groups = [[m.body.weight], [m.body.bias], [m.head.weight, m.head.bias]]
        return torch.optim.SGD([{"params": p, "name": n} for p, n in zip(groups, ["a", "a", "a-1"])], lr=0.1)

    schedule = LRSchedule("constant", peak_lrs={"a-1": 0.03})
    fit(tmp_path, schedule, TinyModel(optimizer=optimizer), max_steps=1)
    assert schedule.group_tags == [["a", "a-2", "a-1"]]
    assert schedule.peak_lrs == [[0.1, 0.1, 0.03]]


@pytest.mark.parametrize("lr", [math.nan, math.inf, -0.1])
def test_a_configured_lr_that_is_no_peak_is_refused_unless_peak_lrs_gives_one(tmp_path: Any, lr: float) -> None:
    """Before, an LR of nan or inf from configure_optimizers became the peak, written at every step: the weights
    turned NaN at the first update, without a word. ``peak_lrs`` for that group still stands in for it."""

    def optimizer(m: TinyModel) -> torch.optim.Optimizer:
        sgd = torch.optim.SGD(m.parameters(), lr=0.1)
        sgd.param_groups[0]["lr"] = lr  # as a computed LR (a batch-size rule dividing by zero) leaves it
        return sgd

    with pytest.raises(ValueError, match=r"parameter group 'group0' has lr=(nan|inf|-0.1) .* finite and >= 0"):
        fit(tmp_path, LRSchedule("cosine"), TinyModel(optimizer=optimizer), max_steps=1)
    model = fit(tmp_path / "given", LRSchedule("constant", peak_lrs={"group0": 0.05}), TinyModel(optimizer=optimizer))
    assert body(model)[0] == pytest.approx(0.05)


@pytest.mark.parametrize("option", ["group_schedules", "peak_lrs"])
def test_an_unknown_group_name_is_refused_with_the_groups_listed(tmp_path: Any, option: str) -> None:
    value = {"neck": "constant"} if option == "group_schedules" else {"neck": 0.1}
    fix = (
        r"configure_optimizers; a name in `group_schedules` waits"
        if option == "group_schedules"
        else r"configure_optimizers$"
    )
    with pytest.raises(ValueError, match=r"no parameter group is named 'neck'; the groups are body, head\. .*" + fix):
        fit(tmp_path, LRSchedule("cosine", **{option: value}))


def test_unnamed_groups_are_group_i_and_a_group_schedule_can_name_them(tmp_path: Any) -> None:
    model = TinyModel(
        optimizer=lambda m: torch.optim.SGD(
            [{"params": m.body.parameters()}, {"params": m.head.parameters(), "lr": 0.01}], lr=0.1
        )
    )
    schedule = LRSchedule("constant", group_schedules={"group1": "linear"})
    fit(tmp_path, schedule, model)
    assert schedule.group_tags == [["group0", "group1"]]
    assert logged(tmp_path, "lr/group1")[1][-1] == pytest.approx(0.01 * 0.1, rel=1e-6)  # linear to 0 at step 9/10


class ThreeOptimizers(pl.LightningModule):
    """Manual optimization: SGD (two named groups) and SGD every batch, Adam every other batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.body, self.head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)
        self.aux, self.extra = torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
        self.seen: list[list[list[float]]] = [[], [], []]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        losses = [
            torch.nn.functional.mse_loss(self.head(torch.tanh(self.body(x))), y),
            torch.nn.functional.mse_loss(self.aux(x), y),
            torch.nn.functional.mse_loss(self.extra(x), y),
        ]
        for index, (optimizer, loss) in enumerate(zip(self.optimizers(), losses)):
            if index == 1 and batch_idx % 2:
                continue
            optimizer.zero_grad()
            self.manual_backward(loss)
            self.seen[index].append([float(g["lr"]) for g in optimizer.optimizer.param_groups])
            optimizer.step()

    def configure_optimizers(self) -> Any:
        return [
            torch.optim.SGD(
                [
                    {"params": self.body.parameters(), "name": "body"},
                    {"params": self.head.parameters(), "lr": 0.01, "name": "head"},
                ],
                lr=0.1,
            ),
            torch.optim.Adam(self.aux.parameters(), lr=0.001),
            torch.optim.SGD(self.extra.parameters(), lr=0.05),
        ]


def test_several_optimizers_under_manual_optimization_have_their_own_clocks_and_tags(tmp_path: Any) -> None:
    schedule = LRSchedule("cosine", group_schedules={"Adam/group0": "linear"})
    model = ThreeOptimizers()
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[schedule])
    # 8 batches; the run is 8 steps long (estimated_stepping_batches): Adam, stepping every other batch, ends half
    # way through its plan, and is told so at the end (before: without a word); the others finish theirs
    with pytest.warns(UserWarning, match=r"optimizer Adam stepped 4 times in the run's 8 batches.*at step 4") as caught:
        trainer.fit(model, loader())
    assert sum("LRSchedule" in str(w.message) for w in caught) == 1
    assert schedule.steps == [8, 4, 8]
    assert schedule.group_tags == [["SGD/body", "SGD/head"], ["Adam/group0"], ["SGD-1/group0"]]
    cosine = [Cosine()(k, total_steps=8) for k in range(8)]
    assert model.seen[0] == [pytest.approx([0.1 * c, 0.01 * c], rel=1e-12) for c in cosine]
    assert [lrs[0] for lrs in model.seen[1]] == pytest.approx([0.001 * (1 - k / 8) for k in range(4)], rel=1e-12)
    assert [lrs[0] for lrs in model.seen[2]] == pytest.approx([0.05 * c for c in cosine], rel=1e-12)
    assert logged(tmp_path, "lr/Adam/group0") == (
        [0, 1, 2, 3],
        pytest.approx([0.001 * (1 - k / 8) for k in range(4)], rel=1e-6),
    )
    assert logged(tmp_path, "lr/SGD/head")[0] == list(range(8))
    assert logged(tmp_path, "lr/SGD-1/group0")[1] == pytest.approx([0.05 * c for c in cosine], rel=1e-6)


def test_max_steps_under_manual_optimization_with_several_optimizers_warns_of_the_partial_plan(tmp_path: Any) -> None:
    schedule = LRSchedule("linear")
    model = ThreeOptimizers()
    with pytest.warns(UserWarning, match=r"counts max_steps=10 over the steps of all 3 optimizers.*max_epochs"):
        make_trainer(tmp_path, max_steps=10, callbacks=[schedule]).fit(model, loader())
    # Lightning stops after 4 batches (4 + 2 + 4 = 10 steps): each optimizer covered under half of its 10-step plan
    assert schedule.steps == [4, 2, 4] and schedule.run == Run(total_steps=10, steps_per_epoch=None)
    assert [lrs[0] for lrs in model.seen[0]] == pytest.approx([0.1, 0.09, 0.08, 0.07], rel=1e-12)


def test_momentum_and_beta1_are_co_scheduled_and_logged(tmp_path: Any) -> None:
    model = TinyModel(optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=0.1, betas=(0.9, 0.98)))
    schedule = LRSchedule("one_cycle", momentum=(0.8, 0.9))
    fit(tmp_path, schedule, model)
    steps, momenta = logged(tmp_path, "momentum/group0")
    one_cycle = schedule.schedule
    expected = [one_cycle.momentum_at(k, 10, Run(total_steps=10)) for k in range(10)]
    assert steps == list(range(10)) and momenta == pytest.approx(expected, rel=1e-6)
    assert momenta[0] == pytest.approx(0.9) and min(momenta) == pytest.approx(0.8, abs=0.01)
    assert model.trainer.optimizers[0].param_groups[0]["betas"][1] == 0.98  # beta2 untouched


class SetsItsLR(TinyModel):
    """Sets every group back to its configured LR in ``on_train_start`` (a recipe to override what a resume
    restored); on a fresh run that changes nothing the schedule should take in."""

    def on_train_start(self) -> None:
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = 0.1


def test_an_lr_set_back_at_train_start_is_written_over_not_taken_as_the_peak(tmp_path: Any) -> None:
    """Taken in at the first step, 0.1 over the warmup's first multiplier (0.1) made the peak 1.0: the warmup
    climbed to 10× the configured LR (an adoption window tried in this stop, taken out before it landed)."""
    model = fit(tmp_path, LRSchedule("cosine", warmup="10 steps"), SetsItsLR(), max_steps=20)
    assert body(model)[:10] == pytest.approx([0.1 * (k + 1) / 10 for k in range(10)], rel=1e-12)


class CriticSteps(pl.LightningModule):
    """Manual optimization, a WGAN's pattern: the critic steps three times a batch, the generator once; the critic is
    optimizer ``critic`` (0 or 1)."""

    def __init__(self, critic: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.critic = critic
        self.body, self.head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        optimizers = self.optimizers()
        for optimizer in [optimizers[self.critic]] * 3 + [optimizers[1 - self.critic]]:
            optimizer.zero_grad()
            self.manual_backward(torch.nn.functional.mse_loss(self.head(torch.tanh(self.body(x))), y))
            optimizer.step()

    def configure_optimizers(self) -> Any:
        return [torch.optim.SGD(self.body.parameters(), lr=0.1), torch.optim.SGD(self.head.parameters(), lr=0.01)]


@pytest.mark.parametrize("critic", [0, 1])
def test_an_optimizer_stepping_several_times_a_batch_is_told_it_ran_past_its_plan(tmp_path: Any, critic: int) -> None:
    """The plan counts one step a batch (8): the critic's clock passes it after 3 of the 8 batches, and trains the
    rest at LR 0. Before, nothing was said when the critic was not optimizer 0, and when it was, a changing loader
    (reload_dataloaders_every_n_epochs) was blamed."""
    schedule = LRSchedule("cosine", end=0.0, log_plan=False)
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[schedule])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(CriticSteps(critic), loader())
    told = [str(w.message) for w in caught if "LRSchedule" in str(w.message)]
    name = ["SGD", "SGD-1"][critic]
    assert schedule.steps == [24, 8] if critic == 0 else [8, 24]
    assert len(told) == 1, told
    assert f"optimizer {name} stepped 9 times in the run's first 3 batches, past the 8 steps of its plan" in told[0]
    assert f"{{'{name}/group0': Phases([(Warmup(), '50 steps'), (Cosine(), '24 steps')])}}" in told[0]
    assert "reload_dataloaders" not in told[0]


class EveryOtherBatch(TinyModel):
    """Automatic optimization whose ``optimizer_step`` steps on even batches only (a pattern from Lightning's docs);
    with ``none_every``, ``training_step`` returns ``None`` (no step) on every such batch instead."""

    def __init__(self, skip: str) -> None:
        super().__init__()
        self.skip = skip

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        loss = super().training_step(batch, batch_idx)
        return None if self.skip == "none" and batch_idx % 2 else loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        if self.skip == "override" and batch_idx % 2:
            optimizer_closure()
        else:
            optimizer.step(closure=optimizer_closure)


@pytest.mark.parametrize("skip", ["override", "none", "no"])
def test_an_optimizer_step_that_skips_steps_is_told_that_the_plan_ended_part_way(tmp_path: Any, skip: str) -> None:
    """Lightning counts a step whose ``optimizer.step()`` the module's ``optimizer_step`` left out, so the plan (one
    step a ``global_step``) ended half way, its LR at the middle of the cosine, without a word. A ``None`` loss
    still runs ``step()`` (without gradients), and a plain run finishes its plan: neither is told anything."""
    schedule = LRSchedule("cosine", end=0.0)
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[schedule])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(EveryOtherBatch(skip), loader())
    told = [str(w.message) for w in caught if "LRSchedule" in str(w.message)]
    if skip == "override":
        assert schedule.steps == [8] and trainer.global_step == 16
        assert len(told) == 1 and "stepped 8 times in the run's 16 steps" in told[0], told
        assert "LRSchedule(Phases([(Warmup(), '50 steps'), (Cosine(), '8 steps')]))" in told[0]
    else:
        assert schedule.steps == [16] and not told, told


class Backbone(TinyModel):
    """TinyModel whose ``body`` is a frozen backbone that BackboneFinetuning unfreezes at epoch 1."""

    @property
    def backbone(self) -> torch.nn.Module:
        return self.body

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD([{"params": self.head.parameters(), "name": "head"}], lr=0.01)


def test_a_group_added_mid_fit_joins_at_its_lr_and_keeps_its_ratio(tmp_path: Any) -> None:
    """BackboneFinetuning adds the backbone at 0.1 × the head's current LR (step 8), and at the next epoch (step 16)
    sets it to 2 × that (its default ramp): each time the schedule takes the LR it set, and goes on from it in its
    shape."""
    schedule = LRSchedule("cosine", end=0.1)
    model = Backbone()
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1)
    trainer = make_trainer(tmp_path, max_epochs=3, callbacks=[schedule, finetuning])
    trainer.fit(model, loader())  # 8 steps per epoch
    cosine = [0.01 * Cosine(end=0.1)(k, total_steps=24) for k in range(24)]
    assert [len(lrs) for lrs in model.seen_lrs] == [1] * 8 + [2] * 16
    assert [lrs[0] for lrs in model.seen_lrs] == pytest.approx(cosine, rel=1e-12)
    backbone = [lrs[1] for lrs in model.seen_lrs[8:]]
    assert backbone[:8] == pytest.approx([0.1 * lr for lr in cosine[8:16]], rel=1e-12)
    ramped = 2.0 * 0.1 * cosine[8]  # BackboneFinetuning's next LR: 2 × the one it added the group at
    assert backbone[8:] == pytest.approx([ramped * lr / cosine[16] for lr in cosine[16:]], rel=1e-12)
    assert schedule.group_tags == [["head", "group1"]]
    assert schedule.peak_lrs[0] == pytest.approx([0.01, ramped / cosine[16] * 0.01])
    assert logged(tmp_path, "lr/group1")[0] == list(range(8, 24))


def test_a_group_added_mid_fit_gets_the_fit_start_checks_of_its_schedule(tmp_path: Any) -> None:
    """The default schedule, used by no group at fit start (``group_schedules`` covers the head), was never checked:
    the backbone added at step 8 took Step("1 steps", gamma=2.0) and trained at 2^15 × its LR by step 23 of 24,
    where a group present at fit start would have been refused (its multiplier passes 1e6 at step 20)."""
    schedule = LRSchedule(Step("1 steps", gamma=2.0), group_schedules={"head": "cosine"})
    model = Backbone()
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1)
    match = (
        r"^LRSchedule: parameter group 'group1', added during the fit at step 8: Step\(every=1 steps, gamma=2\.0\) "
        r"multiplies by gamma=2\.0 every 1 steps, without bound, and it spans 24 steps: its multiplier passes 1e\+06 × "
        r"the peak LR at step 20; "
    )
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, max_epochs=3, callbacks=[schedule, finetuning]).fit(model, loader())
    assert [len(lrs) for lrs in model.seen_lrs] == [1] * 8


@pytest.mark.parametrize("name", ["group1", "backbone"], ids=["BackboneFinetuning", "named-by-BaseFinetuning"])
def test_group_schedules_can_name_a_group_that_a_finetuning_callback_adds_mid_fit(
    tmp_path: Any, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, a name that no group had at fit start was refused then ("no parameter group is named 'backbone'"), so
    the backbone that a fine-tuning callback adds at its unfreeze epoch could never have a schedule of its own. Now the
    name waits for it (one info line): added at step 8 of 16 at 0.1 × the head's cosine LR (0.0005), the backbone
    follows its linear decay from there, its peak 0.001 (0.0005 over Linear's 0.5 at step 8), logged as lr/<name>."""
    finetuning = (
        BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1, verbose=False)
        if name == "group1"
        else NamedFinetuning()
    )
    schedule = LRSchedule("cosine", group_schedules={name: "linear"})
    model = Backbone()
    with caplog.at_level(logging.INFO, logger="lr_callbacks"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, max_epochs=2, callbacks=[schedule, finetuning]).fit(model, loader())
    cosine = [0.01 * Cosine()(k, total_steps=16) for k in range(16)]
    linear = [0.001 * Linear()(k, total_steps=16) for k in range(8, 16)]
    assert [lrs[0] for lrs in model.seen_lrs] == pytest.approx(cosine, rel=1e-12)
    assert [lrs[1] for lrs in model.seen_lrs[8:]] == pytest.approx(linear, rel=1e-12)
    assert schedule.group_tags == [["head", name]] and schedule.peak_lrs == [pytest.approx([0.01, 0.001])]
    steps, values = logged(tmp_path, f"lr/{name}")
    assert steps == list(range(8, 16)) and values == pytest.approx(linear, rel=1e-6)
    said = [r.getMessage() for r in caplog.records if "waits for" in r.getMessage()]
    kind = type(finetuning).__name__
    assert said == [
        f"LRSchedule: group_schedules names {name!r}, which no parameter group has at fit start (the groups: head); "
        f"its schedule waits for a group of that name that {kind} adds during the fit"
    ]
    assert not [str(w.message) for w in caught if "LRSchedule" in str(w.message)]


def test_a_group_schedules_name_that_no_group_takes_is_told_at_the_fit_s_end(tmp_path: Any) -> None:
    """A typo must not pass silently: under a fine-tuning callback 'backbnoe' waits at fit start, and at the fit's end,
    no group of that name having come, a warning names it and the groups; the backbone trained on the default cosine
    (0.1 × the head's LR throughout). Without a fine-tuning callback the name is still refused at fit start, and
    ``peak_lrs`` cannot name a group added during the fit (it trains at the LR it is added with)."""
    schedule = LRSchedule("cosine", group_schedules={"backbnoe": "linear"})
    model = Backbone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, max_epochs=2, callbacks=[schedule, NamedFinetuning()]).fit(model, loader())
    told = [str(w.message) for w in caught if "LRSchedule" in str(w.message)]
    assert len(told) == 1 and told[0].startswith(
        "LRSchedule: group_schedules names 'backbnoe', but no parameter group of that name was at fit start or joined "
        "during the fit (the groups: head, backbone), so its schedule was never used."
    ), told
    assert [lrs[1] / lrs[0] for lrs in model.seen_lrs[8:]] == pytest.approx([0.1] * 8, rel=1e-12)
    with pytest.raises(ValueError, match=r"no parameter group is named 'backbone'.*waits for a group added during the "
                       r"fit when a fine-tuning callback adds it \(Lightning's BaseFinetuning"):  # fmt: skip
        fit(tmp_path / "alone", LRSchedule("cosine", group_schedules={"backbone": "linear"}), Backbone())
    peak = LRSchedule("cosine", peak_lrs={"backbone": 1e-3})
    with pytest.raises(ValueError, match=r"a group that NamedFinetuning adds during the fit cannot be named in "
                       r"`peak_lrs`: it trains at the LR it is added with"):  # fmt: skip
        fit(tmp_path / "peak", peak, Backbone(), max_epochs=2, callbacks=[peak, NamedFinetuning()])


def test_a_waiting_group_schedule_that_does_not_fit_the_run_is_refused_at_fit_start(tmp_path: Any) -> None:
    """Checked against the run before the first step, as the schedules of the groups present then, not at the
    unfreeze epoch (hours into a real fine-tuning run)."""
    schedule = LRSchedule("cosine", group_schedules={"backbone": Step("1 steps", gamma=2.0)})
    model = Backbone()
    match = (
        r"^LRSchedule: group_schedules\['backbone'\], waiting for a group added during the fit: Step\(every=1 steps, "
        r"gamma=2\.0\) multiplies by gamma=2\.0 every 1 steps, without bound, and it spans 24 steps: .* at step 20; "
    )
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, max_epochs=3, callbacks=[schedule, NamedFinetuning()]).fit(model, loader())
    assert model.seen_lrs == []


def test_backbone_finetuning_s_ramp_is_kept_under_a_constant_schedule(tmp_path: Any) -> None:
    """Composed, not fought: under LRSchedule("constant") the LRs are those of BackboneFinetuning alone (before,
    the schedule wrote its own LR over the ramp: 0.01, 0.01, 0.01 where the ramp is 0.01, 0.02, 0.04)."""
    seen = []
    for callbacks in ([LRSchedule("constant")], []):
        model = Backbone()
        ramp = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_lr=0.01, should_align=False)
        make_trainer(tmp_path / str(len(callbacks)), max_epochs=4, callbacks=[*callbacks, ramp]).fit(model, loader())
        seen.append([lrs[1] for lrs in model.seen_lrs[8:]])
    assert seen[0] == pytest.approx(seen[1], rel=1e-12)
    assert seen[1][::8] == pytest.approx([0.01, 0.02, 0.04], rel=1e-12)


@pytest.mark.parametrize("with_schedule", [True, False], ids=["LRSchedule", "alone"])
def test_a_watchdog_cut_holds_through_backbone_finetuning_s_ramp(tmp_path: Any, with_schedule: bool) -> None:
    """BackboneFinetuning sets the backbone's LR at each epoch to 2 × the one it set before. It remembered the LR
    from before the cut, so at its next epoch the backbone went back to the uncut ramp (0.02, 0.04 where the cut
    ramp is 0.01, 0.02)."""
    seen = []
    for cut in ([HalveLRAt(12)], []):
        model = Backbone()
        ramp = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_lr=0.01, should_align=False)
        callbacks = [*([LRSchedule("constant")] if with_schedule else []), ramp, *cut]
        make_trainer(tmp_path / str(len(cut)), max_epochs=4, callbacks=callbacks).fit(model, loader())
        seen.append([lrs[1] for lrs in model.seen_lrs[8:]])
    halved, plain = seen
    assert halved[:4] == pytest.approx(plain[:4], rel=1e-12)
    assert halved[4:] == pytest.approx([lr / 2 for lr in plain[4:]], rel=1e-12)


# --- logging ---------------------------------------------------------------------------------------------------


class PlanProbe(pl.Callback):
    """Reads the event file at the first batch, before any optimizer step."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.tags: dict[str, list[str]] | None = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.tags is None:
            self.tags = read_events(self.root).Tags()


def test_the_plan_image_and_summary_are_written_before_the_first_step(tmp_path: Any) -> None:
    probe = PlanProbe(tmp_path)
    schedule = LRSchedule("wsd", warmup="2 steps", decay="40%")
    fit(tmp_path, schedule, callbacks=[schedule, probe])
    assert probe.tags is not None
    assert "lr_schedule/plan" in probe.tags["images"]
    assert "lr_schedule/summary/text_summary" in probe.tags["tensors"]
    assert not [tag for tag in probe.tags["scalars"] if tag.startswith("lr/")]  # no step taken yet
    image = read_events(tmp_path).Images("lr_schedule/plan")
    assert len(image) == 1 and image[0].step == 0 and image[0].width > 200 and image[0].height > 100
    summary = read_text(tmp_path, "lr_schedule/summary")
    assert len(summary) == 1 and summary[0].startswith("Run: 10 optimizer steps.")
    for row in ("| 0 | 0.05 | 0.005 |", "| 1 | 0.1 | 0.01 |", "| 5 | 0.1 | 0.01 |", "| 6 | 0.1 | 0.01 |"):
        assert row in summary[0]  # step 0, the warmup's last step, the stable phase's last step, the decay's first
    curves = schedule.plan()
    assert list(curves) == ["body", "head"] and curves["body"][0] == list(range(10))
    assert curves["head"][1] == pytest.approx([schedule.lr_at(k, 0, 1) for k in range(10)])


FLOORS = [("polynomial", {"lr_end": 1e-4}), ("cosine_with_min_lr", {"min_lr": 1e-3})]


@pytest.mark.parametrize(("name", "floor"), FLOORS)
def test_a_transformers_absolute_floor_plans_every_group_in_one_table(
    tmp_path: Any, name: str, floor: dict[str, Any]
) -> None:
    """An absolute floor is bound to the optimizer's LR for each group: the summary showed one table per group,
    under the same heading, where every other schedule shows one table with a column per group."""
    schedule = LRSchedule.from_transformers(name, 2, **floor)
    fit(tmp_path, schedule)
    table = schedule.plan_table()
    assert table.count(f"**transformers {name!r}") == 1 and "| step | body | head |" in table, table


def test_log_plan_false_writes_no_plan(tmp_path: Any) -> None:
    fit(tmp_path, LRSchedule("cosine", log_plan=False))
    tags = read_events(tmp_path).Tags()
    assert tags["images"] == [] and "lr_schedule/summary/text_summary" not in tags["tensors"]
    assert "lr/body" in tags["scalars"]


@pytest.mark.parametrize("logger", [True, False])
def test_the_plans_table_is_said_on_the_console_with_or_without_a_logger(tmp_path: Any, caplog: Any, logger: bool):
    """As the README says (and as the finder's answer is); before, ``Trainer(logger=False)`` printed no plan."""
    with caplog.at_level(logging.INFO, logger="lr_callbacks"):
        fit(tmp_path, LRSchedule("cosine"), logger=logger)
    told = [r.getMessage() for r in caplog.records if r.name == "lr_callbacks"]
    assert len([m for m in told if m.startswith("LRSchedule plan (10 optimizer steps):") and "| step |" in m]) == 1
    assert (tmp_path / "lightning_logs").exists() is logger


def test_log_every_n_steps_logs_every_nth_optimizer_step(tmp_path: Any) -> None:
    schedule = LRSchedule("cosine", log_every_n_steps=3)
    model = fit(tmp_path, schedule, accumulate_grad_batches=2)
    steps, values = logged(tmp_path, "lr/body")
    assert steps == [0, 3, 6, 9] and values == pytest.approx([body(model)[k] for k in steps], rel=1e-6)


def test_by_default_lrs_are_logged_at_the_trainers_cadence(tmp_path: Any) -> None:
    """Like Lightning's own metrics and LearningRateMonitor: the trainer's ``log_every_n_steps`` (here 4)."""
    model = fit(tmp_path, LRSchedule("cosine"), log_every_n_steps=4)
    steps, values = logged(tmp_path, "lr/body")
    assert steps == [0, 4, 8] and values == pytest.approx([body(model)[k] for k in steps], rel=1e-6)


@pytest.mark.parametrize("limit", [{"max_steps": 10}, {"max_epochs": 3, "max_steps": 10}])
def test_durations_in_epochs_resolve_with_max_steps_or_max_epochs(tmp_path: Any, limit: dict[str, int]) -> None:
    """8 batches per epoch, accumulated by 2: an epoch is 4 optimizer steps, whichever limit the run has."""
    schedule = LRSchedule("step", every="1 epochs", gamma=0.5, warmup="0.5 epochs")
    model = fit(tmp_path, schedule, accumulate_grad_batches=2, **limit)
    assert schedule.run == Run(total_steps=10, steps_per_epoch=4)
    assert body(model) == pytest.approx([0.05, 0.1] + [0.1] * 4 + [0.05] * 4, rel=1e-12)


def test_preset_arguments_change_the_lrs(tmp_path: Any) -> None:
    plain = fit(tmp_path / "plain", LRSchedule("cosine"))
    floored = fit(tmp_path / "floored", LRSchedule("cosine", end=0.5))
    assert body(plain)[-1] == pytest.approx(0.1 * Cosine()(9, total_steps=10))
    assert body(floored)[-1] == pytest.approx(0.1 * Cosine(end=0.5)(9, total_steps=10))


# --- the API the finder and the watchdog use -------------------------------------------------------------------


class Driver(pl.Callback):
    """Acts on the schedule as the finder and the watchdog do, at fixed steps, through core.lr_model."""

    def __init__(self) -> None:
        self.reference_lrs: list[float] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        self.reference_lrs.append(reference_lr(trainer))
        if step == 2:
            set_peak_lr(trainer, 0.2)  # the finder: the reference group's peak; the head keeps its ratio
        if step == 4:
            set_lr_scale(trainer, 0.5, 1.0)  # the watchdog: every group
        if step == 6:
            with paused(trainer):  # the finder's sweep: neither writes nor counts
                for group in trainer.optimizers[0].param_groups:
                    group["lr"] = 1e-3
                torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]).step()  # another optimizer: not counted
                trainer.optimizers[0].step()  # a sweep step: not counted
                assert find_lr_schedule(trainer).steps == [6]


def test_peak_scale_and_pause_as_the_finder_and_watchdog_use_them(tmp_path: Any) -> None:
    schedule = LRSchedule("linear")
    driver = Driver()
    model = fit(tmp_path, schedule, callbacks=[schedule, driver])
    linear = [1 - k / 10 for k in range(10)]
    peaks = [0.1] * 2 + [0.2] * 8
    scales = [1.0] * 4 + [0.5] * 6
    expected = [p * f * s for p, f, s in zip(peaks, linear, scales)]
    assert body(model) == pytest.approx(expected, rel=1e-12)
    assert [lrs[1] for lrs in model.seen_lrs] == pytest.approx([lr / 10 for lr in expected], rel=1e-12)
    assert schedule.steps == [10] and schedule.peak_lrs == [[0.2, 0.02]] and schedule.scales == [[0.5, 0.5]]
    assert driver.reference_lrs == pytest.approx([0.1] * 3 + [0.2] * 7)  # read before the step-2 change
    assert logged(tmp_path, "lr/body") == (list(range(10)), pytest.approx(expected, rel=1e-6))


class WritesAt(TinyModel):
    """Sets the first group's LR to ``lr`` once, at step ``step``, from ``where``."""

    def __init__(self, where: str, step: int = 4, lr: float = 0.01) -> None:
        super().__init__()
        self.where, self.step, self.lr = where, step, lr

    def _write(self, where: str) -> None:
        if where == self.where and self.trainer.global_step == self.step:
            self.optimizers().param_groups[0]["lr"] = self.lr

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._write("on_train_batch_start")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self._write("training_step")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("where", ["on_train_batch_start", "training_step"])
def test_an_lr_the_module_writes_in_its_step_start_is_adopted_as_the_peak(tmp_path: Any, where: str) -> None:
    """Written after LRSchedule's own ``on_train_batch_start`` (the module's hooks come after the callbacks'),
    before the backward pass. Before, it trained step 4 and the plan wrote over it from step 5, without a word."""
    schedule = LRSchedule("linear")
    model = fit(tmp_path, schedule, WritesAt(where))
    linear = [1 - k / 10 for k in range(10)]
    peak = 0.01 / linear[4]
    assert body(model) == pytest.approx([0.1 * f for f in linear[:4]] + [peak * f for f in linear[4:]], rel=1e-12)
    assert schedule.peak_lrs[0][0] == pytest.approx(peak)


class FreezesThenThaws(TinyModel):
    """Freezes the first group by its LR at step 4 (``lr = 0``), and thaws it at step 7 (``lr = 0.05``)."""

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        writes = {4: 0.0, 7: 0.05}
        if self.trainer.global_step in writes:
            self.optimizers().param_groups[0]["lr"] = writes[self.trainer.global_step]


def test_a_group_frozen_by_an_lr_of_0_stays_frozen_until_thawed(tmp_path: Any) -> None:
    """An LR of 0 is taken like any other LR written outside: before, the plan wrote over it at once, and the group
    the user froze at step 4 trained on at the plan's LR (0.06, 0.05, 0.04) without a word."""
    schedule = LRSchedule("linear")
    model = fit(tmp_path, schedule, FreezesThenThaws())
    linear = [1 - k / 10 for k in range(10)]
    thawed = 0.05 / linear[7]
    expected = [0.1 * f for f in linear[:4]] + [0.0] * 3 + [thawed * f for f in linear[7:]]
    assert body(model) == pytest.approx(expected, rel=1e-12, abs=0.0)
    assert [lrs[1] for lrs in model.seen_lrs] == pytest.approx([0.01 * f for f in linear], rel=1e-12)  # untouched
    assert schedule.peak_lrs[0][0] == pytest.approx(thawed)


class FailsOnce(TinyModel):
    """Raises in its step 5, the first time (a bug the user then fixes)."""

    failed = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.trainer.global_step == 5 and not FailsOnce.failed:
            FailsOnce.failed = True
            raise RuntimeError("a bug in training_step")
        return super().training_step(batch, batch_idx)


def test_a_fit_that_raised_leaves_the_next_fit_on_the_same_trainer_scheduled(tmp_path: Any) -> None:
    """Lightning calls no ``teardown`` after an exception (nor after Ctrl-C). Before, LRSchedule stayed bound to the
    failed fit's optimizer: the next ``trainer.fit`` trained at a constant LR, its clock stuck."""
    schedule = LRSchedule("linear")
    model = FailsOnce()
    trainer = make_trainer(tmp_path, max_steps=10, callbacks=[schedule])
    with pytest.raises(RuntimeError, match="a bug in training_step"):
        trainer.fit(model, loader())
    model.seen_lrs.clear()
    trainer.fit(model, loader())
    assert body(model) == pytest.approx([0.1 * (1 - k / 10) for k in range(5, 10)], rel=1e-12)
    assert schedule.steps == [trainer.global_step] == [10]


def test_a_fit_continued_on_the_same_trainer_goes_on_with_the_last_fits_plan(tmp_path: Any) -> None:
    """``trainer.fit`` again with max_steps raised goes on from step 10: as from that fit's checkpoint, the plan
    goes on under ``on_length_change`` and the change is said. Before, it was planned afresh over 20 steps, and
    the LR jumped from the end of the decay back to half the peak without a word."""
    schedule = LRSchedule("linear", on_length_change="rescale")
    model = TinyModel()
    trainer = make_trainer(tmp_path, max_steps=10, callbacks=[schedule])
    trainer.fit(model, loader())
    trainer.fit_loop.epoch_loop.max_steps = 20
    model.seen_lrs.clear()
    with pytest.warns(UserWarning, match=r"had 10 optimizer steps .* last fit on this Trainer ended\), it now has 20"):
        trainer.fit(model, loader())
    assert body(model) == pytest.approx([0.1 * (1 - k / 20) for k in range(10, 20)], rel=1e-12)
    kept = LRSchedule("linear")  # on_length_change="keep": the plan's end holds, as the warning says
    model = TinyModel()
    trainer = make_trainer(tmp_path / "keep", max_steps=10, callbacks=[kept])
    trainer.fit(model, loader())
    trainer.fit_loop.epoch_loop.max_steps = 12
    model.seen_lrs.clear()
    with pytest.warns(UserWarning, match=r"on_length_change='keep'"):
        trainer.fit(model, loader())
    assert body(model) == [0.0, 0.0]


def test_public_methods_refuse_bad_values_and_use_before_fit() -> None:
    schedule = LRSchedule("cosine")
    with pytest.raises(ValueError, match=r"LRSchedule has not started.*once fit starts"):
        schedule.lr_at(3)
    with pytest.raises(ValueError, match=r"has not started"):
        schedule.plan()
    with pytest.raises(ValueError, match=r"LRSchedule: `lr` must be > 0, got 0"):
        schedule._set_peak_lr(0)
    with pytest.raises(ValueError, match=r"LRSchedule: `scale` must be > 0, got -1"):
        schedule._set_scale(-1)
    assert schedule.run is None and schedule.steps == [] and schedule.state_dict() == {}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.lr_at(-1), r"LRSchedule\.lr_at: `step` is an optimizer step, a whole number >= 0, got -1; the "),
        (lambda s: s.lr_at(2.5), r"`step` is an optimizer step, a whole number >= 0, got 2\.5; .*pass an int"),
        (lambda s: s.lr_at(3, 1), r"no optimizer 1; this fit has 1 \(0: SGD\): pass `optimizer` as an index from 0"),
        (lambda s: s.lr_at(3, 0, 2), r"optimizer 0 has no parameter group 2; pass `group` as an index from 0 to 1 or"),
        (lambda s: s.lr_at(3, 0, "tail"), r"no parameter group 'tail'; .* or a tag: 'body', 'head'"),
        (lambda s: s.plan(points=0), r"LRSchedule\.plan: `points` is how many steps to sample.*got 0; e\.g\. plan"),
    ],
    ids=["negative-step", "fractional-step", "optimizer", "group-index", "group-tag", "points"],
)
def test_lr_at_and_plan_refuse_what_does_not_exist_after_a_fit(tmp_path: Any, call: Any, match: str) -> None:
    """Before, a negative or fractional step was evaluated (lr_at(-1) gave step 0's LR, lr_at(2.5) one between
    steps), a missing optimizer or group was an IndexError from inside the table, and plan(points=0) returned empty
    curves."""
    schedule = LRSchedule("cosine", log_plan=False)
    fit(tmp_path, schedule, max_steps=4, logger=False)
    with pytest.raises(ValueError, match=match):
        call(schedule)
    assert schedule.lr_at(2, 0, "head") == schedule.lr_at(2.0, 0, 1) == pytest.approx(0.01 * 0.5)  # by tag, index


@pytest.mark.parametrize(
    ("limit", "why", "seen"),
    [
        ({"fast_dev_run": True}, "fast_dev_run", [[0.1, 0.01]]),
        ({"limit_train_batches": 0}, "limit_train_batches=0", []),
    ],
    ids=["fast_dev_run", "limit_train_batches=0"],
)
@pytest.mark.parametrize(
    "schedule",
    [
        lambda: LRSchedule("wsd", warmup="100 steps", decay="20%"),
        lambda: LRSchedule("cosine", warmup="2 epochs"),
        lambda: LRSchedule.from_transformers("cosine", num_warmup_steps=100),
    ],
    ids=["steps", "epochs", "transformers"],
)
def test_a_fit_that_trains_nothing_or_only_smoke_tests_the_code_is_left_alone(
    tmp_path: Any, caplog: Any, schedule: Any, limit: dict[str, Any], why: str, seen: list[list[float]]
) -> None:
    """fast_dev_run trains one batch to check the code, limit_train_batches=0 none: before, the first refused every
    plan longer than its batch ("shorten the phases"), the second blamed "an iterable dataset with no max_steps"."""
    callback, model = schedule(), TinyModel()
    with caplog.at_level(logging.INFO, logger="lr_callbacks"):
        fit(tmp_path, callback, model, max_steps=-1, max_epochs=2, **limit)
    assert model.seen_lrs == seen and callback.run is None  # configure_optimizers' LRs, no plan
    told = [r.getMessage() for r in caplog.records if r.name == "lr_callbacks"]
    assert told == [f"LRSchedule: stands aside under {why} (no run to plan); the LRs stay configure_optimizers'"]


# --- mixed precision -------------------------------------------------------------------------------------------


def test_a_step_the_grad_scaler_skips_does_not_advance_the_clock(tmp_path: Any) -> None:
    """An inf loss at step 3: the GradScaler skips that update; Lightning still counts it in global_step."""
    schedule = LRSchedule("linear", warmup="2 steps")
    model = TinyModel(loss_hook=lambda step, loss: loss * math.inf if step == 3 else loss)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # small enough that no other step overflows
    fit(tmp_path, schedule, model, max_steps=8, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert model.trainer.global_step == 8 and schedule.steps == [7] and scaler.get_scale() == 512.0
    plan = [schedule.lr_at(k) for k in range(8)]
    assert body(model) == pytest.approx([plan[k] for k in (0, 1, 2, 3, 3, 4, 5, 6)], rel=1e-12)
    # The skipped update is not logged; the run ends one step before its plan does (lr(7) is never used).
    assert logged(tmp_path, "lr/body") == (list(range(7)), pytest.approx(plan[:7], rel=1e-6))


# --- constructor arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: LRSchedule(Cosine(), end=0.1), TypeError, r"preset arguments \(end\) go with a preset name"),
        (lambda: LRSchedule(3), TypeError, r"`schedule` must be a Schedule or a preset name.*got 3"),
        (lambda: LRSchedule("cosinus"), ValueError, r"unknown `schedule` 'cosinus'; choose one of: 'constant'"),
        (lambda: LRSchedule("cosine", floor=0.1), TypeError, r"'cosine' schedule does not take 'floor'"),
        (lambda: LRSchedule(group_schedules=["head"]), TypeError, r"`group_schedules` must be a dict.*\['head'\]"),
        (lambda: LRSchedule(peak_lrs=0.1), TypeError, r"`peak_lrs` must be a dict keyed by param_group\['name'\]"),
        (lambda: LRSchedule(group_schedules={"head": 3}), TypeError, r"`group_schedules\['head'\]` must be a Schedule"),
        (lambda: LRSchedule(peak_lrs={"head": 0.0}), ValueError, r"`peak_lrs\['head'\]` must be > 0, got 0\.0"),
        (lambda: LRSchedule(peak_lrs={"head": "1e-3"}), TypeError, r"`peak_lrs\['head'\]` must be a number"),
        (lambda: LRSchedule(on_length_change="stretch"), ValueError, r"unknown `on_length_change` 'stretch'.*'keep'"),
        (lambda: LRSchedule(log_every_n_steps=0), ValueError, r"`log_every_n_steps` must be >= 1, got 0"),
        (
            lambda: LRSchedule("cosine", warmup_start=0.5),
            ValueError,
            r"warmup_start=0.5 shapes a warmup, but no `warmup` is given, so there is none; give its length too",
        ),
        (
            lambda: LRSchedule("linear", warmup_curve="cosine", warmup_start=0.1),
            ValueError,
            r"warmup_curve='cosine' and warmup_start=0.1 shape a warmup, but no `warmup` is given",
        ),
        (  # wsd builds its phases itself: before, it took them without a word and ran no warmup
            lambda: LRSchedule("wsd", warmup_curve="cosine"),
            ValueError,
            r"warmup_curve='cosine' shapes a warmup, but no `warmup` is given, so there is none; give its length too",
        ),
        (
            lambda: LRSchedule("wsd", decay="10%", warmup_start=0.1),
            ValueError,
            r"warmup_start=0.1 shapes a warmup, but no `warmup` is given",
        ),
        (lambda: LRSchedule(log_every_n_steps=2.0), TypeError, r"`log_every_n_steps` must be a whole number"),
        (lambda: LRSchedule(log_plan="yes"), TypeError, r"`log_plan` must be True or False, got 'yes'"),
        (lambda: LRSchedule(preset_args=["end"]), TypeError, r"`preset_args` must be a mapping.*got \['end'\]"),
        (
            lambda: LRSchedule("cosine", preset_args={"end": 0.1}, end=0.2),
            TypeError,
            r"end given both in `preset_args` and as keywords; give each once",
        ),
        (  # before, Python's bare "keywords must be strings"
            lambda: LRSchedule("cosine", preset_args={1: 0.1}),
            TypeError,
            r"LRSchedule: `preset_args` is keyed by the preset's argument names, .* got the key 1 in \{1: 0\.1\}",
        ),
        (  # before, group "0" got one of the two peaks and the other was dropped without a word
            lambda: LRSchedule(peak_lrs={0: 1e-3, "0": 1e-2}),
            ValueError,
            r"LRSchedule: `peak_lrs` names the group '0' twice, as 0 and '0' .* only one of the two would be kept",
        ),
        (
            lambda: LRSchedule(group_schedules={"0": "cosine", 0: "linear"}),
            ValueError,
            r"LRSchedule: `group_schedules` names the group '0' twice, as '0' and 0 .*; give it once",
        ),
        (  # before, taken: the "decay" climbed from the peak to 10 times it
            lambda: LRSchedule("cosine", end=10),
            ValueError,
            r"LRSchedule: `end` is the floor the 'cosine' schedule decays to, as a fraction of each group's peak LR, "
            r"so at most 1; got 10, .* write end=0\.1",
        ),
        (lambda: LRSchedule("wsd", end=1.5), ValueError, r"`end` is the floor the 'wsd' schedule decays to.*got 1\.5"),
        (lambda: LRSchedule("linear", end=2.0), ValueError, r"`end` is the floor the 'linear' schedule.*got 2\.0"),
        (  # before, taken: the "decay" climbed to twice the peak
            lambda: LRSchedule("exponential", end=2.0),
            ValueError,
            r"`end` is the floor the 'exponential' schedule decays to.*got 2\.0",
        ),
        (  # before, taken: above the peak from step 1, and 1.5^k overflowed (OverflowError) at step 1751
            lambda: LRSchedule("exponential", gamma=1.5),
            ValueError,
            r"LRSchedule: `gamma` is the factor the 'exponential' schedule decays by at each step, so at most 1; "
            r"got 1\.5, .* write gamma=0\.999",
        ),
        (  # before, taken: the "warmup" ran down from 3 times the peak (2.6 times it at step 0 of 5)
            lambda: LRSchedule("cosine", warmup="5 steps", warmup_start=3.0),
            ValueError,
            r"LRSchedule: `warmup_start` is the multiplier .* so at most 1; got 3\.0, .* write warmup_start=0\.1",
        ),
        (
            lambda: LRSchedule("wsd", warmup="5 steps", warmup_curve="exponential", warmup_start=1.5),
            ValueError,
            r"`warmup_start` is the multiplier .* so at most 1; got 1\.5",
        ),
        (lambda: LRSchedule("polynomial", end=2.0), ValueError, r"the 'polynomial' schedule decays to.*got 2\.0"),
        (
            lambda: LRSchedule("cosine_restarts", cycles=2, end=2.0),
            ValueError,
            r"`end` is the floor the 'cosine_restarts' schedule decays to.*got 2\.0",
        ),
        (lambda: LRSchedule.from_transformers("onecycle"), ValueError, r"unknown `name` 'onecycle'"),
        (lambda: LRSchedule.from_transformers("cosine", lr_end=0.1), TypeError, r"'cosine' does not take 'lr_end'"),
    ],
)
def test_bad_constructor_arguments_are_refused(build: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize(
    ("preset_kwargs", "match"),
    [
        ({"warmup_curve": "exp"}, r"LRSchedule: unknown `warmup_curve` 'exp'; choose one of: 'linear', 'cosine'"),
        ({"warmup_start": -0.1}, r"LRSchedule: `warmup_start` must be >= 0, got -0\.1"),
        ({"warmup_curve": "exponential"}, r"needs `warmup_start` > 0, got 0\.0; try warmup_start=0\.01$"),
    ],
)
@pytest.mark.parametrize("name", ["cosine", "wsd"])
def test_a_presets_warmup_refusals_name_its_own_arguments_and_a_fix_it_takes(
    tmp_path: Any, name: str, preset_kwargs: dict[str, Any], match: str
) -> None:
    """Before, they named Warmup's ``curve`` and ``start``, and suggested ``start=0.01``, which a preset refuses."""
    with pytest.raises(ValueError, match=match):
        LRSchedule(name, warmup="2 steps", **preset_kwargs)
    fixed = LRSchedule(name, warmup="2 steps", warmup_curve="exponential", warmup_start=0.01, log_plan=False)
    model = fit(tmp_path, fixed, max_steps=4)
    assert body(model)[:2] == pytest.approx([0.1 * 0.01**0.5, 0.1], rel=1e-12)  # 0.01·(1/0.01)^q, q = 1/2, 1


def test_preset_args_are_the_preset_keywords_as_one_mapping() -> None:
    assert LRSchedule("wsd", preset_args={"decay": "50%"}, warmup="2 steps").schedule == (
        LRSchedule("wsd", decay="50%", warmup="2 steps").schedule
    )
    assert LRSchedule("cosine", preset_args={"end": 0.5}).schedule != LRSchedule("cosine").schedule


def test_from_transformers_separates_its_own_arguments_from_the_callbacks() -> None:
    schedule = LRSchedule.from_transformers("cosine", num_warmup_steps=3, num_cycles=1.0, log_every_n_steps=2)
    assert schedule.schedule.describe() == "transformers 'cosine'(num_warmup_steps=3, num_cycles=1.0)"
    assert schedule.schedule.multiplier(7, Run(total_steps=11)) == pytest.approx(0.5 * (1 + math.cos(math.pi)))
