"""The examples run, at a small size, and do what their docstrings say.

Each example is a script with a ``main(argv)``; the tests import it from ``examples/`` and call ``main`` with
small sizes, in this process (a fresh interpreter would spend seconds importing torch and Lightning again).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import sys
from types import ModuleType

import pytest
from PIL import Image

from tests.helpers import read_events, read_scalars

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")


def example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def test_every_example_is_short_and_tested() -> None:
    scripts = sorted(f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py") and f != "demo.py")
    with open(__file__, encoding="utf-8") as file:
        this = file.read()
    for name in scripts:
        assert f'example("{name}")' in this, f"examples/{name}.py has no test here"
        with open(os.path.join(EXAMPLES, f"{name}.py"), encoding="utf-8") as file:
            source = file.read()
        code = [line for line in source.split('"""', 2)[2].splitlines() if line.strip()]
        assert len(code) <= 110, f"examples/{name}.py has {len(code)} lines of code; keep examples short"


def test_what_the_examples_write_by_default_is_ignored_by_git() -> None:
    """Run from the repository root as their docstrings show, the examples write their logs and plots there:
    ``.gitignore`` keeps each default output path (``--logdir``, ``--plot``) out of ``git status``."""
    root = os.path.dirname(EXAMPLES)
    with open(os.path.join(root, ".gitignore"), encoding="utf-8") as file:
        ignored = {line.strip().strip("/") for line in file}
    outputs = {}
    for name in sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")):
        with open(os.path.join(EXAMPLES, name), encoding="utf-8") as file:
            for path in re.findall(r'add_argument\("--(?:logdir|plot)", default="([^"]+)"', file.read()):
                outputs[path] = name
    assert len(outputs) == 4, outputs  # one per example: a changed argparse line must not empty this test
    assert {path: name for path, name in outputs.items() if path not in ignored} == {}


def test_demo_installs_into_a_venv_that_lacks_the_package(tmp_path) -> None:
    """``scripts/demo.sh`` installs when ``.venv`` cannot import lr_callbacks, although the repository root it runs
    from holds ``lr_callbacks/``: its check imported the package from there, skipped the install, and the demo then
    failed with ``ModuleNotFoundError: No module named 'lr_callbacks'``. Here ``.venv`` borrows this interpreter's
    site-packages (torch, scikit-learn; not the package, whose editable ``.pth`` is not read from a borrowed
    folder), and a stand-in ``pip`` records the install instead of running it."""
    import glob
    import shutil
    import site
    import subprocess
    import venv

    root = os.path.dirname(EXAMPLES)
    os.makedirs(tmp_path / "scripts")
    shutil.copy(os.path.join(root, "scripts", "demo.sh"), tmp_path / "scripts" / "demo.sh")
    os.symlink(os.path.join(root, "lr_callbacks"), tmp_path / "lr_callbacks")
    os.makedirs(tmp_path / "examples")
    (tmp_path / "examples" / "quickstart.py").write_text("print('the demo ran')\n")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(tmp_path / ".venv")
    (own,) = glob.glob(str(tmp_path / ".venv" / "lib" / "python*" / "site-packages"))
    with open(os.path.join(own, "borrowed.pth"), "w") as file:
        file.write("\n".join(site.getsitepackages()) + "\n")
    python = str(tmp_path / ".venv" / "bin" / "python")
    check = subprocess.run([python, "-I", "-c", "import sklearn, lr_callbacks"], cwd=tmp_path / "examples")
    if check.returncode == 0:
        pytest.skip("this interpreter's site-packages hold lr_callbacks itself (not an editable install)")
    os.makedirs(os.path.join(own, "pip"))
    log = tmp_path / "pip.log"
    with open(os.path.join(own, "pip", "__main__.py"), "w") as file:
        file.write(f"import sys\nwith open({str(log)!r}, 'a') as f:\n    f.write(' '.join(sys.argv[1:]) + '\\n')\n")
    open(os.path.join(own, "pip", "__init__.py"), "w").close()
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "the demo ran" in done.stdout, done.stderr
    assert log.exists() and "install --quiet -e .[demo]" in log.read_text(), "demo.sh did not install the package"


def test_charlm_wsd_decays_at_the_end_and_learns(tmp_path, capsys) -> None:
    logdir = tmp_path / "logs"
    val_losses = example("charlm_wsd").main(
        ["--steps", "20", "--chars", "60000", "--width", "32", "--val-batches", "2", "--logdir", str(logdir)]
    )
    assert sorted(val_losses) == [4, 8, 12, 16, 20]  # every gcd(16, 20) steps: the decay's start and the end
    assert val_losses[20] < val_losses[4]
    lrs = [lr for _, lr in read_scalars(logdir, "lr/group0")]
    assert len(lrs) == 20
    assert lrs[0] == pytest.approx(3e-3 / 1)  # warmup of ceil(5% of 20) = 1 step: the peak at once
    assert lrs[1:17] == pytest.approx([3e-3] * 16)  # stable, and the decay's first step is still at the peak
    assert all(a > b for a, b in itertools.pairwise(lrs[16:]))  # then the last 20% decays
    assert "lr_schedule/plan" in read_events(logdir).Tags()["images"]
    printed = capsys.readouterr().out
    assert "<- the decay starts" in printed and "<- the end of the run" in printed


def test_find_lr_sets_the_lr_it_found_and_trains_from_it(tmp_path, capsys) -> None:
    plot = tmp_path / "curve.png"
    out = example("find_lr").main(["--num-steps", "40", "--epochs", "1", "--plot", str(plot)])
    result = out["result"]
    assert 8 <= len(result.lrs) <= 40
    assert result.chosen_lr is not None and out["lr"] == result.chosen_lr
    assert out["accuracy"] > 0.5  # ten classes: chance is 0.1
    assert Image.open(plot).size[0] > 100
    printed = capsys.readouterr().out
    assert "**LR finder**" in printed and f"trained from a peak lr={result.chosen_lr:.3g}" in printed


def test_find_lr_method_chooses_the_rule(tmp_path) -> None:
    module = example("find_lr")
    default = module.main(["--num-steps", "40", "--epochs", "1", "--plot", str(tmp_path / "a.png")])["result"]
    valley = module.main(
        ["--num-steps", "40", "--epochs", "1", "--method", "valley", "--plot", str(tmp_path / "b.png")]
    )
    assert valley["result"].method == "valley" and default.method == "default"
    assert valley["result"].suggestion == default.alternatives()["valley"] != default.suggestion
    assert valley["lr"] == valley["result"].chosen_lr


def test_find_lr_refuses_an_unknown_method_before_it_loads_anything(capsys) -> None:
    with pytest.raises(SystemExit):  # argparse's usage error, not a ValueError from inside find_lr
        example("find_lr").main(["--method", "vally"])
    assert "invalid choice: 'vally'" in capsys.readouterr().err


def test_quickstart_finds_the_lr_schedules_from_it_and_skips_the_bad_batch(tmp_path, capsys) -> None:
    logdir = tmp_path / "logs"
    argv = ["--epochs", "3", "--finder-steps", "20", "--bad-batch", "60", "--logdir", str(logdir)]
    out = example("quickstart").main(argv)
    assert out["lr"] is not None and out["schedule"].peak_lrs[0][0] == pytest.approx(out["lr"])
    assert {(i.step, i.action) for i in out["events"]} == {(60, "skip")}  # one incident per signal that saw it
    assert {i.signal for i in out["events"]} <= {"loss", "grad_norm"}
    assert out["accuracy"] > 0.8
    tags = read_events(logdir).Tags()
    assert {"lr_schedule/plan", "lr_finder/curve"} <= set(tags["images"])
    assert {"lr/group0", "lr_finder/loss", "watchdog/loss", "watchdog/lr_scale"} <= set(tags["scalars"])
    assert "watchdog/events/text_summary" in tags["tensors"]
    printed = capsys.readouterr().out
    assert "== LRFinder ==" in printed and "step 60: " in printed and "-> skip" in printed


def test_quickstart_without_a_bad_batch_has_no_incident(tmp_path) -> None:
    argv = ["--epochs", "3", "--finder-steps", "20", "--bad-batch", "-1", "--logdir", str(tmp_path)]
    assert example("quickstart").main(argv)["events"] == []


def test_minilm_finetune_warms_up_and_decays_both_groups(tmp_path, capsys) -> None:
    out = example("minilm_finetune").main(
        ["--epochs", "1", "--per-class", "12", "--batch-size", "8", "--logdir", str(tmp_path)]
    )
    schedule = out["schedule"]
    steps = schedule.steps[0]
    assert steps == 5  # 48 docstrings, 38 to train on, batches of 8
    logged = read_scalars(tmp_path, "lr/encoder")  # at the trainer's log_every_n_steps (5): step 0
    encoder, head = [lr for _, lr in logged], [lr for _, lr in read_scalars(tmp_path, "lr/head")]
    assert [k for k, _ in logged] == list(range(0, steps, 5))
    assert encoder == pytest.approx([schedule.lr_at(k, 0, 0) for k, _ in logged], rel=1e-6)
    assert head == pytest.approx([20 * lr for lr in encoder], rel=1e-6)  # the ratio is kept: 1e-3 / 5e-5
    plan = [schedule.lr_at(k, 0, 0) for k in range(steps)]
    assert plan[0] == pytest.approx(5e-5) and plan == sorted(plan, reverse=True)  # 10% of 5 steps: 1 of warmup
    assert schedule.lr_at(0, 0, 1) == pytest.approx(1e-3)
    assert out["events"] == []
    assert 0.0 <= out["before"] <= 1.0 and 0.0 <= out["after"] <= 1.0
    printed = capsys.readouterr().out
    assert "validation accuracy:" in printed
    assert f"TensorBoard logs in {tmp_path}" in printed  # it says where it wrote them (minilm_logs/ by default)
