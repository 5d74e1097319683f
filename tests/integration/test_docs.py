"""The docs cannot rot: ``docs/api.md`` is what the docstrings give, every public object has a doctested
example, every link inside the docs resolves, and the commands and the YAML of ``docs/README.md`` run.
(``tests/integration/test_tensorboard_server.py`` checks that ``docs/tensorboard.md`` names every tag a run writes.)
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import shlex
import sys
from types import ModuleType

import pytest

import lr_callbacks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")

#: Public objects that still lack a ``>>>`` example in their own docstring (or, for a constant, in any
#: doctest), with the module that owns them. The test below fails when one gains an example, so that it is
#: taken off this list, and when a new public object comes without one.
MISSING_EXAMPLES: dict[str, str] = {}


def build_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_build_api", os.path.join(DOCS, "build_api.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date() -> None:
    with open(os.path.join(DOCS, "api.md"), encoding="utf-8") as file:
        committed = file.read()
    assert committed == build_api().render(), "docs/api.md is out of date: run `python docs/build_api.py`"


def test_api_reference_covers_every_public_object() -> None:
    with open(os.path.join(DOCS, "api.md"), encoding="utf-8") as file:
        headings = set(re.findall(r"^### (\S+)$", file.read(), flags=re.MULTILINE))
    assert headings == set(lr_callbacks.__all__)


def doctest_sources() -> str:
    """The source of every ``>>>`` example in the package, as pytest's ``--doctest-modules`` collects them."""
    finder = doctest.DocTestFinder()
    sources = []
    for info in pkgutil.walk_packages(lr_callbacks.__path__, "lr_callbacks."):
        module = importlib.import_module(info.name)
        for test in finder.find(module):
            sources.extend(example.source for example in test.examples)
    sources.extend(e.source for t in finder.find(lr_callbacks) for e in t.examples)
    return "\n".join(sources)


def test_every_public_object_has_a_doctested_example() -> None:
    sources = doctest_sources()
    missing = set()
    for name in lr_callbacks.__all__:
        obj = getattr(lr_callbacks, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            has_example = ">>>" in (obj.__doc__ or "")  # its own docstring, not one it inherits
        else:
            has_example = re.search(rf"\b{re.escape(name)}\b", sources) is not None
        if not has_example:
            missing.add(name)
    assert missing - set(MISSING_EXAMPLES) == set(), "these public objects need a >>> example in their docstring"
    assert set(MISSING_EXAMPLES) - missing == set(), "these now have an example: take them off MISSING_EXAMPLES"


def test_incident_docstring_names_every_signal_and_action() -> None:
    """``Incident``'s attributes list the values ``signal`` and ``action`` take (``"requested"``, the signal of
    ``DivergenceWatchdog.rebaseline``, was missing)."""
    from lr_callbacks.watchdog.config import Action, Signal

    doc = lr_callbacks.Incident.__doc__ or ""
    missing = [kind.value for kind in (*Signal, *Action) if f'``"{kind.value}"``' not in doc]
    assert missing == []


def test_every_link_in_the_docs_resolves() -> None:
    pages = [os.path.join(DOCS, name) for name in sorted(os.listdir(DOCS)) if name.endswith(".md")]
    pages += [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "benchmarks", "README.md")]
    for page in pages:
        name, here = os.path.relpath(page, ROOT), os.path.dirname(page)
        with open(page, encoding="utf-8") as file:
            text = file.read()
        anchors = {build_api().anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
        for target in re.findall(r"\]\(([^)]+)\)", text):
            path, _, fragment = target.partition("#")
            if path.startswith("http"):
                continue
            if path:
                assert os.path.exists(os.path.join(here, path)), f"{name} links to a missing file: {target}"
            elif fragment:
                assert fragment in anchors, f"{name} links to a missing heading: #{fragment}"


def _readme_section(title: str) -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        text = file.read()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_public_api_names_every_public_object() -> None:
    """The README's "Public API" lists what ``__all__`` holds (the shapes and composites by the table it points
    back to); ``report_sample_losses`` was missing from it."""
    section = _readme_section("Public API")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        shapes = next(line for line in file if line.startswith("| `constant`"))
    named = set(re.findall(r"`([A-Za-z_]+)", section + shapes))
    assert set(lr_callbacks.__all__) - {"__version__"} - named == set()


def test_readme_layout_names_every_module() -> None:
    """Every module of the package is on the README's map of it (``watchdog/samples.py`` was not)."""
    layout = _readme_section("Layout")
    package = os.path.join(ROOT, "lr_callbacks")
    modules = {
        name
        for _, _, files in os.walk(package)
        for name in files
        if name.endswith(".py") and name not in ("__init__.py", "__main__.py")
    }
    assert {m for m in modules if not re.search(rf"\b{re.escape(m)}", layout)} == set()


def readme_blocks(language: str) -> list[str]:
    with open(os.path.join(DOCS, "README.md"), encoding="utf-8") as file:
        return re.findall(rf"```{language}\n(.*?)```", file.read(), flags=re.DOTALL)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pytorch_lightning.cli")
def test_readme_yaml_runs_with_lightning_cli(tmp_path, monkeypatch) -> None:
    from pytorch_lightning.cli import LightningCLI

    from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule, preset
    from tests.integration.test_namespaces import PLData, PLTiny

    (config,) = readme_blocks("yaml")
    path = tmp_path / "config.yaml"
    path.write_text(config)
    monkeypatch.setattr(sys, "argv", ["lightning-cli"])
    args = ["fit", "--config", str(path), "--trainer.max_steps=20", f"--trainer.default_root_dir={tmp_path}"]
    cli = LightningCLI(PLTiny, PLData, args=args, save_config_callback=None)
    kinds = {type(c) for c in cli.trainer.callbacks}
    assert {LRFinder, LRSchedule, DivergenceWatchdog} <= kinds
    schedule = next(c for c in cli.trainer.callbacks if isinstance(c, LRSchedule))
    assert schedule.schedule == preset("cosine", warmup="5%", end=0.1)
    body, head = cli.model.seen_group_lrs[-1]  # the last step: the body's cosine is near its floor,
    assert head == pytest.approx(schedule.peak_lrs[0][1])  # the head's own schedule holds its peak
    assert body < schedule.peak_lrs[0][0] / 2


def test_readme_commands_run(tmp_path, monkeypatch, capsys) -> None:
    from lr_callbacks.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(readme_blocks("yaml")[0])
    commands = [line for block in readme_blocks("bash") for line in block.splitlines() if line.strip()]
    assert len(commands) >= 8
    for command in commands:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "lr_callbacks"], command
        try:
            status = main(argv[3:])
        except SystemExit as done:  # --help
            status = done.code
        assert status == 0, (command, capsys.readouterr().err)
    assert (tmp_path / "plan.png").exists()


def test_readme_error_example_is_what_the_command_prints(capsys) -> None:
    from lr_callbacks.cli import main

    (text,) = readme_blocks("text")
    command, shown = text.strip().splitlines()
    with pytest.raises(SystemExit):
        main(shlex.split(command.removeprefix("$ "))[3:])
    printed = capsys.readouterr().err.strip().splitlines()[-1]
    assert printed.startswith(shown.removesuffix("..."))


def test_readme_shows_the_committed_benchmark_summary() -> None:
    """The README's benchmark tables are those of ``benchmarks/results/summary.md``, line for line."""
    with open(os.path.join(ROOT, "benchmarks", "results", "summary.md"), encoding="utf-8") as handle:
        rows = [line for line in handle.read().splitlines() if line.startswith("|")]
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read().splitlines()
    assert rows, "summary.md has no table"
    missing = [row for row in rows if row not in readme]
    assert not missing, f"README.md lacks these rows of benchmarks/results/summary.md: {missing[:3]}"
    assert "[benchmarks/results/summary.md](benchmarks/results/summary.md)" in "\n".join(readme)


def test_the_flat_curve_warning_quotes_the_committed_benchmark(tmp_path) -> None:
    """The finder's flat-curve warning says how far below its edge the best LR lay on the benchmark's patch
    transformer. It said 1/50 to 1/150, where ``benchmarks/results/finder.json`` has 1/36 to 1/60 (digits-vit/adamw:
    the flat curves' edges 0.186-0.307, the grid's best LR 0.00512)."""
    import json
    import warnings

    import torch

    from lr_callbacks import LRFinder
    from tests.finder.test_callback import fit

    with open(os.path.join(ROOT, "benchmarks", "results", "finder.json"), encoding="utf-8") as handle:
        vit = json.load(handle)["tasks"]["digits-vit/adamw"]
    flat = [r["result"] for r in vit["suggestions"] if r["finder"] == "lr_callbacks"]
    ratios = [r["range"][1] / vit["truth"]["best_lr"] for r in flat if "flat_curve" in r["flags"]]
    assert ratios, "the committed benchmark has no flat curve on the patch transformer"
    generator = torch.Generator().manual_seed(0)  # pure-noise targets: the loss stays flat until the LR blows it up
    x, y = torch.randn(256, 4, generator=generator), torch.randn(256, 1, generator=generator)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, LRFinder(min_lr=1e-6, max_lr=10.0, num_steps=60, probe=False), data=data, logger=False)
    (message,) = [str(w.message) for w in caught if "(flat_curve" in str(w.message)]
    quoted = re.search(r"the best LR was 1/(\d+) to 1/(\d+) of that edge", message)
    assert quoted is not None, message
    low, high = int(quoted[1]), int(quoted[2])
    assert low <= min(ratios) < 1.1 * low and high / 1.1 < max(ratios) <= high, (low, high, ratios)


def _readme_blocks(language: str) -> list[str]:
    """The README's own code blocks (``readme_blocks`` reads those of ``docs/README.md``), indented ones too."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        blocks = re.findall(rf"^( *)```{language}\n(.*?)^ *```", file.read(), flags=re.DOTALL | re.MULTILINE)
    return [re.sub(rf"^{indent}", "", body, flags=re.MULTILINE) for indent, body in blocks]


def test_readme_preview_commands_and_config_run(tmp_path, monkeypatch, capsys) -> None:
    """The README's own preview commands run, ``--config`` on the README's own YAML ("the config below"); before,
    only those of ``docs/README.md`` were run."""
    from lr_callbacks.cli import main

    monkeypatch.chdir(tmp_path)
    (config,) = _readme_blocks("yaml")
    (tmp_path / "config.yaml").write_text(config)
    commands = [line for block in _readme_blocks("bash") for line in block.splitlines()]
    commands = [line for line in commands if line.startswith("python -m lr_callbacks")]
    assert len(commands) >= 3
    for command in commands:
        status = main(shlex.split(command, comments=True)[3:])
        assert status == 0, (command, capsys.readouterr().err)
    assert (tmp_path / "plan.png").exists()


def test_readme_schedule_examples_build() -> None:
    """The README's block of schedules (presets with their arguments, a composed ``Phases``, per-group schedules,
    ``from_transformers``) builds as written: a renamed argument would fail here."""
    (block,) = [b for b in _readme_blocks("python") if "from lr_callbacks import LRSchedule, Phases" in b]
    exec(compile(block, "README.md", "exec"), {})


@pytest.mark.filterwarnings("ignore:LRFinder:UserWarning")  # a run of 64 steps is short for the finder
def test_readme_training_blocks_run(tmp_path, monkeypatch, capsys) -> None:
    """The README's blocks that train (a schedule, the finder as a callback and as ``find_lr``, the watchdog) run
    as written on a stand-in ``model`` (with the ``lr`` that ``find_lr(apply=True)`` sets) and ``data``, their
    sizes cut (``max_epochs=10`` to 2, ``max_steps=10_000`` to 40); before, only their imports were checked."""
    import pytorch_lightning as pl
    import torch

    from tests.helpers import TinyModel, loader, regression_data

    class Model(TinyModel):
        def __init__(self) -> None:
            super().__init__(optimizer=lambda module: torch.optim.SGD(module.parameters(), lr=module.lr))
            self.lr = 0.01

    class Data(pl.LightningDataModule):
        def train_dataloader(self) -> torch.utils.data.DataLoader:
            return loader(regression_data(256), shuffle=True)

        def val_dataloader(self) -> torch.utils.data.DataLoader:
            return loader(regression_data(32, seed=1))

    monkeypatch.chdir(tmp_path)  # the blocks' trainers log to ./lightning_logs
    blocks = [b for b in _readme_blocks("python") if "trainer.fit(model, datamodule=data)" in b]
    assert len(blocks) == 3
    for block in blocks:
        block = block.replace("max_epochs=10", "max_epochs=2").replace("max_steps=10_000", "max_steps=40")
        scope = {"model": Model(), "data": Data()}
        exec(compile(block, "README.md", "exec"), scope)
        assert scope["trainer"].state.finished, block
        if "find_lr" in block:
            assert scope["model"].lr == scope["result"].chosen_lr  # apply=True: "sets model.lr"
    assert "**LR finder**" in capsys.readouterr().out  # print(finder.result.summary())


def test_readme_python_blocks_import_what_they_use() -> None:
    """Each Python block of the README imports every name it uses but ``model`` and ``data`` (which the README
    says stand for the user's module and data); the watchdog's block used ``pl`` and ``LRSchedule``, the finder's
    ``pl``, without importing them."""
    import ast
    import builtins

    blocks = _readme_blocks("python")
    assert len(blocks) >= 4
    for block in blocks:
        tree = ast.parse(block)
        bound = {"model", "data", *dir(builtins)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
        assert used - bound == set(), block


#: Words the README uses for some of the numbers below.
_WORDS = {0.25: "a quarter", 0.1: "a tenth", 0.5: "half", 2: "twice", (0.5, 1.0): "the probe's answer and half of it"}


def _short(value: float) -> str:
    """A number as the README writes it: ``1e-7``, not Python's ``1e-07``."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{value:g}").replace("e+", "e")


def test_readme_states_the_code_defaults() -> None:
    """Every default and constant the README states in its prose is the code's: each phrase is rebuilt from the
    code's value, so a changed default fails here until the prose follows (only the CLI and the tables were
    checked before)."""
    from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule
    from lr_callbacks.finder import analysis, selection, stability, trials
    from lr_callbacks.watchdog import halt, policy
    from lr_callbacks.watchdog.callback import DEVICE_SYNC_EVERY
    from lr_callbacks.watchdog.device import UPDATE_SAMPLE

    finder = {k: p.default for k, p in inspect.signature(LRFinder).parameters.items()}
    watchdog = {k: p.default for k, p in inspect.signature(DivergenceWatchdog).parameters.items()}
    schedule = {k: p.default for k, p in inspect.signature(LRSchedule).parameters.items()}
    readable = selection.readable_steps(finder["min_lr"], finder["max_lr"], analysis.DEFAULT_WINDOW)
    phrases = [
        f"sweeps {_short(finder['min_lr'])} → {finder['max_lr']:g} at fit start "
        f"({_WORDS[selection.SWEEP_SHARE]} of the run, ≤ {selection.MAX_SWEEP_STEPS} steps)",
        f"the sweep takes {_WORDS[selection.SWEEP_SHARE]} of the run "
        f"({_WORDS[selection.LIST_SWEEP_SHARE]} with a listed candidate set), at most {selection.MAX_SWEEP_STEPS} "
        f"steps",
        f"at least the {readable} steps a curve needs to be read (one per {analysis.DEFAULT_WINDOW:g} decade",
        f"max({stability.HOLD_MIN_STEPS}, 2 × warmup) steps",
        f"more than {stability._Z:g} standard errors above where the hold began",
        f"it halves the LR (at most {_WORDS[stability.MAX_HALVINGS]};",
        f"trials at {_WORDS[trials.CONFIRM_FACTORS]}",
        f"better by more than {selection._Z:g} standard errors",
        f"share {selection.CONFIRM_SHARE:.0%} of the run, and when that leaves under {selection.MIN_TRIAL_STEPS} "
        "steps per trial none run",
        f'`on_length_change`: `"{schedule["on_length_change"]}"` (default',
        f"(z > {watchdog['z_threshold']:g} on the loss, z > {watchdog['grad_z_threshold']:g} on the gradient norm)",
        f"every {watchdog['update_every']} steps the update's size",
        f"a group of more than 2^{UPDATE_SAMPLE.bit_length() - 1} elements",
        f"a cut is undone after {watchdog['recover_after']} of the run without incident",
        f"`<default_root_dir>/{halt.HALT_NAME}`",
        f"reads back every {DEVICE_SYNC_EVERY} steps (`sync_every_n_steps`)",
        f"(`sync_every_n_steps={DEVICE_SYNC_EVERY}`, the GPU default)",
        f"`patience` ({watchdog['patience']}) of the last `window` ({watchdog['window']}) steps",
        f"the loss gate is stricter ({_WORDS[policy.GUARD_Z_SHARE]} the z threshold)",
        f"`max_level_shift`, the largest factor by which the loss may step up and stay flat, "
        f"{watchdog['max_level_shift']:g} by default",
    ]
    assert UPDATE_SAMPLE.bit_count() == 1  # a power of two, as the README writes it
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        text = " ".join(file.read().split())  # a phrase may wrap across lines
    assert [phrase for phrase in phrases if phrase not in text] == []
