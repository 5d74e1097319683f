"""``python -m benchmarks --quick`` runs all seven benchmarks end to end and writes well-formed, sane results.

The run is real (a subprocess, as a user would start it) at the smoke size; the checks are on structure and
sanity, not on exact numbers. The committed full results are checked for the same structure, so they cannot
drift away from the code that writes them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks.__main__ import BENCHMARKS, parse
from benchmarks.overhead import FULL, QUICK, Scale
from benchmarks.watchdog_early import FULL as EARLY_FULL
from benchmarks.watchdog_early import QUICK as EARLY_QUICK
from benchmarks.watchdog_recovery import METHODS as WATCHDOG_METHODS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
RESULT_NAMES = ("overhead", "finder", "finder_variants", "watchdog", "watchdog_early", "watchdog_natural", "finetune")
RESULT_NAMES += ("timing", "summary")  # every result a full run writes: the benchmarks', then the run's
WATCHDOG_KEYS = {
    "recovered",
    "runs",
    "recovered_3_seeds",
    "runs_3_seeds",
    "damage_undone",
    "held_out_damage_undone",
    "held_out_damage_undone_ci",
    "held_out_recovered",
    "held_out_runs",
    "worse_than_none",
    "false_interventions",
    "clean_steps",
    "false_interventions_per_1k",
}
EARLY_KEYS = {"worse_than_none", "runs", "damage_undone", "damage_undone_ci", "recovered", "none_recovered"}
STAMP = ("- command: `python -m benchmarks", "- machine: ", "- versions: ", "torch ", "pytorch-lightning ")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("bench"))
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", out],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _summary_structure(summary: dict, all_setups: bool = True, scale: Scale = QUICK) -> None:
    assert list(summary) == list(BENCHMARKS)
    assert set(summary["overhead"]) == set(scale.steps)  # the quick size leaves MiniLM out
    for entry in summary["overhead"].values():
        assert set(entry) == {"ratio", "ab_ratio", "us_per_step", "host_reads_per_step"}
        assert math.isfinite(entry["ratio"]) and entry["ratio"] >= 1.0  # bare + the time inside our hooks
        assert math.isfinite(entry["ab_ratio"]) and entry["ab_ratio"] > 0
        assert math.isfinite(entry["us_per_step"]) and entry["us_per_step"] > 0
        assert entry["host_reads_per_step"] is not None
    assert {"lr_callbacks", "lightning", "torch_lr_finder", "fastai_valley"} <= set(summary["finder"])
    keys = {"median_regret", "p90_regret", "worst_regret", "over_0_3", "diverged", "runs"}
    for entry in summary["finder"].values():
        groups = {"tuning", "held_out", "held_out_second", "held_out_third", "held_out_fourth", "held_out_fifth"}
        assert set(entry) == keys | groups
        for part in (entry, *(entry[g] for g in groups)):
            assert set(part) - groups == keys
            if part["runs"]:
                assert part["median_regret"] <= part["p90_regret"] <= part["worst_regret"]
                assert 0 <= part["over_0_3"] <= part["runs"]
                assert isinstance(part["diverged"], int) and part["diverged"] >= 0
        assert entry["runs"] == sum(entry[g]["runs"] or 0 for g in groups)
    variants = summary["finder_variants"]
    assert list(variants) == ["budget x1", "budget x5", "mid-training", "clipping"]
    for entry in variants.values():
        assert entry["steps"] > 0 and entry["best_lr"] > 0 and entry["lr_star"] > 0
        assert "lr_callbacks" in entry["finders"]
        for finder in entry["finders"].values():
            assert finder["runs"] > 0 and finder["median_regret"] <= finder["worst_regret"]
    assert variants["budget x5"]["steps"] == 5 * variants["budget x1"]["steps"]
    assert variants["mid-training"]["steps"] < variants["budget x1"]["steps"] == variants["clipping"]["steps"]
    assert set(summary["watchdog"]) == set(WATCHDOG_METHODS)
    for entry in summary["watchdog"].values():
        assert set(entry) == WATCHDOG_KEYS
        assert 0 <= entry["recovered"] <= entry["runs"] and entry["runs"] > 0
        assert 0 <= entry["recovered_3_seeds"] <= entry["runs_3_seeds"] <= entry["runs"]
        assert 0 <= entry["held_out_recovered"] <= entry["held_out_runs"] and entry["held_out_runs"] > 0
        assert entry["false_interventions_per_1k"] >= 0 and entry["clean_steps"] > 0
        low, high = entry["held_out_damage_undone_ci"]
        if entry["held_out_damage_undone"] is not None:
            assert low <= entry["held_out_damage_undone"] <= high
    early = summary["early"]
    assert list(early) == [str(start) for start in (EARLY_FULL if scale is FULL else EARLY_QUICK).starts]
    for entry in early.values():
        assert set(entry) == EARLY_KEYS
        assert 0 <= entry["worse_than_none"] <= entry["runs"] and entry["runs"] > 0
        assert 0 <= entry["recovered"] <= entry["runs"] and 0 <= entry["none_recovered"] <= entry["runs"]
        low, high = entry["damage_undone_ci"]
        if entry["damage_undone"] is not None:
            assert low <= entry["damage_undone"] <= high
    natural = summary["natural"]
    assert set(natural) == {
        "unstable_multiples",
        "within_10pct",
        "never_worse",
        "snapshot_mib",
        "snapshot_host_ms",
        "snapshot_disk_ms",
    }
    assert natural["snapshot_mib"] > 0 and natural["snapshot_host_ms"] > 0 and natural["snapshot_disk_ms"] > 0
    assert 0 <= natural["within_10pct"] <= natural["unstable_multiples"]
    rows = summary["finetune"]
    setups = [r["setup"] for r in rows]
    assert any(s.startswith("LRFinder") for s in setups)
    if all_setups:  # a run with --tasks may leave out the pretraining-LR and LoRA rows
        assert any(s.startswith("pretraining LR") for s in setups) and any(s.startswith("LoRA") for s in setups)
    assert rows[0]["setup"].startswith("no fine-tuning") and rows[0]["forgetting"] == pytest.approx(0.0, abs=1e-9)
    assert sum("the best full run" in s for s in setups) == 1
    assert all(r["finder_steps"] > 0 for r in rows if r["setup"].startswith("LRFinder"))  # the column once empty
    for row in rows:
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert 0.0 <= row["forgetting"] <= 2.0
        assert math.isfinite(row["val_loss"])


def test_quick_run_writes_every_result_with_its_stamp(quick: str) -> None:
    with open(os.path.join(quick, "summary.json")) as handle:
        summary = json.load(handle)
    _summary_structure(summary)
    for name in RESULT_NAMES:
        with open(os.path.join(quick, f"{name}.md")) as handle:
            text = handle.read()
        # summary.md's sections come from different runs: each names its own command (its report has the machine)
        for part in STAMP if name != "summary" else ("From `python -m benchmarks --quick",):
            assert part in text, f"{name}.md lacks {part!r}"
        assert "--quick" in text
    pngs = [f for f in os.listdir(quick) if f.endswith(".png")]
    assert {"finder_profile.png", "finder_digits-mlp_sgd.png", "finder_digits-mlp_adamw.png"} <= set(pngs)
    assert "watchdog_natural.png" in pngs and "finder_variants.png" in pngs
    for name in pngs:
        with open(os.path.join(quick, name), "rb") as handle:
            head = handle.read(8)
        assert head == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(os.path.join(quick, name)) > 5000


def test_quick_run_details_are_consistent(quick: str) -> None:
    with open(os.path.join(quick, "finder.json")) as handle:
        finder = json.load(handle)
    for key, task in finder["tasks"].items():
        truth = task["truth"]
        assert truth["best_loss"] == min(truth["mean_loss"])
        assert truth["lrs"][-1] / truth["lrs"][0] >= 1e4, key  # at least four decades
        assert isinstance(task["held_out"], bool) and task["commit"]
        assert task["held_out"] == (task["group"] != "tuning")
        for entry in task["suggestions"]:
            assert entry["failed"] == (entry["lr"] is None)
            assert entry["steps"] > 0 and entry["seconds"] > 0
            if entry["finder"] in ("lr_callbacks", "lr_callbacks.confirm"):  # not the re-analysed variants
                assert "trials" in entry["result"]  # every trial's losses are kept
    assert {"tuning", "held_out", "held_out_second", "held_out_third", "held_out_fourth", "held_out_fifth"} == set(
        finder["groups"]
    )
    assert finder["leave_one_task_out"]
    with open(os.path.join(quick, "finder_variants.json")) as handle:
        variants = json.load(handle)["variants"]
    for name, variant in variants.items():
        truth = variant["truth"]
        assert truth["best_loss"] == min(truth["mean_loss"]) and variant["suggestions"], name
        for entry in variant["suggestions"]:
            assert entry["failed"] == (entry["lr"] is None) and entry["steps"] > 0
    stop = variants["mid-training"]["start"]["stop"]  # the steps trained before the variant starts
    assert 0 < stop < variants["budget x1"]["steps"] == variants["mid-training"]["steps"] + stop
    with open(os.path.join(quick, "finetune.json")) as handle:
        finetune = json.load(handle)
    (confirm,) = finetune["confirm"].values()
    assert all(-1.0 <= s["kendall_tau"] <= 1.0 for s in confirm["seeds"])
    trials = finetune["runs"]["LRFinder confirm (1e-4, 1e-5, 1e-6)"][0]["finder"]["trials"]
    assert [t["lr"] for t in trials if t["rung"] == 0] == [1e-4, 1e-5, 1e-6] and all(t["losses"] for t in trials)
    with open(os.path.join(quick, "watchdog.json")) as handle:
        watchdog = json.load(handle)
    runs = watchdog["runs"]
    faults = {(r["fault"], r["seed"]) for r in runs}
    faulted = {(f, s) for f, s in faults if f not in ("clean", "data_switch")}
    for method in WATCHDOG_METHODS:
        mine = {(r["fault"], r["seed"]) for r in runs if r["method"] == method}
        assert faulted <= mine <= faults  # the same faults for all
    unguarded = next(r for r in runs if r["fault"] == "nan_batch" and r["method"] == "none")
    assert unguarded["loss"] is None  # NaN weights: JSON has no NaN, it is written as null
    with open(os.path.join(quick, "overhead.json")) as handle:
        overhead = json.load(handle)
    for result in overhead.values():
        assert result["bare"]["ratio"] == pytest.approx(1.0)
        assert result["bare"]["added_host_reads_per_step"] == 0


def test_committed_full_results_have_the_same_structure() -> None:
    path = os.path.join(RESULTS, "summary.json")
    if not os.path.exists(path):
        pytest.fail("benchmarks/results/summary.json is missing: run `python -m benchmarks` and commit its results")
    with open(os.path.join(RESULTS, "finetune.md")) as handle:
        subset = "--tasks" in handle.read().split("\n", 4)[2]  # the command line of its stamp
    with open(path) as handle:
        _summary_structure(json.load(handle), all_setups=not subset, scale=FULL)
    for name in RESULT_NAMES:
        with open(os.path.join(RESULTS, f"{name}.md")) as handle:
            text = handle.read()
        assert "--quick" not in text
        assert "at commit `" in text and "+changes" not in text, f"{name}.md: run the benchmarks on committed code"
        for part in STAMP if name != "summary" else ("From `python -m benchmarks",):  # summary: each section's run
            assert part in text


def test_only_keeps_the_other_sections(tmp_path) -> None:
    overhead = {"digits": {"ratio": 1.5, "us_per_step": 7.0, "host_reads_per_step": 0.0}}
    finetune = [{"setup": "kept", "lr": 1e-3, "val_loss": 0.5, "test_accuracy": 0.9, "forgetting": 0.1}]
    with open(tmp_path / "summary.json", "w") as handle:
        json.dump({"overhead": overhead, "finetune": finetune, "stale": 3}, handle)
    whole = "# Wall time\n\n- wall time of this benchmark: 54.4 min\n"
    (tmp_path / "timing.md").write_text(whole)
    from benchmarks.__main__ import main

    summary = main(["--quick", "--only", "finder", "--out", str(tmp_path)])
    timing = (tmp_path / "timing.md").read_text()
    assert timing.startswith(whole) and "## Partial reruns" in timing and "--only finder" in timing
    assert summary["overhead"] == overhead and summary["finetune"] == finetune
    with open(tmp_path / "summary.json") as handle:
        written = json.load(handle)
    assert list(written) == ["overhead", "finder", "finetune"]
    assert "lr_callbacks" in written["finder"]
    with open(tmp_path / "summary.md") as handle:
        text = handle.read()
    assert "| digits | +50.00% | 7 | - | 0 |" in text and "| kept | 1.00e-03 | 0.5 | 90.0% | 0.1 | - |" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--only", "bogus"],
            "--only takes names among overhead, finder, finder_variants, watchdog, early, natural, finetune; "
            "got 'bogus'",
        ),
        (["--only", ","], "--only takes names among"),
        (["--threads", "0"], "--threads must be at least 1; got 0"),
        (["--methods", "lr_callbacks,prayer"], "--methods takes names among none, early_stopping"),
    ],
)
def test_bad_command_lines_are_refused_with_the_fix(argv, message, capsys) -> None:
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


def test_defaults_depend_on_quick() -> None:
    full, quick = parse([]), parse(["--quick"])
    assert full.out == RESULTS and quick.out == os.path.join(RESULTS, "quick")
    assert quick.threads == 1 and full.threads >= 1
    assert parse(["--only", "watchdog,overhead"]).only == ["overhead", "watchdog"]
