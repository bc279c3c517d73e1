"""The training split through the training code's own tokenisation, and examples shown as text.

Rows are encoded by `ExampleEncoder`, the per-row step `tokenize_with_stats` runs in the worker, so
the mask shown is the mask trained. Long splits are sampled (seeded) for the statistics; the
examples shown are the first rows of the split, as the trainer's shuffle would meet them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from finetune_mcp.data.chat_tokens import IGNORE_INDEX, ExampleEncoder, truncate
from finetune_mcp.preview.report import TRAINED_CLOSE, TRAINED_OPEN, RenderedExample

MAX_MASKED_CHARS = 600  # a longer masked run is shown as its head and tail (the trained spans never are)
MAX_TRAINED_CHARS = 1600


@dataclass
class EncodedRow:
    """One training row before truncation; `index` is its position in the training split."""

    index: int
    ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def sample_indices(n: int, sample_size: int, seed: int) -> list[int]:
    """All row positions when the split is small enough, else a seeded sample (sorted)."""
    if n <= sample_size:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), sample_size))


def encode_rows(encoder: ExampleEncoder, examples: list[dict[str, Any]], indices: list[int]) -> list[EncodedRow]:
    """Encode the rows at `indices`; a row the template cannot render fails with the worker's message."""
    return [EncodedRow(i, *encoder.encode(examples[i], i)) for i in indices]


def end_token_ids(tokenizer: Any, end_of_turn: str | None) -> set[int]:
    """Ids that may close a trained span: the template's end-of-turn token and EOS."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if end_of_turn:
        encoded = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(encoded[0])
    return ids


def trained_runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each contiguous run of labelled positions."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


def render_example(tokenizer: Any, row: EncodedRow, max_seq_length: int, end_ids: set[int]) -> RenderedExample:
    """The row as text with [[...]] around what carries loss, after truncation (what trains)."""
    ids, labels = truncate(row.ids, row.labels, max_seq_length)
    runs = trained_runs(labels)
    pieces, cursor, spans, length = [], 0, [], 0
    for start, end in runs:
        pieces.append(shorten(decode(tokenizer, ids[cursor:start]), MAX_MASKED_CHARS, "masked"))
        trained_text = shorten(decode(tokenizer, ids[start:end]), MAX_TRAINED_CHARS, "trained")
        begin = length + len(pieces[-1]) + len(TRAINED_OPEN)
        spans.append([begin, begin + len(trained_text)])
        pieces.append(TRAINED_OPEN + trained_text + TRAINED_CLOSE)
        length += len(pieces[-2]) + len(pieces[-1])
        cursor = end
    pieces.append(shorten(decode(tokenizer, ids[cursor:]), MAX_MASKED_CHARS, "masked"))
    plain = [p for i, p in enumerate(pieces) if i % 2 == 0]  # the data's own text, outside our markers
    in_data = any(TRAINED_OPEN in p or TRAINED_CLOSE in p for p in [*plain, *(p[2:-2] for p in pieces[1::2])])
    cut = len(row.ids) - len(ids)
    if cut:
        lost = row.trained - sum(label != IGNORE_INDEX for label in labels)
        pieces.append(f" ✂[{cut} more tokens cut by max_seq_length={max_seq_length}, {lost} of them trained]")
    trained = sum(end - start for start, end in runs)
    return RenderedExample(
        row=row.index, text="".join(pieces), trained_spans=spans, markers_in_data=in_data, tokens=len(ids), trained_tokens=trained, masked_tokens=len(ids) - trained,
        truncated=bool(cut), ends_with_end_of_turn=bool(runs) and all(ids[end - 1] in end_ids for _, end in runs),
    )


def decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) if ids else ""


def shorten(text: str, limit: int, what: str) -> str:
    if len(text) <= limit:
        return text
    keep = limit // 2 - 40
    return f"{text[:keep]} …[{len(text) - 2 * keep} {what} characters]… {text[-keep:]}"
