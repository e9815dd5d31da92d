"""Shared fixtures: a tiny randomly initialised model saved as an HF folder, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import utils.quiet  # noqa: F401
from utils.tiny_model import save_tiny_model

# Tests must never reach the hub, and two cores are easily oversubscribed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the tiny Llama model and its tokenizer."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))
