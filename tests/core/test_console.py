"""The ``lr_callbacks`` logger's info lines reach the console once, from the global rank 0 only."""

from __future__ import annotations

import subprocess
import sys


def _stderr(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stderr


def test_an_info_line_reaches_the_console_when_the_application_set_up_no_logging() -> None:
    assert _stderr("import lr_callbacks, logging; logging.getLogger('lr_callbacks').info('the answer')") == (
        "the answer\n"
    )


def test_an_application_that_sets_up_logging_prints_each_line_once_in_its_own_format() -> None:
    code = (
        "import lr_callbacks, logging; logging.basicConfig(format='app: %(message)s'); "
        "logging.getLogger('lr_callbacks').info('the answer')"
    )
    assert _stderr(code) == "app: the answer\n"


def test_other_ranks_print_nothing() -> None:
    code = (
        "import lr_callbacks, logging; from lightning_fabric.utilities.rank_zero import rank_zero_only; "
        "rank_zero_only.rank = 1; logging.getLogger('lr_callbacks').info('the answer')"
    )
    assert _stderr(code) == ""
