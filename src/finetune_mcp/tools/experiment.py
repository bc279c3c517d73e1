"""Experiments: does a loss setting help, and by how much, beyond what seeds alone change?

`start_experiment` queues one `experiment` job that trains every arm (a named loss setting) with
every seed, one full training run after another, all other settings shared; `get_experiment` reads
its table: each run's held-out metrics, each arm's mean ± std and every seed's value, each arm
against the baseline (paired difference, 95 % bootstrap interval, exact sign-flip p), a verdict
that says only what those support, and which arm to use (or that it cannot tell). get_job,
wait_for_job and cancel_job work on the job like on any other (cancel keeps the finished runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastmcp import Context
from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, Field

from finetune_mcp import kinds
from finetune_mcp.errors import JobError
from finetune_mcp.experiment.spec import DEFAULT_SEEDS, build_experiment_spec
from finetune_mcp.experiment.workflow import experiment_paths
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.tools import get_manager
from finetune_mcp.tools.spending import start_with_consent
from finetune_mcp.tools.training import JobId, JobView, MethodArg, TaskArg, chosen_method, job_view

ArmArg = str | dict[str, Any]


class ArmView(BaseModel):
    name: str
    loss: str = Field(description="The loss in words.")
    enable_entropy_weighting: bool
    entropy: dict[str, Any] = Field(description="EntropyConfig fields this arm sets.")


class ExperimentStartResult(JobView):
    arms: list[ArmView]
    seeds: list[int]
    baseline: str
    runs: int = Field(description="Training runs: arms × seeds (one after another, or spread over `workers`).")
    workers: list[str] = Field(default_factory=list, description="In parallel: the job of each worker (its share of "
                               "the runs); cancel_job on the experiment stops them all.")


class ExperimentResult(BaseModel):
    """An experiment job and its table (empty until the first run finishes)."""

    job_id: str
    state: str
    hint: str
    status: str = Field(description="The table's status: pending (no run started), running, succeeded, cancelled, failed.")
    runs_total: int
    runs_finished: int
    arms: list[dict[str, Any]]
    baseline: str
    seeds: list[int]
    primary_metric: str | None
    verdict: str | None = Field(description="One line per arm on the primary metric: only what the interval and "
                                "the exact test support.")
    recommendation: dict[str, Any] | None = Field(description="{'arm': the arm to use, or null when it cannot tell; "
                                                  "'reason': why}.")
    summary: dict[str, Any] = Field(description="metric → arm → {n, mean, std, values: seed → value}.")
    comparisons: list[dict[str, Any]] = Field(description="Each arm against the baseline per metric: paired "
                                              "differences per seed, mean, 95 % CI, p-value, verdict.")
    metrics: list[dict[str, Any]] = Field(description="The metrics: name, label, which way is better.")
    runs: list[dict[str, Any]] = Field(description="Every run: name, arm, seed, status, run_dir, metrics, timing.")
    heldout: dict[str, Any] = Field(description="The rows every run is scored on; with a retain_dataset, `retain`: "
                                    "its rows, fingerprint and the base model's CE on them (base_ce).")
    overhead: dict[str, Any] = Field(description="Seconds each run cost beyond its training steps.")
    report: str | None = Field(description="experiment/report.md (markdown with the tables).")
    plot: str | None = Field(description="experiment/plot.png: the primary metric per arm and seed, and the intervals.")
    run_dir: str


def experiment_data(model: str, dataset: str, arms: list[ArmArg] | None, seeds: int | list[int],
                    typed: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The ExperimentSpec fields of a request (pure; the tool and the CLI share it)."""
    data: dict[str, Any] = dict(overrides or {})
    data.update({k: v for k, v in typed.items() if v is not None})
    data.update(model=model, dataset=dataset, seeds=seeds, kind="experiment")
    if arms is not None:
        data["arms"] = arms
    return data


def experiment_result(manager, job_id: str) -> ExperimentResult:
    """The job and its table (shared by get_experiment and the CLI)."""
    job = manager.get(job_id)
    if kinds.kind_of(job).name != "experiment":
        raise JobError(f"job {job_id} is a {kinds.kind_of(job).label} job, not an experiment; get_experiment reads "
                       "jobs started by start_experiment (use get_job for this one)", job_id=job_id)
    run = RunDirectory(Path(job.run_dir))
    paths = experiment_paths(run)
    spec = job.config
    table: dict[str, Any] = {}
    if paths["table"].is_file():
        table = json.loads(paths["table"].read_text(encoding="utf-8"))
    view = job_view(manager, job)
    status = table.get("status", "pending")
    if job.state.terminal and status in ("pending", "running"):  # the worker died before it could say so
        status = job.state.value
    arms = table.get("arms") or [{"name": a["name"], "enable_entropy_weighting": a.get("enable_entropy_weighting"),
                                  "entropy": a.get("entropy")} for a in spec.get("arms", [])]
    return ExperimentResult(
        job_id=job.id, state=job.state.value, hint=view.hint, status=status,
        runs_total=table.get("runs_total", len(spec.get("arms", [])) * len(spec.get("seeds", []))),
        runs_finished=table.get("runs_finished", 0), arms=arms,
        baseline=table.get("baseline") or spec.get("baseline") or (arms[0]["name"] if arms else ""),
        seeds=table.get("seeds", spec.get("seeds", [])), primary_metric=table.get("primary_metric"),
        verdict=table.get("verdict"), recommendation=table.get("recommendation"),
        summary=table.get("summary", {}), comparisons=table.get("comparisons", []), metrics=table.get("metrics", []),
        runs=table.get("runs", []), heldout=table.get("heldout", {}), overhead=table.get("overhead", {}),
        report=str(paths["report"]) if paths["report"].is_file() else None,
        plot=str(paths["plot"]) if paths["plot"].is_file() else None, run_dir=job.run_dir,
    )


@tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True))
async def start_experiment(
    model: Annotated[str, Field(description="Hugging Face model id or local model folder (as start_finetune).",
                                min_length=1, max_length=1000)],
    dataset: Annotated[str, Field(description="Local file/folder or Hugging Face dataset id (as start_finetune).",
                                  min_length=1, max_length=1000)],
    ctx: Context,
    arms: Annotated[list[ArmArg] | None, Field(
        description="The loss settings to compare (2-8). A name: 'standard' (plain CE), 'entropy' (default "
        "entropy weighting, w = 1 + H/log V) or a built-in weight function (linear, relu, exponential, sigmoid, "
        "and any newer built-in); or an object {\"name\": \"lin2\", \"enable_entropy_weighting\": true, "
        "\"entropy\": {\"function\": \"linear\", \"scale\": 2}}. Default ['standard', 'entropy'].",
        max_length=8)] = None,
    seeds: Annotated[int | list[int], Field(
        description="Seeds per arm (a count from `seed` on, or the list). Each arm × seed is one training run.")
    ] = DEFAULT_SEEDS,
    baseline: Annotated[str | None, Field(description="The arm the others are compared with (default: the first).",
                                          max_length=40)] = None,
    max_steps: Annotated[int | None, Field(description="Optimiser steps per run (quick experiments: 20-200).",
                                           ge=1, le=10_000_000)] = None,
    eval_dataset: Annotated[str | None, Field(
        description="Held-out rows to score every run on (all of them); default: the validation split of "
        "`dataset`, the same rows for every run.", max_length=1000)] = None,
    retain_dataset: Annotated[str | None, Field(
        description="Forgetting check (sft): rows whose behaviour the training should not change, e.g. the base "
        "model's own replies to everyday prompts. Every run reports retain_ce_rise: its CE on them minus the base "
        "model's (nats/token; positive = forgetting).", max_length=1000)] = None,
    primary_metric: Annotated[str | None, Field(
        description="What the verdict is about: eval_ce, perplexity, token_accuracy, exact_match, normalized_match "
        "(sft), mrr@10, ndcg@10, recall@5, accuracy (rerank). Default: normalized_match when the held-out rows have "
        "answers to check, else eval_ce; mrr@10 for rerank.", max_length=40)] = None,
    generation_examples: Annotated[int | None, Field(
        description="Held-out rows answered by greedy generation for exact/normalised match (default 100, 0: none).",
        ge=0, le=100_000)] = None,
    target: Annotated[Literal["auto", "local", "runpod"], Field(
        description="auto/local: local GPUs, else the CPU; runpod: RunPod pods (one per parallel worker; the user "
        "agrees to the whole experiment's price and cap first).")] = "auto",
    parallel: Annotated[int | Literal["auto"] | None, Field(
        description="Runs trained at once (default 1: one after another in one worker): one worker per free "
        "local GPU, per CPU slot (FINETUNE_MCP_MAX_CPU_JOBS) or per RunPod pod, each keeping its base model "
        "loaded for its runs; 'auto' = as many as are free. Same table as serial: seeds and data do not change.")
    ] = None,
    method: MethodArg = None,
    task: TaskArg = None,
    max_cost_usd: Annotated[float | None, Field(
        description="RunPod only: spending cap in USD for the whole experiment (each pod gets an equal share; a "
        "pod at its share is stopped and the experiment fails).", gt=0, le=100_000)] = None,
    confirm: Annotated[bool, Field(
        description="RunPod only, for clients without MCP elicitation: true once the user agreed to the pods, "
        "$/h and cap you showed them.")] = False,
    config_overrides: Annotated[dict[str, Any] | None, Field(
        description="Any other training setting shared by every run (EnhancedTrainingConfig fields, e.g. "
        "{\"learning_rate\": 1e-4, \"max_seq_length\": 512, \"lora_r\": 16}), or experiment fields "
        "(max_new_tokens, share_model, split_seed). Loss settings belong in `arms`.")] = None,
    manager: JobManager = Depends(get_manager),
) -> ExperimentStartResult:
    """Compare loss settings fairly: train every arm with every seed (one full run each, with its own run
    directory, TensorBoard and card), all other settings shared, score every run on the same held-out
    rows, and report each arm's spread and its paired difference from the baseline with a 95 % interval.
    Returns the job at once; follow it with wait_for_job, then read get_experiment.
    Checks everything first (model, data, every arm's settings) and creates nothing on an error.
    Example: start_experiment(model="unsloth/Qwen3-0.6B", dataset="data/qa.jsonl", arms=["standard", "entropy"],
    seeds=3, max_steps=100) → {"job_id": "ft-1a2b3c4d5e6f", "kind": "experiment", "runs": 6, ...}."""
    data = experiment_data(model, dataset, arms, seeds, {
        "baseline": baseline, "max_steps": max_steps, "eval_dataset": eval_dataset, "retain_dataset": retain_dataset,
        "primary_metric": primary_metric, "generation_examples": generation_examples,
        "method": chosen_method(method, task), "parallel": parallel,
    }, config_overrides)
    spec = build_experiment_spec(data)
    started = await start_with_consent(ctx, manager, "experiment", spec, target, confirm=confirm,
                                       max_cost_usd=max_cost_usd)
    if isinstance(started, InputRequiredResult):
        return started  # type: ignore[return-value]  # 2026-07-28: roots or the user's consent first
    job, _consent = started
    return ExperimentStartResult(
        **job_view(manager, job).model_dump(), seeds=spec.seeds, baseline=spec.baseline_arm, runs=len(spec.plan),
        workers=list(job.placement.get("details", {}).get("child_jobs") or []),
        arms=[ArmView(name=a.name, loss=a.describe(), enable_entropy_weighting=a.enable_entropy_weighting,
                      entropy=a.entropy) for a in spec.arms],
    )


@tool(annotations=ToolAnnotations(readOnlyHint=True))
async def get_experiment(job_id: JobId, manager: JobManager = Depends(get_manager)) -> ExperimentResult:
    """An experiment's table: every run's held-out metrics, each arm's mean ± std with every seed's value,
    each arm against the baseline (paired by seed: mean difference, 95 % bootstrap CI, exact sign-flip p),
    the verdict, and which arm to use and why — or that it cannot tell. Readable while it runs (the
    finished runs) and after it was cancelled. Example: get_experiment("ft-1a2b3c4d5e6f") →
    {"status": "succeeded", "verdict": "no detectable difference in normalized_match at 3 seeds (...)",
    "recommendation": {"arm": null, "reason": "cannot tell at 3 seeds: ..."}, "summary": {...}, ...}."""
    return experiment_result(manager, job_id)


TOOLS = (start_experiment, get_experiment)
