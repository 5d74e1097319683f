"""``python -m benchmarks``: run the benchmarks and write their results.

    python -m benchmarks                      # everything, full size, into benchmarks/results/
    python -m benchmarks --quick              # a smoke size (about a minute), into benchmarks/results/quick/
    python -m benchmarks --only finder,watchdog --out /tmp/bench
    python -m benchmarks --only finder --tasks digits-vit,tabular --finders lr_callbacks --seeds 5
    python -m benchmarks --only finder_variants   # the finder at budget ×1/×5, mid-training, with clipping
    python -m benchmarks --only watchdog --methods lr_callbacks.per_sample
    python -m benchmarks --only early         # the watchdog's faults moved into the peak window (steps 25, 12)
    python -m benchmarks --only finder,finetune --report-only   # render again from the JSON, train nothing

Each benchmark writes a markdown table (and PNG plots) stamped with the command, the machine and the package
versions; ``summary.json`` gathers the headline numbers. With ``--only``, the other sections of an existing
``summary.json`` are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

BENCHMARKS = ("overhead", "finder", "finder_variants", "watchdog", "early", "natural", "finetune")
REPORTS = {
    "overhead": "overhead.md",
    "finder": "finder.md",
    "finder_variants": "finder_variants.md",
    "watchdog": "watchdog.md",
    "early": "watchdog_early.md",
    "natural": "watchdog_natural.md",
    "finetune": "finetune.md",
}
"""The report each benchmark writes; its stamp names the command that produced the benchmark's summary section."""
RENDERED = ("finder", "finetune")
"""The benchmarks whose report ``--report-only`` can render again from their JSON."""
HERE = os.path.dirname(os.path.abspath(__file__))


_MODULES = {
    "overhead": "overhead",
    "finder": "finder_quality",
    "finder_variants": "finder_variants",
    "watchdog": "watchdog_recovery",
    "early": "watchdog_early",
    "natural": "watchdog_natural",
    "finetune": "finetune",
}


def _runner(name: str) -> Callable[[Any], Any]:
    import importlib

    run: Callable[[Any], Any] = importlib.import_module(f"benchmarks.{_MODULES[name]}").run
    return run


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; bad values exit with a message naming the option and the fix."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Benchmarks of lr_callbacks.")
    parser.add_argument("--quick", action="store_true", help="a smoke size, written to <out>/quick by default")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--out", default=None, help="output directory (default: benchmarks/results[/quick])")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument(
        "--tasks",
        default="",
        help="a subset: finder: tasks (digits-mlp) or pairs (digits-mlp/sgd); finetune: setups by the start of "
        "their names (full run, LRFinder)",
    )
    parser.add_argument("--finders", default="", help="a subset of the finder benchmark's finders")
    parser.add_argument(
        "--methods",
        default="",
        help="a subset of the watchdog benchmark's methods (the others' runs are kept from the previous results)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds per setup (finder: finder seeds; finetune; early: fault seeds)"
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="finetune: run seeds from this one on (the runs of other seeds are kept from the previous results)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help=f"train nothing: render the reports of {', '.join(RENDERED)} and summary.md again from their JSON, "
        "keeping each report's stamp",
    )
    args = parser.parse_args(argv)
    if args.only is None:
        args.only = ",".join(RENDERED if args.report_only else BENCHMARKS)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in BENCHMARKS]
    if unknown or not only:
        parser.error(f"--only takes names among {', '.join(BENCHMARKS)}; got {args.only!r}")
    args.only = [name for name in BENCHMARKS if name in only]
    if args.report_only and any(name not in RENDERED for name in args.only):
        parser.error(f"--report-only renders {', '.join(RENDERED)}; got --only {','.join(args.only)}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}")
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be at least 1; got {args.seeds}")
    if args.first_seed < 0:
        parser.error(f"--first-seed must be at least 0; got {args.first_seed}")
    args.tasks = tuple(name.strip() for name in args.tasks.split(",") if name.strip())
    args.finders = tuple(name.strip() for name in args.finders.split(",") if name.strip())
    args.methods = tuple(name.strip() for name in args.methods.split(",") if name.strip())
    if args.methods:
        from benchmarks.watchdog_recovery import METHODS

        unknown = [name for name in args.methods if name not in METHODS]
        if unknown:
            parser.error(f"--methods takes names among {', '.join(METHODS)}; got {', '.join(unknown)}")
    if args.out is None:
        args.out = os.path.join(HERE, "results", "quick") if args.quick else os.path.join(HERE, "results")
    return args


def _produced_by(name: str, stamp: str) -> str:
    """The line under a section of ``summary.md`` that names the run behind it, from its report's stamp.

    >>> _produced_by("natural", "- command: `python -m benchmarks --only natural` at commit `8bd9f`\\n- machine")
    'From `python -m benchmarks --only natural` at commit `8bd9f` (`watchdog_natural.md` has the machine and versions).'
    >>> _produced_by("finder", "")
    'From a run whose `finder.md` has no stamp.'
    """
    first = stamp.split("\n", 1)[0]
    if not first.startswith("- command: "):
        return f"From a run whose `{REPORTS[name]}` has no stamp."
    return f"From {first.removeprefix('- command: ')} (`{REPORTS[name]}` has the machine and versions)."


def summary_markdown(summary: dict[str, Any], stamps: dict[str, str]) -> str:
    """``summary.json`` as markdown tables (what the README links to); ``stamps`` holds each section's report stamp.

    The sections come from different runs (``--only``), so each names the command and commit of its own.
    """
    from benchmarks._common import fmt, markdown_table

    def heading(title: str, name: str) -> str:
        return f"## {title}\n\n{_produced_by(name, stamps.get(name, ''))}\n\n"

    parts = [
        "# Benchmark summary\n\nEach section comes from the run named under its title. Details: `overhead.md`, "
        "`finder.md`, `finder_variants.md`, `watchdog.md`, `watchdog_early.md`, `watchdog_natural.md`, `finetune.md`."
    ]
    if "overhead" in summary:
        rows = [
            [
                name,
                f"{(r['ratio'] - 1) * 100:+.2f}%",
                f"{r['us_per_step']:.0f}",
                f"{(r['ab_ratio'] - 1) * 100:+.2f}%" if "ab_ratio" in r else "-",
                fmt(r["host_reads_per_step"]),
            ]
            for name, r in summary["overhead"].items()
        ]
        header_row = [
            "model",
            "added step time (in our hooks)",
            "µs/step in our hooks",
            "A/B median, CPU time (noise ±10%)",
            "added host reads/step",
        ]
        title = "Overhead (LRSchedule + LRFinder + DivergenceWatchdog)"
        parts.append(heading(title, "overhead") + markdown_table(header_row, rows))
    if "finder" in summary:
        order = sorted(summary["finder"], key=lambda m: summary["finder"][m]["median_regret"] or 0.0)
        rows = [
            [
                m,
                pairs,
                fmt(entry.get("median_regret")),
                fmt(entry.get("p90_regret")),
                fmt(entry.get("worst_regret")),
                f"{entry.get('over_0_3')}/{entry.get('runs')}",
                entry.get("diverged"),
            ]
            for m in order
            for pairs, entry in (
                ("all", summary["finder"][m]),
                ("tuning", summary["finder"][m].get("tuning") or {}),
                ("held out", summary["finder"][m].get("held_out") or {}),
                ("held out, second set", summary["finder"][m].get("held_out_second") or {}),
                ("held out, third set", summary["finder"][m].get("held_out_third") or {}),
                ("held out, fourth set", summary["finder"][m].get("held_out_fourth") or {}),
                ("held out, fifth set", summary["finder"][m].get("held_out_fifth") or {}),
            )
            if entry.get("runs")
        ]
        header_row = ["finder", "pairs", "median regret", "p90 regret", "worst regret", "regret > 0.3", "diverged runs"]
        title = "LR finder quality (normalized regret: 0 = grid best, 1 = torch's default LR)"
        parts.append(heading(title, "finder") + markdown_table(header_row, rows))
    if "finder_variants" in summary:
        rows = [
            [
                variant,
                entry["steps"],
                f"{fmt(entry['best_lr'])} ({fmt(entry['lr_star'])})",
                m,
                fmt(f["median_regret"]),
                fmt(f["worst_regret"]),
                f"{f['over_0_3']}/{f['runs']}",
                f["diverged"],
            ]
            for variant, entry in summary["finder_variants"].items()
            for m, f in entry["finders"].items()
        ]
        header_row = [
            "variant",
            "steps",
            "grid best LR (LR*)",
            "finder",
            "median regret",
            "worst regret",
            "regret > 0.3",
            "diverged runs",
        ]
        title = "LR finder under variants of one pair (each against its own grid)"
        parts.append(heading(title, "finder_variants") + markdown_table(header_row, rows))
    if "watchdog" in summary:
        rows = [
            [
                m,
                f"{r['recovered']}/{r['runs']}",
                f"{r['recovered_3_seeds']}/{r['runs_3_seeds']}",
                fmt(r["damage_undone"]),
                f"{fmt(r['held_out_damage_undone'])} [{fmt(r['held_out_damage_undone_ci'][0])}, "
                f"{fmt(r['held_out_damage_undone_ci'][1])}]",
                f"{r['false_interventions']} in {r['clean_steps']:,}",
                r["worse_than_none"],
            ]
            for m, r in summary["watchdog"].items()
        ]
        header_row = [
            "method",
            "recovered runs",
            "of them, seeds 0-2",
            "damage undone (median)",
            "held-out damage undone [95% CI]",
            "false interventions in clean steps",
            "runs worse than none",
        ]
        parts.append(heading("Watchdog recovery", "watchdog") + markdown_table(header_row, rows))
    if "early" in summary:
        rows = [
            [
                f"{start} + 2 × seed",
                f"{r['recovered']}/{r['runs']}",
                f"{r['none_recovered']}/{r['runs']}",
                f"{fmt(r['damage_undone'])} [{fmt(r['damage_undone_ci'][0])}, {fmt(r['damage_undone_ci'][1])}]",
                f"{r['worse_than_none']}/{r['runs']}",
            ]
            for start, r in summary["early"].items()
        ]
        header_row = [
            "faults from step",
            "recovered (lr_callbacks)",
            "recovered (none)",
            "damage undone, median [95% CI]",
            "runs worse than none",
        ]
        title = "Watchdog under faults in the peak window (the recovery benchmark's faults, started early)"
        parts.append(heading(title, "early") + markdown_table(header_row, rows))
    if "natural" in summary:
        natural = summary["natural"]
        parts.append(
            heading("Watchdog under natural instability", "natural")
            + "charlm at 1-60× its best LR, no injection: the guarded run "
            f"within 10% of the best-LR run at {natural['within_10pct']} of {natural['unstable_multiples']} "
            f"unstable LRs; never worse than unguarded: {'yes' if natural['never_worse'] else 'no'}. One snapshot "
            f"of charlm (model + AdamW state): {natural['snapshot_mib']:.2f} MiB, {natural['snapshot_host_ms']:.2f} "
            f"ms in host memory, {natural['snapshot_disk_ms']:.2f} ms on disk."
        )
    if "finetune" in summary:
        rows = [
            [
                r["setup"],
                fmt(r["lr"]),
                fmt(r["val_loss"]),
                f"{r['test_accuracy'] * 100:.1f}%",
                fmt(r["forgetting"]),
                r.get("in_good_region", "-"),
            ]
            for r in summary["finetune"]
        ]
        header_row = ["setup", "peak LR", "val loss", "test accuracy", "forgetting", "in the good region"]
        parts.append(heading("Fine-tuning MiniLM", "finetune") + markdown_table(header_row, rows))
    return "\n\n".join(parts) + "\n"


def _stamps(out: str, summary: dict[str, Any]) -> dict[str, str]:
    """The stamp of each section's report in ``out`` (the run that wrote the section wrote its report too)."""
    from benchmarks._common import stamp_of

    return {name: stamp_of(os.path.join(out, REPORTS[name])) for name in summary if name in REPORTS}


def _read_summary(path: str) -> dict[str, Any]:
    """The benchmarks' sections of ``summary.json`` as the file holds them now (``{}`` if there is none)."""
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return {k: v for k, v in json.load(handle).items() if k in BENCHMARKS}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks the command line names; return the summary it wrote."""
    args = parse(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from benchmarks._common import Context, log, stamp, write_json

    torch.set_num_threads(args.threads)
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    ctx = Context(
        out=os.path.abspath(args.out),
        command=command.strip(),
        quick=args.quick,
        threads=args.threads,
        tasks=args.tasks,
        finders=args.finders,
        seeds=args.seeds,
        first_seed=args.first_seed,
        methods=args.methods,
    )
    os.makedirs(ctx.out, exist_ok=True)
    summary_path = os.path.join(ctx.out, "summary.json")
    if args.report_only:
        import importlib

        for name in args.only:
            log(f"== {name}: rendering its report again")
            importlib.import_module(f"benchmarks.{_MODULES[name]}").render(ctx)
        summary = _read_summary(summary_path)
        with open(os.path.join(ctx.out, "summary.md"), "w") as handle:
            handle.write(summary_markdown(summary, _stamps(ctx.out, summary)))
        return summary
    ours: dict[str, Any] = {}  # the sections this run wrote; the others are read again before each write
    summary: dict[str, Any] = {}
    times: dict[str, float] = {}
    started = time.perf_counter()
    for name in args.only:
        log(f"== {name}")
        begin = time.perf_counter()
        ours[name] = _runner(name)(ctx)
        times[name] = time.perf_counter() - begin
        summary = {**_read_summary(summary_path), **ours}  # a run in another process may have written its part
        write_json(summary_path, {k: summary[k] for k in BENCHMARKS if k in summary})
    total = time.perf_counter() - started
    lines = [f"- {name}: {seconds / 60:.1f} min" for name, seconds in times.items()]
    timing_path = os.path.join(ctx.out, "timing.md")
    if list(args.only) == list(BENCHMARKS) or not os.path.exists(timing_path):
        with open(timing_path, "w") as handle:
            handle.write(f"# Wall time\n\n{stamp(ctx, total)}\n\n" + "\n".join(lines) + "\n")
    else:  # a partial rerun keeps the record of the whole run and adds its own
        with open(timing_path) as handle:
            text = handle.read()
        if "\n## Partial reruns\n" not in text:
            text += "\n## Partial reruns\n\nTheir results replace the whole run's for the benchmarks they ran.\n"
        with open(timing_path, "w") as handle:
            handle.write(text + f"\n{stamp(ctx, total)}\n\n" + "\n".join(lines) + "\n")
    with open(os.path.join(ctx.out, "summary.md"), "w") as handle:
        handle.write(summary_markdown(summary, _stamps(ctx.out, summary)))
    log(f"== done in {total / 60:.1f} min; results in {ctx.out}")
    return summary


if __name__ == "__main__":
    main()
