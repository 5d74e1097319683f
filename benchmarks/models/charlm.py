"""charlm: a small GPT trained character-level on the Python standard library's own source files.

The text is real and present on every machine with Python: the top-level ``*.py`` files of the running
interpreter's stdlib directory (``sysconfig.get_paths()["stdlib"]``). The selection and the split are
deterministic: files are ordered by the SHA-1 of their name, the first ``train_files`` are the training text
and the next ``val_files`` the validation text (whole files, so validation is text the model never saw).
The corpus therefore depends on the Python version; the reports record it.

Characters map to printable ASCII, newline and tab (97 symbols) plus one "other" symbol.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import sysconfig
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from benchmarks.models._task import Task
from lr_callbacks import preset

__all__ = ["GPT", "VOCAB", "charlm_task", "corpus_files", "encode"]

VOCAB = "\n\t" + "".join(chr(c) for c in range(32, 127))
_INDEX = {c: i for i, c in enumerate(VOCAB)}
_OTHER = len(VOCAB)


def encode(text: str) -> torch.Tensor:
    """Character ids; anything outside :data:`VOCAB` becomes the "other" id."""
    return torch.tensor([_INDEX.get(c, _OTHER) for c in text], dtype=torch.long)


def corpus_files(stdlib: str | None = None) -> list[str]:
    """The stdlib's top-level ``*.py`` files, in the fixed order of the SHA-1 of their file name."""
    root = stdlib or sysconfig.get_paths()["stdlib"]
    files = glob.glob(os.path.join(root, "*.py"))
    if not files:
        raise FileNotFoundError(f"charlm: no *.py files in the standard library directory {root!r}")
    return sorted(files, key=lambda f: hashlib.sha1(os.path.basename(f).encode()).hexdigest())


@lru_cache(maxsize=4)
def _windows(context: int, train_files: int, val_files: int, max_chars: int) -> tuple[TensorDataset, TensorDataset]:
    files = corpus_files()
    if len(files) < train_files + val_files:
        raise ValueError(f"charlm: the stdlib has {len(files)} top-level files, fewer than {train_files + val_files}")

    def text(names: list[str]) -> torch.Tensor:
        parts = []
        for name in names:
            with open(name, encoding="utf-8", errors="replace") as handle:
                parts.append(handle.read())
        return encode("\n".join(parts)[:max_chars])

    def chunks(ids: torch.Tensor) -> TensorDataset:
        n = (len(ids) - 1) // context
        x = ids[: n * context].view(n, context)
        y = ids[1 : n * context + 1].view(n, context)
        return TensorDataset(x, y)

    return chunks(text(files[:train_files])), chunks(text(files[train_files : train_files + val_files])[:64_000])


class _Block(torch.nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.ln2 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class GPT(torch.nn.Module):
    """A pre-norm decoder-only transformer over characters (learned positions, tied-free output layer)."""

    def __init__(self, context: int = 64, width: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.token = torch.nn.Embedding(len(VOCAB) + 1, width)
        self.position = torch.nn.Parameter(torch.zeros(context, width))
        self.blocks = torch.nn.Sequential(*[_Block(width, heads) for _ in range(layers)])
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, len(VOCAB) + 1)
        torch.nn.init.normal_(self.position, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.token(ids) + self.position[: ids.shape[1]]
        return self.head(self.norm(self.blocks(h)))


def sequence_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-character cross-entropy over every position (nats per character)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class _GPT(GPT):
    def __init__(self) -> None:
        super().__init__(context=64, width=64, layers=2, heads=4)


def charlm_task(steps: int = 120, batch_size: int = 16, train_files: int = 40, val_files: int = 8) -> Task:
    """A 2-layer, 64-wide GPT over 64-character windows, AdamW or SGD, warmup + cosine."""
    train, val = _windows(64, train_files, val_files, 2_000_000)
    return Task(
        name="charlm",
        build=_GPT,
        train_set=train,
        val_set=val,
        loss=sequence_cross_entropy,
        batch_size=batch_size,
        steps=steps,
        schedule=preset("cosine", warmup="10%"),
        default_lr={"sgd": 1e-3, "adamw": 1e-3},  # torch's own defaults
        grid={"sgd": (3e-4, 3.0), "adamw": (1e-4, 1.0)},
        chance_loss=math.log(len(VOCAB) + 1),
        describe=(
            f"GPT 2×64 (context 64) on {train_files} stdlib files ({len(train) * 64:,} characters; "
            f"validation {val_files} other files), batch {batch_size}, {steps} steps"
        ),
        extra={"classes": len(VOCAB) + 1},
    )
