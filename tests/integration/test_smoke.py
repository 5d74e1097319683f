"""The package imports, and LRSchedule drives a real Trainer and writes TensorBoard events."""

from __future__ import annotations

import pytest

from lr_callbacks import LRSchedule
from tests.helpers import TinyModel, loader, make_trainer, read_events, read_scalars


def test_cosine_with_warmup_drives_both_groups_and_logs_them(tmp_path):
    schedule = LRSchedule("cosine", warmup="2 steps", end=0.1)
    model = TinyModel()
    trainer = make_trainer(tmp_path, max_steps=10, callbacks=[schedule])
    trainer.fit(model, loader())
    expected = [schedule.lr_at(k, 0, 0) for k in range(10)]
    assert [lrs[0] for lrs in model.seen_lrs] == pytest.approx(expected, rel=1e-12)
    assert [lrs[1] for lrs in model.seen_lrs] == pytest.approx([lr / 10 for lr in expected], rel=1e-12)
    assert read_scalars(tmp_path, "lr/body") == [(k, pytest.approx(v, rel=1e-6)) for k, v in enumerate(expected)]
    events = read_events(tmp_path)
    assert "lr_schedule/plan" in events.Tags()["images"]
