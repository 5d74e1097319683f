"""The checks this project's CPU machines cannot run, for a machine with a CUDA GPU (``scripts/gpu_check.sh``).

Each check trains a real model with the callbacks on the GPU and asserts what the CPU tests can only assume:

- ``fp16 AMP + GradScaler``: LRFinder, LRSchedule and DivergenceWatchdog under ``precision="16-mixed"``; the
  scaler is live, the finder answers, an injected inf-loss step is skipped, the weights stay finite and every
  other step used the planned LR;
- ``fp16 AMP + fused AdamW``: the same with a fused optimizer, which Lightning leaves scaled before the hooks
  (the watchdog unscales it: its gradient norms are the unscaled ones, and its skip leaves the scaler its inf
  checks);
- ``device-judged watchdog``: the default ``sync_every_n_steps`` is 8 on a GPU without a scaler, and the
  watchdog adds exactly one host read per 8 steps to a bare Trainer (counted with a ``TorchFunctionMode``); an
  inf-loss step between reads is skipped on the device (a fused AdamW, through its ``found_inf`` flag);
- ``pinned snapshots``: the watchdog's snapshot of CUDA weights lives in pinned host memory, and a snapshot
  taken, with the live state moved on right behind its asynchronous copies, restores exactly (host and disk);
- ``finder restores CUDA RNG``: a model with dropout on the GPU trains the same after the finder as with its
  LR set by hand (the sweep's dropout draws are undone), bit for bit;
- ``overhead (charlm)``: the three callbacks together against a bare Trainer, interleaved rounds, the time per
  step over the steps after the finder, the device synchronized at the window's ends only (a ratio; reported,
  not asserted).

It prints one table and exits 1 if a check failed. Without a CUDA GPU it prints one line saying it was skipped
and exits 0. ``--cpu-dry-run`` runs the same code on the CPU with the CPU's expectations (no pinned memory, the
host-read cadence forced to 8), so the tests can exercise the script itself.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: charlm, HostReads

from benchmarks.overhead import HostReads  # after the path it comes from


def _lightning() -> Any:
    import pytorch_lightning as pl

    return pl


class Net(_lightning().LightningModule):  # type: ignore[misc]
    """A small classifier on fixed random data; ``spike_at``: a step whose loss is made infinite."""

    def __init__(
        self, lr: float = 0.05, dropout: float = 0.0, spike_at: int | None = None, fused: bool = False
    ) -> None:
        super().__init__()
        self.lr, self.spike_at, self.fused = lr, spike_at, fused
        self.net = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(64, 10)
        )
        self.seen_lrs: list[float] = []
        self.seen_clocks: list[int] = []  # the optimizer's step() calls since the training's first batch
        self._steps_run = 0
        self._first: int | None = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        if self.trainer.global_step == self.spike_at:
            loss = loss * float("inf")
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the LR this step will use (LRSchedule writes it after the previous update); the finder's sweep steps
        # do not pass through the training loop, so they are not recorded
        self.seen_lrs.append(float(self.trainer.optimizers[0].param_groups[0]["lr"]))
        self._first = self._steps_run if self._first is None else self._first
        self.seen_clocks.append(self._steps_run - self._first)

    def _ran(self, *args: Any) -> None:
        self._steps_run += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, fused=self.fused or None)
        optimizer.register_step_post_hook(self._ran)
        return optimizer


def data(batches: int = 16, seed: int = 0) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batches * 32, 32, generator=generator)
    y = (x @ torch.randn(32, 10, generator=generator)).argmax(-1)  # learnable: the finder's curve descends
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))


def trainer(accelerator: str, root: str, **kwargs: Any) -> Any:
    options: dict[str, Any] = dict(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    options.update(kwargs)
    return _lightning().Trainer(**options)


def check_amp(accelerator: str, root: str, fused: bool = False) -> str:
    from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule

    finder = LRFinder(num_steps=30)
    schedule, watchdog = LRSchedule("cosine", warmup="10%", log_plan=False), DivergenceWatchdog(warmup_steps=10)
    model = Net(spike_at=40, fused=fused)
    fit = trainer(accelerator, root, max_steps=60, precision="16-mixed", callbacks=[finder, schedule, watchdog])
    fit.fit(model, data())
    scaler = getattr(fit.precision_plugin, "scaler", None)
    if accelerator == "gpu":
        assert scaler is not None, "no GradScaler under precision='16-mixed' on the GPU"
    assert finder.result is not None and finder.result.suggestion is not None, "the finder gave no answer"
    assert all(torch.isfinite(p).all() for p in model.parameters()), "non-finite weights"
    skipped = [e.step for e in watchdog.events if e.action == "skip"]
    assert 40 in skipped, f"the inf-loss step 40 was not skipped: {watchdog.events}"
    # LRSchedule's clock counts the updates the optimizer ran: a step a GradScaler skips (where a non-fused
    # optimizer's step() is not called at all) does not advance it, as in transformers' Trainer
    planned = [schedule.lr_at(clock) for clock in model.seen_clocks]
    # before the fault every step used the plan; after it the watchdog may lower the LR (its scale), never raise it
    off = [
        k
        for k, (lr, plan) in enumerate(zip(model.seen_lrs, planned))
        if not (math.isclose(lr, plan, rel_tol=1e-6) if k < 40 else lr <= plan * (1 + 1e-6))
    ]
    assert not off, f"steps whose LR is not the plan's (or above it after the fault): {off[:5]}"
    # the watchdog's gradient norms are the unscaled ones (a fused optimizer's are left scaled by Lightning: the
    # watchdog unscales them first); ×65536 at the scaler's default scale otherwise
    norm = math.exp(statistics.median(watchdog._policy.grad.values))
    assert norm < 1e3, f"the watchdog's median gradient norm is {norm:.3g}: still scaled?"
    where = f"scaler {type(scaler).__name__}" if scaler is not None else "bf16, no scaler (CPU)"
    actions = sorted({str(e.action) for e in watchdog.events})
    return (
        f"{where}; finder {finder.result.suggestion:.3g}; skipped steps {skipped}; actions {', '.join(actions)}; "
        f"median gradient norm {norm:.3g}"
    )


def check_amp_fused(accelerator: str, root: str) -> str:
    return check_amp(accelerator, root, fused=True)


def check_device_judged(accelerator: str, root: str) -> str:
    from lr_callbacks import DivergenceWatchdog

    steps = 64
    sync_every = None if accelerator == "gpu" else 8  # the GPU's own default; forced on the CPU
    counts = []
    resolved = 0
    for callbacks in ([], [DivergenceWatchdog(sync_every_n_steps=sync_every)]):
        fit = trainer(accelerator, root, max_steps=steps, callbacks=callbacks)
        with HostReads() as reads:
            fit.fit(Net(), data(batches=steps))
        counts.append(reads.count)
        if callbacks:
            resolved = callbacks[0].sync_every_n_steps
    assert resolved == 8, f"sync_every_n_steps resolved to {resolved}, not 8"
    added = counts[1] - counts[0]
    expected = steps // 8 + 1  # and one at the run's first step, which keeps its batch as the reference
    assert added == expected, f"the watchdog added {added} host reads in {steps} steps, not {expected}"
    # an inf-loss step judged between reads: skipped on the device (a fused AdamW through its found_inf flag)
    watchdog = DivergenceWatchdog(sync_every_n_steps=sync_every)
    model = Net(spike_at=42, fused=True)
    trainer(accelerator, root, max_steps=steps, callbacks=[watchdog]).fit(model, data(batches=steps))
    skipped = [(e.step, str(e.action)) for e in watchdog.events]
    assert (42, "skip") in skipped, f"the inf-loss step 42 was not skipped on the device: {skipped}"
    assert all(torch.isfinite(p).all() for p in model.parameters()), "non-finite weights after the device skip"
    return f"sync every {resolved}; {added} host reads added in {steps} steps; step 42 skipped on the device"


def check_pinned(accelerator: str, root: str) -> str:
    from lr_callbacks import DivergenceWatchdog

    watchdog = DivergenceWatchdog(snapshot="host")
    seen: list[torch.Tensor] = []

    class Look(_lightning().Callback):  # type: ignore[misc]
        def on_train_batch_end(self, *args: Any) -> None:  # the newest snapshot of the ring, while it is held
            newest = watchdog._ring.newest()
            if newest is not None:
                seen[:] = list(newest.model.values())

    trainer(accelerator, root, max_steps=20, callbacks=[watchdog, Look()]).fit(Net(), data())
    tensors = seen
    assert tensors and all(t.device.type == "cpu" for t in tensors), "the snapshot is not in host memory"
    pinned = sum(t.is_pinned() for t in tensors)
    if accelerator == "gpu":
        assert pinned == len(tensors), f"{len(tensors) - pinned} of {len(tensors)} snapshot tensors not pinned"
    # a snapshot taken (asynchronous copies into pinned memory), the live state moved on, then restored: the
    # weights and the optimizer's moments are the snapshot's exactly, in host memory and on disk
    from lr_callbacks.core.snapshot import ModelSnapshot
    from lr_callbacks.watchdog.snapshots import DiskSnapshot

    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    for snapshot in (ModelSnapshot(), DiskSnapshot(os.path.join(root, "disk"), None)):
        model = Net().to(device)
        optimizer = model.configure_optimizers()
        x, y = next(iter(data()))
        for _ in range(2):
            torch.nn.functional.cross_entropy(model.net(x.to(device)), y.to(device)).backward()
            optimizer.step()
        state = [t.detach().clone() for t in [*model.parameters(), *optimizer.state[next(model.parameters())].values()]]
        snapshot.take(model, optimizer, 2)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # on the device, queued right behind the copies
        optimizer.step()
        snapshot.restore(model, optimizer)
        after = [*model.parameters(), *optimizer.state[next(model.parameters())].values()]
        assert all(torch.equal(a, b) for a, b in zip(after, state)), f"{type(snapshot).__name__}: not restored exactly"
    return f"{pinned}/{len(tensors)} tensors pinned, on the host; host and disk snapshots restore exactly"


def check_finder_rng(accelerator: str, root: str) -> str:
    from lr_callbacks import LRFinder

    def run(with_finder: bool, lr: float) -> tuple[list[torch.Tensor], float]:
        torch.manual_seed(0)
        model = Net(lr=lr, dropout=0.3)
        finder = LRFinder(num_steps=20)
        fit = trainer(accelerator, root, max_steps=30, callbacks=[finder] if with_finder else [], deterministic=True)
        torch.manual_seed(1)
        fit.fit(model, data())
        chosen = finder.result.chosen_lr if with_finder and finder.result is not None else lr
        assert chosen is not None, "the finder gave no answer"
        return [p.detach().cpu().clone() for p in model.parameters()], float(chosen)

    weights, chosen = run(True, 0.05)
    by_hand, _ = run(False, chosen)
    assert all(torch.equal(a, b) for a, b in zip(weights, by_hand)), "training after the finder differs"
    return f"dropout on {accelerator}; the same weights after the finder (LR {chosen:.3g}) as by hand"


def check_overhead(accelerator: str, root: str, rounds: int = 3) -> str:
    from benchmarks.models import TaskModule, make_task, train_loader
    from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule

    task = make_task("charlm")
    pl = _lightning()

    def synchronize() -> None:
        if accelerator == "gpu":
            torch.cuda.synchronize()

    class Clock(pl.Callback):  # type: ignore[misc]
        """The time per step over the steps after ``ready()`` and 10 more: from the batch start of the first (listed
        first, before the callbacks' own batch-start hooks) to the end of the fit, with the device synchronized only
        at both ends (a synchronize per step would serialize the GPU and hide what the sync-free path saves)."""

        def __init__(self, ready: Callable[[], bool]) -> None:
            self.ready, self.settled, self.start, self.steps = ready, 0, None, 0
            self.per_step = math.nan

        def on_train_batch_start(self, *args: Any) -> None:
            if self.start is None and self.ready():
                self.settled += 1
                if self.settled > 10:
                    synchronize()
                    self.start = time.perf_counter()
            if self.start is not None:
                self.steps += 1

        def on_train_end(self, *args: Any) -> None:
            synchronize()
            if self.start is not None and self.steps:
                self.per_step = (time.perf_counter() - self.start) / self.steps

    ratios = []
    for _ in range(rounds):
        medians = {}
        for arm in ("bare", "all"):
            finder = LRFinder(num_steps=30)
            callbacks = [LRSchedule(task.schedule), finder, DivergenceWatchdog()] if arm == "all" else []
            clock = Clock((lambda f=finder: f.result is not None) if arm == "all" else (lambda: True))
            fit = trainer(accelerator, root, max_steps=130, callbacks=[clock, *callbacks], limit_val_batches=0)
            fit.fit(TaskModule(task, "adamw", task.default_lr["adamw"], seed=0, log_loss=False), train_loader(task, 0))
            medians[arm] = clock.per_step
        ratios.append(medians["all"] / medians["bare"])
    return f"all three / bare: median {statistics.median(ratios):.3f} (rounds {', '.join(f'{r:.3f}' for r in ratios)})"


CHECKS: list[tuple[str, Callable[[str, str], str]]] = [
    ("fp16 AMP + GradScaler", check_amp),
    ("fp16 AMP + fused AdamW", check_amp_fused),
    ("device-judged watchdog", check_device_judged),
    ("pinned snapshots", check_pinned),
    ("finder restores CUDA RNG", check_finder_rng),
    ("overhead (charlm)", check_overhead),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="run the checks on the CPU (tests the script)")
    parser.add_argument("--only", default=None, help="comma-separated check names (default: all)")
    args = parser.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_check: skipped (no CUDA GPU here: torch.cuda.is_available() is False)")
        return 0
    accelerator = "cpu" if args.cpu_dry_run else "gpu"
    chosen = [c for c in CHECKS if args.only is None or c[0] in args.only.split(",")]
    rows, failed = [], 0
    for name, check in chosen:
        with tempfile.TemporaryDirectory() as root:
            started = time.perf_counter()
            try:
                detail, status = check(accelerator, root), "ok"
            except Exception as error:  # a failed check is reported in the table, and fails the script
                detail, status = f"{type(error).__name__}: {error}"[:300], "FAILED"
                failed += 1
            rows.append((name, status, f"{time.perf_counter() - started:.0f} s", detail))
    device = torch.cuda.get_device_name(0) if accelerator == "gpu" else "CPU (dry run)"
    print(f"\ngpu_check on {device}, torch {torch.__version__}\n")
    print("| check | result | time | detail |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if failed:
        print(f"\ngpu_check: {failed} of {len(rows)} checks FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
