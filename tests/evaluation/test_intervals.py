"""Intervals and verdicts of the suites, on numbers whose answer is known."""

from __future__ import annotations

import pytest

from finetune_mcp.evaluation.intervals import paired_bootstrap, wilson
from finetune_mcp.evaluation.suites import match_comparison, summarize, token_comparison
from finetune_mcp.train.sft.scoring import RowScore


def test_wilson_matches_the_textbook_values() -> None:
    low, high = wilson(5, 10)  # type: ignore[misc]
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    low, high = wilson(0, 10)  # type: ignore[misc]
    assert low == 0.0 and round(high, 4) == 0.2775  # not collapsed to a point at 0
    assert wilson(0, 0) is None


def test_paired_bootstrap_is_seeded_and_weighs_rows() -> None:
    diffs = [0.1, 0.3, -0.2, 0.4, 0.2, 0.0, 0.5, 0.1]
    interval = paired_bootstrap(diffs)
    assert interval == paired_bootstrap(diffs) and interval[0] < sum(diffs) / 8 < interval[1]  # type: ignore[index]
    assert paired_bootstrap([0.0] * 5) == (0.0, 0.0)
    assert paired_bootstrap([1.0]) is None
    # with weights it estimates Σd / Σw: rows of 10 tokens each, a CE sum 2.0 higher per row → +0.2 per token
    assert paired_bootstrap([2.0] * 6, weights=[10] * 6) == pytest.approx((0.2, 0.2))


def test_a_worse_loss_is_called_forgetting_only_when_its_interval_leaves_out_zero() -> None:
    base = [RowScore(ce=10.0, entropy=5.0, correct=6, tokens=10) for _ in range(20)]
    worse = [RowScore(ce=12.0 + 0.1 * i, entropy=5.0, correct=6, tokens=10) for i in range(20)]
    noisy = [RowScore(ce=10.0 + (1 if i % 2 else -1), entropy=5.0, correct=6, tokens=10) for i in range(20)]
    metrics = token_comparison(base, worse)
    assert metrics["loss"]["verdict"] == "worse" and metrics["loss"]["delta"] == pytest.approx(0.295)
    assert metrics["token_accuracy"]["verdict"] == "no clear difference"
    assert summarize("forgetting", metrics).startswith("forgetting measured") and "loss" in summarize("forgetting",
                                                                                                        metrics)
    assert token_comparison(base, noisy)["loss"]["verdict"] == "no clear difference"
    assert summarize("forgetting", token_comparison(base, noisy)).startswith("no forgetting measured")


def test_match_rates_carry_wilson_intervals_and_a_paired_difference() -> None:
    references = ["Paris", "4", "blue", "cold"] * 5
    base = ["paris.", "5", "red", "hot"] * 5
    tuned = ["Paris", "4", "Blue", "cold"] * 5
    metrics = match_comparison(base, tuned, references)
    exact, normalized = metrics["exact_match"], metrics["normalized_match"]
    assert (exact["base"], exact["tuned"]) == (0.0, 0.75) and (normalized["base"], normalized["tuned"]) == (0.25, 1.0)
    assert normalized["verdict"] == "better" and normalized["n"] == 20
    assert normalized["tuned_interval"][1] == 1.0 and normalized["tuned_interval"][0] < 1.0
    assert summarize("heldout", metrics).startswith("the fine-tune is better")
