"""Shared test set-up: quiet Lightning, deterministic torch, and the helpers in ``tests/helpers.py``."""

from __future__ import annotations

import logging
import os
import warnings

import pytest
import torch
from hypothesis import settings

# The same examples on every run: a property test that fails, fails again, on any machine.
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.load_profile("deterministic")

os.environ.setdefault("PL_DISABLE_FORK", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
    logging.getLogger(name).setLevel(logging.ERROR)

warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
warnings.filterwarnings("ignore", message=".*litlogger.*|.*litmodels.*")


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
