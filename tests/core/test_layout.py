"""The layout is a map of the architecture, and these tests keep it one.

- no import cycle between the package's modules;
- ``core`` imports no callback subpackage (``schedule``, ``finder``, ``watchdog``) and no ``cli``;
- a callback subpackage imports no other callback subpackage: they meet only in ``core`` (the LR model's protocols);
- the pure modules import neither torch nor Lightning, directly or through what they import;
- the command line (``--help``, ``plot``, ``presets``) imports neither Lightning namespace, nor torch.

The import graph is read from the source (``ast``), every import counted, also those inside functions, so that
a deferred import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lr_callbacks

PACKAGE = Path(lr_callbacks.__file__).parent
CALLBACK_PACKAGES = ("schedule", "finder", "watchdog")

#: Modules that must run with the standard library (and NumPy/matplotlib for plotting) only.
PURE = (
    "core.checks",
    "core.durations",
    "core.plot",
    "schedule.shapes",
    "schedule.composites",
    "schedule.presets",
    "schedule.transformers",
    "schedule.plan",
    "finder.ramp",
    "finder.analysis",
    "finder.result",
    "finder.stability",
    "finder.selection",
    "watchdog.config",
    "watchdog.stats",
    "watchdog.state",
    "watchdog.memory",
    "watchdog.update_rules",
    "watchdog.data_rules",
    "watchdog.policy",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The ``lr_callbacks`` modules that ``path`` imports (each ``from lr_callbacks.x import y`` names ``x``, or
    ``x.y`` where that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lr_callbacks"):
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists():
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lr_callbacks"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        # importing lr_callbacks.a.b runs lr_callbacks/__init__ and lr_callbacks/a/__init__ first: not an edge
        # of this module's own making, so only the named modules count
        edges[name] = {m for m in imports_of(path) if m in modules and m != name}
    return edges


def test_the_graph_sees_the_package():
    edges = graph()
    assert "lr_callbacks.core.lr_model" in edges and "lr_callbacks.watchdog.callback" in edges
    assert "lr_callbacks.core.lr_model" in edges["lr_callbacks.watchdog.callback"]


def test_there_is_no_import_cycle():
    edges = {k: {m for m in v if m != "lr_callbacks"} for k, v in graph().items() if k != "lr_callbacks"}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_core_imports_no_callback_and_callbacks_meet_only_in_core():
    for module, imported in graph().items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in ("core", *CALLBACK_PACKAGES):
            continue
        own = parts[1]
        for target in imported:
            other = target.split(".")[1] if target.count(".") else ""
            if own == "core":
                assert other not in (*CALLBACK_PACKAGES, "cli"), f"{module} (core) imports {target}"
            else:
                assert other in ("core", own), f"{module} ({own}) imports {target}: meet in core instead"


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_neither_torch_nor_lightning(module):
    code = (
        f"import sys, lr_callbacks.{module}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning'))\n"
        "print(','.join(bad[:5]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"lr_callbacks.{module} imports {out}"


@pytest.mark.parametrize("argv", [["--help"], ["plot", "cosine", "--steps", "10"], ["presets"]])
def test_the_command_line_imports_neither_lightning_nor_torch(argv):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['lr_callbacks', *{argv!r}]\n"
        "try:\n"
        "    runpy.run_module('lr_callbacks', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning'))\n"
        "print('IMPORTED:' + ','.join(bad[:5]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "IMPORTED:", out[-500:]


def test_the_callbacks_are_still_importable_from_the_package():
    from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule, find_lr

    assert LRSchedule.__module__ == "lr_callbacks.schedule.callback"
    assert LRFinder.__module__ == find_lr.__module__ == "lr_callbacks.finder.callback"
    assert DivergenceWatchdog.__module__ == "lr_callbacks.watchdog.callback"
    assert {"LRSchedule", "LRFinder", "find_lr", "DivergenceWatchdog"} <= set(dir(lr_callbacks))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        lr_callbacks.Nope  # noqa: B018


def test_the_wheel_ships_the_typed_marker_and_the_license():
    root = PACKAGE.parent
    assert (PACKAGE / "py.typed").exists() and "Apache License" in (root / "LICENSE").read_text(encoding="utf-8")
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license-files = ["LICENSE"]' in pyproject and 'lr_callbacks = ["py.typed"]' in pyproject
