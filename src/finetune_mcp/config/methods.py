"""The training-method registry: which methods exist and what every layer may ask about one.

A training method (SFT, the reranker, and later DPO, GRPO, ...) is an objective with its own rows,
trainer and metrics. Its *descriptor* lives here, light and importable from every layer (no torch):
the data formats it accepts, the Hub pipeline tag of what it produces, its metrics, whether it
generates, what it adds to a run's memory, and where its implementation lives. The implementation
is a folder `train/<method>/` whose package exposes the `train.methods.MethodImplementation`
functions (the worker body first); `implementation` names it by dotted path, so this one entry is
the only place a method is registered. Code outside the registry and a method's own folder never
compares method names: it asks the descriptor (`get_method(config.method).pipeline_tag`, ...).

Adding a method: its folder under `train/`, one `TrainingMethod(...)` line in `METHODS` below.
`tests/config/test_methods.py` checks every entry (formats known to `data.formats`, an importable
implementation with every hook, metrics the evaluation knows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from finetune_mcp.errors import ConfigError

DEFAULT_METHOD = "sft"  # configs, specs and jobs from before methods had names trained with SFT

# The dataset formats each family of rows comes in (names as `dataset_format` spells them).
CHAT_FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion", "text", "arangodb")
RANKING_FORMATS = ("ranking", "triples", "graded")


@dataclass(frozen=True)
class MemoryExtras:
    """What a method adds to an SFT-shaped run's memory (`jobs.vram.estimate_memory` adds it).

    sequences_per_row: sequences one row puts through the model per step (a preference pair: 2);
    reference_copy: a frozen second copy of the weights (a reference model that is not simply the
    base with the adapter switched off); generations: completions generated per prompt during a step
    (their KV cache), 0 for methods that do not generate while training.
    """

    sequences_per_row: int = 1
    reference_copy: bool = False
    generations: int = 0


@dataclass(frozen=True)
class TrainingMethod:
    """One training method, as the layers outside its own folder see it."""

    name: str
    summary: str  # one line, for field descriptions and errors
    formats: tuple[str, ...]  # the dataset formats it trains on (`data.formats` names)
    pipeline_tag: str  # the Hub pipeline tag of the trained model (model card)
    unit: str  # what one row is, for messages: "examples", "queries"
    implementation: str  # dotted module path of its hooks under train/<method>/ (see `train.methods`)
    # the rows its worker trains on, as the dry run renders them: "sequences" (tokenised chat /
    # prompt-completion / text rows with a label mask) or "query_groups" (a query and its documents)
    row_shape: str = "sequences"
    # evaluate_model: the metrics it computes on this method's rows, the default list, their TensorBoard tags
    eval_metrics: tuple[str, ...] = ()
    default_eval_metrics: tuple[str, ...] = ()
    # experiments: held-out metrics of every run, those added when held-out rows carry checkable answers,
    # and the primary metric without / with answers
    heldout_metrics: tuple[str, ...] = ()
    answer_metrics: tuple[str, ...] = ()
    primary_metric: str = ""
    primary_metric_with_answers: str | None = None
    generates: bool = True  # its model answers prompts (sample_model, greedy replies in experiments)
    needs_reference_model: bool = False
    memory: MemoryExtras = field(default_factory=MemoryExtras)
    loss_head_rows: int | None = None  # rows of the head its loss multiplies through (None: the vocabulary)
    metric_pattern: str | None = None  # a regex of further eval metric names it accepts (mrr@k, ...)
    metric_help: str = ""  # its eval metrics as an error message lists them

    def primary(self, answers: bool) -> str:
        """The metric an experiment's verdict is about (answers: whether replies are checked)."""
        return (self.primary_metric_with_answers or self.primary_metric) if answers else self.primary_metric

    def experiment_metrics(self, answers: bool) -> tuple[str, ...]:
        return self.heldout_metrics + (self.answer_metrics if answers else ())

    def accepts_metric(self, name: str) -> bool:
        import re

        return name in self.eval_metrics or bool(self.metric_pattern and re.fullmatch(self.metric_pattern, name))


_SFT_EVAL = ("loss", "perplexity", "entropy", "token_accuracy")
_RANK_DEFAULT = ("mrr@10", "ndcg@10", "recall@5", "accuracy")

METHODS: dict[str, TrainingMethod] = {m.name: m for m in (
    TrainingMethod(
        "sft", "supervised fine-tuning: next-token loss on the replies of chat/instruction data",
        formats=CHAT_FORMATS, pipeline_tag="text-generation", unit="examples",
        implementation="finetune_mcp.train.sft.method",
        eval_metrics=_SFT_EVAL, default_eval_metrics=_SFT_EVAL, metric_help=", ".join(_SFT_EVAL),
        heldout_metrics=("eval_ce", "perplexity", "token_accuracy", "entropy"),
        answer_metrics=("exact_match", "normalized_match"),
        primary_metric="eval_ce", primary_metric_with_answers="normalized_match",
    ),
    TrainingMethod(
        "rerank", "Qwen3-Reranker yes/no relevance on ranking data: query + positive(s)/negatives, triples, "
        "or graded docs",
        formats=RANKING_FORMATS, pipeline_tag="text-ranking", unit="queries", row_shape="query_groups",
        implementation="finetune_mcp.train.rerank.method",
        eval_metrics=("map", "accuracy"), default_eval_metrics=_RANK_DEFAULT,
        metric_pattern=r"(mrr|ndcg|recall|precision)@[1-9][0-9]{0,3}",
        metric_help="mrr@k, ndcg@k, recall@k, precision@k (k from 1 to 9999), map or accuracy",
        heldout_metrics=_RANK_DEFAULT, primary_metric="mrr@10",
        generates=False, loss_head_rows=2,
    ),
)}
METHOD_NAMES = tuple(METHODS)


def get_method(name: str | None) -> TrainingMethod:
    """The method called `name` (None: SFT); a ConfigError naming the known methods otherwise."""
    method = METHODS.get(name or DEFAULT_METHOD)
    if method is None:
        raise ConfigError(f"unknown training method {name!r}; use one of {', '.join(METHODS)}", field="method")
    return method


def method_of(spec: Mapping[str, Any]) -> TrainingMethod:
    """The method of a spec or job config as stored (spec.json says `method`; older ones `task`)."""
    return get_method(spec.get("method") or spec.get("task"))


def method_for_metrics(metrics: list[str] | None) -> TrainingMethod:
    """The method whose rows a metric list scores: the first whose metrics hold them all; the
    reranker when none is given (evaluate_model's default without a job)."""
    names = [m.strip().lower() for m in metrics or []]
    for method in METHODS.values():
        if names and all(method.accepts_metric(n) for n in names):
            return method
    return METHODS["rerank"]


def method_for_format(fmt: str) -> TrainingMethod | None:
    """The first method that trains on rows of `fmt` (for "set method=..." hints)."""
    return next((m for m in METHODS.values() if fmt in m.formats), None)
