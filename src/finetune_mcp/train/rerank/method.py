"""The `rerank` method's hooks (see `train.methods`): what its registry entry points at."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from finetune_mcp.train.rerank.metrics import rank_tag
from finetune_mcp.train.rerank.workflow import EVAL_BATCH_SIZE, evaluate_ranking
from finetune_mcp.train.rerank.workflow import train_reranker as train


def evaluate(spec: Any, model: Any, tokenizer: Any, groups: list[dict[str, Any]],
             progress: Callable[[int, int], None]) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """The asked ranking metrics of `model` (P(yes) in the Qwen3-Reranker prompt) on query groups."""
    from finetune_mcp.train.rerank.metrics import ScoredGroup, compute_metrics
    from finetune_mcp.train.rerank.prompt import RerankPrompt, score_groups

    prompt = RerankPrompt(tokenizer, spec.max_seq_length, spec.rerank_instruction)
    scores = score_groups(model, prompt, groups, batch_size=spec.eval_batch_size, on_batch=progress)
    values = compute_metrics([ScoredGroup(s, g["relevance"]) for s, g in zip(scores, groups, strict=True)],
                             spec.metrics)
    extra = {"num_documents": sum(len(g["docs"]) for g in groups), "truncated_pairs": prompt.truncated}
    return values, {rank_tag("eval", k): v for k, v in values.items()}, extra


def score_heldout(model: Any, tokenizer: Any, groups: list[dict[str, Any]],
                  spec: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """An experiment run's ranking metrics on the held-out query groups."""
    from finetune_mcp.train.rerank.prompt import RerankPrompt

    prompt = RerankPrompt(tokenizer, spec.max_seq_length, spec.rerank_instruction)
    return evaluate_ranking(model, prompt, groups, batch_size=EVAL_BATCH_SIZE), {}


__all__ = ["evaluate", "score_heldout", "train"]
