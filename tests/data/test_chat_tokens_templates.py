"""The loss mask on the real chat templates of Qwen3, Llama 3.x, Gemma 3/4, Mistral, Phi-4 and the
DeepSeek-R1 distills, each on an offline tokenizer with that family's markers as single tokens.

The rule checked: the tokens that carry loss are exactly the assistant's content as the template
renders it plus the end-of-turn token that closes it (so the model learns to stop), in every
assistant turn; nothing the template adds around a reply (headers, Qwen3's empty think block, the
newline after the end-of-turn, an EOS after the whole conversation) is trained.
"""

from __future__ import annotations

from typing import Any

import pytest

from finetune_mcp.data.chat_tokens import IGNORE_INDEX, tokenize_examples
from finetune_mcp.testing.template_tokenizers import FAMILIES, build_template_tokenizer

SYSTEM = {"role": "system", "content": "you are helpful."}
USER = {"role": "user", "content": "what color is the sky?"}
REPLY = {"role": "assistant", "content": "blue"}
USER_2 = {"role": "user", "content": "and the grass?"}
REPLY_2 = {"role": "assistant", "content": "green"}
REASONING = "the sky scatters short waves"
THINKING_REPLY = {"role": "assistant", "content": f"<think>\n{REASONING}\n</think>\n\nblue"}

# What a reply looks like once trained, per family: the content as rendered, then the end-of-turn.
# Mistral writes " " + content before the reply; the space goes with the reply's first token.
REPLY_PREFIX = {"mistral_v0_3": " "}


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Any]:
    return {name: build_template_tokenizer(name) for name in FAMILIES}


def labelled_runs(tokenizer: Any, row: dict[str, list[int]]) -> list[str]:
    """The decoded text of each contiguous run of labelled tokens."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token, "a labelled position carries its own token id (the trainer shifts)"
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def trained(tokenizers: dict[str, Any], name: str, messages: list[dict[str, str]]) -> list[str]:
    tokenizer = tokenizers[name]
    row = tokenize_examples([{"messages": messages}], tokenizer, 4096)[0]
    return labelled_runs(tokenizer, row)


def reply(name: str, content: str) -> str:
    return REPLY_PREFIX.get(name, "") + content + FAMILIES[name].end_of_turn


def test_every_family_is_covered(tokenizers: dict[str, Any]) -> None:
    assert set(FAMILIES) == {"qwen3", "llama3_1", "llama3_2", "gemma3", "gemma4", "mistral_v0_3", "phi4",
                             "phi4_mini", "deepseek_r1_distill"}
    for name, tokenizer in tokenizers.items():
        end = FAMILIES[name].end_of_turn
        assert len(tokenizer(end, add_special_tokens=False)["input_ids"]) == 1, f"{name}: {end} is one token"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_single_turn_trains_the_reply_and_its_end_of_turn(tokenizers: dict[str, Any], name: str) -> None:
    assert trained(tokenizers, name, [SYSTEM, USER, REPLY]) == [reply(name, "blue")]
    assert trained(tokenizers, name, [USER, REPLY]) == [reply(name, "blue")]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_multi_turn_trains_every_reply(tokenizers: dict[str, Any], name: str) -> None:
    """Qwen3 renders the last reply with an empty think block and the earlier ones without: the
    block is the template's, not the data's, and is not trained."""
    assert trained(tokenizers, name, [SYSTEM, USER, REPLY, USER_2, REPLY_2]) == [
        reply(name, "blue"), reply(name, "green"),
    ]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_end_of_turn_is_the_last_trained_token(tokenizers: dict[str, Any], name: str) -> None:
    tokenizer = tokenizers[name]
    row = tokenize_examples([{"messages": [SYSTEM, USER, REPLY, USER_2, REPLY_2]}], tokenizer, 4096)[0]
    end_id = tokenizer.convert_tokens_to_ids(FAMILIES[name].end_of_turn)
    labelled = [i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX]
    ends = [i for i in labelled if i + 1 not in labelled]  # the last position of each labelled run
    assert [row["input_ids"][i] for i in ends] == [end_id, end_id]


def test_qwen3_trains_the_think_block_when_the_data_has_reasoning(tokenizers: dict[str, Any]) -> None:
    assert trained(tokenizers, "qwen3", [USER, THINKING_REPLY]) == [
        f"<think>\n{REASONING}\n</think>\n\nblue<|im_end|>",
    ]


def test_qwen3_reasoning_of_earlier_turns_is_dropped_by_the_template(tokenizers: dict[str, Any]) -> None:
    """Qwen3 keeps reasoning only after the last user message; what it drops is not in the text,
    so it cannot be trained. The final reply, without reasoning, gets no think block in its span."""
    assert trained(tokenizers, "qwen3", [USER, THINKING_REPLY, USER_2, REPLY_2]) == [
        "blue<|im_end|>", "green<|im_end|>",
    ]


def test_deepseek_r1_template_drops_the_reasoning(tokenizers: dict[str, Any]) -> None:
    """The distills' template cuts everything up to </think> from an assistant turn; the span is what
    remains (the blank line the data puts after </think> included), then the end of sentence."""
    assert trained(tokenizers, "deepseek_r1_distill", [USER, THINKING_REPLY]) == [
        "\n\nblue<｜end▁of▁sentence｜>",
    ]


@pytest.mark.parametrize("name", ["llama3_1", "gemma3", "mistral_v0_3", "phi4", "phi4_mini"])
def test_templates_without_reasoning_support_train_the_think_text_as_content(
    tokenizers: dict[str, Any], name: str
) -> None:
    assert trained(tokenizers, name, [USER, THINKING_REPLY]) == [
        reply(name, f"<think>\n{REASONING}\n</think>\n\nblue"),
    ]


def test_mistral_template_drops_the_system_prompt_of_a_finished_conversation(tokenizers: dict[str, Any]) -> None:
    """Mistral v0.3 writes the system prompt into the last user message only when that message is
    the last of the conversation, so a training conversation (ending with the reply) loses it."""
    tokenizer = tokenizers["mistral_v0_3"]
    row = tokenize_examples([{"messages": [SYSTEM, USER, REPLY]}], tokenizer, 4096)[0]
    assert "helpful" not in tokenizer.decode(row["input_ids"])
    assert labelled_runs(tokenizer, row) == [" blue</s>"]


def test_reply_text_that_also_appears_in_the_prompt(tokenizers: dict[str, Any]) -> None:
    """A reply that repeats the question's words must be found in the reply, not in the question."""
    echo = [{"role": "user", "content": "say blue"}, {"role": "assistant", "content": "blue"}]
    for name in FAMILIES:
        tokenizer = tokenizers[name]
        row = tokenize_examples([{"messages": [SYSTEM, *echo]}], tokenizer, 4096)[0]
        assert labelled_runs(tokenizer, row) == [reply(name, "blue")], name
        first = row["labels"].index(next(label for label in row["labels"] if label != IGNORE_INDEX))
        assert "say blue" in tokenizer.decode(row["input_ids"][:first]), name
