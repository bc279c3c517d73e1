"""Tools to start, follow and stop fine-tuning jobs: start_finetune, get_job, list_jobs, cancel_job,
wait_for_job. Each is one call into the JobManager; the result is a `JobView` the agent can act on
(its `hint` says what to do next)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastmcp import Context
from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, Field

from finetune_mcp import kinds
from finetune_mcp.config import EnhancedTrainingConfig, build_config
from finetune_mcp.config.methods import METHOD_HELP, METHOD_NAMES
from finetune_mcp.errors import ConfigError
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.store import Job
from finetune_mcp.model.plan import LOAD_FIELDS
from finetune_mcp.runs.artifacts import RunArtifacts
from finetune_mcp.tools import get_manager
from finetune_mcp.tools.consent import ConsentRecord
from finetune_mcp.tools.spending import start_with_consent

JobId = Annotated[str, Field(description="Job id from start_finetune or list_jobs, e.g. 'ft-3f9a0c1b2d4e'.",
                             max_length=64)]
StateName = Literal["queued", "provisioning", "running", "succeeded", "failed", "cancelled"]


class JobView(BaseModel):
    """A job as the agent sees it."""

    job_id: str
    kind: str = Field("train", description="train (start_finetune) | enhance (enhance_dataset) | evaluate "
                      "(evaluate_model) | sample (sample_model) | experiment (start_experiment) | export (export_model).")
    state: StateName
    hint: str = Field(description="What to do next.")
    model: str
    gguf_source: dict[str, Any] | None = Field(None, description="When `model` is a GGUF file: the file, its "
                                               "quantisation type, and whether its weights were dequantised.")
    dataset: str
    entropy_weighting: bool
    target: str = Field(description="What was asked: auto | local | runpod.")
    backend: str = Field(description="Where it runs: local | runpod.")
    device: str = Field(description="cpu | cuda.")
    placement_reason: str
    run_dir: str
    step: int
    total_steps: int | None
    progress_pct: float | None
    epoch: float | None
    eta_s: float | None = Field(description="Estimated seconds left while running.")
    metrics: dict[str, Any] = Field(description="Latest metrics by name (train/loss, train/entropy_mean, ...).")
    error: str | None = Field(description="Why it failed or was cancelled, with the last log lines.")
    queue_position: int | None
    created_at: str
    started_at: str | None
    ended_at: str | None
    elapsed_s: float | None
    cost_usd: float | None = Field(description="USD spent so far on rented machines (RunPod); for a parallel "
                                   "experiment, its workers' pods together.")
    worker: dict[str, Any] = Field(default_factory=dict, description="pid / pod id of the worker.")
    result: dict[str, Any] | None = Field(
        None, description="Sample jobs, once succeeded: the answers side by side (per model: match rates, "
        "entropy, speed; per prompt: each model's answer, match and reply with high-entropy spans in ⟦…⟧).")
    checkpoints: list[dict[str, Any]] | None = Field(
        None, description="get_job / wait_for_job of a training job: the checkpoints it keeps (step, time, epoch, "
        "train_loss, eval_loss, path); evaluate_model, sample_model and export_model take checkpoint=<step>, "
        "start_finetune resume_from_checkpoint='<job_id>:<step>'.")
    tracking: dict[str, Any] | None = Field(
        None, description="get_job / wait_for_job of a training job: how to open its dashboards (the TensorBoard "
        "command; with report_to, each tracker's local command or URL, its project and run name).")


class StartResult(JobView):
    ignored_fields: list[str] = Field(description="GRANGER config fields accepted but not used.")
    warnings: list[str] = Field(default_factory=list, description="What the start check found worth fixing but "
                                "not refusing (e.g. a GRPO reward that gives one value to every probe completion: "
                                "zero advantage, nothing to learn).")
    consent: ConsentRecord | None = Field(None, description="On RunPod: the GPU type, price and spending cap the "
                                          "user agreed to before the pod was rented, and how.")


class JobList(BaseModel):
    jobs: list[JobView]
    count: int


def job_view(manager: JobManager, job: Job, *, with_result: bool = False) -> JobView:
    """Shape a stored job for the agent; `with_result` adds a succeeded sample job's answers (get_job,
    wait_for_job; list_jobs stays short)."""
    total = job.total_steps if job.total_steps and job.total_steps > 0 else None
    end = job.ended_at if job.ended_at is not None else manager.clock()
    worker: dict[str, Any] = {}
    if job.handle:
        try:
            worker = manager.backend(job.backend).public_info(job.handle)
        except Exception:  # a backend that cannot be loaded here must not hide the job
            worker = {}
    position = manager.queue_position(job)
    return JobView(
        job_id=job.id, kind=kinds.kind_of(job).name, state=job.state.value, hint=kinds.hint(job, position),
        model=job.config.get("model", ""), gguf_source=job.config.get("gguf_source"),
        dataset=job.config.get("dataset", ""),
        entropy_weighting=bool(job.config.get("enable_entropy_weighting")),
        target=job.target, backend=job.backend, device=job.device,
        placement_reason=Placement.from_json(job.placement).reason, run_dir=job.run_dir,
        step=job.step, total_steps=total,
        progress_pct=round(100 * job.step / total, 1) if total else None,
        epoch=job.epoch, eta_s=round(job.eta_s, 1) if job.eta_s is not None else None,
        metrics=job.metrics, error=job.error, queue_position=position,
        created_at=_iso(job.created_at), started_at=_iso(job.started_at), ended_at=_iso(job.ended_at),
        elapsed_s=round(end - job.started_at, 1) if job.started_at else None,
        cost_usd=_cost(manager, job), worker=worker, result=kinds.result_of(job) if with_result else None,
        checkpoints=_checkpoints(job) if with_result else None,
        tracking=_tracking(job) if with_result else None,
    )


def trained_load_fields(job: Job) -> dict[str, Any]:
    """How a job's model loads for a job that reads it (sample, evaluate): the run's `LOAD_FIELDS`, with
    the backend training really used (result.json) over the configured one ("auto" may have chosen hf)."""
    fields = {k: job.config[k] for k in LOAD_FIELDS if k in job.config}
    if job.run_dir and (backend := RunArtifacts(job.run_dir, job.id).trained_backend()):
        fields["backend"] = backend
    return fields


def _tracking(job: Job) -> dict[str, Any] | None:
    """The run's dashboards: TensorBoard's command once it has logs, and what trackers.json records."""
    artifacts = RunArtifacts(job.run_dir, job.id)
    record = artifacts.trackers() or {}
    board = artifacts.run.tensorboard
    if board.is_dir():
        record = {"tensorboard": f"tensorboard --logdir {board} (or tensorboard_screenshot)", **record}
    return record or None


def _cost(manager: JobManager, job: Job) -> float | None:
    """The job's own cost; for a job that stands for others (a parallel experiment's gatherer, which rents
    nothing itself) theirs summed, live: the user agreed to one cap for the whole experiment."""
    if job.cost_usd is not None:
        return job.cost_usd
    children = [manager.get(child).cost_usd for child in Placement.from_json(job.placement).details.get("child_jobs")
                or []]
    costs = [cost for cost in children if cost is not None]
    return round(sum(costs), 4) if costs else None


def _checkpoints(job: Job) -> list[dict[str, Any]] | None:
    kept = RunArtifacts(job.run_dir, job.id).checkpoints()
    return [c.to_dict() for c in kept] or None


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else None


# start_finetune's parameters, shared with preview_training (the same arguments, the same meaning).
ModelArg = Annotated[str, Field(description="Hugging Face model id (e.g. 'unsloth/Qwen3-4B'), a local model folder "
                                "with config.json, or a GGUF file (or a folder holding one: imported once, its "
                                "quantisation reported).", min_length=1, max_length=1000)]
DatasetArg = Annotated[str, Field(description="Local JSONL/JSON/CSV/Parquet file or folder, or a Hugging Face "
                                  "dataset id.", min_length=1, max_length=1000)]
EntropyArg = Annotated[bool, Field(description="Weight each token's loss by the model's uncertainty (entropy-aware "
                                   "training).")]
TargetArg = Annotated[Literal["auto", "local", "runpod"], Field(
    description="auto: a local GPU, else RunPod (RUNPOD_API_KEY), else the CPU for tiny runs.")]
MaxStepsArg = Annotated[int | None, Field(description="Stop after this many optimiser steps (quick trials: 20-100).",
                                          ge=1, le=10_000_000)]
EpochsArg = Annotated[float | None, Field(description="Epochs (default 1).", gt=0, le=100)]
MaxExamplesArg = Annotated[int | None, Field(description="Train on a seeded random subset of this many examples.",
                                             ge=1, le=100_000_000)]
LearningRateArg = Annotated[float | None, Field(description="Default 2e-4.", gt=0, le=1)]
LoraRankArg = Annotated[int | None, Field(description="LoRA rank (default 16).", ge=1, le=1024)]
BatchSizeArg = Annotated[int | None, Field(description="Default 2.", ge=1, le=1024)]
AccumulationArg = Annotated[int | None, Field(description="Default 4.", ge=1, le=1024)]
SeqLengthArg = Annotated[int | None, Field(description="Tokens per example (default 2048).", ge=16, le=131072)]
FourBitArg = Annotated[bool | None, Field(description="QLoRA: 4-bit base model (CUDA only).")]
MethodArg = Annotated[Literal[METHOD_NAMES] | None, Field(description=METHOD_HELP)]
TaskArg = Annotated[Literal[METHOD_NAMES] | None, Field(description="The older name of `method`; give one of them.")]
WeightFnArg = Annotated[str | None, Field(description="linear (default) | relu | exponential | sigmoid | "
                                          "'pkg.module:fn'.", max_length=200)]
NumGpusArg = Annotated[int | Literal["auto"] | None, Field(
    description="GPUs for this run, trained with DDP (default 1); 'auto' = every local GPU with room.")]
ReportToArg = Annotated[list[Literal["tensorboard", "trackio", "wandb", "mlflow"]] | None, Field(
    description="Experiment trackers besides TensorBoard (always on): trackio (local store unless "
    "config_overrides.trackio_space_id), wandb (offline without WANDB_API_KEY on the server), mlflow (a local file "
    "store unless MLFLOW_TRACKING_URI). get_job's `tracking` says how to open each dashboard.", max_length=4)]
ProjectArg = Annotated[str | None, Field(description="Tracker project (default 'finetune-mcp').", max_length=128)]
RunNameArg = Annotated[str | None, Field(description="Run name in the trackers (default: the job id).",
                                         max_length=128)]
OverridesArg = Annotated[dict[str, Any] | None, Field(
    description="Any other EnhancedTrainingConfig field, e.g. {\"lora_alpha\": 64, \"warmup_ratio\": 0.05, "
    "\"dataset_format\": \"messages\", \"entropy\": {\"scale\": 2.0}, \"save_merged\": true}. "
    "The typed parameters above take precedence.")]


def chosen_method(method: str | None, task: str | None) -> str | None:
    """`method`, or `task` (its older name) when only that is given; both must agree."""
    if method and task and method != task:
        raise ConfigError(f"method={method!r} and task={task!r} disagree; `task` is the older name of `method`: "
                          "give one of them", field="method")
    return method or task


def training_config(model: str, dataset: str, entropy_weighting: bool, config_overrides: dict[str, Any] | None,
                    **typed: Any) -> EnhancedTrainingConfig:
    """The config start_finetune (and preview_training) build from their arguments: the overrides,
    then the typed parameters on top; the typed entropy flag turns weighting on, an override may too
    (under any of the config's spellings)."""
    data: dict[str, Any] = dict(config_overrides or {})
    data.update({"model": model, "dataset": dataset, **{k: v for k, v in typed.items() if v is not None}})
    asked = [data.pop(k) for k in ("enable_entropy_weighting", "entropy_weighting", "use_entropy_weighting")
             if k in data]
    data["enable_entropy_weighting"] = asked[-1] if asked and not entropy_weighting else entropy_weighting
    return build_config(data)


@tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True))
async def start_finetune(
    model: ModelArg,
    dataset: DatasetArg,
    ctx: Context,
    entropy_weighting: EntropyArg = False,
    target: TargetArg = "auto",
    max_steps: MaxStepsArg = None,
    num_train_epochs: EpochsArg = None,
    max_examples: MaxExamplesArg = None,
    learning_rate: LearningRateArg = None,
    lora_r: LoraRankArg = None,
    per_device_train_batch_size: BatchSizeArg = None,
    gradient_accumulation_steps: AccumulationArg = None,
    max_seq_length: SeqLengthArg = None,
    load_in_4bit: FourBitArg = None,
    method: MethodArg = None,
    task: TaskArg = None,
    entropy_weight_fn: WeightFnArg = None,
    num_gpus: NumGpusArg = None,
    report_to: ReportToArg = None,
    project: ProjectArg = None,
    run_name: RunNameArg = None,
    config_overrides: OverridesArg = None,
    max_cost_usd: Annotated[float | None, Field(
        description="RunPod only: spending cap in USD; the pod is stopped and the job fails when its cost "
        "reaches it (default FINETUNE_MCP_RUNPOD_MAX_COST_USD, else none).", gt=0, le=100_000)] = None,
    confirm: Annotated[bool, Field(
        description="RunPod only, for clients that cannot show the user a form (no MCP elicitation): true once "
        "you showed the user the GPU type, $/h and cap and they agreed. Clients with elicitation ask the user "
        "directly.")] = False,
    manager: JobManager = Depends(get_manager),
) -> StartResult:
    """Start a LoRA fine-tuning job in the background and return its id at once.

    Checks the model, dataset and numbers first; on any problem it fails with what to fix and
    creates nothing. A job placed on RunPod (target='runpod', or 'auto' without a local GPU) costs
    money: the server first asks the user to agree to the GPU type, $/h and spending cap (MCP
    elicitation), or, for a client that cannot show that form, needs confirm=true after the user
    agreed. Example: start_finetune(model="unsloth/Qwen3-4B", dataset="data/qa.jsonl",
    entropy_weighting=true, max_steps=60) → {"job_id": "ft-3f9a0c1b2d4e", "state": "queued", ...}.
    """
    config = training_config(
        model, dataset, entropy_weighting, config_overrides, max_steps=max_steps,
        num_train_epochs=num_train_epochs, max_examples=max_examples, learning_rate=learning_rate, lora_r=lora_r,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, max_seq_length=max_seq_length,
        load_in_4bit=load_in_4bit, entropy_weight_fn=entropy_weight_fn, num_gpus=num_gpus,
        method=chosen_method(method, task), report_to=report_to, project=project, run_name=run_name,
    )
    started = await start_with_consent(ctx, manager, "train", config, target, confirm=confirm,
                                       max_cost_usd=max_cost_usd)
    if isinstance(started, InputRequiredResult):
        return started  # type: ignore[return-value]  # 2026-07-28: the client asks the user, then calls again
    job, consent = started
    view = job_view(manager, job)
    return StartResult(**view.model_dump(), ignored_fields=config.ignored_fields, consent=consent,
                       warnings=job.config.get("start_warnings") or [])


@tool(annotations=ToolAnnotations(readOnlyHint=True))
async def get_job(job_id: JobId, manager: JobManager = Depends(get_manager)) -> JobView:
    """A job's state (queued|provisioning|running|succeeded|failed|cancelled), step/total, epoch, ETA,
    latest metrics and, when it failed, the error with the last log lines.
    Example: get_job("ft-3f9a0c1b2d4e") → {"state": "running", "step": 40, "total_steps": 60, ...}."""
    return job_view(manager, manager.get(job_id), with_result=True)


@tool(annotations=ToolAnnotations(readOnlyHint=True))
async def list_jobs(
    state: Annotated[StateName | None, Field(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Field(description="At most this many, newest first.", ge=1, le=200)] = 20,
    manager: JobManager = Depends(get_manager),
) -> JobList:
    """Jobs known to this server (also those started before a restart), newest first.
    Example: list_jobs(state="running") → {"jobs": [...], "count": 1}."""
    jobs = [job_view(manager, j) for j in manager.list(state, limit)]
    return JobList(jobs=jobs, count=len(jobs))


@tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True))
async def cancel_job(job_id: JobId, manager: JobManager = Depends(get_manager)) -> JobView:
    """Stop a queued or running job: the worker gets SIGTERM, then SIGKILL after a grace period
    (a RunPod pod is terminated). The partial run (checkpoints, TensorBoard, events) is kept.
    Example: cancel_job("ft-3f9a0c1b2d4e") → {"state": "cancelled", ...}."""
    return job_view(manager, await manager.cancel(job_id))


@tool(annotations=ToolAnnotations(readOnlyHint=True))
async def wait_for_job(
    job_id: JobId,
    ctx: Context,
    timeout_s: Annotated[float, Field(description="Return after this many seconds even if the job "
                                      "is still running.", ge=1, le=600)] = 60,
    manager: JobManager = Depends(get_manager),
) -> JobView:
    """Wait until the job ends or `timeout_s` passes, sending progress notifications (step/total,
    loss) meanwhile; returns the job as get_job does. Call it again to keep following a long job.
    Example: wait_for_job("ft-3f9a0c1b2d4e", timeout_s=120) → {"state": "succeeded", ...}."""

    async def report(job: Job) -> None:
        loss = job.metrics.get("train/loss")
        text = f"{job.state} step {job.step}/{job.total_steps or '?'}"
        if isinstance(loss, float):
            text += f", loss {loss:.4f}"
        await ctx.report_progress(job.step, job.total_steps or None, text)

    return job_view(manager, await manager.wait(job_id, timeout_s, on_progress=report), with_result=True)


TOOLS = (start_finetune, get_job, list_jobs, cancel_job, wait_for_job)
