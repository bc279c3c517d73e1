"""Ranking metrics against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from finetune_mcp.errors import ConfigError
from finetune_mcp.train.rerank.metrics import (
    ScoredGroup,
    average_precision,
    check_metric_names,
    compute_metrics,
    ndcg,
    ranked_relevance,
    recall,
    reciprocal_rank,
)

# Binary: scores rank the documents 0, 1, 2, 3 as given; relevant ones at ranks 2 and 4.
BINARY = ScoredGroup(scores=[0.9, 0.8, 0.7, 0.6], relevance=[0, 1, 0, 1])
# Graded: by score the order is doc 1 (rel 0), doc 2 (rel 1), doc 0 (rel 2).
GRADED = ScoredGroup(scores=[0.1, 0.4, 0.3], relevance=[2, 0, 1])


def test_binary_group_by_hand() -> None:
    ranked = ranked_relevance(BINARY)
    assert ranked == [0, 1, 0, 1]
    assert reciprocal_rank(ranked, 10) == 0.5  # first relevant at rank 2
    assert reciprocal_rank(ranked, 1) == 0.0  # not in the top 1
    # DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677; IDCG = 1 + 1/log2(3) = 1.630930
    assert ndcg(ranked, 10) == pytest.approx((0.6309298 + 0.4306766) / 1.6309298, abs=1e-6)
    assert ndcg(ranked, 10) == pytest.approx(0.650921, abs=1e-6)
    assert recall(ranked, 1) == 0.0 and recall(ranked, 2) == 0.5 and recall(ranked, 5) == 1.0
    assert average_precision(ranked) == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_graded_group_uses_linear_gain() -> None:
    ranked = ranked_relevance(GRADED)
    assert ranked == [0, 1, 2]
    # DCG = 0 + 1/log2(3) + 2/log2(4) = 1.630930; IDCG = 2 + 1/log2(3) + 0 = 2.630930
    assert ndcg(ranked, 10) == pytest.approx(1.6309298 / 2.6309298, abs=1e-6)
    assert ndcg(ranked, 2) == pytest.approx((1 / math.log2(3)) / (2 + 1 / math.log2(3)), abs=1e-9)
    assert recall(ranked, 2) == 0.5  # two documents have relevance > 0; one is in the top 2


def test_means_over_queries_and_accuracy_over_pairs() -> None:
    no_relevant = ScoredGroup(scores=[0.2, 0.9], relevance=[0, 0])  # ranks nothing: left out of ranking means
    metrics = compute_metrics([BINARY, GRADED, no_relevant], ["MRR@10", "ndcg@10", "recall@5", "map", "accuracy",
                                                               "precision@2"])
    assert metrics["mrr@10"] == pytest.approx((0.5 + 0.5) / 2)
    assert metrics["ndcg@10"] == pytest.approx((0.650921 + 0.619906) / 2, abs=2e-6)
    assert metrics["recall@5"] == pytest.approx(1.0)
    assert metrics["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert metrics["map"] == pytest.approx((0.5 + (1 / 2 + 2 / 3) / 2) / 2)
    # accuracy: P(yes) >= 0.5 means "relevant". BINARY: all four say yes, two are right; GRADED: all say
    # no, doc 1 (rel 0) is right; no_relevant: 0.2 right, 0.9 wrong → (2 + 1 + 1) / 9
    assert metrics["accuracy"] == pytest.approx(4 / 9)


def test_ties_rank_the_relevant_documents_last() -> None:
    constant = ScoredGroup(scores=[0.5, 0.5, 0.5], relevance=[1, 0, 0])
    assert ranked_relevance(constant) == [0, 0, 1]
    assert compute_metrics([constant], ["mrr@10"])["mrr@10"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("bad", ["mrr", "mrr@0", "ndcg@x", "f1", "recall@100000", ""])
def test_unknown_metric_names_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="unknown ranking metric"):
        check_metric_names([bad])


def test_metric_names_are_normalised_and_deduplicated() -> None:
    assert check_metric_names(["MRR@10", "mrr@10", " Accuracy "]) == ["mrr@10", "accuracy"]
