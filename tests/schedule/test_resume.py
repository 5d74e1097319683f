"""State and resume: LRSchedule's state round-trips, and a real checkpoint resumes the LR sequence exactly.

One uninterrupted run (cosine with a 5-step warmup, gradient accumulation 2, 4 optimizer steps per epoch,
14 steps) writes a checkpoint every 3 optimizer steps: step 3 is mid-warmup and mid-epoch, step 6 is
mid-epoch. Resuming from them with ``Trainer.fit(ckpt_path=...)`` must give the same LR, step for step, as
the uninterrupted run, read from the optimizer as the update uses it and from TensorBoard.
"""

from __future__ import annotations

import copy
import json
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lr_callbacks import DivergenceWatchdog, Linear, LRFinder, LRSchedule, OneCycle, Phases, Warmup
from tests.helpers import NamedFinetuning, TinyModel, loader, make_trainer, read_events, read_scalars

TOTAL = 14


def make_schedule(**kwargs: Any) -> LRSchedule:
    return LRSchedule("cosine", warmup="5 steps", end=0.1, **kwargs)


@dataclass
class Uninterrupted:
    lrs: list[list[float]]  # per step, per group, as the update used them
    logged: list[tuple[int, float]]  # lr/body from TensorBoard
    checkpoints: Path
    callback: LRSchedule


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Uninterrupted:
    root = tmp_path_factory.mktemp("uninterrupted")
    torch.manual_seed(0)
    model, callback = TinyModel(), make_schedule()
    checkpoints = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}")
    trainer = make_trainer(
        root, max_steps=TOTAL, accumulate_grad_batches=2, enable_checkpointing=True, callbacks=[callback, checkpoints]
    )
    trainer.fit(model, loader())
    assert sorted(p.name for p in (root / "ckpt").iterdir()) == [
        "step=12.ckpt",
        "step=3.ckpt",
        "step=6.ckpt",
        "step=9.ckpt",
    ]
    return Uninterrupted(model.seen_lrs, read_scalars(root, "lr/body"), root / "ckpt", callback)


def resume(
    root: Path, checkpoint: Path, callback: LRSchedule, model: pl.LightningModule | None = None, **kwargs: Any
) -> TinyModel:
    model = model if model is not None else TinyModel()
    trainer = make_trainer(
        root, **{"max_steps": TOTAL, "accumulate_grad_batches": 2, "callbacks": [callback], **kwargs}
    )
    trainer.fit(model, loader(), ckpt_path=str(checkpoint))
    return model  # type: ignore[return-value]


@pytest.mark.parametrize("step", [3, 6])
def test_resume_from_a_real_checkpoint_reproduces_the_lr_sequence(
    tmp_path: Path, uninterrupted: Uninterrupted, step: int
) -> None:
    checkpoint = uninterrupted.checkpoints / f"step={step}.ckpt"
    saved = torch.load(checkpoint, weights_only=False)
    state = saved["callbacks"]["LRSchedule"]
    # max_steps and no duration in epochs: the epoch length is neither needed nor loaded at fit start
    assert state["steps"] == [step] and state["total_steps"] == TOTAL and state["steps_per_epoch"] is None
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] % 8 != 0  # mid-epoch

    callback = make_schedule()
    model = resume(tmp_path, checkpoint, callback)
    assert callback.steps == [TOTAL]
    assert model.seen_lrs == uninterrupted.lrs[step:]  # exactly: the same floats
    assert read_scalars(tmp_path, "lr/body") == uninterrupted.logged[step:]
    assert [lr for lr, _ in uninterrupted.lrs[:6]] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])


COMPOSITES = {
    # three phases (warmup 2, stable 6, decay 6 of 14 steps): step 10 is in the third, mid-decay, mid-epoch
    "wsd-mid-decay": (lambda: LRSchedule("wsd", warmup="2 steps", decay="40%", decay_shape="cosine"), 10),
    # cycles of 2 up and 3 down (momentum co-scheduled): step 7 is on the way down of the second cycle
    "cyclic-mid-cycle": (lambda: LRSchedule("cyclic", low=0.2, up="2 steps", down="3 steps", momentum=(0.8, 0.9)), 7),
    # a warmup, then restarts every 4 steps (at steps 2, 6, 10): step 7 is mid-cycle, in the second phase
    "restarts-mid-cycle": (lambda: LRSchedule("cosine_restarts", period="4 steps", warmup="2 steps", end=0.1), 7),
    # a warmup, then one-cycle up and down (a phase of a phase): step 9 is in the one-cycle's fall
    "one-cycle-in-a-phase": (
        lambda: LRSchedule(Phases([(Warmup(), "2 steps"), (OneCycle(momentum=None), None)])),
        9,
    ),
}


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_a_resume_inside_a_later_phase_or_mid_cycle_continues_the_curve_exactly(tmp_path: Path, name: str) -> None:
    """A checkpoint saved inside a composite's later phase, or in the middle of a cycle, resumes on the very LR
    (and momentum) the uninterrupted fit used at each step after it, read from the optimizer."""
    make, step = COMPOSITES[name]
    torch.manual_seed(0)
    whole = TinyModel()
    save = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=step, save_top_k=-1, filename="{step}")
    options: dict[str, Any] = {"max_steps": TOTAL, "accumulate_grad_batches": 2}
    make_trainer(tmp_path / "whole", enable_checkpointing=True, callbacks=[make(), save], **options).fit(
        whole, loader()
    )
    moved = {round(lr, 12) for lr, _ in whole.seen_lrs[step - 1 : step + 2]}
    assert len(moved) > 1  # the LR moves across the checkpoint: a resume one step off would show

    resumed = resume(tmp_path / "resumed", tmp_path / "ckpt" / f"step={step}.ckpt", make())
    assert resumed.seen_lrs == whole.seen_lrs[step:]  # exactly: the same floats
    momenta = [group.get("momentum") for group in resumed.optimizers().optimizer.param_groups]
    assert momenta == [group.get("momentum") for group in whole.optimizers().optimizer.param_groups]


def test_state_dict_round_trips_into_a_fresh_instance_and_continues_the_plan(tmp_path: Path) -> None:
    """Without a checkpoint: a fresh callback loaded with another's state picks up its clock, peaks and scales."""

    class StopAt(pl.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 5:
                trainer.should_stop = True

    first = make_schedule()
    make_trainer(tmp_path / "first", max_steps=TOTAL, callbacks=[first, StopAt()]).fit(TinyModel(), loader())
    first._set_scale(0.5)  # as the watchdog would have, before the state is saved
    state = first.state_dict()
    assert state == {
        "steps": [5],
        "peaks": [[0.1, 0.01]],
        "scales": [[0.5, 0.5]],
        "names": [["body", "head"]],
        "given": [["body", "head"]],  # the groups' param_group["name"]: compared on resume
        "total_steps": TOTAL,
        "steps_per_epoch": None,
        "lrs": [[first.lr_at(5, 0, 0), first.lr_at(5, 0, 1)]],  # the next step's, as written: compared on resume
        "plans": [[first.schedule.describe()] * 2],  # each group's schedule in words: compared on resume
        "scaled_at": None,  # the step the watchdog set the scales at (set here by hand, after the fit)
        "written_over": None,  # the last step's LR written over, for the watchdog's next step: none here
    }
    assert json.loads(json.dumps(state)) == state  # plain data, safe in any checkpoint

    second = make_schedule()
    second.load_state_dict(copy.deepcopy(state))
    assert second.state_dict() == state  # before fit: the loaded state, unchanged
    model = TinyModel()
    make_trainer(tmp_path / "second", max_steps=TOTAL, callbacks=[second]).fit(model, loader())
    reference = make_schedule()
    make_trainer(tmp_path / "reference", max_steps=TOTAL, callbacks=[reference]).fit(TinyModel(), loader())
    expected = [0.5 * reference.lr_at(k) for k in range(5, TOTAL)] + [0.5 * reference.lr_at(TOTAL)] * 5
    assert [lrs[0] for lrs in model.seen_lrs] == pytest.approx(expected, rel=1e-12)
    assert second.steps == [5 + TOTAL] and second.scales == [[0.5, 0.5]]


def test_the_callback_pickles_before_and_after_a_fit(tmp_path: Path) -> None:
    fresh = make_schedule(log_every_n_steps=2)
    assert pickle.loads(pickle.dumps(fresh)).schedule == fresh.schedule
    make_trainer(tmp_path, max_steps=6, callbacks=[fresh]).fit(TinyModel(), loader())
    restored = pickle.loads(pickle.dumps(fresh))
    assert restored.state_dict() == fresh.state_dict() and restored.steps == [6]


def test_load_state_dict_refuses_a_foreign_state() -> None:
    with pytest.raises(ValueError, match=r"the checkpoint's state lacks \['names', 'peaks'.*written by LRSchedule"):
        make_schedule().load_state_dict({"steps": [3], "scales": [[1.0]], "total_steps": 10, "steps_per_epoch": 2})


def test_resuming_a_checkpoint_written_without_the_schedule_starts_at_its_global_step(tmp_path: Path) -> None:
    """e.g. a run that used a torch scheduler before: the plan covers the run from step 0, resumed at step 6."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1, filename="{step}")
    make_trainer(tmp_path / "before", max_steps=6, enable_checkpointing=True, callbacks=[checkpoints]).fit(
        TinyModel(), loader()
    )
    callback = LRSchedule("linear")
    model = TinyModel()
    trainer = make_trainer(tmp_path / "after", max_steps=TOTAL, callbacks=[callback])
    trainer.fit(model, loader(), ckpt_path=str(tmp_path / "ckpt" / "step=6.ckpt"))
    assert callback.steps == [TOTAL]
    assert [lrs[0] for lrs in model.seen_lrs] == pytest.approx([0.1 * (1 - k / TOTAL) for k in range(6, TOTAL)])
    assert [step for step, _ in read_scalars(tmp_path / "after", "lr/body")] == list(range(6, TOTAL))


class TwoOptimizers(TinyModel):
    """Manual optimization: ``body`` and ``head`` each have an SGD, and both step every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.batch_lrs: list[float] = []  # each batch's LRs, body's then head's

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        optimizers = self.optimizers()
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(torch.nn.functional.mse_loss(self(x), y))
        self.batch_lrs.extend(float(o.optimizer.param_groups[0]["lr"]) for o in optimizers)
        for optimizer in optimizers:
            optimizer.step()

    def configure_optimizers(self) -> Any:
        return [torch.optim.SGD(self.body.parameters(), lr=0.1), torch.optim.SGD(self.head.parameters(), lr=0.01)]


def test_resuming_a_checkpoint_written_without_the_schedule_goes_on_with_several_optimizers(tmp_path: Path) -> None:
    """Lightning's global_step counts the steps of both optimizers (16 after 8 batches): each clock starts at the
    batches done. Before, both started at 0 and the second epoch trained the plan's first half again."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="first")
    make_trainer(tmp_path / "before", max_epochs=1, enable_checkpointing=True, callbacks=[checkpoints]).fit(
        TwoOptimizers(), loader()
    )
    callback, model = LRSchedule("linear"), TwoOptimizers()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_trainer(tmp_path / "after", max_epochs=2, callbacks=[callback])
        trainer.fit(model, loader(), ckpt_path=str(tmp_path / "ckpt" / "first.ckpt"))
    assert callback.run is not None and callback.run.total_steps == 16 and callback.steps == [16, 16]
    plan = [1 - k / 16 for k in range(8, 16)]
    assert model.batch_lrs == pytest.approx([lr for m in plan for lr in (0.1 * m, 0.01 * m)])
    assert not [w for w in caught if "stepped" in str(w.message)]  # each stepped once a batch, as planned


def test_a_mid_epoch_checkpoint_written_without_the_schedule_starts_the_clocks_at_the_batches_done(
    tmp_path: Path,
) -> None:
    """ModelCheckpoint writes every n steps in on_train_batch_end, before Lightning counts the batch as completed:
    before, the clocks started at 2 after 3 batches, the plan ran a step behind (0.0875 where 0.08125 was due), and
    each optimizer was told at the end that it had stepped 15 times in the run's 16 batches."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, filename="{step}")  # 3 batches
    make_trainer(tmp_path / "before", max_steps=6, enable_checkpointing=True, callbacks=[checkpoints]).fit(
        TwoOptimizers(), loader()
    )
    callback, model = LRSchedule("linear"), TwoOptimizers()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_trainer(tmp_path / "after", max_epochs=2, callbacks=[callback])
        trainer.fit(model, loader(), ckpt_path=str(tmp_path / "ckpt" / "step=6.ckpt"))
    assert callback.steps == [16, 16]
    plan = [1 - k / 16 for k in range(3, 16)]
    assert model.batch_lrs == pytest.approx([lr for m in plan for lr in (0.1 * m, 0.01 * m)], rel=1e-12)
    assert not [w for w in caught if "stepped" in str(w.message)]


def test_a_resume_from_the_last_batchs_checkpoint_is_not_told_its_loader_shrank(tmp_path: Path) -> None:
    """The checkpoint of the run's last batch (written before Lightning counts it): the resumed fit has nothing left
    to do. Before, under manual optimization, it was told "the run ended after its 1 epochs at 7 batches, short of
    the 8 planned at fit start: its training loader became shorter since", which it did not."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=16, filename="last-batch")
    make_trainer(
        tmp_path / "before", max_epochs=1, enable_checkpointing=True, callbacks=[LRSchedule("linear"), checkpoints]
    ).fit(TwoOptimizers(), loader())
    callback = LRSchedule("linear")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_trainer(tmp_path / "after", max_epochs=1, callbacks=[callback])
        trainer.fit(TwoOptimizers(), loader(), ckpt_path=str(tmp_path / "ckpt" / "last-batch.ckpt"))
    assert callback.steps == [8, 8]
    assert not [str(w.message) for w in caught if "LRSchedule" in str(w.message)]


class SetsFirstLRAt2(pl.Callback):
    """Writes ``lr`` into the first group at the start of step 2 (a group frozen by an LR of 0, or set by hand)."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 2:
            trainer.optimizers[0].param_groups[0]["lr"] = self.lr


@pytest.mark.parametrize("lr", [0.0, 0.05], ids=["frozen", "set"])
def test_a_resume_keeps_an_lr_set_after_the_finder_ran(tmp_path: Path, lr: float) -> None:
    """The checkpoint's LRSchedule holds the peak an LR written after the finder's answer gave the group: on resume the
    finder's answer was written over it. A group 0 frozen at step 2 (LR 0) failed the resume with a ZeroDivisionError;
    one set to 0.05 went back to the finder's answer, and the head with it, at its ratio to the answer."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, filename="{step}")
    finder, first = LRFinder(num_steps=20), LRSchedule("constant")
    callbacks = [finder, first, SetsFirstLRAt2(lr), checkpoints]
    make_trainer(tmp_path / "before", max_steps=4, enable_checkpointing=True, callbacks=callbacks).fit(
        TinyModel(), loader()
    )
    peaks = first.peak_lrs
    assert finder.result.chosen_lr not in (None, lr) and peaks[0][0] == lr  # the LR set is the group's peak
    callback, model = LRSchedule("constant"), TinyModel()
    trainer = make_trainer(tmp_path / "after", max_steps=6, callbacks=[LRFinder(num_steps=20), callback])
    trainer.fit(model, loader(), ckpt_path=str(tmp_path / "ckpt" / "step=4.ckpt"))
    assert callback.peak_lrs == peaks
    assert model.seen_lrs == [peaks[0]] * 2


# --- resuming into a run of another length: the policy --------------------------------------------------------


def test_on_length_change_keep_follows_the_original_plan(tmp_path: Path, uninterrupted: Uninterrupted) -> None:
    callback = make_schedule(on_length_change="keep")
    with pytest.warns(UserWarning, match=r"the run had 14 optimizer steps.*now has 20; following the original plan"):
        model = resume(tmp_path, uninterrupted.checkpoints / "step=6.ckpt", callback, max_steps=20)
    original = uninterrupted.callback
    expected = [original.lr_at(k) for k in range(6, TOTAL)] + [original.lr_at(TOTAL)] * 6
    assert [lrs[0] for lrs in model.seen_lrs] == pytest.approx(expected, rel=1e-12)
    assert callback.run is not None and callback.run.total_steps == TOTAL


def test_on_length_change_rescale_replans_for_the_new_length(tmp_path: Path, uninterrupted: Uninterrupted) -> None:
    callback = make_schedule(on_length_change="rescale")
    with pytest.warns(UserWarning, match=r"now has 20; re-planning the schedule for the new length"):
        model = resume(tmp_path, uninterrupted.checkpoints / "step=6.ckpt", callback, max_steps=20)
    fresh = make_schedule()
    make_trainer(tmp_path / "fresh", max_steps=20, accumulate_grad_batches=2, callbacks=[fresh]).fit(
        TinyModel(), loader()
    )
    assert [lrs[0] for lrs in model.seen_lrs] == pytest.approx([fresh.lr_at(k) for k in range(6, 20)], rel=1e-12)
    assert callback.run is not None and callback.run.total_steps == 20


def test_on_length_change_error_refuses_with_the_fix(tmp_path: Path, uninterrupted: Uninterrupted) -> None:
    with pytest.raises(ValueError, match=r"had 14 optimizer steps.*now has 20\. Resume with the original.*'keep'"):
        resume(
            tmp_path, uninterrupted.checkpoints / "step=6.ckpt", make_schedule(on_length_change="error"), max_steps=20
        )


def test_the_same_length_resumes_silently_under_every_policy(tmp_path: Path, uninterrupted: Uninterrupted) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"LRSchedule.*", category=UserWarning)
        model = resume(tmp_path, uninterrupted.checkpoints / "step=9.ckpt", make_schedule(on_length_change="error"))
    assert model.seen_lrs == uninterrupted.lrs[9:]


class ThreeGroups(TinyModel):
    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(
            [
                {"params": self.body.weight, "name": "body"},
                {"params": self.body.bias, "name": "bias"},
                {"params": self.head.parameters(), "lr": 0.01, "name": "head"},
            ],
            lr=0.1,
            momentum=0.9,
        )


class RenamedHead(TinyModel):
    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(
            [
                {"params": self.body.parameters(), "name": "body"},
                {"params": self.head.parameters(), "lr": 0.01, "name": "neck"},
            ],
            lr=0.1,
            momentum=0.9,
        )


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (ThreeGroups(), r"the checkpoint has \[2\] parameter groups per optimizer, this run has \[3\]"),
        (RenamedHead(), r"group 1 of optimizer 0 was 'head' in the checkpoint and is 'neck' now"),
    ],
)
def test_resuming_into_other_parameter_groups_is_refused(
    tmp_path: Path, uninterrupted: Uninterrupted, model: TinyModel, match: str
) -> None:
    callback = make_schedule()
    with pytest.raises(ValueError, match=match):
        # the optimizer state would not load either; ours is checked first, at fit start, with a clearer message
        resume(tmp_path, uninterrupted.checkpoints / "step=6.ckpt", callback, model=model)


def _given(*names: str) -> TinyModel:
    """A TinyModel whose three parameter tensors are groups given ``names``."""

    def optimizer(module: TinyModel) -> torch.optim.Optimizer:
        params = [module.body.weight, module.body.bias, *module.head.parameters()]
        return torch.optim.SGD([{"params": p, "name": n} for p, n in zip([params[0], params[1], params[2:]], names)])

    return TinyModel(optimizer=optimizer)


@pytest.mark.parametrize(
    ("then", "now", "saved_given", "match"),
    [
        # both tagged x, x-2, x-1: the checkpoint's given names tell them apart
        (
            ("x", "x", "x-1"),
            ("x", "x", "x"),
            True,
            r"group 2 of optimizer 0 was 'x-1' in the checkpoint and is 'x' now",
        ),
        # a checkpoint written before the given names were saved: x-1 is a second x's name, and there is no first
        (("body", "x-1", "head"), ("body", "x", "head"), False, r"group 1 of optimizer 0 was 'x-1' .* is 'x' now"),
    ],
)
def test_a_resume_whose_groups_were_given_other_names_is_refused_where_the_tags_would_match(
    tmp_path: Path, then: tuple[str, ...], now: tuple[str, ...], saved_given: bool, match: str
) -> None:
    """Groups given ``x``, ``x``, ``x-1`` are tagged ``x``, ``x-2``, ``x-1``, and so would groups given ``x``,
    ``x``, ``x`` be if resumed with the checkpoint's names; a group given ``x`` passed for a checkpoint's ``x-1``.
    Before, both resumes went on without a word; the same groups resume (a checkpoint with or without the given
    names)."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, filename="{step}")
    callbacks = [LRSchedule("cosine"), checkpoints]
    trainer = make_trainer(tmp_path, max_steps=3, enable_checkpointing=True, callbacks=callbacks)
    trainer.fit(_given(*then), loader())
    checkpoint = tmp_path / "ckpt" / "step=3.ckpt"
    if not saved_given:
        saved = torch.load(checkpoint, weights_only=False)
        saved["callbacks"]["LRSchedule"].pop("given", None)
        torch.save(saved, checkpoint)
    with pytest.raises(ValueError, match=match):
        resume(tmp_path / "other", checkpoint, LRSchedule("cosine"), model=_given(*now), max_steps=6)
    callback = LRSchedule("cosine")
    resume(tmp_path / "same", checkpoint, callback, model=_given(*then), max_steps=6)
    assert [g.name for g in callback._table[0]] == (["x", "x-2", "x-1"] if saved_given else list(then))


@pytest.mark.parametrize(
    ("changed", "jumps"),
    [({}, False), ({"warmup": "10 steps"}, True), ({"end": 0.5}, True), ({"peak_lrs": {"head": 0.5}}, False)],
)
def test_a_resume_under_a_changed_schedule_says_the_lr_jumps(
    tmp_path: Path, uninterrupted: Uninterrupted, changed: dict[str, Any], jumps: bool
) -> None:
    """A schedule or an argument changed since the checkpoint makes the LR jump at the resume: said once, with both
    LRs (before, applied without a word). The peaks are the checkpoint's: ``peak_lrs`` given now are not used,
    and the LR goes on as planned."""
    arguments: dict[str, Any] = {"warmup": "5 steps", "end": 0.1, **changed}
    callback = LRSchedule("cosine", **arguments)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = resume(tmp_path, uninterrupted.checkpoints / "step=6.ckpt", callback)
    said = [str(w.message) for w in caught if "the LR jumps" in str(w.message)]
    assert len(said) == int(jumps)
    if jumps:
        assert said[0].startswith("LRSchedule: resuming at step 6, group 'body' was to train at LR ")
    else:
        assert model.seen_lrs == uninterrupted.lrs[6:]


def test_a_resume_under_a_schedule_changed_further_on_says_so(tmp_path: Path) -> None:
    """The LR at the resume is the same under both plans (a milestone moved from step 10 to 12): said anyway."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1, filename="{step}")
    before = LRSchedule("multistep", milestones=["10 steps"])
    trainer = make_trainer(
        tmp_path / "before", max_steps=TOTAL, enable_checkpointing=True, callbacks=[before, checkpoints]
    )
    trainer.fit(TinyModel(), loader())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = resume(
            tmp_path / "after",
            tmp_path / "ckpt" / "step=6.ckpt",
            LRSchedule("multistep", milestones=["12 steps"]),
            accumulate_grad_batches=1,
        )
    said = [str(w.message) for w in caught if "LRSchedule: resuming" in str(w.message)]
    assert len(said) == 1 and "group 'body' has a schedule other than the checkpoint's" in said[0], said
    assert "milestones=(Steps(steps=10),)" in said[0] and "milestones=(Steps(steps=12),)" in said[0]
    assert [lrs[0] for lrs in model.seen_lrs] == pytest.approx([0.1] * 6 + [0.01] * 2)  # the new plan's drop at 12


def test_a_shorter_run_under_keep_says_the_plan_does_not_finish(tmp_path: Path, uninterrupted: Uninterrupted) -> None:
    callback = make_schedule(on_length_change="keep")
    with pytest.warns(UserWarning, match=r"now has 10; following the original plan.*so the run stops at step 10 of "
                      r"that plan, before its end: a decay does not finish"):  # fmt: skip
        resume(tmp_path, uninterrupted.checkpoints / "step=6.ckpt", callback, max_steps=10)


def test_a_shorter_max_epochs_under_keep_does_not_blame_the_training_loader(tmp_path: Path) -> None:
    """Resumed into fewer epochs under ``keep``, the run ends before its plan, as the warning at fit start said; at
    its end it was also told that its training loader had become shorter ("reloaded every epoch?"): it had not."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1, filename="{epoch}")
    trainer = make_trainer(
        tmp_path / "before", max_epochs=3, enable_checkpointing=True, callbacks=[LRSchedule("cosine"), checkpoints]
    )
    trainer.fit(TinyModel(), loader())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = make_trainer(tmp_path / "after", max_epochs=2, callbacks=[LRSchedule("cosine")])
        resumed.fit(TinyModel(), loader(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"))
    said = [str(w.message) for w in caught if str(w.message).startswith("LRSchedule")]
    assert len(said) == 1 and "now has 16; following the original plan" in said[0], said


class _Backbone(TinyModel):
    """TinyModel whose ``body`` is a backbone that BackboneFinetuning unfreezes at epoch 1."""

    @property
    def backbone(self) -> torch.nn.Module:
        return self.body

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


@pytest.mark.parametrize("schedule_first", [True, False])
def test_a_resume_after_backbone_finetuning_unfroze_goes_on_in_either_order(
    tmp_path: Path, schedule_first: bool
) -> None:
    """On resume BackboneFinetuning puts the backbone's group back in its ``on_fit_start``. Listed after the schedule,
    it did so too late: the schedule refused the checkpoint at fit start ("the checkpoint has [2] parameter groups
    per optimizer, this run has [1]"), though ``configure_optimizers`` was the same."""
    at = 12  # mid-epoch 1, after the unfreeze (step 8)
    from pytorch_lightning.callbacks import BackboneFinetuning

    def run(root: Path, ckpt: Path | None = None) -> TinyModel:
        schedule = LRSchedule("cosine", warmup="3 steps")
        finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, verbose=False)
        callbacks: list[Any] = [schedule, finetuning] if schedule_first else [finetuning, schedule]
        if ckpt is None:
            callbacks.append(ModelCheckpoint(dirpath=root, every_n_train_steps=4, save_top_k=-1, filename="{step}"))
        model = _Backbone()
        trainer = make_trainer(root, max_epochs=3, enable_checkpointing=ckpt is None, callbacks=callbacks)
        trainer.fit(model, loader(), ckpt_path=None if ckpt is None else str(ckpt))
        return model

    torch.manual_seed(0)
    whole = run(tmp_path / "whole")
    resumed = run(tmp_path / "resumed", tmp_path / "whole" / f"step={at}.ckpt")
    assert [len(lrs) for lrs in resumed.seen_lrs] == [2] * (24 - at)
    assert resumed.seen_lrs == [pytest.approx(lrs, rel=1e-12) for lrs in whole.seen_lrs[at:]]


@pytest.mark.parametrize("at", [4, 12], ids=["before-the-unfreeze", "after-it"])
def test_a_group_schedule_for_a_group_added_mid_fit_resumes_exactly(tmp_path: Path, at: int) -> None:
    """``group_schedules={"backbone": "linear"}`` for the group that NamedFinetuning adds at step 8 (before, refused at
    fit start). Resumed from step 12, the group is there at fit start (BaseFinetuning puts it back) and keeps its
    schedule and peak; from step 4 its name waits again. Either way the LRs are the uninterrupted run's, step for step,
    without a warning, and lr/backbone goes on from the step the group joined or the resume."""

    def run(root: Path, ckpt: Path | None = None) -> tuple[TinyModel, list[str]]:
        schedule = LRSchedule("cosine", group_schedules={"backbone": "linear"})
        callbacks: list[Any] = [schedule, NamedFinetuning()]
        if ckpt is None:
            callbacks.append(ModelCheckpoint(dirpath=root, every_n_train_steps=4, save_top_k=-1, filename="{step}"))
        model = _Backbone()
        trainer = make_trainer(root, max_epochs=3, enable_checkpointing=ckpt is None, callbacks=callbacks)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(model, loader(), ckpt_path=None if ckpt is None else str(ckpt))
        return model, [str(w.message) for w in caught if "LRSchedule" in str(w.message)]

    torch.manual_seed(0)
    whole, told = run(tmp_path / "whole")
    resumed, told_resumed = run(tmp_path / "resumed", tmp_path / "whole" / f"step={at}.ckpt")
    backbone = [lrs[1] / Linear()(k, total_steps=24) for k, lrs in enumerate(whole.seen_lrs) if k >= 8]
    assert backbone == pytest.approx([backbone[0]] * 16, rel=1e-12)  # its linear decay from the LR it joined at
    assert resumed.seen_lrs == [pytest.approx(lrs, rel=1e-12) for lrs in whole.seen_lrs[at:]]
    assert [step for step, _ in read_scalars(tmp_path / "resumed", "lr/backbone")] == list(range(max(at, 8), 24))
    assert told == told_resumed == []


class _Unfreezing(TinyModel):
    """Groups ``a`` (the body's weight) and ``h`` (the head's weight); the biases start frozen, and
    :class:`_Unfreeze` adds them mid-run as groups named ``a`` and then ``a-1``. ``resumed``: all four groups come from
    ``configure_optimizers``, as they must for a fit resumed after they were added."""

    def __init__(self, resumed: bool = False) -> None:
        super().__init__()
        self.resumed = resumed
        for p in (self.body.bias, self.head.bias):
            p.requires_grad_(resumed)

    def added(self) -> dict[int, tuple[torch.nn.Parameter, str]]:
        """The group added at the start of each step: its parameter and name."""
        return {2: (self.body.bias, "a"), 4: (self.head.bias, "a-1")}

    def configure_optimizers(self) -> Any:
        groups: list[dict[str, Any]] = [
            {"params": [self.body.weight], "name": "a"},
            {"params": [self.head.weight], "lr": 0.01, "name": "h"},
        ]
        if self.resumed:
            groups += [{"params": [p], "lr": 0.05, "name": name} for p, name in self.added().values()]
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)


class _Unfreeze(pl.Callback):
    """Unfreezes a bias of :class:`_Unfreezing` at the start of steps 2 and 4, in a group of its own at LR 0.05."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        assert isinstance(pl_module, _Unfreezing)
        step, optimizer = trainer.global_step, trainer.optimizers[0]
        if step in pl_module.added() and len(optimizer.param_groups) < 4:
            param, name = pl_module.added()[step]
            param.requires_grad_(True)
            optimizer.add_param_group({"params": [param], "lr": 0.05, "name": name})


def test_a_resume_after_groups_were_added_names_them_as_the_uninterrupted_run(tmp_path: Path) -> None:
    """Groups ``a``, ``h``; ``a`` and then ``a-1`` added mid-run: tagged ``a-1`` and ``a-1-1`` (each new name made
    distinct from those taken; a group being logged is never renamed). Before, the resumed fit named its four
    groups at once (``a``, ``h``, ``a-2``, ``a-1``) and refused the checkpoint ("group 2 of optimizer 0 was 'a-1' in
    the checkpoint and is 'a-2' now"); and the watchdog, naming every group afresh at every step, moved the first
    added group's update ratio from ``a-1`` to ``a-2`` once the user's ``a-1`` came, and logged that one's as ``a-1``
    (beside ``lr/a-1-1``)."""

    def run(root: Path, ckpt: Path | None = None) -> None:
        callbacks: list[Any] = [LRSchedule("cosine", warmup="3 steps"), _Unfreeze(), DivergenceWatchdog()]
        if ckpt is None:
            callbacks.append(ModelCheckpoint(dirpath=root, every_n_train_steps=6, save_top_k=-1, filename="{step}"))
        trainer = make_trainer(root, max_steps=10, enable_checkpointing=ckpt is None, callbacks=callbacks)
        trainer.fit(_Unfreezing(resumed=ckpt is not None), loader(), ckpt_path=None if ckpt is None else str(ckpt))

    def names(root: Path, prefix: str) -> set[str]:
        return {tag[len(prefix) :] for tag in read_events(root).Tags()["scalars"] if tag.startswith(prefix)}

    torch.manual_seed(0)
    run(tmp_path / "whole")
    tagged = {"a", "h", "a-1", "a-1-1"}
    assert names(tmp_path / "whole", "lr/") == names(tmp_path / "whole", "watchdog/update_ratio/") == tagged
    run(tmp_path / "resumed", tmp_path / "whole" / "step=6.ckpt")
    assert names(tmp_path / "resumed", "lr/") == names(tmp_path / "resumed", "watchdog/update_ratio/") == tagged
    for name in sorted(tagged):
        whole = read_scalars(tmp_path / "whole", f"lr/{name}")
        assert read_scalars(tmp_path / "resumed", f"lr/{name}") == [(s, lr) for s, lr in whole if s >= 6], name
        # the update of step 5, measured before the checkpoint and read after it, is the resumed run's to log
        whole = read_scalars(tmp_path / "whole", f"watchdog/update_ratio/{name}")
        assert read_scalars(tmp_path / "resumed", f"watchdog/update_ratio/{name}") == whole[-1:], name
        assert whole[-1][0] == 5
