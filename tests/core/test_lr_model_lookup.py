"""The LR model's callback look-ups: the protocol checks are made once per class of callback (they ran at every
look-up, 5-18 µs per callback and protocol on Python 3.11, every ``update_every`` steps under the watchdog)."""

from __future__ import annotations

import builtins
from types import SimpleNamespace
from typing import Any

import pytest

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule
from lr_callbacks.core import lr_model


def test_schedule_lookup_checks_each_class_once(monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[tuple[type, Any]] = []

    def counting(value: Any, kinds: Any) -> bool:
        if kinds is lr_model.ScheduleOwner:
            checks.append((type(value), kinds))
        return builtins.isinstance(value, kinds)

    monkeypatch.setattr(lr_model, "isinstance", counting, raising=False)
    monkeypatch.setattr(lr_model, "_CONFORMING", {})
    schedule = LRSchedule("cosine")
    trainer = SimpleNamespace(callbacks=[DivergenceWatchdog(), schedule, LRFinder()])
    for _ in range(3):
        assert lr_model.schedule_callback(trainer) is schedule
    assert sorted(kind.__name__ for kind, _ in checks) == ["DivergenceWatchdog", "LRFinder", "LRSchedule"]


def test_lookups_answer_as_isinstance() -> None:
    schedule, watchdog, finder = LRSchedule("cosine"), DivergenceWatchdog(), LRFinder()
    for callback in (schedule, watchdog, finder, object()):
        for protocol in (lr_model.ScheduleOwner, lr_model.LRScaler, lr_model.Pausable):
            assert lr_model._conforms(callback, protocol) is isinstance(callback, protocol)
    assert lr_model.lr_scale(SimpleNamespace(callbacks=[schedule, watchdog])) == 1.0
