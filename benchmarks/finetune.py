"""Benchmark 4: the fine-tuning story practitioners tell, measured on MiniLM: task accuracy *and* forgetting.

Every run fine-tunes all-MiniLM-L6-v2 on the docstring task (:mod:`benchmarks.models.minilm`) in a real
``Trainer`` with ``LRSchedule``, for the same budget, over several seeds:

- ``pretraining LR``: 2e-4, flat (constant);
- ``fine-tuning LR``: 2e-5 with 10% warmup and linear decay;
- ``sweep``: 1e-4, 1e-5 and 1e-6 with the same warmup and decay, one order of magnitude apart; the sweep's
  pick is the one of lowest validation loss;
- ``LRFinder``: our finder at its defaults sets the peak, then the same warmup and decay;
- ``LRFinder confirm``: the finder's confirm mode (trials of the real schedule, 15% of the run each so that
  they pass the warmup), default candidates, and again with the practitioners' candidates 1e-4, 1e-5, 1e-6;
- ``LoRA``: adapters (rank 8) in a frozen encoder at 1e-3 under warmup and decay, the head at 1e-4 under a
  constant schedule: two groups, two schedules, through ``LRSchedule(group_schedules=..., peak_lrs=...)``.

Reported per setup: validation loss, test accuracy (a split nothing is tuned on) and forgetting
(``1 − Spearman`` of the held-out similarity structure against the original model). The **good region** is
the LR range of the finder benchmark's MiniLM grid (same task, budget and schedule, 3 seeds) around its best
where fine-tuning buys at least half of the best LR's gain over the starting point: mean validation loss
≤ L* + (L_probe − L*) / 2. The table says on how many seeds each setup's LR falls inside it.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from benchmarks._common import Context, fmt, log, markdown_table, quiet, stamp, write_json
from benchmarks.finders import CONFIRM_LENGTH
from benchmarks.models import Task, TaskModule, evaluate, make_task, train_loader

__all__ = ["Scale", "run"]


@dataclass(frozen=True)
class Scale:
    """How much to run."""

    steps: int
    seeds: int
    finder_steps: int | None = None  # the finder's sweep length (None: its default)
    confirm_length: str | None = None  # each confirm trial's length (None: its default)
    limit: int | None = None  # examples per split (None: all; a smoke size otherwise)
    skip: tuple[str, ...] = ()  # setups left out (a smoke size)


FULL = Scale(steps=48, seeds=3, confirm_length=CONFIRM_LENGTH)
QUICK = Scale(
    steps=3,
    seeds=1,
    finder_steps=10,
    confirm_length="2 steps",
    limit=40,
    skip=("fine-tuning LR, warmup + decay", "sweep: 1e-6", "LRFinder confirm (×0.5, ×1, ×2)"),
)


def _fit(task: Task, seed: int, lr: float, callbacks: list[Any], root: str) -> dict[str, Any]:
    """Fine-tune once in a real Trainer; return validation loss, test accuracy, forgetting.

    The validation data is given to the Trainer (the finder's confirm trials are compared on it); the budget
    is shorter than an epoch, so training itself never validates.
    """
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    module = TaskModule(task, "adamw", lr, seed=seed, log_loss=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=task.steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        callbacks=callbacks,
    )
    val = DataLoader(task.val_set, batch_size=256)
    trainer.fit(module, train_dataloaders=train_loader(task, seed), val_dataloaders=val)
    metrics = evaluate(task, module.model)
    return {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"], **_metrics(task, module.model)}


def _metrics(task: Task, model: Any) -> dict[str, float]:
    from benchmarks.models.minilm import finetune_metrics

    return finetune_metrics(model, limit=task.extra.get("limit"))


def _setups(scale: Scale) -> list[tuple[str, str, Any]]:
    """(setup, LR label, how to build the callbacks and peak LR for a seed)."""
    from lr_callbacks import LRSchedule

    def schedule(peak: float, kind: str = "linear") -> Any:
        def make(task: Task) -> tuple[float, list[Any], Any]:
            if kind == "constant":
                return peak, [LRSchedule("constant", log_plan=False)], None
            return peak, [LRSchedule(task.schedule, log_plan=False)], None

        return make

    setups: list[tuple[str, str, Any]] = [
        ("pretraining LR, flat", "2e-4", schedule(2e-4, "constant")),
        ("fine-tuning LR, warmup + decay", "2e-5", schedule(2e-5)),
        ("sweep: 1e-4", "1e-4", schedule(1e-4)),
        ("sweep: 1e-5", "1e-5", schedule(1e-5)),
        ("sweep: 1e-6", "1e-6", schedule(1e-6)),
        ("LRFinder (default)", "found", _finder(scale, None)),
    ]
    if _has_confirm():
        setups.append(("LRFinder confirm (×0.5, ×1, ×2)", "found", _finder(scale, True)))
        setups.append(("LRFinder confirm (1e-4, 1e-5, 1e-6)", "found", _finder(scale, [1e-4, 1e-5, 1e-6])))
    return setups


def _has_confirm() -> bool:
    from benchmarks.finder_quality import _has_confirm as has

    return has()


def _finder(scale: Scale, confirm: Any) -> Any:
    from lr_callbacks import LRFinder, LRSchedule

    def make(task: Task) -> tuple[float, list[Any], Any]:
        kwargs: dict[str, Any] = {}
        if scale.finder_steps is not None:
            kwargs["num_steps"] = scale.finder_steps
        if confirm is not None:
            kwargs["confirm"] = confirm
            if scale.confirm_length is not None:
                kwargs["confirm_length"] = scale.confirm_length
        finder = LRFinder(**kwargs)
        return task.default_lr["adamw"], [LRSchedule(task.schedule, log_plan=False), finder], finder

    return make


def _lora(task: Task) -> tuple[float, list[Any], Any]:
    from lr_callbacks import LRSchedule

    schedule = LRSchedule(
        task.schedule, group_schedules={"head": "constant"}, peak_lrs={"lora": 1e-3, "head": 1e-4}, log_plan=False
    )
    return 1e-3, [schedule], None


def _good_region(ctx: Context, task: Task, start_loss: float) -> dict[str, Any] | None:
    """The LRs of the finder benchmark's MiniLM grid that get at least half of the best gain, from the run cache.

    The region is the contiguous range of LRs around the grid's best whose mean validation loss is at most
    ``L* + (L_start − L*) / 2``: fine-tuning there buys at least half of what the best LR buys over the
    starting point (the linear probe, ``L_start``). Its edges are where the grid's curve, interpolated
    linearly in log10(LR), crosses that bound.
    """
    from benchmarks.finder_quality import FULL as FINDER_FULL
    from benchmarks.finder_quality import QUICK as FINDER_QUICK
    from benchmarks.finder_quality import RunCache, _ground_truth

    finder_scale = FINDER_QUICK if ctx.quick else FINDER_FULL
    steps = finder_scale.tasks.get("minilm")
    if steps is None or make_task("minilm", steps).fingerprint() != task.fingerprint():
        return None  # the finder benchmark's grid is a different task (size, budget)
    cache = RunCache(ctx.path("cache", "runs.json"))
    truth = _ground_truth(cache, task, "adamw", finder_scale)
    cache.save()
    bound = truth["best_loss"] + (start_loss - truth["best_loss"]) / 2
    low = high = truth["best_index"]
    while low > 0 and truth["mean_loss"][low - 1] <= bound:
        low -= 1
    while high + 1 < len(truth["lrs"]) and truth["mean_loss"][high + 1] <= bound:
        high += 1
    forgetting = [statistics.mean(r.get("forgetting", math.nan) for r in per) for per in truth["runs"]]
    accuracy = [statistics.mean(r["accuracy"] for r in per) for per in truth["runs"]]
    return {
        "low": _crossing(truth["lrs"], truth["mean_loss"], low, low - 1, bound),
        "high": _crossing(truth["lrs"], truth["mean_loss"], high, high + 1, bound),
        "start_loss": start_loss,
        "best_lr": truth["best_lr"],
        "best_loss": truth["best_loss"],
        "bound": bound,
        "lrs": truth["lrs"],
        "mean_loss": truth["mean_loss"],
        "forgetting": forgetting,
        "val_accuracy": accuracy,
    }


def _crossing(lrs: list[float], losses: list[float], inside: int, outside: int, bound: float) -> float:
    """Where the loss curve, linear in log10(LR) between two grid points, crosses ``bound``.

    >>> _crossing([1e-5, 1e-4], [0.4, 0.6], inside=0, outside=1, bound=0.5)  # half-way on the log axis
    3.1622776601683795e-05
    """
    if outside < 0 or outside >= len(lrs) or not math.isfinite(losses[outside]):
        return lrs[inside]
    a, b = math.log10(lrs[inside]), math.log10(lrs[outside])
    t = (bound - losses[inside]) / (losses[outside] - losses[inside])
    return float(10 ** (a + t * (b - a)))


def run(ctx: Context) -> dict[str, Any] | list[dict[str, Any]]:
    """Run the fine-tuning story; write ``finetune.md``/``.json`` and a plot; return the table for the summary."""
    from benchmarks.models.minilm import minilm_task

    scale = QUICK if ctx.quick else FULL
    started = time.perf_counter()
    task = minilm_task(steps=scale.steps, limit=scale.limit)
    setups = _setups(scale)
    setups.append(("LoRA 1e-3 (warmup + decay), head 1e-4 (constant)", "1e-3 / 1e-4", _lora))
    setups = [setup for setup in setups if setup[0] not in scale.skip]
    runs: dict[str, list[dict[str, Any]]] = {}
    probe = task.build()
    start = evaluate(task, probe)
    runs["linear probe only (no fine-tuning)"] = [
        {
            "seed": 0,
            "val_loss": start["loss"],
            "val_accuracy": start["accuracy"],
            "lr": math.nan,
            **_metrics(task, probe),
        }
    ]
    with ctx.scratch() as root, quiet():
        for name, _label, make in setups:
            log(f"finetune: {name}")
            the_task = minilm_task(steps=scale.steps, lora=True, limit=scale.limit) if make is _lora else task
            for seed in range(scale.seeds):
                peak, callbacks, finder = make(the_task)
                result = _fit(the_task, seed, peak, callbacks, root)
                if finder is not None:
                    result["lr"] = _applied_lr(callbacks[0])
                    result["finder_steps"] = getattr(finder.result, "steps", None) if finder.result else None
                else:
                    result["lr"] = peak
                runs.setdefault(name, []).append({"seed": seed, **result})
        region = _good_region(ctx, task, start["loss"])
    rows = _table(runs, region)
    seconds = time.perf_counter() - started
    write_json(ctx.path("finetune.json"), {"rows": rows, "runs": runs, "good_region": region})
    _report(ctx, task, scale, rows, region, seconds)
    return rows


def _applied_lr(schedule: Any) -> float:
    return float(schedule.peak_lrs[0][0])


def _table(runs: dict[str, list[dict[str, Any]]], region: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    sweep = {k: v for k, v in runs.items() if k.startswith("sweep:")}
    pick = min(sweep, key=lambda k: statistics.mean(r["val_loss"] for r in sweep[k])) if sweep else None
    for name, results in runs.items():
        lrs = [r["lr"] for r in results]
        geo = math.exp(statistics.mean(math.log(v) for v in lrs)) if all(v > 0 for v in lrs) else math.nan
        row: dict[str, Any] = {
            "setup": name + (" ← the sweep's pick" if name == pick else ""),
            "lr": geo,
            "lrs": lrs,
            "val_loss": statistics.mean(r["val_loss"] for r in results),
            "test_accuracy": statistics.mean(r["test_accuracy"] for r in results),
            "forgetting": statistics.mean(r["forgetting"] for r in results),
            "seeds": len(results),
        }
        if region is not None and not name.startswith(("LoRA", "linear probe")):
            inside = sum(region["low"] <= v <= region["high"] for v in lrs)
            row["in_good_region"] = f"{inside}/{len(lrs)} seeds"
        rows.append(row)
    return rows


def _report(
    ctx: Context, task: Task, scale: Scale, rows: list[dict[str, Any]], region: dict[str, Any] | None, seconds: float
) -> None:
    from lr_callbacks.core.plot import Line, Marker, save_png

    header = ["setup", "peak LR", "val loss", "test accuracy", "forgetting", "in the good region"]
    table = [
        [
            r["setup"],
            " / ".join(fmt(v) for v in r["lrs"]) if len(set(r["lrs"])) > 1 else fmt(r["lr"]),
            fmt(r["val_loss"]),
            f"{r['test_accuracy'] * 100:.1f}%",
            fmt(r["forgetting"]),
            r.get("in_good_region", "-"),
        ]
        for r in rows
    ]
    region_text = "not measured (the finder benchmark's MiniLM grid is not part of this run)"
    plot = ""
    if region is not None:
        region_text = (
            f"{fmt(region['low'])} to {fmt(region['high'])}: mean validation loss ≤ {fmt(region['bound'])}, half-way "
            f"from the probe's {fmt(region['start_loss'])} to the grid's best {fmt(region['best_loss'])} "
            f"(at {fmt(region['best_lr'])})"
        )
        markers = [Marker(region["low"], "good region", x_end=region["high"], color="tab:green")]
        for r in rows:
            if r["setup"].startswith("LRFinder"):
                markers.append(
                    Marker(r["lr"], r["setup"], color="tab:red" if "default" in r["setup"] else "tab:purple")
                )
        save_png(
            ctx.path("finetune_grid.png"),
            [
                Line(region["lrs"], region["mean_loss"], "val loss", "k.-"),
                Line(region["lrs"], region["forgetting"], "forgetting (1 − Spearman)", "r.-"),
                Line(region["lrs"], [1 - a for a in region["val_accuracy"]], "validation error", "b.-"),
            ],
            title="MiniLM grid: validation loss and error, forgetting",
            xlabel="peak LR",
            ylabel="value",
            logx=True,
            markers=markers,
        )
        plot = "![MiniLM grid](finetune_grid.png)\n"
    text = f"""# The fine-tuning story: MiniLM

{stamp(ctx, seconds)}

Task: {task.describe}. Every setup trains in a real `Trainer` with `LRSchedule` for {scale.steps} steps,
{scale.seeds} seed(s) each (numbers are means over seeds). Test accuracy is on a split nothing is tuned on;
forgetting is 1 − Spearman correlation between the original model's and the fine-tuned model's pairwise
cosine similarities on held-out docstrings of other stdlib packages (0: untouched). The linear-probe head
alone (no fine-tuning) is the starting point of every run.

Good region: {region_text}.

{markdown_table(header, table)}

{plot}"""
    with open(ctx.path("finetune.md"), "w") as handle:
        handle.write(text)
