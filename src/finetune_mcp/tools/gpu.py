"""The `detect_gpus` tool: local GPUs, the memory a model's run needs, and where it would run and why."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastmcp import Context
from fastmcp.tools import tool
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, Field

from finetune_mcp.config import LocalPath
from finetune_mcp.errors import BackendError, FinetuneError
from finetune_mcp.tools.roots import allowed_roots


class GpuView(BaseModel):
    index: int
    name: str
    total_gb: float
    free_gb: float


class Decision(BaseModel):
    target: Literal["local", "runpod"] | None = Field(description="Where start_finetune(target='auto') would run "
                                                      "it; None when nowhere fits (see reason).")
    device: Literal["cuda", "cpu", "runpod"] | None
    gpu_index: int | None
    required_gb: float | None = Field(description="Estimated GPU memory the run needs.")
    reason: str = Field(description="Why, or what to change when nowhere fits.")


class GpuReport(BaseModel):
    gpus: list[GpuView] = Field(description="Local CUDA GPUs (NVML); empty without a GPU or driver.")
    runpod_available: bool = Field(description="RUNPOD_API_KEY is set, so RunPod is an option.")
    model: str | None
    estimate: dict[str, Any] | None = Field(description="Memory estimate: parameters, bits, LoRA parameters, "
                                            "breakdown_gb (weights, adapters, gradients, optimizer, activations, "
                                            "loss head, CUDA overhead), total_gb and assumptions.")
    estimate_error: str | None = Field(description="Why no estimate could be made (e.g. offline, unknown model).")
    decision: Decision


def report(model: str | None, load_in_4bit: bool | None) -> GpuReport:
    """Blocking: NVML and (maybe) a config.json download under a deadline; run it in a thread."""
    import os

    from finetune_mcp.jobs.router import decide_target, detect_local_gpus, estimate_for

    gpus = detect_local_gpus()
    key_set = bool(os.environ.get("RUNPOD_API_KEY"))
    estimate = smaller = None
    problem = None if model else "no model given"
    if model:
        try:
            estimate = estimate_for(model, load_in_4bit=bool(load_in_4bit))
            smaller = None if load_in_4bit else estimate_for(model, load_in_4bit=True)
        except FinetuneError as exc:
            problem = str(exc)
    try:
        routed = decide_target("auto", estimate, gpus, runpod_key_set=key_set, estimate_problem=problem,
                               smaller_estimate=smaller)
        decision = Decision(target=routed.target, device=routed.device, gpu_index=routed.gpu_index,
                            required_gb=routed.required_gb, reason=routed.reason)
    except BackendError as exc:  # "nowhere to run" is this tool's answer, not its failure
        decision = Decision(target=None, device=None, gpu_index=None,
                            required_gb=estimate.total_gb if estimate else None, reason=str(exc))
    return GpuReport(gpus=[GpuView(**g.__dict__) for g in gpus], runpod_available=key_set, model=model,
                     estimate=estimate.to_dict() if estimate else None,
                     estimate_error=problem if model else None, decision=decision)


@tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=True))
async def detect_gpus(
    ctx: Context,
    model: Annotated[str | None, Field(description="Hugging Face model id or local model folder to size; "
                                       "omit to list GPUs only.", max_length=1000)] = None,
    load_in_4bit: Annotated[bool | None, Field(description="Size the run as 4-bit QLoRA.")] = None,
) -> GpuReport:
    """List local GPUs and, for a model, estimate the run's GPU memory from its config.json and say
    where start_finetune(target='auto') would run it (local GPU, RunPod, or CPU) and why.

    Example: detect_gpus(model="unsloth/Qwen3-4B", load_in_4bit=true) → {"gpus": [...],
    "estimate": {"total_gb": 7.9, "breakdown_gb": {...}}, "decision": {"target": "local", "reason": "..."}}.
    Defaults of the estimate: LoRA r=16 on all attention/MLP projections, max_seq_length 2048, batch 2.
    """
    roots = await allowed_roots(ctx)
    if isinstance(roots, InputRequiredResult):
        return roots  # type: ignore[return-value]  # 2026-07-28: the client sends its roots, then calls again
    roots.check([LocalPath("model", model, hub_id_ok=True)])
    return await anyio.to_thread.run_sync(report, model, load_in_4bit)


TOOLS = (detect_gpus,)
