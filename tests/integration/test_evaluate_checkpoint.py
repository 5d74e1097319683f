"""``trainer.validate/test(ckpt_path=...)`` loads every callback's state, as a resume does: the callbacks keep
what their fit found, and the next fit starts afresh."""

from __future__ import annotations

from pytorch_lightning.callbacks import ModelCheckpoint

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule
from tests.helpers import TinyModel, loader, make_trainer, regression_data


def spiky(step, loss):
    return loss * 1000.0 if step == 30 else loss


def test_evaluating_a_checkpoint_leaves_the_fits_results_and_the_next_fit_alone(tmp_path):
    """Before: the validation replaced the watchdog's events and the finder's results with the checkpoint's,
    cleared a halt, and ``LRSchedule`` kept the loaded clock for the next fit, which then started mid-cosine
    (clock 20 where a fresh schedule starts at 0) and ran past its end."""
    schedule, finder, watchdog = LRSchedule("cosine", warmup="10%"), LRFinder(num_steps=20), DivergenceWatchdog()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=20, save_top_k=-1)
    callbacks = [schedule, finder, watchdog, saver]
    trainer = make_trainer(tmp_path, max_steps=40, callbacks=callbacks, enable_checkpointing=True)
    trainer.fit(TinyModel(loss_hook=spiky), loader(regression_data(128), shuffle=True))
    events, results = list(watchdog.events), list(finder.results)
    assert [(e.step, e.action) for e in events] == [(30, "skip")] and results

    trainer.validate(
        TinyModel(),
        loader(regression_data(32, seed=1)),
        ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=20.ckpt"),
        verbose=False,
    )
    assert watchdog.events == events and list(finder.results) == results

    again = TinyModel()
    make_trainer(tmp_path / "again", max_steps=40, callbacks=[schedule]).fit(again, loader(regression_data(128)))
    fresh = TinyModel()
    make_trainer(tmp_path / "fresh", max_steps=40, callbacks=[LRSchedule("cosine", warmup="10%")]).fit(
        fresh, loader(regression_data(128))
    )
    assert again.seen_lrs == fresh.seen_lrs and schedule.steps == [40]
