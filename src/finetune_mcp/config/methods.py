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
PAIRED_PREFERENCE_FORMATS = ("preference", "implicit_preference")
PREFERENCE_FORMATS = (*PAIRED_PREFERENCE_FORMATS, "unpaired_preference")  # KTO: unpaired rows, or pairs split
PROMPT_ONLY_FORMATS = ("prompt_only",)


@dataclass(frozen=True)
class MemoryExtras:
    """What a method adds to an SFT-shaped run's memory (`jobs.vram.estimate_memory` adds it).

    sequences_per_row: sequences one row puts through the model per step (a preference pair: 2);
    reference_copy: a frozen second copy of the weights (a reference model that is not simply the
    base with the adapter switched off); reference_forward: the reference's no-grad pass each step;
    generations: micro-batches of sequences generated during a step before they train (their KV
    cache), 0 for methods that do not generate while training.
    """

    sequences_per_row: int = 1
    reference_copy: bool = False
    generations: int = 0  # micro-batches of sequences generated before they train (their KV cache)
    reference_forward: bool = False  # a no-grad pass of the reference (the base, adapter off) each step


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
    # prompt-completion / text rows with a label mask), "query_groups" (a query and its documents),
    # "pairs" (a prompt and its chosen / rejected replies) or "prompts" (a prompt the model answers)
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
    # the config block of its own settings (`config.preference`: "dpo", "grpo", ...); None: none. The
    # block may refine `memory` from its values (`memory_extras`), and evaluate_model copies it from the job
    settings_block: str | None = None
    settings_help: str = ""  # its settings' safe defaults, for tool descriptions
    logged_metrics: tuple[str, ...] = ()  # its TRL trainer's own log keys ("x/": a prefix), kept as train/, eval/
    card_text: str = ""  # how the model card names the training ("" : supervised fine-tuning, with its loss)

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
# preference methods on held-out pairs: share of pairs with log p(chosen) > log p(rejected), the mean
# difference, and the two means (`train.preference_scoring`); GRPO: greedy replies scored by the run's rewards
_PAIR_EVAL = ("pref_accuracy", "logp_margin", "logp_chosen", "logp_rejected")
_GRPO_EVAL = ("mean_reward", "reward_std")
_PREFERENCE_LOGS = ("rewards/", "logps/")  # what TRL's DPO/KTO/ORPO trainers log

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
    TrainingMethod(
        "dpo", "Direct Preference Optimisation on pairs {prompt, chosen, rejected} (or {chosen, rejected} sharing "
        "the prompt; strings or message lists)",
        formats=PAIRED_PREFERENCE_FORMATS, pipeline_tag="text-generation", unit="pairs", row_shape="pairs",
        implementation="finetune_mcp.train.dpo.method",
        eval_metrics=_PAIR_EVAL, default_eval_metrics=_PAIR_EVAL, metric_help=", ".join(_PAIR_EVAL),
        heldout_metrics=_PAIR_EVAL, primary_metric="pref_accuracy",
        needs_reference_model=True, memory=MemoryExtras(sequences_per_row=2, reference_forward=True),
        card_text="Direct Preference Optimisation (TRL `DPOTrainer`)",
        settings_block="dpo", settings_help="{beta: 0.1, loss_type: ['sigmoid'], loss_weights: null, "
        "label_smoothing: 0}", logged_metrics=_PREFERENCE_LOGS,
    ),
    TrainingMethod(
        "kto", "Kahneman-Tversky Optimisation on unpaired {prompt, completion, label: true|false} rows (pairs are "
        "split into a desirable and an undesirable row)",
        formats=PREFERENCE_FORMATS, pipeline_tag="text-generation", unit="rows", row_shape="pairs",
        implementation="finetune_mcp.train.kto.method",
        eval_metrics=_PAIR_EVAL, default_eval_metrics=_PAIR_EVAL, metric_help=", ".join(_PAIR_EVAL),
        heldout_metrics=_PAIR_EVAL, primary_metric="logp_margin",
        needs_reference_model=True, memory=MemoryExtras(sequences_per_row=2, reference_forward=True),
        card_text="Kahneman-Tversky Optimisation (TRL `KTOTrainer`)",
        settings_block="kto", settings_help="{beta: 0.1, desirable_weight: 1, undesirable_weight: 1, "
        "loss_type: 'kto'}", logged_metrics=(*_PREFERENCE_LOGS, "kl"),
    ),
    TrainingMethod(
        "orpo", "Odds-Ratio Preference Optimisation (SFT + odds-ratio term, no reference model) on the rows dpo "
        "takes",
        formats=PAIRED_PREFERENCE_FORMATS, pipeline_tag="text-generation", unit="pairs", row_shape="pairs",
        implementation="finetune_mcp.train.orpo.method",
        eval_metrics=_PAIR_EVAL, default_eval_metrics=_PAIR_EVAL, metric_help=", ".join(_PAIR_EVAL),
        heldout_metrics=_PAIR_EVAL, primary_metric="pref_accuracy",
        memory=MemoryExtras(sequences_per_row=2),
        card_text="Odds-Ratio Preference Optimisation (TRL `ORPOTrainer`)",
        settings_block="orpo", settings_help="{beta: 0.1 (λ of the odds-ratio term)}",
        logged_metrics=(*_PREFERENCE_LOGS, "nll_loss", "log_odds_ratio"),
    ),
    TrainingMethod(
        "grpo", "Group Relative Policy Optimisation with verifiable rewards on prompt-only rows {prompt, answer, "
        "...} (every other column reaches the rewards); optionally entropy-aware",
        formats=PROMPT_ONLY_FORMATS, pipeline_tag="text-generation", unit="prompts", row_shape="prompts",
        implementation="finetune_mcp.train.grpo.method",
        eval_metrics=_GRPO_EVAL, default_eval_metrics=_GRPO_EVAL, metric_help=", ".join(_GRPO_EVAL),
        heldout_metrics=_GRPO_EVAL, primary_metric="mean_reward",
        memory=MemoryExtras(generations=1),  # the block sets the count (num_generations)
        card_text="Group Relative Policy Optimisation with verifiable rewards (TRL `GRPOTrainer`, the project's fused loss)",
        settings_block="grpo", settings_help="{num_generations: 4, max_completion_length: 256, beta: 0 (no "
        "reference model), loss_type: 'dapo', scale_rewards: 'group', top_entropy_quantile: 1.0 (0.2: the policy "
        "term trains only the top 20 % entropy tokens), entropy_bonus: 0, rewards: [{function: exact|normalized|"
        "numeric (column, tolerance) | regex (pattern) | think_format | length_penalty (target_length) | "
        "'pkg.mod:fn', weight: 1}]}; per_device_train_batch_size × GPUs × gradient_accumulation_steps must be "
        "divisible by num_generations",
        logged_metrics=("reward", "reward_std", "rewards/", "frac_reward_zero_std", "kl", "completions/mean_length",
                        "entropy", "entropy/"),
    ),
)}
METHOD_NAMES = tuple(METHODS)
METHOD_HELP = "Training method (default sft; `task` is its older name). " + " ".join(
    f"{m.name}: {m.summary}." + (f" Settings in config_overrides[{m.settings_block!r}], safe defaults "
                                 f"{m.settings_help}." if m.settings_block else "")
    for m in METHODS.values())


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
