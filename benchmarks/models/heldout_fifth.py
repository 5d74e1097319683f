"""The fifth set of held-out pairs: fixed at stop 37, once the four earlier sets had all been read, before any rule of
the finder changed in response and before its first run, and never used to set a constant or a rule.

Every rule written since stop 31 was written with the first four sets' results in view
(:mod:`benchmarks.models.heldout` to :mod:`benchmarks.models.heldout_fourth`), so none of them measures it any
more. These three pairs do; each differs from every earlier pair in model, optimizer and schedule:

- ``docstrings-transformer`` with **Adam** under a **periodic step decay** (×0.3 every 100 steps, no warmup; the
  only earlier step decay, the third set's ResNet, is SGD's two drops at 50% and 75%): the docstring task (which of
  six stdlib packages, the name masked) read as its first 64 characters by a **character transformer** (embedding
  32 + learned positions, 2 pre-norm encoder layers of 4 heads with a 64-wide feed-forward, a final LayerNorm, the
  mean over positions, a linear layer to the 6 classes); the earlier transformers read digit patches, the cancer
  features, or MiniLM's tokens;
- ``digits-deepmlp`` with **ASGD** (torch's averaged SGD at its defaults), under a **constant LR after a 10%
  warmup** (the LSTM's constant LR has none): the 8×8 digits through a **deep tanh MLP** (64 → 8 hidden layers of
  64, tanh, Glorot's init for tanh, no normalization → 10), the deepest plain network and the first MLP with a
  saturating activation;
- ``charlm-conv`` with **AMSGrad** (Adam with ``amsgrad=True``) under **cosine without warmup** (every earlier
  cosine had one): a **causal dilated character CNN** language model over charlm's text in 32-character windows
  (embedding 32 → 4 causal convolutions of 64 channels, kernel 3, dilations 1, 2, 4, 8, padded on the left only,
  ReLU, a residual add from the second on → the next character's logits at every position); the earlier language
  models are a GPT and a GRU.

Nothing is downloaded: the data ship inside scikit-learn and the Python standard library.
"""

from __future__ import annotations

import math

import torch

from benchmarks.models._task import Task
from lr_callbacks import preset

__all__ = ["HELD_OUT_FIFTH_TASKS", "CausalCharCNN", "CharTransformer", "DeepTanhMLP", "fifth_task"]

HELD_OUT_FIFTH_TASKS = ("docstrings-transformer", "digits-deepmlp", "charlm-conv")

DOC_CHARS = 64
"""How many characters of a docstring the transformer reads."""


class CharTransformer(torch.nn.Module):
    """Characters → embedding (32) + learned positions → 2 pre-norm encoder layers → LayerNorm → mean → 6 classes."""

    def __init__(
        self, vocab: int, context: int = DOC_CHARS, width: int = 32, layers: int = 2, heads: int = 4, classes: int = 6
    ) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.position = torch.nn.Parameter(torch.zeros(context, width))
        torch.nn.init.normal_(self.position, std=0.02)
        layer = torch.nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(ids) + self.position[: ids.shape[1]])
        return self.head(self.norm(h).mean(1))


class DeepTanhMLP(torch.nn.Sequential):
    """64 → 8 hidden layers of 64, tanh, no normalization → 10; Glorot-uniform weights with tanh's gain (5/3), zero
    biases.

    torch's default init (variance 1/(3·fan_in)) shrinks the signal about √3 at every layer, so after eight the
    output and the gradients nearly vanish: with ASGD at torch's default LR (1e-2) the loss stays at chance for the
    whole 300 steps (2.306 against log 10 = 2.303, seed 0). Glorot's init for tanh, the standard for such a network,
    keeps the signal's scale through depth (1e-2 then ends at 0.30).
    """

    def __init__(self, hidden: int = 64, depth: int = 8) -> None:
        layers: list[torch.nn.Module] = []
        for i in range(depth):
            layers += [torch.nn.Linear(64 if i == 0 else hidden, hidden), torch.nn.Tanh()]
        super().__init__(*layers, torch.nn.Linear(hidden, 10))
        for layer in self:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(layer.weight, gain=torch.nn.init.calculate_gain("tanh"))
                torch.nn.init.zeros_(layer.bias)


class CausalCharCNN(torch.nn.Module):
    """Characters → embedding (32) → 4 causal convolutions (64 channels, kernel 3, dilations 1, 2, 4, 8; ReLU; a
    residual add from the second on) → next-character logits at every position.

    Each convolution is padded on the left only, so position ``t`` sees characters ``t − 30 … t`` and nothing after.
    """

    def __init__(self, vocab: int, width: int = 32, channels: int = 64, dilations: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.dilations = dilations
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv1d(width if i == 0 else channels, channels, 3, dilation=d) for i, d in enumerate(dilations)
        )
        self.head = torch.nn.Linear(channels, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids).transpose(1, 2)
        for i, (conv, d) in enumerate(zip(self.convs, self.dilations)):
            out = torch.relu(conv(torch.nn.functional.pad(h, (2 * d, 0))))
            h = out if i == 0 else h + out
        return self.head(h.transpose(1, 2))


def fifth_task(name: str, steps: int = 300, batch_size: int = 32) -> Task:
    """One pair of the fifth held-out set by name (see :data:`HELD_OUT_FIFTH_TASKS`), trained ``steps`` steps."""
    held = {"held_out": True, "held_out_set": 5}
    if name == "docstrings-transformer":
        from benchmarks.models.charlm import VOCAB
        from benchmarks.models.heldout_fourth import docstring_chars

        train, val = docstring_chars(DOC_CHARS)
        return Task(
            name=name,
            build=lambda: CharTransformer(len(VOCAB) + 1),
            train_set=train,
            val_set=val,
            loss=torch.nn.functional.cross_entropy,
            batch_size=batch_size,
            steps=steps,
            schedule=preset("step", every="100 steps", gamma=0.3),
            default_lr={"adam": 1e-3},  # torch's default
            grid={"adam": (1e-5, 0.3)},
            optimizers=("adam",),
            chance_loss=math.log(6),
            describe=f"stdlib docstrings of 6 packages ({len(train)} / {len(val)}), first {DOC_CHARS} characters, "
            f"character transformer (2×32, 4 heads), batch {batch_size}, {steps} steps, ×0.3 every 100 steps",
            extra={**held, "classes": 6},
        )
    if name == "digits-deepmlp":
        from benchmarks.models.digits import digits_data

        train, val = digits_data()
        return Task(
            name=name,
            build=DeepTanhMLP,
            train_set=train,
            val_set=val,
            loss=torch.nn.functional.cross_entropy,
            batch_size=batch_size,
            steps=steps,
            schedule=preset("constant", warmup="10%"),
            default_lr={"asgd": 1e-2},  # torch's default
            grid={"asgd": (1e-4, 30.0)},
            optimizers=("asgd",),
            chance_loss=math.log(10),
            describe=f"sklearn digits 8×8, MLP 64-(64×8, tanh, Glorot init)-10, batch {batch_size}, {steps} steps, "
            "10% warmup + constant",
            extra={**held, "classes": 10},
        )
    if name == "charlm-conv":
        from benchmarks.models.charlm import VOCAB, _windows, sequence_cross_entropy

        train, val = _windows(32, 40, 8, 2_000_000)
        vocab = len(VOCAB) + 1
        return Task(
            name=name,
            build=lambda: CausalCharCNN(vocab),
            train_set=train,
            val_set=val,
            loss=sequence_cross_entropy,
            batch_size=16,
            steps=steps,
            schedule=preset("cosine"),
            default_lr={"amsgrad": 1e-3},  # torch's default for Adam
            grid={"amsgrad": (1e-5, 1.0)},
            optimizers=("amsgrad",),
            chance_loss=math.log(vocab),
            describe=f"causal dilated CNN character LM (4×64, kernel 3, dilations 1-8; context 32) on 40 stdlib files "
            f"({len(train) * 32:,} characters; validation 8 other files), batch 16, {steps} steps, cosine",
            extra={**held, "classes": vocab},
        )
    raise ValueError(f"fifth held-out task must be one of {', '.join(HELD_OUT_FIFTH_TASKS)}; got {name!r}")
