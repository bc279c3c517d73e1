"""The dry run of the generating methods (row shape "prompts": grpo): each shown row as the prompt
the model answers (rendered with the generation prompt, as TRL renders a message list; a string
prompt as it is), a [[...]] placeholder for the completions the model writes (the tokens that carry
the loss), and the row's reward columns (the reference answer the rewards read).

Lengths are prompt + max_completion_length per completion, num_generations completions per prompt:
what one step generates and trains on, at most. The block's fields are read by name
(`max_completion_length`, `num_generations`, `rewards`), the settings every generating method has.
"""

from __future__ import annotations

from typing import Any

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.preview.examples import MAX_MASKED_CHARS, sample_indices, shorten
from finetune_mcp.preview.lengths import padded_tokens_per_step, steps
from finetune_mcp.preview.report import TRAINED_CLOSE, TRAINED_OPEN, LengthReport, RenderedExample

SAMPLE = 2000


def prompt_text(tokenizer: Any, prompt: Any) -> str:
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return prompt


def prompts_preview(config: EnhancedTrainingConfig, tokenizer: Any, train: list[dict[str, Any]], shown: int,
                    devices: int = 1) -> tuple[list[RenderedExample], LengthReport, int]:
    """(examples, lengths, validation tokens per row) for prompt-only rows."""
    block = config.method_settings
    new_tokens, group = block.max_completion_length, block.num_generations
    scoring = ", ".join(f"{r.function}×{r.weight:g}" for r in block.rewards)
    examples = []
    for index, row in enumerate(train[:shown]):
        head = prompt_text(tokenizer, row["prompt"])
        n_head = len(tokenizer(head, add_special_tokens=False).input_ids)
        examples.append(RenderedExample(
            row=index, text=shorten(head, MAX_MASKED_CHARS, "prompt") + TRAINED_OPEN
            + f"{group} completions written by the model, up to {new_tokens} tokens each, scored by {scoring}"
            + TRAINED_CLOSE, tokens=n_head + new_tokens, trained_tokens=new_tokens, masked_tokens=n_head,
            truncated=False, ends_with_end_of_turn=True, reward_columns=row.get("columns", {}),
        ))
    lengths = [len(tokenizer(prompt_text(tokenizer, train[i]["prompt"]), add_special_tokens=False).input_ids)
               + new_tokens for i in sample_indices(len(train), SAMPLE, config.seed)]
    scale = len(train) / len(lengths) if lengths else 0.0
    # TRL's batch counts completions: a prompt fills num_generations rows of it
    per_epoch, total, warmup, epochs = steps(len(train) * group, config, devices)
    ordered = sorted(lengths)
    report = LengthReport(
        sampled_rows=len(lengths), min=ordered[0] if ordered else 0,
        median=float(ordered[len(ordered) // 2]) if ordered else 0.0,
        p95=float(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]) if ordered else 0.0,
        max=ordered[-1] if ordered else 0, truncated=0, truncated_share=0.0,
        truncated_part=f"nothing: completions stop at max_completion_length={new_tokens}",
        trained_tokens_lost=0, tokens_per_epoch=round(sum(lengths) * scale * group),
        trained_tokens_per_epoch=round(len(train) * group * new_tokens),
        padded_tokens_per_step=padded_tokens_per_step(lengths, config.per_device_train_batch_size,
                                                      config.gradient_accumulation_steps, config.seed),
        steps_per_epoch=per_epoch, total_steps=total, warmup_steps=warmup, epochs=epochs,
    )
    return examples, report, round(sum(lengths) / len(lengths)) if lengths else 0
