"""LightningCLI: every callback, and every kind of schedule, configured from YAML (``class_path``/``init_args``).

Each test runs a real ``LightningCLI(...).fit`` for a few steps from a YAML file, as a user would write it,
in both namespaces (``pytorch_lightning.cli`` and ``lightning.pytorch.cli``), then checks that the callback
built from the YAML equals the one built in Python and drove the LR.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from typing import Any

import pytest

from lr_callbacks import (
    Constant,
    Cosine,
    DivergenceWatchdog,
    LRFinder,
    LRSchedule,
    Phase,
    Phases,
    TransformersSchedule,
    Warmup,
    preset,
)
from tests.integration.test_namespaces import MODULES, NAMESPACES

# Lightning 2.6's LightningCLI calls jsonargparse APIs that jsonargparse 4.49+ deprecates: theirs, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pytorch_lightning.cli"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:lightning.pytorch.cli"),
]

TRAINER = """\
seed_everything: 0
trainer:
  max_steps: {max_steps}
  accelerator: cpu
  devices: 1
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
"""


@pytest.fixture(autouse=True)
def _cli_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when ``sys.argv`` (pytest's here) and ``args`` are both given."""
    monkeypatch.setattr(sys, "argv", ["lightning-cli"])


def fit_from_yaml(namespace: str, tmp_path: Any, callbacks_yaml: str, max_steps: int = 6, *extra: str) -> Any:
    """Write the config, run ``LightningCLI(...) fit --config <it>`` in ``namespace``; return the CLI."""
    config = tmp_path / "config.yaml"
    config.write_text(TRAINER.format(max_steps=max_steps) + textwrap.indent(textwrap.dedent(callbacks_yaml), "    "))
    cli_module = importlib.import_module(f"{namespace}.cli")
    model_class, data_class = MODULES[namespace]
    args = ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path), *extra]
    return cli_module.LightningCLI(model_class, data_class, args=args, save_config_callback=None)


def only(cli: Any, kind: type) -> Any:
    found = [c for c in cli.trainer.callbacks if isinstance(c, kind)]
    assert len(found) == 1, cli.trainer.callbacks
    return found[0]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_a_composed_schedule_from_class_paths(namespace: str, tmp_path) -> None:
    cli = fit_from_yaml(
        namespace,
        tmp_path,
        """\
        - class_path: lr_callbacks.LRSchedule
          init_args:
            schedule:
              class_path: lr_callbacks.Phases
              init_args:
                phases:
                  - schedule: {class_path: lr_callbacks.Warmup, init_args: {curve: cosine}}
                    duration: 2 steps
                  - schedule: {class_path: lr_callbacks.Cosine, init_args: {end: 0.1}}
        """,
    )
    schedule = only(cli, LRSchedule)
    assert schedule.schedule == Phases([Phase(Warmup("cosine"), "2 steps"), Phase(Cosine(end=0.1))])
    assert schedule.steps == [6]
    assert cli.model.seen_lrs == pytest.approx([schedule.lr_at(k) for k in range(6)], rel=1e-12)
    assert cli.model.seen_lrs[0] == pytest.approx(0.1 * 0.5)  # cosine warmup over 2 steps: ½(1 − cos(π/2))


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_a_preset_with_its_arguments_group_schedules_and_peaks(namespace: str, tmp_path) -> None:
    cli = fit_from_yaml(
        namespace,
        tmp_path,
        """\
        - class_path: lr_callbacks.LRSchedule
          init_args:
            schedule: wsd
            preset_args: {warmup: 2 steps, decay: 50%, decay_shape: linear}
            group_schedules:
              head: constant
            peak_lrs: {head: 0.05}
            log_every_n_steps: 2
        """,
        8,
    )
    schedule = only(cli, LRSchedule)
    assert schedule.schedule == preset("wsd", warmup="2 steps", decay="50%", decay_shape="linear")
    body = [lrs[0] for lrs in cli.model.seen_group_lrs]
    head = [lrs[1] for lrs in cli.model.seen_group_lrs]
    assert body == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.1, 0.075, 0.05, 0.025], rel=1e-12)
    assert head == pytest.approx([0.05] * 8, rel=1e-12)  # its own schedule and peak


def test_transformers_schedule_from_yaml(tmp_path) -> None:
    cli = fit_from_yaml(
        "pytorch_lightning",
        tmp_path,
        """\
        - class_path: lr_callbacks.LRSchedule
          init_args:
            schedule:
              class_path: lr_callbacks.TransformersSchedule
              init_args: {name: cosine, num_warmup_steps: 2, arguments: [[num_cycles, 0.25]]}
        """,
    )
    schedule = only(cli, LRSchedule)
    assert schedule.schedule == TransformersSchedule("cosine", 2, (("num_cycles", 0.25),))
    assert cli.model.seen_lrs[:3] == pytest.approx([0.0, 0.05, 0.1])  # transformers' warmup: step 0 at 0


def test_callbacks_from_the_command_line_alone(tmp_path) -> None:
    cli = fit_from_yaml(
        "lightning.pytorch",
        tmp_path,
        "[]\n",
        4,
        "--trainer.callbacks+=LRSchedule",
        "--trainer.callbacks.schedule=linear",
        "--trainer.callbacks.preset_args={end: 0.5}",
    )
    schedule = only(cli, LRSchedule)
    assert schedule.schedule == preset("linear", end=0.5)
    assert cli.model.seen_lrs == pytest.approx([0.1, 0.0875, 0.075, 0.0625])


def test_a_bad_value_in_the_yaml_raises_our_message(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"`warmup` needs its unit: got the bare number 20"):
        fit_from_yaml(
            "pytorch_lightning",
            tmp_path,
            """\
            - class_path: lr_callbacks.LRSchedule
              init_args: {schedule: cosine, preset_args: {warmup: 20}}
            """,
        )


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_finder_and_schedule_from_yaml(namespace: str, tmp_path) -> None:
    cli = fit_from_yaml(
        namespace,
        tmp_path,
        """\
        - class_path: lr_callbacks.LRFinder
          init_args: {min_lr: 1.0e-4, max_lr: 1.0, num_steps: 10, mode: exponential, method: steepest}
        - class_path: lr_callbacks.LRSchedule
          init_args: {schedule: cosine}
        """,
    )
    finder, schedule = only(cli, LRFinder), only(cli, LRSchedule)
    assert finder.result is not None and finder.result.method == "steepest"
    assert finder.result.lrs[0] == pytest.approx(1e-4) and len(finder.result.lrs) <= 10
    assert schedule.peak_lrs[0][0] == pytest.approx(finder.result.chosen_lr)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_the_three_callbacks_from_yaml(namespace: str, tmp_path) -> None:
    cli = fit_from_yaml(
        namespace,
        tmp_path,
        """\
        - class_path: lr_callbacks.LRFinder
          init_args: {min_lr: 1.0e-4, max_lr: 1.0, num_steps: 10}
        - class_path: lr_callbacks.LRSchedule
          init_args: {schedule: cosine, preset_args: {warmup: 2 steps}}
        - class_path: lr_callbacks.DivergenceWatchdog
          init_args: {warmup_steps: 4, window: 8, outlier_action: clip, halt_checkpoint: HALT}
        """.replace("HALT", str(tmp_path / "halt.ckpt")),
        14,
        "--model.spike_at=10",
    )
    finder, schedule, watchdog = only(cli, LRFinder), only(cli, LRSchedule), only(cli, DivergenceWatchdog)
    assert schedule.peak_lrs[0][0] == pytest.approx(finder.result.chosen_lr)
    assert {(i.step, i.action) for i in watchdog.events} == {(10, "clip")}  # outlier_action from the YAML
    assert watchdog.halt_checkpoint_path == str(tmp_path / "halt.ckpt")


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_print_config_rebuilds_the_callbacks_built_in_python(namespace: str, tmp_path, capsys) -> None:
    """Every kind of argument from YAML (a preset's arguments, ``1e-3`` floats, dicts keyed by group, ``null``, a
    list of LRs), and the config ``--print_config`` prints from it, build the callbacks that Python builds, ``repr``
    for ``repr``. The finder's was ``LRFinder(..., epochs=[])``: LightningCLI passes every argument, the default
    ``epochs=()`` as a list, which the ``repr`` took for one given."""
    config = tmp_path / "config.yaml"
    config.write_text(
        TRAINER.format(max_steps=6)
        + textwrap.indent(
            textwrap.dedent(
                """\
                - class_path: lr_callbacks.LRFinder
                  init_args: {min_lr: 1e-4, max_lr: 1, num_steps: 20, divergence_threshold: null, confirm: [1e-3, 1e-2]}
                - class_path: lr_callbacks.LRSchedule
                  init_args:
                    schedule: cosine
                    preset_args: {warmup: 5%, end: 1e-3}
                    group_schedules: {head: {class_path: lr_callbacks.Constant}}
                    peak_lrs: {head: 1e-3}
                - class_path: lr_callbacks.DivergenceWatchdog
                  init_args: {recover_after: null, max_data_skips: 10%, snapshot: host}
                """
            ),
            "    ",
        )
    )
    cli_module = importlib.import_module(f"{namespace}.cli")
    model_class, data_class = MODULES[namespace]

    def callbacks(path: Any, *extra: str) -> list[str]:
        args = ["--config", str(path), *extra]
        cli = cli_module.LightningCLI(model_class, data_class, args=args, run=False, save_config_callback=None)
        return [repr(c) for c in cli.trainer.callbacks if type(c).__module__.startswith("lr_callbacks")]

    expected = [
        LRFinder(min_lr=1e-4, max_lr=1.0, num_steps=20, divergence_threshold=None, confirm=[1e-3, 1e-2]),
        LRSchedule(
            "cosine",
            preset_args={"warmup": "5%", "end": 1e-3},
            group_schedules={"head": Constant()},
            peak_lrs={"head": 1e-3},
        ),
        DivergenceWatchdog(recover_after=None, max_data_skips="10%", snapshot="host"),
    ]
    assert callbacks(config) == [repr(c) for c in expected]
    with pytest.raises(SystemExit):
        callbacks(config, "--print_config")
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert callbacks(printed) == [repr(c) for c in expected]
