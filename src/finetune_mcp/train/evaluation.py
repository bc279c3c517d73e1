"""`run_evaluation(spec, run_dir)`: the worker side of an `evaluate_model` job.

An evaluation is a job like training (queued, placed, killable, same run directory and events).
Its spec composes the config groups it reads — the model fields and `DataConfig` (the same split
as training, so "validation" means the rows training held out) — plus its own: no LoRA or
optimiser fields. `check_evaluation_start` and `place_evaluation` are its start checks and
placement (kinds.py).

What it measures, on the dataset's query groups (rerank) or examples (sft):
  rerank  MRR@k, NDCG@k, Recall@k, Precision@k, MAP, accuracy (`ranking_metrics`), from the
          model's P(yes) in the Qwen3-Reranker prompt
  sft     loss (mean CE per trained token), perplexity, entropy (mean predictive entropy, nats),
          token_accuracy (share of trained tokens whose most likely token is the target)
Results: result.json, an `eval` event whose metrics get_job shows (`rank/eval/mrr@10`, ...,
`eval/loss`, ...), and progress events (step = batches scored) while it runs.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from finetune_mcp.config import DataConfig, ModelFields, RerankConfig, RunFields, Settings, format_validation_error
from finetune_mcp.config.training import ModelSourceField
from finetune_mcp.errors import ConfigError, DatasetError
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import library_versions, worker_session
from finetune_mcp.train.rerank.metrics import DEFAULT_METRICS, check_metric_names, rank_tag

log = logging.getLogger("finetune_mcp.evaluate")

TASK_METRICS = ("loss", "perplexity", "entropy", "token_accuracy")
_TASK_TAGS = {"loss": M.EVAL_LOSS, "perplexity": "eval/perplexity", "entropy": M.EVAL_ENTROPY_MEAN,
              "token_accuracy": "eval/token_accuracy"}
ARGMAX_CHUNK = 1024  # tokens per lm_head product when finding the argmax: [1024, V] logits, 0.3 GB at V = 152k bf16


class EvaluationSpec(ModelSourceField, DataConfig, ModelFields):
    """An evaluate_model job: `model` (+ optional LoRA `adapter`) scored on `dataset`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    kind: Literal["evaluate"] = "evaluate"
    adapter: str | None = Field(None, description="LoRA adapter folder (a run's adapter/) applied to `model`.")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS), min_length=1, max_length=20)
    split: Literal["all", "validation"] = Field(
        "all", description="all: every row; validation: the held-out part of the seeded split (as in training).")
    source_job: str | None = Field(None, description="The job whose adapter is evaluated, if any.")
    eval_batch_size: int = Field(16, ge=1, le=1024, description="Prompts (rerank) or examples (sft) per batch "
                                 "(16, as training's before/after scoring: same batches, same scores).")
    rerank_instruction: str | None = RerankConfig.model_fields["rerank_instruction"]
    run_dir: str | None = RunFields.model_fields["run_dir"]

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        names = [m.strip().lower() for m in value]
        ranking = [m for m in names if m not in TASK_METRICS]
        if ranking:
            try:
                check_metric_names(ranking)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("metrics: ")) from None
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> EvaluationSpec:
        task_metrics = [m for m in self.metrics if m in TASK_METRICS]
        if self.task == "rerank" and task_metrics:
            raise ValueError(f"{task_metrics} are metrics of task='sft' data; for ranking data use mrr@k, ndcg@k, "
                             "recall@k, precision@k, map or accuracy")
        if self.task == "sft" and len(task_metrics) < len(self.metrics):
            raise ValueError(f"ranking metrics need task='rerank' (ranking data); for task='sft' use "
                             f"{', '.join(TASK_METRICS)}")
        return self


def metrics_task(metrics: list[str] | None) -> str:
    """The task a metric list implies: sft for loss/perplexity/entropy, rerank otherwise (the default)."""
    return "sft" if metrics and all(m.strip().lower() in TASK_METRICS for m in metrics) else "rerank"


def check_evaluation_start(spec: EvaluationSpec, settings: Settings) -> EvaluationSpec:
    """Local paths made absolute, the model's config and every row of the dataset checked (as for
    training), or the FinetuneError that says what to fix."""
    from finetune_mcp.train.preflight import check_model_and_data

    return check_model_and_data(spec)


def place_evaluation(spec: EvaluationSpec, target: str, settings: Settings) -> Placement:
    """Where the scoring runs, sized for the model with its adapter at `eval_batch_size` (generous:
    the estimate is a training step's, which holds more than a forward pass)."""
    from finetune_mcp.jobs.router import place_model

    return place_model(spec.model, target, settings, max_seq_length=spec.max_seq_length,
                       batch_size=spec.eval_batch_size)


def load_evaluation_spec(spec_path: Path) -> EvaluationSpec:
    """An evaluate_model job's spec.json; a ConfigError that says what is wrong otherwise."""
    try:
        return EvaluationSpec.model_validate(json.loads(spec_path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        message = format_validation_error(exc, "evaluation", "evaluate_model") if isinstance(exc, ValidationError) \
            else str(exc)
        raise ConfigError(message) from None


def run_evaluation(spec: EvaluationSpec, run_dir: str | Path) -> dict[str, Any]:
    """Load, score, write result.json and the events; returns the result."""
    with worker_session(RunDirectory(Path(run_dir)), spec, "evaluation") as run:
        return _evaluate(spec, run)


def _evaluate(spec: EvaluationSpec, run: RunDirectory) -> dict[str, Any]:
    from finetune_mcp.data.loader import load_examples

    started = time.time()
    data = load_examples(spec.data)
    rows = data.validation if spec.split == "validation" else data.train + data.validation
    if not rows:
        raise DatasetError("the validation split is empty; use split='all' or a larger validation_split",
                           path=data.source)
    model, tokenizer, device = _load(spec)
    log.info("evaluating %s%s on %d %s of %s (%s) on %s", spec.model, f" + {spec.adapter}" if spec.adapter else "",
             len(rows), "queries" if spec.task == "rerank" else "examples", data.source, spec.split, device)

    def progress(done: int, total: int) -> None:
        run.write_event("progress", step=done, total_steps=total, eta_s=_eta(started, done, total))

    if spec.task == "rerank":
        values, extra = _rank(spec, model, tokenizer, rows, progress)
        tagged = {rank_tag("eval", k): v for k, v in values.items()}
    else:
        values, extra = _task_metrics(spec, model, tokenizer, rows, progress)
        tagged = {_TASK_TAGS[k]: v for k, v in values.items()}
    run.write_event("eval", step=0, metrics=tagged, phase="evaluate")
    result = {
        "status": "succeeded",
        "kind": "evaluate",
        "task": spec.task,
        "metrics": values,
        "tagged_metrics": tagged,
        "model": spec.model,
        "adapter": spec.adapter,
        "source_job": spec.source_job,
        "dataset": {"source": data.source, "format": data.format, "split": spec.split},
        "num_examples": len(rows),
        **extra,
        "device": device,
        "runtime_s": round(time.time() - started, 2),
        "versions": library_versions(),
    }
    run.write_json(run.result, result)
    run.write_event("end", status="succeeded", metrics=tagged)
    log.info("done in %.1fs: %s", result["runtime_s"], ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    return result


def _load(spec: EvaluationSpec) -> tuple[Any, Any, str]:
    """Model (+ adapter) in eval mode on the GPU when there is one (bf16), else the CPU (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune_mcp.train.model import _check_model_reachable, _ensure_pad_token

    _check_model_reachable(spec.model)
    cuda = torch.cuda.is_available()
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(spec.model, dtype=dtype).to("cuda" if cuda else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(spec.adapter or spec.model)
    if spec.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.adapter)
    _ensure_pad_token(tokenizer)
    return model.eval(), tokenizer, torch.cuda.get_device_name(0) if cuda else "cpu"


def _rank(spec, model, tokenizer, groups, progress) -> tuple[dict[str, float], dict[str, Any]]:
    from finetune_mcp.train.rerank.metrics import ScoredGroup, compute_metrics
    from finetune_mcp.train.rerank.prompt import RerankPrompt, score_groups

    prompt = RerankPrompt(tokenizer, spec.max_seq_length, spec.rerank_instruction)
    scores = score_groups(model, prompt, groups, batch_size=spec.eval_batch_size, on_batch=progress)
    values = compute_metrics([ScoredGroup(s, g["relevance"]) for s, g in zip(scores, groups, strict=True)],
                             spec.metrics)
    return values, {"num_documents": sum(len(g["docs"]) for g in groups), "truncated_pairs": prompt.truncated}


def _task_metrics(spec, model, tokenizer, examples, progress) -> tuple[dict[str, float], dict[str, Any]]:
    values = score_examples(model, tokenizer, examples, max_seq_length=spec.max_seq_length,
                            assistant_only_loss=spec.assistant_only_loss, batch_size=spec.eval_batch_size,
                            on_batch=progress)
    return {k: values[k] for k in spec.metrics}, {"tokens": values["tokens"]}


def score_examples(model: Any, tokenizer: Any, examples: list[dict[str, Any]], *, max_seq_length: int,
                   assistant_only_loss: bool = True, batch_size: int = 16,
                   on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Mean CE per trained token (as training's eval loss, unweighted), its exp (perplexity), the mean
    predictive entropy and the token accuracy (argmax = target) of `model` on normalised examples,
    over the tokens training would put loss on. Shared by `evaluate_model` and experiments, so both
    score the same way. `tokens` is how many tokens were scored."""
    import torch

    from finetune_mcp.data.chat_tokens import tokenize_examples
    from finetune_mcp.kernels import linear_entropy_ce
    from finetune_mcp.train.rerank.prompt import pad_right
    from finetune_mcp.train.sft_trainer import IGNORE_INDEX, shift_labels, unwrap_causal_lm

    dataset = tokenize_examples(examples, tokenizer, max_seq_length, assistant_only_loss)
    causal_lm = unwrap_causal_lm(model)
    device = next(causal_lm.parameters()).device
    head = causal_lm.lm_head
    ce_sum = entropy_sum = 0.0
    tokens = correct = 0
    batches = math.ceil(len(dataset) / batch_size)
    with torch.no_grad():
        for index, start in enumerate(range(0, len(dataset), batch_size), 1):
            rows = dataset[start : start + batch_size]
            ids, mask = pad_right(rows["input_ids"], tokenizer.pad_token_id or 0, device)
            labels, _ = pad_right(rows["labels"], IGNORE_INDEX, device)
            hidden = causal_lm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            targets = shift_labels(labels, None).reshape(-1)
            valid = targets != IGNORE_INDEX
            scored, wanted = hidden[:, :-1].reshape(-1, hidden.shape[-1])[valid], targets[valid]  # [N, d], [N]
            out = linear_entropy_ce(scored, head.weight, wanted, weight_fn=None, bias=head.bias)
            ce_sum += float(out.ce.sum())
            entropy_sum += float(out.entropy.sum())
            for chunk in range(0, scored.shape[0], ARGMAX_CHUNK):  # never [N, V] logits at once
                predicted = head(scored[chunk : chunk + ARGMAX_CHUNK]).argmax(-1)  # [n]
                correct += int((predicted == wanted[chunk : chunk + ARGMAX_CHUNK]).sum())
            tokens += int(valid.sum())
            if on_batch is not None:
                on_batch(index, batches)
    if not tokens:
        raise DatasetError("no example has a token to score (every label is masked); check the data's assistant "
                           "turns or set assistant_only_loss=false")
    loss = ce_sum / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "entropy": entropy_sum / tokens,
            "token_accuracy": correct / tokens, "tokens": tokens}


def _eta(started: float, done: int, total: int) -> float | None:
    return round((time.time() - started) / done * (total - done), 1) if done else None
