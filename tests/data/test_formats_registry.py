"""The format registry: every format is registered once under the name `dataset_format` spells,
detection walks it in order, and a preference row is never taken for prompt/completion."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from finetune_mcp.config.data import DatasetFormat
from finetune_mcp.config.methods import METHODS
from finetune_mcp.data.formats import FORMATS, REGISTRY, detect_format
from finetune_mcp.errors import DatasetError


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


@pytest.mark.parametrize("row", [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"chosen": "a", "rejected": "b"},
                                 {"prompt": "p", "completion": "c", "chosen": "a"}])
def test_a_preference_row_is_not_prompt_completion(row: dict) -> None:
    with pytest.raises(DatasetError, match="cannot tell the format from the keys"):
        detect_format(row, path=Path("d.jsonl"), line=3)
