"""The `grpo` method's hooks (see `train.methods`): what its registry entry points at.

Held-out scoring: greedy replies to the held-out prompts (`model.generate`), scored by the run's own
rewards (the combined Σ wᵢ·rᵢ: `mean_reward`, and its spread over prompts, `reward_std`). The start
check calls every reward on the first rows (`rewards.check`). Light at import: the server imports
this module for `check_start`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from finetune_mcp.model.generation_settings import GenerationSettings
from finetune_mcp.train.grpo.workflow import train_grpo as train

log = logging.getLogger("finetune_mcp.preflight")

# Held-out prompts generated together: one prompt at a time, 90 short answers of a 135M model took
# 26-30 s on an H100; one batch of them, well under a second.
_BATCH = 64


def check_start(config: Any) -> list[str]:
    """Call every reward on the first rows as TRL would: a ConfigError with the fix for a signature,
    return-type or column error; the warnings (a reward constant on the probes) back, also logged."""
    from finetune_mcp.data.loader import load_examples
    from finetune_mcp.errors import ConfigError
    from finetune_mcp.train.grpo.rewards.check import RewardCheckError, check_rewards

    data = load_examples(config.data)
    try:
        warnings = check_rewards(config.grpo.rewards, (data.train + data.validation)[:3])
    except RewardCheckError as exc:
        raise ConfigError(str(exc), field="grpo.rewards") from None
    for warning in warnings:
        log.warning(warning)
    return warnings


def heldout_rewards(model: Any, tokenizer: Any, rows: list[dict[str, Any]], settings: Any,
                    on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """mean_reward and reward_std of greedy replies to `rows` (normalised prompt-only rows)."""
    from finetune_mcp.model.generate import chat_prompt, generate
    from finetune_mcp.train.grpo.rewards.combine import load_rewards

    prompts = [r["prompt"] for r in rows]
    # model_construct: max_completion_length may exceed the 4096 new tokens a sample request may ask for
    generation = GenerationSettings.model_construct(max_new_tokens=settings.max_completion_length,
                                                    batch_size=_BATCH, alternatives=0)
    was_training = model.training
    model.eval()
    try:
        replies = [g.text.strip() for g in generate(model, tokenizer, [chat_prompt(tokenizer, p) for p in prompts],
                                                     generation)]
    finally:
        model.train(was_training)
    functions, weights = load_rewards(settings.rewards)
    completions = [[{"role": "assistant", "content": t}] if isinstance(p, list) else t
                   for p, t in zip(prompts, replies, strict=True)]
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key, value in row.get("columns", {}).items():
            columns.setdefault(key, []).append(value)
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in replies]
    totals = [0.0] * len(rows)
    for fn, weight in zip(functions, weights, strict=True):
        values = fn(prompts=prompts, completions=completions, completion_ids=ids, **columns)
        totals = [t + weight * (v or 0.0) for t, v in zip(totals, values, strict=True)]
    if on_batch:
        on_batch(len(rows), len(rows))
    mean = sum(totals) / len(totals)
    return {"mean_reward": mean, "reward_std": math.sqrt(sum((t - mean) ** 2 for t in totals) / len(totals))}


def evaluate(spec: Any, model: Any, tokenizer: Any, rows: list[dict[str, Any]],
             progress: Callable[[int, int], None]) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """evaluate_model on prompt-only rows: the job's rewards on greedy replies."""
    values = heldout_rewards(model, tokenizer, rows, spec.grpo, progress)
    asked = {k: values[k] for k in spec.metrics}
    return asked, {f"eval/{k}": v for k, v in asked.items()}, {"prompts_scored": len(rows)}


def score_heldout(model: Any, tokenizer: Any, rows: list[dict[str, Any]],
                  spec: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """An experiment run's held-out reward (greedy replies, the run's rewards)."""
    return heldout_rewards(model, tokenizer, rows, spec.grpo), {"prompts_scored": len(rows)}


__all__ = ["check_start", "evaluate", "score_heldout", "train"]
