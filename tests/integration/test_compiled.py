"""The three callbacks on a module that compiles its network with ``torch.compile``: its parameters are the
network's own (``_orig_mod``), so the finder's restore and the watchdog's snapshots work on them as on the
uncompiled module, and a run decides as the uncompiled one does."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule
from tests.helpers import make_trainer
from tests.watchdog.test_models import DigitsModel, Faults, digits_loader


class CompiledDigits(DigitsModel):
    """DigitsModel whose MLP is compiled in ``configure_model`` (``aot_eager``: traced by Dynamo and AOTAutograd
    without a C++ compiler; the inductor backend gave the same run here, 30 s slower)."""

    def configure_model(self) -> None:
        self.net = torch.compile(self.net, backend="aot_eager")


def _run(tmp_path, model_type):
    pl.seed_everything(0, verbose=False)
    model = model_type("adamw", lr=1e-2, faults=Faults(lr_times={k: 30.0 for k in range(100, 110)}))
    finder, watchdog = LRFinder(), DivergenceWatchdog()
    callbacks = [finder, LRSchedule("cosine", warmup="5%", log_plan=False), watchdog]
    make_trainer(tmp_path, max_steps=160, callbacks=callbacks, logger=False).fit(model, digits_loader(0))
    return model, finder, watchdog


def test_a_compiled_module_finds_the_same_lr_and_rolls_back_as_the_uncompiled_one(tmp_path):
    plain_model, plain_finder, plain = _run(tmp_path / "plain", DigitsModel)
    model, finder, watchdog = _run(tmp_path / "compiled", CompiledDigits)
    assert isinstance(model.net, torch._dynamo.eval_frame.OptimizedModule)
    assert finder.result is not None and plain_finder.result is not None
    assert finder.result.suggestion == plain_finder.result.suggestion
    # the LR pulse ×30 from step 100: its updates undone, the cut given back once it passed
    assert [(e.step, e.action) for e in watchdog.events] == [(e.step, e.action) for e in plain.events]
    assert any(e.action == "rollback" and e.step >= 100 for e in watchdog.events)
    compiled_weights = model.net._orig_mod.state_dict()
    for name, value in plain_model.net.state_dict().items():
        torch.testing.assert_close(compiled_weights[name], value)
