"""Doctests see the public API by name, as a reader of the docstrings would after ``from lr_callbacks import *``."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _public_api_in_doctests(doctest_namespace: dict) -> None:
    import lr_callbacks

    for name in lr_callbacks.__all__:
        doctest_namespace[name] = getattr(lr_callbacks, name)
