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
_THINK_START, _THINK_END = "<think>", "</think>"


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
    encoder = ExampleEncoder(tokenizer, assistant_only_loss, conversational=any("messages" in ex for ex in examples))
    all_ids: list[list[int]] = []
    all_labels: list[list[int]] = []
    all_weights: list[float] = []
    for index, example in enumerate(examples):
        ids, labels = encoder.encode(example, index)
        if len(ids) > max_seq_length:
            stats.truncated += 1
            ids, labels = truncate(ids, labels, max_seq_length)
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


class ExampleEncoder:
    """One normalised example → (`input_ids`, `labels`), before truncation: the per-row step of
    `tokenize_with_stats`, shared with the dry run (`preview_training`) so that what it shows is
    what training computes. `conversational` builds the chat-template machinery at once, so a
    tokenizer without a template fails before the first row."""

    def __init__(self, tokenizer: Any, assistant_only_loss: bool = True, *, conversational: bool = False) -> None:
        self.tokenizer = tokenizer
        self.assistant_only_loss = assistant_only_loss
        self._chat = ChatSpans(tokenizer) if conversational else None

    @property
    def chat(self) -> ChatSpans:
        if self._chat is None:
            self._chat = ChatSpans(self.tokenizer)
        return self._chat

    def encode(self, example: dict[str, Any], index: int) -> tuple[list[int], list[int]]:
        if "messages" in example:
            return self.chat.tokenize(example["messages"], self.assistant_only_loss, index)
        if "prompt" in example:
            return _prompt_completion(self.tokenizer, example["prompt"], example["completion"], self.assistant_only_loss)
        if "text" in example:
            ids = _with_eos(self.tokenizer, self.tokenizer(example["text"])["input_ids"])
            return ids, list(ids)
        raise DatasetError(
            f"example {index} has keys {sorted(example)}; expected 'messages', 'prompt'/'completion' or 'text' "
            "(pass the output of load_examples)"
        )


def truncate(ids: list[int], labels: list[int], max_seq_length: int) -> tuple[list[int], list[int]]:
    """Keep the first `max_seq_length` tokens (TRL's truncation side): a long row loses its end."""
    return ids[:max_seq_length], labels[:max_seq_length]


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


class ChatSpans:
    """Renders conversations with the tokenizer's chat template and finds what each assistant turn trains.

    A turn trains the text its own message put into the rendering (the reply, and the reasoning when
    the data has some and the template keeps it) plus the end-of-turn marker after it: nothing the
    template adds by itself (role headers, Qwen3's empty think block, the newline after the marker,
    an EOS after the whole conversation). The reply's place is found by rendering the conversation
    once more with that reply replaced by a probe string: what precedes and follows the probe there
    precedes and follows the reply in the real rendering, whatever the template does to the reply
    (trims it, cuts its reasoning). Only when that fails (a template whose earlier text depends on
    the reply) is the reply searched for as text, after the turn's generation prompt.
    """

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
        """The token the template writes right after a reply ('<|im_end|>', '<|eot_id|>', '</s>',
        '<end_of_turn>'): the longest added token the text after a probe reply starts with. Without
        one (a template of plain words), the first whitespace-delimited piece."""
        try:
            text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}], False, -1)
        except DatasetError:
            return None
        if _PROBE not in text:
            return None
        tail = text[text.rfind(_PROBE) + len(_PROBE):].lstrip()
        added = [t.content for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()]
        starts = [t for t in added if t and tail.startswith(t)]
        if starts:
            return max(starts, key=len)  # '<|end|>' of '<|end|><|endoftext|>' (Phi-4-mini adds EOS at the end)
        pieces = tail.split()
        return pieces[0] if pieces else None

    def char_spans(self, messages: list[dict[str, str]], index: int) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the [start, end) character spans that carry loss."""
        full = self.render(messages, False, index)
        spans: list[tuple[int, int]] = []
        cursor = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            reply_start, reply_end = self._reply(full, messages, i, cursor, index)
            start = self._reasoning_start(full, messages, i, cursor, reply_start, index)
            end = self._end_of_turn(full, reply_end)
            spans.append((start, end))
            cursor = end
        return full, spans

    def _reply(self, full: str, messages: list[dict[str, str]], i: int, cursor: int, index: int) -> tuple[int, int]:
        """[start, end) of assistant turn i's reply (its content after any reasoning) in `full`."""
        message = messages[i]
        thought, answer = split_reasoning(message["content"])
        probed = [*messages[:i], {**message, "content": thought + _PROBE}, *messages[i + 1:]]
        try:
            text = self.render(probed, False, index)
        except DatasetError:
            text = ""
        if text.count(_PROBE) == 1:
            at = text.index(_PROBE)
            before, after = text[:at], text[at + len(_PROBE):]
            if len(before) >= cursor and len(before) + len(after) <= len(full) and full.startswith(before) \
                    and full.endswith(after):
                return len(before), len(full) - len(after)
        content = answer.strip()
        base = max(cursor, self._generation_start(full, messages, i, index))
        found = full.find(content, base) if content else -1
        if found < 0:
            raise DatasetError(
                f"example {index}: cannot locate assistant turn {i} in the chat template's output; "
                "set assistant_only_loss=false or use a template with {% generation %} markers"
            )
        return found, found + len(content)

    def _generation_start(self, full: str, messages: list[dict[str, str]], i: int, index: int) -> int:
        """Where the model's output for turn i begins: how far the conversation up to turn i with
        the generation prompt agrees with the whole rendering (R1 distills prompt '<think>\\n',
        which the rendered turn lacks; Mistral moves the system prompt)."""
        prefix = self.render(messages[:i], True, index) if i else ""
        return _common_prefix_length(prefix, full)

    def _reasoning_start(
        self, full: str, messages: list[dict[str, str]], i: int, cursor: int, reply_start: int, index: int
    ) -> int:
        """The reply's start, or the start of the turn's output when the data's reasoning is rendered
        before the reply (Qwen3's last turns): the think block is then the model's to write."""
        thought, _ = split_reasoning(messages[i]["content"])
        reasoning = (_reasoning_text(thought) or str(messages[i].get("reasoning_content") or "")).strip()
        if not reasoning:
            return reply_start
        begin = max(cursor, min(self._generation_start(full, messages, i, index), reply_start))
        return begin if full.find(reasoning, begin, reply_start) >= 0 else reply_start

    def _end_of_turn(self, full: str, reply_end: int) -> int:
        """Just after the end-of-turn marker that follows the reply (only whitespace between), else
        the reply's end (a template without one: the preview warns)."""
        if self.turn_end is None:
            return reply_end
        found = full.find(self.turn_end, reply_end)
        if found >= 0 and not full[reply_end:found].strip():
            return found + len(self.turn_end)
        return reply_end

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


def split_reasoning(content: str) -> tuple[str, str]:
    """(the reasoning part up to and including the last '</think>', the reply after it); ('', content)
    when the content has no think block. Templates that support reasoning (Qwen3, the R1 distills)
    split a reply the same way."""
    cut = content.rfind(_THINK_END)
    if cut < 0:
        return "", content
    cut += len(_THINK_END)
    return content[:cut], content[cut:]


def _common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _reasoning_text(thought: str) -> str:
    return thought.removesuffix(_THINK_END).split(_THINK_START)[-1]


def _overlap_test(spans: list[tuple[int, int]]) -> Callable[[int, int], bool]:
    """Whether a token's [s, e) characters overlap an assistant span (a token that straddles the
    boundary belongs to the reply: the model has to produce it)."""

    def in_span(s: int, e: int) -> bool:
        e = max(e, s + 1)
        return any(s < span_end and e > span_start for span_start, span_end in spans)

    return in_span
