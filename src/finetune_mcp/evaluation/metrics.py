"""The metric registry of evaluation: every name `evaluate_model` and the suites report, with its tag
(get_job's `metrics` key), which way is better, and how it is measured.

  token       teacher-forced over the tokens training puts loss on (`scoring`): loss, perplexity,
              entropy, token_accuracy
  generation  greedy answers judged against the row's reference answer (`suites`): exact_match,
              normalized_match (`enhance.answer_check`'s exact / normalized checkers)
  ranking     a reranker's P(yes) ranking: mrr@k, ndcg@k, recall@k, precision@k, map, accuracy — the
              reranker method's own (`train.rerank.metrics`), named here by pattern
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finetune_mcp.errors import ConfigError
from finetune_mcp.runs import metric_names as M
from finetune_mcp.train.rerank.metrics import check_metric_names, rank_tag


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Literal["token", "generation"]
    tag: str
    higher_is_better: bool
    description: str


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("loss", "token", M.EVAL_LOSS, False, "mean cross-entropy per trained token (nats)"),
    Metric("perplexity", "token", "eval/perplexity", False, "exp(loss)"),
    Metric("entropy", "token", M.EVAL_ENTROPY_MEAN, False, "mean predictive entropy per trained token (nats)"),
    Metric("token_accuracy", "token", "eval/token_accuracy", True, "share of trained tokens predicted by argmax"),
    Metric("exact_match", "generation", "eval/exact_match", True, "greedy answer equals the reference (trimmed)"),
    Metric("normalized_match", "generation", "eval/normalized_match", True,
           "greedy answer equals the reference after lower-casing and dropping punctuation"),
)}
TOKEN_METRICS = tuple(name for name, m in METRICS.items() if m.kind == "token")


def check_names(names: list[str], task: str) -> list[str]:
    """Lower-cased, de-duplicated names that fit `task` (sft: the token metrics; rerank: ranking
    metrics); a ConfigError that names the ones that fit otherwise."""
    names = list(dict.fromkeys(n.strip().lower() for n in names))
    if task == "rerank":
        wrong = [n for n in names if n in METRICS]
        if wrong:
            raise ConfigError(f"{wrong} are metrics of task='sft' data; for ranking data use mrr@k, ndcg@k, "
                              "recall@k, precision@k, map or accuracy", field="metrics")
        return check_metric_names(names)
    wrong = [n for n in names if n not in TOKEN_METRICS]
    if wrong:
        raise ConfigError(f"{wrong} are not metrics of task='sft' data; use {', '.join(TOKEN_METRICS)} (ranking "
                          "metrics need task='rerank' data)", field="metrics")
    return names


def task_of(names: list[str] | None) -> str:
    """The task a metric list implies: sft for token metrics, rerank otherwise (the default)."""
    return "sft" if names and all(n.strip().lower() in TOKEN_METRICS for n in names) else "rerank"


def tag(name: str) -> str:
    """get_job's key of a metric: eval/loss, eval/normalized_match, rank/eval/mrr@10, ..."""
    return METRICS[name].tag if name in METRICS else rank_tag("eval", name)
