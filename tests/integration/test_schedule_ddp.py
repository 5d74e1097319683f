"""LRSchedule under DDP: 2 CPU processes (gloo, ``ddp_spawn``) use the same LR at every step, the plan's LR.

Each rank records the LR its optimizer uses at every step and writes it to a file of its own; the test
compares the ranks with each other, with the schedule evaluated by hand, and with a single-process run of
the same length, and reads rank 0's TensorBoard events back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from lr_callbacks import LRSchedule, Run
from tests.helpers import (
    FORKED_RANKS,
    TinyModel,
    WarningsPerRank,
    loader,
    make_trainer,
    read_scalars,
    regression_data,
    stream,
)


class RecordPerRank(pl.Callback):
    """Writes, per rank, the LR of every group at every optimizer step, and the schedule's clock."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.lrs: list[list[float]] = []

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: torch.optim.Optimizer) -> None:
        self.lrs.append([float(g["lr"]) for g in optimizer.param_groups])

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        schedule = next(c for c in trainer.callbacks if isinstance(c, LRSchedule))
        record = {
            "lrs": self.lrs,
            "steps": schedule.steps,
            "run": [schedule.run.total_steps, schedule.run.steps_per_epoch],
            "world_size": trainer.world_size,
        }
        Path(self.directory, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def make_schedule() -> LRSchedule:
    return LRSchedule("cosine", warmup="1 epochs", end=0.1)


def test_every_rank_uses_the_same_lr_at_every_step_and_it_is_the_plan(tmp_path: Path) -> None:
    # 128 samples, 2 ranks, batch 8: 8 batches per rank per epoch; accumulated by 2, 4 optimizer steps per epoch.
    trainer = make_trainer(
        tmp_path,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=3,
        accumulate_grad_batches=2,
        callbacks=[make_schedule(), RecordPerRank(str(tmp_path))],
    )
    trainer.fit(TinyModel(), loader(regression_data(n=128)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["lrs"] == ranks[1]["lrs"]  # identical floats on both ranks
    assert [r["steps"] for r in ranks] == [[12], [12]] and [r["run"] for r in ranks] == [[12, 4], [12, 4]]

    schedule, run = make_schedule().schedule, Run(total_steps=12, steps_per_epoch=4)
    plan = [[0.1 * schedule.multiplier(k, run), 0.01 * schedule.multiplier(k, run)] for k in range(12)]
    assert ranks[0]["lrs"] == [pytest.approx(row, rel=1e-12) for row in plan]
    assert [lr for lr, _ in ranks[0]["lrs"][:5]] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])

    # The same run in one process (64 samples: the same 8 batches per epoch) takes exactly the same LRs.
    single = TinyModel()
    make_trainer(tmp_path / "single", max_epochs=3, accumulate_grad_batches=2, callbacks=[make_schedule()]).fit(
        single, loader()
    )
    assert single.seen_lrs == ranks[0]["lrs"]

    logged = read_scalars(tmp_path / "tb", "lr/body")  # rank 0 logs; the single run logs under single/
    assert [step for step, _ in logged] == list(range(12))
    assert [value for _, value in logged] == pytest.approx([row[0] for row in plan], rel=1e-6)


def test_a_warning_about_the_whole_run_is_said_once_not_once_per_rank(tmp_path: Path) -> None:
    """An iterable dataset of 4 batches under limit_train_batches=10 and max_epochs=3: the plan's 30 steps end
    after 12. Before, each of the 2 ranks said so (N copies on N devices); now rank 0 alone, as the finder and the
    watchdog say theirs."""
    trainer = make_trainer(
        tmp_path,
        accelerator="cpu",
        devices=2,
        strategy=FORKED_RANKS,
        max_epochs=3,
        limit_train_batches=10,
        callbacks=[LRSchedule("cosine", log_plan=False), WarningsPerRank(str(tmp_path))],
    )
    trainer.fit(TinyModel(), stream(4))
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(said[0]) == 1 and "the first epoch ran 4 batches" in said[0][0], said
    assert said[1] == []
