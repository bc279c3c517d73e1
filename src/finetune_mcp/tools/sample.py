"""`sample_model` and `get_samples`: try a model on prompts, side by side with its base, as a job.

The job runs like every other (queued, running, cancellable; get_job, list_jobs, wait_for_job and
cancel_job work on it) on this machine: a local GPU when there is one, else the CPU. When it
succeeds, get_job / wait_for_job show the answers in `result` (per model its match rates, entropy
and speed; per prompt each model's answer, match and reply with the high-entropy spans in ⟦…⟧);
`get_samples` returns everything, every token's entropy and most likely alternatives included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastmcp import Context
from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import Field

from finetune_mcp import kinds
from finetune_mcp.config import DataConfig, LocalPath
from finetune_mcp.config.methods import method_of
from finetune_mcp.errors import ConfigError, JobError
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.runs.artifacts import RunArtifacts, export_tokenizer
from finetune_mcp.sample.results import SampleResult, read_result, without_tokens
from finetune_mcp.sample.spec import MAX_PROMPTS, SampledModel, SampleSpec, build_sample_spec
from finetune_mcp.tools import get_manager
from finetune_mcp.tools.artifacts import CheckpointArg
from finetune_mcp.tools.roots import allowed_roots
from finetune_mcp.tools.training import JobView, job_view, trained_load_fields

if TYPE_CHECKING:
    from finetune_mcp.jobs.store import Job


Prompt = str | list[dict[str, str]]


class SampleStartResult(JobView):
    sampled: list[str] = Field(description="label: model (+ adapter), for each model that answers.")
    num_prompts: int | None = Field(description="Prompts each model answers (None: read from a Hub dataset by "
                                    "the worker).")
    prompts_from: str = Field(description="inline, or which rows of which dataset.")
    settings: dict[str, Any]


def sample_spec_for(manager: JobManager, *, job_id: str | None, model: str | None, prompts: list[Prompt] | None,
                    dataset: str | None, num_rows: int | None, rows_order: str, rows_seed: int, rows_split: str,
                    compare_with_base: bool, compare_with: str | None, weights: str | list[str],
                    high_entropy_threshold: float | None, settings: dict[str, Any],
                    quantization: str | None = None, checkpoint: int | str | None = None) -> SampleSpec:
    """The SampleSpec for a request (shared by the tool and the CLI); a FinetuneError naming the fix."""
    from finetune_mcp.sample.prompts import inline_prompts

    if (job_id is None) == (model is None):
        raise ConfigError("give exactly one of job_id (a succeeded fine-tuning job) or model (a model id or folder, "
                          "or a LoRA adapter folder)", field="job_id")
    if prompts and num_rows is not None:
        raise ConfigError("give prompts or num_rows (dataset rows as prompts), not both", field="num_rows")
    data: dict[str, Any] = {"settings": settings, "prompts": [p.model_dump() for p in inline_prompts(prompts or [])]}
    if job_id is not None:
        job = _trained_job(manager, job_id, "sampling its model")
        chosen = [weights] if isinstance(weights, str) else list(dict.fromkeys(weights))
        if not chosen:
            raise ConfigError("weights is empty; give 'adapter', 'merged', 'gguf' or a list of them", field="weights")
        models = [_job_model(job, w, label="tuned" if i == 0 else w, quantization=quantization,
                             checkpoint=checkpoint if i == 0 else None) for i, w in enumerate(chosen)]
        models += ([SampledModel(label="base", model=job.config["model"], weights="base")]
                            if compare_with_base else [])
        data.update(source_job=job_id, **trained_load_fields(job))
        threshold = _run_threshold(job)
        if threshold is not None:
            data.update(high_entropy_threshold=threshold,
                        threshold_source=f"the high-entropy threshold of {job_id}'s training, from its result.json")
        row_data = {k: job.config[k] for k in DataConfig.model_fields if k in job.config}  # read as it trained
        if dataset is not None:
            row_data = {"dataset": dataset}
    else:
        assert model is not None
        if not isinstance(weights, str) and len(weights) > 1:
            raise ConfigError("several weights are a job's (adapter, merged, gguf); give job_id with them",
                              field="weights")
        if checkpoint is not None:
            raise ConfigError("checkpoint= names a checkpoint of a job; give job_id with it", field="checkpoint")
        models = _given_model(model, compare_with_base)
        row_data = {"dataset": dataset} if dataset is not None else {}
    if compare_with is not None:
        other = _trained_job(manager, compare_with, "the comparison")
        models.append(_job_model(other, "adapter", label=f"compare:{compare_with}"))
    if not prompts:
        if "dataset" not in row_data:
            raise ConfigError("with `model`, give prompts, or a dataset to take rows from", field="prompts")
        split = rows_split if rows_split != "auto" else ("validation" if job_id is not None and dataset is None
                                                         else "all")
        data["rows"] = {**row_data, "split": split, "count": num_rows or 8, "order": rows_order,
                        "order_seed": rows_seed}
        data["dataset"] = row_data["dataset"]
    if high_entropy_threshold is not None:
        data.update(high_entropy_threshold=high_entropy_threshold, threshold_source="given")
    data.update(models=[m.model_dump() for m in models], model=models[0].model)
    return build_sample_spec(data)


def _trained_job(manager: JobManager, job_id: str, purpose: str) -> Job:
    job = kinds.succeeded_job(manager, job_id, purpose)
    method = method_of(job.config)
    if not method.generates:
        raise JobError(f"job {job_id} trained with method={method.name!r}, whose model scores rather than "
                       "answers; score it with evaluate_model(job_id=...)", job_id=job_id)
    return job


def _job_model(job: Job, weights: str, label: str = "tuned", quantization: str | None = None,
               checkpoint: int | str | None = None) -> SampledModel:
    """A training job's adapter (or one of its checkpoints) on its base, its merged model, or one of
    its exported GGUF files."""
    artifacts = RunArtifacts(job.run_dir, job.id)
    if checkpoint is not None and weights != "adapter":
        raise ConfigError(f"a checkpoint is an adapter; sample it with weights='adapter', not {weights!r}",
                          field="checkpoint")
    if weights == "gguf":
        export = artifacts.gguf(quantization)
        return SampledModel(label=label, model=str(export["gguf"]), tokenizer=str(artifacts.run.adapter),
                            source_job=job.id, weights="gguf")
    if weights == "merged":
        return SampledModel(label=label, model=str(artifacts.merged()), source_job=job.id, weights="merged")
    return SampledModel(label=label, model=job.config["model"], adapter=str(artifacts.adapter(checkpoint)),
                        source_job=job.id, weights="adapter")


def _given_model(model: str, compare_with_base: bool) -> list[SampledModel]:
    """A LoRA adapter folder (on the base its adapter_config.json names), an exported GGUF file (with
    the training tokenizer of its run), or any model."""
    from finetune_mcp.tools.evaluate import _adapter_base

    folder = Path(model).expanduser()
    if folder.suffix.lower() == ".gguf" and folder.is_file():
        tokenizer = export_tokenizer(folder.resolve())
        if tokenizer is not None:  # an export of a run: llama.cpp runs it, prompts rendered as in training
            return [SampledModel(label="model", model=str(folder.resolve()), tokenizer=str(tokenizer),
                                 weights="gguf")]
        # any other GGUF (llama.cpp / Ollama / LM Studio's): imported once for transformers, as training would
    if (folder / "adapter_config.json").is_file():
        base = _adapter_base(folder)
        tuned = SampledModel(label="tuned", model=base, adapter=str(folder.resolve()), weights="adapter")
        return [tuned] + ([SampledModel(label="base", model=base, weights="base")] if compare_with_base else [])
    return [SampledModel(label="model", model=model, weights="model")]


def _run_threshold(job: Job) -> float | None:
    try:
        value = json.loads((Path(job.run_dir) / "result.json").read_text(encoding="utf-8")).get("high_entropy_threshold")
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, int | float) else None


def start_result(manager: JobManager, job: Job, spec: SampleSpec) -> SampleStartResult:
    """The tool's answer: the job, and what will answer which prompts."""
    source = "inline"
    if spec.rows is not None:
        source = (f"the {'first' if spec.rows.order == 'first' else 'seeded'} {spec.rows.count} rows of the "
                  f"{spec.rows.split} split of {spec.rows.dataset}")
    return SampleStartResult(**job_view(manager, job).model_dump(), sampled=[f"{m.label}: {m.describe()}"
                                                                             for m in spec.models],
                             num_prompts=len(spec.prompts) or None, prompts_from=source,
                             settings=spec.settings.model_dump())


@tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False))
async def sample_model(
    ctx: Context,
    job_id: Annotated[str | None, Field(description="A succeeded start_finetune job: its model answers (default "
                                        "prompts: the first 8 of its held-out validation rows).",
                                        max_length=64)] = None,
    model: Annotated[str | None, Field(description="Instead of job_id: a model id or folder (e.g. a merged/ "
                                       "folder), or a LoRA adapter folder (its base answers beside it).",
                                       max_length=1000)] = None,
    prompts: Annotated[list[str | list[dict[str, str]]] | None, Field(
        description="Questions (one user turn each), or conversations [{'role', 'content'}, ...] ending with "
        "the user turn. Rendered with the model's chat template as in training.",
        max_length=MAX_PROMPTS)] = None,
    dataset: Annotated[str | None, Field(description="Take prompts (and reference answers) from this dataset's "
                                         "rows instead (all rows unless rows_split='validation').",
                                         max_length=1000)] = None,
    num_rows: Annotated[int | None, Field(description="How many dataset rows to ask (default 8).", ge=1,
                                          le=MAX_PROMPTS)] = None,
    rows_order: Annotated[Literal["first", "seeded"], Field(
        description="first: the first rows of the split; seeded: a seeded random choice.")] = "first",
    rows_seed: Annotated[int, Field(description="Seed of rows_order='seeded'.", ge=0)] = 0,
    rows_split: Annotated[Literal["auto", "validation", "train", "all"], Field(
        description="Which rows of the seeded split: validation (held out: exactly the rows training never "
        "saw), train (the rows trained on), all. auto: a job's validation rows, or every row of another "
        "dataset.")] = "auto",
    compare_with_base: Annotated[bool, Field(description="The untrained base model answers the same prompts "
                                             "side by side (a job, or an adapter folder as `model`; a plain "
                                             "model has no base).")] = True,
    compare_with: Annotated[str | None, Field(description="Another succeeded job whose adapter also answers "
                                              "(e.g. the unweighted run of an A/B).", max_length=64)] = None,
    weights: Annotated[Literal["adapter", "merged", "gguf"] | list[Literal["adapter", "merged", "gguf"]], Field(
        description="The job's LoRA adapter on its base, its merged model (merged/, from save_merged or "
        "deploy_to_hf(merge=true)), or its exported GGUF (gguf: run by llama.cpp on the CPU; export_model "
        "first); greedy outputs agree. A list answers side by side: the first is the 'tuned' column, the "
        "others are named by their weights, e.g. ['adapter', 'gguf'].")] = "adapter",
    quantization: Annotated[str | None, Field(
        description="With weights 'gguf': which of the job's exports (f16, q8_0, q4_k_m, ...); default the "
        "latest.", max_length=16)] = None,
    checkpoint: CheckpointArg = None,
    max_new_tokens: Annotated[int, Field(description="Tokens per answer at most (it stops at the end of the "
                                         "turn).", ge=1, le=4096)] = 128,
    temperature: Annotated[float, Field(description="0: greedy (reproducible); > 0 samples.", ge=0, le=5)] = 0.0,
    top_p: Annotated[float, Field(description="Nucleus sampling (needs temperature > 0).", gt=0, le=1)] = 1.0,
    seed: Annotated[int, Field(description="Sampling seed.", ge=0, le=2**32 - 1)] = 0,
    high_entropy_threshold: Annotated[float | None, Field(
        description="Mark tokens whose entropy (nats) is above this. Default: the job's training threshold "
        "(result.json), else the 90th percentile of this job's tokens.", ge=0)] = None,
    batch_size: Annotated[int, Field(description="Prompts generated together.", ge=1, le=256)] = 8,
    manager: JobManager = Depends(get_manager),
) -> SampleStartResult:
    """Try a fine-tuned model: generate answers from it and, side by side, from its base model, in the
    background; returns the job at once. When it succeeds, wait_for_job / get_job show the answers in
    `result`, with an exact / normalised match per row that has a reference answer and the reply's
    high-entropy tokens (where the model is unsure) in ⟦…⟧; get_samples(job_id) has every token's entropy.
    Example: sample_model(job_id="ft-3f9a0c1b2d4e", prompts=["what color is the sky?"]) →
    {"job_id": "ft-0b1c2d3e4f5a", "kind": "sample", "state": "queued", ...}; later wait_for_job →
    {"result": {"samples": [{"prompt": "what color is the sky?", "outputs": {"tuned": {"answer": "blue",
    ...}, "base": {"answer": "x3 the", ...}}}], ...}}."""
    roots = await allowed_roots(ctx)
    if isinstance(roots, InputRequiredResult):
        return roots  # type: ignore[return-value]  # 2026-07-28: the client sends its roots, then calls again
    roots.check([LocalPath("model", model, hub_id_ok=True)])  # before an adapter folder's config is read
    settings = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
                "batch_size": batch_size}
    spec = sample_spec_for(manager, job_id=job_id, model=model, prompts=prompts, dataset=dataset,
                           num_rows=num_rows, rows_order=rows_order, rows_seed=rows_seed, rows_split=rows_split,
                           compare_with_base=compare_with_base, compare_with=compare_with, weights=weights,
                           high_entropy_threshold=high_entropy_threshold, settings=settings,
                           quantization=quantization, checkpoint=checkpoint)
    job = await kinds.start_job(manager, "sample", spec, "local", roots=roots)
    return start_result(manager, job, SampleSpec.model_validate(job.config))


@tool(annotations=ToolAnnotations(readOnlyHint=True))
async def get_samples(
    job_id: Annotated[str, Field(description="A succeeded sample_model job.", max_length=64)],
    include_tokens: Annotated[bool, Field(description="Every generated token with its entropy and most likely "
                                          "alternatives (large for long answers).")] = True,
    manager: JobManager = Depends(get_manager),
) -> SampleResult:
    """Everything a succeeded sample_model job found: per model its loading, speed (time to first token,
    tokens/s), match rates and entropy; per prompt each model's reply, answer, matches, the high-entropy
    spans (with the alternatives the model weighed there) and, with include_tokens, every token.
    Example: get_samples("ft-0b1c2d3e4f5a", include_tokens=false) → {"models": [{"label": "tuned",
    "normalized_match_rate": 1.0, ...}, ...], "samples": [...], "threshold": 5.91, ...}."""
    job = kinds.succeeded_job(manager, job_id, "reading its samples", kind="sample")
    result = read_result(job.run_dir)
    return result if include_tokens else without_tokens(result)


TOOLS = (sample_model, get_samples)
