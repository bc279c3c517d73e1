"""The `export_model` tool: a finished fine-tuning job → a GGUF for llama.cpp, Ollama and LM Studio.

The export is a job (queued, running, cancellable; follow it with wait_for_job). It merges the
adapter into its base, converts with llama.cpp's converter, quantises with llama.cpp's quantiser,
writes an Ollama Modelfile, and compares the file with the merged model on validation prompts.
The figures and the commands to run the file arrive in its result (get_job's `metrics`, and
result.json); a file that disagrees with the trained model is not kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastmcp import Context
from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import Field, ValidationError

from finetune_mcp import kinds
from finetune_mcp.config import format_validation_error
from finetune_mcp.errors import ConfigError
from finetune_mcp.export.quantization import QUANTIZATIONS, parse_quantization
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.runs.artifacts import RunArtifacts
from finetune_mcp.tools import get_manager
from finetune_mcp.tools.artifacts import CheckpointArg
from finetune_mcp.tools.roots import allowed_roots
from finetune_mcp.tools.training import JobView, job_view


class ExportStartResult(JobView):
    source_job: str = Field(description="The fine-tuning job whose adapter is exported.")
    quantization: str
    destination: str = Field(description="Where the .gguf and .Modelfile will be: <source run>/export/.")
    file_name: str = Field(description="The GGUF's file name.")


@tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True))
async def export_model(
    job_id: Annotated[str, Field(description="A succeeded start_finetune job (its LoRA adapter is merged "
                                 "into its base model and exported).", max_length=64)],
    ctx: Context,
    format: Annotated[Literal["gguf"], Field(description="gguf: one file for llama.cpp, Ollama, LM Studio.")
                      ] = "gguf",
    quantization: Annotated[str, Field(
        description=f"One of {', '.join(QUANTIZATIONS)}. q8_0: near-lossless, half of f16; q4_k_m: the usual "
        "small one; f16/bf16: no quantisation (verified to give the same greedy tokens as the merged model).",
        max_length=16)] = "q8_0",
    name: Annotated[str | None, Field(description="File name stem (default: the base model's name); the file is "
                                      "<name>-<quantization>.gguf.", max_length=96)] = None,
    verify_prompts: Annotated[int, Field(description="Validation rows compared between llama.cpp and "
                                         "transformers.", ge=1, le=256)] = 8,
    checkpoint: CheckpointArg = None,
    manager: JobManager = Depends(get_manager),
) -> ExportStartResult:
    """Export a fine-tuned model to GGUF in the background and return the job at once; when it succeeds,
    get_job(job_id) has the verification figures in `metrics` and its result.json the file path plus
    the `ollama create` / `llama-cli` / LM Studio commands.

    Example: export_model(job_id="ft-3f9a0c1b2d4e", quantization="q4_k_m") → {"job_id": "ft-7c1d...",
    "kind": "export", "state": "queued", "destination": ".../runs/ft-3f9a0c1b2d4e/export", ...}; later
    get_job → {"metrics": {"export/greedy_token_agreement": 0.97, "export/perplexity_delta": 0.04, ...}}.
    """
    from finetune_mcp.export.spec import ExportSpec, source_base_model

    parse_quantization(quantization)  # the choices, before anything else
    roots = await allowed_roots(ctx)
    if isinstance(roots, InputRequiredResult):
        return roots  # type: ignore[return-value]  # 2026-07-28: the client sends its roots, then calls again
    job = kinds.succeeded_job(manager, job_id, "a GGUF export")
    step = RunArtifacts(job.run_dir, job.id).checkpoint(checkpoint).step if checkpoint is not None else None
    data = {"checkpoint": step, "source_job": job_id, "source_run_dir": str(Path(job.run_dir)), "format": format,
            "quantization": quantization, "name": name, "verify_prompts": verify_prompts,
            "model": job.config.get("model", ""), "dataset": job.config.get("dataset", "")}
    try:
        spec = ExportSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "export", "export_model")) from None
    started = await kinds.start_job(manager, "export", spec, "local", roots=roots)
    return ExportStartResult(**job_view(manager, started).model_dump(), source_job=job_id,
                             quantization=spec.quantization, destination=str(Path(job.run_dir) / "export"),
                             file_name=spec.file_stem(source_base_model(spec)) + ".gguf")


TOOLS = (export_model,)
