"""The `evaluate` kind: `EvaluationSpec`, its start check and placement, and `run_evaluation(spec,
run_dir)`, the worker side of an `evaluate_model` job.

An evaluation is a job like training (queued, placed, killable, same run directory and events).
Its spec composes the config groups it reads — the model fields and `DataConfig` (the same split
as training, so "validation" means the rows training held out) — plus its own: no LoRA or
optimiser fields. `check_evaluation_start` and `place_evaluation` are its start checks and
placement (kinds.py).

What it measures is the method's (`evaluate` hook of `train/<method>/method.py`; the names it
accepts are the descriptor's `eval_metrics`):
  rerank  MRR@k, NDCG@k, Recall@k, Precision@k, MAP, accuracy (`rerank/metrics`), from the
          model's P(yes) in the Qwen3-Reranker prompt, on query groups
  sft     loss (mean CE per trained token), perplexity, entropy (mean predictive entropy, nats),
          token_accuracy (share of trained tokens whose most likely token is the target), on examples
With `suite` (heldout, forgetting, all) it compares the base model and the adapter on the same rows
instead (`suites`): get_job's metrics are eval/<suite>/<metric>/{base,tuned,delta}, result.json has
the intervals and verdicts, and a copy lands in the source run's evaluation/ folder for its card.
Results: result.json, an `eval` event whose metrics get_job shows (`rank/eval/mrr@10`, ...,
`eval/loss`, ...), and progress events (step = batches scored) while it runs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from finetune_mcp.config import DataConfig, ModelFields, RerankConfig, RunFields, Settings, format_validation_error
from finetune_mcp.config.methods import METHODS, get_method, method_for_metrics
from finetune_mcp.config.preference import PreferenceRLFields
from finetune_mcp.config.training import ModelSourceField
from finetune_mcp.errors import ConfigError, DatasetError
from finetune_mcp.evaluation import suites
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import library_versions, worker_session

log = logging.getLogger("finetune_mcp.evaluate")


class EvaluationSpec(ModelSourceField, PreferenceRLFields, DataConfig, ModelFields):
    """An evaluate_model job: `model` (+ optional LoRA `adapter`) scored on `dataset`. The method
    settings blocks are there for methods that score with them (GRPO: its rewards), copied from the job."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    kind: Literal["evaluate"] = "evaluate"
    adapter: str | None = Field(None, description="LoRA adapter folder (a run's adapter/) applied to `model`.")
    load_in_4bit: bool = Field(False, description="Load the base in 4 bits (as a QLoRA job trained; copied from "
                               "the job with the backend, so its sample and evaluate jobs load it alike).")
    metrics: list[str] = Field(default_factory=lambda: list(method_for_metrics(None).default_eval_metrics),
                               min_length=1, max_length=20)
    split: Literal["all", "validation"] = Field(
        "all", description="all: every row; validation: the held-out part of the seeded split (as in training).")
    source_job: str | None = Field(None, description="The job whose adapter is evaluated, if any.")
    eval_batch_size: int = Field(16, ge=1, le=1024, description="Prompts (rerank) or examples (sft) per batch "
                                 "(16, as training's before/after scoring: same batches, same scores).")
    rerank_instruction: str | None = RerankConfig.model_fields["rerank_instruction"]
    run_dir: str | None = RunFields.model_fields["run_dir"]
    suite: Literal["heldout", "forgetting", "all"] | None = Field(
        None, description="Compare the base model and the adapter: heldout (the data's rows of `split`), "
        "forgetting (the shipped general set), all (both). None: score the model on the data with `metrics`.")
    source_run_dir: str | None = Field(None, description="The source job's run directory: a suite's results are "
                                       "also written to its evaluation/ folder, for its model card.")
    generation_examples: int = Field(32, ge=0, le=1000, description="Rows with a reference answer that each model "
                                     "answers by greedy generation in a suite (exact / normalized match).")
    max_new_tokens: int = Field(32, ge=1, le=1024, description="Tokens per generated answer in a suite.")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        names = [m.strip().lower() for m in value]
        unknown = [m for m in names if not any(method.accepts_metric(m) for method in METHODS.values())]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; use " + "; ".join(
                f"{method.metric_help} (method={method.name!r})" for method in METHODS.values()))
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _metrics_fit_method(self) -> EvaluationSpec:
        method = get_method(self.method)
        foreign = [m for m in self.metrics if not method.accepts_metric(m)]
        if foreign:
            owner = method_for_metrics(foreign)
            raise ValueError(f"{foreign} are not metrics of method={method.name!r}; for its {method.unit} use "
                             f"{method.metric_help} ({foreign[0]!r} is a metric of method={owner.name!r})")
        if self.suite is not None and not (method.generates and method.row_shape == "sequences"):
            raise ValueError(f"suites compare answers and token losses; method={method.name!r} is scored with "
                             f"{method.metric_help}: leave suite out")
        if self.suite is not None and self.adapter is None:
            raise ValueError("a suite compares a fine-tune with its base: give a job_id or an adapter folder")
        return self

    def suites(self) -> list[str]:
        return list(suites.SUITES) if self.suite == "all" else [self.suite] if self.suite else []


def check_evaluation_start(spec: EvaluationSpec, settings: Settings) -> EvaluationSpec:
    """Local paths made absolute, the model's config and every row of the dataset checked (as for
    training), or the FinetuneError that says what to fix."""
    from finetune_mcp.train.preflight import check_model_and_data

    return check_model_and_data(spec)


def place_evaluation(spec: EvaluationSpec, target: str, settings: Settings) -> Placement:
    """Where the scoring runs, sized for the model with its adapter at `eval_batch_size` (generous:
    the estimate is a training step's, which holds more than a forward pass)."""
    from finetune_mcp.jobs.router import place_model

    return place_model(spec.model, target, settings, load_in_4bit=spec.load_in_4bit,
                       max_seq_length=spec.max_seq_length, batch_size=spec.eval_batch_size)


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
    from finetune_mcp.train.methods import implementation

    method = get_method(spec.method)
    model, tokenizer, device = _load(spec)
    if spec.suite is not None:
        return _run_suites(spec, run, model, tokenizer, device, rows, data.source, started)
    log.info("evaluating %s%s on %d %s of %s (%s) on %s", spec.model, f" + {spec.adapter}" if spec.adapter else "",
             len(rows), method.unit, data.source, spec.split, device)

    def progress(done: int, total: int) -> None:
        run.write_event("progress", step=done, total_steps=total, eta_s=_eta(started, done, total))

    values, tagged, extra = implementation(method).evaluate(spec, model, tokenizer, rows, progress)
    run.write_event("eval", step=0, metrics=tagged, phase="evaluate")
    result = {
        "status": "succeeded",
        "kind": "evaluate",
        "method": spec.method,
        "task": spec.method,  # the name results had before methods were named
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


def _run_suites(spec: EvaluationSpec, run: RunDirectory, model: Any, tokenizer: Any, device: str,
                heldout: list[dict[str, Any]], source: str, started: float) -> dict[str, Any]:
    """Each asked suite, base vs tuned; result.json, the `eval` event, and a copy in the source run."""
    from finetune_mcp.evaluation.general_set import general_rows

    rows = {"heldout": suites.SuiteRows("heldout", heldout, f"the {spec.split} rows of {source}"),
            "forgetting": suites.SuiteRows("forgetting", general_rows(), "the general set shipped with finetune-mcp "
                                           "(64 short-answer questions: arithmetic, capitals, words, counts, "
                                           "sequences)")}
    asked = spec.suites()
    total, done = 4 * len(asked), 0

    def progress(stage: str) -> None:
        nonlocal done
        done += 1
        run.write_event("progress", step=done, total_steps=total, stage=stage, eta_s=_eta(started, done, total))

    results = {}
    for name in asked:
        log.info("suite %s: %d rows, base vs %s on %s", name, len(rows[name].rows), spec.adapter, device)
        results[name] = suites.run_suite(rows[name], model, tokenizer, max_seq_length=spec.max_seq_length,
                                         assistant_only_loss=spec.assistant_only_loss, batch_size=spec.eval_batch_size,
                                         generation_examples=spec.generation_examples,
                                         max_new_tokens=spec.max_new_tokens, progress=progress)
        log.info("suite %s: %s", name, results[name]["summary"])
    named = {k: v for result in results.values() for k, v in suites.tagged(result).items()}
    run.write_event("eval", step=total, metrics=named, phase="evaluate")
    result = {"status": "succeeded", "kind": "evaluate", "method": spec.method, "suite": spec.suite,
              "suites": results, "tagged_metrics": named, "model": spec.model, "adapter": spec.adapter,
              "source_job": spec.source_job,
              "scorer": "finetune-mcp's batched scorer (teacher-forced loss + greedy generation)", "device": device,
              "runtime_s": round(time.time() - started, 2), "versions": library_versions()}
    run.write_json(run.result, result)
    if spec.source_run_dir:  # the card of the evaluated run shows the newest result of each suite
        source_run = RunDirectory(Path(spec.source_run_dir))
        for name, entry in results.items():
            source_run.write_json(source_run.evaluation / f"{name}.json",
                                  {**entry, "job_id": run.root.name, "adapter": spec.adapter, "time": time.time()})
    run.write_event("end", status="succeeded", metrics=named)
    return result


def _load(spec: EvaluationSpec) -> tuple[Any, Any, str]:
    """Model (+ adapter) in eval mode, loaded as a sample job of the same run loads it (`model.plan`),
    with the tokenizer training saved beside the adapter."""
    from finetune_mcp.model.loading import load_model
    from finetune_mcp.model.plan import plan_load

    loaded = load_model(spec.model, plan_load(spec), adapters={"default": spec.adapter} if spec.adapter else None,
                        tokenizer=spec.adapter)
    return loaded.model, loaded.tokenizer, loaded.device


def _eta(started: float, done: int, total: int) -> float | None:
    return round((time.time() - started) / done * (total - done), 1) if done else None
