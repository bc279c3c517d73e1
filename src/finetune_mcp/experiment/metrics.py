"""The held-out metrics an experiment compares: their names, what they measure and which way is better.

Light on purpose (no torch): the server checks `primary_metric` against these names, and the
report, the card section and `get_experiment` label their rows from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finetune_mcp.train.rerank.metrics import DEFAULT_METRICS as RANK_METRICS

Better = Literal["higher", "lower"] | None  # None: descriptive (entropy), no arm is "better" by it


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    better: Better
    unit: str = ""


SFT_METRICS = (
    Metric("eval_ce", "held-out CE (unweighted)", "lower", "nats/token"),
    Metric("perplexity", "held-out perplexity", "lower"),
    Metric("token_accuracy", "token accuracy on the trained tokens", "higher"),
    Metric("entropy", "mean predictive entropy", None, "nats"),
)
ANSWER_METRICS = (  # only when held-out rows have a checkable answer (the last assistant reply)
    Metric("exact_match", "exact match of greedy replies", "higher"),
    Metric("normalized_match", "normalised match of greedy replies", "higher"),
)
RANKING = tuple(Metric(name, name.upper() if "@" in name else name, "higher") for name in RANK_METRICS)


def metrics_for(task: str, answers: bool) -> tuple[Metric, ...]:
    """The metrics an experiment of `task` reports (answers: whether generations are checked)."""
    if task == "rerank":
        return RANKING
    return SFT_METRICS + (ANSWER_METRICS if answers else ())


def default_primary(task: str, answers: bool) -> str:
    """The metric the verdict and the recommendation are about, unless the spec names one: what the
    user cares about when it can be checked (answers right), else the loss on held-out tokens."""
    if task == "rerank":
        return "mrr@10"
    return "normalized_match" if answers else "eval_ce"


def known_names(task: str) -> tuple[str, ...]:
    return tuple(m.name for m in metrics_for(task, answers=True))


def by_name(name: str) -> Metric:
    for metric in SFT_METRICS + ANSWER_METRICS + RANKING:
        if metric.name == name:
            return metric
    raise KeyError(name)
