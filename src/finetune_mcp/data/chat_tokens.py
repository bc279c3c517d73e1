"""Normalised examples → `input_ids` + `labels`, with the loss only where the model should learn.

TRL's SFTTrainer treats a dataset that has `input_ids` as already processed: it skips its own
tokenisation and uses a `labels` column as it is (trl/trainer/sft_trainer.py, `_prepare_dataset`:
`is_processed = "input_ids" in column_names`; labels are built only when the column is absent). So
the masks are decided here, once, for every backend.

Assistant-only loss without `{% generation %}` markers: real Qwen3 / Llama templates have none,
so the assistant spans are found by rendering the template on prefixes of the conversation.
`render(messages[:i], add_generation_prompt=True)` ends where assistant turn i starts;
`render(messages[:i + 1])` ends just after its end-of-turn token (e.g. `<|im_end|>`, labelled so
the model learns to stop). When a template renders a turn differently as the last one (Qwen3 adds
an empty think block only to the final turn), the end is found instead as the first end-of-turn
marker after the start. Character spans become token labels through the tokenizer's offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune_mcp.errors import DatasetError, ModelError

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
EXAMPLE_WEIGHT = "example_weight"  # column of per-example loss multipliers, present only when some differ from 1
_PROBE = "\u2047probe-reply\u2047"  # content that never occurs in a real template


@dataclass
class TokenizeStats:
    """What tokenisation did to the examples, for train.log and the run summary."""

    rows_in: int = 0
    rows_out: int = 0
    truncated: int = 0  # rows cut to max_seq_length
    dropped_no_trainable: int = 0  # rows left without a labelled token (after truncation)
    tokens: int = 0
    trainable_tokens: int = 0


def tokenize_examples(
    examples: list[dict[str, Any]],
    tokenizer: Any,
    max_seq_length: int,
    assistant_only_loss: bool = True,
) -> datasets.Dataset:
    """A `datasets.Dataset` with `input_ids` and `labels` (−100 where no loss), ready for SFTTrainer.

    When examples carry a `weight`, an `example_weight` column holds it (the trainer multiplies that
    example's token weights by it)."""
    dataset, _ = tokenize_with_stats(examples, tokenizer, max_seq_length, assistant_only_loss)
    return dataset


def tokenize_with_stats(
    examples: list[dict[str, Any]],
    tokenizer: Any,
    max_seq_length: int,
    assistant_only_loss: bool = True,
) -> tuple[datasets.Dataset, TokenizeStats]:
    """`tokenize_examples` plus the counts (rows truncated, rows dropped, trainable tokens)."""
    import datasets

    if max_seq_length < 1:
        raise DatasetError(f"max_seq_length must be positive (got {max_seq_length}); raise it")
    stats = TokenizeStats(rows_in=len(examples))
    chat = _ChatSpans(tokenizer) if any("messages" in ex for ex in examples) else None
    all_ids: list[list[int]] = []
    all_labels: list[list[int]] = []
    all_weights: list[float] = []
    for index, example in enumerate(examples):
        if "messages" in example:
            assert chat is not None
            ids, labels = chat.tokenize(example["messages"], assistant_only_loss, index)
        elif "prompt" in example:
            ids, labels = _prompt_completion(tokenizer, example["prompt"], example["completion"], assistant_only_loss)
        elif "text" in example:
            ids = _with_eos(tokenizer, tokenizer(example["text"])["input_ids"])
            labels = list(ids)
        else:
            raise DatasetError(
                f"example {index} has keys {sorted(example)}; expected 'messages', 'prompt'/'completion' or 'text' "
                "(pass the output of load_examples)"
            )
        if len(ids) > max_seq_length:
            stats.truncated += 1
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        trainable = sum(label != IGNORE_INDEX for label in labels)
        if trainable == 0:
            stats.dropped_no_trainable += 1
            continue
        stats.tokens += len(ids)
        stats.trainable_tokens += trainable
        all_ids.append(ids)
        all_labels.append(labels)
        all_weights.append(float(example.get("weight", 1.0)))
    stats.rows_out = len(all_ids)
    if examples and not all_ids:
        raise DatasetError(
            f"none of the {len(examples)} examples keeps a trainable token within max_seq_length={max_seq_length} "
            "(the prompts fill it, or no example has an assistant turn); raise max_seq_length or shorten the prompts"
        )
    if stats.dropped_no_trainable:
        logger.warning(
            "dropped %d of %d examples with no trainable token after truncation to %d tokens",
            stats.dropped_no_trainable, stats.rows_in, max_seq_length,
        )
    columns: dict[str, Any] = {"input_ids": all_ids, "labels": all_labels}
    features = {"input_ids": datasets.Sequence(datasets.Value("int64")), "labels": datasets.Sequence(datasets.Value("int64"))}
    if any(w != 1.0 for w in all_weights):  # per-example loss weights (student–teacher output)
        columns[EXAMPLE_WEIGHT] = all_weights
        features[EXAMPLE_WEIGHT] = datasets.Value("float32")
    dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    return dataset, stats


def _with_eos(tokenizer: Any, ids: list[int]) -> list[int]:
    """Plain text and completions end with EOS, as TRL does, so generation learns where to stop."""
    eos = tokenizer.eos_token_id
    return [*ids, eos] if eos is not None and (not ids or ids[-1] != eos) else list(ids)


def _prompt_completion(
    tokenizer: Any, prompt: str, completion: str, completion_only: bool
) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = _with_eos(tokenizer, tokenizer(completion, add_special_tokens=False)["input_ids"])
    ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids if completion_only else list(ids)
    return ids, labels


class _ChatSpans:
    """Renders conversations with the tokenizer's chat template and finds the assistant spans."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError(
                "the tokenizer has no chat template, but the dataset is conversational (messages); use a chat/"
                "instruct model, set tokenizer.chat_template, or pass plain 'text' or prompt/completion strings"
            )
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError("assistant-only loss needs a fast tokenizer (character offsets); load it with use_fast=True")
        self.tokenizer = tokenizer
        self.turn_end = self._turn_end_marker()

    def render(self, messages: list[dict[str, str]], generation_prompt: bool, index: int) -> str:
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as exc:  # jinja raises TemplateError (e.g. "roles must alternate") or others
            raise DatasetError(
                f"example {index}: the model's chat template cannot render this conversation ({exc}); "
                "order the turns as it expects (system first, then user and assistant alternating)"
            ) from None
        return text

    def _turn_end_marker(self) -> str | None:
        """What the template writes after an assistant reply (e.g. '<|im_end|>'), trailing space removed."""
        try:
            text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}], False, -1)
        except DatasetError:
            return None
        tail = text[text.rfind(_PROBE) + len(_PROBE):].split() if _PROBE in text else []
        return tail[0] if tail else None  # the first piece: '<|end|>' of '<|end|>\n</s>' (Phi-3 adds EOS at the end)

    def char_spans(self, messages: list[dict[str, str]], index: int) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the [start, end) character spans of its assistant turns."""
        full = self.render(messages, False, index)
        spans: list[tuple[int, int]] = []
        cursor = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = self._start(full, messages, i, cursor, index)
            end = self._end(full, messages, i, start, index)
            spans.append((start, end))
            cursor = end
        return full, spans

    def _start(self, full: str, messages: list[dict[str, str]], i: int, cursor: int, index: int) -> int:
        prefix = self.render(messages[:i], True, index) if i else ""
        if i and full.startswith(prefix) and len(prefix) >= cursor:
            return len(prefix)
        content = messages[i]["content"].strip()
        found = full.find(content, cursor) if content else -1
        if found < 0:
            raise DatasetError(
                f"example {index}: cannot locate assistant turn {i} in the chat template's output; "
                "set assistant_only_loss=false or use a template with {% generation %} markers"
            )
        return found

    def _end(self, full: str, messages: list[dict[str, str]], i: int, start: int, index: int) -> int:
        upto = self.render(messages[: i + 1], False, index)
        if full.startswith(upto) and len(upto.rstrip()) > start:
            return len(upto.rstrip())
        if self.turn_end is not None:
            found = full.find(self.turn_end, start)
            next_content = messages[i + 1]["content"].strip() if i + 1 < len(messages) else ""
            bound = full.find(next_content, start) if next_content else -1
            if found >= 0 and (bound < 0 or found < bound):
                return found + len(self.turn_end)
        content = messages[i]["content"].strip()
        found = full.find(content, start)
        if found < 0:
            raise DatasetError(
                f"example {index}: cannot find where assistant turn {i} ends in the chat template's output; "
                "set assistant_only_loss=false"
            )
        return found + len(content)

    def tokenize(
        self, messages: list[dict[str, str]], assistant_only_loss: bool, index: int
    ) -> tuple[list[int], list[int]]:
        text, spans = self.char_spans(messages, index)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = list(encoded["input_ids"])
        if not assistant_only_loss:
            return ids, list(ids)
        in_span = _overlap_test(spans)
        labels = [tid if in_span(s, e) else IGNORE_INDEX for tid, (s, e) in zip(ids, encoded["offset_mapping"], strict=True)]
        return ids, labels


def _overlap_test(spans: list[tuple[int, int]]) -> Callable[[int, int], bool]:
    """Whether a token's [s, e) characters overlap an assistant span (a token that straddles the
    boundary belongs to the reply: the model has to produce it)."""

    def in_span(s: int, e: int) -> bool:
        e = max(e, s + 1)
        return any(s < span_end and e > span_start for span_start, span_end in spans)

    return in_span
