"""Argument checks shared by the public constructors: each error names the argument, the value and the fix."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    owner: str = "",
) -> float:
    """Validate a finite real number within bounds; return it as a float.

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is not finite or out of bounds; the message names the argument and the value.
    """
    where = f"{owner}: " if owner else ""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        foreign = foreign_scalar(value, "float")
        if foreign:
            raise TypeError(f"{where}`{name}` must be a Python int or float, got {value!r}{foreign}")
        raise TypeError(f"{where}`{name}` must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int past float's range, 10**400
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{where}`{name}` must be finite, got {value!r}")
    if low is not None and (number <= low if low_open else number < low):
        bound = ">" if low_open else ">="
        raise ValueError(f"{where}`{name}` must be {bound} {low:g}, got {value!r}")
    if high is not None and number > high:
        raise ValueError(f"{where}`{name}` must be <= {high:g}, got {value!r}")
    return number


def check_int(name: str, value: object, *, low: int | None = None, owner: str = "") -> int:
    """Validate a whole number (not a bool) >= ``low``; return it.

    Raises:
        TypeError: if ``value`` is not an int.
        ValueError: if it is below ``low``.
    """
    where = f"{owner}: " if owner else ""
    if not isinstance(value, int) or isinstance(value, bool):
        foreign = foreign_scalar(value, "int")
        if foreign:
            raise TypeError(f"{where}`{name}` must be a Python int, got {value!r}{foreign}")
        raise TypeError(f"{where}`{name}` must be a whole number, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{where}`{name}` must be >= {low}, got {value!r}")
    return value


def check_step(name: str, value: object, *, owner: str = "") -> int:
    """Validate an optimizer step: a whole number >= 0 (an integral float such as ``3.0`` is taken as ``3``);
    return it as an int.

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is negative, fractional or not finite; the message names the argument, the value and the
            fix.
    """
    where = f"{owner}: " if owner else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}`{name}` is an optimizer step, a whole number >= 0, got {value!r}; pass an int")
    if isinstance(value, numbers.Integral):
        step = int(value)
    elif math.isfinite(float(value)) and float(value).is_integer():
        step = int(float(value))
    else:
        raise ValueError(
            f"{where}`{name}` is an optimizer step, a whole number >= 0, got {value!r}; steps are counted, not "
            "measured: pass an int"
        )
    if step < 0:
        raise ValueError(
            f"{where}`{name}` is an optimizer step, a whole number >= 0, got {value!r}; the run's first step is 0"
        )
    return step


def check_bool(name: str, value: object, *, owner: str = "") -> bool:
    """Validate a bool (not a number standing in for one); return it.

    Raises:
        TypeError: if ``value`` is not ``True`` or ``False``.
    """
    if not isinstance(value, bool):
        where = f"{owner}: " if owner else ""
        raise TypeError(f"{where}`{name}` must be True or False, got {value!r}{foreign_scalar(value, 'bool')}")
    return value


def foreign_scalar(value: object, convert: str) -> str:
    """The fix for a single number of a type the checks do not take, a numpy scalar (``np.int64(200)`` from
    ``np.arange``, ``np.float32``), a one-element tensor or array, or another number type (``Fraction``): the type and
    the conversion; ``""`` for anything else.

    Before, ``np.int64(200)`` was refused as "must be a whole number" and ``np.float32(0.1)`` as "must be a
    number": both are, and the message gave no way out.

    A ``Fraction`` or a ``Decimal`` is a number too: it was refused as "must be a number", with no way out.

    >>> foreign_scalar(3, "int"), foreign_scalar("3", "int")
    ('', '')
    >>> from fractions import Fraction
    >>> foreign_scalar(Fraction(1, 2), "float")
    ' (a fractions.Fraction); convert it with float(...)'
    """
    kind = type(value)
    if kind.__module__ == "builtins":
        return ""
    if isinstance(value, numbers.Number) and not callable(getattr(value, "item", None)):  # a Fraction, a Decimal
        return f" (a {kind.__module__}.{kind.__qualname__}); convert it with {convert}(...)"
    if not callable(getattr(value, "item", None)):
        return ""
    numel = getattr(value, "numel", None)  # a tensor's; an array's (and a numpy scalar's) is `size`
    if (numel() if callable(numel) else getattr(value, "size", 1)) != 1:
        return ""
    return f" (a {kind.__module__}.{kind.__qualname__}); convert it with {convert}(...) or .item()"


def check_choice(name: str, value: object, choices: Iterable[str], *, owner: str = "") -> str:
    """Validate that ``value`` is one of ``choices``; the error lists the valid names.

    Raises:
        ValueError: if it is not.
    """
    options = list(choices)
    if value not in options:
        where = f"{owner}: " if owner else ""
        raise ValueError(f"{where}unknown `{name}` {value!r}; choose one of: {', '.join(map(repr, options))}")
    return str(value)


def given_arguments(function: Callable[..., Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of a call to ``function`` that differ from its defaults, in its signature's order.

    ``values`` is the function's ``locals()`` on entry; a ``**kwargs`` parameter's entries are spread. For a
    callback's ``repr``, which shows what it was built with.

    >>> def f(a, b=1, *, c="x", **more): return locals()
    >>> given_arguments(f, f(0, c="y", d=2))
    {'a': 0, 'c': 'y', 'd': 2}
    """
    given: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or parameter.kind is parameter.VAR_POSITIONAL:
            continue
        if parameter.kind is parameter.VAR_KEYWORD:
            given.update(values.get(name) or {})
        elif parameter.default is parameter.empty or not _same(values[name], parameter.default):
            given[name] = values[name]
    return given


def _same(value: object, default: object) -> bool:
    """Whether ``value`` is the default as given: of its type, or a list for a tuple default (LightningCLI passes
    every argument, a ``Sequence`` default as a list: ``epochs=[]`` for ``()``).

    >>> _same([], ()), _same([1], (1,)), _same(1, 1.0), _same(True, 1)
    (True, True, False, False)
    """
    if value is default:
        return True
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:  # an object whose == is not a truth value (a tensor)
        return False
