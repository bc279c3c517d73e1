"""Fixtures shared by every test area: the offline tiny model and its tokenizer (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from finetune_mcp.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finetune_mcp.testing import build_tokenizer

    path = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tokenizer(path)
    return path


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_dir: Path):
    """A fresh copy per test, so a test may change its chat template or special tokens."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A tmpfs of 32 MiB at tmp_path/disk (skipped where mount is not permitted)."""
    from standins.small_disk import mounted_tmpfs

    with mounted_tmpfs(tmp_path / "disk", "32M") as disk:
        yield disk
