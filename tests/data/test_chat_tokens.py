"""data/chat_tokens.py: label masks checked token by token on the tiny tokenizer, with real templates."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from finetune_mcp.data.chat_tokens import IGNORE_INDEX, tokenize_examples, tokenize_with_stats
from finetune_mcp.errors import DatasetError, ModelError

SYSTEM = {"role": "system", "content": "you are helpful."}
USER = {"role": "user", "content": "what color is the sky?"}
REPLY = {"role": "assistant", "content": "blue"}
TWO_TURNS = [SYSTEM, USER, REPLY, {"role": "user", "content": "and the grass?"}, {"role": "assistant", "content": "green"}]


def ids_of(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def labelled_runs(tokenizer: Any, row: dict[str, list[int]]) -> list[str]:
    """The decoded text of each contiguous run of labelled tokens."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token, "a labelled position must carry its own token id (TRL shifts later)"
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def trl_template(name: str) -> str:
    return (resources.files("trl") / "chat_templates" / name).read_text()


def test_chatml_single_turn_mask_is_exact(tiny_tokenizer) -> None:
    row = tokenize_examples([{"messages": [SYSTEM, USER, REPLY]}], tiny_tokenizer, 512)[0]
    prompt = ids_of(tiny_tokenizer, "<|im_start|>system\nyou are helpful.<|im_end|>\n"
                    "<|im_start|>user\nwhat color is the sky?<|im_end|>\n<|im_start|>assistant\n")
    answer = ids_of(tiny_tokenizer, "blue<|im_end|>")
    newline = ids_of(tiny_tokenizer, "\n")
    assert answer[-1] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert row["input_ids"] == prompt + answer + newline
    assert row["labels"] == [IGNORE_INDEX] * len(prompt) + answer + [IGNORE_INDEX] * len(newline)


def test_chatml_multi_turn_labels_every_reply_and_its_end(tiny_tokenizer) -> None:
    row = tokenize_examples([{"messages": TWO_TURNS}], tiny_tokenizer, 512)[0]
    assert labelled_runs(tiny_tokenizer, row) == ["blue<|im_end|>", "green<|im_end|>"]


def test_real_qwen3_template_without_generation_markers(tiny_tokenizer) -> None:
    template = trl_template("qwen3.jinja")
    assert not re.search(r"{%-?\s*generation\s*-?%}", template)
    tiny_tokenizer.chat_template = template
    row = tokenize_examples([{"messages": TWO_TURNS}], tiny_tokenizer, 512)[0]
    # Qwen3 writes an empty think block only into the final assistant turn; the template put it
    # there, not the data, so it is not trained (tests/pipeline/test_chat_tokens_templates.py has the rest).
    assert labelled_runs(tiny_tokenizer, row) == ["blue<|im_end|>", "green<|im_end|>"]


def test_real_llama3_template(tiny_tokenizer) -> None:
    tiny_tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    )
    tiny_tokenizer.bos_token = "<|begin_of_text|>"
    tiny_tokenizer.chat_template = trl_template("llama3.jinja")
    row = tokenize_examples([{"messages": TWO_TURNS}], tiny_tokenizer, 512)[0]
    assert labelled_runs(tiny_tokenizer, row) == ["blue<|eot_id|>", "green<|eot_id|>"]
    assert row["input_ids"][0] == tiny_tokenizer.bos_token_id  # the template's BOS, not a second one


def test_phi3_template_that_appends_eos_after_the_conversation(tiny_tokenizer) -> None:
    tiny_tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"]})
    tiny_tokenizer.chat_template = trl_template("phi3.jinja")
    row = tokenize_examples([{"messages": TWO_TURNS}], tiny_tokenizer, 512)[0]
    # The reply's end-of-turn is trained, the EOS the template writes after the conversation is not.
    assert labelled_runs(tiny_tokenizer, row) == ["blue<|end|>", "green<|end|>"]


def test_all_tokens_count_without_assistant_only_loss(tiny_tokenizer) -> None:
    row = tokenize_examples([{"messages": TWO_TURNS}], tiny_tokenizer, 512, assistant_only_loss=False)[0]
    assert row["labels"] == row["input_ids"]


def test_plain_text_counts_every_token_and_ends_with_eos(tiny_tokenizer) -> None:
    row = tokenize_examples([{"text": "the sky is blue"}], tiny_tokenizer, 512)[0]
    assert row["input_ids"] == [*ids_of(tiny_tokenizer, "the sky is blue"), tiny_tokenizer.eos_token_id]
    assert row["labels"] == row["input_ids"]


def test_prompt_completion_strings_mask_the_prompt(tiny_tokenizer) -> None:
    row = tokenize_examples([{"prompt": "the sky is", "completion": " blue"}], tiny_tokenizer, 512)[0]
    prompt, completion = ids_of(tiny_tokenizer, "the sky is"), ids_of(tiny_tokenizer, " blue")
    assert row["input_ids"] == prompt + completion + [tiny_tokenizer.eos_token_id]
    assert row["labels"] == [IGNORE_INDEX] * len(prompt) + completion + [tiny_tokenizer.eos_token_id]


def test_truncation_and_rows_left_without_trainable_tokens(tiny_tokenizer) -> None:
    full = tokenize_examples([{"messages": [USER, REPLY]}], tiny_tokenizer, 512)[0]
    first_label = next(i for i, label in enumerate(full["labels"]) if label != IGNORE_INDEX)
    examples = [{"messages": [USER, REPLY]}, {"text": "the sky is blue"}]  # the text row is shorter
    assert len(tokenize_examples(examples[1:], tiny_tokenizer, 512)[0]["input_ids"]) < first_label
    dataset, stats = tokenize_with_stats(examples, tiny_tokenizer, first_label + 1)
    assert len(dataset) == 2 and stats.truncated == 1 and stats.dropped_no_trainable == 0
    assert dataset[0]["input_ids"] == full["input_ids"][: first_label + 1]
    assert dataset[0]["labels"] == full["labels"][: first_label + 1]

    dataset, stats = tokenize_with_stats(examples, tiny_tokenizer, first_label)
    assert len(dataset) == 1 and stats.dropped_no_trainable == 1 and stats.rows_out == 1
    assert dataset[0]["labels"] == dataset[0]["input_ids"]  # the text row survived
    with pytest.raises(DatasetError, match=r"none of the 1 examples keeps a trainable token .*max_seq_length=5"):
        tokenize_examples([{"messages": [USER, REPLY]}], tiny_tokenizer, 5)


def test_conversations_need_a_chat_template(tiny_tokenizer) -> None:
    tiny_tokenizer.chat_template = None
    with pytest.raises(ModelError, match=r"no chat template.*pass plain 'text'"):
        tokenize_examples([{"messages": [USER, REPLY]}], tiny_tokenizer, 512)
    assert len(tokenize_examples([{"text": "still fine"}], tiny_tokenizer, 512)) == 1


def test_template_that_rejects_a_conversation(tiny_tokenizer) -> None:
    tiny_tokenizer.chat_template = trl_template("gemma.jinja")  # raises on a system role
    with pytest.raises(DatasetError, match=r"example 0: the model's chat template cannot render"):
        tokenize_examples([{"messages": [SYSTEM, USER, REPLY]}], tiny_tokenizer, 512)


def test_empty_input_gives_an_empty_dataset(tiny_tokenizer) -> None:
    dataset = tokenize_examples([], tiny_tokenizer, 512)
    assert len(dataset) == 0 and dataset.column_names == ["input_ids", "labels"]


def test_sft_trainer_keeps_our_labels(tiny_tokenizer, tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    """TRL treats a dataset with input_ids as processed and trains on its labels unchanged."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config
    from trl import SFTConfig, SFTTrainer

    dataset = tokenize_examples([{"messages": TWO_TURNS}, {"messages": [USER, REPLY]}], tiny_tokenizer, 512)
    config = Qwen3Config(vocab_size=len(tiny_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    torch.manual_seed(0)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_config(config),
        args=SFTConfig(output_dir=str(tmp_path), max_length=512, report_to=[], use_cpu=True),
        train_dataset=dataset,
        processing_class=tiny_tokenizer,
    )
    prepared = sorted(zip(trainer.train_dataset["input_ids"], trainer.train_dataset["labels"], strict=True))
    assert prepared == sorted(zip(dataset["input_ids"], dataset["labels"], strict=True))
