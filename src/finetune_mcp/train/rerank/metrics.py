"""Ranking metrics over query groups: MRR@k, NDCG@k, Recall@k, Precision@k, MAP, accuracy.

Pure Python (no torch), so the server can validate metric names and the card can format results
without loading anything heavy. One group = one query's documents, each with a model score and a
graded relevance (0 = not relevant; a document is *relevant* when relevance > 0).

Definitions (per query, then the mean over queries that have a relevant document):
  MRR@k        1 / rank of the first relevant document, 0 when none is in the top k
  NDCG@k       DCG@k / IDCG@k with DCG = Σ_{i<=k} rel_i / log2(i + 1) (linear gain, as trec_eval)
  Recall@k     relevant documents in the top k / all relevant documents
  Precision@k  relevant documents in the top k / k
  MAP          mean over relevant documents of Precision at each one's rank
  accuracy     over (query, document) pairs: P(yes) >= 0.5 exactly when the document is relevant
               (the pointwise yes/no decision the reranker makes; not a ranking metric)
Ties in score are broken *against* the relevant documents, so a model that scores everything the
same gets the worst ranking, never credit for the order the data happened to list documents in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from finetune_mcp.errors import ConfigError

DEFAULT_METRICS = ("mrr@10", "ndcg@10", "recall@5", "accuracy")
_NAME = re.compile(r"^(mrr|ndcg|recall|precision)@([1-9][0-9]{0,3})$|^(map|accuracy)$")


@dataclass(frozen=True)
class ScoredGroup:
    """One query's documents: `scores` from the model (P(yes)), `relevance` from the data."""

    scores: Sequence[float]
    relevance: Sequence[float]


def check_metric_names(names: Sequence[str]) -> list[str]:
    """Lower-cased, de-duplicated names in order; a ConfigError naming the bad one otherwise."""
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not _NAME.match(name):
            raise ConfigError(
                f"unknown ranking metric {raw!r}; use mrr@k, ndcg@k, recall@k, precision@k (k from 1 to 9999), "
                "map or accuracy, e.g. ['mrr@10', 'ndcg@10', 'recall@5', 'accuracy']",
                field="metrics",
            )
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("no metric asked for; pass e.g. ['mrr@10', 'ndcg@10', 'recall@5', 'accuracy']",
                          field="metrics")
    return out


def ranked_relevance(group: ScoredGroup) -> list[float]:
    """The group's relevances in ranked order: score descending, ties with relevant documents last."""
    if len(group.scores) != len(group.relevance):
        raise ValueError(f"{len(group.scores)} scores for {len(group.relevance)} documents")
    order = sorted(range(len(group.scores)), key=lambda i: (-group.scores[i], group.relevance[i]))
    return [group.relevance[i] for i in order]


def reciprocal_rank(ranked: Sequence[float], k: int) -> float:
    return next((1.0 / rank for rank, rel in enumerate(ranked[:k], 1) if rel > 0), 0.0)


def ndcg(ranked: Sequence[float], k: int) -> float:
    ideal = _dcg(sorted(ranked, reverse=True), k)
    return _dcg(ranked, k) / ideal if ideal > 0 else 0.0


def _dcg(ranked: Sequence[float], k: int) -> float:
    return sum(rel / math.log2(rank + 1) for rank, rel in enumerate(ranked[:k], 1))


def recall(ranked: Sequence[float], k: int) -> float:
    total = sum(rel > 0 for rel in ranked)
    return sum(rel > 0 for rel in ranked[:k]) / total if total else 0.0


def precision(ranked: Sequence[float], k: int) -> float:
    return sum(rel > 0 for rel in ranked[:k]) / k


def average_precision(ranked: Sequence[float]) -> float:
    hits, total = 0, 0.0
    for rank, rel in enumerate(ranked, 1):
        if rel > 0:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def compute_metrics(groups: Sequence[ScoredGroup], names: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Each asked metric, averaged over the groups that have at least one relevant document
    (accuracy: over all pairs). Keys are the metric names, e.g. {"mrr@10": 0.83, ...}."""
    names = check_metric_names(names)
    judged = [g for g in groups if any(rel > 0 for rel in g.relevance)]
    out: dict[str, float] = {}
    for name in names:
        if name == "accuracy":
            pairs = [(s >= 0.5) == (r > 0) for g in groups for s, r in zip(g.scores, g.relevance, strict=True)]
            out[name] = sum(pairs) / len(pairs) if pairs else 0.0
            continue
        if not judged:
            out[name] = 0.0
            continue
        kind, _, k_text = name.partition("@")
        k = int(k_text) if k_text else 0
        values = []
        for group in judged:
            ranked = ranked_relevance(group)
            if kind == "mrr":
                values.append(reciprocal_rank(ranked, k))
            elif kind == "ndcg":
                values.append(ndcg(ranked, k))
            elif kind == "recall":
                values.append(recall(ranked, k))
            elif kind == "precision":
                values.append(precision(ranked, k))
            else:
                values.append(average_precision(ranked))
        out[name] = sum(values) / len(values)
    return out


def rank_tag(phase: str, metric: str) -> str:
    """TensorBoard tag and events.jsonl key of a ranking metric: rank/before/mrr@10, rank/after/ndcg@10,
    or rank/eval/... for an evaluate_model job."""
    return f"rank/{phase}/{metric}"
