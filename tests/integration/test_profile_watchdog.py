"""``scripts/profile_watchdog.py``: the watchdog's time per hook on the overhead benchmark's charlm task, run small."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "profile_watchdog", os.path.join(ROOT, "scripts", "profile_watchdog.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_watchdog_times_every_hook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hooks.json"
    per_step = _script().main(["--steps", "4", "--warmup", "2", "--profile", "--json", str(out)])
    hooks = ("on_train_batch_start", "on_before_backward", "on_before_optimizer_step", "on_train_batch_end")
    assert all(per_step[name] > 0 for name in hooks)
    assert per_step["total"] == pytest.approx(sum(per_step[name] for name in hooks))
    assert 0 < per_step["total cpu"] == pytest.approx(sum(per_step[f"{name} cpu"] for name in hooks))
    assert 0 < per_step["_host_step"] < per_step["on_before_optimizer_step"]
    assert json.loads(out.read_text()) == per_step
    printed = capsys.readouterr().out
    assert "snapshot takes" in printed and "tottime" in printed


def test_profile_watchdog_puts_threads_and_log_levels_back() -> None:
    import logging

    import torch

    threads, level = torch.get_num_threads(), logging.getLogger("lr_callbacks").level
    _script().main(["--threads", str(threads + 1)], run=lambda *args: ({"total": 0.0}, ""))
    assert torch.get_num_threads() == threads and logging.getLogger("lr_callbacks").level == level
