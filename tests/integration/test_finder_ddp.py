"""LRFinder under DDP (2 CPU processes, gloo): the loss is averaged across ranks, every rank gets the same
answer and applies it, and the ranks stay in step."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lr_callbacks import FinderResult, LRFinder
from tests.finder.helpers import FinderModel, sgd
from tests.helpers import FORKED_RANKS, loader, make_trainer, regression_data


class RankReport(FinderModel):
    """Writes, on each rank, what it saw: its own sweep losses, the result, the LRs and the final weights."""

    def __init__(self, out: str) -> None:
        super().__init__(dropout=0.0)
        self.out = out

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return sgd()(self)  # built here: a closure given to __init__ would not pickle into the workers

    def on_train_end(self) -> None:
        finder = next(c for c in self.trainer.callbacks if isinstance(c, LRFinder))
        report = {
            "result": finder.result.to_dict(),
            "calls": self.calls,
            "lrs": [g["lr"] for g in self.trainer.optimizers[0].param_groups],
            "weights": {n: p.detach().flatten().tolist() for n, p in self.named_parameters()},
        }
        with open(os.path.join(self.out, f"rank{self.global_rank}.json"), "w") as f:
            json.dump(report, f)


def test_ddp_ranks_average_the_loss_and_agree_on_the_answer(tmp_path):
    finder = LRFinder(num_steps=30, confirm=[0.01, 0.03], confirm_length="2 steps")
    trainer = make_trainer(
        tmp_path, accelerator="cpu", devices=2, strategy=FORKED_RANKS, max_steps=3, logger=False, callbacks=[finder]
    )
    trainer.fit(RankReport(str(tmp_path)), loader(regression_data(128), batch_size=8, shuffle=True),
                loader(regression_data(32, seed=1), batch_size=8))  # fmt: skip
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    results = [FinderResult.from_dict(r["result"]) for r in ranks]
    assert results[0] == results[1]
    result = results[0]
    n = len(result.lrs)
    assert n > 8
    local = [[loss for _, loss in r["calls"][:n]] for r in ranks]
    assert local[0] != local[1]  # each rank swept on its own half of the data ...
    assert result.losses == pytest.approx([(a + b) / 2 for a, b in zip(*local)], rel=1e-5)  # ... averaged
    assert len(result.trials) == 2 and result.chosen_lr in (0.01, 0.03)
    for report in ranks:
        assert report["lrs"] == pytest.approx([result.chosen_lr, result.chosen_lr / 10], rel=1e-12)
    assert ranks[0]["weights"] == ranks[1]["weights"]


def test_find_lr_under_ddp_spawn_says_why_it_cannot_before_any_work(tmp_path):
    """The spawned processes end with the fit, taking the result with them: refused with the fix, before the sweep
    runs twice in the workers (before, Lightning's private exit exception escaped them)."""
    from lr_callbacks import find_lr

    trainer = make_trainer(tmp_path, accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=3, logger=False)
    model = FinderModel(optimizer=sgd())
    with pytest.raises(RuntimeError, match=r"cannot bring the result back from DDPStrategy.*use strategy='ddp'"):
        find_lr(trainer, model, loader(regression_data(64), batch_size=8))
    assert model.calls == []
