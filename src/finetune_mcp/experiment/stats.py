"""Statistics that do not overclaim: per-arm spread, paired differences with a bootstrap interval,
an exact sign-flip test, and a verdict that says only what those support.

Pairing: arm and baseline trained with the same seed (same LoRA initialisation, same data order)
and scored on the same held-out rows differ only by the loss, so the difference per seed
d_s = arm_s − baseline_s is the quantity of interest; its mean over n seeds is the estimate.

Interval: percentile bootstrap of the mean of the d_s (10,000 resamples with replacement, a fixed
RNG seed, so the same numbers give the same interval). With n = 2–3 the bootstrap distribution has
only a handful of distinct values and the interval cannot be wider than the range of the d_s: it
tends to be too narrow, never too wide. So the verdict also asks the exact paired sign-flip test
(every ± assignment of the d_s, two-sided): at n seeds its p-value cannot go below 2 / 2^n (0.5 at
n = 2, 0.25 at n = 3, 0.031 from n = 6), so a "difference" needs at least 6 seeds at the 5 % level,
whatever the interval shows. Pure Python: the worker computes, every reader just reads.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from finetune_mcp.experiment.metrics import Metric

RESAMPLES = 10_000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
ALPHA = 0.05
EXACT_FLIPS_UP_TO = 16  # seeds; beyond, 2^n sign patterns are sampled (fixed seed)


@dataclass(frozen=True)
class Spread:
    """One arm's values of one metric over its seeds."""

    n: int
    mean: float | None
    std: float | None  # sample standard deviation (n − 1); None below 2 values
    values: dict[str, float]  # seed → value

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """An arm against the baseline on one metric, over the seeds both finished."""

    metric: str
    arm: str
    baseline: str
    n: int
    differences: dict[str, float]  # seed → arm − baseline
    mean_difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # exact two-sided sign-flip test
    min_p_value: float | None  # the smallest p that n seeds can give
    supported: str  # "better" | "worse" | "different" | "none": what the evidence supports
    verdict: str

    def to_json(self) -> dict:
        return asdict(self)


def spread(values: dict[str, float]) -> Spread:
    data = list(values.values())
    n = len(data)
    mean = sum(data) / n if n else None
    std = math.sqrt(sum((x - mean) ** 2 for x in data) / (n - 1)) if n >= 2 and mean is not None else None
    return Spread(n=n, mean=mean, std=std, values=dict(values))


def bootstrap_interval(differences: Sequence[float], *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `differences` (resampled with replacement)."""
    n = len(differences)
    if n == 0:
        raise ValueError("no differences to resample")
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(differences, k=n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[max(0, math.floor(tail * resamples))]
    high = means[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return low, high


def sign_flip_p(differences: Sequence[float], *, seed: int = BOOTSTRAP_SEED) -> float:
    """Exact two-sided paired permutation test: the share of ± sign assignments whose mean is at least
    as far from 0 as the observed one (under "no effect" each sign is a coin flip)."""
    n = len(differences)
    observed = abs(sum(differences)) / n
    tolerance = 1e-12 * max(1.0, observed)
    if n <= EXACT_FLIPS_UP_TO:
        patterns = itertools.product((1, -1), repeat=n)
        total = 2**n
    else:
        rng = random.Random(seed)
        total = 100_000
        patterns = ([rng.choice((1, -1)) for _ in range(n)] for _ in range(total))
    extreme = sum(abs(sum(s * d for s, d in zip(signs, differences, strict=True))) / n >= observed - tolerance
                  for signs in patterns)
    return extreme / total


def min_p_value(n: int) -> float:
    """The smallest p-value the sign-flip test can give with n pairs (every difference the same sign)."""
    return min(1.0, 2 / 2**n)


def seeds_needed(alpha: float = ALPHA) -> int:
    """The fewest seeds with which the sign-flip test can reach `alpha`."""
    return next(n for n in range(1, 64) if min_p_value(n) <= alpha)


def compare(metric: Metric, arm: str, baseline: str, arm_values: dict[str, float],
            baseline_values: dict[str, float]) -> Comparison:
    """`arm` against `baseline` on `metric`, paired by seed."""
    seeds = [s for s in baseline_values if s in arm_values]
    diffs = {s: arm_values[s] - baseline_values[s] for s in seeds}
    n = len(diffs)
    empty = dict(metric=metric.name, arm=arm, baseline=baseline, n=n, differences=diffs)
    if n < 2:
        verdict = (f"cannot tell: {n} seed{'s' if n != 1 else ''} with both {arm} and {baseline} finished; an "
                   "interval needs at least 2")
        mean = sum(diffs.values()) / n if n else None
        return Comparison(**empty, mean_difference=mean, ci_low=None, ci_high=None, p_value=None,
                          min_p_value=None, supported="none", verdict=verdict)
    values = list(diffs.values())
    mean = sum(values) / n
    low, high = bootstrap_interval(values)
    p = sign_flip_p(values)
    floor = min_p_value(n)
    supported, verdict = _verdict(metric, arm, baseline, n, mean, low, high, p, floor)
    return Comparison(**empty, mean_difference=mean, ci_low=low, ci_high=high, p_value=p, min_p_value=floor,
                      supported=supported, verdict=verdict)


def _verdict(metric: Metric, arm: str, baseline: str, n: int, mean: float, low: float, high: float,
             p: float, floor: float) -> tuple[str, str]:
    interval = f"{arm} − {baseline} = {mean:+.4g}, 95 % CI [{low:+.4g}, {high:+.4g}]"
    if low <= 0 <= high:
        return "none", f"no detectable difference in {metric.name} at {n} seeds ({interval})"
    direction = "higher" if mean > 0 else "lower"
    if metric.better is None:
        kind = "different"
        judged = f"{direction} {metric.name}"
    else:
        kind = "better" if (mean > 0) == (metric.better == "higher") else "worse"
        judged = f"{kind} {metric.name} ({direction})"
    if p > ALPHA:
        more = f"; {seeds_needed()} seeds could" if n < seeds_needed() else "; more seeds could tell"
        return "none", (f"{arm} {direction} than {baseline} in {metric.name} here ({interval}), but {n} seeds cannot "
                        f"rule out chance (exact sign-flip p = {p:.2g}; the smallest possible at n = {n} is "
                        f"{floor:.2g}{more})")
    return kind, f"{arm}: {judged} than {baseline} ({interval}; sign-flip p = {p:.2g}, n = {n})"
