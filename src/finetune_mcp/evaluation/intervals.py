"""Intervals for evaluation results that say how sure a number is, never more.

  wilson(k, n)        the Wilson score interval of a rate k/n (match rates): honest at small n and at
                      0 or 1, where the normal approximation collapses to a point
  paired_bootstrap    the percentile bootstrap interval of the mean of paired differences (tuned −
                      base on the same rows): rows resampled with replacement, a fixed seed, so the
                      same numbers give the same interval
Both at 95 %. Rows are the unit: they are treated as independent draws, which a dataset of
near-duplicates is not (the interval is then too narrow); docs/evaluation.md says so.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z95 = 1.959963984540054
RESAMPLES = 2_000
SEED = 0


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """(low, high) of the rate successes / n; None without rows."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 away
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def paired_bootstrap(differences: Sequence[float], *, weights: Sequence[float] | None = None,
                     resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float] | None:
    """(low, high) at 95 % of Σ differences / Σ weights (the mean difference without weights; with
    each row's token count as its weight, the difference of two token-pooled figures); None below 2
    rows (nothing to resample) or when the weights sum to 0."""
    n = len(differences)
    weights = list(weights) if weights is not None else [1.0] * n
    if n < 2 or sum(weights) <= 0:
        return None
    rng = random.Random(seed)
    estimates = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        total = sum(weights[i] for i in picks)
        if total > 0:
            estimates.append(sum(differences[i] for i in picks) / total)
    estimates.sort()
    return estimates[int(0.025 * len(estimates))], estimates[min(len(estimates) - 1, int(0.975 * len(estimates)))]
