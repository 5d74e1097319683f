"""Each callback's ``repr`` is the call that built it, with the arguments that differ from the defaults."""

from __future__ import annotations

import pickle

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule


def test_each_callbacks_repr_is_the_call_that_built_it() -> None:
    assert repr(LRSchedule("cosine", warmup="5%", end=0.1)) == "LRSchedule('cosine', warmup='5%', end=0.1)"
    assert repr(LRSchedule()) == "LRSchedule('cosine')"
    assert repr(LRFinder(num_steps=50, confirm=True)) == "LRFinder(num_steps=50, confirm=True)"
    assert repr(DivergenceWatchdog()) == "DivergenceWatchdog()"
    watchdog = DivergenceWatchdog(snapshot_every=50, halt_checkpoint="last.ckpt")
    assert repr(watchdog) == "DivergenceWatchdog(snapshot_every=50, halt_checkpoint='last.ckpt')"
    assert repr(pickle.loads(pickle.dumps(watchdog))) == repr(watchdog)
