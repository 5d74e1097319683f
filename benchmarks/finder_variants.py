"""Benchmark 2b: the finder on one pair under three variants of its run (issue 12): the budget ×1 and ×5, the
finder started mid-training, and gradient clipping on.

Each variant is a :class:`~benchmarks.models.Task` of its own, so its fingerprint keeps its runs apart in the
run cache that :mod:`benchmarks.finder_quality` uses, and each gets its own ground truth by that benchmark's
machinery (:func:`~benchmarks.finder_quality._ground_truth`, :func:`~benchmarks.finder_quality._evaluate`): a grid
of peak LRs trained to the end *under the variant*, then each finder on several seeds, its suggestion trained the
same way and scored by the same normalized regret.

- **budget ×1**: the pair as the finder benchmark runs it (its grid comes from the shared cache).
- **budget ×k**: the same pair trained ``k`` times longer, the same schedule shape stretched over the run.
- **mid-training**: a run of the pair at the ×1 grid's best LR, stopped after ``resume_at`` of its budget (seed
  0); its model and optimizer state (a :class:`~benchmarks.models.Start`) is where every run of this variant
  starts: the grid trains the remaining steps from it under a fresh schedule over them, at each peak LR, and the
  finders run on a ``TaskModule`` that loaded it, in a ``Trainer`` of the remaining steps, as a user resuming
  from saved weights would.
- **clipping**: the pair with ``gradient_clip_val`` (the global L2 norm) in the finders' ``Trainer``, in the
  grid's runs and in the suggestions' runs.

Only the finders that run through a ``Trainer`` can honour a start state and clipping (ours and Lightning's; see
:mod:`benchmarks.finders`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from benchmarks._common import Context, _commit, fmt, log, markdown_table, median, quiet, stamp, write_json
from benchmarks.finder_quality import RunCache, Scale, _aggregate, _evaluate, _ground_truth
from benchmarks.finders import run_finder
from benchmarks.models import Start, Task, make_task, train

__all__ = ["FULL", "QUICK", "VariantScale", "midway", "run", "variants"]


@dataclass(frozen=True)
class VariantScale:
    """How much to run, and on which pair.

    Attributes:
        task, optimizer: the pair.
        steps: its budget ×1, in optimizer steps.
        multiple: the long budget, as a multiple of ``steps``.
        resume_at: the fraction of ``steps`` trained before the mid-training variant starts.
        clip: the gradient clipping variant's ``gradient_clip_val``.
        seeds: ground-truth seeds per grid LR (``long_seeds`` for the long budget).
        finder_seeds: seeds of every finder.
        grid_step: grid spacing in powers of two.
        finders: the finders run on every variant.
    """

    task: str
    optimizer: str
    steps: int
    multiple: int
    resume_at: float
    clip: float
    seeds: int
    long_seeds: int
    finder_seeds: int
    grid_step: float
    finders: tuple[str, ...]


FULL = VariantScale(
    task="digits-cnn",
    optimizer="sgd",
    steps=300,
    multiple=5,
    resume_at=0.4,
    clip=1.0,
    seeds=3,
    long_seeds=3,
    finder_seeds=5,
    grid_step=0.5,
    finders=("lr_callbacks", "lr_callbacks.confirm", "lightning"),
)
QUICK = VariantScale(
    task="digits-mlp",
    optimizer="sgd",
    steps=40,
    multiple=5,
    resume_at=0.4,
    clip=1.0,
    seeds=1,
    long_seeds=1,
    finder_seeds=1,
    grid_step=2.0,
    finders=("lr_callbacks",),
)


def midway(task: Task, optimizer: str, lr: float, fraction: float, seed: int = 0) -> tuple[Start, dict[str, Any]]:
    """The state of ``task``'s run at peak LR ``lr`` stopped after ``fraction`` of its budget, and what it was.

    The run is :func:`~benchmarks.models.train`'s, cut short (its schedule still spans the whole budget), so the
    state is the one a full run has at that step: the model's weights and the optimizer's buffers.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"resume_at must lie strictly between 0 and 1 (a fraction of the budget); got {fraction}")
    stop = round(fraction * task.steps)
    result, model = train(task, optimizer, lr, seed, stop=stop)
    if result.diverged or result.optimizer_state is None:
        raise RuntimeError(f"the run to resume from diverged: {task.name}/{optimizer} at {lr:.3g}, seed {seed}")
    describe = (
        f"{task.name}/{optimizer} at peak LR {lr:.6e}, seed {seed}, stopped after {stop} of its {task.steps} steps "
        f"(task {task.fingerprint()})"
    )
    start = Start(optimizer, {k: v.clone() for k, v in model.state_dict().items()}, result.optimizer_state, describe)
    record = {"stop": stop, "lr": lr, "seed": seed, "val_loss": result.loss, "accuracy": result.accuracy}
    return start, record


def variants(scale: VariantScale, base: Task, start: Start, stop: int) -> dict[str, Task]:
    """The four tasks: the pair at its budget, at ``multiple`` times it, from ``start`` for what remains after
    ``stop`` steps, and with gradient clipping."""
    rest = make_task(scale.task, scale.steps - stop)
    return {
        "budget x1": base,
        f"budget x{scale.multiple}": make_task(scale.task, scale.steps * scale.multiple),
        "mid-training": replace(
            rest,
            start=start,
            optimizers=(scale.optimizer,),
            describe=f"{rest.describe}, resumed from {start.describe}",
        ),
        "clipping": replace(
            base,
            gradient_clip_val=scale.clip,
            describe=f"{base.describe}, gradient norm clipped to {scale.clip:g}",
        ),
    }


def _grid_scale(scale: VariantScale, seeds: int) -> Scale:
    """The finder benchmark's :class:`Scale` that :func:`_ground_truth` reads (its seeds and grid step)."""
    return Scale(tasks={}, seeds=seeds, finder_seeds=scale.finder_seeds, grid_step=scale.grid_step)


def _variant(cache: RunCache, scale: VariantScale, name: str, task: Task, seeds: int, root: str) -> dict[str, Any]:
    """One variant: its grid, then every finder on every seed, each suggestion trained as the grid was."""
    optimizer = scale.optimizer
    log(f"finder_variants: ground truth {name} ({task.steps} steps, {seeds} seeds)")
    truth = _ground_truth(cache, task, optimizer, _grid_scale(scale, seeds))
    entries = []
    for seed in range(scale.finder_seeds):
        for finder in scale.finders:
            log(f"finder_variants: {name} seed {seed} {finder}")
            for suggestion in run_finder(finder, task, optimizer, seed, os.path.join(root, finder)):
                if suggestion.finder not in scale.finders:
                    continue  # lr_callbacks' re-analyses of the same sweep: not part of this benchmark
                entry = _evaluate(cache, task, optimizer, truth, suggestion, seed)
                entry["first_sweep_loss"] = suggestion.losses[0] if suggestion.losses else None
                entry["sweep"] = {"lrs": suggestion.lrs, "losses": suggestion.losses}
                entries.append(entry)
    cache.save()
    return {"task": task.describe, "steps": task.steps, "truth": truth, "suggestions": entries}


def run(ctx: Context) -> dict[str, Any]:
    """Run the variants; write ``finder_variants.md``/``.json`` and a plot; return the summary part."""
    scale = QUICK if ctx.quick else FULL
    if ctx.seeds is not None:
        scale = replace(scale, finder_seeds=ctx.seeds)
    started = time.perf_counter()
    commit = _commit()  # the code that runs, whatever changes after it started
    cache = RunCache(ctx.path("cache", "runs.json"))
    results: dict[str, Any] = {}
    try:
        with ctx.scratch() as root, quiet():
            base = make_task(scale.task, scale.steps)
            results["budget x1"] = _variant(cache, scale, "budget x1", base, scale.seeds, root)
            lr = results["budget x1"]["truth"]["best_lr"]
            start, record = midway(base, scale.optimizer, lr, scale.resume_at)
            tasks = variants(scale, base, start, record["stop"])
            for name, task in tasks.items():
                if name == "budget x1":
                    continue
                seeds = scale.long_seeds if task.steps > scale.steps else scale.seeds
                results[name] = _variant(cache, scale, name, task, seeds, root)
            results["mid-training"]["start"] = record
    finally:
        cache.save()
    for name, r in results.items():
        rows = [{"task": name, **{k: v for k, v in e.items() if k != "sweep"}} for e in r["suggestions"]]
        r["table"] = _aggregate(rows, {name: r})
        r["commit"] = commit
    seconds = time.perf_counter() - started
    write_json(ctx.path("finder_variants.json"), {"scale": asdict(scale), "variants": results})
    _plot(ctx, scale, results)
    _report(ctx, scale, results, seconds)
    return {name: _headline(r) for name, r in results.items()}


def _headline(r: dict[str, Any]) -> dict[str, Any]:
    """What ``summary.json`` keeps for one variant: its grid's best LR and each finder's regret."""
    keys = ("median_regret", "worst_regret", "over_0_3", "diverged", "runs")
    return {
        "steps": r["steps"],
        "best_lr": r["truth"]["best_lr"],
        "lr_star": r["truth"]["lr_star"],
        "finders": {m: {k: t[k] for k in keys} for m, t in r["table"].items()},
    }


def _geomean(values: Sequence[float]) -> float:
    """The geometric mean (NaN if empty).

    >>> round(_geomean([0.01, 1.0]), 6)
    0.1
    """
    return float(np.exp(np.mean(np.log(values)))) if values else math.nan


def _plot(ctx: Context, scale: VariantScale, results: dict[str, Any]) -> None:
    """Every variant's grid (mean final loss against peak LR), and our finder's suggestions (geometric mean)."""
    from lr_callbacks.core.plot import Line, Marker, save_png

    styles = ["k.-", "b.-", "g.-", "r.-"]
    colors = ["black", "tab:blue", "tab:green", "tab:red"]
    lines, markers = [], []
    for i, (name, r) in enumerate(results.items()):
        lines.append(Line(r["truth"]["lrs"], r["truth"]["mean_loss"], f"grid: {name}", styles[i % len(styles)]))
        lrs = [s["lr"] for s in r["suggestions"] if s["finder"] == "lr_callbacks" and s["lr"]]
        if lrs:
            markers.append(Marker(_geomean(lrs), f"lr_callbacks: {name}", color=colors[i % len(colors)]))
    save_png(
        ctx.path("finder_variants.png"),
        lines,
        title=f"{scale.task}/{scale.optimizer}: each variant's grid and our finder's suggestion",
        xlabel="peak LR",
        ylabel="final validation loss",
        logx=True,
        logy=True,
        markers=markers,
    )


_HEADER = [
    "variant",
    "steps",
    "grid best LR (LR*)",
    "finder",
    "suggestions (geometric mean)",
    "log10(LR/LR*) median",
    "median regret",
    "worst regret",
    "regret > 0.3",
    "as good as the best ±½ octave",
    "diverged",
    "cost (× budget, median)",
]


def _summary_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, r in results.items():
        truth = r["truth"]
        for m, t in r["table"].items():
            lrs = [s["lr"] for s in r["suggestions"] if s["finder"] == m and s["lr"]]
            rows.append(
                [
                    name,
                    r["steps"],
                    f"{fmt(truth['best_lr'])} ({fmt(truth['lr_star'])})",
                    m,
                    fmt(_geomean(lrs)),
                    fmt(t["median_log_lr_error"]),
                    fmt(t["median_regret"]),
                    fmt(t["worst_regret"]),
                    f"{t['over_0_3']}/{t['runs']}",
                    f"{t['success']}/{t['runs']}",
                    t["diverged"],
                    fmt(t["median_cost"]),
                ]
            )
    return rows


def _section(name: str, r: dict[str, Any]) -> str:
    """One variant: its grid in a line, and per finder its suggestions, losses and regrets per seed."""
    truth = r["truth"]
    seeds = len(truth["runs"][0])
    rows = []
    for m in r["table"]:
        mine = [s for s in r["suggestions"] if s["finder"] == m]
        rows.append(
            [
                m,
                ", ".join(fmt(s["lr"]) for s in mine),
                ", ".join(fmt(s["loss"]) for s in mine),
                ", ".join(fmt(s["regret"]) for s in mine),
                fmt(median([s["regret"] for s in mine if s["regret"] is not None])),
                fmt(max((s["regret"] for s in mine if s["regret"] is not None), default=math.nan)),
                sum(s["diverged"] for s in mine),
                fmt(median([s["first_sweep_loss"] for s in mine if s.get("first_sweep_loss") is not None])),
            ]
        )
    grid_diverged = sum(1 for d in truth["diverged"] if d)
    text = (
        f"### {name}\n\n{r['task']}. Grid: {len(truth['lrs'])} LRs from {fmt(truth['lrs'][0])} to "
        f"{fmt(truth['lrs'][-1])}, {seeds} seed(s); {grid_diverged} LR(s) diverged on at least one seed. Best grid "
        f"LR {fmt(truth['best_lr'])} (LR* = {fmt(truth['lr_star'])}), loss {fmt(truth['best_loss'])} ± "
        f"{fmt(truth['best_std'])}; default LR {fmt(truth['default_lr'])}: loss {fmt(truth['default_loss'])}.\n"
    )
    if "start" in r:
        s = r["start"]
        text += (
            f"\nThe start state: {s['stop']} steps at peak LR {fmt(s['lr'])} (the ×1 grid's best), seed {s['seed']}: "
            f"validation loss {fmt(s['val_loss'])}, accuracy {fmt(s['accuracy'])}. The finders' first sweep loss "
            "(last column) shows they swept that trained model, not a fresh one (a fresh model starts near "
            "ln 10 = 2.3).\n"
        )
    header = [
        "finder",
        "suggestions (per seed)",
        "final val loss",
        "regret",
        "median regret",
        "worst regret",
        "diverged",
        "first sweep loss (median)",
    ]
    return text + "\n" + markdown_table(header, rows) + "\n"


def _report(ctx: Context, scale: VariantScale, results: dict[str, Any], seconds: float) -> None:
    sections = "\n".join(_section(name, r) for name, r in results.items())
    pair = f"{scale.task}/{scale.optimizer}"
    text = f"""# LR finder under variants of one pair

{stamp(ctx, seconds)}

Pair: {pair}, budget {scale.steps} steps. Each variant has its own ground truth: a grid of peak LRs spaced by
2^{scale.grid_step}, {scale.seeds} seed(s) each ({scale.long_seeds} for the ×{scale.multiple} budget), trained to
the end under the variant; every finder then runs on {scale.finder_seeds} seed(s) under the same variant, and its
suggestion is trained as the grid was, with the same seed. Regret, LR* and "as good as the best ±½ octave" are
the finder benchmark's (`finder.md`): normalized regret = (loss at the suggestion − best grid loss) / (loss at
torch's default LR − best grid loss), each variant against its own grid and its own default-LR runs.

- **budget ×1**: the pair as `finder.md` runs it (its grid is the finder benchmark's, from the shared run cache).
- **budget ×{scale.multiple}**: {scale.steps * scale.multiple} steps, the same schedule (warmup 5% + cosine)
  stretched over them.
- **mid-training**: a run at the ×1 grid's best LR stopped after {scale.resume_at:.0%} of the budget (its
  model and SGD momentum buffers, seed 0) is where every run of this variant starts; the grid, the finders and the
  suggestions train the remaining steps from it under a fresh schedule over them. The finders run on a
  `TaskModule` that loaded that state, in a `Trainer` of the remaining steps. The seeds change the data order only.
- **clipping**: `gradient_clip_val={scale.clip:g}` (global L2 norm) in the finders' `Trainer`, in every grid
  run and in every suggestion's run.

Finders: {", ".join(f"`{m}`" for m in scale.finders)} (the same ones and settings as in `finder.md`).

## Summary

{markdown_table(_HEADER, _summary_rows(results))}

![grids and suggestions](finder_variants.png)

## Per variant

{sections}"""
    with open(ctx.path("finder_variants.md"), "w") as handle:
        handle.write(text)
