"""The docs cannot rot: ``docs/api.md`` is what the docstrings give, every public object has a doctested
example, every link inside the docs resolves, and ``docs/tensorboard.md`` names every tag a run writes.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
from types import ModuleType

import lr_callbacks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

#: Public objects that still lack a ``>>>`` example in their own docstring (or, for a constant, in any
#: doctest), with the module that owns them. The test below fails when one gains an example, so that it is
#: taken off this list, and when a new public object comes without one.
MISSING_EXAMPLES = {
    "Duration": "_durations",
    "Phase": "_composites",
    "Run": "_durations",
    "Schedule": "_shapes",
    "TRANSFORMERS_ARGUMENTS": "_transformers",
    "TransformersSchedule": "_transformers",
    "__version__": "__init__",
}


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
    for info in pkgutil.iter_modules(lr_callbacks.__path__, "lr_callbacks."):
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


def test_every_link_in_the_docs_resolves() -> None:
    for name in sorted(os.listdir(DOCS)):
        if not name.endswith(".md"):
            continue
        with open(os.path.join(DOCS, name), encoding="utf-8") as file:
            text = file.read()
        anchors = {build_api().anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
        for target in re.findall(r"\]\(([^)]+)\)", text):
            path, _, fragment = target.partition("#")
            if path.startswith("http"):
                continue
            if path:
                assert os.path.exists(os.path.join(DOCS, path)), f"{name} links to a missing file: {target}"
            elif fragment:
                assert fragment in anchors, f"{name} links to a missing heading: #{fragment}"
