"""``python -m lr_callbacks``: the schedule preview draws what LRSchedule logs, and every option counts."""

from __future__ import annotations

import io
import math
import os
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lr_callbacks import LRSchedule
from lr_callbacks.cli import main
from tests.helpers import TinyModel, loader, make_trainer, read_events, read_text

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def table(output: str) -> dict[int, list[float]]:
    """``{step: [lr of each group]}`` from the markdown table the command prints."""
    rows = [line for line in output.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    return {int(r.split("|")[1]): [float(v) for v in r.split("|")[2:-1]] for r in rows}


def png(path: os.PathLike[str] | str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_help_lists_the_commands(capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m lr_callbacks", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("lr_callbacks", run_name="__main__")  # what `python -m lr_callbacks` runs
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "plot      draw a schedule before training" in out
    assert "presets   list the presets and their arguments" in out


def test_an_error_exits_non_zero_with_a_message_and_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lr_callbacks", "plot", "cosinus", "--steps", "100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown preset 'cosinus'; choose one of: constant, linear, cosine" in done.stderr
    assert "Traceback" not in done.stderr


def test_lr_schedule_used_before_fit_points_to_the_preview() -> None:
    """``plan_table()`` before fit said only that the run's length is unknown; it now names the ways to preview."""
    schedule = LRSchedule("cosine", warmup="5%")
    for method in (schedule.plan_table, schedule.plan, lambda: schedule.lr_at(0)):
        with pytest.raises(
            ValueError, match=r"once fit starts; to preview the plan before.*python -m lr_callbacks plot"
        ):
            method()


def test_plot_draws_the_same_image_and_table_as_lr_schedule(tmp_path, capsys) -> None:
    """The preview of a run is pixel for pixel the ``lr_schedule/plan`` LRSchedule logs for it."""
    trainer = make_trainer(tmp_path / "run", max_steps=12, callbacks=[LRSchedule("cosine", warmup="3 steps", end=0.1)])
    trainer.fit(TinyModel(), loader())
    logged = read_events(tmp_path / "run").Images("lr_schedule/plan")[0].encoded_image_string
    summary = read_text(tmp_path / "run", "lr_schedule/summary")[0]

    out = tmp_path / "plan.png"
    argv = ["plot", "cosine", "--steps", "12", "--warmup", "3 steps", "--end", "0.1", "-o", str(out)]
    printed = run_cli(capsys, *argv, "--peak-lr", "body=0.1", "--peak-lr", "head=0.01")

    assert np.array_equal(png(out), png(io.BytesIO(logged)))
    table_text = printed.split("\n\n")[1].strip()
    assert table_text.startswith("| step | body | head |")
    assert table_text in summary
    assert printed.splitlines()[0] in summary  # the schedule's description
    assert f"wrote {out}" in printed


def test_output_keeps_an_existing_file_unless_force(tmp_path, capsys) -> None:
    out = tmp_path / "plan.png"
    out.write_bytes(b"mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", "linear", "--steps", "4", "-o", str(out)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert f"-o/--output: {out} exists; choose another name, or pass --force to overwrite it" in captured.err
    assert captured.out == "" and out.read_bytes() == b"mine"
    assert f"wrote {out}" in run_cli(capsys, "plot", "linear", "--steps", "4", "-o", str(out), "--force")
    assert png(out).shape[2] == 3


def test_an_output_that_cannot_be_written_is_an_error_before_the_table(tmp_path, capsys) -> None:
    out = tmp_path / f"{'a' * 300}.png"  # too long a name, even for root
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", "linear", "--steps", "4", "-o", str(out)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert f"-o/--output: cannot write {out}: File name too long" in captured.err
    assert captured.out == ""


def test_a_closed_stdout_ends_quietly() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader has gone, as after `| head -1`
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lr_callbacks", "plot", "cosine", "--steps", "1000"],
            cwd=ROOT,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == ""


def test_without_output_no_file_is_written(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    printed = run_cli(capsys, "plot", "linear", "--steps", "4")
    assert os.listdir(tmp_path) == []
    assert "wrote" not in printed
    assert table(printed) == {0: [1.0], 1: [0.75], 2: [0.5], 3: [0.25]}


def test_steps_may_be_written_in_scientific_notation(capsys) -> None:
    """``--steps 1e3`` was "invalid int value: '1e3'", though a duration takes '1e3 steps'."""
    assert run_cli(capsys, "plot", "linear", "--steps", "1e3", "--steps-per-epoch", "1E2").startswith(
        "Linear()\nRun: 1000 optimizer steps, 100 per epoch\n"
    )


def test_a_fractional_epochs_run_is_as_long_as_that_many_epochs_of_a_duration(capsys) -> None:
    """--epochs 2.5 --steps-per-epoch 5 was a run of round(12.5) = 12 steps, so a warmup of '2.5 epochs' (13 steps,
    rounded up as every duration in epochs is) was refused as longer than the run; the run is now 13 steps."""
    printed = run_cli(capsys, "plot", "cosine", "--epochs", "2.5", "--steps-per-epoch", "5", "--warmup", "2.5 epochs")
    assert "Run: 13 optimizer steps, 5 per epoch" in printed and table(printed)[12] == [1.0]


def test_steps_sets_the_length_of_the_run(capsys) -> None:
    short = table(run_cli(capsys, "plot", "linear", "--steps", "4"))
    long = table(run_cli(capsys, "plot", "linear", "--steps", "8"))
    assert max(short) == 3 and max(long) == 7
    assert long[2] == [0.75]


def test_preset_arguments_are_options(capsys) -> None:
    plain = table(run_cli(capsys, "plot", "cosine", "--steps", "100"))
    floored = table(run_cli(capsys, "plot", "cosine", "--steps", "100", "--end", "0.1"))
    assert plain[99][0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)), rel=1e-3)
    assert floored[99][0] == pytest.approx(0.1 + 0.9 * plain[99][0], rel=1e-3)
    warm = table(run_cli(capsys, "plot", "cosine", "--steps", "100", "--warmup", "10%", "--warmup_start", "0.5"))
    assert warm[0] == [pytest.approx(0.55)]  # trains from its first step: 0.5 + 0.5 × 1/10
    assert 9 in warm and 10 in warm  # the warmup's last step and the decay's first are key steps


def test_list_arguments_take_one_value_or_several(capsys) -> None:
    one = table(run_cli(capsys, "plot", "multistep", "--steps", "30", "--milestones", "10 steps", "--gamma", "0.5"))
    two = table(run_cli(capsys, "plot", "multistep", "--steps", "30", "--milestones", "10 steps,20 steps"))
    assert one[29] == [0.5]
    assert two[29] == [pytest.approx(0.01)]


def test_peak_lr_scales_the_curve_and_names_the_groups(capsys) -> None:
    one = run_cli(capsys, "plot", "linear", "--steps", "4", "--peak-lr", "0.5")
    assert "| step | group0 |" in one and table(one)[1] == [0.375]
    two = table(run_cli(capsys, "plot", "linear", "--steps", "4", "--peak-lr", "body=0.1", "--peak-lr", "head=0.01"))
    assert two[1] == [0.075, 0.0075]


def test_a_typed_none_is_passed_to_the_preset(capsys) -> None:
    assert run_cli(capsys, "plot", "one_cycle", "--steps", "100").startswith("OneCycle()\n")
    assert run_cli(capsys, "plot", "one_cycle", "--steps", "100", "--momentum", "none").startswith(
        "OneCycle(momentum=None)\n"
    )


def test_epochs_and_steps_per_epoch_resolve_durations_in_epochs(capsys) -> None:
    argv = ["plot", "step", "--every", "1 epochs", "--gamma", "0.5"]
    by_epochs = run_cli(capsys, *argv, "--epochs", "3", "--steps-per-epoch", "4")
    assert "Run: 12 optimizer steps, 4 per epoch" in by_epochs
    assert table(by_epochs)[11] == [0.25]
    longer_epochs = table(run_cli(capsys, *argv, "--steps", "12", "--steps-per-epoch", "6"))
    assert longer_epochs[11] == [0.5]


def test_transformers_form_matches_transformers(capsys) -> None:
    import torch
    from transformers import get_scheduler

    printed = run_cli(capsys, "plot", "--transformers", "cosine", "--num-warmup-steps", "10", "--steps", "100")
    assert printed.startswith("transformers 'cosine'(num_warmup_steps=10)")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_scheduler("cosine", optimizer, num_warmup_steps=10, num_training_steps=100)
    expected = [reference.lr_lambdas[0](k) for k in range(100)]
    for step, (lr,) in table(printed).items():
        assert lr == pytest.approx(expected[step], rel=1e-3, abs=1e-9)
    # an absolute floor is divided by the peak LR, as transformers divides it by the optimizer's lr
    poly = run_cli(
        capsys, "plot", "--transformers", "polynomial", "--steps", "10", "--peak-lr", "0.1", "--lr-end", "0.01"
    )
    assert "lr_end=0.01" in poly.splitlines()[0]
    assert table(poly)[9] == [pytest.approx(0.1 - 0.09 * 9 / 10, rel=1e-3)]


def test_a_polynomial_lr_end_above_the_peak_is_a_usage_error(capsys) -> None:
    """An lr_end the decay cannot reach from the peak: a usage error naming both LRs and the fix, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", "--transformers", "polynomial", "--steps", "10", "--peak-lr", "0.1", "--lr-end", "0.5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "`lr_end` (0.5) must be smaller than the optimizer's lr (0.1)" in err
    assert "lower lr_end below 0.1" in err and "raise the optimizer's lr (--peak-lr here)" in err


def test_presets_lists_every_preset_with_its_arguments(capsys) -> None:
    from lr_callbacks import PRESETS

    printed = run_cli(capsys, "presets")
    for name in PRESETS:
        assert f"\n{name}: " in f"\n{printed}"
    assert "--decay 20%  --decay-shape 1-sqrt" in printed
    assert "--momentum 0.85,0.95" in printed
    assert "step: Multiply by `gamma` every `every`." in printed  # before: "Multiply by gamma every every."
    # a preset whose defaults make no schedule says what it needs (before: `--milestones ''` as if it were usable)
    needs = [line.strip() for line in printed.splitlines() if line.strip().startswith("needs: ")]
    assert len(needs) == 3 and any("`milestones` must not be empty" in line for line in needs)


def test_a_preset_help_shows_its_own_arguments(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", "wsd", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "arguments of the 'wsd' preset" in out and "--decay-shape VALUE" in out and "default: '1-sqrt'" in out


@pytest.mark.parametrize("option", ["--config", "--transformers"])
def test_a_missing_value_shows_the_plot_usage(capsys, option) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", option])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m lr_callbacks plot SCHEDULE [options]\n")
    assert f"python -m lr_callbacks plot: error: argument {option}: expected one argument" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "choose a command: plot, presets"),
        (["draw"], "invalid choice: 'draw'"),
        # the CLI's spelling, not the Python's (before: "preset: unknown `schedule` 'cosine_warmup'; ...")
        (["plot", "cosine_warmup", "--steps", "10"], "error: unknown preset 'cosine_warmup'; choose one of: constant,"),
        (["plot", "cosinus", "--steps", "10"], "(`python -m lr_callbacks presets` lists their arguments)"),
        (["plot", "--transformers", "cosinus", "--steps", "10"], "unknown transformers scheduler 'cosinus'; choose"),
        (["plot", "--steps", "10"], "`--transformers NAME` or `--config YAML`; none was given"),
        (["plot", "cosine", "--transformers", "cosine", "--steps", "10"], "or `--config YAML`, not several"),
        (
            ["plot", "cosine", "--steps", "10", "--bogus", "3"],
            "unrecognized arguments: --bogus 3; the 'cosine' preset takes: --end",
        ),
        (["plot", "--steps", "10", "cosine"], "unrecognized arguments: cosine; name the schedule first"),
        (["plot", "cosine"], "give the run's length: --steps N, or --epochs E"),
        (["plot", "cosine", "--steps", "10", "--epochs", "2"], "give the run's length"),
        (["plot", "cosine", "--epochs", "2"], "--epochs needs --steps-per-epoch"),
        (["plot", "cosine", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["plot", "cosine", "--epochs", "0", "--steps-per-epoch", "3"], "--epochs must be a finite number > 0, got 0"),
        (["plot", "cosine", "--epochs", "inf", "--steps-per-epoch", "3"], "--epochs must be a finite number > 0"),
        (["plot", "cosine", "--steps", "10", "--peak-lr", "inf"], "--peak-lr must be a finite LR > 0, got 'inf'"),
        (["plot", "cosine", "--steps", "10", "-o", "/nonexistent/dir/x.png"], "the folder '/nonexistent/dir' does"),
        (["plot", "cosine", "--steps", "10", "-o", "/"], "'/' is a directory; give a file name in it"),
        (["plot", "cosine", "--steps", "10", "-o", ""], "-o/--output: give a file name"),
        (["plot", "cosine", "--steps", "10", "--steps-per-epoch", "0"], "--steps-per-epoch must be >= 1, got 0"),
        (["plot", "cosine", "--steps", "10", "--peak-lr", "fast"], "'fast' is not an LR"),
        (["plot", "cosine", "--steps", "10", "--peak-lr", "-1"], "--peak-lr must be a finite LR > 0, got '-1'"),
        (["plot", "cosine", "--steps", "10", "--peak-lr", "-3e-4"], "--peak-lr must be a finite LR > 0, got '-3e-4'"),
        (["plot", "cosine", "--steps", "10", "-o", "plan.jpg"], "the image is a PNG; give the file a .png name"),
        (["plot", "cosine", "--steps", "10", "--peak-lr", "a=1", "--peak-lr", "a=2"], "distinct names"),
        (["plot", "cosine", "--steps", "10", "--peak-lr", "1", "--peak-lr", "a=2"], "one name=lr per parameter group"),
        (["plot", "cosine", "--steps", "10", "--warmup", "20"], "error: --warmup needs its unit: got the bare number"),
        (["plot", "cosine", "--steps", "10", "--warmup", "20 steps"], "does not fit this run: the phases add up to 20"),
        (["plot", "step", "--steps", "10"], "needs the epoch length: pass --steps-per-epoch M (optimizer steps"),
        (
            ["plot", "step", "--steps", "5000", "--every", "1 steps", "--gamma", "2"],
            "does not fit this run: Step(every=1 steps, gamma=2) multiplies by gamma=2 every 1 steps, without bound, "
            "and it spans 5000 steps: its multiplier passes 1e+06 × the peak LR at step 20",
        ),
        (
            ["plot", "cosine", "--steps", "10", "--peak-lr", "body=0.1,head=0.01"],
            "'body=0.1,head=0.01' is not one name=lr; repeat --peak-lr for each group",
        ),
        (["plot", "cosine", "--steps", "10", "--peak-lr", "=0.1"], "'=0.1' is not one name=lr; repeat --peak-lr"),
        (["plot", "wsd", "--steps", "10", "--decay-shape", "square"], "unknown --decay-shape 'square'; choose one"),
        (["plot", "one_cycle", "--steps", "10", "--pct-start", "2"], "OneCycle: --pct-start must be <= 1, got 2"),
        (["plot", "--transformers", "cosine", "--steps", "10", "--num-warmup-steps", "0.1"], "--num-warmup-steps is a"),
        # a count that is not whole: before, "argument --steps: invalid int value: '1.5'", with no fix
        (
            ["plot", "cosine", "--steps", "1.5"],
            "argument --steps: must be a whole number of optimizer steps, got '1.5'",
        ),
        (["plot", "cosine", "--steps", "10", "--steps-per-epoch", "2.5"], "--steps-per-epoch: must be a whole number"),
        # a negative value with a unit: before, "argument --warmup: expected one argument"
        (["plot", "cosine", "--steps", "10", "--warmup", "-5%"], "error: --warmup must not be negative, got '-5%'"),
        # an argument the user did not type, spelled as its option: before, "Exponential needs `end` (...) or `gamma`"
        (["plot", "exponential", "--steps", "10"], "error: Exponential needs --end (interpolate"),
        (["plot", "--transformers", "warmup_stable_decay", "--steps", "10"], "--num-decay-steps is required"),
        (["plot", "--transformers", "cosine_with_min_lr", "--steps", "10"], "exactly one of --min-lr (absolute) or"),
    ],
)
def test_errors_name_the_problem_and_exit_with_status_2(capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


CONFIG = """\
trainer:
  max_steps: 12
  accelerator: cpu
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: pytorch_lightning.loggers.TensorBoardLogger
    init_args: {save_dir: LOGS, name: tb}
  callbacks:
    - class_path: pytorch_lightning.callbacks.LearningRateMonitor
    - class_path: lr_callbacks.LRSchedule
      init_args:
        schedule: wsd
        preset_args: {warmup: 2 steps, decay: 25%}
        group_schedules:
          head: {class_path: lr_callbacks.Cosine, init_args: {end: 0.5}}
        peak_lrs: {head: 0.05}
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pytorch_lightning.cli")
def test_config_previews_what_lightning_cli_runs(tmp_path, capsys, monkeypatch) -> None:
    """``plot --config`` draws, pixel for pixel, the plan a LightningCLI run of that config logs."""
    from pytorch_lightning.cli import LightningCLI

    from tests.integration.test_namespaces import PLData, PLTiny

    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.replace("LOGS", str(tmp_path / "logs")))
    monkeypatch.setattr(sys, "argv", ["lightning-cli"])
    LightningCLI(PLTiny, PLData, args=["fit", "--config", str(config)], save_config_callback=None)
    logged = read_events(tmp_path / "logs").Images("lr_schedule/plan")[0].encoded_image_string
    summary = read_text(tmp_path / "logs", "lr_schedule/summary")[0]
    capsys.readouterr()

    out = tmp_path / "plan.png"
    printed = run_cli(
        capsys, "plot", "--config", str(config), "--peak-lr", "body=0.1", "--peak-lr", "head=0.01", "-o", str(out)
    )
    assert np.array_equal(png(out), png(io.BytesIO(logged)))
    assert printed.startswith("Run: 12 optimizer steps\n")  # trainer.max_steps
    for block in printed.split("\n\n")[1:-1]:
        assert block in summary  # both schedules' headings and tables
    head_at_11 = 0.05 * (0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi * 11 / 12)))  # Cosine(end=0.5), its own peak
    assert "| step | head |" in printed and table(printed)[11][-1] == pytest.approx(head_at_11, rel=1e-3)


def test_config_length_comes_from_the_options_or_the_trainer(tmp_path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("trainer:\n  max_epochs: 3\n  callbacks:\n    - class_path: lr_callbacks.LRSchedule\n")
    by_epochs = run_cli(capsys, "plot", "--config", str(config), "--steps-per-epoch", "5")
    assert "Run: 15 optimizer steps, 5 per epoch" in by_epochs and by_epochs.startswith("Cosine()")
    assert "Run: 7 optimizer steps" in run_cli(capsys, "plot", "--config", str(config), "--steps", "7")


def test_config_of_the_whole_cli_is_read_for_fit(tmp_path, capsys) -> None:
    """A config that LightningCLI takes before its subcommand (``main.py --config it.yaml fit``), with the
    ``trainer`` under ``fit:``, was refused with "it has 0 (callbacks: none)", although it holds the LRSchedule."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "fit:\n  trainer:\n    max_steps: 4\n    callbacks:\n      - class_path: lr_callbacks.LRSchedule\n"
        "        init_args: {schedule: linear}\n"
    )
    printed = run_cli(capsys, "plot", "--config", str(config))
    assert printed.startswith("Linear()\nRun: 4 optimizer steps") and table(printed)[1] == [0.75]


def test_config_plans_the_shorter_of_max_steps_and_max_epochs(tmp_path, capsys) -> None:
    """As ``estimated_stepping_batches``: max_epochs × steps per epoch ends the run first when it is shorter."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "trainer:\n  max_steps: 1000\n  max_epochs: 2\n  callbacks:\n    - class_path: lr_callbacks.LRSchedule\n"
    )
    assert "Run: 200 optimizer steps, 100 per epoch" in run_cli(
        capsys, "plot", "--config", str(config), "--steps-per-epoch", "100"
    )
    assert "Run: 1000 optimizer steps, 600 per epoch" in run_cli(
        capsys, "plot", "--config", str(config), "--steps-per-epoch", "600"
    )
    assert main(["plot", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "Run: 1000 optimizer steps\n" in captured.out
    assert captured.err == (
        "note: planned trainer.max_steps (1000); trainer.max_epochs (2) may end the run sooner: "
        "give --steps-per-epoch to plan the shorter of the two\n"
    )


def test_config_peak_lrs_set_their_groups_and_win_over_peak_lr(tmp_path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    - class_path: lr_callbacks.LRSchedule\n"
        "      init_args: {schedule: linear, peak_lrs: {head: 0.01}}\n"
    )
    assert main(["plot", "--config", str(config), "--steps", "4", "--peak-lr", "body=0.1"]) == 0
    printed = capsys.readouterr()
    assert "| step | body | head |" in printed.out and table(printed.out)[1] == [0.075, 0.0075]
    assert printed.err == ""
    assert main(["plot", "--config", str(config), "--steps", "4", "--peak-lr", "head=0.02"]) == 0
    typed = capsys.readouterr()
    assert table(typed.out)[1] == [0.0075]
    assert typed.err == (
        "note: plotting head=0.01 from the config's peak_lrs, not --peak-lr head=0.02: "
        "LRSchedule replaces the optimizer's LR with it at fit start\n"
    )


@pytest.mark.parametrize(
    ("config", "argv", "message"),
    [
        (
            "trainer: {callbacks: [{class_path: pytorch_lightning.callbacks.LearningRateMonitor}]}",
            [],
            r"one LRSchedule in trainer.callbacks, it has 0 \(callbacks: pytorch_lightning.callbacks.LearningRate",
        ),
        (
            "trainer: {callbacks: [{class_path: LRSchedule, init_args: {preset_args: {warmup: 20}}}]}",
            ["--steps", "9"],
            "cannot be built: .*`warmup` needs its unit",
        ),
        (
            "trainer: {callbacks: [{class_path: LRSchedule, init_args: {group_schedules: {head: constant}}}]}",
            ["--steps", "9"],
            "the groups 'head' their own schedule; name every such group with its configured LR",
        ),
        (  # the Python form, LRSchedule("wsd", warmup="5%"): jsonargparse said only "Option ... is not accepted"
            "trainer: {callbacks: [{class_path: LRSchedule, init_args: {schedule: wsd, warmup: 5%, decay: 10%}}]}",
            ["--steps", "9"],
            r"'warmup', 'decay' in its init_args; LightningCLI takes a preset's arguments in preset_args: write "
            r"init_args: \{schedule: wsd, preset_args: \{warmup: 5%, decay: 10%\}\}$",
        ),
        (
            "trainer: {callbacks: [{class_path: LRSchedule, init_args: {schedul: wsd}}]}",
            ["--steps", "9"],
            r"'schedul' in its init_args, which LRSchedule does not take; its arguments are: schedule, group_sched",
        ),
        ("trainer: {callbacks: [{class_path: LRSchedule}]}", [], "give the run's length"),
        (
            "trainer: {callbacks: [{class_path: LRSchedule}]}",
            ["--steps", "9", "--end", "0.1"],
            "unrecognized arguments: --end 0.1; with --config the schedule's arguments come from the file",
        ),
        ("trainer: {callbacks: [{class_path: LRSchedule}]}", ["cosine", "--steps", "9"], "name one schedule"),
        ("trainer: [unclosed", ["--steps", "9"], "--config: cannot read"),
        (b"\xff\xfe", ["--steps", "9"], r"--config: cannot read .*config.yaml: 'utf-8' codec can't decode byte 0xff"),
        ("just a string", ["--steps", "9"], r"config.yaml must be a LightningCLI config \(a mapping\), got str"),
        ("trainer: 5", ["--steps", "9"], r"`trainer` in .*config.yaml must be a mapping of Trainer arguments, got int"),
        (
            "trainer: {callbacks: lr_callbacks.LRSchedule}",
            ["--steps", "9"],
            r"trainer.callbacks in .*config.yaml must be a list of callbacks, got 'lr_callbacks.LRSchedule'",
        ),
        (
            "trainer: {max_epochs: abc, callbacks: [{class_path: LRSchedule}]}",
            ["--steps-per-epoch", "9"],
            "plot: error: --config: trainer.max_epochs must be a number, got 'abc'$",
        ),
        (  # before: "--epochs must be a finite number > 0, got 0", an option not typed
            "trainer: {max_epochs: 0, callbacks: [{class_path: LRSchedule}]}",
            ["--steps-per-epoch", "9"],
            r"error: --config: trainer.max_epochs must be > 0 \(or -1: no limit\), got 0; or give the run's length",
        ),
        (  # before: "give the run's length: --steps N, or --epochs E with --steps-per-epoch M", the epochs unsaid
            "trainer: {max_steps: -1, max_epochs: 3, callbacks: [{class_path: LRSchedule}]}",
            [],
            r"error: --config: trainer.max_epochs \(3\) counts the run in epochs: give --steps-per-epoch M",
        ),
        (
            "trainer: {max_steps: '1000', callbacks: [{class_path: LRSchedule}]}",
            [],
            "plot: error: --config: trainer.max_steps must be an integer, got '1000'$",
        ),
    ],
)
def test_config_errors(tmp_path, capsys, config, argv, message) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(config) if isinstance(config, bytes) else path.write_text(config)
    argv = [*argv[:1], "--config", str(path), *argv[1:]] if argv[:1] == ["cosine"] else ["--config", str(path), *argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", *argv])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
