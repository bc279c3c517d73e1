"""The `sft` method's hooks (see `train.methods`): what its registry entry points at."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from finetune_mcp.runs import metric_names as M
from finetune_mcp.train.sft.workflow import train_sft as train

TAGS = {"loss": M.EVAL_LOSS, "perplexity": "eval/perplexity", "entropy": M.EVAL_ENTROPY_MEAN,
        "token_accuracy": "eval/token_accuracy"}


def evaluate(spec: Any, model: Any, tokenizer: Any, rows: list[dict[str, Any]],
             progress: Callable[[int, int], None]) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Loss, perplexity, entropy, token accuracy of `model` on the trained tokens of `rows`."""
    from finetune_mcp.train.sft.scoring import score_examples

    values = score_examples(model, tokenizer, rows, max_seq_length=spec.max_seq_length,
                            assistant_only_loss=spec.assistant_only_loss, batch_size=spec.eval_batch_size,
                            on_batch=progress)
    asked = {k: values[k] for k in spec.metrics}
    return asked, {TAGS[k]: v for k, v in asked.items()}, {"tokens": values["tokens"]}


def score_heldout(model: Any, tokenizer: Any, rows: list[dict[str, Any]],
                  spec: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """An experiment run's held-out CE, perplexity, token accuracy and entropy (answers are checked
    by the experiment itself, from the replies it generates)."""
    from finetune_mcp.train.sft.scoring import score_examples

    values = score_examples(model, tokenizer, rows, max_seq_length=spec.max_seq_length,
                            assistant_only_loss=spec.assistant_only_loss)
    metrics = {"eval_ce": values["loss"], "perplexity": values["perplexity"],
               "token_accuracy": values["token_accuracy"], "entropy": values["entropy"]}
    return metrics, {"tokens_scored": values["tokens"]}


__all__ = ["evaluate", "score_heldout", "train"]
