"""``scripts/gpu_check.sh``: skipped with one line where there is no CUDA GPU, and its checks' code runs.

The GPU itself is exercised only where one is lent (see the script); here the script's own logic is run on the
CPU with ``--cpu-dry-run`` (the CPU's expectations: no pinned memory, the host-read cadence forced to 8).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(
        ["bash", "scripts/gpu_check.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def script() -> Any:
    """``scripts/gpu_check.py`` loaded as a module, to run its code in this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "scripts", "gpu_check.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the script runs its checks")
def test_without_a_gpu_it_says_it_was_skipped_and_exits_0():
    result = run()
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "gpu_check: skipped (no CUDA GPU here: torch.cuda.is_available() is False)"


def test_its_checks_run_on_the_cpu_and_print_one_table(capsys):
    # main() in this process: the script's start through bash is run by the test above
    code = script().main(["--cpu-dry-run", "--only", "device-judged watchdog,pinned snapshots"])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-2000:] + printed.err[-2000:]
    table = [line for line in printed.out.splitlines() if line.startswith("| ")]
    assert table[0] == "| check | result | time | detail |"
    assert [row.split(" | ")[:2] for row in table[1:]] == [
        ["| device-judged watchdog", "ok"],
        ["| pinned snapshots", "ok"],
    ]
    assert "9 host reads added in 64 steps" in printed.out  # every 8, and at the first step


@pytest.mark.parametrize("fused", [False, True])
def test_the_fp16_checks_pass_under_a_real_grad_scaler_on_the_cpu(tmp_path, monkeypatch, fused):
    """The dry run's CPU precision is bf16, without a scaler; the GPU's is fp16 with one. Run ``check_amp`` under a
    CPU GradScaler, as on a GPU: a review found it would fail there (it held the LR to the plan by the trainer's
    step, while LRSchedule's clock counts the updates the optimizer ran, which a scaler's skips do not advance)."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    module = script()
    original = module.trainer

    def with_scaler(accelerator, root, **kwargs):
        kwargs.pop("precision", None)
        kwargs["plugins"] = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]
        return original(accelerator, root, **kwargs)

    monkeypatch.setattr(module, "trainer", with_scaler)
    detail = module.check_amp("cpu", str(tmp_path), fused=fused)
    assert detail.startswith("scaler GradScaler;") and "skipped steps [40]" in detail
