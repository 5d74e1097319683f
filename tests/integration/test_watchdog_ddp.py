"""DivergenceWatchdog under DDP (2 CPU processes, gloo): a fault on one rank only, the same decision everywhere."""

from __future__ import annotations

import hashlib
import json

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lr_callbacks import DivergenceWatchdog
from tests.helpers import FORKED_RANKS, make_trainer
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
        strategy=FORKED_RANKS,
        callbacks=[watchdog, Record(str(tmp_path), watchdog)],
    )
    pl.seed_everything(0, verbose=False)
    # no torch.Generator in the loader (ddp_spawn could not send one to its workers): DistributedSampler shuffles
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
            strategy=FORKED_RANKS,
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


class InputMean(DigitsModel):
    """A digits MLP that keeps a running mean of its inputs in a buffer (for monitoring, outside the loss); one
    sample of rank 1's batch at step 20 is NaN, which makes that rank's buffer NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(64))

    def training_step(self, batch, batch_idx):
        x, y = batch
        if torch.is_grad_enabled():
            if self.global_step == 20 and self.global_rank == 1:
                x = x.clone()
                x[0, 0] = float("nan")
            with torch.no_grad():
                self.input_mean.mul_(0.9).add_(0.1 * x.mean(0))
        return torch.nn.functional.cross_entropy(self.net(x), y)


class LittleMemoryOnRank1(pl.Callback):
    """Rank 1 reads 64 KiB of free host memory (as a node with less to spare would), rank 0 plenty."""

    def setup(self, trainer, pl_module, stage) -> None:
        import lr_callbacks.watchdog.callback as module

        if trainer.global_rank == 1:
            module.free_host_bytes = lambda: 64 * 1024


class Mode(Record):
    """Record's, the weights' digest over the parameters alone (each rank's running mean is its own inputs'), and
    the snapshot mode and whether the buffer is finite."""

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        path = f"{self.directory}/rank{trainer.global_rank}.json"
        with open(path) as handle:
            record = json.load(handle)
        digest = hashlib.sha256()
        for parameter in pl_module.parameters():
            digest.update(parameter.detach().cpu().numpy().tobytes())
        record["weights"] = digest.hexdigest()
        record["mode"] = self.watchdog.snapshot_mode
        record["buffer_finite"] = bool(torch.isfinite(pl_module.input_mean).all())
        with open(path, "w") as handle:
            json.dump(record, handle)


@pytest.mark.parametrize("snapshot", ["disk", "auto"])
def test_disk_snapshots_need_no_collective_to_be_read_and_auto_agrees_on_every_rank(tmp_path, snapshot):
    """A NaN batch on rank 1 leaves a NaN buffer there alone, which that rank alone puts back from the newest
    snapshot. Before, reading a disk snapshot waited for the other ranks at a barrier, and the job hung for good
    (rank 0 in the next step's collectives). ``snapshot="auto"`` chose per rank, from each rank's free memory:
    host on one, disk on the other, and the first rollback hung the same way; now disk on both."""
    import faulthandler

    faulthandler.dump_traceback_later(240, exit=True)  # a hang ends the test run with each thread's stack
    try:
        watchdog = DivergenceWatchdog(
            warmup_steps=5, window=10, snapshot_every=5, flat_loss_steps=None, snapshot=snapshot
        )
        callbacks = [watchdog, Mode(str(tmp_path), watchdog)] + ([LittleMemoryOnRank1()] if snapshot == "auto" else [])
        trainer = make_trainer(
            tmp_path, max_steps=30, accelerator="cpu", devices=2, strategy=FORKED_RANKS, callbacks=callbacks
        )
        pl.seed_everything(0, verbose=False)
        trainer.fit(InputMean(), DataLoader(digits_data(), batch_size=32, shuffle=False))
    finally:
        faulthandler.cancel_dump_traceback_later()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["mode"] == "disk" and ranks[0]["steps"] == 30 and ranks[0]["buffer_finite"]
    assert ranks[0]["events"][0].startswith("Incident(step=20, signal='non_finite'")
    assert not (tmp_path / "watchdog-snapshots").exists()


class Trace(Record):
    """Record's, and the LR of every update the rank made."""

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        path = f"{self.directory}/rank{trainer.global_rank}.json"
        with open(path) as handle:
            record = json.load(handle)
        record["lrs"] = pl_module.seen_lrs
        with open(path, "w") as handle:
            json.dump(record, handle)


def test_a_resume_right_after_damage_rolls_back_as_the_uninterrupted_run_on_every_rank(tmp_path):
    """An LR ×30 at step 25 damages the weights; the checkpoint after step 25 holds the clean snapshot, the live
    weights in the watchdog's state. The uninterrupted run rolls back at step 26. Resumed, every rank holds rank 0's
    reference batch, now measured again at the checkpoint's weights: the same rollback at step 26, the same LRs
    and weights. Before, the resumed run had no reference, skipped 10 batches on the damaged weights and rolled
    back at step 35, with other LRs from step 26 on."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lr_callbacks import LRSchedule

    runs = {}
    for name, resume in (("full", None), ("resumed", str(tmp_path / "full" / "ckpt" / "step=26.ckpt"))):
        root = tmp_path / name
        root.mkdir()
        watchdog = DivergenceWatchdog(warmup_steps=10, window=20, snapshot_every=10, flat_loss_steps=None)
        callbacks = [LRSchedule("cosine", warmup="10 steps"), watchdog, Trace(str(root), watchdog)]
        if resume is None:
            callbacks.append(
                ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=26, save_top_k=-1, filename="{step}")
            )
        trainer = make_trainer(
            root,
            max_steps=40,
            accelerator="cpu",
            devices=2,
            strategy=FORKED_RANKS,
            use_distributed_sampler=False,
            enable_checkpointing=resume is None,
            callbacks=callbacks,
        )
        pl.seed_everything(0, verbose=False)
        model = DigitsModel(optimizer="sgd", lr=0.1, faults=Faults(lr_times={25: 30.0}), batch_by_step=True)
        trainer.fit(model, DataLoader(digits_data(), batch_size=32, shuffle=False), ckpt_path=resume)
        runs[name] = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    full, resumed = runs["full"], runs["resumed"]
    assert full[0] == full[1] and resumed[0] == resumed[1]
    assert any("step=26, signal='damaged_weights'" in e and "action='rollback'" in e for e in full[0]["events"])
    assert resumed[0]["events"] == full[0]["events"] and resumed[0]["weights"] == full[0]["weights"]
    assert resumed[0]["lrs"] == full[0]["lrs"][26:]


class FreeMemoryForOneRing(pl.Callback):
    """This host's free memory reads 18 snapshots' worth: a quarter of it holds one rank's ring of 3, not two ranks'.
    Each rank writes the snapshot mode its watchdog chose."""

    def __init__(self, directory: str, watchdog: DivergenceWatchdog) -> None:
        self.directory, self.watchdog = directory, watchdog

    def setup(self, trainer, pl_module, stage) -> None:
        import lr_callbacks.watchdog.callback as module
        from lr_callbacks.watchdog.snapshots import state_bytes

        module.free_host_bytes = lambda: 18 * state_bytes(pl_module, trainer.optimizers[0])

    def on_train_end(self, trainer, pl_module) -> None:
        with open(f"{self.directory}/rank{trainer.global_rank}.json", "w") as handle:
            json.dump({"mode": self.watchdog.snapshot_mode}, handle)


def test_auto_counts_the_ring_of_every_rank_on_the_host(tmp_path):
    """Each DDP rank keeps its own ring in host memory: two ranks on one host hold twice one ring. Before, ``"auto"``
    held one rank's ring to a quarter of the host's free memory, and chose host memory for rings that together needed
    more than that (8 ranks on a node: 8 times as much)."""
    watchdog = DivergenceWatchdog(warmup_steps=5, window=10, snapshot_every=5, flat_loss_steps=None, snapshots=3)
    trainer = make_trainer(
        tmp_path,
        max_steps=6,
        accelerator="cpu",
        devices=2,
        strategy=FORKED_RANKS,
        callbacks=[watchdog, FreeMemoryForOneRing(str(tmp_path), watchdog)],
    )
    trainer.fit(DigitsModel(), DataLoader(digits_data(), batch_size=32))
    assert [json.loads((tmp_path / f"rank{r}.json").read_text())["mode"] for r in (0, 1)] == ["disk", "disk"]
    assert not (tmp_path / "watchdog-snapshots").exists()
