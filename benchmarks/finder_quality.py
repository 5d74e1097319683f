"""Benchmark 2: how good is each LR finder's suggestion, measured against a grid trained to the end.

Protocol (``research/lr_finder_anchors.md`` §11.2, scaled to a 2-core CPU):

1. **Ground truth.** For each sample model and optimizer, train a grid of peak LRs ``low × 2^(k/2)`` over at
   least four decades, with several seeds, each for the full budget under the task's real schedule
   (:func:`benchmarks.models.train`). The best LR is the grid point of lowest mean validation loss ``L*``;
   ``LR*`` refines it with a quadratic fit of mean loss against log10(LR) over the five points around it.
2. **Candidates.** Every finder (:mod:`benchmarks.finders`) sweeps a fresh model of seed ``s`` on the data
   order of seed ``s``; its suggestion is then trained *the same way* as the grid, with seed ``s``.
3. **Metrics**, per finder over every (model, optimizer, seed):

   - normalized regret ``(L(suggestion) − L*) / (L(default) − L*)``, where the default is the optimizer's own
     default LR in torch (1e-3 for SGD, Adam, AdamW, RAdam and AMSGrad, 2e-3 for NAdam and Adamax, 1e-2 for RMSprop,
     Adagrad and ASGD): 0 is the grid's best, 1 is no better than not tuning; its median, 90th percentile (p90) and
     worst, and the count of runs above 0.3;
   - log-LR error ``log10(suggestion / LR*)`` (its sign tells over- from under-shooting);
   - diverged: training at the suggestion diverged (see :func:`benchmarks.models.train`);
   - failed: the finder gave no suggestion (the run then keeps the default LR: regret 1);
   - cost: optimizer steps the finder spent, as a fraction of the training budget;
   - repeatability: the standard deviation of log10(suggestion) over seeds, per model and optimizer.

4. **Held-out pairs** (:data:`HELD_OUT`, :mod:`benchmarks.models.heldout`) were fixed before the finder's second
   version changed any constant, and no constant is set on them: every metric is reported over the tuning
   pairs, over the held-out pairs, and over both, and leave-one-task-out (every pair but one task's). The first
   set was read closely at stop 24, so a second set (:data:`HELD_OUT_SECOND`,
   :mod:`benchmarks.models.heldout_second`), fixed before any rule changed in response, is reported apart; both
   had been read by stop 31, when a third set (:data:`HELD_OUT_THIRD`, :mod:`benchmarks.models.heldout_third`)
   was fixed before its first run, and is reported apart too; once its first run had been read, a fourth
   (:data:`HELD_OUT_FOURTH`, :mod:`benchmarks.models.heldout_fourth`) was fixed before any rule changed in
   response. Every rule written since had the four sets' results in view, so at stop 37, once all four had been
   read, a fifth (:data:`HELD_OUT_FIFTH`, :mod:`benchmarks.models.heldout_fifth`) was fixed before any rule changed
   in response and before its first run.

Training runs are cached by (task name and fingerprint, optimizer, LR, seed) in ``cache/runs.json`` under the
output directory. The fingerprint covers the task's description, schedule, budget, batch size, clip, start state
and torch version, not the code: after a change to ``lr_callbacks`` or to the training code a cached run is
reused as it was, so delete the file (or the task's entries) then, and for a cold run.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from benchmarks._common import (
    Context,
    _commit,
    fmt,
    grid_lrs,
    log,
    markdown_table,
    median,
    quiet,
    stamp,
    stamp_of,
    stamped_commit,
    write_json,
)
from benchmarks.finders import FINDERS, Suggestion, run_finder
from benchmarks.models import (
    HELD_OUT_FIFTH_TASKS,
    HELD_OUT_FOURTH_TASKS,
    HELD_OUT_SECOND_TASKS,
    HELD_OUT_TASKS,
    HELD_OUT_THIRD_TASKS,
    Task,
    make_task,
    train,
)

__all__ = ["RunCache", "Scale", "best_lr", "regret", "run"]


@dataclass(frozen=True)
class Scale:
    """How much to run."""

    tasks: dict[str, int]  # task name -> training budget (steps)
    seeds: int  # ground-truth seeds per grid LR
    finder_seeds: int
    grid_step: float  # grid spacing in powers of two (0.5: half-octaves)
    finders: tuple[str, ...] = FINDERS
    confirm: bool = True


HELD_OUT = HELD_OUT_TASKS
"""The held-out tasks: fixed before any constant of the finder's second version was set, and never used to set one."""

HELD_OUT_SECOND = HELD_OUT_SECOND_TASKS
"""The second held-out set: fixed at stop 24, once the first had been read closely, and never used to set a rule."""

HELD_OUT_THIRD = HELD_OUT_THIRD_TASKS
"""The third held-out set: fixed at stop 31, once the first two had been read, before its first run."""

HELD_OUT_FOURTH = HELD_OUT_FOURTH_TASKS
"""The fourth held-out set: fixed at stop 31, once the third had been read, before any rule changed in response."""

HELD_OUT_FIFTH = HELD_OUT_FIFTH_TASKS
"""The fifth held-out set: fixed at stop 37, once all four had been read, before any rule changed in response and
before its first run."""

GROUPS = {
    "tuning": "tuning pairs",
    "held_out": "held-out pairs",
    "held_out_second": "held-out pairs, second set",
    "held_out_third": "held-out pairs, third set",
    "held_out_fourth": "held-out pairs, fourth set",
    "held_out_fifth": "held-out pairs, fifth set",
}
"""The groups of pairs the metrics are reported over (key in ``finder.json``/``summary.json``: title)."""


def group_of(task: str) -> str:
    """The group (:data:`GROUPS`) of a task's pairs.

    >>> group_of("digits-mlp"), group_of("digits-vit"), group_of("digits-gru"), group_of("digits-resnet")
    ('tuning', 'held_out', 'held_out_second', 'held_out_third')
    >>> group_of("docstrings-cnn"), group_of("charlm-conv")
    ('held_out_fourth', 'held_out_fifth')
    """
    if task in HELD_OUT_FIFTH:
        return "held_out_fifth"
    if task in HELD_OUT_FOURTH:
        return "held_out_fourth"
    if task in HELD_OUT_THIRD:
        return "held_out_third"
    if task in HELD_OUT_SECOND:
        return "held_out_second"
    return "held_out" if task in HELD_OUT else "tuning"


FULL = Scale(
    tasks={
        "digits-mlp": 300,
        "digits-cnn": 300,
        "charlm": 120,
        "minilm": 48,
        "digits-vit": 300,
        "digits-lstm": 300,
        "tabular": 300,
        "cancer-transformer": 300,
        "digits-mixer": 300,
        "digits-gru": 300,
        "digits-resnet": 300,
        "docstrings-bag": 300,
        "digits-autoencoder": 300,
        "cancer-logreg": 300,
        "docstrings-cnn": 300,
        "charlm-gru": 300,
        "docstrings-transformer": 300,
        "digits-deepmlp": 300,
        "charlm-conv": 300,
    },
    seeds=3,
    finder_seeds=5,
    grid_step=0.5,
)
QUICK = Scale(tasks={"digits-mlp": 40, "tabular": 40}, seeds=1, finder_seeds=1, grid_step=2.0, confirm=False)


class RunCache:
    """Training results on disk, keyed by task fingerprint, optimizer, LR and seed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        if os.path.exists(path):
            with open(path) as handle:
                self.data = json.load(handle)
        self.trained = 0

    @staticmethod
    def key(task: Task, optimizer: str, lr: float, seed: int) -> str:
        return f"{task.name}|{task.fingerprint()}|{optimizer}|{lr:.6e}|{seed}"

    def get(self, task: Task, optimizer: str, lr: float, seed: int) -> dict[str, Any]:
        key = self.key(task, optimizer, lr, seed)
        if key not in self.data:
            result, _ = train(task, optimizer, lr, seed)
            self.data[key] = {
                "loss": result.loss,
                "accuracy": result.accuracy,
                "diverged": result.diverged,
                **result.extra,
            }
            self.trained += 1
            if self.trained % 10 == 0:
                self.save()
        return self.data[key]

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(self.data, handle, indent=0, sort_keys=True)
        os.replace(tmp, self.path)


def best_lr(lrs: Sequence[float], losses: Sequence[float]) -> tuple[int, float]:
    """The grid index of the lowest loss, and ``LR*``: the vertex of a quadratic in log10(LR) fitted to the five
    points around it (the grid point itself when it lies on the grid's edge or the fit is not convex).

    >>> lrs = [10.0 ** (k / 2) for k in range(-6, 1)]
    >>> losses = [(math.log10(lr) + 1.5) ** 2 for lr in lrs]
    >>> index, lr = best_lr(lrs, losses)
    >>> index, round(math.log10(lr), 6)
    (3, -1.5)
    """
    finite = [v if math.isfinite(v) else math.inf for v in losses]
    index = int(np.argmin(finite))
    lo, hi = index - 2, index + 3
    if lo < 0 or hi > len(lrs) or not all(math.isfinite(v) for v in finite[lo:hi]):
        return index, lrs[index]
    x = np.log10(np.asarray(lrs[lo:hi]))
    a, b, _ = np.polyfit(x, np.asarray(finite[lo:hi]), 2)
    if a <= 0:
        return index, lrs[index]
    vertex = float(np.clip(-b / (2 * a), x[0], x[-1]))
    return index, 10.0**vertex


def regret(loss: float, best: float, default: float) -> float:
    """``(loss − best) / (default − best)``: 0 at the grid's best, 1 at the default LR.

    >>> regret(0.25, best=0.0, default=1.0), regret(1.5, best=0.5, default=1.0)
    (0.25, 2.0)
    """
    span = default - best
    if span <= 0:
        return math.nan
    return (loss - best) / span


def _ground_truth(cache: RunCache, task: Task, optimizer: str, scale: Scale) -> dict[str, Any]:
    low, high = task.grid[optimizer]
    lrs = grid_lrs(low, high) if scale.grid_step == 0.5 else _coarse(low, high, scale.grid_step)
    runs = [[cache.get(task, optimizer, lr, s) for s in range(scale.seeds)] for lr in lrs]
    means = [statistics.mean(r["loss"] for r in per) for per in runs]
    spreads = [statistics.stdev(r["loss"] for r in per) if len(per) > 1 else 0.0 for per in runs]
    index, lr_star = best_lr(lrs, means)
    default = [cache.get(task, optimizer, task.default_lr[optimizer], s) for s in range(scale.seeds)]
    return {
        "lrs": lrs,
        "mean_loss": means,
        "std_loss": spreads,
        "diverged": [sum(r["diverged"] for r in per) for per in runs],
        "runs": runs,
        "best_index": index,
        "best_lr": lrs[index],
        "lr_star": lr_star,
        "best_loss": means[index],
        "best_std": spreads[index],
        "default_lr": task.default_lr[optimizer],
        "default_loss": statistics.mean(r["loss"] for r in default),
        "default_runs": default,
    }


def _near_best(cache: RunCache, task: Task, optimizer: str, truth: dict[str, Any], seed: int) -> float:
    """The worst loss, on ``seed``, among the best grid LR and its two neighbours (a paired success bar).

    A finder seed beyond the grid's seeds trains those three LRs on that seed (cached like every run).
    """
    index = truth["best_index"]
    lrs = truth["lrs"][max(index - 1, 0) : index + 2]
    return max(cache.get(task, optimizer, lr, seed)["loss"] for lr in lrs)


def _coarse(low: float, high: float, step: float) -> list[float]:
    count = math.ceil(math.log2(high / low) / step - 1e-9) + 1
    return [low * 2 ** (k * step) for k in range(count)]


def _evaluate(
    cache: RunCache, task: Task, optimizer: str, truth: dict[str, Any], suggestion: Suggestion, seed: int
) -> dict[str, Any]:
    failed = suggestion.lr is None
    lr = truth["default_lr"] if failed else float(suggestion.lr)  # type: ignore[arg-type]
    result = cache.get(task, optimizer, lr, seed)
    near_best = _near_best(cache, task, optimizer, truth, seed)
    return {
        "finder": suggestion.finder,
        "seed": seed,
        "lr": None if failed else lr,
        "failed": failed,
        "note": suggestion.note,
        "loss": result["loss"],
        "accuracy": result["accuracy"],
        "diverged": bool(result["diverged"]),
        "regret": regret(result["loss"], truth["best_loss"], truth["default_loss"]),
        "log_lr_error": None if failed else math.log10(lr / truth["lr_star"]),
        "cost": suggestion.steps / task.steps,
        "steps": suggestion.steps,
        "success": result["loss"] <= near_best,
        "seconds": suggestion.extra.get("seconds"),
        **{k: v for k, v in suggestion.extra.items() if k not in ("seconds",)},
        **{k: v for k, v in result.items() if k in ("forgetting", "test_accuracy")},
    }


def _finders(scale: Scale, only: Sequence[str] = ()) -> list[str]:
    names = list(scale.finders)
    if scale.confirm and _has_confirm():
        names.insert(1, "lr_callbacks.confirm")
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"--finders: unknown {', '.join(unknown)}; choose among {', '.join(names)}")
        names = [n for n in names if n in only]
    return names


def _pairs(scale: Scale, only: Sequence[str]) -> list[tuple[str, int, str]]:
    """``(task, steps, optimizer)`` for every pair of the scale, or those that ``only`` names (task or task/opt)."""
    pairs = []
    for name, steps in scale.tasks.items():
        for optimizer in make_task(name, steps).optimizers:
            if not only or name in only or f"{name}/{optimizer}" in only:
                pairs.append((name, steps, optimizer))
    if only and not pairs:
        raise ValueError(f"--tasks {','.join(only)} matches no pair; the tasks are {', '.join(scale.tasks)}")
    return pairs


def _previous(ctx: Context, cache: RunCache, results: dict[str, Any]) -> dict[str, Any]:
    """``results`` completed from an earlier ``finder.json`` when this run is partial (``--tasks``/``--finders``).

    Pairs it did not redo are kept whole; in a pair it redid, the finders it did not run keep their earlier
    entries. Every entry says at which commit it was measured (``commit``; an entry from before per-pair
    stamps gets the commit in the earlier ``finder.md``), and an entry without the paired success bar gets it
    from the run cache.
    """
    path = ctx.path("finder.json")
    if not (ctx.tasks or ctx.finders) or not os.path.exists(path):
        return results
    with open(path) as handle:
        earlier = json.load(handle).get("tasks", {})
    earlier_commit = stamped_commit(ctx.path("finder.md")) or "?"
    merged = dict(results)
    for key, pair in earlier.items():
        name, optimizer = key.split("/")
        task = make_task(name, FULL.tasks.get(name))
        entries = [{**e, "commit": e.get("commit", pair.get("commit", earlier_commit))} for e in pair["suggestions"]]
        for entry in entries:
            if "success" not in entry and name in FULL.tasks:
                entry["success"] = entry["loss"] <= _near_best(cache, task, optimizer, pair["truth"], entry["seed"])
        if key not in merged:
            merged[key] = {
                **pair,
                "held_out": group_of(name) != "tuning",
                "group": group_of(name),
                "commit": pair.get("commit", earlier_commit),
                "suggestions": entries,
            }
            continue
        done = {e["finder"] for e in merged[key]["suggestions"]}
        merged[key]["suggestions"] = merged[key]["suggestions"] + [e for e in entries if e["finder"] not in done]
    return merged


def _has_confirm() -> bool:
    import inspect

    try:
        from lr_callbacks import LRFinder
    except ImportError:
        return False
    return "confirm" in inspect.signature(LRFinder).parameters


def run(ctx: Context) -> dict[str, Any]:
    """Run the finder benchmark; write ``finder.md``/``.json`` and plots; return the summary part."""
    scale = QUICK if ctx.quick else FULL
    if ctx.seeds is not None:
        scale = replace(scale, finder_seeds=ctx.seeds)
    pairs = _pairs(scale, ctx.tasks)
    finders = _finders(scale, ctx.finders)
    started = time.perf_counter()
    cache = RunCache(ctx.path("cache", "runs.json"))
    results: dict[str, Any] = {}
    try:
        with ctx.scratch() as root, quiet():
            for name, steps, optimizer in pairs:
                task = make_task(name, steps)
                key = f"{name}/{optimizer}"
                log(f"finder: ground truth {key}")
                truth = _ground_truth(cache, task, optimizer, scale)
                entries = []
                for seed in range(scale.finder_seeds):
                    for finder in finders:
                        log(f"finder: {key} seed {seed} {finder}")
                        for suggestion in run_finder(finder, task, optimizer, seed, os.path.join(root, finder)):
                            if ctx.finders and suggestion.finder not in ctx.finders:
                                continue  # a variant of a finder that --finders did not ask for (not trained)
                            entry = _evaluate(cache, task, optimizer, truth, suggestion, seed)
                            entry["sweep"] = {"lrs": suggestion.lrs, "losses": suggestion.losses}
                            entry["commit"] = _commit()
                            entries.append(entry)
                results[key] = {
                    "task": task.describe,
                    "held_out": group_of(name) != "tuning",
                    "group": group_of(name),
                    "commit": _commit(),
                    "truth": truth,
                    "suggestions": entries,
                }
    finally:
        cache.save()
    results = _previous(ctx, cache, results)
    cache.save()
    rows = [
        {"task": key, "group": group_of(key.split("/")[0]), **{k: v for k, v in e.items() if k != "sweep"}}
        for key, r in results.items()
        for e in r["suggestions"]
    ]
    table = _aggregate(rows, results)
    groups = {group: _aggregate([r for r in rows if r["group"] == group], results) for group in GROUPS}
    left_out = {
        task: _aggregate([r for r in rows if r["task"].split("/")[0] != task], results)
        for task in dict.fromkeys(r["task"].split("/")[0] for r in rows)
    }
    seconds = time.perf_counter() - started
    write_json(
        ctx.path("finder.json"),
        {"scale": asdict(scale), "table": table, "groups": groups, "leave_one_task_out": left_out, "tasks": results},
    )
    _report(ctx, scale, results, table, groups, left_out, seconds)
    return {
        method: {**_headline(t), **{g: _headline(groups[g].get(method)) for g in groups}} for method, t in table.items()
    }


def render(ctx: Context) -> None:
    """Write ``finder.md`` and its plots again from ``finder.json`` in ``ctx.out``, keeping the report's stamp.

    Nothing is trained: the text follows the renderer's code, the numbers are those of the JSON.
    """
    with open(ctx.path("finder.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    scale = Scale(**{**data["scale"], "finders": tuple(data["scale"]["finders"])})
    header = stamp_of(ctx.path("finder.md"))
    _report(ctx, scale, data["tasks"], data["table"], data["groups"], data["leave_one_task_out"], None, header)


def _group_mark(key: str) -> str:
    group = group_of(key.split("/")[0])
    marks = {"held_out": " (held out)", "held_out_second": " (held out, second set)"}
    marks.update({"held_out_third": " (held out, third set)", "held_out_fourth": " (held out, fourth set)"})
    marks["held_out_fifth"] = " (held out, fifth set)"
    return {"tuning": "", **marks}[group]


def _headline(entry: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers ``summary.json`` keeps for one finder (over one group of pairs)."""
    keys = ("median_regret", "p90_regret", "worst_regret", "over_0_3", "diverged", "runs")
    return {k: (entry or {}).get(k) for k in keys}


def _aggregate(rows: Sequence[dict[str, Any]], results: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for method in dict.fromkeys(r["finder"] for r in rows):
        mine = [r for r in rows if r["finder"] == method]
        regrets = [r["regret"] for r in mine if r["regret"] is not None and math.isfinite(r["regret"])]
        errors = [r["log_lr_error"] for r in mine if r["log_lr_error"] is not None]
        spread = []
        for key in results:
            logs = [math.log10(r["lr"]) for r in mine if r["task"] == key and r["lr"]]
            if len(logs) > 1:
                spread.append(statistics.stdev(logs))
        table[method] = {
            "median_regret": median(regrets),
            "p90_regret": _p90(regrets),
            "worst_regret": max(regrets) if regrets else math.nan,
            "over_0_3": sum(v > 0.3 for v in regrets),
            "diverged": sum(r["diverged"] for r in mine),
            "failed": sum(r["failed"] for r in mine),
            "runs": len(mine),
            "success": sum(bool(r.get("success")) for r in mine),
            "median_log_lr_error": median(errors),
            "median_abs_log_lr_error": median([abs(e) for e in errors]),
            "repeatability_std_log10": median(spread) if spread else math.nan,
            "median_cost": median([r["cost"] for r in mine]),
            "worst_cost": max((r["cost"] for r in mine), default=math.nan),
        }
    return table


def _p90(values: Sequence[float]) -> float:
    """The 90th percentile (linear between order statistics, as numpy's default).

    >>> _p90([float(v) for v in range(11)])
    9.0
    """
    return float(np.percentile(values, 90)) if values else math.nan


_HEADER = [
    "finder",
    "median regret",
    "p90 regret",
    "worst regret",
    "runs with regret > 0.3",
    "as good as the best ±½ octave",
    "diverged",
    "no suggestion",
    "median log10(LR/LR*)",
    "median abs log-LR error",
    "seed spread (std log10 LR)",
    "cost (× budget, median / worst)",
]
_COLORS = [
    "tab:red",
    "tab:blue",
    "tab:green",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
]


def _summary_rows(table: dict[str, Any], order: Sequence[str]) -> list[list[Any]]:
    """One row of the summary table per finder, in ``order``."""
    return [
        [
            m,
            fmt(table[m]["median_regret"]),
            fmt(table[m]["p90_regret"]),
            fmt(table[m]["worst_regret"]),
            f"{table[m]['over_0_3']}/{table[m]['runs']}",
            f"{table[m]['success']}/{table[m]['runs']}",
            table[m]["diverged"],
            table[m]["failed"],
            fmt(table[m]["median_log_lr_error"]),
            fmt(table[m]["median_abs_log_lr_error"]),
            fmt(table[m]["repeatability_std_log10"]),
            f"{fmt(table[m]['median_cost'])} / {fmt(table[m]['worst_cost'])}",
        ]
        for m in order
        if m in table
    ]


def _entry_commit(pair: dict[str, Any], entry: dict[str, Any]) -> str:
    return str(entry.get("commit") or pair.get("commit") or "?")


def _measured_at(pair: dict[str, Any]) -> str:
    """Which commit measured which finders of ``pair`` (a rerun with ``--finders`` keeps the others' older runs)."""
    finders: dict[str, list[str]] = {}
    for entry in pair["suggestions"]:
        names = finders.setdefault(_entry_commit(pair, entry), [])
        if entry["finder"] not in names:
            names.append(entry["finder"])
    if len(finders) <= 1:
        return f"commit `{next(iter(finders), pair.get('commit', '?'))}`"
    return "commits " + ", ".join(f"`{c}` ({', '.join(names)})" for c, names in finders.items())


def _task_section(ctx: Context, key: str, r: dict[str, Any]) -> str:
    """One model/optimizer pair: its grid and suggestions as a plot, a table and a paragraph."""
    from lr_callbacks.core.plot import Line, Marker, save_png

    truth = r["truth"]
    file = f"finder_{key.replace('/', '_')}.png"
    methods = list(dict.fromkeys(s["finder"] for s in r["suggestions"]))
    markers = []
    for i, m in enumerate(methods):
        lrs = [s["lr"] for s in r["suggestions"] if s["finder"] == m and s["lr"]]
        if lrs:
            markers.append(Marker(float(np.exp(np.mean(np.log(lrs)))), m, color=_COLORS[i % len(_COLORS)]))
    lines = [Line(truth["lrs"], truth["mean_loss"], "grid: mean final val loss", "k.-")]
    for s in range(len(truth["runs"][0])):
        lines.append(Line(truth["lrs"], [per[s]["loss"] for per in truth["runs"]], "", ":"))
    save_png(
        ctx.path(file),
        lines,
        title=f"{key}: grid ({len(truth['runs'][0])} seeds) and suggestions (geometric mean of seeds)",
        xlabel="peak LR",
        ylabel="final validation loss",
        logx=True,
        markers=markers,
    )
    task_rows = []
    for m in methods:
        mine = [s for s in r["suggestions"] if s["finder"] == m]
        task_rows.append(
            [
                m,
                ", ".join(fmt(s["lr"]) for s in mine),
                ", ".join(fmt(s["loss"]) for s in mine),
                fmt(median([s["regret"] for s in mine if s["regret"] is not None])),
                sum(s["diverged"] for s in mine),
            ]
        )
    return (
        f"### {key}{_group_mark(key)}\n\n{r['task']}; measured at {_measured_at(r)}. "
        f"Grid: {len(truth['lrs'])} LRs from {fmt(truth['lrs'][0])} to "
        f"{fmt(truth['lrs'][-1])}, {len(truth['runs'][0])} seeds. Best grid LR {fmt(truth['best_lr'])} "
        f"(LR* = {fmt(truth['lr_star'])}), loss {fmt(truth['best_loss'])} ± {fmt(truth['best_std'])}; "
        f"default LR {fmt(truth['default_lr'])}: loss {fmt(truth['default_loss'])}.\n\n"
        + markdown_table(["finder", "suggestions (per seed)", "final val loss", "median regret", "diverged"], task_rows)
        + f"\n\n![{key}]({file})\n"
    )


def _profile(ctx: Context, order: Sequence[str], results: dict[str, Any]) -> None:
    """The performance profile: for each finder, the fraction of runs with normalized regret ≤ τ."""
    from lr_callbacks.core.plot import Line, save_png

    profile = []
    taus = [10 ** (k / 10) for k in range(-30, 11)]
    for m in order:
        regrets = [
            s["regret"]
            for r in results.values()
            for s in r["suggestions"]
            if s["finder"] == m and s["regret"] is not None
        ]
        if regrets:
            profile.append(Line(taus, [sum(v <= t for v in regrets) / len(regrets) for t in taus], m, "-"))
    save_png(
        ctx.path("finder_profile.png"),
        profile,
        title="Performance profile: fraction of runs with normalized regret ≤ τ",
        xlabel="τ (normalized regret)",
        ylabel="fraction of runs",
        logx=True,
    )


def _defaults(results: dict[str, Any]) -> str:
    """The default LR of each optimizer of ``results`` (the regret's reference), those sharing one named together.

    >>> _defaults({"a/sgd": {"truth": {"default_lr": 1e-3}}, "b/adagrad": {"truth": {"default_lr": 1e-2}},
    ...            "c/adam": {"truth": {"default_lr": 1e-3}}})
    '1.00e-03 for sgd and adam, 0.01 for adagrad'
    """
    by_lr: dict[float, list[str]] = {}
    for key, pair in results.items():
        names = by_lr.setdefault(pair["truth"]["default_lr"], [])
        if key.split("/")[1] not in names:
            names.append(key.split("/")[1])
    return ", ".join(f"{fmt(lr)} for {' and '.join(names)}" for lr, names in by_lr.items())


_GROUP_LABELS = {
    "tuning": "tuning",
    "held_out": "held out",
    "held_out_second": "held out, second set",
    "held_out_third": "held out, third set",
    "held_out_fourth": "held out, fourth set",
    "held_out_fifth": "held out, fifth set",
}


def _seeds_per_finder(results: dict[str, Any]) -> str:
    """How many finder seeds each finder ran per pair, by group of pairs; finders that ran alike named together.

    >>> def runs(seeds: dict[str, int]) -> dict[str, Any]:
    ...     return {"suggestions": [{"finder": f, "seed": s} for f, n in seeds.items() for s in range(n)]}
    >>> _seeds_per_finder({"digits-mlp/sgd": runs({"ours": 5, "peer": 3}), "digits-resnet/sgd": runs({"ours": 5})})
    'ours 5 on every pair; peer 3 (tuning)'
    """
    counts: dict[str, dict[int, list[str]]] = {}
    for key, pair in results.items():
        label = _GROUP_LABELS[group_of(key.split("/")[0])]
        seeds: dict[str, set[int]] = {}
        for entry in pair["suggestions"]:
            seeds.setdefault(entry["finder"], set()).add(entry["seed"])
        for finder, found in seeds.items():
            groups = counts.setdefault(finder, {}).setdefault(len(found), [])
            if label not in groups:
                groups.append(label)
    every = {_GROUP_LABELS[group_of(key.split("/")[0])] for key in results}
    alike: dict[str, list[str]] = {}
    for finder, by_count in counts.items():
        if len(by_count) == 1 and set(next(iter(by_count.values()))) == every:
            text = f"{next(iter(by_count))} on every pair"
        else:
            text = ", ".join(f"{n} ({'; '.join(groups)})" for n, groups in sorted(by_count.items()))
        alike.setdefault(text, []).append(finder)
    return "; ".join(f"{' and '.join(finders)} {text}" for text, finders in alike.items())


def _report(
    ctx: Context,
    scale: Scale,
    results: dict[str, Any],
    table: dict[str, Any],
    groups: dict[str, dict[str, Any]],
    left_out: dict[str, dict[str, Any]],
    seconds: float | None,
    stamp_text: str = "",
) -> None:
    order = sorted(table, key=lambda m: (table[m]["median_regret"], table[m]["worst_regret"]))
    rows = _summary_rows(table, order)
    per_task = [_task_section(ctx, key, r) for key, r in results.items()]
    _profile(ctx, order, results)
    tasks = ", ".join(f"{k} ({v} steps)" for k, v in scale.tasks.items())
    commits = sorted({_entry_commit(r, e) for r in results.values() for e in r["suggestions"]})
    # a group no pair has been measured in yet (a finder.json written before the group existed) has no rows
    group_rows = [[group, *row] for name, group in GROUPS.items() for row in _summary_rows(groups.get(name, {}), order)]
    loto_rows = [
        [
            f"all but {task}",
            m,
            fmt(t[m]["median_regret"]),
            fmt(t[m]["p90_regret"]),
            fmt(t[m]["worst_regret"]),
            t[m]["diverged"],
        ]
        for task, t in left_out.items()
        for m in order
        if m in t and m in ("lr_callbacks", "lr_callbacks.confirm")
    ]
    text = f"""# LR finder quality

{stamp_text or stamp(ctx, seconds)}

Tasks: {tasks}. Ground truth: a grid of peak LRs spaced by 2^{scale.grid_step} over ≥ 4 decades, {scale.seeds}
seed(s) each, trained for the full budget under each task's real schedule. Every finder then runs on several
seeds (model initialisation and data order), and its suggestion is trained the same way as the grid, with the
same seed. Finder seeds per pair: {_seeds_per_finder(results)}.
 Normalized regret = (loss at the suggestion − best grid loss) / (loss at
the optimizer's default LR in torch − best grid loss; {_defaults(results)}): 0 is the grid's best, 1 is no
better than not tuning; lower is better. "As good as the best ±½ octave": the final loss is no worse than that
of the best grid LR or of one of its two neighbours, trained with the same seed (a paired comparison;
seed-to-seed noise cancels). LR* is the best grid LR refined by a quadratic fit in log10(LR). A finder that
gives no suggestion leaves the default LR.

Held-out pairs ({", ".join(HELD_OUT)}) were fixed in the code before any constant of the finder's second
version changed, and no constant was set on them; but the probe's `probe_stalled` rule (halve an answer whose hold
never leaves its starting loss) was written after their ViT runs had been read, so their gain from it is not a
held-out measurement. They were read closely at stop 24; the second held-out set
({", ".join(HELD_OUT_SECOND)}) was fixed then, before any rule changed in response, and is reported apart. Both
had been read by stop 31; the third set ({", ".join(HELD_OUT_THIRD)}) was fixed then, before its first run, and
is reported apart too. Its first run showed a failure no earlier pair had, so a fourth set
({", ".join(HELD_OUT_FOURTH)}) was fixed before any rule changed in response; it measures the rules written after
the third set was read. Every rule written since had all four sets in view; at stop 37 a fifth set
({", ".join(HELD_OUT_FIFTH)}) was fixed, before any rule changed in response and before its first run; it
measures the rules as they stood then.
Pairs measured at commit(s): {", ".join(f"`{c}`" for c in commits)}
(each pair's section names its own).

Finders: `lr_callbacks` (our default method; `lr_callbacks.<method>` re-analyses the same sweep with
`suggest_lr`; `lr_callbacks.confirm` adds the confirm trials), Lightning `Tuner.lr_find` (defaults),
torch-lr-finder (README's "fastai approach": 1e-7 → 100 in 100 steps, steepest gradient), fastai's
`lr_find` + `valley` (reimplemented from fastai's source, see `benchmarks/finders.py`).

## Summary over every model, optimizer and seed

{markdown_table(_HEADER, rows)}

![performance profile](finder_profile.png)

## Tuning pairs and held-out pairs, separately

{markdown_table(["pairs", *_HEADER], group_rows)}

## Leave one task out (our finder)

{markdown_table(["pairs", "finder", "median regret", "p90 regret", "worst regret", "diverged"], loto_rows)}

## Per model and optimizer

{chr(10).join(per_task)}
"""
    with open(ctx.path("finder.md"), "w") as handle:
        handle.write(text)
