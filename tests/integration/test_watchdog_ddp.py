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


class RankShard(torch.utils.data.Dataset):
    """The digits on rank 0; on rank 1 only the 0s and 1s (an easier task): the ranks' batches differ in level."""

    def __init__(self) -> None:
        self.x, self.y = digits_data().tensors
        easy = (self.y <= 1).nonzero().flatten()
        self.easy = easy.repeat(len(self.y) // len(easy) + 1)[: len(self.y)]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        k = int(self.easy[index]) if rank == 1 else index
        return self.x[k], self.y[k]


def test_a_resume_mid_incident_decides_as_the_uninterrupted_run_on_every_rank(tmp_path):
    """Only rank 0 writes the callbacks' state: after a resume every rank evaluated rank 0's reference batch against
    a level measured on each rank's own, read damage into a burst of bad data, rolled back three times and halted
    at step 60. Now the resumed run has no reference until its next snapshot, and decides as the uninterrupted one."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    runs = {}
    for name, resume in (("full", None), ("resumed", str(tmp_path / "full" / "ckpt" / "step=57.ckpt"))):
        root = tmp_path / name
        root.mkdir()
        watchdog = DivergenceWatchdog(warmup_steps=10, window=20, snapshot_every=10, flat_loss_steps=None)
        saver = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=57, save_top_k=-1, filename="{step}")
        trainer = make_trainer(
            root,
            max_steps=80,
            accelerator="cpu",
            devices=2,
            strategy="ddp_spawn",
            use_distributed_sampler=False,
            enable_checkpointing=True,
            callbacks=[watchdog, saver, Record(str(root), watchdog)],
        )
        pl.seed_everything(0, verbose=False)
        model = DigitsModel(faults=Faults(loss_times={k: 1000.0 for k in range(53, 62)}))
        trainer.fit(model, DataLoader(RankShard(), batch_size=32, shuffle=False), ckpt_path=resume)
        runs[name] = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert runs["resumed"] == runs["full"]
    assert all("action='rollback'" not in e and "action='halt'" not in e for e in runs["full"][0]["events"])
