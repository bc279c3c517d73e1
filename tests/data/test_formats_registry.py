"""The format registry: every format is registered once under the name `dataset_format` spells,
detection walks it in order, and a preference row is never taken for prompt/completion."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from finetune_mcp.config.data import DatasetFormat
from finetune_mcp.config.methods import METHODS
from finetune_mcp.data.formats import FORMATS, REGISTRY, detect_format


def test_registry_names_are_the_configs_formats() -> None:
    assert len(FORMATS) == len(REGISTRY)
    assert set(FORMATS) == set(typing.get_args(DatasetFormat)) - {"auto"}
    assert {fmt for method in METHODS.values() for fmt in method.formats} <= set(FORMATS)


@pytest.mark.parametrize(("row", "fmt"), [
    ({"query": "q", "docs": [], "instruction": "i"}, "graded"),
    ({"query": "q", "positive": "p", "negative": "n"}, "triples"),
    ({"query": "q", "positive": "p", "negatives": ["n"]}, "ranking"),
    ({"messages": [], "metadata": {}}, "arangodb"),
    ({"messages": []}, "messages"),
    ({"conversations": []}, "sharegpt"),
    ({"instruction": "i", "output": "o", "query": "q"}, "alpaca"),
    ({"prompt": "p", "completion": "c"}, "prompt_completion"),
    ({"text": "t"}, "text"),
])
def test_detection_order(row: dict, fmt: str) -> None:
    assert detect_format(row, path="d.jsonl", line=1) == fmt


@pytest.mark.parametrize(("row", "fmt"), [
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
    ({"chosen": "a", "rejected": "b"}, "implicit_preference"),
    ({"prompt": "p", "completion": "c", "chosen": "a"}, "preference"),  # a pair missing its half, not SFT's row
    ({"prompt": "p", "completion": "c", "label": True}, "unpaired_preference"),
    ({"prompt": "p", "answer": "4"}, "prompt_completion"),  # for SFT: a prompt/completion row missing its completion
])
def test_a_preference_row_is_not_prompt_completion(row: dict, fmt: str) -> None:
    assert detect_format(row, path=Path("d.jsonl"), line=3) == fmt


def test_the_methods_formats_are_asked_first() -> None:
    assert detect_format({"prompt": "p", "answer": "4"}, path="d.jsonl", line=1, accepted=("prompt_only",)) \
        == "prompt_only"
    # SFT keeps reading a labelled prompt/completion row as its own; KTO reads it as an unpaired row
    row = {"prompt": "p", "completion": "c", "label": False}
    assert detect_format(row, path="d.jsonl", line=1, accepted=("prompt_completion",)) == "prompt_completion"
    assert detect_format(row, path="d.jsonl", line=1, accepted=("unpaired_preference",)) == "unpaired_preference"
