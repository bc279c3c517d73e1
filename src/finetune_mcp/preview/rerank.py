"""The dry run of method="rerank": the Qwen3-Reranker prompts and rows the reranker would train on.

The prompts and rows come from the reranker's own `RerankPrompt` and `training_rows`. What carries
loss there is one decision per (query, document) prompt: "yes" or "no" at the position after the
prompt, so an example shows the prompt and then [[yes]] or [[no]].
"""

from __future__ import annotations

from typing import Any

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.preview.examples import decode, shorten
from finetune_mcp.preview.lengths import padded_tokens_per_step, steps
from finetune_mcp.preview.report import TRAINED_CLOSE, TRAINED_OPEN, LengthReport, RenderedExample
from finetune_mcp.train.rerank.prompt import RerankPrompt, training_rows

MAX_PROMPT_CHARS = 1600


def rerank_preview(config: EnhancedTrainingConfig, tokenizer: Any, train: list[dict[str, Any]], shown: int,
                   devices: int = 1) -> tuple[list[RenderedExample], LengthReport, int]:
    """(examples, lengths, validation tokens per row) for the reranker's training rows."""
    prompt = RerankPrompt(tokenizer, config.max_seq_length, config.rerank_instruction)
    rows = training_rows(train, prompt, config.rerank_loss, config.rerank_group_size, config.seed)
    pairs = sum(len(group["docs"]) for group in train)
    examples = []
    for index in range(min(shown, len(rows))):
        ids, labels = rows[index]["input_ids"], rows[index]["labels"]
        for pair, label in zip(ids, labels, strict=True):
            answer = {1: "yes", 0: "no"}.get(label, "(scored against the relevant one)")
            text = shorten(decode(tokenizer, pair), MAX_PROMPT_CHARS, "prompt")
            examples.append(RenderedExample(
                row=index, text=f"{text}{TRAINED_OPEN}{answer}{TRAINED_CLOSE}", tokens=len(pair),
                trained_tokens=1 if label in (0, 1) else 0, masked_tokens=len(pair), truncated=False,
                ends_with_end_of_turn=True,
            ))
    lengths = [sum(len(p) for p in row) for row in rows["input_ids"]]
    per_epoch, total, warmup, epochs = steps(len(rows), config, devices)
    ordered = sorted(lengths)
    truncated = prompt.truncated
    report = LengthReport(
        sampled_rows=len(rows), min=ordered[0] if ordered else 0,
        median=float(ordered[len(ordered) // 2]) if ordered else 0.0,
        p95=float(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]) if ordered else 0.0,
        max=ordered[-1] if ordered else 0, truncated=truncated,
        truncated_share=round(truncated / pairs, 4) if pairs else 0.0,
        truncated_part="the end of the document in each cut (query, document) prompt (the answer position stays)"
        if truncated else f"nothing: every prompt fits max_seq_length={config.max_seq_length}",
        trained_tokens_lost=0, tokens_per_epoch=sum(lengths),
        trained_tokens_per_epoch=sum(sum(1 for label in row if label in (0, 1)) for row in rows["labels"]),
        padded_tokens_per_step=padded_tokens_per_step(lengths, config.per_device_train_batch_size,
                                                      config.gradient_accumulation_steps, config.seed),
        steps_per_epoch=per_epoch, total_steps=total, warmup_steps=warmup, epochs=epochs,
    )
    return examples, report, round(sum(lengths) / len(lengths)) if lengths else 0
