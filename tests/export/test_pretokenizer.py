"""pre_tokenizer_name: the llama.cpp pre-tokenizer named from a tokenizer.json's splitting rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.export.pretokenizer import pre_tokenizer_name
from finetune_mcp.testing import build_tokenizer


@pytest.mark.parametrize(("style", "expected"), [("gpt2", "gpt-2"), ("qwen2", "qwen2"), ("llama3", "llama-bpe")])
def test_the_tiny_tokenizers_are_named_by_their_rules(tmp_path: Path, style: str, expected: str) -> None:
    build_tokenizer(tmp_path, pre_tokenizer=style)
    assert pre_tokenizer_name(tmp_path / "tokenizer.json") == expected


def _with_pre_tokenizer(path: Path, pre: dict) -> Path:
    build_tokenizer(path)
    data = json.loads((path / "tokenizer.json").read_text())
    data["pre_tokenizer"] = pre
    (path / "tokenizer.json").write_text(json.dumps(data))
    return path / "tokenizer.json"


@pytest.mark.parametrize("pre", [
    {"type": "Whitespace"},
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},  # GPT-2 + prefix space
    {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{N}{1,4}"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
])
def test_rules_llama_cpp_does_not_implement_are_refused_with_what_was_found(tmp_path: Path, pre: dict) -> None:
    with pytest.raises(ValueError, match=r"none that llama\.cpp implements") as err:
        pre_tokenizer_name(_with_pre_tokenizer(tmp_path, pre))
    assert pre["type"] in str(err.value)


def test_an_unreadable_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        pre_tokenizer_name(tmp_path / "tokenizer.json")
