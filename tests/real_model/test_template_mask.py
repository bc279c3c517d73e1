"""The loss mask on SmolLM2's real chat template: the template injects a default system prompt when the
data has none; only the assistant's reply and its <|im_end|> carry loss, with or without a system turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_mcp.data.chat_tokens import IGNORE_INDEX, ExampleEncoder

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path):
    from finetune_mcp.model.loading import load_tokenizer

    return load_tokenizer(str(smollm2_dir))


def trained(tokenizer, messages) -> tuple[str, str]:
    ids, labels = ExampleEncoder(tokenizer, conversational=True).encode({"messages": messages}, 0)
    text = tokenizer.decode(ids, skip_special_tokens=False)
    return text, tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX],
                                  skip_special_tokens=False)


@pytest.mark.slow
def test_without_a_system_turn_the_default_prompt_is_rendered_and_only_the_reply_is_trained(tokenizer):
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")  # pad = eos
    text, span = trained(tokenizer, [{"role": "user", "content": "Capital of France?"},
                                     {"role": "assistant", "content": "Paris"}])
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nCapital of France?")
    assert span == "Paris<|im_end|>"  # the end of turn inside the trained span, nothing of the prompt


@pytest.mark.slow
def test_with_a_system_turn_the_default_is_replaced_and_the_mask_is_the_same(tokenizer):
    text, span = trained(tokenizer, [{"role": "system", "content": "One word."},
                                     {"role": "user", "content": "Capital of France?"},
                                     {"role": "assistant", "content": "Paris"}])
    assert DEFAULT_SYSTEM not in text and text.startswith("<|im_start|>system\nOne word.<|im_end|>")
    assert span == "Paris<|im_end|>"


@pytest.mark.slow
def test_every_assistant_turn_of_a_conversation_is_trained(tokenizer):
    _, span = trained(tokenizer, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                                  {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}])
    assert span == "4<|im_end|>6<|im_end|>"
