"""A fit the callbacks cannot serve is refused at its start, by each callback, with the fix: no optimizer, or an
optimizer whose groups have no ``lr``."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule
from tests.helpers import TinyModel, loader, make_trainer


class NoOptimizer(TinyModel):
    def configure_optimizers(self) -> None:
        return None


class StepSize(torch.optim.Optimizer):
    """An optimizer whose step is set by ``step_size``, not ``lr``."""

    def __init__(self, params: Any, step_size: float = 0.1) -> None:
        super().__init__(params, {"step_size": step_size})

    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data.add_(p.grad, alpha=-group["step_size"])


CALLBACKS = {"LRSchedule": LRSchedule, "LRFinder": LRFinder, "DivergenceWatchdog": DivergenceWatchdog}


@pytest.mark.parametrize("name", list(CALLBACKS))
def test_no_optimizer_is_refused_by_each_callback(tmp_path: Any, name: str) -> None:
    trainer = make_trainer(tmp_path, max_steps=2, callbacks=[CALLBACKS[name]()])
    with pytest.raises(ValueError, match=rf"{name} found no optimizer to drive.*return an optimizer"):
        trainer.fit(NoOptimizer(), loader())


@pytest.mark.parametrize("name", list(CALLBACKS))
def test_an_optimizer_without_an_lr_is_refused_by_each_callback(tmp_path: Any, name: str) -> None:
    trainer = make_trainer(tmp_path, max_steps=2, callbacks=[CALLBACKS[name]()])
    model = TinyModel(optimizer=lambda m: StepSize(m.parameters()))
    with pytest.raises(ValueError, match=rf"{name} reads and writes each parameter group's 'lr', but group 0 of "
                       r"StepSize has none \(its settings: \['step_size'\]\)"):  # fmt: skip
        trainer.fit(model, loader())


def test_a_finder_window_wider_than_a_decade_is_refused_at_construction() -> None:
    """``window`` is in decades of LR (the watchdog's is in steps): ``window=20`` was accepted, and a curve that falls
    cleanly read as ``diverged_at_once``."""
    with pytest.raises(ValueError, match=r"LRFinder: `window` is the smoothing width in decades of LR \(default 0.2\), "
                       r"at most 1; got 20"):  # fmt: skip
        LRFinder(window=20)
    assert LRFinder(window=1.0).window == 1.0


def test_snapshots_with_snapshot_off_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"`snapshots`=5 sizes the ring of snapshots, but snapshot='off' keeps none"):
        DivergenceWatchdog(snapshot="off", snapshots=5)


def test_finder_epochs_past_the_run_are_said_at_fit_start(tmp_path: Any) -> None:
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[LRFinder(num_steps=10, epochs=[1, 5])])
    with pytest.warns(UserWarning, match=r"LRFinder: epochs \[5\] are past the run's last epoch \(1, max_epochs=2\)"):
        trainer.fit(TinyModel(), loader())


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: DivergenceWatchdog(window=np.int64(200)),
            r"DivergenceWatchdog: `window` must be a Python int, got np.int64\(200\) \(a numpy.int64\); convert it "
            r"with int\(\.\.\.\) or \.item\(\)",
        ),
        (
            lambda: LRFinder(min_lr=np.float32(1e-6)),
            r"LRFinder: `min_lr` must be a Python int or float, got .* \(a numpy.float32\); convert it with float",
        ),
        (
            lambda: LRSchedule(peak_lrs={"head": torch.tensor(1e-3)}),
            r"`peak_lrs\['head'\]` must be a Python int or float, got tensor\(.*\) \(a torch.Tensor\); convert",
        ),
        (
            lambda: LRFinder(probe=np.bool_(True)),
            r"LRFinder: `probe` must be True or False, got np.True_ \(a numpy.bool_?\); convert it with bool",
        ),
        (lambda: LRFinder(num_steps=np.array([50, 60])), r"`num_steps` must be a whole number, got array"),
        (  # a Fraction was "must be a number", which it is
            lambda: LRFinder(min_lr=Fraction(1, 10**6)),
            r"LRFinder: `min_lr` must be a Python int or float, got Fraction\(1, 1000000\) \(a fractions.Fraction\); "
            r"convert it with float\(\.\.\.\)$",
        ),
    ],
)
def test_a_numpy_or_torch_scalar_is_refused_with_its_conversion(build: Any, match: str) -> None:
    """A numpy scalar (``np.arange``'s ``np.int64``, a ``np.float32``) or a one-element tensor is a number, but not a
    Python one: it was refused as "must be a whole number" or "must be a number", which it is, with no way out."""
    with pytest.raises(TypeError, match=match):
        build()


def test_an_int_past_floats_range_is_refused_as_not_finite() -> None:
    """``10**400`` raised float()'s bare OverflowError ("int too large to convert to float"), naming no argument."""
    with pytest.raises(ValueError, match=r"^LRFinder: `max_lr` must be finite, got 1000"):
        LRFinder(max_lr=10**400)
