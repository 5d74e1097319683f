"""DivergenceWatchdog under DDP (2 CPU processes, gloo): a fault on one rank only, the same decision everywhere."""

from __future__ import annotations

import hashlib
import json

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lr_callbacks import DivergenceWatchdog
from tests.helpers import make_trainer
from tests.watchdog.test_models import DigitsModel, Faults, digits_data


class Record(pl.Callback):
    """Each rank writes what its watchdog did and a digest of its final weights."""

    def __init__(self, directory: str, watchdog: DivergenceWatchdog) -> None:
        self.directory, self.watchdog = directory, watchdog

    def on_train_end(self, trainer, pl_module) -> None:
        digest = hashlib.sha256()
        for tensor in pl_module.state_dict().values():
            digest.update(tensor.detach().cpu().numpy().tobytes())
        record = {
            "events": [repr(e) for e in self.watchdog.events],
            "scale": self.watchdog.scale,
            "weights": digest.hexdigest(),
            "finite": all(bool(torch.isfinite(p).all()) for p in pl_module.parameters()),
            "steps": trainer.global_step,
        }
        with open(f"{self.directory}/rank{trainer.global_rank}.json", "w") as handle:
            json.dump(record, handle)


def test_a_fault_on_one_rank_gets_the_same_answer_on_every_rank(tmp_path):
    # rank 1: a NaN loss at step 30, then 6 steps of ×1000 from step 45; rank 0 stays clean. The clean reference
    # batches (one per rank, their losses averaged by one all-reduce) show sound weights: bad data, skipped
    faults = Faults(nan_loss=[30], loss_times={k: 1000.0 for k in range(45, 51)}, rank=1)
    watchdog = DivergenceWatchdog(warmup_steps=10, window=20, snapshot_every=10, patience=6, flat_loss_steps=None)
    trainer = make_trainer(
        tmp_path,
        max_steps=60,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        callbacks=[watchdog, Record(str(tmp_path), watchdog)],
    )
    pl.seed_everything(0, verbose=False)
    # no torch.Generator in the loader: ddp_spawn cannot send one to the workers; DistributedSampler shuffles
    trainer.fit(DigitsModel(faults=faults), DataLoader(digits_data(), batch_size=32, shuffle=True))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # same incidents, same scale, same weights, bit for bit
    events = ranks[0]["events"]
    assert events[0].startswith("Incident(step=30, signal='non_finite'") and "action='skip'" in events[0]
    assert {e.split("step=")[1].split(",")[0] for e in events} == {"30", "45", "46", "47", "48", "49", "50"}
    assert all("action='skip'" in e for e in events)
    assert ranks[0]["finite"] and ranks[0]["steps"] == 60 and ranks[0]["scale"] == 1.0
