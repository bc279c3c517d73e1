"""The held-out metrics an experiment compares: their names, what they measure and which way is better.

Light on purpose (no torch): the server checks `primary_metric` against these names, and the
report, the card section and `get_experiment` label their rows from here. Which metrics a run of a
method reports, and its default primary metric, are the method's descriptor's (`config.methods`);
this module says what each name means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finetune_mcp.config.methods import get_method

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
RETAIN_METRICS = (  # only with a retain_dataset (methods scored by held-out CE): the forgetting check
    Metric("retain_ce", "CE on the retain rows", "lower", "nats/token"),
    Metric("retain_ce_rise", "forgetting: CE rise on the retain rows over the base model", "lower", "nats/token"),
)
RANKING = tuple(Metric(name, name.upper() if "@" in name else name, "higher")
                for name in ("mrr@10", "ndcg@10", "recall@5"))
RANKING += (Metric("accuracy", "accuracy", "higher"),)
PREFERENCE = (  # DPO / KTO / ORPO on held-out pairs (`train.preference_scoring`)
    Metric("pref_accuracy", "preference accuracy (log p chosen > rejected)", "higher"),
    Metric("logp_margin", "mean log p(chosen) − log p(rejected)", "higher", "nats"),
    Metric("logp_chosen", "mean log p(chosen)", None, "nats"),
    Metric("logp_rejected", "mean log p(rejected)", None, "nats"),
)
REWARDS = (  # GRPO: greedy replies to held-out prompts scored by the run's rewards
    Metric("mean_reward", "mean reward of greedy replies", "higher"),
    Metric("reward_std", "reward spread over prompts", None),
)
_ALL = {metric.name: metric for metric in
        SFT_METRICS + ANSWER_METRICS + RETAIN_METRICS + RANKING + PREFERENCE + REWARDS}


def metrics_for(method: str, answers: bool, retain: bool = False) -> tuple[Metric, ...]:
    """The metrics an experiment of `method` reports (answers: whether generations are checked; retain:
    whether it has a retain_dataset, which only a method scored by held-out CE may have)."""
    own = tuple(by_name(name) for name in get_method(method).experiment_metrics(answers))
    return own + RETAIN_METRICS if retain else own


def default_primary(method: str, answers: bool) -> str:
    """The metric the verdict and the recommendation are about, unless the spec names one: the
    method's (for SFT: answers right when they can be checked, else the loss on held-out tokens)."""
    return get_method(method).primary(answers)


def known_names(method: str, retain: bool = False) -> tuple[str, ...]:
    return tuple(m.name for m in metrics_for(method, answers=True, retain=retain))


def by_name(name: str) -> Metric:
    """The metric called `name`: a new method's held-out metrics get their label and direction here."""
    metric = _ALL.get(name)
    if metric is None:
        raise KeyError(name)
    return metric
