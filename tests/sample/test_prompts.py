"""Prompts from rows are exactly the rows training held out (or trained on); inline prompts are checked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from finetune_mcp.config import build_config
from finetune_mcp.data.loader import load_examples
from finetune_mcp.errors import ConfigError, DatasetError
from finetune_mcp.sample.prompts import inline_prompts, row_prompts
from finetune_mcp.sample.spec import RowSource, build_sample_spec
from finetune_mcp.testing import write_dataset

SPLIT = {"validation_split": 0.25, "seed": 11, "max_examples": 20}


@pytest.fixture
def qa(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "qa.jsonl", "alpaca", n=24)


def test_validation_rows_are_the_ones_training_held_out_in_its_order(qa: Path) -> None:
    held_out = load_examples(build_config({"model": "m", "dataset": str(qa), **SPLIT})).validation
    prompts = row_prompts(RowSource(dataset=str(qa), **SPLIT, count=50))
    assert len(prompts) == len(held_out) == 5
    assert [p.messages[-1].content for p in prompts] == [ex["messages"][-2]["content"] for ex in held_out]
    assert [p.reference for p in prompts] == [ex["messages"][-1]["content"] for ex in held_out]
    assert [p.row for p in prompts] == [0, 1, 2, 3, 4]
    trained = row_prompts(RowSource(dataset=str(qa), **SPLIT, split="train", count=3))
    assert len(trained) == 3 and {p.shown() for p in trained}.isdisjoint({p.shown() for p in prompts})


def test_seeded_order_is_a_reproducible_choice_and_first_is_a_prefix(qa: Path) -> None:
    rows = dict(dataset=str(qa), **SPLIT, split="all")
    first = row_prompts(RowSource(**rows, count=4))
    everything = row_prompts(RowSource(**rows, count=200))
    assert [p.row for p in first] == [0, 1, 2, 3] and len(everything) == 20
    seeded = [p.row for p in row_prompts(RowSource(**rows, count=4, order="seeded", order_seed=5))]
    assert seeded == [p.row for p in row_prompts(RowSource(**rows, count=4, order="seeded", order_seed=5))]
    assert seeded != [0, 1, 2, 3] and seeded == sorted(seeded)


def test_prompt_completion_rows_are_raw_text_and_text_rows_cannot_be_asked(tmp_path: Path) -> None:
    pc = tmp_path / "pc.jsonl"
    pc.write_text("".join(json.dumps({"prompt": f"q{i} =", "completion": f" {i}"}) + "\n" for i in range(4)))
    prompts = row_prompts(RowSource(dataset=str(pc), split="all", count=4))
    assert all(p.text and p.messages is None for p in prompts) and {p.reference for p in prompts} == {" 0", " 1", " 2", " 3"}
    text = write_dataset(tmp_path / "text.jsonl", "text", n=8)
    with pytest.raises(DatasetError, match=r"has a prompt and an answer .* pass prompts instead"):
        row_prompts(RowSource(dataset=str(text), split="all"))


def test_an_empty_validation_split_says_what_to_do(tmp_path: Path) -> None:
    one = write_dataset(tmp_path / "one.jsonl", "messages", n=1)
    with pytest.raises(DatasetError, match=r"validation split holds no rows .* pass prompts, or rows_split='all'"):
        row_prompts(RowSource(dataset=str(one)))


def test_inline_prompts_are_user_turns_or_conversations_ending_with_the_user() -> None:
    prompts = inline_prompts(["what color is the sky?", [{"role": "system", "content": "be brief"},
                                                         {"role": "user", "content": "add 2 and 3."}]])
    assert [len(p.messages) for p in prompts] == [1, 2] and prompts[1].shown() == "add 2 and 3."
    with pytest.raises(ConfigError, match="prompt 0 is empty"):
        inline_prompts(["  "])
    with pytest.raises(ConfigError, match=r"prompt 1: .*ends with an assistant turn"):
        inline_prompts(["ok", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]])
    with pytest.raises(ConfigError, match=r"prompt 0: .*role"):
        inline_prompts([[{"role": "robot", "content": "hi"}]])


def test_the_spec_refuses_nothing_to_ask_duplicate_models_and_top_p_without_sampling() -> None:
    model = {"label": "model", "model": "m", "weights": "model"}
    with pytest.raises(ConfigError, match="no prompts"):
        build_sample_spec({"model": "m", "models": [model]})
    with pytest.raises(ConfigError, match="labels must differ"):
        build_sample_spec({"model": "m", "models": [model, model], "prompts": [{"text": "x"}]})
    with pytest.raises(ConfigError, match=re.escape("top_p=0.9 applies only when sampling; set temperature > 0")):
        build_sample_spec({"model": "m", "models": [model], "prompts": [{"text": "x"}], "settings": {"top_p": 0.9}})
    with pytest.raises(ConfigError, match="temperature: Input should be greater than or equal to 0"):
        build_sample_spec({"model": "m", "models": [model], "prompts": [{"text": "x"}],
                           "settings": {"temperature": -1}})
