"""Build ``docs/api.md``, the API reference, from the docstrings of every name in ``lr_callbacks.__all__``.

    python docs/build_api.py            # rewrite docs/api.md
    python docs/build_api.py --check    # exit 1 if docs/api.md is not what the docstrings give

The docstrings are Google style with reST roles; this turns them into GitHub markdown: ``Args:``,
``Returns:`` and ``Raises:`` become lists, ``>>>`` examples and ``Example::`` blocks become code blocks,
``:class:`~lr_callbacks.X``` becomes a link to ``X``'s entry. ``tests/integration/test_docs.py`` checks that the
committed file is up to date, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_MD = os.path.join(ROOT, "docs", "api.md")

#: Sections of the reference, in order: a title, an introduction, and which objects go there.
SECTIONS: list[tuple[str, str, Callable[[str, Any, str], bool]]] = [
    (
        "Callbacks",
        "Add them to `Trainer(callbacks=[...])`; each works alone or with the others, in either Lightning namespace.",
        lambda name, obj, module: inspect.isclass(obj) and _is_callback(obj),
    ),
    (
        "LR finder: functions and results",
        "Run the range test without the callback, or analyse a curve you already have.",
        lambda name, obj, module: module.startswith("lr_callbacks.finder."),
    ),
    (
        "Divergence watchdog: records and inputs",
        "What the watchdog keeps of each intervention, and how a module hands it its per-sample losses.",
        lambda name, obj, module: module.startswith("lr_callbacks.watchdog."),
    ),
    (
        "Schedules",
        "Pure multipliers of each group's peak LR: `lr(g, k) = peak(g) × schedule(k) × scale(g)`. "
        "Presets by name, shapes, composites, and transformers' names.",
        lambda name, obj, module: (
            module
            in (
                "lr_callbacks.schedule.presets",
                "lr_callbacks.schedule.shapes",
                "lr_callbacks.schedule.composites",
                "lr_callbacks.schedule.transformers",
            )
        ),
    ),
    (
        "Durations",
        "Lengths of training with their unit; resolved to optimizer steps at fit start.",
        lambda name, obj, module: module == "lr_callbacks.core.durations",
    ),
    ("Package", "", lambda name, obj, module: True),
]

_MODULE_ORDER = [
    "lr_callbacks.schedule.callback",
    "lr_callbacks.finder.callback",
    "lr_callbacks.finder.",
    "lr_callbacks.watchdog.callback",
    "lr_callbacks.watchdog.",
    "lr_callbacks.schedule.presets",
    "lr_callbacks.schedule.shapes",
    "lr_callbacks.schedule.composites",
    "lr_callbacks.schedule.transformers",
    "lr_callbacks.core.durations",
]
_SECTION_HEADERS = {
    "Args": "Arguments",
    "Arguments": "Arguments",
    "Attributes": "Attributes",
    "Returns": "Returns",
    "Yields": "Yields",
    "Raises": "Raises",
    "Example": "Example",
    "Examples": "Examples",
    "Note": "Note",
    "Notes": "Notes",
    "Warning": "Warning",
}
_LIST_SECTIONS = {"Arguments", "Attributes", "Raises"}


def _is_callback(cls: type) -> bool:
    from lr_callbacks.core.compat import Callback

    return issubclass(cls, Callback)


def defining_module(name: str, obj: Any) -> str:
    """The module that defines ``obj`` (for a constant, the module whose ``__all__`` names it)."""
    module = getattr(obj, "__module__", None)
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and module:
        return str(module)
    import lr_callbacks

    for info in sorted(pkgutil.walk_packages(lr_callbacks.__path__, "lr_callbacks."), key=lambda i: i.name):
        candidate = importlib.import_module(info.name)
        if name in getattr(candidate, "__all__", ()):
            return candidate.__name__
    return "lr_callbacks"


def _order(module: str, obj: Any) -> tuple[int, str, int]:
    rank = next((i for i, m in enumerate(_MODULE_ORDER) if module.startswith(m)), len(_MODULE_ORDER))
    try:
        line = inspect.getsourcelines(obj)[1] if inspect.isclass(obj) or inspect.isfunction(obj) else 0
    except (OSError, TypeError):
        line = 0
    return rank, module, line


def anchor(name: str) -> str:
    """GitHub's anchor for a ``### name`` heading."""
    return re.sub(r"[^a-z0-9_\- ]", "", name.lower()).replace(" ", "-")


# --- docstrings to markdown --------------------------------------------------------------------------------


def inline(text: str, public: Iterable[str]) -> str:
    """reST inline markup to markdown: roles become code (linked when public), ````x```` becomes ```x```."""
    names = set(public)

    def role(match: re.Match[str]) -> str:
        target = match.group(2)
        shown = target.split(".")[-1] if target.startswith("~") else target
        shown = shown.lstrip("~").removeprefix("lr_callbacks.")
        head = shown.split(".")[0]
        return f"[`{shown}`](#{anchor(head)})" if head in names else f"`{shown}`"

    text = re.sub(r":(class|func|meth|data|attr|mod|obj|exc):`([^`]+)`", role, text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _strip_directives(line: str) -> str:
    return re.sub(r"\s*#\s*doctest:.*$", "", line)


def docstring_markdown(doc: str, public: Iterable[str]) -> str:
    """A cleaned Google-style docstring as markdown."""
    public = list(public)
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):  # a doctest: prompts and outputs up to the next blank line
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(
                    _strip_directives(lines[i].strip()) if lines[i].strip()[:3] in (">>>", "...") else lines[i]
                )
                i += 1
            indent = min(len(b) - len(b.lstrip()) for b in block)
            out += ["```python", *(b[indent:] for b in block), "```", ""]
            continue
        header = re.fullmatch(r"(\w+):", stripped)
        if header and header.group(1) in _SECTION_HEADERS and line == stripped:
            title = _SECTION_HEADERS[header.group(1)]
            body, i = _indented_block(lines, i + 1)
            out += [f"**{title}**", ""]
            out += (
                _list_section(body, public)
                if title in _LIST_SECTIONS
                else [docstring_markdown("\n".join(body), public)]
            )
            out.append("")
            continue
        if stripped.endswith("::") and not stripped.startswith(">>>"):  # an reST literal block
            text = stripped[:-2].rstrip()
            if text:
                out.append(inline(text + ":", public))
            body, i = _indented_block(lines, i + 1)
            out += ["", "```python", *inspect.cleandoc("\n".join(body)).splitlines(), "```", ""]
            continue
        out.append(inline(line, public))
        i += 1
    return "\n".join(out).strip() + "\n"


def _indented_block(lines: list[str], i: int) -> tuple[list[str], int]:
    """The lines from ``i`` that are indented or blank, up to the next line at column 0."""
    body = []
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
        body.append(lines[i])
        i += 1
    while body and not body[-1].strip():
        body.pop()
    return [b for b in inspect.cleandoc("\n".join(body)).splitlines()] if body else [], i


def _list_section(body: list[str], public: list[str]) -> list[str]:
    """``name: text`` entries (continued on deeper-indented lines) as a markdown list."""
    items: list[list[str]] = []
    for line in body:
        entry = re.match(r"^(\*{0,2}[\w., ]+?)(?: \(([^)]*)\))?: (.*)$", line)
        if entry and not line.startswith(" "):
            items.append([f"- `{entry.group(1)}`: {entry.group(3)}"])
        elif items:
            items[-1].append(line.strip())
        else:
            items.append([line.strip()])
    return [inline(" ".join(part for part in item if part), public) for item in items]


# --- objects -----------------------------------------------------------------------------------------------


def _default(cls: Any, parameter: inspect.Parameter) -> str:
    if dataclasses.is_dataclass(cls) and repr(parameter.default) == "<factory>":
        factory = next(f for f in dataclasses.fields(cls) if f.name == parameter.name).default_factory
        if callable(factory):
            return repr(factory())
    return repr(parameter.default)


def signature(name: str, obj: Any, wrap: bool = True) -> str:
    """``name(arg: type = default, ...)`` with string annotations shown unquoted, one per line when long."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    parts, star_done = [], False
    parameters = list(sig.parameters.values())
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    for parameter in parameters:
        if parameter.kind is parameter.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if parameter.kind is parameter.VAR_POSITIONAL:
            star_done = True
        prefix = (
            "*"
            if parameter.kind is parameter.VAR_POSITIONAL
            else "**"
            if parameter.kind is parameter.VAR_KEYWORD
            else ""
        )
        text = prefix + parameter.name
        if parameter.annotation is not parameter.empty:
            annotation = parameter.annotation
            text += f": {annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)}"
        if parameter.default is not parameter.empty:
            text += f" = {_default(obj, parameter)}"
        parts.append(text)
    returns = sig.return_annotation
    tail = "" if returns is sig.empty or inspect.isclass(obj) else f" -> {returns}"
    one_line = f"{name}({', '.join(parts)}){tail}"
    if len(one_line) <= 100 or not wrap:
        return one_line
    return f"{name}(\n" + "".join(f"    {p},\n" for p in parts) + f"){tail}"


def _members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties a class defines itself, with their own docstring (no Lightning hooks)."""
    hooks: set[str] = set()
    if _is_callback(cls):
        from lr_callbacks.core.compat import callback_bases

        for base in callback_bases():
            hooks.update(dir(base))
    members = []
    for key, value in vars(cls).items():
        if key.startswith("_") or key in hooks:
            continue
        function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if isinstance(value, property) or inspect.isfunction(function):
            doc = (value.fget if isinstance(value, property) else function).__doc__
            if doc:
                members.append((key, value))
    return members


def _constant_comment(module: str, name: str) -> str:
    """The ``#:`` comment above ``name = ...`` in ``module``'s source, if any."""
    source = inspect.getsource(importlib.import_module(module))
    match = re.search(rf"((?:^#:.*\n)+)^{re.escape(name)}\b", source, flags=re.MULTILINE)
    if not match:
        return ""
    return " ".join(line[2:].strip() for line in match.group(1).splitlines())


def _constant(name: str, value: Any, module: str, public: list[str]) -> list[str]:
    out = []
    comment = _constant_comment(module, name)
    if not comment:  # the module's docstring says what its constant is for
        comment = (importlib.import_module(module).__doc__ or "").strip().split("\n\n")[0]
    if comment:
        out += [inline(comment, public), ""]
    if isinstance(value, dict) and all(callable(v) for v in value.values()):
        out += ["| name | arguments (defaults) | what |", "|---|---|---|"]
        for key, builder in value.items():
            args = ", ".join(f"`{p.name}={p.default!r}`" for p in inspect.signature(builder).parameters.values())
            summary = inline((inspect.getdoc(builder) or "").splitlines()[0], public)
            out.append(f"| `{key}` | {args} | {summary} |")
    elif isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
        out += ["| name | arguments (defaults) |", "|---|---|"]
        for key, arguments in value.items():
            shown = ", ".join(f"`{k}={v!r}`" for k, v in arguments.items()) or "none"
            out.append(f"| `{key}` | {shown} |")
    else:
        out += ["```python", f"{name} = {value!r}", "```"]
    return [*out, ""]


def entry(name: str, obj: Any, module: str, public: list[str]) -> list[str]:
    """The markdown of one public object."""
    out = [f"### {name}", ""]
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return out + _constant(name, obj, module, public)
    kind = "class" if inspect.isclass(obj) else "def"
    out += ["```python", f"{kind} {signature(name, obj)}", "```", ""]
    if obj.__doc__:
        out.append(docstring_markdown(obj.__doc__, public))
    if inspect.isclass(obj):
        for key, member in _members(obj):
            target = member.fget if isinstance(member, property) else getattr(obj, key)
            if isinstance(member, property):
                out += [f"#### `{name}.{key}` (property)", ""]
            else:
                out += [f"#### `{signature(f'{name}.{key}', target, wrap=False)}`", ""]
            out.append(docstring_markdown(target.__doc__ or "", public))
    return out


def render() -> str:
    """The whole of ``docs/api.md``."""
    sys.path.insert(0, ROOT)
    import lr_callbacks

    public = list(lr_callbacks.__all__)
    placed: dict[str, list[tuple[tuple[int, str, int], str, Any, str]]] = {title: [] for title, _, _ in SECTIONS}
    for name in public:
        obj = getattr(lr_callbacks, name)
        module = defining_module(name, obj)
        title = next(t for t, _, belongs in SECTIONS if belongs(name, obj, module))
        placed[title].append((_order(module, obj), name, obj, module))
    lines = [
        "# API reference",
        "",
        "<!-- Generated from the docstrings by `python docs/build_api.py`; do not edit by hand. -->",
        "",
        f"Everything public is in `lr_callbacks.__all__` (version {lr_callbacks.__version__}). "
        "The examples are doctests: the test suite runs them.",
        "",
    ]
    for title, _, _ in SECTIONS:
        if placed[title]:
            names = ", ".join(f"[`{n}`](#{anchor(n)})" for _, n, _, _ in sorted(placed[title], key=lambda e: e[0]))
            lines.append(f"- **{title}**: {names}")
    lines.append("")
    for title, intro, _ in SECTIONS:
        if not placed[title]:
            continue
        lines += [f"## {title}", ""] + ([intro, ""] if intro else [])
        for _, name, obj, module in sorted(placed[title], key=lambda e: e[0]):
            lines += entry(name, obj, module, public)
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        with open(API_MD, encoding="utf-8") as file:
            if file.read() != text:
                print("docs/api.md is out of date: run `python docs/build_api.py`", file=sys.stderr)
                return 1
        return 0
    with open(API_MD, "w", encoding="utf-8") as file:
        file.write(text)
    print(f"wrote {os.path.relpath(API_MD)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
