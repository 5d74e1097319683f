"""``python -m benchmarks``: run the four benchmarks and write their results.

    python -m benchmarks                      # everything, full size, into benchmarks/results/
    python -m benchmarks --quick              # a smoke size (about a minute), into benchmarks/results/quick/
    python -m benchmarks --only finder,watchdog --out /tmp/bench

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

BENCHMARKS = ("overhead", "finder", "watchdog", "finetune")
HERE = os.path.dirname(os.path.abspath(__file__))


def _runner(name: str) -> Callable[[Any], Any]:
    import importlib

    module = {
        "overhead": "overhead",
        "finder": "finder_quality",
        "watchdog": "watchdog_recovery",
        "finetune": "finetune",
    }
    run: Callable[[Any], Any] = importlib.import_module(f"benchmarks.{module[name]}").run
    return run


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; bad values exit with a message naming the option and the fix."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Benchmarks of lr_callbacks.")
    parser.add_argument("--quick", action="store_true", help="a smoke size, written to <out>/quick by default")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}"
    )
    parser.add_argument("--out", default=None, help="output directory (default: benchmarks/results[/quick])")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 quick, 2 full)")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in BENCHMARKS]
    if unknown or not only:
        parser.error(f"--only takes names among {', '.join(BENCHMARKS)}; got {args.only!r}")
    args.only = [name for name in BENCHMARKS if name in only]
    if args.threads is None:
        args.threads = 1 if args.quick else min(2, os.cpu_count() or 1)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}")
    if args.out is None:
        args.out = os.path.join(HERE, "results", "quick") if args.quick else os.path.join(HERE, "results")
    return args


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
    ctx = Context(out=os.path.abspath(args.out), command=command.strip(), quick=args.quick, threads=args.threads)
    os.makedirs(ctx.out, exist_ok=True)
    summary_path = os.path.join(ctx.out, "summary.json")
    summary: dict[str, Any] = {}
    if os.path.exists(summary_path):
        with open(summary_path) as handle:
            summary = {k: v for k, v in json.load(handle).items() if k in BENCHMARKS}
    times: dict[str, float] = {}
    started = time.perf_counter()
    for name in args.only:
        log(f"== {name}")
        begin = time.perf_counter()
        summary[name] = _runner(name)(ctx)
        times[name] = time.perf_counter() - begin
        write_json(summary_path, {k: summary[k] for k in BENCHMARKS if k in summary})
    total = time.perf_counter() - started
    lines = [f"- {name}: {seconds / 60:.1f} min" for name, seconds in times.items()]
    with open(os.path.join(ctx.out, "timing.md"), "w") as handle:
        handle.write(f"# Wall time\n\n{stamp(ctx, total)}\n\n" + "\n".join(lines) + "\n")
    log(f"== done in {total / 60:.1f} min; results in {ctx.out}")
    return summary


if __name__ == "__main__":
    main()
