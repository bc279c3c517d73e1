"""The dry run of the preference methods (row shape "pairs": dpo, orpo, kto): each shown row as its
two sides, the prompt masked and the reply between [[ and ]] (the tokens whose log-probability the
loss compares), rendered as the held-out scoring renders them (`train.preference_scoring.render`:
a message list through the chat template, a string prompt + reply as they are, TRL's convention).

A pair is two sequences (chosen, rejected); a KTO row is one (desirable or undesirable). Lengths
are over both sides; a row is truncated when a side is longer than max_seq_length.
"""

from __future__ import annotations

from typing import Any

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.preview.examples import MAX_MASKED_CHARS, MAX_TRAINED_CHARS, sample_indices, shorten
from finetune_mcp.preview.lengths import padded_tokens_per_step, steps
from finetune_mcp.preview.report import TRAINED_CLOSE, TRAINED_OPEN, LengthReport, RenderedExample
from finetune_mcp.train.preference_scoring import render

SAMPLE = 2000


def sides(row: dict[str, Any]) -> list[tuple[str, Any]]:
    """(side, reply) of a normalised preference row: a pair's two, or a KTO row's one."""
    if "chosen" in row:
        return [("chosen", row["chosen"]), ("rejected", row["rejected"])]
    return [("desirable" if row["label"] else "undesirable", row["completion"])]


def _encode(tokenizer: Any, prompt: Any, reply: Any) -> tuple[str, str, int, int]:
    head, tail = render(tokenizer, prompt, reply)
    return (head, tail, len(tokenizer(head, add_special_tokens=False).input_ids),
            len(tokenizer(tail, add_special_tokens=False).input_ids))


def pairs_preview(config: EnhancedTrainingConfig, tokenizer: Any, train: list[dict[str, Any]], shown: int,
                  devices: int = 1) -> tuple[list[RenderedExample], LengthReport, int]:
    """(examples, lengths, validation tokens per row) for preference rows."""
    limit, eos = config.max_seq_length, tokenizer.eos_token
    examples = []
    for index, row in enumerate(train[:shown]):
        for side, reply in sides(row):
            head, tail, n_head, n_tail = _encode(tokenizer, row["prompt"], reply)
            examples.append(RenderedExample(
                row=index, side=side, text=shorten(head, MAX_MASKED_CHARS, "prompt") + TRAINED_OPEN
                + shorten(tail, MAX_TRAINED_CHARS, side) + TRAINED_CLOSE,
                tokens=min(n_head + n_tail, limit), trained_tokens=max(0, min(n_tail, limit - n_head)),
                masked_tokens=min(n_head, limit), truncated=n_head + n_tail > limit,
                ends_with_end_of_turn=(bool(eos) and tail.rstrip().endswith(eos)) or not isinstance(reply, str),
            ))
    lengths, trained, lost, cut = [], 0, 0, 0
    for i in sample_indices(len(train), SAMPLE, config.seed):
        row_tokens, row_cut = 0, False
        for _, reply in sides(train[i]):
            _, _, n_head, n_tail = _encode(tokenizer, train[i]["prompt"], reply)
            row_tokens += min(n_head + n_tail, limit)
            trained += max(0, min(n_tail, limit - n_head))
            lost += n_tail - max(0, min(n_tail, limit - n_head))
            row_cut |= n_head + n_tail > limit
        lengths.append(row_tokens)
        cut += row_cut
    scale = len(train) / len(lengths) if lengths else 0.0
    per_epoch, total, warmup, epochs = steps(len(train), config, devices)
    ordered = sorted(lengths)
    report = LengthReport(
        sampled_rows=len(lengths), min=ordered[0] if ordered else 0,
        median=float(ordered[len(ordered) // 2]) if ordered else 0.0,
        p95=float(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]) if ordered else 0.0,
        max=ordered[-1] if ordered else 0, truncated=round(cut * scale),
        truncated_share=round(cut / len(lengths), 4) if lengths else 0.0,
        truncated_part="the end of the reply in each side longer than max_seq_length (its end-of-turn included)"
        if cut else f"nothing: every prompt + reply fits max_seq_length={limit}",
        trained_tokens_lost=round(lost * scale), tokens_per_epoch=round(sum(lengths) * scale),
        trained_tokens_per_epoch=round(trained * scale),
        padded_tokens_per_step=padded_tokens_per_step(lengths, config.per_device_train_batch_size,
                                                      config.gradient_accumulation_steps, config.seed),
        steps_per_epoch=per_epoch, total_steps=total, warmup_steps=warmup, epochs=epochs,
    )
    return examples, report, round(sum(lengths) / len(lengths)) if lengths else 0
