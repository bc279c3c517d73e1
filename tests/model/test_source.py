"""Which values name a GGUF: a file, or a folder holding exactly one (and no config.json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_mcp.errors import ModelError
from finetune_mcp.model import resolve_gguf
from model.conftest import write_gguf


def test_a_gguf_file_or_a_folder_with_one_names_it(tmp_path: Path):
    path = write_gguf(tmp_path / "m.gguf", "llama")
    assert resolve_gguf(str(path)) == path.resolve()
    assert resolve_gguf(str(tmp_path)) == path.resolve()
    renamed = path.rename(tmp_path / "weights.bin")  # the magic counts, not the name
    assert resolve_gguf(str(renamed)) == renamed.resolve()


def test_hub_ids_and_hugging_face_folders_are_not_gguf(tmp_path: Path, tiny_model_dir: Path):
    assert resolve_gguf("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    assert resolve_gguf(str(tiny_model_dir)) is None
    write_gguf(tmp_path / "m.gguf", "llama")
    (tmp_path / "config.json").write_text("{}")  # a Hugging Face folder that also holds a GGUF export
    assert resolve_gguf(str(tmp_path)) is None


def test_ambiguous_or_missing_files_are_refused(tmp_path: Path):
    write_gguf(tmp_path / "a-q8_0.gguf", "llama")
    write_gguf(tmp_path / "a-f16.gguf", "llama")
    with pytest.raises(ModelError, match=r"holds 2 GGUF files \(a-f16.gguf, a-q8_0.gguf\); name the one to use"):
        resolve_gguf(str(tmp_path))
    with pytest.raises(ModelError, match="no such GGUF file"):
        resolve_gguf(str(tmp_path / "missing.gguf"))
    (tmp_path / "fake.gguf").write_text("hello")
    with pytest.raises(ModelError, match=r"fake\.gguf is not a GGUF file"):
        resolve_gguf(str(tmp_path / "fake.gguf"))
