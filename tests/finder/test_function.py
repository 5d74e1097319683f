"""``find_lr``: the range test outside ``fit``; the same result as the callback; nothing left behind."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from lr_callbacks import LRFinder, LRSchedule, find_lr
from tests.finder.helpers import BatchRecorder, FinderModel, assert_same, sgd, shuffled, tree
from tests.helpers import loader, make_trainer, regression_data


class WithLR(FinderModel):
    """``configure_optimizers`` reads ``self.lr`` (and the head gets a tenth of it)."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        self._optimizer = lambda module: sgd(module.lr, module.lr / 10)(module)


def test_the_same_result_as_the_callback(tmp_path):
    torch.manual_seed(0)
    by_function = find_lr(make_trainer(tmp_path / "f", logger=False), WithLR(), shuffled(), num_steps=40)
    torch.manual_seed(0)
    finder = LRFinder(num_steps=40, apply=False)
    make_trainer(tmp_path / "c", max_steps=1, logger=False, callbacks=[finder]).fit(WithLR(), shuffled())
    assert by_function == finder.result


def test_it_leaves_the_model_the_rngs_and_the_disk_as_they_were_and_the_next_fit_is_unchanged(tmp_path):
    def train(use_find_lr: bool):
        torch.manual_seed(0)
        model = WithLR()
        trainer = make_trainer(tmp_path, max_epochs=2, logger=False, callbacks=[recorder := BatchRecorder()])
        if use_find_lr:
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            rng = torch.get_rng_state()
            files = tree(tmp_path)
            result = find_lr(trainer, model, shuffled(), num_steps=30)
            assert result.suggestion is not None and trainer.global_step == 0
            assert_same(before, {n: p.detach() for n, p in model.named_parameters()})
            assert torch.equal(rng, torch.get_rng_state()) and tree(tmp_path) == files
            assert not any(isinstance(c, LRFinder) for c in trainer.callbacks)
        trainer.fit(model, shuffled())
        return recorder.seen, dict(model.named_parameters())

    seen, weights = train(True)
    seen_plain, weights_plain = train(False)
    assert seen == seen_plain and len(seen) == 16
    assert_same(weights, weights_plain)


def test_apply_sets_the_models_lr_attribute_or_hparam(tmp_path):
    model = WithLR()
    result = find_lr(make_trainer(tmp_path, logger=False), model, shuffled(), num_steps=30, apply=True)
    assert model.lr == result.chosen_lr

    class HParams(FinderModel):
        def __init__(self, learning_rate: float = 0.1) -> None:
            super().__init__(optimizer=lambda m: sgd(m.hparams.learning_rate)(m))
            self.save_hyperparameters()

    hp = HParams()
    result = find_lr(make_trainer(tmp_path, logger=False), hp, shuffled(), num_steps=30, apply=True)
    assert hp.hparams.learning_rate == result.chosen_lr

    named = WithLR()
    named.base_lr = 0.1  # the reference group's LR, under another name
    result = find_lr(
        make_trainer(tmp_path, logger=False), named, shuffled(), num_steps=30, apply=True, attr_name="base_lr"
    )
    assert named.base_lr == result.chosen_lr and named.lr == 0.1


def test_an_lr_attribute_that_drives_another_group_than_the_reference_keeps_its_ratio_to_it(tmp_path):
    """A discriminative recipe lists the backbone first at ``lr / 100`` and the head at ``lr``. The answer is the
    reference (first) group's LR; set on ``lr`` as it was, the next fit trained every group 100× below the LRs the
    sweep measured and the callback applies."""

    class HeadLR(FinderModel):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.lr = lr
            self.save_hyperparameters()
            self._optimizer = lambda module: sgd(module.lr / 100, module.lr)(module)

    torch.manual_seed(0)
    finder = LRFinder(num_steps=40)
    make_trainer(tmp_path / "c", max_steps=1, logger=False, callbacks=[finder]).fit(HeadLR(), shuffled())
    torch.manual_seed(0)
    model = HeadLR()
    result = find_lr(make_trainer(tmp_path / "f", logger=False), model, shuffled(), num_steps=40, apply=True)
    assert result == finder.result
    assert model.lr == pytest.approx(100 * result.chosen_lr, rel=1e-12)
    assert model.hparams.lr == pytest.approx(100 * result.chosen_lr, rel=1e-12)
    trainer = make_trainer(tmp_path / "t", max_steps=1, logger=False)
    trainer.fit(model, shuffled())
    lrs = [float(g["lr"]) for g in trainer.optimizers[0].param_groups]
    assert lrs == pytest.approx([result.chosen_lr, 100 * result.chosen_lr], rel=1e-12)


def test_apply_false_is_the_default_and_changes_nothing(tmp_path):
    model = WithLR()
    find_lr(make_trainer(tmp_path, logger=False), model, shuffled(), num_steps=30)
    assert model.lr == 0.1


def test_finder_arguments_reach_the_finder(tmp_path):
    result = find_lr(make_trainer(tmp_path, logger=False), WithLR(), shuffled(), num_steps=12, min_lr=1e-4, max_lr=1e-2)
    assert len(result.lrs) == 12 and result.lrs[0] == 1e-4 and result.lrs[-1] == 1e-2


def test_it_ends_the_fit_right_after_the_sweep_even_with_min_epochs(tmp_path):
    steps: list[int] = []

    class Count(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            steps.append(batch_idx)

    trainer = make_trainer(tmp_path, logger=False, min_epochs=2, callbacks=[Count()])
    find_lr(trainer, WithLR(), shuffled(), num_steps=20)
    assert steps == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": [2]}, r"find_lr runs once, before training; `epochs` is for the LRFinder callback"),
        ({"at_fit_start": False}, r"`at_fit_start` is for the LRFinder callback"),
        ({"apply": True, "attr_name": "rate"}, r"has no attribute or hparams key 'rate'; pass attr_name="),
        ({"num_steps": 3}, r"`num_steps` must be >= 8, got 3"),
        # before: Python's "attribute name must be string", "unhashable type: 'list'", and for "" the default 'lr'
        ({"apply": True, "attr_name": 3}, r"find_lr: `attr_name` must be the name of the model attribute .*, got 3;"),
        ({"apply": True, "attr_name": ["lr"]}, r"find_lr: `attr_name` must be the name .* got \['lr'\]; or leave"),
        (
            {"apply": True, "attr_name": ""},
            r"find_lr: `attr_name` must be the name .* got ''; or leave it out for 'lr'",
        ),
        ({"attr_name": "rate"}, r"attr_name='rate' names the attribute .* but apply is False .*; pass apply=True"),
        (
            {"num_step": 50},
            r"find_lr got the unknown argument 'num_step' \(did you mean 'num_steps'\?\); besides the fit's own it "
            r"takes LRFinder's: attr_name, min_lr, max_lr, num_steps, .*, probe$",
        ),
    ],
)
def test_bad_calls_are_refused_before_any_work(tmp_path, kwargs, match):
    model = WithLR()
    with pytest.raises((ValueError, TypeError), match=match):
        find_lr(make_trainer(tmp_path, logger=False), model, shuffled(), **kwargs)
    assert model.calls == []


def test_a_trainer_that_is_no_trainer_is_refused_naming_the_argument(tmp_path):
    """Before: find_lr(model, trainer, data) failed with "'WithLR' object has no attribute 'callbacks'"."""
    model, trainer = WithLR(), make_trainer(tmp_path, logger=False)
    swapped = r"^find_lr: `trainer` must be a Lightning Trainer, got a WithLR \(the model and the trainer are swapped\)"
    with pytest.raises(TypeError, match=swapped + r"; the call is find_lr\(trainer, model, train_dataloaders, ...\)$"):
        find_lr(model, trainer, shuffled())
    with pytest.raises(TypeError, match=r"`trainer` must be a Lightning Trainer, got a dict; the call is"):
        find_lr({}, model, shuffled())
    assert model.calls == [] and not any(isinstance(c, LRFinder) for c in trainer.callbacks)


def test_a_model_without_an_lr_attribute_cannot_apply(tmp_path):
    with pytest.raises(ValueError, match=r"has no attribute or hparams key 'lr' or 'learning_rate'"):
        find_lr(make_trainer(tmp_path, logger=False), FinderModel(optimizer=sgd()), shuffled(), apply=True)


def test_a_trainer_that_already_has_a_finder_is_refused(tmp_path):
    trainer = make_trainer(tmp_path, logger=False, callbacks=[LRFinder()])
    with pytest.raises(ValueError, match=r"the trainer already has an LRFinder callback; use one or the other"):
        find_lr(trainer, WithLR(), shuffled())


def test_a_datamodule_and_validation_data_reach_the_fit(tmp_path):
    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return shuffled()

        def val_dataloader(self):
            return loader(regression_data(16, seed=1), batch_size=8)

    result = find_lr(
        make_trainer(tmp_path, logger=False), WithLR(), datamodule=Data(), num_steps=30, confirm=[0.01, 0.02],
        confirm_length="2 steps",
    )  # fmt: skip
    assert [t.lr for t in result.trials] == [0.01, 0.02]
    by_loaders = find_lr(
        make_trainer(tmp_path, logger=False), WithLR(), shuffled(), loader(regression_data(16, seed=1), batch_size=8),
        num_steps=30, confirm=[0.01, 0.02], confirm_length="2 steps",
    )  # fmt: skip
    assert len(by_loaders.trials) == 2


def test_applied_peaks_keep_the_group_ratio_the_sweep_measured_as_the_callback_does(tmp_path):
    """LRSchedule's ``peak_lrs`` for a named group is absolute, read again by the next fit: find_lr scales it with
    the answer, as the callback scales the fit's peaks (before, the head kept its absolute peak while the body took
    the answer: another ratio than the one the answer was measured at)."""
    torch.manual_seed(0)
    schedule = LRSchedule("cosine", peak_lrs={"head": 0.5})  # 5× the body's 0.1 in the sweep
    trainer = make_trainer(tmp_path / "f", max_steps=4, logger=False, callbacks=[schedule])
    model = WithLR()
    result = find_lr(trainer, model, shuffled(), num_steps=40, apply=True, probe=False)
    trainer.fit(model, shuffled())
    torch.manual_seed(0)
    finder, alongside = LRFinder(num_steps=40, probe=False), LRSchedule("cosine", peak_lrs={"head": 0.5})
    make_trainer(tmp_path / "c", max_steps=4, logger=False, callbacks=[finder, alongside]).fit(WithLR(), shuffled())
    assert finder.result.chosen_lr == result.chosen_lr
    assert schedule.peak_lrs[0] == pytest.approx(alongside.peak_lrs[0], rel=1e-12)
    assert schedule.peak_lrs[0][1] == pytest.approx(5 * result.chosen_lr, rel=1e-12)


def test_a_datamodule_s_own_generator_is_as_it_was_after_find_lr(tmp_path):
    """A datamodule that seeds the loaders it builds with a generator it keeps: find_lr's fit builds them and
    draws from it, and the fit that follows must see the data order it would have seen without find_lr."""

    class Seeded(pl.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.generator = torch.Generator().manual_seed(7)

        def train_dataloader(self):
            return DataLoader(regression_data(64), batch_size=8, shuffle=True, generator=self.generator)

    data = Seeded()
    find_lr(make_trainer(tmp_path / "find", logger=False), WithLR(), datamodule=data, num_steps=30, probe=False)
    assert torch.equal(data.generator.get_state(), Seeded().generator.get_state())


@pytest.mark.parametrize("scheduler", ["one_cycle", "cyclic"])
def test_an_lr_attribute_that_is_a_schedulers_peak_becomes_the_answer(tmp_path, scheduler):
    """``lr`` is a OneCycleLR's ``max_lr`` (a CyclicLR's top), the peak the answer replaces: it becomes the answer,
    not the answer scaled by the peak's ratio to the scheduler's start (25× too high under OneCycleLR)."""

    class Scheduled(WithLR):
        def configure_optimizers(self):
            optimizer = sgd(self.lr / 25, self.lr / 250)(self)
            if scheduler == "one_cycle":
                step = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[self.lr, self.lr / 10], total_steps=50)
            else:
                step = torch.optim.lr_scheduler.CyclicLR(
                    optimizer, base_lr=[self.lr / 10, self.lr / 100], max_lr=[self.lr, self.lr / 10], step_size_up=5
                )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": step, "interval": "step"}}

    model = Scheduled()
    result = find_lr(make_trainer(tmp_path, logger=False), model, shuffled(), num_steps=30, apply=True)
    assert model.lr == result.chosen_lr


class Columns(torch.utils.data.Dataset):
    """Proxies unknown attribute names to its columns, as table-like datasets do (``KeyError`` for others)."""

    def __init__(self) -> None:
        self.columns = dict(zip(("x", "y"), regression_data(64).tensors))

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)  # what torch's DataLoader asks for (__getitems__)
        return self.__dict__["columns"][name]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        return self.x[index], self.y[index]


def test_a_dataset_that_proxies_unknown_attributes_is_swept(tmp_path):
    """Looking for the generators a dataset keeps asked it for ``.dataset`` (a ``Subset``'s), which such a dataset
    answers with a ``KeyError``: the fit died before the sweep."""
    finder = LRFinder(num_steps=20, probe=False)
    make_trainer(tmp_path, max_steps=2, logger=False, callbacks=[finder]).fit(WithLR(), DataLoader(Columns(), 8))
    assert finder.result is not None and finder.result.suggestion is not None


class Augmented(torch.utils.data.Dataset):
    """Adds noise drawn from a generator the dataset keeps (an augmentation with its own random state)."""

    def __init__(self) -> None:
        self.data = regression_data(64)
        self.noise = torch.Generator().manual_seed(3)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data[index]
        return x + 0.1 * torch.randn(x.shape, generator=self.noise), y


@pytest.mark.parametrize("subset", [False, True])
def test_a_datasets_own_generator_is_as_it_was_after_the_finder(tmp_path, subset):
    """The sweep draws augmentations from the dataset's own generator: the training after it saw other noise than
    the run with the LR set by hand (its promise: exactly that training)."""

    def train(finder: bool) -> list[float]:
        torch.manual_seed(0)
        dataset = Augmented()
        data = torch.utils.data.Subset(dataset, range(48)) if subset else dataset
        recorder = BatchRecorder()
        callbacks = [LRFinder(num_steps=20, probe=False, apply=False), recorder] if finder else [recorder]
        make_trainer(tmp_path / str(finder), max_steps=6, logger=False, callbacks=callbacks).fit(
            WithLR(), DataLoader(data, batch_size=8, shuffle=True)
        )
        return recorder.seen

    assert train(True) == train(False)


def test_no_sweep_in_this_process_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"no sweep ran in this process: the fit ended before training started") as e:
        find_lr(make_trainer(tmp_path, logger=False, limit_train_batches=0), WithLR(), shuffled())
    assert "strategy" not in str(e.value)  # one process, no launcher: not the strategy's doing


def test_find_lr_under_fast_dev_run_is_refused_before_any_work_with_the_reason(tmp_path):
    """The finder stands aside under fast_dev_run; before, find_lr ran the fit and then blamed
    limit_train_batches=0, max_steps=0 or max_epochs=0, none of which was set."""
    model = WithLR()
    with pytest.raises(ValueError, match=r"find_lr does not sweep under fast_dev_run=True, .*without fast_dev_run"):
        find_lr(make_trainer(tmp_path, logger=False, fast_dev_run=True), model, shuffled())
    assert model.calls == []


def test_find_lr_on_a_trainer_that_has_trained_says_to_use_a_new_one(tmp_path):
    """Before: the message blamed the strategy (SingleDeviceStrategy) and did not list a finished fit."""
    trainer = make_trainer(tmp_path, logger=False, max_steps=5)
    trainer.fit(WithLR(), shuffled())
    with pytest.raises(RuntimeError, match=r"this trainer has trained already \(global_step=5, max_steps=5, .*run "
                       r"find_lr with a new Trainer") as e:  # fmt: skip
        find_lr(trainer, WithLR(), shuffled())
    assert "strategy" not in str(e.value)


@pytest.mark.parametrize("apply", [True, False])
def test_find_lrs_log_line_says_whether_it_set_the_answer_on_the_model(tmp_path, caplog, apply):
    import logging

    with caplog.at_level(logging.INFO, logger="lr_callbacks"):
        result = find_lr(make_trainer(tmp_path, logger=False), WithLR(), shuffled(), num_steps=20, apply=apply)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("LRFinder: answer"))
    assert result.chosen_lr is not None
    assert line.endswith("; set on the model's 'lr'" if apply else "; not applied (find_lr's apply=False)")
