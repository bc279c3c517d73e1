"""The `evaluate_model` tool: score a finished job's adapter, or any model, on a dataset, as a job.

The job runs like training (queued, running, cancellable; get_job, list_jobs, wait_for_job and
cancel_job work on it) on this machine (a local GPU, else the CPU), and its results arrive in
get_job's `metrics`: `rank/eval/mrr@10`, ... for ranking data, `eval/loss`, `eval/perplexity`,
`eval/entropy_mean`, `eval/token_accuracy` for chat/instruction data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastmcp import Context
from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import Field, ValidationError

from finetune_mcp import kinds
from finetune_mcp.config import DataConfig, LocalPath, format_validation_error
from finetune_mcp.config.methods import method_for_metrics, method_of
from finetune_mcp.errors import ConfigError
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.model.plan import LOAD_FIELDS
from finetune_mcp.runs.artifacts import RunArtifacts
from finetune_mcp.tools import get_manager
from finetune_mcp.tools.artifacts import CheckpointArg
from finetune_mcp.tools.roots import allowed_roots
from finetune_mcp.tools.training import JobView, job_view, trained_load_fields

# Fields an evaluation of a job's adapter takes from that job's config, so the data is read, split and
# prompted exactly as in training: every field of the data group (read from DataConfig, not retyped,
# so a new data field such as split_seed cannot be missed) and the reranker's prompt; and the model is
# loaded as training (and a sample job of the job) loads it: `model.plan.LOAD_FIELDS`.
# (dataset_files is the start check's record of one job's files: each job's own check writes it anew)
_FROM_JOB = tuple(dict.fromkeys((*(name for name in DataConfig.model_fields if name != "dataset_files"),
                                 "rerank_instruction", *LOAD_FIELDS)))


class EvaluateStartResult(JobView):
    evaluated: str = Field(description="What is scored: the base model, plus the adapter when there is one.")
    metrics_asked: list[str]
    split: str = Field(description="all rows, or the held-out validation split of the seeded split.")
    suite: str | None = Field(None, description="heldout | forgetting | all: base vs fine-tune, when asked.")


def evaluation_data(job_id: str | None, model: str | None, dataset: str | None, metrics: list[str] | None,
                    split: str, job_config: dict[str, Any] | None, adapter: str | None) -> dict[str, Any]:
    """The EvaluationSpec fields for a request (pure: the tool and the tests share it)."""
    data: dict[str, Any] = {"kind": "evaluate", "source_job": job_id, "adapter": adapter}
    if job_config is not None:
        data.update({k: job_config[k] for k in _FROM_JOB if k in job_config})
        method = method_of(job_config)
        data["method"] = method.name  # spec.json says `method`; older ones `task`
        if method.settings_block and method.settings_block in job_config:  # scored with the job's own settings
            data[method.settings_block] = job_config[method.settings_block]
        data["model"] = job_config["model"]
        if dataset is not None:  # another dataset: all of it, unless asked otherwise
            data["dataset"] = dataset
            data.pop("max_examples", None)
        data["split"] = ("validation" if dataset is None else "all") if split == "auto" else split
    else:
        data.update(model=model, dataset=dataset, method=method_for_metrics(metrics).name,
                    split="all" if split == "auto" else split)
    data["metrics"] = metrics or list(method_of(data).default_eval_metrics)
    return data


def _adapter_base(folder: Path) -> str:
    """The base model an adapter folder names in adapter_config.json."""
    try:
        base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{folder} has an unreadable adapter_config.json ({exc}); point `model` at a base model "
                          "or a run's adapter/ folder", field="model") from None
    return str(base)


@tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False))
async def evaluate_model(
    ctx: Context,
    job_id: Annotated[str | None, Field(description="A succeeded start_finetune job: its adapter on its base "
                                        "model is scored (default data: that job's held-out validation "
                                        "queries/examples).", max_length=64)] = None,
    model: Annotated[str | None, Field(description="Instead of job_id: a Hugging Face model id or local folder, "
                                       "or a LoRA adapter folder (its base model is loaded under it).",
                                       max_length=1000)] = None,
    dataset: Annotated[str | None, Field(description="Local JSONL/JSON/CSV/Parquet file or folder, or a Hugging "
                                         "Face dataset id (required with `model`).", max_length=1000)] = None,
    metrics: Annotated[list[str] | None, Field(
        description="Ranking data: mrr@k, ndcg@k, recall@k, precision@k, map, accuracy (default mrr@10, "
        "ndcg@10, recall@5, accuracy). Chat/instruction data: loss, perplexity, entropy, token_accuracy.",
        max_length=20)] = None,
    split: Annotated[Literal["auto", "all", "validation"], Field(
        description="all rows, or the validation part of the seeded split used in training; auto = a job's "
        "validation split when no dataset is given, else all.")] = "auto",
    max_examples: Annotated[int | None, Field(description="Score a seeded random subset of this many queries "
                                              "(or examples).", ge=1, le=100_000_000)] = None,
    batch_size: Annotated[int, Field(description="Prompts per forward pass.", ge=1, le=1024)] = 16,
    checkpoint: CheckpointArg = None,
    suite: Annotated[Literal["heldout", "forgetting", "all"] | None, Field(
        description="Compare the fine-tune with its base model instead: heldout (the job's held-out rows: did "
        "it learn?), forgetting (a shipped general set of 64 short questions: did it keep what the data did "
        "not teach?), all (both). Loss and token accuracy teacher-forced, exact/normalized match of greedy "
        "answers, each difference with a 95 % interval; the results also reach the job's model card.")] = None,
    config_overrides: Annotated[dict[str, Any] | None, Field(
        description="Other data-reading fields, e.g. {\"max_seq_length\": 1024, \"rerank_instruction\": "
        "\"Given a question, find the passage that answers it\", \"dataset_format\": \"triples\"}.")] = None,
    manager: JobManager = Depends(get_manager),
) -> EvaluateStartResult:
    """Score a model on a dataset in the background and return the job at once; the results arrive in
    get_job(job_id).metrics when it succeeds (follow it with wait_for_job).

    Rerankers (method='rerank' jobs, or ranking metrics) are scored as Qwen3-Reranker does: P("yes") for
    each (query, document), ranked per query. Example: evaluate_model(job_id="ft-3f9a0c1b2d4e") →
    {"job_id": "ft-0b1c2d3e4f5a", "kind": "evaluate", "state": "queued", ...}; later get_job →
    {"metrics": {"rank/eval/mrr@10": 0.91, "rank/eval/ndcg@10": 0.93, ...}}.
    """
    from finetune_mcp.evaluation.job import EvaluationSpec

    roots = await allowed_roots(ctx)
    if isinstance(roots, InputRequiredResult):
        return roots  # type: ignore[return-value]  # 2026-07-28: the client sends its roots, then calls again
    if (job_id is None) == (model is None):
        raise ConfigError("give exactly one of job_id (a succeeded fine-tuning job) or model (a model id, "
                          "folder or adapter folder)", field="job_id")
    job_config = adapter = source_run_dir = None
    if job_id is not None:
        source = kinds.succeeded_job(manager, job_id, "evaluating its adapter")
        adapter = str(RunArtifacts(source.run_dir, source.id).adapter(checkpoint))
        job_config = {**source.config, **trained_load_fields(source)}  # loaded as training really loaded it
        source_run_dir = source.run_dir
    else:
        if checkpoint is not None:
            raise ConfigError("checkpoint= names a checkpoint of a job; give job_id with it", field="checkpoint")
        if dataset is None:
            raise ConfigError("with `model`, give the `dataset` to score it on", field="dataset")
        roots.check([LocalPath("model", model, hub_id_ok=True)])  # before its adapter_config.json is read
        folder = Path(model).expanduser()
        if (folder / "adapter_config.json").is_file():
            adapter, model = str(folder.resolve()), _adapter_base(folder)
    data = evaluation_data(job_id, model, dataset, metrics, split, job_config, adapter)
    if suite is not None:
        data.update(suite=suite, source_run_dir=source_run_dir)
    fixed = {k: data[k] for k in ("kind", "model", "adapter", "source_job")}
    data.update(config_overrides or {})
    data.update(fixed, eval_batch_size=batch_size)
    if max_examples is not None:
        data["max_examples"] = max_examples
    try:
        spec = EvaluationSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "evaluation", "evaluate_model")) from None
    job = await kinds.start_job(manager, "evaluate", spec, "local", roots=roots)
    evaluated = spec.model + (f" + adapter {spec.adapter}" if spec.adapter else "")
    return EvaluateStartResult(**job_view(manager, job).model_dump(), evaluated=evaluated,
                               metrics_asked=spec.metrics if spec.suite is None else [], split=spec.split,
                               suite=spec.suite)


TOOLS = (evaluate_model,)
