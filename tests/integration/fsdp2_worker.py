"""Rank 0 of a 2-process FSDP2 run (``ModelParallelStrategy``, gloo), started by ``test_fsdp2.py``.

``python -m tests.integration.fsdp2_worker SCENARIO OUT``: Lightning's launcher starts rank 1 with the same
command; each rank writes ``OUT/rank<r>.json`` with what its callbacks did and the whole weights at the end (the
``resume`` scenario: the LR of each step, ``OUT/full<r>.json`` and ``OUT/resumed<r>.json``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import ModelParallelStrategy
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DataLoader, Sampler, TensorDataset

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule
from lr_callbacks.core.lr_model import set_lr_scale
from lr_callbacks.core.sharded import is_dtensor, local, plain
from lr_callbacks.watchdog import device
from lr_callbacks.watchdog.device import UpdateProbe
from tests.helpers import WarningsPerRank
from tests.watchdog.test_models import DigitsModel, Faults, digits_data

#: The batch each rank sees; the unsharded reference run takes twice as many in one batch (the same samples).
BATCH = 16
STEPS = 60


def data() -> TensorDataset:
    """1,792 of the digits (56 batches of 32): the 2 ranks' halves (:class:`Half`) make the reference's batches."""
    x, y = digits_data().tensors
    return TensorDataset(x[:1792], y[:1792])


class Half(Sampler[int]):
    """Rank ``r`` of 2 takes samples ``r, r + 2, ...``, in order, so that its ``k``-th batch of 16 and the other
    rank's are the reference run's ``k``-th batch of 32. (Lightning's own distributed sampler always shuffles the
    training data.)"""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size // 2

    def __iter__(self) -> Any:
        return iter(range(torch.distributed.get_rank(), self.size, 2))


class ValidatedDigits(DigitsModel):
    """The digits MLP with a validation loss, for the finder's confirm mode."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))


def val_loader() -> DataLoader:
    """The validation data: the first 256 samples, whole on every rank (no sampler)."""
    x, y = data().tensors
    return DataLoader(TensorDataset(x[:256], y[:256]), batch_size=64)


class ShardedDigits(ValidatedDigits):
    """The watchdog's digits MLP with each linear layer, and the whole net, sharded by FSDP2 over the data ranks."""

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for layer in (self.net[0], self.net[2]):
            fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)


def together_callbacks() -> list[Any]:
    """The three callbacks together (also the unsharded reference run's)."""
    return [
        LRFinder(num_steps=20, min_lr=1e-3, max_lr=10.0, confirm=[0.1, 0.3], confirm_length="4 steps"),
        LRSchedule("cosine", warmup="2 steps"),
        DivergenceWatchdog(warmup_steps=10, window=20, snapshot_every=10, patience=6, flat_loss_steps=None),
    ]


#: Faults on every rank (the unsharded run gets the same): a NaN loss, then 6 spikes in a row (a rollback).
TOGETHER_FAULTS = Faults(nan_loss=[30], loss_times={k: 1000.0 for k in range(45, 51)})
#: A fault on rank 1 only: a NaN loss, then spikes that outlast one rollback (a halt).
HALT_FAULTS = Faults(nan_loss=[15], loss_times={k: 1000.0 for k in range(25, 45)}, rank=1)


class Record(pl.Callback):
    """Writes, per rank, the LRs, the finder's result, the watchdog's events and the whole weights at the end."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.before: list[torch.Tensor] = []
        self.restored: dict[str, Any] = {}

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.before = [local(p.detach()).clone() for p in pl_module.parameters()]

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # after the finder's on_train_start (this callback comes last): its sweep left no trace on this rank
        self.restored = {
            "shards": all(torch.equal(local(p.detach()), b) for p, b in zip(pl_module.parameters(), self.before)),
            "optimizer_state": sum(len(state) for state in trainer.optimizers[0].state.values()),
            "grads": sum(p.grad is not None for p in pl_module.parameters()),
        }

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        finder = next((c for c in trainer.callbacks if isinstance(c, LRFinder)), None)
        watchdog = next(c for c in trainer.callbacks if isinstance(c, DivergenceWatchdog))
        params = dict(pl_module.named_parameters())
        record = {
            "sharded": all(is_dtensor(p) for p in params.values()),
            "finite": all(bool(torch.isfinite(local(p)).all()) for p in params.values()),
            "weights": {name: plain(p.detach()).flatten().tolist() for name, p in params.items()},
            "lrs": pl_module.seen_lrs,
            "finder": None if finder is None or finder.result is None else finder.result.to_dict(),
            "events": [[e.step, e.signal.value, e.action.value, e.value] for e in watchdog.events],
            "scale": watchdog.scale,
            "halt_reason": watchdog.halt_reason,
            "halt_path": watchdog.halt_checkpoint_path,
            "steps": trainer.global_step,
            "restored": self.restored,
            "probe": sampled_update_ratio(trainer.optimizers[0]),
        }
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def sampled_update_ratio(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The watchdog's update ratio of a made-up update (the first weight matrix × 1.1, nothing else moves) read
    on a sample of each rank's shards (``UPDATE_SAMPLE`` lowered so that these 4,810 weights are sampled), and
    the exact ratio from the whole tensors. The weights are put back as they were."""
    params = optimizer.param_groups[0]["params"]
    whole_before = [plain(p.detach()).clone() for p in params]
    kept = local(params[0].detach()).clone()
    with patch.object(device, "UPDATE_SAMPLE", 1024):
        probe = UpdateProbe()
        probe.arm(optimizer, step=0)
        copied = sum(t.numel() for t in probe._before[0]) if probe._before else 0
        with torch.no_grad():
            local(params[0].detach()).mul_(1.1)
        probe.measure(optimizer)
    ratio = probe.take()[0]
    whole_after = [plain(p.detach()) for p in params]
    step = torch.cat([(a - b).flatten() for a, b in zip(whole_after, whole_before)]).norm()
    exact = float(step / torch.cat([a.flatten() for a in whole_after]).norm())
    with torch.no_grad():
        local(params[0].detach()).copy_(kept)
    local_size = sum(local(p).numel() for p in params)
    return {
        "sampled": float(ratio[0]) if ratio is not None else None,
        "exact": exact,
        "copied": copied,
        "local": local_size,
    }


class Resumed(pl.Callback):
    """Writes, per rank, the step and the whole weights a resumed fit starts from."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        weights = {name: plain(p.detach()).flatten().tolist() for name, p in pl_module.named_parameters()}
        record = {"step": trainer.global_step, "weights": weights}
        Path(self.out, f"resumed{trainer.global_rank}.json").write_text(json.dumps(record))


class CutAt(pl.Callback):
    """Halves the LR scale at the start of optimizer step ``step``, through the watchdog's entry."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.step:
            set_lr_scale(trainer, 0.5, 1.0)


class LRs(pl.Callback):
    """Writes, per rank, the LR of each optimizer step to ``OUT/<name><rank>.json`` at the end of the fit."""

    def __init__(self, out: str, name: str) -> None:
        self.out, self.name, self.lrs = out, name, []

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self.lrs.append(float(optimizer.param_groups[0]["lr"]))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        Path(self.out, f"{self.name}{trainer.global_rank}.json").write_text(json.dumps(self.lrs))


class Settings(pl.Callback):
    """Writes, per rank, the watchdog's settings resolved against the run, as a resumed fit starts training."""

    def __init__(self, out: str, watchdog: DivergenceWatchdog) -> None:
        self.out, self.watchdog = out, watchdog

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        state = self.watchdog._policy.state
        record = {
            "step": trainer.global_step,
            "snapshot_every": state.snapshot_every,
            "recover_steps": state.recover_steps,
            "data_budget": state.data_budget,
            "can_roll_back": state.can_roll_back,
        }
        Path(self.out, f"settings{trainer.global_rank}.json").write_text(json.dumps(record))


def halt_watchdog(snapshot: str = "host") -> DivergenceWatchdog:
    # without the reference batch (which would tell that these scripted spikes are bad data, skip them and never
    # roll back): the plain ladder, so that a rollback and a halt happen on the shards
    return DivergenceWatchdog(
        warmup_steps=5,
        window=10,
        snapshot_every=5,
        patience=4,
        max_rollbacks=1,
        flat_loss_steps=None,
        reference_batch=False,
        snapshot=snapshot,
    )


def fit(out: str, callbacks: list[Any], faults: Faults, max_steps: int, ckpt_path: str | None = None) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        max_steps=max_steps,
        default_root_dir=out,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=callbacks,
    )
    model = ShardedDigits(optimizer="sgd", lr=0.1, faults=faults)
    dataset = data()
    train = DataLoader(dataset, batch_size=BATCH, sampler=Half(len(dataset)))
    trainer.fit(model, train, val_loader(), ckpt_path=ckpt_path)


def main(scenario: str, out: str) -> None:
    torch.set_num_threads(1)
    Path(out).mkdir(parents=True, exist_ok=True)
    if scenario == "together":
        fit(out, [*together_callbacks(), Record(out)], TOGETHER_FAULTS, STEPS)
    elif scenario in ("halt", "halt-disk"):
        # a checkpoint after step 26, while the incident that began at step 25 is open; the snapshots in host
        # memory, or on disk (each rank's shards in a file of its own)
        snapshot = "disk" if scenario == "halt-disk" else "host"
        during = ModelCheckpoint(dirpath=f"{out}/during", every_n_train_steps=27, save_top_k=-1)
        fit(out, [LRSchedule("cosine"), halt_watchdog(snapshot), during, Record(out)], HALT_FAULTS, STEPS)
        # then, in the same processes, a run resumed from that checkpoint, for a few steps
        resumed = [LRSchedule("cosine"), halt_watchdog(snapshot), Resumed(out)]
        fit(f"{out}/resumed", resumed, HALT_FAULTS, 30, ckpt_path=f"{out}/during/epoch=0-step=27.ckpt")
    elif scenario == "resume":
        # the strategy restores the callbacks' state after its set-up (after on_fit_start): the LR scale the
        # schedule held at the checkpoint (a watchdog's cut) holds after the resume
        keep = ModelCheckpoint(dirpath=f"{out}/ckpt", every_n_train_steps=10, save_top_k=-1)
        fit(out, [LRSchedule("cosine"), CutAt(5), keep, LRs(out, "full")], Faults(), 20)
        resumed = [LRSchedule("cosine"), LRs(out, "resumed")]
        fit(f"{out}/resumed", resumed, Faults(), 20, ckpt_path=f"{out}/ckpt/epoch=0-step=10.ckpt")
        # the watchdog's state too comes after on_fit_start: a fit resumed for a longer run with other settings
        # resolves them against its own run, as on one device; and an LRSchedule added on resume (the checkpoint has
        # no state of its own) compares its plan with the LR the checkpoint's optimizer held
        first = DivergenceWatchdog(snapshot_every=2, max_data_skips=3, recover_after="50%", flat_loss_steps=None)
        keep = ModelCheckpoint(dirpath=f"{out}/watchdog", every_n_train_steps=3, save_top_k=-1)
        fit(f"{out}/watchdog-full", [first, keep], Faults(), 6)
        second = DivergenceWatchdog(
            snapshot_every=5, max_data_skips=7, recover_after="50%", flat_loss_steps=None, snapshot="off"
        )
        callbacks = [
            LRSchedule("cosine", log_plan=False),
            second,
            Settings(out, second),
            WarningsPerRank(out, name="said"),
        ]
        fit(f"{out}/watchdog-resumed", callbacks, Faults(), 12, ckpt_path=f"{out}/watchdog/epoch=0-step=3.ckpt")
    else:
        raise SystemExit(f"unknown scenario {scenario!r}: together, halt, halt-disk or resume")
    torch.distributed.destroy_process_group()  # Lightning leaves it up; end it before the interpreter exits
    # and skip the interpreter's finalization: a worker thread of gloo (or of the distributed checkpoint's writer)
    # that outlives the group can still abort it there ("terminate called without an active exception", SIGABRT)
    # after the fit passed and every record was written; it failed CI at random (once in about ten runs)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:3])
