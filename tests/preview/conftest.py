"""Fixtures for the dry-run tests: model folders (the tiny model, and weightless folders with the real
templates and sizes of each family), datasets in every format, and a snapshot that proves nothing
was written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from finetune_mcp.config import Settings


@pytest.fixture(scope="session")
def template_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """family name → a model folder with that family's tokenizer, template and config (no weights)."""
    from finetune_mcp.testing.template_tokenizers import write_template_model

    root = tmp_path_factory.mktemp("template-models")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = write_template_model(name, root / name)
        return made[name]

    return get


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A home of its own and no RunPod key: placement is local (the CPU here) unless a test sets one."""
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.setenv("FINETUNE_MCP_HOME", str(tmp_path / "home"))
    return Settings.from_env()
