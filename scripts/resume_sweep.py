"""Resume-exactness sweep for DivergenceWatchdog and LRSchedule: a checkpoint at every step around a fault.

For each scenario the uninterrupted run writes a checkpoint after every step of a window around its fault; a run
resumed from each of them (writing the same checkpoints after, since a checkpoint asks the watchdog for a fresh
snapshot at the next clean step) must end as the uninterrupted one: the same events (``repr``), scale, halt reason
and weights (``torch.equal``).

Run from the repository root: ``PYTHONPATH=$PWD python scripts/resume_sweep.py [scenario ...]``; ``--list`` names
the scenarios. Prints one line per checkpoint and a count per scenario.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from lr_callbacks import DivergenceWatchdog, LRSchedule
from tests.helpers import make_trainer
from tests.watchdog.test_models import DigitsModel, Faults, StepDigitsModel, index_loader


@dataclass(frozen=True)
class Scenario:
    faults: Faults
    window: range  # checkpoints after these many steps (trainer.global_step at the save)
    steps: int = 160
    optimizer: str = "sgd"
    warmup: str = "20 steps"
    watchdog: dict[str, Any] = field(default_factory=dict)


PULSE = Faults(lr_times={k: 30.0 for k in range(60, 70)})  # update ratio: rollback at 60, the cut undone at 70
LOSS = Faults(loss_times={k: 1000.0 for k in range(60, 68)})
SCENARIOS = {
    "pulse": Scenario(PULSE, range(55, 86)),
    # rollback to the start at 28 (trouble while the LR warms up)
    "pulse_warmup": Scenario(Faults(lr_times={k: 10.0 for k in range(20, 30)}), range(15, 46), warmup="40 steps"),
    "nan": Scenario(Faults(nan_loss=range(60, 65)), range(55, 86)),
    "loss1000": Scenario(LOSS, range(55, 86)),  # eight skips (gradient norm)
    # damaged weights at 129: rollback to 110, then bad data (the cut undone) and a new baseline at 130
    "labels": Scenario(Faults(label_noise=range(120, 150)), range(115, 151), steps=200),
    "pulse_sync4": Scenario(PULSE, range(55, 86), watchdog={"sync_every_n_steps": 4}),
    # rollbacks at 60, 64, 68, halt at 72
    "loss1000_sync4": Scenario(LOSS, range(55, 86), watchdog={"sync_every_n_steps": 4}),
    # the loss reads ×1000 (its gradient does not): two skips, then a new level of the data
    "reading": Scenario(Faults(reading_times={k: 1000.0 for k in range(60, 72)}), range(55, 86)),
    # rollback to 119 at 129, bad data after it
    "labels_sync4": Scenario(
        Faults(label_noise=range(120, 150)), range(115, 151), steps=200, watchdog={"sync_every_n_steps": 4}
    ),
    # clipped outliers, damaged weights: rollbacks at 61 and 63
    "loss1000_clip": Scenario(LOSS, range(55, 86), watchdog={"outlier_action": "clip"}),
    # NaN from step 125 on: skips until max_data_skips (50 of 200 steps) runs out, then a halt
    "nan_halt": Scenario(Faults(nan_from=125), range(150, 181), steps=200),
    # snapshots on disk: the checkpoint's substitute and the exported snapshot come from files
    "labels_disk": Scenario(
        Faults(label_noise=range(120, 150)), range(115, 151), steps=200, watchdog={"snapshot": "disk"}
    ),
    "pulse_disk": Scenario(PULSE, range(55, 86), watchdog={"snapshot": "disk", "sync_every_n_steps": 4}),
    "pulse_adamw": Scenario(Faults(lr_times={k: 10.0 for k in range(60, 70)}), range(55, 86), optimizer="adamw"),
}


class Saver(pl.Callback):
    """``trainer.save_checkpoint`` after every step whose count is in ``window``."""

    def __init__(self, directory: Path, window: range) -> None:
        self.directory, self.window = directory, window

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step in self.window:
            trainer.save_checkpoint(self.directory / f"step={trainer.global_step}.ckpt")


def run(
    scenario: Scenario, root: Path, ckpt_path: Path | None = None, window: range | None = None
) -> tuple[DigitsModel, DivergenceWatchdog]:
    pl.seed_everything(0, verbose=False)
    model = StepDigitsModel(scenario.optimizer, faults=scenario.faults)
    watchdog = DivergenceWatchdog(**scenario.watchdog)
    callbacks = [
        LRSchedule("cosine", warmup=scenario.warmup, log_plan=False),
        watchdog,
        Saver(root / "ckpt", scenario.window if window is None else window),
    ]
    trainer = make_trainer(root, max_steps=scenario.steps, callbacks=callbacks, logger=False)
    trainer.fit(model, index_loader(), ckpt_path=ckpt_path)
    return model, watchdog


def compare(full: tuple[DigitsModel, DivergenceWatchdog], resumed: tuple[DigitsModel, DivergenceWatchdog]) -> str:
    (full_model, full_dog), (model, dog) = full, resumed
    a, b = [repr(e) for e in full_dog.events], [repr(e) for e in dog.events]
    weights = [torch.equal(x, y) for x, y in zip(model.state_dict().values(), full_model.state_dict().values())]
    problems = []
    if a != b:
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        problems.append(f"events differ at #{i}: " + _difference(full_dog.events[i:], dog.events[i:]))
    if dog.scale != full_dog.scale:
        problems.append(f"scale {dog.scale} vs {full_dog.scale}")
    if dog.halt_reason != full_dog.halt_reason:
        problems.append(f"halt {dog.halt_reason!r} vs {full_dog.halt_reason!r}")
    if not all(weights):
        diff = max(
            float((x - y).abs().max()) for x, y in zip(model.state_dict().values(), full_model.state_dict().values())
        )
        problems.append(f"weights differ (max |Δ| {diff:.3g})")
    return "same" if not problems else "; ".join(problems)


def _difference(full: list[Any], resumed: list[Any]) -> str:
    """The fields in which the first of two lists of incidents differ (the words of the details that differ)."""
    if not full or not resumed:
        return f"full {full[0] if full else '-'!r} | resumed {resumed[0] if resumed else '-'!r}"
    x, y = full[0], resumed[0]
    parts = []
    for name in ("step", "signal", "action", "value", "rollback_to"):
        if getattr(x, name) != getattr(y, name):
            parts.append(f"{name} {getattr(x, name)!r} vs {getattr(y, name)!r}")
    if x.detail != y.detail:
        words = difflib.SequenceMatcher(a=x.detail.split(), b=y.detail.split())
        for tag, i1, i2, j1, j2 in words.get_opcodes():
            if tag != "equal":
                a, b = " ".join(x.detail.split()[i1:i2]), " ".join(y.detail.split()[j1:j2])
                parts.append(f"detail [{a[:80]}] vs [{b[:80]}]")
    return f"step {x.step} {x.signal} {x.action}: " + "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="names (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument(
        "--single",
        action="store_true",
        help="one uninterrupted run per checkpoint step, writing that checkpoint alone (the default: one run writing "
        "them all, and resumed runs writing those after theirs)",
    )
    parser.add_argument("--steps", type=str, default="", help="only these checkpoint steps, e.g. 60,61")
    args = parser.parse_args()
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lr_callbacks").setLevel(logging.CRITICAL)
    only = {int(s) for s in args.steps.split(",") if s}
    bad = 0
    for name in args.scenarios or list(SCENARIOS):
        scenario = SCENARIOS[name]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            start = time.time()
            full = run(scenario, root / "full", window=range(0) if args.single else None)
            print(f"## {name}: {len(full[1].events)} events, scale {full[1].scale}, {time.time() - start:.1f}s")
            for e in full[1].events:
                print(f"   {e.step} {e.signal} {e.action} -> {e.rollback_to} | {e.detail[:110]}")
            counts: dict[str, int] = {}
            for k in scenario.window:
                if only and k not in only:
                    continue
                if not args.single and not (root / "full" / "ckpt" / f"step={k}.ckpt").exists():
                    counts["past the end"] = counts.get("past the end", 0) + 1
                    continue  # the run ended (a halt) before this step
                if args.single:
                    one = range(k, k + 1)
                    full = run(scenario, root / f"f{k}", window=one)
                    if not (root / f"f{k}" / "ckpt" / f"step={k}.ckpt").exists():
                        counts["past the end"] = counts.get("past the end", 0) + 1
                        continue
                    outcome = compare(
                        full, run(scenario, root / f"r{k}", root / f"f{k}" / "ckpt" / f"step={k}.ckpt", one)
                    )
                else:
                    outcome = compare(full, run(scenario, root / f"r{k}", root / "full" / "ckpt" / f"step={k}.ckpt"))
                counts["same" if outcome == "same" else "differs"] = (
                    counts.get("same" if outcome == "same" else "differs", 0) + 1
                )
                print(f"{name} ckpt@{k}: {outcome}", flush=True)
            bad += counts.get("differs", 0)
            print(f"## {name}: {counts} ({time.time() - start:.0f}s)", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
