"""The statistics say only what the seeds support: intervals, the exact test's floor, verdicts, the recommendation."""

from __future__ import annotations

import itertools
import statistics

import pytest

from finetune_mcp.experiment import stats
from finetune_mcp.experiment.metrics import by_name
from finetune_mcp.experiment.table import recommend

MATCH = by_name("normalized_match")  # higher is better
CE = by_name("eval_ce")  # lower is better


def test_spread_is_the_sample_mean_and_std_with_every_seed():
    s = stats.spread({"1": 0.5, "2": 0.7, "3": 0.9})
    assert (s.n, s.values) == (3, {"1": 0.5, "2": 0.7, "3": 0.9})
    assert s.mean == pytest.approx(0.7) and s.std == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))
    assert stats.spread({"1": 0.5}).std is None and stats.spread({}).mean is None


def test_bootstrap_interval_is_reproducible_and_bounded_by_the_differences():
    diffs = [0.1, -0.05, 0.2, 0.03, 0.12]
    low, high = stats.bootstrap_interval(diffs)
    assert (low, high) == stats.bootstrap_interval(diffs)  # fixed RNG seed
    assert min(diffs) <= low < statistics.mean(diffs) < high <= max(diffs)
    assert stats.bootstrap_interval([0.3, 0.3]) == (0.3, 0.3)
    # at n = 2 the resampled means are d1, (d1 + d2) / 2, d2: the interval is the range
    assert stats.bootstrap_interval([0.1, 0.2]) == pytest.approx((0.1, 0.2))


def test_sign_flip_p_is_exact_and_has_a_floor_of_two_over_two_to_the_n():
    assert stats.sign_flip_p([0.1, 0.2, 0.3]) == pytest.approx(0.25)  # 2 of 8 sign patterns as extreme
    assert stats.sign_flip_p([0.1, -0.1]) == 1.0
    diffs = [0.3, -0.1, 0.2, 0.25]
    observed = abs(sum(diffs))
    brute = sum(abs(sum(s * d for s, d in zip(signs, diffs, strict=True))) >= observed - 1e-12
                for signs in itertools.product((1, -1), repeat=4)) / 16
    assert stats.sign_flip_p(diffs) == pytest.approx(brute)
    assert [stats.min_p_value(n) for n in (2, 3, 6)] == [0.5, 0.25, pytest.approx(1 / 32)]
    assert stats.seeds_needed() == 6


def test_an_interval_that_holds_zero_is_no_detectable_difference():
    c = stats.compare(MATCH, "entropy", "standard", {"1": 0.8, "2": 0.6, "3": 0.7}, {"1": 0.7, "2": 0.7, "3": 0.7})
    assert c.n == 3 and c.ci_low <= 0 <= c.ci_high
    assert c.supported == "none" and c.verdict.startswith("no detectable difference in normalized_match at 3 seeds")


def test_three_seeds_all_better_is_still_not_a_claimed_difference():
    c = stats.compare(MATCH, "entropy", "standard", {"1": 0.8, "2": 0.9, "3": 0.85}, {"1": 0.7, "2": 0.7, "3": 0.7})
    assert c.ci_low > 0 and c.p_value == pytest.approx(0.25) and c.min_p_value == pytest.approx(0.25)
    assert c.supported == "none"
    assert "3 seeds cannot rule out chance" in c.verdict and "6 seeds could" in c.verdict


def test_six_consistent_seeds_support_better_or_worse_by_the_metric_direction():
    arm = {str(s): 0.9 + 0.01 * s for s in range(6)}
    base = {str(s): 0.7 for s in range(6)}
    better = stats.compare(MATCH, "entropy", "standard", arm, base)
    assert better.supported == "better" and better.p_value == pytest.approx(1 / 32)
    assert better.verdict.startswith("entropy: better normalized_match (higher) than standard")
    worse = stats.compare(CE, "entropy", "standard", arm, base)  # higher CE is worse
    assert worse.supported == "worse" and "worse eval_ce (higher)" in worse.verdict


def test_fewer_than_two_paired_seeds_cannot_tell():
    c = stats.compare(MATCH, "entropy", "standard", {"1": 0.8, "2": 0.9}, {"1": 0.7})  # seed 2 has no baseline
    assert (c.n, c.ci_low, c.supported) == (1, None, "none")
    assert c.verdict.startswith("cannot tell: 1 seed with both entropy and standard finished")


def test_the_recommendation_names_an_arm_only_when_the_evidence_supports_it():
    base = {str(s): 0.7 for s in range(6)}
    good = stats.compare(MATCH, "good", "standard", {str(s): 0.9 for s in range(6)}, base)
    flat = stats.compare(MATCH, "flat", "standard", {str(s): 0.7 + (0.01 if s % 2 else -0.01) for s in range(6)}, base)
    assert recommend(MATCH, "standard", [good, flat])["arm"] == "good"
    unsure = recommend(MATCH, "standard", [flat])
    assert unsure["arm"] is None and unsure["reason"].startswith("cannot tell at 6 seeds")
    bad = stats.compare(MATCH, "bad", "standard", {str(s): 0.5 for s in range(6)}, base)
    assert recommend(MATCH, "standard", [bad])["arm"] == "standard"
    assert recommend(by_name("entropy"), "standard", [flat])["arm"] is None  # no better direction
