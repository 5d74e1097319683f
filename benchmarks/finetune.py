"""Benchmark 4: the fine-tuning story practitioners tell, measured on MiniLM: task accuracy *and* forgetting.

Every run fine-tunes all-MiniLM-L6-v2 on the docstring task (:mod:`benchmarks.models.minilm`) with a **fresh
(random) head**, in a real ``Trainer`` with ``LRSchedule`` (10% warmup, linear decay), for a budget of 300
steps, over several seeds:

- ``full run: <lr>``: the whole budget at each LR of both candidate lists, 1e-4 / 1e-5 / 1e-6 (the
  practitioners' sweep, one decade apart) and 5e-5 / 3e-5 / 2e-5 (the BERT paper's), and 3e-4, 5e-4, 7e-4 and 1e-3
  above them: the ground truth of the confirm trials and of the good region;
- ``pretraining LR``: 2e-4, flat (constant);
- ``LRFinder``: our finder at its defaults sets the peak (its sweep must stay within 25% of the budget);
- ``LRFinder confirm``: the finder's confirm mode at its defaults, over 1e-4 / 1e-5 / 1e-6 and over
  5e-5 / 3e-5 / 2e-5;
- ``LoRA``: adapters (rank 8) in a frozen encoder at 1e-3 under warmup and decay, the head at 1e-4 under a
  constant schedule: two groups, two schedules, through ``LRSchedule(group_schedules=..., peak_lrs=...)``
  (it starts from the linear probe: a frozen encoder cannot train a random head far in this budget).

Reported per setup: validation loss, test accuracy (a split nothing is tuned on), forgetting (``1 −
Spearman`` of the held-out similarity structure against the original model) and the finder's cost (its steps
and time, the trials' losses). For each confirm list and seed: whether the trials picked the full-run best or
one within seed-to-seed noise of it (the standard deviation over seeds of the best full run's loss), and
Kendall's τ between the trials' ranking and the full runs' (same seed). The **good region** is the range of
the full runs' LRs around their best (mean over seeds) where fine-tuning buys at least half of the best LR's
gain over the start (the fresh model): mean validation loss ≤ L* + (L_start − L*) / 2, interpolated in log LR.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

from benchmarks._common import Context, _commit, fmt, log, markdown_table, quiet, stamp, stamp_of, write_json
from benchmarks.models import Task, TaskModule, evaluate, train_loader

__all__ = ["CANDIDATES", "Scale", "kendall_tau", "run", "trial_ranking"]

CANDIDATES = {"decades": (1e-4, 1e-5, 1e-6), "bert": (5e-5, 3e-5, 2e-5)}
"""The confirm mode's candidate lists: one decade apart, and the BERT paper's fine-tuning LRs."""

SWEEP_SHARE = 0.25
"""The most of the budget the finder's sweep may take in this protocol (its default must stay within it)."""


@dataclass(frozen=True)
class Scale:
    """How much to run."""

    steps: int
    seeds: int
    full_lrs: tuple[float, ...]  # the LRs trained for the whole budget (both candidate lists and above)
    head: str = "fresh"
    finder_steps: int | None = None  # the finder's sweep length (None: its default)
    confirm_length: str | None = None  # each confirm trial's length (None: its default)
    limit: int | None = None  # examples per split (None: all; a smoke size otherwise)
    skip: tuple[str, ...] = ()  # setups left out (a smoke size)


FULL = Scale(steps=300, seeds=5, full_lrs=(1e-6, 1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 3e-4, 5e-4, 7e-4, 1e-3))
"""1e-3 bounds the good region from above; 5e-4 and 7e-4 measure where between 3e-4 and 1e-3 its upper edge lies
(interpolated across that 3.3× gap it sat at 6.3e-4, below LRs whose own runs ended far inside the region's loss
bound); 5e-4 turned out to be the best full run."""
QUICK = Scale(
    steps=4,
    seeds=1,
    full_lrs=(1e-6, 1e-5, 1e-4),
    finder_steps=10,
    confirm_length="2 steps",
    limit=40,
    skip=("LRFinder confirm (5e-5, 3e-5, 2e-5)",),
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
        limit_val_batches=None,
        check_val_every_n_epoch=None,
        val_check_interval=10**9,
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


def _label(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


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
        (f"full run: {_label(lr)}", _label(lr), schedule(lr)) for lr in sorted(scale.full_lrs, reverse=True)
    ]
    setups.append(("pretraining LR, flat", "2e-4", schedule(2e-4, "constant")))
    setups.append(("LRFinder (default)", "found", _finder(scale, None)))
    for values in CANDIDATES.values():
        name = f"LRFinder confirm ({', '.join(_label(v) for v in values)})"
        setups.append((name, "found", _finder(scale, list(values))))
    return setups


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


def _good_region(runs: dict[str, list[dict[str, Any]]], start_loss: float) -> dict[str, Any] | None:
    """The LRs around the full runs' best that get at least half of the best gain over the start.

    The region is the contiguous range of the full runs' LRs around the best (mean validation loss over
    seeds, ``L*``) whose mean loss is at most ``L* + (L_start − L*) / 2``: fine-tuning there buys at least half
    of what the best LR buys over the starting point (``L_start``). Its edges are where the curve, linear in
    log10(LR) between the LRs, crosses that bound.
    """
    full = sorted((r[0]["lr"], statistics.mean(x["val_loss"] for x in r)) for k, r in runs.items() if _is_full(k))
    if len(full) < 2:
        return None
    lrs, losses = [lr for lr, _ in full], [loss for _, loss in full]
    best = min(range(len(lrs)), key=losses.__getitem__)
    bound = losses[best] + (start_loss - losses[best]) / 2
    low = high = best
    while low > 0 and losses[low - 1] <= bound:
        low -= 1
    while high + 1 < len(lrs) and losses[high + 1] <= bound:
        high += 1
    return {
        "low": _crossing(lrs, losses, low, low - 1, bound),
        "high": _crossing(lrs, losses, high, high + 1, bound),
        "start_loss": start_loss,
        "best_lr": lrs[best],
        "best_loss": losses[best],
        "bound": bound,
        "lrs": lrs,
        "mean_loss": losses,
    }


def _is_full(name: str) -> bool:
    return name.startswith("full run: ")


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
    if ctx.seeds is not None:
        scale = replace(scale, seeds=ctx.seeds)
    started = time.perf_counter()
    task = minilm_task(steps=scale.steps, limit=scale.limit, head=scale.head)
    setups = _setups(scale)
    setups.append(("LoRA 1e-3 (warmup + decay), head 1e-4 (constant)", "1e-3 / 1e-4", _lora))
    setups = [setup for setup in setups if setup[0] not in scale.skip]
    if ctx.tasks:  # --tasks: a subset of setups, by the start of their names ("full run", "LRFinder")
        setups = [setup for setup in setups if setup[0].startswith(ctx.tasks)]
    runs: dict[str, list[dict[str, Any]]] = {}
    import torch

    torch.manual_seed(0)
    start_model = task.build()
    start = evaluate(task, start_model)
    runs["no fine-tuning (the starting model)"] = [
        {"seed": 0, "val_loss": start["loss"], "val_accuracy": start["accuracy"], "lr": math.nan}
        | _metrics(task, start_model)
    ]
    with ctx.scratch() as root, quiet():
        for seed in range(ctx.first_seed, ctx.first_seed + scale.seeds):
            for name, _, make in setups:
                log(f"finetune: seed {seed} {name}")
                the_task = minilm_task(steps=scale.steps, lora=True, limit=scale.limit) if make is _lora else task
                peak, callbacks, finder = make(the_task)
                began = time.perf_counter()
                result = _fit(the_task, seed, peak, callbacks, root)
                result["seconds"] = time.perf_counter() - began
                result["lr"] = _applied_lr(callbacks[0]) if finder is not None else peak
                if finder is not None and finder.result is not None:
                    result["finder"] = _finder_record(finder.result, scale.steps)
                runs.setdefault(name, []).append({"seed": seed, **result, "commit": _commit()})
    if not ctx.quick:
        runs = _with_previous(runs, ctx.path("finetune.json"))
    region = _good_region(runs, start["loss"])
    rows = _table(runs, region)
    confirm = _confirm_quality(runs)
    seconds = time.perf_counter() - started
    write_json(ctx.path("finetune.json"), {"rows": rows, "confirm": confirm, "runs": runs, "good_region": region})
    _report(ctx, task, scale, rows, confirm, region, seconds)
    return rows


def render(ctx: Context) -> None:
    """Write ``finetune.md`` and its plot again from ``finetune.json`` in ``ctx.out``, keeping the report's stamp.

    Nothing is trained: the text follows the renderer's code, the numbers are those of the JSON.
    """
    from benchmarks.models.minilm import minilm_task

    with open(ctx.path("finetune.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    scale = QUICK if ctx.quick else FULL
    task = minilm_task(steps=scale.steps, limit=scale.limit, head=scale.head)
    header = stamp_of(ctx.path("finetune.md"))
    _report(ctx, task, scale, data["rows"], data["confirm"], data["good_region"], None, header)


def _with_previous(runs: dict[str, list[dict[str, Any]]], path: str) -> dict[str, list[dict[str, Any]]]:
    """``runs`` and, for every setup and seed this invocation did not run, the previous results' run (so that
    seeds and setups can be run in parts); each run keeps the commit it ran at."""
    if not os.path.exists(path):
        return runs
    with open(path, encoding="utf-8") as handle:
        previous: dict[str, list[dict[str, Any]]] = json.load(handle).get("runs", {})
    merged = {name: list(records) for name, records in runs.items()}
    for name, records in previous.items():
        if name.startswith("no fine-tuning"):
            continue
        done = {r["seed"] for r in merged.get(name, [])}
        merged.setdefault(name, []).extend(r for r in records if r["seed"] not in done)
    return {name: sorted(records, key=lambda r: r["seed"]) for name, records in merged.items()}


def _seed_counts(rows: list[dict[str, Any]]) -> str:
    """How many seeds the setups ran: ``"5 seeds"``, or ``"2-5 seeds"`` when they differ.

    >>> start = {"setup": "no fine-tuning (the starting model)", "seeds": 1}
    >>> a, b = {"setup": "a", "seeds": 2}, {"setup": "b", "seeds": 5}
    >>> _seed_counts([start, b]), _seed_counts([a, b])
    ('5 seeds', '2-5 seeds')
    """
    counts = sorted({int(r["seeds"]) for r in rows if r.get("seeds") and not str(r["setup"]).startswith("no ")})
    if not counts:
        return "no seeds"
    low, high = counts[0], counts[-1]
    return f"{high} seed{'s' if high > 1 else ''}" if low == high else f"{low}-{high} seeds"


def _finder_record(result: Any, budget: int) -> dict[str, Any]:
    """What the finder did: its steps (sweep, probe, trials) as counts and as a share of the budget, and more."""
    from benchmarks.finders import _record, _steps_spent

    steps = _steps_spent(result)
    return {
        "steps": steps,
        "sweep_steps": len(result.lrs),
        "cost": steps / budget,
        "sweep_share": len(result.lrs) / budget,
        "suggestion": result.suggestion,
        **_record(result),
    }


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's τ-a between two scorings of the same items (ties count as neither concordant nor discordant).

    >>> kendall_tau([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]), kendall_tau([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    (1.0, -1.0)
    """
    n = len(a)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if not pairs:
        return math.nan
    score = sum(_sign(a[i] - a[j]) * _sign(b[i] - b[j]) for i, j in pairs)
    return score / len(pairs)


def trial_ranking(trials: list[dict[str, Any]]) -> dict[float, int]:
    """The candidates' places (0 the best) in the ranking the trials make under successive halving: a candidate
    that reached a later rung ranks above one that did not, and those of the same last rung by their loss there.
    One place per candidate: before, every rung's trial was an item, so rung-0 losses were compared with longer
    rung-1 ones and a candidate with itself (a tie), and τ could not reach 1 (0.8 was a perfect agreement).

    >>> trial_ranking([{"lr": 1e-4, "val_loss": 1.77, "rung": 0}, {"lr": 1e-5, "val_loss": 1.79, "rung": 0},
    ...                {"lr": 1e-6, "val_loss": 1.80, "rung": 0}, {"lr": 1e-4, "val_loss": 1.74, "rung": 1},
    ...                {"lr": 1e-5, "val_loss": 1.72, "rung": 1}])
    {1e-05: 0, 0.0001: 1, 1e-06: 2}
    """
    last: dict[float, tuple[int, float]] = {}
    for trial in trials:
        rung = int(trial.get("rung", 0))
        if trial["lr"] not in last or rung >= last[trial["lr"]][0]:
            last[trial["lr"]] = (rung, float(trial["val_loss"]))
    order = sorted(last, key=lambda lr: (-last[lr][0], last[lr][1]))
    return {lr: place for place, lr in enumerate(order)}


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _confirm_quality(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per confirm list: each seed's pick against the full runs of the same seed, and Kendall's τ of the ranking."""
    full = {r[0]["lr"]: {x["seed"]: x["val_loss"] for x in r} for k, r in runs.items() if _is_full(k)}
    out: dict[str, Any] = {}
    for key, values in CANDIDATES.items():
        name = f"LRFinder confirm ({', '.join(_label(v) for v in values)})"
        if name not in runs or not all(v in full for v in values):
            continue
        best_lr = min(values, key=lambda v: statistics.mean(full[v].values()))
        noise = statistics.stdev(full[best_lr].values()) if len(full[best_lr]) > 1 else 0.0
        seeds = []
        for run in runs[name]:
            seed, trials = run["seed"], run.get("finder", {}).get("trials", [])
            truth = {v: full[v][seed] for v in values if seed in full[v]}
            ranking = trial_ranking([t for t in trials if t["lr"] in truth])
            lrs = [lr for lr in truth if lr in ranking]
            tau = kendall_tau([ranking[lr] for lr in lrs], [truth[lr] for lr in lrs])
            pick = run["lr"]
            ok = pick in truth and truth[pick] <= min(truth.values()) + noise
            seeds.append(
                {
                    "seed": seed,
                    "pick": pick,
                    "full_run_best": min(truth, key=truth.__getitem__),
                    "pick_ok": ok,
                    "kendall_tau": tau,
                    "flags": run.get("finder", {}).get("flags", []),
                }
            )
        out[key] = {
            "candidates": list(values),
            "best_lr": best_lr,
            "noise": noise,
            "seeds": seeds,
            "picks_ok": sum(s["pick_ok"] for s in seeds),
            "mean_kendall_tau": statistics.mean(s["kendall_tau"] for s in seeds) if seeds else math.nan,
        }
    return out


def _applied_lr(schedule: Any) -> float:
    return float(schedule.peak_lrs[0][0])


def _table(runs: dict[str, list[dict[str, Any]]], region: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    full = {k: v for k, v in runs.items() if _is_full(k)}
    pick = min(full, key=lambda k: statistics.mean(r["val_loss"] for r in full[k])) if full else None
    for name, results in runs.items():
        lrs = [r["lr"] for r in results]
        geo = math.exp(statistics.mean(math.log(v) for v in lrs)) if all(v > 0 for v in lrs) else math.nan
        row: dict[str, Any] = {
            "setup": name + (" ← the best full run" if name == pick else ""),
            "lr": geo,
            "lrs": lrs,
            "val_loss": statistics.mean(r["val_loss"] for r in results),
            "test_accuracy": statistics.mean(r["test_accuracy"] for r in results),
            "forgetting": statistics.mean(r["forgetting"] for r in results),
            "seeds": len(results),
        }
        finders = [r["finder"] for r in results if "finder" in r]
        if finders:
            row["finder_steps"] = statistics.mean(f["steps"] for f in finders)
            row["finder_cost"] = statistics.mean(f["cost"] for f in finders)
        if region is not None and not name.startswith(("LoRA", "no fine-tuning")):
            inside = sum(region["low"] <= v <= region["high"] for v in lrs)
            row["in_good_region"] = f"{inside}/{len(lrs)} seeds"
        rows.append(row)
    return rows


def _report(
    ctx: Context,
    task: Task,
    scale: Scale,
    rows: list[dict[str, Any]],
    confirm: dict[str, Any],
    region: dict[str, Any] | None,
    seconds: float | None,
    stamp_text: str = "",
) -> None:
    from lr_callbacks.core.plot import Line, Marker, save_png

    header = ["setup", "peak LR", "val loss", "test accuracy", "forgetting", "in the good region", "finder cost"]
    table = [
        [
            r["setup"],
            " / ".join(fmt(v) for v in r["lrs"]) if len(set(r["lrs"])) > 1 else fmt(r["lr"]),
            fmt(r["val_loss"]),
            f"{r['test_accuracy'] * 100:.1f}%",
            fmt(r["forgetting"]),
            r.get("in_good_region", "-"),
            f"{fmt(r['finder_steps'])} steps ({fmt(r['finder_cost'])}×)" if "finder_steps" in r else "-",
        ]
        for r in rows
    ]
    confirm_rows = [
        [
            ", ".join(fmt(v) for v in c["candidates"]),
            fmt(c["best_lr"]),
            fmt(c["noise"]),
            " / ".join(fmt(s["pick"]) for s in c["seeds"]),
            f"{c['picks_ok']}/{len(c['seeds'])}",
            " / ".join(fmt(s["kendall_tau"]) for s in c["seeds"]),
            fmt(c["mean_kendall_tau"]),
        ]
        for c in confirm.values()
    ]
    confirm_header = [
        "candidates",
        "full-run best (mean over seeds)",
        "seed noise (std)",
        "picks (per seed)",
        "pick = best or within noise",
        "Kendall τ (per seed)",
        "mean τ",
    ]
    region_text = "not measured (too few full runs)"
    plot = ""
    if region is not None:
        region_text = (
            f"{fmt(region['low'])} to {fmt(region['high'])}: mean validation loss ≤ {fmt(region['bound'])}, half-way "
            f"from the start's {fmt(region['start_loss'])} to the full runs' best {fmt(region['best_loss'])} "
            f"(at {fmt(region['best_lr'])})"
        )
        markers = [Marker(region["low"], "good region", x_end=region["high"], color="tab:green")]
        for r in rows:
            if r["setup"].startswith("LRFinder") and math.isfinite(r["lr"]):
                markers.append(
                    Marker(r["lr"], r["setup"], color="tab:red" if "default" in r["setup"] else "tab:purple")
                )
        save_png(
            ctx.path("finetune_grid.png"),
            [Line(region["lrs"], region["mean_loss"], "val loss (mean over seeds)", "k.-")],
            title="MiniLM full runs: validation loss",
            xlabel="peak LR",
            ylabel="validation loss",
            logx=True,
            markers=markers,
        )
        plot = "![MiniLM full runs](finetune_grid.png)\n"
    text = f"""# The fine-tuning story: MiniLM

{stamp_text or stamp(ctx, seconds)}

Task: {task.describe}. Every setup trains in a real `Trainer` with `LRSchedule` for {scale.steps} steps,
{_seed_counts(rows)} each (numbers are means over seeds; runs of earlier invocations are kept, see
`finetune.json` for each run's commit). Test accuracy is on a split nothing is tuned on;
forgetting is 1 − Spearman correlation between the original model's and the fine-tuned model's pairwise
cosine similarities on held-out docstrings of other stdlib packages (0: untouched). Every run starts from the
same pretrained encoder with a {scale.head} head; the finder runs at its defaults (its sweep may take at most
{SWEEP_SHARE:.0%} of the budget in this protocol), its cost counts the sweep, the probe and the trials.

Good region: {region_text}.

{markdown_table(header, table)}

## Confirm mode against the full runs

A pick is right when the full run at the picked LR (same seed) is the best of the list's full runs on that
seed, or within the seed-to-seed noise of it. Kendall's τ compares the trials' ranking of the candidates
with the full runs' (1: the same order); the trials' ranking is the one successive halving makes, one place per
candidate (a later rung above an earlier one, then the loss at its last rung: `trial_ranking`).

{markdown_table(confirm_header, confirm_rows)}

{plot}"""
    with open(ctx.path("finetune.md"), "w") as handle:
        handle.write(text)
